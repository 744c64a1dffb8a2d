"""The train state: a plain pytree, checkpointed whole by orbax."""

from typing import Any, NamedTuple

import jax


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
