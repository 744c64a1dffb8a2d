"""Direct preference losses: DPO and its family, on sequence log-probabilities.

Inputs are sequence log-probabilities, [B] (or [B, K] for lists), usually
`sequence_log_probs(token_log_probs(...), mask)` of the responses under the
policy and under a frozen reference: summed over tokens for DPO, IPO, KTO,
SELM, DNO and LiPO; averaged over tokens (aggregation="mean") for SimPO, ORPO
and PRO. Notation, for a pair (chosen y_w, rejected y_l):

  h = (logp(y_w) - logp_ref(y_w)) - (logp(y_l) - logp_ref(y_l))

and beta * (logp - logp_ref) is the "implicit reward" of a response
(`implicit_rewards`).

Conventions shared with the reward-model losses:
  * computation in float32 (bfloat16 inputs are upcast), stable log-sigmoid /
    softplus; no NaN or inf for log-ratios h up to +-50 nor for
    log-probabilities down to -1e4;
  * an optional validity `mask` ([B], or [B, K] for lists); the inputs of
    masked entries are replaced by 0 *before* anything is computed, so padding
    with junk (even NaN or inf) changes neither the value nor the gradient;
  * `reduction` in {"mean", "sum", "none"} through `reduce_loss` ("mean" is
    over valid entries), and optional per-pair `weights`.

As in `listwise`, each public function checks what only Python can check
(hyperparameters, option names) and hands the rest to a private helper;
nothing is jitted inside (callers jit, see `rmjax.losses`).
"""

import numbers
from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import bradley_terry
from rmjax.losses import listwise

# ORPO's log-odds need p = exp(mean logp) < 1: mean log-probabilities above
# this are clamped to it (odds of at most ~1e6).
_MAX_MEAN_LOGP = -1e-6


def _arrays(*xs):
  """`jnp.asarray` of each argument, None kept (for the private helpers)."""
  return tuple(None if x is None else jnp.asarray(x) for x in xs)


def _log_ratios(policy_chosen_logps, policy_rejected_logps,
                reference_chosen_logps, reference_rejected_logps, mask):
  """(pi_w - ref_w, pi_l - ref_l, valid): the sanitised log-ratios of a pair."""
  (pc, pr, rc, rr), valid, _ = _reduction.sanitized_inputs(
      [("policy_chosen_logps", policy_chosen_logps),
       ("policy_rejected_logps", policy_rejected_logps),
       ("reference_chosen_logps", reference_chosen_logps),
       ("reference_rejected_logps", reference_rejected_logps)], mask, "[B]")
  return pc - rc, pr - rr, valid


def _margin_loss(policy_chosen_logps, policy_rejected_logps,
                 reference_chosen_logps, reference_rejected_logps, weights,
                 mask, beta, *, per_pair, static_args=(), reduction):
  """Reduces `per_pair(h, beta, *static_args)` of the log-ratio margins h.

  The shared body of the losses that depend on a pair only through
  h = (pi_w - ref_w) - (pi_l - ref_l) (rDPO, IPO, hinge).
  """
  chosen, rejected, valid = _log_ratios(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, mask)
  per_pair_loss = per_pair(chosen - rejected, beta, *static_args)
  return _reduction.reduce_loss(per_pair_loss, weights=weights, mask=valid,
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
  return _dpo_loss(
      *_arrays(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, weights,
               mask), beta, label_smoothing=label_smoothing,
      reduction=reduction)


def _dpo_loss(policy_chosen_logps, policy_rejected_logps,
              reference_chosen_logps, reference_rejected_logps, weights, mask,
              beta, label_smoothing, reduction):
  chosen, rejected, valid = _log_ratios(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, mask)
  return bradley_terry.bradley_terry_loss(
      beta * chosen, beta * rejected, label_smoothing=label_smoothing,
      weights=weights, mask=valid, reduction=reduction)


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
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  _reduction.check_reduction(reduction)
  return _margin_loss(
      *_arrays(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, weights,
               mask), beta, per_pair=_robust_dpo_per_pair, static_args=(e,),
      reduction=reduction)


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
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  _reduction.check_reduction(reduction)
  return _margin_loss(
      *_arrays(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, weights,
               mask), beta, per_pair=_ipo_per_pair, reduction=reduction)


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
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  _reduction.check_reduction(reduction)
  return _margin_loss(
      *_arrays(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, weights,
               mask), beta, per_pair=_hinge_per_pair, reduction=reduction)


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
      *_arrays(policy_chosen_logps, policy_rejected_logps, weights, mask),
      beta, gamma, reduction=reduction)


