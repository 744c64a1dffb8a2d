"""Tests for the benchmark scoring rules of rmjax.eval.

Hand-computed values on tiny fixtures (each computation in a comment), plain
numpy references on random inputs for the style matrix and the Ties score,
constant scorers pinned, jit against eager, and argument errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import eval as rm_eval
from rmjax.eval import group_mean
from rmjax.eval import pairwise_correct


def _close(x, expected, tol=1e-6):
  np.testing.assert_allclose(np.asarray(x), expected, rtol=tol, atol=tol)


# --------------------------------------------------------------------------
# group_mean and pairwise_correct


def test_group_mean_hand_values_empty_group_and_mask():
  values = jnp.array([1.0, 0.0, 0.5, jnp.nan, 2.0])
  ids = jnp.array([0, 0, 2, 1, 7])  # row 4's id is out of range but masked
  mask = jnp.array([True, True, True, False, False])
  fn = jax.jit(group_mean, static_argnums=2)
  means, counts = fn(values, ids, 4, mask=mask)
  # group 0: (1 + 0) / 2; group 1: only a masked row -> empty; group 2: 0.5;
  # group 3: no row -> empty. Empty groups: mean 0, count 0.
  _close(means, [0.5, 0.0, 0.5, 0.0])
  _close(counts, [2.0, 0.0, 1.0, 0.0])
  assert means.dtype == jnp.float32 and counts.dtype == jnp.float32
  eager = group_mean(values, ids, 4, mask=mask)
  _close(eager[0], means)


def test_group_mean_bad_values():
  # A NaN value spoils its own group only; a valid out-of-range id, all.
  means, _ = group_mean(jnp.array([jnp.nan, 1.0]), jnp.array([0, 1]), 2)
  assert np.isnan(means[0]) and float(means[1]) == 1.0
  means, counts = group_mean(jnp.ones(2), jnp.array([0, 2]), 2)
  assert np.all(np.isnan(means)) and np.all(np.isnan(counts))


def test_group_mean_argument_errors():
  with pytest.raises(ValueError, match="`num_groups`.*static Python int"):
    group_mean(jnp.ones(2), jnp.zeros(2, jnp.int32), 2.0)
  with pytest.raises(ValueError, match="`num_groups`.*static Python int"):
    group_mean(jnp.ones(2), jnp.zeros(2, jnp.int32), jnp.array(2))
  with pytest.raises(ValueError, match="`num_groups` must be >= 1"):
    group_mean(jnp.ones(2), jnp.zeros(2, jnp.int32), 0)
  with pytest.raises(TypeError, match="`group_ids`.*integer"):
    group_mean(jnp.ones(2), jnp.zeros(2), 2)
  with pytest.raises(ValueError, match="`group_ids`.*same shape"):
    group_mean(jnp.ones(2), jnp.zeros(3, jnp.int32), 2)
  with pytest.raises(ValueError, match=r"`values`.*\[N\]"):
    group_mean(jnp.ones((2, 2)), jnp.zeros(2, jnp.int32), 2)


def test_pairwise_correct_ties_wrong_and_nan():
  out = jax.jit(pairwise_correct)(jnp.array([2.0, 1.0, 0.0, jnp.nan]),
                                  jnp.array([1.0, 1.0, 1.0, 0.0]),
                                  mask=jnp.array([1, 1, 1, 1]))
  # 2 > 1 right; 1 = 1 tie wrong; 0 < 1 wrong; NaN row NaN.
  _close(out[:3], [1.0, 0.0, 0.0])
  assert np.isnan(out[3])
  masked = pairwise_correct(jnp.array([jnp.nan]), jnp.zeros(1),
                            mask=jnp.array([False]))
  _close(masked, [0.0])
