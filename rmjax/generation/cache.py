"""The key/value cache of autoregressive decoding and its layout on a device mesh.

The cache itself, `KVCache`, is defined beside the model that fills it
(`rmjax.models.transformer`: `Transformer.prefill` / `decode_step`) and re-exported here.
On a ('data', 'fsdp', 'tensor') mesh it is split like the activations: rows over the
batch axes, key/value heads over 'tensor' when they divide (else whole).
"""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding, PartitionSpec

from rmjax import parallel
from rmjax.models.transformer import KVCache

__all__ = ["KVCache", "cache_shardings", "constrain_cache"]


def cache_shardings(mesh: jax.sharding.Mesh, cache: KVCache) -> KVCache:
  """`NamedSharding`s of a cache on `mesh`: a `KVCache` of shardings (a pytree prefix).

  keys / values [B, S, KV, K]: rows over ('data', 'fsdp'), KV over 'tensor' when the
  tensor axis divides KV; key_mask [B, S] and positions [B]: rows over ('data', 'fsdp');
  index replicated.
  """
  kv_heads = cache.keys[0].shape[2] if cache.keys else 1
  split_heads = "tensor" in mesh.shape and kv_heads % mesh.shape["tensor"] == 0
  kv_spec = parallel.activation_spec(
      ("batch", "length", "act_heads" if split_heads else None, None))
  rows = lambda names: NamedSharding(mesh, parallel.activation_spec(names))
  kv = NamedSharding(mesh, kv_spec)
  return KVCache(keys=tuple(kv for _ in cache.keys), values=tuple(kv for _ in cache.values),
                 key_mask=rows(("batch", "length")), positions=rows(("batch",)),
                 index=NamedSharding(mesh, PartitionSpec()))


def constrain_cache(cache: KVCache, mesh: jax.sharding.Mesh) -> KVCache:
  """`cache` under `jax.lax.with_sharding_constraint` to `cache_shardings(mesh, cache)`."""
  return jax.lax.with_sharding_constraint(cache, cache_shardings(mesh, cache))
