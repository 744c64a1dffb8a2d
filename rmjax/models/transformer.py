"""Decoder-only pre-norm transformer backbone (Flax NNX).

The backbone maps padded token ids (right or left padding) and their padding mask to
hidden states, and optionally to next-token logits:

  tokens [B, L] -> embedding -> num_layers x block -> RMSNorm -> hidden [B, L, D]
  hidden -> logits [B, L, V]   (`Transformer.lm_logits`: tied embedding or own kernel)

  block(x) = x + Attention(RMSNorm(x));  x = x + GatedMLP(RMSNorm(x))

The defaults give rmjax's small from-scratch model; the optional fields of
`TransformerConfig` cover the Llama family as Hugging Face checkpoints have it
(`rmjax.checkpoints.hf_decoder`): grouped-query attention, an explicit head dimension,
q/k/v biases (Qwen2), q/k RMSNorm (Qwen3), Llama-3 / linear RoPE scaling, tied or untied
LM heads.

Every parameter carries logical axis names (`nnx.with_partitioning`) drawn from
`LOGICAL_AXES`; `rmjax.models.logical_partition_specs` maps them onto a device mesh. The
modules hold only `nnx.Param` state (no dropout, no RNG streams), so
`nnx.split(model, nnx.Param)` captures the whole model.

References:
  Vaswani et al. (2017) Attention is all you need (the transformer);
  Xiong et al. (2020) On layer normalization in the transformer architecture (pre-norm);
  Zhang & Sennrich (2019) Root mean square layer normalization (RMSNorm);
  Su et al. (2021) RoFormer: rotary position embedding (RoPE);
  Shazeer (2020) GLU variants improve transformer (gated MLP, SwiGLU);
  Ainslie et al. (2023) GQA: training generalized multi-query transformer models;
  Dubey et al. (2024) The Llama 3 herd of models (llama3 RoPE scaling);
  Chen et al. (2023) Extending context window of LLMs via positional interpolation
  (linear RoPE scaling).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from rmjax.models import layer_scan
from rmjax.models import tpu_attention

# Logical names of parameter axes. `None` (an axis that is never sharded) is also used.
LOGICAL_AXES = ("vocab", "embed", "heads", "kv", "mlp")

# Added to attention logits at masked positions. Finite (not -inf) so that a query row
# whose keys are all masked gets a uniform softmax instead of NaN.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)

_FLOAT_DTYPES = ("float32", "bfloat16", "float16")

# RoPE scaling types and the keys each needs (besides "rope_type").
ROPE_SCALING_KEYS: Mapping[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings"),
}

# Values of `TransformerConfig.lm_head`.
LM_HEAD_KINDS = ("tied", "untied", "none")

# Gate activations of the MLP (`TransformerConfig.mlp_activation`).
MLP_ACTIVATIONS = ("silu", "gelu_tanh")

# Implementations of full-sequence attention (`TransformerConfig.attention`).
# On CPU the reference attention splits the queries of sequences longer than this into blocks of
# this many, each against the keys it can see (`CausalSelfAttention._causal_query_blocks`).
CAUSAL_QUERY_BLOCK = 128
# On CPU the reference attention also goes over the batch in chunks of rows (a `lax.map`,
# each chunk rematerialised for the backward pass) whose float32 logits of one query block
# take at most this many bytes, so that they stay in cache (`cpu_attention_rows`).
CPU_ATTENTION_CHUNK_BYTES = 2**20

ATTENTION_IMPLEMENTATIONS = ("reference", "dot_product", "tpu_splash")


def _normalise_rope_scaling(value: Any) -> tuple[tuple[str, Any], ...] | None:
  """Checks a rope_scaling mapping; returns it as sorted (key, value) pairs (hashable)."""
  if value is None:
    return None
  if isinstance(value, Mapping):
    items = dict(value)
  elif isinstance(value, (tuple, list)) and all(
      isinstance(item, (tuple, list)) and len(item) == 2 for item in value):
    items = dict(value)
  else:
    raise TypeError(
        "TransformerConfig.rope_scaling must be None or a mapping with 'rope_type' and "
        f"its parameters, got {type(value).__name__}."
    )
  rope_type = items.get("rope_type")
  if rope_type not in ROPE_SCALING_KEYS:
    raise ValueError(
        f"TransformerConfig.rope_scaling: unknown rope_type {rope_type!r}; supported: "
        f"{sorted(ROPE_SCALING_KEYS)} (or rope_scaling=None for plain RoPE)."
    )
  needed = ROPE_SCALING_KEYS[rope_type]
  missing = [key for key in needed if key not in items]
  unknown = sorted(set(items) - set(needed) - {"rope_type"})
  if missing or unknown:
    raise ValueError(
        f"TransformerConfig.rope_scaling of type {rope_type!r} needs exactly the keys "
        f"{list(needed)}; missing {missing}, unknown {unknown}."
    )
  for key in needed:
    _check_positive_float(f"rope_scaling[{key!r}]", items[key])
  if rope_type == "llama3" and not items["high_freq_factor"] > items["low_freq_factor"]:
    raise ValueError(
        "TransformerConfig.rope_scaling (llama3): high_freq_factor must exceed "
        f"low_freq_factor, got {items['high_freq_factor']} and {items['low_freq_factor']}."
    )
  return tuple(sorted(items.items()))


def _check_positive_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(
        f"TransformerConfig.{name} must be a positive int, got {value!r}"
        f" ({type(value).__name__})."
    )


def _check_positive_float(name: str, value: Any) -> None:
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not math.isfinite(value) or value <= 0):
    raise ValueError(
        f"TransformerConfig.{name} must be a positive finite number, got {value!r}."
    )


def config_from_mapping(cls: type, values: Any) -> Any:
  """Builds the config dataclass `cls` from a mapping (or an `ml_collections.ConfigDict`).

  Missing fields take their defaults; an unknown field or a non-mapping raises, naming
  `cls.from_dict`.
  """
  if hasattr(values, "to_dict") and not isinstance(values, Mapping):
    values = values.to_dict()
  if not isinstance(values, Mapping):
    raise TypeError(
        f"{cls.__name__}.from_dict: values must be a mapping, got {type(values).__name__}."
    )
  known = {field.name for field in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(
        f"{cls.__name__}.from_dict: unknown field(s) {unknown}; expected a subset of "
        f"{sorted(known)}."
    )
  return cls(**dict(values))


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of the decoder-only transformer backbone.

  The defaults give a small byte-level model (about 0.43M parameters) that trains on a
  laptop CPU. The fields after `param_dtype` are off by default (the parameter tree and
  the outputs of a config that leaves them unset are those of rmjax's original model);
  they describe pretrained Llama-family checkpoints (`rmjax.checkpoints.hf_decoder`).

  Attributes:
    vocab_size: number of token ids (default 259: the byte tokenizer, pad=0, bos=1,
      eos=2, bytes at 3..258).
    max_len: longest sequence the model accepts (default 256). RoPE has no learned
      positions, so this only guards against inputs longer than the data layer makes.
    d_model: width of the residual stream (default 128).
    num_layers: number of transformer blocks (default 2).
    num_heads: attention (query) heads (default 4). Without `explicit_head_dim`,
      `d_model` must be a multiple of it; the head dimension `head_dim` must be even
      (RoPE rotates pairs).
    d_ff: hidden width of the gated MLP. None (default) picks the multiple of 8 at or
      just above 8/3 * d_model, which keeps the gated MLP's parameter count equal to a
      4 * d_model ungated MLP (Shazeer 2020); see `mlp_dim`.
    rope_base: RoPE wavelength base (default 10000.0, Su et al. 2021).
    norm_eps: RMSNorm epsilon (default 1e-6).
    dtype: compute dtype name, "float32" (default), "bfloat16" or "float16". Norm
      statistics, attention softmax and the reward head always run in float32.
    param_dtype: storage dtype of the parameters (default "float32").
    num_kv_heads: key/value heads of grouped-query attention (Ainslie et al. 2023); None
      (default) means num_heads (multi-head attention). num_heads must be a multiple of
      it; query head h reads key/value head h // (num_heads // num_kv_heads).
    explicit_head_dim: width K of one attention head when it is not d_model //
      num_heads (Qwen3, Gemma); None (default) derives it. See `head_dim`.
    qkv_bias: biases on the query/key/value projections (Qwen2; default False).
    qk_norm: RMSNorm over the head dimension of queries and keys, before RoPE (Qwen3;
      default False).
    rope_scaling: None (default, plain RoPE) or a mapping with 'rope_type' and its
      parameters: {'rope_type': 'linear', 'factor'} (positions divided by factor, Chen et
      al. 2023) or {'rope_type': 'llama3', 'factor', 'low_freq_factor',
      'high_freq_factor', 'original_max_position_embeddings'} (Llama 3.1, see
      `rope_inverse_frequencies`). Stored as sorted (key, value) pairs so the config
      stays hashable; `rope_scaling_dict` gives the mapping back.
    lm_head: how `Transformer.lm_logits` maps hidden states to vocabulary logits:
      "tied" (default: hidden @ embedding.T, no extra parameter), "untied" (an own
      kernel `lm_head` [D, V], logical axes ('embed', 'vocab')) or "none" (no LM
      logits, e.g. a reward backbone loaded from an untied sequence-classification
      checkpoint).
    norm_plus_one: RMSNorms scale by (1 + w), w initialised to 0 (Gemma; default False:
      scale by w, initialised to 1).
    post_norms: Gemma-2's extra RMSNorms on the attention and MLP outputs before the
      residual add (`attention_post_norm`, `mlp_post_norm`; default False).
    scale_embeddings: multiply the token embeddings by sqrt(d_model) (Gemma; default
      False).
    mlp_activation: gate activation of the MLP, "silu" (default, SwiGLU) or "gelu_tanh"
      (GeGLU with the tanh approximation, Gemma).
    query_pre_attn_scalar: attention logits scaled by query_pre_attn_scalar ** -0.5
      instead of head_dim ** -0.5 (Gemma-2; default None).
    attn_logit_softcap: attention logits -> c * tanh(logits / c) before masking
      (Gemma-2; default None: off).
    final_logit_softcap: LM logits -> c * tanh(logits / c) (Gemma-2; default None).
    sliding_window: keys further back than sliding_window - 1 positions are masked in
      the layers listed in `sliding_window_layers` (Gemma-2; default None).
    sliding_window_layers: indices of the layers with a sliding window (default ()).
    attention: how full-sequence attention (training, scoring, prefill) is computed:
      "reference" (default: rmjax's einsum -> float32 softmax -> einsum, the reference in
      the tests) or "dot_product" (`jax.nn.dot_product_attention` with its default
      implementation, which is XLA's on CPU, GPU and TPU in jax 0.10 / 0.11 (cuDNN only
      when asked for by name); grouped-query heads are read without repeating keys).
      Same values and gradients at real tokens to float tolerance. Measured (value and
      grad of a 4-layer d=1024 model): on an H200 in bfloat16 the same speed at 128 and
      1024 tokens and 11% faster at 4096 (34 vs 38 ms); on the 2-core CPU 10% slower.
      "dot_product" has no logit soft-capping (`attn_logit_softcap` must be None).
      "tpu_splash": jax's Pallas TPU splash-attention kernel (`rmjax.models.tpu_attention`:
      blocked online softmax, no [L, L] logits in HBM; padding as segment ids, GQA, sliding
      window and soft-cap supported; L padded to a multiple of 128 inside), compiled on TPU
      (inside `jax.shard_map` under a mesh) and run in Pallas interpret mode elsewhere (slow,
      with a warning; for tests). Same values and gradients at real tokens. Measured by dry
      runs of configs/reward_model.py:pod on v5e-256 (benchmarks/dry_run_long_context.py):
      at 128 pairs of 8192 tokens the reference needs 19.4 GiB per chip (no fit) and
      tpu_splash 14.8 GiB; at 64 pairs of 8192, 8.5 instead of 13.8 GiB of temporaries,
      without XLA's rematerialisation; with scan_layers and remat="full" at 128 pairs of
      8192, 4.9 instead of 14.8 GiB. Token-by-token decoding with a KV cache always uses
      the reference path.
    scan_layers: run the blocks as one `jax.lax.scan` over their weights stacked in the
      step, each layer's weights gathered inside the scan under FSDP (default False:
      unrolled, the whole model gathered for the step); see `rmjax.models.layer_scan`.
      With `sliding_window_layers` on some layers only the scan steps over the repeating
      pattern's blocks (Gemma-2: 2 per step; `layer_scan.structure_period`).
      The parameter tree is the same either way; values and gradients equal to float32
      rounding. Applies to full-sequence calls (training, scoring); decoding with a KV
      cache runs the blocks unrolled. Under FSDP use it with a remat policy other than
      "none" (which keeps every layer's gathered weights for the backward pass).
    remat: rematerialisation of each block in the backward pass, one of
      `layer_scan.REMAT_POLICIES`: "none" (default), "full" (keep only the block input),
      "save_dots" (keep the weight matmuls' outputs), "offload_dots" (keep them in host
      memory). Memory and time change, values do not.
  """

  vocab_size: int = 259
  max_len: int = 256
  d_model: int = 128
  num_layers: int = 2
  num_heads: int = 4
  d_ff: int | None = None
  rope_base: float = 10000.0
  norm_eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"
  num_kv_heads: int | None = None
  explicit_head_dim: int | None = None
  qkv_bias: bool = False
  qk_norm: bool = False
  rope_scaling: Any = None
  lm_head: str = "tied"
  norm_plus_one: bool = False
  post_norms: bool = False
  scale_embeddings: bool = False
  mlp_activation: str = "silu"
  query_pre_attn_scalar: float | None = None
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  sliding_window: int | None = None
  sliding_window_layers: Any = ()
  attention: str = "reference"
  scan_layers: bool = False
  remat: str = "none"

  def __post_init__(self):
    for name in ("vocab_size", "max_len", "d_model", "num_layers", "num_heads"):
      _check_positive_int(name, getattr(self, name))
    for name in ("d_ff", "num_kv_heads", "explicit_head_dim"):
      if getattr(self, name) is not None:
        _check_positive_int(name, getattr(self, name))
    _check_positive_float("rope_base", self.rope_base)
    _check_positive_float("norm_eps", self.norm_eps)
    for name in ("dtype", "param_dtype"):
      value = getattr(self, name)
      if value not in _FLOAT_DTYPES:
        raise ValueError(
            f"TransformerConfig.{name} must be one of {_FLOAT_DTYPES}, got {value!r}."
        )
    for name in ("qkv_bias", "qk_norm", "norm_plus_one", "post_norms", "scale_embeddings",
                 "scan_layers"):
      if not isinstance(getattr(self, name), bool):
        raise TypeError(
            f"TransformerConfig.{name} must be a bool, got {getattr(self, name)!r}.")
    if self.lm_head not in LM_HEAD_KINDS:
      raise ValueError(
          f"TransformerConfig.lm_head must be one of {LM_HEAD_KINDS}, got "
          f"{self.lm_head!r}."
      )
    object.__setattr__(self, "rope_scaling", _normalise_rope_scaling(self.rope_scaling))
    if self.mlp_activation not in MLP_ACTIVATIONS:
      raise ValueError(
          f"TransformerConfig.mlp_activation must be one of {MLP_ACTIVATIONS}, got "
          f"{self.mlp_activation!r}.")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(
          f"TransformerConfig.attention must be one of {ATTENTION_IMPLEMENTATIONS}, got "
          f"{self.attention!r}.")
    if self.remat not in layer_scan.REMAT_POLICIES:
      raise ValueError(
          f"TransformerConfig.remat must be one of {layer_scan.REMAT_POLICIES}, got "
          f"{self.remat!r}.")
    if self.attention == "dot_product" and self.attn_logit_softcap is not None:
      raise ValueError(
          "TransformerConfig.attention='dot_product' has no logit soft-capping, got "
          f"attn_logit_softcap={self.attn_logit_softcap}; use attention='reference'.")
    for name in ("query_pre_attn_scalar", "attn_logit_softcap", "final_logit_softcap"):
      if getattr(self, name) is not None:
        _check_positive_float(name, getattr(self, name))
    if self.sliding_window is not None:
      _check_positive_int("sliding_window", self.sliding_window)
    layers = self.sliding_window_layers
    if (isinstance(layers, (str, bytes)) or not isinstance(layers, (tuple, list))
        or any(isinstance(i, bool) or not isinstance(i, int)
               or not 0 <= i < self.num_layers for i in layers)):
      raise ValueError(
          "TransformerConfig.sliding_window_layers must be a sequence of layer indices in "
          f"[0, {self.num_layers}), got {layers!r}.")
    object.__setattr__(self, "sliding_window_layers", tuple(sorted(set(layers))))
    if self.sliding_window_layers and self.sliding_window is None:
      raise ValueError(
          "TransformerConfig.sliding_window_layers needs sliding_window, got "
          f"sliding_window=None and sliding_window_layers={self.sliding_window_layers}.")
    if self.explicit_head_dim is None and self.d_model % self.num_heads:
      raise ValueError(
          f"TransformerConfig.d_model must be divisible by num_heads, got "
          f"d_model={self.d_model} and num_heads={self.num_heads} (or set "
          "explicit_head_dim)."
      )
    if self.num_heads % self.kv_heads:
      raise ValueError(
          f"TransformerConfig.num_heads must be a multiple of num_kv_heads, got "
          f"num_heads={self.num_heads} and num_kv_heads={self.num_kv_heads}."
      )
    if self.head_dim % 2:
      field = "num_heads" if self.explicit_head_dim is None else "explicit_head_dim"
      raise ValueError(
          f"TransformerConfig.{field} must leave an even head dimension for RoPE, got "
          f"head_dim={self.head_dim} (d_model={self.d_model}, num_heads="
          f"{self.num_heads}, explicit_head_dim={self.explicit_head_dim})."
      )

  @property
  def head_dim(self) -> int:
    """Width K of one attention head: `explicit_head_dim`, else `d_model // num_heads`."""
    if self.explicit_head_dim is not None:
      return self.explicit_head_dim
    return self.d_model // self.num_heads

  @property
  def kv_heads(self) -> int:
    """Number of key/value heads: `num_kv_heads`, else `num_heads`."""
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

  @property
  def rope_scaling_dict(self) -> dict[str, Any] | None:
    """`rope_scaling` as a dict (None without scaling)."""
    return None if self.rope_scaling is None else dict(self.rope_scaling)

  @property
  def mlp_dim(self) -> int:
    """Hidden width of the gated MLP: `d_ff`, or 8 * ceil(d_model / 3) when unset."""
    if self.d_ff is not None:
      return self.d_ff
    return 8 * -(-self.d_model // 3)

  @property
  def compute_dtype(self) -> jnp.dtype:
    """`dtype` as a numpy dtype."""
    return jnp.dtype(self.dtype)

  @property
  def parameter_dtype(self) -> jnp.dtype:
    """`param_dtype` as a numpy dtype."""
    return jnp.dtype(self.param_dtype)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any] | Any) -> TransformerConfig:
    """Builds a config from a mapping (or an `ml_collections.ConfigDict`).

    Args:
      values: field names to values; missing fields take their defaults.

    Returns:
      The validated config.

    Raises:
      ValueError: on an unknown field name or an invalid value.

    >>> TransformerConfig.from_dict({"d_model": 64, "num_heads": 2}).head_dim
    32
    """
    return config_from_mapping(cls, values)

  def to_dict(self) -> dict[str, Any]:
    """The fields as a plain dict (`from_dict(c.to_dict()) == c`); rope_scaling as a dict."""
    values = dataclasses.asdict(self)
    values["rope_scaling"] = self.rope_scaling_dict
    values["sliding_window_layers"] = list(self.sliding_window_layers)
    return values


