"""Paired direct-preference losses: one chosen and one rejected response per prompt.

DPO and cDPO, robust DPO, IPO, hinge (SLiC), SimPO, ORPO, SELM and DNO, and DPO's
`implicit_rewards`; and the per-pair losses of TRL's DPOTrainer beyond those:
EXO, NCA, SPPO (hard labels), APO-zero and APO-down, DiscoPOP and f-DPO
(`f_divergence_dpo_loss`). Notation and conventions in
`rmjax.losses.direct_preference`.
"""

import functools
import math
import numbers
from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses.direct_preference import _shared

# ORPO's log-odds need p = exp(mean logp) < 1: mean log-probabilities above
# this are clamped to it (odds of at most ~1e6).
_MAX_MEAN_LOGP = -1e-6

# exp overflows float32 at 88.7: the exponentials of DiscoPOP and f-DPO take
# their argument capped at 80 (reached only by log-ratios far beyond any sane
# policy's, e.g. -80 nats for the forward KL).
_MAX_EXP_ARGUMENT = 80.0

# f-DPO's divergences (`f_divergence_dpo_loss`), TRL's f_divergence_type names.
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence",
                 "alpha_divergence")


def _margin_loss(policy_chosen_logps, policy_rejected_logps,
                 reference_chosen_logps, reference_rejected_logps, weights,
                 mask, beta, *, per_pair, static_args=(), reduction):
  """Reduces `per_pair(h, beta, *static_args)` of the log-ratio margins h.

  The shared body of the losses that depend on a pair only through
  h = (pi_w - ref_w) - (pi_l - ref_l) (rDPO, IPO, hinge, EXO, DiscoPOP).
  """
  return _shared.log_ratio_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta,
      per_pair=lambda a, b, beta: per_pair(a - b, beta, *static_args),
      reduction=reduction)


def _check_real_number(x, name: str) -> float:
  """A finite Python number (any sign), checked eagerly."""
  if (isinstance(x, bool) or not isinstance(x, numbers.Real)
      or isinstance(x, jax.Array) or x != x or abs(x) == float("inf")):
    raise ValueError(
        f"`{name}` must be a finite Python number; got "
        f"{type(x).__name__} {x!r}.")
  return float(x)


