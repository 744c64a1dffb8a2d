"""Policy-gradient losses over token tensors, and their aggregation.

Inputs are token tensors `[N, T]` (N sequences of up to T tokens) with a response mask `[N, T]`
(True = a token produced by the policy); advantages are per token `[N, T]` or per sequence `[N]`
(broadcast over the valid tokens). With rho_t = exp(logp_t - old_logp_t):

  * `ppo_clip_loss`: max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high)), optional dual clip,
  * `stable_reinforce_loss`: the same with the log-ratio pre-clipped (R1-Reward),
  * `gspo_loss`: the same with GSPO's sequence-level ratio and per-token gradient,
  * `cispo_loss`: -sg(clip(rho)) A logp,
  * `vanilla_policy_gradient_loss`: -A logp,
  * `clipped_value_loss`: PPO's clipped value regression,
  * `entropy_from_logits`: per-token entropy `[N, T]` from logits `[N, T, V]`,
  * `aggregate_token_losses`: the four aggregation modes by name.

Convention: every loss returns `(loss, metrics)`: `loss` a float32 scalar aggregated by `agg`
(default "token-mean"), `metrics` a dict of float32 scalars (e.g. "clip_fraction"), computed on
valid tokens and without gradient. The pair plugs into `jax.value_and_grad(fn, has_aux=True)`.
Losses are to be minimised (the negated surrogate objectives).

Masked tokens are replaced by 0 before anything is computed: padding (even NaN/inf junk in the
log-probabilities) changes neither the loss nor its gradient. Computation is in float32. Ratios are
computed from log-ratios clamped to [-20, 20] (verl's guard; GSPO's sequence ratio is clamped at 10,
as in verl), so no value or gradient overflows for |log rho| up to 50 and beyond.
"""

import math
from typing import Dict, Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction

