"""The policy model: the decoder backbone with its language-model head, from scratch or from
a pretrained checkpoint, and the per-token log-probabilities of responses.

A policy is an `rmjax.models.Transformer` with `lm_head` "tied" or "untied"; its parameters
carry the backbone's logical axis names, so the training presets shard it exactly as they
shard a reward model (`rmjax.models.logical_partition_specs` with `config.mesh`'s rules).

  log pi(y_t | x, y_<t) at temperature tau = log_softmax(logits_t / tau)[y_t]

computed by `rmjax.losses.token_log_probs` (or `chunked_token_log_probs` over vocabulary
chunks when `chunk_size` is set: the [B, T, V] float32 logits of a 49k vocabulary are what
dominates memory). The response of a sequence is its tokens from `prompt_lengths` to the
last real token (the end token included): those are the targets whose log-probs count.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from rmjax import losses
from rmjax import models
from rmjax.models.transformer import TransformerConfig
from rmjax.train import run_config


class PolicyModel(NamedTuple):
  """What a policy task needs of its model.

  Attributes:
    model_config: the backbone's `TransformerConfig` (an LM head, tied or untied).
    init_params: `(rng) -> (graphdef, params)`, from scratch.
    param_specs: `(mesh) -> PartitionSpec` pytree of the params.
    load_params: `(rng, shardings) -> params` of the pretrained checkpoint, or None.
    checkpoint: the pretrained checkpoint's description (its `source`), or "".
  """
  model_config: TransformerConfig
  init_params: Any
  param_specs: Any
  load_params: Any
  checkpoint: str


def _init_transformer(config: TransformerConfig, rng: jax.Array) -> tuple[Any, Any]:
  model = models.Transformer(config, rngs=nnx.Rngs(params=rng))
  graphdef, params = nnx.split(model, nnx.Param)
  return graphdef, nnx.to_pure_dict(params)


def _abstract_state(config: TransformerConfig) -> nnx.State:
  model = nnx.eval_shape(lambda: models.Transformer(config, rngs=nnx.Rngs(0)))
  return nnx.split(model, nnx.Param)[1]


def _rules(config: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
  return tuple(tuple(rule) for rule in config.mesh.logical_axis_rules)


def build_policy_model(config: ml_collections.ConfigDict) -> PolicyModel:
  """The policy of `config`: `config.pretrained.checkpoint` ("" = `config.model` from
  scratch; "smollm2", an HF Llama-family directory or a .gguf file = its weights, with
  `config.model.dtype` / `param_dtype`), at `config.data.max_len` positions.

  Raises:
    ValueError: a from-scratch config without an LM head, or a checkpoint whose vocabulary
      does not match `config.model.vocab_size` when both are given.
  """
  checkpoint = config.pretrained.checkpoint
  rules = _rules(config)
  if checkpoint:
    from rmjax.checkpoints import hf_decoder  # noqa: PLC0415  (needs safetensors / gguf)
    from rmjax.tasks.reward_model import pretrained  # noqa: PLC0415

    ckpt = pretrained.open_checkpoint(checkpoint)
    if ckpt.kind != "decoder":
      raise ValueError(f"pretrained.checkpoint={checkpoint!r} is an {ckpt.kind}; a policy "
                       "needs a decoder with an LM head")
    model_config = hf_decoder.decoder_config_from_hf(
        ckpt.hf_config, max_len=config.data.max_len, dtype=config.model.dtype,
        param_dtype=config.model.param_dtype, **run_config.model_execution(config.model))

    def load_params(rng, shardings):
      del rng  # Nothing is new: the LM head is the checkpoint's.
      mesh = jax.tree.leaves(shardings)[0].mesh
      return hf_decoder.load_decoder_params(
          ckpt.hf_config, ckpt.tensors, config=model_config, mesh=mesh, rules=rules)[2]
  else:
    fields = config.model.to_dict()
    fields.setdefault("max_len", config.data.max_len)
    model_config = TransformerConfig.from_dict(fields)
    load_params = None
  if model_config.lm_head == "none":
    raise ValueError("a policy needs an LM head: model.lm_head must be 'tied' or 'untied', "
                     "got 'none'")
  return PolicyModel(
      model_config=model_config,
      init_params=functools.partial(_init_transformer, model_config),
      param_specs=lambda mesh: models.logical_partition_specs(
          _abstract_state(model_config), rules, mesh=mesh),
      load_params=load_params,
      checkpoint=checkpoint)


def response_mask(mask: jax.Array, prompt_lengths: jax.Array) -> jax.Array:
  """[B, L - 1] bool: which next-token targets tokens[:, 1:] are response tokens.

  Target j is token j + 1; it is a response token when j + 1 >= prompt_lengths and it is
  real (mask). The response's end token (EOS, <|im_end|>) is a target like the others.
  """
  positions = jnp.arange(1, mask.shape[1])[None, :]
  return (positions >= prompt_lengths[:, None]) & (mask[:, 1:] > 0)


def token_log_probs(graphdef: Any, params: Any, tokens: jax.Array, mask: jax.Array, *,
                    temperature: float = 1.0, chunk_size: int | None = None) -> jax.Array:
  """float32 [B, L - 1]: log pi(tokens[:, j + 1] | tokens[:, :j + 1]) at `temperature`
  (0 where the target is padding).

  Args:
    graphdef, params: the policy (`nnx.split` of a `Transformer` with an LM head).
    tokens, mask: int [B, L], right or left padded.
    temperature: tau > 0; the logits are divided by it (default 1).
    chunk_size: None (default) for `rmjax.losses.token_log_probs`; an int for
      `chunked_token_log_probs` over vocabulary chunks of that size.
  """
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature!r}")
  logits = nnx.merge(graphdef, params).logits(tokens, mask)[:, :-1]
  if temperature != 1.0:
    logits = logits / temperature
  targets = tokens[:, 1:]
  valid = mask[:, 1:] > 0
  if chunk_size is None:
    return losses.token_log_probs(logits, targets, mask=valid)
  return losses.chunked_token_log_probs(logits, targets, mask=valid, chunk_size=chunk_size)


def response_log_probs(graphdef: Any, params: Any, tokens: jax.Array, mask: jax.Array,
                       prompt_lengths: jax.Array, *, temperature: float = 1.0,
                       chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """(token log-probs [B, L - 1] on the response targets, 0 elsewhere; their mask).

  Sum them for log pi(y | x) (`rmjax.losses.sequence_log_probs`).
  """
  logps = token_log_probs(graphdef, params, tokens, mask, temperature=temperature,
                          chunk_size=chunk_size)
  targets = response_mask(mask, prompt_lengths)
  return jnp.where(targets, logps, 0.0), targets
