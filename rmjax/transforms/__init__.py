"""Reward transforms: pure functions from raw reward-model scores to the reward a policy sees.

  * one reward: log-sigmoid centring, PAR and its baselines (`single`), length penalties
    (`length`), process-reward refinements (`process`), the RLCR calibration reward
    (`calibration`);
  * normalisation: batch whitening, GRPO / Dr. GRPO group normalisation (from
    `rmjax.losses.normalization`), running statistics with explicit state (`running`: the pure
    `welford_*` / `ema_*` steps and the `StatefulTransform` factories `running_normalizer`,
    `ema_normalizer`, `mean_std_tracker`);
  * combination of K rewards: logical AND, weighted sum, min, soft-min, directional (DPA),
    Lagrangian mixing (`combination`; `lagrangian_mixer` as a `StatefulTransform`), HelpSteer2's
    attribute score, GDPO's normalise-then-sum and ensemble aggregation (`ensemble`);
  * a registry by name (`registry`): `get_transform`, `get_combination`.

Imports only jax, jax.numpy and chex (and `rmjax.losses` for the shared argument checks and the
normalisations that live there).
"""

from rmjax.losses.normalization import batch_whiten
from rmjax.losses.normalization import group_normalize
from rmjax.losses.normalization import normalize_then_sum
from rmjax.losses.regression import helpsteer2_attribute_score
from rmjax.losses.regression import HELPSTEER2_SCORE_WEIGHTS
from rmjax.losses.stateful import StatefulTransform
from rmjax.transforms.calibration import brier_calibration_reward
from rmjax.transforms.combination import CONSTRAINT_TYPES
from rmjax.transforms.combination import directional_reward
from rmjax.transforms.combination import dpa_direction
from rmjax.transforms.combination import lagrange_init
from rmjax.transforms.combination import lagrange_update
from rmjax.transforms.combination import lagrange_weights
from rmjax.transforms.combination import lagrangian_mixer
from rmjax.transforms.combination import LagrangeState
from rmjax.transforms.combination import lagrangian_mixing
from rmjax.transforms.combination import logical_and
from rmjax.transforms.combination import min_reward
from rmjax.transforms.combination import soft_min
from rmjax.transforms.combination import weighted_sum
from rmjax.transforms.ensemble import aggregate_ensemble_rewards
from rmjax.transforms.ensemble import ENSEMBLE_AGGREGATIONS
from rmjax.transforms.ensemble import lowest_fraction_mask
from rmjax.transforms.ensemble import preference_strength
from rmjax.transforms.length import dapo_overlong_penalty
from rmjax.transforms.length import dler_truncation_penalty
from rmjax.transforms.length import linear_length_penalty
from rmjax.transforms.process import prm_clip
from rmjax.transforms.process import prm_delta
from rmjax.transforms.registry import COMBINATIONS
from rmjax.transforms.registry import get_combination
from rmjax.transforms.registry import get_transform
from rmjax.transforms.registry import TRANSFORMS
from rmjax.transforms.running import ema_init
from rmjax.transforms.running import ema_normalizer
from rmjax.transforms.running import ema_update
from rmjax.transforms.running import EmaState
from rmjax.transforms.running import mean_std_tracker
from rmjax.transforms.running import running_mean_std
from rmjax.transforms.running import running_normalize
from rmjax.transforms.running import running_normalizer
from rmjax.transforms.running import welford_init
from rmjax.transforms.running import welford_update
from rmjax.transforms.running import WelfordState
from rmjax.transforms.single import ceil_reward
from rmjax.transforms.single import centered_reward
from rmjax.transforms.single import clip_reward
from rmjax.transforms.single import log_sigmoid_centered
from rmjax.transforms.single import mean_std_normalize
from rmjax.transforms.single import min_max_normalize
from rmjax.transforms.single import preference_as_reward
from rmjax.transforms.single import reference_reward
from rmjax.transforms.single import relative_arctan
from rmjax.transforms.single import relative_tanh

__all__ = (
    "COMBINATIONS",
    "CONSTRAINT_TYPES",
    "ENSEMBLE_AGGREGATIONS",
    "EmaState",
    "HELPSTEER2_SCORE_WEIGHTS",
    "LagrangeState",
    "TRANSFORMS",
    "WelfordState",
    "aggregate_ensemble_rewards",
    "batch_whiten",
    "brier_calibration_reward",
    "ceil_reward",
    "centered_reward",
    "clip_reward",
    "dapo_overlong_penalty",
    "directional_reward",
    "dler_truncation_penalty",
    "dpa_direction",
    "ema_init",
    "ema_normalizer",
    "ema_update",
    "get_combination",
    "get_transform",
    "group_normalize",
    "helpsteer2_attribute_score",
    "lagrange_init",
    "lagrange_update",
    "lagrange_weights",
    "lagrangian_mixer",
    "lagrangian_mixing",
    "linear_length_penalty",
    "log_sigmoid_centered",
    "logical_and",
    "lowest_fraction_mask",
    "mean_std_tracker",
    "mean_std_normalize",
    "min_max_normalize",
    "min_reward",
    "normalize_then_sum",
    "preference_as_reward",
    "preference_strength",
    "prm_clip",
    "prm_delta",
    "reference_reward",
    "relative_arctan",
    "relative_tanh",
    "running_mean_std",
    "running_normalize",
    "running_normalizer",
    "soft_min",
    "StatefulTransform",
    "weighted_sum",
    "welford_init",
    "welford_update",
)
