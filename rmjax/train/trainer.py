"""The task-agnostic trainer: `train_and_evaluate(config, workdir, task)`.

A run is a pure function of its config: batches are a function of (seed, step), so a run that
is killed and started again on the same workdir resumes from its latest checkpoint and ends
with the same metrics as an uninterrupted one. The loop below reads top to bottom: processes
and workdir, the sharded program, data, the state (restored or fresh), the steps with their
logs, evaluations and checkpoints, and the report. What is specific to a task (its model,
loss, data and evaluation) comes in a `rmjax.train.Task`.

With several processes (`config.distributed`, `rmjax.parallel.initialize_distributed`), each
process gathers only its own rows of every batch (`rmjax.train.batching`); process 0 writes
the metrics, the report and the plots, and every process takes part in the checkpoints.
Preemption: one process stops after the step in which it got a SIGTERM; several processes
stop at the step orbax's preemption sync point names (`Checkpointer.reached_preemption`).
Either way the state is checkpointed and `Preempted` is raised (the CLI exits 75).
"""

import json
import logging
import os
import signal
import time
from typing import Any

import jax
from jax.experimental import multihost_utils
import ml_collections

from rmjax import parallel
from rmjax.train import batching
from rmjax.train import checkpoint as ckpt_lib
from rmjax.train import dry_run as dry_run_lib
from rmjax.train import metrics_io
from rmjax.train import progress
from rmjax.train import report as report_lib
from rmjax.train.program import build_program
from rmjax.train.task import Task
from rmjax.train.task import TaskData


class Preempted(Exception):
  """Raised after a SIGTERM: the state was checkpointed; run the same command to resume."""


class _NoMetrics:
  """The metrics writer of processes other than 0: they compute the same numbers."""

  def write(self, *args, **kwargs):
    del args, kwargs

  def truncate_after(self, step):
    del step
    return 0

  def close(self):
    pass


def load_task_data(task: Task, workdir: str) -> TaskData:
  """The task's data; with several processes, process 0 prepares files before the others
  read them (they share the workdir's prepared copy)."""
  if jax.process_count() == 1:
    return task.load_data(workdir)
  if jax.process_index() == 0:
    data = task.load_data(workdir)
  multihost_utils.sync_global_devices("rmjax: data prepared")
  if jax.process_index() != 0:
    data = task.load_data(workdir)
  return data


def _write_json(workdir: str, name: str, value: Any) -> None:
  with open(os.path.join(workdir, name), "w") as f:
    json.dump(value, f, indent=2, sort_keys=True, default=str)


