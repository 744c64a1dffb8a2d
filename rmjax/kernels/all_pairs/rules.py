"""The pair rules of the all-pairs preference loss: their one definition.

Every implementation of the all-pairs loss (the plain reference, the chunked
XLA loop, the Pallas TPU and GPU kernels, the `shard_map` form) and the public
helpers of `rmjax.losses.listwise` compute the per-pair quantities with the
functions of this module, so that there is exactly one definition of which
ordered pairs count and what each one costs.

Items are described by per-item vectors (`PairItems`): scores s, labels y,
validity v, optional group ids g and, for LiPO-lambda, the per-item factors
G (gain) and 1/D (inverse discount). A pair function receives the *winner*
items and the *loser* items as arrays that broadcast against each other (rows
`[R, 1]` against columns `[1, C]` in the reference and the XLA tiles, lane- or
sublane-replicated blocks inside the Pallas kernels) and returns per-pair
values of the broadcast shape.

The rules, for the ordered pair (i = winner, j = loser):

  P_ij  = v_i and v_j and g_i == g_j and y_i > y_j        (`preferred_pairs`)
  w_ij  = 1                                   weighting "uniform"
        = y_i - y_j                           weighting "label_gap"
        = |G_i - G_j| |1/D_i - 1/D_j|         weighting "lipo_lambda"
  m_ij  = 0                                   no margin
        = m                                   margin_rule "constant"
        = m (y_i - y_j)                       margin_rule "label_gap"
  z_ij  = s_i - s_j - m_ij
  loss_ij  = P_ij w_ij softplus(-z_ij) = -P_ij w_ij log sigmoid(z_ij)
  slope_ij = P_ij w_ij sigmoid(-z_ij)  = -d loss_ij / d s_i = d loss_ij / d s_j

With weighting "label_gap" this is the scaled Bradley-Terry loss of
HelpSteer2-Preference, -|strength| log sigmoid(Delta), with the label gap as
the strength; margin_rule "constant" is BT with a margin, -log sigmoid(Delta
- m) (HelpSteer2-Preference's margin variant, and the "adaptive margin" when
m comes from an ensemble); margin_rule "label_gap" makes the margin grow with
the label gap (m per grade of difference).

Softplus and sigmoid share one exponential, e = exp(-|z|):
softplus(-z) = max(-z, 0) + log1p(e) and sigmoid(-z) = (e if z >= 0 else 1)
/ (1 + e), both exact in float32 for |z| up to 1e4 and beyond.

The tiling helpers the tiled implementations share are here too: padding
(`pad_items`), the per-block group ranges and their overlap test that skip
tiles, the all-zero result of an empty side (`empty_sums`), and the operand
layout of the Pallas kernels (`kernel_fields`, `split_kernel_refs`).
"""

from typing import NamedTuple, Optional

import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

WEIGHTINGS = ("uniform", "label_gap", "lipo_lambda")
MARGIN_RULES = ("constant", "label_gap")


class PairItems(NamedTuple):
  """Per-item inputs of the pair rules (any mutually broadcastable shapes).

  Attributes:
    scores: s, float.
    labels: y, float (higher = better).
    valid: v, bool (or {0, 1} integers).
    group_ids: optional g, integers; None: one group.
    gain: optional G = 2^y - 1 (LiPO-lambda), float.
    inverse_discount: optional 1/D(tau) = 1/log2(1 + tau) (LiPO-lambda).
  """
  scores: jax.Array
  labels: jax.Array
  valid: jax.Array
  group_ids: Optional[jax.Array] = None
  gain: Optional[jax.Array] = None
  inverse_discount: Optional[jax.Array] = None


class PairRule(NamedTuple):
  """The static choice of pair weight and margin (hashable).

  Attributes:
    weighting: "uniform", "label_gap" or "lipo_lambda".
    margin_rule: None (no margin), "constant" or "label_gap".
  """
  weighting: str = "uniform"
  margin_rule: Optional[str] = None


def check_rule(rule: PairRule) -> PairRule:
  """Raises ValueError unless `rule` names a known weighting and margin rule."""
  if not isinstance(rule.weighting, str) or rule.weighting not in WEIGHTINGS:
    raise ValueError(
        f"`weighting` must be one of {WEIGHTINGS}; got {rule.weighting!r}.")
  if rule.margin_rule is not None and (
      not isinstance(rule.margin_rule, str)
      or rule.margin_rule not in MARGIN_RULES):
    raise ValueError(
        f"`margin_rule` must be one of {MARGIN_RULES}; got "
        f"{rule.margin_rule!r}.")
  return rule


