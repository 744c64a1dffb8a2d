"""Readers of reward-model benchmarks' released files, each into one `BenchmarkSet`.

Every reader turns its benchmark's file into the same record: per item a prompt and K_i
candidate responses, the correct (chosen) ones first, and ``num_correct[i]`` saying how many
lead. Scoring rules live in `rmjax.eval`; here only the data, exactly as released.

Readers (name: released record -> responses, num_correct):

* rewardbench (RewardBench v1): prompt, chosen, rejected, subset, id -> (chosen, rejected), 1.
* rewardbench2 (RewardBench 2): prompt, chosen [c], rejected [r], num_correct (= c), subset,
  id ("ref:12" / "tied:12" in Ties) -> chosen + rejected, c.
* rewardmath (RewardMATH_direct.json): one row per solution, grouped by problem_id; text
  "\\n".join(eval_solution) -> chosen + rejected, 1.
* rmbench (RM-Bench): id, prompt, chosen [3], rejected [3], domain -> chosen + rejected, 3.
* pandalm (PandaLM testset-v1.json): instruction, input, response1, response2,
  annotator1..3 -> (response1, response2), 0; `BenchmarkSet.labels` decide.
* hhh (HHH alignment): prompt, chosen, rejected, property -> (chosen, rejected), 1.
* hh_rlhf (HH-RLHF): chosen, rejected whole dialogues, split by
  `rmjax.data.builders.records.parse_hh_rlhf_record` -> (chosen, rejected) replies, 1.

Files: ``.jsonl`` / ``.jsonl.gz`` hold one record per non-blank line (sources ``path:line``);
``.json`` / ``.json.gz`` hold a JSON list of records (sources ``path:item k``, k 1-based).
Other names are read as a JSON list when their first non-blank character is ``[``.

Every record is accounted for in ``BenchmarkSet.report``: ``records_read = records_used +
sum(records_skipped.values())``. An evaluation set must be exact, so by default
(``on_malformed="fail"``) the first malformed record raises `MalformedRecordError` naming the
file, the line (or ``item k``), the reason and a detail that names the field, what was expected
and what was found. ``on_malformed="skip"`` counts, lists and leaves such records out instead;
it is the default only for HH-RLHF, whose test file holds known malformed lines (as the
`rmjax.data.builders.HhRlhf` builder). A JSON-list file that is not valid JSON as a whole
raises under either setting (its items cannot be told apart).

Usage::

  bench = read_benchmark("rmbench", "total_dataset.json")   # or read_rmbench(path)
  for i in range(bench.num_items):
    correct = bench.responses[i][:bench.num_correct[i]]
    incorrect = bench.responses[i][bench.num_correct[i]:]
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

from rmjax.data.builders import records as records_lib
from rmjax.data.builders.records import Malformed
from rmjax.data.builders.records import MalformedRecordError

# BIG-bench HHH alignment's properties (Askell et al., 2021).
HHH_PROPERTIES = ("harmless", "helpful", "honest", "other")
RMBENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")
REWARDBENCH2_TIES_SUBSET = "Ties"
PANDALM_LABELS = (0, 1, 2)  # tie, response1 better, response2 better
REWARDMATH_SOLUTION_TYPES = ("chosen", "rejected")

_BASE_REASONS = {
    k: records_lib.COMMON_REASONS[k]
    for k in ("invalid_utf8", "invalid_json", "not_an_object", "missing_field")}
_BASE_REASONS["wrong_type"] = "a field has the wrong JSON type"
_RESPONSE_REASONS = dict(
    _BASE_REASONS,
    empty_response="a candidate response is empty (or whitespace only)",
)
_LENGTH_REASON = dict(wrong_length="a list of responses (or steps) has the wrong length")
# Per benchmark, the reasons a record can be malformed (reason -> description), every one
# listed in the report's `records_skipped`; as the tables of `rmjax.data.builders.records`.
REASONS = {
    "rewardbench": dict(_RESPONSE_REASONS),
    "rewardbench2": dict(
        _RESPONSE_REASONS, **_LENGTH_REASON,
        num_correct_mismatch="field 'num_correct' differs from the length of 'chosen'",
        invalid_ties_id="a Ties id is not '<sample_type>:<int>'",
    ),
    "rewardmath": dict(
        _RESPONSE_REASONS, **_LENGTH_REASON,
        invalid_solution_type="field 'solution_type' is neither 'chosen' nor 'rejected'",
        inconsistent_problem="rows of one problem_id disagree on 'problem' or 'subject'",
        chosen_count="a problem has no chosen row, or several",
        no_rejected="a problem has no rejected row",
    ),
    "rmbench": dict(_RESPONSE_REASONS, **_LENGTH_REASON),
    "pandalm": dict(
        _BASE_REASONS,
        invalid_label="an annotator label is not 0, 1 or 2",
    ),
    "hhh": dict(
        records_lib.PREFERENCE_REASONS,
        unknown_property=f"field 'property' is not one of {list(HHH_PROPERTIES)}",
    ),
    "hh_rlhf": dict(records_lib.HH_RLHF_REASONS),
}


class BenchmarkSet(NamedTuple):
  """One benchmark file as N items of candidate responses, the correct ones first.

  Attributes:
    name: the benchmark key (a name of `BENCHMARK_READERS`).
    path: the file read.
    prompts: [N] prompt text of each item.
    responses: [N][K_i] candidate responses; ``responses[i][:num_correct[i]]`` are the correct
      (chosen) ones, the rest the incorrect (rejected) ones, each group in the file's order.
    num_correct: [N] int32. 0 for PandaLM, whose labels decide.
    subsets: [N] subset / domain / property / subject tag ("" when the format has none).
    ids: [N] the record's id as a string; the line number (or item position) when the format
      has none.
    sources: [N] ``"path:line"`` (JSONL) or ``"path:item k"`` (JSON list, k 1-based).
    labels: PandaLM only: [N, 3] int32 annotator labels (0 tie, 1 first better, 2 second
      better); None otherwise.
    report: ``benchmark``, ``path``, ``on_malformed``, ``records_read``, ``records_used``,
      ``records_skipped`` (reason -> count, every reason of the reader listed), ``examples``
      (reason -> the first few ``"path:line: detail"``), ``blank_lines``, ``items`` (N) and
      ``subsets`` (subset -> item count, sorted), plus reader-specific counts.
  """

  name: str
  path: str
  prompts: tuple[str, ...]
  responses: tuple[tuple[str, ...], ...]
  num_correct: np.ndarray
  subsets: tuple[str, ...]
  ids: tuple[str, ...]
  sources: tuple[str, ...]
  labels: np.ndarray | None
  report: dict

  @property
  def num_items(self) -> int:
    """N, the number of items."""
    return len(self.prompts)


# ------------------------------------------------------------------------------------------
# Reading records and accounting for them.


class _Ledger:
  """Accounts for the records of one file: each is used, or malformed (raised or skipped)."""

  def __init__(self, benchmark: str, path: str, on_malformed: str):
    if on_malformed not in records_lib.ON_MALFORMED_CHOICES:
      raise ValueError(f"on_malformed must be one of {records_lib.ON_MALFORMED_CHOICES}, "
                       f"got {on_malformed!r}")
    self.benchmark = benchmark
    self.path = path
    self.on_malformed = on_malformed
    self.reasons = REASONS[benchmark]
    self.read = 0
    self.blank = 0
    self.used = 0
    self.skipped = collections.Counter()
    self.examples = collections.defaultdict(list)

  def malformed(self, where: int | str, m: Malformed, records: int = 1) -> None:
    """Raises (fail) or counts ``records`` skipped records (skip) for ``m``, found at ``where``."""
    if m.reason not in self.reasons:
      raise AssertionError(f"{self.benchmark}: unknown malformed reason {m.reason!r}")
    if self.on_malformed == "fail":
      raise MalformedRecordError(self.path, where, m.reason, m.detail)
    self.skipped[m.reason] += records
    if len(self.examples[m.reason]) < records_lib.MAX_EXAMPLES_PER_REASON:
      detail = m.detail if len(m.detail) <= 200 else m.detail[:197] + "..."
      self.examples[m.reason].append(f"{self.path}:{where}: {detail}")

  def report(self, subsets: Sequence[str], **extra: Any) -> dict[str, Any]:
    skipped = sum(self.skipped.values())
    if self.read != self.used + skipped:
      raise AssertionError(f"{self.benchmark}: {self.read} records read but {self.used} used "
                           f"and {skipped} skipped")
    return dict(
        benchmark=self.benchmark,
        path=self.path,
        on_malformed=self.on_malformed,
        records_read=self.read,
        records_used=self.used,
        records_skipped={r: self.skipped.get(r, 0) for r in self.reasons},
        examples={r: list(self.examples[r]) for r in self.reasons if self.examples[r]},
        blank_lines=self.blank,
        items=len(subsets),
        subsets=dict(sorted(collections.Counter(subsets).items())),
        **extra,
    )


class _Record(NamedTuple):
  where: int | str  # 1-based line number (JSONL) or "item k" (JSON list)
  value: Any  # the decoded JSON value, or the `Malformed` that decoding raised


def _check_file(path: str, reader: str) -> str:
  path = os.fspath(path)
  if not os.path.isfile(path):
    what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
    raise FileNotFoundError(f"{reader}: argument 'path': benchmark file {path!r} {what}")
  return path


def _open(path: str):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _is_json_list(path: str) -> bool:
  name = path[:-3] if path.endswith(".gz") else path
  if name.endswith(".jsonl"):
    return False
  if name.endswith(".json"):
    return True
  with _open(path) as f:
    return f.read(4096).lstrip()[:1] == b"["


def _decode(raw: bytes) -> Any:
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    return Malformed("invalid_utf8", str(e))
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    return Malformed("invalid_json", str(e))


def _records(ledger: _Ledger) -> Iterator[_Record]:
  """The records of the ledger's file in order, counted as read (blank lines apart)."""
  path = ledger.path
  if not _is_json_list(path):
    with _open(path) as f:
      for line_no, raw in enumerate(f, start=1):
        if not raw.strip():
          ledger.blank += 1
          continue
        ledger.read += 1
        yield _Record(line_no, _decode(raw))
    return
  with _open(path) as f:
    raw = f.read()
  whole = "the whole file (a JSON list, so on_malformed cannot skip it)"
  try:
    value = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise MalformedRecordError(path, raw[:e.start].count(b"\n") + 1, "invalid_utf8",
                               f"{whole} is not valid UTF-8: {e.reason}") from None
  except json.JSONDecodeError as e:
    raise MalformedRecordError(path, e.lineno, "invalid_json",
                               f"{whole} is not valid JSON: {e.msg} at column {e.colno}"
                               ) from None
  if not isinstance(value, list):
    raise MalformedRecordError(path, 1, "not_a_list",
                               f"{whole} must be a JSON list of records, got "
                               f"{type(value).__name__}")
  for k, item in enumerate(value, start=1):
    ledger.read += 1
    yield _Record(f"item {k}", item)


