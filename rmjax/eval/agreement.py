"""Agreement of a reward model with human judges who may call a tie (PandaLM).

Labels follow PandaLM's test set: 0 tie, 1 the first response is better, 2 the
second is better; each row carries the labels of A annotators. Pure jnp.
"""

from typing import Dict, Optional

import chex
import jax.numpy as jnp

from rmjax.eval import grouping
from rmjax.losses import _reduction

# `majority_label` values besides the labels 0, 1, 2.
NO_MAJORITY = -1
INVALID_LABEL = -2


def majority_label(labels: chex.Array) -> jnp.ndarray:
  """The label that more than half of the annotators gave, if any.

    majority_i = c        if #{a : labels_ia = c} > A / 2,  c in {0, 1, 2}
               = -1       otherwise ("no majority", e.g. votes 0, 1, 2)
               = -2       if a label of row i is outside {0, 1, 2}

  Args:
    labels: [N, A] integer labels: 0 tie, 1 first better, 2 second better.

  Returns:
    [N] int32 in {-2, -1, 0, 1, 2}.

  References:
    Wang et al. (2023), "PandaLM: An Automatic Evaluation Benchmark for LLM
    Instruction Tuning Optimization", arXiv:2306.05087.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import majority_label
  >>> majority_label(jnp.array([[1, 1, 0], [0, 1, 2], [2, 2, 2]])).tolist()
  [1, -1, 2]
  """
  labels = grouping.integer_array(labels, "labels", "[N, A]", 2)
  num_annotators = labels.shape[1]
  votes = jnp.stack([jnp.sum(labels == c, axis=1) for c in range(3)], axis=1)
  winner = jnp.argmax(votes, axis=1).astype(jnp.int32)
  has_majority = 2 * jnp.max(votes, axis=1) > num_annotators
  out_of_range = jnp.any((labels < 0) | (labels > 2), axis=1)
  majority = jnp.where(has_majority, winner, NO_MAJORITY)
  return jnp.where(out_of_range, INVALID_LABEL, majority).astype(jnp.int32)


def human_agreement(
    score_first: chex.Array,
    score_second: chex.Array,
    labels: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    tie_margin: float = 0.0,
) -> Dict[str, jnp.ndarray]:
  """Agreement of a scorer's preferences with the annotators' majority.

  With d_i = score_first_i - score_second_i, the model's label is 1 if
  d_i > tie_margin, 2 if d_i < -tie_margin, else 0 (tie); with the default
  margin 0 only exact equality is a model tie. Over valid rows with
  majority m_i (`majority_label`):

    agreement           = #{m_i in {1, 2}, model_i = m_i} / num_decided
                          (a model tie on a decided row is wrong)
    agreement_with_ties = #{m_i in {0, 1, 2}, model_i = m_i}
                          / (num_decided + num_majority_tie)
    model_tie_rate_on_majority_ties = #{m_i = 0, |d_i| <= tie_margin}
                                      / num_majority_tie

  Each ratio is 0 when its denominator is 0.

  Args:
    score_first: [N] scores of the first response.
    score_second: [N] scores of the second response.
    labels: [N, A] integer labels: 0 tie, 1 first better, 2 second better.
    mask: optional [N] validity mask of the rows.
    tie_margin: |d| <= tie_margin is a model tie (default 0.0), a Python
      number >= 0 or a scalar array (its sign is not checked under jit).

  Returns:
    dict of float32 scalars: "agreement", "agreement_with_ties",
    "model_tie_rate_on_majority_ties", and the row counts "num_decided"
    (majority 1 or 2), "num_majority_tie" (majority 0), "num_no_majority".
    All NaN if a valid row has a label outside {0, 1, 2} or a NaN score.

  References:
    Wang et al. (2023), "PandaLM: An Automatic Evaluation Benchmark for LLM
    Instruction Tuning Optimization", arXiv:2306.05087.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import human_agreement
  >>> out = human_agreement(jnp.array([1.0, 0.0, 2.0, 5.0]),
  ...                       jnp.array([0.0, 1.0, 2.0, 5.0]),
  ...                       jnp.array([[1, 1, 2], [1, 1, 1], [0, 0, 1],
  ...                                  [0, 1, 2]]))
  >>> float(out["agreement"]), float(out["num_no_majority"])  # 1 of 2 decided
  (0.5, 1.0)
  """
  (first, second), valid, dtype = _reduction.sanitized_inputs(
      [("score_first", score_first), ("score_second", score_second)], mask,
      "[N]")
  labels = grouping.integer_array(labels, "labels", "[N, A]", 2)
  if labels.shape[0] != first.shape[0]:
    raise ValueError(
        f"`labels` must have shape [N, A] with N = {first.shape[0]} (from "
        f"`score_first`); got shape {tuple(labels.shape)}.")
  tie_margin = _reduction.scalar_hyperparameter(
      tie_margin, "tie_margin", allow_zero=True)
  majority = majority_label(labels)
  diff = first - second
  model = jnp.where(diff > tie_margin, 1, jnp.where(diff < -tie_margin, 2, 0))
  decided = valid & ((majority == 1) | (majority == 2))
  tied = valid & (majority == 0)
  no_majority = valid & (majority == NO_MAJORITY)
  agrees = model == majority

  def ratio(hits, rows):
    return (jnp.sum(hits & rows, dtype=dtype)
            / jnp.maximum(jnp.sum(rows, dtype=dtype), 1))

  out = {
      "agreement": ratio(agrees, decided),
      "agreement_with_ties": ratio(agrees, decided | tied),
      "model_tie_rate_on_majority_ties": ratio(
          jnp.abs(diff) <= tie_margin, tied),
      "num_decided": jnp.sum(decided, dtype=dtype),
      "num_majority_tie": jnp.sum(tied, dtype=dtype),
      "num_no_majority": jnp.sum(no_majority, dtype=dtype),
  }
  bad = jnp.any(valid & ((majority == INVALID_LABEL) | jnp.isnan(diff)))
  return {name: jnp.where(bad, jnp.nan, value) for name, value in out.items()}