def implicit_rewards(
    policy_logps: chex.Array,
    reference_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """DPO's implicit reward r = beta (logp - logp_ref) of each response.

    r_i = beta * (policy_logps_i - reference_logps_i)

  The reward under which the policy is KL-optimal; its chosen-minus-rejected
  difference is beta * h. Useful as a metric (reward accuracy, margins) and as
  LiPO's score. Gradients are kept (wrap in `jax.lax.stop_gradient` for a
  metric).

  Args:
    policy_logps: [B] (or any shape) sequence log-probabilities under the
      policy.
    reference_logps: same shape, under the reference.
    beta: scalar > 0 (default 0.1), the KL coefficient.
    mask: optional validity mask of the same shape; masked entries give 0.

  Returns:
    float32 array shaped like `policy_logps`.

  References:
    Rafailov et al. (2023), "Direct Preference Optimization: Your Language
    Model is Secretly a Reward Model", arXiv:2305.18290.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import implicit_rewards
  >>> implicit_rewards(jnp.array([-10.0, -12.0]), jnp.array([-11.0, -11.0]))
  Array([ 0.1, -0.1], dtype=float32)
  """
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  (policy_logps, reference_logps), _, _ = _reduction.sanitized_inputs(
      [("policy_logps", policy_logps), ("reference_logps", reference_logps)],
      mask)
  return beta * (policy_logps - reference_logps)


def dpo_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    label_smoothing: float = 0.0,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """DPO, and conservative DPO (cDPO) with label smoothing e.

    loss_i = -(1 - e) log sigmoid(beta h_i) - e log sigmoid(-beta h_i)

  e = 0 is DPO. This is `bradley_terry_loss` of the implicit rewards
  beta (logp - logp_ref) of the chosen and the rejected response (one home
  for the BT likelihood): cDPO is its label smoothing, the label "chosen
  wins" being trusted with probability 1 - e.

  Sanity values: h = 0 -> log 2 = 0.6931 (any e); beta h = 2 -> 0.1269;
  beta h = 2, e = 0.1 -> 0.3269. The gradient is negative with respect to the
  chosen policy log-probability and positive with respect to the rejected one.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    beta: scalar > 0 (default 0.1).
    label_smoothing: Python float e in [0, 0.5) (default 0).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default; over valid pairs), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta`, `label_smoothing` or `reduction`, or wrongly
      shaped inputs (the message names the argument).
    TypeError: non-real inputs.

  References:
    Rafailov et al. (2023), "Direct Preference Optimization: Your Language
    Model is Secretly a Reward Model", arXiv:2305.18290.
    Mitchell (2023), "A note on DPO with noisy preferences & relationship to
    IPO" (cDPO).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import dpo_loss
  >>> z = jnp.zeros(2)
  >>> float(dpo_loss(z, z, z, z))  # h = 0: log 2
  0.6931...
  >>> # h = 20, beta h = 2: softplus(-2)
  >>> float(dpo_loss(jnp.array([-10.0]), jnp.array([-30.0]),
  ...                jnp.zeros(1), jnp.zeros(1)))
  0.1269...
  """
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  label_smoothing = _reduction.check_probability(label_smoothing,
                                                 "label_smoothing")
  _reduction.check_reduction(reduction)
  return _shared.dpo_from_arrays(
      *_shared.as_arrays(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, weights,
               mask), beta, label_smoothing=label_smoothing,
      reduction=reduction)


def robust_dpo_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    label_smoothing: float,
    beta: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """Robust DPO (rDPO): the unbiased DPO loss under label flips of rate e.

    loss_i = [(1 - e) softplus(-beta h_i) - e softplus(beta h_i)] / (1 - 2 e)

  Unlike cDPO (`dpo_loss(label_smoothing=e)`), the flipped term is
  *subtracted*: its expectation over labels flipped with probability e is the
  clean DPO loss. Chowdhury et al. (2024) define the loss as
  ((1 - e) l(h) - e l(-h)) / (1 - 2 e) with l the DPO loss, and TRL's
  loss_type="robust" computes the same (label_smoothing = e). The loss is not
  bounded below (it decreases linearly in h for large h); its gradient with
  respect to h is always negative.

  Sanity values: h = 0 -> log 2 (any e); e = 0 is DPO; beta h = 2, e = 0.1 ->
  (0.9 * 0.1269 - 0.1 * 2.1269) / 0.8 = -0.1231.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    label_smoothing: Python float e in [0, 0.5), the assumed flip rate
      (required: with e = 0 this is plain DPO).
    beta: scalar > 0 (default 0.1).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad hyperparameters or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Chowdhury, Kini & Natarajan (2024), "Provably Robust DPO: Aligning
    Language Models with Noisy Feedback", arXiv:2403.00409.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import robust_dpo_loss
  >>> float(robust_dpo_loss(jnp.array([-10.0]), jnp.array([-30.0]),
  ...                       jnp.zeros(1), jnp.zeros(1), label_smoothing=0.1))
  -0.1231...
  """
  e = _reduction.check_probability(label_smoothing, "label_smoothing")
  return _margin_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta,
      per_pair=_robust_dpo_per_pair, static_args=(e,), reduction=reduction)


def _robust_dpo_per_pair(h, beta, e):
  """rDPO's loss of the log-ratio margin h at the flip rate e (a float)."""
  z = beta * h
  return ((1.0 - e) * jax.nn.softplus(-z) - e * jax.nn.softplus(z)) / (
      1.0 - 2.0 * e)


def ipo_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """IPO: squared regression of the log-ratio margin on 1 / (2 beta).

    loss_i = (h_i - 1 / (2 beta))^2

  (IPO's tau is `beta`.) Length-normalised IPO, as TRL computes it, is this
  function on mean token log-probabilities (`sequence_log_probs(...,
  aggregation="mean")`).

  Sanity values: h = 0 -> 1 / (4 beta^2) (= 25 at beta = 0.1); h = 1 / (2
  beta) -> 0 (the minimum).

  Args:
    policy_chosen_logps: [B] log pi(y_w | x) (summed or mean over tokens).
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    beta: scalar > 0 (default 0.1).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Azar et al. (2023), "A General Theoretical Paradigm to Understand Learning
    from Human Preferences", arXiv:2310.12036.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import ipo_loss
  >>> z = jnp.zeros(1)
  >>> float(ipo_loss(z, z, z, z))  # (0 - 5)^2
  25.0
  """
  return _margin_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta, per_pair=_ipo_per_pair,
      reduction=reduction)


def _ipo_per_pair(h, beta):
  """IPO's loss of the log-ratio margin h."""
  return jnp.square(h - 1.0 / (2.0 * beta))


