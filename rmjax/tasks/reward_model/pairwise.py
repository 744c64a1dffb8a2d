"""What the pair families share: one forward pass per pair batch, the Bradley-Terry loss with
its options, and the train and eval functions built from a family's pair loss and logits.

A pair batch holds chosen and rejected sequences ([B, L] tokens and masks each); both sides
go through the model in one [2B, L] pass. With an ensemble (`Model.num_members` = M > 0)
every output has a trailing member axis: the loss is the sum of the M members' losses (each
member gets exactly its own gradient; the logged loss is their mean) and the pair logit is
the members' mean.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from rmjax import losses
from rmjax.tasks.reward_model.family import ApplyFn
from rmjax.tasks.reward_model.family import Batch
from rmjax.tasks.reward_model.family import Family
from rmjax.tasks.reward_model.family import Model
from rmjax.tasks.reward_model.family import pair_metrics

# The options of the Bradley-Terry loss (`bradley_terry_loss`), config.loss of the BT families.
BRADLEY_TERRY_LOSS = dict(use_margin=False, label_smoothing=0.0)
# Penalties on the reward scale, added to a scalar-reward pair loss when their coefficient is
# nonzero: TRL-style centring and PAR's "Reg" (`add_reward_penalties`).
REWARD_PENALTIES = dict(center_rewards_coef=0.0, l2_reward_coef=0.0)
# Uses of a teacher ensemble's preference strength (config.strength.use), BT only.
STRENGTH_USES = ("none", "flip", "smoothing", "adaptive_margin")


def score_pairs(apply_fn: ApplyFn, params: Any, batch: Batch,
                side_fields: tuple[str, ...] = (),
                input_fields: tuple[str, ...] = ("tokens", "mask")) -> tuple[Any, Any]:
  """Head outputs of the chosen and rejected sequences, from one forward pass of [2B, ...].

  Args:
    apply_fn: `apply(params, {'tokens': [N, L], 'mask': [N, L], ...})` -> [N] rewards or a
      dict of [N, ...] arrays (multi-output heads).
    params: model parameters.
    batch: a pair batch with `chosen_<f>` and `rejected_<f>` for every f of input_fields
      (default tokens and masks, each [B, L]).
    side_fields: per-pair fields [B, ...] given to the model with both sides (e.g.
      'user_ids').
    input_fields: the model's per-sequence inputs (default ("tokens", "mask"); cached
      features: ("features",) or ("features", "mask")).

  Returns:
    (chosen_outputs, rejected_outputs): the outputs split along the leading axis.
  """
  num_pairs = batch[f"chosen_{input_fields[0]}"].shape[0]
  inputs = {f: jnp.concatenate([batch[f"chosen_{f}"], batch[f"rejected_{f}"]], axis=0)
            for f in input_fields}
  for field in side_fields:
    inputs[field] = jnp.concatenate([batch[field], batch[field]], axis=0)
  outputs = apply_fn(params, inputs)
  return (jax.tree.map(lambda x: x[:num_pairs], outputs),
          jax.tree.map(lambda x: x[num_pairs:], outputs))


def reward_difference(config: ml_collections.ConfigDict, chosen: jax.Array,
                      rejected: jax.Array) -> jax.Array:
  """[B] pair logit of scalar-reward families: r_c - r_r (float32)."""
  del config
  return (chosen - rejected).astype(jnp.float32)


def add_reward_penalties(loss: jax.Array, loss_config: ml_collections.ConfigDict,
                         chosen: jax.Array, rejected: jax.Array, valid: jax.Array
                         ) -> jax.Array:
  """loss + center_rewards_coef * centring penalty + l2_reward_coef * PAR's L2 penalty
  (`REWARD_PENALTIES`; a term with a zero coefficient is left out, not multiplied by 0)."""
  if loss_config.center_rewards_coef:
    loss += loss_config.center_rewards_coef * losses.reward_centering_penalty(
        chosen, rejected, mask=valid)
  if loss_config.l2_reward_coef:
    loss += loss_config.l2_reward_coef * losses.l2_reward_penalty(chosen, rejected, mask=valid)
  return loss


def bradley_terry_pair_loss(loss_config: ml_collections.ConfigDict, chosen: jax.Array,
                            rejected: jax.Array, batch: Batch, *, strength_use: str = "none",
                            max_smoothing: float = 0.45) -> jax.Array:
  """Bradley-Terry loss of a pair batch, mean over its valid pairs, with its options.

    -log sigma(r_c - r_r - m)                 m = batch margin if use_margin, else 0
    adaptive_margin:  m += u                  u = a teacher's strength (`strength_mean`)
    smoothing:        (1 - a) L(c, r) + a L(r, c),  a = min(sigma(-u), max_smoothing)
    label_smoothing:  the same with one a for every pair (cDPO-style)

  plus `add_reward_penalties`. "flip" and "none" change nothing here: flipping happens on the
  data (`rmjax.tasks.reward_model.strength`).

  Args:
    loss_config: use_margin, label_smoothing, center_rewards_coef, l2_reward_coef.
    chosen: [B] rewards of the chosen responses.
    rejected: [B] rewards of the rejected responses.
    batch: the pair batch ('valid', 'margin', and 'strength_mean' for the strength uses).
    strength_use: one of `STRENGTH_USES`.
    max_smoothing: the cap of the per-pair smoothing.

  References:
    Bradley & Terry (1952); Wang et al. (2024) Secrets of RLHF II (strength uses).
  """
  if strength_use not in STRENGTH_USES:
    raise ValueError(f"strength.use: expected one of {STRENGTH_USES}, got {strength_use!r}")
  valid = batch["valid"]
  margin = batch["margin"] if loss_config.use_margin else 0.0
  if strength_use == "adaptive_margin":
    margin = margin + jax.lax.stop_gradient(batch["strength_mean"])
  if strength_use == "smoothing":
    if loss_config.label_smoothing:
      raise ValueError("strength.use='smoothing' sets a label smoothing per pair; leave "
                       f"loss.label_smoothing at 0, got {loss_config.label_smoothing}")
    doubt = jnp.minimum(jax.nn.sigmoid(-batch["strength_mean"]), max_smoothing)
    # L_a(c, r) = (1 - a) L(c, r) + a L(r, c), with a per-pair a (one BT implementation).
    loss = (losses.bradley_terry_loss(chosen, rejected, margin=margin, weights=1.0 - doubt,
                                      mask=valid)
            + losses.bradley_terry_loss(rejected, chosen, margin=-margin, weights=doubt,
                                        mask=valid))
  else:
    loss = losses.bradley_terry_loss(chosen, rejected, margin=margin,
                                     label_smoothing=float(loss_config.label_smoothing),
                                     mask=valid)
  return add_reward_penalties(loss, loss_config, chosen, rejected, valid)


def _over_members(fn: Callable, num_members: int) -> Callable:
  """`fn` itself, or `fn` vmapped over the trailing member axis of its inputs (out: [M, ...])."""
  return jax.vmap(fn, in_axes=-1, out_axes=0) if num_members else fn


def member_pair_logits(family: Family, config: ml_collections.ConfigDict, num_members: int,
                       chosen: Any, rejected: Any) -> jax.Array:
  """[B] pair logits of one model, or [M, B] of each member of an ensemble."""
  return _over_members(lambda c, r: family.pair_logits(config, c, r),
                       num_members)(chosen, rejected)


def make_pair_functions(family: Family, config: ml_collections.ConfigDict, model: Model,
                        graphdef: Any, shard: Callable) -> tuple[Callable, Callable]:
  """(loss_fn, eval_fn) of a pair family from its `pair_loss` and `pair_logits`.

  loss_fn(params, batch, key) -> (loss, metrics): the family's loss (an ensemble: the sum of
  its members' losses); metrics from the pair logits (an ensemble's mean logit).
  eval_fn(params, batch) -> [B] pair logits.
  """
  apply_fn = shard(model.make_apply(graphdef))
  members = model.num_members

  def outputs_and_logits(params, batch):
    chosen, rejected = score_pairs(apply_fn, params, batch, family.side_fields,
                                   model.input_fields)
    logits = member_pair_logits(family, config, members, chosen, rejected)
    return chosen, rejected, jnp.mean(logits, axis=0) if members else logits

  def loss_fn(params, batch, key):
    del key
    chosen, rejected, logits = outputs_and_logits(params, batch)
    loss = _over_members(lambda c, r: family.pair_loss(config, c, r, batch),
                         members)(chosen, rejected)
    if members:
      loss = jnp.sum(loss)
    return loss, pair_metrics(loss / max(members, 1), logits, batch["valid"])

  def eval_fn(params, batch):
    return outputs_and_logits(params, batch)[2]

  return loss_fn, eval_fn
