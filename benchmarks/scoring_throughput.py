r"""Pairs per second of the scoring service (`rmjax.tasks.reward_model.scoring`).

  python -m benchmarks.scoring_throughput                          # default grid (~6 min, 2 cores)
  python -m benchmarks.scoring_throughput --models default --pairs 32   # a quick check
  python -m benchmarks.scoring_throughput --models smollm2 --batch_sizes 8,32 \
      --json_out /tmp/scoring.json

What is timed is what `experiments/evaluate_reward_model.py` does per set: tokenize the
(prompt, chosen) and (prompt, rejected) texts with the run's tokenizer and template, sort by
length, and score batches of [batch_size, bucket] through the jitted, mesh-sharded reward
function. The texts are HHH alignment's pairs (../shared/data; the first --pairs of them,
cycled if fewer), or, without ../shared, generated sentences of similar length.

Models (weights from the installed packages for the pretrained ones; their heads are fresh,
which does not change the speed):
  * default: the embedded default job's model (2 layers, d=128, byte tokenizer, max_len 128);
  * minilm: all-MiniLM-L6-v2 reward model, max_len 256 (`:hh_rlhf,minilm`);
  * smollm2: SmolLM2-135M-Instruct reward model, max_len 256 (`:hh_rlhf,smollm2`).

Per (model, batch size): `first_call_s` (tokenizing, compiling each bucket's program, and
one pass), then the median of --repeats timed passes over the same texts (everything
compiled): pairs/s = pairs / median, sequences/s = 2 x pairs/s, real tokens/s = the
unpadded tokens / median. The mesh is all devices on 'data' (one CPU device here).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HHH_FILE = os.path.join(REPO_ROOT, os.pardir, "shared", "data", "hhh_alignment",
                        "hhh_alignment.jsonl")
MODEL_PRESETS = {"default": "default", "minilm": "hh_rlhf,minilm", "smollm2": "hh_rlhf,smollm2"}


def _texts(num_pairs: int) -> tuple[list[str], list[str], list[str], str]:
  if os.path.exists(HHH_FILE):
    from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
    bench = rm_data.read_hhh(HHH_FILE)
    idx = [i % len(bench.prompts) for i in range(num_pairs)]
    return ([bench.prompts[i] for i in idx], [bench.responses[i][0] for i in idx],
            [bench.responses[i][1] for i in idx], "HHH alignment")
  rng = np.random.default_rng(0)
  words = "the a reward model scores each response to a prompt by how helpful it is".split()
  sentence = lambda n: " ".join(rng.choice(words, n))
  prompts = [sentence(int(rng.integers(20, 60))) for _ in range(num_pairs)]
  return (prompts, [sentence(int(rng.integers(20, 120))) for _ in range(num_pairs)],
          [sentence(int(rng.integers(20, 120))) for _ in range(num_pairs)], "generated")


def measure(model: str, batch_size: int, num_pairs: int, repeats: int,
            length_bucket: int) -> dict:
  sys.path.insert(0, REPO_ROOT)
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  from rmjax import models  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config(MODEL_PRESETS[model])
  token_model = scoring.token_model_from_config(config)
  scorer = scoring.RewardScorer(
      token_model, tokenizer=rm_data.make_tokenizer(config.data.tokenizer),
      chat_template=config.data.chat_template, max_len=config.data.max_len,
      max_prompt_len=config.data.max_prompt_len, batch_size=batch_size,
      length_bucket=length_bucket)
  prompts, chosen, rejected, source = _texts(num_pairs)
  both_prompts, both = prompts + prompts, chosen + rejected
  start = time.perf_counter()
  scorer.score(both_prompts, both)
  first = time.perf_counter() - start
  _, mask, _ = scorer.encode(both_prompts, both)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    scorer.score(both_prompts, both)
    times.append(time.perf_counter() - start)
  median = float(np.median(times))
  return dict(model=model, params=models.count_params(token_model.params),
              max_len=config.data.max_len, batch_size=batch_size, length_bucket=length_bucket,
              texts=source, pairs=num_pairs, programs=len(scorer.compiled_shapes),
              first_call_s=round(first, 2), median_s=round(median, 3),
              pairs_per_s=round(num_pairs / median, 1),
              sequences_per_s=round(2 * num_pairs / median, 1),
              real_tokens_per_s=round(float(mask.sum()) / median))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="default,minilm,smollm2")
  parser.add_argument("--batch_sizes", default="8,32")
  parser.add_argument("--pairs", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--length_bucket", type=int, default=64)
  parser.add_argument("--json_out", default="")
  args = parser.parse_args(argv)
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  load, start = os.getloadavg(), time.perf_counter()
  rows = [measure(m, int(b), args.pairs, args.repeats, args.length_bucket)
          for m in args.models.split(",") for b in args.batch_sizes.split(",")]
  header = common.run_header(load, start)
  print(" | ".join(f"{k}: {v}" for k, v in header.items()))
  keys = list(rows[0])
  print(common.markdown_table(rows, keys))
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(dict(header=header, rows=rows), f, indent=2)


if __name__ == "__main__":
  main()
