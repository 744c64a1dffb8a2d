"""Device meshes, shardings, multi-host set-up and sharded losses.

  mesh             ('data', 'fsdp', 'tensor') meshes from config, presets, batch and
                   activation shardings
  multihost        `jax.distributed.initialize` from config or environment; the rows of a
                   global batch each process loads
  sharded_losses   `shard_map` forms of the losses that couple examples across the batch
"""

from rmjax.parallel.mesh import ACTIVATION_AXIS_RULES
from rmjax.parallel.mesh import activation_sharding
from rmjax.parallel.mesh import activation_spec
from rmjax.parallel.mesh import BATCH_AXES
from rmjax.parallel.mesh import batch_sharding
from rmjax.parallel.mesh import MESH_AXES
from rmjax.parallel.mesh import MESH_PRESETS
from rmjax.parallel.mesh import make_mesh
from rmjax.parallel.mesh import mesh_devices
from rmjax.parallel.mesh import mesh_preset
from rmjax.parallel.mesh import num_batch_shards
from rmjax.parallel.mesh import resolve_mesh_shape
from rmjax.parallel.mesh import without_axes
from rmjax.parallel.multihost import distributed_settings
from rmjax.parallel.multihost import DistributedSettings
from rmjax.parallel.multihost import global_batch
from rmjax.parallel.multihost import initialize_distributed
from rmjax.parallel.multihost import process_rows
from rmjax.parallel.sharded_losses import all_pairs_loss_sharded
from rmjax.parallel.sharded_losses import check_whole_groups
from rmjax.parallel.sharded_losses import sharded_batch_whiten
from rmjax.parallel.sharded_losses import sharded_group_normalize
from rmjax.parallel.sharded_losses import sharded_info_nce_loss
from rmjax.parallel.sharded_losses import sharded_normalize_then_sum
from rmjax.parallel.sharded_losses import sharded_plackett_luce_loss

__all__ = (
    "ACTIVATION_AXIS_RULES",
    "BATCH_AXES",
    "DistributedSettings",
    "MESH_AXES",
    "MESH_PRESETS",
    "activation_sharding",
    "activation_spec",
    "all_pairs_loss_sharded",
    "batch_sharding",
    "check_whole_groups",
    "distributed_settings",
    "global_batch",
    "initialize_distributed",
    "make_mesh",
    "mesh_devices",
    "mesh_preset",
    "num_batch_shards",
    "process_rows",
    "resolve_mesh_shape",
    "sharded_batch_whiten",
    "sharded_group_normalize",
    "sharded_info_nce_loss",
    "sharded_normalize_then_sum",
    "sharded_plackett_luce_loss",
    "without_axes",
)
