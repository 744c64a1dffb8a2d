"""General preference model (GPM): preferences from skew-symmetric embeddings.

A GPM head maps each (prompt, response) to an embedding v in R^{2k} instead of
a scalar reward. The preference score of a over b is

  s(a > b) = <R v_a, v_b>
           = sum_{i < k} lambda_i (a_{2i} b_{2i+1} - a_{2i+1} b_{2i}),

with R block-diagonal, each 2x2 block [[0, -1], [1, 0]] (a quarter turn), and
optional prompt-dependent block scales lambda(x) >= 0 (default 1). The score is
skew-symmetric, s(a > b) = -s(b > a), so s(a > a) = 0, and it can be
intransitive: three responses at angles 0, 120 and 240 degrees in one block
beat each other in a cycle (rock-paper-scissors), which no scalar reward, and
hence no Bradley-Terry model, can represent (there, the three score gaps of a
cycle sum to 0, so one of them is <= 0).

The sign convention is the one of the authors' code
(github.com/general-preference/general-preference-model,
`general_preference/models/loss.py`: R[2i, 2i+1] = -1, R[2i+1, 2i] = 1 and
s = (R v_a) . v_b; for k = 1, s = a_0 b_1 - a_1 b_0), checked against the
spec's sanity value: v_a = (1, 0), v_b = (0, 1), tau = 1 -> P(a > b) =
sigmoid(1) = 0.7311.

All functions compute in float32 (bfloat16 is upcast).
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction


def _check_embedding(x, name: str) -> jnp.ndarray:
  x = _reduction.as_real_array(x, name)
  _reduction.check_rank(x, 2, name, "[B, 2k]")
  dim = x.shape[-1]
  if dim == 0 or dim % 2:
    raise ValueError(
        f"`{name}` must have an even, positive last dimension 2k (k 2-D "
        f"blocks); got shape {tuple(x.shape)}.")
  return x


def _check_block_scales(block_scales, embedding: jnp.ndarray,
                        embedding_name: str) -> jnp.ndarray:
  block_scales = _reduction.as_real_array(block_scales, "block_scales")
  batch, dim = embedding.shape
  expected = (batch, dim // 2)
  if tuple(block_scales.shape) != expected:
    raise ValueError(
        f"`block_scales` must have shape [B, k] = {expected} (k = half the "
        f"last dimension of `{embedding_name}` {tuple(embedding.shape)}); got "
        f"shape {tuple(block_scales.shape)}.")
  return block_scales


def _skew_score(a: jnp.ndarray, b: jnp.ndarray,
                block_scales: Optional[jnp.ndarray]) -> jnp.ndarray:
  """sum_i lambda_i (a_{2i} b_{2i+1} - a_{2i+1} b_{2i}); inputs are checked."""
  per_block = a[:, 0::2] * b[:, 1::2] - a[:, 1::2] * b[:, 0::2]  # [B, k]
  if block_scales is not None:
    per_block = per_block * block_scales
  return jnp.sum(per_block, axis=-1)


def general_preference_score(
    embedding_a: chex.Array,
    embedding_b: chex.Array,
    *,
    block_scales: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """GPM preference score s(a > b) = <R v_a, v_b>, one per row.

    s = sum_{i < k} lambda_i (a_{2i} b_{2i+1} - a_{2i+1} b_{2i})

  R is block-diagonal with 2x2 blocks [[0, -1], [1, 0]] (sign convention of the
  authors' code, see the module docstring); P(a > b) = sigmoid(s / tau).
  Skew-symmetric: s(a, b) = -s(b, a) and s(a, a) = 0. Invariant to rotating
  every 2-D block of both embeddings by the same angle (a block's angle may
  differ from another's).

  Args:
    embedding_a: [B, 2k] GPM embeddings of the first responses (k >= 1).
    embedding_b: [B, 2k] GPM embeddings of the second responses.
    block_scales: optional [B, k] per-block eigenvalue scales lambda(x) >= 0
      (default all 1). The paper makes them prompt-dependent through a gate
      over the prompt's hidden state; the authors' code uses
      `k * softmax(W h_x / sqrt(d))`, so that a uniform gate gives 1.

  Returns:
    [B] float32 scores.

  Raises:
    ValueError: wrongly shaped inputs, or an odd last dimension.
    TypeError: non-real-valued inputs.

  References:
    Zhang et al. (2024), "Beyond Bradley-Terry Models: A General Preference
    Model for Language Model Alignment", arXiv:2410.02197.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.general_preference import general_preference_score
  >>> a, b = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])
  >>> general_preference_score(a, b)
  Array([1.], dtype=float32)
  >>> general_preference_score(b, a)
  Array([-1.], dtype=float32)
  """
  a = _check_embedding(embedding_a, "embedding_a")
  b = _check_embedding(embedding_b, "embedding_b")
  _reduction.check_same_shape(b, "embedding_b", a, "embedding_a")
  if block_scales is None:
    dtype = _reduction.compute_dtype(a, b)
    scales = None
  else:
    scales = _check_block_scales(block_scales, a, "embedding_a")
    dtype = _reduction.compute_dtype(a, b, scales)
    scales = scales.astype(dtype)
  return _skew_score(a.astype(dtype), b.astype(dtype), scales)


def general_preference_loss(
    chosen_embedding: chex.Array,
    rejected_embedding: chex.Array,
    *,
    margin: chex.Numeric = 0.0,
    temperature: chex.Numeric = 0.1,
    block_scales: Optional[chex.Array] = None,
    normalize: bool = False,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """GPM negative log-likelihood of the observed preferences.

  With s_i = general_preference_score(v_chosen_i, v_rejected_i):

    loss_i = -log sigmoid((s_i - m_i) / tau) = softplus(-(s_i - m_i) / tau)

  This is the authors' `HighDimGeneralPreferenceLoss` (default tau = 0.1
  there and in the spec). With `normalize`, each embedding is first scaled to
  unit L2 norm over its full 2k dimensions (a zero vector stays 0, with finite
  gradients), so that |s| <= max_i lambda_i and tau alone sets the sharpness.

  Sanity value (spec): v_c = (1, 0), v_r = (0, 1), tau = 1: P = sigmoid(1) =
  0.7311, loss = -log 0.7311 = 0.3133.

  Args:
    chosen_embedding: [B, 2k] GPM embeddings of the preferred responses.
    rejected_embedding: [B, 2k] GPM embeddings of the other responses.
    margin: scalar or [B] margin m subtracted from the score (default 0).
    temperature: tau > 0 (default 0.1): a Python number (checked eagerly) or a
      scalar array (e.g. a learnable temperature).
    block_scales: optional [B, k] prompt-dependent block scales lambda(x); see
      `general_preference_score`.
    normalize: whether to L2-normalise the embeddings first (default False).
    weights: optional [B] per-pair weights (>= 0 by convention, not checked).
    mask: optional [B] bool (or {0, 1}) validity mask; invalid pairs are
      replaced before computing, so junk (even inf or NaN) contributes exactly
      0 to value and gradient.
    reduction: "mean" (default; over valid pairs), "sum" or "none"; see
      `rmjax.losses.reduce_loss`.

  Returns:
    float32 scalar, or [B] float32 per-pair losses for reduction="none".

  Raises:
    ValueError: bad `temperature` or `reduction`, wrongly shaped inputs, or an
      odd last dimension.
    TypeError: non-real-valued inputs.

  References:
    Zhang et al. (2024), "Beyond Bradley-Terry Models: A General Preference
    Model for Language Model Alignment", arXiv:2410.02197.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.general_preference import general_preference_loss
  >>> c, r = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])
  >>> float(general_preference_loss(c, r, temperature=1.0))  # -log sigmoid(1)
  0.3132...
  >>> float(general_preference_loss(c, c))  # s(a, a) = 0: log 2
  0.6931...
  """
  _reduction.check_reduction(reduction)
  temperature = _reduction.scalar_hyperparameter(temperature, "temperature")
  chosen = _check_embedding(chosen_embedding, "chosen_embedding")
  rejected = _check_embedding(rejected_embedding, "rejected_embedding")
  _reduction.check_same_shape(rejected, "rejected_embedding", chosen,
                              "chosen_embedding")
  batch = chosen.shape[0]
  valid = _reduction.validity_mask(mask, (batch,), "mask")
  arrays = [chosen, rejected]
  if block_scales is not None:
    block_scales = _check_block_scales(block_scales, chosen,
                                       "chosen_embedding")
    arrays.append(block_scales)
  dtype = _reduction.compute_dtype(*arrays)
  margin = _reduction.batch_vector(margin, "margin", batch,
                                   "chosen_embedding", allow_scalar=True)
  if weights is not None:
    weights = _reduction.batch_vector(weights, "weights", batch,
                                      "chosen_embedding")

  # Sanitise invalid rows before any computation (see `pair_inputs`).
  chosen = _reduction.sanitized_rows(chosen, valid, dtype)
  rejected = _reduction.sanitized_rows(rejected, valid, dtype)
  if block_scales is not None:
    block_scales = _reduction.sanitized_rows(block_scales, valid, dtype)
  margin = jnp.where(valid, margin.astype(dtype), 0)
  if normalize:
    chosen = _reduction.safe_l2_normalize(chosen)
    rejected = _reduction.safe_l2_normalize(rejected)

  score = _skew_score(chosen, rejected, block_scales)
  per_pair = -jax.nn.log_sigmoid((score - margin) / temperature)
  return _reduction.reduce_loss(
      per_pair, weights=weights, mask=valid, reduction=reduction)