def _source(path: str, where: int | str) -> str:
  return f"{path}:{where}"


# ------------------------------------------------------------------------------------------
# Field checks: each raises `Malformed` naming the field, what was expected and what was found.


def _describe(value: Any) -> str:
  if isinstance(value, list):
    return f"a list of {len(value)}"
  text = repr(value)
  text = text if len(text) <= 40 else text[:37] + "..."
  return f"{type(value).__name__} {text}"


def _object(record: _Record) -> dict:
  if isinstance(record.value, Malformed):
    raise record.value
  if not isinstance(record.value, dict):
    raise Malformed("not_an_object",
                    f"expected a JSON object, got {type(record.value).__name__}")
  return record.value


def _field(obj: dict, name: str, kinds: tuple[type, ...], expected: str) -> Any:
  if name not in obj:
    raise Malformed("missing_field",
                    f"missing field '{name}' (expected {expected}); found {sorted(obj)}")
  value = obj[name]
  if not isinstance(value, kinds) or isinstance(value, bool):
    raise Malformed("wrong_type", f"field '{name}' must be {expected}, got {_describe(value)}")
  return value


def _text(obj: dict, name: str) -> str:
  return _field(obj, name, (str,), "a string")


def _id(obj: dict, name: str) -> str:
  return str(_field(obj, name, (int, str), "an int or a string"))


