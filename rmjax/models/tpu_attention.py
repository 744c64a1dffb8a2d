"""Causal self-attention with jax's Pallas TPU splash-attention kernel (`attention="tpu_splash"`).

`splash_attention(q, k, v, mask, scale=...)` computes, for every real query t of a row,

  out[t] = sum_s softmax_s(cap(scale * q[t] . k[s]) | s <= t, t - s < W, mask[s]) v[s]

(cap(x) = c * tanh(x / c) with a logit soft-cap c, W a sliding window; both optional), the
same function as `CausalSelfAttention`'s reference path, with
`jax.experimental.pallas.ops.tpu.splash_attention` (part of jax: no new dependency), whose
forward and backward kernels stream keys and values through VMEM in blocks and never hold
the [L, L] logits (Dao et al. 2022's online softmax; the block-sparse mask skips the blocks
above the diagonal or outside the window). How the model's conventions map onto the kernel:

  key padding   segment ids: real tokens are segment 1, padding segment 0, and a query only
                reads keys of its own segment. A real query therefore reads exactly the real
                keys the reference reads (holes in the mask included); a padding query reads
                padding keys (never an empty row: it reads itself), its output is finite and
                meaningless, as in the reference, where nothing real reads it.
  causal / W    the kernel's static `CausalMask`, or `LocalMask` with window (W - 1, 0).
  GQA           the kernel's multi-query form, vmapped over the key/value heads: query heads
                g * G .. g * G + G - 1 read key/value head g (G = H / KV), no repeated keys.
  scale         the kernel takes none: q is multiplied by `scale` first (in float32, then
                rounded to q's dtype: in bfloat16 a relative change of up to 2^-9 in q,
                none when the scale is a power of 2, e.g. head dim 64 or 256).
  soft-cap      the kernel's `attn_logits_soft_cap` (applied after the scale, before masking).
  length        L is padded to a multiple of 128 (the kernel's tile) with padding tokens and
                the output sliced back; blocks of 512, 256 or 128 (the largest dividing it).
  layout        ours [B, L, H, K], the kernel's [H, L, K] per example (vmapped over B).

Mesh. A Mosaic kernel is not partitioned by XLA, so under a mesh it runs inside `jax.shard_map`:
the batch split over the mesh axes ('data', 'fsdp') that exist, heads over 'tensor' when it
divides the key/value heads (else every 'tensor' device computes all heads), the rmjax.parallel
conventions. The mesh is the `mesh` argument, else the context's
(`jax.sharding.get_abstract_mesh()`: `jax.set_mesh` outside jit; rmjax's train and eval steps
enter their mesh with `jax.sharding.use_abstract_mesh` in
`rmjax.train.program.sharded_compute`); with no mesh (or a one-device one) the kernel is
called directly, which is right on one device only: XLA cannot split a Mosaic call over the
devices that hold sharded inputs, so code that jits the model over several devices itself
must set the mesh (`with jax.set_mesh(mesh):` around the call).

Interpret mode. The kernel compiles (Mosaic) when the target is a TPU: the mesh's platform,
else `jax.default_backend()`, so a dry run on a CPU host compiling for a TPU topology gets the
real kernel. On any other platform (CPU tests, a GPU) it runs in Pallas interpret mode, slow
(the blocks as a loop of XLA ops), with a one-time warning; `interpret=True/False` forces it.

References:
  Dao et al. (2022) FlashAttention: fast and memory-efficient exact attention with IO-awareness;
  jax.experimental.pallas.ops.tpu.splash_attention (Google, "SPLASH: sparse flash attention").
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec

# The kernel's tile along the sequence (TPU lanes): L is padded to a multiple of it.
SEQUENCE_TILE = 128
# Block sizes tried, largest first: the largest dividing the padded length is used.
_BLOCK_CHOICES = (512, 256, 128)
# rmjax.parallel's mesh conventions (not imported: models sit below parallel): a batch is
# split over these axes, heads over the tensor axis.
BATCH_AXES = ("data", "fsdp")
HEAD_AXIS = "tensor"


def padded_length(length: int) -> int:
  """L rounded up to a multiple of `SEQUENCE_TILE` (128).

  >>> padded_length(1), padded_length(128), padded_length(300)
  (128, 128, 384)
  """
  return -(-length // SEQUENCE_TILE) * SEQUENCE_TILE


def _block_size(length: int) -> int:
  """The largest of `_BLOCK_CHOICES` dividing `length` (a multiple of 128)."""
  return next(b for b in _BLOCK_CHOICES if length % b == 0)


@functools.lru_cache(maxsize=None)
def _kernel(length: int, num_heads: int, multi_query: bool, sliding_window: int | None,
            logit_softcap: float | None, interpret: bool):
  """The splash kernel for one example: q [num_heads, length, K] and k, v [length, K]
  (`multi_query`) or [num_heads, length, K]; built once per signature (the mask's block
  structure is computed on the host, in numpy)."""
  shape = (length, length)
  if sliding_window is None:
    head_mask = splash.CausalMask(shape)
  else:
    head_mask = splash.LocalMask(shape, window_size=(sliding_window - 1, 0), offset=0)
  block = _block_size(length)
  blocks = splash.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
      block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  make = splash.make_splash_mqa_single_device if multi_query else (
      splash.make_splash_mha_single_device)
  with jax.ensure_compile_time_eval():  # concrete mask tables even when first built in a trace
    return make(splash.MultiHeadMask([head_mask] * num_heads), block_sizes=blocks,
                attn_logits_soft_cap=logit_softcap, interpret=interpret)


@functools.lru_cache(maxsize=None)
def _warn_interpreted(platform: str) -> None:
  warnings.warn(
      f"attention='tpu_splash' on {platform!r}: the Pallas TPU kernel runs in interpret mode "
      "(correct but slow; meant for tests). On a TPU it is compiled.", RuntimeWarning,
      stacklevel=3)


def _platform(mesh: Any) -> str:
  """The platform the program is compiled for: the mesh's devices', else the default."""
  device = getattr(mesh, "abstract_device", None) if mesh is not None else None
  platform = getattr(device, "platform", None)
  return platform if platform else jax.default_backend()


def target_platform(mesh: Any = None) -> str:
  """The platform a program being traced is compiled for: `mesh`'s devices' (default: the
  context's abstract mesh, `jax.sharding.get_abstract_mesh()`), else jax's default backend
  ("cpu" for a dry run's abstract TPU devices only when no mesh is in context)."""
  if mesh is None:
    mesh = jax.sharding.get_abstract_mesh()
  if mesh is not None and mesh.empty:
    mesh = None
  return _platform(mesh)


def _local_attention(q, k, v, segment_ids, *, sliding_window, logit_softcap, interpret):
  """The kernel on one shard: q [b, h, Lp, K], k, v [b, kv, Lp, K], segment_ids [b, Lp]."""
  _, heads, length, _ = q.shape
  kv_heads = k.shape[1]
  groups = heads // kv_heads
  segments = lambda s: splash.SegmentIds(q=s, kv=s)
  if groups == 1:
    kernel = _kernel(length, heads, False, sliding_window, logit_softcap, interpret)
    return jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=segments(s)))(
        q, k, v, segment_ids)
  kernel = _kernel(length, groups, True, sliding_window, logit_softcap, interpret)
  per_kv_head = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=segments(s)),
                         in_axes=(0, 0, 0, None))
  q = q.reshape(q.shape[0], kv_heads, groups, length, q.shape[-1])
  out = jax.vmap(per_kv_head)(q, k, v, segment_ids)
  return out.reshape(out.shape[0], heads, length, out.shape[-1])


