"""Rating (regression) reward-model losses and the HelpSteer2 attributes.

A multi-attribute head predicts one score per attribute (HelpSteer2: five
attributes rated 0..4); it is trained by regression on the ratings, and a
scalar reward is read out as a fixed linear combination of the attributes.
`joint_preference_regression_loss` mixes this regression with a Bradley-Terry
loss on preference pairs.

Conventions as in the rest of `rmjax.losses`: float32 computation (bfloat16
is upcast), masked entries replaced by 0 before computing, reduction through
`reduce_loss`. Nothing is jitted inside (callers jit, see `rmjax.losses`);
shape and dtype errors name the argument, eagerly or while tracing.
"""

import numbers
from typing import Optional, Sequence

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses.bradley_terry import bradley_terry_loss

HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence",
                         "complexity", "verbosity")
# Nemotron-4-340B-Reward model card: the weights [0, 0, 0, 0, 0.3, 0.74, 0.46,
# 0.47, -0.33] over its nine outputs, the last five being the HelpSteer2
# attributes in the order of `HELPSTEER2_ATTRIBUTES`.
HELPSTEER2_SCORE_WEIGHTS = (0.3, 0.74, 0.46, 0.47, -0.33)


def attribute_regression_loss(
    predictions: chex.Array,
    targets: chex.Array,
    *,
    attribute_mask: Optional[chex.Array] = None,
    weights: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    reduction: str = "mean",
) -> jnp.ndarray:
  """Mean squared error over the attributes present, per example.

  With `m_ba` the attribute mask (attribute a of example b is rated) and
  `n_b = sum_a m_ba`:

    loss_b = sum_a m_ba (predictions_ba - targets_ba)^2 / n_b   if n_b > 0
    loss_b = 0                                                  if n_b = 0

  Missing attributes contribute nothing to the value or the gradient (their
  targets may be junk, e.g. NaN). An example with no attribute present is
  *dropped from the valid set*, like a masked one; "mean" is the mean over the
  remaining valid examples of their per-example means. This is not the mean
  over all present (example, attribute) entries: an example with one rated
  attribute weighs as much as one with five.

  Sanity value: predictions (1, 2), targets (0, 0), both present -> 2.5.

  Args:
    predictions: [B, A] predicted attribute scores.
    targets: [B, A] rated attribute scores (HelpSteer2: 0..4, attributes in the
      order of `HELPSTEER2_ATTRIBUTES`).
    attribute_mask: optional [B, A] bool (or {0, 1}) mask of the attributes
      present. Default None: all present.
    weights: optional [B] per-example weights (>= 0 by convention, not
      checked); there are no per-attribute weights.
    mask: optional [B] bool (or {0, 1}) validity mask of the examples.
    reduction: "mean" (default; over valid examples with at least one
      attribute present), "sum" or "none".

  Returns:
    float32 scalar, or [B] float32 per-example losses for reduction="none".

  Raises:
    ValueError: bad `reduction`, or wrongly shaped inputs.
    TypeError: non-real-valued inputs.

  References:
    Wang et al. (2024), "HelpSteer2: Open-source dataset for training
    top-performing reward models", arXiv:2406.08673.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.regression import attribute_regression_loss
  >>> float(attribute_regression_loss(jnp.array([[1.0, 2.0]]),
  ...                                 jnp.zeros((1, 2))))  # (1 + 4) / 2
  2.5
  >>> # The second attribute is missing: (1 - 0)^2 / 1.
  >>> float(attribute_regression_loss(
  ...     jnp.array([[1.0, 2.0]]), jnp.array([[0.0, jnp.nan]]),
  ...     attribute_mask=jnp.array([[True, False]])))
  1.0
  """
  _reduction.check_reduction(reduction)
  return _attribute_regression_loss(
      _as_array_or_none(predictions), _as_array_or_none(targets),
      _as_array_or_none(attribute_mask), _as_array_or_none(weights),
      _as_array_or_none(mask), reduction=reduction)


def _as_array_or_none(x):
  return None if x is None else jnp.asarray(x)


