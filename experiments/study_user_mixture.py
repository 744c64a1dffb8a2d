r"""Study: one Bradley-Terry model vs a mixture and MaxMin EM on a mixture of user groups.

  python3 -m experiments.study_user_mixture --workdir runs/study_user_mixture
  python3 -m experiments.study_user_mixture --smoke --workdir /tmp/study_user_mixture

Claim (MiCRo arXiv:2505.24846; MaxMin-RLHF arXiv:2402.08925): when preferences come from a
mixture of user groups, a single BT model has an irreducible error; a mixture recovers the
groups.

Data: `rmjax.data.studies.make_user_mixture_preferences`: G groups, each with a linear reward
w_g on D-dim response features; each pair labelled by a random user through their group's BT
model. All rewards are linear in the features. Models:

* BT: one linear reward, `bradley_terry_loss`.
* Mixture (MiCRo stage 1): K linear heads and a linear router over the pair's context feature,
  `mixture_bradley_terry_loss`. The context is a noisy group-revealing vector
  (context_strength * onehot(group) + N(0, I)): MiCRo's router is context-aware because a
  prompt hints at which preference dimension matters; a user-independent context could only
  learn the group shares and would predict the population vote, as the "mixture, no context"
  row shows (same model, router input set to 0).
* MaxMin EM: K linear BT models, user ids known; E-step `maxmin_assign_users` (each user to the
  model with the highest likelihood of their pairs), M-step refits each model on its users'
  pairs; alternated, from a few random starts (the most likely end point is kept: hard EM
  has local optima). Prediction for a pair uses its user's model.

Accuracy is on held-out pairs of the same users against their (noisy) labels. "Bayes" knows
each pair's group reward; "population Bayes" is the best any user-agnostic predictor can do
(it sees the group-share-weighted average probability). Writes results.json and
user_mixture.png.
"""

import json
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rmjax import eval as rm_eval  # noqa: E402
from rmjax import losses  # noqa: E402
from rmjax.data import studies  # noqa: E402
from rmjax.train import optim  # noqa: E402

def _define_flags() -> None:
  """The command-line flags, defined only when this file runs as a script: importing it
  (tests, notebooks, another experiment) defines none, so two experiments never clash."""
  flags.DEFINE_string("workdir", "runs/study_user_mixture", "Output directory.")
  flags.DEFINE_integer("seed", 0, "Seed of the data and of the initialisations.")
  flags.DEFINE_bool("smoke", False, "A few-second run (fewer pairs and steps).")


_jit_fit = jax.jit(optim.fit_full_batch, static_argnums=0,
                   static_argnames=("num_steps", "learning_rate"))


def _gaps(weights, pairs):
  """[B, K] reward gaps of K linear heads `weights` [K, D]."""
  return (pairs["chosen"] - pairs["rejected"]) @ weights.T


def _train_bt(train, key, num_steps):
  def loss(w):
    gap = _gaps(w[None], train)[:, 0]
    return losses.bradley_terry_loss(gap, jnp.zeros_like(gap))
  return _jit_fit(loss, 0.01 * jax.random.normal(key, (train["chosen"].shape[1],)),
                  num_steps=num_steps, learning_rate=0.05)[0]


def _train_mixture(train, key, num_heads, num_steps, use_context):
  dim, context_dim = train["chosen"].shape[1], train["context"].shape[1]
  key_w, key_r = jax.random.split(key)
  params = {"heads": jax.random.normal(key_w, (num_heads, dim)),
            "router": 0.1 * jax.random.normal(key_r, (context_dim, num_heads)),
            "router_bias": jnp.zeros(num_heads)}
  scale = 1.0 if use_context else 0.0

  def loss(p):
    logits = scale * train["context"] @ p["router"] + p["router_bias"]
    gap = _gaps(p["heads"], train)
    return losses.mixture_bradley_terry_loss(gap, jnp.zeros_like(gap), logits)

  params = _jit_fit(loss, params, num_steps=num_steps, learning_rate=0.05)[0]
  return params, scale


