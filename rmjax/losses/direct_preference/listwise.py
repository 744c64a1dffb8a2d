"""Listwise direct-preference losses: K ranked or scored responses per prompt (LiPO, PRO).

Notation and conventions in `rmjax.losses.direct_preference`.
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import listwise
from rmjax.losses.direct_preference import _shared


def lipo_lambda_loss(
    policy_logps: chex.Array,
    reference_logps: chex.Array,
    labels: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """LiPO-lambda: LambdaLoss-weighted all-pairs logistic loss per list.

    s_bk = beta (logp_bk - logp_ref_bk)
    loss_b = sum_{i, j in list b: psi_i > psi_j} Delta_ij log(1 + exp(-(s_i - s_j)))
    Delta_ij = |G_i - G_j| |1 / D(tau_i) - 1 / D(tau_j)|,  G = 2^psi - 1,
    D(tau) = log2(1 + tau),  tau = 1-based rank by current s (no gradient)

  The pair sum is `rmjax.losses.all_pairs_bradley_terry_loss(s, psi,
  group_ids=list index, weighting="lipo_lambda")` (one home for the pair rules
  and the lambda weights, `lipo_lambda_weights`). LiPO's loss is a *sum* over
  the pairs of a list, averaged over lists (the expectation over prompts in
  Liu et al. 2024), so "mean" divides the total by the number of lists with
  at least one pair (not by the number of pairs, the all-pairs "mean"); "sum"
  is the total and "none" gives [B] per-list
  sums.

  Two responses with labels (1, 0) give Delta = 1 - 1 / log2(3) = 0.3691
  whatever their order, i.e. 0.3691 * DPO. Spec example (psi = (2, 1, 0),
  correctly ranked): Delta_12 = 2 (1 - 0.6309) = 0.7381, Delta_13 = 3 * 0.5 =
  1.5, Delta_23 = 0.6309 - 0.5 = 0.1309.

  Args:
    policy_logps: [B, K] log pi(y_k | x_b) of K responses per prompt, summed
      over response tokens.
    reference_logps: [B, K] log pi_ref(y_k | x_b).
    labels: [B, K] graded labels psi, higher = better (small non-negative
      values; ties give no pair).
    beta: scalar > 0 (default 0.1).
    mask: optional [B, K] validity mask (padding responses).
    reduction: "mean" (default; over lists with >= 1 pair), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-list losses for reduction="none".

  Raises:
    ValueError: bad `beta` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Liu et al. (2024), "LiPO: Listwise Preference Optimization through
    Learning-to-Rank", arXiv:2402.01878.
    Wang et al. (2018), "The LambdaLoss Framework for Ranking Metric
    Optimization".

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import lipo_lambda_loss
  >>> z = jnp.zeros((1, 2))
  >>> float(lipo_lambda_loss(z, z, jnp.array([[1, 0]])))  # 0.3691 log 2
  0.2558...
  """
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  _reduction.check_reduction(reduction)
  return _lipo_lambda_loss(
      *_shared.as_arrays(policy_logps, reference_logps, labels), beta, *_shared.as_arrays(mask),
      reduction=reduction)


def _lipo_lambda_loss(policy_logps, reference_logps, labels, beta, mask,
                      reduction):
  """The computation of `lipo_lambda_loss`."""
  (logp, ref, psi), valid, _ = _reduction.sanitized_inputs(
      [("policy_logps", policy_logps), ("reference_logps", reference_logps),
       ("labels", labels)], mask, "[B, K]")
  num_lists, list_size = logp.shape
  scores = beta * (logp - ref)
  group_ids = jnp.repeat(jnp.arange(num_lists), list_size)
  pair_reduction = "none" if reduction == "none" else "sum"
  pair_loss = listwise.all_pairs_bradley_terry_loss(
      scores.reshape(-1), psi.reshape(-1), group_ids=group_ids,
      mask=valid.reshape(-1), weighting="lipo_lambda",
      reduction=pair_reduction)
  if reduction == "none":
    # Pairs only form within a list: the per-list sums are the diagonal
    # blocks of the [N, N] matrix.
    blocks = pair_loss.reshape(num_lists, list_size, num_lists, list_size)
    return jnp.einsum("bibj->b", blocks)
  if reduction == "sum":
    return pair_loss
  has_pair = jnp.any(valid[:, :, None] & valid[:, None, :]
                     & (psi[:, :, None] > psi[:, None, :]), axis=(1, 2))
  return pair_loss / jnp.maximum(jnp.sum(has_pair, dtype=pair_loss.dtype), 1)


def pro_loss(
    policy_logps: chex.Array,
    rewards: chex.Array,
    *,
    sft_logps: Optional[chex.Array] = None,
    sft_weight: chex.Numeric = 0.05,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """PRO: Preference Ranking Optimization over n ranked responses.

  Responses are sorted by reward, best first (k = 1..n); s = mean token
  log-probability; T_kj = r_k - r_j for j > k and T_kk = max_{j > k} T_kj:

    L_k = -log [exp(s_k T_kk) / sum_{j >= k} exp(s_j T_kj)]
    loss_b = sum_{k < n} L_k + sft_weight (n - 1)^2 NLL(best)

  i.e. Plackett-Luce over successive suffixes with reward-gap temperatures
  1 / T_kj. NLL(best) = -sft_logps of the top response. As in the authors'
  code (AlibabaResearch/DAMO-ConvAI, PRO/train/utils/process_manager.py),
  the ranking uses mean token log-probs, the SFT term the
  *summed* log-prob of the best response (pass it as `sft_logps`; default:
  `policy_logps`), weighted by sft_weight (n - 1)^2 with sft_weight = 0.05 in
  their scripts; the L_k are summed over k. Masked responses are dropped
  (n = number of valid responses of the list); lists with fewer than 2 valid
  responses have loss 0 and are dropped from the "mean".

  Sanity values: n = 2, rewards (1, 0), s = (a, b), sft_weight = 0:
  softplus(b - a), i.e. a BT loss on the mean log-probs; equal s with n = 3,
  rewards (2, 1, 0): L_1 = log 3, L_2 = log 2.

  Args:
    policy_logps: [B, n] mean token log pi(y_k | x_b).
    rewards: [B, n] reward of each response (any order; sorted inside).
    sft_logps: optional [B, n] log-probs for the SFT term (the authors: the
      summed log pi); default `policy_logps`.
    sft_weight: scalar >= 0 (default 0.05).
    mask: optional [B, n] validity mask.
    reduction: "mean" (default; over lists with >= 2 valid responses), "sum"
      or "none".

  Returns:
    float32 scalar, or [B] per-list losses for reduction="none".

  Raises:
    ValueError: bad hyperparameters or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Song et al. (2024), "Preference Ranking Optimization for Human
    Alignment", AAAI, arXiv:2306.17492.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import pro_loss
  >>> float(pro_loss(jnp.zeros((1, 3)), jnp.array([[0.0, 2.0, 1.0]]),
  ...                sft_weight=0.0))  # log 3 + log 2
  1.7917...
  """
  sft_weight = _reduction.scalar_hyperparameter(sft_weight, "sft_weight",
                                                allow_zero=True)
  _reduction.check_reduction(reduction)
  return _pro_loss(*_shared.as_arrays(policy_logps, rewards, sft_logps), sft_weight,
                   *_shared.as_arrays(mask), reduction=reduction)


def _pro_loss(policy_logps, rewards, sft_logps, sft_weight, mask, reduction):
  """The computation of `pro_loss`."""
  named = [("policy_logps", policy_logps), ("rewards", rewards)]
  if sft_logps is not None:
    named.append(("sft_logps", sft_logps))
  arrays, valid, dtype = _reduction.sanitized_inputs(named, mask, "[B, n]")
  scores, rewards = arrays[:2]
  sft = arrays[2] if sft_logps is not None else scores

  # Best first; masked responses last (stable, so ties keep their order).
  key = jnp.where(valid, rewards, -jnp.inf)
  order = jnp.argsort(-key, axis=1, stable=True)
  scores, rewards, sft, valid = (jnp.take_along_axis(x, order, axis=1)
                                 for x in (scores, rewards, sft, valid))
  size = scores.shape[1]
  position = jnp.arange(size)
  later = (position[None, :] > position[:, None])[None] & valid[:, None, :]
  gap = rewards[:, :, None] - rewards[:, None, :]                # T_kj
  has_later = jnp.any(later, axis=2)
  own_gap = jnp.max(jnp.where(later, gap, -jnp.inf), axis=2)     # T_kk
  own_gap = jnp.where(has_later, own_gap, 0)
  logits = jnp.where(later, scores[:, None, :] * gap, -jnp.inf)
  own_logit = scores * own_gap
  diagonal = jnp.eye(size, dtype=bool)[None]
  logits = jnp.where(diagonal, own_logit[:, :, None], logits)
  per_position = jax.nn.logsumexp(logits, axis=2) - own_logit
  rows = valid & has_later
  rank_loss = jnp.sum(jnp.where(rows, per_position, 0), axis=1)
  num_valid = jnp.sum(valid, axis=1, dtype=dtype)
  sft_loss = -sft[:, 0] * jnp.square(num_valid - 1)
  per_list = rank_loss + sft_weight * sft_loss
  list_valid = num_valid >= 2
  return _reduction.reduce_loss(per_list, mask=list_valid,
                                reduction=reduction)
