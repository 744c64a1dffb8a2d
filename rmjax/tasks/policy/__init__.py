"""The policy tasks on the task-agnostic trainer: supervised fine-tuning (`sft`), direct
preference optimisation (`dpo`) and online RL against rewards (`rl`, with its algorithms in
`rl_algorithms` and its reward pipeline in `rewards`), with their policy model (`model`),
data (`data`), config (`config`) and the evaluation of samples they share
(`sampling_eval`).

  from rmjax.tasks import policy
  report = policy.train_and_evaluate(configs.sft.get_config(), "/tmp/sft")   # by config.task
"""

from typing import Any

import ml_collections

from rmjax.tasks.policy import dpo
from rmjax.tasks.policy import rl
from rmjax.tasks.policy import sft
from rmjax.train import trainer

TASKS = {"sft": sft.make_task, "dpo": dpo.make_task, "rl": rl.make_task}


def make_task(config: ml_collections.ConfigDict):
  """The task `config.task` names ("sft", "dpo" or "rl")."""
  if config.get("task") not in TASKS:
    raise ValueError(f"config.task must be one of {sorted(TASKS)}, got {config.get('task')!r}")
  return TASKS[config.task](config)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the policy task of `config` with the trainer; returns its report."""
  return trainer.train_and_evaluate(config, workdir, make_task(config))