def hinge_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """Hinge (SLiC) loss on the log-ratio margin.

    loss_i = max(0, 1 - beta h_i)

  SLiC-HF's calibration loss max(0, delta - log pi(y_w) + log pi(y_l)) is the
  reference-free case (reference log-probs 0) with delta = 1 / beta; the
  version with the reference log-ratio is RSO's "normalized" hinge and TRL's
  loss_type="hinge".

  Sanity values: h = 0 -> 1; the loss is 0 once beta h >= 1; gradient -beta
  (chosen) and +beta (rejected) while beta h < 1.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x) (zeros for SLiC).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    beta: scalar > 0 (default 0.1).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Zhao et al. (2023), "SLiC-HF: Sequence Likelihood Calibration with Human
    Feedback", arXiv:2305.10425.
    Liu et al. (2023), "Statistical Rejection Sampling Improves Preference
    Optimization" (RSO), arXiv:2309.06657.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import hinge_loss
  >>> z = jnp.zeros(1)
  >>> float(hinge_loss(z, z, z, z))
  1.0
  >>> float(hinge_loss(jnp.array([-1.0]), jnp.array([-6.0]), z, z))  # h = 5
  0.5
  """
  return _margin_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta, per_pair=_hinge_per_pair,
      reduction=reduction)


def _hinge_per_pair(h, beta):
  """The hinge (SLiC) loss of the log-ratio margin h."""
  return jax.nn.relu(1.0 - beta * h)


def simpo_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 2.0,
    gamma: float = 0.5,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """SimPO: reference-free, length-normalised, with a target margin gamma.

    loss_i = -log sigmoid(beta (mean_logp_w - mean_logp_l) - gamma)

  on mean token log-probabilities (`sequence_log_probs(...,
  aggregation="mean")`). gamma is the margin on the beta-scaled
  difference. The SimPO paper writes it so; the authors' trainer
  (princeton-nlp/SimPO) is parameterised by gamma_beta_ratio = gamma / beta
  and computes -log sigmoid(beta (Delta - gamma / beta)), the same thing; TRL
  (CPOTrainer, loss_type="simpo", simpo_gamma) likewise. Defaults: beta = 2.0
  and gamma_beta_ratio = 0.25 in the authors' config, i.e. gamma = 0.5.

  Sanity values: Delta = 0 -> softplus(gamma) = 0.9741 at gamma = 0.5;
  beta Delta = gamma -> log 2.

  Args:
    policy_chosen_logps: [B] mean token log pi(y_w | x).
    policy_rejected_logps: [B] mean token log pi(y_l | x).
    beta: scalar > 0 (default 2.0).
    gamma: Python float margin (default 0.5), checked finite.
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad hyperparameters or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Meng, Xia & Chen (2024), "SimPO: Simple Preference Optimization with a
    Reference-Free Reward", arXiv:2405.14734.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import simpo_loss
  >>> float(simpo_loss(jnp.array([-1.0]), jnp.array([-1.0])))  # softplus(0.5)
  0.9740...
  """
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  gamma = _check_real_number(gamma, "gamma")
  _reduction.check_reduction(reduction)
  return _simpo_loss(
      *_shared.as_arrays(policy_chosen_logps, policy_rejected_logps, weights, mask),
      beta, gamma, reduction=reduction)


def _simpo_loss(policy_chosen_logps, policy_rejected_logps, weights, mask,
                beta, gamma, reduction):
  return _shared.reduce_pairs(
      _shared.named_pair_logps(policy_chosen_logps, policy_rejected_logps),
      weights, mask, reduction,
      lambda chosen, rejected: jax.nn.softplus(gamma - beta * (chosen - rejected)))


def _log_odds(mean_logp: jnp.ndarray) -> jnp.ndarray:
  """log(p / (1 - p)) for p = exp(mean_logp), stable for mean_logp <= 0.

  log(1 - p) = log(-expm1(l)) near l = 0 and log1p(-exp(l)) below -log 2
  (Maechler 2012); l is clamped to at most `_MAX_MEAN_LOGP` first, so that
  p < 1 and the value and gradient stay finite.
  """
  logp = jnp.minimum(mean_logp, _MAX_MEAN_LOGP)
  near_zero = logp > -jnp.log(2.0)
  log1m_p = jnp.where(
      near_zero,
      jnp.log(-jnp.expm1(jnp.where(near_zero, logp, -1.0))),
      jnp.log1p(-jnp.exp(jnp.where(near_zero, -1.0, logp))))
  return logp - log1m_p


