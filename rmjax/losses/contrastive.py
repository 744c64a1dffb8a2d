"""In-batch contrastive losses over reward-model representations.

`info_nce_loss` is the SimCSE / InfoNCE objective with in-batch negatives.
Secrets of RLHF II (Wang et al. 2024, published at EMNLP 2024 as "Improving
Discriminative Capability of Reward Models in RLHF Using Contrastive
Learning") adds such an unsupervised contrastive loss, weighted by beta, to the
ranking loss of the reward model; SimCSE is applied there to single-response
representations and to chosen-minus-rejected difference representations, the
positive of each row being a second (dropout-)view of the same input:

  loss = bradley_terry_loss(...) + beta * info_nce_loss(view_1, view_2)

The paper's beta and temperature could not be confirmed with the sources at
hand: beta is left to the caller and the temperature defaults to SimCSE's
0.05 (confirmed in the SimCSE authors' code: `--temp 0.05`, logits =
cos_sim / temp, cross-entropy with labels = arange(B)).

In-batch InfoNCE couples every pair of rows; this is the plain single-device
[B, B] form.
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction


def _check_representations(x, name: str) -> jnp.ndarray:
  x = _reduction.as_real_array(x, name)
  _reduction.check_rank(x, 2, name, "[B, D]")
  return x


def info_nce_loss(
    anchors: chex.Array,
    positives: chex.Array,
    *,
    temperature: chex.Numeric = 0.05,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """InfoNCE / SimCSE loss with in-batch negatives and cosine similarity.

  With S_ij = cos(anchors_i, positives_j) / tau over the valid rows V:

    loss_i = -log [ exp(S_ii) / sum_{j in V} exp(S_ij) ]
           = logsumexp_{j in V} S_ij - S_ii

  i.e. cross-entropy of row i of S with target i: every other valid positive
  is a negative for anchor i. Invalid rows are excluded both as anchors (no
  loss) and as negatives (dropped from every row's logsumexp), and their
  inputs are replaced before computing, so padding with junk (even inf or
  NaN) changes neither value nor gradient. One direction only (anchors ->
  positives), as in SimCSE; average with the swapped call for a symmetric
  loss. Zero vectors have cosine 0 (no NaN).

  Sanity value: B = 2 orthonormal rows with positives = anchors, tau = 1:
  loss = log(e + 1) - 1 = 0.3133 per row. With one valid row the loss is 0.

  Args:
    anchors: [B, D] representations (first view).
    positives: [B, D] representations (second view), row i the positive of
      anchor i.
    temperature: tau > 0 (default 0.05, SimCSE): a Python number (checked
      eagerly) or a scalar array.
    mask: optional [B] bool (or {0, 1}) validity mask.
    reduction: "mean" (default; over valid anchors), "sum" or "none".

  Returns:
    float32 scalar, or [B] float32 per-anchor losses for reduction="none".

  Raises:
    ValueError: bad `temperature` or `reduction`, or wrongly shaped inputs.
    TypeError: non-real-valued inputs.

  References:
    Gao, Yao & Chen (2021), "SimCSE: Simple Contrastive Learning of Sentence
    Embeddings", arXiv:2104.08821.
    van den Oord, Li & Vinyals (2018), "Representation Learning with
    Contrastive Predictive Coding" (InfoNCE).
    Wang et al. (2024), "Secrets of RLHF in Large Language Models Part II:
    Reward Modeling", arXiv:2401.06080 (use as a reward-model regulariser).

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.contrastive import info_nce_loss
  >>> x = jnp.eye(2)
  >>> float(info_nce_loss(x, x, temperature=1.0))  # log(e + 1) - 1
  0.3132...
  >>> float(info_nce_loss(x, x, temperature=1.0, mask=jnp.array([1, 0])))
  0.0
  """
  _reduction.check_reduction(reduction)
  temperature = _reduction.scalar_hyperparameter(temperature, "temperature")
  anchors = _check_representations(anchors, "anchors")
  positives = _reduction.as_real_array(positives, "positives")
  _reduction.check_same_shape(positives, "positives", anchors, "anchors")
  batch = anchors.shape[0]
  valid = _reduction.validity_mask(mask, (batch,), "mask")
  dtype = _reduction.compute_dtype(anchors, positives)
  anchors = _reduction.sanitized_rows(anchors, valid, dtype)
  positives = _reduction.sanitized_rows(positives, valid, dtype)

  a = _reduction.safe_l2_normalize(anchors)
  p = _reduction.safe_l2_normalize(positives)
  logits = (a @ p.T) / temperature  # [B, B]
  # Invalid positives are no negatives; invalid anchors get a finite dummy
  # row (their loss is masked out), so no -inf - -inf = NaN appears anywhere.
  logits = jnp.where(valid[None, :], logits, -jnp.inf)
  logits = jnp.where(valid[:, None], logits, 0)
  per_anchor = jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits)
  return _reduction.reduce_loss(per_anchor, mask=valid, reduction=reduction)
