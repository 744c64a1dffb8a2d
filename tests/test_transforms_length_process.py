"""Length penalties, process-reward refinements and the RLCR calibration reward."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import transforms


class LengthPenaltyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_linear_pars_setting(self):
    fn = self.variant(transforms.linear_length_penalty)
    out = fn(jnp.array([2.0, 2.0, 2.0]), jnp.array([100, 300, 450]))
    np.testing.assert_allclose(out, [2.0, 2.0, 0.5], rtol=1e-6)  # 2 - 0.01 * 150

  @chex.variants(with_jit=True, without_jit=True)
  def test_dapo_piecewise(self):
    # L_max = 20, L_cache = 4: free up to 16, linear to -1 at 20, -1 beyond.
    fn = self.variant(lambda r, l: transforms.dapo_overlong_penalty(
        r, l, max_length=20, cache_length=4, penalty_factor=0.5))
    lengths = jnp.array([0, 16, 17, 19, 20, 25])
    out = fn(jnp.ones(6), lengths)
    np.testing.assert_allclose(out, 1 + 0.5 * np.array([0, 0, -0.25, -0.75, -1, -1]), rtol=1e-6)

  def test_dapo_agrees_with_the_spec_formula_up_to_max_length(self):
    lengths = np.arange(0, 21)
    spec = np.minimum(-(lengths - (20 - 4)) / 4, 0)
    out = transforms.dapo_overlong_penalty(jnp.zeros(21), lengths, max_length=20, cache_length=4)
    np.testing.assert_allclose(out, spec, rtol=1e-6, atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  def test_dler_truncation(self):
    r, lengths = jnp.array([1.0, -0.5, 1.0]), jnp.array([50, 200, 101])
    out = self.variant(lambda r, l: transforms.dler_truncation_penalty(r, l, max_length=100))(
        r, lengths)
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.0])
    out = transforms.dler_truncation_penalty(r, lengths, max_length=100, scale=0.1, penalty=0.2)
    np.testing.assert_allclose(out, [1.0, -0.25, -0.1], rtol=1e-6)

  def test_masks_gradients_and_bfloat16(self):
    r = jnp.array([1.0, jnp.nan], jnp.bfloat16)
    lengths = jnp.array([400.0, jnp.inf])
    m = jnp.array([True, False])
    fns = (lambda r: transforms.linear_length_penalty(r, lengths, mask=m),
           lambda r: transforms.dapo_overlong_penalty(r, lengths, max_length=500,
                                                      cache_length=200, mask=m),
           lambda r: transforms.dler_truncation_penalty(r, lengths, max_length=300, mask=m))
    outs = jax.jit(lambda r: [(fn(r), jax.grad(lambda x, fn=fn: fn(x).sum())(
        r.astype(jnp.float32))) for fn in fns])(r)
    for out, grad in outs:
      assert out.dtype == jnp.float32 and out[1] == 0 and np.isfinite(out[0])
      assert grad[1] == 0 and np.isfinite(grad[0])

  def test_errors(self):
    r = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"`lengths`.*\(3,\).*\(2,\)"):
      transforms.linear_length_penalty(r, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`cache_length`.*\(0.0, 10.0\].*20"):
      transforms.dapo_overlong_penalty(r, jnp.zeros(3), max_length=10, cache_length=20)
    with pytest.raises(ValueError, match=r"`scale`.*\[0.0, 1.0\]"):
      transforms.dler_truncation_penalty(r, jnp.zeros(3), max_length=10, scale=2.0)
    with pytest.raises(TypeError, match=r"max_length"):
      transforms.dler_truncation_penalty(r, jnp.zeros(3))  # no default


class ProcessRewardTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_clip_hand_values_and_bound(self):
    steps = jnp.array([[0.9, 0.2, 0.7, 0.4]])
    out = self.variant(lambda s: transforms.prm_clip(s, eta=0.5))(steps)
    np.testing.assert_allclose(out, [[0.0, -0.3, 0.0, -0.1]], atol=1e-6)
    # Appending steps can never raise the return: every step reward is <= 0.
    longer = transforms.prm_clip(jnp.tile(steps, (1, 5)), eta=0.5)
    assert float(longer.sum()) <= float(out.sum()) <= 0

  @chex.variants(with_jit=True, without_jit=True)
  def test_delta_hand_values_and_telescoping(self):
    steps = jnp.array([[0.9, 0.2, 0.7, 0.4], [0.5, 0.6, 0.0, 0.0]])
    mask = jnp.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = self.variant(lambda s, m: transforms.prm_delta(s, mask=m))(steps, mask)
    np.testing.assert_allclose(out, [[0.7, -0.5, 0.3, 0.4], [-0.1, 0.6, 0.0, 0.0]], atol=1e-6)
    # The return from step t (reverse cumulative sum) is the PRM score of step t.
    returns = np.cumsum(np.asarray(out)[:, ::-1], axis=1)[:, ::-1]
    np.testing.assert_allclose(returns[0], steps[0], atol=1e-6)
    np.testing.assert_allclose(returns[1, :2], steps[1, :2], atol=1e-6)

  def test_right_padding_is_invariant(self):
    steps = jnp.array([[0.9, 0.2, 0.7]])
    padded = jnp.array([[0.9, 0.2, 0.7, jnp.nan, jnp.inf]])
    mask = jnp.array([[1, 1, 1, 0, 0]])
    fns = (lambda s, m=None: transforms.prm_delta(s, mask=m),
           lambda s, m=None: transforms.prm_clip(s, eta=0.5, mask=m))
    outs = jax.jit(lambda p: [(fn(p, mask), jax.grad(lambda x, fn=fn: fn(x, mask).sum())(p))
                              for fn in fns])(padded)
    for fn, (out, grad) in zip(fns, outs):
      np.testing.assert_allclose(out[:, :3], fn(steps), atol=1e-7)
      np.testing.assert_array_equal(out[:, 3:], 0.0)
      np.testing.assert_array_equal(grad[:, 3:], 0.0)
      assert np.all(np.isfinite(grad))

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`step_rewards` must have shape \[B, T\]"):
      transforms.prm_delta(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`eta`.*scalar"):
      transforms.prm_clip(jnp.zeros((1, 3)), eta=jnp.zeros(3))
    with pytest.raises(TypeError, match="eta"):
      transforms.prm_clip(jnp.zeros((1, 3)))  # no default threshold


class BrierCalibrationTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_spec_sanity_values(self):
    fn = self.variant(transforms.brier_calibration_reward)
    out = fn(jnp.array([1, 0]), jnp.array([0.8, 0.8]))
    np.testing.assert_allclose(out, [0.96, -0.64], atol=1e-6)

  def test_properties(self):
    q = jnp.linspace(0.0, 1.0, 11)
    right = transforms.brier_calibration_reward(jnp.ones(11, bool), q)
    wrong = transforms.brier_calibration_reward(jnp.zeros(11, bool), q)
    assert float(right.min()) >= float(wrong.max())  # correctness dominates
    np.testing.assert_allclose(right, 1 - (q - 1) ** 2, atol=1e-6)
    np.testing.assert_allclose(wrong, -q ** 2, atol=1e-6)
    # Proper scoring rule: with P(correct) = p, the expected reward peaks at q = p.
    for p in (0.2, 0.7):
      expected = p * right + (1 - p) * wrong
      assert abs(float(q[jnp.argmax(expected)]) - p) < 1e-6

  def test_clipping_masks_and_errors(self):
    out = transforms.brier_calibration_reward(jnp.array([True, True, False]),
                                              jnp.array([1.7, jnp.nan, -3.0]),
                                              mask=jnp.array([1, 0, 1]))
    np.testing.assert_allclose(out, [1.0, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match=r"`confidence`.*\(2,\).*\(3,\)"):
      transforms.brier_calibration_reward(jnp.ones(2), jnp.ones(3))
