"""The chunked XLA all-pairs loss: the CPU path and the fallback everywhere.

The [N, N] pair matrix is never built. A `lax.fori_loop` walks over square
tiles of `block_size` rows x `block_size` columns, and each tile is computed
with `rules.pair_loss_and_slope`, so memory is O(N + block_size^2).

What makes it fast on a CPU (measured on 2 AVX2 cores, N = 8192, value and
gradient; see benchmarks/pairwise_loss.py):

  * One pass gives the value *and* the gradient: softplus(-z) and sigmoid(-z)
    come from the same exp(-|z|), and each tile's slopes are summed into the
    gradient of both its rows (-slope) and its columns (+slope) right away.
    The "backward" is then a product with the cotangent: there is nothing
    left to recompute.
  * When rows and columns are the same items (the single-device case), only
    the tiles on and above the diagonal are visited: an unordered pair {i, j}
    is in P in at most one orientation, so each off-diagonal tile orients its
    pairs (`rules.orient_pairs`: the higher label wins) and covers both (i, j)
    and (j, i); a diagonal tile sees each of its pairs twice and is halved.
    This halves the exponentials.
  * Tiles whose blocks hold no common group (or no valid item) are skipped
    with a `lax.switch` (skip or compute): with sorted group ids, e.g. 512 prompts x 16 responses
    flattened, only the tiles near the diagonal are computed.
  * Tiles of 512 x 512 float32 (1 MiB per temporary) keep XLA's materialised
    per-tile temporaries in cache; row blocks against all columns at once were
    slower (temporaries of several MiB) and so were 128-wide tiles (loop
    overhead).
"""

from typing import Optional

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from rmjax.kernels.all_pairs import rules

DEFAULT_BLOCK_SIZE = 512


def _block(items: rules.PairItems, index, size: int, axis: int):
  """Fields of block `index` as [size, 1] (axis 0) or [1, size] (axis 1)."""
  def take(f):
    if f is None:
      return None
    piece = lax.dynamic_slice_in_dim(f, index * size, size)
    return piece[:, None] if axis == 0 else piece[None, :]
  return rules.PairItems(*(take(f) for f in items))


