"""Tests for rmjax.losses.pluralistic: MiCRo, MaxMin, PAL and VPL pieces."""

import math

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
from rmjax.losses.pluralistic import PAL_INIT_LOG_TEMPERATURE
from rmjax.losses.pluralistic import gaussian_kl_to_standard_normal
from rmjax.losses.pluralistic import hedge_update
from rmjax.losses.pluralistic import maxmin_assign_users
from rmjax.losses.pluralistic import mixture_bradley_terry_loss
from rmjax.losses.pluralistic import mixture_posterior
from rmjax.losses.pluralistic import pal_a_score
from rmjax.losses.pluralistic import pal_a_user_point
from rmjax.losses.pluralistic import pal_b_score
from rmjax.losses.pluralistic import pal_b_user_vector
from rmjax.losses.pluralistic import reparameterize
from rmjax.losses.pluralistic import vpl_loss
from rmjax.losses.pluralistic import vpl_reward_scaling

_RNG = np.random.default_rng(0)
B, K, D, Z, M = 6, 3, 5, 4, 7
CHOSEN = _RNG.normal(size=(B, K)).astype(np.float32)
REJECTED = _RNG.normal(size=(B, K)).astype(np.float32)
LOGITS = _RNG.normal(size=(B, K)).astype(np.float32)
WEIGHTS = np.array([1.0, 0.5, 2.0, 0.0, 1.5, 1.0], np.float32)
MASK = np.array([True, True, False, True, True, False])
FEAT_C = _RNG.normal(size=(B, D)).astype(np.float32)
FEAT_R = _RNG.normal(size=(B, D)).astype(np.float32)
USER = _RNG.normal(size=(B, D)).astype(np.float32)
PROTOTYPES = _RNG.normal(size=(K, D)).astype(np.float32)
PROMPT_G = _RNG.normal(size=(B, K, D)).astype(np.float32)
MEAN = _RNG.normal(size=(B, Z)).astype(np.float32)
LOG_VAR = _RNG.normal(size=(B, Z)).astype(np.float32)
R_C = _RNG.normal(size=B).astype(np.float32)
R_R = _RNG.normal(size=B).astype(np.float32)


def _np_softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _np_mixture_nll(c, r, logits):
  return -np.log(np.sum(_np_softmax(logits) * _np_sigmoid(
      np.asarray(c, np.float64) - r), -1))


def _junk_rows(n, width, shape_tail=()):
  junk = np.full((n, width) + shape_tail, np.nan, np.float32)
  junk[0] = np.inf
  if n > 2:
    junk[2] = -np.inf
  return junk


class MixtureBradleyTerryTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    fn = self.variant(lambda c, r, l: mixture_bradley_terry_loss(
        c, r, l, reduction="none"))
    out = fn(CHOSEN, REJECTED, LOGITS)
    self.assertEqual(out.shape, (B,))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, _np_mixture_nll(CHOSEN, REJECTED, LOGITS),
                               rtol=1e-5)

  def test_hand_value(self):
    # Weights (0.75, 0.25) from logits (log 3, 0); sigmoid(Delta) = (0.5, 1):
    # -log(0.375 + 0.25).
    out = mixture_bradley_terry_loss(
        jnp.array([[0.0, 30.0]]), jnp.zeros((1, 2)),
        jnp.array([[math.log(3.0), 0.0]]))
    np.testing.assert_allclose(out, -np.log(0.625), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_one_head_is_bradley_terry(self):
    fn = self.variant(lambda c, r, l: mixture_bradley_terry_loss(
        c, r, l, weights=WEIGHTS, mask=MASK, reduction="sum"))
    out = fn(CHOSEN[:, :1], REJECTED[:, :1], LOGITS[:, :1])
    np.testing.assert_allclose(
        out, bradley_terry_loss(CHOSEN[:, 0], REJECTED[:, 0], weights=WEIGHTS,
                                mask=MASK, reduction="sum"), rtol=1e-6)

  def test_identical_heads_are_bradley_terry_whatever_the_router(self):
    c = np.tile(CHOSEN[:, :1], (1, K))
    r = np.tile(REJECTED[:, :1], (1, K))
    np.testing.assert_allclose(
        mixture_bradley_terry_loss(c, r, 10.0 * LOGITS, reduction="none"),
        bradley_terry_loss(CHOSEN[:, 0], REJECTED[:, 0], reduction="none"),
        rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_weights_mask_and_reductions(self):
    ref = _np_mixture_nll(CHOSEN, REJECTED, LOGITS) * WEIGHTS * MASK

    def fn(reduction):
      return self.variant(lambda c, r, l, w, m: mixture_bradley_terry_loss(
          c, r, l, weights=w, mask=m, reduction=reduction))(
              CHOSEN, REJECTED, LOGITS, WEIGHTS, MASK)

    np.testing.assert_allclose(fn("none"), ref, rtol=1e-5)
    np.testing.assert_allclose(fn("sum"), ref.sum(), rtol=1e-5)
    np.testing.assert_allclose(fn("mean"), ref.sum() / 4, rtol=1e-5)

  def test_mixture_beats_single_bt_on_two_opposed_groups(self):
    # Half the pairs come from a group preferring y_1 (reward +x), half from
    # one preferring y_2 (reward -x). The best single BT model is at chance
    # (log 2) on this balanced data; the two-head mixture, with the router
    # knowing the group, fits both.
    x = np.linspace(1.0, 4.0, 8).astype(np.float32)
    c = np.stack([x, -x], -1)
    r = -c
    group = np.array([0, 1] * 4)
    logits = np.where(np.eye(2)[group] > 0, 10.0, -10.0).astype(np.float32)
    # Labels: group 0's chosen is "c", group 1's chosen is "r".
    chosen = np.where(group[:, None] == 0, c, r)
    rejected = np.where(group[:, None] == 0, r, c)
    mixture = mixture_bradley_terry_loss(chosen, rejected, logits)
    single = min(float(bradley_terry_loss(chosen[:, k], rejected[:, k]))
                 for k in range(2))
    self.assertGreaterEqual(single, np.log(2.0) - 1e-6)
    self.assertLess(float(mixture), 0.15)

  @chex.variants(with_jit=True, without_jit=True)
  def test_padding_with_masked_junk_changes_nothing(self):
    c, r, l = CHOSEN[:4], REJECTED[:4], LOGITS[:4]
    pad = lambda x: np.concatenate([x, _junk_rows(3, K)])
    mask = np.array([True] * 4 + [False] * 3)
    w_pad = np.concatenate([WEIGHTS[:4], [np.nan, np.inf, 1.0]])

    def loss(c, r, l, w, m):
      return mixture_bradley_terry_loss(c, r, l, weights=w, mask=m)

    grad_fn = self.variant(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    value, grads = grad_fn(c, r, l, WEIGHTS[:4], None)
    value_pad, grads_pad = grad_fn(pad(c), pad(r), pad(l), w_pad, mask)
    np.testing.assert_allclose(value_pad, value, rtol=1e-6)
    for g, g_pad in zip(grads, grads_pad):
      np.testing.assert_allclose(g_pad[:4], g, rtol=1e-5, atol=1e-7)
      np.testing.assert_array_equal(g_pad[4:], 0.0)

  def test_gradient_wrt_logits_is_prior_minus_posterior(self):
    # d/dlogits -log sum_k w_k p_k = w - q, the EM identity.
    grad = jax.grad(lambda l: mixture_bradley_terry_loss(
        CHOSEN, REJECTED, l, reduction="sum"))(LOGITS)
    expected = _np_softmax(LOGITS) - mixture_posterior(CHOSEN, REJECTED,
                                                       LOGITS)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)

  def test_check_grads(self):
    fn = lambda c, r, l: mixture_bradley_terry_loss(c, r, l, weights=WEIGHTS,
                                                    mask=MASK)
    jtu.check_grads(jax.jit(fn), (CHOSEN, REJECTED, LOGITS), order=1,
                    modes=("fwd", "rev"), eps=1e-2, atol=1e-3, rtol=1e-3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_large_inputs_are_finite(self):
    c = jnp.array([[1e4, -1e4], [-1e4, -1e4]])
    r = jnp.zeros((2, 2))
    l = jnp.array([[1e4, -1e4], [-1e4, 1e4]])

    def loss(c, l):
      return mixture_bradley_terry_loss(c, r, l, reduction="none")

    value = self.variant(loss)(c, l)
    # Row 0: all weight on the right head: 0. Row 1: -log sigmoid(-1e4).
    np.testing.assert_allclose(value, [0.0, 1e4], rtol=1e-6, atol=1e-6)
    g_c, g_l = jax.grad(lambda c, l: jnp.sum(loss(c, l)), argnums=(0, 1))(c, l)
    self.assertTrue(np.all(np.isfinite(g_c)) and np.all(np.isfinite(g_l)))

  def test_bfloat16_inputs(self):
    out = mixture_bradley_terry_loss(
        CHOSEN.astype(jnp.bfloat16), REJECTED.astype(jnp.bfloat16),
        LOGITS.astype(jnp.bfloat16), reduction="none")
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(
        out, _np_mixture_nll(CHOSEN, REJECTED, LOGITS), rtol=3e-2, atol=3e-2)

  def test_bad_arguments_name_the_argument(self):
    c = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match=r"`chosen_rewards` must have shape "
                       r"\[B, K\]; got shape \(3,\)"):
      mixture_bradley_terry_loss(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`rejected_rewards`.*\(3, 1\)"):
      mixture_bradley_terry_loss(c, jnp.zeros((3, 1)), c)
    with pytest.raises(ValueError, match=r"`mixture_logits`.*\(3, 2\).*"
                       r"\(2, 2\)"):
      mixture_bradley_terry_loss(c, c, jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"`chosen_rewards`.*K >= 1"):
      mixture_bradley_terry_loss(jnp.zeros((3, 0)), jnp.zeros((3, 0)),
                                 jnp.zeros((3, 0)))
    with pytest.raises(ValueError, match=r"`weights`.*\(3,\).*\(3, 2\)"):
      mixture_bradley_terry_loss(c, c, c, weights=c)
    with pytest.raises(ValueError, match=r"`mask`.*\(3,\)"):
      mixture_bradley_terry_loss(c, c, c, mask=jnp.ones(2, bool))
    with pytest.raises(TypeError, match=r"`mixture_logits`.*bool"):
      mixture_bradley_terry_loss(c, c, jnp.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="`reduction`"):
      mixture_bradley_terry_loss(c, c, c, reduction="mean_over_heads")
    with pytest.raises(ValueError, match="`rejected_rewards`"):
      jax.jit(mixture_bradley_terry_loss)(c, jnp.zeros((2, 2)), c)


class PosteriorAndHedgeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_posterior_is_bayes_rule(self):
    q = self.variant(mixture_posterior)(CHOSEN, REJECTED, LOGITS)
    joint = _np_softmax(LOGITS) * _np_sigmoid(CHOSEN - REJECTED)
    np.testing.assert_allclose(q, joint / joint.sum(-1, keepdims=True),
                               rtol=1e-5)
    np.testing.assert_allclose(np.sum(q, -1), 1.0, rtol=1e-6)

  def test_posterior_is_stable_for_large_inputs(self):
    q = mixture_posterior(jnp.array([[1e4, -1e4]]), jnp.zeros((1, 2)),
                          jnp.array([[-1e4, 1e4]]))
    # Prior all on head 1, likelihood all on head 0: a finite compromise.
    self.assertTrue(np.all(np.isfinite(q)))
    np.testing.assert_allclose(np.sum(q), 1.0, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_hedge_with_log_loss_and_unit_rate_is_the_posterior(self):
    log_w = jax.nn.log_softmax(jnp.asarray(LOGITS))
    losses = -jax.nn.log_sigmoid(jnp.asarray(CHOSEN - REJECTED))
    new = self.variant(hedge_update)(log_w, losses, 1.0)
    np.testing.assert_allclose(
        jnp.exp(new), mixture_posterior(CHOSEN, REJECTED, LOGITS), rtol=1e-5)

  @hypothesis.settings(max_examples=20, deadline=None)
  @hypothesis.given(seed=st.integers(0, 2**31), steps=st.integers(1, 6),
                    eta=st.floats(0.0, 5.0))
  def test_repeated_hedge_is_exponential_weights(self, seed, steps, eta):
    rng = np.random.default_rng(seed)
    log_w0 = rng.normal(size=4).astype(np.float32)
    losses = rng.uniform(0, 1, size=(steps, 4)).astype(np.float32)
    log_w = jnp.asarray(log_w0)
    for loss_t in losses:
      log_w = hedge_update(log_w, loss_t, eta)
    expected = np.log(_np_softmax(log_w0 - eta * losses.astype(
        np.float64).sum(0)))
    np.testing.assert_allclose(log_w, expected, rtol=1e-4, atol=1e-5)

  def test_hedge_concentrates_on_the_best_head(self):
    log_w = jnp.zeros((2, 3))  # unnormalised input is fine
    losses = jnp.array([[0.1, 0.5, 0.9], [1.0, 0.0, 1.0]])
    for _ in range(50):
      log_w = hedge_update(log_w, losses, 0.5)
    np.testing.assert_array_equal(np.argmax(log_w, -1), [0, 1])
    self.assertGreater(float(jnp.exp(log_w[1, 1])), 0.999)
    # eta = 0 only normalises.
    np.testing.assert_allclose(
        hedge_update(jnp.zeros(4), jnp.ones(4), 0.0), np.log(0.25) * np.ones(4),
        rtol=1e-6)

  def test_hedge_bad_arguments(self):
    with pytest.raises(ValueError, match=r"`losses`.*\(3,\).*\(2,\)"):
      hedge_update(jnp.zeros(3), jnp.zeros(2), 0.1)
    with pytest.raises(ValueError, match=r"`log_weights`.*\[K\] or \[B, K\]"):
      hedge_update(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 3)), 0.1)
    with pytest.raises(ValueError, match=r"`learning_rate`.*>= 0"):
      hedge_update(jnp.zeros(3), jnp.zeros(3), -1.0)


class MaxMinAssignTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    ll = jnp.log(jnp.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.8], [0.5, 0.4]]))
    users = jnp.array([0, 0, 2, 2])
    fn = self.variant(lambda ll, u: maxmin_assign_users(ll, u, 4))
    out = fn(ll, users)
    # User 0: log .54 vs log .14 -> 0; user 2: log .05 vs log .32 -> 1;
    # users 1 and 3 have no pairs.
    self.assertEqual(out.dtype, jnp.int32)
    np.testing.assert_array_equal(out, [0, -1, 1, -1])

  @hypothesis.settings(max_examples=20, deadline=None)
  @hypothesis.given(seed=st.integers(0, 2**31))
  def test_matches_python_loop(self, seed):
    # Fixed shapes (one compilation); ids from -1 to U + 1 include ids out of
    # range, which are ignored.
    rng = np.random.default_rng(seed)
    num_users, batch = 5, 12
    ll = -rng.exponential(size=(batch, 3)).astype(np.float32)
    users = rng.integers(-1, num_users + 2, size=batch)
    mask = rng.uniform(size=batch) < 0.8
    out = maxmin_assign_users(ll, users, num_users, mask=mask)
    expected = []
    for u in range(num_users):
      rows = (users == u) & mask
      expected.append(int(np.argmax(ll[rows].astype(np.float64).sum(0)))
                      if rows.any() else -1)
    np.testing.assert_array_equal(out, np.array(expected, np.int32))

  def test_empty_inputs(self):
    np.testing.assert_array_equal(
        maxmin_assign_users(jnp.zeros((0, 2)), jnp.zeros(0, jnp.int32), 3),
        [-1, -1, -1])
    self.assertEqual(
        maxmin_assign_users(jnp.zeros((2, 2)), jnp.zeros(2, jnp.int32),
                            0).shape, (0,))

  def test_recovers_two_user_groups(self):
    # 10 users, 20 pairs each; group g's labels come from BT model g, whose
    # rewards are opposite to the other's. The E-step with the two true
    # models puts every user in its group.
    rng = np.random.default_rng(1)
    groups = np.array([0, 1] * 5)
    users = np.repeat(np.arange(10), 20)
    x = rng.normal(size=(200, 2)) * 2.0
    rewards = np.stack([x[:, 0] - x[:, 1], x[:, 1] - x[:, 0]], -1)  # [B, 2]
    p_first = _np_sigmoid(rewards[np.arange(200), groups[users]])
    first_wins = rng.uniform(size=200) < p_first
    sign = np.where(first_wins, 1.0, -1.0)[:, None]
    ll = jax.nn.log_sigmoid(jnp.asarray(sign * rewards, jnp.float32))
    np.testing.assert_array_equal(maxmin_assign_users(ll, users, 10), groups)

  def test_masked_junk_is_ignored(self):
    ll = jnp.array([[0.0, -1.0], [jnp.nan, jnp.inf], [-jnp.inf, 0.0]])
    out = maxmin_assign_users(ll, jnp.array([0, 0, 1]), 2,
                              mask=jnp.array([True, False, False]))
    np.testing.assert_array_equal(out, [0, -1])

  def test_bad_arguments(self):
    ll = jnp.zeros((3, 2))
    with pytest.raises(TypeError, match=r"`user_ids`.*integer"):
      maxmin_assign_users(ll, jnp.zeros(3), 2)
    with pytest.raises(ValueError, match=r"`user_ids`.*\(3,\).*\(2,\)"):
      maxmin_assign_users(ll, jnp.zeros(2, jnp.int32), 2)
    with pytest.raises(ValueError, match=r"`pair_log_likelihoods`.*\[B, K\]"):
      maxmin_assign_users(jnp.zeros(3), jnp.zeros(3, jnp.int32), 2)
    for bad in (-1, 2.0, True):
      with pytest.raises(ValueError, match=r"`num_users`"):
        maxmin_assign_users(ll, jnp.zeros(3, jnp.int32), bad)


class PalTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_user_point_and_vector_match_numpy(self):
    point = self.variant(pal_a_user_point)(PROTOTYPES, LOGITS)
    np.testing.assert_allclose(point, _np_softmax(LOGITS) @ PROTOTYPES,
                               rtol=1e-5, atol=1e-6)
    vector = self.variant(pal_b_user_vector)(PROMPT_G, LOGITS)
    np.testing.assert_allclose(
        vector, np.einsum("bk,bkd->bd", _np_softmax(LOGITS), PROMPT_G),
        rtol=1e-5, atol=1e-6)
    self.assertEqual(point.shape, (B, D))
    self.assertEqual(vector.dtype, jnp.float32)

  @chex.variants(with_jit=True, without_jit=True)
  def test_pal_a_score(self):
    # A 3-4-5 triangle: chosen at distance 5, rejected at distance 0.
    score = self.variant(pal_a_score)(jnp.array([[3.0, 4.0]]),
                                      jnp.zeros((1, 2)), jnp.zeros((1, 2)))
    np.testing.assert_allclose(score, [-5.0])
    out = self.variant(pal_a_score)(FEAT_C, FEAT_R, USER)
    expected = (np.linalg.norm(FEAT_R - USER, axis=-1)
                - np.linalg.norm(FEAT_C - USER, axis=-1))
    np.testing.assert_allclose(out, expected, rtol=1e-5)

  def test_pal_a_score_gradient_is_safe_at_zero_distance(self):
    a = jnp.array([[1.0, 2.0]])
    grads = jax.jit(jax.grad(lambda c, r, u: jnp.sum(pal_a_score(c, r, u)),
                             argnums=(0, 1, 2)))(a, a, a)
    for g in grads:
      np.testing.assert_array_equal(g, 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_pal_b_score(self):
    u = jnp.array([[1.0, 0.0]])
    # cos = 1 and cos = 0; tau = exp(log 2) = 2.
    score = self.variant(lambda c, r, u, t: pal_b_score(
        c, r, u, log_temperature=t))(jnp.array([[5.0, 0.0]]),
                                     jnp.array([[0.0, 3.0]]), u, math.log(2.0))
    np.testing.assert_allclose(score, [2.0], rtol=1e-6)
    out = pal_b_score(FEAT_C, FEAT_R, USER,
                      log_temperature=PAL_INIT_LOG_TEMPERATURE)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    expected = (1 / 0.07) * np.sum(unit(USER) * (unit(FEAT_C) - unit(FEAT_R)),
                                   -1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # Cosine: invariant to positive rescaling of any row.
    np.testing.assert_allclose(
        pal_b_score(3.0 * FEAT_C, 0.2 * FEAT_R, 7.0 * USER,
                    log_temperature=PAL_INIT_LOG_TEMPERATURE), out, rtol=1e-5)

  def test_pal_b_temperature_init_and_clamp(self):
    np.testing.assert_allclose(math.exp(PAL_INIT_LOG_TEMPERATURE), 1 / 0.07)

    def score(t):
      return pal_b_score(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]]),
                         jnp.array([[1.0, 0.0]]), log_temperature=t)[0]

    np.testing.assert_allclose(score(jnp.float32(math.log(1000.0))), 100.0,
                               rtol=1e-6)
    np.testing.assert_allclose(score(1e4), 100.0, rtol=1e-6)  # no overflow
    # Past the clamp the gradient is 0; below it d(tau)/d(log tau) = tau.
    self.assertEqual(float(jax.grad(score)(jnp.float32(5.0))), 0.0)
    np.testing.assert_allclose(jax.grad(score)(jnp.float32(1.0)), np.e,
                               rtol=1e-6)

  def test_pal_b_zero_vectors_are_finite(self):
    zeros = jnp.zeros((2, 3))
    value, grads = jax.jit(jax.value_and_grad(
        lambda c, r, u: jnp.sum(pal_b_score(c, r, u, log_temperature=0.0)),
        argnums=(0, 1, 2)))(zeros, zeros, zeros)
    self.assertEqual(float(value), 0.0)
    for g in grads:
      self.assertTrue(np.all(np.isfinite(g)))

  @parameterized.parameters("a", "b")
  def test_masked_junk_changes_nothing_through_the_whole_chain(self, variant):
    mask = np.array([True] * 4 + [False] * 3)
    junk2 = _junk_rows(3, D)
    pad = lambda x, j: np.concatenate([x[:4], j])
    logits_pad = pad(LOGITS, _junk_rows(3, K))
    feat_c_pad, feat_r_pad = pad(FEAT_C, junk2), pad(FEAT_R, junk2[::-1])
    g_pad = pad(PROMPT_G, _junk_rows(3, K, (D,)))

    def loss(protos, g, logits, fc, fr, m):
      if variant == "a":
        user = pal_a_user_point(protos, logits, mask=m)
        score = pal_a_score(fc, fr, user, mask=m)
      else:
        user = pal_b_user_vector(g, logits, mask=m)
        score = pal_b_score(fc, fr, user, log_temperature=1.5, mask=m)
      return bradley_terry_loss(score, jnp.zeros_like(score), mask=m)

    grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))
    value, grads = grad_fn(PROTOTYPES, PROMPT_G[:4], LOGITS[:4], FEAT_C[:4],
                           FEAT_R[:4], None)
    value_pad, grads_pad = grad_fn(PROTOTYPES, g_pad, logits_pad, feat_c_pad,
                                   feat_r_pad, mask)
    np.testing.assert_allclose(value_pad, value, rtol=1e-6)
    np.testing.assert_allclose(grads_pad[0], grads[0], rtol=1e-5, atol=1e-7)
    for g, g_p in zip(grads[1:], grads_pad[1:]):
      np.testing.assert_allclose(g_p[:4], g, rtol=1e-5, atol=1e-7)
      np.testing.assert_array_equal(g_p[4:], 0.0)

  def test_check_grads(self):
    jtu.check_grads(
        jax.jit(lambda p, l, c, r: jnp.sum(
            pal_a_score(c, r, pal_a_user_point(p, l)))),
        (PROTOTYPES, LOGITS, FEAT_C, FEAT_R), order=1, modes=("fwd", "rev"),
        eps=1e-2, atol=1e-3, rtol=1e-3)
    jtu.check_grads(
        jax.jit(lambda g, l, c, r: jnp.sum(pal_b_score(
            c, r, pal_b_user_vector(g, l), log_temperature=0.5))),
        (PROMPT_G, LOGITS, FEAT_C, FEAT_R), order=1, modes=("fwd", "rev"),
        eps=1e-2, atol=1e-3, rtol=1e-3)

  def test_large_and_bfloat16_inputs(self):
    big = 1e4 * jnp.sign(jnp.asarray(FEAT_C))
    for fn in (lambda c, r, u: pal_a_score(c, r, u),
               lambda c, r, u: pal_b_score(c, r, u, log_temperature=1.0)):
      value, grads = jax.jit(jax.value_and_grad(
          lambda c, r, u, fn=fn: jnp.sum(fn(c, r, u)), argnums=(0, 1, 2)))(
              big, -big, 0.5 * big)
      self.assertTrue(np.isfinite(value))
      for g in grads:
        self.assertTrue(np.all(np.isfinite(g)))
      out = fn(FEAT_C.astype(jnp.bfloat16), FEAT_R.astype(jnp.bfloat16),
               USER.astype(jnp.bfloat16))
      self.assertEqual(out.dtype, jnp.float32)
      np.testing.assert_allclose(out, fn(FEAT_C, FEAT_R, USER), rtol=5e-2,
                                 atol=5e-2)
    point = pal_a_user_point(PROTOTYPES.astype(jnp.bfloat16),
                             jnp.asarray(LOGITS) * 1e4)
    self.assertEqual(point.dtype, jnp.float32)
    self.assertTrue(np.all(np.isfinite(point)))

  def test_bad_arguments_name_the_argument(self):
    with pytest.raises(ValueError, match=r"`user_logits`.*\[B, K\] = \(6, 3\)"
                       r".*`prototypes`.*\(6, 2\)"):
      pal_a_user_point(PROTOTYPES, LOGITS[:, :2])
    with pytest.raises(ValueError, match=r"`prototypes` must have shape "
                       r"\[K, D\]"):
      pal_a_user_point(PROTOTYPES[0], LOGITS)
    with pytest.raises(ValueError, match=r"`prompt_features_per_prototype`.*"
                       r"\[B, K, D\]"):
      pal_b_user_vector(PROMPT_G[0], LOGITS)
    with pytest.raises(ValueError, match=r"`user_point`.*\(6, 5\).*\(6, 4\)"):
      pal_a_score(FEAT_C, FEAT_R, USER[:, :4])
    with pytest.raises(ValueError, match=r"`rejected_features`"):
      pal_b_score(FEAT_C, FEAT_R[:3], USER, log_temperature=0.0)
    with pytest.raises(ValueError, match=r"`log_temperature`.*scalar"):
      pal_b_score(FEAT_C, FEAT_R, USER, log_temperature=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`mask`.*\(6,\)"):
      pal_a_score(FEAT_C, FEAT_R, USER, mask=jnp.ones(5, bool))


def _np_kl(mean, log_var):
  """sum_z [log(1 / s) + (s^2 + m^2) / 2 - 1 / 2], s = exp(lv / 2)."""
  s = np.exp(0.5 * np.asarray(log_var, np.float64))
  m = np.asarray(mean, np.float64)
  return np.sum(-np.log(s) + (s**2 + m**2) / 2 - 0.5, -1)


class VplTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_matches_closed_form(self):
    kl = self.variant(gaussian_kl_to_standard_normal)(MEAN, LOG_VAR)
    self.assertEqual(kl.shape, (B,))
    np.testing.assert_allclose(kl, _np_kl(MEAN, LOG_VAR), rtol=1e-5)
    np.testing.assert_allclose(
        gaussian_kl_to_standard_normal(jnp.zeros((2, 3)), jnp.zeros((2, 3))),
        0.0)
    # Variance e (lv = 1), mu = 0, one dim: 0.5 (e - 1 - 1).
    np.testing.assert_allclose(
        gaussian_kl_to_standard_normal(jnp.zeros((1, 1)), jnp.ones((1, 1))),
        [0.5 * (np.e - 2.0)], rtol=1e-6)

  @hypothesis.settings(max_examples=25, deadline=None)
  @hypothesis.given(st.floats(-50, 50), st.floats(-30, 30))
  def test_kl_is_nonnegative(self, mu, lv):
    kl = gaussian_kl_to_standard_normal(jnp.array([[mu]]), jnp.array([[lv]]))
    self.assertGreaterEqual(float(kl[0]), -1e-6)

  def test_kl_is_finite_for_large_inputs(self):
    mean = jnp.array([[1e4, -1e4]])
    log_var = jnp.array([[1e4, -1e4]])
    value, (g_m, g_v) = jax.value_and_grad(
        lambda m, v: jnp.sum(gaussian_kl_to_standard_normal(m, v)),
        argnums=(0, 1))(mean, log_var)
    self.assertTrue(np.isfinite(value))
    np.testing.assert_allclose(g_m, [[1e4, -1e4]], rtol=1e-6)
    # lv = 1e4 is past the clip at 50: no gradient (not the wrong-signed
    # -1/2 of the -lv term alone); lv = -1e4: (exp(lv) - 1) / 2 = -1/2.
    np.testing.assert_allclose(g_v, [[0.0, -0.5]], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_reparameterize(self):
    key = jax.random.key(0)
    mean = jnp.array([[1.0, -2.0]])
    log_var = jnp.log(jnp.array([[4.0, 0.25]]))
    fn = self.variant(reparameterize)
    z = fn(key, mean, log_var)
    np.testing.assert_array_equal(z, fn(key, mean, log_var))  # deterministic
    eps = jax.random.normal(key, (1, 2))
    np.testing.assert_allclose(z, mean + jnp.array([[2.0, 0.5]]) * eps,
                               rtol=1e-6)
    many = jax.vmap(lambda k: fn(k, mean, log_var)[0])(
        jax.random.split(jax.random.key(1), 4000))
    np.testing.assert_allclose(many.mean(0), [1.0, -2.0], atol=0.1)
    np.testing.assert_allclose(many.std(0), [2.0, 0.5], rtol=0.05)
    g_m, g_v = jax.grad(lambda m, v: jnp.sum(fn(key, m, v)),
                        argnums=(0, 1))(mean, log_var)
    np.testing.assert_allclose(g_m, [[1.0, 1.0]])
    np.testing.assert_allclose(g_v, 0.5 * jnp.array([[2.0, 0.5]]) * eps,
                               rtol=1e-5)
    big = fn(key, mean, jnp.full((1, 2), 1e4))
    self.assertTrue(np.all(np.isfinite(big)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_vpl_loss_is_bt_plus_beta_kl(self):
    fn = self.variant(lambda c, r, m, v, w: vpl_loss(
        c, r, m, v, beta=0.3, mask=w, reduction="none"))
    out = fn(R_C, R_R, MEAN, LOG_VAR, MASK)
    bt = np.logaddexp(0.0, -(R_C.astype(np.float64) - R_R))
    np.testing.assert_allclose(out, (bt + 0.3 * _np_kl(MEAN, LOG_VAR)) * MASK,
                               rtol=1e-5)
    mean_loss = vpl_loss(R_C, R_R, MEAN, LOG_VAR, mask=MASK)
    expected = (bt + 0.01 * _np_kl(MEAN, LOG_VAR))[MASK].mean()
    np.testing.assert_allclose(mean_loss, expected, rtol=1e-5)
    np.testing.assert_allclose(
        vpl_loss(R_C, R_R, MEAN, LOG_VAR, beta=0.0),
        bradley_terry_loss(R_C, R_R), rtol=1e-6)

  def test_vpl_loss_masked_junk_changes_nothing(self):
    mask = np.array([True] * 4 + [False] * 2)
    junk = lambda x: np.concatenate([x[:4], np.full((2,) + x.shape[1:],
                                                    np.nan, np.float32)])

    def loss(c, r, m, v, mask):
      return vpl_loss(c, r, m, v, beta=0.5, mask=mask)

    grad_fn = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
    value, grads = grad_fn(R_C[:4], R_R[:4], MEAN[:4], LOG_VAR[:4], None)
    value_pad, grads_pad = grad_fn(junk(R_C), junk(R_R), junk(MEAN),
                                   junk(LOG_VAR), mask)
    np.testing.assert_allclose(value_pad, value, rtol=1e-6)
    for g, g_p in zip(grads, grads_pad):
      np.testing.assert_allclose(g_p[:4], g, rtol=1e-5, atol=1e-7)
      np.testing.assert_array_equal(g_p[4:], 0.0)

  def test_vpl_check_grads_and_bfloat16(self):
    fn = jax.jit(lambda c, m, v: vpl_loss(c, R_R, m, v, beta=0.5))
    jtu.check_grads(fn, (R_C, MEAN, LOG_VAR), order=1, modes=("fwd", "rev"),
                    eps=1e-2, atol=1e-3, rtol=1e-3)
    out = vpl_loss(R_C.astype(jnp.bfloat16), R_R.astype(jnp.bfloat16),
                   MEAN.astype(jnp.bfloat16), LOG_VAR.astype(jnp.bfloat16),
                   reduction="none")
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(
        out, vpl_loss(R_C, R_R, MEAN, LOG_VAR, reduction="none"), rtol=3e-2,
        atol=3e-2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_reward_scaling(self):
    ref = _RNG.normal(size=(B, M)).astype(np.float32)
    out = self.variant(vpl_reward_scaling)(R_C, ref)
    np.testing.assert_allclose(
        out, _np_sigmoid(R_C[:, None] - ref.astype(np.float64)).mean(-1),
        rtol=1e-5)
    self.assertTrue(np.all((np.asarray(out) >= 0) & (np.asarray(out) <= 1)))
    # Monotone in the reward; a shared shift of all rewards changes nothing.
    self.assertTrue(np.all(
        np.asarray(vpl_reward_scaling(R_C + 0.5, ref)) > np.asarray(out)))
    np.testing.assert_allclose(vpl_reward_scaling(R_C + 3.0, ref + 3.0), out,
                               rtol=1e-5)
    extreme = vpl_reward_scaling(jnp.array([1e4, -1e4]),
                                 jnp.array([[-1e4, 0.0], [1e4, 0.0]]))
    np.testing.assert_allclose(extreme, [1.0, 0.0], atol=1e-7)

  def test_bad_arguments_name_the_argument(self):
    with pytest.raises(ValueError, match=r"`log_var`.*\(6, 4\).*\(6, 3\)"):
      gaussian_kl_to_standard_normal(MEAN, LOG_VAR[:, :3])
    with pytest.raises(ValueError, match=r"`mean` must have shape \[B, Z\]"):
      reparameterize(jax.random.key(0), MEAN[0], LOG_VAR[0])
    with pytest.raises(ValueError, match=r"`mean`.*B = 6"):
      vpl_loss(R_C, R_R, MEAN[:3], LOG_VAR[:3])
    with pytest.raises(ValueError, match=r"`beta`.*>= 0"):
      vpl_loss(R_C, R_R, MEAN, LOG_VAR, beta=-0.1)
    with pytest.raises(ValueError, match=r"`rejected_rewards`"):
      vpl_loss(R_C, R_R[:3], MEAN, LOG_VAR)
    with pytest.raises(ValueError, match=r"`reference_rewards`.*B = 6"):
      vpl_reward_scaling(R_C, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"`rewards` must have shape \[B\]"):
      vpl_reward_scaling(np.zeros((6, 1)), np.zeros((6, 2)))
