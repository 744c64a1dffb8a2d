"""Metrics over the scores of (chosen, rejected) pairs, and calibration.

Pure jnp; every function takes an optional validity `mask` with the package's
convention (bool or {0, 1}, nonzero = valid; invalid entries are ignored even
when they hold inf or NaN) and returns float32. A batch with no valid entries
gives 0 (as `rmjax.losses.reduce_loss` does); to average a metric over several
batches, weight each batch by its number of valid pairs.

Bad values that cannot be caught at trace time (a NaN reward in a valid pair,
a probability or label outside [0, 1]) turn the result into NaN rather than
being silently dropped or clipped.
"""

import numbers
from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction


def _nan_if(bad: jnp.ndarray, value: jnp.ndarray) -> jnp.ndarray:
  return jnp.where(bad, jnp.nan, value)


def _check_num_bins(num_bins) -> int:
  if (isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral)
      or isinstance(num_bins, jax.Array)):
    raise ValueError(
        "`num_bins` must be a static Python int >= 1; got "
        f"{type(num_bins).__name__} {num_bins!r}.")
  if num_bins < 1:
    raise ValueError(f"`num_bins` must be >= 1; got {num_bins}.")
  return int(num_bins)


def pairwise_accuracy(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Fraction of valid pairs ranked correctly, ties counting as wrong.

    accuracy = sum_i v_i 1[chosen_i > rejected_i] / max(sum_i v_i, 1)

  Args:
    chosen_rewards: [B] scores of the preferred responses.
    rejected_rewards: [B] scores of the dispreferred responses.
    mask: optional [B] validity mask.

  Returns:
    float32 scalar in [0, 1]; 0 if no pair is valid; NaN if a valid pair has a
    NaN score.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import pairwise_accuracy
  >>> float(pairwise_accuracy(jnp.array([2.0, 1.0, 0.5, 3.0]),
  ...                         jnp.array([1.0, 1.0, 1.5, 0.0])))  # tie: wrong
  0.5
  """
  chosen, rejected, valid, dtype = _reduction.pair_inputs(
      chosen_rewards, rejected_rewards, mask)
  correct = valid & (chosen > rejected)
  num_valid = jnp.sum(valid, dtype=dtype)
  accuracy = jnp.sum(correct, dtype=dtype) / jnp.maximum(num_valid, 1)
  has_nan = jnp.any(valid & (jnp.isnan(chosen) | jnp.isnan(rejected)))
  return _nan_if(has_nan, accuracy)


def pairwise_correct(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Per-pair correctness, ties counting as wrong (RewardBench's rule).

    correct_i = 1[chosen_i > rejected_i]   (0 for an invalid pair)

  The per-row form of `pairwise_accuracy`, for per-subset accuracies with
  `group_mean`.

  Args:
    chosen_rewards: [B] scores of the preferred responses.
    rejected_rewards: [B] scores of the dispreferred responses.
    mask: optional [B] validity mask.

  Returns:
    [B] float32 in {0, 1}; NaN where a valid pair has a NaN score.

  References:
    Lambert et al. (2024), "RewardBench: Evaluating Reward Models for Language
    Modeling".

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import pairwise_correct
  >>> pairwise_correct(jnp.array([2.0, 1.0]), jnp.array([1.0, 1.0])).tolist()
  [1.0, 0.0]
  """
  chosen, rejected, valid, dtype = _reduction.pair_inputs(
      chosen_rewards, rejected_rewards, mask)
  correct = (valid & (chosen > rejected)).astype(dtype)
  has_nan = valid & (jnp.isnan(chosen) | jnp.isnan(rejected))
  return _nan_if(has_nan, correct)


def mean_reward_margin(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Mean reward gap over valid pairs.

    margin = sum_i v_i (chosen_i - rejected_i) / max(sum_i v_i, 1)

  Args:
    chosen_rewards: [B] scores of the preferred responses.
    rejected_rewards: [B] scores of the dispreferred responses.
    mask: optional [B] validity mask.

  Returns:
    float32 scalar; 0 if no pair is valid.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import mean_reward_margin
  >>> float(mean_reward_margin(jnp.array([2.0, 1.0, 9.0]),
  ...                          jnp.array([1.0, 3.0, 0.0]),
  ...                          mask=jnp.array([True, True, False])))
  -0.5
  """
  chosen, rejected, valid, _ = _reduction.pair_inputs(
      chosen_rewards, rejected_rewards, mask)
  return _reduction.reduce_loss(chosen - rejected, mask=valid,
                                reduction="mean")


def _calibration_inputs(probs, labels, mask):
  """Checks probs/labels/mask; returns (probs, labels, valid, out_of_range)."""
  probs = _reduction.as_real_array(probs, "probs")
  _reduction.check_rank(probs, 1, "probs", "[N]")
  labels = jnp.asarray(labels)
  if labels.dtype == jnp.bool_:
    labels = labels.astype(jnp.float32)
  labels = _reduction.as_real_array(labels, "labels")
  _reduction.check_same_shape(labels, "labels", probs, "probs")
  valid = _reduction.validity_mask(mask, probs.shape, "mask")
  dtype = _reduction.compute_dtype(probs, labels)
  probs = probs.astype(dtype)
  labels = labels.astype(dtype)
  # Written so that NaN counts as out of range.
  out_of_range = jnp.any(valid & ~((probs >= 0) & (probs <= 1)
                                   & (labels >= 0) & (labels <= 1)))
  probs = jnp.where(valid, probs, 0)
  labels = jnp.where(valid, labels, 0)
  return probs, labels, valid, out_of_range


def _bin_sums(probs, labels, valid, num_bins):
  """Per-bin sums of probs, labels and counts; bin k = floor(p * num_bins)."""
  # p == 1.0 would land in bin num_bins: it belongs to the last, closed bin.
  # Nothing else is moved: out-of-range probs have been caught (NaN result).
  index = jnp.minimum(jnp.floor(probs * num_bins).astype(jnp.int32),
                      num_bins - 1)
  index = jnp.where(valid & (index >= 0), index, 0)
  weight = valid.astype(probs.dtype)
  zeros = jnp.zeros((num_bins,), probs.dtype)
  sum_probs = zeros.at[index].add(weight * probs)
  sum_labels = zeros.at[index].add(weight * labels)
  counts = zeros.at[index].add(weight)
  return sum_probs, sum_labels, counts


def reliability_bins(
    probs: chex.Array,
    labels: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    num_bins: int = 10,
) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Per-bin confidence, accuracy and count for a reliability diagram.

  Bins are uniform on [0, 1]: bin k (0-based) holds the valid predictions with
  `floor(p * num_bins) == k` (computed in float32), i.e. [k/n, (k+1)/n), except
  the last bin, which is closed: p = 1.0 goes to bin `num_bins - 1`.

    bin_count_k      = #{i valid in bin k}
    bin_confidence_k = sum_{i in k} p_i / bin_count_k   (0 for an empty bin)
    bin_accuracy_k   = sum_{i in k} y_i / bin_count_k   (0 for an empty bin)

  A perfectly calibrated predictor has bin_confidence == bin_accuracy in every
  non-empty bin. When plotting, skip bins with bin_count == 0.

  Args:
    probs: [N] predicted probabilities of the event, in [0, 1].
    labels: [N] outcomes, bool or in {0, 1} (soft labels in [0, 1] also work).
    mask: optional [N] validity mask.
    num_bins: static Python int >= 1 (default 10).

  Returns:
    (bin_confidence [num_bins], bin_accuracy [num_bins], bin_count [num_bins]),
    all float32. All three are NaN if a valid prob or label is outside [0, 1]
    or NaN.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import reliability_bins
  >>> conf, acc, count = reliability_bins(
  ...     jnp.array([0.1, 0.2, 0.9, 1.0]), jnp.array([0, 1, 1, 1]), num_bins=2)
  >>> conf.tolist(), acc.tolist(), count.tolist()
  ([0.15..., 0.95...], [0.5, 1.0], [2.0, 2.0])
  """
  num_bins = _check_num_bins(num_bins)
  probs, labels, valid, bad = _calibration_inputs(probs, labels, mask)
  sum_probs, sum_labels, counts = _bin_sums(probs, labels, valid, num_bins)
  denominator = jnp.maximum(counts, 1)
  return (_nan_if(bad, sum_probs / denominator),
          _nan_if(bad, sum_labels / denominator),
          _nan_if(bad, counts))


def expected_calibration_error(
    probs: chex.Array,
    labels: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    num_bins: int = 10,
) -> jnp.ndarray:
  """Expected calibration error with uniform bins.

    ECE = sum_b | sum_{i in b} p_i - sum_{i in b} y_i | / N
        = sum_b (n_b / N) | confidence_b - accuracy_b |

  with N the number of valid predictions and the bins of `reliability_bins`
  (uniform on [0, 1], p = 1.0 in the last bin). 0 if nothing is valid.

  Args:
    probs: [N] predicted probabilities of the event, in [0, 1].
    labels: [N] outcomes, bool or in {0, 1} (soft labels in [0, 1] also work).
    mask: optional [N] validity mask.
    num_bins: static Python int >= 1 (default 10).

  Returns:
    float32 scalar in [0, 1]; NaN if a valid prob or label is outside [0, 1]
    or NaN.

  References:
    Naeini et al. (2015), "Obtaining Well Calibrated Probabilities Using
    Bayesian Binning"; Guo et al. (2017), "On Calibration of Modern Neural
    Networks".

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import expected_calibration_error
  >>> # One bin holding p = 0.9 twice, one hit: |1.8 - 1| / 2.
  >>> float(expected_calibration_error(jnp.array([0.9, 0.9]),
  ...                                  jnp.array([1, 0])))
  0.4...
  """
  num_bins = _check_num_bins(num_bins)
  probs, labels, valid, bad = _calibration_inputs(probs, labels, mask)
  sum_probs, sum_labels, _ = _bin_sums(probs, labels, valid, num_bins)
  num_valid = jnp.sum(valid, dtype=probs.dtype)
  ece = jnp.sum(jnp.abs(sum_probs - sum_labels)) / jnp.maximum(num_valid, 1)
  return _nan_if(bad, ece)


def pairwise_calibration_error(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    num_bins: int = 10,
) -> jnp.ndarray:
  """ECE of the Bradley-Terry probabilities of a reward model (MORE).

  Each valid pair gives two ordered pairs, one per orientation:

    (p = sigmoid(Delta_i),  y = 1)   and   (p = sigmoid(-Delta_i), y = 0),

  with Delta_i = chosen_i - rejected_i, and the result is
  `expected_calibration_error` over these 2 * (number of valid pairs)
  predictions (uniform bins on [0, 1]):

    ECE = sum_b | sum_{j in b} p_j - sum_{j in b} y_j | / N,  N = 2 * #valid.

  This is MORE's definition over ordered pairs (i, j) with distinct labels,
  p = sigmoid(r_j - r_i), y = 1[label_j > label_i]: each unordered pair enters
  in both orders.

  Args:
    chosen_rewards: [B] scores of the preferred responses.
    rejected_rewards: [B] scores of the dispreferred responses.
    mask: optional [B] validity mask.
    num_bins: static Python int >= 1 (default 10).

  Returns:
    float32 scalar; 0 if no pair is valid; NaN if a valid pair has a NaN score.

  References:
    Zeng et al. (2023), "On Diversified Preferences of Large Language Model
    Alignment" (MORE), arXiv:2312.07401.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import pairwise_calibration_error
  >>> # One pair with sigmoid(Delta) = 0.8: (|0.8 - 1| + |0.2 - 0|) / 2.
  >>> float(pairwise_calibration_error(jnp.log(jnp.array([4.0])),
  ...                                  jnp.zeros(1)))
  0.2...
  """
  num_bins = _check_num_bins(num_bins)
  probs, labels, valid = _ordered_pair_predictions(chosen_rewards, rejected_rewards, mask)
  return expected_calibration_error(probs, labels, mask=valid, num_bins=num_bins)


def pairwise_reliability_bins(
    chosen_rewards: chex.Array,
    rejected_rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    num_bins: int = 10,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """`reliability_bins` of the ordered pairs of `pairwise_calibration_error`.

  Args:
    chosen_rewards: [B] scores of the preferred responses.
    rejected_rewards: [B] scores of the dispreferred responses.
    mask: optional [B] validity mask.
    num_bins: static Python int >= 1 (default 10).

  Returns:
    (bin_confidence, bin_accuracy, bin_count), each [num_bins] float32, for a reliability
    diagram of the model's Bradley-Terry probabilities.

  >>> import jax.numpy as jnp
  >>> conf, acc, count = pairwise_reliability_bins(jnp.log(jnp.array([4.0])),
  ...                                              jnp.zeros(1), num_bins=5)
  >>> [float(c) for c in count]  # p = 0.2 (label 0) and p = 0.8 (label 1)
  [0.0, 1.0, 0.0, 0.0, 1.0]
  """
  num_bins = _check_num_bins(num_bins)
  probs, labels, valid = _ordered_pair_predictions(chosen_rewards, rejected_rewards, mask)
  return reliability_bins(probs, labels, mask=valid, num_bins=num_bins)


def _ordered_pair_predictions(chosen_rewards, rejected_rewards, mask):
  """[2B] (p, y, valid): (sigmoid(Delta), 1) and (sigmoid(-Delta), 0) for every pair."""
  chosen, rejected, valid, dtype = _reduction.pair_inputs(
      chosen_rewards, rejected_rewards, mask)
  delta = chosen - rejected
  probs = jnp.concatenate([jax.nn.sigmoid(delta), jax.nn.sigmoid(-delta)])
  labels = jnp.concatenate([jnp.ones_like(delta), jnp.zeros_like(delta)])
  return probs.astype(dtype), labels, jnp.concatenate([valid, valid])


def bayes_optimal_pairwise_accuracy(
    preference_probs: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Best achievable expected pairwise accuracy under noisy labels.

    acc* = sum_i v_i max(p_i, 1 - p_i) / max(sum_i v_i, 1)

  If pair i's label is drawn with P(label = chosen) = p_i, no predictor can
  expect more than max(p_i, 1 - p_i) on it (predict the likelier side). The
  ceiling against which a reward model's accuracy on synthetic data with known
  preference probabilities should be read.

  Args:
    preference_probs: [B] probabilities p_i in [0, 1] that the labelled-chosen
      response is preferred.
    mask: optional [B] validity mask.

  Returns:
    float32 scalar in [0.5, 1] (0 if nothing is valid); NaN if a valid p is
    outside [0, 1] or NaN.

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import bayes_optimal_pairwise_accuracy
  >>> float(bayes_optimal_pairwise_accuracy(jnp.array([0.9, 0.2, 0.5])))
  0.7333...
  """
  probs = _reduction.as_real_array(preference_probs, "preference_probs")
  _reduction.check_rank(probs, 1, "preference_probs", "[B]")
  valid = _reduction.validity_mask(mask, probs.shape, "mask")
  probs = probs.astype(_reduction.compute_dtype(probs))
  out_of_range = jnp.any(valid & ~((probs >= 0) & (probs <= 1)))
  probs = jnp.where(valid, probs, 0.5)
  accuracy = _reduction.reduce_loss(
      jnp.maximum(probs, 1 - probs), mask=valid, reduction="mean")
  return _nan_if(out_of_range, accuracy)
