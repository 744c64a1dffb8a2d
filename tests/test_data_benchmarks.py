"""Tests of the benchmark readers (rmjax.data.benchmarks) on hand-written fixtures.

The fixtures (tests/fixtures/benchmarks, contents in its README) are small files in each
benchmark's released format; malformed variants are written into tmp_path. The real PandaLM
and HHH files are read from ../shared when it is there.
"""

import gzip
import json
import os
import pathlib

import numpy as np
import pytest

from rmjax import data as data_lib
from rmjax.data import benchmarks
from rmjax.data.builders import records as records_lib
from rmjax.data.builders.records import MalformedRecordError

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "benchmarks"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = pathlib.Path(os.environ.get("RMJAX_SHARED_DIR", REPO_ROOT.parent / "shared"))
PANDALM_FILE = SHARED_DIR / "data" / "pandalm" / "testset-v1.json"
HHH_FILE = SHARED_DIR / "data" / "hhh_alignment" / "hhh_alignment.jsonl"
HH_RLHF_FILE = SHARED_DIR / "data" / "hh_rlhf" / "harmless-base-test.jsonl.gz"


def fixture(name):
  return str(FIXTURES / name)


def shared_file(path, what):
  if not path.exists():
    pytest.skip(f"real {what} data not found at {path} (needs ../shared beside the repo)")
  return str(path)


@pytest.fixture
def pandalm_file():
  """The real PandaLM test set; skips when ../shared is absent."""
  return shared_file(PANDALM_FILE, "PandaLM")


@pytest.fixture
def hhh_file():
  """The real HHH alignment file; skips when ../shared is absent."""
  return shared_file(HHH_FILE, "HHH alignment")


@pytest.fixture
def hh_rlhf_real_file():
  """The real HH-RLHF harmless-base test file; skips when ../shared is absent."""
  return shared_file(HH_RLHF_FILE, "HH-RLHF")


def write_lines(path, lines):
  path.write_bytes(b"".join(
      (l if isinstance(l, bytes) else l.encode("utf-8")) + b"\n" for l in lines))
  return str(path)


def fixture_rows(name):
  """The decoded records of a JSONL fixture (blank lines dropped)."""
  return [json.loads(l) for l in (FIXTURES / name).read_text("utf-8").splitlines() if l.strip()]


def check_common(bench, name, path, n):
  """Shapes, types and the accounting every reader promises."""
  assert bench.name == name and bench.path == path
  assert bench.num_items == n
  for column in (bench.prompts, bench.responses, bench.subsets, bench.ids, bench.sources):
    assert isinstance(column, tuple) and len(column) == n
  assert bench.num_correct.dtype == np.int32 and bench.num_correct.shape == (n,)
  assert all(isinstance(r, tuple) and all(isinstance(t, str) for t in r)
             for r in bench.responses)
  report = bench.report
  assert report["records_read"] == report["records_used"] + sum(
      report["records_skipped"].values())
  assert report["items"] == n and sum(report["subsets"].values()) == n
  assert set(report["records_skipped"]) == set(benchmarks.REASONS[name])


def expect_malformed(read, path, where, reason, *fragments):
  """``read(path)`` raises MalformedRecordError at ``path:where`` with ``reason``."""
  with pytest.raises(MalformedRecordError) as info:
    read(path)
  err = info.value
  assert (err.path, err.line, err.reason) == (path, where, reason)
  message = str(err)
  assert f"{path}:{where}: " in message
  for fragment in fragments:
    assert fragment in message, (fragment, message)
  return err


# ----------------------------------------------------------------------------------------------
# RewardBench v1


