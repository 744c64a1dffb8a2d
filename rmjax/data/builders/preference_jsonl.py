"""TFDS builder of generic preference JSONL files (array_record, no TensorFlow).

One JSON object per line: ``prompt``, ``chosen``, ``rejected`` (strings) and optionally
``margin`` (finite number >= 0) or ``strength`` (finite number; margin = abs(strength) when
``margin`` is absent). Files may be plain or gzip (``.gz``). Malformed records are handled
as described in `rmjax.data.builders.records` (reasons in ``PREFERENCE_REASONS``).

Usage::

  config = LocalFilesConfig(path="train.jsonl", eval_path="eval.jsonl.gz",
                            builder_name=PreferenceJsonl.name)
  builder = PreferenceJsonl(config=config, data_dir="/tmp/tfds")
  builder.download_and_prepare()
  train = builder.as_data_source(split="train")
"""

from rmjax.data.builders import base
from rmjax.data.builders import records as records_lib


class PreferenceJsonl(base.LocalPreferenceBuilder):
  """Preference pairs from local JSONL files with ``prompt``/``chosen``/``rejected``."""

  name = "rmjax_preference_jsonl"
  PARSE = staticmethod(records_lib.parse_preference_record)
  REASONS = records_lib.PREFERENCE_REASONS
  DESCRIPTION = (
      "Preference pairs from local JSONL files: prompt, chosen, rejected, optional margin "
      "or strength.")
