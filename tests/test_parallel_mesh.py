"""Meshes from config on the 8 simulated CPU devices."""

import jax
import pytest

from rmjax import parallel


def test_resolve_fills_the_free_axis():
  assert parallel.resolve_mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
  assert parallel.resolve_mesh_shape({"data": -1}, 8) == (8, 1, 1)


@pytest.mark.parametrize("shape, message", [
    ({"data": -1, "fsdp": -1}, "at most one axis"),
    ({"data": 3, "fsdp": -1}, "does not divide"),
    ({"data": 2, "fsdp": 2}, "needs 4 devices, 8 are available"),
    ({"batch": 8}, "unknown axes"),
    ({"data": 0}, "positive"),
])
def test_resolve_rejects_bad_shapes(shape, message):
  with pytest.raises(ValueError, match=message):
    parallel.resolve_mesh_shape(shape, 8)


def test_batch_sharding_splits_the_batch_over_data_and_fsdp():
  assert len(jax.devices()) == 8
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  x = jax.device_put(jax.numpy.arange(16.0).reshape(8, 2), parallel.batch_sharding(mesh))
  # 4 batch shards, each replicated over the 2 tensor devices.
  assert {s.data.shape for s in x.addressable_shards} == {(2, 2)}
  assert len(x.addressable_shards) == 8


def test_mesh_presets_fit_any_device_count():
  assert parallel.resolve_mesh_shape(parallel.mesh_preset("data_parallel"), 8) == (8, 1, 1)
  assert parallel.resolve_mesh_shape(parallel.mesh_preset("fsdp"), 8) == (1, 8, 1)
  assert parallel.resolve_mesh_shape(parallel.mesh_preset("fsdp_tensor"), 8) == (1, 4, 2)
  assert parallel.resolve_mesh_shape(parallel.mesh_preset("fsdp_tensor"), 256) == (1, 128, 2)
  with pytest.raises(ValueError, match=r"expected one of \('data_parallel', 'fsdp', 'fsdp_t"):
    parallel.mesh_preset("zero3")
  # The message says what to change.
  with pytest.raises(ValueError, match="set mesh.shape so that data x fsdp x tensor = 8"):
    parallel.resolve_mesh_shape({"data": 3}, 8)


def test_activation_rules_and_gathered_weight_specs():
  from jax.sharding import PartitionSpec as P
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert parallel.activation_sharding(mesh, ("batch",)) == parallel.batch_sharding(mesh)
  assert parallel.activation_spec(("batch", "length", "act_mlp")) == P(
      ("data", "fsdp"), None, "tensor")
  with pytest.raises(ValueError, match=r"activation axes \['width'\] have no rule"):
    parallel.activation_spec(("batch", "width"))
  # A weight at rest over (fsdp, tensor) is used gathered over fsdp, still split over tensor.
  assert parallel.without_axes(P("fsdp", "tensor")) == P(None, "tensor")
  assert parallel.without_axes(P(("data", "fsdp"), None)) == P(None, None)
  assert parallel.without_axes(P(("fsdp", "tensor"),)) == P("tensor")
  assert parallel.num_batch_shards(mesh) == 4
  assert parallel.num_batch_shards(mesh, ("tensor",)) == 2


def test_mesh_devices_takes_all_or_the_first_n():
  assert parallel.mesh_devices(0) == jax.devices()
  assert parallel.mesh_devices(3) == jax.local_devices()[:3]
  mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, parallel.mesh_devices(1))
  assert mesh.shape == {"data": 1, "fsdp": 1, "tensor": 1}
  for bad in (-1, len(jax.devices()) + 1):
    with pytest.raises(ValueError, match=r"mesh.num_devices: expected 0 \(every device\) or 1..8"):
      parallel.mesh_devices(bad)
