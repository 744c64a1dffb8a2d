"""Export a trained rmjax reward model as a Hugging Face `*ForSequenceClassification`.

The directory written by `export_reward_model` loads with transformers'
`AutoModelForSequenceClassification.from_pretrained(path)` (Llama, Qwen2 or Qwen3 class,
chosen from the backbone's features) and with `rmjax.checkpoints.
load_pretrained_reward_model(path)`; import -> export -> import is the identity.

Layout: `config.json` (architectures [<Family>ForSequenceClassification], model_type,
the sizes, rms_norm_eps, rope parameters in both the transformers 4 (`rope_theta`,
`rope_scaling`) and 5 (`rope_parameters`) spellings, num_labels, pad_token_id; Gemma-2's
soft-caps, query_pre_attn_scalar, sliding window and layer_types),
`model.safetensors` (the tensor names and [out, in] layouts of
`rmjax.checkpoints.hf_decoder`'s table; `score.weight` [num_labels, D] without bias, as
HF's score layer), and copies of the tokenizer files given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
import pathlib
import shutil
from typing import Any

import jax
import numpy as np

from rmjax.checkpoints.hf_decoder import _get_path, tensor_layouts
from rmjax.checkpoints.safetensors_io import CheckpointError, write_checkpoint
from rmjax.models.transformer import TransformerConfig

_ARCHITECTURES = {"llama": "LlamaForSequenceClassification",
                  "qwen2": "Qwen2ForSequenceClassification",
                  "qwen3": "Qwen3ForSequenceClassification",
                  "gemma2": "Gemma2ForSequenceClassification"}

_SAVE_DTYPES = ("float32", "bfloat16", "float16")


def hf_model_type(config: TransformerConfig) -> str:
  """The HF model_type that has the backbone's features.

  Gemma-2's features (post_norms, norm_plus_one, scale_embeddings, mlp_activation
  "gelu_tanh", all together) -> "gemma2"; qk_norm -> "qwen3"; qkv_bias -> "qwen2";
  otherwise "llama" (Llama applies no q/k norm and no q/k/v bias). Any other mix exists
  in no supported family: CheckpointError.
  """
  gemma = (config.post_norms, config.norm_plus_one, config.scale_embeddings,
           config.mlp_activation == "gelu_tanh")
  if any(gemma) or config.query_pre_attn_scalar is not None or any(
      v is not None for v in (config.attn_logit_softcap, config.final_logit_softcap,
                              config.sliding_window)):
    if not all(gemma) or config.qk_norm or config.qkv_bias or config.rope_scaling:
      raise CheckpointError(
          "config mixes Gemma-2 features (post_norms, norm_plus_one, scale_embeddings, "
          "gelu_tanh, soft-caps, sliding window) with others; no supported HF family "
          "(llama, qwen2, qwen3, gemma2) has this mix.")
    return "gemma2"
  if config.qk_norm and config.qkv_bias:
    raise CheckpointError(
        "config has both qk_norm and qkv_bias; no supported HF family (llama, qwen2, "
        "qwen3) has both.")
  if config.qk_norm:
    return "qwen3"
  if config.qkv_bias:
    return "qwen2"
  return "llama"


def _int_if_integral(value: float) -> int | float:
  """transformers' strict config fields want an int where the value is one (24, not 24.0)."""
  return int(value) if float(value).is_integer() else float(value)


