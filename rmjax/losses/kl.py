"""KL divergence between the policy and a reference policy: estimators, penalties, controllers.

Samples y_t are drawn from the policy pi; with `logp = log pi(y_t)`, `ref_logp = log pi_ref(y_t)`
and log u = ref_logp - logp (so u = pi_ref / pi), the per-token estimators of KL(pi || pi_ref) are

  k1  = -log u                 unbiased, can be negative            (verl "kl")
  k2  = 0.5 (log u)^2          biased, low variance, >= 0           (verl "mse")
  k3  = u - 1 - log u          unbiased, >= 0, low variance         (verl "low_var_kl")
  abs = |log u|                                                     (verl "abs")

(Schulman (2020), "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html). With the
full logits at hand, `categorical_kl` gives the exact per-token KL instead.

`kl_in_reward` turns a per-token KL into per-token rewards (the PPO-RLHF recipe), and the adaptive
controller of Ziegler et al. (2019) adjusts the KL coefficient beta towards a target KL. The
controllers come as factories in the optax shape (`rmjax.losses.StatefulTransform`):
`adaptive_kl_controller(init_beta, target, horizon)` and `fixed_kl_controller(beta)` close over
their hyper-parameters and return `(init, update)`, with `init() -> state` and
`update(state, observed_kl, n_steps) -> (beta, new_state)`; the pure functions they are built on
(`adaptive_kl_init`/`adaptive_kl_update`, `fixed_kl_init`/`fixed_kl_update`) stay public.

All functions compute in float32 (bfloat16 inputs are upcast), and every masked entry is replaced
by 0 before anything is computed (NaN/inf padding changes neither values nor gradients).
"""

from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import stateful

ESTIMATORS = ("k1", "k2", "k3", "abs")

# exp overflows float32 at 88.7; k3's exponential is evaluated at min(log u, 80), which changes
# nothing for any log-ratio a sane policy produces (|log u| <= 50 is tested).
_MAX_EXP_ARGUMENT = 80.0


def _check_optional_positive(x, name: str):
  if x is None:
    return None
  return _reduction.scalar_hyperparameter(x, name)


def _token_inputs(x, x_name, y, y_name, mask):
  """Checks a pair of same-shape arrays and an optional mask; sanitises masked entries."""
  x = _reduction.as_real_array(x, x_name)
  y = _reduction.as_real_array(y, y_name)
  _reduction.check_same_shape(y, y_name, x, x_name)
  valid = _reduction.validity_mask(mask, x.shape, "mask")
  dtype = _reduction.compute_dtype(x, y)
  return (jnp.where(valid, x.astype(dtype), 0), jnp.where(valid, y.astype(dtype), 0), valid)


