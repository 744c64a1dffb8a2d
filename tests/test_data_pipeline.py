"""Tests of rmjax.data.loading and rmjax.data.datasets: config, splits, deterministic batching."""

import json
import os
import pathlib

import numpy as np
import pytest

from rmjax import data as data_lib
from rmjax.data import ByteTokenizer
from rmjax.data import loading as loading_lib
from rmjax.data import PreferenceDataset
from rmjax.data.builders import records as records_lib


def make_dataset(n, length=6, with_prob=False):
  """n pairs whose row i is identified by token i + 3 at position 1 of both sequences."""
  tokens = np.zeros((n, length), dtype=np.int32)
  mask = np.zeros((n, length), dtype=np.int32)
  for i in range(n):
    real = 3 + i % (length - 2)
    tokens[i, :real] = [1, i + 3] + [50] * (real - 3) + [2]
    mask[i, :real] = 1
  arrays = dict(chosen_tokens=tokens, chosen_mask=mask, rejected_tokens=tokens.copy(),
                rejected_mask=mask.copy(), margin=np.arange(n, dtype=np.float32) / 10)
  if with_prob:
    arrays["preference_prob"] = np.full(n, 0.75, dtype=np.float32)
  return PreferenceDataset(arrays, name="toy")


def row_ids(batch):
  return (batch["chosen_tokens"][:, 1] - 3).tolist()


# Config ----------------------------------------------------------------------------------

def test_default_config_fields():
  cfg = data_lib.default_data_config()
  assert cfg.to_dict() == dict(
      source="synthetic", format="pairs", attributes=False, max_len=128, max_prompt_len=64,
      tokenizer="bytes", chat_template="plain", on_malformed="skip", path="",
      eval_path="", eval_fraction=0.1, split_seed=0, split_by="record", tfds_data_dir="",
      length_buckets="",
      synthetic=dict(seed=0, world_seed=0, num_train=32768, num_eval=4096, prompt_len_min=2,
                     prompt_len_max=5, response_len_min=4, response_len_max=12,
                     num_letters=10, match_bonus=1.0, temperature=0.11, margin="none",
                     strength_thresholds=(0.05, 0.2, 0.5), attribute_missing_prob=0.0,
                     list_size=4, num_user_groups=2, context_pairs=8, query_pairs=8))


@pytest.mark.parametrize("override, error, match", [
    (dict(source="parquet"), ValueError,
     r"data_config.source must be one of \['synthetic', 'jsonl', 'hh_rlhf'\], got 'parquet'"),
    (dict(max_len=3), ValueError, "data_config: max_len must be >= 4"),
    (dict(max_len=16, max_prompt_len=14), ValueError, "max_prompt_len must satisfy"),
    (dict(colour="red"), ValueError, r"unknown field\(s\) \['colour'\]"),
    (dict(synthetic=dict(size=3)), ValueError, r"data_config.synthetic has unknown field"),
    (dict(source="jsonl"), ValueError, "data_config.path must name the JSONL file"),
    (dict(source="jsonl", path="x.jsonl", eval_fraction=1.0), ValueError,
     r"eval_fraction must lie in \(0, 1\)"),
    (dict(source="hh_rlhf", path="x.jsonl", on_malformed="drop"), ValueError,
     "data_config.on_malformed must be one of"),
    (dict(tokenizer="gpt2"), ValueError,
     r"data_config.tokenizer must be one of \['bytes', 'hf:<path to tokenizer.json>', "
     r"'smollm2', 'minilm'\], got 'gpt2'"),
    (dict(tokenizer="hf:"), ValueError, "data_config.tokenizer must be one of"),
    (dict(chat_template="alpaca"), ValueError,
     r"data_config.chat_template must be one of \['plain', 'chatml', 'chatml_smollm2', "
     r"'bert_pair'\], got 'alpaca'"),
    (dict(chat_template="chatml"), ValueError,
     "chat_template='chatml' needs named special tokens that tokenizer 'bytes' does not have"),
    (dict(split_by="user"), ValueError,
     r"data_config.split_by must be one of \['record', 'prompt'\], got 'user'"),
])
def test_config_errors(tmp_path, override, error, match):
  with pytest.raises(error, match=match):
    data_lib.load_preference_data(override, workdir=str(tmp_path))


