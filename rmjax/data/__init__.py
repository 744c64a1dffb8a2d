"""Preference data: byte tokenizer, synthetic data with ground truth, TFDS builders, batching.

Public API::

  cfg = default_data_config()            # ml_collections.ConfigDict, every field + default
  data = load_preference_data(cfg, workdir="/tmp/run")
  batch = data.train.train_batch(step, batch_size, seed)     # pure in (seed, step)
  for batch in data.eval.eval_batches(batch_size): ...       # every pair once, `valid` mask
  data.info                                                   # counts, truncation, Bayes acc.

Batch format: see `rmjax.data.datasets`. Sequences are ``[BOS] + prompt + response + [EOS]``,
right-padded; truncation rules in `rmjax.data.tokenizer`; the synthetic task in
`rmjax.data.synthetic`; the builders (array_record, no TensorFlow) in `rmjax.data.builders`.
"""

from rmjax.data.builders import HhRlhf
from rmjax.data.builders import MalformedRecordError
from rmjax.data.builders import PreferenceJsonl
from rmjax.data.datasets import BATCH_KEYS
from rmjax.data.datasets import EpisodeDataset
from rmjax.data.datasets import eval_index_batches
from rmjax.data.datasets import ListDataset
from rmjax.data.datasets import PreferenceDataset
from rmjax.data.loading import default_data_config
from rmjax.data.loading import FORMATS
from rmjax.data.loading import load_preference_data
from rmjax.data.loading import PreferenceData
from rmjax.data.loading import SOURCES
from rmjax.data.loading import tokenize_pairs
from rmjax.data.synthetic import ground_truth_reward
from rmjax.data.synthetic import ground_truth_rewards
from rmjax.data.synthetic import make_synthetic_preferences
from rmjax.data.synthetic import make_world
from rmjax.data.tokenizer import ByteTokenizer
from rmjax.data.tokenizer import Truncation

__all__ = [
    "BATCH_KEYS", "ByteTokenizer", "default_data_config", "EpisodeDataset",
    "eval_index_batches", "FORMATS",
    "ListDataset",
    "ground_truth_reward", "ground_truth_rewards", "HhRlhf", "load_preference_data",
    "make_synthetic_preferences", "make_world", "MalformedRecordError", "PreferenceData",
    "PreferenceDataset", "PreferenceJsonl", "SOURCES", "tokenize_pairs", "Truncation",
]
