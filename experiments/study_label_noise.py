r"""Study: ensemble preference strength against flipped labels (Secrets of RLHF II).

  python3 -m experiments.study_label_noise --workdir runs/study_label_noise
  python3 -m experiments.study_label_noise --smoke --workdir /tmp/study_label_noise

Claim (Wang et al. 2024, arXiv:2401.06080, section 3): the mean margin of a reward-model
ensemble (preference strength) finds mislabelled pairs; flipping the labels of the
lowest-strength fraction, or label smoothing, makes the retrained reward model better on clean
held-out data.

Data: `rmjax.data.studies.make_noisy_label_preferences`: a small nonlinear ground-truth reward
on D-dim features, clean BT labels, then a fraction of the training labels flipped uniformly at
random; the test labels are clean. Models: 1-hidden-layer MLP rewards (tanh). The ensemble is
M members trained on bootstrap resamples (one params pytree with a leading axis M, vmapped);
`preference_strength` on the training pairs; `lowest_fraction_mask` picks the pairs to flip.
Then one MLP is retrained (same initialisation every time) with each correction:

* none: the noisy labels as given.
* flip: the lowest-strength `correction_fraction` of pairs flipped.
* smooth: label smoothing a on every pair (`bradley_terry_loss(label_smoothing=a)`).
* flip + smooth: both.
* oracle: the true flips undone (a reference no method can beat on average).

Accuracy is on held-out clean labels; "vs Bayes" is the gap to their Bayes-optimal accuracy;
"agree" is agreement with the ground truth's preferred side. Writes results.json and
label_noise.png.
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
from rmjax import transforms  # noqa: E402
from rmjax.data import studies  # noqa: E402
from rmjax.train import optim  # noqa: E402

def _define_flags() -> None:
  """The command-line flags, defined only when this file runs as a script: importing it
  (tests, notebooks, another experiment) defines none, so two experiments never clash."""
  flags.DEFINE_string("workdir", "runs/study_label_noise", "Output directory.")
  flags.DEFINE_integer("seed", 0, "Seed of the data and of the initialisations.")
  flags.DEFINE_bool("smoke", False, "A few-second run (fewer pairs and steps).")


def _init_mlp(key, in_dim, hidden_dim):
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (in_dim, hidden_dim)) / np.sqrt(in_dim),
          "b1": jnp.zeros(hidden_dim),
          "w2": jax.random.normal(k2, (hidden_dim,)) / np.sqrt(hidden_dim)}


def _reward(params, x):
  return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def _train(params, chosen, rejected, weights, *, num_steps, learning_rate, label_smoothing):
  """Full-batch adam on the (weighted) BT loss of one MLP; a scan, vmappable over members."""
  def loss_fn(p):
    return losses.bradley_terry_loss(_reward(p, chosen), _reward(p, rejected),
                                     label_smoothing=label_smoothing, weights=weights)

  return optim.fit_full_batch(loss_fn, params, num_steps=num_steps,
                              learning_rate=learning_rate)[0]


def _evaluate(params, test):
  chosen, rejected = _reward(params, test.chosen), _reward(params, test.rejected)
  accuracy = float(rm_eval.pairwise_accuracy(chosen, rejected))
  # Agreement with the ground truth's preferred side: the chosen side is likelier when p > 0.5.
  truth_side = jnp.asarray(test.prob_chosen > 0.5)
  agree = float(jnp.mean((chosen > rejected) == truth_side))
  return accuracy, agree


def _plot(path, results, strength, flipped):
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  ax = axes[0]
  bins = np.linspace(strength.min(), strength.max(), 50)
  ax.hist(strength[~flipped], bins=bins, alpha=0.6, label="label kept")
  ax.hist(strength[flipped], bins=bins, alpha=0.6, label="label flipped (noise)")
  ax.axvline(results["strength_threshold"], color="k", ls="--", lw=1,
             label="flip threshold")
  ax.set_xlabel("preference strength (ensemble mean margin)")
  ax.set_ylabel("training pairs")
  ax.legend()
  ax = axes[1]
  names = list(results["models"])
  acc = [results["models"][n]["test_accuracy"] for n in names]
  ax.bar(np.arange(len(names)), acc)
  ax.axhline(results["bayes_test_accuracy"], color="k", ls="--", lw=1, label="Bayes")
  ax.set_xticks(np.arange(len(names)), names, rotation=15)
  ax.set_ylim(min(acc) - 0.05, results["bayes_test_accuracy"] + 0.02)
  ax.set_ylabel("held-out accuracy (clean labels)")
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
  config = {
      "feature_dim": 16, "flip_fraction": 0.25, "correction_fraction": 0.2,
      "label_smoothing": 0.2, "num_train": 1000 if smoke else 2000,
      "num_test": 2000 if smoke else 5000, "hidden_dim": 32, "ensemble_size": 4 if smoke else 8,
      "num_steps": 200 if smoke else 1000, "ensemble_steps": 100 if smoke else 200,
      "learning_rate": 0.01, "seed": FLAGS.seed, "smoke": smoke,
  }
  data = studies.make_noisy_label_preferences(
      feature_dim=config["feature_dim"], flip_fraction=config["flip_fraction"],
      num_train=config["num_train"], num_test=config["num_test"], seed=FLAGS.seed)
  train, test = data.train, data.test
  num_train, members = config["num_train"], config["ensemble_size"]
  key_ens, key_boot, key_model = jax.random.split(jax.random.key(FLAGS.seed), 3)
  fit = lambda smoothing, steps=config["num_steps"]: jax.jit(  # noqa: E731
      lambda p, c, r, w: _train(p, c, r, w, num_steps=steps,
                                learning_rate=config["learning_rate"],
                                label_smoothing=smoothing))

  # Ensemble on bootstrap resamples: a resample is a vector of per-pair counts (weights).
  ensemble = jax.vmap(lambda k: _init_mlp(k, config["feature_dim"], config["hidden_dim"]))(
      jax.random.split(key_ens, members))
  draws = jax.random.randint(key_boot, (members, num_train), 0, num_train)
  counts = jax.vmap(lambda d: jnp.bincount(d, length=num_train))(draws).astype(jnp.float32)
  chosen, rejected = jnp.asarray(train.chosen), jnp.asarray(train.rejected)
  # Members are stopped early (ensemble_steps): a member trained to convergence memorises the
  # flipped pairs, and its margins on them stop telling them apart.
  ensemble = jax.vmap(fit(0.0, config["ensemble_steps"]), in_axes=(0, None, None, 0))(
      ensemble, chosen, rejected, counts)
  member_chosen = jax.vmap(_reward, in_axes=(0, None))(ensemble, chosen)
  member_rejected = jax.vmap(_reward, in_axes=(0, None))(ensemble, rejected)
  strength, spread = transforms.preference_strength(member_chosen, member_rejected)
  flag = np.asarray(transforms.lowest_fraction_mask(strength, config["correction_fraction"]))

  flipped = train.flipped
  caught = float(np.sum(flag & flipped) / max(np.sum(flipped), 1))
  precision = float(np.sum(flag & flipped) / max(np.sum(flag), 1))
  against_truth = float(np.mean(train.prob_chosen[flag] < 0.5)) if flag.any() else 0.0
  ensemble_acc = float(rm_eval.pairwise_accuracy(
      jnp.mean(jax.vmap(_reward, in_axes=(0, None))(ensemble, test.chosen), 0),
      jnp.mean(jax.vmap(_reward, in_axes=(0, None))(ensemble, test.rejected), 0)))

  def swap(mask):
    mask = jnp.asarray(mask)[:, None]
    return jnp.where(mask, rejected, chosen), jnp.where(mask, chosen, rejected)

  variants = {
      "none": (swap(np.zeros_like(flag)), 0.0),
      "flip": (swap(flag), 0.0),
      "smooth": (swap(np.zeros_like(flag)), config["label_smoothing"]),
      "flip + smooth": (swap(flag), config["label_smoothing"]),
      "oracle": (swap(flipped), 0.0),
  }
  init = _init_mlp(key_model, config["feature_dim"], config["hidden_dim"])
  ones = jnp.ones(num_train)
  bayes = float(rm_eval.bayes_optimal_pairwise_accuracy(test.prob_chosen))
  models = {}
  for name, ((c, r), smoothing) in variants.items():
    accuracy, agree = _evaluate(fit(smoothing)(init, c, r, ones), test)
    models[name] = {"test_accuracy": accuracy, "gap_to_bayes": bayes - accuracy,
                    "agreement_with_truth": agree}
  wall = time.time() - start
  results = {
      "models": models, "bayes_test_accuracy": bayes, "ensemble_mean_test_accuracy": ensemble_acc,
      "flipped_caught_fraction": caught, "flag_precision": precision,
      "flagged_against_truth_fraction": against_truth,
      "strength_threshold": float(np.max(np.asarray(strength)[flag])) if flag.any() else 0.0,
      "mean_spread": float(jnp.mean(spread)), "wall_seconds": wall,
  }

  os.makedirs(FLAGS.workdir, exist_ok=True)
  with open(os.path.join(FLAGS.workdir, "results.json"), "w") as f:
    json.dump({"config": config, "results": results}, f, indent=2)
  _plot(os.path.join(FLAGS.workdir, "label_noise.png"), results, np.asarray(strength), flipped)

  print("| correction | held-out acc (clean) | gap to Bayes | agree w/ truth |")
  print("|---|---|---|---|")
  for name, m in models.items():
    print(f"| {name} | {m['test_accuracy']:.3f} | {m['gap_to_bayes']:.3f} | "
          f"{m['agreement_with_truth']:.3f} |")
  print(f"\nBayes {bayes:.3f}; ensemble mean {ensemble_acc:.3f}; flipped labels caught "
        f"{caught:.2f} (precision {precision:.2f}, {against_truth:.2f} of flagged labels go "
        f"against the truth); wall time {wall:.1f} s; outputs in {FLAGS.workdir}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
