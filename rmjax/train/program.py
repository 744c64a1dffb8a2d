"""The sharded program of a run: mesh, shardings, and the jitted init, train and eval steps.

The same program runs on one CPU, one host or a multi-host mesh: the mesh comes from
`config.mesh`, parameters and optimiser state are created directly in their shardings
(`jax.eval_shape`, then `jax.jit(init, out_shardings=...)`), the train step is jitted with
in/out shardings and a donated state, and metrics and eval outputs come back replicated so
that every process can read them.
"""

from collections.abc import Mapping
from collections.abc import Sequence
import functools
import os
import platform
from typing import Any, NamedTuple

from absl import logging
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import ml_collections
import optax

from rmjax import models
from rmjax import parallel
from rmjax.models import layer_scan
from rmjax.train import optim
from rmjax.train.state import TrainState
from rmjax.train.task import Task


class Program(NamedTuple):
  """What `build_program` makes from a config, a task and a mesh.

  Attributes:
    mesh: the ('data', 'fsdp', 'tensor') mesh.
    batch_sharding: batches split along their leading axis over ('data', 'fsdp').
    graphdef: the model's static graph definition.
    num_params: parameter count.
    param_specs: `PartitionSpec` of every parameter.
    state_shardings: `TrainState` of `NamedSharding`s (step, rng and the task state
      replicated, parameters by the task's specs, optimiser state like the parameters it
      tracks).
    abstract_state: `TrainState` of `jax.ShapeDtypeStruct`s with those shardings (the
      restore target of a checkpoint).
    init: `(rng) -> TrainState` in `state_shardings`: a jitted fresh init, or the task's
      pretrained parameters (`Task.load_params`) with a fresh optimiser state.
    train_step: `(state, batch) -> (state, metrics)`, jitted with in/out shardings and the
      state donated, metrics replicated; or the task's own step (`Task.make_train_step`).
    eval_step: `(params, batch) -> outputs`, jitted; outputs replicated.
    schedule: the learning rate of a train step (`Task.updates_per_step` updates each).
  """
  mesh: jax.sharding.Mesh
  batch_sharding: NamedSharding
  graphdef: Any
  num_params: int
  param_specs: Any
  state_shardings: TrainState
  abstract_state: TrainState
  init: Any
  train_step: Any
  eval_step: Any
  schedule: Any


