r"""All-pairs preference loss, value and gradient: naive XLA vs chunked (vs Pallas).

  python -m benchmarks.pairwise_loss                    # the default table (a few minutes)
  python -m benchmarks.pairwise_loss --sizes 1024,8192 --grouped 512x16 --json_out out.json

For every case (N scores, optionally grouped as prompts x responses) and every implementation
of `rmjax.kernels.all_pairs_loss` ("naive" is the [N, N] reference; "chunked" the XLA tile
loop; "pallas_tpu" / "pallas_gpu" where the backend has them), it times
`jax.jit(jax.value_and_grad(loss))`: the median of several runs after a warm-up. Each case
runs in its own child process, so that its peak memory (the child's max RSS, which includes
the ~0.3 GiB of the JAX runtime) is its own; XLA's planned buffer size (arguments + outputs +
temporaries, from the compiled executable's memory analysis) is reported beside it. A naive
case whose planned buffers exceed the `--memory_fraction` of the available memory is not run:
its row says "cannot run: needs X GiB". On a GPU or TPU the available memory is the device's
(its allocator's `bytes_limit`) and the device's peak use is reported too; the parent process
then does not preallocate device memory, which each child needs for itself. The table names
the machine, the backend, the jax version and the load average (the CPU may be shared).

pairs = N^2 for ungrouped cases (every ordered pair is examined) and B * K^2 for B prompts x
K responses (the within-prompt pairs the loss is defined over); Gpairs/s = pairs / time.
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

_SIZES = flags.DEFINE_list("sizes", ["1024", "4096", "8192", "16384", "32768", "65536"],
                           "Ungrouped N (one group).")
_GROUPED = flags.DEFINE_list("grouped", ["512x16", "4096x16"],
                             "Grouped cases as PROMPTSxRESPONSES (sorted group ids).")
_IMPLEMENTATIONS = flags.DEFINE_list(
    "implementations", [], "Implementations; default: naive, chunked and the backend's Pallas "
    "kernel (pallas_tpu on TPU, pallas_gpu on GPU).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs (median reported); 3 when one run "
                                "takes more than a second.")
_BLOCK_SIZE = flags.DEFINE_integer("block_size", 0, "Tile side of the fast paths (0: default).")
_MEMORY_FRACTION = flags.DEFINE_float(
    "memory_fraction", 0.75, "Skip a case whose planned buffers exceed this fraction of the "
    "available memory.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the table as JSON here.")
_CHILD = flags.DEFINE_string("child", "", "Internal: run one case (JSON) and print its row.")

_GIB = float(1 << 30)
# The children's environment: the parent's before it imports jax (see `main`).
_CHILD_ENV = dict(os.environ)


def _available_bytes() -> int:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 1 << 62


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.system()


def _device_memory_stats() -> dict:
  """The first device's allocator statistics ({} on CPU or where there are none)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() == "cpu":
    return {}
  try:
    return jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    return {}


