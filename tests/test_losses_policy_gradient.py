"""Tests for rmjax.losses.policy_gradient: PPO/GSPO/CISPO/... losses and their aggregation."""

import math

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax.losses import policy_gradient as pg

_RNG = np.random.default_rng(0)
N, T = 3, 5
LOGP = np.log(_RNG.uniform(0.1, 0.9, size=(N, T))).astype(np.float32)
OLD = (LOGP + _RNG.normal(scale=0.3, size=(N, T))).astype(np.float32)
ADV = _RNG.normal(size=(N, T)).astype(np.float32)
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)
MODES = pg.AGGREGATION_MODES


def _np_aggregate(losses, mask, mode, norm=None):
  losses = np.where(mask, np.asarray(losses, np.float64), 0.0)
  lengths = mask.sum(-1)
  if mode == "token-mean":
    return losses.sum() / mask.sum()
  if mode == "seq-mean-token-sum-norm":
    return losses.sum() / (losses.shape[-1] if norm is None else norm)
  per_seq = losses.sum(-1)
  if mode == "seq-mean-token-mean":
    per_seq = per_seq / np.maximum(lengths, 1)
  return per_seq[lengths > 0].mean()


def _np_ppo(logp, old, a, eps_low, eps_high, dual=None):
  rho = np.exp(np.asarray(logp, np.float64) - old)
  l = np.maximum(-a * rho, -a * np.clip(rho, 1 - eps_low, 1 + eps_high))
  if dual is not None:
    l = np.where(a < 0, np.minimum(l, -a * dual), l)
  return l


def _pad(x, rows=1, cols=2, fill=np.nan):
  x = np.asarray(x)
  out = np.full((x.shape[0] + rows, x.shape[1] + cols), fill, x.dtype)
  out[:x.shape[0], :x.shape[1]] = x
  return jnp.asarray(out)


PAD_MASK = np.asarray(_pad(MASK, fill=False))


class AggregateTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*MODES)
  def test_matches_numpy(self, mode):
    out = self.variant(lambda l, m: pg.aggregate_token_losses(l, m, mode))(ADV, MASK)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, _np_aggregate(ADV, MASK, mode), rtol=1e-5)

  def test_token_mean_equals_seq_mean_token_mean_for_equal_lengths(self):
    mask = np.zeros((N, T), bool)
    mask[:, :3] = True
    np.testing.assert_allclose(pg.aggregate_token_losses(ADV, mask, "token-mean"),
                               pg.aggregate_token_losses(ADV, mask, "seq-mean-token-mean"),
                               rtol=1e-6)
    # ... and differs for unequal lengths.
    self.assertFalse(np.isclose(pg.aggregate_token_losses(ADV, MASK, "token-mean"),
                                pg.aggregate_token_losses(ADV, MASK, "seq-mean-token-mean")))

  @parameterized.parameters(*MODES)
  def test_padding_rows_and_columns_change_nothing(self, mode):
    ref = pg.aggregate_token_losses(ADV, MASK, mode, norm_constant=8.0)
    out = pg.aggregate_token_losses(_pad(ADV), PAD_MASK, mode, norm_constant=8.0)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    grad = jax.grad(lambda l: pg.aggregate_token_losses(l, PAD_MASK, mode))(_pad(ADV))
    self.assertTrue(np.all(np.isfinite(grad)))
    np.testing.assert_array_equal(np.asarray(grad)[~PAD_MASK], 0.0)

  def test_norm_mode_defaults_to_padded_length_and_empty_batch(self):
    self.assertAlmostEqual(float(pg.aggregate_token_losses(jnp.ones((2, 4)), jnp.ones((2, 4)),
                                                           "seq-mean-token-sum-norm")), 2.0)
    for mode in MODES:
      self.assertEqual(float(pg.aggregate_token_losses(jnp.ones((2, 4)), jnp.zeros((2, 4)),
                                                       mode)), 0.0)

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`mode` \(the aggregation mode\) must be one of .*"
                       r"'token-mean'.*got 'mean'"):
      pg.aggregate_token_losses(ADV, MASK, "mean")
    with pytest.raises(ValueError, match=r"`losses` must have shape \[N, T\]"):
      pg.aggregate_token_losses(ADV[0], MASK[0])
    with pytest.raises(ValueError, match=r"`mask` must have shape \(3, 5\)"):
      pg.aggregate_token_losses(ADV, MASK[:, :4])
    with pytest.raises(ValueError, match="`norm_constant` must be a finite number > 0"):
      pg.aggregate_token_losses(ADV, MASK, "seq-mean-token-sum-norm", norm_constant=0)
    with pytest.raises(ValueError, match=r"`agg` \(the aggregation mode\)"):
      pg.ppo_clip_loss(LOGP, OLD, ADV, MASK, agg="sum")


class PPOClipTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("symmetric", 0.2, None, None), ("clip_higher", 0.2, 0.28, None),
      ("dual_clip", 0.2, 0.28, 3.0))
  def test_matches_numpy(self, eps_low, eps_high, dual):
    fn = self.variant(lambda a, b, c, m: pg.ppo_clip_loss(
        a, b, c, m, eps_low=eps_low, eps_high=eps_high, dual_clip=dual))
    # Large log-ratios so that every branch is visited.
    old = LOGP + np.array([-1.5, 1.0, 0.05, -0.05, 2.0], np.float32)
    loss, metrics = fn(LOGP, old, ADV, MASK)
    per_token = _np_ppo(LOGP, old, ADV, eps_low, eps_high or eps_low, dual)
    np.testing.assert_allclose(loss, _np_aggregate(per_token, MASK, "token-mean"), rtol=1e-5)
    rho = np.exp(LOGP - old)
    unclipped = -ADV * rho
    clipped = -ADV * np.clip(rho, 1 - eps_low, 1 + (eps_high or eps_low))
    np.testing.assert_allclose(metrics["clip_fraction"], (clipped > unclipped)[MASK].mean(),
                               rtol=1e-6)
    np.testing.assert_allclose(metrics["approx_kl"], (old - LOGP)[MASK].mean(), rtol=1e-5)
    if dual:
      lower = (ADV < 0) & (np.maximum(unclipped, clipped) > -ADV * dual)
      np.testing.assert_allclose(metrics["clip_fraction_lower"], lower[MASK].mean(), rtol=1e-6)
      self.assertGreater(float(metrics["clip_fraction_lower"]), 0.0)

  def test_dual_clip_hand_value(self):
    # rho = e^2 = 7.39, A = -1: PPO loss 7.39, dual clip caps it at -A c = 3.
    loss, m = pg.ppo_clip_loss(jnp.array([[2.0]]), jnp.zeros((1, 1)), jnp.array([-1.0]),
                               jnp.ones((1, 1)), dual_clip=3.0)
    self.assertAlmostEqual(float(loss), 3.0, places=6)
    self.assertEqual(float(m["clip_fraction_lower"]), 1.0)

  @parameterized.parameters(*MODES)
  def test_gradient_equals_vanilla_pg_at_rho_one(self, mode):
    mask = jnp.asarray(MASK)
    ppo_grad = jax.grad(lambda lp: pg.ppo_clip_loss(lp, LOGP, ADV, mask, agg=mode)[0])(LOGP)
    vpg_grad = jax.grad(lambda lp: pg.vanilla_policy_gradient_loss(lp, ADV, mask, agg=mode)[0])(
        LOGP)
    np.testing.assert_allclose(ppo_grad, vpg_grad, rtol=1e-6, atol=1e-7)
    # The values: PPO's is -A (rho = 1), the vanilla one is -A logp.
    loss, metrics = pg.ppo_clip_loss(LOGP, LOGP, ADV, mask, agg=mode)
    np.testing.assert_allclose(loss, _np_aggregate(-ADV, MASK, mode), rtol=1e-5)
    self.assertEqual(float(metrics["clip_fraction"]), 0.0)

  def test_sequence_advantages_broadcast(self):
    seq_adv = ADV[:, 0]
    a = pg.ppo_clip_loss(LOGP, OLD, seq_adv, MASK)[0]
    b = pg.ppo_clip_loss(LOGP, OLD, np.broadcast_to(seq_adv[:, None], (N, T)), MASK)[0]
    self.assertEqual(float(a), float(b))

  @parameterized.parameters(50.0, -50.0)
  def test_extreme_log_ratios_are_finite(self, log_ratio):
    logp = jnp.asarray(LOGP) + log_ratio
    for dual in (None, 3.0):
      loss, _ = pg.ppo_clip_loss(logp, LOGP, ADV, MASK, dual_clip=dual)
      grad = jax.grad(lambda lp: pg.ppo_clip_loss(lp, LOGP, ADV, MASK, dual_clip=dual)[0])(logp)
      self.assertTrue(np.isfinite(float(loss)))
      self.assertTrue(np.all(np.isfinite(grad)))
    big = pg.ppo_clip_loss(jnp.full((1, 2), 1e4), jnp.full((1, 2), -1e4), jnp.array([1e4]),
                           jnp.ones((1, 2)))[0]
    self.assertTrue(np.isfinite(float(big)))

  def test_gradients_and_bfloat16(self):
    jtu.check_grads(lambda lp: pg.ppo_clip_loss(lp, OLD, ADV, MASK)[0], (jnp.asarray(LOGP),),
                    order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    loss, _ = pg.ppo_clip_loss(jnp.asarray(LOGP, jnp.bfloat16), jnp.asarray(OLD, jnp.bfloat16),
                               jnp.asarray(ADV, jnp.bfloat16), MASK)
    self.assertEqual(loss.dtype, jnp.float32)

  def test_value_and_grad_with_aux(self):
    (loss, metrics), grad = jax.value_and_grad(
        lambda lp: pg.ppo_clip_loss(lp, OLD, ADV, MASK), has_aux=True)(LOGP)
    self.assertEqual(loss.shape, ())
    self.assertEqual(grad.shape, (N, T))
    self.assertEqual(set(metrics), {"clip_fraction", "approx_kl"})

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`advantages` must have shape \[N\] = \(3,\) or "
                       r"\[N, T\] = \(3, 5\).*got shape \(4,\)"):
      pg.ppo_clip_loss(LOGP, OLD, jnp.ones(4), MASK)
    with pytest.raises(ValueError, match=r"`old_logp` must have the same shape as `logp`"):
      pg.ppo_clip_loss(LOGP, OLD[:, :4], ADV, MASK)
    with pytest.raises(ValueError, match="`dual_clip` must be > 1"):
      pg.ppo_clip_loss(LOGP, OLD, ADV, MASK, dual_clip=0.5)
    with pytest.raises(ValueError, match="`eps_low` must be < 1"):
      pg.ppo_clip_loss(LOGP, OLD, ADV, MASK, eps_low=1.5)
    with pytest.raises(ValueError, match="`eps_high` must be a finite number >= 0"):
      pg.ppo_clip_loss(LOGP, OLD, ADV, MASK, eps_high=-0.1)
    with pytest.raises(ValueError, match=r"`logp` must have shape \[N, T\]"):
      pg.ppo_clip_loss(LOGP[0], OLD[0], ADV[0], MASK[0])


