"""Tests of the study data generators (`rmjax.data.studies`) and the study scripts."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from rmjax.data import studies

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# Cyclic preferences.
# ----------------------------------------------------------------------------------------------


def test_rock_paper_scissors_ground_truth():
  world = studies.make_cyclic_world(3, cyclic_scale=2.0)
  a, b, c = 0, 1, 2
  assert world.logits[a, b] == 2.0 and world.logits[b, c] == 2.0 and world.logits[c, a] == 2.0
  np.testing.assert_array_equal(world.logits, -world.logits.T)


@pytest.mark.parametrize("num_items", [3, 5, 9])
def test_cyclic_tournament_is_regular(num_items):
  t = studies.cyclic_tournament(num_items)
  np.testing.assert_array_equal(t, -t.T)
  # Every item beats exactly (N - 1) / 2 items: no scalar score can order them.
  np.testing.assert_array_equal((t > 0).sum(axis=1), (num_items - 1) // 2)
  # The sign of sin(theta_j - theta_i) at theta = 2 pi i / N (a one-block GPM) reproduces it.
  theta = 2 * np.pi * np.arange(num_items) / num_items
  np.testing.assert_array_equal(np.sign(np.sin(theta[None, :] - theta[:, None])).round(), t)


def test_cyclic_tournament_rejects_even():
  with pytest.raises(ValueError, match="odd"):
    studies.cyclic_tournament(4)


def test_cyclic_preferences_split_and_probabilities():
  data = studies.make_cyclic_preferences(7, num_train=500, num_test=200, transitive_scale=1.0,
                                         seed=3)
  logits = data.world.logits
  for pairs in (data.train, data.test, data.test_seen):
    expected = 1 / (1 + np.exp(-logits[pairs.chosen, pairs.rejected]))
    np.testing.assert_allclose(pairs.prob_chosen, expected, rtol=1e-6)
    assert np.all(pairs.chosen != pairs.rejected)
  key = lambda p: set(zip(np.minimum(p.chosen, p.rejected), np.maximum(p.chosen, p.rejected)))
  assert not key(data.train) & key(data.test)
  assert key(data.test_seen) <= key(data.train)
  # Labels follow the ground truth: most drawn labels go the likelier way.
  assert np.mean(data.train.prob_chosen > 0.5) > 0.7


def test_cyclic_preferences_deterministic():
  a = studies.make_cyclic_preferences(5, num_train=50, num_test=20, seed=1)
  b = studies.make_cyclic_preferences(5, num_train=50, num_test=20, seed=1)
  np.testing.assert_array_equal(a.train.chosen, b.train.chosen)
  np.testing.assert_array_equal(a.test.rejected, b.test.rejected)


# ----------------------------------------------------------------------------------------------
# User mixture.
# ----------------------------------------------------------------------------------------------


def test_each_group_labels_follow_its_own_reward():
  # A large reward scale makes the BT labels almost deterministic.
  data = studies.make_user_mixture_preferences(num_groups=2, num_users=10, reward_scale=50.0,
                                               num_train=2000, num_test=10, seed=0)
  train = data.train
  np.testing.assert_array_equal(train.group, data.user_group[train.user])
  gaps = (train.chosen - train.rejected) @ data.group_weights.T  # [B, G]
  for g in range(2):
    rows = train.group == g
    own = np.mean(gaps[rows, g] > 0)
    other = np.mean(gaps[rows, 1 - g] > 0)
    assert own > 0.97, own
    assert other < 0.9, other  # another group's reward explains them much worse


def test_user_mixture_population_probability_and_context():
  data = studies.make_user_mixture_preferences(num_groups=3, num_users=9, num_train=3000,
                                               num_test=10, context_strength=3.0, seed=2)
  train = data.train
  gaps = (train.chosen - train.rejected) @ data.group_weights.T
  share = np.bincount(data.user_group, minlength=3) / 9
  np.testing.assert_allclose(train.population_prob_chosen, (1 / (1 + np.exp(-gaps))) @ share,
                             rtol=1e-6)
  assert np.mean(np.argmax(train.context, axis=1) == train.group) > 0.8
  np.testing.assert_allclose(np.linalg.norm(data.group_weights, axis=1), 3.0)


# ----------------------------------------------------------------------------------------------
# Label noise.
# ----------------------------------------------------------------------------------------------


def test_noisy_labels_flip_exactly_the_marked_pairs():
  data = studies.make_noisy_label_preferences(reward_scale=40.0, flip_fraction=0.3,
                                              num_train=1000, num_test=500, seed=0)
  train, test = data.train, data.test
  assert train.flipped.sum() == 300 and not test.flipped.any()
  gap = (studies.noisy_label_reward(train.chosen, data.hidden_weights, data.output_weights)
         - studies.noisy_label_reward(train.rejected, data.hidden_weights,
                                      data.output_weights))
  np.testing.assert_allclose(train.prob_chosen, 1 / (1 + np.exp(-gap)), rtol=1e-5, atol=1e-7)
  # Near-deterministic clean labels: flipped pairs go against the truth, the others with it.
  assert np.mean(gap[train.flipped] < 0) > 0.9
  assert np.mean(gap[~train.flipped] > 0) > 0.9
  assert np.mean(test.prob_chosen > 0.5) > 0.9


def test_noisy_labels_reject_bad_fraction():
  with pytest.raises(ValueError, match="flip_fraction"):
    studies.make_noisy_label_preferences(flip_fraction=1.5)


# ----------------------------------------------------------------------------------------------
# Study scripts (subprocess smoke runs).
# ----------------------------------------------------------------------------------------------


def _smoke(module, tmp_path):
  workdir = tmp_path / module
  proc = subprocess.run(
      [sys.executable, "-m", f"experiments.{module}", "--smoke", "--workdir", str(workdir)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "|---" in proc.stdout
  with open(workdir / "results.json") as f:
    return json.load(f), workdir


@pytest.mark.slow
def test_cyclic_study_smoke_gpm_beats_bt(tmp_path):
  out, workdir = _smoke("study_cyclic_preferences", tmp_path)
  assert (workdir / "cyclic_preferences.png").exists()
  cyclic = out["results"]["cyclic"]
  # The claim at smoke scale: GPM fits the cycle on held-out item pairs, BT cannot.
  assert cyclic["gpm_test_accuracy"] > cyclic["bt_test_accuracy"] + 0.2
  assert cyclic["bt_seen_pairs_accuracy"] < 0.65


@pytest.mark.slow
def test_user_mixture_study_smoke(tmp_path):
  out, workdir = _smoke("study_user_mixture", tmp_path)
  assert (workdir / "user_mixture.png").exists()
  models = out["results"]["models"]
  assert set(models) >= {"single BT", "mixture (context router)", "MaxMin EM"}
  assert len(models["single BT"]["per_group"]) == out["config"]["num_groups"]
  assert out["results"]["single_bt_gap_to_bayes"] > 0.1


@pytest.mark.slow
def test_label_noise_study_smoke(tmp_path):
  out, workdir = _smoke("study_label_noise", tmp_path)
  assert (workdir / "label_noise.png").exists()
  results = out["results"]
  assert set(results["models"]) >= {"none", "flip", "smooth"}
  assert 0.0 <= results["flipped_caught_fraction"] <= 1.0
