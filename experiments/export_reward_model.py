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

import os
import sys

from absl import app
from absl import flags

def _define_flags() -> None:
  """The command-line flags, defined only when this file runs as a script: importing it
  (tests, notebooks, another experiment) defines none, so two experiments never clash."""
  flags.DEFINE_string("workdir", None, "The trained run's workdir.", required=True)
  flags.DEFINE_string("out", None, "The directory to write.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")


def export(workdir: str, out: str, step: int | None = None) -> str:
  """Writes the run in `workdir` (its checkpoint `step`, default the latest) to `out`."""
  from rmjax import checkpoints  # pylint: disable=g-import-not-at-top
  from rmjax import data as rm_data  # pylint: disable=g-import-not-at-top
  from rmjax import models  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import pretrained  # pylint: disable=g-import-not-at-top
  from rmjax.tasks.reward_model import scoring  # pylint: disable=g-import-not-at-top

  config = scoring.read_run_config(workdir)
  if config.get("family", "bt") not in ("bt", "scaled_bt"):
    raise ValueError(f"--workdir={workdir!r}: family {config.family!r}; only scalar "
                     "Bradley-Terry reward models (bt, scaled_bt) export to "
                     "*ForSequenceClassification")
  run = scoring.restore_run(workdir, step)
  params = run.params
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
    path = export(flags.FLAGS.workdir, flags.FLAGS.out, flags.FLAGS.step)
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {path}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