def _response(obj: dict, name: str) -> str:
  text = _text(obj, name)
  if not text.strip():
    raise Malformed("empty_response",
                    f"field '{name}' must be a non-empty string, got {text!r}")
  return text


def _response_list(obj: dict, name: str, *, length: int | None = None) -> tuple[str, ...]:
  expected = f"a list of {length} strings" if length else "a non-empty list of strings"
  texts = _field(obj, name, (list,), expected)
  if (len(texts) != length) if length else not texts:
    raise Malformed("wrong_length",
                    f"field '{name}' must be {expected}, got a list of {len(texts)}")
  for j, text in enumerate(texts):
    if not isinstance(text, str):
      raise Malformed("wrong_type",
                      f"field '{name}'[{j}] must be a string, got {_describe(text)}")
    if not text.strip():
      raise Malformed("empty_response",
                      f"field '{name}'[{j}] must be a non-empty string, got {text!r}")
  return tuple(texts)


class _Items:
  """Columns of a `BenchmarkSet` under construction."""

  def __init__(self):
    self.prompts, self.responses, self.num_correct = [], [], []
    self.subsets, self.ids, self.sources, self.labels = [], [], [], []

  def add(self, prompt: str, responses: Sequence[str], num_correct: int, subset: str,
          item_id: str, source: str) -> None:
    self.prompts.append(prompt)
    self.responses.append(tuple(responses))
    self.num_correct.append(num_correct)
    self.subsets.append(subset)
    self.ids.append(item_id)
    self.sources.append(source)

  def build(self, ledger: _Ledger, *, labels: bool = False, **extra: Any) -> BenchmarkSet:
    return BenchmarkSet(
        name=ledger.benchmark,
        path=ledger.path,
        prompts=tuple(self.prompts),
        responses=tuple(self.responses),
        num_correct=np.asarray(self.num_correct, dtype=np.int32).reshape(-1),
        subsets=tuple(self.subsets),
        ids=tuple(self.ids),
        sources=tuple(self.sources),
        labels=np.asarray(self.labels, dtype=np.int32).reshape(-1, 3) if labels else None,
        report=ledger.report(self.subsets, **extra),
    )