def orpo_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    *,
    odds_ratio_weight: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """ORPO: NLL of the chosen response plus a log-odds-ratio penalty.

    loss_i = -l_w - lambda log sigmoid(log odds(y_w) - log odds(y_l))
    log odds(y) = l - log(1 - exp(l)),   l = mean token log pi(y | x)

  with lambda = `odds_ratio_weight` (TRL's ORPOConfig.beta, default 0.1).
  log(1 - exp(l)) is computed stably (log(-expm1(l)) near 0); mean
  log-probabilities above -1e-6 (p within 1e-6 of 1) are clamped there. The
  NLL term here is the per-sequence mean token NLL; TRL averages the chosen
  tokens over the whole batch instead (the same when lengths are equal).

  Sanity values: l_w = l_l = l -> -l + lambda log 2; l_w = log 0.5,
  l_l = log 0.25 -> log odds 0 and log(1/3), loss = 0.6931 + 0.1 *
  softplus(-log 3) = 0.7219.

  Args:
    policy_chosen_logps: [B] mean token log pi(y_w | x) (<= 0).
    policy_rejected_logps: [B] mean token log pi(y_l | x) (<= 0).
    odds_ratio_weight: scalar lambda >= 0 (default 0.1).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad hyperparameters or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Hong, Lee & Thorne (2024), "ORPO: Monolithic Preference Optimization
    without Reference Model", arXiv:2403.07691.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import orpo_loss
  >>> float(orpo_loss(jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25]))))
  0.7219...
  """
  lam = _reduction.scalar_hyperparameter(odds_ratio_weight,
                                         "odds_ratio_weight", allow_zero=True)
  _reduction.check_reduction(reduction)
  return _orpo_loss(
      *_shared.as_arrays(policy_chosen_logps, policy_rejected_logps, weights, mask),
      lam, reduction=reduction)


def _orpo_loss(policy_chosen_logps, policy_rejected_logps, weights, mask, lam,
               reduction):
  return _shared.reduce_pairs(
      _shared.named_pair_logps(policy_chosen_logps, policy_rejected_logps),
      weights, mask, reduction,
      lambda chosen, rejected: -chosen - lam * jax.nn.log_sigmoid(
          _log_odds(chosen) - _log_odds(rejected)))


def selm_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    policy_sampled_logps: chex.Array,
    reference_sampled_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    alpha: chex.Numeric = 0.001,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """SELM: DPO plus an optimism term on responses sampled from the reference.

    loss_i = -log sigmoid(beta h_i)
             + alpha beta (log pi(y_ref_i | x) - log pi_ref(y_ref_i | x))

  with y_ref_i ~ pi_ref(. | x_i). Minimising the second term lowers the
  policy's likelihood of what the reference already says, i.e. biases the
  policy towards unexplored, potentially high-reward responses. As in the
  authors' trainer (shenao-zhang/SELM, `optimistic_dpo_loss`), the term is
  added with a plus sign, on summed log-probabilities, with alpha = 0.001 in
  their configs.

  Sanity values: h = 0 and equal sampled log-probs -> log 2; the gradient
  with respect to `policy_sampled_logps` is +alpha beta.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    policy_sampled_logps: [B] log pi(y_ref | x) of a response sampled from
      the reference.
    reference_sampled_logps: [B] log pi_ref(y_ref | x).
    beta: scalar > 0 (default 0.1).
    alpha: scalar >= 0 (default 0.001), the optimism coefficient.
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad hyperparameters or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Zhang et al. (2024), "Self-Exploring Language Models: Active Preference
    Elicitation for Online Alignment", arXiv:2405.19332.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import selm_loss
  >>> z = jnp.zeros(1)
  >>> float(selm_loss(z, z, z, z, jnp.array([-5.0]), jnp.array([-15.0]),
  ...                 alpha=0.5))  # log 2 + 0.5 * 0.1 * 10
  1.1931...
  """
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  alpha = _reduction.scalar_hyperparameter(alpha, "alpha", allow_zero=True)
  _reduction.check_reduction(reduction)
  return _selm_loss(
      *_shared.as_arrays(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps,
               policy_sampled_logps, reference_sampled_logps, weights, mask),
      beta, alpha, reduction=reduction)


def _selm_loss(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps,
               policy_sampled_logps, reference_sampled_logps, weights, mask,
               beta, alpha, reduction):
  def per_pair(pc, pr, rc, rr, ps, rs):
    h = (pc - rc) - (pr - rr)
    return jax.nn.softplus(-beta * h) + alpha * beta * (ps - rs)
  return _shared.reduce_pairs(
      _shared.named_pair_logps(policy_chosen_logps, policy_rejected_logps,
                               reference_chosen_logps, reference_rejected_logps)
      + [("policy_sampled_logps", policy_sampled_logps),
         ("reference_sampled_logps", reference_sampled_logps)],
      weights, mask, reduction, per_pair)


