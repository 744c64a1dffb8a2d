r"""Where the reward-model training step's time goes: XLA ops by kind, forward vs step.

  python -m benchmarks.train_step_profile                       # default preset, 24 tokens
  python -m benchmarks.train_step_profile --max_lens 24,128,384 --batch_size 32

Builds the training job's own step (`benchmarks.common.build_step`: the
task's loss, AdamW, the metrics) and its forward pass alone (the rewards of a batch), times
both (median of --repeats), then records --profile_steps steps with `jax.profiler.trace` and
sums the device time of the XLA ops in the trace by kind:

  matmul      dot fusions (oneDNN / YNNPACK on CPU, cuBLAS on GPU) and plain dots
  copy        copy / transpose fusions (layout changes XLA inserts, mostly around the
              backward matmuls)
  elementwise every other fusion (activations, softmax, norms, RoPE, the optimiser update,
              reductions)

and lists the --top costliest ops with the operation they come from (the HLO metadata's
op_name: `jvp(...)` is the forward, `transpose(jvp(...))` the backward). The CPU may be
shared: the header gives the load average; shares are more robust than absolute times.
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax

_PRESET = flags.DEFINE_string("preset", "default", "configs/reward_model.py preset.")
_MAX_LENS = flags.DEFINE_list("max_lens", ["24"], "Sequence lengths (data.max_len).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Pairs per step (default: the preset's).")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed runs of the step and of the forward.")
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 5, "Steps recorded by the profiler.")
_TOP = flags.DEFINE_integer("top", 8, "Costliest ops listed per length.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the tables as JSON here.")


def op_kind(name: str) -> str | None:
  """The kind of an XLA op from its trace name; None for events that are not XLA ops."""
  if name.startswith(("ThunkExecutor", "$", "Pjit", "PjitFunction")) or " " in name:
    return None
  if name.startswith("ynn_") or "dot" in name or "gemm" in name or "cublas" in name:
    return "matmul"
  if "copy" in name or "transpose" in name:
    return "copy"
  return "elementwise"


def _op_sources(hlo_text: str) -> dict[str, str]:
  """{instruction name: its op_name metadata} from a compiled module's text."""
  pattern = re.compile(r"^\s*%?([\w.\-]+) = .*?op_name=\"([^\"]+)\"", re.M)
  return {m.group(1): m.group(2) for m in pattern.finditer(hlo_text)}


def profile(config, batch_size: int) -> dict:
  """One length: step and forward times, device time by op kind, the costliest ops."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from rmjax import models  # pylint: disable=g-import-not-at-top

  step = common.build_step(config, batch_size, num_batches=1)
  batch = step.batches[0]
  graphdef = models.init_reward_model(step.model_config, jax.random.PRNGKey(0))[0]
  apply = models.make_reward_apply(graphdef)
  forward = jax.jit(lambda params, b: jnp.mean(
      apply(params, {"tokens": b["chosen_tokens"], "mask": b["chosen_mask"]})
      - apply(params, {"tokens": b["rejected_tokens"], "mask": b["rejected_mask"]})))
  holder = {"state": step.state}

  def run_step():
    holder["state"], metrics = step.train_step(holder["state"], batch)
    return metrics

  jax.block_until_ready(run_step())
  jax.block_until_ready(forward(holder["state"].params, batch))
  step_ms = 1e3 * common.median_seconds(run_step, _REPEATS.value)
  forward_ms = 1e3 * common.median_seconds(
      lambda: forward(holder["state"].params, batch), _REPEATS.value)
  sources = _op_sources(step.train_step.lower(holder["state"], batch).compile().as_text())
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(_PROFILE_STEPS.value):
        jax.block_until_ready(run_step())
    (path,) = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    with gzip.open(path) as f:
      events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  per_op = collections.Counter()
  for event in events:
    if op_kind(event["name"]):
      per_op[event["name"]] += event.get("dur", 0) / 1e3 / _PROFILE_STEPS.value  # ms/step
  by_kind = collections.Counter()
  for name, ms in per_op.items():
    by_kind[op_kind(name)] += ms
  total = sum(by_kind.values()) or 1.0
  return {
      "max_len": config.data.max_len, "batch_pairs": batch_size,
      "step_ms": round(step_ms, 1), "forward_ms": round(forward_ms, 1),
      "step / forward": round(step_ms / forward_ms, 1),
      **{f"{kind} %": round(100 * by_kind[kind] / total) for kind in
         ("matmul", "copy", "elementwise")},
      "top_ops": [{"op": name, "ms_per_step": round(ms, 2),
                   "source": sources.get(name, "")} for name, ms in per_op.most_common(_TOP.value)],
  }


def main(argv):
  del argv
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from configs import reward_model  # pylint: disable=g-import-not-at-top

  load, start = os.getloadavg(), time.perf_counter()
  rows = []
  for max_len in [int(x) for x in _MAX_LENS.value]:
    config = reward_model.get_config(_PRESET.value)
    config.data.max_len = max_len
    rows.append(profile(config, _BATCH_SIZE.value or config.train.batch_size))
    for op in rows[-1]["top_ops"]:
      print(f"  L={max_len}: {op['ms_per_step']:7.2f} ms  {op['op']:<28} {op['source']}")
  header = common.run_header(load, start, preset=_PRESET.value)
  table = [{k: v for k, v in r.items() if k != "top_ops"} for r in rows]
  common.print_table_and_save(header, table, "")
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
