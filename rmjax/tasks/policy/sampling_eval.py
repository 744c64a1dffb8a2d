"""What a policy's samples say: the evaluation the policy tasks share.

For the held-out prompts (`rmjax.tasks.policy.data.PromptSet`) the policy samples one
response each (`rmjax.generation`, on the training mesh, temperature 1 so that the returned
log-probs are the policy's own), and a comparison policy (the frozen reference, or the
synthetic world's pi_world) is scored on the same prompts:

  kl_to_<ref>    mean over samples y ~ pi of  sum_t log pi(y_t | .) - log ref(y_t | .)
                 (the k1 estimator of KL(pi || ref), unbiased; Schulman 2020)
  response_length, ended_with_eos
  true_reward, <ref>_true_reward, win_rate_vs_<ref>   (synthetic world only: r* of the
                 samples, of the comparison's samples, and P(r*(y_pi) > r*(y_ref)) with
                 ties one half, over prompt-matched pairs)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rmjax import generation
from rmjax.data import synthetic_policy
from rmjax.tasks.policy import model as model_lib
from rmjax.tasks.policy.data import PromptSet


def generation_config(config: Any, tokenizer: Any, *, greedy: bool = False
                      ) -> generation.GenerationConfig:
  """`config.generation`'s sampling settings, EOS = the tokenizer's end of a response."""
  gen = config.generation
  return generation.GenerationConfig(
      max_new_tokens=gen.max_new_tokens, temperature=gen.temperature,
      top_k=gen.top_k or None, top_p=gen.top_p if gen.top_p < 1.0 else None, greedy=greedy,
      eos_ids=tuple(end_ids(tokenizer, config.data.chat_template)),
      pad_id=int(tokenizer.pad_id))


def end_ids(tokenizer: Any, chat_template: str) -> list[int]:
  """The ids that end a response: the first id of the template's end (EOS, <|im_end|>)."""
  from rmjax.data import chat as chat_lib  # noqa: PLC0415

  fixed = chat_lib.get_chat_template(chat_template).fixed_ids(tokenizer)
  return [int(fixed.end[0])]


def sample(run_generate: Callable, params: Any, prompts: PromptSet, key: jax.Array, *,
           batch_size: int) -> dict[str, np.ndarray]:
  """One response per prompt, in batches of `batch_size` prompts (the last batch padded
  by repeating its final prompt; the extra rows are dropped).

  Returns numpy arrays over the N prompts: tokens and mask [N, P + T], response_tokens,
  response_mask and log_probs [N, T], lengths [N].
  """
  n = len(prompts.texts)
  out: dict[str, list[np.ndarray]] = {}
  for start in range(0, n, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)
    result = run_generate(params, prompts.tokens[idx], prompts.mask[idx],
                          jax.random.fold_in(key, start))
    keep = min(batch_size, n - start)
    for name in ("tokens", "mask", "response_tokens", "response_mask", "log_probs", "lengths"):
      out.setdefault(name, []).append(np.asarray(jax.device_get(getattr(result, name)))[:keep])
  return {name: np.concatenate(parts) for name, parts in out.items()}


def sample_log_prob_fn(config: Any, graphdef: Any) -> Callable:
  """Jitted `(params, tokens, mask) -> float32 [N]`: log pi(y | x) under `params` of samples
  laid out as `sample` returns them, [N, P + generation.max_new_tokens] (the left-padded
  prompt of width P, then the response): the sum of the response's token log-probs at
  temperature 1 (`rmjax.tasks.policy.model.response_log_probs`). With the reference's params
  it scores the policy's samples for `kl_estimate`."""
  new_tokens = config.generation.max_new_tokens

  def log_probs(params, tokens, mask):
    prompt_width = tokens.shape[1] - new_tokens
    lp, _ = model_lib.response_log_probs(graphdef, params, tokens, mask,
                                         jnp.full(tokens.shape[:1], prompt_width))
    return jnp.sum(lp, axis=1)

  return jax.jit(log_probs)


def decode_responses(tokenizer: Any, samples: dict[str, np.ndarray], eos_ids: list[int]
                     ) -> list[str]:
  """The response texts, without the ending id."""
  texts = []
  for row, length in zip(samples["response_tokens"], samples["lengths"]):
    ids = row[:length]
    if length and ids[-1] in eos_ids:
      ids = ids[:-1]
    texts.append(tokenizer.decode(ids))
  return texts


def sample_metrics(samples: dict[str, np.ndarray], eos_ids: list[int]) -> dict[str, float]:
  """Mean response length (tokens, the end id included) and the fraction that ended."""
  last = samples["response_tokens"][np.arange(len(samples["lengths"])),
                                     np.maximum(samples["lengths"] - 1, 0)]
  ended = np.isin(last, eos_ids) & (samples["lengths"] > 0)
  return dict(response_length=float(samples["lengths"].mean()),
              ended_with_eos=float(ended.mean()),
              mean_log_prob=float(samples["log_probs"].sum(1).mean()))


def kl_estimate(policy_log_probs: np.ndarray, reference_log_probs: np.ndarray) -> float:
  """k1 estimate of KL(pi || ref) from samples of pi: mean_i sum_t (log pi - log ref)."""
  return float(np.mean(policy_log_probs - reference_log_probs))


def world_metrics(world: synthetic_policy.PolicyWorld, prompts: list[str],
                  responses: list[str], baseline: list[str], baseline_name: str
                  ) -> dict[str, float]:
  """True reward of the samples, of the baseline's, and the win rate over the baseline;
  `valid_responses`: the fraction made only of the world's letters, 4..12 of them."""
  rewards = synthetic_policy.true_rewards(world, prompts, responses)
  base = synthetic_policy.true_rewards(world, prompts, baseline)
  on_support = np.isfinite(synthetic_policy.response_log_prob(world, prompts, responses))
  return {"true_reward": float(rewards.mean()),
          f"{baseline_name}_true_reward": float(base.mean()),
          f"win_rate_vs_{baseline_name}": synthetic_policy.win_rate(rewards, base),
          "valid_responses": float(on_support.mean())}
