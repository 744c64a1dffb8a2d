"""Diagnostics of a reward model's biases: accuracy by bucket, position swaps.

Pure jnp, float32 results, optional validity masks with the package's
convention. For a length preference rate, use `pairwise_accuracy(
scores_longer, scores_shorter)`: the fraction of pairs where the longer
response scores higher.
"""

from typing import Optional, Tuple

import chex
import jax.numpy as jnp

from rmjax.eval import grouping
from rmjax.losses import _reduction


def accuracy_by_bucket(
    correct: chex.Array,
    values: chex.Array,
    bucket_edges: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Mean correctness per bucket of a row property (e.g. a length gap).

  With edges e_0 < ... < e_{E-1}, bucket b holds the rows with

    b = 0:        value < e_0
    0 < b < E:    e_{b-1} <= value < e_b
    b = E:        value >= e_{E-1}

  and accuracy_b is the mean of `correct` over its valid rows (`group_mean`:
  an empty bucket has accuracy 0 and count 0).

  Args:
    correct: [N] per-row correctness, bool or in {0, 1}, or a credit in [0, 1] (e.g.
      `pairwise_correct`, `best_of_n_credit`).
    values: [N] the property, e.g. len(chosen) - len(rejected) in tokens.
    bucket_edges: [E] strictly increasing edges.
    mask: optional [N] validity mask.

  Returns:
    (accuracy [E + 1], counts [E + 1]), float32. Everything NaN if the edges
    are not strictly increasing or a valid row's value is NaN; a NaN in
    `correct` makes its bucket's accuracy NaN.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import accuracy_by_bucket
  >>> acc, count = accuracy_by_bucket(jnp.array([1.0, 0.0, 1.0, 1.0]),
  ...                                 jnp.array([-50.0, 0.0, 10.0, 300.0]),
  ...                                 jnp.array([0.0, 100.0]))
  >>> acc.tolist(), count.tolist()
  ([1.0, 0.5, 1.0], [1.0, 2.0, 1.0])
  """
  correct = jnp.asarray(correct)
  if correct.dtype == jnp.bool_:
    correct = correct.astype(jnp.float32)
  correct = _reduction.as_real_array(correct, "correct")
  _reduction.check_rank(correct, 1, "correct", "[N]")
  (values,), valid, _ = _reduction.sanitized_inputs(
      [("values", values)], mask, "[N]")
  _reduction.check_same_shape(values, "values", correct, "correct")
  edges = _reduction.as_real_array(bucket_edges, "bucket_edges")
  _reduction.check_rank(edges, 1, "bucket_edges", "[E]")
  num_buckets = edges.shape[0] + 1
  edges = edges.astype(_reduction.compute_dtype(edges))
  bucket = jnp.searchsorted(edges, values, side="right")
  bad = (jnp.any(edges[1:] <= edges[:-1]) | jnp.any(jnp.isnan(edges))
         | jnp.any(valid & jnp.isnan(values)))
  accuracy, counts = grouping.group_mean(correct, bucket, num_buckets,
                                         mask=valid)
  return jnp.where(bad, jnp.nan, accuracy), jnp.where(bad, jnp.nan, counts)


def position_swap_flip_rate(
    logits_ab: chex.Array,
    logits_ba: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """How often a pairwise judge's choice follows the position, not the item.

  logits_ab_i is the judge's logit that the response in the first position
  beats the second when shown (a_i, b_i); logits_ba_i the same logit when
  shown (b_i, a_i). A judge consistent under the swap has logits_ba =
  -logits_ab. The chosen item flips when the swap moves it, i.e. the judge
  prefers the same position both times:

    flip_i = 1[sign(logits_ab_i) = sign(logits_ba_i) != 0]
    rate   = sum_i v_i flip_i / max(sum_i v_i, 1)

  A zero logit (no preference) is never a flip but stays in the
  denominator.

  Args:
    logits_ab: [N] logits of "first beats second" with order (a, b).
    logits_ba: [N] logits of "first beats second" with order (b, a).
    mask: optional [N] validity mask.

  Returns:
    float32 scalar in [0, 1]; 0 if nothing is valid; NaN if a valid logit is
    NaN.

  References:
    Zheng et al. (2023), "Judging LLM-as-a-Judge with MT-Bench and Chatbot
    Arena" (position bias; swap-consistency).

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import position_swap_flip_rate
  >>> float(position_swap_flip_rate(jnp.array([2.0, 1.0, -1.0, 0.0]),
  ...                               jnp.array([-2.0, 0.5, -3.0, 1.0])))
  0.5
  """
  (ab, ba), valid, _ = _reduction.sanitized_inputs(
      [("logits_ab", logits_ab), ("logits_ba", logits_ba)], mask, "[N]")
  flip = (jnp.sign(ab) == jnp.sign(ba)) & (ab != 0)
  has_nan = jnp.any(valid & (jnp.isnan(ab) | jnp.isnan(ba)))
  rate = _reduction.reduce_loss(flip.astype(ab.dtype), mask=valid)
  return jnp.where(has_nan, jnp.nan, rate)
