"""AOT: distributional preference alignment by sorting over the batch.

Alignment via Optimal Transport asks for first-order stochastic dominance of
one distribution of log-ratios over another. In one dimension the optimal
transport plan between two empirical distributions matches them by rank, so
the loss sorts both vectors over the batch and applies DPO's logistic loss
(with cDPO's label smoothing) to the rank-matched differences:

    loss_k = -(1 - e) log sigmoid(beta (x_(k) - y_(k)))
             - e log sigmoid(-beta (x_(k) - y_(k)))

x_(k) being the k-th smallest of the valid x. These losses are batch-level:
sorting couples the examples, so a loss term belongs to a rank, not to a
pair, and a pair's gradient depends on the rest of the batch (and on the
batch size; under data parallelism sort the gathered batch). Masked entries
never enter the sort: they are moved past the valid ones and the
`reduction` sees only the n valid ranks. There are no per-pair `weights`,
since after sorting there is no pair to weigh.

Notation and conventions in `rmjax.losses.direct_preference`.
"""

from typing import Optional

import chex
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import bradley_terry
from rmjax.losses.direct_preference import _shared


def aot_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    label_smoothing: float = 0.0,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """AOT for paired data: the policy's margins dominate the reference's.

    x = sort_i(logp(y_w,i) - logp(y_l,i)),  y = sort_i(logp_ref(y_w,i) - logp_ref(y_l,i))
    loss_k = -(1 - e) log sigmoid(beta (x_k - y_k)) - e log sigmoid(-beta (x_k - y_k))

  The distribution of the policy's chosen-minus-rejected log-probability
  margins over the batch should dominate that of the reference's; sorting
  matches the two distributions by rank (the module docstring says what
  this means for masks, weights and batches). TRL's loss_type="aot".
  With one pair, or with margins already in the same order under both
  models, this is `dpo_loss`.

  Sanity values: equal margin distributions (e.g. the policy's margins a
  permutation of the reference's) -> log 2 per rank; the gradient is
  negative with respect to the chosen and positive with respect to the
  rejected policy log-probability.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    beta: scalar > 0 (default 0.1).
    label_smoothing: Python float e in [0, 0.5) (default 0).
    mask: optional [B] validity mask.
    reduction: "mean" (default; over the valid ranks), "sum" or "none".

  Returns:
    float32 scalar, or for reduction="none" [B] losses by rank: entry k is
    the k-th smallest margin's term, the trailing B - n entries (n valid
    pairs) are 0.

  Raises:
    ValueError: bad hyperparameters or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Melnyk et al. (2024), "Distributional Preference Alignment of LLMs via
    Optimal Transport", arXiv:2406.05882.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import aot_loss
  >>> z = jnp.zeros(2)
  >>> # policy margins (3, -1), reference margins (-1, 3): the same distribution
  >>> float(aot_loss(jnp.array([3.0, -1.0]), z, jnp.array([-1.0, 3.0]), z))
  0.6931...
  """
  return _sorted_pair_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, mask, beta, label_smoothing, reduction,
      compared=lambda pc, pr, rc, rr: (pc - pr, rc - rr))


def aot_unpaired_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    beta: chex.Numeric = 0.1,
    label_smoothing: float = 0.0,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """AOT for unpaired data: chosen log-ratios dominate rejected log-ratios.

    x = sort_i(logp(y_w,i) - logp_ref(y_w,i)),  y = sort_j(logp(y_l,j) - logp_ref(y_l,j))
    loss_k = -(1 - e) log sigmoid(beta (x_k - y_k)) - e log sigmoid(-beta (x_k - y_k))

  The distribution of the chosen responses' log-ratios should dominate that
  of the rejected ones'; chosen and rejected responses need not share a
  prompt, only the batch (position i of the chosen and of the rejected
  vectors are unrelated). TRL's loss_type="aot_unpaired", called "aot_pair"
  in TRL releases before the rename. One `mask` serves both vectors (the
  same number n of valid entries in each, as TRL's equal halves).

  Sanity values: equal distributions (rejected log-ratios a permutation of
  the chosen ones) -> log 2 per rank; the gradient is negative with respect
  to the chosen and positive with respect to the rejected policy
  log-probability.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x').
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x').
    beta: scalar > 0 (default 0.1).
    label_smoothing: Python float e in [0, 0.5) (default 0).
    mask: optional [B] validity mask of both vectors.
    reduction: "mean" (default; over the valid ranks), "sum" or "none".

  Returns:
    float32 scalar, or [B] losses by rank for reduction="none" (as
    `aot_loss`).

  Raises:
    ValueError: bad hyperparameters or `reduction`, or wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Melnyk et al. (2024), "Distributional Preference Alignment of LLMs via
    Optimal Transport", arXiv:2406.05882.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import aot_unpaired_loss
  >>> z = jnp.zeros(2)
  >>> # chosen log-ratios (2, 0) vs rejected (0, -20): ranks (0 vs -20), (2 vs 0)
  >>> float(aot_unpaired_loss(jnp.array([2.0, 0.0]), jnp.array([0.0, -20.0]),
  ...                         z, z, reduction="sum"))  # softplus(-2) + softplus(-0.2)
  0.7250...
  """
  return _sorted_pair_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, mask, beta, label_smoothing, reduction,
      compared=lambda pc, pr, rc, rr: (pc - rc, pr - rr))


def _sorted_pair_loss(policy_chosen_logps, policy_rejected_logps,
                      reference_chosen_logps, reference_rejected_logps, mask,
                      beta, label_smoothing, reduction, *, compared):
  """cDPO's loss of the rank-matched `compared(pc, pr, rc, rr)` = (x, y)."""
  beta = _reduction.scalar_hyperparameter(beta, "beta")
  label_smoothing = _reduction.check_probability(label_smoothing,
                                                 "label_smoothing")
  _reduction.check_reduction(reduction)
  logps, valid, _ = _reduction.sanitized_inputs(
      _shared.named_pair_logps(*_shared.as_arrays(
          policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
          reference_rejected_logps)), mask, "[B]")
  x, y = compared(*logps)
  # Masked entries sort last (+inf), and are replaced by 0 once sorted, so
  # that neither their junk nor the inf reaches the loss or its gradient.
  ranks_valid = jnp.arange(x.shape[0]) < jnp.sum(valid)
  x, y = (jnp.where(ranks_valid, jnp.sort(jnp.where(valid, v, jnp.inf)), 0)
          for v in (x, y))
  return bradley_terry.bradley_terry_loss(
      beta * x, beta * y, label_smoothing=label_smoothing, mask=ranks_valid,
      reduction=reduction)
