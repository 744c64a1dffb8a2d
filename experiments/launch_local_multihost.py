r"""Run N local processes of a trainer as one multi-process JAX job (CPU, gloo collectives).

  python -m experiments.launch_local_multihost --num_processes 2 --devices_per_process 2 -- \
      --config configs/reward_model.py:smoke,fsdp --workdir /tmp/rm_2proc

Everything after `--` goes to the trainer (`--module`, default
experiments.train_reward_model), unchanged, in every process. Each process gets
`devices_per_process` simulated CPU devices (JAX_NUM_CPU_DEVICES) and the coordinator on a
free localhost port through RMJAX_COORDINATOR_ADDRESS / RMJAX_NUM_PROCESSES /
RMJAX_PROCESS_ID, which `rmjax.parallel.initialize_distributed` reads; the processes then
form one mesh of num_processes x devices_per_process devices, exactly as the hosts of a pod
do. Process 0 prints to this terminal; the others write <log_dir>/process_<i>.log. When one
process fails, or on --timeout or Ctrl-C, the others are stopped. The exit status is the
first failing process's (0 when all succeed).

On a real cluster no launcher is needed: run the trainer once per host with
--config.distributed.* set (or under srun / on a TPU slice, where it is detected); see
"Running at scale" in the README.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A TCP port on localhost that was free a moment ago."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def process_env(process_id: int, num_processes: int, devices_per_process: int, port: int,
                base: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of local process `process_id`."""
  env = dict(os.environ if base is None else base)
  env.update(
      JAX_PLATFORMS="cpu",
      JAX_NUM_CPU_DEVICES=str(devices_per_process),
      JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
      RMJAX_COORDINATOR_ADDRESS=f"localhost:{port}",
      RMJAX_NUM_PROCESSES=str(num_processes),
      RMJAX_PROCESS_ID=str(process_id),
      PYTHONUNBUFFERED="1",
  )
  return env


def _stop(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
  """SIGTERM, then SIGKILL, to each still-running process's own group (by id)."""
  for proc in procs:
    if proc.poll() is None:
      try:
        os.killpg(proc.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
  deadline = time.time() + grace_s
  for proc in procs:
    try:
      proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      proc.wait()


def launch(trainer_args: list[str], *, num_processes: int, devices_per_process: int,
           module: str = "experiments.train_reward_model", port: int = 0,
           log_dir: str | None = None, timeout: float | None = None) -> int:
  """Starts the processes, waits for them, and returns the job's exit status."""
  if num_processes < 1 or devices_per_process < 1:
    raise ValueError(f"--num_processes and --devices_per_process: expected >= 1, got "
                     f"{num_processes} and {devices_per_process}")
  port = port or free_port()
  log_dir = log_dir or tempfile.mkdtemp(prefix="rmjax_multihost_")
  os.makedirs(log_dir, exist_ok=True)
  procs, logs = [], []
  try:
    for i in range(num_processes):
      if i == 0:
        out = None  # Process 0 talks to this terminal.
      else:
        out = open(os.path.join(log_dir, f"process_{i}.log"), "w")
        logs.append(out)
      procs.append(subprocess.Popen(
          [sys.executable, "-m", module, *trainer_args], cwd=_REPO_ROOT,
          env=process_env(i, num_processes, devices_per_process, port), stdout=out,
          stderr=subprocess.STDOUT if out else None, start_new_session=True))
    deadline = None if timeout is None else time.time() + timeout
    while True:
      codes = [p.poll() for p in procs]
      failed = [c for c in codes if c not in (None, 0)]
      if failed:
        print(f"launch_local_multihost: a process exited with status {failed[0]}; stopping "
              f"the others (logs in {log_dir})", file=sys.stderr)
        _stop(procs)
        return failed[0]
      if all(c == 0 for c in codes):
        return 0
      if deadline is not None and time.time() > deadline:
        print(f"launch_local_multihost: timeout after {timeout:g} s; stopping the processes "
              f"(logs in {log_dir})", file=sys.stderr)
        _stop(procs)
        return 124
      time.sleep(0.2)
  finally:
    _stop(procs)
    for f in logs:
      f.close()


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if "--" in argv:
    split = argv.index("--")
    own, trainer_args = argv[:split], argv[split + 1:]
  else:
    own, trainer_args = argv, []
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      usage="python -m experiments.launch_local_multihost [options] -- TRAINER_ARGS")
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=2)
  parser.add_argument("--module", default="experiments.train_reward_model",
                      help="the trainer module every process runs")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  parser.add_argument("--log_dir", default=None,
                      help="where processes 1.. write their logs (default: a temp dir)")
  parser.add_argument("--timeout", type=float, default=None, help="seconds before stopping")
  args = parser.parse_args(own)
  try:
    return launch(trainer_args, num_processes=args.num_processes,
                  devices_per_process=args.devices_per_process, module=args.module,
                  port=args.port, log_dir=args.log_dir, timeout=args.timeout)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
