"""The online-RL task (`rmjax.tasks.policy.rl`) and the trainer hooks it rides on.

* the old (four-field) checkpoint layout restores into the new `TrainState`, and a task
  state round-trips;
* the one-step bandit: the task's REINFORCE update (responses of one token, a known reward
  per token, plain SGD with learning rate 1, so that the parameter change is minus the
  gradient of the task's loss) equals the exact policy gradient
  (1 / B) sum_b J_b^T (pi_b * (r - E_pi_b r)), J_b = d logits_b / d params (jax.vjp),
  within Monte Carlo error: every parameter's z-score against the exact standard error of
  the estimate is below 5 in magnitude, and their RMS is about 1;
* resume: 4 steps equal 2 steps, a checkpoint, a restore and 2 more (metrics, params and
  the task state: the adaptive KL coefficient, the pipeline's state);
* every algorithm name runs a step with finite metrics; PPO's value head trains (slow);
* the real reward pipeline (LSC with pi_0's reference rewards sampled through the task, a
  running normaliser) fills its state in the task state, which checkpoints and restores;
* bad configs fail before anything is compiled, naming the field.

The slow tests share compiled pieces (`rl._SHARED`, JAX's cache): ~85 s for the file on 2
cores; the others ~5 s.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rmjax.tasks.policy import rl
from rmjax.tasks.policy import rl_algorithms
from rmjax.tasks.policy import sampling_eval
from rmjax.tasks.policy.config import get_config
from rmjax.train import batching
from rmjax.train import checkpoint as ckpt_lib
from rmjax.train import program as program_lib
from rmjax.train.state import TrainState


# ---------------------------------------------------------------- trainer: checkpoints


class _OldTrainState(NamedTuple):
  """The TrainState layout before task states existed."""
  step: Any
  params: Any
  opt_state: Any
  rng: Any


def test_old_checkpoint_restores_and_task_state_round_trips(tmp_path):
  import orbax.checkpoint as ocp  # noqa: PLC0415

  optimizer = optax.adam(1e-3)
  state = TrainState.create({"w": jnp.arange(3.0)}, optimizer, jnp.array([1, 2], jnp.uint32))
  manager = ocp.CheckpointManager(tmp_path / "old", options=ocp.CheckpointManagerOptions(
      create=True, enable_async_checkpointing=False))
  manager.save(1, args=ocp.args.StandardSave(_OldTrainState(*state[:4])))
  manager.wait_until_finished()
  manager.close()
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "old"), async_save=False)
  restored = checkpointer.restore(1, state)
  checkpointer.close()
  assert isinstance(restored, TrainState) and restored.task_state is None
  np.testing.assert_array_equal(restored.params["w"], [0.0, 1.0, 2.0])
  np.testing.assert_array_equal(restored.rng, [1, 2])

  with_task = state._replace(task_state={"beta": jnp.float32(0.25),
                                         "cache": jnp.full((2, 3), jnp.nan)})
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "new"), async_save=False)
  checkpointer.save(5, with_task, force=True)
  back = checkpointer.restore(5, with_task)
  checkpointer.close()
  assert float(back.task_state["beta"]) == 0.25
  assert np.isnan(back.task_state["cache"]).all()


# ---------------------------------------------------------------- shared pieces


def _reward_of_text(text: str) -> float:
  """The bandit's known reward of a decoded response."""
  return 0.5 if not text else (sum(map(ord, text)) % 13) / 12.0


class TextRewardPipeline:
  """A reward pipeline (the contract's interface) with one source: `_reward_of_text`."""
  source_names = ("bandit",)
  needs_reference = False

  def init_state(self, num_prompts):
    return {"calls": np.zeros((), np.int32), "seen": np.zeros(num_prompts, np.float32)}

  def score(self, batch):
    return np.array([[_reward_of_text(t)] for t in batch.responses], np.float32)

  def __call__(self, state, batch, sample_reference):
    del sample_reference
    raw = self.score(batch)
    seen = np.array(state["seen"])
    seen[batch.prompt_ids] += 1
    state = {"calls": np.asarray(state["calls"]) + 1, "seen": seen}
    return raw[:, 0], state, {"reward/bandit/raw_mean": float(raw.mean()),
                              "reward/combined_mean": float(raw.mean())}, raw