def as_rows(items: PairItems) -> PairItems:
  """[N] fields as [N, 1] (the winner side of an [N, N] layout)."""
  return PairItems(*(None if f is None else f[:, None] for f in items))


def as_cols(items: PairItems) -> PairItems:
  """[N] fields as [1, N] (the loser side of an [N, N] layout)."""
  return PairItems(*(None if f is None else f[None, :] for f in items))


def _is_valid(valid):
  return valid if valid.dtype == jnp.bool_ else valid != 0


def comparable_pairs(winner: PairItems, loser: PairItems) -> jax.Array:
  """Pairs of valid items of the same group (diagonal included), as bool.

    C_ij = v_i and v_j and g_i == g_j

  Args:
    winner: `PairItems` of the first item of each pair (e.g. fields `[N, 1]`).
    loser: `PairItems` of the second item (e.g. fields `[1, N]`).

  Returns:
    bool array of the broadcast shape.

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs.rules import PairItems, comparable_pairs
  >>> items = PairItems(jnp.zeros(3), jnp.zeros(3), jnp.array([1, 1, 0]),
  ...                   group_ids=jnp.array([0, 0, 1]))
  >>> rows = PairItems(*(None if f is None else f[:, None] for f in items))
  >>> cols = PairItems(*(None if f is None else f[None, :] for f in items))
  >>> comparable_pairs(rows, cols).astype(int)
  Array([[1, 1, 0],
         [1, 1, 0],
         [0, 0, 0]], dtype=int32)
  """
  both = _is_valid(winner.valid) & _is_valid(loser.valid)
  if winner.group_ids is not None:
    both &= winner.group_ids == loser.group_ids
  return both


def preferred_pairs(winner: PairItems, loser: PairItems) -> jax.Array:
  """The ordered pairs of the loss: comparable, and the winner labelled higher.

    P_ij = v_i and v_j and g_i == g_j and y_i > y_j

  Ties (equal labels) and an item with itself give no pair.

  Args:
    winner: `PairItems` of the preferred side (e.g. fields `[N, 1]`).
    loser: `PairItems` of the other side (e.g. fields `[1, N]`).

  Returns:
    bool array of the broadcast shape.

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs.rules import PairItems, preferred_pairs
  >>> y = jnp.array([2.0, 1.0, 1.0])
  >>> rows = PairItems(jnp.zeros((3, 1)), y[:, None], jnp.ones((3, 1), bool))
  >>> cols = PairItems(jnp.zeros((1, 3)), y[None, :], jnp.ones((1, 3), bool))
  >>> preferred_pairs(rows, cols).astype(int)
  Array([[0, 1, 1],
         [0, 0, 0],
         [0, 0, 0]], dtype=int32)
  """
  return comparable_pairs(winner, loser) & (winner.labels > loser.labels)


def lipo_pair_weight(winner: PairItems, loser: PairItems) -> jax.Array:
  """The LiPO-lambda weight of a pair from the per-item factors.

    Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|

  Symmetric in its arguments; see `lipo_lambda_factors` for G and 1/D.

  Args:
    winner: `PairItems` with `gain` and `inverse_discount` set.
    loser: idem.

  Returns:
    float array of the broadcast shape (not masked: combine with
    `comparable_pairs` or `preferred_pairs`).

  References:
    Liu et al. (2024), "LiPO: Listwise Preference Optimization through
    Learning-to-Rank", arXiv:2402.01878.

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs.rules import PairItems, lipo_pair_weight
  >>> a = PairItems(0.0, 2.0, True, gain=3.0, inverse_discount=1.0)
  >>> b = PairItems(0.0, 0.0, True, gain=0.0, inverse_discount=0.5)
  >>> float(lipo_pair_weight(a, b))  # 3 * 0.5
  1.5
  """
  if winner.gain is None or winner.inverse_discount is None:
    raise ValueError(
        "weighting 'lipo_lambda' needs the per-item `gain` and "
        "`inverse_discount` (see `lipo_lambda_factors`); got None.")
  return (jnp.abs(winner.gain - loser.gain)
          * jnp.abs(winner.inverse_discount - loser.inverse_discount))


