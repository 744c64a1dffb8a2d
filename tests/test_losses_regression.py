"""Tests for rmjax.losses.regression: attribute regression and HelpSteer2."""

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
from rmjax.losses.regression import attribute_regression_loss
from rmjax.losses.regression import HELPSTEER2_ATTRIBUTES
from rmjax.losses.regression import HELPSTEER2_SCORE_WEIGHTS
from rmjax.losses.regression import helpsteer2_attribute_score
from rmjax.losses.regression import joint_preference_regression_loss


def _np_attribute_mse(predictions, targets, present):
  """Per-example mean of squared errors over present attributes (float64)."""
  out = np.zeros(len(predictions))
  for b in range(len(predictions)):
    errors = [(float(p) - float(t)) ** 2
              for p, t, m in zip(predictions[b], targets[b], present[b]) if m]
    out[b] = np.mean(errors) if errors else 0.0
  return out


_RNG = np.random.default_rng(0)
PRED = _RNG.normal(2.0, 1.0, size=(6, 5)).astype(np.float32)
TARGET = _RNG.integers(0, 5, size=(6, 5)).astype(np.float32)
PRESENT = _RNG.random((6, 5)) > 0.3
PRESENT[2] = False  # No attribute rated: dropped from the mean.
PRESENT[0] = True
MASK = np.array([True, True, True, True, False, True])
WEIGHTS = np.array([1.0, 0.5, 3.0, 2.0, 7.0, 0.0], np.float32)
CHOSEN = _RNG.normal(size=4).astype(np.float32)
REJECTED = _RNG.normal(size=4).astype(np.float32)


class AttributeRegressionLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    # Example 0: errors (1, 2, 0) all present -> (1 + 4 + 0) / 3 = 5/3.
    # Example 1: errors (3, -, 1), the second missing (NaN) -> (9 + 1) / 2.
    # Example 2: nothing present -> 0 and not counted in the mean.
    pred = jnp.array([[1.0, 2.0, 0.0], [3.0, 5.0, -1.0], [1.0, 1.0, 1.0]])
    target = jnp.array([[0.0, 0.0, 0.0], [0.0, jnp.nan, 0.0],
                        [0.0, 0.0, 0.0]])
    present = jnp.array([[1, 1, 1], [1, 0, 1], [0, 0, 0]], bool)
    fn = lambda reduction: self.variant(
        lambda p, t, m: attribute_regression_loss(
            p, t, attribute_mask=m, reduction=reduction))(pred, target, present)
    none = fn("none")
    self.assertEqual(none.dtype, jnp.float32)
    np.testing.assert_allclose(none, [5 / 3, 5.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(fn("sum"), 5 / 3 + 5, rtol=1e-6)
    np.testing.assert_allclose(fn("mean"), (5 / 3 + 5) / 2, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    ref = _np_attribute_mse(PRED, TARGET, PRESENT) * WEIGHTS * MASK
    valid = MASK & PRESENT.any(axis=1)
    self.assertEqual(valid.sum(), 4)

    def fn(reduction):
      return self.variant(lambda p, t, a, w, m: attribute_regression_loss(
          p, t, attribute_mask=a, weights=w, mask=m, reduction=reduction))(
              PRED, TARGET, PRESENT, WEIGHTS, MASK)

    np.testing.assert_allclose(fn("none"), ref, rtol=1e-5)
    np.testing.assert_allclose(fn("sum"), ref.sum(), rtol=1e-5)
    # Mean over the 4 valid examples with a rated attribute (one has w = 0).
    np.testing.assert_allclose(fn("mean"), ref.sum() / 4, rtol=1e-5)
    # Without masks: the plain MSE of the whole matrix.
    plain = self.variant(attribute_regression_loss)(PRED, TARGET)
    np.testing.assert_allclose(plain, np.mean((PRED - TARGET) ** 2),
                               rtol=1e-5)

  @hypothesis.given(st.integers(0, 2**31 - 1))
  @hypothesis.settings(max_examples=10, deadline=None, derandomize=True)
  def test_permuting_attributes_changes_nothing(self, seed):
    perm = np.random.default_rng(seed).permutation(5)
    out = attribute_regression_loss(PRED[:, perm], TARGET[:, perm],
                                    attribute_mask=PRESENT[:, perm],
                                    reduction="none")
    ref = attribute_regression_loss(PRED, TARGET, attribute_mask=PRESENT,
                                    reduction="none")
    np.testing.assert_allclose(out, ref, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_missing_attributes_and_masked_examples_are_inert(self):
    # Junk (inf, NaN) in missing attributes and in masked examples changes
    # neither the value nor the gradient, which is exactly 0 there.
    pred = PRED.copy()
    target = TARGET.copy()
    pred[~PRESENT] = np.inf
    target[~PRESENT] = np.nan
    pred[4] = np.nan  # Example 4 is masked.

    def loss(p, t):
      return attribute_regression_loss(p, t, attribute_mask=PRESENT,
                                       mask=MASK)

    grad_fn = self.variant(jax.value_and_grad(loss))
    value, grad = grad_fn(pred, target)
    clean_value, clean_grad = grad_fn(PRED, TARGET)
    self.assertTrue(np.isfinite(value))
    np.testing.assert_allclose(value, clean_value, rtol=1e-6)
    np.testing.assert_allclose(grad, clean_grad, rtol=1e-6)
    inert = ~PRESENT | ~MASK[:, None]
    np.testing.assert_array_equal(grad[inert], 0.0)
    # d/dp_ba = 2 (p - t) / (n_b * num_valid) where present.
    n = PRESENT.sum(axis=1, keepdims=True)
    expected = np.where(inert, 0.0,
                        2 * (PRED - TARGET) / (np.maximum(n, 1) * 4))
    np.testing.assert_allclose(grad, expected, rtol=1e-5)

  def test_check_grads(self):
    fn = jax.jit(lambda p: attribute_regression_loss(
        p, TARGET, attribute_mask=PRESENT, weights=WEIGHTS, mask=MASK))
    jtu.check_grads(fn, (PRED,), order=1, modes=("fwd", "rev"), eps=1e-2,
                    atol=1e-3, rtol=1e-3)

  def test_no_valid_example_gives_zero(self):
    out = attribute_regression_loss(PRED, TARGET,
                                    attribute_mask=np.zeros((6, 5), bool))
    self.assertEqual(float(out), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_inputs(self):
    fn = self.variant(lambda p, t: attribute_regression_loss(
        p, t, attribute_mask=PRESENT, reduction="none"))
    out = fn(PRED.astype(jnp.bfloat16), TARGET.astype(jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, fn(PRED, TARGET), rtol=2e-2, atol=2e-2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_large_values_are_finite(self):
    value, grad = self.variant(jax.value_and_grad(attribute_regression_loss))(
        jnp.array([[1e4, -1e4]]), jnp.array([[-1e4, 1e4]]))
    np.testing.assert_allclose(value, 4e8, rtol=1e-6)
    np.testing.assert_allclose(grad, [[2e4, -2e4]], rtol=1e-6)

  def test_bad_arguments_name_the_argument(self):
    p = jnp.zeros((2, 5))
    with pytest.raises(ValueError, match=r"`predictions` must have shape "
                       r"\[B, A\]; got shape \(5,\)"):
      attribute_regression_loss(jnp.zeros(5), jnp.zeros(5))
    with pytest.raises(ValueError, match=r"`targets`.*\(2, 5\).*\(2, 4\)"):
      attribute_regression_loss(p, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"`attribute_mask`.*\(2, 5\).*\(2,\)"):
      attribute_regression_loss(p, p, attribute_mask=jnp.ones(2, bool))
    with pytest.raises(ValueError, match=r"`mask`.*\(2,\).*\(2, 5\)"):
      attribute_regression_loss(p, p, mask=jnp.ones((2, 5), bool))
    with pytest.raises(ValueError, match=r"`weights`.*\(2,\).*\(5,\)"):
      attribute_regression_loss(p, p, weights=jnp.ones(5))
    with pytest.raises(TypeError, match="`predictions`.*bool"):
      attribute_regression_loss(jnp.zeros((2, 5), bool), p)
    with pytest.raises(ValueError, match="`reduction`"):
      attribute_regression_loss(p, p, reduction="avg")

  def test_shape_errors_raise_under_jit(self):
    with pytest.raises(ValueError, match="`targets`"):
      jax.jit(attribute_regression_loss)(jnp.zeros((2, 5)), jnp.zeros((3, 5)))


class HelpSteer2ScoreTest(chex.TestCase):

  def test_constants(self):
    self.assertEqual(HELPSTEER2_ATTRIBUTES, ("helpfulness", "correctness",
                                             "coherence", "complexity",
                                             "verbosity"))
    self.assertEqual(HELPSTEER2_SCORE_WEIGHTS, (0.3, 0.74, 0.46, 0.47, -0.33))

  @chex.variants(with_jit=True, without_jit=True)
  def test_spec_sanity_value(self):
    # 0.9 + 2.22 + 1.84 + 0.94 - 0.66 = 5.24.
    out = self.variant(helpsteer2_attribute_score)(
        jnp.array([[3, 3, 4, 2, 2], [0, 0, 0, 0, 0]]))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, [5.24, 0.0], atol=1e-6)

  def test_matches_numpy_reference_and_custom_weights(self):
    ref = PRED.astype(np.float64) @ np.array(HELPSTEER2_SCORE_WEIGHTS)
    np.testing.assert_allclose(helpsteer2_attribute_score(PRED), ref,
                               rtol=1e-5)
    # Helpfulness only.
    np.testing.assert_allclose(
        helpsteer2_attribute_score(PRED, (1.0, 0, 0, 0, 0)), PRED[:, 0])
    out = helpsteer2_attribute_score(PRED[:, :2], jnp.array([2.0, -1.0]))
    np.testing.assert_allclose(out, 2 * PRED[:, 0] - PRED[:, 1], rtol=1e-6)

  def test_gradient_is_the_weights(self):
    grad = jax.grad(lambda a: jnp.sum(helpsteer2_attribute_score(a)))(PRED)
    np.testing.assert_allclose(
        grad, np.broadcast_to(HELPSTEER2_SCORE_WEIGHTS, PRED.shape),
        rtol=1e-6)

  def test_bfloat16_and_large_inputs(self):
    out = helpsteer2_attribute_score(
        jnp.array([[3, 3, 4, 2, 2]], jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, [5.24], atol=1e-5)
    big = helpsteer2_attribute_score(jnp.full((1, 5), 1e4))
    np.testing.assert_allclose(big, [1.64e4], rtol=1e-6)

  def test_bad_arguments_name_the_argument(self):
    with pytest.raises(ValueError, match=r"`attributes` must have shape "
                       r"\[B, A\]; got shape \(5,\)"):
      helpsteer2_attribute_score(jnp.zeros(5))
    with pytest.raises(ValueError, match=r"`weights` must have shape \[A\] = "
                       r"\(4,\).*\(5,\)"):
      helpsteer2_attribute_score(jnp.zeros((2, 4)))
    with pytest.raises(TypeError, match="`attributes`.*bool"):
      helpsteer2_attribute_score(jnp.zeros((2, 5), bool))


class JointPreferenceRegressionLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 0.3, 0.5, 1.0)
  def test_is_the_convex_combination(self, bt_weight):
    margin = np.float32(0.5)
    pair_mask = np.array([True, False, True, True])
    fn = self.variant(lambda c, r, p, t: joint_preference_regression_loss(
        c, r, p, t, bt_weight=bt_weight, attribute_mask=PRESENT,
        margin=margin, mask=pair_mask, regression_mask=MASK))
    out = fn(CHOSEN, REJECTED, PRED, TARGET)
    self.assertEqual(out.shape, ())
    self.assertEqual(out.dtype, jnp.float32)
    bt = bradley_terry_loss(CHOSEN, REJECTED, margin=margin, mask=pair_mask)
    mse = attribute_regression_loss(PRED, TARGET, attribute_mask=PRESENT,
                                    mask=MASK)
    np.testing.assert_allclose(out, bt_weight * bt + (1 - bt_weight) * mse,
                               rtol=1e-6)

  def test_hand_value(self):
    # Delta = 0 -> log 2; predictions (1, 2) vs 0 -> 2.5; margin 3 -> 3.0486.
    args = (jnp.zeros(1), jnp.zeros(1), jnp.array([[1.0, 2.0]]),
            jnp.zeros((1, 2)))
    np.testing.assert_allclose(joint_preference_regression_loss(*args),
                               0.5 * np.log(2) + 0.5 * 2.5, rtol=1e-6)
    np.testing.assert_allclose(
        joint_preference_regression_loss(*args, bt_weight=0.25, margin=3.0),
        0.25 * 3.0486 + 0.75 * 2.5, atol=5e-5)

  def test_gradients_split_by_term(self):
    # d/dchosen comes only from BT (scaled by lambda), d/dpredictions only
    # from the MSE (scaled by 1 - lambda).
    lam = 0.3
    g_c, g_p = jax.grad(
        lambda c, p: joint_preference_regression_loss(
            c, REJECTED, p, TARGET, bt_weight=lam), argnums=(0, 1))(
                jnp.asarray(CHOSEN), jnp.asarray(PRED))
    g_bt = jax.grad(lambda c: bradley_terry_loss(c, REJECTED))(CHOSEN)
    g_mse = jax.grad(lambda p: attribute_regression_loss(p, TARGET))(PRED)
    np.testing.assert_allclose(g_c, lam * g_bt, rtol=1e-6)
    np.testing.assert_allclose(g_p, (1 - lam) * g_mse, rtol=1e-6)

  def test_check_grads_and_large_inputs(self):
    fn = jax.jit(lambda c, r, p: joint_preference_regression_loss(
        c, r, p, TARGET, bt_weight=0.7, attribute_mask=PRESENT))
    jtu.check_grads(fn, (CHOSEN, REJECTED, PRED), order=1,
                    modes=("fwd", "rev"), eps=1e-2, atol=1e-3, rtol=1e-3)
    value, grads = jax.value_and_grad(
        lambda c, r, p: joint_preference_regression_loss(
            c, r, p, jnp.zeros((1, 2))), argnums=(0, 1, 2))(
                jnp.array([-1e4]), jnp.array([1e4]), jnp.array([[1e4, 0.0]]))
    # 0.5 * 2e4 + 0.5 * 1e8 / 2.
    np.testing.assert_allclose(value, 1e4 + 2.5e7, rtol=1e-6)
    self.assertTrue(all(np.all(np.isfinite(g)) for g in grads))

  def test_bfloat16_inputs(self):
    bf16 = lambda x: jnp.asarray(x, jnp.bfloat16)
    out = joint_preference_regression_loss(bf16(CHOSEN), bf16(REJECTED),
                                           bf16(PRED), bf16(TARGET))
    self.assertEqual(out.dtype, jnp.float32)
    ref = joint_preference_regression_loss(CHOSEN, REJECTED, PRED, TARGET)
    np.testing.assert_allclose(out, ref, rtol=2e-2)

  def test_bad_arguments_name_the_argument(self):
    args = (CHOSEN, REJECTED, PRED, TARGET)
    for bad in (-0.1, 1.5, float("nan")):
      with pytest.raises(ValueError, match=r"`bt_weight` must be in \[0, 1\]"):
        joint_preference_regression_loss(*args, bt_weight=bad)
    for bad in (jnp.array(0.5), True, "0.5"):
      with pytest.raises(ValueError, match="`bt_weight` must be a Python"):
        joint_preference_regression_loss(*args, bt_weight=bad)
    with pytest.raises(ValueError, match="`rejected_rewards`"):
      joint_preference_regression_loss(CHOSEN, REJECTED[:3], PRED, TARGET)
    with pytest.raises(ValueError, match="`targets`"):
      joint_preference_regression_loss(CHOSEN, REJECTED, PRED, TARGET[:2])
    with pytest.raises(ValueError,
                       match=r"`regression_mask`.*\(6,\).*\(2,\)"):
      joint_preference_regression_loss(*args, regression_mask=MASK[:2])
    with pytest.raises(ValueError, match=r"`margin`"):
      joint_preference_regression_loss(*args, margin=jnp.zeros(3))
