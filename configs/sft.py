r"""Supervised fine-tuning of a policy: config and presets (rmjax.tasks.policy.config).

  python -m experiments.train_policy --config configs/sft.py                  # synthetic world
  python -m experiments.train_policy --config configs/sft.py:smoke --workdir /tmp/sft_smoke
  python -m experiments.train_policy --config configs/sft.py:hh_rlhf --workdir /tmp/sft_hh

Presets: default (the synthetic policy world: the model learns pi_world, reported against its
exact entropy), smoke, hh_rlhf (SmolLM2-135M-Instruct on HH-RLHF chosen replies), pod
(documented). Mesh presets combine: `:smoke,fsdp`. Override any field with --config.a.b=value.
"""

from rmjax.tasks.policy.config import get_config as _get_config


def get_config(arg=None):
  return _get_config("sft", arg)