def _simpo_loss(policy_chosen_logps, policy_rejected_logps, weights, mask,
                beta, gamma, reduction):
  (chosen, rejected), valid, _ = _reduction.sanitized_inputs(
      [("policy_chosen_logps", policy_chosen_logps),
       ("policy_rejected_logps", policy_rejected_logps)], mask, "[B]")
  per_pair = jax.nn.softplus(gamma - beta * (chosen - rejected))
  return _reduction.reduce_loss(per_pair, weights=weights, mask=valid,
                                reduction=reduction)


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
      *_arrays(policy_chosen_logps, policy_rejected_logps, weights, mask),
      lam, reduction=reduction)


def _orpo_loss(policy_chosen_logps, policy_rejected_logps, weights, mask, lam,
               reduction):
  (chosen, rejected), valid, _ = _reduction.sanitized_inputs(
      [("policy_chosen_logps", policy_chosen_logps),
       ("policy_rejected_logps", policy_rejected_logps)], mask, "[B]")
  log_odds_ratio = _log_odds(chosen) - _log_odds(rejected)
  per_pair = -chosen - lam * jax.nn.log_sigmoid(log_odds_ratio)
  return _reduction.reduce_loss(per_pair, weights=weights, mask=valid,
                                reduction=reduction)


def kto_loss(
    policy_logps: chex.Array,
    reference_logps: chex.Array,
    desirable: chex.Array,
    *,
    kl_policy_logps: Optional[chex.Array] = None,
    kl_reference_logps: Optional[chex.Array] = None,
    kl_mask: Optional[chex.Array] = None,
    beta: chex.Numeric = 0.1,
    desirable_weight: chex.Numeric = 1.0,
    undesirable_weight: chex.Numeric = 1.0,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """KTO: prospect-theoretic loss on unpaired desirable/undesirable examples.

    r_i = logp_i - logp_ref_i
    z0 = stop_gradient(max(0, mean_j (kl_policy_logps_j - kl_reference_logps_j)))
    loss_i = w_D (1 - sigmoid(beta (r_i - z0)))   if desirable_i
             w_U (1 - sigmoid(beta (z0 - r_i)))   otherwise

  z0 is the reference point, a batch estimate of KL(pi || pi_ref) from
  mismatched completions (TRL pairs each prompt with another example's
  completion), clamped at 0 and carrying no gradient. Without
  `kl_policy_logps` z0 = 0 (TRL when the KL term is disabled). The
  reference point is a batch statistic: under data parallelism, pass the
  gathered KL completions so that every shard uses the same z0.

  Sanity values: r = 0, z0 = 0 -> 0.5 w (either kind); the gradient with
  respect to logp is negative for desirable and positive for undesirable
  examples.

  Args:
    policy_logps: [B] log pi(y | x), summed over response tokens.
    reference_logps: [B] log pi_ref(y | x).
    desirable: [B] bool (or {0, 1}): True for desirable ("chosen") examples.
    kl_policy_logps: optional [M] log pi(y' | x) of mismatched completions.
    kl_reference_logps: [M] log pi_ref(y' | x); required with
      `kl_policy_logps`.
    kl_mask: optional [M] validity mask of the KL completions.
    beta: scalar > 0 (default 0.1).
    desirable_weight: scalar w_D >= 0 (default 1).
    undesirable_weight: scalar w_U >= 0 (default 1); the KTO paper advises
      w_D n_D / (w_U n_U) in [1, 4/3].
    mask: optional [B] validity mask.
    reduction: "mean" (default; over valid examples of both kinds), "sum" or
      "none".

  Returns:
    float32 scalar, or [B] per-example losses for reduction="none".

  Raises:
    ValueError: bad hyperparameters or `reduction`, wrongly shaped inputs, or
      only one of the two KL arrays.
    TypeError: non-real inputs.

  References:
    Ethayarajh et al. (2024), "KTO: Model Alignment as Prospect Theoretic
    Optimization", arXiv:2402.01306.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import kto_loss
  >>> z = jnp.zeros(2)
  >>> float(kto_loss(z, z, jnp.array([True, False])))  # 0.5 each
  0.5
  """
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  w_d = _reduction.scalar_hyperparameter(desirable_weight, "desirable_weight",
                                         allow_zero=True)
  w_u = _reduction.scalar_hyperparameter(undesirable_weight,
                                         "undesirable_weight", allow_zero=True)
  _reduction.check_reduction(reduction)
  if (kl_policy_logps is None) != (kl_reference_logps is None):
    raise ValueError(
        "`kl_policy_logps` and `kl_reference_logps` must be given together; "
        f"got kl_policy_logps={'None' if kl_policy_logps is None else 'array'}"
        f", kl_reference_logps="
        f"{'None' if kl_reference_logps is None else 'array'}.")
  return _kto_loss(
      *_arrays(policy_logps, reference_logps, desirable, kl_policy_logps,
               kl_reference_logps, kl_mask, mask), beta, w_d, w_u,
      reduction=reduction)


def _kto_loss(policy_logps, reference_logps, desirable, kl_policy_logps,
              kl_reference_logps, kl_mask, mask, beta, w_d, w_u, reduction):
  (logp, ref), valid, dtype = _reduction.sanitized_inputs(
      [("policy_logps", policy_logps), ("reference_logps", reference_logps)],
      mask, "[B]")
  desirable = _reduction.validity_mask(desirable, logp.shape, "desirable")
  if kl_policy_logps is None:
    z0 = jnp.zeros((), dtype)
  else:
    (kl_logp, kl_ref), kl_valid, _ = _reduction.sanitized_inputs(
        [("kl_policy_logps", kl_policy_logps),
         ("kl_reference_logps", kl_reference_logps)], kl_mask, "[M]")
    kl_mean = _reduction.reduce_loss(kl_logp - kl_ref, mask=kl_valid)
    z0 = jax.lax.stop_gradient(jnp.maximum(kl_mean, 0))
  r = logp - ref
  per_example = jnp.where(
      desirable,
      w_d * jax.nn.sigmoid(-beta * (r - z0)),
      w_u * jax.nn.sigmoid(-beta * (z0 - r)))
  return _reduction.reduce_loss(per_example, mask=valid, reduction=reduction)


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
      *_arrays(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps,
               policy_sampled_logps, reference_sampled_logps, weights, mask),
      beta, alpha, reduction=reduction)