def pair_weight(rule: PairRule, winner: PairItems,
                loser: PairItems) -> Optional[jax.Array]:
  """w_ij of `rule.weighting`; None for "uniform" (a weight of 1)."""
  if rule.weighting == "uniform":
    return None
  if rule.weighting == "label_gap":
    return winner.labels - loser.labels
  if rule.weighting == "lipo_lambda":
    return lipo_pair_weight(winner, loser)
  raise ValueError(
      f"`weighting` must be one of {WEIGHTINGS}; got {rule.weighting!r}.")


def pair_margin(rule: PairRule, winner: PairItems, loser: PairItems,
                margin) -> Optional[jax.Array]:
  """m_ij of `rule.margin_rule` (None: no margin)."""
  if rule.margin_rule is None:
    return None
  if rule.margin_rule == "constant":
    return margin
  if rule.margin_rule == "label_gap":
    return margin * (winner.labels - loser.labels)
  raise ValueError(
      f"`margin_rule` must be one of {MARGIN_RULES}; got "
      f"{rule.margin_rule!r}.")


def pair_loss_and_slope(
    rule: PairRule,
    winner: PairItems,
    loser: PairItems,
    margin=None,
    *,
    with_loss: bool = True,
    with_slope: bool = False,
    dtype=jnp.float32,
) -> tuple[Optional[jax.Array], Optional[jax.Array]]:
  """Per-pair loss and slope of the all-pairs loss (the per-tile math).

    z_ij     = s_i - s_j - m_ij
    loss_ij  = P_ij w_ij softplus(-z_ij)          (= -P w log sigmoid(z))
    slope_ij = P_ij w_ij sigmoid(-z_ij)           (= -d loss / d s_i
                                                   =  d loss / d s_j)

  with P, w and m from `rule` (see the module docstring). Softplus and
  sigmoid share one exponential exp(-|z|); both are exact for |z| up to 1e4.
  Non-pairs are exactly 0 (selected with `where`, so junk in them is harmless
  as long as it is finite; sanitise masked inputs before calling).

  Args:
    rule: the `PairRule`.
    winner: `PairItems` of the preferred side, broadcastable against `loser`.
    loser: `PairItems` of the other side.
    margin: scalar m, used when `rule.margin_rule` is not None.
    with_loss: whether to compute loss_ij.
    with_slope: whether to compute slope_ij.
    dtype: the compute dtype (float32 unless the inputs are float64).

  Returns:
    (loss, slope), each an array of the broadcast shape or None.

  References:
    Bradley & Terry (1952), "Rank analysis of incomplete block designs".
    Burges et al. (2005), "Learning to rank using gradient descent".
    Wang et al. (2024), "HelpSteer2-Preference: Complementing Ratings with
    Preferences", arXiv:2410.01257 (margin, scaled BT).
    Liu et al. (2024), "LiPO: Listwise Preference Optimization through
    Learning-to-Rank", arXiv:2402.01878.

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs.rules import (PairItems, PairRule,
  ...                                            pair_loss_and_slope)
  >>> a = PairItems(jnp.array(0.0), jnp.array(1.0), jnp.array(True))
  >>> b = PairItems(jnp.array(0.0), jnp.array(0.0), jnp.array(True))
  >>> loss, slope = pair_loss_and_slope(PairRule(), a, b, with_slope=True)
  >>> float(loss), float(slope)  # log 2, sigmoid(0)
  (0.6931..., 0.5)
  >>> loss, _ = pair_loss_and_slope(PairRule(margin_rule="constant"), a, b,
  ...                               3.0)
  >>> float(loss)  # softplus(3)
  3.0485...
  """
  preferred = preferred_pairs(winner, loser)
  weight = pair_weight(rule, winner, loser)
  z = winner.scores - loser.scores
  m = pair_margin(rule, winner, loser, margin)
  if m is not None:
    z = z - m
  z = z.astype(dtype)
  # max(z, -z) rather than abs(z): the same value, but autodiff (which the
  # reference relies on) splits max's derivative evenly at z = 0, so the
  # gradient of the loss at a tie in score is the exact -sigmoid(0) = -1/2,
  # where abs'(0) = 1 would give -1.
  e = jnp.exp(-jnp.maximum(z, -z))
  loss = slope = None
  if with_loss:
    loss = jnp.maximum(-z, 0) + jnp.log1p(e)
    if weight is not None:
      loss = loss * weight
    loss = jnp.where(preferred, loss, 0)
  if with_slope:
    slope = jnp.where(z >= 0, e, 1) / (1 + e)
    if weight is not None:
      slope = slope * weight
    slope = jnp.where(preferred, slope, 0)
  return loss, slope


