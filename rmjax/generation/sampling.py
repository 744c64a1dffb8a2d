"""Sampling rules on next-token logits: temperature, top-k, top-p (nucleus), greedy.

Pure functions, arrays in and arrays out; `rmjax.generation.decoding` calls them once per
decoding step. See the package docstring for the formulas and references.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


def check_sampling_args(temperature: Any, top_k: Any, top_p: Any) -> None:
  """Raises a ValueError naming the argument when a sampling hyper-parameter is invalid.

  Shared by `GenerationConfig` and `sample_tokens`, so both say the same thing.
  """
  if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
      or not math.isfinite(temperature) or temperature < 0):
    raise ValueError(f"temperature must be a positive finite number, got {temperature!r}.")
  if temperature == 0:
    raise ValueError(
        "temperature=0 is not a sampling distribution; for argmax decoding pass "
        "greedy=True (temperature then only scales the returned log-probs).")
  if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                            or top_k < 1):
    raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}.")
  if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                            or not 0 < top_p <= 1):
    raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}.")


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
  """True at the k largest logits of each row (ties with the k-th largest all kept).

  Args:
    logits: [..., V] floating.
    k: int >= 1 (k >= V keeps everything).

  Returns:
    [..., V] bool.

  >>> top_k_mask(jnp.array([1.0, 3.0, 2.0, 0.0]), 2).tolist()
  [False, True, True, False]
  """
  if k >= logits.shape[-1]:
    return jnp.ones(logits.shape, jnp.bool_)
  # A full sort rather than `lax.top_k`: XLA's SPMD partitioner gathers the rows of a
  # TopK onto every device (measured: an all-gather of the [N, V] logits per decoding
  # step on a ('data', 'fsdp') mesh), while a sort along V stays split by rows.
  kth_largest = jnp.sort(logits, axis=-1)[..., logits.shape[-1] - k, None]
  return logits >= kth_largest


def top_p_mask(logits: jax.Array, p: float) -> jax.Array:
  """Nucleus of each row: the smallest set of most probable tokens with probability >= p.

  With probabilities pi = softmax(logits) sorted in decreasing order pi_(1) >= pi_(2) >=
  ..., token (i) is kept iff sum_{j < i} pi_(j) < p, so the most probable token is always
  kept; tokens tied with the least probable kept one are kept too.

  Args:
    logits: [..., V] floating (-inf allowed: probability 0, e.g. after top-k).
    p: number in (0, 1]; p = 1 keeps everything.

  Returns:
    [..., V] bool.

  >>> top_p_mask(jnp.log(jnp.array([0.1, 0.5, 0.3, 0.1])), 0.7).tolist()
  [False, True, True, False]
  """
  if p >= 1:
    return jnp.ones(logits.shape, jnp.bool_)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  descending = -jnp.sort(-probs, axis=-1)
  mass_before = jnp.cumsum(descending, axis=-1) - descending
  num_kept = jnp.sum(mass_before < p, axis=-1, keepdims=True)  # >= 1
  threshold = jnp.take_along_axis(descending, num_kept - 1, axis=-1)
  return probs >= threshold


def truncate_logits(logits: jax.Array, *, top_k: int | None = None,
                    top_p: float | None = None) -> jax.Array:
  """Logits with -inf outside the top-k set, then outside the nucleus of what is left.

  As Hugging Face's samplers: top-p is taken on the distribution renormalised over the
  top-k set.

  Args:
    logits: [..., V] floating (already divided by the temperature).
    top_k: None (off) or int >= 1.
    top_p: None (off) or a number in (0, 1].

  Returns:
    [..., V] float32.
  """
  logits = logits.astype(jnp.float32)
  if top_k is not None:
    logits = jnp.where(top_k_mask(logits, top_k), logits, -jnp.inf)
  if top_p is not None:
    logits = jnp.where(top_p_mask(logits, top_p), logits, -jnp.inf)
  return logits


def sample_tokens(keys: jax.Array, logits: jax.Array, *, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None,
                  greedy: bool = False) -> tuple[jax.Array, jax.Array]:
  """One token per row, and its log-probability under the tempered distribution.

    token_b ~ softmax(truncate(logits_b / temperature))   (greedy: argmax_v logits_b)
    log_prob_b = log_softmax(logits_b / temperature)[token_b]

  The log-prob is that of the distribution at `temperature` BEFORE top-k / top-p
  truncation (the policy's own probability, the one a policy-gradient or KL term needs),
  not of the truncated distribution the token was drawn from.

  Args:
    keys: [N] PRNG keys, one per row (ignored when greedy).
    logits: [N, V] floating next-token logits.
    temperature: positive number (default 1.0).
    top_k: None (default) or int >= 1.
    top_p: None (default) or a number in (0, 1].
    greedy: argmax decoding (default False); top_k / top_p then change nothing.

  Returns:
    (tokens [N] int32, log_probs [N] float32).

  >>> logits = jnp.log(jnp.array([[0.7, 0.2, 0.1]]))
  >>> tokens, log_probs = sample_tokens(jax.random.split(jax.random.key(0), 1), logits,
  ...                                   greedy=True)
  >>> tokens.tolist(), round(float(log_probs[0]), 4)  # log 0.7
  ([0], -0.3567)
  """
  check_sampling_args(temperature, top_k, top_p)
  if getattr(logits, "ndim", None) != 2:
    raise ValueError(f"logits must have shape [N, V], got {getattr(logits, 'shape', None)}.")
  scaled = logits.astype(jnp.float32) / temperature
  if greedy:
    tokens = jnp.argmax(logits, axis=-1)
  else:
    if getattr(keys, "shape", None) is None or keys.shape[:1] != logits.shape[:1]:
      raise ValueError(
          f"keys must hold one PRNG key per row of logits ({logits.shape[0]}), got shape "
          f"{getattr(keys, 'shape', None)}.")
    truncated = truncate_logits(scaled, top_k=top_k, top_p=top_p)
    tokens = jax.vmap(jax.random.categorical)(keys, truncated)
  tokens = tokens.astype(jnp.int32)
  log_probs = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1), tokens[:, None],
                                  axis=-1)[:, 0]
  return tokens, log_probs