def test_rewardbench_items_order_and_sources():
  path = fixture("rewardbench.jsonl")
  bench = benchmarks.read_rewardbench(path)
  check_common(bench, "rewardbench", path, 8)
  assert bench.prompts[0] == "What is the capital of France?"
  assert bench.responses[0] == ("Paris.", "London.")
  assert bench.responses[7] == ("4 × 5 = 20.", "4 × 5 = 25.")
  assert bench.num_correct.tolist() == [1] * 8
  assert bench.subsets == ("alpacaeval-easy",) * 2 + ("mt-bench-hard",) * 2 + (
      "refusals-dangerous",) * 2 + ("math-prm",) * 2
  assert bench.ids == ("30", "31", "1050", "1051", "2000", "2001", "3000", "3001")
  # Line 5 is blank: the items after it sit on lines 6-9.
  assert bench.sources == tuple(f"{path}:{l}" for l in (1, 2, 3, 4, 6, 7, 8, 9))
  assert bench.labels is None
  report = bench.report
  assert (report["records_read"], report["records_used"], report["blank_lines"]) == (8, 8, 1)
  assert report["subsets"] == {"alpacaeval-easy": 2, "math-prm": 2, "mt-bench-hard": 2,
                               "refusals-dangerous": 2}
  assert report["examples"] == {} and report["on_malformed"] == "fail"


def test_rewardbench_reads_json_list_and_gzip(tmp_path):
  rows = fixture_rows("rewardbench.jsonl")
  as_list = tmp_path / "rb.json"
  as_list.write_text(json.dumps(rows), "utf-8")
  bench = benchmarks.read_rewardbench(str(as_list))
  assert bench.sources[4] == f"{as_list}:item 5"
  gz = tmp_path / "rb.jsonl.gz"
  gz.write_bytes(gzip.compress((FIXTURES / "rewardbench.jsonl").read_bytes()))
  bench_gz = benchmarks.read_rewardbench(str(gz))
  reference = benchmarks.read_rewardbench(fixture("rewardbench.jsonl"))
  for got in (bench, bench_gz):
    assert got.responses == reference.responses and got.ids == reference.ids


@pytest.mark.parametrize("change, reason, fragments", [
    (lambda r: r.pop("subset"), "missing_field", ["'subset'", "expected a string"]),
    (lambda r: r.update(chosen=["Paris."]), "wrong_type",
     ["field 'chosen' must be a string", "got a list of 1"]),
    (lambda r: r.update(rejected="  "), "empty_response", ["field 'rejected'", "'  '"]),
    (lambda r: r.update(id=1.5), "wrong_type", ["field 'id' must be an int or a string",
                                                "float 1.5"]),
])
def test_rewardbench_malformed_names_file_line_field(tmp_path, change, reason, fragments):
  rows = fixture_rows("rewardbench.jsonl")
  change(rows[2])
  path = write_lines(tmp_path / "bad.jsonl", [json.dumps(r) for r in rows])
  expect_malformed(benchmarks.read_rewardbench, path, 3, reason, *fragments)


def test_rewardbench_invalid_json_and_skip_accounting(tmp_path):
  rows = [json.dumps(r) for r in fixture_rows("rewardbench.jsonl")]
  lines = rows[:2] + ['{"prompt": "p", "chosen": "a"', "[1, 2]", b'{"prompt": "\xff"}'] + rows[2:]
  path = write_lines(tmp_path / "bad.jsonl", lines)
  expect_malformed(benchmarks.read_rewardbench, path, 3, "invalid_json")
  bench = benchmarks.read_rewardbench(path, on_malformed="skip")
  check_common(bench, "rewardbench", path, 8)
  report = bench.report
  assert (report["records_read"], report["records_used"]) == (11, 8)
  skipped = {r: n for r, n in report["records_skipped"].items() if n}
  assert skipped == {"invalid_json": 1, "not_an_object": 1, "invalid_utf8": 1}
  assert report["examples"]["not_an_object"][0].startswith(f"{path}:4: ")
  assert bench.sources[2] == f"{path}:6"


def test_missing_file_names_argument_and_path(tmp_path):
  missing = str(tmp_path / "nope.jsonl")
  for name, reader in benchmarks.BENCHMARK_READERS.items():
    with pytest.raises(FileNotFoundError, match=r"argument 'path'.*nope\.jsonl"):
      reader(missing)
  with pytest.raises(FileNotFoundError, match="is a directory"):
    benchmarks.read_rmbench(str(tmp_path))


def test_bad_on_malformed():
  with pytest.raises(ValueError, match="on_malformed must be one of"):
    benchmarks.read_rewardbench(fixture("rewardbench.jsonl"), on_malformed="ignore")