def make_placer(config: ml_collections.ConfigDict, task: Task, batch_sharding
                ) -> batching.BatchPlacer:
  """The batch placer of a run: `task`'s fields, cut to ``config.data.length_buckets``.

  Raises:
    ValueError: length buckets for a task whose batches cannot be cut (`Task.length_axes`
      None, e.g. RL's left-padded prompts).
  """
  spec = config.get("data", {}).get("length_buckets", "") or ""
  if spec.strip() and task.length_axes is None:
    raise ValueError(f"data.length_buckets={spec!r}: task {task.name!r} declares no token "
                     "axes to cut (Task.length_axes); leave data.length_buckets empty")
  return batching.BatchPlacer(batch_sharding, task.batch_fields,
                              length_axes=task.length_axes,
                              mask_fields=task.token_mask_fields, spec=spec)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       task: Task) -> dict[str, Any]:
  """Trains `task` as `config` says; returns the final report.

  Config fields read here: seed, data_seed, data.length_buckets (`make_placer`), optim,
  train (num_steps, batch_size, log_every, eval_every, checkpoint_every, progress_bar,
  tensorboard), eval.batch_size, checkpoint (max_to_keep, async_save), mesh, distributed,
  dry_run; the task closes over the rest. With `config.dry_run.target` set, nothing trains:
  the steps are compiled for that TPU slice and the report (`rmjax.train.dry_run`) is
  returned and written to dry_run.json.

  Writes to `workdir` (process 0): config.json, data_report.json, metrics.jsonl,
  tensorboard/, report.json, report.md and the task's plots; every process: checkpoints/.
  """
  # Processes and workdir.
  wall_start = time.time()
  if "distributed" in config:
    parallel.initialize_distributed(config)
  primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if primary:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  # A dry run compiles the steps for a TPU slice and reports, instead of training.
  if config.get("dry_run") and config.dry_run.target:
    return dry_run_lib.dry_run_to_workdir(config, task, workdir)

  # The sharded program; every mesh check runs before any data is made.
  program = build_program(config, task)
  mesh, batch_sharding = program.mesh, program.batch_sharding
  place = make_placer(config, task, batch_sharding)

  # Data.
  data = load_task_data(task, workdir)
  if primary:
    _write_json(workdir, "data_report.json", data.info)
  logging.info("data: %d train examples, %d eval examples", data.train.num_examples,
               data.eval.num_examples)
  num_steps, batch_size = config.train.num_steps, config.train.batch_size
  rows = parallel.process_rows(batch_sharding, batch_size)
  logging.info("process %d of %d loads rows %s of every training batch of %d",
               jax.process_index(), jax.process_count(), batching.row_ranges(rows), batch_size)

  # State: the latest checkpoint, restored straight into this mesh's shardings whatever mesh
  # saved it, or a fresh sharded init.
  checkpointer = ckpt_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.max_to_keep,
      async_save=config.checkpoint.async_save,
      save_interval_steps=config.train.checkpoint_every)
  writer = (metrics_io.MetricsWriter(workdir, tensorboard=config.train.tensorboard) if primary
            else _NoMetrics())
  start_step = checkpointer.latest_step()
  if start_step is not None:
    state = checkpointer.restore(start_step, program.abstract_state)
    dropped = writer.truncate_after(start_step)
    logging.info("resumed from checkpoint step %d (%d later metric records dropped)",
                 start_step, dropped)
  else:
    start_step = 0
    state = program.init(jax.random.PRNGKey(config.seed))
  logging.info("%s: %s parameters; mesh %s; %d process(es)", task.name,
               f"{program.num_params:,}", dict(mesh.shape), jax.process_count())

  # The steps.
  seq_len, tokens_per_step, real_tokens = batching.token_counts(
      data.train, task.token_mask_fields, batch_size)
  meter = progress.TrainMeter(tokens_per_step=tokens_per_step, total=num_steps,
                              initial=start_step,
                              show=config.train.progress_bar and primary)
  single_process = jax.process_count() == 1
  sigterm = []
  if single_process:
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: sigterm.append(True))
  last_eval, eval_arrays = {}, None
  try:
    for step in range(start_step, num_steps):
      indices = data.train.train_indices(step, batch_size, config.data_seed)
      state, metrics = program.train_step(state, place(data.train, indices))
      width = place.width(data.train, indices)
      meter.step(metrics, int(real_tokens[indices].sum()),
                 None if width is None else tokens_per_step * width // seq_len)
      done = step + 1
      if done % config.train.log_every == 0 or done == num_steps:
        writer.write(done, "train", meter.record(float(program.schedule(step))))
      if done % config.train.eval_every == 0 or done == num_steps:
        last_eval, eval_arrays = task.evaluate(program.eval_step, state.params, data.eval,
                                               place)
        writer.write(done, "eval", last_eval)
        logging.info("step %d eval: %s", done, json.dumps(last_eval))
      stop = bool(sigterm) if single_process else checkpointer.reached_preemption(done)
      checkpointer.save(done, state, force=done == num_steps or stop)
      if stop:
        checkpointer.wait()
        raise Preempted(f"SIGTERM at step {done}: checkpoint saved in {checkpointer.directory}; "
                        "run the same command to resume")
      if done % config.train.log_every == 0:
        meter.restart()
  finally:
    meter.close()
    if single_process:
      signal.signal(signal.SIGTERM, previous_handler)
    checkpointer.close()
    writer.close()

  # The report.
  report = {
      "config_name": config.get("name", ""),
      "task": task.name,
      **task.report,
      "steps": int(jax.device_get(state.step)),
      "resumed_from_step": start_step or None,
      "num_params": program.num_params,
      "wall_time_s": time.time() - wall_start,
      "final_eval": last_eval,
      "data": data.info,
      "backend": jax.default_backend(),
      "devices": len(jax.devices()),
      "processes": jax.process_count(),
      "mesh": dict(mesh.shape),
      "jax_version": jax.__version__,
      "seq_len": seq_len,
      "batch_size": batch_size,
  }
  if place.enabled:
    report["length_buckets"] = dict(
        spec=place.spec, widths_used={name: dict(sorted(counts.items()))
                                      for name, counts in place.widths_used.items()})
  totals = meter.totals
  if totals["seconds"] > 0:
    report["train_tokens_per_s"] = totals["padded_tokens"] / totals["seconds"]
    report["train_real_tokens_per_s"] = totals["real_tokens"] / totals["seconds"]
    report["train_examples_per_s"] = totals["steps"] * batch_size / totals["seconds"]
    if task.flops_per_token is not None:
      report["model_flops_per_s"] = report["train_tokens_per_s"] * task.flops_per_token
  if primary:
    report_lib.write_report(workdir, report)
    if task.write_plots is not None:
      task.write_plots(workdir, last_eval, eval_arrays or {})
  return report
