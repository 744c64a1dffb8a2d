"""Tests for rmjax.losses.direct_preference: DPO and its family."""

import functools

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax.losses import direct_preference as dp
from rmjax.losses.listwise import lipo_lambda_weights

# Spec sanity values are given to 4 decimals.
SPEC_ATOL = 5e-5
_SETTINGS = hypothesis.settings(max_examples=15, deadline=None,
                                derandomize=True)

_RNG = np.random.default_rng(0)
PC = (-20.0 + 5.0 * _RNG.normal(size=6)).astype(np.float32)
PR = (-20.0 + 5.0 * _RNG.normal(size=6)).astype(np.float32)
RC = (-20.0 + 5.0 * _RNG.normal(size=6)).astype(np.float32)
RR = (-20.0 + 5.0 * _RNG.normal(size=6)).astype(np.float32)
H = (PC - RC) - (PR - RR)


def _sp(x):
  """float64 softplus."""
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


ALL_VALID = jnp.ones(6, bool)


def _lists(x):
  """[6] -> [3, 2]: three lists of two responses."""
  return None if x is None else jnp.reshape(x, (3, 2))


def _losses():
  """Every loss as f(x, y, mask, reduction) on [6]-shaped inputs x, y.

  x and y play the chosen and the rejected policy log-probs (for the listwise
  losses, the two responses of three lists; for KTO, desirable and
  undesirable examples). The other inputs are fixed, so that `plain`, the
  float64 per-pair formula as a function of the margin d = x - y at beta =
  0.5, can be written down (None where the loss is not a function of d).
  Every test calls the losses with the same argument structure (a [6] mask,
  reduction "none" or "sum"), so the compiled cores are shared between tests.
  """
  beta = 0.5
  z = jnp.zeros(6)
  pair_labels = jnp.tile(jnp.array([1, 0]), (3, 1))
  pair_rewards = jnp.tile(jnp.array([1.0, 0.0]), (3, 1))
  lipo_weight = 1.0 - 1.0 / np.log2(3.0)

  def with_ref(loss, **kw):
    return lambda x, y, m, r: loss(x, y, z, z, beta=beta, mask=m,
                                   reduction=r, **kw)

  return {
      "dpo": (with_ref(dp.dpo_loss), lambda d: _sp(-beta * d)),
      "cdpo": (with_ref(dp.dpo_loss, label_smoothing=0.2),
               lambda d: 0.8 * _sp(-beta * d) + 0.2 * _sp(beta * d)),
      "robust": (with_ref(dp.robust_dpo_loss, label_smoothing=0.2),
                 lambda d: (0.8 * _sp(-beta * d) - 0.2 * _sp(beta * d)) / 0.6),
      "ipo": (with_ref(dp.ipo_loss), lambda d: (d - 1.0 / (2 * beta)) ** 2),
      "hinge": (with_ref(dp.hinge_loss),
                lambda d: np.maximum(0.0, 1.0 - beta * d)),
      "simpo": (lambda x, y, m, r: dp.simpo_loss(
          x, y, beta=beta, gamma=0.3, mask=m, reduction=r),
                lambda d: _sp(0.3 - beta * d)),
      "orpo": (lambda x, y, m, r: dp.orpo_loss(
          -jnp.abs(x) / 40, -jnp.abs(y) / 40, mask=m, reduction=r), None),
      "kto": (lambda x, y, m, r: dp.kto_loss(
          jnp.where(jnp.arange(6) % 2 == 0, x, y), z,
          jnp.arange(6) % 2 == 0, kl_policy_logps=x / 10,
          kl_reference_logps=y / 10, kl_mask=m, beta=beta, mask=m,
          reduction=r), None),
      "selm": (lambda x, y, m, r: dp.selm_loss(
          x, y, z, z, z - 2.0, z - 3.0, beta=beta, alpha=0.1, mask=m,
          reduction=r), lambda d: _sp(-beta * d) + 0.1 * beta * 1.0),
      "dno": (lambda x, y, m, r: dp.dno_loss(
          x, y, z, z, z + 1.0, z, beta=beta, mask=m, reduction=r),
              lambda d: (_sigmoid(1.0) * _sp(-beta * d)
                         + _sigmoid(-1.0) * _sp(beta * d))),
      # Each list is one pair (x_b, y_b) with labels (1, 0).
      "lipo": (lambda x, y, m, r: dp.lipo_lambda_loss(
          jnp.stack([x, y], 1)[:3], jnp.zeros((3, 2)), pair_labels,
          beta=beta, mask=None if m is None else jnp.stack([m, m], 1)[:3],
          reduction=r), lambda d: lipo_weight * _sp(-beta * d)),
      "pro": (lambda x, y, m, r: dp.pro_loss(
          jnp.stack([x, y], 1)[:3] / 10, pair_rewards, sft_weight=0.0,
          mask=None if m is None else jnp.stack([m, m], 1)[:3],
          reduction=r), lambda d: _sp(-d / 10)),
      "mah": (lambda x, y, m, r: dp.mah_dpo_loss(
          x, y, z, z, jnp.array([0, 2, 0, 2, 0, 2]), num_heads=3,
          beta=beta, mask=m, reduction=r), lambda d: _sp(-beta * d)),
  }


