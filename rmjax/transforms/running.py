"""Running reward statistics with explicit state: Welford (exact) and EMA (exponential).

optax-style: `*_init(...) -> state`, `*_update(state, values, ...) -> new_state`, both pure and
jit-safe, with NamedTuple states that the caller keeps (in its train state) and passes back.
Applying the statistics is separate: `running_mean_std(state)` reads (mean, std) and
`running_normalize(state, rewards, method=...)` applies PAR's Meanstd / Clip / Minmax baselines.

Shapes: a batch `values: [N, *F]` (or [B, G, *F]: every axis but the trailing feature shape F is
a sample axis) updates statistics of feature shape F, e.g. F = () for one scalar reward and
F = (K,) for K rewards tracked separately. `mask` has `values`' shape; masked entries never reach
the statistics (not even as NaN or inf).
"""

from typing import NamedTuple, Optional, Sequence

import chex
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.transforms import _common
from rmjax.transforms import single

NORMALIZE_METHODS = ("mean_std", "clip", "min_max")


class WelfordState(NamedTuple):
  """Exact running moments of every value seen so far (Welford / Chan et al. merge).

  Attributes:
    count: int32 [*F] number of valid values seen.
    mean: float32 [*F] their mean (0 before any value).
    m2: float32 [*F] sum of squared deviations from the mean.
    minimum: float32 [*F] smallest value seen (0 before any value).
    maximum: float32 [*F] largest value seen (0 before any value).
  """
  count: chex.Array
  mean: chex.Array
  m2: chex.Array
  minimum: chex.Array
  maximum: chex.Array


class EmaState(NamedTuple):
  """Exponential moving moments: the running distribution is d * old + (1 - d) * batch.

  Attributes:
    count: int32 [*F] number of valid values seen (0 = not initialised).
    mean: float32 [*F] moving mean.
    variance: float32 [*F] moving variance (population, of the mixture distribution).
  """
  count: chex.Array
  mean: chex.Array
  variance: chex.Array


def _feature_shape(feature_shape) -> tuple:
  if isinstance(feature_shape, int) and not isinstance(feature_shape, bool):
    feature_shape = (feature_shape,)
  try:
    shape = tuple(_common.python_int(d, "feature_shape") for d in feature_shape)
  except TypeError:
    raise ValueError("`feature_shape` must be a tuple of Python ints >= 0; got "
                     f"{feature_shape!r}.") from None
  return shape


def welford_init(feature_shape: Sequence[int] = ()) -> WelfordState:
  """Empty Welford statistics of feature shape F.

  Args:
    feature_shape: F (default (): one scalar reward; (K,) for K rewards).

  Returns:
    `WelfordState` with count 0 and zero moments.

  >>> from rmjax.transforms import welford_init
  >>> welford_init((2,)).count.tolist()
  [0, 0]
  """
  shape = _feature_shape(feature_shape)
  zeros = jnp.zeros(shape, jnp.float32)
  return WelfordState(jnp.zeros(shape, jnp.int32), zeros, zeros, zeros, zeros)


def _batch_moments(values, mask, feature_shape, name="values"):
  """Masked count [F], mean [F], sum of squared deviations [F], min and max [F] of a batch."""
  values = _reduction.as_real_array(values, name)
  nf = len(feature_shape)
  if values.ndim < nf + 1 or tuple(values.shape[values.ndim - nf:]) != tuple(feature_shape):
    raise ValueError(
        f"`{name}` must have shape [N, *F] with the state's feature shape F = "
        f"{tuple(feature_shape)}; got shape {tuple(values.shape)}.")
  x, valid, dtype = _common.real_input(values, name, mask)
  axes = tuple(range(values.ndim - nf))
  count = jnp.sum(valid, axis=axes, dtype=jnp.int32)
  n = count.astype(dtype)
  mean = jnp.sum(x, axis=axes) / jnp.maximum(n, 1)
  m2 = jnp.sum(jnp.square(jnp.where(valid, x - mean, 0)), axis=axes)
  lo = jnp.min(jnp.where(valid, x, jnp.inf), axis=axes)
  hi = jnp.max(jnp.where(valid, x, -jnp.inf), axis=axes)
  return count, mean, m2, lo, hi


