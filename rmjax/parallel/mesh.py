"""Meshes from config: one program for one device, one host or a pod.

The mesh always has the three axes of `MESH_AXES`:
  data:   pure data parallelism (parameters replicated),
  fsdp:   data parallelism with parameters sharded along their 'embed' axis,
  tensor: tensor (model) parallelism over heads and the MLP hidden axis.
A batch is split over ('data', 'fsdp'); parameters follow the logical-axis rules of
`rmjax.models` (`DEFAULT_LOGICAL_AXIS_RULES`), activations those of `ACTIVATION_AXIS_RULES`.
The axes are `Auto`, so `jax.jit` propagates shardings from the inputs and the constraints.

`MESH_PRESETS` names the three layouts a run usually wants (a `-1` axis takes the devices
left over, so a preset fits any device count):

  data_parallel  data = all                 params and optimiser state replicated
  fsdp           fsdp = all                 params and optimiser state split along 'embed'
  fsdp_tensor    fsdp = all / 2, tensor = 2 'embed' over fsdp, heads and MLP over tensor
"""

from collections.abc import Mapping, Sequence
import math

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Name -> mesh shape; -1 = the devices left over (see the module docstring).
MESH_PRESETS: Mapping[str, Mapping[str, int]] = {
    "data_parallel": {"data": -1, "fsdp": 1, "tensor": 1},
    "fsdp": {"data": 1, "fsdp": -1, "tensor": 1},
    "fsdp_tensor": {"data": 1, "fsdp": -1, "tensor": 2},
}

# Logical activation axis -> mesh axes (None: replicated). Parameter axes have their rules in
# `rmjax.models.DEFAULT_LOGICAL_AXIS_RULES`; these name the axes of activations: the
# example axis ("batch") is split over data and fsdp, sequence and width stay whole (the
# tensor axis splits heads and the MLP hidden width inside the layers, where XLA places it
# from the weights' shardings).
ACTIVATION_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
)


def mesh_preset(name: str) -> dict[str, int]:
  """The mesh shape of preset `name` (a fresh dict; see `MESH_PRESETS`).

  >>> mesh_preset("fsdp_tensor")
  {'data': 1, 'fsdp': -1, 'tensor': 2}
  """
  if name not in MESH_PRESETS:
    raise ValueError(f"mesh preset: expected one of {tuple(MESH_PRESETS)}, got {name!r}")
  return dict(MESH_PRESETS[name])


