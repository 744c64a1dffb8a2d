"""Fused and chunked implementations of the hot paths, each beside its reference.

Every kernel family lives in its own subpackage with a plain jnp reference
(the spec), an XLA-only chunked version (the CPU path and the fallback),
Pallas kernels for TPU and GPU, and one public function that picks the best
implementation for the backend and falls back on NotImplementedError.
Importing this package imports only jax, jax.numpy and chex: the Pallas
modules are imported when a Pallas implementation is first used.

  all_pairs_loss            the all-pairs preference loss (BT, margin, scaled,
                            LiPO-lambda; groups and masks), O(N) memory
  all_pairs_loss_sharded    the same over a mesh axis with shard_map
"""

from rmjax.kernels import all_pairs
from rmjax.kernels.all_pairs import all_pairs_loss
from rmjax.kernels.all_pairs import all_pairs_loss_sharded
from rmjax.kernels.all_pairs import candidates
from rmjax.kernels.all_pairs import IMPLEMENTATIONS
from rmjax.kernels.all_pairs import lipo_lambda_factors
from rmjax.kernels.all_pairs import num_preferred_pairs
from rmjax.kernels.all_pairs import PairItems
from rmjax.kernels.all_pairs import PairRule

# The one kernel family's public names are this package's: one list to keep.
__all__ = all_pairs.__all__