def _train_maxmin(train, key, num_heads, num_users, num_rounds, num_steps, num_restarts):
  """Hard EM from `num_restarts` random starts (vmapped); keeps the most likely end point.

  Hard EM has local optima (two groups sharing a model, one model idle); restarts are the
  usual remedy. The chosen restart maximises the training log-likelihood of the final
  assignment.
  """
  dim = train["chosen"].shape[1]
  heads = jax.random.normal(key, (num_restarts, num_heads, dim))

  def log_lik(heads):
    return jax.nn.log_sigmoid(_gaps(heads, train))  # = -bradley_terry_loss(gap, 0, "none")

  @jax.jit
  @jax.vmap
  def e_step(heads):
    return losses.maxmin_assign_users(log_lik(heads), train["user"], num_users)

  @jax.jit
  @jax.vmap
  def m_step(heads, assignment):
    pair_head = jax.nn.one_hot(assignment[train["user"]], num_heads)

    def loss(w):
      gap = jnp.sum(_gaps(w, train) * pair_head, axis=1)
      return losses.bradley_terry_loss(gap, jnp.zeros_like(gap))

    return optim.fit_full_batch(loss, heads, num_steps=num_steps, learning_rate=0.05)[0]

  @jax.jit
  @jax.vmap
  def total_log_lik(heads, assignment):
    pair_head = jax.nn.one_hot(assignment[train["user"]], num_heads)
    return jnp.sum(log_lik(heads) * pair_head)

  history = []
  for _ in range(num_rounds):
    assignment = e_step(heads)
    heads = m_step(heads, assignment)
    history.append(np.asarray(assignment))
  assignment = e_step(heads)
  scores = np.asarray(total_log_lik(heads, assignment))
  best = int(np.argmax(scores))
  return (heads[best], assignment[best], [h[best] for h in history],
          (scores - scores.max()).tolist())


def _accuracy_by_group(correct_scores, group, num_groups):
  """Overall and per-group accuracy of scores where > 0 means 'chosen predicted'."""
  zeros = jnp.zeros_like(correct_scores)
  overall = float(rm_eval.pairwise_accuracy(correct_scores, zeros))
  per_group = [float(rm_eval.pairwise_accuracy(correct_scores, zeros, mask=group == g))
               for g in range(num_groups)]
  return overall, per_group


def _head_recovery(heads, group_weights):
  """Per true group, the best cosine similarity of a learnt head to w_g."""
  heads = np.asarray(heads)
  cos = (group_weights / np.linalg.norm(group_weights, axis=1, keepdims=True)) @ (
      heads / np.linalg.norm(heads, axis=1, keepdims=True)).T
  return cos.max(axis=1).tolist()


