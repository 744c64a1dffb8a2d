"""Sharded training: mesh presets equal one device, checkpoints across meshes, bad configs,
per-host batches, and a 2-process x 2-device run equal to 1 process x 4 devices."""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from configs import reward_model  # noqa: E402  pylint: disable=g-import-not-at-top
from rmjax import data as rm_data  # noqa: E402
from rmjax import parallel  # noqa: E402
from rmjax.parallel import communication  # noqa: E402
from rmjax.tasks import reward_model as rm_task  # noqa: E402
from rmjax.train import batching  # noqa: E402
from rmjax.train import checkpoint as ckpt_lib  # noqa: E402
from rmjax.train import optim  # noqa: E402
from rmjax.train import program as program_lib  # noqa: E402
from rmjax.train import trainer  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-6)
_ONE_DEVICE = {"data": 1, "fsdp": 1, "tensor": 1}


def _config(arg="smoke", **mesh_shape):
  config = reward_model.get_config(arg)
  # SGD at a constant, large learning rate: the update is the (clipped) gradient itself, so
  # equal parameters mean equal gradients. (Step 0 of the warmup schedule would not move the
  # parameters; Adam's first step lr * g / (|g| + eps) would turn float32 rounding noise in a
  # gradient that is exactly 0, such as the scalar head's bias under a pairwise loss, into
  # +-lr on any mesh, one device included.)
  config.optim.update(name="sgd", schedule="constant", learning_rate=0.5)
  if mesh_shape:
    config.mesh.shape.update(mesh_shape)
  return config


@pytest.fixture(scope="module")
def single():
  """The one-device program, its initial state, one training batch and the stepped state."""
  config = _config(**_ONE_DEVICE)
  program = _build_program(config, devices=jax.devices()[:1])
  state = program.init(jax.random.PRNGKey(config.seed))
  data = rm_data.load_preference_data(config.data, workdir="/nonexistent")
  indices = data.train.train_indices(0, config.train.batch_size, config.data_seed)
  batch = _place(data.train, indices, program, config)
  initial = jax.device_get(state)
  new_state, metrics = program.train_step(state, batch)
  return dict(program=program, initial=initial, data=data, indices=indices,
              state=jax.device_get(new_state), metrics=jax.device_get(metrics))


def _build_program(config, devices=None):
  return program_lib.build_program(config, rm_task.make_task(config), devices=devices)


def _place(data, indices, program, config):
  return batching.place_batch(data, indices, program.batch_sharding,
                              rm_task.make_task(config).batch_fields)


