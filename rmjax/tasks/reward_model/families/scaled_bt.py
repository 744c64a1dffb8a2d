"""scaled_bt: Bradley-Terry scaled by the annotated preference strength.

  loss = -m log sigma(r_c - r_r)        m = the pair's strength 0..3, ties (m = 0) dropped

Trains on synthetic pairs whose margin is the strength of the true reward gap
(`data.synthetic.margin = "strength"`). HelpSteer2-Preference, Wang et al. (2024).
"""

import ml_collections

from rmjax import losses
from rmjax.tasks.reward_model import pairwise
from rmjax.tasks.reward_model.family import Family


def _configure(config: ml_collections.ConfigDict, preset: str) -> None:
  del preset
  config.data.synthetic.margin = "strength"


def _pair_loss(config: ml_collections.ConfigDict, chosen, rejected, batch):
  valid = batch["valid"]
  loss = losses.scaled_bradley_terry_loss(chosen, rejected, batch["margin"], mask=valid)
  return pairwise.add_reward_penalties(loss, config.loss, chosen, rejected, valid)


FAMILY = Family(
    name="scaled_bt",
    summary="BT scaled by the annotated strength 0..3: -m log sigma(r_c - r_r)",
    head="scalar",
    config=lambda: {"loss": dict(pairwise.REWARD_PENALTIES)},
    synthetic_only=True,
    configure=_configure,
    pair_loss=_pair_loss,
    pair_logits=pairwise.reward_difference,
    batch_fields=("margin",),
)