def _plot(path, results, group_names):
  models = list(results["models"])
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  ax = axes[0]
  width = 0.8 / (len(group_names) + 1)
  x = np.arange(len(models))
  for i, name in enumerate(["overall"] + group_names):
    values = [results["models"][m]["per_group"][i - 1] if i else results["models"][m]["overall"]
              for m in models]
    ax.bar(x + (i - len(group_names) / 2) * width, values, width=width, label=name)
  ax.axhline(results["bayes"]["overall"], color="k", ls="--", lw=1, label="Bayes (group known)")
  ax.axhline(results["population_bayes"]["overall"], color="gray", ls=":", lw=1,
             label="population Bayes")
  ax.set_xticks(x, models, rotation=15)
  ax.set_ylim(0.5, 1.0)
  ax.set_ylabel("held-out accuracy")
  ax.legend(fontsize=7)
  ax = axes[1]
  rec = results["head_recovery"]
  for i, m in enumerate(rec):
    ax.bar(np.arange(len(group_names)) + (i - 1) * 0.27, rec[m], width=0.27, label=m)
  ax.set_xticks(np.arange(len(group_names)), group_names)
  ax.set_ylabel("best cosine(head, w_g)")
  ax.set_ylim(0, 1.05)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  start = time.time()
  smoke = FLAGS.smoke
  config = {
      "num_groups": 3, "num_heads": 3, "num_users": 30 if smoke else 60, "feature_dim": 8,
      "reward_scale": 3.0, "context_strength": 2.0,
      "num_train": 3000 if smoke else 12000, "num_test": 2000 if smoke else 6000,
      "num_steps": 200 if smoke else 600, "em_rounds": 4 if smoke else 8,
      "em_steps": 100 if smoke else 200,
      "em_restarts": 2 if smoke else 8, "seed": FLAGS.seed, "smoke": smoke,
  }
  data = studies.make_user_mixture_preferences(
      num_groups=config["num_groups"], num_users=config["num_users"],
      feature_dim=config["feature_dim"], reward_scale=config["reward_scale"],
      context_strength=config["context_strength"], num_train=config["num_train"],
      num_test=config["num_test"], seed=FLAGS.seed)
  as_jnp = lambda p: {k: jnp.asarray(v) for k, v in p._asdict().items()}  # noqa: E731
  train, test = as_jnp(data.train), as_jnp(data.test)
  num_groups, num_heads = config["num_groups"], config["num_heads"]
  keys = jax.random.split(jax.random.key(FLAGS.seed), 4)

  models, recovery = {}, {}
  bt = _train_bt(train, keys[0], config["num_steps"])
  models["single BT"] = _gaps(bt[None], test)[:, 0]
  recovery["single BT"] = _head_recovery(bt[None], data.group_weights)
  for name, use_context, key in (("mixture (context router)", True, keys[1]),
                                 ("mixture (no context)", False, keys[2])):
    params, scale = _train_mixture(train, key, num_heads, config["num_steps"], use_context)
    logits = scale * test["context"] @ params["router"] + params["router_bias"]
    prob = jnp.sum(jax.nn.softmax(logits) * jax.nn.sigmoid(_gaps(params["heads"], test)), 1)
    models[name] = prob - 0.5
    if use_context:
      recovery["mixture"] = _head_recovery(params["heads"], data.group_weights)
  heads, assignment, history, restart_log_lik = _train_maxmin(
      train, keys[3], num_heads, config["num_users"], config["em_rounds"], config["em_steps"],
      config["em_restarts"])
  models["MaxMin EM"] = jnp.take_along_axis(
      _gaps(heads, test), assignment[test["user"]][:, None], axis=1)[:, 0]
  recovery["MaxMin EM"] = _head_recovery(heads, data.group_weights)

  assignment = np.asarray(assignment)
  purity = sum(np.bincount(data.user_group[assignment == k], minlength=num_groups).max()
               for k in range(num_heads) if np.any(assignment == k)) / config["num_users"]
  group = np.asarray(data.test.group)
  results = {"models": {}, "head_recovery": recovery, "maxmin_user_purity": float(purity),
             "maxmin_restart_log_lik_minus_best": restart_log_lik,
             "maxmin_assignment_changes": [int(np.sum(a != b)) for a, b in
                                           zip(history[1:] + [assignment], history)]}
  for name, scores in models.items():
    overall, per_group = _accuracy_by_group(scores, group, num_groups)
    results["models"][name] = {"overall": overall, "per_group": per_group}
  for name, probs in (("bayes", data.test.prob_chosen),
                      ("population_bayes", data.test.population_prob_chosen)):
    overall, per_group = _accuracy_by_group(jnp.asarray(probs) - 0.5, group, num_groups)
    results[name] = {"overall": overall, "per_group": per_group}
  bt_acc = results["models"]["single BT"]["overall"]
  results["single_bt_gap_to_bayes"] = results["bayes"]["overall"] - bt_acc
  results["single_bt_gap_to_population_bayes"] = results["population_bayes"]["overall"] - bt_acc
  wall = time.time() - start
  results["wall_seconds"] = wall

  os.makedirs(FLAGS.workdir, exist_ok=True)
  with open(os.path.join(FLAGS.workdir, "results.json"), "w") as f:
    json.dump({"config": config, "results": results}, f, indent=2)
  group_names = [f"group {g}" for g in range(num_groups)]
  _plot(os.path.join(FLAGS.workdir, "user_mixture.png"), results, group_names)

  print("| model | overall | " + " | ".join(group_names) + " |")
  print("|---" * (num_groups + 2) + "|")
  rows = dict(results["models"])
  rows["Bayes (group known)"] = results["bayes"]
  rows["population Bayes"] = results["population_bayes"]
  for name, r in rows.items():
    print(f"| {name} | {r['overall']:.3f} | "
          + " | ".join(f"{a:.3f}" for a in r["per_group"]) + " |")
  print(f"\nsingle BT gap to Bayes: {results['single_bt_gap_to_bayes']:.3f} "
        f"(to population Bayes: {results['single_bt_gap_to_population_bayes']:.3f}); "
        f"MaxMin user purity {purity:.2f}; head recovery (best cos per group): "
        + ", ".join(f"{m} {np.round(v, 2).tolist()}" for m, v in recovery.items()))
  print(f"wall time {wall:.1f} s; outputs in {FLAGS.workdir}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
