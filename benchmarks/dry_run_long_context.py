r"""Per-device memory of the reward-model pod step at long sequences and under each way of
running the layers, from TPU dry runs.

  python -m benchmarks.dry_run_long_context                       # v5e-256, 2k / 4k / 8k
  python -m benchmarks.dry_run_long_context --lengths 2048 --meshes 4x16x4 \
      --executions unrolled:none,scan:none,scan:save_dots,scan:full,unrolled:full
  python -m benchmarks.dry_run_long_context --target v5p-128 --lengths 2048,8192 \
      --meshes 2x16x2,1x32x2
  python -m benchmarks.dry_run_long_context --lengths 8192 --meshes 4x16x4 \
      --tokens_per_step 524288                                   # 64 pairs of 8k
  python -m benchmarks.dry_run_long_context --meshes 4x16x4 \
      --attentions reference,tpu_splash                          # the attention kernels

For each sequence length, mesh, execution (model.scan_layers: "unrolled" or "scan", the
latter with each layer's weights gathered inside the scan; and model.remat, the policy of
what the backward pass recomputes; `rmjax.models.layer_scan`) and attention implementation
(`TransformerConfig.attention`, default "reference"; "tpu_splash" is the Pallas TPU splash
kernel, compiled by Mosaic inside shard_map): configs/reward_model.py:pod with data.max_len
= L and the same tokens per step as the preset (train.batch_size = 512 x 2048 / L pairs; or
--tokens_per_step / L), dry-run (`rmjax.train.dry_run`: compiled by libtpu for the target
from shapes alone, nothing runs) and tabulated: per-device arguments (parameters + AdamW
moments + the batch shard), temporaries (activations), total against the HBM, XLA's FLOPs
per device and step (XLA counts none inside a Mosaic kernel, and the splash kernel declares
no cost estimate: the "tpu_splash" rows leave out the attention's own logits and context
matmuls), whether XLA rematerialised on its own to fit (then its FLOPs include the
recomputation: compiled / model FLOPs > 1), and compile time.
The knobs: the mesh (moving data-parallel chips into fsdp shards the state further), the
batch, the layer scan and the remat policy; without a policy XLA rematerialises on its own
when the step would not fit. Compiled FLOPs of a scanned step count the loop body once (XLA's
cost analysis), so the FLOPs column is left empty there. Needs libtpu. Prints a markdown
table; --json_out writes it.
"""

import os
import sys
import time

from absl import app
from absl import flags

_TARGET = flags.DEFINE_string("target", "v5e-256", "TPU slice or topology.")
_LENGTHS = flags.DEFINE_string("lengths", "2048,4096,8192", "Sequence lengths.")
_MESHES = flags.DEFINE_string("meshes", "4x16x4,1x64x4", "Meshes data x fsdp x tensor.")
_EXECUTIONS = flags.DEFINE_string(
    "executions", "unrolled:none",
    "Comma-separated <unrolled|scan>:<remat policy> (rmjax.models.layer_scan.REMAT_POLICIES).")
_TOKENS = flags.DEFINE_integer("tokens_per_step", 0,
                               "Tokens per side of the pairs per step (default: the preset's, "
                               "512 pairs x 2048).")
_ATTENTIONS = flags.DEFINE_string("attentions", "reference",
                                  "TransformerConfig.attention values, comma-separated.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the table as JSON here.")


def main(argv):
  del argv
  start, load_before = time.perf_counter(), os.getloadavg()
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  from rmjax.train import dry_run  # pylint: disable=g-import-not-at-top

  gib = lambda b: round(b / dry_run.GIB, 2)
  rows = []
  runs = [(int(length), mesh, execution, attention) for length in _LENGTHS.value.split(",")
          for mesh in _MESHES.value.split(",") for execution in _EXECUTIONS.value.split(",")
          for attention in _ATTENTIONS.value.split(",")]
  for length, mesh, execution, attention in runs:
    data, fsdp, tensor = (int(x) for x in mesh.split("x"))
    layers, remat = execution.split(":")
    if layers not in ("unrolled", "scan"):
      raise ValueError(f"--executions: expected unrolled:<remat> or scan:<remat>, got "
                       f"{execution!r}")
    config = reward_model.get_config("pod")
    config.model.update(scan_layers=layers == "scan", remat=remat, attention=attention)
    tokens = _TOKENS.value or config.train.batch_size * config.data.max_len
    config.data.update(max_len=length, max_prompt_len=length * 3 // 4)
    config.train.batch_size = config.eval.batch_size = tokens // length
    config.mesh.shape.update(data=data, fsdp=fsdp, tensor=tensor)
    report = dry_run.dry_run(config, rm_task.make_task(config), _TARGET.value,
                             eval_step=False)
    step, memory = report["train"], report["train"]["memory"]
    rows.append({
        "max_len": length, "pairs": config.train.batch_size, "mesh d x f x t": mesh,
        "layers": layers, "remat": remat, "attention": attention,
        "argument GiB": gib(memory["argument"]), "temp GiB": gib(memory["temp"]),
        "total GiB": gib(memory["total_bytes"]), "HBM GiB": gib(memory["hbm_bytes"]),
        "fits": memory["fits"],
        "TFLOP / device": (round(step["flops"] / 1e12, 1)
                           if step["flops"] is not None and not step["loops"] else ""),
        "XLA remat": step["rematerialised"] if step["flops"] is not None else "refused",
        "compiled / model FLOPs": (round(step["flops"] / step["model_flops"], 2)
                                   if step["flops"] is not None and not step["loop_undercounted"]
                                   else ""),
        "all-gathers": step["collectives"].get("all-gather", {}).get("count", ""),
        "compile s": round(step["compile_s"], 1)})
    print(rows[-1], flush=True)
  header = common.run_header(load_before, start, target=_TARGET.value)
  common.print_table_and_save(header, rows, _JSON_OUT.value)


if __name__ == "__main__":
  app.run(main)
