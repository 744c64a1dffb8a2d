"""The train state: a plain pytree, checkpointed whole by orbax."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
  """Everything a run needs to continue exactly where it stopped.

  Attributes:
    step: int32 scalar, number of optimiser updates applied.
    params: the model parameters (a pytree of arrays; the graphdef stays static).
    opt_state: the optax state.
    rng: uint32 [2] raw PRNG key data (raw data, not a typed key, so that every checkpoint
      format stores it as an ordinary array).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array

  @classmethod
  def create(cls, params: Any, optimizer: optax.GradientTransformation,
             rng: jax.Array) -> "TrainState":
    """The state at step 0: `params`, `optimizer.init(params)` and the run's `rng`.

    The one constructor of a fresh state (the trainer's sharded init, tests, benchmarks).
    """
    return cls(jnp.zeros((), jnp.int32), params, optimizer.init(params), rng)

  def apply_gradients(self, grads: Any, optimizer: optax.GradientTransformation
                      ) -> "TrainState":
    """The state after one optimiser update with `grads` (step + 1, same rng)."""
    updates, opt_state = optimizer.update(grads, self.opt_state, self.params)
    return TrainState(self.step + 1, optax.apply_updates(self.params, updates), opt_state,
                      self.rng)