# PreferenceDataset -----------------------------------------------------------------------

def test_train_batch_format_and_values():
  ds = make_dataset(5, with_prob=True)
  batch = ds.train_batch(step=0, batch_size=3, seed=0)
  assert set(batch) == {"chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask",
                        "margin", "preference_prob", "valid"}
  assert batch["chosen_tokens"].shape == (3, 6) and batch["chosen_tokens"].dtype == np.int32
  assert batch["margin"].dtype == np.float32 and batch["valid"].dtype == bool
  assert batch["valid"].all()
  ids = row_ids(batch)
  np.testing.assert_array_equal(batch["margin"], np.array(ids, np.float32) / 10)
  np.testing.assert_array_equal(batch["chosen_tokens"], ds.arrays["chosen_tokens"][ids])


def test_each_epoch_is_a_permutation_and_batches_straddle_epochs():
  n, b = 5, 2
  ds = make_dataset(n)
  stream = sum((row_ids(ds.train_batch(s, b, seed=7)) for s in range(25)), [])
  epochs = [stream[i:i + n] for i in range(0, 50, n)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(n))
  assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs
  # Batch 2 holds stream positions 4 and 5: the end of epoch 0 and the start of epoch 1.
  assert row_ids(ds.train_batch(2, b, seed=7)) == [epochs[0][4], epochs[1][0]]


def test_batch_larger_than_dataset():
  ds = make_dataset(5)
  ids = row_ids(ds.train_batch(0, 12, seed=3))
  assert sorted(ids[:5]) == list(range(5)) and sorted(ids[5:10]) == list(range(5))
  assert len(ids) == 12


def test_resume_reproduces_uninterrupted_run():
  uninterrupted = make_dataset(7)
  run = [uninterrupted.train_batch(s, 3, seed=11) for s in range(10)]
  resumed = make_dataset(7)  # fresh object, nothing drawn before step 6
  for s in (6, 9, 7):
    batch = resumed.train_batch(s, 3, seed=11)
    for key in batch:
      np.testing.assert_array_equal(batch[key], run[s][key])
  # Same (seed, step) twice gives the same batch; another seed another order.
  assert row_ids(uninterrupted.train_batch(4, 3, seed=11)) == row_ids(run[4])
  other = [row_ids(uninterrupted.train_batch(s, 3, seed=12)) for s in range(10)]
  assert other != [row_ids(b) for b in run]


def test_eval_batches_cover_every_pair_once_with_valid_mask():
  ds = make_dataset(5)
  batches = list(ds.eval_batches(2))
  assert ds.num_eval_batches(2) == 3 and len(batches) == 3
  assert [row_ids(b) for b in batches] == [[0, 1], [2, 3], [4, 4]]
  assert [b["valid"].tolist() for b in batches] == [[True, True], [True, True], [True, False]]
  # Padding rows are copies of a real row: legal tokens, same shapes.
  np.testing.assert_array_equal(batches[2]["chosen_mask"][1], ds.arrays["chosen_mask"][4])
  exact = list(ds.eval_batches(5))
  assert len(exact) == 1 and exact[0]["valid"].all() and row_ids(exact[0]) == [0, 1, 2, 3, 4]
  big = list(ds.eval_batches(8))
  assert row_ids(big[0]) == [0, 1, 2, 3, 4, 4, 4, 4]
  assert big[0]["valid"].tolist() == [True] * 5 + [False] * 3


def test_batch_argument_errors():
  ds = make_dataset(3)
  with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
    ds.train_batch(0, 0, seed=0)
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    ds.eval_batches(0)
  with pytest.raises(ValueError, match="step must be >= 0, got -1"):
    ds.train_batch(-1, 2, seed=0)
  with pytest.raises(ValueError, match="seed must be an int"):
    ds.train_batch(0, 2, seed=1.5)


