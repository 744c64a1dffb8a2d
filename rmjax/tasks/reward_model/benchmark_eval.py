"""A reward model on the field's benchmarks: score every candidate, apply each benchmark's rule.

`evaluate(config, workdir)` (config: `configs/evaluate.py`) reads each set
(`rmjax.data.read_benchmark`), scores every (prompt, candidate) with one jitted scorer
(`rmjax.tasks.reward_model.scoring`), and summarises the [N, K] scores by the benchmark's
own rule (`rmjax.eval`):

  hhh, hh_*      pairwise accuracy (ties wrong), per property / subset
  pandalm        agreement with the annotators' majority; majority ties counted apart
  rewardbench    subset accuracy -> count-weighted sections -> their mean
  rewardbench2   best-of-4 with split ties; the Ties subset's own formula; mean of subsets
  rewardmath     one correct vs the wrong solutions: accuracy and mean reciprocal rank
  rmbench        the 3 x 3 style matrix per domain: easy / normal / hard

Every set that is a set of pairs (all but rewardbench2, rewardmath, rmbench; PandaLM's pairs
with a decided majority, oriented by it) also gets the diagnostics: ECE with its
reliability bins, a temperature fitted on a calibration part of the pairs and the ECE and
NLL it gives on the rest, and accuracy by length difference (characters, chosen minus
rejected). It writes results.json, report.md and the plots into `workdir`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rmjax import data as rm_data
from rmjax import eval as rm_eval
from rmjax import losses
from rmjax.tasks.reward_model import scoring

# Set name (configs/evaluate.py) -> reader kind (`rmjax.data.read_benchmark`).
SET_KINDS = dict(hhh="hhh", pandalm="pandalm", hh_harmless="hh_rlhf", hh_helpful="hh_rlhf",
                 rewardbench="rewardbench", rewardbench2="rewardbench2",
                 rewardmath="rewardmath", rmbench="rmbench")
PAIR_KINDS = ("hhh", "hh_rlhf", "rewardbench")


def _model_source(config: ml_collections.ConfigDict) -> str:
  """Which of config.model's workdir, workdirs, checkpoint is set (exactly one must be)."""
  given = [name for name in ("workdir", "workdirs", "checkpoint") if config.model[name]]
  if len(given) != 1:
    raise ValueError(f"config.model: set exactly one of workdir, workdirs, checkpoint; got "
                     f"{given or 'none'}")
  return given[0]


def _workdirs(config: ml_collections.ConfigDict) -> list[str]:
  """config.model.workdir, or the comma-separated config.model.workdirs."""
  m = config.model
  return [m.workdir] if m.workdir else [w.strip() for w in m.workdirs.split(",") if w.strip()]


def make_scorer(config: ml_collections.ConfigDict) -> Any:
  """The scorer of `config.model`: a run, several runs (an ensemble) or a HF checkpoint."""
  m = config.model
  _model_source(config)
  kwargs = dict(batch_size=config.batch_size, mesh_shape=config.mesh.to_dict(),
                length_bucket=config.length_bucket,
                ensemble_aggregation=m.ensemble_aggregation)
  step = None if m.step < 0 else m.step
  if m.checkpoint:
    return scoring.scorer_from_checkpoint(
        m.checkpoint, tokenizer=m.tokenizer or None, chat_template=m.chat_template,
        max_len=m.max_len, max_prompt_len=m.max_prompt_len, **kwargs)
  if m.workdir:
    return scoring.scorer_from_workdir(m.workdir, step=step, **kwargs)
  return scoring.EnsembleScorer(
      [scoring.scorer_from_workdir(w, step=step, **kwargs) for w in _workdirs(config)],
      aggregation=m.ensemble_aggregation)