def _selm_loss(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps,
               policy_sampled_logps, reference_sampled_logps, weights, mask,
               beta, alpha, reduction):
  (pc, pr, rc, rr, ps, rs), valid, _ = _reduction.sanitized_inputs(
      [("policy_chosen_logps", policy_chosen_logps),
       ("policy_rejected_logps", policy_rejected_logps),
       ("reference_chosen_logps", reference_chosen_logps),
       ("reference_rejected_logps", reference_rejected_logps),
       ("policy_sampled_logps", policy_sampled_logps),
       ("reference_sampled_logps", reference_sampled_logps)], mask, "[B]")
  h = (pc - rc) - (pr - rr)
  per_pair = jax.nn.softplus(-beta * h) + alpha * beta * (ps - rs)
  return _reduction.reduce_loss(per_pair, weights=weights, mask=valid,
                                reduction=reduction)


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
      *_arrays(policy_logps_1, policy_logps_2, reference_logps_1,
               reference_logps_2, rewards_1, rewards_2, weights, mask),
      beta, reduction=reduction)


def _dno_loss(policy_logps_1, policy_logps_2, reference_logps_1,
              reference_logps_2, rewards_1, rewards_2, weights, mask, beta,
              reduction):
  (p1, p2, r1, r2, g1, g2), valid, _ = _reduction.sanitized_inputs(
      [("policy_logps_1", policy_logps_1),
       ("policy_logps_2", policy_logps_2),
       ("reference_logps_1", reference_logps_1),
       ("reference_logps_2", reference_logps_2),
       ("rewards_1", rewards_1), ("rewards_2", rewards_2)], mask, "[B]")
  target = jax.nn.sigmoid(g1 - g2)
  z = beta * ((p1 - r1) - (p2 - r2))
  per_pair = target * jax.nn.softplus(-z) + (1.0 - target) * jax.nn.softplus(z)
  return _reduction.reduce_loss(per_pair, weights=weights, mask=valid,
                                reduction=reduction)


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
  and the lambda weights, `lipo_lambda_weights`). LiPO's loss is a *sum* over the pairs of a list, averaged over lists (the
  expectation over prompts in Liu et al. 2024), so "mean" divides the total
  by the number of lists with at least one pair (not by the number of pairs,
  the all-pairs "mean"); "sum" is the total and "none" gives [B] per-list
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
      *_arrays(policy_logps, reference_logps, labels), beta, *_arrays(mask),
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
  return _pro_loss(*_arrays(policy_logps, rewards, sft_logps), sft_weight,
                   *_arrays(mask), reduction=reduction)


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


