"""Jitted train and eval steps for pairwise reward models.

Every pairwise model, whatever its head, is reduced to one number per pair: the logit of
P(chosen preferred over rejected). Bradley-Terry: r_c - r_r; GPM: s(c, r) / tau; mixture of
BT: log P - log(1 - P). Accuracy, calibration and the eval NLL are functions of that logit,
so the same evaluation serves every family. The training loss is chosen by name from
`config.loss` (a small registry), so a new variant is a new config, not a new script.
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
ApplyFn = Callable[[Any, Mapping[str, jax.Array]], Any]
# loss name -> the head it needs.
LOSS_HEADS = {
    "bradley_terry": "scalar",
    "scaled_bradley_terry": "scalar",
    "general_preference": "general_preference",
    "mixture_bradley_terry": "mixture",
}


def score_pairs(apply_fn: ApplyFn, params: Any, batch: Batch) -> tuple[Any, Any]:
  """Head outputs of the chosen and rejected sequences, from one forward pass of [2B, L].

  Args:
    apply_fn: `apply(params, {'tokens': [N, L], 'mask': [N, L]})` -> [N] rewards or a dict of
      [N, ...] arrays (multi-output heads).
    params: model parameters.
    batch: a preference batch with chosen/rejected tokens and masks, each [B, L].

  Returns:
    (chosen_outputs, rejected_outputs): the head's output split along the leading axis.
  """
  num_pairs = batch["chosen_tokens"].shape[0]
  tokens = jnp.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]], axis=0)
  mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]], axis=0)
  outputs = apply_fn(params, {"tokens": tokens, "mask": mask})
  return (jax.tree.map(lambda x: x[:num_pairs], outputs),
          jax.tree.map(lambda x: x[num_pairs:], outputs))


def _check_loss_name(loss_config: ml_collections.ConfigDict) -> str:
  if loss_config.name not in LOSS_HEADS:
    raise ValueError(f"loss.name: expected one of {tuple(LOSS_HEADS)}, got {loss_config.name!r}")
  return loss_config.name


def _mixture_router_logits(chosen: Mapping[str, jax.Array],
                           rejected: Mapping[str, jax.Array]) -> jax.Array:
  # The router should see the context only; both sequences share the prompt, and averaging
  # their router logits keeps P(c > r) + P(r > c) = 1.
  return 0.5 * (chosen["router_logits"] + rejected["router_logits"])


def pair_logits(loss_config: ml_collections.ConfigDict, chosen: Any, rejected: Any) -> jax.Array:
  """[B] logit of P(chosen preferred over rejected) under the configured model family.

    bradley_terry, scaled_bradley_terry:  r_c - r_r
    general_preference:                   s(c, r) / tau,  s = <R v_c, v_r>   (GPM)
    mixture_bradley_terry:                log P - log(1 - P),  P = sum_k w_k sigma(r_c,k - r_r,k)
  """
  name = _check_loss_name(loss_config)
  if name in ("bradley_terry", "scaled_bradley_terry"):
    return (chosen - rejected).astype(jnp.float32)
  if name == "general_preference":
    c, r = chosen["embedding"], rejected["embedding"]
    if loss_config.normalize:
      c = c / jnp.maximum(jnp.linalg.norm(c, axis=-1, keepdims=True), 1e-12)
      r = r / jnp.maximum(jnp.linalg.norm(r, axis=-1, keepdims=True), 1e-12)
    score = losses.general_preference_score(c, r, block_scales=chosen.get("block_scales"))
    return score / loss_config.temperature
  log_w = jax.nn.log_softmax(_mixture_router_logits(chosen, rejected), axis=-1)
  delta = chosen["rewards"] - rejected["rewards"]
  return (jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(delta), axis=-1)
          - jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(-delta), axis=-1))


def preference_loss(loss_config: ml_collections.ConfigDict, chosen: Any, rejected: Any,
                    batch: Batch) -> jax.Array:
  """The configured pairwise loss, a scalar mean over the batch's valid pairs.

  Fields of `loss_config`: name (see `LOSS_HEADS`), use_margin (BT: subtract the batch's
  `margin`; scaled BT always uses it as the strength), label_smoothing (BT),
  center_rewards_coef (TRL-style centering penalty), l2_reward_coef (PAR's "Reg"),
  temperature and normalize (GPM).
  """
  name = _check_loss_name(loss_config)
  valid = batch["valid"]
  if name == "bradley_terry":
    margin = batch["margin"] if loss_config.use_margin else 0.0
    loss = losses.bradley_terry_loss(
        chosen, rejected, margin=margin,
        label_smoothing=float(loss_config.label_smoothing), mask=valid)
  elif name == "scaled_bradley_terry":
    loss = losses.scaled_bradley_terry_loss(chosen, rejected, batch["margin"], mask=valid)
  elif name == "general_preference":
    margin = batch["margin"] if loss_config.use_margin else 0.0
    return losses.general_preference_loss(
        chosen["embedding"], rejected["embedding"], margin=margin,
        temperature=loss_config.temperature, block_scales=chosen.get("block_scales"),
        normalize=loss_config.normalize, mask=valid)
  else:
    return losses.mixture_bradley_terry_loss(
        chosen["rewards"], rejected["rewards"], _mixture_router_logits(chosen, rejected),
        mask=valid)
  if loss_config.center_rewards_coef:
    loss += loss_config.center_rewards_coef * losses.reward_centering_penalty(
        chosen, rejected, mask=valid)
  if loss_config.l2_reward_coef:
    loss += loss_config.l2_reward_coef * losses.l2_reward_penalty(chosen, rejected, mask=valid)
  return loss


def make_train_step(apply_fn: ApplyFn, optimizer: optax.GradientTransformation,
                    loss_config: ml_collections.ConfigDict, *, num_members: int = 0
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """`train_step(state, batch) -> (new_state, metrics)`; jit it with the state's shardings.

  With `num_members` = M > 0, `apply_fn` returns outputs with a trailing member axis (see
  `ensemble_apply_members_last`) and the loss is the sum of the M members' losses, so that
  each member gets exactly its own gradient; metrics use the ensemble's mean logit. (Set
  `optim.grad_clip_norm` to 0 for fully independent members: global-norm clipping acts on the
  whole stacked pytree.)
  """
  _check_loss_name(loss_config)

  def train_step(state: TrainState, batch: Batch):
    def loss_fn(params):
      chosen, rejected = score_pairs(apply_fn, params, batch)
      loss = _over_members(lambda c, r: preference_loss(loss_config, c, r, batch),
                           num_members)(chosen, rejected)
      logits = _over_members(lambda c, r: pair_logits(loss_config, c, r),
                             num_members)(chosen, rejected)
      if num_members:
        loss, logits = jnp.sum(loss), jnp.mean(logits, axis=0)
      return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    zeros = jnp.zeros_like(logits)
    metrics = {
        "loss": loss / max(num_members, 1),
        "accuracy": rm_eval.pairwise_accuracy(logits, zeros, mask=batch["valid"]),
        "mean_margin": rm_eval.mean_reward_margin(logits, zeros, mask=batch["valid"]),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
    }
    return TrainState(state.step + 1, params, opt_state, state.rng), metrics

  return train_step


def make_eval_step(apply_fn: ApplyFn, loss_config: ml_collections.ConfigDict, *,
                   num_members: int = 0) -> Callable[[Any, Batch], jax.Array]:
  """`eval_step(params, batch) -> [B]` pair logits (see `pair_logits`); an ensemble's mean."""
  _check_loss_name(loss_config)

  def eval_step(params, batch):
    logits = _over_members(lambda c, r: pair_logits(loss_config, c, r),
                           num_members)(*score_pairs(apply_fn, params, batch))
    return jnp.mean(logits, axis=0) if num_members else logits

  return eval_step


def _over_members(fn: Callable, num_members: int) -> Callable:
  """`fn` itself, or `fn` vmapped over the trailing member axis of its inputs (out: [M, ...])."""
  return jax.vmap(fn, in_axes=-1, out_axes=0) if num_members else fn


def ensemble_apply_members_last(ensemble_apply: ApplyFn) -> ApplyFn:
  """Wraps `make_ensemble_apply`'s `[M, N, ...]` outputs as `[N, ..., M]`, so that pairs
  split along the leading axis like a single model's."""

  def apply(params, batch):
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, -1), ensemble_apply(params, batch))

  return apply
