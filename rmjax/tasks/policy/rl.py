"""Online RL of a policy against rewards: the `rl` task on the task-agnostic trainer.

One train step (the task's own step, `Task.make_train_step`):

  1. prompts: B = train.batch_size prompts of the training prompt set, batch `step` a
     function of (data_seed, step) as every task's batches (the trainer places them);
  2. rollout (jit): G = rl.group_size responses per prompt from the policy
     (`rmjax.generation`, sharded, with config.generation's temperature / top-k / top-p and
     key fold_in(fold_in(state.rng, step), 0)); rows b * G + g, N = B * G;
  3. log-probs (jit): the policy's own (the "old" log-probs pi_old, recomputed by a forward
     pass at the sampling temperature) and the frozen reference's, per response token;
  4. rewards (host): the responses are decoded and scored by the reward pipeline
     (`rewards.make_reward_pipeline`: sources -> transforms -> combination, its state in
     the task state); ReMax also scores one greedy response per prompt;
  5. advantages (jit): by algorithm name (`rl_algorithms`), with the KL to the reference in
     the reward (rl.kl_in = "reward", `kl_in_reward` shaping with estimator rl.kl_estimator)
     or in the loss ("loss", `kl_penalty`), coefficient fixed or adaptive (Ziegler et al.
     2019, `adaptive_kl_controller`, its beta in the task state); rows whose combined
     reward is NaN and, with rl.dynamic_sampling, groups whose rewards are all equal (DAPO)
     are masked out (not refilled: the kept fraction is logged);
  6. update (jit): rl.epochs passes over the N rows in minibatches of rl.minibatch_size
     (a fresh permutation per epoch), one optimiser update each, as one `lax.scan`:
     U = epochs * N / minibatch_size updates per step. The optimiser is the trainer's
     (config.optim); its learning-rate schedule counts optimiser updates and is built for
     train.num_steps * U of them (`Task.updates_per_step`), so warmup_steps is in updates.

PPO ("ppo") adds a critic: a value head (params["value_head"], a second head on the policy's
backbone, zero-init) whose old values give GAE advantages and returns; its clipped value
loss joins the policy loss (rl.vf_coef). The reference and the generators use the language
model's params alone.

Single process: the rewards are computed from the whole batch's text on one host.

The reference pi_0 is the SFT run of rl.reference_workdir (its latest checkpoint), else the
pretrained checkpoint (pretrained.checkpoint), else the policy's own initialisation from
config.seed (tests, bandits); the policy starts from the reference's weights.

Train metrics per step (averaged between logs): loss, policy_loss, entropy, clip_fraction,
approx_kl, kl_loss, value_loss (PPO), grad_norm (means over the step's updates), the pipeline's reward metrics
("reward/<source>/raw_mean", ..., "reward/combined_mean"), true_reward (synthetic world),
kl_k1 and kl_k3 (sequence KL(pi_old || pi_ref) estimated on the samples), kl_coef,
response_length, valid_fraction (finite combined reward), kept_fraction (rows in the loss),
param_norm; the trainer adds the learning rate.

Dry run (config.dry_run.target, a TPU slice): nothing is read or trained; the step's jitted
pieces (generation, log-probs, PPO's values, the update, and each reward model whose
workdir is given, from its config.json) are compiled for the slice from shapes and
reported one by one (`dry_run_steps`, `rmjax.train.dry_run`).

Eval (held-out prompts, one sample each at config.generation's settings): response_length,
ended_with_eos, kl_to_reference (k1), and in the synthetic world the samples' true reward,
the reference's, and the win rate over pi_0 (the reference's samples drawn once).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from rmjax import data as rm_data
from rmjax import generation
from rmjax import losses
from rmjax import models
from rmjax import parallel
from rmjax.data import datasets as datasets_lib
from rmjax.data import synthetic_policy
from rmjax.losses import kl as kl_lib
from rmjax.losses import policy_gradient as pg
from rmjax.tasks.policy import data as data_lib
from rmjax.tasks.policy import dpo
from rmjax.tasks.policy import model as model_lib
from rmjax.tasks.policy import reward_sources
from rmjax.tasks.policy import rl_algorithms as algos
from rmjax.tasks.policy import sampling_eval
from rmjax.tasks.policy import sft
from rmjax.train import dry_run as dry_run_lib
from rmjax.train import report as report_lib
from rmjax.train import restore as restore_lib
from rmjax.train.state import TrainState
from rmjax.train.task import Task
from rmjax.train.task import TaskData

from rmjax.tasks.policy import rewards as rewards_lib

PROMPT_FIELDS = ("prompt_tokens", "prompt_mask", "prompt_id")
# Key streams of a step: fold_in(step key, stream).
_ROLLOUT, _REFERENCE, _GREEDY, _UPDATE = 0, 1, 2, 3


def default_rl_config() -> dict:
  """config.rl: algorithm ("grpo"; `rl_algorithms.ALGORITHMS`), group_size G (8), epochs
  (1), minibatch_size (0 = all N = B * G rows: one update per epoch), eps_low / eps_high
  (PPO clip 0.2 / 0.2; CISPO's upper clip is eps_high, no lower clip), dual_clip (0 = off),
  gspo_eps_low / gspo_eps_high (3e-4 / 4e-4), kl_in ("reward" | "loss" | "none"),
  kl_estimator ("k1" | "k2" | "k3"), kl_coef (0.05; the initial beta when adaptive),
  adaptive_kl (False), kl_target (KL per sequence, 1.0) and kl_horizon (10000 samples),
  entropy_coef (0), loss_aggregation (`AGGREGATION_MODES`, "token-mean"), norm_constant
  (0 = generation.max_new_tokens; "seq-mean-token-sum-norm" only), dynamic_sampling
  (False), scale_rewards (GRPO: "group" | "batch" | "none"), baseline (REINFORCE's constant,
  0), reward_range (BNPO, (0, 1)), PPO's gamma (1.0), lam (0.95), vf_coef (0.1) and
  value_clip (0.2), reference_workdir ("" = pretrained.checkpoint, or for
  synthetic data an SFT run made first by the experiment, or the policy's initialisation),
  reference_preset (the configs/sft.py preset of that run)."""
  return dict(algorithm="grpo", group_size=8, epochs=1, minibatch_size=0, eps_low=0.2,
              eps_high=0.2, dual_clip=0.0, gspo_eps_low=3e-4, gspo_eps_high=4e-4,
              kl_in="reward", kl_estimator="k1", kl_coef=0.05, adaptive_kl=False,
              kl_target=1.0, kl_horizon=10000.0, entropy_coef=0.0,
              loss_aggregation="token-mean", norm_constant=0.0, dynamic_sampling=False,
              scale_rewards="group", baseline=0.0, reward_range=(0.0, 1.0), gamma=1.0,
              lam=0.95, vf_coef=0.1, value_clip=0.2,
              reference_workdir="", reference_preset="default")


def num_rows(config: ml_collections.ConfigDict) -> int:
  """N = B * G rows of a rollout."""
  return int(config.train.batch_size) * int(config.rl.group_size)


def minibatch_size(config: ml_collections.ConfigDict) -> int:
  return int(config.rl.minibatch_size) or num_rows(config)


def updates_per_step(config: ml_collections.ConfigDict) -> int:
  """U = epochs * N / minibatch_size optimiser updates per train step."""
  return int(config.rl.epochs) * (num_rows(config) // minibatch_size(config))


def _check_choice(name: str, value: Any, choices) -> None:
  import difflib  # noqa: PLC0415
  if value not in choices:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{name}={value!r} is not known{hint}; expected one of {tuple(choices)}")


def _check_reference_workdir(workdir: str) -> None:
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    raise ValueError(f"rl.reference_workdir={workdir!r}: no config.json there (expected an SFT "
                     "run's workdir)")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = [d for d in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []) if d.isdigit()]
  if not steps:
    raise ValueError(f"rl.reference_workdir={workdir!r}: no checkpoint under checkpoints/ "
                     "(train the SFT run first, or point at a finished one)")


def check_config(config: ml_collections.ConfigDict, *, check_rewards: bool = True) -> None:
  """Everything about config.rl (and with `check_rewards` config.rewards, by the pipeline's
  `check_rewards_config`) checkable without data or compiling: ValueError naming the field,
  and for names the closest known one."""
  sft.check_config(config)
  rl = config.rl
  algorithm = algos.get_algorithm(rl.algorithm)
  for name in ("group_size", "epochs", "minibatch_size"):
    value = rl[name]
    low = 0 if name == "minibatch_size" else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"rl.{name}: expected an int >= {low}, got {value!r}")
  n = num_rows(config)
  mb = minibatch_size(config)
  if n % mb:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    raise ValueError(f"rl.minibatch_size={mb} does not divide the N = train.batch_size x "
                     f"rl.group_size = {config.train.batch_size} x {rl.group_size} = {n} rows "
                     f"of a step; use one of {divisors}")
  group_estimators = ("grpo", "dr_grpo", "rloo", "opo", "bnpo", "reinforce_pp_baseline")
  if algorithm.advantages in group_estimators and rl.group_size < 2:
    raise ValueError(f"rl.algorithm={rl.algorithm!r} compares the samples of a prompt: "
                     f"rl.group_size must be >= 2, got {rl.group_size}")
  _check_choice("rl.kl_in", rl.kl_in, algos.KL_PLACES)
  _check_choice("rl.kl_estimator", rl.kl_estimator, algos.KL_ESTIMATORS)
  _check_choice("rl.loss_aggregation", rl.loss_aggregation, pg.AGGREGATION_MODES)
  _check_choice("rl.scale_rewards", rl.scale_rewards, ("group", "batch", "none"))
  for name in ("kl_coef", "entropy_coef", "norm_constant", "eps_low", "eps_high",
               "gspo_eps_low", "gspo_eps_high", "dual_clip", "vf_coef", "value_clip"):
    if not (np.isfinite(rl[name]) and rl[name] >= 0):
      raise ValueError(f"rl.{name}: expected a finite number >= 0, got {rl[name]!r}")
  for name in ("gamma", "lam"):
    if not 0.0 <= rl[name] <= 1.0:
      raise ValueError(f"rl.{name}: expected a number in [0, 1], got {rl[name]!r}")
  if rl.adaptive_kl and not (rl.kl_target > 0 and rl.kl_horizon > 0):
    raise ValueError(f"rl.adaptive_kl needs rl.kl_target > 0 and rl.kl_horizon > 0, got "
                     f"{rl.kl_target} and {rl.kl_horizon}")
  if rl.reference_workdir:
    _check_reference_workdir(rl.reference_workdir)
  if config.generation.temperature <= 0:
    raise ValueError("generation.temperature must be > 0 for RL sampling (the old log-probs "
                     f"are taken at it), got {config.generation.temperature}")
  if check_rewards:
    rewards_lib.check_rewards_config(config)


class Reference(dpo.Reference):
  """pi_0: the SFT run of rl.reference_workdir, the pretrained checkpoint, or (neither
  given) the policy's initialisation."""

  def __init__(self, config: ml_collections.ConfigDict, policy: model_lib.PolicyModel):
    super().__init__(config, policy, workdir=config.rl.reference_workdir)
    self.from_init = not self.workdir and not config.pretrained.checkpoint
    if self.from_init:
      self.source = f"initialisation (seed {config.seed})"

  def load_params(self) -> Any:
    if not self.from_init:
      return super().load_params()
    # The key the program gives a fresh run's init (`build_program`): the same params.
    init_rng = jax.random.split(jax.random.PRNGKey(self.config.seed))[0]
    return jax.device_get(jax.jit(self.policy.init_params)(init_rng)[1])


class PromptDataset(datasets_lib._IndexedArrays):  # pylint: disable=protected-access
  """The training prompts as a dataset: prompt_tokens, prompt_mask int32 [N, P] (left-
  padded), prompt_id int32 [N]; batches are a function of (seed, step) as every dataset's."""

  def __init__(self, prompts: data_lib.PromptSet, name: str = "train"):
    self.name = name
    self.prompts = prompts
    n = len(prompts.texts)
    self._arrays = {"prompt_tokens": prompts.tokens.astype(np.int32),
                    "prompt_mask": prompts.mask.astype(np.int32),
                    "prompt_id": np.arange(n, dtype=np.int32)}
    self._num_examples = n
    self._init_index()


def load_prompts(config: ml_collections.ConfigDict):
  """(train PromptSet, eval PromptSet, world or None, info): the prompts RL samples from.

  Synthetic: the world's train prompts (synthetic.num_train of stream 0, distinct) and the
  eval prompts (stream 1, as the SFT and DPO tasks'); HH-RLHF: the prompts of the train and
  eval splits (as the other policy tasks split them)."""
  data_lib._check_source(config)  # pylint: disable=protected-access
  layout = data_lib._layout(config)  # pylint: disable=protected-access
  gen = config.generation
  if config.data.source == "synthetic":
    syn = config.data.synthetic
    world = synthetic_policy.make_policy_world(syn)
    train_texts = synthetic_policy.sample_prompts(syn.num_train,
                                                  np.random.default_rng([syn.seed, 0]), world)
    eval_texts = synthetic_policy.sample_prompts(syn.num_eval,
                                                 np.random.default_rng([syn.seed, 1]), world)
  else:
    world = None
    bench, train_idx, eval_idx, _ = data_lib._hh_split(config)  # pylint: disable=protected-access
    train_texts = [bench.prompts[i] for i in train_idx]
    eval_texts = [bench.prompts[i] for i in eval_idx]
  train = data_lib.prompt_set(train_texts, layout=layout, limit=len(train_texts),
                              max_new_tokens=gen.max_new_tokens)
  evals = data_lib.prompt_set(eval_texts, layout=layout, limit=gen.num_eval_prompts,
                              max_new_tokens=gen.max_new_tokens)
  info = dict(source=config.data.source, num_train_prompts=len(train.texts),
              num_eval_prompts=len(evals.texts), prompt_width=int(train.tokens.shape[1]),
              tokenizer=config.data.tokenizer, chat_template=config.data.chat_template)
  return train, evals, world, info


def _pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
  extra = -len(x) % multiple
  return x if not extra else np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])