def dry_run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Compiles the scoring of `config.model` for the TPU slice `config.dry_run.target`.

  What `make_scorer`'s jitted function runs on one batch at its widest: rewards of
  [config.batch_size, max_len] tokens (max_len: the run's data.max_len, or model.max_len
  for a HF checkpoint: the scorer's last length bucket) on config.mesh over the target's
  chips, the params as shapes from config.json alone (a run's:
  `scoring.abstract_token_model`; a HF directory's:
  `scoring.abstract_token_model_from_checkpoint`, which needs no weight files; no
  checkpoint data is read). An ensemble of runs (model.workdirs) is one step per member,
  "score/<i>". The report (`rmjax.train.dry_run`: bytes per device against the HBM, FLOPs,
  MFU bound, collectives, compile time, and what would make a step fit) goes to
  workdir/dry_run.json and dry_run.md; no benchmark file is read.

  Raises:
    ValueError: config.batch_size not split by the mesh's batch shards.
    rmjax.checkpoints.CheckpointError: model.checkpoint without a good config.json, or with
      safetensors but no reward head.
    rmjax.train.dry_run.TpuCompilerUnavailable: libtpu cannot load.
  """
  from rmjax import parallel  # noqa: PLC0415
  from rmjax.train import dry_run as dry_run_lib  # noqa: PLC0415  (only for dry runs)
  start = time.perf_counter()
  source = _model_source(config)
  target = dry_run_lib.parse_target(config.dry_run.target)
  mesh = parallel.make_mesh(config.mesh.to_dict(), dry_run_lib.topology_devices(target))
  if source == "checkpoint":
    members = [(scoring.abstract_token_model_from_checkpoint(
        config.model.checkpoint, max_len=config.model.max_len), config.model.max_len)]
    facts = dict(checkpoint=config.model.checkpoint)
  else:
    workdirs = _workdirs(config)
    run_configs = [scoring.read_run_config(member) for member in workdirs]
    members = [(scoring.abstract_token_model(run), run.data.max_len) for run in run_configs]
    facts = dict(workdirs=workdirs)
  steps, num_params = [], 0
  for i, (model, max_len) in enumerate(members):
    num_params += sum(x.size for x in jax.tree.leaves(model.params))
    steps.append(scoring.scoring_dry_run_step(
        model, mesh, batch_size=config.batch_size, max_len=max_len,
        name="score" if len(members) == 1 else f"score/{i}",
        ensemble_aggregation=config.model.ensemble_aggregation))
  report = dry_run_lib.new_report(target, mesh.shape, task="evaluate",
                                  config_name=config.name, num_params=num_params,
                                  batch_size=config.batch_size, **facts)
  dry_run_lib.compile_steps(report, steps, config, mesh_flag="mesh")
  report["total_s"] = time.perf_counter() - start
  dry_run_lib.write_report(report, workdir)
  return report


def take_items(bench: rm_data.BenchmarkSet, count: int) -> rm_data.BenchmarkSet:
  """The first `count` items of a set (all when count <= 0)."""
  if count <= 0 or count >= len(bench.prompts):
    return bench
  cut = lambda xs: tuple(xs[:count])
  return bench._replace(
      prompts=cut(bench.prompts), responses=cut(bench.responses),
      num_correct=bench.num_correct[:count], subsets=cut(bench.subsets), ids=cut(bench.ids),
      sources=cut(bench.sources),
      labels=None if bench.labels is None else bench.labels[:count])


def candidate_scores(scorer: Any, bench: rm_data.BenchmarkSet,
                     progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Scores [N, K] (K the most candidates of an item; NaN where an item has fewer) and the
  valid-candidate mask [N, K], from one scorer call over every (prompt, candidate)."""
  counts = np.array([len(r) for r in bench.responses], np.int64)
  width = int(counts.max()) if len(counts) else 0
  prompts, responses, sources = [], [], []
  for prompt, cands, source in zip(bench.prompts, bench.responses, bench.sources):
    for k, response in enumerate(cands):
      prompts.append(prompt)
      responses.append(response)
      sources.append(f"{source} (candidate {k})")
  flat = scorer.score(prompts, responses, sources=sources, progress=progress)
  mask = np.arange(width)[None, :] < counts[:, None]
  scores = np.full(mask.shape, np.nan, np.float32)
  scores[mask] = flat
  return scores, mask


def _python(x: Any) -> Any:
  x = np.asarray(x)
  if x.ndim:
    return x.tolist()
  return int(x) if np.issubdtype(x.dtype, np.integer) else float(x)


def _floats(tree: Any) -> Any:
  """Arrays to Python numbers (ints stay ints) and lists, for results.json."""
  return jax.tree.map(_python, tree)


def _by_tag(values: np.ndarray, tags: tuple[str, ...]) -> dict[str, dict[str, float]]:
  """Mean and count of `values` per tag (sorted), via `rm_eval.group_mean`."""
  names = sorted(set(tags))
  index = {name: i for i, name in enumerate(names)}
  ids = np.array([index[t] for t in tags], np.int32)
  means, counts = rm_eval.group_mean(jnp.asarray(values, jnp.float32), jnp.asarray(ids),
                                     len(names))
  return {name: dict(score=float(means[i]), count=int(counts[i]))
          for i, name in enumerate(names)}


def pair_diagnostics(chosen: np.ndarray, rejected: np.ndarray, length_difference: np.ndarray,
                     calibration: ml_collections.ConfigDict, bucket_edges: tuple[float, ...]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
  """Calibration and length diagnostics of a set of pairs.

  The pairs are split at random (`calibration.seed`) into a calibration part
  (`calibration.fraction`) and the rest; the temperature (`rm_eval.fit_temperature`) is
  fitted on the first, and ECE / NLL before and after scaling reported on the rest.
  """
  chosen = jnp.asarray(chosen, jnp.float32)
  rejected = jnp.asarray(rejected, jnp.float32)
  n = chosen.shape[0]
  num_bins = calibration.num_bins
  order = np.random.default_rng(calibration.seed).permutation(n)
  fit_rows = np.zeros(n, bool)
  fit_rows[order[:int(round(calibration.fraction * n))]] = True
  margins = chosen - rejected
  fit = rm_eval.fit_temperature(margins, mask=jnp.asarray(fit_rows))
  held = jnp.asarray(~fit_rows)
  scaled = rm_eval.apply_temperature(margins, fit.scale)
  nll = lambda m: float(losses.bradley_terry_loss(m, jnp.zeros_like(m), mask=held))
  correct = (chosen > rejected).astype(jnp.float32)
  bucket_accuracy, bucket_counts = rm_eval.accuracy_by_bucket(
      correct, jnp.asarray(length_difference, jnp.float32), jnp.asarray(bucket_edges))
  conf, acc, count = rm_eval.pairwise_reliability_bins(chosen, rejected, num_bins=num_bins)
  results = dict(
      ece=float(rm_eval.pairwise_calibration_error(chosen, rejected, num_bins=num_bins)),
      temperature=dict(
          scale=float(fit.scale), at_bound=bool(fit.at_bound),
          fitted_on=int(fit_rows.sum()), reported_on=int(n - fit_rows.sum()),
          ece_before=float(rm_eval.pairwise_calibration_error(
              margins, jnp.zeros_like(margins), mask=held, num_bins=num_bins)),
          ece_after=float(rm_eval.pairwise_calibration_error(
              scaled, jnp.zeros_like(scaled), mask=held, num_bins=num_bins)),
          nll_before=nll(margins), nll_after=nll(scaled)),
      accuracy_by_length_difference=dict(
          edges=list(bucket_edges), accuracy=np.asarray(bucket_accuracy).tolist(),
          count=np.asarray(bucket_counts).astype(int).tolist()),
      longer_chosen_fraction=float(np.mean(length_difference > 0)) if n else 0.0)
  arrays = dict(reliability=(np.asarray(conf), np.asarray(acc), np.asarray(count)),
                length=(list(bucket_edges), np.asarray(bucket_accuracy),
                        np.asarray(bucket_counts)))
  return results, arrays


def _length_difference(first: tuple[str, ...], second: tuple[str, ...]) -> np.ndarray:
  return np.array([len(a) - len(b) for a, b in zip(first, second)], np.float32)


def summarize(kind: str, bench: rm_data.BenchmarkSet, scores: np.ndarray, mask: np.ndarray,
              config: ml_collections.ConfigDict) -> tuple[dict[str, Any], dict[str, Any]]:
  """(results, arrays for the plots) of one set under its benchmark's rule."""
  n = len(bench.prompts)
  results: dict[str, Any] = dict(kind=kind, path=bench.path, items=n, read=bench.report)
  arrays: dict[str, Any] = {}
  diag_pairs = None
  if kind in PAIR_KINDS:
    chosen, rejected = scores[:, 0], scores[:, 1]
    correct = (chosen > rejected).astype(np.float32)
    results["accuracy"] = float(rm_eval.pairwise_accuracy(chosen, rejected))
    results["ties"] = int(np.sum(chosen == rejected))
    per_subset = _by_tag(correct, bench.subsets)
    results["by_subset"] = per_subset
    arrays["subsets"] = {k: v["score"] for k, v in per_subset.items()}
    if kind == "rewardbench":
      sections = rm_eval.rewardbench_section_scores(
          {k: v["score"] for k, v in per_subset.items()})
      results["sections"] = sections
      results["score"] = rm_eval.rewardbench_overall(sections)
    else:
      results["score"] = results["accuracy"]
    diag_pairs = (chosen, rejected, _length_difference(
        tuple(r[0] for r in bench.responses), tuple(r[1] for r in bench.responses)))
  elif kind == "pandalm":
    first, second = scores[:, 0], scores[:, 1]
    agreement = _floats(rm_eval.human_agreement(first, second, jnp.asarray(bench.labels)))
    agreement = {k: int(v) if k.startswith("num_") else v for k, v in agreement.items()}
    results.update(agreement)
    results["score"] = agreement["agreement"]
    majority = np.asarray(rm_eval.majority_label(jnp.asarray(bench.labels)))
    decided = np.isin(majority, (1, 2))
    first_wins = majority[decided] == 1
    chosen = np.where(first_wins, first[decided], second[decided])
    rejected = np.where(first_wins, second[decided], first[decided])
    texts = [(r[0], r[1]) if w else (r[1], r[0])
             for r, w in zip([bench.responses[i] for i in np.flatnonzero(decided)], first_wins)]
    diag_pairs = (chosen, rejected, _length_difference(tuple(t[0] for t in texts),
                                                       tuple(t[1] for t in texts)))
  elif kind == "rewardbench2":
    per_subset = {}
    tags = np.array(bench.subsets)
    for subset in sorted(set(bench.subsets)):
      rows = np.flatnonzero(tags == subset)
      if subset == "Ties":
        parsed = [rm_data.parse_ties_id(bench.ids[i]) for i in rows]
        ties = rm_eval.rewardbench2_ties_score(
            scores[rows], bench.num_correct[rows], np.array([p[0] for p in parsed]),
            np.array([p[1] for p in parsed]), mask=mask[rows])
        per_subset[subset] = dict(_floats(ties), count=len(rows))
      else:
        credit = rm_eval.best_of_n_credit(scores[rows], mask=mask[rows])
        per_subset[subset] = dict(score=float(np.mean(credit)), count=len(rows))
    results["by_subset"] = per_subset
    arrays["subsets"] = {k: v["score"] for k, v in per_subset.items()}
    results["score"] = rm_eval.rewardbench2_overall(
        {k: v["score"] for k, v in per_subset.items()}, require_all=False)
  elif kind == "rewardmath":
    chosen, rejected = scores[:, 0], scores[:, 1:]
    valid = mask[:, 1:]
    accuracy = np.asarray(rm_eval.one_vs_many_accuracy(chosen, rejected, mask=valid))
    rank = np.asarray(rm_eval.reciprocal_rank(chosen, rejected, mask=valid))
    results.update(accuracy=float(accuracy.mean()), mrr=float(rank.mean()),
                   accuracy_ties_correct=float(np.mean(rm_eval.one_vs_many_accuracy(
                       chosen, rejected, mask=valid, ties_correct=True))))
    results["score"] = results["accuracy"]
    results["by_subset"] = _by_tag(accuracy, bench.subsets)
    arrays["subsets"] = {k: v["score"] for k, v in results["by_subset"].items()}
  elif kind == "rmbench":
    domains = np.array([rm_eval.rmbench_domain(d) for d in bench.subsets])
    per_domain = {}
    for domain in sorted(set(domains)):
      rows = np.flatnonzero(domains == domain)
      matrix = rm_eval.style_accuracy_matrix(scores[rows, :3], scores[rows, 3:6])
      per_domain[domain] = dict(_floats(rm_eval.style_difficulty(matrix)),
                                matrix=np.asarray(matrix).tolist(), count=len(rows))
    results["by_domain"] = per_domain
    for level in ("easy", "normal", "hard", "average"):
      results[level] = float(np.mean([d[level] for d in per_domain.values()]))
    results["score"] = results["average"]
    arrays["subsets"] = {k: v["average"] for k, v in per_domain.items()}
  else:
    raise ValueError(f"unknown benchmark kind {kind!r}; expected one of "
                     f"{sorted(set(SET_KINDS.values()))}")
  if diag_pairs is not None and len(diag_pairs[0]):
    results["diagnostics"], diag_arrays = pair_diagnostics(
        *diag_pairs, config.calibration, tuple(config.length_bucket_edges))
    arrays.update(diag_arrays)
  return results, arrays


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return lines


def report_markdown(results: Mapping[str, Any], describe: Mapping[str, Any]) -> str:
  """report.md: one section per set, its table in the benchmark's own layout."""
  model = json.dumps(describe.get("model", describe))
  lines = ["# Reward-model evaluation", "", f"- model: `{model[:2000]}`", ""]
  lines += _table([(name, r["kind"], str(r["items"]), f"{r['score']:.4f}")
                   for name, r in results["sets"].items()], ("set", "benchmark", "items", "score"))
  for name, r in results["sets"].items():
    lines += ["", f"## {name} ({r['kind']}, {r['items']} items)", ""]
    if r["kind"] == "rewardbench":
      lines += _table([(s, f"{v:.4f}") for s, v in r["sections"].items()] +
                      [("overall", f"{r['score']:.4f}")], ("section", "score"))
      lines.append("")
    if r["kind"] == "pandalm":
      lines += _table([(k, f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]))
                       for k in sorted(r) if k.startswith(("agreement", "num_", "model_"))],
                      ("measure", "value"))
      lines.append("")
    if r["kind"] == "rewardmath":
      lines += _table([("accuracy", f"{r['accuracy']:.4f}"), ("MRR", f"{r['mrr']:.4f}"),
                       ("accuracy (ties correct)", f"{r['accuracy_ties_correct']:.4f}")],
                      ("measure", "value"))
      lines.append("")
    if r["kind"] == "rmbench":
      lines += _table([(d, f"{v['easy']:.4f}", f"{v['normal']:.4f}", f"{v['hard']:.4f}",
                        f"{v['average']:.4f}", str(v["count"]))
                       for d, v in r["by_domain"].items()] +
                      [("overall", f"{r['easy']:.4f}", f"{r['normal']:.4f}", f"{r['hard']:.4f}",
                        f"{r['average']:.4f}", str(r["items"]))],
                      ("domain", "easy", "normal", "hard", "average", "items"))
      lines.append("")
    if "by_subset" in r:
      lines += _table([(s, f"{v['score']:.4f}", str(v["count"]))
                       for s, v in r["by_subset"].items()], ("subset", "score", "items"))
    diag = r.get("diagnostics")
    if diag:
      t = diag["temperature"]
      lines += ["", f"- ECE {diag['ece']:.4f}; temperature scale {t['scale']:.4g} "
                f"(fitted on {t['fitted_on']} pairs{', at a bound' if t['at_bound'] else ''}): "
                f"on the other {t['reported_on']}, ECE {t['ece_before']:.4f} -> "
                f"{t['ece_after']:.4f}, NLL {t['nll_before']:.4f} -> {t['nll_after']:.4f}",
                f"- chosen is the longer response in {diag['longer_chosen_fraction']:.3f} of "
                "the pairs; accuracy by length difference (characters):", ""]
      by_len = diag["accuracy_by_length_difference"]
      edges = [-np.inf, *by_len["edges"], np.inf]
      lines += _table([(f"[{edges[i]:g}, {edges[i + 1]:g})", f"{a:.4f}", str(c))
                       for i, (a, c) in enumerate(zip(by_len["accuracy"], by_len["count"]))],
                      ("length difference", "accuracy", "pairs"))
  return "\n".join(lines) + "\n"