# ----------------------------------------------------------------------------------------------
# RewardBench 2


def test_rewardbench2_items_and_ties():
  path = fixture("rewardbench2.jsonl")
  bench = benchmarks.read_rewardbench2(path)
  check_common(bench, "rewardbench2", path, 9)
  assert bench.responses[0] == ("William Shakespeare wrote Hamlet.", "Charles Dickens wrote "
                                "Hamlet.", "Jane Austen wrote Hamlet.", "Hamlet has no author.")
  assert bench.responses[6] == ("2", "3", "5", "4", "6", "9")
  assert bench.num_correct.tolist() == [1, 1, 1, 1, 1, 1, 3, 1, 3]
  assert bench.ids == ("f1", "p1", "m1", "s1", "c1", "ref:1", "tied:1", "ref:2", "tied:2")
  assert bench.subsets[5:] == ("Ties",) * 4
  assert bench.sources == tuple(f"{path}:{l}" for l in range(1, 10))
  assert bench.report["subsets"] == {"Factuality": 1, "Focus": 1, "Math": 1, "Precise IF": 1,
                                     "Safety": 1, "Ties": 4}
  ties = [benchmarks.parse_ties_id(i) for i in bench.ids[5:]]
  assert ties == [(True, 1), (False, 1), (True, 2), (False, 2)]


def test_parse_ties_id():
  assert benchmarks.parse_ties_id("ref:0") == (True, 0)
  assert benchmarks.parse_ties_id("tied:12") == (False, 12)
  assert benchmarks.parse_ties_id("other:7") == (False, 7)
  for bad in ("ref", "ref:", "ref:x", ":3", "ref:1:2", "ref:-1", 12, None):
    with pytest.raises(ValueError, match="<sample_type>:<int>"):
      benchmarks.parse_ties_id(bad)


@pytest.mark.parametrize("line, change, reason, fragments", [
    (2, lambda r: r.update(num_correct=2), "num_correct_mismatch",
     ["'num_correct' is 2", "'chosen' holds 1"]),
    (7, lambda r: r.update(num_correct=1), "num_correct_mismatch",
     ["'num_correct' is 1", "'chosen' holds 3"]),
    (3, lambda r: r.pop("num_correct"), "missing_field", ["'num_correct'", "expected an int"]),
    (3, lambda r: r.update(num_correct="1"), "wrong_type", ["field 'num_correct'", "str '1'"]),
    (4, lambda r: r.update(chosen="I can't help."), "wrong_type",
     ["field 'chosen' must be a non-empty list of strings", "str"]),
    (4, lambda r: r.update(rejected=[]), "wrong_length", ["field 'rejected'", "a list of 0"]),
    (4, lambda r: r["rejected"].__setitem__(1, 5), "wrong_type", ["field 'rejected'[1]", "int"]),
    (5, lambda r: r["rejected"].__setitem__(2, ""), "empty_response", ["field 'rejected'[2]"]),
    (6, lambda r: r.update(id="ref-1"), "invalid_ties_id", ["field 'id'", "'ref-1'"]),
])
def test_rewardbench2_malformed(tmp_path, line, change, reason, fragments):
  rows = fixture_rows("rewardbench2.jsonl")
  change(rows[line - 1])
  path = write_lines(tmp_path / "bad.jsonl", [json.dumps(r) for r in rows])
  expect_malformed(benchmarks.read_rewardbench2, path, line, reason, *fragments)


# ----------------------------------------------------------------------------------------------
# RewardMATH


