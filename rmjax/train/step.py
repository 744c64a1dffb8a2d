"""Jitted train and eval steps for pairwise reward models.

The loss is chosen by name from `config.loss` (a small registry), so a new variant of the
Bradley-Terry family is a new config, not a new script.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rmjax import eval as rm_eval
from rmjax import losses
from rmjax.train.state import TrainState

Batch = Mapping[str, jax.Array]
ApplyFn = Callable[[Any, Mapping[str, jax.Array]], jax.Array]
LOSSES = ("bradley_terry", "scaled_bradley_terry")


def score_pairs(apply_fn: ApplyFn, params: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
  """Rewards of the chosen and rejected sequences in one forward pass of [2B, L].

  Args:
    apply_fn: `apply(params, {'tokens': [N, L], 'mask': [N, L]}) -> [N]`.
    params: model parameters.
    batch: a preference batch with chosen/rejected tokens and masks, each [B, L].

  Returns:
    (chosen_rewards [B], rejected_rewards [B]), float32.
  """
  num_pairs = batch["chosen_tokens"].shape[0]
  tokens = jnp.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]], axis=0)
  mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]], axis=0)
  rewards = apply_fn(params, {"tokens": tokens, "mask": mask}).astype(jnp.float32)
  return rewards[:num_pairs], rewards[num_pairs:]


def preference_loss(loss_config: ml_collections.ConfigDict, chosen_rewards: jax.Array,
                    rejected_rewards: jax.Array, batch: Batch) -> jax.Array:
  """The configured pairwise loss, a scalar mean over the batch's valid pairs.

  Fields of `loss_config`: name (bradley_terry | scaled_bradley_terry), use_margin (subtract
  the batch's `margin` in BT; for scaled BT the margin is the strength), label_smoothing,
  center_rewards_coef (TRL-style centering penalty), l2_reward_coef (PAR's "Reg").
  """
  valid = batch["valid"]
  if loss_config.name == "bradley_terry":
    margin = batch["margin"] if loss_config.use_margin else 0.0
    loss = losses.bradley_terry_loss(
        chosen_rewards, rejected_rewards, margin=margin,
        label_smoothing=float(loss_config.label_smoothing), mask=valid)
  elif loss_config.name == "scaled_bradley_terry":
    loss = losses.scaled_bradley_terry_loss(
        chosen_rewards, rejected_rewards, batch["margin"], mask=valid)
  else:
    raise ValueError(f"loss.name: expected one of {LOSSES}, got {loss_config.name!r}")
  if loss_config.center_rewards_coef:
    loss += loss_config.center_rewards_coef * losses.reward_centering_penalty(
        chosen_rewards, rejected_rewards, mask=valid)
  if loss_config.l2_reward_coef:
    loss += loss_config.l2_reward_coef * losses.l2_reward_penalty(
        chosen_rewards, rejected_rewards, mask=valid)
  return loss


def make_train_step(apply_fn: ApplyFn, optimizer: optax.GradientTransformation,
                    loss_config: ml_collections.ConfigDict
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """`train_step(state, batch) -> (new_state, metrics)`; jit it with the state's shardings."""

  def train_step(state: TrainState, batch: Batch):
    def loss_fn(params):
      chosen, rejected = score_pairs(apply_fn, params, batch)
      return preference_loss(loss_config, chosen, rejected, batch), (chosen, rejected)

    (loss, (chosen, rejected)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "accuracy": rm_eval.pairwise_accuracy(chosen, rejected, mask=batch["valid"]),
        "mean_margin": rm_eval.mean_reward_margin(chosen, rejected, mask=batch["valid"]),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
    }
    return TrainState(state.step + 1, params, opt_state, state.rng), metrics

  return train_step


def make_eval_step(apply_fn: ApplyFn) -> Callable[[Any, Batch], tuple[jax.Array, jax.Array]]:
  """`eval_step(params, batch) -> (chosen_rewards [B], rejected_rewards [B])`."""

  def eval_step(params, batch):
    return score_pairs(apply_fn, params, batch)

  return eval_step
