"""pi_0 of the DPO and RL runs on synthetic data: an SFT run made first, in the run's workdir.

  ref_dir = reference.train_reference(config, workdir, config.rl.reference_preset)
"""

import logging
import os

import ml_collections

from rmjax.tasks.policy import sft
from rmjax.tasks.policy.config import get_config
from rmjax.train import trainer


def train_reference(config: ml_collections.ConfigDict, workdir: str, preset: str) -> str:
  """The SFT run of configs/sft.py:<preset> with `config`'s model, mesh, world seed and
  sequence length (the reference's positions are the policy's), trained, resumed or reused
  in ``<workdir>/reference_sft``; returns its workdir."""
  sft_config = get_config("sft", preset)
  for section in ("model", "mesh"):
    sft_config[section] = config[section]
  sft_config.data.synthetic.update(world_seed=config.data.synthetic.world_seed)
  sft_config.data.max_len = config.data.max_len
  ref_dir = os.path.join(workdir, "reference_sft")
  logging.info("training the SFT reference pi_0 in %s", ref_dir)
  trainer.train_and_evaluate(sft_config, ref_dir, sft.make_task(sft_config))
  return ref_dir