def resolve_mesh_shape(mesh_shape: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Sizes of `MESH_AXES` from a config mapping in which at most one size is -1.

  Args:
    mesh_shape: {'data': d, 'fsdp': f, 'tensor': t}; one entry may be -1 ("all remaining
      devices"); a missing axis has size 1.
    num_devices: devices to lay out.

  Returns:
    (d, f, t) with d * f * t == num_devices.

  >>> resolve_mesh_shape({'data': -1, 'fsdp': 1, 'tensor': 2}, 8)
  (4, 1, 2)
  """
  unknown = set(mesh_shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(
        f"mesh_shape: unknown axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
  sizes = [int(mesh_shape.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh_shape: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh_shape: sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  fix = (f"set mesh.shape so that data x fsdp x tensor = {num_devices} (one axis may be -1 "
         f"for the devices left over), or use a preset of {tuple(MESH_PRESETS)}")
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
          f"mesh_shape: {dict(zip(MESH_AXES, sizes))} does not divide the {num_devices} "
          f"devices; {fix}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f"mesh_shape: {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
        f"{num_devices} are available; {fix}")
  return tuple(sizes)


def mesh_devices(num_devices: int = 0) -> list[jax.Device]:
  """The devices of a run's mesh: all of them (`num_devices` 0, the default), or the first
  `num_devices` of this process's devices (a one-device run on a multi-device host: debugging,
  tests, a small model that gains nothing from splitting).

  >>> len(mesh_devices(1))
  1
  """
  if num_devices == 0:
    return list(jax.devices())
  if jax.process_count() > 1:
    raise ValueError(f"mesh.num_devices={num_devices}: with {jax.process_count()} processes the "
                     "mesh takes every device (mesh.num_devices=0)")
  available = jax.local_devices()
  if not 0 < num_devices <= len(available):
    raise ValueError(f"mesh.num_devices: expected 0 (every device) or 1..{len(available)} "
                     f"(the devices of this host), got {num_devices}")
  return list(available[:num_devices])


def make_mesh(mesh_shape: Mapping[str, int],
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp', 'tensor') mesh with Auto axes over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(mesh_shape, len(devices))
  try:
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)
  except NotImplementedError as e:  # A TPU torus: each axis must be a product of its axes.
    raise ValueError(
        f"mesh_shape: {dict(zip(MESH_AXES, sizes))} does not map onto the physical topology "
        f"of the devices ({e}); choose axis sizes that are products of the torus's own "
        "(e.g. 4 x 16 x 4 on 16x16, 4 x 4 x 4 on 4x4x4)") from e


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over ('data', 'fsdp'); other axes replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def without_axes(spec: PartitionSpec, axes: Sequence[str] = BATCH_AXES) -> PartitionSpec:
  """`spec` with the mesh axes `axes` removed: the layout of a weight gathered over them.

  FSDP keeps a weight split over ('data', 'fsdp') at rest and gathers it over those axes
  where it is used (its 'tensor' split stays), so that the batch, split over the same axes,
  never moves.

  >>> without_axes(PartitionSpec("fsdp", ("tensor", "data"), None)) == PartitionSpec(
  ...     None, "tensor", None)
  True
  """
  def keep(entry):
    if entry is None:
      return None
    names = (entry,) if isinstance(entry, str) else tuple(entry)
    kept = tuple(n for n in names if n not in axes)
    return None if not kept else kept[0] if len(kept) == 1 else kept

  return PartitionSpec(*(keep(entry) for entry in spec))


def num_batch_shards(mesh: jax.sharding.Mesh, axis_names: Sequence[str] = BATCH_AXES) -> int:
  """How many ways a batch is split: the product of the sizes of `axis_names` in `mesh`."""
  unknown = [a for a in axis_names if a not in mesh.shape]
  if unknown:
    raise ValueError(f"axis_names: {unknown} are not axes of the mesh {dict(mesh.shape)}")
  return math.prod(mesh.shape[a] for a in axis_names)


def activation_spec(names: Sequence[str | None],
                    rules: Sequence[tuple[str, str | tuple[str, ...] | None]] = (
                        ACTIVATION_AXIS_RULES)) -> PartitionSpec:
  """The `PartitionSpec` of an activation whose axes have logical `names`.

  Each name takes the mesh axes of its first rule; None (or a name ruled None) is
  replicated. A name without a rule is an error.

  >>> activation_spec(("batch", "length", "act_embed")) == PartitionSpec(("data", "fsdp"),
  ...                                                                     None, None)
  True
  """
  table = {}
  for logical, axes in rules:
    table.setdefault(logical, axes)
  missing = [n for n in names if n is not None and n not in table]
  if missing:
    raise ValueError(f"activation axes {missing} have no rule in {tuple(table)}; add "
                     "(name, mesh_axes_or_None) to the rules")
  return PartitionSpec(*(None if n is None else table[n] for n in names))


def activation_sharding(mesh: jax.sharding.Mesh, names: Sequence[str | None],
                        rules: Sequence[tuple[str, str | tuple[str, ...] | None]] = (
                            ACTIVATION_AXIS_RULES)) -> NamedSharding:
  """`NamedSharding` on `mesh` of an activation with logical axis `names` (trailing axes
  not named are replicated); use it in `jax.lax.with_sharding_constraint`."""
  return NamedSharding(mesh, activation_spec(names, rules))
