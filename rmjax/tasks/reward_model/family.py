"""A reward-model family as one record, and the lookup of families by name.

A family is everything that distinguishes one kind of reward model from another: its head,
the data it trains on, its loss, the logit of a pair it is evaluated on, and its own config
fields. Each family lives in one module of `rmjax.tasks.reward_model.families` that defines
`FAMILY = Family(...)`; a family is found by its module's name (`get_family("gpm")`), so a new
family is a new file and nothing else. The task (`rmjax.tasks.reward_model.make_task`) and
the config (`configs/reward_model.py`) look families up; neither lists them.

Every family is evaluated through one number per held-out pair, the logit of P(chosen
preferred over rejected), so one evaluation (accuracy, calibration, NLL) serves them all.
"""

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from rmjax import eval as rm_eval
from rmjax import models
from rmjax.data import PreferenceData

Batch = Mapping[str, jax.Array]
ApplyFn = Callable[[Any, Batch], Any]
# (params, batch, key) -> (loss, metrics); (params, batch) -> pair logits.
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
EvalFn = Callable[[Any, Batch], jax.Array]

# Batch fields of each data format that carry tokens (the model's inputs).
FORMAT_FIELDS = {
    "pairs": ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask"),
    "lists": ("tokens", "mask", "ranking"),
    "user_episodes": ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask"),
}
TOKEN_MASK_FIELDS = ("chosen_mask", "rejected_mask", "mask")


class Model(NamedTuple):
  """A family's model, as the trainer needs it.

  Attributes:
    init_params: `(rng) -> (graphdef, params)`.
    param_specs: `(mesh) -> PartitionSpec` pytree of the params.
    make_apply: `(graphdef) -> apply(params, {'tokens', 'mask', ...}) -> outputs`; with
      `num_members` > 0 every output has a trailing member axis.
    num_members: 0 for one model, M for an ensemble of M trained together.
    model_config: the backbone's `TransformerConfig` (or `EncoderConfig`).
    input_fields: what the model reads of each side of a pair: batch field
      `chosen_<f>` / `rejected_<f>` becomes the model's input `f` (default tokens and
      mask; cached features of a frozen pretrained backbone: features [and mask]).
    load_params: optional `(rng, shardings) -> params` of a pretrained model
      (`rmjax.train.Task.load_params`).
  """
  init_params: Callable[[jax.Array], tuple[Any, Any]]
  param_specs: Callable[[jax.sharding.Mesh], Any]
  make_apply: Callable[[Any], ApplyFn]
  num_members: int
  model_config: Any
  input_fields: tuple[str, ...] = ("tokens", "mask")
  load_params: Callable[[jax.Array, Any], Any] | None = None


def model_config(config: ml_collections.ConfigDict) -> models.TransformerConfig:
  """The backbone's config: `config.model`, with max_len defaulting to data.max_len."""
  fields = config.model.to_dict()
  fields.setdefault("max_len", config.data.max_len)
  if fields["max_len"] < config.data.max_len:
    raise ValueError(f"model.max_len={fields['max_len']} is shorter than "
                     f"data.max_len={config.data.max_len}")
  return models.TransformerConfig.from_dict(fields)


