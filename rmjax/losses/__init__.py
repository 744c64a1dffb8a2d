"""Pure reward-model losses: arrays in, arrays out.

Reward-model losses, advantage estimators, policy-gradient and KL losses, token
log-probabilities (plain and chunked), direct-preference losses (the DPO
family and the other loss types of TRL's DPOTrainer, by name in
`PAIRED_LOSSES`). Imports only
jax, jax.numpy and chex, so that other projects can use the losses without the
training stack. Every loss takes an optional validity `mask`, and reduces with
`reduce_loss` (`reduction` in {"mean", "sum", "none"}; "mean" is over valid
examples only).

No private jit: as in optax and rlax, nothing in `rmjax.losses` is jitted
inside; the caller jits (a train step, an evaluation function, or a jitted
function around the loss in a notebook loop). A public function checks its
Python arguments eagerly (option names, hyperparameters, concrete labels) and
then runs plain jnp code, possibly through private helpers; under the caller's
`jit` that code is traced once per shape, and called eagerly it runs op by op.
The body of a `lax.scan` / `lax.fori_loop` is a module-level function, not a
closure made afresh at each call, so that eager calls reuse the compiled loop.
`benchmarks/loss_eager_call.py` measures the eager cost of this choice.
"""

from rmjax.losses._reduction import reduce_loss
from rmjax.losses.advantages import bnpo_advantages
from rmjax.losses.advantages import bnpo_beta_parameters
from rmjax.losses.advantages import bnpo_decomposed_advantages
from rmjax.losses.advantages import broadcast_to_tokens
from rmjax.losses.advantages import dler_advantages
from rmjax.losses.advantages import dr_grpo_advantages
from rmjax.losses.advantages import dynamic_sampling_mask
from rmjax.losses.advantages import gae
from rmjax.losses.advantages import gdpo_advantages
from rmjax.losses.advantages import grpo_advantages
from rmjax.losses.advantages import opo_advantages
from rmjax.losses.advantages import pairwise_win_rates
from rmjax.losses.advantages import pref_grpo_advantages
from rmjax.losses.advantages import reinforce_advantages
from rmjax.losses.advantages import reinforce_plus_plus_advantages
from rmjax.losses.advantages import reinforce_plus_plus_baseline_advantages
from rmjax.losses.advantages import remax_advantages
from rmjax.losses.advantages import rloo_advantages
from rmjax.losses.advantages import SCALE_REWARDS
from rmjax.losses.advantages import SINGLE_SAMPLE
from rmjax.losses.bradley_terry import bradley_terry_loss
from rmjax.losses.bradley_terry import l2_reward_penalty
from rmjax.losses.bradley_terry import reward_centering_penalty
from rmjax.losses.bradley_terry import scaled_bradley_terry_loss
from rmjax.losses.contrastive import info_nce_loss
from rmjax.losses.direct_preference import aot_loss
from rmjax.losses.direct_preference import aot_unpaired_loss
from rmjax.losses.direct_preference import apo_down_loss
from rmjax.losses.direct_preference import apo_zero_loss
from rmjax.losses.direct_preference import bco_pair_loss
from rmjax.losses.direct_preference import bco_reward_shift
from rmjax.losses.direct_preference import BcoShiftState
from rmjax.losses.direct_preference import discopop_loss
from rmjax.losses.direct_preference import dno_loss
from rmjax.losses.direct_preference import dpo_loss
from rmjax.losses.direct_preference import exo_pair_loss
from rmjax.losses.direct_preference import f_divergence_dpo_loss
from rmjax.losses.direct_preference import F_DIVERGENCES
from rmjax.losses.direct_preference import get_paired_loss
from rmjax.losses.direct_preference import hinge_loss
from rmjax.losses.direct_preference import implicit_rewards
from rmjax.losses.direct_preference import ipo_loss
from rmjax.losses.direct_preference import kto_loss
from rmjax.losses.direct_preference import ld_dpo_log_probs
from rmjax.losses.direct_preference import lipo_lambda_loss
from rmjax.losses.direct_preference import mah_dpo_loss
from rmjax.losses.direct_preference import mix_head_logits
from rmjax.losses.direct_preference import nca_pair_loss
from rmjax.losses.direct_preference import orpo_loss
from rmjax.losses.direct_preference import PAIRED_LOSSES
from rmjax.losses.direct_preference import pro_loss
from rmjax.losses.direct_preference import robust_dpo_loss
from rmjax.losses.direct_preference import selm_loss
from rmjax.losses.direct_preference import simpo_loss
from rmjax.losses.direct_preference import sppo_hard_loss
from rmjax.losses.direct_preference import wpo_weights
from rmjax.losses.general_preference import general_preference_loss
from rmjax.losses.general_preference import general_preference_score
from rmjax.losses.kl import adaptive_kl_controller
from rmjax.losses.kl import adaptive_kl_init
from rmjax.losses.kl import adaptive_kl_update
from rmjax.losses.kl import AdaptiveKLState
from rmjax.losses.kl import categorical_kl
from rmjax.losses.kl import ESTIMATORS
from rmjax.losses.kl import fixed_kl_controller
from rmjax.losses.kl import fixed_kl_init
from rmjax.losses.kl import fixed_kl_update
from rmjax.losses.kl import FixedKLState
from rmjax.losses.kl import kl_in_reward
from rmjax.losses.kl import kl_penalty
from rmjax.losses.kl import KLControllerState
from rmjax.losses.listwise import all_pairs_bradley_terry_loss
from rmjax.losses.listwise import lipo_lambda_weights
from rmjax.losses.listwise import pairwise_preference_matrix
from rmjax.losses.listwise import plackett_luce_loss
from rmjax.losses.log_probs import AGGREGATIONS
from rmjax.losses.log_probs import chunked_token_log_probs
from rmjax.losses.log_probs import sequence_log_probs
from rmjax.losses.log_probs import token_log_probs
from rmjax.losses.multi_objective import min_norm_weights
from rmjax.losses.multi_objective import weighted_task_loss
from rmjax.losses.normalization import batch_whiten
from rmjax.losses.normalization import group_normalize
from rmjax.losses.normalization import group_rows
from rmjax.losses.normalization import normalize_then_sum
from rmjax.losses.normalization import SCALES
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
from rmjax.losses.policy_gradient import aggregate_token_losses
from rmjax.losses.policy_gradient import AGGREGATION_MODES
from rmjax.losses.policy_gradient import cispo_loss
from rmjax.losses.policy_gradient import clipped_value_loss
from rmjax.losses.policy_gradient import entropy_from_logits
from rmjax.losses.policy_gradient import gspo_loss
from rmjax.losses.policy_gradient import ppo_clip_loss
from rmjax.losses.policy_gradient import STABLE_REINFORCE_LOG_RATIO_BOUNDS
from rmjax.losses.policy_gradient import stable_reinforce_loss
from rmjax.losses.policy_gradient import vanilla_policy_gradient_loss
from rmjax.losses.regression import attribute_regression_loss
from rmjax.losses.regression import helpsteer2_attribute_score
from rmjax.losses.regression import HELPSTEER2_ATTRIBUTES
from rmjax.losses.regression import HELPSTEER2_SCORE_WEIGHTS
from rmjax.losses.regression import joint_preference_regression_loss
from rmjax.losses.stateful import StatefulTransform

