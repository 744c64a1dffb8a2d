"""End-to-end: the trainer on the smoke preset, resume after a kill, bad input at the CLI."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _smoke_config(**train_overrides):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config("smoke")
  config.train.update(train_overrides)
  config.mesh.num_devices = 1  # Not a sharding test: one device compiles ~2x faster.
  return config


def _run_cli(*args, timeout=300, env_extra=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("RMJAX_TRACEBACK", None)
  env.update(env_extra or {})
  return subprocess.Popen([sys.executable, "-m", "experiments.train_reward_model", *args],
                          cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _read_metrics(workdir):
  from rmjax.train import read_metrics  # pylint: disable=g-import-not-at-top
  return read_metrics(str(workdir))


def _eval_records(workdir):
  return [r for r in _read_metrics(workdir) if r["split"] == "eval"]


@pytest.mark.slow
def test_smoke_run_writes_everything_and_learns(tmp_path):
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  config = _smoke_config(num_steps=60, eval_every=30)
  report = rm_task.train_and_evaluate(config, str(tmp_path))
  for name in ("config.json", "data_report.json", "metrics.jsonl", "report.json", "report.md",
               "curves.png", "reliability.png"):
    assert (tmp_path / name).exists(), name
  assert list((tmp_path / "tensorboard").iterdir()), "no TensorBoard event file"
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [40, 50, 60]  # max_to_keep = 3
  assert report["steps"] == 60
  final = report["final_eval"]
  assert final["num_pairs"] == config.data.synthetic.num_eval
  train_records = [r for r in _read_metrics(tmp_path) if r["split"] == "train"]
  assert [r["step"] for r in train_records] == list(range(5, 61, 5))
  # It learns something: eval loss below log 2 and accuracy clearly above chance.
  assert final["loss"] < 0.69
  assert final["accuracy"] > 0.55
  assert 0.5 < final["bayes_optimal_accuracy"] < 1.0
  assert report["train_tokens_per_s"] > 0


@pytest.mark.slow
def test_same_seed_same_metrics_and_seed_matters(tmp_path):
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  config = _smoke_config(num_steps=20, eval_every=20, checkpoint_every=20)
  a = rm_task.train_and_evaluate(config, str(tmp_path / "a"))["final_eval"]
  b = rm_task.train_and_evaluate(config, str(tmp_path / "b"))["final_eval"]
  assert a == b
  config.seed = 1
  c = rm_task.train_and_evaluate(config, str(tmp_path / "c"))["final_eval"]
  assert c["loss"] != a["loss"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_metrics(tmp_path):
  common = ["--config", "configs/reward_model.py:smoke", "--config.train.num_steps=200",
            "--config.train.eval_every=100", "--config.train.checkpoint_every=20"]
  # The uninterrupted baseline runs beside the killed-and-resumed run (2 processes).
  baseline = _run_cli(*common, f"--workdir={tmp_path / 'baseline'}")
  workdir = tmp_path / "killed"
  proc = _run_cli(*common, f"--workdir={workdir}")
  deadline = time.time() + 300
  ckpt_dir = workdir / "checkpoints"
  while time.time() < deadline and proc.poll() is None:
    if ckpt_dir.exists() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not (workdir / "report.json").exists()

  resumed = _run_cli(*common, f"--workdir={workdir}")
  out, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-3000:]
  report = json.loads((workdir / "report.json").read_text())
  assert 0 < report["resumed_from_step"] < 200
  assert "resumed from checkpoint step" in err
  _, baseline_err = baseline.communicate(timeout=600)
  assert baseline.returncode == 0, baseline_err[-3000:]
  assert _eval_records(workdir) == _eval_records(tmp_path / "baseline")


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_for_resume(tmp_path):
  proc = _run_cli("--config", "configs/reward_model.py:smoke", "--config.train.num_steps=100000",
                  "--config.train.checkpoint_every=100000", "--config.train.eval_every=100000",
                  f"--workdir={tmp_path}")
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and metrics.stat().st_size > 0:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 75, err[-3000:]
  assert "preempted" in err and "run the same command to resume" in err
  saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(saved) == 1 and saved[0] > 0


@pytest.mark.parametrize("args, message", [
    (["--config.train.num_stepz=3"],
     "unknown config key --config.train.num_stepz (did you mean: train.num_steps"),
    (["--config.data.source=jsonl", "--config.data.path=/nonexistent/prefs.jsonl"],
     "/nonexistent/prefs.jsonl"),
    (["--config", "configs/reward_model.py:tiny"], "unknown preset 'tiny'"),
])
def test_cli_bad_input_gives_one_clear_message(tmp_path, args, message):
  proc = _run_cli("--config", "configs/reward_model.py:smoke", *args, f"--workdir={tmp_path}")
  _, err = proc.communicate(timeout=300)
  assert proc.returncode != 0
  assert message in err, err[-3000:]
  assert "Traceback" not in err, err[-3000:]


def test_cli_empty_dataset_is_reported(tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  proc = _run_cli("--config", "configs/reward_model.py:smoke", "--config.data.source=jsonl",
                  f"--config.data.path={empty}", f"--workdir={tmp_path / 'w'}")
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2, err[-3000:]
  assert "error:" in err and "Traceback" not in err, err[-3000:]


@pytest.mark.parametrize("preset", ["default", "smoke", "hh_rlhf", "hh_helpful", "pod", "gpm,smoke",
                                    "mixture,pod"])
def test_every_preset_resolves_to_a_valid_model_and_mesh(preset):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax import models, parallel  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config(None if preset == "default" else preset)
  assert config.name == preset.replace(",", "_")
  preset = preset.split(",")[-1]
  model_config = models.TransformerConfig.from_dict(
      dict(config.model.to_dict(), max_len=config.data.max_len))
  num_params = models.count_params(models.abstract_params(model_config))
  expected = {"smoke": (1e4, 1e5), "default": (4e5, 5e5), "hh_rlhf": (4e5, 5e5),
              "hh_helpful": (4e5, 5e5), "pod": (1.2e9, 1.3e9)}[preset]
  assert expected[0] < num_params < expected[1], num_params
  # The pod preset's mesh is data x fsdp x tensor = 4 x 16 x 4 = 256 devices.
  mesh_devices = 256 if preset == "pod" else 8
  sizes = parallel.resolve_mesh_shape(config.mesh.shape.to_dict(), mesh_devices)
  assert config.train.batch_size % (sizes[0] * sizes[1]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpm", "mixture", "ensemble"])
def test_every_pairwise_family_trains_on_its_smoke_preset(tmp_path, family):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config(f"{family},smoke")
  config.train.update(num_steps=60, eval_every=60, checkpoint_every=60)
  config.mesh.num_devices = 1  # Not a sharding test: one device compiles ~2x faster.
  report = rm_task.train_and_evaluate(config, str(tmp_path))
  assert report["config_name"] == f"{family}_smoke"
  final = report["final_eval"]
  assert final["loss"] < 0.65 and final["accuracy"] > 0.6, final


def _family_config(family="bt", **loss):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config(f"{family},smoke")
  config.mesh.num_devices = 1  # Not a sharding test: one device compiles ~2x faster.
  if loss:
    config.loss.update(loss)
  return config


def test_pair_logits_of_each_family_match_the_plain_formulas():
  import jax
  import jax.numpy as jnp
  import numpy as np
  from rmjax.tasks.reward_model import get_family  # pylint: disable=g-import-not-at-top
  bt = get_family("bt")
  np.testing.assert_allclose(bt.pair_logits(_family_config(), jnp.array([2.0]),
                                            jnp.array([0.5])), [1.5])
  # v_c = (1, 0), v_r = (0, 1): s = 1 (spec sanity value), logit = s / tau = 2.
  logits = get_family("gpm").pair_logits(_family_config("gpm", temperature=0.5),
                                         {"embedding": jnp.array([[1.0, 0.0]])},
                                         {"embedding": jnp.array([[0.0, 1.0]])})
  np.testing.assert_allclose(logits, [2.0], rtol=1e-6)
  mixture = get_family("mixture")
  rc, rr = jnp.array([[2.0, -1.0]]), jnp.array([[0.5, 1.0]])
  router = jnp.array([[0.3, -0.2]])
  logits = mixture.pair_logits(None, {"rewards": rc, "router_logits": router},
                               {"rewards": rr, "router_logits": router})
  w = np.asarray(jax.nn.softmax(router[0]))
  p = float(np.sum(w / (1 + np.exp(-(np.asarray(rc[0]) - np.asarray(rr[0]))))))
  np.testing.assert_allclose(logits, [np.log(p) - np.log1p(-p)], rtol=1e-5)
  # One component: the mixture is plain BT.
  one = mixture.pair_logits(None, {"rewards": rc[:, :1], "router_logits": router[:, :1]},
                            {"rewards": rr[:, :1], "router_logits": router[:, :1]})
  np.testing.assert_allclose(one, [1.5], rtol=1e-5)
  # Regression pairs are ranked by the HelpSteer2 score of the predicted attributes.
  a = jnp.array([[3.0, 3.0, 4.0, 2.0, 2.0]])  # spec sanity value: 5.24
  np.testing.assert_allclose(get_family("regression").pair_logits(None, a, jnp.zeros((1, 5))),
                             [5.24], rtol=1e-5)
  with pytest.raises(ValueError, match="family: expected one of"):
    get_family("hinge")


def test_each_family_owns_its_config_sections():
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  bt, gpm = reward_model.get_config("smoke"), reward_model.get_config("gpm,smoke")
  assert sorted(bt.loss) == ["center_rewards_coef", "l2_reward_coef", "label_smoothing",
                             "use_margin"]
  assert "strength" in bt and "strength" not in gpm and "head" not in bt
  assert sorted(gpm.loss) == ["normalize", "temperature", "use_margin"]
  assert gpm.head.to_dict() == {"embedding_dim": 4}
  assert "ensemble" not in bt and reward_model.get_config("ensemble,smoke").ensemble.num_members == 4
  # Every family module is a config token.
  assert set(reward_model.FAMILIES) >= {"bt", "scaled_bt", "regression", "listwise", "gpm",
                                        "mixture", "ensemble", "vpl", "pal"}


def _train_steps(config, graphdef, optimizer):
  """The jitted train and eval steps of `config`'s family (no mesh: identity sharding)."""
  import jax
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  from rmjax.train import program  # pylint: disable=g-import-not-at-top
  task = rm_task.make_task(config)
  identity = lambda fn: fn  # noqa: E731
  return (jax.jit(program.make_train_step(task.make_loss(graphdef, identity), optimizer)),
          jax.jit(task.make_eval(graphdef, identity)))