def _leaves_with_paths(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def test_cpu_steps_compile_with_the_cpu_options_and_equal_xla_defaults(single):
  """The program's CPU step compiles without YNNPACK fusions (`CPU_COMPILER_OPTIONS`) and
  steps to the state that the same step under XLA's defaults gives."""
  program = single["program"]
  assert program_lib.compiler_options(jax.devices()[0]) == program_lib.CPU_COMPILER_OPTIONS
  config = _config(**_ONE_DEVICE)
  state = program.init(jax.random.PRNGKey(config.seed))
  batch = _place(single["data"].train, single["indices"], program, config)
  assert "ynn_fusion" not in program.train_step.lower(state, batch).compile().as_text()
  optimizer, _ = optim.make_optimizer(config.optim, config.train.num_steps)
  loss_fn = rm_task.make_task(config).make_loss(program.graphdef, lambda fn: fn)
  defaults = jax.jit(program_lib.make_train_step(loss_fn, optimizer))
  new_state, metrics = defaults(state, batch)
  np.testing.assert_allclose(metrics["loss"], single["metrics"]["loss"], **TOL)
  for (path, a), (_, b) in zip(_leaves_with_paths(jax.device_get(new_state)),
                               _leaves_with_paths(single["state"])):
    np.testing.assert_allclose(a, b, **TOL, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("environ,thp_mode,libc,advised", [
    ({}, "madvise", ("glibc", "2.36"), "GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", ("glibc", "2.35"),
     "GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1 "),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "madvise", ("glibc", "2.36"), None),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", ("glibc", "2.36"), None),
    ({}, "always", ("glibc", "2.36"), None),  # every large map gets huge pages already
    ({}, "never", ("glibc", "2.36"), None),  # none can
    ({}, "", ("glibc", "2.36"), None),  # no /sys to say
    ({}, "madvise", ("glibc", "2.34"), None),  # before the tunable
    ({}, "madvise", ("", ""), None),  # not glibc (musl, macOS)
])
def test_cpu_malloc_advice_names_the_tunable_only_where_it_helps(environ, thp_mode, libc,
                                                                 advised):
  advice = program_lib.cpu_malloc_advice(environ, thp_mode, libc)
  if advised is None:
    assert advice is None
  else:
    assert advised in advice and "page-fault" in advice


def test_the_cpu_malloc_tunable_stops_the_page_faults_of_each_call():
  """A jitted call whose 64 MiB output glibc maps afresh each time faults it in 4 KiB pages
  (16,384 faults a call) without `CPU_MALLOC_TUNABLE` and in huge pages with it."""
  if program_lib.cpu_malloc_advice({}) is None:
    pytest.skip("the tunable does nothing here (needs Linux, glibc >= 2.35 and transparent "
                "huge pages in 'madvise' mode)")
  script = (
      "import resource, jax, jax.numpy as jnp\n"
      "f = jax.jit(lambda x: x * 2.0)\n"
      "x = jnp.ones((16 * 2**20,), jnp.float32)\n"
      "f(x).block_until_ready()\n"
      "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
      "for _ in range(4):\n"
      "  f(x).block_until_ready()\n"
      "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)\n")
  faults = {}
  for tunables in ("", program_lib.CPU_MALLOC_TUNABLE):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": tunables}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    faults[tunables] = float(out.stdout.split()[-1])
  assert faults[""] >= 16 * 2**20 * 4 / 4096  # every 4 KiB page of the output, each call
  # Measured 545 against 16,385 (30x fewer); a fragmented machine may miss a few huge pages.
  assert faults[program_lib.CPU_MALLOC_TUNABLE] < faults[""] / 4, faults


@pytest.mark.parametrize("preset", ["data_parallel", "fsdp", "fsdp_tensor"])
def test_one_step_under_each_mesh_preset_equals_one_device(single, preset):
  assert len(jax.devices()) == 8
  config = _config(f"smoke,{preset}")
  program = _build_program(config)
  expected_mesh = {"data_parallel": (8, 1, 1), "fsdp": (1, 8, 1), "fsdp_tensor": (1, 4, 2)}
  assert tuple(program.mesh.shape.values()) == expected_mesh[preset]
  state = program.init(jax.random.PRNGKey(config.seed))
  # Initialised directly in the target shardings, with the same values as on one device.
  jax.tree.map(lambda a, s: assert_sharding(a, s), state, program.state_shardings)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), jax.device_get(state),
               single["initial"])

  batch = _place(single["data"].train, single["indices"], program, config)
  assert {s.data.shape[0] for s in batch["chosen_tokens"].addressable_shards} == {
      config.train.batch_size // parallel.num_batch_shards(program.mesh)}
  compiled = program.train_step.lower(state, batch).compile()
  new_state, metrics = compiled(state, batch)
  for name in ("loss", "accuracy", "grad_norm"):
    np.testing.assert_allclose(metrics[name], single["metrics"][name], **TOL, err_msg=name)
  for (path, a), (_, b) in zip(_leaves_with_paths(jax.device_get(new_state)),
                               _leaves_with_paths(single["state"])):
    np.testing.assert_allclose(a, b, **TOL, err_msg=jax.tree_util.keystr(path))
  # The step really moved the parameters (a test of equal but unchanged values is void).
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), single["state"].params,
                       single["initial"].params)
  assert max(jax.tree.leaves(moved)) > 1e-4

  # Parameters really are sharded as the preset says, and stay so after the step.
  embedding = new_state.params["backbone"]["embedding"]
  gate = new_state.params["backbone"]["layers"][0]["mlp"]["gate"]
  if preset == "data_parallel":
    # The spec names fsdp, but that axis has size 1: every device holds everything.
    assert embedding.sharding.is_fully_replicated and gate.sharding.is_fully_replicated
    assert {s.data.shape for s in embedding.addressable_shards} == {embedding.shape}
  else:
    assert "fsdp" in embedding.sharding.spec  # [vocab, embed]: embed over fsdp.
    assert all(s.data.shape[1] < embedding.shape[1] for s in embedding.addressable_shards)
    fsdp, tensor = program.mesh.shape["fsdp"], program.mesh.shape["tensor"]
    # gate [embed, mlp]: embed over fsdp, mlp over tensor.
    assert {s.data.shape for s in gate.addressable_shards} == {
        (gate.shape[0] // fsdp, gate.shape[1] // tensor)}
    trace = new_state.opt_state[1][0].trace["backbone"]["layers"][0]["mlp"]["gate"]
    assert trace.sharding.spec == gate.sharding.spec  # The momentum follows the parameter.

  # What the step sends: weights, not activations. Data parallel: one reduction of the
  # gradients (~4P bytes of payload); FSDP: a gather of the weights and a reduction of the
  # gradients (~8P); every all-gather moves at most one parameter (without the activation
  # constraints of program.sharded_compute, XLA all-gathered [2B, L, d_ff] activations here:
  # 25 x 4P of payload).
  stats = communication.collective_stats(compiled.as_text(), program.mesh.size)
  param_bytes = 4 * program.num_params
  largest_param = 4 * max(np.prod(x.shape) for x in jax.tree.leaves(new_state.params))
  assert stats.get("all-gather_max_bytes", 0) <= largest_param, stats
  if preset != "fsdp_tensor":  # There, activations are all-reduced over tensor (Megatron).
    assert stats["payload_bytes"] <= {"data_parallel": 1.1, "fsdp": 2.2}[preset] * param_bytes
    assert stats["payload_bytes"] >= param_bytes  # The gradients are reduced.


def assert_sharding(array, sharding):
  assert array.sharding.is_equivalent_to(sharding, array.ndim), (array.sharding, sharding)


def test_checkpoint_saved_on_one_mesh_restores_on_another(tmp_path):
  fsdp = _build_program(_config(data=1, fsdp=8, tensor=1))
  state = fsdp.init(jax.random.PRNGKey(3))
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(1, state, force=True)
  checkpointer.close()

  other = _build_program(_config(data=4, fsdp=1, tensor=2))
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  restored = checkpointer.restore(1, other.abstract_state)
  checkpointer.close()
  jax.tree.map(assert_sharding, restored, other.state_shardings)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), jax.device_get(restored),
               jax.device_get(state))
  # gate [embed, mlp] = [32, 64]: saved in 8 row blocks (fsdp 8), now in 2 column blocks
  # (tensor 2), each replicated over the 4 data devices.
  gate = restored.params["backbone"]["layers"][0]["mlp"]["gate"]
  assert {s.data.shape for s in gate.addressable_shards} == {(32, 32)}
  saved_gate = state.params["backbone"]["layers"][0]["mlp"]["gate"]
  assert {s.data.shape for s in saved_gate.addressable_shards} == {(4, 64)}