def _mesh_specs(mesh: Any, batch: int, kv_heads: int) -> tuple[PartitionSpec, PartitionSpec]:
  """(spec of [B, H, L, K] arrays, spec of [B, L] segment ids) on `mesh`."""
  batch_axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  shards = math.prod(mesh.shape[a] for a in batch_axes)
  if batch % shards:
    raise ValueError(
        f"attention='tpu_splash' under a mesh: the batch ({batch} sequences) must split "
        f"evenly over the mesh axes {batch_axes} ({shards} shards); pad the batch to a "
        f"multiple of {shards}")
  head_axis = (HEAD_AXIS if HEAD_AXIS in mesh.axis_names
               and kv_heads % mesh.shape[HEAD_AXIS] == 0 else None)
  batch_spec = batch_axes or None
  return PartitionSpec(batch_spec, head_axis, None, None), PartitionSpec(batch_spec, None)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *,
                     scale: float, sliding_window: int | None = None,
                     logit_softcap: float | None = None, mesh: Any = None,
                     interpret: bool | None = None) -> jax.Array:
  """Causal self-attention over real keys with the Pallas TPU splash kernel.

    out[b, t, h] = sum_s p[b, h, t, s] v[b, s, h // G]
    p[b, h, t, :] = softmax(cap(scale * q[b, t, h] . k[b, s, h // G])) over the keys s with
                    s <= t, t - s < sliding_window, mask[b, s] (when mask[b, t]; see below)

  with G = H / KV and cap(x) = logit_softcap * tanh(x / logit_softcap) (identity when None).
  At real queries (mask[b, t] True) this is `CausalSelfAttention`'s reference attention; at
  padding queries the output is finite and meaningless (they read the padding keys). See the
  module docstring for how this maps onto the kernel, the mesh and interpret mode.

  Args:
    q: [B, L, H, K] queries (RoPE applied), float32 or bfloat16.
    k: [B, L, KV, K] keys, KV dividing H.
    v: [B, L, KV, K] values.
    mask: [B, L] bool, True at real tokens.
    scale: multiplies the logits (1 / sqrt(K), or Gemma-2's query_pre_attn_scalar ** -0.5).
    sliding_window: optional W >= 1: query t reads keys t - W + 1 .. t only.
    logit_softcap: optional c > 0: logits -> c * tanh(logits / c) before masking.
    mesh: a `Mesh` or `AbstractMesh` (default: the context's, `get_abstract_mesh()`).
    interpret: None (default: compiled on TPU, interpreted elsewhere with a warning), or
      True / False to force Pallas interpret mode on or off.

  Returns:
    [B, L, H, K] in q's dtype.

  Raises:
    ValueError: shapes that do not match, or a batch that does not split over the mesh.
  """
  if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
    raise ValueError(
        "splash_attention: expected q [B, L, H, K] and k, v [B, L, KV, K] of one shape, got "
        f"q {q.shape}, k {k.shape}, v {v.shape}")
  batch, length, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  if k.shape[:2] != (batch, length) or k.shape[3] != head_dim or heads % kv_heads:
    raise ValueError(
        f"splash_attention: k and v must be [B, L, KV, K] = [{batch}, {length}, KV, "
        f"{head_dim}] with KV dividing H = {heads}, got {k.shape}")
  if mask.shape != (batch, length):
    raise ValueError(f"splash_attention: mask must be [B, L] = [{batch}, {length}], got "
                     f"{mask.shape}")
  if sliding_window is not None and sliding_window < 1:
    raise ValueError(f"splash_attention: sliding_window must be >= 1, got {sliding_window}")
  if mesh is None:
    mesh = jax.sharding.get_abstract_mesh()
  if mesh is not None and mesh.empty:
    mesh = None
  if interpret is None:
    platform = _platform(mesh)
    interpret = platform != "tpu"
    if interpret:
      _warn_interpreted(platform)

  pad = padded_length(length) - length
  to_heads_major = lambda x: jnp.transpose(
      jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))), (0, 2, 1, 3))
  q = to_heads_major((q.astype(jnp.float32) * scale).astype(q.dtype))
  k, v = to_heads_major(k), to_heads_major(v)
  segment_ids = jnp.pad(mask.astype(jnp.int32), ((0, 0), (0, pad)))  # padding: segment 0

  local = functools.partial(_local_attention, sliding_window=sliding_window,
                            logit_softcap=logit_softcap, interpret=bool(interpret))
  if mesh is None or mesh.size == 1:
    out = local(q, k, v, segment_ids)
  else:
    spec, segment_spec = _mesh_specs(mesh, batch, kv_heads)
    specs = (spec, spec, spec, segment_spec)
    args = (q, k, v, segment_ids)
    if any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
      # Explicit axes: the inputs must already be laid out as the specs (Auto: shard_map does).
      on_mesh = lambda s: (jax.sharding.NamedSharding(mesh, s)
                           if isinstance(mesh, jax.sharding.Mesh) else s)
      args = tuple(jax.reshard(a, on_mesh(s)) for a, s in zip(args, specs))
    out = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=spec,
                        check_vma=False)(*args)
  return jnp.transpose(out, (0, 2, 1, 3))[:, :length]
