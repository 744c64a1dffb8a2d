"""The reward-model training loop: data, mesh, sharded init, jitted steps, checkpoints, eval.

`train_and_evaluate(config, workdir)` is everything `experiments/train_reward_model.py` runs.
A run is a pure function of its config: batches are a function of (seed, step), so a run that
is killed and started again on the same workdir resumes from its latest checkpoint and ends
with the same metrics as an uninterrupted one.

The same program runs on one CPU, one host or a multi-host mesh (`build_program`): the mesh
comes from `config.mesh`, parameters and optimiser state are created directly in their
shardings (`jax.eval_shape`, then `jax.jit(init, out_shardings=...)`), the train step is
jitted with in/out shardings and a donated state, and checkpoints restore straight into the
shardings of the current mesh, whatever mesh saved them. With several processes
(`config.distributed`, `rmjax.parallel.initialize_distributed`), each process gathers only
its own rows of every batch and builds the global batch with
`jax.make_array_from_process_local_data`; process 0 writes the metrics and the report, every
process takes part in the checkpoints.
"""

from collections.abc import Sequence
import functools
import json
import logging
import os
import signal
import time
from typing import Any, NamedTuple

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import ml_collections
import numpy as np
import optax
import tqdm

from rmjax import data as rm_data
from rmjax import eval as rm_eval
from rmjax import losses
from rmjax import models
from rmjax import parallel
from rmjax.train import checkpoint as ckpt_lib
from rmjax.train import metrics_io
from rmjax.train import optim
from rmjax.train import report as report_lib
from rmjax.train import step as step_lib
from rmjax.train import strength as strength_lib
from rmjax.train.state import TrainState


class Preempted(Exception):
  """Raised after a SIGTERM: the state was checkpointed; run the same command to resume."""


def _model_config(config: ml_collections.ConfigDict) -> models.TransformerConfig:
  model_config = config.model.to_dict()
  model_config.setdefault("max_len", config.data.max_len)
  if model_config["max_len"] < config.data.max_len:
    raise ValueError(f"model.max_len={model_config['max_len']} is shorter than "
                     f"data.max_len={config.data.max_len}")
  return models.TransformerConfig.from_dict(model_config)


def _loss_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.loss plus the strength settings the loss reads (strength_use, max_smoothing)."""
  loss_config = ml_collections.ConfigDict(config.loss.to_dict())
  loss_config.strength_use = config.strength.use
  loss_config.max_smoothing = config.strength.max_smoothing
  return loss_config


def _head_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The head and its settings; the loss names the head it needs."""
  head = config.head.name
  needed = step_lib.LOSS_HEADS.get(config.loss.name)
  if needed is not None and head != needed:
    raise ValueError(f"head.name={head!r} does not fit loss.name={config.loss.name!r}, "
                     f"which needs head.name={needed!r}")
  return {"head": head, "head_config": config.head.config.to_dict() or None}


def eval_index_batches(num_examples: int, batch_size: int):
  """(indices [B], valid [B]) of each batch of `eval_batches(batch_size)`, in order.

  The index layout of `PreferenceDataset.eval_batches` (every example once, the last batch
  padded with copies of its last row marked invalid), without gathering anything: each
  process then gathers only its own rows.
  """
  for start in range(0, num_examples, batch_size):
    indices = np.arange(start, min(start + batch_size, num_examples))
    real = len(indices)
    indices = np.concatenate([indices, np.full(batch_size - real, indices[-1])])
    yield indices, np.arange(batch_size) < real


def _row_ranges(rows: np.ndarray) -> str:
  """'[0, 8)' or '[0, 4) [8, 12)': sorted row indices as half-open ranges."""
  if not len(rows):
    return "none"
  breaks = np.flatnonzero(np.diff(rows) != 1)
  starts = np.concatenate([rows[:1], rows[breaks + 1]])
  stops = np.concatenate([rows[breaks], rows[-1:]]) + 1
  return " ".join(f"[{a}, {b})" for a, b in zip(starts, stops))


def place_batch(dataset, indices: np.ndarray, sharding, valid: np.ndarray | None = None):
  """The global device batch of `dataset`'s examples at `indices`, loaded per process.

  This process gathers only the rows its devices hold under `sharding`
  (`rmjax.parallel.process_rows`), and `jax.make_array_from_process_local_data` assembles the
  global [B, ...] arrays (one process: all rows, a plain transfer).
  """
  rows = parallel.process_rows(sharding, len(indices))
  local = dataset.gather(indices[rows], None if valid is None else np.asarray(valid)[rows])
  return parallel.global_batch(sharding, _model_inputs(local), len(indices))