def write_plots(workdir: str, name: str, arrays: Mapping[str, Any]) -> list[str]:
  """Reliability diagram, accuracy by length bucket and per-subset bars of one set."""
  from rmjax.train import report as report_lib  # pylint: disable=g-import-not-at-top
  plt = report_lib.plt
  paths = []
  if "reliability" in arrays:
    paths.append(report_lib.plot_reliability(workdir, *arrays["reliability"],
                                             filename=f"{name}_reliability.png",
                                             title=f"Reliability: {name}"))
  if "length" in arrays:
    edges, accuracy, counts = arrays["length"]
    labels = [f"<{edges[0]:g}"] + [f"[{a:g},{b:g})" for a, b in zip(edges, edges[1:])] + [
        f">={edges[-1]:g}"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(labels)), np.where(counts > 0, accuracy, 0.0))
    for i, c in enumerate(counts):
      ax.text(i, 0.02, str(int(c)), ha="center")
    ax.set(xticks=range(len(labels)), xticklabels=labels, ylim=(0, 1), ylabel="accuracy",
           xlabel="length(chosen) - length(rejected), characters (pairs per bar)",
           title=f"Accuracy by length difference: {name}")
    fig.tight_layout()
    paths.append(os.path.join(workdir, f"{name}_length.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
  if arrays.get("subsets"):
    subsets = arrays["subsets"]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(subsets) + 2), 4))
    ax.bar(range(len(subsets)), list(subsets.values()))
    ax.set(xticks=range(len(subsets)), ylim=(0, 1), ylabel="score",
           title=f"Per subset: {name}")
    ax.set_xticklabels(list(subsets), rotation=45, ha="right")
    fig.tight_layout()
    paths.append(os.path.join(workdir, f"{name}_subsets.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
  return paths


def evaluate(config: ml_collections.ConfigDict, workdir: str, scorer: Any = None
             ) -> dict[str, Any]:
  """Scores every set of `config.sets` and writes results.json, report.md and the plots.

  Args:
    config: `configs/evaluate.py`.
    workdir: the output directory.
    scorer: optional ready scorer (default `make_scorer(config)`).

  Returns:
    The results (as in results.json).
  """
  names = [s.strip() for s in config.sets.split(",") if s.strip()]
  unknown = [s for s in names if s not in SET_KINDS]
  if unknown or not names:
    raise ValueError(f"config.sets: unknown set(s) {unknown or 'none given'}; expected a "
                     f"comma-separated list of {list(SET_KINDS)}")
  missing = [s for s in names if not config.paths[s]]
  if missing:
    raise ValueError(f"config.sets names {missing} but config.paths." + ", paths.".join(
        missing) + " is empty: give the benchmark's file (its files are not shipped)")
  benches = {s: take_items(rm_data.read_benchmark(SET_KINDS[s], config.paths[s]),
                           config.max_items) for s in names}
  scorer = scorer if scorer is not None else make_scorer(config)
  os.makedirs(workdir, exist_ok=True)
  results: dict[str, Any] = dict(sets={}, model=scorer.describe())
  for name, bench in benches.items():
    start = time.perf_counter()
    total = sum(len(r) for r in bench.responses)
    bar = None
    if config.progress:
      import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm.tqdm(total=total, desc=f"scoring {name}", unit="seq")
    scores, mask = candidate_scores(scorer, bench, bar.update if bar else None)
    if bar is not None:
      bar.close()
    seconds = time.perf_counter() - start
    result, arrays = summarize(SET_KINDS[name], bench, scores, mask, config)
    result.update(sequences=total, scoring_s=seconds, sequences_per_s=total / max(seconds, 1e-9))
    results["sets"][name] = result
    result["plots"] = [os.path.basename(p) for p in write_plots(workdir, name, arrays)]
    np.savez(os.path.join(workdir, f"{name}_scores.npz"), scores=scores, mask=mask)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True, default=str)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(report_markdown(results, results["model"]))
  return results
