"""Reward models on pretrained backbones: whole, or only their last blocks and head.

Three ways to train a reward model on a pretrained backbone (`rmjax.tasks.reward_model.
pretrained` picks one from the config):

* whole: every weight trains. A decoder is rmjax's `RewardModel` (the `score` head at the
  last real token, Hugging Face's `*ForSequenceClassification` layout); an encoder is
  `EncoderRewardModel` (the head on the pooled hidden states).
* head only: the backbone is frozen, so each sequence's pooled features are computed once
  (`pooled_features`) and only the head trains, a `TopRewardModel` with no blocks.
* last k blocks + head: the input of block L - k is computed once
  (`Transformer.hidden_before_layer`); a `TopRewardModel` holds blocks L - k .. L - 1
  (and the decoder's final norm) and the head.

The head is a bias-free linear `ScalarHead` reading
  decoder: h_T, the final-normed hidden state at the last real token (right or left padding;
           correct when pad = eos);
  encoder: mean_b = sum_t m_bt h_bt / sum_t m_bt (sentence-transformers' pooling), or the
           first ([CLS]) token.
Its kernel starts N(0, 1 / (D + 1)), or as a row of the language-model head
(`rmjax.tasks.reward_model.pretrained`, head="lm_head_row"): r = h_T . E[token], the logit
of one token (e.g. "Yes"), the layout some reward models are released in and a better start
than noise for a decoder.

Pooled features of the whole model equal the top model's on cached inputs: the blocks are
the same modules with the same parameters (tested to 1e-6).
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rmjax.models.encoder import Encoder
from rmjax.models.encoder import EncoderBlock
from rmjax.models.encoder import EncoderConfig
from rmjax.models.encoder import mean_pool
from rmjax.models.heads_response import ScalarHead
from rmjax.models.heads_shared import gather_last_token
from rmjax.models.transformer import RMSNorm
from rmjax.models.transformer import Transformer
from rmjax.models.transformer import TransformerBlock
from rmjax.models.transformer import TransformerConfig

Params = Any
POOLINGS = ("mean", "cls")


def _check_backbone_config(config: Any) -> None:
  if not isinstance(config, (TransformerConfig, EncoderConfig)):
    raise TypeError("config must be a TransformerConfig (decoder) or an EncoderConfig "
                    f"(encoder), got {type(config).__name__}.")


def _check_pooling(pooling: str) -> None:
  if pooling not in POOLINGS:
    raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}.")


def pool_hidden(config: TransformerConfig | EncoderConfig, hidden: jax.Array,
                mask: jax.Array, pooling: str = "mean") -> jax.Array:
  """The head's input from a backbone's last hidden states, float32 [B, D].

  decoder (`TransformerConfig`): the hidden state at the last real token
  (`gather_last_token`; `pooling` is ignored: a causal model's summary is its last token).
  encoder (`EncoderConfig`): "mean" (default, `mean_pool`) or "cls" (position 0).

  Args:
    config: the backbone's config (says which kind it is).
    hidden: [B, L, D] (a decoder's after its final norm).
    mask: [B, L], nonzero at real tokens.
    pooling: "mean" or "cls" (encoders).
  """
  _check_backbone_config(config)
  if isinstance(config, TransformerConfig):
    return gather_last_token(hidden, mask).astype(jnp.float32)
  _check_pooling(pooling)
  if pooling == "cls":
    return hidden[:, 0].astype(jnp.float32)
  return mean_pool(hidden, mask)


class EncoderRewardModel(nnx.Module):
  """A BERT-style encoder with a bias-free scalar head on its pooled hidden states.

  r(x) = w . pool(encoder(x)),  pool = masked mean (default) or [CLS].

  Args:
    config: the `EncoderConfig`.
    pooling: "mean" (default; all-MiniLM-L6-v2 was trained with it) or "cls".
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: EncoderConfig, *, pooling: str = "mean", rngs: nnx.Rngs):
    _check_pooling(pooling)
    self.config = config
    self.pooling = pooling
    self.backbone = Encoder(config, rngs=rngs)
    self.head = ScalarHead(config.d_model, use_bias=False,
                           param_dtype=config.parameter_dtype, rngs=rngs)

  def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """tokens, mask: [B, L] (right-padded) -> rewards [B] float32."""
    hidden = self.backbone(tokens, mask)
    return self.head(pool_hidden(self.config, hidden, mask, self.pooling))[:, 0]


class TopRewardModel(nnx.Module):
  """The trainable top of a frozen pretrained backbone: its blocks [first_layer, L) and head.

  decoder: r = w . gather_last(final_norm(blocks(x)))     x = hidden_before_layer(first)
  encoder: r = w . pool(blocks(x))
  With first_layer = L there are no blocks and the input is already pooled ([B, D],
  `pooled_features`): the head alone, r = w . f.

  Block `first_layer + j` of the backbone is `layers[j]` here (built with its own layer
  index, so Gemma-2's sliding-window layers stay where they were).

  Args:
    config: the backbone's `TransformerConfig` or `EncoderConfig`.
    first_layer: the first trained block, in [0, num_layers].
    pooling: encoders: "mean" (default) or "cls".
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: TransformerConfig | EncoderConfig, *, first_layer: int,
               pooling: str = "mean", rngs: nnx.Rngs):
    _check_backbone_config(config)
    _check_pooling(pooling)
    if isinstance(first_layer, bool) or not isinstance(first_layer, int) or not (
        0 <= first_layer <= config.num_layers):
      raise ValueError(f"first_layer must be an int in [0, {config.num_layers}], got "
                       f"{first_layer!r}.")
    self.config = config
    self.first_layer = first_layer
    self.pooling = pooling
    decoder = isinstance(config, TransformerConfig)
    if decoder:
      self.layers = nnx.List([TransformerBlock(config, layer_index=i, rngs=rngs)
                              for i in range(first_layer, config.num_layers)])
      if first_layer < config.num_layers:
        self.final_norm = RMSNorm(
            config.d_model, eps=config.norm_eps, dtype=config.compute_dtype,
            param_dtype=config.parameter_dtype, plus_one=config.norm_plus_one, rngs=rngs)
    else:
      self.layers = nnx.List([EncoderBlock(config, rngs=rngs)
                              for _ in range(first_layer, config.num_layers)])
    self.head = ScalarHead(config.d_model, use_bias=False,
                           param_dtype=config.parameter_dtype, rngs=rngs)

  @property
  def pooled_input(self) -> bool:
    """True when the model has no blocks: its input is the pooled [B, D] features."""
    return self.first_layer == self.config.num_layers

  def __call__(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Rewards [B] float32.

    Args:
      features: [B, D] pooled features (no blocks), or [B, L, D] the input of block
        `first_layer`.
      mask: [B, L] real tokens; required with blocks, ignored without.
    """
    d = self.config.d_model
    if self.pooled_input:
      if getattr(features, "ndim", None) != 2 or features.shape[-1] != d:
        raise ValueError(f"features must have shape [B, {d}] (pooled; the model has no "
                         f"blocks), got {getattr(features, 'shape', None)}.")
      return self.head(features)[:, 0]
    if getattr(features, "ndim", None) != 3 or features.shape[-1] != d:
      raise ValueError(f"features must have shape [B, L, {d}] (the input of block "
                       f"{self.first_layer}), got {getattr(features, 'shape', None)}.")
    if mask is None or getattr(mask, "shape", None) != features.shape[:2]:
      raise ValueError(f"mask must have shape {tuple(features.shape[:2])} with blocks to "
                       f"run, got {getattr(mask, 'shape', None)}.")
    mask = mask.astype(jnp.bool_)
    x = features.astype(self.config.compute_dtype)
    for block in self.layers:
      x = block(x, mask)
    if isinstance(self.config, TransformerConfig):
      x = self.final_norm(x)
    return self.head(pool_hidden(self.config, x, mask, self.pooling))[:, 0]


def _split(model: nnx.Module) -> tuple[nnx.GraphDef, Params]:
  graphdef, state = nnx.split(model, nnx.Param)
  return graphdef, nnx.to_pure_dict(state)


def init_encoder_reward_model(config: EncoderConfig, rng: jax.Array, *,
                              pooling: str = "mean") -> tuple[nnx.GraphDef, Params]:
  """(graphdef, params) of a fresh `EncoderRewardModel`; params {'backbone', 'head'}.

  Works under `jax.jit` and `jax.eval_shape`.
  """
  if not isinstance(config, EncoderConfig):
    raise TypeError(f"config must be an EncoderConfig, got {type(config).__name__}.")
  return _split(EncoderRewardModel(config, pooling=pooling, rngs=nnx.Rngs(params=rng)))


def init_top_reward_model(config: TransformerConfig | EncoderConfig, rng: jax.Array, *,
                          first_layer: int, pooling: str = "mean"
                          ) -> tuple[nnx.GraphDef, Params]:
  """(graphdef, params) of a fresh `TopRewardModel`; params {['layers', 'final_norm'],
  'head'} (no blocks: the head alone). Works under `jax.jit` and `jax.eval_shape`.

  >>> config = TransformerConfig(d_model=16, num_heads=2, num_layers=3)
  >>> graphdef, params = init_top_reward_model(config, jax.random.key(0), first_layer=2)
  >>> sorted(params), sorted(params["layers"])
  (['final_norm', 'head', 'layers'], [0])
  """
  return _split(TopRewardModel(config, first_layer=first_layer, pooling=pooling,
                               rngs=nnx.Rngs(params=rng)))


def abstract_param_state(make: Callable[[nnx.Rngs], nnx.Module]) -> nnx.State:
  """Abstract `nnx.State` (shapes and logical axes, no FLOPs) of the module `make(rngs)`
  builds, for `rmjax.models.logical_partition_specs`."""
  return nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(0))), nnx.Param)[1]


