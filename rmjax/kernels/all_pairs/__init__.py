"""The all-pairs preference loss: reference, chunked XLA, Pallas TPU and GPU.

Modules: `rules` (the pair rules, shared by every implementation),
`reference` (plain jnp, the spec), `chunked` (the XLA tile loop: the CPU path
and the fallback), `pallas_tpu` and `pallas_gpu` (kernels, imported lazily),
`dispatch` (the public function and the custom derivative) and `sharded`
(the `shard_map` form).
"""

from rmjax.kernels.all_pairs.dispatch import all_pairs_loss
from rmjax.kernels.all_pairs.dispatch import candidates
from rmjax.kernels.all_pairs.dispatch import IMPLEMENTATIONS
from rmjax.kernels.all_pairs.rules import lipo_lambda_factors
from rmjax.kernels.all_pairs.rules import num_preferred_pairs
from rmjax.kernels.all_pairs.rules import PairItems
from rmjax.kernels.all_pairs.rules import PairRule
from rmjax.kernels.all_pairs.sharded import all_pairs_loss_sharded

__all__ = (
    "IMPLEMENTATIONS",
    "PairItems",
    "PairRule",
    "all_pairs_loss",
    "all_pairs_loss_sharded",
    "candidates",
    "lipo_lambda_factors",
    "num_preferred_pairs",
)
