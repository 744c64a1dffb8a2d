"""The all-pairs loss as Pallas GPU (Triton) kernels.

Two kernels, each a 1-D grid of programs that loop over the other side in
blocks (`lax.fori_loop`), with every tile computed by
`rules.pair_loss_and_slope`, the per-tile math every implementation shares:

  * the row kernel (program = a block of `BLOCK` winner rows, loop over
    column blocks of `LOOP_BLOCK`) accumulates the row sums of the loss and,
    under differentiation, of the slopes (d/ds of the row items);
  * the column kernel (program = a block of loser columns, loop over winner
    blocks) accumulates the column sums of the slopes (d/ds of the column
    items). It runs only under differentiation.

So the value costs one pass over the pairs and value + gradient two, with
O(N) memory, deterministic sums (no atomics), and each program's partial
sums kept in registers. Tiles whose blocks share no group (per-block group
ranges) are skipped with `lax.cond`. Block sizes are powers of two, as Triton
requires; N is padded with invalid items.

Pallas modules are imported inside the functions, so that importing
`rmjax.losses` does not import them. On CPU the kernels run with
`interpret=True`.
"""

import functools
from typing import Any, Optional

import jax
from jax import lax
import jax.numpy as jnp

from rmjax.kernels.all_pairs import rules

BLOCK = 64
LOOP_BLOCK = 128
NUM_WARPS = 4


def check_supported(num_items: int, dtype, block_size: Optional[int],
                    interpret: Any) -> None:
  """Raises NotImplementedError for cases these kernels do not cover."""
  del num_items, interpret
  if jnp.dtype(dtype) != jnp.float32:
    raise NotImplementedError(
        f"pallas_gpu computes in float32; got compute dtype {dtype}.")
  if block_size is not None and (block_size & (block_size - 1)):
    raise NotImplementedError(
        f"pallas_gpu needs a power-of-two block_size; got {block_size}.")
  try:
    from jax.experimental.pallas import triton  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:  # pragma: no cover
    raise NotImplementedError(f"Pallas Triton is not available: {e}") from e


def _kernel(own_low_ref, own_high_ref, other_low_ref, other_high_ref, *refs,
            rule, names, has_margin, with_loss, with_slope, program_is_winner,
            block, loop_block, num_loop_blocks):
  """One program: its block against every block of the other side."""
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top

  margin, own_refs, other_refs, out_refs = rules.split_kernel_refs(
      refs, len(names), has_margin)
  program = pl.program_id(0)
  own_low, own_high = own_low_ref[program], own_high_ref[program]
  own = {name: ref[...] for name, ref in zip(names, own_refs)}
  if program_is_winner:
    winner = rules.PairItems(**{k: v[:, None] for k, v in own.items()})
  else:
    loser = rules.PairItems(**{k: v[:, None] for k, v in own.items()})

  def tile(k, carry):
    other = {name: ref[pl.ds(k * loop_block, loop_block)][None, :]
             for name, ref in zip(names, other_refs)}
    if program_is_winner:
      args = (winner, rules.PairItems(**other))
    else:
      args = (rules.PairItems(**other), loser)
    loss, slope = rules.pair_loss_and_slope(
        rule, *args, margin, with_loss=with_loss, with_slope=with_slope)
    loss_sum, slope_sum = carry
    if with_loss:
      loss_sum = loss_sum + jnp.sum(loss, axis=1)
    if with_slope:
      slope_sum = slope_sum + jnp.sum(slope, axis=1)
    return loss_sum, slope_sum

  def body(k, carry):
    overlap = rules.ranges_overlap(own_low, own_high, other_low_ref[k],
                                   other_high_ref[k])
    return lax.cond(overlap, functools.partial(tile, k), lambda c: c, carry)

  zeros = jnp.zeros((block,), jnp.float32)
  loss_sum, slope_sum = lax.fori_loop(0, num_loop_blocks, body,
                                      (zeros, zeros))
  outputs = ([loss_sum] if with_loss else []) + (
      [slope_sum] if with_slope else [])
  for ref, value in zip(out_refs, outputs):
    ref[...] = value


