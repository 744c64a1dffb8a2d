r"""Study (issue 16, synthetic half): transforming and combining rewards against overoptimisation.

  python3 -m experiments.study_transform_and_combine --workdir runs/study_transform_and_combine
  python3 -m experiments.study_transform_and_combine --smoke --workdir /tmp/study_tc

Claims tested (each gets a verdict in results.json, computed by the rule written next to it):

* Gao et al. 2022 ("Scaling Laws for Reward Model Overoptimization", arXiv:2210.10760): optimising
  a proxy reward model, the true (gold) reward first rises then falls against d = sqrt(KL), and
  follows R_bon(d) = d (alpha - beta d) for best-of-n and R_RL(d) = d (alpha - beta log d) for RL.
* Wang et al. 2024 ("Transforming and Combining Rewards for Aligning Large Language Models",
  arXiv:2402.00742): the log-sigmoid-centred transform log sigmoid(r - r_ref(x)) reduces reward
  hacking, and summing transformed rewards (the logical AND) gives policies good on every
  property instead of trading one for the other.
* Coste et al. 2024 ("Reward Model Ensembles Help Mitigate Overoptimization", ICLR): conservative
  ensemble objectives (worst-case, uncertainty-weighted) reduce overoptimisation.

World (`rmjax.data.studies.make_two_property_world`): P prompts, each with R enumerable
responses (features phi in R^D), a known reference policy pi_0 (a stand-in for an SFT model),
two true rewards r_help, r_harm in tension (a shared latent with opposite signs) that both drop
off on responses pi_0 rarely produces; preference pairs drawn from pi_0 per property, BT-labelled
on the true reward, 25% of labels flipped. Proxies: per property a tanh MLP on phi trained with
`rmjax.losses.bradley_terry_loss` (full-batch Adam, `rmjax.train.optim.fit_full_batch`): one
single model on all pairs, and a 5-member ensemble (own initialisations, bootstrap resamples;
vmapped).

Optimisers, for each reward design u(x, y) (all exact except RL's sampling):
* best-of-n, n = 1, 2, 4, ..., 256: the exact law over the enumerable set
  (`rmjax.eval.best_of_n_distribution`) with its exact KL, next to the analytic
  log n - (n - 1) / n; a Monte Carlo check at a few n.
* the KL-regularised optimum pi* ~ pi_0 exp(u / beta) (`rmjax.eval.tilted_policy`), beta found
  by bisection for each point of a common sqrt(KL) grid.
* RL: a tabular softmax policy per prompt, initialised at pi_0, trained with sampled GRPO
  updates (G samples per prompt, `rmjax.losses.grpo_advantages`, the REINFORCE loss
  `vanilla_policy_gradient_loss`, GRPO's k3 KL penalty `kl_penalty(estimator="k3")` with
  coefficient kl_coef), one jitted `lax.scan` vmapped over designs x coefficients; the exact KL
  and true rewards of the learned tabular policy are recorded at checkpoints.

Designs (every transform / combination through `rmjax.transforms`' registry):
* raw_sum: r_help + r_harm (single proxies).
* lsc_and_median / lsc_and_q85: `logical_and` with r_ref the per-prompt exact pi_0 median /
  0.85 quantile of each proxy (`rmjax.eval.weighted_quantile`: exact over the enumerable set).
* par: `par` (sigmoid(r - r_ref), steepness 1) per property with r_ref the exact pi_0 median,
  summed.
* min / soft_min: `min` / `soft_min` (temperature 1) of the proxies centred at their pi_0
  medians (`centered`; raw BT scores have arbitrary offsets, so the minimum needs a common
  zero).
* ens_mean / ens_min / ens_uwo: the `ensemble` combination over the 5 members per property
  (mean; min = worst case; mean_minus_var with lambda = 1, Coste et al.'s UWO), then summed
  over the two properties.

Measurements against d = sqrt(KL) (mean over prompts of the exact per-prompt KL): expected true
r_help and r_harm; the true AND, E[sum_k log sigmoid(r_k - med_pi0(r_k))] (with med_pi0 the
exact pi_0 median of the TRUE reward per prompt, via `logical_and`); the mass better than pi_0's
median on BOTH true properties; exact win rates over pi_0 under each true reward (ties 1/2);
Gao fits (of the true-AND gain and of the true-sum gain) per design and optimiser. Writes
results.json and three plots.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from rmjax import eval as rm_eval  # noqa: E402
from rmjax import losses  # noqa: E402
from rmjax import transforms  # noqa: E402
from rmjax.data import studies  # noqa: E402
from rmjax.losses import advantages as advantages_lib  # noqa: E402
from rmjax.losses import kl as kl_lib  # noqa: E402
from rmjax.losses import policy_gradient  # noqa: E402
from rmjax.train import optim  # noqa: E402

try:
  from benchmarks.common import markdown_table  # noqa: E402
except ImportError:  # pragma: no cover - the repo root is not on the path
  def markdown_table(rows, columns=None):
    columns = list(rows[0]) if columns is None else columns
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)

DESIGNS = ("raw_sum", "lsc_and_median", "lsc_and_q85", "par", "min", "soft_min", "ens_mean",
           "ens_min", "ens_uwo")
MEASUREMENTS = ("true_help", "true_harm", "true_and", "true_sum", "both_above_median",
                "win_rate_help", "win_rate_harm", "proxy")
MEASUREMENT_NOTES = {
    "sqrt_kl": "d = sqrt(mean over prompts of the exact KL(pi || pi_0)), sqrt(nats)",
    "true_help": "E_pi[r_help] (true reward, mean over prompts)",
    "true_harm": "E_pi[r_harm] (true reward, mean over prompts)",
    "true_and": "E_pi[sum_k log sigmoid(r_k - med_pi0(r_k | x))], true rewards, med = exact pi_0 "
                "median per prompt (the logical AND of Wang et al. on the TRUE rewards; nats)",
    "true_sum": "E_pi[r_help + r_harm] (true)",
    "both_above_median": "P_pi(r_help > med_pi0(r_help) and r_harm > med_pi0(r_harm)) (true)",
    "win_rate_help": "P(r_help(y) > r_help(y0)), y ~ pi, y0 ~ pi_0, ties 1/2, exact",
    "win_rate_harm": "P(r_harm(y) > r_harm(y0)), y ~ pi, y0 ~ pi_0, ties 1/2, exact",
    "proxy": "E_pi[u] of the design's own reward u, standardised: (E_pi u - E_pi0 u) / sd_pi0(u) "
             "(sd averaged over prompts)",
}

RESULT_NOTES = {
    "per_seed/<seed>/best_of_n/<design>": "exact best-of-n law for each n: kl_exact (mean over "
        "prompts, nats), kl_analytic = log n - (n - 1) / n, sqrt_kl = sqrt(kl_exact), and every "
        "measurement (see units)",
    "per_seed/<seed>/exact_optimum/<design>": "pi* ~ pi_0 exp(u / beta) along the design's own "
        "sqrt(KL) range (up to 0.98 sqrt(largest possible KL)); beta per point",
    "per_seed/<seed>/rl/<design>": "one entry per KL coefficient: exact KL and measurements of "
        "the tabular policy at checkpoints (step)",
    "per_seed/<seed>/equal_kl": "every design on a common sqrt(KL) grid: exact optimum evaluated "
        "there (beta by bisection), best-of-n linearly interpolated between its n",
    "per_seed/<seed>/gao_fits/<design>/<optimiser>/<gold>/<form>": "least squares of the gold "
        "gain over pi_0, R(d) - R(0), against d = sqrt(KL), the point (0, 0) included; gold = "
        "true_and or true_sum; form best_of_n: d (alpha - beta d), rl: d (alpha - beta log d); "
        "peak_sqrt_kl / peak_value analytic (null when beta <= 0: no peak)",
    "per_seed/<seed>/peak_and_fall": "observed peak of each curve (d = 0 is pi_0) and its fall "
        "by the largest d of that curve (each design's own range)",
    "per_seed/<seed>/peak_and_fall_equal_kl": "the same on the common grid (comparable across "
        "designs)",
    "claims": "verdict per seed by the rule stated with each claim; holds_for_all_seeds = "
              "'reproduced' for every seed",
}

def _define_flags() -> None:
  """The command-line flags, defined only when this file runs as a script: importing it
  (tests, notebooks, another experiment) defines none, so two experiments never clash."""
  flags.DEFINE_string("workdir", "runs/study_transform_and_combine", "Output directory.")
  flags.DEFINE_integer("seed", 0, "First seed (the study runs seeds seed and seed + 1).")
  flags.DEFINE_integer("num_seeds", 2, "How many consecutive seeds to run.")
  flags.DEFINE_bool("smoke", False, "A seconds-long run (small world, few steps).")
  flags.DEFINE_bool("hh", False, "Also run the SmolLM2 half "
                    "(experiments.study_transform_and_combine_hh.run) if it exists.")


def config_for(seed: int, smoke: bool) -> dict:
  """The study's configuration (the smoke one is a seconds-long version of the full one)."""
  return {
      "seed": seed, "smoke": smoke,
      "num_prompts": 8 if smoke else 64, "num_responses": 32 if smoke else 256,
      "feature_dim": 12, "num_pairs": 300 if smoke else 500, "num_test_pairs": 2000,
      "flip_fraction": 0.25, "proxy_hidden": 32, "proxy_steps": 150 if smoke else 1000,
      "proxy_learning_rate": 0.01, "ensemble_size": 5,
      "best_of_n": [1, 2, 4, 8, 16, 32] if smoke else [2 ** i for i in range(9)],
      "monte_carlo_n": [4, 16] if smoke else [4, 16, 64], "monte_carlo_draws": 4000,
      "num_grid": 6 if smoke else 12, "soft_min_temperature": 1.0, "uwo_lambda": 1.0,
      "par_steepness": 1.0,
      "rl_kl_coefs": [0.03, 0.3] if smoke else [0.01, 0.03, 0.1, 0.3, 1.0],
      "rl_group_size": 8 if smoke else 16, "rl_steps": 40 if smoke else 400,
      "rl_learning_rate": 0.05, "rl_checkpoints": 5 if smoke else 10,
      "tilted_monte_carlo_draws": 20000,
  }


