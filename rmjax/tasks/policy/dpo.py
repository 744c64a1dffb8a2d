"""Direct preference optimisation: a policy trained on preference pairs against a frozen
reference, with any paired loss of `rmjax.losses.direct_preference.PAIRED_LOSSES` by name.

  h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))
  loss = PAIRED_LOSSES[dpo.loss](pi_w, pi_l, ref_w, ref_l, beta=dpo.beta, **dpo.options)

The reference is the SFT run of ``dpo.reference_workdir`` (its latest checkpoint), or the
pretrained checkpoint (``pretrained.checkpoint``) when no workdir is given; the policy starts
from the reference's weights. The reference's sequence log-probabilities of every pair are
computed once, before training (TRL's precompute_ref_log_probs), and cached in the workdir
keyed by the reference and the tokens.

Options: ``dpo.wpo`` weights each pair by the policy's probability of producing it (WPO,
`wpo_weights`, detached); ``dpo.ld_alpha`` < 1 length-desensitises the sequence
log-probabilities of policy and reference alike (LD-DPO, `ld_dpo_log_probs`); "bco_pair"
takes as its reward shift the batch mean of the implicit rewards, detached (TRL keeps a
running mean across batches: the batch mean is its one-batch case).

Metrics (train and eval): the loss, implicit-reward accuracy (h > 0), reward margin
(beta h), the chosen and rejected implicit rewards beta (log pi - log pi_ref) and log-probs;
on held-out prompts, the policy's samples (`sampling_eval`): KL(pi || pi_ref) estimated on
them, their length, and in the synthetic world their true reward, the reference's and the
win rate over the reference pi_0.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rmjax import data as rm_data
from rmjax import losses
from rmjax import models
from rmjax.losses import direct_preference
from rmjax.tasks.policy import data as data_lib
from rmjax.tasks.policy import model as model_lib
from rmjax.tasks.policy import sampling_eval
from rmjax.tasks.policy import sft
from rmjax.train import report as report_lib
from rmjax.train import restore as restore_lib
from rmjax.train.task import Task
from rmjax.train.task import TaskData

PAIR_FIELDS = ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask",
               "prompt_lengths", "reference_chosen_logps", "reference_rejected_logps")
# Paired losses that take no per-pair weights (their terms are ranks over the batch).
_NO_WEIGHTS = ("aot", "aot_unpaired", "aot_pair")
# Reference-free losses on length-normalised (mean token) log-probs: (policy_chosen,
# policy_rejected, **options) with SimPO's beta taken from dpo.beta.
REFERENCE_FREE = {"simpo": direct_preference.simpo_loss, "orpo": direct_preference.orpo_loss}


def loss_names() -> list[str]:
  """Every name dpo.loss takes: `PAIRED_LOSSES` and the reference-free `REFERENCE_FREE`."""
  return sorted([*direct_preference.PAIRED_LOSSES, *REFERENCE_FREE])


def check_config(config: ml_collections.ConfigDict) -> None:
  """The loss name and options, before any data or model is made."""
  sft.check_config(config)
  dpo = config.dpo
  if dpo.loss not in REFERENCE_FREE:
    direct_preference.get_paired_loss(dpo.loss)  # An unknown name lists the known ones.
  if dpo.loss in REFERENCE_FREE and dpo.ld_alpha < 1.0:
    raise ValueError(f"dpo.loss={dpo.loss!r} takes mean token log-probs; dpo.ld_alpha "
                     f"(LD-DPO's sums) must stay 1.0, got {dpo.ld_alpha}")
  # A dry run (config.dry_run) compiles the step from shapes: the reference's log-probs are
  # batch fields, so no reference is read.
  dry_run = config.get("dry_run") and config.dry_run.target
  if not dpo.reference_workdir and not config.pretrained.checkpoint and not dry_run:
    raise ValueError("dpo.reference_workdir (an SFT run) or pretrained.checkpoint must name "
                     "the reference policy")
  if dpo.wpo and dpo.loss in _NO_WEIGHTS:
    raise ValueError(f"dpo.wpo weights pairs; dpo.loss={dpo.loss!r} takes no weights")
  if not 0.0 <= dpo.ld_alpha <= 1.0:
    raise ValueError(f"dpo.ld_alpha must lie in [0, 1] (1 = plain DPO), got {dpo.ld_alpha}")


def sequence_logps(ld_alpha: float, chosen_lp, chosen_mask, rejected_lp, rejected_mask, *,
                   aggregation: str = "sum"):
  """[B] log-probs of both sides: sums over the response, LD-DPO's (ld_alpha < 1), or
  means over the response tokens (aggregation "mean": SimPO, ORPO)."""
  if aggregation == "mean":
    return (losses.sequence_log_probs(chosen_lp, chosen_mask, aggregation="mean"),
            losses.sequence_log_probs(rejected_lp, rejected_mask, aggregation="mean"))
  if ld_alpha < 1.0:
    return direct_preference.ld_dpo_log_probs(
        chosen_lp, rejected_lp, alpha=ld_alpha, chosen_mask=chosen_mask,
        rejected_mask=rejected_mask)
  return (losses.sequence_log_probs(chosen_lp, chosen_mask),
          losses.sequence_log_probs(rejected_lp, rejected_mask))


def pair_log_probs(graphdef, params, chosen_tokens, chosen_mask, rejected_tokens,
                   rejected_mask, prompt_lengths, *, ld_alpha: float, wpo: bool,
                   chunk_size: int | None = None, aggregation: str = "sum"):
  """(log pi(y_w), log pi(y_l), WPO weights or None), one forward pass over [2B, L]."""
  b = chosen_tokens.shape[0]
  tokens = jnp.concatenate([chosen_tokens, rejected_tokens])
  mask = jnp.concatenate([chosen_mask, rejected_mask])
  lengths = jnp.concatenate([prompt_lengths, prompt_lengths])
  if wpo:
    from flax import nnx  # noqa: PLC0415
    logits = nnx.merge(graphdef, params).logits(tokens, mask)[:, :-1]
    targets = model_lib.response_mask(mask, lengths)
    lp = jnp.where(targets, losses.token_log_probs(logits, tokens[:, 1:], mask=targets), 0.0)
    weights = direct_preference.wpo_weights(
        logits[:b], tokens[:b, 1:], logits[b:], tokens[b:, 1:], chosen_mask=targets[:b],
        rejected_mask=targets[b:])
  else:
    lp, targets = model_lib.response_log_probs(graphdef, params, tokens, mask, lengths,
                                               chunk_size=chunk_size)
    weights = None
  chosen, rejected = sequence_logps(ld_alpha, lp[:b], targets[:b], lp[b:], targets[b:],
                                    aggregation=aggregation)
  return chosen, rejected, weights


def preference_loss(config: ml_collections.ConfigDict, pc, pr, rc, rr, valid, weights=None):
  """(loss, metrics) of a pair batch under `config.dpo`."""
  dpo = config.dpo
  kwargs = dict(beta=dpo.beta, mask=valid, **dpo.options.to_dict())
  if weights is not None:
    kwargs["weights"] = weights
  beta = dpo.beta
  chosen_reward = beta * (pc - rc)
  rejected_reward = beta * (pr - rr)
  if dpo.loss == "bco_pair":
    count = jnp.maximum(jnp.sum(valid), 1)
    shift = jnp.sum(jnp.where(valid, chosen_reward + rejected_reward, 0.0)) / (2 * count)
    kwargs["reward_shift"] = jax.lax.stop_gradient(shift)
  if dpo.loss in REFERENCE_FREE:
    if dpo.loss == "orpo":
      del kwargs["beta"]
    loss = REFERENCE_FREE[dpo.loss](pc, pr, **kwargs)
  else:
    loss = direct_preference.get_paired_loss(dpo.loss)(pc, pr, rc, rr, **kwargs)
  h = (pc - rc) - (pr - rr)
  mean = lambda x: jnp.sum(jnp.where(valid, x, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
  return loss, {"loss": loss,
                "reward_accuracy": mean((h > 0).astype(jnp.float32)),
                "reward_margin": mean(beta * h),
                "chosen_reward": mean(chosen_reward),
                "rejected_reward": mean(rejected_reward),
                "policy_chosen_logps": mean(pc),
                "policy_rejected_logps": mean(pr)}


def aggregation(config: ml_collections.ConfigDict) -> str:
  """How a response's token log-probs make its log-prob: "mean" for SimPO and ORPO."""
  return "mean" if config.dpo.loss in REFERENCE_FREE else "sum"


