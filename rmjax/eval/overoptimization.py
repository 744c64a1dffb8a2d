"""Reward-model overoptimisation over an enumerable response set (numpy, float64, exact).

The machinery of Gao et al.'s and Coste et al.'s overoptimisation curves when each prompt's
responses can be listed (R of them, with a known reference policy pi_0(y | x) [P, R]): the exact
law of best-of-n and its KL, the exact KL-regularised optimum pi* ~ pi_0 exp(u / beta) and its
KL, exact KL / win rates / quantiles under pi_0, and the least-squares fits of Gao et al.'s
functional forms of the gold reward against d = sqrt(KL).

Layout: distributions are [..., P, R] (P prompts, R responses, rows sum to 1); per-prompt
quantities are [..., P]; "mean KL" is the mean over prompts of the per-prompt KL (what a policy
trained on all prompts with one coefficient spends). Everything is computed in float64 numpy.

References:
  Gao, Schulman & Hilton (2022), "Scaling Laws for Reward Model Overoptimization",
  arXiv:2210.10760 (best-of-n and RL forms, d = sqrt(KL)).
  Stiennon et al. (2020), "Learning to summarize from human feedback", arXiv:2009.01325
  (KL of best-of-n, log n - (n - 1) / n).
  Coste et al. (2024), "Reward Model Ensembles Help Mitigate Overoptimization", ICLR.
  Rafailov et al. (2023), "Direct Preference Optimization", arXiv:2305.18290 (the KL-regularised
  optimum pi* = pi_0 exp(r / beta) / Z).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np


def _distribution(pi, name):
  pi = np.asarray(pi, np.float64)
  if pi.ndim < 1 or pi.shape[-1] < 1:
    raise ValueError(f"`{name}` must be [..., R] probabilities with R >= 1; got shape "
                     f"{pi.shape}.")
  if np.any(pi < 0) or not np.all(np.isfinite(pi)):
    raise ValueError(f"`{name}` must hold finite probabilities >= 0; got min {pi.min()}.")
  sums = pi.sum(-1)
  if not np.allclose(sums, 1.0, atol=1e-6):
    raise ValueError(f"the rows of `{name}` must sum to 1; got sums in [{sums.min()}, "
                     f"{sums.max()}].")
  return pi


def _scores(u, pi, name):
  u = np.asarray(u, np.float64)
  if u.shape != pi.shape:
    raise ValueError(f"`{name}` must have pi0's shape {pi.shape}; got {u.shape}.")
  if not np.all(np.isfinite(u)):
    raise ValueError(f"`{name}` must be finite.")
  return u


def best_of_n_kl(n) -> np.ndarray:
  """Analytic KL(best-of-n || pi_0) = log n - (n - 1) / n (continuous rewards, no ties).

  It is an upper bound on the exact KL over a finite response set (`best_of_n_distribution`).

  Args:
    n: int or array of ints >= 1.

  Returns:
    float64 array of n's shape (0 at n = 1).

  References:
    Stiennon et al. (2020), arXiv:2009.01325, appendix; Gao et al. (2022), arXiv:2210.10760.

  >>> best_of_n_kl(np.array([1, 2, 4])).round(4).tolist()
  [0.0, 0.1931, 0.6363]
  """
  n = np.asarray(n, np.float64)
  if np.any(n < 1):
    raise ValueError(f"`n` must be >= 1; got {n}.")
  return np.log(n) - (n - 1) / n


def kl_divergence(q, p) -> np.ndarray:
  """Exact KL(q || p) = sum_y q(y) log(q(y) / p(y)) over the last axis (0 log 0 = 0).

  Args:
    q: [..., R] probabilities.
    p: [..., R] probabilities (broadcastable to q); p(y) > 0 wherever q(y) > 0.

  Returns:
    [...] float64 KL (>= 0; +inf if q puts mass where p has none).

  >>> float(kl_divergence(np.array([0.5, 0.5]), np.array([0.25, 0.75])).round(4))
  0.1438
  """
  q = np.asarray(q, np.float64)
  p = np.asarray(p, np.float64)
  support = q > 0
  with np.errstate(divide="ignore"):
    terms = np.where(support, q * (np.log(np.where(support, q, 1.0))
                                   - np.log(np.where(support, p, 1.0))), 0.0)
    terms = np.where(support & (p <= 0), np.inf, terms)
  return terms.sum(-1)


def best_of_n_distribution(pi0, proxy, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Exact law of the best-of-n pick over an enumerable set, and its exact KL to pi_0.

  Draw y_1..y_n iid from pi_0(. | x) and keep the one with the highest proxy score. Sort the
  responses by proxy score and group equal scores; with F(g) = pi_0(score <= score of group g)
  and F(g-) = pi_0(score < score of g), the best draw falls in group g with probability
  F(g)^n - F(g-)^n. Ties are broken uniformly at random among the tied draws, so a group's
  probability is split in proportion to pi_0 inside the group:

    P(pick y) = (F(y)^n - F(y-)^n) * pi_0(y) / pi_0(group of y)

  With no ties this is the classical F(y)^n - F(y-)^n. The exact KL(P || pi_0) is <= the
  analytic log n - (n - 1) / n (`best_of_n_kl`), with equality only in the continuous limit.

  Args:
    pi0: [P, R] (or [R]) reference probabilities, rows summing to 1.
    proxy: scores of the responses, pi0's shape.
    n: int >= 1 (n = 1 returns pi0 exactly).

  Returns:
    (probs [P, R], kl [P]) float64.

  References:
    Gao et al. (2022), arXiv:2210.10760 (best-of-n as an optimiser of a proxy);
    Beirami et al. (2024), "Theoretical guarantees on the best-of-n alignment policy",
    arXiv:2401.01879 (the exact law and its KL bound).

  >>> pi0 = np.array([0.5, 0.25, 0.25])
  >>> q, kl = best_of_n_distribution(pi0, np.array([0.0, 1.0, 2.0]), 2)
  >>> q.tolist()  # F = (0.5, 0.75, 1): 0.25, 0.5625 - 0.25, 1 - 0.5625
  [0.25, 0.3125, 0.4375]
  """
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"`n` must be an int >= 1; got {n!r}.")
  pi0 = _distribution(pi0, "pi0")
  proxy = _scores(proxy, pi0, "proxy")
  if n == 1:
    return pi0.copy(), np.zeros(pi0.shape[:-1])
  flat_pi = pi0.reshape(-1, pi0.shape[-1])
  flat_u = proxy.reshape(-1, pi0.shape[-1])
  out = np.zeros_like(flat_pi)
  for i, (p, u) in enumerate(zip(flat_pi, flat_u)):
    order = np.argsort(u, kind="stable")
    us, ps = u[order], p[order]
    # Groups of equal scores: the cdf at each group's top and just below its bottom.
    new_group = np.concatenate([[True], us[1:] != us[:-1]])
    group = np.cumsum(new_group) - 1
    group_mass = np.bincount(group, weights=ps)
    upper = np.minimum(np.cumsum(group_mass), 1.0)
    lower = np.concatenate([[0.0], upper[:-1]])
    group_prob = upper ** n - lower ** n
    out[i, order] = group_prob[group] * ps / group_mass[group]
  out = out.reshape(pi0.shape)
  return out, kl_divergence(out, pi0)