def pair_sums(
    rule: rules.PairRule,
    rows: rules.PairItems,
    cols: rules.PairItems,
    margin=None,
    *,
    same_items: bool,
    with_grad: bool,
    block_size: Optional[int] = None,
    dtype=jnp.float32,
) -> tuple[jax.Array, Optional[jax.Array], Optional[jax.Array]]:
  """Sum of the per-pair losses over row x column items, and its gradient.

    total = sum_{i in rows, j in cols} loss_ij     (rules.pair_loss_and_slope)
    grad_rows_i = d total / d s_i,  grad_cols_j = d total / d s_j

  Args:
    rule: the `rules.PairRule`.
    rows: sanitised [N_r] `rules.PairItems` (the winner side of the tiles).
    cols: sanitised [N_c] `rules.PairItems`.
    margin: scalar margin for `rule.margin_rule`.
    same_items: whether `rows` and `cols` are the same items; then only the
      upper-triangle tiles are visited and the whole gradient is returned in
      `grad_rows` (`grad_cols` is None).
    with_grad: whether to compute the gradients (else both are None).
    block_size: tile side (default 512); clipped to the (8-rounded) length.
    dtype: the compute dtype.

  Returns:
    (total, grad_rows [N_r] or None, grad_cols [N_c] or None).

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs import chunked, rules
  >>> items, _ = rules.sanitize_items(jnp.zeros(3), jnp.array([1.0, 0, 0]),
  ...                                 None, jnp.ones(3, bool), "uniform")
  >>> total, grad, _ = chunked.pair_sums(rules.PairRule(), items, items,
  ...                                    same_items=True, with_grad=True)
  >>> float(total), grad  # 2 log 2; d/ds = (-2, 1, 1) sigmoid(0)
  (1.3862..., Array([-1. ,  0.5,  0.5], dtype=float32))
  """
  num_rows, num_cols = rows.scores.shape[0], cols.scores.shape[0]
  if same_items and num_rows != num_cols:
    raise ValueError(
        f"same_items=True needs rows and cols of one length; got {num_rows} "
        f"and {num_cols}.")
  block_size = DEFAULT_BLOCK_SIZE if block_size is None else int(block_size)
  if block_size < 1:
    raise ValueError(f"`block_size` must be >= 1; got {block_size}.")
  if num_rows == 0 or num_cols == 0:
    return rules.empty_sums(num_rows, num_cols, same_items=same_items,
                            with_grad=with_grad, dtype=dtype)
  zero = jnp.zeros((), dtype)

  row_block = min(block_size, rules.round_up(num_rows, 8))
  col_block = min(block_size, rules.round_up(num_cols, 8))
  if same_items:
    row_block = col_block = max(row_block, col_block)
  rows_p = rules.pad_items(rows, rules.round_up(num_rows, row_block))
  cols_p = rules.pad_items(cols, rules.round_up(num_cols, col_block))
  num_row_blocks = rows_p.scores.shape[0] // row_block
  num_col_blocks = cols_p.scores.shape[0] // col_block
  if same_items:
    tile_i, tile_j = np.triu_indices(num_row_blocks)
  else:
    tile_i, tile_j = np.divmod(np.arange(num_row_blocks * num_col_blocks),
                               num_col_blocks)
  tile_i = jnp.asarray(tile_i, jnp.int32)
  tile_j = jnp.asarray(tile_j, jnp.int32)
  row_low, row_high = rules.block_group_ranges(rows_p, row_block)
  col_low, col_high = rules.block_group_ranges(cols_p, col_block)

  def skip(i, j):
    del i, j
    return zero, jnp.zeros(row_block, dtype), jnp.zeros(col_block, dtype)

  def directed(i, j):
    winner = _block(rows_p, i, row_block, 0)
    loser = _block(cols_p, j, col_block, 1)
    loss, slope = rules.pair_loss_and_slope(
        rule, winner, loser, margin, with_slope=with_grad, dtype=dtype)
    if not with_grad:
      return jnp.sum(loss), None, None
    return jnp.sum(loss), -jnp.sum(slope, axis=1), jnp.sum(slope, axis=0)

  def oriented(i, j):
    winner, loser, col_wins = rules.orient_pairs(
        _block(rows_p, i, row_block, 0), _block(cols_p, j, col_block, 1))
    loss, slope = rules.pair_loss_and_slope(
        rule, winner, loser, margin, with_slope=with_grad, dtype=dtype)
    # A diagonal tile holds both (i, j) and (j, i), oriented to the same
    # pair: it counts each of its pairs twice, and is halved.
    half = jnp.where(i == j, 0.5, 1.0).astype(dtype)
    if not with_grad:
      return half * jnp.sum(loss), None, None
    row_grad = jnp.where(col_wins, slope, -slope)
    return (half * jnp.sum(loss), half * jnp.sum(row_grad, axis=1),
            -half * jnp.sum(row_grad, axis=0))

  branches = [skip, oriented if same_items else directed]
  if not with_grad:
    branches = [lambda i, j, f=f: f(i, j)[0] for f in branches]

  def body(k, carry):
    i, j = tile_i[k], tile_j[k]
    overlap = rules.ranges_overlap(row_low[i], row_high[i], col_low[j],
                                   col_high[j])
    branch = overlap.astype(jnp.int32)
    if not with_grad:
      return carry + lax.switch(branch, branches, i, j)
    total, grad_rows, grad_cols = carry
    d_total, d_rows, d_cols = lax.switch(branch, branches, i, j)

    def add(vector, start, delta):
      size = delta.shape[0]
      return lax.dynamic_update_slice_in_dim(
          vector, lax.dynamic_slice_in_dim(vector, start, size) + delta,
          start, 0)

    grad_rows = add(grad_rows, i * row_block, d_rows)
    if same_items:
      grad_rows = add(grad_rows, j * col_block, d_cols)
    else:
      grad_cols = add(grad_cols, j * col_block, d_cols)
    return total + d_total, grad_rows, grad_cols

  num_tiles = int(tile_i.shape[0])
  if not with_grad:
    return lax.fori_loop(0, num_tiles, body, zero), None, None
  init = (zero, jnp.zeros(rows_p.scores.shape[0], dtype),
          None if same_items else jnp.zeros(cols_p.scores.shape[0], dtype))
  total, grad_rows, grad_cols = lax.fori_loop(0, num_tiles, body, init)
  grad_rows = grad_rows[:num_rows]
  grad_cols = None if same_items else grad_cols[:num_cols]
  return total, grad_rows, grad_cols