def hf_config_from_decoder(config: TransformerConfig, *, num_labels: int,
                           pad_token_id: int, model_type: str | None = None,
                           base: Mapping[str, Any] | None = None,
                           torch_dtype: str = "float32") -> dict[str, Any]:
  """The config.json of a `*ForSequenceClassification` with this backbone.

  Args:
    config: the backbone's `TransformerConfig`.
    num_labels: outputs of the score layer.
    pad_token_id: the pad id HF uses to find the last real token of each row.
    model_type: "llama", "qwen2", "qwen3" or "gemma2"; None picks `hf_model_type(config)`.
    base: optional source config.json whose other keys (bos/eos ids, ...) are kept;
      the keys written here override it.
    torch_dtype: the dtype name recorded in the config.

  Returns:
    The config dict.
  """
  model_type = model_type or hf_model_type(config)
  if model_type not in _ARCHITECTURES:
    raise CheckpointError(f"model_type must be one of {sorted(_ARCHITECTURES)}, got "
                          f"{model_type!r}.")
  if hf_model_type(config) != model_type:
    raise CheckpointError(
        f"model_type {model_type!r} cannot express this backbone (it needs "
        f"{hf_model_type(config)!r}: qkv_bias={config.qkv_bias}, qk_norm={config.qk_norm}).")
  out = {key: value for key, value in dict(base or {}).items()
         if key not in ("id2label", "label2id", "auto_map", "quantization_config")}
  rope_type = "default" if config.rope_scaling is None else config.rope_scaling_dict[
      "rope_type"]
  scaling = config.rope_scaling_dict
  rope_parameters = {"rope_type": rope_type, "rope_theta": config.rope_base,
                     **{k: v for k, v in (scaling or {}).items() if k != "rope_type"}}
  out.update(
      architectures=[_ARCHITECTURES[model_type]],
      model_type=model_type,
      vocab_size=config.vocab_size,
      hidden_size=config.d_model,
      intermediate_size=config.mlp_dim,
      num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads,
      num_key_value_heads=config.kv_heads,
      head_dim=config.head_dim,
      hidden_act="silu",
      max_position_embeddings=config.max_len,
      rms_norm_eps=config.norm_eps,
      rope_theta=config.rope_base,
      rope_scaling=scaling,
      rope_parameters=rope_parameters,
      tie_word_embeddings=False,
      attention_bias=False if model_type != "qwen2" else out.get("attention_bias", False),
      mlp_bias=False,
      num_labels=num_labels,
      id2label={str(i): f"LABEL_{i}" for i in range(num_labels)},
      label2id={f"LABEL_{i}": i for i in range(num_labels)},
      pad_token_id=pad_token_id,
      torch_dtype=torch_dtype,
      dtype=torch_dtype,
  )
  if model_type in ("qwen2", "qwen3"):
    out["use_sliding_window"] = False
  if model_type == "gemma2":
    out.pop("hidden_act", None)
    out.update(
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=_int_if_integral(config.query_pre_attn_scalar
                                               or config.head_dim),
        attn_logit_softcapping=config.attn_logit_softcap,
        final_logit_softcapping=config.final_logit_softcap,
        sliding_window=config.sliding_window,
        layer_types=["sliding_attention" if i in config.sliding_window_layers
                     else "full_attention" for i in range(config.num_layers)],
    )
  if model_type == "llama":
    out.setdefault("pretraining_tp", 1)
  return out


