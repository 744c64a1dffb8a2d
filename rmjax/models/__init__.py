"""Reward models: a Flax NNX decoder-only transformer behind a pure apply function.

>>> from rmjax import models
>>> config = models.TransformerConfig(d_model=16, num_heads=2, num_layers=1)
>>> graphdef, params = models.init_reward_model(config, jax.random.key(0))
>>> apply = jax.jit(models.make_reward_apply(graphdef))
>>> batch = {"tokens": jnp.array([[1, 72, 105, 2]]), "mask": jnp.array([[1, 1, 1, 1]])}
>>> apply(params, batch).shape
(1,)
"""

import jax  # noqa: F401  (used by the doctest above)
import jax.numpy as jnp  # noqa: F401

from rmjax.models.ensemble import (
    ENSEMBLE_AXIS,
    abstract_ensemble_params,
    ensemble_member,
    ensemble_partition_specs,
    init_ensemble,
    make_ensemble_apply,
)
from rmjax.models.heads_pluralistic import (
    IdealPointHead,
    LatentConditionedHead,
    PromptConditionedIdealPointHead,
)
from rmjax.models.heads_response import (
    GPM_SCALE_GATES,
    GeneralPreferenceHead,
    MixtureHead,
    MultiAttributeHead,
    ScalarHead,
)
from rmjax.models.heads_shared import check_features, gather_last_token
from rmjax.models.preference_encoder import PreferenceEncoder
from rmjax.models.reward_model import (
    DEFAULT_LOGICAL_AXIS_RULES,
    HEADS,
    RewardModel,
    abstract_param_state,
    abstract_params,
    count_params,
    flops_per_token,
    init_reward_model,
    logical_partition_specs,
    make_embed_apply,
    make_encoder_apply,
    make_reward_apply,
    non_embedding_params,
)
from rmjax.models.transformer import (
    LOGICAL_AXES,
    CausalSelfAttention,
    GatedMLP,
    RMSNorm,
    Transformer,
    TransformerBlock,
    TransformerConfig,
    apply_rope,
    gated_mlp,
    positions_from_mask,
    rope_inverse_frequencies,
    check_tokens_and_mask,
)

__all__ = [
    "DEFAULT_LOGICAL_AXIS_RULES",
    "ENSEMBLE_AXIS",
    "GPM_SCALE_GATES",
    "HEADS",
    "LOGICAL_AXES",
    "CausalSelfAttention",
    "GatedMLP",
    "GeneralPreferenceHead",
    "IdealPointHead",
    "LatentConditionedHead",
    "MixtureHead",
    "MultiAttributeHead",
    "PreferenceEncoder",
    "PromptConditionedIdealPointHead",
    "RMSNorm",
    "RewardModel",
    "ScalarHead",
    "Transformer",
    "TransformerBlock",
    "TransformerConfig",
    "abstract_ensemble_params",
    "abstract_param_state",
    "abstract_params",
    "apply_rope",
    "gated_mlp",
    "positions_from_mask",
    "rope_inverse_frequencies",
    "check_features",
    "check_tokens_and_mask",
    "count_params",
    "ensemble_member",
    "ensemble_partition_specs",
    "flops_per_token",
    "gather_last_token",
    "init_ensemble",
    "init_reward_model",
    "logical_partition_specs",
    "make_embed_apply",
    "make_encoder_apply",
    "make_ensemble_apply",
    "make_reward_apply",
    "non_embedding_params",
]
