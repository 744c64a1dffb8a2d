"""gpm: the general preference model, which can represent cyclic preferences.

  s(c, r) = <R v_c, v_r>,  R block-diagonal rotations    logit = s(c, r) / tau
  loss = -log sigma(s(c, r) / tau - m)

A 2k-dimensional embedding head (k = embedding_dim / 2 blocks). Zhang et al. (2024),
"Beyond Bradley-Terry models: a general preference model for language model alignment".
"""

import jax.numpy as jnp
import ml_collections

from rmjax import losses
from rmjax.tasks.reward_model.family import Family


def _pair_loss(config: ml_collections.ConfigDict, chosen, rejected, batch):
  margin = batch["margin"] if config.loss.use_margin else 0.0
  return losses.general_preference_loss(
      chosen["embedding"], rejected["embedding"], margin=margin,
      temperature=config.loss.temperature, block_scales=chosen.get("block_scales"),
      normalize=config.loss.normalize, mask=batch["valid"])


def _pair_logits(config: ml_collections.ConfigDict, chosen, rejected):
  c, r = chosen["embedding"], rejected["embedding"]
  if config.loss.normalize:
    c = c / jnp.maximum(jnp.linalg.norm(c, axis=-1, keepdims=True), 1e-12)
    r = r / jnp.maximum(jnp.linalg.norm(r, axis=-1, keepdims=True), 1e-12)
  score = losses.general_preference_score(c, r, block_scales=chosen.get("block_scales"))
  return score / config.loss.temperature


FAMILY = Family(
    name="gpm",
    summary="general preference model: -log sigma(<R v_c, v_r> / tau), embedding head",
    head="general_preference",
    config=lambda: {"head": dict(embedding_dim=4),
                    "loss": dict(use_margin=False, temperature=0.1, normalize=False)},
    pair_loss=_pair_loss,
    pair_logits=_pair_logits,
    batch_fields=("margin",),
)
