"""A `tokenizers.Tokenizer` rebuilt from a GGUF file's tokenizer metadata (byte-level BPE).

A GGUF has no `tokenizer.json`; llama.cpp stores the tokenizer as metadata (spec:
https://github.com/ggml-org/ggml/blob/master/docs/gguf.md, "Tokenizer"):

    tokenizer.ggml.model        "gpt2" = byte-level BPE (the only model rebuilt here)
    tokenizer.ggml.pre          pre-tokenizer name (how text is split before BPE)
    tokenizer.ggml.tokens       [V] token strings, already in the GPT-2 byte-to-unicode alphabet
    tokenizer.ggml.merges       ["a b", ...] BPE merges, highest priority first
    tokenizer.ggml.token_type   [V] 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
    tokenizer.ggml.{bos,eos,unknown,padding}_token_id, add_bos_token, add_eos_token
    tokenizer.chat_template     Jinja chat template (ChatML for SmolLM2)

Rebuilt pipeline (no normalizer):

- model: BPE(vocab = {token: index}, merges), no unknown token (every byte has a token).
- pre-tokenizer, by `tokenizer.ggml.pre`, as llama.cpp's `llama-vocab.cpp` splits:
  * "smollm" (and starcoder, refact, command-r, codeshell, exaone, minerva): each numeric
    character alone (`\\p{N}`), then the GPT-2 regex
    `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+` and byte
    mapping = `Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False)]`,
    which is also SmolLM2's own `tokenizer.json`.
  * "gpt2", "default", "mpt", "olmo", "jais": `ByteLevel(add_prefix_space=False)` (GPT-2 regex).
  * "llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx", "falcon3": the Llama-3 split regex
    (isolated), then `ByteLevel(add_prefix_space=False, use_regex=False)`.
  Others raise: a wrong split silently changes token ids.
- decoder: ByteLevel (bytes back to UTF-8).
- added tokens: control tokens (type 3) as special tokens, user-defined ones (type 4) as plain
  added tokens, all `normalized=False`, so that `<|im_start|>` in text is one token.
- post-processor: BOS prepended iff `add_bos_token`, EOS appended iff `add_eos_token` (both
  False for SmolLM2, whose chat template writes its own `<|im_start|>`/`<|im_end|>`).

transformers (`integrations/gguf/gguf_tokenizer_mapping.py`) builds the same vocabulary, merges and
special tokens; for "smollm" it keeps GPT2Tokenizer's plain ByteLevel split (no digit split).
For SmolLM2 the two agree on every text, because no merge of its vocabulary contains a digit
(checked in the tests against transformers' ids, digits included).

>>> tok = tokenizer_from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
>>> tok.tokenizer.encode("Hello, world!").ids  # doctest: +SKIP
[19556, 28, 905, 17]
"""

from __future__ import annotations

import os
from typing import NamedTuple

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from rmjax.checkpoints.gguf import GGUFFormatError, field_value, read_gguf

TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL = 1, 2, 3
TOKEN_TYPE_USER_DEFINED, TOKEN_TYPE_UNUSED, TOKEN_TYPE_BYTE = 4, 5, 6

_LLAMA3_SPLIT = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                     "minerva")
_GPT2 = ("gpt2", "default", "mpt", "olmo", "jais")
_LLAMA3 = ("llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx", "falcon3")
SUPPORTED_PRE_TOKENIZERS = _DIGITS_THEN_GPT2 + _GPT2 + _LLAMA3


class GGUFTokenizer(NamedTuple):
  """A tokenizer rebuilt from GGUF metadata, with what a chat pipeline needs next to it.

  Attributes:
    tokenizer: the `tokenizers.Tokenizer` (encode with `.encode(text).ids`; decode with
      `.decode(ids, skip_special_tokens=False)` to keep `<|im_end|>` and friends).
    chat_template: `tokenizer.chat_template` (Jinja source) or None.
    bos_id, eos_id, pad_id, unk_id: special ids from the metadata (None when absent).
    special_tokens: the control tokens (type 3), in id order.
    add_bos, add_eos: whether `encode` adds BOS / EOS (the file's `add_bos_token`/`add_eos_token`).
    pre_tokenizer: the file's `tokenizer.ggml.pre`.
  """

  tokenizer: tokenizers.Tokenizer
  chat_template: str | None
  bos_id: int | None
  eos_id: int | None
  pad_id: int | None
  unk_id: int | None
  special_tokens: tuple[str, ...]
  add_bos: bool
  add_eos: bool
  pre_tokenizer: str

  @property
  def vocab_size(self) -> int:
    """Number of token ids (including added/special ones)."""
    return self.tokenizer.get_vocab_size(with_added_tokens=True)