# ----------------------------------------------------------------------------------------------
# Proxies.
# ----------------------------------------------------------------------------------------------


def _init_mlp(key, in_dim, hidden_dim):
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (in_dim, hidden_dim)) / np.sqrt(in_dim),
          "b1": jnp.zeros(hidden_dim),
          "w2": jax.random.normal(k2, (hidden_dim,)) / np.sqrt(hidden_dim)}


def _mlp(params, x):
  return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def train_proxies(world, config, key):
  """Per property: a single MLP (all pairs) and an ensemble (bootstraps), scores [P, R].

  The 2 properties x (1 single + M members) MLPs train at once (one vmapped, jitted
  `fit_full_batch`): the single model weights every pair 1, member m weights pair i by how often
  a bootstrap resample drew it; every model has its own initialisation.

  Returns (single [2, P, R], members [2, M, P, R], quality dict).
  """
  feats = jnp.asarray(world.features, jnp.float32)
  members, hidden = config["ensemble_size"], config["proxy_hidden"]
  chosen = jnp.stack([feats[t.prompt, t.chosen] for t in world.train])       # [2, N, D]
  rejected = jnp.stack([feats[t.prompt, t.rejected] for t in world.train])
  n = chosen.shape[1]

  @jax.jit
  def fit_all(key, chosen, rejected):
    k_init, k_boot = jax.random.split(key)
    inits = jax.vmap(jax.vmap(lambda kk: _init_mlp(kk, feats.shape[-1], hidden)))(
        jax.random.split(k_init, (2, members + 1)))
    draws = jax.random.randint(k_boot, (2, members, n), 0, n)
    counts = jax.vmap(jax.vmap(lambda d: jnp.bincount(d, length=n)))(draws)
    weights = jnp.concatenate([jnp.ones((2, 1, n)), counts.astype(jnp.float32)], 1)

    def fit(params, c, r, w):
      loss_fn = lambda p: losses.bradley_terry_loss(  # noqa: E731
          _mlp(p, c), _mlp(p, r), weights=w)
      return optim.fit_full_batch(loss_fn, params, num_steps=config["proxy_steps"],
                                  learning_rate=config["proxy_learning_rate"])[0]

    fitted = jax.vmap(jax.vmap(fit, in_axes=(0, None, None, 0)))(inits, chosen, rejected,
                                                                  weights)
    return jax.vmap(jax.vmap(_mlp, in_axes=(0, None)), in_axes=(0, None))(fitted, feats)

  scores = np.asarray(fit_all(key, chosen, rejected), np.float64)          # [2, 1 + M, P, R]
  single, ensemble, quality = scores[:, 0], scores[:, 1:], {}
  for k, name in enumerate(studies.PROPERTY_NAMES):
    s, m = single[k], ensemble[k]
    test = world.test[k]
    truth = world.true_rewards[k]
    pi0 = world.pi0

    def held_out(scores):
      return float(np.mean(scores[test.prompt, test.chosen] > scores[test.prompt, test.rejected]))

    def corr(scores):
      a = scores - (pi0 * scores).sum(1, keepdims=True)
      b = truth - (pi0 * truth).sum(1, keepdims=True)
      return float((pi0 * a * b).sum() / np.sqrt((pi0 * a * a).sum() * (pi0 * b * b).sum()))

    quality[name] = {
        "single_heldout_accuracy": held_out(s),
        "ensemble_mean_heldout_accuracy": held_out(m.mean(0)),
        "member_heldout_accuracy": [held_out(x) for x in m],
        "true_reward_heldout_accuracy": held_out(truth),
        "bayes_heldout_accuracy": float(np.mean(np.maximum(test.prob_chosen,
                                                           1 - test.prob_chosen))),
        "single_corr_with_truth_under_pi0": corr(s),
        "ensemble_mean_corr_with_truth_under_pi0": corr(m.mean(0)),
        "train_flipped_fraction": float(world.train[k].flipped.mean()),
    }
  return single, ensemble, quality