def dno_loss(
    policy_logps_1: chex.Array,
    policy_logps_2: chex.Array,
    reference_logps_1: chex.Array,
    reference_logps_2: chex.Array,
    rewards_1: chex.Array,
    rewards_2: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """DNO (regression form): soft-label BCE on the log-ratio margin.

    p_i = sigmoid(rewards_1_i - rewards_2_i)
    z_i = beta ((logp_1 - logp_ref_1) - (logp_2 - logp_ref_2))_i
    loss_i = -p_i log sigmoid(z_i) - (1 - p_i) log sigmoid(-z_i)

  Direct Nash Optimization regresses the policy's implicit preference
  sigmoid(z) onto the soft target p, where the rewards are the responses'
  expected win rates against the current iterate pi_t, which is also the
  "reference" here (the policy of the previous iteration, not the SFT
  model). Neither response is "chosen": the soft label orders them. With
  p = 1 - e this is cDPO; its minimum over z is the entropy of p, not 0.

  Sanity values: z = 0 -> log 2 (any p); equal rewards (p = 1/2) ->
  softplus(z) - z / 2, minimal at z = 0; the gradient with respect to logp_1
  is beta (sigmoid(z) - p), negative at z = 0 when rewards_1 > rewards_2.

  Args:
    policy_logps_1: [B] log pi(y1 | x), summed over response tokens.
    policy_logps_2: [B] log pi(y2 | x).
    reference_logps_1: [B] log pi_t(y1 | x) under the current iterate.
    reference_logps_2: [B] log pi_t(y2 | x).
    rewards_1: [B] r_t(x, y1), e.g. the win rate of y1 against pi_t.
    rewards_2: [B] r_t(x, y2).
    beta: scalar > 0 (default 0.1; DNO's eta).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Rosset et al. (2024), "Direct Nash Optimization: Teaching Language Models
    to Self-Improve with General Preferences", arXiv:2404.03715.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import dno_loss
  >>> z = jnp.zeros(1)
  >>> float(dno_loss(z, z, z, z, jnp.array([0.9]), jnp.array([0.1])))
  0.6931...
  """
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  _reduction.check_reduction(reduction)
  return _dno_loss(
      *_shared.as_arrays(policy_logps_1, policy_logps_2, reference_logps_1,
               reference_logps_2, rewards_1, rewards_2, weights, mask),
      beta, reduction=reduction)


def _dno_loss(policy_logps_1, policy_logps_2, reference_logps_1,
              reference_logps_2, rewards_1, rewards_2, weights, mask, beta,
              reduction):
  def per_pair(p1, p2, r1, r2, g1, g2):
    target = jax.nn.sigmoid(g1 - g2)
    z = beta * ((p1 - r1) - (p2 - r2))
    return target * jax.nn.softplus(-z) + (1.0 - target) * jax.nn.softplus(z)
  return _shared.reduce_pairs(
      [("policy_logps_1", policy_logps_1), ("policy_logps_2", policy_logps_2),
       ("reference_logps_1", reference_logps_1),
       ("reference_logps_2", reference_logps_2),
       ("rewards_1", rewards_1), ("rewards_2", rewards_2)],
      weights, mask, reduction, per_pair)


def exo_pair_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    label_smoothing: float = 1e-3,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """EXO (pair form): the reverse KL from the policy's pair distribution to the
  smoothed label.

    q_i = sigmoid(beta h_i)
    loss_i = KL((q_i, 1 - q_i) || (1 - e, e))
           = q_i (log q_i - log(1 - e)) + (1 - q_i) (log(1 - q_i) - log e)

  EXO minimises KL(p_f || p_rh) between the policy's softmax over the K = 2
  responses, here sigmoid(beta h), and the label distribution with label
  smoothing e (Ji et al. 2024, eq. 16); DPO minimises the forward KL
  instead, so EXO is mode-seeking. TRL's loss_type="exo_pair" computes the
  same and replaces label_smoothing = 0 by 1e-3, the paper's value: here e
  defaults to 1e-3 and must be > 0 (log e).

  Sanity values: h = 0 -> log(1/2) - (log(1 - e) + log e) / 2 = 2.7612 at
  e = 1e-3; the minimum 0 is at beta h = log((1 - e) / e) (6.9068 at
  e = 1e-3), beyond which the gradient with respect to h turns positive.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    beta: scalar > 0 (default 0.1).
    label_smoothing: Python float e in (0, 0.5) (default 1e-3).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad hyperparameters or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Ji et al. (2024), "Towards Efficient Exact Optimization of Language Model
    Alignment", arXiv:2402.00856.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import exo_pair_loss
  >>> z = jnp.zeros(1)
  >>> float(exo_pair_loss(z, z, z, z))
  2.7612...
  """
  e = _reduction.check_probability(label_smoothing, "label_smoothing")
  if e == 0.0:
    raise ValueError(
        "`label_smoothing` must be in (0, 0.5) for EXO (its log is taken); "
        "got 0.0. The EXO paper and TRL use 1e-3.")
  return _margin_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta, per_pair=_exo_per_pair,
      static_args=(math.log1p(-e), math.log(e)), reduction=reduction)


