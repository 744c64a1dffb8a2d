"""The scoring service and the benchmark evaluation: a trained run as `score(prompts,
responses)`, 1 device against 8, fixed shapes, ensembles, and evaluate() on the fixtures."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "benchmarks"


def _configs():
  sys.path.insert(0, str(REPO_ROOT))
  from configs import evaluate, reward_model  # pylint: disable=g-import-not-at-top
  return evaluate, reward_model


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """A bt smoke run of 4 steps: (workdir, report)."""
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  _, reward_model = _configs()
  config = reward_model.get_config("smoke")
  config.mesh.num_devices = 1  # Not a sharding test: one device compiles ~2x faster.
  config.train.update(num_steps=4, log_every=2, eval_every=4, checkpoint_every=4)
  config.optim.warmup_steps = 1
  # The trainer's periodic eval scores pair benchmarks by config, with the same rules.
  config.eval.benchmarks = (f"rewardbench:{FIXTURES / 'rewardbench.jsonl'},"
                            f"hhh:{FIXTURES / 'hhh.jsonl'}")
  workdir = tmp_path_factory.mktemp("smoke_run")
  report = rm_task.train_and_evaluate(config, str(workdir))
  return str(workdir), report


def _eval_pairs(workdir):
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  config = scoring.read_run_config(workdir)
  return rm_data.load_preference_data(config.data, workdir=workdir + "/data").eval.arrays


def test_scorer_of_a_run_gives_its_final_eval(smoke_run):
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  workdir, report = smoke_run
  scorer = scoring.scorer_from_workdir(workdir, batch_size=16)
  pairs = _eval_pairs(workdir)
  chosen = scorer.score_tokens(pairs["chosen_tokens"], pairs["chosen_mask"])
  rejected = scorer.score_tokens(pairs["rejected_tokens"], pairs["rejected_mask"])
  final = report["final_eval"]
  assert abs(np.mean(chosen - rejected) - final["mean_margin"]) < 1e-5
  assert abs(np.mean(chosen > rejected) - final["accuracy"]) < 1e-9
  # Texts go through the run's tokenizer and template: the same ids as the training data.
  texts = ["hello", "a longer response " * 5]
  tokens, mask, _ = scorer.encode(["p1", "p2"], texts)
  np.testing.assert_array_equal(scorer.score(["p1", "p2"], texts),
                                scorer.score_tokens(tokens, mask))


def test_one_device_and_eight_devices_give_identical_scores(smoke_run):
  from rmjax import parallel  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  workdir, _ = smoke_run
  assert len(jax.devices()) == 8
  pairs = _eval_pairs(workdir)
  tokens, mask = pairs["chosen_tokens"][:40], pairs["chosen_mask"][:40]
  one = scoring.scorer_from_workdir(workdir, batch_size=8, devices=jax.devices()[:1])
  assert one.mesh.size == 1
  expected = one.score_tokens(tokens, mask)
  for preset in ("data_parallel", "fsdp"):
    # 8 rows per device, as on one device: the same per-device program, bit for bit.
    eight = scoring.scorer_from_workdir(workdir, batch_size=64,
                                        mesh_shape=parallel.mesh_preset(preset))
    assert eight.mesh.size == 8
    np.testing.assert_array_equal(eight.score_tokens(tokens, mask), expected)
    # 1 row per device: other matmul shapes, so float32 rounding may differ (~1 ulp).
    small = scoring.scorer_from_workdir(workdir, batch_size=8,
                                        mesh_shape=parallel.mesh_preset(preset))
    np.testing.assert_allclose(small.score_tokens(tokens, mask), expected, rtol=1e-5,
                               atol=1e-6)


def test_fixed_shapes_do_not_recompile_and_order_is_kept(smoke_run):
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  workdir, _ = smoke_run
  scorer = scoring.scorer_from_workdir(workdir, batch_size=8, length_bucket=16)
  pairs = _eval_pairs(workdir)
  tokens, mask = pairs["chosen_tokens"], pairs["chosen_mask"]
  whole = scorer.score_tokens(tokens[:21], mask[:21])
  shapes = set(scorer.compiled_shapes)
  assert all(b == 8 and (w % 16 == 0 or w == scorer.max_len) for b, w in shapes)
  assert len(shapes) <= -(-scorer.max_len // 16)
  compiled = scorer._rewards._cache_size()  # pylint: disable=protected-access
  # A permuted, smaller call reuses the compiled programs and returns rows in call order.
  order = np.random.default_rng(0).permutation(21)[:13]
  part = scorer.score_tokens(tokens[order], mask[order])
  assert scorer._rewards._cache_size() == compiled  # pylint: disable=protected-access
  np.testing.assert_allclose(part, whole[order], atol=1e-6)
  # Every bucket width gives the same reward: right padding changes nothing.
  full = scoring.scorer_from_workdir(workdir, batch_size=8, length_bucket=0)
  np.testing.assert_allclose(full.score_tokens(tokens[:21], mask[:21]), whole, atol=1e-5)
  with pytest.raises(ValueError, match="batch_size=6 does not split over the 8"):
    scoring.scorer_from_workdir(workdir, batch_size=6,
                                mesh_shape={"data": 8, "fsdp": 1, "tensor": 1})
  empty = mask[:2].copy()
  empty[1] = 0
  with pytest.raises(ValueError, match=r"mask: rows \[1\] are empty"):
    scorer.score_tokens(tokens[:2], empty)


def test_ensemble_scorer_aggregates_members(smoke_run):
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  workdir, _ = smoke_run
  single = scoring.scorer_from_workdir(workdir, batch_size=8)
  prompts, responses = ["p"] * 3, ["x", "yy", "zzz"]
  base = single.score(prompts, responses)

  class Shifted:  # a second member: the same model plus 1
    def score(self, *args, **kwargs):
      return single.score(*args, **kwargs) + 1.0

    def describe(self):
      return {}

  mean = scoring.EnsembleScorer([single, Shifted()]).score(prompts, responses)
  np.testing.assert_allclose(mean, base + 0.5, atol=1e-6)
  worst = scoring.EnsembleScorer([single, Shifted()], aggregation="min")
  np.testing.assert_allclose(worst.score(prompts, responses), base, atol=1e-6)
  with pytest.raises(ValueError, match="aggregation: expected one of"):
    scoring.EnsembleScorer([single], aggregation="max")


def test_non_scalar_families_and_missing_runs_are_refused(tmp_path):
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  _, reward_model = _configs()
  run = scoring.TrainedRun(str(tmp_path), reward_model.get_config("gpm,smoke"), 1, None)
  with pytest.raises(ValueError, match="family 'gpm' has head 'general_preference'.*one reward per response"):
    scoring.token_model_from_run(run)
  with pytest.raises(FileNotFoundError, match="no config.json"):
    scoring.scorer_from_workdir(str(tmp_path))


# --- evaluate(): the benchmark rules on the fixture files ------------------------------


class _ConstantScorer:
  """Scores every response 0: what each benchmark's own code gives such a model."""

  def score(self, prompts, responses, *, sources=None, progress=None):
    del prompts, sources, progress
    return np.zeros(len(responses), np.float32)

  def describe(self):
    return {"model": "constant"}