def _smoke_config(**rl_fields):
  config = get_config("rl", "smoke")
  config.rl.update(rl_fields)
  config.checkpoint.async_save = False
  return config


def _program(config, pipeline=None, devices=None):
  task = rl.make_task(config, reward_pipeline=pipeline or TextRewardPipeline())
  program = program_lib.build_program(config, task, devices=devices or jax.devices()[:1])
  return task, program, task.load_data("")


def _batch(config, task, program, data, step):
  indices = data.train.train_indices(step, config.train.batch_size, config.data_seed)
  return batching.place_batch(data.train, indices, program.batch_sharding, task.batch_fields)


# ---------------------------------------------------------------- the one-step bandit


@pytest.fixture(scope="module")
def bandit():
  """The one-step bandit's run: responses of one token, REINFORCE with a constant baseline,
  SGD with learning rate 1; the adaptive KL controller is on (the KL is not in the reward or
  the loss, but its coefficient moves: task state for the resume test)."""
  config = _smoke_config(algorithm="reinforce", baseline=0.3, group_size=128, kl_in="none",
                         entropy_coef=0.0, adaptive_kl=True, kl_target=1e-4, kl_horizon=10.0)
  config.generation.update(max_new_tokens=1, temperature=3.0)
  config.optim.update(name="sgd", learning_rate=1.0, momentum=0.0, grad_clip_norm=0.0,
                      schedule="constant")
  return (config, *_program(config))


@pytest.mark.slow  # ~30 s on 2 free cores: compiling the step; the resume test reuses it.
def test_bandit_reinforce_gradient_matches_the_exact_policy_gradient(bandit):
  config, task, program, data = bandit
  state = program.init(jax.random.PRNGKey(config.seed))
  before = jax.device_get(state.params)
  batch = _batch(config, task, program, data, 0)
  state, metrics = program.train_step(state, batch)
  after = jax.device_get(state.params)
  # SGD with learning rate 1: the update is minus the gradient of the task's loss, i.e. the
  # policy-gradient (ascent) estimate.
  estimate = jax.tree.map(lambda a, b: a - b, after, before)

  # Exact: per prompt, logits z_b = logits at the prompt's last position / temperature.
  tau = config.generation.temperature
  graphdef = program.graphdef
  from flax import nnx  # noqa: PLC0415
  tokens = np.asarray(batch["prompt_tokens"])
  mask = np.asarray(batch["prompt_mask"])
  from rmjax import data as rm_data  # noqa: PLC0415
  tokenizer = rm_data.make_tokenizer(config.data.tokenizer)
  eos = sampling_eval.end_ids(tokenizer, config.data.chat_template)
  vocab = config.model.vocab_size
  rewards = np.array([_reward_of_text(sampling_eval.decode_responses(
      tokenizer, {"response_tokens": np.array([[v]]), "lengths": np.array([1])}, eos)[0])
                      for v in range(vocab)], np.float32)

  def logits_of(params, tok, msk):
    return nnx.merge(graphdef, params).logits(tok[None], msk[None])[0, -1] / tau

  @jax.jit
  def pull(params, tok, msk, cotangents):
    """[K, P] J^T c for the K cotangents c [K, V] of prompt (tok, msk)."""
    _, vjp = jax.vjp(lambda p: logits_of(p, tok, msk), params)
    return jax.vmap(lambda c: jax.flatten_util.ravel_pytree(vjp(c)[0])[0])(cotangents)

  b_count, g = tokens.shape[0], config.rl.group_size
  n = b_count * g
  est = np.asarray(jax.flatten_util.ravel_pytree(estimate)[0], np.float64)
  baseline = config.rl.baseline
  pis = [np.asarray(jax.nn.softmax(jax.jit(logits_of)(before, tokens[b], mask[b])), np.float64)
         for b in range(b_count)]
  # Row 0 of each pull: the exact gradient's term; rows 1..V: e_v - pi (per-sample terms).
  pulled = [np.asarray(pull(before, tokens[b], mask[b], jnp.asarray(np.concatenate(
      [(pi * (rewards - pi @ rewards))[None], np.eye(vocab) - pi[None]]), jnp.float32)),
                       np.float64) for b, pi in enumerate(pis)]
  exact = sum(p[0] for p in pulled) / b_count
  # The estimate's exact variance: per prompt, the per-sample gradient is
  # g(v) = (r_v - c) J^T (e_v - pi) with v ~ pi, G samples each.
  rng = np.random.default_rng(0)
  directions = np.concatenate([exact[None] / np.linalg.norm(exact),
                               rng.normal(size=(16, exact.size))])
  variance = np.zeros(exact.size)
  dir_var = np.zeros(len(directions))
  for rows, pi in zip(pulled, pis):
    per_token = rows[1:] * (rewards - baseline)[:, None]
    variance += g * (pi @ np.square(per_token) - np.square(pi @ per_token))
    along = per_token @ directions.T
    dir_var += g * (pi @ np.square(along) - np.square(pi @ along))
  stderr = np.sqrt(variance) / n
  # Per parameter: the z-scores' RMS is about 1 (their tails are not Gaussian: a rarely
  # sampled token moves its own embedding row by a few large steps).
  live = stderr > 1e-6 * stderr.max()
  z = (est - exact)[live] / stderr[live]
  rms = float(np.sqrt(np.mean(np.square(z))))
  # Along fixed directions u (the exact gradient and 16 random ones) u . estimate is a sum of
  # N bounded terms: Gaussian to a good approximation, so |z| < 4.5 holds.
  dir_z = (directions @ (est - exact)) / (np.sqrt(dir_var) / n)
  print(f"bandit: {live.sum()} parameters, rms z = {rms:.3f}, max |z| = {np.abs(z).max():.1f}; "
        f"direction z = {np.round(dir_z, 2).tolist()}; |exact| = {np.linalg.norm(exact):.4g}, "
        f"|estimate - exact| = {np.linalg.norm(est - exact):.4g}")
  assert 0.8 < rms < 1.2
  assert np.abs(dir_z).max() < 4.5
  assert directions[0] @ est > 0.5 * np.linalg.norm(exact)
  assert metrics["clip_fraction"] == 0.0
  np.testing.assert_allclose(metrics["response_length"], 1.0)