def tilted_policy(pi0, u, beta) -> tuple[np.ndarray, np.ndarray]:
  """The exact KL-regularised optimum pi* = pi_0 exp(u / beta) / Z and its exact KL to pi_0.

    log pi*(y) = log pi_0(y) + u(y) / beta - log Z,   Z = sum_y pi_0(y) exp(u(y) / beta)
    KL(pi* || pi_0) = E_pi*[u] / beta - log Z

  pi* maximises E_pi[u] - beta KL(pi || pi_0) over all distributions on the R responses (the
  closed form behind DPO and KL-regularised RLHF). Computed in log space (logsumexp), stable
  for any finite u / beta.

  Args:
    pi0: [..., R] reference probabilities (rows sum to 1).
    u: [..., R] rewards of the design being optimised, pi0's shape.
    beta: float > 0, or an array broadcastable against pi0's leading axes with a trailing 1
      (e.g. [K, 1, 1] for K coefficients over [P, R]).

  Returns:
    (policy [..., R], kl [...]) float64.

  >>> q, kl = tilted_policy(np.array([0.5, 0.5]), np.array([0.0, np.log(3.0)]), 1.0)
  >>> q.round(4).tolist(), round(float(kl), 4)  # (1/4, 3/4); KL = 0.75 log 1.5 + 0.25 log 0.5
  ([0.25, 0.75], 0.1308)
  """
  pi0 = _distribution(pi0, "pi0")
  u = _scores(u, pi0, "u")
  beta = np.asarray(beta, np.float64)
  if np.any(beta <= 0) or not np.all(np.isfinite(beta)):
    raise ValueError(f"`beta` must be finite and > 0; got {beta}.")
  with np.errstate(divide="ignore"):
    log_pi0 = np.log(pi0)
  z = log_pi0 + u / beta
  top = np.max(z, -1, keepdims=True)
  log_norm = top + np.log(np.sum(np.exp(z - top), -1, keepdims=True))
  log_q = z - log_norm
  q = np.exp(log_q)
  kl = np.sum(np.where(q > 0, q * (np.where(q > 0, log_q, 0.0)
                                   - np.where(q > 0, log_pi0, 0.0)), 0.0), -1)
  return q, np.maximum(kl, 0.0)


