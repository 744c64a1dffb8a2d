"""Combining rewards: logical AND, sums, min / soft-min, directional, Lagrangian mixing."""

import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax import transforms

SPEC_ATOL = 5e-5
_RNG = np.random.default_rng(2)
REWARDS = _RNG.normal(size=(6, 3)).astype(np.float32)
REFS = _RNG.normal(size=(6, 3)).astype(np.float32)


class LogicalAndTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_spec_sanity_value(self):
    out = self.variant(transforms.logical_and)(jnp.array([[1.0, -1.0]]))
    np.testing.assert_allclose(out, [-1.6265], atol=SPEC_ATOL)  # -0.3133 - 1.3133

  def test_and_of_one_reward_is_its_transform(self):
    out = transforms.logical_and(REWARDS[:, :1], REFS[:, :1])
    np.testing.assert_allclose(out, transforms.log_sigmoid_centered(REWARDS[:, 0], REFS[:, 0]),
                               rtol=1e-6)

  def test_is_the_log_probability_of_being_good_on_all(self):
    out = transforms.logical_and(REWARDS, REFS)
    p = 1 / (1 + np.exp(-(REWARDS.astype(np.float64) - REFS)))
    np.testing.assert_allclose(np.exp(out), p.prod(-1), rtol=1e-5)
    per_property = transforms.logical_and(REWARDS, REFS[0])  # [K] references broadcast
    np.testing.assert_allclose(per_property, transforms.logical_and(REWARDS, np.tile(REFS[0],
                                                                                  (6, 1))))

  def test_excellent_on_one_bad_on_the_other_loses(self):
    # (helpful, harmless): A is excellent but harmful, B is decent on both.
    r = jnp.array([[6.0, -3.0], [1.5, 1.0]])
    raw = transforms.weighted_sum(r)
    anded = transforms.logical_and(r)
    assert raw[0] > raw[1] and anded[0] < anded[1]

  def test_masks_stability_and_errors(self):
    r = jnp.array([[1e4, -1e4], [jnp.nan, jnp.inf]], jnp.bfloat16)
    m = jnp.array([True, False])
    out = transforms.logical_and(r, mask=m)
    assert out.dtype == jnp.float32 and np.isfinite(out[0]) and out[1] == 0
    grad = jax.grad(lambda x: transforms.logical_and(x, mask=m).sum())(r.astype(jnp.float32))
    assert np.all(np.isfinite(grad)) and np.all(grad[1] == 0)
    with pytest.raises(ValueError, match=r"`reference_rewards`.*\(6, 3\).*\(2,\)"):
      transforms.logical_and(REWARDS, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`rewards` must have shape \[B, K\].*\(3, 0\)"):
      transforms.logical_and(jnp.zeros((3, 0)))


class SumMinSoftMinTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values(self):
    r = jnp.array([[1.0, -2.0, 3.0]])
    np.testing.assert_allclose(self.variant(transforms.weighted_sum)(r), [2.0])
    np.testing.assert_allclose(
        self.variant(transforms.weighted_sum)(r, jnp.array([1.0, 0.5, 0.0])), [0.0])
    np.testing.assert_allclose(self.variant(transforms.min_reward)(r), [-2.0])
    expected = -2.0 * np.log(np.exp(-0.5) + np.exp(1.0) + np.exp(-1.5))
    np.testing.assert_allclose(self.variant(lambda r: transforms.soft_min(r, 2.0))(r),
                               [expected], rtol=1e-6)

  def test_soft_min_tends_to_min(self):
    gaps = [float(jnp.max(transforms.min_reward(REWARDS) - transforms.soft_min(REWARDS, tau)))
            for tau in (1.0, 0.1, 0.01, 0.001)]
    assert all(g >= -1e-6 for g in gaps)  # soft-min <= min
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # shrinking ...
    assert gaps[-1] < 1e-3 * np.log(3) + 1e-6  # ... within tau log K of the min

  @hypothesis.settings(max_examples=10, deadline=None)
  @hypothesis.given(st.lists(st.floats(-1e4, 1e4, width=32), min_size=3, max_size=3),
                    st.floats(1e-3, 1e3))
  def test_soft_min_bounds_at_any_scale(self, r, tau):
    r = jnp.asarray([r], jnp.float32)
    out = float(_soft_min_jit(r, jnp.float32(tau))[0])
    lo = float(jnp.min(r)) - tau * np.log(3)
    assert np.isfinite(out)
    assert lo - 1e-3 * max(1.0, abs(lo)) <= out <= float(jnp.min(r)) + 1e-3 * max(
        1.0, abs(lo))

  def test_check_grads(self):
    fn = jax.jit(lambda r: transforms.soft_min(r, 0.7) + transforms.logical_and(r, REFS)
                 + transforms.weighted_sum(r, jnp.array([1.0, 2.0, -1.0])))
    jtu.check_grads(fn, (REWARDS,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)

  def test_errors(self):
    for bad in (0.0, -1.0, float("inf")):
      with pytest.raises(ValueError, match="`temperature`.*> 0"):
        transforms.soft_min(REWARDS, bad)
    with pytest.raises(ValueError, match=r"`weights`.*\[B\] = \(3,\).*\(2,\)"):
      transforms.weighted_sum(REWARDS, jnp.ones(2))
    with pytest.raises(ValueError, match=r"`mask`.*\(6,\).*\(6, 3\)"):
      transforms.min_reward(REWARDS, mask=jnp.ones((6, 3)))


@jax.jit
def _soft_min_jit(r, tau):
  return transforms.soft_min(r, tau)


class DirectionalTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_dpa_sanity_value(self):
    fn = self.variant(transforms.directional_reward)
    out = fn(jnp.array([[70.0, 40.0]]), transforms.dpa_direction(-15.0))
    np.testing.assert_allclose(out, [57.26], atol=5e-3)

  def test_direction_is_normalised(self):
    r = jnp.array([[70.0, 40.0]])
    np.testing.assert_allclose(transforms.directional_reward(r, jnp.array([3.0, 4.0])),
                               [(70 * 3 + 40 * 4) / 5.0], rtol=1e-6)
    with pytest.raises(ValueError, match="`direction` must be a non-zero vector"):
      transforms.directional_reward(r, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`direction`.*\(2,\).*\(3,\)"):
      transforms.directional_reward(r, jnp.ones(3))
    # Traced under jit the zero check cannot run: the result is 0, not NaN.
    out = jax.jit(transforms.directional_reward)(r, jnp.zeros(2))
    np.testing.assert_array_equal(out, [0.0])


class LagrangianTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_spec_sanity_at_zero_multipliers(self):
    a_task = jnp.asarray(_RNG.normal(size=5), jnp.float32)
    a_con = jnp.asarray(_RNG.normal(size=(5, 2)), jnp.float32)
    out = self.variant(lambda t, c: transforms.lagrangian_mixing(t, c, transforms.lagrange_init(
        2)))(a_task, a_con)
    np.testing.assert_allclose(out, a_task + 0.5 * a_con[:, 0] + 0.5 * a_con[:, 1], rtol=1e-6)
    # Equality constraints at l = 0: tanh(0) = 0, so A = N A_task.
    out = transforms.lagrangian_mixing(a_task, a_con, transforms.lagrange_init(2),
                                       constraint_type="equality")
    np.testing.assert_allclose(out, 2 * a_task, rtol=1e-6)

  def test_general_weights_and_token_level_shapes(self):
    state = transforms.LagrangeState(jnp.array([1.0, -2.0]))
    g = 1 / (1 + np.exp(-np.array([1.0, -2.0])))
    a_task = jnp.asarray(_RNG.normal(size=(3, 4)), jnp.float32)  # [B, T]
    a_con = jnp.asarray(_RNG.normal(size=(3, 4, 2)), jnp.float32)
    out = transforms.lagrangian_mixing(a_task, a_con, state)
    np.testing.assert_allclose(out, (2 - g.sum()) * a_task + (a_con * g).sum(-1), rtol=1e-5)

  def test_update_rule(self):
    state = transforms.LagrangeState(jnp.array([0.0, 1.0]))
    values, thresholds = jnp.array([0.2, 0.9]), jnp.array([1.0, 0.5])
    new = transforms.lagrange_update(state, values, thresholds, learning_rate=0.5)
    s = 1 / (1 + np.exp(-np.array([0.0, 1.0])))
    expected = np.array([0.0, 1.0]) - 0.5 * s * (1 - s) * np.array([-0.8, 0.4])
    np.testing.assert_allclose(new.multipliers, expected, rtol=1e-6)
    # Violated (J < theta) raises the multiplier, satisfied lowers it.
    assert new.multipliers[0] > 0 and new.multipliers[1] < 1
    eq = transforms.lagrange_update(state, values, thresholds, learning_rate=0.5,
                                    constraint_type="equality")
    t = np.tanh(np.array([0.0, 1.0]))
    np.testing.assert_allclose(eq.multipliers,
                               np.array([0.0, 1.0]) - 0.5 * (1 - t ** 2) * np.array([-0.8, 0.4]),
                               rtol=1e-6)

  def test_dual_descent_meets_an_inequality_constraint(self):
    # Policy stand-in: J rises with the weight on the constraint. Descent raises l while J < theta.
    state = transforms.lagrange_init(1)
    update = jax.jit(lambda s, j: transforms.lagrange_update(s, j, jnp.array([0.8]),
                                                             learning_rate=5.0))
    for _ in range(200):
      j = transforms.lagrange_weights(state)  # J = sigmoid(l)
      state = update(state, j)
    np.testing.assert_allclose(transforms.lagrange_weights(state), [0.8], atol=2e-2)

  def test_errors(self):
    state = transforms.lagrange_init(2)
    with pytest.raises(ValueError, match=r"`constraint_advantages`.*\(3, 2\).*\(3, 3\)"):
      transforms.lagrangian_mixing(jnp.zeros(3), jnp.zeros((3, 3)), state)
    with pytest.raises(ValueError, match="`constraint_type`"):
      transforms.lagrangian_mixing(jnp.zeros(3), jnp.zeros((3, 2)), state,
                                   constraint_type="soft")
    with pytest.raises(ValueError, match=r"`constraint_values`.*\(2,\).*\(3,\)"):
      transforms.lagrange_update(state, jnp.zeros(3), 0.0, learning_rate=0.1)
    with pytest.raises(ValueError, match="`learning_rate`.*-0.1"):
      transforms.lagrange_update(state, jnp.zeros(2), 0.0, learning_rate=-0.1)
    with pytest.raises(ValueError, match="`num_constraints`.*>= 1"):
      transforms.lagrange_init(0)


class LagrangianMixerTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values_mix_with_current_multipliers_then_step(self):
    mixer = transforms.lagrangian_mixer(2, thresholds=jnp.array([1.0, 0.5]), learning_rate=0.5)
    update = self.variant(mixer.update)
    state = mixer.init()
    np.testing.assert_array_equal(state.multipliers, [0.0, 0.0])
    a_task, a_con = jnp.array([1.0, -2.0]), jnp.array([[2.0, 4.0], [0.0, 2.0]])
    # l = 0: A = (2 - 1) A_task + 0.5 A_1 + 0.5 A_2 = [4, -1]. Then J = (0.2, 0.9): the first
    # constraint is violated by 0.8 (l_1 <- 0 + 0.5 * 0.25 * 0.8 = 0.1), the second met by 0.4
    # (l_2 <- 0 - 0.5 * 0.25 * 0.4 = -0.05).
    mixed, state = update(state, a_task, a_con, jnp.array([0.2, 0.9]))
    np.testing.assert_allclose(mixed, [4.0, -1.0], rtol=1e-6)
    np.testing.assert_allclose(state.multipliers, [0.1, -0.05], rtol=1e-6)
    # The next batch is mixed with the new multipliers.
    g = 1 / (1 + np.exp(-np.array([0.1, -0.05])))
    mixed, _ = update(state, a_task, a_con, jnp.array([0.2, 0.9]))
    np.testing.assert_allclose(mixed, (2 - g.sum()) * np.array([1.0, -2.0])
                               + (np.array([[2.0, 4.0], [0.0, 2.0]]) * g).sum(-1), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_equals_the_pure_functions_step_by_step(self):
    for constraint_type in transforms.CONSTRAINT_TYPES:
      mixer = transforms.lagrangian_mixer(3, thresholds=0.3, learning_rate=2.0,
                                          constraint_type=constraint_type, initial_value=0.5)
      update = self.variant(lambda s, t, c, j, m, mixer=mixer: mixer.update(s, t, c, j, mask=m))
      state = mixer.init()
      pure = transforms.lagrange_init(3, initial_value=0.5)
      for step in range(4):
        a_task = jnp.asarray(_RNG.normal(size=(4, 5)), jnp.float32)  # token level [B, T]
        a_con = jnp.asarray(_RNG.normal(size=(4, 5, 3)), jnp.float32)
        mask = jnp.asarray(_RNG.random(size=(4, 5)) < 0.7)
        values = jnp.asarray(_RNG.random(size=3), jnp.float32)
        mixed, state = update(state, a_task, a_con, values, mask)
        expected = transforms.lagrangian_mixing(a_task, a_con, pure, mask=mask,
                                                constraint_type=constraint_type)
        pure = transforms.lagrange_update(pure, values, 0.3, learning_rate=2.0,
                                          constraint_type=constraint_type)
        np.testing.assert_allclose(mixed, expected, rtol=1e-6, atol=1e-6, err_msg=f"{step}")
        np.testing.assert_allclose(state.multipliers, pure.multipliers, rtol=1e-6)
      leaves, treedef = jax.tree.flatten(state)
      rebuilt = jax.tree.unflatten(treedef, leaves)
      assert isinstance(rebuilt, transforms.LagrangeState) and len(leaves) == 1
      np.testing.assert_array_equal(rebuilt.multipliers, state.multipliers)

  def test_padding_changes_nothing(self):
    mixer = transforms.lagrangian_mixer(1, thresholds=jnp.array([1.0]), learning_rate=1.0)
    mixed, state = mixer.update(mixer.init(), jnp.array([1.0]), jnp.array([[3.0]]),
                                jnp.array([0.5]))
    padded, padded_state = mixer.update(
        mixer.init(), jnp.array([1.0, jnp.nan]), jnp.array([[3.0], [jnp.inf]]), jnp.array([0.5]),
        mask=jnp.array([True, False]))
    np.testing.assert_array_equal(padded, [2.0, 0.0])
    np.testing.assert_array_equal(mixed, [2.0])
    np.testing.assert_array_equal(padded_state.multipliers, state.multipliers)

  def test_errors(self):
    with pytest.raises(ValueError, match="`num_constraints`.*>= 1"):
      transforms.lagrangian_mixer(0, thresholds=0.0, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"`thresholds`.*\(2,\).*\(3,\)"):
      transforms.lagrangian_mixer(2, thresholds=jnp.zeros(3), learning_rate=0.1)
    with pytest.raises(ValueError, match="`learning_rate`.*-0.1"):
      transforms.lagrangian_mixer(2, thresholds=0.0, learning_rate=-0.1)
    with pytest.raises(ValueError, match="`constraint_type`"):
      transforms.lagrangian_mixer(2, thresholds=0.0, learning_rate=0.1, constraint_type="soft")
    mixer = transforms.lagrangian_mixer(2, thresholds=0.0, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"`constraint_values`.*\(2,\).*\(3,\)"):
      mixer.update(mixer.init(), jnp.zeros(3), jnp.zeros((3, 2)), jnp.zeros(3))


class ReusedCombinationsTest(chex.TestCase):

  def test_helpsteer2_and_ensemble_are_the_shared_implementations(self):
    attrs = jnp.array([[3.0, 3.0, 4.0, 2.0, 2.0]])
    np.testing.assert_allclose(transforms.helpsteer2_attribute_score(attrs), [5.24], rtol=1e-6)
    np.testing.assert_allclose(transforms.get_combination("helpsteer2")(attrs), [5.24],
                               rtol=1e-6)
    members = jnp.asarray(_RNG.normal(size=(4, 6)), jnp.float32)  # [M, B]
    for method in transforms.ENSEMBLE_AGGREGATIONS:
      np.testing.assert_allclose(
          transforms.get_combination("ensemble", method=method)(members.T),
          transforms.aggregate_ensemble_rewards(members, method=method), rtol=1e-6)
