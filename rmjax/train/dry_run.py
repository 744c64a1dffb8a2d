"""Dry runs: compile a job's steps for a real TPU topology on any machine, and report.

`libtpu` (PyPI) carries the TPU compiler. With it,
`jax.experimental.topologies.get_topology_desc("v5e:16x16", platform="tpu")` gives the
devices of a TPU slice on a machine without a TPU (compile-only devices); the run's program
(`rmjax.train.program.build_program`) is built on a mesh of those devices, and its jitted
train step (and eval step) is lowered from abstract inputs (the state of
`Program.abstract_state`, the batch of `Task.batch_layout`: shapes and shardings, nothing
materialised) and compiled by XLA for that TPU, Mosaic kernels included. What the compiler
says is the report:

  memory      per device: arguments, outputs, temporaries and generated code
              (`Compiled.memory_analysis()`), and their total against the chip's HBM:
                total = argument + output - alias + temp + generated code
              (alias: outputs that reuse a donated argument's buffer, the new train state).
  cost        per device and step: FLOPs and bytes accessed (`Compiled.cost_analysis()`,
              of the partitioned per-device program, recomputation by XLA's own
              rematerialisation included; bytes accessed sums the operands and results of
              every top-level instruction, an estimate of HBM traffic).
  MFU bound   the step cannot take less than the roofline time
                t_min = max(flops / peak_flops, bytes_accessed / hbm_bandwidth),
              so its model-FLOPs utilisation (the task's model FLOPs per device and step,
              `Task.flops_per_token` x tokens / chips, over peak_flops x step time) is at
              most  MFU_bound = model_flops / (peak_flops x t_min).  Collectives and
              imperfect overlap only lower it (Chowdhery et al. 2022, PaLM, App. B).
  collectives the all-gathers, reduce-scatters, all-reduces, all-to-alls and collective
              permutes of the compiled HLO: how many (static occurrences in the per-device
              program) and their payload bytes (`rmjax.parallel.communication`).
  compile     seconds to lower and to compile.

When the total exceeds the chip's HBM, the report says by how much and which change would
make it fit (`fit_advice`). XLA on TPU rematerialises on its own when a program would not fit
(instructions named `*.remat*` in the HLO): a temp close to the HBM size means it did, and
its FLOPs then include the recomputation.

Targets are named as Cloud TPU names slices, `<generation>-<n>` (`v4-64`, `v5e-256`,
`v5p-128`, `v6e-64`): n counts TensorCores for v4 and v5p (two per chip: v4-64 is 32 chips)
and chips for v5e and v6e; or by topology, `<generation>:<AxB[xC]>` (`v5e:4x4`). Chips, per
chip (Cloud TPU system architecture pages, https://cloud.google.com/tpu/docs/v4, .../v5e,
.../v5p, .../v6e):

  generation  HBM      HBM bandwidth  peak bf16     TensorCores  topology
  v4          32 GiB   1200 GB/s      275 TFLOP/s   2 (megacore) 3D torus
  v5e         16 GiB    819 GB/s      197 TFLOP/s   1            2D torus
  v5p         95 GiB   2765 GB/s      459 TFLOP/s   2 (megacore) 3D torus
  v6e         32 GiB   1640 GB/s      918 TFLOP/s   1            2D torus

The docs give some capacities in GB and some in GiB; GiB is used for all. A chip's usable
HBM is a little less (XLA's limit on v5e: 15.75 GiB), so a total within a few hundred MiB
of the HBM is a close call.

A job made of several jitted functions reports each as its own step (`DryRunStep`): online
RL's generation, log-probs, update and reward scoring (`Task.dry_run_steps`,
`rmjax.tasks.policy.rl.dry_run_steps`), the evaluation's scoring function
(`rmjax.tasks.reward_model.benchmark_eval.dry_run`).

  report = dry_run(config, task, "v5e-256")      # a JSON-able dict
  print(format_report(report))
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from typing import Any, NamedTuple

import jax
from jax.sharding import NamedSharding
import ml_collections

from rmjax import parallel
from rmjax.parallel import communication
from rmjax.train.program import build_program
from rmjax.train.task import Task

GIB = 1024 ** 3


class TpuChip(NamedTuple):
  """One TPU generation, per chip (see the module docstring for the sources).

  Attributes:
    generation: "v4", "v5e", "v5p" or "v6e".
    hbm_bytes: HBM capacity.
    hbm_bytes_per_s: HBM bandwidth.
    peak_bf16_flops: peak bfloat16 FLOP/s.
    cores_per_chip: TensorCores a slice name counts per chip (2: v4, v5p).
    topology_dims: 2 (2D torus) or 3 (3D torus).
    topology_options: keyword arguments of `get_topology_desc` (v4: one device per chip,
      "megacore", as v5p has by default).
  """
  generation: str
  hbm_bytes: int
  hbm_bytes_per_s: float
  peak_bf16_flops: float
  cores_per_chip: int
  topology_dims: int
  topology_options: tuple[tuple[str, str], ...] = ()


TPU_CHIPS = {
    "v4": TpuChip("v4", 32 * GIB, 1200e9, 275e12, 2, 3, (("chip_config_name", "megacore"),)),
    "v5e": TpuChip("v5e", 16 * GIB, 819e9, 197e12, 1, 2),
    "v5p": TpuChip("v5p", 95 * GIB, 2765e9, 459e12, 2, 3),
    "v6e": TpuChip("v6e", 32 * GIB, 1640e9, 918e12, 1, 2),
}
# Chips -> topology of the slice shapes Cloud TPU offers (2D: v5e, v6e; 3D: v4, v5p).
_TOPOLOGIES = {
    2: {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
        256: "16x16"},
    3: {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
        256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"},
}


class TpuTarget(NamedTuple):
  """A TPU slice to compile for: its name, chip, topology string and number of chips."""
  name: str
  chip: TpuChip
  topology: str
  num_chips: int


class TpuCompilerUnavailable(RuntimeError):
  """libtpu cannot be loaded here, so nothing can be compiled for a TPU."""


class DryRunStep(NamedTuple):
  """One jitted function of a job to compile for the target, from abstract arguments.

  Attributes:
    name: its name in the report ("train", "eval", "generation", "update", "score", ...).
    fn: the `jax.jit` function, its shardings on the target's mesh.
    args: its arguments as `jax.ShapeDtypeStruct`s with shardings (nothing materialised).
    model_flops: the model FLOPs of one call per device (the MFU bound's numerator), or None.
    batch_flag: the config field whose size the step's temporaries scale with (the
      `fit_advice` for this step names it), e.g. "train.batch_size".
    batch_size: that field's value.
    cost_per: what its FLOPs and bytes accessed are per, for the report ("step"). XLA's
      cost analysis counts the body of a loop (`lax.scan`, `lax.while_loop`) once, not
      times its trip count: a step that loops says so here, e.g. "optimiser update (1 of
      16)", and its model FLOPs are of one iteration.
    backward: whether it differentiates (a train or update step): its `fit_advice` then
      offers rematerialisation; a forward-only step (eval, scoring, generation) not.
  """
  name: str
  fn: Any
  args: tuple
  model_flops: float | None
  batch_flag: str
  batch_size: int
  cost_per: str = "step"
  backward: bool = True


def parse_target(name: str) -> TpuTarget:
  """The `TpuTarget` of a slice name (`v5e-256`, `v4-64`) or topology (`v5e:16x16`).

  >>> parse_target("v4-64").topology, parse_target("v4-64").num_chips
  ('v4:2x4x4', 32)
  >>> parse_target("v5e:4x4").num_chips
  16
  """
  match = re.fullmatch(r"(v\d+[a-z]?)([-:])(.+)", str(name).strip())
  chip = TPU_CHIPS.get(match.group(1)) if match else None
  expected = (f"expected <generation>-<n> (e.g. v5e-256, v4-64) or <generation>:<AxB[xC]> "
              f"(e.g. v5e:4x4) with generation in {tuple(TPU_CHIPS)}")
  if chip is None:
    raise ValueError(f"dry_run.target: {expected}, got {name!r}")
  shapes = _TOPOLOGIES[chip.topology_dims]
  if match.group(2) == "-":
    count = int(match.group(3)) if match.group(3).isdigit() else -1
    if count % chip.cores_per_chip or count // chip.cores_per_chip not in shapes:
      sizes = [n * chip.cores_per_chip for n in shapes]
      raise ValueError(f"dry_run.target: {name!r} is not a {chip.generation} slice; its "
                       f"sizes are {chip.generation}-<n> with n in {sizes}")
    chips = count // chip.cores_per_chip
    return TpuTarget(name, chip, f"{chip.generation}:{shapes[chips]}", chips)
  dims = match.group(3).split("x")
  if len(dims) != chip.topology_dims or not all(d.isdigit() and int(d) > 0 for d in dims):
    raise ValueError(f"dry_run.target: {name!r}: a {chip.generation} topology has "
                     f"{chip.topology_dims} positive sizes, e.g. "
                     f"{chip.generation}:{shapes[16]}")
  return TpuTarget(name, chip, name, math.prod(int(d) for d in dims))


def topology_devices(target: TpuTarget) -> list[jax.Device]:
  """The compile-only devices of `target` (one per chip), from libtpu.

  Sets TPU_ACCELERATOR_TYPE (quiets libtpu's start-up on a machine without a TPU) and
  ALLOW_MULTIPLE_LIBTPU_LOAD (several processes may compile at once) unless already set.

  Raises:
    TpuCompilerUnavailable: libtpu is not installed or does not load.
  """
  if importlib.util.find_spec("libtpu") is None:
    raise TpuCompilerUnavailable(
        "dry runs compile with the TPU compiler in libtpu, which is not installed: "
        "pip install 'libtpu==0.0.42.*' (the version jax[tpu] 0.10.2 pins)")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-16")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    topology = topologies.get_topology_desc(target.topology, platform="tpu",
                                            **dict(target.chip.topology_options))
  except Exception as e:  # pylint: disable=broad-except  (libtpu's errors are untyped)
    raise TpuCompilerUnavailable(
        f"libtpu could not describe the topology {target.topology!r}: {e}") from e
  devices = list(topology.devices)
  if len(devices) != target.num_chips:
    raise TpuCompilerUnavailable(f"libtpu gave {len(devices)} devices for "
                                 f"{target.topology!r}, expected {target.num_chips}")
  return devices


def step_collectives(hlo_text: str, num_devices: int) -> dict[str, dict[str, float]]:
  """The collectives of a compiled step by kind: {kind: {"count", "bytes", "max_bytes"}}
  (bytes: the payload, the full arrays gathered or reduced), from
  `rmjax.parallel.communication.collective_stats`; kinds absent from the HLO are left out.

  >>> step_collectives("%ag = bf16[8,128]{1,0} all-gather(%p), replica_groups=[2,4]<=[8]", 8)
  {'all-gather': {'count': 1, 'bytes': 2048, 'max_bytes': 2048}}
  """
  stats = communication.collective_stats(hlo_text, num_devices)
  return {kind: {"count": stats[kind], "bytes": stats[f"{kind}_bytes"],
                 "max_bytes": stats[f"{kind}_max_bytes"]}
          for kind in communication.COLLECTIVES if kind in stats}


def compile_step(step, args: tuple, chip: TpuChip, model_flops: float | None = None
                 ) -> dict[str, Any]:
  """Lowers and compiles the jitted `step` at `args` (abstract) and reports on it.

  Args:
    step: a `jax.jit` function whose shardings are on the target's mesh.
    args: its arguments as `jax.ShapeDtypeStruct`s with shardings.
    chip: the target's chip (HBM, bandwidth, peak).
    model_flops: the model FLOPs of one call per device (the MFU bound's numerator), or
      None (no bound).

  Returns:
    {"lower_s", "compile_s", "memory": {...bytes, "total_bytes", "hbm_bytes",
    "fits", "headroom_bytes"}, "flops", "bytes_accessed", "model_flops", "roofline_s",
    "mfu_bound", "collectives", "rematerialised"} (see the module docstring).
  """
  start = time.perf_counter()
  lowered = step.lower(*args)
  lowered_at = time.perf_counter()
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return _out_of_memory(str(e), args, chip, lowered_at - start,
                          time.perf_counter() - lowered_at)
  compiled_at = time.perf_counter()
  stats = compiled.memory_analysis()
  memory = _memory({name: int(getattr(stats, f"{name}_size_in_bytes"))
                    for name in ("argument", "output", "alias", "temp", "generated_code")},
                   chip)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
  hlo = compiled.as_text()
  # XLA's cost analysis counts a loop body once, whatever its trip count. A step whose
  # model FLOPs are of one iteration (`DryRunStep.cost_per`) is comparable; one whose
  # compiled FLOPs fall well short of its model FLOPs (under 3/4: a layer scan counts one
  # layer of many) is not: no MFU bound.
  undercounted = (bool(re.search(r"\swhile\(", hlo)) and bool(model_flops)
                  and flops < 0.75 * model_flops)
  roofline = max(flops / chip.peak_bf16_flops, accessed / chip.hbm_bytes_per_s)
  return {
      "lower_s": lowered_at - start,
      "compile_s": compiled_at - lowered_at,
      "memory": memory,
      "flops": flops,
      "bytes_accessed": accessed,
      "model_flops": model_flops,
      "roofline_s": roofline,
      "mfu_bound": (model_flops / (chip.peak_bf16_flops * roofline)
                    if model_flops and roofline > 0 and not undercounted else None),
      "collectives": step_collectives(hlo, jax.tree.leaves(args)[0].sharding.num_devices),
      "rematerialised": ".remat" in hlo,
      "loop_undercounted": undercounted,
  }


def _memory(sizes: dict[str, int], chip: TpuChip) -> dict[str, Any]:
  """Per-device sizes with their total against the chip's HBM (the module docstring)."""
  memory = dict(sizes)
  memory["total_bytes"] = (memory["argument"] + memory["output"] - memory["alias"]
                           + memory["temp"] + memory["generated_code"])
  memory["hbm_bytes"] = chip.hbm_bytes
  memory["headroom_bytes"] = chip.hbm_bytes - memory["total_bytes"]
  memory["fits"] = memory["headroom_bytes"] >= 0
  return memory


def _out_of_memory(message: str, args: tuple, chip: TpuChip, lower_s: float,
                   compile_s: float) -> dict[str, Any]:
  """The report of a step the TPU compiler refused for want of HBM.

  XLA stops at "the total memory required for HLO temporaries (121.27G) exceeds available
  HBM (15.75G)" (GiB; the temporaries are that figure) or, after its own rematerialisation
  fell short, at "Used 15.79G of 15.75G hbm" (the temporaries are that less the
  arguments); the arguments are their shards' bytes. A message in neither form leaves the
  temporaries at just over what the HBM has room for. Never "fits"; there are no FLOPs or
  collectives to report.
  """
  argument = int(sum(math.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize
                     for a in jax.tree.leaves(args)))
  temporaries = re.search(r"temporaries \(([\d.]+)G\)", message)
  used = re.search(r"Used ([\d.]+)G of ([\d.]+)G hbm", message)
  available = re.search(r"available HBM \(([\d.]+)G\)", message)
  if temporaries:
    temp = int(float(temporaries.group(1)) * GIB)
  elif used:
    temp = int(float(used.group(1)) * GIB) - argument
    available = used
  else:
    temp = chip.hbm_bytes - argument + 1
  memory = _memory(dict(argument=argument, output=0, alias=0, temp=temp, generated_code=0),
                   chip)
  # Over the chip's HBM, or else over what XLA could use of it (15.75 of v5e's 16 GiB).
  if memory["headroom_bytes"] >= 0:
    usable = (int(float(available.group(available.lastindex)) * GIB) if available
              else chip.hbm_bytes)
    memory["headroom_bytes"] = min(usable - memory["total_bytes"], -1)
  memory["fits"] = False
  return {
      "lower_s": lower_s, "compile_s": compile_s,
      "memory": memory,
      "flops": None, "bytes_accessed": None, "model_flops": None, "roofline_s": None,
      "mfu_bound": None, "collectives": {}, "rematerialised": None, "loop_undercounted": None,
      "compile_error": message.splitlines()[0],
  }


def abstract_batch(task: Task, batch_size: int, sharding: NamedSharding) -> dict[str, Any]:
  """`task.batch_layout(batch_size)` as `jax.ShapeDtypeStruct`s in the batch sharding."""
  if task.batch_layout is None:
    raise ValueError(f"task {task.name!r} has no batch_layout (its batches need its data), "
                     "so it cannot be dry-run")
  return {field: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for field, (shape, dtype) in task.batch_layout(batch_size).items()}


def fit_advice(config: ml_collections.ConfigDict | None, memory: dict[str, int],
               mesh_shape: dict[str, int], num_chips: int, *, step: str = "",
               batch_flag: str = "train.batch_size", batch_size: int | None = None,
               mesh_flag: str = "mesh.shape", backward: bool = True) -> list[str]:
  """What would bring a step's per-device bytes under the chip's HBM ([] if they are).

  Estimates from the breakdown, not recompiled (dry-run the change to check it):
    * the state (the arguments: parameters and optimiser moments) is split over
      fsdp x tensor and replicated over data, so moving the data axis into fsdp divides it
      by `data`;
    * temporaries (activations, a KV cache) scale with the examples per device: a smaller
      `batch_flag` (train.batch_size; an RL update's rl.minibatch_size, a scorer's
      batch_size), or the same batch on a slice twice as large (the new chips in fsdp,
      which also halves the state);
    * rematerialising the layers (`model.remat`, with `model.scan_layers` so that the
      weights are gathered per layer too; `rmjax.models.layer_scan`) keeps about one
      [tokens, d_model] input per layer instead of every intermediate (a step with a
      backward pass, whose config's model has the fields and no remat yet).

  Args:
    config: the run's config (its `batch_flag` value is read when `batch_size` is None).
    memory: the step's `compile_step` memory.
    mesh_shape: {'data', 'fsdp', 'tensor'} sizes.
    num_chips: chips of the target.
    step: the step's name for the verdict ("" = the train step: "does not fit: ...").
    batch_flag, batch_size: the config field the temporaries scale with and its value.
    mesh_flag: the config section of the mesh sizes ("mesh.shape"; configs/evaluate.py:
      "mesh").
    backward: the step differentiates (offer rematerialised layers).

  Returns:
    Lines: the verdict (total, excess, HBM), then one line per change.
  """
  deficit = -memory["headroom_bytes"]
  if deficit <= 0:
    return []
  data, fsdp, _ = (mesh_shape[a] for a in parallel.MESH_AXES)
  state, temp = memory["argument"], memory["temp"]
  enough = lambda saved: "" if saved >= deficit else " (not enough alone)"
  advice = [f"{step + ' step ' if step else ''}does not fit: "
            f"{_size(memory['total_bytes'])} per device is "
            f"{_size(deficit)} over the {_size(memory['hbm_bytes'])} of HBM; changes that "
            "would make it fit (estimates):"]
  if data > 1:
    saved = state * (1 - 1 / data)
    advice.append(f"  --config.{mesh_flag}.data=1 --config.{mesh_flag}.fsdp={fsdp * data}: the "
                  f"state ({_size(state)} per device) split {data}x more, saves "
                  f"~{_size(saved)}{enough(saved)}")
  if batch_size is None:
    batch_size = config
    for field in batch_flag.split("."):
      batch_size = batch_size[field]
  batch, shards = batch_size, data * fsdp
  for factor in (2, 4, 8, 16):
    saved = temp * (1 - 1 / factor)
    if batch % (factor * shards) == 0 and (saved >= deficit or factor == 16):
      advice.append(f"  --config.{batch_flag}={batch // factor} "
                    f"({batch // factor // shards} examples per batch shard): temporaries "
                    f"({_size(temp)}) ~{factor}x smaller, saves ~{_size(saved)}"
                    f"{enough(saved)}")
      break
  saved = temp / 2 + state / 2
  advice.append(f"  a slice of {2 * num_chips} chips with --config.{mesh_flag}.fsdp={2 * fsdp}: "
                f"half the examples and half the state per device, saves ~{_size(saved)}"
                f"{enough(saved)}")
  model = config.get("model") if config is not None else None
  if backward and model and model.get("remat", "none") == "none":
    advice.append(f"  --config.model.scan_layers=True --config.model.remat=full (or save_dots): "
                  f"the backward pass recomputes each layer, weights gathered per layer: "
                  f"most of the {_size(temp)} of temporaries")
  return advice


def _tokens(layout: dict[str, Any], mask_fields) -> int:
  """Padded tokens of a batch: the elements of its token masks."""
  return sum(math.prod(a.shape) for f, a in layout.items() if f in mask_fields)


def default_steps(config: ml_collections.ConfigDict, task: Task, program, num_chips: int, *,
                  eval_step: bool = True) -> list[DryRunStep]:
  """The steps of a task on the program's default step: the train step on a batch of
  train.batch_size examples (`Task.batch_layout`) and the eval (scoring) step on one of
  eval.batch_size; model FLOPs from `Task.flops_per_token` (the eval step's forward pass:
  a third of a training step's)."""
  per_device = lambda layout, share: (
      task.flops_per_token * _tokens(layout, task.token_mask_fields) / num_chips * share
      if task.flops_per_token else None)
  train_batch = abstract_batch(task, config.train.batch_size, program.batch_sharding)
  steps = [DryRunStep("train", program.train_step, (program.abstract_state, train_batch),
                      per_device(train_batch, 1.0), "train.batch_size",
                      config.train.batch_size)]
  if eval_step:
    eval_batch = abstract_batch(task, config.eval.batch_size, program.batch_sharding)
    steps.append(DryRunStep("eval", program.eval_step,
                            (program.abstract_state.params, eval_batch),
                            per_device(eval_batch, 1 / 3), "eval.batch_size",
                            config.eval.batch_size, backward=False))
  return steps


def new_report(target: TpuTarget, mesh_shape: dict[str, int], *, task: str, config_name: str,
               num_params: int, **facts) -> dict[str, Any]:
  """The head of a dry-run report (`compile_steps` adds the steps): target, chip, mesh,
  the job's task name, config name and parameter count, and any further JSON-able facts."""
  return {"kind": "dry_run", "target": target.name, "topology": target.topology,
          "num_chips": target.num_chips, "chip": target.chip._asdict(),
          "mesh": dict(mesh_shape), "task": task, "config_name": config_name,
          "num_params": num_params, **facts}


def compile_steps(report: dict[str, Any], steps, config: ml_collections.ConfigDict | None,
                  *, mesh_flag: str = "mesh.shape") -> dict[str, Any]:
  """Compiles each `DryRunStep` for the report's chip (`compile_step`) into report[name],
  their order in report["steps"], and the `fit_advice` of every step that does not fit
  into report["fit_advice"] (the train step's verdict unnamed, the others' named)."""
  chip = TpuChip(**report["chip"])
  report["steps"] = [step.name for step in steps]
  report["fit_advice"] = []
  for step in steps:
    report[step.name] = compile_step(step.fn, step.args, chip, step.model_flops)
    report[step.name]["cost_per"] = step.cost_per
    report["fit_advice"] += fit_advice(
        config, report[step.name]["memory"], report["mesh"], report["num_chips"],
        step="" if step.name == "train" else step.name, batch_flag=step.batch_flag,
        batch_size=step.batch_size, mesh_flag=mesh_flag, backward=step.backward)
  return report


def dry_run(config: ml_collections.ConfigDict, task: Task, target: str, *,
            eval_step: bool = True) -> dict[str, Any]:
  """Compiles `task`'s steps for `target` from shapes alone.

  The mesh is `config.mesh.shape` over the target's chips (`rmjax.parallel.make_mesh`); the
  program is the run's own (`build_program`), so every mesh and batch check of a real run
  applies. Nothing is materialised: the state is `Program.abstract_state`, the batches
  `Task.batch_layout` (train.batch_size and eval.batch_size examples). A task with its own
  step (online RL) names its jitted pieces in `Task.dry_run_steps`; the others get
  `default_steps` (the train step and the eval step).

  Args:
    config: the run's config (e.g. configs/reward_model.py:pod).
    task: its task: `dry_run_steps`, or `batch_layout` and the program's default step.
    target: a slice name or topology (`parse_target`).
    eval_step: also compile the eval (scoring) step of a default-step task (default True).

  Returns:
    A JSON-able dict: target, chip, mesh, num_params, "steps" (their names, in order) and
    each step's `compile_step` report under its name ("train", "eval"; RL: "generation",
    "log_probs", "update", ...), "fit_advice" (empty when every step fits) and "total_s".
  """
  start = time.perf_counter()
  tpu = parse_target(target)
  if task.dry_run_steps is None and task.make_train_step is not None:
    raise ValueError(f"task {task.name!r} supplies its own step (Task.make_train_step: "
                     "host work between jitted pieces), which cannot be compiled as one "
                     "program, and no Task.dry_run_steps (its jitted pieces)")
  devices = topology_devices(tpu)
  program = build_program(config, task, devices=devices)
  if task.dry_run_steps is not None:
    steps, facts = task.dry_run_steps(program, tpu.num_chips)
  else:
    steps = default_steps(config, task, program, tpu.num_chips, eval_step=eval_step)
    facts = {"train_batch_size": config.train.batch_size,
             "train_tokens_per_step": _tokens(steps[0].args[1], task.token_mask_fields)}
  report = new_report(tpu, program.mesh.shape, task=task.name,
                      config_name=config.get("name", ""), num_params=program.num_params,
                      **facts)
  compile_steps(report, steps, config)
  report["total_s"] = time.perf_counter() - start
  return report


def _size(num_bytes: float) -> str:
  """'1.234 GiB' or '12.3 MiB'."""
  if abs(num_bytes) >= GIB:
    return f"{num_bytes / GIB:.3f} GiB"
  return f"{num_bytes / 1024 ** 2:.1f} MiB"


def format_report(report: dict[str, Any]) -> str:
  """The report of `dry_run` as text (a few lines per step)."""
  chip = report["chip"]
  lines = [f"dry run of {report['config_name'] or report['task']} ({report['task']}, "
           f"{report['num_params']:,} parameters) on {report['target']} "
           f"({report['topology']}, {report['num_chips']} chips, "
           f"{chip['hbm_bytes'] / GIB:.0f} GiB HBM and {chip['peak_bf16_flops'] / 1e12:.0f} "
           f"TFLOP/s bf16 each), mesh {report['mesh']}"]
  for name in report.get("steps", ("train", "eval")):
    step = report.get(name)
    if step is None:
      continue
    mem = step["memory"]
    lines.append(f"{name} step: lowered in {step['lower_s']:.1f} s, compiled in "
                 f"{step['compile_s']:.1f} s")
    lines.append("  per device: " + ", ".join(
        f"{k} {_size(mem[k])}" for k in ("argument", "output", "alias", "temp",
                                               "generated_code")))
    verdict = "fits" if mem["fits"] else "DOES NOT FIT"
    lines.append(f"  total {_size(mem['total_bytes'])} of {_size(mem['hbm_bytes'])} HBM: "
                 f"{verdict} ({_size(abs(mem['headroom_bytes']))} "
                 f"{'to spare' if mem['fits'] else 'over'})"
                 + ("; XLA rematerialised to fit" if step["rematerialised"] else "")
                 + ("" if step["flops"] is not None else " (arguments and temporaries only)"))
    if step["flops"] is None:
      lines.append(f"  the TPU compiler refused it: {step['compile_error']}")
      continue
    bound = step["mfu_bound"]
    lines.append(f"  per device and {step.get('cost_per', 'step')}: "
                 f"{step['flops'] / 1e9:.4g} GFLOP, "
                 f"{step['bytes_accessed'] / 1e9:.4g} GB accessed; roofline "
                 f"{step['roofline_s'] * 1e3:.3g} ms"
                 + (f"; model {step['model_flops'] / 1e9:.4g} GFLOP, MFU bound {bound:.1%}"
                    if bound is not None else "")
                 + (f"; model {step['model_flops'] / 1e9:.4g} GFLOP; a loop (layer scan) "
                    "is counted once by XLA's cost analysis: FLOPs, bytes and roofline "
                    "under-counted, no MFU bound" if step.get("loop_undercounted") else ""))
    for kind, c in step["collectives"].items():
      lines.append(f"  {kind:18s} x{c['count']:<5d} {_size(c['bytes']):>12s} in all, "
                   f"largest {_size(c['max_bytes'])}")
  lines.extend(report["fit_advice"])
  lines.extend(f"note: {note}" for note in report.get("notes", ()))
  lines.append(f"total {report['total_s']:.1f} s")
  return "\n".join(lines)


def write_report(report: dict[str, Any], workdir: str) -> None:
  """workdir/dry_run.json and dry_run.md (`format_report`), written by process 0."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "dry_run.json"), "w") as f:
      json.dump(report, f, indent=2, sort_keys=True)
    with open(os.path.join(workdir, "dry_run.md"), "w") as f:
      f.write(format_report(report) + "\n")


def dry_run_to_workdir(config: ml_collections.ConfigDict, task: Task, workdir: str
                       ) -> dict[str, Any]:
  """`dry_run` of `config.dry_run.target`, written to workdir/dry_run.json and dry_run.md
  (`write_report`); returns the report (the trainer's entry with a dry-run target).
  `config.dry_run.eval_step=False` leaves the eval step out."""
  report = dry_run(config, task, config.dry_run.target,
                   eval_step=config.dry_run.get("eval_step", True))
  write_report(report, workdir)
  return report