def test_rewardmath_groups_rows_by_problem():
  path = fixture("rewardmath.json")
  bench = benchmarks.read_rewardmath(path)
  check_common(bench, "rewardmath", path, 2)
  assert bench.ids == ("0", "399")
  assert bench.prompts == ("What is $2+2$?", "Solve $x+1=3$ for $x$.")
  assert bench.subsets == ("Prealgebra", "Algebra")
  assert bench.num_correct.tolist() == [1, 1]
  assert bench.sources == (f"{path}:item 1", f"{path}:item 10")
  first, second = bench.responses
  assert len(first) == len(second) == 10
  assert first[0] == "Add the numbers: $2+2=4$.\nThe answer is $\\boxed{4}$."
  assert first[1] == "Add the numbers: $2+2=3$.\nThe answer is $\\boxed{3}$."
  assert first[7] == "Write the digits together: $2+2=22$."
  assert first[9] == ("First, $2+2=2\\times2$.\nThen $2\\times2=44$.\n"
                      "The answer is $\\boxed{44}$.")
  # The chosen row of problem 399 is its third row; it leads, the rest keep file order.
  assert second[0] == "Subtract 1 from both sides: $x=3-1$.\nSo $x=\\boxed{2}$."
  assert second[1] == "Add 1 to both sides: $x=3+1$.\nSo $x=\\boxed{4}$."
  assert second[9] == "Divide both sides by 3: $x=1$.\nSo $x=\\boxed{1/3}$."
  report = bench.report
  assert (report["records_read"], report["records_used"]) == (20, 20)
  assert report["rejected_per_item"] == {9: 2}
  assert report["subsets"] == {"Algebra": 1, "Prealgebra": 1}


def rewardmath_rows():
  return json.loads((FIXTURES / "rewardmath.json").read_text("utf-8"))


def write_json(path, value):
  path.write_text(json.dumps(value, indent=1), "utf-8")
  return str(path)


def test_rewardmath_two_chosen_or_none(tmp_path):
  rows = rewardmath_rows()
  rows[4]["solution_type"] = "chosen"  # problem 0: items 1 and 5 chosen
  path = write_json(tmp_path / "two.json", rows)
  expect_malformed(benchmarks.read_rewardmath, path, "item 1", "chosen_count",
                   "problem_id 0", "got 2", "at item 1, item 5", "item 19")
  rows = rewardmath_rows()
  rows[11]["solution_type"] = "rejected"  # problem 399: no chosen row left
  path = write_json(tmp_path / "none.json", rows)
  expect_malformed(benchmarks.read_rewardmath, path, "item 10", "chosen_count",
                   "problem_id 399", "got 0", "item 10, item 11, item 12")
  bench = benchmarks.read_rewardmath(path, on_malformed="skip")
  check_common(bench, "rewardmath", path, 1)
  assert bench.ids == ("0",)
  assert bench.report["records_skipped"]["chosen_count"] == 10
  assert bench.report["records_used"] == 10


def test_rewardmath_other_rejected_counts_are_reported(tmp_path):
  rows = [r for r in rewardmath_rows() if r["id"] not in (3991, 3992)]
  path = write_json(tmp_path / "seven.json", rows)
  bench = benchmarks.read_rewardmath(path)
  assert [len(r) for r in bench.responses] == [10, 8]
  assert bench.report["rejected_per_item"] == {7: 1, 9: 1}
  only_chosen = [r for r in rewardmath_rows() if r["problem_id"] == 0 or r["id"] == 3990]
  path = write_json(tmp_path / "lonely.json", only_chosen)
  expect_malformed(benchmarks.read_rewardmath, path, "item 10", "no_rejected",
                   "problem_id 399")


@pytest.mark.parametrize("item, change, reason, fragments", [
    (3, lambda r: r.pop("eval_solution"), "missing_field", ["'eval_solution'"]),
    (3, lambda r: r.update(eval_solution="one step"), "wrong_type",
     ["field 'eval_solution' must be a non-empty list of strings", "str"]),
    (3, lambda r: r.update(eval_solution=[]), "wrong_length", ["field 'eval_solution'"]),
    (3, lambda r: r["eval_solution"].__setitem__(1, " "), "empty_response",
     ["field 'eval_solution'[1]"]),
    (12, lambda r: r.update(solution_type="correct"), "invalid_solution_type",
     ["field 'solution_type'", "'correct'"]),
    (13, lambda r: r.update(subject="Geometry"), "inconsistent_problem",
     ["field 'subject' of problem_id 399", "'Geometry'", "item 10"]),
    (2, lambda r: r.update(problem_id=[0]), "wrong_type", ["field 'problem_id'"]),
])
def test_rewardmath_malformed_rows(tmp_path, item, change, reason, fragments):
  rows = rewardmath_rows()
  change(rows[item - 1])
  path = write_json(tmp_path / "bad.json", rows)
  expect_malformed(benchmarks.read_rewardmath, path, f"item {item}", reason, *fragments)