def max_tilted_kl(pi0, u) -> np.ndarray:
  """The mean KL reached by pi* as beta -> 0: mean_x -log pi_0(argmax set of u | x).

  As beta -> 0, pi* tends to pi_0 restricted to the responses with the highest u, whose KL is
  -log pi_0(that set); no beta gives more.

  Args:
    pi0: [P, R] reference probabilities.
    u: [P, R] rewards.

  Returns:
    float64 scalar, the supremum of the mean (over prompts) KL of `tilted_policy`.

  >>> float(max_tilted_kl(np.array([[0.5, 0.25, 0.25]]), np.array([[0.0, 1.0, 1.0]])))
  0.6931471805599453
  """
  pi0 = _distribution(pi0, "pi0")
  u = _scores(u, pi0, "u")
  top = u == u.max(-1, keepdims=True)
  return float(np.mean(-np.log(np.sum(np.where(top, pi0, 0.0), -1))))


def tilted_betas_for_kl(pi0, u, target_kl, *, iterations: int = 100) -> np.ndarray:
  """Sweeps beta to cover a KL range: the beta whose pi* has mean KL `target_kl`, by bisection.

  The mean (over prompts) KL(pi*_beta || pi_0) decreases continuously from `max_tilted_kl` (beta
  -> 0) to 0 (beta -> inf); bisection on log beta finds each target to ~1e-12 relative.

  Args:
    pi0: [P, R] reference probabilities.
    u: [P, R] rewards.
    target_kl: [K] targets in (0, max_tilted_kl(pi0, u)).
    iterations: bisection steps (default 100).

  Returns:
    [K] float64 betas.

  Raises:
    ValueError: a target outside (0, max_tilted_kl).

  >>> pi0, u = np.full((1, 3), 1 / 3), np.array([[0.0, 1.0, 2.0]])
  >>> beta = tilted_betas_for_kl(pi0, u, np.array([0.1]))
  >>> round(float(tilted_policy(pi0, u, beta[0])[1].mean()), 6)
  0.1
  """
  pi0 = _distribution(pi0, "pi0")
  u = _scores(u, pi0, "u")
  target = np.atleast_1d(np.asarray(target_kl, np.float64))
  sup = max_tilted_kl(pi0, u)
  if np.any(target <= 0) or np.any(target >= sup):
    raise ValueError(f"`target_kl` must lie in (0, {sup:.6g}) (the KL of pi* as beta -> 0 "
                     f"for these rewards); got {target}.")
  spread = float(np.max(u) - np.min(u)) or 1.0
  lo = np.full(target.shape, np.log(spread) - 60.0)   # tiny beta: KL near its supremum
  hi = np.full(target.shape, np.log(spread) + 30.0)   # huge beta: KL near 0
  for _ in range(iterations):
    mid = 0.5 * (lo + hi)
    kl = tilted_policy(pi0, u, np.exp(mid)[:, None, None])[1].mean(-1)
    too_far = kl > target          # beta too small
    lo = np.where(too_far, mid, lo)
    hi = np.where(too_far, hi, mid)
  return np.exp(0.5 * (lo + hi))