def _tiny(config, members=0):
  config.model.update(d_model=16, num_layers=1, num_heads=2, d_ff=64)
  config.data.max_len = 8
  config.optim.grad_clip_norm = 0.0  # Global-norm clipping would couple the members.
  if members:
    config.ensemble.num_members = members
  return config


def test_ensemble_train_step_equals_independent_member_steps():
  import jax
  import numpy as np
  from rmjax import models  # pylint: disable=g-import-not-at-top
  from rmjax.train import optim  # pylint: disable=g-import-not-at-top
  from rmjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  ensemble_config, single_config = _tiny(_family_config("ensemble"), 3), _tiny(_family_config())
  optimizer, _ = optim.make_optimizer(single_config.optim, 10)
  rng = np.random.default_rng(0)
  batch = {"chosen_tokens": rng.integers(3, 259, (4, 8)).astype(np.int32),
           "rejected_tokens": rng.integers(3, 259, (4, 8)).astype(np.int32),
           "chosen_mask": np.ones((4, 8), np.int32), "rejected_mask": np.ones((4, 8), np.int32),
           "margin": np.zeros(4, np.float32), "valid": np.array([True, True, True, False])}
  model_config = models.TransformerConfig(d_model=16, num_layers=1, num_heads=2, d_ff=64,
                                          max_len=8)
  graphdef, stacked = models.init_ensemble(model_config, jax.random.PRNGKey(0), num_members=3)
  ensemble_step, ensemble_eval = _train_steps(ensemble_config, graphdef, optimizer)
  new_state, metrics = ensemble_step(TrainState.create(stacked, optimizer, jax.random.PRNGKey(1)),
                                     batch)
  single_step, single_eval = _train_steps(single_config, graphdef, optimizer)
  member_losses, member_logits = [], []
  for m in range(3):
    params = models.ensemble_member(stacked, m)
    single, single_metrics = single_step(
        TrainState.create(params, optimizer, jax.random.PRNGKey(1)), batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 models.ensemble_member(new_state.params, m), single.params)
    member_losses.append(single_metrics["loss"])
    member_logits.append(np.asarray(single_eval(params, batch)))
  np.testing.assert_allclose(metrics["loss"], np.mean(member_losses), rtol=1e-5)
  np.testing.assert_allclose(ensemble_eval(stacked, batch), np.mean(member_logits, axis=0),
                             rtol=1e-5, atol=1e-6)