def mah_dpo_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    head_ids: chex.Array,
    *,
    num_heads: int,
    beta: chex.Numeric = 0.1,
    label_smoothing: float = 0.0,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """Multi-Action-Head DPO: the mean over heads of each head's DPO loss.

    L = (1 / |H|) sum_{m in H} mean_{i : head_i = m} dpo_i

  Each pair belongs to one objective m = head_ids_i and its log-probs are
  computed with that objective's action head (the reference's log-probs with
  the reference model). H is the set of heads with at least one valid pair in
  the batch, as in the authors' trainer (pearls-lab/multiobj-align,
  mah_dpo/mahdpo_trainers.py), which averages the per-head mean losses over
  the heads present and skips empty ones. At
  inference the heads' logits are mixed with user weights
  (`mix_head_logits`).

  reduction: "mean" (default) is L; "sum" is sum_{m in H} of the per-head
  means (|H| L); "none" gives the [B] per-pair DPO losses.

  Args:
    policy_chosen_logps: [B] log pi_{head_i}(y_w | x), summed over tokens.
    policy_rejected_logps: [B] log pi_{head_i}(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    head_ids: [B] integer objective/head of each pair, in [0, num_heads)
      (checked eagerly outside `jit`).
    num_heads: Python int M > 0.
    beta: scalar > 0 (default 0.1).
    label_smoothing: Python float in [0, 0.5) (cDPO; default 0).
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad hyperparameters, `num_heads` or `reduction`, wrongly
      shaped inputs, or (outside `jit`) head ids out of range.
    TypeError: non-real log-probs or non-integer `head_ids`.

  References:
    Shen, Xia, Chang & Ammanabrolu (2025), "Simultaneous Multi-objective
    Alignment Across Verifiable and Non-verifiable Rewards" (MAHALO,
    MAH-DPO), arXiv:2510.01167.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import mah_dpo_loss
  >>> z = jnp.zeros(3)
  >>> # Head 0: two pairs at h = 0 (log 2 each); head 1: one pair, beta h = 2.
  >>> pc = jnp.array([0.0, 0.0, 20.0])
  >>> float(mah_dpo_loss(pc, z, z, z, jnp.array([0, 0, 1]), num_heads=2))
  0.4100...
  """
  num_heads = _reduction.check_positive_int(num_heads, "num_heads")
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  label_smoothing = _reduction.check_probability(label_smoothing,
                                                 "label_smoothing")
  _reduction.check_reduction(reduction)
  head_ids = jnp.asarray(head_ids)
  if not jnp.issubdtype(head_ids.dtype, jnp.integer):
    raise TypeError(
        f"`head_ids` must be an integer array; got dtype {head_ids.dtype}.")
  if not isinstance(head_ids, jax.core.Tracer):
    with jax.ensure_compile_time_eval():
      num_bad = int(jnp.sum((head_ids < 0) | (head_ids >= num_heads)))
    if num_bad:
      raise ValueError(
          f"`head_ids` must lie in [0, num_heads) = [0, {num_heads}); got "
          f"{num_bad} out-of-range entries.")
  return _mah_dpo_loss(
      *_arrays(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, mask),
      head_ids, beta, num_heads=num_heads, label_smoothing=label_smoothing,
      reduction=reduction)


