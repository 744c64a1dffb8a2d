"""The package-wide reduction convention and the input checks that go with it.

Every loss in `rmjax.losses` computes a per-example value and hands it to
`reduce_loss` together with the caller's optional `weights` and validity `mask`,
so that "mean over valid pairs" means the same thing everywhere.

The private helpers below (`as_real_array`, `check_rank`, `validity_mask`,
`sanitized_inputs`, ...) are the one home for argument checking in
`rmjax.losses`, `rmjax.eval` and `rmjax.transforms`: each error names the
offending argument, what was expected and what came.
"""

import numbers
from typing import Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp

REDUCTIONS = ("mean", "sum", "none")


def as_real_array(x, name: str) -> jnp.ndarray:
  """Returns `x` as a jax array after checking it holds real numbers.

  Floating and integer dtypes are accepted; bool, complex and object arrays are
  not (a bool array of rewards is almost certainly a mask passed in the wrong
  position).

  Args:
    x: array-like.
    name: the argument's name, used in the error message.

  Returns:
    `jnp.asarray(x)`.

  Raises:
    TypeError: if the dtype is not floating or integer.
  """
  x = jnp.asarray(x)
  if not (jnp.issubdtype(x.dtype, jnp.floating)
          or jnp.issubdtype(x.dtype, jnp.integer)):
    raise TypeError(
        f"`{name}` must be a real-valued (floating or integer) array; got "
        f"dtype {x.dtype}.")
  return x


def compute_dtype(*arrays) -> jnp.dtype:
  """The dtype losses compute in: at least float32 (bfloat16 is upcast)."""
  dtype = jnp.float32
  for x in arrays:
    dtype = jnp.promote_types(dtype, x.dtype)
  return dtype


def check_rank(x: jnp.ndarray, rank: int, name: str, expected: str) -> None:
  """Checks `x.ndim == rank` at trace time; the error names `name`."""
  chex.assert_rank(
      x, rank,
      custom_message=f"`{name}` must have shape {expected}; got shape "
      f"{tuple(x.shape)}",
      exception_type=ValueError)


def check_same_shape(x: jnp.ndarray, x_name: str, reference: jnp.ndarray,
                     reference_name: str) -> None:
  """Checks `x.shape == reference.shape`; the error names both arguments."""
  chex.assert_equal_shape(
      [reference, x],
      custom_message=f"`{x_name}` must have the same shape as "
      f"`{reference_name}` {tuple(reference.shape)}; got shape "
      f"{tuple(x.shape)}",
      exception_type=ValueError)


def check_scalar_or_same_shape(x: jnp.ndarray, x_name: str,
                               reference: jnp.ndarray,
                               reference_name: str) -> None:
  """Checks that `x` is a scalar or has exactly `reference`'s shape."""
  if x.ndim == 0:
    return
  chex.assert_equal_shape(
      [reference, x],
      custom_message=f"`{x_name}` must be a scalar or have the same shape as "
      f"`{reference_name}` {tuple(reference.shape)}; got shape "
      f"{tuple(x.shape)}",
      exception_type=ValueError)


def validity_mask(mask, shape, name: str = "mask",
                  allow_scalar: bool = False) -> jnp.ndarray:
  """Converts an optional mask to a bool array of `shape` (True = valid).

  Args:
    mask: None (everything valid), or a bool or numeric array; nonzero entries
      are valid. Must have shape `shape` (or be a scalar if `allow_scalar`).
    shape: the shape of the per-example values.
    name: the argument's name, used in error messages.
    allow_scalar: whether a scalar mask (broadcast to `shape`) is accepted.

  Returns:
    bool array of shape `shape`.
  """
  if mask is None:
    return jnp.ones(shape, dtype=bool)
  mask = jnp.asarray(mask)
  if not (mask.dtype == jnp.bool_
          or jnp.issubdtype(mask.dtype, jnp.integer)
          or jnp.issubdtype(mask.dtype, jnp.floating)):
    raise TypeError(
        f"`{name}` must be a bool or {{0, 1}} numeric array; got dtype "
        f"{mask.dtype}.")
  scalar_ok = allow_scalar and mask.ndim == 0
  if not scalar_ok and tuple(mask.shape) != tuple(shape):
    expected = "a scalar or shape" if allow_scalar else "shape"
    raise ValueError(
        f"`{name}` must have {expected} {tuple(shape)}; got shape "
        f"{tuple(mask.shape)}.")
  if mask.dtype != jnp.bool_:
    mask = mask != 0
  return jnp.broadcast_to(mask, shape)


