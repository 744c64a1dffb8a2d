"""Tests for the direct-preference losses of TRL's DPOTrainer beyond DPO/IPO/hinge.

EXO, NCA, BCO (and its reward shift), SPPO-hard, AOT (paired and unpaired),
APO-zero/down, DiscoPOP, f-DPO, WPO weights, LD-DPO log-probs and the name table.
The hand values below were worked out in float64 from the papers' formulas
(written out as `_plain` next to each loss) at log-ratios a (chosen), b
(rejected), h = a - b, beta = 0.5.
"""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax.losses import direct_preference as dp
from rmjax.losses.log_probs import sequence_log_probs

BETA = 0.5
_RNG = np.random.default_rng(1)
PC = (-20.0 + 5.0 * _RNG.normal(size=6)).astype(np.float32)
PR = (-20.0 + 5.0 * _RNG.normal(size=6)).astype(np.float32)
RC = (-20.0 + 5.0 * _RNG.normal(size=6)).astype(np.float32)
RR = (-20.0 + 5.0 * _RNG.normal(size=6)).astype(np.float32)
ALL_VALID = jnp.ones(6, bool)

# Hand points: log-ratios a (chosen) and b (rejected); h = a - b = 0, 2, -2.5, 1.
HAND_A = np.array([0.0, 1.0, -2.0, 4.0])
HAND_B = np.array([0.0, -1.0, 0.5, 3.0])


def _sp(x):
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _log_sigmoid(x):
  return -_sp(-np.asarray(x, np.float64))


def _plain_exo(a, b, eps=1e-3):
  z = BETA * (a - b)
  return (_sigmoid(z) * (_log_sigmoid(z) - np.log1p(-eps))
          + _sigmoid(-z) * (_log_sigmoid(-z) - np.log(eps)))


def _plain_discopop(a, b, tau=0.05):
  z = BETA * (a - b)
  return (1 - _sigmoid(z / tau)) * _sp(-z) + _sigmoid(z / tau) * np.exp(-z)


def _plain_f_dpo(score):
  return lambda a, b: _sp(-BETA * (score(a) - score(b)))


def _alpha_score(x, alpha=0.5):
  return (1.0 - np.exp(-alpha * x)) / alpha


# name -> (loss(pc, pr, rc, rr, mask, reduction), plain float64 per-pair
# formula of the log-ratios (a, b), hand values at (HAND_A, HAND_B)).
LOSSES = {
    "exo_pair": (
        functools.partial(dp.exo_pair_loss, beta=BETA), _plain_exo,
        [2.7612307, 1.2763098, 4.8393158, 1.9457340]),
    "nca_pair": (
        functools.partial(dp.nca_pair_loss, beta=BETA),
        lambda a, b: (_sp(-BETA * a) + 0.5 * _sp(BETA * a)
                      + 0.5 * _sp(BETA * b)),
        [1.3862944, 1.1981540, 1.8828622, 2.0410987]),
    "bco_pair": (
        functools.partial(dp.bco_pair_loss, beta=BETA, reward_shift=0.3),
        lambda a, b: _sp(0.3 - BETA * a) + _sp(BETA * b - 0.3),
        [1.4087105, 0.9692395, 2.2094681, 1.6310685]),
    "sppo_hard": (
        functools.partial(dp.sppo_hard_loss, beta=BETA),
        lambda a, b: (a - 1.0) ** 2 + (b + 1.0) ** 2,
        [2.0, 0.0, 11.25, 25.0]),
    "apo_zero": (
        functools.partial(dp.apo_zero_loss, beta=BETA),
        lambda a, b: _sigmoid(-BETA * a) + _sigmoid(BETA * b),
        [1.0, 0.7550813, 1.2932351, 0.9367774]),
    "apo_down": (
        functools.partial(dp.apo_down_loss, beta=BETA),
        lambda a, b: _sigmoid(BETA * a) + _sigmoid(-BETA * (a - b)),
        [1.0, 0.8914008, 1.0462413, 1.2583378]),
    "discopop": (
        functools.partial(dp.discopop_loss, beta=BETA), _plain_discopop,
        [0.8465736, 0.3678794, 1.5019291, 0.6065247]),
    "f_reverse_kl": (
        functools.partial(dp.f_divergence_dpo_loss, beta=BETA),
        _plain_f_dpo(lambda x: x),
        [0.6931472, 0.3132617, 1.5019291, 0.4740770]),
    "f_forward_kl": (
        functools.partial(dp.f_divergence_dpo_loss, beta=BETA,
                          divergence="forward_kl"),
        _plain_f_dpo(lambda x: -np.exp(-x)),
        [0.6931472, 0.2690777, 3.4243746, 0.6853103]),
    "f_js_divergence": (
        functools.partial(dp.f_divergence_dpo_loss, beta=BETA,
                          divergence="js_divergence"),
        _plain_f_dpo(_log_sigmoid),
        [0.6931472, 0.4740770, 1.1894080, 0.6855668]),
    "f_alpha_divergence": (
        functools.partial(dp.f_divergence_dpo_loss, beta=BETA,
                          divergence="alpha_divergence"),
        _plain_f_dpo(_alpha_score),
        [0.6931472, 0.3020887, 2.0738183, 0.6502129]),
}
NAMES = tuple(LOSSES)
# Losses whose gradient is negative in the chosen and positive in the
# rejected log-probability everywhere (or at the test points, see below).
MONOTONE = tuple(n for n in NAMES if n != "apo_down")