def _eval_config(**paths):
  evaluate, _ = _configs()
  config = evaluate.get_config("smoke")
  config.sets = ",".join(paths)
  config.paths.update(paths)
  return config


FIXTURE_SETS = dict(rewardbench="rewardbench.jsonl", rewardbench2="rewardbench2.jsonl",
                    rewardmath="rewardmath.json", rmbench="rmbench.jsonl",
                    pandalm="pandalm.json", hhh="hhh.jsonl")


def _fixture_config():
  config = _eval_config(**{k: str(FIXTURES / v) for k, v in FIXTURE_SETS.items()})
  config.max_items = 0
  return config


def test_a_constant_model_gets_what_the_benchmarks_give_it(tmp_path):
  from rmjax.tasks.reward_model import benchmark_eval  # pylint: disable=g-import-not-at-top
  results = benchmark_eval.evaluate(_fixture_config(), str(tmp_path), _ConstantScorer())
  sets = results["sets"]
  # RewardBench v1: ties count as wrong, so every subset, section and the overall are 0.
  assert sets["rewardbench"]["score"] == 0.0
  assert all(v["score"] == 0.0 for v in sets["rewardbench"]["by_subset"].values())
  # RewardBench 2 best-of-4: a 4-way tie at the max gives 1/4 to every non-Ties subset.
  for subset, value in sets["rewardbench2"]["by_subset"].items():
    if subset != "Ties":
      assert value["score"] == 0.25, subset
  # RewardMATH: never strictly above the nine; ranked last of ten (pessimistic ties).
  assert sets["rewardmath"]["accuracy"] == 0.0
  assert abs(sets["rewardmath"]["mrr"] - 0.1) < 1e-7
  assert sets["rmbench"]["score"] == 0.0
  assert sets["pandalm"]["agreement"] == 0.0
  assert sets["hhh"]["accuracy"] == 0.0 and sets["hhh"]["ties"] == sets["hhh"]["items"]
  report = (tmp_path / "report.md").read_text()
  for name in FIXTURE_SETS:
    assert f"## {name}" in report
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["sets"]["rewardmath"]["mrr"] == sets["rewardmath"]["mrr"]
  assert (tmp_path / "hhh_reliability.png").exists()
  assert (tmp_path / "hhh_length.png").exists()
  assert (tmp_path / "rewardbench_subsets.png").exists()


