"""Supervised fine-tuning: next-token NLL on the responses of (prompt, response) sequences.

  loss = - sum_{b, t} M_bt log pi(y_bt | x_b, y_b,<t) / sum_{b, t} M_bt

M marks the response's tokens (its end token included; the prompt and padding are not
targets): the token mean over the whole batch. In the synthetic world the data are pi_world's
responses and the model that minimises the expected loss is pi_world itself, so the eval
reports how close the model got:

  nll_per_token       the model's held-out NLL per response token
  true_nll_per_token  pi_world's own NLL of the same tokens (exact; its expectation is the
                      entropy per token)
  entropy_per_token   sum_x H(Y | x) / sum_x (E[L] + 1), exact (`synthetic_policy`)
  kl_per_token        nll_per_token - true_nll_per_token: the held-out estimate of
                      KL(pi_world || model) per token (>= 0 in expectation)

and, from the model's samples on held-out prompts (`sampling_eval`): their true reward
against pi_world's, the win rate, the fraction of valid responses, the length, and
KL(model || pi_world) on samples. The trained model is the reference policy pi_0 of the
DPO and RL tasks.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rmjax import data as rm_data
from rmjax import generation
from rmjax import models
from rmjax.data import synthetic_policy
from rmjax.tasks.policy import data as data_lib
from rmjax.tasks.policy import model as model_lib
from rmjax.tasks.policy import sampling_eval
from rmjax.train import report as report_lib
from rmjax.train.task import Task
from rmjax.train.task import TaskData

SEQUENCE_FIELDS = ("tokens", "mask", "prompt_lengths")


class PolicyEvalData:
  """A policy task's eval data: the held-out examples, the prompts to sample from, and the
  synthetic world (None on real data). `num_examples` is the examples'."""

  def __init__(self, examples: Any, prompts: data_lib.PromptSet, world: Any):
    self.examples = examples
    self.prompts = prompts
    self.world = world

  @property
  def num_examples(self) -> int:
    return self.examples.num_examples


def sharded_generate(config: ml_collections.ConfigDict, policy: model_lib.PolicyModel,
                     graphdef: Any, tokenizer: Any):
  """`run(params, prompt_tokens, prompt_mask, key)`: `rmjax.generation.make_sharded_generate`
  with `config.generation`'s settings on the mesh of `params` (built on first use)."""
  built: dict[str, Any] = {}

  def run(params, *args):
    mesh = jax.tree.leaves(params)[0].sharding.mesh
    if built.get("mesh") is not mesh:
      built.update(mesh=mesh, run=generation.make_sharded_generate(
          graphdef, policy.param_specs(mesh), mesh,
          sampling_eval.generation_config(config, tokenizer)))
    return built["run"](params, *args)

  return run


def check_config(config: ml_collections.ConfigDict) -> None:
  """The generation settings against the sequence length and the batch of prompts."""
  gen = config.generation
  if gen.num_eval_prompts < 1 or gen.batch_size < 1:
    raise ValueError(f"generation.num_eval_prompts and generation.batch_size must be >= 1, "
                     f"got {gen.num_eval_prompts} and {gen.batch_size}")
  if config.data.max_prompt_len + gen.max_new_tokens >= config.data.max_len:
    raise ValueError(
        f"data.max_prompt_len={config.data.max_prompt_len} + generation.max_new_tokens="
        f"{gen.max_new_tokens} must stay below data.max_len={config.data.max_len}: a prompt "
        "(with its template tokens) and its sampled response must fit the model")


def load_data(config: ml_collections.ConfigDict, workdir: str) -> TaskData:
  """SFT sequences and the held-out prompts (`rmjax.tasks.policy.data`)."""
  del workdir
  loaded = data_lib.load_policy_data(config, "sft")
  info = dict(loaded.info)
  if loaded.world is not None:
    arrays = loaded.eval.arrays
    info["eval_entropy_per_token"] = float(
        arrays["true_entropy"].sum()
        / (loaded.eval.num_examples * synthetic_policy.expected_tokens(loaded.world)))
  return TaskData(loaded.train, PolicyEvalData(loaded.eval, loaded.prompts, loaded.world), info)


def make_functions(config: ml_collections.ConfigDict, graphdef: Any, shard):
  """(loss_fn, eval_fn): the token-mean NLL of a batch; per-sequence NLL sums and counts."""
  chunk = config.logprob_chunk_size or None

  def logps(params, tokens, mask, prompt_lengths):
    return model_lib.response_log_probs(graphdef, params, tokens, mask, prompt_lengths,
                                        chunk_size=chunk)

  sharded = shard(logps)

  def per_sequence(params, batch):
    lp, targets = sharded(params, batch["tokens"], batch["mask"], batch["prompt_lengths"])
    targets = targets & batch["valid"][:, None]
    return -jnp.sum(jnp.where(targets, lp, 0.0), axis=1), jnp.sum(targets, axis=1)

  def loss_fn(params, batch, key):
    del key
    nll, count = per_sequence(params, batch)
    tokens = jnp.sum(count)
    loss = jnp.sum(nll) / jnp.maximum(tokens, 1)
    return loss, {"loss": loss, "response_tokens": tokens.astype(jnp.float32)}

  return loss_fn, per_sequence


