"""The reward-model task: any family (`rmjax.tasks.reward_model.families`) as a `Task`.

`make_task(config)` looks up `config.family` and turns its record into what the trainer needs:
the model and its shardings, the loss and eval functions, the data (the family's own loader
or `rmjax.data.load_preference_data`, then its data step), and one evaluation for every
family: the pair logits of the held-out pairs give the eval NLL, accuracy, calibration and,
on synthetic data with a known preference probability, the Bayes-optimal and expected
accuracies.
"""

import functools
from typing import Any

import ml_collections
import numpy as np

from rmjax import data as rm_data
from rmjax import eval as rm_eval
from rmjax import losses
from rmjax import models
from rmjax.tasks.reward_model import pairwise
from rmjax.tasks.reward_model import policy_world
from rmjax.tasks.reward_model import pretrained
from rmjax.tasks.reward_model.family import FORMAT_FIELDS
from rmjax.tasks.reward_model.family import Family
from rmjax.tasks.reward_model.family import get_family
from rmjax.tasks.reward_model.family import TOKEN_MASK_FIELDS
from rmjax.train import report as report_lib
from rmjax.train import trainer
from rmjax.train.task import Task
from rmjax.train.task import TaskData


def evaluate_pairs(eval_step, params, dataset, place, *, batch_size: int, num_bins: int
                   ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Scores every eval pair once and computes the pairwise metrics from the pair logits.

  Args:
    eval_step: `(params, batch) -> [B]` (or [B, Q] for user episodes) logits of
      P(chosen preferred), returned whole to every process.
    params: model parameters.
    dataset: the eval dataset (pairs, or user episodes).
    place: `(dataset, indices, valid) -> batch` on the mesh (each process loads its rows).
    batch_size: examples per eval batch.
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
  for indices, valid in rm_data.eval_index_batches(dataset.num_examples, batch_size):
    batch_logits = np.asarray(eval_step(params, place(dataset, indices, valid)))
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


# Benchmarks the trainer's periodic evaluation scores by config (`config.eval.benchmarks`):
# the ones whose items are pairs, scored with the family's own pair logits.
PAIR_BENCHMARKS = ("hhh", "hh_rlhf", "rewardbench")


class EvalSets:
  """The eval split and further eval sets (e.g. HHH alignment by property), scored together.

  Args:
    main: the eval split.
    extra: set name -> dataset.
    groups: benchmark name -> the names of its sets in `extra` (one per subset); each
      benchmark also gets metrics over all of its pairs (and RewardBench v1 its sections).
    responses: optional held-out responses with their true rewards
      (`policy_world.ResponseSet`), scored for the proxy/* correlations.

  `num_examples` is the eval split's; `evaluate_sets` reports every set.
  """

  def __init__(self, main: Any, extra: dict[str, Any],
               groups: dict[str, list[str]] | None = None,
               responses: policy_world.ResponseSet | None = None):
    self.main = main
    self.extra = dict(extra)
    self.groups = dict(groups or {})
    self.responses = responses

  @property
  def num_examples(self) -> int:
    return self.main.num_examples


def evaluate_sets(eval_step, params, sets: Any, place, *, batch_size: int, num_bins: int
                  ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """`evaluate_pairs` of the eval split, then of each extra set as `<name>/<metric>`.

  Each benchmark of `sets.groups` (e.g. hhh, whose sets are `hhh_<property>`) also gives
  `<benchmark>/accuracy` and `<benchmark>/num_pairs` over all of its pairs; RewardBench v1
  its sections and overall (`rmjax.eval.rewardbench_section_scores`) as
  `rewardbench/<section>` and `rewardbench/score`. With `sets.responses`, the correlations
  of the rewards with the true reward (`policy_world.evaluate_responses`) as `proxy/*`.
  """
  if not isinstance(sets, EvalSets):
    return evaluate_pairs(eval_step, params, sets, place, batch_size=batch_size,
                          num_bins=num_bins)
  metrics, arrays = evaluate_pairs(eval_step, params, sets.main, place,
                                   batch_size=batch_size, num_bins=num_bins)
  for name, dataset in sets.extra.items():
    extra, _ = evaluate_pairs(eval_step, params, dataset, place, batch_size=batch_size,
                              num_bins=num_bins)
    for key in ("accuracy", "loss", "calibration_error", "mean_margin", "num_pairs"):
      metrics[f"{name}/{key}"] = extra[key]
  for bench, names in sets.groups.items():
    pairs = sum(metrics[f"{n}/num_pairs"] for n in names)
    correct = sum(metrics[f"{n}/accuracy"] * metrics[f"{n}/num_pairs"] for n in names)
    metrics[f"{bench}/accuracy"] = correct / max(pairs, 1)
    metrics[f"{bench}/num_pairs"] = pairs
    if bench == "rewardbench":
      subsets = {n[len(bench) + 1:]: metrics[f"{n}/accuracy"] for n in names}
      sections = rm_eval.rewardbench_section_scores(subsets)
      for section, value in sections.items():
        metrics[f"{bench}/{section}"] = value
      metrics[f"{bench}/score"] = rm_eval.rewardbench_overall(sections)
  if sets.responses is not None:
    metrics.update(policy_world.evaluate_responses(eval_step, params, sets.responses, place,
                                                   batch_size=batch_size))
  return metrics, arrays


def parse_benchmarks(spec: str) -> list[tuple[str, str]]:
  """`config.eval.benchmarks` ("<benchmark>:<path>,..."), checked: [(benchmark, path)]."""
  out = []
  for entry in filter(None, (e.strip() for e in spec.split(","))):
    name, sep, path = entry.partition(":")
    if not sep or not path or name not in PAIR_BENCHMARKS:
      raise ValueError(
          f"eval.benchmarks: expected comma-separated <benchmark>:<path> with a benchmark of "
          f"{PAIR_BENCHMARKS}, got {entry!r} (RewardBench 2, RewardMATH, RM-Bench and PandaLM "
          "need one reward per response: experiments/evaluate_reward_model.py)")
    if name in dict(out):
      raise ValueError(f"eval.benchmarks: {name!r} is given twice")
    out.append((name, path))
  return out


def write_plots(workdir: str, final_eval: dict[str, Any], arrays: dict[str, Any]) -> None:
  """curves.png (loss, accuracy, ECE against the step) and reliability.png."""
  report_lib.plot_curves(workdir, reference_accuracy=final_eval.get("bayes_optimal_accuracy"))
  if arrays:
    report_lib.plot_reliability(workdir, **arrays)


def check_config(family: Family, config: ml_collections.ConfigDict) -> None:
  """The family's settings, and the data format it trains on, before any data is made."""
  if config.data.format != family.data_format:
    raise ValueError(f"data.format={config.data.format!r} does not fit family="
                     f"{family.name!r}, which trains on data.format={family.data_format!r}")
  if family.synthetic_only and config.data.source != "synthetic":
    raise ValueError(f"family={family.name!r} trains on generated data; data.source must be "
                     f"'synthetic', got {config.data.source!r}")
  family.check_config(config)
  if pretrained.enabled(config):
    pretrained.check_config(family, config)


def load_data(family: Family, config: ml_collections.ConfigDict, workdir: str) -> TaskData:
  """The family's data (its own loader, or `rmjax.data.load_preference_data`), after its
  data step; with `config.eval.hhh_path`, HHH alignment's pairs by property, and with
  `config.eval.benchmarks`, each benchmark's pairs by subset, as further eval sets; with a
  frozen pretrained backbone, all of it as cached features. Source "synthetic_policy"
  (`policy_world`): the synthetic policy world's pairs, and its held-out responses scored
  against the true reward."""
  responses = None
  if family.load_data is not None:
    data = family.load_data(config, workdir)
  elif config.data.source == policy_world.SOURCE:
    data, responses = policy_world.load_data(config)
  else:
    data = rm_data.load_preference_data(config.data, workdir=workdir)
  if family.prepare_data is not None:
    data = family.prepare_data(config, data)
  info = dict(data.info)
  extra, groups = {}, {}
  tokenizer = rm_data.make_tokenizer(config.data.tokenizer)
  layout = dict(tokenizer=tokenizer, chat_template=config.data.chat_template,
                max_len=config.data.max_len, max_prompt_len=config.data.max_prompt_len)
  if config.eval.get("hhh_path"):
    hhh, info["hhh_alignment"] = rm_data.load_hhh_alignment(config.eval.hhh_path, **layout)
    extra = {f"hhh_{prop}": dataset for prop, dataset in hhh.items()}
    groups["hhh"] = list(extra)
  for name, path in parse_benchmarks(config.eval.get("benchmarks", "")):
    if name in groups:
      raise ValueError(f"eval.benchmarks names {name!r}, which eval.hhh_path already scores")
    bench = rm_data.read_benchmark(name, path)
    datasets, truncation = rm_data.benchmark_pair_datasets(bench, **layout)
    extra.update(datasets)
    groups[name] = list(datasets)
    info[f"benchmark_{name}"] = dict(path=path, read=bench.report, truncation=truncation,
                                     pairs={n: d.num_pairs for n, d in datasets.items()})
  inputs = functools.partial(pretrained.model_inputs, config, workdir=workdir)
  train = inputs(data.train)
  evaluation = inputs(data.eval)
  if responses is not None:
    responses = responses._replace(dataset=inputs(responses.dataset))
  if extra or responses is not None:
    evaluation = EvalSets(evaluation, {name: inputs(d) for name, d in extra.items()}, groups,
                          responses)
  return TaskData(train, evaluation, info)


def make_task(config: ml_collections.ConfigDict) -> Task:
  """The reward-model task of `config` (`configs/reward_model.py`): `config.family` names
  the family; its own sections (loss, head, ...) hold its settings."""
  family = get_family(config.family)
  check_config(family, config)
  use_pretrained = pretrained.enabled(config)
  model = (pretrained.build_model if use_pretrained else family.build_model)(family, config)
  if family.make_functions is not None:
    make_functions = functools.partial(family.make_functions, config, model)
  else:
    make_functions = functools.partial(pairwise.make_pair_functions, family, config, model)
  batch_fields = (*_input_fields(family, model), *family.batch_fields, *family.side_fields)
  layout = None
  if family.data_format == "pairs" and model.input_fields == ("tokens", "mask"):
    # Token pairs (not lists, episodes or cached features): the batch without data.
    layout = lambda n: rm_data.batch_layout(batch_fields, n, config.data.max_len)
  return Task(
      name=f"reward_model/{family.name}",
      init_params=model.init_params,
      param_specs=model.param_specs,
      make_loss=lambda graphdef, shard: make_functions(graphdef, shard)[0],
      make_eval=lambda graphdef, shard: make_functions(graphdef, shard)[1],
      load_data=functools.partial(load_data, family, config),
      evaluate=functools.partial(evaluate_sets, batch_size=config.eval.batch_size,
                                 num_bins=config.eval.num_bins),
      batch_fields=batch_fields,
      token_mask_fields=TOKEN_MASK_FIELDS,
      length_axes=_length_axes(family, model),
      write_plots=write_plots,
      flops_per_token=(pretrained.flops_per_token(config, model) if use_pretrained else
                       models.flops_per_token(model.model_config, config.data.max_len)),
      report={"family": family.name, **(pretrained.report(config) if use_pretrained else {})},
      load_params=model.load_params,
      batch_layout=layout)


def _input_fields(family: Family, model) -> tuple[str, ...]:
  """The batch fields of the model's inputs: the format's, or `chosen_<f>` / `rejected_<f>`
  of the model's own input fields (cached features)."""
  if family.data_format == "pairs":
    return tuple(f"{side}_{f}" for f in model.input_fields for side in ("chosen", "rejected"))
  return FORMAT_FIELDS[family.data_format]


def _length_axes(family: Family, model) -> dict[str, int]:
  """The input fields with a token axis (`Task.length_axes`): tokens and masks on their last
  axis, cached per-token features [B, L, D] on their second-to-last; pooled features [B, D]
  have none. Every family reads right-padded sequences through masks (causal attention,
  RoPE positions from the first real token, the last real token or a masked mean), so
  cutting padding changes no value beyond float rounding."""
  fields = _input_fields(family, model)
  if "features" in model.input_fields and "mask" not in model.input_fields:
    return {}
  return {f: -2 if f.endswith("_features") else -1 for f in fields
          if f.endswith(("tokens", "mask", "_features"))}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the reward model of `config` (`make_task`) with the trainer; returns its report."""
  return trainer.train_and_evaluate(config, workdir, make_task(config))