def welford_update(state: WelfordState, values: chex.Array, *,
                   mask: Optional[chex.Array] = None) -> WelfordState:
  """Merges a batch into Welford statistics (Chan, Golub & LeVeque's parallel update).

    n = n_a + n_b;  delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n
    m2 = m2_a + m2_b + delta^2 * n_a * n_b / n

  Exact: after any sequence of batches the state holds the count, mean, sum of squared deviations,
  minimum and maximum of all valid values so far, batch size free and without the cancellation of
  the sum-of-squares formula. A batch with no valid value leaves the state unchanged.

  Args:
    state: `WelfordState` from `welford_init` or a previous update.
    values: [N, *F] batch (any number of leading sample axes).
    mask: optional validity mask of `values`' shape.

  Returns:
    The new `WelfordState`.

  Raises:
    ValueError: `values` whose trailing shape is not the state's F, `mask` of a wrong shape.
    TypeError: non-real `values`.

  References:
    Welford (1962), "Note on a method for calculating corrected sums of squares and products";
    Chan, Golub & LeVeque (1979), "Updating formulae and a pairwise algorithm for computing
    sample variances".

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import welford_init, welford_update, running_mean_std
  >>> state = welford_update(welford_init(), jnp.array([1.0, 2.0]))
  >>> state = welford_update(state, jnp.array([3.0, 4.0, 5.0]))
  >>> [float(x) for x in running_mean_std(state)]  # mean 3, population std sqrt(2)
  [3.0, 1.414...]
  """
  shape = tuple(state.mean.shape)
  count_b, mean_b, m2_b, lo_b, hi_b = _batch_moments(values, mask, shape)
  n_a = state.count.astype(jnp.float32)
  n_b = count_b.astype(jnp.float32)
  n = n_a + n_b
  delta = mean_b - state.mean
  mean = state.mean + delta * n_b / jnp.maximum(n, 1)
  m2 = state.m2 + m2_b + jnp.square(delta) * n_a * n_b / jnp.maximum(n, 1)
  seen, new = state.count > 0, count_b > 0
  lo = jnp.where(new, jnp.where(seen, jnp.minimum(state.minimum, lo_b), lo_b), state.minimum)
  hi = jnp.where(new, jnp.where(seen, jnp.maximum(state.maximum, hi_b), hi_b), state.maximum)
  return WelfordState(state.count + count_b, jnp.where(new, mean, state.mean),
                      jnp.where(new, m2, state.m2), lo, hi)


def ema_init(feature_shape: Sequence[int] = ()) -> EmaState:
  """Empty EMA statistics of feature shape F (the first batch initialises them).

  Args:
    feature_shape: F (default (): one scalar reward).

  Returns:
    `EmaState` with count 0.

  >>> from rmjax.transforms import ema_init
  >>> ema_init().count.tolist()
  0
  """
  shape = _feature_shape(feature_shape)
  zeros = jnp.zeros(shape, jnp.float32)
  return EmaState(jnp.zeros(shape, jnp.int32), zeros, zeros)


def ema_update(state: EmaState, values: chex.Array, *, decay: float = 0.99,
               mask: Optional[chex.Array] = None) -> EmaState:
  """Exponential moving mean and variance, one batch at a time.

  The running distribution is the mixture d * (old) + (1 - d) * (empirical batch distribution):

    delta = mean_b - mean
    mean' = mean + (1 - d) delta
    var'  = d (var + (1 - d) delta^2) + (1 - d) var_b        (var_b with ddof 0)

  so after batches 1..t the mean is sum_s w_s mean_s with weights w_1 = d^(t-1),
  w_s = (1 - d) d^(t-s), and the variance is that of the weighted mixture of the batches. The
  first batch with a valid value sets mean and variance directly (no bias towards the zero
  initialisation, hence no debiasing step); a batch with no valid value changes nothing. With a
  single value per batch this is Finch's (2009) incremental exponentially weighted variance.

  Args:
    state: `EmaState` from `ema_init` or a previous update.
    values: [N, *F] batch.
    decay: Python float d in [0, 1) (default 0.99); 0 keeps only the latest batch.
    mask: optional validity mask of `values`' shape.

  Returns:
    The new `EmaState`.

  Raises:
    ValueError: bad `decay`, `values` whose trailing shape is not F, `mask` of a wrong shape.
    TypeError: non-real `values`.

  References:
    Finch (2009), "Incremental calculation of weighted mean and variance".

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import ema_init, ema_update
  >>> state = ema_update(ema_init(), jnp.array([0.0, 2.0]), decay=0.5)  # mean 1, var 1
  >>> state = ema_update(state, jnp.array([3.0, 3.0]), decay=0.5)
  >>> float(state.mean), float(state.variance)  # mixture of {0, 2} and {3, 3}: mean 2, var 1.5
  (2.0, 1.5)
  """
  decay = _common.python_float(decay, "decay", low=0.0, high=1.0, high_open=True)
  shape = tuple(state.mean.shape)
  count_b, mean_b, m2_b, _, _ = _batch_moments(values, mask, shape)
  var_b = m2_b / jnp.maximum(count_b.astype(jnp.float32), 1)
  delta = mean_b - state.mean
  seen, new = state.count > 0, count_b > 0
  mean = jnp.where(seen, state.mean + (1 - decay) * delta, mean_b)
  var = jnp.where(seen, decay * (state.variance + (1 - decay) * jnp.square(delta))
                  + (1 - decay) * var_b, var_b)
  return EmaState(state.count + count_b, jnp.where(new, mean, state.mean),
                  jnp.where(new, var, state.variance))


