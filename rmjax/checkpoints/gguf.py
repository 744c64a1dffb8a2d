"""Read a Llama-architecture GGUF file as Hugging Face-named float32 tensors and a config dict.

GGUF (llama.cpp's format, spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) stores
metadata key/values, then a table of tensors, each possibly block-quantised (Q4_1, Q8_0, K-quants,
...). `open_gguf` gives what a Hugging Face checkpoint gives, so that one import path
(`rmjax.checkpoints.hf_decoder`) serves both:

- `config`: a `config.json`-style dict (`model_type="llama"`, `hidden_size`, `num_hidden_layers`,
  `num_attention_heads`, `num_key_value_heads`, `head_dim`, `intermediate_size`, `vocab_size`,
  `rms_norm_eps`, `rope_theta`, `rope_scaling`, `max_position_embeddings`,
  `tie_word_embeddings`, `attention_bias`, token ids), built from the `llama.*` metadata.
- `tensors`: a lazy read-only Mapping from HF names to float32 numpy arrays in the torch layout
  (`[out_features, in_features]` for linear weights, `[vocab, hidden]` for the embedding),
  dequantised on access with `gguf.quants.dequantize` (the pure-numpy reference dequantiser).

Conventions undone here:

1. Axis order. GGUF lists a tensor's dims fastest-first (`ne[0]` is the contiguous one), so a torch
   `[out, in]` weight is written with dims `[in, out]`; `gguf.GGUFReader` already exposes the data
   in numpy (row-major) order, i.e. `[out, in]` again, which is the HF layout.
2. q/k row permutation. llama.cpp's `convert_hf_to_gguf.py` (LlamaModel.permute) reorders the rows
   of `q_proj` (with `n_head`) and `k_proj` (with `n_head_kv`) so that each head's rotary pairs
   are interleaved (GPT-J style, rows 2i and 2i+1 rotate together) instead of split in halves
   (rotate-half, NeoX/HF style, rows i and i + head_dim/2):

       gguf_rows[h, 2*i + s] = hf_rows[h, s*head_dim/2 + i]      s in {0, 1}, i < head_dim/2

   `unpermute_rotary_rows` inverts it, so the returned q/k follow HF's rotate-half RoPE.

Name mapping (llama.cpp -> HF), `N` the block index:

    token_embd.weight        model.embed_tokens.weight                 [V, D]
    blk.N.attn_norm.weight   model.layers.N.input_layernorm.weight     [D]
    blk.N.attn_q.weight      model.layers.N.self_attn.q_proj.weight    [H*hd, D]   (un-permuted)
    blk.N.attn_k.weight      model.layers.N.self_attn.k_proj.weight    [Hkv*hd, D] (un-permuted)
    blk.N.attn_v.weight      model.layers.N.self_attn.v_proj.weight    [Hkv*hd, D]
    blk.N.attn_output.weight model.layers.N.self_attn.o_proj.weight    [D, H*hd]
    blk.N.ffn_norm.weight    model.layers.N.post_attention_layernorm.weight [D]
    blk.N.ffn_gate.weight    model.layers.N.mlp.gate_proj.weight       [F, D]
    blk.N.ffn_up.weight      model.layers.N.mlp.up_proj.weight         [F, D]
    blk.N.ffn_down.weight    model.layers.N.mlp.down_proj.weight       [D, F]
    output_norm.weight       model.norm.weight                         [D]
    output.weight            lm_head.weight (absent: tied embeddings)  [V, D]

(and `.bias` of attn_q/k/v/output for Llama files with `attention_bias`, q/k biases un-permuted
like their weights). Every tensor of the file must map: an unknown name, a quantisation type
`gguf` cannot dequantise, or a shape that disagrees with the config is an error naming the tensor
and the file, raised by `open_gguf` before any dequantisation.

>>> ckpt = open_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
>>> ckpt.config["num_key_value_heads"], ckpt.tensors["model.norm.weight"].shape  # doctest: +SKIP
(3, (576,))
"""

from __future__ import annotations

import collections.abc
import functools
import os
import re
from typing import Any, Iterator, NamedTuple