def kl_penalty(
    logp: chex.Array,
    ref_logp: chex.Array,
    *,
    estimator: str = "k1",
    clamp: Optional[float] = None,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Per-token estimate of KL(pi || pi_ref) from the log-probabilities of sampled tokens.

  With d = log u = ref_logp - logp:

    "k1":  -d           "k2":  0.5 d^2          "k3":  exp(d) - 1 - d          "abs":  |d|

  k3 is computed as expm1(min(d, 80)) - d (accurate near d = 0, finite for any input). k1 and k3
  are unbiased estimators of KL(pi || pi_ref) when the tokens are sampled from pi; all four are 0
  when pi = pi_ref, and k2, k3, abs are >= 0.

  Args:
    logp: [N, T] (or any shape) log pi(y_t) of the sampled tokens under the policy.
    ref_logp: log pi_ref(y_t) under the reference policy, same shape.
    estimator: "k1" (default), "k2", "k3" or "abs".
    clamp: optional Python float c > 0: the estimate is clipped to [-c, c] (verl clips k3 to
      [-10, 10]). Default None: no clipping.
    mask: optional bool (or {0, 1}) array of the same shape; masked entries come back 0.

  Returns:
    float32 array of `logp`'s shape.

  Raises:
    ValueError: unknown `estimator`, bad `clamp`, mismatched shapes.
    TypeError: non-real inputs.

  References:
    Schulman (2020), "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html.
    Shao et al. (2024), "DeepSeekMath", arXiv:2402.03300 (k3 as GRPO's KL loss).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.kl import kl_penalty
  >>> logp, ref = jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25]))  # log u = -log 2
  >>> [round(float(kl_penalty(logp, ref, estimator=e)[0]), 4) for e in ("k1", "k2", "k3", "abs")]
  [0.6931, 0.2402, 0.1931, 0.6931]
  """
  if not isinstance(estimator, str) or estimator not in ESTIMATORS:
    raise ValueError(f"`estimator` must be one of {ESTIMATORS}; got {estimator!r}.")
  clamp = _check_optional_positive(clamp, "clamp")
  logp, ref_logp, valid = _token_inputs(logp, "logp", ref_logp, "ref_logp", mask)
  return _kl_penalty(logp, ref_logp, valid, clamp, estimator=estimator)


def _kl_penalty(logp, ref_logp, valid, clamp, *, estimator):
  log_u = ref_logp - logp
  if estimator == "k1":
    kl = -log_u
  elif estimator == "k2":
    kl = 0.5 * jnp.square(log_u)
  elif estimator == "k3":
    kl = jnp.expm1(jnp.minimum(log_u, _MAX_EXP_ARGUMENT)) - log_u
  else:
    kl = jnp.abs(log_u)
  if clamp is not None:
    kl = jnp.clip(kl, -clamp, clamp)
  return jnp.where(valid, kl, 0)


def categorical_kl(
    logits: chex.Array,
    ref_logits: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Exact KL(softmax(logits) || softmax(ref_logits)) over the last (vocabulary) axis.

    KL_t = sum_v p_tv (log p_tv - log q_tv),   p = softmax(logits), q = softmax(ref_logits)

  computed from `log_softmax` (stable for any finite logits). Vocabulary entries with p = 0 (e.g.
  logits of -inf for disallowed tokens) contribute 0; an entry with p > 0 and q = 0 gives +inf, as
  it must.

  Args:
    logits: [N, T, V] (or [..., V]) policy logits.
    ref_logits: [..., V] reference logits, same shape.
    mask: optional [...] (the shape without V) validity mask; masked positions come back 0.

  Returns:
    [...] float32 per-position KL (>= 0).

  Raises:
    ValueError: mismatched shapes, `logits` a scalar, `mask` of the wrong shape.
    TypeError: non-real inputs.

  References:
    Kullback & Leibler (1951), "On Information and Sufficiency".

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.kl import categorical_kl
  >>> p, q = jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.25, 0.75]))
  >>> round(float(categorical_kl(p, q)), 4)  # 0.5 log 2 + 0.5 log(2 / 3)
  0.1438
  """
  logits = _reduction.as_real_array(logits, "logits")
  ref_logits = _reduction.as_real_array(ref_logits, "ref_logits")
  if logits.ndim < 1:
    raise ValueError(f"`logits` must have shape [..., V]; got shape {tuple(logits.shape)}.")
  _reduction.check_same_shape(ref_logits, "ref_logits", logits, "logits")
  valid = _reduction.validity_mask(mask, logits.shape[:-1], "mask")
  return _categorical_kl(logits, ref_logits, valid)


def _categorical_kl(logits, ref_logits, valid):
  dtype = _reduction.compute_dtype(logits, ref_logits)
  logits = jnp.where(valid[..., None], logits.astype(dtype), 0)
  ref_logits = jnp.where(valid[..., None], ref_logits.astype(dtype), 0)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  log_q = jax.nn.log_softmax(ref_logits, axis=-1)
  p = jnp.exp(log_p)
  support = p > 0
  # Double where: outside p's support neither the value nor the gradient sees log_p = -inf.
  terms = jnp.where(support, p * (jnp.where(support, log_p, 0) - jnp.where(support, log_q, 0)), 0)
  return jnp.where(valid, jnp.sum(terms, axis=-1), 0)


def _last_valid_token(mask: jnp.ndarray) -> jnp.ndarray:
  """[N, T] bool -> [N, T] bool, True only at the last True entry of each row (private helper)."""
  num_tokens = mask.shape[-1]
  position = jnp.arange(num_tokens)
  last = jnp.max(jnp.where(mask, position, -1), axis=-1, keepdims=True)
  return mask & (position == last)


def kl_in_reward(
    scores: chex.Array,
    kl: chex.Array,
    mask: chex.Array,
    *,
    beta: chex.Numeric,
) -> jnp.ndarray:
  """Per-token rewards with the KL penalty folded in (PPO-style RLHF).

    r_t = score * 1[t is the last valid token] - beta * KL_t        (valid t; 0 elsewhere)

  Args:
    scores: [N] sequence-level rewards (e.g. the reward model's score).
    kl: [N, T] per-token KL estimates (e.g. `kl_penalty(logp, ref_logp, estimator="k1")`).
    mask: [N, T] response mask (True = a response token). A row with no valid token gets all 0.
    beta: scalar KL coefficient >= 0 (a Python float, or an array such as an adaptive
      controller's `state.beta`).

  Returns:
    [N, T] float32 token rewards.

  Raises:
    ValueError: wrongly shaped inputs, negative Python `beta`.
    TypeError: non-real inputs.

  References:
    Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences",
    arXiv:1909.08593; Ouyang et al. (2022), "Training language models to follow instructions
    with human feedback", arXiv:2203.02155.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.kl import kl_in_reward
  >>> kl_in_reward(jnp.array([1.0]), jnp.array([[0.5, 0.5, 9.0]]), jnp.array([[1, 1, 0]]),
  ...              beta=0.1).tolist()
  [[-0.05, 0.95, 0.0]]
  """
  scores = _reduction.as_real_array(scores, "scores")
  _reduction.check_rank(scores, 1, "scores", "[N]")
  kl = _reduction.as_real_array(kl, "kl")
  _reduction.check_rank(kl, 2, "kl", "[N, T]")
  if kl.shape[0] != scores.shape[0]:
    raise ValueError(
        f"`kl` must have shape [N, T] with N = {scores.shape[0]} (from `scores`); got shape "
        f"{tuple(kl.shape)}.")
  valid = _reduction.validity_mask(mask, kl.shape, "mask")
  beta = _reduction.scalar_hyperparameter(beta, "beta", allow_zero=True)
  return _kl_in_reward(scores, kl, valid, beta)


