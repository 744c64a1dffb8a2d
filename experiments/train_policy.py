r"""Train a policy: supervised fine-tuning or direct preference optimisation (config.task).

  python -m experiments.train_policy                                   # SFT, synthetic world
  python -m experiments.train_policy --config configs/dpo.py --workdir runs/dpo_default
  python -m experiments.train_policy --config configs/dpo.py:smoke --workdir /tmp/dpo_smoke

Re-running a command on the same --workdir resumes from its latest checkpoint. A DPO run on
synthetic data without --config.dpo.reference_workdir first trains its reference (SFT,
configs/sft.py:<dpo.reference_preset>) in <workdir>/reference_sft, or reuses it there.
"""

import os

from absl import app
from absl import flags

from rmjax.train import config_overrides

_CONFIG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", "sft.py")


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
    if (config.task == "dpo" and not config.dpo.reference_workdir and not config.dry_run.target
        and not config.pretrained.checkpoint and config.data.source == "synthetic"):
      config.dpo.reference_workdir = reference.train_reference(
          config, workdir, config.dpo.reference_preset)
    return policy.train_and_evaluate(config, workdir)

  cli.run_experiment(run, workdir)


if __name__ == "__main__":
  config_overrides.define_config_and_workdir_flags(
      _CONFIG_FILE, lock_config=False, workdir_default="runs/<config.name> under the cwd")
  app.run(main, flags_parser=config_overrides.flags_parser_rejecting_unknown_keys(_CONFIG_FILE))