def _pre_tokenizer(pre: str, path: str):
  if pre in _DIGITS_THEN_GPT2:
    return pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  if pre in _GPT2:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in _LLAMA3:
    return pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  raise GGUFFormatError(
    f"{path!r}: tokenizer.ggml.pre is {pre!r}; supported pre-tokenizers: "
    f"{', '.join(SUPPORTED_PRE_TOKENIZERS)}")


def tokenizer_from_gguf(path: str | os.PathLike, reader=None) -> GGUFTokenizer:
  """Rebuilds the byte-level BPE tokenizer stored in a GGUF file's metadata.

  Args:
    path: the `.gguf` file (named in errors).
    reader: an already open `gguf.GGUFReader` of `path` (optional, e.g.
      `rmjax.checkpoints.gguf.open_gguf(path).reader`, to parse the file once).

  Returns:
    `GGUFTokenizer` (see its attributes and the module docstring for the pipeline).

  Raises:
    GGUFFormatError: tokenizer model other than "gpt2", unknown pre-tokenizer, missing tokens,
      duplicate tokens, token_type of the wrong length, special id outside the vocabulary.
  """
  path = os.fspath(path)
  reader = read_gguf(path) if reader is None else reader
  model = field_value(reader, "tokenizer.ggml.model")
  if model != "gpt2":
    raise GGUFFormatError(
      f"{path!r}: tokenizer.ggml.model is {model!r}; only 'gpt2' (byte-level BPE) is rebuilt")
  tokens = field_value(reader, "tokenizer.ggml.tokens")
  merges = field_value(reader, "tokenizer.ggml.merges")
  if not tokens or merges is None:
    raise GGUFFormatError(f"{path!r}: tokenizer.ggml.tokens or tokenizer.ggml.merges is missing")
  vocab = {}
  for i, tok in enumerate(tokens):
    if tok in vocab:
      raise GGUFFormatError(
        f"{path!r}: token {tok!r} appears twice in tokenizer.ggml.tokens (ids {vocab[tok]}, {i})")
    vocab[tok] = i
  types = field_value(reader, "tokenizer.ggml.token_type")
  if types is None:
    types = [TOKEN_TYPE_NORMAL] * len(tokens)
  if len(types) != len(tokens):
    raise GGUFFormatError(
      f"{path!r}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
  pairs = []
  for m in merges:
    parts = m.split(" ")
    if len(parts) != 2:
      raise GGUFFormatError(f"{path!r}: merge {m!r} is not two tokens separated by one space")
    pairs.append((parts[0], parts[1]))

  pre = field_value(reader, "tokenizer.ggml.pre", "default")
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
  tok.pre_tokenizer = _pre_tokenizer(pre, path)
  tok.decoder = decoders.ByteLevel()
  control = [t for t, ty in zip(tokens, types) if ty == TOKEN_TYPE_CONTROL]
  user = [t for t, ty in zip(tokens, types) if ty == TOKEN_TYPE_USER_DEFINED]
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
  if user:
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])

  def special_id(key):
    v = field_value(reader, f"tokenizer.ggml.{key}")
    if v is None:
      return None
    if not 0 <= int(v) < len(tokens):
      raise GGUFFormatError(
        f"{path!r}: tokenizer.ggml.{key} = {v} is outside the vocabulary of {len(tokens)} tokens")
    return int(v)

  bos, eos = special_id("bos_token_id"), special_id("eos_token_id")
  add_bos = bool(field_value(reader, "tokenizer.ggml.add_bos_token", False))
  add_eos = bool(field_value(reader, "tokenizer.ggml.add_eos_token", False))
  for flag, tid, name in ((add_bos, bos, "bos"), (add_eos, eos, "eos")):
    if flag and tid is None:
      raise GGUFFormatError(f"{path!r}: add_{name}_token is set but {name}_token_id is missing")
  if add_bos or add_eos:
    single = ([f"{tokens[bos]}:0"] if add_bos else []) + ["$A:0"] + (
      [f"{tokens[eos]}:0"] if add_eos else [])
    pair = single + ["$B:1"] + ([f"{tokens[eos]}:1"] if add_eos else [])
    specials = sorted({(tokens[i], i) for i, f in ((bos, add_bos), (eos, add_eos)) if f})
    tok.post_processor = processors.TemplateProcessing(
      single=" ".join(single), pair=" ".join(pair), special_tokens=specials)
  return GGUFTokenizer(
    tokenizer=tok,
    chat_template=field_value(reader, "tokenizer.chat_template"),
    bos_id=bos, eos_id=eos, pad_id=special_id("padding_token_id"),
    unk_id=special_id("unknown_token_id"), special_tokens=tuple(control),
    add_bos=add_bos, add_eos=add_eos, pre_tokenizer=pre)
