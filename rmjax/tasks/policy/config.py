"""Configs of the policy tasks (`configs/sft.py`, `configs/dpo.py`, `configs/rl.py` call
`get_config`; the rl task's presets are described in configs/rl.py).

Presets:
  default    the synthetic policy world (`rmjax.data.synthetic_policy`), a 2-layer d=128
             byte-level policy from scratch: SFT about 2 minutes, DPO about 2 minutes on a
             2-core CPU (DPO first trains its SFT reference when none is given).
  smoke      seconds; used by the tests.
  hh_rlhf    SmolLM2-135M-Instruct (ChatML) on an HH-RLHF file from ../shared/data
             (harmless-base; `--config.data.path` for helpful-base), held-out prompts;
             a short run on a CPU: the reference is the pretrained model itself.
  pod        documented, not runnable here: a ~1.3B policy at 2048 tokens on a 4 x 16 x 4
             mesh (data x fsdp x tensor), bfloat16 compute.
Mesh presets (`rmjax.parallel.MESH_PRESETS`) combine as in configs/reward_model.py:
`:smoke,fsdp`.
"""

from __future__ import annotations

import os

import ml_collections

from rmjax.data import default_data_config
from rmjax.data import synthetic_policy
from rmjax.parallel import MESH_PRESETS
from rmjax.train import run_config
from rmjax.tasks.reward_model.pretrained import default_pretrained_config

PRESETS = ("default", "smoke", "hh_rlhf", "pod")
_SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), os.pardir, "shared", "data")
HH_RLHF_FILE = os.path.normpath(os.path.join(_SHARED_DATA, "hh_rlhf",
                                             "harmless-base-test.jsonl.gz"))


def _helpful_and_harmless(rewards: ml_collections.ConfigDict) -> None:
  """rewards.sources = a helpful and a harmless reward model (their workdirs on the command
  line: rewards.sources.helpful.workdir, rewards.sources.harmless.workdir), in that order."""
  from rmjax.tasks.policy import rewards as rewards_lib  # noqa: PLC0415  (imports the tasks)
  rewards.sources = ml_collections.ConfigDict({
      "helpful": rewards_lib.source_config("reward_model", workdir=""),
      "harmless": rewards_lib.source_config("reward_model", workdir="")})
  rewards.source_order = "helpful,harmless"


def default_dpo_config() -> dict:
  """config.dpo: loss ("sigmoid" = DPO; any name of `rmjax.tasks.policy.dpo.loss_names()`:
  `PAIRED_LOSSES` and the reference-free "simpo" and "orpo"), beta (0.1), options
  (the loss's other keyword arguments, e.g. label_smoothing for "robust", divergence and
  alpha for "f_divergence"), wpo (False), ld_alpha (1.0 = off), reference_workdir ("" = the
  pretrained checkpoint, or for synthetic data an SFT run made first by the experiment),
  reference_preset (the configs/sft.py preset of that run)."""
  return dict(loss="sigmoid", beta=0.1, options=ml_collections.ConfigDict(), wpo=False,
              ld_alpha=1.0, reference_workdir="", reference_preset="default")


def rl_sections(preset: str) -> dict:
  """config.rl and config.rewards of the rl task (`rmjax.tasks.policy.rl`,
  `rmjax.tasks.policy.rewards`) for `preset`."""
  from rmjax.tasks.policy import rl as rl_lib  # noqa: PLC0415  (imports flax)

  rewards_lib = rl_lib.rewards_lib
  rl = ml_collections.ConfigDict(rl_lib.default_rl_config())
  rewards = ml_collections.ConfigDict(rewards_lib.default_rewards_config())
  if preset == "smoke":
    rl.update(group_size=4, reference_preset="smoke")
  elif preset == "default":
    # A learned reward model of the synthetic world (configs/reward_model.py:policy_world);
    # experiments/train_policy_rl.py trains it first when no workdir is given.
    rewards.sources = ml_collections.ConfigDict(
        {"rm": rewards_lib.source_config("reward_model", workdir="")})
    rewards.source_order = "rm"
    rl.update(group_size=8, epochs=2, minibatch_size=64, kl_coef=0.05)
  elif preset == "hh_rlhf":
    # The helpful and harmless reward models (workdirs on the command line: rewards.sources.
    # helpful.workdir, rewards.sources.harmless.workdir), summed.
    _helpful_and_harmless(rewards)
    rl.update(group_size=4, epochs=1, minibatch_size=0, kl_coef=0.05)
  elif preset == "pod":
    _helpful_and_harmless(rewards)
    rl.update(group_size=16, epochs=2, minibatch_size=512)
  return dict(rl=rl, rewards=rewards)