def test_ensemble_with_member_batches_trains_each_member_on_its_own_slice():
  import jax
  import numpy as np
  from rmjax import models  # pylint: disable=g-import-not-at-top
  from rmjax.train import optim  # pylint: disable=g-import-not-at-top
  from rmjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  n, members = 6, 3
  ensemble_config = _tiny(_family_config("ensemble"), members)
  ensemble_config.ensemble.member_batches = True
  ensemble_config.train.batch_size = n
  single_config = _tiny(_family_config())
  optimizer, _ = optim.make_optimizer(single_config.optim, 10)
  rng = np.random.default_rng(1)
  batch = {"chosen_tokens": rng.integers(3, 259, (n, 8)).astype(np.int32),
           "rejected_tokens": rng.integers(3, 259, (n, 8)).astype(np.int32),
           "chosen_mask": np.ones((n, 8), np.int32), "rejected_mask": np.ones((n, 8), np.int32),
           "margin": np.zeros(n, np.float32), "valid": np.array([True] * 5 + [False])}
  model_config = models.TransformerConfig(d_model=16, num_layers=1, num_heads=2, d_ff=64,
                                          max_len=8)
  graphdef, stacked = models.init_ensemble(model_config, jax.random.PRNGKey(0), members)
  step, _ = _train_steps(ensemble_config, graphdef, optimizer)
  new_state, metrics = step(TrainState.create(stacked, optimizer, jax.random.PRNGKey(1)), batch)
  single_step, _ = _train_steps(single_config, graphdef, optimizer)
  losses = []
  for m in range(members):
    params = models.ensemble_member(stacked, m)
    own = {k: v[2 * m:2 * m + 2] for k, v in batch.items()}  # member m's slice of 2 pairs
    single, single_metrics = single_step(
        TrainState.create(params, optimizer, jax.random.PRNGKey(1)), own)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 models.ensemble_member(new_state.params, m), single.params)
    losses.append(single_metrics["loss"])
  np.testing.assert_allclose(metrics["loss"], np.mean(losses), rtol=1e-5)