def _param(
    rngs: nnx.Rngs,
    initializer: Any,
    shape: tuple[int, ...],
    names: tuple[str | None, ...],
    dtype: jnp.dtype,
) -> nnx.Param:
  """A parameter annotated with logical axis names.

  Eager sharding is switched off: the model is built outside any mesh (or inside
  `jax.eval_shape` / a jit with `out_shardings`), and placement is decided by
  `logical_partition_specs`, never at variable creation.
  """
  init = nnx.with_partitioning(initializer, names, eager_sharding=False)
  return nnx.Param(init(rngs.params(), shape, dtype))


def _fan_in_init(in_axis, out_axis, scale: float = 1.0):
  """Truncated-normal init with variance scale / fan_in (LeCun for scale=1)."""
  return nnx.initializers.variance_scaling(
      scale, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis
  )


def check_tokens_and_mask(tokens: jax.Array, mask: jax.Array, max_len: int | None = None
                          ) -> jax.Array:
  """Validates model inputs at trace time and returns the mask as bool.

  Args:
    tokens: [B, L] integer token ids.
    mask: [B, L] bool or integer, nonzero at real tokens.
    max_len: if given, the largest L accepted.

  Returns:
    mask: [B, L] bool.

  Raises:
    ValueError / TypeError naming the argument, what was expected and what came.
  """
  if getattr(tokens, "ndim", None) != 2:
    raise ValueError(
        f"tokens must have shape [B, L], got shape {getattr(tokens, 'shape', None)}."
    )
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise TypeError(f"tokens must have an integer dtype, got {tokens.dtype}.")
  mask = check_token_mask(mask, tokens)
  if max_len is not None and tokens.shape[1] > max_len:
    raise ValueError(
        f"tokens has length L={tokens.shape[1]}, longer than the config's "
        f"max_len={max_len}."
    )
  return mask


