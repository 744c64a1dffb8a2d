"""ensemble: M Bradley-Terry reward models from different seeds, trained together.

  loss = sum_m -log sigma(r_m(c) - r_m(r))       eval on the mean logit over members

The members are one params pytree with a leading member axis, applied with `jax.vmap`
(`rmjax.models.init_ensemble`); each gets exactly its own gradient from the sum (set
`optim.grad_clip_norm` to 0 for fully independent members: global-norm clipping acts on the
whole stacked pytree). With `ensemble.member_batches`, member m trains on slice m of every
batch instead of the whole batch: an ensemble with different data orders. Conservative
optimisation against such ensembles: Coste et al. (2024).
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from rmjax import models
from rmjax.tasks.reward_model import pairwise
from rmjax.tasks.reward_model.family import Family
from rmjax.tasks.reward_model.family import Model
from rmjax.tasks.reward_model.family import model_config
from rmjax.tasks.reward_model.family import pair_metrics


def _config() -> dict:
  return {"loss": {**pairwise.BRADLEY_TERRY_LOSS, **pairwise.REWARD_PENALTIES},
          "ensemble": dict(num_members=4, member_batches=False)}


def _check_config(config: ml_collections.ConfigDict) -> None:
  members = config.ensemble.num_members
  if members < 1:
    raise ValueError(f"ensemble.num_members: expected >= 1, got {members}")
  if config.ensemble.member_batches and config.train.batch_size % members:
    raise ValueError(
        f"train.batch_size={config.train.batch_size} must be a multiple of "
        f"ensemble.num_members={members} with ensemble.member_batches=True (each member "
        "trains on its own slice of every batch)")


def members_last(ensemble_apply):
  """Wraps `make_ensemble_apply`'s `[M, N, ...]` outputs as `[N, ..., M]`, so that pairs
  split along the leading axis like a single model's."""

  def apply(params, batch):
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, -1), ensemble_apply(params, batch))

  return apply


def _build_model(family: Family, config: ml_collections.ConfigDict) -> Model:
  backbone = model_config(config)
  members = config.ensemble.num_members
  rules = tuple(tuple(rule) for rule in config.mesh.logical_axis_rules)
  return Model(
      init_params=functools.partial(models.init_ensemble, backbone, num_members=members,
                                    head=family.head_name(config)),
      param_specs=lambda mesh: models.ensemble_partition_specs(models.logical_partition_specs(
          models.abstract_param_state(backbone, head=family.head_name(config)), rules,
          mesh=mesh)),
      make_apply=lambda graphdef: members_last(models.make_ensemble_apply(graphdef)),
      num_members=members,
      model_config=backbone)


def _pair_loss(config: ml_collections.ConfigDict, chosen, rejected, batch):
  return pairwise.bradley_terry_pair_loss(config.loss, chosen, rejected, batch)


def _make_functions(config, model: Model, graphdef, shard):
  """Every member on the whole batch (the pair functions), or member m on slice m."""
  if not config.ensemble.member_batches:
    return pairwise.make_pair_functions(FAMILY, config, model, graphdef, shard)
  _, eval_fn = pairwise.make_pair_functions(FAMILY, config, model, graphdef, shard)
  member_batch_apply = shard(models.make_ensemble_apply(graphdef, per_member_batch=True))
  members = model.num_members

  def loss_fn(params, batch, key):
    """Member m scores and trains on its own slice m of the batch: [B] -> [M, B / M]."""
    del key
    size = batch["valid"].shape[0]
    sliced = jax.tree.map(lambda x: x.reshape((members, -1) + x.shape[1:]), batch)
    per_member = sliced["valid"].shape[1]
    tokens = jnp.concatenate([sliced["chosen_tokens"], sliced["rejected_tokens"]], axis=1)
    mask = jnp.concatenate([sliced["chosen_mask"], sliced["rejected_mask"]], axis=1)
    outputs = member_batch_apply(params, {"tokens": tokens, "mask": mask})
    chosen = jax.tree.map(lambda x: x[:, :per_member], outputs)
    rejected = jax.tree.map(lambda x: x[:, per_member:], outputs)
    loss = jnp.sum(jax.vmap(lambda c, r, b: _pair_loss(config, c, r, b))(chosen, rejected,
                                                                        sliced))
    logits = jax.vmap(lambda c, r: FAMILY.pair_logits(config, c, r))(chosen, rejected)
    return loss, pair_metrics(loss / members, logits.reshape(size), batch["valid"])

  return loss_fn, eval_fn


FAMILY = Family(
    name="ensemble",
    summary="4 BT models from different seeds trained together with vmap; mean logit",
    head="scalar",
    config=_config,
    check_config=_check_config,
    pair_loss=_pair_loss,
    pair_logits=pairwise.reward_difference,
    make_functions=_make_functions,
    build_model=_build_model,
    batch_fields=("margin",),
)
