r"""Length buckets against padding to max_len: wall time and final metrics of whole runs.

  python -m benchmarks.length_buckets                               # every case below
  python -m benchmarks.length_buckets --cases hh_rlhf --hh_steps 50

Each case trains the same job back to back with ``data.length_buckets`` empty (every batch
padded to max_len) and with buckets (--repeats times each, interleaved; the fastest run of
each is shown), and prints a table: steps, the widths the batches were cut to (per dataset,
with counts), the share of the training batches' padded positions the buckets removed, the
training time (the trainer's step meter), the run's wall time, the load average around each
run (the CPU may be shared), the held-out accuracy and loss, and the largest difference of
any final eval metric between the two runs ("exact" when every metric is bitwise equal).
Where no padding was removed the two runs compute the same programs on the same arrays, and
any speed-up shown is the machine's noise.

Cases:
  default_24    configs/reward_model.py (synthetic, 2 x 128 d model, max_len 24)
  default_160   the same with --config.data.max_len=160 (sequences are still <= 19 tokens)
  hh_rlhf       configs/reward_model.py:hh_rlhf (HH-RLHF harmless-base, bytes, max_len 384)

Real data is read from the preset's path, or from $RMJAX_SHARED_DIR/data/... when set.
"""

import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags

_CASES = flags.DEFINE_list("cases", ["default_24", "default_160", "hh_rlhf"], "Cases to run.")
_DEFAULT_STEPS = flags.DEFINE_integer("default_steps", 100, "Steps of the default cases.")
_HH_STEPS = flags.DEFINE_integer("hh_steps", 50, "Steps of the hh_rlhf case.")
_BUCKETS = flags.DEFINE_string("buckets", "", "Buckets of the bucketed runs (default: the "
                               "preset's, or multiple:8 / multiple:64).")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Runs of each variant, interleaved (padded, "
                                "bucketed, padded, ...); the table shows the fastest.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the rows as JSON here.")


_COLUMNS = ["case", "buckets", "max_len", "steps", "widths used", "padding removed", "train s",
            "speed-up", "wall s", "load before/after", "eval accuracy", "eval loss",
            "metric change"]


def _config(case: str, steps: int, buckets: str | None = None):
  """The case's config for `steps` steps; `buckets` replaces the preset's (None: keep)."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import reward_model  # pylint: disable=g-import-not-at-top

  preset = "hh_rlhf" if case == "hh_rlhf" else "default"
  config = reward_model.get_config(preset)
  if case == "default_160":
    config.data.max_len = 160
  shared = os.environ.get("RMJAX_SHARED_DIR")
  if shared and preset == "hh_rlhf":
    config.data.path = os.path.join(shared, "data", "hh_rlhf", "harmless-base-test.jsonl.gz")
    config.eval.hhh_path = os.path.join(shared, "data", "hhh_alignment", "hhh_alignment.jsonl")
  config.train.update(num_steps=steps, eval_every=steps, checkpoint_every=steps,
                      log_every=min(config.train.log_every, steps), progress_bar=False,
                      tensorboard=False)
  if buckets is not None:
    config.data.length_buckets = buckets
  return config


def _run(config) -> tuple[dict, dict]:
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top

  load_before = os.getloadavg()[0]
  with tempfile.TemporaryDirectory(prefix="rmjax_buckets_") as workdir:
    start = time.perf_counter()
    report = rm_task.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
  steps, batch = report["steps"], report["batch_size"]
  train_widths = report.get("length_buckets", {}).get("widths_used", {}).get("train", {})
  cut = sum(int(w) * n for w, n in train_widths.items()) / max(sum(train_widths.values()), 1)
  row = {
      "buckets": config.data.length_buckets or "off (max_len)",
      "max_len": config.data.max_len,
      "steps": steps,
      "widths used": json.dumps(report.get("length_buckets", {}).get("widths_used", {}) or
                                {"all": config.data.max_len}).replace('"', ""),
      "padding removed": (f"{1 - cut / config.data.max_len:.0%}" if train_widths else "0%"),
      "train s": round(steps * batch / report["train_examples_per_s"], 1),
      "wall s": round(wall, 1),
      "load before/after": f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
      "eval accuracy": round(report["final_eval"]["accuracy"], 4),
      "eval loss": round(report["final_eval"]["loss"], 5),
  }
  return row, report["final_eval"]


def _largest_difference(a: dict, b: dict) -> str:
  diffs = {k: abs(float(a[k]) - float(b[k])) for k in a
           if isinstance(a[k], (int, float)) and k in b}
  if all(float(a[k]) == float(b[k]) for k in diffs):
    return "exact"
  key = max(diffs, key=diffs.get)
  return f"{diffs[key]:.2e} ({key})"


def main(argv):
  del argv
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import common  # pylint: disable=g-import-not-at-top

  start, load = time.perf_counter(), os.getloadavg()
  rows = []
  for case in _CASES.value:
    steps = _HH_STEPS.value if case == "hh_rlhf" else _DEFAULT_STEPS.value
    buckets = _BUCKETS.value or _config(case, steps).data.length_buckets
    runs = {"padded": [], "cut": []}
    for _ in range(_REPEATS.value):
      runs["padded"].append(_run(_config(case, steps, "")))
      runs["cut"].append(_run(_config(case, steps, buckets)))
    fastest = lambda name: min(runs[name], key=lambda run: run[0]["train s"])
    (padded, padded_eval), (cut, cut_eval) = fastest("padded"), fastest("cut")
    for name in runs:  # Every repeat of a variant must give the same metrics.
      assert all(run[1] == runs[name][0][1] for run in runs[name]), name
    cut["metric change"] = _largest_difference(padded_eval, cut_eval)
    cut["speed-up"] = f"{padded['train s'] / cut['train s']:.2f}x"
    rows += [{"case": case, **padded}, {"case": case, **cut}]
    print(common.markdown_table(rows[-2:], _COLUMNS), flush=True)
  header = common.run_header(load, start)
  print("\n" + json.dumps(header))
  print(common.markdown_table(rows, _COLUMNS))
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