AGGREGATION_MODES = (
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")

# verl clamps log(pi / pi_old) to [-20, 20] before exponentiating.
_LOG_RATIO_BOUND = 20.0
# verl's clamp of GSPO's token-level log sequence ratio.
_GSPO_MAX_LOG_RATIO = 10.0
# R1-Reward's StableReinforce pre-clip: log rho in [ln 1e-3, ln 1e3].
STABLE_REINFORCE_LOG_RATIO_BOUNDS = (math.log(1e-3), math.log(1e3))

Metrics = Dict[str, jnp.ndarray]


def _check_aggregation(mode, norm_constant, name="agg"):
  """Checks an aggregation mode (argument `name`) and its optional `norm_constant`.

  Returns:
    `norm_constant`: None, or a scalar > 0 (see `_reduction.scalar_hyperparameter`).
  """
  if not isinstance(mode, str) or mode not in AGGREGATION_MODES:
    raise ValueError(
        f"`{name}` (the aggregation mode) must be one of {AGGREGATION_MODES}; got {mode!r}.")
  if norm_constant is None:
    return None
  return _reduction.scalar_hyperparameter(norm_constant, "norm_constant")


def aggregate_token_losses(
    losses: chex.Array,
    mask: chex.Array,
    mode: str = "token-mean",
    *,
    norm_constant: Optional[chex.Numeric] = None,
) -> jnp.ndarray:
  """Reduces per-token losses `[N, T]` to a scalar, by name (verl's `agg_loss`).

  With l the losses, M the mask, L_n = sum_t M_nt and S the sequences with L_n > 0:

    "token-mean":               sum_nt l M / sum_nt M                   (DAPO; every token equal)
    "seq-mean-token-mean":      mean_{n in S} (sum_t l M / L_n)         (GRPO paper, GSPO)
    "seq-mean-token-sum":       mean_{n in S} sum_t l M
    "seq-mean-token-sum-norm":  sum_nt l M / norm_constant              (Dr. GRPO)

  "-norm" divides the *total* (not a per-sequence mean) by a constant, as verl does; the default
  constant is T = `losses.shape[-1]`, which depends on padding: pass a fixed `norm_constant` (e.g.
  the maximum generation length, or N times it for a per-sequence mean) for a loss that does not
  change when the batch is padded further. Fully masked sequences are left out of the sequence
  means (as in recent verl). An all-masked batch gives 0. With equal lengths, "token-mean" equals
  "seq-mean-token-mean".

  Args:
    losses: [N, T] per-token losses.
    mask: [N, T] response mask.
    mode: one of `AGGREGATION_MODES` (default "token-mean").
    norm_constant: optional scalar > 0 for "seq-mean-token-sum-norm" (default T); ignored by the
      other modes.

  Returns:
    float32 scalar.

  Raises:
    ValueError: unknown `mode`, wrong shapes, bad `norm_constant`.
    TypeError: non-real `losses`.

  References:
    Yu et al. (2025), "DAPO", arXiv:2503.14476 (token-level loss); Liu et al. (2025),
    "Understanding R1-Zero-Like Training: A Critical Perspective", arXiv:2503.20783 (Dr. GRPO).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.policy_gradient import aggregate_token_losses
  >>> l, m = jnp.array([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]), jnp.array([[1, 1, 1], [1, 0, 0]])
  >>> [float(aggregate_token_losses(l, m, mode)) for mode in ("token-mean", "seq-mean-token-mean",
  ...      "seq-mean-token-sum", "seq-mean-token-sum-norm")]
  [1.75, 2.5, 3.5, 2.33...]
  """
  norm_constant = _check_aggregation(mode, norm_constant, "mode")
  (losses,), valid, _ = _reduction.sanitized_inputs([("losses", losses)], mask, "[N, T]")
  return _aggregate(losses, valid, norm_constant, mode=mode)


def _aggregate(losses, valid, norm_constant, *, mode):
  """`losses` already 0 where not `valid`; `norm_constant` None means T."""
  dtype = losses.dtype
  if mode == "token-mean":
    return jnp.sum(losses) / jnp.maximum(jnp.sum(valid, dtype=dtype), 1)
  if mode == "seq-mean-token-sum-norm":
    if norm_constant is None:
      norm_constant = float(losses.shape[-1])
    return jnp.sum(losses) / norm_constant
  lengths = jnp.sum(valid, axis=-1, dtype=dtype)
  per_sequence = jnp.sum(losses, axis=-1)
  if mode == "seq-mean-token-mean":
    per_sequence = per_sequence / jnp.maximum(lengths, 1)
  has_tokens = lengths > 0
  return (jnp.sum(jnp.where(has_tokens, per_sequence, 0))
          / jnp.maximum(jnp.sum(has_tokens, dtype=dtype), 1))


def _ratio(log_ratio):
  """rho = exp(log_ratio), the log-ratio clamped to [-20, 20] first (verl's overflow guard)."""
  return jnp.exp(jnp.clip(log_ratio, -_LOG_RATIO_BOUND, _LOG_RATIO_BOUND))


def _masked_token_mean(x, valid):
  x = jax.lax.stop_gradient(x).astype(jnp.float32)
  return jnp.sum(jnp.where(valid, x, 0)) / jnp.maximum(jnp.sum(valid, dtype=x.dtype), 1)


def _policy_inputs(logp, old_logp, advantages, mask):
  """Checks and sanitises (logp, old_logp, advantages, mask) -> float32 [N, T] arrays + valid."""
  (logp,), valid, dtype = _reduction.sanitized_inputs([("logp", logp)], mask, "[N, T]")
  if old_logp is not None:
    old_logp = _reduction.same_shape_input(old_logp, "old_logp", logp, "logp", valid, dtype)
  advantages = _token_advantages(advantages, logp.shape, valid, dtype)
  return logp, old_logp, advantages, valid


def _token_advantages(advantages, shape, valid, dtype):
  advantages = _reduction.as_real_array(advantages, "advantages")
  if advantages.ndim == 1 and advantages.shape[0] == shape[0]:
    advantages = jnp.broadcast_to(advantages[:, None], shape)
  elif tuple(advantages.shape) != tuple(shape):
    raise ValueError(
        f"`advantages` must have shape [N] = ({shape[0]},) or [N, T] = {tuple(shape)} (from "
        f"`logp`); got shape {tuple(advantages.shape)}.")
  # Advantages are constants of the policy loss.
  return jax.lax.stop_gradient(jnp.where(valid, advantages.astype(dtype), 0))


def _check_eps_pair(eps_low, eps_high):
  eps_low = _reduction.scalar_hyperparameter(eps_low, "eps_low", allow_zero=True)
  eps_high = eps_low if eps_high is None else _reduction.scalar_hyperparameter(
      eps_high, "eps_high", allow_zero=True)
  if isinstance(eps_low, float) and eps_low >= 1.0:
    raise ValueError(f"`eps_low` must be < 1 (the lower clip is 1 - eps_low); got {eps_low!r}.")
  return eps_low, eps_high


def _check_dual_clip(dual_clip):
  if dual_clip is None:
    return None
  dual_clip = _reduction.scalar_hyperparameter(dual_clip, "dual_clip")
  if isinstance(dual_clip, float) and dual_clip <= 1.0:
    raise ValueError(f"`dual_clip` must be > 1 (verl asserts the same); got {dual_clip!r}.")
  return dual_clip


def _clipped_surrogate(ratio, advantages, eps_low, eps_high, dual_clip, valid):
  """Per-token PPO losses and their metrics from a ratio that carries the gradient."""
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  losses = jnp.maximum(unclipped, clipped)
  metrics = {"clip_fraction": _masked_token_mean(clipped > unclipped, valid)}
  if dual_clip is not None:
    floor = -advantages * dual_clip
    lower = (advantages < 0) & (losses > floor)
    losses = jnp.where(advantages < 0, jnp.minimum(losses, floor), losses)
    metrics["clip_fraction_lower"] = _masked_token_mean(lower, valid)
  return jnp.where(valid, losses, 0), metrics


def ppo_clip_loss(
    logp: chex.Array,
    old_logp: chex.Array,
    advantages: chex.Array,
    mask: chex.Array,
    *,
    eps_low: chex.Numeric = 0.2,
    eps_high: Optional[chex.Numeric] = None,
    dual_clip: Optional[chex.Numeric] = None,
    agg: str = "token-mean",
    norm_constant: Optional[chex.Numeric] = None,
) -> Tuple[jnp.ndarray, Metrics]:
  """PPO's clipped surrogate with asymmetric clipping (DAPO's clip-higher) and dual clip.

    l_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps_low, 1 + eps_high))
    dual clip (A_t < 0 only):  l_t = min(l_t, -A_t c)

  At rho = 1 (the first update on fresh samples) the gradient equals the vanilla policy gradient's,
  -A grad log pi. Typical values: eps_low = eps_high = 0.2; DAPO eps_high = 0.28; dual clip
  c = 3 (verl), 10 (BNPO, DLER).

  Args:
    logp: [N, T] log pi_theta of the sampled tokens (the argument differentiated).
    old_logp: [N, T] log pi_old of the same tokens (the sampling policy).
    advantages: [N, T] or [N] advantages (treated as constants).
    mask: [N, T] response mask.
    eps_low: lower clip epsilon in [0, 1) (default 0.2).
    eps_high: upper clip epsilon >= 0 (default: `eps_low`).
    dual_clip: optional c > 1 (default None: no dual clip).
    agg: aggregation mode (default "token-mean"; see `aggregate_token_losses`).
    norm_constant: for agg="seq-mean-token-sum-norm" (default T).

  Returns:
    (loss, metrics): float32 scalar loss; metrics "clip_fraction" (tokens where the clipped term
    is active), "approx_kl" (mean of old_logp - logp), and with `dual_clip` also
    "clip_fraction_lower" (tokens where the dual clip is active).

  Raises:
    ValueError: wrong shapes, out-of-range epsilons or `dual_clip`, unknown `agg`.
    TypeError: non-real inputs.

  References:
    Schulman et al. (2017), "Proximal Policy Optimization Algorithms", arXiv:1707.06347.
    Ye et al. (2020), "Mastering Complex Control in MOBA Games with Deep Reinforcement Learning",
    arXiv:1912.09729 (dual clip). Yu et al. (2025), "DAPO", arXiv:2503.14476 (clip-higher).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.policy_gradient import ppo_clip_loss
  >>> logp, old = jnp.log(jnp.array([[1.5, 0.5]])), jnp.zeros((1, 2))  # rho = (1.5, 0.5)
  >>> loss, metrics = ppo_clip_loss(logp, old, jnp.array([1.0]), jnp.ones((1, 2)))
  >>> float(loss), float(metrics["clip_fraction"])  # mean of (-1.2, -0.5): first term clipped
  (-0.85..., 0.5)
  """
  norm_constant = _check_aggregation(agg, norm_constant)
  eps_low, eps_high = _check_eps_pair(eps_low, eps_high)
  dual_clip = _check_dual_clip(dual_clip)
  logp, old_logp, advantages, valid = _policy_inputs(logp, old_logp, advantages, mask)
  return _ppo(logp, old_logp, advantages, valid, eps_low, eps_high, dual_clip, None,
              norm_constant, agg=agg)


def _ppo(logp, old_logp, advantages, valid, eps_low, eps_high, dual_clip, log_ratio_bounds,
         norm_constant, *, agg):
  log_ratio = logp - old_logp
  if log_ratio_bounds is not None:
    log_ratio = jnp.clip(log_ratio, log_ratio_bounds[0], log_ratio_bounds[1])
  ratio = _ratio(log_ratio)
  losses, metrics = _clipped_surrogate(ratio, advantages, eps_low, eps_high, dual_clip, valid)
  metrics["approx_kl"] = _masked_token_mean(-(logp - old_logp), valid)
  return _aggregate(losses, valid, norm_constant, mode=agg), metrics


def stable_reinforce_loss(
    logp: chex.Array,
    old_logp: chex.Array,
    advantages: chex.Array,
    mask: chex.Array,
    *,
    eps_low: chex.Numeric = 0.2,
    eps_high: Optional[chex.Numeric] = None,
    log_ratio_bounds: Tuple[float, float] = STABLE_REINFORCE_LOG_RATIO_BOUNDS,
    agg: str = "token-mean",
    norm_constant: Optional[chex.Numeric] = None,
) -> Tuple[jnp.ndarray, Metrics]:
  """StableReinforce's pre-clip: clamp log rho before exponentiating, then the PPO clip.

    rho_t = exp(clip(logp_t - old_logp_t, ln 1e-3, ln 1e3)),   then `ppo_clip_loss`'s l_t

  The pre-clip bounds the ratio (and its gradient) when the policy has drifted far from the
  sampling policy, where `exp` of a large log-ratio would dominate the update. R1-Reward's
  second ingredient, the advantage filter (drop samples whose advantage is beyond 3 standard
  deviations), is not included: mask those tokens out with `mask` if wanted.

  Args:
    logp, old_logp, advantages, mask: as in `ppo_clip_loss`.
    eps_low, eps_high: as in `ppo_clip_loss` (default 0.2, 0.2).
    log_ratio_bounds: (lo, hi) Python floats, lo < 0 < hi (default (ln 1e-3, ln 1e3)).
    agg, norm_constant: as in `ppo_clip_loss`.

  Returns:
    (loss, metrics) as in `ppo_clip_loss` (no dual clip).

  Raises:
    ValueError: bad `log_ratio_bounds`; see `ppo_clip_loss`.

  References:
    Zhang et al. (2025), "R1-Reward: Training Multimodal Reward Model Through Stable
    Reinforcement Learning", arXiv:2505.02835.

  >>> import jax, jax.numpy as jnp
  >>> from rmjax.losses.policy_gradient import stable_reinforce_loss
  >>> # log rho = -50 (pre-clipped to ln 1e-3), A = -1: loss = -A * 0.8 (the lower clip)
  >>> loss, _ = stable_reinforce_loss(jnp.array([[-50.0]]), jnp.zeros((1, 1)), jnp.array([-1.0]),
  ...                                 jnp.ones((1, 1)))
  >>> float(loss)
  0.8...
  """
  norm_constant = _check_aggregation(agg, norm_constant)
  eps_low, eps_high = _check_eps_pair(eps_low, eps_high)
  try:
    lo, hi = (float(b) for b in log_ratio_bounds)
  except (TypeError, ValueError):
    raise ValueError(
        f"`log_ratio_bounds` must be a pair (lo, hi) of numbers; got {log_ratio_bounds!r}."
    ) from None
  if not lo < 0.0 < hi:
    raise ValueError(f"`log_ratio_bounds` must satisfy lo < 0 < hi; got {log_ratio_bounds!r}.")
  logp, old_logp, advantages, valid = _policy_inputs(logp, old_logp, advantages, mask)
  return _ppo(logp, old_logp, advantages, valid, eps_low, eps_high, None, (lo, hi),
              norm_constant, agg=agg)


def gspo_loss(
    logp: chex.Array,
    old_logp: chex.Array,
    advantages: chex.Array,
    mask: chex.Array,
    *,
    eps_low: chex.Numeric = 3e-4,
    eps_high: Optional[chex.Numeric] = 4e-4,
    agg: str = "seq-mean-token-mean",
    norm_constant: Optional[chex.Numeric] = None,
) -> Tuple[jnp.ndarray, Metrics]:
  """GSPO: PPO clipping on the length-normalised sequence ratio, with a per-token gradient.

    log s_n   = (1 / L_n) sum_t M_nt (logp_nt - old_logp_nt)     (sequence ratio, geometric mean)
    log s_nt  = sg(log s_n) + logp_nt - sg(logp_nt)             (GSPO-token; value = log s_n)
    l_nt      = max(-A_nt s_nt, -A_nt clip(s_nt, 1 - eps_low, 1 + eps_high))

  The stop-gradient trick makes the value of s_nt the sequence ratio while its gradient is
  s_n grad logp_nt; with sequence-level advantages this equals GSPO's gradient exactly
  (Zheng et al. 2025, Sec. 4.3; verl's `compute_policy_loss_gspo`, whose clamp of log s_nt at 10 is
  kept). Defaults follow the paper's clipping ranges (3e-4, 4e-4) and verl's "seq-mean-token-mean".

  Args:
    logp, old_logp: [N, T] log-probabilities under the current and the sampling policy.
    advantages: [N] sequence advantages (or [N, T], constant over each sequence's tokens).
    mask: [N, T] response mask.
    eps_low: lower clip (default 3e-4).
    eps_high: upper clip (default 4e-4; None: `eps_low`).
    agg: aggregation mode (default "seq-mean-token-mean").
    norm_constant: for agg="seq-mean-token-sum-norm".

  Returns:
    (loss, metrics): metrics "clip_fraction" and "approx_kl".

  Raises:
    ValueError: wrong shapes, bad epsilons, unknown `agg`.
    TypeError: non-real inputs.

  References:
    Zheng et al. (2025), "Group Sequence Policy Optimization", arXiv:2507.18071.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.policy_gradient import gspo_loss
  >>> loss, _ = gspo_loss(jnp.zeros((1, 3)), jnp.zeros((1, 3)), jnp.array([2.0]), jnp.ones((1, 3)))
  >>> float(loss)  # s = 1: -A
  -2.0
  """
  norm_constant = _check_aggregation(agg, norm_constant)
  eps_low, eps_high = _check_eps_pair(eps_low, eps_high)
  logp, old_logp, advantages, valid = _policy_inputs(logp, old_logp, advantages, mask)
  return _gspo(logp, old_logp, advantages, valid, eps_low, eps_high, norm_constant, agg=agg)


def _gspo(logp, old_logp, advantages, valid, eps_low, eps_high, norm_constant, *, agg):
  log_ratio = logp - old_logp
  lengths = jnp.sum(valid, axis=-1, keepdims=True, dtype=logp.dtype)
  log_sequence_ratio = jnp.sum(log_ratio, axis=-1, keepdims=True) / jnp.maximum(lengths, 1)
  log_token_ratio = (logp - jax.lax.stop_gradient(logp)
                     + jax.lax.stop_gradient(log_sequence_ratio))
  ratio = jnp.exp(jnp.minimum(log_token_ratio, _GSPO_MAX_LOG_RATIO))
  losses, metrics = _clipped_surrogate(ratio, advantages, eps_low, eps_high, None, valid)
  metrics["approx_kl"] = _masked_token_mean(-log_ratio, valid)
  return _aggregate(losses, valid, norm_constant, mode=agg), metrics


def cispo_loss(
    logp: chex.Array,
    old_logp: chex.Array,
    advantages: chex.Array,
    mask: chex.Array,
    *,
    eps_high: chex.Numeric,
    eps_low: Optional[chex.Numeric] = None,
    agg: str = "token-mean",
    norm_constant: Optional[chex.Numeric] = None,
) -> Tuple[jnp.ndarray, Metrics]:
  """CISPO: REINFORCE weighted by a clipped, stop-gradient importance weight.

    l_t = -sg(clip(rho_t, 1 - eps_low, 1 + eps_high)) * A_t * logp_t

  Unlike PPO, no token loses its gradient when its ratio leaves the trust region: only its weight
  is capped. MiniMax-M1 sets no lower bound (eps_low = None here, i.e. clip at 0 from below) and
  tunes eps_high (there is no canonical default, so it is required here).

  Args:
    logp, old_logp: [N, T] log-probabilities under the current and the sampling policy.
    advantages: [N, T] or [N] advantages.
    mask: [N, T] response mask.
    eps_high: upper clip epsilon >= 0 (required).
    eps_low: optional lower clip epsilon in [0, 1) (default None: no lower clip).
    agg: aggregation mode (default "token-mean", as in the paper).
    norm_constant: for agg="seq-mean-token-sum-norm".

  Returns:
    (loss, metrics): metrics "clip_fraction" (tokens whose weight is clipped) and "approx_kl".

  Raises:
    ValueError: wrong shapes, bad epsilons, unknown `agg`.
    TypeError: non-real inputs.

  References:
    MiniMax (2025), "MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention",
    arXiv:2506.13585, Eq. 4-5.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.policy_gradient import cispo_loss
  >>> logp, old = jnp.log(jnp.array([[0.5]])), jnp.log(jnp.array([[0.25]]))  # rho = 2
  >>> loss, m = cispo_loss(logp, old, jnp.array([1.0]), jnp.ones((1, 1)), eps_high=0.2)
  >>> round(float(loss), 4), float(m["clip_fraction"])  # -1.2 * log 0.5
  (0.8318, 1.0)
  """
  norm_constant = _check_aggregation(agg, norm_constant)
  eps_high = _reduction.scalar_hyperparameter(eps_high, "eps_high", allow_zero=True)
  if eps_low is not None:
    eps_low, _ = _check_eps_pair(eps_low, eps_high)
  logp, old_logp, advantages, valid = _policy_inputs(logp, old_logp, advantages, mask)
  return _cispo(logp, old_logp, advantages, valid, eps_low, eps_high, norm_constant, agg=agg)


def _cispo(logp, old_logp, advantages, valid, eps_low, eps_high, norm_constant, *, agg):
  log_ratio = logp - old_logp
  ratio = _ratio(log_ratio)
  lower = 0.0 if eps_low is None else 1.0 - eps_low
  weight = jax.lax.stop_gradient(jnp.clip(ratio, lower, 1.0 + eps_high))
  losses = jnp.where(valid, -weight * advantages * logp, 0)
  metrics = {
      "clip_fraction": _masked_token_mean(weight != ratio, valid),
      "approx_kl": _masked_token_mean(-log_ratio, valid),
  }
  return _aggregate(losses, valid, norm_constant, mode=agg), metrics


def vanilla_policy_gradient_loss(
    logp: chex.Array,
    advantages: chex.Array,
    mask: chex.Array,
    *,
    agg: str = "token-mean",
    norm_constant: Optional[chex.Numeric] = None,
) -> Tuple[jnp.ndarray, Metrics]:
  """The plain policy-gradient (REINFORCE / GPG) loss: l_t = -A_t logp_t.

  Its gradient is -A grad log pi, the on-policy policy gradient; it equals PPO's gradient at
  rho = 1.

  Args:
    logp: [N, T] log pi_theta of the sampled tokens.
    advantages: [N, T] or [N] advantages.
    mask: [N, T] response mask.
    agg: aggregation mode (default "token-mean").
    norm_constant: for agg="seq-mean-token-sum-norm".

  Returns:
    (loss, metrics) with empty metrics.

  Raises:
    ValueError: wrong shapes, unknown `agg`.
    TypeError: non-real inputs.

  References:
    Williams (1992), "Simple statistical gradient-following algorithms for connectionist
    reinforcement learning"; Chu et al. (2025), "GPG: A Simple and Strong Reinforcement Learning
    Baseline for Model Reasoning", arXiv:2504.02546.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.policy_gradient import vanilla_policy_gradient_loss
  >>> loss, _ = vanilla_policy_gradient_loss(jnp.log(jnp.array([[0.5]])), jnp.array([2.0]),
  ...                                        jnp.ones((1, 1)))
  >>> round(float(loss), 4)  # -2 log 0.5
  1.3863
  """
  norm_constant = _check_aggregation(agg, norm_constant)
  logp, _, advantages, valid = _policy_inputs(logp, None, advantages, mask)
  losses = jnp.where(valid, -advantages * logp, 0)
  return _aggregate(losses, valid, norm_constant, mode=agg), {}


def clipped_value_loss(
    values: chex.Array,
    old_values: chex.Array,
    returns: chex.Array,
    mask: chex.Array,
    *,
    clip_range: chex.Numeric = 0.2,
    agg: str = "token-mean",
    norm_constant: Optional[chex.Numeric] = None,
) -> Tuple[jnp.ndarray, Metrics]:
  """PPO's clipped value loss.

    V_clip = V_old + clip(V - V_old, -eps_v, eps_v)
    l_t    = 0.5 max((V_t - R_t)^2, (V_clip_t - R_t)^2)

  Args:
    values: [N, T] current value predictions (differentiated).
    old_values: [N, T] value predictions at sampling time.
    returns: [N, T] regression targets (e.g. `gae(...)[1]`; treated as constants).
    mask: [N, T] response mask.
    clip_range: eps_v >= 0 (default 0.2).
    agg: aggregation mode (default "token-mean").
    norm_constant: for agg="seq-mean-token-sum-norm".

  Returns:
    (loss, metrics): metric "value_clip_fraction" (tokens where the clipped term is larger).

  Raises:
    ValueError: wrong shapes, bad `clip_range`, unknown `agg`.
    TypeError: non-real inputs.

  References:
    Schulman et al. (2017), "Proximal Policy Optimization Algorithms", arXiv:1707.06347 (as in
    the OpenAI baselines implementation).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.policy_gradient import clipped_value_loss
  >>> loss, m = clipped_value_loss(jnp.array([[1.0]]), jnp.array([[0.0]]), jnp.array([[1.0]]),
  ...                              jnp.ones((1, 1)))
  >>> round(float(loss), 4), float(m["value_clip_fraction"])  # 0.5 max(0, 0.8^2)
  (0.32, 1.0)
  """
  norm_constant = _check_aggregation(agg, norm_constant)
  clip_range = _reduction.scalar_hyperparameter(clip_range, "clip_range", allow_zero=True)
  (values,), valid, dtype = _reduction.sanitized_inputs([("values", values)], mask, "[N, T]")
  old_values, returns = (
      jax.lax.stop_gradient(_reduction.same_shape_input(x, name, values, "values", valid, dtype))
      for x, name in ((old_values, "old_values"), (returns, "returns")))
  clipped = old_values + jnp.clip(values - old_values, -clip_range, clip_range)
  unclipped_error = jnp.square(values - returns)
  clipped_error = jnp.square(clipped - returns)
  losses = jnp.where(valid, 0.5 * jnp.maximum(unclipped_error, clipped_error), 0)
  metrics = {"value_clip_fraction": _masked_token_mean(clipped_error > unclipped_error, valid)}
  return _aggregate(losses, valid, norm_constant, mode=agg), metrics


def entropy_from_logits(logits: chex.Array, *, mask: Optional[chex.Array] = None) -> jnp.ndarray:
  """Per-position entropy of softmax(logits): H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v.

  Computed from `log_softmax` (stable for logits up to 1e4 in magnitude, and for -inf logits of
  disallowed tokens, which contribute 0). For an entropy bonus, subtract
  `coef * aggregate_token_losses(entropy_from_logits(logits), mask, agg)` from the loss.

  Args:
    logits: [N, T, V] (or [..., V]) logits.
    mask: optional [N, T] (the shape without V) validity mask; masked positions come back 0.

  Returns:
    [N, T] float32 entropies in [0, log V].

  Raises:
    ValueError: `logits` a scalar, `mask` of the wrong shape.
    TypeError: non-real `logits`.

  References:
    Williams & Peng (1991), "Function Optimization using Connectionist Reinforcement Learning
    Algorithms" (entropy regularisation); Schulman et al. (2017), arXiv:1707.06347.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.policy_gradient import entropy_from_logits
  >>> round(float(entropy_from_logits(jnp.zeros((1, 1, 4)))[0, 0]), 4)  # log 4
  1.3863
  """
  logits = _reduction.as_real_array(logits, "logits")
  if logits.ndim < 1:
    raise ValueError(f"`logits` must have shape [..., V]; got shape {tuple(logits.shape)}.")
  valid = _reduction.validity_mask(mask, logits.shape[:-1], "mask")
  return _entropy(logits, valid)


def _entropy(logits, valid):
  dtype = _reduction.compute_dtype(logits)
  logits = jnp.where(valid[..., None], logits.astype(dtype), 0)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  support = p > 0
  terms = jnp.where(support, p * jnp.where(support, log_p, 0), 0)
  return jnp.where(valid, -jnp.sum(terms, axis=-1), 0)
