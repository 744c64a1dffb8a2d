"""Decoder-only pre-norm transformer backbone (Flax NNX).

The backbone maps right-padded token ids and their padding mask to hidden states:

  tokens [B, L] -> embedding -> num_layers x block -> RMSNorm -> hidden [B, L, D]

  block(x) = x + Attention(RMSNorm(x));  x = x + GatedMLP(RMSNorm(x))

Every parameter carries logical axis names (`nnx.with_partitioning`) drawn from
`LOGICAL_AXES`; `rmjax.models.logical_partition_specs` maps them onto a device mesh. The
modules hold only `nnx.Param` state (no dropout, no RNG streams), so
`nnx.split(model, nnx.Param)` captures the whole model.

References:
  Vaswani et al. (2017) Attention is all you need (the transformer);
  Xiong et al. (2020) On layer normalization in the transformer architecture (pre-norm);
  Zhang & Sennrich (2019) Root mean square layer normalization (RMSNorm);
  Su et al. (2021) RoFormer: rotary position embedding (RoPE);
  Shazeer (2020) GLU variants improve transformer (gated MLP, SwiGLU).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp

# Logical names of parameter axes. `None` (an axis that is never sharded) is also used.
LOGICAL_AXES = ("vocab", "embed", "heads", "kv", "mlp")

# Added to attention logits at masked positions. Finite (not -inf) so that a query row
# whose keys are all masked gets a uniform softmax instead of NaN.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)

_FLOAT_DTYPES = ("float32", "bfloat16", "float16")


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


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of the decoder-only transformer backbone.

  The defaults give a small byte-level model (about 0.43M parameters) that trains on a
  laptop CPU.

  Attributes:
    vocab_size: number of token ids (default 259: the byte tokenizer, pad=0, bos=1,
      eos=2, bytes at 3..258).
    max_len: longest sequence the model accepts (default 256). RoPE has no learned
      positions, so this only guards against inputs longer than the data layer makes.
    d_model: width of the residual stream (default 128).
    num_layers: number of transformer blocks (default 2).
    num_heads: attention heads (default 4); `d_model` must be a multiple of it and the
      head dimension `d_model // num_heads` must be even (RoPE rotates pairs).
    d_ff: hidden width of the gated MLP. None (default) picks the multiple of 8 at or
      just above 8/3 * d_model, which keeps the gated MLP's parameter count equal to a
      4 * d_model ungated MLP (Shazeer 2020); see `mlp_dim`.
    rope_base: RoPE wavelength base (default 10000.0, Su et al. 2021).
    norm_eps: RMSNorm epsilon (default 1e-6).
    dtype: compute dtype name, "float32" (default), "bfloat16" or "float16". Norm
      statistics, attention softmax and the reward head always run in float32.
    param_dtype: storage dtype of the parameters (default "float32").
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

  def __post_init__(self):
    for name in ("vocab_size", "max_len", "d_model", "num_layers", "num_heads"):
      _check_positive_int(name, getattr(self, name))
    if self.d_ff is not None:
      _check_positive_int("d_ff", self.d_ff)
    _check_positive_float("rope_base", self.rope_base)
    _check_positive_float("norm_eps", self.norm_eps)
    for name in ("dtype", "param_dtype"):
      value = getattr(self, name)
      if value not in _FLOAT_DTYPES:
        raise ValueError(
            f"TransformerConfig.{name} must be one of {_FLOAT_DTYPES}, got {value!r}."
        )
    if self.d_model % self.num_heads:
      raise ValueError(
          f"TransformerConfig.d_model must be divisible by num_heads, got "
          f"d_model={self.d_model} and num_heads={self.num_heads}."
      )
    if self.head_dim % 2:
      raise ValueError(
          "TransformerConfig.num_heads must leave an even head dimension for RoPE, got "
          f"d_model={self.d_model} / num_heads={self.num_heads} = {self.head_dim}."
      )

  @property
  def head_dim(self) -> int:
    """Width of one attention head, `d_model // num_heads`."""
    return self.d_model // self.num_heads

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
    if hasattr(values, "to_dict") and not isinstance(values, Mapping):
      values = values.to_dict()
    if not isinstance(values, Mapping):
      raise TypeError(
          f"TransformerConfig.from_dict: values must be a mapping, got "
          f"{type(values).__name__}."
      )
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(
          f"TransformerConfig.from_dict: unknown field(s) {unknown}; expected a subset "
          f"of {sorted(known)}."
      )
    return cls(**dict(values))

  def to_dict(self) -> dict[str, Any]:
    """The fields as a plain dict (`from_dict(c.to_dict()) == c`)."""
    return dataclasses.asdict(self)


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


def apply_rope(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding (Su et al. 2021), "rotate-half" layout.

  The head dimension is split into halves (x1, x2); pair i = (x1[i], x2[i]) is rotated
  by the angle position * base ** (-2i / K). After rotation the dot product of a query
  at position m with a key at position n depends on (m, n) only through m - n.

  Args:
    x: [..., L, H, K] queries or keys (K even), any float dtype.
    positions: [L] or [..., L] integer (or float) positions, broadcast against x's
      leading dimensions.
    base: wavelength base (default 10000.0).

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
  inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [K/2]
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [..., L, K/2]
  sin = jnp.sin(angles)[..., None, :]  # [..., L, 1, K/2]
  cos = jnp.cos(angles)[..., None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., :half], x32[..., half:]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


class RMSNorm(nnx.Module):
  """Root-mean-square layer norm (Zhang & Sennrich 2019): x / rms(x) * scale.

  Statistics are computed in float32 whatever the compute dtype.

  Args:
    num_features: D, the size of the normalised last axis.
    eps: added to the mean square (default 1e-6).
    dtype: output dtype (default float32).
    param_dtype: dtype of `scale` (default float32), initialised to ones.
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, num_features: int, *, eps: float = 1e-6, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.eps = eps
    self.dtype = jnp.dtype(dtype)
    self.scale = _param(rngs, nnx.initializers.ones, (num_features,), (None,),
                        jnp.dtype(param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., D] -> [..., D] in `dtype`."""
    x32 = x.astype(jnp.float32)
    inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (x32 * inv_rms * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class CausalSelfAttention(nnx.Module):
  """Multi-head causal self-attention with RoPE and a key-padding mask.

  Projections have no bias. Query/key/value kernels are [D, H, K] with logical axes
  ('embed', 'heads', 'kv'); the output kernel is [H, K, D] ('heads', 'kv', 'embed'),
  initialised with variance scaled by 1 / (2 * num_layers) so that the residual
  stream keeps unit scale at init (Radford et al. 2019). Logits and softmax are
  float32; masked logits get a large finite negative value, so no row is ever NaN.
  (For right-padded rows the causal mask alone already keeps real queries off padding
  keys; the key mask also covers masks with holes.)

  Args:
    config: the `TransformerConfig`.
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    d, h, k = config.d_model, config.num_heads, config.head_dim
    pdt = config.parameter_dtype
    self.config = config
    in_init = _fan_in_init(in_axis=0, out_axis=(1, 2))
    self.query = _param(rngs, in_init, (d, h, k), ("embed", "heads", "kv"), pdt)
    self.key = _param(rngs, in_init, (d, h, k), ("embed", "heads", "kv"), pdt)
    self.value = _param(rngs, in_init, (d, h, k), ("embed", "heads", "kv"), pdt)
    out_init = _fan_in_init(in_axis=(0, 1), out_axis=2, scale=1.0 / (2 * config.num_layers))
    self.out = _param(rngs, out_init, (h, k, d), ("heads", "kv", "embed"), pdt)

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
    seq_len = x.shape[1]
    positions = jnp.arange(seq_len)
    q = jnp.einsum("bld,dhk->blhk", x, self.query[...].astype(dt))
    k = jnp.einsum("bld,dhk->blhk", x, self.key[...].astype(dt))
    v = jnp.einsum("bld,dhk->blhk", x, self.value[...].astype(dt))
    q = apply_rope(q, positions, cfg.rope_base)
    k = apply_rope(k, positions, cfg.rope_base)
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k, preferred_element_type=jnp.float32)
    logits = logits * (1.0 / math.sqrt(cfg.head_dim))
    causal = positions[:, None] >= positions[None, :]  # [L(query), L(key)]
    allowed = causal[None, None, :, :] & mask[:, None, None, :]  # [B, 1, L, L]
    logits = jnp.where(allowed, logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    context = jnp.einsum("bhqs,bshk->bqhk", probs, v)
    return jnp.einsum("blhk,hkd->bld", context, self.out[...].astype(dt))


class GatedMLP(nnx.Module):
  """SwiGLU feed-forward layer (Shazeer 2020): down(silu(gate(x)) * up(x)).

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
    """x: [B, L, D] -> [B, L, D], in the compute dtype."""
    dt = self.config.compute_dtype
    gate = jax.nn.silu(x @ self.gate[...].astype(dt))
    return (gate * (x @ self.up[...].astype(dt))) @ self.down[...].astype(dt)


class TransformerBlock(nnx.Module):
  """Pre-norm block (Xiong et al. 2020): h = x + attn(norm(x)); out = h + mlp(norm(h)).

  Norms are `RMSNorm` (Zhang & Sennrich 2019), attention is `CausalSelfAttention` with
  RoPE (Su et al. 2021), the MLP is `GatedMLP` (SwiGLU, Shazeer 2020).

  Args:
    config: the `TransformerConfig`.
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    norm_kwargs = dict(eps=config.norm_eps, dtype=config.compute_dtype,
                       param_dtype=config.parameter_dtype, rngs=rngs)
    self.attention_norm = RMSNorm(config.d_model, **norm_kwargs)
    self.attention = CausalSelfAttention(config, rngs=rngs)
    self.mlp_norm = RMSNorm(config.d_model, **norm_kwargs)
    self.mlp = GatedMLP(config, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x: [B, L, D], mask: [B, L] bool -> [B, L, D]."""
    x = x + self.attention(self.attention_norm(x), mask)
    return x + self.mlp(self.mlp_norm(x))


class Transformer(nnx.Module):
  """Decoder-only pre-norm transformer backbone (embedding, blocks, final RMSNorm).

  Inputs are right-padded (real tokens first, then padding) and RoPE positions are
  arange(L), so a sequence's hidden states do not depend on how much padding follows
  it. Padding tokens are replaced by id 0 and their embedding by zeros before the first
  block, so their ids (even out-of-range ones) never matter. Ids of real tokens must lie
  in [0, vocab_size): an out-of-range id cannot raise under jit and yields NaN hidden
  states (never a silently clamped embedding).

  The token embedding [V, D] has logical axes ('vocab', 'embed') and is initialised
  N(0, 1).

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
        [TransformerBlock(config, rngs=rngs) for _ in range(config.num_layers)]
    )
    self.final_norm = RMSNorm(
        config.d_model, eps=config.norm_eps, dtype=config.compute_dtype,
        param_dtype=config.parameter_dtype, rngs=rngs,
    )

  def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Hidden states of every position.

    Args:
      tokens: [B, L] integer token ids, L <= config.max_len.
      mask: [B, L] bool or int, nonzero at real tokens (a prefix of each row).

    Returns:
      hidden: [B, L, d_model] in the compute dtype; rows at padding positions are
      defined (finite) but meaningless.
    """
    mask = check_tokens_and_mask(tokens, mask, self.config.max_len)
    dt = self.config.compute_dtype
    tokens = jnp.where(mask, tokens, 0)
    x = jnp.take(self.embedding[...], tokens, axis=0, mode="fill").astype(dt)
    x = jnp.where(mask[..., None], x, jnp.zeros((), dt))
    for layer in self.layers:
      x = layer(x, mask)
    return self.final_norm(x)
