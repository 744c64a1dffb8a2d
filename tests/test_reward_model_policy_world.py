"""The reward model of the synthetic policy world (`configs/reward_model.py:policy_world`):
its pairs are DPO's, its preset reads the policy's layout, a smoke run learns, its proxy/*
correlations are the scorer's, and the scorer takes any text."""

import pathlib
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _rm_configs():
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  return reward_model


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """A `policy_world,smoke` bt run of 20 steps, evaluated once at the end: (workdir, report).

  The model, layout, batch and schedule are the `smoke` preset's 20-step runs' (as in
  test_train_reward_model.py), so in the suite its programs come from the compilation cache.
  """
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  config = _rm_configs().get_config("policy_world,smoke")
  config.train.update(num_steps=20, eval_every=20, checkpoint_every=20, tensorboard=False)
  config.mesh.num_devices = 1  # As those runs: one device.
  workdir = tmp_path_factory.mktemp("policy_world_smoke")
  report = rm_task.train_and_evaluate(config, str(workdir))
  return str(workdir), report


def test_preset_reads_the_policy_default_world_tokenizer_and_layout():
  from rmjax.data import synthetic_policy  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.policy import config as policy_config  # pylint: disable=g-import-not-at-top
  rm_configs = _rm_configs()
  policy = policy_config.get_config("sft")
  for arg in ("policy_world", "policy_world,smoke"):
    config = rm_configs.get_config(arg)
    assert config.family == "bt" and config.data.source == "synthetic_policy"
    world_keys = (*synthetic_policy.default_policy_world_config(), "seed")
    assert ({k: config.data.synthetic[k] for k in world_keys}
            == {k: policy.data.synthetic[k] for k in world_keys})
    assert config.data.synthetic.seed == 0
    assert config.data.tokenizer == policy.data.tokenizer == "bytes"
    assert (config.data.max_len, config.data.max_prompt_len) == (24, 8)
    assert config.data.max_new_tokens == policy.generation.max_new_tokens == 14
  assert rm_configs.get_config("policy_world,smoke").name == "policy_world_smoke"
  assert rm_configs.get_config("ensemble,policy_world").family == "ensemble"
  with pytest.raises(ValueError, match="trains on the reward world"):
    rm_configs.get_config("regression,policy_world")
  with pytest.raises(ValueError, match="combine it with 'smoke' only"):
    rm_configs.get_config("policy_world,hh_rlhf")


def test_pairs_are_dpo_synthetic_pairs_for_the_same_seed():
  from rmjax.tasks.policy import config as policy_config  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.policy import data as policy_data  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import policy_world  # pylint: disable=g-import-not-at-top
  dpo = policy_config.get_config("dpo", "smoke")
  dpo.data.synthetic.update(num_train=64, num_eval=32)
  config = _rm_configs().get_config("policy_world,smoke")
  config.data.synthetic.update(num_train=dpo.data.synthetic.num_train,
                               num_eval=dpo.data.synthetic.num_eval)
  data, responses = policy_world.load_data(config)
  reference = policy_data.load_policy_data(dpo, "dpo")
  for split in ("train", "eval"):
    ours, theirs = getattr(data, split).arrays, getattr(reference, split).arrays
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
      np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{split}/{key}")
    assert (data.info["bayes_optimal_accuracy"][split]
            == pytest.approx(reference.info[f"{split}_bayes_optimal_accuracy"], abs=1e-6))
  # The response set: the eval pairs' chosen then rejected sequences, each against the anchor.
  pairs = policy_data.synthetic_pairs(config.data.synthetic, "eval")
  n = len(pairs.prompt)
  assert responses.num_pairs == n and responses.dataset.num_examples == 2 * n
  got = responses.dataset.arrays
  np.testing.assert_array_equal(got["chosen_tokens"][:n], data.eval.arrays["chosen_tokens"])
  np.testing.assert_array_equal(got["chosen_tokens"][n:], data.eval.arrays["rejected_tokens"])
  # The anchor: BOS + EOS (empty prompt and response), the same on every row.
  assert np.all(got["rejected_tokens"][:, :2] == [1, 2])
  assert np.all(got["rejected_mask"].sum(1) == 2)
  np.testing.assert_array_equal(responses.true_rewards,
                                np.concatenate([pairs.chosen_reward, pairs.rejected_reward]))


