"""Tests of the TFDS builders (array_record, no TensorFlow) and the record parsers."""

import gzip
import json
import os

import numpy as np
import pytest

from rmjax.data import builders
from rmjax.data.builders import records as records_lib

GOOD = [
    {"prompt": "p1", "chosen": "good", "rejected": "bad"},
    {"prompt": "p2 é", "chosen": "yes", "rejected": "no", "margin": 1.5},
    {"prompt": "", "chosen": "up", "rejected": "down", "strength": -2},
]

# (line content, reason or None for used, margin if used); blank line 4 is not a record.
MIXED_LINES = [
    (json.dumps(GOOD[0]), None),                                                    # 1
    (json.dumps(GOOD[1]), None),                                                    # 2
    (json.dumps(GOOD[2]), None),                                                    # 3
    ("   ", "blank"),                                                               # 4
    ('{"prompt": "p", "chosen": "a"', "invalid_json"),                              # 5
    ("[1, 2]", "not_an_object"),                                                    # 6
    ('{"prompt": "p", "chosen": "a"}', "missing_field"),                            # 7
    ('{"prompt": "p", "chosen": 1, "rejected": "b"}', "non_string_field"),          # 8
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": -1}', "invalid_margin"),  # 9
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "strength": "big"}', "invalid_margin"),
    ('{"prompt": "p", "chosen": "  ", "rejected": "b"}', "empty_response"),         # 11
    ('{"prompt": "p", "chosen": "same", "rejected": "same"}', "identical_chosen_rejected"),
    (b'{"prompt": "\xff"}', "invalid_utf8"),                                        # 13
    ('{"prompt": "p4", "chosen": "c", "rejected": "d", "margin": null, "strength": 0.5}', None),
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": true}', "invalid_margin"),  # 15
]


def write_lines(path, lines, compress=False):
  data = b"".join((l if isinstance(l, bytes) else l.encode("utf-8")) + b"\n" for l in lines)
  if compress:
    data = gzip.compress(data)
  path.write_bytes(data)
  return str(path)


def write_records(path, objs, compress=False):
  return write_lines(path, [json.dumps(o) for o in objs], compress)


def test_mixed_file_counts_and_examples(tmp_path):
  path = write_lines(tmp_path / "mixed.jsonl", [l for l, _ in MIXED_LINES])
  builder, report = builders.prepare(builders.PreferenceJsonl, path=path,
                                     data_dir=str(tmp_path / "tfds"))
  split = report["splits"]["train"]
  assert split["records_read"] == 14 and split["blank_lines"] == 1
  assert split["records_used"] == 4 and split["records_malformed"] == 10
  assert report["records_read"] == 14 and report["records_used"] == 4
  assert report["malformed"] == {
      "invalid_utf8": 1, "invalid_json": 1, "not_an_object": 1, "missing_field": 1,
      "non_string_field": 1, "identical_chosen_rejected": 1, "invalid_margin": 3,
      "empty_response": 1}
  examples = split["malformed_examples"]
  lines_of = lambda reason: [int(e.split(":")[1]) for e in examples[reason]]
  assert lines_of("invalid_margin") == [9, 10, 15]
  assert lines_of("invalid_json") == [5]
  assert lines_of("identical_chosen_rejected") == [12]
  assert lines_of("invalid_utf8") == [13]
  assert examples["missing_field"][0].startswith(f"{path}:7: missing field(s) ['rejected']")
  assert report["policy"]["on_malformed"] == "skip"
  # The report lies next to the prepared array_record shards.
  files = os.listdir(builder.data_dir)
  assert builders.REPORT_FILENAME in files
  assert any(".array_record" in f for f in files)
  with open(os.path.join(builder.data_dir, builders.REPORT_FILENAME)) as f:
    assert json.load(f) == report

  cols = builders.read_split(builder, "train")
  assert cols["prompt"] == ["p1", "p2 é", "", "p4"]
  assert cols["chosen"] == ["good", "yes", "up", "c"]
  assert cols["rejected"] == ["bad", "no", "down", "d"]
  np.testing.assert_array_equal(cols["margin"], np.array([0.0, 1.5, 2.0, 0.5], np.float32))
  assert cols["source_line"].tolist() == [1, 2, 3, 14]
  assert cols["source_file"] == [os.path.abspath(path)] * 4