# ---------------------------------------------------------------- resume


@pytest.mark.slow
def test_four_steps_equal_two_steps_checkpoint_restore_two_more(bandit, tmp_path):
  config, task, program, data = bandit
  state = program.init(jax.random.PRNGKey(config.seed))
  straight = []
  for step in range(4):
    state, metrics = program.train_step(state, _batch(config, task, program, data, step))
    straight.append(metrics)
    if step == 1:
      checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), async_save=False)
      checkpointer.save(2, state, force=True)
  final = jax.device_get(state)

  resumed = checkpointer.restore(2, program.abstract_state)
  checkpointer.close()
  assert int(resumed.task_state["rewards"]["calls"]) == 2
  for step in (2, 3):
    resumed, metrics = program.train_step(resumed, _batch(config, task, program, data, step))
    assert metrics.keys() == straight[step].keys()
    for k in metrics:
      np.testing.assert_array_equal(metrics[k], straight[step][k], err_msg=k)
  resumed = jax.device_get(resumed)
  jax.tree.map(np.testing.assert_array_equal, resumed, final)
  # The adaptive controller moved beta (KL far above its target) and it was restored.
  assert straight[3]["kl_coef"] != straight[0]["kl_coef"]


# ---------------------------------------------------------------- every algorithm


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(rl_algorithms.ALGORITHMS))
def test_each_algorithm_runs_a_step_with_finite_metrics(algorithm):
  config = _smoke_config(algorithm=algorithm, kl_in="loss", kl_estimator="k3",
                         entropy_coef=0.01, dynamic_sampling=algorithm == "grpo", epochs=2,
                         minibatch_size=16)
  task, program, data = _program(config)
  state = program.init(jax.random.PRNGKey(config.seed))
  state, metrics = program.train_step(state, _batch(config, task, program, data, 0))
  assert int(state.step) == 1
  for k, v in metrics.items():
    assert np.isfinite(v), (k, v)
  for k in ("loss", "entropy", "kl_k1", "kl_k3", "clip_fraction", "kept_fraction",
            "response_length", "reward/combined_mean", "value_loss"):
    assert k in metrics
  # PPO's critic: a value head beside the LM's params, trained on the returns.
  assert (metrics["value_loss"] > 0) == (algorithm == "ppo")
  assert ("value_head" in state.params) == (algorithm == "ppo")


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize("field,value,message", [
    ("algorithm", "grop", "did you mean 'grpo'"),
    ("minibatch_size", 5, "does not divide"),
    ("kl_estimator", "k4", "rl.kl_estimator"),
    ("loss_aggregation", "token_mean", "did you mean 'token-mean'"),
    ("group_size", 1, "must be >= 2"),
    ("reference_workdir", "/nonexistent/sft", "no config.json"),
])
def test_bad_config_errors_before_compiling(field, value, message):
  config = _smoke_config(**{field: value})
  with pytest.raises(ValueError, match=message):
    rl.check_config(config)


