"""Data of the policy tasks: (prompt, response) sequences for SFT, preference pairs for DPO,
and the held-out prompts that evaluation samples from.

Sources (``config.data.source``):
  synthetic  the synthetic policy world (`rmjax.data.synthetic_policy`): SFT sequences are
             pi_world's responses (with their exact log-probabilities), DPO pairs are two
             pi_world responses per prompt labelled by Bradley-Terry on the true reward.
  hh_rlhf    an HH-RLHF file (``config.data.path``): SFT on the chosen responses, DPO on
             the (chosen, rejected) pairs; prompts held out as the reward-model job holds
             them out (`rmjax.data.split_by_prompt`).

Sequences are laid out by the tokenizer and chat template of ``config.data``
(`rmjax.data.tokenize_responses`); ``prompt_lengths`` marks where each response starts.
Evaluation prompts are the eval split's distinct prompts, left-padded to the longest
(`left_padded_prompts`), as `rmjax.generation` wants them.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import ml_collections
import numpy as np

from rmjax import data as rm_data
from rmjax.data import synthetic_policy

SOURCES = ("synthetic", "hh_rlhf")
# Sampling streams of the synthetic world: the train and eval splits.
_TRAIN_STREAM, _EVAL_STREAM = 0, 1


class PromptSet(NamedTuple):
  """Prompts to sample from: N texts and their left-padded token ids.

  Attributes:
    texts: N prompt strings (the world's, or the dialogue before the last reply).
    tokens: int32 [N, P], the template's start + prompt + separator, left-padded.
    mask: int32 [N, P], 1 on real tokens.
  """
  texts: list[str]
  tokens: np.ndarray
  mask: np.ndarray


def left_padded_prompts(tokens: np.ndarray, prompt_lengths: np.ndarray, pad_id: int
                        ) -> tuple[np.ndarray, np.ndarray]:
  """The first prompt_lengths[i] tokens of each right-padded row, moved to the right end.

  Args:
    tokens: int [N, L] right-padded sequences.
    prompt_lengths: int [N], in [1, L].
    pad_id: the id written at padding positions.

  Returns:
    (tokens, mask), int32 [N, P] with P = max(prompt_lengths).

  >>> t, m = left_padded_prompts(np.array([[1, 5, 6, 9], [1, 7, 9, 0]]), np.array([3, 2]), 0)
  >>> t.tolist(), m.tolist()
  ([[1, 5, 6], [0, 1, 7]], [[1, 1, 1], [0, 1, 1]])
  """
  tokens = np.asarray(tokens)
  prompt_lengths = np.asarray(prompt_lengths)
  width = int(prompt_lengths.max())
  out = np.full((tokens.shape[0], width), pad_id, dtype=np.int32)
  mask = np.zeros((tokens.shape[0], width), dtype=np.int32)
  for i, n in enumerate(prompt_lengths):
    out[i, width - n:] = tokens[i, :n]
    mask[i, width - n:] = 1
  return out, mask


def _layout(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return dict(max_len=config.data.max_len, max_prompt_len=config.data.max_prompt_len,
              tokenizer=rm_data.make_tokenizer(config.data.tokenizer),
              chat_template=config.data.chat_template)


def sequence_dataset(prompts: Sequence[str], responses: Sequence[str], *, name: str,
                     layout: dict[str, Any], extra: dict[str, np.ndarray] | None = None,
                     sources: Sequence[str] | None = None
                     ) -> tuple[rm_data.SequenceDataset, dict[str, int]]:
  """A `SequenceDataset` of (prompt, response) sequences and its truncation counts."""
  arrays, cuts = rm_data.tokenize_responses(prompts, responses, sources=sources, **layout)
  arrays.update(extra or {})
  dataset = rm_data.SequenceDataset(arrays, name=name, pad_id=layout["tokenizer"].pad_id)
  return dataset, dict(sequences=len(prompts),
                       prompts_truncated=int((cuts["prompt"] > 0).sum()),
                       responses_truncated=int((cuts["response"] > 0).sum()))


def pair_dataset(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], *,
                 name: str, layout: dict[str, Any],
                 extra: dict[str, np.ndarray] | None = None,
                 sources: Sequence[str] | None = None
                 ) -> tuple[rm_data.PreferenceDataset, dict[str, int]]:
  """A `PreferenceDataset` with ``prompt_lengths`` (both sides share the prompt)."""
  arrays, report = rm_data.tokenize_pairs(prompts, chosen, rejected, sources=sources, **layout)
  side, _ = rm_data.tokenize_responses(prompts, chosen, sources=sources, **layout)
  arrays["prompt_lengths"] = side["prompt_lengths"]
  arrays["margin"] = np.zeros(len(prompts), np.float32)
  arrays.update(extra or {})
  dataset = rm_data.PreferenceDataset(arrays, name=name, pad_id=layout["tokenizer"].pad_id)
  return dataset, {k: report[k] for k in ("pairs", "prompts_truncated", "chosen_truncated",
                                          "rejected_truncated")}


def prompt_set(prompts: Sequence[str], *, layout: dict[str, Any], limit: int,
               max_new_tokens: int) -> PromptSet:
  """The first `limit` distinct prompts, tokenized and left-padded.

  Raises:
    ValueError: the longest prompt (its template tokens included) and `max_new_tokens`
      do not fit in ``layout['max_len']`` positions.
  """
  texts = list(dict.fromkeys(prompts))[:limit]
  # A one-token placeholder response: only the prompt part of the layout is kept.
  arrays, _ = rm_data.tokenize_responses(texts, ["x"] * len(texts), **layout)
  tokens, mask = left_padded_prompts(arrays["tokens"], arrays["prompt_lengths"],
                                     layout["tokenizer"].pad_id)
  if tokens.shape[1] + max_new_tokens > layout["max_len"]:
    longest = int(np.argmax(arrays["prompt_lengths"]))
    raise ValueError(
        f"the longest eval prompt ({texts[longest][:60]!r}...) takes {tokens.shape[1]} tokens "
        f"with its template; with generation.max_new_tokens={max_new_tokens} that exceeds "
        f"data.max_len={layout['max_len']} positions: lower data.max_prompt_len or "
        "generation.max_new_tokens, or raise data.max_len")
  return PromptSet(texts, tokens, mask)


class PolicyData(NamedTuple):
  """What a policy task's `load_data` builds before its own step (reference log-probs).

  Attributes:
    train, eval: `SequenceDataset`s (SFT) or `PreferenceDataset`s (DPO).
    prompts: the held-out prompts evaluation samples from.
    world: the synthetic `PolicyWorld`, or None for real data.
    info: the data report.
  """
  train: Any
  eval: Any
  prompts: PromptSet
  world: synthetic_policy.PolicyWorld | None
  info: dict[str, Any]


def _check_source(config: ml_collections.ConfigDict) -> None:
  if config.data.source not in SOURCES:
    raise ValueError(f"data.source must be one of {SOURCES}, got {config.data.source!r}")
  if config.data.source == "hh_rlhf" and not config.data.path:
    raise ValueError("data.source='hh_rlhf' needs data.path (an HH-RLHF .jsonl or .jsonl.gz)")


def _hh_split(config: ml_collections.ConfigDict) -> tuple[Any, np.ndarray, np.ndarray, dict]:
  bench = rm_data.read_hh_rlhf(config.data.path)
  train_idx, eval_idx, counts = rm_data.split_by_prompt(
      bench.prompts, config.data.eval_fraction, config.data.split_seed)
  # Short runs on a CPU: the first max_records / max_eval_records of each side (0 = all).
  if config.data.get("max_records", 0):
    train_idx = train_idx[:config.data.max_records]
  if config.data.get("max_eval_records", 0):
    eval_idx = eval_idx[:config.data.max_eval_records]
  return bench, np.asarray(train_idx), np.asarray(eval_idx), counts


def synthetic_pairs(syn: Any, split: str, world: synthetic_policy.PolicyWorld | None = None
                    ) -> synthetic_policy.PolicyPairs:
  """The synthetic world's preference pairs of a split, as DPO trains on them.

  ``syn.num_train`` ("train") or ``syn.num_eval`` ("eval") pairs of
  `synthetic_policy.sample_preference_pairs` (two pi_world responses per prompt,
  Bradley-Terry labels on r*) drawn from the stream ``[syn.seed, 0]`` or ``[syn.seed, 1]``.
  The reward-model job's ``synthetic_policy`` source trains on these same pairs
  (`rmjax.tasks.reward_model.policy_world`).

  Args:
    syn: ``config.data.synthetic``: the world's settings, seed, num_train, num_eval.
    split: "train" or "eval".
    world: the `PolicyWorld` of ``syn`` when already made (default: made here).
  """
  streams = {"train": (_TRAIN_STREAM, syn.num_train), "eval": (_EVAL_STREAM, syn.num_eval)}
  if split not in streams:
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  stream, count = streams[split]
  world = synthetic_policy.make_policy_world(syn) if world is None else world
  return synthetic_policy.sample_preference_pairs(
      count, np.random.default_rng([syn.seed, stream]), world)


def load_policy_data(config: ml_collections.ConfigDict, kind: str) -> PolicyData:
  """The SFT sequences (`kind` "sft") or DPO pairs ("dpo") of `config.data`, and the
  evaluation prompts (``config.generation.num_eval_prompts`` of the eval split)."""
  _check_source(config)
  if kind not in ("sft", "dpo"):
    raise ValueError(f"kind must be 'sft' or 'dpo', got {kind!r}")
  layout = _layout(config)
  num_prompts = config.generation.num_eval_prompts
  info: dict[str, Any] = dict(source=config.data.source, max_len=config.data.max_len,
                              max_prompt_len=config.data.max_prompt_len,
                              tokenizer=rm_data.describe_tokenizer(layout["tokenizer"],
                                                                   config.data.tokenizer),
                              chat_template=config.data.chat_template)
  if config.data.source == "synthetic":
    syn = config.data.synthetic
    world = synthetic_policy.make_policy_world(syn)
    datasets = {}
    eval_prompts = None
    for name, stream, count in (("train", _TRAIN_STREAM, syn.num_train),
                                ("eval", _EVAL_STREAM, syn.num_eval)):
      rng = np.random.default_rng([syn.seed, stream])
      if kind == "sft":
        prompts = synthetic_policy.sample_prompts(count, rng, world)
        responses = synthetic_policy.sample_responses(prompts, rng, world)
        extra = dict(
            true_log_prob=synthetic_policy.response_log_prob(world, prompts, responses
                                                             ).astype(np.float32),
            true_entropy=synthetic_policy.conditional_entropy(world, prompts
                                                              ).astype(np.float32))
        datasets[name], info[f"{name}_truncation"] = sequence_dataset(
            prompts, responses, name=name, layout=layout, extra=extra)
      else:
        pairs = synthetic_pairs(syn, name, world)
        prompts = pairs.prompt
        datasets[name], info[f"{name}_truncation"] = pair_dataset(
            pairs.prompt, pairs.chosen, pairs.rejected, name=name, layout=layout,
            extra=dict(preference_prob=pairs.preference_prob))
        info[f"{name}_bayes_optimal_accuracy"] = float(
            np.mean(np.maximum(pairs.preference_prob, 1 - pairs.preference_prob)))
      if name == "eval":
        eval_prompts = prompts
    info["world"] = dict(values=world.values.round(4).tolist(),
                         letter_logits=world.letter_logits.round(4).tolist(),
                         affinity=world.affinity, match_bonus=world.match_bonus)
    return PolicyData(datasets["train"], datasets["eval"],
                      prompt_set(eval_prompts, layout=layout, limit=num_prompts,
                                 max_new_tokens=config.generation.max_new_tokens), world, info)
  bench, train_idx, eval_idx, counts = _hh_split(config)
  info.update(path=config.data.path, split=dict(counts, num_train=len(train_idx),
                                                num_eval=len(eval_idx)))
  datasets = {}
  for name, idx in (("train", train_idx), ("eval", eval_idx)):
    prompts = [bench.prompts[i] for i in idx]
    chosen = [bench.responses[i][0] for i in idx]
    sources = [bench.sources[i] for i in idx]
    if kind == "sft":
      datasets[name], info[f"{name}_truncation"] = sequence_dataset(
          prompts, chosen, name=name, layout=layout, sources=sources)
    else:
      rejected = [bench.responses[i][1] for i in idx]
      datasets[name], info[f"{name}_truncation"] = pair_dataset(
          prompts, chosen, rejected, name=name, layout=layout, sources=sources)
  eval_prompts = [bench.prompts[i] for i in eval_idx]
  return PolicyData(datasets["train"], datasets["eval"],
                    prompt_set(eval_prompts, layout=layout, limit=num_prompts,
                                 max_new_tokens=config.generation.max_new_tokens), None, info)