def reward_model_tensors(config: TransformerConfig, params: Mapping[str, Any], *,
                         dtype: str = "float32") -> dict[str, np.ndarray]:
  """HF tensors (name -> host array) of a reward model with a bias-free-able scalar head.

  Args:
    config: the backbone's config.
    params: the reward model's pure params {'backbone': ..., 'head': {'kernel', ['bias']}}
      (sharded arrays are gathered to host).
    dtype: saved dtype name ("float32" default, "bfloat16", "float16").

  Returns:
    Ordered dict HF name -> np.ndarray in HF layout.

  Raises:
    CheckpointError: the head is not a scalar head, has a nonzero bias (HF's score layer
    has none), or the backbone has an untied LM head (no place for it in
    *ForSequenceClassification).
  """
  if dtype not in _SAVE_DTYPES:
    raise CheckpointError(f"dtype must be one of {_SAVE_DTYPES}, got {dtype!r}.")
  if config.lm_head == "untied":
    raise CheckpointError(
        "the backbone has an untied lm_head, which *ForSequenceClassification cannot hold; "
        "export a reward model whose config has lm_head='none' or 'tied'.")
  head = params.get("head") if isinstance(params, Mapping) else None
  if not isinstance(head, Mapping) or "kernel" not in head or set(head) - {"kernel", "bias"}:
    raise CheckpointError(
        "params['head'] must be a scalar head {'kernel' [D, n], optional 'bias' [n]}, got "
        f"{sorted(head) if isinstance(head, Mapping) else type(head).__name__}.")
  kernel = np.asarray(jax.device_get(head["kernel"]))
  if "bias" in head:
    bias = np.asarray(jax.device_get(head["bias"]), np.float32)
    if np.any(bias != 0):
      raise CheckpointError(
          f"params['head']['bias'] is nonzero ({bias.tolist()}); HF's score layer has no "
          "bias, so the exported model would score differently. Train with "
          "head_config={'use_bias': False} or fold the bias away first.")
  np_dtype = np.dtype(jax.numpy.dtype(dtype))
  layouts = tensor_layouts(config, num_score_outputs=kernel.shape[1])
  tensors = {}
  for name, layout in layouts.items():
    try:
      value = np.asarray(jax.device_get(_get_path(params, layout.path)))
    except (KeyError, TypeError) as error:
      raise CheckpointError(
          f"params has no parameter {'.'.join(map(str, layout.path))} for tensor {name!r}."
      ) from error
    hf_value = layout.to_hf(value)
    if tuple(hf_value.shape) != layout.hf_shape:
      raise CheckpointError(f"parameter {'.'.join(map(str, layout.path))} gives tensor "
                            f"{name!r} of shape {hf_value.shape}, expected {layout.hf_shape}.")
    tensors[name] = np.ascontiguousarray(hf_value.astype(np_dtype))
  return tensors


def export_reward_model(
    path: str | os.PathLike, config: TransformerConfig, params: Mapping[str, Any], *,
    pad_token_id: int | None = None, model_type: str | None = None,
    base_hf_config: Mapping[str, Any] | None = None,
    tokenizer_files: Sequence[str | os.PathLike] = (), dtype: str = "float32",
) -> pathlib.Path:
  """Writes a reward model as a HF `<Family>ForSequenceClassification` directory.

  Args:
    path: output directory (created).
    config: the backbone's `TransformerConfig`.
    params: the reward model's pure params (scalar head; bias absent or zero).
    pad_token_id: pad id for HF's last-token pooling; None takes base_hf_config's (an
      error if neither has one: HF could not score padded batches).
    model_type: "llama", "qwen2", "qwen3" or "gemma2"; None picks it from the backbone.
    base_hf_config: the source checkpoint's config.json, whose other keys are kept.
    tokenizer_files: files copied into the directory (tokenizer.json,
      tokenizer_config.json, special_tokens_map.json, ...).
    dtype: saved tensor dtype name (default "float32").

  Returns:
    The directory path.
  """
  if pad_token_id is None:
    pad_token_id = (base_hf_config or {}).get("pad_token_id")
  if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int) or pad_token_id < 0:
    raise CheckpointError(
        f"pad_token_id must be a non-negative int (HF finds each row's last token by it), "
        f"got {pad_token_id!r}.")
  tensors = reward_model_tensors(config, params, dtype=dtype)
  num_labels = tensors["score.weight"].shape[0]
  hf_config = hf_config_from_decoder(config, num_labels=num_labels,
                                     pad_token_id=pad_token_id, model_type=model_type,
                                     base=base_hf_config, torch_dtype=dtype)
  files = [pathlib.Path(f) for f in tokenizer_files]
  for file in files:
    if not file.is_file():
      raise CheckpointError(f"tokenizer file {file} does not exist.")
  out = write_checkpoint(path, hf_config, tensors)
  for file in files:
    shutil.copyfile(file, out / file.name)
  return out
