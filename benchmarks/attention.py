r"""Attention implementations side by side: `TransformerConfig.attention` "reference" (einsum)
vs "dot_product" (`jax.nn.dot_product_attention`) and, on a TPU, "tpu_splash" (the Pallas
splash kernel; elsewhere it runs interpreted: its errors are meaningful, its times are not),
value and gradient of a reward model.

  python -m benchmarks.attention                                  # the default grid
  python -m benchmarks.attention --cases 128x64,1024x8 --dtypes float32 --json_out out.json
  python -m benchmarks.attention --implementations reference,dot_product,tpu_splash  # TPU

For every (sequence length L x batch B, compute dtype) the same model (--d_model, --layers,
--heads; half the rows padded to lengths between L/2 and L) is built with each
implementation from the same seed; `jax.jit(jax.value_and_grad(mean(reward^2)))` is compiled
once, run once, then timed --repeats times alternating the implementations (so a shared
machine's load hits all alike). Reports the median times, compile times, for each
implementation after the first the relative difference of its value from the first's and
its largest gradient difference relative to the largest gradient entry, and whether the
compiled programs call cuDNN.
"""

import os
import statistics
import time

from absl import app
from absl import flags

_CASES = flags.DEFINE_list("cases", ["128x64", "1024x8", "4096x2"], "LxB: length x batch.")
_DTYPES = flags.DEFINE_list("dtypes", ["bfloat16", "float32"], "Compute dtypes.")
_D_MODEL = flags.DEFINE_integer("d_model", 1024, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 4, "Transformer blocks.")
_HEADS = flags.DEFINE_integer("heads", 16, "Attention heads.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed runs per implementation.")
_IMPLEMENTATIONS = flags.DEFINE_list(
    "implementations", ["reference", "dot_product"],
    "TransformerConfig.attention values; the first is what the others are compared with.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the table as JSON here.")


def measure(length: int, batch: int, dtype: str, d_model: int, layers: int, heads: int,
            repeats: int, implementations: list[str]) -> dict:
  """One row: the implementations on the same model, batch and seed."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rmjax import models  # pylint: disable=g-import-not-at-top

  tokens = jax.random.randint(jax.random.key(1), (batch, length), 3, 259)
  lengths = jnp.linspace(length // 2, length, batch).astype(jnp.int32)
  batch_arrays = {"tokens": tokens, "mask": jnp.arange(length)[None, :] < lengths[:, None]}
  runs = {}
  for impl in implementations:
    config = models.TransformerConfig(d_model=d_model, num_layers=layers, num_heads=heads,
                                      max_len=length, attention=impl, dtype=dtype)
    graphdef, params = models.init_reward_model(config, jax.random.key(0))
    apply = models.make_reward_apply(graphdef)
    start = time.perf_counter()
    step = jax.jit(jax.value_and_grad(lambda p, b: jnp.mean(apply(p, b) ** 2))).lower(
        params, batch_arrays).compile()
    out = jax.block_until_ready(step(params, batch_arrays))
    runs[impl] = dict(step=step, params=params, out=out, times=[],
                      compile_s=time.perf_counter() - start,
                      cudnn="cudnn" in (step.as_text() or "").lower())
  for _ in range(repeats):
    for run in runs.values():
      start = time.perf_counter()
      jax.block_until_ready(run["step"](run["params"], batch_arrays))
      run["times"].append(time.perf_counter() - start)
  row = {"dtype": dtype, "L x B": f"{length} x {batch}"}
  for impl, run in runs.items():
    row[f"{impl} ms"] = round(1e3 * statistics.median(run["times"]), 2)
  for impl, run in runs.items():
    row[f"{impl} compile s"] = round(run["compile_s"], 1)
  value_a, grad_a = runs[implementations[0]]["out"]
  for impl in implementations[1:]:
    value_b, grad_b = runs[impl]["out"]
    grad_err = max(
        float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
        / (float(jnp.max(jnp.abs(a.astype(jnp.float32)))) + 1e-30)
        for a, b in zip(jax.tree.leaves(grad_a), jax.tree.leaves(grad_b)))
    suffix = "" if len(implementations) == 2 else f" ({impl})"
    row[f"value rel diff{suffix}"] = (
        f"{float(abs(value_a - value_b) / (abs(value_a) + 1e-30)):.1e}")
    row[f"grad max diff / max grad{suffix}"] = f"{grad_err:.1e}"
  row["cuDNN in program"] = " / ".join(str(runs[i]["cudnn"]) for i in implementations)
  return row


def main(argv):
  del argv
  from benchmarks import common  # pylint: disable=g-import-not-at-top

  load, start = os.getloadavg(), time.perf_counter()
  rows = []
  for dtype in _DTYPES.value:
    for case in _CASES.value:
      length, batch = (int(x) for x in case.split("x"))
      rows.append(measure(length, batch, dtype, _D_MODEL.value, _LAYERS.value, _HEADS.value,
                          _REPEATS.value, _IMPLEMENTATIONS.value))
      print(common.markdown_table(rows[-1:]), flush=True)
  header = common.run_header(load, start, d_model=_D_MODEL.value, layers=_LAYERS.value,
                             heads=_HEADS.value)
  common.print_table_and_save(header, rows, _JSON_OUT.value)


if __name__ == "__main__":
  app.run(main)