# ------------------------------------------------------------------------------------------
# The readers.


def read_rewardbench(path: str, *, on_malformed: str = "fail") -> BenchmarkSet:
  """RewardBench v1 (Lambert et al., 2024): one chosen and one rejected reply per prompt.

  Record: ``{"prompt": str, "chosen": str, "rejected": str, "subset": str, "id": int | str}``
  (the ``filtered`` split exported as JSONL or a JSON list; other fields are ignored). Items
  have K=2 responses ``(chosen, rejected)`` and num_correct 1; subset as written (e.g.
  "alpacaeval-easy", "math-prm"; grouping subsets into sections is the scorer's business).

  Args:
    path: the ``.jsonl``, ``.jsonl.gz`` or ``.json`` file.
    on_malformed: "fail" (default: raise on the first malformed record) or "skip".

  Returns:
    The `BenchmarkSet` of the used records in file order.

  Raises:
    FileNotFoundError: ``path`` is missing.
    MalformedRecordError: under "fail": a missing field, a wrong type, an empty reply,
      invalid JSON.
  """
  path = _check_file(path, "read_rewardbench")
  ledger, items = _Ledger("rewardbench", path, on_malformed), _Items()
  for record in _records(ledger):
    try:
      obj = _object(record)
      prompt = _text(obj, "prompt")
      chosen, rejected = _response(obj, "chosen"), _response(obj, "rejected")
      subset, item_id = _text(obj, "subset"), _id(obj, "id")
    except Malformed as m:
      ledger.malformed(record.where, m)
      continue
    items.add(prompt, (chosen, rejected), 1, subset, item_id, _source(path, record.where))
    ledger.used += 1
  return items.build(ledger)


def parse_ties_id(sample_id: str) -> tuple[bool, int]:
  """Splits a RewardBench 2 Ties id ``"<sample_type>:<int>"``.

  A Ties prompt appears as a "ref" row (one correct answer: is it preferred over the
  incorrect ones?) and a "tied" row (several equally correct answers) sharing the integer.

  Args:
    sample_id: e.g. ``"ref:12"`` or ``"tied:12"``.

  Returns:
    ``(is_reference, prompt_id)``: is_reference iff the sample type is "ref"; any other
    sample type is a tied row.

  Raises:
    ValueError: not a string of the form ``"<sample_type>:<int>"``.

  >>> parse_ties_id("ref:12"), parse_ties_id("tied:12")
  ((True, 12), (False, 12))
  """
  match = re.fullmatch(r"([^:\s]+):([0-9]+)", sample_id) if isinstance(sample_id, str) else None
  if match is None:
    raise ValueError(f"a RewardBench 2 Ties id must be '<sample_type>:<int>' (e.g. 'ref:12', "
                     f"'tied:12'), got {sample_id!r}")
  return match.group(1) == "ref", int(match.group(2))


