"""Normalisation of rewards and advantages: batch whitening and per-group statistics.

The one home, in `rmjax`, for

  * `batch_whiten`: (x - mean) / (std + eps) over all valid entries of a batch,
  * `group_normalize`: the same within each prompt's group of G samples (GRPO), or only the
    centring r - mean_g (Dr. GRPO),
  * `normalize_then_sum`: GDPO / TRL's `multi_objective_aggregation="normalize_then_sum"`,
  * `group_rows`: the flat [N] layout (N = B * G samples, the G samples of a prompt adjacent, as
    verl and TRL lay them out) to the grouped [B, G] layout.

`rmjax.losses.advantages` builds the GRPO family of advantage estimators on these, and
`rmjax.transforms` re-exports them as reward transforms.

Conventions shared by every function here:
  * statistics are over *valid* entries only (`mask`, True = valid); masked entries are replaced
    by 0 before anything is computed (so NaN or inf padding is harmless to values and gradients)
    and come back exactly 0;
  * standard deviations use `ddof` (delta degrees of freedom: divide the sum of squares by
    n - ddof); where n - ddof <= 0 the standard deviation is taken to be 0;
  * the standard deviation is computed so that its gradient is finite (0) when every valid entry is
    equal, where the plain `sqrt` would give NaN;
  * a denominator `std + eps` that is exactly 0 (only possible with eps = 0 and no spread, where
    the numerator is 0 too) gives 0, not NaN;
  * computation is in float32 (bfloat16 inputs are upcast) and the output is float32.
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction

SCALES = ("std", "none")


def _check_ddof(ddof, name: str = "ddof") -> int:
  """Checks a delta-degrees-of-freedom argument: a Python int >= 0."""
  if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
    raise ValueError(
        f"`{name}` must be a Python int >= 0 (0: population std, 1: unbiased); got "
        f"{type(ddof).__name__} {ddof!r}.")
  return ddof


def _check_group_size(group_size, name: str = "group_size") -> int:
  """Checks a group size: a Python int >= 1 (an empty group is an error)."""
  if isinstance(group_size, bool) or not isinstance(group_size, int):
    raise ValueError(
        f"`{name}` must be a Python int >= 1; got {type(group_size).__name__} {group_size!r}.")
  if group_size < 1:
    raise ValueError(f"`{name}` must be >= 1 (groups cannot be empty); got {group_size}.")
  return group_size


def group_rows(values: chex.Array, group_size: int) -> jnp.ndarray:
  """Reshapes a flat [N, ...] batch into groups [N // G, G, ...].

  The G samples of a prompt must be adjacent (rows g * G .. g * G + G - 1 form group g), the layout
  of verl (`repeat_interleave` of the prompts) and TRL (`num_generations`). The inverse is
  `grouped.reshape(-1, *grouped.shape[2:])`. Any dtype is accepted (masks, ids, lengths).

  Args:
    values: [N, ...] array, N = B * G.
    group_size: Python int G >= 1, the number of samples per prompt.

  Returns:
    [B, G, ...] view of `values` with B = N // G.

  Raises:
    ValueError: `group_size` not a positive int, `values` a scalar, or G not dividing N.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.normalization import group_rows
  >>> group_rows(jnp.arange(6), 3).tolist()
  [[0, 1, 2], [3, 4, 5]]
  """
  group_size = _check_group_size(group_size)
  values = jnp.asarray(values)
  if values.ndim < 1:
    raise ValueError(
        f"`values` must have at least one axis [N, ...]; got shape {tuple(values.shape)}.")
  n = values.shape[0]
  if n % group_size:
    raise ValueError(
        f"`group_size` ({group_size}) must divide N, the length of the first axis of `values` "
        f"with shape {tuple(values.shape)}; got N = {n}, N % group_size = {n % group_size}.")
  return values.reshape(n // group_size, group_size, *values.shape[1:])


def _check_eps(eps):
  return _reduction.scalar_hyperparameter(eps, "eps", allow_zero=True)


def _safe_divide(numerator: jnp.ndarray, denominator: jnp.ndarray) -> jnp.ndarray:
  """numerator / denominator, and 0 (with a 0 gradient) where the denominator is 0."""
  nonzero = denominator != 0
  return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0)


def masked_moments(x: jnp.ndarray, valid: jnp.ndarray, *, axis, ddof) -> tuple:
  """Masked mean and standard deviation along `axis`.

  The one home of masked group and batch statistics: the advantages, the transforms and their
  sharded forms all call it (not exported from `rmjax.losses`).

  `x` must already be sanitised (0 where not `valid`). Returns (mean, std, count, centred) with
  `keepdims=True` shapes for mean, std and count; `centred` is x - mean on valid entries and 0
  elsewhere. The std is 0 where count - ddof <= 0, and its gradient is 0 where it is 0.
  """
  dtype = x.dtype
  count = jnp.sum(valid, axis=axis, keepdims=True, dtype=dtype)
  mean = jnp.sum(x, axis=axis, keepdims=True) / jnp.maximum(count, 1)
  centred = jnp.where(valid, x - mean, 0)
  sum_sq = jnp.sum(jnp.square(centred), axis=axis, keepdims=True)
  return mean, std_from_sums(sum_sq, count, ddof), count, centred


def std_from_sums(sum_sq: jnp.ndarray, count: jnp.ndarray, ddof) -> jnp.ndarray:
  """sqrt(sum_sq / (count - ddof)), and 0 (with a 0 gradient) where that is 0 or undefined.

  The standard-deviation rule of `masked_moments`, from a sum of centred squares and a count
  (also global ones, psum'd across devices by `rmjax.parallel.sharded_losses`).
  """
  dof = count - ddof
  positive = (sum_sq > 0) & (dof > 0)
  variance = jnp.where(positive, sum_sq, 1) / jnp.where(positive, dof, 1)
  return jnp.where(positive, jnp.sqrt(variance), 0)


def batch_whiten(
    values: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    shift_only: bool = False,
    ddof: int = 0,
    eps: chex.Numeric = 1e-6,
) -> jnp.ndarray:
  """Whitens a batch with its own masked mean and standard deviation.

    out = (x - mean_valid(x)) / (std_valid(x; ddof) + eps)     (shift_only=False)
    out =  x - mean_valid(x)                                   (shift_only=True)

  with the statistics over every valid entry of `values`, whatever its rank (e.g. all valid tokens
  of [N, T] advantages, as REINFORCE++ and verl's `masked_whiten` do). Masked entries come back 0.

  Note verl's `masked_whiten` uses (x - mean) * rsqrt(var + 1e-8) with the unbiased variance; here
  it is the (std + eps) form of the spec, TRL and DLER, with `ddof` an option (default 0, the
  population std; pass ddof=1 for the unbiased one).

  Args:
    values: [...] real array of any shape (e.g. rewards [N] or token advantages [N, T]).
    mask: optional bool (or {0, 1}) array of the same shape; True marks a valid entry. Default: all
      valid.
    shift_only: Python bool (default False); if True only subtract the mean (no scaling).
    ddof: Python int >= 0 (default 0): the variance divides by n - ddof (n = valid count).
    eps: scalar >= 0 (default 1e-6) added to the standard deviation.

  Returns:
    float32 array of `values`' shape; 0 at masked entries (and everywhere if nothing is valid).

  Raises:
    ValueError: `mask` of the wrong shape, bad `ddof`/`eps`/`shift_only`.
    TypeError: non-real `values`.

  References:
    Schulman et al. (2017), "Proximal Policy Optimization Algorithms", arXiv:1707.06347
    (advantage normalisation); Hu (2025), "REINFORCE++: A Simple and Efficient Approach for
    Aligning Large Language Models", arXiv:2501.03262 (batch-level whitening).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.normalization import batch_whiten
  >>> batch_whiten(jnp.array([1.0, 3.0, 99.0]), mask=jnp.array([1, 1, 0])).tolist()
  [-0.99999..., 0.99999..., 0.0]
  >>> batch_whiten(jnp.array([1.0, 3.0]), shift_only=True).tolist()
  [-1.0, 1.0]
  """
  values = _reduction.as_real_array(values, "values")
  valid = _reduction.validity_mask(mask, values.shape, "mask")
  if not isinstance(shift_only, bool):
    raise ValueError(
        f"`shift_only` must be a Python bool; got {type(shift_only).__name__} {shift_only!r}.")
  ddof = _check_ddof(ddof)
  eps = _check_eps(eps)
  return _batch_whiten(values, valid, ddof, eps, shift_only=shift_only)


def _batch_whiten(values, valid, ddof, eps, *, shift_only):
  dtype = _reduction.compute_dtype(values)
  x = jnp.where(valid, values.astype(dtype), 0)
  axes = tuple(range(x.ndim))
  _, std, _, centred = masked_moments(x, valid, axis=axes, ddof=ddof)
  if shift_only:
    return centred
  return jnp.where(valid, _safe_divide(centred, std + eps), 0)


def group_normalize(
    values: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    scale: str = "std",
    ddof: int = 1,
    eps: chex.Numeric = 1e-6,
) -> jnp.ndarray:
  """Per-group normalisation of rewards (GRPO), or per-group centring (Dr. GRPO).

  For group b (one prompt) with valid samples S_b, n_b = |S_b|:

    scale="std":   out_bi = (r_bi - mean_b) / (std_b + eps)     std with `ddof` (default 1)
    scale="none":  out_bi =  r_bi - mean_b                       (Dr. GRPO)

  A group with a single valid sample gets mean 0 and std 1, as in verl's GRPO advantage
  (`compute_grpo_outcome_advantage`), so its output is r / (1 + eps) ("std") or r ("none").
  (TRL instead gives such a group an advantage of 0; `normalize_then_sum` follows TRL.) A group
  with no valid sample is all 0. Masked entries come back 0.

  Both verl (eps 1e-6) and TRL (eps 1e-4) use the unbiased std (ddof=1).

  Args:
    values: [B, G] rewards, B prompts x G samples (use `group_rows` for a flat [N] batch).
    mask: optional [B, G] bool (or {0, 1}) validity mask. Default: all valid.
    scale: "std" (default; GRPO) or "none" (Dr. GRPO: centring only).
    ddof: Python int >= 0 (default 1): the group variance divides by n_b - ddof; std_b is 0 where
      n_b - ddof <= 0 (apart from the single-sample rule above).
    eps: scalar >= 0 (default 1e-6, verl) added to std_b.

  Returns:
    [B, G] float32 normalised values.

  Raises:
    ValueError: `values` not [B, G], G = 0 (empty groups), `mask` of the wrong shape, unknown
      `scale`, bad `ddof`/`eps`.
    TypeError: non-real `values`.

  References:
    Shao et al. (2024), "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
    Language Models", arXiv:2402.03300 (GRPO).
    Liu et al. (2025), "Understanding R1-Zero-Like Training: A Critical Perspective",
    arXiv:2503.20783 (Dr. GRPO).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.normalization import group_normalize
  >>> r = jnp.array([[1.0, 0.0, 0.0, 1.0], [2.0, 5.0, 0.0, 0.0]])
  >>> m = jnp.array([[1, 1, 1, 1], [1, 0, 0, 0]])
  >>> group_normalize(r, mask=m).round(4).tolist()  # std of (1, 0, 0, 1) with ddof=1: 0.5774
  [[0.866, -0.866, -0.866, 0.866], [2.0, 0.0, 0.0, 0.0]]
  >>> group_normalize(r, mask=m, scale="none").tolist()
  [[0.5, -0.5, -0.5, 0.5], [2.0, 0.0, 0.0, 0.0]]
  """
  values, valid = _grouped_inputs(values, mask)
  if not isinstance(scale, str) or scale not in SCALES:
    raise ValueError(f"`scale` must be one of {SCALES}; got {scale!r}.")
  ddof = _check_ddof(ddof)
  eps = _check_eps(eps)
  return _group_normalize(values, valid, ddof, eps, scale=scale, single="verl")


def _grouped_inputs(values, mask, name: str = "values"):
  """Checks grouped `values: [B, G]` (G >= 1; the errors name `name`) and `mask`.

  Returns:
    (values, valid): `values` as a real array (not yet sanitised) and the bool [B, G] mask.
  """
  values = _reduction.as_real_array(values, name)
  _reduction.check_rank(values, 2, name, "[B, G]")
  if values.shape[1] == 0:
    raise ValueError(
        f"`{name}` must have G >= 1 samples per group; got shape {tuple(values.shape)} "
        "(empty groups).")
  valid = _reduction.validity_mask(mask, values.shape, "mask")
  return values, valid


def _group_normalize(values, valid, ddof, eps, *, scale, single):
  """Group normalisation along the last axis of `values` ([..., G]).

  single="verl": a one-sample group gets mean 0, std 1; single="trl": it gets std 0 (so 0 out).
  """
  dtype = _reduction.compute_dtype(values)
  x = jnp.where(valid, values.astype(dtype), 0)
  mean, std, count, centred = masked_moments(x, valid, axis=-1, ddof=ddof)
  if single == "verl":
    one = count == 1
    centred = jnp.where(valid, x - jnp.where(one, 0, mean), 0)
    std = jnp.where(one, 1, std)
  if scale == "none":
    return centred
  return jnp.where(valid, _safe_divide(centred, std + eps), 0)


def normalize_then_sum(
    rewards: chex.Array,
    *,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    ddof: int = 1,
    eps: chex.Numeric = 1e-4,
) -> jnp.ndarray:
  """GDPO: normalise each reward within its group, take the weighted sum, whiten over the batch.

    z_bik = (r_bik - mean_bk) / (std_bk + eps)          per reward k, within group b
    s_bi  = sum_k w_k z_bik
    out   = (s - mean_valid(s)) / (std_valid(s) + eps)   over the whole (valid) batch

  with both standard deviations using `ddof` (TRL: 1, the unbiased `torch.std`), so that a reward
  with a large spread cannot dominate the sum as it does when the rewards are summed first.

  This is the order and the constants of TRL's GRPOTrainer with
  `multi_objective_aggregation="normalize_then_sum"` (checked in trl/trainer/grpo_trainer.py:
  per-function group mean and Bessel-corrected std + 1e-4, weighted `nansum` over functions, then
  (s - s.mean()) / (s.std() + 1e-4) over the batch). As in TRL, a group with a single valid sample
  has std 0 and so contributes z = 0 (unlike `group_normalize`, which follows verl there).

  Args:
    rewards: [B, G, K] rewards: B prompts x G samples x K reward functions.
    weights: optional [K] weights w_k (default all 1; not renormalised).
    mask: optional [B, G] bool (or {0, 1}) validity mask of the samples. Default: all valid.
    ddof: Python int >= 0 (default 1), used for the group and the batch std.
    eps: scalar >= 0 (default 1e-4, TRL) added to both standard deviations.

  Returns:
    [B, G] float32 advantages; 0 at masked samples.

  Raises:
    ValueError: `rewards` not [B, G, K], G = 0 or K = 0, `weights` not [K], `mask` not [B, G], bad
      `ddof`/`eps`.
    TypeError: non-real `rewards` or `weights`.

  References:
    Liu et al. (2026), "GDPO: Group reward-Decoupled Normalization Policy Optimization for
    Multi-reward RL Optimization", arXiv:2601.05242; TRL `GRPOConfig.multi_objective_aggregation`.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.normalization import normalize_then_sum
  >>> # [B=2, G=2, K=2]: prompt 1 varies only in reward 0, prompt 2 only in reward 1 (5x larger).
  >>> r = jnp.array([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 5.0]]])
  >>> normalize_then_sum(r).round(3).tolist()  # the scale of each reward does not matter
  [[-0.866, 0.866], [-0.866, 0.866]]
  """
  rewards = _reduction.as_real_array(rewards, "rewards")
  _reduction.check_rank(rewards, 3, "rewards", "[B, G, K]")
  if rewards.shape[1] == 0 or rewards.shape[2] == 0:
    raise ValueError(
        f"`rewards` must have G >= 1 samples per group and K >= 1 rewards; got shape "
        f"{tuple(rewards.shape)}.")
  num_rewards = rewards.shape[2]
  if weights is None:
    weights = jnp.ones((num_rewards,), jnp.float32)
  weights = _reduction.as_real_array(weights, "weights")
  if tuple(weights.shape) != (num_rewards,):
    raise ValueError(
        f"`weights` must have shape [K] = ({num_rewards},) (K from the last axis of `rewards` "
        f"{tuple(rewards.shape)}); got shape {tuple(weights.shape)}.")
  valid = _reduction.validity_mask(mask, rewards.shape[:2], "mask")
  ddof = _check_ddof(ddof)
  eps = _check_eps(eps)
  return _normalize_then_sum(rewards, weights, valid, ddof, eps)


def _normalize_then_sum(rewards, weights, valid, ddof, eps):
  dtype = _reduction.compute_dtype(rewards, weights)
  per_reward = jnp.moveaxis(rewards, -1, 0)  # [K, B, G]
  z = _group_normalize(per_reward, jnp.broadcast_to(valid, per_reward.shape), ddof, eps,
                       scale="std", single="trl")
  summed = jnp.einsum("kbg,k->bg", z, weights.astype(dtype))
  return _batch_whiten(summed, valid, ddof, eps, shift_only=False)
