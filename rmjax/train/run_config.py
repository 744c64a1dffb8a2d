"""Config sections every training config has, with their defaults (one home for them)."""

from typing import Any

import ml_collections

from rmjax.models import DEFAULT_LOGICAL_AXIS_RULES


def model_execution(model: ml_collections.ConfigDict) -> dict[str, Any]:
  """How a decoder's layers run, not what they are: config.model's `attention`,
  `scan_layers` and `remat` (`rmjax.models.TransformerConfig`), defaults where the section
  leaves them out; keyword arguments of `hf_decoder.decoder_config_from_hf`.

  >>> model_execution(ml_collections.ConfigDict(dict(d_model=8, remat="full")))
  {'attention': 'reference', 'scan_layers': False, 'remat': 'full'}
  """
  return dict(attention=model.get("attention", "reference"),
              scan_layers=model.get("scan_layers", False), remat=model.get("remat", "none"))


def mesh_config() -> ml_collections.ConfigDict:
  """config.mesh: shape (data -1 = every device, fsdp 1, tensor 1), num_devices (0 = every
  device; n = the first n devices of this host, `rmjax.parallel.mesh_devices`) and the
  logical-axis rules (`rmjax.models.DEFAULT_LOGICAL_AXIS_RULES`); mesh presets replace the
  shape."""
  return ml_collections.ConfigDict(dict(
      shape=ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)), num_devices=0,
      logical_axis_rules=tuple(DEFAULT_LOGICAL_AXIS_RULES)))


def distributed_config() -> ml_collections.ConfigDict:
  """config.distributed (`rmjax.parallel.initialize_distributed`): empty = one process, or a
  SLURM / Cloud TPU cluster detected from the environment; auto=True forces detection."""
  return ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=0, process_id=-1, auto=False,
      initialization_timeout=300))


def dry_run_config() -> ml_collections.ConfigDict:
  """config.dry_run: target, a TPU slice or topology ("v5e-256", "v4-64", "v5e:4x4"; "" =
  train as usual). With a target the job compiles its steps for that TPU from shapes alone
  and writes the report to workdir/dry_run.json instead of training
  (`rmjax.train.dry_run`); the mesh is config.mesh.shape over the slice's chips. eval_step
  (default True): also compile the eval step of a job with the default step."""
  return ml_collections.ConfigDict(dict(target="", eval_step=True))
