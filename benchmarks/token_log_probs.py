r"""Token log-probs from logits: plain vs vocabulary-chunked, value and gradient.

  python -m benchmarks.token_log_probs                       # V = 32k and 128k
  python -m benchmarks.token_log_probs --dtypes bfloat16 --chunk_sizes 2048,8192 \
      --json_out /tmp/token_log_probs.json

For each logits dtype, vocabulary size V and implementation (the plain
`token_log_probs` and `chunked_token_log_probs` at each chunk size) it times
`jit(value_and_grad(sum(logp)))` on [B, T, V] logits: the median (and min) of
--repeats runs after a compile and a warm-up run. Memory, two ways:

  * temp_mib: XLA's compiled memory analysis, the temporary buffers of the
    compiled value-and-gradient (inputs and outputs excluded: the logits and
    their gradient are the same for both implementations);
  * run_rss_growth_mib: how far the process's resident memory rose above its
    level once the inputs were built (peak RSS during compile, warm-up and
    timed runs, minus the RSS before them; Linux's peak counter is reset
    after the inputs are built). It includes the [B, T, V] gradient output,
    the same for both implementations. Each row runs in a fresh process
    (--isolate, the default) so that rows do not share allocator state.

Ratios are against the plain row of the same dtype and V: time_ratio =
time / plain time, temp_ratio = plain temp / temp. The table header carries
the machine, backend, jax version and the load average before and after the
run (other processes on the machine distort timings: re-run on a quiet
machine before quoting them).
"""

import json
import multiprocessing
import os
import statistics
import time

from absl import app
from absl import flags

from benchmarks import common

_VOCAB_SIZES = flags.DEFINE_list("vocab_sizes", ["32768", "131072"],
                                 "Vocabulary sizes V.")
_BATCH = flags.DEFINE_integer("batch", 4, "Sequences B.")
_LENGTH = flags.DEFINE_integer("length", 256, "Tokens per sequence T.")
_CHUNK_SIZES = flags.DEFINE_list("chunk_sizes", ["4096"],
                                 "Vocabulary chunk sizes of the chunked version.")
_DTYPES = flags.DEFINE_list("dtypes", ["bfloat16", "float32"], "Logits dtypes.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs (median reported).")
_ISOLATE = flags.DEFINE_bool(
    "isolate", True, "Run each row in a fresh process (clean peak RSS).")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the table as JSON here.")


def _measure_row(dtype_name: str, vocab: int, batch: int, length: int,
                 chunk_size: int, repeats: int) -> dict:
  """Times one implementation (chunk_size 0 = plain); returns a table row."""
  import jax
  import jax.numpy as jnp
  from rmjax.losses import log_probs

  dtype = jnp.dtype(dtype_name)

  @jax.jit
  def make_inputs():
    # Deterministic pseudo-random logits in [-4, 4), computed by one fused
    # loop straight into the output: no [B, T, V] temporary is allocated and
    # freed before the memory baseline (the allocator would hand that memory
    # to the measured run without the RSS growing).
    shape = (batch, length, vocab)
    b, t, v = (jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
               for axis in range(3))
    position = b * length + t
    bits = (v * jnp.uint32(2654435761)) ^ (position * jnp.uint32(2246822519))
    bits = bits ^ (bits >> 15)
    logits = (bits & 0xFFFF).astype(jnp.float32) / 8192.0 - 4.0
    row = jnp.arange(batch * length, dtype=jnp.uint32).reshape(batch, length)
    targets = ((row * jnp.uint32(2654435761)) % vocab).astype(jnp.int32)
    return logits.astype(dtype), targets

  logits, targets = jax.block_until_ready(make_inputs())
  baseline_kib = _reset_peak_rss()
  if chunk_size:
    fn = lambda x, t: log_probs.chunked_token_log_probs(
        x, t, chunk_size=chunk_size)
  else:
    fn = log_probs.token_log_probs
  step = jax.jit(jax.value_and_grad(lambda x, t: jnp.sum(fn(x, t))))
  compiled = step.lower(logits, targets).compile()
  analysis = compiled.memory_analysis()
  jax.block_until_ready(compiled(logits, targets))  # Warm-up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(logits, targets))
    times.append(time.perf_counter() - start)
  row = {
      "dtype": dtype_name, "vocab": vocab, "batch": batch, "length": length,
      "impl": f"chunked[{chunk_size}]" if chunk_size else "plain",
      "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
      "temp_mib": analysis.temp_size_in_bytes / 2**20,
      "logits_mib": batch * length * vocab * dtype.itemsize / 2**20,
      "run_rss_growth_mib": (_peak_rss_kib() - baseline_kib) / 1024,
  }
  if jax.default_backend() != "cpu":  # The device's own peak (inputs included).
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      row["peak_device_mib"] = stats["peak_bytes_in_use"] / 2**20
  return row


def _status_kib(field: str) -> int:
  """A memory field of /proc/self/status (Linux), in KiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise KeyError(field)


def _reset_peak_rss() -> int:
  """Resets the peak-RSS counter (Linux clear_refs 5); returns RSS in KiB.

  Where the counter cannot be reset (no clear_refs), returns the peak so far, so that the
  growth is still a lower bound.
  """
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    return _status_kib("VmHWM")
  return _status_kib("VmRSS")


def _peak_rss_kib() -> int:
  """Peak RSS since the last `_reset_peak_rss`, in KiB."""
  return _status_kib("VmHWM")


def _run_row(args):
  if not _ISOLATE.value:
    return _measure_row(*args)
  # A fresh interpreter per row ("spawn", not "fork": jax is not fork-safe).
  with multiprocessing.get_context("spawn").Pool(1) as pool:
    return pool.apply(_measure_row, args)


def main(argv):
  del argv
  import jax
  load_before = os.getloadavg()
  start = time.perf_counter()
  rows = []
  for dtype_name in _DTYPES.value:
    for vocab in [int(v) for v in _VOCAB_SIZES.value]:
      group = []
      for chunk_size in [0] + [int(c) for c in _CHUNK_SIZES.value]:
        group.append(_run_row((dtype_name, vocab, _BATCH.value, _LENGTH.value,
                               chunk_size, _REPEATS.value)))
      plain = group[0]
      for row in group:
        row["time_ratio"] = row["median_ms"] / plain["median_ms"]
        row["temp_ratio"] = plain["temp_mib"] / max(row["temp_mib"], 1e-9)
      rows.extend(group)
  header = common.run_header(load_before, start, isolated_rows=_ISOLATE.value)
  print(" | ".join(f"{k}: {v}" for k, v in header.items()))
  cols = ["dtype", "vocab", "batch", "length", "impl", "median_ms", "min_ms",
          "time_ratio", "temp_mib", "temp_ratio", "logits_mib",
          "run_rss_growth_mib"]
  if any("peak_device_mib" in row for row in rows):
    cols.append("peak_device_mib")
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for row in rows:
    cells = []
    for c in cols:
      v = row.get(c, "")
      if isinstance(v, float):
        cells.append(f"{v:,.2f}" if c.endswith("ratio") else f"{v:,.1f}")
      else:
        cells.append(f"{v:,}" if isinstance(v, int) else str(v))
    print("| " + " | ".join(cells) + " |")
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
