"""bt: the Bradley-Terry reward model (the default family).

  loss = -log sigma(r_c - r_r)          scalar head, pair data

Options (config.loss): use_margin (subtract the batch's annotated margin), label_smoothing,
center_rewards_coef (TRL-style centring), l2_reward_coef (PAR's "Reg"). A trained teacher
ensemble's preference strength (config.strength; Secrets of RLHF II) flips the lowest-strength
labels, smooths each label by the teacher's doubt or sets an adaptive margin: a data step
(`rmjax.tasks.reward_model.strength`) before training, and a term of the loss.
"""

import ml_collections

from rmjax.tasks.reward_model import pairwise
from rmjax.tasks.reward_model import strength
from rmjax.tasks.reward_model.family import Family


def _config() -> dict:
  return {"loss": {**pairwise.BRADLEY_TERRY_LOSS, **pairwise.REWARD_PENALTIES},
          "strength": strength.default_strength_config()}


def _pair_loss(config: ml_collections.ConfigDict, chosen, rejected, batch):
  return pairwise.bradley_terry_pair_loss(
      config.loss, chosen, rejected, batch, strength_use=config.strength.use,
      max_smoothing=config.strength.max_smoothing)


FAMILY = Family(
    name="bt",
    summary="Bradley-Terry: -log sigma(r_c - r_r), scalar head",
    head="scalar",
    config=_config,
    check_config=strength.check_strength_config,
    pair_loss=_pair_loss,
    pair_logits=pairwise.reward_difference,
    prepare_data=strength.strength_data_step,
    batch_fields=("margin", "strength_mean"),
)