# The families on generated data: strengths, ratings, ranked lists, user episodes ------------

@pytest.mark.slow
@pytest.mark.parametrize("family", ["scaled_bt", "regression", "listwise"])
def test_every_generated_data_family_trains_on_its_smoke_preset(tmp_path, family):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config(f"{family},smoke")
  config.train.update(num_steps=60, eval_every=60, checkpoint_every=60, tensorboard=False)
  config.mesh.num_devices = 1  # Not a sharding test: one device compiles ~2x faster.
  report = rm_task.train_and_evaluate(config, str(tmp_path))
  assert report["config_name"] == f"{family}_smoke"
  final = report["final_eval"]
  # Every family is evaluated on the same held-out pairs (128 in the smoke preset).
  assert final["num_pairs"] == 128 and final["accuracy"] > 0.6, final


@pytest.mark.slow
def test_vpl_smoke_trains_on_user_episodes_and_scores_the_query_pairs(tmp_path):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config("vpl,smoke")
  config.mesh.num_devices = 1  # Not a sharding test: one device compiles ~2x faster.
  # One user group: the context carries no information, so VPL must learn what BT learns.
  config.data.synthetic.num_user_groups = 1
  config.train.update(num_steps=60, eval_every=60, checkpoint_every=60, log_every=10,
                      tensorboard=False)
  report = rm_task.train_and_evaluate(config, str(tmp_path))
  final = report["final_eval"]
  # 32 eval episodes x 4 query pairs; the 4 context pairs of each are not scored.
  assert final["num_pairs"] == 32 * 4, final
  assert final["accuracy"] > 0.6, final
  assert report["data"]["user_episodes"]["context_pairs"] == 4


