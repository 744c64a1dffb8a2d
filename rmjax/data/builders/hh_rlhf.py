"""TFDS builder of Anthropic HH-RLHF files (array_record, no TensorFlow).

Each line holds ``chosen`` and ``rejected``, two whole dialogues with "\\n\\nHuman: " and
"\\n\\nAssistant: " turns that share every turn but the final assistant reply. The record
becomes ``prompt`` = the shared prefix up to and including the last "\\n\\nAssistant:" marker
common to both (so the prompt ends at a turn boundary) and the two final replies, each less
its single leading space. Records that do not fit are malformed with a named reason
(``HH_RLHF_REASONS`` in `rmjax.data.builders.records`): invalid UTF-8 or JSON, not an
object, missing or non-string field, no Assistant turn, no shared turn boundary, a reply
that holds further turns, an empty reply, identical chosen and rejected.

Reference: Bai et al. (2022), "Training a Helpful and Harmless Assistant with Reinforcement
Learning from Human Feedback"; data at github.com/anthropics/hh-rlhf.
"""

from rmjax.data.builders import base
from rmjax.data.builders import records as records_lib


class HhRlhf(base.LocalPreferenceBuilder):
  """HH-RLHF dialogues split into shared prompt and final replies."""

  name = "rmjax_hh_rlhf"
  PARSE = staticmethod(records_lib.parse_hh_rlhf_record)
  REASONS = records_lib.HH_RLHF_REASONS
  DESCRIPTION = "Anthropic HH-RLHF preference dialogues (Bai et al., 2022), local files."