def _call(name, pc, pr, rc, rr, mask=ALL_VALID, reduction="none", **kw):
  return LOSSES[name][0](pc, pr, rc, rr, mask=mask, reduction=reduction, **kw)


def _hand_inputs():
  """Policy and reference log-probs with log-ratios (HAND_A, HAND_B)."""
  rc = jnp.array([-10.0, -3.0, -7.0, -12.0])
  rr = jnp.array([-9.0, -4.0, -1.5, -20.0])
  return rc + HAND_A, rr + HAND_B, rc, rr


class ValuesTest(chex.TestCase):

  @parameterized.parameters(*NAMES)
  def test_hand_values(self, name):
    _, plain, hand = LOSSES[name]
    out = _call(name, *_hand_inputs(), mask=None)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, hand, rtol=2e-6, atol=2e-6)
    # The written-out numbers are the formula's (rounded to 7 decimals).
    np.testing.assert_allclose(plain(HAND_A, HAND_B), hand, atol=6e-8)

  @parameterized.parameters(*NAMES)
  def test_matches_plain_formula_with_references(self, name):
    _, plain, _ = LOSSES[name]
    a = np.float64(PC) - RC
    b = np.float64(PR) - RR
    # Log-ratios of a few nats (apart from SPPO's squares, far log-ratios
    # only saturate the sigmoids).
    scale = 0.2
    pc, pr = RC + scale * a, RR + scale * b
    out = _call(name, pc.astype(np.float32), pr.astype(np.float32), RC, RR)
    a32 = np.float64(pc.astype(np.float32)) - np.float64(RC)
    b32 = np.float64(pr.astype(np.float32)) - np.float64(RR)
    np.testing.assert_allclose(out, plain(a32, b32), rtol=2e-5, atol=2e-5)

  def test_value_at_zero_log_ratios(self):
    # a = b = 0 (h = 0): EXO log(1/2) - (log(1 - e) + log e) / 2, NCA and BCO
    # (shift 0) 2 log 2, SPPO 2 / (4 beta^2), APO 1, DiscoPOP (log 2 + 1) / 2,
    # every f-DPO log 2.
    z = jnp.asarray(PC)
    e = 1e-3
    expected = {
        "exo_pair": np.log(0.5) - 0.5 * (np.log1p(-e) + np.log(e)),
        "nca_pair": 2 * np.log(2.0), "sppo_hard": 2.0, "apo_zero": 1.0,
        "apo_down": 1.0, "discopop": (np.log(2.0) + 1) / 2,
        "f_reverse_kl": np.log(2.0), "f_forward_kl": np.log(2.0),
        "f_js_divergence": np.log(2.0), "f_alpha_divergence": np.log(2.0)}
    for name, value in expected.items():
      np.testing.assert_allclose(_call(name, z, z, z, z), np.full(6, value),
                                 rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(
        dp.bco_pair_loss(z, z, z, z, reward_shift=0.0, reduction="none"),
        np.full(6, 2 * np.log(2.0)), rtol=1e-6)
    np.testing.assert_allclose(dp.exo_pair_loss(z, z, z, z)[None], 2.7612307,
                               rtol=1e-6)

  def test_exo_minimum_and_label_smoothing(self):
    # KL to the label (1 - e, e) is 0 where sigmoid(beta h) = 1 - e.
    e = 0.01
    h = np.log((1 - e) / e) / BETA
    z = jnp.zeros(1)
    out = dp.exo_pair_loss(z + h, z, z, z, beta=BETA, label_smoothing=e)
    np.testing.assert_allclose(out, 0.0, atol=1e-6)
    g = jax.grad(lambda c: dp.exo_pair_loss(c, z, z, z, beta=BETA,
                                            label_smoothing=e))(z + h)
    np.testing.assert_allclose(g, 0.0, atol=1e-6)

  def test_sppo_minimum(self):
    z = jnp.zeros(1)
    # a = 1 / (2 beta) = 1, b = -1: 0.
    np.testing.assert_allclose(
        dp.sppo_hard_loss(z + 1.0, z - 1.0, z, z, beta=BETA), 0.0)

  def test_bco_shift_moves_the_classifier(self):
    # delta = r: the chosen term is log 2 at r_w = delta.
    z = jnp.zeros(1)
    out = dp.bco_pair_loss(z + 2.0, z - 40.0, z, z, beta=BETA,
                           reward_shift=jnp.asarray(1.0), reduction="none")
    np.testing.assert_allclose(out, np.log(2.0) + _sp(-20.0 - 1.0), rtol=1e-6)
    # The shift carries no gradient.
    g = jax.grad(lambda s: dp.bco_pair_loss(
        jnp.asarray(PC), jnp.asarray(PR), RC, RR, reward_shift=s))(0.5)
    np.testing.assert_array_equal(g, 0.0)


class GradientTest(chex.TestCase):

  # Log-ratios with beta a < log 2 (NCA's chosen optimum), b > -1 / (2 beta)
  # (SPPO's rejected target), beta h < 6.9 (EXO's optimum) and beta h outside
  # DiscoPOP's band (-0.118, 0.072): z = beta h = -0.25, 0.15, 0.25, -0.55.
  A = np.array([-1.0, 0.5, -0.3, -2.0], np.float32)
  B = np.array([-0.5, 0.2, -0.8, -0.9], np.float32)

  def _grads(self, name, a, b):
    rc, rr = jnp.asarray(RC[:4]), jnp.asarray(RR[:4])
    return jax.grad(lambda c, r: _call(name, c, r, rc, rr, mask=None,
                                       reduction="sum"), argnums=(0, 1))(
                                           rc + a, rr + b)

  @parameterized.parameters(*MONOTONE)
  def test_gradient_signs(self, name):
    g_c, g_r = self._grads(name, self.A, self.B)
    self.assertTrue(np.all(g_c < 0), (name, g_c))
    self.assertTrue(np.all(g_r > 0), (name, g_r))

  def test_apo_down_gradients(self):
    # d/da = beta (sigmoid'(beta a) - sigmoid'(beta h)): 0 at a = b = 0,
    # positive for |a| < |h| (the chosen likelihood is pushed down), negative
    # for |a| > |h|; the rejected one is always pushed down (positive).
    a = np.array([0.0, 0.5, -2.0, 3.0], np.float32)
    b = np.array([0.0, -3.0, -1.5, 2.5], np.float32)
    g_c, g_r = self._grads("apo_down", a, b)
    np.testing.assert_allclose(g_c[0], 0.0, atol=1e-7)
    self.assertTrue(g_c[1] > 0 and g_c[2] < 0 and g_c[3] < 0, g_c)
    self.assertTrue(np.all(g_r[1:] > 0), g_r)
    s = lambda x: _sigmoid(x) * _sigmoid(-x)
    h = a - b
    np.testing.assert_allclose(g_c, BETA * (s(BETA * a) - s(BETA * h)),
                               rtol=1e-5, atol=1e-7)

  def test_discopop_positive_gradient_near_zero(self):
    # d loss / dz = +0.78426 at z = 0 (tau = 0.05): d loss / d pc = beta times.
    z = jnp.zeros(1)
    g = jax.grad(lambda c: dp.discopop_loss(c, z, z, z, beta=BETA))(z)
    np.testing.assert_allclose(g, BETA * 0.7842641, rtol=1e-5)

  def test_nca_chosen_optimum(self):
    # The chosen term -log sigmoid(r) - log sigmoid(-r) / 2 is minimal at
    # r = log 2.
    z = jnp.zeros(1)
    g = jax.grad(lambda c: dp.nca_pair_loss(c, z, z, z, beta=BETA))(
        z + np.log(2.0) / BETA)
    np.testing.assert_allclose(g, 0.0, atol=1e-6)

  @parameterized.parameters(*NAMES)
  def test_check_grads(self, name):
    rc, rr = jnp.asarray(RC[:4]), jnp.asarray(RR[:4])
    jtu.check_grads(lambda c, r: _call(name, c, r, rc, rr, mask=None,
                                       reduction="sum"),
                    (rc + self.A, rr + self.B), order=1, modes=("rev",),
                    eps=1e-2, atol=2e-3, rtol=2e-3)


class CommonPropertiesTest(chex.TestCase):

  @parameterized.parameters(*(NAMES + ("aot", "aot_unpaired")))
  def test_padding_with_masked_junk_changes_nothing(self, name):
    loss = LOSSES[name][0] if name in LOSSES else getattr(
        dp, name + "_loss")
    mask = jnp.array([1, 1, 0, 1, 1, 0], bool)
    pad = ~mask
    x, y = jnp.asarray(PC), jnp.asarray(PR)

    def vg(x, y, rc):
      return jax.value_and_grad(
          lambda x, y: loss(x, y, rc, RR, mask=mask, reduction="sum"),
          argnums=(0, 1))(x, y)

    value, (g_x, g_y) = vg(jnp.where(pad, jnp.nan, x),
                           jnp.where(pad, jnp.inf, y),
                           jnp.where(pad, -jnp.inf, RC))
    # Other junk, which would sort first (AOT) if it entered the sort.
    ref, (ref_gx, ref_gy) = vg(jnp.where(pad, -500.0, x),
                               jnp.where(pad, 30.0, y), RC)
    np.testing.assert_allclose(value, ref, rtol=1e-6)
    np.testing.assert_allclose(g_x, ref_gx, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g_y, ref_gy, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(np.asarray(g_x)[pad], 0.0)
    np.testing.assert_array_equal(np.asarray(g_y)[pad], 0.0)
    # ... and equal to the loss of the valid entries alone.
    keep = np.asarray(mask)
    alone = loss(x[keep], y[keep], RC[keep], RR[keep], reduction="sum")
    np.testing.assert_allclose(value, alone, rtol=1e-6)

  @parameterized.parameters(*NAMES)
  def test_reductions_and_weights(self, name):
    mask = jnp.array([1, 1, 1, 0, 1, 1], bool)
    w = jnp.array([1.0, 0.0, 2.0, 5.0, 0.5, 3.0])
    per_pair = np.asarray(_call(name, PC, PR, RC, RR, mask=ALL_VALID))
    none = _call(name, PC, PR, RC, RR, mask=mask)
    np.testing.assert_allclose(none, per_pair * np.asarray(mask), rtol=1e-6)
    total = np.sum(per_pair[np.asarray(mask)])
    np.testing.assert_allclose(_call(name, PC, PR, RC, RR, mask=mask,
                                     reduction="sum"), total, rtol=1e-5)
    np.testing.assert_allclose(_call(name, PC, PR, RC, RR, mask=mask,
                                     reduction="mean"), total / 5, rtol=1e-5)
    weighted = _call(name, PC, PR, RC, RR, mask=mask, reduction="mean",
                     weights=w)
    np.testing.assert_allclose(
        weighted, np.sum((w * per_pair)[np.asarray(mask)]) / 5, rtol=1e-5)

  @parameterized.parameters(*NAMES)
  def test_extreme_log_ratios_are_finite(self, name):
    x = jnp.array([-1e4 + 50.0, -1e4 - 50.0, -1e4, -30.0, -80.0, -1e-3])
    y = jnp.array([-1e4 - 50.0, -1e4 + 50.0, -1e4, -80.0, -30.0, -50.0])
    ref = jnp.array([-1e4, -1e4, -1e4, -50.0, -50.0, -20.0])
    value, grads = jax.value_and_grad(
        lambda x, y: _call(name, x, y, ref, ref, reduction="sum"),
        argnums=(0, 1))(x, y)
    self.assertTrue(np.isfinite(value), (name, value))
    for g in grads:
      self.assertTrue(np.all(np.isfinite(g)), (name, g))

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_vmap(self):
    batch = [jnp.stack([v, v[::-1]]) for v in map(jnp.asarray,
                                                   (PC, PR, RC, RR))]
    for name in NAMES:
      fn = self.variant(lambda pc, pr, rc, rr, name=name: _call(
          name, pc, pr, rc, rr, mask=None, reduction="mean"))
      np.testing.assert_allclose(
          fn(PC, PR, RC, RR), _call(name, PC, PR, RC, RR, reduction="mean"),
          rtol=1e-6, err_msg=name)
      vmapped = jax.vmap(fn)(*batch)
      np.testing.assert_allclose(
          vmapped, [fn(*(b[i] for b in batch)) for i in range(2)],
          rtol=1e-6, err_msg=name)

  def test_bfloat16_inputs_compute_in_float32(self):
    x16 = jnp.asarray(PC).astype(jnp.bfloat16)
    y16 = jnp.asarray(PR).astype(jnp.bfloat16)
    for name in NAMES:
      out = _call(name, x16, y16, RC, RR)
      self.assertEqual(out.dtype, jnp.float32, name)
      ref = _call(name, x16.astype(jnp.float32), y16.astype(jnp.float32),
                  RC, RR)
      np.testing.assert_array_equal(out, ref, err_msg=name)


class FDivergenceTest(chex.TestCase):

  def test_reverse_kl_is_dpo_exactly(self):
    mask = jnp.array([1, 1, 1, 0, 1, 1])
    w = jnp.array([1.0, 0.0, 2.0, 5.0, 0.5, 3.0])
    for kw in ({}, {"label_smoothing": 0.2, "weights": w, "mask": mask},
               {"beta": 0.3, "reduction": "none"}):
      f = functools.partial(dp.f_divergence_dpo_loss, divergence="reverse_kl",
                            **kw)
      d = functools.partial(dp.dpo_loss, **kw)
      np.testing.assert_array_equal(f(PC, PR, RC, RR), d(PC, PR, RC, RR))
      grad = lambda fn: jax.grad(lambda c: jnp.sum(fn(c, PR, RC, RR)))(
          jnp.asarray(PC))
      np.testing.assert_array_equal(grad(f), grad(d))
    # The default divergence is the reverse KL.
    np.testing.assert_array_equal(dp.f_divergence_dpo_loss(PC, PR, RC, RR),
                                  dp.dpo_loss(PC, PR, RC, RR))

  def test_alpha_divergence_limits(self):
    x, y = jnp.asarray(RC) + 0.3 * (PC - RC), jnp.asarray(RR) + 0.3 * (PR - RR)
    loss = lambda **kw: dp.f_divergence_dpo_loss(x, y, RC, RR, beta=BETA,
                                                 reduction="none", **kw)
    # alpha = 1: the forward KL (f' differs by the constant 1).
    np.testing.assert_allclose(loss(divergence="alpha_divergence", alpha=1.0),
                               loss(divergence="forward_kl"), rtol=1e-5)
    # alpha -> 0: the reverse KL.
    np.testing.assert_allclose(
        loss(divergence="alpha_divergence", alpha=1e-4), loss(), rtol=1e-3)


class AotTest(chex.TestCase):

  def test_paired_hand_example(self):
    # Policy margins pc - pr = (3, -1, 0.5) sorted (-1, 0.5, 3); reference
    # margins rc - rr = (0, 2, -2) sorted (-2, 0, 2); rank differences
    # (1, 0.5, 1), beta = 0.5: softplus(-0.5) = 0.4740770,
    # softplus(-0.25) = 0.5759394.
    z = jnp.zeros(3)
    pc, rc = jnp.array([3.0, -1.0, 0.5]), jnp.array([0.0, 2.0, -2.0])
    out = dp.aot_loss(pc - 7.0, z - 7.0, rc - 4.0, z - 4.0, beta=BETA,
                      reduction="none")
    np.testing.assert_allclose(out, [0.4740770, 0.5759394, 0.4740770],
                               rtol=1e-6)
    # cDPO's label smoothing, per rank.
    out = dp.aot_loss(pc, z, rc, z, beta=BETA, label_smoothing=0.1,
                      reduction="sum")
    d = np.array([1.0, 0.5, 1.0])
    np.testing.assert_allclose(
        out, np.sum(0.9 * _sp(-BETA * d) + 0.1 * _sp(BETA * d)), rtol=1e-6)

  def test_unpaired_hand_example(self):
    # Chosen log-ratios (1, -3, 2) sorted (-3, 1, 2); rejected (0, 4, -6)
    # sorted (-6, 0, 4); rank differences (3, 1, -2).
    rc = jnp.array([-5.0, -6.0, -7.0])
    rr = jnp.array([-8.0, -9.0, -10.0])
    pc = rc + jnp.array([1.0, -3.0, 2.0])
    pr = rr + jnp.array([0.0, 4.0, -6.0])
    out = dp.aot_unpaired_loss(pc, pr, rc, rr, beta=BETA, reduction="none")
    np.testing.assert_allclose(out, _sp(-BETA * np.array([3.0, 1.0, -2.0])),
                               rtol=1e-6)
    np.testing.assert_allclose(out, [0.2014133, 0.4740770, 1.3132617],
                               rtol=1e-6)

  def test_same_order_is_dpo(self):
    # With the margins in the same order under policy and reference, AOT
    # pairs each pair with itself: DPO (values and gradients).
    rc = jnp.array([-5.0, -6.0, -7.0, -8.0])
    rr = jnp.array([-9.0, -8.0, -7.0, -5.0])  # ref margins 4, 2, 0, -3
    pc = rc + jnp.array([0.5, 0.1, -0.2, 0.3])
    pr = rr + jnp.array([-0.5, 0.2, 0.1, 0.0])  # policy margins 5, 1.9, -0.3, -2.7
    aot = lambda c: dp.aot_loss(c, pr, rc, rr, beta=BETA)
    dpo = lambda c: dp.dpo_loss(c, pr, rc, rr, beta=BETA)
    np.testing.assert_allclose(aot(pc), dpo(pc), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(aot)(pc), jax.grad(dpo)(pc),
                               rtol=1e-5)
    one = [v[:1] for v in (pc, pr, rc, rr)]
    np.testing.assert_allclose(dp.aot_loss(*one), dp.dpo_loss(*one),
                               rtol=1e-6)

  def test_permutation_and_equal_distributions(self):
    x, y = jnp.asarray(PC), jnp.asarray(PR)
    perm = jnp.array([3, 0, 5, 1, 4, 2])
    for loss in (dp.aot_loss, dp.aot_unpaired_loss):
      np.testing.assert_allclose(loss(x[perm], y[perm], RC[perm], RR[perm]),
                                 loss(x, y, RC, RR), rtol=1e-6)
    # Unpaired, rejected log-ratios a permutation of the chosen: log 2 each.
    a = jnp.asarray(PC - RC)
    out = dp.aot_unpaired_loss(RC + a, RR + a[perm], RC, RR, reduction="none")
    np.testing.assert_allclose(out, np.full(6, np.log(2.0)), rtol=1e-6)

  def test_masked_ranks_and_reductions(self):
    mask = jnp.array([1, 0, 1, 1, 0, 1])
    out = dp.aot_loss(PC, PR, RC, RR, mask=mask, reduction="none")
    np.testing.assert_array_equal(out[4:], 0.0)  # n = 4 valid ranks
    keep = np.asarray(mask, bool)
    alone = dp.aot_loss(PC[keep], PR[keep], RC[keep], RR[keep],
                        reduction="none")
    np.testing.assert_allclose(out[:4], alone, rtol=1e-6)
    np.testing.assert_allclose(
        dp.aot_loss(PC, PR, RC, RR, mask=mask), np.mean(alone), rtol=1e-6)
    # No valid pair: 0, with zero gradient.
    value, g = jax.value_and_grad(lambda c: dp.aot_loss(
        c, PR, RC, RR, mask=jnp.zeros(6)))(jnp.asarray(PC))
    self.assertEqual(float(value), 0.0)
    np.testing.assert_array_equal(g, 0.0)

  def test_gradient_signs(self):
    for loss in (dp.aot_loss, dp.aot_unpaired_loss):
      g_c, g_r = jax.grad(lambda c, r: loss(c, r, RC, RR, reduction="sum"),
                          argnums=(0, 1))(jnp.asarray(PC), jnp.asarray(PR))
      self.assertTrue(np.all(g_c < 0), g_c)
      self.assertTrue(np.all(g_r > 0), g_r)

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_vmap_and_check_grads(self):
    for loss in (dp.aot_loss, dp.aot_unpaired_loss):
      fn = self.variant(functools.partial(loss, beta=BETA))
      np.testing.assert_allclose(fn(PC, PR, RC, RR),
                                 loss(PC, PR, RC, RR, beta=BETA), rtol=1e-6)
      stacked = [jnp.stack([v, v + 1.5 * jnp.arange(6.0)])
                 for v in map(jnp.asarray, (PC, PR, RC, RR))]
      np.testing.assert_allclose(
          jax.vmap(fn)(*stacked),
          [fn(*(s[i] for s in stacked)) for i in range(2)], rtol=1e-6)
      # Distinct values: the sort is locally constant, the loss smooth.
      jtu.check_grads(lambda c, r: fn(c / 4, r / 4, RC / 4, RR / 4),
                      (jnp.asarray(PC), jnp.asarray(PR)), order=1,
                      modes=("rev",), eps=1e-2, atol=2e-3, rtol=2e-3)


class BcoRewardShiftTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_running_mean_of_batch_means(self):
    shifter = bco_shift = dp.bco_reward_shift()
    update = self.variant(bco_shift.update)
    state = shifter.init()
    self.assertEqual(int(state.count), 0)
    # Batch 1: rewards (chosen; rejected) with one masked NaN: mean of
    # (1, 3, 2) = 2.
    r1 = jnp.array([[1.0, 3.0], [2.0, jnp.nan]])
    m1 = jnp.array([[1, 1], [1, 0]])
    delta, state = update(state, r1, mask=m1)
    np.testing.assert_allclose(delta, 2.0)
    # Batch 2: mean -1; running mean of batch means (2 + (-1)) / 2.
    delta, state = update(state, jnp.array([[0.0, -2.0]]))
    np.testing.assert_allclose(delta, 0.5)
    # A batch with no valid reward changes nothing.
    delta, state2 = update(state, jnp.array([[9.0]]), mask=jnp.array([[0]]))
    np.testing.assert_allclose(delta, 0.5)
    self.assertEqual(int(state2.count), 2)
    # Batch 3: mean 4 -> (2 - 1 + 4) / 3.
    delta, state = update(state2, jnp.array([4.0]))
    np.testing.assert_allclose(delta, 5.0 / 3.0, rtol=1e-6)

  def test_ema(self):
    shifter = dp.bco_reward_shift(decay=0.9)
    delta, state = shifter.update(shifter.init(), jnp.array([2.0, 4.0]))
    np.testing.assert_allclose(delta, 3.0)  # the first batch sets delta
    delta, state = shifter.update(state, jnp.array([-7.0]))
    np.testing.assert_allclose(delta, 0.9 * 3.0 + 0.1 * -7.0, rtol=1e-6)

  def test_shift_carries_no_gradient_and_feeds_the_loss(self):
    shifter = dp.bco_reward_shift()

    def step(pc, state):
      r_w = dp.implicit_rewards(pc, RC, beta=BETA)
      r_l = dp.implicit_rewards(PR, RR, beta=BETA)
      delta, state = shifter.update(state, jnp.stack([r_w, r_l]))
      return dp.bco_pair_loss(pc, PR, RC, RR, reward_shift=delta,
                              beta=BETA), delta

    (value, delta), g = jax.value_and_grad(step, has_aux=True)(
        jnp.asarray(PC), shifter.init())
    expected_delta = BETA * np.mean(np.concatenate([PC - RC, PR - RR]))
    np.testing.assert_allclose(delta, expected_delta, rtol=1e-5)
    # The gradient is that of the loss at a constant shift.
    g_const = jax.grad(lambda pc: dp.bco_pair_loss(
        pc, PR, RC, RR, reward_shift=delta, beta=BETA))(jnp.asarray(PC))
    np.testing.assert_allclose(g, g_const, rtol=1e-6)


class WpoWeightsTest(chex.TestCase):

  @staticmethod
  def _numpy_log_weight(logits, targets, mask):
    logits = np.asarray(logits, np.float64)
    logp = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
    p = np.exp(logp)
    token = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    adjusted = token - np.log(np.sum(p ** 2, -1))
    return np.sum(adjusted * mask, 1) / np.maximum(np.sum(mask, 1), 1)

  def test_matches_numpy_on_a_tiny_vocab(self):
    rng = np.random.default_rng(3)
    lw = rng.normal(size=(2, 3, 4)).astype(np.float32) * 2
    ll = rng.normal(size=(2, 2, 4)).astype(np.float32) * 2
    tw = np.array([[0, 3, 1], [2, 2, 0]])
    tl = np.array([[1, 0], [3, 2]])
    mw = np.array([[1, 1, 0], [1, 1, 1]])
    ml = np.array([[1, 1], [1, 0]])
    expected = np.exp(self._numpy_log_weight(lw, tw, mw)
                      + self._numpy_log_weight(ll, tl, ml))
    out = dp.wpo_weights(lw, tw, ll, tl, chosen_mask=mw, rejected_mask=ml)
    self.assertEqual(out.shape, (2,))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # Junk at masked positions: NaN logits, -100 targets.
    lw_junk = np.where(mw[..., None] == 0, np.nan, lw)
    tw_junk = np.where(mw == 0, -100, tw)
    np.testing.assert_allclose(
        dp.wpo_weights(lw_junk, tw_junk, ll, tl, chosen_mask=mw,
                       rejected_mask=ml), expected, rtol=1e-5)
    # Clamped at 1, as older TRL releases do.
    np.testing.assert_allclose(
        dp.wpo_weights(lw, tw, ll, tl, chosen_mask=mw, rejected_mask=ml,
                       max_weight=1.0), np.minimum(expected, 1.0), rtol=1e-5)

  def test_hand_values(self):
    # V = 2, p = (0.75, 0.25): sum p^2 = 0.625; token 0 -> 1.2, token 1 -> 0.4.
    # Chosen (0, 0): mean log 1.2; rejected (1): log 0.4; weight 0.48.
    logits = jnp.log(jnp.array([[[0.75, 0.25], [0.75, 0.25]]]))
    out = dp.wpo_weights(logits, jnp.array([[0, 0]]), logits[:, :1],
                         jnp.array([[1]]))
    np.testing.assert_allclose(out, [0.48], rtol=1e-6)
    # Uniform logits: p / sum p^2 = 1.
    u = jnp.zeros((3, 4, 5))
    np.testing.assert_allclose(
        dp.wpo_weights(u, jnp.zeros((3, 4), jnp.int32), u,
                       jnp.ones((3, 4), jnp.int32)), np.ones(3), rtol=1e-6)

  def test_no_gradient_and_usable_as_weights(self):
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(6, 3, 4)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 4, size=(6, 3)))
    g = jax.grad(lambda l: jnp.sum(dp.wpo_weights(l, targets, l, targets)))(
        logits)
    np.testing.assert_array_equal(g, 0.0)
    w = dp.wpo_weights(logits, targets, logits, targets)
    for name in ("f_reverse_kl", "nca_pair", "apo_zero"):
      per_pair = _call(name, PC, PR, RC, RR)
      np.testing.assert_allclose(
          _call(name, PC, PR, RC, RR, reduction="mean", weights=w),
          np.mean(np.asarray(w) * np.asarray(per_pair)), rtol=1e-5)
    jitted = jax.jit(dp.wpo_weights)(logits, targets, logits, targets)
    np.testing.assert_allclose(jitted, w, rtol=1e-6)