def test_layout_that_cuts_the_policy_samples_is_refused():
  from rmjax.tasks.reward_model import policy_world  # pylint: disable=g-import-not-at-top
  config = _rm_configs().get_config("policy_world,smoke")
  config.data.max_len = 20  # 1 + 5 + 14 + 1 = 21 tokens needed.
  with pytest.raises(ValueError, match="raise data.max_len"):
    policy_world.load_data(config)


def test_proxy_metrics_by_hand():
  from rmjax.tasks.reward_model import policy_world  # pylint: disable=g-import-not-at-top
  # Responses: x = [1, 2, 3, 4], r* = [1, 3, 2, 4]: centred products sum to 4, squares to 5.
  got = policy_world.proxy_metrics(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4]), 2)
  assert got["proxy/pearson"] == pytest.approx(0.8)
  assert got["proxy/spearman"] == pytest.approx(0.8)
  # Differences: x = [-2, -2] is constant, so no correlation is defined.
  assert np.isnan(got["proxy/pair_pearson"]) and np.isnan(got["proxy/pair_spearman"])
  got = policy_world.proxy_metrics(np.array([3.0, 0, 1, 1]), np.array([2.0, 0, 0, 1]), 2)
  # Differences [2, -1] against [2, -1]: perfectly correlated; a shift changes nothing.
  assert got["proxy/pair_pearson"] == pytest.approx(1.0)
  shifted = policy_world.proxy_metrics(np.array([3.0, 0, 1, 1]) + 7, np.array([2.0, 0, 0, 1]), 2)
  assert shifted == pytest.approx(got)
  # Ties share their mean rank: ranks [1.5, 1.5, 3, 4] against [1, 2, 3, 4] give
  # 4.5 / sqrt(4.5 * 5) = sqrt(0.9) (scipy.stats.spearmanr agrees).
  got = policy_world.proxy_metrics(np.array([1.0, 1, 2, 3]), np.array([1.0, 2, 3, 4]), 2)
  assert got["proxy/spearman"] == pytest.approx(np.sqrt(0.9))


@pytest.mark.slow
def test_smoke_run_learns_the_policy_world(smoke_run):
  _, report = smoke_run
  final = report["final_eval"]
  assert final["num_pairs"] == 128
  # Chance is 0.5 with a standard deviation of 0.044 on 128 pairs: 0.65 is > 3 of them.
  assert final["accuracy"] >= 0.65, final
  assert final["accuracy"] <= final["bayes_optimal_accuracy"] + 0.1
  assert final["proxy/pearson"] > 0.3 and final["proxy/spearman"] > 0.3, final


@pytest.mark.slow
def test_scorer_loads_the_run_matches_its_proxy_metrics_and_takes_any_text(smoke_run):
  from rmjax.data import synthetic_policy  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.policy import data as policy_data  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import policy_world  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  workdir, report = smoke_run
  import jax  # pylint: disable=g-import-not-at-top
  # One device: the smallest program to compile (the run itself used all eight).
  scorer = scoring.scorer_from_workdir(workdir, batch_size=64, length_bucket=0,
                                       mesh_shape={"data": 1, "fsdp": 1, "tensor": 1},
                                       devices=jax.devices()[:1])
  config = scoring.read_run_config(workdir)
  world = synthetic_policy.make_policy_world(config.data.synthetic)
  pairs = policy_data.synthetic_pairs(config.data.synthetic, "eval", world)
  # The trainer's proxy/* (pair logits against an anchor) are the scorer's rewards on texts.
  rewards = scorer.score(pairs.prompt * 2, pairs.chosen + pairs.rejected)
  assert rewards.dtype == np.float32
  expected = policy_world.proxy_metrics(
      rewards, np.concatenate([pairs.chosen_reward, pairs.rejected_reward]), len(pairs.prompt))
  for key, value in expected.items():
    assert report["final_eval"][key] == pytest.approx(value, abs=1e-4), key
  # A policy may write any byte: off-alphabet letters, digits, non-ASCII, control bytes,
  # the empty response, and a response longer than the layout (truncated, still scored).
  texts = ["ZZZZ", "0123", "héllo wörld", "\x00\x01\x7f", "", "\ufffd" * 20, "abc" * 30]
  scores = scorer.score(["AB"] * len(texts), texts)
  assert scores.shape == (len(texts),) and np.all(np.isfinite(scores))
  assert len(set(scores.tolist())) > 1
