r"""Accuracy of every all-pairs loss implementation on the current backend, against float64.

  python -m benchmarks.all_pairs_check                      # on a GPU: the Pallas kernel compiled
  python -m benchmarks.all_pairs_check --sizes 200 --grouped 8x16 --interpret   # CPU smoke check
  python -m benchmarks.all_pairs_check --json_out /tmp/all_pairs_check.json

The tests (tests/test_kernels_all_pairs.py) run the Pallas GPU kernel in interpret mode only;
this script runs it compiled (Triton) on a real GPU, next to the chunked XLA loop and the
[N, N] reference, at sizes the tests do not reach. For each case (N scores, ungrouped or
grouped as prompts x responses with sorted group ids, optionally masked), each pair rule
(weighting x margin rule) and each implementation it computes `jax.value_and_grad` of
`rmjax.kernels.all_pairs_loss` (reduction "mean") and compares value and gradient with an
explicit float64 numpy computation over the same inputs (the LiPO factors are computed once
with `rules.lipo_lambda_factors` and passed to every implementation and to the float64
reference, so that all of them see the same weights):

  value_rel  = |v - v64| / |v64|
  grad_rel   = ||g - g64||_2 / ||g64||_2
  grad_max   = max |g - g64| / max |g64|

A row passes when both relative errors are below --tol (default 1e-4: float32 sums of up to
N^2 terms land far below it) and nothing is NaN. A compiled kernel is also run twice: its sums
have no atomics, so the two results must be bitwise equal ("deterministic"). A compile or run
failure is recorded in the row ("error") with the exception's last lines, and the other rows
still run. Under `--interpret` the Pallas GPU kernel runs in interpret mode (any backend).
"""

import concurrent.futures
import json
import os
import time
import traceback

from absl import app
from absl import flags
import numpy as np

_SIZES = flags.DEFINE_list(
    "sizes", ["3000", "1024", "8192"], "Ungrouped N. One not a multiple of 128 (3000: padded "
    "to 3072, 48 program blocks, not a power of two) is masked and runs fewer rules.")
_GROUPED = flags.DEFINE_list("grouped", ["512x16"], "Grouped cases PROMPTSxRESPONSES (masked).")
_RULES = flags.DEFINE_list(
    "rules", ["uniform:none", "uniform:constant", "label_gap:none", "label_gap:label_gap",
              "lipo_lambda:none", "lipo_lambda:constant"],
    "WEIGHTING:MARGIN_RULE pairs (margin rule none = no margin).")
_SMALL_CASE_RULES = flags.DEFINE_integer(
    "small_case_rules", 2, "Rules run for the masked odd-size case (the first ones of --rules, "
    "then the last): it checks padding, not the rules.")
_BF16 = flags.DEFINE_list("bf16_rules", ["uniform:constant", "lipo_lambda:label_gap"],
                          "Rules also run with bfloat16 scores on the largest cases.")
_IMPLEMENTATIONS = flags.DEFINE_list(
    "implementations", [], "Default: reference, chunked and the backend's Pallas kernel "
    "(pallas_gpu on GPU, pallas_tpu on TPU; pallas_gpu under --interpret).")
_MARGIN = flags.DEFINE_float("margin", 0.3, "The margin of the rules that have one.")
_TOL = flags.DEFINE_float("tol", 1e-4, "Pass threshold on value_rel and grad_rel.")
_INTERPRET = flags.DEFINE_bool("interpret", False, "Run pallas_gpu in interpret mode.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the rows as JSON here.")


