r"""Online RL of a policy against rewards: config and presets (rmjax.tasks.policy.config).

  python -m experiments.train_policy_rl --workdir runs/rl_default        # the default
  python -m experiments.train_policy_rl --config configs/rl.py:smoke --workdir /tmp/rl_smoke
  python -m experiments.train_policy_rl --config configs/rl.py --config.rl.algorithm=rloo
  python -m experiments.train_policy_rl --config configs/rl.py:hh_rlhf \
      --config.rewards.sources.helpful.workdir=runs/rm_helpful_smollm2 \
      --config.rewards.sources.harmless.workdir=runs/rm_hh_smollm2 --workdir /tmp/rl_hh
  python -m experiments.train_policy_rl --config configs/rl.py:pod \
      --config.dry_run.target=v5e-256 --workdir /tmp/rl_pod_dry_run    # compile only, report

Presets:
  default  the synthetic policy world. pi_0 (reference and starting policy) is an SFT run,
           configs/sft.py:default, that the experiment trains first in
           <workdir>/reference_sft; the reward is a learned reward model,
           configs/reward_model.py:policy_world, trained first in <workdir>/reward_model
           (give --config.rl.reference_workdir / --config.rewards.sources.rm.workdir to
           reuse runs). 150 steps of B 16 prompts x G 8 samples, GRPO, KL to pi_0 in the
           reward (k1, beta 0.05), 2 epochs of minibatches of 64 (4 Adam updates per step).
           The train and eval metrics carry the samples' true reward r* next to pi_0's.
  smoke    seconds: d 32, 1 layer, B 8 x G 4 samples of <= 6 tokens, 4 steps; pi_0 is the
           policy's initialisation when run directly (the tests), an SFT smoke run through
           the experiment; the reward is the world's true reward.
  hh_rlhf  SmolLM2-135M-Instruct (pi_0 = the pretrained checkpoint) on the HH-RLHF prompts of
           ../shared/data, the sum of a helpful and a harmless reward model given on the
           command line (reward-model workdirs, e.g. configs/reward_model.py:hh_helpful,
           smollm2 and :hh_rlhf,smollm2; each re-tokenises the policy's text with its own
           tokenizer). 4 steps of B 4 x G 4 samples of <= 32 tokens: feasible on a CPU.
  pod      documented, not runnable here: the ~1.3B policy of configs/sft.py:pod on a
           4 x 16 x 4 mesh, B 256 x G 16 samples of <= 256 tokens, 2 epochs of minibatches of
           512, the helpful and harmless reward models colocated on the same mesh. Its dry
           run (--config.dry_run.target=v5e-256) compiles the generation, log-probs and
           update for the slice (and each reward model whose workdir is given); the rl
           task runs on one process, so a real run needs a single-host slice.

rl.algorithm: reinforce, grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, remax,
opo, bnpo, gspo, cispo, ppo (a value head + GAE) (rmjax.tasks.policy.rl_algorithms); config.rl's other fields:
rmjax.tasks.policy.rl.default_rl_config; config.rewards: rmjax.tasks.policy.rewards. The
learning-rate schedule counts optimiser updates (train.num_steps x rl.epochs x B G /
rl.minibatch_size of them).
"""

from rmjax.tasks.policy.config import get_config as _get_config


def get_config(arg=None):
  return _get_config("rl", arg)
