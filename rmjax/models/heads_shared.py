"""Pooling, input checks and the layers that the reward heads share.

Every head (`rmjax.models.heads_response`, `rmjax.models.heads_pluralistic`) follows one
pattern, so that one backbone serves every loss:

* constructor `Head(d_model, ..., *, param_dtype=jnp.float32, rngs)`, parameters
  annotated with logical axes ('embed' for an axis that reads the backbone's features,
  None otherwise), so `rmjax.models.logical_partition_specs` shards every head with the
  default rules;
* `__call__(features: [B, D], ...) -> outputs` computed in float32 whatever the
  backbone's compute dtype; heads with one output return an array, heads with several a
  dict of arrays with documented keys;
* inputs are checked at trace time (`check_features`), and errors name the argument.
* a class attribute `call_inputs` names the `__call__` arguments beyond `features`
  that the head reads, which `rmjax.models.RewardModel` passes by keyword: any of
  'prompt_features' (the prompt's hidden state, from the batch's 'prompt_mask'; None
  without it), 'user_ids' ([B] annotators or None) and 'latent' ([B, Z], required).

Pooling (which position's hidden state a sequence is scored by) is separate from the
heads: `gather_last_token` reads the last real token of right- or left-padded sequences.
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp

from rmjax.models.transformer import _param


def gather_last_token(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Hidden state of the last real token of each sequence (right or left padding).

  Reads index max{t : mask[b, t] != 0} of each row, so it is correct for right and left
  padding, and when the pad id equals the eos id (it reads the mask, never the ids;
  Hugging Face's `*ForSequenceClassification` picks the same token from the ids). A row
  without any real token reads index 0 (it cannot raise under jit); the data layer
  guarantees at least one real token.

  Args:
    hidden: [B, L, D] hidden states.
    mask: [B, L] bool or int, nonzero at real tokens.

  Returns:
    [B, D] in hidden's dtype.

  >>> h = jnp.arange(6.0).reshape(1, 3, 2)
  >>> gather_last_token(h, jnp.array([[1, 1, 0]])).tolist()
  [[2.0, 3.0]]
  >>> gather_last_token(h, jnp.array([[0, 1, 1]])).tolist()
  [[4.0, 5.0]]
  """
  if getattr(hidden, "ndim", None) != 3:
    raise ValueError(
        f"hidden must have shape [B, L, D], got {getattr(hidden, 'shape', None)}."
    )
  if getattr(mask, "shape", None) != hidden.shape[:2]:
    raise ValueError(
        f"mask must have shape [B, L] = {tuple(hidden.shape[:2])} (the leading axes of "
        f"hidden), got {getattr(mask, 'shape', None)}."
    )
  index = jnp.arange(hidden.shape[1], dtype=jnp.int32)
  last = jnp.max(jnp.where(mask.astype(jnp.bool_), index, 0), axis=1)  # [B]
  return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0, :]


def check_features(features: jax.Array, d_model: int) -> None:
  """Checks a head's input at trace time.

  Args:
    features: expected [B, D] with D == d_model.
    d_model: the head's input width.

  Raises:
    ValueError naming `features`, the expected and the actual shape.
  """
  if getattr(features, "ndim", None) != 2 or features.shape[-1] != d_model:
    raise ValueError(
        f"features must have shape [B, {d_model}], got "
        f"{getattr(features, 'shape', None)}."
    )


def _check_positive_int(owner: str, name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}.")



def _head_init(fan_in: int):
  """N(0, 1 / (fan_in + 1)): unit-scale outputs on unit-RMS inputs (as `ScalarHead`)."""
  return nnx.initializers.normal(stddev=1.0 / math.sqrt(fan_in + 1))



# He et al. (2015) init for layers followed by a ReLU.
_RELU_INIT = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class _Linear(nnx.Module):
  """y = x @ kernel (+ bias) in float32; kernel [I, O] with logical axes (input_axis, None)."""

  def __init__(self, in_features: int, out_features: int, *, input_axis: str | None,
               kernel_init, use_bias: bool = True, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    param_dtype = jnp.dtype(param_dtype)
    self.kernel = _param(rngs, kernel_init, (in_features, out_features), (input_axis, None),
                         param_dtype)
    self.bias = (_param(rngs, nnx.initializers.zeros, (out_features,), (None,), param_dtype)
                 if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x.astype(jnp.float32) @ self.kernel[...].astype(jnp.float32)
    if self.bias is not None:
      y = y + self.bias[...].astype(jnp.float32)
    return y


def _check_prompt_features(prompt_features, features: jax.Array) -> jax.Array:
  """`prompt_features` [B, D] if given (checked against `features`), else `features`."""
  if prompt_features is None:
    return features
  if getattr(prompt_features, "shape", None) != features.shape:
    raise ValueError(
        f"prompt_features must have the shape of features {tuple(features.shape)}, got "
        f"{getattr(prompt_features, 'shape', None)}."
    )
  return prompt_features