def get_config(task: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The `task` ("sft", "dpo" or "rl") config of `arg` = "preset[,mesh]"."""
  parts = [p for p in (arg or "default").split(",") if p]
  presets = [p for p in parts if p in PRESETS]
  meshes = [p for p in parts if p in MESH_PRESETS]
  unknown = [p for p in parts if p not in PRESETS and p not in MESH_PRESETS]
  if unknown or len(presets) > 1 or len(meshes) > 1:
    raise ValueError(f"configs/{task}.py: unknown preset {arg!r}; expected preset[,mesh] with "
                     f"preset in {PRESETS} and mesh in {tuple(MESH_PRESETS)}")
  preset = presets[0] if presets else "default"
  config = ml_collections.ConfigDict()
  config.task = task
  config.name = f"{task}_{preset}" + (f"_{meshes[0]}" if meshes else "")
  config.seed = 0
  config.data_seed = 0

  config.data = default_data_config()
  for key in ("format", "attributes", "on_malformed", "eval_path", "split_by",
              "tfds_data_dir", "synthetic"):
    del config.data[key]
  config.data.synthetic = ml_collections.ConfigDict(dict(
      synthetic_policy.default_policy_world_config(), seed=0, num_train=16384, num_eval=1024))
  # BOS + prompt (<= 5) + response (<= 12) + EOS = 19 tokens; sampling adds up to 14.
  config.data.max_len = 24
  config.data.max_prompt_len = 8
  # Real data: the first max_records training / max_eval_records eval records (0 = all).
  config.data.max_records = 0
  config.data.max_eval_records = 0

  config.model = ml_collections.ConfigDict(dict(
      vocab_size=259, d_model=128, num_layers=2, num_heads=4, d_ff=344, lm_head="tied",
      dtype="float32", param_dtype="float32",
      # Full-sequence attention: "reference" (einsum, the tests' reference) or "dot_product"
      # (jax.nn.dot_product_attention; see rmjax.models.TransformerConfig.attention).
      attention="reference",
      # The blocks as one scan with each layer's weights gathered inside it under FSDP
      # (scan_layers), and what the backward pass recomputes (remat: "none", "full",
      # "save_dots", "offload_dots"); rmjax.models.layer_scan. Same values either way.
      scan_layers=False, remat="none"))
  # Token log-probs over vocabulary chunks of this size (0 = whole vocabulary at once).
  config.logprob_chunk_size = 0
  config.pretrained = ml_collections.ConfigDict(default_pretrained_config())
  config.optim = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=50,
      end_lr_ratio=0.05, weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-8, momentum=0.9,
      grad_clip_norm=1.0))
  config.train = ml_collections.ConfigDict(dict(
      num_steps=1000, batch_size=64, log_every=25, eval_every=250, checkpoint_every=250,
      progress_bar=True, tensorboard=True))
  config.eval = ml_collections.ConfigDict(dict(batch_size=256))
  # Sampling at evaluation (rmjax.generation): one response per held-out prompt.
  config.generation = ml_collections.ConfigDict(dict(
      max_new_tokens=14, temperature=1.0, top_k=0, top_p=1.0, num_eval_prompts=512,
      batch_size=128, seed=0))
  config.checkpoint = ml_collections.ConfigDict(dict(max_to_keep=2, async_save=True))
  config.mesh = run_config.mesh_config()
  # Multi-process runs (rmjax.parallel.initialize_distributed).
  config.distributed = run_config.distributed_config()
  # Compile for a TPU slice instead of training (rmjax.train.dry_run), e.g. v5e-256.
  config.dry_run = run_config.dry_run_config()
  if task == "dpo":
    config.dpo = ml_collections.ConfigDict(default_dpo_config())
    config.data.synthetic.num_train = 8192
    config.optim.update(learning_rate=1e-4, warmup_steps=20, weight_decay=0.0)
    config.train.update(num_steps=400, eval_every=100, checkpoint_every=100)
  if task == "rl":
    # B = 16 prompts x G = 8 samples per step; the learning-rate schedule counts optimiser
    # updates (rl.epochs x N / rl.minibatch_size per step).
    config.update(rl_sections(preset))
    config.optim.update(learning_rate=1e-4, schedule="constant", warmup_steps=0,
                        weight_decay=0.0)
    config.train.update(num_steps=150, batch_size=16, log_every=10, eval_every=50,
                        checkpoint_every=50)
    config.generation.update(num_eval_prompts=256, batch_size=128)

  if preset == "smoke":
    config.data.synthetic.update(num_train=256, num_eval=64)
    config.model.update(d_model=32, num_layers=1, num_heads=2, d_ff=64)
    config.optim.warmup_steps = 2
    config.train.update(num_steps=12, batch_size=16, log_every=4, eval_every=6,
                        checkpoint_every=6, progress_bar=False, tensorboard=False)
    config.eval.batch_size = 32
    config.generation.update(num_eval_prompts=16, batch_size=16)
    if task == "dpo":
      config.dpo.reference_preset = "smoke"
    if task == "rl":
      config.train.update(num_steps=4, batch_size=8, log_every=2, eval_every=4,
                          checkpoint_every=2)
      config.generation.update(max_new_tokens=6, num_eval_prompts=16, batch_size=8)
  elif preset == "hh_rlhf":
    # Sized for a CPU: 64 training and 32 eval records, 10 steps of 4 (documented times in
    # the README); drop max_records / max_eval_records and raise num_steps on an accelerator.
    config.data.update(source="hh_rlhf", path=HH_RLHF_FILE, tokenizer="smollm2",
                       chat_template="chatml_smollm2", max_len=256, max_prompt_len=160,
                       eval_fraction=0.1, max_records=64, max_eval_records=32)
    config.pretrained.checkpoint = "smollm2"
    config.optim.update(learning_rate=5e-6 if task == "dpo" else 1e-5, warmup_steps=2,
                        weight_decay=0.0)
    config.train.update(num_steps=10, batch_size=4, log_every=2, eval_every=10,
                        checkpoint_every=10)
    config.eval.batch_size = 8
    config.generation.update(max_new_tokens=48, num_eval_prompts=8, batch_size=8)
  elif preset == "pod":
    config.data.update(source="hh_rlhf", max_len=2048, max_prompt_len=1536)
    config.model.update(vocab_size=49152, d_model=2048, num_layers=24, num_heads=16,
                        d_ff=5632, dtype="bfloat16")
    config.logprob_chunk_size = 8192
    config.optim.update(learning_rate=1e-6, warmup_steps=100, weight_decay=0.0)
    config.train.update(num_steps=5000, batch_size=256, eval_every=500, checkpoint_every=500,
                        progress_bar=False)
    config.eval.batch_size = 256
    config.generation.update(max_new_tokens=256, num_eval_prompts=1024, batch_size=256)
    config.mesh.shape.update(data=4, fsdp=16, tensor=4)
    # The layer scan with full remat (dry runs on v5e-256, per device of 16 GiB): SFT 5.00
    # GiB instead of 13.87, DPO 9.35 instead of 15.07, the RL update 10.13 instead of 19.20
    # (which does not fit); the steps compile 2-3x faster (one block instead of 24).
    config.model.update(scan_layers=True, remat="full")
  if task == "rl" and preset == "hh_rlhf":
    # A few RL steps on a CPU: 4 prompts x 4 samples of up to 32 tokens per step.
    config.train.update(num_steps=4, log_every=1, eval_every=4, checkpoint_every=2)
    config.generation.update(max_new_tokens=32, num_eval_prompts=8, batch_size=8)
  if task == "rl" and preset == "pod":
    config.optim.update(learning_rate=1e-6, schedule="warmup_cosine", warmup_steps=100)
  if meshes:
    config.mesh.shape.update(MESH_PRESETS[meshes[0]])
  return config