# ----------------------------------------------------------------------------------------------
# Designs.
# ----------------------------------------------------------------------------------------------


def design_rewards(single, members, pi0, config) -> dict:
  """Each design's reward u [P, R] (float64), computed with `rmjax.transforms`' registry.

  r_ref(x) is the exact pi_0 quantile of each proxy over the prompt's responses
  (`rmjax.eval.weighted_quantile`); the registry calls run as one jitted function.
  """
  P, R = pi0.shape
  med = np.stack([rm_eval.weighted_quantile(s, pi0, 0.5) for s in single])     # [2, P]
  q85 = np.stack([rm_eval.weighted_quantile(s, pi0, 0.85) for s in single])    # [2, P]
  par = transforms.get_transform("par", steepness=config["par_steepness"])
  centered = transforms.get_transform("centered")
  total = transforms.get_combination("sum")
  logical_and = transforms.get_combination("and")
  soft_min = transforms.get_combination("soft_min", temperature=config["soft_min_temperature"])
  ensembles = {name: transforms.get_combination("ensemble", method=method,
                                                uncertainty_penalty=config["uwo_lambda"])
               for name, method in (("ens_mean", "mean"), ("ens_min", "min"),
                                    ("ens_uwo", "mean_minus_var"))}

  @jax.jit
  def compute(single, members, med, q85):
    flat = lambda x: x.reshape(P * R, -1)  # noqa: E731
    both = jnp.stack([single[0], single[1]], -1)                                # [P, R, 2]
    per_row = lambda ref: jnp.repeat(ref.T, R, axis=0)  # [2, P] -> [P * R, 2]  # noqa: E731
    out = {"raw_sum": total(flat(both)),
           "lsc_and_median": logical_and(flat(both), reference_rewards=per_row(med)),
           "lsc_and_q85": logical_and(flat(both), reference_rewards=per_row(q85))}
    refs = [med[k][:, None] for k in range(2)]                                  # [P, 1]
    out["par"] = total(flat(jnp.stack([par(single[k], references=refs[k]) for k in range(2)],
                                      -1)))
    centred = flat(jnp.stack([centered(single[k], references=refs[k]) for k in range(2)], -1))
    out["min"] = transforms.get_combination("min")(centred)
    out["soft_min"] = soft_min(centred)
    for name, agg in ensembles.items():
      per_property = [agg(flat(jnp.moveaxis(members[k], 0, -1))) for k in range(2)]
      out[name] = total(jnp.stack(per_property, -1))
    return out

  f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  out = compute(f32(single), f32(members), f32(med), f32(q85))
  return {k: np.asarray(out[k], np.float64).reshape(P, R) for k in DESIGNS}


# ----------------------------------------------------------------------------------------------
# Measurements (all linear in the policy: sum_y pi(y) V(y)).
# ----------------------------------------------------------------------------------------------


def measurement_table(world):
  """[6, P, R] per-response values whose pi-expectations are the true measurements."""
  pi0, true = world.pi0, world.true_rewards
  med = np.stack([rm_eval.weighted_quantile(t, pi0, 0.5) for t in true])        # [2, P]
  P, R = pi0.shape
  and_true = transforms.get_combination("and")(
      jnp.asarray(np.stack(true, -1).reshape(P * R, 2), jnp.float32),
      reference_rewards=jnp.asarray(np.repeat(med.T, R, axis=0), jnp.float32))
  both = (true[0] > med[0][:, None]) & (true[1] > med[1][:, None])
  return np.stack([true[0], true[1], np.asarray(and_true, np.float64).reshape(P, R),
                   true[0] + true[1], both.astype(np.float64),
                   rm_eval.win_values(true[0], pi0), rm_eval.win_values(true[1], pi0)])


def measure(policy, values, u, pi0):
  """Measurements of policies [..., P, R]: dict name -> [...] (means over prompts)."""
  m = np.einsum("...pr,kpr->...k", policy, values) / policy.shape[-2]
  mean0 = (pi0 * u).sum(-1)
  sd0 = np.sqrt((pi0 * (u - mean0[:, None]) ** 2).sum(-1)).mean()
  proxy = (((policy * u).sum(-1) - mean0).mean(-1)) / sd0
  out = {name: m[..., i] for i, name in enumerate(MEASUREMENTS[:-1])}
  out["proxy"] = proxy
  return out


# ----------------------------------------------------------------------------------------------
# RL: tabular softmax, sampled GRPO updates.
# ----------------------------------------------------------------------------------------------