def evaluate(config: ml_collections.ConfigDict, policy: model_lib.PolicyModel, cache: dict,
             eval_fn, params, eval_data: PolicyEvalData, place
             ) -> tuple[dict[str, Any], dict[str, Any]]:
  """Held-out NLL per token (and, synthetic, its distance to pi_world), then the samples'
  metrics (`sampling_eval`)."""
  examples = eval_data.examples
  nll, count = [], []
  for indices, valid in rm_data.eval_index_batches(examples.num_examples,
                                                   config.eval.batch_size):
    batch_nll, batch_count = eval_fn(params, place(examples, indices, valid))
    nll.append(np.asarray(batch_nll)[valid])
    count.append(np.asarray(batch_count)[valid])
  nll, count = np.concatenate(nll), np.concatenate(count)
  metrics: dict[str, Any] = {"loss": float(nll.sum() / max(count.sum(), 1)),
                             "nll_per_token": float(nll.sum() / max(count.sum(), 1)),
                             "num_sequences": int(len(nll))}
  world = eval_data.world
  if world is not None:
    arrays = examples.arrays
    metrics["true_nll_per_token"] = float(-arrays["true_log_prob"].sum() / count.sum())
    metrics["entropy_per_token"] = float(
        arrays["true_entropy"].sum() / (len(nll) * synthetic_policy.expected_tokens(world)))
    metrics["kl_per_token"] = metrics["nll_per_token"] - metrics["true_nll_per_token"]
  metrics.update(sample_and_compare(config, policy, cache, params, eval_data))
  return metrics, {}


def sample_and_compare(config: ml_collections.ConfigDict, policy: model_lib.PolicyModel,
                       cache: dict, params, eval_data: PolicyEvalData) -> dict[str, float]:
  """The policy's samples on the held-out prompts; synthetic: against pi_world's."""
  tokenizer = cache["tokenizer"]
  run = cache["generate"]
  samples = sampling_eval.sample(run, params, eval_data.prompts,
                                 jax.random.key(config.generation.seed),
                                 batch_size=config.generation.batch_size)
  eos = cache["eos"]
  metrics = sampling_eval.sample_metrics(samples, eos)
  world = eval_data.world
  if world is not None:
    texts = sampling_eval.decode_responses(tokenizer, samples, eos)
    prompts = eval_data.prompts.texts
    rng = np.random.default_rng([config.generation.seed, 7])
    baseline = synthetic_policy.sample_responses(prompts, rng, world)
    metrics.update(sampling_eval.world_metrics(world, prompts, texts, baseline, "world"))
    world_logp = synthetic_policy.response_log_prob(world, prompts, texts)
    ok = np.isfinite(world_logp)
    if ok.any():
      metrics["kl_to_world_on_valid"] = sampling_eval.kl_estimate(
          samples["log_probs"].sum(1)[ok], world_logp[ok])
  return metrics


def write_plots(workdir: str, final_eval: dict[str, Any], arrays: dict[str, Any]) -> None:
  """curves.png: NLL per token (train, eval, pi_world's), samples' true reward, length."""
  del final_eval, arrays
  report_lib.plot_metrics(workdir, [
      ("NLL per response token", [("train", "loss"), ("eval", "nll_per_token"),
                                  ("eval", "true_nll_per_token")]),
      ("True reward of samples", [("eval", "true_reward"), ("eval", "world_true_reward")]),
      ("Samples", [("eval", "response_length"), ("eval", "valid_responses")])])


def make_task(config: ml_collections.ConfigDict) -> Task:
  """The SFT task of `config` (`configs/sft.py`)."""
  check_config(config)
  policy = model_lib.build_policy_model(config)
  tokenizer = rm_data.make_tokenizer(config.data.tokenizer)
  cache: dict[str, Any] = {"tokenizer": tokenizer,
                           "eos": sampling_eval.end_ids(tokenizer, config.data.chat_template)}
  functions = functools.partial(make_functions, config)

  def make_eval(graphdef, shard):
    cache["generate"] = sharded_generate(config, policy, graphdef, tokenizer)
    return functions(graphdef, shard)[1]

  return Task(
      name="sft",
      init_params=policy.init_params,
      param_specs=policy.param_specs,
      make_loss=lambda graphdef, shard: functions(graphdef, shard)[0],
      make_eval=make_eval,
      load_data=functools.partial(load_data, config),
      evaluate=functools.partial(evaluate, config, policy, cache),
      batch_fields=SEQUENCE_FIELDS,
      token_mask_fields=("mask",),
      length_axes={"tokens": -1, "mask": -1},
      write_plots=write_plots,
      flops_per_token=models.flops_per_token(policy.model_config, config.data.max_len),
      report={"task": "sft", "checkpoint": policy.checkpoint},
      load_params=policy.load_params,
      batch_layout=lambda n: rm_data.batch_layout(SEQUENCE_FIELDS, n, config.data.max_len))
