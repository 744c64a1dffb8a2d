"""The task-agnostic trainer: state, sharded program, loop, checkpoints, metrics, report.

  trainer.train_and_evaluate(config, workdir, task)   # task: a `Task` (see `rmjax.tasks`)
  dry_run.dry_run(config, task, "v5e-256")            # compile for a TPU slice and report
"""

from rmjax.train.checkpoint import Checkpointer
from rmjax.train.metrics_io import MetricsWriter
from rmjax.train.metrics_io import read_metrics
from rmjax.train.optim import make_optimizer
from rmjax.train.program import build_program
from rmjax.train.program import Program
from rmjax.train.state import TrainState
from rmjax.train.task import Task
from rmjax.train.task import TaskData
from rmjax.train.trainer import Preempted
from rmjax.train.trainer import train_and_evaluate