def test_gz_train_and_plain_eval_splits(tmp_path):
  train = write_records(tmp_path / "train.jsonl.gz", GOOD, compress=True)
  eval_ = write_records(tmp_path / "eval.jsonl",
                        [{"prompt": "q", "chosen": "x", "rejected": "y", "margin": 0}])
  builder, report = builders.prepare(builders.PreferenceJsonl, path=train, eval_path=eval_,
                                     data_dir=str(tmp_path / "tfds"))
  assert set(builder.info.splits.keys()) == {"train", "eval"}
  assert report["splits"]["train"]["records_used"] == 3
  assert report["splits"]["eval"]["records_used"] == 1
  assert report["records_read"] == 4
  cols = builders.read_split(builder, "train")
  assert cols["prompt"] == ["p1", "p2 é", ""]
  np.testing.assert_array_equal(cols["margin"], [0.0, 1.5, 2.0])
  cols = builders.read_split(builder, "eval")
  assert (cols["prompt"], cols["chosen"], cols["rejected"]) == (["q"], ["x"], ["y"])


def test_fail_policy_raises_with_file_and_line(tmp_path):
  path = write_lines(tmp_path / "mixed.jsonl", [l for l, _ in MIXED_LINES])
  with pytest.raises(builders.MalformedRecordError) as err:
    builders.prepare(builders.PreferenceJsonl, path=path, on_malformed="fail",
                     data_dir=str(tmp_path / "tfds"))
  assert str(err.value).startswith(f"{path}:5: malformed record (invalid_json)")
  assert (err.value.line, err.value.reason) == (5, "invalid_json")
  # Nothing was left behind as a prepared dataset.
  prepared = [d for d, _, files in os.walk(tmp_path / "tfds") if "dataset_info.json" in files]
  assert prepared == []


def test_identical_pair_follows_the_policy(tmp_path):
  path = write_records(tmp_path / "ident.jsonl", [
      GOOD[0], {"prompt": "p", "chosen": "same", "rejected": "same"}])
  with pytest.raises(builders.MalformedRecordError, match=r"ident.jsonl:2: .*identical"):
    builders.prepare(builders.PreferenceJsonl, path=path, on_malformed="fail",
                     data_dir=str(tmp_path / "tfds"))
  _, report = builders.prepare(builders.PreferenceJsonl, path=path, on_malformed="skip",
                               data_dir=str(tmp_path / "tfds"))
  assert report["records_used"] == 1
  assert report["malformed"]["identical_chosen_rejected"] == 1


def test_missing_files_name_path_and_field(tmp_path):
  missing = str(tmp_path / "nope.jsonl")
  with pytest.raises(FileNotFoundError, match=r"config field 'path': data file .*nope.jsonl"):
    builders.prepare(builders.PreferenceJsonl, path=missing, data_dir=str(tmp_path))
  good = write_records(tmp_path / "ok.jsonl", GOOD)
  with pytest.raises(FileNotFoundError, match=r"'eval_path'.*nope.jsonl.*does not exist"):
    builders.prepare(builders.HhRlhf, path=good, eval_path=missing, data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="on_malformed"):
    builders.prepare(builders.PreferenceJsonl, path=good, on_malformed="ignore",
                     data_dir=str(tmp_path))


def test_zero_usable_records(tmp_path):
  path = write_lines(tmp_path / "bad.jsonl", ["not json", "", '{"prompt": "p"}'])
  with pytest.raises(ValueError, match=r"no usable records in split 'train'.*read 2 records "
                     r"\(plus 1 blank lines\), 2 malformed \(invalid_json: 1, missing_field: 1\)"):
    builders.prepare(builders.PreferenceJsonl, path=path, data_dir=str(tmp_path / "tfds"))
  empty = write_lines(tmp_path / "empty.jsonl", [])
  with pytest.raises(ValueError, match="read 0 records"):
    builders.prepare(builders.PreferenceJsonl, path=empty, data_dir=str(tmp_path / "tfds"))


def test_changed_file_is_prepared_again(tmp_path):
  path = tmp_path / "data.jsonl"
  write_records(path, GOOD[:1])
  data_dir = str(tmp_path / "tfds")
  b1, r1 = builders.prepare(builders.PreferenceJsonl, path=str(path), data_dir=data_dir)
  b1_again, r1_again = builders.prepare(builders.PreferenceJsonl, path=str(path),
                                        data_dir=data_dir)
  assert b1_again.builder_config.name == b1.builder_config.name and r1_again == r1
  write_records(path, GOOD)
  b2, r2 = builders.prepare(builders.PreferenceJsonl, path=str(path), data_dir=data_dir)
  assert b2.builder_config.name != b1.builder_config.name
  assert r2["records_used"] == 3
  assert builders.read_split(b2, "train")["prompt"] == ["p1", "p2 é", ""]
  # The policy is part of the name too.
  b3, _ = builders.prepare(builders.PreferenceJsonl, path=str(path), on_malformed="fail",
                           data_dir=data_dir)
  assert b3.builder_config.name != b2.builder_config.name