def _pass(rule, own, other, margin, *, program_is_winner, with_loss,
          with_slope, block, loop_block, interpret):
  """Runs one kernel; returns the requested [N_own_padded] sums."""
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas import triton as plgpu  # pylint: disable=g-import-not-at-top

  names, own_values = rules.kernel_fields(own)
  _, other_values = rules.kernel_fields(other)
  own_len, other_len = own.scores.shape[0], other.scores.shape[0]
  own_low, own_high = rules.block_group_ranges(own, block)
  other_low, other_high = rules.block_group_ranges(other, loop_block)
  has_margin = rule.margin_rule is not None
  inputs = [own_low, own_high, other_low, other_high]
  if has_margin:
    inputs.append(jnp.reshape(margin, (1,)).astype(jnp.float32))
  full = lambda x: pl.BlockSpec(x.shape, lambda i: (0,) * x.ndim)
  in_specs = [full(x) for x in inputs]
  in_specs += [pl.BlockSpec((block,), lambda i: (i,)) for _ in own_values]
  in_specs += [full(x) for x in other_values]
  num_outputs = int(with_loss) + int(with_slope)
  kernel = functools.partial(
      _kernel, rule=rule, names=names, has_margin=has_margin,
      with_loss=with_loss, with_slope=with_slope,
      program_is_winner=program_is_winner, block=block,
      loop_block=loop_block, num_loop_blocks=other_len // loop_block)
  return pl.pallas_call(
      kernel,
      out_shape=[jax.ShapeDtypeStruct((own_len,), jnp.float32)] * num_outputs,
      grid=(own_len // block,),
      in_specs=in_specs,
      out_specs=[pl.BlockSpec((block,), lambda i: (i,))] * num_outputs,
      compiler_params=plgpu.CompilerParams(num_warps=NUM_WARPS,
                                           num_stages=2),
      interpret=bool(interpret),
      name=("all_pairs_rows_gpu" if program_is_winner
            else "all_pairs_cols_gpu"),
  )(*inputs, *own_values, *other_values)


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
  """Sum of the per-pair losses over rows x cols and its gradient (Triton).

  Same contract as `chunked.pair_sums`: (total, grad_rows, grad_cols), the
  whole gradient in `grad_rows` when `same_items`.

  Args:
    rule: the `rules.PairRule`.
    rows: sanitised [N_r] `rules.PairItems`.
    cols: sanitised [N_c] `rules.PairItems` (same fields present as `rows`).
    margin: scalar margin for `rule.margin_rule`.
    same_items: whether rows and cols are the same items.
    with_grad: whether to compute the gradients.
    block_size: the loop block (power of two; default 128; the program block
      is half of it).
    dtype: the compute dtype (float32 only).
    interpret: None (compiled for GPU) or True (interpret mode, e.g. on CPU).

  Returns:
    (total, grad_rows [N_r] or None, grad_cols [N_c] or None).

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs import pallas_gpu, rules
  >>> items, _ = rules.sanitize_items(jnp.zeros(3), jnp.array([1.0, 0, 0]),
  ...                                 None, jnp.ones(3, bool), "uniform")
  >>> total, grad, _ = pallas_gpu.pair_sums(
  ...     rules.PairRule(), items, items, same_items=True, with_grad=True,
  ...     interpret=True)
  >>> float(total), grad
  (1.3862..., Array([-1. ,  0.5,  0.5], dtype=float32))
  """
  num_rows, num_cols = rows.scores.shape[0], cols.scores.shape[0]
  check_supported(max(num_rows, num_cols), dtype, block_size, interpret)
  if num_rows == 0 or num_cols == 0:
    return rules.empty_sums(num_rows, num_cols, same_items=same_items,
                            with_grad=with_grad, dtype=jnp.float32)
  loop_block = LOOP_BLOCK if block_size is None else block_size
  block = max(loop_block // 2, 1)
  # Both sides are padded to multiples of the loop block (itself a multiple of
  # the program block), so each can serve as program side or loop side.
  rows_p = rules.pad_items(rows, rules.round_up(num_rows, loop_block))
  cols_p = rules.pad_items(cols, rules.round_up(num_cols, loop_block))
  kwargs = dict(block=block, loop_block=loop_block, interpret=interpret)
  row_outs = _pass(rule, rows_p, cols_p, margin, program_is_winner=True,
                   with_loss=True, with_slope=with_grad, **kwargs)
  total = jnp.sum(row_outs[0][:num_rows])
  if not with_grad:
    return total, None, None
  grad_rows = -row_outs[1][:num_rows]
  (col_slopes,) = _pass(rule, cols_p, rows_p, margin, program_is_winner=False,
                        with_loss=False, with_slope=True, **kwargs)
  grad_cols = col_slopes[:num_cols]
  if same_items:
    return total, grad_rows + grad_cols, None
  return total, grad_rows, grad_cols
