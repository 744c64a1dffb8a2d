"""Dry runs (`rmjax.train.dry_run`): the steps compiled for real TPU topologies by libtpu's
compiler on this CPU, their reported bytes and FLOPs against hand counts, and the Pallas TPU
all-pairs kernel compiled by Mosaic.

The compile-only tests need libtpu (a test dependency: requirements.txt, pyproject's `test`
extra); where it cannot load they skip with the reason.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rmjax.parallel import communication
from rmjax.train import dry_run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NO_LIBTPU = ("libtpu (the TPU compiler; pip install 'libtpu==0.0.42.*', a test dependency) "
             "cannot be loaded here")


def _devices(target: str) -> list[jax.Device]:
  """The compile-only devices of `target`, or a skip where libtpu cannot load."""
  try:
    return dry_run.topology_devices(dry_run.parse_target(target))
  except dry_run.TpuCompilerUnavailable as e:
    pytest.skip(f"{NO_LIBTPU}: {e}")


def _pod_config(small: bool):
  """configs/reward_model.py:pod; `small`: the same structure (bf16 compute, f32 params,
  AdamW, a data x fsdp x tensor mesh) at 2 layers, d 512, 128 tokens, 32 pairs on 16 chips
  (a 12 s compile instead of 100+ s). Per-device weight dims stay multiples of 128, the TPU
  tile, so that no padding blurs the byte counts (head dim 64 split over tensor pads 2x)."""
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config("pod")
  if small:
    config.model.update(d_model=512, num_layers=2, num_heads=4, d_ff=1536)
    config.data.update(max_len=128, max_prompt_len=96)
    config.train.batch_size = 32
    config.eval.batch_size = 32
    config.mesh.shape.update(data=2, fsdp=4, tensor=2)
  return config


def _hand_estimate(config, num_params: int) -> dict[str, float]:
  """Per-device bytes of a reward-model train step, counted by hand.

  state: float32 parameters and AdamW's two float32 moments, split over fsdp x tensor
    (replicated over data): 3 * 4 * num_params / (fsdp * tensor).
  activations (no rematerialisation): per token and layer, bfloat16 copies of what the
    backward pass reads: the block input and its norm, the MLP input and its norm (4 D),
    q, k, v and the attention context (4 D / t), the MLP gate, up and their product
    (3 F / t), and the attention probabilities over L keys, a / t heads, bfloat16 and the
    float32 softmax (6 a L / t bytes); times the tokens of a batch shard,
    2 * B / (data * fsdp) sequences of L tokens (Korthikanti et al. 2022, Sec. 4.1, without
    dropout masks).
  """
  mesh, model = config.mesh.shape, config.model
  d, f, a, t = model.d_model, model.d_ff, model.num_heads, mesh.tensor
  length = config.data.max_len
  state = 3 * 4 * num_params / (mesh.fsdp * mesh.tensor)
  per_token_layer = 2 * (4 * d + 4 * d / t + 3 * f / t) + 6 * a * length / t
  tokens = 2 * config.train.batch_size / (mesh.data * mesh.fsdp) * length
  return {"state": state, "activations": per_token_layer * tokens * model.num_layers}


# --- No libtpu needed. ---

@pytest.mark.parametrize("name, topology, chips", [
    ("v4-64", "v4:2x4x4", 32), ("v5e-256", "v5e:16x16", 256), ("v5p-128", "v5p:4x4x4", 64),
    ("v6e-64", "v6e:8x8", 64), ("v5e:4x8", "v5e:4x8", 32)])
def test_parse_target(name, topology, chips):
  target = dry_run.parse_target(name)
  assert (target.topology, target.num_chips) == (topology, chips)


@pytest.mark.parametrize("name, message", [
    ("v9-8", "generation in"), ("v5e-12", "its sizes are"), ("v4-63", "its sizes are"),
    ("v5p:4x4", "3 positive sizes")])
def test_parse_target_rejects_bad_names(name, message):
  with pytest.raises(ValueError, match=message):
    dry_run.parse_target(name)


def test_step_collectives_reads_tpu_hlo():
  """The forms of libtpu's compiled HLO: iota and mesh-axis replica groups, async starts."""
  hlo = "\n".join([
      "  %ag.1 = bf16[16,2048]{1,0:T(8,128)(2,1)} all-gather(%p), channel_id=8, "
      "replica_groups=mesh['axis_0'=1,'axis_1'=16,'axis_2'=16], device_ids=([4,16,4]T(1,0,2))"
      " {'axis_1'}, dimensions={0}",
      "  %ag.2 = f32[8]{0} all-gather(%q), replica_groups=[16,16]<=[64,4]T(1,0), "
      "dimensions={0}",
      "  %ar = bf16[16,2048,2048]{2,1,0} all-reduce(%x), replica_groups=[64,4]<=[256]",
      "  %one = f32[4]{0} all-reduce(%y), replica_groups=[256,1]<=[256]",
      "  %cp = (s32[2]{0}, s32[6]{0}) collective-permute-start(%z), source_target_pairs={{0,1}}",
      "  ROOT %rs = bf16[128]{0} reduce-scatter(%w), replica_groups=[32,8]<=[256]",
      "  %fusion = f32[4]{0} fusion(%ag.2), kind=kLoop",
  ])
  assert dry_run.step_collectives(hlo, 256) == {
      "all-reduce": {"count": 1, "bytes": 16 * 2048 * 2048 * 2,
                     "max_bytes": 16 * 2048 * 2048 * 2},
      "all-gather": {"count": 2, "bytes": 16 * 2048 * 2 + 8 * 4, "max_bytes": 16 * 2048 * 2},
      "reduce-scatter": {"count": 1, "bytes": 8 * 128 * 2, "max_bytes": 8 * 128 * 2},
      "collective-permute": {"count": 1, "bytes": 24, "max_bytes": 24},
  }
  stats = communication.collective_stats(hlo, 256)
  # Ring bytes: the all-gather over mesh axis_1 (16 devices) sends 15/16 of its result.
  first = communication.collective_stats(hlo.splitlines()[0], 256)
  assert first["ring_bytes_per_device"] == pytest.approx(15 / 16 * 16 * 2048 * 2)
  assert "all-reduce" in stats and stats["all-reduce"] == 1  # the 1-device group is skipped


