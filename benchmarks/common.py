"""Shared pieces of the benchmarks: the table header (machine, backend, load, time), Markdown
tables, and the reward-model training step they time."""

import json
import os
import platform
import statistics
import time
from typing import Any, NamedTuple


def run_header(load_before: tuple[float, ...], start: float, **extra) -> dict:
  """The header of a benchmark table.

  Args:
    load_before: `os.getloadavg()` taken before the measurements (other processes on the
      machine distort timings; the header shows the load before and after).
    start: `time.perf_counter()` at the start of the run (gives wall_s).
    **extra: further header fields, after the common ones.
  """
  import jax  # pylint: disable=g-import-not-at-top

  return {
      "machine": f"{platform.machine()} {os.cpu_count()} cores",
      "backend": jax.default_backend(),
      "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
      "load_avg_before": " ".join(f"{x:.2f}" for x in load_before),
      "load_avg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
      # CPU steps depend on it (`rmjax.train.program.CPU_MALLOC_TUNABLE`).
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
      **extra,
      "wall_s": round(time.perf_counter() - start, 1),
  }


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
  """A Markdown table of `rows` (dicts) over `columns` (default: the first row's keys); a
  missing cell is empty.

  >>> print(markdown_table([{"a": 1, "b": 2.5}]))
  | a | b |
  |---|---|
  | 1 | 2.5 |
  """
  columns = list(rows[0]) if columns is None else columns
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
  return "\n".join(lines)


def print_table_and_save(header: dict, rows: list[dict], json_out: str = "") -> None:
  """Prints the header (JSON) and the Markdown table of `rows`; with `json_out`, also writes
  {"header": header, "rows": rows} there."""
  print("\n" + json.dumps(header) + "\n")
  print(markdown_table(rows))
  if json_out:
    with open(json_out, "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=1)


def median_seconds(fn, repeats: int) -> float:
  """The median wall time of `repeats` calls of `fn()`, each waited for
  (`jax.block_until_ready` on its result)."""
  return median_wall_and_cpu_seconds(fn, repeats)[0]


def median_wall_and_cpu_seconds(fn, repeats: int) -> tuple[float, float]:
  """(median wall time, median CPU time of this process over all its threads) of `repeats`
  calls of `fn()`, each waited for. On a shared machine the CPU time moves less with the
  other processes' load than the wall time (threads that spin while waiting still count)."""
  import jax  # pylint: disable=g-import-not-at-top

  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return statistics.median(wall), statistics.median(cpu)


class Step(NamedTuple):
  """A reward-model training step ready to run: the jitted step (state donated), its first
  state, `num_batches` batches, the model config, and the task's loss
  `loss_fn(params, batch, key) -> (loss, metrics)` that the step differentiates."""
  train_step: Any
  state: Any
  batches: list
  model_config: Any
  loss_fn: Any


def build_step(config, batch_size: int, num_batches: int) -> Step:
  """The training job's own step (`rmjax.train.program.make_train_step` over the task's
  loss, the config's optimiser, the program's XLA options) on `num_batches` batches of the
  config's synthetic data."""
  from rmjax import data as rm_data
  from rmjax import models
  from rmjax.tasks import reward_model as rm_task
  from rmjax.train import optim
  from rmjax.train import program as program_lib
  from rmjax.train.state import TrainState

  import jax  # pylint: disable=g-import-not-at-top

  config.data.synthetic.num_train = max(4 * batch_size, 256)
  config.data.synthetic.num_eval = 64
  data = rm_data.load_preference_data(config.data, workdir="/tmp/rmjax_bench")
  model_config = models.TransformerConfig.from_dict(
      dict(config.model.to_dict(), max_len=config.data.max_len))
  graphdef, params = models.init_reward_model(model_config, jax.random.PRNGKey(0))
  optimizer, _ = optim.make_optimizer(config.optim, 1000)
  state = TrainState.create(params, optimizer, jax.random.PRNGKey(1))
  loss_fn = rm_task.make_task(config).make_loss(graphdef, lambda fn: fn)
  train_step = jax.jit(program_lib.make_train_step(loss_fn, optimizer), donate_argnums=0,
                       compiler_options=program_lib.compiler_options(jax.devices()[0]))
  keys = ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask", "margin", "valid")
  batches = [jax.device_put({k: b[k] for k in keys})
             for b in (data.train.train_batch(i, batch_size, 0) for i in range(num_batches))]
  return Step(train_step, state, batches, model_config, loss_fn)
