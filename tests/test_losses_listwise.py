"""Tests for rmjax.losses.listwise: Plackett-Luce and all-pairs BT (+ LiPO)."""

import itertools

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax.losses.bradley_terry import bradley_terry_loss
from rmjax.losses.listwise import all_pairs_bradley_terry_loss
from rmjax.losses.listwise import lipo_lambda_weights
from rmjax.losses.listwise import pairwise_preference_matrix
from rmjax.losses.listwise import plackett_luce_loss

_SETTINGS = hypothesis.settings(max_examples=15, deadline=None,
                                derandomize=True)

# Jitted entry points for the tests that are not about jit-vs-eager: one
# compilation per shape instead of one per primitive keeps the file fast.
_pl = jax.jit(plackett_luce_loss, static_argnames=("reduction",))
_all_pairs = jax.jit(all_pairs_bradley_terry_loss,
                     static_argnames=("weighting", "reduction"))
_lipo = jax.jit(lipo_lambda_weights)
_bt = jax.jit(bradley_terry_loss, static_argnames=("reduction",))


def _softplus(x):
  return np.logaddexp(0.0, np.asarray(x, np.float64))


# ---------------------------------------------------------------------------
# Plain numpy references (float64, explicit loops).


def _np_plackett_luce(scores, ranking=None, mask=None):
  """Per-list PL NLL of the valid items, in the order `ranking` lists them."""
  scores = np.asarray(scores, np.float64)
  num_lists, num_items = scores.shape
  out = np.zeros(num_lists)
  for b in range(num_lists):
    order = range(num_items) if ranking is None else ranking[b]
    kept = [scores[b, i] for i in order if mask is None or mask[b, i]]
    for k in range(len(kept)):
      out[b] += -kept[k] + np.logaddexp.reduce(kept[k:])
  return out


def _np_lipo_weights(scores, labels, groups, mask):
  n = len(scores)
  tau = np.ones(n)
  for i in range(n):
    for j in range(n):
      if j != i and groups[i] == groups[j] and mask[i] and mask[j]:
        if scores[j] > scores[i] or (scores[j] == scores[i] and j < i):
          tau[i] += 1
  gain = 2.0 ** np.asarray(labels, np.float64) - 1
  inv_d = 1 / np.log2(1 + tau)
  w = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      if groups[i] == groups[j] and mask[i] and mask[j]:
        w[i, j] = abs(gain[i] - gain[j]) * abs(inv_d[i] - inv_d[j])
  return w


