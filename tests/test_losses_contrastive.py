"""Tests for rmjax.losses.contrastive (in-batch InfoNCE / SimCSE)."""

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax.losses.contrastive import info_nce_loss

_RNG = np.random.default_rng(0)
B, D = 6, 5
ANCHORS = _RNG.normal(size=(B, D)).astype(np.float32)
POSITIVES = (ANCHORS + 0.5 * _RNG.normal(size=(B, D))).astype(np.float32)
MASK = np.array([True, True, False, True, True, False])


def _np_info_nce(anchors, positives, tau, mask=None):
  """Plain float64 reference: cross-entropy of cos / tau over valid rows."""
  a = np.asarray(anchors, np.float64)
  p = np.asarray(positives, np.float64)
  valid = np.ones(len(a), bool) if mask is None else np.asarray(mask)
  a, p = a[valid], p[valid]
  # Zero rows stay zero (cosine 0), as in the library.
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
  p = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-8)
  logits = a @ p.T / tau
  log_prob = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
  out = np.zeros(len(valid))
  out[valid] = -np.diagonal(log_prob)
  return out


class InfoNceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_value(self):
    # Orthonormal rows, positives = anchors, tau = 1: logits = I, per row
    # log(e + 1) - 1.
    x = jnp.eye(2)
    out = self.variant(lambda a, p: info_nce_loss(a, p, temperature=1.0))(x, x)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, np.log(np.e + 1.0) - 1.0, rtol=1e-6)
    # Four orthonormal rows at the default tau = 0.05: log(1 + 3 e^-20) = 6e-9,
    # i.e. 0 up to float32 rounding of logsumexp - 20.
    np.testing.assert_allclose(
        info_nce_loss(jnp.eye(4), jnp.eye(4), reduction="none"),
        np.full(4, np.log1p(3.0 * np.exp(-20.0))), atol=2e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.05, 0.5, 2.0)
  def test_matches_numpy_reference(self, tau):
    fn = self.variant(lambda a, p: info_nce_loss(a, p, temperature=tau,
                                                 reduction="none"))
    out = fn(ANCHORS, POSITIVES)
    self.assertEqual(out.shape, (B,))
    np.testing.assert_allclose(out, _np_info_nce(ANCHORS, POSITIVES, tau),
                               rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_mask_excludes_rows_as_anchors_and_as_negatives(self):
    ref = _np_info_nce(ANCHORS, POSITIVES, 0.1, MASK)

    def fn(reduction):
      return self.variant(lambda a, p, m: info_nce_loss(
          a, p, temperature=0.1, mask=m, reduction=reduction))(
              ANCHORS, POSITIVES, MASK)

    np.testing.assert_allclose(fn("none"), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fn("sum"), ref.sum(), rtol=1e-5)
    np.testing.assert_allclose(fn("mean"), ref.sum() / 4, rtol=1e-5)
    # Same as running on the valid rows alone.
    np.testing.assert_allclose(
        fn("none")[MASK],
        info_nce_loss(ANCHORS[MASK], POSITIVES[MASK], temperature=0.1,
                      reduction="none"), rtol=1e-4, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_padding_with_masked_junk_changes_nothing(self):
    a, p = ANCHORS[:4], POSITIVES[:4]
    junk = np.full((3, D), np.nan, np.float32)
    junk[0] = np.inf
    junk[1] = 0.0
    a_pad = np.concatenate([a, junk])
    p_pad = np.concatenate([p, junk[::-1]])
    mask = np.array([True] * 4 + [False] * 3)

    def loss(a, p, t, m):
      return info_nce_loss(a, p, temperature=t, mask=m)

    grad_fn = self.variant(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    value, (g_a, g_p, g_t) = grad_fn(a, p, jnp.float32(0.2), None)
    value_pad, (g_a_pad, g_p_pad, g_t_pad) = grad_fn(a_pad, p_pad,
                                                     jnp.float32(0.2), mask)
    np.testing.assert_allclose(value_pad, value, rtol=1e-6)
    np.testing.assert_allclose(g_a_pad[:4], g_a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_p_pad[:4], g_p, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_t_pad, g_t, rtol=1e-5)
    np.testing.assert_array_equal(g_a_pad[4:], 0.0)
    np.testing.assert_array_equal(g_p_pad[4:], 0.0)

  def test_one_or_no_valid_row(self):
    # One valid row: its positive is its only candidate, loss 0.
    out = info_nce_loss(ANCHORS, POSITIVES, mask=np.eye(B, dtype=bool)[2],
                        reduction="none")
    np.testing.assert_array_equal(out, 0.0)
    value, grad = jax.value_and_grad(info_nce_loss)(
        ANCHORS, POSITIVES, mask=np.zeros(B, bool))
    self.assertEqual(float(value), 0.0)
    np.testing.assert_array_equal(grad, 0.0)

  @hypothesis.settings(max_examples=20, deadline=None)
  @hypothesis.given(seed=st.integers(0, 2**31),
                    scales=st.lists(st.floats(1e-2, 1e3), min_size=B,
                                    max_size=B))
  def test_invariant_to_row_scaling_and_equivariant_to_permutation(
      self, seed, scales):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(B, D)).astype(np.float32)
    p = rng.normal(size=(B, D)).astype(np.float32)
    base = info_nce_loss(a, p, temperature=0.2, reduction="none")
    s = np.asarray(scales, np.float32)[:, None]
    np.testing.assert_allclose(
        info_nce_loss(s * a, s[::-1] * p, temperature=0.2, reduction="none"),
        base, rtol=1e-4, atol=1e-5)
    perm = rng.permutation(B)
    np.testing.assert_allclose(
        info_nce_loss(a[perm], p[perm], temperature=0.2, reduction="none"),
        np.asarray(base)[perm], rtol=1e-5, atol=1e-6)
    # Cross-entropy over B candidates: >= 0, and log B when all logits tie.
    self.assertTrue(np.all(np.asarray(base) >= 0))

  def test_uninformative_representations_give_log_b(self):
    same = np.tile(ANCHORS[:1], (B, 1))
    np.testing.assert_allclose(info_nce_loss(same, same), np.log(B),
                               rtol=1e-5)

  def test_gradient_pulls_positives_together(self):
    # The loss decreases along -grad, and lowering the temperature sharpens
    # an already correct assignment (smaller loss).
    a, p = jnp.asarray(ANCHORS), jnp.asarray(POSITIVES)
    loss = lambda a: info_nce_loss(a, p, temperature=0.5)
    g = jax.grad(loss)(a)
    self.assertLess(float(loss(a - 0.05 * g)), float(loss(a)))
    x = jnp.eye(3)
    self.assertLess(float(info_nce_loss(x, x, temperature=0.1)),
                    float(info_nce_loss(x, x, temperature=1.0)))

  def test_check_grads(self):
    fn = jax.jit(lambda a, p, t: info_nce_loss(a, p, temperature=t,
                                               mask=MASK))
    jtu.check_grads(fn, (ANCHORS, POSITIVES, np.float32(0.3)), order=1,
                    modes=("fwd", "rev"), eps=1e-2, atol=1e-3, rtol=1e-3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_inputs(self):
    fn = self.variant(lambda a, p: info_nce_loss(a, p, temperature=0.5,
                                                 reduction="none"))
    out = fn(ANCHORS.astype(jnp.bfloat16), POSITIVES.astype(jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, fn(ANCHORS, POSITIVES), rtol=3e-2,
                               atol=3e-2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_large_and_zero_inputs_are_finite(self):
    big = 1e4 * np.sign(ANCHORS)
    x = np.concatenate([big, np.zeros((1, D), np.float32)])
    value, (g_a, g_p) = self.variant(jax.value_and_grad(
        lambda a, p: info_nce_loss(a, p), argnums=(0, 1)))(x, -x)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(g_a)) and np.all(np.isfinite(g_p)))
    # The zero row has cosine 0 with every positive: its loss is log(B + 1).
    expected = _np_info_nce(x, -x, 0.05)
    self.assertAlmostEqual(expected[-1], np.log(B + 1), places=6)
    np.testing.assert_allclose(value, expected.mean(), rtol=1e-4)

  def test_bad_arguments_name_the_argument(self):
    a = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match=r"`anchors` must have shape \[B, D\];"
                       r" got shape \(3,\)"):
      info_nce_loss(jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`positives`.*\(3, 2\).*\(3, 3\)"):
      info_nce_loss(a, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"`mask`.*\(3,\).*\(2,\)"):
      info_nce_loss(a, a, mask=jnp.ones(2, bool))
    for bad in (0.0, -1.0, float("nan")):
      with pytest.raises(ValueError, match=r"`temperature`.*> 0"):
        info_nce_loss(a, a, temperature=bad)
    with pytest.raises(TypeError, match=r"`positives`.*bool"):
      info_nce_loss(a, jnp.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="`reduction`"):
      info_nce_loss(a, a, reduction="batchmean")
    with pytest.raises(ValueError, match="`positives`"):
      jax.jit(info_nce_loss)(a, jnp.zeros((2, 2)))