def _attribute_regression_loss(predictions, targets, attribute_mask, weights,
                               mask, reduction):
  """The computation of `attribute_regression_loss`, with its checks."""
  predictions = _reduction.as_real_array(predictions, "predictions")
  targets = _reduction.as_real_array(targets, "targets")
  _reduction.check_rank(predictions, 2, "predictions", "[B, A]")
  _reduction.check_same_shape(targets, "targets", predictions, "predictions")
  batch_size = predictions.shape[0]
  example_valid = _reduction.validity_mask(mask, (batch_size,), "mask")
  present = _reduction.validity_mask(attribute_mask, predictions.shape,
                                     "attribute_mask")
  present &= example_valid[:, None]
  if weights is not None:
    weights = _reduction.as_real_array(weights, "weights")
    _reduction.check_rank(weights, 1, "weights", "[B]")
    if weights.shape[0] != batch_size:
      raise ValueError(
          f"`weights` must have shape [B] = ({batch_size},); got shape "
          f"{tuple(weights.shape)}.")
  dtype = _reduction.compute_dtype(predictions, targets)
  p = jnp.where(present, predictions.astype(dtype), 0)
  t = jnp.where(present, targets.astype(dtype), 0)
  num_present = jnp.sum(present, axis=1, dtype=dtype)
  per_example = jnp.sum(jnp.square(p - t), axis=1) / jnp.maximum(
      num_present, 1)
  valid = example_valid & (num_present > 0)
  return _reduction.reduce_loss(
      per_example, weights=weights, mask=valid, reduction=reduction)


def helpsteer2_attribute_score(
    attributes: chex.Array,
    weights: Sequence[float] | chex.Array = HELPSTEER2_SCORE_WEIGHTS,
) -> jnp.ndarray:
  """Scalar reward from attribute scores: a fixed linear combination.

    score_b = sum_a weights_a * attributes_ba

  The default weights are those recommended on the Nemotron-4-340B-Reward
  model card, in the order of `HELPSTEER2_ATTRIBUTES`: helpfulness 0.3,
  correctness 0.74, coherence 0.46, complexity 0.47, verbosity -0.33.

  Sanity value: (3, 3, 4, 2, 2) -> 0.9 + 2.22 + 1.84 + 0.94 - 0.66 = 5.24.

  Computed as an elementwise product and sum in float32 (not a matmul, whose
  default precision on TPU would round the inputs to bfloat16).

  Args:
    attributes: [B, A] attribute scores (predicted or rated).
    weights: [A] weights, default `HELPSTEER2_SCORE_WEIGHTS` (A = 5).

  Returns:
    float32 [B] scores.

  Raises:
    ValueError: wrongly shaped inputs.
    TypeError: non-real-valued inputs.

  References:
    NVIDIA (2024), Nemotron-4-340B-Reward model card,
    https://huggingface.co/nvidia/Nemotron-4-340B-Reward.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.regression import helpsteer2_attribute_score
  >>> float(helpsteer2_attribute_score(jnp.array([[3, 3, 4, 2, 2]]))[0])
  5.24...
  """
  return _helpsteer2_attribute_score(jnp.asarray(attributes),
                                     jnp.asarray(weights))


def _helpsteer2_attribute_score(attributes, weights):
  attributes = _reduction.as_real_array(attributes, "attributes")
  _reduction.check_rank(attributes, 2, "attributes", "[B, A]")
  weights = _reduction.as_real_array(weights, "weights")
  num_attributes = attributes.shape[1]
  if weights.shape != (num_attributes,):
    raise ValueError(
        f"`weights` must have shape [A] = ({num_attributes},), one weight per "
        f"attribute of `attributes`; got shape {tuple(weights.shape)}.")
  dtype = _reduction.compute_dtype(attributes, weights)
  return jnp.sum(attributes.astype(dtype) * weights.astype(dtype), axis=1)