# HH-RLHF ---------------------------------------------------------------------------------

P = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant:"
HH_LINES = [
    {"chosen": P + " Fine, thanks.", "rejected": P + " Go away."},                # 1 used
    {"chosen": P + " Sure, here it is.", "rejected": P + " Sure, no."},            # 2 used
    {"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hello"},                   # 3
    {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"},
    {"chosen": P + " ok\n\nHuman: more\n\nAssistant: yes", "rejected": P + " no"},  # 5
    {"chosen": P + " ", "rejected": P + " text"},                                  # 6
    {"chosen": P + " same", "rejected": P + " same"},                              # 7
    {"chosen": P + " a"},                                                          # 8
    "{broken",                                                                     # 9
    {"chosen": P + "x", "rejected": P + "  two spaces"},                           # 10 used
    {"chosen": None, "rejected": P + " y"},                                        # 11
]


def test_hh_rlhf_split_exact_strings(tmp_path):
  lines = [l if isinstance(l, str) else json.dumps(l) for l in HH_LINES]
  path = write_lines(tmp_path / "hh.jsonl.gz", lines, compress=True)
  builder, report = builders.prepare(builders.HhRlhf, path=path,
                                     data_dir=str(tmp_path / "tfds"))
  assert report["records_read"] == 11 and report["records_used"] == 3
  assert report["malformed"] == {
      "invalid_utf8": 0, "invalid_json": 1, "not_an_object": 0, "missing_field": 1,
      "non_string_field": 1, "identical_chosen_rejected": 1, "no_assistant_turn": 1,
      "no_shared_turn_boundary": 1, "reply_not_final_turn": 1, "empty_reply": 1}
  examples = report["splits"]["train"]["malformed_examples"]
  where = {r: [e.split(": ")[0] for e in ex] for r, ex in examples.items()}
  assert where == {
      "invalid_json": [f"{path}:9"], "missing_field": [f"{path}:8"],
      "non_string_field": [f"{path}:11"], "identical_chosen_rejected": [f"{path}:7"],
      "no_assistant_turn": [f"{path}:3"], "no_shared_turn_boundary": [f"{path}:4"],
      "reply_not_final_turn": [f"{path}:5"], "empty_reply": [f"{path}:6"]}
  cols = builders.read_split(builder, "train")
  assert cols["prompt"] == [P, P, P]
  assert cols["chosen"] == ["Fine, thanks.", "Sure, here it is.", "x"]
  assert cols["rejected"] == ["Go away.", "Sure, no.", " two spaces"]
  assert cols["source_line"].tolist() == [1, 2, 10]
  np.testing.assert_array_equal(cols["margin"], [0.0, 0.0, 0.0])


def test_hh_rlhf_parser_single_turn():
  prompt, chosen, rejected, margin = records_lib.parse_hh_rlhf_record(
      {"chosen": "\n\nHuman: Q?\n\nAssistant: A1", "rejected": "\n\nHuman: Q?\n\nAssistant: A2",
       "extra": 1})
  assert (prompt, chosen, rejected, margin) == ("\n\nHuman: Q?\n\nAssistant:", "A1", "A2", 0.0)


def test_hh_rlhf_real_file(hh_rlhf_file, tmp_path):
  builder, report = builders.prepare(builders.HhRlhf, path=str(hh_rlhf_file),
                                     data_dir=str(tmp_path / "tfds"))
  assert report["records_read"] == 2312
  assert report["records_used"] + report["records_malformed"] == 2312
  assert report["records_used"] > 2000
  assert sum(report["malformed"].values()) == report["records_malformed"]
  # What this file holds (checked by hand): 5 replies carry further turns, 4 are empty.
  assert {k: v for k, v in report["malformed"].items() if v} == {
      "reply_not_final_turn": 5, "empty_reply": 4}
  examples = report["splits"]["train"]["malformed_examples"]
  lines = lambda r: [int(e.split(": ")[0].rsplit(":", 1)[1]) for e in examples[r]]
  assert lines("reply_not_final_turn") == [1255, 1689, 1951, 1953, 2037]
  assert lines("empty_reply") == [87, 517, 926, 1104]
  cols = builders.read_split(builder, "train")
  assert len(cols["prompt"]) == report["records_used"] == 2303
  assert all(p.endswith("\n\nAssistant:") and p.startswith("\n\nHuman: ")
             for p in cols["prompt"])
  assert all("\n\nHuman:" not in r for r in cols["chosen"] + cols["rejected"])
  assert cols["source_line"][:3].tolist() == [1, 2, 3]
