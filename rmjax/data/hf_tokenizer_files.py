"""Loading Hugging Face `tokenizer.json` files into `tokenizers.Tokenizer` objects.

Only loading: the general tokenizer wrapper the data pipeline uses lives in
`rmjax.data.hf_tokenizer`. Many `tokenizer.json` files pin padding and truncation (e.g.
all-MiniLM-L6-v2's pads and cuts every text at 128 tokens); rmjax pads and truncates
in its own data layer, with documented rules, so both are switched off here by default:
a text is encoded whole, to exactly its own tokens.

Reference: the `tokenizers` serialisation format
(https://huggingface.co/docs/tokenizers/api/tokenizer).
"""

from __future__ import annotations

import os
from typing import Any

import tokenizers


def load_tokenizer_json(path_or_bytes: str | os.PathLike | bytes,
                        disable_padding_and_truncation: bool = True) -> tokenizers.Tokenizer:
  """A `tokenizers.Tokenizer` from a `tokenizer.json` file or its content.

  Args:
    path_or_bytes: a path to a tokenizer.json file (str or PathLike), or the file's
      content as bytes (e.g. read from a zip without extracting it).
    disable_padding_and_truncation: switch off the padding and truncation the file may
      pin (default True), so `encode(text).ids` is the whole text, unpadded.

  Returns:
    The tokenizer; with the default, `tokenizer.padding` and `tokenizer.truncation` are
    None.

  Raises:
    FileNotFoundError: the path does not exist.
    TypeError: path_or_bytes is neither a path nor bytes.
    ValueError: the content is not a valid tokenizer.json (named by path or "<bytes>").

  >>> spec = (b'{"version": "1.0", "truncation": null, "padding": null, '
  ...         b'"added_tokens": [], "normalizer": null, '
  ...         b'"pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, '
  ...         b'"decoder": null, "model": {"type": "WordLevel", '
  ...         b'"vocab": {"[UNK]": 0, "hi": 1}, "unk_token": "[UNK]"}}')
  >>> load_tokenizer_json(spec).encode("hi there hi").ids
  [1, 0, 1]
  """
  if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
    what = f"<{len(path_or_bytes)} bytes>"
    load: Any = lambda: tokenizers.Tokenizer.from_buffer(bytes(path_or_bytes))  # noqa: E731
  elif isinstance(path_or_bytes, (str, os.PathLike)):
    what = os.fspath(path_or_bytes)
    if not os.path.isfile(what):
      raise FileNotFoundError(f"tokenizer.json file {what} does not exist.")
    load = lambda: tokenizers.Tokenizer.from_file(what)  # noqa: E731
  else:
    raise TypeError(
        "path_or_bytes must be a path (str / os.PathLike) or bytes, got "
        f"{type(path_or_bytes).__name__}."
    )
  try:
    tokenizer = load()
  except Exception as error:  # tokenizers raises a bare Exception on bad JSON.
    raise ValueError(
        f"cannot parse tokenizer.json {what}: {type(error).__name__}: {error}"
    ) from error
  if disable_padding_and_truncation:
    tokenizer.no_padding()
    tokenizer.no_truncation()
  return tokenizer