def joint_preference_regression_loss(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    predictions: chex.Array,
    targets: chex.Array,
    *,
    bt_weight: float = 0.5,
    attribute_mask: Optional[chex.Array] = None,
    margin: chex.Numeric = 0.0,
    mask: Optional[chex.Array] = None,
    regression_mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Joint Bradley-Terry and attribute-regression loss.

    loss = lambda * BT + (1 - lambda) * MSE
    BT  = bradley_terry_loss(chosen_rewards, rejected_rewards, margin=margin,
                             mask=mask)                  (mean over pairs)
    MSE = attribute_regression_loss(predictions, targets,
                                    attribute_mask=attribute_mask,
                                    mask=regression_mask)  (mean over examples)

  with lambda = `bt_weight`. Each term is the "mean" of its own loss, so each
  is normalised by its own number of valid pairs / examples; a term with no
  valid entry is 0.

  HelpSteer2-Preference combines the two kinds of data sequentially, as we
  read the paper: a regression (SteerLM) reward model is trained on the
  ratings first, and the (scaled) Bradley-Terry model is initialised from it
  and trained on the preferences. This joint objective is our generalisation
  of that recipe, not the paper's method: lambda = 1 is BT alone, lambda = 0
  regression alone, and a schedule over lambda can reproduce the two stages.

  The pair batch and the regression batch are independent: `predictions`
  may have any number of rows B' (e.g. B' = 2B, the attribute predictions for
  the chosen and the rejected responses; `chosen_rewards` might then be
  `helpsteer2_attribute_score` of the chosen rows, or a separate scalar
  head).

  Args:
    chosen_rewards: [B] rewards of the preferred responses.
    rejected_rewards: [B] rewards of the dispreferred responses.
    predictions: [B', A] predicted attribute scores.
    targets: [B', A] rated attribute scores.
    bt_weight: Python float lambda in [0, 1] (default 0.5), checked eagerly.
    attribute_mask: optional [B', A] mask of the attributes present.
    margin: scalar or [B] BT margin (HelpSteer2-Preference: |strength|).
    mask: optional [B] validity mask of the pairs.
    regression_mask: optional [B'] validity mask of the regression examples.

  Returns:
    float32 scalar.

  Raises:
    ValueError: `bt_weight` outside [0, 1] or not a Python number, or
      wrongly shaped inputs.
    TypeError: non-real-valued inputs.

  References:
    Wang et al. (2024), "HelpSteer2-Preference: Complementing Ratings with
    Preferences", arXiv:2410.01257.

  >>> import jax.numpy as jnp
  >>> from rmjax.losses.regression import joint_preference_regression_loss
  >>> # 0.5 * log 2 + 0.5 * (1 + 4) / 2
  >>> float(joint_preference_regression_loss(
  ...     jnp.zeros(1), jnp.zeros(1), jnp.array([[1.0, 2.0]]),
  ...     jnp.zeros((1, 2))))
  1.5965...
  """
  if (isinstance(bt_weight, bool)
      or not isinstance(bt_weight, numbers.Real)
      or isinstance(bt_weight, jax.Array)):
    raise ValueError(
        "`bt_weight` must be a Python float in [0, 1]; got "
        f"{type(bt_weight).__name__} {bt_weight!r}.")
  bt_weight = float(bt_weight)
  if not 0.0 <= bt_weight <= 1.0:
    raise ValueError(f"`bt_weight` must be in [0, 1]; got {bt_weight!r}.")
  return _joint_preference_regression_loss(
      _as_array_or_none(chosen_rewards), _as_array_or_none(rejected_rewards),
      _as_array_or_none(predictions), _as_array_or_none(targets), bt_weight,
      _as_array_or_none(attribute_mask), _as_array_or_none(margin),
      _as_array_or_none(mask), _as_array_or_none(regression_mask))


def _joint_preference_regression_loss(chosen_rewards, rejected_rewards,
                                      predictions, targets, bt_weight,
                                      attribute_mask, margin, mask,
                                      regression_mask):
  bt = bradley_terry_loss(chosen_rewards, rejected_rewards, margin=margin,
                          mask=mask)
  predictions = _reduction.as_real_array(predictions, "predictions")
  _reduction.check_rank(predictions, 2, "predictions", "[B', A]")
  # Checked here so that a wrong shape is reported under its own name.
  regression_valid = _reduction.validity_mask(
      regression_mask, predictions.shape[:1], "regression_mask")
  mse = _attribute_regression_loss(predictions, targets, attribute_mask,
                                   None, regression_valid, reduction="mean")
  return bt_weight * bt + (1.0 - bt_weight) * mse