@pytest.mark.parametrize("shape, overrides, message", [
    ({"data": 3, "fsdp": 1, "tensor": 1}, {},
     r"needs 3 devices, 8 are available; set mesh.shape so that data x fsdp x tensor = 8"),
    ({"data": 4, "fsdp": 2, "tensor": 1}, {"batch_size": 12},
     r"train.batch_size=12 does not split over the 8 batch shards.*"
     r"--config.train.batch_size=16"),
    ({"data": 1, "fsdp": -1, "tensor": 2}, {"batch_size": 6},
     r"train.batch_size=6 does not split over the 4 batch shards.*\(data x fsdp = 1 x 4\)"),
])
def test_bad_mesh_or_batch_fails_before_anything_is_built(tmp_path, shape, overrides, message):
  config = _config(**shape)
  config.train.update(overrides)
  with pytest.raises(ValueError, match=message):
    trainer.train_and_evaluate(config, str(tmp_path), rm_task.make_task(config))
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_bad_batch_at_the_cli_is_one_clear_line(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4")
  env.pop("RMJAX_TRACEBACK", None)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train_reward_model", "--config",
       "configs/reward_model.py:smoke,fsdp", "--config.train.batch_size=10",
       f"--workdir={tmp_path}"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "error: train.batch_size=10 does not split over the 4 batch shards" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_each_process_loads_only_its_rows():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharding = parallel.batch_sharding(mesh)
  # One process holds every row; the rows each device holds are its batch shard.
  np.testing.assert_array_equal(parallel.process_rows(sharding, 8), np.arange(8))
  index_map = sharding.devices_indices_map((8,))
  assert sorted((s[0].start, s[0].stop) for s in index_map.values()) == [
      (0, 2), (0, 2), (2, 4), (2, 4), (4, 6), (4, 6), (6, 8), (6, 8)]
  # The eval index batches are those of eval_batches (one home for the layout: the data).
  data = rm_data.load_preference_data(_config().data, workdir="/nonexistent")
  for (indices, valid), batch in zip(rm_data.eval_index_batches(data.eval.num_examples, 48),
                                     data.eval.eval_batches(48)):
    gathered = data.eval.gather(indices, valid)
    assert gathered.keys() == batch.keys()
    for k in batch:
      np.testing.assert_array_equal(gathered[k], batch[k], err_msg=k)


def test_distributed_settings_from_config_environment_and_cluster():
  s = parallel.distributed_settings(_config(), environ={})
  assert (s.mode, s.source) == ("single", "none")
  config = _config()
  config.distributed.update(coordinator_address="host0:1234", num_processes=4, process_id=3)
  s = parallel.distributed_settings(config, environ={})
  assert (s.mode, s.source, s.coordinator_address, s.num_processes, s.process_id) == (
      "explicit", "config", "host0:1234", 4, 3)
  env = {"RMJAX_COORDINATOR_ADDRESS": "localhost:5", "RMJAX_NUM_PROCESSES": "2",
         "RMJAX_PROCESS_ID": "1"}
  s = parallel.distributed_settings(_config(), environ=env)
  assert (s.mode, s.source, s.num_processes, s.process_id) == ("explicit", "environment", 2, 1)
  assert parallel.distributed_settings(
      None, environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}).mode == "auto"
  assert parallel.distributed_settings(
      None, environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}).mode == "single"
  assert parallel.distributed_settings(
      None, environ={"TPU_WORKER_HOSTNAMES": "a,b,c,d"}).source == "cluster"
  with pytest.raises(ValueError, match=r"RMJAX_PROCESS_ID: expected 0 <= process_id < .*=2"):
    parallel.distributed_settings(None, environ={**env, "RMJAX_PROCESS_ID": "2"})
  config.distributed.coordinator_address = "host0"
  with pytest.raises(ValueError, match="host:port"):
    parallel.distributed_settings(config, environ={})
  with pytest.raises(ValueError, match=r"unknown fields \['coordinator'\]"):
    parallel.distributed_settings({"distributed": {"coordinator": "x"}}, environ={})
  # Single process: nothing to initialise, even though JAX is already running here.
  assert parallel.initialize_distributed(_config(), environ={}).mode == "single"