import gguf
import numpy as np

SUPPORTED_ARCHITECTURES = ("llama",)

# Quantisation types `gguf.quants.dequantize` handles (plain float types pass through).
_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
_QUANT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL",
                "IQ4_XS", "TQ1_0", "TQ2_0")
SUPPORTED_TENSOR_TYPES = tuple(
  t for t in _FLOAT_TYPES + _QUANT_TYPES if hasattr(gguf.GGMLQuantizationType, t))

_GLOBAL_NAMES = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
  "attn_norm.weight": "input_layernorm.weight",
  "attn_q.weight": "self_attn.q_proj.weight",
  "attn_k.weight": "self_attn.k_proj.weight",
  "attn_v.weight": "self_attn.v_proj.weight",
  "attn_output.weight": "self_attn.o_proj.weight",
  "attn_q.bias": "self_attn.q_proj.bias",
  "attn_k.bias": "self_attn.k_proj.bias",
  "attn_v.bias": "self_attn.v_proj.bias",
  "attn_output.bias": "self_attn.o_proj.bias",
  "ffn_norm.weight": "post_attention_layernorm.weight",
  "ffn_gate.weight": "mlp.gate_proj.weight",
  "ffn_up.weight": "mlp.up_proj.weight",
  "ffn_down.weight": "mlp.down_proj.weight",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


class GGUFFormatError(ValueError):
  """A GGUF file that cannot be read, or whose content rmjax does not support."""


class GGUFCheckpoint(NamedTuple):
  """A GGUF checkpoint seen as a Hugging Face one.

  Attributes:
    config: HF `config.json`-style dict (see module docstring).
    tensors: lazy Mapping HF name -> float32 np.ndarray in torch layout.
    metadata: every GGUF metadata key -> its value (strings, numbers, lists), except the
      tokenizer's large arrays (`tokenizer.ggml.tokens/merges/token_type/scores`), which
      `rmjax.data.gguf_tokenizer` reads.
    reader: the underlying `gguf.GGUFReader` (shared with the tokenizer to avoid a second parse).
    path: the file.
  """

  config: dict
  tensors: "GGUFTensors"
  metadata: dict
  reader: Any
  path: str


def read_gguf(path: str | os.PathLike) -> "gguf.GGUFReader":
  """Opens `path` with `gguf.GGUFReader` (memory-mapped, parses metadata and tensor table).

  The reader of a file is kept for the process (up to 4 files) and handed out again while the
  file's size and modification time are unchanged: `gguf.GGUFReader` parses every element of
  the tokenizer's arrays in Python (SmolLM2's 49k tokens and merges: about 11 s on this CPU),
  and a tokenizer, a checkpoint and a reference policy of one run read the same file. The
  reader is read-only (a memory map opened "r"), so sharing it is safe.

  Raises:
    FileNotFoundError: no such file.
    GGUFFormatError: the file is not a readable GGUF (bad magic, truncated header, metadata or
      tensor data running past the end of the file), with the file named.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GGUF file {path!r} does not exist")
  stat = os.stat(path)
  return _read_gguf_cached(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_gguf_cached(path: str, size: int, mtime_ns: int) -> "gguf.GGUFReader":
  """`read_gguf`'s parse of one version (size, mtime) of a file."""
  del mtime_ns  # Part of the cache key only.
  try:
    reader = gguf.GGUFReader(path, "r")
  except Exception as e:  # the reader raises ValueError/IndexError/struct errors on bad bytes
    raise GGUFFormatError(
      f"{path!r} is not a readable GGUF file (corrupted or truncated?): "
      f"{type(e).__name__}: {e}") from e
  for t in reader.tensors:
    end = int(t.data_offset) + int(t.n_bytes)
    if end > size or t.data.nbytes != int(t.n_bytes):
      raise GGUFFormatError(
        f"{path!r} is truncated or corrupted: tensor {t.name!r} needs bytes "
        f"[{int(t.data_offset)}, {end}) but the file has {size} bytes")
  return reader