def test_fit_advice_names_the_excess_and_the_changes():
  config = _pod_config(small=False)
  gib = dry_run.GIB
  memory = dict(argument=2 * gib, output=2 * gib, alias=2 * gib, temp=18 * gib,
                generated_code=0)
  memory = dry_run._memory(memory, dry_run.TPU_CHIPS["v5e"])  # pylint: disable=protected-access
  assert memory["total_bytes"] == 20 * gib and not memory["fits"]
  advice = dry_run.fit_advice(config, memory, {"data": 4, "fsdp": 16, "tensor": 4}, 256)
  assert "4.000 GiB over the 16.000 GiB" in advice[0]
  assert "--config.mesh.shape.fsdp=64" in advice[1] and "saves ~1.500 GiB" in advice[1]
  assert "(not enough alone)" in advice[1]
  # 512 pairs over 64 batch shards: halving the batch saves 9 GiB of the 18.
  assert "--config.train.batch_size=256" in advice[2] and "~9.000 GiB" in advice[2]
  assert dry_run.fit_advice(config, dry_run._memory(  # pylint: disable=protected-access
      dict(memory, temp=gib), dry_run.TPU_CHIPS["v5e"]), {"data": 4, "fsdp": 16,
                                                          "tensor": 4}, 256) == []
  assert any("--config.model.scan_layers=True --config.model.remat=full" in line
             for line in advice)


