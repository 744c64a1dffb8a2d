r"""Online RL of a policy against rewards (configs/rl.py, rmjax.tasks.policy.rl).

  python -m experiments.train_policy_rl --workdir runs/rl_default         # synthetic world
  python -m experiments.train_policy_rl --config configs/rl.py:smoke --workdir /tmp/rl_smoke
  python -m experiments.train_policy_rl --config configs/rl.py --config.rl.algorithm=rloo

Re-running a command on the same --workdir resumes from its latest checkpoint. On synthetic
data the experiment first makes what the config leaves unnamed, each in its own workdir
(trained, resumed or reused there):
  * pi_0, the reference and starting policy: without rl.reference_workdir (and without a
    pretrained checkpoint) an SFT run, configs/sft.py:<rl.reference_preset>, in
    <workdir>/reference_sft;
  * every "reward_model" source without a workdir: the reward model of
    configs/reward_model.py:policy_world (`:policy_world,smoke` for the smoke preset) in
    <workdir>/reward_model.
"""

import importlib.util
import os

from absl import app
from absl import flags
from absl import logging

from rmjax.train import config_overrides

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG_FILE = os.path.join(_ROOT, "configs", "rl.py")


def train_reward_model(config, workdir: str) -> str:
  """The reward model of configs/reward_model.py:policy_world[,smoke] in
  <workdir>/reward_model; returns its workdir."""
  from rmjax import train  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location(
      "reward_model_config", os.path.join(_ROOT, "configs", "reward_model.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  smoke = config.name.startswith("rl_smoke")
  rm_config = module.get_config("policy_world,smoke" if smoke else "policy_world")
  rm_config.data.synthetic.update(world_seed=config.data.synthetic.world_seed)
  rm_dir = os.path.join(workdir, "reward_model")
  logging.info("training the reward model in %s", rm_dir)
  train.train_and_evaluate(rm_config, rm_dir, reward_model.make_task(rm_config))
  return rm_dir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join("runs", config.name)
  from rmjax import parallel  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import policy  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.policy import reference  # pylint: disable=g-import-not-at-top
  from rmjax.train import cli  # pylint: disable=g-import-not-at-top

  def run():
    parallel.initialize_distributed(config)
    # A dry run trains nothing first (its own step cannot be dry-run: the trainer says why).
    synthetic = config.data.source == "synthetic" and not config.dry_run.target
    if synthetic and not config.rl.reference_workdir and not config.pretrained.checkpoint:
      config.rl.reference_workdir = reference.train_reference(
          config, workdir, config.rl.reference_preset)
    sources = config.rewards.sources
    missing = [name for name in config.rewards.source_order.split(",")
               if sources[name].kind == "reward_model" and not sources[name].workdir]
    if missing and synthetic:
      rm_dir = train_reward_model(config, workdir)
      for name in missing:
        sources[name].workdir = rm_dir
    return policy.train_and_evaluate(config, workdir)

  cli.run_experiment(run, workdir)


if __name__ == "__main__":
  config_overrides.define_config_and_workdir_flags(
      _CONFIG_FILE, lock_config=False, workdir_default="runs/<config.name> under the cwd")
  app.run(main, flags_parser=config_overrides.flags_parser_rejecting_unknown_keys(_CONFIG_FILE))
