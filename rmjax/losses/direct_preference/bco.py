"""BCO (pair form) and its reward shift, kept as explicit state.

BCO trains a binary classifier whose logit is the implicit reward minus a
shift delta, a running mean of the implicit rewards. The loss takes delta as an
input, so that it stays pure; `bco_reward_shift` keeps the running mean as an
optax-shaped `(init, update)` pair (`rmjax.losses.StatefulTransform`), whose
state lives in the caller's train state:

    shifter = bco_reward_shift()
    state = shifter.init()
    ...                                                   # in the train step
    r_w = implicit_rewards(pi_w, ref_w, beta=beta)
    r_l = implicit_rewards(pi_l, ref_l, beta=beta)
    delta, state = shifter.update(state, jnp.stack([r_w, r_l]),
                                  mask=jnp.stack([mask, mask]))
    loss = bco_pair_loss(pi_w, pi_l, ref_w, ref_l, reward_shift=delta,
                         beta=beta, mask=mask)

Notation and conventions in `rmjax.losses.direct_preference`.
"""

from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import stateful
from rmjax.losses.direct_preference import _shared


def bco_pair_loss(
    policy_chosen_logps: chex.Array,
    policy_rejected_logps: chex.Array,
    reference_chosen_logps: chex.Array,
    reference_rejected_logps: chex.Array,
    *,
    reward_shift: chex.Numeric,
    beta: chex.Numeric = 0.1,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """BCO (pair form): binary cross-entropy of the shifted implicit rewards.

    r_w = beta (logp(y_w) - logp_ref(y_w)),  r_l = beta (logp(y_l) - logp_ref(y_l))
    loss_i = -log sigmoid(r_w - delta) - log sigmoid(-(r_l - delta))

  The chosen response is a positive and the rejected one a negative example
  of a classifier with logit r - delta. The reward shift delta is a running
  mean of the implicit rewards of both kinds (Jung et al. 2024), carried no
  gradient; here it is an input (`bco_reward_shift` keeps it) and is wrapped
  in `stop_gradient`. TRL's loss_type="bco_pair" updates a running mean of
  each batch's mean implicit reward (chosen and rejected together) and then
  uses it for the same batch: `bco_reward_shift`'s default. TRL's newest
  DPOTrainer drops the shift (delta = 0).

  Sanity values: r_w = r_l = delta = 0 -> 2 log 2 = 1.3863; the gradient is
  negative with respect to the chosen and positive with respect to the
  rejected log-probability.

  Args:
    policy_chosen_logps: [B] log pi(y_w | x), summed over response tokens.
    policy_rejected_logps: [B] log pi(y_l | x).
    reference_chosen_logps: [B] log pi_ref(y_w | x).
    reference_rejected_logps: [B] log pi_ref(y_l | x).
    reward_shift: scalar delta (Python number or 0-d array), e.g. the output
      of `bco_reward_shift`'s update; required (0 disables the shift).
    beta: scalar > 0 (default 0.1).
    weights: optional [B] per-pair weights.
    mask: optional [B] validity mask.
    reduction: "mean" (default), "sum" or "none".

  Returns:
    float32 scalar, or [B] per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta`, `reduction` or `reward_shift` (not a scalar), or
      wrongly shaped inputs.
    TypeError: non-real inputs.

  References:
    Jung et al. (2024), "Binary Classifier Optimization for Large Language
    Model Alignment", arXiv:2404.04656.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import bco_pair_loss
  >>> z = jnp.zeros(1)
  >>> float(bco_pair_loss(z, z, z, z, reward_shift=0.0))  # 2 log 2
  1.3862...
  """
  shift = _reduction.as_real_array(reward_shift, "reward_shift")
  _reduction.check_rank(shift, 0, "reward_shift", "[] (a scalar)")
  shift = jax.lax.stop_gradient(shift.astype(_reduction.compute_dtype(shift)))
  return _shared.log_ratio_loss(
      policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
      reference_rejected_logps, weights, mask, beta,
      per_pair=lambda a, b, beta: (jax.nn.softplus(shift - beta * a)
                                   + jax.nn.softplus(beta * b - shift)),
      reduction=reduction)


class BcoShiftState(NamedTuple):
  """State of `bco_reward_shift`.

  Attributes:
    count: int32 [] number of batches with a valid reward seen.
    shift: float32 [] the current shift delta (0 before any batch).
  """
  count: chex.Array
  shift: chex.Array


def bco_reward_shift(decay: Optional[float] = None) -> stateful.StatefulTransform:
  """BCO's reward shift delta as an optax-shaped `(init, update)` pair.

    update(state, rewards, *, mask) -> (delta, new_state)
    m = mean of the valid `rewards` of the batch (stop_gradient)
    decay None:  delta' = delta + (m - delta) / (count + 1)   (mean of batch means)
    decay d:     delta' = d delta + (1 - d) m                 (EMA)

  The output is the shift *after* merging the batch, to be used for the same
  batch, as TRL's DPOTrainer (loss_type="bco_pair") does: it updates its
  running mean with the batch's mean implicit reward and then reads it. With
  `decay=None` every batch weighs the same, which is TRL's running mean fed
  one scalar per step; BCO's paper describes a moving average, `decay=d`
  gives the exponential one (the first batch sets delta directly). A batch
  with no valid reward changes nothing. Under data parallelism pass the
  gathered rewards so that every shard keeps the same delta.

  Args:
    decay: None (default; plain running mean of batch means) or a Python
      float d in [0, 1).

  Returns:
    `StatefulTransform`: `init() -> BcoShiftState`, and
    `update(state, rewards, *, mask=None) -> (delta: float32 [], new_state)`
    with `rewards` of any shape (e.g. [2, B]: the chosen and the rejected
    implicit rewards) and `mask` of its shape. Pure and jit-able.

  Raises:
    ValueError: bad `decay` (here); a `mask` of a wrong shape (in `update`).

  References:
    Jung et al. (2024), "Binary Classifier Optimization for Large Language
    Model Alignment", arXiv:2404.04656.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.direct_preference import bco_reward_shift
  >>> shifter = bco_reward_shift()
  >>> delta, state = shifter.update(shifter.init(), jnp.array([1.0, 3.0]))
  >>> float(delta)
  2.0
  >>> delta, state = shifter.update(state, jnp.array([-2.0, 0.0]))
  >>> float(delta)  # (2 + (-1)) / 2
  0.5
  """
  if decay is not None:
    decay = _reduction.check_probability(decay, "decay", upper=1.0)

  def init() -> BcoShiftState:
    return BcoShiftState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32))

  def update(state: BcoShiftState, rewards: chex.Array, *,
             mask: Optional[chex.Array] = None):
    (values,), valid, _ = _reduction.sanitized_inputs([("rewards", rewards)],
                                                      mask)
    batch_mean = jax.lax.stop_gradient(
        _reduction.reduce_loss(values, mask=valid))
    seen = state.count > 0
    if decay is None:
      rate = 1.0 / (state.count + 1).astype(jnp.float32)
    else:
      rate = jnp.where(seen, 1.0 - decay, 1.0)
    shift = state.shift + rate * (batch_mean - state.shift)
    new = jnp.any(valid)
    new_state = BcoShiftState(state.count + new.astype(jnp.int32),
                              jnp.where(new, shift, state.shift))
    return new_state.shift, new_state

  return stateful.StatefulTransform(init, update)
