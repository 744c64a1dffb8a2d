r"""Study: Bradley-Terry vs the General Preference Model on cyclic preferences.

  python3 -m experiments.study_cyclic_preferences --workdir runs/study_cyclic
  python3 -m experiments.study_cyclic_preferences --smoke --workdir /tmp/study_cyclic

Claim (Zhang et al. 2024, GPM, arXiv:2410.02197): on intransitive (rock-paper-scissors)
preferences every BT model is at chance, while a GPM with k >= 1 fits them.

Data: `rmjax.data.studies.make_cyclic_preferences`, N items on a circle, item i beats the next
(N - 1) / 2 items with probability sigmoid(cyclic_scale); held-out comparisons use unordered
item pairs never seen in training (BT is below chance there: see the note in
`make_cyclic_preferences`), and fresh comparisons of the training item pairs. Two worlds:
"cyclic" (purely cyclic) and "mixed" (the same cycle plus a transitive quality). Models are
per-item lookup tables: BT a scalar score per item (`bradley_terry_loss`), GPM a 2k-dim
embedding per item (`general_preference_loss`, k = 2, tau = 1), both trained full batch with
adam. Writes results.json and cyclic_preferences.png.
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
  flags.DEFINE_string("workdir", "runs/study_cyclic_preferences", "Output directory.")
  flags.DEFINE_integer("seed", 0, "Seed of the data and of the initialisations.")
  flags.DEFINE_bool("smoke", False, "A few-second run (fewer items, pairs, steps).")

# (name, transitive_scale): the cycle alone, and the cycle plus a transitive quality.
_WORLDS = (("cyclic", 0.0), ("mixed", 1.0))


def _run_world(data, *, num_items, gpm_blocks, num_steps, seed):
  """Trains BT and GPM on one world; returns metrics and the GPM embeddings."""
  train, test = data.train, data.test
  key_bt, key_gpm = jax.random.split(jax.random.key(seed))

  def bt_loss(scores):
    return losses.bradley_terry_loss(scores[train.chosen], scores[train.rejected])

  def gpm_loss(emb):
    return losses.general_preference_loss(emb[train.chosen], emb[train.rejected],
                                          temperature=1.0)

  fit = jax.jit(optim.fit_full_batch, static_argnums=0,
                static_argnames=("num_steps", "learning_rate"))
  scores, _ = fit(bt_loss, 0.01 * jax.random.normal(key_bt, (num_items,)),
                  num_steps=num_steps, learning_rate=0.05)
  emb, _ = fit(gpm_loss, 0.1 * jax.random.normal(key_gpm, (num_items, 2 * gpm_blocks)),
               num_steps=num_steps, learning_rate=0.05)

  def accuracies(pairs):
    bt = rm_eval.pairwise_accuracy(scores[pairs.chosen], scores[pairs.rejected])
    gpm_score = losses.general_preference_score(emb[pairs.chosen], emb[pairs.rejected])
    gpm = rm_eval.pairwise_accuracy(gpm_score, jnp.zeros_like(gpm_score))
    bayes = rm_eval.bayes_optimal_pairwise_accuracy(pairs.prob_chosen)
    return float(bt), float(gpm), float(bayes)

  metrics = {}
  for split, pairs in (("test", test), ("seen_pairs", data.test_seen), ("train", train)):
    bt, gpm, bayes = accuracies(pairs)
    metrics.update({f"bt_{split}_accuracy": bt, f"gpm_{split}_accuracy": gpm,
                    f"bayes_{split}_accuracy": bayes})
  return metrics, np.asarray(emb), np.asarray(scores)


def _plot(path, embeddings, scores, results):
  names = list(results)
  fig, axes = plt.subplots(1, 3, figsize=(13, 4))
  ax = axes[0]
  emb = embeddings["cyclic"]
  n = emb.shape[0]
  ax.scatter(emb[:, 0], emb[:, 1], c=np.arange(n), cmap="hsv")
  for i in range(n):
    ax.annotate(str(i), emb[i, :2], fontsize=7)
  ax.set_title("GPM: first 2-D block per item (cyclic world)")
  ax.set_aspect("equal")
  axes[1].bar(np.arange(n), scores["cyclic"])
  axes[1].set_title("BT: score per item (cyclic world)")
  axes[1].set_xlabel("item")
  ax = axes[2]
  x = np.arange(len(names))
  for offset, (key, label) in zip((-0.25, 0.0, 0.25), (("bt_test_accuracy", "BT"),
                                                       ("gpm_test_accuracy", "GPM"),
                                                       ("bayes_test_accuracy", "Bayes"))):
    ax.bar(x + offset, [results[w][key] for w in names], width=0.25, label=label)
  ax.axhline(0.5, color="gray", ls="--", lw=1)
  ax.set_xticks(x, names)
  ax.set_ylim(0.0, 1.0)
  ax.set_ylabel("held-out pair accuracy")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  start = time.time()
  smoke = FLAGS.smoke
  num_items = 11 if smoke else 31
  config = {
      "num_items": num_items, "num_train": 3000 if smoke else 20000,
      "num_test": 2000 if smoke else 10000, "cyclic_scale": 2.0, "gpm_blocks": 2,
      "num_steps": 300 if smoke else 1500, "seed": FLAGS.seed, "smoke": smoke,
  }
  results, embeddings, scores = {}, {}, {}
  for name, transitive_scale in _WORLDS:
    data = studies.make_cyclic_preferences(
        num_items, num_train=config["num_train"], num_test=config["num_test"],
        cyclic_scale=config["cyclic_scale"], transitive_scale=transitive_scale,
        seed=FLAGS.seed)
    results[name], embeddings[name], scores[name] = _run_world(
        data, num_items=num_items, gpm_blocks=config["gpm_blocks"],
        num_steps=config["num_steps"], seed=FLAGS.seed)
    results[name]["transitive_scale"] = transitive_scale
  wall = time.time() - start

  os.makedirs(FLAGS.workdir, exist_ok=True)
  with open(os.path.join(FLAGS.workdir, "results.json"), "w") as f:
    json.dump({"config": config, "results": results, "wall_seconds": wall}, f, indent=2)
  _plot(os.path.join(FLAGS.workdir, "cyclic_preferences.png"), embeddings, scores, results)

  print("| world | eval pairs | BT acc | GPM acc | Bayes acc |")
  print("|---|---|---|---|---|")
  for name, r in results.items():
    for split, label in (("test", "held-out item pairs"),
                         ("seen_pairs", "fresh labels, train item pairs")):
      print(f"| {name} | {label} | {r[f'bt_{split}_accuracy']:.3f} | "
            f"{r[f'gpm_{split}_accuracy']:.3f} | {r[f'bayes_{split}_accuracy']:.3f} |")
  print(f"\nwall time {wall:.1f} s; outputs in {FLAGS.workdir}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
