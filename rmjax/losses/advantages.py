"""Advantage estimators for policy-gradient training of language models.

Layouts (B prompts x G samples = N sequences of up to T tokens):
  * sequence-level estimators take grouped rewards `[B, G]` with an optional sample mask `[B, G]`
    (use `rmjax.losses.normalization.group_rows` to go from the flat `[N]` layout, where the G
    samples of a prompt are adjacent) and return `[B, G]`;
  * token-level estimators (REINFORCE++, GAE) take `[N, T]` tensors with a response mask `[N, T]`
    and return `[N, T]`;
  * `broadcast_to_tokens` spreads sequence advantages `[N]` over the valid tokens of `[N, T]`.

Conventions: statistics use valid entries only; masked entries are sanitised to 0 before anything
is computed and come back exactly 0 (padding with NaN/inf junk changes nothing); computation is in
float32; groups with no valid sample give 0. Advantages are constants for the policy loss (wrap
them in `jax.lax.stop_gradient` if they are computed inside a differentiated function); they are
nonetheless differentiable with finite gradients, which the tests check.

Group normalisation (GRPO, Dr. GRPO, GDPO) lives in `rmjax.losses.normalization`; this module
reuses it.
"""

from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import kl as kl_lib
from rmjax.losses import normalization

SCALE_REWARDS = ("group", "batch", "none")
# What a group with a single valid sample gets (`rloo_advantages`, `opo_advantages`): "zero"
# advantage (the sample is its own baseline), or its "raw_reward" (baseline 0, as verl).
SINGLE_SAMPLE = ("zero", "raw_reward")


def _grouped(rewards, mask, name="rewards"):
  """Checks `rewards: [B, G]` (G >= 1) and `mask`; returns sanitised float32 rewards and valid."""
  grouped_inputs = normalization._grouped_inputs  # pylint: disable=protected-access
  rewards, valid = grouped_inputs(rewards, mask, name)
  return jnp.where(valid, rewards.astype(_reduction.compute_dtype(rewards)), 0), valid


def _check_single_sample(single_sample):
  if not isinstance(single_sample, str) or single_sample not in SINGLE_SAMPLE:
    raise ValueError(f"`single_sample` must be one of {SINGLE_SAMPLE}; got {single_sample!r}.")


def _token_mask(mask, n, source):
  """Checks a response mask `[N, T]` whose N is the length of `source`; returns it as bool."""
  mask = jnp.asarray(mask)
  if mask.ndim != 2 or mask.shape[0] != n:
    raise ValueError(
        f"`mask` must have shape [N, T] with N = {n} (from `{source}`); got shape "
        f"{tuple(mask.shape)}.")
  return _reduction.validity_mask(mask, mask.shape, "mask")


def broadcast_to_tokens(advantages: chex.Array, mask: chex.Array) -> jnp.ndarray:
  """Spreads one advantage per sequence over its valid tokens: out[n, t] = A_n * mask[n, t].

  Args:
    advantages: [N] sequence-level advantages (flatten a [B, G] array with `.reshape(-1)`).
    mask: [N, T] response mask (True = a response token).

  Returns:
    [N, T] float32 token advantages, 0 at masked tokens.

  Raises:
    ValueError: `advantages` not [N] or `mask` not [N, T] with the same N.
    TypeError: non-real `advantages`.

  References:
    Shao et al. (2024), "DeepSeekMath", arXiv:2402.03300 (outcome supervision: every token of a
    response gets the response's advantage).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import broadcast_to_tokens
  >>> broadcast_to_tokens(jnp.array([2.0, -1.0]), jnp.array([[1, 1, 0], [1, 0, 0]])).tolist()
  [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]
  """
  advantages = _reduction.as_real_array(advantages, "advantages")
  _reduction.check_rank(advantages, 1, "advantages", "[N]")
  valid = _token_mask(mask, advantages.shape[0], "advantages")
  dtype = _reduction.compute_dtype(advantages)
  return jnp.where(valid, advantages.astype(dtype)[:, None], 0)


