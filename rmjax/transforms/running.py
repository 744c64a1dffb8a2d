"""Running reward statistics with explicit state: Welford (exact) and EMA (exponential).

Two layers, one set of maths:
  * pure steps: `*_init(...) -> state`, `*_update(state, values, ...) -> new_state`, both pure
    and jit-safe, with NamedTuple states that the caller keeps (in its train state) and passes
    back; `running_mean_std(state)` reads (mean, std) and `running_normalize(state, rewards,
    method=...)` applies PAR's Meanstd / Clip / Minmax baselines;
  * the same steps as optax-shaped `StatefulTransform`s with the hyper-parameters closed over,
    `update(state, values) -> (output, new_state)`: `running_normalizer` (Welford),
    `ema_normalizer` (EMA) and `mean_std_tracker` (output (mean, std)).

Shapes: a batch `values: [N, *F]` (or [B, G, *F]: every axis but the trailing feature shape F is
a sample axis) updates statistics of feature shape F, e.g. F = () for one scalar reward and
F = (K,) for K rewards tracked separately. `mask` has `values`' shape; masked entries never reach
the statistics (not even as NaN or inf).
"""

from typing import NamedTuple, Optional, Sequence

import chex
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses.stateful import StatefulTransform
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
  do the same with `welford_update` before this call, or use `running_normalizer`, which does
  both.

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


def _stateful(init, accumulate, read, update_first):
  """A `StatefulTransform` whose step merges a batch into the state and reads an output.

  `accumulate(state, values, mask) -> new_state`; `read(state, values, mask) -> output`, with
  the new state (`update_first`) or the state before the batch.
  """
  def update(state, values, *, mask=None):
    new_state = accumulate(state, values, mask)
    return read(new_state if update_first else state, values, mask), new_state
  return StatefulTransform(init, update)


def _normalizer(init, accumulate, feature_shape, *, method, methods, ddof, eps, num_std,
                update_first):
  """Checks the normalisers' hyper-parameters; the output is `running_normalize`'s."""
  shape = _feature_shape(feature_shape)
  method = _common.check_choice(method, "method", methods)
  ddof = _common.python_int(ddof, "ddof")
  eps = _common.python_float(eps, "eps", low=0.0)
  num_std = _common.python_float(num_std, "num_std", low=0.0)
  update_first = _common.python_bool(update_first, "update_first")
  return _stateful(
      lambda: init(shape), accumulate,
      lambda state, values, mask: running_normalize(
          state, values, method=method, num_std=num_std, eps=eps, ddof=ddof, mask=mask),
      update_first)


def running_normalizer(
    *,
    method: str = "mean_std",
    ddof: int = 0,
    eps: float = 1e-8,
    num_std: float = 1.0,
    feature_shape: Sequence[int] = (),
    update_first: bool = True,
) -> StatefulTransform:
  """Reward normalisation with exact running statistics (Welford), as an (init, update) pair.

    init()                             -> WelfordState (empty, feature shape F)
    update(state, values, *, mask)     -> (normalised values, new state)

  with new state = `welford_update(state, values, mask=mask)` and the output
  `running_normalize(stats, values, method=...)`, i.e. for "mean_std"

    u = (r - mu) / (sigma + eps)

  over every valid value seen so far. **With `update_first=True` (default) the statistics include
  the current batch**: the batch is merged first and then normalised with the updated mean and
  std, as PAR's reward shaper (Meanstd / Clip / Minmax baselines) and stable-baselines3's
  VecNormalize (reward scaling) do; the first batch is then normalised by its own statistics.
  With `update_first=False` the batch is normalised with the statistics of the batches before it
  (no look-ahead) and merged afterwards; the state starts empty (mean 0, std 0), so warm it first
  (e.g. `state = update(state, base_rewards)[1]`) or the first output is r / eps.

  Args:
    method: "mean_std" (default), "clip" (clip(r, mu - n sigma, mu + n sigma)) or "min_max"
      ((r - min) / max(max - min, eps)); see `running_normalize`.
    ddof: Python int >= 0 (default 0, population std) of the std.
    eps: Python float >= 0 (default 1e-8), for "mean_std" and "min_max".
    num_std: Python float >= 0 n (default 1.0), for "clip".
    feature_shape: F (default (): one scalar reward; (K,) for K rewards normalised separately).
    update_first: Python bool (default True): normalise with the statistics after the batch.

  Returns:
    `StatefulTransform`; `update(state, values, *, mask=None)` takes `values: [N, *F]` (any
    number of leading sample axes) and an optional mask of `values`' shape, and returns float32
    normalised values of `values`' shape (0 at masked entries; masked entries never reach the
    statistics) and the new `WelfordState`.

  Raises:
    ValueError: unknown `method`, bad `ddof`, `eps`, `num_std`, `feature_shape` or
      `update_first` (here); shapes that do not match (in `update`).

  References:
    Welford (1962); Chan, Golub & LeVeque (1979); Fu et al. (2025), "Reward Shaping to Mitigate
    Reward Hacking in RLHF", arXiv:2502.18770 (running Meanstd / Clip / Minmax baselines).

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import running_normalizer
  >>> normalizer = running_normalizer()
  >>> state = normalizer.init()
  >>> out, state = normalizer.update(state, jnp.array([1.0, 3.0]))  # mean 2, std 1
  >>> out.tolist()
  [-1.0, 1.0]
  >>> out, state = normalizer.update(state, jnp.array([5.0]))  # now mean 3, std sqrt(8/3)
  >>> out.round(4).tolist()
  [1.2247]
  """
  return _normalizer(
      welford_init, lambda state, values, mask: welford_update(state, values, mask=mask),
      feature_shape, method=method, methods=NORMALIZE_METHODS, ddof=ddof, eps=eps,
      num_std=num_std, update_first=update_first)


