r"""Direct preference optimisation of a policy: config and presets (rmjax.tasks.policy.config).

  python -m experiments.train_policy --config configs/dpo.py           # SFT reference, then DPO
  python -m experiments.train_policy --config configs/dpo.py --config.dpo.loss=ipo
  python -m experiments.train_policy --config configs/dpo.py \
      --config.dpo.reference_workdir=runs/sft_default --workdir /tmp/dpo
  python -m experiments.train_policy --config configs/dpo.py:hh_rlhf --workdir /tmp/dpo_hh

dpo.loss: any name of rmjax.losses.direct_preference.PAIRED_LOSSES ("sigmoid" = DPO, "ipo",
"hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
"apo_zero", "apo_down", "discopop", "f_divergence") or the reference-free, length-normalised
"simpo" and "orpo" (dpo.beta is SimPO's beta; set it to ~2 for SimPO); dpo.options holds its other keyword
arguments (e.g. --config.dpo.options.divergence=js_divergence for "f_divergence"); dpo.wpo and
dpo.ld_alpha add WPO weighting and LD-DPO. On synthetic data without dpo.reference_workdir
the experiment first trains the SFT reference (configs/sft.py:<dpo.reference_preset>) in
<workdir>/reference_sft. Presets as configs/sft.py.
"""

from rmjax.tasks.policy.config import get_config as _get_config


def get_config(arg=None):
  return _get_config("dpo", arg)