def read_rewardbench2(path: str, *, on_malformed: str = "fail") -> BenchmarkSet:
  """RewardBench 2 (Malik et al., 2025): correct answers vs incorrect ones, best-of-K.

  Record: ``{"prompt": str, "chosen": [str], "rejected": [str], "num_correct": int,
  "subset": str, "id": str | int}`` (other fields, e.g. ``models``, are ignored). Items hold
  ``chosen + rejected`` with num_correct = len(chosen) (1 and 3 in most subsets). In the
  "Ties" subset ids are ``"ref:<n>"`` / ``"tied:<n>"`` (see `parse_ties_id`); the id string
  is kept as written and checked.

  Args:
    path: the ``.jsonl``, ``.jsonl.gz`` or ``.json`` file.
    on_malformed: "fail" (default) or "skip".

  Returns:
    The `BenchmarkSet` of the used records in file order.

  Raises:
    FileNotFoundError: ``path`` is missing.
    MalformedRecordError: under "fail": also an empty ``chosen`` or ``rejected`` list, a
      ``num_correct`` that is not len(chosen), a Ties id that `parse_ties_id` refuses.
  """
  path = _check_file(path, "read_rewardbench2")
  ledger, items = _Ledger("rewardbench2", path, on_malformed), _Items()
  for record in _records(ledger):
    try:
      obj = _object(record)
      prompt = _text(obj, "prompt")
      chosen, rejected = _response_list(obj, "chosen"), _response_list(obj, "rejected")
      num_correct = _field(obj, "num_correct", (int,), "an int")
      if num_correct != len(chosen):
        raise Malformed("num_correct_mismatch",
                        f"field 'num_correct' is {num_correct} but field 'chosen' holds "
                        f"{len(chosen)} responses")
      subset, item_id = _text(obj, "subset"), _id(obj, "id")
      if subset == REWARDBENCH2_TIES_SUBSET:
        try:
          parse_ties_id(item_id)
        except ValueError as e:
          raise Malformed("invalid_ties_id", f"field 'id': {e}") from None
    except Malformed as m:
      ledger.malformed(record.where, m)
      continue
    items.add(prompt, chosen + rejected, len(chosen), subset, item_id,
              _source(path, record.where))
    ledger.used += 1
  return items.build(ledger)