def _mah_dpo_loss(policy_chosen_logps, policy_rejected_logps,
                  reference_chosen_logps, reference_rejected_logps, mask,
                  head_ids, beta, num_heads, label_smoothing, reduction):
  per_pair = _dpo_loss(policy_chosen_logps, policy_rejected_logps,
                       reference_chosen_logps, reference_rejected_logps, None,
                       mask, beta, label_smoothing=label_smoothing,
                       reduction="none")
  _reduction.check_same_shape(head_ids, "head_ids", per_pair,
                              "policy_chosen_logps")
  if reduction == "none":
    return per_pair
  valid = _reduction.validity_mask(mask, per_pair.shape, "mask")
  membership = jax.nn.one_hot(head_ids, num_heads, dtype=per_pair.dtype)
  membership = jnp.where(valid[:, None], membership, 0)
  head_count = jnp.sum(membership, axis=0)
  head_mean = (per_pair @ membership) / jnp.maximum(head_count, 1)
  present = head_count > 0
  total = jnp.sum(jnp.where(present, head_mean, 0))
  if reduction == "sum":
    return total
  return total / jnp.maximum(jnp.sum(present, dtype=total.dtype), 1)


def mix_head_logits(
    head_logits: chex.Array,
    head_weights: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """MAH-DPO inference: a weighted average of the action heads' logits.

    logits = sum_m w_m logits_m / sum_m w_m

  The weights are normalised to sum to 1 (default: equal weights), as in the
  authors' `generate_ensemble`; the mixed logits are then sampled as usual.

  Args:
    head_logits: [M, ...] logits of each of the M heads (e.g. [M, B, T, V]).
    head_weights: optional [M] non-negative weights with a positive sum
      (not checked under `jit`).

  Returns:
    array shaped like `head_logits[0]`, in at least float32.

  Raises:
    ValueError: `head_weights` of the wrong shape.
    TypeError: non-real inputs.

  References:
    Shen, Xia, Chang & Ammanabrolu (2025), arXiv:2510.01167.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import mix_head_logits
  >>> mix_head_logits(jnp.array([[0.0, 4.0], [2.0, 0.0]]), jnp.array([3, 1]))
  Array([0.5, 3. ], dtype=float32)
  """
  head_logits = _reduction.as_real_array(head_logits, "head_logits")
  if head_logits.ndim < 1:
    raise ValueError(
        "`head_logits` must have shape [M, ...]; got a scalar.")
  num_heads = head_logits.shape[0]
  dtype = _reduction.compute_dtype(head_logits)
  if head_weights is None:
    weights = jnp.full((num_heads,), 1.0 / num_heads, dtype)
  else:
    weights = _reduction.as_real_array(head_weights, "head_weights")
    if tuple(weights.shape) != (num_heads,):
      raise ValueError(
          f"`head_weights` must have shape [M] = ({num_heads},) (M from "
          f"`head_logits` {tuple(head_logits.shape)}); got shape "
          f"{tuple(weights.shape)}.")
    weights = weights.astype(dtype)
    weights = weights / jnp.sum(weights)
  return jnp.tensordot(weights, head_logits.astype(dtype), axes=1)
