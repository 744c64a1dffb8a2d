"""Reading local preference JSONL files record by record, accounting for every record.

Pure Python (no TFDS): the TFDS builders call `collect_records`, and so can anything else.

Each non-blank line of a file is one record. A record is either *used* (it becomes a
`PreferenceRecord`) or *malformed* with a named reason; blank lines are not records and are
counted apart. With ``on_malformed="skip"`` malformed records are counted, listed (the first
`MAX_EXAMPLES_PER_REASON` per reason, as ``file:line``) and left out; with
``on_malformed="fail"`` the first one raises `MalformedRecordError` with file, line and reason.

Two record formats:

* generic preference JSONL (`parse_preference_record`): ``prompt``, ``chosen``, ``rejected``
  strings; optional ``margin`` (finite number >= 0) or, when ``margin`` is absent,
  ``strength`` (finite number; margin = abs(strength)); a JSON ``null`` counts as absent.
* Anthropic HH-RLHF (`parse_hh_rlhf_record`): ``chosen`` and ``rejected`` whole dialogues;
  the prompt is the shared prefix up to and including the last "\\n\\nAssistant:" marker
  common to both, the replies are what follows, less one leading space.

>>> parse_hh_rlhf_record({"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: Hello!",
...                       "rejected": "\\n\\nHuman: Hi\\n\\nAssistant: Go away."})
('\\n\\nHuman: Hi\\n\\nAssistant:', 'Hello!', 'Go away.', 0.0)
"""

from __future__ import annotations

import collections
import gzip
import json
import math
import os
from typing import Any, Callable, Iterator, NamedTuple, Sequence

HUMAN_MARKER = "\n\nHuman:"
ASSISTANT_MARKER = "\n\nAssistant:"
MAX_EXAMPLES_PER_REASON = 20
ON_MALFORMED_CHOICES = ("skip", "fail")

COMMON_REASONS = {
    "invalid_utf8": "the line is not valid UTF-8",
    "invalid_json": "the line is not valid JSON",
    "not_an_object": "the JSON value is not an object",
    "missing_field": "a required field is missing",
    "non_string_field": "a text field is not a string",
    "identical_chosen_rejected": "chosen and rejected are identical",
}
PREFERENCE_REASONS = dict(
    COMMON_REASONS,
    invalid_margin="margin is not a finite number >= 0, or strength is not a finite number",
    empty_response="chosen or rejected is empty (or whitespace only)",
)
HH_RLHF_REASONS = dict(
    COMMON_REASONS,
    no_assistant_turn='chosen or rejected has no "\\n\\nAssistant:" turn',
    no_shared_turn_boundary=(
        'chosen and rejected share no "\\n\\nAssistant:" marker, so the replies do not start '
        "after a common turn boundary"),
    reply_not_final_turn=(
        "a reply after the last shared turn boundary holds further Human/Assistant turns"),
    empty_reply="a final reply is empty (or whitespace only)",
)


