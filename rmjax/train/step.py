"""Jitted train and eval steps for reward models of every family.

Every model, whatever its head and its training data, is evaluated through one number per
held-out pair: the logit of P(chosen preferred over rejected). Bradley-Terry (also trained on
lists): r_c - r_r; GPM: s(c, r) / tau; mixture of BT: log P - log(1 - P); attribute
regression: the HelpSteer2 score difference; VPL: r(c, z) - r(r, z) with z the posterior
mean of the user's context pairs. Accuracy, calibration and the eval NLL are functions of
that logit, so the same evaluation serves every family. The training loss is chosen by name
from `config.loss` (a small registry), so a new variant is a new config, not a new script.

Data formats (`LOSS_FORMATS`): pair losses train on pair batches, list losses on K ranked
responses per prompt, VPL on user episodes (context pairs, then query pairs).
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
    "plackett_luce": "scalar",
    "all_pairs_bradley_terry": "scalar",
    "attribute_regression": "multi_attribute",
    "vpl": "latent_conditioned",
}
# loss name -> the data format it trains on (`rmjax.data.FORMATS`); the rest train on pairs.
LOSS_FORMATS = {
    "plackett_luce": "lists",
    "all_pairs_bradley_terry": "lists",
    "vpl": "user_episodes",
}
# Uses of a teacher ensemble's preference strength (config.strength.use), BT loss only.
STRENGTH_USES = ("none", "flip", "smoothing", "adaptive_margin")


def loss_format(loss_config: ml_collections.ConfigDict) -> str:
  """The data format ("pairs", "lists" or "user_episodes") the configured loss trains on."""
  return LOSS_FORMATS.get(_check_loss_name(loss_config), "pairs")


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

    bradley_terry, scaled_bradley_terry,
    plackett_luce, all_pairs_bradley_terry, vpl:  r_c - r_r  (VPL: rewards given z)
    general_preference:                   s(c, r) / tau,  s = <R v_c, v_r>   (GPM)
    mixture_bradley_terry:                log P - log(1 - P),  P = sum_k w_k sigma(r_c,k - r_r,k)
    attribute_regression:                 score(a_c) - score(a_r), the HelpSteer2 score of
                                          the predicted attributes
  """
  name = _check_loss_name(loss_config)
  if name in ("bradley_terry", "scaled_bradley_terry", "plackett_luce",
              "all_pairs_bradley_terry", "vpl"):
    return (chosen - rejected).astype(jnp.float32)
  if name == "attribute_regression":
    return (losses.helpsteer2_attribute_score(chosen)
            - losses.helpsteer2_attribute_score(rejected))
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
  temperature and normalize (GPM), bt_weight (attribute regression: the weight lambda of the
  BT term on the HelpSteer2 score; 0 = regression only), strength_use (BT, with a teacher
  ensemble's `strength_mean` u in the batch: "adaptive_margin" subtracts u from the gap,
  -log sigma(Delta - u); "smoothing" smooths each label by the teacher's doubt,
  a_i = min(sigma(-u_i), max_smoothing), loss (1 - a_i) L(c, r) + a_i L(r, c); "flip" and
  "none" change nothing here: flipping happens on the data).
  """
  name = _check_loss_name(loss_config)
  valid = batch["valid"]
  strength_use = loss_config.get("strength_use", "none")
  if strength_use not in STRENGTH_USES:
    raise ValueError(f"strength.use: expected one of {STRENGTH_USES}, got {strength_use!r}")
  if strength_use in ("smoothing", "adaptive_margin") and name != "bradley_terry":
    raise ValueError(f"strength.use={strength_use!r} applies to loss.name='bradley_terry', "
                     f"got {name!r}")
  if name == "bradley_terry":
    margin = batch["margin"] if loss_config.use_margin else 0.0
    if strength_use == "adaptive_margin":
      margin = margin + jax.lax.stop_gradient(batch["strength_mean"])
    if strength_use == "smoothing":
      if loss_config.label_smoothing:
        raise ValueError("strength.use='smoothing' sets a label smoothing per pair; leave "
                         f"loss.label_smoothing at 0, got {loss_config.label_smoothing}")
      doubt = jnp.minimum(jax.nn.sigmoid(-batch["strength_mean"]),
                          loss_config.get("max_smoothing", 0.45))
      # L_a(c, r) = (1 - a) L(c, r) + a L(r, c), with a per-pair a (one BT implementation).
      loss = (losses.bradley_terry_loss(chosen, rejected, margin=margin, weights=1.0 - doubt,
                                        mask=valid)
              + losses.bradley_terry_loss(rejected, chosen, margin=-margin, weights=doubt,
                                          mask=valid))
    else:
      loss = losses.bradley_terry_loss(
          chosen, rejected, margin=margin,
          label_smoothing=float(loss_config.label_smoothing), mask=valid)
  elif name == "scaled_bradley_terry":
    loss = losses.scaled_bradley_terry_loss(chosen, rejected, batch["margin"], mask=valid)
  elif name == "attribute_regression":
    predictions = jnp.concatenate([chosen, rejected], axis=0)
    targets = jnp.concatenate([batch["chosen_attributes"], batch["rejected_attributes"]], 0)
    attribute_mask = jnp.concatenate([batch["chosen_attribute_mask"],
                                      batch["rejected_attribute_mask"]], axis=0)
    return losses.joint_preference_regression_loss(
        losses.helpsteer2_attribute_score(chosen), losses.helpsteer2_attribute_score(rejected),
        predictions, targets, bt_weight=float(loss_config.bt_weight),
        attribute_mask=attribute_mask, mask=valid,
        regression_mask=jnp.concatenate([valid, valid], axis=0))
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


def score_lists(apply_fn: ApplyFn, params: Any, batch: Batch) -> jax.Array:
  """[B, K] scores of the K responses of each list (`tokens`, `mask` [B, K, L]), one pass."""
  b, k, length = batch["tokens"].shape
  scores = apply_fn(params, {"tokens": batch["tokens"].reshape(b * k, length),
                             "mask": batch["mask"].reshape(b * k, length)})
  return scores.reshape(b, k)


def list_loss(loss_config: ml_collections.ConfigDict, scores: jax.Array, batch: Batch
              ) -> jax.Array:
  """Plackett-Luce NLL of the ranking, or BT over all ordered pairs of each list."""
  b, k = scores.shape
  valid_items = jnp.broadcast_to(batch["valid"][:, None], (b, k))
  if loss_config.name == "plackett_luce":
    return losses.plackett_luce_loss(scores, batch["ranking"], mask=valid_items)
  # Grades from places: the best response gets K - 1, the worst 0.
  grades = jnp.zeros((b, k), jnp.float32).at[jnp.arange(b)[:, None], batch["ranking"]].set(
      jnp.arange(k - 1, -1, -1, dtype=jnp.float32)[None, :])
  return losses.all_pairs_bradley_terry_loss(
      scores.reshape(-1), grades.reshape(-1), group_ids=jnp.repeat(jnp.arange(b), k),
      mask=valid_items.reshape(-1), weighting=loss_config.get("list_weighting", "uniform"))


def ranked_pair_logits(scores: jax.Array, ranking: jax.Array) -> jax.Array:
  """[B, K(K-1)/2] logits s_better - s_worse of every ordered pair of each ranked list."""
  ordered = jnp.take_along_axis(scores, ranking, axis=1)
  i, j = jnp.triu_indices(scores.shape[1], k=1)
  return ordered[:, i] - ordered[:, j]


def vpl_pair_rewards(apply_fn: ApplyFn, embed_fn: ApplyFn, encode_fn: Callable, params: Any,
                     batch: Batch, *, context_pairs: int, key: jax.Array | None = None):
  """VPL on user episodes: (r(c, z) [B, Q], r(r, z) [B, Q], mean [B, Z], log_var [B, Z]).

  The first `context_pairs` pairs of each episode are embedded and encoded into the user's
  posterior q(z); z is sampled with `key` (training) or is the mean (key None, evaluation);
  the remaining Q query pairs are scored with r(y, z).
  """
  b, p, length = batch["chosen_tokens"].shape
  c, q = context_pairs, p - context_pairs

  def sequences(side, part):
    tokens, mask = batch[f"{side}_tokens"][:, part], batch[f"{side}_mask"][:, part]
    n = tokens.shape[1]
    return {"tokens": tokens.reshape(b * n, length), "mask": mask.reshape(b * n, length)}

  context = slice(0, c)
  embedded = embed_fn(params, {
      k: jnp.concatenate([sequences("chosen", context)[k], sequences("rejected", context)[k]])
      for k in ("tokens", "mask")})
  embedded = embedded.reshape(2, b, c, -1)
  mean, log_var = encode_fn(params, embedded[0], embedded[1], jnp.ones((b, c), bool))
  z = mean if key is None else losses.reparameterize(key, mean, log_var)
  query = slice(c, p)
  latent = jnp.repeat(z, q, axis=0)
  rewards = apply_fn(params, {
      "tokens": jnp.concatenate([sequences("chosen", query)["tokens"],
                                 sequences("rejected", query)["tokens"]]),
      "mask": jnp.concatenate([sequences("chosen", query)["mask"],
                               sequences("rejected", query)["mask"]]),
      "latent": jnp.concatenate([latent, latent])})
  rewards = rewards.reshape(2, b, q)
  return rewards[0], rewards[1], mean, log_var


def make_train_step(apply_fn: ApplyFn, optimizer: optax.GradientTransformation,
                    loss_config: ml_collections.ConfigDict, *, num_members: int = 0,
                    embed_fn: ApplyFn | None = None, encode_fn: Callable | None = None,
                    context_pairs: int = 0, member_batch_apply_fn: ApplyFn | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """`train_step(state, batch) -> (new_state, metrics)`; jit it with the state's shardings.

  The batch format follows `loss_format(loss_config)`: pairs, lists (train metrics over every
  ordered pair of each ranking) or user episodes (VPL; needs `embed_fn`
  (`make_embed_apply`), `encode_fn` (`make_encoder_apply`) and `context_pairs`; z is sampled
  with a key folded from the state's rng and step).

  With `num_members` = M > 0 (pair losses only), `apply_fn` returns outputs with a trailing
  member axis (see `ensemble_apply_members_last`) and the loss is the sum of the M members'
  losses, so that each member gets exactly its own gradient; metrics use the ensemble's mean
  logit. (Set `optim.grad_clip_norm` to 0 for fully independent members: global-norm clipping
  acts on the whole stacked pytree.) With `member_batch_apply_fn` (`make_ensemble_apply(
  graphdef, per_member_batch=True)`), the members see different data instead: the batch's
  B pairs are split into M consecutive slices of B / M and member m trains on slice m only
  (an ensemble with different data orders); metrics are over every member's own pairs.
  """
  data_format = loss_format(loss_config)
  if member_batch_apply_fn is not None and not num_members:
    raise ValueError("member_batch_apply_fn needs num_members > 0")
  if num_members and data_format != "pairs":
    raise ValueError(f"ensemble.num_members={num_members}: ensembles train pair losses; "
                     f"loss.name={loss_config.name!r} trains on {data_format}")
  if data_format == "user_episodes" and (embed_fn is None or encode_fn is None
                                         or context_pairs < 1):
    raise ValueError("loss.name='vpl' needs embed_fn, encode_fn and context_pairs >= 1")

  def loss_and_logits(params, batch, key):
    """(loss, logits, mask of the logits) for the batch's format."""
    if data_format == "lists":
      scores = score_lists(apply_fn, params, batch)
      logits = ranked_pair_logits(scores, batch["ranking"])
      return (list_loss(loss_config, scores, batch), logits,
              jnp.broadcast_to(batch["valid"][:, None], logits.shape))
    if data_format == "user_episodes":
      chosen, rejected, mean, log_var = vpl_pair_rewards(
          apply_fn, embed_fn, encode_fn, params, batch, context_pairs=context_pairs, key=key)
      q = chosen.shape[1]
      valid = jnp.repeat(batch["valid"], q)
      loss = losses.vpl_loss(chosen.reshape(-1), rejected.reshape(-1),
                             jnp.repeat(mean, q, axis=0), jnp.repeat(log_var, q, axis=0),
                             beta=loss_config.get("kl_beta", 0.01), mask=valid)
      return loss, chosen - rejected, valid.reshape(chosen.shape)
    if member_batch_apply_fn is not None:
      return _member_batches_loss(params, batch)
    chosen, rejected = score_pairs(apply_fn, params, batch)
    loss = _over_members(lambda c, r: preference_loss(loss_config, c, r, batch),
                         num_members)(chosen, rejected)
    logits = _over_members(lambda c, r: pair_logits(loss_config, c, r),
                           num_members)(chosen, rejected)
    if num_members:
      loss, logits = jnp.sum(loss), jnp.mean(logits, axis=0)
    return loss, logits, batch["valid"]

  def _member_batches_loss(params, batch):
    """Member m scores and trains on its own slice m of the batch: [B] -> [M, B / M]."""
    size = batch["valid"].shape[0]
    if size % num_members:
      raise ValueError(f"train.batch_size={size} must be a multiple of ensemble.num_members="
                       f"{num_members} when each member trains on its own slice")
    sliced = jax.tree.map(lambda x: x.reshape((num_members, -1) + x.shape[1:]), batch)
    per_member = sliced["valid"].shape[1]
    tokens = jnp.concatenate([sliced["chosen_tokens"], sliced["rejected_tokens"]], axis=1)
    mask = jnp.concatenate([sliced["chosen_mask"], sliced["rejected_mask"]], axis=1)
    outputs = member_batch_apply_fn(params, {"tokens": tokens, "mask": mask})
    chosen = jax.tree.map(lambda x: x[:, :per_member], outputs)
    rejected = jax.tree.map(lambda x: x[:, per_member:], outputs)
    member_loss = jax.vmap(lambda c, r, b: preference_loss(loss_config, c, r, b))
    member_logits = jax.vmap(lambda c, r: pair_logits(loss_config, c, r))
    logits = member_logits(chosen, rejected).reshape(size)
    return jnp.sum(member_loss(chosen, rejected, sliced)), logits, batch["valid"]

  def train_step(state: TrainState, batch: Batch):
    key = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      loss, logits, mask = loss_and_logits(params, batch, key)
      return loss, (logits, mask)

    (loss, (logits, mask)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    logits, mask = logits.reshape(-1), mask.reshape(-1)
    zeros = jnp.zeros_like(logits)
    metrics = {
        "loss": loss / max(num_members, 1),
        "accuracy": rm_eval.pairwise_accuracy(logits, zeros, mask=mask),
        "mean_margin": rm_eval.mean_reward_margin(logits, zeros, mask=mask),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
    }
    return TrainState(state.step + 1, params, opt_state, state.rng), metrics

  return train_step


def make_eval_step(apply_fn: ApplyFn, loss_config: ml_collections.ConfigDict, *,
                   num_members: int = 0, embed_fn: ApplyFn | None = None,
                   encode_fn: Callable | None = None, context_pairs: int = 0
                   ) -> Callable[[Any, Batch], jax.Array]:
  """`eval_step(params, batch) -> [B]` pair logits (see `pair_logits`); an ensemble's mean.

  Models trained on lists are evaluated on pairs. VPL evaluates user episodes: [B, Q] logits
  of the query pairs with z = the posterior mean of the context pairs.
  """
  data_format = loss_format(loss_config)

  def eval_step(params, batch):
    if data_format == "user_episodes":
      chosen, rejected, _, _ = vpl_pair_rewards(apply_fn, embed_fn, encode_fn, params, batch,
                                                context_pairs=context_pairs)
      return chosen - rejected
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