def rl_loss(logits, ref_log_probs, ys, u, kl_coef):
  """The tabular GRPO loss of one update: REINFORCE with group advantages + k3 KL penalty.

    A = grpo_advantages(u(x, y_g)) over each prompt's G samples (group mean, group std)
    loss = mean_{x, g} [-A log pi(y_g | x)] + kl_coef * mean_{x, g} k3(log pi, log pi_0)

  Args:
    logits: [P, R] policy logits (the tabular policy's parameters).
    ref_log_probs: [P, R] log pi_0.
    ys: [P, G] sampled responses (indices).
    u: [P, R] the design's reward.
    kl_coef: the KL coefficient.

  Returns:
    scalar loss; its gradient in `logits` is the sampled update.
  """
  num_prompts, group = ys.shape
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), ys, 1)           # [P, G]
  ref_logp = jnp.take_along_axis(ref_log_probs, ys, 1)
  adv = advantages_lib.grpo_advantages(jnp.take_along_axis(u, ys, 1))
  pg, _ = policy_gradient.vanilla_policy_gradient_loss(
      logp.reshape(-1, 1), adv.reshape(-1), jnp.ones((num_prompts * group, 1)))
  kl = jnp.mean(kl_lib.kl_penalty(logp, ref_logp, estimator="k3"))
  return pg + kl_coef * kl


def run_rl(pi0_logits, rewards, values, config, key):
  """Tabular GRPO for every design (rows of `rewards` [Dn, P, R]) and KL coefficient.

  Returns dict with kl [Dn, C, T] (exact mean KL at each checkpoint), measures [Dn, C, T, 7] of
  the true values, proxy expectations [Dn, C, T], and the checkpoint steps.
  """
  coefs = jnp.asarray(config["rl_kl_coefs"], jnp.float32)
  ref = jnp.asarray(pi0_logits, jnp.float32)
  ref = ref - jax.nn.logsumexp(ref, -1, keepdims=True)
  group, steps = config["rl_group_size"], config["rl_steps"]
  every = steps // config["rl_checkpoints"]
  optimizer = optax.adam(config["rl_learning_rate"])
  values = jnp.asarray(values, jnp.float32)
  P = ref.shape[0]

  def loss_fn(logits, ys, u, coef):
    return rl_loss(logits, ref, ys, u, coef)

  def one_run(u, coef, key):
    def step(carry, key):
      logits, opt_state = carry
      probs = jax.nn.softmax(logits, -1)
      cdf = jnp.cumsum(probs, -1)
      draws = jax.random.uniform(key, (P, group)) * cdf[:, -1:]
      ys = jnp.minimum(jax.vmap(jnp.searchsorted)(cdf, draws), logits.shape[-1] - 1)
      grads = jax.grad(loss_fn)(logits, ys, u, coef)
      updates, opt_state = optimizer.update(grads, opt_state, logits)
      return (optax.apply_updates(logits, updates), opt_state), None

    def chunk(carry, key):
      carry, _ = jax.lax.scan(step, carry, jax.random.split(key, every))
      logits = carry[0]
      pi = jax.nn.softmax(logits, -1)
      kl = jnp.mean(kl_lib.categorical_kl(logits, ref))
      return carry, (kl, jnp.einsum("pr,kpr->k", pi, values) / P, jnp.mean(jnp.sum(pi * u, -1)))

    init = (ref, optimizer.init(ref))
    _, out = jax.lax.scan(chunk, init, jax.random.split(key, config["rl_checkpoints"]))
    return out

  runs = jax.jit(jax.vmap(jax.vmap(one_run, in_axes=(None, 0, 0)), in_axes=(0, None, 0)))
  keys = jax.random.split(key, rewards.shape[0] * coefs.shape[0]).reshape(
      rewards.shape[0], coefs.shape[0])
  kl, meas, prox = runs(jnp.asarray(rewards, jnp.float32), coefs, keys)
  return {"kl": np.asarray(kl, np.float64), "measures": np.asarray(meas, np.float64),
          "proxy": np.asarray(prox, np.float64),
          "steps": [every * (i + 1) for i in range(config["rl_checkpoints"])]}


# ----------------------------------------------------------------------------------------------
# The study.
# ----------------------------------------------------------------------------------------------


def _sample(rng, probs, shape):
  """Draws from each row of probs [P, R] by inverse cdf: [P, *shape] response indices."""
  cdf = np.cumsum(probs, 1)
  size = int(np.prod(shape))
  return np.stack([np.minimum(np.searchsorted(c, rng.random(size) * c[-1], side="right"),
                              probs.shape[1] - 1).reshape(shape) for c in cdf])


def _fits(d, gains):
  out = {}
  for gold, gain in gains.items():
    for form, fit in (("best_of_n_form", rm_eval.fit_gao_best_of_n),
                      ("rl_form", rm_eval.fit_gao_rl)):
      out[f"{gold}/{form}"] = fit(np.concatenate([[0.0], d]),
                                  np.concatenate([[0.0], gain]))._asdict()
  return out


def _fall(d, values):
  """Peak of an observed curve and how far it falls by the largest d."""
  values = np.asarray(values)
  i = int(np.argmax(values))
  return {"base_value": float(values[0]), "peak_sqrt_kl": float(d[i]),
          "peak_value": float(values[i]),
          "value_at_largest_kl": float(values[-1]), "largest_sqrt_kl": float(d[-1]),
          "fall_from_peak": float(values[i] - values[-1]),
          "peak_is_interior": bool(0 < i < len(values) - 1)}