def weighted_quantile(values, probs, q: float) -> np.ndarray:
  """Exact q-quantile of a discrete distribution, per row: min{v : P(V <= v) >= q}.

  With `probs` = pi_0 this is r_ref(x), the q-quantile of pi_0's rewards for the prompt, exactly
  (the lower quantile: no interpolation between responses).

  Args:
    values: [..., R] values of the responses.
    probs: [..., R] their probabilities (rows sum to 1).
    q: Python float in (0, 1].

  Returns:
    [...] float64 quantiles.

  >>> weighted_quantile(np.array([3.0, 1.0, 2.0]), np.array([0.2, 0.5, 0.3]), 0.5).tolist()
  1.0
  """
  if not 0.0 < q <= 1.0:
    raise ValueError(f"`q` must lie in (0, 1]; got {q}.")
  probs = _distribution(probs, "probs")
  values = _scores(values, probs, "values")
  order = np.argsort(values, -1, kind="stable")
  v = np.take_along_axis(values, order, -1)
  cdf = np.cumsum(np.take_along_axis(probs, order, -1), -1)
  index = np.minimum(np.sum(cdf < q - 1e-12, -1), values.shape[-1] - 1)
  return np.take_along_axis(v, index[..., None], -1)[..., 0]


def win_values(rewards, pi0) -> np.ndarray:
  """Per-response exact win probability against pi_0: w(y) = P0(r < r(y)) + P0(r = r(y)) / 2.

  The win rate of any policy q over pi_0 under reward r, P(r(y) > r(y0)) with y ~ q, y0 ~ pi_0
  and ties counted 1/2, is then sum_y q(y) w(y) (linear in q). pi_0's own win rate is 1/2.

  Args:
    rewards: [P, R] rewards.
    pi0: [P, R] reference probabilities.

  Returns:
    [P, R] float64 in [0, 1].

  >>> win_values(np.array([[0.0, 1.0, 1.0]]), np.array([[0.5, 0.25, 0.25]])).tolist()
  [[0.25, 0.75, 0.75]]
  """
  pi0 = _distribution(pi0, "pi0")
  r = _scores(rewards, pi0, "rewards")
  below = np.sum(np.where(r[..., None, :] < r[..., :, None], pi0[..., None, :], 0.0), -1)
  equal = np.sum(np.where(r[..., None, :] == r[..., :, None], pi0[..., None, :], 0.0), -1)
  return below + 0.5 * equal


class GaoFit(NamedTuple):
  """A least-squares fit of one of Gao et al.'s forms of the gold-reward gain against d.

  Attributes:
    form: "best_of_n" (R = d (alpha - beta d)) or "rl" (R = d (alpha - beta log d)).
    alpha: fitted alpha.
    beta: fitted beta.
    r_squared: 1 - SS_res / SS_tot (SS_tot about the mean gain).
    peak_sqrt_kl: d* where the fitted curve peaks (None if beta <= 0: no peak).
    peak_value: R(d*) (None if no peak).
    num_points: points fitted.
  """
  form: str
  alpha: float
  beta: float
  r_squared: float
  peak_sqrt_kl: Optional[float]
  peak_value: Optional[float]
  num_points: int


