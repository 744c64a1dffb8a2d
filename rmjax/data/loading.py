"""Loading preference data: the data config, tokenization of records, train/eval splits.

Also HHH alignment as evaluation sets per property (`load_hhh_alignment`).

`load_preference_data` turns a data config (`default_data_config`) into tokenized numpy
arrays for a train and an eval split, served by the datasets of `rmjax.data.datasets`
(batch format there), plus a report (``info``) that accounts for every record.
`tokenize_pairs` turns (prompt, chosen, rejected) strings into the pair arrays.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, NamedTuple, Sequence

import ml_collections
import numpy as np

from rmjax.data import benchmarks as benchmarks_lib
from rmjax.data import chat as chat_lib
from rmjax.data import buckets as buckets_lib
from rmjax.data import synthetic as synthetic_lib
from rmjax.data import tokenizer as tokenizer_lib
from rmjax.data.builders import base as builders_base
from rmjax.data.builders import records as records_lib
from rmjax.data.builders.hh_rlhf import HhRlhf
from rmjax.data.builders.preference_jsonl import PreferenceJsonl
from rmjax.data.datasets import _check_int
from rmjax.data.datasets import EpisodeDataset
from rmjax.data.datasets import ListDataset
from rmjax.data.datasets import PreferenceDataset

SOURCES = ("synthetic", "jsonl", "hh_rlhf")
FORMATS = ("pairs", "lists", "user_episodes")
SPLIT_BY = ("record", "prompt")
_MAX_EXAMPLES = 20

_log = logging.getLogger(__name__)


def default_data_config() -> ml_collections.ConfigDict:
  """The data config with every field at its default.

  Fields:
    source: "synthetic" (default), "jsonl" (generic preference JSONL) or "hh_rlhf".
    format: "pairs" (default), "lists" (K ranked responses per prompt) or "user_episodes"
      (a user's context + query pairs); the last two are synthetic only.
    attributes: False; True adds the synthetic HelpSteer2-style ratings of both responses.
    max_len: 128, tokens per sequence (BOS + prompt + response + EOS, right-padded).
    max_prompt_len: 64, most prompt tokens kept (cut from the left).
    tokenizer: "bytes" (default, `ByteTokenizer`), "hf:<path to tokenizer.json>",
      "smollm2" or "minilm" (from the installed weight packages); see
      `rmjax.data.hf_tokenizer.load_tokenizer`.
    chat_template: "plain" (default: BOS + prompt + response + EOS, the texts as they are),
      "chatml", "chatml_smollm2" (ChatML with SmolLM2's default system message) or
      "bert_pair" ([CLS] prompt [SEP] response [SEP]); see `rmjax.data.chat`.
    on_malformed: "skip" (count, report, leave out) or "fail" (raise on the first).
    path: "" (real data: JSONL file(s), plain or .gz, comma-separated for several).
    eval_path: "" (then `eval_fraction` of `path` is held out as eval).
    eval_fraction: 0.1.
    split_seed: 0, seed of the train/eval hold-out.
    split_by: "record" (default: hold out eval_fraction of the records) or "prompt" (hold
      out eval_fraction of the distinct prompts with all their records, so no prompt is on
      both sides).
    tfds_data_dir: "" (then ``<workdir>/tfds``).
    synthetic: the generator settings (see `rmjax.data.synthetic`): seed 0, world_seed 0,
      num_train 32768, num_eval 4096, prompt_len_min 2, prompt_len_max 5,
      response_len_min 4, response_len_max 12, num_letters 10, match_bonus 1.0,
      temperature 0.11. Its sequences hold at most 19 tokens, so ``max_len = 24`` with
      ``max_prompt_len = 8`` loses nothing and trains several times faster than the
      default 128.
    length_buckets: "" (default: every batch padded to max_len), or the lengths a batch
      is cut to, the shortest that holds its longest sequence: "multiple:K", "pow2" or
      "a,b,c" (`rmjax.data.buckets`; max_len is always the last). A jitted step
      compiles once per bucket it meets, so at most that many programs; the cut drops only
      padding, so values change by float rounding at most.
  """
  return ml_collections.ConfigDict(dict(
      source="synthetic",
      format="pairs",
      attributes=False,
      max_len=128,
      max_prompt_len=64,
      tokenizer="bytes",
      chat_template="plain",
      on_malformed="skip",
      path="",
      eval_path="",
      eval_fraction=0.1,
      split_seed=0,
      split_by="record",
      tfds_data_dir="",
      length_buckets="",
      synthetic=ml_collections.ConfigDict(synthetic_lib.default_synthetic_config()),
  ))



class PreferenceData(NamedTuple):
  """What `load_preference_data` returns.

  Attributes:
    train: the training pairs (a `ListDataset` or `EpisodeDataset` for those formats).
    eval: the evaluation pairs (an `EpisodeDataset` for format "user_episodes").
    info: the report: source, paths, counts read/used/malformed by reason, the hold-out,
      truncation per split, ``tokenizer`` (`describe_tokenizer`: spec, name, vocab_size,
      special ids), ``chat_template``, and for synthetic data the Bayes-optimal accuracy.
  """

  train: PreferenceDataset
  eval: PreferenceDataset
  info: dict[str, Any]


def tokenize_responses(
    prompts: Sequence[str], responses: Sequence[str], *, max_len: int, max_prompt_len: int,
    sources: Sequence[str] | None = None, tokenizer: Any = None,
    chat_template: str | chat_lib.ChatTemplate = "plain", what: str = "response",
    prompt_cache: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Tokenizes N (prompt, response) sequences, each laid out as `tokenize_pairs` lays out a side.

  Args:
    prompts, responses: N strings each.
    max_len: L.
    max_prompt_len: most prompt tokens kept.
    sources: optional N labels (e.g. "file:line") named in errors.
    tokenizer: `ByteTokenizer` (default when None) or `rmjax.data.hf_tokenizer.HFTokenizer`.
    chat_template: a name of `rmjax.data.chat.CHAT_TEMPLATES` or a `ChatTemplate`.
    what: what a response is called in errors (e.g. "chosen response").
    prompt_cache: optional dict prompt text -> ids, filled and reused (prompts repeat
      across a pair's sides and a benchmark's candidates).

  Returns:
    arrays: ``tokens`` and ``mask``, int32 [N, L], right-padded with the tokenizer's pad id;
      ``prompt_lengths``, int32 [N], the tokens before the response (the template's start,
      the kept prompt and the separator): the response and end are tokens
      ``[prompt_lengths, mask.sum(1))``.
    cuts: ``prompt`` and ``response``, int64 [N], the tokens truncation cut from each.

  Raises:
    ValueError: unequal lengths, or a layout that cannot fit (`validate_layout_lengths`).
    rmjax.data.chat.ChatFormatError: a text that does not fit the template, with its label.
  """
  tok = tokenizer if tokenizer is not None else tokenizer_lib.ByteTokenizer()
  template = chat_lib.get_chat_template(chat_template)
  fixed = template.fixed_ids(tok)
  tokenizer_lib.validate_layout_lengths(
      max_len, max_prompt_len, len(fixed.start) + len(fixed.separator) + len(fixed.end))
  n = len(prompts)
  if len(responses) != n:
    raise ValueError(f"prompts and responses must have equal lengths, got {n} and "
                     f"{len(responses)}")
  cache = prompt_cache if prompt_cache is not None else {}
  label = (lambda i: sources[i]) if sources is not None else (lambda i: f"item {i}")
  out = {k: np.zeros((n, max_len), dtype=np.int32) for k in ("tokens", "mask")}
  out["prompt_lengths"] = np.zeros(n, dtype=np.int32)
  cuts = {k: np.zeros(n, dtype=np.int64) for k in ("prompt", "response")}
  for i in range(n):
    prompt_ids = cache.get(prompts[i])
    if prompt_ids is None:
      try:
        prompt_ids = cache[prompts[i]] = tok.encode(template.prompt_text(prompts[i]))
      except chat_lib.ChatFormatError as e:
        raise chat_lib.ChatFormatError(
            f"{label(i)}: prompt does not fit chat_template {template.name!r}: {e}") from None
    try:
      tokens, mask, trunc = chat_lib.encode_pair(
          tok, template, prompts[i], responses[i], max_len=max_len,
          max_prompt_len=max_prompt_len, fixed=fixed, prompt_ids=prompt_ids)
    except chat_lib.ChatFormatError as e:
      raise chat_lib.ChatFormatError(
          f"{label(i)}: {what} does not fit chat_template {template.name!r}: {e}") from None
    out["tokens"][i], out["mask"][i] = tokens, mask
    out["prompt_lengths"][i] = (len(fixed.start) + len(prompt_ids) - trunc.prompt_tokens_cut
                                + len(fixed.separator))
    cuts["prompt"][i], cuts["response"][i] = trunc.prompt_tokens_cut, trunc.response_tokens_cut
  return out, cuts


def tokenize_pairs(
    prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], *,
    max_len: int, max_prompt_len: int, sources: Sequence[str] | None = None,
    tokenizer: Any = None, chat_template: str | chat_lib.ChatTemplate = "plain",
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Tokenizes N pairs under a tokenizer and chat template and counts what truncation cut.

  Each sequence is `rmjax.data.chat.encode_pair` of (prompt, response): the template's
  start + prompt (last ``max_prompt_len`` tokens) + separator + response (first tokens) +
  end, right-padded with the tokenizer's ``pad_id``. The default (`ByteTokenizer`,
  "plain") is ``[BOS] + prompt + response + [EOS]`` in bytes.

  Args:
    prompts, chosen, rejected: N strings each.
    max_len: L.
    max_prompt_len: most prompt tokens kept.
    sources: optional N labels (e.g. "file:line") used in the report's examples.
    tokenizer: `ByteTokenizer` (default when None) or `rmjax.data.hf_tokenizer.HFTokenizer`.
    chat_template: a name of `rmjax.data.chat.CHAT_TEMPLATES` or a `ChatTemplate`.

  Returns:
    arrays: ``chosen_tokens``, ``chosen_mask``, ``rejected_tokens``, ``rejected_mask``,
      int32 [N, L].
    report: ``pairs``, ``prompts_truncated`` (pairs whose prompt lost tokens),
      ``chosen_truncated``, ``rejected_truncated``, ``pairs_with_truncation``,
      ``prompt_tokens_cut``, ``response_tokens_cut``, ``identical_after_truncation`` (pairs
      whose two sequences became equal; kept, but no model can tell them apart) with up to
      20 examples, and ``max_real_length`` / ``mean_real_length`` of the sequences.
  """
  n = len(prompts)
  if not len(chosen) == len(rejected) == n:
    raise ValueError(f"prompts, chosen and rejected must have equal lengths, got {n}, "
                     f"{len(chosen)}, {len(rejected)}")
  if sources is None:
    sources = [f"pair {i}" for i in range(n)]
  out, cut = {}, {}
  prompt_cache: dict[str, np.ndarray] = {}
  for side, texts in (("chosen", chosen), ("rejected", rejected)):
    arrays, cuts = tokenize_responses(
        prompts, texts, max_len=max_len, max_prompt_len=max_prompt_len, sources=sources,
        tokenizer=tokenizer, chat_template=chat_template, what=f"{side} response",
        prompt_cache=prompt_cache)
    out[f"{side}_tokens"], out[f"{side}_mask"] = arrays["tokens"], arrays["mask"]
    cut[side], cut["prompt"] = cuts["response"], cuts["prompt"]
  label = lambda i: sources[i]
  identical = np.flatnonzero(np.all(out["chosen_tokens"] == out["rejected_tokens"], axis=1))
  lengths = np.concatenate([out["chosen_mask"].sum(1), out["rejected_mask"].sum(1)])
  report = dict(
      pairs=n,
      max_len=max_len,
      max_prompt_len=max_prompt_len,
      prompts_truncated=int((cut["prompt"] > 0).sum()),
      chosen_truncated=int((cut["chosen"] > 0).sum()),
      rejected_truncated=int((cut["rejected"] > 0).sum()),
      pairs_with_truncation=int(((cut["prompt"] + cut["chosen"] + cut["rejected"]) > 0).sum()),
      prompt_tokens_cut=int(cut["prompt"].sum()),
      response_tokens_cut=int(cut["chosen"].sum() + cut["rejected"].sum()),
      identical_after_truncation=int(len(identical)),
      identical_after_truncation_examples=[label(int(i)) for i in identical[:_MAX_EXAMPLES]],
      max_real_length=int(lengths.max()) if n else 0,
      mean_real_length=float(lengths.mean()) if n else 0.0,
  )
  return out, report


def _dataset_from_columns(columns: Mapping[str, Any], name: str, max_len: int,
                          max_prompt_len: int, sources: Sequence[str] | None = None,
                          preference_prob: np.ndarray | None = None,
                          extra: Mapping[str, np.ndarray] | None = None,
                          tokenizer: Any = None, chat_template: Any = "plain"):
  arrays, report = tokenize_pairs(
      columns["prompt"], columns["chosen"], columns["rejected"], max_len=max_len,
      max_prompt_len=max_prompt_len, sources=sources, tokenizer=tokenizer,
      chat_template=chat_template)
  arrays["margin"] = np.asarray(columns["margin"], dtype=np.float32)
  if preference_prob is not None:
    arrays["preference_prob"] = np.asarray(preference_prob, dtype=np.float32)
  arrays.update(extra or {})
  pad_id = (tokenizer if tokenizer is not None else tokenizer_lib.ByteTokenizer()).pad_id
  return PreferenceDataset(arrays, name=name, pad_id=pad_id), report


def _validate_config(cfg: Any) -> None:
  source = cfg.get("source")
  if source not in SOURCES:
    raise ValueError(f"data_config.source must be one of {list(SOURCES)}, got {source!r}")
  if cfg.get("format") not in FORMATS:
    raise ValueError(f"data_config.format must be one of {list(FORMATS)}, got "
                     f"{cfg.get('format')!r}")
  if source != "synthetic" and (cfg.get("format") != "pairs" or cfg.get("attributes")):
    raise ValueError(
        f"data_config.format={cfg.get('format')!r} / attributes={cfg.get('attributes')!r}: "
        f"source={source!r} provides pairs without attributes; lists, user episodes and "
        "attribute ratings are generated for source='synthetic' only")
  if cfg.get("attributes") and cfg.get("format") != "pairs":
    raise ValueError("data_config.attributes=True needs data_config.format='pairs', got "
                     f"{cfg.get('format')!r}")
  _check_tokenizer_spec(cfg.get("tokenizer"))
  if cfg.get("chat_template") not in chat_lib.CHAT_TEMPLATES:
    raise ValueError(f"data_config.chat_template must be one of {list(chat_lib.CHAT_TEMPLATES)}"
                     f", got {cfg.get('chat_template')!r}")
  if cfg.get("split_by") not in SPLIT_BY:
    raise ValueError(f"data_config.split_by must be one of {list(SPLIT_BY)}, got "
                     f"{cfg.get('split_by')!r}")
  if cfg.get("tokenizer") == "bytes" and cfg.get("chat_template") != "plain":
    raise ValueError(f"data_config.chat_template={cfg.get('chat_template')!r} needs named "
                     "special tokens that tokenizer 'bytes' does not have; use "
                     "chat_template='plain' with it")
  try:
    if cfg.get("tokenizer") == "bytes":  # other layouts are checked once their tokens are known
      tokenizer_lib.validate_lengths(cfg.get("max_len"), cfg.get("max_prompt_len"))
  except ValueError as e:
    raise ValueError(f"data_config: {e}") from None
  if source != "synthetic":
    if cfg.get("on_malformed") not in records_lib.ON_MALFORMED_CHOICES:
      raise ValueError(
          f"data_config.on_malformed must be one of {list(records_lib.ON_MALFORMED_CHOICES)}, "
          f"got {cfg.get('on_malformed')!r}")
    if not records_lib.split_paths(cfg.get("path") or ""):
      raise ValueError(
          f"data_config.path must name the JSONL file(s) of source={source!r}, got "
          f"{cfg.get('path')!r}")
    if not records_lib.split_paths(cfg.get("eval_path") or ""):
      fraction = cfg.get("eval_fraction")
      if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
          or not 0 < fraction < 1):
        raise ValueError(
            f"data_config.eval_fraction must lie in (0, 1) when eval_path is empty, got "
            f"{fraction!r}")
    _check_int("data_config.split_seed", cfg.get("split_seed"), 0)
  buckets_lib.length_buckets(cfg.get("length_buckets"), cfg.get("max_len"))


def _merged_config(data_config: Any) -> ml_collections.ConfigDict:
  cfg = default_data_config()
  given = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
  unknown = sorted(set(given) - set(cfg))
  if unknown:
    raise ValueError(f"data_config has unknown field(s) {unknown}; known: {sorted(cfg)}")
  synthetic = given.pop("synthetic", None) or {}
  unknown = sorted(set(synthetic) - set(cfg.synthetic))
  if unknown:
    raise ValueError(f"data_config.synthetic has unknown field(s) {unknown}; known: "
                     f"{sorted(cfg.synthetic)}")
  cfg.update(given)
  cfg.synthetic.update(synthetic)
  return cfg


def _attribute_arrays(split: synthetic_lib.SyntheticSplit, missing_prob: float,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
  """The attribute ratings of a split and their masks (each rating missing w.p. missing_prob)."""
  out = {}
  for side in ("chosen", "rejected"):
    ratings = getattr(split, f"{side}_attributes")
    present = rng.random(ratings.shape) >= missing_prob
    out[f"{side}_attributes"] = np.where(present, ratings, 0.0).astype(np.float32)
    out[f"{side}_attribute_mask"] = present
  return out


def _tokenize_lists(lists: synthetic_lib.SyntheticLists, max_len: int, max_prompt_len: int,
                    tokenizer: Any = None, chat_template: Any = "plain"
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """[N, K, L] tokens and masks of N prompts x K responses, and the truncation report."""
  n, k = lists.ranking.shape
  prompts = [p for p in lists.prompt for _ in range(k)]
  responses = [r for row in lists.responses for r in row]
  # Tokenize as pairs of (response, response) and keep one side: one tokenizer path.
  arrays, report = tokenize_pairs(prompts, responses, responses, max_len=max_len,
                                  max_prompt_len=max_prompt_len, tokenizer=tokenizer,
                                  chat_template=chat_template)
  tokens = arrays["chosen_tokens"].reshape(n, k, max_len)
  mask = arrays["chosen_mask"].reshape(n, k, max_len)
  report = {key: report[key] for key in ("max_len", "max_prompt_len", "prompts_truncated",
                                         "chosen_truncated", "prompt_tokens_cut",
                                         "max_real_length", "mean_real_length")}
  report["responses"] = n * k
  report["responses_truncated"] = report.pop("chosen_truncated")
  report["pairs_with_truncation"] = report["responses_truncated"] + report["prompts_truncated"]
  return {"tokens": tokens, "mask": mask, "ranking": lists.ranking.astype(np.int32)}, report


def _episode_dataset(episodes: synthetic_lib.SyntheticEpisodes, name: str, cfg, tokenizer
                     ) -> tuple[EpisodeDataset, dict[str, Any]]:
  n, p = episodes.preference_prob.shape
  flat = lambda rows: [x for row in rows for x in row]  # noqa: E731
  arrays, report = tokenize_pairs(flat(episodes.prompt), flat(episodes.chosen),
                                  flat(episodes.rejected), max_len=cfg.max_len,
                                  max_prompt_len=cfg.max_prompt_len, tokenizer=tokenizer,
                                  chat_template=cfg.chat_template)
  arrays = {k: v.reshape(n, p, cfg.max_len) for k, v in arrays.items()}
  arrays["preference_prob"] = episodes.preference_prob.astype(np.float32)
  arrays["user_group"] = episodes.group.astype(np.int32)
  return EpisodeDataset(arrays, context_pairs=cfg.synthetic.context_pairs, name=name), report


def _load_synthetic(cfg: ml_collections.ConfigDict, tokenizer: Any) -> PreferenceData:
  s = synthetic_lib.default_synthetic_config() | cfg.synthetic.to_dict()
  train, eval_, gen_info = synthetic_lib.make_synthetic_preferences(s)
  datasets, truncation = {}, {}
  attribute_rng = np.random.default_rng([s["seed"], 2])
  for name, split in (("train", train), ("eval", eval_)):
    columns = dict(prompt=split.prompt, chosen=split.chosen, rejected=split.rejected,
                   margin=split.margin)
    datasets[name], truncation[name] = _dataset_from_columns(
        columns, name, cfg.max_len, cfg.max_prompt_len,
        preference_prob=split.preference_prob,
        extra=(_attribute_arrays(split, s["attribute_missing_prob"], attribute_rng)
               if cfg.attributes else None),
        tokenizer=tokenizer, chat_template=cfg.chat_template)
  extra_info = {}
  if cfg.format == "lists":
    # Train on ranked lists; evaluate on the same held-out pairs as every other model.
    world = synthetic_lib.make_world(s["world_seed"], s["num_letters"])
    lists = synthetic_lib.sample_lists(s["num_train"], s["list_size"],
                                       np.random.default_rng([s["seed"], 3]), world, s)
    arrays, truncation["train"] = _tokenize_lists(lists, cfg.max_len, cfg.max_prompt_len,
                                                  tokenizer, cfg.chat_template)
    datasets["train"] = ListDataset(arrays, name="train")
    extra_info["lists"] = dict(num_lists=s["num_train"], list_size=s["list_size"],
                               labels="Plackett-Luce ranking with utilities r*/temperature")
  elif cfg.format == "user_episodes":
    worlds = synthetic_lib.user_group_worlds(s["world_seed"], s["num_letters"],
                                             s["num_user_groups"])
    for name, count, stream in (("train", s["num_train"], 4), ("eval", s["num_eval"], 5)):
      episodes = synthetic_lib.sample_user_episodes(
          count, np.random.default_rng([s["seed"], stream]), worlds, s)
      datasets[name], truncation[name] = _episode_dataset(episodes, name, cfg, tokenizer)
      query = episodes.preference_prob[:, s["context_pairs"]:]
      gen_info[name] = dict(
          num_episodes=count, num_query_pairs=int(query.size),
          bayes_optimal_accuracy=float(np.mean(np.maximum(query, 1 - query))),
          group_blind_bayes_accuracy=float(np.mean(
              episodes.group_blind_prob[:, s["context_pairs"]:])),
          group_agreement_with_group_0=episodes.agreement)
    extra_info["user_episodes"] = dict(
        num_user_groups=s["num_user_groups"], context_pairs=s["context_pairs"],
        query_pairs=s["query_pairs"],
        groups="group 0: world w; group 1: -w; group g >= 2: world from world_seed + g")
  n_train, n_eval = datasets["train"].num_examples, datasets["eval"].num_examples
  notes = []
  if any(t["pairs_with_truncation"] for t in truncation.values()):
    notes.append(
        "some synthetic sequences were truncated, so the Bayes-optimal accuracy (computed on "
        "the untruncated pairs) is not reachable from the visible tokens; raise max_len / "
        "max_prompt_len")
  info = dict(
      source="synthetic",
      format=cfg.format,
      max_len=cfg.max_len,
      max_prompt_len=cfg.max_prompt_len,
      records_read=n_train + n_eval,
      records_used=n_train + n_eval,
      records_malformed=0,
      malformed={},
      split=dict(method="generated", num_train=n_train, num_eval=n_eval),
      truncation=truncation,
      bayes_optimal_accuracy=dict(train=gen_info["train"]["bayes_optimal_accuracy"],
                                  eval=gen_info["eval"]["bayes_optimal_accuracy"]),
      synthetic=gen_info,
      notes=notes,
      **extra_info,
  )
  if cfg.format != "user_episodes":
    info["ground_truth_accuracy_on_labels"] = dict(
        train=gen_info["train"]["ground_truth_accuracy_on_labels"],
        eval=gen_info["eval"]["ground_truth_accuracy_on_labels"])
  if cfg.format == "lists":
    info["bayes_optimal_accuracy"].pop("train")
  return PreferenceData(datasets["train"], datasets["eval"], info)


def _take(columns: Mapping[str, Any], idx: np.ndarray) -> dict[str, Any]:
  return {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx])
          for k, v in columns.items()}


def split_by_prompt(prompts: Sequence[str], eval_fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
  """Holds out a fraction of the distinct prompts with every record that has them.

  The distinct prompts, in order of first appearance, are permuted with
  ``np.random.default_rng(seed).permutation``; the first
  ``min(max(1, round(eval_fraction * P)), P - 1)`` of P prompts go to eval. A record goes
  where its prompt goes, so no prompt is on both sides (prompts are compared as exact
  strings).

  Args:
    prompts: [N] the records' prompts.
    eval_fraction: in (0, 1), the share of distinct prompts held out.
    seed: the permutation's seed.

  Returns:
    train_idx, eval_idx: sorted record indices (file order kept); counts: ``num_prompts``,
    ``num_train_prompts``, ``num_eval_prompts``.

  Raises:
    ValueError: fewer than 2 distinct prompts.

  >>> split_by_prompt(["a", "b", "a", "c"], 0.34, seed=0)[2]
  {'num_prompts': 3, 'num_train_prompts': 2, 'num_eval_prompts': 1}
  """
  index: dict[str, int] = {}
  group = np.array([index.setdefault(p, len(index)) for p in prompts], dtype=np.int64)
  num_prompts = len(index)
  if num_prompts < 2:
    raise ValueError(f"split_by='prompt' needs at least 2 distinct prompts to hold out "
                     f"eval_fraction={eval_fraction}, got {num_prompts} among {len(prompts)} "
                     f"records (or give data_config.eval_path)")
  num_eval = min(max(1, int(round(eval_fraction * num_prompts))), num_prompts - 1)
  held_out = np.zeros(num_prompts, dtype=bool)
  held_out[np.random.default_rng(seed).permutation(num_prompts)[:num_eval]] = True
  is_eval = held_out[group]
  counts = dict(num_prompts=num_prompts, num_train_prompts=num_prompts - num_eval,
                num_eval_prompts=num_eval)
  return np.flatnonzero(~is_eval), np.flatnonzero(is_eval), counts


def _load_files(cfg: ml_collections.ConfigDict, workdir: str, tokenizer: Any
                ) -> PreferenceData:
  builder_cls = PreferenceJsonl if cfg.source == "jsonl" else HhRlhf
  train_files = records_lib.split_paths(cfg.path)
  eval_files = records_lib.split_paths(cfg.eval_path or "")
  records_lib.check_files_exist(train_files, "data_config.path")
  records_lib.check_files_exist(eval_files, "data_config.eval_path")
  data_dir = cfg.tfds_data_dir or os.path.join(workdir, "tfds")
  builder, report = builders_base.prepare(
      builder_cls, path=train_files, eval_path=eval_files, on_malformed=cfg.on_malformed,
      data_dir=data_dir)
  train_columns = builders_base.read_split(builder, "train")
  if eval_files:
    eval_columns = builders_base.read_split(builder, "eval")
    split = dict(method="eval_path", num_train=len(train_columns["prompt"]),
                 num_eval=len(eval_columns["prompt"]))
    if cfg.split_by == "prompt":
      train_prompts = set(train_columns["prompt"])
      split["eval_records_with_a_train_prompt"] = sum(
          p in train_prompts for p in eval_columns["prompt"])
  elif cfg.split_by == "prompt":
    train_idx, eval_idx, counts = split_by_prompt(train_columns["prompt"],
                                                  cfg.eval_fraction, cfg.split_seed)
    train_columns, eval_columns = (_take(train_columns, train_idx),
                                   _take(train_columns, eval_idx))
    split = dict(method="held_out_fraction_by_prompt", eval_fraction=cfg.eval_fraction,
                 split_seed=cfg.split_seed, **counts, num_train=len(train_idx),
                 num_eval=len(eval_idx))
  else:
    n = len(train_columns["prompt"])
    if n < 2:
      raise ValueError(
          f"data_config.path {list(train_files)} has {n} usable record(s); holding out "
          f"eval_fraction={cfg.eval_fraction} needs at least 2 (or give data_config.eval_path)")
    num_eval = min(max(1, int(round(cfg.eval_fraction * n))), n - 1)
    perm = np.random.default_rng(cfg.split_seed).permutation(n)
    eval_idx, train_idx = np.sort(perm[:num_eval]), np.sort(perm[num_eval:])
    train_columns, eval_columns = (_take(train_columns, train_idx),
                                   _take(train_columns, eval_idx))
    split = dict(method="held_out_fraction", eval_fraction=cfg.eval_fraction,
                 split_seed=cfg.split_seed, num_train=n - num_eval, num_eval=num_eval)
  datasets, truncation = {}, {}
  for name, columns in (("train", train_columns), ("eval", eval_columns)):
    sources = [f"{f}:{l}" for f, l in zip(columns["source_file"], columns["source_line"])]
    datasets[name], truncation[name] = _dataset_from_columns(
        columns, name, cfg.max_len, cfg.max_prompt_len, sources=sources,
        tokenizer=tokenizer, chat_template=cfg.chat_template)
  info = dict(
      source=cfg.source,
      max_len=cfg.max_len,
      max_prompt_len=cfg.max_prompt_len,
      paths=dict(path=list(builder.builder_config.path),
                 eval_path=list(builder.builder_config.eval_path)),
      on_malformed=cfg.on_malformed,
      records_read=report["records_read"],
      records_used=report["records_used"],
      records_malformed=report["records_malformed"],
      malformed={k: v for k, v in report["malformed"].items() if v},
      blank_lines=sum(s["blank_lines"] for s in report["splits"].values()),
      split=split,
      truncation=truncation,
      tfds=dict(builder=builder.name, config_name=builder.builder_config.name,
                prepared_dir=os.fspath(builder.data_dir),
                report_file=os.path.join(os.fspath(builder.data_dir),
                                         builders_base.REPORT_FILENAME)),
      preparation_report=report,
      notes=[],
  )
  return PreferenceData(datasets["train"], datasets["eval"], info)


def make_tokenizer(spec: str) -> Any:
  """The tokenizer of a ``data.tokenizer`` setting (`rmjax.data.tokenizer.TOKENIZER_SPECS`).

  "bytes" is `ByteTokenizer` and needs nothing; every other setting is resolved by
  `rmjax.data.hf_tokenizer.load_tokenizer` (imported here, as it needs ``tokenizers``).

  Raises:
    ValueError: an unknown setting, listing the valid ones.
  """
  _check_tokenizer_spec(spec)
  if spec == "bytes":
    return tokenizer_lib.ByteTokenizer()
  from rmjax.data import hf_tokenizer  # pylint: disable=import-outside-toplevel
  return hf_tokenizer.load_tokenizer(spec)


def describe_tokenizer(tokenizer: Any, spec: str | None = None) -> dict[str, Any]:
  """The report entry of a tokenizer: spec, name, vocab_size and special ids."""
  return dict(spec=spec if spec is not None else getattr(tokenizer, "name", None),
              name=getattr(tokenizer, "name", type(tokenizer).__name__),
              vocab_size=int(tokenizer.vocab_size), pad_id=int(tokenizer.pad_id),
              bos_id=None if tokenizer.bos_id is None else int(tokenizer.bos_id),
              eos_id=None if tokenizer.eos_id is None else int(tokenizer.eos_id))


def _check_tokenizer_spec(spec: Any) -> None:
  if not (spec == "bytes" or spec in tokenizer_lib.NAMED_TOKENIZERS
          or (isinstance(spec, str) and spec.startswith("hf:") and len(spec) > 3)):
    raise ValueError(f"data_config.tokenizer must be one of "
                     f"{list(tokenizer_lib.TOKENIZER_SPECS)}, got {spec!r}")


def load_preference_data(data_config: Any, *, workdir: str) -> PreferenceData:
  """Loads, tokenizes and splits the preference data named by ``data_config``.

  Real data (``jsonl``, ``hh_rlhf``) is prepared once by the TFDS builder under
  ``tfds_data_dir`` (default ``<workdir>/tfds``), read back with ``as_data_source`` and
  tokenized with the tokenizer of ``data.tokenizer`` (default `ByteTokenizer`) under the
  chat template of ``data.chat_template`` (default "plain"). Without ``eval_path`` a
  fraction ``eval_fraction`` of the records (``split_by="record"``) or of the distinct
  prompts with all their records (``split_by="prompt"``, `split_by_prompt`) is held out by
  a permutation drawn from ``split_seed`` (both splits keep file order). Synthetic data is
  generated in memory.

  Args:
    data_config: a ConfigDict or mapping with fields of `default_data_config` (missing
      fields take their defaults; unknown ones raise).
    workdir: run directory; prepared data goes under ``<workdir>/tfds`` by default.

  Returns:
    `PreferenceData` (train, eval, info).

  Raises:
    ValueError: unknown ``source``, bad lengths or fractions, a dataset without usable
      records.
    FileNotFoundError: a data file is missing (names the config field and the path).
    MalformedRecordError: under ``on_malformed="fail"``, on the first malformed record.
  """
  cfg = _merged_config(data_config)
  _validate_config(cfg)
  tokenizer = make_tokenizer(cfg.tokenizer)
  if cfg.source == "synthetic":
    data = _load_synthetic(cfg, tokenizer)
  else:
    data = _load_files(cfg, workdir, tokenizer)
  info = data.info
  info["tokenizer"] = describe_tokenizer(tokenizer, cfg.tokenizer)
  info["chat_template"] = cfg.chat_template
  _log.info(
      "preference data (%s, tokenizer %s, vocab %d, template %s): %d records read, %d used, "
      "%d malformed %s; %d train / %d eval pairs; truncated pairs: train %d, eval %d",
      info["source"], info["tokenizer"]["name"], info["tokenizer"]["vocab_size"],
      info["chat_template"], info["records_read"],
      info["records_used"], info["records_malformed"], info["malformed"],
      data.train.num_pairs, data.eval.num_pairs,
      info["truncation"]["train"]["pairs_with_truncation"],
      info["truncation"]["eval"]["pairs_with_truncation"])
  return data


def benchmark_pair_datasets(
    bench: Any, *, tokenizer: Any = None, chat_template: str | chat_lib.ChatTemplate = "plain",
    max_len: int = 128, max_prompt_len: int = 64,
) -> tuple[dict[str, PreferenceDataset], dict[str, Any]]:
  """A set of pairs of `rmjax.data.read_benchmark` as eval datasets, one per subset.

  Args:
    bench: a `BenchmarkSet` whose items are pairs (two candidates, the first preferred:
      HHH, HH-RLHF, RewardBench v1).
    tokenizer: `ByteTokenizer` (default when None) or `HFTokenizer`.
    chat_template: a name of `rmjax.data.chat.CHAT_TEMPLATES` or a `ChatTemplate`.
    max_len, max_prompt_len: the sequence layout (`tokenize_pairs`).

  Returns:
    datasets: ``<bench.name>_<subset>`` (``<bench.name>`` for items without a subset) ->
      `PreferenceDataset` (margin 0) of its pairs in file order; subsets sorted.
    truncation: the same names -> the `tokenize_pairs` report.

  Raises:
    ValueError: an item that is not a pair with its preferred response first.
  """
  tok = tokenizer if tokenizer is not None else tokenizer_lib.ByteTokenizer()
  template = chat_lib.get_chat_template(chat_template)
  rows: dict[str, list[int]] = {}
  for i, (cands, num_correct) in enumerate(zip(bench.responses, bench.num_correct)):
    if len(cands) != 2 or num_correct != 1:
      raise ValueError(
          f"{bench.sources[i]}: benchmark {bench.name!r} item has {len(cands)} candidates "
          f"with {num_correct} preferred; a pair eval set needs 2 with the first preferred")
    name = f"{bench.name}_{bench.subsets[i]}" if bench.subsets[i] else bench.name
    rows.setdefault(name, []).append(i)
  datasets, truncation = {}, {}
  for name in sorted(rows):
    idx = rows[name]
    arrays, truncation[name] = tokenize_pairs(
        [bench.prompts[i] for i in idx], [bench.responses[i][0] for i in idx],
        [bench.responses[i][1] for i in idx], max_len=max_len, max_prompt_len=max_prompt_len,
        sources=[bench.sources[i] for i in idx], tokenizer=tok, chat_template=template)
    arrays["margin"] = np.zeros(len(idx), dtype=np.float32)
    datasets[name] = PreferenceDataset(arrays, name=name, pad_id=tok.pad_id)
  return datasets, truncation


def load_hhh_alignment(
    path: str, *, tokenizer: Any = None, chat_template: str | chat_lib.ChatTemplate = "plain",
    max_len: int = 128, max_prompt_len: int = 64,
) -> tuple[dict[str, PreferenceDataset], dict[str, Any]]:
  """HHH alignment (BIG-bench; Askell et al., 2021) as eval sets, one per property.

  The file holds one JSON object per line with ``prompt``, ``chosen``, ``rejected`` (the
  human-preferred and the other reply) and ``property`` (one of `HHH_PROPERTIES`), read by
  `rmjax.data.read_hhh`. Prompts are dialogues whose first human turn carries no marker;
  `rmjax.data.chat.prompt_turns` reads them under the "chatml" templates. An evaluation set
  must be exact, so any record that does not fit raises (`MalformedRecordError` with file
  and line); nothing is skipped.

  Args:
    path: the ``hhh_alignment.jsonl`` file.
    tokenizer: `ByteTokenizer` (default when None) or `HFTokenizer`.
    chat_template: a name of `rmjax.data.chat.CHAT_TEMPLATES` or a `ChatTemplate`.
    max_len, max_prompt_len: the sequence layout (`tokenize_pairs`).

  Returns:
    datasets: property -> `PreferenceDataset` (margin 0) of its pairs in file order, named
      ``hhh_<property>``; the properties present, sorted.
    info: ``path``, ``records_read``, ``pairs`` (property -> count), ``tokenizer``,
      ``chat_template`` and ``truncation`` (property -> the `tokenize_pairs` report).

  Raises:
    FileNotFoundError: the file is missing.
    MalformedRecordError: a line that is not a valid record with a known property.
  """
  bench = benchmarks_lib.read_hhh(path)
  if not bench.prompts:
    raise ValueError(f"HHH alignment file {path!r} holds no record")
  tok = tokenizer if tokenizer is not None else tokenizer_lib.ByteTokenizer()
  template = chat_lib.get_chat_template(chat_template)
  named, truncation = benchmark_pair_datasets(
      bench, tokenizer=tok, chat_template=template, max_len=max_len,
      max_prompt_len=max_prompt_len)
  datasets = {name[len("hhh_"):]: d for name, d in named.items()}
  info = dict(path=path, records_read=bench.report["records_read"],
              pairs={prop: datasets[prop].num_pairs for prop in datasets},
              tokenizer=describe_tokenizer(tok), chat_template=template.name,
              truncation={name[len("hhh_"):]: t for name, t in truncation.items()})
  return datasets, info