def head_config(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """The head's keyword arguments: the family's `config.head` section, if it has one."""
  if "head" not in config:
    return None
  return config.head.to_dict() or None


def single_model(family: "Family", config: ml_collections.ConfigDict) -> Model:
  """One reward model: the backbone and the family's head (`rmjax.models`)."""
  backbone = model_config(config)
  kwargs = dict(head=family.head_name(config), head_config=head_config(config))
  rules = tuple(tuple(rule) for rule in config.mesh.logical_axis_rules)
  return Model(
      init_params=functools.partial(models.init_reward_model, backbone, **kwargs),
      param_specs=lambda mesh: models.logical_partition_specs(
          models.abstract_param_state(backbone, **kwargs), rules, mesh=mesh),
      make_apply=models.make_reward_apply,
      num_members=0,
      model_config=backbone)


def pair_metrics(loss: jax.Array, logits: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """Train metrics of a batch from its pair logits: loss, accuracy, mean margin."""
  logits, mask = logits.reshape(-1), mask.reshape(-1)
  zeros = jnp.zeros_like(logits)
  return {"loss": loss,
          "accuracy": rm_eval.pairwise_accuracy(logits, zeros, mask=mask),
          "mean_margin": rm_eval.mean_reward_margin(logits, zeros, mask=mask)}


def _no_check(config: ml_collections.ConfigDict) -> None:
  del config


def _no_change(config: ml_collections.ConfigDict, preset: str) -> None:
  del config, preset


@dataclasses.dataclass(frozen=True)
class Family:
  """One reward-model family.

  Attributes:
    name: the config token (`configs/reward_model.py:NAME[,preset]`), the module's name.
    summary: one line for listings and errors.
    head: the head's name in `rmjax.models.HEADS`, or `(config) -> name`.
    config: `() -> {section: {field: default}}`, the config sections the family owns (its
      loss settings, its head's arguments, ...), each default written here once.
    data_format: "pairs", "lists" or "user_episodes" (`rmjax.data.FORMATS`).
    synthetic_only: True when its data is generated (strengths, ratings, lists, users).
    configure: `(config, preset) -> None`, the family's changes to a preset (data fields,
      batch sizes), applied after its sections are added.
    check_config: `(config) -> None`, raises ValueError on settings that do not fit.
    pair_loss: pair families: `(config, chosen, rejected, batch) -> loss`, a scalar mean
      over the batch's valid pairs, from the head's outputs of the two sides.
    pair_logits: pair families: `(config, chosen, rejected) -> [B]` pair logits.
    make_functions: other formats: `(config, model, graphdef, shard) -> (loss_fn,
      eval_fn)`; pair families get theirs from `pair_loss` and `pair_logits`.
    build_model: `(family, config) -> Model`; default one model with the family's head.
    load_data: optional `(config, workdir) -> PreferenceData`, for data that
      `rmjax.data.load_preference_data` does not make.
    prepare_data: optional `(config, data) -> data`, a data step before training (e.g. a
      teacher's preference strength).
    batch_fields: batch fields the loss reads beyond the format's tokens and masks.
    side_fields: per-pair fields the model reads for both sides of a pair (e.g. user ids).
  """
  name: str
  summary: str
  head: str | Callable[[ml_collections.ConfigDict], str]
  config: Callable[[], dict[str, dict[str, Any]]]
  data_format: str = "pairs"
  synthetic_only: bool = False
  configure: Callable[[ml_collections.ConfigDict, str], None] = _no_change
  check_config: Callable[[ml_collections.ConfigDict], None] = _no_check
  pair_loss: Callable[..., jax.Array] | None = None
  pair_logits: Callable[..., jax.Array] | None = None
  make_functions: Callable[..., tuple[LossFn, EvalFn]] | None = None
  build_model: Callable[["Family", ml_collections.ConfigDict], Model] = single_model
  load_data: Callable[[ml_collections.ConfigDict, str], PreferenceData] | None = None
  prepare_data: Callable[[ml_collections.ConfigDict, PreferenceData], PreferenceData] | None = None
  batch_fields: tuple[str, ...] = ()
  side_fields: tuple[str, ...] = ()

  def head_name(self, config: ml_collections.ConfigDict) -> str:
    """The head's name under `config`."""
    return self.head(config) if callable(self.head) else self.head


_PACKAGE = "rmjax.tasks.reward_model.families"


def family_names() -> tuple[str, ...]:
  """Names of every family: the modules of `rmjax.tasks.reward_model.families`, sorted."""
  package = importlib.import_module(_PACKAGE)
  return tuple(sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                      if not m.name.startswith("_")))


def get_family(name: str) -> Family:
  """The family named `name` (its module's `FAMILY`)."""
  names = family_names()
  if name not in names:
    raise ValueError(f"family: expected one of {names}, got {name!r}")
  family = importlib.import_module(f"{_PACKAGE}.{name}").FAMILY
  if family.name != name:
    raise ValueError(f"{_PACKAGE}.{name}: FAMILY.name is {family.name!r}, not {name!r}")
  return family