def _run_case(case: dict) -> dict:
  """In the child process: compile, check memory, time; returns the row."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rmjax.kernels import all_pairs_loss  # pylint: disable=g-import-not-at-top

  n, prompts, responses = case["n"], case["prompts"], case["responses"]
  implementation = "reference" if case["implementation"] == "naive" else case["implementation"]
  rng = np.random.default_rng(0)
  scores = jnp.asarray(rng.normal(size=n), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, n), jnp.float32)
  group_ids = (jnp.repeat(jnp.arange(prompts, dtype=jnp.int32), responses) if prompts
               else None)
  block_size = case["block_size"] or None

  def loss(s, y, g):
    return all_pairs_loss(s, y, group_ids=g, implementation=implementation,
                          block_size=block_size)

  fn = jax.jit(jax.value_and_grad(loss))
  start = time.perf_counter()
  compiled = fn.lower(scores, labels, group_ids).compile()
  compile_s = time.perf_counter() - start
  stats = compiled.memory_analysis()
  planned = None
  if stats is not None:
    planned = (stats.temp_size_in_bytes + stats.argument_size_in_bytes
               + stats.output_size_in_bytes)
  row = dict(case, compile_s=compile_s, planned_gib=None if planned is None else planned / _GIB,
             load_avg=os.getloadavg()[0])
  available = _device_memory_stats().get("bytes_limit") or _available_bytes()
  if planned is not None and planned > case["memory_fraction"] * available:
    row["skipped"] = (f"cannot run: needs {planned / _GIB:.1f} GiB "
                      f"(available {available / _GIB:.1f} GiB)")
    return row
  start = time.perf_counter()
  jax.block_until_ready(compiled(scores, labels, group_ids))  # Warm-up.
  warmup_s = time.perf_counter() - start
  repeats = case["repeats"] if warmup_s < 1.0 else min(case["repeats"], 3)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    value, _ = jax.block_until_ready(compiled(scores, labels, group_ids))
    times.append(time.perf_counter() - start)
  median_s = statistics.median(times)
  row.update(median_ms=1e3 * median_s, repeats=repeats, value=float(value),
             gpairs_per_s=case["pairs"] / median_s / 1e9,
             peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _GIB)
  peak_device = _device_memory_stats().get("peak_bytes_in_use")
  if peak_device is not None:
    row["peak_device_gib"] = peak_device / _GIB
  return row


def _cases(backend: str) -> list[dict]:
  implementations = list(_IMPLEMENTATIONS.value)
  if not implementations:
    implementations = ["naive", "chunked"]
    if backend == "tpu":
      implementations.append("pallas_tpu")
    elif backend in ("gpu", "cuda", "rocm"):
      implementations.append("pallas_gpu")
  shapes = [(int(n), 0, 0) for n in _SIZES.value]
  for spec in _GROUPED.value:
    prompts, responses = (int(x) for x in spec.lower().split("x"))
    shapes.append((prompts * responses, prompts, responses))
  cases = []
  for n, prompts, responses in shapes:
    for implementation in implementations:
      cases.append(dict(
          n=n, prompts=prompts, responses=responses, implementation=implementation,
          pairs=prompts * responses * responses if prompts else n * n,
          block_size=_BLOCK_SIZE.value, repeats=_REPEATS.value,
          memory_fraction=_MEMORY_FRACTION.value))
  return cases


def _child_row(case: dict) -> dict:
  repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.pairwise_loss", "--child", json.dumps(case)],
      cwd=repo_root, env=_CHILD_ENV, capture_output=True, text=True, check=False)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  reason = "out of memory (killed)" if proc.returncode in (-9, 137) else (
      proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}")
  return dict(case, skipped=f"failed: {reason}")


def _format(rows: list[dict]) -> list[str]:
  naive = {(r["n"], r["prompts"]): r.get("median_ms") for r in rows
           if r["implementation"] == "naive"}
  cols = ["case", "implementation", "median ms", "Gpairs/s", "speed-up vs naive",
          "peak RSS GiB", "XLA buffers GiB", "compile s", "load avg"]
  device = any("peak_device_gib" in r for r in rows)
  if device:
    cols.append("peak device GiB")
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    case = (f"N={r['n']}" if not r["prompts"]
            else f"N={r['n']} ({r['prompts']} x {r['responses']})")
    planned = "" if r.get("planned_gib") is None else f"{r['planned_gib']:.3f}"
    if "skipped" in r:
      cells = [case, r["implementation"], r["skipped"], "", "", "", planned,
               f"{r.get('compile_s', 0):.1f}", f"{r.get('load_avg', 0):.1f}"]
      if device:
        cells.append("")
    else:
      base = naive.get((r["n"], r["prompts"]))
      speedup = f"{base / r['median_ms']:.1f}x" if base else "-"
      cells = [case, r["implementation"], f"{r['median_ms']:,.1f}", f"{r['gpairs_per_s']:.3f}",
               speedup, f"{r['peak_rss_gib']:.2f}", planned, f"{r['compile_s']:.1f}",
               f"{r['load_avg']:.1f}"]
      if device:
        cells.append(f"{r['peak_device_gib']:.3f}" if "peak_device_gib" in r else "")
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def main(argv):
  del argv
  if _CHILD.value:
    print(json.dumps(_run_case(json.loads(_CHILD.value))))
    return
  # This process only asks for the backend: it must not take the GPU's memory (by default
  # JAX preallocates 75% of it), which every child needs. The children keep _CHILD_ENV.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  import jax  # pylint: disable=g-import-not-at-top
  backend = jax.default_backend()
  header = {"machine": f"{_cpu_model()}, {os.cpu_count()} cores ({platform.machine()})",
            "backend": backend, "device": str(jax.devices()[0].device_kind),
            "jax": jax.__version__, "load_avg_start": round(os.getloadavg()[0], 2),
            "available_gib": round(_available_bytes() / _GIB, 1)}
  if backend != "cpu":
    header["device_bytes_limit_gib"] = round(
        _device_memory_stats().get("bytes_limit", 0) / _GIB, 1)
  print(" | ".join(f"{k}: {v}" for k, v in header.items()), flush=True)
  rows = []
  for case in _cases(backend):
    row = _child_row(case)
    rows.append(row)
    print(_format(rows)[-1], flush=True)
  header["load_avg_end"] = round(os.getloadavg()[0], 2)
  print()
  print(" | ".join(f"{k}: {v}" for k, v in header.items()))
  print("\n".join(_format(rows)))
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
