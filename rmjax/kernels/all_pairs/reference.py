"""The plain jnp all-pairs loss: the spec every other implementation matches.

It builds the [N, N] matrices of the pair rules (O(N^2) memory: at N = 32768
one float32 [N, N] array is 4 GiB, and the gradient needs several) and is
differentiated by plain autodiff. It is the only implementation that supports
an explicit [N, N] `pair_weights` input and reduction "none" (an [N, N]
output), both O(N^2) by nature.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from rmjax.kernels.all_pairs import rules


def per_pair_losses(rule: rules.PairRule, items: rules.PairItems, margin=None,
                    pair_weights: Optional[jax.Array] = None,
                    dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
  """The [N, N] matrix of weighted per-pair losses and the pair mask P.

    L_ij = P_ij w_ij pw_ij softplus(-(s_i - s_j - m_ij))

  with P, w and m of `rules.pair_loss_and_slope` and `pw` the optional
  explicit weights (entries outside P ignored, even inf or NaN).

  Args:
    rule: the `rules.PairRule`.
    items: sanitised [N] `rules.PairItems` (see `rules.sanitize_items`).
    margin: scalar margin for `rule.margin_rule`.
    pair_weights: optional [N, N] explicit weights (row = winner).
    dtype: the compute dtype.

  Returns:
    (L [N, N], P bool [N, N]).

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs import reference, rules
  >>> items, _ = rules.sanitize_items(jnp.zeros(2), jnp.array([1.0, 0.0]),
  ...                                 None, jnp.ones(2, bool), "uniform")
  >>> losses, pairs = reference.per_pair_losses(rules.PairRule(), items)
  >>> losses.round(4), pairs.astype(int)
  (Array([[0.    , 0.6931],
         [0.    , 0.    ]], dtype=float32), Array([[0, 1],
         [0, 0]], dtype=int32))
  """
  winner, loser = rules.as_rows(items), rules.as_cols(items)
  losses, _ = rules.pair_loss_and_slope(rule, winner, loser, margin,
                                        dtype=dtype)
  preferred = rules.preferred_pairs(winner, loser)
  if pair_weights is not None:
    # Sanitise before multiplying: junk outside P must not reach the product.
    losses = losses * jnp.where(preferred, pair_weights.astype(dtype), 0)
  return losses, preferred


def all_pairs_loss(rule: rules.PairRule, items: rules.PairItems, margin=None,
                   *, pair_weights: Optional[jax.Array] = None,
                   reduction: str = "mean", dtype=jnp.float32) -> jax.Array:
  """The reference all-pairs loss over sanitised items.

    sum_{(i, j) in P} L_ij / normaliser

  "mean" divides by |P| (the number of pairs; 0 pairs give 0), "sum" returns
  the numerator, "none" the [N, N] matrix L (0 outside P).

  Args:
    rule: the `rules.PairRule`.
    items: sanitised [N] `rules.PairItems`.
    margin: scalar margin for `rule.margin_rule`.
    pair_weights: optional [N, N] explicit weights.
    reduction: "mean", "sum" or "none".
    dtype: the compute dtype.

  Returns:
    scalar, or [N, N] for reduction="none".

  References:
    Bradley & Terry (1952); Burges et al. (2005) RankNet; Liu et al. (2024)
    LiPO, arXiv:2402.01878.

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels.all_pairs import reference, rules
  >>> items, _ = rules.sanitize_items(jnp.zeros(3), jnp.array([1.0, 0, 0]),
  ...                                 None, jnp.ones(3, bool), "uniform")
  >>> float(reference.all_pairs_loss(rules.PairRule(), items))  # log 2
  0.6931...
  """
  losses, preferred = per_pair_losses(rule, items, margin, pair_weights, dtype)
  if reduction == "none":
    return losses
  total = jnp.sum(losses)
  if reduction == "sum":
    return total
  return total / jnp.maximum(jnp.sum(preferred, dtype=dtype), 1)