def check_token_mask(mask: Any, tokens: jax.Array, name: str = "mask") -> jax.Array:
  """Checks a per-token mask (`mask`, `prompt_mask`) against `tokens`; returns it as bool.

  Args:
    mask: [B, L] bool or integer, the shape of `tokens`.
    tokens: the [B, L] token ids it belongs to.
    name: the argument's name, for the error messages.

  Returns:
    [B, L] bool.

  Raises:
    ValueError (wrong shape) / TypeError (wrong dtype) naming the argument.
  """
  if getattr(mask, "shape", None) != tokens.shape:
    raise ValueError(
        f"{name} must have the shape of tokens {tuple(tokens.shape)}, got "
        f"{getattr(mask, 'shape', None)}."
    )
  if not (jnp.issubdtype(mask.dtype, jnp.integer) or mask.dtype == jnp.bool_):
    raise TypeError(f"{name} must be bool or integer, got {mask.dtype}.")
  return mask.astype(jnp.bool_)


def rope_inverse_frequencies(head_dim: int, base: float = 10000.0,
                             rope_scaling: Mapping[str, Any] | None = None) -> np.ndarray:
  """RoPE inverse frequencies [K/2] float32, with optional Llama-3 or linear scaling.

  Plain (Su et al. 2021): inv_freq_i = 1 / base ** (2i / K), i = 0..K/2-1.

  "linear" (Chen et al. 2023): inv_freq_i / factor (positions divided by factor).

  "llama3" (Dubey et al. 2024, Llama 3.1): with wavelength w_i = 2 pi / inv_freq_i,
  c = original_max_position_embeddings, lo = c / low_freq_factor, hi = c /
  high_freq_factor:
    w_i < hi:         inv_freq_i                      (high frequencies kept)
    w_i > lo:         inv_freq_i / factor             (low frequencies interpolated)
    otherwise:        (1 - s) inv_freq_i / factor + s inv_freq_i,
                      s = (c / w_i - low_freq_factor) / (high_freq_factor - low_freq_factor)

  Computed in float32 numpy in the order Hugging Face transformers uses
  (`modeling_rope_utils._compute_llama3_parameters`), so imported checkpoints see the
  same angles.

  Args:
    head_dim: K, even.
    base: wavelength base (default 10000.0).
    rope_scaling: None or a mapping as `TransformerConfig.rope_scaling`.

  Returns:
    [K/2] float32 numpy array.

  >>> rope_inverse_frequencies(4, 100.0).tolist()
  [1.0, 0.10000000149011612]
  """
  if head_dim % 2:
    raise ValueError(f"head_dim must be even for RoPE, got {head_dim}.")
  exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
  inv_freq = (np.float32(1.0) / np.power(np.float32(base), exponents)).astype(np.float32)
  if rope_scaling is None:
    return inv_freq
  scaling = dict(_normalise_rope_scaling(rope_scaling))
  factor = np.float32(scaling["factor"])
  if scaling["rope_type"] == "linear":
    return (inv_freq / factor).astype(np.float32)
  low, high = np.float32(scaling["low_freq_factor"]), np.float32(scaling["high_freq_factor"])
  context = np.float32(scaling["original_max_position_embeddings"])
  low_wavelen, high_wavelen = context / low, context / high
  wavelen = np.float32(2 * math.pi) / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
  smooth = (context / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, base: float = 10000.0, *,
               inv_freq: Any = None) -> jax.Array:
  """Rotary position embedding (Su et al. 2021), "rotate-half" layout.

  The head dimension is split into halves (x1, x2); pair i = (x1[i], x2[i]) is rotated
  by the angle position * base ** (-2i / K) (or position * inv_freq[i] when
  `inv_freq` is given, e.g. from `rope_inverse_frequencies` with scaling). After
  rotation the dot product of a query at position m with a key at position n depends
  on (m, n) only through m - n.

  Args:
    x: [..., L, H, K] queries or keys (K even), any float dtype.
    positions: [L] or [..., L] integer (or float) positions, broadcast against x's
      leading dimensions.
    base: wavelength base (default 10000.0); ignored when inv_freq is given.
    inv_freq: optional [K/2] inverse frequencies.

  Returns:
    [..., L, H, K], rotated in float32 and cast back to x.dtype.

  >>> x = jnp.ones((1, 3, 1, 4))
  >>> apply_rope(x, jnp.arange(3)).shape
  (1, 3, 1, 4)
  """
  if x.ndim < 3 or x.shape[-1] % 2:
    raise ValueError(f"x must have shape [..., L, H, K] with K even, got {x.shape}.")
  if positions.shape[-1] != x.shape[-3]:
    raise ValueError(
        f"positions must end in L={x.shape[-3]} (the length axis of x {x.shape}), got "
        f"shape {positions.shape}."
    )
  half = x.shape[-1] // 2
  if inv_freq is None:
    inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [K/2]
  else:
    inv_freq = jnp.asarray(inv_freq, jnp.float32)
    if inv_freq.shape != (half,):
      raise ValueError(
          f"inv_freq must have shape [K/2] = ({half},), got {inv_freq.shape}.")
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [..., L, K/2]
  sin = jnp.sin(angles)[..., None, :]  # [..., L, 1, K/2]
  cos = jnp.cos(angles)[..., None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., :half], x32[..., half:]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def positions_from_mask(mask: jax.Array) -> jax.Array:
  """RoPE positions counted from each row's first real token: t - first(mask), floor 0.

  With right padding this is arange(L) (and a mask with holes keeps arange, the
  positions of rmjax's original model); with left padding the first real token gets
  position 0, the `position_ids` that Hugging Face's `generate` computes (cumsum(mask) -
  1, equal on a contiguous run of real tokens). Positions at leading padding are 0 and
  meaningless (their outputs are never read).

  Args:
    mask: [B, L] bool, True at real tokens.

  Returns:
    [B, L] int32.

  >>> positions_from_mask(jnp.array([[0, 0, 1, 1], [1, 1, 1, 0]], bool)).tolist()
  [[0, 0, 0, 1], [0, 1, 2, 3]]
  """
  index = jnp.arange(mask.shape[-1], dtype=jnp.int32)
  first = jnp.argmax(mask.astype(jnp.bool_), axis=-1).astype(jnp.int32)  # 0 if no token
  return jnp.maximum(index - first[..., None], 0)


