"""Preference data: byte tokenizer, synthetic data with ground truth, TFDS builders, batching.

Public API::

  cfg = default_data_config()            # ml_collections.ConfigDict, every field + default
  data = load_preference_data(cfg, workdir="/tmp/run")
  batch = data.train.train_batch(step, batch_size, seed)     # pure in (seed, step)
  for batch in data.eval.eval_batches(batch_size): ...       # every pair once, `valid` mask
  data.info                                                   # counts, truncation, Bayes acc.

Batch format: see `rmjax.data.datasets`. Sequences are ``[BOS] + prompt + response + [EOS]``
by default, right-padded; truncation rules in `rmjax.data.tokenizer`; other tokenizers
(``data.tokenizer``: HF ``tokenizer.json``, SmolLM2, MiniLM) in `rmjax.data.hf_tokenizer`
(imported on demand: it needs ``tokenizers``); chat templates (``data.chat_template``:
plain, ChatML, BERT pair) in `rmjax.data.chat`; the synthetic task in `rmjax.data.synthetic`;
the builders (array_record, no TensorFlow) in `rmjax.data.builders`. HHH alignment as eval
sets per property: `load_hhh_alignment`. Reward-model benchmarks' released files (RewardBench
1 and 2, RewardMATH, RM-Bench, PandaLM, HHH, HH-RLHF) as `BenchmarkSet`s of prompts and
candidates, correct ones first: `read_benchmark` (`rmjax.data.benchmarks`).
"""

from rmjax.data.benchmarks import BENCHMARK_READERS
from rmjax.data.benchmarks import BenchmarkSet
from rmjax.data.benchmarks import pandalm_prompt
from rmjax.data.benchmarks import parse_ties_id
from rmjax.data.benchmarks import read_benchmark
from rmjax.data.benchmarks import read_hh_rlhf
from rmjax.data.benchmarks import read_hhh
from rmjax.data.benchmarks import read_pandalm
from rmjax.data.benchmarks import read_rewardbench
from rmjax.data.benchmarks import read_rewardbench2
from rmjax.data.benchmarks import read_rewardmath
from rmjax.data.benchmarks import read_rmbench
from rmjax.data.builders import HhRlhf
from rmjax.data.builders import MalformedRecordError
from rmjax.data.builders import PreferenceJsonl
from rmjax.data.chat import CHAT_TEMPLATES
from rmjax.data.chat import ChatFormatError
from rmjax.data.chat import ChatTemplate
from rmjax.data.chat import encode_pair
from rmjax.data.chat import get_chat_template
from rmjax.data.datasets import BATCH_KEYS
from rmjax.data.datasets import batch_layout
from rmjax.data.datasets import EpisodeDataset
from rmjax.data.datasets import eval_index_batches
from rmjax.data.datasets import ListDataset
from rmjax.data.datasets import PreferenceDataset
from rmjax.data.datasets import SequenceDataset
from rmjax.data.buckets import bucket_length
from rmjax.data.buckets import length_buckets
from rmjax.data.buckets import longest_real_lengths
from rmjax.data.loading import default_data_config
from rmjax.data.loading import describe_tokenizer
from rmjax.data.loading import FORMATS
from rmjax.data.benchmarks import HHH_PROPERTIES
from rmjax.data.loading import benchmark_pair_datasets
from rmjax.data.loading import load_hhh_alignment
from rmjax.data.loading import load_preference_data
from rmjax.data.loading import make_tokenizer
from rmjax.data.loading import PreferenceData
from rmjax.data.loading import SOURCES
from rmjax.data.loading import SPLIT_BY
from rmjax.data.loading import split_by_prompt
from rmjax.data.loading import tokenize_pairs
from rmjax.data.loading import tokenize_responses
from rmjax.data.synthetic import ground_truth_reward
from rmjax.data.synthetic import ground_truth_rewards
from rmjax.data.synthetic import make_synthetic_preferences
from rmjax.data.synthetic import make_world
from rmjax.data.tokenizer import ByteTokenizer
from rmjax.data.tokenizer import check_tokenizer_matches_vocab
from rmjax.data.tokenizer import layout_pair
from rmjax.data.tokenizer import TOKENIZER_SPECS
from rmjax.data.tokenizer import Truncation

__all__ = [
    "BENCHMARK_READERS", "BenchmarkSet", "pandalm_prompt", "parse_ties_id", "read_benchmark",
    "read_hh_rlhf", "read_hhh", "read_pandalm", "read_rewardbench", "read_rewardbench2",
    "read_rewardmath", "read_rmbench",
    "BATCH_KEYS", "batch_layout",
    "ByteTokenizer", "CHAT_TEMPLATES", "ChatFormatError", "ChatTemplate",
    "check_tokenizer_matches_vocab",
    "default_data_config", "describe_tokenizer", "encode_pair", "EpisodeDataset",
    "benchmark_pair_datasets",
    "eval_index_batches", "FORMATS", "get_chat_template", "HHH_PROPERTIES",
    "layout_pair", "ListDataset", "load_hhh_alignment",
    "bucket_length", "length_buckets", "longest_real_lengths",
    "ground_truth_reward", "ground_truth_rewards", "HhRlhf", "load_preference_data",
    "make_synthetic_preferences", "make_tokenizer", "make_world", "MalformedRecordError",
    "PreferenceData", "PreferenceDataset", "SequenceDataset", "PreferenceJsonl", "SOURCES", "SPLIT_BY",
    "split_by_prompt", "tokenize_pairs", "tokenize_responses", "TOKENIZER_SPECS", "Truncation",
]
