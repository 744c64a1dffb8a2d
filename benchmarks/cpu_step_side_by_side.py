r"""The reward model's CPU training step in rmjax and in PyTorch eager, side by side.

  python -m benchmarks.cpu_step_side_by_side                       # 24, 128, 384, 1024 tokens
  python -m benchmarks.cpu_step_side_by_side --torch_path /path/to/torch/site --shapes 24:64

The same model in both: the default job's (configs/reward_model.py) Llama-architecture
reward model, vocab 259, d_model 128, 2 layers, 4 heads, d_ff 344, RMSNorm, RoPE, SwiGLU,
a scalar head (no bias) on the last real token, the Bradley-Terry loss
-log sigmoid(r_chosen - r_rejected) averaged over the pairs, chosen and rejected scored in
one forward pass of [2B, L], AdamW (lr 1e-3, betas (0.9, 0.98), eps 1e-8, weight decay
0.01) after global-norm clipping at 1.0. The same batch (the job's synthetic pairs, right
padded to L; pad id 0) goes to both.

* rmjax: the training job's own jitted step (`benchmarks.common.build_step`: the task's
  loss, `rmjax.train.program.make_train_step`, the config's optimiser, state donated; its
  metrics included), the task's loss alone (forward) and its `jax.value_and_grad`, each
  jitted with the step's XLA options (`rmjax.train.program.compiler_options`).
* PyTorch (optional, never a dependency of rmjax): `LlamaForSequenceClassification` with
  attn_implementation="sdpa", `torch.set_num_threads(2)`, eager; forward = the loss under
  `torch.no_grad()`, value and grad = forward + `backward()`, step = value and grad +
  `clip_grad_norm_` + `AdamW.step()`. It runs in a subprocess with `--torch_path`
  prepended to its PYTHONPATH (torch installed outside site-packages, e.g. with
  `pip install --target`); without an importable torch the table says
  "PyTorch not installed: rmjax only".

Both halves run with this process's environment, GLIBC_TUNABLES included (the header
shows it): rmjax's CPU step is 10-30% faster with `rmjax.train.program.CPU_MALLOC_TUNABLE`
(glibc.malloc.hugetlb=1, which the README's commands set), PyTorch's the same with or
without it.

--shapes lists length:pairs (defaults: 64 pairs at 24 tokens, 32 at 128 and 384, 8 at
1024); --rounds N measures the whole list N times, one round after the other. Times are
medians of --repeats calls after two warm-up calls: wall ms and the process's CPU ms (all
its threads; on a shared machine it moves less with the others' load than wall time,
though threads spinning while they wait still count). Each row gives the 1-minute load
average when it started, the header the load before and after.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

_SHAPES = flags.DEFINE_list("shapes", ["24:64", "128:32", "384:32", "1024:8"],
                            "length:pairs of each row.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls per measurement (median).")
_ROUNDS = flags.DEFINE_integer(
    "rounds", 1, "Times the whole list of shapes is measured, one round after the other "
    "(a row per shape and round: the spread between rounds shows the machine's noise).")
_THREADS = flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.")
_TORCH_PATH = flags.DEFINE_string(
    "torch_path", "", "Prepended to PYTHONPATH for the PyTorch half (a `pip install "
    "--target` directory); empty: torch from the current environment.")
_TORCH_HALF = flags.DEFINE_string(
    "torch_half", "", "Internal: run only the PyTorch half on the batch in this .npz file "
    "and print its times as JSON.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the table as JSON here.")

_BATCH_KEYS = ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask")


def _model_and_optim_config():
  """The default job's model and optimiser sections (configs/reward_model.py)."""
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  config = reward_model.get_config("default")
  return config.model, config.optim


def _median_ms(calls: dict, repeats: int) -> dict:
  """{name: median wall ms} and {name + ' cpu': median process CPU ms} of each call."""
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  times = {}
  for name, fn in calls.items():
    wall, cpu = common.median_wall_and_cpu_seconds(fn, repeats)
    times[name] = round(1e3 * wall, 1)
    times[name.replace("_ms", "_cpu_ms")] = round(1e3 * cpu, 1)
  return times