def test_family_presets_need_their_data_format(tmp_path):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config("listwise,smoke")
  config.data.format = "pairs"
  with pytest.raises(ValueError, match="data.format='pairs' does not fit family='listwise'"):
    rm_task.train_and_evaluate(config, str(tmp_path))
  config = reward_model.get_config("regression,smoke")
  config.data.attributes = False
  with pytest.raises(ValueError, match="data.attributes=True"):
    rm_task.train_and_evaluate(config, str(tmp_path))
  with pytest.raises(ValueError, match="combine it with 'default' or 'smoke'"):
    reward_model.get_config("vpl,hh_rlhf")
  config = reward_model.get_config("smoke")
  config.strength.use = "flip"
  with pytest.raises(ValueError, match="strength.teacher_workdir"):
    rm_task.train_and_evaluate(config, str(tmp_path))
  config = reward_model.get_config("listwise,smoke")
  config.loss.name = "hinge"
  with pytest.raises(ValueError, match="loss.name: expected one of"):
    rm_task.make_task(config)


def test_list_losses_and_ranked_pair_logits_match_plain_formulas():
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from rmjax.tasks.reward_model.families import listwise  # pylint: disable=g-import-not-at-top
  scores = jnp.array([[0.5, 2.0, -1.0], [1.0, 0.0, 3.0]])
  ranking = jnp.array([[1, 0, 2], [2, 1, 0]])
  batch = {"ranking": ranking, "valid": jnp.array([True, True])}
  cfg = ml_collections.ConfigDict(dict(name="plackett_luce", list_weighting="uniform"))
  # Plackett-Luce by hand: sum_k -s_pi(k) + log sum_{l >= k} exp s_pi(l), mean over lists.
  def pl(s, pi):
    s = np.asarray(s)[np.asarray(pi)]
    return sum(-s[k] + np.log(np.exp(s[k:]).sum()) for k in range(len(s)))
  expected = np.mean([pl(scores[0], ranking[0]), pl(scores[1], ranking[1])])
  np.testing.assert_allclose(listwise.list_loss(cfg, scores, batch), expected, rtol=1e-5)
  # All pairs: 3 ordered pairs per list, mean of softplus(-(s_better - s_worse)).
  logits = listwise.ranked_pair_logits(scores, ranking)
  # List 2 in rank order is (3, 0, 1).
  np.testing.assert_allclose(logits, [[1.5, 3.0, 1.5], [3.0, 2.0, -1.0]])
  cfg.name = "all_pairs_bradley_terry"
  np.testing.assert_allclose(listwise.list_loss(cfg, scores, batch),
                             np.mean(np.log1p(np.exp(-np.asarray(logits)))), rtol=1e-5)
  # An invalid list changes nothing.
  padded = {"ranking": jnp.concatenate([ranking, ranking[:1]]),
            "valid": jnp.array([True, True, False])}
  np.testing.assert_allclose(
      listwise.list_loss(cfg, jnp.concatenate([scores, jnp.full((1, 3), 1e4)]), padded),
      listwise.list_loss(cfg, scores, batch), rtol=1e-6)