def sanitized_inputs(named_arrays: Sequence[Tuple[str, chex.Array]], mask,
                     expected: Optional[str] = None, mask_name: str = "mask"):
  """Checks, upcasts and sanitises real arrays of one shape.

  Args:
    named_arrays: (name, array) pairs; the first one fixes the shape, which
      every other one must have.
    mask: None or a validity mask of that shape.
    expected: the expected shape of the first array for error messages
      ("[B]", "[B, K]", ...), whose rank is checked; None accepts any shape.
    mask_name: the mask's argument name, used in error messages.

  Returns:
    (arrays, valid, dtype): the arrays in `dtype` (at least float32) with
    invalid entries replaced by 0, and the bool validity mask.
  """
  arrays = [as_real_array(x, name) for name, x in named_arrays]
  first_name = named_arrays[0][0]
  if expected is not None:
    check_rank(arrays[0], expected.count(",") + 1, first_name, expected)
  for (name, _), x in zip(named_arrays[1:], arrays[1:]):
    check_same_shape(x, name, arrays[0], first_name)
  valid = validity_mask(mask, arrays[0].shape, mask_name)
  dtype = compute_dtype(*arrays)
  # Sanitise first (the "double where"): an invalid entry's junk must not
  # reach any op whose derivative could be inf or NaN, or the masked gradient
  # would be 0 * inf = NaN.
  arrays = [jnp.where(valid, x.astype(dtype), 0) for x in arrays]
  return arrays, valid, dtype


def sanitized_rows(x: jnp.ndarray, valid: jnp.ndarray, dtype) -> jnp.ndarray:
  """Upcasts `x` [B, ...] to `dtype` and replaces the rows where the [B] mask
  `valid` is False by 0 (the rows of `sanitized_inputs`, for arrays with
  trailing dimensions)."""
  valid = valid.reshape(valid.shape + (1,) * (x.ndim - 1))
  return jnp.where(valid, x.astype(dtype), 0)


def pair_inputs(chosen_rewards, rejected_rewards, mask):
  """Checks, upcasts and sanitises a pair of reward vectors.

  Args:
    chosen_rewards: [B] real array.
    rejected_rewards: [B] real array of the same shape.
    mask: None or [B] validity mask.

  Returns:
    (chosen, rejected, valid, dtype): the rewards in `dtype` (at least
    float32) with invalid entries replaced by 0, and the bool [B] mask.
  """
  (chosen, rejected), valid, dtype = sanitized_inputs(
      [("chosen_rewards", chosen_rewards),
       ("rejected_rewards", rejected_rewards)], mask, "[B]")
  return chosen, rejected, valid, dtype


def same_shape_input(x, name: str, reference: jnp.ndarray, reference_name: str,
                     valid: jnp.ndarray, dtype) -> jnp.ndarray:
  """Checks a real array of `reference`'s shape and sanitises it like it.

  For a further input of a loss whose main input was checked and sanitised
  already (e.g. by `sanitized_inputs`): the error names `x` and
  `reference_name`.

  Returns:
    `x` in `dtype`, with entries that are not `valid` replaced by 0.
  """
  x = as_real_array(x, name)
  check_same_shape(x, name, reference, reference_name)
  return jnp.where(valid, x.astype(dtype), 0)


