"""Tests for rmjax.losses.advantages: the advantage estimators of issue 5."""

import math

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax.losses import advantages as adv
from rmjax.losses.normalization import batch_whiten
from rmjax.losses.normalization import group_normalize
from rmjax.losses.normalization import normalize_then_sum

_RNG = np.random.default_rng(0)
REWARDS = _RNG.normal(size=(3, 4)).astype(np.float32)
BINARY = (_RNG.uniform(size=(6, 4)) < 0.5).astype(np.float32)
MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], bool)


def _pad_groups(rewards, mask, extra=2, fill=np.nan):
  """Appends `extra` masked samples (junk rewards) to every group."""
  b = rewards.shape[0]
  padded = np.concatenate([rewards, np.full((b, extra) + rewards.shape[2:], fill, np.float32)], 1)
  padded_mask = np.concatenate([mask, np.zeros((b, extra), bool)], 1)
  return jnp.asarray(padded), jnp.asarray(padded_mask)


GROUP_ESTIMATORS = {
    "grpo": adv.grpo_advantages,
    "grpo_batch": lambda r, mask: adv.grpo_advantages(r, mask=mask, scale_rewards="batch"),
    "dr_grpo": adv.dr_grpo_advantages,
    "rloo": adv.rloo_advantages,
    "bnpo": adv.bnpo_advantages,
    "dler": adv.dler_advantages,
    "opo": lambda r, mask: adv.opo_advantages(r, jnp.ones(r.shape), mask=mask),
    "remax": lambda r, mask: adv.remax_advantages(r, jnp.full(r.shape[0], 0.3), mask=mask),
    "reinforce": lambda r, mask: adv.reinforce_advantages(r, 0.3, mask=mask),
}


class GroupEstimatorsCommonTest(chex.TestCase):
  """Masks, padding, dtypes and stability, for every [B, G] estimator."""

  @parameterized.named_parameters(*[(name, name) for name in GROUP_ESTIMATORS])
  def test_padding_samples_change_nothing(self, name):
    fn = GROUP_ESTIMATORS[name]
    rewards = BINARY[:3] if name == "bnpo" else REWARDS
    ref = fn(jnp.asarray(rewards), mask=jnp.asarray(MASK))
    self.assertEqual(ref.dtype, jnp.float32)
    self.assertEqual(ref.shape, rewards.shape)
    padded, padded_mask = _pad_groups(rewards, MASK)
    out = fn(padded, mask=padded_mask)
    np.testing.assert_allclose(out[:, :4], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[:, 4:], 0.0)
    np.testing.assert_array_equal(np.asarray(ref)[~MASK], 0.0)
    grad = jax.grad(lambda r: jnp.sum(fn(r, mask=padded_mask) * jnp.arange(1.0, 7.0)))(padded)
    self.assertTrue(np.all(np.isfinite(grad)), name)
    np.testing.assert_array_equal(grad[:, 4:], 0.0)

  @parameterized.named_parameters(*[(name, name) for name in GROUP_ESTIMATORS])
  def test_bfloat16_and_large_rewards(self, name):
    fn = GROUP_ESTIMATORS[name]
    out = fn(jnp.asarray(REWARDS, jnp.bfloat16), mask=None)
    self.assertEqual(out.dtype, jnp.float32)
    big = fn(jnp.asarray(REWARDS) * 1e4, mask=None) if name != "bnpo" else fn(
        jnp.asarray(BINARY), mask=None)
    self.assertTrue(np.all(np.isfinite(big)), name)


class SimpleEstimatorsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_grpo_matches_group_normalize_and_trl_batch_scaling(self):
    fn = self.variant(lambda r: (adv.grpo_advantages(r), adv.grpo_advantages(
        r, scale_rewards="batch", eps=1e-4), adv.grpo_advantages(r, scale_rewards="none")))
    group, batch, none = fn(REWARDS)
    np.testing.assert_allclose(group, group_normalize(REWARDS), rtol=1e-6)
    r = REWARDS.astype(np.float64)
    expected = (r - r.mean(1, keepdims=True)) / (r.std(ddof=1) + 1e-4)
    np.testing.assert_allclose(batch, expected, rtol=1e-5)
    np.testing.assert_allclose(none, adv.dr_grpo_advantages(REWARDS))
    np.testing.assert_allclose(none, r - r.mean(1, keepdims=True), rtol=1e-5, atol=1e-6)

  def test_rloo_identity_and_leave_one_out(self):
    g = REWARDS.shape[1]
    out = adv.rloo_advantages(REWARDS)
    r = REWARDS.astype(np.float64)
    np.testing.assert_allclose(out, g / (g - 1) * (r - r.mean(1, keepdims=True)), rtol=1e-5,
                               atol=1e-6)
    loo = np.array([[r[b, i] - np.delete(r[b], i).mean() for i in range(g)] for b in range(3)])
    np.testing.assert_allclose(out, loo, rtol=1e-5, atol=1e-6)
    # With masks: n_b valid samples; a group with one valid sample has no baseline -> 0.
    out = adv.rloo_advantages(REWARDS, mask=MASK)
    row = r[1, :3]
    np.testing.assert_allclose(out[1, :3], 1.5 * (row - row.mean()), rtol=1e-5)
    single = adv.rloo_advantages(jnp.array([[4.0, 1.0]]), mask=jnp.array([[1, 0]]))
    np.testing.assert_array_equal(single, 0.0)

  def test_reinforce_remax_opo_hand_values(self):
    np.testing.assert_allclose(adv.reinforce_advantages(jnp.array([[1.0, 2.0]]),
                                                        jnp.array([[0.5, 0.5]])), [[0.5, 1.5]])
    np.testing.assert_allclose(adv.remax_advantages(jnp.array([[1.0], [0.0]]),
                                                    jnp.array([0.5, -1.0])), [[0.5], [1.0]])
    # OPO: baseline (1 * 2 + 0 * 6) / 8 = 0.25; the masked long sample is ignored.
    out = adv.opo_advantages(jnp.array([[1.0, 0.0, 5.0]]), jnp.array([[2, 6, 100]]),
                             mask=jnp.array([[1, 1, 0]]))
    np.testing.assert_allclose(out, [[0.75, -0.25, 0.0]])
    # Equal lengths: OPO is the group-mean baseline.
    np.testing.assert_allclose(adv.opo_advantages(REWARDS, jnp.full(REWARDS.shape, 7)),
                               adv.dr_grpo_advantages(REWARDS), rtol=1e-5, atol=1e-6)

  @parameterized.parameters("zero", "raw_reward")
  def test_single_sample_groups(self, single_sample):
    # Group 0 has one valid sample, group 1 three (unaffected by the option).
    rewards = jnp.array([[4.0, 1.0, 9.0], [1.0, 2.0, 6.0]])
    mask = jnp.array([[1, 0, 0], [1, 1, 1]])
    lengths = jnp.array([[5, 3, 2], [1, 1, 2]])
    lone = 4.0 if single_sample == "raw_reward" else 0.0
    rloo = adv.rloo_advantages(rewards, mask=mask, single_sample=single_sample)
    # RLOO of group 1: 1 - 4, 2 - 3.5, 6 - 1.5.
    np.testing.assert_allclose(rloo, [[lone, 0.0, 0.0], [-3.0, -1.5, 4.5]])
    opo = adv.opo_advantages(rewards, lengths, mask=mask, single_sample=single_sample)
    # OPO baseline of group 1: (1 + 2 + 12) / 4 = 3.75.
    np.testing.assert_allclose(opo, [[lone, 0.0, 0.0], [-2.75, -1.75, 2.25]])
    # A group of size G = 1.
    np.testing.assert_allclose(
        adv.rloo_advantages(jnp.array([[3.0]]), single_sample=single_sample),
        [[3.0 if single_sample == "raw_reward" else 0.0]])

  def test_single_sample_errors(self):
    with pytest.raises(ValueError, match=r"`single_sample` must be one of .*got 'verl'"):
      adv.rloo_advantages(REWARDS, single_sample="verl")
    with pytest.raises(ValueError, match=r"`single_sample` must be one of .*got None"):
      adv.opo_advantages(REWARDS, jnp.ones(REWARDS.shape), single_sample=None)

  def test_dler_matches_numpy(self):
    r = REWARDS.astype(np.float64)
    centred = r - r.mean(1, keepdims=True)
    expected = (centred - centred.mean()) / (centred.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(adv.dler_advantages(REWARDS), expected, rtol=1e-5, atol=1e-6)

  def test_gdpo_is_normalize_then_sum(self):
    r = _RNG.normal(size=(2, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(adv.gdpo_advantages(r), normalize_then_sum(r))

  def test_dynamic_sampling_mask(self):
    r = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 5.0, 5.0], [2.0, 9.0, 2.0]])
    m = jnp.array([[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(adv.dynamic_sampling_mask(r), [False, True, True, True])
    np.testing.assert_array_equal(adv.dynamic_sampling_mask(r, mask=m), [False, True, False, False])

  def test_broadcast_to_tokens(self):
    out = adv.broadcast_to_tokens(jnp.array([1.0, -2.0]), jnp.array([[1, 1, 0], [0, 1, 1]]))
    np.testing.assert_array_equal(out, [[1.0, 1.0, 0.0], [0.0, -2.0, -2.0]])
    with pytest.raises(ValueError, match=r"`mask` must have shape \[N, T\] with N = 2"):
      adv.broadcast_to_tokens(jnp.ones(2), jnp.ones((3, 4)))

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`rewards` must have shape \[B, G\]; got shape \(4,\)"):
      adv.rloo_advantages(jnp.ones(4))
    with pytest.raises(ValueError, match=r"G >= 1 samples per group.*\(3, 0\).*empty groups"):
      adv.rloo_advantages(jnp.ones((3, 0)))
    with pytest.raises(ValueError, match=r"`scale_rewards` must be one of .*'group'.*got 'prompt'"):
      adv.grpo_advantages(REWARDS, scale_rewards="prompt")
    with pytest.raises(ValueError, match=r"`greedy_rewards` must have shape \[B\] = \(3,\)"):
      adv.remax_advantages(REWARDS, jnp.ones(4))
    with pytest.raises(ValueError, match="`lengths` must have the same shape as `rewards`"):
      adv.opo_advantages(REWARDS, jnp.ones((3, 5)))
    with pytest.raises(ValueError, match=r"`baseline` must be a scalar or have the same shape"):
      adv.reinforce_advantages(REWARDS, jnp.ones(3))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(3, 4\)"):
      adv.dr_grpo_advantages(REWARDS, mask=jnp.ones((4, 3)))


class ReinforcePlusPlusTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values_with_kl_and_discount(self):
    scores = jnp.array([1.0, 0.0])
    mask = jnp.array([[1, 1, 1], [1, 1, 0]], bool)
    kl = jnp.full((2, 3), 0.5)
    fn = self.variant(lambda s, m, k: adv.reinforce_plus_plus_advantages(
        s, m, kl=k, beta=0.2, gamma=0.5))
    advantages, returns = fn(scores, mask, kl)
    # Token rewards: row 0 (-0.1, -0.1, 0.9); row 1 (-0.1, -0.1 + 0, pad).
    # Returns with gamma 0.5: row 0: G2 = 0.9, G1 = -0.1 + 0.45 = 0.35, G0 = -0.1 + 0.175 = 0.075;
    # row 1: G1 = -0.1, G0 = -0.1 - 0.05 = -0.15.
    np.testing.assert_allclose(returns, [[0.075, 0.35, 0.9], [-0.15, -0.1, 0.0]], rtol=1e-5)
    valid = np.array([0.075, 0.35, 0.9, -0.15, -0.1])
    expected = (valid - valid.mean()) / (valid.std(ddof=1) + 1e-8)
    np.testing.assert_allclose(np.asarray(advantages)[np.asarray(mask)], expected, rtol=1e-5)
    self.assertEqual(float(advantages[1, 2]), 0.0)

  def test_holes_are_skipped_and_padding_changes_nothing(self):
    scores = jnp.array([2.0, 1.0])
    mask = jnp.array([[1, 0, 1, 1], [1, 1, 0, 0]], bool)
    _, returns = adv.reinforce_plus_plus_advantages(scores, mask, gamma=0.5)
    # Row 0: reward 2 at t=3; t=2 -> 1; the hole at t=1 is skipped, so t=0 -> 0.5.
    np.testing.assert_allclose(returns, [[0.5, 0.0, 1.0, 2.0], [0.5, 1.0, 0.0, 0.0]])
    kl = jnp.asarray(_RNG.uniform(size=(2, 4)).astype(np.float32))
    ref = adv.reinforce_plus_plus_advantages(scores, mask, kl=kl, beta=0.1)
    padded_kl = jnp.concatenate([kl, jnp.full((2, 3), jnp.nan)], axis=1)
    padded_mask = jnp.concatenate([mask, jnp.zeros((2, 3), bool)], axis=1)
    out = adv.reinforce_plus_plus_advantages(scores, padded_mask, kl=padded_kl, beta=0.1)
    for a, b in zip(out, ref):
      np.testing.assert_allclose(a[:, :4], b, rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(a[:, 4:], 0.0)

  def test_baseline_variant_matches_numpy(self):
    rewards = _RNG.normal(size=6).astype(np.float32)
    mask = np.ones((6, 3), bool)
    mask[1, 2:] = False
    mask[4, 1:] = False
    out = adv.reinforce_plus_plus_baseline_advantages(rewards, mask, group_size=3)
    r = rewards.reshape(2, 3).astype(np.float64)
    centred = (r - r.mean(1, keepdims=True)).reshape(-1)
    tokens = np.broadcast_to(centred[:, None], mask.shape)[mask]  # token-weighted statistics
    expected = (centred[:, None] - tokens.mean()) / (tokens.std(ddof=1) + 1e-8)
    np.testing.assert_allclose(np.asarray(out)[mask], np.broadcast_to(expected, mask.shape)[mask],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out)[~mask], 0.0)

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`group_size` \(4\) must divide N.*got N = 6"):
      adv.reinforce_plus_plus_baseline_advantages(jnp.ones(6), jnp.ones((6, 2)), group_size=4)
    with pytest.raises(ValueError, match=r"`mask` must have shape \[N, T\] with N = 6"):
      adv.reinforce_plus_plus_baseline_advantages(jnp.ones(6), jnp.ones((5, 2)), group_size=3)
    with pytest.raises(ValueError, match=r"`kl` must have the shape of `mask`"):
      adv.reinforce_plus_plus_advantages(jnp.ones(2), jnp.ones((2, 3)), kl=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"`gamma` must be a Python float in \[0, 1\]; got 1.5"):
      adv.reinforce_plus_plus_advantages(jnp.ones(2), jnp.ones((2, 3)), gamma=1.5)


class GAETest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_lambda_gamma_one_zero_values_is_reward_to_go(self):
    rewards = _RNG.normal(size=(2, 5)).astype(np.float32)
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    a, r = self.variant(lambda x, v, m: adv.gae(x, v, m))(rewards, np.zeros((2, 5)), mask)
    to_go = np.cumsum((rewards * mask)[:, ::-1], axis=1)[:, ::-1] * mask
    np.testing.assert_allclose(a, to_go, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, to_go, rtol=1e-5, atol=1e-6)

  def test_matches_numpy_loop(self):
    rewards = _RNG.normal(size=(2, 6)).astype(np.float32)
    values = _RNG.normal(size=(2, 6)).astype(np.float32)
    mask = np.ones((2, 6), bool)
    mask[0, 4:] = False
    gamma, lam = 0.9, 0.8
    expected = np.zeros((2, 6))
    for n in range(2):
      last, next_value = 0.0, 0.0
      for t in reversed(range(6)):
        if not mask[n, t]:
          continue
        delta = rewards[n, t] + gamma * next_value - values[n, t]
        last = delta + gamma * lam * last
        expected[n, t], next_value = last, values[n, t]
    a, r = adv.gae(rewards, values, mask, gamma=gamma, lam=lam)
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, (expected + values) * mask, rtol=1e-5, atol=1e-6)
    # Junk in the padding changes nothing.
    junk_values = np.where(mask, values, np.nan).astype(np.float32)
    np.testing.assert_allclose(adv.gae(rewards, junk_values, mask, gamma=gamma, lam=lam)[0], a)

  @chex.variants(with_jit=True, without_jit=True)
  def test_truncated_sequence_with_bootstrap_value(self):
    # gamma 0.9, lam 0.8 (gamma lam = 0.72), V after the last token = 3:
    # delta = (1 + 0.9 - 0.5, 0 + 1.35 - 1, 2 + 2.7 - 1.5) = (1.4, 0.35, 3.2)
    # A_2 = 3.2, A_1 = 0.35 + 0.72 * 3.2 = 2.654, A_0 = 1.4 + 0.72 * 2.654 = 3.31088
    fn = self.variant(lambda r, v, m, b: adv.gae(r, v, m, gamma=0.9, lam=0.8, bootstrap_value=b))
    a, ret = fn(jnp.array([[1.0, 0.0, 2.0]]), jnp.array([[0.5, 1.0, 1.5]]), jnp.ones((1, 3)),
                jnp.array([3.0]))
    np.testing.assert_allclose(a, [[3.31088, 2.654, 3.2]], rtol=1e-6)
    np.testing.assert_allclose(ret, [[3.81088, 3.654, 4.7]], rtol=1e-6)
    # bootstrap 0 is the default.
    default = adv.gae(jnp.array([[1.0, 0.0, 2.0]]), jnp.array([[0.5, 1.0, 1.5]]), jnp.ones((1, 3)),
                      gamma=0.9, lam=0.8)
    zero = adv.gae(jnp.array([[1.0, 0.0, 2.0]]), jnp.array([[0.5, 1.0, 1.5]]), jnp.ones((1, 3)),
                   gamma=0.9, lam=0.8, bootstrap_value=jnp.zeros(1))
    np.testing.assert_array_equal(default[0], zero[0])

  @chex.variants(with_jit=True, without_jit=True)
  def test_per_step_discounts_zero_ends_the_episode(self):
    # V = 1, lam = 1, d = (0.5, 0, 0.5, 0.5): the episode ends after token 1.
    # A_3 = 4 - 1 = 3; A_2 = 3 + 0.5 - 1 + 0.5 * 3 = 4; A_1 = 2 - 1 = 1; A_0 = 0.5 + 0.5 * 1 = 1
    fn = self.variant(lambda r, v, m, d: adv.gae(r, v, m, discounts=d))
    rewards, values = jnp.array([[1.0, 2.0, 3.0, 4.0]]), jnp.ones((1, 4))
    a, _ = fn(rewards, values, jnp.ones((1, 4)), jnp.array([[0.5, 0.0, 0.5, 0.5]]))
    np.testing.assert_allclose(a, [[1.0, 1.0, 4.0, 3.0]])
    # The two episodes are independent: the first equals GAE on its tokens alone.
    first, _ = adv.gae(rewards[:, :2], values[:, :2], jnp.ones((1, 2)), gamma=0.5)
    np.testing.assert_allclose(a[:, :2], first)
    # Constant discounts equal gamma.
    np.testing.assert_array_equal(
        adv.gae(rewards, values, jnp.ones((1, 4)), gamma=0.7, lam=0.9)[0],
        adv.gae(rewards, values, jnp.ones((1, 4)), lam=0.9, discounts=jnp.full((1, 4), 0.7))[0])

  def test_discounts_and_bootstrap_match_python_loop_and_ignore_padding(self):
    n, t = 3, 7
    rewards = _RNG.normal(size=(n, t)).astype(np.float32)
    values = _RNG.normal(size=(n, t)).astype(np.float32)
    discounts = _RNG.uniform(size=(n, t)).astype(np.float32)
    discounts[0, 2] = 0.0
    bootstrap = _RNG.normal(size=n).astype(np.float32)
    mask = np.ones((n, t), bool)
    mask[0, 5:] = False
    mask[1, 2] = False  # a hole in the middle
    mask[2, :] = False
    lam = 0.8
    expected = np.zeros((n, t))
    for row in range(n):
      advantage, next_value = 0.0, float(bootstrap[row])
      for step in reversed(range(t)):
        if not mask[row, step]:
          continue
        d = float(discounts[row, step])
        delta = rewards[row, step] + d * next_value - values[row, step]
        advantage = delta + d * lam * advantage
        expected[row, step], next_value = advantage, values[row, step]
    a, r = adv.gae(rewards, values, mask, lam=lam, discounts=discounts, bootstrap_value=bootstrap)
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, (expected + values) * mask, rtol=1e-5, atol=1e-6)
    # Junk (NaN) in the padding of every input changes nothing, value or gradient.
    junk = lambda x: np.where(mask, x, np.nan).astype(np.float32)
    a_junk, _ = adv.gae(junk(rewards), junk(values), mask, lam=lam, discounts=junk(discounts),
                        bootstrap_value=bootstrap)
    np.testing.assert_array_equal(a_junk, a)
    grad = jax.grad(lambda v: jnp.sum(adv.gae(
        rewards, v, mask, lam=lam, discounts=junk(discounts), bootstrap_value=bootstrap)[0]))
    self.assertTrue(np.all(np.isfinite(grad(jnp.asarray(junk(values))))))
    # Extra padded tokens at the end change nothing either.
    pad = lambda x, fill: np.concatenate([x, np.full((n, 2), fill, x.dtype)], 1)
    a_pad, _ = adv.gae(pad(rewards, np.nan), pad(values, np.nan), pad(mask, False), lam=lam,
                       discounts=pad(discounts, np.nan), bootstrap_value=bootstrap)
    np.testing.assert_array_equal(a_pad[:, :t], a)

  def test_errors(self):
    with pytest.raises(ValueError, match="`values` must have the same shape as `rewards`"):
      adv.gae(jnp.ones((2, 3)), jnp.ones((2, 4)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"`lam` must be a Python float in \[0, 1\]"):
      adv.gae(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)), lam=-0.1)
    with pytest.raises(ValueError, match="`discounts` must have the same shape as `rewards`"):
      adv.gae(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)), discounts=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"`bootstrap_value` must have shape \[B\] = \(2,\)"):
      adv.gae(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)), bootstrap_value=jnp.ones(3))


