"""Helpers shared by the direct-preference modules (one home; not public API)."""

import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import bradley_terry


def as_arrays(*xs):
  """`jnp.asarray` of each argument, None kept (for the private helpers)."""
  return tuple(None if x is None else jnp.asarray(x) for x in xs)


# The argument names of a pair's four sequence log-probabilities, in the order
# the paired losses take them (error messages name them).
PAIR_LOGPS_NAMES = ("policy_chosen_logps", "policy_rejected_logps",
                    "reference_chosen_logps", "reference_rejected_logps")


def named_pair_logps(*logps):
  """[(name, array)] of the four log-probabilities of a pair, for
  `sanitized_inputs`."""
  return list(zip(PAIR_LOGPS_NAMES, logps))


def reduce_pairs(named_arrays, weights, mask, reduction, per_pair):
  """`reduce_loss` of `per_pair(*arrays)`, the arrays being the checked and
  sanitised [B] inputs `named_arrays` ((name, array) pairs): the body of the
  paired losses."""
  arrays, valid, _ = _reduction.sanitized_inputs(named_arrays, mask, "[B]")
  return _reduction.reduce_loss(per_pair(*arrays), weights=weights,
                                mask=valid, reduction=reduction)


def log_ratios(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, mask):
  """(pi_w - ref_w, pi_l - ref_l, valid): the sanitised log-ratios of a pair."""
  (pc, pr, rc, rr), valid, _ = _reduction.sanitized_inputs(
      named_pair_logps(policy_chosen_logps, policy_rejected_logps,
                       reference_chosen_logps, reference_rejected_logps),
      mask, "[B]")
  return pc - rc, pr - rr, valid


def log_ratio_loss(policy_chosen_logps, policy_rejected_logps,
                   reference_chosen_logps, reference_rejected_logps, weights,
                   mask, beta, *, per_pair, reduction):
  """Reduces `per_pair(a, b, beta)` of the log-ratios a = pi_w - ref_w and
  b = pi_l - ref_l: the shared body of the paired losses that see a pair only
  through its two log-ratios. Checks `beta` and `reduction` (after the
  caller's own hyperparameters), then the arrays."""
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  _reduction.check_reduction(reduction)
  *logps, weights, mask = as_arrays(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask)
  return reduce_pairs(
      named_pair_logps(*logps), weights, mask, reduction,
      lambda pc, pr, rc, rr: per_pair(pc - rc, pr - rr, beta))


def dpo_from_arrays(policy_chosen_logps, policy_rejected_logps,
                    reference_chosen_logps, reference_rejected_logps, weights,
                    mask, beta, label_smoothing, reduction, score=None):
  """The DPO / cDPO loss of checked arrays (`dpo_loss`, and per head in
  `mah_dpo_loss`): `bradley_terry_loss` of the implicit rewards.

  `score`, if given, maps each log-ratio to the score whose beta multiple is
  the implicit reward (f-DPO's f'; None is DPO's identity)."""
  chosen, rejected, valid = log_ratios(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, mask)
  if score is not None:
    chosen, rejected = score(chosen), score(rejected)
  return bradley_terry.bradley_terry_loss(
      beta * chosen, beta * rejected, label_smoothing=label_smoothing,
      weights=weights, mask=valid, reduction=reduction)
