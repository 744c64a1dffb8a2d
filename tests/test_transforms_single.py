"""One-reward transforms: LSC, reference rewards, PAR and its baselines, stat-based transforms."""

import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest
from scipy import stats

from rmjax import transforms

SPEC_ATOL = 5e-5
_SETTINGS = hypothesis.settings(max_examples=10, deadline=None,
                                suppress_health_check=[hypothesis.HealthCheck.too_slow])
_RNG = np.random.default_rng(0)
REWARDS = _RNG.normal(size=5).astype(np.float32)
REFS = _RNG.normal(size=(5, 4)).astype(np.float32)

RELATIVE = {
    "par": (transforms.preference_as_reward, lambda z: 1 / (1 + np.exp(-z))),
    "centered": (transforms.centered_reward, lambda z: z),
    "tanh": (transforms.relative_tanh, np.tanh),
    "arctan": (transforms.relative_arctan, np.arctan),
}


def _np_relative(f, r, refs, k=1.0):
  r = np.asarray(r, np.float64)
  return f(k * (r[:, None] - np.asarray(refs, np.float64))).mean(-1)


class SpecSanityTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_lsc_sanity_values(self):
    out = self.variant(transforms.log_sigmoid_centered)(jnp.array([1.0, 3.0]), jnp.zeros(2))
    np.testing.assert_allclose(out, [-0.3133, -0.0486], atol=SPEC_ATOL)

  @chex.variants(with_jit=True, without_jit=True)
  def test_par_sanity_values(self):
    par = self.variant(transforms.preference_as_reward)
    np.testing.assert_allclose(par(jnp.array([1.0]), jnp.array([[0.0]])), [0.7311],
                               atol=SPEC_ATOL)
    np.testing.assert_allclose(par(jnp.array([1.0]), jnp.array([[0.0, 2.0]])), [0.5],
                               atol=1e-7)

  def test_par_steepness(self):
    # k = 2, r - ref = 1: sigmoid(2) = 0.8808.
    out = transforms.preference_as_reward(jnp.array([1.0]), jnp.array([[0.0]]), steepness=2.0)
    np.testing.assert_allclose(out, [0.880797], rtol=1e-5)


class ReferenceRewardTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_empirical_matches_numpy_quantile_with_ragged_masks(self):
    samples = _RNG.normal(size=(4, 7)).astype(np.float32)
    mask = np.ones((4, 7), bool)
    mask[1, 5:] = False
    mask[2, 1:] = False  # one valid sample
    mask[3, ::2] = False
    junk = np.where(mask, samples, np.nan).astype(np.float32)
    for q in (0.0, 0.3, 0.85, 1.0):
      fn = self.variant(lambda s, m, q=q: transforms.reference_reward(
          s, quantile=q, method="empirical", mask=m))
      out = fn(junk, mask)
      expected = [np.quantile(samples[b][mask[b]], q) for b in range(4)]
      np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6, err_msg=str(q))

  def test_gaussian_is_pars_85_percent_fit(self):
    samples = _RNG.normal(size=(3, 10)).astype(np.float32)
    out = transforms.reference_reward(samples)
    # PAR's reward shaper: mean + 1.0364333894937898 * std (population std).
    expected = samples.mean(-1) + 1.0364333894937898 * samples.std(-1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    out = transforms.reference_reward(samples, quantile=0.3, ddof=1)
    expected = samples.mean(-1) + stats.norm.ppf(0.3) * samples.std(-1, ddof=1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_default_and_par_paper_std_conventions_by_hand(self):
    # Rows: [0, 1, 2, 3, 4] (mean 2, population var 2, sample var 2.5); [1, 3, pad] (mean 2,
    # population var 1, sample var 2); [5, pad, pad] (one sample: std 0 for every ddof).
    # z = Phi^-1(0.85) = 1.0364334.
    samples = jnp.array([[0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 3.0, jnp.nan, 0.0, 0.0],
                         [5.0, jnp.inf, 0.0, 0.0, 0.0]])
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
    z = 1.0364334
    default = self.variant(lambda s, m: transforms.reference_reward(s, mask=m))(samples, mask)
    np.testing.assert_allclose(default, [2 + np.sqrt(2) * z, 2 + 1 * z, 5.0], rtol=1e-6)
    par = self.variant(lambda s, m: transforms.reference_reward(s, mask=m, ddof=1, eps=1e-5))(
        samples, mask)
    np.testing.assert_allclose(
        par, [2 + (np.sqrt(2.5) + 1e-5) * z, 2 + (np.sqrt(2) + 1e-5) * z, 5 + 1e-5 * z],
        rtol=1e-6)
    np.testing.assert_allclose(par[:2], [3.6387554, 3.4657485], rtol=1e-6)

  def test_empty_row_gives_zero_and_finite_gradient(self):
    samples = jnp.array([[1.0, 2.0], [jnp.nan, jnp.inf], [3.0, 3.0]])  # row 3: identical samples
    mask = jnp.array([[1, 1], [0, 0], [1, 1]])

    @jax.jit
    def values_and_grads(s):
      fns = [lambda s, m=m: transforms.reference_reward(s, method=m, mask=mask).sum()
             for m in ("empirical", "gaussian")]
      return [(transforms.reference_reward(s, method=m, mask=mask), jax.grad(f)(s))
              for m, f in zip(("empirical", "gaussian"), fns)]

    for out, grad in values_and_grads(samples):
      assert out[1] == 0.0 and np.all(np.isfinite(out))
      np.testing.assert_array_equal(grad[1], [0.0, 0.0])
      assert np.all(np.isfinite(grad))

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`base_rewards`.*M >= 1.*\(2, 0\)"):
      transforms.reference_reward(jnp.zeros((2, 0)))
    with pytest.raises(ValueError, match=r"`base_rewards` must have shape \[B, M\]"):
      transforms.reference_reward(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`quantile`.*\(0.0, 1.0\).*1.0"):
      transforms.reference_reward(jnp.zeros((1, 2)), quantile=1.0)
    with pytest.raises(ValueError, match=r"`quantile`.*\[0.0, 1.0\].*1.5"):
      transforms.reference_reward(jnp.zeros((1, 2)), quantile=1.5, method="empirical")
    with pytest.raises(ValueError, match="`method`.*'empirical', 'gaussian'"):
      transforms.reference_reward(jnp.zeros((1, 2)), method="median")
    with pytest.raises(ValueError, match=r"`mask`.*\(1, 2\)"):
      transforms.reference_reward(jnp.zeros((1, 2)), mask=jnp.ones(2))
    with pytest.raises(ValueError, match=r"`eps`.*-1e-05"):
      transforms.reference_reward(jnp.zeros((1, 2)), eps=-1e-5)


class RelativeTransformsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_against_numpy(self):
    for name, (fn, f) in RELATIVE.items():
      out = self.variant(fn)(REWARDS, REFS)
      np.testing.assert_allclose(out, _np_relative(f, REWARDS, REFS), rtol=1e-5, atol=1e-6,
                                 err_msg=name)
      assert out.dtype == jnp.float32

  def test_hand_values(self):
    r, refs = jnp.array([1.0]), jnp.array([[0.0, 3.0]])
    np.testing.assert_allclose(transforms.centered_reward(r, refs), [-0.5])
    np.testing.assert_allclose(transforms.relative_tanh(r, refs),
                               [(np.tanh(1.0) + np.tanh(-2.0)) / 2], rtol=1e-6)
    np.testing.assert_allclose(transforms.relative_arctan(r, refs),
                               [(np.pi / 4 + np.arctan(-2.0)) / 2], rtol=1e-6)

  def test_groups_share_the_prompts_references(self):
    rewards = _RNG.normal(size=(5, 3)).astype(np.float32)  # [B, G]
    out = transforms.preference_as_reward(rewards, REFS)
    for g in range(3):
      np.testing.assert_allclose(out[:, g], transforms.preference_as_reward(rewards[:, g], REFS),
                                 rtol=1e-6)

  def test_padding_is_invariant(self):
    # Pad rewards with junk rows and references with junk columns.
    rewards = np.concatenate([REWARDS, [np.nan, np.inf]]).astype(np.float32)
    refs = np.full((7, 6), np.inf, np.float32)
    refs[:5, :4] = REFS
    ref_mask = np.zeros((7, 6), bool)
    ref_mask[:5, :4] = True
    mask = np.arange(7) < 5
    for name, (fn, _) in RELATIVE.items():
      out = jax.jit(lambda r, f, fn=fn: fn(r, f, mask=mask, reference_mask=ref_mask))(rewards,
                                                                                      refs)
      np.testing.assert_allclose(out[:5], fn(REWARDS, REFS), rtol=1e-6, err_msg=name)
      np.testing.assert_array_equal(out[5:], [0.0, 0.0])
      grad_r, grad_ref = jax.jit(jax.grad(
          lambda r, f, fn=fn: fn(r, f, mask=mask, reference_mask=ref_mask).sum(),
          argnums=(0, 1)))(rewards, refs)
      ref_grad_r, ref_grad_ref = jax.jit(jax.grad(lambda r, f, fn=fn: fn(r, f).sum(),
                                                  argnums=(0, 1)))(REWARDS, REFS)
      np.testing.assert_allclose(grad_r[:5], ref_grad_r, rtol=1e-6, err_msg=name)
      np.testing.assert_allclose(grad_ref[:5, :4], ref_grad_ref, rtol=1e-6, err_msg=name)
      assert np.all(grad_r[5:] == 0) and np.all(grad_ref[~ref_mask] == 0), name

  def test_no_valid_reference_gives_value_at_zero(self):
    refs, ref_mask = jnp.zeros((1, 2)), jnp.zeros((1, 2), bool)
    r = jnp.array([3.0])
    assert transforms.preference_as_reward(r, refs, reference_mask=ref_mask)[0] == 0.5
    assert transforms.relative_tanh(r, refs, reference_mask=ref_mask)[0] == 0.0

  def test_check_grads(self):
    # One jitted function: a weighted sum of every transform, so each term's gradient counts.
    @jax.jit
    def all_transforms(r, f):
      outs = [fn(r, f) * (i + 1) for i, (fn, _) in enumerate(RELATIVE.values())]
      outs.append(transforms.log_sigmoid_centered(r, transforms.reference_reward(f)))
      outs.append(transforms.log_sigmoid_centered(
          r, transforms.reference_reward(f, method="empirical")))
      return sum(outs)

    jtu.check_grads(all_transforms, (REWARDS, REFS), order=1, modes=("rev",), atol=1e-2,
                    rtol=1e-2)

  def test_errors(self):
    fn = transforms.preference_as_reward
    with pytest.raises(ValueError, match=r"`references`.*M >= 1.*empty.*\(2, 0\)"):
      fn(jnp.zeros(2), jnp.zeros((2, 0)))
    with pytest.raises(ValueError, match=r"`references` must have shape \[B, M\] with B = 2.*"
                       r"\(3, 4\)"):
      fn(jnp.zeros(2), jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="`steepness`.*> 0.*-1.0"):
      fn(jnp.zeros(2), jnp.zeros((2, 1)), steepness=-1.0)
    with pytest.raises(ValueError, match=r"`reference_mask`.*\(2, 1\).*\(2,\)"):
      fn(jnp.zeros(2), jnp.zeros((2, 1)), reference_mask=jnp.ones(2))
    with pytest.raises(TypeError, match="`rewards`.*bool"):
      fn(jnp.ones(2, bool), jnp.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"`reference_rewards`.*\(3,\).*\(2,\)"):
      transforms.log_sigmoid_centered(jnp.zeros(3), jnp.zeros(2))


@jax.jit
def _relatives_jit(r, ref, k):
  par = transforms.preference_as_reward(r, ref, steepness=k)
  others = jnp.stack([fn(r, ref) for fn in (transforms.centered_reward, transforms.relative_tanh,
                                            transforms.relative_arctan)])
  mid = transforms.preference_as_reward(jnp.clip(r, -5, 5), jnp.clip(ref, -5, 5))
  return par, others, mid


class PropertiesTest(chex.TestCase):
  """Monotonicity, bounds and diminishing returns, checked on random draws."""

  @_SETTINGS
  @hypothesis.given(st.lists(st.floats(-10, 10, width=32), min_size=6, max_size=6),
                    st.lists(st.floats(-10, 10, width=32), min_size=4, max_size=4),
                    st.floats(0.1, 3.0))
  def test_par_and_relatives_monotone_and_bounded(self, rewards, refs, k):
    r = jnp.sort(jnp.asarray(rewards, jnp.float32))
    ref = jnp.tile(jnp.asarray(refs, jnp.float32), (r.shape[0], 1))
    par, others, mid = _relatives_jit(r, ref, jnp.float32(k))
    # |k (r - ref)| <= 60 may saturate float32 sigmoid to 0 or 1: check the closed interval here
    # and the open one where it cannot saturate (`mid`).
    assert np.all((par >= 0) & (par <= 1))
    assert np.all(np.diff(np.asarray(par)) >= 0)
    assert np.all(np.diff(np.asarray(others), axis=-1) >= 0)
    assert np.all((mid > 0) & (mid < 1))

  @_SETTINGS
  @hypothesis.given(st.floats(-20, 20, width=32), st.floats(-20, 20, width=32))
  def test_par_strictly_increasing_where_not_saturated(self, r, ref):
    hypothesis.assume(abs(r - ref) < 8)
    refs = jnp.array([[ref]], jnp.float32)
    lo = transforms.preference_as_reward(jnp.array([r], jnp.float32), refs)
    hi = transforms.preference_as_reward(jnp.array([r + 0.5], jnp.float32), refs)
    assert hi[0] > lo[0] and 0 < lo[0] < 1

  @_SETTINGS
  @hypothesis.given(st.floats(-15, 15, width=32), st.floats(-5, 5, width=32))
  def test_lsc_nonpositive_increasing_diminishing(self, r, ref):
    u = transforms.log_sigmoid_centered(jnp.array([r, r + 1, r + 2], jnp.float32), ref)
    u = np.asarray(u, np.float64)
    assert np.all(u <= 0)
    assert u[1] > u[0] and u[2] > u[1]
    # Diminishing returns: u(r + 2) - u(r + 1) < u(r + 1) - u(r) (strictly concave).
    assert u[2] - u[1] < u[1] - u[0] + 1e-6

  @_SETTINGS
  @hypothesis.given(st.lists(st.floats(-50, 50, width=32), min_size=6, max_size=6),
                    st.floats(-5, 5), st.floats(0.1, 5), st.floats(0, 3))
  def test_stat_transforms_monotone(self, rewards, mean, std, num_std):
    r = jnp.sort(jnp.asarray(rewards, jnp.float32))
    outs = [transforms.mean_std_normalize(r, mean, std),
            transforms.clip_reward(r, mean, std, num_std=num_std),
            transforms.min_max_normalize(r, -50.0, 50.0),
            transforms.ceil_reward(r, mean)]
    for out in outs:
      assert np.all(np.diff(np.asarray(out)) >= 0)


class StabilityTest(chex.TestCase):

  def test_large_and_bfloat16_inputs(self):
    big = jnp.array([-1e4, -3.0, 0.0, 2.0, 1e4], jnp.float32)
    refs = jnp.tile(jnp.array([[-1e4, 0.0, 1e4]], jnp.float32), (5, 1))
    outs = jax.jit(lambda big, refs: [fn(big, refs) for fn, _ in RELATIVE.values()] + [
        transforms.log_sigmoid_centered(big, 1e4),
        transforms.reference_reward(refs),
        transforms.reference_reward(refs, method="empirical"),
        transforms.mean_std_normalize(big, 0.0, 0.0),
        transforms.min_max_normalize(big, 5.0, 5.0)])(big, refs)
    for out in outs:
      assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
    grads = jax.jit(jax.grad(lambda r: sum(fn(r, refs).sum() for fn, _ in RELATIVE.values())
                             + transforms.log_sigmoid_centered(r, -1e4).sum()))(big)
    assert np.all(np.isfinite(grads))
    bf = big.astype(jnp.bfloat16)
    outs = jax.jit(lambda r, f: [fn(r, f) for fn, _ in RELATIVE.values()])(
        bf, refs.astype(jnp.bfloat16))
    for out in outs:
      assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
    out = transforms.log_sigmoid_centered(jnp.array([1.0], jnp.bfloat16), 0.0)
    np.testing.assert_allclose(out, [-0.3133], atol=SPEC_ATOL)


class StatTransformsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values_per_column(self):
    r = jnp.array([[1.0, 10.0], [3.0, 30.0]])
    out = self.variant(lambda r: transforms.mean_std_normalize(
        r, jnp.array([2.0, 20.0]), jnp.array([1.0, 10.0]), eps=0.0))(r)
    np.testing.assert_allclose(out, [[-1.0, -1.0], [1.0, 1.0]])
    out = self.variant(lambda r: transforms.clip_reward(r, jnp.array([2.0, 20.0]),
                                                        jnp.array([0.5, 5.0])))(r)
    np.testing.assert_allclose(out, [[1.5, 15.0], [2.5, 25.0]])
    out = self.variant(lambda r: transforms.ceil_reward(r, jnp.array([2.0, 100.0])))(r)
    np.testing.assert_allclose(out, [[1.0, 10.0], [2.0, 30.0]])

  def test_masks_and_errors(self):
    r = jnp.array([1.0, jnp.nan])
    m = jnp.array([True, False])
    np.testing.assert_array_equal(transforms.min_max_normalize(r, 0.0, 2.0, mask=m), [0.5, 0.0])
    grad = jax.grad(lambda r: transforms.mean_std_normalize(r, 0.0, 1.0, mask=m).sum())(r)
    np.testing.assert_array_equal(grad, [1.0, 0.0])
    with pytest.raises(ValueError, match=r"`mean`.*\(2, 2\).*\(3,\)"):
      transforms.mean_std_normalize(jnp.zeros((2, 2)), jnp.zeros(3), 1.0)
    with pytest.raises(ValueError, match="`num_std`.*-1.0"):
      transforms.clip_reward(r, 0.0, 1.0, num_std=-1.0)
    with pytest.raises(ValueError, match="`eps`"):
      transforms.min_max_normalize(r, 0.0, 1.0, eps=0.0)