def read_rewardmath(path: str, *, on_malformed: str = "fail") -> BenchmarkSet:
  """RewardMATH (Kim et al., 2024): one correct solution vs (nine) incorrect ones per problem.

  The released ``dataset/benchmark/RewardMATH_direct.json`` is a flat JSON list with one row
  per solution: ``problem`` (str), ``eval_solution`` (list of step strings), ``solution_type``
  ("chosen" / "rejected"), ``subject`` (str), ``problem_id`` (int | str); ``answer``,
  ``solution_reference``, ``level`` and ``id`` are not used. JSONL with the same rows is read
  too. Rows are grouped by problem_id, items in the order each problem_id is first seen; a
  response is its steps joined by "\\n" (the classifier input of the authors' code), the
  chosen one first, then the rejected ones in file order.

  Records are rows: the report counts rows (``records_*``) and items apart, and adds
  ``rejected_per_item`` (number of rejected -> items; 9 for every item of the release). Under
  "skip" a problem whose rows are not exactly one chosen and at least one rejected is left
  out with all its rows.

  Args:
    path: the ``.json`` (or ``.jsonl``) file.
    on_malformed: "fail" (default) or "skip".

  Returns:
    The `BenchmarkSet`: ids str(problem_id), subsets the subject, sources the position of
    the problem's first row.

  Raises:
    FileNotFoundError: ``path`` is missing.
    MalformedRecordError: under "fail": a bad row (missing field, wrong type, no or empty
      steps, an unknown solution_type, a problem or subject differing from its problem_id's
      first row), or a problem with no chosen row, several, or no rejected row (named by
      problem_id, with the positions of its rows).
  """
  path = _check_file(path, "read_rewardmath")
  ledger = _Ledger("rewardmath", path, on_malformed)
  problems: dict[str, dict[str, Any]] = {}
  for record in _records(ledger):
    try:
      obj = _object(record)
      problem = _text(obj, "problem")
      steps = _response_list(obj, "eval_solution")
      solution = "\n".join(steps)
      kind = _text(obj, "solution_type")
      if kind not in REWARDMATH_SOLUTION_TYPES:
        raise Malformed("invalid_solution_type",
                        f"field 'solution_type' must be one of "
                        f"{list(REWARDMATH_SOLUTION_TYPES)}, got {kind!r}")
      subject, problem_id = _text(obj, "subject"), _id(obj, "problem_id")
      group = problems.get(problem_id)
      if group is not None:
        for name, value in (("problem", problem), ("subject", subject)):
          if value != group[name]:
            raise Malformed(
                "inconsistent_problem",
                f"field '{name}' of problem_id {problem_id} is {_describe(value)} but "
                f"{_describe(group[name])} at {group['where'][0]}")
    except Malformed as m:
      ledger.malformed(record.where, m)
      continue
    if group is None:
      group = problems[problem_id] = dict(problem=problem, subject=subject, where=[],
                                          chosen=[], rejected=[])
    group["where"].append(record.where)
    group[kind].append((record.where, solution))
  items = _Items()
  rejected_per_item = collections.Counter()
  for problem_id, group in problems.items():
    try:
      chosen_at = [str(w) for w, _ in group["chosen"]]
      if len(chosen_at) != 1:
        raise Malformed(
            "chosen_count",
            f"problem_id {problem_id} must have exactly 1 row with solution_type 'chosen', "
            f"got {len(chosen_at)}" + (f" (at {', '.join(chosen_at)})" if chosen_at else "")
            + f"; its rows are at {_positions(group['where'])}")
      if not group["rejected"]:
        raise Malformed("no_rejected",
                        f"problem_id {problem_id} has no row with solution_type 'rejected'; "
                        f"its rows are at {_positions(group['where'])}")
    except Malformed as m:
      ledger.malformed(group["where"][0], m, records=len(group["where"]))
      continue
    responses = [group["chosen"][0][1]] + [text for _, text in group["rejected"]]
    items.add(group["problem"], responses, 1, group["subject"], problem_id,
              _source(path, group["where"][0]))
    ledger.used += len(group["where"])
    rejected_per_item[len(group["rejected"])] += 1
  return items.build(ledger, rejected_per_item=dict(sorted(rejected_per_item.items())))


def _positions(wheres: Sequence[int | str]) -> str:
  shown = ", ".join(str(w) for w in wheres[:12])
  return shown + (f", ... ({len(wheres)} rows)" if len(wheres) > 12 else "")


def read_rmbench(path: str, *, on_malformed: str = "fail") -> BenchmarkSet:
  """RM-Bench (Liu et al., 2024): three styles of a correct reply vs three of a wrong one.

  Record: ``{"id": int | str, "prompt": str, "chosen": [3 str], "rejected": [3 str],
  "domain": str}``, each list in the style order of `RMBENCH_STYLES` (0 concise, 1 detailed
  plain text, 2 detailed markdown). Items hold ``chosen[0..2] + rejected[0..2]`` (K=6), so
  ``responses[i][s]`` and ``responses[i][3 + s]`` are style s; num_correct 3; subset the
  domain as written (e.g. "chat", "math", "code", "safety-refuse", "safety-response").

  Args:
    path: the ``.jsonl``, ``.jsonl.gz`` or ``.json`` file.
    on_malformed: "fail" (default) or "skip".

  Returns:
    The `BenchmarkSet` of the used records in file order.

  Raises:
    FileNotFoundError: ``path`` is missing.
    MalformedRecordError: under "fail": also a ``chosen`` or ``rejected`` list whose length
      is not 3.
  """
  path = _check_file(path, "read_rmbench")
  ledger, items = _Ledger("rmbench", path, on_malformed), _Items()
  styles = len(RMBENCH_STYLES)
  for record in _records(ledger):
    try:
      obj = _object(record)
      item_id, prompt = _id(obj, "id"), _text(obj, "prompt")
      chosen = _response_list(obj, "chosen", length=styles)
      rejected = _response_list(obj, "rejected", length=styles)
      domain = _text(obj, "domain")
    except Malformed as m:
      ledger.malformed(record.where, m)
      continue
    items.add(prompt, chosen + rejected, styles, domain, item_id, _source(path, record.where))
    ledger.used += 1
  return items.build(ledger)


