r"""Pairwise (Bradley-Terry) reward model: config and presets.

Launch (from the repo root):
  python -m experiments.train_reward_model                                  # default
  python -m experiments.train_reward_model --config configs/reward_model.py:smoke \
      --workdir /tmp/rm_smoke
  python -m experiments.train_reward_model --config configs/reward_model.py:hh_rlhf \
      --workdir /tmp/rm_hh
  python -m experiments.train_reward_model --config configs/reward_model.py:pod \
      --config.data.path=/data/prefs/train.jsonl --config.data.eval_path=/data/prefs/eval.jsonl \
      --workdir gs://bucket/rm_pod

Presets (the argument after the colon):
  (none)   the embedded default: synthetic preference data with a known Bayes-optimal accuracy,
           a 2-layer d=128 transformer; a few minutes on a 2-core laptop CPU.
  smoke    seconds; used by the tests.
  hh_rlhf  the real HH-RLHF harmless-base test file from ../shared/data (90/10 split).
  pod      a ~1.3B-parameter backbone on a 256-chip mesh (data x fsdp x tensor = 4 x 16 x 4),
           bfloat16 compute, 2048 tokens; documented here, it cannot run on a laptop.
Families (prefix a preset with one, e.g. `:gpm,smoke`): bt (default), scaled_bt (BT scaled by
the annotated preference strength), regression (5 HelpSteer2 attributes, MSE; scored by the
HelpSteer2 weights), listwise (Plackett-Luce on 4 ranked responses per prompt), gpm (general
preference model), mixture (mixture of BT heads with a router), ensemble (4 BT members), vpl
(variational preference learning on user episodes). scaled_bt, regression, listwise and vpl
need data the synthetic generator makes (strengths, ratings, ranked lists, users); they
combine with default and smoke.
A teacher ensemble's preference strength (Secrets of RLHF II) drives label flipping, smoothing
or an adaptive margin: --config.strength.teacher_workdir=<ensemble run>
--config.strength.use=flip|smoothing|adaptive_margin (rmjax.train.strength).
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
Override any field with --config.a.b=value; unknown keys are rejected.
"""

import os

import ml_collections

from rmjax.data import default_data_config
from rmjax.models import DEFAULT_LOGICAL_AXIS_RULES
from rmjax.parallel import MESH_PRESETS

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HH_RLHF_FILE = os.path.join(os.path.dirname(_REPO_ROOT), "shared", "data", "hh_rlhf",
                            "harmless-base-test.jsonl.gz")
