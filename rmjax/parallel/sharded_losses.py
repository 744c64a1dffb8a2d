"""Losses that couple examples across the batch, with the batch split over mesh axes.

Under `jax.jit` with Auto mesh axes every loss of `rmjax.losses` is already computed
correctly on a sharded batch: XLA inserts whatever collectives the plain formula needs. The
forms here are the explicit `jax.shard_map` versions, for programs that manage their own
collectives (or want to be sure what moves between devices): each device works on its rows
and only small statistics cross devices, and each gives the single-device value.

  sharded_batch_whiten          psum of the valid count, the sum and the centred sum of
                                squares (three scalars)
  sharded_group_normalize       no communication: groups must lie whole on one device
                                (rows of [B, G], or runs of G adjacent rows of a flat [N]
                                batch with (N / shards) % G == 0; checked)
  sharded_normalize_then_sum    GDPO: per-group parts local, the final whitening as above
  sharded_plackett_luce_loss    psum of the loss sum and of the count of valid lists
  sharded_info_nce_loss         all-gather of the (normalised) positives and their mask:
                                [B / S, B] logits per device instead of [B, B]
  all_pairs_loss_sharded        the all-pairs loss: `rmjax.kernels.all_pairs_loss_sharded`
                                (rows local, columns all-gathered), re-exported here

Every function takes the global arrays, a `mesh` (default: the one set with `jax.set_mesh`)
and `axis_names`, the mesh axes the leading (example) axis is split over (default
('data', 'fsdp'), the batch axes of `rmjax.parallel`); the leading axis must be divisible by
their total size. Outputs with an example axis come back sharded like the inputs; scalars
are replicated. Values and gradients equal those of the single-device functions (tests on 8
simulated devices), up to float32 summation order.

Imports only jax, chex and `rmjax.losses` / `rmjax.kernels`.
"""

import functools
from collections.abc import Sequence
from typing import Optional

import chex
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from rmjax import losses
from rmjax.kernels import all_pairs_loss_sharded
from rmjax.losses import _reduction
from rmjax.losses import listwise as _listwise
from rmjax.losses import normalization as _normalization

# The batch axes of `rmjax.parallel.mesh` (not imported: this module needs jax only).
BATCH_AXES = ("data", "fsdp")

__all__ = (
    "all_pairs_loss_sharded",
    "check_whole_groups",
    "sharded_batch_whiten",
    "sharded_group_normalize",
    "sharded_info_nce_loss",
    "sharded_normalize_then_sum",
    "sharded_plackett_luce_loss",
)


def _mesh_and_axes(mesh, axis_names) -> tuple[object, tuple[str, ...], int]:
  """(mesh, axis names as a tuple, number of shards); the context mesh if `mesh` is None."""
  if mesh is None:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
      raise ValueError("mesh: pass a jax.sharding.Mesh or set one with jax.set_mesh(mesh); "
                       "got None and no mesh is set")
  axis_names = (axis_names,) if isinstance(axis_names, str) else tuple(axis_names)
  if not axis_names:
    raise ValueError("axis_names: expected at least one mesh axis to split the batch over")
  unknown = [a for a in axis_names if a not in mesh.axis_names]
  if unknown:
    raise ValueError(f"axis_names: {unknown} are not axes of the mesh {mesh.axis_names}")
  num_shards = 1
  for name in axis_names:
    num_shards *= mesh.shape[name]
  return mesh, axis_names, num_shards


def _shard_map(fn, mesh, in_specs, out_specs):
  """`jax.jit(jax.shard_map(fn))` that also accepts inputs not yet laid out as `in_specs`.

  Under jit, so that a call outside the caller's own jit compiles one program instead of
  running shard_map's body op by op (about 100 small compilations: 13 s on CPU for the
  InfoNCE loss of a 2 x 2 batch, 0.4 s jitted). Inside a caller's jit the inner jit is inlined.
  On Auto axes shard_map reshards its inputs itself; on Explicit axes (the default of
  `jax.make_mesh`) they must already match, so they are resharded first.
  """
  explicit = any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
  if not explicit:
    return jax.jit(mapped)

  def call(*args):
    if isinstance(mesh, jax.sharding.Mesh):
      args = [jax.reshard(a, jax.sharding.NamedSharding(mesh, s))
              for a, s in zip(args, in_specs)]
    else:
      args = [jax.reshard(a, s) for a, s in zip(args, in_specs)]
    return mapped(*args)

  return jax.jit(call)


