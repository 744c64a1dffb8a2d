r"""Evaluate a reward model on the field's benchmarks: report.md, results.json, plots.

  python -m experiments.evaluate_reward_model --config configs/evaluate.py \
      --config.model.workdir=runs/hh_helpful_smollm2 --workdir runs/eval_helpful_smollm2

The model is a trained run (`--config.model.workdir`), several runs scored as an ensemble
(`--config.model.workdirs=a,b,c`), or a Hugging Face *ForSequenceClassification directory
(`--config.model.checkpoint`); the sets and their files are in configs/evaluate.py.
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
  try:
    benchmark_eval.evaluate(config, workdir)
  except (FileNotFoundError, ValueError, KeyError) as e:
    if os.environ.get("RMJAX_TRACEBACK"):
      raise
    print(f"error: {e}\n(set RMJAX_TRACEBACK=1 for the traceback)", file=sys.stderr)
    sys.exit(2)
  print(open(os.path.join(workdir, "report.md")).read())


if __name__ == "__main__":
  config_overrides.define_config_and_workdir_flags(
      _CONFIG_FILE, lock_config=True, workdir_default="runs/evaluate_<preset> under the cwd")
  app.run(main, flags_parser=config_overrides.flags_parser_rejecting_unknown_keys(_CONFIG_FILE))
