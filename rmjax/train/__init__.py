"""Training: train state, steps, optimisers, checkpoints, metrics, the loop."""

from rmjax.train.checkpoint import Checkpointer
from rmjax.train.loop import Preempted
from rmjax.train.loop import evaluate
from rmjax.train.loop import train_and_evaluate
from rmjax.train.metrics_io import MetricsWriter
from rmjax.train.metrics_io import read_metrics
from rmjax.train.optim import make_optimizer
from rmjax.train.state import TrainState
from rmjax.train.step import make_eval_step
from rmjax.train.step import make_train_step
from rmjax.train.step import preference_loss
from rmjax.train.step import score_pairs
