"""Length buckets: pad a batch to the shortest of a few lengths that holds its longest sequence.

Every sequence is tokenized right-padded to ``max_len`` (`rmjax.data.tokenize_pairs`); a
batch whose longest real sequence has n tokens can be cut to any width w >= n without
changing what a model reads (right padding is masked out: causal or masked attention,
RoPE positions counted from the first real token, the reward at the last real token or a
masked mean). Cutting to the smallest bucket w >= n saves (max_len - w) / max_len of the
padded work, and a jitted step compiles once per bucket it meets, so the number of
programs is at most the number of buckets.

``data.length_buckets`` names the buckets of a sequence axis of length ``max_len``:

  ""              no buckets: every batch keeps max_len (the default)
  "multiple:K"    K, 2K, 3K, ... below max_len, and max_len   (ceil(max_len / K) buckets)
  "pow2"          8, 16, 32, ... below max_len, and max_len   (ceil(log2(max_len / 8)) + 1)
  "a,b,c"         the given lengths (increasing, each <= max_len), and max_len

max_len is always the last bucket, so every batch has one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# The smallest bucket of "pow2".
_POW2_START = 8


def length_buckets(spec: str, max_len: int) -> tuple[int, ...]:
  """The increasing bucket lengths of a ``data.length_buckets`` setting (module docstring).

  Args:
    spec: "", "multiple:K", "pow2" or comma-separated lengths.
    max_len: the sequence axis's length; always the last bucket.

  Returns:
    The buckets, increasing, ending with max_len; ``(max_len,)`` for "".

  Raises:
    ValueError: a malformed spec, naming ``data.length_buckets`` and what came.

  >>> length_buckets("multiple:64", 200)
  (64, 128, 192, 200)
  >>> length_buckets("pow2", 24), length_buckets("", 24), length_buckets("12, 16", 24)
  ((8, 16, 24), (24,), (12, 16, 24))
  """
  if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
    raise ValueError(f"length_buckets: max_len must be a positive int, got {max_len!r}")
  max_len = int(max_len)
  if not isinstance(spec, str):
    raise ValueError(f"data.length_buckets: expected a string ('', 'multiple:K', 'pow2' or "
                     f"'a,b,c'), got {spec!r} ({type(spec).__name__})")
  text = spec.strip()
  if not text:
    return (max_len,)
  if text == "pow2":
    below = [2 ** k * _POW2_START for k in range(max_len.bit_length())
             if 2 ** k * _POW2_START < max_len]
    return (*below, max_len)
  if text.startswith("multiple:"):
    step = text[len("multiple:"):].strip()
    if not step.isdigit() or int(step) < 1:
      raise ValueError(f"data.length_buckets: 'multiple:K' needs a positive integer K, got "
                       f"{spec!r}")
    return (*range(int(step), max_len, int(step)), max_len)
  try:
    lengths = [int(x) for x in text.split(",")]
  except ValueError:
    raise ValueError(f"data.length_buckets: expected '', 'multiple:K', 'pow2' or "
                     f"comma-separated lengths, got {spec!r}") from None
  if any(b < 1 for b in lengths) or any(b >= a for a, b in zip(lengths[1:], lengths)):
    raise ValueError(f"data.length_buckets: lengths must be positive and increasing, got "
                     f"{spec!r}")
  if lengths[-1] > max_len:
    raise ValueError(f"data.length_buckets: bucket {lengths[-1]} exceeds data.max_len="
                     f"{max_len} (sequences are never longer), got {spec!r}")
  return tuple(lengths) if lengths[-1] == max_len else (*lengths, max_len)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest of `buckets` (increasing) that holds `length` tokens.

  Raises:
    ValueError: `length` exceeds the largest bucket (a sequence longer than max_len: the
      data layer truncates to max_len, so this is a caller's error, never a silent cut).

  >>> bucket_length(17, (8, 16, 24)), bucket_length(16, (8, 16, 24)), bucket_length(0, (8,))
  (24, 16, 8)
  """
  if length > buckets[-1]:
    raise ValueError(f"length_buckets: a sequence of {length} tokens does not fit the "
                     f"largest bucket {buckets[-1]} (data.max_len); buckets {tuple(buckets)}")
  return int(buckets[int(np.searchsorted(buckets, length, side="left"))])


def longest_real_lengths(arrays: Mapping[str, np.ndarray], mask_fields: Sequence[str]
                         ) -> tuple[int, np.ndarray]:
  """(L, int64 [N]): the sequence length L and each example's longest real sequence.

  Args:
    arrays: a dataset's arrays, N examples each.
    mask_fields: the right-padded token masks [N, ..., L] of an example (the ones of
      `arrays` present are read; e.g. chosen_mask and rejected_mask of a pair, mask [N, K,
      L] of a list), nonzero at real tokens.

  Returns:
    L (0 without a mask field) and, per example, the width a batch of it can be cut to:
    the largest (last real position + 1) over its sequences (the mask row's length for
    right padding; L for a left-padded row, which no width below L keeps whole; 0 for a
    row without real tokens).

  Raises:
    ValueError: mask fields of different lengths L.
  """
  masks = [np.asarray(arrays[k]) for k in mask_fields if k in arrays]
  if not masks:
    return 0, np.zeros(0, np.int64)
  widths = {m.shape[-1] for m in masks}
  if len(widths) != 1:
    raise ValueError(f"longest_real_lengths: mask fields {list(mask_fields)} have different "
                     f"lengths {sorted(widths)}")
  n = masks[0].shape[0]
  longest = np.zeros(n, np.int64)
  for m in masks:
    real = (m != 0).reshape(n, -1, m.shape[-1])
    last_plus_one = m.shape[-1] - np.argmax(real[..., ::-1], axis=-1)
    per_sequence = np.where(real.any(axis=-1), last_plus_one, 0).astype(np.int64)
    longest = np.maximum(longest, per_sequence.max(axis=1))
  return widths.pop(), longest
