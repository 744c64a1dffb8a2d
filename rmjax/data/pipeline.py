"""Loading preference data and batching it deterministically.

`load_preference_data` turns a data config into tokenized numpy arrays for a train and an
eval split, plus a report (``info``) that accounts for every record. `PreferenceDataset`
serves them as batches.

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

import logging
import math
import os
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import grain
import ml_collections
import numpy as np

from rmjax.data import synthetic as synthetic_lib
from rmjax.data import tokenizer as tokenizer_lib
from rmjax.data.builders import base as builders_base
from rmjax.data.builders import records as records_lib
from rmjax.data.builders.hh_rlhf import HhRlhf
from rmjax.data.builders.preference_jsonl import PreferenceJsonl

SOURCES = ("synthetic", "jsonl", "hh_rlhf")
FORMATS = ("pairs", "lists", "user_episodes")
BATCH_KEYS = ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask", "margin",
              "valid")
_TOKEN_KEYS = ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask")
_MAX_EXAMPLES = 20

_log = logging.getLogger(__name__)


def default_data_config() -> ml_collections.ConfigDict:
  """The data config with every field at its default.

  Fields:
    source: "synthetic" (default), "jsonl" (generic preference JSONL) or "hh_rlhf".
    format: "pairs" (default), "lists" (K ranked responses per prompt) or "user_episodes"
      (a user's context + query pairs); the last two are synthetic only.
    attributes: False; True adds the synthetic HelpSteer2-style ratings of both responses.
    max_len: 128, tokens per sequence (BOS + prompt + response + EOS, right-padded).
    max_prompt_len: 64, most prompt tokens kept (cut from the left).
    on_malformed: "skip" (count, report, leave out) or "fail" (raise on the first).
    path: "" (real data: JSONL file(s), plain or .gz, comma-separated for several).
    eval_path: "" (then `eval_fraction` of `path` is held out as eval).
    eval_fraction: 0.1.
    split_seed: 0, seed of the train/eval hold-out.
    tfds_data_dir: "" (then ``<workdir>/tfds``).
    synthetic: the generator settings (see `rmjax.data.synthetic`): seed 0, world_seed 0,
      num_train 32768, num_eval 4096, prompt_len_min 2, prompt_len_max 5,
      response_len_min 4, response_len_max 12, num_letters 10, match_bonus 1.0,
      temperature 0.11. Its sequences hold at most 19 tokens, so ``max_len = 24`` with
      ``max_prompt_len = 8`` loses nothing and trains several times faster than the
      default 128.
  """
  return ml_collections.ConfigDict(dict(
      source="synthetic",
      format="pairs",
      attributes=False,
      max_len=128,
      max_prompt_len=64,
      on_malformed="skip",
      path="",
      eval_path="",
      eval_fraction=0.1,
      split_seed=0,
      tfds_data_dir="",
      synthetic=ml_collections.ConfigDict(synthetic_lib.default_synthetic_config()),
  ))


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
    for start in range(0, self._num_examples, batch_size):
      indices = np.arange(start, min(start + batch_size, self._num_examples))
      real = len(indices)
      indices = np.concatenate([indices, np.full(batch_size - real, indices[-1])])
      yield self.gather(indices, valid=np.arange(batch_size) < real)


def _check_right_padded(name: str, what: str, mask: np.ndarray, tokens: np.ndarray) -> None:
  """mask [..., L]: each row 1s then 0s with >= 2 real tokens; tokens are PAD where 0."""
  rows = mask.reshape(-1, mask.shape[-1])
  lengths = rows.sum(axis=1)
  expected = np.arange(rows.shape[1])[None, :] < lengths[:, None]
  bad_rows = np.flatnonzero(np.any(rows != expected, axis=1) | (lengths < 2))
  if bad_rows.size:
    bad = int(bad_rows[0])
    raise ValueError(
        f"{name}: {what}_mask row {bad} must be 1s then 0s (right-padded) with >= 2 "
        f"real tokens, got {rows[bad].tolist()}")
  if np.any(tokens[mask == 0] != tokenizer_lib.PAD_ID):
    raise ValueError(f"{name}: {what}_tokens must hold pad id 0 where {what}_mask is 0")


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
}


class PreferenceDataset(_IndexedArrays):
  """Tokenized preference pairs held as numpy arrays, served as batches.

  Attributes:
    arrays: dict of the per-pair arrays (N pairs): the `BATCH_KEYS` but ``valid``, and the
      optional ones (``preference_prob``, attributes, teacher strength).
    name: a label for messages ("train", "eval").
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], *, name: str = "dataset"):
    """Validates and stores the arrays.

    Args:
      arrays: ``chosen_tokens``, ``chosen_mask``, ``rejected_tokens``, ``rejected_mask``
        (int32 [N, L], masks right-padded with >= 2 real tokens), ``margin`` (float32 [N]),
        optional ``preference_prob``, ``strength_mean``, ``strength_std`` (float32 [N]),
        ``chosen_attributes``, ``rejected_attributes`` (float32 [N, A]) with their
        ``*_attribute_mask`` (bool [N, A]).
      name: label for messages.
    """
    self.name = name
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
    for side in ("chosen", "rejected"):
      _check_right_padded(name, side, arrays[f"{side}_mask"], arrays[f"{side}_tokens"])
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


