"""Transforms of one reward: log-sigmoid centring, PAR and its baselines.

A transform maps the raw score r of a reward model to the reward u the policy optimiser sees. The
ones here act on each reward separately, given per-prompt reference rewards (rewards of responses
sampled from the base / SFT policy for the same prompt) or given statistics (mean, std, min, max:
from the batch or from a running state, see `rmjax.transforms.running`).

Shapes: `rewards` is [B] (one response per prompt) or [B, G] / [B, K] (several responses or
several rewards per prompt); `references` is [B, M] (M base-policy rewards per prompt).

Conventions shared by every function here:
  * computation in float32 (bfloat16 inputs are upcast), float32 output;
  * `mask` (same shape as `rewards`, True = valid) and `reference_mask` ([B, M]): invalid entries
    are replaced by 0 *before* anything is computed, so junk (even inf or NaN) in padding changes
    neither values nor gradients; invalid outputs are exactly 0;
  * stable forms: log-sigmoid through `jax.nn.log_sigmoid`, no NaN or inf for |r| up to 1e4.
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import normalization
from rmjax.transforms import _common

QUANTILE_METHODS = ("empirical", "gaussian")
RELATIVE_FUNCTIONS = ("sigmoid", "tanh", "arctan", "identity")


def reference_reward(
    base_rewards: chex.Array,
    *,
    quantile: float = 0.85,
    method: str = "gaussian",
    mask: Optional[chex.Array] = None,
    ddof: int = 0,
    eps: float = 0.0,
) -> jnp.ndarray:
  """Per-prompt reference reward r_ref(x) from rewards of base-policy samples.

    empirical:  r_ref_b = q-quantile of {s_bm : m valid}  (linear interpolation, as np.quantile)
    gaussian:   r_ref_b = mean_b + (std_b + eps) * Phi^-1(q)     (std with `ddof`)

  Wang et al. (2024) define r_ref(x) as a quantile of the base policy's reward distribution for
  the prompt. PAR's LSC baseline (Fu et al. 2025) estimates it with the Gaussian 85% quantile of
  the M reference rewards, mean + Phi^-1(0.85) * std (Phi^-1(0.85) = 1.0364), with two conventions
  in its repository (PorUna-byte/PAR):
    * the code of the paper's experiments (`trainers/reward_shaper.py`) takes `utils.std`, which
      defaults to the sample std (ddof = 1; a single sample gives 0), and passes std + 1e-5 as
      the normal's scale: `ddof=1, eps=1e-5` here;
    * the later rewrite (`src/trainers/reward_shaper.py`) takes the population std (ddof = 0)
      with nothing added: the default here.
  The default (ddof = 0, eps = 0) is the maximum-likelihood Gaussian fit of the base policy's
  reward distribution, which is what the quantile of Wang et al.'s definition asks for, and keeps
  the numbers this function has always given; the two differ by the factor sqrt(M / (M - 1)) on
  the std (5% for PAR's M = 10). The empirical quantile is the assumption-free alternative.

  A row with no valid sample gets r_ref = 0. A row with one valid sample gets that sample plus
  eps * Phi^-1(q) (its std is 0 for every ddof).

  Args:
    base_rewards: [B, M] rewards of M base-policy responses per prompt (M >= 1).
    quantile: Python float q (default 0.85); in [0, 1] for "empirical", in (0, 1) for "gaussian".
    method: "gaussian" (default, PAR's choice) or "empirical".
    mask: optional [B, M] validity mask of the samples (rows may have different counts).
    ddof: Python int >= 0 (default 0, the population std) of the Gaussian fit's std; "gaussian"
      only.
    eps: Python float >= 0 (default 0.0) added to the Gaussian fit's std; "gaussian" only.

  Returns:
    [B] float32 reference rewards.

  Raises:
    ValueError: `base_rewards` not [B, M], M = 0 (empty reference set), bad `quantile`, `method`,
      `ddof`, `eps` or `mask`.
    TypeError: non-real inputs.

  References:
    Wang et al. (2024), "Transforming and Combining Rewards for Aligning Large Language Models",
    ICML, arXiv:2402.00742 (reference reward as a quantile of the base policy's rewards).
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770
    (LSC baseline with the Gaussian 85% quantile).

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import reference_reward
  >>> s = jnp.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
  >>> reference_reward(s, method="empirical", quantile=0.5).tolist()
  [2.0]
  >>> float(reference_reward(s)[0])  # 2 + sqrt(2) * Phi^-1(0.85) = 2 + 1.4142 * 1.0364
  3.4657
  >>> float(reference_reward(s, ddof=1, eps=1e-5)[0])  # PAR's paper: 2 + (sqrt(2.5) + 1e-5) 1.0364
  3.6387
  """
  method = _common.check_choice(method, "method", QUANTILE_METHODS)
  if method == "gaussian":
    quantile = _common.python_float(quantile, "quantile", low=0.0, high=1.0, low_open=True,
                                    high_open=True)
  else:
    quantile = _common.python_float(quantile, "quantile", low=0.0, high=1.0)
  ddof = _common.python_int(ddof, "ddof")
  eps = _common.python_float(eps, "eps", low=0.0)
  base_rewards = _reduction.as_real_array(base_rewards, "base_rewards")
  _reduction.check_rank(base_rewards, 2, "base_rewards", "[B, M]")
  if base_rewards.shape[1] == 0:
    raise ValueError("`base_rewards` must hold M >= 1 reference rewards per prompt (an empty "
                     f"reference set has no quantile); got shape {tuple(base_rewards.shape)}.")
  x, valid, _ = _common.real_input(base_rewards, "base_rewards", mask)
  count = jnp.sum(valid, axis=-1)
  if method == "gaussian":
    mean, std, _, _ = normalization.masked_moments(
        x, valid, axis=-1, ddof=ddof)
    z = jax.scipy.special.ndtri(jnp.asarray(quantile, x.dtype))
    out = (mean + (std + eps) * z)[:, 0]
  else:
    out = _empirical_quantile(x, valid, count, quantile)
  return jnp.where(count > 0, out, 0)


def _empirical_quantile(x, valid, count, quantile):
  """Row-wise q-quantile over valid entries, linear interpolation (numpy's default)."""
  ordered = jnp.sort(jnp.where(valid, x, jnp.inf), axis=-1)
  last = jnp.maximum(count - 1, 0)
  position = quantile * last.astype(x.dtype)
  lo = jnp.floor(position).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, last)
  frac = position - lo.astype(x.dtype)
  finite = jnp.where(jnp.isfinite(ordered), ordered, 0)  # empty rows: keep inf out of the grads
  x_lo = jnp.take_along_axis(finite, lo[:, None], axis=-1)[:, 0]
  x_hi = jnp.take_along_axis(finite, hi[:, None], axis=-1)[:, 0]
  return x_lo + frac * (x_hi - x_lo)


def log_sigmoid_centered(
    rewards: chex.Array,
    reference_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Log-sigmoid-centred (LSC) transform: u = log sigmoid(r - r_ref(x)).

  u is the log-probability that the response beats the reference response under the reward
  model's Bradley-Terry model. It is increasing and concave in r, <= 0, with diminishing returns
  (u(r + 1) - u(r) shrinks as r grows): improving a poor response counts more than polishing a
  good one, which mitigates both underfitting and reward hacking. Summing the transforms of
  several rewards is a logical AND (`logical_and`).

  Sanity values: r = 1, r_ref = 0 -> -0.3133; r = 3 -> -0.0486.

  Args:
    rewards: [B] or [B, K] (any shape) raw rewards.
    reference_rewards: reference rewards r_ref: a scalar, an array of `rewards`' shape, or one
      per prompt ([B], broadcast over the trailing axes); e.g. from `reference_reward`.
    mask: optional validity mask of `rewards`' shape.

  Returns:
    float32 array of `rewards`' shape; 0 at masked entries.

  Raises:
    ValueError: `reference_rewards` or `mask` of a wrong shape.
    TypeError: non-real inputs.

  References:
    Wang et al. (2024), "Transforming and Combining Rewards for Aligning Large Language Models",
    ICML, arXiv:2402.00742.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import log_sigmoid_centered
  >>> log_sigmoid_centered(jnp.array([1.0, 3.0]), 0.0).round(4).tolist()
  [-0.3133, -0.0486]
  """
  r, valid, dtype = _common.real_input(rewards, "rewards", mask)
  ref = _common.per_prompt(reference_rewards, "reference_rewards", r, "rewards")
  ref = jnp.where(valid, ref.astype(dtype), 0)
  return jnp.where(valid, jax.nn.log_sigmoid(r - ref), 0)


def _relative(rewards, references, *, function, steepness, mask, reference_mask):
  """mean over valid m of f(k (r - ref_m)), f in RELATIVE_FUNCTIONS; f(0) if no valid reference."""
  steepness = _reduction.scalar_hyperparameter(steepness, "steepness")
  r, valid, dtype = _common.real_input(rewards, "rewards", mask)
  if r.ndim < 1:
    raise ValueError(f"`rewards` must have shape [B] or [B, G]; got shape {tuple(r.shape)}.")
  references = _reduction.as_real_array(references, "references")
  num_prompts = r.shape[0]
  if references.ndim != 2 or references.shape[0] != num_prompts:
    raise ValueError(
        f"`references` must have shape [B, M] with B = {num_prompts} (B from `rewards` "
        f"{tuple(r.shape)}); got shape {tuple(references.shape)}.")
  if references.shape[1] == 0:
    raise ValueError("`references` must hold M >= 1 reference rewards per prompt (empty "
                     f"reference set); got shape {tuple(references.shape)}.")
  ref, ref_valid, ref_dtype = _common.real_input(references, "references", reference_mask,
                                                 "reference_mask")
  dtype = jnp.promote_types(dtype, ref_dtype)
  extra = (1,) * (r.ndim - 1)
  ref = ref.astype(dtype).reshape(num_prompts, *extra, -1)  # [B, 1.., M]
  ref_valid = ref_valid.reshape(num_prompts, *extra, -1)
  z = steepness * (r.astype(dtype)[..., None] - ref)
  if function == "sigmoid":
    f = jax.nn.sigmoid(z)
  elif function == "tanh":
    f = jnp.tanh(z)
  elif function == "arctan":
    f = jnp.arctan(z)
  else:
    f = z
  count = jnp.sum(ref_valid, axis=-1, dtype=dtype)
  total = jnp.sum(jnp.where(ref_valid, f, 0), axis=-1)
  at_zero = 0.5 if function == "sigmoid" else 0.0
  out = jnp.where(count > 0, total / jnp.maximum(count, 1), at_zero)
  return jnp.where(valid, out, 0)


def preference_as_reward(
    rewards: chex.Array,
    references: chex.Array,
    *,
    steepness: chex.Numeric = 1.0,
    mask: Optional[chex.Array] = None,
    reference_mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Preference As Reward (PAR): the mean preference probability over M reference responses.

    u = (1 / M) sum_m sigmoid(k (r - r_ref_m))

  Under the reward model's Bradley-Terry model, sigmoid(r - r_ref_m) is the probability that the
  response is preferred to reference m, so u is a win rate against the base policy: bounded in
  (0, 1), increasing in r, steepest near the references and flat far above them (rapid initial
  growth, then convergence). PAR's paper uses k = 1 and finds a single reference (M = 1) enough;
  M = 10 is its default. With float32, u saturates to exactly 0 or 1 once |k (r - r_ref)| > ~17.

  Rows whose references are all masked get sigmoid(0) = 0.5 (no information: a coin flip).

  Sanity values: r = 1, refs (0,) -> 0.7311; refs (0, 2) -> 0.5.

  Args:
    rewards: [B] or [B, G] rewards (G responses per prompt share the prompt's references).
    references: [B, M] rewards of M base-policy (reference) responses per prompt, M >= 1.
    steepness: k > 0 (default 1.0): a Python number (checked eagerly) or a scalar array.
    mask: optional validity mask of `rewards`' shape.
    reference_mask: optional [B, M] validity mask of `references`.

  Returns:
    float32 array of `rewards`' shape, in [0, 1] (in (0, 1) unless saturated); 0 at masked entries.

  Raises:
    ValueError: wrongly shaped inputs, M = 0, `steepness` <= 0.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import preference_as_reward
  >>> preference_as_reward(jnp.array([1.0]), jnp.array([[0.0]])).round(4).tolist()
  [0.7311]
  >>> preference_as_reward(jnp.array([1.0]), jnp.array([[0.0, 2.0]])).round(4).tolist()
  [0.5]
  """
  return _relative(rewards, references, function="sigmoid", steepness=steepness, mask=mask,
                   reference_mask=reference_mask)


def centered_reward(
    rewards: chex.Array,
    references: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    reference_mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Centred reward: the mean difference to M reference rewards (PAR's "centered" baseline).

    u = (1 / M) sum_m (r - r_ref_m) = r - mean_m r_ref_m

  Unbounded; rows whose references are all masked get 0.

  Args:
    rewards: [B] or [B, G] rewards.
    references: [B, M] reference rewards per prompt, M >= 1.
    mask: optional validity mask of `rewards`' shape.
    reference_mask: optional [B, M] validity mask of `references`.

  Returns:
    float32 array of `rewards`' shape; 0 at masked entries.

  Raises:
    ValueError: wrongly shaped inputs, M = 0.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import centered_reward
  >>> centered_reward(jnp.array([1.0]), jnp.array([[0.0, 4.0]])).tolist()
  [-1.0]
  """
  return _relative(rewards, references, function="identity", steepness=1.0, mask=mask,
                   reference_mask=reference_mask)


def relative_tanh(
    rewards: chex.Array,
    references: chex.Array,
    *,
    steepness: chex.Numeric = 1.0,
    mask: Optional[chex.Array] = None,
    reference_mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Relative tanh: PAR with tanh in place of the sigmoid (a PAR baseline).

    u = (1 / M) sum_m tanh(k (r - r_ref_m))      in (-1, 1)

  PAR's code (`calculate_relative_tanh`) has k = 1; k is an option here. Rows whose references are
  all masked get tanh(0) = 0.

  Args:
    rewards: [B] or [B, G] rewards.
    references: [B, M] reference rewards per prompt, M >= 1.
    steepness: k > 0 (default 1.0).
    mask: optional validity mask of `rewards`' shape.
    reference_mask: optional [B, M] validity mask of `references`.

  Returns:
    float32 array of `rewards`' shape; 0 at masked entries.

  Raises:
    ValueError: wrongly shaped inputs, M = 0, `steepness` <= 0.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import relative_tanh
  >>> relative_tanh(jnp.array([1.0]), jnp.array([[0.0]])).round(4).tolist()
  [0.7616]
  """
  return _relative(rewards, references, function="tanh", steepness=steepness, mask=mask,
                   reference_mask=reference_mask)


def relative_arctan(
    rewards: chex.Array,
    references: chex.Array,
    *,
    steepness: chex.Numeric = 1.0,
    mask: Optional[chex.Array] = None,
    reference_mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Relative arctan: PAR with arctan in place of the sigmoid (a PAR baseline).

    u = (1 / M) sum_m arctan(k (r - r_ref_m))    in (-pi/2, pi/2)

  Unscaled, as in PAR's code (`calculate_relative_arctan`, k = 1 there). arctan approaches its
  bounds only as 1/x, so it is the least saturating of the bounded transforms here. Rows whose
  references are all masked get 0.

  Args:
    rewards: [B] or [B, G] rewards.
    references: [B, M] reference rewards per prompt, M >= 1.
    steepness: k > 0 (default 1.0).
    mask: optional validity mask of `rewards`' shape.
    reference_mask: optional [B, M] validity mask of `references`.

  Returns:
    float32 array of `rewards`' shape; 0 at masked entries.

  Raises:
    ValueError: wrongly shaped inputs, M = 0, `steepness` <= 0.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import relative_arctan
  >>> relative_arctan(jnp.array([1.0]), jnp.array([[0.0]])).round(4).tolist()  # pi / 4
  [0.7854]
  """
  return _relative(rewards, references, function="arctan", steepness=steepness, mask=mask,
                   reference_mask=reference_mask)


def _stat(value, name, r, dtype):
  value = _common.trailing(value, name, r, "rewards")
  return value.astype(jnp.promote_types(dtype, value.dtype))


def mean_std_normalize(
    rewards: chex.Array,
    mean: chex.Array,
    std: chex.Array,
    *,
    eps: chex.Numeric = 1e-8,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Mean-std normalisation with given statistics: u = (r - mu) / (sigma + eps).

  For the statistics of the batch itself use `batch_whiten`; for running statistics take
  (mu, sigma) from `running_mean_std` (PAR's "Meanstd" baseline normalises with running
  statistics: `running_normalize`). Increasing in r.

  Args:
    rewards: [B] or [B, K] rewards.
    mean: mu, a scalar or one per column ([K] for [B, K]).
    std: sigma >= 0, same shapes as `mean`.
    eps: scalar >= 0 (default 1e-8) added to sigma; a zero denominator gives 0, not NaN.
    mask: optional validity mask of `rewards`' shape.

  Returns:
    float32 array of `rewards`' shape; 0 at masked entries.

  Raises:
    ValueError: statistics that do not broadcast, `eps` < 0.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770
    (baseline).

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import mean_std_normalize
  >>> mean_std_normalize(jnp.array([1.0, 5.0]), 3.0, 2.0, eps=0.0).tolist()
  [-1.0, 1.0]
  """
  eps = _reduction.scalar_hyperparameter(eps, "eps", allow_zero=True)
  r, valid, dtype = _common.real_input(rewards, "rewards", mask)
  mean = _stat(mean, "mean", r, dtype)
  denominator = _stat(std, "std", r, dtype) + eps
  safe_divide = normalization._safe_divide  # pylint: disable=protected-access
  return jnp.where(valid, safe_divide(r - mean, denominator), 0)


def clip_reward(
    rewards: chex.Array,
    mean: chex.Array,
    std: chex.Array,
    *,
    num_std: float = 1.0,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Clips rewards to mean +- num_std * std: u = clip(r, mu - n sigma, mu + n sigma).

  PAR's "Clip" baseline uses running statistics and n = 1. Non-decreasing in r (flat outside the
  band); the gradient is 0 where the reward is clipped.

  Args:
    rewards: [B] or [B, K] rewards.
    mean: mu, a scalar or one per column ([K]).
    std: sigma >= 0, same shapes as `mean`.
    num_std: Python float n >= 0 (default 1.0).
    mask: optional validity mask of `rewards`' shape.

  Returns:
    float32 array of `rewards`' shape; 0 at masked entries.

  Raises:
    ValueError: statistics that do not broadcast, bad `num_std`.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770
    (baseline).

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import clip_reward
  >>> clip_reward(jnp.array([-5.0, 0.5, 5.0]), 0.0, 1.0).tolist()
  [-1.0, 0.5, 1.0]
  """
  num_std = _common.python_float(num_std, "num_std", low=0.0)
  r, valid, dtype = _common.real_input(rewards, "rewards", mask)
  mean = _stat(mean, "mean", r, dtype)
  half_width = num_std * _stat(std, "std", r, dtype)
  return jnp.where(valid, jnp.clip(r, mean - half_width, mean + half_width), 0)


def min_max_normalize(
    rewards: chex.Array,
    minimum: chex.Array,
    maximum: chex.Array,
    *,
    eps: chex.Numeric = 1e-8,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Min-max normalisation: u = (r - min) / max(max - min, eps).

  In [0, 1] for rewards inside [min, max]; PAR's "Minmax" baseline uses the running minimum and
  maximum of a `WelfordState` (`running_normalize(..., method="min_max")`). Increasing in r.

  Args:
    rewards: [B] or [B, K] rewards.
    minimum: a scalar or one per column ([K]).
    maximum: same shapes as `minimum`.
    eps: scalar > 0 (default 1e-8), the smallest range divided by.
    mask: optional validity mask of `rewards`' shape.

  Returns:
    float32 array of `rewards`' shape; 0 at masked entries.

  Raises:
    ValueError: statistics that do not broadcast, `eps` <= 0.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770
    (baseline).

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import min_max_normalize
  >>> min_max_normalize(jnp.array([1.0, 2.0, 5.0]), 1.0, 5.0).tolist()
  [0.0, 0.25, 1.0]
  """
  eps = _reduction.scalar_hyperparameter(eps, "eps")
  r, valid, dtype = _common.real_input(rewards, "rewards", mask)
  lo = _stat(minimum, "minimum", r, dtype)
  span = jnp.maximum(_stat(maximum, "maximum", r, dtype) - lo, eps)
  return jnp.where(valid, (r - lo) / span, 0)


def ceil_reward(
    rewards: chex.Array,
    ceiling: chex.Numeric,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Caps rewards from above: u = min(r, c) (PAR's "Ceil" baseline).

  Non-decreasing in r; no gradient above the ceiling, so the policy gains nothing by pushing the
  reward model past c.

  Args:
    rewards: [B] or [B, K] rewards.
    ceiling: c, a scalar or one per column ([K]).
    mask: optional validity mask of `rewards`' shape.

  Returns:
    float32 array of `rewards`' shape; 0 at masked entries.

  Raises:
    ValueError: a `ceiling` that does not broadcast.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770
    (baseline).

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import ceil_reward
  >>> ceil_reward(jnp.array([1.0, 7.0]), 5.0).tolist()
  [1.0, 5.0]
  """
  r, valid, dtype = _common.real_input(rewards, "rewards", mask)
  return jnp.where(valid, jnp.minimum(r, _stat(ceiling, "ceiling", r, dtype)), 0)
