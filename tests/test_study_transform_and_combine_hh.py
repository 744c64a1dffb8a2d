"""The real-model half of the transform-and-combine study
(experiments/study_transform_and_combine_hh.py): the best-of-n selection logic on hand-made
rewards, and a smoke run of the whole pipeline.

The smoke run's pi_0 is a 1-layer d=16 random byte-level policy (the "plain" template):
loading and compiling the real 135M model, or even building SmolLM2's tokenizer from its GGUF
file, costs more than this file's budget here (measured: ~30 s to load the model, ~20 s to
compile its sampler, ~30 s for the tokenizer under load); `--smoke` of the script runs the
real model. Its reward models are text functions with hand-checkable values (the real reward
runs are not in CI). The prompts and human pairs are the real held-out HH-RLHF ones
(../shared/data; skipped without them).
"""

import os
import pathlib
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = pathlib.Path(os.environ.get("RMJAX_SHARED_DIR", REPO_ROOT.parent / "shared"))
HH_DIR = SHARED_DIR / "data" / "hh_rlhf"
MAX_PROMPT_BYTES = 120  # the smoke's prompts: byte tokens, "plain" template
sys.path.insert(0, str(REPO_ROOT))

from experiments import study_transform_and_combine_hh as study  # noqa: E402
from rmjax import eval as rm_eval  # noqa: E402


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -np.asarray(x, np.float64))


# One prompt, 4 samples, rewards (helpful, harmless): a lopsided sample with the best sum, a
# balanced one, a tie with it, and a poor one.
_SCORES = np.array([[[0.0, 0.0], [4.0, -2.0], [0.9, 0.9], [0.9, 0.9]],
                    [[1.0, 1.0], [-1.0, 3.0], [2.0, -0.5], [0.5, 0.5]]], np.float32)


def test_best_of_one_is_the_first_sample_for_every_design():
  for design in study.DESIGNS:
    picks = study.best_of_n_picks(_SCORES, design, [1, 2, 4])
    assert picks.shape == (3, 2)
    assert picks[0].tolist() == [0, 0], design
    assert np.all(picks < np.array([1, 2, 4])[:, None])


def test_picks_by_hand_sum_min_single_and_ties_first():
  # sum: prompt 0 sums (0, 2, 1.8, 1.8) -> 1; prompt 1 (2, 2, 1.5, 1) -> 0 (tie: the first).
  assert study.best_of_n_picks(_SCORES, "sum", [2, 4]).tolist() == [[1, 0], [1, 0]]
  # min: prompt 0 mins (0, -2, .9, .9) -> 2 (tie with 3: the first); prompt 1 (1, -1, -.5, .5).
  assert study.best_of_n_picks(_SCORES, "min", [2, 4]).tolist() == [[0, 0], [2, 0]]
  assert study.best_of_n_picks(_SCORES, "helpful_only", [4]).tolist() == [[1, 2]]
  assert study.best_of_n_picks(_SCORES, "harmless_only", [4]).tolist() == [[2, 1]]


def test_lsc_and_equals_the_sum_of_log_sigmoids_by_hand():
  # References whose median (q50) and 0.85 quantile are known: per prompt and reward.
  refs = np.zeros((2, 3, 2), np.float32)
  refs[0, :, 0] = [-1.0, 0.0, 1.0]     # median 0, q85 = 0 + 0.7 * 1 = 0.7
  refs[0, :, 1] = [0.0, 0.5, 1.0]      # median 0.5, q85 0.85
  refs[1, :, 0] = [2.0, 2.0, 2.0]      # 2, 2
  refs[1, :, 1] = [-3.0, -1.0, 1.0]    # -1, 0.4
  medians = np.array([[0.0, 0.5], [2.0, -1.0]])
  q85 = np.array([[0.7, 0.85], [2.0, 0.4]])
  np.testing.assert_allclose(study.per_prompt_quantile(refs, 0.5), medians, atol=1e-6)
  np.testing.assert_allclose(study.per_prompt_quantile(refs, 0.85), q85, atol=1e-6)
  for design, ref in (("lsc_and_q50", medians), ("lsc_and_q85", q85)):
    u = study.design_utilities(_SCORES, design, references=refs)
    want = _log_sigmoid(_SCORES - ref[:, None, :]).sum(-1)
    np.testing.assert_allclose(u, want, atol=1e-5)
    picks = study.best_of_n_picks(_SCORES, design, [1, 4], references=refs)
    assert picks.tolist() == [[0, 0], np.argmax(want, axis=1).tolist()]
  # Prompt 0: the sum takes the lopsided sample (sum 2 > 1.8), the AND the balanced one.
  refs0 = np.zeros((2, 3, 2), np.float32)
  assert study.best_of_n_picks(_SCORES, "lsc_and_q50", [4], references=refs0)[0, 0] == 2
  assert study.best_of_n_picks(_SCORES, "sum", [4])[0, 0] == 1
  # Default references: the samples themselves (prompt 0 medians 0.9, 0.45).
  own = study.design_utilities(_SCORES, "lsc_and_q50")
  want = _log_sigmoid(_SCORES - np.median(_SCORES, axis=1, keepdims=True)).sum(-1)
  np.testing.assert_allclose(own, want, atol=1e-5)