def make_case(n: int, prompts: int, masked: bool, seed: int = 0):
  """Scores (with exact ties), labels 0..4, sorted group ids or None, mask or None."""
  rng = np.random.default_rng(seed)
  scores = (2 * rng.normal(size=n)).astype(np.float32)
  scores[: n // 8] = np.round(scores[: n // 8])  # Some exact ties in score.
  labels = rng.integers(0, 5, n).astype(np.float32)
  group_ids = (np.repeat(np.arange(prompts, dtype=np.int32), n // prompts) if prompts else None)
  mask = (rng.random(n) > 0.1) if masked else None
  return scores, labels, group_ids, mask


def float64_loss_and_grad(scores, labels, group_ids, mask, weighting, margin_rule, margin,
                          gain, inv_disc, row_block: int = 512):
  """Mean all-pairs loss and its gradient in float64 (numpy), blocked over winner rows.

  With sorted `group_ids`, only the columns of the groups a row block holds are visited.
  """
  s = np.asarray(scores, np.float64)
  y = np.asarray(labels, np.float64)
  n = s.shape[0]
  valid = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
  g = np.zeros(n, np.int64) if group_ids is None else np.asarray(group_ids, np.int64)
  assert np.all(np.diff(g) >= 0), "groups must be sorted"
  gain = np.asarray(gain, np.float64)
  inv_disc = np.asarray(inv_disc, np.float64)
  total, count, grad = 0.0, 0, np.zeros(n)
  for start in range(0, n, row_block):
    rows = slice(start, min(start + row_block, n))
    lo = np.searchsorted(g, g[rows.start], "left")
    hi = np.searchsorted(g, g[rows.stop - 1], "right")
    cols = slice(lo, hi)
    pref = (valid[rows, None] & valid[None, cols] & (g[rows, None] == g[None, cols])
            & (y[rows, None] > y[None, cols]))
    gap = y[rows, None] - y[None, cols]
    if weighting == "uniform":
      w = 1.0
    elif weighting == "label_gap":
      w = gap
    else:
      w = (np.abs(gain[rows, None] - gain[None, cols])
           * np.abs(inv_disc[rows, None] - inv_disc[None, cols]))
    z = s[rows, None] - s[None, cols]
    if margin_rule == "constant":
      z = z - margin
    elif margin_rule == "label_gap":
      z = z - margin * gap
    loss = np.where(pref, w * np.logaddexp(0.0, -z), 0.0)
    slope = np.where(pref, w * 0.5 * (1 - np.tanh(z / 2)), 0.0)  # w sigmoid(-z)
    total += loss.sum()
    count += int(pref.sum())
    grad[rows] -= slope.sum(axis=1)
    grad[cols] += slope.sum(axis=0)
  norm = max(count, 1)
  return total / norm, grad / norm, count


def _parse_rule(text: str):
  weighting, margin_rule = text.split(":")
  return weighting, None if margin_rule == "none" else margin_rule


def _last_lines(exc: BaseException, lines: int = 8) -> str:
  """The exception's message, without JAX's traceback-filtering notice, on one line."""
  text = [line.strip() for line in str(exc).strip().splitlines()]
  text = [line for line in text if line and not line.startswith("-----")
          and "JAX_TRACEBACK_FILTERING" not in line
          and "removed its internal frames" not in line]
  return " / ".join(text[-lines:])[:1500]


def run_checks(cases, rules_per_case, implementations, *, margin=0.3, tol=1e-4,
               interpret=False, log=print, on_row=None):
  """Runs every (case, rule, dtype, implementation); returns the rows.

  Args:
    cases: list of dicts with n, prompts, responses, masked.
    rules_per_case: function case -> list of (weighting, margin_rule or None, dtype name).
    implementations: implementation names of `all_pairs_loss`.
    margin: the margin of the rules that have one.
    tol: pass threshold on the relative errors.
    interpret: run pallas_gpu in interpret mode.
    log: called with each row's one-line summary.
    on_row: optional, called with each finished row (e.g. to save partial results).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rmjax.kernels import all_pairs_loss  # pylint: disable=g-import-not-at-top
  from rmjax.kernels.all_pairs import rules as rules_lib  # pylint: disable=g-import-not-at-top

  work = []
  for case in cases:
    scores, labels, group_ids, mask = make_case(case["n"], case["prompts"], case["masked"])
    for weighting, margin_rule, dtype_name in rules_per_case(case):
      work.append((case, scores, labels, group_ids, mask, weighting, margin_rule, dtype_name))

  # The float64 references run on host threads (numpy releases the GIL) while the device
  # compiles and runs the implementations.
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)))
  refs, inputs = [], []
  for case, scores, labels, group_ids, mask, weighting, margin_rule, dtype_name in work:
    s = jnp.asarray(scores, dtype_name)
    s32 = np.asarray(s.astype(jnp.float32))  # The scores the loss sees.
    valid = np.ones(case["n"], bool) if mask is None else mask
    gain, inv_disc = jax.jit(rules_lib.lipo_lambda_factors)(
        jnp.asarray(s32), jnp.asarray(labels),
        None if group_ids is None else jnp.asarray(group_ids), jnp.asarray(valid))
    gain, inv_disc = np.asarray(gain), np.asarray(inv_disc)
    inputs.append((s, gain, inv_disc))
    refs.append(pool.submit(float64_loss_and_grad, s32, labels, group_ids, mask, weighting,
                            margin_rule, margin, gain, inv_disc))

  rows = []
  for (case, _, labels, group_ids, mask, weighting, margin_rule, dtype_name), (
      s, gain, inv_disc), ref_future in zip(work, inputs, refs):
    y = jnp.asarray(labels)
    g = None if group_ids is None else jnp.asarray(group_ids)
    m = None if mask is None else jnp.asarray(mask)
    factors = (jnp.asarray(gain), jnp.asarray(inv_disc)) if weighting == "lipo_lambda" else None
    results = {}
    for implementation in implementations:
      row = dict(n=case["n"], prompts=case["prompts"], responses=case["responses"],
                 masked=case["masked"], weighting=weighting, margin_rule=margin_rule or "none",
                 dtype=dtype_name, implementation=implementation)
      kwargs = dict(weighting=weighting, margin=margin if margin_rule else 0.0,
                    margin_rule=margin_rule or "constant", implementation=implementation)
      if implementation == "pallas_gpu" and interpret:
        kwargs["interpret"] = True
      # Every array is an argument: closed-over labels would be constants, and XLA would
      # constant-fold the reference's [N, N] pair masks (20 s of compile at N = 8192 on GPU).
      fn = jax.jit(jax.value_and_grad(
          lambda s, y, g, m, factors, kwargs=kwargs: all_pairs_loss(
              s, y, group_ids=g, mask=m, lipo_factors=factors, **kwargs)))
      args = (s, y, g, m, factors)
      try:
        start = time.perf_counter()
        compiled = fn.lower(*args).compile()
        row["compile_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        value, grad = jax.block_until_ready(compiled(*args))
        row["first_run_s"] = round(time.perf_counter() - start, 4)
        value2, grad2 = jax.block_until_ready(compiled(*args))
        row["deterministic"] = bool(np.array_equal(np.asarray(value), np.asarray(value2))
                                    and np.array_equal(np.asarray(grad), np.asarray(grad2)))
        results[implementation] = (np.float64(value), np.asarray(grad.astype(jnp.float32),
                                                                  np.float64))
      except Exception as e:  # pylint: disable=broad-except
        row["error"] = f"{type(e).__name__}: {_last_lines(e)}"
        row["traceback"] = traceback.format_exc()[-6000:]
      rows.append(row)
    v64, g64, count = ref_future.result()
    for row in rows[-len(implementations):]:
      row["pairs"] = count
      row["value_f64"] = float(v64)
      if "error" in row:
        row["pass"] = False
      else:
        value, grad = results[row["implementation"]]
        row["value"] = float(value)
        row["value_rel"] = float(abs(value - v64) / max(abs(v64), 1e-30))
        row["grad_rel"] = float(np.linalg.norm(grad - g64) / max(np.linalg.norm(g64), 1e-30))
        row["grad_max"] = float(np.max(np.abs(grad - g64)) / max(np.max(np.abs(g64)), 1e-30))
        # A bfloat16 gradient carries 8 bits of mantissa: its own threshold.
        grad_tol = 1e-2 if dtype_name == "bfloat16" else tol
        row["pass"] = bool(np.isfinite(value) and np.all(np.isfinite(grad))
                           and row["value_rel"] < tol and row["grad_rel"] < grad_tol
                           and row["deterministic"])
      log(format_row(row))
      if on_row is not None:
        on_row(row)
  pool.shutdown()
  return rows


def format_row(row: dict) -> str:
  case = (f"N={row['n']}" + (f" ({row['prompts']}x{row['responses']})" if row["prompts"] else "")
          + (" masked" if row["masked"] else ""))
  rule = f"{row['weighting']}/{row['margin_rule']}"
  if "error" in row:
    return f"| {case} | {rule} | {row['dtype']} | {row['implementation']} | ERROR | {row['error']} |"
  return (f"| {case} | {rule} | {row['dtype']} | {row['implementation']} | "
          f"{row['value_rel']:.1e} | {row['grad_rel']:.1e} | {row['grad_max']:.1e} | "
          f"{'yes' if row['deterministic'] else 'NO'} | {row['compile_s']:.1f} | "
          f"{'pass' if row['pass'] else 'FAIL'} |")


HEADER = ("| case | rule | scores | implementation | value rel err | grad rel err (L2) | "
          "grad max err / max | deterministic | compile s | result |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  backend = jax.default_backend()
  implementations = list(_IMPLEMENTATIONS.value)
  if not implementations:
    implementations = ["reference", "chunked"]
    if _INTERPRET.value or backend in ("gpu", "cuda", "rocm"):
      implementations.append("pallas_gpu")
    elif backend == "tpu":
      implementations.append("pallas_tpu")
  rules = [_parse_rule(r) for r in _RULES.value]
  small_rules = (rules[: max(_SMALL_CASE_RULES.value - 1, 0)] + rules[-1:]
                 if _SMALL_CASE_RULES.value else [])
  bf16 = [_parse_rule(r) for r in _BF16.value]
  cases = []
  for n in (int(x) for x in _SIZES.value):
    cases.append(dict(n=n, prompts=0, responses=0, masked=(n % 128 != 0)))
  for spec in _GROUPED.value:
    prompts, responses = (int(x) for x in spec.lower().split("x"))
    cases.append(dict(n=prompts * responses, prompts=prompts, responses=responses, masked=True))
  largest_ungrouped = max((c["n"] for c in cases if not c["prompts"]), default=0)

  def rules_per_case(case):
    chosen = small_rules if case["masked"] and not case["prompts"] else rules
    out = [(w, m, "float32") for w, m in chosen]
    if case["prompts"] or case["n"] == largest_ungrouped:
      out += [(w, m, "bfloat16") for w, m in bf16]
    return out

  from rmjax.kernels.all_pairs import dispatch  # pylint: disable=g-import-not-at-top
  header = {"backend": backend, "device": str(jax.devices()[0].device_kind),
            "jax": jax.__version__, "auto_candidates": dispatch.candidates("auto"),
            "interpret": _INTERPRET.value, "tol": _TOL.value, "margin": _MARGIN.value}
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rmjax.kernels import all_pairs_loss  # pylint: disable=g-import-not-at-top
  s_auto = jnp.linspace(-1.0, 1.0, 1024)
  y_auto = jnp.arange(1024) % 5
  header["auto_traces_pallas_call"] = "pallas_call" in str(jax.make_jaxpr(
      jax.grad(lambda s: all_pairs_loss(s, y_auto)))(s_auto))
  print(" | ".join(f"{k}: {v}" for k, v in header.items()), flush=True)
  print(HEADER, flush=True)
  start = time.perf_counter()
  done = []

  def save(row):  # After every row: a run stopped by a timeout keeps what it measured.
    done.append(row)
    if _JSON_OUT.value:
      with open(_JSON_OUT.value, "w") as f:
        json.dump({"header": header, "rows": done}, f, indent=2)

  rows = run_checks(cases, rules_per_case, implementations, margin=_MARGIN.value,
                    tol=_TOL.value, interpret=_INTERPRET.value,
                    log=lambda line: print(line, flush=True), on_row=save)
  header["wall_s"] = round(time.perf_counter() - start, 1)
  header["passed"] = sum(r["pass"] for r in rows)
  header["failed"] = sum(not r["pass"] for r in rows)
  print(f"all_pairs_check: {header['passed']} passed, {header['failed']} failed, "
        f"{header['wall_s']} s", flush=True)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
