r"""Online RL of a policy against rewards: config and presets (rmjax.tasks.policy.config).

  python -m experiments.train_policy_rl                                 # default, see below
  python -m experiments.train_policy_rl --config configs/rl.py:smoke --workdir /tmp/rl_smoke
  python -m experiments.train_policy_rl --config configs/rl.py --config.rl.algorithm=rloo

rl.algorithm: reinforce, grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, remax,
opo, bnpo, gspo, cispo (rmjax.tasks.policy.rl_algorithms). Presets as configs/sft.py:
smoke (seconds; the reference is the policy's initialisation), default (the synthetic world;
pi_0 is an SFT run the experiment trains first in <workdir>/reference_sft), hh_rlhf, pod.
"""

from rmjax.tasks.policy.config import get_config as _get_config


def get_config(arg=None):
  return _get_config("rl", arg)
