"""Significance of paired comparisons (float64 numpy; no jax needed)."""

import math
import numbers


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
  """Two-sided exact McNemar test: the p-value that A and B succeed equally often, from
  the discordant pairs alone.

  Of the items where exactly one of A and B succeeds, `only_a` are A's and `only_b` B's.
  Under the null each discordant item is A's with probability 1/2, so with m = only_a +
  only_b and k = min(only_a, only_b):

    p = min(1, 2 * sum_{j <= k} C(m, j) / 2^m)

  (the exact binomial form; p = 1 when m = 0). Items where both or neither succeed carry
  no information about the difference and do not enter.

  Args:
    only_a: non-negative int, items where only A succeeds.
    only_b: non-negative int, items where only B succeeds.

  Returns:
    The two-sided p-value, a float in (0, 1].

  Raises:
    ValueError: a count that is not a non-negative integer.

  References:
    McNemar (1947), "Note on the sampling error of the difference between correlated
    proportions or percentages", Psychometrika 12(2).

  >>> mcnemar_exact_p(6, 0)   # 2 / 2^6
  0.03125
  >>> mcnemar_exact_p(3, 3), mcnemar_exact_p(0, 0)
  (1.0, 1.0)
  """
  for name, value in (("only_a", only_a), ("only_b", only_b)):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
      raise ValueError(f"mcnemar_exact_p: {name} must be a non-negative integer, got "
                       f"{value!r}")
  m, k = int(only_a) + int(only_b), min(int(only_a), int(only_b))
  if m == 0:
    return 1.0
  tail = sum(math.comb(m, j) for j in range(k + 1))
  return min(1.0, 2.0 * tail / 2.0 ** m)
