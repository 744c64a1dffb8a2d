r"""Evaluate a reward model on the field's benchmarks: config and presets.

  python -m experiments.evaluate_reward_model --config configs/evaluate.py \
      --config.model.workdir=runs/hh_helpful_smollm2 --workdir runs/eval_helpful_smollm2
  python -m experiments.evaluate_reward_model --config configs/evaluate.py:rewardbench \
      --config.model.checkpoint=exported/smollm2_rm \
      --config.paths.rewardbench=/data/reward-bench/filtered.jsonl --workdir runs/eval_rb
  python -m experiments.evaluate_reward_model --config configs/evaluate.py:fsdp \
      --config.model.workdir=runs/rm_pod --config.dry_run.target=v5e-256 \
      --config.batch_size=256 --workdir /tmp/eval_pod_dry_run      # compile only, report

A dry run (`--config.dry_run.target`, a TPU slice such as v5e-256 or v5e:4x4) reads the
run's config.json only, compiles the scoring function for that slice (config.mesh over its
chips, batches of config.batch_size sequences of the run's max_len) and writes
dry_run.json / dry_run.md instead of scoring (`benchmark_eval.dry_run`).

The model (exactly one of):
  model.workdir      a trained rmjax run (its latest checkpoint, or model.step); its tokenizer,
                     chat template and sequence layout come from its config.json.
  model.workdirs     several runs, comma-separated, scored as an ensemble
                     (model.ensemble_aggregation: mean, median, min, mean_minus_std,
                     mean_minus_var; an ensemble-family run aggregates its members the same way).
  model.checkpoint   a Hugging Face *ForSequenceClassification decoder directory (e.g. the
                     output of experiments/export_reward_model.py), with model.tokenizer
                     (default its tokenizer.json), model.chat_template, model.max_len and
                     model.max_prompt_len.

The sets (`sets`, comma-separated; each reads paths.<set>):
  hhh           BIG-bench HHH alignment by property (../shared/data; accuracy per property)
  pandalm       PandaLM's 999 pairs with three human labels (agreement with the majority,
                ties reported separately)
  hh_harmless, hh_helpful  HH-RLHF test files (../shared/data; pairwise accuracy)
  rewardbench   RewardBench v1 rows (subset accuracy, sections, overall)
  rewardbench2  RewardBench 2 rows (best-of-4 with split ties, the Ties formula, overall)
  rewardmath    RewardMATH (one correct vs nine wrong solutions: accuracy, MRR)
  rmbench       RM-Bench (3 x 3 style matrix per domain: easy / normal / hard)
The benchmarks' own files are not shipped: give their paths.

Presets (after the colon, comma-separated): default (hhh, pandalm), shared (hhh, pandalm,
hh_harmless, hh_helpful), rewardbench, rewardbench2, rewardmath, rmbench, smoke (few items,
for tests); a mesh preset (data_parallel, fsdp, fsdp_tensor) lays the batch and the weights
out over the devices as in training.
"""

import os

import ml_collections

from rmjax.train import run_config

_SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            os.pardir, "shared", "data")
SETS = ("hhh", "pandalm", "hh_harmless", "hh_helpful", "rewardbench", "rewardbench2",
        "rewardmath", "rmbench")
_MESH_PRESETS = ("data_parallel", "fsdp", "fsdp_tensor")


def _shared(*parts: str) -> str:
  return os.path.normpath(os.path.join(_SHARED_DATA, *parts))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The evaluation config; `arg` is a comma-separated list of presets (see the docstring)."""
  config = ml_collections.ConfigDict()
  config.name = "default"
  config.model = ml_collections.ConfigDict(dict(
      workdir="", workdirs="", step=-1, checkpoint="", tokenizer="", chat_template="plain",
      max_len=512, max_prompt_len=384, ensemble_aggregation="mean"))
  config.sets = "hhh,pandalm"
  config.paths = ml_collections.ConfigDict(dict(
      hhh=_shared("hhh_alignment", "hhh_alignment.jsonl"),
      pandalm=_shared("pandalm", "testset-v1.json"),
      hh_harmless=_shared("hh_rlhf", "harmless-base-test.jsonl.gz"),
      hh_helpful=_shared("hh_rlhf", "helpful-base-test.jsonl.gz"),
      rewardbench="", rewardbench2="", rewardmath="", rmbench=""))
  # Items read of each set: 0 = all (a smoke run takes the first ones).
  config.max_items = 0
  config.batch_size = 32
  # Sequence-axis buckets of the jitted scorer (0: always max_len).
  config.length_bucket = 64
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  config.calibration = ml_collections.ConfigDict(dict(
      # The fraction of each pairwise set's pairs the temperature is fitted on; the rest
      # reports the calibrated ECE and NLL.
      fraction=0.5, num_bins=10, seed=0))
  # Length-difference buckets (chosen minus rejected characters) of the length diagnostic.
  config.length_bucket_edges = (-500, -100, 0, 100, 500)
  config.progress = True
  # Compile for a TPU slice instead of scoring (rmjax.train.dry_run), e.g. v5e-256.
  config.dry_run = run_config.dry_run_config()
  for preset in filter(None, (arg or "").split(",")):
    _apply_preset(config, preset)
  config.name = arg or "default"
  return config


def _apply_preset(config: ml_collections.ConfigDict, preset: str) -> None:
  if preset in _MESH_PRESETS:
    from rmjax import parallel  # pylint: disable=g-import-not-at-top
    config.mesh.update(parallel.mesh_preset(preset))
  elif preset == "default":
    config.sets = "hhh,pandalm"
  elif preset == "shared":
    config.sets = "hhh,pandalm,hh_harmless,hh_helpful"
  elif preset in SETS:
    config.sets = preset
  elif preset == "smoke":
    config.max_items = 16
    config.batch_size = 8
    config.progress = False
  else:
    raise ValueError(f"configs/evaluate.py: unknown preset {preset!r}; expected a "
                     f"comma-separated list of default, shared, smoke, {', '.join(SETS)} "
                     f"or a mesh preset {_MESH_PRESETS}")