def check_reduction(reduction: str) -> None:
  """Raises ValueError unless `reduction` is one of `REDUCTIONS`."""
  if not isinstance(reduction, str) or reduction not in REDUCTIONS:
    raise ValueError(
        f"`reduction` must be one of {REDUCTIONS}; got {reduction!r}.")


def check_probability(x, name: str, upper: float = 0.5) -> float:
  """A Python float in [0, upper), checked eagerly (e.g. a label smoothing)."""
  if (isinstance(x, bool) or not isinstance(x, numbers.Real)
      or isinstance(x, jax.Array)):
    raise ValueError(
        f"`{name}` must be a Python float in [0, {upper}); got "
        f"{type(x).__name__} {x!r}.")
  x = float(x)
  if not 0.0 <= x < upper:
    raise ValueError(f"`{name}` must be in [0, {upper}); got {x!r}.")
  return x


def check_positive_int(x, name: str) -> int:
  """A Python int > 0 (not a bool), checked eagerly (e.g. a static size)."""
  if isinstance(x, bool) or not isinstance(x, int) or x <= 0:
    raise ValueError(
        f"`{name}` must be a Python int > 0; got {type(x).__name__} {x!r}.")
  return x


def reduce_loss(
    per_example: chex.Array,
    *,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """Reduces per-example losses with optional weights and a validity mask.

  With `l` the per-example values, `w` the weights (default 1) and `v` the
  validity mask (default all True):

    "none": out_i = v_i * w_i * l_i          (same shape as `per_example`)
    "sum":  sum_i v_i * w_i * l_i
    "mean": sum_i v_i * w_i * l_i / max(sum_i v_i, 1)

  "mean" is the mean over *valid* examples only: weights scale an example's
  contribution but do not renormalise (divide by the number of valid examples,
  not by the sum of weights). A batch with no valid examples reduces to 0, not
  NaN.

  The mask is applied with `jnp.where`, not by multiplication: an invalid entry
  contributes exactly 0 to the value and exactly 0 to the gradient with respect
  to both `per_example` and `weights`, even when its loss or weight is inf or
  NaN. (Gradients flowing *into* the computation of `per_example` are the
  caller's business: sanitise the masked inputs before computing a loss that
  could be non-finite there, as the losses in this package do.)

  Computation is in at least float32 (bfloat16/float16 are upcast).

  Args:
    per_example: [B] (or any shape) per-example losses.
    weights: optional per-example weights, same shape as `per_example` or a
      scalar. Weights are meant to be >= 0; this cannot be checked under `jit`
      and is not. A zero weight does not remove an example from the "mean"
      denominator; use `mask` for that.
    mask: optional bool (or {0, 1}) array, same shape as `per_example` or a
      scalar; True/nonzero marks a valid example.
    reduction: one of "mean" (default), "sum", "none".

  Returns:
    A float32 scalar for "mean" and "sum"; an array shaped like `per_example`
    for "none" (invalid entries exactly 0).

  Raises:
    ValueError: unknown `reduction`, or `weights`/`mask` of the wrong shape.
    TypeError: non-numeric inputs.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses import reduce_loss
  >>> l = jnp.array([1.0, 2.0, jnp.inf])
  >>> float(reduce_loss(l, mask=jnp.array([True, True, False])))
  1.5
  >>> float(reduce_loss(l, weights=jnp.array([2.0, 1.0, 1.0]),
  ...                   mask=jnp.array([1, 1, 0]), reduction="sum"))
  4.0
  """
  check_reduction(reduction)
  per_example = as_real_array(per_example, "per_example")
  shape = per_example.shape
  valid = validity_mask(mask, shape, "mask", allow_scalar=True)
  dtype = compute_dtype(per_example)
  values = jnp.where(valid, per_example.astype(dtype), 0)
  if weights is not None:
    weights = as_real_array(weights, "weights")
    check_scalar_or_same_shape(weights, "weights", per_example, "per_example")
    weights = jnp.where(valid, weights.astype(dtype), 0)
    values = values * weights
  if reduction == "none":
    return values
  total = jnp.sum(values)
  if reduction == "sum":
    return total
  num_valid = jnp.sum(valid, dtype=dtype)
  return total / jnp.maximum(num_valid, 1)


# Helpers for the embedding-based, pluralistic and multi-task losses
# (general_preference, pluralistic, contrastive, multi_objective).


def scalar_hyperparameter(x, name: str, *, allow_zero: bool = False):
  """Checks a scalar hyperparameter such as a temperature or a KL weight.

  A Python int or float is checked eagerly: it must be finite and > 0 (>= 0
  with `allow_zero`). Anything else (e.g. a learnable temperature, or a value
  traced under `jit`) must be a real scalar array; its sign cannot be checked
  under `jit` and is not.

  Args:
    x: Python number or real scalar array.
    name: the argument's name, used in error messages.
    allow_zero: whether 0 is accepted.

  Returns:
    A Python float, or a 0-d jax array.

  Raises:
    ValueError: a Python number out of range, or a non-scalar array.
    TypeError: a bool, or a non-real value.
  """
  bound = ">= 0" if allow_zero else "> 0"
  if isinstance(x, bool) or isinstance(x, str):
    raise TypeError(
        f"`{name}` must be a real number {bound}; got "
        f"{type(x).__name__} {x!r}.")
  if isinstance(x, (int, float)):
    value = float(x)
    finite = value == value and abs(value) != float("inf")
    if not finite or value < 0 or (value == 0 and not allow_zero):
      raise ValueError(
          f"`{name}` must be a finite number {bound}; got {x!r}.")
    return value
  x = as_real_array(x, name)
  check_rank(x, 0, name, "[] (a scalar)")
  return x


def safe_l2_norm(x: jnp.ndarray, axis: int = -1,
                 keepdims: bool = False) -> jnp.ndarray:
  """Euclidean norm along `axis` whose gradient at the zero vector is 0.

  `sqrt` has an infinite derivative at 0, so the plain norm of a zero vector
  (e.g. a sanitised, masked row) has a NaN gradient. Here the sum of squares
  is replaced by 1 where it is 0 before the `sqrt` (the "double where"), so
  the value is exact everywhere and the gradient at 0 is exactly 0.
  """
  sum_sq = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
  nonzero = sum_sq > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sum_sq, 1)), 0)