class LdDpoTest(chex.TestCase):

  def test_alpha_one_is_the_plain_sum(self):
    rng = np.random.default_rng(5)
    cw = -rng.random((4, 5)).astype(np.float32)
    cl = -rng.random((4, 3)).astype(np.float32)
    mw = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0],
                   [1, 0, 0, 0, 0]])
    ml = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]])
    w, l = dp.ld_dpo_log_probs(cw, cl, alpha=1.0, chosen_mask=mw,
                               rejected_mask=ml)
    np.testing.assert_allclose(w, sequence_log_probs(cw, mw), rtol=1e-6)
    np.testing.assert_allclose(l, sequence_log_probs(cl, ml), rtol=1e-6)

  def test_hand_values(self):
    # Chosen tokens (-1, -2, -3, -4) with the 2nd masked: response tokens
    # (-1, -3, -4), |y_w| = 3. Rejected (-5, -6), |y_l| = 2: l_p = 2.
    # chosen = -1 - 3 + alpha (-4); rejected = -11 (no tail).
    cw = jnp.array([[-1.0, jnp.nan, -3.0, -4.0]])
    mw = jnp.array([[1, 0, 1, 1]])
    cl = jnp.array([[-5.0, -6.0]])
    for alpha in (0.0, 0.3, 1.0):
      w, l = dp.ld_dpo_log_probs(cw, cl, alpha=alpha, chosen_mask=mw)
      np.testing.assert_allclose(w, [-4.0 - 4.0 * alpha], rtol=1e-6)
      np.testing.assert_allclose(l, [-11.0], rtol=1e-6)
    # Feeding dpo_loss: the policy and the reference with the same masks.
    w, l = dp.ld_dpo_log_probs(cw, cl, alpha=0.5, chosen_mask=mw)
    w_ref, l_ref = dp.ld_dpo_log_probs(cw - 1.0, cl, alpha=0.5,
                                       chosen_mask=mw)
    # Chosen log-ratio 1 + 1 + 0.5 * 1 = 2.5, rejected 0: softplus(-0.25).
    np.testing.assert_allclose(dp.dpo_loss(w, l, w_ref, l_ref, beta=0.1),
                               _sp(-0.25), rtol=1e-6)

  def test_equal_lengths_ignore_alpha_and_gradients(self):
    x = jnp.asarray(PC.reshape(2, 3))
    y = jnp.asarray(PR.reshape(2, 3))
    w, l = dp.ld_dpo_log_probs(x, y, alpha=0.2)
    np.testing.assert_allclose(w, np.sum(PC.reshape(2, 3), 1), rtol=1e-6)
    np.testing.assert_allclose(l, np.sum(PR.reshape(2, 3), 1), rtol=1e-6)
    # The tail tokens get gradient alpha, the public ones 1, masked ones 0.
    mask = jnp.array([[1, 1, 1], [1, 0, 0]])
    g = jax.grad(lambda x: jnp.sum(dp.ld_dpo_log_probs(
        x, y[:, :1], alpha=0.2, chosen_mask=mask)[0]))(x)
    np.testing.assert_allclose(g, [[1.0, 0.2, 0.2], [1.0, 0.0, 0.0]])
    jitted = jax.jit(functools.partial(dp.ld_dpo_log_probs, alpha=0.2))(x, y)
    np.testing.assert_allclose(jitted, (w, l), rtol=1e-6)


