"""Hugging Face Llama-family checkpoints <-> rmjax's NNX decoder (`rmjax.models`).

Supported `model_type`s: "llama" (Llama 2/3.x with its `rope_scaling`, SmolLM2, tied or
untied embeddings), "qwen2" (Qwen2/2.5: q/k/v biases), "qwen3" (q/k RMSNorm, explicit
head_dim), "gemma2" ((1 + w) RMSNorms before and after attention and MLP, sqrt(D)
embedding scale, GeGLU (gelu tanh), query_pre_attn_scalar, attention and final logit
soft-capping, sliding-window layers). All use grouped-query attention, gated MLPs,
RMSNorm and rotate-half RoPE, the layout of `rmjax.models.Transformer`.

Tensor names and layouts (HF stores a linear layer's weight as [out, in]; H query heads,
KV key/value heads, K head dim, D hidden, F MLP width, V vocab):

  HF tensor                                   shape        rmjax parameter      layout
  model.embed_tokens.weight                   [V, D]       embedding            [V, D]
  model.layers.{i}.input_layernorm.weight     [D]          attention_norm.scale [D]
  model.layers.{i}.self_attn.q_proj.weight    [H*K, D]     attention.query      [D, H, K]
  model.layers.{i}.self_attn.k_proj.weight    [KV*K, D]    attention.key        [D, KV, K]
  model.layers.{i}.self_attn.v_proj.weight    [KV*K, D]    attention.value      [D, KV, K]
  model.layers.{i}.self_attn.{q,k,v}_proj.bias [H*K|KV*K]  attention.*_bias     [H|KV, K]
  model.layers.{i}.self_attn.{q,k}_norm.weight [K]         attention.*_norm     [K]
  model.layers.{i}.self_attn.o_proj.weight    [D, H*K]     attention.out        [H, K, D]
  model.layers.{i}.post_attention_layernorm.weight [D]     mlp_norm.scale       [D]
    (gemma2: post_attention_layernorm -> attention_post_norm.scale,
     pre_feedforward_layernorm -> mlp_norm.scale,
     post_feedforward_layernorm -> mlp_post_norm.scale)
  model.layers.{i}.mlp.gate_proj.weight       [F, D]       mlp.gate             [D, F]
  model.layers.{i}.mlp.up_proj.weight         [F, D]       mlp.up               [D, F]
  model.layers.{i}.mlp.down_proj.weight       [D, F]       mlp.down             [F, D]
  model.norm.weight                           [D]          final_norm.scale     [D]
  lm_head.weight (untied CausalLM)            [V, D]       lm_head              [D, V]
  score.weight (*ForSequenceClassification)   [n, D]       head.kernel          [D, n]

HF's q/k projections are already in the rotate-half order (`rotate_half` in
transformers' `modeling_llama.py`), rmjax's `apply_rope` layout, so no permutation is
needed (unlike GGUF files, whose converter interleaves them).

Loading builds the abstract model with `nnx.eval_shape`, checks every tensor's name and
shape before reading any data, then converts each tensor and places it with one
`jax.device_put` into its target sharding (from `rmjax.models.logical_partition_specs`
on a mesh, or the default device).

References: transformers' `modeling_llama.py`, `modeling_qwen2.py`, `modeling_qwen3.py`
and `modeling_rope_utils.py` (read to confirm the conventions).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
import dataclasses
import os
import pathlib
from typing import Any

from flax import nnx
import jax
import numpy as np

from rmjax.checkpoints.safetensors_io import (CheckpointError, INDEX_FILE, SINGLE_FILE,
                                             open_safetensors, read_checkpoint, read_config)
from rmjax.models.reward_model import (
    DEFAULT_LOGICAL_AXIS_RULES,
    RewardModel,
    logical_partition_specs,
)
from rmjax.models.transformer import Transformer, TransformerConfig

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "gemma2")

# Rope types of HF configs and what they become in `TransformerConfig.rope_scaling`.
_PLAIN_ROPE_TYPES = ("default", None)
_SCALED_ROPE_TYPES = ("llama3", "linear")

# HF config defaults that differ between model types (transformers 5 config classes).
_DEFAULT_TIE = {"llama": False, "qwen2": False, "qwen3": False, "gemma2": True}
_DEFAULT_ROPE_THETA = {"llama": 10000.0, "qwen2": 10000.0, "qwen3": 10000.0,
                       "gemma2": 10000.0}

# HF activation names -> `TransformerConfig.mlp_activation`.
_ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh"}

# Buffers that old checkpoints saved and that carry no parameters (derived from config).
_DERIVED_SUFFIXES = (".rotary_emb.inv_freq",)


def _get(hf_config: Mapping[str, Any], key: str, default: Any = ...) -> Any:
  if key in hf_config and hf_config[key] is not None:
    return hf_config[key]
  if default is ...:
    raise CheckpointError(f"HF config has no {key!r} (model_type "
                          f"{hf_config.get('model_type')!r}); it is required.")
  return default


def _rope_from_hf(hf_config: Mapping[str, Any]) -> tuple[float, dict[str, Any] | None]:
  """(rope_base, rope_scaling) from a HF config, transformers 4 or 5 style.

  transformers 5 writes `rope_parameters` {'rope_type', 'rope_theta', ...}; checkpoints
  saved by transformers 4 have `rope_theta` and `rope_scaling` {'rope_type' (or 'type'),
  ...}.
  """
  model_type = hf_config["model_type"]
  params = hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {}
  if not isinstance(params, Mapping):
    raise CheckpointError(f"HF config: rope_parameters/rope_scaling must be an object, got "
                          f"{params!r}.")
  if params and all(isinstance(v, Mapping) for v in params.values()):
    raise CheckpointError(
        "HF config: per-layer-type rope parameters "
        f"({sorted(params)}) are not supported (model_type {model_type!r}).")
  base = params.get("rope_theta", hf_config.get("rope_theta",
                                                _DEFAULT_ROPE_THETA[model_type]))
  rope_type = params.get("rope_type", params.get("type"))
  if hf_config.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0)) != 1.0:
    raise CheckpointError("HF config: partial_rotary_factor != 1 is not supported.")
  if rope_type in _PLAIN_ROPE_TYPES:
    return float(base), None
  if rope_type not in _SCALED_ROPE_TYPES:
    raise CheckpointError(
        f"HF config: unknown or unsupported rope type {rope_type!r}; supported: "
        f"{['default', *_SCALED_ROPE_TYPES]}.")
  if rope_type == "linear":
    return float(base), {"rope_type": "linear", "factor": float(params["factor"])}
  original = params.get("original_max_position_embeddings",
                        hf_config.get("max_position_embeddings"))
  try:
    scaling = {
        "rope_type": "llama3", "factor": float(params["factor"]),
        "low_freq_factor": float(params["low_freq_factor"]),
        "high_freq_factor": float(params["high_freq_factor"]),
        "original_max_position_embeddings": int(original),
    }
  except (KeyError, TypeError) as error:
    raise CheckpointError(f"HF config: llama3 rope scaling is missing {error}.") from error
  return float(base), scaling


def decoder_config_from_hf(hf_config: Mapping[str, Any], *, lm_head: str | None = None,
                           dtype: str = "float32", param_dtype: str = "float32",
                           max_len: int | None = None,
                           attention: str = "reference", scan_layers: bool = False,
                           remat: str = "none") -> TransformerConfig:
  """The `TransformerConfig` of a Hugging Face Llama / Qwen2 / Qwen3 config.json.

  Args:
    hf_config: the parsed config.json.
    lm_head: "tied", "untied" or "none"; None (default) follows `tie_word_embeddings`
      ("tied" if true, else "untied").
    dtype: compute dtype name (default "float32").
    param_dtype: parameter dtype name (default "float32").
    max_len: longest accepted sequence; None takes `max_position_embeddings`.
    attention: `TransformerConfig.attention` (default "reference").
    scan_layers: `TransformerConfig.scan_layers` (default False).
    remat: `TransformerConfig.remat` (default "none").

  Returns:
    The validated `TransformerConfig`.

  Raises:
    CheckpointError: an unknown model_type, rope type or activation, or an option
      rmjax's decoder does not implement (Llama attention/MLP biases, sliding windows,
      partial rotary embeddings).
  """
  if not isinstance(hf_config, Mapping):
    raise TypeError(f"hf_config must be a mapping (config.json), got "
                    f"{type(hf_config).__name__}.")
  model_type = hf_config.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise CheckpointError(
        f"HF config: unknown or unsupported model_type {model_type!r}; supported: "
        f"{list(SUPPORTED_MODEL_TYPES)}.")
  act = (hf_config.get("hidden_activation") or hf_config.get("hidden_act")
         or ("gelu_pytorch_tanh" if model_type == "gemma2" else "silu"))
  if act not in _ACTIVATIONS:
    raise CheckpointError(f"HF config: hidden_act {act!r} is not supported (supported: "
                          f"{sorted(_ACTIVATIONS)}).")
  if hf_config.get("mlp_bias"):
    raise CheckpointError("HF config: mlp_bias=true is not supported.")
  if model_type in ("llama", "qwen3", "gemma2") and hf_config.get("attention_bias"):
    raise CheckpointError(
        f"HF config: attention_bias=true ({model_type}: biases on q/k/v and o) is not "
        "supported; only Qwen2's q/k/v biases are.")
  if model_type in ("qwen2", "qwen3") and hf_config.get("use_sliding_window"):
    raise CheckpointError(
        f"HF config: use_sliding_window=true ({model_type}) is not supported.")
  d_model = int(_get(hf_config, "hidden_size"))
  num_heads = int(_get(hf_config, "num_attention_heads"))
  head_dim = hf_config.get("head_dim")
  explicit = (None if head_dim is None or int(head_dim) * num_heads == d_model
              else int(head_dim))
  kv = hf_config.get("num_key_value_heads")
  kv = None if kv is None or int(kv) == num_heads else int(kv)
  rope_base, rope_scaling = _rope_from_hf(hf_config)
  gemma = {}
  if model_type == "gemma2":
    num_layers = int(_get(hf_config, "num_hidden_layers"))
    layer_types = hf_config.get("layer_types") or [
        "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(num_layers)]
    unknown = sorted(set(layer_types) - {"sliding_attention", "full_attention"})
    if unknown or len(layer_types) != num_layers:
      raise CheckpointError(
          f"HF config: layer_types must list 'sliding_attention' / 'full_attention' for "
          f"each of the {num_layers} layers, got {layer_types!r}.")
    if hf_config.get("use_bidirectional_attention"):
      raise CheckpointError("HF config: use_bidirectional_attention is not supported.")
    sliding = [i for i, kind in enumerate(layer_types) if kind == "sliding_attention"]
    window = hf_config.get("sliding_window", 4096) if sliding else None
    if sliding and window is None:
      sliding = []
    gemma = dict(
        norm_plus_one=True, post_norms=True, scale_embeddings=True,
        query_pre_attn_scalar=float(hf_config.get("query_pre_attn_scalar", 256)),
        attn_logit_softcap=hf_config.get("attn_logit_softcapping", 50.0),
        final_logit_softcap=hf_config.get("final_logit_softcapping", 30.0),
        sliding_window=None if window is None else int(window),
        sliding_window_layers=tuple(sliding),
    )
  if lm_head is None:
    lm_head = ("tied" if hf_config.get("tie_word_embeddings", _DEFAULT_TIE[model_type])
               else "untied")
  try:
    return TransformerConfig(
        vocab_size=int(_get(hf_config, "vocab_size")),
        max_len=int(max_len if max_len is not None
                    else _get(hf_config, "max_position_embeddings")),
        d_model=d_model,
        num_layers=int(_get(hf_config, "num_hidden_layers")),
        num_heads=num_heads,
        d_ff=int(_get(hf_config, "intermediate_size")),
        rope_base=rope_base,
        norm_eps=float(_get(hf_config, "rms_norm_eps", 1e-6)),
        dtype=dtype,
        param_dtype=param_dtype,
        attention=attention,
        scan_layers=scan_layers,
        remat=remat,
        num_kv_heads=kv,
        explicit_head_dim=explicit,
        qkv_bias=model_type == "qwen2",
        qk_norm=model_type == "qwen3",
        rope_scaling=rope_scaling,
        lm_head=lm_head,
        mlp_activation=_ACTIVATIONS[act],
        **gemma,
    )
  except (TypeError, ValueError) as error:
    raise CheckpointError(f"HF config ({model_type}) gives an invalid TransformerConfig: "
                          f"{error}") from error


@dataclasses.dataclass(frozen=True)
class TensorLayout:
  """How one HF tensor maps onto one rmjax parameter.

  Attributes:
    path: the parameter's key path in the pure params dict.
    hf_shape: the tensor's shape in the HF file.
    to_rmjax: HF array -> rmjax array (transpose / reshape).
    to_hf: the inverse.
  """

  path: tuple[Any, ...]
  hf_shape: tuple[int, ...]
  to_rmjax: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _linear(out_dim: int, in_dim: int):
  """HF [out, in] <-> rmjax [in, out]."""
  return lambda path: TensorLayout(path, (out_dim, in_dim), lambda a: a.T, lambda a: a.T)


def _heads_in(heads: int, head_dim: int, d: int):
  """HF [heads*K, D] <-> rmjax [D, heads, K] (query/key/value projections)."""
  return lambda path: TensorLayout(
      path, (heads * head_dim, d),
      lambda a: a.T.reshape(d, heads, head_dim),
      lambda a: a.reshape(d, heads * head_dim).T)


def _heads_out(heads: int, head_dim: int, d: int):
  """HF [D, heads*K] <-> rmjax [heads, K, D] (output projection)."""
  return lambda path: TensorLayout(
      path, (d, heads * head_dim),
      lambda a: a.T.reshape(heads, head_dim, d),
      lambda a: a.reshape(heads * head_dim, d).T)


def _heads_bias(heads: int, head_dim: int):
  """HF [heads*K] <-> rmjax [heads, K]."""
  return lambda path: TensorLayout(
      path, (heads * head_dim,),
      lambda a: a.reshape(heads, head_dim), lambda a: a.reshape(heads * head_dim))


def _vector(size: int):
  return lambda path: TensorLayout(path, (size,), lambda a: a, lambda a: a)


def tensor_layouts(config: TransformerConfig, *, num_score_outputs: int | None = None
                   ) -> dict[str, TensorLayout]:
  """HF tensor name -> `TensorLayout` for a backbone (or a reward model with a score head).

  Args:
    config: the backbone's config.
    num_score_outputs: None for a bare `Transformer` (paths from its root); n for a
      `RewardModel` with a bias-free ScalarHead of n outputs (backbone paths under
      'backbone', `score.weight` [n, D] -> head.kernel [D, n]).

  Returns:
    An ordered dict over every parameter of the model.
  """
  d, h, kv, k = config.d_model, config.num_heads, config.kv_heads, config.head_dim
  f, v = config.mlp_dim, config.vocab_size
  root = () if num_score_outputs is None else ("backbone",)
  entries: dict[str, TensorLayout] = {}

  def add(name, make, *path):
    entries[name] = make(root + path)

  add("model.embed_tokens.weight",
      lambda p: TensorLayout(p, (v, d), lambda a: a, lambda a: a), "embedding")
  for i in range(config.num_layers):
    pre = f"model.layers.{i}."
    add(pre + "input_layernorm.weight", _vector(d), "layers", i, "attention_norm", "scale")
    add(pre + "self_attn.q_proj.weight", _heads_in(h, k, d), "layers", i, "attention",
        "query")
    add(pre + "self_attn.k_proj.weight", _heads_in(kv, k, d), "layers", i, "attention",
        "key")
    add(pre + "self_attn.v_proj.weight", _heads_in(kv, k, d), "layers", i, "attention",
        "value")
    if config.qkv_bias:
      add(pre + "self_attn.q_proj.bias", _heads_bias(h, k), "layers", i, "attention",
          "query_bias")
      add(pre + "self_attn.k_proj.bias", _heads_bias(kv, k), "layers", i, "attention",
          "key_bias")
      add(pre + "self_attn.v_proj.bias", _heads_bias(kv, k), "layers", i, "attention",
          "value_bias")
    if config.qk_norm:
      add(pre + "self_attn.q_norm.weight", _vector(k), "layers", i, "attention",
          "query_norm", "scale")
      add(pre + "self_attn.k_norm.weight", _vector(k), "layers", i, "attention",
          "key_norm", "scale")
    add(pre + "self_attn.o_proj.weight", _heads_out(h, k, d), "layers", i, "attention",
        "out")
    if config.post_norms:  # Gemma-2's names
      add(pre + "post_attention_layernorm.weight", _vector(d), "layers", i,
          "attention_post_norm", "scale")
      add(pre + "pre_feedforward_layernorm.weight", _vector(d), "layers", i, "mlp_norm",
          "scale")
      add(pre + "post_feedforward_layernorm.weight", _vector(d), "layers", i,
          "mlp_post_norm", "scale")
    else:
      add(pre + "post_attention_layernorm.weight", _vector(d), "layers", i, "mlp_norm",
          "scale")
    add(pre + "mlp.gate_proj.weight", _linear(f, d), "layers", i, "mlp", "gate")
    add(pre + "mlp.up_proj.weight", _linear(f, d), "layers", i, "mlp", "up")
    add(pre + "mlp.down_proj.weight", _linear(d, f), "layers", i, "mlp", "down")
  add("model.norm.weight", _vector(d), "final_norm", "scale")
  if config.lm_head == "untied":
    add("lm_head.weight", _linear(v, d), "lm_head")
  if num_score_outputs is not None:
    entries["score.weight"] = _linear(num_score_outputs, d)(("head", "kernel"))
  return entries


def _set_path(tree: dict, path: tuple, value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get_path(tree: Mapping, path: tuple) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _shape_of(tensors: Mapping[str, Any], name: str) -> tuple[int, ...]:
  shape = getattr(tensors, "shape", None)
  if callable(shape):  # SafetensorsTensors: from the header, no data read
    return tuple(shape(name))
  return tuple(np.shape(tensors[name]))


def _abstract_model(config: TransformerConfig, num_score_outputs: int | None):
  if num_score_outputs is None:
    return nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  return nnx.eval_shape(lambda: RewardModel(
      config, num_outputs=num_score_outputs,
      head_config={"use_bias": False}, rngs=nnx.Rngs(0)))


def load_decoder_params(
    hf_config: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    *,
    reward_model: bool = False,
    config: TransformerConfig | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_AXIS_RULES,
    ignore: Collection[str] = (),
    head_rng: jax.Array | None = None,
) -> tuple[TransformerConfig, nnx.GraphDef, dict[str, Any]]:
  """Loads HF Llama-family tensors into rmjax's decoder (or a reward model on it).

  The abstract model comes from `nnx.eval_shape`; all names and shapes are checked
  against it before any data is read; then each tensor is read, converted (see the
  module docstring's table), cast to `config.param_dtype` and placed with one
  `jax.device_put` into its target sharding: `logical_partition_specs(state, rules,
  mesh=mesh)` on the mesh, or the default device without a mesh.

  Args:
    hf_config: the parsed config.json.
    tensors: Mapping HF tensor name -> array (e.g. `open_safetensors(path)`, lazy).
    reward_model: False (default): a bare `Transformer`. True: a `RewardModel` with a
      bias-free "scalar" head (HF's `score` layer, output count from `score.weight`).
    config: the `TransformerConfig`; None derives it with `decoder_config_from_hf`. For
      a reward model that derivation sets lm_head="none" (HF's *ForSequenceClassification
      has no LM head) and then `lm_head.weight`, if present, must be in `ignore`.
    mesh: optional mesh for the shardings.
    rules: logical-axis rules (default `DEFAULT_LOGICAL_AXIS_RULES`).
    ignore: tensor names to skip knowingly (e.g. {"lm_head.weight"}, or "score.weight"
      to start a reward head fresh).
    head_rng: with reward_model=True and no `score.weight` (a CausalLM checkpoint):
      the key that initialises the head (ScalarHead's N(0, 1 / (D + 1))); without it a
      missing score.weight is an error.

  Returns:
    (config, graphdef, params): params is a pure nested dict of arrays with the
    structure of `nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])`; rebuild the model
    with `nnx.merge(graphdef, params)`; for a reward model `make_reward_apply(graphdef)`
    works as for `init_reward_model`.

  Raises:
    CheckpointError naming the tensor: a missing tensor, an unused tensor, a shape that
    does not match the config; or naming the config field for unsupported options.
  """
  if config is None:
    config = decoder_config_from_hf(hf_config,
                                    lm_head="none" if reward_model else None)
  names = set(tensors)
  ignore = set(ignore)
  derived = {n for n in names if n.endswith(_DERIVED_SUFFIXES)}
  num_outputs = None
  init_head = False
  if reward_model:
    if "score.weight" in names and "score.weight" not in ignore:
      shape = _shape_of(tensors, "score.weight")
      if len(shape) != 2:
        raise CheckpointError(f"tensor 'score.weight' must be [num_labels, D], got {shape}.")
      num_outputs = int(shape[0])
    elif head_rng is not None:
      num_outputs, init_head = 1, True
    else:
      raise CheckpointError(
          "tensor 'score.weight' (the reward head of *ForSequenceClassification) is missing "
          "from the checkpoint; pass head_rng to initialise a fresh head.")
  layouts = tensor_layouts(config, num_score_outputs=num_outputs)
  if init_head:
    del layouts["score.weight"]
  # A tied checkpoint may still store lm_head.weight (a copy of the embedding).
  tied_copy = (config.lm_head == "tied" and "lm_head.weight" in names
               and "lm_head.weight" not in ignore)
  expected = set(layouts)
  missing = sorted(expected - names)
  unused = sorted(names - expected - ignore - derived - ({"lm_head.weight"} if tied_copy
                                                         else set()))
  if missing:
    raise CheckpointError(
        f"checkpoint is missing {len(missing)} tensor(s) that the config needs: "
        f"{missing[:8]}{' ...' if len(missing) > 8 else ''}.")
  if unused:
    raise CheckpointError(
        f"checkpoint has {len(unused)} tensor(s) the model does not use: {unused[:8]}"
        f"{' ...' if len(unused) > 8 else ''}; the config may not describe these weights "
        "(pass ignore=... to skip them knowingly).")
  for name, layout in layouts.items():
    shape = _shape_of(tensors, name)
    if shape != layout.hf_shape:
      raise CheckpointError(
          f"tensor {name!r} has shape {shape}, but the config (hidden_size="
          f"{config.d_model}, heads={config.num_heads}, kv_heads={config.kv_heads}, "
          f"head_dim={config.head_dim}, intermediate_size={config.mlp_dim}, "
          f"vocab_size={config.vocab_size}) expects {layout.hf_shape}.")

  model = _abstract_model(config, num_outputs)
  graphdef, abstract_state = nnx.split(model, nnx.Param)
  abstract = nnx.to_pure_dict(abstract_state)
  if mesh is not None:
    specs = logical_partition_specs(abstract_state, rules, mesh=mesh)

  def sharding(path):
    if mesh is None:
      return None
    return jax.sharding.NamedSharding(mesh, _get_path(specs, path))

  dtype = config.parameter_dtype
  params: dict[str, Any] = {}
  for name, layout in layouts.items():
    target = _get_path(abstract, layout.path)
    value = np.ascontiguousarray(layout.to_rmjax(np.asarray(tensors[name])).astype(dtype))
    if value.shape != tuple(target.shape):
      raise CheckpointError(
          f"tensor {name!r} converts to shape {value.shape}, but parameter "
          f"{'.'.join(map(str, layout.path))} has shape {tuple(target.shape)}.")
    _set_path(params, layout.path, jax.device_put(value, sharding(layout.path)))
  if tied_copy:
    stored = np.asarray(tensors["lm_head.weight"])
    if (stored.shape != (config.vocab_size, config.d_model) or not np.array_equal(
        stored, np.asarray(tensors["model.embed_tokens.weight"]))):
      raise CheckpointError(
          "tensor 'lm_head.weight' differs from 'model.embed_tokens.weight' although the "
          "config ties them (tie_word_embeddings); load with lm_head='untied'.")
  if init_head:
    d = config.d_model
    kernel = jax.random.normal(head_rng, (d, 1), dtype) / np.sqrt(d + 1.0)
    _set_path(params, ("head", "kernel"), jax.device_put(kernel, sharding(("head", "kernel"))))
  left = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]
          if not _has_path(params, p)]
  if left:
    raise CheckpointError(f"parameters not filled by the checkpoint: {left[:8]}.")
  return config, graphdef, params


def _has_path(tree: Mapping, key_path) -> bool:
  for entry in key_path:
    key = getattr(entry, "key", getattr(entry, "idx", None))
    if not isinstance(tree, Mapping) or key not in tree:
      return False
    tree = tree[key]
  return True


def load_pretrained_decoder(
    path: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None,
    rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_AXIS_RULES,
    dtype: str = "float32", param_dtype: str = "float32", max_len: int | None = None,
) -> tuple[TransformerConfig, nnx.GraphDef, dict[str, Any]]:
  """Loads a HF Llama / Qwen2 / Qwen3 CausalLM directory as a bare `Transformer`.

  Returns (config, graphdef, params); `nnx.merge(graphdef, params).logits(tokens,
  mask)` gives [B, L, V] vocabulary logits. See `load_decoder_params`.
  """
  hf_config, tensors = read_checkpoint(path)
  config = decoder_config_from_hf(hf_config, dtype=dtype, param_dtype=param_dtype,
                                  max_len=max_len)
  return load_decoder_params(hf_config, tensors, config=config, mesh=mesh, rules=rules)


def abstract_reward_model(
    path: str | os.PathLike, *, dtype: str = "float32", param_dtype: str = "float32",
    max_len: int | None = None,
) -> tuple[TransformerConfig, nnx.GraphDef, dict[str, Any]]:
  """`load_pretrained_reward_model` of a HF directory with its params as shapes alone.

  What a dry run compiles (`abstract_token_model_from_checkpoint` in
  `rmjax.tasks.reward_model.scoring`): the config comes from config.json; no tensor data
  is read, so a directory holding only config.json (a model not downloaded yet) works.
  The head's output count is the rows of `score.weight` when the directory has
  safetensors (their header only; a checkpoint without `score.weight` has no reward head,
  as for `load_pretrained_reward_model`), else config.json's `num_labels` (or the size of
  its `id2label`), else 1.

  Returns:
    (config, graphdef, params): params a nested dict of `jax.ShapeDtypeStruct` with the
    structure `load_pretrained_reward_model` gives.

  Raises:
    CheckpointError: no or a malformed config.json, unsupported options, or safetensors
      without `score.weight`.
  """
  hf_config = read_config(path)
  config = decoder_config_from_hf(hf_config, lm_head="none", dtype=dtype,
                                  param_dtype=param_dtype, max_len=max_len)
  directory = pathlib.Path(path)
  if (directory / SINGLE_FILE).is_file() or (directory / INDEX_FILE).is_file():
    tensors = open_safetensors(directory)
    if "score.weight" not in tensors:
      raise CheckpointError(
          f"checkpoint {os.fspath(path)!r} has no tensor 'score.weight' (the reward head of "
          "*ForSequenceClassification): a causal LM gives no reward; train a head first.")
    num_outputs = int(_shape_of(tensors, "score.weight")[0])
  elif "num_labels" in hf_config:
    num_outputs = int(hf_config["num_labels"])
  elif isinstance(hf_config.get("id2label"), Mapping):
    num_outputs = len(hf_config["id2label"])
  else:
    num_outputs = 1
  graphdef, abstract_state = nnx.split(_abstract_model(config, num_outputs), nnx.Param)
  return config, graphdef, nnx.to_pure_dict(abstract_state)


def load_pretrained_reward_model(
    path: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None,
    rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_AXIS_RULES,
    head_rng: jax.Array | None = None, dtype: str = "float32",
    param_dtype: str = "float32", max_len: int | None = None,
) -> tuple[TransformerConfig, nnx.GraphDef, dict[str, Any]]:
  """Loads a HF checkpoint directory as an rmjax `RewardModel` (bias-free scalar head).

  A `*ForSequenceClassification` checkpoint gives its `score` head. A `*ForCausalLM`
  checkpoint needs `head_rng` (a fresh head); its `lm_head.weight`, if any, is skipped
  (a reward model has no LM head: config.lm_head = "none").

  Returns:
    (config, graphdef, params), usable with `rmjax.models.make_reward_apply(graphdef)`.
  """
  hf_config, tensors = read_checkpoint(path)
  config = decoder_config_from_hf(hf_config, lm_head="none", dtype=dtype,
                                  param_dtype=param_dtype, max_len=max_len)
  return load_decoder_params(hf_config, tensors, reward_model=True, config=config,
                             mesh=mesh, rules=rules, head_rng=head_rng,
                             ignore={"lm_head.weight"} & set(tensors))