__all__ = (
    "AGGREGATION_MODES",
    "AGGREGATIONS",
    "ESTIMATORS",
    "F_DIVERGENCES",
    "HELPSTEER2_ATTRIBUTES",
    "HELPSTEER2_SCORE_WEIGHTS",
    "PAIRED_LOSSES",
    "PAL_INIT_LOG_TEMPERATURE",
    "SCALE_REWARDS",
    "SCALES",
    "SINGLE_SAMPLE",
    "STABLE_REINFORCE_LOG_RATIO_BOUNDS",
    "adaptive_kl_controller",
    "adaptive_kl_init",
    "adaptive_kl_update",
    "AdaptiveKLState",
    "aggregate_token_losses",
    "all_pairs_bradley_terry_loss",
    "aot_loss",
    "aot_unpaired_loss",
    "apo_down_loss",
    "apo_zero_loss",
    "attribute_regression_loss",
    "batch_whiten",
    "bco_pair_loss",
    "bco_reward_shift",
    "BcoShiftState",
    "bnpo_advantages",
    "bnpo_beta_parameters",
    "bnpo_decomposed_advantages",
    "bradley_terry_loss",
    "broadcast_to_tokens",
    "categorical_kl",
    "chunked_token_log_probs",
    "cispo_loss",
    "clipped_value_loss",
    "discopop_loss",
    "dler_advantages",
    "dno_loss",
    "dpo_loss",
    "dr_grpo_advantages",
    "dynamic_sampling_mask",
    "entropy_from_logits",
    "exo_pair_loss",
    "f_divergence_dpo_loss",
    "fixed_kl_controller",
    "fixed_kl_init",
    "fixed_kl_update",
    "FixedKLState",
    "gae",
    "gaussian_kl_to_standard_normal",
    "gdpo_advantages",
    "general_preference_loss",
    "general_preference_score",
    "get_paired_loss",
    "group_normalize",
    "group_rows",
    "grpo_advantages",
    "gspo_loss",
    "hedge_update",
    "helpsteer2_attribute_score",
    "hinge_loss",
    "implicit_rewards",
    "info_nce_loss",
    "ipo_loss",
    "joint_preference_regression_loss",
    "kl_in_reward",
    "kl_penalty",
    "KLControllerState",
    "kto_loss",
    "l2_reward_penalty",
    "ld_dpo_log_probs",
    "lipo_lambda_loss",
    "lipo_lambda_weights",
    "mah_dpo_loss",
    "maxmin_assign_users",
    "min_norm_weights",
    "mix_head_logits",
    "mixture_bradley_terry_loss",
    "mixture_posterior",
    "nca_pair_loss",
    "normalize_then_sum",
    "opo_advantages",
    "orpo_loss",
    "pairwise_preference_matrix",
    "pairwise_win_rates",
    "pal_a_score",
    "pal_a_user_point",
    "pal_b_score",
    "pal_b_user_vector",
    "plackett_luce_loss",
    "ppo_clip_loss",
    "pref_grpo_advantages",
    "pro_loss",
    "reduce_loss",
    "reinforce_advantages",
    "reinforce_plus_plus_advantages",
    "reinforce_plus_plus_baseline_advantages",
    "remax_advantages",
    "reparameterize",
    "reward_centering_penalty",
    "rloo_advantages",
    "robust_dpo_loss",
    "scaled_bradley_terry_loss",
    "selm_loss",
    "sequence_log_probs",
    "simpo_loss",
    "sppo_hard_loss",
    "StatefulTransform",
    "stable_reinforce_loss",
    "token_log_probs",
    "vanilla_policy_gradient_loss",
    "vpl_loss",
    "vpl_reward_scaling",
    "weighted_task_loss",
    "wpo_weights",
)