class BNPOTest(chex.TestCase):

  def test_spec_worked_example(self):
    # Four prompts, G = 4 binary rewards, success rates p = (0.25, 0.5, 0.75, 0.5).
    # mu = 0.5; v = var(p, ddof=1) = (0.0625 + 0 + 0.0625 + 0) / 3 = 1/24;
    # k = mu (1 - mu) / v - 1 = 0.25 * 24 - 1 = 5; a = b = 5 * 0.5 = 2.5;
    # alpha = beta = 1 + 2.5 / 3 = 11/6 = 1.8333.
    # At p = 0.25: p^(5/6) (1 - p)^(5/6) = 0.1875^(5/6) = 0.24782; B(11/6, 11/6) = 0.22054;
    # BetaPDF = 1.12380, 1 / BetaPDF = 0.88984; A(correct) = 0.75 * 0.88984 = +0.6674,
    # A(wrong) = -0.25 * 0.88984 = -0.2225 (the spec's +0.667 / -0.222, confirmed).
    r = jnp.array([[1.0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])
    alpha, beta = adv.bnpo_beta_parameters(jnp.array([0.25, 0.5, 0.75, 0.5]))
    np.testing.assert_allclose([alpha, beta], [11 / 6, 11 / 6], rtol=1e-5)
    out = adv.bnpo_advantages(r)
    np.testing.assert_allclose(out[0], [0.6674, -0.2225, -0.2225, -0.2225], atol=1e-4)
    inv_pdf = math.exp(math.lgamma(11 / 6) * 2 - math.lgamma(11 / 3)) / (0.1875 ** (5 / 6))
    np.testing.assert_allclose(out[0, 0], 0.75 * inv_pdf, rtol=1e-5)
    # p = 0.5 is the mode: BetaPDF(0.5) = 0.25^(5/6) / B = 1.4172, so A = +-0.5 / 1.4172.
    np.testing.assert_allclose(out[1, 0], 0.5 * math.exp(math.lgamma(11 / 6) * 2 - math.lgamma(
        11 / 3)) / 0.25 ** (5 / 6), rtol=1e-5)

  def test_alpha_beta_one_is_reinforce_with_group_mean_baseline(self):
    out = adv.bnpo_advantages(BINARY, alpha=1.0, beta=1.0)
    np.testing.assert_allclose(out, adv.dr_grpo_advantages(BINARY), rtol=1e-6, atol=1e-7)

  def test_alpha_beta_three_halves_is_proportional_to_grpo(self):
    # BetaPDF(p; 3/2, 3/2) = sqrt(p (1 - p)) / B(3/2, 3/2), B(3/2, 3/2) = pi / 8, and for binary
    # rewards sqrt(p (1 - p)) is the population std of the group: A = (pi / 8) A_GRPO(ddof=0).
    out = adv.bnpo_advantages(BINARY, alpha=1.5, beta=1.5)
    grpo = adv.grpo_advantages(BINARY, ddof=0, eps=0.0)
    np.testing.assert_allclose(out, math.pi / 8 * np.asarray(grpo), rtol=1e-5, atol=1e-6)
    self.assertGreater(np.abs(np.asarray(grpo)).sum(), 1.0)  # not all-constant groups

  def test_beta_parameters_match_numpy_and_fallbacks(self):
    p = _RNG.uniform(0.2, 0.8, size=8).astype(np.float32)
    mu, v = p.mean(), p.var(ddof=1)
    k = mu * (1 - mu) / v - 1
    alpha, beta = adv.bnpo_beta_parameters(p)
    np.testing.assert_allclose([alpha, beta], [max(1 + k * mu / 3, 1), max(1 + k * (1 - mu) / 3,
                                                                           1)], rtol=1e-4)
    np.testing.assert_array_equal(adv.bnpo_beta_parameters(jnp.array([0.3])), [1.0, 1.0])
    np.testing.assert_array_equal(adv.bnpo_beta_parameters(jnp.array([0.3, 0.3])), [1.0, 1.0])
    masked = adv.bnpo_beta_parameters(jnp.array([0.25, 0.5, 0.75, 0.5, 0.9]),
                                      mask=jnp.array([1, 1, 1, 1, 0]))
    np.testing.assert_allclose(masked, [11 / 6, 11 / 6], rtol=1e-5)

  def test_degenerate_groups_and_reward_range(self):
    # All-correct / all-wrong groups (p in {0, 1}) and a single-sample group give 0, finitely.
    r = jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    m = jnp.array([[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 1]])
    out = adv.bnpo_advantages(r, mask=m)
    np.testing.assert_array_equal(out[:3], 0.0)
    self.assertTrue(np.all(np.isfinite(out)))
    # Rewards in [-1, 1] rescale to [0, 1].
    np.testing.assert_allclose(adv.bnpo_advantages(2 * BINARY - 1, reward_range=(-1.0, 1.0)),
                               adv.bnpo_advantages(BINARY), rtol=1e-6)

  def test_decomposition_is_mean_of_components(self):
    r = np.stack([BINARY, (_RNG.uniform(size=BINARY.shape) < 0.7).astype(np.float32)], -1)
    out = adv.bnpo_decomposed_advantages(r)
    expected = (np.asarray(adv.bnpo_advantages(r[..., 0]))
                + np.asarray(adv.bnpo_advantages(r[..., 1]))) / 2
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

  def test_errors(self):
    with pytest.raises(ValueError, match="`alpha` and `beta` must be given together"):
      adv.bnpo_advantages(BINARY, alpha=1.0)
    with pytest.raises(ValueError, match="`alpha` must be >= 1"):
      adv.bnpo_advantages(BINARY, alpha=0.5, beta=1.0)
    with pytest.raises(ValueError, match=r"`reward_range` must have hi > lo; got \(1.0, 0.0\)"):
      adv.bnpo_advantages(BINARY, reward_range=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"`rewards` must have shape \[B, G, K\]"):
      adv.bnpo_decomposed_advantages(BINARY)
    with pytest.raises(ValueError, match=r"`success_rates` must have shape \[B\]"):
      adv.bnpo_beta_parameters(BINARY)


class PrefGRPOTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_strict_order_sanity_values(self):
    judgements = jnp.triu(jnp.ones((4, 4)), 1)[None]  # sample i beats every j > i
    w, a = self.variant(lambda j: (adv.pairwise_win_rates(j), adv.pref_grpo_advantages(j)))(
        judgements)
    np.testing.assert_allclose(w, [[1.0, 2 / 3, 1 / 3, 0.0]], rtol=1e-6)
    # w - mean = (1/2, 1/6, -1/6, -1/2); sum of squares 5/9; ddof=1: std = sqrt(5/27) = 0.43033.
    np.testing.assert_allclose(a, [[1.1619, 0.3873, -0.3873, -1.1619]], atol=1e-4)
    # ddof=0 (std sqrt(5/36) = 0.37268) does not give the spec's values.
    a0 = adv.pref_grpo_advantages(judgements, ddof=0)
    np.testing.assert_allclose(a0, [[1.3416, 0.4472, -0.4472, -1.3416]], atol=1e-4)

  def test_ties_masks_and_clip(self):
    # 0 beats 1, ties with 2; 1 loses to 2. The lower triangle is ignored only via the rows read.
    j = jnp.array([[[0.0, 1.0, 0.5], [0.0, 0.0, 0.0], [0.5, 1.0, 0.0]]])
    np.testing.assert_allclose(adv.pairwise_win_rates(j), [[0.75, 0.0, 0.75]])
    # Masking sample 2 out: 0 vs 1 only.
    np.testing.assert_allclose(adv.pairwise_win_rates(j, mask=jnp.array([[1, 1, 0]])),
                               [[1.0, 0.0, 0.0]])
    # One winner, the other 31 all tie: z = (G - 1) / sqrt(G) = 5.48 for G = 32, clipped to 5.
    g = 32
    j = jnp.full((1, g, g), 0.5).at[0, 0, :].set(1.0).at[0, :, 0].set(0.0)
    out = adv.pref_grpo_advantages(j)
    np.testing.assert_allclose(out[0, 0], 5.0)
    self.assertLess(float(out[0, 0]), (g - 1) / math.sqrt(g))
    padded = jnp.pad(jnp.triu(jnp.ones((3, 3)), 1)[None], ((0, 0), (0, 2), (0, 2)),
                     constant_values=jnp.nan)
    out = adv.pref_grpo_advantages(padded, mask=jnp.array([[1, 1, 1, 0, 0]]))
    np.testing.assert_allclose(out[0, :3], adv.pref_grpo_advantages(
        jnp.triu(jnp.ones((3, 3)), 1)[None])[0], rtol=1e-6)
    np.testing.assert_array_equal(out[0, 3:], 0.0)

  def test_errors(self):
    with pytest.raises(ValueError, match=r"`judgements` must have shape \[B, G, G\]"):
      adv.pref_grpo_advantages(jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="`clip` must be a finite number > 0"):
      adv.pref_grpo_advantages(jnp.ones((1, 3, 3)), clip=0.0)