def _sequence_kl(old_logp, ref_logp, response_mask):
  """[N] sequence sums of the k1 and k3 estimates of KL(pi_old || pi_ref)."""
  est = lambda e: jnp.sum(kl_lib.kl_penalty(old_logp, ref_logp, estimator=e,
                                            mask=response_mask), axis=-1)
  return est("k1"), est("k3")


class _Clock:
  """Phase times of a step when `timings` is a dict (benchmarks): each `lap(name, x)` waits
  for x and appends the seconds since the previous lap to timings[name]. A no-op otherwise
  (the step then never waits)."""

  def __init__(self, timings: dict[str, list[float]] | None):
    self.timings = timings
    self.last = None if timings is None else time.perf_counter()

  def lap(self, name: str, x: Any = None) -> None:
    if self.timings is None:
      return
    jax.block_until_ready(x)
    now = time.perf_counter()
    self.timings.setdefault(name, []).append(now - self.last)
    self.last = now


# Compiled pieces that depend only on the model, the mesh and their settings (generators,
# log-prob and KL functions), shared by the steps of every rl task of the process: a second
# task on the same model (another algorithm, a resumed run in the same process) reuses them.
_SHARED: dict[tuple, Any] = {}
_SHARED_MAX = 32


def _shared(key: tuple, build):
  if key not in _SHARED:
    if len(_SHARED) >= _SHARED_MAX:
      _SHARED.clear()
    _SHARED[key] = build()
  return _SHARED[key]


