"""Byte-level tokenizer and the layout of a (prompt, response) sequence.

Token ids: ``pad_id = 0``, ``bos_id = 1``, ``eos_id = 2``, and UTF-8 byte ``b`` becomes
``b + 3``, so ``vocab_size = 259``. Every text is representable, nothing is unknown.

Sequence layout (the contract with the model): every sequence is

    [BOS] + prompt_tokens + response_tokens + [EOS] + [PAD] * n

right-padded to ``max_len``, with ``mask`` 1 on the real tokens. A reward head reads the EOS
position, the last real token. Every sequence has at least 2 real tokens (BOS and EOS).

Truncation rules, applied when ``1 + len(prompt) + len(response) + 1 > max_len``:

1. The prompt keeps its LAST ``max_prompt_len`` tokens (cut from the left): in a dialogue the
   most recent turns, which end where the response starts, matter most.
2. The response keeps its FIRST ``max_len - 2 - len(kept prompt)`` tokens (cut from the
   right), so that the response is read from its beginning.
3. BOS and EOS are always present, so the EOS position is always the last real token.

Cutting is never silent: `encode_pair_sequences` returns a `Truncation` record of how many
tokens were cut from each part, and the data pipeline counts and reports truncated prompts
and responses.

The same rules hold for every tokenizer and chat template (`layout_pair`): a template adds
tokens that are never cut (a start token, a separator, an end token; see `rmjax.data.chat`),
the prompt and the response are cut as above, and the template's end token is the last real
token.

Cutting a UTF-8 byte sequence can split a multi-byte character; `ByteTokenizer.decode` then
shows U+FFFD for the broken piece (``errors='replace'``).

>>> tok = ByteTokenizer()
>>> tok.encode("hi").tolist()
[107, 108]
>>> tokens, mask, cut = tok.encode_pair_sequences("abcdef", "xyz", max_len=8, max_prompt_len=4)
>>> tok.decode(tokens), mask.tolist(), cut
('cdefxy', [1, 1, 1, 1, 1, 1, 1, 1], Truncation(prompt_tokens_cut=2, response_tokens_cut=1))
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
BYTE_OFFSET = 3
VOCAB_SIZE = 256 + BYTE_OFFSET
# data.tokenizer settings; all but "bytes" are resolved by rmjax.data.hf_tokenizer.
NAMED_TOKENIZERS = ("smollm2", "minilm")
TOKENIZER_SPECS = ("bytes", "hf:<path to tokenizer.json>") + NAMED_TOKENIZERS


class Truncation(NamedTuple):
  """How many tokens `encode_pair_sequences` cut from a (prompt, response) pair.

  Attributes:
    prompt_tokens_cut: tokens removed from the left of the prompt.
    response_tokens_cut: tokens removed from the right of the response.
  """

  prompt_tokens_cut: int
  response_tokens_cut: int

  @property
  def prompt_truncated(self) -> bool:
    """Whether the prompt lost any token."""
    return self.prompt_tokens_cut > 0

  @property
  def response_truncated(self) -> bool:
    """Whether the response lost any token."""
    return self.response_tokens_cut > 0


def validate_lengths(max_len: int, max_prompt_len: int) -> None:
  """Checks the sequence length settings, raising ValueError that names the bad one.

  Args:
    max_len: total sequence length; needs room for BOS, one prompt token, one response
      token and EOS, so ``max_len >= 4``.
    max_prompt_len: most prompt tokens kept; ``0 < max_prompt_len <= max_len - 3`` so that
      every response keeps at least one token.
  """
  for name, value in (("max_len", max_len), ("max_prompt_len", max_prompt_len)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
  if max_len < 4:
    raise ValueError(
        f"max_len must be >= 4 (BOS + 1 prompt token + 1 response token + EOS), got {max_len}")
  if not 0 < max_prompt_len <= max_len - 3:
    raise ValueError(
        f"max_prompt_len must satisfy 0 < max_prompt_len <= max_len - 3 = {max_len - 3} "
        f"(so every response keeps at least one token), got max_prompt_len={max_prompt_len} "
        f"with max_len={max_len}")


class ByteTokenizer:
  """UTF-8 byte tokenizer: ``pad_id=0``, ``bos_id=1``, ``eos_id=2``, byte ``b`` -> ``b + 3``.

  Attributes:
    pad_id: 0, the padding id written after EOS.
    bos_id: 1, first token of every sequence.
    eos_id: 2, last real token of every sequence.
    vocab_size: 259.
    name: "bytes", the ``data.tokenizer`` value that selects it.

  >>> tok = ByteTokenizer()
  >>> ids = tok.encode("é!")
  >>> ids.tolist(), tok.decode(ids)
  ([198, 172, 36], 'é!')
  """

  pad_id: int = PAD_ID
  bos_id: int = BOS_ID
  eos_id: int = EOS_ID
  vocab_size: int = VOCAB_SIZE
  name: str = "bytes"

  def encode(self, text: str) -> np.ndarray:
    """Encodes text as its UTF-8 bytes shifted by 3.

    Args:
      text: any Python string.

    Returns:
      int32 [len(text.encode('utf-8'))] token ids in ``[3, 259)``; no BOS or EOS.
    """
    if not isinstance(text, str):
      raise TypeError(f"text must be a str, got {type(text).__name__}: {text!r:.80}")
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return data.astype(np.int32) + BYTE_OFFSET

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Decodes token ids back to text, ignoring PAD, BOS and EOS.

    Args:
      ids: [T] integer token ids (any integer dtype). Ids outside ``[0, 259)`` raise.

    Returns:
      The text; invalid UTF-8 (e.g. a character cut by truncation) becomes U+FFFD.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
      raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
      raise ValueError(
          f"ids must lie in [0, {VOCAB_SIZE}), got min {ids.min()} and max {ids.max()}")
    data = ids[ids >= BYTE_OFFSET] - BYTE_OFFSET
    return data.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

  def encode_pair_sequences(
      self, prompt: str, response: str, *, max_len: int, max_prompt_len: int
  ) -> tuple[np.ndarray, np.ndarray, Truncation]:
    """Lays out ``[BOS] + prompt + response + [EOS]`` right-padded to ``max_len``.

    Truncation follows the module docstring: the prompt keeps its last
    ``max_prompt_len`` tokens, the response its first ``max_len - 2 - len(kept prompt)``.

    Args:
      prompt: prompt text (may be empty).
      response: response text (may be empty; the sequence is then BOS + prompt + EOS).
      max_len: sequence length L, ``>= 4``.
      max_prompt_len: most prompt tokens kept, ``0 < max_prompt_len <= max_len - 3``.

    Returns:
      tokens: int32 [L], ids with PAD (0) after EOS.
      mask: int32 [L], 1 on real tokens (BOS..EOS), 0 on padding.
      truncation: `Truncation` with the number of tokens cut from each part.
    """
    validate_lengths(max_len, max_prompt_len)
    return layout_pair(
        (BOS_ID,), self.encode(prompt), (), self.encode(response), (EOS_ID,),
        max_len=max_len, max_prompt_len=max_prompt_len, pad_id=PAD_ID)

  def token_to_id(self, token: str) -> None:
    """None for every string: the byte tokenizer has no named special tokens.

    Chat templates look their special tokens (``<|im_end|>``, ``[SEP]``) up here and
    reject the byte tokenizer with a clear error; its BOS and EOS are ids 1 and 2 only.
    """
    del token
    return None


def validate_layout_lengths(max_len: int, max_prompt_len: int, fixed_tokens: int) -> None:
  """Checks the lengths of a layout with ``fixed_tokens`` tokens that are never cut.

  A layout (`layout_pair`) is ``start + prompt + separator + response + end``; ``start``,
  ``separator`` and ``end`` together hold ``fixed_tokens`` tokens (2 for the byte layout:
  BOS and EOS). With ``fixed_tokens = 2`` this is `validate_lengths`.

  Args:
    max_len: total sequence length; ``max_len >= fixed_tokens + 2`` (one prompt token and
      one response token besides the fixed ones).
    max_prompt_len: most prompt tokens kept; ``0 < max_prompt_len <= max_len - fixed_tokens
      - 1`` so that every response keeps at least one token.
    fixed_tokens: number of tokens that are never cut, >= 1 (the end token at least).

  Raises:
    ValueError: naming the bad setting, what was expected and what came.
  """
  if fixed_tokens == 2:
    validate_lengths(max_len, max_prompt_len)
    return
  for name, value in (("max_len", max_len), ("max_prompt_len", max_prompt_len)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
  if fixed_tokens < 1:
    raise ValueError(f"a layout needs at least its end token, got fixed_tokens={fixed_tokens}")
  if max_len < fixed_tokens + 2:
    raise ValueError(
        f"max_len must be >= {fixed_tokens + 2} ({fixed_tokens} template tokens that are "
        f"never cut + 1 prompt token + 1 response token), got {max_len}")
  if not 0 < max_prompt_len <= max_len - fixed_tokens - 1:
    raise ValueError(
        f"max_prompt_len must satisfy 0 < max_prompt_len <= max_len - {fixed_tokens + 1} = "
        f"{max_len - fixed_tokens - 1} ({fixed_tokens} template tokens are never cut, and "
        f"every response keeps at least one token), got max_prompt_len={max_prompt_len} "
        f"with max_len={max_len}")


def layout_pair(
    start_ids: Sequence[int], prompt_ids: Sequence[int] | np.ndarray,
    separator_ids: Sequence[int], response_ids: Sequence[int] | np.ndarray,
    end_ids: Sequence[int], *, max_len: int, max_prompt_len: int, pad_id: int,
) -> tuple[np.ndarray, np.ndarray, Truncation]:
  """Lays out ``start + prompt + separator + response + end`` right-padded to ``max_len``.

  The module's truncation rules, for any template: ``start``, ``separator`` and ``end``
  (F tokens in all) are never cut; the prompt keeps its LAST ``max_prompt_len`` tokens;
  the response keeps its FIRST ``max_len - F - len(kept prompt)`` tokens. So the last real
  token is always the last token of ``end`` (the token a reward head reads). Positions after
  it hold ``pad_id``; ``mask`` (not the ids) marks padding, so ``pad_id`` may equal an id
  of ``end`` (pad = eos).

  The byte layout is ``layout_pair([BOS], prompt, [], response, [EOS], pad_id=0)``.

  Args:
    start_ids: ids before the prompt (e.g. [BOS], [CLS], or none).
    prompt_ids: [P] prompt ids.
    separator_ids: ids between prompt and response (e.g. [SEP], or ChatML's
      ``<|im_start|>assistant\\n``).
    response_ids: [R] response ids.
    end_ids: ids after the response, at least one (EOS, [SEP], ``<|im_end|>``).
    max_len: L.
    max_prompt_len: most prompt ids kept (`validate_layout_lengths`).
    pad_id: id written after the end.

  Returns:
    tokens: int32 [L]; mask: int32 [L], 1 on the real tokens; `Truncation`.

  >>> tokens, mask, cut = layout_pair([7], [10, 11, 12], [8], [20, 21, 22], [9],
  ...                                 max_len=7, max_prompt_len=2, pad_id=0)
  >>> tokens.tolist(), mask.tolist(), cut
  ([7, 11, 12, 8, 20, 21, 9], [1, 1, 1, 1, 1, 1, 1],
   Truncation(prompt_tokens_cut=1, response_tokens_cut=1))
  """
  start_ids, separator_ids, end_ids = (np.asarray(x, dtype=np.int32).reshape(-1)
                                       for x in (start_ids, separator_ids, end_ids))
  if end_ids.size == 0:
    raise ValueError("end_ids must hold at least one token (the token a reward head reads), "
                     "got none")
  fixed = start_ids.size + separator_ids.size + end_ids.size
  validate_layout_lengths(max_len, max_prompt_len, fixed)
  prompt_ids = np.asarray(prompt_ids, dtype=np.int32).reshape(-1)
  response_ids = np.asarray(response_ids, dtype=np.int32).reshape(-1)
  prompt_cut = max(0, len(prompt_ids) - max_prompt_len)
  prompt_ids = prompt_ids[prompt_cut:]
  response_room = max_len - fixed - len(prompt_ids)
  response_cut = max(0, len(response_ids) - response_room)
  response_ids = response_ids[:response_room]
  real = np.concatenate([start_ids, prompt_ids, separator_ids, response_ids, end_ids])
  tokens = np.full(max_len, pad_id, dtype=np.int32)
  tokens[:len(real)] = real
  mask = (np.arange(max_len) < len(real)).astype(np.int32)
  return tokens, mask, Truncation(int(prompt_cut), int(response_cut))


def check_tokenizer_matches_vocab(tokenizer: Any, vocab_size: int, *,
                                  model: str = "the model") -> None:
  """Raises unless every id of ``tokenizer`` fits an embedding of ``vocab_size`` rows.

  Requires ``tokenizer.vocab_size <= vocab_size`` (a model may have more rows than the
  tokenizer has ids: vocabularies are often padded to a multiple of 64 or 128) and the
  special ids below ``vocab_size``.

  Args:
    tokenizer: `ByteTokenizer` or `HFTokenizer` (anything with ``vocab_size`` and the
      special ids).
    vocab_size: the model's embedding rows.
    model: the model's name for the message.

  Raises:
    ValueError: naming the tokenizer, its largest id and the model's vocab size.
  """
  if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) \
      or vocab_size < 1:
    raise ValueError(f"vocab_size must be an int >= 1, got {vocab_size!r}")
  name = getattr(tokenizer, "name", type(tokenizer).__name__)
  if tokenizer.vocab_size > vocab_size:
    raise ValueError(
        f"tokenizer {name!r} produces ids up to {tokenizer.vocab_size - 1} (vocab_size "
        f"{tokenizer.vocab_size}), but {model} has an embedding of vocab_size {vocab_size}: "
        f"ids >= {vocab_size} have no row. Use the tokenizer that belongs to {model}")
  for field in ("pad_id", "bos_id", "eos_id"):
    value = getattr(tokenizer, field, None)
    if value is not None and not 0 <= value < vocab_size:
      raise ValueError(f"tokenizer {name!r}: {field}={value} lies outside [0, {vocab_size}) "
                       f"of {model}'s vocabulary")
