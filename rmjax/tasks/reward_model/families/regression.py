"""regression: a multi-attribute head regressed on HelpSteer2-style ratings.

  loss = masked MSE of 5 predicted ratings (0..4; 10% missing)
         + bt_weight * -log sigma(score(a_c) - score(a_r))
  pair logit = score(a_c) - score(a_r),  score = the HelpSteer2 weighting of the ratings

HelpSteer2, Wang et al. (2024). bt_weight = 0 (the default) is regression only.
"""

import jax.numpy as jnp
import ml_collections

from rmjax import losses
from rmjax.tasks.reward_model.family import Family


def _configure(config: ml_collections.ConfigDict, preset: str) -> None:
  del preset
  config.data.attributes = True
  config.data.synthetic.attribute_missing_prob = 0.1


def _check_config(config: ml_collections.ConfigDict) -> None:
  if not config.data.attributes:
    raise ValueError("family='regression' trains on attribute ratings: set "
                     "data.attributes=True")


def _pair_loss(config: ml_collections.ConfigDict, chosen, rejected, batch):
  valid = batch["valid"]
  predictions = jnp.concatenate([chosen, rejected], axis=0)
  targets = jnp.concatenate([batch["chosen_attributes"], batch["rejected_attributes"]], 0)
  attribute_mask = jnp.concatenate([batch["chosen_attribute_mask"],
                                    batch["rejected_attribute_mask"]], axis=0)
  return losses.joint_preference_regression_loss(
      losses.helpsteer2_attribute_score(chosen), losses.helpsteer2_attribute_score(rejected),
      predictions, targets, bt_weight=float(config.loss.bt_weight),
      attribute_mask=attribute_mask, mask=valid,
      regression_mask=jnp.concatenate([valid, valid], axis=0))


def _pair_logits(config: ml_collections.ConfigDict, chosen, rejected):
  del config
  return (losses.helpsteer2_attribute_score(chosen)
          - losses.helpsteer2_attribute_score(rejected))


FAMILY = Family(
    name="regression",
    summary="5 HelpSteer2 attributes, masked MSE; pairs ranked by the HelpSteer2 score",
    head="multi_attribute",
    config=lambda: {"head": dict(num_attributes=5), "loss": dict(bt_weight=0.0)},
    synthetic_only=True,
    configure=_configure,
    check_config=_check_config,
    pair_loss=_pair_loss,
    pair_logits=_pair_logits,
    batch_fields=("chosen_attributes", "rejected_attributes", "chosen_attribute_mask",
                  "rejected_attribute_mask"),
)
