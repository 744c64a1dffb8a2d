"""Pairwise reward-model losses of the Bradley-Terry family.

Notation: for pair i, `Delta_i = chosen_rewards_i - rejected_rewards_i` and
`-log sigmoid(x) = softplus(-x)`, always computed in the stable form.

All losses:
  * take `chosen_rewards: [B]` and `rejected_rewards: [B]` of equal shape,
  * compute in float32 (bfloat16 inputs are upcast) and return float32,
  * accept an optional validity `mask: [B]` and reduce with `reduce_loss`
    (`reduction` in {"mean", "sum", "none"}; "mean" is over valid pairs only),
  * replace the inputs of invalid pairs by 0 *before* computing anything, so
    padding with junk (even inf or NaN rewards) changes neither the value nor
    the gradient.
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction


def _check_weights(weights, chosen_rewards):
  if weights is None:
    return None
  weights = _reduction.as_real_array(weights, "weights")
  _reduction.check_same_shape(weights, "weights", chosen_rewards,
                              "chosen_rewards")
  return weights


def bradley_terry_loss(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    *,
    margin: chex.Numeric = 0.0,
    label_smoothing: float = 0.0,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """Bradley-Terry negative log-likelihood, with optional margin and smoothing.

  With `z_i = Delta_i - m_i` and `a = label_smoothing`:

    loss_i = -(1 - a) log sigmoid(z_i) - a log sigmoid(-z_i)
           =  (1 - a) softplus(-z_i)  + a softplus(z_i)

  * a = 0, m = 0: the plain Bradley-Terry loss -log sigmoid(Delta_i).
  * a = 0, m > 0: BT with margin (HelpSteer2-Preference uses
    m_i = |strength_i|); the reward gap must exceed m_i before the loss
    saturates.
  * a > 0: label smoothing / conservative targets (Secrets of RLHF II): the
    label "chosen beats rejected" is trusted with probability 1 - a. Note that
    L_a(c, r) = (1 - a) L_0(c, r) + a L_0(r, c).

  Sanity values: Delta = 0 -> log 2 = 0.6931; m = 3, Delta = 0 -> 3.0486;
  a = 0.1, Delta = 2 -> 0.3269.

  Args:
    chosen_rewards: [B] rewards of the preferred responses.
    rejected_rewards: [B] rewards of the dispreferred responses.
    margin: scalar or [B] margin m subtracted from the reward gap (default 0).
      Usually >= 0; not checked (it cannot be under `jit`).
    label_smoothing: Python float a in [0, 0.5) (default 0), checked eagerly.
    weights: optional [B] per-pair weights (>= 0 by convention, not checked).
    mask: optional [B] bool (or {0, 1}) validity mask; invalid pairs contribute
      exactly 0 to value and gradient.
    reduction: "mean" (default; over valid pairs), "sum" or "none"; see
      `rmjax.losses.reduce_loss`.

  Returns:
    float32 scalar, or [B] float32 per-pair losses for reduction="none".

  Raises:
    ValueError: bad `label_smoothing` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real-valued inputs.

  References:
    Bradley & Terry (1952), "Rank analysis of incomplete block designs".
    Wang et al. (2024), "HelpSteer2-Preference: Complementing Ratings with
    Preferences", arXiv:2410.01257 (margin).
    Wang et al. (2024), "Secrets of RLHF in Large Language Models Part II:
    Reward Modeling", arXiv:2401.06080 (label smoothing).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses import bradley_terry_loss
  >>> float(bradley_terry_loss(jnp.zeros(2), jnp.zeros(2)))  # log 2
  0.6931...
  >>> float(bradley_terry_loss(jnp.zeros(1), jnp.zeros(1), margin=3.0))
  3.0485...
  >>> float(bradley_terry_loss(jnp.array([2.0]), jnp.zeros(1),
  ...                          label_smoothing=0.1))
  0.3269...
  """
  label_smoothing = _reduction.check_probability(label_smoothing,
                                                 "label_smoothing")
  _reduction.check_reduction(reduction)
  chosen, rejected, valid, dtype = _reduction.pair_inputs(
      chosen_rewards, rejected_rewards, mask)
  weights = _check_weights(weights, chosen)
  margin = _reduction.as_real_array(margin, "margin")
  _reduction.check_scalar_or_same_shape(margin, "margin", chosen,
                                        "chosen_rewards")
  margin = jnp.where(valid, margin.astype(dtype), 0)

  z = chosen - rejected - margin
  per_pair = -jax.nn.log_sigmoid(z)
  if label_smoothing > 0.0:
    per_pair = ((1.0 - label_smoothing) * per_pair
                - label_smoothing * jax.nn.log_sigmoid(-z))
  return _reduction.reduce_loss(
      per_pair, weights=weights, mask=valid, reduction=reduction)


def scaled_bradley_terry_loss(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    strength: chex.Array,
    *,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """Scaled Bradley-Terry loss: BT scaled by the preference strength.

    loss_i = -|s_i| log sigmoid(Delta_i)

  HelpSteer2-Preference's best-performing variant: pairs annotated as a strong
  preference (|s| = 3) count three times as much as slight ones (|s| = 1).
  Ties (s_i == 0) carry no preference and are *dropped from the valid set*, so
  "mean" divides by the number of valid, non-tied pairs.

  Only the magnitude of `strength` is used: HelpSteer2's signed strength
  (negative = response 1 better) must already have been used to orient the
  pair into chosen/rejected.

  Sanity value: |s| = 3, Delta = 0 -> 3 log 2 = 2.0794.

  Args:
    chosen_rewards: [B] rewards of the preferred responses.
    rejected_rewards: [B] rewards of the dispreferred responses.
    strength: [B] preference strength s (HelpSteer2: integers in -3..3).
    weights: optional [B] per-pair weights (>= 0 by convention, not checked),
      applied on top of |s_i|.
    mask: optional [B] bool (or {0, 1}) validity mask.
    reduction: "mean" (default; over valid non-tied pairs), "sum" or "none"
      (ties and invalid pairs exactly 0).

  Returns:
    float32 scalar, or [B] float32 per-pair losses for reduction="none".

  Raises:
    ValueError: bad `reduction`, or wrongly shaped inputs.
    TypeError: non-real-valued inputs.

  References:
    Wang et al. (2024), "HelpSteer2-Preference: Complementing Ratings with
    Preferences", arXiv:2410.01257.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses import scaled_bradley_terry_loss
  >>> float(scaled_bradley_terry_loss(jnp.zeros(1), jnp.zeros(1),
  ...                                 jnp.array([-3])))
  2.0794...
  >>> # The tie is dropped: the mean is over the one remaining pair.
  >>> float(scaled_bradley_terry_loss(jnp.zeros(2), jnp.zeros(2),
  ...                                 jnp.array([3, 0])))
  2.0794...
  """
  _reduction.check_reduction(reduction)
  chosen, rejected, valid, dtype = _reduction.pair_inputs(
      chosen_rewards, rejected_rewards, mask)
  weights = _check_weights(weights, chosen)
  strength = _reduction.same_shape_input(strength, "strength", chosen,
                                         "chosen_rewards", valid, dtype)
  valid = valid & (strength != 0)
  per_pair = -jnp.abs(strength) * jax.nn.log_sigmoid(chosen - rejected)
  return _reduction.reduce_loss(
      per_pair, weights=weights, mask=valid, reduction=reduction)


def _pair_penalty(penalty, chosen_rewards, rejected_rewards, mask, reduction):
  """`reduce_loss` of `penalty(chosen, rejected)` over the valid pairs: the
  body of the reward penalties."""
  _reduction.check_reduction(reduction)
  chosen, rejected, valid, _ = _reduction.pair_inputs(
      chosen_rewards, rejected_rewards, mask)
  return _reduction.reduce_loss(penalty(chosen, rejected), mask=valid,
                                reduction=reduction)


def reward_centering_penalty(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """Reward-centering auxiliary penalty (r_c + r_r)^2.

    penalty_i = (chosen_rewards_i + rejected_rewards_i)^2

  Pulls the rewards of each pair towards zero mean, so that the otherwise
  unidentified offset of a BT reward model stays put. This is the term TRL adds
  as `center_rewards_coefficient * mean((r_c + r_r)^2)` (proposed in Eisenstein
  et al. 2023); the caller multiplies by the coefficient (c ~ 0.01):
  `loss = bradley_terry_loss(...) + c * reward_centering_penalty(...)`.

  Args:
    chosen_rewards: [B] rewards of the preferred responses.
    rejected_rewards: [B] rewards of the dispreferred responses.
    mask: optional [B] bool (or {0, 1}) validity mask.
    reduction: "mean" (default; over valid pairs), "sum" or "none".

  Returns:
    float32 scalar, or [B] float32 per-pair penalties for reduction="none".

  References:
    Eisenstein et al. (2023), "Helping or Herding? Reward Model Ensembles
    Mitigate but do not Eliminate Reward Hacking", arXiv:2312.09244.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses import reward_centering_penalty
  >>> float(reward_centering_penalty(jnp.array([1.0, 2.0]),
  ...                                jnp.array([2.0, -2.0])))  # (9 + 0) / 2
  4.5
  """
  return _pair_penalty(lambda c, r: jnp.square(c + r), chosen_rewards,
                       rejected_rewards, mask, reduction)


def l2_reward_penalty(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """L2 regulariser on the rewards of a pair, r_c^2 + r_r^2.

    penalty_i = chosen_rewards_i^2 + rejected_rewards_i^2

  The "Reg" baseline of the PAR paper (c = 0.005 there): keeps reward
  magnitudes small. The caller multiplies by the coefficient:
  `loss = bradley_terry_loss(...) + c * l2_reward_penalty(...)`.

  Args:
    chosen_rewards: [B] rewards of the preferred responses.
    rejected_rewards: [B] rewards of the dispreferred responses.
    mask: optional [B] bool (or {0, 1}) validity mask.
    reduction: "mean" (default; over valid pairs), "sum" or "none".

  Returns:
    float32 scalar, or [B] float32 per-pair penalties for reduction="none".

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF"
    (PAR), arXiv:2502.18770.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses import l2_reward_penalty
  >>> float(l2_reward_penalty(jnp.array([1.0, 2.0]),
  ...                         jnp.array([2.0, -2.0])))  # (5 + 8) / 2
  6.5
  """
  return _pair_penalty(lambda c, r: jnp.square(c) + jnp.square(r),
                       chosen_rewards, rejected_rewards, mask, reduction)