def _tolist(x):
  if isinstance(x, dict):
    return {k: _tolist(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_tolist(v) for v in x]
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return x.item()
  return x


def run_synthetic(seed: int = 0, smoke: bool = False) -> dict:
  """The synthetic study for one seed: every curve, fit, check and claim, as a JSON-able dict."""
  start = time.time()
  config = config_for(seed, smoke)
  world = studies.make_two_property_world(
      num_prompts=config["num_prompts"], num_responses=config["num_responses"],
      feature_dim=config["feature_dim"], num_pairs=config["num_pairs"],
      num_test_pairs=config["num_test_pairs"], flip_fraction=config["flip_fraction"],
      seed=seed)
  pi0 = world.pi0
  key_proxy, key_rl, _ = jax.random.split(jax.random.key(seed), 3)
  single, members, quality = train_proxies(world, config, key_proxy)
  t_proxies = time.time() - start
  designs = design_rewards(single, members, pi0, config)
  values = measurement_table(world)
  base = measure(pi0, values, designs["raw_sum"], pi0)

  # World summary: tension.
  true = world.true_rewards
  centred = true - (pi0 * true).sum(-1, keepdims=True)
  cov = (pi0 * centred[0] * centred[1]).sum() / np.sqrt(
      (pi0 * centred[0] ** 2).sum() * (pi0 * centred[1] ** 2).sum())
  top = max(1, int(round(0.05 * pi0.shape[1])))
  top_help = np.argsort(-true[0], 1)[:, :top]
  top_harm = np.argsort(-true[1], 1)[:, :top]
  overlap = np.mean([len(set(a) & set(b)) / top for a, b in zip(top_help, top_harm)])
  world_summary = {
      "corr_help_harm_under_pi0": float(cov),
      "top5pct_overlap_help_harm": float(overlap),
      "pi0_mean_true": {k: float(v) for k, v in base.items() if k != "proxy"},
      "pi0_effective_responses": float(np.mean(1 / (pi0 ** 2).sum(1))),
      "pi0_note": "pi_0 = softmax of known logits over each prompt's R responses, a stand-in for "
                  "an SFT policy (not trained)",
  }

  # Best-of-n (exact law) and its Monte Carlo check.
  bon = {}
  for name, u in designs.items():
    curve = {"n": config["best_of_n"], "kl_exact": [], "kl_analytic": [],
             **{m: [] for m in MEASUREMENTS}}
    for n in config["best_of_n"]:
      q, kl = rm_eval.best_of_n_distribution(pi0, u, n)
      curve["kl_exact"].append(float(kl.mean()))
      curve["kl_analytic"].append(float(rm_eval.best_of_n_kl(n)))
      for m, v in measure(q, values, u, pi0).items():
        curve[m].append(float(v))
    curve["sqrt_kl"] = np.sqrt(curve["kl_exact"]).tolist()
    bon[name] = curve
  rng = np.random.default_rng([seed, 16])
  mc = []
  u = designs["raw_sum"]
  for n in config["monte_carlo_n"]:
    draws = config["monte_carlo_draws"]
    ys = _sample(rng, pi0, (draws, n))                                   # [P, draws, n]
    scores = np.take_along_axis(u, ys.reshape(pi0.shape[0], -1), 1).reshape(ys.shape)
    picked = np.take_along_axis(ys, np.argmax(scores, -1)[..., None], -1)[..., 0]
    freq = np.stack([np.bincount(p, minlength=pi0.shape[1]) for p in picked]) / draws
    q, _ = rm_eval.best_of_n_distribution(pi0, u, n)
    sd = np.sqrt(np.maximum(q * (1 - q), 1.0 / draws) / draws)  # floor: q ~ 0 has sd ~ 0
    mc_true = np.mean(np.take_along_axis(true[0] + true[1], picked, 1))
    exact_true = float((q * (true[0] + true[1])).sum(1).mean())
    mc.append({"design": "raw_sum", "n": n, "draws_per_prompt": draws,
               "max_abs_freq_error": float(np.max(np.abs(freq - q))),
               "max_freq_error_in_binomial_sd_floored": float(np.max(np.abs(freq - q) / sd)),
               "true_sum_exact": exact_true, "true_sum_monte_carlo": float(mc_true)})

  # Exact KL-regularised optimum: each design's own curve up to 0.98 sqrt(its largest KL) (for the
  # fits and the falls), and a common sqrt(KL) grid up to 0.98 sqrt(the smallest largest KL over
  # designs) (for the equal-KL comparisons).
  top_kl = {name: rm_eval.max_tilted_kl(pi0, u) for name, u in designs.items()}
  grid = np.linspace(0, 0.98 * np.sqrt(min(top_kl.values())), config["num_grid"] + 1)[1:]
  exact, exact_common = {}, {}
  for name, u in designs.items():
    for target, store in ((np.linspace(0, 0.98 * np.sqrt(top_kl[name]),
                                       config["num_grid"] + 1)[1:], exact), (grid, exact_common)):
      betas = rm_eval.tilted_betas_for_kl(pi0, u, target ** 2)
      q, kl = rm_eval.tilted_policy(pi0, u, betas[:, None, None])
      curve = {"beta": betas.tolist(), "sqrt_kl": np.sqrt(kl.mean(-1)).tolist(),
               "largest_possible_kl": top_kl[name]}
      curve.update({m: v.tolist() for m, v in measure(q, values, u, pi0).items()})
      store[name] = curve
  # Invariant: the exact optimum's KL matches the Monte Carlo KL of its samples.
  u = designs["raw_sum"]
  q, kl = rm_eval.tilted_policy(pi0, u, rm_eval.tilted_betas_for_kl(pi0, u, grid[-1:] ** 2)[0])
  draws = config["tilted_monte_carlo_draws"]
  ys = _sample(rng, q, (draws,))
  log_ratio = np.log(np.take_along_axis(q, ys, 1)) - np.log(np.take_along_axis(pi0, ys, 1))
  tilted_check = {"design": "raw_sum", "sqrt_kl_target": float(grid[-1]),
                  "kl_exact": float(kl.mean()),
                  "kl_monte_carlo": float(log_ratio.mean()),
                  "monte_carlo_standard_error": float(log_ratio.std() / np.sqrt(log_ratio.size)),
                  "draws_per_prompt": draws}

  # RL.
  t_rl = time.time()
  names = list(designs)
  rl = run_rl(world.pi0_logits, np.stack([designs[n] for n in names]), values,
              config, key_rl)
  t_rl = time.time() - t_rl
  rl_curves = {}
  for i, name in enumerate(names):
    u = designs[name]
    mean0 = (pi0 * u).sum(-1)
    sd0 = np.sqrt((pi0 * (u - mean0[:, None]) ** 2).sum(-1)).mean()
    runs = []
    for c, coef in enumerate(config["rl_kl_coefs"]):
      run = {"kl_coef": coef, "step": rl["steps"], "sqrt_kl": np.sqrt(rl["kl"][i, c]).tolist(),
             "proxy": ((rl["proxy"][i, c] - mean0.mean()) / sd0).tolist()}
      run.update({m: rl["measures"][i, c, :, j].tolist()
                  for j, m in enumerate(MEASUREMENTS[:-1])})
      runs.append(run)
    rl_curves[name] = runs

  # Gao fits and falls, per design and optimiser; gold = true AND gain and true sum gain.
  fits, falls = {}, {}
  for name in names:
    fits[name], falls[name] = {}, {}
    for opt, curve in (("best_of_n", bon[name]), ("exact", exact[name])):
      d = np.asarray(curve["sqrt_kl"])
      gains = {g: np.asarray(curve[g]) - base[g] for g in ("true_and", "true_sum")}
      fits[name][opt] = _fits(d, gains)
      falls[name][opt] = {g: _fall(np.concatenate([[0.0], d]),
                                   np.concatenate([[base[g]], curve[g]]))
                          for g in ("true_and", "true_sum", "both_above_median")}
    d = np.concatenate([r["sqrt_kl"] for r in rl_curves[name]])
    gains = {g: np.concatenate([r[g] for r in rl_curves[name]]) - base[g]
             for g in ("true_and", "true_sum")}
    fits[name]["rl"] = _fits(d, gains)
    order = np.argsort(d)
    falls[name]["rl"] = {g: _fall(np.concatenate([[0.0], d[order]]),
                                  np.concatenate([[base[g]], (gains[g] + base[g])[order]]))
                         for g in ("true_and", "true_sum")}

  # Equal-KL comparisons: best-of-n interpolated to a common grid, the exact optimum on its grid.
  bon_top = min(bon[n]["sqrt_kl"][-1] for n in names)
  bon_grid = np.linspace(0, bon_top, config["num_grid"] + 1)[1:]
  equal_kl = {"exact": {"sqrt_kl": grid.tolist()}, "best_of_n": {"sqrt_kl": bon_grid.tolist()}}
  for name in names:
    equal_kl["exact"][name] = {m: exact_common[name][m] for m in MEASUREMENTS}
    equal_kl["best_of_n"][name] = {
        m: np.interp(bon_grid, bon[name]["sqrt_kl"], bon[name][m]).tolist() for m in MEASUREMENTS}
  falls_equal_kl = {
      name: {opt: {g: _fall(np.concatenate([[0.0], equal_kl[opt]["sqrt_kl"]]),
                            np.concatenate([[base[g]], equal_kl[opt][name][g]]))
                   for g in ("true_and", "true_sum", "both_above_median")}
             for opt in ("exact", "best_of_n")}
      for name in names}
  claims = evaluate_claims(equal_kl, falls, falls_equal_kl, fits, names)
  results = {
      "config": config, "world": world_summary, "proxy_quality": quality,
      "pi0_measurements": {k: float(v) for k, v in base.items()},
      "best_of_n": bon, "best_of_n_monte_carlo_check": mc, "exact_optimum": exact,
      "exact_optimum_kl_check": tilted_check, "rl": rl_curves, "equal_kl": equal_kl,
      "gao_fits": fits, "peak_and_fall": falls, "peak_and_fall_equal_kl": falls_equal_kl,
      "claims": claims,
      "timings_seconds": {"proxies": t_proxies, "rl": t_rl, "total": time.time() - start},
  }
  return _tolist(results)


def evaluate_claims(equal_kl, falls, falls_equal_kl, fits, names) -> dict:
  """Each claim's verdict from the numbers, with the rule next to it."""
  def at_least(design, other, measurement, optimisers=("exact", "best_of_n")):
    hits = []
    for opt in optimisers:
      a = np.asarray(equal_kl[opt][design][measurement])
      b = np.asarray(equal_kl[opt][other][measurement])
      hits.append(a >= b - 1e-12)
    return float(np.mean(np.concatenate(hits)))

  def verdict(share, full=0.75, part=0.5):
    return "reproduced" if share >= full else ("partly reproduced" if share >= part
                                                 else "not reproduced")

  claims = {}
  # Gao: rise then fall for the raw-sum single proxy, and the forms fit.
  falls_raw = falls["raw_sum"]
  def rises_then_falls(f):
    gain = f["peak_value"] - base_value(f)
    return bool(f["peak_is_interior"] and gain > 0 and f["fall_from_peak"] >= 0.1 * gain)

  base_value = lambda f: f["base_value"]  # noqa: E731
  rise_fall = {opt: rises_then_falls(falls_raw[opt]["true_sum"])
               for opt in ("best_of_n", "exact", "rl")}
  r2 = {"best_of_n": fits["raw_sum"]["best_of_n"]["true_sum/best_of_n_form"]["r_squared"],
        "rl": fits["raw_sum"]["rl"]["true_sum/rl_form"]["r_squared"]}
  n_ok = sum(rise_fall.values()) + sum(v >= 0.9 for v in r2.values())
  claims["gao_rise_then_fall"] = {
      "statement": "optimising the raw-sum proxy, the true reward (r_help + r_harm) rises then "
                   "falls against sqrt(KL), and Gao's forms fit (bon form on best-of-n, RL form "
                   "on RL)",
      "rule": "5 checks: for each of best-of-n, exact optimum, RL the observed peak is at an "
              "interior point and the curve falls by >= 10% of its peak gain over pi_0 by the "
              "largest KL; R^2 >= 0.9 for each of the two fits. All 5: reproduced; "
              ">= 3: partly; else not",
      "rise_then_fall": rise_fall, "fit_r_squared": r2,
      "verdict": "reproduced" if n_ok == 5 else ("partly reproduced" if n_ok >= 3
                                                 else "not reproduced")}
  # Wang: LSC-AND vs raw sum.
  share = at_least("lsc_and_median", "raw_sum", "true_and")
  claims["lsc_and_beats_raw_sum_on_true_and"] = {
      "statement": "LSC-AND (r_ref = pi_0 median) reaches a higher true AND than the raw sum "
                   "at equal KL",
      "rule": "share of common sqrt(KL) grid points (exact optimum and best-of-n pooled) where "
              "LSC-AND's true AND >= raw sum's: >= 0.75 reproduced, >= 0.5 partly, else not",
      "share": share, "verdict": verdict(share)}
  share = at_least("lsc_and_median", "raw_sum", "both_above_median")
  claims["lsc_and_good_on_both"] = {
      "statement": "LSC-AND puts more mass on responses better than pi_0's median on BOTH true "
                   "properties than the raw sum, at equal KL",
      "rule": "share of grid points (exact + best-of-n) where LSC-AND's both-above-median mass "
              ">= raw sum's: >= 0.75 reproduced, >= 0.5 partly, else not",
      "share": share, "verdict": verdict(share)}
  fall_lsc = falls_equal_kl["lsc_and_median"]["exact"]["true_and"]["fall_from_peak"]
  fall_raw = falls_equal_kl["raw_sum"]["exact"]["true_and"]["fall_from_peak"]
  fall_lsc_b = falls_equal_kl["lsc_and_median"]["best_of_n"]["true_and"]["fall_from_peak"]
  fall_raw_b = falls_equal_kl["raw_sum"]["best_of_n"]["true_and"]["fall_from_peak"]
  raw_falls = fall_raw > 0 or fall_raw_b > 0
  n_less = (int(fall_lsc <= fall_raw and fall_raw > 0)
            + int(fall_lsc_b <= fall_raw_b and fall_raw_b > 0))
  claims["lsc_reduces_hacking"] = {
      "statement": "LSC-AND's true AND falls less from its peak than the raw sum's (less reward "
                   "hacking)",
      "rule": "fall of the true AND from its peak by the largest KL of the common (equal-KL) "
              "grid, exact optimum and best-of-n, counted only where the raw sum falls (> 0): "
              "smaller or equal for LSC-AND on both: reproduced; on one: partly; none (or the raw "
              "sum never falls, so there is no hacking to reduce): not",
      "raw_sum_falls": bool(raw_falls),
      "fall_exact": {"lsc_and_median": fall_lsc, "raw_sum": fall_raw},
      "fall_best_of_n": {"lsc_and_median": fall_lsc_b, "raw_sum": fall_raw_b},
      "verdict": ["not reproduced", "partly reproduced", "reproduced"][n_less]}
  # Coste: conservative ensembles.
  shares = {d: {g: at_least(d, "raw_sum", g) for g in ("true_sum", "true_and")}
            for d in ("ens_min", "ens_uwo")}
  shares_mean = {d: {g: at_least(d, "ens_mean", g) for g in ("true_sum", "true_and")}
                 for d in ("ens_min", "ens_uwo")}
  score = np.mean([v for s in (shares, shares_mean) for d in s.values() for v in d.values()])
  claims["conservative_ensembles_reduce_overoptimisation"] = {
      "statement": "worst-case and uncertainty-weighted ensembles reach a higher true reward at "
                   "equal KL than the single-model raw sum and than the ensemble mean",
      "rule": "mean over {ens_min, ens_uwo} x {vs raw_sum, vs ens_mean} x {true_sum, true_and} "
              "of the share of grid points (exact + best-of-n) where the conservative design >= "
              "the other: >= 0.75 reproduced, >= 0.5 partly, else not",
      "shares_vs_raw_sum": shares, "shares_vs_ens_mean": shares_mean, "mean_share": float(score),
      "verdict": verdict(score)}
  # Comparison table of every design at the largest common KL (exact optimum).
  return claims


def summary_rows(result: dict, index: int = -1) -> list[dict]:
  """The main table of one seed: every design at one point (default the largest) of the common
  sqrt(KL) grid of the exact optimum; peak and fall of the true sum on that grid; R^2 of Gao's
  best-of-n form on best-of-n and RL form on RL (true-sum gain)."""
  eq = result["equal_kl"]["exact"]
  d = eq["sqrt_kl"][index]
  rows = []
  for name in DESIGNS:
    m = {k: v[index] for k, v in eq[name].items()}
    fall = result["peak_and_fall_equal_kl"][name]["exact"]["true_sum"]
    fits = result["gao_fits"][name]
    rows.append({
        "design": name, "sqrt_kl": f"{d:.2f}", "true help": f"{m['true_help']:.2f}",
        "true harm": f"{m['true_harm']:.2f}", "true AND": f"{m['true_and']:.2f}",
        "both > pi0 median": f"{m['both_above_median']:.2f}",
        "win help": f"{m['win_rate_help']:.2f}", "win harm": f"{m['win_rate_harm']:.2f}",
        "peak d (sum)": f"{fall['peak_sqrt_kl']:.2f}",
        "fall (sum)": f"{fall['fall_from_peak']:.2f}",
        "R2 bon": f"{fits['best_of_n']['true_sum/best_of_n_form']['r_squared']:.3f}",
        "R2 rl": f"{fits['rl']['true_sum/rl_form']['r_squared']:.3f}",
    })
  return rows


def _gao_curve(fit, d):
  if fit["form"] == "best_of_n":
    return d * (fit["alpha"] - fit["beta"] * d)
  return d * (fit["alpha"] - fit["beta"] * np.log(np.maximum(d, 1e-12)))


def plot(result: dict, workdir: str, tag: str) -> list[str]:
  """Three figures per seed: true vs proxy against sqrt(KL), the frontier, the Gao fits."""
  paths = []
  colors = dict(zip(DESIGNS, plt.cm.tab10(np.arange(len(DESIGNS)))))
  base = result["pi0_measurements"]
  # 1. True (sum and AND) and proxy against sqrt(KL), one column per optimiser.
  fig, axes = plt.subplots(3, 3, figsize=(16, 12))
  for col, opt in enumerate(("best_of_n", "exact_optimum", "rl")):
    for name in DESIGNS:
      if opt == "rl":
        curves = result["rl"][name]
        d = np.concatenate([[0.0]] + [c["sqrt_kl"] for c in curves])
        order = np.argsort(d)
        get = lambda m: np.concatenate([[base[m]]] + [c[m] for c in curves])[order]  # noqa
        d = d[order]
        style = dict(ls="", marker=".", ms=4)
      else:
        c = result[opt][name]
        d = np.concatenate([[0.0], c["sqrt_kl"]])
        get = lambda m: np.concatenate([[base[m]], c[m]])  # noqa
        style = dict(marker=".")
      for row, m in enumerate(("true_sum", "true_and", "proxy")):
        axes[row, col].plot(d, get(m), color=colors[name], label=name, **style)
    for row, m in enumerate(("true sum r_help + r_harm", "true AND (nats)",
                             "proxy: design reward, sd units of pi_0")):
      axes[row, col].set_ylabel(m)
      axes[row, col].set_xlabel("sqrt(KL(pi || pi_0))")
    axes[0, col].set_title({"best_of_n": "best-of-n (exact law)",
                            "exact_optimum": "pi* ~ pi_0 exp(u / beta)",
                            "rl": "RL (tabular GRPO, checkpoints)"}[opt])
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(workdir, f"true_vs_proxy_{tag}.png"))
  fig.savefig(paths[-1], dpi=80)
  plt.close(fig)
  # 2. Two-property frontier along each design's curve.
  fig, axes = plt.subplots(1, 2, figsize=(12, 5))
  for ax, opt in zip(axes, ("best_of_n", "exact_optimum")):
    for name in DESIGNS:
      c = result[opt][name]
      ax.plot([base["true_help"]] + c["true_help"], [base["true_harm"]] + c["true_harm"],
              marker=".", color=colors[name], label=name)
    ax.plot(base["true_help"], base["true_harm"], "k*", ms=12, label="pi_0")
    ax.set_xlabel("E[r_help] (true)")
    ax.set_ylabel("E[r_harm] (true)")
    ax.set_title(f"two-property frontier: {opt}")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(workdir, f"frontier_{tag}.png"))
  fig.savefig(paths[-1], dpi=80)
  plt.close(fig)
  # 3. Gao fits over the points (true-sum gain).
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  for ax, opt, form in zip(axes, ("best_of_n", "exact", "rl"),
                           ("best_of_n_form", "best_of_n_form", "rl_form")):
    for name in ("raw_sum", "lsc_and_median", "ens_mean", "ens_min", "ens_uwo"):
      if opt == "rl":
        d = np.concatenate([c["sqrt_kl"] for c in result["rl"][name]])
        g = np.concatenate([c["true_sum"] for c in result["rl"][name]]) - base["true_sum"]
      else:
        c = result["best_of_n" if opt == "best_of_n" else "exact_optimum"][name]
        d, g = np.asarray(c["sqrt_kl"]), np.asarray(c["true_sum"]) - base["true_sum"]
      fit = result["gao_fits"][name][opt][f"true_sum/{form}"]
      xs = np.linspace(0, d.max(), 100)
      ax.plot(d, g, ".", color=colors[name])
      ax.plot(xs, _gao_curve(fit, xs), color=colors[name],
              label=f"{name} (R2 {fit['r_squared']:.2f})")
    ax.set_title(f"Gao {form.replace('_form', '')} form on {opt}")
    ax.set_xlabel("sqrt(KL)")
    ax.set_ylabel("true-sum gain over pi_0")
    ax.legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(workdir, f"gao_fits_{tag}.png"))
  fig.savefig(paths[-1], dpi=80)
  plt.close(fig)
  return paths


