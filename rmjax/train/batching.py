"""Batches on the mesh: each process gathers its own rows, one global array per field.

Datasets are numpy arrays with a leading example axis and deterministic batch indices
(`rmjax.data`): batch `step` is a function of (seed, step) alone, so every process computes
the same indices, gathers only the rows its devices hold under the batch sharding, and
`jax.make_array_from_process_local_data` assembles the global arrays (one process: all rows,
a plain transfer).

Length buckets (`BatchPlacer`, ``data.length_buckets``): this is where the padded length of
a batch is decided. Datasets hold every sequence right-padded to max_len; the placer cuts
the fields with a token axis to the shortest bucket that holds the batch's longest real
sequence (`rmjax.data.buckets`). The bucket is a function of the GLOBAL batch's indices and
the whole dataset's masks, which every process holds, so all processes pick the same width
for a step without communicating (the global arrays they assemble have one shape), and a
jitted step compiles at most once per bucket.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rmjax import parallel
from rmjax.data import buckets as buckets_lib


def row_ranges(rows: np.ndarray) -> str:
  """'[0, 8)' or '[0, 4) [8, 12)': sorted row indices as half-open ranges."""
  if not len(rows):
    return "none"
  breaks = np.flatnonzero(np.diff(rows) != 1)
  starts = np.concatenate([rows[:1], rows[breaks + 1]])
  stops = np.concatenate([rows[breaks], rows[-1:]]) + 1
  return " ".join(f"[{a}, {b})" for a, b in zip(starts, stops))


def select_fields(batch: dict[str, np.ndarray], fields: Sequence[str]) -> dict[str, np.ndarray]:
  """The fields of `batch` a step reads: `fields` that the batch has, and 'valid'.

  Everything else (ground truth kept for evaluation on the host, unused annotations) stays
  on the host.
  """
  if "valid" not in batch:
    raise KeyError(f"batch: missing field 'valid'; it has {sorted(batch)}")
  return {k: v for k, v in batch.items() if k in fields or k == "valid"}


def cut_to_width(batch: Mapping[str, np.ndarray], width: int,
                 length_axes: Mapping[str, int]) -> dict[str, np.ndarray]:
  """`batch` with each field of `length_axes` cut to its first `width` positions.

  Args:
    batch: {field: [B, ...]} arrays.
    width: the positions kept along each token axis (<= its length).
    length_axes: field -> its token axis (e.g. -1 for tokens [B, L], -2 for features
      [B, L, D]); fields the batch lacks are skipped, other fields are kept whole.

  Raises:
    ValueError: a token axis shorter than `width`.
  """
  out = dict(batch)
  for key, axis in length_axes.items():
    if key not in out:
      continue
    value = out[key]
    if value.shape[axis] < width:
      raise ValueError(f"cut_to_width: field {key!r} has {value.shape[axis]} positions on "
                       f"axis {axis} (shape {value.shape}), fewer than width {width}")
    index = [slice(None)] * value.ndim
    index[axis] = slice(0, width)
    out[key] = value[tuple(index)]
  return out


def place_batch(dataset, indices: np.ndarray, sharding, fields: Sequence[str],
                valid: np.ndarray | None = None, *, width: int | None = None,
                length_axes: Mapping[str, int] | None = None) -> dict:
  """The global device batch of `dataset`'s examples at `indices`, loaded per process.

  Args:
    dataset: a dataset with `gather(indices, valid) -> {field: [B, ...]}` (`rmjax.data`).
    indices: [B] example indices of the global batch.
    sharding: the batch sharding (leading axis split over the mesh's batch axes).
    fields: the fields the step reads (`select_fields`).
    valid: optional [B] bool, False for padding rows.
    width: optional; the fields of `length_axes` are cut to this many positions
      (`cut_to_width`); every process must pass the same (`BatchPlacer` does).
    length_axes: field -> token axis, with `width`.

  Returns:
    {field: global jax.Array [B, ...]} split along the leading axis.
  """
  rows = parallel.process_rows(sharding, len(indices))
  local = select_fields(
      dataset.gather(indices[rows], None if valid is None else np.asarray(valid)[rows]), fields)
  if width is not None:
    local = cut_to_width(local, width, length_axes or {})
  return parallel.global_batch(sharding, local, len(indices))


class BatchPlacer:
  """`placer(dataset, indices, valid=None)`: `place_batch`, cut to the batch's length bucket.

    width(batch) = min{ b in buckets : b >= max_{i in batch} longest real sequence of i }

  with ``buckets = length_buckets(spec, L)`` of each dataset's own sequence length L
  (`rmjax.data.buckets`). The width is computed from the global batch's `indices` and the
  dataset's whole masks, the same on every process (no collective needed); each jitted
  function that reads the batch compiles at most ``len(buckets)`` times. With ``spec = ""``
  or no `length_axes`, batches keep their full length (no cut).

  Args:
    sharding: the batch sharding.
    fields: the fields the step reads.
    length_axes: field -> token axis (`rmjax.train.Task.length_axes`).
    mask_fields: the right-padded token masks [N, ..., L] of an example
      (`Task.token_mask_fields`): the lengths the bucket is chosen from.
    spec: ``data.length_buckets``.

  Attributes:
    widths_used: dataset name -> Counter of the widths of its batches placed so far.
  """

  def __init__(self, sharding, fields: Sequence[str], *,
               length_axes: Mapping[str, int] | None = None,
               mask_fields: Sequence[str] = (), spec: str = ""):
    self.sharding = sharding
    self.fields = tuple(fields)
    self.length_axes = dict(length_axes or {})
    self.mask_fields = tuple(mask_fields)
    self.spec = spec
    self.enabled = bool(spec and spec.strip()) and bool(self.length_axes)
    self.widths_used: dict[str, Counter] = {}
    self._lengths: dict[int, tuple[Any, tuple[int, ...], np.ndarray]] = {}

  def buckets_and_lengths(self, dataset) -> tuple[tuple[int, ...], np.ndarray]:
    """(buckets, int64 [N] longest real sequence of each example) of `dataset` (cached)."""
    key = id(dataset)
    if key not in self._lengths:
      seq_len, longest = buckets_lib.longest_real_lengths(dataset.arrays, self.mask_fields)
      if not seq_len:
        raise ValueError(f"data.length_buckets={self.spec!r}: dataset "
                         f"{getattr(dataset, 'name', dataset)!r} has none of the token masks "
                         f"{list(self.mask_fields)} to choose a bucket from")
      # The dataset is kept with its lengths, so that its id is not reused.
      self._lengths[key] = (dataset, buckets_lib.length_buckets(self.spec, seq_len),
                            longest)
    _, buckets, longest = self._lengths[key]
    return buckets, longest

  def width(self, dataset, indices: np.ndarray) -> int | None:
    """The bucket of the global batch at `indices` (None: buckets off)."""
    if not self.enabled:
      return None
    buckets, longest = self.buckets_and_lengths(dataset)
    return buckets_lib.bucket_length(int(longest[np.asarray(indices)].max()), buckets)

  def __call__(self, dataset, indices: np.ndarray, valid: np.ndarray | None = None) -> dict:
    width = self.width(dataset, indices)
    if width is not None:
      name = str(getattr(dataset, "name", type(dataset).__name__))
      self.widths_used.setdefault(name, Counter())[width] += 1
    return place_batch(dataset, np.asarray(indices), self.sharding, self.fields, valid,
                       width=width, length_axes=self.length_axes)


def token_counts(dataset, mask_fields: Sequence[str], batch_size: int
                 ) -> tuple[int, int, np.ndarray]:
  """(seq_len, padded tokens of a global batch, int64 [N] real tokens of each example).

  Counted over the example's token masks (`mask_fields`, [N, ..., L] each), so that every
  process can count the real tokens of a global batch from its indices alone.
  """
  arrays = dataset.arrays
  masks = [arrays[k] for k in mask_fields if k in arrays]
  seq_len = masks[0].shape[-1] if masks else 0
  tokens_per_step = sum(int(np.prod(m.shape[1:])) for m in masks) * batch_size
  real = np.zeros(dataset.num_examples, np.int64)
  for m in masks:
    real += m.reshape(dataset.num_examples, -1).sum(axis=1, dtype=np.int64)
  return seq_len, tokens_per_step, real
