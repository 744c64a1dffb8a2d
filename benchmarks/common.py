"""What every benchmark table's header says about the run: machine, backend, load, time."""

import os
import platform
import time


def run_header(load_before: tuple[float, ...], start: float, **extra) -> dict:
  """The header of a benchmark table.

  Args:
    load_before: `os.getloadavg()` taken before the measurements (other processes on the
      machine distort timings; the header shows the load before and after).
    start: `time.perf_counter()` at the start of the run (gives wall_s).
    **extra: further header fields, after the common ones.
  """
  import jax  # pylint: disable=g-import-not-at-top

  return {
      "machine": f"{platform.machine()} {os.cpu_count()} cores",
      "backend": jax.default_backend(),
      "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
      "load_avg_before": " ".join(f"{x:.2f}" for x in load_before),
      "load_avg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
      **extra,
      "wall_s": round(time.perf_counter() - start, 1),
  }


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
  """A Markdown table of `rows` (dicts) over `columns` (default: the first row's keys); a
  missing cell is empty.

  >>> print(markdown_table([{"a": 1, "b": 2.5}]))
  | a | b |
  |---|---|
  | 1 | 2.5 |
  """
  columns = list(rows[0]) if columns is None else columns
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
  return "\n".join(lines)