def combine_seeds(per_seed: dict) -> dict:
  """Per claim: each seed's verdict and whether it holds ('reproduced') for every seed."""
  claims = {}
  first = next(iter(per_seed.values()))
  for claim, body in first["claims"].items():
    verdicts = {seed: r["claims"][claim]["verdict"] for seed, r in per_seed.items()}
    claims[claim] = {"statement": body["statement"], "rule": body["rule"],
                     "verdict_per_seed": verdicts,
                     "holds_for_all_seeds": all(v == "reproduced" for v in verdicts.values()),
                     "verdict": (next(iter(verdicts.values()))
                                 if len(set(verdicts.values())) == 1 else "partly reproduced")}
  return claims


def run_study(workdir: str, seed: int = 0, num_seeds: int = 2, smoke: bool = False,
              hh: bool = False) -> dict[str, Any]:
  """Runs seeds seed .. seed + num_seeds - 1, writes results.json and the plots to `workdir`,
  prints the tables and returns what it wrote (`hh`: also the SmolLM2 half)."""
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  seeds = [seed + i for i in range(num_seeds)]
  per_seed, plots = {}, {}
  for s in seeds:
    per_seed[str(s)] = run_synthetic(s, smoke)
    plots[str(s)] = [os.path.basename(p) for p in plot(per_seed[str(s)], workdir, f"seed{s}")]
  out = {
      "description": "issue 16 synthetic study: reward designs under best-of-n, the exact "
                     "KL-regularised optimum and tabular RL; see the module docstring of "
                     "experiments/study_transform_and_combine.py",
      "command": "python3 -m experiments.study_transform_and_combine" + (
          " --smoke" if smoke else "") + f" --seed {seed} --num_seeds {num_seeds}",
      "units": MEASUREMENT_NOTES, "notes": RESULT_NOTES, "designs": list(DESIGNS),
      "seeds": seeds,
      "claims": combine_seeds(per_seed), "per_seed": per_seed, "plots": plots,
  }
  if hh:
    from experiments import study_transform_and_combine_hh  # pylint: disable=g-import-not-at-top
    out["hh"] = study_transform_and_combine_hh.run(workdir, smoke)
  out["wall_seconds"] = time.time() - start
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(_tolist(out), f, indent=1)
  for s in seeds:
    middle = len(per_seed[str(s)]["equal_kl"]["exact"]["sqrt_kl"]) // 2 - 1
    for index, where in ((middle, "the middle"), (-1, "the largest")):
      print(f"\n## seed {s}: designs at {where} common sqrt(KL) (exact optimum)\n")
      print(markdown_table(summary_rows(per_seed[str(s)], index)))
  print("\n## claims\n")
  print(markdown_table([{"claim": k, **{f"seed {s}": v["verdict_per_seed"][str(s)]
                                        for s in seeds},
                         "holds for all seeds": v["holds_for_all_seeds"]}
                        for k, v in out["claims"].items()]))
  print(f"\nwall time {out['wall_seconds']:.1f} s; outputs in {workdir}")
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  run_study(FLAGS.workdir, FLAGS.seed, FLAGS.num_seeds, FLAGS.smoke, FLAGS.hh)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