def test_dataset_validation():
  good = make_dataset(3).arrays
  left_padded = dict(good, chosen_mask=good["chosen_mask"][:, ::-1].copy())
  with pytest.raises(ValueError, match="toy: chosen_mask row 0 must be 1s then 0s"):
    PreferenceDataset(left_padded, name="toy")
  with pytest.raises(ValueError, match=r"rejected_tokens must be int32 \[3, 6\]"):
    PreferenceDataset(dict(good, rejected_tokens=good["rejected_tokens"].astype(np.int64)),
                      name="toy")
  with pytest.raises(ValueError, match=r"missing \['margin'\]"):
    PreferenceDataset({k: v for k, v in good.items() if k != "margin"}, name="toy")
  # Annotator ids travel with their pairs.
  ids = np.array([4, 0, 7], np.int32)
  with_ids = PreferenceDataset(dict(good, user_ids=ids), name="toy")
  np.testing.assert_array_equal(with_ids.gather([2, 0])["user_ids"], [7, 4])
  with pytest.raises(ValueError, match=r"toy: user_ids must be >= 0, got -1 at pair 1"):
    PreferenceDataset(dict(good, user_ids=np.array([0, -1, 2], np.int32)), name="toy")
  with pytest.raises(ValueError, match=r"user_ids must be int32 \[3\]"):
    PreferenceDataset(dict(good, user_ids=ids[:2]), name="toy")
  lengths = np.array([1, 2, 1], np.int32)
  np.testing.assert_array_equal(
      PreferenceDataset(dict(good, prompt_lengths=lengths), name="toy").gather([1])[
          "prompt_lengths"], [2])
  too_long = good["chosen_mask"].sum(1).astype(np.int32)
  with pytest.raises(ValueError, match=r"toy: prompt_lengths\[0\]=\d+ must be in \[1, \d+\)"):
    PreferenceDataset(dict(good, prompt_lengths=too_long), name="toy")


# load_preference_data: synthetic -----------------------------------------------------------

def test_load_synthetic_small(tmp_path):
  cfg = data_lib.default_data_config()
  cfg.max_len, cfg.max_prompt_len = 40, 16
  cfg.synthetic.num_train, cfg.synthetic.num_eval = 64, 10
  data = data_lib.load_preference_data(cfg, workdir=str(tmp_path))
  assert data.train.num_pairs == 64 and data.eval.num_pairs == 10
  train, eval_, _ = data_lib.make_synthetic_preferences(cfg.synthetic)
  tok = ByteTokenizer()
  arrays = data.eval.arrays
  for i in range(10):
    for side, texts in (("chosen", eval_.chosen), ("rejected", eval_.rejected)):
      row, mask = arrays[f"{side}_tokens"][i], arrays[f"{side}_mask"][i]
      n = mask.sum()
      assert n == 2 + len(eval_.prompt[i]) + len(texts[i])
      assert row[0] == 1 and row[n - 1] == 2
      assert tok.decode(row) == eval_.prompt[i] + texts[i]
  np.testing.assert_array_equal(arrays["preference_prob"], eval_.preference_prob)
  info = data.info
  assert info["source"] == "synthetic"
  assert info["records_read"] == info["records_used"] == 74 and info["records_malformed"] == 0
  assert info["bayes_optimal_accuracy"]["eval"] == pytest.approx(
      float(np.mean(np.maximum(eval_.preference_prob, 1 - eval_.preference_prob))), abs=1e-6)
  assert info["truncation"]["train"]["pairs_with_truncation"] == 0 and info["notes"] == []
  json.dumps(info)  # the report is plain JSON


def test_synthetic_truncation_is_counted(tmp_path):
  # Prompts of 2..5 letters keep at most 3; responses get 12 - 2 - kept prompt tokens.
  cfg = dict(max_len=12, max_prompt_len=3, synthetic=dict(num_train=200, num_eval=10))
  data = data_lib.load_preference_data(cfg, workdir=str(tmp_path))
  train, _, _ = data_lib.make_synthetic_preferences(dict(num_train=200, num_eval=10))
  kept = [min(len(p), 3) for p in train.prompt]
  expected = dict(
      prompts_truncated=sum(len(p) > 3 for p in train.prompt),
      chosen_truncated=sum(k + len(c) > 10 for k, c in zip(kept, train.chosen)),
      rejected_truncated=sum(k + len(r) > 10 for k, r in zip(kept, train.rejected)),
      prompt_tokens_cut=sum(len(p) - k for p, k in zip(train.prompt, kept)),
      response_tokens_cut=sum(max(0, k + len(c) - 10) + max(0, k + len(r) - 10)
                              for k, c, r in zip(kept, train.chosen, train.rejected)))
  report = data.info["truncation"]["train"]
  assert {k: report[k] for k in expected} == expected
  assert expected["prompts_truncated"] > 0 and expected["chosen_truncated"] > 0
  assert data.info["notes"]  # warns that Bayes accuracy is out of reach


