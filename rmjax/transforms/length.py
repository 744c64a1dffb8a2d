"""Length penalties: shaping a reward by the length of its response.

Every function takes `rewards: [B]` and `lengths: [B]` (response lengths in tokens, integer or
float) and returns the shaped [B] float32 rewards; masked entries come back 0.
"""

from typing import Optional

import chex
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.transforms import _common


def _rewards_and_lengths(rewards, lengths, mask):
  r, valid, dtype = _common.real_input(rewards, "rewards", mask)
  lengths = _reduction.as_real_array(lengths, "lengths")
  _reduction.check_same_shape(lengths, "lengths", r, "rewards")
  return r, jnp.where(valid, lengths.astype(dtype), 0), valid


def linear_length_penalty(
    rewards: chex.Array,
    lengths: chex.Array,
    *,
    threshold: float = 300.0,
    coefficient: float = 0.01,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Linear penalty on the tokens beyond a threshold (PAR's setting).

    u = r - c * max(len - L, 0)

  PAR's experiments subtract 0.01 per token beyond 300 generated tokens (its code:
  `gen_valid_len`, `len_penalty` / `penalty_per_token`), applied before any other shaping.

  Args:
    rewards: [B] rewards.
    lengths: [B] response lengths.
    threshold: Python float L >= 0 (default 300).
    coefficient: Python float c >= 0 (default 0.01) per token beyond L.
    mask: optional [B] validity mask.

  Returns:
    [B] float32 rewards; 0 at masked entries.

  Raises:
    ValueError: bad `threshold`/`coefficient`, `lengths` or `mask` not of `rewards`' shape.
    TypeError: non-real inputs.

  References:
    Fu et al. (2025), "Reward Shaping to Mitigate Reward Hacking in RLHF", arXiv:2502.18770.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import linear_length_penalty
  >>> linear_length_penalty(jnp.array([1.0, 1.0]), jnp.array([200, 350])).tolist()
  [1.0, 0.5]
  """
  threshold = _common.python_float(threshold, "threshold", low=0.0)
  coefficient = _common.python_float(coefficient, "coefficient", low=0.0)
  r, lengths, valid = _rewards_and_lengths(rewards, lengths, mask)
  return jnp.where(valid, r - coefficient * jnp.maximum(lengths - threshold, 0), 0)


def dapo_overlong_penalty(
    rewards: chex.Array,
    lengths: chex.Array,
    *,
    max_length: float,
    cache_length: float,
    penalty_factor: float = 1.0,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """DAPO's soft overlong punishment, added to the reward.

    p(len) = 0                                   len <= L_max - L_cache
           = ((L_max - L_cache) - len) / L_cache  L_max - L_cache < len <= L_max
           = -1                                  len > L_max
    u = r + f * p(len)

  i.e. min(-(len - (L_max - L_cache)) / L_cache, 0) floored at -1, as in the policy spec and the
  DAPO paper (its third case). verl's implementation (`overlong_buffer`, `penalty_factor`) has no
  floor because generation stops at L_max; the two agree for len <= L_max. DAPO uses
  L_max = 20480 with L_cache = 4096 (the penalty starts at 16384 tokens).

  Args:
    rewards: [B] rewards (e.g. the rule-based correctness reward).
    lengths: [B] response lengths.
    max_length: Python float L_max > 0 (no default: the generation budget).
    cache_length: Python float L_cache in (0, L_max], the soft punishment interval.
    penalty_factor: Python float f >= 0 (default 1.0).
    mask: optional [B] validity mask.

  Returns:
    [B] float32 rewards; 0 at masked entries.

  Raises:
    ValueError: bad lengths parameters, `lengths` or `mask` not of `rewards`' shape.
    TypeError: non-real inputs.

  References:
    Yu et al. (2025), "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
    arXiv:2503.14476 (soft overlong punishment, in "Overlong Reward Shaping").

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import dapo_overlong_penalty
  >>> dapo_overlong_penalty(jnp.ones(4), jnp.array([10, 16, 18, 30]), max_length=20,
  ...                       cache_length=4).tolist()
  [1.0, 1.0, 0.5, 0.0]
  """
  max_length = _common.python_float(max_length, "max_length", low=0.0, low_open=True)
  cache_length = _common.python_float(cache_length, "cache_length", low=0.0, high=max_length,
                                      low_open=True)
  penalty_factor = _common.python_float(penalty_factor, "penalty_factor", low=0.0)
  r, lengths, valid = _rewards_and_lengths(rewards, lengths, mask)
  soft = ((max_length - cache_length) - lengths) / cache_length
  penalty = jnp.clip(soft, -1.0, 0.0)
  return jnp.where(valid, r + penalty_factor * penalty, 0)


def dler_truncation_penalty(
    rewards: chex.Array,
    lengths: chex.Array,
    *,
    max_length: float,
    scale: float = 0.0,
    penalty: float = 0.0,
    mask: Optional[chex.Array] = None,
) -> jnp.ndarray:
  """Truncation length penalty (DLER): an over-length response loses its task reward.

    u = r                          len <= L_max
      = scale * r - penalty        len >  L_max

  Defaults (scale 0, penalty 0): an over-length response gets reward 0, DLER's truncation, the
  simplest length penalty, which DLER pairs with batch-wise reward normalisation
  (`rmjax.losses.advantages.dler_advantages`), higher clipping and dynamic sampling. The policy
  spec's variants are covered by the options: scale = 0.1 keeps a tenth of the reward, or a fixed
  `penalty`. To penalise responses that hit the generation cap exactly, pass
  max_length = cap - 1.

  Args:
    rewards: [B] task rewards.
    lengths: [B] response lengths.
    max_length: Python float L_max >= 0 (no default: the target length).
    scale: Python float in [0, 1] (default 0) multiplying an over-length reward.
    penalty: Python float >= 0 (default 0) subtracted from an over-length reward.
    mask: optional [B] validity mask.

  Returns:
    [B] float32 rewards; 0 at masked entries.

  Raises:
    ValueError: bad parameters, `lengths` or `mask` not of `rewards`' shape.
    TypeError: non-real inputs.

  References:
    Liu et al. (2025), "DLER: Doing Length pEnalty Right - Incentivizing More Intelligence per
    Token via Reinforcement Learning", arXiv:2510.15110.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import dler_truncation_penalty
  >>> dler_truncation_penalty(jnp.array([1.0, 1.0]), jnp.array([100, 101]),
  ...                         max_length=100).tolist()
  [1.0, 0.0]
  """
  max_length = _common.python_float(max_length, "max_length", low=0.0)
  scale = _common.python_float(scale, "scale", low=0.0, high=1.0)
  penalty = _common.python_float(penalty, "penalty", low=0.0)
  r, lengths, valid = _rewards_and_lengths(rewards, lengths, mask)
  over = lengths > max_length
  return jnp.where(valid, jnp.where(over, scale * r - penalty, r), 0)
