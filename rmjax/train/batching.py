"""Batches on the mesh: each process gathers its own rows, one global array per field.

Datasets are numpy arrays with a leading example axis and deterministic batch indices
(`rmjax.data`): batch `step` is a function of (seed, step) alone, so every process computes
the same indices, gathers only the rows its devices hold under the batch sharding, and
`jax.make_array_from_process_local_data` assembles the global arrays (one process: all rows,
a plain transfer).
"""

from collections.abc import Sequence

import numpy as np

from rmjax import parallel


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


def place_batch(dataset, indices: np.ndarray, sharding, fields: Sequence[str],
                valid: np.ndarray | None = None) -> dict:
  """The global device batch of `dataset`'s examples at `indices`, loaded per process.

  Args:
    dataset: a dataset with `gather(indices, valid) -> {field: [B, ...]}` (`rmjax.data`).
    indices: [B] example indices of the global batch.
    sharding: the batch sharding (leading axis split over the mesh's batch axes).
    fields: the fields the step reads (`select_fields`).
    valid: optional [B] bool, False for padding rows.

  Returns:
    {field: global jax.Array [B, ...]} split along the leading axis.
  """
  rows = parallel.process_rows(sharding, len(indices))
  local = dataset.gather(indices[rows], None if valid is None else np.asarray(valid)[rows])
  return parallel.global_batch(sharding, select_fields(local, fields), len(indices))


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