def orient_pairs(rows: PairItems,
                 cols: PairItems) -> tuple[PairItems, PairItems, jax.Array]:
  """Orients the unordered pairs {row, col} of a tile: winner = higher label.

  Used by the triangular XLA loop, which visits each unordered pair once: for
  every (row i, col j) the winner is the item with the larger label (ties
  keep the row, and are no pair anyway), so `pair_loss_and_slope(rule, winner,
  loser)` gives the loss of whichever of (i, j) and (j, i) is in P. Only the
  scores and labels are swapped: every other field enters the rules
  symmetrically and keeps its row / column layout.

  Args:
    rows: `PairItems` with fields `[R, 1]`.
    cols: `PairItems` with fields `[1, C]`.

  Returns:
    (winner, loser, col_wins): `PairItems` whose scores and labels are
    `[R, C]` (the other fields as given), and the bool `[R, C]` array telling
    where the column item is the winner.

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs.rules import PairItems, orient_pairs
  >>> rows = PairItems(jnp.array([[5.0]]), jnp.array([[0.0]]),
  ...                  jnp.array([[True]]))
  >>> cols = PairItems(jnp.array([[7.0, 9.0]]), jnp.array([[1.0, -1.0]]),
  ...                  jnp.array([[True, True]]))
  >>> winner, loser, col_wins = orient_pairs(rows, cols)
  >>> winner.scores, col_wins
  (Array([[7., 5.]], dtype=float32), Array([[ True, False]], dtype=bool))
  """
  col_wins = cols.labels > rows.labels

  def pick(a, b):
    return jnp.where(col_wins, b, a), jnp.where(col_wins, a, b)

  winner_scores, loser_scores = pick(rows.scores, cols.scores)
  winner_labels, loser_labels = pick(rows.labels, cols.labels)
  # The other fields enter the rules symmetrically (v_i and v_j, g_i == g_j,
  # |G_i - G_j| |1/D_i - 1/D_j|): they are passed unswapped, as [R, 1] and
  # [1, C], which saves the selects.
  winner = rows._replace(scores=winner_scores, labels=winner_labels)
  loser = cols._replace(scores=loser_scores, labels=loser_labels)
  return winner, loser, col_wins


# Sorting helpers: O(N log N) per-item quantities, shared by every path.


def _canonical_zero(x):
  # -0.0 and 0.0 compare equal but sort apart (lax.sort orders floats
  # totally); make them one value so that sorting agrees with `==`.
  return jnp.where(x == 0, jnp.zeros_like(x), x)


def _no_constant_folding(operands):
  # Labels closed over by a jitted function are constants, and XLA would
  # constant-fold the sort at compile time, which takes seconds for N ~ 1e4.
  return lax.optimization_barrier(operands)


def _runs_start(keys_changed):
  """Index of the first element of the run each sorted position is in."""
  position = jnp.arange(keys_changed.shape[0], dtype=jnp.int32)
  return lax.cummax(jnp.where(keys_changed, position, 0))


def _changed(*sorted_keys):
  """True where any key differs from the previous position (and at 0)."""
  changed = jnp.zeros(sorted_keys[0].shape, bool).at[0].set(True)
  for k in sorted_keys:
    changed = changed.at[1:].set(changed[1:] | (k[1:] != k[:-1]))
  return changed


def _group_key(group_ids, valid):
  invalid = (~_is_valid(valid)).astype(jnp.int32)
  groups = (jnp.zeros(invalid.shape, jnp.int32) if group_ids is None
            else group_ids.astype(jnp.int32))
  return invalid, groups


def num_preferred_pairs(labels: jax.Array,
                        group_ids: Optional[jax.Array],
                        valid: jax.Array) -> jax.Array:
  """|P|, the number of ordered pairs of the loss, in O(N log N).

    |P| = sum_i #{j : v_i, v_j, g_j == g_i, y_j < y_i}

  computed by sorting the items by (validity, group, label): an item's count
  is its position minus the start of its group's run, where positions in a
  run of equal labels count from the run's start. This is the "mean"
  normaliser of every fast path (the reference counts its [N, N] matrix).

  Args:
    labels: [N] float labels (masked entries already sanitised).
    group_ids: optional [N] integer group ids.
    valid: [N] bool validity.

  Returns:
    float32 scalar (exact up to 2^24 pairs, relative error ~1e-7 beyond).

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs.rules import num_preferred_pairs
  >>> # Group 0: labels (2, 1, 1) -> 2 pairs; group 1: (0, 5) -> 1 pair.
  >>> float(num_preferred_pairs(jnp.array([2.0, 1, 1, 0, 5]),
  ...                           jnp.array([0, 0, 0, 1, 1]),
  ...                           jnp.ones(5, bool)))
  3.0
  """
  if labels.shape[0] == 0:
    return jnp.zeros((), jnp.float32)
  invalid, groups = _group_key(group_ids, valid)
  y = _canonical_zero(labels)
  invalid_s, groups_s, y_s = lax.sort(
      _no_constant_folding((invalid, groups, y)), num_keys=3)
  group_start = _runs_start(_changed(invalid_s, groups_s))
  tie_start = _runs_start(_changed(invalid_s, groups_s, y_s))
  below = jnp.where(invalid_s == 0, tie_start - group_start, 0)
  return jnp.sum(below.astype(jnp.float32))


