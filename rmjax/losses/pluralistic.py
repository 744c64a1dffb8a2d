"""Pluralistic (personalised) reward models: mixtures, groups, ideal points.

When preferences come from a population of users who disagree, one scalar
reward has an irreducible error. The pieces here model the disagreement:

* Mixture of Bradley-Terry heads (MiCRo stage 1): K reward heads on one
  backbone and a router; `mixture_bradley_terry_loss`, `mixture_posterior`
  (each head's responsibility for a pair) and `hedge_update` (online
  re-weighting of the heads from a user's labelled pairs, MiCRo stage 2).
* MaxMin-RLHF: hard EM over users; `maxmin_assign_users` is the E-step.
* PAL (ideal points): `pal_a_user_point` / `pal_a_score` (distance to the
  user's ideal point) and `pal_b_user_vector` / `pal_b_score` (cosine to a
  prompt-dependent user vector). PAL is trained with the Bradley-Terry loss on
  the score, `bradley_terry_loss(score, jnp.zeros_like(score), mask=mask)`
  (the score already is s_chosen - s_rejected); no separate PAL loss is
  needed.
* VPL (variational preference learning): a latent user variable z with a
  Gaussian posterior; `gaussian_kl_to_standard_normal`, `reparameterize`,
  `vpl_loss` and `vpl_reward_scaling`.

Shapes: B pairs (or users' pairs), K heads / prototypes / groups, D feature
dimension, Z latent dimension, M reference responses. Everything computes in
float32 (bfloat16 is upcast). Functions that take a `mask` replace the inputs
of invalid rows before computing anything, so padding with junk (even inf or
NaN) changes neither values nor gradients; when chaining PAL functions, pass
the same mask to each of them and to the loss.
"""

import math
from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses.bradley_terry import bradley_terry_loss

# PAL-B's temperature is a learnable log-scale initialised at log(1 / 0.07),
# CLIP's initialisation (authors' code: `logit_scale = log(1 / 0.07)`).
PAL_INIT_LOG_TEMPERATURE = math.log(1.0 / 0.07)
# ... and exp(log_temperature) is clamped at 100 (CLIP again).
PAL_MAX_TEMPERATURE = 100.0
# exp(log_var) overflows float32 past log_var ~ 88: log-variances are clipped
# above at this value (a variance of 5e21) inside the VPL functions.
VPL_MAX_LOG_VAR = 50.0


def _check_heads(x, name: str, expected: str = "[B, K]") -> jnp.ndarray:
  x = _reduction.as_real_array(x, name)
  _reduction.check_rank(x, 2, name, expected)
  if x.shape[-1] == 0:
    raise ValueError(
        f"`{name}` must have at least one column (K >= 1); got shape "
        f"{tuple(x.shape)}.")
  return x


def _mixture_inputs(chosen_rewards, rejected_rewards, mixture_logits):
  chosen = _check_heads(chosen_rewards, "chosen_rewards")
  rejected = _reduction.as_real_array(rejected_rewards, "rejected_rewards")
  _reduction.check_same_shape(rejected, "rejected_rewards", chosen,
                              "chosen_rewards")
  logits = _reduction.as_real_array(mixture_logits, "mixture_logits")
  _reduction.check_same_shape(logits, "mixture_logits", chosen,
                              "chosen_rewards")
  return chosen, rejected, logits


def _joint_log_likelihood(chosen, rejected, logits):
  """log w_k + log sigmoid(Delta_k), [B, K]."""
  return (jax.nn.log_softmax(logits, axis=-1)
          + jax.nn.log_sigmoid(chosen - rejected))


