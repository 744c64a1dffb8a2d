"""Multi-host runs: `jax.distributed.initialize` from config or environment, per-host batches.

JAX runs a multi-host job as one process per host (multi-controller): every process runs the
same program, owns the devices attached to its host, and feeds those devices its own rows of
each global batch. This module holds the two pieces a trainer needs for that:

  * `initialize_distributed(config)`: connects the processes before any JAX computation, with
    the settings taken, in order, from
      1. the config's `distributed` block (coordinator_address, num_processes, process_id),
      2. the environment variables `RMJAX_COORDINATOR_ADDRESS`, `RMJAX_NUM_PROCESSES`,
         `RMJAX_PROCESS_ID` (set by `experiments/launch_local_multihost.py`),
      3. a cluster JAX detects by itself (`jax.distributed.initialize()` with no arguments):
         `distributed.auto=True` or `RMJAX_DISTRIBUTED=auto`, or found in the environment: a
         SLURM job step with more than one task (`srun`), an Open MPI job with more than one
         rank, a multi-worker Cloud TPU slice (`TPU_WORKER_HOSTNAMES` lists several hosts or
         `MEGASCALE_COORDINATOR_ADDRESS` is set);
    and otherwise a single process (nothing to do). On CPU the cross-process collectives use
    gloo (`jax_cpu_collectives_implementation`).
  * `process_rows(sharding, num_rows)` and `global_batch(sharding, local_batch, num_rows)`:
    the rows of a global [B, ...] batch whose shards live on this process's devices, and the
    global array built from those rows alone (`jax.make_array_from_process_local_data`).
    With one process the rows are all rows and the global batch is a plain `device_put`.
"""

from collections.abc import Mapping
import logging
import os
from typing import Any, NamedTuple

import jax
import numpy as np

ENV_COORDINATOR = "RMJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "RMJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "RMJAX_PROCESS_ID"
ENV_AUTO = "RMJAX_DISTRIBUTED"

_log = logging.getLogger(__name__)


class DistributedSettings(NamedTuple):
  """How the processes of a run find each other.

  Attributes:
    mode: "single" (one process, nothing to initialise), "explicit" (coordinator, number of
      processes and this process's id given) or "auto" (JAX detects the cluster).
    source: where the settings came from: "config", "environment", "cluster" or "none".
    coordinator_address: host:port of process 0's coordinator ("" unless explicit).
    num_processes: processes of the run (0 unless explicit).
    process_id: this process's id, 0 .. num_processes - 1 (-1 unless explicit).
    initialization_timeout: seconds to wait for every process to connect.
  """
  mode: str
  source: str
  coordinator_address: str = ""
  num_processes: int = 0
  process_id: int = -1
  initialization_timeout: int = 300


_FIELDS = ("coordinator_address", "num_processes", "process_id", "auto",
           "initialization_timeout")


def _block(config: Any) -> Mapping[str, Any]:
  """The `distributed` block of a run config, or the block itself; {} for None or a run
  config without one."""
  if config is None:
    return {}
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if not isinstance(config, Mapping):
    raise TypeError(f"config: expected a run config or its distributed block (a mapping), "
                    f"got {type(config).__name__}")
  if "distributed" in config:
    block = config["distributed"]
  elif any(name in config for name in _FIELDS):
    block = config
  else:
    return {}
  unknown = sorted(set(block) - set(_FIELDS))
  if unknown:
    raise ValueError(f"config.distributed: unknown fields {unknown}; expected {_FIELDS}")
  return block


def _int_setting(name: str, value: Any) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name}: expected an integer, got {value!r}") from None


def _explicit(source: str, address: Any, num_processes: Any, process_id: Any, timeout: int,
              names: tuple[str, str, str]) -> DistributedSettings:
  num_processes = _int_setting(names[1], num_processes)
  process_id = _int_setting(names[2], process_id)
  if num_processes < 1:
    raise ValueError(f"{names[1]}: expected >= 1 with {names[0]}={address!r}, got "
                     f"{num_processes}")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"{names[2]}: expected 0 <= process_id < {names[1]}={num_processes}, "
                     f"got {process_id}")
  if ":" not in str(address):
    raise ValueError(f"{names[0]}: expected host:port (e.g. localhost:12345), got {address!r}")
  return DistributedSettings("explicit", source, str(address), num_processes, process_id,
                             timeout)