class StepPrograms(NamedTuple):
  """The jitted pieces of an RL step on the pod (a dry run compiles them: `dry_run_steps`).

  Attributes:
    generate: the rollout, `rmjax.generation.make_sharded_generate`'s run of G samples per
      prompt (its `jitted` program: (params, prompt_tokens, prompt_mask, key)).
    log_probs: (params, tokens, mask, response_tokens, response_mask) -> [N, T], the old
      and the reference log-probs.
    values: PPO's (state params, tokens, mask, response_mask) -> [N, T] old values.
    update: (params, opt_state, batch, beta, key) -> (params, opt_state, metrics), the
      rl.epochs x N / rl.minibatch_size optimiser updates.
  """
  generate: Any
  log_probs: Any
  values: Any
  update: Any


def make_step(config: ml_collections.ConfigDict, ctx: dict, graphdef: Any, shard,
              optimizer: optax.GradientTransformation, shardings: TrainState):
  """The RL train step `step(state, batch) -> (state, metrics)` (see the module docstring);
  `step.programs` holds its jitted pieces (`StepPrograms`)."""
  rl = config.rl
  algorithm = algos.get_algorithm(rl.algorithm)
  policy, tokenizer, eos = ctx["policy"], ctx["tokenizer"], ctx["eos"]
  pipeline, reference = ctx["pipeline"], ctx["reference"]
  mesh = shardings.step.mesh
  shards = parallel.num_batch_shards(mesh)
  rows = parallel.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  g = int(rl.group_size)
  n = num_rows(config)
  mb = minibatch_size(config)
  epochs = int(rl.epochs)
  temperature = float(config.generation.temperature)
  max_new = int(config.generation.max_new_tokens)
  norm_constant = float(rl.norm_constant or max_new)
  kl_in_reward = rl.kl_in == "reward"
  base_gen = sampling_eval.generation_config(config, tokenizer)
  specs = policy.param_specs(mesh)
  model_key = (graphdef, mesh, tuple(tuple(r) for r in config.mesh.logical_axis_rules))

  def make_gen(**kw):
    gen_config = dataclasses.replace(base_gen, **kw)
    return _shared(("generate", *model_key, gen_config),
                   lambda: generation.make_sharded_generate(graphdef, specs, mesh, gen_config))

  rollout = make_gen(num_samples=g)
  lazy: dict[str, Any] = {}
  train_prompts = ctx["train_prompts"]
  controller_update = jax.jit(ctx["controller"].update)

  def logps(params, tokens, mask, response_tokens, response_mask):
    return algos.response_token_log_probs(graphdef, params, tokens, mask, response_tokens,
                                          response_mask, temperature=temperature)

  # `shard` lays params out as the train state's (with PPO's value head); the policy-only
  # params of PPO and the reference go through a plain jit (layout from the inputs).
  logps_fn = _shared(("logps", *model_key, temperature, algorithm.critic),
                     lambda: jax.jit(logps if algorithm.critic else shard(logps)))
  values_fn = _shared(("values", *model_key), lambda: jax.jit(
      lambda params, tokens, mask, response_mask: algos.response_values(
          graphdef, params, tokens, mask, response_mask)))
  sequence_kl = _shared(("sequence_kl",), lambda: jax.jit(_sequence_kl))

  @jax.jit
  def prepare(old_logp, ref_logp, response_mask, lengths, rewards, valid, greedy, beta,
              old_values):
    """(token advantages [N, T], rows kept [N], returns [N, T] (PPO; else zeros))."""
    kl_tokens = kl_lib.kl_penalty(old_logp, ref_logp, estimator=rl.kl_estimator,
                                  mask=response_mask)
    if rl.dynamic_sampling:  # On the combined reward (before any KL shaping), as DAPO.
      keep = losses.dynamic_sampling_mask(jnp.where(valid, rewards, 0.0).reshape(n // g, g),
                                          mask=valid.reshape(n // g, g))
      valid = valid & jnp.repeat(keep, g)
    if algorithm.critic:
      adv, returns = algos.gae_advantages(rl, rewards, valid, response_mask, kl_tokens, beta,
                                          old_values, kl_in_reward=kl_in_reward)
      return adv, valid, returns
    adv = algos.advantages(algorithm, rl, rewards, valid, response_mask, kl_tokens, beta,
                           kl_in_reward=kl_in_reward, lengths=lengths,
                           greedy_rewards=greedy)
    return adv, valid, jnp.zeros_like(adv)

  loss_fn = algos.make_minibatch_loss(algorithm, rl, graphdef, temperature=temperature,
                                      norm_constant=norm_constant)

  def update(params, opt_state, batch, beta, key):
    perms = jnp.concatenate([jax.random.permutation(jax.random.fold_in(key, e), n)
                             for e in range(epochs)]).reshape(-1, mb)

    def body(carry, idx):
      params, opt_state = carry
      # Gathered rows lose the batch's layout: without this constraint every device computes
      # the whole minibatch (measured by the dry run: 4x the FLOPs on 4 devices, 870 GiB of
      # temporaries per device for configs/rl.py:pod on v5e-256).
      minibatch = jax.lax.with_sharding_constraint(jax.tree.map(lambda x: x[idx], batch), rows)
      (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, minibatch, beta)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      metrics["grad_norm"] = optax.tree.norm(grads)
      return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), perms)
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["param_norm"] = optax.tree.norm(params)
    return params, opt_state, metrics

  update_fn = jax.jit(update, out_shardings=(shardings.params, shardings.opt_state, replicated),
                      donate_argnums=(0, 1))

  def decode(gen_out) -> tuple[list[str], np.ndarray]:
    samples = {"response_tokens": np.asarray(jax.device_get(gen_out.response_tokens)),
               "lengths": np.asarray(jax.device_get(gen_out.lengths))}
    return sampling_eval.decode_responses(tokenizer, samples, eos), samples["lengths"]

  def sample_prompts(run, params, prompt_ids: np.ndarray, key):
    ids = _pad_rows(np.asarray(prompt_ids), shards)
    return run(params, train_prompts.tokens[ids], train_prompts.mask[ids], key), len(prompt_ids)

  def step(state: TrainState, batch):
    clock = _Clock(ctx.get("timings"))
    s = int(jax.device_get(state.step))
    key = jax.random.fold_in(state.rng, s)
    params = algos.policy_params(state.params)  # The language model (PPO: no value head).
    ref_params = reference.placed(params)
    prompt_ids = np.asarray(jax.device_get(batch["prompt_id"]))
    b = len(prompt_ids)

    # Rollout, then the old and the reference log-probs of the sampled tokens.
    out = rollout(params, batch["prompt_tokens"], batch["prompt_mask"],
                  jax.random.fold_in(key, _ROLLOUT))
    clock.lap("generation", out)
    old_logp = logps_fn(params, out.tokens, out.mask, out.response_tokens, out.response_mask)
    ref_logp = logps_fn(ref_params, out.tokens, out.mask, out.response_tokens,
                        out.response_mask)
    old_values = (values_fn(state.params, out.tokens, out.mask, out.response_mask)
                  if algorithm.critic else jnp.zeros_like(old_logp))
    clock.lap("log_probs", (ref_logp, old_values))

    # Rewards on the host, from text.
    responses, lengths = decode(out)
    row_prompts = np.repeat(prompt_ids, g)
    texts = [train_prompts.texts[i] for i in row_prompts]
    reward_batch = rewards_lib.RewardBatch(row_prompts.astype(np.int64), texts, responses,
                                           lengths.astype(np.int32), g)

    def sample_reference(ids: np.ndarray, k: int) -> list[list[str]]:
      if ("ref", k) not in lazy:
        lazy[("ref", k)] = make_gen(num_samples=k)
      got, m = sample_prompts(lazy[("ref", k)], ref_params, ids,
                              jax.random.fold_in(key, _REFERENCE))
      flat, _ = decode(got)
      return [flat[i * k:(i + 1) * k] for i in range(m)]

    task_state = state.task_state
    reward_state = jax.device_get(task_state["rewards"])
    combined, reward_state, reward_metrics, _ = pipeline(reward_state, reward_batch,
                                                         sample_reference)
    combined = np.asarray(combined, np.float32)
    greedy = np.zeros(b, np.float32)
    if algorithm.needs_greedy:  # ReMax: the greedy response's reward is the baseline.
      if "greedy" not in lazy:
        lazy["greedy"] = make_gen(num_samples=1, greedy=True)
      got, _ = sample_prompts(lazy["greedy"], params, prompt_ids,
                              jax.random.fold_in(key, _GREEDY))
      greedy_texts, greedy_lengths = decode(got)
      greedy_batch = rewards_lib.RewardBatch(
          prompt_ids.astype(np.int64), [train_prompts.texts[i] for i in prompt_ids],
          greedy_texts[:b], greedy_lengths[:b].astype(np.int32), 1)
      # Scored with the state after the samples' call; its own new state is dropped.
      greedy = np.asarray(pipeline(reward_state, greedy_batch, sample_reference)[0],
                          np.float32)
    finite = np.isfinite(combined)
    clock.lap("scoring")

    # KL coefficient (the controller's beta before it sees this batch), advantages.
    seq_k1, seq_k3 = (np.asarray(x) for x in jax.device_get(
        sequence_kl(old_logp, ref_logp, out.response_mask)))
    beta, kl_state = controller_update(task_state["kl"], np.float32(seq_k1.mean()),
                                       np.float32(n))
    put = lambda x: jax.device_put(x, rows)
    adv, kept, returns = prepare(
        old_logp, ref_logp, out.response_mask, out.lengths,
        put(np.where(finite, combined, 0.0).astype(np.float32)), put(finite),
        jnp.asarray(np.where(np.isfinite(greedy), greedy, 0.0)), beta, old_values)

    # Update: epochs x (N / minibatch) optimiser steps.
    loss_mask = out.response_mask & kept[:, None]
    update_batch = {"tokens": out.tokens, "mask": out.mask,
                    "response_tokens": out.response_tokens, "response_mask": loss_mask,
                    "old_logp": old_logp, "ref_logp": ref_logp, "advantages": adv}
    if algorithm.critic:
      update_batch.update(old_values=old_values, returns=returns)
    new_params, opt_state, metrics = update_fn(state.params, state.opt_state, update_batch, beta,
                                               jax.random.fold_in(key, _UPDATE))
    new_task_state = jax.device_put({"kl": kl_state, "rewards": reward_state}, replicated)
    new_state = TrainState(state.step + 1, new_params, opt_state, state.rng, new_task_state)
    clock.lap("update", new_state)

    metrics = {k: v for k, v in jax.device_get(metrics).items()}
    metrics.update({k: float(v) for k, v in reward_metrics.items()})
    if ctx["world"] is not None:
      metrics["true_reward"] = float(synthetic_policy.true_rewards(
          ctx["world"], texts, responses).mean())
    metrics.update(kl_k1=float(seq_k1.mean()), kl_k3=float(seq_k3.mean()),
                   kl_coef=float(beta), response_length=float(lengths.mean()),
                   valid_fraction=float(finite.mean()),
                   kept_fraction=float(np.asarray(jax.device_get(kept)).mean()))
    return new_state, metrics

  step.programs = StepPrograms(rollout, logps_fn, values_fn, update_fn)
  return step


def prompt_width(config: ml_collections.ConfigDict) -> int:
  """The widest left-padded prompt batch a run can place: data.max_prompt_len tokens, at
  most data.max_len - generation.max_new_tokens (`data.prompt_set`'s limit)."""
  return min(int(config.data.max_prompt_len),
             int(config.data.max_len) - int(config.generation.max_new_tokens))


def dry_run_steps(config: ml_collections.ConfigDict, ctx: dict, program: Any, num_chips: int
                  ) -> tuple[list[dry_run_lib.DryRunStep], dict[str, Any]]:
  """The pieces of one RL step on the pod, with abstract arguments, for a dry run
  (`Task.dry_run_steps`): (steps, facts for the report).

  Shapes: B = train.batch_size prompts of P = `prompt_width` tokens, N = B x G rows of
  P + T tokens (T = generation.max_new_tokens), the state's params and optimiser state as
  `Program.abstract_state` (nothing materialised). Steps, in the order a step runs them:

    generation  the rollout of G samples per prompt (KV cache of N rows)
    log_probs   one forward pass over the N rows (run twice: pi_old and pi_ref)
    values      PPO only: the value head over the N rows
    update      rl.epochs x N / rl.minibatch_size optimiser updates (one `lax.scan`)
    score/<s>   each "reward_model" source with a workdir: its scorer's function at
                [batch_size, its run's data.max_len] on the scorer's mesh (all chips on
                'data', as `reward_sources.reward_model_scorer` lays it out), its params
                from the run's config.json alone (`scoring.abstract_token_model`)

  XLA's cost analysis counts a loop's body once, so the FLOPs and bytes of generation are
  those of the prefill and one decode step (the while loop runs up to T), and the update's
  those of one optimiser update (the scan runs U = `updates_per_step`); their model FLOPs
  match: per device, `rmjax.models.flops_per_token` x tokens / chips for one update's
  minibatch of rows, a third of it (a forward pass) for the N x (P + 1) tokens of the
  prefill and a decode step, and for the N x (P + T) tokens of log_probs and values.
  Sources not compiled (a reward model without a workdir, a "pretrained" one without a
  checkpoint) are listed in the facts' notes.
  """
  from rmjax.tasks.reward_model import scoring  # noqa: PLC0415  (the reward-model task)
  programs = program.train_step.programs
  rl, gen = config.rl, config.generation
  mesh, rows = program.mesh, program.batch_sharding
  replicated = NamedSharding(mesh, PartitionSpec())
  b, n, mb = int(config.train.batch_size), num_rows(config), minibatch_size(config)
  t, p = int(gen.max_new_tokens), prompt_width(config)
  length = p + t
  shaped = lambda shape, dtype, sharding=rows: jax.ShapeDtypeStruct(shape, dtype,
                                                                   sharding=sharding)
  state = program.abstract_state
  params = algos.policy_params(state.params)
  key = shaped(state.rng.shape, state.rng.dtype, replicated)
  sequences = (shaped((n, length), jnp.int32), shaped((n, length), jnp.bool_),
               shaped((n, t), jnp.int32), shaped((n, t), jnp.bool_))
  per_token = models.flops_per_token(ctx["policy"].model_config, config.data.max_len)
  forward = lambda tokens: per_token / 3 * tokens / num_chips
  updates = updates_per_step(config)
  steps = [
      dry_run_lib.DryRunStep("generation", programs.generate.jitted,
                             (params, shaped((b, p), jnp.int32), shaped((b, p), jnp.int32),
                              key), forward(n * (p + 1)), "train.batch_size", b,
                             f"prefill and 1 decode step (of {t})", backward=False),
      dry_run_lib.DryRunStep("log_probs", programs.log_probs, (params, *sequences),
                             forward(n * length), "train.batch_size", b,
                             "call (2 a step: pi_old, pi_ref)", backward=False)]
  critic = algos.get_algorithm(rl.algorithm).critic
  if critic:
    steps.append(dry_run_lib.DryRunStep(
        "values", programs.values, (state.params, sequences[0], sequences[1], sequences[3]),
        forward(n * length), "train.batch_size", b, backward=False))
  per_row = {name: shaped((n, t), jnp.float32) for name in (
      "old_logp", "ref_logp", "advantages", *(("old_values", "returns") if critic else ()))}
  batch = dict(zip(("tokens", "mask", "response_tokens", "response_mask"), sequences),
               **per_row)
  steps.append(dry_run_lib.DryRunStep(
      "update", programs.update,
      (state.params, state.opt_state, batch, shaped((), jnp.float32, replicated), key),
      per_token * mb * length / num_chips, "rl.minibatch_size", mb,
      f"optimiser update (1 of {updates})"))

  notes = []
  devices = list(mesh.devices.flat)
  processes = len({d.process_index for d in devices})
  if processes > 1:
    notes.append(f"the rl task runs on one process (its rewards are decoded and scored on "
                 f"the host) and this slice has {processes} hosts: a real run needs a "
                 "single-host mesh")
  for name in config.rewards.source_order.split(","):
    spec = config.rewards.sources[name]
    field = f"rewards.sources.{name}"
    token_model = None
    if spec.kind == "reward_model" and spec.workdir:
      run_config = restore_lib.read_run_config(spec.workdir)
      token_model = reward_sources.aggregated_token_model(
          scoring.abstract_token_model(run_config), aggregation=spec.aggregation,
          uncertainty_penalty=spec.uncertainty_penalty)
      max_len = run_config.data.max_len
    elif spec.kind == "reward_model":
      notes.append(f"{field}: no workdir, its scoring is not compiled (give "
                   f"--config.{field}.workdir=<a reward-model run with config.json>)")
    elif spec.kind == "pretrained" and spec.checkpoint:
      token_model = scoring.abstract_token_model_from_checkpoint(spec.checkpoint,
                                                                 max_len=spec.max_len)
      max_len = spec.max_len
    elif spec.kind == "pretrained":
      notes.append(f"{field}: no checkpoint, its scoring is not compiled (give "
                   f"--config.{field}.checkpoint=<a HF directory with config.json>)")
    if token_model is not None:
      score_mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices)
      steps.append(scoring.scoring_dry_run_step(
          token_model, score_mesh, batch_size=spec.batch_size, max_len=max_len,
          name=f"score/{name}", batch_flag=f"{field}.batch_size"))
  facts = dict(rl_algorithm=rl.algorithm, prompts_per_step=b, group_size=int(rl.group_size),
               rows=n, prompt_width=p, response_tokens=t, minibatch_size=mb,
               updates_per_step=updates, notes=notes)
  return steps, facts


