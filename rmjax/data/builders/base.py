"""Shared machinery of the local-file preference builders (array_record, no TensorFlow).

A builder reads local JSONL files named in its `LocalFilesConfig` and writes the usable
records as ``array_record`` shards under ``data_dir``, readable with
``builder.as_data_source()``. Nothing here needs TensorFlow: ``tfds.features.Text`` encodes to
bytes without it, and reading back through ``as_data_source`` returns the strings as
``bytes`` (decoded by `read_split`).

The config name is derived from the files (absolute path, size and modification time), the
``on_malformed`` policy and the builder version, so a changed file is prepared afresh while
an unchanged one is reused.

Beside the prepared shards the builder writes `REPORT_FILENAME`: records read, used and
malformed per reason with ``file:line`` examples, per split and in total, and the policy
applied. It is written inside TFDS's temporary directory, so it appears together with the
data or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from rmjax.data.builders import records as records_lib

REPORT_FILENAME = "preparation_report.json"

_POLICY_EFFECT = {
    "skip": "malformed records were counted, listed in malformed_examples and left out",
    "fail": "the first malformed record raises MalformedRecordError (none were found)",
}


class LocalFilesConfig(tfds.core.BuilderConfig):
  """Builder config naming local JSONL files and the malformed-record policy.

  Attributes:
    path: tuple of train files (plain or ``.gz`` JSONL).
    eval_path: tuple of eval files; empty for a train-only dataset.
    on_malformed: "skip" or "fail".
  """

  def __init__(self, *, path: str | Sequence[str], eval_path: str | Sequence[str] = (),
               on_malformed: str = "skip", builder_name: str = "", version: str = "1.0.0"):
    """Builds the config; the name is a hash of the files' path, size and mtime.

    Args:
      path: train file(s): one path, comma-separated paths, or a sequence.
      eval_path: eval file(s), same forms; empty for none.
      on_malformed: "skip" (count, report and leave out) or "fail" (raise on the first).
      builder_name: name of the builder the config is for (part of the hash).
      version: builder version (part of the hash).

    Raises:
      FileNotFoundError: a file is missing (names the field and the path).
      ValueError: no train file, or an unknown ``on_malformed``.
    """
    train_files = tuple(os.path.abspath(p) for p in records_lib.split_paths(path))
    eval_files = tuple(os.path.abspath(p) for p in records_lib.split_paths(eval_path))
    if not train_files:
      raise ValueError("config field 'path' names no file: give the path of a JSONL file")
    if on_malformed not in records_lib.ON_MALFORMED_CHOICES:
      raise ValueError(
          f"config field 'on_malformed' must be one of {records_lib.ON_MALFORMED_CHOICES}, "
          f"got {on_malformed!r}")
    records_lib.check_files_exist(train_files, "path")
    records_lib.check_files_exist(eval_files, "eval_path")
    fingerprint = hashlib.sha256()
    for tag, files in (("train", train_files), ("eval", eval_files)):
      for f in files:
        stat = os.stat(f)
        fingerprint.update(f"{tag}\0{f}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    fingerprint.update(f"{builder_name}\0{version}\0{on_malformed}".encode())
    stem = re.sub(r"[^a-z0-9]+", "_", os.path.basename(train_files[0]).lower()).strip("_")
    name = f"{stem[:40]}_{fingerprint.hexdigest()[:16]}"
    super().__init__(
        name=name,
        description=f"train={list(train_files)} eval={list(eval_files)} "
                    f"on_malformed={on_malformed}")
    self.path = train_files
    self.eval_path = eval_files
    self.on_malformed = on_malformed


class LocalPreferenceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders of local preference JSONL files; subclasses set the parser.

  Features: ``prompt``, ``chosen``, ``rejected`` (Text), ``margin`` (float32),
  ``source_file`` (Text) and ``source_line`` (int64, 1-based). Splits: ``train``, and
  ``eval`` when the config names eval files. Records keep their file order.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  # Subclasses: the record parser and its reasons table (see records.py).
  PARSE: Callable[[Any], tuple[str, str, str, float]] = staticmethod(
      records_lib.parse_preference_record)
  REASONS: dict[str, str] = records_lib.PREFERENCE_REASONS
  DESCRIPTION = "Preference pairs from local JSONL files."
  # Local files have no download checksums, so TFDS need not find a code folder for them.
  # Setting this also avoids TFDS 4.9.x's lookup of `importlib_resources` (an optional
  # backport that may be absent) for builders defined inside a package.
  code_path = None

  def __init__(self, *, config: LocalFilesConfig, data_dir: str, **kwargs):
    """Creates the builder; ``file_format`` defaults to array_record.

    Args:
      config: a `LocalFilesConfig` naming the files.
      data_dir: TFDS data directory root.
      **kwargs: passed on to `tfds.core.GeneratorBasedBuilder`.
    """
    if not isinstance(config, LocalFilesConfig):
      raise TypeError(f"config must be a LocalFilesConfig, got {type(config).__name__}")
    kwargs.setdefault("file_format", "array_record")
    super().__init__(config=config, data_dir=data_dir, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "prompt": tfds.features.Text(),
            "chosen": tfds.features.Text(),
            "rejected": tfds.features.Text(),
            "margin": tfds.features.Scalar(dtype=np.float32),
            "source_file": tfds.features.Text(),
            "source_line": tfds.features.Scalar(dtype=np.int64),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only.
    config = self.builder_config
    split_files = {"train": config.path}
    if config.eval_path:
      split_files["eval"] = config.eval_path
    split_records, split_reports = {}, {}
    for split, files in split_files.items():
      records, report = records_lib.collect_records(
          files, type(self).PARSE, self.REASONS, on_malformed=config.on_malformed,
          field="path" if split == "train" else "eval_path")
      records_lib.require_records(records, report, split)
      split_records[split], split_reports[split] = records, report
    report = dict(
        builder=self.name,
        version=str(self.version),
        config_name=config.name,
        policy=dict(on_malformed=config.on_malformed,
                    effect=_POLICY_EFFECT[config.on_malformed]),
        reasons=dict(self.REASONS),
        records_read=sum(r["records_read"] for r in split_reports.values()),
        records_used=sum(r["records_used"] for r in split_reports.values()),
        records_malformed=sum(r["records_malformed"] for r in split_reports.values()),
        malformed={reason: sum(r["malformed"][reason] for r in split_reports.values())
                   for reason in self.REASONS},
        splits=split_reports,
    )
    report_path = os.path.join(self.data_dir, REPORT_FILENAME)
    with open(report_path, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2, ensure_ascii=False)
    return {split: self._generate_examples(records)
            for split, records in split_records.items()}

  def _generate_examples(self, records):
    for index, r in enumerate(records):
      yield index, dict(prompt=r.prompt, chosen=r.chosen, rejected=r.rejected,
                        margin=np.float32(r.margin), source_file=r.source_file,
                        source_line=r.source_line)

  def preparation_report(self) -> dict[str, Any]:
    """The preparation report written beside the prepared data (after `download_and_prepare`)."""
    path = os.path.join(self.data_dir, REPORT_FILENAME)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"no preparation report at {path}: call download_and_prepare() first")
    with open(path, encoding="utf-8") as f:
      return json.load(f)


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, Any]:
  """Reads a prepared split through ``as_data_source`` into columns, in record order.

  Args:
    builder: a prepared `LocalPreferenceBuilder`.
    split: "train" or "eval".

  Returns:
    dict with lists ``prompt``, ``chosen``, ``rejected``, ``source_file``, float32 [N]
    ``margin`` and int64 [N] ``source_line``.
  """
  source = builder.as_data_source(split=split)
  columns = {k: [] for k in ("prompt", "chosen", "rejected", "source_file")}
  margin, line = [], []
  for i in range(len(source)):
    example = source[i]
    for k in columns:
      columns[k].append(_text(example[k]))
    margin.append(example["margin"])
    line.append(example["source_line"])
  columns["margin"] = np.asarray(margin, dtype=np.float32).reshape(-1)
  columns["source_line"] = np.asarray(line, dtype=np.int64).reshape(-1)
  return columns


def prepare(builder_cls: type[LocalPreferenceBuilder], *, path: str | Sequence[str],
            eval_path: str | Sequence[str] = (), on_malformed: str = "skip",
            data_dir: str) -> tuple[LocalPreferenceBuilder, dict[str, Any]]:
  """Builds (or reuses) a local preference dataset and returns it with its report.

  Args:
    builder_cls: `PreferenceJsonl` or `HhRlhf`.
    path: train file(s).
    eval_path: eval file(s), or empty.
    on_malformed: "skip" or "fail".
    data_dir: TFDS data directory root.

  Returns:
    The prepared builder (read it with ``as_data_source``) and its preparation report.
  """
  config = LocalFilesConfig(path=path, eval_path=eval_path, on_malformed=on_malformed,
                            builder_name=builder_cls.name, version=str(builder_cls.VERSION))
  builder = builder_cls(config=config, data_dir=data_dir)
  builder.download_and_prepare()  # Reuses the prepared data when it exists.
  return builder, builder.preparation_report()