class RegistryTest(chex.TestCase):

  def test_names_map_to_the_functions(self):
    self.assertIs(dp.get_paired_loss("sigmoid"), dp.dpo_loss)
    self.assertIs(dp.PAIRED_LOSSES["aot_pair"], dp.aot_unpaired_loss)
    expected = {"sigmoid", "dpo", "robust", "ipo", "hinge", "exo_pair",
                "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
                "aot_pair", "apo_zero", "apo_down", "discopop",
                "f_divergence"}
    self.assertEqual(set(dp.PAIRED_LOSSES), expected)
    needs = {"bco_pair": {"reward_shift": 0.2}, "robust": {"label_smoothing": 0.1}}
    for name in expected:
      fn = dp.get_paired_loss(name)
      out = fn(PC, PR, RC, RR, beta=BETA, mask=ALL_VALID, **needs.get(name, {}))
      self.assertEqual(out.shape, ())
      self.assertTrue(np.isfinite(out), name)
    with pytest.raises(TypeError):
      dp.PAIRED_LOSSES["new"] = dp.dpo_loss  # read-only

  def test_unknown_name_lists_the_known_ones(self):
    with pytest.raises(ValueError, match=r"Unknown paired loss 'kto_pair'.*"
                       r"apo_down.*sigmoid"):
      dp.get_paired_loss("kto_pair")
    with pytest.raises(ValueError, match="Unknown paired loss None"):
      dp.get_paired_loss(None)


