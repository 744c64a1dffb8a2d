"""Test configuration: a simulated 8-device CPU mesh, set before any computation."""

import os
import pathlib

import jax

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = pathlib.Path(os.environ.get("RMJAX_SHARED_DIR", REPO_ROOT.parent / "shared"))
HH_RLHF_FILE = SHARED_DIR / "data" / "hh_rlhf" / "harmless-base-test.jsonl.gz"


@pytest.fixture
def hh_rlhf_file():
  """Path of the real HH-RLHF harmless-base test file; skips when ../shared is absent."""
  if not HH_RLHF_FILE.exists():
    pytest.skip(f"real HH-RLHF data not found at {HH_RLHF_FILE} (needs ../shared beside the repo)")
  return HH_RLHF_FILE
