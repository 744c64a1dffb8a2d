"""The RL task's algorithms by name: advantages and the policy loss, from `rmjax.losses`.

An algorithm is one record (`Algorithm`): the advantage estimator it uses and the policy
loss it minimises. Every piece is an existing function of `rmjax.losses`; this module only
lays the rollout out for them (N = B * G rows, the G samples of a prompt adjacent, T
response tokens):

  name                   advantages (A)                                       policy loss
  reinforce              r - b, b = rl.baseline (a constant; Williams 1992)   vanilla -A log pi
  grpo                   (r - mean_group) / (std_group + eps)                 ppo clip
  dr_grpo                r - mean_group                                       ppo clip
  rloo                   r - mean of the other G - 1                          ppo clip
  reinforce_pp           KL-shaped token returns, whitened over the batch     ppo clip
  reinforce_pp_baseline  r - mean_group, whitened over the batch's tokens     ppo clip
  remax                  r - r(greedy response of the prompt)                 ppo clip
  opo                    r - length-weighted group mean                       ppo clip
  bnpo                   (s - p_group) / BetaPDF(p_group), s in rl.reward_range ppo clip
  gspo                   grpo's                                               gspo (sequence ratio)
  cispo                  grpo's                                               cispo (clipped IS weight)
  ppo                    GAE(gamma, lam) on the KL-shaped token rewards with a ppo clip
                         value head V (a second head on the policy's backbone:  + vf_coef x
                         params["value_head"], kernel [D] and bias, zero-init);  clipped value
                         advantages whitened over the batch's tokens           loss to the returns

r is the combined reward of the reward pipeline, minus beta * sum_t KL_t when the KL is in
the reward (`rl.kl_in = "reward"`, `kl_in_reward`'s shaping summed over the response for
sequence-level estimators; REINFORCE++ takes the token-level shaping itself). Rows with a NaN
reward and (with `rl.dynamic_sampling`) groups whose rewards are all equal are masked out of
the advantages and the loss.

The loss of a minibatch (`minibatch_loss`):

  loss = policy_loss(log pi, log pi_old, A)                 (aggregated by rl.loss_aggregation)
         - entropy_coef * agg(H(pi(. | x, y_<t)))           (`entropy_from_logits`)
         + beta * agg(KL_t(pi || pi_ref))                   (rl.kl_in = "loss", `kl_penalty`)

log pi is taken at the sampling temperature (logits / tau), as the sampler's and the old
log-probs are, so that the ratio is 1 on the first update of fresh samples.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

from rmjax import losses
from rmjax.losses import advantages as adv_lib
from rmjax.losses import kl as kl_lib
from rmjax.losses import policy_gradient as pg


class Algorithm(NamedTuple):
  """An RL algorithm: its advantage estimator's name and its policy loss's name; whether it
  needs a greedy response per prompt (ReMax) or a critic (PPO's value head)."""
  advantages: str
  policy_loss: str
  needs_greedy: bool = False
  critic: bool = False


ALGORITHMS = {
    "reinforce": Algorithm("reinforce", "vanilla"),
    "grpo": Algorithm("grpo", "ppo"),
    "dr_grpo": Algorithm("dr_grpo", "ppo"),
    "rloo": Algorithm("rloo", "ppo"),
    "reinforce_pp": Algorithm("reinforce_pp", "ppo"),
    "reinforce_pp_baseline": Algorithm("reinforce_pp_baseline", "ppo"),
    "remax": Algorithm("remax", "ppo", needs_greedy=True),
    "opo": Algorithm("opo", "ppo"),
    "bnpo": Algorithm("bnpo", "ppo"),
    "gspo": Algorithm("grpo", "gspo"),
    "cispo": Algorithm("grpo", "cispo"),
    "ppo": Algorithm("gae", "ppo", critic=True),
}
VALUE_HEAD = "value_head"


def policy_params(params: Any) -> Any:
  """The language model's params: `params` without the value head (PPO), else `params`."""
  if isinstance(params, dict) and VALUE_HEAD in params:
    return {k: v for k, v in params.items() if k != VALUE_HEAD}
  return params


def init_value_head(d_model: int) -> dict:
  """The value head V(h) = h . kernel + bias, zero-initialised (V = 0 at the start: GAE
  begins as the reward-to-go)."""
  return {"kernel": jnp.zeros((d_model,), jnp.float32), "bias": jnp.zeros((), jnp.float32)}
KL_PLACES = ("reward", "loss", "none")
KL_ESTIMATORS = ("k1", "k2", "k3")


def get_algorithm(name: str) -> Algorithm:
  """The record of `name`; ValueError naming rl.algorithm and the closest known name."""
  if name not in ALGORITHMS:
    close = difflib.get_close_matches(str(name), ALGORITHMS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"rl.algorithm={name!r} is not known{hint}; expected one of "
                     f"{sorted(ALGORITHMS)}")
  return ALGORITHMS[name]


def sequence_rewards(rewards: jax.Array, kl_tokens: jax.Array, beta: jax.Array,
                     kl_in_reward: bool) -> jax.Array:
  """[N] r_n - beta sum_t KL_nt when the KL is in the reward, else r_n (KL_nt 0 off the
  response, `kl_penalty`)."""
  if not kl_in_reward:
    return rewards
  return rewards - beta * jnp.sum(kl_tokens, axis=-1)


def advantages(algorithm: Algorithm, rl: Any, rewards: jax.Array, valid: jax.Array,
               token_mask: jax.Array, kl_tokens: jax.Array, beta: jax.Array, *,
               kl_in_reward: bool, lengths: jax.Array,
               greedy_rewards: jax.Array | None = None) -> jax.Array:
  """float32 [N, T] token advantages of a rollout.

  Args:
    algorithm: the `Algorithm` record.
    rl: config.rl (group_size, baseline, scale_rewards, reward_range).
    rewards: float32 [N] combined rewards (finite where `valid`).
    valid: bool [N] rows that take part (finite reward, kept group).
    token_mask: bool [N, T] response tokens.
    kl_tokens: float32 [N, T] per-token KL estimate to the reference (0 off the response).
    beta: float32 [] the KL coefficient.
    kl_in_reward: whether the KL shapes the reward.
    lengths: int [N] response lengths (OPO).
    greedy_rewards: float32 [B] rewards of the greedy responses (ReMax).
  """
  g = int(rl.group_size)
  n = rewards.shape[0]
  rewards = jnp.where(valid, rewards, 0.0)
  token_mask = token_mask & valid[:, None]
  name = algorithm.advantages
  if name == "reinforce_pp":
    beta_pp = beta if kl_in_reward else 0.0
    adv, _ = adv_lib.reinforce_plus_plus_advantages(rewards, token_mask, kl=kl_tokens,
                                                    beta=beta_pp)
    return adv
  seq = sequence_rewards(rewards, kl_tokens, beta, kl_in_reward)
  if name == "reinforce_pp_baseline":
    return adv_lib.reinforce_plus_plus_baseline_advantages(seq, token_mask, group_size=g)
  if name == "reinforce":
    a = adv_lib.reinforce_advantages(seq, float(rl.baseline), mask=valid)
    return losses.broadcast_to_tokens(a, token_mask)
  grouped = seq.reshape(n // g, g)
  gmask = valid.reshape(n // g, g)
  if name == "grpo":
    a = adv_lib.grpo_advantages(grouped, mask=gmask, scale_rewards=rl.scale_rewards)
  elif name == "dr_grpo":
    a = adv_lib.dr_grpo_advantages(grouped, mask=gmask)
  elif name == "rloo":
    a = adv_lib.rloo_advantages(grouped, mask=gmask)
  elif name == "remax":
    a = adv_lib.remax_advantages(grouped, greedy_rewards, mask=gmask)
  elif name == "opo":
    a = adv_lib.opo_advantages(grouped, lengths.reshape(n // g, g).astype(jnp.float32),
                               mask=gmask)
  elif name == "bnpo":
    a = adv_lib.bnpo_advantages(grouped, mask=gmask, reward_range=tuple(rl.reward_range))
  else:
    raise ValueError(f"unknown advantage estimator {name!r}")
  return losses.broadcast_to_tokens(a.reshape(n), token_mask)


def response_outputs(graphdef: Any, params: Any, tokens: jax.Array, mask: jax.Array,
                     num_response: int, temperature: float, *, critic: bool = False):
  """(logits, values): float32 [N, T, V] logits / tau that predict the T = `num_response`
  response tokens of `tokens` [N, P + T] (prompt left-padded to width P, then the response,
  as `rmjax.generation` lays them out), and with `critic` the value head's [N, T] values of
  the same states (else None)."""
  prompt_width = tokens.shape[1] - num_response
  model = nnx.merge(graphdef, policy_params(params))
  hidden = model(tokens, mask)[:, prompt_width - 1:-1]
  logits = model.lm_logits(hidden).astype(jnp.float32)
  if temperature != 1.0:
    logits = logits / temperature
  values = None
  if critic:
    head = params[VALUE_HEAD]
    values = hidden.astype(jnp.float32) @ head["kernel"] + head["bias"]
  return logits, values


def response_logits(graphdef: Any, params: Any, tokens: jax.Array, mask: jax.Array,
                    num_response: int, temperature: float) -> jax.Array:
  """The logits of `response_outputs`."""
  return response_outputs(graphdef, params, tokens, mask, num_response, temperature)[0]


def response_values(graphdef: Any, params: Any, tokens: jax.Array, mask: jax.Array,
                    response_mask: jax.Array) -> jax.Array:
  """float32 [N, T] the value head's V of each response state, 0 off the response."""
  _, values = response_outputs(graphdef, params, tokens, mask, response_mask.shape[1], 1.0,
                               critic=True)
  return jnp.where(response_mask, values, 0.0)


def gae_advantages(rl: Any, rewards: jax.Array, valid: jax.Array, token_mask: jax.Array,
                   kl_tokens: jax.Array, beta: jax.Array, values: jax.Array, *,
                   kl_in_reward: bool) -> tuple[jax.Array, jax.Array]:
  """PPO's (advantages, returns) [N, T]: token rewards r_t = score 1[t last] - beta KL_t
  (`kl_in_reward`; beta 0 unless the KL is in the reward), GAE(rl.gamma, rl.lam) against
  the old values (`gae`), advantages whitened over the valid tokens (`batch_whiten`)."""
  token_mask = token_mask & valid[:, None]
  token_rewards = kl_lib.kl_in_reward(jnp.where(valid, rewards, 0.0), kl_tokens, token_mask,
                                      beta=beta if kl_in_reward else 0.0)
  adv, returns = adv_lib.gae(token_rewards, values, token_mask, gamma=float(rl.gamma),
                             lam=float(rl.lam))
  return losses.batch_whiten(adv, mask=token_mask), returns


def response_token_log_probs(graphdef: Any, params: Any, tokens: jax.Array, mask: jax.Array,
                             response_tokens: jax.Array, response_mask: jax.Array, *,
                             temperature: float) -> jax.Array:
  """float32 [N, T] log pi(y_t | x, y_<t) at `temperature`, 0 off the response."""
  logits = response_logits(graphdef, params, tokens, mask, response_tokens.shape[1],
                           temperature)
  return losses.token_log_probs(logits, response_tokens, mask=response_mask)


def policy_loss(algorithm: Algorithm, rl: Any, logp, old_logp, adv, mask, *, agg: str,
                norm_constant: float | None):
  """(loss, metrics) of the algorithm's policy loss (`rmjax.losses.policy_gradient`)."""
  kw = dict(agg=agg, norm_constant=norm_constant)
  name = algorithm.policy_loss
  if name == "vanilla":
    loss, metrics = pg.vanilla_policy_gradient_loss(logp, adv, mask, **kw)
    return loss, {**metrics, "clip_fraction": jnp.zeros((), jnp.float32)}
  if name == "gspo":
    return pg.gspo_loss(logp, old_logp, adv, mask, eps_low=rl.gspo_eps_low,
                        eps_high=rl.gspo_eps_high, **kw)
  if name == "cispo":
    return pg.cispo_loss(logp, old_logp, adv, mask, eps_high=rl.eps_high, **kw)
  return pg.ppo_clip_loss(logp, old_logp, adv, mask, eps_low=rl.eps_low, eps_high=rl.eps_high,
                          dual_clip=rl.dual_clip or None, **kw)


def make_minibatch_loss(algorithm: Algorithm, rl: Any, graphdef: Any, *,
                        temperature: float, norm_constant: float | None
                        ) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
  """`loss(params, mb, beta) -> (loss, metrics)` of a minibatch (see the module docstring).

  mb: tokens, mask [n, P + T]; response_tokens, response_mask, old_logp, ref_logp,
  advantages [n, T]; with a critic also old_values and returns [n, T]. Metrics: loss,
  policy_loss, entropy, kl_loss (the aggregated KL penalty, 0 unless rl.kl_in = "loss"),
  clip_fraction, approx_kl, value_loss (0 without a critic).
  """
  agg = rl.loss_aggregation

  def loss_fn(params, mb, beta):
    logits, values = response_outputs(graphdef, params, mb["tokens"], mb["mask"],
                                      mb["response_tokens"].shape[1], temperature,
                                      critic=algorithm.critic)
    mask = mb["response_mask"]
    logp = losses.token_log_probs(logits, mb["response_tokens"], mask=mask)
    pl, metrics = policy_loss(algorithm, rl, logp, mb["old_logp"], mb["advantages"], mask,
                              agg=agg, norm_constant=norm_constant)
    entropy = pg.aggregate_token_losses(losses.entropy_from_logits(logits, mask=mask), mask,
                                        agg, norm_constant=norm_constant)
    loss = pl - rl.entropy_coef * entropy
    kl_loss = jnp.zeros((), jnp.float32)
    if rl.kl_in == "loss":
      kl_t = kl_lib.kl_penalty(logp, mb["ref_logp"], estimator=rl.kl_estimator, mask=mask)
      kl_loss = pg.aggregate_token_losses(kl_t, mask, agg, norm_constant=norm_constant)
      loss = loss + beta * kl_loss
    value_loss = jnp.zeros((), jnp.float32)
    if algorithm.critic:
      value_loss, _ = pg.clipped_value_loss(values, mb["old_values"], mb["returns"], mask,
                                            clip_range=rl.value_clip, agg=agg,
                                            norm_constant=norm_constant)
      loss = loss + rl.vf_coef * value_loss
    out = {"value_loss": jax.lax.stop_gradient(value_loss),"loss": loss, "policy_loss": pl, "entropy": jax.lax.stop_gradient(entropy),
           "kl_loss": jax.lax.stop_gradient(kl_loss),
           "clip_fraction": metrics["clip_fraction"],
           "approx_kl": metrics.get("approx_kl", jnp.zeros((), jnp.float32))}
    return loss, out

  return loss_fn
