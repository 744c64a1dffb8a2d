"""Every module of rmjax imports on its own, and no two modules import each other.

A cycle between modules works or breaks depending on which of them is imported first; the
static check finds it whatever the order (module-level and function-level imports alike),
and the subprocess imports each module first in a clean `rmjax` namespace.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "rmjax"


def _modules() -> dict[str, pathlib.Path]:
  modules = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    modules[name] = path
  return modules


def _resolve(name: str, modules) -> str | None:
  while name and name not in modules:
    name = name.rpartition(".")[0]
  return name or None


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
  """The rmjax modules `name` imports (at module level or inside functions)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      targets = [f"{base}.{alias.name}" for alias in node.names]
    else:
      continue
    found.update(t for t in (_resolve(t, modules) for t in targets) if t and t != name)
  return found


def test_no_import_cycle_between_modules():
  modules = _modules()
  packages = {n for n, p in modules.items() if p.name == "__init__.py"}
  # Package __init__ files re-export; a cycle through one is not a cycle between modules.
  graph = {n: {t for t in _imports(n, p, modules) if t not in packages}
           for n, p in modules.items() if n not in packages}
  cycles = []

  def visit(start, node, path):
    for target in graph.get(node, ()):
      if target == start:
        cycles.append(" -> ".join(path + [target]))
      elif target not in path and target > start:
        visit(start, target, path + [target])

  for name in sorted(graph):
    visit(name, name, [name])
  assert not cycles, "\n".join(cycles)
  # The check can fail: it sees the edges of a known chain.
  assert "rmjax.tasks.reward_model.family" in graph["rmjax.tasks.reward_model.pairwise"]


_IMPORT_EACH = """
import importlib, os, sys, traceback
# The heavy dependencies once, in the parent; each module then in a fresh child with no
# rmjax module loaded (a fork: no new interpreter per module), one child per core at a time.
import chex, flax, grain, jax, ml_collections, numpy, optax, orbax.checkpoint
import tensorflow_datasets
import absl.app, gguf, matplotlib.pyplot, safetensors, tokenizers
import flax.linen, flax.nnx, jax.experimental.pallas
failures, running = [], {}
names = list(sys.argv[1:])
while names or running:
  while names and len(running) < (os.cpu_count() or 1):
    name = names.pop()
    pid = os.fork()
    if pid == 0:
      try:
        importlib.import_module(name)
      except BaseException:
        traceback.print_exc()
        os._exit(1)
      os._exit(0)
    running[pid] = name
  pid, status = os.wait()
  if status:
    failures.append(running[pid])
  del running[pid]
print("failed:", failures)
sys.exit(1 if failures else 0)
"""


@pytest.mark.slow
def test_every_module_imports_first_on_its_own():
  names = sorted(_modules())
  assert len(names) > 80
  proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *names], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=600,
                        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_experiment_scripts_import_together_without_defining_flags():
  """Every experiment script imports next to every other in one process (as tests and
  notebooks do), and importing defines no absl flag: each defines its flags only when run."""
  names = sorted(f"experiments.{p.stem}" for p in (REPO_ROOT / "experiments").glob("*.py")
                 if p.stem != "__init__")
  assert "experiments.study_transform_and_combine_hh" in names and len(names) >= 10
  code = ("import importlib, sys\nfrom absl import flags\n"
          "for name in sys.argv[1:]:\n  importlib.import_module(name)\n"
          "print(sorted(f for f in flags.FLAGS if (flags.FLAGS.find_module_defining_flag(f)\n"
          "             or '').startswith('experiments')))\n")
  proc = subprocess.run([sys.executable, "-c", code, *names], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-2000:]
