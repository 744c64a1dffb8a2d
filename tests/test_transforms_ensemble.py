"""Ensemble aggregation and preference strength against numpy references and hand values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import losses
from rmjax import transforms

MEMBERS = np.array([[1.0, -2.0, 0.5, 3.0],
                    [2.0, -1.0, 0.5, -3.0],
                    [6.0, 0.0, 0.5, 0.0]], np.float32)


class AggregateTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_against_numpy(self):
    lam = 0.7
    expected = {
        "mean": MEMBERS.mean(0),
        "median": np.median(MEMBERS, 0),
        "min": MEMBERS.min(0),
        "mean_minus_std": MEMBERS.mean(0) - lam * MEMBERS.std(0),
        "mean_minus_var": MEMBERS.mean(0) - lam * MEMBERS.var(0),
    }
    for method, value in expected.items():
      fn = self.variant(lambda r, m=method: transforms.aggregate_ensemble_rewards(
          r, method=m, uncertainty_penalty=lam))
      np.testing.assert_allclose(fn(jnp.asarray(MEMBERS)), value, rtol=1e-5, atol=1e-6,
                                 err_msg=method)

  def test_hand_values(self):
    # Column 0: members (1, 2, 6): mean 3, var 14/3, std 2.1602.
    out = transforms.aggregate_ensemble_rewards(MEMBERS, method="mean_minus_std")
    np.testing.assert_allclose(out[0], 3.0 - 2.1602469, rtol=1e-5)
    out = transforms.aggregate_ensemble_rewards(MEMBERS, method="mean_minus_var",
                                                uncertainty_penalty=0.5)
    np.testing.assert_allclose(out[0], 3.0 - 0.5 * 14.0 / 3.0, rtol=1e-5)

  def test_identical_members_have_finite_gradient_and_no_penalty(self):
    r = jnp.ones((4, 3)) * jnp.array([0.5, -1.0, 2.0])
    for method in transforms.ENSEMBLE_AGGREGATIONS:
      np.testing.assert_allclose(
          transforms.aggregate_ensemble_rewards(r, method=method), r[0], rtol=1e-6)
      grad = jax.grad(lambda x, m=method: transforms.aggregate_ensemble_rewards(
          x, method=m).sum())(r)
      assert np.all(np.isfinite(grad)), method

  def test_bfloat16_and_large_inputs(self):
    big = jnp.asarray(MEMBERS * 3e3)
    out = transforms.aggregate_ensemble_rewards(big.astype(jnp.bfloat16), method="mean_minus_std")
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out))

  def test_errors_name_the_argument(self):
    with pytest.raises(ValueError, match="method"):
      transforms.aggregate_ensemble_rewards(MEMBERS, method="max")
    with pytest.raises(ValueError, match="member_rewards"):
      transforms.aggregate_ensemble_rewards(MEMBERS[0])
    with pytest.raises(ValueError, match="uncertainty_penalty"):
      transforms.aggregate_ensemble_rewards(MEMBERS, uncertainty_penalty=-1.0)


def test_preference_strength_and_adaptive_margin():
  chosen = jnp.array([[2.0, 0.0], [4.0, 1.0]])
  rejected = jnp.array([[0.0, 1.0], [0.0, 1.0]])
  strength, spread = transforms.preference_strength(chosen, rejected)
  np.testing.assert_allclose(strength, [3.0, -0.5])
  np.testing.assert_allclose(spread, [1.0, 0.5])
  # Adaptive margin (spec): BT with the ensemble's mean margin u, held fixed.
  r_c, r_r = jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0])
  loss = losses.bradley_terry_loss(r_c, r_r, margin=jax.lax.stop_gradient(strength),
                                   reduction="none")
  np.testing.assert_allclose(loss, [np.log1p(np.exp(2.0)), np.log1p(np.exp(-0.5))], rtol=1e-6)
  with pytest.raises(ValueError, match="rejected_rewards"):
    transforms.preference_strength(chosen, rejected[:, :1])


@pytest.mark.parametrize("fraction, expected", [
    (0.0, [False] * 5),
    (0.2, [False, True, False, False, False]),
    (0.4, [False, True, False, False, True]),
    (1.0, [True] * 5),
])
def test_lowest_fraction_mask(fraction, expected):
  values = jnp.array([0.5, -1.0, 2.0, 3.0, 0.1])
  np.testing.assert_array_equal(transforms.lowest_fraction_mask(values, fraction), expected)


def test_lowest_fraction_mask_ignores_invalid_entries_and_breaks_ties_by_index():
  values = jnp.array([-9.0, 1.0, 1.0, 1.0, 5.0])
  mask = jnp.array([False, True, True, True, True])
  # 4 valid entries, half of them = 2 marked: the first two of the tied 1.0s.
  np.testing.assert_array_equal(
      transforms.lowest_fraction_mask(values, 0.5, mask=mask),
      [False, True, True, False, False])
  out = jax.jit(lambda v, m: transforms.lowest_fraction_mask(v, 0.5, mask=m))(values, mask)
  np.testing.assert_array_equal(out, [False, True, True, False, False])
  with pytest.raises(ValueError, match="fraction"):
    transforms.lowest_fraction_mask(values, 1.5)