def test_fraction_above_reference_and_table_by_hand():
  picked = np.array([[1.0, 1.0], [1.0, -1.0], [0.0, 2.0], [3.0, 0.5]])
  ref = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [2.0, 0.4]])
  # Rows: above on both, one, tie on one (not strictly above), both -> 2 of 4.
  assert study.fraction_above_reference(picked, ref) == 0.5
  tables, picks = study.best_of_n_table(_SCORES, [1, 2, 4],
                                        groups={"all": [True, True], "first": [True, False]})
  table = tables["all"]
  assert set(table) == set(study.DESIGNS)
  # One prompt's group: its own pick and median (sum picks (4, -2): not above on harmless).
  assert tables["first"]["sum"]["4"]["helpful"] == pytest.approx(4.0)
  assert tables["first"]["sum"]["4"]["above_median_on_both"] == 0.0
  assert tables["first"]["min"]["1"]["helpful_se"] == 0.0
  for design in study.DESIGNS:
    first = table[design]["1"]
    assert first["helpful"] == pytest.approx(float(_SCORES[:, 0, 0].mean()))
    assert first["harmless"] == pytest.approx(float(_SCORES[:, 0, 1].mean()))
    for n in (1, 2, 4):
      entry = table[design][str(n)]
      assert 0.0 <= entry["above_median_on_both"] <= 1.0
      assert entry["kl_bound"] == pytest.approx(np.log(n) - (n - 1) / n)
  # Medians: prompt 0 (.9, .45), prompt 1 (.75, .75).
  # sum at n=4 picks (4, -2) (below on harmless) and (1, 1) (above on both) -> 1/2.
  assert picks["sum"][-1].tolist() == [1, 0]
  assert table["sum"]["4"]["helpful"] == pytest.approx(2.5)
  assert table["sum"]["4"]["harmless"] == pytest.approx(-0.5)
  assert table["sum"]["4"]["above_median_on_both"] == 0.5
  # min picks (.9, .9) (helpful AT its median: not strictly above) and (1, 1) -> 1/2;
  # helpful_only picks (4, -2) and (2, -.5): below on harmless both times -> 0.
  assert table["min"]["4"]["above_median_on_both"] == 0.5
  assert table["helpful_only"]["4"]["above_median_on_both"] == 0.0


def test_paired_above_median_counts_by_hand():
  # Two prompts, 4 samples, 2 rewards. Per-prompt medians (np.quantile 0.5) of each reward:
  # prompt 0: helpful (0, 0, 2, 3) -> 1, harmless (0, 3, 0.5, 0) -> 0.25;
  # prompt 1: helpful (0, 1, 3, 4) -> 2, harmless (0, 2, 2, -3) -> 1.
  s = np.array([[[0., 0.], [0., 3.], [2., .5], [3., 0.]],
                [[0., 0.], [1., 2.], [3., 2.], [4., -3.]]])
  out = study.paired_above_median(s, [4], "min")["4"]
  # sum picks #1 (3 = 3: first index; not above on helpful) and #2 (5: above on both);
  # min of raw scores picks #2 (0.5) and #2 (2): prompt 0 only min's pick is above on both.
  assert out == {"same_pick": 1, "only_design": 1, "only_against": 0,
                 "p_value": rm_eval.mcnemar_exact_p(1, 0)}
  assert study.paired_above_median(s, [1], "min")["1"]["same_pick"] == 2


def test_selection_rejects_bad_inputs():
  with pytest.raises(ValueError, match=r"scores: expected \[P, n, K\]"):
    study.best_of_n_picks(_SCORES[0], "sum", [1])
  with pytest.raises(ValueError, match="non-finite"):
    study.best_of_n_picks(np.full((1, 2, 2), np.nan), "sum", [1])
  with pytest.raises(ValueError, match=r"ns: every n must lie in \[1, n_max=4\], got 5"):
    study.best_of_n_picks(_SCORES, "sum", [5])
  with pytest.raises(ValueError, match="design: expected one of"):
    study.best_of_n_picks(_SCORES, "max", [1])
  with pytest.raises(ValueError, match="`n` must be >= 1"):
    rm_eval.best_of_n_kl(0)


# --- Smoke run ---------------------------------------------------------------------------


def _helpful(prompt, response):
  return 0.1 * len(response) - 0.01 * len(prompt)


def _harmless(prompt, response):
  del prompt
  return -float(sum(c in "aeiou" for c in response))