def rmjax_times(max_len: int, pairs: int, repeats: int) -> tuple[dict, dict]:
  """Median step, forward and value-and-grad ms of rmjax's jitted step; and the batch."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from configs import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.train import program as program_lib  # pylint: disable=g-import-not-at-top

  config = reward_model.get_config("default")
  config.data.max_len = max_len
  config.data.length_buckets = ""
  step = common.build_step(config, pairs, num_batches=1)
  batch = step.batches[0]
  loss = lambda params, b: step.loss_fn(params, b, None)[0]
  options = program_lib.compiler_options(jax.devices()[0])  # those of the step
  forward = jax.jit(loss, compiler_options=options)
  value_and_grad = jax.jit(jax.value_and_grad(loss), compiler_options=options)
  params = jax.tree.map(lambda x: x.copy(), step.state.params)  # the step donates its state
  holder = {"state": step.state}

  def run_step():
    holder["state"], metrics = step.train_step(holder["state"], batch)
    return metrics

  calls = {"step_ms": run_step, "forward_ms": lambda: forward(params, batch),
           "value_and_grad_ms": lambda: value_and_grad(params, batch)}
  for fn in calls.values():
    jax.block_until_ready(fn())
    jax.block_until_ready(fn())
  return _median_ms(calls, repeats), {k: np.asarray(batch[k]) for k in _BATCH_KEYS}


def torch_half(batch_path: str, repeats: int, threads: int) -> dict:
  """The PyTorch half (run in the subprocess): median step, forward, value-and-grad ms."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model_config, optim_config = _model_and_optim_config()
  batch = dict(np.load(batch_path))
  max_len = batch["chosen_tokens"].shape[1]
  llama = transformers.LlamaConfig(
      vocab_size=model_config.vocab_size, hidden_size=model_config.d_model,
      intermediate_size=model_config.d_ff, num_hidden_layers=model_config.num_layers,
      num_attention_heads=model_config.num_heads, num_key_value_heads=model_config.num_heads,
      max_position_embeddings=max_len, rms_norm_eps=1e-6, num_labels=1, pad_token_id=0,
      tie_word_embeddings=False, attn_implementation="sdpa")
  model = transformers.LlamaForSequenceClassification(llama)
  if model.config._attn_implementation != "sdpa":  # pylint: disable=protected-access
    raise RuntimeError("transformers did not pick SDPA attention, got "
                       f"{model.config._attn_implementation!r}")  # pylint: disable=protected-access
  model.train()  # no dropout in Llama: train() changes nothing but is what a step runs in
  optimizer = torch.optim.AdamW(
      model.parameters(), lr=optim_config.learning_rate,
      betas=(optim_config.b1, optim_config.b2), eps=optim_config.eps,
      weight_decay=optim_config.weight_decay)
  tokens = torch.from_numpy(np.concatenate([batch["chosen_tokens"],
                                            batch["rejected_tokens"]])).long()
  mask = torch.from_numpy(np.concatenate([batch["chosen_mask"],
                                          batch["rejected_mask"]])).long()
  num_pairs = batch["chosen_tokens"].shape[0]

  def loss_value():
    rewards = model(input_ids=tokens, attention_mask=mask).logits[:, 0]
    return -torch.nn.functional.logsigmoid(rewards[:num_pairs] - rewards[num_pairs:]).mean()

  def forward():
    with torch.no_grad():
      return float(loss_value())

  def value_and_grad():
    optimizer.zero_grad(set_to_none=True)
    loss = loss_value()
    loss.backward()
    return float(loss)

  def step():
    loss = value_and_grad()
    torch.nn.utils.clip_grad_norm_(model.parameters(), optim_config.grad_clip_norm)
    optimizer.step()
    return loss

  calls = {"step_ms": step, "forward_ms": forward, "value_and_grad_ms": value_and_grad}
  for fn in calls.values():
    fn()
    fn()
  return {**_median_ms(calls, repeats), "torch": torch.__version__,
          "transformers": transformers.__version__}


def run_torch_half(batch: dict, repeats: int) -> dict | None:
  """The PyTorch half in a subprocess on `batch`; None when torch cannot be imported."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ)
  paths = [p for p in (_TORCH_PATH.value, repo, env.get("PYTHONPATH", "")) if p]
  env["PYTHONPATH"] = os.pathsep.join(paths)
  with tempfile.TemporaryDirectory() as tmp:
    batch_path = os.path.join(tmp, "batch.npz")
    np.savez(batch_path, **batch)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cpu_step_side_by_side", f"--torch_half={batch_path}",
         f"--repeats={repeats}", f"--torch_threads={_THREADS.value}"],
        env=env, cwd=repo, capture_output=True, text=True, check=False)
  lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
  if result.returncode or not lines:
    if "No module named 'torch'" in result.stderr or "No module named 'transformers'" in (
        result.stderr):
      return None
    raise RuntimeError(f"the PyTorch half failed:\n{result.stderr[-3000:]}")
  return json.loads(lines[-1])


def main(argv):
  del argv
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if _TORCH_HALF.value:
    print(json.dumps(torch_half(_TORCH_HALF.value, _REPEATS.value, _THREADS.value)))
    return
  from benchmarks import common  # pylint: disable=g-import-not-at-top

  load, start = os.getloadavg(), time.perf_counter()
  rows, versions = [], None
  for round_index, shape in ((r, shape) for r in range(_ROUNDS.value)
                             for shape in _SHAPES.value):
    max_len, pairs = (int(x) for x in shape.split(":"))
    row = {"round": round_index, "max_len": max_len, "pairs": pairs,
           "load_1min": round(os.getloadavg()[0], 2)}
    times, batch = rmjax_times(max_len, pairs, _REPEATS.value)
    row.update({f"rmjax {k}": v for k, v in times.items()})
    torch_times = run_torch_half(batch, _REPEATS.value)
    if torch_times is None:
      print("PyTorch not installed: rmjax only")
    else:
      versions = {k: torch_times.pop(k) for k in ("torch", "transformers")}
      row.update({f"torch {k}": v for k, v in torch_times.items()})
      for unit in ("ms", "cpu_ms"):
        row[f"torch / rmjax step_{unit}"] = round(
            row[f"torch step_{unit}"] / row[f"rmjax step_{unit}"], 2)
    rows.append(row)
    print(json.dumps(row), flush=True)
  header = common.run_header(load, start, repeats=_REPEATS.value,
                             torch_threads=_THREADS.value,
                             **(versions or {"torch": "not installed: rmjax only"}))
  common.print_table_and_save(header, rows, _JSON_OUT.value)


if __name__ == "__main__":
  app.run(main)
