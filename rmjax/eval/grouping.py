"""Per-group means (per subset, per domain, per property) via segment sums.

Pure jnp. Benchmarks report per-subset scores: score every row with a
per-row rule (`pairwise_correct`, `best_of_n_credit`, ...), then average the
rows of each subset with `group_mean`.
"""

import numbers
from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction


def check_num_groups(num_groups, name: str = "num_groups") -> int:
  """A static Python int >= 1 (not a bool, not a jax array); the error names it."""
  if (isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral)
      or isinstance(num_groups, jax.Array)):
    raise ValueError(
        f"`{name}` must be a static Python int >= 1; got "
        f"{type(num_groups).__name__} {num_groups!r}.")
  if num_groups < 1:
    raise ValueError(f"`{name}` must be >= 1; got {num_groups}.")
  return int(num_groups)


def integer_array(x, name: str, expected: str, rank: int) -> jnp.ndarray:
  """Checks that `x` is an integer (not bool) array of rank `rank`."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(
        f"`{name}` must be an integer array of shape {expected}; got dtype "
        f"{x.dtype}.")
  _reduction.check_rank(x, rank, name, expected)
  return x


def group_mean(
    values: chex.Array,
    group_ids: chex.Array,
    num_groups: int,
    *,
    mask: Optional[chex.Array] = None,
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Mean and count of the valid values of each group.

    count_g = sum_i v_i 1[id_i = g]
    mean_g  = sum_i v_i 1[id_i = g] x_i / max(count_g, 1)

  An empty group (no valid row) gets mean 0 and count 0: skip groups with
  count 0 when reporting, and weight groups by their counts to pool them.

  Args:
    values: [N] real per-row values (e.g. 0/1 correctness or a credit).
    group_ids: [N] integer group of each row, in [0, num_groups).
    num_groups: static Python int >= 1, the number G of groups.
    mask: optional [N] validity mask; invalid rows are ignored (any id, any
      value, inf and NaN included).

  Returns:
    (means [G], counts [G]), float32. A NaN value in a valid row makes its
    group's mean NaN (other groups are unaffected); a valid row whose id is
    outside [0, G) makes every mean and count NaN.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import group_mean
  >>> means, counts = group_mean(jnp.array([1.0, 0.0, 1.0]),
  ...                            jnp.array([0, 0, 2]), 3)
  >>> means.tolist(), counts.tolist()  # group 1 is empty
  ([0.5, 0.0, 1.0], [2.0, 0.0, 1.0])
  """
  num_groups = check_num_groups(num_groups)
  values = _reduction.as_real_array(values, "values")
  _reduction.check_rank(values, 1, "values", "[N]")
  group_ids = integer_array(group_ids, "group_ids", "[N]", 1)
  _reduction.check_same_shape(group_ids, "group_ids", values, "values")
  valid = _reduction.validity_mask(mask, values.shape, "mask")
  dtype = _reduction.compute_dtype(values)
  out_of_range = jnp.any(valid & ((group_ids < 0) | (group_ids >= num_groups)))
  ids = jnp.where(valid, group_ids, 0)
  weight = valid.astype(dtype)
  sums = jax.ops.segment_sum(jnp.where(valid, values.astype(dtype), 0), ids,
                             num_segments=num_groups)
  counts = jax.ops.segment_sum(weight, ids, num_segments=num_groups)
  means = sums / jnp.maximum(counts, 1)
  return (jnp.where(out_of_range, jnp.nan, means),
          jnp.where(out_of_range, jnp.nan, counts))