def _scorer(fn):
  return lambda prompts, responses: np.array([fn(p, r) for p, r in zip(prompts, responses)],
                                             np.float32)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  files = {name: HH_DIR / f"{name}-base-test.jsonl.gz" for name in ("helpful", "harmless")}
  if not all(f.exists() for f in files.values()):
    pytest.skip(f"real HH-RLHF data not found in {HH_DIR} (needs ../shared beside the repo)")
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  from rmjax import models  # pylint: disable=g-import-not-at-top

  layout = dict(max_len=256, max_prompt_len=192, tokenizer=rm_data.make_tokenizer("bytes"),
                chat_template="plain")
  model = models.Transformer(models.TransformerConfig(
      vocab_size=layout["tokenizer"].vocab_size, max_len=layout["max_len"], d_model=16,
      num_layers=1, num_heads=2, d_ff=32), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  policy = study.Policy(graphdef, jax.device_get(nnx.to_pure_dict(params)), layout,
                        dict(kind="tiny random byte-level policy"))
  reward_models = [study.RewardModel("helpful", _scorer(_helpful), str(files["helpful"])),
                   study.RewardModel("harmless", _scorer(_harmless), str(files["harmless"]))]
  workdir = str(tmp_path_factory.mktemp("study_hh"))
  results = study.run(workdir, smoke=True, reward_models=reward_models, policy=policy,
                      max_prompt_tokens=MAX_PROMPT_BYTES, verbose=False)
  return workdir, results, reward_models


@pytest.mark.slow
def test_smoke_run_keys_and_invariants(smoke):
  import json  # pylint: disable=g-import-not-at-top
  workdir, results, reward_models = smoke
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert set(saved) == set(study.RESULT_KEYS) == set(results)
  assert os.path.exists(os.path.join(workdir, "best_of_n_hh.png"))
  assert saved["config"]["ns"] == [1, 2, 4]
  assert set(saved["best_of_n"]) == {"helpful-base", "harmless-base", "all"}
  scores = np.asarray(saved["samples"]["scores"])
  assert scores.shape == (2, 4, 2)
  assert saved["samples"]["prompt_file"] == ["helpful-base", "harmless-base"]
  for group, table in saved["best_of_n"].items():
    rows = [i for i, f in enumerate(saved["samples"]["prompt_file"]) if group in ("all", f)]
    assert set(table) == set(study.DESIGNS)
    for design, by_n in table.items():
      assert set(by_n) == {"1", "2", "4"}
      # Best-of-1 is pi_0's first sample, whatever the design.
      assert by_n["1"]["helpful"] == pytest.approx(scores[rows, 0, 0].mean(), abs=1e-4)
      assert by_n["1"]["harmless"] == pytest.approx(scores[rows, 0, 1].mean(), abs=1e-4)
      for n, entry in by_n.items():
        assert 0.0 <= entry["above_median_on_both"] <= 1.0
        assert entry["kl_bound"] == pytest.approx(float(rm_eval.best_of_n_kl(int(n))))
      # The picks' scores: the best of the first n samples under the one-reward designs.
      if design in ("helpful_only", "harmless_only"):
        k = study.REWARD_NAMES.index(design[:-len("_only")])
        for n, entry in by_n.items():
          want = scores[rows, :int(n), k].max(axis=1).mean()
          assert entry[study.REWARD_NAMES[k]] == pytest.approx(want, abs=1e-4)
  # The examples: each pick's text scores what the scorers say (responses of <= 8 tokens are
  # not truncated by the 300-character cut).
  assert len(saved["examples"]) == 2
  for ex, row in zip(saved["examples"], (0, 1)):
    for design, pick in ex["picks"].items():
      assert pick["helpful"] == pytest.approx(scores[row, pick["sample"], 0], abs=1e-4)
      assert pick["harmless"] == pytest.approx(_harmless(None, pick["response"]), abs=1e-4)
  # Prompts: held out by both reward runs' splits, one per file, short enough.
  splits = {file: study.split_file(m) for file, m in zip(study.FILES, reward_models)}
  train = set()
  for split in splits.values():
    train |= {split.bench.prompts[i] for i in split.train_idx}
  for file in study.FILES:
    info = saved["prompts"][file]
    assert info["chosen"] == 1 and info["eligible"] <= info["held_out_prompts"]
    assert info["prompt_tokens"][0] <= MAX_PROMPT_BYTES
    held_out = {splits[file].bench.prompts[i] for i in splits[file].eval_idx}
    assert info["texts"][0] in held_out and info["texts"][0] not in train
  # Agreement: the first 4 held-out pairs of each file, by hand with the text scorers.
  for model in reward_models:
    for file, split in splits.items():
      idx = split.eval_idx[:4]
      chosen = [model.score([split.bench.prompts[i]], [split.bench.responses[i][0]])[0]
                for i in idx]
      rejected = [model.score([split.bench.prompts[i]], [split.bench.responses[i][1]])[0]
                  for i in idx]
      want = float(np.mean(np.array(chosen) > np.array(rejected)))
      got = saved["label_agreement"][model.name][file]
      assert got == {"accuracy": pytest.approx(want), "pairs": 4}
