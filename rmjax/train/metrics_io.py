"""Metrics to disk: JSON lines (always) and TensorBoard event files (when tensorboardX is there)."""

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"


def _to_python(value: Any) -> Any:
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return value


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All records of `<workdir>/metrics.jsonl`, in order."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:
  """Appends `{"step": s, "split": name, **scalars}` lines to `<workdir>/metrics.jsonl`.

  On resume from step k, `truncate_after(k)` removes the records of steps > k written by the
  interrupted run, so the file of a resumed run equals that of an uninterrupted one (up to
  timing fields).
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    os.makedirs(workdir, exist_ok=True)
    self._tb = None
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
        self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        logging.info("tensorboardX not installed: writing metrics as JSON lines only.")

  def truncate_after(self, step: int) -> int:
    """Drops records with step > `step`; returns how many were dropped."""
    records = read_metrics(os.path.dirname(self.path))
    kept = [r for r in records if r.get("step", 0) <= step]
    with open(self.path, "w") as f:
      for r in kept:
        f.write(json.dumps(r) + "\n")
    return len(records) - len(kept)

  def write(self, step: int, split: str, scalars: Mapping[str, Any]) -> dict[str, Any]:
    record = {"step": int(step), "split": split}
    record.update({k: _to_python(v) for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for key, value in record.items():
        if key not in ("step", "split") and isinstance(value, (int, float)):
          self._tb.add_scalar(f"{split}/{key}", value, int(step))
    return record

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