def safe_l2_normalize(x: jnp.ndarray, axis: int = -1,
                      eps: float = 1e-8) -> jnp.ndarray:
  """`x / max(||x||, eps)` along `axis`: unit vectors, and 0 for x = 0.

  Finite value and gradient everywhere, including at the zero vector (where
  the normalised vector is 0, as in `torch.nn.functional.normalize`).
  """
  norm = safe_l2_norm(x, axis=axis, keepdims=True)
  return x / jnp.maximum(norm, eps)


def batch_vector(x, name: str, batch_size: int, source_name: str,
                 allow_scalar: bool = False) -> jnp.ndarray:
  """Checks that `x` is a real [B] vector (or a scalar, if allowed).

  For per-example arguments (weights, margins) of losses whose main inputs are
  not themselves [B] vectors, e.g. embeddings [B, D]: the error names `x` and
  the argument `source_name` that B was taken from.

  Returns:
    `x` as a jax array.
  """
  x = as_real_array(x, name)
  if allow_scalar and x.ndim == 0:
    return x
  if tuple(x.shape) != (batch_size,):
    expected = "a scalar or shape" if allow_scalar else "shape"
    raise ValueError(
        f"`{name}` must have {expected} [B] = ({batch_size},) (B from "
        f"`{source_name}`); got shape {tuple(x.shape)}.")
  return x
