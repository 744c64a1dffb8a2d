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
from rmjax.losses.contrastive import info_nce_loss
from rmjax.losses.general_preference import general_preference_loss
from rmjax.losses.general_preference import general_preference_score
from rmjax.losses.listwise import all_pairs_bradley_terry_loss
from rmjax.losses.listwise import lipo_lambda_weights
from rmjax.losses.listwise import pairwise_preference_matrix
from rmjax.losses.listwise import plackett_luce_loss
from rmjax.losses.multi_objective import min_norm_weights
from rmjax.losses.multi_objective import weighted_task_loss
from rmjax.losses.pluralistic import gaussian_kl_to_standard_normal
from rmjax.losses.pluralistic import hedge_update
from rmjax.losses.pluralistic import maxmin_assign_users
from rmjax.losses.pluralistic import mixture_bradley_terry_loss
from rmjax.losses.pluralistic import mixture_posterior
from rmjax.losses.pluralistic import pal_a_score
from rmjax.losses.pluralistic import pal_a_user_point
from rmjax.losses.pluralistic import pal_b_score
from rmjax.losses.pluralistic import pal_b_user_vector
from rmjax.losses.pluralistic import PAL_INIT_LOG_TEMPERATURE
from rmjax.losses.pluralistic import reparameterize
from rmjax.losses.pluralistic import vpl_loss
from rmjax.losses.pluralistic import vpl_reward_scaling
from rmjax.losses.regression import attribute_regression_loss
from rmjax.losses.regression import helpsteer2_attribute_score
from rmjax.losses.regression import HELPSTEER2_ATTRIBUTES
from rmjax.losses.regression import HELPSTEER2_SCORE_WEIGHTS
from rmjax.losses.regression import joint_preference_regression_loss

__all__ = (
    "HELPSTEER2_ATTRIBUTES",
    "HELPSTEER2_SCORE_WEIGHTS",
    "PAL_INIT_LOG_TEMPERATURE",
    "all_pairs_bradley_terry_loss",
    "attribute_regression_loss",
    "bradley_terry_loss",
    "gaussian_kl_to_standard_normal",
    "general_preference_loss",
    "general_preference_score",
    "hedge_update",
    "helpsteer2_attribute_score",
    "info_nce_loss",
    "joint_preference_regression_loss",
    "l2_reward_penalty",
    "lipo_lambda_weights",
    "maxmin_assign_users",
    "min_norm_weights",
    "mixture_bradley_terry_loss",
    "mixture_posterior",
    "pairwise_preference_matrix",
    "pal_a_score",
    "pal_a_user_point",
    "pal_b_score",
    "pal_b_user_vector",
    "plackett_luce_loss",
    "reduce_loss",
    "reparameterize",
    "reward_centering_penalty",
    "scaled_bradley_terry_loss",
    "vpl_loss",
    "vpl_reward_scaling",
    "weighted_task_loss",
)
