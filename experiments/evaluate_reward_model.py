r"""Evaluate a reward model on the field's benchmarks: report.md, results.json, plots.

  python -m experiments.evaluate_reward_model --config configs/evaluate.py \
      --config.model.workdir=runs/hh_helpful_smollm2 --workdir runs/eval_helpful_smollm2

The model is a trained run (`--config.model.workdir`), several runs scored as an ensemble
(`--config.model.workdirs=a,b,c`), or a Hugging Face *ForSequenceClassification directory
(`--config.model.checkpoint`); the sets and their files are in configs/evaluate.py. With
`--config.dry_run.target=v5e-256` (a TPU slice) it compiles the scoring function for that
slice from the run's config.json instead, and writes dry_run.json / dry_run.md.
"""

import os
import sys

from absl import app
from absl import flags

from rmjax.train import config_overrides

_CONFIG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", "evaluate.py")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join("runs", f"evaluate_{config.name}")
  from rmjax.tasks.reward_model import benchmark_eval  # pylint: disable=g-import-not-at-top
  from rmjax.train.dry_run import TpuCompilerUnavailable  # pylint: disable=g-import-not-at-top
  dry_run = bool(config.dry_run.target)
  try:
    if dry_run:
      benchmark_eval.dry_run(config, workdir)
    else:
      benchmark_eval.evaluate(config, workdir)
  except (FileNotFoundError, ValueError, KeyError, TpuCompilerUnavailable) as e:
    if os.environ.get("RMJAX_TRACEBACK"):
      raise
    print(f"error: {e}\n(set RMJAX_TRACEBACK=1 for the traceback)", file=sys.stderr)
    sys.exit(2)
  print(open(os.path.join(workdir, "dry_run.md" if dry_run else "report.md")).read())


if __name__ == "__main__":
  config_overrides.define_config_and_workdir_flags(
      _CONFIG_FILE, lock_config=True, workdir_default="runs/evaluate_<preset> under the cwd")
  app.run(main, flags_parser=config_overrides.flags_parser_rejecting_unknown_keys(_CONFIG_FILE))
