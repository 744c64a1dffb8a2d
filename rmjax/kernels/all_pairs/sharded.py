"""The all-pairs loss over mesh axes with `jax.shard_map`.

Scores are tiny (N floats), so each device keeps its rows (the items it
holds, split over `axis_names`) and all-gathers the columns. It computes its
rows against every column with a fast path's `pair_sums` (rows != columns, so
every tile is directed), and the partial results are combined:

  total   = psum_d (sum over the pairs whose winner row lives on device d)
  grad_i  = d/ds_i from i's row role (local) + psum_scatter of the column
            roles (each device's column sums, reduced and scattered back)
  |P|     = counted on the gathered items (`rules.num_preferred_pairs`)

so the result equals the single-device value. The LiPO-lambda factors need
every item of a group and are computed on the gathered items too. The
derivative is the same `custom_jvp` construction as the single-device loss
(see `dispatch`): value and gradient in one pass, the gradient sharded like
the scores.
"""

from collections.abc import Sequence
import functools
from typing import Any, NamedTuple, Optional, Union

import chex
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from rmjax.kernels.all_pairs import dispatch
from rmjax.kernels.all_pairs import rules


class _ShardConfig(NamedTuple):
  fast: dispatch.FastConfig
  mesh: Any
  axis_name: Any  # A mesh axis name, or a tuple of them.
  reduction: str


def _local(config: _ShardConfig, items: rules.PairItems, margin,
           with_grad: bool):
  """Inside shard_map: local rows against the gathered columns."""
  axis = config.axis_name
  gathered = rules.PairItems(*(
      None if f is None else lax.all_gather(f, axis, tiled=True)
      for f in items))
  rule = config.fast.rule
  if rule.weighting == "lipo_lambda":
    gain, inverse_discount = rules.lipo_lambda_factors(
        gathered.scores, gathered.labels, gathered.group_ids,
        gathered.valid)
    gathered = gathered._replace(gain=gain, inverse_discount=inverse_discount)
    num_local = items.scores.shape[0]
    start = lax.axis_index(axis) * num_local
    items = items._replace(
        gain=lax.dynamic_slice_in_dim(gain, start, num_local),
        inverse_discount=lax.dynamic_slice_in_dim(inverse_discount, start,
                                                  num_local))
  count = rules.num_preferred_pairs(gathered.labels, gathered.group_ids,
                                    gathered.valid)
  dtype = items.scores.dtype
  total, grad_rows, grad_cols = dispatch.pair_sums(
      config.fast, items, gathered, margin, same_items=False,
      with_grad=with_grad, dtype=dtype)
  total = lax.psum(total, axis)
  if not with_grad:
    return total, count
  grad = grad_rows + lax.psum_scatter(grad_cols, axis, scatter_dimension=0,
                                      tiled=True)
  return total, count, grad


def _lay_out(x, mesh, spec):
  """Reshards `x` to `spec` on a mesh with Explicit axes (Auto: shard_map does).

  On Auto axes shard_map reshards its inputs itself; on Explicit axes (the
  default of `jax.make_mesh`) they must already match `spec`.
  """
  if not any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
    return x
  if isinstance(mesh, jax.sharding.Mesh):
    return jax.reshard(x, NamedSharding(mesh, spec))
  return jax.reshard(x, spec)  # An abstract (context) mesh.


def _shard(config: _ShardConfig, items: rules.PairItems, margin,
           with_grad: bool):
  spec = PartitionSpec(config.axis_name)
  items = rules.PairItems(*(
      None if f is None else _lay_out(f, config.mesh, spec) for f in items))
  margin = _lay_out(margin, config.mesh, PartitionSpec())
  item_specs = rules.PairItems(*(None if f is None else spec for f in items))
  out_specs = (PartitionSpec(), PartitionSpec()) + (
      (spec,) if with_grad else ())
  fn = jax.shard_map(
      functools.partial(_local, config, with_grad=with_grad),
      mesh=config.mesh, in_specs=(item_specs, PartitionSpec()),
      out_specs=out_specs, check_vma=False)
  return fn(items, margin)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _sum_and_count(config: _ShardConfig, items: rules.PairItems, margin):
  return _shard(config, items, margin, with_grad=False)


@_sum_and_count.defjvp
def _sum_and_count_jvp(config, primals, tangents):
  items, margin = primals
  items_dot, _ = tangents
  total, count, grad = _shard(config, items, margin, with_grad=True)
  # Back to the layout of the (padded, unsharded) scores: on an Explicit axis
  # the transpose of the padding cannot slice a sharded dimension.
  grad = _lay_out(grad, config.mesh, PartitionSpec())
  return (total, count), (jnp.vdot(grad, items_dot.scores),
                          jnp.zeros_like(count))


