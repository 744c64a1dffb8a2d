"""TFDS builders of local preference files, written as array_record (no TensorFlow needed)."""

from rmjax.data.builders.base import LocalFilesConfig
from rmjax.data.builders.base import LocalPreferenceBuilder
from rmjax.data.builders.base import prepare
from rmjax.data.builders.base import read_split
from rmjax.data.builders.base import REPORT_FILENAME
from rmjax.data.builders.hh_rlhf import HhRlhf
from rmjax.data.builders.preference_jsonl import PreferenceJsonl
from rmjax.data.builders.records import collect_records
from rmjax.data.builders.records import HH_RLHF_REASONS
from rmjax.data.builders.records import MalformedRecordError
from rmjax.data.builders.records import parse_hh_rlhf_record
from rmjax.data.builders.records import parse_preference_record
from rmjax.data.builders.records import PREFERENCE_REASONS
from rmjax.data.builders.records import PreferenceRecord

__all__ = [
    "collect_records", "HH_RLHF_REASONS", "HhRlhf", "LocalFilesConfig",
    "LocalPreferenceBuilder", "MalformedRecordError", "parse_hh_rlhf_record",
    "parse_preference_record", "PREFERENCE_REASONS", "PreferenceJsonl", "PreferenceRecord",
    "prepare", "read_split", "REPORT_FILENAME",
]
