"""How a transformer's blocks run: unrolled or as one layer scan, with FSDP gathers per layer
and a rematerialisation policy.

Unrolled (`TransformerConfig.scan_layers=False`, the default): the blocks are called one
after the other, as written. Under FSDP the train step gathers every weight at its start
(`rmjax.train.program.sharded_compute`), so the whole model is held gathered for the step.

Scanned (`scan_layers=True`): the blocks' weights are stacked along a new leading axis (in
the step: the stored parameter tree keeps one entry per layer, so checkpoints, Hugging Face
import and export and the feature caches see the same tree) and the blocks run as one
`jax.lax.scan` over that axis. Inside a mesh context (`per_layer_gathers`, entered by
`sharded_compute`), the stacked weights stay in their rest layout (split over 'fsdp' along
'embed', the layer axis unsplit) and each layer's slice is gathered inside the scan body:

    for l in layers:  w_l = all_gather(W[l]);  x = block(w_l, x)      (forward)
    backward:         g_W[l] = reduce_scatter(d block / d w_l)

so one layer's weights are gathered at a time (XLA may prefetch the next), instead of all
of them (FSDP / ZeRO-3, Rajbhandari et al. 2020; Zhao et al. 2023, PyTorch FSDP). The scan
also compiles one block instead of num_layers. Blocks that differ in structure (Gemma-2's
sliding window on every other layer) scan in groups: each step runs the P blocks of the
shortest repeating pattern (`structure_period`; P = 2 for Gemma-2, each phase's weights
stacked apart), gathering P layers at a time. The stacked copy costs one more sharded copy of
the block weights (1 / fsdp of them per device) in the step.

What the backward pass reads is the remat policy's choice, and a gathered weight is an
operand of the block's matmuls: with remat "none", autodiff keeps every layer's gathered
weights from the forward pass for the backward pass (the memory of gathering them all, plus
the scan's stacking), so a layer scan under FSDP wants a policy: "full" and "save_dots" keep
no gathered weight and gather each layer again in the backward pass (checked in the compiled
HLO: all-gathers in the forward and the backward loop bodies; tests/test_train_sharded.py).
Measured on the reward-model pod preset: README "Running at scale".

Rematerialisation (`TransformerConfig.remat`, Chen et al. 2016, "Training deep nets with
sublinear memory cost"): each block's forward is wrapped in `jax.checkpoint` with a policy
that says which intermediates the backward pass may keep:

  none          keep what autodiff keeps (every intermediate the backward pass reads)
  full          keep only the block's input; recompute the block in the backward pass
                (`jax.checkpoint_policies.nothing_saveable`)
  save_dots     keep the outputs of the weight matmuls (no batch dimension in the dot:
                projections and MLP), recompute the rest (norms, RoPE, softmax, activation)
                (`dots_with_no_batch_dims_saveable`)
  offload_dots  like save_dots, but the kept matmul outputs move to host memory
                ("pinned_host") between the passes (`offload_dot_with_no_batch_dims`)

The values and gradients are those of the unrolled, unrematerialised blocks (tested to
float32 rounding): these choices change memory and time only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
import contextvars
from typing import Any, NamedTuple

import flax
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from rmjax.parallel.mesh import without_axes

REMAT_POLICIES = ("none", "full", "save_dots", "offload_dots")


def remat_policy(name: str) -> Callable[..., Any] | None:
  """The `jax.checkpoint` policy of a `TransformerConfig.remat` name (None for "none").

  >>> remat_policy("none") is None
  True
  >>> remat_policy("full") is jax.checkpoint_policies.nothing_saveable
  True
  """
  if name not in REMAT_POLICIES:
    raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {name!r}.")
  policies = jax.checkpoint_policies
  if name == "none":
    return None
  if name == "full":
    return policies.nothing_saveable
  if name == "save_dots":
    return policies.dots_with_no_batch_dims_saveable
  return policies.offload_dot_with_no_batch_dims(offload_src="device",
                                                 offload_dst="pinned_host")


class _LayerLayout(NamedTuple):
  mesh: jax.sharding.Mesh
  rules: tuple[tuple[str, Any], ...]
  gathered_axes: tuple[str, ...]


_LAYOUT: contextvars.ContextVar[_LayerLayout | None] = contextvars.ContextVar(
    "rmjax_layer_layout", default=None)


@contextlib.contextmanager
def per_layer_gathers(mesh: jax.sharding.Mesh, rules: Sequence[tuple[str, Any]],
                      gathered_axes: Sequence[str] = ("data", "fsdp")):
  """Trace-time context: scanned blocks gather their weights per layer on `mesh`.

  While it is active, `run_blocks(..., scan=True)` lays the stacked block weights out by
  `rules` (logical axis -> mesh axis, e.g. `rmjax.models.DEFAULT_LOGICAL_AXIS_RULES`) with
  the layer axis unsplit, and constrains each layer's slice, inside the scan body, to that
  layout without `gathered_axes` (the weight gathered over them, its other splits kept).
  Entered by `rmjax.train.program.sharded_compute` around the traced model call; outside it
  (one device, no mesh) the scan runs without layout constraints.

  Args:
    mesh: the run's mesh.
    rules: logical-axis rules, (logical_name, mesh_axis or None) pairs.
    gathered_axes: mesh axes a weight is gathered over where it is used (default the batch
      axes ('data', 'fsdp'), as `rmjax.parallel.without_axes`).
  """
  token = _LAYOUT.set(_LayerLayout(mesh, tuple(tuple(r) for r in rules),
                                   tuple(gathered_axes)))
  try:
    yield
  finally:
    _LAYOUT.reset(token)


def is_layer_path(path: Sequence[Any]) -> bool:
  """Whether a parameter's tree path lies inside a transformer's blocks (`...layers/<i>/...`).

  These are the weights a layer scan gathers itself, one layer at a time; a step that
  scans (`sharded_compute` with `per_layer`) leaves them in their rest layout.

  >>> from jax.tree_util import DictKey
  >>> is_layer_path((DictKey("backbone"), DictKey("layers"), DictKey(0), DictKey("mlp")))
  True
  >>> is_layer_path((DictKey("backbone"), DictKey("embedding")))
  False
  """
  keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
  return any(a == "layers" and isinstance(b, int) for a, b in zip(keys, keys[1:]))


def _block_layouts(state: nnx.State, layout: _LayerLayout
                   ) -> tuple[Any, Any]:
  """(stacked rest shardings, per-layer gathered shardings) of one block's parameters: the
  logical axes of its `nnx.with_partitioning` annotations mapped by the rules (the run's
  own parameter specs, already checked against the mesh by the program)."""
  with nnx.logical_axis_rules(()):  # the raw logical names, as the program reads them
    logical = nnx.to_pure_dict(nnx.get_partition_spec(state))
  is_spec = lambda x: isinstance(x, PartitionSpec)
  specs = jax.tree.map(lambda s: flax.linen.logical_to_mesh_axes(tuple(s), layout.rules),
                       logical, is_leaf=is_spec)
  stacked = jax.tree.map(lambda s: NamedSharding(layout.mesh, PartitionSpec(None, *s)),
                         specs, is_leaf=is_spec)
  gathered = jax.tree.map(
      lambda s: NamedSharding(layout.mesh, without_axes(s, layout.gathered_axes)),
      specs, is_leaf=is_spec)
  return stacked, gathered


def run_blocks(blocks: Sequence[nnx.Module], x: jax.Array, mask: jax.Array, *,
               scan: bool = False, remat: str = "none") -> jax.Array:
  """x after `blocks` in order: block(x, mask) for each, unrolled or as one layer scan.

  Args:
    blocks: `TransformerBlock`s. With scan=True the scan steps over groups of
      `structure_period` consecutive blocks (one block when all are alike).
    x: [B, L, D] residual stream, compute dtype.
    mask: [B, L] bool, True at real tokens.
    scan: one `jax.lax.scan` over the stacked block weights, gathered per layer inside a
      `per_layer_gathers` context (default False: unrolled).
    remat: a `REMAT_POLICIES` name applied to each block (default "none").

  Returns:
    [B, L, D], equal to the unrolled loop's (float32 rounding aside).

  Raises:
    ValueError: an unknown remat name.
  """
  policy = remat_policy(remat)
  if not blocks:
    return x

  def apply(graphdef, weights, x):
    return nnx.merge(graphdef, weights)(x, mask)

  if not scan:
    for block in blocks:
      if policy is None:
        x = block(x, mask)
      else:
        graphdef, weights = nnx.split(block)
        x = jax.checkpoint(lambda w, x, g=graphdef: apply(g, w, x), policy=policy)(weights, x)
    return x

  graphdefs, states = zip(*(nnx.split(block) for block in blocks))
  period = structure_period(graphdefs)
  # Phase j of the period: blocks j, j + period, j + 2 period, ... stacked along axis 0.
  stacked = [jax.tree.map(lambda *w: jnp.stack(w),
                          *(nnx.to_pure_dict(state) for state in states[j::period]))
             for j in range(period)]
  layout = _LAYOUT.get()
  gathered = None
  if layout is not None:
    stacked_shardings, gathered = zip(*(_block_layouts(states[j], layout)
                                        for j in range(period)))
    stacked = [jax.lax.with_sharding_constraint(w, sharding)
               for w, sharding in zip(stacked, stacked_shardings)]

  def body(x, group_weights):
    for j, layer_weights in enumerate(group_weights):
      if gathered is not None:
        layer_weights = jax.lax.with_sharding_constraint(layer_weights, gathered[j])
      x = apply(graphdefs[j], layer_weights, x)
    return x, None

  if policy is not None:
    body = jax.checkpoint(body, policy=policy, prevent_cse=False)
  x, _ = jax.lax.scan(body, x, stacked)
  return x


def structure_period(graphdefs: Sequence[Any]) -> int:
  """The smallest p dividing len(graphdefs) with graphdefs[i] == graphdefs[i % p] for all i:
  the blocks a layer scan runs per step (1 for identical blocks; 2 for Gemma-2's
  alternating sliding-window and global layers; len(graphdefs) when no shorter pattern
  repeats, one step of every block).

  >>> structure_period(["a", "a", "a", "a"]), structure_period(["w", "g", "w", "g"])
  (1, 2)
  >>> structure_period(["w", "g", "g"])
  3
  """
  count = len(graphdefs)
  for period in range(1, count + 1):
    if count % period == 0 and all(graphdefs[i] == graphdefs[i % period]
                                   for i in range(period, count)):
      return period
  return count
