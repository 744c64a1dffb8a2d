"""Reading and writing Hugging Face checkpoint directories in the safetensors format.

A checkpoint directory holds `config.json` and either one `model.safetensors` or shards
listed by `model.safetensors.index.json` ({"weight_map": {tensor name: shard file}}).
A safetensors file is an 8-byte little-endian header length N, an N-byte JSON header
({name: {"dtype", "shape", "data_offsets": [begin, end]}}, optional "__metadata__") and
the raw little-endian tensor bytes (https://github.com/huggingface/safetensors, format
spec in its README).

`read_checkpoint(path) -> (config dict, SafetensorsTensors)`: the tensors are a lazy
read-only Mapping name -> np.ndarray; each access reads one tensor with
`safetensors.safe_open(file, framework="numpy")`, so a loader can place tensors on
devices one by one without holding the whole checkpoint in host memory.
`write_checkpoint(path, config, tensors)` writes config.json and model.safetensors.
Every failure (missing file, truncated or corrupted file, index naming a missing shard)
raises `CheckpointError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import json
import os
import pathlib
import struct
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Bytes per element of the safetensors dtypes numpy can hold (for the size check).
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                "I8": 1, "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}


class CheckpointError(ValueError):
  """A checkpoint file is missing, truncated, corrupted or does not match its config."""


def _check_file_layout(file: pathlib.Path) -> dict[str, Any]:
  """Parses a safetensors header and checks the file holds every byte it announces.

  safetensors memory-maps the file and checks the header itself, but the error it raises
  does not name the file; this check runs first so the message can, and also catches a
  file cut inside the tensor data.

  Returns:
    The header dict (without "__metadata__").
  """
  size = file.stat().st_size
  with open(file, "rb") as handle:
    head = handle.read(8)
    if len(head) < 8:
      raise CheckpointError(
          f"safetensors file {file} is truncated: {size} bytes, shorter than the 8-byte "
          "header length.")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > size - 8:
      raise CheckpointError(
          f"safetensors file {file} is truncated or corrupted: its header announces "
          f"{header_len} header bytes but the file has {size - 8} after the length.")
    raw = handle.read(header_len)
  try:
    header = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise CheckpointError(
        f"safetensors file {file} has a corrupted header (not valid UTF-8 JSON): "
        f"{error}.") from error
  if not isinstance(header, dict):
    raise CheckpointError(
        f"safetensors file {file} has a corrupted header: expected a JSON object, got "
        f"{type(header).__name__}.")
  header.pop("__metadata__", None)
  data_len = size - 8 - header_len
  for name, entry in header.items():
    try:
      begin, end = entry["data_offsets"]
      count = int(np.prod(entry["shape"], dtype=np.int64))
      width = _DTYPE_BYTES.get(entry["dtype"])
    except (KeyError, TypeError, ValueError) as error:
      raise CheckpointError(
          f"safetensors file {file}: header entry {name!r} is corrupted ({entry!r})."
      ) from error
    if end > data_len:
      raise CheckpointError(
          f"safetensors file {file} is truncated: tensor {name!r} ends at data byte "
          f"{end} but the file holds {data_len} data bytes.")
    if width is not None and end - begin != count * width:
      raise CheckpointError(
          f"safetensors file {file}: tensor {name!r} of dtype {entry['dtype']} and shape "
          f"{entry['shape']} needs {count * width} bytes, its offsets span {end - begin}.")
  return header


class SafetensorsTensors(Mapping):
  """Lazy read-only mapping tensor name -> np.ndarray over one or more safetensors files.

  Each `__getitem__` opens the tensor's file with `safetensors.safe_open(...,
  framework="numpy")` and reads that tensor only (a fresh host array). `shape(name)` and
  `dtype(name)` read the header only.

  Args:
    files: mapping tensor name -> file path (from `open_safetensors`).
  """

  def __init__(self, files: Mapping[str, pathlib.Path],
               headers: Mapping[pathlib.Path, Mapping[str, Any]]):
    self._files = dict(files)
    self._headers = dict(headers)

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self._files:
      raise KeyError(f"tensor {name!r} is not in the checkpoint.")
    file = self._files[name]
    try:
      with safetensors.safe_open(str(file), framework="numpy") as handle:
        return handle.get_tensor(name)
    except Exception as error:  # safetensors raises its own SafetensorError types
      raise CheckpointError(
          f"reading tensor {name!r} from safetensors file {file} failed: {error}") from error

  def __iter__(self) -> Iterator[str]:
    return iter(self._files)

  def __len__(self) -> int:
    return len(self._files)

  def shape(self, name: str) -> tuple[int, ...]:
    """Shape of a tensor, from the header (no data read)."""
    return tuple(self._headers[self._files[name]][name]["shape"])

  def dtype(self, name: str) -> str:
    """safetensors dtype name of a tensor ("F32", "BF16", ...), from the header."""
    return self._headers[self._files[name]][name]["dtype"]

  def file(self, name: str) -> pathlib.Path:
    """The file that holds a tensor."""
    return self._files[name]


def _open_file(file: pathlib.Path) -> dict[str, Any]:
  """Header of a safetensors file, after `_check_file_layout` and safetensors' own check."""
  if not file.is_file():
    raise CheckpointError(f"safetensors file {file} does not exist.")
  header = _check_file_layout(file)
  try:
    with safetensors.safe_open(str(file), framework="numpy") as handle:
      names = set(handle.keys())
  except Exception as error:  # SafetensorError: invalid header, overlapping offsets, ...
    raise CheckpointError(f"safetensors file {file} is corrupted: {error}") from error
  if names != set(header):
    raise CheckpointError(
        f"safetensors file {file}: header parse disagrees with safetensors "
        f"({sorted(set(header) ^ names)[:5]}).")
  return header


def open_safetensors(path: str | os.PathLike) -> SafetensorsTensors:
  """Opens the tensors of a checkpoint directory (or one .safetensors file), lazily.

  Looks for `model.safetensors.index.json` (sharded: every shard it names must exist
  and hold the tensors the index assigns to it), else `model.safetensors`.

  Args:
    path: a checkpoint directory, or a single .safetensors file.

  Returns:
    `SafetensorsTensors`, a Mapping name -> np.ndarray read on access.

  Raises:
    CheckpointError naming the missing, truncated or corrupted file.
  """
  path = pathlib.Path(path)
  if path.is_file():
    header = _open_file(path)
    return SafetensorsTensors({name: path for name in header}, {path: header})
  if not path.is_dir():
    raise CheckpointError(f"checkpoint path {path} is neither a directory nor a file.")
  index_file = path / INDEX_FILE
  if index_file.is_file():
    try:
      weight_map = json.loads(index_file.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
      raise CheckpointError(
          f"index file {index_file} is corrupted: expected JSON with a 'weight_map' "
          f"object ({error}).") from error
    if not isinstance(weight_map, dict):
      raise CheckpointError(f"index file {index_file}: 'weight_map' must be an object.")
    headers = {}
    for shard_name in sorted(set(weight_map.values())):
      shard = path / shard_name
      if not shard.is_file():
        raise CheckpointError(
            f"index file {index_file} names shard {shard_name!r}, which does not exist "
            f"in {path}.")
      headers[shard] = _open_file(shard)
    files = {}
    for name, shard_name in weight_map.items():
      shard = path / shard_name
      if name not in headers[shard]:
        raise CheckpointError(
            f"index file {index_file} puts tensor {name!r} in shard {shard_name!r}, which "
            "does not hold it.")
      files[name] = shard
    return SafetensorsTensors(files, headers)
  single = path / SINGLE_FILE
  if not single.is_file():
    raise CheckpointError(
        f"checkpoint directory {path} has neither {SINGLE_FILE} nor {INDEX_FILE}.")
  header = _open_file(single)
  return SafetensorsTensors({name: single for name in header}, {single: header})


def read_config(path: str | os.PathLike) -> dict[str, Any]:
  """The `config.json` of a checkpoint directory as a dict (CheckpointError if absent/bad)."""
  file = pathlib.Path(path) / CONFIG_FILE
  if not file.is_file():
    raise CheckpointError(f"checkpoint directory {path} has no {CONFIG_FILE}.")
  try:
    config = json.loads(file.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise CheckpointError(f"{file} is not valid JSON: {error}") from error
  if not isinstance(config, dict):
    raise CheckpointError(f"{file} must hold a JSON object, got {type(config).__name__}.")
  return config


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], SafetensorsTensors]:
  """(config.json as a dict, lazy tensors) of a Hugging Face checkpoint directory.

  >>> # config, tensors = read_checkpoint("path/to/Llama-3.2-1B")
  """
  return read_config(path), open_safetensors(path)


def write_checkpoint(path: str | os.PathLike, config: Mapping[str, Any],
                     tensors: Mapping[str, np.ndarray], *,
                     metadata: Mapping[str, str] | None = None) -> pathlib.Path:
  """Writes `config.json` and `model.safetensors` into a directory (created if needed).

  Args:
    path: the output directory.
    config: the Hugging Face config, written as indented JSON.
    tensors: name -> numpy array (C-contiguous copies are written).
    metadata: optional string -> string metadata; {"format": "pt"} by default, which
      transformers expects.

  Returns:
    The directory path.
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  (path / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
  arrays = {name: np.ascontiguousarray(np.asarray(value)) for name, value in tensors.items()}
  safetensors.numpy.save_file(arrays, str(path / SINGLE_FILE),
                              metadata=dict(metadata or {"format": "pt"}))
  return path
