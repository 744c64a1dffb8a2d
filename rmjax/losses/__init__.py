"""Pure reward-model losses: arrays in, arrays out.

Imports only jax, jax.numpy and chex, so that other projects can use the losses
without the training stack. Every loss takes an optional validity `mask`, and
reduces with `reduce_loss` (`reduction` in {"mean", "sum", "none"}; "mean" is
over valid examples only).
"""

from rmjax.losses._reduction import reduce_loss
from rmjax.losses.bradley_terry import bradley_terry_loss
from rmjax.losses.bradley_terry import l2_reward_penalty
from rmjax.losses.bradley_terry import reward_centering_penalty
from rmjax.losses.bradley_terry import scaled_bradley_terry_loss
from rmjax.losses.listwise import all_pairs_bradley_terry_loss
from rmjax.losses.listwise import lipo_lambda_weights
from rmjax.losses.listwise import pairwise_preference_matrix
from rmjax.losses.listwise import plackett_luce_loss
from rmjax.losses.regression import attribute_regression_loss
from rmjax.losses.regression import HELPSTEER2_ATTRIBUTES
from rmjax.losses.regression import HELPSTEER2_SCORE_WEIGHTS
from rmjax.losses.regression import helpsteer2_attribute_score
from rmjax.losses.regression import joint_preference_regression_loss

__all__ = (
    "HELPSTEER2_ATTRIBUTES",
    "HELPSTEER2_SCORE_WEIGHTS",
    "all_pairs_bradley_terry_loss",
    "attribute_regression_loss",
    "bradley_terry_loss",
    "helpsteer2_attribute_score",
    "joint_preference_regression_loss",
    "lipo_lambda_weights",
    "pairwise_preference_matrix",
    "plackett_luce_loss",
    "l2_reward_penalty",
    "reduce_loss",
    "reward_centering_penalty",
    "scaled_bradley_terry_loss",
)
