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
    task_state: the task's own state (`Task.init_task_state`: e.g. an RL task's KL
      controller, Lagrange multipliers, running normalisers, cached reference rewards), a
      pytree of arrays with fixed shapes, replicated, checkpointed with the rest; None
      (default) for tasks without one. A state with task_state None is checkpointed with
      the four fields above only, exactly as before task states existed
      (`rmjax.train.checkpoint`), so old checkpoints restore and new ones read the same.

  `step` counts train steps: one optimiser update for a task with the default step; a task
  with its own step (`Task.make_train_step`) may make several updates per step, and the
  optimiser state counts those (its learning-rate schedule runs over updates).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  task_state: Any = None

  @classmethod
  def create(cls, params: Any, optimizer: optax.GradientTransformation,
             rng: jax.Array, task_state: Any = None) -> "TrainState":
    """The state at step 0: `params`, `optimizer.init(params)`, the run's `rng` and the
    task's initial `task_state` (default None).

    The one constructor of a fresh state (the trainer's sharded init, tests, benchmarks).
    """
    return cls(jnp.zeros((), jnp.int32), params, optimizer.init(params), rng, task_state)

  def apply_gradients(self, grads: Any, optimizer: optax.GradientTransformation
                      ) -> "TrainState":
    """The state after one optimiser update with `grads` (step + 1, same rng and task
    state)."""
    updates, opt_state = optimizer.update(grads, self.opt_state, self.params)
    return TrainState(self.step + 1, optax.apply_updates(self.params, updates), opt_state,
                      self.rng, self.task_state)