def reinforce_advantages(
    rewards: chex.Array,
    baseline: chex.Numeric = 0.0,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """REINFORCE with a baseline: A = r - b.

  Args:
    rewards: [N] (or any shape, e.g. [B, G]) rewards.
    baseline: scalar or an array of `rewards`' shape (e.g. a running mean of the reward, or
      `rmjax.transforms` running statistics). Default 0: plain REINFORCE.
    mask: optional validity mask of `rewards`' shape; masked entries come back 0.

  Returns:
    float32 advantages of `rewards`' shape.

  Raises:
    ValueError: `baseline` neither a scalar nor of `rewards`' shape; bad `mask`.
    TypeError: non-real inputs.

  References:
    Williams (1992), "Simple statistical gradient-following algorithms for connectionist
    reinforcement learning"; Ahmadian et al. (2024), "Back to Basics: Revisiting REINFORCE Style
    Optimization for Learning from Human Feedback in LLMs", arXiv:2402.14740.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import reinforce_advantages
  >>> reinforce_advantages(jnp.array([1.0, 0.0]), 0.25).tolist()
  [0.75, -0.25]
  """
  rewards = _reduction.as_real_array(rewards, "rewards")
  baseline = _reduction.as_real_array(baseline, "baseline")
  _reduction.check_scalar_or_same_shape(baseline, "baseline", rewards, "rewards")
  valid = _reduction.validity_mask(mask, rewards.shape, "mask")
  dtype = _reduction.compute_dtype(rewards, baseline)
  rewards = jnp.where(valid, rewards.astype(dtype), 0)
  baseline = jnp.where(valid, baseline.astype(dtype), 0)
  return jnp.where(valid, rewards - baseline, 0)


def grpo_advantages(
    rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    scale_rewards: str = "group",
    ddof: int = 1,
    eps: chex.Numeric = 1e-6,
) -> jnp.ndarray:
  """GRPO's group-relative advantages: A_bi = (r_bi - mean_b) / (std + eps).

    scale_rewards="group":  std = std_b, the group's (verl and TRL default)
    scale_rewards="batch":  std = the std of all valid rewards of the batch (TRL option)
    scale_rewards="none":   no division (Dr. GRPO, = `dr_grpo_advantages`)

  Both verl (eps 1e-6) and TRL (eps 1e-4) use the unbiased std (ddof=1). A group with a single
  valid sample gets mean 0 and std 1 (verl; see `group_normalize`).

  Args:
    rewards: [B, G] rewards, B prompts x G samples.
    mask: optional [B, G] validity mask.
    scale_rewards: "group" (default), "batch" or "none".
    ddof: Python int >= 0 (default 1) for the standard deviation.
    eps: scalar >= 0 (default 1e-6, verl; TRL uses 1e-4).

  Returns:
    [B, G] float32 advantages.

  Raises:
    ValueError: `rewards` not [B, G] or with G = 0, unknown `scale_rewards`, bad `ddof`/`eps`.
    TypeError: non-real `rewards`.

  References:
    Shao et al. (2024), "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
    Language Models", arXiv:2402.03300.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import grpo_advantages
  >>> grpo_advantages(jnp.array([[1.0, 0.0, 0.0, 0.0]]), eps=0.0).tolist()
  [[1.5, -0.5, -0.5, -0.5]]
  """
  if not isinstance(scale_rewards, str) or scale_rewards not in SCALE_REWARDS:
    raise ValueError(f"`scale_rewards` must be one of {SCALE_REWARDS}; got {scale_rewards!r}.")
  if scale_rewards == "group":
    return normalization.group_normalize(rewards, mask=mask, scale="std", ddof=ddof, eps=eps)
  centred = normalization.group_normalize(rewards, mask=mask, scale="none", ddof=ddof, eps=eps)
  if scale_rewards == "none":
    return centred
  # TRL's batch-level scaling: group-centred rewards over the std of the raw rewards.
  raw, valid = _grouped(rewards, mask)
  normalization._check_ddof(ddof)  # pylint: disable=protected-access
  eps = normalization._check_eps(eps)  # pylint: disable=protected-access
  return _scale_by_batch_std(centred, raw, valid, ddof, eps)


def _scale_by_batch_std(centred, raw, valid, ddof, eps):
  axes = tuple(range(raw.ndim))
  moments = normalization.masked_moments
  _, std, _, _ = moments(raw, valid, axis=axes, ddof=ddof)
  safe_divide = normalization._safe_divide  # pylint: disable=protected-access
  return jnp.where(valid, safe_divide(centred, std + eps), 0)


def dr_grpo_advantages(rewards: chex.Array, *, mask: Optional[chex.Array] = None) -> jnp.ndarray:
  """Dr. GRPO ("GRPO done right"): A_bi = r_bi - mean_b, without the std division.

  Dr. GRPO also removes the per-sequence length normalisation of the loss: pair these advantages
  with `aggregate_token_losses(..., mode="seq-mean-token-sum-norm")`. A group with a single valid
  sample gets mean 0 (verl), so A = r there.

  Args:
    rewards: [B, G] rewards.
    mask: optional [B, G] validity mask.

  Returns:
    [B, G] float32 advantages.

  References:
    Liu et al. (2025), "Understanding R1-Zero-Like Training: A Critical Perspective",
    arXiv:2503.20783.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import dr_grpo_advantages
  >>> dr_grpo_advantages(jnp.array([[1.0, 0.0, 0.0, 0.0]])).tolist()
  [[0.75, -0.25, -0.25, -0.25]]
  """
  return normalization.group_normalize(rewards, mask=mask, scale="none")


def rloo_advantages(
    rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    single_sample: str = "zero",
) -> jnp.ndarray:
  """REINFORCE leave-one-out: A_bi = r_bi - mean_{j != i} r_bj = n_b / (n_b - 1) (r_bi - mean_b).

  n_b is the number of valid samples of group b. A group with a single valid sample has no other
  sample to form a baseline from: with single_sample="zero" (default) its advantage is 0 (no
  learning signal from a prompt sampled once, as GRPO's group normalisation gives); with
  "raw_reward" it is r_bi, i.e. baseline 0 (verl's `compute_rloo_outcome_advantage`).

  Args:
    rewards: [B, G] rewards.
    mask: optional [B, G] validity mask.
    single_sample: "zero" (default) or "raw_reward": the advantage of a one-sample group.

  Returns:
    [B, G] float32 advantages.

  Raises:
    ValueError: `rewards` not [B, G] or with G = 0; bad `mask` or `single_sample`.
    TypeError: non-real `rewards`.

  References:
    Kool et al. (2019), "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian et al.
    (2024), "Back to Basics", arXiv:2402.14740.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import rloo_advantages
  >>> rloo_advantages(jnp.array([[1.0, 0.0, 0.0, 0.0]])).tolist()  # 1 - 0, 0 - 1/3
  [[1.0, -0.333...]]
  >>> rloo_advantages(jnp.array([[2.0]]), single_sample="raw_reward").tolist()  # baseline 0
  [[2.0]]
  """
  _check_single_sample(single_sample)
  rewards, valid = _grouped(rewards, mask)
  return _rloo(rewards, valid, single_sample)


def _rloo(rewards, valid, single_sample):
  count = jnp.sum(valid, axis=-1, keepdims=True, dtype=rewards.dtype)
  total = jnp.sum(rewards, axis=-1, keepdims=True)
  others = jnp.maximum(count - 1, 1)
  # With one valid sample, total - rewards = 0: the baseline is 0 and the advantage r.
  advantages = rewards - (total - rewards) / others
  if single_sample == "zero":
    return jnp.where(valid & (count >= 2), advantages, 0)
  return jnp.where(valid, advantages, 0)


def reinforce_plus_plus_advantages(
    scores: chex.Array,
    mask: chex.Array,
    *,
    kl: Optional[chex.Array] = None,
    beta: chex.Numeric = 0.0,
    gamma: float = 1.0,
    eps: chex.Numeric = 1e-8,
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """REINFORCE++: KL-shaped token rewards, discounted returns, whitened over the batch.

    r_t = score * 1[t = last valid token] - beta * KL_t                    (`kl_in_reward`)
    G_t = r_t + gamma * G_{t+1}                                            (over valid tokens)
    A_t = (G_t - mean(G)) / (std(G) + eps)        mean, unbiased std over all valid tokens

  Masked positions inside a response (e.g. tool output) are skipped: the return flows across them
  and they get 0.

  Args:
    scores: [N] sequence-level rewards.
    mask: [N, T] response mask.
    kl: optional [N, T] per-token KL estimates (e.g. `kl_penalty(logp, ref_logp)`). Default
      None: no KL term.
    beta: KL coefficient >= 0 (default 0).
    gamma: Python float discount in [0, 1] (default 1).
    eps: scalar >= 0 (default 1e-8) added to the std.

  Returns:
    (advantages, returns): two [N, T] float32 arrays, 0 at masked tokens.

  Raises:
    ValueError: wrongly shaped inputs, bad `gamma`/`beta`/`eps`.
    TypeError: non-real inputs.

  References:
    Hu (2025), "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models",
    arXiv:2501.03262.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import reinforce_plus_plus_advantages
  >>> adv, ret = reinforce_plus_plus_advantages(jnp.array([1.0, 0.0]), jnp.ones((2, 2)))
  >>> ret.tolist(), adv.round(3).tolist()
  ([[1.0, 1.0], [0.0, 0.0]], [[0.866, 0.866], [-0.866, -0.866]])
  """
  scores = _reduction.as_real_array(scores, "scores")
  _reduction.check_rank(scores, 1, "scores", "[N]")
  valid = _token_mask(mask, scores.shape[0], "scores")
  if kl is None:
    kl = jnp.zeros(valid.shape, jnp.float32)
  kl = _reduction.as_real_array(kl, "kl")
  if tuple(kl.shape) != tuple(valid.shape):
    raise ValueError(
        f"`kl` must have the shape of `mask` [N, T] = {tuple(valid.shape)}; got shape "
        f"{tuple(kl.shape)}.")
  gamma = _check_discount(gamma, "gamma")
  eps = _reduction.scalar_hyperparameter(eps, "eps", allow_zero=True)
  token_rewards = kl_lib.kl_in_reward(scores, kl, valid, beta=beta)
  returns = _discounted_returns(token_rewards, valid, gamma)
  advantages = normalization.batch_whiten(returns, mask=valid, ddof=1, eps=eps)
  return advantages, returns


def _check_discount(x, name):
  if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= float(x) <= 1.0:
    raise ValueError(f"`{name}` must be a Python float in [0, 1]; got {x!r}.")
  return float(x)


def _discounted_returns(rewards, valid, gamma):
  """G_t = r_t + gamma G_{t'} with t' the next valid token; masked positions pass G through."""
  init = (jnp.zeros(rewards.shape[0], rewards.dtype), jnp.asarray(gamma, rewards.dtype))
  _, returns = jax.lax.scan(_discounted_return_step, init, (rewards.T, valid.T), reverse=True)
  return returns.T


def _discounted_return_step(carry, inputs):
  """One reverse step of `_discounted_returns` (module-level: eager calls reuse the scan)."""
  following, gamma = carry
  reward, is_valid = inputs
  ret = jnp.where(is_valid, reward + gamma * following, following)
  return (ret, gamma), jnp.where(is_valid, ret, 0)


def reinforce_plus_plus_baseline_advantages(
    rewards: chex.Array,
    mask: chex.Array,
    *,
    group_size: int,
    eps: chex.Numeric = 1e-8,
) -> jnp.ndarray:
  """REINFORCE++-baseline: subtract the group mean, then whiten over all valid tokens.

    a_n = r_n - mean_{group of n}(r)                 (a group with one sample: mean 0, as verl)
    A_nt = (a_n - mean(a)) / (std(a) + eps)           statistics over valid tokens (n, t)

  As in verl, the batch statistics are token-weighted (each sequence counts once per token).

  Args:
    rewards: [N] sequence rewards, N = B * G with the G samples of a prompt adjacent.
    mask: [N, T] response mask. A sequence without valid tokens is treated as an invalid sample.
    group_size: Python int G >= 1 dividing N.
    eps: scalar >= 0 (default 1e-8) added to the unbiased std.

  Returns:
    [N, T] float32 token advantages.

  Raises:
    ValueError: wrongly shaped inputs, `group_size` not dividing N.
    TypeError: non-real `rewards`.

  References:
    Hu (2025), "REINFORCE++", arXiv:2501.03262 (the baseline variant for G > 1).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import reinforce_plus_plus_baseline_advantages
  >>> reinforce_plus_plus_baseline_advantages(
  ...     jnp.array([1.0, 0.0]), jnp.ones((2, 1)), group_size=2).round(4).tolist()
  [[0.7071], [-0.7071]]
  """
  rewards = _reduction.as_real_array(rewards, "rewards")
  _reduction.check_rank(rewards, 1, "rewards", "[N]")
  mask = _token_mask(mask, rewards.shape[0], "rewards")
  eps = _reduction.scalar_hyperparameter(eps, "eps", allow_zero=True)
  grouped = normalization.group_rows(rewards, group_size)
  has_tokens = normalization.group_rows(jnp.any(mask, axis=-1), group_size)
  centred = normalization.group_normalize(grouped, mask=has_tokens, scale="none").reshape(-1)
  tokens = broadcast_to_tokens(centred, mask)
  return normalization.batch_whiten(tokens, mask=mask, ddof=1, eps=eps)


def remax_advantages(
    rewards: chex.Array,
    greedy_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """ReMax: the reward of the greedy response is the baseline, A_i = r(y_i) - r(y_greedy).

  Args:
    rewards: [B, G] rewards of the sampled responses (G = 1 in the paper).
    greedy_rewards: [B] rewards of each prompt's greedy (argmax-decoded) response.
    mask: optional [B, G] validity mask.

  Returns:
    [B, G] float32 advantages.

  Raises:
    ValueError: `rewards` not [B, G] or `greedy_rewards` not [B].
    TypeError: non-real inputs.

  References:
    Li et al. (2024), "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method
    for Aligning Large Language Models", arXiv:2310.10505.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import remax_advantages
  >>> remax_advantages(jnp.array([[1.0, 0.2]]), jnp.array([0.5])).tolist()
  [[0.5, -0.3]]
  """
  rewards, valid = _grouped(rewards, mask)
  greedy = _reduction.batch_vector(greedy_rewards, "greedy_rewards", rewards.shape[0], "rewards")
  greedy = greedy.astype(rewards.dtype)
  return jnp.where(valid, rewards - greedy[:, None], 0)


def opo_advantages(
    rewards: chex.Array,
    lengths: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    single_sample: str = "zero",
) -> jnp.ndarray:
  """OPO: the length-weighted group mean reward as the baseline.

    b_b = sum_j l_bj r_bj / sum_j l_bj   (valid j),       A_bi = r_bi - b_b

  the baseline that minimises the variance of the token-summed gradient under the assumption that
  it grows with length. A group whose valid lengths sum to 0 gets baseline 0. A group with a
  single valid sample is its own baseline by this formula, so with single_sample="zero"
  (default) its advantage is 0 (as `rloo_advantages`); with "raw_reward" its baseline is 0 and
  its advantage r_bi (verl's `compute_opo_outcome_advantage`).

  Args:
    rewards: [B, G] rewards.
    lengths: [B, G] response lengths in tokens (>= 0).
    mask: optional [B, G] validity mask.
    single_sample: "zero" (default) or "raw_reward": the advantage of a one-sample group.

  Returns:
    [B, G] float32 advantages.

  Raises:
    ValueError: mismatched shapes, bad `single_sample`.
    TypeError: non-real inputs.

  References:
    Hao et al. (2025), "On-Policy RL with Optimal Reward Baseline", arXiv:2505.23585.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import opo_advantages
  >>> opo_advantages(jnp.array([[1.0, 0.0]]), jnp.array([[1, 3]])).tolist()  # b = 1 / 4
  [[0.75, -0.25]]
  >>> opo_advantages(jnp.array([[2.0]]), jnp.array([[5]]), single_sample="raw_reward").tolist()
  [[2.0]]
  """
  _check_single_sample(single_sample)
  rewards, valid = _grouped(rewards, mask)
  lengths = _reduction.same_shape_input(lengths, "lengths", rewards, "rewards", valid,
                                        rewards.dtype)
  return _opo(rewards, lengths, valid, single_sample)


def _opo(rewards, lengths, valid, single_sample):
  total_length = jnp.sum(lengths, axis=-1, keepdims=True)
  nonzero = total_length > 0
  if single_sample == "raw_reward":
    nonzero &= jnp.sum(valid, axis=-1, keepdims=True) >= 2
  baseline = jnp.where(
      nonzero, jnp.sum(lengths * rewards, axis=-1, keepdims=True)
      / jnp.where(nonzero, total_length, 1), 0)
  return jnp.where(valid, rewards - baseline, 0)


def gae(
    rewards: chex.Array,
    values: chex.Array,
    mask: chex.Array,
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    discounts: Optional[chex.Array] = None,
    bootstrap_value: Optional[chex.Array] = None,
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Generalised advantage estimation over token sequences (a reverse `lax.scan`).

    delta_t = r_t + d_t V_{t'} - V_t,      A_t = delta_t + d_t lam A_{t'},      R_t = A_t + V_t

  where t' is the next *valid* token after t (masked positions are skipped, as in verl, and get
  0) and d_t is the discount of step t: `gamma` for every step by default, or `discounts[:, t]`
  (as rlax's `truncated_generalized_advantage_estimation`, whose `discount_t` is per step; a 0
  ends the episode at t). After the last valid token A = 0 and V = `bootstrap_value`: 0 by
  default (the episode ends with the response), or the critic's value of the state after a
  truncated sequence. The advantages are not whitened: apply `batch_whiten(advantages,
  mask=mask)` for PPO's usual normalisation.

  With gamma = lam = 1 and V = 0, A_t = R_t = sum_{s >= t} r_s (the reward-to-go).

  Args:
    rewards: [N, T] per-token rewards (e.g. `kl_in_reward(...)`).
    values: [N, T] value estimates V_t of the critic.
    mask: [N, T] response mask.
    gamma: Python float discount in [0, 1] (default 1); unused when `discounts` is given.
    lam: Python float GAE lambda in [0, 1] (default 1).
    discounts: optional [N, T] per-step discounts d_t in [0, 1] (not checked: they may be traced);
      default None: d_t = gamma.
    bootstrap_value: optional [N] value of the state after each row's last valid token (e.g.
      V of the next state of a truncated sequence); default None: 0.

  Returns:
    (advantages, returns): [N, T] float32 arrays, 0 at masked tokens.

  Raises:
    ValueError: mismatched shapes, bad `gamma`/`lam`.
    TypeError: non-real inputs.

  References:
    Schulman et al. (2016), "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", arXiv:1506.02438.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import gae
  >>> adv, ret = gae(jnp.array([[0.0, 1.0]]), jnp.array([[0.5, 0.5]]), jnp.ones((1, 2)),
  ...                gamma=1.0, lam=0.5)
  >>> adv.tolist(), ret.tolist()  # delta = (0, 0.5); A_0 = 0 + 0.5 * 0.5
  ([[0.25, 0.5]], [[0.75, 1.0]])
  >>> adv, _ = gae(jnp.array([[1.0]]), jnp.array([[0.5]]), jnp.ones((1, 1)),
  ...              bootstrap_value=jnp.array([2.0]))
  >>> adv.tolist()  # truncated: delta = 1 + 2 - 0.5
  [[2.5]]
  """
  (rewards,), valid, dtype = _reduction.sanitized_inputs([("rewards", rewards)], mask, "[N, T]")
  values_arr = _reduction.same_shape_input(values, "values", rewards, "rewards", valid, dtype)
  gamma = _check_discount(gamma, "gamma")
  lam = _check_discount(lam, "lam")
  if discounts is None:
    discounts = jnp.full(rewards.shape, gamma, dtype)
  else:
    discounts = _reduction.same_shape_input(discounts, "discounts", rewards, "rewards", valid,
                                            dtype)
  if bootstrap_value is None:
    bootstrap_value = jnp.zeros(rewards.shape[0], dtype)
  else:
    bootstrap_value = _reduction.batch_vector(bootstrap_value, "bootstrap_value",
                                              rewards.shape[0], "rewards").astype(dtype)
  return _gae(rewards, values_arr, valid, discounts, lam, bootstrap_value)


def _gae_step(carry, inputs):
  """One reverse step of `gae`; module-level, so eager calls reuse the compiled scan."""
  next_value, next_advantage = carry
  reward, value, is_valid, discount, decay = inputs
  delta = reward + discount * next_value - value
  advantage = delta + decay * next_advantage
  carry = (jnp.where(is_valid, value, next_value), jnp.where(is_valid, advantage, next_advantage))
  return carry, jnp.where(is_valid, advantage, 0)


def _gae(rewards, values, valid, discounts, lam, bootstrap_value):
  decays = discounts * jnp.asarray(lam, discounts.dtype)
  init = (bootstrap_value, jnp.zeros_like(bootstrap_value))
  _, advantages = jax.lax.scan(_gae_step, init,
                               (rewards.T, values.T, valid.T, discounts.T, decays.T),
                               reverse=True)
  advantages = advantages.T
  return advantages, jnp.where(valid, advantages + values, 0)


def bnpo_beta_parameters(
    success_rates: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """BNPO's Beta parameters from the batch's per-prompt success rates (method of moments).

    mu = mean_b p_b,   v = var_b p_b (ddof 1),   k = mu (1 - mu) / v - 1
    a = k mu,   b = k (1 - mu)               (the moment estimates of the Beta law of p)
    alpha = max(1 + a / 3, 1),   beta = max(1 + b / 3, 1)

  With fewer than 2 valid prompts, or v = 0, the estimate is undefined and alpha = beta = 1 (the
  reference code's fallback for one prompt gives the same).

  Args:
    success_rates: [B] per-prompt mean (rescaled) reward p_b in [0, 1].
    mask: optional [B] validity mask of the prompts.

  Returns:
    (alpha, beta): float32 scalars >= 1.

  References:
    Xiao, Zhang & Cao (2025), "BNPO: Beta Normalization Policy Optimization", arXiv:2506.02864
    (checked against github.com/changyi7231/BNPO, `compute_bnpo_outcome_advantage`).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import bnpo_beta_parameters
  >>> [round(float(x), 4) for x in bnpo_beta_parameters(jnp.array([0.25, 0.5, 0.75, 0.5]))]
  [1.8333, 1.8333]
  """
  (p,), valid, _ = _reduction.sanitized_inputs([("success_rates", success_rates)], mask, "[B]")
  return _bnpo_beta_parameters(p, valid)


def _bnpo_beta_parameters(p, valid):
  moments = normalization.masked_moments
  mean, std, count, _ = moments(p, valid, axis=0, ddof=1)
  mean, variance, count = mean[0], jnp.square(std[0]), count[0]
  defined = (count >= 2) & (variance > 0)
  k = mean * (1 - mean) / jnp.where(defined, variance, 1) - 1
  alpha = jnp.where(defined, jnp.maximum(1 + k * mean / 3, 1), 1)
  beta = jnp.where(defined, jnp.maximum(1 + k * (1 - mean) / 3, 1), 1)
  return alpha, beta


def _check_pair(x, name):
  if x is None:
    return None
  x = _reduction.scalar_hyperparameter(x, name)
  if isinstance(x, float) and x < 1:
    raise ValueError(f"`{name}` must be >= 1 (BNPO's Beta parameters); got {x!r}.")
  return x


def bnpo_advantages(
    rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    reward_range: Tuple[float, float] = (0.0, 1.0),
    alpha: Optional[chex.Numeric] = None,
    beta: Optional[chex.Numeric] = None,
    max_weight: float = 1e6,
) -> jnp.ndarray:
  """Beta Normalization Policy Optimization: advantages normalised by a Beta density.

    s = (r - lo) / (hi - lo),   p_b = mean of s over group b's valid samples
    A_bi = (s_bi - p_b) * clip(1 / BetaPDF(p_b; alpha, beta), 0, max_weight)

  with (alpha, beta) = `bnpo_beta_parameters(p)` estimated on the batch unless given.
  alpha = beta = 1 gives REINFORCE with the group-mean baseline (s - p); alpha = beta = 3/2 gives
  B(3/2, 3/2) (s - p) / sqrt(p (1 - p)) = (pi / 8) x GRPO's advantage with the population std,
  for binary rewards.

  Deviation from the reference code: a group with a single valid sample gets 0 (the reference,
  inheriting verl's GRPO rule, sets p = 0 there, which gives an advantage of s * max_weight as soon
  as alpha > 1) and does not enter the moment estimates.

  Worked example (spec): success rates p = (0.25, 0.5, 0.75, 0.5) -> alpha = beta = 11/6; at
  p = 0.25, B(11/6, 11/6) = 0.22054, 1 / BetaPDF = 0.88984, so A = 0.75 x 0.88984 = +0.6674
  (correct, s = 1) and -0.25 x 0.88984 = -0.2225 (wrong, s = 0), matching the spec's +0.667 and
  -0.222.

  Args:
    rewards: [B, G] rewards in `reward_range`.
    mask: optional [B, G] validity mask.
    reward_range: (lo, hi) Python floats, hi > lo (default (0, 1), binary rewards).
    alpha: optional fixed alpha >= 1 (default: estimated). Pass both or neither.
    beta: optional fixed beta >= 1 (default: estimated).
    max_weight: Python float > 0 (default 1e6), the clip on 1 / BetaPDF.

  Returns:
    [B, G] float32 advantages.

  Raises:
    ValueError: bad shapes, `reward_range`, or only one of `alpha`/`beta`.
    TypeError: non-real `rewards`.

  References:
    Xiao, Zhang & Cao (2025), "BNPO: Beta Normalization Policy Optimization", arXiv:2506.02864.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import bnpo_advantages
  >>> r = jnp.array([[1.0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])  # p = 0.25, ...
  >>> bnpo_advantages(r)[0].round(4).tolist()
  [0.6674, -0.2225, -0.2225, -0.2225]
  """
  rewards, valid = _grouped(rewards, mask)
  lo, hi = _check_reward_range(reward_range)
  alpha, beta = _check_pair(alpha, "alpha"), _check_pair(beta, "beta")
  if (alpha is None) != (beta is None):
    raise ValueError("`alpha` and `beta` must be given together (or both left None); got "
                     f"alpha={alpha!r}, beta={beta!r}.")
  max_weight = _reduction.scalar_hyperparameter(max_weight, "max_weight")
  return _bnpo(rewards, valid, lo, hi, alpha, beta, max_weight)


def _check_reward_range(reward_range):
  try:
    lo, hi = reward_range
    lo, hi = float(lo), float(hi)
  except (TypeError, ValueError):
    raise ValueError(
        f"`reward_range` must be a pair (lo, hi) of numbers; got {reward_range!r}.") from None
  if not hi > lo:
    raise ValueError(f"`reward_range` must have hi > lo; got {reward_range!r}.")
  return lo, hi


def _bnpo(rewards, valid, lo, hi, alpha, beta, max_weight):
  s = jnp.where(valid, (rewards - lo) / (hi - lo), 0)
  count = jnp.sum(valid, axis=-1, dtype=s.dtype)
  p = jnp.sum(s, axis=-1) / jnp.maximum(count, 1)
  usable = count >= 2
  if alpha is None:
    alpha, beta = _bnpo_beta_parameters(jnp.where(usable, p, 0), usable)
  weight = _inverse_beta_pdf(p, alpha, beta, max_weight)
  return jnp.where(valid & usable[:, None], (s - p[:, None]) * weight[:, None], 0)


def _inverse_beta_pdf(p, alpha, beta, max_weight):
  """clip(1 / BetaPDF(p; alpha, beta), 0, max_weight), finite for p in [0, 1]."""
  p = jnp.clip(p, 0.0, 1.0)
  interior = (p > 0) & (p < 1)
  p_safe = jnp.where(interior, p, 0.5)
  # log B(alpha, beta) from lgamma: exact enough for alpha, beta >= 1, and far cheaper to compile
  # than `jax.scipy.special.betaln`.
  log_beta_fn = jax.lax.lgamma(alpha) + jax.lax.lgamma(beta) - jax.lax.lgamma(alpha + beta)
  log_pdf = (alpha - 1) * jnp.log(p_safe) + (beta - 1) * jnp.log1p(-p_safe) - log_beta_fn
  # At p in {0, 1} the density is 0 (alpha or beta > 1) or finite (= 1 / B(1, beta) = beta for
  # alpha = 1 at p = 0); the advantage there is s - p = 0 for rewards in [0, 1] anyway.
  log_pdf_edge = jnp.where(p <= 0, jnp.where(alpha > 1, -jnp.inf, jnp.log(beta)),
                           jnp.where(beta > 1, -jnp.inf, jnp.log(alpha)))
  log_pdf = jnp.where(interior, log_pdf, log_pdf_edge)
  log_max = jnp.log(max_weight)
  return jnp.exp(jnp.clip(-log_pdf, -jnp.inf, log_max))


def bnpo_decomposed_advantages(
    rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    reward_range: Tuple[float, float] = (0.0, 1.0),
    max_weight: float = 1e6,
) -> jnp.ndarray:
  """BNPO's advantage decomposition for K reward components: the mean of per-component BNPO.

    A_bi = (1 / K) sum_k A^BNPO_bi(r[..., k])     (each k with its own Beta parameters)

  Args:
    rewards: [B, G, K] reward components, each in `reward_range` (e.g. accuracy and format).
    mask: optional [B, G] validity mask.
    reward_range: (lo, hi) shared by every component (default (0, 1)).
    max_weight: clip on 1 / BetaPDF (default 1e6).

  Returns:
    [B, G] float32 advantages.

  Raises:
    ValueError: `rewards` not [B, G, K] with G, K >= 1; see `bnpo_advantages`.
    TypeError: non-real `rewards`.

  References:
    Xiao, Zhang & Cao (2025), "BNPO", arXiv:2506.02864, Sec. 4.3 (advantage decomposition).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import bnpo_decomposed_advantages
  >>> r = jnp.stack([jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 1.0]])], axis=-1)  # [1, 2, 2]
  >>> bnpo_decomposed_advantages(r).tolist()  # one prompt: alpha = beta = 1; (0.5, -0.5) and 0
  [[0.25, -0.25]]
  """
  rewards = _reduction.as_real_array(rewards, "rewards")
  _reduction.check_rank(rewards, 3, "rewards", "[B, G, K]")
  if 0 in rewards.shape[1:]:
    raise ValueError(
        f"`rewards` must have G >= 1 samples per group and K >= 1 components; got shape "
        f"{tuple(rewards.shape)}.")
  valid = _reduction.validity_mask(mask, rewards.shape[:2], "mask")
  lo, hi = _check_reward_range(reward_range)
  max_weight = _reduction.scalar_hyperparameter(max_weight, "max_weight")
  dtype = _reduction.compute_dtype(rewards)
  per_k = jnp.moveaxis(jnp.where(valid[..., None], rewards.astype(dtype), 0), -1, 0)
  advantages = jax.vmap(lambda r: _bnpo(r, valid, lo, hi, None, None, max_weight))(per_k)
  return jnp.mean(advantages, axis=0)


def pairwise_win_rates(
    judgements: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Win rates within each group from a pairwise judgement matrix (Pref-GRPO's reward).

    w_bi = sum_{j != i, j valid} J_bij / (n_b - 1)

  J_bij = 1 when sample i beats sample j, 0 when it loses, 0.5 for a tie (Pref-GRPO also scores an
  unparseable judgement as a tie). Row i is read for sample i's wins; the diagonal is ignored. If
  the judge was asked once per pair (i < j), fill the other half as J_bji = 1 - J_bij, e.g.
  `J = jnp.triu(J, 1) + jnp.tril(1 - jnp.swapaxes(J, -1, -2), -1)`. A group with fewer than 2
  valid samples gets 0.

  Args:
    judgements: [B, G, G] pairwise outcomes in [0, 1].
    mask: optional [B, G] validity mask of the samples.

  Returns:
    [B, G] float32 win rates in [0, 1].

  Raises:
    ValueError: `judgements` not [B, G, G].
    TypeError: non-real `judgements`.

  References:
    Wang et al. (2025), "Pref-GRPO: Pairwise Preference Reward-based GRPO for Stable
    Text-to-Image Reinforcement Learning", arXiv:2508.20751.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import pairwise_win_rates
  >>> J = jnp.array([[[0.0, 1.0, 0.5], [0.0, 0.0, 0.0], [0.5, 1.0, 0.0]]])
  >>> pairwise_win_rates(J).tolist()
  [[0.75, 0.0, 0.75]]
  """
  judgements = _reduction.as_real_array(judgements, "judgements")
  _reduction.check_rank(judgements, 3, "judgements", "[B, G, G]")
  if judgements.shape[1] != judgements.shape[2] or judgements.shape[1] == 0:
    raise ValueError(
        f"`judgements` must have shape [B, G, G] with G >= 1; got shape "
        f"{tuple(judgements.shape)}.")
  valid = _reduction.validity_mask(mask, judgements.shape[:2], "mask")
  return _win_rates(judgements, valid)


def _win_rates(judgements, valid):
  dtype = _reduction.compute_dtype(judgements)
  num = judgements.shape[1]
  pair = valid[:, :, None] & valid[:, None, :] & ~jnp.eye(num, dtype=bool)
  wins = jnp.sum(jnp.where(pair, judgements.astype(dtype), 0), axis=-1)
  count = jnp.sum(valid, axis=-1, keepdims=True, dtype=dtype)
  return jnp.where(valid & (count >= 2), wins / jnp.maximum(count - 1, 1), 0)


def pref_grpo_advantages(
    judgements: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    ddof: int = 1,
    eps: chex.Numeric = 1e-8,
    clip: float = 5.0,
) -> jnp.ndarray:
  """Pref-GRPO: GRPO on the pairwise win rates, clipped.

    w = `pairwise_win_rates(J)`,   A_bi = clip((w_bi - mean_b w) / (std_b w + eps), -c, c)

  Pref-GRPO's code uses the unbiased std (`torch.std`, ddof=1) + 1e-8 and clips the advantage at
  5. Sanity: a strict order of G = 4 gives w = (1, 2/3, 1/3, 0) and, with ddof=1 (std 0.4303),
  A = (1.162, 0.387, -0.387, -1.162); ddof=0 (std 0.3727) would give (1.342, 0.447, ...).

  Args:
    judgements: [B, G, G] pairwise outcomes (see `pairwise_win_rates`).
    mask: optional [B, G] validity mask.
    ddof: Python int >= 0 (default 1).
    eps: scalar >= 0 (default 1e-8).
    clip: Python float c > 0 (default 5).

  Returns:
    [B, G] float32 advantages.

  References:
    Wang et al. (2025), "Pref-GRPO", arXiv:2508.20751 (checked against
    github.com/CodeGoat24/Pref-GRPO, `train_flux_pref_grpo.py`).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import pref_grpo_advantages
  >>> J = jnp.triu(jnp.ones((4, 4)), 1)[None]  # sample i beats every j > i
  >>> pref_grpo_advantages(J).round(3).tolist()
  [[1.162, 0.387, -0.387, -1.162]]
  """
  clip = _reduction.scalar_hyperparameter(clip, "clip")
  win_rates = pairwise_win_rates(judgements, mask=mask)
  valid = _reduction.validity_mask(mask, win_rates.shape, "mask")
  normalised = normalization.group_normalize(win_rates, mask=valid, ddof=ddof, eps=eps)
  return jnp.clip(normalised, -clip, clip)


def dler_advantages(
    rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    ddof: int = 1,
    eps: chex.Numeric = 1e-6,
) -> jnp.ndarray:
  """DLER's batch-wise normalisation: group-centred rewards whitened over the whole batch.

    a_bi = r_bi - mean_b r,     A = (a - mean(a)) / (std(a) + eps)     over all valid samples

  Replacing GRPO's per-group std by the batch std keeps groups with a tiny spread (frequent under
  a strict truncation penalty) from receiving huge advantages. DLER pairs it with clip-higher
  (`ppo_clip_loss(eps_high=0.28)`), token-mean aggregation and dynamic sampling
  (`dynamic_sampling_mask`); its truncation reward lives in `rmjax.transforms`. The paper's exact
  constants (ddof, eps) are not stated in what we could read; these are options.

  Args:
    rewards: [B, G] rewards (after the truncation penalty).
    mask: optional [B, G] validity mask (e.g. `dynamic_sampling_mask` broadcast over G).
    ddof: Python int >= 0 (default 1).
    eps: scalar >= 0 (default 1e-6).

  Returns:
    [B, G] float32 advantages.

  References:
    Liu et al. (2025), "DLER: Doing Length pEnalty Right - Incentivizing More Intelligence per
    Token via Reinforcement Learning", arXiv:2510.15110.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import dler_advantages
  >>> dler_advantages(jnp.array([[1.0, 0.0], [0.2, 0.0]])).round(3).tolist()
  [[1.201, -1.201], [0.24, -0.24]]
  """
  centred = normalization.group_normalize(rewards, mask=mask, scale="none")
  valid = _reduction.validity_mask(mask, centred.shape, "mask")
  return normalization.batch_whiten(centred, mask=valid, ddof=ddof, eps=eps)


gdpo_advantages = normalization.normalize_then_sum


def dynamic_sampling_mask(rewards: chex.Array, *, mask: Optional[chex.Array] = None) -> jnp.ndarray:
  """DAPO's dynamic sampling filter: True for groups whose valid rewards are not all equal.

  A group where every sample gets the same reward (all solved, or none) has zero group-relative
  advantage and only dilutes the batch; DAPO over-samples and keeps the informative groups.
  Groups with fewer than 2 valid samples are False.

  Args:
    rewards: [B, G] rewards.
    mask: optional [B, G] validity mask.

  Returns:
    [B] bool.

  References:
    Yu et al. (2025), "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
    arXiv:2503.14476.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.advantages import dynamic_sampling_mask
  >>> dynamic_sampling_mask(jnp.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])).tolist()
  [False, True, False]
  """
  rewards, valid = _grouped(rewards, mask)
  high = jnp.max(jnp.where(valid, rewards, -jnp.inf), axis=-1)
  low = jnp.min(jnp.where(valid, rewards, jnp.inf), axis=-1)
  return (jnp.sum(valid, axis=-1) >= 2) & (high > low)
