"""Tests for rmjax.losses: the reduction convention and the BT family."""

import functools
import pathlib
import subprocess
import sys

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax import losses
from rmjax.losses import bradley_terry_loss
from rmjax.losses import l2_reward_penalty
from rmjax.losses import reduce_loss
from rmjax.losses import reward_centering_penalty
from rmjax.losses import scaled_bradley_terry_loss

# Spec sanity values are given to 4 decimals.
SPEC_ATOL = 5e-5


def _softplus(x):
  """Plain numpy reference of softplus(x) = log(1 + exp(x)), in float64."""
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def _np_bt(chosen, rejected, margin=0.0, a=0.0):
  z = np.asarray(chosen, np.float64) - np.asarray(rejected, np.float64) - margin
  return (1.0 - a) * _softplus(-z) + a * _softplus(z)


_RNG = np.random.default_rng(0)
CHOSEN = _RNG.normal(size=6).astype(np.float32)
REJECTED = _RNG.normal(size=6).astype(np.float32)
MARGIN = np.abs(_RNG.normal(size=6)).astype(np.float32)
STRENGTH = np.array([3, -1, 2, 0, -2, 1], np.float32)
WEIGHTS = np.array([1.0, 0.5, 2.0, 0.0, 1.5, 1.0], np.float32)
MASK = np.array([True, True, False, True, True, False])


class ReduceLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      # sum(w * v * l) = 2*1 + 1*2 + 0 + 1*4 = 8; valid count = 3.
      ("mean", "mean", 8.0 / 3.0),
      ("sum", "sum", 8.0),
  )
  def test_hand_values(self, reduction, expected):
    l = jnp.array([1.0, 2.0, 3.0, 4.0])
    w = jnp.array([2.0, 1.0, 5.0, 1.0])
    m = jnp.array([True, True, False, True])
    fn = self.variant(lambda l, w, m: reduce_loss(
        l, weights=w, mask=m, reduction=reduction))
    out = fn(l, w, m)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_none_zeroes_invalid_entries_exactly(self):
    l = jnp.array([1.0, jnp.inf, jnp.nan, 4.0])
    w = jnp.array([2.0, 1.0, 1.0, jnp.inf])
    m = jnp.array([1, 0, 0, 0])
    out = self.variant(lambda l, w, m: reduce_loss(
        l, weights=w, mask=m, reduction="none"))(l, w, m)
    np.testing.assert_array_equal(out, [2.0, 0.0, 0.0, 0.0])

  def test_weights_do_not_renormalise_the_mean(self):
    l = jnp.array([1.0, 3.0])
    # Weights (2, 2): the mean doubles; it is not sum(w l) / sum(w) = 2.
    np.testing.assert_allclose(reduce_loss(l, weights=jnp.array([2.0, 2.0])),
                               4.0)
    np.testing.assert_allclose(reduce_loss(l, weights=0.5), 1.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_no_valid_entries_gives_zero(self):
    fn = self.variant(lambda l, m: reduce_loss(l, mask=m))
    out = fn(jnp.array([jnp.inf, jnp.nan]), jnp.zeros(2, bool))
    self.assertEqual(float(out), 0.0)
    self.assertEqual(float(fn(jnp.zeros(0), jnp.zeros(0, bool))), 0.0)

  @parameterized.parameters("mean", "sum", "none")
  def test_masked_gradient_is_exactly_zero(self, reduction):
    l = jnp.array([1.0, jnp.inf, jnp.nan, 2.0])
    w = jnp.array([3.0, jnp.nan, jnp.inf, 1.0])
    m = jnp.array([True, False, False, True])

    def f(l, w):
      return jnp.sum(reduce_loss(l, weights=w, mask=m, reduction=reduction))

    grad_l, grad_w = jax.grad(f, argnums=(0, 1))(l, w)
    scale = 0.5 if reduction == "mean" else 1.0
    np.testing.assert_array_equal(grad_l, scale * np.array([3.0, 0, 0, 1.0]))
    np.testing.assert_array_equal(grad_w, scale * np.array([1.0, 0, 0, 2.0]))

  def test_bfloat16_is_upcast(self):
    out = reduce_loss(jnp.array([1.0, 2.0], jnp.bfloat16), reduction="none")
    self.assertEqual(out.dtype, jnp.float32)

  def test_bad_arguments(self):
    l = jnp.ones(3)
    with pytest.raises(ValueError, match="`reduction`.*'mean', 'sum', 'none'"):
      reduce_loss(l, reduction="avg")
    with pytest.raises(ValueError, match=r"`weights`.*\(3,\).*\(2,\)"):
      reduce_loss(l, weights=jnp.ones(2))
    with pytest.raises(ValueError, match=r"`mask`.*\(3,\).*\(3, 1\)"):
      reduce_loss(l, mask=jnp.ones((3, 1), bool))
    with pytest.raises(TypeError, match="`per_example`.*bool"):
      reduce_loss(jnp.ones(3, bool))


class BradleyTerrySanityTest(chex.TestCase):
  """The spec's sanity values, to 4 decimals."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("bt_delta0", 0.0, 0.0, 0.0, 0.6931),
      ("margin3_delta0", 0.0, 3.0, 0.0, 3.0486),
      ("smoothing0.1_delta2", 2.0, 0.0, 0.1, 0.3269),
  )
  def test_bradley_terry(self, delta, margin, smoothing, expected):
    fn = self.variant(lambda c, r, m: bradley_terry_loss(
        c, r, margin=m, label_smoothing=smoothing))
    out = fn(jnp.array([delta + 1.0]), jnp.array([1.0]), margin)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, expected, atol=SPEC_ATOL)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(3.0, -3.0)
  def test_scaled_bradley_terry(self, strength):
    fn = self.variant(scaled_bradley_terry_loss)
    out = fn(jnp.zeros(1), jnp.zeros(1), jnp.array([strength]))
    np.testing.assert_allclose(out, 2.0794, atol=SPEC_ATOL)


class BradleyTerryLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("plain", False, 0.0), ("margin", True, 0.0),
      ("smoothed", False, 0.2), ("margin_smoothed", True, 0.3))
  def test_matches_numpy_reference(self, use_margin, smoothing):
    margin = MARGIN if use_margin else 0.0
    fn = self.variant(lambda c, r, m: bradley_terry_loss(
        c, r, margin=m, label_smoothing=smoothing, reduction="none"))
    out = fn(CHOSEN, REJECTED, margin)
    self.assertEqual(out.shape, (6,))
    np.testing.assert_allclose(
        out, _np_bt(CHOSEN, REJECTED, margin, smoothing), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_weights_mask_and_reductions(self):
    ref = _np_bt(CHOSEN, REJECTED) * WEIGHTS * MASK

    def fn(reduction):
      return self.variant(lambda c, r, w, m: bradley_terry_loss(
          c, r, weights=w, mask=m, reduction=reduction))(
              CHOSEN, REJECTED, WEIGHTS, MASK)

    np.testing.assert_allclose(fn("none"), ref, rtol=1e-5)
    np.testing.assert_allclose(fn("sum"), ref.sum(), rtol=1e-5)
    # Mean over the 4 valid pairs, though one of them has weight 0.
    np.testing.assert_allclose(fn("mean"), ref.sum() / 4, rtol=1e-5)

  def test_hand_values_with_mask(self):
    # Delta = (0, 0, junk): loss (log 2, log 2), weights (1, 3): sum 4 log 2.
    c = jnp.array([1.0, 2.0, 7.0])
    r = jnp.array([1.0, 2.0, -5.0])
    kwargs = dict(weights=jnp.array([1.0, 3.0, 9.0]),
                  mask=jnp.array([1, 1, 0]))
    np.testing.assert_allclose(
        bradley_terry_loss(c, r, reduction="sum", **kwargs), 4 * np.log(2),
        rtol=1e-6)
    np.testing.assert_allclose(
        bradley_terry_loss(c, r, **kwargs), 2 * np.log(2), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_padding_with_masked_junk_changes_nothing(self):
    c, r = jnp.asarray(CHOSEN[:4]), jnp.asarray(REJECTED[:4])
    junk_c = jnp.array([jnp.inf, -jnp.inf, jnp.nan])
    junk_r = jnp.array([jnp.inf, 1e30, 0.0])
    c_pad = jnp.concatenate([c, junk_c])
    r_pad = jnp.concatenate([r, junk_r])
    mask = jnp.array([True] * 4 + [False] * 3)
    margin_pad = jnp.concatenate([jnp.full(4, 0.5), jnp.array([jnp.inf] * 3)])

    def loss(c, r, margin, mask):
      return bradley_terry_loss(c, r, margin=margin, mask=mask,
                                label_smoothing=0.1)

    grad_fn = self.variant(jax.value_and_grad(loss, argnums=(0, 1)))
    value, (g_c, g_r) = grad_fn(c, r, jnp.full(4, 0.5), None)
    value_pad, (g_c_pad, g_r_pad) = grad_fn(c_pad, r_pad, margin_pad, mask)
    np.testing.assert_allclose(value_pad, value, rtol=1e-6)
    np.testing.assert_allclose(g_c_pad[:4], g_c, rtol=1e-6)
    np.testing.assert_allclose(g_r_pad[:4], g_r, rtol=1e-6)
    np.testing.assert_array_equal(g_c_pad[4:], 0.0)
    np.testing.assert_array_equal(g_r_pad[4:], 0.0)

  def test_label_smoothing_is_a_mix_of_both_orientations(self):
    a = 0.2
    smoothed = bradley_terry_loss(CHOSEN, REJECTED, label_smoothing=a,
                                  reduction="none")
    forward = bradley_terry_loss(CHOSEN, REJECTED, reduction="none")
    swapped = bradley_terry_loss(REJECTED, CHOSEN, reduction="none")
    np.testing.assert_allclose(smoothed, (1 - a) * forward + a * swapped,
                               rtol=1e-5)
    smoothed_swapped = bradley_terry_loss(REJECTED, CHOSEN, label_smoothing=a,
                                          reduction="none")
    np.testing.assert_allclose(smoothed + smoothed_swapped, forward + swapped,
                               rtol=1e-5)

  def test_label_smoothing_optimum_is_at_logit_one_minus_a(self):
    # d/dDelta [(1-a) sp(-D) + a sp(D)] = 0 at sigmoid(D) = 1 - a.
    a = 0.1
    grad = jax.grad(lambda c: bradley_terry_loss(
        c, jnp.zeros(1), label_smoothing=a))
    optimum = np.log((1 - a) / a)
    np.testing.assert_allclose(grad(jnp.array([optimum])), 0.0, atol=1e-6)
    self.assertLess(float(grad(jnp.array([optimum - 1.0]))[0]), 0.0)
    self.assertGreater(float(grad(jnp.array([optimum + 1.0]))[0]), 0.0)

  def test_gradient_values_and_signs(self):
    c, r = jnp.asarray(CHOSEN), jnp.asarray(REJECTED)
    g_c, g_r = jax.grad(bradley_terry_loss, argnums=(0, 1))(c, r)
    # d/dc mean_i softplus(-Delta_i) = -sigmoid(-Delta_i) / B.
    expected = -1.0 / (1.0 + np.exp(CHOSEN - REJECTED)) / 6
    np.testing.assert_allclose(g_c, expected, rtol=1e-5)
    np.testing.assert_allclose(g_r, -expected, rtol=1e-5)
    self.assertTrue(np.all(np.asarray(g_c) < 0))
    g_c_scaled = jax.grad(scaled_bradley_terry_loss)(
        c, r, jnp.asarray(STRENGTH))
    np.testing.assert_array_equal(np.asarray(g_c_scaled) < 0, STRENGTH != 0)
    np.testing.assert_array_equal(np.asarray(g_c_scaled)[STRENGTH == 0], 0.0)

  @parameterized.named_parameters(
      ("plain", {}), ("margin", {"margin": 0.7}),
      ("smoothed", {"label_smoothing": 0.25}))
  def test_check_grads(self, kwargs):
    fn = lambda c, r: bradley_terry_loss(c, r, weights=WEIGHTS, **kwargs)
    jtu.check_grads(fn, (CHOSEN, REJECTED), order=1, modes=("fwd", "rev"),
                    eps=1e-2, atol=1e-3, rtol=1e-3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_inputs(self):
    fn = self.variant(lambda c, r: bradley_terry_loss(
        c, r, margin=0.5, label_smoothing=0.1, reduction="none"))
    out = fn(CHOSEN.astype(jnp.bfloat16), REJECTED.astype(jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, fn(CHOSEN, REJECTED), rtol=2e-2, atol=2e-2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_large_rewards_are_finite(self):
    c = jnp.array([1e4, -1e4])
    r = jnp.array([-1e4, 1e4])

    def loss(c, r):
      return bradley_terry_loss(c, r, label_smoothing=0.1, reduction="sum")

    value, (g_c, g_r) = self.variant(
        jax.value_and_grad(loss, argnums=(0, 1)))(c, r)
    # 0.1 * 2e4 + 0.9 * 2e4 (up to exp(-2e4) terms).
    np.testing.assert_allclose(value, 2e4, rtol=1e-6)
    np.testing.assert_allclose(g_c, [0.1, -0.9], rtol=1e-6)
    np.testing.assert_allclose(g_r, [-0.1, 0.9], rtol=1e-6)
    plain, g_plain = jax.value_and_grad(bradley_terry_loss)(c, r)
    np.testing.assert_allclose(plain, 1e4, rtol=1e-6)
    np.testing.assert_allclose(g_plain, [0.0, -0.5], atol=1e-7)

  def test_bad_arguments_name_the_argument(self):
    c, r = jnp.zeros(3), jnp.zeros(3)
    with pytest.raises(ValueError, match=r"`chosen_rewards` must have shape "
                       r"\[B\]; got shape \(3, 1\)"):
      bradley_terry_loss(c[:, None], r[:, None])
    with pytest.raises(ValueError, match=r"`rejected_rewards`.*\(3,\).*\(4,\)"):
      bradley_terry_loss(c, jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`margin`.*\(2,\)"):
      bradley_terry_loss(c, r, margin=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`weights`.*\(3, 1\)"):
      bradley_terry_loss(c, r, weights=jnp.ones((3, 1)))
    with pytest.raises(ValueError, match=r"`weights`.*\(\)"):
      bradley_terry_loss(c, r, weights=1.0)
    with pytest.raises(ValueError, match=r"`mask`.*\(3,\).*\(2,\)"):
      bradley_terry_loss(c, r, mask=jnp.ones(2, bool))
    with pytest.raises(TypeError, match="`chosen_rewards`.*bool"):
      bradley_terry_loss(jnp.zeros(3, bool), r)
    with pytest.raises(ValueError, match="`reduction`"):
      bradley_terry_loss(c, r, reduction="batchmean")
    for bad in (0.5, -0.1, float("nan"), 1):
      with pytest.raises(ValueError, match=r"`label_smoothing`.*\[0, 0.5\)"):
        bradley_terry_loss(c, r, label_smoothing=bad)
    for bad in (jnp.array(0.1), True, "0.1"):
      with pytest.raises(ValueError,
                         match="`label_smoothing` must be a Python"):
        bradley_terry_loss(c, r, label_smoothing=bad)

  def test_shape_errors_raise_under_jit(self):
    with pytest.raises(ValueError, match="`rejected_rewards`"):
      jax.jit(bradley_terry_loss)(jnp.zeros(3), jnp.zeros(2))


class ScaledBradleyTerryTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_reference_and_drops_ties(self):
    ref = np.abs(STRENGTH) * _np_bt(CHOSEN, REJECTED) * WEIGHTS * MASK
    # 3: pair 3 is valid but a tie.
    num_valid_untied = np.sum(MASK & (STRENGTH != 0))
    self.assertEqual(num_valid_untied, 3)

    def fn(reduction):
      return self.variant(lambda c, r, s, w, m: scaled_bradley_terry_loss(
          c, r, s, weights=w, mask=m, reduction=reduction))(
              CHOSEN, REJECTED, STRENGTH, WEIGHTS, MASK)

    np.testing.assert_allclose(fn("none"), ref, rtol=1e-5)
    np.testing.assert_allclose(fn("sum"), ref.sum(), rtol=1e-5)
    np.testing.assert_allclose(fn("mean"), ref.sum() / 3, rtol=1e-5)

  def test_ties_are_dropped_from_the_mean(self):
    # Strength (2, 0) at Delta = 0: 2 log 2 over one non-tied pair.
    out = scaled_bradley_terry_loss(jnp.zeros(2), jnp.zeros(2),
                                    jnp.array([2, 0]))
    np.testing.assert_allclose(out, 2 * np.log(2), rtol=1e-6)
    all_ties = scaled_bradley_terry_loss(jnp.zeros(2), jnp.zeros(2),
                                         jnp.zeros(2))
    self.assertEqual(float(all_ties), 0.0)

  def test_check_grads(self):
    fn = lambda c, r: scaled_bradley_terry_loss(c, r, STRENGTH, mask=MASK)
    jtu.check_grads(fn, (CHOSEN, REJECTED), order=1, modes=("fwd", "rev"),
                    eps=1e-2, atol=1e-3, rtol=1e-3)

  def test_large_rewards_are_finite(self):
    value, grad = jax.value_and_grad(scaled_bradley_terry_loss)(
        jnp.array([-1e4, 1e4]), jnp.array([1e4, -1e4]), jnp.array([3.0, 1.0]))
    np.testing.assert_allclose(value, 3 * 2e4 / 2, rtol=1e-6)
    np.testing.assert_allclose(grad, [-1.5, 0.0], atol=1e-7)

  def test_bfloat16_inputs(self):
    out = scaled_bradley_terry_loss(
        CHOSEN.astype(jnp.bfloat16), REJECTED.astype(jnp.bfloat16),
        STRENGTH.astype(jnp.bfloat16), reduction="none")
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(
        out, scaled_bradley_terry_loss(CHOSEN, REJECTED, STRENGTH,
                                       reduction="none"), rtol=2e-2, atol=2e-2)

  def test_bad_strength_shape(self):
    with pytest.raises(ValueError, match=r"`strength`.*\(3,\).*\(\)"):
      scaled_bradley_terry_loss(jnp.zeros(3), jnp.zeros(3), 1.0)


class RewardPenaltiesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      # Pairs (1, 2), (2, -2), masked (inf, 5).
      ("centering", reward_centering_penalty, [9.0, 0.0, 0.0]),
      ("l2", l2_reward_penalty, [5.0, 8.0, 0.0]),
  )
  def test_hand_values(self, penalty, per_pair):
    c = jnp.array([1.0, 2.0, jnp.inf])
    r = jnp.array([2.0, -2.0, 5.0])
    m = jnp.array([True, True, False])
    for reduction, expected in (("none", per_pair), ("sum", sum(per_pair)),
                                ("mean", sum(per_pair) / 2)):
      fn = functools.partial(penalty, reduction=reduction)
      out = self.variant(lambda c, r, m, fn=fn: fn(c, r, mask=m))(c, r, m)
      self.assertEqual(out.dtype, jnp.float32)
      np.testing.assert_allclose(out, expected, rtol=1e-6)
    g_c, g_r = jax.grad(lambda c, r: penalty(c, r, mask=m),
                        argnums=(0, 1))(c, r)
    if penalty is reward_centering_penalty:  # d/dc = 2 (c + r) / 2 valid.
      np.testing.assert_array_equal(g_c, [3.0, 0.0, 0.0])
      np.testing.assert_array_equal(g_r, [3.0, 0.0, 0.0])
    else:  # d/dc = 2 c / 2, d/dr = 2 r / 2.
      np.testing.assert_array_equal(g_c, [1.0, 2.0, 0.0])
      np.testing.assert_array_equal(g_r, [2.0, -2.0, 0.0])

  @parameterized.parameters(reward_centering_penalty, l2_reward_penalty)
  def test_check_grads_and_large_rewards(self, penalty):
    jtu.check_grads(lambda c, r: penalty(c, r), (CHOSEN, REJECTED), order=1,
                    modes=("fwd", "rev"), eps=1e-2, atol=1e-3, rtol=1e-3)
    value, grad = jax.value_and_grad(penalty)(jnp.array([1e4]),
                                              jnp.array([1e4]))
    expected = 4e8 if penalty is reward_centering_penalty else 2e8
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_bfloat16_and_bad_shapes(self):
    out = reward_centering_penalty(jnp.ones(2, jnp.bfloat16),
                                   jnp.ones(2, jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    with pytest.raises(ValueError, match="`rejected_rewards`"):
      l2_reward_penalty(jnp.zeros(2), jnp.zeros(3))


def test_public_api_is_exported_and_documented():
  for name in ("bradley_terry_loss", "scaled_bradley_terry_loss",
               "reward_centering_penalty", "l2_reward_penalty", "reduce_loss"):
    assert name in losses.__all__, name
  for name in losses.__all__:
    value = getattr(losses, name)
    if callable(value) and not isinstance(value, type):  # States are documented NamedTuples.
      # Every public function documents its shapes and carries a runnable example.
      assert value.__doc__ and ">>>" in value.__doc__ and "Args:" in value.__doc__, name


@pytest.mark.slow
def test_import_is_light():
  code = (
      "import sys, rmjax.losses, rmjax.eval, rmjax.transforms\n"
      "heavy = ('flax', 'optax', 'orbax', 'tensorflow_datasets', 'grain',"
      " 'tensorflow', 'safetensors', 'gguf', 'tokenizers', 'matplotlib')\n"
      "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n")
  repo_root = pathlib.Path(__file__).resolve().parents[1]
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True, timeout=120, cwd=repo_root)
  assert result.stdout.strip() == "[]", result.stdout