def pandalm_prompt(instruction: str, input_text: str) -> str:
  """The prompt of a PandaLM item: the instruction, then the input after a blank line.

  >>> pandalm_prompt("Fix the grammar.", "He go home."), pandalm_prompt("Say hi.", "")
  ('Fix the grammar.\\n\\nHe go home.', 'Say hi.')
  """
  return instruction + "\n\n" + input_text if input_text else instruction


def read_pandalm(path: str, *, on_malformed: str = "fail") -> BenchmarkSet:
  """PandaLM's human-annotated test set (Wang et al., 2024): two replies, three human labels.

  The released ``data/testset-v1.json`` is a JSON list of ``{"idx": int, "motivation_app":
  str, "cmp_key": str, "instruction": str, "input": str, "response1": str, "response2": str,
  "annotator1": int, "annotator2": int, "annotator3": int}`` (cmp_key is not used). Items:
  prompt `pandalm_prompt(instruction, input)` (the instruction alone when input is empty,
  else instruction + "\\n\\n" + input), responses ``(response1, response2)``, num_correct 0
  because neither reply is correct by construction: ``labels[i]`` (annotator1..3; 0 tie,
  1 response1 better, 2 response2 better) decide, e.g. by majority. subset motivation_app,
  id str(idx).

  Two quirks of the release are data here, not malformed records. An empty reply: the
  annotators judged it (54 of the 1998 replies are empty); the report counts them as
  ``empty_responses``. A JSON boolean reply: 6 replies (items 158-165, "Verify the correctness
  of the given statement.") are ``true``, a model's answer "True" turned into a boolean by the
  release's tooling; they are read as the text "True" (``false`` as "False") and counted as
  ``boolean_responses``, listed in ``boolean_examples``. Any other type is malformed.

  Args:
    path: the ``.json`` (or ``.jsonl``) file.
    on_malformed: "fail" (default) or "skip".

  Returns:
    The `BenchmarkSet` with ``labels`` [N, 3] int32.

  Raises:
    FileNotFoundError: ``path`` is missing.
    MalformedRecordError: under "fail": a missing field, a wrong type, a label outside
      {0, 1, 2}, invalid JSON.
  """
  path = _check_file(path, "read_pandalm")
  ledger, items = _Ledger("pandalm", path, on_malformed), _Items()
  empty, boolean = 0, []
  for record in _records(ledger):
    try:
      obj = _object(record)
      item_id, subset = _id(obj, "idx"), _text(obj, "motivation_app")
      prompt = pandalm_prompt(_text(obj, "instruction"), _text(obj, "input"))
      replies = (_pandalm_reply(obj, "response1"), _pandalm_reply(obj, "response2"))
      labels = []
      for name in ("annotator1", "annotator2", "annotator3"):
        label = _field(obj, name, (int,), "an int in {0, 1, 2}")
        if label not in PANDALM_LABELS:
          raise Malformed("invalid_label",
                          f"field '{name}' must be 0 (tie), 1 (response1 better) or 2 "
                          f"(response2 better), got {label}")
        labels.append(label)
    except Malformed as m:
      ledger.malformed(record.where, m)
      continue
    items.add(prompt, replies, 0, subset, item_id, _source(path, record.where))
    items.labels.append(labels)
    empty += sum(not r.strip() for r in replies)
    boolean.extend(f"{path}:{record.where}: field 'response{j + 1}' is {replies[j]}"
                   for j in range(2) if isinstance(obj[f"response{j + 1}"], bool))
    ledger.used += 1
  return items.build(ledger, labels=True, empty_responses=empty,
                     boolean_responses=len(boolean), boolean_examples=boolean[:20])


def _pandalm_reply(obj: dict, name: str) -> str:
  """A PandaLM reply: a string, or a JSON boolean read as the text "True" / "False"."""
  if isinstance(obj.get(name), bool):
    return str(obj[name])
  return _text(obj, name)


