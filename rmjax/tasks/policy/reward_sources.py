"""The sources of the RL reward pipeline: where each column of the [N, K] reward matrix comes
from (`rmjax.tasks.policy.rewards` configures, transforms and combines them).

Kinds (`KINDS`), each with its config fields and their defaults (`KIND_FIELDS`):

  reward_model  a trained reward-model run (`rmjax.tasks.reward_model`): its workdir, the
                checkpoint `step` (-1: the latest), and for an ensemble run the aggregation of
                its members by name (`aggregation`: "mean", "min", "mean_minus_std" with
                lambda = `uncertainty_penalty`, or any of `rmjax.transforms.
                ENSEMBLE_AGGREGATIONS`). Scalar-head families only (bt, scaled_bt, listwise,
                ensemble). The model is loaded on its first score.
  pretrained    a Hugging Face `*ForSequenceClassification` directory
                (`scoring.scorer_from_checkpoint`): `checkpoint`, `tokenizer` ("" = the
                directory's tokenizer.json), `chat_template`, `max_len`, `max_prompt_len`.
  true_reward   the synthetic world's r*(x, y) (`rmjax.data.synthetic_policy.true_rewards`);
                needs the world.
  rule          a rule reward of `RULES` by name (`rule`) with its `params`.

**Tokenizers.** Reward models score text: each one re-tokenises the decoded (prompt, response)
with its own run's tokenizer and chat template (`RewardScorer.encode`), so its tokenizer may
differ from the policy's (a byte-level policy scored by a SmolLM2 reward model, or the
reverse). Nothing is shared but the text.

RULES: `rule(prompts, responses, lengths, **params) -> float32 [N]` (a numpy or jax array),
with `lengths` the response tokens (EOS included) of `RewardBatch.lengths`. A rule's
parameters are its keyword-only arguments; `check_rewards_config` traces it once on a dummy
row (`jax.eval_shape`: nothing compiles), so a rule computing with jnp must not convert to
numpy inside.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rmjax import transforms

KINDS = ("reward_model", "pretrained", "true_reward", "rule")

# Fields every source has, then each kind's own (name -> default).
COMMON_FIELDS: Mapping[str, Any] = {"kind": "", "transform": "identity",
                                    "transform_params": {}}
KIND_FIELDS: Mapping[str, Mapping[str, Any]] = {
    "reward_model": dict(workdir="", step=-1, aggregation="mean", uncertainty_penalty=1.0,
                         batch_size=32, length_bucket=64),
    "pretrained": dict(checkpoint="", tokenizer="", chat_template="plain", max_len=512,
                       max_prompt_len=384, batch_size=32, length_bucket=64),
    "true_reward": {},
    "rule": dict(rule="", params={}),
}


# --- Rules -------------------------------------------------------------------------------------


# One compiled program per parameter setting, instead of one per eager primitive.
_linear_length_penalty = jax.jit(transforms.linear_length_penalty,
                                 static_argnames=("threshold", "coefficient"))
_dapo_overlong_penalty = jax.jit(transforms.dapo_overlong_penalty,
                                 static_argnames=("max_length", "cache_length", "penalty_factor"))


def _zeros_and_lengths(responses, lengths):
  lengths = np.asarray(lengths, np.float32)
  if lengths.shape != (len(responses),):
    raise ValueError(f"lengths must be [N] = [{len(responses)}], got shape {lengths.shape}")
  return np.zeros(len(responses), np.float32), lengths


def length_penalty(prompts: Sequence[str], responses: Sequence[str], lengths: np.ndarray, *,
                   threshold: float = 300.0, coefficient: float = 0.01) -> np.ndarray:
  """PAR's linear length penalty as a reward of its own: -c * max(len - L, 0).

  `rmjax.transforms.linear_length_penalty` applied to zero rewards (defaults L = 300 tokens,
  c = 0.01 per token, Fu et al. 2025, arXiv:2502.18770). Returns a float32 [N] jax array,
  <= 0.

  >>> length_penalty(["x"] * 2, ["a", "b"], [300, 350], threshold=300, coefficient=0.01).tolist()
  [0.0, -0.5]
  """
  del prompts
  zeros, lengths = _zeros_and_lengths(responses, lengths)
  return _linear_length_penalty(zeros, lengths, threshold=threshold, coefficient=coefficient)


def dapo_overlong(prompts: Sequence[str], responses: Sequence[str], lengths: np.ndarray, *,
                  max_length: float, cache_length: float, penalty_factor: float = 1.0
                  ) -> np.ndarray:
  """DAPO's soft overlong punishment as a reward: f * clip(((L_max - L_c) - len) / L_c, -1, 0).

  `rmjax.transforms.dapo_overlong_penalty` applied to zero rewards (Yu et al. 2025,
  arXiv:2503.14476). `max_length` and `cache_length` have no default. Returns a float32 [N]
  jax array in [-f, 0].

  >>> dapo_overlong([""] * 3, ["a"] * 3, [6, 8, 9], max_length=8, cache_length=4).tolist()
  [-0.5, -1.0, -1.0]
  """
  del prompts
  zeros, lengths = _zeros_and_lengths(responses, lengths)
  return _dapo_overlong_penalty(zeros, lengths, max_length=max_length,
                                cache_length=cache_length, penalty_factor=penalty_factor)


def format_regex(prompts: Sequence[str], responses: Sequence[str], lengths: np.ndarray, *,
                 pattern: str, full_match: bool = False) -> np.ndarray:
  """1.0 where the response matches the regular expression `pattern`, else 0.0.

  `re.search` (anywhere in the response) by default; `full_match=True` asks the whole
  response to match (`re.fullmatch`). Python `re` syntax; DOTALL is not implied (add `(?s)`).
  Returns float32 [N].

  >>> format_regex(["", ""], ["<answer>4</answer>", "4"], [1, 1], pattern=r"<answer>.*</answer>")
  array([1., 0.], dtype=float32)
  """
  del prompts, lengths
  if not isinstance(pattern, str) or not pattern:
    raise ValueError(f"pattern must be a non-empty regular expression string, got {pattern!r}")
  try:
    compiled = re.compile(pattern)
  except re.error as e:
    raise ValueError(f"pattern={pattern!r} is not a valid regular expression: {e}") from None
  match = compiled.fullmatch if full_match else compiled.search
  return np.array([match(r) is not None for r in responses], np.float32)


def non_empty(prompts: Sequence[str], responses: Sequence[str], lengths: np.ndarray
              ) -> np.ndarray:
  """1.0 where the response has a non-whitespace character, else 0.0. Returns float32 [N].

  >>> non_empty(["", ""], ["  ", "ok"], [1, 2])
  array([0., 1.], dtype=float32)
  """
  del prompts, lengths
  return np.array([bool(r.strip()) for r in responses], np.float32)


RULES: Mapping[str, Callable[..., np.ndarray]] = {
    "length_penalty": length_penalty,
    "dapo_overlong": dapo_overlong,
    "format_regex": format_regex,
    "non_empty": non_empty,
}


def rule_parameters(rule: Callable) -> dict[str, Any]:
  """The keyword parameters of a rule and their defaults (`inspect.Parameter.empty`: none)."""
  return {p.name: p.default for p in inspect.signature(rule).parameters.values()
          if p.kind == inspect.Parameter.KEYWORD_ONLY}


# --- Reward models -----------------------------------------------------------------------------


def latest_checkpoint_step(workdir: str) -> int | None:
  """The highest step directory under `workdir`/checkpoints/ (None: no checkpoint).

  A directory listing only (no checkpoint library), so the check runs before anything loads.
  """
  root = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(root):
    return None
  steps = [int(p) for p in os.listdir(root) if p.isdigit() and os.path.isdir(
      os.path.join(root, p))]
  return max(steps) if steps else None


def aggregated_token_model(model, *, aggregation: str, uncertainty_penalty: float):
  """An ensemble `TokenModel` ([N, M] outputs) as a single-reward one ([N] outputs).

    r(x, y) = aggregate_m r_m(x, y)    (`rmjax.transforms.aggregate_ensemble_rewards`)

  inside the scorer's jitted function, with the lambda of "mean_minus_std" /
  "mean_minus_var" = `uncertainty_penalty` (the `RewardScorer`'s own aggregation has lambda
  fixed at 1). A model with no members is returned unchanged.
  """
  if not model.num_members:
    return model
  inner = model.apply

  def apply(params, batch):
    members = inner(params, batch)  # [N, M]
    return transforms.aggregate_ensemble_rewards(
        jnp.moveaxis(members, -1, 0), method=aggregation,
        uncertainty_penalty=uncertainty_penalty)

  description = dict(model.description, num_members=model.num_members,
                     ensemble_aggregation=aggregation, uncertainty_penalty=uncertainty_penalty)
  return dataclasses.replace(model, apply=apply, num_members=0, description=description)


def reward_model_scorer(token_model, run_config, *, aggregation: str = "mean",
                        uncertainty_penalty: float = 1.0, batch_size: int = 32,
                        length_bucket: int = 64, devices=None):
  """A `RewardScorer` of a `TokenModel` with its run's tokenizer, chat template and layout.

  The same pieces as `scoring.scorer_from_workdir`, with an ensemble's members aggregated by
  `aggregated_token_model` (so lambda is a setting).

  Args:
    token_model: `scoring.TokenModel` (e.g. `scoring.token_model_from_run`).
    run_config: the reward-model run's config (data.tokenizer, data.chat_template,
      data.max_len, data.max_prompt_len).
    aggregation, uncertainty_penalty: the ensemble aggregation and its lambda.
    batch_size, length_bucket, devices: `RewardScorer` arguments.
  """
  from rmjax import data as rm_data  # pylint: disable=import-outside-toplevel
  from rmjax.tasks.reward_model import scoring  # pylint: disable=import-outside-toplevel
  model = aggregated_token_model(token_model, aggregation=aggregation,
                                 uncertainty_penalty=uncertainty_penalty)
  data = run_config.data
  return scoring.RewardScorer(
      model, tokenizer=rm_data.make_tokenizer(data.tokenizer), chat_template=data.chat_template,
      max_len=data.max_len, max_prompt_len=data.max_prompt_len, batch_size=batch_size,
      length_bucket=length_bucket, devices=devices)


def load_reward_model(field: str, spec: Mapping[str, Any]):
  """The scorer of a "reward_model" source (`spec`: its config fields; `field`: its config
  path, for errors). Restores the run's checkpoint (`scoring.restore_run`)."""
  from rmjax.tasks.reward_model import scoring  # pylint: disable=import-outside-toplevel
  step = None if spec["step"] < 0 else int(spec["step"])
  run = scoring.restore_run(spec["workdir"], step)
  try:
    token_model = scoring.token_model_from_run(run)
  except ValueError as e:
    raise ValueError(f"{field}.workdir: {e}") from None
  return reward_model_scorer(token_model, run.config, aggregation=spec["aggregation"],
                             uncertainty_penalty=spec["uncertainty_penalty"],
                             batch_size=spec["batch_size"], length_bucket=spec["length_bucket"])


def load_pretrained(field: str, spec: Mapping[str, Any]):
  """The scorer of a "pretrained" source (`scoring.scorer_from_checkpoint`)."""
  del field
  from rmjax.tasks.reward_model import scoring  # pylint: disable=import-outside-toplevel
  return scoring.scorer_from_checkpoint(
      spec["checkpoint"], tokenizer=spec["tokenizer"] or None,
      chat_template=spec["chat_template"], max_len=spec["max_len"],
      max_prompt_len=spec["max_prompt_len"], batch_size=spec["batch_size"],
      length_bucket=spec["length_bucket"])


LOADERS: Mapping[str, Callable[[str, Mapping[str, Any]], Any]] = {
    "reward_model": load_reward_model,
    "pretrained": load_pretrained,
}
