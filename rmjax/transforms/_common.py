"""Argument checks shared by the reward transforms (private).

Built on `rmjax.losses._reduction`, the package's one home for argument checking; only what is
specific to transforms (per-prompt broadcasting, choices, bounded Python floats) lives here.
"""

import numbers
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from rmjax.losses import _reduction


def check_choice(value, name: str, choices: Sequence[str]) -> str:
  """Checks a string option in Python; the error lists the choices."""
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"`{name}` must be one of {tuple(choices)}; got {value!r}.")
  return value


def python_float(value, name: str, *, low: Optional[float] = None,
                 high: Optional[float] = None, low_open: bool = False,
                 high_open: bool = False) -> float:
  """Checks a Python real number eagerly against [low, high] (open ends on request)."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or isinstance(value, jax.Array)):
    raise ValueError(
        f"`{name}` must be a Python float; got {type(value).__name__} {value!r}.")
  value = float(value)
  bad = value != value or abs(value) == float("inf")
  if low is not None:
    bad = bad or value < low or (low_open and value == low)
  if high is not None:
    bad = bad or value > high or (high_open and value == high)
  if bad:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    raise ValueError(f"`{name}` must be a finite number in {left}{lo}, {hi}{right}; got {value!r}.")
  return value


def python_int(value, name: str, *, low: int = 0) -> int:
  """Checks a Python int >= low eagerly."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"`{name}` must be a Python int >= {low}; got {type(value).__name__} "
                     f"{value!r}.")
  if value < low:
    raise ValueError(f"`{name}` must be a Python int >= {low}; got {value!r}.")
  return int(value)


def python_bool(value, name: str) -> bool:
  """Checks a Python bool eagerly."""
  if not isinstance(value, bool):
    raise ValueError(f"`{name}` must be a Python bool; got {type(value).__name__} {value!r}.")
  return value


def real_input(x, name: str, mask=None, mask_name: str = "mask"):
  """Checks a real array and its optional mask of the same shape.

  Returns:
    (x, valid, dtype): `x` upcast to `dtype` (at least float32) with invalid entries replaced by 0
    (sanitised before any computation), and the bool validity mask.
  """
  (x,), valid, dtype = _reduction.sanitized_inputs([(name, x)], mask, mask_name=mask_name)
  return x, valid, dtype


def per_prompt(value, name: str, reference: jnp.ndarray, reference_name: str) -> jnp.ndarray:
  """Broadcasts a scalar, a leading-axes prefix ([B] for [B, K]) or a same-shaped array.

  An array whose shape is a prefix of `reference.shape` gets trailing unit axes, so a per-prompt
  [B] value applies to every column of a [B, K] or [B, G] reward array.
  """
  value = _reduction.as_real_array(value, name)
  shape = tuple(reference.shape)
  if value.ndim == 0 or tuple(value.shape) == shape:
    return jnp.broadcast_to(value, shape)
  if value.ndim < len(shape) and tuple(value.shape) == shape[:value.ndim]:
    value = value.reshape(value.shape + (1,) * (len(shape) - value.ndim))
    return jnp.broadcast_to(value, shape)
  raise ValueError(
      f"`{name}` must be a scalar, have the shape of `{reference_name}` {shape}, or a leading "
      f"prefix of it (e.g. one value per prompt, shape {shape[:1]}); got shape "
      f"{tuple(value.shape)}.")


def trailing(value, name: str, reference: jnp.ndarray, reference_name: str) -> jnp.ndarray:
  """Broadcasts a scalar or an array of `reference`'s trailing shape ([K] for [B, K])."""
  value = _reduction.as_real_array(value, name)
  shape = tuple(reference.shape)
  if value.ndim == 0 or tuple(value.shape) == shape:
    return jnp.broadcast_to(value, shape)
  if value.ndim <= len(shape) and tuple(value.shape) == shape[len(shape) - value.ndim:]:
    return jnp.broadcast_to(value, shape)
  raise ValueError(
      f"`{name}` must be a scalar or broadcast against `{reference_name}` {shape} from the right "
      f"(e.g. one value per column, shape {shape[-1:]}); got shape {tuple(value.shape)}.")


def last_axis_rewards(rewards, name: str = "rewards", mask=None):
  """Checks rewards [B, K] (K >= 1 rewards per sample, last axis) and a per-sample mask [B].

  Returns:
    (rewards, valid [B], dtype) with invalid rows replaced by 0.
  """
  rewards = _reduction.as_real_array(rewards, name)
  if rewards.ndim < 1 or rewards.shape[-1] == 0:
    raise ValueError(f"`{name}` must have shape [B, K] (K >= 1 rewards per sample on the last "
                     f"axis); got shape {tuple(rewards.shape)}.")
  valid = _reduction.validity_mask(mask, rewards.shape[:-1], "mask")
  dtype = _reduction.compute_dtype(rewards)
  rewards = jnp.where(valid[..., None], rewards.astype(dtype), 0)
  return rewards, valid, dtype