def make_functions(config: ml_collections.ConfigDict, graphdef: Any, shard):
  """(loss_fn, eval_fn): the loss of a pair batch; the eval's per-pair log-probs."""
  chunk = config.logprob_chunk_size or None
  logps = shard(functools.partial(pair_log_probs, graphdef, ld_alpha=config.dpo.ld_alpha,
                                  wpo=config.dpo.wpo, chunk_size=chunk,
                                  aggregation=aggregation(config)))

  def policy_logps(params, batch):
    return logps(params, batch["chosen_tokens"], batch["chosen_mask"],
                 batch["rejected_tokens"], batch["rejected_mask"], batch["prompt_lengths"])

  def loss_fn(params, batch, key):
    del key
    pc, pr, weights = policy_logps(params, batch)
    return preference_loss(config, pc, pr, batch["reference_chosen_logps"],
                           batch["reference_rejected_logps"], batch["valid"], weights)

  def eval_fn(params, batch):
    pc, pr, weights = policy_logps(params, batch)
    return pc, pr, (jnp.ones_like(pc) if weights is None else weights)

  return loss_fn, eval_fn


class Reference:
  """The frozen reference policy: its params on the host, where they came from, and (once
  placed) a copy on the training mesh.

  The SFT run of `workdir` (default: config.dpo.reference_workdir), else the pretrained
  checkpoint of config.pretrained.checkpoint."""

  def __init__(self, config: ml_collections.ConfigDict, policy: model_lib.PolicyModel,
               workdir: str | None = None):
    self.config = config
    self.policy = policy
    self.workdir = config.dpo.reference_workdir if workdir is None else workdir
    self._params = None
    self._placed = None
    self.source = f"sft run {os.path.abspath(self.workdir)}" if self.workdir else (
        f"pretrained {config.pretrained.checkpoint}")

  def load_params(self) -> Any:
    """The host params of the source (restored or loaded)."""
    if self.workdir:
      run = restore_lib.restore_run(self.workdir, make_task=sft.make_task)
      self.step = run.step
      return run.params
    from rmjax.checkpoints import hf_decoder  # noqa: PLC0415
    from rmjax.tasks.reward_model import pretrained  # noqa: PLC0415
    ckpt = pretrained.open_checkpoint(self.config.pretrained.checkpoint)
    return jax.device_get(hf_decoder.load_decoder_params(
        ckpt.hf_config, ckpt.tensors, config=self.policy.model_config)[2])

  @property
  def params(self) -> Any:
    """Host params (restored or loaded on first use)."""
    if self._params is None:
      self._params = self.load_params()
    return self._params

  def placed(self, like: Any) -> Any:
    """The params on the mesh, in the shardings of `like` (the policy's params)."""
    if self._placed is None:
      self._placed = jax.device_put(self.params, jax.tree.map(lambda x: x.sharding, like))
    return self._placed


