"""What every training script does around its run: quiet library logs, exit codes, the report.

  def main(argv):
    ...
    cli.run_experiment(lambda: train_and_evaluate(config, workdir), workdir)

Exit status 75 after a SIGTERM (`rmjax.train.Preempted`: the state was checkpointed; run
the same command to resume), 2 with one line for bad input (FileNotFoundError, ValueError,
KeyError, and `rmjax.train.dry_run.TpuCompilerUnavailable`; RMJAX_TRACEBACK=1 shows the
traceback), else 0 after process 0 prints the run's report.md (a dry run, `config.dry_run`:
its dry_run.md).
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import Any, Callable

from absl import logging
import jax

from rmjax.train.dry_run import TpuCompilerUnavailable
from rmjax.train.trainer import Preempted


class QuietLibraries(std_logging.Filter):
  """Keeps orbax's and TFDS's per-save INFO chatter out of the run log (warnings stay)."""

  def filter(self, record):
    noisy = any(part in record.pathname for part in ("orbax", "tensorflow_datasets"))
    return record.levelno >= std_logging.WARNING or not noisy


def run_experiment(run: Callable[[], Any], workdir: str) -> None:
  """Calls `run()` (which trains into `workdir` and returns the report) and exits as the
  module docstring says."""
  logging.get_absl_handler().addFilter(QuietLibraries())
  logging.info("workdir: %s", os.path.abspath(workdir))
  try:
    result = run()
  except Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(75)
  except (FileNotFoundError, ValueError, KeyError, TpuCompilerUnavailable) as e:
    if os.environ.get("RMJAX_TRACEBACK"):
      raise
    print(f"error: {e}\n(set RMJAX_TRACEBACK=1 for the traceback)", file=sys.stderr)
    sys.exit(2)
  if jax.process_index() == 0:  # Process 0 wrote the report.
    dry_run = isinstance(result, dict) and result.get("kind") == "dry_run"
    with open(os.path.join(workdir, "dry_run.md" if dry_run else "report.md")) as f:
      print(f.read())