LOSSES = _losses()
NAMES = tuple(LOSSES)
PLAIN_NAMES = tuple(n for n in NAMES if LOSSES[n][1] is not None)
LIST_LOSSES = ("lipo", "pro")  # only the first 3 pairs count


def _per_pair(name, values):
  """Per-pair values of `name` (lists: the first three pairs)."""
  return np.asarray(values)[:3] if name in LIST_LOSSES else np.asarray(values)


class SanityTest(chex.TestCase):
  """Value at h = 0, gradient signs, and the plain formula at hand points."""

  @parameterized.parameters(*PLAIN_NAMES)
  def test_value_at_zero_margin(self, name):
    loss, plain = LOSSES[name]
    c = jnp.asarray(PC)
    out = loss(c, c, ALL_VALID, "none")
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, np.full(out.shape, plain(0.0)),
                               rtol=1e-6, atol=1e-7)

  @parameterized.parameters(*NAMES)
  def test_gradient_signs(self, name):
    loss, _ = LOSSES[name]
    c = jnp.asarray(PC)
    r = c - jnp.array([0.5, -1.0, 0.5, -1.0, 0.9, -0.1])  # the margins
    g_c, g_r = jax.grad(lambda c, r: loss(c, r, ALL_VALID, "sum"),
                        argnums=(0, 1))(c, r)
    if name == "kto":  # x is used at even, y at odd positions
      g_c, g_r = g_c[0::2], g_r[1::2]
    g_c, g_r = _per_pair(name, g_c), _per_pair(name, g_r)
    self.assertTrue(np.all(g_c < 0), (name, g_c))
    self.assertTrue(np.all(g_r > 0), (name, g_r))

  @parameterized.parameters(*PLAIN_NAMES)
  def test_matches_plain_formula(self, name):
    loss, plain = LOSSES[name]
    # Hand points: margins -4, -1, 0, 0.5, 3, 10 (lists: the first three).
    c = jnp.array([-8.0, -2.0, -5.0, -1.0, -3.0, 0.0])
    r = jnp.array([-4.0, -1.0, -5.0, -1.5, -6.0, -10.0])
    margins = _per_pair(name, np.asarray(c - r, np.float64))
    np.testing.assert_allclose(loss(c, r, ALL_VALID, "none"),
                               plain(margins), rtol=1e-5, atol=1e-6)

  def test_orpo_and_kto_values_and_gradient_signs(self):
    # ORPO at equal inputs l: -l + lambda log 2.
    l = jnp.asarray(PC / 20)
    np.testing.assert_allclose(dp.orpo_loss(l, l, reduction="none"),
                               -l + 0.1 * np.log(2.0), rtol=1e-6)
    # KTO at r = 0, z0 = 0: w / 2.
    logp = jnp.asarray(PC)
    desirable = jnp.array([True, False] * 3)
    np.testing.assert_allclose(
        dp.kto_loss(logp, logp, desirable, desirable_weight=1.0,
                    undesirable_weight=3.0, reduction="none"), [0.5, 1.5] * 3)

  @parameterized.named_parameters(
      # The spec's per-loss sanity values, by hand.
      ("dpo_beta_h_2", dp.dpo_loss, {}, 20.0, 0.1269),
      ("cdpo_beta_h_2", dp.dpo_loss, {"label_smoothing": 0.1}, 20.0, 0.3269),
      ("robust_beta_h_2", dp.robust_dpo_loss, {"label_smoothing": 0.1}, 20.0,
       (0.9 * 0.126928 - 0.1 * 2.126928) / 0.8),
      ("ipo_h0", dp.ipo_loss, {}, 0.0, 25.0),
      ("ipo_at_optimum", dp.ipo_loss, {}, 5.0, 0.0),
      ("hinge_h0", dp.hinge_loss, {}, 0.0, 1.0),
      ("hinge_beyond_margin", dp.hinge_loss, {}, 12.0, 0.0),
  )
  def test_spec_values(self, loss, kwargs, h, expected):
    z = jnp.zeros(6)
    out = loss(z + h - 30.0, z - 30.0, z, z, mask=ALL_VALID,
               reduction="none", **kwargs)
    np.testing.assert_allclose(out, np.full(6, expected), atol=SPEC_ATOL)


class DpoFamilyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_dpo_matches_formula_with_references(self):
    out = self.variant(functools.partial(dp.dpo_loss, beta=0.3,
                                         reduction="none"))(PC, PR, RC, RR)
    np.testing.assert_allclose(out, _sp(-0.3 * H), rtol=1e-5)

  def test_implicit_rewards(self):
    r = dp.implicit_rewards(PC, RC, beta=0.3)
    np.testing.assert_allclose(r, 0.3 * (PC - RC), rtol=1e-5)
    masked = dp.implicit_rewards(jnp.array([1.0, jnp.nan]),
                                 jnp.array([0.0, 1.0]), mask=[1, 0])
    np.testing.assert_allclose(masked, [0.1, 0.0], rtol=1e-6)

  def test_robust_dpo_is_unbiased_under_flips(self):
    # E over labels flipped with prob. e of the robust loss = the clean DPO
    # loss: (1 - e) L_rob(h) + e L_rob(-h) = L_dpo(h).
    e = 0.2
    rob = dp.robust_dpo_loss(PC, PR, RC, RR, label_smoothing=e,
                             reduction="none")
    rob_flipped = dp.robust_dpo_loss(PR, PC, RR, RC, label_smoothing=e,
                                     reduction="none")
    clean = dp.dpo_loss(PC, PR, RC, RR, reduction="none")
    np.testing.assert_allclose((1 - e) * rob + e * rob_flipped, clean,
                               rtol=1e-5, atol=1e-6)
    # e = 0 is DPO; cDPO is different (the flipped term is added).
    np.testing.assert_allclose(
        dp.robust_dpo_loss(PC, PR, RC, RR, label_smoothing=0.0), clean.mean(),
        rtol=1e-6)

  def test_dno_is_cdpo_with_soft_labels(self):
    # sigmoid(r1 - r2) = 0.9 -> label smoothing 0.1.
    gap = np.log(9.0)
    out = dp.dno_loss(PC, PR, RC, RR, jnp.full(6, gap), jnp.zeros(6),
                      reduction="none")
    cdpo = dp.dpo_loss(PC, PR, RC, RR, label_smoothing=0.1, reduction="none")
    np.testing.assert_allclose(out, cdpo, rtol=1e-5)
    # The gradient vanishes where sigmoid(beta h) equals the soft label.
    grad = jax.grad(lambda c: dp.dno_loss(
        c, jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.array([gap]),
        jnp.zeros(1)))(jnp.array([10.0 * gap]))
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)

  def test_selm_is_dpo_plus_optimism_term(self):
    ps, rs = PC - 1.0, RC + 2.0
    out = dp.selm_loss(PC, PR, RC, RR, ps, rs, alpha=0.01, reduction="none")
    dpo = dp.dpo_loss(PC, PR, RC, RR, reduction="none")
    np.testing.assert_allclose(out, dpo + 0.01 * 0.1 * (ps - rs), rtol=1e-5)
    np.testing.assert_allclose(
        dp.selm_loss(PC, PR, RC, RR, ps, rs, alpha=0.0), dpo.mean(),
        rtol=1e-6)
    grad = jax.grad(lambda s: dp.selm_loss(PC, PR, RC, RR, s, rs,
                                           alpha=0.01))(ps)
    np.testing.assert_allclose(grad, 0.01 * 0.1 / 6, rtol=1e-5)

  def test_simpo_margin_and_defaults(self):
    # Defaults beta = 2, gamma = 0.5: Delta = 0 -> softplus(0.5).
    np.testing.assert_allclose(dp.simpo_loss(jnp.array([-1.2]),
                                             jnp.array([-1.2])),
                               0.9741, atol=SPEC_ATOL)
    # beta Delta = gamma -> log 2.
    np.testing.assert_allclose(dp.simpo_loss(jnp.array([-1.0]),
                                             jnp.array([-1.25])),
                               np.log(2.0), rtol=1e-6)

  def test_orpo_hand_values(self):
    # p_w = 0.5, p_l = 0.25: log-odds 0 and -log 3.
    out = dp.orpo_loss(jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25])))
    np.testing.assert_allclose(out, np.log(2.0) + 0.1 * np.log(4.0 / 3.0),
                               rtol=1e-6)
    # Equal inputs: NLL + lambda log 2.
    out = dp.orpo_loss(jnp.array([-2.0]), jnp.array([-2.0]),
                       odds_ratio_weight=0.5)
    np.testing.assert_allclose(out, 2.0 + 0.5 * np.log(2.0), rtol=1e-6)
    # Against the plain log-odds formula at a few points.
    lw = np.array([-0.01, -0.3, -2.0, -7.0])
    ll = np.array([-0.02, -1.5, -0.5, -9.0])
    odds = lambda l: l - np.log1p(-np.exp(l))
    plain = -lw + 0.1 * _sp(-(odds(lw) - odds(ll)))
    np.testing.assert_allclose(dp.orpo_loss(lw, ll, reduction="none"), plain,
                               rtol=1e-5)

  def test_orpo_is_finite_near_probability_one(self):
    lw = jnp.array([0.0, -1e-9, -1e4, 0.0])
    ll = jnp.array([-1e-9, 0.0, -1e4, -1e4])
    value, (g_w, g_l) = jax.value_and_grad(dp.orpo_loss, argnums=(0, 1))(
        lw, ll)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(g_w)) and np.all(np.isfinite(g_l)))

  def test_kto_reference_point(self):
    logp = jnp.array([-10.0, -12.0, -9.0])
    ref = jnp.array([-11.0, -11.0, -9.0])
    desirable = jnp.array([True, False, True])
    kl_p = jnp.array([-5.0, -7.0, 3.0])
    kl_r = jnp.array([-6.0, -7.5, 100.0])  # third masked: KL = (1 + 0.5) / 2
    kl_mask = jnp.array([1, 1, 0])
    out = dp.kto_loss(logp, ref, desirable, kl_policy_logps=kl_p,
                      kl_reference_logps=kl_r, kl_mask=kl_mask, beta=0.5,
                      desirable_weight=2.0, undesirable_weight=1.5,
                      reduction="none")
    z0, r = 0.75, np.array([1.0, -1.0, 0.0])
    expected = [2.0 * _sigmoid(-0.5 * (r[0] - z0)),
                1.5 * _sigmoid(-0.5 * (z0 - r[1])),
                2.0 * _sigmoid(-0.5 * (r[2] - z0))]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # A negative KL estimate is clamped to 0.
    out0 = dp.kto_loss(logp, ref, desirable, kl_policy_logps=-kl_p[:2],
                       kl_reference_logps=-kl_r[:2], reduction="none")
    np.testing.assert_allclose(
        out0, dp.kto_loss(logp, ref, desirable, reduction="none"), rtol=1e-6)
    # z0 carries no gradient.
    g = jax.grad(lambda k: dp.kto_loss(logp, ref, desirable,
                                       kl_policy_logps=k,
                                       kl_reference_logps=kl_r,
                                       kl_mask=kl_mask))(kl_p)
    np.testing.assert_array_equal(g, 0.0)