PRESETS = ("default", "smoke", "hh_rlhf", "pod")
# Model families (heads + losses + data formats); combine with a preset: `:gpm,smoke`.
FAMILIES = ("bt", "scaled_bt", "regression", "listwise", "gpm", "mixture", "ensemble", "vpl")
# Families whose data is generated (synthetic only: strengths, ratings, lists, users).
_SYNTHETIC_ONLY = ("scaled_bt", "regression", "listwise", "vpl")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of `arg` = "[family,]preset[,mesh]" (None or 'default': the embedded default).

  family: bt (Bradley-Terry, scalar head; the default), scaled_bt (-m log sigma(Delta) with
  m the pair's strength 0..3, ties dropped; HelpSteer2-Preference, Wang et al. 2024),
  regression (multi-attribute head, masked MSE on 5 ratings, pairs ranked by the HelpSteer2
  score; Wang et al. 2024), listwise (Plackett-Luce NLL of rankings of 4 responses; set
  loss.name=all_pairs_bradley_terry for BT over all ordered pairs, with loss.list_weighting
  uniform | label_gap | lipo_lambda), gpm (general preference model, 2k-dim embedding head,
  Zhang et al. 2024), mixture (mixture of K BT heads with a router, MiCRo), ensemble (4 BT
  models from different seeds trained together with vmap; eval on their mean logit; Coste et
  al. 2024), vpl (latent-conditioned reward and a posterior encoder over 8 context pairs of
  the user, beta = 0.01; Poddar et al. 2024). preset: default, smoke, hh_rlhf, pod. mesh:
  one of `rmjax.parallel.MESH_PRESETS` (data_parallel, fsdp, fsdp_tensor), which replaces
  config.mesh.shape; without it the preset's own mesh. E.g.
  `configs/reward_model.py:gpm,smoke` or `configs/reward_model.py:smoke,fsdp_tensor`.
  """
  parts = [p for p in (arg or "default").split(",") if p]
  families = [p for p in parts if p in FAMILIES]
  presets = [p for p in parts if p in PRESETS]
  meshes = [p for p in parts if p in MESH_PRESETS]
  unknown = [p for p in parts if p not in FAMILIES and p not in PRESETS and p not in MESH_PRESETS]
  if unknown or len(families) > 1 or len(presets) > 1 or len(meshes) > 1:
    raise ValueError(f"configs/reward_model.py: unknown preset {arg!r}; expected "
                     f"[family,]preset[,mesh] with family in {FAMILIES}, preset in {PRESETS} "
                     f"and mesh in {tuple(MESH_PRESETS)}")
  family = families[0] if families else "bt"
  preset = presets[0] if presets else "default"
  mesh = meshes[0] if meshes else None
  if family in _SYNTHETIC_ONLY and preset not in ("default", "smoke"):
    raise ValueError(f"configs/reward_model.py: family {family!r} trains on generated data "
                     f"(strengths, ratings, lists or users); combine it with 'default' or "
                     f"'smoke', not {preset!r}")
  config = ml_collections.ConfigDict()
  config.name = preset if family == "bt" else f"{family}_{preset}"
  if mesh:
    config.name += f"_{mesh}"
  config.seed = 0  # Model initialisation.
  config.data_seed = 0  # Order of the training batches.

  config.data = default_data_config()
  # Synthetic sequences are at most 1 + 5 + 12 + 1 = 19 tokens (rmjax.data.synthetic).
  config.data.max_len = 24
  config.data.max_prompt_len = 8

  config.model = ml_collections.ConfigDict(dict(
      vocab_size=259, d_model=128, num_layers=2, num_heads=4, d_ff=344,
      dtype="float32", param_dtype="float32"))

  # The head on the backbone and its settings (rmjax.models.HEADS).
  config.head = ml_collections.ConfigDict(dict(name="scalar", config=ml_collections.ConfigDict()))

  config.loss = ml_collections.ConfigDict(dict(
      name="bradley_terry", use_margin=False, label_smoothing=0.0,
      center_rewards_coef=0.0, l2_reward_coef=0.0, temperature=0.1, normalize=False,
      bt_weight=0.0, list_weighting="uniform", kl_beta=0.01))

  # A teacher ensemble's preference strength (rmjax.train.strength); BT only.
  config.strength = ml_collections.ConfigDict(dict(
      teacher_workdir="", use="none", flip_fraction=0.2, max_smoothing=0.45))

  # num_members > 0: an ensemble of that many models (different seeds), trained together.
  # member_batches: member m trains on slice m of every batch (different data orders)
  # instead of all members on the whole batch.
  config.ensemble = ml_collections.ConfigDict(dict(num_members=0, member_batches=False))

  config.optim = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=50,
      end_lr_ratio=0.05, weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-8, momentum=0.9,
      grad_clip_norm=1.0))

  config.train = ml_collections.ConfigDict(dict(
      num_steps=1000, batch_size=64, log_every=25, eval_every=200, checkpoint_every=200,
      progress_bar=True, tensorboard=True))
  config.eval = ml_collections.ConfigDict(dict(batch_size=256, num_bins=10))
  config.checkpoint = ml_collections.ConfigDict(dict(max_to_keep=3, async_save=True))
  config.mesh = ml_collections.ConfigDict(dict(
      shape=ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)),
      logical_axis_rules=tuple(DEFAULT_LOGICAL_AXIS_RULES)))
  # Multi-process runs (rmjax.parallel.initialize_distributed): empty = one process, or a
  # SLURM / Cloud TPU cluster detected from the environment; auto=True forces detection.
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=0, process_id=-1, auto=False,
      initialization_timeout=300))

  if preset == "smoke":
    config.data.synthetic.num_train = 512
    config.data.synthetic.num_eval = 128
    config.model.update(d_model=32, num_layers=1, num_heads=2, d_ff=64)
    config.optim.warmup_steps = 5
    config.train.update(num_steps=40, batch_size=16, log_every=5, eval_every=20,
                        checkpoint_every=10, progress_bar=False)
    config.eval.batch_size = 64
  elif preset == "hh_rlhf":
    config.data.source = "hh_rlhf"
    config.data.path = HH_RLHF_FILE
    config.data.max_len = 384
    config.data.max_prompt_len = 256
    config.data.eval_fraction = 0.1
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

  if family == "gpm":
    config.head.name = "general_preference"
    config.head.config = ml_collections.ConfigDict(dict(embedding_dim=4))
    config.loss.update(name="general_preference", temperature=0.1)
  elif family == "mixture":
    config.head.name = "mixture"
    config.head.config = ml_collections.ConfigDict(dict(num_components=2))
    config.loss.name = "mixture_bradley_terry"
  elif family == "ensemble":
    config.ensemble.num_members = 4
  elif family == "scaled_bt":
    config.data.synthetic.margin = "strength"
    config.loss.name = "scaled_bradley_terry"
  elif family == "regression":
    config.data.attributes = True
    config.data.synthetic.attribute_missing_prob = 0.1
    config.head.name = "multi_attribute"
    config.head.config = ml_collections.ConfigDict(dict(num_attributes=5))
    config.loss.update(name="attribute_regression", bt_weight=0.0)
  elif family == "listwise":
    config.data.format = "lists"
    config.data.synthetic.list_size = 4
    # A list holds 4 sequences (and 6 ordered pairs) where a pair holds 2: half as many lists
    # keep the data's and each step's tokens those of the pair presets.
    config.data.synthetic.num_train //= 2
    config.train.batch_size //= 2
    config.loss.name = "plackett_luce"
  elif family == "vpl":
    config.data.format = "user_episodes"
    config.data.synthetic.update(num_user_groups=2, context_pairs=8, query_pairs=8)
    # num_train / num_eval count user episodes of 16 pairs.
    config.data.synthetic.num_train //= 16
    config.data.synthetic.num_eval //= 16
    # 8 episodes x 16 pairs: twice the sequences of 64 pairs (at least 8: one per device
    # of the tests' simulated mesh).
    config.train.batch_size = max(8, config.train.batch_size // 8)
    config.eval.batch_size = max(8, config.eval.batch_size // 8)
    config.head.name = "latent_conditioned"
    config.head.config = ml_collections.ConfigDict(dict(
        latent_dim=8, encoder=ml_collections.ConfigDict(dict(num_heads=2))))
    config.loss.update(name="vpl", kl_beta=0.01)
    if preset == "smoke":
      config.data.synthetic.update(context_pairs=4, query_pairs=4, num_train=256, num_eval=32)
  if mesh:
    config.mesh.shape.update(MESH_PRESETS[mesh])
  return config
