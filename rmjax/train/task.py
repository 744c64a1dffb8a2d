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
  length_axes                                    optional: fields with a token axis, cut
                                                 to the batch's length bucket
  make_train_step(graphdef, shard, optimizer, shardings) -> step   optional: its own step
  init_task_state() -> pytree                    optional: state beside the params
  batch_layout(batch_size) -> {field: (shape, dtype)}   optional: a batch without data
  dry_run_steps(program, num_chips) -> (steps, facts)   optional: own step's jitted pieces

`shard(fn)` wraps a function `fn(params, *inputs)` with the layout the mesh wants (weights
gathered where they are used, examples split along the batch axes); `place(indices, valid)`
puts the examples at `indices` of a dataset on the mesh. The loss is differentiated with
respect to `params`; its metrics are scalars averaged between log steps. Everything a task
needs from its config it closes over when it is made.

A task whose step is not one gradient of one loss (online RL: a jitted rollout, rewards
computed on the host from text, then several jitted optimiser updates) supplies
`make_train_step`; the program calls it instead of jitting its default step, and the
trainer's loop, checkpoints, logs and evaluations stay the same. Its state beyond the
parameters (a KL controller, Lagrange multipliers, running statistics, cached reference
rewards) lives in `TrainState.task_state`, made by `init_task_state` and checkpointed with
the rest.
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
# (state, batch) -> (state, metrics): the trainer calls it once per step.
StepFn = Callable[[Any, Batch], tuple[Any, dict[str, Any]]]


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
      padded and real token counts; length buckets: the longest real sequence).
    length_axes: batch field -> its token axis (e.g. -1 for tokens [B, L], -2 for
      features [B, L, D]), for the fields whose right padding the task's functions ignore;
      with ``data.length_buckets`` set, the trainer cuts them to the batch's bucket
      (`rmjax.train.batching.BatchPlacer`). ``{}``: nothing to cut in this setting (e.g.
      pooled features); None (default): the task's batches cannot be cut, and
      ``data.length_buckets`` is refused.
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
    make_train_step: optional `(graphdef, shard, optimizer, shardings) -> step`, with
      `step(state, batch) -> (state, metrics)` a Python function (it jits its own pieces)
      that replaces the program's jitted default step (`rmjax.train.program.
      make_train_step` of `make_loss`). `shardings` is the `TrainState` of the state's
      `NamedSharding`s (its mesh: `shardings.step.mesh`); `batch` is the placed batch of
      `batch_fields`; `state.step` must come back incremented by one; metrics are scalars
      (averaged between log steps, and must include "loss"). Its key for step s is the
      task's to choose, e.g. `fold_in(state.rng, s)` as the default step's.
    init_task_state: optional `() -> pytree` of arrays with fixed shapes: the initial
      `TrainState.task_state` (replicated on the mesh, checkpointed, restored). None: the
      task state is None.
    updates_per_step: optimiser updates per train step (default 1); the learning-rate
      schedule is built for `train.num_steps * updates_per_step` updates, and the logged
      learning rate of step s is the schedule's at update `s * updates_per_step`.
    batch_layout: optional `(batch_size) -> {field: (shape, dtype)}`: the placed batch of
      `batch_size` examples (`batch_fields` and 'valid') as shapes alone, e.g. from
      `rmjax.data.batch_layout`. Dry runs (`rmjax.train.dry_run`) compile the steps from
      it without loading data; None: the task cannot be dry-run.
    dry_run_steps: optional `(program, num_chips) -> (steps, facts)`: the jitted pieces
      of a task with its own step (`make_train_step`: online RL's generation, log-probs,
      update, reward scoring) as `rmjax.train.dry_run.DryRunStep`s with abstract
      arguments, for a dry run to compile, and JSON-able facts for its report (shapes,
      "notes"); `program` is the run's `rmjax.train.program.Program` on the target's
      devices. None: the default step's train and eval steps.
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
  length_axes: Mapping[str, int] | None = None
  check_mesh: Callable[[jax.sharding.Mesh], None] = _no_check
  write_plots: Callable[[str, dict[str, Any], dict[str, Any]], None] | None = None
  flops_per_token: float | None = None
  report: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  load_params: Callable[[jax.Array, Any], Any] | None = None
  make_train_step: Callable[[Any, ShardFn, Any, Any], StepFn] | None = None
  init_task_state: Callable[[], Any] | None = None
  updates_per_step: int = 1
  batch_layout: Callable[[int], Mapping[str, tuple[tuple[int, ...], Any]]] | None = None
  dry_run_steps: Callable[[Any, int], Sequence[Any]] | None = None