def _cluster_detected(environ: Mapping[str, str]) -> str:
  """The name of a multi-process cluster the environment describes, or ""."""

  def count(name):
    try:
      return int(environ.get(name, "") or 0)
    except ValueError:
      return 0

  if "SLURM_JOB_ID" in environ and max(count("SLURM_NTASKS"), count("SLURM_NPROCS")) > 1:
    return "SLURM"
  if count("OMPI_COMM_WORLD_SIZE") > 1:
    return "Open MPI"
  hosts = [h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  if len(hosts) > 1 or environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "Cloud TPU"
  return ""


def distributed_settings(config: Any = None,
                         environ: Mapping[str, str] | None = None) -> DistributedSettings:
  """Resolves how this process joins the run (see the module docstring); starts nothing.

  Args:
    config: a run config with a `distributed` block, the block itself (a mapping or
      ConfigDict with coordinator_address, num_processes, process_id, auto,
      initialization_timeout), or None.
    environ: the environment (default `os.environ`).

  Returns:
    `DistributedSettings`.

  Raises:
    ValueError: a coordinator without a valid number of processes or process id.

  >>> distributed_settings({"coordinator_address": "localhost:1234", "num_processes": 2,
  ...                       "process_id": 1}, environ={}).mode
  'explicit'
  >>> distributed_settings(None, environ={}).mode
  'single'
  """
  environ = os.environ if environ is None else environ
  block = _block(config)
  timeout = _int_setting("distributed.initialization_timeout",
                         block.get("initialization_timeout", 300) or 300)
  if block.get("coordinator_address"):
    return _explicit("config", block["coordinator_address"], block.get("num_processes", 0),
                     block.get("process_id", -1), timeout,
                     ("distributed.coordinator_address", "distributed.num_processes",
                      "distributed.process_id"))
  if environ.get(ENV_COORDINATOR):
    return _explicit("environment", environ[ENV_COORDINATOR], environ.get(ENV_NUM_PROCESSES),
                     environ.get(ENV_PROCESS_ID), timeout,
                     (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID))
  if block.get("auto") or environ.get(ENV_AUTO, "").lower() == "auto":
    return DistributedSettings("auto", "config" if block.get("auto") else "environment",
                               initialization_timeout=timeout)
  if _cluster_detected(environ):
    return DistributedSettings("auto", "cluster", initialization_timeout=timeout)
  return DistributedSettings("single", "none", initialization_timeout=timeout)


def initialize_distributed(config: Any = None, *,
                           environ: Mapping[str, str] | None = None) -> DistributedSettings:
  """Connects this process to the others of the run; call it before any JAX computation.

  Resolves the settings with `distributed_settings` and calls `jax.distributed.initialize`
  (nothing for a single process; nothing either if JAX is already initialised, e.g. by an
  earlier call). On CPU, cross-process collectives need an implementation: gloo is selected
  unless one is configured already.

  Args:
    config: see `distributed_settings`.
    environ: the environment (default `os.environ`).

  Returns:
    The `DistributedSettings` used.

  Raises:
    ValueError: bad settings, or a computation already ran in this process (JAX cannot join
      a distributed run after that).
  """
  settings = distributed_settings(config, environ)
  if settings.mode == "single" or jax.distributed.is_initialized():
    return settings
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {"initialization_timeout": settings.initialization_timeout}
  if settings.mode == "explicit":
    kwargs.update(coordinator_address=settings.coordinator_address,
                  num_processes=settings.num_processes, process_id=settings.process_id)
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as e:
    if "before any JAX computations" in str(e) or "backend" in str(e).lower():
      raise ValueError(
          f"distributed ({settings.source}): {e} Call rmjax.parallel.initialize_distributed "
          "first thing in the program, before anything creates a JAX array.") from e
    raise
  _log.info("distributed: process %d of %d (%s, %s), %d local / %d global devices",
            jax.process_index(), jax.process_count(), settings.mode, settings.source,
            jax.local_device_count(), jax.device_count())
  return settings


def process_rows(sharding: jax.sharding.Sharding, num_rows: int) -> np.ndarray:
  """int64 [R] global rows of a [num_rows, ...] batch that this process's devices hold.

  The rows of every addressable shard of `sharding` (split along the leading axis), sorted;
  all rows with one process, or when the batch is replicated across processes.

  >>> mesh = jax.make_mesh((1,), ("data",))
  >>> process_rows(jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")), 4)
  array([0, 1, 2, 3])
  """
  rows = set()
  for index in sharding.addressable_devices_indices_map((num_rows,)).values():
    rows.update(range(*index[0].indices(num_rows)))
  return np.asarray(sorted(rows), dtype=np.int64)


def global_batch(sharding: jax.sharding.Sharding, local_batch: Any, num_rows: int) -> Any:
  """A global batch (pytree of [num_rows, ...] arrays sharded by `sharding`) from this
  process's rows (`local_batch`: the rows `process_rows(sharding, num_rows)`, in order)."""
  shapes = jax.tree.map(lambda x: (num_rows,) + tuple(np.shape(x)[1:]), local_batch)
  return jax.make_array_from_process_local_data(sharding, local_batch, shapes)
