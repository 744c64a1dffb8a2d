"""Reward heads: small modules from pooled backbone features to rewards.

Every head follows one pattern, so that one backbone serves every loss:

* constructor `Head(d_model, ..., *, param_dtype=jnp.float32, rngs)`, parameters
  annotated with logical axes ('embed' for the input feature axis, None otherwise);
* `__call__(features: [B, D]) -> outputs` computed in float32 whatever the backbone's
  compute dtype, with the output shape documented by the head;
* inputs are checked with `check_features`.

Pooling (which position's hidden state a sequence is scored by) is separate:
`gather_last_token` reads the last real token of right-padded sequences.
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp


def gather_last_token(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Hidden state of the last real token of each right-padded sequence.

  Reads index sum(mask) - 1 of each row. A row without any real token would read index
  0 (it cannot raise under jit); the data layer guarantees at least one real token.

  Args:
    hidden: [B, L, D] hidden states.
    mask: [B, L] bool or int, nonzero at real tokens (a prefix of each row).

  Returns:
    [B, D] in hidden's dtype.

  >>> h = jnp.arange(6.0).reshape(1, 3, 2)
  >>> gather_last_token(h, jnp.array([[1, 1, 0]])).tolist()
  [[2.0, 3.0]]
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
  last = jnp.maximum(jnp.sum(mask.astype(jnp.int32), axis=1) - 1, 0)  # [B]
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


class ScalarHead(nnx.Module):
  """Linear reward head: rewards = features @ kernel + bias.

  The kernel [D, num_outputs] (logical axes ('embed', None)) is initialised
  N(0, 1 / (D + 1)) so that initial rewards have unit scale on unit-RMS features
  (Stiennon et al. 2020); the bias [num_outputs] starts at zero.

  Args:
    d_model: D, the width of the pooled features.
    num_outputs: rewards per sequence (default 1; more for multi-attribute scores).
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  >>> head = ScalarHead(4, rngs=nnx.Rngs(0))
  >>> head(jnp.ones((3, 4))).shape
  (3, 1)
  """

  def __init__(self, d_model: int, num_outputs: int = 1, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    for name, value in (("d_model", d_model), ("num_outputs", num_outputs)):
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"ScalarHead: {name} must be a positive int, got {value!r}.")
    self.d_model = d_model
    self.num_outputs = num_outputs
    param_dtype = jnp.dtype(param_dtype)
    kernel_init = nnx.with_partitioning(
        nnx.initializers.normal(stddev=1.0 / math.sqrt(d_model + 1)), ("embed", None),
        eager_sharding=False,
    )
    bias_init = nnx.with_partitioning(nnx.initializers.zeros, (None,),
                                      eager_sharding=False)
    self.kernel = nnx.Param(kernel_init(rngs.params(), (d_model, num_outputs), param_dtype))
    self.bias = nnx.Param(bias_init(rngs.params(), (num_outputs,), param_dtype))

  def __call__(self, features: jax.Array) -> jax.Array:
    """features: [B, D] -> [B, num_outputs] float32."""
    check_features(features, self.d_model)
    kernel = self.kernel[...].astype(jnp.float32)
    return features.astype(jnp.float32) @ kernel + self.bias[...].astype(jnp.float32)