def _check_split(x: jnp.ndarray, name: str, axis_names, num_shards: int) -> None:
  if x.ndim < 1 or x.shape[0] % num_shards:
    raise ValueError(
        f"`{name}` (shape {tuple(x.shape)}): the leading axis must split evenly over the "
        f"{num_shards} shards of mesh axes {axis_names}; pad it with masked rows to a "
        f"multiple of {num_shards}")


def _whiten_local(x, valid, eps, *, axis_names, ddof, shift_only):
  """Inside shard_map: whitens the local rows with the statistics of every shard."""
  dtype = x.dtype
  count = lax.psum(jnp.sum(valid, dtype=dtype), axis_names)
  mean = lax.psum(jnp.sum(x), axis_names) / jnp.maximum(count, 1)
  centred = jnp.where(valid, x - mean, 0)
  if shift_only:
    return centred
  std = _normalization.std_from_sums(lax.psum(jnp.sum(jnp.square(centred)), axis_names),
                                     count, ddof)
  safe_divide = _normalization._safe_divide  # pylint: disable=protected-access
  return jnp.where(valid, safe_divide(centred, std + eps), 0)


def sharded_batch_whiten(
    values: chex.Array,
    *,
    mesh: Optional[jax.sharding.Mesh] = None,
    axis_names: str | Sequence[str] = BATCH_AXES,
    mask: Optional[chex.Array] = None,
    shift_only: bool = False,
    ddof: int = 0,
    eps: chex.Numeric = 1e-6,
) -> jax.Array:
  """`rmjax.losses.batch_whiten` with the batch split over mesh axes.

    out = (x - mean_valid(x)) / (std_valid(x; ddof) + eps)      (shift_only: x - mean)

  with the mean and std over every valid entry of the *global* batch: each device sums its
  valid count, values and centred squares, and three `psum`s combine them (two passes, like
  the single-device version, so no catastrophic cancellation).

  Args:
    values: [N, ...] real array, split along N over `axis_names` (N divisible by their size).
    mesh: the mesh (default: the one set with `jax.set_mesh`).
    axis_names: mesh axes N is split over (default ('data', 'fsdp')).
    mask: optional bool (or {0, 1}) array of `values`' shape; True = valid.
    shift_only: Python bool (default False): only subtract the mean.
    ddof: Python int >= 0 (default 0).
    eps: scalar >= 0 (default 1e-6) added to the std.

  Returns:
    float32 [N, ...], sharded like `values`; 0 at masked entries.

  Raises:
    ValueError: N not divisible by the number of shards, bad mask, options or axes.
    TypeError: non-real `values`.

  References:
    Hu (2025), "REINFORCE++", arXiv:2501.03262 (batch whitening); Schulman et al. (2017),
    "Proximal Policy Optimization Algorithms", arXiv:1707.06347.

  >>> import jax, jax.numpy as jnp
  >>> mesh = jax.make_mesh((1, 1), ("data", "fsdp"))
  >>> sharded_batch_whiten(jnp.array([1.0, 3.0]), mesh=mesh).tolist()
  [-0.99999..., 0.99999...]
  """
  mesh, axis_names, num_shards = _mesh_and_axes(mesh, axis_names)
  values = _reduction.as_real_array(values, "values")
  valid = _reduction.validity_mask(mask, values.shape, "mask")
  if not isinstance(shift_only, bool):
    raise ValueError(
        f"`shift_only` must be a Python bool; got {type(shift_only).__name__} {shift_only!r}.")
  ddof = _normalization._check_ddof(ddof)  # pylint: disable=protected-access
  eps = _normalization._check_eps(eps)  # pylint: disable=protected-access
  _check_split(values, "values", axis_names, num_shards)
  x = jnp.where(valid, values.astype(_reduction.compute_dtype(values)), 0)
  spec = PartitionSpec(axis_names)
  fn = _shard_map(
      functools.partial(_whiten_local, axis_names=axis_names, ddof=ddof, shift_only=shift_only),
      mesh=mesh, in_specs=(spec, spec, PartitionSpec()), out_specs=spec)
  return fn(x, valid, jnp.asarray(eps, x.dtype))