class ErrorsTest(parameterized.TestCase):

  def test_hyperparameters(self):
    c = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"`label_smoothing` must be in "
                       r"\(0, 0.5\) for EXO"):
      dp.exo_pair_loss(c, c, c, c, label_smoothing=0.0)
    with pytest.raises(ValueError, match=r"`label_smoothing`.*\[0, 0.5\)"):
      dp.exo_pair_loss(c, c, c, c, label_smoothing=0.6)
    with pytest.raises(ValueError, match="`tau` must be a finite number"):
      dp.discopop_loss(c, c, c, c, tau=0.0)
    with pytest.raises(ValueError, match=r"`divergence` must be one of "
                       r"\('reverse_kl', 'forward_kl'"):
      dp.f_divergence_dpo_loss(c, c, c, c, divergence="kl")
    with pytest.raises(ValueError, match="`alpha` must be a finite number"):
      dp.f_divergence_dpo_loss(c, c, c, c, divergence="alpha_divergence",
                               alpha=-1.0)
    for loss in (dp.nca_pair_loss, dp.sppo_hard_loss, dp.apo_zero_loss,
                 dp.apo_down_loss, dp.aot_loss, dp.aot_unpaired_loss):
      with pytest.raises(ValueError, match="`beta` must be a finite number"):
        loss(c, c, c, c, beta=0.0)
      with pytest.raises(ValueError, match="`reduction` must be one of"):
        loss(c, c, c, c, reduction="avg")
    with pytest.raises(TypeError, match="reward_shift"):
      dp.bco_pair_loss(c, c, c, c)  # required
    with pytest.raises(ValueError, match=r"`reward_shift` must have shape "
                       r"\[\] \(a scalar\); got shape \(3,\)"):
      dp.bco_pair_loss(c, c, c, c, reward_shift=c)
    with pytest.raises(ValueError, match=r"`decay` must be in \[0, 1.0\)"):
      dp.bco_reward_shift(decay=1.0)
    with pytest.raises(ValueError, match=r"`alpha` must be a Python float in "
                       r"\[0, 1\]; got float 1.5"):
      dp.ld_dpo_log_probs(c[None], c[None], alpha=1.5)
    with pytest.raises(ValueError, match="`max_weight`"):
      dp.wpo_weights(c[None, :, None], jnp.zeros((1, 3), jnp.int32),
                     c[None, :, None], jnp.zeros((1, 3), jnp.int32),
                     max_weight=0.0)

  def test_shapes_name_the_argument(self):
    c = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"`reference_rejected_logps`.*"
                       r"\(3,\).*\(4,\)"):
      dp.nca_pair_loss(c, c, c, jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`policy_chosen_logps` must have "
                       r"shape \[B\]"):
      dp.aot_loss(c[:, None], c, c, c)
    with pytest.raises(ValueError, match=r"`mask`.*\(3,\).*\(2,\)"):
      dp.aot_unpaired_loss(c, c, c, c, mask=jnp.ones(2))
    with pytest.raises(TypeError, match="weights"):
      dp.aot_loss(c, c, c, c, weights=c)  # terms belong to ranks
    logits = jnp.zeros((2, 3, 4))
    targets = jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(ValueError, match=r"`rejected_logits` must have the "
                       r"batch size B = 2"):
      dp.wpo_weights(logits, targets, logits[:1], targets[:1])
    with pytest.raises(ValueError, match=r"`chosen_logits` must have shape "
                       r"\[B, T_w, V\]"):
      dp.wpo_weights(logits[0], targets, logits, targets)
    with pytest.raises(ValueError, match=r"`targets` must lie in \[0, V\)"):
      dp.wpo_weights(logits, targets + 7, logits, targets)
    with pytest.raises(ValueError, match=r"`rejected_token_logps` must have "
                       r"the batch size B = 2"):
      dp.ld_dpo_log_probs(targets * 1.0, jnp.zeros((3, 3)), alpha=0.5)
    with pytest.raises(ValueError, match=r"`chosen_mask`.*\(2, 3\).*\(2, 2\)"):
      dp.ld_dpo_log_probs(targets * 1.0, targets * 1.0, alpha=0.5,
                          chosen_mask=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"`rewards`|`mask`"):
      shifter = dp.bco_reward_shift()
      shifter.update(shifter.init(), c, mask=jnp.ones(2))