def test_strength_driven_losses_match_their_formulas():
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from rmjax.tasks.reward_model import pairwise  # pylint: disable=g-import-not-at-top
  c, r = jnp.array([1.0, -0.5, 2.0]), jnp.array([0.0, 0.5, 1.5])
  u = jnp.array([0.8, -2.0, 0.1])
  batch = {"valid": jnp.array([True, True, True]), "margin": jnp.zeros(3), "strength_mean": u}
  cfg = ml_collections.ConfigDict(dict(use_margin=False, label_smoothing=0.0,
                                       center_rewards_coef=0.0, l2_reward_coef=0.0))
  softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
  delta = np.asarray(c - r)
  np.testing.assert_allclose(
      pairwise.bradley_terry_pair_loss(cfg, c, r, batch, strength_use="adaptive_margin"),
      np.mean(softplus(-(delta - np.asarray(u)))), rtol=1e-5)
  a = np.minimum(1 / (1 + np.exp(np.asarray(u))), 0.45)  # sigma(-u), capped
  np.testing.assert_allclose(
      pairwise.bradley_terry_pair_loss(cfg, c, r, batch, strength_use="smoothing"),
      np.mean((1 - a) * softplus(-delta) + a * softplus(delta)), rtol=1e-5)
  cfg.label_smoothing = 0.1
  with pytest.raises(ValueError, match="leave loss.label_smoothing at 0"):
    pairwise.bradley_terry_pair_loss(cfg, c, r, batch, strength_use="smoothing")
  with pytest.raises(ValueError, match="strength.use: expected one of"):
    pairwise.bradley_terry_pair_loss(cfg, c, r, batch, strength_use="flipp")


def test_pal_pair_logits_match_the_plain_formulas():
  import jax.numpy as jnp
  import numpy as np
  from rmjax.tasks.reward_model import get_family  # pylint: disable=g-import-not-at-top
  pal = get_family("pal")
  config = _family_config("pal")
  # PAL-A: prototypes (0, 0) and (2, 4), equal mix: a_u = (1, 2); the chosen response sits on
  # the ideal point, the rejected one 3 away: s = 3 - 0.
  config.pal.variant = "a"
  chosen = {"features": jnp.array([[1.0, 2.0]]), "user_logits": jnp.zeros((1, 2)),
            "prototypes": jnp.array([[[0.0, 0.0], [2.0, 4.0]]])}
  rejected = dict(chosen, features=jnp.array([[1.0, 5.0]]))
  np.testing.assert_allclose(pal.pair_logits(config, chosen, rejected), [3.0], rtol=1e-6)
  assert pal.head_name(config) == "ideal_point"
  # PAL-B: g_1(x) = (1, 0), g_2(x) = (0, 3), equal mix: u = (0.5, 1.5); cos(u, f_c) = 1,
  # cos(u, f_r) = 0; tau = exp(log 2) = 2: s = 2.
  config.pal.variant = "b"
  chosen = {"features": jnp.array([[1.0, 3.0]]), "user_logits": jnp.zeros((1, 2)),
            "user_prototype_features": jnp.array([[[1.0, 0.0], [0.0, 3.0]]]),
            "log_temperature": jnp.log(jnp.array([2.0]))}
  rejected = dict(chosen, features=jnp.array([[3.0, -1.0]]))
  np.testing.assert_allclose(pal.pair_logits(config, chosen, rejected), [2.0], rtol=1e-6)
  assert pal.head_name(config) == "prompt_conditioned_ideal_point"
  config.pal.variant = "c"
  with pytest.raises(ValueError, match="pal.variant: expected one of"):
    get_family("pal").check_config(config)


