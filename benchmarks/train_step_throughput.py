r"""Tokens per second of the reward-model training step (forward, BT loss, backward, AdamW).

  python -m benchmarks.train_step_throughput                      # default + smoke presets
  python -m benchmarks.train_step_throughput --presets default --batch_sizes 32,64,128

Prints a table (machine, backend, jax version, shapes, median step time over repeats after a
warm-up, tokens/s, model FLOP/s, peak host memory) and writes it as JSON with --json_out.
Tokens counted are padded tokens (2 x batch x max_len per step: chosen and rejected).
"""

import json
import os
import platform
import resource
import statistics
import sys
import time

from absl import app
from absl import flags
import jax

_PRESETS = flags.DEFINE_list("presets", ["smoke", "default"], "configs/reward_model.py presets.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", [], "Batch sizes (pairs); default: the preset's.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
_STEPS = flags.DEFINE_integer("steps_per_repeat", 10, "Steps per timed repeat.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the table as JSON here.")


def _measure(config, batch_size):
  from rmjax import models

  from benchmarks import common

  train_step, state, batches, model_config, _ = common.build_step(config, batch_size,
                                                                   _STEPS.value)
  state, metrics = train_step(state, batches[0])  # Compile and warm up.
  jax.block_until_ready(metrics)
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for batch in batches:
      state, metrics = train_step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - start) / len(batches))
  step_s = statistics.median(times)
  tokens = 2 * batch_size * config.data.max_len
  return {
      "preset": config.name, "batch_pairs": batch_size, "max_len": config.data.max_len,
      "params": models.count_params(state.params), "median_step_ms": 1e3 * step_s,
      "tokens_per_s": tokens / step_s, "pairs_per_s": batch_size / step_s,
      "model_gflop_per_s": tokens / step_s * models.flops_per_token(
          model_config, config.data.max_len) / 1e9,
  }


def main(argv):
  del argv
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import reward_model
  rows = []
  for preset in _PRESETS.value:
    base = reward_model.get_config(preset)
    for batch_size in [int(b) for b in _BATCH_SIZES.value] or [base.train.batch_size]:
      rows.append(_measure(reward_model.get_config(preset), batch_size))
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  header = {"machine": f"{platform.machine()} {os.cpu_count()} cores",
            "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "jax": jax.__version__, "peak_host_mib": round(peak_mib)}
  print(" | ".join(f"{k}: {v}" for k, v in header.items()))
  cols = ["preset", "batch_pairs", "max_len", "params", "median_step_ms", "tokens_per_s",
          "pairs_per_s", "model_gflop_per_s"]
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for row in rows:
    print("| " + " | ".join(f"{row[c]:,.1f}" if isinstance(row[c], float) else f"{row[c]:,}"
                            if isinstance(row[c], int) else str(row[c]) for c in cols) + " |")
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
