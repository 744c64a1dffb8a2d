"""Command-line `--config.a.b=value` overrides that reject unknown keys with a clear message.

ml_collections' config flags fail on an unknown key with a bare AttributeError traceback; this
parser checks every override against the loaded config first and names the bad key, with
the closest valid ones.
"""

import difflib
import importlib.util
import sys
from collections.abc import Callable

from absl import flags
import ml_collections


def _load_config(spec: str) -> ml_collections.ConfigDict:
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_rmjax_config", path)
  if module_spec is None:
    raise FileNotFoundError(f"--config: no config file at {path!r}")
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"--config: no config file at {path!r}") from e
  return module.get_config(arg) if arg else module.get_config()


def _leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for key, value in config.items():
    keys.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      keys += _leaf_keys(value, prefix + key + ".")
  return keys


def unknown_override_keys(config: ml_collections.ConfigDict,
                          argv: list[str], flag_name: str = "config") -> list[tuple[str, list[str]]]:
  """[(bad key, close matches)] for each `--config.key=...` in argv that the config lacks."""
  valid = set(_leaf_keys(config))
  bad = []
  for arg in argv:
    for prefix in (f"--{flag_name}.", f"-{flag_name}."):
      if arg.startswith(prefix):
        key = arg[len(prefix):].split("=", 1)[0]
        if key not in valid:
          bad.append((key, difflib.get_close_matches(key, sorted(valid), n=3)))
  return bad


def flags_parser_rejecting_unknown_keys(default_config_file: str, flag_name: str = "config"
                                        ) -> Callable[[list[str]], list[str]]:
  """An `absl.app.run(flags_parser=...)` that exits with a message on an unknown config key.

  Args:
    default_config_file: the config flag's default (`path[:preset]`).
    flag_name: the name of the config flag.
  """

  def parse(argv: list[str]) -> list[str]:
    spec = default_config_file
    for i, arg in enumerate(argv):
      if arg.startswith(f"--{flag_name}="):
        spec = arg.split("=", 1)[1]
      elif arg == f"--{flag_name}" and i + 1 < len(argv):
        spec = argv[i + 1]
    try:
      config = _load_config(spec)
    except (FileNotFoundError, ValueError) as e:
      sys.exit(f"error: {e}")
    bad = unknown_override_keys(config, argv, flag_name)
    if bad:
      lines = [f"error: unknown config key --{flag_name}.{key}" +
               (f" (did you mean: {', '.join(close)}?)" if close else "") for key, close in bad]
      sys.exit("\n".join(lines))
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      sys.exit(f"error: {e}\nPass --helpshort or --helpfull to see help on flags.")

  return parse


def define_config_and_workdir_flags(config_file: str, *, lock_config: bool,
                                    workdir_default: str) -> None:
  """Defines a job script's two flags: `--config` (an ml_collections config file,
  `path[:preset]`, default `config_file`) and `--workdir` (default described by
  `workdir_default`). Call it only when the script runs (`if __name__ == "__main__"`), so
  that importing two scripts into one process never defines a flag twice."""
  from ml_collections import config_flags  # noqa: PLC0415

  config_flags.DEFINE_config_file(
      "config", config_file, "Config file, optionally with `:preset`.", lock_config=lock_config)
  flags.DEFINE_string("workdir", None, f"Output directory; default: {workdir_default}.")
