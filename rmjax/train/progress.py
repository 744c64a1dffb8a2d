"""Progress of a run: train metrics averaged between log steps, throughput, the progress bar."""

import time
from typing import Any

import jax
import numpy as np
import tqdm


class TrainMeter:
  """Collects a run's train metrics and times between log steps.

  Metrics stay device arrays until a log step (no host sync per step); the record of a log
  step holds their means over the steps since the last one, and steps, padded tokens and
  real tokens per second. The first step of a process includes compilation and is not timed.

  Args:
    tokens_per_step: padded tokens of one global batch at full length (a step cut to a
      length bucket passes its own count to `step`).
    total: the run's step count (the progress bar's end).
    initial: the step the run starts from.
    show: whether to draw the progress bar (process 0, config.train.progress_bar).
  """

  def __init__(self, *, tokens_per_step: int, total: int, initial: int, show: bool):
    self.tokens_per_step = tokens_per_step
    self._metrics: list[Any] = []
    self._start = None
    self._steps = 0
    self._real_tokens = 0
    self._padded_tokens = 0
    self.totals = {"steps": 0, "seconds": 0.0, "real_tokens": 0, "padded_tokens": 0}
    self._bar = tqdm.tqdm(total=total, initial=initial, desc="train", unit="step",
                          disable=not show, mininterval=1.0, dynamic_ncols=True)

  def step(self, metrics: Any, real_tokens: int, padded_tokens: int | None = None) -> None:
    """Records one step's metrics (device arrays), its real and its padded token counts
    (default `tokens_per_step`)."""
    self._metrics.append(metrics)
    self._steps += 1
    self._real_tokens += real_tokens
    self._padded_tokens += self.tokens_per_step if padded_tokens is None else padded_tokens
    self._bar.update(1)
    if self._start is None:  # The first step of a process includes compilation.
      jax.block_until_ready(metrics)
      self.restart()

  def restart(self) -> None:
    """Starts a new timing interval (after a log step's evaluation and checkpoint)."""
    self._start, self._steps = time.perf_counter(), 0
    self._real_tokens = self._padded_tokens = 0

  def record(self, learning_rate: float) -> dict[str, float]:
    """The log record: mean metrics since the last record, the learning rate, throughput."""
    history = jax.device_get(self._metrics)
    self._metrics = []
    record = {k: float(np.mean([m[k] for m in history])) for k in history[0]}
    record["learning_rate"] = learning_rate
    elapsed = time.perf_counter() - self._start
    if self._steps and elapsed > 0:
      record["steps_per_s"] = self._steps / elapsed
      record["tokens_per_s"] = self._padded_tokens / elapsed
      record["real_tokens_per_s"] = self._real_tokens / elapsed
      self.totals["steps"] += self._steps
      self.totals["seconds"] += elapsed
      self.totals["real_tokens"] += self._real_tokens
      self.totals["padded_tokens"] += self._padded_tokens
    postfix = {"loss": f"{record['loss']:.3f}"}
    if "accuracy" in record:
      postfix["acc"] = f"{record['accuracy']:.3f}"
    postfix["tok_s"] = f"{record.get('tokens_per_s', 0):.0f}"
    self._bar.set_postfix(**postfix, refresh=False)
    return record

  def close(self) -> None:
    self._bar.close()
