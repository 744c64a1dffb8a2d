"""Tests for rmjax.losses.multi_objective (MORE / MGDA min-norm weights)."""

import functools

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax.losses.bradley_terry import bradley_terry_loss
from rmjax.losses.multi_objective import min_norm_weights
from rmjax.losses.multi_objective import weighted_task_loss

# One compiled solver per (shape, num_iterations): keeps the property tests
# fast.
_jit_min_norm = jax.jit(min_norm_weights, static_argnames="num_iterations")


def _closed_form_two_tasks(g1, g2):
  g1 = np.asarray(g1, np.float64)
  g2 = np.asarray(g2, np.float64)
  lam = np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0.0, 1.0)
  return np.array([lam, 1.0 - lam])


def _objective(lam, grads):
  d = np.asarray(lam, np.float64) @ np.asarray(grads, np.float64)
  return np.sum(d * d, axis=-1)


def _simplex_grid(step=0.01):
  n = int(round(1 / step))
  return np.array([(i * step, j * step, 1.0 - (i + j) * step)
                   for i in range(n + 1) for j in range(n + 1 - i)])


_GRID = _simplex_grid()


class MinNormWeightsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_orthogonal_unit_gradients_split_evenly(self):
    fn = self.variant(min_norm_weights)
    out = fn(jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, [0.5, 0.5], rtol=1e-6)
    # T orthonormal gradients: uniform, the centre of the simplex.
    np.testing.assert_allclose(fn(jnp.eye(4)), np.full(4, 0.25), rtol=1e-6)

  @hypothesis.settings(max_examples=40, deadline=None)
  @hypothesis.given(seed=st.integers(0, 2**31), scale=st.floats(1e-3, 1e3),
                    shift=st.floats(-3.0, 3.0))
  # Nearly parallel gradients (a large shift): the later steps move the weights by
  # float32 rounding, 1.04e-6 here after 20 steps.
  @hypothesis.example(seed=398, scale=9.0, shift=2.0)
  def test_two_tasks_match_the_closed_form(self, seed, scale, shift):
    rng = np.random.default_rng(seed)
    g = (scale * (rng.normal(size=(2, 6)) + shift)).astype(np.float32)
    out = _jit_min_norm(g, num_iterations=20)
    closed_form = _closed_form_two_tasks(g[0], g[1])
    np.testing.assert_allclose(out, closed_form, atol=1e-5)
    # Exact after a single step (to float32 rounding of the closed form).
    np.testing.assert_allclose(_jit_min_norm(g, num_iterations=1), closed_form,
                               atol=1e-5)

  def test_two_tasks_clipped_cases(self):
    # g2 = 2 g1: all weight on the shorter g1; opposite gradients of equal
    # length: the midpoint, whose combination is 0.
    g1 = np.array([1.0, 2.0, -1.0], np.float32)
    np.testing.assert_allclose(min_norm_weights(np.stack([g1, 2 * g1])),
                               [1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(min_norm_weights(np.stack([g1, -g1])),
                               [0.5, 0.5], atol=1e-7)
    # Identical gradients: every point is optimal; the uniform start stays.
    np.testing.assert_allclose(min_norm_weights(np.stack([g1, g1])),
                               [0.5, 0.5], atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1, 2)
  def test_a_zero_gradient_gets_all_the_weight(self, zero_index):
    g = np.array([[1.0, 0.5, 0.0], [0.8, 1.0, 0.3], [0.2, 0.4, 1.0]],
                 np.float32)  # pairwise dot products > 0
    g[zero_index] = 0.0
    out = self.variant(min_norm_weights)(g)
    np.testing.assert_allclose(out, np.eye(3)[zero_index], atol=1e-7)
    np.testing.assert_allclose(
        min_norm_weights(np.stack([np.zeros(4), np.ones(4)])), [1.0, 0.0])

  @hypothesis.settings(max_examples=30, deadline=None)
  @hypothesis.given(seed=st.integers(0, 2**31),
                    num_tasks=st.sampled_from([1, 3, 5]),
                    correlated=st.booleans())
  def test_result_is_on_the_simplex_and_near_optimal(self, seed, num_tasks,
                                                     correlated):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(num_tasks, 8))
    if correlated:  # a shared component: no zero in the hull
      g = g + 2.0 * rng.normal(size=8)
    g = g.astype(np.float32)
    lam = np.asarray(_jit_min_norm(g, num_iterations=20), np.float64)
    self.assertTrue(np.all(lam >= 0))
    np.testing.assert_allclose(lam.sum(), 1.0, rtol=1e-5)
    # Optimality (KKT) of the min-norm point d = G^T lambda: g_t . d >= |d|^2
    # for every t, with equality on the support. Checked after enough
    # iterations for the solver to converge.
    lam = np.asarray(_jit_min_norm(g, num_iterations=300), np.float64)
    d = lam @ g.astype(np.float64)
    margin = g.astype(np.float64) @ d - d @ d
    scale = max(d @ d, 1e-3 * np.max(np.sum(g.astype(np.float64) ** 2, -1)))
    self.assertGreaterEqual(margin.min(), -2e-3 * scale)

  @hypothesis.settings(max_examples=30, deadline=None)
  @hypothesis.given(seed=st.integers(0, 2**31), correlated=st.booleans())
  def test_three_tasks_beat_a_dense_grid(self, seed, correlated):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(3, 5))
    if correlated:
      g[1] = g[0] + 0.1 * rng.normal(size=5)  # nearly parallel: ill-posed
      g = g + 2.0 * rng.normal(size=5)
    g = g.astype(np.float32)
    lam = _jit_min_norm(g, num_iterations=20)
    best_on_grid = _objective(_GRID, g).min()
    # The grid has spacing 0.01: the solver must be at least about as good.
    self.assertLessEqual(_objective(lam, g),
                         best_on_grid * (1 + 1e-2) + 1e-6)

  def test_single_task_and_zero_iterations(self):
    np.testing.assert_array_equal(min_norm_weights(jnp.ones((1, 3))), [1.0])
    np.testing.assert_allclose(
        min_norm_weights(jnp.eye(3) * jnp.arange(1.0, 4.0), num_iterations=0),
        np.full(3, 1 / 3), rtol=1e-6)

  def test_output_carries_no_gradient(self):
    g = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    grad = jax.grad(lambda g: jnp.sum(min_norm_weights(g) * jnp.arange(3.0)))(
        g)
    np.testing.assert_array_equal(grad, 0.0)

  def test_common_descent_direction_for_bt_tasks(self):
    # Two data sources whose BT gradients on a shared linear reward partly
    # conflict: the min-norm direction does not increase either loss.
    x = np.random.default_rng(2).normal(size=(2, 16, 4)).astype(np.float32)
    w_true = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, -0.5, 1.0, 0.0]],
                      np.float32)

    def task_loss(w, t):
      rewards = x[t] @ w
      labels = x[t] @ w_true[t]
      return bradley_terry_loss(jnp.where(labels > 0, rewards, -rewards),
                                jnp.zeros(16))

    w = jnp.zeros(4)
    grads = jnp.stack([jax.grad(task_loss)(w, t) for t in range(2)])
    lam = min_norm_weights(grads)
    direction = -(lam @ grads)
    for t in range(2):
      self.assertLessEqual(float(grads[t] @ direction), 1e-6)
    combined = jax.grad(lambda w: weighted_task_loss(
        jnp.stack([task_loss(w, t) for t in range(2)]), lam))(w)
    np.testing.assert_allclose(combined, lam @ grads, rtol=1e-5, atol=1e-7)

  def test_large_and_bfloat16_gradients(self):
    g = 1e4 * np.array([[1.0, -1.0, 2.0], [-2.0, 1.0, 0.5]], np.float32)
    out = min_norm_weights(g)
    self.assertTrue(np.all(np.isfinite(out)))
    np.testing.assert_allclose(out, _closed_form_two_tasks(g[0], g[1]),
                               atol=1e-5)
    out16 = min_norm_weights(g.astype(jnp.bfloat16) / 1e4)
    self.assertEqual(out16.dtype, jnp.float32)
    np.testing.assert_allclose(out16, out, atol=2e-2)

  def test_bad_arguments_name_the_argument(self):
    with pytest.raises(ValueError, match=r"`gradients` must have shape "
                       r"\[T, P\]; got shape \(3,\)"):
      min_norm_weights(jnp.ones(3))
    with pytest.raises(ValueError, match=r"`gradients`.*T >= 1"):
      min_norm_weights(jnp.ones((0, 3)))
    for bad in (-1, 2.5, True):
      with pytest.raises(ValueError, match=r"`num_iterations`"):
        min_norm_weights(jnp.ones((2, 3)), num_iterations=bad)
    with pytest.raises(TypeError, match=r"`gradients`.*bool"):
      min_norm_weights(jnp.ones((2, 3), bool))
    with pytest.raises(ValueError, match="`gradients`"):
      jax.jit(min_norm_weights)(jnp.ones(3))


class WeightedTaskLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_and_gradients(self):
    losses = jnp.array([1.0, 3.0, 2.0])
    weights = jnp.array([0.5, 0.25, 0.25])
    fn = self.variant(jax.value_and_grad(weighted_task_loss, argnums=(0, 1)))
    value, (g_l, g_w) = fn(losses, weights)
    self.assertEqual(value.dtype, jnp.float32)
    np.testing.assert_allclose(value, 0.5 + 0.75 + 0.5)
    np.testing.assert_allclose(g_l, weights)
    np.testing.assert_array_equal(g_w, 0.0)  # weights are constants

  def test_bfloat16_and_bad_shapes(self):
    out = weighted_task_loss(jnp.ones(2, jnp.bfloat16),
                             jnp.full(2, 0.5, jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, 1.0)
    with pytest.raises(ValueError, match=r"`weights`.*\(2,\).*\(3,\)"):
      weighted_task_loss(jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match=r"`task_losses` must have shape "
                       r"\[T\]"):
      weighted_task_loss(jnp.ones((2, 1)), jnp.ones((2, 1)))


def test_jit_matches_eager():
  g = np.random.default_rng(5).normal(size=(4, 7)).astype(np.float32)
  eager = min_norm_weights(g, num_iterations=7)
  jitted = jax.jit(functools.partial(min_norm_weights, num_iterations=7))(g)
  np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
