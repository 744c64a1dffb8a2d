"""Running statistics (Welford, EMA) against numpy over a stream, batch by batch."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import transforms

_RNG = np.random.default_rng(1)
# A stream of batches of different sizes, with a large offset (cancellation check) and masks.
BATCHES = [(1e4 + 3.0 * _RNG.normal(size=(n, 2))).astype(np.float32) for n in (5, 1, 8, 3)]
MASKS = [_RNG.random(size=b.shape) < 0.8 for b in BATCHES]
MASKS[1][:] = False  # a batch with nothing valid changes nothing


class WelfordTest(chex.TestCase):

  def test_matches_numpy_over_the_stream_batch_by_batch(self):
    update = jax.jit(lambda s, v, m: transforms.welford_update(s, v, mask=m))
    state = transforms.welford_init((2,))
    seen = []
    for values, mask in zip(BATCHES, MASKS):
      junk = np.where(mask, values, np.nan).astype(np.float32)
      state = update(state, junk, mask)
      seen.append(np.where(mask, values, np.nan))
      stream = np.concatenate(seen).astype(np.float64)
      count = np.sum(~np.isnan(stream), axis=0)
      np.testing.assert_array_equal(state.count, count)
      mean, std = transforms.running_mean_std(state)
      np.testing.assert_allclose(mean, np.nanmean(stream, 0), rtol=1e-6)
      np.testing.assert_allclose(std, np.nanstd(stream, 0), rtol=2e-3)
      _, std1 = transforms.running_mean_std(state, ddof=1)
      np.testing.assert_allclose(std1, np.nanstd(stream, 0, ddof=1), rtol=2e-3)
      np.testing.assert_allclose(state.minimum, np.nanmin(stream, 0))
      np.testing.assert_allclose(state.maximum, np.nanmax(stream, 0))

  def test_empty_state_and_errors(self):
    state = transforms.welford_init()
    mean, std = transforms.running_mean_std(state)
    assert float(mean) == 0.0 and float(std) == 0.0
    state = transforms.welford_update(state, jnp.array([jnp.nan]), mask=jnp.array([False]))
    assert int(state.count) == 0 and float(state.minimum) == 0.0
    with pytest.raises(ValueError, match=r"`values`.*F = \(2,\).*\(3,\)"):
      transforms.welford_update(transforms.welford_init((2,)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`mask`.*\(3,\)"):
      transforms.welford_update(transforms.welford_init(), jnp.zeros(3), mask=jnp.ones(2))
    with pytest.raises(ValueError, match="`feature_shape`"):
      transforms.welford_init((-1,))


class EmaTest(chex.TestCase):

  def test_matches_the_weighted_mixture_of_the_batches(self):
    decay = 0.7
    update = jax.jit(lambda s, v: transforms.ema_update(s, v, decay=decay))
    state = transforms.ema_init((2,))
    batches = [b.astype(np.float64) for b in BATCHES]
    for t, values in enumerate(BATCHES):
      state = update(state, values)
      # Weights: d^(t) for the first batch, (1 - d) d^(t - s) for batch s >= 1.
      w = np.array([decay ** t] + [(1 - decay) * decay ** (t - s) for s in range(1, t + 1)])
      means = np.stack([b.mean(0) for b in batches[:t + 1]])
      mean = (w[:, None] * means).sum(0)
      # Variance of the mixture: sum_s w_s (var_s + (mean_s - mean)^2).
      var = (w[:, None] * (np.stack([b.var(0) for b in batches[:t + 1]])
                           + (means - mean) ** 2)).sum(0)
      np.testing.assert_allclose(state.mean, mean, rtol=1e-6)
      np.testing.assert_allclose(state.variance, var, rtol=1e-3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masks_and_first_batch(self):
    update = self.variant(lambda s, v, m: transforms.ema_update(s, v, decay=0.9, mask=m))
    state = update(transforms.ema_init(), jnp.array([1.0, 3.0, jnp.inf]),
                   jnp.array([1, 1, 0]))
    np.testing.assert_allclose([state.mean, state.variance], [2.0, 1.0])
    same = update(state, jnp.array([jnp.nan]), jnp.array([0]))
    np.testing.assert_allclose([same.mean, same.variance], [2.0, 1.0])

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`decay`.*\[0.0, 1.0\).*1.0"):
      transforms.ema_update(transforms.ema_init(), jnp.zeros(2), decay=1.0)
    with pytest.raises(ValueError, match="`ddof` must be 0 for an EmaState"):
      transforms.running_mean_std(transforms.ema_init(), ddof=1)


class RunningNormalizeTest(chex.TestCase):

  def test_methods(self):
    r = jnp.array([0.0, 2.0, 4.0, 6.0])
    state = transforms.welford_update(transforms.welford_init(), r)  # mean 3, std sqrt(5)
    std = np.sqrt(5.0)
    np.testing.assert_allclose(transforms.running_normalize(state, r), (r - 3) / (std + 1e-8),
                               rtol=1e-6)
    np.testing.assert_allclose(transforms.running_normalize(state, r, method="clip"),
                               np.clip(r, 3 - std, 3 + std), rtol=1e-6)
    np.testing.assert_allclose(transforms.running_normalize(state, r, method="min_max"),
                               r / 6.0, rtol=1e-6)
    ema = transforms.ema_update(transforms.ema_init(), r)
    np.testing.assert_allclose(transforms.running_normalize(ema, r), (r - 3) / (std + 1e-8),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="min_max.*WelfordState.*EmaState"):
      transforms.running_normalize(ema, r, method="min_max")
    with pytest.raises(ValueError, match="`method`"):
      transforms.running_normalize(state, r, method="whiten")