def _least_squares(d, gain, columns):
  d = np.asarray(d, np.float64).ravel()
  gain = np.asarray(gain, np.float64).ravel()
  if d.shape != gain.shape or d.size < 2:
    raise ValueError(f"`d` and `gain` must be matching 1-D arrays of >= 2 points; got "
                     f"{d.shape} and {gain.shape}.")
  if np.any(d < 0) or not np.all(np.isfinite(d)) or not np.all(np.isfinite(gain)):
    raise ValueError("`d` must be finite and >= 0 and `gain` finite.")
  a = columns(d)
  (alpha, beta), *_ = np.linalg.lstsq(a, gain, rcond=None)
  residual = gain - a @ np.array([alpha, beta])
  total = np.sum((gain - gain.mean()) ** 2)
  r2 = float(1.0 - np.sum(residual ** 2) / total) if total > 0 else 1.0
  return float(alpha), float(beta), r2, int(d.size)


def fit_gao_best_of_n(d, gain) -> GaoFit:
  """Fits Gao et al.'s best-of-n form R_bon(d) = d (alpha - beta d) by least squares.

  d = sqrt(KL(pi || pi_0)); R is the GAIN of the gold (true) reward over pi_0, R(d) -
  R(0), as Gao et al. fit it (the form is 0 at d = 0). Linear in (alpha, beta): columns
  [d, -d^2]. Peak: d* = alpha / (2 beta), R(d*) = alpha^2 / (4 beta) (when beta > 0).

  Args:
    d: [N] sqrt(KL) >= 0.
    gain: [N] gold-reward gain over pi_0.

  Returns:
    A `GaoFit`.

  References:
    Gao et al. (2022), "Scaling Laws for Reward Model Overoptimization", arXiv:2210.10760, eq. 1.

  >>> d = np.linspace(0, 3, 7)
  >>> f = fit_gao_best_of_n(d, d * (2.0 - 0.5 * d))
  >>> round(f.alpha, 6), round(f.beta, 6), round(f.peak_sqrt_kl, 6), round(f.peak_value, 6)
  (2.0, 0.5, 2.0, 2.0)
  """
  alpha, beta, r2, n = _least_squares(d, gain,
                                      lambda x: np.stack([x, -x * x], 1))
  if beta > 0:
    peak = alpha / (2 * beta)
    return GaoFit("best_of_n", alpha, beta, r2, peak, peak * (alpha - beta * peak), n)
  return GaoFit("best_of_n", alpha, beta, r2, None, None, n)


def fit_gao_rl(d, gain) -> GaoFit:
  """Fits Gao et al.'s RL form R_RL(d) = d (alpha - beta log d) by least squares.

  d = sqrt(KL); R is the gold-reward gain over pi_0 (d log d -> 0 at d = 0). Linear in
  (alpha, beta): columns [d, -d log d]. Peak: dR/dd = alpha - beta (log d + 1) = 0 gives
  d* = exp(alpha / beta - 1) and R(d*) = beta d* (when beta > 0).

  Args:
    d: [N] sqrt(KL) >= 0.
    gain: [N] gold-reward gain over pi_0.

  Returns:
    A `GaoFit`.

  References:
    Gao et al. (2022), "Scaling Laws for Reward Model Overoptimization", arXiv:2210.10760, eq. 2.

  >>> d = np.linspace(0.1, 8, 20)
  >>> f = fit_gao_rl(d, d * (1.0 - 0.5 * np.log(d)))
  >>> round(f.alpha, 6), round(f.beta, 6), round(f.peak_sqrt_kl, 4)  # exp(1)
  (1.0, 0.5, 2.7183)
  """
  def columns(x):
    return np.stack([x, -np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)], 1)

  alpha, beta, r2, n = _least_squares(d, gain, columns)
  if beta > 0:
    with np.errstate(over="ignore"):  # alpha / beta > ~710: the peak is inf (far off the data)
      peak = float(np.exp(alpha / beta - 1.0))
    return GaoFit("rl", alpha, beta, r2, peak, beta * peak, n)
  return GaoFit("rl", alpha, beta, r2, None, None, n)
