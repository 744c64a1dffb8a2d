"""Device meshes and shardings built from config."""

from rmjax.parallel.mesh import batch_sharding
from rmjax.parallel.mesh import MESH_AXES
from rmjax.parallel.mesh import make_mesh
from rmjax.parallel.mesh import resolve_mesh_shape

__all__ = ("MESH_AXES", "batch_sharding", "make_mesh", "resolve_mesh_shape")