def test_rewardmath_jsonl_and_broken_json(tmp_path):
  rows = rewardmath_rows()
  path = write_lines(tmp_path / "rm.jsonl", [json.dumps(r) for r in rows])
  bench = benchmarks.read_rewardmath(path)
  assert bench.sources == (f"{path}:1", f"{path}:10")
  assert bench.responses == benchmarks.read_rewardmath(fixture("rewardmath.json")).responses
  broken = tmp_path / "broken.json"
  broken.write_text((FIXTURES / "rewardmath.json").read_text("utf-8").replace(
      '"id": 3', '"id" 3', 1), "utf-8")
  err = expect_malformed(benchmarks.read_rewardmath, str(broken), 44, "invalid_json",
                         "not valid JSON")
  assert "the whole file" in str(err)
  not_list = write_json(tmp_path / "obj.json", {"rows": rows})
  expect_malformed(benchmarks.read_rewardmath, not_list, 1, "not_a_list", "got dict")


# ----------------------------------------------------------------------------------------------
# RM-Bench


def test_rmbench_items_styles_and_domains():
  path = fixture("rmbench.jsonl")
  bench = benchmarks.read_rmbench(path)
  check_common(bench, "rmbench", path, 4)
  assert bench.responses[1] == ("42", "Six times seven is 42.", "**Answer:** 6 × 7 = 42",
                                "48", "Six times seven is 48.", "**Answer:** 6 × 7 = 48")
  assert all(len(r) == 6 for r in bench.responses)
  assert bench.num_correct.tolist() == [3, 3, 3, 3]
  assert bench.subsets == ("chat", "math", "safety-refuse", "safety-response")
  assert bench.ids == ("0", "1", "2", "3")
  assert bench.sources[3] == f"{path}:4"
  assert bench.responses[3][2] == "**Steps:**\n1. `ps aux | grep python`\n2. `kill <pid>`"


@pytest.mark.parametrize("field, value, reason, fragments", [
    ("chosen", ["a", "b"], "wrong_length",
     ["field 'chosen' must be a list of 3 strings", "got a list of 2"]),
    ("rejected", ["a", "b", "c", "d"], "wrong_length", ["field 'rejected'", "a list of 4"]),
    ("rejected", ["a", None, "c"], "wrong_type", ["field 'rejected'[1]", "NoneType"]),
    ("chosen", ["a", "b", ""], "empty_response", ["field 'chosen'[2]"]),
    ("domain", 3, "wrong_type", ["field 'domain' must be a string", "int 3"]),
])
def test_rmbench_malformed(tmp_path, field, value, reason, fragments):
  rows = fixture_rows("rmbench.jsonl")
  rows[1][field] = value
  path = write_lines(tmp_path / "bad.jsonl", [json.dumps(r) for r in rows])
  expect_malformed(benchmarks.read_rmbench, path, 2, reason, *fragments)


# ----------------------------------------------------------------------------------------------
# PandaLM


def test_pandalm_items_and_labels():
  path = fixture("pandalm.json")
  bench = benchmarks.read_pandalm(path)
  check_common(bench, "pandalm", path, 6)
  assert bench.prompts[0] == "Fix the grammar of the sentence.\n\nShe go to school every day."
  assert bench.prompts[2] == "What is the tallest mountain on Earth?"
  assert bench.responses[1] == ("They was late.", "They were late.")
  assert bench.responses[5] == ("", "Jupiter.")
  assert bench.num_correct.tolist() == [0] * 6
  assert bench.labels.dtype == np.int32
  assert bench.labels.tolist() == [[1, 1, 1], [2, 2, 1], [0, 0, 1], [0, 1, 2], [1, 1, 2],
                                   [2, 2, 2]]
  assert bench.ids == ("0", "1", "2", "3", "4", "5")
  assert bench.subsets[2] == "Google Search"
  assert bench.sources[3] == f"{path}:item 4"
  assert bench.report["empty_responses"] == 1
  assert bench.report["subsets"] == {"Gmail": 1, "Google Search": 2, "Grammarly": 2,
                                     "Wolfram alpha": 1}


