"""Tests for the benchmark scoring rules of rmjax.eval.

Hand-computed values on tiny fixtures (each computation in a comment), plain
numpy references on random inputs for the style matrix and the Ties score,
constant scorers pinned, jit against eager, and argument errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import eval as rm_eval
from rmjax.eval import best_of_n_accuracy
from rmjax.eval import best_of_n_credit
from rmjax.eval import group_mean
from rmjax.eval import one_vs_many_accuracy
from rmjax.eval import pairwise_correct
from rmjax.eval import reciprocal_rank


def _close(x, expected, tol=1e-6):
  np.testing.assert_allclose(np.asarray(x), expected, rtol=tol, atol=tol)


# --------------------------------------------------------------------------
# group_mean and pairwise_correct


def test_group_mean_hand_values_empty_group_and_mask():
  values = jnp.array([1.0, 0.0, 0.5, jnp.nan, 2.0])
  ids = jnp.array([0, 0, 2, 1, 7])  # row 4's id is out of range but masked
  mask = jnp.array([True, True, True, False, False])
  fn = jax.jit(group_mean, static_argnums=2)
  means, counts = fn(values, ids, 4, mask=mask)
  # group 0: (1 + 0) / 2; group 1: only a masked row -> empty; group 2: 0.5;
  # group 3: no row -> empty. Empty groups: mean 0, count 0.
  _close(means, [0.5, 0.0, 0.5, 0.0])
  _close(counts, [2.0, 0.0, 1.0, 0.0])
  assert means.dtype == jnp.float32 and counts.dtype == jnp.float32
  eager = group_mean(values, ids, 4, mask=mask)
  _close(eager[0], means)


def test_group_mean_bad_values():
  # A NaN value spoils its own group only; a valid out-of-range id, all.
  means, _ = group_mean(jnp.array([jnp.nan, 1.0]), jnp.array([0, 1]), 2)
  assert np.isnan(means[0]) and float(means[1]) == 1.0
  means, counts = group_mean(jnp.ones(2), jnp.array([0, 2]), 2)
  assert np.all(np.isnan(means)) and np.all(np.isnan(counts))


def test_group_mean_argument_errors():
  with pytest.raises(ValueError, match="`num_groups`.*static Python int"):
    group_mean(jnp.ones(2), jnp.zeros(2, jnp.int32), 2.0)
  with pytest.raises(ValueError, match="`num_groups`.*static Python int"):
    group_mean(jnp.ones(2), jnp.zeros(2, jnp.int32), jnp.array(2))
  with pytest.raises(ValueError, match="`num_groups` must be >= 1"):
    group_mean(jnp.ones(2), jnp.zeros(2, jnp.int32), 0)
  with pytest.raises(TypeError, match="`group_ids`.*integer"):
    group_mean(jnp.ones(2), jnp.zeros(2), 2)
  with pytest.raises(ValueError, match="`group_ids`.*same shape"):
    group_mean(jnp.ones(2), jnp.zeros(3, jnp.int32), 2)
  with pytest.raises(ValueError, match=r"`values`.*\[N\]"):
    group_mean(jnp.ones((2, 2)), jnp.zeros(2, jnp.int32), 2)


def test_pairwise_correct_ties_wrong_and_nan():
  out = jax.jit(pairwise_correct)(jnp.array([2.0, 1.0, 0.0, jnp.nan]),
                                  jnp.array([1.0, 1.0, 1.0, 0.0]),
                                  mask=jnp.array([1, 1, 1, 1]))
  # 2 > 1 right; 1 = 1 tie wrong; 0 < 1 wrong; NaN row NaN.
  _close(out[:3], [1.0, 0.0, 0.0])
  assert np.isnan(out[3])
  masked = pairwise_correct(jnp.array([jnp.nan]), jnp.zeros(1),
                            mask=jnp.array([False]))
  _close(masked, [0.0])


# --------------------------------------------------------------------------
# Best of N (RewardBench 2) and one vs many (RewardMATH)


def test_best_of_n_credit_ties_and_mask():
  scores = jnp.array([
      [3.0, 1.0, 2.0, 0.0],   # correct strictly on top: 1
      [3.0, 3.0, 1.0, 0.0],   # 2-way tie at the max: 1/2
      [2.0, 2.0, 2.0, 2.0],   # 4-way tie: 1/4
      [1.0, 3.0, 0.0, 0.0],   # another candidate on top: 0
      [1.0, 9.0, jnp.nan, 0.0],  # masked 9 and NaN: correct on top of {1, 0}
  ])
  mask = jnp.array([[1, 1, 1, 1]] * 4 + [[1, 0, 0, 1]])
  credit = jax.jit(best_of_n_credit)(scores, mask=mask)
  _close(credit, [1.0, 0.5, 0.25, 0.0, 1.0])
  assert credit.dtype == jnp.float32
  # Accuracy: mean over rows = 2.75 / 5.
  _close(jax.jit(best_of_n_accuracy)(scores, mask=mask), 2.75 / 5)
  # Row 4 dropped by masking its candidate 0: 1.75 / 4.
  _close(best_of_n_accuracy(scores, mask=mask.at[4, 0].set(0)), 1.75 / 4)
  # A valid NaN makes its row NaN.
  assert np.isnan(best_of_n_credit(scores)[4])


def test_best_of_n_constant_scorer_is_one_over_k():
  _close(best_of_n_accuracy(jnp.zeros((7, 4))), 0.25)  # 1/K for K = 4
  assert float(best_of_n_accuracy(jnp.zeros((7, 4)))) == 0.25  # exactly


def test_best_of_n_errors():
  with pytest.raises(ValueError, match=r"`scores`.*\[N, K\]"):
    best_of_n_credit(jnp.zeros(4))
  with pytest.raises(ValueError, match="`mask`"):
    best_of_n_credit(jnp.zeros((2, 4)), mask=jnp.ones((2, 3)))


def test_one_vs_many_and_reciprocal_rank():
  chosen = jnp.array([2.0, 2.0, 2.0, 0.0])
  rejected = jnp.array([[1.0, 0.0, 5.0],   # 5 masked: beats {1, 0}
                        [2.0, 1.0, 0.0],   # tied with the best rejected
                        [3.0, 2.0, 1.0],   # 3 above, 2 tied
                        [1.0, 1.0, 1.0]])  # all rejected above
  mask = jnp.array([[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1]])
  _close(jax.jit(one_vs_many_accuracy)(chosen, rejected, mask=mask),
         [1.0, 0.0, 0.0, 0.0])
  _close(one_vs_many_accuracy(chosen, rejected, mask=mask, ties_correct=True),
         [1.0, 1.0, 0.0, 0.0])
  # rank = 1 + #{valid rejected >= chosen}: 1, 2 (tie pessimistic), 3, 4.
  _close(jax.jit(reciprocal_rank)(chosen, rejected, mask=mask),
         [1.0, 1 / 2, 1 / 3, 1 / 4])


def test_rewardmath_constant_scorer():
  # One correct vs nine incorrect, all scored alike: accuracy 0, MRR 1/10.
  @jax.jit
  def rules(chosen, rejected):
    return (one_vs_many_accuracy(chosen, rejected),
            one_vs_many_accuracy(chosen, rejected, ties_correct=True),
            reciprocal_rank(chosen, rejected))

  strict, with_ties, rank = rules(jnp.ones(3), jnp.ones((3, 9)))
  _close(strict, 0.0)
  _close(with_ties, 1.0)
  _close(rank, 0.1)


def test_one_vs_many_errors_and_nan():
  with pytest.raises(ValueError, match=r"`rejected`.*N = 3"):
    reciprocal_rank(jnp.zeros(3), jnp.zeros((4, 9)))
  with pytest.raises(ValueError, match=r"`chosen`.*\[N\]"):
    one_vs_many_accuracy(jnp.zeros((3, 1)), jnp.zeros((3, 9)))
  with pytest.raises(ValueError, match="`ties_correct`"):
    one_vs_many_accuracy(jnp.zeros(3), jnp.zeros((3, 9)), ties_correct=1)
  out = reciprocal_rank(jnp.array([1.0, jnp.nan]), jnp.zeros((2, 2)))
  assert float(out[0]) == 1.0 and np.isnan(out[1])