class PreferenceData(NamedTuple):
  """What `load_preference_data` returns.

  Attributes:
    train: the training pairs (a `ListDataset` or `EpisodeDataset` for those formats).
    eval: the evaluation pairs (an `EpisodeDataset` for format "user_episodes").
    info: the report: source, paths, counts read/used/malformed by reason, the hold-out,
      truncation per split, and for synthetic data the Bayes-optimal accuracy.
  """

  train: PreferenceDataset
  eval: PreferenceDataset
  info: dict[str, Any]


def tokenize_pairs(
    prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], *,
    max_len: int, max_prompt_len: int, sources: Sequence[str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Tokenizes N pairs with `ByteTokenizer` and counts what truncation cut.

  Args:
    prompts, chosen, rejected: N strings each.
    max_len: L.
    max_prompt_len: most prompt tokens kept.
    sources: optional N labels (e.g. "file:line") used in the report's examples.

  Returns:
    arrays: ``chosen_tokens``, ``chosen_mask``, ``rejected_tokens``, ``rejected_mask``,
      int32 [N, L].
    report: ``pairs``, ``prompts_truncated`` (pairs whose prompt lost tokens),
      ``chosen_truncated``, ``rejected_truncated``, ``pairs_with_truncation``,
      ``prompt_tokens_cut``, ``response_tokens_cut``, ``identical_after_truncation`` (pairs
      whose two sequences became equal; kept, but no model can tell them apart) with up to
      20 examples, and ``max_real_length`` / ``mean_real_length`` of the sequences.
  """
  tokenizer_lib.validate_lengths(max_len, max_prompt_len)
  n = len(prompts)
  if not len(chosen) == len(rejected) == n:
    raise ValueError(f"prompts, chosen and rejected must have equal lengths, got {n}, "
                     f"{len(chosen)}, {len(rejected)}")
  tok = tokenizer_lib.ByteTokenizer()
  out = {k: np.zeros((n, max_len), dtype=np.int32) for k in _TOKEN_KEYS}
  cut = {k: np.zeros(n, dtype=np.int64) for k in ("prompt", "chosen", "rejected")}
  for i in range(n):
    for side, texts in (("chosen", chosen), ("rejected", rejected)):
      tokens, mask, trunc = tok.encode_pair_sequences(
          prompts[i], texts[i], max_len=max_len, max_prompt_len=max_prompt_len)
      out[f"{side}_tokens"][i] = tokens
      out[f"{side}_mask"][i] = mask
      cut[side][i] = trunc.response_tokens_cut
      cut["prompt"][i] = trunc.prompt_tokens_cut
  identical = np.flatnonzero(np.all(out["chosen_tokens"] == out["rejected_tokens"], axis=1))
  lengths = np.concatenate([out["chosen_mask"].sum(1), out["rejected_mask"].sum(1)])
  label = (lambda i: sources[i]) if sources is not None else (lambda i: f"pair {i}")
  report = dict(
      pairs=n,
      max_len=max_len,
      max_prompt_len=max_prompt_len,
      prompts_truncated=int((cut["prompt"] > 0).sum()),
      chosen_truncated=int((cut["chosen"] > 0).sum()),
      rejected_truncated=int((cut["rejected"] > 0).sum()),
      pairs_with_truncation=int(((cut["prompt"] + cut["chosen"] + cut["rejected"]) > 0).sum()),
      prompt_tokens_cut=int(cut["prompt"].sum()),
      response_tokens_cut=int(cut["chosen"].sum() + cut["rejected"].sum()),
      identical_after_truncation=int(len(identical)),
      identical_after_truncation_examples=[label(int(i)) for i in identical[:_MAX_EXAMPLES]],
      max_real_length=int(lengths.max()) if n else 0,
      mean_real_length=float(lengths.mean()) if n else 0.0,
  )
  return out, report


def _dataset_from_columns(columns: Mapping[str, Any], name: str, max_len: int,
                          max_prompt_len: int, sources: Sequence[str] | None = None,
                          preference_prob: np.ndarray | None = None,
                          extra: Mapping[str, np.ndarray] | None = None):
  arrays, report = tokenize_pairs(
      columns["prompt"], columns["chosen"], columns["rejected"], max_len=max_len,
      max_prompt_len=max_prompt_len, sources=sources)
  arrays["margin"] = np.asarray(columns["margin"], dtype=np.float32)
  if preference_prob is not None:
    arrays["preference_prob"] = np.asarray(preference_prob, dtype=np.float32)
  arrays.update(extra or {})
  return PreferenceDataset(arrays, name=name), report


def _validate_config(cfg: Any) -> None:
  source = cfg.get("source")
  if source not in SOURCES:
    raise ValueError(f"data_config.source must be one of {list(SOURCES)}, got {source!r}")
  if cfg.get("format") not in FORMATS:
    raise ValueError(f"data_config.format must be one of {list(FORMATS)}, got "
                     f"{cfg.get('format')!r}")
  if source != "synthetic" and (cfg.get("format") != "pairs" or cfg.get("attributes")):
    raise ValueError(
        f"data_config.format={cfg.get('format')!r} / attributes={cfg.get('attributes')!r}: "
        f"source={source!r} provides pairs without attributes; lists, user episodes and "
        "attribute ratings are generated for source='synthetic' only")
  if cfg.get("attributes") and cfg.get("format") != "pairs":
    raise ValueError("data_config.attributes=True needs data_config.format='pairs', got "
                     f"{cfg.get('format')!r}")
  try:
    tokenizer_lib.validate_lengths(cfg.get("max_len"), cfg.get("max_prompt_len"))
  except ValueError as e:
    raise ValueError(f"data_config: {e}") from None
  if source != "synthetic":
    if cfg.get("on_malformed") not in records_lib.ON_MALFORMED_CHOICES:
      raise ValueError(
          f"data_config.on_malformed must be one of {list(records_lib.ON_MALFORMED_CHOICES)}, "
          f"got {cfg.get('on_malformed')!r}")
    if not records_lib.split_paths(cfg.get("path") or ""):
      raise ValueError(
          f"data_config.path must name the JSONL file(s) of source={source!r}, got "
          f"{cfg.get('path')!r}")
    if not records_lib.split_paths(cfg.get("eval_path") or ""):
      fraction = cfg.get("eval_fraction")
      if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
          or not 0 < fraction < 1):
        raise ValueError(
            f"data_config.eval_fraction must lie in (0, 1) when eval_path is empty, got "
            f"{fraction!r}")
    _check_int("data_config.split_seed", cfg.get("split_seed"), 0)


def _merged_config(data_config: Any) -> ml_collections.ConfigDict:
  cfg = default_data_config()
  given = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
  unknown = sorted(set(given) - set(cfg))
  if unknown:
    raise ValueError(f"data_config has unknown field(s) {unknown}; known: {sorted(cfg)}")
  synthetic = given.pop("synthetic", None) or {}
  unknown = sorted(set(synthetic) - set(cfg.synthetic))
  if unknown:
    raise ValueError(f"data_config.synthetic has unknown field(s) {unknown}; known: "
                     f"{sorted(cfg.synthetic)}")
  cfg.update(given)
  cfg.synthetic.update(synthetic)
  return cfg


def _attribute_arrays(split: synthetic_lib.SyntheticSplit, missing_prob: float,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
  """The attribute ratings of a split and their masks (each rating missing w.p. missing_prob)."""
  out = {}
  for side in ("chosen", "rejected"):
    ratings = getattr(split, f"{side}_attributes")
    present = rng.random(ratings.shape) >= missing_prob
    out[f"{side}_attributes"] = np.where(present, ratings, 0.0).astype(np.float32)
    out[f"{side}_attribute_mask"] = present
  return out


def _tokenize_lists(lists: synthetic_lib.SyntheticLists, max_len: int, max_prompt_len: int
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """[N, K, L] tokens and masks of N prompts x K responses, and the truncation report."""
  n, k = lists.ranking.shape
  prompts = [p for p in lists.prompt for _ in range(k)]
  responses = [r for row in lists.responses for r in row]
  # Tokenize as pairs of (response, response) and keep one side: one tokenizer path.
  arrays, report = tokenize_pairs(prompts, responses, responses, max_len=max_len,
                                  max_prompt_len=max_prompt_len)
  tokens = arrays["chosen_tokens"].reshape(n, k, max_len)
  mask = arrays["chosen_mask"].reshape(n, k, max_len)
  report = {key: report[key] for key in ("max_len", "max_prompt_len", "prompts_truncated",
                                         "chosen_truncated", "prompt_tokens_cut",
                                         "max_real_length", "mean_real_length")}
  report["responses"] = n * k
  report["responses_truncated"] = report.pop("chosen_truncated")
  report["pairs_with_truncation"] = report["responses_truncated"] + report["prompts_truncated"]
  return {"tokens": tokens, "mask": mask, "ranking": lists.ranking.astype(np.int32)}, report


def _episode_dataset(episodes: synthetic_lib.SyntheticEpisodes, name: str, cfg
                     ) -> tuple[EpisodeDataset, dict[str, Any]]:
  n, p = episodes.preference_prob.shape
  flat = lambda rows: [x for row in rows for x in row]  # noqa: E731
  arrays, report = tokenize_pairs(flat(episodes.prompt), flat(episodes.chosen),
                                  flat(episodes.rejected), max_len=cfg.max_len,
                                  max_prompt_len=cfg.max_prompt_len)
  arrays = {k: v.reshape(n, p, cfg.max_len) for k, v in arrays.items()}
  arrays["preference_prob"] = episodes.preference_prob.astype(np.float32)
  arrays["user_group"] = episodes.group.astype(np.int32)
  return EpisodeDataset(arrays, context_pairs=cfg.synthetic.context_pairs, name=name), report


def _load_synthetic(cfg: ml_collections.ConfigDict) -> PreferenceData:
  s = synthetic_lib.default_synthetic_config() | cfg.synthetic.to_dict()
  train, eval_, gen_info = synthetic_lib.make_synthetic_preferences(s)
  datasets, truncation = {}, {}
  attribute_rng = np.random.default_rng([s["seed"], 2])
  for name, split in (("train", train), ("eval", eval_)):
    columns = dict(prompt=split.prompt, chosen=split.chosen, rejected=split.rejected,
                   margin=split.margin)
    datasets[name], truncation[name] = _dataset_from_columns(
        columns, name, cfg.max_len, cfg.max_prompt_len,
        preference_prob=split.preference_prob,
        extra=(_attribute_arrays(split, s["attribute_missing_prob"], attribute_rng)
               if cfg.attributes else None))
  extra_info = {}
  if cfg.format == "lists":
    # Train on ranked lists; evaluate on the same held-out pairs as every other model.
    world = synthetic_lib.make_world(s["world_seed"], s["num_letters"])
    lists = synthetic_lib.sample_lists(s["num_train"], s["list_size"],
                                       np.random.default_rng([s["seed"], 3]), world, s)
    arrays, truncation["train"] = _tokenize_lists(lists, cfg.max_len, cfg.max_prompt_len)
    datasets["train"] = ListDataset(arrays, name="train")
    extra_info["lists"] = dict(num_lists=s["num_train"], list_size=s["list_size"],
                               labels="Plackett-Luce ranking with utilities r*/temperature")
  elif cfg.format == "user_episodes":
    worlds = synthetic_lib.user_group_worlds(s["world_seed"], s["num_letters"],
                                             s["num_user_groups"])
    for name, count, stream in (("train", s["num_train"], 4), ("eval", s["num_eval"], 5)):
      episodes = synthetic_lib.sample_user_episodes(
          count, np.random.default_rng([s["seed"], stream]), worlds, s)
      datasets[name], truncation[name] = _episode_dataset(episodes, name, cfg)
      query = episodes.preference_prob[:, s["context_pairs"]:]
      gen_info[name] = dict(
          num_episodes=count, num_query_pairs=int(query.size),
          bayes_optimal_accuracy=float(np.mean(np.maximum(query, 1 - query))),
          group_blind_bayes_accuracy=float(np.mean(
              episodes.group_blind_prob[:, s["context_pairs"]:])),
          group_agreement_with_group_0=episodes.agreement)
    extra_info["user_episodes"] = dict(
        num_user_groups=s["num_user_groups"], context_pairs=s["context_pairs"],
        query_pairs=s["query_pairs"],
        groups="group 0: world w; group 1: -w; group g >= 2: world from world_seed + g")
  n_train, n_eval = datasets["train"].num_examples, datasets["eval"].num_examples
  notes = []
  if any(t["pairs_with_truncation"] for t in truncation.values()):
    notes.append(
        "some synthetic sequences were truncated, so the Bayes-optimal accuracy (computed on "
        "the untruncated pairs) is not reachable from the visible tokens; raise max_len / "
        "max_prompt_len")
  info = dict(
      source="synthetic",
      format=cfg.format,
      max_len=cfg.max_len,
      max_prompt_len=cfg.max_prompt_len,
      records_read=n_train + n_eval,
      records_used=n_train + n_eval,
      records_malformed=0,
      malformed={},
      split=dict(method="generated", num_train=n_train, num_eval=n_eval),
      truncation=truncation,
      bayes_optimal_accuracy=dict(train=gen_info["train"]["bayes_optimal_accuracy"],
                                  eval=gen_info["eval"]["bayes_optimal_accuracy"]),
      synthetic=gen_info,
      notes=notes,
      **extra_info,
  )
  if cfg.format != "user_episodes":
    info["ground_truth_accuracy_on_labels"] = dict(
        train=gen_info["train"]["ground_truth_accuracy_on_labels"],
        eval=gen_info["eval"]["ground_truth_accuracy_on_labels"])
  if cfg.format == "lists":
    info["bayes_optimal_accuracy"].pop("train")
  return PreferenceData(datasets["train"], datasets["eval"], info)


def _load_files(cfg: ml_collections.ConfigDict, workdir: str) -> PreferenceData:
  builder_cls = PreferenceJsonl if cfg.source == "jsonl" else HhRlhf
  train_files = records_lib.split_paths(cfg.path)
  eval_files = records_lib.split_paths(cfg.eval_path or "")
  records_lib.check_files_exist(train_files, "data_config.path")
  records_lib.check_files_exist(eval_files, "data_config.eval_path")
  data_dir = cfg.tfds_data_dir or os.path.join(workdir, "tfds")
  builder, report = builders_base.prepare(
      builder_cls, path=train_files, eval_path=eval_files, on_malformed=cfg.on_malformed,
      data_dir=data_dir)
  train_columns = builders_base.read_split(builder, "train")
  if eval_files:
    eval_columns = builders_base.read_split(builder, "eval")
    split = dict(method="eval_path", num_train=len(train_columns["prompt"]),
                 num_eval=len(eval_columns["prompt"]))
  else:
    n = len(train_columns["prompt"])
    if n < 2:
      raise ValueError(
          f"data_config.path {list(train_files)} has {n} usable record(s); holding out "
          f"eval_fraction={cfg.eval_fraction} needs at least 2 (or give data_config.eval_path)")
    num_eval = min(max(1, int(round(cfg.eval_fraction * n))), n - 1)
    perm = np.random.default_rng(cfg.split_seed).permutation(n)
    eval_idx, train_idx = np.sort(perm[:num_eval]), np.sort(perm[num_eval:])
    take = lambda cols, idx: {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx])
                              for k, v in cols.items()}
    train_columns, eval_columns = take(train_columns, train_idx), take(train_columns, eval_idx)
    split = dict(method="held_out_fraction", eval_fraction=cfg.eval_fraction,
                 split_seed=cfg.split_seed, num_train=n - num_eval, num_eval=num_eval)
  datasets, truncation = {}, {}
  for name, columns in (("train", train_columns), ("eval", eval_columns)):
    sources = [f"{f}:{l}" for f, l in zip(columns["source_file"], columns["source_line"])]
    datasets[name], truncation[name] = _dataset_from_columns(
        columns, name, cfg.max_len, cfg.max_prompt_len, sources=sources)
  info = dict(
      source=cfg.source,
      max_len=cfg.max_len,
      max_prompt_len=cfg.max_prompt_len,
      paths=dict(path=list(builder.builder_config.path),
                 eval_path=list(builder.builder_config.eval_path)),
      on_malformed=cfg.on_malformed,
      records_read=report["records_read"],
      records_used=report["records_used"],
      records_malformed=report["records_malformed"],
      malformed={k: v for k, v in report["malformed"].items() if v},
      blank_lines=sum(s["blank_lines"] for s in report["splits"].values()),
      split=split,
      truncation=truncation,
      tfds=dict(builder=builder.name, config_name=builder.builder_config.name,
                prepared_dir=os.fspath(builder.data_dir),
                report_file=os.path.join(os.fspath(builder.data_dir),
                                         builders_base.REPORT_FILENAME)),
      preparation_report=report,
      notes=[],
  )
  return PreferenceData(datasets["train"], datasets["eval"], info)


def load_preference_data(data_config: Any, *, workdir: str) -> PreferenceData:
  """Loads, tokenizes and splits the preference data named by ``data_config``.

  Real data (``jsonl``, ``hh_rlhf``) is prepared once by the TFDS builder under
  ``tfds_data_dir`` (default ``<workdir>/tfds``), read back with ``as_data_source`` and
  tokenized with `ByteTokenizer`. Without ``eval_path`` a fraction ``eval_fraction`` of the
  records is held out by a permutation drawn from ``split_seed`` (both splits keep file
  order). Synthetic data is generated in memory.

  Args:
    data_config: a ConfigDict or mapping with fields of `default_data_config` (missing
      fields take their defaults; unknown ones raise).
    workdir: run directory; prepared data goes under ``<workdir>/tfds`` by default.

  Returns:
    `PreferenceData` (train, eval, info).

  Raises:
    ValueError: unknown ``source``, bad lengths or fractions, a dataset without usable
      records.
    FileNotFoundError: a data file is missing (names the config field and the path).
    MalformedRecordError: under ``on_malformed="fail"``, on the first malformed record.
  """
  cfg = _merged_config(data_config)
  _validate_config(cfg)
  if cfg.source == "synthetic":
    data = _load_synthetic(cfg)
  else:
    data = _load_files(cfg, workdir)
  info = data.info
  _log.info(
      "preference data (%s): %d records read, %d used, %d malformed %s; %d train / %d eval "
      "pairs; truncated pairs: train %d, eval %d", info["source"], info["records_read"],
      info["records_used"], info["records_malformed"], info["malformed"],
      data.train.num_pairs, data.eval.num_pairs,
      info["truncation"]["train"]["pairs_with_truncation"],
      info["truncation"]["eval"]["pairs_with_truncation"])
  return data
