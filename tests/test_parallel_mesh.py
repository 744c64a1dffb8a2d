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
