"""Token-level inputs of the paired losses: WPO's pair weights, LD-DPO's log-probs.

Both start from the per-token view of a pair, [B, T] token log-probabilities
(or [B, T, V] logits) with [B, T] response masks, and produce what the paired
losses take: WPO a [B] `weights=` argument for any of them, LD-DPO the [B]
sequence log-probabilities. Chosen and rejected responses may have different
lengths T_w and T_l. Notation and conventions in
`rmjax.losses.direct_preference`.
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import log_probs


def _check_same_batch(chosen, chosen_name, rejected, rejected_name):
  if chosen.shape[0] != rejected.shape[0]:
    raise ValueError(
        f"`{rejected_name}` must have the batch size B = {chosen.shape[0]} of "
        f"`{chosen_name}` {tuple(chosen.shape)}; got shape "
        f"{tuple(rejected.shape)}.")


def _wpo_log_weight(logits, targets, mask):
  """[B] mean over valid tokens of log(p(y_t) / sum_v p(v)^2)."""
  logp = log_probs.token_log_probs(logits, targets, mask=mask)
  valid = _reduction.validity_mask(mask, logp.shape, "mask")
  x = jnp.where(valid[..., None], jnp.asarray(logits).astype(jnp.float32), 0)
  # log sum_v p_v^2 = logsumexp(2 x) - 2 logsumexp(x).
  log_sum_sq = (jax.nn.logsumexp(2.0 * x, axis=-1)
                - 2.0 * jax.nn.logsumexp(x, axis=-1))
  return log_probs.sequence_log_probs(logp - log_sum_sq, valid,
                                      aggregation="mean")


def wpo_weights(
    chosen_logits: chex.Array,
    chosen_targets: chex.Array,
    rejected_logits: chex.Array,
    rejected_targets: chex.Array,
    *,
    chosen_mask: Optional[chex.Array] = None,
    rejected_mask: Optional[chex.Array] = None,
    max_weight: Optional[float] = None,
) -> jnp.ndarray:
  """WPO's per-pair weights: how likely the policy is to produce each response.

    log w(y) = 1/|y| sum_t log( pi(y_t | x, y_<t) / sum_v pi(v | x, y_<t)^2 )
    weight_i = stop_gradient(w(y_w,i) w(y_l,i))       (min(., max_weight) if set)

  Weighted Preference Optimization reweights off-policy preference pairs by
  the probability that the current policy would sample them, so that pairs
  close to on-policy count more (Zhou et al. 2024, eq. 2). Each token's
  probability is renormalised by sum_v pi(v)^2, the probability that two
  samples from the token distribution agree ("sampled alignment"), which
  corrects for how peaked the distribution is; the log is length-normalised
  (the mean over the response tokens). The weights carry no gradient. Pass
  them as `weights=` to any paired loss (`dpo_loss`, `ipo_loss`, ...; not
  the AOT losses, whose terms belong to ranks), as TRL's use_weighting=True
  multiplies each pair's loss.

  TRL computes the same from the policy's logits (log_softmax, then
  logsumexp of twice the log-probabilities), detached. Older TRL releases
  clamp the pair weight at 1 (`max_weight=1.0` here); its newest
  DPOTrainer does not (the default, None). The logits are the policy's own
  (not the reference's), so this needs the full [B, T, V] logits per token.

  Sanity values: a uniform token distribution over V gives
  p / sum p^2 = (1/V) / (1/V) = 1 per token, so w = 1; a response of greedy
  tokens of a peaked distribution gives w > 1.

  Args:
    chosen_logits: [B, T_w, V] policy logits predicting the chosen response
      tokens (any float dtype; computed in float32).
    chosen_targets: [B, T_w] integer token ids of the chosen response.
    rejected_logits: [B, T_l, V] policy logits for the rejected response.
    rejected_targets: [B, T_l] token ids of the rejected response.
    chosen_mask: optional [B, T_w] response mask (prompt and padding False);
      masked positions may hold junk logits and out-of-range targets.
    rejected_mask: optional [B, T_l] response mask.
    max_weight: None (default) or a Python float > 0 capping the pair weight.

  Returns:
    float32 [B] pair weights (1 for a pair whose two responses have no valid
    token).

  Raises:
    ValueError: wrongly shaped inputs, different batch sizes, out-of-range
      targets (outside `jit`), or a bad `max_weight`.
    TypeError: non-floating logits or non-integer targets.

  References:
    Zhou et al. (2024), "WPO: Enhancing RLHF with Weighted Preference
    Optimization", arXiv:2406.11827.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import wpo_weights
  >>> # V = 2, one token each: p = (0.75, 0.25), sum p^2 = 0.625
  >>> logits = jnp.log(jnp.array([[[0.75, 0.25]]]))
  >>> w = wpo_weights(logits, jnp.array([[0]]), logits, jnp.array([[1]]))
  >>> float(w[0])  # (0.75 / 0.625) (0.25 / 0.625) = 1.2 * 0.4
  0.48...
  """
  if max_weight is not None:
    max_weight = _reduction.scalar_hyperparameter(max_weight, "max_weight")
  chosen_logits = jnp.asarray(chosen_logits)
  rejected_logits = jnp.asarray(rejected_logits)
  _reduction.check_rank(chosen_logits, 3, "chosen_logits", "[B, T_w, V]")
  _reduction.check_rank(rejected_logits, 3, "rejected_logits", "[B, T_l, V]")
  _check_same_batch(chosen_logits, "chosen_logits", rejected_logits,
                    "rejected_logits")
  log_weight = (_wpo_log_weight(chosen_logits, chosen_targets, chosen_mask)
                + _wpo_log_weight(rejected_logits, rejected_targets,
                                  rejected_mask))
  weight = jnp.exp(jax.lax.stop_gradient(log_weight))
  if max_weight is not None:
    weight = jnp.minimum(weight, max_weight)
  return weight


def ld_dpo_log_probs(
    chosen_token_logps: chex.Array,
    rejected_token_logps: chex.Array,
    *,
    alpha: float,
    chosen_mask: Optional[chex.Array] = None,
    rejected_mask: Optional[chex.Array] = None,
) -> tuple:
  """LD-DPO's length-desensitised sequence log-probabilities of a pair.

    l_p = min(|y_w|, |y_l|)                     (the "public" length)
    logp(y) = sum_{k <= l_p} logp(y_k) + alpha sum_{k > l_p} logp(y_k)

  k counting the response tokens of y (the valid positions of its mask, in
  order). The tokens beyond the shorter response's length are scaled by
  alpha in [0, 1], which damps DPO's drift towards longer responses
  (Liu et al. 2024); alpha = 1 gives the plain sums (`sequence_log_probs`),
  alpha = 0 truncates both responses to l_p. Apply it with the same masks to
  the policy's and the reference's token log-probabilities and feed the four
  results to `dpo_loss` (or any paired loss on summed log-probabilities),
  as TRL's newest DPOTrainer does with ld_alpha (earlier releases applied it
  to the policy only, and counted positions from the start of prompt plus
  response rather than among the response tokens).

  Sanity values: |y_w| = |y_l| -> the plain sums for any alpha; token
  log-probs (-1, -2, -3) and (-4) with alpha = 0.5 -> -1 + 0.5 (-2 - 3) =
  -3.5 and -4.

  Args:
    chosen_token_logps: [B, T_w] token log-probabilities of the chosen
      responses (e.g. `token_log_probs`).
    rejected_token_logps: [B, T_l] of the rejected responses.
    alpha: Python float in [0, 1], the weight of the tokens beyond l_p
      (required; TRL's ld_alpha, which has no default).
    chosen_mask: optional [B, T_w] response mask (default: every token
      counts); masked entries may hold junk.
    rejected_mask: optional [B, T_l] response mask.

  Returns:
    (chosen_logps, rejected_logps): float32 [B] each.

  Raises:
    ValueError: bad `alpha`, wrongly shaped inputs or different batch sizes.
    TypeError: non-real inputs.

  References:
    Liu et al. (2024), "Length Desensitization in Direct Preference
    Optimization", arXiv:2409.06411.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import ld_dpo_log_probs
  >>> chosen, rejected = ld_dpo_log_probs(
  ...     jnp.array([[-1.0, -2.0, -3.0]]), jnp.array([[-4.0]]), alpha=0.5)
  >>> chosen.tolist(), rejected.tolist()
  ([-3.5], [-4.0])
  """
  if (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
      or not 0.0 <= alpha <= 1.0):
    raise ValueError(
        f"`alpha` must be a Python float in [0, 1]; got "
        f"{type(alpha).__name__} {alpha!r}.")
  (chosen,), chosen_valid, _ = _reduction.sanitized_inputs(
      [("chosen_token_logps", chosen_token_logps)], chosen_mask, "[B, T_w]",
      mask_name="chosen_mask")
  (rejected,), rejected_valid, _ = _reduction.sanitized_inputs(
      [("rejected_token_logps", rejected_token_logps)], rejected_mask,
      "[B, T_l]", mask_name="rejected_mask")
  _check_same_batch(chosen, "chosen_token_logps", rejected,
                    "rejected_token_logps")
  public_length = jnp.minimum(jnp.sum(chosen_valid, axis=1),
                              jnp.sum(rejected_valid, axis=1))[:, None]

  def desensitised(logps, valid):
    position = jnp.cumsum(valid, axis=1)  # 1-based among the response tokens
    return jnp.sum(jnp.where(position <= public_length, logps, alpha * logps),
                   axis=1)

  return (desensitised(chosen, chosen_valid),
          desensitised(rejected, rejected_valid))
