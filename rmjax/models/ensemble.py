"""Ensembles of reward models: one params pytree with a leading member axis.

An ensemble of M reward models (one config and one head, M initialisation seeds) is
stored as ONE params pytree whose every leaf has a leading member axis of size M, and
applied with `jax.vmap` over that axis:

  graphdef, stacked = init_ensemble(config, rng, num_members=4)   # leaves [M, ...]
  rewards = make_ensemble_apply(graphdef)(stacked, batch)         # [M, B]

Member m is exactly the model `init_reward_model(config, jax.random.split(rng, M)[m])`
(see `ensemble_member`). Because the stacked params are a single pytree, one optimiser
state, one checkpoint and one jitted step serve the whole ensemble, and the gradient of
a sum of per-member losses w.r.t. the stacked params is, member by member, each model's
own gradient. The per-member outputs feed the ensemble aggregations (mean, min,
mean - lambda * std, ...) and preference strength.

Sharding: the member axis has the logical name `ENSEMBLE_AXIS` ('ensemble'). By default
it maps to no mesh axis: every member is sharded exactly like a single model (over
'fsdp' / 'tensor'), each device holds its shard of every member, and the vmapped
computation runs all members on all devices. A rule ('ensemble', mesh_axis) instead
spreads the members over that mesh axis (M must be divisible by its size); see
`ensemble_partition_specs`.

References:
  Lakshminarayanan et al. (2017) Simple and scalable predictive uncertainty estimation
  using deep ensembles; Coste et al. (2024) Reward model ensembles help mitigate
  overoptimization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp  # noqa: F401  (used by the doctests)
from jax.sharding import PartitionSpec

from rmjax.models.reward_model import (
    Params,
    _check_config,
    _check_graphdef,
    init_reward_model,
    make_reward_apply,
)
from rmjax.models.transformer import TransformerConfig

# Logical name of the leading member axis of ensemble params.
ENSEMBLE_AXIS = "ensemble"


def _check_num_members(num_members: Any) -> None:
  if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members <= 0:
    raise ValueError(f"num_members must be a positive int, got {num_members!r}.")


def init_ensemble(
    config: TransformerConfig, rng: jax.Array, num_members: int, **model_kwargs: Any
) -> tuple[nnx.GraphDef, Params]:
  """Initialises M reward models from M seeds, stacked along a leading member axis.

  The member keys are `jax.random.split(rng, num_members)`; the members are built with
  `jax.vmap` over `init_reward_model`, so member m equals
  `init_reward_model(config, keys[m], **model_kwargs)[1]`.

  Args:
    config: the backbone's `TransformerConfig`.
    rng: a `jax.random` key.
    num_members: M >= 1.
    **model_kwargs: keyword arguments of `init_reward_model` (num_outputs, head,
      head_config), the same for every member.

  Returns:
    (graphdef, stacked_params): the graphdef of one member (static) and its params
    pytree with every leaf [M, ...]. Works under `jax.jit` (with `out_shardings`, see
    `ensemble_partition_specs`) and `jax.eval_shape`.

  >>> config = TransformerConfig(d_model=16, num_heads=2, num_layers=1)
  >>> graphdef, stacked = init_ensemble(config, jax.random.key(0), 3)
  >>> stacked["head"]["kernel"].shape
  (3, 16, 1)
  """
  _check_config(config)
  _check_num_members(num_members)
  keys = jax.random.split(rng, num_members)

  def init_member(key):
    return init_reward_model(config, key, **model_kwargs)

  graphdef, _ = jax.eval_shape(init_member, keys[0])
  stacked = jax.vmap(lambda key: init_member(key)[1])(keys)
  return graphdef, stacked


def abstract_ensemble_params(
    config: TransformerConfig, num_members: int, **model_kwargs: Any
) -> Params:
  """Shapes and dtypes of `init_ensemble`'s stacked params, without any FLOPs.

  Args:
    config: the backbone's `TransformerConfig`.
    num_members: M >= 1.
    **model_kwargs: keyword arguments of `init_reward_model`.

  Returns:
    The stacked params pytree with `jax.ShapeDtypeStruct` leaves [M, ...] (an orbax
    restore target).
  """
  _check_config(config)
  _check_num_members(num_members)
  return jax.eval_shape(
      lambda key: init_ensemble(config, key, num_members, **model_kwargs)[1],
      jax.random.key(0))


def _num_members(stacked_params: Any) -> int:
  """The common leading axis size M of every leaf; errors name `stacked_params`."""
  leaves = jax.tree_util.tree_leaves_with_path(stacked_params)
  if not leaves:
    raise ValueError("stacked_params has no array leaves.")
  sizes = {}
  for path, leaf in leaves:
    shape = getattr(leaf, "shape", ())
    if len(shape) == 0:
      raise ValueError(
          f"stacked_params{jax.tree_util.keystr(path)} is a scalar; every leaf of an "
          "ensemble needs a leading member axis [M, ...].")
    sizes.setdefault(shape[0], jax.tree_util.keystr(path))
  if len(sizes) > 1:
    raise ValueError(
        "stacked_params leaves disagree on the member axis size M: "
        + ", ".join(f"{name}: {size}" for size, name in sizes.items()) + ".")
  return next(iter(sizes))


def make_ensemble_apply(
    graphdef: nnx.GraphDef, *, per_member_batch: bool = False
) -> Callable[[Params, Mapping[str, jax.Array]], Any]:
  """Pure apply function of an ensemble: `make_reward_apply` vmapped over members.

  Args:
    graphdef: the first output of `init_ensemble` (or of `init_reward_model`).
    per_member_batch: False (default): every member scores the same batch
      ({'tokens': [B, L], 'mask': [B, L], ...}). True: every leaf of the batch has a
      leading member axis ({'tokens': [M, B, L], ...}) and member m scores batch[m]
      (e.g. different data orders per member, as in bootstrapped ensembles).

  Returns:
    apply(stacked_params, batch) -> per-member outputs with a leading axis M: rewards
    [M, B] for the default scalar head, or the head's outputs (array or dict of arrays)
    each with a leading M. Pure; use under `jax.jit` and `jax.grad`.

  >>> config = TransformerConfig(d_model=16, num_heads=2, num_layers=1)
  >>> graphdef, stacked = init_ensemble(config, jax.random.key(0), 3)
  >>> batch = {"tokens": jnp.ones((2, 4), jnp.int32), "mask": jnp.ones((2, 4), bool)}
  >>> jax.jit(make_ensemble_apply(graphdef))(stacked, batch).shape
  (3, 2)
  """
  _check_graphdef(graphdef)
  if not isinstance(per_member_batch, bool):
    raise TypeError(f"per_member_batch must be a bool, got {per_member_batch!r}.")
  member_apply = make_reward_apply(graphdef)
  vmapped = jax.vmap(member_apply, in_axes=(0, 0 if per_member_batch else None))

  def apply(stacked_params: Params, batch: Mapping[str, jax.Array]) -> Any:
    num_members = _num_members(stacked_params)
    if per_member_batch:
      if not isinstance(batch, Mapping):
        raise TypeError(
            f"batch must be a mapping with 'tokens' and 'mask', got {type(batch).__name__}.")
      for key, value in batch.items():
        shape = getattr(value, "shape", ())
        if len(shape) == 0 or shape[0] != num_members:
          raise ValueError(
              f"with per_member_batch=True every batch leaf needs a leading member axis "
              f"M={num_members}; batch[{key!r}] has shape {tuple(shape)}.")
    return vmapped(stacked_params, batch)

  return apply


def ensemble_member(stacked_params: Params, index: int) -> Params:
  """The params of member `index` (a pytree usable with `make_reward_apply`).

  >>> ensemble_member({"w": jnp.arange(6).reshape(3, 2)}, 1)["w"].tolist()
  [2, 3]
  """
  num_members = _num_members(stacked_params)
  if isinstance(index, bool) or not isinstance(index, int) or not (
      -num_members <= index < num_members):
    raise ValueError(f"index must be an int in [0, {num_members}), got {index!r}.")
  return jax.tree.map(lambda leaf: leaf[index], stacked_params)


def ensemble_partition_specs(
    param_specs: Params, rules: Sequence[tuple[str, Any]] | None = None
) -> Params:
  """Partition specs of stacked ensemble params: the member axis prepended.

  Each `PartitionSpec(*axes)` of a single model becomes
  `PartitionSpec(mesh_axis, *axes)`, where mesh_axis is what `rules` maps the logical
  axis `ENSEMBLE_AXIS` ('ensemble') to: None (replicated, members sharded like single
  models) when rules is None or has no 'ensemble' entry.

  Args:
    param_specs: the single model's specs, e.g. `logical_partition_specs(
      abstract_param_state(config, ...))`.
    rules: optional (logical_axis, mesh_axis) pairs, e.g.
      `DEFAULT_LOGICAL_AXIS_RULES + (("ensemble", "data"),)`; only the 'ensemble'
      entry is read here.

  Returns:
    The pytree of `PartitionSpec` for `init_ensemble`'s stacked params.

  Raises:
    TypeError: a leaf of param_specs is not a PartitionSpec.
    ValueError: the member axis's mesh axis is already used by a parameter's spec.

  >>> specs = ensemble_partition_specs({"w": PartitionSpec("fsdp", None)})
  >>> specs["w"] == PartitionSpec(None, "fsdp", None)
  True
  """
  mesh_axis = None
  if rules is not None:
    for logical, mesh in rules:
      if logical == ENSEMBLE_AXIS:
        mesh_axis = mesh
        break
  member_axes = () if mesh_axis is None else (
      (mesh_axis,) if isinstance(mesh_axis, str) else tuple(mesh_axis))

  def prepend(path, spec):
    name = jax.tree_util.keystr(path)
    if not isinstance(spec, PartitionSpec):
      raise TypeError(
          f"param_specs{name} must be a jax.sharding.PartitionSpec, got "
          f"{type(spec).__name__}.")
    used = set()
    for axes in spec:
      if axes is not None:
        used.update((axes,) if isinstance(axes, str) else axes)
    clash = sorted(used.intersection(member_axes))
    if clash:
      raise ValueError(
          f"parameter {name} (spec {spec}) already uses mesh axes {clash}, which the "
          f"'{ENSEMBLE_AXIS}' rule maps the member axis to; pick another mesh axis.")
    return PartitionSpec(mesh_axis, *spec)

  return jax.tree_util.tree_map_with_path(
      prepend, param_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