def check_batch_sizes(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """Batch sizes against the mesh's batch shards, and positive intervals, before compiling."""
  shards = parallel.num_batch_shards(mesh)
  for name in ("train.batch_size", "eval.batch_size"):
    section, field = name.split(".")
    size = config[section][field]
    if size <= 0 or size % shards:
      suggestion = max(shards, -(-max(size, 1) // shards) * shards)
      raise ValueError(
          f"{name}={size} does not split over the {shards} batch shards of the mesh "
          f"(data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']}); set {name} to a "
          f"positive multiple of {shards} (e.g. --config.{name}={suggestion}) or change "
          "mesh.shape (the tensor axis does not split the batch)")
  for name in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
    if config.train[name] <= 0:
      raise ValueError(f"train.{name}: expected a positive integer, got {config.train[name]}")


def sharded_compute(fn, param_shardings, example_sharding: NamedSharding,
                    layer_rules: Sequence[tuple[str, Any]] | None = None):
  """`fn(params, *inputs)` laid out as FSDP + tensor parallelism wants it.

  Weights are gathered over ('data', 'fsdp') where they are used (`param_shardings`: the
  rest-state specs with those axes removed, `parallel.without_axes`; their 'tensor' split
  stays), and the inputs and outputs, [N, ...] with N the examples or sequences, are held
  split along the batch axes. Without these constraints XLA may keep a weight split along
  its 'embed' axis and move the activations instead (all-gathers of [2B, L, D] per layer:
  measured on the smoke model); with them, an FSDP step moves weights (all-gather in the
  forward pass, reduce of the gradients in the backward pass) and every device works on its
  own sequences. The gradient of the gather is the reduction back to the sharded layout.

  With `layer_rules` (the logical-axis rules of a model whose blocks run as a layer scan,
  `TransformerConfig.scan_layers`), fn is traced inside
  `rmjax.models.layer_scan.per_layer_gathers`: the scan gathers each block's weights inside
  its body, one layer at a time; `param_shardings` then leaves the block weights in their
  rest layout (`compute_shardings`).

  `fn` runs with the mesh as the context's abstract mesh (`jax.sharding.get_abstract_mesh()`),
  so that model code which must place itself, a Pallas kernel inside `jax.shard_map`
  (`attention="tpu_splash"`), finds it.
  """

  def sharded(params, *inputs):
    params = jax.lax.with_sharding_constraint(params, param_shardings)
    inputs = jax.lax.with_sharding_constraint(inputs, example_sharding)
    with jax.sharding.use_abstract_mesh(example_sharding.mesh.abstract_mesh):
      if layer_rules is None:
        outputs = fn(params, *inputs)
      else:
        with layer_scan.per_layer_gathers(example_sharding.mesh, layer_rules):
          outputs = fn(params, *inputs)
    return jax.lax.with_sharding_constraint(outputs, example_sharding)

  return sharded


def compute_shardings(param_specs: Any, mesh: jax.sharding.Mesh, *,
                      per_layer: bool = False) -> Any:
  """Where `sharded_compute` holds each parameter while computing with it.

  The rest-state spec without the batch axes ('data', 'fsdp'): gathered over them, split
  over 'tensor' as at rest. With per_layer (a layer scan gathers the block weights itself,
  `rmjax.models.layer_scan`), the weights under a transformer's `layers` keep their rest
  spec.

  Args:
    param_specs: `PartitionSpec` pytree of the parameters at rest.
    mesh: the run's mesh.
    per_layer: leave the block weights (`layer_scan.is_layer_path`) at rest (default False).

  Returns:
    A `NamedSharding` pytree with the structure of param_specs.
  """

  def sharding(path, spec):
    if per_layer and layer_scan.is_layer_path(path):
      return NamedSharding(mesh, spec)
    return NamedSharding(mesh, parallel.without_axes(spec))

  return jax.tree_util.tree_map_with_path(sharding, param_specs,
                                          is_leaf=lambda x: isinstance(x, PartitionSpec))


# XLA options of the jitted steps on CPU. YNNPACK's fusions (XLA's default on x86 CPUs in
# jax 0.10) made the default reward model's steps slower than XLA's own dot and loop
# emitters on the 2-core CPU (benchmarks/cpu_step_side_by_side, interleaved A/B): value and
# grad -11% at 32 pairs x 384 tokens (-20% on top of `models.gated_mlp`), no change at
# 64 x 24; the forward -37% at 128 tokens but +40% at 1024 (not profiled yet).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _cpu_options_supported() -> bool:
  """Whether this jaxlib's XLA accepts `CPU_COMPILER_OPTIONS` on CPU (an experimental flag
  that a later XLA may rename or drop; then the steps compile with XLA's defaults)."""
  try:
    cpu = jax.local_devices(backend="cpu")[0]
    jax.jit(lambda x: x + 1).lower(jax.device_put(1.0, cpu)).compile(
        compiler_options=CPU_COMPILER_OPTIONS)
  except Exception as error:  # pylint: disable=broad-exception-caught
    logging.warning("XLA does not accept %s (%s); compiling with its defaults",
                    CPU_COMPILER_OPTIONS, error)
    return False
  return True


# glibc's malloc serves each allocation above its mmap threshold (at most 32 MiB) with a fresh
# mmap and unmaps it on free, so every CPU step page-faults XLA's whole temporary buffer
# again, 4 KiB at a time (default reward model, 32 pairs x 128 tokens on the 2-core CPU: a
# 225 MB temporary, 57,000 faults and ~90 ms of system time per 185 ms step). With this
# tunable malloc asks for transparent huge pages on those maps (`madvise`; glibc >= 2.35):
# 2 MiB faults, the same step 133-170 ms (README, "The CPU step against PyTorch"). It takes
# effect only at process start, from the environment: the README's commands and `.ci/run`
# set it; `cpu_malloc_advice` says when a CPU run goes without it.
CPU_MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"


def cpu_malloc_advice(environ: Mapping[str, str] | None = None,
                      thp_mode: str | None = None,
                      libc: tuple[str, str] | None = None) -> str | None:
  """Why and how to set `CPU_MALLOC_TUNABLE`, or None when it is set or would do nothing.

  It does something on Linux with glibc >= 2.35 when transparent huge pages are in
  "madvise" mode (with "always" every large map gets them already; with "never" none can).

  Args:
    environ: the environment (default `os.environ`).
    thp_mode: the bracketed mode of /sys/kernel/mm/transparent_hugepage/enabled (default:
      read from there; "" when it cannot be read).
    libc: (name, version) as `platform.libc_ver()` gives them (default: this process's).

  Returns:
    A one-paragraph message naming the variable to set, or None.

  >>> cpu_malloc_advice({}, "madvise", ("glibc", "2.36")).split(":")[0]
  'CPU steps page-fault their temporary buffers every step'
  >>> cpu_malloc_advice({"GLIBC_TUNABLES": CPU_MALLOC_TUNABLE}, "madvise", ("glibc", "2.36"))
  >>> cpu_malloc_advice({}, "always", ("glibc", "2.36"))
  """
  environ = os.environ if environ is None else environ
  if libc is None:
    libc = platform.libc_ver()
  if thp_mode is None:
    thp_mode = _transparent_huge_page_mode()
  name, version = libc
  if name != "glibc" or thp_mode != "madvise":
    return None
  try:
    if tuple(int(part) for part in version.split(".")[:2]) < (2, 35):
      return None
  except ValueError:
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if any(item.startswith("glibc.malloc.hugetlb=") for item in tunables.split(":")):
    return None
  value = f"{tunables}:{CPU_MALLOC_TUNABLE}" if tunables else CPU_MALLOC_TUNABLE
  return ("CPU steps page-fault their temporary buffers every step: glibc maps each "
          "allocation above its mmap threshold (at most 32 MiB) afresh in 4 KiB pages "
          "(transparent huge pages are in 'madvise' mode here). Start the process with "
          f"GLIBC_TUNABLES={value} for huge pages on those maps (default reward model, 32 "
          "pairs x 128 tokens on 2 cores: 185 -> 133-170 ms a step). It is read only at "
          "process start.")


def _transparent_huge_page_mode() -> str:
  """The selected mode of Linux's transparent huge pages ("always", "madvise", "never"),
  "" when /sys does not say."""
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      text = f.read()
  except OSError:
    return ""
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else ""


@functools.cache
def _log_cpu_malloc_advice() -> None:
  """Logs `cpu_malloc_advice` once per process when it has something to say."""
  advice = cpu_malloc_advice()
  if advice:
    logging.warning(advice)


def compiler_options(device: jax.Device) -> dict[str, Any] | None:
  """XLA compiler options for the jitted steps on `device`'s platform (a device of the
  mesh): `CPU_COMPILER_OPTIONS` on CPU (when this XLA knows them), None (XLA's defaults) on
  GPU and TPU."""
  if device.platform == "cpu":
    _log_cpu_malloc_advice()
    if _cpu_options_supported():
      return dict(CPU_COMPILER_OPTIONS)
  return None


def make_train_step(loss_fn, optimizer: optax.GradientTransformation):
  """`train_step(state, batch) -> (new_state, metrics)` for a task's `loss_fn`.

  The key of the step is `fold_in(state.rng, state.step)`; metrics are the task's, plus the
  gradient's and the new parameters' global norms.
  """

  def train_step(state: TrainState, batch):
    key = jax.random.fold_in(state.rng, state.step)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
    state = state.apply_gradients(grads, optimizer)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(state.params)}
    return state, metrics

  return train_step


def build_program(config: ml_collections.ConfigDict, task: Task, *,
                  devices: Sequence[jax.Device] | None = None) -> Program:
  """The mesh, shardings and jitted functions of a run (nothing is compiled or run yet).

  Every check that depends on the mesh (mesh sizes against the devices, batch sizes
  against the batch shards, the task's own checks, parameter dimensions against their mesh
  axes) runs here, before anything is compiled.

  Args:
    config: a run config: seed, optim, train, eval, mesh (e.g. `configs/reward_model.py`).
    task: what to train (`rmjax.train.Task`).
    devices: the devices of the mesh (default: `config.mesh.num_devices` of them, 0 = all,
      over every process).

  Returns:
    A `Program`.
  """
  if devices is None:
    devices = parallel.mesh_devices(config.mesh.get("num_devices", 0))
  mesh = parallel.make_mesh(config.mesh.shape.to_dict(), devices)
  check_batch_sizes(config, mesh)
  task.check_mesh(mesh)
  batch_sharding = parallel.batch_sharding(mesh)
  example_sharding = parallel.activation_sharding(mesh, ("batch",))
  replicated = NamedSharding(mesh, PartitionSpec())

  seed_key = jax.random.PRNGKey(config.seed)
  graphdef, abstract_params = jax.eval_shape(task.init_params, seed_key)
  param_specs = task.param_specs(mesh)
  updates = task.updates_per_step
  if isinstance(updates, bool) or not isinstance(updates, int) or updates < 1:
    raise ValueError(f"Task.updates_per_step: expected an int >= 1, got {updates!r}")
  optimizer, update_schedule = optim.make_optimizer(config.optim,
                                                    config.train.num_steps * updates)
  schedule = update_schedule if updates == 1 else (lambda step: update_schedule(step * updates))
  init_task_state = task.init_task_state or (lambda: None)

  def init_state(rng):
    init_rng, state_rng = jax.random.split(rng)
    _, params = task.init_params(init_rng)
    return TrainState.create(params, optimizer, state_rng, init_task_state())

  # Shardings from shapes alone: parameters by the task's specs, the optimiser's moments like
  # the parameters they track (optax.tree_map_params), its counters and the rest replicated.
  is_spec = lambda x: isinstance(x, PartitionSpec)
  abstract_opt_state = jax.eval_shape(optimizer.init, abstract_params)
  opt_specs = optax.tree_map_params(optimizer, lambda _, spec: spec, abstract_opt_state,
                                    param_specs, transform_non_params=lambda _: PartitionSpec(),
                                    is_leaf=is_spec)
  to_sharding = lambda spec: NamedSharding(mesh, spec)
  task_state_shardings = jax.tree.map(lambda _: replicated,
                                      jax.eval_shape(init_task_state))
  state_shardings = TrainState(replicated, jax.tree.map(to_sharding, param_specs, is_leaf=is_spec),
                               jax.tree.map(to_sharding, opt_specs, is_leaf=is_spec), replicated,
                               task_state_shardings)
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      jax.eval_shape(init_state, seed_key), state_shardings)
  if task.load_params is None:
    init = jax.jit(init_state, out_shardings=state_shardings)
  else:
    # Pretrained weights: read on the host and placed into their shardings by the task,
    # then the optimiser state is built around them.
    create = jax.jit(lambda params, rng: TrainState.create(params, optimizer, rng,
                                                           init_task_state()),
                     out_shardings=state_shardings)

    def init(rng):
      init_rng, state_rng = jax.random.split(rng)
      params = task.load_params(init_rng, state_shardings.params)
      return create(params, state_rng)

  # A layer scan (config.model.scan_layers) gathers each block's weights inside the scan;
  # everything else is gathered for the whole step.
  per_layer = bool(config.get("model") and config.model.get("scan_layers", False))
  shard = functools.partial(
      sharded_compute, param_shardings=compute_shardings(param_specs, mesh, per_layer=per_layer),
      example_sharding=example_sharding,
      layer_rules=tuple(map(tuple, config.mesh.logical_axis_rules)) if per_layer else None)
  # Every batch field is split along its leading (example) axis: one sharding, a pytree
  # prefix. Metrics and eval outputs come back replicated, so every process can read them.
  options = compiler_options(mesh.devices.flat[0])
  if task.make_train_step is not None:
    train_step = task.make_train_step(graphdef, shard, optimizer, state_shardings)
  else:
    train_step = jax.jit(make_train_step(task.make_loss(graphdef, shard), optimizer),
                         in_shardings=(state_shardings, batch_sharding),
                         out_shardings=(state_shardings, replicated), donate_argnums=0,
                         compiler_options=options)
  eval_step = jax.jit(task.make_eval(graphdef, shard),
                      in_shardings=(state_shardings.params, batch_sharding),
                      out_shardings=replicated, compiler_options=options)
  return Program(mesh, batch_sharding, graphdef, models.count_params(abstract_params),
                 param_specs, state_shardings, abstract_state, init, train_step, eval_step,
                 schedule)
