"""The all-pairs loss as a Pallas TPU (Mosaic) kernel.

One kernel over the 2-D grid (row block i, column block j); rows are the
winner side, columns the loser side, and each tile is computed with
`rules.pair_loss_and_slope`, the per-tile math every implementation shares.

Layout (the one of the Pallas TPU flash-attention kernel for its segment
ids): per-item row vectors are stored lane-replicated, `[N_r, 128]`, and read
as `(block_rows, 128)` blocks that `jnp.tile` widens to the tile; column
vectors are stored sublane-replicated, `[8, N_c]`, and read as
`(8, block_cols)` blocks of which row 0 is used. All block shapes have their
last two dimensions divisible by (8, 128) (`block_shapes`, checked by a test).

Accumulation:
  * row sums of the loss and of the slopes (d/ds of the row items) are
    accumulated in their output blocks, resident in VMEM along j;
  * column sums of the slopes (d/ds of the column items) are accumulated in a
    `[num_col_blocks, 8, block_cols]` output that stays in VMEM for the whole
    grid (constant block index). This is what lets one pass produce the whole
    gradient, and why the grid is sequential ("arbitrary" on both axes) when
    the gradient is requested, and why the column count is capped
    (`MAX_COLUMNS`: 32 bytes of VMEM per column; larger N raises
    NotImplementedError and the dispatcher falls back to the chunked path).

Tiles whose blocks share no group (per-block group ranges, scalar-prefetched
into SMEM) are skipped with `pl.when`.

Pallas modules are imported inside the functions, so that importing
`rmjax.losses` does not import them. On CPU the kernel runs in TPU interpret
mode: pass `interpret=pltpu.InterpretParams()` or trace it under
`pltpu.force_tpu_interpret_mode()`.
"""

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from rmjax.kernels.all_pairs import rules

LANES = 128
SUBLANES = 8
DEFAULT_BLOCK_ROWS = 256
DEFAULT_BLOCK_COLS = 512
MAX_COLUMNS = 1 << 17


def _block_sizes(num_rows: int, num_cols: int,
                 block_size: Optional[int]) -> tuple[int, int]:
  block_rows = DEFAULT_BLOCK_ROWS if block_size is None else block_size
  block_cols = DEFAULT_BLOCK_COLS if block_size is None else block_size
  block_rows = rules.round_up(min(block_rows, num_rows), SUBLANES)
  block_cols = rules.round_up(min(block_cols, num_cols), LANES)
  return block_rows, block_cols


