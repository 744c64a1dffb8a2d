"""Calibration rewards: rewarding a stated confidence for matching correctness (RLCR)."""

from typing import Optional

import chex
import jax.numpy as jnp

from rmjax.losses import _reduction


def brier_calibration_reward(
    correct: chex.Array,
    confidence: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """RLCR's reward: correctness plus the Brier score of the stated confidence.

    u = c - (q - c)^2,   c = 1[correct] in {0, 1},  q = stated confidence clipped to [0, 1]

  A correct answer earns between 0 (stated q = 0) and 1 (q = 1); a wrong one between -1 (q = 1)
  and 0 (q = 0). The Brier term is a proper scoring rule, so the expected reward is maximised by
  stating the true probability of being correct, while correctness still dominates: any correct
  answer scores at least as much as any wrong one.

  Sanity values: q = 0.8 -> 0.96 (correct), -0.64 (wrong).

  Args:
    correct: [B] correctness, bool or {0, 1} (nonzero = correct).
    confidence: [B] stated confidences q (values outside [0, 1] are clipped; the gradient is 0
      there).
    mask: optional [B] validity mask.

  Returns:
    [B] float32 rewards in [-1, 1]; 0 at masked entries.

  Raises:
    ValueError: `confidence` or `mask` not of `correct`'s shape.
    TypeError: non-real `confidence`, or `correct` neither bool nor real.

  References:
    Damani et al. (2025), "Beyond Binary Rewards: Training LMs to Reason About Their
    Uncertainty", arXiv:2507.16806 (RLCR); Brier (1950), "Verification of forecasts expressed in
    terms of probability".

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import brier_calibration_reward
  >>> brier_calibration_reward(jnp.array([True, False]), jnp.array([0.8, 0.8])).round(4).tolist()
  [0.96, -0.64]
  """
  correct = jnp.asarray(correct)
  if correct.dtype != jnp.bool_:
    correct = _reduction.as_real_array(correct, "correct")
  _reduction.check_rank(correct, 1, "correct", "[B]")
  confidence = _reduction.as_real_array(confidence, "confidence")
  _reduction.check_same_shape(confidence, "confidence", correct, "correct")
  valid = _reduction.validity_mask(mask, correct.shape, "mask")
  dtype = _reduction.compute_dtype(confidence)
  c = jnp.where(valid & (correct != 0), 1.0, 0.0).astype(dtype)
  q = jnp.clip(jnp.where(valid, confidence.astype(dtype), 0), 0.0, 1.0)
  return jnp.where(valid, c - jnp.square(q - c), 0)