def _exo_per_pair(h, beta, log_target_w, log_target_l):
  """KL((q, 1 - q) || target) with q = sigmoid(beta h), target logs given."""
  z = beta * h
  return (jax.nn.sigmoid(z) * (jax.nn.log_sigmoid(z) - log_target_w)
          + jax.nn.sigmoid(-z) * (jax.nn.log_sigmoid(-z) - log_target_l))


def nca_pair_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """NCA (pair form): noise-contrastive alignment with absolute implicit
  rewards.

    r_w = beta (logp(y_w) - logp_ref(y_w)),  r_l = beta (logp(y_l) - logp_ref(y_l))
    loss_i = -log sigmoid(r_w) - 1/2 log sigmoid(-r_w) - 1/2 log sigmoid(-r_l)

  NCA classifies each response against noise from the reference, one
  reward at a time. DPO sees only the difference of the two rewards, so both
  likelihoods may fall together; NCA fixes each reward's level (the chosen
  one is pulled up towards log 2, the rejected one down), which keeps the
  chosen likelihood from decreasing. This is Chen et al.'s K = 2 loss with
  the hard preference label, and TRL's loss_type="nca_pair".

  Sanity values: r_w = r_l = 0 -> 2 log 2 = 1.3863. The gradient with
  respect to the rejected log-probability is always positive; the one with
  respect to the chosen is negative while r_w < log 2, where the chosen
  term has its minimum (it does not push the chosen reward to infinity).

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    beta: scalar > 0 (default 0.1).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Chen et al. (2024), "Noise Contrastive Alignment of Language Models with
    Explicit Rewards", arXiv:2402.05369.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import nca_pair_loss
  >>> z = jnp.zeros(1)
  >>> float(nca_pair_loss(z, z, z, z))  # 2 log 2
  1.3862...
  """
  return _shared.log_ratio_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta,
      per_pair=_nca_per_pair, reduction=reduction)


def _nca_per_pair(a, b, beta):
  r_w, r_l = beta * a, beta * b
  return (jax.nn.softplus(-r_w) + 0.5 * jax.nn.softplus(r_w)
          + 0.5 * jax.nn.softplus(r_l))


def sppo_hard_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """SPPO with hard labels: square regression of each log-ratio on +-1/(2 beta).

    a = logp(y_w) - logp_ref(y_w),  b = logp(y_l) - logp_ref(y_l)
    loss_i = (a_i - 1 / (2 beta))^2 + (b_i + 1 / (2 beta))^2

  SPPO regresses log(pi(y) / pi_t(y)) on eta (P(y > pi_t) - 1/2), eta =
  1 / beta, with P the estimated win probability of y against the current
  policy pi_t (here the "reference"; SPPO is iterative). With the hard
  labels P = 1 for the chosen and 0 for the rejected response this is
  TRL's loss_type="sppo_hard"; the soft-probability version needs the win
  rates from a preference model.

  Sanity values: a = b = 0 -> 2 / (4 beta^2) = 50 at beta = 0.1; 0 at
  a = 1 / (2 beta), b = -1 / (2 beta).

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_t(y_w | x).
    reference_rejected_logps: [B] log pi_t(y_l | x).
    beta: scalar > 0 (default 0.1).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Wu et al. (2024), "Self-Play Preference Optimization for Language Model
    Alignment", arXiv:2405.00675.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import sppo_hard_loss
  >>> z = jnp.zeros(1)
  >>> float(sppo_hard_loss(z, z, z, z))  # 25 + 25
  50.0
  """
  return _shared.log_ratio_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta,
      per_pair=_sppo_hard_per_pair, reduction=reduction)


def _sppo_hard_per_pair(a, b, beta):
  target = 0.5 / beta
  return jnp.square(a - target) + jnp.square(b + target)