# load_preference_data: files -----------------------------------------------------------------

def write_jsonl(path, objs, extra_lines=()):
  path.write_text("".join(json.dumps(o) + "\n" for o in objs) + "".join(
      l + "\n" for l in extra_lines))
  return str(path)


RECORDS = [{"prompt": f"prompt {i}", "chosen": f"good {i}", "rejected": f"bad {i}",
            "margin": float(i)} for i in range(10)]


def test_load_jsonl_with_hold_out(tmp_path):
  path = write_jsonl(tmp_path / "prefs.jsonl", RECORDS, extra_lines=["oops", '{"prompt": 1}'])
  cfg = dict(source="jsonl", path=path, eval_fraction=0.2, max_len=32, max_prompt_len=10)
  data = data_lib.load_preference_data(cfg, workdir=str(tmp_path / "w1"))
  info = data.info
  assert (info["records_read"], info["records_used"], info["records_malformed"]) == (12, 10, 2)
  assert info["malformed"] == {"invalid_json": 1, "missing_field": 1}
  assert info["split"] == dict(method="held_out_fraction", eval_fraction=0.2, split_seed=0,
                               num_train=8, num_eval=2)
  assert info["tfds"]["prepared_dir"].startswith(str(tmp_path / "w1" / "tfds"))
  assert info["preparation_report"]["splits"]["train"]["malformed_examples"] == {
      "invalid_json": [f"{path}:11: Expecting value: line 1 column 1 (char 0)"],
      "missing_field": [f"{path}:12: missing field(s) ['chosen', 'rejected']; expected "
                        "['prompt', 'chosen', 'rejected'], found ['prompt']"]}
  json.dumps(info)  # the report is plain JSON
  tok = ByteTokenizer()
  decode = lambda ds: [tok.decode(t) for t in ds.arrays["chosen_tokens"]]
  train, eval_ = decode(data.train), decode(data.eval)
  assert sorted(train + eval_) == sorted(f"prompt {i}good {i}" for i in range(10))
  # Both splits keep file order; margins travel with their records.
  assert train == sorted(train) and eval_ == sorted(eval_)
  ids = [int(t.split()[-1]) for t in eval_]
  np.testing.assert_array_equal(data.eval.arrays["margin"], np.array(ids, np.float32))
  # Deterministic in split_seed: same seed same split, other seed another split.
  again = data_lib.load_preference_data(cfg, workdir=str(tmp_path / "w1"))
  assert decode(again.eval) == eval_
  other = data_lib.load_preference_data(dict(cfg, split_seed=1), workdir=str(tmp_path / "w1"))
  assert decode(other.eval) != eval_


def test_load_jsonl_with_eval_path_and_data_dir(tmp_path):
  train = write_jsonl(tmp_path / "train.jsonl", RECORDS[:6])
  eval_ = write_jsonl(tmp_path / "eval.jsonl", RECORDS[6:])
  cfg = dict(source="jsonl", path=train, eval_path=eval_, tfds_data_dir=str(tmp_path / "d"),
             max_len=16, max_prompt_len=6)
  data = data_lib.load_preference_data(cfg, workdir=str(tmp_path / "w"))
  assert data.info["split"] == dict(method="eval_path", num_train=6, num_eval=4)
  assert data.info["tfds"]["prepared_dir"].startswith(str(tmp_path / "d"))
  # "prompt 0" (8 tokens) keeps its last 6; "good 0" gets 16 - 2 - 6 = 8 tokens, fits.
  tok = ByteTokenizer()
  assert tok.decode(data.train.arrays["chosen_tokens"][0]) == "ompt 0good 0"
  trunc = data.info["truncation"]["train"]
  assert trunc["prompts_truncated"] == 6 and trunc["prompt_tokens_cut"] == 12
  assert trunc["chosen_truncated"] == 0