def mixture_bradley_terry_loss(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    mixture_logits: chex.Array,
    *,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """Negative log-likelihood of a mixture of K Bradley-Terry heads.

  With Delta_ik = chosen_rewards_ik - rejected_rewards_ik and router weights
  w_i = softmax(mixture_logits_i):

    loss_i = -log sum_k w_ik sigmoid(Delta_ik)
           = -logsumexp_k(log_softmax(mixture_logits_i)_k
                          + log sigmoid(Delta_ik))

  computed in the log domain (stable for logits and gaps up to 1e4). With
  K = 1, or with K identical heads, this is `bradley_terry_loss` of that head
  (whatever the router says). MiCRo's stage 1 trains the heads and a
  context-aware router w(x) = softmax(W h(x)) with this loss.

  Args:
    chosen_rewards: [B, K] rewards of the preferred responses under each head.
    rejected_rewards: [B, K] rewards of the other responses.
    mixture_logits: [B, K] router logits (unnormalised; softmax inside).
    weights: optional [B] per-pair weights (>= 0 by convention, not checked).
    mask: optional [B] bool (or {0, 1}) validity mask.
    reduction: "mean" (default; over valid pairs), "sum" or "none".

  Returns:
    float32 scalar, or [B] float32 per-pair losses for reduction="none".

  Raises:
    ValueError: bad `reduction` or wrongly shaped inputs.
    TypeError: non-real-valued inputs.

  References:
    Shen et al. (2025), "MiCRo: Mixture Modeling and Context-aware Routing for
    Personalized Preference Learning", arXiv:2505.24846.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import mixture_bradley_terry_loss
  >>> # Head 0 is sure (Delta = 20), head 1 wrong (Delta = -20), equal weights:
  >>> # -log(0.5 * 1 + 0.5 * 0) = log 2.
  >>> float(mixture_bradley_terry_loss(jnp.array([[20.0, -20.0]]),
  ...                                  jnp.zeros((1, 2)), jnp.zeros((1, 2))))
  0.6931...
  """
  _reduction.check_reduction(reduction)
  chosen, rejected, logits = _mixture_inputs(chosen_rewards, rejected_rewards,
                                             mixture_logits)
  batch = chosen.shape[0]
  valid = _reduction.validity_mask(mask, (batch,), "mask")
  if weights is not None:
    weights = _reduction.batch_vector(weights, "weights", batch,
                                      "chosen_rewards")
  dtype = _reduction.compute_dtype(chosen, rejected, logits)
  chosen, rejected, logits = (_reduction.sanitized_rows(x, valid, dtype)
                              for x in (chosen, rejected, logits))
  per_pair = -jax.nn.logsumexp(
      _joint_log_likelihood(chosen, rejected, logits), axis=-1)
  return _reduction.reduce_loss(
      per_pair, weights=weights, mask=valid, reduction=reduction)


def mixture_posterior(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    mixture_logits: chex.Array,
) -> jnp.ndarray:
  """Posterior responsibility of each head for each observed preference.

    q_ik = w_ik sigmoid(Delta_ik) / sum_l w_il sigmoid(Delta_il)
         = softmax_k(log_softmax(mixture_logits_i)_k + log sigmoid(Delta_ik))

  The E-step of EM for the mixture of Bradley-Terry heads; `argmax_k q_ik` is
  the hard assignment of MaxMin-style hard EM. Gradients flow through; wrap in
  `jax.lax.stop_gradient` when using it as fixed EM targets.

  Args:
    chosen_rewards: [B, K] rewards of the preferred responses under each head.
    rejected_rewards: [B, K] rewards of the other responses.
    mixture_logits: [B, K] router (prior) logits.

  Returns:
    [B, K] float32, each row on the simplex.

  References:
    Shen et al. (2025), MiCRo, arXiv:2505.24846; Dempster, Laird & Rubin
    (1977), EM.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import mixture_posterior
  >>> # Equal prior; head 0 explains the pair (Delta = 20), head 1 does not.
  >>> mixture_posterior(jnp.array([[20.0, -20.0]]), jnp.zeros((1, 2)),
  ...                   jnp.zeros((1, 2))).round(3)
  Array([[1., 0.]], dtype=float32)
  """
  chosen, rejected, logits = _mixture_inputs(chosen_rewards, rejected_rewards,
                                             mixture_logits)
  dtype = _reduction.compute_dtype(chosen, rejected, logits)
  joint = _joint_log_likelihood(chosen.astype(dtype), rejected.astype(dtype),
                                logits.astype(dtype))
  return jax.nn.softmax(joint, axis=-1)


def hedge_update(
    log_weights: chex.Array,
    losses: chex.Array,
    learning_rate: chex.Numeric,
) -> jnp.ndarray:
  """One Hedge (exponential-weights) step on mixture weights, in log space.

    log w'_k = log w_k - eta * l_k - log sum_j w_j exp(-eta * l_j)

  i.e. w'_k proportional to w_k exp(-eta l_k), renormalised. Repeated steps
  give w_T proportional to w_0 exp(-eta * cumulative loss), so the weight
  concentrates on the head with the smallest cumulative loss (Freund &
  Schapire 1997). With eta = 1 and the log loss l_k = -log sigmoid(Delta_k)
  of a labelled pair, the step is exactly Bayes' rule: the result is the log
  of `mixture_posterior`.

  Use: MiCRo's stage 2 adapts the mixture weights online from a few labelled
  pairs of a user. MiCRo describes this as an online routing strategy; its
  exact update rule could not be confirmed with the sources at hand, so this
  is documented as the standard Hedge / exponential-weights update, not as the
  paper's algorithm.

  Args:
    log_weights: [K] or [B, K] current log mixture weights (normalised or not;
      the output is normalised).
    losses: losses of each head, same shape as `log_weights`.
    learning_rate: eta >= 0: a Python number (checked eagerly) or a scalar
      array.

  Returns:
    float32 normalised log weights, same shape as `log_weights`.

  References:
    Freund & Schapire (1997), "A decision-theoretic generalization of on-line
    learning and an application to boosting" (Hedge).
    Shen et al. (2025), MiCRo, arXiv:2505.24846 (stage 2 context).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import hedge_update
  >>> log_w = jnp.log(jnp.array([0.5, 0.5]))
  >>> new_log_w = hedge_update(log_w, jnp.array([0.0, jnp.log(3.0)]), 1.0)
  >>> jnp.exp(new_log_w).round(4)  # (0.5, 0.5 / 3), renormalised
  Array([0.75, 0.25], dtype=float32)
  """
  log_weights = _reduction.as_real_array(log_weights, "log_weights")
  if log_weights.ndim not in (1, 2) or log_weights.shape[-1] == 0:
    raise ValueError(
        "`log_weights` must have shape [K] or [B, K] with K >= 1; got shape "
        f"{tuple(log_weights.shape)}.")
  losses = _reduction.as_real_array(losses, "losses")
  _reduction.check_same_shape(losses, "losses", log_weights, "log_weights")
  learning_rate = _reduction.scalar_hyperparameter(
      learning_rate, "learning_rate", allow_zero=True)
  dtype = _reduction.compute_dtype(log_weights, losses)
  return jax.nn.log_softmax(
      log_weights.astype(dtype) - learning_rate * losses.astype(dtype),
      axis=-1)


def maxmin_assign_users(
    pair_log_likelihoods: chex.Array,
    user_ids: chex.Array,
    num_users: int,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Hard E-step of MaxMin-RLHF's EM: each user's most likely BT model.

    assignment_u = argmax_k sum_{i : user_i = u} pair_log_likelihoods_ik

  pair_log_likelihoods_ik = log sigmoid(r_k(chosen_i) - r_k(rejected_i)) is
  the log-likelihood of pair i under the k-th of K Bradley-Terry models
  (e.g. `-bradley_terry_loss(c[:, k], r[:, k], reduction="none")`). The
  M-step then refits model k on the pairs of the users assigned to it.

  Users with no (valid) pair get -1. Ties go to the smallest k. Pairs whose
  `user_ids` lie outside [0, num_users) are ignored (`segment_sum` drops
  them), as are pairs masked out.

  Args:
    pair_log_likelihoods: [B, K] log-likelihood of each pair under each model.
    user_ids: [B] integer user of each pair.
    num_users: Python int U >= 0 (static under `jit`).
    mask: optional [B] bool (or {0, 1}) validity mask.

  Returns:
    [U] int32 model index per user, -1 for users without pairs.

  Raises:
    ValueError: wrongly shaped inputs or a bad `num_users`.
    TypeError: non-integer `user_ids`.

  References:
    Chakraborty et al. (2024), "MaxMin-RLHF: Alignment with Diverse Human
    Preferences", arXiv:2402.08925.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import maxmin_assign_users
  >>> ll = jnp.log(jnp.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.8]]))
  >>> maxmin_assign_users(ll, jnp.array([0, 0, 2]), 4)
  Array([ 0, -1,  1, -1], dtype=int32)
  """
  if (isinstance(num_users, bool) or not isinstance(num_users, int)
      or num_users < 0):
    raise ValueError(
        f"`num_users` must be a Python int >= 0; got {num_users!r}.")
  log_lik = _check_heads(pair_log_likelihoods, "pair_log_likelihoods")
  user_ids = jnp.asarray(user_ids)
  if not jnp.issubdtype(user_ids.dtype, jnp.integer):
    raise TypeError(
        f"`user_ids` must be an integer array; got dtype {user_ids.dtype}.")
  batch = log_lik.shape[0]
  if tuple(user_ids.shape) != (batch,):
    raise ValueError(
        f"`user_ids` must have shape [B] = ({batch},) (B from "
        f"`pair_log_likelihoods`); got shape {tuple(user_ids.shape)}.")
  valid = _reduction.validity_mask(mask, (batch,), "mask")
  dtype = _reduction.compute_dtype(log_lik)
  log_lik = _reduction.sanitized_rows(log_lik, valid, dtype)
  totals = jax.ops.segment_sum(log_lik, user_ids, num_segments=num_users)
  counts = jax.ops.segment_sum(valid.astype(jnp.int32), user_ids,
                               num_segments=num_users)
  best = jnp.argmax(totals, axis=-1).astype(jnp.int32)
  return jnp.where(counts > 0, best, -1).astype(jnp.int32)


def _check_features(x, name: str, expected: str = "[B, D]") -> jnp.ndarray:
  x = _reduction.as_real_array(x, name)
  _reduction.check_rank(x, 2, name, expected)
  return x


def _mixing_weights(user_logits, num_prototypes: int, batch: int,
                    prototypes_name: str) -> jnp.ndarray:
  user_logits = _reduction.as_real_array(user_logits, "user_logits")
  expected = (batch, num_prototypes)
  if tuple(user_logits.shape) != expected:
    raise ValueError(
        f"`user_logits` must have shape [B, K] = {expected} (K from "
        f"`{prototypes_name}`); got shape {tuple(user_logits.shape)}.")
  return user_logits


def pal_a_user_point(
    prototypes: chex.Array,
    user_logits: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """PAL-A user ideal point: a convex mix of K learnable prototypes.

    a_u = softmax(theta_u) @ P        ([B, K] x [K, D] -> [B, D])

  The spec (and the paper's "f(Pw)" variant) applies the item projection f to
  the mix, a_u = f(P softmax(theta_u)): apply f to this output. For the
  "f(P)w" variant of the authors' code pass the projected prototypes f(P)
  instead.

  Args:
    prototypes: [K, D] prototype points P (K = 2 in the spec).
    user_logits: [B, K] per-row user mixing logits theta_u (gather a user's
      row of the [num_users, K] table before calling).
    mask: optional [B] validity mask; invalid rows are 0.

  Returns:
    [B, D] float32 user points.

  References:
    Chen et al. (2024), "PAL: Pluralistic Alignment Framework for Learning
    from Heterogeneous Preferences", arXiv:2406.08469.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import pal_a_user_point
  >>> P = jnp.array([[0.0, 0.0], [2.0, 4.0]])
  >>> pal_a_user_point(P, jnp.zeros((1, 2)))  # the midpoint
  Array([[1., 2.]], dtype=float32)
  """
  prototypes = _check_features(prototypes, "prototypes", "[K, D]")
  user_logits = _check_features(user_logits, "user_logits", "[B, K]")
  batch = user_logits.shape[0]
  user_logits = _mixing_weights(user_logits, prototypes.shape[0], batch,
                                "prototypes")
  valid = _reduction.validity_mask(mask, (batch,), "mask")
  dtype = _reduction.compute_dtype(prototypes, user_logits)
  mix = jax.nn.softmax(_reduction.sanitized_rows(user_logits, valid, dtype), axis=-1)
  points = mix @ prototypes.astype(dtype)
  return jnp.where(valid[:, None], points, 0)


def pal_b_user_vector(
    prompt_features_per_prototype: chex.Array,
    user_logits: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """PAL-B prompt-dependent user vector: u = sum_k softmax(theta_u)_k g_k(x).

  Args:
    prompt_features_per_prototype: [B, K, D] the K prototype projections
      g_k(x) of each row's prompt.
    user_logits: [B, K] per-row user mixing logits theta_u.
    mask: optional [B] validity mask; invalid rows are 0.

  Returns:
    [B, D] float32 user vectors.

  References:
    Chen et al. (2024), PAL, arXiv:2406.08469.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import pal_b_user_vector
  >>> g = jnp.array([[[1.0, 0.0], [0.0, 3.0]]])  # g_1(x), g_2(x)
  >>> pal_b_user_vector(g, jnp.zeros((1, 2)))  # equal mix
  Array([[0.5, 1.5]], dtype=float32)
  """
  g = _reduction.as_real_array(prompt_features_per_prototype,
                               "prompt_features_per_prototype")
  _reduction.check_rank(g, 3, "prompt_features_per_prototype", "[B, K, D]")
  batch, num_prototypes, _ = g.shape
  user_logits = _mixing_weights(user_logits, num_prototypes, batch,
                                "prompt_features_per_prototype")
  valid = _reduction.validity_mask(mask, (batch,), "mask")
  dtype = _reduction.compute_dtype(g, user_logits)
  mix = jax.nn.softmax(_reduction.sanitized_rows(user_logits, valid, dtype), axis=-1)
  return jnp.einsum("bk,bkd->bd", mix, _reduction.sanitized_rows(g, valid, dtype))


def _pal_inputs(chosen_features, rejected_features, user, user_name, mask):
  chosen = _check_features(chosen_features, "chosen_features")
  rejected = _reduction.as_real_array(rejected_features, "rejected_features")
  _reduction.check_same_shape(rejected, "rejected_features", chosen,
                              "chosen_features")
  user = _reduction.as_real_array(user, user_name)
  _reduction.check_same_shape(user, user_name, chosen, "chosen_features")
  valid = _reduction.validity_mask(mask, (chosen.shape[0],), "mask")
  dtype = _reduction.compute_dtype(chosen, rejected, user)
  return (_reduction.sanitized_rows(chosen, valid, dtype), _reduction.sanitized_rows(rejected, valid, dtype),
          _reduction.sanitized_rows(user, valid, dtype), valid)


def pal_a_score(
    chosen_features: chex.Array,
    rejected_features: chex.Array,
    user_point: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """PAL-A ideal-point score: closer to the user's ideal point is better.

    score_i = ||f(y_r) - a_u|| - ||f(y_c) - a_u||

  Positive when the chosen response is closer to the user point. Train with
  the logistic (Bradley-Terry) loss on the score:
  `bradley_terry_loss(score, jnp.zeros_like(score), mask=mask)`. The norms are
  "safe": their gradient at a zero distance is 0, not NaN.

  Args:
    chosen_features: [B, D] projected features f(y_c) of the chosen responses.
    rejected_features: [B, D] projected features f(y_r) of the others.
    user_point: [B, D] user ideal points a_u (e.g. `pal_a_user_point`).
    mask: optional [B] validity mask; invalid rows score exactly 0 with zero
      gradient.

  Returns:
    [B] float32 scores.

  References:
    Chen et al. (2024), PAL, arXiv:2406.08469 (authors' code:
    `PrefLearner_dist`, the difference of Euclidean distances).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import pal_a_score
  >>> pal_a_score(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 3.0]]),
  ...             jnp.zeros((1, 2)))  # 3 - 1
  Array([2.], dtype=float32)
  """
  chosen, rejected, user, valid = _pal_inputs(
      chosen_features, rejected_features, user_point, "user_point", mask)
  score = (_reduction.safe_l2_norm(rejected - user)
           - _reduction.safe_l2_norm(chosen - user))
  return jnp.where(valid, score, 0)


def pal_b_score(
    chosen_features: chex.Array,
    rejected_features: chex.Array,
    user_vector: chex.Array,
    *,
    log_temperature: chex.Numeric,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """PAL-B score: scaled cosine to the user vector, chosen minus rejected.

    tau = min(exp(log_temperature), 100)
    score_i = tau * (cos(u_i, f(y_c)_i) - cos(u_i, f(y_r)_i))

  `log_temperature` is a learnable scalar initialised at
  `PAL_INIT_LOG_TEMPERATURE` = log(1 / 0.07) (tau = 14.29) and tau is clamped
  at 100, as CLIP does (confirmed in the authors' code: `logit_scale =
  log(1 / 0.07)`, `clamp(logit_scale.exp(), max=100)`); past the clamp its
  gradient is 0. Train with
  `bradley_terry_loss(score, jnp.zeros_like(score), mask=mask)`, i.e.
  -log sigmoid(s_c - s_r). Zero vectors have cosine 0 (no NaN).

  Args:
    chosen_features: [B, D] projected features f(y_c) of the chosen responses.
    rejected_features: [B, D] projected features f(y_r) of the others.
    user_vector: [B, D] user vectors u (e.g. `pal_b_user_vector`).
    log_temperature: scalar log tau (Python number or scalar array).
    mask: optional [B] validity mask; invalid rows score exactly 0 with zero
      gradient.

  Returns:
    [B] float32 scores.

  References:
    Chen et al. (2024), PAL, arXiv:2406.08469; Radford et al. (2021), CLIP
    (temperature initialisation and clamp).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import pal_b_score
  >>> u = jnp.array([[1.0, 0.0]])
  >>> pal_b_score(jnp.array([[2.0, 0.0]]), jnp.array([[0.0, 5.0]]), u,
  ...             log_temperature=0.0)  # 1 * (1 - 0)
  Array([1.], dtype=float32)
  """
  chosen, rejected, user, valid = _pal_inputs(
      chosen_features, rejected_features, user_vector, "user_vector", mask)
  if isinstance(log_temperature, bool):
    raise TypeError("`log_temperature` must be a real scalar; got a bool.")
  log_temperature = _reduction.as_real_array(log_temperature,
                                             "log_temperature")
  _reduction.check_rank(log_temperature, 0, "log_temperature",
                        "[] (a scalar)")
  tau = jnp.exp(jnp.minimum(log_temperature.astype(chosen.dtype),
                            math.log(PAL_MAX_TEMPERATURE)))
  u = _reduction.safe_l2_normalize(user)
  cos_chosen = jnp.sum(u * _reduction.safe_l2_normalize(chosen), axis=-1)
  cos_rejected = jnp.sum(u * _reduction.safe_l2_normalize(rejected), axis=-1)
  return jnp.where(valid, tau * (cos_chosen - cos_rejected), 0)


def _gaussian_inputs(mean, log_var):
  mean = _reduction.as_real_array(mean, "mean")
  _reduction.check_rank(mean, 2, "mean", "[B, Z]")
  log_var = _reduction.as_real_array(log_var, "log_var")
  _reduction.check_same_shape(log_var, "log_var", mean, "mean")
  dtype = _reduction.compute_dtype(mean, log_var)
  return mean.astype(dtype), log_var.astype(dtype)


def _kl_to_standard_normal(mean, log_var):
  log_var = jnp.minimum(log_var, VPL_MAX_LOG_VAR)
  return 0.5 * jnp.sum(
      jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var, axis=-1)


def gaussian_kl_to_standard_normal(
    mean: chex.Array,
    log_var: chex.Array,
) -> jnp.ndarray:
  """KL(N(mu, diag(exp(log_var))) || N(0, I)), one per row.

    KL_i = 0.5 * sum_z (exp(lv_iz) + mu_iz^2 - 1 - lv_iz)

  `log_var` is clipped above at `VPL_MAX_LOG_VAR` = 50 so that exp never
  overflows (beyond it the gradient with respect to `log_var` is 0); below
  the clip the value is exact. KL >= 0, with equality iff mu = 0, lv = 0.

  Args:
    mean: [B, Z] posterior means.
    log_var: [B, Z] posterior log-variances.

  Returns:
    [B] float32 KL divergences.

  References:
    Kingma & Welling (2014), "Auto-Encoding Variational Bayes".

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import gaussian_kl_to_standard_normal
  >>> gaussian_kl_to_standard_normal(jnp.array([[1.0, 0.0]]),
  ...                                jnp.zeros((1, 2)))  # 0.5 * mu^2
  Array([0.5], dtype=float32)
  """
  return _kl_to_standard_normal(*_gaussian_inputs(mean, log_var))


def reparameterize(
    key: chex.PRNGKey,
    mean: chex.Array,
    log_var: chex.Array,
) -> jnp.ndarray:
  """Reparameterised sample z = mu + exp(log_var / 2) * eps, eps ~ N(0, I).

  Differentiable in `mean` and `log_var`. VPL samples z at training time and
  uses z = mu at evaluation (call this only for training). `log_var` is
  clipped above at `VPL_MAX_LOG_VAR`, as in `gaussian_kl_to_standard_normal`.

  Args:
    key: a `jax.random` key.
    mean: [B, Z] posterior means.
    log_var: [B, Z] posterior log-variances.

  Returns:
    [B, Z] float32 samples.

  References:
    Kingma & Welling (2014); Poddar et al. (2024), "Personalizing
    Reinforcement Learning from Human Feedback with Variational Preference
    Learning", arXiv:2408.10075.

  >>> import jax, jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import reparameterize
  >>> z = reparameterize(jax.random.key(0), jnp.ones((2, 3)),
  ...                    jnp.full((2, 3), -100.0))  # variance ~ 0: z = mu
  >>> z
  Array([[1., 1., 1.],
         [1., 1., 1.]], dtype=float32)
  """
  mean, log_var = _gaussian_inputs(mean, log_var)
  std = jnp.exp(0.5 * jnp.minimum(log_var, VPL_MAX_LOG_VAR))
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + std * eps


def vpl_loss(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    mean: chex.Array,
    log_var: chex.Array,
    *,
    beta: chex.Numeric = 0.01,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """VPL objective: Bradley-Terry on latent-conditioned rewards plus beta KL.

    loss_i = -log sigmoid(r(y_c, z_i) - r(y_r, z_i))
             + beta * KL(N(mu_i, diag(exp(lv_i))) || N(0, I))

  The rewards are r(y, z) = MLP([e_y; z]) with z drawn by `reparameterize`
  from the encoder's posterior over the user's annotated context pairs. The
  two terms are combined per example, then reduced: with one (mu, lv) row per
  pair (the user's posterior repeated on each of the user's pairs), "mean"
  gives mean BT + beta * mean KL, the ELBO-style objective averaged over the
  batch (the KL of a user with n pairs in the batch is counted n times).
  Default beta = 0.01 (spec).

  Args:
    chosen_rewards: [B] r(y_c, z) of the preferred responses.
    rejected_rewards: [B] r(y_r, z) of the other responses.
    mean: [B, Z] posterior mean of each pair's user latent.
    log_var: [B, Z] posterior log-variance.
    beta: KL weight >= 0 (Python number, checked eagerly, or scalar array).
    mask: optional [B] bool (or {0, 1}) validity mask.
    reduction: "mean" (default; over valid pairs), "sum" or "none".

  Returns:
    float32 scalar, or [B] float32 per-pair losses for reduction="none".

  Raises:
    ValueError: bad `beta` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real-valued inputs.

  References:
    Poddar et al. (2024), "Personalizing Reinforcement Learning from Human
    Feedback with Variational Preference Learning", arXiv:2408.10075.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import vpl_loss
  >>> # BT at Delta = 0 (log 2) + 0.5 * KL of mu = (1, 0): 0.6931 + 0.5 * 0.5.
  >>> float(vpl_loss(jnp.zeros(1), jnp.zeros(1), jnp.array([[1.0, 0.0]]),
  ...                jnp.zeros((1, 2)), beta=0.5))
  0.9431...
  """
  _reduction.check_reduction(reduction)
  beta = _reduction.scalar_hyperparameter(beta, "beta", allow_zero=True)
  chosen, rejected, valid, dtype = _reduction.pair_inputs(
      chosen_rewards, rejected_rewards, mask)
  mean, log_var = _gaussian_inputs(mean, log_var)
  batch = chosen.shape[0]
  if mean.shape[0] != batch:
    raise ValueError(
        f"`mean` must have shape [B, Z] with B = {batch} (B from "
        f"`chosen_rewards`); got shape {tuple(mean.shape)}.")
  dtype = _reduction.compute_dtype(chosen, mean, log_var)
  kl = _kl_to_standard_normal(_reduction.sanitized_rows(mean, valid, dtype),
                              _reduction.sanitized_rows(log_var, valid, dtype))
  bt = bradley_terry_loss(chosen, rejected, mask=valid, reduction="none")
  return _reduction.reduce_loss(bt + beta * kl, mask=valid,
                                reduction=reduction)


def vpl_reward_scaling(
    rewards: chex.Array,
    reference_rewards: chex.Array,
) -> jnp.ndarray:
  """VPL's reward scaling for RL: expected win probability over references.

    r~_i = mean_m sigmoid(r_i - r'_im)

  Maps a latent-conditioned reward to [0, 1] (the probability of beating a
  reference response y' under the same user latent z), which makes the
  scales of different users' rewards comparable during policy optimisation.

  Args:
    rewards: [B] r(y_i, z_i).
    reference_rewards: [B, M] r(y'_m, z_i) of M reference responses.

  Returns:
    [B] float32 scaled rewards in [0, 1].

  References:
    Poddar et al. (2024), VPL, arXiv:2408.10075.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.pluralistic import vpl_reward_scaling
  >>> vpl_reward_scaling(jnp.zeros(1), jnp.array([[0.0, 100.0, -100.0]]))
  Array([0.5], dtype=float32)
  """
  rewards = _reduction.as_real_array(rewards, "rewards")
  _reduction.check_rank(rewards, 1, "rewards", "[B]")
  reference = _check_heads(reference_rewards, "reference_rewards", "[B, M]")
  if reference.shape[0] != rewards.shape[0]:
    raise ValueError(
        f"`reference_rewards` must have shape [B, M] with B = "
        f"{rewards.shape[0]} (B from `rewards`); got shape "
        f"{tuple(reference.shape)}.")
  dtype = _reduction.compute_dtype(rewards, reference)
  gaps = rewards.astype(dtype)[:, None] - reference.astype(dtype)
  return jnp.mean(jax.nn.sigmoid(gaps), axis=-1)