def _np_all_pairs(scores, labels, groups, mask, weighting="uniform",
                  pair_weights=None):
  """[N, N] weighted per-pair losses and the number of valid pairs."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels, np.float64)
  n = len(scores)
  lipo = _np_lipo_weights(scores, labels, groups, mask)
  out = np.zeros((n, n))
  count = 0
  for i in range(n):
    for j in range(n):
      if not (mask[i] and mask[j] and groups[i] == groups[j]
              and labels[i] > labels[j]):
        continue
      count += 1
      w = {"uniform": 1.0, "label_gap": labels[i] - labels[j],
           "lipo_lambda": lipo[i, j]}[weighting]
      if pair_weights is not None:
        w *= pair_weights[i, j]
      out[i, j] = w * _softplus(scores[j] - scores[i])
  return out, count


_RNG = np.random.default_rng(0)
# Lists [B, K] = [5, 6] with random rankings and a mask.
PL_SCORES = _RNG.normal(size=(5, 6)).astype(np.float32)
PL_RANKING = np.stack([_RNG.permutation(6) for _ in range(5)]).astype(np.int32)
PL_MASK = _RNG.random((5, 6)) > 0.3
PL_MASK[0] = True
PL_MASK[1] = [True, False, False, False, False, False]  # One item: dropped.
# Flat items [N] = [12] in 3 groups, graded labels with ties, a mask.
AP_SCORES = _RNG.normal(size=12).astype(np.float32)
AP_LABELS = np.array([2, 1, 0, 1, 3, 0, 1, 2, 2, 0, 4, 1], np.int32)
AP_GROUPS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], np.int32)
AP_MASK = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1], bool)
AP_PAIR_WEIGHTS = _RNG.uniform(0.5, 2.0, size=(12, 12)).astype(np.float32)


class PlackettLuceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("k2", [[1.0, 0.0]], np.log1p(np.exp(-1.0))),  # softplus(-1) = 0.3133
      ("equal_k3", [[0.0, 0.0, 0.0]], np.log(6.0)),  # log 3!
      # -2 + log(e^2 + e^1 + e^0) - 1 + log(e^1 + e^0) = 0.8620.
      ("k3", [[2.0, 1.0, 0.0]], -3 + np.log(np.e**2 + np.e + 1)
       + np.log(np.e + 1)),
  )
  def test_hand_values(self, scores, expected):
    out = self.variant(plackett_luce_loss)(jnp.array(scores))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)

  def test_spec_sanity_values(self):
    np.testing.assert_allclose(plackett_luce_loss(jnp.array([[1.0, 0.0]])),
                               0.3133, atol=5e-5)
    np.testing.assert_allclose(plackett_luce_loss(jnp.zeros((1, 3))), 1.7918,
                               atol=5e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    ref = _np_plackett_luce(PL_SCORES, PL_RANKING, PL_MASK)
    self.assertEqual(ref[1], 0.0)

    def fn(reduction):
      return self.variant(lambda s, r, m: plackett_luce_loss(
          s, r, mask=m, reduction=reduction))(PL_SCORES, PL_RANKING, PL_MASK)

    np.testing.assert_allclose(fn("none"), ref, rtol=1e-5)
    np.testing.assert_allclose(fn("sum"), ref.sum(), rtol=1e-5)
    # List 1 has a single valid item: dropped from the mean's denominator.
    np.testing.assert_allclose(fn("mean"), ref.sum() / 4, rtol=1e-5)
    no_ranking = self.variant(lambda s: plackett_luce_loss(
        s, reduction="none"))(PL_SCORES)
    np.testing.assert_allclose(no_ranking, _np_plackett_luce(PL_SCORES),
                               rtol=1e-5)

  def test_weights(self):
    w = np.array([1.0, 5.0, 0.0, 2.0, 0.5], np.float32)
    ref = _np_plackett_luce(PL_SCORES, PL_RANKING, PL_MASK) * w
    out = plackett_luce_loss(PL_SCORES, PL_RANKING, mask=PL_MASK, weights=w)
    np.testing.assert_allclose(out, ref.sum() / 4, rtol=1e-5)

  @hypothesis.given(st.floats(-30, 30), st.floats(-30, 30), st.booleans())
  @_SETTINGS
  def test_two_items_equal_bradley_terry(self, s0, s1, swap):
    scores = jnp.array([[s0, s1]], jnp.float32)
    ranking = jnp.array([[1, 0]] if swap else [[0, 1]])
    better, worse = (s1, s0) if swap else (s0, s1)
    expected = _bt(jnp.array([better], jnp.float32),
                   jnp.array([worse], jnp.float32))
    np.testing.assert_allclose(_pl(scores, ranking), expected,
                               rtol=1e-5, atol=1e-6)

  @hypothesis.given(st.integers(0, 2**31 - 1), st.floats(-100, 100))
  @_SETTINGS
  def test_relabelling_items_and_shifting_scores(self, seed, shift):
    # Permuting the item axis (and mapping the ranking's indices with it),
    # and adding a constant per list, leave every list's loss unchanged.
    rng = np.random.default_rng(seed)
    perm = rng.permutation(6)
    inverse = np.argsort(perm)
    scores = PL_SCORES[:, perm] + np.float32(shift)
    ranking = inverse[PL_RANKING].astype(np.int32)
    out = _pl(scores, ranking, mask=PL_MASK[:, perm], reduction="none")
    ref = _pl(PL_SCORES, PL_RANKING, mask=PL_MASK, reduction="none")
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_items_anywhere_in_the_ranking_are_dropped(self):
    # Valid items 0, 2, 4 ranked 4 > 0 > 2; junk items 1, 3 sit between them
    # in the ranking. Equals the 3-item list (s4, s0, s2) in order.
    s = jnp.array([[0.3, jnp.nan, -1.2, jnp.inf, 0.8]])
    ranking = jnp.array([[4, 1, 0, 3, 2]])
    mask = jnp.array([[True, False, True, False, True]])
    fn = self.variant(jax.value_and_grad(
        lambda s: plackett_luce_loss(s, ranking, mask=mask)))
    value, grad = fn(s)
    ref_value, ref_grad = jax.jit(jax.value_and_grad(plackett_luce_loss))(
        jnp.array([[0.8, 0.3, -1.2]]))
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad[0, [4, 0, 2]], ref_grad[0], rtol=1e-6)
    np.testing.assert_array_equal(grad[0, [1, 3]], 0.0)
    # Masked items last in the ranking: the usual layout, same value.
    last = _pl(s, jnp.array([[4, 0, 2, 1, 3]]), mask=mask)
    np.testing.assert_allclose(last, ref_value, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_padding_lists_change_nothing(self):
    junk = np.full((2, 6), np.nan, np.float32)
    scores = np.concatenate([PL_SCORES, junk])
    ranking = np.concatenate([PL_RANKING, PL_RANKING[:2]])
    mask = np.concatenate([PL_MASK, np.zeros((2, 6), bool)])
    fn = self.variant(jax.value_and_grad(
        lambda s, r, m: plackett_luce_loss(s, r, mask=m)))
    value, grad = fn(PL_SCORES, PL_RANKING, PL_MASK)
    value_pad, grad_pad = fn(scores, ranking, mask)
    np.testing.assert_allclose(value_pad, value, rtol=1e-6)
    np.testing.assert_allclose(grad_pad[:5], grad, rtol=1e-6)
    np.testing.assert_array_equal(grad_pad[5:], 0.0)
    np.testing.assert_array_equal(grad[~PL_MASK], 0.0)

  def test_gradient_values(self):
    # d loss / d s_i = -1[i valid at its position] + sum_{k <= pos(i)}
    # softmax_{l >= k}(s)_i; in order: for K = 2, (-sigmoid(-D), sigmoid(-D)).
    s = jnp.array([[1.5, -0.5]])
    grad = jax.jit(jax.grad(plackett_luce_loss))(s)
    g = 1 / (1 + np.exp(2.0))
    np.testing.assert_allclose(grad, [[-g, g]], rtol=1e-6)
    # Shift invariance: each list's gradient sums to 0.
    grad = jax.jit(jax.grad(lambda s: plackett_luce_loss(
        s, PL_RANKING, mask=PL_MASK)))(PL_SCORES)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)

  def test_check_grads(self):
    fn = jax.jit(lambda s: plackett_luce_loss(s, PL_RANKING, mask=PL_MASK))
    jtu.check_grads(fn, (PL_SCORES,), order=1, modes=("fwd", "rev"),
                    eps=1e-2, atol=1e-3, rtol=1e-3)

  def test_bfloat16_inputs(self):
    fn = jax.jit(lambda s: plackett_luce_loss(s, PL_RANKING, mask=PL_MASK,
                                              reduction="none"))
    out = fn(PL_SCORES.astype(jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, fn(PL_SCORES), rtol=2e-2, atol=2e-2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_large_scores_are_finite(self):
    # Row 0 is correctly ordered (loss ~ 0); row 1 reversed:
    # (1e4 + 1e4) + (0 + 1e4) + 0 = 3e4.
    s = jnp.array([[1e4, 0.0, -1e4], [-1e4, 0.0, 1e4]])
    value, grad = self.variant(jax.value_and_grad(
        lambda s: plackett_luce_loss(s, reduction="sum")))(s)
    np.testing.assert_allclose(value, 3e4, rtol=1e-6)
    np.testing.assert_allclose(grad, [[0, 0, 0], [-1, -1, 2]], atol=1e-6)

  def test_bad_arguments_name_the_argument(self):
    s = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"`scores` must have shape \[B, K\]; "
                       r"got shape \(3,\)"):
      plackett_luce_loss(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`ranking`.*\(2, 3\).*\(2, 2\)"):
      plackett_luce_loss(s, jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(TypeError, match="`ranking` must be an integer"):
      plackett_luce_loss(s, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="`ranking` must hold a permutation"):
      plackett_luce_loss(s, jnp.array([[0, 1, 2], [0, 0, 1]]))
    with pytest.raises(ValueError, match="`ranking` must hold a permutation"):
      plackett_luce_loss(s, jnp.array([[0, 1, 2], [0, 1, 3]]))
    with pytest.raises(ValueError, match=r"`mask`.*\(2, 3\).*\(2,\)"):
      plackett_luce_loss(s, mask=jnp.ones(2, bool))
    with pytest.raises(ValueError, match=r"`weights`.*\(3,\)"):
      plackett_luce_loss(s, weights=jnp.ones(3))
    with pytest.raises(TypeError, match="`scores`.*bool"):
      plackett_luce_loss(jnp.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="`reduction`"):
      plackett_luce_loss(s, reduction="avg")

  def test_jit_with_traced_ranking(self):
    out = jax.jit(plackett_luce_loss)(PL_SCORES, PL_RANKING)
    np.testing.assert_allclose(
        out, _np_plackett_luce(PL_SCORES, PL_RANKING).mean(), rtol=1e-5)


class LipoLambdaWeightsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_spec_example(self):
    # psi = (2, 1, 0) correctly ranked: G = (3, 1, 0), 1/D = (1, 1/log2 3,
    # 1/2): Delta_12 = 0.738, Delta_13 = 1.5, Delta_23 = 0.131.
    w = self.variant(lipo_lambda_weights)(jnp.array([3.0, 2.0, 1.0]),
                                          jnp.array([2, 1, 0]))
    inv_log2_3 = 1 / np.log2(3)
    expected = np.array([[0, 2 * (1 - inv_log2_3), 1.5],
                         [2 * (1 - inv_log2_3), 0, inv_log2_3 - 0.5],
                         [1.5, inv_log2_3 - 0.5, 0]])
    np.testing.assert_allclose(w, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([w[0, 1], w[0, 2], w[1, 2]],
                               [0.738, 1.5, 0.131], atol=5e-4)

  def test_depends_on_the_current_ranking(self):
    # Same labels, reversed scores: tau = (3, 2, 1).
    w = _lipo(jnp.array([1.0, 2.0, 3.0]), jnp.array([2, 1, 0]))
    inv_d = 1 / np.log2(1 + np.array([3.0, 2.0, 1.0]))
    np.testing.assert_allclose(w[0, 1], 2 * abs(inv_d[0] - inv_d[1]),
                               rtol=1e-6)
    np.testing.assert_allclose(w[0, 2], 3 * abs(inv_d[0] - inv_d[2]),
                               rtol=1e-6)

  def test_ties_in_score_are_broken_by_position(self):
    # All scores equal (LiPO at initialisation): tau = (1, 2, 3) by index.
    w = _lipo(jnp.zeros(3), jnp.array([2, 1, 0]))
    np.testing.assert_allclose(
        w, _lipo(jnp.array([3.0, 2.0, 1.0]), jnp.array([2, 1, 0])), rtol=1e-6)
    self.assertGreater(float(w[0, 1]), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference_with_groups_and_mask(self):
    w = self.variant(lipo_lambda_weights)(AP_SCORES, AP_LABELS, AP_GROUPS,
                                          AP_MASK)
    ref = _np_lipo_weights(AP_SCORES, AP_LABELS, AP_GROUPS, AP_MASK)
    np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_array_equal(w[~AP_MASK], 0.0)

  def test_ranks_ignore_masked_items_and_other_groups(self):
    # Item 1 (masked, huge score) and item 3 (other group) do not push item 0
    # down: it stays at rank 1, item 2 at rank 2.
    scores = jnp.array([1.0, 100.0, 0.0, 50.0])
    labels = jnp.array([1, 5, 0, 3])
    w = _lipo(scores, labels, jnp.array([0, 0, 0, 1]),
              jnp.array([True, False, True, True]))
    np.testing.assert_allclose(w[0, 2], 1 * (1 - 1 / np.log2(3)), rtol=1e-6)
    np.testing.assert_array_equal(w[1], 0.0)
    np.testing.assert_array_equal(w[3], 0.0)

  def test_no_gradient(self):
    grad = jax.jit(jax.grad(lambda s: jnp.sum(lipo_lambda_weights(
        s, AP_LABELS, AP_GROUPS))))(AP_SCORES)
    np.testing.assert_array_equal(grad, 0.0)


class PairwisePreferenceMatrixTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_example(self):
    labels = jnp.array([2.0, 1.0, 1.0, jnp.nan, 0.0])
    groups = jnp.array([0, 0, 0, 0, 1])
    mask = jnp.array([True, True, True, False, True])
    p = self.variant(pairwise_preference_matrix)(labels, groups, mask)
    self.assertEqual(p.dtype, jnp.bool_)
    expected = np.zeros((5, 5), bool)
    expected[0, 1] = expected[0, 2] = True  # Ties (1, 2) give no pair.
    np.testing.assert_array_equal(p, expected)

  def test_default_is_one_group(self):
    p = pairwise_preference_matrix(jnp.array([0, 2, 1]))
    np.testing.assert_array_equal(
        p, [[False, False, False], [True, False, True], [True, False, False]])


class AllPairsBradleyTerryTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("uniform", "uniform", None),
      ("label_gap_pair_weights", "label_gap", AP_PAIR_WEIGHTS),
      ("lipo_lambda_pair_weights", "lipo_lambda", AP_PAIR_WEIGHTS))
  def test_matches_numpy_reference(self, weighting, pw):
    ref, count = _np_all_pairs(AP_SCORES, AP_LABELS, AP_GROUPS, AP_MASK,
                               weighting, pw)
    self.assertEqual(count, 11)  # 5 + 3 + 3 pairs in the three groups.

    def fn(reduction):
      return self.variant(lambda s, y, g, m, pw: all_pairs_bradley_terry_loss(
          s, y, group_ids=g, mask=m, pair_weights=pw, weighting=weighting,
          reduction=reduction))(AP_SCORES, AP_LABELS, AP_GROUPS, AP_MASK, pw)

    out = fn("none")
    self.assertEqual(out.shape, (12, 12))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fn("sum"), ref.sum(), rtol=1e-5)
    # The mean divides by the number of pairs, not by the sum of weights.
    np.testing.assert_allclose(fn("mean"), ref.sum() / count, rtol=1e-5)

  def test_spec_lipo_example_loss(self):
    # Scores (3, 2, 1), labels (2, 1, 0): pairs (1,2), (1,3), (2,3) with
    # gaps 1, 2, 1 and weights 0.7381, 1.5, 0.1309.
    w12, w13, w23 = 2 * (1 - 1 / np.log2(3)), 1.5, 1 / np.log2(3) - 0.5
    expected = (w12 * _softplus(-1) + w13 * _softplus(-2)
                + w23 * _softplus(-1)) / 3
    out = _all_pairs(jnp.array([3.0, 2.0, 1.0]), jnp.array([2, 1, 0]),
                     weighting="lipo_lambda")
    np.testing.assert_allclose(out, expected, rtol=1e-6)

  def test_hand_values(self):
    # One group, labels (1, 0, 0), scores 0: two pairs of log 2. Label gap
    # with labels (3, 1, 0): gaps 2, 3, 1 -> sum 6 log 2, mean 2 log 2.
    log2 = np.log(2.0)
    np.testing.assert_allclose(all_pairs_bradley_terry_loss(
        jnp.zeros(3), jnp.array([1, 0, 0]), reduction="sum"), 2 * log2,
                               rtol=1e-6)
    np.testing.assert_allclose(all_pairs_bradley_terry_loss(
        jnp.zeros(3), jnp.array([3, 1, 0]), weighting="label_gap"),
                               2 * log2, rtol=1e-6)

  @hypothesis.given(st.lists(st.floats(-20, 20), min_size=8, max_size=8),
                    st.lists(st.booleans(), min_size=4, max_size=4))
  @_SETTINGS
  def test_groups_of_two_equal_bradley_terry(self, scores, flips):
    # Groups {0, 1}, {2, 3}, ...: labels (1, 0), flipped in some groups.
    scores = np.asarray(scores, np.float32)
    labels = np.array([[0, 1] if f else [1, 0] for f in flips]).reshape(-1)
    groups = np.repeat(np.arange(4), 2)
    pairs = scores.reshape(4, 2)
    chosen = np.where(flips, pairs[:, 1], pairs[:, 0])
    rejected = np.where(flips, pairs[:, 0], pairs[:, 1])
    for weighting in ("uniform", "label_gap"):
      for reduction in ("mean", "sum"):
        out = _all_pairs(scores, labels, group_ids=groups,
                         weighting=weighting, reduction=reduction)
        expected = _bt(chosen, rejected, reduction=reduction)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

  @hypothesis.given(st.integers(0, 2**31 - 1), st.floats(-1e3, 1e3))
  @_SETTINGS
  def test_permutation_and_shift_invariance(self, seed, shift):
    perm = np.random.default_rng(seed).permutation(12)
    for weighting in ("uniform", "label_gap", "lipo_lambda"):
      ref = _all_pairs(
          AP_SCORES, AP_LABELS, group_ids=AP_GROUPS, mask=AP_MASK,
          weighting=weighting)
      permuted = _all_pairs(
          AP_SCORES[perm], AP_LABELS[perm], group_ids=AP_GROUPS[perm],
          mask=AP_MASK[perm], weighting=weighting)
      np.testing.assert_allclose(permuted, ref, rtol=1e-5)
      # float32 shift of |c| <= 1e3 perturbs s_i - s_j by ~1e-4.
      shifted = _all_pairs(
          AP_SCORES + np.float32(shift), AP_LABELS, group_ids=AP_GROUPS,
          mask=AP_MASK, weighting=weighting)
      np.testing.assert_allclose(shifted, ref, rtol=1e-3, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("label_gap", "lipo_lambda")
  def test_padding_with_masked_junk_changes_nothing(self, weighting):
    # Junk items in existing groups, with junk scores, labels and pair weights.
    s_pad = np.concatenate([AP_SCORES, [np.inf, np.nan, -1e30]])
    y_pad = np.concatenate([AP_LABELS, [1e6, -5, 1e6]]).astype(np.float32)
    y_pad[-2] = np.nan
    g_pad = np.concatenate([AP_GROUPS, [0, 1, 2]])
    m_pad = np.concatenate([AP_MASK, [False] * 3])
    pw_pad = np.full((15, 15), np.nan, np.float32)
    pw_pad[:12, :12] = AP_PAIR_WEIGHTS

    def loss(s, y, g, m, pw):
      return all_pairs_bradley_terry_loss(s, y, group_ids=g, mask=m,
                                          pair_weights=pw, weighting=weighting)

    grad_fn = self.variant(jax.value_and_grad(loss))
    value, grad = grad_fn(AP_SCORES, AP_LABELS.astype(np.float32), AP_GROUPS,
                          AP_MASK, AP_PAIR_WEIGHTS)
    value_pad, grad_pad = grad_fn(s_pad, y_pad, g_pad, m_pad, pw_pad)
    self.assertTrue(np.isfinite(value))
    np.testing.assert_allclose(value_pad, value, rtol=1e-6)
    np.testing.assert_allclose(grad_pad[:12], grad, rtol=1e-6)
    np.testing.assert_array_equal(grad_pad[12:], 0.0)
    np.testing.assert_array_equal(grad[~AP_MASK], 0.0)

  def test_listwise_layout_equals_per_list_losses(self):
    scores = PL_SCORES  # [B, K] = [5, 6]
    labels = np.argsort(PL_RANKING, axis=1)  # Grade = position in ranking.
    num_lists, list_size = scores.shape
    total = _all_pairs(
        scores.reshape(-1), labels.reshape(-1),
        group_ids=jnp.repeat(jnp.arange(num_lists), list_size),
        mask=PL_MASK.reshape(-1), reduction="sum")
    per_list = sum(
        float(_all_pairs(scores[b], labels[b], mask=PL_MASK[b],
                         reduction="sum"))
        for b in range(num_lists))
    np.testing.assert_allclose(total, per_list, rtol=1e-5)

  def test_no_valid_pair_gives_zero(self):
    for labels in ([1, 1, 1], [2, 1, 0]):
      out, grad = jax.value_and_grad(
          lambda s, y=labels: all_pairs_bradley_terry_loss(
              s, jnp.array(y), group_ids=jnp.arange(3)))(jnp.ones(3))
      self.assertEqual(float(out), 0.0)
      np.testing.assert_array_equal(grad, 0.0)

  def test_gradient_values_and_lipo_weights_are_constants(self):
    s = jnp.asarray(AP_SCORES)
    kwargs = dict(group_ids=AP_GROUPS, mask=AP_MASK)
    # Uniform: d/ds_i = sum over pairs of -sigmoid(s_j - s_i) (as winner)
    # and +sigmoid(s_j - s_i) (as loser), over the pair count.
    ref, count = _np_all_pairs(AP_SCORES, AP_LABELS, AP_GROUPS, AP_MASK)
    expected = np.zeros(12)
    for i, j in itertools.product(range(12), range(12)):
      if ref[i, j] > 0:
        g = 1 / (1 + np.exp(float(AP_SCORES[i]) - float(AP_SCORES[j])))
        expected[i] -= g / count
        expected[j] += g / count
    grad = jax.grad(lambda s: all_pairs_bradley_terry_loss(
        s, AP_LABELS, **kwargs))(s)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    # LiPO: the gradient is that of the loss with the weights frozen.
    lipo = jax.grad(lambda s: all_pairs_bradley_terry_loss(
        s, AP_LABELS, weighting="lipo_lambda", **kwargs))(s)
    frozen_w = lipo_lambda_weights(s, AP_LABELS, AP_GROUPS, AP_MASK)
    frozen = jax.grad(lambda s: all_pairs_bradley_terry_loss(
        s, AP_LABELS, pair_weights=frozen_w, **kwargs))(s)
    np.testing.assert_allclose(lipo, frozen, rtol=1e-6)

  @parameterized.parameters("uniform", "lipo_lambda")
  def test_check_grads(self, weighting):
    fn = jax.jit(lambda s: all_pairs_bradley_terry_loss(
        s, AP_LABELS, group_ids=AP_GROUPS, mask=AP_MASK,
        pair_weights=AP_PAIR_WEIGHTS, weighting=weighting))
    # Scores spaced > 2 eps apart so that the LiPO ranks stay put.
    scores = np.linspace(-2, 2, 12).astype(np.float32)[np.argsort(AP_SCORES)]
    jtu.check_grads(fn, (scores,), order=1, modes=("fwd", "rev"),
                    eps=1e-2, atol=1e-3, rtol=1e-3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_inputs(self):
    fn = self.variant(lambda s, y: all_pairs_bradley_terry_loss(
        s, y, group_ids=AP_GROUPS, mask=AP_MASK, weighting="label_gap",
        reduction="none"))
    out = fn(AP_SCORES.astype(jnp.bfloat16), AP_LABELS.astype(jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, fn(AP_SCORES, AP_LABELS), rtol=2e-2,
                               atol=2e-2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_large_scores_are_finite(self):
    s = jnp.array([1e4, -1e4, 0.0])
    y = jnp.array([2, 0, 1])
    # Correctly ranked pairs (0>1), (0>2), (2>1) with gaps >= 1e4: loss ~ 0.
    value, grad = self.variant(jax.value_and_grad(
        lambda s: all_pairs_bradley_terry_loss(s, y, reduction="sum")))(s)
    np.testing.assert_allclose(value, 0.0, atol=1e-6)
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    # Reversed labels (0, 2, 1): pairs (1>0), (1>2), (2>0) all wrong by
    # 2e4, 1e4, 1e4; d/ds = (1 + 1, -1 - 1, 1 - 1).
    for weighting in ("uniform", "lipo_lambda"):
      value, grad = self.variant(jax.value_and_grad(
          lambda s, w=weighting: all_pairs_bradley_terry_loss(
              s, 2 - y, reduction="sum", weighting=w)))(s)
      self.assertTrue(np.isfinite(value))
      self.assertTrue(np.all(np.isfinite(grad)))
      if weighting == "uniform":
        np.testing.assert_allclose(value, 4e4, rtol=1e-6)
        np.testing.assert_allclose(grad, [2.0, -2.0, 0.0], atol=1e-6)

  def test_bad_arguments_name_the_argument(self):
    s, y = jnp.zeros(3), jnp.array([1, 0, 0])
    with pytest.raises(ValueError, match="`weighting` must be one of"):
      all_pairs_bradley_terry_loss(s, y, weighting="lambda")
    with pytest.raises(ValueError, match="`reduction`"):
      all_pairs_bradley_terry_loss(s, y, reduction="avg")
    with pytest.raises(ValueError, match=r"`scores` must have shape \[N\]"):
      all_pairs_bradley_terry_loss(jnp.zeros((3, 1)), y)
    with pytest.raises(ValueError, match=r"`labels`.*\(3,\).*\(2,\)"):
      all_pairs_bradley_terry_loss(s, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`group_ids`.*\(3,\).*\(4,\)"):
      all_pairs_bradley_terry_loss(s, y, group_ids=jnp.zeros(4, jnp.int32))
    with pytest.raises(TypeError, match="`group_ids` must be an integer"):
      all_pairs_bradley_terry_loss(s, y, group_ids=jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`mask`.*\(3,\).*\(2,\)"):
      all_pairs_bradley_terry_loss(s, y, mask=jnp.ones(2, bool))
    with pytest.raises(ValueError, match=r"`pair_weights`.*\(3, 3\).*\(3,\)"):
      all_pairs_bradley_terry_loss(s, y, pair_weights=jnp.ones(3))
    with pytest.raises(TypeError, match="`labels`.*bool"):
      all_pairs_bradley_terry_loss(s, jnp.ones(3, bool))
    with pytest.raises(ValueError, match="`labels`"):
      pairwise_preference_matrix(jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="`scores`"):
      lipo_lambda_weights(jnp.zeros(2), jnp.zeros(3))

  def test_shape_errors_raise_under_jit(self):
    with pytest.raises(ValueError, match="`labels`"):
      jax.jit(all_pairs_bradley_terry_loss)(jnp.zeros(3), jnp.zeros(2))


class AllPairsImplementationsTest(chex.TestCase):
  """The all-pairs loss runs on `rmjax.kernels`: margins, paths, ties."""

  def test_margin_rules_hand_values(self):
    # One pair, labels (3, 0), scores tied: HelpSteer2-Preference's sanity
    # values (margin 3: 3.0486; scaled by the gap 3: 3 log 2 = 2.0794).
    s, y = jnp.zeros(2), jnp.array([3, 0])
    np.testing.assert_allclose(all_pairs_bradley_terry_loss(
        s, y, margin=3.0), 3.0486, atol=5e-5)
    np.testing.assert_allclose(all_pairs_bradley_terry_loss(
        s, y, margin=1.0, margin_rule="label_gap"), 3.0486, atol=5e-5)
    np.testing.assert_allclose(all_pairs_bradley_terry_loss(
        s, y, weighting="label_gap"), 2.0794, atol=5e-5)

  @parameterized.parameters("uniform", "lipo_lambda")
  def test_chunked_path_equals_reference_with_margin(self, weighting):
    fn = jax.jit(jax.value_and_grad(
        lambda s, impl: all_pairs_bradley_terry_loss(
            s, AP_LABELS, group_ids=AP_GROUPS, mask=AP_MASK,
            weighting=weighting, margin=0.5, margin_rule="label_gap",
            implementation=impl)), static_argnums=1)
    value, grad = fn(AP_SCORES, "chunked")
    ref_value, ref_grad = fn(AP_SCORES, "reference")
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)

  @parameterized.parameters("reference", "chunked")
  def test_gradient_at_tied_scores(self, implementation):
    # s = 0 (LiPO at initialisation): every pair's slope is sigmoid(0) = 1/2.
    grad = jax.jit(jax.grad(lambda s: all_pairs_bradley_terry_loss(
        s, jnp.array([2, 1, 0]), reduction="sum",
        implementation=implementation)))(jnp.zeros(3))
    np.testing.assert_allclose(grad, [-1.0, 0.0, 1.0], atol=1e-7)

  def test_bad_new_arguments_name_the_argument(self):
    s, y = jnp.zeros(3), jnp.array([1, 0, 0])
    with pytest.raises(ValueError, match="`margin_rule` must be one of"):
      all_pairs_bradley_terry_loss(s, y, margin=1.0, margin_rule="gap")
    with pytest.raises(ValueError, match="`implementation` must be one of"):
      all_pairs_bradley_terry_loss(s, y, implementation="cuda")
    with pytest.raises(ValueError, match="`margin` must be a real scalar"):
      all_pairs_bradley_terry_loss(s, y, margin=jnp.ones(3))
    with pytest.raises(NotImplementedError, match="reduction='none'"):
      all_pairs_bradley_terry_loss(s, y, reduction="none",
                                   implementation="chunked")
