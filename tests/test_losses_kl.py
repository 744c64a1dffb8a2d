"""Tests for rmjax.losses.kl: KL estimators, exact categorical KL, KL in the reward, controllers."""

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax.losses.kl import adaptive_kl_controller
from rmjax.losses.kl import adaptive_kl_init
from rmjax.losses.kl import adaptive_kl_update
from rmjax.losses.kl import AdaptiveKLState
from rmjax.losses.kl import categorical_kl
from rmjax.losses.kl import fixed_kl_controller
from rmjax.losses.kl import fixed_kl_init
from rmjax.losses.kl import fixed_kl_update
from rmjax.losses.kl import kl_in_reward
from rmjax.losses.kl import kl_penalty
from rmjax.losses.kl import KLControllerState
from rmjax.losses.stateful import StatefulTransform

_RNG = np.random.default_rng(0)
LOGP = np.log(_RNG.uniform(0.05, 1.0, size=(3, 5))).astype(np.float32)
REF = np.log(_RNG.uniform(0.05, 1.0, size=(3, 5))).astype(np.float32)
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)


def _np_estimators(logp, ref):
  d = np.asarray(ref, np.float64) - np.asarray(logp, np.float64)
  return {"k1": -d, "k2": 0.5 * d ** 2, "k3": np.exp(d) - 1 - d, "abs": np.abs(d)}


class KLPenaltyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("k1", "k2", "k3", "abs")
  def test_matches_numpy(self, estimator):
    fn = self.variant(lambda a, b, m: kl_penalty(a, b, estimator=estimator, mask=m))
    out = fn(LOGP, REF, MASK)
    self.assertEqual(out.dtype, jnp.float32)
    expected = np.where(MASK, _np_estimators(LOGP, REF)[estimator], 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

  def test_hand_values(self):
    # pi = 0.5, pi_ref = 0.25: log u = -log 2; k3 = 1/2 - 1 + log 2 = 0.19315.
    out = [float(kl_penalty(jnp.log(0.5), jnp.log(0.25), estimator=e)) for e in
           ("k1", "k2", "k3", "abs")]
    np.testing.assert_allclose(out, [np.log(2), 0.5 * np.log(2) ** 2, np.log(2) - 0.5, np.log(2)],
                               rtol=1e-6)

  @parameterized.parameters("k1", "k2", "k3", "abs")
  def test_zero_when_policy_equals_reference(self, estimator):
    np.testing.assert_array_equal(kl_penalty(LOGP, LOGP, estimator=estimator), 0.0)

  def test_nonnegative_estimators_and_extreme_log_ratios(self):
    d = jnp.array([-50.0, -5.0, -1e-4, 0.0, 1e-4, 5.0, 50.0])
    for estimator in ("k2", "k3", "abs"):
      out = kl_penalty(jnp.zeros_like(d), d, estimator=estimator)
      self.assertTrue(np.all(np.asarray(out) >= 0), estimator)
      self.assertTrue(np.all(np.isfinite(out)), estimator)
      grad = jax.grad(lambda x: jnp.sum(kl_penalty(x, d, estimator=estimator)))(jnp.zeros_like(d))
      self.assertTrue(np.all(np.isfinite(grad)), estimator)
    # k3 near 0 is computed with expm1: ~d^2 / 2 to 1e-3 relative precision in float32, where
    # exp(d) - 1 - d would be off by the float32 spacing at 1 (1.2e-7 >> 5e-9).
    np.testing.assert_allclose(kl_penalty(jnp.zeros(1), jnp.array([1e-4]), estimator="k3"),
                               [0.5e-8 + 1e-12 / 6], rtol=3e-3)
    # Inputs of magnitude 1e4 stay finite.
    self.assertTrue(np.isfinite(float(kl_penalty(jnp.float32(-1e4), jnp.float32(1e4),
                                                 estimator="k3"))))

  def test_clamp(self):
    out = kl_penalty(jnp.zeros(3), jnp.array([-30.0, 0.1, 30.0]), estimator="k3", clamp=10.0)
    self.assertEqual(float(out[0]), 10.0)
    self.assertEqual(float(out[2]), 10.0)
    out = kl_penalty(jnp.zeros(2), jnp.array([-30.0, 30.0]), estimator="k1", clamp=10.0)
    np.testing.assert_array_equal(out, [10.0, -10.0])

  def test_padding_with_junk_changes_nothing(self):
    padded = jnp.concatenate([jnp.asarray(LOGP), jnp.full((3, 2), jnp.nan)], axis=1)
    padded_ref = jnp.concatenate([jnp.asarray(REF), jnp.full((3, 2), jnp.inf)], axis=1)
    padded_mask = np.concatenate([MASK, np.zeros((3, 2), bool)], axis=1)
    out = kl_penalty(padded, padded_ref, estimator="k3", mask=padded_mask)
    np.testing.assert_allclose(out[:, :5], kl_penalty(LOGP, REF, estimator="k3", mask=MASK))
    np.testing.assert_array_equal(out[:, 5:], 0.0)
    grad = jax.grad(lambda x: jnp.sum(kl_penalty(x, padded_ref, estimator="k3",
                                                 mask=padded_mask)))(padded)
    self.assertTrue(np.all(np.isfinite(grad)))
    np.testing.assert_array_equal(grad[~padded_mask], 0.0)

  def test_bfloat16(self):
    out = kl_penalty(jnp.asarray(LOGP, jnp.bfloat16), jnp.asarray(REF, jnp.bfloat16),
                     estimator="k3")
    self.assertEqual(out.dtype, jnp.float32)

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`estimator` must be one of \('k1', 'k2', 'k3', 'abs'\)"):
      kl_penalty(LOGP, REF, estimator="k4")
    with pytest.raises(ValueError, match=r"`ref_logp` must have the same shape as `logp` \(3, 5\)"):
      kl_penalty(LOGP, REF[:, :4])
    with pytest.raises(ValueError, match="`clamp` must be a finite number > 0"):
      kl_penalty(LOGP, REF, clamp=-1.0)
    with pytest.raises(TypeError, match="`logp`"):
      kl_penalty(jnp.ones(3, bool), jnp.ones(3))


class CategoricalKLTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy(self):
    logits = _RNG.normal(size=(2, 3, 6)).astype(np.float32) * 3
    ref = _RNG.normal(size=(2, 3, 6)).astype(np.float32) * 3
    out = self.variant(categorical_kl)(logits, ref)
    lp = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
    lq = ref - np.log(np.exp(ref.astype(np.float64)).sum(-1, keepdims=True))
    np.testing.assert_allclose(out, (np.exp(lp) * (lp - lq)).sum(-1), rtol=1e-4, atol=1e-6)

  def test_zero_for_equal_logits_and_shift_invariance(self):
    logits = jnp.asarray(_RNG.normal(size=(3, 7)).astype(np.float32))
    np.testing.assert_allclose(categorical_kl(logits, logits + 5.0), 0.0, atol=1e-6)

  def test_disallowed_tokens_and_large_logits(self):
    logits = jnp.array([0.0, 0.0, -jnp.inf])
    ref = jnp.log(jnp.array([0.25, 0.25, 0.5]))
    np.testing.assert_allclose(categorical_kl(logits, ref), np.log(2), rtol=1e-6)
    grad = jax.grad(lambda z: categorical_kl(z, ref))(logits)
    self.assertTrue(np.all(np.isfinite(grad)))
    big = categorical_kl(jnp.array([1e4, -1e4, 0.0]), jnp.array([-1e4, 1e4, 0.0]))
    self.assertTrue(np.isfinite(float(big)))
    np.testing.assert_allclose(big, 2e4, rtol=1e-6)  # p = e_0, log q_0 = -2e4

  def test_mask(self):
    logits = jnp.asarray(_RNG.normal(size=(2, 4)).astype(np.float32)).at[1].set(jnp.nan)
    out = categorical_kl(logits, jnp.zeros((2, 4)), mask=jnp.array([True, False]))
    self.assertEqual(float(out[1]), 0.0)
    self.assertTrue(np.isfinite(float(out[0])))

  def test_gradients(self):
    logits = jnp.asarray(_RNG.normal(size=(2, 4)).astype(np.float32))
    ref = jnp.asarray(_RNG.normal(size=(2, 4)).astype(np.float32))
    jtu.check_grads(lambda a, b: categorical_kl(a, b), (logits, ref), order=1, modes=["rev"],
                    atol=1e-2, rtol=1e-2)

  def test_monte_carlo_k1_and_k3_converge_to_exact_kl(self):
    p_logits = jnp.array([1.0, 0.0, -1.0, 0.5])
    q_logits = jnp.array([0.0, 0.5, 0.0, -1.0])
    exact = float(categorical_kl(p_logits, q_logits))
    n = 200_000
    tokens = jax.random.categorical(jax.random.key(0), p_logits, shape=(n,))
    logp = jax.nn.log_softmax(p_logits)[tokens]
    ref_logp = jax.nn.log_softmax(q_logits)[tokens]
    for estimator in ("k1", "k3"):
      samples = np.asarray(kl_penalty(logp, ref_logp, estimator=estimator), np.float64)
      standard_error = samples.std() / np.sqrt(n)
      self.assertLess(abs(samples.mean() - exact), 4 * standard_error + 1e-6, estimator)
    # k2 is biased: its mean is not the KL (here it differs by many standard errors).
    k2 = np.asarray(kl_penalty(logp, ref_logp, estimator="k2"), np.float64)
    self.assertGreater(abs(k2.mean() - exact), 10 * k2.std() / np.sqrt(n))

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`ref_logits` must have the same shape as `logits`"):
      categorical_kl(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2,\)"):
      categorical_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3)), mask=jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"`logits` must have shape \[..., V\]"):
      categorical_kl(jnp.float32(0.0), jnp.float32(0.0))


class KLInRewardTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    scores = jnp.array([1.0, 2.0, 3.0])
    kl = jnp.ones((3, 4))
    # Row 0: last valid token 2; row 1: a hole at 1, last valid 3; row 2: nothing valid.
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0]], bool)
    out = self.variant(lambda s, k, m: kl_in_reward(s, k, m, beta=0.5))(scores, kl, mask)
    np.testing.assert_allclose(out, [[-0.5, -0.5, 0.5, 0.0], [-0.5, 0.0, -0.5, 1.5],
                                     [0.0, 0.0, 0.0, 0.0]])

  def test_beta_array_and_padding(self):
    kl = jnp.asarray(np.abs(LOGP))
    out = kl_in_reward(jnp.array([1.0, 2.0, 3.0]), kl, MASK, beta=jnp.float32(0.1))
    padded = kl_in_reward(jnp.array([1.0, 2.0, 3.0]),
                          jnp.concatenate([kl, jnp.full((3, 2), jnp.nan)], axis=1),
                          np.concatenate([MASK, np.zeros((3, 2), bool)], axis=1), beta=0.1)
    np.testing.assert_allclose(padded[:, :5], out, rtol=1e-6)
    np.testing.assert_array_equal(padded[:, 5:], 0.0)
    np.testing.assert_allclose(jnp.sum(out, axis=1),
                               np.array([1.0, 2.0, 3.0]) - 0.1 * (np.abs(LOGP) * MASK).sum(1),
                               rtol=1e-5)

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`kl` must have shape \[N, T\] with N = 2"):
      kl_in_reward(jnp.ones(2), jnp.ones((3, 4)), jnp.ones((3, 4)), beta=0.1)
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2, 4\)"):
      kl_in_reward(jnp.ones(2), jnp.ones((2, 4)), jnp.ones((2, 3)), beta=0.1)
    with pytest.raises(ValueError, match="`beta` must be a finite number >= 0; got -0.1"):
      kl_in_reward(jnp.ones(2), jnp.ones((2, 4)), jnp.ones((2, 4)), beta=-0.1)