@pytest.mark.parametrize("change, reason, fragments", [
    (lambda r: r.update(annotator2=3), "invalid_label", ["field 'annotator2'", "got 3"]),
    (lambda r: r.update(annotator3=-1), "invalid_label", ["field 'annotator3'", "got -1"]),
    (lambda r: r.update(annotator1="1"), "wrong_type", ["field 'annotator1'", "str '1'"]),
    (lambda r: r.update(annotator1=True), "wrong_type", ["field 'annotator1'", "bool"]),
    (lambda r: r.pop("input"), "missing_field", ["'input'", "expected a string"]),
    (lambda r: r.update(response2=None), "wrong_type", ["field 'response2'", "NoneType"]),
])
def test_pandalm_malformed(tmp_path, change, reason, fragments):
  items = json.loads((FIXTURES / "pandalm.json").read_text("utf-8"))
  change(items[3])
  path = write_json(tmp_path / "bad.json", items)
  expect_malformed(benchmarks.read_pandalm, path, "item 4", reason, *fragments)


def test_pandalm_boolean_reply_is_read_as_text(tmp_path):
  items = json.loads((FIXTURES / "pandalm.json").read_text("utf-8"))
  items[2]["response2"] = True
  path = write_json(tmp_path / "bool.json", items)
  bench = benchmarks.read_pandalm(path)
  assert bench.responses[2] == ("Mount Everest.", "True")
  assert bench.report["boolean_responses"] == 1
  assert bench.report["boolean_examples"] == [f"{path}:item 3: field 'response2' is True"]
  items[2]["response2"] = 68
  path = write_json(tmp_path / "number.json", items)
  expect_malformed(benchmarks.read_pandalm, path, "item 3", "wrong_type",
                   "field 'response2' must be a string", "int 68")


def test_pandalm_real_file(pandalm_file):
  bench = benchmarks.read_pandalm(pandalm_file)
  check_common(bench, "pandalm", pandalm_file, 999)
  assert bench.labels.shape == (999, 3)
  assert set(np.unique(bench.labels)) <= {0, 1, 2}
  assert bench.num_correct.sum() == 0 and all(len(r) == 2 for r in bench.responses)
  assert bench.ids[:3] == ("0", "1", "2")
  assert bench.subsets[0] == "Grammarly"
  assert bench.report["empty_responses"] == 54
  assert bench.report["boolean_responses"] == 6
  assert bench.responses[157] == ("True", "True.") and bench.labels[157].tolist() == [1, 1, 0]
  # First item: an instruction with a non-empty input, unanimously response2.
  assert bench.prompts[0].endswith("\n\nIf you have any questions about my rate or if you find "
                                   "it necessary to increase or decrease the scope for this "
                                   "project, please let me know.")
  assert bench.labels[0].tolist() == [2, 2, 2]


# ----------------------------------------------------------------------------------------------
# HHH alignment


def test_hhh_items():
  path = fixture("hhh.jsonl")
  bench = benchmarks.read_hhh(path)
  check_common(bench, "hhh", path, 4)
  assert bench.subsets == ("helpful", "honest", "harmless", "other")
  assert bench.responses[1] == ("No, I am an AI assistant.", "Yes, I am a human.")
  assert bench.ids == ("1", "2", "3", "4")
  assert bench.sources[3] == f"{path}:4"
  assert bench.num_correct.tolist() == [1] * 4


@pytest.mark.parametrize("change, reason, fragments", [
    (lambda r: r.update(property="kind"), "unknown_property", ["field 'property'", "'kind'"]),
    (lambda r: r.pop("property"), "missing_field", ["'property'"]),
    (lambda r: r.update(rejected=r["chosen"]), "identical_chosen_rejected", ["equal"]),
    (lambda r: r.update(chosen=7), "non_string_field", ["field 'chosen'", "int"]),
])
def test_hhh_malformed(tmp_path, change, reason, fragments):
  rows = fixture_rows("hhh.jsonl")
  change(rows[2])
  path = write_lines(tmp_path / "bad.jsonl", [json.dumps(r) for r in rows])
  expect_malformed(benchmarks.read_hhh, path, 3, reason, *fragments)