@pytest.mark.parametrize("message, temp_gib, over_mib", [
    # After XLA's own rematerialisation fell short (the pod at 2k tokens, scan + save_dots).
    ("RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: XLA:TPU compile permanent error. Ran "
     "out of memory in memory space hbm. Used 15.79G of 15.75G hbm. Exceeded hbm capacity "
     "by 38.81M.", 15.79 - 1.0, 40.96),
    ("RESOURCE_EXHAUSTED: the total memory required for HLO temporaries (121.27G) exceeds "
     "available HBM (15.75G)", 121.27, (121.27 + 1.0 - 16.0) * 1024),
])
def test_refused_step_reads_the_compilers_numbers(message, temp_gib, over_mib):
  """A step the TPU compiler refused never "fits", and its report has the temporaries and
  the excess from the compiler's message (arguments: 1 GiB of float32 here): over the chip's
  16 GiB, or, within it, over the 15.75 GiB XLA could use."""
  state = jax.ShapeDtypeStruct((2 ** 28,), jnp.float32,
                               sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  report = dry_run._out_of_memory(  # pylint: disable=protected-access
      message, (state,), dry_run.TPU_CHIPS["v5e"], 1.0, 2.0)
  memory = report["memory"]
  assert memory["argument"] == dry_run.GIB and not memory["fits"]
  assert memory["temp"] / dry_run.GIB == pytest.approx(temp_gib, abs=1e-6)
  assert -memory["headroom_bytes"] / 2 ** 20 == pytest.approx(over_mib, abs=0.01)
  assert report["flops"] is None and report["compile_error"].startswith("RESOURCE_EXHAUSTED")


# --- Compiled by libtpu for TPU topologies. ---

@pytest.mark.parametrize("target", ["v5e-4", "v4-8", "v5p-8", "v6e-4"])
def test_sharded_matmul_flops_bytes_and_roofline(target):
  """A [4096, 2048] x [2048, 8192] bfloat16 matmul over a 2 x 2 mesh of 4 chips."""
  devices = _devices(target)
  mesh = jax.make_mesh((2, 2), ("data", "model"), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  m, k, n = 4096, 2048, 8192
  x = jax.ShapeDtypeStruct((m, k), jnp.bfloat16, sharding=NamedSharding(mesh, P("data")))
  w = jax.ShapeDtypeStruct((k, n), jnp.bfloat16,
                           sharding=NamedSharding(mesh, P(None, "model")))
  step = jax.jit(jnp.matmul, out_shardings=NamedSharding(mesh, P("data", "model")))
  chip = dry_run.parse_target(target).chip
  report = dry_run.compile_step(step, (x, w), chip, model_flops=2 * m * n * k / 4)
  # Each device multiplies its [m/2, k] rows by its [k, n/2] columns: no communication.
  assert report["flops"] == pytest.approx(2 * m * n * k / 4, rel=0.01)
  assert report["memory"]["argument"] == (m // 2 * k + k * n // 2) * 2
  assert report["memory"]["output"] == m // 2 * n // 2 * 2
  assert report["collectives"] == {}
  # Bytes accessed: at least the operands read and the result written once.
  assert report["bytes_accessed"] >= report["memory"]["argument"] + report["memory"]["output"]
  roofline = max(report["flops"] / chip.peak_bf16_flops,
                 report["bytes_accessed"] / chip.hbm_bytes_per_s)
  assert report["roofline_s"] == pytest.approx(roofline)
  assert report["mfu_bound"] == pytest.approx(2 * m * n * k / 4 / chip.peak_bf16_flops
                                              / roofline, rel=1e-6)
  assert 0 < report["mfu_bound"] <= 1.0 + 1e-9


def test_small_pod_dry_run_against_hand_estimate():
  """The pod preset's structure at a compile-friendly size on v5e-16 (2 x 4 x 2 mesh)."""
  _devices("v5e-16")
  from rmjax.tasks import reward_model  # pylint: disable=g-import-not-at-top
  config = _pod_config(small=True)
  report = dry_run.dry_run(config, reward_model.make_task(config), "v5e-16",
                           eval_step=False)
  train = report["train"]
  memory = train["memory"]
  estimate = _hand_estimate(config, report["num_params"])
  # The state is the arguments, but for the batch shard, a few scalars and tile padding of
  # the small vectors: measured 2.6 % over.
  assert memory["argument"] == pytest.approx(estimate["state"], rel=0.05)
  assert memory["alias"] >= 0.95 * estimate["state"]  # the donated state, updated in place
  # Activations: XLA keeps less than the no-rematerialisation count (measured 0.30x here,
  # 0.24x to 0.65x at other sizes; it fuses the softmax and recomputes elementwise values).
  assert 0.2 * estimate["activations"] <= memory["temp"] <= estimate["activations"]
  assert memory["fits"] and report["fit_advice"] == []
  # FSDP gathers weights, tensor parallelism all-reduces activations.
  assert {"all-gather", "all-reduce"} <= set(train["collectives"])
  # Model FLOPs (6 N + attention) are the compiled FLOPs to within 10 %.
  assert train["flops"] == pytest.approx(train["model_flops"], rel=0.1)
  assert 0 < train["mfu_bound"] <= 1


def test_layer_scan_with_full_remat_keeps_less_than_one_layer_of_activations():
  """model.scan_layers + remat="full" on the small pod structure (4 layers, 128 pairs):
  the backward pass recomputes each block, so the temporaries are less than ONE layer's
  no-remat activations (measured 0.0117 GiB vs 0.047; unrolled without remat: 0.0963 GiB,
  about 2 of the 4 layers' worth, XLA's fusion keeping less than the count)."""
  _devices("v5e-16")
  from rmjax.tasks import reward_model  # pylint: disable=g-import-not-at-top
  config = _pod_config(small=True)
  config.model.update(num_layers=4, scan_layers=True, remat="full")
  config.train.batch_size = 128
  report = dry_run.dry_run(config, reward_model.make_task(config), "v5e-16",
                           eval_step=False)
  train, estimate = report["train"], _hand_estimate(config, report["num_params"])
  assert train["memory"]["argument"] == pytest.approx(estimate["state"], rel=0.05)
  assert train["memory"]["temp"] < estimate["activations"] / config.model.num_layers
  # The scan is a loop, whose body XLA's cost analysis counts once: flagged, no MFU bound.
  assert train["loop_undercounted"] and train["flops"] < train["model_flops"]
  assert train["mfu_bound"] is None
  assert "counted once" in dry_run.format_report(report)


def test_step_that_does_not_fit_is_reported_with_advice():
  """XLA refuses a step whose temporaries exceed the HBM; the report says by how much."""
  _devices("v5e-16")
  from rmjax.tasks import reward_model  # pylint: disable=g-import-not-at-top
  config = _pod_config(small=True)
  config.train.batch_size = 65536  # 8192 pairs per batch shard
  report = dry_run.dry_run(config, reward_model.make_task(config), "v5e-16",
                           eval_step=False)
  train = report["train"]
  assert "RESOURCE_EXHAUSTED" in train["compile_error"] and train["flops"] is None
  memory = train["memory"]
  assert not memory["fits"] and memory["temp"] > dry_run.TPU_CHIPS["v5e"].hbm_bytes
  # Arguments: the state as in the fitting case, plus the batch shard (4 x 8192 x 128 int32).
  estimate = _hand_estimate(config, report["num_params"])
  assert memory["argument"] == pytest.approx(estimate["state"] + 4 * 8192 * 128 * 4, rel=0.05)
  assert report["fit_advice"][0].startswith("does not fit")
  assert any("--config.train.batch_size=" in line for line in report["fit_advice"])
  assert "the TPU compiler refused it" in dry_run.format_report(report)


@pytest.mark.slow
def test_pod_preset_dry_run_fits_its_topology():
  """configs/reward_model.py:pod on v5e-256 (4 x 16 x 4): compiles (about 100 s on a quiet
  2-core CPU, 190 s on a busy one) and fits in 16 GiB after XLA's own rematerialisation."""
  _devices("v5e-256")
  from rmjax.tasks import reward_model  # pylint: disable=g-import-not-at-top
  config = _pod_config(small=False)
  report = dry_run.dry_run(config, reward_model.make_task(config), "v5e-256",
                           eval_step=False)
  memory = report["train"]["memory"]
  estimate = _hand_estimate(config, report["num_params"])
  assert report["num_params"] == 1_233_758_209
  assert memory["argument"] == pytest.approx(estimate["state"], rel=0.02)
  assert memory["fits"]
  # 45 GiB of activations without rematerialisation; XLA rematerialises to fit.
  assert report["train"]["rematerialised"]
  assert 0.2 * estimate["activations"] <= memory["temp"] <= estimate["activations"]
  assert report["train"]["flops"] >= report["train"]["model_flops"]


@pytest.mark.parametrize("target", ["v5e-4", "v5p-8"])
def test_pallas_tpu_all_pairs_kernel_compiles_with_mosaic(target):
  """The all-pairs loss and its gradient, the Pallas TPU kernel inside shard_map."""
  from rmjax.kernels import all_pairs_loss_sharded  # pylint: disable=g-import-not-at-top
  devices = _devices(target)
  mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                       axis_types=(jax.sharding.AxisType.Explicit,))
  items = jax.ShapeDtypeStruct((4096,), jnp.float32, sharding=NamedSharding(mesh, P("data")))
  loss_and_grad = jax.jit(jax.value_and_grad(lambda s, y: all_pairs_loss_sharded(
      s, y, mesh=mesh, axis_names="data", implementation="pallas_tpu")))
  hlo = loss_and_grad.lower(items, items).compile().as_text()
  assert hlo.count('custom_call_target="tpu_custom_call"') == 1  # the Mosaic kernel
  # Rows stay local, the columns (scores and labels) are all-gathered: 2 x [4096] float32.
  assert dry_run.step_collectives(hlo, len(devices))["all-gather"]["bytes"] == 2 * 4096 * 4


def test_splash_attention_train_step_compiles_with_mosaic():
  """attention='tpu_splash': the reward-model train step (forward and backward) on a v5e-4
  mesh data x fsdp x tensor = 2 x 1 x 2 lowers and compiles, the splash kernels (forward,
  dq, dkv: one each for the model's one layer) by Mosaic, inside shard_map: per device
  16 sequences (32 = 16 pairs over 2 data shards) x 1 head (2 over 2 tensor shards), the
  24 tokens padded to 128, head dim 128 (program.sharded_compute enters the mesh)."""
  devices = _devices("v5e-4")
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  from rmjax.train.program import build_program  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config("smoke")
  config.model.update(d_model=256, num_heads=2, attention="tpu_splash")
  config.mesh.shape.update(data=2, fsdp=1, tensor=2)
  task = rm_task.make_task(config)
  program = build_program(config, task, devices=devices)
  batch = dry_run.abstract_batch(task, config.train.batch_size, program.batch_sharding)
  assert batch["chosen_tokens"].shape == (16, 24) and config.model.num_layers == 1
  hlo = program.train_step.lower(program.abstract_state, batch).compile().as_text()
  assert hlo.count('custom_call_target="tpu_custom_call"') == 3
  for kernel in ("splash_mha_fwd_segmented_residuals", "splash_mha_dq_segmented",
                 "splash_mha_dkv_segmented"):
    assert f"%{kernel}" in hlo and "f32[16,128,128]" in hlo.split(f"%{kernel}")[1][:200]


@pytest.mark.slow
def test_experiment_dry_run_writes_its_report(tmp_path):
  """`--config.dry_run.target` through the experiment script: dry_run.json, no training."""
  _devices("v5e-4")
  workdir = tmp_path / "rm"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train_reward_model",
       "--config", "configs/reward_model.py:smoke", "--config.dry_run.target=v5e-4",
       "--workdir", str(workdir)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert result.returncode == 0, result.stderr[-2000:]
  assert "dry run of smoke" in result.stdout and "train step" in result.stdout
  report = json.loads((workdir / "dry_run.json").read_text())
  assert report["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
  assert report["train"]["memory"]["fits"]
  assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()


def test_mesh_that_does_not_map_onto_the_torus_is_a_clear_error():
  """On v5p-128 (a 4x4x4 torus) a tensor axis of 2 would split a physical axis."""
  devices = _devices("v5p-128")
  from rmjax import parallel  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="does not map onto the physical topology"):
    parallel.make_mesh({"data": 2, "fsdp": 16, "tensor": 2}, devices)
  assert dict(parallel.make_mesh({"data": 4, "fsdp": 4, "tensor": 4}, devices).shape) == {
      "data": 4, "fsdp": 4, "tensor": 4}


# --- The RL step's pieces and the evaluation's scoring (compiled by libtpu). ---
#
# Both at d_model 128 with one 128-wide head and d_ff 256 (every weight dim a multiple of
# the TPU tile), 1 layer, the byte tokenizer's 259 ids: the policy has 259 * 128 (tied
# embedding) + 4 * 128^2 + 3 * 128 * 256 + 2 * 128 (layer) + 128 (final norm) = 197,376
# parameters, the reward model that plus its scalar head (128 + 1): 197,505.
POLICY_PARAMS, REWARD_MODEL_PARAMS = 197_376, 197_505


def _tile_sized(config):
  config.model.update(d_model=128, num_heads=1, d_ff=256, num_layers=1)
  return config


def _reward_model_run(tmp_path) -> pathlib.Path:
  """A reward-model run that is only its config.json (configs/reward_model.py:smoke, tile
  sized, sequences of 128 tokens): all a dry run of its scoring reads. Its scorer's int32
  [8 k, 128] batches fill whole (8, 128) TPU tiles."""
  sys.path.insert(0, str(REPO_ROOT))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "rm"
  workdir.mkdir()
  config = _tile_sized(reward_model.get_config("smoke"))
  config.data.max_len = 128
  (workdir / "config.json").write_text(config.to_json_best_effort())
  return workdir


def _evaluate_config(rm_dir, target="v5e:2x2"):
  sys.path.insert(0, str(REPO_ROOT))
  from configs import evaluate  # pylint: disable=g-import-not-at-top
  config = evaluate.get_config("smoke")
  config.model.workdir = str(rm_dir)
  config.batch_size = 32  # 8 sequences per device
  config.dry_run.target = target
  return config


def test_evaluate_dry_run_scoring_bytes_are_the_params_and_the_batch(tmp_path):
  """The scoring function of a run, from its config.json alone, on v5e:2x2 (4 chips on
  'data'): each device holds the float32 params and its quarter of the batch."""
  _devices("v5e:2x2")
  from rmjax.tasks.reward_model import benchmark_eval  # pylint: disable=g-import-not-at-top
  config = _evaluate_config(_reward_model_run(tmp_path))
  report = benchmark_eval.dry_run(config, str(tmp_path / "eval"))
  assert report["steps"] == ["score"] and report["num_params"] == REWARD_MODEL_PARAMS
  assert report["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
  # int32 tokens and mask, config.batch_size / 4 = 8 rows of max_len 128 each.
  batch = 2 * 8 * 128 * 4
  memory = report["score"]["memory"]
  # Measured 0.4 % over: tile padding of the [128] norm scales and the head's bias.
  assert memory["argument"] == pytest.approx(4 * REWARD_MODEL_PARAMS + batch, rel=0.01)
  assert memory["argument"] >= 4 * REWARD_MODEL_PARAMS + batch
  assert memory["fits"] and report["fit_advice"] == []
  # Forward FLOPs of the batch's tokens on each device, within 10 % of the compiled ones.
  assert report["score"]["flops"] == pytest.approx(report["score"]["model_flops"], rel=0.1)
  text = (tmp_path / "eval" / "dry_run.md").read_text()
  assert "score step" in text and "fits" in text
  assert json.loads((tmp_path / "eval" / "dry_run.json").read_text())["steps"] == ["score"]


def test_evaluate_dry_run_that_does_not_fit_names_the_excess(tmp_path):
  """A 2-layer, 2048-token run scored 8192 sequences at a time: the first layer's attention
  probabilities alone, 2048 rows per device x 2048^2 float32, are 32 GiB (XLA: 36.05 GiB of
  temporaries); the compiler refuses it and the advice names the excess, config.batch_size
  and the mesh of configs/evaluate.py. (One layer would fit: with last-token pooling XLA
  keeps only the last query row of the last layer.)"""
  _devices("v5e:2x2")
  from rmjax.tasks.reward_model import benchmark_eval  # pylint: disable=g-import-not-at-top
  rm_dir = _reward_model_run(tmp_path)
  run = json.loads((rm_dir / "config.json").read_text())
  run["data"].update(max_len=2048, max_prompt_len=1024)
  run["model"]["num_layers"] = 2
  (rm_dir / "config.json").write_text(json.dumps(run))
  config = _evaluate_config(rm_dir)
  config.batch_size = 8192  # 2048 sequences per device
  report = benchmark_eval.dry_run(config, str(tmp_path / "eval"))
  memory = report["score"]["memory"]
  assert not memory["fits"] and memory["temp"] > dry_run.TPU_CHIPS["v5e"].hbm_bytes
  excess = memory["total_bytes"] - dry_run.TPU_CHIPS["v5e"].hbm_bytes
  advice = report["fit_advice"]
  assert advice[0].startswith("score step does not fit: ") and (
      f"{dry_run._size(excess)} over the 16.000 GiB" in advice[0])  # pylint: disable=protected-access
  assert any("--config.batch_size=" in line for line in advice)
  assert any("--config.mesh.data=1 --config.mesh.fsdp=4" in line for line in advice)
  assert not any("remat" in line for line in advice)  # A forward pass: nothing to recompute.
  assert "DOES NOT FIT" in (tmp_path / "eval" / "dry_run.md").read_text()


HF_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "hf_decoder"


def _hf_config_only(tmp_path):
  """A HF LlamaForSequenceClassification directory holding only config.json (the smollm2
  fixture's, widened so that every weight dim is a multiple of the TPU's 128 lanes: vocab
  2048, d 128, 2 layers, 2 heads of 128, 1 kv head, d_ff 256, tied embeddings), and its
  parameter count by hand."""
  hf_config = json.loads((HF_FIXTURES / "smollm2" / "config.json").read_text())
  hf_config.update(architectures=["LlamaForSequenceClassification"], num_labels=1,
                   vocab_size=2048, hidden_size=128, head_dim=128, num_attention_heads=2,
                   num_key_value_heads=1, intermediate_size=256, num_hidden_layers=2)
  directory = tmp_path / "llama_config_only"
  directory.mkdir()
  (directory / "config.json").write_text(json.dumps(hf_config))
  v, d, h, kv, k, f = 2048, 128, 2, 1, 128, 256
  layer = d * h * k + 2 * d * kv * k + h * k * d + 3 * d * f + 2 * d  # q, k, v, o, MLP, norms
  return directory, v * d + 2 * layer + d + d  # + the final norm and the score head [1, d]


def test_evaluate_dry_run_of_a_hf_checkpoint_from_its_config_json_alone(tmp_path):
  """model.checkpoint, a directory with config.json and no weights: scoring compiles on
  v5e:2x2 (4 chips on 'data'); each device holds the float32 params and its quarter of
  the batch of model.max_len tokens."""
  _devices("v5e:2x2")
  from rmjax.tasks.reward_model import benchmark_eval  # pylint: disable=g-import-not-at-top
  directory, num_params = _hf_config_only(tmp_path)
  config = _evaluate_config(tmp_path)
  config.model.update(workdir="", checkpoint=str(directory), max_len=64, max_prompt_len=32)
  report = benchmark_eval.dry_run(config, str(tmp_path / "eval"))
  assert report["steps"] == ["score"] and report["num_params"] == num_params
  assert report["checkpoint"] == str(directory) and "workdirs" not in report
  batch = 2 * 8 * 64 * 4  # int32 tokens and mask, 32 / 4 = 8 rows of 64
  memory = report["score"]["memory"]
  # Measured 0.16 % over (TPU tile padding of the small arrays).
  assert memory["argument"] == pytest.approx(4 * num_params + batch, rel=0.01)
  assert memory["argument"] >= 4 * num_params + batch
  assert memory["fits"] and report["fit_advice"] == []
  # Forward FLOPs of the batch's tokens on each device: XLA counts 1.7 % more.
  assert report["score"]["flops"] == pytest.approx(report["score"]["model_flops"], rel=0.05)


def _rl_config(rm_dir, algorithm="grpo", target="v5e:2x2"):
  """configs/rl.py:smoke, tile sized, rewarded by the reward model of `rm_dir` (a run
  that is only its config.json), with a dry-run target."""
  sys.path.insert(0, str(REPO_ROOT))
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import rl  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.policy import rewards  # pylint: disable=g-import-not-at-top
  config = _tile_sized(rl.get_config("smoke"))
  config.rl.algorithm = algorithm
  config.dry_run.target = target
  config.rewards.sources = ml_collections.ConfigDict(
      {"rm": rewards.source_config("reward_model", workdir=str(rm_dir))})
  config.rewards.source_order = "rm"
  return config


def test_rl_dry_run_compiles_generation_log_probs_update_and_scoring(tmp_path):
  """One RL step's jitted pieces on v5e:2x2 (4 chips on 'data'), through the trainer:
  B 8 prompts of P 8 tokens x G 4 samples of T 6 tokens = N 32 rows, 8 per device."""
  _devices("v5e:2x2")
  from rmjax.tasks import policy  # pylint: disable=g-import-not-at-top
  rm_dir = _reward_model_run(tmp_path)
  workdir = tmp_path / "rl"
  report = policy.train_and_evaluate(_rl_config(rm_dir), str(workdir))
  assert report["steps"] == ["generation", "log_probs", "update", "score/rm"]
  assert report["num_params"] == POLICY_PARAMS and report["notes"] == []
  assert (report["rows"], report["prompt_width"], report["response_tokens"]) == (32, 8, 6)
  params = 4 * POLICY_PARAMS  # float32, whole on every device of the data-parallel mesh
  # Generation: the params, 2 prompts' int32 tokens and mask, the key. Measured 0.6 % over
  # (TPU tile padding of the [128] norm scales and of the short [rows, 8 or 14] arrays), as
  # for the update below.
  generation = report["generation"]["memory"]
  assert generation["argument"] == pytest.approx(params + 2 * (2 * 8 * 4) + 8, rel=0.01)
  # Update: params and Adam's two moments, 8 rows of int32 tokens and bool mask [8, 14],
  # int32 response tokens and bool response mask [8, 6], float32 old and reference
  # log-probs and advantages [8, 6]; beta and the key.
  rows = 8 * 14 * (4 + 1) + 8 * 6 * (4 + 1) + 3 * 8 * 6 * 4 + 4 + 8
  update = report["update"]["memory"]
  assert update["argument"] == pytest.approx(3 * params + rows, rel=0.015)
  assert update["alias"] >= 3 * params  # the state is donated and updated in place
  # Scoring: the reward model's float32 params and its scorer's batch (32 sequences of the
  # run's max_len 128, int32 tokens and mask), 8 per device; as the evaluation's (0.4 %).
  score = report["score/rm"]["memory"]
  assert score["argument"] == pytest.approx(4 * REWARD_MODEL_PARAMS + 2 * 8 * 128 * 4,
                                            rel=0.01)
  # Forward passes: the model count (6 N + attention, a third) leaves out the tied LM
  # head's logits over 259 ids, so XLA counts a little more (measured 7 % and 9 %).
  for name in ("generation", "log_probs"):
    assert 1.0 <= report[name]["flops"] / report[name]["model_flops"] <= 1.25
  # The update (one minibatch of all 32 rows, 8 per device) is a forward and a backward
  # pass over the rows log_probs runs forward: about 3x its FLOPs, not 12x (each device
  # computing the whole minibatch, before its rows were constrained to the batch layout).
  assert report["update"]["flops"] / report["log_probs"]["flops"] == pytest.approx(3, rel=0.2)
  assert all(report[name]["memory"]["fits"] for name in report["steps"])
  assert report["fit_advice"] == []
  text = (workdir / "dry_run.md").read_text()
  assert "optimiser update (1 of 1)" in text and "score/rm step" in text
  assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()


def test_rl_dry_run_of_ppo_adds_the_values_and_notes_unscored_sources(tmp_path):
  """PPO's critic adds the values step (the value head is in the update's state); a
  reward-model source without a workdir is not compiled, and the report says so."""
  _devices("v5e:2x2")
  from rmjax.tasks import policy  # pylint: disable=g-import-not-at-top
  config = _rl_config("", algorithm="ppo")
  config.rl.minibatch_size = 16  # 2 optimiser updates of 16 rows, 4 per device.
  report = policy.train_and_evaluate(config, str(tmp_path / "rl"))
  assert report["steps"] == ["generation", "log_probs", "values", "update"]
  assert report["num_params"] == POLICY_PARAMS + 128 + 1  # the value head
  assert report["update"]["cost_per"] == "optimiser update (1 of 2)"
  assert len(report["notes"]) == 1 and "rewards.sources.rm: no workdir" in report["notes"][0]
  assert report["values"]["memory"]["fits"] and report["update"]["memory"]["fits"]


def test_rl_dry_run_compiles_the_scoring_of_a_pretrained_source(tmp_path):
  """A "pretrained" reward source (a HF directory, here config.json alone) adds its scoring
  step: the float32 params and its batch (32 sequences of max_len 64, 8 per device)."""
  _devices("v5e:2x2")
  from rmjax.tasks import policy  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.policy import rewards  # pylint: disable=g-import-not-at-top
  directory, num_params = _hf_config_only(tmp_path)
  config = _rl_config("")
  config.rewards.sources.rm = rewards.source_config(
      "pretrained", checkpoint=str(directory), max_len=64, max_prompt_len=32)
  report = policy.train_and_evaluate(config, str(tmp_path / "rl"))
  assert report["steps"] == ["generation", "log_probs", "update", "score/rm"]
  assert report["notes"] == []
  score = report["score/rm"]["memory"]
  assert score["argument"] == pytest.approx(4 * num_params + 2 * 8 * 64 * 4, rel=0.01)
  assert score["fits"]
  config.rewards.sources.rm.checkpoint = ""
  report = policy.train_and_evaluate(config, str(tmp_path / "rl_no_checkpoint"))
  assert "score/rm" not in report["steps"]
  assert report["notes"] == ["rewards.sources.rm: no checkpoint, its scoring is not compiled "
                             "(give --config.rewards.sources.rm.checkpoint=<a HF directory "
                             "with config.json>)"]


@pytest.mark.slow
@pytest.mark.parametrize("script, flags, steps", [
    ("train_policy_rl", ["--config", "configs/rl.py:smoke"],
     ["generation", "log_probs", "update"]),
    ("evaluate_reward_model", ["--config", "configs/evaluate.py:smoke",
                               "--config.batch_size=32"], ["score"])])
def test_rl_and_evaluate_experiments_dry_run(tmp_path, script, flags, steps):
  """`--config.dry_run.target` through the RL and the evaluation scripts: nothing trained
  first (no reference SFT run, no reward model), nothing scored, dry_run.json written."""
  _devices("v5e-4")
  if script == "evaluate_reward_model":
    flags = [*flags, f"--config.model.workdir={_reward_model_run(tmp_path)}"]
  workdir = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "-m", f"experiments.{script}", *flags,
       "--config.dry_run.target=v5e-4", "--workdir", str(workdir)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert result.returncode == 0, result.stderr[-2000:]
  assert "dry run of" in result.stdout
  report = json.loads((workdir / "dry_run.json").read_text())
  assert report["steps"] == steps and report["fit_advice"] == []
  assert sorted(p.name for p in workdir.iterdir() if p.name != "config.json") == [
      "dry_run.json", "dry_run.md"]


@pytest.mark.slow
@pytest.mark.parametrize("job", ["sft", "dpo", "rl"])
def test_policy_pod_presets_compile_and_fit_their_topology(tmp_path, job):
  """configs/{sft,dpo,rl}.py:pod on v5e-256 (4 x 16 x 4): every step of the job compiles
  for the slice and fits its 16 GiB: SFT's and DPO's train step, RL's generation, log-probs
  and update (the one that did not fit before the layer scan with full remat; its rewards
  have no workdir here). On a quiet 2-core CPU: SFT 49 s, DPO 59 s, RL 99 s."""
  _devices("v5e-256")
  sys.path.insert(0, str(REPO_ROOT))
  import importlib  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import policy  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{job}").get_config("pod")
  config.dry_run.target = "v5e-256"
  if job != "rl":
    config.dry_run.eval_step = False
  report = policy.train_and_evaluate(config, str(tmp_path))
  assert report["num_params"] == 1_333_889_024
  assert report["mesh"] == {"data": 4, "fsdp": 16, "tensor": 4}
  expected = {"sft": ["train"], "dpo": ["train"],
              "rl": ["generation", "log_probs", "update"]}[job]
  assert report["steps"] == expected
  for name in expected:
    memory = report[name]["memory"]
    assert memory["fits"] and memory["total_bytes"] <= memory["hbm_bytes"], (name, memory)
  assert (tmp_path / "dry_run.json").exists()