def test_load_errors_for_files(tmp_path):
  missing = str(tmp_path / "missing.jsonl")
  with pytest.raises(FileNotFoundError, match=r"data_config.path.*missing.jsonl"):
    data_lib.load_preference_data(dict(source="jsonl", path=missing), workdir=str(tmp_path))
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n[]\n')
  with pytest.raises(data_lib.MalformedRecordError, match=r"bad.jsonl:2: .*not_an_object"):
    data_lib.load_preference_data(dict(source="jsonl", path=str(bad), on_malformed="fail"),
                                  workdir=str(tmp_path))
  with pytest.raises(ValueError, match="has 1 usable record"):
    data_lib.load_preference_data(dict(source="jsonl", path=str(bad)), workdir=str(tmp_path))


def test_load_hh_rlhf_real_file(hh_rlhf_file, tmp_path):
  cfg = dict(source="hh_rlhf", path=str(hh_rlhf_file), max_len=256, max_prompt_len=192)
  data = data_lib.load_preference_data(cfg, workdir=str(tmp_path))
  info = data.info
  assert info["records_read"] == 2312 and info["records_used"] == 2303
  assert info["records_used"] + info["records_malformed"] == info["records_read"]
  assert info["split"]["num_eval"] == 230 and info["split"]["num_train"] == 2073
  assert data.train.num_pairs + data.eval.num_pairs == 2303
  for split in ("train", "eval"):
    trunc = info["truncation"][split]
    assert trunc["pairs"] == (2073 if split == "train" else 230)
    assert trunc["prompts_truncated"] > 0  # many HH prompts exceed 192 bytes
    assert trunc["max_real_length"] == 256
  batch = next(data.eval.eval_batches(64))
  assert batch["chosen_tokens"].shape == (64, 256) and batch["valid"].all()


# Split by prompt, helpful-base, HHH alignment --------------------------------------------

SHARED_DATA = pathlib.Path(os.environ.get(
    "RMJAX_SHARED_DIR", pathlib.Path(__file__).resolve().parents[2] / "shared")) / "data"


def _shared_file(*parts):
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"real data not found at {path} (needs ../shared beside the repo or "
                "RMJAX_SHARED_DIR)")
  return str(path)


def test_split_by_prompt_values():
  # Prompts a, b, c, d in order of first appearance; permutation(4) with seed 0 is
  # [2, 0, 1, 3], so prompt 2 ("c", record 3) is held out.
  train, eval_, counts = loading_lib.split_by_prompt(["a", "b", "a", "c", "b", "d"], 0.25, 0)
  assert train.tolist() == [0, 1, 2, 4, 5] and eval_.tolist() == [3]
  assert counts == dict(num_prompts=4, num_train_prompts=3, num_eval_prompts=1)
  with pytest.raises(ValueError, match="needs at least 2 distinct prompts .* got 1 among 3"):
    loading_lib.split_by_prompt(["a", "a", "a"], 0.5, 0)


