"""Reward transforms: pure functions from raw reward-model scores to the reward a policy sees.

Imports only jax, jax.numpy and chex (and `rmjax.losses` for the shared argument checks).
"""

from rmjax.transforms.ensemble import aggregate_ensemble_rewards
from rmjax.transforms.ensemble import ENSEMBLE_AGGREGATIONS
from rmjax.transforms.ensemble import lowest_fraction_mask
from rmjax.transforms.ensemble import preference_strength

__all__ = (
    "ENSEMBLE_AGGREGATIONS",
    "aggregate_ensemble_rewards",
    "lowest_fraction_mask",
    "preference_strength",
)
