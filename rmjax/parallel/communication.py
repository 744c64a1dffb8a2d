"""What a compiled program sends between devices: collectives read from its HLO text.

`collective_stats(compiled.as_text(), num_devices)` counts the collectives XLA put in a
compiled (SPMD-partitioned) program and their bytes: the payload (the bytes of the full
arrays they reduce or gather) and what each device sends in a ring implementation
(all-reduce 2 (n-1)/n S; all-gather, all-to-all and reduce-scatter (n-1)/n S, S the full
array; collective-permute S; n the size of the replica group). It reads the text only, so
it works on any backend, and it is what `benchmarks/sharded_step.py` reports and what the
tests use to check that an FSDP step moves weights, not activations.
"""

import re

_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s16": 2, "u16": 2,
                "s8": 1, "u8": 1, "pred": 1, "f64": 8, "s64": 8, "u64": 8, "c64": 8,
                "c128": 16}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute")
_ARRAY = re.compile(r"\b(f32|bf16|f16|s32|u32|s16|u16|s8|u8|pred|f64|s64|u64|c64|c128)"
                    r"\[([0-9,]*)\]")


def _bytes(shape_text: str) -> int:
  total = 0
  for dtype, dims in _ARRAY.findall(shape_text):
    size = 1
    for d in filter(None, dims.split(",")):
      size *= int(d)
    total += size * _DTYPE_BYTES[dtype]
  return total


def _group_size(line: str, num_devices: int) -> int:
  iota = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)
  if iota:
    return int(iota.group(2))
  # TPU: replica_groups=mesh['axis_0'=4,'axis_1'=64] {'axis_1'}, groups along named axes.
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}", line)
  if mesh:
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", mesh.group(1)))
    size = 1
    for axis in re.findall(r"'(\w+)'", mesh.group(2)):
      size *= int(sizes.get(axis, 1))
    return size
  groups = re.search(r"replica_groups=\{\{([0-9,]*)\}", line)
  if groups and groups.group(1):
    return len(groups.group(1).split(","))
  return num_devices


def collective_stats(hlo_text: str, num_devices: int) -> dict[str, float]:
  """Counts and bytes of the collectives in compiled HLO text (see the module docstring).

  Args:
    hlo_text: `jax.jit(f).lower(...).compile().as_text()`.
    num_devices: devices of the program (the group size when the HLO names no groups).

  Returns:
    {"collectives": count, "payload_bytes": ..., "ring_bytes_per_device": ...,
     "<op>": count, "<op>_bytes": payload and "<op>_max_bytes": the largest payload, per
    op kind of `COLLECTIVES`}; collectives over groups of one device are skipped. A
    collective in a loop body runs once per iteration but is counted once.

  >>> stats = collective_stats(
  ...     "%x = f32[8,4]{1,0} all-reduce(%y), replica_groups={{0,1}}", 2)
  >>> stats["collectives"], stats["payload_bytes"], stats["ring_bytes_per_device"]
  (1, 128, 128.0)
  """
  stats = {"collectives": 0, "payload_bytes": 0, "ring_bytes_per_device": 0.0}
  for line in hlo_text.splitlines():
    match = re.search(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(", line)
    if not match or "-done" in line.split("=")[0]:
      continue
    op = match.group(2)
    out_bytes = _bytes(match.group(1))
    if match.group(3) and op in ("all-gather", "collective-permute"):
      # Async starts (GPU, TPU) return (operand, result, ...): count the result only.
      arrays = _ARRAY.findall(match.group(1))
      out_bytes = _bytes("{}[{}]".format(*arrays[1])) if len(arrays) > 1 else out_bytes
    n = _group_size(line, num_devices)
    if n <= 1:
      continue
    full = out_bytes * n if op == "reduce-scatter" else out_bytes
    factor = {"all-reduce": 2 * (n - 1) / n, "collective-permute": 1.0}.get(op, (n - 1) / n)
    stats["collectives"] += 1
    stats["payload_bytes"] += full
    stats["ring_bytes_per_device"] += factor * full
    stats[op] = stats.get(op, 0) + 1
    stats[f"{op}_bytes"] = stats.get(f"{op}_bytes", 0) + full
    stats[f"{op}_max_bytes"] = max(stats.get(f"{op}_max_bytes", 0), full)
  return stats