class Malformed(Exception):
  """Raised by a record parser: ``reason`` (a key of the reasons table) and ``detail``."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


class MalformedRecordError(ValueError):
  """A malformed record under ``on_malformed="fail"``; names file, line and reason."""

  def __init__(self, path: str, line: int, reason: str, detail: str):
    super().__init__(
        f"{path}:{line}: malformed record ({reason}): {detail} "
        f"[on_malformed='fail'; set on_malformed='skip' to count and leave such records out]")
    self.path = path
    self.line = line
    self.reason = reason
    self.detail = detail


class PreferenceRecord(NamedTuple):
  """One usable preference pair and where it came from.

  Attributes:
    prompt: prompt text (may be empty for generic JSONL).
    chosen: preferred response.
    rejected: other response.
    margin: float >= 0, 0.0 when the record has none.
    source_file: path of the file the record was read from.
    source_line: 1-based line number in that file.
  """

  prompt: str
  chosen: str
  rejected: str
  margin: float
  source_file: str
  source_line: int


def _require_object(obj: Any) -> dict:
  if not isinstance(obj, dict):
    raise Malformed("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
  return obj


def _require_strings(obj: dict, fields: Sequence[str]) -> list[str]:
  missing = [f for f in fields if f not in obj]
  if missing:
    raise Malformed(
        "missing_field",
        f"missing field(s) {missing}; expected {list(fields)}, found {sorted(obj)}")
  for f in fields:
    if not isinstance(obj[f], str):
      raise Malformed(
          "non_string_field", f"field '{f}' must be a string, got {type(obj[f]).__name__}")
  return [obj[f] for f in fields]


def _finite_number(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def parse_preference_record(obj: Any) -> tuple[str, str, str, float]:
  """Validates one generic preference record.

  Args:
    obj: the decoded JSON value of one line.

  Returns:
    ``(prompt, chosen, rejected, margin)``.

  Raises:
    Malformed: with a reason of `PREFERENCE_REASONS`.

  >>> parse_preference_record({"prompt": "p", "chosen": "a", "rejected": "b", "strength": -2})
  ('p', 'a', 'b', 2.0)
  """
  obj = _require_object(obj)
  prompt, chosen, rejected = _require_strings(obj, ("prompt", "chosen", "rejected"))
  margin = obj.get("margin")
  strength = obj.get("strength")
  if margin is not None:
    if not _finite_number(margin) or margin < 0:
      raise Malformed("invalid_margin", f"field 'margin' must be a finite number >= 0, "
                      f"got {margin!r}")
    margin = float(margin)
  elif strength is not None:
    if not _finite_number(strength):
      raise Malformed("invalid_margin", f"field 'strength' must be a finite number, "
                      f"got {strength!r}")
    margin = abs(float(strength))
  else:
    margin = 0.0
  for name, text in (("chosen", chosen), ("rejected", rejected)):
    if not text.strip():
      raise Malformed("empty_response", f"field '{name}' is empty or whitespace: {text!r}")
  if chosen == rejected:
    raise Malformed("identical_chosen_rejected", "fields 'chosen' and 'rejected' are equal")
  return prompt, chosen, rejected, margin


def _strip_one_space(text: str) -> str:
  return text[1:] if text.startswith(" ") else text


def parse_hh_rlhf_record(obj: Any) -> tuple[str, str, str, float]:
  """Splits one HH-RLHF record into the shared prompt and the two final replies.

  The prompt is the common prefix of ``chosen`` and ``rejected`` up to and including the
  last "\\n\\nAssistant:" marker lying wholly inside it; each reply is the rest of its
  dialogue less one leading space.

  Args:
    obj: the decoded JSON value of one line.

  Returns:
    ``(prompt, chosen_reply, rejected_reply, 0.0)``.

  Raises:
    Malformed: with a reason of `HH_RLHF_REASONS`.
  """
  obj = _require_object(obj)
  chosen, rejected = _require_strings(obj, ("chosen", "rejected"))
  if chosen == rejected:
    raise Malformed("identical_chosen_rejected", "fields 'chosen' and 'rejected' are equal")
  for name, text in (("chosen", chosen), ("rejected", rejected)):
    if ASSISTANT_MARKER not in text:
      raise Malformed("no_assistant_turn", f"field '{name}' has no {ASSISTANT_MARKER!r} turn")
  shared = os.path.commonprefix([chosen, rejected])
  cut = shared.rfind(ASSISTANT_MARKER)
  if cut < 0:
    raise Malformed(
        "no_shared_turn_boundary",
        f"the shared prefix ({len(shared)} characters) holds no {ASSISTANT_MARKER!r} marker")
  cut += len(ASSISTANT_MARKER)
  prompt = chosen[:cut]
  replies = []
  for name, text in (("chosen", chosen), ("rejected", rejected)):
    reply = text[cut:]
    for marker in (HUMAN_MARKER, ASSISTANT_MARKER):
      if marker in reply:
        raise Malformed(
            "reply_not_final_turn",
            f"the '{name}' reply after the last shared turn boundary holds a further "
            f"{marker!r} turn")
    reply = _strip_one_space(reply)
    if not reply.strip():
      raise Malformed("empty_reply", f"the final '{name}' reply is empty or whitespace: "
                      f"{reply!r}")
    replies.append(reply)
  if replies[0] == replies[1]:
    raise Malformed("identical_chosen_rejected", "the two final replies are equal")
  return prompt, replies[0], replies[1], 0.0


def _open_lines(path: str) -> Iterator[bytes]:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    yield from f


def check_files_exist(paths: Sequence[str], field: str) -> None:
  """Raises FileNotFoundError naming the config ``field`` and the path when one is missing.

  Args:
    paths: file paths.
    field: the config field the paths came from, e.g. ``"path"`` or ``"eval_path"``.
  """
  for p in paths:
    if not os.path.isfile(p):
      what = "is a directory, not a file" if os.path.isdir(p) else "does not exist"
      raise FileNotFoundError(f"config field '{field}': data file {p!r} {what}")


def split_paths(value: str | Sequence[str]) -> tuple[str, ...]:
  """A tuple of paths from one path, a comma-separated string of paths, or a sequence.

  >>> split_paths("a.jsonl, b.jsonl.gz")
  ('a.jsonl', 'b.jsonl.gz')
  """
  if isinstance(value, str):
    value = value.split(",")
  return tuple(os.fspath(p).strip() for p in value if os.fspath(p).strip())


def collect_records(
    paths: Sequence[str],
    parse: Callable[[Any], tuple[str, str, str, float]],
    reasons: dict[str, str],
    *,
    on_malformed: str = "skip",
    field: str = "path",
) -> tuple[list[PreferenceRecord], dict[str, Any]]:
  """Reads JSONL files (plain or ``.gz``) and accounts for every line.

  Args:
    paths: files, read in order.
    parse: record parser, e.g. `parse_preference_record` or `parse_hh_rlhf_record`.
    reasons: the parser's reason table (reason -> description).
    on_malformed: "skip" (count, report and leave out) or "fail" (raise on the first).
    field: config field the paths came from, named in FileNotFoundError.

  Returns:
    records: the usable records in file order.
    report: ``files``, ``records_read`` (non-blank lines), ``records_used``,
      ``blank_lines``, ``malformed`` (reason -> count, every reason listed) and
      ``malformed_examples`` (reason -> first `MAX_EXAMPLES_PER_REASON` "file:line: detail").

  Raises:
    ValueError: bad ``on_malformed``.
    FileNotFoundError: a path is missing.
    MalformedRecordError: under "fail", on the first malformed record.
  """
  if on_malformed not in ON_MALFORMED_CHOICES:
    raise ValueError(
        f"on_malformed must be one of {ON_MALFORMED_CHOICES}, got {on_malformed!r}")
  paths = tuple(paths)
  if not paths:
    raise ValueError(f"config field '{field}' names no file")
  check_files_exist(paths, field)
  records = []
  counts = collections.Counter()
  examples = collections.defaultdict(list)
  read = blank = 0
  for path in paths:
    for line_no, raw in enumerate(_open_lines(path), start=1):
      if not raw.strip():
        blank += 1
        continue
      read += 1
      try:
        try:
          text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise Malformed("invalid_utf8", str(e)) from None
        try:
          obj = json.loads(text)
        except json.JSONDecodeError as e:
          raise Malformed("invalid_json", str(e)) from None
        prompt, chosen, rejected, margin = parse(obj)
      except Malformed as m:
        if m.reason not in reasons:
          raise AssertionError(f"parser returned unknown reason {m.reason!r}") from None
        if on_malformed == "fail":
          raise MalformedRecordError(path, line_no, m.reason, m.detail) from None
        counts[m.reason] += 1
        if len(examples[m.reason]) < MAX_EXAMPLES_PER_REASON:
          detail = m.detail if len(m.detail) <= 200 else m.detail[:197] + "..."
          examples[m.reason].append(f"{path}:{line_no}: {detail}")
        continue
      records.append(PreferenceRecord(prompt, chosen, rejected, margin, path, line_no))
  report = dict(
      files=list(paths),
      records_read=read,
      records_used=len(records),
      records_malformed=sum(counts.values()),
      blank_lines=blank,
      malformed={r: counts.get(r, 0) for r in reasons},
      malformed_examples={r: examples[r] for r in reasons if examples[r]},
  )
  return records, report


def describe_rejections(report: dict[str, Any]) -> str:
  """One line listing the nonzero malformed counts of a `collect_records` report."""
  parts = [f"{r}: {n}" for r, n in report["malformed"].items() if n]
  return ", ".join(parts) if parts else "none malformed"


def require_records(records: Sequence[PreferenceRecord], report: dict[str, Any],
                    split: str) -> None:
  """Raises ValueError when a split has no usable record, saying what was read and why.

  Args:
    records: the usable records of the split.
    report: its `collect_records` report.
    split: split name for the message.
  """
  if records:
    return
  examples = [e for exs in report["malformed_examples"].values() for e in exs[:2]]
  raise ValueError(
      f"no usable records in split '{split}' of {report['files']}: read "
      f"{report['records_read']} records (plus {report['blank_lines']} blank lines), "
      f"{report['records_malformed']} malformed ({describe_rejections(report)})"
      + (f"; e.g. {examples[:4]}" if examples else ""))