POLICY_LOSSES = {
    "ppo": lambda lp, old, a, m: pg.ppo_clip_loss(lp, old, a, m, dual_clip=3.0),
    "stable_reinforce": pg.stable_reinforce_loss,
    "gspo": pg.gspo_loss,
    "cispo": lambda lp, old, a, m: pg.cispo_loss(lp, old, a, m, eps_high=0.2),
    "vanilla": lambda lp, old, a, m: pg.vanilla_policy_gradient_loss(lp, a, m),
}


class PolicyLossPaddingTest(chex.TestCase):

  @parameterized.named_parameters(*[(name, name) for name in POLICY_LOSSES])
  def test_padding_with_junk_changes_nothing(self, name):
    fn = POLICY_LOSSES[name]
    ref, ref_metrics = fn(LOGP, OLD, ADV, MASK)
    padded = (_pad(LOGP), _pad(OLD, fill=np.inf), _pad(ADV))
    out, metrics = fn(*padded, PAD_MASK)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    for key in ref_metrics:
      np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-6)
    grad = jax.grad(lambda lp: fn(lp, *padded[1:], PAD_MASK)[0])(padded[0])
    self.assertTrue(np.all(np.isfinite(grad)), name)
    np.testing.assert_array_equal(np.asarray(grad)[~PAD_MASK], 0.0)
    self.assertTrue(np.any(np.asarray(grad)[PAD_MASK] != 0), name)


class StableReinforceTest(chex.TestCase):

  @parameterized.parameters(50.0, -50.0, 3.0)
  def test_pre_clip_equals_ppo_on_clamped_log_ratio(self, shift):
    logp = jnp.asarray(LOGP) + shift
    lo, hi = pg.STABLE_REINFORCE_LOG_RATIO_BOUNDS
    self.assertAlmostEqual(math.exp(hi), 1e3, places=6)
    loss, _ = pg.stable_reinforce_loss(logp, LOGP, ADV, MASK)
    clamped = np.clip(np.asarray(logp) - LOGP, lo, hi)
    expected = _np_aggregate(_np_ppo(clamped, 0.0, ADV, 0.2, 0.2), MASK, "token-mean")
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    grad = jax.grad(lambda lp: pg.stable_reinforce_loss(lp, LOGP, ADV, MASK)[0])(logp)
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_errors(self):
    with pytest.raises(ValueError, match="`log_ratio_bounds` must satisfy lo < 0 < hi"):
      pg.stable_reinforce_loss(LOGP, OLD, ADV, MASK, log_ratio_bounds=(1.0, 2.0))


class GSPOTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_is_ppo_on_the_sequence_ratio(self):
    fn = self.variant(lambda a, b, c, m: pg.gspo_loss(a, b, c, m))
    log_s = ((LOGP - OLD) * MASK).sum(-1) / MASK.sum(-1)
    s = np.exp(log_s.astype(np.float64))
    for sign in (1.0, -1.0):  # with sign -1 every sequence is outside the trust region
      seq_adv = sign * ADV[:, 0]
      loss, metrics = fn(LOGP, OLD, seq_adv, MASK)
      np.testing.assert_allclose(loss, _np_ppo(log_s, 0.0, seq_adv, 3e-4, 4e-4).mean(), rtol=1e-5)
      clipped = -seq_adv * np.clip(s, 1 - 3e-4, 1 + 4e-4) > -seq_adv * s
      np.testing.assert_allclose(metrics["clip_fraction"],
                                 np.repeat(clipped, MASK.sum(-1)).mean(), rtol=1e-6)
    self.assertEqual(float(metrics["clip_fraction"]), 1.0)

  def test_gradient_equals_sequence_objective_gradient(self):
    # Inside the trust region the per-token (stop-gradient) form has the gradient of
    # mean_n(-A_n s_n), s_n = exp(mean_t log rho_nt): d/dlogp_nt = -A_n s_n / (N L_n).
    seq_adv = jnp.asarray(ADV[:, 0])
    mask = jnp.asarray(MASK)

    def sequence_objective(logp):
      log_s = jnp.sum(jnp.where(mask, logp - OLD, 0), -1) / jnp.sum(mask, -1)
      return jnp.mean(-seq_adv * jnp.exp(log_s))

    grad = jax.grad(lambda lp: pg.gspo_loss(lp, OLD, seq_adv, mask, eps_low=0.99,
                                            eps_high=100.0)[0])(LOGP)
    np.testing.assert_allclose(grad, jax.grad(sequence_objective)(LOGP), rtol=1e-5, atol=1e-7)

  @parameterized.parameters(50.0, -50.0)
  def test_extreme_log_ratios_and_padding(self, shift):
    logp = jnp.asarray(LOGP) + shift
    loss = pg.gspo_loss(logp, LOGP, ADV[:, 0], MASK)[0]
    grad = jax.grad(lambda lp: pg.gspo_loss(lp, LOGP, ADV[:, 0], MASK)[0])(logp)
    self.assertTrue(np.isfinite(float(loss)))
    self.assertTrue(np.all(np.isfinite(grad)))
    ref = pg.gspo_loss(LOGP, OLD, ADV[:, 0], MASK)[0]
    out = pg.gspo_loss(_pad(LOGP), _pad(OLD), jnp.append(ADV[:, 0], jnp.nan), PAD_MASK)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-6)


class CISPOTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_and_keeps_gradients_of_clipped_tokens(self):
    old = LOGP - 1.0  # rho = e > 1 + eps_high everywhere: every weight is clipped
    fn = self.variant(lambda a, b, c, m: pg.cispo_loss(a, b, c, m, eps_high=0.28))
    loss, metrics = fn(LOGP, old, ADV, MASK)
    np.testing.assert_allclose(loss, _np_aggregate(-1.28 * ADV * LOGP, MASK, "token-mean"),
                               rtol=1e-5)
    self.assertEqual(float(metrics["clip_fraction"]), 1.0)
    grad = jax.grad(lambda lp: pg.cispo_loss(lp, old, ADV, MASK, eps_high=0.28)[0])(LOGP)
    np.testing.assert_allclose(grad, np.where(MASK, -1.28 * ADV / MASK.sum(), 0), rtol=1e-5)
    # PPO zeroes the gradient of such tokens when A > 0 (the clipped branch is active).
    ppo_grad = jax.grad(lambda lp: pg.ppo_clip_loss(lp, old, ADV, MASK)[0])(LOGP)
    np.testing.assert_array_equal(np.asarray(ppo_grad)[(ADV > 0) & MASK], 0.0)

  def test_lower_clip_and_extremes(self):
    loss, _ = pg.cispo_loss(jnp.array([[-1.0]]), jnp.array([[49.0]]), jnp.array([1.0]),
                            jnp.ones((1, 1)), eps_high=0.2, eps_low=0.2)
    np.testing.assert_allclose(loss, 0.8, rtol=1e-6)  # weight clipped up to 0.8, -0.8 * 1 * -1
    for shift in (50.0, -50.0):
      logp = jnp.asarray(LOGP) + shift
      grad = jax.grad(lambda lp: pg.cispo_loss(lp, LOGP, ADV, MASK, eps_high=0.2)[0])(logp)
      self.assertTrue(np.all(np.isfinite(grad)))

  def test_errors(self):
    with pytest.raises(TypeError, match="eps_high"):
      pg.cispo_loss(LOGP, OLD, ADV, MASK)  # pylint: disable=missing-kwoa


class ValueAndEntropyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_clipped_value_loss_matches_numpy(self):
    values = _RNG.normal(size=(N, T)).astype(np.float32)
    old = _RNG.normal(size=(N, T)).astype(np.float32)
    returns = _RNG.normal(size=(N, T)).astype(np.float32)
    loss, metrics = self.variant(lambda v, o, r, m: pg.clipped_value_loss(v, o, r, m))(
        values, old, returns, MASK)
    clipped = old + np.clip(values - old, -0.2, 0.2)
    per_token = 0.5 * np.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    np.testing.assert_allclose(loss, _np_aggregate(per_token, MASK, "token-mean"), rtol=1e-5)
    self.assertGreater(float(metrics["value_clip_fraction"]), 0.0)
    grad = jax.grad(lambda v: pg.clipped_value_loss(v, _pad(old), _pad(returns), PAD_MASK)[0])(
        _pad(values))
    self.assertTrue(np.all(np.isfinite(grad)))
    np.testing.assert_array_equal(np.asarray(grad)[~PAD_MASK], 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_entropy_matches_numpy(self):
    logits = _RNG.normal(size=(2, 3, 6)).astype(np.float32) * 2
    out = self.variant(pg.entropy_from_logits)(logits)
    lp = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
    np.testing.assert_allclose(out, -(np.exp(lp) * lp).sum(-1), rtol=1e-5)

  def test_entropy_edge_cases(self):
    np.testing.assert_allclose(pg.entropy_from_logits(jnp.zeros((1, 2, 8))), np.log(8), rtol=1e-6)
    peaked = pg.entropy_from_logits(jnp.array([[[1e4, -1e4, 0.0]]]))
    np.testing.assert_allclose(peaked, 0.0, atol=1e-6)
    disallowed = jnp.array([[[0.0, 0.0, -jnp.inf]]])
    np.testing.assert_allclose(pg.entropy_from_logits(disallowed), np.log(2), rtol=1e-6)
    grad = jax.grad(lambda z: jnp.sum(pg.entropy_from_logits(z)))(disallowed)
    self.assertTrue(np.all(np.isfinite(grad)))
    masked = pg.entropy_from_logits(jnp.full((1, 2, 3), jnp.nan).at[0, 0].set(0.0),
                                    mask=jnp.array([[True, False]]))
    np.testing.assert_allclose(masked, [[np.log(3), 0.0]], rtol=1e-6)
    self.assertEqual(pg.entropy_from_logits(jnp.zeros((2, 3), jnp.bfloat16)).dtype, jnp.float32)
    with pytest.raises(ValueError, match=r"`mask` must have shape \(1, 2\)"):
      pg.entropy_from_logits(jnp.zeros((1, 2, 3)), mask=jnp.ones((1, 3)))

  def test_vanilla_hand_value_and_errors(self):
    loss, metrics = pg.vanilla_policy_gradient_loss(jnp.log(jnp.array([[0.5, 0.25]])),
                                                    jnp.array([[2.0, -1.0]]), jnp.ones((1, 2)),
                                                    agg="seq-mean-token-sum")
    np.testing.assert_allclose(loss, 2 * np.log(2) - np.log(4), atol=1e-6)
    self.assertEqual(metrics, {})
    with pytest.raises(ValueError, match="`clip_range` must be a finite number >= 0"):
      pg.clipped_value_loss(LOGP, OLD, ADV, MASK, clip_range=-1.0)
    with pytest.raises(ValueError, match="`returns` must have the same shape as `values`"):
      pg.clipped_value_loss(LOGP, OLD, ADV[:, :2], MASK)