def check_reference_run(config: ml_collections.ConfigDict, policy: model_lib.PolicyModel,
                        workdir: str | None = None) -> None:
  """The SFT run of `workdir` (default: dpo.reference_workdir) has this config's model and
  tokenizer."""
  workdir = config.dpo.reference_workdir if workdir is None else workdir
  if not workdir:
    return
  ref_config = restore_lib.read_run_config(workdir)
  ref_policy = model_lib.build_policy_model(ref_config)
  if ref_config.data.tokenizer != config.data.tokenizer:
    raise ValueError(f"the reference run {workdir!r} was trained with data.tokenizer="
                     f"{ref_config.data.tokenizer!r}; this run has {config.data.tokenizer!r}")
  ref_model, model = ref_policy.model_config.to_dict(), policy.model_config.to_dict()
  if ref_model["vocab_size"] != model["vocab_size"]:
    raise ValueError(f"the reference ({workdir}) has a vocabulary of "
                     f"{ref_model['vocab_size']} tokens, the policy {model['vocab_size']}: "
                     "a policy and its reference must share one vocabulary")
  diff = sorted(k for k in model if ref_model.get(k) != model[k])
  if diff:
    raise ValueError(f"the reference ({workdir}) and the policy differ in model fields "
                     f"{[(k, ref_model.get(k), model[k]) for k in diff]}; the policy starts "
                     "from the reference, so set config.model (and pretrained) to the SFT run's")


