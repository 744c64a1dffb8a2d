"""Eager call time of representative losses, with and without a private jitted core.

The notebook use: call the public function directly on small arrays (B = 64, [B, T] = [8, 128])
after a warm-up, median of `--calls` calls, in microseconds:

  private jit   the public function, its array work run through a `jax.jit`-compiled core
  plain         the public function with the same core run op by op (no private jit)
  outer jit     `jax.jit` of the whole call (the training-step use), with the core jitted / plain

The last two columns time one call on shapes not seen before (tracing and compiling included);
they are indicative only: op-by-op execution shares compiled primitives between losses, so they
depend on what ran before (the BT loss reuses what `dpo_loss` compiled).

The two variants are built here from the same code: each loss's private core is looked up in
`CORES` and either wrapped in `jax.jit` (with its static arguments) or left plain, whichever
the measurement asks for (the package itself jits nothing inside).

Run: `python -m benchmarks.loss_eager_call [--calls 200]`.
"""

import argparse
import contextlib
import functools
import statistics
import time

import jax
import jax.numpy as jnp

import rmjax.losses as L

# (module, core name, static argument names) of the private cores behind the measured losses.
CORES = {
    "dpo_loss": ("rmjax.losses.direct_preference._shared", "dpo_from_arrays",
                 ("label_smoothing", "reduction")),
    "plackett_luce_loss": ("rmjax.losses.listwise", "_plackett_luce_loss", ("reduction",)),
    "grpo_advantages": ("rmjax.losses.normalization", "_group_normalize", ("scale", "single")),
    "gae": ("rmjax.losses.advantages", "_gae", ()),
    "kl_penalty": ("rmjax.losses.kl", "_kl_penalty", ("estimator",)),
    "ppo_clip_loss": ("rmjax.losses.policy_gradient", "_ppo", ("agg",)),
    "bradley_terry_loss": None,  # no core: the reference for a loss without private jit
}


def _cases(b=64, t=128):
  g = 8
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  seq = [jax.random.normal(k, (b,)) - 10.0 for k in keys[:4]]
  tok = [jax.random.normal(k, (8, t)) for k in keys[:3]]
  tok_mask = jnp.arange(t)[None, :] < jnp.arange(t - 28, t - 28 + 8 * 3, 3)[:, None]
  scores = jax.random.normal(keys[4], (b // g, g))
  return {
      "dpo_loss": (L.dpo_loss, seq, {}),
      "plackett_luce_loss": (L.plackett_luce_loss, [scores], {}),
      "grpo_advantages": (L.grpo_advantages, [seq[0].reshape(b // g, g)], {}),
      "gae": (L.gae, [tok[0], tok[1], tok_mask], {"gamma": 0.99, "lam": 0.95}),
      "kl_penalty": (L.kl_penalty, tok[:2], {"estimator": "k3", "mask": tok_mask}),
      "ppo_clip_loss": (L.ppo_clip_loss, [tok[0], tok[1], tok[2]], {"mask": tok_mask}),
      "bradley_terry_loss": (L.bradley_terry_loss, seq[:2], {}),
  }


def _unwrap(fn):
  return getattr(fn, "__wrapped__", fn)


@contextlib.contextmanager
def _core(name, jitted):
  """Runs `name`'s private core jitted or plain for the duration of the block."""
  if CORES.get(name) is None:
    yield
    return
  module_name, attr, static = CORES[name]
  module = __import__(module_name, fromlist=[attr])
  original = getattr(module, attr)
  plain = _unwrap(original)
  setattr(module, attr, jax.jit(plain, static_argnames=static) if jitted else plain)
  try:
    yield
  finally:
    setattr(module, attr, original)


def _median_us(call, calls):
  jax.block_until_ready(call())  # warm-up: compile
  for _ in range(5):
    jax.block_until_ready(call())
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return 1e6 * statistics.median(times)


def _first_ms(case):
  fn, args, kwargs = case
  start = time.perf_counter()
  jax.block_until_ready(fn(*args, **kwargs))
  return 1e3 * (time.perf_counter() - start)


def main(calls):
  print(f"eager call, us (median of {calls} after warm-up; first call on a new shape in ms); "
        f"backend {jax.default_backend()}")
  print(f"{'loss':<22} {'private jit':>12} {'plain':>8} {'outer jit (jit/plain)':>22} | "
        f"{'1st, private jit':>16} {'1st, plain':>10}")
  first_jit_cases, first_plain_cases = _cases(b=48, t=96), _cases(b=40, t=80)
  for name, (fn, args, kwargs) in _cases().items():
    call = functools.partial(fn, *args, **kwargs)
    outer_us = {}
    for jitted in (True, False):
      with _core(name, jitted=jitted):
        outer = jax.jit(lambda *a, fn=fn, kw=kwargs: fn(*a, **kw))
        outer_us[jitted] = _median_us(functools.partial(outer, *args), calls)
    with _core(name, jitted=True):
      with_jit = _median_us(call, calls)
      first_jit = _first_ms(first_jit_cases[name])
    with _core(name, jitted=False):
      plain = _median_us(call, calls)
      first_plain = _first_ms(first_plain_cases[name])
    outer = f"{outer_us[True]:.0f} / {outer_us[False]:.0f}"
    if CORES.get(name) is None:
      with_jit, first_jit = "-", "-"
    else:
      with_jit, first_jit = f"{with_jit:.0f}", f"{first_jit:.0f}"
    print(f"{name:<22} {with_jit:>12} {plain:8.0f} {outer:>22} | "
          f"{first_jit:>16} {first_plain:10.0f}")


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--calls", type=int, default=200)
  main(parser.parse_args().calls)