def apo_zero_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """APO-zero: raise the chosen and lower the rejected likelihood, anchored at 0.

    loss_i = (1 - sigmoid(beta a_i)) + sigmoid(beta b_i)

  with a, b the chosen and rejected log-ratios. For data whose chosen
  responses are better than what the model says now (Anchored Preference
  Optimization, eq. 7; TRL's loss_type="apo_zero"): each log-ratio is
  anchored at 0 separately, so the chosen likelihood rises and the rejected
  one falls, whatever the margin.

  Sanity values: a = b = 0 -> 1; the gradient is negative with respect to
  the chosen and positive with respect to the rejected log-probability.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    beta: scalar > 0 (default 0.1).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    D'Oosterlinck et al. (2024), "Anchored Preference Optimization and
    Contrastive Revisions: Addressing Underspecification in Alignment",
    arXiv:2408.06266.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import apo_zero_loss
  >>> z = jnp.zeros(1)
  >>> float(apo_zero_loss(z, z, z, z))
  1.0
  """
  return _shared.log_ratio_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta,
      per_pair=_apo_zero_per_pair, reduction=reduction)


def _apo_zero_per_pair(a, b, beta):
  return jax.nn.sigmoid(-beta * a) + jax.nn.sigmoid(beta * b)


def apo_down_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """APO-down: lower the chosen likelihood, and the rejected one more.

    loss_i = sigmoid(beta a_i) + (1 - sigmoid(beta (a_i - b_i)))

  with a, b the chosen and rejected log-ratios. For data whose chosen
  responses are worse than what the model says now (Anchored Preference
  Optimization, eq. 8; TRL's loss_type="apo_down"): the first term pulls
  the chosen log-ratio below its anchor 0, the second keeps the margin
  h = a - b growing.

  Sanity values: a = b = 0 -> 1. The gradient with respect to the rejected
  log-probability is positive; the one with respect to the chosen is
  beta (sigmoid'(beta a) - sigmoid'(beta h)): 0 at a = b = 0, positive
  (the chosen likelihood falls) while |a| < |h|.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    beta: scalar > 0 (default 0.1).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    D'Oosterlinck et al. (2024), "Anchored Preference Optimization and
    Contrastive Revisions: Addressing Underspecification in Alignment",
    arXiv:2408.06266.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import apo_down_loss
  >>> z = jnp.zeros(1)
  >>> float(apo_down_loss(z, z, z, z))
  1.0
  """
  return _shared.log_ratio_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta,
      per_pair=_apo_down_per_pair, reduction=reduction)


def _apo_down_per_pair(a, b, beta):
  return jax.nn.sigmoid(beta * a) + jax.nn.sigmoid(-beta * (a - b))


def discopop_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    tau: chex.Numeric = 0.05,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """DiscoPOP: the log-ratio modulated loss (LRML), a blend of DPO's logistic
  loss and an exponential loss.

    z_i = beta h_i,   m_i = sigmoid(z_i / tau)
    loss_i = (1 - m_i) (-log sigmoid(z_i)) + m_i exp(-z_i)

  Found by an LLM-driven search over objectives (Chris Lu et al. 2024,
  eq. 5); TRL's loss_type="discopop" with discopop_tau = tau, default 0.05
  as in the paper. The exponential term is evaluated as
  exp(log sigmoid(z / tau) - z), its exponent capped at 80, so that neither
  the value nor the gradient overflows where m_i underflows to 0.

  The loss is not monotone in h: near h = 0 the blend moves quickly from
  the logistic to the (larger) exponential part, so its derivative with
  respect to z = beta h is positive in a band around 0 (about
  -0.118 < z < 0.072 for tau = 0.05; +0.784 at z = 0) and negative outside
  it; the paper notes this non-convexity.

  Sanity values: h = 0 -> (log 2 + 1) / 2 = 0.8466; large beta h ->
  exp(-beta h); very negative beta h -> -beta h (DPO's asymptote).

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    beta: scalar > 0 (default 0.1).
    tau: scalar > 0 (default 0.05), the modulation temperature.
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad hyperparameters or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Chris Lu et al. (2024), "Discovering Preference Optimization Algorithms
    with and for Large Language Models", arXiv:2406.08414.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import discopop_loss
  >>> z = jnp.zeros(1)
  >>> float(discopop_loss(z, z, z, z))  # (log 2 + 1) / 2
  0.8465...
  """
  tau = _reduction.scalar_hyperparameter(tau, "tau")
  return _margin_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta,
      per_pair=_discopop_per_pair, static_args=(tau,), reduction=reduction)


def _discopop_per_pair(h, beta, tau):
  z = beta * h
  logistic = jax.nn.sigmoid(-z / tau) * jax.nn.softplus(-z)
  exponential = jnp.exp(jnp.minimum(jax.nn.log_sigmoid(z / tau) - z,
                                    _MAX_EXP_ARGUMENT))
  return logistic + exponential


