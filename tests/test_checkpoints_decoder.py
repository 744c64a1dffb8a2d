"""Hugging Face Llama-family checkpoints in and out of rmjax's decoder.

The golden outputs in tests/fixtures/hf_decoder/ were made by transformers (PyTorch) with
`make_golden.py` there; these tests never import torch or transformers.
"""

import dataclasses
import json
import pathlib
import shutil
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("safetensors")

from flax import nnx  # noqa: E402

from rmjax import models, parallel  # noqa: E402
from rmjax import checkpoints  # noqa: E402
from rmjax.checkpoints import CheckpointError  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "hf_decoder"
ARCHS = ("llama3", "smollm2", "qwen2", "qwen3", "gemma2")
TOLERANCE = 1e-4


def _golden(name):
  return dict(np.load(FIXTURES / f"golden_{name}.npz"))


def _tokens(golden, pad):
  return golden["tokens"] if pad == "right" else golden["tokens_left"]


def _kept(logits, golden, pad):
  """Logits at the golden's kept positions of each row's real tokens."""
  mask = golden[f"mask_{pad}"]
  offsets = mask.shape[1] - mask.sum(1) if pad == "left" else np.zeros(2, int)
  return np.stack([logits[row, offsets[row] + golden["positions"]] for row in range(2)])


def _classifier_tensors(name):
  """The CausalLM fixture's tensors as *ForSequenceClassification holds them."""
  hf_config, tensors = checkpoints.read_checkpoint(FIXTURES / name)
  tensors = dict(tensors)
  tensors.pop("lm_head.weight", None)
  tensors["score.weight"] = _golden(name)["score_weight"]
  return hf_config, tensors


@pytest.fixture(scope="module")
def decoders():
  """name -> (config, model, jitted logits fn), loaded once."""
  out = {}
  for name in ARCHS:
    config, graphdef, params = checkpoints.load_pretrained_decoder(FIXTURES / name)
    model = nnx.merge(graphdef, params)
    out[name] = (config, model, jax.jit(lambda t, m, model=model: model.logits(t, m)))
  return out


@pytest.fixture(scope="module")
def reward_models():
  """name -> (config, graphdef, params, jitted apply), from the golden score weights."""
  out = {}
  for name in ARCHS:
    hf_config, tensors = _classifier_tensors(name)
    config, graphdef, params = checkpoints.load_decoder_params(hf_config, tensors,
                                                               reward_model=True)
    out[name] = (config, graphdef, params, jax.jit(models.make_reward_apply(graphdef)))
  return out


