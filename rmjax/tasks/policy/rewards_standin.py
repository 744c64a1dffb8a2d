"""A stand-in for `rmjax.tasks.policy.rewards` (the reward pipeline of issue 15), with the
interface of /work/briefs/rl_interface.md and only the synthetic world's true reward.

The RL task imports `rmjax.tasks.policy.rewards` when it exists and this module otherwise;
it goes away once the pipeline is merged.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import ml_collections
import numpy as np

from rmjax.data import synthetic_policy

KINDS = ("true_reward",)


def default_rewards_config() -> dict:
  """config.rewards: one source "true" of kind "true_reward", combination "sum"."""
  return dict(
      sources=ml_collections.ConfigDict({"true": ml_collections.ConfigDict(dict(
          kind="true_reward", transform="identity",
          transform_params=ml_collections.ConfigDict()))}),
      source_order="true", combination="sum",
      combination_params=ml_collections.ConfigDict(), reference_samples=8)


def check_rewards_config(config: ml_collections.ConfigDict, world: Any = None) -> None:
  """Kinds the stand-in knows (true_reward only) and a synthetic world for it."""
  rewards = config.rewards
  for name in [n for n in rewards.source_order.split(",") if n]:
    kind = rewards.sources[name].kind
    if kind not in KINDS:
      raise ValueError(f"rewards.sources.{name}.kind={kind!r}: the stand-in pipeline knows "
                       f"only {KINDS}")
  if config.data.source != "synthetic":
    raise ValueError("rewards: kind 'true_reward' needs the synthetic world "
                     f"(data.source='synthetic'), got data.source={config.data.source!r}")


class RewardBatch(NamedTuple):
  """See the contract: N rows, grouped contiguously (row = b * G + g)."""
  prompt_ids: np.ndarray
  prompts: list[str]
  responses: list[str]
  lengths: np.ndarray
  group_size: int


ReferenceSampler = Callable[[np.ndarray, int], list[list[str]]]


class RewardPipeline:
  """The true reward r* of the synthetic world as the only source; combined = r*."""

  def __init__(self, world: Any, names: tuple[str, ...]):
    self.world = world
    self.source_names = names
    self.needs_reference = False

  def init_state(self, num_prompts: int) -> dict:
    del num_prompts
    return {}

  def score(self, batch: RewardBatch) -> np.ndarray:
    r = synthetic_policy.true_rewards(self.world, batch.prompts, batch.responses)
    return np.repeat(r.astype(np.float32)[:, None], len(self.source_names), axis=1)

  def __call__(self, state, batch: RewardBatch, sample_reference: ReferenceSampler):
    del sample_reference
    raw = self.score(batch)
    combined = raw.sum(axis=1)
    metrics = {}
    for k, name in enumerate(self.source_names):
      metrics[f"reward/{name}/raw_mean"] = float(np.nanmean(raw[:, k]))
      metrics[f"reward/{name}/raw_std"] = float(np.nanstd(raw[:, k]))
      metrics[f"reward/{name}/transformed_mean"] = float(np.nanmean(raw[:, k]))
      metrics[f"reward/{name}/missing"] = float(np.isnan(raw[:, k]).mean())
    metrics["reward/combined_mean"] = float(np.nanmean(combined))
    metrics["reward/combined_std"] = float(np.nanstd(combined))
    return combined, state, metrics, raw


def make_reward_pipeline(config: ml_collections.ConfigDict, *, world: Any = None,
                         policy_tokenizer: Any = None) -> RewardPipeline:
  del policy_tokenizer
  check_rewards_config(config, world)
  names = tuple(n for n in config.rewards.source_order.split(",") if n)
  return RewardPipeline(world, names)
