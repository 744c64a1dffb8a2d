"""Meshes from config: one program for one device, one host or a pod.

The mesh always has the three axes of `MESH_AXES`:
  data:   pure data parallelism (parameters replicated),
  fsdp:   data parallelism with parameters sharded along their 'embed' axis,
  tensor: tensor (model) parallelism over heads and the MLP hidden axis.
A batch is split over ('data', 'fsdp'); parameters follow the logical-axis rules of
`rmjax.models`. The axes are `Auto`, so `jax.jit` propagates shardings from the inputs.
"""

from collections.abc import Mapping, Sequence
import math

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


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
    raise ValueError(f"mesh_shape: unknown axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
  sizes = [int(mesh_shape.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh_shape: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh_shape: sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
          f"mesh_shape: {dict(zip(MESH_AXES, sizes))} does not divide the {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f"mesh_shape: {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
        f"{num_devices} are available")
  return tuple(sizes)


def make_mesh(mesh_shape: Mapping[str, int],
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp', 'tensor') mesh with Auto axes over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(mesh_shape, len(devices))
  return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over ('data', 'fsdp'); other axes replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))
