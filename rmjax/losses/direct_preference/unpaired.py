"""Unpaired direct-preference losses: each response labelled desirable or not (KTO).

Notation and conventions in `rmjax.losses.direct_preference`.
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses.direct_preference import _shared


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
      *_shared.as_arrays(policy_logps, reference_logps, desirable, kl_policy_logps,
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