def test_reference_workdir_without_checkpoint(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  config = _smoke_config(reference_workdir=str(tmp_path))
  with pytest.raises(ValueError, match="no checkpoint under checkpoints/"):
    rl.check_config(config)


@pytest.mark.slow
def test_reward_pipeline_state_lives_in_the_task_state(tmp_path):
  """The real pipeline with LSC (pi_0's reference rewards, sampled through the task) and a
  running normaliser: its state is filled by the steps, checkpointed and restored."""
  import ml_collections  # noqa: PLC0415
  from rmjax.tasks.policy import rewards  # noqa: PLC0415

  config = _smoke_config(algorithm="rloo")
  config.rewards.sources = ml_collections.ConfigDict({
      "true": rewards.source_config("true_reward", transform="lsc"),
      "len": rewards.source_config("rule", rule="length_penalty", transform="mean_std")})
  config.rewards.source_order = "true,len"
  config.rewards.reference_samples = 3
  task = rl.make_task(config)
  program = program_lib.build_program(config, task, devices=jax.devices()[:1])
  data = task.load_data("")
  state = program.init(jax.random.PRNGKey(config.seed))
  seen = set()
  for step in range(2):
    batch = _batch(config, task, program, data, step)
    seen.update(np.asarray(batch["prompt_id"]).tolist())
    state, metrics = program.train_step(state, batch)
    assert metrics["reward/reference_sampled"] > 0
  pipeline_state = jax.device_get(state.task_state["rewards"])
  done = np.flatnonzero(pipeline_state["reference_done"])
  assert sorted(done.tolist()) == sorted(seen)
  assert np.isfinite(pipeline_state["reference"][done, 0]).all()
  assert int(pipeline_state["running"]["len"]["count"]) == 2 * rl.num_rows(config)
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(2, state, force=True)
  restored = jax.device_get(checkpointer.restore(2, program.abstract_state).task_state)
  checkpointer.close()
  jax.tree.map(np.testing.assert_array_equal, restored, jax.device_get(state.task_state))


# ---------------------------------------------------------------- the trainer, end to end


@pytest.mark.slow
def test_trainer_run_resumed_after_a_kill_ends_with_the_same_metrics(tmp_path):
  """`train_and_evaluate` on the smoke preset (true reward, pi_0 = the initialisation), then
  the same run as if killed after step 2: its last checkpoint removed, the same command
  again. The resumed run restores params, optimiser, KL controller and pipeline state and
  replays steps 3-4 to the same train and eval metrics."""
  import json  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import policy  # pylint: disable=g-import-not-at-top
  config = _smoke_config(adaptive_kl=True)
  config.mesh.num_devices = 1
  config.train.update(num_steps=4, log_every=1, eval_every=4, checkpoint_every=2,
                      tensorboard=False)
  workdir = tmp_path / "run"
  full = policy.train_and_evaluate(config, str(workdir))
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
  assert np.isfinite(full["final_eval"]["true_reward"])
  shutil.rmtree(workdir / "checkpoints" / "4")
  resumed = policy.train_and_evaluate(config, str(workdir))
  assert resumed["resumed_from_step"] == 2
  again = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  volatile = ("steps_per_s", "tokens_per_s", "real_tokens_per_s")
  strip = lambda rs: [{k: v for k, v in r.items() if k not in volatile} for r in rs]
  assert strip(again) == strip(records)
  assert resumed["final_eval"] == full["final_eval"]