class LipoLambdaTest(chex.TestCase):

  def test_spec_worked_example(self):
    # psi = (2, 1, 0), correctly ranked. By hand: G = 2^psi - 1 = (3, 1, 0),
    # 1 / D(tau) = 1 / log2(1 + tau) = (1, 0.63093, 0.5), so
    # Delta_12 = |3 - 1| (1 - 0.63093) = 0.73814, Delta_13 = 3 * 0.5 = 1.5,
    # Delta_23 = 1 * (0.63093 - 0.5) = 0.13093.
    beta = 0.5
    logp = jnp.array([[-4.0, -6.0, -9.0]])
    ref = jnp.array([[-5.0, -5.0, -5.0]])
    psi = jnp.array([[2, 1, 0]])
    s = beta * np.array([1.0, -1.0, -4.0])  # (0.5, -0.5, -2): ranked 1, 2, 3
    w = lipo_lambda_weights(jnp.asarray(s), psi[0])
    np.testing.assert_allclose([w[0, 1], w[0, 2], w[1, 2]],
                               [0.7381, 1.5, 0.1309], atol=SPEC_ATOL)
    expected = (0.73814 * _sp(-(s[0] - s[1])) + 1.5 * _sp(-(s[0] - s[2]))
                + 0.13093 * _sp(-(s[1] - s[2])))
    out = dp.lipo_lambda_loss(logp, ref, psi, beta=beta)
    np.testing.assert_allclose(out, expected, rtol=1e-4)

  def test_two_responses_equal_dpo_up_to_the_weight(self):
    # Delta = |G_1 - G_2| |1 - 1/log2(3)| whatever the current ranking: the
    # pairs include correctly (h > 0) and wrongly (h < 0) ranked ones.
    self.assertTrue(np.any(H > 0) and np.any(H < 0))
    weight = 1.0 - 1.0 / np.log2(3.0)
    logp = jnp.stack([PC, PR], 1)
    ref = jnp.stack([RC, RR], 1)
    labels = jnp.tile(jnp.array([1, 0]), (6, 1))

    def lipo(logp):
      return dp.lipo_lambda_loss(logp, ref, labels, beta=0.2,
                                 reduction="none")

    def dpo(logp):
      return dp.dpo_loss(logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1],
                         beta=0.2, reduction="none")

    np.testing.assert_allclose(lipo(logp), weight * dpo(logp), rtol=1e-5)
    grad = lambda f: jax.grad(lambda x: jnp.sum(f(x)))(logp)
    np.testing.assert_allclose(grad(lipo), weight * grad(dpo), rtol=1e-4,
                               atol=1e-7)

  def test_reductions_and_list_normaliser(self):
    logp = jnp.array([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0],
                      [-2.0, -1.0, jnp.nan]])
    ref = jnp.zeros((3, 3))
    psi = jnp.array([[2, 1, 0], [1, 1, 1], [1, 0, 5]])  # list 1: all ties
    mask = jnp.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]])
    fn = lambda reduction: dp.lipo_lambda_loss(
        logp, ref, psi, beta=1.0, mask=mask, reduction=reduction)
    per_list = fn("none")
    # List 2: one pair (item 0 > item 1), s = (-2, -1): wrongly ranked.
    pair = (1.0 - 1.0 / np.log2(3.0)) * _sp(1.0)
    first = dp.lipo_lambda_loss(logp[:1], ref[:1], psi[:1], beta=1.0)
    np.testing.assert_allclose(per_list, [first, 0.0, pair], rtol=1e-5)
    np.testing.assert_allclose(fn("sum"), first + pair, rtol=1e-5)
    # The mean is over the 2 lists that have a pair (not over the 4 pairs).
    np.testing.assert_allclose(fn("mean"), (first + pair) / 2, rtol=1e-5)