def ema_normalizer(
    decay: float = 0.99,
    *,
    method: str = "mean_std",
    eps: float = 1e-8,
    num_std: float = 1.0,
    feature_shape: Sequence[int] = (),
    update_first: bool = True,
) -> StatefulTransform:
  """Reward normalisation with exponential moving statistics (EMA), as an (init, update) pair.

    init()                             -> EmaState (empty, feature shape F)
    update(state, values, *, mask)     -> (normalised values, new state)

  with new state = `ema_update(state, values, decay=decay, mask=mask)` and the output
  `running_normalize(stats, values, method=...)`: u = (r - mu) / (sigma + eps) for "mean_std",
  clip(r, mu - n sigma, mu + n sigma) for "clip", with mu and sigma the moving mean and std
  (the running distribution is d * old + (1 - d) * batch, see `ema_update`). Unlike
  `running_normalizer`, old batches fade, so the statistics follow a reward distribution that
  drifts as the policy improves. **With `update_first=True` (default) the statistics include the
  current batch** (merged first, then applied); with `update_first=False` the batch is normalised
  with the statistics before it (the empty state has mean 0 and std 0: warm it first).

  Args:
    decay: Python float d in [0, 1) (default 0.99); 0 keeps only the latest batch.
    method: "mean_std" (default) or "clip" (an EMA keeps no minimum or maximum).
    eps: Python float >= 0 (default 1e-8), for "mean_std".
    num_std: Python float >= 0 n (default 1.0), for "clip".
    feature_shape: F (default ()).
    update_first: Python bool (default True): normalise with the statistics after the batch.

  Returns:
    `StatefulTransform`; `update(state, values, *, mask=None)` takes `values: [N, *F]` and an
    optional mask of its shape, and returns float32 normalised values of `values`' shape (0 at
    masked entries) and the new `EmaState`.

  Raises:
    ValueError: bad `decay`, `method` (including "min_max"), `eps`, `num_std`, `feature_shape` or
      `update_first` (here); shapes that do not match (in `update`).

  References:
    Finch (2009), "Incremental calculation of weighted mean and variance".

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import ema_normalizer
  >>> normalizer = ema_normalizer(0.5)
  >>> out, state = normalizer.update(normalizer.init(), jnp.array([0.0, 2.0]))  # mean 1, var 1
  >>> out.tolist()
  [-1.0, 1.0]
  >>> out, state = normalizer.update(state, jnp.array([3.0, 3.0]))  # mean 2, var 1.5
  >>> out.round(4).tolist()
  [0.8165, 0.8165]
  """
  decay = _common.python_float(decay, "decay", low=0.0, high=1.0, high_open=True)
  return _normalizer(
      ema_init, lambda state, values, mask: ema_update(state, values, decay=decay, mask=mask),
      feature_shape, method=method, methods=("mean_std", "clip"), ddof=0, eps=eps,
      num_std=num_std, update_first=update_first)


def mean_std_tracker(
    *,
    decay: Optional[float] = None,
    ddof: int = 0,
    feature_shape: Sequence[int] = (),
) -> StatefulTransform:
  """Running mean and std (exact Welford, or EMA with `decay`) as an (init, update) pair.

    init()                             -> WelfordState (decay None) | EmaState (decay d)
    update(state, values, *, mask)     -> ((mean, std) after the batch, new state)

  The output is `running_mean_std(new_state, ddof=ddof)`: the statistics of every valid value
  seen so far, this batch included (Welford), or the moving mixture of the batches (EMA). Use it
  to log a reward's scale or to feed a transform that takes (mu, sigma) (`mean_std_normalize`,
  `clip_reward`); `running_normalizer` / `ema_normalizer` do both steps at once.

  Args:
    decay: None (default: exact statistics, `welford_update`) or a Python float d in [0, 1)
      (`ema_update` with that decay).
    ddof: Python int >= 0 (default 0) of the std; must be 0 with `decay`.
    feature_shape: F (default ()).

  Returns:
    `StatefulTransform`; `update(state, values, *, mask=None)` takes `values: [N, *F]` and an
    optional mask of its shape, and returns ((mean [*F], std [*F]) float32, new state).

  Raises:
    ValueError: bad `decay`, `ddof` (or ddof != 0 with `decay`), `feature_shape` (here); shapes
      that do not match (in `update`).

  References:
    Welford (1962); Chan, Golub & LeVeque (1979); Finch (2009).

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import mean_std_tracker
  >>> tracker = mean_std_tracker(ddof=1)
  >>> (mean, std), state = tracker.update(tracker.init(), jnp.array([1.0, 3.0]))
  >>> float(mean), float(std)
  (2.0, 1.414...)
  """
  ddof = _common.python_int(ddof, "ddof")
  shape = _feature_shape(feature_shape)
  if decay is None:
    init = lambda: welford_init(shape)
    accumulate = lambda state, values, mask: welford_update(state, values, mask=mask)
  else:
    decay = _common.python_float(decay, "decay", low=0.0, high=1.0, high_open=True)
    if ddof != 0:
      raise ValueError(f"`ddof` must be 0 with `decay` (a moving mixture has no sample size to "
                       f"correct by); got ddof={ddof}, decay={decay}.")
    init = lambda: ema_init(shape)
    accumulate = lambda state, values, mask: ema_update(state, values, decay=decay, mask=mask)
  return _stateful(init, accumulate,
                   lambda state, values, mask: running_mean_std(state, ddof=ddof), True)
