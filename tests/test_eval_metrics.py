"""Tests for rmjax.eval pairwise metrics and calibration."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import eval as rm_eval
from rmjax.eval import bayes_optimal_pairwise_accuracy
from rmjax.eval import expected_calibration_error
from rmjax.eval import mean_reward_margin
from rmjax.eval import pairwise_accuracy
from rmjax.eval import pairwise_calibration_error
from rmjax.eval import reliability_bins

# Four pairs: correct, tie (wrong), wrong, correct.
CHOSEN = np.array([2.0, 1.0, 0.5, 3.0], np.float32)
REJECTED = np.array([1.0, 1.0, 1.5, 0.0], np.float32)


def _np_ece(probs, labels, num_bins):
  """Plain numpy ECE: bins [k/n, (k+1)/n), the last one closed."""
  probs = np.asarray(probs, np.float64)
  labels = np.asarray(labels, np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  total = 0.0
  for k in range(num_bins):
    upper = probs <= edges[k + 1] if k == num_bins - 1 else probs < edges[k + 1]
    in_bin = (probs >= edges[k]) & upper
    total += abs(probs[in_bin].sum() - labels[in_bin].sum())
  return total / len(probs)


def _pad(x, junk):
  return jnp.concatenate([jnp.asarray(x, jnp.float32),
                          jnp.asarray(junk, jnp.float32)])


class PairwiseAccuracyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    fn = self.variant(pairwise_accuracy)
    out = fn(CHOSEN, REJECTED)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, 0.5)
    # Masking the wrong pair: 2 of 3 valid pairs correct.
    np.testing.assert_allclose(
        fn(CHOSEN, REJECTED, mask=jnp.array([1, 1, 0, 1])), 2 / 3, rtol=1e-6)
    self.assertEqual(float(fn(CHOSEN, REJECTED, mask=jnp.zeros(4, bool))), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_junk_changes_nothing_but_valid_nan_shows(self):
    fn = self.variant(pairwise_accuracy)
    c = _pad(CHOSEN, [jnp.inf, jnp.nan])
    r = _pad(REJECTED, [0.0, 0.0])
    mask = jnp.array([True] * 4 + [False] * 2)
    np.testing.assert_allclose(fn(c, r, mask=mask), 0.5)
    self.assertTrue(np.isnan(fn(c, r)))

  def test_matches_numpy_reference(self):
    rng = np.random.default_rng(1)
    c, r = rng.normal(size=(2, 50)).astype(np.float32)
    mask = rng.random(50) < 0.7
    np.testing.assert_allclose(pairwise_accuracy(c, r, mask=mask),
                               np.mean((c > r)[mask]), rtol=1e-6)

  def test_bad_arguments(self):
    with pytest.raises(ValueError, match="`rejected_rewards`"):
      pairwise_accuracy(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`chosen_rewards`.*\[B\]"):
      pairwise_accuracy(jnp.zeros((3, 2)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="`mask`"):
      pairwise_accuracy(jnp.zeros(3), jnp.zeros(3), mask=jnp.ones(4))


class MeanRewardMarginTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    fn = self.variant(mean_reward_margin)
    # Margins (1, 0, -1, 3).
    np.testing.assert_allclose(fn(CHOSEN, REJECTED), 0.75)
    np.testing.assert_allclose(
        fn(_pad(CHOSEN, [jnp.inf]), _pad(REJECTED, [-jnp.inf]),
           mask=jnp.array([0, 1, 1, 1, 0])), 2 / 3, rtol=1e-6)
    out = fn(CHOSEN.astype(jnp.bfloat16), REJECTED.astype(jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)


class CalibrationTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_perfectly_calibrated_is_zero(self):
    probs = jnp.array([0.25] * 4 + [0.75] * 4)
    labels = jnp.array([1, 0, 0, 0, 1, 1, 1, 0])
    fn = self.variant(expected_calibration_error)
    self.assertEqual(float(fn(probs, labels)), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_miscalibrated_hand_value(self):
    probs = jnp.array([0.9, 0.9, 0.3, 0.05])
    labels = jnp.array([True, False, False, True])
    # Bin 9: |1.8 - 1| = 0.8; bin 3: |0.3 - 0|; bin 0: |0.05 - 1| = 0.95.
    fn = self.variant(expected_calibration_error)
    np.testing.assert_allclose(fn(probs, labels), 2.05 / 4, rtol=1e-6)
    # One bin: |2.15 - 2| / 4.
    fn1 = self.variant(functools.partial(expected_calibration_error,
                                         num_bins=1))
    np.testing.assert_allclose(fn1(probs, labels), 0.15 / 4, rtol=1e-5)

  @parameterized.parameters(1, 3, 10, 15)
  def test_matches_numpy_reference(self, num_bins):
    rng = np.random.default_rng(num_bins)
    probs = rng.random(200).astype(np.float32)
    labels = (rng.random(200) < probs ** 2).astype(np.float32)
    np.testing.assert_allclose(
        expected_calibration_error(probs, labels, num_bins=num_bins),
        _np_ece(probs, labels, num_bins), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bin_edges(self):
    fn = self.variant(functools.partial(reliability_bins, num_bins=4))
    probs = jnp.array([0.0, 0.25, 0.5, 0.999, 1.0])
    labels = jnp.array([0, 0, 1, 1, 1])
    conf, acc, count = fn(probs, labels)
    # 0 -> bin 0; 0.25 -> bin 1; 0.5 -> bin 2; 0.999 and 1.0 -> last bin.
    np.testing.assert_array_equal(count, [1, 1, 1, 2])
    np.testing.assert_allclose(conf, [0.0, 0.25, 0.5, 0.9995], rtol=1e-6)
    np.testing.assert_array_equal(acc, [0.0, 0.0, 1.0, 1.0])
    for out in (conf, acc, count):
      self.assertEqual(out.dtype, jnp.float32)
      self.assertEqual(out.shape, (4,))

  @chex.variants(with_jit=True, without_jit=True)
  def test_reliability_bins_mask_and_empty_bins(self):
    fn = self.variant(functools.partial(reliability_bins, num_bins=2))
    probs = jnp.array([0.2, 0.4, jnp.nan, 7.0])
    labels = jnp.array([1, 0, 1, 5])
    conf, acc, count = fn(probs, labels,
                          mask=jnp.array([True, True, False, False]))
    np.testing.assert_allclose(conf, [0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(acc, [0.5, 0.0])
    np.testing.assert_array_equal(count, [2, 0])

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_junk_changes_nothing(self):
    probs = jnp.array([0.9, 0.9, 0.3, 0.05])
    labels = jnp.array([1, 0, 0, 1])
    fn = self.variant(expected_calibration_error)
    padded = fn(_pad(probs, [jnp.nan, 2.0, -1.0]), _pad(labels, [1, 3, 0]),
                mask=jnp.array([True] * 4 + [False] * 3))
    np.testing.assert_allclose(padded, fn(probs, labels), rtol=1e-6)
    self.assertEqual(
        float(fn(probs, labels, mask=jnp.zeros(4, bool))), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("prob_above_one", [0.5, 1.5], [1, 0]),
      ("negative_prob", [0.5, -0.1], [1, 0]),
      ("nan_prob", [0.5, np.nan], [1, 0]),
      ("label_two", [0.5, 0.5], [1, 2]),
  )
  def test_out_of_range_gives_nan(self, probs, labels):
    probs, labels = jnp.array(probs), jnp.array(labels)
    self.assertTrue(np.isnan(self.variant(expected_calibration_error)(
        probs, labels)))
    for out in self.variant(reliability_bins)(probs, labels):
      self.assertTrue(np.all(np.isnan(out)))

  def test_bad_arguments(self):
    p = jnp.full(3, 0.5)
    for bad in (0, -2, 2.0, True, jnp.array(3)):
      with pytest.raises(ValueError, match="`num_bins`"):
        expected_calibration_error(p, p, num_bins=bad)
    with pytest.raises(ValueError, match=r"`probs` must have shape \[N\]"):
      expected_calibration_error(p[None], p[None])
    with pytest.raises(ValueError, match=r"`labels`.*\(3,\).*\(2,\)"):
      reliability_bins(p, p[:2])
    with pytest.raises(TypeError, match="`probs`.*complex"):
      expected_calibration_error(p.astype(jnp.complex64), p)


class PairwiseCalibrationTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_single_pair(self):
    # sigmoid(log 4) = 0.8: ordered pairs (0.8, 1), (0.2, 0) -> 0.4 / 2.
    fn = self.variant(pairwise_calibration_error)
    out = fn(jnp.log(jnp.array([4.0])), jnp.zeros(1))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, 0.2, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_calibrated_pairs_give_zero(self):
    # Reward gap log 3 (p = 0.75) and the model is right on 3 of 4 pairs.
    gap = np.log(3.0)
    chosen = jnp.array([gap, gap, gap, 0.0])
    rejected = jnp.array([0.0, 0.0, 0.0, gap])
    np.testing.assert_allclose(
        self.variant(pairwise_calibration_error)(chosen, rejected), 0.0,
        atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_ece_over_ordered_pairs_and_ignores_masked_junk(self):
    rng = np.random.default_rng(3)
    c, r = (2 * rng.normal(size=(2, 40))).astype(np.float32)
    delta = (c - r).astype(np.float64)
    probs = np.concatenate([1 / (1 + np.exp(-delta)), 1 / (1 + np.exp(delta))])
    labels = np.concatenate([np.ones(40), np.zeros(40)])
    fn = self.variant(functools.partial(pairwise_calibration_error,
                                        num_bins=5))
    expected = _np_ece(probs, labels, 5)
    np.testing.assert_allclose(fn(c, r), expected, rtol=1e-5)
    padded = fn(_pad(c, [jnp.nan, jnp.inf]), _pad(r, [0.0, jnp.inf]),
                mask=jnp.array([True] * 40 + [False] * 2))
    np.testing.assert_allclose(padded, expected, rtol=1e-5)
    self.assertTrue(np.isnan(fn(_pad(c, [jnp.nan]), _pad(r, [0.0]))))


class BayesOptimalAccuracyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    fn = self.variant(bayes_optimal_pairwise_accuracy)
    p = jnp.array([0.9, 0.2, 0.5, 7.0])
    mask = jnp.array([True, True, True, False])
    out = fn(p, mask=mask)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, (0.9 + 0.8 + 0.5) / 3, rtol=1e-6)
    self.assertTrue(np.isnan(fn(p)))
    self.assertTrue(np.isnan(fn(jnp.array([0.5, jnp.nan]))))

  def test_is_the_expected_accuracy_of_the_best_predictor(self):
    # Sample labels with P(chosen) = p; the predictor that says "chosen" iff
    # p > 1/2 attains the bound on average.
    rng = np.random.default_rng(4)
    p = rng.random(20000)
    labels_chosen = rng.random(20000) < p
    empirical = np.mean(labels_chosen == (p > 0.5))
    np.testing.assert_allclose(bayes_optimal_pairwise_accuracy(p), empirical,
                               atol=0.01)

  def test_bad_shape(self):
    with pytest.raises(ValueError, match="`preference_probs`"):
      bayes_optimal_pairwise_accuracy(jnp.zeros((2, 2)))


def test_public_api():
  # The benchmark rules' names are pinned in test_eval_benchmarks.py.
  assert set(rm_eval.__all__) >= {
      "pairwise_accuracy", "mean_reward_margin", "pairwise_calibration_error",
      "expected_calibration_error", "reliability_bins", "pairwise_reliability_bins",
      "bayes_optimal_pairwise_accuracy"}


def test_pairwise_reliability_bins_are_those_of_the_ordered_pairs():
  chosen = jnp.array([2.0, -1.0, 0.3, 9.0])
  rejected = jnp.array([0.0, 0.5, 0.3, 0.0])
  mask = jnp.array([True, True, True, False])
  delta = (chosen - rejected)[:3]
  expected = rm_eval.reliability_bins(
      jnp.concatenate([jax.nn.sigmoid(delta), jax.nn.sigmoid(-delta)]),
      jnp.concatenate([jnp.ones(3), jnp.zeros(3)]), num_bins=4)
  got = rm_eval.pairwise_reliability_bins(chosen, rejected, mask=mask, num_bins=4)
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert float(jnp.sum(got[2])) == 6.0


def test_metrics_are_jittable_with_static_num_bins():
  fn = jax.jit(pairwise_calibration_error, static_argnames="num_bins")
  np.testing.assert_allclose(
      fn(jnp.log(jnp.array([4.0])), jnp.zeros(1), num_bins=3), 0.2, rtol=1e-5)


@pytest.mark.parametrize("only_a, only_b, want", [
    (6, 0, 2 / 2 ** 6),                  # all 6 discordant items A's: 2 * C(6, 0) / 2^6
    (0, 14, 2 / 2 ** 14),
    (1, 4, 2 * (1 + 5) / 2 ** 5),        # k = 1, m = 5: 2 * (C(5,0) + C(5,1)) / 32
    (3, 3, 1.0), (0, 0, 1.0), (10, 11, 1.0),
])
def test_mcnemar_exact_p_by_hand(only_a, only_b, want):
  assert rm_eval.mcnemar_exact_p(only_a, only_b) == pytest.approx(want, rel=1e-12)
  assert rm_eval.mcnemar_exact_p(only_b, only_a) == rm_eval.mcnemar_exact_p(only_a, only_b)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_mcnemar_exact_p_rejects_bad_counts(bad):
  with pytest.raises(ValueError, match="only_a must be a non-negative integer"):
    rm_eval.mcnemar_exact_p(bad, 2)