class KLControllerTest(chex.TestCase):

  def test_adaptive_matches_numpy_over_a_stream(self):
    state = adaptive_kl_init(0.2, target=6.0, horizon=10_000)
    self.assertIsInstance(state, AdaptiveKLState)
    beta = 0.2
    for observed in (1.0, 6.0, 7.0, 30.0, 5.5):
      state = adaptive_kl_update(state, observed, 256)
      beta *= 1 + np.clip(observed / 6.0 - 1, -0.2, 0.2) * 256 / 10_000
      np.testing.assert_allclose(float(state.beta), beta, rtol=1e-6)
    np.testing.assert_allclose(float(state.target), 6.0)
    # At the target beta does not move.
    self.assertEqual(float(adaptive_kl_update(state, 6.0, 256).beta), float(state.beta))

  def test_adaptive_update_under_jit_and_in_a_scan(self):
    state = adaptive_kl_init(0.1, 1.0, 100)

    def body(s, kl):
      s = adaptive_kl_update(s, kl, 10)
      return s, s.beta

    _, betas = jax.lax.scan(body, state, jnp.array([10.0, 10.0, 0.0]))
    np.testing.assert_allclose(betas, [0.1 * 1.02, 0.1 * 1.02 ** 2, 0.1 * 1.02 ** 2 * 0.98],
                               rtol=1e-6)

  def test_fixed(self):
    state = fixed_kl_init(0.05)
    self.assertIs(fixed_kl_update(state, 100.0, 10), state)
    np.testing.assert_allclose(float(state.beta), 0.05)

  def test_errors(self):
    with pytest.raises(ValueError, match="`target` must be a finite number > 0; got 0"):
      adaptive_kl_init(0.1, 0, 100)
    with pytest.raises(ValueError, match="`horizon` must be a finite number > 0"):
      adaptive_kl_init(0.1, 1.0, -5)
    with pytest.raises(ValueError, match="`init_beta` must be a finite number >= 0"):
      adaptive_kl_init(-0.1, 1.0, 100)
    with pytest.raises(ValueError, match="`beta` must be a finite number >= 0"):
      fixed_kl_init(float("nan"))


class KLControllerFactoryTest(chex.TestCase):

  def test_adaptive_factory_equals_the_pure_functions_step_by_step(self):
    controller = adaptive_kl_controller(0.2, target=6.0, horizon=10_000)
    self.assertIsInstance(controller, StatefulTransform)
    state = controller.init()
    self.assertIsInstance(state, KLControllerState)
    self.assertEqual(KLControllerState._fields, ("beta",))  # hyper-parameters are closed over
    pure = adaptive_kl_init(0.2, target=6.0, horizon=10_000)
    for observed in (1.0, 6.0, 7.0, 30.0, 5.5):
      beta, state = controller.update(state, observed, 256)
      # The output is the coefficient before the update (the one for this batch).
      self.assertEqual(float(beta), float(pure.beta))
      pure = adaptive_kl_update(pure, observed, 256)
      self.assertEqual(float(state.beta), float(pure.beta))

  def test_adaptive_hand_value(self):
    controller = adaptive_kl_controller(0.1, target=6.0, horizon=10_000)
    beta, state = controller.update(controller.init(), 12.0, 512)
    np.testing.assert_allclose(float(beta), 0.1, rtol=1e-7)
    # Error clipped to +0.2: 0.1 (1 + 0.2 * 512 / 10000) = 0.101024.
    np.testing.assert_allclose(float(state.beta), 0.101024, rtol=1e-6)

  def test_update_under_jit_and_in_a_scan(self):
    controller = adaptive_kl_controller(0.1, 1.0, 100)
    beta, state = jax.jit(controller.update)(controller.init(), 10.0, 10)
    np.testing.assert_allclose([float(beta), float(state.beta)], [0.1, 0.102], rtol=1e-6)

    def body(s, kl):
      beta, s = controller.update(s, kl, 10)
      return s, beta

    final, betas = jax.lax.scan(body, controller.init(), jnp.array([10.0, 10.0, 0.0]))
    np.testing.assert_allclose(betas, [0.1, 0.1 * 1.02, 0.1 * 1.02 ** 2], rtol=1e-6)
    np.testing.assert_allclose(final.beta, 0.1 * 1.02 ** 2 * 0.98, rtol=1e-6)

  def test_fixed_factory(self):
    controller = fixed_kl_controller(0.05)
    state = controller.init()
    beta, new_state = jax.jit(controller.update)(state, 100.0, 10)
    np.testing.assert_allclose([float(beta), float(new_state.beta)], [0.05, 0.05], rtol=1e-7)
    self.assertEqual(float(state.beta), float(fixed_kl_init(0.05).beta))

  def test_factory_errors(self):
    with pytest.raises(ValueError, match="`target` must be a finite number > 0; got 0"):
      adaptive_kl_controller(0.1, 0, 100)
    with pytest.raises(ValueError, match="`beta` must be a finite number >= 0"):
      fixed_kl_controller(-1.0)
