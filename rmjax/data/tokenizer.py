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

from typing import NamedTuple, Sequence

import numpy as np

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
BYTE_OFFSET = 3
VOCAB_SIZE = 256 + BYTE_OFFSET


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

  >>> tok = ByteTokenizer()
  >>> ids = tok.encode("é!")
  >>> ids.tolist(), tok.decode(ids)
  ([198, 172, 36], 'é!')
  """

  pad_id: int = PAD_ID
  bos_id: int = BOS_ID
  eos_id: int = EOS_ID
  vocab_size: int = VOCAB_SIZE

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
    prompt_ids = self.encode(prompt)
    response_ids = self.encode(response)
    prompt_cut = max(0, len(prompt_ids) - max_prompt_len)
    prompt_ids = prompt_ids[prompt_cut:]
    response_room = max_len - 2 - len(prompt_ids)
    response_cut = max(0, len(response_ids) - response_room)
    response_ids = response_ids[:response_room]
    length = 2 + len(prompt_ids) + len(response_ids)
    tokens = np.zeros(max_len, dtype=np.int32)
    tokens[0] = BOS_ID
    tokens[1:1 + len(prompt_ids)] = prompt_ids
    tokens[1 + len(prompt_ids):length - 1] = response_ids
    tokens[length - 1] = EOS_ID
    mask = (np.arange(max_len) < length).astype(np.int32)
    return tokens, mask, Truncation(int(prompt_cut), int(response_cut))
