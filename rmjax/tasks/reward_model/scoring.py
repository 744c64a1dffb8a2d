"""Scoring service: a trained run or a checkpoint as a jitted `score(prompts, responses)`.

  scorer = scorer_from_workdir("runs/hh_helpful_smollm2")       # or scorer_from_checkpoint
  rewards = scorer.score(prompts, responses)                    # np.float32 [N]

A `RewardScorer` tokenizes with the run's tokenizer and chat template, sorts the sequences
by length, and scores them in batches of fixed shape [batch_size, bucket] (bucket: the
longest real length of the batch rounded up to a multiple of `length_bucket`, at most
max_len), so at most max_len / length_bucket programs are compiled, whatever the number of
calls. The batch is split over the mesh's ('data', 'fsdp') axes and the weights laid out by
the model's partition specs, as in training (`rmjax.train.program`). Padding rows repeat a
real row and are dropped; right padding of a sequence does not change its reward (causal
attention with last-token pooling, or masked mean / CLS pooling).

Scalar reward models only: the families whose head is "scalar" (bt, scaled_bt, listwise,
ensemble); an ensemble's members are aggregated per response
(`rmjax.transforms.aggregate_ensemble_rewards`). A run on a frozen pretrained backbone is
put back together with its backbone (`pretrained.whole_reward_model`), so it scores tokens.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import ml_collections
import numpy as np

from rmjax import checkpoints
from rmjax import data as rm_data
from rmjax import models
from rmjax import parallel
from rmjax import transforms
from rmjax.tasks.reward_model import pretrained
from rmjax.tasks.reward_model.family import get_family
from rmjax.train import dry_run as dry_run_lib
from rmjax.train import program as program_lib
from rmjax.train.restore import read_run_config  # noqa: F401  (re-exported)
from rmjax.train.restore import restore_run
from rmjax.train.restore import TrainedRun  # noqa: F401  (re-exported)


@dataclasses.dataclass(frozen=True)
class TokenModel:
  """A reward model over token ids: `apply(params, {'tokens', 'mask'}) -> [N] or [N, M]`.

  Attributes:
    apply: the apply function.
    params: host params.
    param_specs: `(mesh) -> PartitionSpec` pytree matching params.
    num_members: 0, or M for an ensemble (outputs [N, M]).
    description: JSON-able facts for reports (source, family, backbone).
  """
  apply: Callable[[Any, dict[str, jax.Array]], jax.Array]
  params: Any
  param_specs: Callable[[jax.sharding.Mesh], Any]
  num_members: int
  description: dict[str, Any]


def token_model_from_run(run: TrainedRun) -> TokenModel:
  """The run's reward model over tokens (a frozen backbone's run put back together).

  Raises:
    ValueError: a family whose head is not a scalar reward (gpm, mixture, regression,
      vpl, pal give pair preferences or per-user rewards, not one reward per response).
  """
  config = run.config
  _check_scalar_head(get_family(config.family), config, f"workdir={run.workdir!r}: ")
  family, model, _ = _whole_model(config)
  description = dict(source=run.workdir, step=run.step, family=family.name)
  if pretrained.enabled(config):
    _, _, params = pretrained.whole_reward_model(config, run.params)
    description["pretrained"] = config.pretrained.to_dict()
  else:
    params = run.params
  graphdef, _ = jax.eval_shape(model.init_params, jax.random.PRNGKey(0))
  return TokenModel(model.make_apply(graphdef), params, model.param_specs,
                    model.num_members, description)


def _whole_model(config: ml_collections.ConfigDict):
  """(family, model over tokens, config) of a reward-model run config: a frozen pretrained
  backbone's run as the whole model (backbone trainable), else the family's model."""
  family = get_family(config.family)
  if pretrained.enabled(config):
    config = ml_collections.ConfigDict(config.to_dict())
    config.pretrained.trainable = "all"
    return family, pretrained.build_model(family, config), config
  return family, family.build_model(family, config), config


def _check_scalar_head(family, config: ml_collections.ConfigDict, where: str = "") -> None:
  head = family.head_name(config)
  if head != "scalar":
    raise ValueError(
        f"{where}family {family.name!r} has head {head!r}; scoring needs one reward per "
        "response (a 'scalar' head: bt, scaled_bt, listwise, ensemble)")


def abstract_token_model(config: ml_collections.ConfigDict) -> TokenModel:
  """The reward model of a run config over tokens with its params as shapes alone
  (`jax.ShapeDtypeStruct`s, nothing materialised): what a dry run of its scoring compiles
  (`scoring_dry_run_step`). Its description has `forward_flops_per_token`: a third of
  `rmjax.models.flops_per_token` at data.max_len (times the members of an ensemble), or
  None for a model that is not a decoder.

  Raises:
    ValueError: a family whose head is not a scalar reward (as `token_model_from_run`).
  """
  _check_scalar_head(get_family(config.family), config)
  family, model, config = _whole_model(config)
  graphdef, params = jax.eval_shape(model.init_params, jax.random.PRNGKey(0))
  flops = (models.flops_per_token(model.model_config, config.data.max_len) / 3
           * max(1, model.num_members)
           if isinstance(model.model_config, models.TransformerConfig) else None)
  return TokenModel(model.make_apply(graphdef), params, model.param_specs, model.num_members,
                    dict(source="abstract", family=family.name,
                         forward_flops_per_token=flops))


def token_model_from_config(config: ml_collections.ConfigDict,
                            rng: jax.Array | None = None) -> TokenModel:
  """The reward model a run of `config` starts from, over tokens: a fresh init, or the
  pretrained backbone (`config.pretrained`) with a fresh head. For speed measurements and
  tests (scores of an untrained head mean nothing).
  """
  rng = jax.random.PRNGKey(config.seed) if rng is None else rng
  family, model, config = _whole_model(config)
  if pretrained.enabled(config):
    _, abstract = jax.eval_shape(model.init_params, rng)
    one = NamedSharding(parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1},
                                           jax.devices()[:1]), PartitionSpec())
    params = model.load_params(rng, jax.tree.map(lambda _: one, abstract))
  else:
    _, params = model.init_params(rng)
  graphdef, _ = jax.eval_shape(model.init_params, rng)
  return TokenModel(model.make_apply(graphdef), jax.device_get(params), model.param_specs,
                    model.num_members, dict(source="fresh", family=family.name))


def token_model_from_checkpoint(path: str, *, dtype: str = "float32") -> TokenModel:
  """A Hugging Face `*ForSequenceClassification` decoder directory (e.g. one written by
  `experiments/export_reward_model.py`) as a reward model over tokens.

  Raises:
    rmjax.checkpoints.CheckpointError: a missing `score.weight` or a tensor that does not
      fit (a `*ForCausalLM` has no reward head: train one first).
  """
  config, graphdef, params = checkpoints.load_pretrained_reward_model(
      path, dtype=dtype, param_dtype=dtype)
  return _hf_token_model(path, config, graphdef, jax.device_get(params))


def abstract_token_model_from_checkpoint(path: str, *, max_len: int,
                                         dtype: str = "float32") -> TokenModel:
  """`token_model_from_checkpoint` with its params as shapes alone, from the directory's
  config.json (`rmjax.checkpoints.abstract_reward_model`; no tensor data is read, a
  directory with only config.json works): what a dry run of its scoring compiles. Its
  description has `forward_flops_per_token`, a third of `rmjax.models.flops_per_token` at
  max_len (the scorer's widest length).

  Raises:
    rmjax.checkpoints.CheckpointError: no or a bad config.json, or safetensors without
      `score.weight`.
  """
  config, graphdef, params = checkpoints.abstract_reward_model(path, dtype=dtype,
                                                               param_dtype=dtype)
  return _hf_token_model(path, config, graphdef, params,
                         forward_flops_per_token=models.flops_per_token(config, max_len) / 3)


def _hf_token_model(path: str, config: models.TransformerConfig, graphdef: Any, params: Any,
                    **description: Any) -> TokenModel:
  """The `TokenModel` of a HF reward model (params loaded or as shapes): the reward apply,
  the default logical-axis specs, and its description."""
  abstract = models.abstract_param_state(config, head_config={"use_bias": False})
  return TokenModel(
      models.make_reward_apply(graphdef), params,
      lambda mesh: models.logical_partition_specs(
          abstract, models.DEFAULT_LOGICAL_AXIS_RULES, mesh=mesh),
      0, dict(source=os.fspath(path), kind="hf_sequence_classification", **description))


def scoring_function(model: TokenModel, mesh: jax.sharding.Mesh, *,
                     ensemble_aggregation: str = "mean"):
  """The jitted scoring function of `model` on `mesh`, and the shardings of its params.

    rewards(params, tokens, mask) -> float32 [N]  (replicated)

  tokens, mask: int [N, L], split over the mesh's ('data', 'fsdp') axes; the params in
  the model's partition specs at rest, gathered over the batch axes where they are used
  (`rmjax.train.program.sharded_compute`), as in training. An ensemble's [N, M] outputs
  are aggregated over members (`rmjax.transforms.aggregate_ensemble_rewards`).

  Returns:
    (rewards, param_shardings): the `jax.jit` function and a pytree of `NamedSharding`s
    matching `model.params`.
  """
  is_spec = lambda x: isinstance(x, PartitionSpec)
  specs = model.param_specs(mesh)
  param_shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=is_spec)
  compute_shardings = program_lib.compute_shardings(specs, mesh)
  example_sharding = parallel.activation_sharding(mesh, ("batch",))
  num_members = model.num_members

  def rewards(params, tokens, mask):
    out = model.apply(params, {"tokens": tokens, "mask": mask})
    if num_members:
      out = transforms.aggregate_ensemble_rewards(jnp.moveaxis(out, -1, 0),
                                                  method=ensemble_aggregation)
    return out.astype(jnp.float32)

  batch_sharding = parallel.batch_sharding(mesh)
  jitted = jax.jit(program_lib.sharded_compute(rewards, compute_shardings, example_sharding),
                   in_shardings=(param_shardings, batch_sharding, batch_sharding),
                   out_shardings=NamedSharding(mesh, PartitionSpec()))
  return jitted, param_shardings


def scoring_dry_run_step(model: TokenModel, mesh: jax.sharding.Mesh, *, batch_size: int,
                         max_len: int, name: str = "score", batch_flag: str = "batch_size",
                         ensemble_aggregation: str = "mean"):
  """A dry run's step (`rmjax.train.dry_run.DryRunStep`) of scoring one batch.

  The scoring function of `scoring_function` at its largest shape, [batch_size, max_len]
  int32 tokens and mask (a `RewardScorer`'s widest length bucket), with `model`'s params
  as shapes (`abstract_token_model`) in their shardings on `mesh`. Model FLOPs per device:
  the description's forward_flops_per_token x batch_size x max_len / devices (None
  without it).

  Raises:
    ValueError: `batch_size` does not split over the mesh's batch shards (naming
      `batch_flag`).
  """
  shards = parallel.num_batch_shards(mesh)
  if batch_size <= 0 or batch_size % shards:
    raise ValueError(f"{batch_flag}={batch_size} does not split over the {shards} batch "
                     f"shards of the mesh {dict(mesh.shape)}; use a positive multiple of "
                     f"{shards}")
  fn, param_shardings = scoring_function(model, mesh,
                                         ensemble_aggregation=ensemble_aggregation)
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        model.params, param_shardings)
  batch = jax.ShapeDtypeStruct((batch_size, max_len), jnp.int32,
                               sharding=parallel.batch_sharding(mesh))
  flops = model.description.get("forward_flops_per_token")
  return dry_run_lib.DryRunStep(name, fn, (params, batch, batch),
                            flops * batch_size * max_len / mesh.size if flops else None,
                            batch_flag, batch_size, backward=False)


class RewardScorer:
  """`score(prompts, responses) -> rewards`, jitted over a mesh with fixed batch shapes.

  Args:
    model: the `TokenModel`.
    tokenizer: the tokenizer its inputs were trained with (`rmjax.data.make_tokenizer`).
    chat_template: the chat template name (`rmjax.data.chat.CHAT_TEMPLATES`).
    max_len, max_prompt_len: the sequence layout (`rmjax.data.tokenize_responses`).
    batch_size: sequences per call of the jitted function; a multiple of the mesh's
      batch shards (data x fsdp).
    mesh_shape: {'data', 'fsdp', 'tensor'} sizes (one may be -1), e.g.
      `rmjax.parallel.mesh_preset("fsdp")`; default all devices on 'data'.
    length_bucket: the bucket width of the sequence axis (0: always max_len).
    ensemble_aggregation: how an ensemble's members become one reward
      (`rmjax.transforms.ENSEMBLE_AGGREGATIONS`; default "mean").
    devices: the mesh's devices (default all).
  """

  def __init__(self, model: TokenModel, *, tokenizer: Any, chat_template: str,
               max_len: int, max_prompt_len: int, batch_size: int = 32,
               mesh_shape: dict[str, int] | None = None, length_bucket: int = 64,
               ensemble_aggregation: str = "mean",
               devices: Sequence[jax.Device] | None = None):
    self.model = model
    self.tokenizer = tokenizer
    self.chat_template = chat_template
    self.max_len = int(max_len)
    self.max_prompt_len = int(max_prompt_len)
    if length_bucket < 0:
      raise ValueError(f"length_bucket: expected >= 0 (0 = always max_len), got {length_bucket}")
    self.length_bucket = int(length_bucket)
    self.mesh = parallel.make_mesh(mesh_shape or {"data": -1, "fsdp": 1, "tensor": 1}, devices)
    shards = parallel.num_batch_shards(self.mesh)
    if batch_size <= 0 or batch_size % shards:
      raise ValueError(
          f"batch_size={batch_size} does not split over the {shards} batch shards of the mesh "
          f"{dict(self.mesh.shape)}; use a positive multiple of {shards}")
    self.batch_size = int(batch_size)
    if ensemble_aggregation not in transforms.ENSEMBLE_AGGREGATIONS:
      raise ValueError(f"ensemble_aggregation: expected one of "
                       f"{transforms.ENSEMBLE_AGGREGATIONS}, got {ensemble_aggregation!r}")
    self.ensemble_aggregation = ensemble_aggregation
    self._rewards, param_shardings = scoring_function(model, self.mesh,
                                                      ensemble_aggregation=ensemble_aggregation)
    self.params = jax.device_put(model.params, param_shardings)
    self.compiled_shapes: set[tuple[int, int]] = set()

  def describe(self) -> dict[str, Any]:
    """JSON-able facts: model, tokenizer, layout, mesh."""
    return dict(model=self.model.description,
                tokenizer=rm_data.describe_tokenizer(self.tokenizer),
                chat_template=self.chat_template, max_len=self.max_len,
                max_prompt_len=self.max_prompt_len, batch_size=self.batch_size,
                length_bucket=self.length_bucket, mesh=dict(self.mesh.shape),
                ensemble_aggregation=(self.ensemble_aggregation if self.model.num_members
                                      else None))

  def encode(self, prompts: Sequence[str], responses: Sequence[str],
             sources: Sequence[str] | None = None
             ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Token ids and masks [N, max_len] and the truncation cuts (`tokenize_responses`)."""
    arrays, cuts = rm_data.tokenize_responses(
        prompts, responses, max_len=self.max_len, max_prompt_len=self.max_prompt_len,
        sources=sources, tokenizer=self.tokenizer, chat_template=self.chat_template)
    return arrays["tokens"], arrays["mask"], cuts

  def _width(self, length: int) -> int:
    if not self.length_bucket:
      return self.max_len
    return rm_data.bucket_length(
        max(length, 1), rm_data.length_buckets(f"multiple:{self.length_bucket}", self.max_len))

  def score_tokens(self, tokens: np.ndarray, mask: np.ndarray, *,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Rewards [N] float32 of right-padded token ids and masks [N, L] (L <= max_len).

    Args:
      tokens, mask: int [N, L].
      progress: optional callback, called with the number of sequences of each batch.
    """
    tokens = np.asarray(tokens)
    mask = np.asarray(mask)
    if tokens.ndim != 2 or tokens.shape != mask.shape:
      raise ValueError(f"tokens and mask must be [N, L] of one shape, got {tokens.shape} and "
                       f"{mask.shape}")
    if tokens.shape[1] > self.max_len:
      raise ValueError(f"tokens: length {tokens.shape[1]} exceeds max_len={self.max_len}")
    n = tokens.shape[0]
    out = np.zeros(n, np.float32)
    if n == 0:
      return out
    lengths = mask.sum(axis=1)
    if np.any(lengths == 0):
      raise ValueError(f"mask: rows {np.flatnonzero(lengths == 0)[:10].tolist()} are empty")
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, n, self.batch_size):
      rows = order[start:start + self.batch_size]
      width = self._width(int(lengths[rows].max()))
      full = np.concatenate([rows, np.full(self.batch_size - len(rows), rows[0])])
      self.compiled_shapes.add((self.batch_size, width))
      batch_tokens = np.zeros((self.batch_size, width), np.int32)
      batch_mask = np.zeros((self.batch_size, width), np.int32)
      take = min(width, tokens.shape[1])
      batch_tokens[:, :take] = tokens[full, :take]
      batch_mask[:, :take] = mask[full, :take]
      values = np.asarray(self._rewards(self.params, batch_tokens, batch_mask))
      out[rows] = values[:len(rows)]
      if progress is not None:
        progress(len(rows))
    return out

  def score(self, prompts: Sequence[str], responses: Sequence[str], *,
            sources: Sequence[str] | None = None,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Rewards [N] float32 of N (prompt, response) texts."""
    tokens, mask, _ = self.encode(prompts, responses, sources)
    return self.score_tokens(tokens, mask, progress=progress)

  __call__ = score


def scorer_from_workdir(workdir: str, *, step: int | None = None, **kwargs) -> RewardScorer:
  """A `RewardScorer` of a trained run (its latest checkpoint, or `step`), with the run's
  tokenizer, chat template and sequence layout. Keyword arguments go to `RewardScorer`
  (max_len and max_prompt_len default to the run's)."""
  run = restore_run(workdir, step)
  config = run.config
  kwargs.setdefault("max_len", config.data.max_len)
  kwargs.setdefault("max_prompt_len", config.data.max_prompt_len)
  return RewardScorer(token_model_from_run(run),
                      tokenizer=rm_data.make_tokenizer(config.data.tokenizer),
                      chat_template=config.data.chat_template, **kwargs)


def scorer_from_checkpoint(path: str, *, tokenizer: str | None = None,
                           chat_template: str = "plain", max_len: int = 512,
                           max_prompt_len: int = 384, **kwargs) -> RewardScorer:
  """A `RewardScorer` of a Hugging Face `*ForSequenceClassification` decoder directory.

  Args:
    path: the directory (config.json, model.safetensors).
    tokenizer: a `data.tokenizer` spec; default the directory's tokenizer.json.
    chat_template, max_len, max_prompt_len: the sequence layout.
    **kwargs: further `RewardScorer` arguments.
  """
  if tokenizer is None:
    tokenizer_file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tokenizer_file):
      raise FileNotFoundError(f"checkpoint {path!r} has no tokenizer.json; name one with "
                              "tokenizer='hf:<path>' (or 'smollm2')")
    tokenizer = f"hf:{tokenizer_file}"
  return RewardScorer(token_model_from_checkpoint(path),
                      tokenizer=rm_data.make_tokenizer(tokenizer), chat_template=chat_template,
                      max_len=max_len, max_prompt_len=max_prompt_len, **kwargs)


