"""The reward-model task: every family of pairwise reward model, trained by one trainer.

  from rmjax.tasks import reward_model
  report = reward_model.train_and_evaluate(config, workdir)   # configs/reward_model.py

A family is one module of `rmjax.tasks.reward_model.families` (bt, scaled_bt, regression,
listwise, gpm, mixture, ensemble, vpl, pal) holding a `Family` record: its head, data
format, loss, pair logit and config fields.
"""

from rmjax.tasks.reward_model.family import Family
from rmjax.tasks.reward_model.family import family_names
from rmjax.tasks.reward_model.family import get_family
from rmjax.tasks.reward_model.family import Model
from rmjax.tasks.reward_model.task import evaluate_pairs
from rmjax.tasks.reward_model.task import make_task
from rmjax.tasks.reward_model.task import train_and_evaluate

__all__ = ("Family", "Model", "evaluate_pairs", "family_names", "get_family", "make_task",
           "train_and_evaluate")
