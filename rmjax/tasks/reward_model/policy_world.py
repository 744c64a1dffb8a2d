"""The reward model of the synthetic policy world: the proxy the default RL run optimises.

Data source ``config.data.source = "synthetic_policy"`` (`configs/reward_model.py:policy_world`):
the preference pairs DPO trains on (`rmjax.tasks.policy.data.synthetic_pairs`: two pi_world
responses per prompt, Bradley-Terry labels on the true reward r* at the world's temperature;
`rmjax.data.synthetic_policy`), tokenized by the same function (`pair_dataset`), so the
reward model sees the policy's texts in the policy's layout. ``config.data.synthetic`` holds
the world's settings with ``seed``, ``num_train`` and ``num_eval``, as in the policy tasks.

Evaluation adds to the pair metrics (accuracy against the sampled label, the Bayes-optimal
accuracy of the held-out pairs' true preference probabilities, expected accuracy) how good a
proxy of r* the reward model is on the held-out responses (both sides of every eval pair):

  proxy/pearson, proxy/spearman            corr(r_theta(x, y), r*(x, y)) over the 2N responses
  proxy/pair_pearson, proxy/pair_spearman  corr(r_theta(c) - r_theta(r), r*(c) - r*(r)) over
                                           the N pairs (what a per-prompt baseline sees)

A family's eval function gives pair logits, not rewards, so each response is scored as the
"chosen" side of a pair whose "rejected" side is one fixed anchor sequence (the template
around an empty prompt and response): the logit is r_theta(x, y) - r_theta(anchor), the reward
up to one constant, which neither correlation sees. For a scalar-head family (bt, ensemble)
that is exactly the reward the scorer (`rmjax.tasks.reward_model.scoring`) returns.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import ml_collections
import numpy as np

from rmjax import data as rm_data
from rmjax.data import synthetic_policy

SOURCE = "synthetic_policy"


class ResponseSet(NamedTuple):
  """Held-out responses to score against r*.

  Attributes:
    dataset: a `PreferenceDataset` of 2N rows: "chosen" = the eval pairs' chosen then
      rejected sequences, "rejected" = the anchor sequence on every row.
    true_rewards: float64 [2N], r* of those responses (chosen then rejected).
    num_pairs: N.
  """
  dataset: Any
  true_rewards: np.ndarray
  num_pairs: int


def _layout(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return dict(max_len=config.data.max_len, max_prompt_len=config.data.max_prompt_len,
              tokenizer=rm_data.make_tokenizer(config.data.tokenizer),
              chat_template=config.data.chat_template)


def check_layout(config: ml_collections.ConfigDict, world: synthetic_policy.PolicyWorld,
                 layout: dict[str, Any]) -> None:
  """The layout holds the longest prompt with a response of ``data.max_new_tokens`` letters
  (the policy's generations) uncut.

  Raises:
    ValueError: it does not, naming the fields to raise.
  """
  prompt = "A" * world.prompt_len_max
  response = "a" * int(config.data.max_new_tokens)
  _, cuts = rm_data.tokenize_responses([prompt], [response], **layout)
  if cuts["prompt"][0] or cuts["response"][0]:
    raise ValueError(
        f"data.max_len={config.data.max_len} / data.max_prompt_len="
        f"{config.data.max_prompt_len} cut a prompt of {world.prompt_len_max} letters "
        f"({int(cuts['prompt'][0])} tokens cut) or a response of data.max_new_tokens="
        f"{config.data.max_new_tokens} tokens ({int(cuts['response'][0])} cut): the reward "
        "model would not read the policy's samples whole; raise data.max_len")


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[rm_data.PreferenceData, ResponseSet]:
  """The train and eval pairs of the synthetic policy world, and the eval responses.

  Args:
    config: a reward-model config with ``data.source = "synthetic_policy"``;
      ``data.synthetic``: the `synthetic_policy` world settings, seed, num_train, num_eval;
      ``data.max_new_tokens``: the longest response the model must read whole.

  Returns:
    (PreferenceData(train, eval, info), ResponseSet of the eval split). info has the
    source, world, truncation per split and ``bayes_optimal_accuracy`` per split.
  """
  # Imported here: the policy package imports the reward-model package (its config).
  from rmjax.tasks.policy import data as policy_data  # pylint: disable=import-outside-toplevel
  from rmjax import eval as rm_eval  # pylint: disable=import-outside-toplevel
  syn = config.data.synthetic
  world = synthetic_policy.make_policy_world(syn)
  layout = _layout(config)
  check_layout(config, world, layout)
  datasets, truncation, bayes, pairs = {}, {}, {}, {}
  for name in ("train", "eval"):
    pairs[name] = policy_data.synthetic_pairs(syn, name, world)
    datasets[name], truncation[name] = policy_data.pair_dataset(
        pairs[name].prompt, pairs[name].chosen, pairs[name].rejected, name=name,
        layout=layout, extra=dict(preference_prob=pairs[name].preference_prob))
    bayes[name] = float(rm_eval.bayes_optimal_pairwise_accuracy(pairs[name].preference_prob))
  responses = _response_set(datasets["eval"], pairs["eval"], layout)
  n_train, n_eval = datasets["train"].num_pairs, datasets["eval"].num_pairs
  info = dict(
      source=SOURCE, format="pairs", max_len=config.data.max_len,
      max_prompt_len=config.data.max_prompt_len, max_new_tokens=config.data.max_new_tokens,
      records_read=n_train + n_eval, records_used=n_train + n_eval, records_malformed=0,
      malformed={}, split=dict(method="generated", num_train=n_train, num_eval=n_eval),
      truncation={k: dict(v, pairs_with_truncation=v["prompts_truncated"]
                          + v["chosen_truncated"] + v["rejected_truncated"])
                  for k, v in truncation.items()},
      bayes_optimal_accuracy=bayes,
      world=dict(settings={k: syn[k] for k in synthetic_policy.default_policy_world_config()},
                 seed=syn.seed, values=world.values.round(4).tolist(),
                 letter_logits=world.letter_logits.round(4).tolist()),
      tokenizer=rm_data.describe_tokenizer(layout["tokenizer"], config.data.tokenizer),
      chat_template=config.data.chat_template,
      notes=[])
  return rm_data.PreferenceData(datasets["train"], datasets["eval"], info), responses


def _response_set(eval_pairs: Any, pairs: synthetic_policy.PolicyPairs,
                  layout: dict[str, Any]) -> ResponseSet:
  """The eval pairs' 2N responses, each against the anchor (see the module docstring)."""
  arrays = eval_pairs.arrays
  n = eval_pairs.num_pairs
  anchor, _ = rm_data.tokenize_responses([""], [""], **layout)
  tokens = np.concatenate([arrays["chosen_tokens"], arrays["rejected_tokens"]])
  mask = np.concatenate([arrays["chosen_mask"], arrays["rejected_mask"]])
  dataset = rm_data.PreferenceDataset(
      dict(chosen_tokens=tokens, chosen_mask=mask,
           rejected_tokens=np.repeat(anchor["tokens"], 2 * n, axis=0),
           rejected_mask=np.repeat(anchor["mask"], 2 * n, axis=0),
           margin=np.zeros(2 * n, np.float32)),
      name="eval_responses", pad_id=layout["tokenizer"].pad_id)
  true_rewards = np.concatenate([pairs.chosen_reward, pairs.rejected_reward])
  return ResponseSet(dataset, true_rewards, n)


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n of `x`, ties sharing the mean of their ranks (Spearman's convention)."""
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  last = np.cumsum(counts)  # the rank of the last member of each group of ties
  return (last - (counts - 1) / 2.0)[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  """sum(da db) / sqrt(sum(da^2) sum(db^2)) with d = centred; NaN when a side is constant."""
  da, db = a - a.mean(), b - b.mean()
  denom = np.sqrt(np.sum(da * da) * np.sum(db * db))
  return float(np.sum(da * db) / denom) if denom > 0 else float("nan")


def proxy_metrics(scores: np.ndarray, true_rewards: np.ndarray, num_pairs: int
                  ) -> dict[str, float]:
  """How well rewards track r*: Pearson and Spearman correlations.

    pearson(a, b)  = sum_i da_i db_i / sqrt(sum_i da_i^2 sum_i db_i^2),  d = x - mean(x)
    spearman(a, b) = pearson(rank(a), rank(b)), ties given their mean rank

  Args:
    scores: [2N] the model's rewards (up to one constant) of the eval pairs' chosen then
      rejected responses.
    true_rewards: [2N] r* of the same responses.
    num_pairs: N.

  Returns:
    ``proxy/pearson``, ``proxy/spearman`` over the 2N responses; ``proxy/pair_pearson``,
    ``proxy/pair_spearman`` of the N reward differences (chosen - rejected); NaN where a
    side is constant.

  References:
    Spearman (1904); the definitions of `scipy.stats.pearsonr` / `spearmanr`.

  >>> proxy_metrics(np.array([1., 2, 3, 4]), np.array([1., 3, 2, 4]), 2)["proxy/pearson"]
  0.8
  """
  scores = np.asarray(scores, np.float64)
  true_rewards = np.asarray(true_rewards, np.float64)
  if scores.shape != true_rewards.shape or scores.shape != (2 * num_pairs,):
    raise ValueError(f"scores and true_rewards must both be [2N] = [{2 * num_pairs}], got "
                     f"{scores.shape} and {true_rewards.shape}")
  diff = scores[:num_pairs] - scores[num_pairs:]
  true_diff = true_rewards[:num_pairs] - true_rewards[num_pairs:]
  spearman = lambda a, b: _pearson(_average_ranks(a), _average_ranks(b))  # noqa: E731
  return {"proxy/pearson": _pearson(scores, true_rewards),
          "proxy/spearman": spearman(scores, true_rewards),
          "proxy/pair_pearson": _pearson(diff, true_diff),
          "proxy/pair_spearman": spearman(diff, true_diff)}


def evaluate_responses(eval_step, params, responses: ResponseSet, place, *,
                       batch_size: int) -> dict[str, float]:
  """`proxy_metrics` of the held-out responses, scored by the family's eval function.

  Args:
    eval_step: `(params, batch) -> [B]` pair logits.
    params: model parameters.
    responses: the `ResponseSet`.
    place: `(dataset, indices, valid) -> batch` on the mesh.
    batch_size: rows per eval batch.
  """
  scores = []
  for indices, valid in rm_data.eval_index_batches(responses.dataset.num_examples,
                                                   batch_size):
    logits = np.asarray(eval_step(params, place(responses.dataset, indices, valid)))
    scores.append(logits[valid])
  return proxy_metrics(np.concatenate(scores), responses.true_rewards, responses.num_pairs)
