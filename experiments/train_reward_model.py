r"""Train a reward model of any family, evaluate it, checkpoint it.

  python -m experiments.train_reward_model                         # embedded default
  python -m experiments.train_reward_model \
      --config configs/reward_model.py:smoke --workdir /tmp/rm_smoke --config.train.num_steps=50

Re-running a command on the same --workdir resumes from its latest checkpoint.

Multi-process runs: every process runs the same command; `config.distributed` (or the
RMJAX_* environment variables that experiments/launch_local_multihost.py sets, or a SLURM /
Cloud TPU cluster) says how they connect, before any JAX computation:

  python -m experiments.launch_local_multihost --num_processes 2 --devices_per_process 2 -- \
      --config configs/reward_model.py:smoke --workdir /tmp/rm_2proc
"""

import os

from absl import app
from absl import flags

from rmjax.train import config_overrides

_CONFIG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", "reward_model.py")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join("runs", f"reward_model_{config.name}")
  from rmjax import parallel  # pylint: disable=g-import-not-at-top
  from rmjax import train  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.train import cli  # pylint: disable=g-import-not-at-top

  def run():
    # Joins a multi-process run (if configured) before anything touches a device.
    parallel.initialize_distributed(config)
    return train.train_and_evaluate(config, workdir, reward_model.make_task(config))

  cli.run_experiment(run, workdir)  # The report is also in workdir/report.json.


if __name__ == "__main__":
  config_overrides.define_config_and_workdir_flags(
      _CONFIG_FILE, lock_config=True, workdir_default="runs/reward_model_<preset> under the cwd")
  app.run(main, flags_parser=config_overrides.flags_parser_rejecting_unknown_keys(_CONFIG_FILE))
