"""The paired direct-preference losses by name, so that a config can choose one.

Names are TRL's DPOConfig.loss_type values, plus "dpo" (= "sigmoid"),
"aot_pair" (TRL's older name of "aot_unpaired") and "f_divergence" (TRL's
f_divergence_type applied to "sigmoid": pass `divergence=`); every entry takes

    loss(policy_chosen_logps, policy_rejected_logps,
         reference_chosen_logps, reference_rejected_logps, **hyperparameters)

with the hyperparameters of its function (beta, label_smoothing, mask,
reduction, weights, ...), so a training task can do

    loss_fn = get_paired_loss(config.loss_type)
    loss = loss_fn(pi_w, pi_l, ref_w, ref_l, beta=config.beta, mask=mask)

"bco_pair" needs `reward_shift=` (see `bco_reward_shift`), "robust" needs
`label_smoothing=`; the AOT entries take no `weights`. Reference-free losses
(SimPO, ORPO) and losses with other inputs (SELM, DNO, KTO) have other
signatures and are not listed.
"""

import types
from typing import Callable

from rmjax.losses.direct_preference import bco
from rmjax.losses.direct_preference import distributional
from rmjax.losses.direct_preference import paired

PAIRED_LOSSES = types.MappingProxyType({
    "sigmoid": paired.dpo_loss,
    "dpo": paired.dpo_loss,
    "robust": paired.robust_dpo_loss,
    "ipo": paired.ipo_loss,
    "hinge": paired.hinge_loss,
    "exo_pair": paired.exo_pair_loss,
    "nca_pair": paired.nca_pair_loss,
    "bco_pair": bco.bco_pair_loss,
    "sppo_hard": paired.sppo_hard_loss,
    "aot": distributional.aot_loss,
    "aot_unpaired": distributional.aot_unpaired_loss,
    "aot_pair": distributional.aot_unpaired_loss,
    "apo_zero": paired.apo_zero_loss,
    "apo_down": paired.apo_down_loss,
    "discopop": paired.discopop_loss,
    "f_divergence": paired.f_divergence_dpo_loss,
})


def get_paired_loss(name: str) -> Callable:
  """The paired loss called `name` in `PAIRED_LOSSES`.

  Args:
    name: a TRL-style loss name, e.g. "sigmoid", "ipo", "apo_zero".

  Returns:
    The loss function (unbound: pass the hyperparameters per call).

  Raises:
    ValueError: an unknown name; the message lists the known ones.

  >>> from rmjax.losses.direct_preference import get_paired_loss
  >>> get_paired_loss("sigmoid").__name__
  'dpo_loss'
  """
  if not isinstance(name, str) or name not in PAIRED_LOSSES:
    raise ValueError(
        f"Unknown paired loss {name!r}; known names: "
        f"{', '.join(sorted(PAIRED_LOSSES))}.")
  return PAIRED_LOSSES[name]
