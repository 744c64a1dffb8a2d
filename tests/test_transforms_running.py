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


def _pure_stream(init_state, accumulate, read, update_first):
  """(outputs, states) of the pure functions over BATCHES / MASKS, in the factories' order."""
  state, outputs, states = init_state, [], []
  for values, mask in zip(BATCHES, MASKS):
    new_state = accumulate(state, values, mask)
    outputs.append(read(new_state if update_first else state, values, mask))
    states.append(new_state)
    state = new_state
  return outputs, states


def _assert_trees_close(a, b, rtol=1e-6):
  chex.assert_trees_all_equal_structs(a, b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-6)


class RunningNormalizerTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values_update_first_and_not(self):
    normalizer = transforms.running_normalizer()
    update = self.variant(normalizer.update)
    out, state = update(normalizer.init(), jnp.array([1.0, 3.0]))  # mean 2, std 1
    np.testing.assert_allclose(out, [-1.0, 1.0], rtol=1e-6)
    out, state = update(state, jnp.array([5.0]))  # {1, 3, 5}: mean 3, std sqrt(8/3)
    np.testing.assert_allclose(out, [2 / np.sqrt(8 / 3)], rtol=1e-6)
    np.testing.assert_allclose([state.count, state.mean, state.m2], [3, 3.0, 8.0], rtol=1e-6)

    lagged = transforms.running_normalizer(update_first=False)
    update = self.variant(lagged.update)
    out, state = update(lagged.init(), jnp.array([1.0, 3.0]))  # empty statistics: r / eps
    np.testing.assert_allclose(out, [1e8, 3e8], rtol=1e-6)
    out, state = update(state, jnp.array([5.0]))  # normalised by {1, 3}: (5 - 2) / 1
    np.testing.assert_allclose(out, [3.0], rtol=1e-6)
    np.testing.assert_allclose([state.count, state.mean, state.m2], [3, 3.0, 8.0], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_equals_the_pure_functions_step_by_step(self):
    for method in ("mean_std", "clip", "min_max"):
      for update_first in (True, False):
        kwargs = dict(method=method, ddof=1, eps=1e-3, num_std=1.5)
        normalizer = transforms.running_normalizer(feature_shape=(2,), update_first=update_first,
                                                   **kwargs)
        update = self.variant(lambda s, v, m, n=normalizer: n.update(s, v, mask=m))
        expected_outputs, expected_states = _pure_stream(
            transforms.welford_init((2,)),
            lambda s, v, m: transforms.welford_update(s, v, mask=m),
            lambda s, v, m, kw=kwargs: transforms.running_normalize(s, v, mask=m, **kw),
            update_first)
        state = normalizer.init()
        _assert_trees_close(state, transforms.welford_init((2,)))
        for values, mask, out, expected_state in zip(BATCHES, MASKS, expected_outputs,
                                                     expected_states):
          got, state = update(state, values, mask)
          np.testing.assert_allclose(got, out, rtol=1e-6, err_msg=f"{method} {update_first}")
          _assert_trees_close(state, expected_state)

  @chex.variants(with_jit=True, without_jit=True)
  def test_padding_and_junk_change_nothing(self):
    normalizer = transforms.running_normalizer(update_first=False)
    update = self.variant(lambda s, v, m: normalizer.update(s, v, mask=m))
    warm = transforms.welford_update(transforms.welford_init(), jnp.array([0.0, 4.0]))
    out, state = update(warm, jnp.array([1.0, 3.0]), jnp.array([True, True]))
    padded_out, padded_state = update(warm, jnp.array([1.0, jnp.nan, 3.0, jnp.inf]),
                                      jnp.array([True, False, True, False]))
    np.testing.assert_allclose(padded_out, [out[0], 0.0, out[1], 0.0], rtol=1e-6)
    np.testing.assert_allclose(out, [-0.5, 0.5], rtol=1e-6)  # mean 2, std 2
    _assert_trees_close(padded_state, state)

  def test_state_is_a_pytree_that_round_trips(self):
    normalizer = transforms.running_normalizer(feature_shape=(2,))
    _, state = normalizer.update(normalizer.init(), BATCHES[0])
    leaves, treedef = jax.tree.flatten(state)
    assert len(leaves) == 5
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert isinstance(rebuilt, transforms.WelfordState)
    _assert_trees_close(rebuilt, state, rtol=0)
    doubled = jax.tree.map(lambda x: 2 * x, state)
    assert isinstance(doubled, transforms.WelfordState)

  def test_errors(self):
    with pytest.raises(ValueError, match="`method`.*'mean_std', 'clip', 'min_max'.*'whiten'"):
      transforms.running_normalizer(method="whiten")
    with pytest.raises(ValueError, match="`update_first` must be a Python bool; got int 1"):
      transforms.running_normalizer(update_first=1)
    with pytest.raises(ValueError, match=r"`eps`.*-1.0"):
      transforms.running_normalizer(eps=-1.0)
    with pytest.raises(ValueError, match="`ddof`"):
      transforms.running_normalizer(ddof=-1)
    normalizer = transforms.running_normalizer(feature_shape=(2,))
    with pytest.raises(ValueError, match=r"`values`.*F = \(2,\).*\(3,\)"):
      normalizer.update(normalizer.init(), jnp.zeros(3))


class EmaNormalizerTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    normalizer = transforms.ema_normalizer(0.5)
    update = self.variant(normalizer.update)
    out, state = update(normalizer.init(), jnp.array([0.0, 2.0]))  # mean 1, var 1
    np.testing.assert_allclose(out, [-1.0, 1.0], rtol=1e-6)
    # Mixture 0.5 {0, 2} + 0.5 {3, 3}: mean 2, var 0.5 (1 + 1) + 0.5 (0 + 1) = 1.5.
    out, state = update(state, jnp.array([3.0, 3.0]))
    np.testing.assert_allclose(out, [1 / np.sqrt(1.5)] * 2, rtol=1e-6)
    np.testing.assert_allclose([state.mean, state.variance], [2.0, 1.5], rtol=1e-6)
    clip = transforms.ema_normalizer(0.5, method="clip", num_std=0.5)
    out, _ = clip.update(clip.init(), jnp.array([0.0, 2.0, 4.0]))  # mean 2, std sqrt(8/3)
    half = 0.5 * np.sqrt(8 / 3)
    np.testing.assert_allclose(out, [2 - half, 2.0, 2 + half], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_equals_the_pure_functions_step_by_step(self):
    for method in ("mean_std", "clip"):
      for update_first in (True, False):
        normalizer = transforms.ema_normalizer(0.7, method=method, feature_shape=(2,),
                                               update_first=update_first)
        update = self.variant(lambda s, v, m, n=normalizer: n.update(s, v, mask=m))
        expected_outputs, expected_states = _pure_stream(
            transforms.ema_init((2,)),
            lambda s, v, m: transforms.ema_update(s, v, decay=0.7, mask=m),
            lambda s, v, m, method=method: transforms.running_normalize(
                s, v, method=method, mask=m),
            update_first)
        state = normalizer.init()
        for values, mask, out, expected_state in zip(BATCHES, MASKS, expected_outputs,
                                                     expected_states):
          got, state = update(state, values, mask)
          np.testing.assert_allclose(got, out, rtol=1e-6, err_msg=f"{method} {update_first}")
          _assert_trees_close(state, expected_state)
        leaves, treedef = jax.tree.flatten(state)
        assert isinstance(jax.tree.unflatten(treedef, leaves), transforms.EmaState)

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`method`.*\('mean_std', 'clip'\).*'min_max'"):
      transforms.ema_normalizer(method="min_max")
    with pytest.raises(ValueError, match=r"`decay`.*\[0.0, 1.0\).*1.0"):
      transforms.ema_normalizer(1.0)


class MeanStdTrackerTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_welford_and_ema_equal_the_pure_functions(self):
    for decay, ddof in ((None, 0), (None, 1), (0.7, 0)):
      tracker = transforms.mean_std_tracker(decay=decay, ddof=ddof, feature_shape=(2,))
      update = self.variant(lambda s, v, m, t=tracker: t.update(s, v, mask=m))
      if decay is None:
        pure_state = transforms.welford_init((2,))
        accumulate = lambda s, v, m: transforms.welford_update(s, v, mask=m)
      else:
        pure_state = transforms.ema_init((2,))
        accumulate = lambda s, v, m: transforms.ema_update(s, v, decay=decay, mask=m)
      state = tracker.init()
      _assert_trees_close(state, pure_state)
      for values, mask in zip(BATCHES, MASKS):
        pure_state = accumulate(pure_state, values, mask)
        (mean, std), state = update(state, values, mask)
        _assert_trees_close((mean, std), transforms.running_mean_std(pure_state, ddof=ddof))
        _assert_trees_close(state, pure_state)

  def test_hand_values_and_errors(self):
    tracker = transforms.mean_std_tracker(ddof=1)
    (mean, std), state = tracker.update(tracker.init(), jnp.array([1.0, 3.0, 99.0]),
                                        mask=jnp.array([1, 1, 0]))
    np.testing.assert_allclose([mean, std], [2.0, np.sqrt(2.0)], rtol=1e-6)
    assert int(state.count) == 2
    with pytest.raises(ValueError, match="`ddof` must be 0 with `decay`.*ddof=1"):
      transforms.mean_std_tracker(decay=0.9, ddof=1)
    with pytest.raises(ValueError, match="`decay`"):
      transforms.mean_std_tracker(decay=-0.1)