def reference_log_probs(config: ml_collections.ConfigDict, reference: Reference,
                        dataset: rm_data.PreferenceDataset, workdir: str
                        ) -> tuple[np.ndarray, np.ndarray]:
  """float32 [N] log pi_ref of the chosen and rejected responses, computed once per
  (reference, tokens, ld_alpha) and cached as ``<workdir>/reference_logps-<key>.npz``."""
  arrays = dataset.arrays
  digest = hashlib.sha256(reference.source.encode())
  digest.update(f"{config.dpo.ld_alpha} {aggregation(config)}".encode())
  for name in ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask",
               "prompt_lengths"):
    digest.update(np.ascontiguousarray(arrays[name]).tobytes())
  path = os.path.join(workdir, f"reference_logps-{dataset.name}-{digest.hexdigest()[:16]}.npz")
  if os.path.exists(path):
    cached = np.load(path)
    return cached["chosen"], cached["rejected"]
  graphdef = jax.eval_shape(reference.policy.init_params, jax.random.key(0))[0]
  fn = jax.jit(functools.partial(pair_log_probs, graphdef, ld_alpha=config.dpo.ld_alpha,
                                 wpo=False, aggregation=aggregation(config)))
  params = jax.device_put(reference.params)
  chosen, rejected = [], []
  for indices, valid in rm_data.eval_index_batches(dataset.num_examples,
                                                   config.eval.batch_size):
    batch = dataset.gather(indices, valid)
    pc, pr, _ = fn(params, *(batch[k] for k in PAIR_FIELDS[:5]))
    chosen.append(np.asarray(pc)[valid])
    rejected.append(np.asarray(pr)[valid])
  chosen = np.concatenate(chosen).astype(np.float32)
  rejected = np.concatenate(rejected).astype(np.float32)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    np.savez(path, chosen=chosen, rejected=rejected)
  return chosen, rejected


def load_data(config: ml_collections.ConfigDict, reference: Reference, workdir: str
              ) -> TaskData:
  """The pairs with the reference's log-probs, and the held-out prompts."""
  loaded = data_lib.load_policy_data(config, "dpo")
  datasets = {}
  for dataset in (loaded.train, loaded.eval):
    chosen, rejected = reference_log_probs(config, reference, dataset, workdir)
    arrays = dict(dataset.arrays, reference_chosen_logps=chosen,
                  reference_rejected_logps=rejected)
    datasets[dataset.name] = rm_data.PreferenceDataset(arrays, name=dataset.name,
                                                       pad_id=dataset.pad_id)
  info = dict(loaded.info, reference=reference.source)
  return TaskData(datasets["train"],
                  sft.PolicyEvalData(datasets["eval"], loaded.prompts, loaded.world), info)


