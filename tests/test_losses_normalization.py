"""Tests for rmjax.losses.normalization: batch whitening, group normalisation, GDPO."""

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax.losses.normalization import batch_whiten
from rmjax.losses.normalization import group_normalize
from rmjax.losses.normalization import group_rows
from rmjax.losses.normalization import normalize_then_sum

_RNG = np.random.default_rng(0)
REWARDS = _RNG.normal(size=(3, 4)).astype(np.float32)
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)


def _np_whiten(x, valid, ddof, eps, shift_only=False):
  """Plain float64 reference."""
  x = np.asarray(x, np.float64)
  v = x[valid]
  centred = x - v.mean()
  if shift_only:
    return np.where(valid, centred, 0.0)
  std = np.sqrt(((v - v.mean()) ** 2).sum() / (v.size - ddof)) if v.size > ddof else 0.0
  return np.where(valid, centred / (std + eps), 0.0)


def _np_group(x, valid, ddof, eps, scale="std"):
  """Float64 reference with verl's one-sample rule (mean 0, std 1)."""
  out = np.zeros(x.shape)
  for b in range(x.shape[0]):
    v = np.asarray(x[b][valid[b]], np.float64)
    if v.size == 0:
      continue
    if v.size == 1:
      mean, std = 0.0, 1.0
    else:
      mean = v.mean()
      std = np.sqrt(((v - mean) ** 2).sum() / (v.size - ddof)) if v.size > ddof else 0.0
    a = x[b] - mean
    if scale == "std":
      a = a / (std + eps)
    out[b] = np.where(valid[b], a, 0.0)
  return out


def _np_trl_normalize_then_sum(rewards, weights, eps=1e-4):
  """TRL's normalize_then_sum, transcribed as a formula (no mask): group mean and unbiased std per
  reward, + eps, weighted sum, then (s - s.mean()) / (s.std(ddof=1) + eps)."""
  r = np.asarray(rewards, np.float64)
  mean = r.mean(axis=1, keepdims=True)
  std = r.std(axis=1, ddof=1, keepdims=True)
  s = (((r - mean) / (std + eps)) * np.asarray(weights)).sum(-1)
  return (s - s.mean()) / (s.std(ddof=1) + eps)


class GroupRowsTest(chex.TestCase):

  def test_reshapes_adjacent_samples_into_groups(self):
    x = jnp.arange(12).reshape(6, 2)
    out = group_rows(x, 3)
    self.assertEqual(out.shape, (2, 3, 2))
    np.testing.assert_array_equal(out[1, 0], [6, 7])
    np.testing.assert_array_equal(out.reshape(-1, 2), x)

  def test_errors_name_the_arguments(self):
    with pytest.raises(ValueError, match=r"`group_size` \(4\) must divide N.*`values`.*\(6,\)"):
      group_rows(jnp.zeros(6), 4)
    with pytest.raises(ValueError, match="`group_size` must be >= 1.*empty.*got 0"):
      group_rows(jnp.zeros(6), 0)
    with pytest.raises(ValueError, match="`group_size` must be a Python int"):
      group_rows(jnp.zeros(6), 2.0)
    with pytest.raises(ValueError, match=r"`values` must have at least one axis.*\(\)"):
      group_rows(jnp.float32(1.0), 1)


class BatchWhitenTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("ddof0", 0, False), ("ddof1", 1, False), ("shift_only", 0, True))
  def test_matches_numpy_reference(self, ddof, shift_only):
    fn = self.variant(lambda x, m: batch_whiten(x, mask=m, ddof=ddof, shift_only=shift_only))
    out = fn(REWARDS, MASK)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, _np_whiten(REWARDS, MASK, ddof, 1e-6, shift_only),
                               rtol=1e-5, atol=1e-6)

  def test_hand_values(self):
    # (1, 3): mean 2, population std 1 -> (-1, 1) / (1 + eps); unbiased std sqrt(2).
    np.testing.assert_allclose(batch_whiten(jnp.array([1.0, 3.0]), eps=0.0), [-1.0, 1.0])
    np.testing.assert_allclose(batch_whiten(jnp.array([1.0, 3.0]), ddof=1, eps=0.0),
                               [-1 / np.sqrt(2), 1 / np.sqrt(2)], rtol=1e-6)

  @hypothesis.settings(max_examples=10, deadline=None)
  @hypothesis.given(st.lists(st.floats(-1e4, 1e4, width=32), min_size=3, max_size=8))
  def test_whitened_batch_has_zero_mean_unit_std(self, xs):
    x = np.asarray(xs, np.float32)
    hypothesis.assume(np.std(x) > 1e-2 * (1 + np.abs(x).max()))
    # Padded to a fixed length (one compilation), which must not matter.
    padded = np.zeros(8, np.float32)
    padded[:x.size] = x
    out = batch_whiten(jnp.asarray(padded), mask=jnp.arange(8) < x.size, ddof=1, eps=0.0)
    out = np.asarray(out, np.float64)
    np.testing.assert_array_equal(out[x.size:], 0.0)
    np.testing.assert_allclose(out[:x.size].mean(), 0.0, atol=1e-4)
    np.testing.assert_allclose(out[:x.size].std(ddof=1), 1.0, rtol=1e-4)

  def test_padding_with_junk_changes_nothing(self):
    x = jnp.asarray(REWARDS)
    m = jnp.asarray(MASK)
    ref = batch_whiten(x, mask=m)
    padded = jnp.concatenate([x, jnp.array([[jnp.nan, jnp.inf, -jnp.inf, 1e30]])], axis=0)
    padded_mask = jnp.concatenate([m, jnp.zeros((1, 4), bool)], axis=0)
    out = batch_whiten(padded, mask=padded_mask)
    # Equal up to float32 summation order (the padded array is reduced in a different order).
    np.testing.assert_allclose(out[:3], ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[3], 0.0)
    grad = jax.grad(lambda x: jnp.sum(batch_whiten(x, mask=padded_mask) * jnp.arange(16.0).reshape(
        4, 4)))(padded)
    self.assertTrue(np.all(np.isfinite(grad)))
    np.testing.assert_array_equal(grad[3], 0.0)
    np.testing.assert_array_equal(grad[~np.asarray(padded_mask)], 0.0)

  def test_constant_batch_gives_zero_and_finite_gradient(self):
    x = jnp.full((5,), 3.0)
    np.testing.assert_array_equal(batch_whiten(x), 0.0)
    np.testing.assert_array_equal(batch_whiten(x, eps=0.0), 0.0)
    grad = jax.grad(lambda x: jnp.sum(batch_whiten(x) * jnp.arange(5.0)))(x)
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_nothing_valid_gives_zeros(self):
    out = batch_whiten(jnp.array([jnp.nan, 1.0]), mask=jnp.zeros(2, bool))
    np.testing.assert_array_equal(out, 0.0)

  def test_gradients(self):
    x = jnp.asarray(REWARDS[0])
    jtu.check_grads(lambda x: batch_whiten(x, ddof=1), (x,), order=1, modes=["rev"],
                    atol=1e-2, rtol=1e-2)

  def test_bfloat16_and_large_inputs(self):
    out = batch_whiten(jnp.array([1.0, 2.0, 4.0], jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.float32)
    big = batch_whiten(jnp.array([1e4, -1e4, 5e3, 0.0]))
    self.assertTrue(np.all(np.isfinite(big)))
    np.testing.assert_allclose(big, _np_whiten(np.array([1e4, -1e4, 5e3, 0.0]),
                                               np.ones(4, bool), 0, 1e-6), rtol=1e-5)

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`mask` must have shape \(3,\); got shape \(2,\)"):
      batch_whiten(jnp.ones(3), mask=jnp.ones(2))
    with pytest.raises(ValueError, match="`ddof` must be a Python int >= 0.*-1"):
      batch_whiten(jnp.ones(3), ddof=-1)
    with pytest.raises(ValueError, match="`eps` must be a finite number >= 0"):
      batch_whiten(jnp.ones(3), eps=-1.0)
    with pytest.raises(ValueError, match="`shift_only` must be a Python bool"):
      batch_whiten(jnp.ones(3), shift_only="yes")
    with pytest.raises(TypeError, match="`values`.*bool"):
      batch_whiten(jnp.ones(3, bool))


class GroupNormalizeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("grpo_verl", "std", 1, 1e-6), ("grpo_trl_eps", "std", 1, 1e-4),
      ("population_std", "std", 0, 1e-6), ("dr_grpo", "none", 1, 1e-6))
  def test_matches_numpy_reference(self, scale, ddof, eps):
    fn = self.variant(lambda x, m: group_normalize(x, mask=m, scale=scale, ddof=ddof, eps=eps))
    out = fn(REWARDS, MASK)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, _np_group(REWARDS, MASK, ddof, eps, scale), rtol=1e-5,
                               atol=1e-6)

  def test_hand_values(self):
    # Binary rewards (1, 0, 0, 0): mean 1/4, unbiased std sqrt(3/16 * 4/3) = 1/2.
    out = group_normalize(jnp.array([[1.0, 0.0, 0.0, 0.0]]), eps=0.0)
    np.testing.assert_allclose(out, [[1.5, -0.5, -0.5, -0.5]], rtol=1e-6)

  def test_single_valid_sample_follows_verl(self):
    r = jnp.array([[2.0, 7.0], [3.0, 3.0]])
    m = jnp.array([[True, False], [True, True]])
    out = group_normalize(r, mask=m)
    # verl: mean 0, std 1 -> r / (1 + eps); a group without spread -> 0.
    np.testing.assert_allclose(out, [[2.0 / (1 + 1e-6), 0.0], [0.0, 0.0]], rtol=1e-7)
    np.testing.assert_array_equal(group_normalize(r, mask=m, scale="none"), [[2.0, 0], [0, 0]])

  def test_fully_masked_group_is_zero(self):
    r = jnp.array([[jnp.nan, jnp.inf], [1.0, 2.0]])
    out = group_normalize(r, mask=jnp.array([[0, 0], [1, 1]]))
    np.testing.assert_array_equal(out[0], 0.0)
    self.assertTrue(np.all(np.isfinite(out)))

  def test_padding_samples_change_nothing(self):
    x = jnp.asarray(REWARDS)
    ref = group_normalize(x, mask=MASK)
    padded = jnp.concatenate([x, jnp.full((3, 2), jnp.nan)], axis=1)
    padded_mask = np.concatenate([MASK, np.zeros((3, 2), bool)], axis=1)
    out = group_normalize(padded, mask=padded_mask)
    np.testing.assert_allclose(out[:, :4], ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[:, 4:], 0.0)
    grad = jax.grad(lambda x: jnp.sum(group_normalize(x, mask=padded_mask) ** 3))(padded)
    self.assertTrue(np.all(np.isfinite(grad)))
    np.testing.assert_array_equal(grad[:, 4:], 0.0)

  def test_gradients(self):
    jtu.check_grads(lambda x: group_normalize(x), (jnp.asarray(REWARDS),), order=1,
                    modes=["rev"], atol=1e-2, rtol=1e-2)

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`values` must have shape \[B, G\]; got shape \(4,\)"):
      group_normalize(jnp.ones(4))
    with pytest.raises(ValueError, match=r"G >= 1.*\(2, 0\).*empty groups"):
      group_normalize(jnp.ones((2, 0)))
    with pytest.raises(ValueError, match=r"`scale` must be one of \('std', 'none'\); got 'mad'"):
      group_normalize(jnp.ones((2, 2)), scale="mad")
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2, 2\); got shape \(2,\)"):
      group_normalize(jnp.ones((2, 2)), mask=jnp.ones(2))
    with pytest.raises(ValueError, match="`ddof`"):
      group_normalize(jnp.ones((2, 2)), ddof=True)


class NormalizeThenSumTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_trl_formula(self):
    r = _RNG.normal(size=(3, 4, 2)).astype(np.float32) * np.array([1.0, 10.0], np.float32)
    w = np.array([0.7, 1.5], np.float32)
    out = self.variant(lambda r, w: normalize_then_sum(r, weights=w))(r, w)
    np.testing.assert_allclose(out, _np_trl_normalize_then_sum(r, w), rtol=1e-5, atol=1e-5)

  def test_one_reward_is_group_normalise_then_whiten(self):
    r = jnp.asarray(REWARDS)
    expected = batch_whiten(group_normalize(r, eps=1e-4), ddof=1, eps=1e-4)
    np.testing.assert_allclose(normalize_then_sum(r[..., None]), expected, rtol=1e-5, atol=1e-6)

  def test_reward_scale_does_not_matter_but_weights_do(self):
    r = _RNG.normal(size=(2, 3, 2)).astype(np.float32)
    scaled = r * np.array([1.0, 100.0], np.float32)
    np.testing.assert_allclose(normalize_then_sum(r, eps=0.0), normalize_then_sum(scaled, eps=0.0),
                               rtol=1e-4, atol=1e-5)
    self.assertFalse(np.allclose(normalize_then_sum(r, weights=jnp.array([1.0, 0.0])),
                                 normalize_then_sum(r), atol=1e-3))

  def test_masked_samples_and_single_sample_groups(self):
    r = jnp.asarray(_RNG.normal(size=(2, 3, 2)).astype(np.float32))
    m = jnp.array([[1, 1, 1], [1, 1, 1]], bool)
    ref = normalize_then_sum(r, mask=m)
    padded = jnp.concatenate([r, jnp.full((2, 1, 2), jnp.inf)], axis=1)
    padded_mask = jnp.concatenate([m, jnp.zeros((2, 1), bool)], axis=1)
    out = normalize_then_sum(padded, mask=padded_mask)
    np.testing.assert_allclose(out[:, :3], ref, rtol=1e-6)
    np.testing.assert_array_equal(out[:, 3], 0.0)
    # A group with one valid sample carries no information in TRL: its z is 0 for every reward.
    # The other group's summed z s_1 has mean 0, so the batch mean stays 0 and only the batch std
    # changes: sqrt(S / 3) over 4 valid samples instead of sqrt(S / 2) over 3, S = sum s_1^2.
    single = normalize_then_sum(r, mask=jnp.array([[1, 0, 0], [1, 1, 1]]))
    alone = normalize_then_sum(r[1:])
    np.testing.assert_allclose(single[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(single[1], alone[0] * np.sqrt(3 / 2), rtol=1e-3)

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`rewards` must have shape \[B, G, K\]"):
      normalize_then_sum(jnp.ones((2, 3)))
    with pytest.raises(ValueError,
                       match=r"`weights` must have shape \[K\] = \(2,\).*got shape \(3,\)"):
      normalize_then_sum(jnp.ones((2, 3, 2)), weights=jnp.ones(3))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2, 3\)"):
      normalize_then_sum(jnp.ones((2, 3, 2)), mask=jnp.ones((2, 3, 2)))
    with pytest.raises(ValueError, match=r"K >= 1 rewards.*\(2, 3, 0\)"):
      normalize_then_sum(jnp.ones((2, 3, 0)))