class RMSNorm(nnx.Module):
  """Root-mean-square layer norm (Zhang & Sennrich 2019): x / rms(x) * scale.

  With plus_one (Gemma): x / rms(x) * (1 + scale).

  Statistics are computed in float32 whatever the compute dtype.

  Args:
    num_features: D, the size of the normalised last axis.
    eps: added to the mean square (default 1e-6).
    dtype: output dtype (default float32).
    plus_one: scale by (1 + scale), scale initialised to zeros (Gemma); default False.
    param_dtype: dtype of `scale` (default float32), initialised to ones.
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, num_features: int, *, eps: float = 1e-6, dtype=jnp.float32,
               param_dtype=jnp.float32, plus_one: bool = False, rngs: nnx.Rngs):
    self.eps = eps
    self.dtype = jnp.dtype(dtype)
    self.plus_one = plus_one
    init = nnx.initializers.zeros if plus_one else nnx.initializers.ones
    self.scale = _param(rngs, init, (num_features,), (None,), jnp.dtype(param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., D] -> [..., D] in `dtype`."""
    x32 = x.astype(jnp.float32)
    inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    scale = self.scale[...].astype(jnp.float32)
    if self.plus_one:
      scale = 1.0 + scale
    return (x32 * inv_rms * scale).astype(self.dtype)


class KVCache(NamedTuple):
  """Keys and values of every layer for autoregressive decoding (`Transformer.prefill`).

  Fixed shapes (S = prompt length + max new tokens slots), so a decode loop over it
  compiles once. Slot s of every row holds the s-th token fed to the model (left-padded
  prompt first, then the generated tokens); `key_mask` says which slots hold real tokens.

  Attributes:
    keys: num_layers arrays [B, S, KV, K] (RoPE applied), compute dtype.
    values: num_layers arrays [B, S, KV, K].
    key_mask: [B, S] bool, True at slots written with real tokens.
    positions: [B] int32, the RoPE position of each row's next token (its number of real
      tokens so far).
    index: [] int32, the slot of the next token (the same for every row).
  """
  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  key_mask: jax.Array
  positions: jax.Array
  index: jax.Array


