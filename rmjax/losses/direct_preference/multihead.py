"""Multi-head direct preference: one action head per objective (MAH-DPO), mixed at inference.

Notation and conventions in `rmjax.losses.direct_preference`.
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses.direct_preference import _shared


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
      *_shared.as_arrays(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, mask),
      head_ids, beta, num_heads=num_heads, label_smoothing=label_smoothing,
      reduction=reduction)


def _mah_dpo_loss(policy_chosen_logps, policy_rejected_logps,
                  reference_chosen_logps, reference_rejected_logps, mask,
                  head_ids, beta, num_heads, label_smoothing, reduction):
  per_pair = _shared.dpo_from_arrays(policy_chosen_logps, policy_rejected_logps,
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
