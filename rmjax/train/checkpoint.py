"""Checkpointing with orbax's CheckpointManager: intervals, keep N, async saves, preemption.

The save interval and the preemption sync point are orbax's own (`save_interval_steps`,
`should_save`, `reached_preemption`): `save(step, state)` writes only at multiples of the
interval (or when forced), and in a multi-process run `reached_preemption(step)` is True on
every process at the same step once any of them got a SIGTERM (JAX's preemption service).

Restores go straight into the target shardings: the abstract target carries a `sharding` on
every leaf, so nothing is materialised on one device and resharded. The target's mesh need
not be the one that saved: a checkpoint written on fsdp 8 restores onto data 4 x tensor 2,
and one written by 2 processes onto 1 (each process reads only the shards its devices hold).
Every process of a multi-process run calls save and restore (orbax coordinates them).
"""

import os
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from rmjax.train.state import TrainState


class _StoredTrainState(NamedTuple):
  """The on-disk layout of a `TrainState` whose task_state is None: its four other fields,
  the layout every checkpoint had before task states existed."""
  step: Any
  params: Any
  opt_state: Any
  rng: Any


def _stored(tree: Any) -> Any:
  """What is written for `tree`: a TrainState without task state loses the empty field (orbax
  would otherwise record a fifth entry that older checkpoints lack, and refuse to restore
  them)."""
  if isinstance(tree, TrainState) and tree.task_state is None:
    return _StoredTrainState(*tree[:4])
  return tree


def _loaded(target: Any, restored: Any) -> Any:
  if isinstance(target, TrainState) and target.task_state is None:
    return TrainState(*restored)
  return restored


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of arrays: the restore target."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` for one pytree (the train state).

  Args:
    directory: where step folders go (created if missing).
    max_to_keep: the newest N checkpoints are kept.
    async_save: save in a background thread; `wait()` before reading or exiting.
    save_interval_steps: `save` writes at multiples of this step count (default 1: every
      call), unless forced.
  """

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True,
               save_interval_steps: int = 1):
    if max_to_keep < 1:
      raise ValueError(f"checkpoint.max_to_keep: expected >= 1, got {max_to_keep}")
    if save_interval_steps < 1:
      raise ValueError(f"train.checkpoint_every: expected >= 1, got {save_interval_steps}")
    self.directory = os.path.abspath(directory)
    # Orbax's default policy also saves the first step of a fresh run (InitialSavePolicy);
    # a run here saves at multiples of the interval, at a preemption, and when forced.
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(save_interval_steps),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy()])
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
            save_decision_policy=policy))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether `save(step, ...)` would write: a multiple of the interval, or a preemption."""
    return self._manager.should_save(step)

  def reached_preemption(self, step: int) -> bool:
    """True on every process at the same step after a SIGTERM reached any of them (JAX's
    preemption service of a `jax.distributed` run); always False in a single process."""
    return self._manager.reached_preemption(step)

  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Saves `state` at `step` if `should_save(step)` or `force`; returns whether it did."""
    return self._manager.save(step, args=ocp.args.StandardSave(_stored(state)), force=force)

  def restore(self, step: int, target: Any) -> Any:
    """Restores `step` into the structure, dtypes and shardings of `target` (arrays or
    `jax.ShapeDtypeStruct`s with shardings, on any mesh). A `TrainState` target with
    task_state None reads the four-field layout (`_stored`), also that of checkpoints written
    before task states existed."""
    restored = self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_like(_stored(target))))
    return _loaded(target, restored)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