def test_load_jsonl_split_by_prompt_keeps_prompts_together(tmp_path):
  records = [{"prompt": f"q{i % 7}|", "chosen": f"good {i}", "rejected": f"bad {i}"}
             for i in range(20)]
  path = write_jsonl(tmp_path / "prefs.jsonl", records)
  cfg = dict(source="jsonl", path=path, eval_fraction=0.3, split_by="prompt", max_len=32,
             max_prompt_len=8)
  data = data_lib.load_preference_data(cfg, workdir=str(tmp_path))
  assert data.info["split"] == dict(
      method="held_out_fraction_by_prompt", eval_fraction=0.3, split_seed=0, num_prompts=7,
      num_train_prompts=5, num_eval_prompts=2, num_train=14, num_eval=6)
  tok = ByteTokenizer()
  decoded = {name: [tok.decode(t).split("|") for t in ds.arrays["chosen_tokens"]]
             for name, ds in (("train", data.train), ("eval", data.eval))}
  prompts = {name: {p for p, _ in rows} for name, rows in decoded.items()}
  assert prompts["eval"] == {"q2", "q4"} and not prompts["train"] & prompts["eval"]
  # Every record once, each split in file order.
  assert [int(c.split()[1]) for _, c in decoded["eval"]] == [2, 4, 9, 11, 16, 18]
  assert sorted(int(c.split()[1]) for rows in decoded.values() for _, c in rows) == list(
      range(20))
  # Record split of the same file: other counts, prompts on both sides.
  by_record = data_lib.load_preference_data(dict(cfg, split_by="record"),
                                            workdir=str(tmp_path))
  assert by_record.info["split"]["method"] == "held_out_fraction"
  assert by_record.info["split"]["num_eval"] == 6
  # With an eval file the overlap of prompts is reported.
  eval_path = write_jsonl(tmp_path / "eval.jsonl", records[:3] + [
      {"prompt": "new|", "chosen": "a", "rejected": "b"}])
  data = data_lib.load_preference_data(dict(cfg, eval_path=eval_path), workdir=str(tmp_path))
  assert data.info["split"] == dict(method="eval_path", num_train=20, num_eval=4,
                                    eval_records_with_a_train_prompt=3)


def test_load_hh_rlhf_split_by_prompt_real_files(tmp_path):
  helpful = _shared_file("hh_rlhf", "helpful-base-test.jsonl.gz")
  harmless = _shared_file("hh_rlhf", "harmless-base-test.jsonl.gz")
  cfg = dict(source="hh_rlhf", path=helpful, split_by="prompt", max_len=256,
             max_prompt_len=192)
  data = data_lib.load_preference_data(cfg, workdir=str(tmp_path))
  info = data.info
  assert (info["records_read"], info["records_used"], info["records_malformed"]) == (
      2354, 2339, 15)
  assert info["malformed"] == dict(identical_chosen_rejected=2, reply_not_final_turn=9,
                                   empty_reply=4)
  assert info["split"] == dict(
      method="held_out_fraction_by_prompt", eval_fraction=0.1, split_seed=0,
      num_prompts=2339, num_train_prompts=2105, num_eval_prompts=234, num_train=2105,
      num_eval=234)
  assert (data.train.num_pairs, data.eval.num_pairs) == (2105, 234)
  assert info["tokenizer"] == dict(spec="bytes", name="bytes", vocab_size=259, pad_id=0,
                                   bos_id=1, eos_id=2)
  assert info["chat_template"] == "plain"
  assert info["truncation"]["eval"]["pairs"] == 234
  # harmless-base has 2 prompts with 2 records each; each pair stays on one side.
  data = data_lib.load_preference_data(dict(cfg, path=harmless), workdir=str(tmp_path))
  assert data.info["split"] == dict(
      method="held_out_fraction_by_prompt", eval_fraction=0.1, split_seed=0,
      num_prompts=2301, num_train_prompts=2071, num_eval_prompts=230, num_train=2072,
      num_eval=231)
  records, _ = records_lib.collect_records([harmless], records_lib.parse_hh_rlhf_record,
                                           records_lib.HH_RLHF_REASONS)
  prompts = [r.prompt for r in records]
  train_idx, eval_idx, _ = loading_lib.split_by_prompt(prompts, 0.1, 0)
  assert not {prompts[i] for i in train_idx} & {prompts[i] for i in eval_idx}
  assert (len(train_idx), len(eval_idx)) == (2072, 231)