def test_evaluation_on_one_and_eight_devices_is_identical(smoke_run, tmp_path):
  from rmjax.tasks.reward_model import benchmark_eval  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  workdir, _ = smoke_run
  config = _fixture_config()
  config.batch_size = 8
  out = {}
  # 8 rows per device on both (batch 8 on one device, 64 on eight): the same per-device
  # program, so the same scores bit for bit, and so the same results.
  for name, devices, batch in (("one", jax.devices()[:1], 8), ("eight", None, 64)):
    scorer = scoring.scorer_from_workdir(workdir, batch_size=batch, devices=devices,
                                         mesh_shape={"data": 1, "fsdp": -1, "tensor": 1})
    out[name] = benchmark_eval.evaluate(config, str(tmp_path / name), scorer)
  for name in FIXTURE_SETS:
    one, eight = out["one"]["sets"][name], out["eight"]["sets"][name]
    for key in ("scoring_s", "sequences_per_s"):
      one.pop(key), eight.pop(key)
    assert one == eight, name
    np.testing.assert_array_equal(np.load(tmp_path / "one" / f"{name}_scores.npz")["scores"],
                                  np.load(tmp_path / "eight" / f"{name}_scores.npz")["scores"])


def test_trainer_eval_and_evaluate_agree_on_the_pair_benchmarks(smoke_run, tmp_path):
  from rmjax.tasks.reward_model import benchmark_eval  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  workdir, report = smoke_run
  final = report["final_eval"]
  config = _eval_config(rewardbench=str(FIXTURES / "rewardbench.jsonl"),
                        hhh=str(FIXTURES / "hhh.jsonl"))
  scorer = scoring.scorer_from_workdir(workdir, batch_size=8)
  sets = benchmark_eval.evaluate(config, str(tmp_path), scorer)["sets"]
  assert final["rewardbench/num_pairs"] == sets["rewardbench"]["items"] == 8
  assert final["hhh/num_pairs"] == sets["hhh"]["items"] == 4
  assert abs(final["hhh/accuracy"] - sets["hhh"]["accuracy"]) < 1e-9
  assert abs(final["rewardbench/score"] - sets["rewardbench"]["score"]) < 1e-6
  for section, value in sets["rewardbench"]["sections"].items():
    assert abs(final[f"rewardbench/{section}"] - value) < 1e-6, section
  for subset, value in sets["rewardbench"]["by_subset"].items():
    assert abs(final[f"rewardbench_{subset}/accuracy"] - value["score"]) < 1e-9, subset


def test_trainer_refuses_benchmarks_it_cannot_score_with_pair_logits():
  from rmjax.tasks.reward_model import task as task_lib  # pylint: disable=g-import-not-at-top
  assert task_lib.parse_benchmarks("hhh:/a.jsonl, rewardbench:/b.jsonl") == [
      ("hhh", "/a.jsonl"), ("rewardbench", "/b.jsonl")]
  with pytest.raises(ValueError, match="'rewardmath:/m.json'.*one reward per response"):
    task_lib.parse_benchmarks("rewardmath:/m.json")
  with pytest.raises(ValueError, match="'hhh' is given twice"):
    task_lib.parse_benchmarks("hhh:/a,hhh:/b")
  with pytest.raises(ValueError, match="<benchmark>:<path>"):
    task_lib.parse_benchmarks("rewardbench")


def test_evaluate_names_what_is_missing(tmp_path):
  from rmjax.tasks.reward_model import benchmark_eval  # pylint: disable=g-import-not-at-top
  config = _eval_config(rewardbench="")
  with pytest.raises(ValueError, match=r"config.paths.rewardbench is empty"):
    benchmark_eval.evaluate(config, str(tmp_path), _ConstantScorer())
  config.sets = "rewardbench,nope"
  with pytest.raises(ValueError, match=r"unknown set\(s\) \['nope'\]"):
    benchmark_eval.evaluate(config, str(tmp_path), _ConstantScorer())
  config = _eval_config(rewardbench=str(tmp_path / "absent.jsonl"))
  with pytest.raises(FileNotFoundError, match="absent.jsonl"):
    benchmark_eval.evaluate(config, str(tmp_path), _ConstantScorer())
  config.model.update(workdir="a", checkpoint="b")
  with pytest.raises(ValueError, match="set exactly one of workdir, workdirs, checkpoint"):
    benchmark_eval.make_scorer(config)


def test_cli_bad_input_is_one_clear_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate_reward_model", "--config",
       "configs/evaluate.py:smoke", "--config.sets=hhh,rewardbench9",
       f"--workdir={tmp_path}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
      env={k: v for k, v in os.environ.items() if k != "RMJAX_TRACEBACK"})
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "error: config.sets: unknown set(s) ['rewardbench9']" in proc.stderr
  assert "Traceback" not in proc.stderr
