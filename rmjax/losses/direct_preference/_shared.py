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


def dpo_from_arrays(policy_chosen_logps, policy_rejected_logps,
                    reference_chosen_logps, reference_rejected_logps, weights,
                    mask, beta, label_smoothing, reduction):
  """The DPO / cDPO loss of checked arrays (`dpo_loss`, and per head in
  `mah_dpo_loss`): `bradley_terry_loss` of the implicit rewards."""
  chosen, rejected, valid = log_ratios(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, mask)
  return bradley_terry.bradley_terry_loss(
      beta * chosen, beta * rejected, label_smoothing=label_smoothing,
      weights=weights, mask=valid, reduction=reduction)