class CausalSelfAttention(nnx.Module):
  """Multi-head (or grouped-query) causal self-attention with RoPE and a key mask.

  Query kernel [D, H, K], key/value kernels [D, KV, K] (KV = `config.kv_heads`; KV = H
  by default), logical axes ('embed', 'heads', 'kv'); the output kernel is [H, K, D]
  ('heads', 'kv', 'embed'), initialised with variance scaled by 1 / (2 * num_layers)
  so that the residual stream keeps unit scale at init (Radford et al. 2019). Query
  head h reads key/value head h // (H / KV) (Ainslie et al. 2023). Optional (off by
  default): biases `query_bias` [H, K], `key_bias` / `value_bias` [KV, K] (`qkv_bias`,
  Qwen2) and RMSNorms `query_norm` / `key_norm` over K before RoPE (`qk_norm`, Qwen3);
  Gemma-2's query_pre_attn_scalar, logit soft-capping and sliding window.
  Logits (scaled by 1 / sqrt(K)) and softmax are float32; masked logits get a large
  finite negative value, so no row is ever NaN. RoPE positions count from each row's
  first real token (`positions_from_mask`), so right and left padding give the same
  outputs at real tokens; the key mask keeps every query off padding keys (also inside
  a row).

  Args:
    config: the `TransformerConfig`.
    sliding_window: optional W: query t sees keys t - W + 1 .. t only (Gemma-2's local
      layers; default None).
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: TransformerConfig, *, sliding_window: int | None = None,
               rngs: nnx.Rngs):
    d, h, kv, k = config.d_model, config.num_heads, config.kv_heads, config.head_dim
    pdt = config.parameter_dtype
    self.config = config
    self.sliding_window = sliding_window
    in_init = _fan_in_init(in_axis=0, out_axis=(1, 2))
    self.query = _param(rngs, in_init, (d, h, k), ("embed", "heads", "kv"), pdt)
    self.key = _param(rngs, in_init, (d, kv, k), ("embed", "heads", "kv"), pdt)
    self.value = _param(rngs, in_init, (d, kv, k), ("embed", "heads", "kv"), pdt)
    out_init = _fan_in_init(in_axis=(0, 1), out_axis=2, scale=1.0 / (2 * config.num_layers))
    self.out = _param(rngs, out_init, (h, k, d), ("heads", "kv", "embed"), pdt)
    if config.qkv_bias:
      zeros = nnx.initializers.zeros
      self.query_bias = _param(rngs, zeros, (h, k), ("heads", "kv"), pdt)
      self.key_bias = _param(rngs, zeros, (kv, k), ("heads", "kv"), pdt)
      self.value_bias = _param(rngs, zeros, (kv, k), ("heads", "kv"), pdt)
    if config.qk_norm:
      norm_kwargs = dict(eps=config.norm_eps, dtype=config.compute_dtype,
                         param_dtype=pdt, plus_one=config.norm_plus_one, rngs=rngs)
      self.query_norm = RMSNorm(k, **norm_kwargs)
      self.key_norm = RMSNorm(k, **norm_kwargs)

  def _project(self, x: jax.Array, positions: jax.Array
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Queries [B, L, H, K], keys and values [B, L, KV, K] of x [B, L, D] (compute dtype):
    projections, optional biases and q/k norms, then RoPE at `positions` [B, L]."""
    cfg = self.config
    dt = cfg.compute_dtype
    q = jnp.einsum("bld,dhk->blhk", x, self.query[...].astype(dt))
    k = jnp.einsum("bld,dhk->blhk", x, self.key[...].astype(dt))
    v = jnp.einsum("bld,dhk->blhk", x, self.value[...].astype(dt))
    if cfg.qkv_bias:
      q = q + self.query_bias[...].astype(dt)
      k = k + self.key_bias[...].astype(dt)
      v = v + self.value_bias[...].astype(dt)
    if cfg.qk_norm:
      q = self.query_norm(q)
      k = self.key_norm(k)
    inv_freq = (None if cfg.rope_scaling is None
                else rope_inverse_frequencies(cfg.head_dim, cfg.rope_base,
                                              cfg.rope_scaling_dict))
    q = apply_rope(q, positions, cfg.rope_base, inv_freq=inv_freq)
    k = apply_rope(k, positions, cfg.rope_base, inv_freq=inv_freq)
    return q, k, v

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """Attends each position to itself and earlier real positions.

    Args:
      x: [B, L, D] normalised inputs in the compute dtype.
      mask: [B, L] bool, True at real tokens (keys where it is False are ignored).

    Returns:
      [B, L, D] in the compute dtype.
    """
    cfg = self.config
    dt = cfg.compute_dtype
    q, k, v = self._project(x, positions_from_mask(mask))
    scalar = cfg.head_dim if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar
    if cfg.attention == "dot_product":
      window = None if self.sliding_window is None else (self.sliding_window - 1, 0)
      context = jax.nn.dot_product_attention(
          q, k, v, mask=mask[:, None, None, :], scale=1.0 / math.sqrt(scalar),
          is_causal=True, local_window_size=window)
    elif cfg.attention == "tpu_splash":
      context = tpu_attention.splash_attention(
          q, k, v, mask, scale=1.0 / math.sqrt(scalar), sliding_window=self.sliding_window,
          logit_softcap=cfg.attn_logit_softcap)
    else:
      context = self._reference_context(q, k, v, mask, scalar)
    return jnp.einsum("blhk,hkd->bld", context.astype(dt), self.out[...].astype(dt))

  def _reference_context(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                         scalar: float) -> jax.Array:
    """The reference attention: einsum logits, float32 softmax, einsum; q [B, L, H, K],
    k, v [B, L, KV, K], mask [B, L] -> context [B, L, H, K] in the compute dtype.

    On TPU and GPU (`tpu_attention.target_platform`) one einsum over the whole batch and
    sequence. On CPU two changes of schedule, the same outputs at real tokens (the sums in
    another order; tested, values and gradients): the rows go in chunks of
    `cpu_attention_rows` (a `jax.lax.map` over chunks, each rematerialised in the backward
    pass), so that a chunk's [rows, H, Q, S] float32 logits stay in cache instead of
    streaming the whole batch's through memory several times; and the queries of a sequence
    longer than `CAUSAL_QUERY_BLOCK` go in blocks of that many (`_causal_query_blocks`). Not
    on TPU or GPU: there the blocks cost memory (the reward-model pod at 2048 tokens on v5e:
    24.8 GiB of temporaries in 16 blocks, refused, against 14.4 GiB in one), and the fused
    kernels ("dot_product", "tpu_splash") are the long-sequence paths.
    """
    if tpu_attention.target_platform() != "cpu":
      return self._attend(q, k, v, mask, scalar, 0, 0)
    batch, seq_len, heads = q.shape[:3]
    rows = cpu_attention_rows(batch, heads, seq_len)
    if rows == batch:
      return self._causal_query_blocks(q, k, v, mask, scalar)
    steps = batch // rows
    # Chunk i holds rows i, i + steps, i + 2 steps, ...: a batch sharded in contiguous
    # blocks keeps every chunk spread over the same devices.
    chunks = lambda x: x.reshape(rows, steps, *x.shape[1:]).swapaxes(0, 1)
    attend = jax.checkpoint(lambda args: self._causal_query_blocks(*args, scalar))
    context = jax.lax.map(attend, (chunks(q), chunks(k), chunks(v), chunks(mask)))
    return context.swapaxes(0, 1).reshape(q.shape)

  def _causal_query_blocks(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                           scalar: float) -> jax.Array:
    """`_attend` with the queries of a sequence longer than `CAUSAL_QUERY_BLOCK` in blocks
    of that many, each against the keys it can see (those up to its last query; with a
    window W, from its first query's t - W + 1): causality skips the logits above the
    diagonal, about half of them at long L. A real query's output is the same (its
    excluded keys had weight exactly 0); a query with no key to see (padding) stays finite
    and meaningless."""
    seq_len = q.shape[1]
    block = CAUSAL_QUERY_BLOCK
    if seq_len <= block:
      return self._attend(q, k, v, mask, scalar, 0, 0)
    contexts = []
    for start in range(0, seq_len, block):
      end = min(start + block, seq_len)
      first = 0 if self.sliding_window is None else max(0, start - self.sliding_window + 1)
      contexts.append(self._attend(q[:, start:end], k[:, first:end], v[:, first:end],
                                   mask[:, first:end], scalar, start, first))
    return jnp.concatenate(contexts, axis=1)

  def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array,
              scalar: float, query_offset: int, key_offset: int) -> jax.Array:
    """Queries q [B, Q, H, K] at positions query_offset + [0, Q) over keys k, v
    [B, S, KV, K] at key_offset + [0, S) with key_mask [B, S]: [B, Q, H, K]."""
    cfg = self.config
    groups = cfg.num_heads // cfg.kv_heads
    if groups > 1:  # grouped-query attention: query head h reads kv head h // groups
      k = jnp.repeat(k, groups, axis=2)
      v = jnp.repeat(v, groups, axis=2)
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k, preferred_element_type=jnp.float32)
    logits = logits * (1.0 / math.sqrt(scalar))
    if cfg.attn_logit_softcap is not None:
      logits = cfg.attn_logit_softcap * jnp.tanh(logits / cfg.attn_logit_softcap)
    query_index = query_offset + jnp.arange(q.shape[1])
    key_index = key_offset + jnp.arange(k.shape[1])
    causal = query_index[:, None] >= key_index[None, :]  # [Q, S]
    if self.sliding_window is not None:
      causal = causal & (key_index[None, :] > query_index[:, None] - self.sliding_window)
    allowed = causal[None, None, :, :] & key_mask[:, None, None, :]  # [B, 1, Q, S]
    logits = jnp.where(allowed, logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(cfg.compute_dtype)
    return jnp.einsum("bhqs,bshk->bqhk", probs, v)

  def cached(self, x: jax.Array, positions: jax.Array, key_mask: jax.Array,
             cache_k: jax.Array, cache_v: jax.Array, index: jax.Array
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Attention of L new positions over a key/value cache (prefill and decode).

    The new keys and values (RoPE applied) are written into the cache at slots
    index .. index + L - 1; the query at slot t then attends to the cached slots s <= t
    (s > t - W as well with a sliding window W) whose `key_mask` is True. On the slots
    of a whole sequence this is `__call__` (same projections, scaling, soft-cap,
    window and masking); only the summation order of the grouped-query products
    differs (no `jnp.repeat` of the cache).

    Args:
      x: [B, L, D] normalised inputs of the new positions, compute dtype.
      positions: [B, L] int RoPE positions of the new positions.
      key_mask: [B, S] bool, True at cached slots holding real tokens (the new slots
        included).
      cache_k: [B, S, KV, K] cached keys (RoPE applied), compute dtype.
      cache_v: [B, S, KV, K] cached values.
      index: scalar int, the slot of x[:, 0]; index + L <= S (not checked under jit:
        `lax.dynamic_update_slice` would clamp).

    Returns:
      (out [B, L, D] in the compute dtype, cache_k, cache_v updated).
    """
    cfg = self.config
    dt = cfg.compute_dtype
    batch, length = x.shape[:2]
    num_slots = cache_k.shape[1]
    q, k, v = self._project(x, positions)
    cache_k = jax.lax.dynamic_update_slice_in_dim(cache_k, k.astype(cache_k.dtype), index, 1)
    cache_v = jax.lax.dynamic_update_slice_in_dim(cache_v, v.astype(cache_v.dtype), index, 1)
    # Grouped-query attention without repeating the cache: query head h = g * G + r reads
    # key/value head g.
    kv_heads, groups = cfg.kv_heads, cfg.num_heads // cfg.kv_heads
    q = q.reshape(batch, length, kv_heads, groups, cfg.head_dim)
    logits = jnp.einsum("blgrk,bsgk->bgrls", q, cache_k.astype(dt),
                        preferred_element_type=jnp.float32)
    logits = logits.reshape(batch, cfg.num_heads, length, num_slots)
    scalar = cfg.head_dim if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar
    logits = logits * (1.0 / math.sqrt(scalar))
    if cfg.attn_logit_softcap is not None:
      logits = cfg.attn_logit_softcap * jnp.tanh(logits / cfg.attn_logit_softcap)
    query_slot = index + jnp.arange(length)[:, None]  # [L, 1]
    key_slot = jnp.arange(num_slots)[None, :]  # [1, S]
    causal = key_slot <= query_slot
    if self.sliding_window is not None:
      causal = causal & (key_slot > query_slot - self.sliding_window)
    allowed = causal[None, None, :, :] & key_mask[:, None, None, :]  # [B, 1, L, S]
    logits = jnp.where(allowed, logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    probs = probs.reshape(batch, kv_heads, groups, length, num_slots)
    context = jnp.einsum("bgrls,bsgk->blgrk", probs, cache_v.astype(dt))
    context = context.reshape(batch, length, cfg.num_heads, cfg.head_dim)
    return jnp.einsum("blhk,hkd->bld", context, self.out[...].astype(dt)), cache_k, cache_v


def cpu_attention_rows(batch: int, heads: int, seq_len: int) -> int:
  """Rows per chunk of the reference attention on CPU (`CausalSelfAttention`).

  A row's float32 logits of one query block take heads * min(L, CAUSAL_QUERY_BLOCK) * L * 4
  bytes. The whole batch when all of its rows fit in `CPU_ATTENTION_CHUNK_BYTES`; else the
  largest divisor of `batch` that fits, at least 2 (on a 2-core CPU one row per chunk was
  slower than no chunks: 16 rows x 1024 tokens, value and gradient 314 ms vs 279, 2 rows
  180 ms); the whole batch when no divisor from 2 up fits.

  >>> cpu_attention_rows(64, 4, 24), cpu_attention_rows(64, 4, 128)
  (64, 4)
  >>> cpu_attention_rows(64, 4, 384), cpu_attention_rows(16, 4, 1024)
  (2, 2)
  >>> cpu_attention_rows(7, 4, 1024)  # no divisor from 2 up: the whole batch
  7
  """
  row_bytes = heads * min(seq_len, CAUSAL_QUERY_BLOCK) * seq_len * 4
  if batch * row_bytes <= CPU_ATTENTION_CHUNK_BYTES:
    return batch
  most = max(2, CPU_ATTENTION_CHUNK_BYTES // row_bytes)
  fitting = [rows for rows in range(2, min(most, batch) + 1) if batch % rows == 0]
  return fitting[-1] if fitting else batch


# Gate activations of `gated_mlp` by `TransformerConfig.mlp_activation` name.
_MLP_ACTIVATION_FNS = {
    "silu": jax.nn.silu,
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # HF gelu_pytorch_tanh
}


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def gated_mlp(x: jax.Array, gate_kernel: jax.Array, up_kernel: jax.Array,
              down_kernel: jax.Array, activation: str = "silu") -> jax.Array:
  """Gated feed-forward layer (Shazeer 2020): (act(x @ W_gate) * (x @ W_up)) @ W_down.

  With a = act(x W_gate), u = x W_up, h = a * u, y = h W_down and g = dL/dy, its
  hand-written backward pass computes

    dh = g W_down^T,  dW_down = h^T g,  dW_up = x^T (dh * a),
    dW_gate = x^T (dh * u * act'(x W_gate)),
    dx = (dh * u * act'(x W_gate)) W_gate^T + (dh * a) W_up^T,

  the values `jax.grad` gives for the plain expression (to float rounding). The weight
  gradients are contracted over the token axes as x^T [D, N] and g^T [D, N] times the
  [N, F] factors: XLA's CPU layout pass lays the left operand of such a dot out
  transposed, and these are the narrow [N, D] ones, so no [N, F] activation is written
  out transposed (with autodiff those copies, and the elementwise products fused into
  them, dominated the CPU backward pass; see benchmarks/cpu_step_side_by_side). A
  `jax.custom_vjp`: reverse mode only (no `jax.jvp` through it).

  Args:
    x: [..., D] inputs, compute dtype.
    gate_kernel: [D, F].
    up_kernel: [D, F].
    down_kernel: [F, D].
    activation: "silu" (SwiGLU, default) or "gelu_tanh" (GeGLU with the tanh
      approximation, Gemma); see `MLP_ACTIVATIONS`.

  Returns:
    [..., D] in the dtype of the products.

  >>> x, w = jnp.ones((2, 3)), jnp.zeros((3, 4))
  >>> gated_mlp(x, w, w, jnp.zeros((4, 3))).shape
  (2, 3)
  """
  return _gated_mlp_forward(x, gate_kernel, up_kernel, down_kernel, activation)[0]


def _gated_mlp_forward(x, gate_kernel, up_kernel, down_kernel, activation):
  """`gated_mlp`'s output and the residuals its backward pass reads."""
  if activation not in _MLP_ACTIVATION_FNS:
    raise ValueError(f"activation must be one of {MLP_ACTIVATIONS}, got {activation!r}.")
  pre_activation = x @ gate_kernel
  up = x @ up_kernel
  out = (_MLP_ACTIVATION_FNS[activation](pre_activation) * up) @ down_kernel
  return out, (x, pre_activation, up, gate_kernel, up_kernel, down_kernel)


def _gated_mlp_backward(activation, residuals, out_grad):
  """`gated_mlp`'s gradients (see its docstring) from its residuals and dL/dy."""
  x, pre_activation, up, gate_kernel, up_kernel, down_kernel = residuals
  gate, activation_vjp = jax.vjp(_MLP_ACTIVATION_FNS[activation], pre_activation)
  hidden_grad = out_grad @ down_kernel.T
  # (g^T h)^T rather than h^T g: XLA's CPU dot wants its left operand transposed in
  # memory, and g [N, D] is the narrower one.
  down_grad = jnp.einsum("...d,...f->df", out_grad, gate * up).T
  (pre_activation_grad,) = activation_vjp(hidden_grad * up)
  up_grad = hidden_grad * gate
  x_grad = pre_activation_grad @ gate_kernel.T + up_grad @ up_kernel.T
  return (x_grad, jnp.einsum("...d,...f->df", x, pre_activation_grad),
          jnp.einsum("...d,...f->df", x, up_grad), down_grad)


gated_mlp.defvjp(_gated_mlp_forward, _gated_mlp_backward)


class GatedMLP(nnx.Module):
  """SwiGLU feed-forward layer (Shazeer 2020): down(silu(gate(x)) * up(x)).

  With `config.mlp_activation == "gelu_tanh"`: GeGLU, gelu (tanh approximation) in place
  of silu (Gemma). Computed by `gated_mlp` (its own backward pass).

  Kernels: gate and up [D, F] ('embed', 'mlp'); down [F, D] ('mlp', 'embed'), the
  latter scaled like the attention output (variance / (2 * num_layers)). No biases.

  Args:
    config: the `TransformerConfig` (F = `config.mlp_dim`).
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    d, f = config.d_model, config.mlp_dim
    pdt = config.parameter_dtype
    self.config = config
    in_init = _fan_in_init(in_axis=0, out_axis=1)
    self.gate = _param(rngs, in_init, (d, f), ("embed", "mlp"), pdt)
    self.up = _param(rngs, in_init, (d, f), ("embed", "mlp"), pdt)
    down_init = _fan_in_init(in_axis=0, out_axis=1, scale=1.0 / (2 * config.num_layers))
    self.down = _param(rngs, down_init, (f, d), ("mlp", "embed"), pdt)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, L, D] -> [B, L, D], in the compute dtype (`gated_mlp`)."""
    dt = self.config.compute_dtype
    return gated_mlp(x, self.gate[...].astype(dt), self.up[...].astype(dt),
                     self.down[...].astype(dt), self.config.mlp_activation)


class TransformerBlock(nnx.Module):
  """Pre-norm block (Xiong et al. 2020): h = x + attn(norm(x)); out = h + mlp(norm(h)).

  Norms are `RMSNorm` (Zhang & Sennrich 2019), attention is `CausalSelfAttention` with
  RoPE (Su et al. 2021), the MLP is `GatedMLP` (SwiGLU, Shazeer 2020). With
  `config.post_norms` (Gemma-2): h = x + post_norm(attn(norm(x))), likewise the MLP.

  Args:
    config: the `TransformerConfig`.
    layer_index: the block's index (default 0); it has a sliding window when listed in
      `config.sliding_window_layers`.
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: TransformerConfig, *, layer_index: int = 0, rngs: nnx.Rngs):
    norm_kwargs = dict(eps=config.norm_eps, dtype=config.compute_dtype,
                       param_dtype=config.parameter_dtype, plus_one=config.norm_plus_one,
                       rngs=rngs)
    window = (config.sliding_window if layer_index in config.sliding_window_layers
              else None)
    self.attention_norm = RMSNorm(config.d_model, **norm_kwargs)
    self.attention = CausalSelfAttention(config, sliding_window=window, rngs=rngs)
    self.mlp_norm = RMSNorm(config.d_model, **norm_kwargs)
    self.mlp = GatedMLP(config, rngs=rngs)
    self.post_norms = config.post_norms
    if config.post_norms:
      self.attention_post_norm = RMSNorm(config.d_model, **norm_kwargs)
      self.mlp_post_norm = RMSNorm(config.d_model, **norm_kwargs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x: [B, L, D], mask: [B, L] bool -> [B, L, D]."""
    if self.post_norms:  # Gemma-2: h = x + post(attn(pre(x))); same for the MLP
      x = x + self.attention_post_norm(self.attention(self.attention_norm(x), mask))
      return x + self.mlp_post_norm(self.mlp(self.mlp_norm(x)))
    x = x + self.attention(self.attention_norm(x), mask)
    return x + self.mlp(self.mlp_norm(x))

  def cached(self, x: jax.Array, positions: jax.Array, key_mask: jax.Array,
             cache_k: jax.Array, cache_v: jax.Array, index: jax.Array
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`__call__` on L new positions with the attention over a key/value cache.

    Args and cache layout as `CausalSelfAttention.cached`; x: [B, L, D] residual stream.

    Returns:
      (x [B, L, D], cache_k, cache_v updated).
    """
    attended, cache_k, cache_v = self.attention.cached(
        self.attention_norm(x), positions, key_mask, cache_k, cache_v, index)
    if self.post_norms:
      x = x + self.attention_post_norm(attended)
      return x + self.mlp_post_norm(self.mlp(self.mlp_norm(x))), cache_k, cache_v
    x = x + attended
    return x + self.mlp(self.mlp_norm(x)), cache_k, cache_v


class Transformer(nnx.Module):
  """Decoder-only pre-norm transformer backbone (embedding, blocks, final RMSNorm).

  Inputs may be right-padded (real tokens first) or left-padded (padding first): RoPE
  positions count from the first real token (`positions_from_mask`) and padding keys
  are masked, so a sequence's hidden states at its real tokens do not depend on the
  padding around it. Padding tokens are replaced by id 0 and their embedding by zeros
  before the first block, so their ids (even out-of-range ones) never matter. Ids of
  real tokens must lie in [0, vocab_size): an out-of-range id cannot raise under jit and
  yields NaN hidden states (never a silently clamped embedding).

  The token embedding [V, D] has logical axes ('vocab', 'embed') and is initialised
  N(0, 1). With `config.lm_head == "untied"` the model also holds `lm_head` [D, V]
  ('embed', 'vocab'), initialised N(0, 1 / D); see `lm_logits`.

  Args:
    config: the `TransformerConfig`.
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, TransformerConfig):
      raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}.")
    self.config = config
    self.embedding = _param(
        rngs, nnx.initializers.normal(stddev=1.0), (config.vocab_size, config.d_model),
        ("vocab", "embed"), config.parameter_dtype,
    )
    self.layers = nnx.List(
        [TransformerBlock(config, layer_index=i, rngs=rngs)
         for i in range(config.num_layers)]
    )
    self.final_norm = RMSNorm(
        config.d_model, eps=config.norm_eps, dtype=config.compute_dtype,
        param_dtype=config.parameter_dtype, plus_one=config.norm_plus_one, rngs=rngs,
    )
    if config.lm_head == "untied":
      self.lm_head = _param(
          rngs, _fan_in_init(in_axis=0, out_axis=1), (config.d_model, config.vocab_size),
          ("embed", "vocab"), config.parameter_dtype,
      )

  def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Hidden states of every position.

    Args:
      tokens: [B, L] integer token ids, L <= config.max_len.
      mask: [B, L] bool or int, nonzero at real tokens (a contiguous run per row: right
        or left padding).

    Returns:
      hidden: [B, L, d_model] in the compute dtype; rows at padding positions are
      defined (finite) but meaningless.
    """
    return self.final_norm(self.hidden_before_layer(tokens, mask, self.config.num_layers))

  def hidden_before_layer(self, tokens: jax.Array, mask: jax.Array, layer: int
                          ) -> jax.Array:
    """The residual stream entering block `layer`: the embedding, then blocks [0, layer).

    `layer = num_layers` gives the last block's output before the final norm;
    `__call__` is `final_norm(hidden_before_layer(tokens, mask, num_layers))`. The input
    of the last k blocks, cached once, lets a reward model train only those blocks and
    its head on a frozen pretrained backbone (`rmjax.models.pretrained_reward`).

    Args:
      tokens: [B, L] integer token ids, L <= config.max_len.
      mask: [B, L] bool or int, nonzero at real tokens (right or left padding).
      layer: an int in [0, num_layers].

    Returns:
      [B, L, d_model] in the compute dtype.
    """
    if isinstance(layer, bool) or not isinstance(layer, int) or not (
        0 <= layer <= self.config.num_layers):
      raise ValueError(f"layer must be an int in [0, {self.config.num_layers}], got "
                       f"{layer!r}.")
    mask = check_tokens_and_mask(tokens, mask, self.config.max_len)
    dt = self.config.compute_dtype
    tokens = jnp.where(mask, tokens, 0)
    x = jnp.take(self.embedding[...], tokens, axis=0, mode="fill")
    if self.config.scale_embeddings:  # Gemma: sqrt(D), rounded to the parameter dtype
      x = x * jnp.asarray(math.sqrt(self.config.d_model), x.dtype)
    x = x.astype(dt)
    x = jnp.where(mask[..., None], x, jnp.zeros((), dt))
    return layer_scan.run_blocks(list(self.layers[:layer]), x, mask,
                                 scan=self.config.scan_layers, remat=self.config.remat)

  def lm_logits(self, hidden: jax.Array) -> jax.Array:
    """Next-token logits of hidden states: hidden @ W, float32.

    W is embedding.T [D, V] (`config.lm_head == "tied"`) or the own kernel `lm_head`
    [D, V] ("untied"); the product runs in the compute dtype and is returned in float32,
    soft-capped as c * tanh(logits / c) with `config.final_logit_softcap` (Gemma-2).

    Args:
      hidden: [..., D] hidden states (e.g. the output of `__call__`).

    Returns:
      [..., V] float32 logits.

    Raises:
      ValueError: the config has lm_head="none", or hidden's last axis is not D.
    """
    cfg = self.config
    if cfg.lm_head == "none":
      raise ValueError(
          "lm_logits needs an LM head; this backbone's config has lm_head='none'.")
    if getattr(hidden, "shape", (None,))[-1] != cfg.d_model:
      raise ValueError(
          f"hidden must have shape [..., {cfg.d_model}], got "
          f"{getattr(hidden, 'shape', None)}."
      )
    dt = cfg.compute_dtype
    if cfg.lm_head == "tied":
      logits = jnp.einsum("...d,vd->...v", hidden.astype(dt), self.embedding[...].astype(dt),
                          preferred_element_type=jnp.float32)
    else:
      logits = jnp.einsum("...d,dv->...v", hidden.astype(dt), self.lm_head[...].astype(dt),
                          preferred_element_type=jnp.float32)
    if cfg.final_logit_softcap is not None:
      logits = cfg.final_logit_softcap * jnp.tanh(logits / cfg.final_logit_softcap)
    return logits

  def logits(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Vocabulary logits of every position: `lm_logits(self(tokens, mask))`.

    Args:
      tokens: [B, L] integer token ids.
      mask: [B, L] bool or int, nonzero at real tokens (right or left padding).

    Returns:
      [B, L, V] float32; the logits at position t predict token t + 1.
    """
    return self.lm_logits(self(tokens, mask))

  def init_cache(self, batch_size: int, length: int) -> KVCache:
    """An empty `KVCache` of `length` slots for `batch_size` sequences (compute dtype)."""
    cfg = self.config
    shape = (batch_size, length, cfg.kv_heads, cfg.head_dim)
    empty = tuple(jnp.zeros(shape, cfg.compute_dtype) for _ in range(cfg.num_layers))
    return KVCache(keys=empty, values=empty,
                   key_mask=jnp.zeros((batch_size, length), jnp.bool_),
                   positions=jnp.zeros((batch_size,), jnp.int32),
                   index=jnp.zeros((), jnp.int32))

  def prefill(self, tokens: jax.Array, mask: jax.Array, *, max_new_tokens: int
              ) -> tuple[jax.Array, KVCache]:
    """Runs LEFT-padded prompts through the model and caches their keys and values.

    The prompt fills slots 0..P-1 of a cache of S = P + max_new_tokens slots; the
    logits at slot P-1 (each row's last real token, as the prompts are left-padded)
    predict the first new token. Equal to `logits(tokens, mask)[:, -1]` up to float
    rounding.

    Args:
      tokens: [B, P] integer token ids, left-padded.
      mask: [B, P] bool or int, nonzero at real tokens (padding first; not checked here,
        see `rmjax.generation`).
      max_new_tokens: slots kept free for `decode_step`; P + max_new_tokens <= max_len.

    Returns:
      (logits [B, V] float32, cache) with cache.index = P and cache.positions the
      number of real tokens of each row (the RoPE position of its next token).

    Raises:
      ValueError: no LM head (lm_head="none"), bad shapes, or P + max_new_tokens >
        config.max_len.
    """
    cfg = self.config
    if cfg.lm_head == "none":
      raise ValueError("prefill needs an LM head; this backbone's config has lm_head='none'.")
    mask = check_tokens_and_mask(tokens, mask, cfg.max_len)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or (
        max_new_tokens < 0):
      raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}.")
    batch_size, prompt_len = tokens.shape
    if prompt_len + max_new_tokens > cfg.max_len:
      raise ValueError(
          f"prompt length P={prompt_len} plus max_new_tokens={max_new_tokens} exceeds the "
          f"config's max_len={cfg.max_len}.")
    cache = self.init_cache(batch_size, prompt_len + max_new_tokens)
    hidden, cache = self._extend_cache(tokens, mask, positions_from_mask(mask), cache)
    return self.lm_logits(hidden[:, -1]), cache

  def decode_step(self, token: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Appends one token per row at slot cache.index and returns the next logits.

    Args:
      token: [B] integer token ids in [0, vocab_size).
      cache: the `KVCache` of `prefill` or of the previous `decode_step`, with a free
        slot (cache.index < S; not checked under jit).

    Returns:
      (logits [B, V] float32 predicting the token after `token`, cache advanced by one
      slot and one position).
    """
    if getattr(token, "ndim", None) != 1:
      raise ValueError(f"token must have shape [B], got {getattr(token, 'shape', None)}.")
    tokens = token[:, None]
    hidden, cache = self._extend_cache(tokens, jnp.ones(tokens.shape, jnp.bool_),
                                       cache.positions[:, None], cache)
    return self.lm_logits(hidden[:, 0]), cache

  def _extend_cache(self, tokens: jax.Array, mask: jax.Array, positions: jax.Array,
                    cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Final-normed hidden states [B, L, D] of L new tokens at slot cache.index, and the
    cache holding them; the next RoPE position continues from positions[:, -1]."""
    x = self.hidden_before_layer(tokens, mask, 0)
    key_mask = jax.lax.dynamic_update_slice_in_dim(cache.key_mask, mask, cache.index, 1)
    keys, values = [], []
    for block, cache_k, cache_v in zip(self.layers, cache.keys, cache.values):
      x, cache_k, cache_v = block.cached(x, positions, key_mask, cache_k, cache_v,
                                         cache.index)
      keys.append(cache_k)
      values.append(cache_v)
    cache = KVCache(keys=tuple(keys), values=tuple(values), key_mask=key_mask,
                    positions=(positions[:, -1] + 1).astype(jnp.int32),
                    index=(cache.index + tokens.shape[1]).astype(jnp.int32))
    return self.final_norm(x), cache