def read_hhh(path: str, *, on_malformed: str = "fail") -> BenchmarkSet:
  """HHH alignment (BIG-bench; Askell et al., 2021): a preferred vs a dispreferred reply.

  Record: ``{"prompt": str, "chosen": str, "rejected": str, "property": str}`` with property
  one of `HHH_PROPERTIES`; the three texts are checked by
  `rmjax.data.builders.records.parse_preference_record` (non-empty, distinct replies). Items:
  ``(chosen, rejected)``, num_correct 1, subset the property, id the line number. The same
  checks as `rmjax.data.load_hhh_alignment`, which tokenizes the file per property.

  Args:
    path: ``hhh_alignment.jsonl`` (or a JSON list of the same records).
    on_malformed: "fail" (default) or "skip".

  Returns:
    The `BenchmarkSet` of the used records in file order.

  Raises:
    FileNotFoundError: ``path`` is missing.
    MalformedRecordError: under "fail": a record `parse_preference_record` refuses, or an
      unknown property.
  """
  path = _check_file(path, "read_hhh")
  ledger, items = _Ledger("hhh", path, on_malformed), _Items()
  for record in _records(ledger):
    try:
      if isinstance(record.value, Malformed):
        raise record.value
      prompt, chosen, rejected, _ = records_lib.parse_preference_record(record.value)
      if "property" not in record.value:
        raise Malformed("missing_field", f"missing field 'property' (expected one of "
                        f"{list(HHH_PROPERTIES)}); found {sorted(record.value)}")
      prop = record.value["property"]
      if prop not in HHH_PROPERTIES:
        raise Malformed("unknown_property", f"field 'property' must be one of "
                        f"{list(HHH_PROPERTIES)}, got {_describe(prop)}")
    except Malformed as m:
      ledger.malformed(record.where, m)
      continue
    items.add(prompt, (chosen, rejected), 1, prop, str(record.where),
              _source(path, record.where))
    ledger.used += 1
  return items.build(ledger)


def read_hh_rlhf(path: str, *, on_malformed: str = "skip", subset: str = "") -> BenchmarkSet:
  """Anthropic HH-RLHF (Bai et al., 2022) test split: the final replies of two dialogues.

  Record: ``{"chosen": str, "rejected": str}``, whole dialogues split into the shared prompt
  and the two final replies by `rmjax.data.builders.records.parse_hh_rlhf_record` (read with
  `collect_records`). Items: ``(chosen_reply, rejected_reply)``, num_correct 1, id the line
  number. The released test files hold a few malformed lines (9 in harmless-base), so the
  default is "skip", as in the `HhRlhf` builder; the report lists them.

  Args:
    path: a ``.jsonl`` or ``.jsonl.gz`` file, e.g. ``harmless-base/test.jsonl.gz``.
    on_malformed: "skip" (default) or "fail".
    subset: the tag of every item, e.g. "harmless-base" ("" by default).

  Returns:
    The `BenchmarkSet` of the used records in file order.

  Raises:
    FileNotFoundError: ``path`` is missing.
    MalformedRecordError: under "fail", on the first malformed record.
  """
  path = _check_file(path, "read_hh_rlhf")
  ledger = _Ledger("hh_rlhf", path, on_malformed)
  records, collected = records_lib.collect_records(
      [path], records_lib.parse_hh_rlhf_record, ledger.reasons, on_malformed=on_malformed)
  ledger.read, ledger.blank, ledger.used = (
      collected["records_read"], collected["blank_lines"], collected["records_used"])
  ledger.skipped.update(collected["malformed"])
  for reason, examples in collected["malformed_examples"].items():
    ledger.examples[reason] = list(examples)
  items = _Items()
  for r in records:
    items.add(r.prompt, (r.chosen, r.rejected), 1, subset, str(r.source_line),
              _source(path, r.source_line))
  return items.build(ledger)


BENCHMARK_READERS: dict[str, Callable[..., BenchmarkSet]] = {
    "rewardbench": read_rewardbench,
    "rewardbench2": read_rewardbench2,
    "rewardmath": read_rewardmath,
    "rmbench": read_rmbench,
    "pandalm": read_pandalm,
    "hhh": read_hhh,
    "hh_rlhf": read_hh_rlhf,
}


def read_benchmark(name: str, path: str, **kwargs: Any) -> BenchmarkSet:
  """Reads a benchmark file with the reader of `BENCHMARK_READERS` named ``name``.

  Args:
    name: a key of `BENCHMARK_READERS`.
    path: the benchmark's file.
    **kwargs: passed to the reader (``on_malformed``; ``subset`` for "hh_rlhf").

  Returns:
    The reader's `BenchmarkSet`.

  Raises:
    ValueError: an unknown name.
  """
  reader = BENCHMARK_READERS.get(name)
  if reader is None:
    raise ValueError(f"unknown benchmark {name!r}; known benchmarks: "
                     f"{sorted(BENCHMARK_READERS)}")
  return reader(path, **kwargs)