def evaluate(eval_step, params, dataset, *, batch_size: int, batch_sharding,
             num_bins: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Scores every eval pair once and computes the pairwise metrics from the pair logits.

  Args:
    eval_step: `(params, batch) -> [B]` logits of P(chosen preferred) (`make_eval_step`),
      returned whole to every process (jit it with replicated out_shardings on a mesh that
      spans several processes).
    params: model parameters.
    dataset: a `PreferenceDataset` (or list / episode dataset) with `eval_batches`.
    batch_size: pairs per eval batch.
    batch_sharding: where batches go; each process loads its own rows (`place_batch`).
    num_bins: bins of the calibration error and the reliability diagram.

  Returns:
    (metrics, arrays): metrics has loss (NLL of the labels), accuracy (logit > 0 strictly),
    calibration_error, mean_margin (mean logit), num_pairs, and for data with a known
    preference probability p: bayes_optimal_accuracy, expected_accuracy (the accuracy
    expected under the label noise: mean of p where the model prefers the labelled-chosen
    response, else 1 - p; less noisy than the realised accuracy) and ground_truth_agreement
    (agreement with the true ordering). arrays has the reliability-diagram bins.
  """
  logits, probs = [], []
  preference_prob = dataset.arrays.get("preference_prob")
  for indices, valid in eval_index_batches(dataset.num_examples, batch_size):
    batch_logits = np.asarray(
        eval_step(params, place_batch(dataset, indices, batch_sharding, valid)))
    logits.append(batch_logits[valid].reshape(-1))
    if preference_prob is not None:
      # User episodes: the logits are those of the last Q pairs (the queries).
      p = preference_prob[indices]
      p = p[:, p.shape[1] - batch_logits.shape[1]:] if p.ndim == 2 else p
      probs.append(p[valid].reshape(-1))
  logits = np.concatenate(logits)
  zeros = np.zeros_like(logits)
  metrics = {
      "loss": float(losses.bradley_terry_loss(logits, zeros)),
      "accuracy": float(rm_eval.pairwise_accuracy(logits, zeros)),
      "calibration_error": float(
          rm_eval.pairwise_calibration_error(logits, zeros, num_bins=num_bins)),
      "mean_margin": float(rm_eval.mean_reward_margin(logits, zeros)),
      "num_pairs": int(logits.shape[0]),
  }
  if probs:
    p = np.concatenate(probs)
    prefers_chosen = logits > 0
    metrics["bayes_optimal_accuracy"] = float(rm_eval.bayes_optimal_pairwise_accuracy(p))
    metrics["expected_accuracy"] = float(np.mean(np.where(prefers_chosen, p, 1.0 - p)))
    metrics["ground_truth_agreement"] = float(np.mean(prefers_chosen == (p > 0.5)))
  conf, acc, count = rm_eval.pairwise_reliability_bins(logits, zeros, num_bins=num_bins)
  return metrics, {"bin_confidence": np.asarray(conf), "bin_accuracy": np.asarray(acc),
                   "bin_count": np.asarray(count)}


# Batch fields the step functions never read (ground truth kept for evaluation on the host).
_HOST_ONLY_KEYS = ("preference_prob", "user_group")
_TOKEN_MASK_KEYS = ("chosen_mask", "rejected_mask", "mask")


def _model_inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  if "valid" not in batch:
    raise KeyError(f"batch: missing field 'valid'; it has {sorted(batch)}")
  return {k: v for k, v in batch.items() if k not in _HOST_ONLY_KEYS}


def _real_tokens_per_example(dataset) -> np.ndarray:
  """int64 [N] real (unpadded) tokens of each example, so that every process can count the
  tokens of a global batch from its indices alone."""
  arrays = dataset.arrays
  counts = np.zeros(dataset.num_examples, np.int64)
  for k in _TOKEN_MASK_KEYS:
    if k in arrays:
      counts += arrays[k].reshape(dataset.num_examples, -1).sum(axis=1, dtype=np.int64)
  return counts


def _check_data_fits_loss(config: ml_collections.ConfigDict) -> None:
  """The data format (and fields) the loss trains on, checked before any data is made."""
  needed = step_lib.loss_format(config.loss)
  if config.data.format != needed:
    raise ValueError(f"data.format={config.data.format!r} does not fit loss.name="
                     f"{config.loss.name!r}, which trains on data.format={needed!r}")
  if config.loss.name == "attribute_regression" and not config.data.attributes:
    raise ValueError("loss.name='attribute_regression' needs attribute ratings: set "
                     "data.attributes=True")
  use = config.strength.use
  if use not in step_lib.STRENGTH_USES:
    raise ValueError(f"strength.use: expected one of {step_lib.STRENGTH_USES}, got {use!r}")
  if use != "none" and not config.strength.teacher_workdir:
    raise ValueError(f"strength.use={use!r} needs strength.teacher_workdir: the workdir of a "
                     "trained ensemble (e.g. a run of configs/reward_model.py:ensemble)")
  if use != "none" and config.loss.name != "bradley_terry":
    raise ValueError(f"strength.use={use!r} applies to loss.name='bradley_terry', got "
                     f"{config.loss.name!r}")


def _validate(config: ml_collections.ConfigDict, mesh) -> None:
  """Batch sizes and intervals, checked against the mesh before anything is compiled."""
  members = config.ensemble.num_members
  if members and config.ensemble.get("member_batches", False):
    if config.train.batch_size % members:
      raise ValueError(
          f"train.batch_size={config.train.batch_size} must be a multiple of "
          f"ensemble.num_members={members} with ensemble.member_batches=True (each member "
          "trains on its own slice of every batch)")
  shards = parallel.num_batch_shards(mesh)
  for name in ("train.batch_size", "eval.batch_size"):
    section, field = name.split(".")
    size = config[section][field]
    if size <= 0 or size % shards:
      suggestion = max(shards, -(-max(size, 1) // shards) * shards)
      raise ValueError(
          f"{name}={size} does not split over the {shards} batch shards of the mesh "
          f"(data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']}); set {name} to a "
          f"positive multiple of {shards} (e.g. --config.{name}={suggestion}) or change "
          "mesh.shape (the tensor axis does not split the batch)")
  for name in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
    if config.train[name] <= 0:
      raise ValueError(f"train.{name}: expected a positive integer, got {config.train[name]}")


class Program(NamedTuple):
  """The sharded program of a run: what `build_program` makes from a config and a mesh.

  Attributes:
    mesh: the ('data', 'fsdp', 'tensor') mesh.
    batch_sharding: batches split along their leading axis over ('data', 'fsdp').
    model_config: the backbone's `TransformerConfig`.
    graphdef: the model's static graph definition.
    num_params: parameter count.
    param_specs: `PartitionSpec` of every parameter.
    state_shardings: `TrainState` of `NamedSharding`s (step and rng replicated, parameters by
      the logical-axis rules, optimiser state like the parameters it tracks).
    abstract_state: `TrainState` of `jax.ShapeDtypeStruct`s with those shardings (the
      restore target of a checkpoint).
    init: `(rng) -> TrainState`, jitted with `out_shardings=state_shardings`.
    train_step: `(state, batch) -> (state, metrics)`, jitted with in/out shardings and the
      state donated; metrics replicated.
    eval_step: `(params, batch) -> logits`, jitted; logits replicated.
    schedule: the learning-rate schedule.
  """
  mesh: jax.sharding.Mesh
  batch_sharding: NamedSharding
  model_config: models.TransformerConfig
  graphdef: Any
  num_params: int
  param_specs: Any
  state_shardings: TrainState
  abstract_state: TrainState
  init: Any
  train_step: Any
  eval_step: Any
  schedule: Any


def _sharded_compute(fn, param_shardings, example_sharding: NamedSharding):
  """`fn(params, *inputs)` laid out as FSDP + tensor parallelism wants it.

  Weights are gathered over ('data', 'fsdp') where they are used (`param_shardings`: the
  rest-state specs with those axes removed, `parallel.without_axes`; their 'tensor' split
  stays), and the inputs and outputs, [N, ...] with N the examples or sequences, are held
  split along the batch axes. Without these constraints XLA may keep a weight split along
  its 'embed' axis and move the activations instead (all-gathers of [2B, L, D] per layer:
  measured on the smoke model); with them, an FSDP step moves weights (all-gather in the
  forward pass, reduce of the gradients in the backward pass) and every device works on its
  own sequences. The gradient of the gather is the reduction back to the sharded layout.
  """

  def sharded(params, *inputs):
    params = jax.lax.with_sharding_constraint(params, param_shardings)
    inputs = jax.lax.with_sharding_constraint(inputs, example_sharding)
    return jax.lax.with_sharding_constraint(fn(params, *inputs), example_sharding)

  return sharded


def build_program(config: ml_collections.ConfigDict, *,
                  devices: Sequence[jax.Device] | None = None) -> Program:
  """The mesh, shardings and jitted functions of a run (nothing is compiled or run yet).

  Every check that depends on the mesh (mesh sizes against the devices, batch sizes
  against the batch shards, parameter dimensions against their mesh axes) runs here,
  before anything is compiled.

  Args:
    config: a run config (`configs/reward_model.py`).
    devices: the devices of the mesh (default: all, over every process).

  Returns:
    A `Program`.
  """
  mesh = parallel.make_mesh(config.mesh.shape.to_dict(), devices)
  _validate(config, mesh)
  batch_sharding = parallel.batch_sharding(mesh)
  example_sharding = parallel.activation_sharding(mesh, ("batch",))
  replicated = NamedSharding(mesh, PartitionSpec())

  model_config = _model_config(config)
  head_kwargs = _head_kwargs(config)
  num_members = config.ensemble.num_members
  if num_members:  # M members as one stacked params pytree, trained together with vmap.
    init_params = functools.partial(models.init_ensemble, model_config,
                                    num_members=num_members, **head_kwargs)
  else:
    init_params = functools.partial(models.init_reward_model, model_config, **head_kwargs)
  seed_key = jax.random.PRNGKey(config.seed)
  graphdef, abstract_params = jax.eval_shape(init_params, seed_key)
  param_specs = models.logical_partition_specs(
      models.abstract_param_state(model_config, **head_kwargs),
      tuple(tuple(rule) for rule in config.mesh.logical_axis_rules), mesh=mesh)
  if num_members:
    param_specs = models.ensemble_partition_specs(param_specs)
  optimizer, schedule = optim.make_optimizer(config.optim, config.train.num_steps)

  def init_state(rng):
    init_rng, state_rng = jax.random.split(rng)
    _, params = init_params(init_rng)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), state_rng)

  # Shardings from shapes alone: parameters by the rules, the optimiser's moments like the
  # parameters they track (optax.tree_map_params), its counters and the rest replicated.
  is_spec = lambda x: isinstance(x, PartitionSpec)
  abstract_opt_state = jax.eval_shape(optimizer.init, abstract_params)
  opt_specs = optax.tree_map_params(optimizer, lambda _, spec: spec, abstract_opt_state,
                                    param_specs, transform_non_params=lambda _: PartitionSpec(),
                                    is_leaf=is_spec)
  to_sharding = lambda spec: NamedSharding(mesh, spec)
  state_shardings = TrainState(replicated, jax.tree.map(to_sharding, param_specs, is_leaf=is_spec),
                               jax.tree.map(to_sharding, opt_specs, is_leaf=is_spec), replicated)
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      jax.eval_shape(init_state, seed_key), state_shardings)
  init = jax.jit(init_state, out_shardings=state_shardings)

  compute_shardings = jax.tree.map(
      lambda spec: NamedSharding(mesh, parallel.without_axes(spec)), param_specs,
      is_leaf=is_spec)
  sharded = functools.partial(_sharded_compute, param_shardings=compute_shardings,
                              example_sharding=example_sharding)
  if num_members:
    apply_fn = step_lib.ensemble_apply_members_last(models.make_ensemble_apply(graphdef))
  else:
    apply_fn = models.make_reward_apply(graphdef)
  apply_fn = sharded(apply_fn)
  step_kwargs = dict(num_members=num_members)
  train_kwargs = {}
  if num_members and config.ensemble.get("member_batches", False):
    # Each member trains on its own slice of every batch (a different data order).
    train_kwargs["member_batch_apply_fn"] = models.make_ensemble_apply(graphdef,
                                                                       per_member_batch=True)
  if step_lib.loss_format(config.loss) == "user_episodes":
    step_kwargs.update(embed_fn=sharded(models.make_embed_apply(graphdef)),
                       encode_fn=sharded(models.make_encoder_apply(graphdef)),
                       context_pairs=config.data.synthetic.context_pairs)
  loss_config = _loss_config(config)
  # Every batch field is split along its leading (example) axis: one sharding, a pytree
  # prefix. Metrics and eval logits come back replicated, so every process can read them.
  train_step = jax.jit(step_lib.make_train_step(apply_fn, optimizer, loss_config, **step_kwargs,
                                                **train_kwargs),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, replicated), donate_argnums=0)
  eval_step = jax.jit(step_lib.make_eval_step(apply_fn, loss_config, **step_kwargs),
                      in_shardings=(state_shardings.params, batch_sharding),
                      out_shardings=replicated)
  return Program(mesh, batch_sharding, model_config, graphdef,
                 models.count_params(abstract_params), param_specs, state_shardings,
                 abstract_state, init, train_step, eval_step, schedule)


def _load_data(config: ml_collections.ConfigDict, workdir: str):
  """The run's data; with several processes, process 0 prepares files before the others
  read them (they share the workdir's prepared copy)."""
  if jax.process_count() > 1 and config.data.source != "synthetic":
    if jax.process_index() == 0:
      data = rm_data.load_preference_data(config.data, workdir=workdir)
    multihost_utils.sync_global_devices("rmjax: data prepared")
    if jax.process_index() != 0:
      data = rm_data.load_preference_data(config.data, workdir=workdir)
    return data
  return rm_data.load_preference_data(config.data, workdir=workdir)


class _NoMetrics:
  """The metrics writer of processes other than 0: they compute the same numbers."""

  def write(self, *args, **kwargs):
    del args, kwargs

  def truncate_after(self, step):
    del step
    return 0

  def close(self):
    pass


def _any_process(flag: bool) -> bool:
  """Whether `flag` is set on any process (every process must call this together)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains a pairwise reward model as configured; returns the final report.

  Writes to `workdir` (process 0): config.json, metrics.jsonl, tensorboard/, data report,
  report.json, report.md, curves.png, reliability.png; every process: checkpoints/.
  Joins a multi-process run first if `config.distributed` or the environment says so
  (`rmjax.parallel.initialize_distributed`).
  """
  wall_start = time.time()
  if "distributed" in config:
    parallel.initialize_distributed(config)
  primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if primary:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  # Data, mesh and the sharded program; every mesh check runs before any data is made.
  _check_data_fits_loss(config)
  program = build_program(config)
  mesh, batch_sharding = program.mesh, program.batch_sharding
  data = _load_data(config, workdir)
  if config.strength.use != "none":
    # Preference strength of every training pair from a trained teacher ensemble.
    train, strength_info = strength_lib.apply_teacher_strength(config.strength, data.train)
    data = data._replace(train=train, info={**data.info, "teacher_strength": strength_info})
  if primary:
    with open(os.path.join(workdir, "data_report.json"), "w") as f:
      json.dump(data.info, f, indent=2, sort_keys=True, default=str)
  logging.info("data: %d train pairs, %d eval pairs", data.train.num_pairs, data.eval.num_pairs)
  num_steps = config.train.num_steps
  schedule = program.schedule
  seed_key = jax.random.PRNGKey(config.seed)

  checkpointer = ckpt_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.max_to_keep,
      async_save=config.checkpoint.async_save)
  writer = (metrics_io.MetricsWriter(workdir, tensorboard=config.train.tensorboard) if primary
            else _NoMetrics())
  start_step = checkpointer.latest_step()
  if start_step is not None:
    # Straight into this mesh's shardings, whatever mesh saved the checkpoint.
    state = checkpointer.restore(start_step, program.abstract_state)
    dropped = writer.truncate_after(start_step)
    logging.info("resumed from checkpoint step %d (%d later metric records dropped)",
                 start_step, dropped)
  else:
    start_step = 0
    state = program.init(seed_key)
  num_params = program.num_params
  logging.info("model: %s parameters; mesh %s; %d process(es)", f"{num_params:,}",
               dict(mesh.shape), jax.process_count())
  rows = parallel.process_rows(batch_sharding, config.train.batch_size)
  logging.info("process %d of %d loads rows %s of every training batch of %d",
               jax.process_index(), jax.process_count(), _row_ranges(rows),
               config.train.batch_size)

  train_step, eval_step = program.train_step, program.eval_step
  batch_size, seq_len = config.train.batch_size, config.data.max_len
  first = data.train.train_batch(0, 1, config.data_seed)
  sequences_per_example = sum(int(np.prod(first[k].shape[1:-1], dtype=np.int64))
                              for k in _TOKEN_MASK_KEYS if k in first)
  tokens_per_step = sequences_per_example * batch_size * seq_len
  real_tokens = _real_tokens_per_example(data.train)

  preempted = []
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
  timing = {"steps": 0, "seconds": 0.0, "real_tokens": 0}
  last_eval, reliability = {}, None
  progress = tqdm.tqdm(total=num_steps, initial=start_step, desc="train", unit="step",
                       disable=not (config.train.progress_bar and primary), mininterval=1.0,
                       dynamic_ncols=True)
  try:
    interval_start, interval_steps, interval_real_tokens = None, 0, 0
    interval_metrics = []
    for step in range(start_step, num_steps):
      indices = data.train.train_indices(step, batch_size, config.data_seed)
      interval_real_tokens += int(real_tokens[indices].sum())
      state, metrics = train_step(state, place_batch(data.train, indices, batch_sharding))
      interval_metrics.append(metrics)  # Device arrays: no host sync until the log step.
      interval_steps += 1
      done = step + 1
      progress.update(1)
      if interval_start is None:  # The first step of a process includes compilation.
        jax.block_until_ready(metrics)
        interval_start, interval_steps, interval_real_tokens = time.perf_counter(), 0, 0
      log_step = done % config.train.log_every == 0 or done == num_steps
      if log_step:
        # Train metrics are means over the steps since the last log, not one noisy batch.
        history = jax.device_get(interval_metrics)
        elapsed = time.perf_counter() - interval_start
        record = {k: float(np.mean([m[k] for m in history])) for k in history[0]}
        interval_metrics = []
        record["learning_rate"] = float(schedule(step))
        if interval_steps and elapsed > 0:
          record["steps_per_s"] = interval_steps / elapsed
          record["tokens_per_s"] = interval_steps * tokens_per_step / elapsed
          record["real_tokens_per_s"] = interval_real_tokens / elapsed
          timing["steps"] += interval_steps
          timing["seconds"] += elapsed
          timing["real_tokens"] += interval_real_tokens
        writer.write(done, "train", record)
        progress.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}",
                             tok_s=f"{record.get('tokens_per_s', 0):.0f}", refresh=False)
      if done % config.train.eval_every == 0 or done == num_steps:
        last_eval, reliability = evaluate(
            eval_step, state.params, data.eval, batch_size=config.eval.batch_size,
            batch_sharding=batch_sharding, num_bins=config.eval.num_bins)
        writer.write(done, "eval", last_eval)
        logging.info("step %d eval: %s", done, json.dumps(last_eval))
      # One process: stop at the step after a SIGTERM. Several: the processes agree at a
      # log step (a SIGTERM may reach them at different steps; all must save the same one).
      stop = preempted and jax.process_count() == 1
      if jax.process_count() > 1 and log_step:
        stop = _any_process(bool(preempted))
      if done % config.train.checkpoint_every == 0 or done == num_steps or stop:
        checkpointer.save(done, state, force=True)
      if stop:
        checkpointer.wait()
        raise Preempted(f"SIGTERM at step {done}: checkpoint saved in {checkpointer.directory}; "
                        "run the same command to resume")
      if done % config.train.log_every == 0:
        interval_start, interval_steps, interval_real_tokens = time.perf_counter(), 0, 0
  finally:
    progress.close()
    signal.signal(signal.SIGTERM, previous_handler)
    checkpointer.close()
    writer.close()

  final_step = int(jax.device_get(state.step))
  report = {
      "config_name": config.get("name", ""),
      "steps": final_step,
      "resumed_from_step": start_step or None,
      "num_params": num_params,
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
  if timing["seconds"] > 0:
    report["train_tokens_per_s"] = timing["steps"] * tokens_per_step / timing["seconds"]
    report["train_real_tokens_per_s"] = timing["real_tokens"] / timing["seconds"]
    report["train_pairs_per_s"] = timing["steps"] * batch_size / timing["seconds"]
    report["model_flops_per_s"] = report["train_tokens_per_s"] * models.flops_per_token(
        program.model_config, seq_len)
  if primary:
    report_lib.write_report(workdir, report)
    report_lib.plot_curves(workdir,
                           reference_accuracy=last_eval.get("bayes_optimal_accuracy"))
    if reliability is not None:
      report_lib.plot_reliability(workdir, **reliability)
  return report