# --------------------------------------------------------------------------- golden


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("pad", ["right", "left"])
def test_logits_match_transformers(decoders, name, pad):
  golden = _golden(name)
  _, _, logits_fn = decoders[name]
  logits = np.asarray(logits_fn(_tokens(golden, pad), golden[f"mask_{pad}"]))
  assert logits.dtype == np.float32 and logits.shape == (2, 256, 300)
  np.testing.assert_allclose(_kept(logits, golden, pad), golden[f"logits_{pad}"],
                             rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", ARCHS)
def test_rewards_match_transformers_with_right_and_left_padding(reward_models, name):
  golden = _golden(name)
  _, _, params, apply = reward_models[name]
  rewards = {pad: np.asarray(apply(params, {"tokens": _tokens(golden, pad),
                                            "mask": golden[f"mask_{pad}"]}))
             for pad in ("right", "left")}
  for pad in ("right", "left"):
    np.testing.assert_allclose(rewards[pad], golden[f"rewards_{pad}"], rtol=0,
                               atol=TOLERANCE)
  np.testing.assert_allclose(rewards["left"], rewards["right"], rtol=0, atol=1e-5)


def test_fixture_configs_become_the_expected_backbones(decoders):
  llama3, smollm2, qwen2, qwen3, gemma2 = (decoders[n][0] for n in ARCHS)
  assert llama3.rope_scaling_dict == {
      "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
  assert (llama3.rope_base, llama3.lm_head, llama3.norm_eps) == (500000.0, "untied", 1e-5)
  assert (smollm2.rope_scaling, smollm2.lm_head, smollm2.rope_base) == (None, "tied", 1e5)
  assert qwen2.qkv_bias and not qwen2.qk_norm and qwen2.lm_head == "tied"
  assert qwen3.qk_norm and qwen3.explicit_head_dim == 32 and qwen3.head_dim == 32
  assert (gemma2.norm_plus_one, gemma2.post_norms, gemma2.scale_embeddings,
          gemma2.mlp_activation, gemma2.head_dim) == (True, True, True, "gelu_tanh", 32)
  assert (gemma2.query_pre_attn_scalar, gemma2.attn_logit_softcap,
          gemma2.final_logit_softcap) == (24.0, 5.0, 10.0)
  assert (gemma2.sliding_window, gemma2.sliding_window_layers) == (64, (0,))
  for config in (llama3, smollm2, qwen2, qwen3):
    assert not (config.post_norms or config.norm_plus_one or config.sliding_window)
  for config in (llama3, smollm2, qwen2, qwen3, gemma2):
    assert (config.d_model, config.num_heads, config.kv_heads, config.mlp_dim,
            config.vocab_size, config.max_len) == (64, 4, 2, 128, 300, 512)


def test_transformers4_style_config_gives_the_same_backbone():
  hf_config = checkpoints.read_config(FIXTURES / "llama3")
  old = {k: v for k, v in hf_config.items() if k != "rope_parameters"}
  old["rope_theta"] = 500000.0
  old["rope_scaling"] = {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
  assert (checkpoints.decoder_config_from_hf(old)
          == checkpoints.decoder_config_from_hf(hf_config))


def test_llama3_inverse_frequencies_by_hand():
  # K = 8, base 1e4: wavelengths 2 pi * 10^(0, 1, 2, 3) = 6.3, 62.8, 628, 6283. With
  # c = 64, low 1, high 4: lo = 64, hi = 16 -> kept, smoothed, divided, divided.
  inv = 10000.0 ** (-np.arange(4) / 4.0)
  got = models.rope_inverse_frequencies(8, 10000.0, {
      "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
  s = (64 / (2 * np.pi / inv[1]) - 1.0) / 3.0
  np.testing.assert_allclose(
      got, [inv[0], (1 - s) * inv[1] / 8 + s * inv[1], inv[2] / 8, inv[3] / 8], rtol=1e-6)
  np.testing.assert_allclose(models.rope_inverse_frequencies(
      8, 10000.0, {"rope_type": "linear", "factor": 4.0}), inv / 4, rtol=1e-6)


# --------------------------------------------------------------------------- export


def test_import_export_import_is_the_identity(reward_models, tmp_path):
  for name in ARCHS:
    config, _, params, _ = reward_models[name]
    hf_config = checkpoints.read_config(FIXTURES / name)
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text('{"version": "1.0"}')
    out = checkpoints.export_reward_model(tmp_path / name, config, params,
                                          base_hf_config=hf_config,
                                          tokenizer_files=[tokenizer])
    exported = json.loads((out / "config.json").read_text())
    family = {"llama3": "Llama", "smollm2": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3",
              "gemma2": "Gemma2"}
    assert exported["architectures"] == [f"{family[name]}ForSequenceClassification"]
    assert (exported["num_labels"], exported["pad_token_id"]) == (1, 0)
    assert (out / "tokenizer.json").read_text() == '{"version": "1.0"}'
    tensors = checkpoints.open_safetensors(out)
    assert tensors.shape("score.weight") == (1, 64) and "lm_head.weight" not in tensors
    np.testing.assert_array_equal(tensors["score.weight"], _golden(name)["score_weight"])
    config2, _, params2 = checkpoints.load_pretrained_reward_model(out)
    assert config2 == config
    assert jax.tree.structure(params2) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
      np.testing.assert_array_equal(a, b)


def test_export_refuses_a_nonzero_head_bias_and_an_untied_lm_head(reward_models, tmp_path):
  config, _, params, _ = reward_models["smollm2"]
  # A zero bias exports (it changes nothing) ...
  with_bias = {**params, "head": {**params["head"], "bias": np.zeros(1, np.float32)}}
  checkpoints.export_reward_model(tmp_path / "zero", config, with_bias, pad_token_id=0)
  with_bias["head"]["bias"] = np.full(1, 0.5, np.float32)
  with pytest.raises(CheckpointError, match="bias.*nonzero"):
    checkpoints.export_reward_model(tmp_path / "a", config, with_bias, pad_token_id=0)
  untied = dataclasses.replace(config, lm_head="untied")
  with pytest.raises(CheckpointError, match="untied lm_head"):
    checkpoints.export_reward_model(tmp_path / "b", untied, params, pad_token_id=0)
  with pytest.raises(CheckpointError, match="pad_token_id"):
    checkpoints.export_reward_model(tmp_path / "c", config, params)


def test_causal_lm_checkpoint_as_a_reward_model_with_a_fresh_head():
  # llama3's fixture has an untied lm_head, which a reward model skips.
  config, graphdef, params = checkpoints.load_pretrained_reward_model(
      FIXTURES / "llama3", head_rng=jax.random.key(1))
  assert config.lm_head == "none" and params["head"]["kernel"].shape == (64, 1)
  assert "lm_head" not in params["backbone"]
  with pytest.raises(CheckpointError, match="score.weight"):
    checkpoints.load_pretrained_reward_model(FIXTURES / "llama3")


@pytest.mark.parametrize("name", ARCHS)
def test_abstract_reward_model_has_the_loaded_shapes_from_config_json_alone(
    reward_models, name, tmp_path):
  """The params as shapes (`abstract_reward_model`) of a directory with only config.json
  equal the loaded reward model's params in tree, shapes and dtypes, and its graphdef
  applies to them; with safetensors the head's rows come from score.weight's header."""
  hf_config, tensors = _classifier_tensors(name)
  only_config = checkpoints.write_checkpoint(tmp_path / "config_only", hf_config, {})
  (only_config / "model.safetensors").unlink()
  config, graphdef, abstract = checkpoints.abstract_reward_model(only_config)
  loaded_config, _, params, apply = reward_models[name]
  assert config == loaded_config
  shapes = lambda tree: jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)
  assert shapes(abstract) == shapes(params)
  golden = _golden(name)
  rewards = jax.eval_shape(models.make_reward_apply(graphdef), abstract,
                           {"tokens": golden["tokens"], "mask": golden["mask_right"]})
  assert rewards.shape == np.asarray(apply(params, {"tokens": golden["tokens"],
                                                    "mask": golden["mask_right"]})).shape
  with_weights = checkpoints.write_checkpoint(tmp_path / "with_weights", hf_config,
                                              {**tensors, "score.weight": np.zeros(
                                                  (2, config.d_model), np.float32)})
  _, _, two_heads = checkpoints.abstract_reward_model(with_weights)
  assert two_heads["head"]["kernel"].shape == (config.d_model, 2)


def test_abstract_reward_model_of_a_causal_lm_or_no_config_is_a_clear_error(tmp_path):
  with pytest.raises(CheckpointError, match="score.weight"):
    checkpoints.abstract_reward_model(FIXTURES / "llama3")  # a CausalLM: no reward head
  with pytest.raises(CheckpointError, match="config.json"):
    checkpoints.abstract_reward_model(tmp_path)


# --------------------------------------------------------------------------- sharding


def test_loading_onto_an_fsdp_mesh_gives_the_single_device_logits(decoders):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  mesh = parallel.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
  golden = _golden("qwen3")
  config, graphdef, params = checkpoints.load_pretrained_decoder(FIXTURES / "qwen3",
                                                                 mesh=mesh)
  query = params["layers"][0]["attention"]["query"]
  assert query.sharding.spec[0] == "fsdp"
  assert len({shard.device for shard in query.addressable_shards}) == 8
  assert query.addressable_shards[0].data.shape == (8, 4, 32)
  model = nnx.merge(graphdef, params)
  sharded = np.asarray(jax.jit(lambda t, m: model.logits(t, m))(
      golden["tokens"], golden["mask_right"]))
  single = np.asarray(decoders["qwen3"][2](golden["tokens"], golden["mask_right"]))
  np.testing.assert_allclose(sharded, single, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- files


def _copy_fixture(tmp_path, name="smollm2"):
  out = tmp_path / name
  shutil.copytree(FIXTURES / name, out)
  return out


def test_gemma2_sliding_window_and_soft_caps_matter(decoders):
  # Switching either off moves the logits well beyond the golden tolerance, so the
  # golden match above really tests them.
  config, model, logits_fn = decoders["gemma2"]
  golden = _golden("gemma2")
  tokens, mask = golden["tokens"], golden["mask_right"]
  reference = np.asarray(logits_fn(tokens, mask))
  state = nnx.state(model, nnx.Param)
  for change in ({"sliding_window_layers": (), "sliding_window": None},
                 {"attn_logit_softcap": None}, {"final_logit_softcap": None}):
    other = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda c=dataclasses.replace(
        config, **change): models.Transformer(c, rngs=nnx.Rngs(0)))), state)
    logits = np.asarray(jax.jit(lambda t, m: other.logits(t, m))(tokens, mask))
    assert np.abs(logits - reference).max() > 100 * TOLERANCE, change


def test_sharded_checkpoint_reads_like_the_single_file(tmp_path):
  from safetensors.numpy import save_file
  source = checkpoints.open_safetensors(FIXTURES / "smollm2")
  out = tmp_path / "sharded"
  out.mkdir()
  shutil.copy(FIXTURES / "smollm2" / "config.json", out)
  names = sorted(source)
  halves = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  weight_map = {}
  for shard, shard_names in halves.items():
    save_file({n: source[n] for n in shard_names}, str(out / shard))
    weight_map.update({n: shard for n in shard_names})
  (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  sharded = checkpoints.open_safetensors(out)
  assert sorted(sharded) == names
  for n in names:
    np.testing.assert_array_equal(sharded[n], source[n])
  (out / "model-00002-of-00002.safetensors").unlink()
  with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors.*does not exist"):
    checkpoints.open_safetensors(out)


def test_truncated_safetensors_file_names_the_file(tmp_path):
  out = _copy_fixture(tmp_path)
  file = out / "model.safetensors"
  data = file.read_bytes()
  file.write_bytes(data[:-1000])
  with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated"):
    checkpoints.load_pretrained_decoder(out)
  file.write_bytes(data[:5])
  with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated"):
    checkpoints.open_safetensors(out)


def test_corrupted_header_names_the_file(tmp_path):
  out = _copy_fixture(tmp_path)
  file = out / "model.safetensors"
  data = bytearray(file.read_bytes())
  (header_len,) = struct.unpack("<Q", data[:8])
  data[8:8 + 10] = b"\xff" * 10  # not JSON any more
  file.write_bytes(bytes(data))
  with pytest.raises(CheckpointError, match=r"model\.safetensors has a corrupted header"):
    checkpoints.open_safetensors(out)
  file.write_bytes(struct.pack("<Q", 10 ** 12) + bytes(data[8:]))
  with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated or corrupted"):
    checkpoints.open_safetensors(out)


def test_missing_files_are_named(tmp_path):
  out = _copy_fixture(tmp_path)
  (out / "model.safetensors").unlink()
  with pytest.raises(CheckpointError, match="neither model.safetensors nor"):
    checkpoints.load_pretrained_decoder(out)
  (out / "config.json").unlink()
  with pytest.raises(CheckpointError, match="no config.json"):
    checkpoints.load_pretrained_decoder(out)


def test_config_that_does_not_match_the_tensors_names_the_tensor():
  hf_config, tensors = checkpoints.read_checkpoint(FIXTURES / "smollm2")
  wrong = dict(hf_config, intermediate_size=96)
  with pytest.raises(CheckpointError,
                     match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \(128, 64\)"
                     r".*expects \(96, 64\)"):
    checkpoints.load_decoder_params(wrong, tensors)
  wrong = dict(hf_config, num_key_value_heads=4)
  with pytest.raises(CheckpointError, match=r"k_proj\.weight' has shape \(32, 64\)"):
    checkpoints.load_decoder_params(wrong, tensors)


def test_missing_and_unused_tensors_are_named():
  hf_config, tensors = checkpoints.read_checkpoint(FIXTURES / "qwen2")
  fewer = {k: v for k, v in tensors.items() if k != "model.layers.1.self_attn.k_proj.bias"}
  with pytest.raises(CheckpointError, match=r"missing 1 tensor.*layers\.1\.self_attn\.k_proj"):
    checkpoints.load_decoder_params(hf_config, fewer)
  more = dict(tensors, **{"model.layers.0.self_attn.o_proj.bias": np.zeros(64, np.float32)})
  with pytest.raises(CheckpointError, match=r"does not use.*o_proj\.bias"):
    checkpoints.load_decoder_params(hf_config, more)
  # A Llama config cannot explain Qwen2's biases.
  with pytest.raises(CheckpointError, match=r"does not use.*q_proj\.bias"):
    checkpoints.load_decoder_params(dict(hf_config, model_type="llama"), tensors)


@pytest.mark.parametrize("change, match", [
    ({"model_type": "mistral"}, "unknown or unsupported model_type 'mistral'"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
     "unknown or unsupported rope type 'yarn'"),
    ({"rope_parameters": {"rope_type": "bogus", "rope_theta": 1e4}},
     "unknown or unsupported rope type 'bogus'"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
])
def test_unsupported_configs_are_clear_errors(change, match):
  hf_config = dict(checkpoints.read_config(FIXTURES / "smollm2"), **change)
  with pytest.raises(CheckpointError, match=match):
    checkpoints.decoder_config_from_hf(hf_config)


def test_qwen2_sliding_window_is_refused():
  hf_config = dict(checkpoints.read_config(FIXTURES / "qwen2"), use_sliding_window=True)
  with pytest.raises(CheckpointError, match="use_sliding_window"):
    checkpoints.decoder_config_from_hf(hf_config)


def test_write_checkpoint_round_trip(tmp_path):
  tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
             "b": np.ones(4, jnp.bfloat16)}
  checkpoints.write_checkpoint(tmp_path, {"model_type": "llama"}, tensors)
  config, read = checkpoints.read_checkpoint(tmp_path)
  assert config == {"model_type": "llama"}
  assert read.dtype("b") == "BF16" and read.shape("a") == (2, 3)
  np.testing.assert_array_equal(read["a"], tensors["a"])
  assert read["b"].dtype == jnp.bfloat16


# --------------------------------------------------------------------------- backbone


def test_default_config_param_tree_is_unchanged():
  params = models.abstract_params(
      models.TransformerConfig(d_model=16, num_heads=2, num_layers=1))
  assert sorted(params["backbone"]) == ["embedding", "final_norm", "layers"]
  assert sorted(params["backbone"]["layers"][0]["attention"]) == ["key", "out", "query",
                                                                   "value"]
  assert sorted(params["head"]) == ["bias", "kernel"]


def test_left_padding_gather_and_positions():
  mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  assert models.positions_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
  hidden = jnp.arange(10.0).reshape(2, 5, 1)
  assert models.gather_last_token(hidden, mask).tolist() == [[4.0], [7.0]]


def test_tied_logits_and_no_lm_head(decoders):
  config, model, _ = decoders["smollm2"]
  assert config.lm_head == "tied" and not hasattr(model, "lm_head")
  tokens, mask = jnp.arange(3, 11)[None], jnp.ones((1, 8), bool)
  hidden, logits = jax.jit(lambda t, m: (model(t, m), model.logits(t, m)))(tokens, mask)
  np.testing.assert_allclose(logits, hidden @ model.embedding[...].T,
                             rtol=1e-5, atol=1e-4)
  none = nnx.eval_shape(lambda: models.Transformer(
      dataclasses.replace(config, lm_head="none"), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="lm_head='none'"):
    none.lm_logits(jnp.zeros((1, 64)))


@pytest.mark.parametrize("kwargs, match", [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "unknown rope_type 'yarn'"),
    ({"rope_scaling": {"rope_type": "linear"}}, r"missing \['factor'\]"),
    ({"num_kv_heads": 3}, "multiple of num_kv_heads"),
    ({"lm_head": "shared"}, "lm_head"),
    ({"explicit_head_dim": 7}, "explicit_head_dim must leave an even head dimension"),
])
def test_new_config_fields_are_checked(kwargs, match):
  with pytest.raises(ValueError, match=match):
    models.TransformerConfig(d_model=16, num_heads=4, **kwargs)


def test_scalar_head_without_bias():
  head = models.ScalarHead(4, use_bias=False, rngs=nnx.Rngs(0))
  assert sorted(nnx.to_pure_dict(nnx.state(head, nnx.Param))) == ["kernel"]
  features = jnp.arange(8.0).reshape(2, 4)
  np.testing.assert_allclose(head(features), features @ head.kernel[...], atol=1e-6)


def test_non_embedding_params_counts_the_new_features(reward_models):
  for name in ARCHS:
    config, _, params, _ = reward_models[name]
    counted = models.count_params(params) - models.count_params(
        params["backbone"]["embedding"])
    # The imported head has no bias; the formula counts ScalarHead's default one.
    assert models.non_embedding_params(config) == counted + 1