def lipo_lambda_factors(scores: jax.Array, labels: jax.Array,
                        group_ids: Optional[jax.Array],
                        valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-item LiPO-lambda factors G and 1/D(tau), without gradient, O(N log N).

    G_i = 2^y_i - 1,   1/D(tau_i) = 1 / log2(1 + tau_i)

  tau_i is the 1-based rank of item i by current score, descending, among
  the valid items of its group; ties in score are broken by position (the
  earlier index first, a stable sort), so the ranks are a permutation of
  1..n in every group. The pair weight is `lipo_pair_weight`:
  |G_i - G_j| |1/D_i - 1/D_j|. Both factors are under `stop_gradient`.

  Args:
    scores: [N] current scores (masked entries already sanitised).
    labels: [N] graded labels.
    group_ids: optional [N] integer group ids.
    valid: [N] bool validity.

  Returns:
    (gain [N], inverse_discount [N]) in the dtype of `scores`.

  References:
    Liu et al. (2024), "LiPO: Listwise Preference Optimization through
    Learning-to-Rank", arXiv:2402.01878.
    Wang et al. (2018), "The LambdaLoss Framework for Ranking Metric
    Optimization".

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs.rules import lipo_lambda_factors
  >>> gain, inv_d = lipo_lambda_factors(jnp.array([1.0, 3.0, 2.0]),
  ...                                   jnp.array([2.0, 1.0, 0.0]), None,
  ...                                   jnp.ones(3, bool))
  >>> gain.tolist(), inv_d.round(4).tolist()  # ranks tau = (3, 1, 2)
  ([3.0, 1.0, 0.0], [0.5, 1.0, 0.6309])
  """
  scores = lax.stop_gradient(scores)
  labels = lax.stop_gradient(labels)
  num_items = scores.shape[0]
  gain = jnp.exp2(labels) - 1.0
  if num_items == 0:
    return gain, jnp.zeros_like(scores)
  invalid, groups = _group_key(group_ids, valid)
  index = jnp.arange(num_items, dtype=jnp.int32)
  invalid_s, groups_s, _, index_s = lax.sort(
      _no_constant_folding((invalid, groups, _canonical_zero(-scores), index)),
      num_keys=4)
  position = jnp.arange(num_items, dtype=jnp.int32)
  tau_sorted = position - _runs_start(_changed(invalid_s, groups_s)) + 1
  tau = jnp.zeros(num_items, jnp.int32).at[index_s].set(tau_sorted)
  inverse_discount = 1.0 / jnp.log2(1.0 + tau.astype(scores.dtype))
  return gain, inverse_discount


def sanitize_items(scores: jax.Array, labels: jax.Array,
                   group_ids: Optional[jax.Array], valid: jax.Array,
                   weighting: str,
                   lipo_factors=None) -> tuple[PairItems, jnp.dtype]:
  """Upcasts and sanitises [N] inputs into `PairItems` (the common preamble).

  Scores and labels are cast to the compute dtype (at least float32) and
  replaced by 0 where `valid` is False, *before* anything is computed, so
  that junk (inf, NaN) in masked entries changes neither value nor gradient.
  Labels, and the LiPO factors, get no gradient. For weighting
  "lipo_lambda" the factors are computed with `lipo_lambda_factors` unless
  given.

  Args:
    scores: [N] real scores.
    labels: [N] real labels.
    group_ids: optional [N] integer group ids.
    valid: [N] bool validity.
    weighting: the rule's weighting.
    lipo_factors: optional (gain [N], inverse_discount [N]).

  Returns:
    (items, dtype).
  """
  dtype = jnp.promote_types(jnp.float32, scores.dtype)
  dtype = jnp.promote_types(dtype, labels.dtype) if jnp.issubdtype(
      labels.dtype, jnp.floating) else dtype
  valid = _is_valid(valid)
  s = jnp.where(valid, scores.astype(dtype), 0)
  y = lax.stop_gradient(jnp.where(valid, labels.astype(dtype), 0))
  g = None if group_ids is None else jnp.where(
      valid, group_ids.astype(jnp.int32), 0)
  gain = inverse_discount = None
  if weighting == "lipo_lambda":
    if lipo_factors is None:
      gain, inverse_discount = lipo_lambda_factors(s, y, g, valid)
    else:
      gain, inverse_discount = lipo_factors
      chex.assert_shape(
          [gain, inverse_discount], s.shape,
          custom_message="`lipo_factors` must be two [N] arrays with N = "
          f"{s.shape[0]}", exception_type=ValueError)
    gain = lax.stop_gradient(jnp.where(valid, gain.astype(dtype), 0))
    inverse_discount = lax.stop_gradient(
        jnp.where(valid, inverse_discount.astype(dtype), 0))
  return PairItems(s, y, valid, g, gain, inverse_discount), dtype


def pad_items(items: PairItems, length: int) -> PairItems:
  """Pads every field of [N] items to `length` with invalid items (zeros)."""
  extra = length - items.scores.shape[0]
  if extra == 0:
    return items
  return PairItems(*(None if f is None else jnp.pad(f, (0, extra))
                     for f in items))


def block_group_ranges(items: PairItems,
                       block: int) -> tuple[jax.Array, jax.Array]:
  """Smallest and largest group id among the valid items of each block.

  Two blocks can hold a pair only if their ranges overlap; a block without
  valid items gets the empty range (int32 max, int32 min) and overlaps
  nothing. With sorted group ids (the flattened `[B, K]` layout) only blocks
  near the diagonal overlap, which is how the tiles of different prompts are
  skipped.

  Args:
    items: `PairItems` with fields of a length divisible by `block`.
    block: the block length.

  Returns:
    (low, high), int32 [length // block] each.
  """
  big = np.iinfo(np.int32).max
  small = np.iinfo(np.int32).min
  groups = (jnp.zeros(items.valid.shape, jnp.int32) if items.group_ids is None
            else items.group_ids)
  groups = groups.reshape(-1, block)
  valid = items.valid.reshape(-1, block)
  low = jnp.min(jnp.where(valid, groups, big), axis=1)
  high = jnp.max(jnp.where(valid, groups, small), axis=1)
  return low, high


def ranges_overlap(low_a, high_a, low_b, high_b):
  """Whether two blocks' group ranges (`block_group_ranges`) overlap.

  A tile of a row block and a column block can hold a pair only then; every
  tiled implementation skips the other tiles.
  """
  return (low_a <= high_b) & (low_b <= high_a)


def empty_sums(num_rows: int, num_cols: int, *, same_items: bool,
               with_grad: bool, dtype):
  """The `pair_sums` result when a side has no items: all zeros.

  (total, grad_rows [N_r] or None, grad_cols [N_c] or None), with the
  contract of `chunked.pair_sums` (no `grad_cols` when `same_items`).
  """
  zero = jnp.zeros((), dtype)
  if not with_grad:
    return zero, None, None
  return (zero, jnp.zeros(num_rows, dtype),
          None if same_items else jnp.zeros(num_cols, dtype))


def kernel_fields(items: PairItems) -> tuple[tuple[str, ...], list[jax.Array]]:
  """Names of the present fields and their values as 32-bit arrays.

  The operands of the Pallas kernels: absent (None) fields are dropped, and
  bool fields become int32.
  """
  names, values = [], []
  for name, value in zip(items._fields, items):
    if value is None:
      continue
    if value.dtype == jnp.bool_:
      value = value.astype(jnp.int32)
    names.append(name)
    values.append(value)
  return tuple(names), values


def split_kernel_refs(refs, num_fields: int, has_margin: bool):
  """(margin, row refs, column refs, output refs) of a Pallas kernel's refs.

  The operand order the Pallas kernels share, after their group-range refs:
  the margin ([1], only with `has_margin`; read here), the `num_fields`
  field refs of the program's own side, those of the other side, then the
  outputs.
  """
  margin = None
  if has_margin:
    margin = refs[0][0]
    refs = refs[1:]
  return (margin, refs[:num_fields], refs[num_fields:2 * num_fields],
          refs[2 * num_fields:])


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= n (Python ints)."""
  return -(-n // multiple) * multiple
