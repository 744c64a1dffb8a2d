"""Preference datasets held as numpy arrays, served as deterministic batches.

`PreferenceDataset` (pairs), `ListDataset` (ranked lists) and `EpisodeDataset` (user
episodes) validate their arrays and share one batching rule. `rmjax.data.loading` builds
them from a data config.

Batch format (numpy, B pairs, L = ``max_len``)::

  chosen_tokens    int32 [B, L]  [BOS] + prompt + chosen + [EOS], right-padded with 0
  chosen_mask      int32 [B, L]  1 on real tokens, 0 on padding
  rejected_tokens  int32 [B, L]  likewise for the rejected response
  rejected_mask    int32 [B, L]
  margin           float32 [B]   0.0 where the record has none
  valid            bool [B]      False only on padding rows of the last eval batch
  preference_prob  float32 [B]   synthetic data only: true P(chosen is preferred)
  chosen_attributes, rejected_attributes          float32 [B, 5]  synthetic, attribute models
  chosen_attribute_mask, rejected_attribute_mask  bool [B, 5]     the ratings present
  strength_mean, strength_std                     float32 [B]     a teacher ensemble's
                                                                  preference strength

Other formats (``data.format``; synthetic data only), K responses per prompt, P pairs per
user episode::

  "lists"          tokens, mask int32 [B, K, L]; ranking int32 [B, K] (best first); valid [B]
  "user_episodes"  chosen_tokens, chosen_mask, rejected_tokens, rejected_mask int32 [B, P, L];
                   preference_prob float32 [B, P]; user_group int32 [B]; valid [B]. The first
                   ``context_pairs`` of P are the user's annotated examples, the rest queries.

With "lists" only the training split is lists; the eval split stays pairs.

Training order: `PreferenceDataset.train_batch` is a pure function of ``(seed, step)``. It
is built on ``grain.MapDataset``: ``range(N).shuffle(seed).repeat().batch(B)``, read by
random access at index ``step``. Grain's ``shuffle`` draws epoch ``e`` from the seed
``seed + e``, so each epoch is a fresh permutation, and batching after ``repeat`` lets a
batch straddle an epoch boundary. Resuming at step k therefore gives exactly the batches of
an uninterrupted run. (The user seed is first hashed to a 32-bit grain seed, so runs with
seeds s and s + 1 do not see the same permutations shifted by one epoch.)
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np

from rmjax.data import tokenizer as tokenizer_lib

BATCH_KEYS = ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask", "margin",
              "valid")
_TOKEN_KEYS = ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask")


def _check_int(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


class _IndexedArrays:
  """Numpy arrays with a leading example axis, served as deterministic batches.

  Subclasses validate their arrays and set ``self._arrays`` and ``self._num_examples``.
  """

  name: str
  _arrays: dict[str, np.ndarray]
  _num_examples: int

  def _init_index(self) -> None:
    self._index_datasets: dict[tuple[int, int], Any] = {}

  @property
  def arrays(self) -> dict[str, np.ndarray]:
    """The per-example arrays (a shallow copy of the dict; do not modify the arrays)."""
    return dict(self._arrays)

  @property
  def num_examples(self) -> int:
    """N, the number of examples (pairs, lists or user episodes)."""
    return self._num_examples

  def __len__(self) -> int:
    return self._num_examples

  def gather(self, indices: Sequence[int] | np.ndarray,
             valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The batch of the examples at ``indices`` (all valid unless ``valid`` [B] is given)."""
    indices = np.asarray(indices, dtype=np.int64)
    batch = {k: v[indices] for k, v in self._arrays.items()}
    batch["valid"] = (np.ones(len(indices), dtype=bool) if valid is None
                      else np.asarray(valid, dtype=bool))
    return batch

  def _index_dataset(self, batch_size: int, seed: int):
    key = (batch_size, seed)
    if key not in self._index_datasets:
      # Hash the seed so that nearby user seeds do not share grain's per-epoch seeds.
      grain_seed = int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1)[0])
      ds = grain.MapDataset.range(self._num_examples).shuffle(seed=grain_seed).repeat()
      self._index_datasets[key] = ds.batch(batch_size, drop_remainder=True)
    return self._index_datasets[key]

  def train_indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
    """int64 [batch_size] example indices of training batch ``step`` (see `train_batch`)."""
    step = _check_int("step", step, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    return np.asarray(self._index_dataset(batch_size, seed)[step], dtype=np.int64)

  def train_batch(self, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """Training batch number ``step``, a pure function of ``(seed, step)``.

    Examples are read in an endless stream of epochs, each a fresh permutation drawn from
    ``(seed, epoch)``; batch ``step`` holds stream positions ``[step * B, (step + 1) * B)``
    and may straddle two epochs. ``batch_size`` may exceed the number of examples.

    Args:
      step: batch number, >= 0.
      batch_size: B, > 0.
      seed: shuffling seed, >= 0.

    Returns:
      A batch (see the module docstring) with all ``valid`` True.
    """
    return self.gather(self.train_indices(step, batch_size, seed))

  def num_eval_batches(self, batch_size: int) -> int:
    """Number of batches `eval_batches` yields: ceil(N / batch_size)."""
    batch_size = _check_int("batch_size", batch_size, 1)
    return math.ceil(self._num_examples / batch_size)

  def eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every example exactly once, in order, in batches of ``batch_size``.

    The last batch is padded to ``batch_size`` with copies of its last real row marked
    ``valid=False``, so every batch has the same shape and only legal tokens.

    Args:
      batch_size: B, > 0.

    Yields:
      Batches (see the module docstring).
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    return self._eval_batches(batch_size)

  def _eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    for indices, valid in eval_index_batches(self._num_examples, batch_size):
      yield self.gather(indices, valid=valid)


def eval_index_batches(num_examples: int, batch_size: int
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(indices [B], valid [B]) of each eval batch: every example once, in order.

  The last batch is padded with copies of its last row marked invalid. The layout of
  `eval_batches`, without gathering anything: each process of a multi-host run gathers only
  its own rows of these indices.

  >>> [(i.tolist(), v.tolist()) for i, v in eval_index_batches(3, 2)]
  [([0, 1], [True, True]), ([2, 2], [True, False])]
  """
  for start in range(0, num_examples, batch_size):
    indices = np.arange(start, min(start + batch_size, num_examples))
    real = len(indices)
    indices = np.concatenate([indices, np.full(batch_size - real, indices[-1])])
    yield indices, np.arange(batch_size) < real


def _check_right_padded(name: str, what: str, mask: np.ndarray, tokens: np.ndarray,
                        pad_id: int = tokenizer_lib.PAD_ID) -> None:
  """mask [..., L]: each row 1s then 0s with >= 2 real tokens; tokens are pad_id where 0."""
  rows = mask.reshape(-1, mask.shape[-1])
  lengths = rows.sum(axis=1)
  expected = np.arange(rows.shape[1])[None, :] < lengths[:, None]
  bad_rows = np.flatnonzero(np.any(rows != expected, axis=1) | (lengths < 2))
  if bad_rows.size:
    bad = int(bad_rows[0])
    raise ValueError(
        f"{name}: {what}_mask row {bad} must be 1s then 0s (right-padded) with >= 2 "
        f"real tokens, got {rows[bad].tolist()}")
  padding = tokens[mask == 0]
  if np.any(padding != pad_id):
    other = int(padding[np.flatnonzero(padding != pad_id)[0]])
    raise ValueError(f"{name}: {what}_tokens must hold the pad id {pad_id} where {what}_mask "
                     f"is 0, found {other} (pass the tokenizer's pad_id)")


def _check_array(name: str, key: str, a: Any, shape: tuple[int, ...], dtype) -> np.ndarray:
  a = np.asarray(a)
  if a.shape != shape or a.dtype != dtype:
    raise ValueError(f"{name}: {key} must be {np.dtype(dtype).name} {list(shape)}, got "
                     f"{a.dtype} {list(a.shape)}")
  return a


# Optional per-pair arrays of `PreferenceDataset`: key -> (trailing shape key, dtype).
_OPTIONAL_PAIR_ARRAYS = {
    "preference_prob": np.float32,
    "strength_mean": np.float32,
    "strength_std": np.float32,
    "chosen_attributes": np.float32,
    "rejected_attributes": np.float32,
    "chosen_attribute_mask": np.bool_,
    "rejected_attribute_mask": np.bool_,
    # The annotator of each pair (pluralistic models learn one row per user).
    "user_ids": np.int32,
    # Tokens of [BOS] + prompt at the start of both sequences (heads that read the prompt).
    "prompt_lengths": np.int32,
    # Direct preference optimisation: log pi_ref of each response, computed once.
    "reference_chosen_logps": np.float32,
    "reference_rejected_logps": np.float32,
}


# Per-example layout of the batch fields of pairs and sequences (`PreferenceDataset`,
# `SequenceDataset`): field -> (trailing axes, dtype), "L" the sequence length, "A" the
# attributes. One table for `batch_layout`, which dry runs compile steps from.
_BATCH_FIELD_LAYOUT = {
    **{key: (("L",), np.int32) for key in (*_TOKEN_KEYS, "tokens", "mask")},
    "margin": ((), np.float32),
    "valid": ((), np.bool_),
    **{key: (("A",) if "attribute" in key else (), dtype)
       for key, dtype in _OPTIONAL_PAIR_ARRAYS.items()},
}


def batch_layout(fields: Sequence[str], batch_size: int, max_len: int, *,
                 num_attributes: int = 5) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """Shapes and dtypes of a batch of pairs or sequences, without any data.

  The batch a step receives (`rmjax.train.batching.place_batch`): each field of `fields`
  as `gather` returns it, plus ``valid``. Token fields are int32 [B, L], per-pair scalars
  [B], attributes [B, A] (see the module docstring).

  Args:
    fields: batch field names (e.g. a task's `batch_fields`).
    batch_size: B.
    max_len: L, tokens per sequence (``data.max_len``).
    num_attributes: A, ratings per response of the attribute fields (default 5, HelpSteer2).

  Returns:
    {field: (shape, dtype)} for `fields` and ``valid``.

  >>> batch_layout(("tokens", "prompt_lengths"), 4, 16)["tokens"]
  ((4, 16), dtype('int32'))
  """
  batch_size = _check_int("batch_size", batch_size, 1)
  max_len = _check_int("max_len", max_len, 1)
  unknown = [f for f in fields if f not in _BATCH_FIELD_LAYOUT]
  if unknown:
    raise ValueError(f"fields: {unknown} have no known layout; expected fields of "
                     f"{sorted(_BATCH_FIELD_LAYOUT)}")
  sizes = {"L": max_len, "A": num_attributes}
  return {f: ((batch_size, *(sizes[a] for a in _BATCH_FIELD_LAYOUT[f][0])),
              np.dtype(_BATCH_FIELD_LAYOUT[f][1])) for f in (*fields, "valid")}


class PreferenceDataset(_IndexedArrays):
  """Tokenized preference pairs held as numpy arrays, served as batches.

  Attributes:
    arrays: dict of the per-pair arrays (N pairs): the `BATCH_KEYS` but ``valid``, and the
      optional ones (``preference_prob``, attributes, teacher strength, annotator ids).
    name: a label for messages ("train", "eval").
    pad_id: the token id at padding positions (the tokenizer's; models never read it).
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], *, name: str = "dataset",
               pad_id: int = tokenizer_lib.PAD_ID):
    """Validates and stores the arrays.

    Args:
      arrays: ``chosen_tokens``, ``chosen_mask``, ``rejected_tokens``, ``rejected_mask``
        (int32 [N, L], masks right-padded with >= 2 real tokens), ``margin`` (float32 [N]),
        optional ``preference_prob``, ``strength_mean``, ``strength_std`` (float32 [N]),
        ``chosen_attributes``, ``rejected_attributes`` (float32 [N, A]) with their
        ``*_attribute_mask`` (bool [N, A]), ``user_ids`` (int32 [N] >= 0, the annotator of
        each pair), ``prompt_lengths`` (int32 [N], the [BOS] + prompt tokens both sequences
        start with, 1 <= length < each sequence's real length).
      name: label for messages.
      pad_id: the id at padding positions (default 0, `ByteTokenizer`'s; an HF
        tokenizer's own pad id otherwise, e.g. SmolLM2's <|im_end|> = 2).
    """
    self.name = name
    self.pad_id = int(pad_id)
    arrays = dict(arrays)
    allowed = set(_TOKEN_KEYS) | {"margin"} | set(_OPTIONAL_PAIR_ARRAYS)
    missing = [k for k in (*_TOKEN_KEYS, "margin") if k not in arrays]
    unknown = sorted(set(arrays) - allowed)
    if missing or unknown:
      raise ValueError(
          f"{name}: arrays must hold {sorted(set(_TOKEN_KEYS) | {'margin'})} and optionally "
          f"{sorted(_OPTIONAL_PAIR_ARRAYS)}; missing {missing}, unknown {unknown}")
    shape = np.shape(arrays["chosen_tokens"])
    if len(shape) != 2 or shape[0] < 1:
      raise ValueError(
          f"{name}: chosen_tokens must be int32 [N, L] with N >= 1, got shape {list(shape)}")
    n, length = shape
    for key in _TOKEN_KEYS:
      arrays[key] = _check_array(name, key, arrays[key], (n, length), np.int32)
    arrays["margin"] = _check_array(name, "margin", arrays["margin"], (n,), np.float32)
    num_attributes = np.shape(arrays.get("chosen_attributes", np.zeros((n, 0))))[-1]
    for key, dtype in _OPTIONAL_PAIR_ARRAYS.items():
      if key in arrays:
        shape = (n, num_attributes) if "attribute" in key else (n,)
        arrays[key] = _check_array(name, key, arrays[key], shape, dtype)
    attribute_keys = [k for k in _OPTIONAL_PAIR_ARRAYS if "attribute" in k]
    if any(k in arrays for k in attribute_keys) and not all(k in arrays for k in attribute_keys):
      raise ValueError(f"{name}: attribute arrays come together: {attribute_keys}; got "
                       f"{sorted(k for k in attribute_keys if k in arrays)}")
    if "user_ids" in arrays and np.any(arrays["user_ids"] < 0):
      row = int(np.argmax(arrays["user_ids"] < 0))
      raise ValueError(f"{name}: user_ids must be >= 0, got {arrays['user_ids'][row]} at pair "
                       f"{row}")
    for side in ("chosen", "rejected"):
      _check_right_padded(name, side, arrays[f"{side}_mask"], arrays[f"{side}_tokens"],
                          self.pad_id)
    if "prompt_lengths" in arrays:
      real = np.minimum(arrays["chosen_mask"].sum(1), arrays["rejected_mask"].sum(1))
      bad = (arrays["prompt_lengths"] < 1) | (arrays["prompt_lengths"] >= real)
      if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"{name}: prompt_lengths[{row}]={arrays['prompt_lengths'][row]} must "
                         f"be in [1, {real[row]}) (BOS + prompt, inside both sequences)")
    self._arrays = arrays
    self._num_examples = int(n)
    self._init_index()

  @property
  def num_pairs(self) -> int:
    """N, the number of pairs."""
    return self._num_examples

  @property
  def max_len(self) -> int:
    """L, tokens per sequence."""
    return int(self._arrays["chosen_tokens"].shape[1])

  def __repr__(self) -> str:
    return (f"PreferenceDataset(name={self.name!r}, num_pairs={self._num_examples}, "
            f"max_len={self.max_len}, keys={sorted(self._arrays)})")


class ListDataset(_IndexedArrays):
  """Prompts with K ranked responses: ``tokens``, ``mask`` int32 [N, K, L], ``ranking``
  int32 [N, K] (ranking[n, k] = index of the response at place k, best first)."""

  def __init__(self, arrays: Mapping[str, np.ndarray], *, name: str = "dataset"):
    self.name = name
    arrays = dict(arrays)
    if sorted(arrays) != ["mask", "ranking", "tokens"]:
      raise ValueError(f"{name}: list arrays must be exactly ['mask', 'ranking', 'tokens'], "
                       f"got {sorted(arrays)}")
    shape = np.shape(arrays["tokens"])
    if len(shape) != 3 or shape[0] < 1 or shape[1] < 2:
      raise ValueError(f"{name}: tokens must be int32 [N, K, L] with N >= 1 and K >= 2, got "
                       f"shape {list(shape)}")
    n, k, length = shape
    arrays["tokens"] = _check_array(name, "tokens", arrays["tokens"], shape, np.int32)
    arrays["mask"] = _check_array(name, "mask", arrays["mask"], shape, np.int32)
    arrays["ranking"] = _check_array(name, "ranking", arrays["ranking"], (n, k), np.int32)
    if np.any(np.sort(arrays["ranking"], axis=1) != np.arange(k)[None, :]):
      raise ValueError(f"{name}: every ranking row must be a permutation of 0..{k - 1}")
    _check_right_padded(name, "list", arrays["mask"], arrays["tokens"])
    self._arrays = arrays
    self._num_examples = int(n)
    self._init_index()

  @property
  def num_pairs(self) -> int:
    """Ordered pairs the lists hold: N * K (K - 1) / 2."""
    n, k = self._arrays["ranking"].shape
    return n * k * (k - 1) // 2

  def __repr__(self) -> str:
    n, k, length = self._arrays["tokens"].shape
    return f"ListDataset(name={self.name!r}, num_lists={n}, list_size={k}, max_len={length})"


class SequenceDataset(_IndexedArrays):
  """(prompt, response) sequences for policy training: ``tokens``, ``mask`` int32 [N, L]
  (right-padded, >= 2 real tokens), ``prompt_lengths`` int32 [N] (the tokens before the
  response, in [1, real length)), and optional float arrays [N] (e.g. ``true_log_prob``,
  ``true_reward``) that stay on the host unless a task reads them."""

  def __init__(self, arrays: Mapping[str, np.ndarray], *, name: str = "dataset",
               pad_id: int = tokenizer_lib.PAD_ID):
    self.name = name
    self.pad_id = int(pad_id)
    arrays = dict(arrays)
    missing = [k for k in ("tokens", "mask", "prompt_lengths") if k not in arrays]
    if missing:
      raise ValueError(f"{name}: sequence arrays must hold tokens, mask and prompt_lengths; "
                       f"missing {missing}")
    shape = np.shape(arrays["tokens"])
    if len(shape) != 2 or shape[0] < 1:
      raise ValueError(f"{name}: tokens must be int32 [N, L] with N >= 1, got shape "
                       f"{list(shape)}")
    n = shape[0]
    arrays["tokens"] = _check_array(name, "tokens", arrays["tokens"], shape, np.int32)
    arrays["mask"] = _check_array(name, "mask", arrays["mask"], shape, np.int32)
    arrays["prompt_lengths"] = _check_array(name, "prompt_lengths", arrays["prompt_lengths"],
                                            (n,), np.int32)
    for key in sorted(set(arrays) - {"tokens", "mask", "prompt_lengths"}):
      arrays[key] = _check_array(name, key, arrays[key], (n,), np.float32)
    _check_right_padded(name, "sequence", arrays["mask"], arrays["tokens"], self.pad_id)
    real = arrays["mask"].sum(1)
    bad = (arrays["prompt_lengths"] < 1) | (arrays["prompt_lengths"] >= real)
    if bad.any():
      row = int(np.argmax(bad))
      raise ValueError(f"{name}: prompt_lengths[{row}]={arrays['prompt_lengths'][row]} must be "
                       f"in [1, {real[row]}) (the response needs at least one token)")
    self._arrays = arrays
    self._num_examples = int(n)
    self._init_index()

  @property
  def max_len(self) -> int:
    """L, tokens per sequence."""
    return int(self._arrays["tokens"].shape[1])

  def __repr__(self) -> str:
    return (f"SequenceDataset(name={self.name!r}, num_sequences={self._num_examples}, "
            f"max_len={self.max_len})")


class EpisodeDataset(_IndexedArrays):
  """User episodes of P pairs (context then query): the pair token arrays int32 [N, P, L],
  ``preference_prob`` float32 [N, P], ``user_group`` int32 [N]; ``context_pairs`` says how
  many of the P pairs are the user's annotated context."""

  def __init__(self, arrays: Mapping[str, np.ndarray], *, context_pairs: int,
               name: str = "dataset"):
    self.name = name
    arrays = dict(arrays)
    expected = sorted((*_TOKEN_KEYS, "preference_prob", "user_group"))
    if sorted(arrays) != expected:
      raise ValueError(f"{name}: episode arrays must be exactly {expected}, got {sorted(arrays)}")
    shape = np.shape(arrays["chosen_tokens"])
    if len(shape) != 3 or shape[0] < 1:
      raise ValueError(f"{name}: chosen_tokens must be int32 [N, P, L] with N >= 1, got shape "
                       f"{list(shape)}")
    n, p, _ = shape
    context_pairs = _check_int("context_pairs", context_pairs, 1)
    if context_pairs >= p:
      raise ValueError(f"{name}: context_pairs={context_pairs} leaves no query pair of P={p}")
    for key in _TOKEN_KEYS:
      arrays[key] = _check_array(name, key, arrays[key], shape, np.int32)
    arrays["preference_prob"] = _check_array(name, "preference_prob", arrays["preference_prob"],
                                             (n, p), np.float32)
    arrays["user_group"] = _check_array(name, "user_group", arrays["user_group"], (n,), np.int32)
    for side in ("chosen", "rejected"):
      _check_right_padded(name, side, arrays[f"{side}_mask"], arrays[f"{side}_tokens"])
    self._arrays = arrays
    self._num_examples = int(n)
    self.context_pairs = context_pairs
    self._init_index()

  @property
  def num_pairs(self) -> int:
    """Query pairs (the ones predicted): N * (P - context_pairs)."""
    n, p = self._arrays["preference_prob"].shape
    return n * (p - self.context_pairs)

  def __repr__(self) -> str:
    n, p = self._arrays["preference_prob"].shape
    return (f"EpisodeDataset(name={self.name!r}, num_episodes={n}, pairs={p}, "
            f"context_pairs={self.context_pairs})")

