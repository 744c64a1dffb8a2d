"""What a task supplies to the trainer: one small record of functions.

The trainer (`rmjax.train.trainer`) owns everything that is the same for every kind of
training: the mesh and shardings, the optimiser, the jitted step, checkpoints, metric
writers, progress, periodic evaluation and the report. A task (a reward-model family, SFT,
DPO, RL, ...; see `rmjax.tasks`) owns the rest, given to the trainer as a `Task`:

  init_params(rng) -> (graphdef, params)         its model, built from a key
  load_params(rng, shardings) -> params          optional: pretrained weights instead
  param_specs(mesh) -> PartitionSpecs            where each parameter lives on the mesh
  make_loss(graphdef, shard) -> loss_fn          loss_fn(params, batch, key) -> (loss, metrics)
  make_eval(graphdef, shard) -> eval_fn          eval_fn(params, batch) -> outputs
  load_data(workdir) -> TaskData                 its train and eval datasets and a report
  evaluate(eval_fn, params, dataset, place)      -> (metrics, arrays), over a whole eval set
  batch_fields                                   the batch fields its functions read

`shard(fn)` wraps a function `fn(params, *inputs)` with the layout the mesh wants (weights
gathered where they are used, examples split along the batch axes); `place(indices, valid)`
puts the examples at `indices` of a dataset on the mesh. The loss is differentiated with
respect to `params`; its metrics are scalars averaged between log steps. Everything a task
needs from its config it closes over when it is made.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax

Batch = Mapping[str, jax.Array]
ShardFn = Callable[[Callable], Callable]
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
EvalFn = Callable[[Any, Batch], Any]
PlaceFn = Callable[..., Batch]


class TaskData(NamedTuple):
  """A task's data: datasets with `train_indices(step, batch_size, seed)`,
  `gather(indices, valid)`, `num_examples` and `arrays` (`rmjax.data`), and a JSON-able
  report of how they were made (written to the workdir's data_report.json)."""
  train: Any
  eval: Any
  info: dict[str, Any]


def _no_check(mesh: jax.sharding.Mesh) -> None:
  del mesh


@dataclasses.dataclass(frozen=True)
class Task:
  """The task-specific half of a training run (see the module docstring).

  Attributes:
    name: a label for logs and the report.
    init_params: `(rng) -> (graphdef, params)`; traced with `jax.eval_shape` for the
      shardings, then jitted with them: nothing is materialised on one device.
    param_specs: `(mesh) -> PartitionSpec` pytree matching params.
    make_loss: `(graphdef, shard) -> loss_fn(params, batch, key) -> (loss, metrics)`.
    make_eval: `(graphdef, shard) -> eval_fn(params, batch) -> outputs`.
    load_data: `(workdir) -> TaskData`.
    evaluate: `(eval_fn, params, eval_dataset, place) -> (metrics, arrays)`: scalar metrics
      for metrics.jsonl and the report, arrays for the plots.
    batch_fields: fields of a dataset's batches that `loss_fn` and `eval_fn` read; the
      others stay on the host ('valid' always goes).
    token_mask_fields: the [N, ..., L] token masks of an example (throughput: their
      padded and real token counts).
    check_mesh: `(mesh) -> None`, the task's own checks against the mesh (raise ValueError).
    write_plots: optional `(workdir, final_metrics, arrays) -> None`.
    flops_per_token: optional model FLOPs per token of a training step (the report's
      model FLOP/s).
    report: extra JSON-able facts for the report (model size, family, ...).
    load_params: optional `(rng, shardings) -> params`: the initial parameters of a fresh
      run read from a pretrained checkpoint, placed in `shardings` (a pytree of
      `NamedSharding`s matching params); `rng` initialises what the checkpoint lacks (a
      new head). Without it, `init_params` is jitted. A resumed run restores its own
      checkpoint instead.
  """
  name: str
  init_params: Callable[[jax.Array], tuple[Any, Any]]
  param_specs: Callable[[jax.sharding.Mesh], Any]
  make_loss: Callable[[Any, ShardFn], LossFn]
  make_eval: Callable[[Any, ShardFn], EvalFn]
  load_data: Callable[[str], TaskData]
  evaluate: Callable[[EvalFn, Any, Any, PlaceFn], tuple[dict[str, Any], dict[str, Any]]]
  batch_fields: Sequence[str]
  token_mask_fields: Sequence[str] = ()
  check_mesh: Callable[[jax.sharding.Mesh], None] = _no_check
  write_plots: Callable[[str, dict[str, Any], dict[str, Any]], None] | None = None
  flops_per_token: float | None = None
  report: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  load_params: Callable[[jax.Array, Any], Any] | None = None
