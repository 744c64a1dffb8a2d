"""Token log-probabilities from logits, plain and vocabulary-chunked.

Every policy and direct-preference loss starts from

  log pi(y_t | y_<t, x) = logits[b, t, y_t] - logsumexp_v logits[b, t, v]

over a vocabulary of V = 32k..256k entries. The plain `token_log_probs` is the
reference. With bfloat16 logits, XLA materialises float32 copies of the whole
[B, T, V] logits for it (its compiled value-and-gradient holds two: 8 bytes
per logit of temporaries on XLA:CPU, measured). `chunked_token_log_probs`
computes the same values and gradients while holding at most one float32
[B, T, chunk_size] block of logits or softmax at a time:

  * forward: a `lax.scan` over vocabulary chunks keeps a running maximum m,
    a running sum s = sum exp(logits - m) (rescaled by exp(m_old - m) when
    the maximum grows, the online softmax of flash attention) and the target
    logit; log pi = target - (m + log s).
  * backward (`jax.custom_vjp`): besides the logits, only the [B, T]
    logsumexp is saved; each chunk of the gradient,
    g * (onehot(target) - exp(logits - logsumexp)), is recomputed from the
    logits and written into the [B, T, V] result in the logits' own dtype
    (bfloat16 logits get a bfloat16 gradient).

`sequence_log_probs` sums (or averages) masked token log-probabilities per
sequence: the [B] inputs of the direct-preference losses.

Masks: a masked position's log-prob is exactly 0 and its logits get exactly
zero gradient; its logits and target are replaced before use, so NaN logits or
an out-of-range target (e.g. the -100 label padding of Hugging Face) there are
harmless.
"""

import functools
from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction

AGGREGATIONS = ("sum", "mean")


def _logit_inputs(logits, targets, mask):
  """Checks the shapes and dtypes; returns (logits, targets, valid)."""
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(
        f"`logits` must be a floating array; got dtype {logits.dtype}.")
  _reduction.check_rank(logits, 3, "logits", "[B, T, V]")
  targets = jnp.asarray(targets)
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise TypeError(
        f"`targets` must be an integer array of token ids; got dtype "
        f"{targets.dtype}.")
  if tuple(targets.shape) != tuple(logits.shape[:2]):
    raise ValueError(
        f"`targets` must have shape [B, T] = {tuple(logits.shape[:2])} (from "
        f"`logits` {tuple(logits.shape)}); got shape {tuple(targets.shape)}.")
  valid = _reduction.validity_mask(mask, targets.shape, "mask")
  vocab_size = logits.shape[2]
  if not isinstance(targets, jax.core.Tracer) and not isinstance(
      valid, jax.core.Tracer):
    # Concrete inputs (also ones closed over by a jitted function) are checked
    # now: under jit an out-of-range target would silently give garbage.
    with jax.ensure_compile_time_eval():
      bad = valid & ((targets < 0) | (targets >= vocab_size))
      num_bad = int(jnp.sum(bad))
    if num_bad:
      raise ValueError(
          f"`targets` must lie in [0, V) = [0, {vocab_size}) at unmasked "
          f"positions; got {num_bad} out-of-range entries.")
  targets = jnp.where(valid, targets, 0)
  return logits, targets, valid