def block_shapes(num_rows: int, num_cols: int,
                 block_size: Optional[int] = None) -> dict[str, tuple]:
  """Every (block shape, array shape) the kernel uses, for a tiling check.

  Args:
    num_rows: number of row items.
    num_cols: number of column items.
    block_size: the `block_size` argument of `pair_sums`.

  Returns:
    {name: (block_shape, array_shape)} for the VMEM operands.

  >>> from rmjax.kernels.all_pairs.pallas_tpu import block_shapes
  >>> block_shapes(1000, 1000)["row_vectors"]
  ((256, 128), (1024, 128))
  """
  block_rows, block_cols = _block_sizes(num_rows, num_cols, block_size)
  rows_pad = rules.round_up(num_rows, block_rows)
  cols_pad = rules.round_up(num_cols, block_cols)
  return {
      "row_vectors": ((block_rows, LANES), (rows_pad, LANES)),
      "col_vectors": ((SUBLANES, block_cols), (SUBLANES, cols_pad)),
      "row_sums": ((block_rows, LANES), (rows_pad, LANES)),
      "col_sums": ((cols_pad // block_cols, SUBLANES, block_cols),
                   (cols_pad // block_cols, SUBLANES, block_cols)),
  }


def check_supported(num_items: int, dtype, block_size: Optional[int],
                    interpret: Any) -> None:
  """Raises NotImplementedError for cases this kernel does not cover."""
  del interpret
  if jnp.dtype(dtype) != jnp.float32:
    raise NotImplementedError(
        f"pallas_tpu computes in float32; got compute dtype {dtype}.")
  if num_items > MAX_COLUMNS:
    raise NotImplementedError(
        f"pallas_tpu keeps the column gradient in VMEM and supports up to "
        f"{MAX_COLUMNS} items; got {num_items}.")
  if block_size is not None and block_size % LANES:
    raise NotImplementedError(
        f"pallas_tpu needs a block_size divisible by {LANES}; got "
        f"{block_size}.")
  try:
    from jax.experimental.pallas import tpu  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:  # pragma: no cover
    raise NotImplementedError(f"Pallas TPU is not available: {e}") from e


def _kernel(row_low, row_high, col_low, col_high, *refs, rule, names,
            has_margin, with_grad, block_rows, block_cols):
  """One (row block, column block) tile; see the module docstring."""
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top

  margin, row_refs, col_refs, out_refs = rules.split_kernel_refs(
      refs, len(names), has_margin)
  loss_ref = out_refs[0]
  i, j = pl.program_id(0), pl.program_id(1)

  @pl.when(j == 0)
  def _init_rows():
    loss_ref[...] = jnp.zeros(loss_ref.shape, jnp.float32)
    if with_grad:
      out_refs[1][...] = jnp.zeros(out_refs[1].shape, jnp.float32)

  if with_grad:
    @pl.when((i == 0) & (j == 0))
    def _init_cols():
      out_refs[2][...] = jnp.zeros(out_refs[2].shape, jnp.float32)

  overlap = rules.ranges_overlap(row_low[i], row_high[i], col_low[j],
                                 col_high[j])

  @pl.when(overlap)
  def _tile():
    repeats = block_cols // LANES
    winner = rules.PairItems(**{
        name: jnp.tile(ref[...], (1, repeats))
        for name, ref in zip(names, row_refs)})
    loser = rules.PairItems(**{
        name: ref[...][:1, :] for name, ref in zip(names, col_refs)})
    loss, slope = rules.pair_loss_and_slope(rule, winner, loser, margin,
                                            with_slope=with_grad)
    loss_ref[...] += jnp.broadcast_to(jnp.sum(loss, axis=1, keepdims=True),
                                      (block_rows, LANES))
    if with_grad:
      out_refs[1][...] -= jnp.broadcast_to(
          jnp.sum(slope, axis=1, keepdims=True), (block_rows, LANES))
      out_refs[2][j] += jnp.broadcast_to(
          jnp.sum(slope, axis=0, keepdims=True), (SUBLANES, block_cols))


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
    interpret: Any = None,
) -> tuple[jax.Array, Optional[jax.Array], Optional[jax.Array]]:
  """Sum of the per-pair losses over rows x cols and its gradient (Pallas TPU).

  Same contract as `chunked.pair_sums`: (total, grad_rows, grad_cols), the
  whole gradient in `grad_rows` when `same_items`.

  Args:
    rule: the `rules.PairRule`.
    rows: sanitised [N_r] `rules.PairItems`.
    cols: sanitised [N_c] `rules.PairItems` (same fields present as `rows`).
    margin: scalar margin for `rule.margin_rule`.
    same_items: whether rows and cols are the same items.
    with_grad: whether to compute the gradients.
    block_size: tile side for both axes (multiple of 128); default 256 rows
      x 512 columns.
    dtype: the compute dtype (float32 only).
    interpret: None (compiled for TPU) or `pltpu.InterpretParams()`.

  Returns:
    (total, grad_rows [N_r] or None, grad_cols [N_c] or None).

  >>> import jax.numpy as jnp
  >>> from jax.experimental.pallas import tpu as pltpu
  >>> from rmjax.kernels.all_pairs import pallas_tpu, rules
  >>> items, _ = rules.sanitize_items(jnp.zeros(3), jnp.array([1.0, 0, 0]),
  ...                                 None, jnp.ones(3, bool), "uniform")
  >>> total, grad, _ = pallas_tpu.pair_sums(
  ...     rules.PairRule(), items, items, same_items=True, with_grad=True,
  ...     interpret=pltpu.InterpretParams())
  >>> float(total), grad
  (1.3862..., Array([-1. ,  0.5,  0.5], dtype=float32))
  """
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top

  num_rows, num_cols = rows.scores.shape[0], cols.scores.shape[0]
  check_supported(max(num_rows, num_cols), dtype, block_size, interpret)
  if num_rows == 0 or num_cols == 0:
    return rules.empty_sums(num_rows, num_cols, same_items=same_items,
                            with_grad=with_grad, dtype=jnp.float32)

  shapes = block_shapes(num_rows, num_cols, block_size)
  (block_rows, _), (rows_pad, _) = shapes["row_vectors"]
  (_, block_cols), (_, cols_pad) = shapes["col_vectors"]
  rows_p = rules.pad_items(rows, rows_pad)
  cols_p = rules.pad_items(cols, cols_pad)
  row_low, row_high = rules.block_group_ranges(rows_p, block_rows)
  col_low, col_high = rules.block_group_ranges(cols_p, block_cols)
  names, row_values = rules.kernel_fields(rows_p)
  col_names, col_values = rules.kernel_fields(cols_p)
  if names != col_names:
    raise ValueError(f"rows and cols need the same fields: {names} vs "
                     f"{col_names}")
  num_row_blocks = rows_pad // block_rows
  num_col_blocks = cols_pad // block_cols

  row_vectors = [jnp.broadcast_to(v[:, None], (rows_pad, LANES))
                 for v in row_values]
  col_vectors = [jnp.broadcast_to(v[None, :], (SUBLANES, cols_pad))
                 for v in col_values]
  row_spec = pl.BlockSpec((block_rows, LANES), lambda i, j, *_: (i, 0))
  col_spec = pl.BlockSpec((SUBLANES, block_cols), lambda i, j, *_: (0, j))
  has_margin = rule.margin_rule is not None
  margin_inputs = []
  margin_specs = []
  if has_margin:
    margin_inputs = [jnp.reshape(margin, (1,)).astype(jnp.float32)]
    margin_specs = [pl.BlockSpec(memory_space=pltpu.SMEM)]

  out_shape = [jax.ShapeDtypeStruct((rows_pad, LANES), jnp.float32)]
  out_specs = [pl.BlockSpec((block_rows, LANES), lambda i, j, *_: (i, 0))]
  if with_grad:
    out_shape += [
        jax.ShapeDtypeStruct((rows_pad, LANES), jnp.float32),
        jax.ShapeDtypeStruct((num_col_blocks, SUBLANES, block_cols),
                             jnp.float32)]
    out_specs += [
        pl.BlockSpec((block_rows, LANES), lambda i, j, *_: (i, 0)),
        pl.BlockSpec((num_col_blocks, SUBLANES, block_cols),
                     lambda i, j, *_: (0, 0, 0))]
  semantics = (("arbitrary", "arbitrary") if with_grad
               else ("parallel", "arbitrary"))
  kernel = functools.partial(
      _kernel, rule=rule, names=names, has_margin=has_margin,
      with_grad=with_grad, block_rows=block_rows, block_cols=block_cols)
  outs = pl.pallas_call(
      kernel,
      out_shape=out_shape,
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=4,
          grid=(num_row_blocks, num_col_blocks),
          in_specs=(margin_specs + [row_spec] * len(names)
                    + [col_spec] * len(names)),
          out_specs=out_specs),
      compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
      interpret=False if interpret is None else interpret,
      name="all_pairs_loss_tpu",
  )(row_low, row_high, col_low, col_high, *margin_inputs, *row_vectors,
    *col_vectors)
  total = jnp.sum(outs[0][:num_rows, 0])
  if not with_grad:
    return total, None, None
  grad_rows = outs[1][:num_rows, 0]
  grad_cols = outs[2][:, 0, :].reshape(-1)[:num_cols]
  if same_items:
    return total, grad_rows + grad_cols, None
  return total, grad_rows, grad_cols
