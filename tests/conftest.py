"""Test configuration: a simulated 8-device CPU mesh, set before any computation, and one
persistent compilation cache for the whole run.

The cache: many tests compile the same programs (a smoke model's step, a scorer, each
process of a multi-process test); JAX's persistent cache serves a program compiled once to
every later test, xdist worker and subprocess of the run (measured: the scoring tests and the
three-run seed test take 54 s instead of 79 s). The directory is made by the first pytest
process (the xdist controller), handed to the workers and subprocesses through the
environment (JAX_COMPILATION_CACHE_DIR), and removed at the end of the run; a fresh run
starts empty. Set RMJAX_TEST_JAX_CACHE=0 to run without it.

XLA's backend optimisation level 0: the suite's programs are small and run a few times each,
so compiling is most of their cost. At level 0 XLA:CPU compiles them about a third faster
(measured: the generation, transformer and new DPO-loss tests, 169 of them on 2 workers,
60 s instead of 93 s) and every test passes unchanged. It reaches the workers and the
subprocesses through XLA_FLAGS (set before jax is imported). Set RMJAX_TEST_XLA_OPT=1 to test
the optimised programs instead.

Hypothesis runs derandomized (the same examples every run); RMJAX_TEST_HYPOTHESIS_RANDOM=1
draws fresh ones.
"""

import os
import pathlib
import shutil
import tempfile

if os.environ.get("RMJAX_TEST_XLA_OPT", "0") != "1":
  _FLAG = "--xla_backend_optimization_level=0"
  if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

import hypothesis  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

# Hypothesis draws the same examples on every run (derandomize), so the suite's verdict does
# not depend on the run (a random run once found a float32-rounding example past a tolerance
# in CI's place). RMJAX_TEST_HYPOTHESIS_RANDOM=1 draws new examples, to look for more.
hypothesis.settings.register_profile(
    "rmjax", derandomize=os.environ.get("RMJAX_TEST_HYPOTHESIS_RANDOM", "0") != "1")
hypothesis.settings.load_profile("rmjax")

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWNS_CACHE = False
if os.environ.get("RMJAX_TEST_JAX_CACHE", "1") != "0":
  if not os.environ.get(_CACHE_ENV):
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="rmjax-test-jax-cache-")
    _OWNS_CACHE = True
  # Programs that compile in under 0.2 s are not worth a file.
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))

import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
  """The process that made the compilation cache removes it."""
  del session, exitstatus
  if _OWNS_CACHE:
    shutil.rmtree(os.environ[_CACHE_ENV], ignore_errors=True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = pathlib.Path(os.environ.get("RMJAX_SHARED_DIR", REPO_ROOT.parent / "shared"))
HH_RLHF_FILE = SHARED_DIR / "data" / "hh_rlhf" / "harmless-base-test.jsonl.gz"


@pytest.fixture
def hh_rlhf_file():
  """Path of the real HH-RLHF harmless-base test file; skips when ../shared is absent."""
  if not HH_RLHF_FILE.exists():
    pytest.skip(f"real HH-RLHF data not found at {HH_RLHF_FILE} (needs ../shared beside the repo)")
  return HH_RLHF_FILE


# End-to-end files whose tests each train, spawn processes or load real weights.
_HEAVY_FILES = ("test_train_reward_model.py", "test_train_sharded.py", "test_pretrained_reward.py",
                "test_studies.py", "test_notebooks.py", "test_imports.py",
                "test_reward_scoring.py")


def pytest_collection_modifyitems(config, items):
  """Slow tests first, then the end-to-end files, then the rest (each group in its order).

  Under xdist the long tests then run beside the many short ones, instead of in a tail at
  the end where one worker would wait for another; without xdist the order changes nothing.
  """
  del config
  rank = lambda item: (item.get_closest_marker("slow") is None,
                       item.path.name not in _HEAVY_FILES)
  items.sort(key=rank)
