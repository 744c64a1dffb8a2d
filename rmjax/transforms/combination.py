"""Combining several rewards into one: logical AND, sums, worst cases, directions, Lagrangians.

Shapes: `rewards: [B, K]`, K rewards (properties, objectives or reward models) per sample on the
last axis; the result is [B]. `mask: [B]` marks valid samples: invalid rows are replaced by 0
before anything is computed and come back exactly 0. Computation in float32 (bfloat16 is
upcast).

Elsewhere in the package (one home each): the HelpSteer2 attribute score
(`rmjax.losses.regression.helpsteer2_attribute_score`), GDPO's normalise-then-sum
(`rmjax.losses.normalization.normalize_then_sum`) and ensemble aggregation
(`rmjax.transforms.ensemble.aggregate_ensemble_rewards`, members first: [M, B]); all are
re-exported by `rmjax.transforms` and registered by name in `rmjax.transforms.registry`.
"""

import math
from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses.stateful import StatefulTransform
from rmjax.transforms import _common
from rmjax.transforms import single

CONSTRAINT_TYPES = ("inequality", "equality")


def logical_and(
    rewards: chex.Array,
    reference_rewards: Optional[chex.Array] = None,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Logical AND of K properties: the sum of log-sigmoid-centred rewards.

    u = sum_k log sigmoid(r_k - r_ref_k) = log prod_k P(good on property k)

  Under the Bradley-Terry reading of each reward model, sigmoid(r_k - r_ref_k) is the probability
  that the response is better than the reference on property k; with independent properties the
  sum is the log-probability of being good on *all* of them. A response excellent on one property
  and bad on another scores badly (log of a small probability), where the raw sum lets the
  excellent property pay for the bad one. With K = 1 this is `log_sigmoid_centered`.

  Sanity value: centred rewards (1, -1) -> -0.3133 - 1.3133 = -1.6265.

  Args:
    rewards: [B, K] raw rewards of K properties.
    reference_rewards: optional reference rewards r_ref: None (0: the rewards are already
      centred), a scalar, [K] (one per property) or [B, K] (per prompt and property, e.g. each
      from `reference_reward`).
    mask: optional [B] validity mask of the samples.

  Returns:
    [B] float32 combined rewards, <= 0; 0 at masked samples.

  Raises:
    ValueError: `rewards` with K = 0, `reference_rewards` or `mask` of a wrong shape.
    TypeError: non-real inputs.

  References:
    Wang et al. (2024), "Transforming and Combining Rewards for Aligning Large Language Models",
    ICML, arXiv:2402.00742.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import logical_and
  >>> logical_and(jnp.array([[1.0, -1.0]])).round(4).tolist()
  [-1.6265]
  """
  r, valid, dtype = _common.last_axis_rewards(rewards, "rewards", mask)
  if reference_rewards is None:
    reference_rewards = 0.0
  ref = _common.trailing(reference_rewards, "reference_rewards", r, "rewards")
  ref = jnp.where(valid[..., None], ref.astype(dtype), 0)
  u = single.log_sigmoid_centered(r, ref, mask=jnp.broadcast_to(valid[..., None], r.shape))
  return jnp.where(valid, jnp.sum(u, axis=-1), 0)


def weighted_sum(
    rewards: chex.Array,
    weights: Optional[chex.Array] = None,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Weighted sum of K rewards: u = sum_k w_k r_k (the linear-scalarisation baseline).

  Computed as an elementwise product and sum in float32 (not a matmul, which TPUs run at bfloat16
  precision by default).

  Args:
    rewards: [B, K] rewards.
    weights: optional [K] weights (default all 1: the raw sum); not renormalised.
    mask: optional [B] validity mask.

  Returns:
    [B] float32; 0 at masked samples.

  Raises:
    ValueError: `weights` not [K], `mask` not [B], K = 0.
    TypeError: non-real inputs.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import weighted_sum
  >>> weighted_sum(jnp.array([[1.0, 2.0]]), jnp.array([0.5, 2.0])).tolist()
  [4.5]
  """
  r, valid, dtype = _common.last_axis_rewards(rewards, "rewards", mask)
  if weights is None:
    return jnp.where(valid, jnp.sum(r, axis=-1), 0)
  weights = _reduction.batch_vector(weights, "weights", r.shape[-1], "rewards (K, last axis)")
  return jnp.where(valid, jnp.sum(r * weights.astype(dtype), axis=-1), 0)


def min_reward(
    rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Worst case over K rewards: u = min_k r_k (MaxMin-style egalitarian combination).

  Optimising the minimum improves whichever reward is currently worst; the gradient goes to the
  minimum only (split between ties). `soft_min` is its smooth version.

  Args:
    rewards: [B, K] rewards.
    mask: optional [B] validity mask.

  Returns:
    [B] float32; 0 at masked samples.

  Raises:
    ValueError: K = 0, `mask` not [B].
    TypeError: non-real inputs.

  References:
    Chakraborty et al. (2024), "MaxMin-RLHF: Alignment with Diverse Human Preferences",
    arXiv:2402.08925.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import min_reward
  >>> min_reward(jnp.array([[1.0, -2.0, 3.0]])).tolist()
  [-2.0]
  """
  r, valid, _ = _common.last_axis_rewards(rewards, "rewards", mask)
  return jnp.where(valid, jnp.min(r, axis=-1), 0)


def soft_min(
    rewards: chex.Array,
    temperature: chex.Numeric,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Smooth worst case: u = -tau log sum_k exp(-r_k / tau).

  Computed with a stable logsumexp. Bounds: min_k r_k - tau log K <= u <= min_k r_k, so u -> min
  as tau -> 0; the gradient is softmax(-r / tau), spread over the rewards near the minimum.

  Args:
    rewards: [B, K] rewards.
    temperature: tau > 0: a Python number (checked eagerly) or a scalar array.
    mask: optional [B] validity mask.

  Returns:
    [B] float32; 0 at masked samples.

  Raises:
    ValueError: `temperature` <= 0 (or not finite, or not a scalar), K = 0, `mask` not [B].
    TypeError: non-real inputs.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import soft_min
  >>> soft_min(jnp.array([[0.0, 0.0]]), 1.0).round(4).tolist()  # -log 2
  [-0.6931]
  >>> soft_min(jnp.array([[1.0, 3.0]]), 0.01).round(4).tolist()
  [1.0]
  """
  tau = _reduction.scalar_hyperparameter(temperature, "temperature")
  r, valid, _ = _common.last_axis_rewards(rewards, "rewards", mask)
  out = -tau * jax.nn.logsumexp(-r / tau, axis=-1)
  return jnp.where(valid, out, 0)


def dpa_direction(angle_degrees: float) -> jnp.ndarray:
  """Unit direction (cos t, sin t) of two objectives at angle t (degrees), as DPA writes it.

  Args:
    angle_degrees: Python float t.

  Returns:
    [2] float32 unit vector.

  References:
    Wang et al. (2024), "Arithmetic Control of LLMs for Diverse User Preferences: Directional
    Preference Alignment with Multi-Objective Rewards", arXiv:2402.18571.

  >>> from rmjax.transforms import dpa_direction
  >>> dpa_direction(-15.0).round(4).tolist()
  [0.9659, -0.2588]
  """
  angle = math.radians(_common.python_float(angle_degrees, "angle_degrees"))
  return jnp.array([math.cos(angle), math.sin(angle)], jnp.float32)


def directional_reward(
    rewards: chex.Array,
    direction: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Directional preference reward (DPA): u = <v / ||v||, r>.

  The user's preference is a direction v in reward space (for helpfulness and verbosity,
  v = (cos t, sin t): `dpa_direction`). **`direction` is normalised here** (any non-zero length
  is accepted and divided by its norm), so only its direction matters. A concrete all-zero
  direction raises; a traced one (under `jit`) cannot be checked and gives u = 0.

  Sanity value: t = -15 deg, r = (70, 40) -> 70 cos 15 - 40 sin 15 = 57.26.

  Args:
    rewards: [B, K] rewards of K objectives.
    direction: [K] direction v (normalised here).
    mask: optional [B] validity mask.

  Returns:
    [B] float32; 0 at masked samples.

  Raises:
    ValueError: `direction` not [K] or all zero, `mask` not [B], K = 0.
    TypeError: non-real inputs.

  References:
    Wang et al. (2024), "Arithmetic Control of LLMs for Diverse User Preferences: Directional
    Preference Alignment with Multi-Objective Rewards", arXiv:2402.18571.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import directional_reward, dpa_direction
  >>> directional_reward(jnp.array([[70.0, 40.0]]), dpa_direction(-15.0)).round(2).tolist()
  [57.26]
  >>> directional_reward(jnp.array([[70.0, 40.0]]), jnp.array([2.0, 0.0])).tolist()  # normalised
  [70.0]
  """
  r, valid, dtype = _common.last_axis_rewards(rewards, "rewards", mask)
  v = _reduction.batch_vector(direction, "direction", r.shape[-1], "rewards (K, last axis)")
  try:
    all_zero = not bool(jnp.any(v != 0))
  except jax.errors.ConcretizationTypeError:  # traced under jit: cannot be checked
    all_zero = False
  if all_zero:
    raise ValueError(f"`direction` must be a non-zero vector (it is normalised); got "
                     f"{v.tolist()}.")
  v = _reduction.safe_l2_normalize(v.astype(dtype))
  return jnp.where(valid, jnp.sum(r * v, axis=-1), 0)


class LagrangeState(NamedTuple):
  """Unconstrained Lagrange multipliers l_i of N reward constraints (weights g(l_i)).

  Attributes:
    multipliers: float32 [N].
  """
  multipliers: chex.Array


def lagrange_init(num_constraints: int, *, initial_value: float = 0.0) -> LagrangeState:
  """Multipliers of N constraints, all at `initial_value` (0: weights sigmoid(0) = 1/2).

  Args:
    num_constraints: Python int N >= 1.
    initial_value: Python float (default 0.0).

  Returns:
    `LagrangeState`.

  >>> from rmjax.transforms import lagrange_init
  >>> lagrange_init(2).multipliers.tolist()
  [0.0, 0.0]
  """
  n = _common.python_int(num_constraints, "num_constraints", low=1)
  value = _common.python_float(initial_value, "initial_value")
  return LagrangeState(jnp.full((n,), value, jnp.float32))


def _multipliers(state):
  l = state.multipliers if isinstance(state, LagrangeState) else state
  l = _reduction.as_real_array(l, "state.multipliers")
  _reduction.check_rank(l, 1, "state.multipliers", "[N]")
  return l.astype(_reduction.compute_dtype(l))


def _bound(l, constraint_type):
  return jax.nn.sigmoid(l) if constraint_type == "inequality" else jnp.tanh(l)


def lagrange_weights(state, *, constraint_type: str = "inequality") -> jnp.ndarray:
  """The bounded multipliers g(l): sigmoid (inequality) in (0, 1) or tanh (equality) in (-1, 1).

  Args:
    state: `LagrangeState` (or its [N] multipliers).
    constraint_type: "inequality" (default) or "equality".

  Returns:
    [N] float32 weights.

  >>> from rmjax.transforms import lagrange_init, lagrange_weights
  >>> lagrange_weights(lagrange_init(2)).tolist()
  [0.5, 0.5]
  """
  _common.check_choice(constraint_type, "constraint_type", CONSTRAINT_TYPES)
  return _bound(_multipliers(state), constraint_type)


def lagrangian_mixing(
    task_advantages: chex.Array,
    constraint_advantages: chex.Array,
    state,
    *,
    constraint_type: str = "inequality",
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Constrained RLHF's mixed advantage, weighted by the bounded Lagrange multipliers.

    A = (N - sum_i g(l_i)) A_task + sum_i g(l_i) A_i,    g = sigmoid (inequality) | tanh (equality)

  The weights of the N constraint rewards are learned (`lagrange_update`) rather than tuned: a
  constraint that is violated gains weight until it is met, after which the task regains it.
  The weights sum to N, so the scale of the advantage does not drift with the multipliers.

  Sanity value: l = 0, N = 2, inequality -> A_task + 0.5 A_1 + 0.5 A_2.

  Args:
    task_advantages: [B] (or [B, T]) advantages of the task reward.
    constraint_advantages: [B, N] (or [B, T, N]) advantages of the N constraint rewards.
    state: `LagrangeState` (or its [N] multipliers).
    constraint_type: "inequality" (default) or "equality".
    mask: optional validity mask of `task_advantages`' shape.

  Returns:
    float32 mixed advantages of `task_advantages`' shape; 0 at masked entries.

  Raises:
    ValueError: shapes that do not match (`constraint_advantages` must be `task_advantages`'
      shape plus N), unknown `constraint_type`.
    TypeError: non-real inputs.

  References:
    Moskovitz et al. (2024), "Confronting Reward Model Overoptimization with Constrained RLHF",
    ICLR, arXiv:2310.04373.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import lagrange_init, lagrangian_mixing
  >>> lagrangian_mixing(jnp.array([1.0]), jnp.array([[2.0, 4.0]]), lagrange_init(2)).tolist()
  [4.0]
  """
  _common.check_choice(constraint_type, "constraint_type", CONSTRAINT_TYPES)
  a_task, valid, dtype = _common.real_input(task_advantages, "task_advantages", mask)
  l = _multipliers(state)
  a_con = _reduction.as_real_array(constraint_advantages, "constraint_advantages")
  expected = tuple(a_task.shape) + (l.shape[0],)
  if tuple(a_con.shape) != expected:
    raise ValueError(
        f"`constraint_advantages` must have shape {expected} (`task_advantages`' shape plus "
        f"N = {l.shape[0]} constraints from `state`); got shape {tuple(a_con.shape)}.")
  a_con = jnp.where(valid[..., None], a_con.astype(jnp.promote_types(dtype, a_con.dtype)), 0)
  g = _bound(l, constraint_type)
  mixed = (l.shape[0] - jnp.sum(g)) * a_task + jnp.sum(a_con * g, axis=-1)
  return jnp.where(valid, mixed, 0)


def lagrange_update(
    state,
    constraint_values: chex.Array,
    thresholds: chex.Array,
    *,
    learning_rate: chex.Numeric,
    constraint_type: str = "inequality",
) -> LagrangeState:
  """One gradient step on the multipliers, with the constraint violation held fixed.

    L(l) = sum_i g(l_i) (J_i - theta_i);     l <- l - eta * dL/dl = l - eta g'(l) (J - theta)

  The policy maximises L while the multipliers minimise it. Inequality constraints ask
  J_i >= theta_i (g = sigmoid): a violated constraint (J_i < theta_i) raises l_i and with it the
  weight of A_i in `lagrangian_mixing`; a satisfied one lowers it. Equality constraints ask
  J_i = theta_i (g = tanh, which may go negative to push J_i down). For an upper bound
  J_i <= theta_i pass -J_i and -theta_i.

  Args:
    state: `LagrangeState` (or its [N] multipliers).
    constraint_values: [N] current values J_i of the constraint rewards (e.g. batch means of the
      constraint rewards or returns).
    thresholds: [N] (or scalar) thresholds theta_i (e.g. the reward models' proxy points).
    learning_rate: eta >= 0, a Python number (checked eagerly) or a scalar array.
    constraint_type: "inequality" (default) or "equality".

  Returns:
    The new `LagrangeState`.

  Raises:
    ValueError: shapes that do not match, unknown `constraint_type`, negative `learning_rate`.
    TypeError: non-real inputs.

  References:
    Moskovitz et al. (2024), "Confronting Reward Model Overoptimization with Constrained RLHF",
    ICLR, arXiv:2310.04373.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import lagrange_init, lagrange_update
  >>> # violated by 0.5 at l = 0: l <- 0 - 1 * sigmoid'(0) * (0.5 - 1) = 0.125
  >>> lagrange_update(lagrange_init(1), jnp.array([0.5]), jnp.array([1.0]),
  ...                 learning_rate=1.0).multipliers.tolist()
  [0.125]
  """
  _common.check_choice(constraint_type, "constraint_type", CONSTRAINT_TYPES)
  lr = _reduction.scalar_hyperparameter(learning_rate, "learning_rate", allow_zero=True)
  l = _multipliers(state)
  values = _reduction.as_real_array(constraint_values, "constraint_values")
  _reduction.check_same_shape(values, "constraint_values", l, "state.multipliers")
  thresholds = _reduction.as_real_array(thresholds, "thresholds")
  _reduction.check_scalar_or_same_shape(thresholds, "thresholds", l, "state.multipliers")
  violation = jax.lax.stop_gradient(values.astype(l.dtype) - thresholds.astype(l.dtype))
  grad = jax.grad(lambda m: jnp.sum(_bound(m, constraint_type) * violation))(l)
  return LagrangeState(l - lr * grad)


def lagrangian_mixer(
    num_constraints: int,
    *,
    thresholds: chex.Array,
    learning_rate: chex.Numeric,
    constraint_type: str = "inequality",
    initial_value: float = 0.0,
) -> StatefulTransform:
  """Constrained RLHF's Lagrangian mixing with learned multipliers, as an (init, update) pair.

    init()                                                          -> LagrangeState (l = l_0)
    update(state, task_advantages, constraint_advantages, constraint_values, *, mask)
        -> (A, new state)

    A  = (N - sum_i g(l_i)) A_task + sum_i g(l_i) A_i          (`lagrangian_mixing`, current l)
    l' = l - eta g'(l) (J - theta)                               (`lagrange_update`)

  **Primal-dual order: this batch is mixed with the current multipliers, then the multipliers
  take one step from this batch's constraint values J.** The mixed advantages the policy is
  updated with are therefore those of `lagrangian_mixing(..., state)`, and the new multipliers
  apply from the next batch on, as in Moskovitz et al.'s alternating updates. g = sigmoid
  (inequality: J_i >= theta_i) or tanh (equality: J_i = theta_i); for an upper bound pass -J_i
  and -theta_i. Hyper-parameters (N, theta, eta, g, l_0) are fixed here once.

  Sanity value: l = 0, N = 2 (inequality) -> A = A_task + 0.5 A_1 + 0.5 A_2.

  Args:
    num_constraints: Python int N >= 1.
    thresholds: [N] (or scalar) thresholds theta_i (e.g. the reward models' proxy points).
    learning_rate: eta >= 0, a Python number or a scalar array.
    constraint_type: "inequality" (default) or "equality".
    initial_value: Python float l_0 (default 0.0: weights sigmoid(0) = 1/2).

  Returns:
    `StatefulTransform`; `update` takes `task_advantages: [B]` (or [B, T]),
    `constraint_advantages: [B, N]` (or [B, T, N]), `constraint_values: [N]` (the current J_i,
    e.g. batch means of the constraint rewards or returns) and an optional `mask` of
    `task_advantages`' shape, and returns (float32 mixed advantages of `task_advantages`' shape,
    0 at masked entries; the new `LagrangeState`).

  Raises:
    ValueError: bad `num_constraints`, `constraint_type`, `initial_value`, `learning_rate`,
      `thresholds` not [N] or scalar (here); shapes that do not match (in `update`).

  References:
    Moskovitz et al. (2024), "Confronting Reward Model Overoptimization with Constrained RLHF",
    ICLR, arXiv:2310.04373.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import lagrangian_mixer
  >>> mixer = lagrangian_mixer(1, thresholds=jnp.array([1.0]), learning_rate=1.0)
  >>> state = mixer.init()
  >>> # l = 0: A = (1 - 0.5) * 1 + 0.5 * 3 = 2; J = 0.5 < 1 violated: l <- 0.125
  >>> mixed, state = mixer.update(state, jnp.array([1.0]), jnp.array([[3.0]]), jnp.array([0.5]))
  >>> mixed.tolist(), state.multipliers.tolist()
  ([2.0], [0.125])
  """
  constraint_type = _common.check_choice(constraint_type, "constraint_type", CONSTRAINT_TYPES)
  num_constraints = _common.python_int(num_constraints, "num_constraints", low=1)
  initial_value = _common.python_float(initial_value, "initial_value")
  learning_rate = _reduction.scalar_hyperparameter(learning_rate, "learning_rate",
                                                   allow_zero=True)
  thresholds = _reduction.as_real_array(thresholds, "thresholds")
  _reduction.check_scalar_or_same_shape(thresholds, "thresholds", jnp.zeros(num_constraints),
                                        "num_constraints")

  def init():
    return lagrange_init(num_constraints, initial_value=initial_value)

  def update(state, task_advantages, constraint_advantages, constraint_values, *, mask=None):
    mixed = lagrangian_mixing(task_advantages, constraint_advantages, state,
                              constraint_type=constraint_type, mask=mask)
    new_state = lagrange_update(state, constraint_values, thresholds,
                                learning_rate=learning_rate, constraint_type=constraint_type)
    return mixed, new_state

  return StatefulTransform(init, update)