def _kl_in_reward(scores, kl, valid, beta):
  dtype = _reduction.compute_dtype(scores, kl)
  kl = jnp.where(valid, kl.astype(dtype), 0)
  last = _last_valid_token(valid)
  rewards = jnp.where(last, scores.astype(dtype)[:, None], 0) - beta * kl
  return jnp.where(valid, rewards, 0)


class AdaptiveKLState(NamedTuple):
  """State of the adaptive KL controller: the coefficient and its (fixed) settings."""
  beta: jnp.ndarray  # [] current KL coefficient
  target: jnp.ndarray  # [] target KL per sequence (the same statistic as `observed_kl`)
  horizon: jnp.ndarray  # [] horizon in steps (samples) of the proportional controller


class FixedKLState(NamedTuple):
  """State of the fixed KL controller: the coefficient only."""
  beta: jnp.ndarray  # []


def adaptive_kl_init(init_beta: float, target: float, horizon: float) -> AdaptiveKLState:
  """Initial state of the adaptive KL controller of Ziegler et al. (2019).

  Args:
    init_beta: initial coefficient beta_0 >= 0 (Python number).
    target: target KL > 0 (e.g. 6.0 nats per sequence in Ziegler et al.).
    horizon: horizon H > 0 in samples (e.g. 10000).

  Returns:
    `AdaptiveKLState` of float32 scalars.

  Raises:
    ValueError: out-of-range values.

  References:
    Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences",
    arXiv:1909.08593, Sec. 2.2.

  >>> from rmjax.losses.kl import adaptive_kl_init
  >>> float(adaptive_kl_init(0.1, 6.0, 10000).beta)
  0.1...
  """
  init_beta = _reduction.scalar_hyperparameter(init_beta, "init_beta", allow_zero=True)
  target = _reduction.scalar_hyperparameter(target, "target")
  horizon = _reduction.scalar_hyperparameter(horizon, "horizon")
  as_f32 = lambda x: jnp.asarray(x, jnp.float32)
  return AdaptiveKLState(as_f32(init_beta), as_f32(target), as_f32(horizon))


def adaptive_kl_update(state: AdaptiveKLState, observed_kl: chex.Numeric,
                       n_steps: chex.Numeric) -> AdaptiveKLState:
  """One step of the adaptive KL controller (a proportional controller on log beta).

    e = clip(KL_observed / target - 1, -0.2, 0.2)
    beta <- beta * (1 + e * n_steps / horizon)

  Args:
    state: `AdaptiveKLState`.
    observed_kl: scalar, the KL measured since the last update (same statistic as `target`).
    n_steps: scalar, the number of samples (or steps) since the last update.

  Returns:
    The new `AdaptiveKLState` (target and horizon unchanged).

  References:
    Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences",
    arXiv:1909.08593, Sec. 2.2.

  >>> from rmjax.losses.kl import adaptive_kl_init, adaptive_kl_update
  >>> state = adaptive_kl_init(0.1, target=6.0, horizon=10000)
  >>> round(float(adaptive_kl_update(state, 12.0, 512).beta), 6)  # error clipped to +0.2
  0.101024
  """
  observed_kl = jnp.asarray(observed_kl, jnp.float32)
  n_steps = jnp.asarray(n_steps, jnp.float32)
  error = jnp.clip(observed_kl / state.target - 1.0, -0.2, 0.2)
  beta = state.beta * (1.0 + error * n_steps / state.horizon)
  return state._replace(beta=beta)


def fixed_kl_init(beta: float) -> FixedKLState:
  """State of the fixed KL controller: beta never changes.

  Args:
    beta: the KL coefficient, a Python number >= 0.

  Returns:
    `FixedKLState(beta)` with a float32 scalar beta.

  >>> from rmjax.losses.kl import fixed_kl_init
  >>> float(fixed_kl_init(0.05).beta)
  0.05...
  """
  beta = _reduction.scalar_hyperparameter(beta, "beta", allow_zero=True)
  return FixedKLState(jnp.asarray(beta, jnp.float32))


