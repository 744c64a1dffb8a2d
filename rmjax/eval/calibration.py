"""Temperature scaling of reward margins (Guo et al., 2017, for pairs).

A reward model's Bradley-Terry probability P(chosen > rejected) =
sigmoid(margin) is often over- or under-confident. One scale s > 0 (the
inverse of a temperature), fitted on held-out pairs, turns it into
sigmoid(s * margin). Measure the effect with the existing
`pairwise_calibration_error` / `pairwise_reliability_bins` of
`apply_temperature(margins, scale)` against zeros.
"""

import math
from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from rmjax.losses import _reduction


class TemperatureFit(NamedTuple):
  """The result of `fit_temperature`.

  Attributes:
    scale: float32 scalar s > 0 (the inverse temperature).
    nll_before: mean pairwise NLL at s = 1.
    nll_after: mean pairwise NLL at s = scale.
    at_bound: bool scalar, True when the optimum lies at or beyond `lower` or
      `upper` and `scale` is that bound.
  """
  scale: jnp.ndarray
  nll_before: jnp.ndarray
  nll_after: jnp.ndarray
  at_bound: jnp.ndarray


def _check_bound(x, name: str) -> float:
  if (isinstance(x, bool) or not isinstance(x, (int, float))
      or not 0 < x < math.inf):
    raise ValueError(
        f"`{name}` must be a finite Python number > 0; got "
        f"{type(x).__name__} {x!r}.")
  return float(x)


def fit_temperature(
    margins: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    lower: float = 1e-3,
    upper: float = 1e3,
    num_iterations: int = 100,
) -> TemperatureFit:
  """The scale s minimising the pairwise NLL of the scaled margins.

    L(s)  = mean_i softplus(-s m_i) = mean_i -log sigmoid(s m_i)
    L'(s) = mean_i -m_i sigmoid(-s m_i)

  with m_i = r(chosen_i) - r(rejected_i) and the label "chosen is preferred".
  L is convex in s (L'' = mean_i m_i^2 sigmoid'(s m_i) >= 0), so the optimum
  is found by bisection on the sign of L' over log s in [log lower,
  log upper], `num_iterations` halvings in a `lax.fori_loop` (jit-safe).

  The optimum can lie outside the bracket: if every valid margin is > 0, L
  decreases for ever (s -> inf) and `scale` is `upper`; if the margins
  favour the rejected side overall (L'(lower) >= 0), `scale` is `lower`. Both
  set `at_bound`: the scale is then not a calibrated fit, and is not clipped
  silently. If every valid margin is 0 (or none is valid), L is flat and
  `scale` is 1.

  Args:
    margins: [N] reward margins, chosen minus rejected.
    mask: optional [N] validity mask.
    lower: the smallest scale, a Python number > 0 (default 1e-3).
    upper: the largest scale, a Python number > lower (default 1e3).
    num_iterations: static Python int > 0, bisection steps (default 100).

  Returns:
    `TemperatureFit(scale, nll_before, nll_after, at_bound)`, float32 scalars
    and a bool scalar; all NaN (at_bound False) if a valid margin is NaN.

  References:
    Guo et al. (2017), "On Calibration of Modern Neural Networks".

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import fit_temperature
  >>> fit = fit_temperature(jnp.array([2.0, 1.0, -1.0, 3.0, -0.5]))
  >>> bool(fit.at_bound), bool(fit.nll_after <= fit.nll_before)
  (False, True)
  >>> bool(fit_temperature(jnp.array([1.0, 2.0])).at_bound)  # all > 0
  True
  """
  lower = _check_bound(lower, "lower")
  upper = _check_bound(upper, "upper")
  if not lower < upper:
    raise ValueError(
        f"`lower` must be < `upper`; got lower={lower}, upper={upper}.")
  num_iterations = _reduction.check_positive_int(num_iterations,
                                                 "num_iterations")
  (m,), valid, dtype = _reduction.sanitized_inputs(
      [("margins", margins)], mask, "[N]")
  has_nan = jnp.any(valid & jnp.isnan(m))
  m = jnp.where(has_nan, 0, m)  # keep the loop finite; the result is NaN

  def nll(scale):
    return _reduction.reduce_loss(jax.nn.softplus(-scale * m), mask=valid)

  def slope(scale):
    return _reduction.reduce_loss(-m * jax.nn.sigmoid(-scale * m), mask=valid)

  def halve(_, bracket):
    lo, hi = bracket
    mid = (lo + hi) / 2
    rising = slope(jnp.exp(mid)) > 0
    return jnp.where(rising, lo, mid), jnp.where(rising, mid, hi)

  log_lo = jnp.asarray(math.log(lower), dtype)
  log_hi = jnp.asarray(math.log(upper), dtype)
  lo, hi = jax.lax.fori_loop(0, num_iterations, halve, (log_lo, log_hi))
  # Non-strict: a slope that underflows to 0 at a bound (every margin > 0 at
  # s = upper) still means the optimum is there or beyond.
  below = slope(jnp.asarray(lower, dtype)) >= 0
  beyond = slope(jnp.asarray(upper, dtype)) <= 0
  flat = ~jnp.any(valid & (m != 0))
  scale = jnp.where(below, lower, jnp.where(beyond, upper, jnp.exp((lo + hi) / 2)))
  scale = jnp.where(flat, 1.0, scale).astype(dtype)
  at_bound = (below | beyond) & ~flat & ~has_nan
  nan_if = lambda x: jnp.where(has_nan, jnp.nan, x)
  return TemperatureFit(scale=nan_if(scale),
                        nll_before=nan_if(nll(jnp.asarray(1.0, dtype))),
                        nll_after=nan_if(nll(scale)),
                        at_bound=at_bound)


def apply_temperature(margins: chex.Array, scale: chex.Array) -> jnp.ndarray:
  """Scaled margins s * m, whose sigmoid is the calibrated P(chosen > rejected).

  Args:
    margins: [N] (or any shape) reward margins, chosen minus rejected.
    scale: scalar, e.g. `fit_temperature(...).scale`.

  Returns:
    `margins * scale`, float32 (at least).

  >>> import jax.numpy as jnp
  >>> from rmjax.eval import apply_temperature
  >>> apply_temperature(jnp.array([1.0, -2.0]), 0.5).tolist()
  [0.5, -1.0]
  """
  margins = _reduction.as_real_array(margins, "margins")
  scale = _reduction.as_real_array(scale, "scale")
  _reduction.check_rank(scale, 0, "scale", "[] (a scalar)")
  dtype = _reduction.compute_dtype(margins, scale)
  return margins.astype(dtype) * scale.astype(dtype)