def evaluate(config: ml_collections.ConfigDict, ctx: dict, eval_fn, params, eval_data,
             place) -> tuple[dict[str, Any], dict[str, Any]]:
  """The policy's samples on the held-out prompts (`sampling_eval`), against pi_0's."""
  del eval_fn, place
  params = algos.policy_params(params)
  run, eos, tokenizer = ctx["generate"], ctx["eos"], ctx["tokenizer"]
  reference = ctx["reference"]
  key = jax.random.key(config.generation.seed)
  batch_size = config.generation.batch_size
  samples = sampling_eval.sample(run, params, eval_data.prompts, key, batch_size=batch_size)
  ref_params = reference.placed(params)
  metrics: dict[str, Any] = sampling_eval.sample_metrics(samples, eos)
  ref_logps = ctx["sequence_logps"](ref_params, samples["tokens"], samples["mask"])
  metrics["kl_to_reference"] = sampling_eval.kl_estimate(samples["log_probs"].sum(1),
                                                         np.asarray(ref_logps))
  if eval_data.world is not None:
    if "reference_texts" not in ctx:  # pi_0 is frozen: its samples, once.
      ref_samples = sampling_eval.sample(run, ref_params, eval_data.prompts, key,
                                         batch_size=batch_size)
      ctx["reference_texts"] = sampling_eval.decode_responses(tokenizer, ref_samples, eos)
    texts = sampling_eval.decode_responses(tokenizer, samples, eos)
    metrics.update(sampling_eval.world_metrics(eval_data.world, eval_data.prompts.texts,
                                               texts, ctx["reference_texts"], "reference"))
  return metrics, {}