_METRIC_TIMING = ("steps_per_s", "tokens_per_s", "real_tokens_per_s")


def _metrics(workdir):
  from rmjax.train import read_metrics  # pylint: disable=g-import-not-at-top
  return [{k: v for k, v in r.items() if k not in _METRIC_TIMING}
          for r in read_metrics(str(workdir))]


def _start(args, env_extra):
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  for k in ("RMJAX_TRACEBACK", "RMJAX_COORDINATOR_ADDRESS", "RMJAX_NUM_PROCESSES",
            "RMJAX_PROCESS_ID", "XLA_FLAGS"):
    env.pop(k, None)
  # The suite's compile setting (conftest.py) still applies; device flags do not.
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
          if f.startswith("--xla_backend_optimization_level")]
  if kept:
    env["XLA_FLAGS"] = " ".join(kept)
  env.update(env_extra)
  return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)


def _run(args, env_extra, timeout, proc=None):
  """Runs `python -m args` (or waits for `proc`, started by `_start`); (code, out, err)."""
  proc = proc or _start(args, env_extra)
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, 9)  # The launcher's own group; it stops its children on exit.
    out, err = proc.communicate()
    pytest.fail(f"{args[0]} timed out after {timeout} s:\n{err[-3000:]}")
  return proc.returncode, out, err


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume_from_their_checkpoint(tmp_path):
  common = ["--config", "configs/reward_model.py:smoke,fsdp", "--config.train.log_every=2",
            "--config.train.eval_every=6", "--config.train.checkpoint_every=3",
            "--config.train.tensorboard=False", "--config.checkpoint.async_save=False",
            "--config.eval.batch_size=32", "--config.data.synthetic.num_eval=64",
            # Batches cut to 18 or 20 tokens by their longest sequence: both processes must
            # pick the same width for every step (else the global arrays would not match).
            "--config.data.length_buckets=12,16,18,20"]
  launcher = ["experiments.launch_local_multihost", "--num_processes=2",
              "--devices_per_process=2", f"--log_dir={tmp_path / 'logs'}", "--timeout=240", "--"]
  multi = tmp_path / "multi"
  # The one-process reference runs meanwhile (its own workdir; compared at the end).
  single = tmp_path / "single"
  single_args = ["experiments.train_reward_model", *common, "--config.train.num_steps=8",
                 f"--workdir={single}"]
  single_env = {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4"}
  single_proc = _start(single_args, single_env)
  code, _, err = _run([*launcher, *common, "--config.train.num_steps=6", f"--workdir={multi}"],
                      {}, timeout=300)
  logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
  assert code == 0, err[-3000:] + logs[-3000:]
  saved = sorted(int(p.name) for p in (multi / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [3, 6]
  # Steps 0-5 were cut to 18 or 20 tokens (both processes picked the same width each step).
  first = json.loads((multi / "report.json").read_text())["length_buckets"]["widths_used"]
  assert first["train"] == {"18": 5, "20": 1}
  # Each process loaded only its half of every batch of 16 (fsdp 4 = 2 devices per process).
  assert "process 0 of 2 loads rows [0, 8) of every training batch of 16" in err
  assert "process 1 of 2 loads rows [8, 16) of every training batch of 16" in logs
  # Resume both processes from the step-6 checkpoint and go on to step 8.
  code, _, err = _run([*launcher, *common, "--config.train.num_steps=8", f"--workdir={multi}"],
                      {}, timeout=300)
  assert code == 0, err[-3000:]
  assert "resumed from checkpoint step 6" in err
  report = json.loads((multi / "report.json").read_text())
  assert report["processes"] == 2 and report["devices"] == 4
  assert report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  # The resumed steps (6, 7) were cut to 20 tokens, its evaluation's batches to 20 and 18.
  assert report["length_buckets"]["widths_used"] == {"train": {"20": 2},
                                                     "eval": {"18": 1, "20": 1}}

  code, _, err = _run(single_args, single_env, timeout=300, proc=single_proc)
  assert code == 0, err[-3000:]
  multi_records, single_records = _metrics(multi), _metrics(single)
  assert [(r["step"], r["split"]) for r in multi_records] == [
      (r["step"], r["split"]) for r in single_records]
  assert [r["step"] for r in multi_records if r["split"] == "eval"] == [6, 8]
  for a, b in zip(multi_records, single_records):
    assert a.keys() == b.keys()
    for k in a:
      if isinstance(a[k], str):
        assert a[k] == b[k]
      else:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6,
                                   err_msg=f"{a['step']} {a['split']} {k}")


def test_launcher_stops_its_processes_on_timeout_and_on_failure(tmp_path):
  from experiments import launch_local_multihost as launcher  # pylint: disable=g-import-not-at-top
  marker = "import time; time.sleep(61.25)"
  code = launcher.launch(["-n", "1", marker], num_processes=2, devices_per_process=1,
                         module="timeit", log_dir=str(tmp_path), timeout=3)
  assert code == 124
  left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
  assert not left.strip(), f"processes left running: {left}"
  assert launcher.launch([], num_processes=2, devices_per_process=1,
                         module="experiments.no_such_module", log_dir=str(tmp_path),
                         timeout=60) == 1
  with pytest.raises(ValueError, match="num_processes"):
    launcher.launch([], num_processes=0, devices_per_process=1)
  env = launcher.process_env(1, 2, 4, 1234, base={})
  assert env["RMJAX_PROCESS_ID"] == "1" and env["JAX_NUM_CPU_DEVICES"] == "4"
  assert parallel.distributed_settings(None, environ=env).coordinator_address == (
      "localhost:1234")


def test_config_mesh_token_and_distributed_block():
  config = reward_model.get_config("gpm,smoke,fsdp_tensor")
  assert config.name == "gpm_smoke_fsdp_tensor"
  assert config.mesh.shape.to_dict() == {"data": 1, "fsdp": -1, "tensor": 2}
  assert reward_model.get_config("pod").mesh.shape.to_dict() == {"data": 4, "fsdp": 16,
                                                                  "tensor": 4}
  assert reward_model.get_config("pod,fsdp").mesh.shape.to_dict() == {"data": 1, "fsdp": -1,
                                                                      "tensor": 1}
  with pytest.raises(ValueError, match=r"\[family,\]preset\[,backbone\]\[,mesh\]"):
    reward_model.get_config("smoke,fsdp,fsdp_tensor")
  assert parallel.distributed_settings(config, environ={}).mode == "single"


def _hlo_computations(hlo_text):
  """{computation name: its text} of a compiled HLO module, and the names of the while
  loops' bodies."""
  comps = {}
  for block in re.split(r"\n(?=\S)", hlo_text):
    match = re.match(r"(?:ENTRY )?%?([\w.\-]+)", block)
    if match:
      comps[match.group(1)] = block
  return comps, set(re.findall(r"body=%?([\w.\-]+)", hlo_text))


@pytest.fixture(scope="module")
def three_layers():
  """One step of a 3-layer smoke model on one device (unrolled, no remat)."""
  config = _config(**_ONE_DEVICE)
  config.model.num_layers = 3
  program = _build_program(config, devices=jax.devices()[:1])
  state = program.init(jax.random.PRNGKey(config.seed))
  data = rm_data.load_preference_data(config.data, workdir="/nonexistent")
  indices = data.train.train_indices(0, config.train.batch_size, config.data_seed)
  new_state, metrics = program.train_step(state, _place(data.train, indices, program, config))
  return dict(data=data, indices=indices, state=jax.device_get(new_state),
              metrics=jax.device_get(metrics))


def test_layer_scan_of_alternating_windows_on_8_devices_equals_one_device_unrolled():
  """Gemma-2's pattern (a sliding window on layers 0 and 2 of 4) under model.scan_layers on
  the fsdp preset: the scan steps over pairs of blocks (2 steps) and the step's values and
  gradients equal the unrolled blocks' on one device; each pair's weights are gathered in
  the loop bodies."""
  def config_of(preset, **model):
    config = _config(preset)
    config.model.update(num_layers=4, sliding_window=3, sliding_window_layers=[0, 2],
                        **model)
    return config

  one = config_of("smoke")
  one.mesh.shape.update(_ONE_DEVICE)
  program = _build_program(one, devices=jax.devices()[:1])
  data = rm_data.load_preference_data(one.data, workdir="/nonexistent")
  indices = data.train.train_indices(0, one.train.batch_size, one.data_seed)
  state = program.init(jax.random.PRNGKey(one.seed))
  want_state, want = jax.device_get(program.train_step(state, _place(data.train, indices,
                                                                     program, one)))
  config = config_of("smoke,fsdp", scan_layers=True, remat="full")
  program = _build_program(config)
  state = program.init(jax.random.PRNGKey(config.seed))
  compiled = program.train_step.lower(state, _place(data.train, indices, program,
                                                    config)).compile()
  new_state, metrics = compiled(state, _place(data.train, indices, program, config))
  for name in ("loss", "accuracy", "grad_norm"):
    np.testing.assert_allclose(metrics[name], want[name], **TOL, err_msg=name)
  for (path, a), (_, b) in zip(_leaves_with_paths(jax.device_get(new_state)),
                               _leaves_with_paths(want_state)):
    np.testing.assert_allclose(a, b, **TOL, err_msg=jax.tree_util.keystr(path))
  comps, bodies = _hlo_computations(compiled.as_text())
  in_loops = sum(len(re.findall(r" all-gather(?:-start)?\(", text))
                 for name, text in comps.items() if name in bodies)
  assert in_loops >= 2 * 7  # two blocks' 7 fsdp-split weights per step


@pytest.mark.parametrize("preset, remat", [("fsdp", "full"), ("fsdp_tensor", "save_dots")])
def test_per_layer_gathers_in_a_layer_scan_equal_one_device(three_layers, preset, remat):
  """model.scan_layers on 8 devices: the step's values and gradients (SGD: the update is
  the gradient) equal today's one-device step, and the weights of the blocks are gathered
  inside the scan's loop, one layer at a time, not all at the start of the step."""
  config = _config(f"smoke,{preset}")
  config.model.update(num_layers=3, scan_layers=True, remat=remat)
  program = _build_program(config)
  state = program.init(jax.random.PRNGKey(config.seed))
  batch = _place(three_layers["data"].train, three_layers["indices"], program, config)
  compiled = program.train_step.lower(state, batch).compile()
  new_state, metrics = compiled(state, batch)
  for name in ("loss", "accuracy", "grad_norm"):
    np.testing.assert_allclose(metrics[name], three_layers["metrics"][name], **TOL,
                               err_msg=name)
  for (path, a), (_, b) in zip(_leaves_with_paths(jax.device_get(new_state)),
                               _leaves_with_paths(three_layers["state"])):
    np.testing.assert_allclose(a, b, **TOL, err_msg=jax.tree_util.keystr(path))
  # The parameter tree is unchanged: one entry per layer, each sharded at rest.
  gate = new_state.params["backbone"]["layers"][2]["mlp"]["gate"]
  assert gate.shape == (32, 64) and "fsdp" in gate.sharding.spec

  comps, bodies = _hlo_computations(compiled.as_text())
  gathers = {name: len(re.findall(r" all-gather(?:-start)?\(", text))
             for name, text in comps.items()}
  in_loops = sum(n for name, n in gathers.items() if name in bodies)
  elsewhere = sum(n for name, n in gathers.items() if name not in bodies)
  # A block has 7 weights split over fsdp (q, k, v, out, gate, up, down; the norms are
  # replicated): gathered in the forward loop's body, and again in the backward loop's with
  # rematerialisation; outside the loops only the embedding and the head.
  assert in_loops >= 7, gathers
  assert elsewhere <= 3, gathers