def test_hhh_alignment_by_property(tmp_path):
  path = _shared_file("hhh_alignment", "hhh_alignment.jsonl")
  datasets, info = data_lib.load_hhh_alignment(path, max_len=512, max_prompt_len=384)
  assert info["pairs"] == dict(harmless=58, helpful=59, honest=61, other=43)
  assert info["records_read"] == 221 and list(datasets) == ["harmless", "helpful", "honest",
                                                            "other"]
  assert {p: ds.num_pairs for p, ds in datasets.items()} == info["pairs"]
  assert datasets["honest"].name == "hhh_honest"
  rows = [json.loads(line) for line in open(path, encoding="utf-8")]
  tok = ByteTokenizer()
  for prop, ds in datasets.items():
    mine = [r for r in rows if r["property"] == prop]
    kept = [min(len(r["prompt"].encode()), 384) for r in mine]
    room = [512 - 2 - k for k in kept]
    expected = dict(
        prompts_truncated=sum(len(r["prompt"].encode()) > 384 for r in mine),
        chosen_truncated=sum(len(r["chosen"].encode()) > m for r, m in zip(mine, room)),
        rejected_truncated=sum(len(r["rejected"].encode()) > m for r, m in zip(mine, room)))
    report = info["truncation"][prop]
    assert {k: report[k] for k in expected} == expected, prop
    short = next(i for i, r in enumerate(mine)
                 if len((r["prompt"] + r["chosen"]).encode()) <= 510)
    assert tok.decode(ds.arrays["chosen_tokens"][short]) == (
        mine[short]["prompt"] + mine[short]["chosen"])
    np.testing.assert_array_equal(ds.arrays["margin"], 0.0)
  assert info["truncation"]["honest"]["prompts_truncated"] == 27
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps(dict(rows[1], property="kind")) + "\n")
  with pytest.raises(data_lib.MalformedRecordError,
                     match=r"bad.jsonl:2: malformed record \(unknown_property\): field "
                           r"'property' must be one of \['harmless', 'helpful', 'honest', "
                           r"'other'\], got str 'kind'"):
    data_lib.load_hhh_alignment(str(bad))
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    data_lib.load_hhh_alignment(str(tmp_path / "missing.jsonl"))


# Lists, user episodes and attributes ------------------------------------------------------

def _generated(fmt, **extra):
  cfg = data_lib.default_data_config()
  cfg.update(format=fmt, max_len=24, max_prompt_len=8, **extra)
  cfg.synthetic.update(num_train=32, num_eval=8, context_pairs=3, query_pairs=2,
                       attribute_missing_prob=0.25)
  return data_lib.load_preference_data(cfg, workdir="/nonexistent")


def test_lists_train_on_ranked_responses_and_evaluate_on_pairs():
  data = _generated("lists")
  assert isinstance(data.train, data_lib.ListDataset)
  assert isinstance(data.eval, data_lib.PreferenceDataset) and data.eval.num_pairs == 8
  batch = data.train.train_batch(3, 5, seed=0)
  assert batch["tokens"].shape == (5, 4, 24) and batch["ranking"].shape == (5, 4)
  assert data.train.num_pairs == 32 * 6
  arrays = data.train.arrays
  with pytest.raises(ValueError, match="permutation of 0..3"):
    data_lib.ListDataset(dict(arrays, ranking=np.zeros_like(arrays["ranking"])), name="toy")


def test_user_episodes_keep_each_users_pairs_together():
  data = _generated("user_episodes")
  assert isinstance(data.eval, data_lib.EpisodeDataset) and data.eval.num_pairs == 8 * 2
  batch = next(iter(data.eval.eval_batches(3)))
  assert batch["chosen_tokens"].shape == (3, 5, 24) and batch["preference_prob"].shape == (3, 5)
  assert data.info["user_episodes"]["context_pairs"] == 3
  with pytest.raises(ValueError, match="leaves no query pair"):
    data_lib.EpisodeDataset(data.train.arrays, context_pairs=5, name="toy")


def test_attributes_come_with_their_masks_and_only_for_synthetic_pairs():
  data = _generated("pairs", attributes=True)
  arrays = data.train.arrays
  present = arrays["chosen_attribute_mask"]
  assert present.dtype == bool and 0.5 < present.mean() < 0.95  # missing w.p. 0.25
  assert np.all(arrays["chosen_attributes"][~present] == 0)
  with pytest.raises(ValueError, match="attribute arrays come together"):
    data_lib.PreferenceDataset({k: v for k, v in arrays.items() if k != "rejected_attributes"},
                               name="toy")
  cfg = data_lib.default_data_config()
  cfg.update(source="jsonl", path="x.jsonl", format="lists")
  with pytest.raises(ValueError, match="source='synthetic' only"):
    data_lib.load_preference_data(cfg, workdir="/nonexistent")