def check_whole_groups(num_rows: int, group_size: int, num_shards: int) -> None:
  """Checks that a flat batch of `num_rows` rows, G = `group_size` adjacent rows per group,
  split evenly over `num_shards` devices, puts every group whole on one device.

  That holds iff num_rows % (num_shards * G) == 0: each device's N / S rows are then whole
  groups. (verl and TRL lay groups out this way: the G samples of a prompt adjacent.)

  >>> check_whole_groups(16, 4, 4)
  >>> check_whole_groups(16, 4, 8)
  Traceback (most recent call last):
  ...
  ValueError: ...
  """
  group_size = _normalization._check_group_size(group_size)  # pylint: disable=protected-access
  if num_rows % (num_shards * group_size):
    raise ValueError(
        f"groups must lie whole on one device: {num_rows} rows in groups of "
        f"group_size={group_size} split over {num_shards} shards leave "
        f"{num_rows / num_shards:g} rows per shard, not a multiple of {group_size}; make the "
        f"batch a multiple of {num_shards * group_size} rows (whole groups per device), or "
        f"use sharded_batch_whiten-style global statistics")


def sharded_group_normalize(
    values: chex.Array,
    *,
    mesh: Optional[jax.sharding.Mesh] = None,
    axis_names: str | Sequence[str] = BATCH_AXES,
    group_size: Optional[int] = None,
    mask: Optional[chex.Array] = None,
    scale: str = "std",
    ddof: int = 1,
    eps: chex.Numeric = 1e-6,
) -> jax.Array:
  """`rmjax.losses.group_normalize` (GRPO / Dr. GRPO) with the groups split over mesh axes.

    out_bi = (r_bi - mean_b) / (std_b + eps)     (scale="none": r_bi - mean_b)

  Layout requirement: every group lies whole on one device, so that the group statistics
  are local and nothing crosses devices. For `values` [B, G] (groups are rows) that is any
  split of B; for a flat [N] batch (pass `group_size` G; the G samples of a prompt adjacent)
  it needs N % (S * G) == 0 with S the number of shards (`check_whole_groups`, raised
  otherwise). Each device then calls `group_normalize` on its own groups.

  Args:
    values: [B, G] rewards, or [N] with `group_size`; split along the leading axis.
    mesh: the mesh (default: the one set with `jax.set_mesh`).
    axis_names: mesh axes the leading axis is split over (default ('data', 'fsdp')).
    group_size: None ([B, G] input) or the Python int G of a flat [N] input.
    mask: optional validity mask of `values`' shape.
    scale: "std" (default) or "none".
    ddof: Python int >= 0 (default 1).
    eps: scalar >= 0 (default 1e-6).

  Returns:
    float32 array of `values`' shape, sharded like it.

  Raises:
    ValueError: groups that would straddle devices, a leading axis not divisible by the
      shards, or the errors of `group_normalize`.

  References:
    Shao et al. (2024), "DeepSeekMath", arXiv:2402.03300 (GRPO); Liu et al. (2025),
    "Understanding R1-Zero-Like Training", arXiv:2503.20783 (Dr. GRPO).

  >>> import jax, jax.numpy as jnp
  >>> mesh = jax.make_mesh((1, 1), ("data", "fsdp"))
  >>> sharded_group_normalize(jnp.array([1.0, 0.0, 2.0, 5.0]), mesh=mesh, group_size=2,
  ...                         scale="none").tolist()
  [0.5, -0.5, -1.5, 1.5]
  """
  mesh, axis_names, num_shards = _mesh_and_axes(mesh, axis_names)
  values = _reduction.as_real_array(values, "values")
  if group_size is None:
    _reduction.check_rank(values, 2, "values", "[B, G] (or pass group_size for a flat [N])")
  else:
    _reduction.check_rank(values, 1, "values", "[N] with group_size")
    check_whole_groups(values.shape[0], group_size, num_shards)
  valid = _reduction.validity_mask(mask, values.shape, "mask")
  _check_split(values, "values", axis_names, num_shards)
  eps = _normalization._check_eps(eps)  # pylint: disable=protected-access

  def local(v, m, e):
    if group_size is not None:
      v, m = (_normalization.group_rows(a, group_size) for a in (v, m))
    out = _normalization.group_normalize(v, mask=m, scale=scale, ddof=ddof, eps=e)
    return out.reshape(-1) if group_size is not None else out

  spec = PartitionSpec(axis_names)
  fn = _shard_map(local, mesh=mesh, in_specs=(spec, spec, PartitionSpec()), out_specs=spec)
  return fn(values, valid, jnp.asarray(eps, jnp.float32))