def fixed_kl_update(state: FixedKLState, observed_kl: chex.Numeric,
                    n_steps: chex.Numeric) -> FixedKLState:
  """The fixed controller's update: returns `state` unchanged (same signature as the adaptive one).

  Args:
    state: a `FixedKLState`.
    observed_kl: ignored (the adaptive controller's measured KL).
    n_steps: ignored (the adaptive controller's steps since the last update).

  Returns:
    `state`.

  >>> from rmjax.losses.kl import fixed_kl_init, fixed_kl_update
  >>> float(fixed_kl_update(fixed_kl_init(0.05), 100.0, 512).beta)
  0.05...
  """
  del observed_kl, n_steps
  return state


class KLControllerState(NamedTuple):
  """State of a KL controller built by a factory: only what changes, the coefficient."""
  beta: jnp.ndarray  # [] the coefficient for the next batch


def adaptive_kl_controller(init_beta: float, target: float,
                           horizon: float) -> stateful.StatefulTransform:
  """The adaptive KL controller of Ziegler et al. (2019) as an optax-shaped `(init, update)` pair.

    update(state, observed_kl, n_steps) -> (beta, new_state)
    e = clip(observed_kl / target - 1, -0.2, 0.2),     new beta = beta (1 + e n_steps / horizon)

  The output `beta` is the coefficient *before* the update: the one to use for the batch whose KL
  is `observed_kl` (e.g. in `kl_in_reward`), the new one being kept for the next batch. This is
  the PPO-RLHF convention (Ziegler et al.; TRL's `AdaptiveKLController`): a batch's rewards use
  the current coefficient, and the controller is updated with that batch's KL afterwards, so a
  batch never sees a coefficient adjusted by its own KL. The hyper-parameters are closed over;
  the state (`KLControllerState`) holds only beta. Values equal `adaptive_kl_update` step by
  step.

  Args:
    init_beta: initial coefficient beta_0 >= 0 (Python number).
    target: target KL > 0 (e.g. 6.0 nats per sequence in Ziegler et al.), the same statistic as
      the `observed_kl` given to `update`.
    horizon: horizon H > 0 in samples (e.g. 10000).

  Returns:
    `StatefulTransform(init, update)`: `init() -> KLControllerState`, and
    `update(state, observed_kl: scalar, n_steps: scalar) -> (beta: float32 [], new_state)`
    (pure, jit-able).

  Raises:
    ValueError: out-of-range hyper-parameters (checked when the controller is built).

  References:
    Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences",
    arXiv:1909.08593, Sec. 2.2.

  >>> from rmjax.losses.kl import adaptive_kl_controller
  >>> controller = adaptive_kl_controller(0.1, target=6.0, horizon=10000)
  >>> beta, state = controller.update(controller.init(), 12.0, 512)
  >>> round(float(beta), 6), round(float(state.beta), 6)  # used now; next (error clipped to 0.2)
  (0.1, 0.101024)
  """
  settings = adaptive_kl_init(init_beta, target, horizon)

  def init() -> KLControllerState:
    return KLControllerState(settings.beta)

  def update(state: KLControllerState, observed_kl: chex.Numeric, n_steps: chex.Numeric):
    new = adaptive_kl_update(settings._replace(beta=state.beta), observed_kl, n_steps)
    return state.beta, KLControllerState(new.beta)

  return stateful.StatefulTransform(init, update)


def fixed_kl_controller(beta: float) -> stateful.StatefulTransform:
  """A constant KL coefficient, in the shape of `adaptive_kl_controller` (so the two swap).

    update(state, observed_kl, n_steps) -> (beta, state)

  Args:
    beta: the KL coefficient, a Python number >= 0.

  Returns:
    `StatefulTransform(init, update)`: `init() -> KLControllerState`, and `update` returns beta
    and the state unchanged (`observed_kl` and `n_steps` are ignored).

  Raises:
    ValueError: a negative or non-finite `beta`.

  >>> from rmjax.losses.kl import fixed_kl_controller
  >>> controller = fixed_kl_controller(0.05)
  >>> beta, state = controller.update(controller.init(), 100.0, 512)
  >>> round(float(beta), 6), round(float(state.beta), 6)
  (0.05, 0.05)
  """
  beta = fixed_kl_init(beta).beta

  def init() -> KLControllerState:
    return KLControllerState(beta)

  def update(state: KLControllerState, observed_kl: chex.Numeric, n_steps: chex.Numeric):
    del observed_kl, n_steps
    return state.beta, state

  return stateful.StatefulTransform(init, update)
