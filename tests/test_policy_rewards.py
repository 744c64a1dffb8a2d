"""The RL reward pipeline (`rmjax.tasks.policy.rewards`): combined rewards against direct calls of
the transform functions, the reference cache, NaN rows, running statistics, Lagrange
multipliers, rules, bad configurations, and a reward-model source on a real `RewardScorer`.

Reward-model sources here use `make_reward_pipeline(..., scorers=...)`, the documented
injection point: training the reward-model smoke preset takes ~30 s on this CPU (over the
10 s this file may spend on it), so the workdir is a real run's config.json with an empty
checkpoint directory (what `check_rewards_config` looks at), and the scorer is either a
parser of the response text (exact hand-made values) or a real `RewardScorer` of a freshly
initialised ensemble smoke model (`reward_sources.reward_model_scorer`).
"""

import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rmjax import transforms
from rmjax.data import synthetic_policy
from rmjax.tasks.policy import reward_sources
from rmjax.tasks.policy import rewards

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _rm_config(arg="smoke"):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  return reward_model.get_config(arg)


def _fake_run(path, arg="smoke", step=4):
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(_rm_config(arg).to_json())
  (path / "checkpoints" / str(step)).mkdir(parents=True)
  return str(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A bt smoke run's config.json and checkpoints/4/ (not loaded: scorers are injected)."""
  return _fake_run(tmp_path_factory.mktemp("rm") / "run")


class _ParsedScorer:
  """Reads source `key`'s score from a response "a=1.5 b=nan"; missing key: NaN."""

  def __init__(self, key):
    self.key = key
    self.calls = 0

  def score(self, prompts, responses):
    del prompts
    self.calls += 1
    out = []
    for r in responses:
      values = dict(item.split("=") for item in r.split())
      out.append(float(values.get(self.key, "nan")))
    return np.array(out, np.float32)


def _config(workdir, *, transforms_=None, combination="sum", params=None, names=("a", "b"),
            k=3):
  sources = ml_collections.ConfigDict()
  for name in names:
    transform, transform_params = (transforms_ or {}).get(name, ("identity", {}))
    sources[name] = rewards.source_config("reward_model", workdir=workdir, transform=transform,
                                          transform_params=transform_params)
  config = ml_collections.ConfigDict(dict(rewards=rewards.default_rewards_config(),
                                          data=dict(source="hh_rlhf")))
  config.rewards.sources = sources
  config.rewards.source_order = ",".join(names)
  config.rewards.combination = combination
  config.rewards.combination_params = ml_collections.ConfigDict(params or {})
  config.rewards.reference_samples = k
  return config


def _pipeline(config, names=("a", "b")):
  return rewards.make_reward_pipeline(config, scorers={n: _ParsedScorer(n) for n in names})


# Batch: B = 2 prompts x G = 2; source values per row.
A = np.array([1.0, -0.5, 2.0, 0.25], np.float32)
B = np.array([0.5, 1.5, -1.0, 3.0], np.float32)
# References (k = 3 per prompt) of prompts 0..3 for each source.
REF_A = np.array([[0.0, 1.0, 2.0], [-1.0, 0.0, 4.0], [0.5, 0.5, 0.5], [1.0, 2.0, 3.0]])
REF_B = np.array([[1.0, 1.0, 4.0], [0.0, 2.0, 2.0], [-2.0, 0.0, 2.0], [0.0, 0.0, 1.0]])


def _batch(a=A, b=B, prompt_ids=(0, 0, 1, 1), group_size=2):
  responses = [f"a={x} b={y}" for x, y in zip(a, b)]
  n = len(responses)
  return rewards.RewardBatch(np.asarray(prompt_ids, np.int64), [f"p{i}" for i in prompt_ids],
                             responses, np.full(n, 5, np.int32), group_size)


class _Sampler:
  """pi_0's k samples of prompt i: the REF_A / REF_B values; counts the prompts asked for."""

  def __init__(self):
    self.asked = []

  def __call__(self, prompt_ids, k):
    self.asked.append(np.asarray(prompt_ids).tolist())
    return [[f"a={REF_A[i, m]} b={REF_B[i, m]}" for m in range(k)] for i in prompt_ids]


def _run(config, batch=None, state=None, sampler=None):
  pipeline = _pipeline(config)
  state = pipeline.init_state(4) if state is None else state
  return pipeline(state, batch or _batch(), sampler or _Sampler())


def _direct(fn, *args, **static):
  """`fn(*args, **static)` jitted: one compilation instead of one per eager primitive."""
  return np.asarray(jax.jit(functools.partial(fn, **static))(*args))


def _refs(ref, ids=(0, 0, 1, 1)):
  return jnp.asarray(ref[list(ids)], jnp.float32)


# --- Values ------------------------------------------------------------------------------------


def test_sum_weighted_sum_min_by_hand(workdir):
  combined, _, metrics, raw = _run(_config(workdir))
  np.testing.assert_array_equal(raw, np.stack([A, B], axis=1))
  np.testing.assert_allclose(combined, [1.5, 1.0, 1.0, 3.25], rtol=0, atol=1e-6)
  assert metrics["reward/combined_mean"] == pytest.approx(1.6875)
  assert metrics["reward/a/raw_mean"] == pytest.approx(0.6875)
  assert metrics["reward/a/raw_std"] == pytest.approx(float(np.std(A)))
  assert metrics["reward/b/missing"] == 0.0 and metrics["reward/invalid_rows"] == 0.0
  combined, *_ = _run(_config(workdir, params={"weights": [0.5, 2.0]}))
  np.testing.assert_allclose(combined, 0.5 * A + 2.0 * B, atol=1e-6)
  combined, *_ = _run(_config(workdir, combination="min"))
  np.testing.assert_allclose(combined, [0.5, -0.5, -1.0, 0.25], atol=0)
  # Lengths reach the transforms: every row has 5 tokens, 2 over the threshold 3.
  config = _config(workdir, transforms_={"b": ("linear_length_penalty",
                                               {"threshold": 3.0, "coefficient": 0.25})})
  combined, *_ = _run(config)
  np.testing.assert_allclose(combined, A + B - 0.5, atol=1e-6)


def test_and_is_the_sum_of_log_sigmoid_centred_rewards(workdir):
  config = _config(workdir, combination="and", params={"method": "empirical", "quantile": 0.5})
  combined, state, metrics, _ = _run(config)
  # r_ref = the median of the prompt's 3 reference rewards, per source.
  ref_a = np.array([1.0, 1.0, 0.0, 0.0])
  ref_b = np.array([1.0, 1.0, 2.0, 2.0])
  log_sigmoid = lambda x: -np.log1p(np.exp(-x))
  np.testing.assert_allclose(combined, log_sigmoid(A - ref_a) + log_sigmoid(B - ref_b),
                             atol=1e-6)
  direct = _direct(transforms.logical_and, np.stack([A, B], 1), np.stack([ref_a, ref_b], 1))
  np.testing.assert_allclose(combined, direct, atol=1e-6)
  assert metrics["reward/reference_fill"] == 0.5  # prompts 0 and 1 of 4
  np.testing.assert_array_equal(state["reference"][1], np.stack([REF_A[1], REF_B[1]]))
  assert np.isnan(state["reference"][2:]).all()


def test_lsc_and_par_transforms_match_the_transform_functions(workdir):
  config = _config(workdir, transforms_={"a": ("lsc", {"quantile": 0.85}),
                                         "b": ("par", {"steepness": 2.0})})
  combined, _, metrics, _ = _run(config)
  lsc = _direct(lambda r, refs: transforms.log_sigmoid_centered(
      r, transforms.reference_reward(refs, quantile=0.85)), A, _refs(REF_A))
  par = _direct(transforms.preference_as_reward, B, _refs(REF_B), steepness=2.0)
  # PAR by hand: the mean over references of sigmoid(2 (r - ref_m)).
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  np.testing.assert_allclose(par, sigmoid(2 * (B[:, None] - REF_B[[0, 0, 1, 1]])).mean(1),
                             atol=1e-6)
  np.testing.assert_allclose(combined, lsc + par, atol=1e-6)
  assert metrics["reward/a/transformed_mean"] == pytest.approx(float(np.mean(lsc)), abs=1e-6)
  assert metrics["reward/a/reference_mean"] == pytest.approx(float(REF_A[[0, 0, 1, 1]].mean()))


def test_gdpo_and_group_transforms_reshape_the_groups(workdir):
  combined, *_ = _run(_config(workdir, combination="gdpo"))
  direct = _direct(transforms.normalize_then_sum, np.stack([A, B], 1).reshape(2, 2, 2))
  np.testing.assert_allclose(combined, np.asarray(direct).reshape(-1), atol=1e-6)
  config = _config(workdir, transforms_={"a": ("grpo", {}), "b": ("batch_whiten", {})})
  combined, *_ = _run(config)
  expected = (_direct(transforms.group_normalize, A.reshape(2, 2)).reshape(-1)
              + _direct(transforms.batch_whiten, B))
  np.testing.assert_allclose(combined, expected, atol=1e-6)


# --- Reference cache ---------------------------------------------------------------------------


def test_reference_rewards_are_sampled_once_per_prompt(workdir):
  config = _config(workdir, transforms_={"a": ("par", {})})
  pipeline = _pipeline(config)
  sampler = _Sampler()
  state0 = pipeline.init_state(4)
  assert state0["reference"].shape == (4, 2, 3) and np.isnan(state0["reference"]).all()
  _, state1, m1, _ = pipeline(state0, _batch(), sampler)
  assert sampler.asked == [[0, 1]]
  assert not state0["reference_done"].any()  # The caller's state is not modified.
  np.testing.assert_array_equal(state1["reference"][:2, 0], REF_A[:2])
  assert np.isnan(state1["reference"][:, 1]).all()  # b's transform needs no reference.
  # As the RL task keeps it: jax arrays (checkpointed with the train state).
  state1 = jax.tree.map(jnp.asarray, state1)
  _, state2, m2, _ = pipeline(state1, _batch(prompt_ids=(1, 1, 2, 2)), sampler)
  assert sampler.asked == [[0, 1], [2]]
  combined, state3, m3, _ = pipeline(state2, _batch(prompt_ids=(2, 2, 0, 0)), sampler)
  assert sampler.asked == [[0, 1], [2]]  # All cached: no sampling.
  assert (m1["reward/reference_sampled"], m2["reward/reference_sampled"],
          m3["reward/reference_sampled"]) == (2, 1, 0)
  assert m3["reward/reference_fill"] == 0.75
  par = _direct(transforms.preference_as_reward, A, _refs(REF_A, (2, 2, 0, 0)))
  np.testing.assert_allclose(combined, np.asarray(par) + B, atol=1e-6)
  # Reference responses are scored by the same source (one call per batch and per fill).
  assert pipeline._scorers["a"].calls == 3 + 2


def test_a_sampler_returning_the_wrong_number_of_responses_is_named(workdir):
  pipeline = _pipeline(_config(workdir, transforms_={"a": ("lsc", {})}))
  with pytest.raises(ValueError, match=r"sample_reference\(prompt_ids \[2\], k=3\) must "
                                       r"return 2 lists of 3"):
    pipeline(pipeline.init_state(4), _batch(), lambda ids, k: [["a=1"]] * len(ids))


# --- NaN ---------------------------------------------------------------------------------------


def test_a_missing_score_masks_its_row_and_nothing_else(workdir):
  a = A.copy()
  a[1] = np.nan
  config = _config(workdir, transforms_={"a": ("batch_whiten", {}), "b": ("mean_std", {})})
  pipeline = _pipeline(config)
  state = pipeline.init_state(4)
  combined, new_state, metrics, raw = pipeline(state, _batch(a=a), _Sampler())
  assert np.isnan(raw[1, 0]) and np.isfinite(raw[1, 1])
  assert np.isnan(combined[1]) and np.isfinite(combined[[0, 2, 3]]).all()
  valid = np.isfinite(a)
  whitened = _direct(lambda x, m: transforms.batch_whiten(x, mask=m), np.nan_to_num(a), valid)
  # b is complete: its running statistics include row 1 (only a's score is missing).
  normalizer = transforms.running_normalizer(method="mean_std")
  b_normalized, _ = jax.jit(normalizer.update)(normalizer.init(), B)
  expected = np.asarray(whitened) + np.asarray(b_normalized)
  np.testing.assert_allclose(combined[valid], expected[valid], atol=1e-6)
  assert metrics["reward/invalid_rows"] == 1.0
  assert metrics["reward/a/missing"] == 0.25 and metrics["reward/b/missing"] == 0.0
  assert metrics["reward/a/raw_mean"] == pytest.approx(float(np.mean(a[valid])))
  assert metrics["reward/combined_mean"] == pytest.approx(float(np.mean(expected[valid])),
                                                          abs=1e-6)
  assert int(new_state["running"]["b"]["count"]) == 4


def test_missing_reference_scores_are_masked(workdir):
  class NanSampler(_Sampler):
    def __call__(self, prompt_ids, k):
      out = super().__call__(prompt_ids, k)
      return [[s.replace("a=0.0", "a=nan") for s in row] for row in out]

  config = _config(workdir, transforms_={"a": ("par", {})})
  combined, state, _, _ = _run(config, sampler=NanSampler())
  assert np.isnan(state["reference"][0, 0, 0]) and state["reference_done"][0]
  refs = _refs(REF_A)
  par = _direct(lambda r, x, m: transforms.preference_as_reward(r, x, reference_mask=m),
                A, refs, refs != 0)
  np.testing.assert_allclose(combined, np.asarray(par) + B, atol=1e-6)


# --- State -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mean_std", "clip", "min_max"])
def test_running_normalisers_equal_running_normalizer(workdir, method):
  config = _config(workdir, transforms_={"a": (method, {})}, names=("a",))
  pipeline = _pipeline(config, names=("a",))
  normalizer = transforms.running_normalizer(method=method)
  update = jax.jit(normalizer.update)
  state, reference = pipeline.init_state(4), normalizer.init()
  for a in (A, A * 3 + 1, np.array([5.0, -2.0, 0.0, 1.0], np.float32)):
    combined, state, _, _ = pipeline(state, _batch(a=a), _Sampler())
    expected, reference = update(reference, a)
    np.testing.assert_allclose(combined, expected, atol=1e-6)
    for field, value in reference._asdict().items():
      np.testing.assert_allclose(state["running"]["a"][field], value, atol=1e-6)
  assert int(state["running"]["a"]["count"]) == 12


def test_lagrange_multipliers_rise_when_violated_and_fall_when_met(workdir):
  config = _config(workdir, combination="lagrangian",
                   params={"thresholds": [1.0], "learning_rate": 2.0})
  pipeline = _pipeline(config)
  state = pipeline.init_state(4)
  assert state["lagrange"]["multipliers"].tolist() == [0.0]
  # J = mean(B) = 1.0 at threshold 1: first a violated batch (b - 1), then a met one (b + 1).
  combined, state1, m1, _ = pipeline(state, _batch(b=B - 1), _Sampler())
  np.testing.assert_allclose(
      combined, _direct(transforms.lagrangian_mixing, A, (B - 1)[:, None], np.zeros(1)),
      atol=1e-6)  # l = 0: A + 0.5 * (b - a)... = 0.5 a + 0.5 b
  np.testing.assert_allclose(combined, 0.5 * A + 0.5 * (B - 1), atol=1e-6)
  # l <- 0 - 2 * sigmoid'(0) * (J - theta) = -2 * 0.25 * (0 - 1) = 0.5 (`lagrange_update`).
  l1 = float(state1["lagrange"]["multipliers"][0])
  assert l1 == pytest.approx(0.5)
  assert m1["reward/lagrange/b/multiplier"] == pytest.approx(0.5)
  assert m1["reward/lagrange/b/constraint_value"] == pytest.approx(0.0)
  assert m1["reward/lagrange/b/weight"] == pytest.approx(1 / (1 + np.exp(-0.5)))
  _, state2, _, _ = pipeline(state1, _batch(b=B + 1), _Sampler())
  assert float(state2["lagrange"]["multipliers"][0]) < l1


# --- Sources -----------------------------------------------------------------------------------


def test_rules_and_true_reward():
  world = synthetic_policy.make_policy_world(synthetic_policy.default_policy_world_config())
  config = ml_collections.ConfigDict(dict(rewards=rewards.default_rewards_config()))
  s = config.rewards.sources
  s.long = rewards.source_config("rule", rule="length_penalty",
                                 params={"threshold": 3, "coefficient": 0.5})
  s.dapo = rewards.source_config("rule", rule="dapo_overlong",
                                 params={"max_length": 6, "cache_length": 4})
  s.fmt = rewards.source_config("rule", rule="format_regex", params={"pattern": "^a+$"})
  s.ne = rewards.source_config("rule", rule="non_empty")
  config.rewards.source_order = "true,long,dapo,fmt,ne"
  pipeline = rewards.make_reward_pipeline(config, world=world)
  responses = ["aaa", "abc", "", "aaaaaaa"]
  lengths = np.array([4, 4, 1, 8], np.int32)
  batch = rewards.RewardBatch(np.arange(4), ["AB", "C", "D", "AB"], responses, lengths, 1)
  raw = pipeline.score(batch)
  np.testing.assert_allclose(raw[:, 0], synthetic_policy.true_rewards(
      world, batch.prompts, responses), atol=1e-6)
  np.testing.assert_allclose(raw[:, 1], [-0.5, -0.5, 0.0, -2.5])
  np.testing.assert_allclose(raw[:, 2], [-0.5, -0.5, 0.0, -1.0])  # soft from 2 tokens
  np.testing.assert_array_equal(raw[:, 3], [1, 0, 0, 1])
  np.testing.assert_array_equal(raw[:, 4], [1, 1, 0, 1])


def test_reference_lengths_use_the_policy_tokenizer(workdir):
  class Tok:
    def encode(self, text):
      return text.split()

  config = ml_collections.ConfigDict(dict(rewards=rewards.default_rewards_config()))
  config.rewards.sources = ml_collections.ConfigDict(dict(long=rewards.source_config(
      "rule", rule="length_penalty", params={"threshold": 0, "coefficient": 1.0},
      transform="par")))
  config.rewards.source_order = "long"
  config.rewards.reference_samples = 2
  pipeline = rewards.make_reward_pipeline(config, policy_tokenizer=Tok())
  batch = rewards.RewardBatch(np.zeros(1, np.int64), ["x"], ["y"], np.array([1]), 1)
  _, state, _, _ = pipeline(pipeline.init_state(1), batch,
                            lambda ids, k: [["one two", "one two three"]])
  np.testing.assert_array_equal(state["reference"][0, 0], [-3.0, -4.0])  # words + EOS


def test_reward_model_source_on_a_real_scorer_with_an_ensemble_aggregation(workdir):
  """A real `RewardScorer` (the smoke run's byte tokenizer, chat template and layout, jitted
  over the 8-device mesh) of a hand-made 4-member token model, aggregated by mean - lambda std
  with lambda = 0.5 inside the jitted function (`reward_sources.reward_model_scorer`)."""
  from jax.sharding import PartitionSpec  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top

  def apply(params, batch):  # member m: w_m * (mean token id) / 100 + m
    mask = batch["mask"].astype(jnp.float32)
    mean_id = (batch["tokens"] * mask).sum(-1) / mask.sum(-1)
    return mean_id[:, None] * params["w"] / 100 + jnp.arange(4.0)

  params = {"w": np.array([1.0, -1.0, 2.0, 0.5], np.float32)}
  token_model = scoring.TokenModel(apply, params, lambda mesh: {"w": PartitionSpec()}, 4, {})
  scorer = reward_sources.reward_model_scorer(
      token_model, _rm_config(), aggregation="mean_minus_std", uncertainty_penalty=0.5,
      batch_size=8, length_bucket=0)
  prompts, responses = ["AB", "CD", "E"], ["ab", "cdcd", "eeeeee"]
  tokens, mask, _ = scorer.encode(prompts, responses)
  mean_id = (tokens * mask).sum(-1) / mask.sum(-1)
  members = mean_id[:, None] * params["w"] / 100 + np.arange(4.0)
  expected = members.mean(1) - 0.5 * members.std(1)
  np.testing.assert_allclose(scorer.score(prompts, responses), expected, rtol=1e-5)
  config = _config(workdir, names=("rm",))
  pipeline = rewards.make_reward_pipeline(config, scorers={"rm": scorer})
  batch = rewards.RewardBatch(np.arange(3), prompts, responses, np.array([3, 5, 7]), 1)
  combined, _, _, raw = pipeline(pipeline.init_state(3), batch, _Sampler())
  np.testing.assert_allclose(raw[:, 0], expected, rtol=1e-5)
  np.testing.assert_allclose(combined, expected, rtol=1e-5)


def test_models_load_on_the_first_score_once_per_model(workdir, monkeypatch):
  loads = []

  def loader(field, spec):
    loads.append((field, spec["workdir"]))
    return _ParsedScorer("a")

  monkeypatch.setitem(reward_sources.LOADERS, "reward_model", loader)
  # a and b name the same run with the same settings (b under another transform): one load.
  pipeline = rewards.make_reward_pipeline(
      _config(workdir, transforms_={"b": ("batch_whiten", {})}))
  assert not loads
  _, _, _, raw = pipeline(pipeline.init_state(4), _batch(), _Sampler())
  assert loads == [("rewards.sources.a", workdir)]
  np.testing.assert_array_equal(raw, np.stack([A, A], axis=1))


# --- Bad configurations ------------------------------------------------------------------------


def _set(path, value, **more):
  """A config mutation: `path` = value (and each further `a__b=value` with '.' for '__')."""
  def mutate(config):
    for key, v in [(path, value)] + [(k.replace("__", "."), x) for k, x in more.items()]:
      node = config
      *parents, last = key.split(".")
      for p in parents:
        node = node[p]
      node[last] = v
  return mutate


@pytest.mark.parametrize("mutate, message", [
    (_set("rewards.sources.a.kind", "reward_modle"),
     "rewards.sources.a.kind='reward_modle': unknown source kind; did you mean 'reward_model'"),
    (_set("rewards.sources.a.transform", "lsx"),
     "rewards.sources.a.transform='lsx': unknown transform; did you mean 'lsc'"),
    (_set("rewards.sources.a.transform", "prm_clip"),
     "rewards.sources.a.transform='prm_clip' takes per-step"),
    (_set("rewards.sources.a.transform_params", {"quantil": 0.9},
          rewards__sources__a__transform="lsc"),
     "rewards.sources.a.transform_params.quantil: unknown parameter of transform "
     "'log_sigmoid_centered'; did you mean 'quantile'"),
    (_set("rewards.sources.a.transform_params", {"quantile": 1.5},
          rewards__sources__a__transform="lsc"),
     r"rewards.sources.a.transform='lsc' with transform_params=\{'quantile': 1.5\}:.*quantile"),
    (_set("rewards.combination", "summ"),
     "rewards.combination='summ': unknown combination; did you mean 'sum'"),
    (_set("rewards.combination_params", {"weights": [1.0, 2.0, 3.0]}),
     "rewards.combination='sum' on the K=2 sources of rewards.source_order='a,b'.*weights"),
    (_set("rewards.combination_params", {"temprature": 1.0}),
     "rewards.combination_params.temprature: unknown parameter"),
    (_set("rewards.source_order", "a,c"),
     r"rewards.source_order='a,c' must list every source.*'c'.*did you mean 'b'.*lacks \['b'\]"),
    (_set("rewards.source_order", "a,b,a"), r"repeated \['a'\]"),
    (_set("rewards.sources.a.workdri", "x"),
     "rewards.sources.a.workdri: unknown field of a 'reward_model' source; did you mean "
     "'workdir'"),
    (_set("rewards.sources.a.workdir", "/nonexistent/run"),
     "rewards.sources.a.workdir='/nonexistent/run': no config.json"),
    (_set("rewards.sources.a.step", 7), "rewards.sources.a.step=7: no checkpoint at that step"),
    (_set("rewards.sources.a.aggregation", "mean_minus_sd"),
     "rewards.sources.a.aggregation='mean_minus_sd': unknown ensemble aggregation; did you "
     "mean 'mean_minus_std'"),
    (_set("rewards.sources.a.transform", "par"), None),  # fine: a valid config
    (_set("rewards.reference_samples", 0), "rewards.reference_samples must be >= 1"),
    (_set("rewards.sources.b", rewards.source_config("rule", rule="non_emptyy")),
     "rewards.sources.b.rule='non_emptyy': unknown rule; did you mean 'non_empty'"),
    (_set("rewards.sources.b", rewards.source_config("rule", rule="format_regex")),
     r"rewards.sources.b.params: rule 'format_regex' needs \['pattern'\]"),
    (_set("rewards.sources.b", rewards.source_config("rule", rule="format_regex",
                                                     params={"pattern": "(a"})),
     "rewards.sources.b.params=.*not a valid regular expression"),
    (_set("rewards.sources.b", rewards.source_config("rule", rule="length_penalty",
                                                     params={"coeficient": 1.0})),
     "rewards.sources.b.params.coeficient: unknown parameter of rule 'length_penalty'; did "
     "you mean 'coefficient'"),
    (_set("rewards.sources.b", rewards.source_config("true_reward")),
     "rewards.sources.b: kind 'true_reward' is the synthetic world's"),
    (_set("rewards.combination", "lagrangian"),
     "rewards.combination_params.thresholds: required by 'lagrangian'"),
    (_set("rewards.combination", "and"), None),
])
def test_bad_configs_name_the_field_and_the_closest_name(workdir, mutate, message):
  config = _config(workdir)
  mutate(config)
  if message is None:
    rewards.check_rewards_config(config)
    return
  with pytest.raises(ValueError, match=message):
    rewards.check_rewards_config(config, world=None)


def test_combination_and_workdir_errors_that_need_their_own_setup(workdir, tmp_path):
  config = _config(workdir, names=("a",), combination="lagrangian",
                   params={"thresholds": 0.0})
  with pytest.raises(ValueError, match="'lagrangian' needs K >= 2 sources"):
    rewards.check_rewards_config(config)
  config = _config(workdir, combination="lagrangian", params={"thresholds": [0.0, 1.0]})
  with pytest.raises(ValueError, match=r"thresholds: expected 1 values .*\['b'\]"):
    rewards.check_rewards_config(config)
  config = _config(workdir, combination="and", transforms_={"b": ("par", {})})
  with pytest.raises(ValueError, match="rewards.sources.b.transform='par': "
                                       "rewards.combination='and' computes"):
    rewards.check_rewards_config(config)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(_rm_config().to_json())
  with pytest.raises(ValueError, match="workdir=.*: no checkpoint under checkpoints/"):
    rewards.check_rewards_config(_config(str(empty)))
  gpm = _fake_run(tmp_path / "gpm", "gpm,smoke")
  with pytest.raises(ValueError, match="family 'gpm' has head 'general_preference'; a reward "
                                       "source needs one reward per response"):
    rewards.check_rewards_config(_config(gpm))
  # true_reward: a run config without a synthetic world, and make_reward_pipeline without one.
  config = ml_collections.ConfigDict(dict(rewards=rewards.default_rewards_config(),
                                          data=dict(source="hh_rlhf")))
  with pytest.raises(ValueError, match="rewards.sources.true: kind 'true_reward'"):
    rewards.check_rewards_config(config)
  config.data.source = "synthetic"
  rewards.check_rewards_config(config)
  with pytest.raises(ValueError, match="rewards.sources.true: kind 'true_reward'"):
    rewards.make_reward_pipeline(config)
  # pretrained: a Hugging Face directory (the decoder fixture has no tokenizer.json).
  hf_dir = str(REPO_ROOT / "tests" / "fixtures" / "hf_decoder" / "llama3")
  config = _config(workdir, names=("a",))
  config.rewards.sources.a = rewards.source_config("pretrained", checkpoint=hf_dir)
  with pytest.raises(ValueError, match="rewards.sources.a.tokenizer: empty and .* has no "
                                       "tokenizer.json"):
    rewards.check_rewards_config(config)
  config.rewards.sources.a.tokenizer = "bytes"
  rewards.check_rewards_config(config)
  config.rewards.sources.a.checkpoint = str(tmp_path)
  with pytest.raises(ValueError, match="rewards.sources.a.checkpoint=.*: no config.json"):
    rewards.check_rewards_config(config)
  with pytest.raises(ValueError, match=r"source_config\('rule'\): unknown field\(s\) \['rules'\]"):
    rewards.source_config("rule", rules="non_empty")
  with pytest.raises(ValueError, match="scorers='c': unknown source; did you mean"):
    rewards.make_reward_pipeline(_config(workdir), scorers={"c": None})