def sharded_normalize_then_sum(
    rewards: chex.Array,
    *,
    mesh: Optional[jax.sharding.Mesh] = None,
    axis_names: str | Sequence[str] = BATCH_AXES,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    ddof: int = 1,
    eps: chex.Numeric = 1e-4,
) -> jax.Array:
  """`rmjax.losses.normalize_then_sum` (GDPO) with the prompts split over mesh axes.

    z_bik = (r_bik - mean_bk) / (std_bk + eps)      local: groups are whole on a device
    s_bi  = sum_k w_k z_bik                         local
    out   = (s - mean_valid(s)) / (std_valid(s) + eps)   global: psum of count, sum, squares

  Args:
    rewards: [B, G, K] rewards, split along B.
    mesh: the mesh (default: the one set with `jax.set_mesh`).
    axis_names: mesh axes B is split over (default ('data', 'fsdp')).
    weights: optional [K] weights (default all 1).
    mask: optional [B, G] validity mask.
    ddof: Python int >= 0 (default 1).
    eps: scalar >= 0 (default 1e-4, TRL).

  Returns:
    [B, G] float32, sharded along B; 0 at masked samples.

  References:
    Liu et al. (2026), "GDPO", arXiv:2601.05242; TRL `multi_objective_aggregation`.

  >>> import jax, jax.numpy as jnp
  >>> mesh = jax.make_mesh((1, 1), ("data", "fsdp"))
  >>> r = jnp.array([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 5.0]]])
  >>> sharded_normalize_then_sum(r, mesh=mesh).round(3).tolist()
  [[-0.866, 0.866], [-0.866, 0.866]]
  """
  mesh, axis_names, num_shards = _mesh_and_axes(mesh, axis_names)
  rewards = _reduction.as_real_array(rewards, "rewards")
  _reduction.check_rank(rewards, 3, "rewards", "[B, G, K]")
  num_rewards = rewards.shape[2]
  weights = (jnp.ones((num_rewards,), jnp.float32) if weights is None
             else _reduction.as_real_array(weights, "weights"))
  if tuple(weights.shape) != (num_rewards,):
    raise ValueError(f"`weights` must have shape [K] = ({num_rewards},); got shape "
                     f"{tuple(weights.shape)}.")
  valid = _reduction.validity_mask(mask, rewards.shape[:2], "mask")
  ddof = _normalization._check_ddof(ddof)  # pylint: disable=protected-access
  eps = _normalization._check_eps(eps)  # pylint: disable=protected-access
  _check_split(rewards, "rewards", axis_names, num_shards)
  dtype = _reduction.compute_dtype(rewards, weights)

  def local(r, w, m, e):
    per_reward = jnp.moveaxis(r.astype(dtype), -1, 0)  # [K, B_local, G]
    # TRL's rule for one-sample groups (std 0, so z = 0), as normalize_then_sum.
    z = _normalization._group_normalize(  # pylint: disable=protected-access
        per_reward, jnp.broadcast_to(m, per_reward.shape), ddof, e, scale="std",
        single="trl")
    summed = jnp.einsum("kbg,k->bg", z, w.astype(dtype))
    return _whiten_local(jnp.where(m, summed, 0), m, e, axis_names=axis_names, ddof=ddof,
                         shift_only=False)

  spec = PartitionSpec(axis_names)
  fn = _shard_map(local, mesh=mesh,
                     in_specs=(spec, PartitionSpec(), spec, PartitionSpec()), out_specs=spec)
  return fn(rewards, weights, valid, jnp.asarray(eps, dtype))


