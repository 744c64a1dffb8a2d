"""A finished (or running) training run read back from its workdir: its config and the
params of one checkpoint, on the host, for any task (`restore_run`)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import ml_collections

from rmjax.train import checkpoint as ckpt_lib
from rmjax.train import program as program_lib


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A training run read back from its workdir.

  Attributes:
    workdir: the run's directory.
    config: its config (config.json).
    step: the checkpoint step restored.
    params: its trained params on the host (numpy), in the layout the run trained
      (for a frozen pretrained backbone: the trained top only).
  """
  workdir: str
  config: ml_collections.ConfigDict
  step: int
  params: Any


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json of a training run; FileNotFoundError naming `workdir` without one."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"workdir={workdir!r}: no config.json (not a training run)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_run(workdir: str, step: int | None = None,
                make_task: Callable[[ml_collections.ConfigDict], Any] | None = None
                ) -> TrainedRun:
  """Reads a run's config and the params of its checkpoint `step` (default: the latest).

  The params are restored on one device-independent layout (a data-parallel mesh over the
  local devices) and returned on the host, so any mesh can place them afterwards.

  Args:
    workdir: the run's directory.
    step: the checkpoint step (default None: the latest).
    make_task: `(config) -> rmjax.train.Task` of the run's kind (default: the reward-model
      task, `rmjax.tasks.reward_model.make_task`; policies: `rmjax.tasks.policy`'s).

  Raises:
    FileNotFoundError: no config.json, or no checkpoint (naming `workdir`).
  """
  if make_task is None:
    from rmjax.tasks.reward_model import task as task_lib  # noqa: PLC0415  (no cycle)
    make_task = task_lib.make_task
  config = read_run_config(workdir)
  config.mesh.shape.update(data=-1, fsdp=1, tensor=1)
  config.train.batch_size = config.eval.batch_size = len(jax.devices())
  program = program_lib.build_program(config, make_task(config))
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"workdir={workdir!r}: no checkpoint under checkpoints/")
    if step not in checkpointer.all_steps():
      raise FileNotFoundError(f"workdir={workdir!r}: no checkpoint at step {step}; found "
                              f"{checkpointer.all_steps()}")
    params = jax.device_get(checkpointer.restore(step, program.abstract_state).params)
  finally:
    checkpointer.close()
  return TrainedRun(workdir, read_run_config(workdir), int(step), params)