class EnsembleScorer:
  """Several `RewardScorer`s as one: per response, their rewards aggregated over members.

    r(x, y) = aggregate_m r_m(x, y)       (`rmjax.transforms.aggregate_ensemble_rewards`)

  Each member tokenizes with its own tokenizer and layout.
  """

  def __init__(self, members: Sequence[RewardScorer], *, aggregation: str = "mean"):
    if not members:
      raise ValueError("EnsembleScorer: expected at least one member scorer, got none")
    if aggregation not in transforms.ENSEMBLE_AGGREGATIONS:
      raise ValueError(f"aggregation: expected one of {transforms.ENSEMBLE_AGGREGATIONS}, "
                       f"got {aggregation!r}")
    self.members = tuple(members)
    self.aggregation = aggregation

  def describe(self) -> dict[str, Any]:
    return dict(aggregation=self.aggregation, members=[m.describe() for m in self.members])

  def score(self, prompts: Sequence[str], responses: Sequence[str], *,
            sources: Sequence[str] | None = None,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Aggregated rewards [N] float32; `progress` counts each member's sequences."""
    member_rewards = np.stack([m.score(prompts, responses, sources=sources, progress=progress)
                               for m in self.members])
    return np.asarray(transforms.aggregate_ensemble_rewards(
        jnp.asarray(member_rewards), method=self.aggregation), np.float32)

  __call__ = score
