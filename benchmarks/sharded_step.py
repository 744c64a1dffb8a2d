r"""Step time and communication of the sharded train step under each mesh preset.

  python -m benchmarks.sharded_step                          # smoke model, 8 simulated devices
  python -m benchmarks.sharded_step --preset default --batch_size 64 --devices 8

For one device and for each preset of `rmjax.parallel.MESH_PRESETS` on `--devices` simulated
CPU devices: the median step time (after a warm-up; on a 2-core CPU the simulated devices
share the cores, so this shows overheads, not speed-ups) and the collectives XLA put in the
compiled step, read from its HLO: their count, their payload (the bytes of the full arrays
they reduce or gather) and the bytes each device sends in a ring implementation
(all-reduce 2 (n-1)/n S, all-gather and all-to-all (n-1)/n S, reduce-scatter (n-1)/n S of
the unscattered input, S the full array, n the group size). Prints a markdown table; --json_out
writes it as JSON.
"""

import json
import os
import platform
import statistics
import sys
import time

from absl import app
from absl import flags

_PRESET = flags.DEFINE_string("preset", "smoke", "configs/reward_model.py preset (and family).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Pairs per step (default: the preset's).")
_DEVICES = flags.DEFINE_integer("devices", 8, "Simulated CPU devices.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
_STEPS = flags.DEFINE_integer("steps_per_repeat", 5, "Steps per timed repeat.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the table as JSON here.")

def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_num_cpu_devices", _DEVICES.value)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  from rmjax import parallel  # pylint: disable=g-import-not-at-top
  from rmjax.parallel import communication  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model as rm_task  # pylint: disable=g-import-not-at-top
  from rmjax.train import batching  # pylint: disable=g-import-not-at-top
  from rmjax.train import program as program_lib  # pylint: disable=g-import-not-at-top

  rows = []
  layouts = [("one device", {"data": 1, "fsdp": 1, "tensor": 1})] + [
      (name, dict(shape)) for name, shape in parallel.MESH_PRESETS.items()]
  for name, shape in layouts:
    config = reward_model.get_config(_PRESET.value)
    if _BATCH_SIZE.value:
      config.train.batch_size = _BATCH_SIZE.value
    config.mesh.shape.update(shape)
    devices = jax.devices()[:1] if name == "one device" else None
    task = rm_task.make_task(config)
    program = program_lib.build_program(config, task, devices=devices)
    data = rm_data.load_preference_data(config.data, workdir="/tmp/rmjax_bench")
    batches = [batching.place_batch(data.train, data.train.train_indices(
        i, config.train.batch_size, 0), program.batch_sharding, task.batch_fields)
               for i in range(_STEPS.value)]
    state = program.init(jax.random.PRNGKey(0))
    compiled = program.train_step.lower(state, batches[0]).compile()
    stats = communication.collective_stats(compiled.as_text(), program.mesh.size)
    state, metrics = program.train_step(state, batches[0])  # Warm-up.
    jax.block_until_ready(metrics)
    times = []
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      for batch in batches:
        state, metrics = program.train_step(state, batch)
      jax.block_until_ready((state, metrics))
      times.append((time.perf_counter() - start) / len(batches))
    rows.append(dict(layout=name, mesh="x".join(str(v) for v in program.mesh.shape.values()),
                     params=program.num_params, batch_size=config.train.batch_size,
                     seq_len=config.data.max_len, step_ms=1e3 * statistics.median(times),
                     **stats))

  print(f"\n{platform.node()} ({os.cpu_count()} cores), jax {jax.__version__}, "
        f"{_DEVICES.value} simulated CPU devices, preset {_PRESET.value}\n")
  print("| layout | mesh d x f x t | params | batch x len | step ms | collectives | "
        "payload KiB | ring KiB / device |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['layout']} | {r['mesh']} | {r['params']:,} | {r['batch_size']} x "
          f"{r['seq_len']} | {r['step_ms']:.1f} | {r['collectives']} | "
          f"{r['payload_bytes'] / 1024:.0f} | {r['ring_bytes_per_device'] / 1024:.0f} |")
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
