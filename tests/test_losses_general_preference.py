"""Tests for rmjax.losses.general_preference (GPM)."""

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
from rmjax.losses.general_preference import general_preference_loss
from rmjax.losses.general_preference import general_preference_score

SPEC_ATOL = 5e-5

_RNG = np.random.default_rng(0)
B, K = 6, 3
CHOSEN = _RNG.normal(size=(B, 2 * K)).astype(np.float32)
REJECTED = _RNG.normal(size=(B, 2 * K)).astype(np.float32)
SCALES = _RNG.uniform(0.2, 2.0, size=(B, K)).astype(np.float32)
MARGIN = np.abs(_RNG.normal(size=B)).astype(np.float32)
WEIGHTS = np.array([1.0, 0.5, 2.0, 0.0, 1.5, 1.0], np.float32)
MASK = np.array([True, True, False, True, True, False])


def _np_skew_matrix(dim):
  """The spec's R: block-diagonal, blocks [[0, -1], [1, 0]]."""
  r = np.zeros((dim, dim))
  for i in range(0, dim, 2):
    r[i, i + 1] = -1.0
    r[i + 1, i] = 1.0
  return r


def _np_score(a, b, scales=None, normalize=False):
  """Reference s = <R diag(lambda) v_a, v_b> with R built explicitly."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if normalize:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  dim = a.shape[-1]
  lam = np.ones(a.shape[:-1] + (dim // 2,)) if scales is None else scales
  lam_full = np.repeat(np.asarray(lam, np.float64), 2, axis=-1)
  ra = (a * lam_full) @ _np_skew_matrix(dim).T  # row-wise R diag(lam) a
  return np.sum(ra * b, axis=-1)


def _np_loss(a, b, scales=None, margin=0.0, tau=0.1, normalize=False):
  z = (_np_score(a, b, scales, normalize) - margin) / tau
  return np.logaddexp(0.0, -z)


def _rotate_blocks(x, angles):
  """Rotates block i of every row of x [B, 2k] by angles[i]."""
  x = np.asarray(x, np.float64).reshape(x.shape[0], -1, 2)
  c, s = np.cos(angles), np.sin(angles)
  out = np.stack([c * x[..., 0] - s * x[..., 1],
                  s * x[..., 0] + c * x[..., 1]], axis=-1)
  return out.reshape(x.shape[0], -1).astype(np.float32)


class SanityTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_spec_sanity_value(self):
    # v_a = (1, 0), v_b = (0, 1), tau = 1 -> P(a > b) = sigmoid(1) = 0.7311.
    a, b = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])
    score = self.variant(general_preference_score)(a, b)
    np.testing.assert_allclose(jax.nn.sigmoid(score), 0.7311, atol=SPEC_ATOL)
    loss = self.variant(lambda a, b: general_preference_loss(
        a, b, temperature=1.0))(a, b)
    self.assertEqual(loss.dtype, jnp.float32)
    np.testing.assert_allclose(loss, 0.3133, atol=SPEC_ATOL)  # -log 0.7311
    # Default tau = 0.1: -log sigmoid(10).
    np.testing.assert_allclose(general_preference_loss(a, b),
                               np.logaddexp(0.0, -10.0), rtol=1e-5)

  def test_per_block_hand_values(self):
    # Blocks (1, 2)x(3, 4): 1*4 - 2*3 = -2; (5, 0)x(0, 1): 5. Scales (2, 0.5).
    a = jnp.array([[1.0, 2.0, 5.0, 0.0]])
    b = jnp.array([[3.0, 4.0, 0.0, 1.0]])
    np.testing.assert_allclose(general_preference_score(a, b), [3.0])
    np.testing.assert_allclose(
        general_preference_score(a, b, block_scales=jnp.array([[2.0, 0.5]])),
        [-4.0 + 2.5])
    # A zero scale switches a block off.
    np.testing.assert_allclose(
        general_preference_score(a, b, block_scales=jnp.array([[0.0, 1.0]])),
        [5.0])


class ScoreTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  def test_matches_explicit_rotation_matrix(self, use_scales):
    scales = SCALES if use_scales else None
    fn = self.variant(lambda a, b, s: general_preference_score(
        a, b, block_scales=s))
    out = fn(CHOSEN, REJECTED, scales)
    self.assertEqual(out.shape, (B,))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, _np_score(CHOSEN, REJECTED, scales),
                               rtol=1e-5, atol=1e-6)

  @hypothesis.settings(max_examples=40, deadline=None)
  @hypothesis.given(
      k=st.integers(1, 4), batch=st.integers(1, 4), seed=st.integers(0, 2**31),
      scale=st.floats(1e-3, 1e3))
  def test_skew_symmetry(self, k, batch, seed, scale):
    rng = np.random.default_rng(seed)
    a = (scale * rng.normal(size=(batch, 2 * k))).astype(np.float32)
    b = (scale * rng.normal(size=(batch, 2 * k))).astype(np.float32)
    lam = rng.uniform(0, 2, size=(batch, k)).astype(np.float32)
    s_ab = general_preference_score(a, b, block_scales=lam)
    s_ba = general_preference_score(b, a, block_scales=lam)
    np.testing.assert_array_equal(s_ab, -s_ba)
    np.testing.assert_array_equal(general_preference_score(a, a), 0.0)
    # P(a > b) + P(b > a) = 1 and the loss of a response against itself is
    # log 2.
    np.testing.assert_allclose(
        jax.nn.sigmoid(s_ab) + jax.nn.sigmoid(s_ba), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        general_preference_loss(a, a, reduction="none"), np.log(2.0),
        rtol=1e-6)

  @parameterized.parameters(False, True)
  def test_invariant_to_a_common_rotation_of_every_block(self, normalize):
    angles = np.array([0.3, -2.0, 1.1])  # one angle per block
    rot_c = _rotate_blocks(CHOSEN, angles)
    rot_r = _rotate_blocks(REJECTED, angles)
    kwargs = dict(block_scales=SCALES, margin=MARGIN, normalize=normalize,
                  reduction="none", temperature=0.5)
    np.testing.assert_allclose(
        general_preference_loss(rot_c, rot_r, **kwargs),
        general_preference_loss(CHOSEN, REJECTED, **kwargs), rtol=1e-4)
    # Rotating only one side changes the loss.
    self.assertFalse(np.allclose(
        general_preference_loss(rot_c, REJECTED, **kwargs),
        general_preference_loss(CHOSEN, REJECTED, **kwargs), rtol=1e-3))

  def test_score_is_bilinear(self):
    a, b = jnp.asarray(CHOSEN), jnp.asarray(REJECTED)
    c = jnp.asarray(_RNG.normal(size=(B, 2 * K)).astype(np.float32))
    np.testing.assert_allclose(
        general_preference_score(2.0 * a + c, b),
        2.0 * general_preference_score(a, b) + general_preference_score(c, b),
        rtol=1e-4, atol=1e-5)


class CyclicPreferenceTest(chex.TestCase):
  """Rock-paper-scissors: GPM represents the cycle, BT cannot."""

  ANGLES = np.deg2rad([0.0, 120.0, 240.0])
  ITEMS = np.stack([np.cos(ANGLES), np.sin(ANGLES)], -1).astype(np.float32)
  # The cycle A > B, B > C, C > A as (winner, loser) indices.
  CYCLE = (np.array([0, 1, 2]), np.array([1, 2, 0]))

  def test_gpm_scores_form_a_cycle(self):
    winners, losers = self.CYCLE
    s = general_preference_score(self.ITEMS[winners], self.ITEMS[losers])
    # s(A, B) = s(B, C) = s(C, A) = sin(120 deg), all of the same sign.
    np.testing.assert_allclose(s, np.sin(np.deg2rad(120.0)), rtol=1e-5)
    self.assertTrue(np.all(np.asarray(s) > 0))
    # So each preference of the cycle is predicted with P > 0.5; at the
    # default tau = 0.1 the loss is small (softplus(-8.66) = 1.7e-4).
    loss = general_preference_loss(self.ITEMS[winners], self.ITEMS[losers])
    np.testing.assert_allclose(loss, np.logaddexp(0.0, -10 * np.sin(
        np.deg2rad(120.0))), rtol=1e-4)

  @hypothesis.settings(max_examples=50, deadline=None)
  @hypothesis.given(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3))
  def test_no_scalar_reward_represents_the_cycle(self, rewards):
    winners, losers = self.CYCLE
    r = np.asarray(rewards, np.float64)
    gaps = r[winners] - r[losers]
    # The three gaps of a cycle sum to 0: at least one is <= 0 ...
    self.assertLessEqual(gaps.min(), 1e-9 * max(1.0, np.abs(r).max()))
    # ... and (by convexity of softplus) BT's mean loss is >= log 2, chance.
    r32 = jnp.asarray(r, jnp.float32)
    bt = bradley_terry_loss(r32[winners], r32[losers])
    self.assertGreaterEqual(float(bt), np.log(2.0) - 1e-5)

  def test_gpm_fits_the_cycle_by_gradient_descent(self):
    winners, losers = self.CYCLE
    init = jnp.asarray(np.random.default_rng(3).normal(size=(3, 2)),
                       jnp.float32)

    def loss(v):
      return general_preference_loss(v[winners], v[losers], normalize=True)

    @jax.jit
    def train(v):
      return jax.lax.fori_loop(
          0, 300, lambda _, v: v - 0.5 * jax.grad(loss)(v), v)

    trained = train(init)
    self.assertLess(float(loss(trained)), 0.05)  # BT cannot go below 0.693
    s = general_preference_score(trained[winners], trained[losers])
    self.assertTrue(np.all(np.asarray(s) > 0))


class GeneralPreferenceLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("plain", False, False, False),
      ("scales_margin", True, True, False),
      ("normalized", False, False, True),
      ("all", True, True, True))
  def test_matches_numpy_reference(self, use_scales, use_margin, normalize):
    scales = SCALES if use_scales else None
    margin = MARGIN if use_margin else 0.0
    fn = self.variant(lambda c, r, s, m: general_preference_loss(
        c, r, block_scales=s, margin=m, temperature=0.7, normalize=normalize,
        reduction="none"))
    out = fn(CHOSEN, REJECTED, scales, margin)
    self.assertEqual(out.shape, (B,))
    np.testing.assert_allclose(
        out, _np_loss(CHOSEN, REJECTED, scales, margin, 0.7, normalize),
        rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_weights_mask_and_reductions(self):
    ref = _np_loss(CHOSEN, REJECTED) * WEIGHTS * MASK

    def fn(reduction):
      return self.variant(lambda c, r, w, m: general_preference_loss(
          c, r, weights=w, mask=m, reduction=reduction))(
              CHOSEN, REJECTED, WEIGHTS, MASK)

    np.testing.assert_allclose(fn("none"), ref, rtol=1e-5)
    np.testing.assert_allclose(fn("sum"), ref.sum(), rtol=1e-5)
    np.testing.assert_allclose(fn("mean"), ref.sum() / 4, rtol=1e-5)

  def test_k1_gpm_with_fixed_rejected_is_bt_on_a_linear_reward(self):
    # With v_r = (0, 1), s = a_0: GPM reduces to BT with reward a_0 / tau.
    a = jnp.asarray(np.stack([CHOSEN[:, 0], CHOSEN[:, 1]], -1))
    r = jnp.tile(jnp.array([[0.0, 1.0]]), (B, 1))
    np.testing.assert_allclose(
        general_preference_loss(a, r, temperature=0.5, reduction="none"),
        bradley_terry_loss(a[:, 0] / 0.5, jnp.zeros(B), reduction="none"),
        rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  def test_padding_with_masked_junk_changes_nothing(self, normalize):
    c, r, s = CHOSEN[:4], REJECTED[:4], SCALES[:4]
    junk = np.full((3, 2 * K), np.nan, np.float32)
    junk[0] = np.inf
    junk[1, :2] = -np.inf
    c_pad = np.concatenate([c, junk])
    r_pad = np.concatenate([r, junk[::-1]])
    s_pad = np.concatenate([s, np.full((3, K), np.inf, np.float32)])
    margin_pad = np.concatenate([MARGIN[:4], [np.nan, np.inf, -np.inf]])
    weights_pad = np.concatenate([WEIGHTS[:4], [np.nan, 1.0, np.inf]])
    mask = np.array([True] * 4 + [False] * 3)

    def loss(c, r, s, m, w, mask):
      return general_preference_loss(c, r, block_scales=s, margin=m,
                                     weights=w, mask=mask,
                                     normalize=normalize)

    grad_fn = self.variant(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    value, grads = grad_fn(c, r, s, MARGIN[:4], WEIGHTS[:4], None)
    value_pad, grads_pad = grad_fn(c_pad, r_pad, s_pad, margin_pad,
                                   weights_pad, mask)
    np.testing.assert_allclose(value_pad, value, rtol=1e-6)
    for g, g_pad in zip(grads, grads_pad):
      np.testing.assert_allclose(g_pad[:4], g, rtol=1e-5, atol=1e-7)
      np.testing.assert_array_equal(g_pad[4:], 0.0)

  @parameterized.named_parameters(
      ("plain", False), ("normalized", True))
  def test_check_grads(self, normalize):
    fn = lambda c, r, s: general_preference_loss(
        c, r, block_scales=s, margin=MARGIN, weights=WEIGHTS,
        temperature=0.5, normalize=normalize)
    jtu.check_grads(jax.jit(fn), (CHOSEN, REJECTED, SCALES), order=1,
                    modes=("fwd", "rev"), eps=1e-2, atol=1e-3, rtol=1e-3)

  def test_learnable_temperature_gradient(self):
    c, r = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])
    # d/dtau softplus(-1 / tau) = sigmoid(-1 / tau) / tau^2; at tau = 1:
    # sigmoid(-1) > 0 (a larger tau flattens a correct prediction).
    grad = jax.grad(lambda t: general_preference_loss(c, r, temperature=t))(
        jnp.float32(1.0))
    np.testing.assert_allclose(grad, 1.0 / (1.0 + np.e), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_inputs(self):
    fn = self.variant(lambda c, r, s: general_preference_loss(
        c, r, block_scales=s, temperature=1.0, reduction="none"))
    out = fn(CHOSEN.astype(jnp.bfloat16), REJECTED.astype(jnp.bfloat16),
             SCALES.astype(jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, fn(CHOSEN, REJECTED, SCALES), rtol=5e-2,
                               atol=5e-2)
    score = general_preference_score(CHOSEN.astype(jnp.bfloat16),
                                     REJECTED.astype(jnp.bfloat16))
    self.assertEqual(score.dtype, jnp.float32)

  @chex.variants(with_jit=True, without_jit=True)
  def test_large_embeddings_are_finite(self):
    c = jnp.array([[1e4, 0.0], [0.0, 1e4]])
    r = jnp.array([[0.0, 1e4], [1e4, 0.0]])

    def loss(c, r):
      return general_preference_loss(c, r, reduction="sum")

    # Scores +1e8 and -1e8, tau = 0.1: losses 0 and 1e9.
    value, (g_c, g_r) = self.variant(
        jax.value_and_grad(loss, argnums=(0, 1)))(c, r)
    np.testing.assert_allclose(value, 1e9, rtol=1e-6)
    self.assertTrue(np.all(np.isfinite(g_c)) and np.all(np.isfinite(g_r)))
    # d/dc_1 of softplus(-(c_0 r_1 - c_1 r_0) / tau) for the second pair:
    # -(-r_0) / tau * sigmoid(...) = 1e5.
    np.testing.assert_allclose(g_c[1], [0.0, 1e5], rtol=1e-6)
    normalized, g_n = jax.value_and_grad(
        lambda c: general_preference_loss(c, r, normalize=True))(c)
    # Unit vectors: scores +1 and -1: (softplus(-10) + softplus(10)) / 2.
    np.testing.assert_allclose(
        normalized, (np.logaddexp(0, -10.0) + np.logaddexp(0, 10.0)) / 2,
        rtol=1e-5)
    self.assertTrue(np.all(np.isfinite(g_n)))

  def test_normalize_is_safe_at_zero_vectors(self):
    zeros = jnp.zeros((2, 4))
    value, (g_c, g_r) = jax.value_and_grad(
        lambda c, r: general_preference_loss(c, r, normalize=True),
        argnums=(0, 1))(zeros, zeros)
    np.testing.assert_allclose(value, np.log(2.0), rtol=1e-6)
    self.assertTrue(np.all(np.isfinite(g_c)) and np.all(np.isfinite(g_r)))

  def test_bad_arguments_name_the_argument(self):
    c, r = jnp.zeros((3, 4)), jnp.zeros((3, 4))
    with pytest.raises(ValueError, match=r"`embedding_a` must have an even"):
      general_preference_score(jnp.zeros((3, 3)), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"`chosen_embedding` must have an "
                       r"even.*\(3, 5\)"):
      general_preference_loss(jnp.zeros((3, 5)), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"`rejected_embedding` must have an "
                       r"even"):
      general_preference_loss(c, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"`embedding_b` must have shape "
                       r"\[B, 2k\]; got shape \(4,\)"):
      general_preference_score(c, jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`rejected_embedding`.*\(3, 4\).*"
                       r"\(2, 4\)"):
      general_preference_loss(c, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"`block_scales`.*\(3, 2\).*\(3, 4\)"):
      general_preference_loss(c, r, block_scales=jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"`block_scales`"):
      general_preference_score(c, r, block_scales=jnp.ones(2))
    with pytest.raises(ValueError, match=r"`margin`.*\(2,\)"):
      general_preference_loss(c, r, margin=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`weights`.*\(3,\).*\(\)"):
      general_preference_loss(c, r, weights=1.0)
    with pytest.raises(ValueError, match=r"`mask`.*\(3,\).*\(3, 4\)"):
      general_preference_loss(c, r, mask=jnp.ones((3, 4), bool))
    for bad in (0.0, -0.1, float("nan"), float("inf")):
      with pytest.raises(ValueError, match=r"`temperature`.*> 0"):
        general_preference_loss(c, r, temperature=bad)
    with pytest.raises(TypeError, match=r"`temperature`"):
      general_preference_loss(c, r, temperature=True)
    with pytest.raises(ValueError, match=r"`temperature`.*scalar"):
      general_preference_loss(c, r, temperature=jnp.ones(3))
    with pytest.raises(TypeError, match="`chosen_embedding`.*bool"):
      general_preference_loss(jnp.zeros((3, 4), bool), r)
    with pytest.raises(ValueError, match="`reduction`"):
      general_preference_loss(c, r, reduction="avg")

  def test_shape_errors_raise_under_jit(self):
    with pytest.raises(ValueError, match="`chosen_embedding`.*even"):
      jax.jit(general_preference_loss)(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
