"""Process (step-level) reward refinements that bound the return of a reasoning trajectory.

A process reward model (PRM) scores every reasoning step; used as dense RL rewards, its scores
can be farmed by repeating correct but useless steps. Gao et al. (2024) bound the return from
any step with two refinements, Clip and Delta, implemented here.

Shapes: `step_rewards: [B, T]` (T steps per trajectory) with `mask: [B, T]` marking the valid
steps, which are expected left-aligned (padding after the last step). Masked steps come back 0.
"""

from typing import Optional

import chex
import jax.numpy as jnp

from rmjax.losses import _reduction


def _steps(step_rewards, mask):
  """Checks `step_rewards: [B, T]` and `mask`; returns sanitised float32 rewards and valid."""
  (r,), valid, _ = _reduction.sanitized_inputs([("step_rewards", step_rewards)], mask, "[B, T]")
  return r, valid


def prm_clip(
    step_rewards: chex.Array,
    *,
    eta: chex.Numeric,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Clip refinement of process rewards: r_t <- min(r_t - eta, 0).

  Every step reward becomes <= 0, so the return of a trajectory is bounded above by 0 and adding
  steps can never raise it: the policy cannot farm the PRM by padding with plausible steps. Steps
  the PRM rates above eta cost nothing; the others cost their shortfall.

  eta is the paper's threshold on the PRM score. It has no default here: it depends on the PRM's
  scale (for a PRM that outputs the probability that a step is correct, in [0, 1], it is a
  probability threshold).

  Args:
    step_rewards: [B, T] PRM scores of T steps.
    eta: threshold, a Python number or a scalar array (no default).
    mask: optional [B, T] validity mask of the steps.

  Returns:
    [B, T] float32 refined rewards, <= 0; 0 at masked steps.

  Raises:
    ValueError: `step_rewards` not [B, T], `mask` of a wrong shape, non-scalar `eta`.
    TypeError: non-real inputs.

  References:
    Gao et al. (2024), "On Designing Effective RL Reward at Training Time for LLM Reasoning",
    arXiv:2410.15115 (Clip mechanism).

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import prm_clip
  >>> prm_clip(jnp.array([[0.9, 0.3, 0.6]]), eta=0.5).round(2).tolist()
  [[0.0, -0.2, 0.0]]
  """
  r, valid = _steps(step_rewards, mask)
  eta = _reduction.as_real_array(eta, "eta")
  _reduction.check_rank(eta, 0, "eta", "[] (a scalar)")
  return jnp.where(valid, jnp.minimum(r - eta.astype(r.dtype), 0), 0)


def prm_delta(
    step_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Delta refinement of process rewards: r_t <- r_t - r_{t+1}; the last step keeps r_T.

  The return from step t telescopes to sum_{s >= t} (r_s - r_{s+1}) + r_T = r_t: each step's
  return is its own PRM score, bounded whatever the length of the trajectory, while the per-step
  signal still says which steps improved or worsened the score.

  The last step is the last valid one (the next step masked or past the end).

  Args:
    step_rewards: [B, T] PRM scores of T steps.
    mask: optional [B, T] validity mask of the steps (left-aligned).

  Returns:
    [B, T] float32 refined rewards; 0 at masked steps.

  Raises:
    ValueError: `step_rewards` not [B, T], `mask` of a wrong shape.
    TypeError: non-real inputs.

  References:
    Gao et al. (2024), "On Designing Effective RL Reward at Training Time for LLM Reasoning",
    arXiv:2410.15115 (Delta mechanism).

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import prm_delta
  >>> d = prm_delta(jnp.array([[0.9, 0.3, 0.6]]))
  >>> d.round(2).tolist(), float(d.sum())  # the sum telescopes to the first score
  ([[0.6, -0.3, 0.6]], 0.9...)
  """
  r, valid = _steps(step_rewards, mask)
  next_r = jnp.pad(r[:, 1:], ((0, 0), (0, 1)))
  next_valid = jnp.pad(valid[:, 1:], ((0, 0), (0, 1)))
  return jnp.where(valid, r - jnp.where(next_valid, next_r, 0), 0)