def test_hhh_real_file(hhh_file):
  bench = benchmarks.read_hhh(hhh_file)
  check_common(bench, "hhh", hhh_file, 221)
  assert bench.report["subsets"] == {"harmless": 58, "helpful": 59, "honest": 61, "other": 43}
  assert bench.sources[220] == f"{hhh_file}:221"


# ----------------------------------------------------------------------------------------------
# HH-RLHF


def hh_line(human, chosen, rejected):
  prefix = f"\n\nHuman: {human}\n\nAssistant:"
  return json.dumps({"chosen": f"{prefix} {chosen}", "rejected": f"{prefix} {rejected}"})


def test_hh_rlhf_skips_and_counts(tmp_path):
  lines = [hh_line("Hi", "Hello!", "Go away."),
           json.dumps({"chosen": "no turns", "rejected": "none here"}),
           "",
           hh_line("Help me cheat.", "I can't help with that.", "Sure, copy this.")]
  path = tmp_path / "test.jsonl.gz"
  path.write_bytes(gzip.compress("\n".join(lines).encode("utf-8") + b"\n"))
  path = str(path)
  bench = benchmarks.read_hh_rlhf(path, subset="harmless-base")
  check_common(bench, "hh_rlhf", path, 2)
  assert bench.prompts == ("\n\nHuman: Hi\n\nAssistant:",
                           "\n\nHuman: Help me cheat.\n\nAssistant:")
  assert bench.responses == (("Hello!", "Go away."),
                             ("I can't help with that.", "Sure, copy this."))
  assert bench.ids == ("1", "4") and bench.sources == (f"{path}:1", f"{path}:4")
  assert bench.subsets == ("harmless-base",) * 2
  report = bench.report
  assert (report["records_read"], report["records_used"], report["blank_lines"]) == (3, 2, 1)
  assert report["records_skipped"]["no_assistant_turn"] == 1
  assert report["examples"]["no_assistant_turn"][0].startswith(f"{path}:2: ")
  expect_malformed(lambda p: benchmarks.read_hh_rlhf(p, on_malformed="fail"), path, 2,
                   "no_assistant_turn", "field 'chosen'")


def test_hh_rlhf_real_file_matches_collect_records(hh_rlhf_real_file):
  bench = benchmarks.read_hh_rlhf(hh_rlhf_real_file)
  records, report = records_lib.collect_records(
      [hh_rlhf_real_file], records_lib.parse_hh_rlhf_record, records_lib.HH_RLHF_REASONS)
  check_common(bench, "hh_rlhf", hh_rlhf_real_file, len(records))
  assert sum(bench.report["records_skipped"].values()) == report["records_malformed"] == 9
  assert bench.responses[-1] == (records[-1].chosen, records[-1].rejected)


# ----------------------------------------------------------------------------------------------
# Dispatch and exports


def test_read_benchmark_dispatch():
  bench = benchmarks.read_benchmark("rmbench", fixture("rmbench.jsonl"))
  assert bench.name == "rmbench" and bench.num_items == 4
  bench = benchmarks.read_benchmark("rewardbench", fixture("rewardbench.jsonl"),
                                    on_malformed="skip")
  assert bench.report["on_malformed"] == "skip"
  with pytest.raises(ValueError, match=r"unknown benchmark 'rewardbench3'.*'hh_rlhf'.*"
                                       r"'rewardbench2'"):
    benchmarks.read_benchmark("rewardbench3", fixture("rmbench.jsonl"))
  assert set(benchmarks.BENCHMARK_READERS) == {
      "rewardbench", "rewardbench2", "rewardmath", "rmbench", "pandalm", "hhh", "hh_rlhf"}


def test_public_names_exported():
  for name in ("BenchmarkSet", "read_benchmark", "read_rewardmath", "parse_ties_id",
               "BENCHMARK_READERS"):
    assert name in data_lib.__all__ and getattr(data_lib, name) is getattr(benchmarks, name)