def field_value(reader, key: str, default: Any = None) -> Any:
  """The value of metadata `key` as a Python object (str, int, float, bool, list), or `default`."""
  field = reader.fields.get(key)
  if field is None:
    return default
  return field.contents()


def _metadata(reader) -> dict:
  big = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
         "tokenizer.ggml.scores")
  return {k: field_value(reader, k) for k in reader.fields if k not in big}


def gguf_to_hf_name(name: str) -> str | None:
  """The HF Llama name of llama.cpp tensor `name` (e.g. `blk.3.attn_q.weight` ->
  `model.layers.3.self_attn.q_proj.weight`), or None when the name is not a Llama tensor."""
  if name in _GLOBAL_NAMES:
    return _GLOBAL_NAMES[name]
  m = _BLOCK_RE.match(name)
  if m and m.group(2) in _BLOCK_NAMES:
    return f"model.layers.{int(m.group(1))}.{_BLOCK_NAMES[m.group(2)]}"
  return None


def unpermute_rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undoes llama.cpp's q/k row permutation: interleaved rotary pairs -> rotate-half halves.

  For each head h of `head_dim = rows / n_heads` rows (i < head_dim/2, s in {0, 1}):

      out[h*head_dim + s*head_dim/2 + i] = w[h*head_dim + 2*i + s]

  Args:
    w: [n_heads * head_dim, ...] rows as stored in the GGUF (a weight [rows, in] or a bias [rows]).
    n_heads: `num_attention_heads` for q, `num_key_value_heads` for k.

  Returns:
    Same shape, rows in HF's rotate-half order (inverse of `LlamaModel.permute` in llama.cpp's
    convert_hf_to_gguf.py).

  >>> unpermute_rotary_rows(np.array([0, 2, 1, 3]), n_heads=1).tolist()  # pairs -> halves
  [0, 1, 2, 3]
  """
  rows = w.shape[0]
  if rows % (2 * n_heads):
    raise ValueError(
      f"unpermute_rotary_rows: {rows} rows do not split into {n_heads} heads of an even head_dim")
  half = rows // n_heads // 2
  return (w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def _config(reader, path: str, tensor_shapes: dict[str, tuple]) -> dict:
  """The HF config dict of a llama GGUF (see `open_gguf`)."""
  arch = field_value(reader, "general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise GGUFFormatError(
      f"{path!r}: general.architecture is {arch!r}; rmjax reads GGUF files of architecture "
      f"{SUPPORTED_ARCHITECTURES} only")

  def need(key):
    v = field_value(reader, f"{arch}.{key}")
    if v is None:
      raise GGUFFormatError(f"{path!r}: metadata key {arch}.{key!r} is missing")
    return v

  hidden = int(need("embedding_length"))
  n_heads = int(need("attention.head_count"))
  n_kv = int(field_value(reader, f"{arch}.attention.head_count_kv", n_heads))
  head_dim = int(field_value(reader, f"{arch}.attention.key_length", hidden // n_heads))
  value_dim = int(field_value(reader, f"{arch}.attention.value_length", head_dim))
  if value_dim != head_dim:
    raise GGUFFormatError(
      f"{path!r}: attention.value_length {value_dim} != key_length {head_dim}; not a Llama layout")
  rope_dim = int(field_value(reader, f"{arch}.rope.dimension_count", head_dim))
  if rope_dim != head_dim:
    raise GGUFFormatError(
      f"{path!r}: rope.dimension_count {rope_dim} != head_dim {head_dim}; partial rotary "
      "embeddings are not a Llama layout")

  embed_shape = tensor_shapes.get("token_embd.weight")
  if embed_shape is None:
    raise GGUFFormatError(f"{path!r}: tensor 'token_embd.weight' is missing")
  vocab = field_value(reader, f"{arch}.vocab_size")
  tokens = reader.fields.get("tokenizer.ggml.tokens")
  if vocab is None:
    vocab = len(tokens.data) if tokens is not None else embed_shape[0]
  vocab = int(vocab)
  if embed_shape[0] != vocab:
    raise GGUFFormatError(
      f"{path!r}: tensor 'token_embd.weight' has {embed_shape[0]} rows but the vocabulary has "
      f"{vocab} tokens")
  if tokens is not None and len(tokens.data) != vocab:
    raise GGUFFormatError(
      f"{path!r}: tokenizer.ggml.tokens lists {len(tokens.data)} tokens but the model's "
      f"vocabulary (token_embd.weight) has {vocab}")

  rope_scaling = None
  scaling_type = field_value(reader, f"{arch}.rope.scaling.type")
  if "rope_freqs.weight" in tensor_shapes:
    raise GGUFFormatError(
      f"{path!r}: tensor 'rope_freqs.weight' (llama3-style per-frequency RoPE factors) is not "
      "supported: the GGUF does not record the llama3 rope_scaling parameters")
  if scaling_type not in (None, "none"):
    factor = float(field_value(reader, f"{arch}.rope.scaling.factor", 1.0))
    if scaling_type == "linear":
      rope_scaling = {"rope_type": "linear", "factor": factor}
    elif scaling_type == "yarn":
      rope_scaling = {
        "rope_type": "yarn", "factor": factor,
        "original_max_position_embeddings": int(need("rope.scaling.original_context_length"))}
    else:
      raise GGUFFormatError(
        f"{path!r}: {arch}.rope.scaling.type {scaling_type!r} is not supported "
        "(supported: none, linear, yarn)")

  def token_id(key):
    v = field_value(reader, f"tokenizer.ggml.{key}")
    return None if v is None else int(v)

  return {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_act": "silu",
    "vocab_size": vocab,
    "hidden_size": hidden,
    "intermediate_size": int(need("feed_forward_length")),
    "num_hidden_layers": int(need("block_count")),
    "num_attention_heads": n_heads,
    "num_key_value_heads": n_kv,
    "head_dim": head_dim,
    "rms_norm_eps": float(need("attention.layer_norm_rms_epsilon")),
    "rope_theta": float(field_value(reader, f"{arch}.rope.freq_base", 10000.0)),
    "rope_scaling": rope_scaling,
    "max_position_embeddings": int(need("context_length")),
    "tie_word_embeddings": "output.weight" not in tensor_shapes,
    "attention_bias": "blk.0.attn_q.bias" in tensor_shapes,
    "mlp_bias": False,
    "bos_token_id": token_id("bos_token_id"),
    "eos_token_id": token_id("eos_token_id"),
    "pad_token_id": token_id("padding_token_id"),
    "torch_dtype": "float32",
  }


def _expected_shapes(config: dict) -> dict[str, tuple]:
  """HF name -> expected torch-layout shape for every tensor a Llama config implies."""
  d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
  q = config["num_attention_heads"] * config["head_dim"]
  kv = config["num_key_value_heads"] * config["head_dim"]
  shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,),
            "lm_head.weight": (v, d)}
  per_block = {"input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
               "self_attn.q_proj.weight": (q, d), "self_attn.k_proj.weight": (kv, d),
               "self_attn.v_proj.weight": (kv, d), "self_attn.o_proj.weight": (d, q),
               "self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
               "self_attn.v_proj.bias": (kv,), "self_attn.o_proj.bias": (d,),
               "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d),
               "mlp.down_proj.weight": (d, f)}
  for i in range(config["num_hidden_layers"]):
    for k, s in per_block.items():
      shapes[f"model.layers.{i}.{k}"] = s
  return shapes


class GGUFTensors(collections.abc.Mapping):
  """Lazy read-only Mapping HF name -> float32 np.ndarray (torch layout), dequantised on access.

  Nothing is cached: each access dequantises again (about 10 ms for a 576 x 1536 Q4_1 weight), so
  a caller that needs a tensor twice keeps it. `gguf_name(name)`, `tensor_type(name)` and
  `shape(name)` answer without dequantising.
  """

  def __init__(self, reader, path: str, config: dict):
    self._path = path
    self._config = config
    self._by_hf: dict[str, Any] = {}
    expected = _expected_shapes(config)
    for t in reader.tensors:
      hf = gguf_to_hf_name(t.name)
      if hf is None:
        raise GGUFFormatError(
          f"{path!r}: tensor {t.name!r} is not a known Llama tensor (known: token_embd, "
          "output_norm, output, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, "
          "ffn_norm, ffn_gate, ffn_up, ffn_down})")
      if t.tensor_type.name not in SUPPORTED_TENSOR_TYPES:
        raise GGUFFormatError(
          f"{path!r}: tensor {t.name!r} has type {t.tensor_type.name}, which rmjax cannot "
          f"dequantise (supported: {', '.join(SUPPORTED_TENSOR_TYPES)})")
      shape = tuple(int(s) for s in reversed(t.shape))  # GGUF dims are fastest-first
      if hf not in expected or expected[hf] != shape:
        raise GGUFFormatError(
          f"{path!r}: tensor {t.name!r} ({hf}) has shape {shape} (torch layout), but the config "
          f"implies {expected.get(hf, 'no such tensor')}")
      if hf in self._by_hf:
        raise GGUFFormatError(f"{path!r}: tensor {t.name!r} appears twice")
      self._by_hf[hf] = t
    required = [k for k in expected
                if k != "lm_head.weight" and not k.endswith(".bias")]
    missing = [k for k in required if k not in self._by_hf]
    if missing:
      raise GGUFFormatError(
        f"{path!r}: {len(missing)} tensors the config implies are missing, e.g. {missing[:3]}")

  def __getitem__(self, name: str) -> np.ndarray:
    t = self._by_hf.get(name)
    if t is None:
      raise KeyError(f"{name!r} is not a tensor of {self._path!r}")
    try:
      w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    except Exception as e:
      raise GGUFFormatError(
        f"{self._path!r}: cannot dequantise tensor {t.name!r} of type {t.tensor_type.name}: "
        f"{type(e).__name__}: {e}") from e
    w = np.array(w, dtype=np.float32).reshape(self.shape(name))
    if ".self_attn.q_proj." in name:
      w = unpermute_rotary_rows(w, self._config["num_attention_heads"])
    elif ".self_attn.k_proj." in name:
      w = unpermute_rotary_rows(w, self._config["num_key_value_heads"])
    return w

  def __iter__(self) -> Iterator[str]:
    return iter(self._by_hf)

  def __len__(self) -> int:
    return len(self._by_hf)

  def gguf_name(self, name: str) -> str:
    """The llama.cpp name of HF tensor `name`."""
    return self._by_hf[name].name

  def tensor_type(self, name: str) -> str:
    """The stored GGML type of HF tensor `name` ('Q4_1', 'Q8_0', 'F32', ...)."""
    return self._by_hf[name].tensor_type.name

  def shape(self, name: str) -> tuple[int, ...]:
    """The torch-layout shape of HF tensor `name`."""
    return tuple(int(s) for s in reversed(self._by_hf[name].shape))


def open_gguf(path: str | os.PathLike, reader=None) -> GGUFCheckpoint:
  """Opens a Llama GGUF file as a HF-style checkpoint: config dict + lazy float32 tensors.

  Args:
    path: the `.gguf` file.
    reader: an already open `gguf.GGUFReader` of `path` (optional; parsing the metadata of a
      49k-token vocabulary takes a few seconds).

  Returns:
    `GGUFCheckpoint(config, tensors, metadata, reader, path)`; see the module docstring for the
    config keys, names and layouts.

  Raises:
    FileNotFoundError: `path` does not exist.
    GGUFFormatError: unreadable/truncated file, architecture other than llama, missing metadata,
      unknown tensor name, unsupported tensor type, shape not matching the config, vocabulary
      size not matching the embedding. The message names the file and the tensor or key.
  """
  path = os.fspath(path)
  reader = read_gguf(path) if reader is None else reader
  shapes = {t.name: tuple(int(s) for s in reversed(t.shape)) for t in reader.tensors}
  config = _config(reader, path, shapes)
  tensors = GGUFTensors(reader, path, config)
  return GGUFCheckpoint(config=config, tensors=tensors, metadata=_metadata(reader), reader=reader,
                        path=path)