def token_log_probs(
    logits: chex.Array,
    targets: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Log-probabilities of the target tokens (the plain reference).

    logp[b, t] = logits[b, t, targets[b, t]] - logsumexp_v logits[b, t, v]

  computed in float32 whatever the dtype of `logits` (bfloat16 logits are
  upcast). For 16-bit logits XLA materialises the float32 upcast: the
  value-and-gradient holds two float32 [B, T, V] temporaries on XLA:CPU.
  (For float32 logits XLA:CPU fuses it into no temporaries at all.)
  `chunked_token_log_probs` bounds the temporaries by the chunk size.

  Args:
    logits: [B, T, V] floating logits (any float dtype).
    targets: [B, T] integer token ids in [0, V) (checked eagerly outside
      `jit`; masked positions may hold anything, e.g. -100).
    mask: optional [B, T] bool (or {0, 1}) validity mask; masked positions
      give exactly 0 and pass exactly zero gradient to their logits.

  Returns:
    float32 [B, T] token log-probabilities (<= 0).

  Raises:
    ValueError: wrongly shaped inputs or (outside `jit`) out-of-range targets.
    TypeError: non-floating `logits` or non-integer `targets`.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.log_probs import token_log_probs
  >>> logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
  >>> token_log_probs(logits, jnp.array([[0, 2]]))  # log 0.5, log 0.8
  Array([[-0.6931..., -0.2231...]], dtype=float32)
  """
  logits, targets, valid = _logit_inputs(logits, targets, mask)
  return _token_log_probs(logits, targets, valid)


def _token_log_probs(logits, targets, valid):
  x = jnp.where(valid[..., None], logits.astype(jnp.float32), 0)
  target_logit = jnp.take_along_axis(x, targets[..., None], axis=-1)[..., 0]
  logp = target_logit - jax.nn.logsumexp(x, axis=-1)
  return jnp.where(valid, logp, 0)


def chunked_token_log_probs(
    logits: chex.Array,
    targets: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    chunk_size: int = 4096,
) -> jnp.ndarray:
  """`token_log_probs` computed over vocabulary chunks, with a custom VJP.

  Same values and gradients as `token_log_probs` (up to float32 rounding),
  but at most one float32 [B, T, chunk_size] block of logits or softmax is
  live at a time, in the forward and in the backward pass:

    forward:  for each chunk c of the vocabulary (online logsumexp)
                m' = max(m, max_c x);  s = s exp(m - m') + sum_c exp(x - m')
              logp = x[target] - (m + log s)
    backward: d logits[..., c] = g * (onehot(target)[c] - exp(x[c] - lse))

  Besides the logits themselves, only the [B, T] logsumexp is saved for the
  backward pass; the softmax is recomputed chunk by chunk and the gradient is
  written in the dtype of `logits`. A vocabulary that is not a multiple of
  `chunk_size` ends with one smaller chunk (static shapes, no padding copy of
  the logits).

  The temporary memory of value-and-gradient is O(B T chunk_size) (two
  float32 blocks, measured with XLA's compiled memory analysis) instead of the
  plain version's float32 [B, T, V] copies of bfloat16 logits. One caveat on
  XLA:CPU: it computes 16-bit data movement inside loops in float32 and would
  hoist a float32 copy of all the logits out of the scan, so the loops read
  16-bit logits through a uint16 view of their bits, which XLA:CPU
  materialises once (2 bytes per logit, still 4x less than the plain
  version's 8). See `benchmarks/token_log_probs.py` for time and memory; on
  XLA:CPU with float32 logits the plain version is already free of
  temporaries and faster.

  Args:
    logits: [B, T, V] floating logits (any float dtype).
    targets: [B, T] integer token ids in [0, V) (checked eagerly outside
      `jit`; masked positions may hold anything).
    mask: optional [B, T] bool (or {0, 1}) validity mask; masked positions
      give exactly 0 and pass exactly zero gradient to their logits.
    chunk_size: Python int > 0, vocabulary entries per chunk (default 4096;
      clipped to V).

  Returns:
    float32 [B, T] token log-probabilities.

  Raises:
    ValueError: wrongly shaped inputs, a bad `chunk_size`, or (outside `jit`)
      out-of-range targets.
    TypeError: non-floating `logits` or non-integer `targets`.

  References:
    Milakov & Gimelshein (2018), "Online normalizer calculation for softmax",
    arXiv:1805.02867.
    Dao et al. (2022), "FlashAttention: Fast and Memory-Efficient Exact
    Attention with IO-Awareness", arXiv:2205.14135.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.log_probs import chunked_token_log_probs
  >>> logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
  >>> chunked_token_log_probs(logits, jnp.array([[0, 2]]), chunk_size=2)
  Array([[-0.6931..., -0.2231...]], dtype=float32)
  """
  chunk_size = _reduction.check_positive_int(chunk_size, "chunk_size")
  logits, targets, valid = _logit_inputs(logits, targets, mask)
  chunk_size = min(chunk_size, logits.shape[2])
  return _chunked(logits, targets, valid, chunk_size)


def _chunk_bounds(vocab_size: int, chunk_size: int):
  """(number of full chunks, start and size of the remainder chunk)."""
  num_full = vocab_size // chunk_size
  rest_start = num_full * chunk_size
  return num_full, rest_start, vocab_size - rest_start


def _to_bits(x: jnp.ndarray) -> jnp.ndarray:
  """16-bit floats as their raw uint16 bit patterns; other dtypes unchanged.

  XLA's CPU backend computes bfloat16/float16 data movement in float32 and then
  hoists the upcast of a loop-invariant array out of the loop: slicing the
  logits inside the scan would first make a float32 copy of *all* of them,
  exactly what the chunking is meant to avoid. Integers are left alone, so the
  loops slice (and the backward writes) the raw 2-byte patterns instead.
  """
  if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize == 2:
    return jax.lax.bitcast_convert_type(x, jnp.uint16)
  return x


def _from_bits(x: jnp.ndarray, dtype) -> jnp.ndarray:
  """Inverse of `_to_bits`."""
  if x.dtype != dtype:
    return jax.lax.bitcast_convert_type(x, dtype)
  return x


def _load_chunk(logits, valid, start, size, dtype):
  """float32 [B, T, size] block of the (sanitised) logits from `start`.

  `logits` is `_to_bits` of the original logits, whose dtype is `dtype`.
  """
  block = jax.lax.dynamic_slice_in_dim(logits, start, size, axis=2)
  block = _from_bits(block, dtype)
  return jnp.where(valid[..., None], block.astype(jnp.float32), 0)


def _chunked_forward(logits, targets, valid, chunk_size):
  """(logp, lse): float32 [B, T] each, streaming over vocabulary chunks."""
  batch_shape = targets.shape
  num_full, rest_start, rest_size = _chunk_bounds(logits.shape[2], chunk_size)
  dtype, logits = logits.dtype, _to_bits(logits)

  def update(carry, start, size):
    running_max, running_sum, target_logit = carry
    x = _load_chunk(logits, valid, start, size, dtype)
    new_max = jnp.maximum(running_max, jnp.max(x, axis=-1))
    # A chunk (or everything so far) of -inf logits leaves the maximum at -inf;
    # shift by 0 there so that exp(-inf - -inf) = NaN never happens.
    shift = jnp.where(jnp.isfinite(new_max), new_max, 0)
    running_sum = (running_sum * jnp.exp(running_max - shift)
                   + jnp.sum(jnp.exp(x - shift[..., None]), axis=-1))
    column = start + jnp.arange(size)
    is_target = column == targets[..., None]
    target_logit += jnp.sum(jnp.where(is_target, x, 0), axis=-1)
    return new_max, running_sum, target_logit

  init = (jnp.full(batch_shape, -jnp.inf, jnp.float32),
          jnp.zeros(batch_shape, jnp.float32),
          jnp.zeros(batch_shape, jnp.float32))

  def body(carry, chunk_index):
    return update(carry, chunk_index * chunk_size, chunk_size), None

  carry, _ = jax.lax.scan(body, init, jnp.arange(num_full))
  if rest_size:
    carry = update(carry, rest_start, rest_size)
  running_max, running_sum, target_logit = carry
  lse = jnp.where(jnp.isfinite(running_max), running_max, 0) + jnp.log(
      running_sum)
  logp = jnp.where(valid, target_logit - lse, 0)
  return logp, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunked(logits, targets, valid, chunk_size):
  return _chunked_forward(logits, targets, valid, chunk_size)[0]


def _chunked_fwd(logits, targets, valid, chunk_size):
  logp, lse = _chunked_forward(logits, targets, valid, chunk_size)
  return logp, (logits, targets, valid, lse)


def _chunked_bwd(chunk_size, residuals, g):
  logits, targets, valid, lse = residuals
  g = jnp.where(valid, g.astype(jnp.float32), 0)
  num_full, rest_start, rest_size = _chunk_bounds(logits.shape[2], chunk_size)
  dtype, logits = logits.dtype, _to_bits(logits)

  def chunk_grad(start, size):
    x = _load_chunk(logits, valid, start, size, dtype)
    softmax = jnp.exp(x - lse[..., None])
    is_target = (start + jnp.arange(size)) == targets[..., None]
    d_x = g[..., None] * (is_target.astype(jnp.float32) - softmax)
    return _to_bits(d_x.astype(dtype))

  def body(d_logits, chunk_index):
    start = chunk_index * chunk_size
    d_logits = jax.lax.dynamic_update_slice_in_dim(
        d_logits, chunk_grad(start, chunk_size), start, axis=2)
    return d_logits, None

  # The gradient is written chunk by chunk into one buffer (updated in place).
  d_logits, _ = jax.lax.scan(body, jnp.zeros_like(logits),
                             jnp.arange(num_full))
  if rest_size:
    d_logits = jax.lax.dynamic_update_slice_in_dim(
        d_logits, chunk_grad(rest_start, rest_size), rest_start, axis=2)
  return _from_bits(d_logits, dtype), None, None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def sequence_log_probs(
    token_logps: chex.Array,
    mask: Optional[chex.Array] = None,
    *,
    aggregation: str = "sum",
) -> jnp.ndarray:
  """Per-sequence log-probability from masked token log-probabilities.

    "sum":  logp_b = sum_t M_bt logp_bt                  (log pi(y | x))
    "mean": logp_b = sum_t M_bt logp_bt / max(sum_t M_bt, 1)

  "sum" is what DPO, IPO, KTO, SELM, DNO and LiPO take; "mean" (the
  length-normalised log-likelihood) is what SimPO, ORPO and PRO take. A
  sequence with no valid token gives 0. Masked entries are replaced before
  summing, so NaN or inf junk there changes neither value nor gradient.

  Args:
    token_logps: [B, T] token log-probabilities (e.g. from
      `token_log_probs`).
    mask: optional [B, T] bool (or {0, 1}) response mask (prompt and padding
      tokens False). Default None: every token counts.
    aggregation: "sum" (default) or "mean".

  Returns:
    float32 [B] sequence log-probabilities.

  Raises:
    ValueError: bad `aggregation` or wrongly shaped inputs.
    TypeError: non-real `token_logps`.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.log_probs import sequence_log_probs
  >>> logp = jnp.array([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
  >>> m = jnp.array([[1, 1, 0], [1, 1, 1]])
  >>> sequence_log_probs(logp, m)
  Array([-3. , -1.5], dtype=float32)
  >>> sequence_log_probs(logp, m, aggregation="mean")
  Array([-1.5, -0.5], dtype=float32)
  """
  if not isinstance(aggregation, str) or aggregation not in AGGREGATIONS:
    raise ValueError(
        f"`aggregation` must be one of {AGGREGATIONS}; got {aggregation!r}.")
  (values,), valid, dtype = _reduction.sanitized_inputs(
      [("token_logps", token_logps)], mask, "[B, T]")
  total = jnp.sum(values, axis=1)
  if aggregation == "sum":
    return total
  count = jnp.sum(valid, axis=1, dtype=dtype)
  return total / jnp.maximum(count, 1)