def f_divergence_dpo_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    divergence: str = "reverse_kl",
    alpha: chex.Numeric = 0.5,
    beta: chex.Numeric = 0.1,
    label_smoothing: float = 0.0,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """f-DPO: DPO under an f-divergence constraint instead of the reverse KL.

    u = pi / pi_ref,  a = log u(y_w),  b = log u(y_l)
    loss_i = -(1 - e) log sigmoid(beta (f'(u_w) - f'(u_l)))
             - e log sigmoid(-beta (f'(u_w) - f'(u_l)))

  With an f-divergence regulariser the optimal policy satisfies
  r = beta f'(pi / pi_ref) + const, so beta f'(u) replaces DPO's implicit
  reward beta log u (Wang et al. 2023, Thm. 1). f' up to a constant (which
  cancels in the difference):

    "reverse_kl"        f'(u) = log u                  = a      (DPO)
    "forward_kl"        f'(u) = -1 / u                 = -exp(-a)
    "js_divergence"     f'(u) = log(2u / (1 + u))     ~ log sigmoid(a)
    "alpha_divergence"  f'(u) = (1 - u^-alpha) / alpha = -expm1(-alpha a) / alpha

  "reverse_kl" is `dpo_loss` exactly (the same computation); the
  alpha-divergence goes to the reverse KL as alpha -> 0 and is the forward
  KL at alpha = 1. alpha is the paper's and TRL's FDivergenceConstants
  convention; TRL's newer DPOTrainer writes f'(t) = (t^(alpha-1) - 1) /
  (alpha - 1), i.e. its alpha is 1 - ours; at the default 0.5 (TRL's
  f_alpha_divergence_coef) the two agree. The exponents are capped at 80
  (as TRL caps them) so that very negative log-ratios stay finite. e is
  cDPO's label smoothing (TRL's loss_type="sigmoid").

  Sanity values: h = 0 (a = b) -> log 2 for every divergence; f' is
  increasing, so the gradient is negative with respect to the chosen and
  positive with respect to the rejected log-probability.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    divergence: one of `F_DIVERGENCES` (default "reverse_kl").
    alpha: scalar > 0 (default 0.5), used by "alpha_divergence" only.
    beta: scalar > 0 (default 0.1).
    label_smoothing: Python float e in [0, 0.5) (default 0).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: unknown `divergence`, bad hyperparameters or `reduction`, or
      wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Wang et al. (2023), "Beyond Reverse KL: Generalizing Direct Preference
    Optimization with Diverse Divergence Constraints", arXiv:2309.16240.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import f_divergence_dpo_loss
  >>> z = jnp.zeros(1)
  >>> # a = 0, b = -2: the forward KL's f' differ by -1 + e^2 = 6.389
  >>> float(f_divergence_dpo_loss(z, z - 2.0, z, z, divergence="forward_kl"))
  0.4238...
  >>> float(f_divergence_dpo_loss(z, z - 2.0, z, z))  # reverse KL: DPO
  0.5981...
  """
  if not isinstance(divergence, str) or divergence not in F_DIVERGENCES:
    raise ValueError(
        f"`divergence` must be one of {F_DIVERGENCES}; got {divergence!r}.")
  alpha = _reduction.scalar_hyperparameter(alpha, "alpha")
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  label_smoothing = _reduction.check_probability(label_smoothing,
                                                 "label_smoothing")
  _reduction.check_reduction(reduction)
  if divergence == "reverse_kl":
    score = None
  elif divergence == "alpha_divergence":
    score = functools.partial(_alpha_divergence_score, alpha=alpha)
  else:
    score = _F_DIVERGENCE_SCORES[divergence]
  return _shared.dpo_from_arrays(
      *_shared.as_arrays(policy_chosen_logps, policy_rejected_logps,
                         reference_chosen_logps, reference_rejected_logps,
                         weights, mask), beta, label_smoothing=label_smoothing,
      reduction=reduction, score=score)


def _forward_kl_score(log_ratio):
  """f'(u) = -1/u of the forward KL (f(u) = -log u)."""
  return -jnp.exp(jnp.minimum(-log_ratio, _MAX_EXP_ARGUMENT))


def _alpha_divergence_score(log_ratio, alpha):
  """f'(u) = (1 - u^-alpha) / alpha of the alpha-divergence."""
  return -jnp.expm1(jnp.minimum(-alpha * log_ratio, _MAX_EXP_ARGUMENT)) / alpha


_F_DIVERGENCE_SCORES = {
    "forward_kl": _forward_kl_score,
    # log(2u / (1 + u)) = log 2 + log sigmoid(log u); the log 2 cancels.
    "js_divergence": jax.nn.log_sigmoid,
}
