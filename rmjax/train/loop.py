"""The reward-model training loop: data, mesh, sharded init, jitted steps, checkpoints, eval.

`train_and_evaluate(config, workdir)` is everything `experiments/train_reward_model.py` runs.
A run is a pure function of its config: batches are a function of (seed, step), so a run that
is killed and started again on the same workdir resumes from its latest checkpoint and ends
with the same metrics as an uninterrupted one.
"""

import functools
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
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


def evaluate(eval_step, params, dataset, *, batch_size: int, batch_sharding,
             num_bins: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Scores every eval pair once and computes the pairwise metrics from the pair logits.

  Args:
    eval_step: `(params, batch) -> [B]` logits of P(chosen preferred) (`make_eval_step`).
    params: model parameters.
    dataset: a `PreferenceDataset` with `eval_batches`.
    batch_size: pairs per eval batch.
    batch_sharding: where batches go.
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
  for batch in dataset.eval_batches(batch_size):
    valid = np.asarray(batch["valid"])
    batch_logits = np.asarray(
        eval_step(params, jax.device_put(_model_inputs(batch), batch_sharding)))
    logits.append(batch_logits[valid].reshape(-1))
    if "preference_prob" in batch:
      # User episodes: the logits are those of the last Q pairs (the queries).
      p = np.asarray(batch["preference_prob"])
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


def _real_tokens(batch: dict[str, np.ndarray]) -> int:
  return int(sum(batch[k].sum() for k in _TOKEN_MASK_KEYS if k in batch))


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
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  for name in ("train.batch_size", "eval.batch_size"):
    section, field = name.split(".")
    size = config[section][field]
    if size <= 0 or size % shards:
      raise ValueError(f"{name}: expected a positive multiple of the {shards} batch shards "
                       f"(mesh data x fsdp), got {size}")
  for name in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
    if config.train[name] <= 0:
      raise ValueError(f"train.{name}: expected a positive integer, got {config.train[name]}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains a pairwise reward model as configured; returns the final report.

  Writes to `workdir`: config.json, metrics.jsonl, tensorboard/, checkpoints/, data report,
  report.json, report.md, curves.png, reliability.png.
  """
  wall_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  # Data and mesh.
  _check_data_fits_loss(config)
  data = rm_data.load_preference_data(config.data, workdir=workdir)
  if config.strength.use != "none":
    # Preference strength of every training pair from a trained teacher ensemble.
    train, strength_info = strength_lib.apply_teacher_strength(config.strength, data.train)
    data = data._replace(train=train, info={**data.info, "teacher_strength": strength_info})
  with open(os.path.join(workdir, "data_report.json"), "w") as f:
    json.dump(data.info, f, indent=2, sort_keys=True, default=str)
  logging.info("data: %d train pairs, %d eval pairs", data.train.num_pairs, data.eval.num_pairs)
  mesh = parallel.make_mesh(config.mesh.shape.to_dict())
  _validate(config, mesh)
  batch_sharding = parallel.batch_sharding(mesh)

  # Model, optimiser, sharded init.
  model_config = _model_config(config)
  seed_key = jax.random.PRNGKey(config.seed)
  head_kwargs = _head_kwargs(config)
  num_members = config.ensemble.num_members
  if num_members:  # M members as one stacked params pytree, trained together with vmap.
    init_params = functools.partial(models.init_ensemble, model_config,
                                    num_members=num_members, **head_kwargs)
  else:
    init_params = functools.partial(models.init_reward_model, model_config, **head_kwargs)
  graphdef, abstract_params = jax.eval_shape(init_params, seed_key)
  param_specs = models.logical_partition_specs(
      models.abstract_param_state(model_config, **head_kwargs),
      tuple(tuple(rule) for rule in config.mesh.logical_axis_rules), mesh=mesh)
  if num_members:
    param_specs = models.ensemble_partition_specs(param_specs)
  param_shardings = jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, spec), param_specs)
  if num_members:
    apply_fn = step_lib.ensemble_apply_members_last(models.make_ensemble_apply(graphdef))
  else:
    apply_fn = models.make_reward_apply(graphdef)
  step_kwargs = dict(num_members=num_members)
  if step_lib.loss_format(config.loss) == "user_episodes":
    step_kwargs.update(embed_fn=models.make_embed_apply(graphdef),
                       encode_fn=models.make_encoder_apply(graphdef),
                       context_pairs=config.data.synthetic.context_pairs)
  num_steps = config.train.num_steps
  optimizer, schedule = optim.make_optimizer(config.optim, num_steps)

  def init_state(rng):
    init_rng, state_rng = jax.random.split(rng)
    _, params = init_params(init_rng)
    params = jax.lax.with_sharding_constraint(params, param_shardings)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), state_rng)

  init_jit = jax.jit(init_state)
  state_shardings = init_jit.lower(seed_key).compile().output_shardings
  num_params = models.count_params(abstract_params)

  checkpointer = ckpt_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.max_to_keep,
      async_save=config.checkpoint.async_save)
  writer = metrics_io.MetricsWriter(workdir, tensorboard=config.train.tensorboard)
  start_step = checkpointer.latest_step()
  if start_step is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          jax.eval_shape(init_state, seed_key), state_shardings)
    state = checkpointer.restore(start_step, target)
    dropped = writer.truncate_after(start_step)
    logging.info("resumed from checkpoint step %d (%d later metric records dropped)",
                 start_step, dropped)
  else:
    start_step = 0
    state = init_jit(seed_key)
  logging.info("model: %s parameters; mesh %s", f"{num_params:,}", dict(mesh.shape))

  # Every batch field is split along its leading (example) axis: one sharding, a pytree prefix.
  loss_config = _loss_config(config)
  train_step = jax.jit(step_lib.make_train_step(apply_fn, optimizer, loss_config, **step_kwargs),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, None), donate_argnums=0)
  eval_step = jax.jit(step_lib.make_eval_step(apply_fn, loss_config, **step_kwargs))
  batch_size, seq_len = config.train.batch_size, config.data.max_len
  first = data.train.train_batch(0, 1, config.data_seed)
  sequences_per_example = sum(int(np.prod(first[k].shape[1:-1], dtype=np.int64))
                              for k in _TOKEN_MASK_KEYS if k in first)
  tokens_per_step = sequences_per_example * batch_size * seq_len

  preempted = []
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
  timing = {"steps": 0, "seconds": 0.0, "real_tokens": 0}
  last_eval, reliability = {}, None
  progress = tqdm.tqdm(total=num_steps, initial=start_step, desc="train", unit="step",
                       disable=not config.train.progress_bar, mininterval=1.0, dynamic_ncols=True)
  try:
    interval_start, interval_steps, interval_real_tokens = None, 0, 0
    interval_metrics = []
    for step in range(start_step, num_steps):
      batch = data.train.train_batch(step, batch_size, config.data_seed)
      interval_real_tokens += _real_tokens(batch)
      state, metrics = train_step(state, jax.device_put(_model_inputs(batch), batch_sharding))
      interval_metrics.append(metrics)  # Device arrays: no host sync until the log step.
      interval_steps += 1
      done = step + 1
      progress.update(1)
      if interval_start is None:  # The first step of a process includes compilation.
        jax.block_until_ready(metrics)
        interval_start, interval_steps, interval_real_tokens = time.perf_counter(), 0, 0
      if done % config.train.log_every == 0 or done == num_steps:
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
      if done % config.train.checkpoint_every == 0 or done == num_steps or preempted:
        checkpointer.save(done, state, force=True)
      if preempted:
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
        model_config, seq_len)
  report_lib.write_report(workdir, report)
  report_lib.plot_curves(workdir, reference_accuracy=last_eval.get("bayes_optimal_accuracy"))
  if reliability is not None:
    report_lib.plot_reliability(workdir, **reliability)
  return report
