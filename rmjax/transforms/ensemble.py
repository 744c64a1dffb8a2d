"""Ensembles of reward models: aggregation over members and preference strength.

An ensemble's rewards come as `member_rewards: [M, B]` (members first, as `jax.vmap` over a
stacked params pytree returns them).
"""

import jax
import jax.numpy as jnp

from rmjax.losses import _reduction

ENSEMBLE_AGGREGATIONS = ("mean", "median", "min", "mean_minus_std", "mean_minus_var")


def aggregate_ensemble_rewards(member_rewards: jax.Array, *, method: str = "mean",
                               uncertainty_penalty: float = 1.0) -> jax.Array:
  """Per-sample aggregation of an ensemble's rewards over its M members.

    mean:            mean_m r_m
    median:          median_m r_m
    min:             min_m r_m                              (worst-case optimisation)
    mean_minus_std:  mean_m r_m - lambda * std_m r_m        (uncertainty-weighted)
    mean_minus_var:  mean_m r_m - lambda * var_m r_m        (UWO of Coste et al.)

  std and var are over members with ddof = 0 (an ensemble is the population, not a sample).

  Args:
    member_rewards: [M, B] rewards of M members for B samples (M >= 1).
    method: one of `ENSEMBLE_AGGREGATIONS` (default "mean").
    uncertainty_penalty: lambda >= 0 of the two uncertainty-penalised methods (default 1.0).

  Returns:
    [B] float32 aggregated rewards.

  References:
    Coste et al. (2024), "Reward Model Ensembles Help Mitigate Overoptimization", ICLR;
    Eisenstein et al. (2023), "Helping or Herding? Reward Model Ensembles Mitigate but do not
    Eliminate Reward Hacking", arXiv:2312.09244.

  >>> r = jnp.array([[1.0, 0.0], [3.0, 0.0]])
  >>> aggregate_ensemble_rewards(r, method="mean_minus_var", uncertainty_penalty=0.5)
  Array([1.5, 0. ], dtype=float32)
  """
  if method not in ENSEMBLE_AGGREGATIONS:
    raise ValueError(f"`method` must be one of {ENSEMBLE_AGGREGATIONS}; got {method!r}.")
  if isinstance(uncertainty_penalty, (int, float)) and uncertainty_penalty < 0:
    raise ValueError(f"`uncertainty_penalty` must be >= 0; got {uncertainty_penalty!r}.")
  r = _reduction.as_real_array(member_rewards, "member_rewards")
  _reduction.check_rank(r, 2, "member_rewards", "[M, B]")
  r = r.astype(_reduction.compute_dtype(r))
  if method == "mean":
    return jnp.mean(r, axis=0)
  if method == "median":
    return jnp.median(r, axis=0)
  if method == "min":
    return jnp.min(r, axis=0)
  mean = jnp.mean(r, axis=0)
  var = jnp.mean(jnp.square(r - mean), axis=0)
  if method == "mean_minus_var":
    return mean - uncertainty_penalty * var
  # sqrt with a zero-safe gradient: identical members give std 0 and a finite gradient.
  std = jnp.sqrt(jnp.where(var > 0, var, 1.0)) * (var > 0)
  return mean - uncertainty_penalty * std


def preference_strength(chosen_rewards: jax.Array,
                        rejected_rewards: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Preference strength of each pair from an ensemble: mean and spread of member margins.

    d_mi = r_m(chosen_i) - r_m(rejected_i);  strength_i = mean_m d_mi;  spread_i = std_m d_mi

  A low (or negative) strength marks a pair the ensemble doubts: a likely mislabelled or
  ambiguous pair. Uses (Secrets of RLHF II): flip the labels of the lowest-strength fraction
  (`lowest_fraction_mask`), label smoothing, or an adaptive margin
  `bradley_terry_loss(..., margin=jax.lax.stop_gradient(strength))`.

  Args:
    chosen_rewards: [M, B] member rewards of the chosen responses.
    rejected_rewards: [M, B] member rewards of the rejected responses.

  Returns:
    (strength [B], spread [B]) float32; spread with ddof = 0.

  References:
    Wang et al. (2024), "Secrets of RLHF in Large Language Models Part II: Reward Modeling",
    arXiv:2401.06080, section 3.

  >>> s, d = preference_strength(jnp.array([[2.0], [4.0]]), jnp.zeros((2, 1)))
  >>> float(s[0]), float(d[0])
  (3.0, 1.0)
  """
  chosen = _reduction.as_real_array(chosen_rewards, "chosen_rewards")
  rejected = _reduction.as_real_array(rejected_rewards, "rejected_rewards")
  _reduction.check_rank(chosen, 2, "chosen_rewards", "[M, B]")
  _reduction.check_same_shape(rejected, "rejected_rewards", chosen, "chosen_rewards")
  dtype = _reduction.compute_dtype(chosen, rejected)
  margins = chosen.astype(dtype) - rejected.astype(dtype)
  return jnp.mean(margins, axis=0), jnp.std(margins, axis=0)


def lowest_fraction_mask(values: jax.Array, fraction: float, *,
                         mask: jax.Array | None = None) -> jax.Array:
  """Marks the floor(fraction * n_valid) valid entries with the lowest values.

  With `values` = preference strength this selects the pairs whose labels Secrets of RLHF II
  flips (fraction 0.2 by default there). Ties are broken by index (stable sort), so the
  result is deterministic; invalid entries are never marked.

  Args:
    values: [B] scores (e.g. preference strength).
    fraction: Python float in [0, 1].
    mask: optional [B] validity mask.

  Returns:
    [B] bool.

  >>> lowest_fraction_mask(jnp.array([0.5, -1.0, 2.0, 0.1]), 0.5)
  Array([False,  True, False,  True], dtype=bool)
  """
  if not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
    raise ValueError(f"`fraction` must be a Python float in [0, 1]; got {fraction!r}.")
  v = _reduction.as_real_array(values, "values")
  _reduction.check_rank(v, 1, "values", "[B]")
  valid = _reduction.validity_mask(mask, v.shape)
  v = jnp.where(valid, v.astype(_reduction.compute_dtype(v)), jnp.inf)
  rank = jnp.argsort(jnp.argsort(v, stable=True), stable=True)
  count = jnp.floor(fraction * jnp.sum(valid)).astype(jnp.int32)
  return (rank < count) & valid