class ProTest(chex.TestCase):

  def test_hand_example(self):
    # Sorted rewards (3, 1, 0), s = (-1, -2, -3).
    # k = 1: T = (3, 2, 3), terms s_j T_1j = (-3, -4, -9): L_1 = lse + 3.
    # k = 2: T = (1, 1), terms (-2, -3): L_2 = lse + 2.
    l1 = np.logaddexp.reduce([-3.0, -4.0, -9.0]) + 3.0
    l2 = np.logaddexp(-2.0, -3.0) + 2.0
    s = jnp.array([[-2.0, -3.0, -1.0]])
    r = jnp.array([[1.0, 0.0, 3.0]])  # unsorted on purpose
    np.testing.assert_allclose(dp.pro_loss(s, r, sft_weight=0.0), l1 + l2,
                               rtol=1e-6)
    # SFT term: sft_weight (n - 1)^2 NLL of the best (item 2), from
    # `sft_logps` (the summed log-prob) when given.
    out = dp.pro_loss(s, r, sft_weight=0.05)
    np.testing.assert_allclose(out, l1 + l2 + 0.05 * 4 * 1.0, rtol=1e-6)
    out = dp.pro_loss(s, r, sft_logps=jnp.array([[-20.0, -30.0, -10.0]]),
                      sft_weight=0.05)
    np.testing.assert_allclose(out, l1 + l2 + 0.05 * 4 * 10.0, rtol=1e-6)

  def test_permutation_and_padding_invariance(self):
    s = jnp.array([[-1.3, -0.2, -2.5, -0.9]])
    r = jnp.array([[0.5, 2.0, -1.0, 1.0]])
    fn = dp.pro_loss
    value, grad = jax.jit(jax.value_and_grad(lambda x: fn(x, r)))(s)
    perm = jnp.array([2, 0, 3, 1])
    np.testing.assert_allclose(fn(s[:, perm], r[:, perm]), value, rtol=1e-6)
    s_pad = jnp.concatenate([s, jnp.array([[jnp.nan, 0.0]])], 1)
    r_pad = jnp.concatenate([r, jnp.array([[9.0, jnp.inf]])], 1)
    mask = jnp.array([[1, 1, 1, 1, 0, 0]])
    v_pad, g_pad = jax.jit(jax.value_and_grad(lambda x: fn(x, r_pad, mask=mask)))(
        s_pad)
    np.testing.assert_allclose(v_pad, value, rtol=1e-6)
    np.testing.assert_allclose(g_pad[:, :4], grad, rtol=1e-5)
    np.testing.assert_array_equal(g_pad[:, 4:], 0.0)

  def test_short_lists_are_dropped(self):
    s = jnp.array([[-1.0, -2.0], [-1.0, -2.0]])
    r = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    mask = jnp.array([[1, 1], [1, 0]])
    per_list = dp.pro_loss(s, r, mask=mask, reduction="none")
    np.testing.assert_allclose(per_list, [_sp(-1.0) + 0.05 * 1.0, 0.0],
                               rtol=1e-6)
    np.testing.assert_allclose(dp.pro_loss(s, r, mask=mask), per_list[0],
                               rtol=1e-6)


class MahDpoTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_mean_over_heads_of_per_head_means(self):
    dpo = dp.dpo_loss(PC, PR, RC, RR, reduction="none")
    heads = jnp.array([0, 0, 0, 2, 2, 3])  # head 1 empty
    mask = jnp.array([1, 1, 1, 1, 1, 0])    # head 3 only masked pairs
    fn = lambda reduction: self.variant(functools.partial(
        dp.mah_dpo_loss, num_heads=4, reduction=reduction))(
            PC, PR, RC, RR, heads, mask=mask)
    head0, head2 = np.mean(dpo[:3]), np.mean(dpo[3:5])
    np.testing.assert_allclose(fn("mean"), (head0 + head2) / 2, rtol=1e-6)
    np.testing.assert_allclose(fn("sum"), head0 + head2, rtol=1e-6)
    np.testing.assert_allclose(fn("none"), np.asarray(dpo) * mask,
                               rtol=1e-6)

  def test_single_head_is_dpo(self):
    out = dp.mah_dpo_loss(PC, PR, RC, RR, jnp.zeros(6, jnp.int32),
                          num_heads=1, label_smoothing=0.1)
    np.testing.assert_allclose(
        out, dp.dpo_loss(PC, PR, RC, RR, label_smoothing=0.1), rtol=1e-6)

  def test_mix_head_logits(self):
    logits = jnp.array([[[1.0, 2.0]], [[3.0, -2.0]], [[0.0, 0.0]]])
    np.testing.assert_allclose(dp.mix_head_logits(logits),
                               [[4.0 / 3.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(
        dp.mix_head_logits(logits, jnp.array([1.0, 3.0, 0.0])),
        [[2.5, -1.0]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"`head_weights`.*\(3,\).*\(2,\)"):
      dp.mix_head_logits(logits, jnp.ones(2))


class CommonPropertiesTest(chex.TestCase):

  @parameterized.parameters(*NAMES)
  def test_padding_with_masked_junk_changes_nothing(self, name):
    loss, _ = LOSSES[name]
    # The last pair (list losses: the last list) is padding holding junk.
    x, y = jnp.asarray(PC), jnp.asarray(PR)
    mask = jnp.array([1, 1, 1, 1, 1, 0], bool)
    if name in LIST_LOSSES:
      mask = jnp.array([1, 1, 0, 1, 1, 1], bool)
    pad = ~mask
    x_junk = jnp.where(pad, jnp.nan, x)
    y_junk = jnp.where(pad, jnp.inf, y)
    x_other = jnp.where(pad, -3.0, x)
    y_other = jnp.where(pad, -50.0, y)

    def vg(x, y):
      return jax.value_and_grad(lambda x, y: loss(x, y, mask, "sum"),
                                argnums=(0, 1))(x, y)

    value, (g_x, g_y) = vg(x_junk, y_junk)
    ref_value, (ref_gx, ref_gy) = vg(x_other, y_other)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(g_x, ref_gx, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g_y, ref_gy, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(np.asarray(g_x)[pad], 0.0)
    np.testing.assert_array_equal(np.asarray(g_y)[pad], 0.0)

  @parameterized.parameters(*NAMES)
  def test_extreme_log_ratios_are_finite(self, name):
    loss, _ = LOSSES[name]
    # |log-ratio| up to 50 on log-probs near -1e4.
    x = jnp.array([-1e4 + 50.0, -1e4 - 50.0, -1e4, -30.0, -80.0, -1e-3])
    y = jnp.array([-1e4 - 50.0, -1e4 + 50.0, -1e4, -80.0, -30.0, -50.0])
    value, grads = jax.value_and_grad(
        lambda x, y: loss(x, y, ALL_VALID, "sum"), argnums=(0, 1))(x, y)
    self.assertTrue(np.isfinite(value), (name, value))
    for g in grads:
      self.assertTrue(np.all(np.isfinite(g)), (name, g))

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_no_jit_agree(self):
    x, y = jnp.asarray(PC), jnp.asarray(PR)
    for name in ("dpo", "kto", "lipo", "pro", "mah"):
      loss, _ = LOSSES[name]
      fn = self.variant(functools.partial(loss, m=ALL_VALID, r="sum"))
      np.testing.assert_allclose(fn(x, y), loss(x, y, ALL_VALID, "sum"),
                                 rtol=1e-6, err_msg=name)

  @parameterized.parameters("robust", "orpo", "kto", "dno", "lipo", "pro")
  def test_check_grads(self, name):
    loss, _ = LOSSES[name]
    x, y = jnp.asarray(PC) / 4, jnp.asarray(PR) / 4
    jtu.check_grads(lambda x, y: loss(x, y, ALL_VALID, "sum"), (x, y),
                    order=1, modes=("rev",), eps=1e-2, atol=2e-3, rtol=2e-3)

  def test_bfloat16_inputs_compute_in_float32(self):
    x, y = jnp.asarray(PC), jnp.asarray(PR)
    x16, y16 = x.astype(jnp.bfloat16), y.astype(jnp.bfloat16)
    for name in ("dpo", "orpo", "kto", "lipo", "pro", "mah"):
      loss, _ = LOSSES[name]
      out = loss(x16, y16, ALL_VALID, "sum")
      self.assertEqual(out.dtype, jnp.float32, name)
      # Close to the float32 value (the bfloat16 inputs are rounded, and a
      # few wrappers above do arithmetic in bfloat16 before the loss).
      np.testing.assert_allclose(out, loss(x, y, ALL_VALID, "sum"),
                                 rtol=2e-2, err_msg=name)
    # Exactly the float32 value of the rounded inputs.
    out = dp.dpo_loss(x16, y16, x16 + 1, y16, reduction="none")
    ref = dp.dpo_loss(x16.astype(jnp.float32), y16.astype(jnp.float32),
                      (x16 + 1).astype(jnp.float32), y16.astype(jnp.float32),
                      reduction="none")
    np.testing.assert_array_equal(out, ref)

  def test_weights(self):
    w = jnp.array([1.0, 0.0, 2.0, 1.0, 0.5, 3.0])
    for loss in (dp.dpo_loss, dp.ipo_loss, dp.hinge_loss):
      per_pair = loss(PC, PR, RC, RR, reduction="none")
      np.testing.assert_allclose(loss(PC, PR, RC, RR, weights=w),
                                 np.sum(w * per_pair) / 6, rtol=1e-5)

  @hypothesis.given(st.floats(-50, 50), st.floats(0.01, 2.0))
  @_SETTINGS
  def test_dpo_matches_formula_property(self, h, beta):
    out = dp.dpo_loss(jnp.array([h]), jnp.zeros(1), jnp.zeros(1),
                      jnp.zeros(1), beta=beta)
    np.testing.assert_allclose(out, _sp(-beta * np.float32(h)), rtol=1e-5,
                               atol=1e-6)


class ErrorsTest(parameterized.TestCase):

  def test_shapes_and_types_name_the_argument(self):
    c = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"`policy_chosen_logps` must have "
                       r"shape \[B\]; got shape \(3, 1\)"):
      dp.ipo_loss(c[:, None], c, c, c)
    with pytest.raises(ValueError, match=r"`reference_rejected_logps`.*"
                       r"\(3,\).*\(4,\)"):
      dp.dpo_loss(c, c, c, jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`rewards_2`.*\(2,\)"):
      dp.dno_loss(c, c, c, c, c, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`mask`.*\(3,\).*\(2,\)"):
      dp.simpo_loss(c, c, mask=jnp.ones(2))
    with pytest.raises(TypeError, match="`policy_rejected_logps`.*bool"):
      dp.orpo_loss(c, jnp.zeros(3, bool))
    with pytest.raises(ValueError, match=r"`policy_logps` must have shape "
                       r"\[B, K\]"):
      dp.lipo_lambda_loss(c, c, c)
    with pytest.raises(ValueError, match=r"`labels`.*\(1, 3\).*\(3, 1\)"):
      dp.lipo_lambda_loss(c[None], c[None], c[:, None])
    with pytest.raises(ValueError, match=r"`rewards`.*\(1, 3\).*\(1, 2\)"):
      dp.pro_loss(c[None], jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"`desirable`.*\(3,\)"):
      dp.kto_loss(c, c, jnp.ones(2, bool))
    with pytest.raises(ValueError, match="`weights`"):
      dp.hinge_loss(c, c, c, c, weights=jnp.ones(2))
    with pytest.raises(ValueError, match="`policy_chosen_logps`"):
      jax.jit(dp.dpo_loss)(c[:, None], c, c, c)

  def test_hyperparameters(self):
    c = jnp.zeros(3)
    for bad in (0.0, -1.0, float("nan")):
      with pytest.raises(ValueError, match="`beta` must be a finite number"):
        dp.dpo_loss(c, c, c, c, beta=bad)
    with pytest.raises(ValueError, match=r"`label_smoothing`.*\[0, 0.5\)"):
      dp.dpo_loss(c, c, c, c, label_smoothing=0.5)
    with pytest.raises(ValueError, match=r"`label_smoothing`.*\[0, 0.5\)"):
      dp.robust_dpo_loss(c, c, c, c, label_smoothing=0.5)
    with pytest.raises(TypeError, match="label_smoothing"):
      dp.robust_dpo_loss(c, c, c, c)  # required
    with pytest.raises(ValueError, match="`gamma` must be a finite"):
      dp.simpo_loss(c, c, gamma=float("inf"))
    with pytest.raises(ValueError, match="`odds_ratio_weight`"):
      dp.orpo_loss(c, c, odds_ratio_weight=-0.1)
    with pytest.raises(ValueError, match="`alpha`"):
      dp.selm_loss(c, c, c, c, c, c, alpha=-1.0)
    with pytest.raises(ValueError, match="`undesirable_weight`"):
      dp.kto_loss(c, c, c, undesirable_weight=-1.0)
    with pytest.raises(ValueError, match="`kl_policy_logps` and "
                       "`kl_reference_logps` must be given together"):
      dp.kto_loss(c, c, c, kl_policy_logps=c)
    with pytest.raises(ValueError, match="`sft_weight`"):
      dp.pro_loss(c[None], c[None], sft_weight=-0.5)
    with pytest.raises(ValueError, match="`reduction` must be one of"):
      dp.lipo_lambda_loss(c[None], c[None], c[None], reduction="avg")

  def test_mah_dpo_arguments(self):
    c = jnp.zeros(3)
    with pytest.raises(ValueError, match="`num_heads` must be a Python int"):
      dp.mah_dpo_loss(c, c, c, c, jnp.zeros(3, jnp.int32), num_heads=0)
    with pytest.raises(TypeError, match="`head_ids` must be an integer"):
      dp.mah_dpo_loss(c, c, c, c, jnp.zeros(3), num_heads=2)
    with pytest.raises(ValueError, match=r"`head_ids` must lie in "
                       r"\[0, num_heads\) = \[0, 2\); got 1 out-of-range"):
      dp.mah_dpo_loss(c, c, c, c, jnp.array([0, 1, 2]), num_heads=2)
    with pytest.raises(ValueError, match=r"`head_ids`.*\(3,\).*\(2,\)"):
      dp.mah_dpo_loss(c, c, c, c, jnp.array([0, 1]), num_heads=2)