def evaluate(config: ml_collections.ConfigDict, reference: Reference, cache: dict, eval_fn,
             params, eval_data: sft.PolicyEvalData, place
             ) -> tuple[dict[str, Any], dict[str, Any]]:
  """The pair metrics of the held-out pairs, then the samples' (`sampling_eval`)."""
  examples = eval_data.examples
  columns: dict[str, list[np.ndarray]] = {"pc": [], "pr": [], "w": []}
  for indices, valid in rm_data.eval_index_batches(examples.num_examples,
                                                   config.eval.batch_size):
    pc, pr, w = eval_fn(params, place(examples, indices, valid))
    for name, value in (("pc", pc), ("pr", pr), ("w", w)):
      columns[name].append(np.asarray(value)[valid])
  pc, pr, w = (np.concatenate(columns[k]) for k in ("pc", "pr", "w"))
  arrays = examples.arrays
  _, pair_metrics = preference_loss(
      config, jnp.asarray(pc), jnp.asarray(pr), jnp.asarray(arrays["reference_chosen_logps"]),
      jnp.asarray(arrays["reference_rejected_logps"]), jnp.ones(len(pc), bool),
      jnp.asarray(w) if config.dpo.wpo else None)
  metrics: dict[str, Any] = {k: float(v) for k, v in pair_metrics.items()}
  metrics["num_pairs"] = int(len(pc))

  # Samples of the policy and of the reference on the held-out prompts.
  run, eos, tokenizer = cache["generate"], cache["eos"], cache["tokenizer"]
  key = jax.random.key(config.generation.seed)
  batch_size = config.generation.batch_size
  samples = sampling_eval.sample(run, params, eval_data.prompts, key, batch_size=batch_size)
  ref_params = reference.placed(params)
  metrics.update(sampling_eval.sample_metrics(samples, eos))
  ref_logps = cache["reference_logps"](ref_params, samples["tokens"], samples["mask"])
  metrics["kl_to_reference"] = sampling_eval.kl_estimate(samples["log_probs"].sum(1),
                                                         np.asarray(ref_logps))
  if eval_data.world is not None:
    if "reference_texts" not in cache:  # The reference is frozen: its samples, once.
      ref_samples = sampling_eval.sample(run, ref_params, eval_data.prompts, key,
                                         batch_size=batch_size)
      cache["reference_texts"] = sampling_eval.decode_responses(tokenizer, ref_samples, eos)
    texts = sampling_eval.decode_responses(tokenizer, samples, eos)
    ref_texts = cache["reference_texts"]
    metrics.update(sampling_eval.world_metrics(eval_data.world, eval_data.prompts.texts,
                                               texts, ref_texts, "reference"))
  return metrics, {}


def write_plots(workdir: str, final_eval: dict[str, Any], arrays: dict[str, Any]) -> None:
  """curves.png: the loss, implicit-reward accuracy and margin, the samples' true reward and
  KL to the reference."""
  del final_eval, arrays
  report_lib.plot_metrics(workdir, [
      ("Loss", [("train", "loss"), ("eval", "loss")]),
      ("Implicit reward", [("train", "reward_accuracy"), ("eval", "reward_accuracy"),
                           ("eval", "reward_margin")]),
      ("Samples", [("eval", "true_reward"), ("eval", "reference_true_reward"),
                   ("eval", "win_rate_vs_reference"), ("eval", "kl_to_reference")])])


def make_task(config: ml_collections.ConfigDict) -> Task:
  """The DPO task of `config` (`configs/dpo.py`)."""
  check_config(config)
  policy = model_lib.build_policy_model(config)
  check_reference_run(config, policy)
  reference = Reference(config, policy)
  tokenizer = rm_data.make_tokenizer(config.data.tokenizer)
  cache: dict[str, Any] = {"tokenizer": tokenizer,
                           "eos": sampling_eval.end_ids(tokenizer, config.data.chat_template)}
  functions = functools.partial(make_functions, config)

  def make_eval(graphdef, shard):
    cache["generate"] = sft.sharded_generate(config, policy, graphdef, tokenizer)

    cache["reference_logps"] = sampling_eval.sample_log_prob_fn(config, graphdef)
    return functions(graphdef, shard)[1]

  def load_params(rng, shardings):
    del rng
    return jax.device_put(reference.params, shardings)

  return Task(
      name=f"dpo/{config.dpo.loss}",
      init_params=policy.init_params,
      param_specs=policy.param_specs,
      make_loss=lambda graphdef, shard: functions(graphdef, shard)[0],
      make_eval=make_eval,
      load_data=functools.partial(load_data, config, reference),
      evaluate=functools.partial(evaluate, config, reference, cache),
      batch_fields=PAIR_FIELDS,
      token_mask_fields=("chosen_mask", "rejected_mask"),
      length_axes={f: -1 for f in PAIR_FIELDS[:4]},
      write_plots=write_plots,
      flops_per_token=models.flops_per_token(policy.model_config, config.data.max_len),
      report={"task": "dpo", "loss": config.dpo.loss, "beta": config.dpo.beta,
              "reference": reference.source},
      load_params=load_params,
      batch_layout=lambda n: rm_data.batch_layout(PAIR_FIELDS, n, config.data.max_len))