def all_pairs_loss_sharded(
    scores: chex.Array,
    labels: chex.Array,
    *,
    mesh: Optional[jax.sharding.Mesh] = None,
    axis_names: Union[str, Sequence[str]] = ("data", "fsdp"),
    group_ids: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    weighting: str = "uniform",
    margin: chex.Numeric = 0.0,
    margin_rule: str = "constant",
    reduction: str = "mean",
    implementation: str = "auto",
    block_size: Optional[int] = None,
    interpret: Any = None,
) -> jax.Array:
  """`all_pairs_loss` with the items split over mesh axes (`shard_map`).

    loss = sum_{(i, j) in P} w_ij * -log sigmoid(s_i - s_j - m_ij) / normaliser

  exactly as `rmjax.kernels.all_pairs_loss` (same pair rules, "mean" over the
  global |P|, "sum"), computed with rows local and columns all-gathered. N is
  padded with invalid items to a multiple of the number of shards. Gradients
  flow to `scores`. The mesh and axis conventions are those of
  `rmjax.parallel` (which re-exports this function).

  Args:
    scores: [N] real scores (sharded or not; they are laid out over the axes).
    labels: [N] real labels.
    mesh: the `jax.sharding.Mesh` (default: the one set with `jax.set_mesh`).
    axis_names: the mesh axis, or axes, N is split over (default
      ("data", "fsdp"), the batch axes of `rmjax.parallel`).
    group_ids: optional [N] integer prompt ids.
    mask: optional [N] bool validity mask.
    weighting: "uniform", "label_gap" or "lipo_lambda" (computed from the
      scores).
    margin: real scalar (Python 0: no margin).
    margin_rule: "constant" or "label_gap".
    reduction: "mean" (default) or "sum".
    implementation: "auto" or a fast path ("chunked", "pallas_tpu",
      "pallas_gpu"); "auto" falls back as `dispatch.candidates`, minus the
      reference.
    block_size: tile side of the local computation.
    interpret: Pallas interpret mode (see `all_pairs_loss`).

  Returns:
    float32 scalar, replicated.

  Raises:
    ValueError: bad options (reduction "none" and pair weights are O(N^2) and
      not offered here), shapes, no mesh, or axes not in the mesh.

  References:
    Liu et al. (2024), "LiPO", arXiv:2402.01878 (the weights); Bradley &
    Terry (1952).

  >>> import jax, jax.numpy as jnp
  >>> from rmjax.kernels import all_pairs_loss_sharded
  >>> mesh = jax.make_mesh((1,), ("data",),
  ...                      axis_types=(jax.sharding.AxisType.Explicit,))
  >>> float(all_pairs_loss_sharded(jnp.array([1.0, 0.0]), jnp.array([1, 0]),
  ...                              mesh=mesh, axis_names="data"))
  0.3132...
  """
  dispatch.check_options(weighting, margin_rule, reduction, implementation,
                         block_size)
  if reduction == "none":
    raise ValueError(
        "`reduction` must be 'mean' or 'sum' for the sharded loss (an [N, N] "
        "output is not sharded); got 'none'.")
  if implementation == "reference":
    raise ValueError(
        "`implementation` must be 'auto' or a fast path for the sharded loss; "
        "got 'reference'.")
  if mesh is None:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
      raise ValueError(
          "`mesh` must be a jax.sharding.Mesh, or one must be set with "
          "jax.set_mesh(mesh); got None and no mesh is set.")
  axes = (axis_names,) if isinstance(axis_names, str) else tuple(axis_names)
  unknown = [a for a in axes if a not in mesh.axis_names]
  if not axes or unknown:
    raise ValueError(
        f"`axis_names` must be axes of the mesh {mesh.axis_names}; got "
        f"{axis_names!r}.")
  scores = dispatch.check_vector(scores, "scores", None, "real")
  num_items = scores.shape[0]
  labels = dispatch.check_vector(labels, "labels", num_items, "real")
  if group_ids is not None:
    group_ids = dispatch.check_vector(
        group_ids, "group_ids", num_items, "integer")
  if mask is not None:
    mask = dispatch.check_vector(mask, "mask", num_items, "mask")
  dtype = jnp.promote_types(jnp.float32, scores.dtype)
  margin_rule, margin = dispatch.margin_rule_and_value(margin, margin_rule,
                                                       dtype)
  return _sharded_loss(scores, labels, group_ids, mask, margin, mesh=mesh,
                       axis_name=axes[0] if len(axes) == 1 else axes,
                       weighting=weighting, margin_rule=margin_rule,
                       reduction=reduction, implementation=implementation,
                       block_size=block_size, interpret=interpret)


@functools.partial(jax.jit, static_argnames=(
    "mesh", "axis_name", "weighting", "margin_rule", "reduction",
    "implementation", "block_size", "interpret"))
def _sharded_loss(scores, labels, group_ids, mask, margin, *, mesh, axis_name,
                  weighting, margin_rule, reduction, implementation,
                  block_size, interpret):
  num_items = scores.shape[0]
  valid = (jnp.ones(num_items, bool) if mask is None
           else mask if mask.dtype == jnp.bool_ else mask != 0)
  # LiPO factors are computed inside, on the gathered items.
  items, dtype = rules.sanitize_items(scores, labels, group_ids, valid,
                                      "uniform")
  num_devices = 1
  for name in ((axis_name,) if isinstance(axis_name, str) else axis_name):
    num_devices *= mesh.shape[name]
  items = rules.pad_items(items, rules.round_up(max(num_items, 1),
                                                num_devices))
  rule = rules.PairRule(weighting, margin_rule)
  names = [n for n in dispatch.candidates(implementation)
           if n != "reference"]  # No num_items: N is split over devices.
  for position, name in enumerate(names):
    fast = dispatch.FastConfig(name, rule, block_size, interpret)
    try:
      dispatch.check_supported(fast, items.scores.shape[0], dtype)
    except NotImplementedError:
      if position == len(names) - 1:
        raise
      continue
    break
  config = _ShardConfig(fast, mesh, axis_name, reduction)
  if margin is None:
    margin = jnp.zeros((), dtype)
  total, count = _sum_and_count(config, items, margin)
  if reduction == "sum":
    return total
  return total / jnp.maximum(count, 1).astype(total.dtype)