def running_mean_std(state, *, ddof: int = 0) -> tuple:
  """(mean, std) of a `WelfordState` or an `EmaState`.

  Welford: std = sqrt(m2 / (count - ddof)), 0 while count - ddof <= 0. EMA: std = sqrt(variance)
  (`ddof` must be 0: a moving mixture has no sample size to correct by).

  Args:
    state: `WelfordState` or `EmaState`.
    ddof: Python int >= 0 (default 0, population std; 1 = unbiased, Welford only).

  Returns:
    (mean, std), float32 arrays of the state's feature shape.

  Raises:
    ValueError: bad `ddof`, or ddof != 0 with an `EmaState`; not a state.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import welford_init, welford_update, running_mean_std
  >>> state = welford_update(welford_init(), jnp.array([1.0, 3.0]))
  >>> [float(x) for x in running_mean_std(state, ddof=1)]
  [2.0, 1.414...]
  """
  ddof = _common.python_int(ddof, "ddof")
  if isinstance(state, WelfordState):
    dof = state.count.astype(jnp.float32) - ddof
    positive = (dof > 0) & (state.m2 > 0)
    variance = jnp.where(positive, state.m2, 1) / jnp.where(positive, dof, 1)
    return state.mean, jnp.where(positive, jnp.sqrt(variance), 0)
  if isinstance(state, EmaState):
    if ddof != 0:
      raise ValueError(f"`ddof` must be 0 for an EmaState; got {ddof}.")
    positive = state.variance > 0
    return state.mean, jnp.where(positive, jnp.sqrt(jnp.where(positive, state.variance, 1)), 0)
  raise ValueError(f"`state` must be a WelfordState or an EmaState; got {type(state).__name__}.")


def running_normalize(
    state,
    rewards: chex.Array,
    *,
    method: str = "mean_std",
    num_std: float = 1.0,
    eps: float = 1e-8,
    ddof: int = 0,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Applies running statistics to rewards: PAR's Meanstd, Clip and Minmax baselines.

    mean_std:  (r - mu) / (sigma + eps)                      `mean_std_normalize`
    clip:      clip(r, mu - n sigma, mu + n sigma)            `clip_reward`
    min_max:   (r - min) / max(max - min, eps)                `min_max_normalize` (Welford only)

  PAR's code updates the statistics with the batch first and then normalises the same batch;
  do the same with `welford_update` before this call.

  Args:
    state: `WelfordState` or `EmaState` of feature shape F.
    rewards: [B, *F] rewards.
    method: one of "mean_std" (default), "clip", "min_max".
    num_std: n for "clip" (default 1.0).
    eps: for "mean_std" and "min_max" (default 1e-8).
    ddof: of the std (default 0).
    mask: optional validity mask of `rewards`' shape.

  Returns:
    float32 array of `rewards`' shape; 0 at masked entries.

  Raises:
    ValueError: unknown `method`, "min_max" with an `EmaState`, shapes that do not match.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import welford_init, welford_update, running_normalize
  >>> r = jnp.array([0.0, 2.0, 4.0])
  >>> running_normalize(welford_update(welford_init(), r), r, method="min_max").tolist()
  [0.0, 0.5, 1.0]
  """
  method = _common.check_choice(method, "method", NORMALIZE_METHODS)
  if method == "min_max":
    if not isinstance(state, WelfordState):
      raise ValueError("`method`='min_max' needs a WelfordState (an EmaState keeps no minimum "
                       f"or maximum); got {type(state).__name__}.")
    return single.min_max_normalize(rewards, state.minimum, state.maximum, eps=eps, mask=mask)
  mean, std = running_mean_std(state, ddof=ddof)
  if method == "mean_std":
    return single.mean_std_normalize(rewards, mean, std, eps=eps, mask=mask)
  return single.clip_reward(rewards, mean, std, num_std=num_std, mask=mask)
