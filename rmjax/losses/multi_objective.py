"""Multi-objective reward learning: min-norm (MGDA) weights over task losses.

MORE (Zeng et al. 2023) trains one reward model on several preference data
sources and "automatically adjusts the learning gradients across different
preference data sources": the loss is sum_t lambda_t L_t, with lambda the
min-norm point of the convex hull of the per-source gradients (the MGDA
direction of Sener & Koltun 2018, a common descent direction when one
exists). Typical use, with `jax.flatten_util.ravel_pytree` to flatten the
gradient of each source's loss (e.g. with respect to the reward head):

  grads = jnp.stack([ravel_pytree(jax.grad(loss_t)(params))[0] for ...])
  lam = min_norm_weights(grads)                      # [T], no gradient
  loss = weighted_task_loss(jnp.stack(task_losses), lam)
"""

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction


def min_norm_weights(
    gradients: chex.Array,
    *,
    num_iterations: int = 20,
) -> jnp.ndarray:
  """Simplex weights of the min-norm point of the convex hull of T gradients.

    lambda* = argmin_{lambda in simplex} || sum_t lambda_t g_t ||^2

  Solved on the Gram matrix M = G G^T by pairwise Frank-Wolfe: start at the
  uniform lambda = 1/T; at each step, with the gradient of the objective
  proportional to M lambda, take the Frank-Wolfe vertex s = argmin_t
  (M lambda)_t and the "away" vertex v = argmax_{t : lambda_t > 0}
  (M lambda)_t, and move mass gamma in [0, lambda_v] from v to s with an exact
  line search:

    gamma = clip(((M lambda)_v - (M lambda)_s) / ||g_s - g_v||^2, 0, lambda_v)

  Sener & Koltun (2018, Algorithm 2) use the plain Frank-Wolfe step (towards
  s only, with their two-point closed form as line search), which zig-zags
  and can stay several percent above the minimum after 20 steps; the
  pairwise variant (Lacoste-Julien & Jaggi 2015) converges linearly on the
  simplex. Both give the exact solution for T = 2 in one step:

    lambda_1 = clip((g_2 - g_1) . g_2 / ||g_1 - g_2||^2, 0, 1),

  and a zero gradient among positively correlated ones gets all the weight
  within T - 1 steps.

  The loop is a `lax.fori_loop` (jit-safe; `num_iterations` is static), and
  the output carries no gradient (`stop_gradient`): the weights are
  constants of the weighted loss, as in MGDA.

  Args:
    gradients: [T, P] one flattened gradient per task (T >= 1).
    num_iterations: Python int >= 0 (default 20) of Frank-Wolfe steps.

  Returns:
    [T] float32 weights, >= 0 and summing to 1.

  Raises:
    ValueError: wrongly shaped `gradients` or a bad `num_iterations`.
    TypeError: non-real-valued `gradients`.

  References:
    Sener & Koltun (2018), "Multi-Task Learning as Multi-Objective
    Optimization", NeurIPS (MGDA-UB, Frank-Wolfe solver).
    Desideri (2012), "Multiple-gradient descent algorithm (MGDA)".
    Lacoste-Julien & Jaggi (2015), "On the Global Linear Convergence of
    Frank-Wolfe Optimization Variants", NeurIPS (pairwise Frank-Wolfe).
    Zeng et al. (2023), "On Diversified Preferences of Large Language Model
    Alignment", arXiv:2312.07401 (MORE).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.multi_objective import min_norm_weights
  >>> min_norm_weights(jnp.array([[1.0, 0.0], [0.0, 1.0]]))  # orthogonal
  Array([0.5, 0.5], dtype=float32)
  >>> min_norm_weights(jnp.array([[2.0, 0.0], [1.0, 0.0]]))  # the shorter
  Array([0., 1.], dtype=float32)
  """
  if (isinstance(num_iterations, bool) or not isinstance(num_iterations, int)
      or num_iterations < 0):
    raise ValueError(
        f"`num_iterations` must be a Python int >= 0; got {num_iterations!r}.")
  gradients = _reduction.as_real_array(gradients, "gradients")
  _reduction.check_rank(gradients, 2, "gradients", "[T, P]")
  num_tasks = gradients.shape[0]
  if num_tasks == 0:
    raise ValueError(
        "`gradients` must hold at least one task (T >= 1); got shape "
        f"{tuple(gradients.shape)}.")
  dtype = _reduction.compute_dtype(gradients)
  g = jax.lax.stop_gradient(gradients.astype(dtype))
  gram = g @ g.T  # [T, T]

  lam0 = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
  lam, _ = jax.lax.fori_loop(0, num_iterations, _pairwise_frank_wolfe_step, (lam0, gram))
  return jax.lax.stop_gradient(lam)


def _pairwise_frank_wolfe_step(_, carry):
  """One step of `min_norm_weights` (module-level: eager calls reuse the compiled loop)."""
  lam, gram = carry
  gram_lam = gram @ lam
  toward = jnp.argmin(gram_lam)
  away = jnp.argmax(jnp.where(lam > 0, gram_lam, -jnp.inf))
  curvature = (gram[toward, toward] - 2.0 * gram[toward, away]
               + gram[away, away])
  safe = jnp.where(curvature > 0, curvature, 1.0)
  gamma = jnp.where(
      curvature > 0,
      jnp.clip((gram_lam[away] - gram_lam[toward]) / safe, 0.0, lam[away]),
      0.0)
  one_hot = lambda t: jax.nn.one_hot(t, lam.shape[0], dtype=lam.dtype)
  return lam + gamma * (one_hot(toward) - one_hot(away)), gram


def weighted_task_loss(
    task_losses: chex.Array,
    weights: chex.Array,
) -> jnp.ndarray:
  """sum_t w_t L_t with the weights held constant (no gradient through w).

  The MORE / MGDA objective once the weights are chosen, e.g. by
  `min_norm_weights`: its gradient is sum_t w_t grad L_t, the min-norm common
  direction. The weights are wrapped in `stop_gradient`, so weights computed
  from the same parameters do not add a second-order term.

  Args:
    task_losses: [T] scalar loss of each task (data source).
    weights: [T] task weights (usually on the simplex).

  Returns:
    float32 scalar.

  Raises:
    ValueError: wrongly shaped inputs.
    TypeError: non-real-valued inputs.

  References:
    Sener & Koltun (2018); Zeng et al. (2023), arXiv:2312.07401 (MORE).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.multi_objective import weighted_task_loss
  >>> float(weighted_task_loss(jnp.array([1.0, 3.0]), jnp.array([0.75, 0.25])))
  1.5
  """
  task_losses = _reduction.as_real_array(task_losses, "task_losses")
  _reduction.check_rank(task_losses, 1, "task_losses", "[T]")
  weights = _reduction.as_real_array(weights, "weights")
  _reduction.check_same_shape(weights, "weights", task_losses, "task_losses")
  dtype = _reduction.compute_dtype(task_losses, weights)
  weights = jax.lax.stop_gradient(weights.astype(dtype))
  return jnp.sum(weights * task_losses.astype(dtype))