def write_plots(workdir: str, final_eval: dict[str, Any], arrays: dict[str, Any]) -> None:
  """curves.png: rewards, KL and entropy, the eval samples against pi_0."""
  del final_eval, arrays
  report_lib.plot_metrics(workdir, [
      ("Reward", [("train", "reward/combined_mean"), ("train", "true_reward")]),
      ("KL and entropy", [("train", "kl_k1"), ("train", "kl_k3"), ("train", "entropy")]),
      ("Samples", [("eval", "true_reward"), ("eval", "reference_true_reward"),
                   ("eval", "win_rate_vs_reference"), ("eval", "kl_to_reference")])])


def make_task(config: ml_collections.ConfigDict, *, reward_pipeline: Any = None,
              timings: dict[str, list[float]] | None = None) -> Task:
  """The RL task of `config` (`configs/rl.py`).

  Args:
    config: the run config (config.rl, config.rewards, ...).
    reward_pipeline: optional object with the `RewardPipeline` interface used instead of
      `rewards.make_reward_pipeline(config, ...)` (tests: a bandit's known reward).
    timings: optional dict: each step appends its phase times (generation, log_probs,
      scoring, update; waiting for each phase) under those names (benchmarks/rl_step.py).
  """
  # A dry run (config.dry_run) compiles the step's pieces from shapes: no prompts are read,
  # no reward model or reference is loaded (a reward model's workdir needs only its
  # config.json), so the reward sources' checkpoints are not checked.
  dry_run = bool(config.get("dry_run") and config.dry_run.target)
  check_config(config, check_rewards=reward_pipeline is None and not dry_run)
  policy = model_lib.build_policy_model(config)
  if config.rl.reference_workdir:
    dpo.check_reference_run(config, policy, config.rl.reference_workdir)
  reference = Reference(config, policy)
  tokenizer = rm_data.make_tokenizer(config.data.tokenizer)
  if dry_run:
    train_prompts = eval_prompts = world = pipeline = None
    info = {}
  else:
    train_prompts, eval_prompts, world, info = load_prompts(config)
    pipeline = reward_pipeline or rewards_lib.make_reward_pipeline(
        config, world=world, policy_tokenizer=tokenizer)
  rl = config.rl
  controller = (losses.adaptive_kl_controller(rl.kl_coef, rl.kl_target, rl.kl_horizon)
                if rl.adaptive_kl else losses.fixed_kl_controller(rl.kl_coef))
  ctx: dict[str, Any] = {
      "policy": policy, "tokenizer": tokenizer, "reference": reference,
      "eos": sampling_eval.end_ids(tokenizer, config.data.chat_template),
      "pipeline": pipeline, "world": world, "train_prompts": train_prompts,
      "controller": controller, "timings": timings}

  # Made on the host once (the pipeline's init uses numpy); `init_task_state` is traced
  # inside the program's jitted init, where these are constants.
  initial_task_state = jax.device_get({"kl": controller.init(), "rewards": (
      {} if dry_run else pipeline.init_state(len(train_prompts.texts)))})

  def init_task_state():
    return jax.tree.map(jnp.asarray, initial_task_state)

  def make_eval(graphdef, shard):
    del shard
    ctx["generate"] = sft.sharded_generate(config, policy, graphdef, tokenizer)

    ctx["sequence_logps"] = sampling_eval.sample_log_prob_fn(config, graphdef)
    return lambda params, batch: batch["prompt_id"]

  def load_data(workdir):
    del workdir
    evals = PromptDataset(eval_prompts, name="eval")
    return TaskData(PromptDataset(train_prompts),
                    sft.PolicyEvalData(evals, eval_prompts, world),
                    dict(info, reference=reference.source))

  critic = algos.get_algorithm(config.rl.algorithm).critic
  d_model = policy.model_config.d_model

  def init_params(rng):
    graphdef, params = policy.init_params(rng)
    if critic:
      params = {**params, algos.VALUE_HEAD: algos.init_value_head(d_model)}
    return graphdef, params

  def param_specs(mesh):
    specs = policy.param_specs(mesh)
    if critic:
      specs = {**specs, algos.VALUE_HEAD: {"kernel": PartitionSpec(), "bias": PartitionSpec()}}
    return specs

  def load_params(rng, shardings):
    del rng
    params = reference.params
    if critic:  # pi_0's weights and a fresh (zero) value head.
      params = {**params, algos.VALUE_HEAD: jax.device_get(algos.init_value_head(d_model))}
    return jax.device_put(params, shardings)

  def check_mesh(mesh):
    # A dry run compiles for a pod slice of several hosts; its report notes this limit.
    if len({d.process_index for d in mesh.devices.flat}) > 1 and not dry_run:
      raise ValueError(
          f"the rl task runs on one process: its reward step decodes and scores every sample "
          f"on the host, and this mesh spans {len({d.process_index for d in mesh.devices.flat})} "
          "processes; run it on one host's devices (mesh.num_devices, or one process)")
    shards = parallel.num_batch_shards(mesh)
    if minibatch_size(config) % shards:
      raise ValueError(f"rl.minibatch_size={minibatch_size(config)} does not split over the "
                       f"{shards} batch shards of the mesh; use a multiple of {shards}")
    if config.generation.batch_size % shards:
      raise ValueError(f"generation.batch_size={config.generation.batch_size} does not split "
                       f"over the {shards} batch shards of the mesh")

  def loss_not_used(graphdef, shard):
    raise NotImplementedError("the rl task has its own step (make_train_step)")

  return Task(
      name=f"rl/{config.rl.algorithm}",
      init_params=init_params,
      param_specs=param_specs,
      make_loss=loss_not_used,
      make_eval=make_eval,
      load_data=load_data,
      evaluate=functools.partial(evaluate, config, ctx),
      batch_fields=PROMPT_FIELDS,
      token_mask_fields=("prompt_mask",),
      check_mesh=check_mesh,
      write_plots=write_plots,
      flops_per_token=models.flops_per_token(policy.model_config, config.data.max_len),
      report={"task": "rl", "algorithm": config.rl.algorithm,
              "group_size": config.rl.group_size, "reference": reference.source,
              "updates_per_step": updates_per_step(config)},
      load_params=load_params,
      make_train_step=functools.partial(make_step, config, ctx),
      init_task_state=init_task_state,
      updates_per_step=updates_per_step(config),
      dry_run_steps=functools.partial(dry_run_steps, config, ctx))
