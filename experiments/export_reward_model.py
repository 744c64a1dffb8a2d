r"""Export a trained decoder reward model as a Hugging Face `*ForSequenceClassification` dir.

  python -m experiments.export_reward_model --workdir runs/hh_helpful_smollm2 \
      --out exported/smollm2_rm

Reads the run's config.json and its latest checkpoint (or --step), puts the trained parts of
a run on a frozen pretrained backbone back into the whole model
(`rmjax.tasks.reward_model.pretrained.whole_reward_model`) and writes config.json,
model.safetensors and tokenizer.json (`rmjax.checkpoints.export_reward_model`), so that
transformers' `AutoModelForSequenceClassification` scores text with it. The pad id is the
run's tokenizer's (HF finds each row's last token by it). Decoders only (Llama, Qwen2,
Qwen3, Gemma-2 layouts); an encoder run is refused.
"""

import json
import os
import sys

from absl import app
from absl import flags
import jax
import ml_collections

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's workdir.", required=True)
_OUT = flags.DEFINE_string("out", None, "The directory to write.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")


def export(workdir: str, out: str, step: int | None = None) -> str:
  """Writes the run in `workdir` (its checkpoint `step`, default the latest) to `out`."""
  from rmjax import checkpoints  # pylint: disable=g-import-not-at-top
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  from rmjax import models  # pylint: disable=g-import-not-at-top
  from rmjax.tasks import reward_model  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import pretrained  # pylint: disable=g-import-not-at-top
  from rmjax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from rmjax.train import program as program_lib  # pylint: disable=g-import-not-at-top

  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"--workdir={workdir!r}: no config.json (not a training run)")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.get("family", "bt") not in ("bt", "scaled_bt"):
    raise ValueError(f"--workdir={workdir!r}: family {config.family!r}; only scalar "
                     "Bradley-Terry reward models (bt, scaled_bt) export to "
                     "*ForSequenceClassification")
  config.mesh.shape.update(data=-1, fsdp=1, tensor=1)
  config.train.batch_size = config.eval.batch_size = len(jax.devices())
  task = reward_model.make_task(config)
  program = program_lib.build_program(config, task)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       async_save=False)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"--workdir={workdir!r}: no checkpoint under checkpoints/")
    params = jax.device_get(checkpointer.restore(step, program.abstract_state).params)
  finally:
    checkpointer.close()
  base = None
  if pretrained.enabled(config):
    backbone, _, params = pretrained.whole_reward_model(config, params)
    base = pretrained.open_checkpoint(config.pretrained.checkpoint).hf_config
  else:
    backbone = models.TransformerConfig.from_dict(
        dict(config.model.to_dict(), max_len=config.data.max_len))
  if not isinstance(backbone, models.TransformerConfig):
    raise ValueError(f"--workdir={workdir!r} trained an encoder; only decoder reward "
                     "models export to *ForSequenceClassification")
  tokenizer = rm_data.make_tokenizer(config.data.tokenizer)
  path = checkpoints.export_reward_model(out, backbone, params, pad_token_id=tokenizer.pad_id,
                                         base_hf_config=base)
  if hasattr(tokenizer, "tokenizer"):  # an HF tokenizer: its tokenizer.json goes along
    tokenizer.tokenizer.save(os.path.join(path, "tokenizer.json"))
  return str(path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    path = export(_WORKDIR.value, _OUT.value, _STEP.value)
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