def sharded_plackett_luce_loss(
    scores: chex.Array,
    ranking: Optional[chex.Array] = None,
    *,
    mesh: Optional[jax.sharding.Mesh] = None,
    axis_names: str | Sequence[str] = BATCH_AXES,
    mask: Optional[chex.Array] = None,
    weights: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jax.Array:
  """`rmjax.losses.plackett_luce_loss` (ListMLE) with the lists split over mesh axes.

    loss_b = sum_k [ -s_pi(k) + logsumexp_{l >= k} s_pi(l) ]
    mean   = psum(sum_b w_b loss_b) / max(psum(#lists with >= 2 valid items), 1)

  Each device computes its lists' losses with `plackett_luce_loss`; the "mean" divides the
  global sum by the global number of valid lists (a list with fewer than 2 valid items
  counts for nothing, as in the single-device loss), not a mean of per-device means.

  Args:
    scores: [B, K] scores, split along B.
    ranking: optional [B, K] permutations (item indices best to worst); checked eagerly
      when concrete.
    mesh: the mesh (default: the one set with `jax.set_mesh`).
    axis_names: mesh axes B is split over (default ('data', 'fsdp')).
    mask: optional [B, K] item validity mask.
    weights: optional [B] per-list weights.
    reduction: "mean" (default), "sum" or "none" ([B] per-list losses, sharded along B).

  Returns:
    float32 scalar (replicated), or [B] for reduction="none".

  References:
    Plackett (1975); Luce (1959); Xia et al. (2008), "Listwise approach to learning to
    rank: theory and algorithm" (ListMLE).

  >>> import jax, jax.numpy as jnp
  >>> mesh = jax.make_mesh((1, 1), ("data", "fsdp"))
  >>> float(sharded_plackett_luce_loss(jnp.zeros((1, 3)), mesh=mesh))  # log 3!
  1.7917...
  """
  _reduction.check_reduction(reduction)
  mesh, axis_names, num_shards = _mesh_and_axes(mesh, axis_names)
  scores = _reduction.as_real_array(scores, "scores")
  _reduction.check_rank(scores, 2, "scores", "[B, K]")
  if ranking is None:
    ranking = jnp.broadcast_to(jnp.arange(scores.shape[1], dtype=jnp.int32), scores.shape)
  ranking = _listwise._check_ranking(ranking, scores)  # pylint: disable=protected-access
  valid = _reduction.validity_mask(mask, scores.shape, "mask")
  if weights is None:
    weights = jnp.ones(scores.shape[:1], jnp.float32)
  weights = _reduction.as_real_array(weights, "weights")
  if weights.shape != scores.shape[:1]:
    raise ValueError(f"`weights` must have shape [B] = {scores.shape[:1]}; got shape "
                     f"{tuple(weights.shape)}.")
  _check_split(scores, "scores", axis_names, num_shards)

  def local(s, r, m, w):
    if reduction == "none":
      return losses.plackett_luce_loss(s, r, mask=m, weights=w, reduction="none")
    total = lax.psum(losses.plackett_luce_loss(s, r, mask=m, weights=w, reduction="sum"),
                     axis_names)
    if reduction == "sum":
      return total
    # A list counts when it has >= 2 valid items (the rule of plackett_luce_loss).
    count = lax.psum(jnp.sum(jnp.sum(m, axis=1) >= 2, dtype=total.dtype), axis_names)
    return total / jnp.maximum(count, 1)

  spec = PartitionSpec(axis_names)
  fn = _shard_map(local, mesh=mesh, in_specs=(spec, spec, spec, spec),
                     out_specs=spec if reduction == "none" else PartitionSpec())
  return fn(scores, ranking, valid, weights)


def sharded_info_nce_loss(
    anchors: chex.Array,
    positives: chex.Array,
    *,
    mesh: Optional[jax.sharding.Mesh] = None,
    axis_names: str | Sequence[str] = BATCH_AXES,
    temperature: chex.Numeric = 0.05,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jax.Array:
  """`rmjax.losses.info_nce_loss` (SimCSE / InfoNCE, in-batch negatives), batch split.

    S_ij = cos(anchors_i, positives_j) / tau,   loss_i = logsumexp_{j valid} S_ij - S_ii

  Every positive is a negative for every other anchor, so each device all-gathers the
  normalised positives and their mask ([B, D] and [B] over the batch axes) and computes its
  [B / S, B] block of logits; the "mean" is the psum of the loss sum over the psum of the
  valid count. The gradient of the gathered positives flows back to their devices (the
  transpose of the all-gather, a reduce-scatter).

  Args:
    anchors: [B, D] representations, split along B.
    positives: [B, D] representations, row i the positive of anchor i, split along B.
    mesh: the mesh (default: the one set with `jax.set_mesh`).
    axis_names: mesh axes B is split over (default ('data', 'fsdp')).
    temperature: tau > 0 (default 0.05, SimCSE).
    mask: optional [B] validity mask (invalid rows are neither anchors nor negatives).
    reduction: "mean" (default), "sum" or "none" ([B] per-anchor losses, sharded).

  Returns:
    float32 scalar (replicated), or [B] for reduction="none".

  References:
    Gao, Yao & Chen (2021), "SimCSE", arXiv:2104.08821; van den Oord, Li & Vinyals (2018),
    "Representation Learning with Contrastive Predictive Coding", arXiv:1807.03748.

  >>> import jax, jax.numpy as jnp
  >>> mesh = jax.make_mesh((1, 1), ("data", "fsdp"))
  >>> x = jnp.eye(2)
  >>> float(sharded_info_nce_loss(x, x, mesh=mesh, temperature=1.0))  # log(e + 1) - 1
  0.3132...
  """
  _reduction.check_reduction(reduction)
  mesh, axis_names, num_shards = _mesh_and_axes(mesh, axis_names)
  temperature = _reduction.scalar_hyperparameter(temperature, "temperature")
  anchors = _reduction.as_real_array(anchors, "anchors")
  _reduction.check_rank(anchors, 2, "anchors", "[B, D]")
  positives = _reduction.as_real_array(positives, "positives")
  _reduction.check_same_shape(positives, "positives", anchors, "anchors")
  valid = _reduction.validity_mask(mask, anchors.shape[:1], "mask")
  _check_split(anchors, "anchors", axis_names, num_shards)
  dtype = _reduction.compute_dtype(anchors, positives)

  def local(a, p, v, tau):
    a = _reduction.safe_l2_normalize(jnp.where(v[:, None], a.astype(dtype), 0))
    p = _reduction.safe_l2_normalize(jnp.where(v[:, None], p.astype(dtype), 0))
    all_p = lax.all_gather(p, axis_names, tiled=True)  # [B, D]
    all_v = lax.all_gather(v, axis_names, tiled=True)  # [B]
    logits = (a @ all_p.T) / tau  # [B / S, B]
    logits = jnp.where(all_v[None, :], logits, -jnp.inf)
    logits = jnp.where(v[:, None], logits, 0)
    rows = a.shape[0]
    own = lax.axis_index(axis_names) * rows + jnp.arange(rows)
    positive = jnp.take_along_axis(logits, own[:, None], axis=1)[:, 0]
    per_anchor = jax.nn.logsumexp(logits, axis=-1) - positive
    if reduction == "none":
      return jnp.where(v, per_anchor, 0)
    total = lax.psum(jnp.sum(jnp.where(v, per_anchor, 0)), axis_names)
    if reduction == "sum":
      return total
    return total / jnp.maximum(lax.psum(jnp.sum(v, dtype=dtype), axis_names), 1)

  spec = PartitionSpec(axis_names)
  fn = _shard_map(local, mesh=mesh, in_specs=(spec, spec, spec, PartitionSpec()),
                     out_specs=spec if reduction == "none" else PartitionSpec())
  return fn(anchors, positives, valid, jnp.asarray(temperature, dtype))