@pytest.mark.parametrize("family", ["bt", "scaled_bt", "regression", "gpm", "mixture",
                                    "ensemble", "pal:a", "pal:b"])
def test_pair_logit_is_antisymmetric_under_a_swap_of_the_two_sides(family):
  """logit(c, r) = -logit(r, c) for a freshly initialised model of every pair family: the
  logit cannot tell which side was labelled chosen (a model whose prompt features came
  from the chosen response could, and reached eval accuracy 1.0 against a Bayes 0.87)."""
  import jax
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  from rmjax.train import batching  # pylint: disable=g-import-not-at-top
  name, _, variant = family.partition(":")
  config = _tiny(_family_config(name))
  config.data.max_len = 24
  config.data.synthetic.update(num_train=64, num_eval=16)
  if variant:
    config.pal.variant = variant
  task = rm_task.make_task(config)
  graphdef, params = task.init_params(jax.random.PRNGKey(0))
  eval_fn = jax.jit(task.make_eval(graphdef, lambda fn: fn))
  data = task.load_data("/nonexistent")
  batch = batching.select_fields(data.eval.gather(np.arange(8)), task.batch_fields)
  swapped = {k.replace("chosen", "@").replace("rejected", "chosen").replace("@", "rejected"): v
             for k, v in batch.items()}
  logits = np.asarray(eval_fn(params, batch))
  assert np.abs(logits).max() > 1e-4  # Not trivially zero.
  np.testing.assert_allclose(eval_fn(params, swapped), -logits, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["a", "b"])
def test_pal_smoke_trains_on_pairs_from_known_users(tmp_path, variant):
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  config = _family_config("pal")
  config.pal.variant = variant
  config.train.update(num_steps=20, eval_every=20, checkpoint_every=20, tensorboard=False)
  report = rm_task.train_and_evaluate(config, str(tmp_path))
  final, data = report["final_eval"], report["data"]
  # 16 users x 8 held-out pairs, from the users the model trained on (32 pairs each); the
  # group-blind level is below the Bayes-optimal accuracy with the group known.
  assert final["num_pairs"] == 128 and data["pairs_per_user"] == {"train": 32, "eval": 8}
  assert data["users_per_group"] == [5, 11] and data["num_users"] == 16
  assert data["eval"]["group_blind_bayes_accuracy"] < final["bayes_optimal_accuracy"] - 0.1
  # The smoke data (512 pairs) is too small to generalise to new pairs (the default preset
  # does: README); the training loss falls.
  train = [r["loss"] for r in _read_metrics(tmp_path) if r["split"] == "train"]
  assert train[-1] < train[0] - 0.02, train


@pytest.mark.slow
def test_teacher_ensemble_strength_flips_mostly_mislabelled_pairs(tmp_path):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  teacher = reward_model.get_config("ensemble,smoke")
  teacher.mesh.num_devices = 1
  teacher.train.update(num_steps=40, eval_every=40, checkpoint_every=40, tensorboard=False)
  rm_task.train_and_evaluate(teacher, str(tmp_path / "teacher"))
  config = reward_model.get_config("smoke")
  config.train.update(num_steps=20, eval_every=20, checkpoint_every=20, tensorboard=False)
  config.mesh.num_devices = 1  # Not a sharding test: one device compiles ~2x faster.
  config.strength.update(teacher_workdir=str(tmp_path / "teacher"), use="flip")
  report = rm_task.train_and_evaluate(config, str(tmp_path / "student"))
  info = report["data"]["teacher_strength"]
  assert info["members"] == 4 and info["checkpoint_step"] == 40 and info["num_pairs"] == 512
  assert info["flipped"] == int(0.2 * 512)
  # The lowest-strength pairs are enriched in labels that went against the ground truth
  # (about 15% of all labels): at least twice the base rate among the flipped ones.
  base_rate = info["labels_against_truth"] / info["num_pairs"]
  assert info["flipped_against_truth"] / info["flipped"] > 2 * base_rate, info
  assert report["final_eval"]["loss"] < 0.7
