"""One correct candidate against several others: best-of-N credit and ranks.

Pure jnp; per-row results ([N] float32) that the caller averages, e.g. per
subset with `group_mean`. Masks follow the package convention (bool or
{0, 1}, nonzero = valid); invalid candidates are ignored even when they hold
inf or NaN, and a NaN score of a valid candidate makes that row's result NaN.
"""

from typing import Optional

import chex
import jax.numpy as jnp

from rmjax.losses import _reduction


def _candidate_inputs(scores, mask):
  """Checks [N, K] scores and mask; returns (scores, valid, dtype, nan_row)."""
  (scores,), valid, dtype = _reduction.sanitized_inputs(
      [("scores", scores)], mask, "[N, K]")
  nan_row = jnp.any(valid & jnp.isnan(scores), axis=1)
  return scores, valid, dtype, nan_row


def best_of_n_credit(
    scores: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Best-of-N credit with ties penalised; candidate 0 is the correct one.

    m_i      = max_{k valid} s_ik
    credit_i = 1 / #{k valid : s_ik = m_i}   if s_i0 = m_i
             = 0                             otherwise

  A scorer that ties the correct candidate with t - 1 others at the top gets
  1/t: a constant scorer gets 1/K (0.25 on RewardBench 2's best-of-4), the
  expected accuracy of breaking the tie at random. This is RewardBench 2's
  rule (rewardbench/utils.py, `reroll_and_score_dataset`).

  Args:
    scores: [N, K] scores of K candidates per row, the correct one at k = 0.
    mask: optional [N, K] validity mask of the candidates (ragged rows are
      padded). A row whose candidate 0 is invalid gets credit 0; mask the
      whole row to drop it from `best_of_n_accuracy`.

  Returns:
    [N] float32 credits in [0, 1]; NaN in a row with a NaN valid score.

  References:
    Malik et al. (2025), "RewardBench 2: Advancing Reward Model Evaluation",
    arXiv:2506.01937.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import best_of_n_credit
  >>> best_of_n_credit(jnp.array([[3.0, 1.0, 2.0, 0.0],    # correct wins
  ...                             [3.0, 3.0, 1.0, 0.0],    # 2-way tie: 1/2
  ...                             [1.0, 3.0, 0.0, 0.0]])).tolist()
  [1.0, 0.5, 0.0]
  """
  scores, valid, dtype, nan_row = _candidate_inputs(scores, mask)
  top = jnp.max(jnp.where(valid, scores, -jnp.inf), axis=1, keepdims=True)
  at_top = valid & (scores == top)
  num_top = jnp.sum(at_top, axis=1, dtype=dtype)
  credit = jnp.where(at_top[:, 0], 1 / jnp.maximum(num_top, 1), 0)
  return jnp.where(nan_row, jnp.nan, credit).astype(dtype)


def best_of_n_accuracy(
    scores: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Mean `best_of_n_credit` over the rows whose candidate 0 is valid.

    accuracy = sum_i v_i0 credit_i / max(sum_i v_i0, 1)

  Args:
    scores: [N, K] scores, the correct candidate at k = 0.
    mask: optional [N, K] candidate validity mask; a row counts iff its
      candidate 0 is valid.

  Returns:
    float32 scalar in [0, 1]; 0 if no row counts; NaN if a counted row has a
    NaN valid score.

  References:
    Malik et al. (2025), "RewardBench 2: Advancing Reward Model Evaluation",
    arXiv:2506.01937.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import best_of_n_accuracy
  >>> float(best_of_n_accuracy(jnp.zeros((5, 4))))  # constant scorer: 1/K
  0.25
  """
  credit = best_of_n_credit(scores, mask=mask)
  rows = _reduction.validity_mask(mask, jnp.shape(scores), "mask")[:, 0]
  return _reduction.reduce_loss(credit, mask=rows, reduction="mean")


def _one_vs_many_inputs(chosen, rejected, mask):
  """Checks chosen [N], rejected [N, M], mask [N, M]; sanitises them."""
  chosen = _reduction.as_real_array(chosen, "chosen")
  _reduction.check_rank(chosen, 1, "chosen", "[N]")
  (rejected,), valid, dtype = _reduction.sanitized_inputs(
      [("rejected", rejected)], mask, "[N, M]")
  if rejected.shape[0] != chosen.shape[0]:
    raise ValueError(
        f"`rejected` must have shape [N, M] with N = {chosen.shape[0]} (from "
        f"`chosen`); got shape {tuple(rejected.shape)}.")
  dtype = _reduction.compute_dtype(chosen, rejected)
  chosen = chosen.astype(dtype)
  rejected = rejected.astype(dtype)
  nan_row = jnp.isnan(chosen) | jnp.any(valid & jnp.isnan(rejected), axis=1)
  return chosen, rejected, valid, dtype, nan_row


def one_vs_many_accuracy(
    chosen: chex.Array,
    rejected: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    ties_correct: bool = False,
) -> jnp.ndarray:
  """Whether the chosen response beats every rejected one (RewardMATH).

    correct_i = 1[chosen_i >  max_{m valid} rejected_im]   (default)
    correct_i = 1[chosen_i >= max_{m valid} rejected_im]   (ties_correct)

  RewardMATH scores one correct solution against nine incorrect ones and
  reports the strict form as accuracy and the `>=` form "w/ tie"
  (kimsh0507/RewardMATH_official, src/evaluation/eval.py). A constant scorer
  gets 0 (strict) or 1 (`ties_correct`). A row with no valid rejected
  response is vacuously correct.

  Args:
    chosen: [N] scores of the correct responses.
    rejected: [N, M] scores of the incorrect responses.
    mask: optional [N, M] validity mask of `rejected`.
    ties_correct: static bool; count a tie at the top as correct.

  Returns:
    [N] float32 in {0, 1}; NaN in a row with a NaN (valid) score.

  References:
    Kim et al. (2024), "Evaluating Robustness of Reward Models for
    Mathematical Reasoning" (RewardMATH), arXiv:2410.01729.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import one_vs_many_accuracy
  >>> c, r = jnp.array([2.0, 2.0]), jnp.array([[1.0, 0.0], [2.0, 0.0]])
  >>> one_vs_many_accuracy(c, r).tolist(), one_vs_many_accuracy(
  ...     c, r, ties_correct=True).tolist()
  ([1.0, 0.0], [1.0, 1.0])
  """
  if not isinstance(ties_correct, bool):
    raise ValueError(
        "`ties_correct` must be a static Python bool; got "
        f"{type(ties_correct).__name__} {ties_correct!r}.")
  chosen, rejected, valid, dtype, nan_row = _one_vs_many_inputs(
      chosen, rejected, mask)
  best = jnp.max(jnp.where(valid, rejected, -jnp.inf), axis=1)
  wins = chosen >= best if ties_correct else chosen > best
  return jnp.where(nan_row, jnp.nan, wins.astype(dtype))


def reciprocal_rank(
    chosen: chex.Array,
    rejected: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Reciprocal rank of the chosen response among the rejected ones.

    rr_i = 1 / (1 + #{m valid : rejected_im >= chosen_i})

  Ties are ranked pessimistically (a rejected response tied with the chosen
  one ranks above it), as RewardMATH's sort does; its MRR is the mean of
  rr_i. A constant scorer gets 1 / (M + 1): 1/10 for RewardMATH's one correct
  and nine incorrect solutions.

  Args:
    chosen: [N] scores of the correct responses.
    rejected: [N, M] scores of the incorrect responses.
    mask: optional [N, M] validity mask of `rejected`.

  Returns:
    [N] float32 in (0, 1]; NaN in a row with a NaN (valid) score.

  References:
    Kim et al. (2024), "Evaluating Robustness of Reward Models for
    Mathematical Reasoning" (RewardMATH), arXiv:2410.01729.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import reciprocal_rank
  >>> reciprocal_rank(jnp.array([2.0, 2.0]),
  ...                 jnp.array([[1.0, 0.0], [2.0, 3.0]])).tolist()
  [1.0, 0.333...]
  """
  chosen, rejected, valid, dtype, nan_row = _one_vs_many_inputs(
      chosen, rejected, mask)
  above = jnp.sum(valid & (rejected >= chosen[:, None]), axis=1, dtype=dtype)
  return jnp.where(nan_row, jnp.nan, 1 / (1 + above))