def make_module_apply(graphdef: nnx.GraphDef, input_fields: Sequence[str]
                      ) -> Callable[[Params, Mapping[str, jax.Array]], jax.Array]:
  """apply(params, batch) -> model(*[batch[f] for f in input_fields]), pure.

  E.g. ("tokens", "mask") for `EncoderRewardModel`, ("features",) or ("features", "mask")
  for `TopRewardModel`. A missing field raises a KeyError naming it.
  """
  input_fields = tuple(input_fields)

  def apply(params: Params, batch: Mapping[str, jax.Array]) -> jax.Array:
    missing = [f for f in input_fields if f not in batch]
    if missing:
      raise KeyError(f"batch: missing field(s) {missing}; the model reads {list(input_fields)}"
                     f", the batch has {sorted(batch)}")
    return nnx.merge(graphdef, params)(*[batch[f] for f in input_fields])

  return apply


def make_features_apply(graphdef: nnx.GraphDef, first_layer: int, *, pooling: str = "mean"
                        ) -> Callable[[Params, jax.Array, jax.Array], jax.Array]:
  """What a `TopRewardModel` starting at `first_layer` reads, from a whole backbone.

  Args:
    graphdef: a `Transformer` or `Encoder` graphdef (e.g. from
      `rmjax.checkpoints.load_decoder_params` or `hf_bert.load_encoder_params`).
    first_layer: the top model's first block; num_layers gives pooled [B, D] features.
    pooling: encoders: "mean" or "cls".

  Returns:
    features(params, tokens [B, L], mask [B, L]) -> [B, D] float32 (first_layer =
    num_layers: `pool_hidden` of the final hidden states) or [B, L, D] in the compute
    dtype (`hidden_before_layer(first_layer)`).
  """
  _check_pooling(pooling)

  def features(params: Params, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    backbone = nnx.merge(graphdef, params)
    if not isinstance(backbone, (Transformer, Encoder)):
      raise TypeError(f"graphdef must be a Transformer or an Encoder, got "
                      f"{type(backbone).__name__}.")
    config = backbone.config
    if first_layer == config.num_layers:
      return pool_hidden(config, backbone(tokens, mask), mask, pooling)
    return backbone.hidden_before_layer(tokens, mask, first_layer)

  return features


def top_params_from_backbone(backbone_params: Mapping[str, Any], first_layer: int,
                             head_kernel: jax.Array) -> dict[str, Any]:
  """A `TopRewardModel`'s params from a whole backbone's params and a head kernel.

  Block `first_layer + j` -> 'layers'[j]; a decoder's 'final_norm' when there are blocks;
  'head' {'kernel': head_kernel [D, 1]}. Arrays are shared, not copied.
  """
  layers = backbone_params.get("layers", {})
  num_layers = len(layers)
  if not 0 <= first_layer <= num_layers:
    raise ValueError(f"first_layer must be in [0, {num_layers}], got {first_layer}.")
  top: dict[str, Any] = {"head": {"kernel": head_kernel}}
  if first_layer < num_layers:  # (an empty block list has no entry in the params)
    top["layers"] = {j: layers[first_layer + j] for j in range(num_layers - first_layer)}
    if "final_norm" in backbone_params:
      top["final_norm"] = backbone_params["final_norm"]
  return top
