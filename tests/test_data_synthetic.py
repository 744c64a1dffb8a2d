"""Tests of rmjax.data.synthetic: ground truth, determinism, label calibration, Bayes accuracy."""

import numpy as np
import pytest

from rmjax.data import synthetic

SMALL = dict(num_train=2000, num_eval=500)


def test_ground_truth_reward_hand_example():
  world = np.arange(26, dtype=float)  # w['a'] = 0, w['b'] = 1, ...
  # 'b' matches 'B' in the prompt: (0 + (1 + 1) + 2) / 3.
  assert synthetic.ground_truth_reward("BX", "abc", world) == pytest.approx(4 / 3)
  # bonus 2 and two matches: ((0 + 2) + (1 + 2) + 2) / 3.
  assert synthetic.ground_truth_reward("BA", "abc", world, match_bonus=2.0) == pytest.approx(7 / 3)
  # No prompt letters: plain mean of values; repeated letters count each time.
  assert synthetic.ground_truth_reward("", "zz", world) == pytest.approx(25.0)
  assert synthetic.ground_truth_reward("Z", "zza", world) == pytest.approx((26 + 26 + 0) / 3)


def test_ground_truth_rewards_vectorised_matches_scalar():
  world = synthetic.make_world(3)
  prompts = ["BX", "", "QWERTY", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
  responses = ["abc", "zz", "qqqwa", "m"]
  expected = [synthetic.ground_truth_reward(p, r, world, 0.7) for p, r in zip(prompts, responses)]
  got = synthetic.ground_truth_rewards(prompts, responses, world, 0.7)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  # The last prompt holds every letter: reward = w['m'] + 0.7.
  assert got[3] == pytest.approx(world[12] + 0.7)


def test_ground_truth_input_errors():
  world = synthetic.make_world(0)
  with pytest.raises(ValueError, match="lowercase letters"):
    synthetic.ground_truth_reward("AB", "aB", world)
  with pytest.raises(ValueError, match="uppercase letters"):
    synthetic.ground_truth_reward("ab", "ab", world)
  with pytest.raises(ValueError, match="non-empty"):
    synthetic.ground_truth_reward("AB", "", world)
  with pytest.raises(ValueError, match=r"world must have shape \[K\] with 1 <= K <= 26"):
    synthetic.ground_truth_reward("AB", "ab", np.zeros(27))
  # A 3-letter world knows only a, b, c.
  assert synthetic.ground_truth_reward("C", "cc", np.array([0.0, 1.0, 2.0])) == 3.0
  with pytest.raises(ValueError, match="lowercase letters a-c only, got"):
    synthetic.ground_truth_reward("AB", "ad", np.zeros(3))
  with pytest.raises(ValueError, match="uppercase letters A-C only"):
    synthetic.ground_truth_reward("AD", "ab", np.zeros(3))
  with pytest.raises(ValueError, match=r"responses\[1\]"):
    synthetic.ground_truth_rewards(["A", "B"], ["a", "1"], world)


def test_split_reports_the_bayes_optimal_accuracy_of_its_pairs():
  train, _, info = synthetic.make_synthetic_preferences(
      dict(synthetic.default_synthetic_config(), num_train=256, num_eval=64))
  p = np.asarray(train.preference_prob, np.float64)
  assert info["train"]["bayes_optimal_accuracy"] == pytest.approx(
      np.mean(np.maximum(p, 1 - p)), abs=1e-6)

def test_ground_truth_label_accuracy_counts_ties_half():
  acc = synthetic.ground_truth_label_accuracy(np.array([1.0, 0.0, 2.0, 3.0]),
                                              np.array([0.0, 1.0, 2.0, 1.0]))
  assert acc == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_deterministic_from_seed():
  a_train, a_eval, a_info = synthetic.make_synthetic_preferences(SMALL)
  b_train, b_eval, b_info = synthetic.make_synthetic_preferences(SMALL)
  for a, b in ((a_train, b_train), (a_eval, b_eval)):
    assert a.prompt == b.prompt and a.chosen == b.chosen and a.rejected == b.rejected
    np.testing.assert_array_equal(a.preference_prob, b.preference_prob)
  assert a_info == b_info
  c_train, _, c_info = synthetic.make_synthetic_preferences(dict(SMALL, seed=1))
  assert c_train.prompt != a_train.prompt
  assert c_info["world"] == a_info["world"]  # same world_seed, same world
  _, _, d_info = synthetic.make_synthetic_preferences(dict(SMALL, world_seed=1))
  assert d_info["world"] != a_info["world"]


def test_train_and_eval_differ_but_share_the_world():
  train, eval_, info = synthetic.make_synthetic_preferences(SMALL)
  assert len(train.prompt) == 2000 and len(eval_.prompt) == 500
  triples = lambda s: set(zip(s.prompt, s.chosen, s.rejected))
  assert not triples(train) & triples(eval_)
  world = synthetic.make_world(0, num_letters=10)
  np.testing.assert_allclose(
      eval_.chosen_reward, synthetic.ground_truth_rewards(eval_.prompt, eval_.chosen, world))


def test_records_are_consistent_with_the_ground_truth():
  settings = dict(SMALL, match_bonus=0.5, temperature=0.3, prompt_len_min=2,
                  prompt_len_max=4, response_len_min=3, response_len_max=5)
  train, _, info = synthetic.make_synthetic_preferences(settings)
  world = np.array(list(info["world"].values()))
  np.testing.assert_array_equal(world, synthetic.make_world(0, num_letters=10))
  r_c = synthetic.ground_truth_rewards(train.prompt, train.chosen, world, 0.5)
  r_r = synthetic.ground_truth_rewards(train.prompt, train.rejected, world, 0.5)
  np.testing.assert_allclose(train.chosen_reward, r_c, rtol=1e-12)
  np.testing.assert_allclose(train.rejected_reward, r_r, rtol=1e-12)
  p = 1 / (1 + np.exp(-(r_c - r_r) / 0.3))
  np.testing.assert_allclose(train.preference_prob, p, rtol=1e-5, atol=1e-6)
  assert all(2 <= len(x) <= 4 and x.isupper() for x in train.prompt)
  assert all(3 <= len(y) <= 5 and y.islower() for y in train.chosen + train.rejected)
  assert {len(y) for y in train.chosen} == {3, 4, 5}
  assert np.all(train.margin == 0) and train.margin.dtype == np.float32


def test_label_frequency_matches_preference_prob():
  """In bins of q = P(higher-reward response preferred), it wins a fraction q of labels.

  Deterministic at the fixed seed; the tolerance is 4.5 binomial standard deviations.
  """
  train, _, _ = synthetic.make_synthetic_preferences(dict(num_train=30000, num_eval=10))
  p = train.preference_prob.astype(np.float64)
  q = np.maximum(p, 1 - p)
  higher_won = train.chosen_reward > train.rejected_reward
  ties = train.chosen_reward == train.rejected_reward
  assert ties.sum() < 10
  edges = [0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0001]
  for lo, hi in zip(edges[:-1], edges[1:]):
    sel = (q >= lo) & (q < hi) & ~ties
    assert sel.sum() > 1000, (lo, hi, sel.sum())
    expected = q[sel].mean()
    std = np.sqrt(np.sum(q[sel] * (1 - q[sel]))) / sel.sum()
    assert abs(higher_won[sel].mean() - expected) < 4.5 * std + 1e-9, (lo, hi)
  # Over all pairs the realised ground-truth accuracy matches the Bayes-optimal accuracy.
  bayes = float(np.mean(np.maximum(p, 1 - p)))
  realised = synthetic.ground_truth_label_accuracy(train.chosen_reward, train.rejected_reward)
  assert abs(realised - bayes) < 4.5 * np.sqrt(np.sum(q * (1 - q))) / len(q)


def test_default_bayes_accuracy_and_prompt_dependence():
  train, eval_, info = synthetic.make_synthetic_preferences(synthetic.default_synthetic_config())
  assert info["eval"]["num_pairs"] == 4096 and info["train"]["num_pairs"] == 32768
  assert len(info["world"]) == 10 and set("".join(eval_.chosen)) == set("abcdefghij")
  # The values stated in the module docstring.
  assert info["eval"]["bayes_optimal_accuracy"] == pytest.approx(0.871, abs=5e-4)
  assert info["train"]["bayes_optimal_accuracy"] == pytest.approx(0.871, abs=5e-4)
  # A scorer that ignores the prompt (uses the mean match rate) is well below Bayes.
  world = synthetic.make_world(0, num_letters=10)
  match_rate = np.mean([len(set(x)) / 10 for x in eval_.prompt])
  blind = lambda ys: np.array([np.mean(world[[ord(c) - 97 for c in y]]) for y in ys]) + match_rate
  agree = (blind(eval_.chosen) > blind(eval_.rejected)) == (
      eval_.chosen_reward > eval_.rejected_reward)
  q = np.maximum(eval_.preference_prob, 1 - eval_.preference_prob)
  blind_expected_accuracy = np.mean(np.where(agree, q, 1 - q))
  assert blind_expected_accuracy < info["eval"]["bayes_optimal_accuracy"] - 0.04


@pytest.mark.parametrize("override, match", [
    (dict(temperature=0.0), "synthetic.temperature must be > 0"),
    (dict(prompt_len_min=5, prompt_len_max=4), "synthetic.prompt_len_min"),
    (dict(response_len_min=0), "synthetic.response_len_min"),
    (dict(num_eval=0), "synthetic.num_eval must be >= 1"),
    (dict(seed=1.5), "synthetic.seed must be an int"),
    (dict(num_letters=27), r"synthetic.num_letters must lie in \[2, 26\]"),
])
def test_settings_validation(override, match):
  with pytest.raises(ValueError, match=match):
    synthetic.make_synthetic_preferences(dict(SMALL, **override))


# Data for the other families: strengths, ratings, ranked lists, user episodes --------------

def test_strength_counts_the_thresholds_the_true_gap_reaches():
  gaps = np.array([0.0, 0.049, 0.05, 0.19, 0.2, 0.5, 7.0])
  assert synthetic.strength_from_gap(gaps).tolist() == [0, 0, 1, 1, 2, 3, 3]
  train, _, _ = synthetic.make_synthetic_preferences(dict(num_train=4000, num_eval=8,
                                                          margin="strength"))
  gap = np.abs(train.chosen_reward - train.rejected_reward)
  np.testing.assert_array_equal(train.margin, synthetic.strength_from_gap(gap))
  # About 10% ties and the rest spread over 1..3 (module docstring of the thresholds).
  share = np.bincount(train.strength, minlength=4) / len(gap)
  assert 0.05 < share[0] < 0.15 and all(share[1:] > 0.2), share
  with pytest.raises(ValueError, match="synthetic.margin"):
    synthetic.make_synthetic_preferences(dict(num_train=8, num_eval=8, margin="gap"))


def test_attributes_follow_their_documented_ground_truth():
  world = np.arange(10, dtype=float) / 10 - 0.45  # w[a] = -0.45 ... w[j] = 0.45
  ratings = synthetic.response_attributes(["AB", "C"], ["ab", "dddddddddddj"], world)
  r = synthetic.ground_truth_rewards(["AB", "C"], ["ab", "dddddddddddj"], world)
  expected_help = np.clip(np.round(2 + (r - 0.4) / 0.34), 0, 4)
  np.testing.assert_array_equal(ratings[:, 0], expected_help)
  # correctness: "ab" takes both letters from "AB"; no letter of the second is in "C".
  np.testing.assert_array_equal(ratings[:, 1], [4, 0])
  # complexity = distinct letters - 3 (clipped), verbosity = (len - 4) // 2 (clipped).
  np.testing.assert_array_equal(ratings[:, 3], [0, 0])
  np.testing.assert_array_equal(ratings[:, 4], [0, 4])
  train, _, _ = synthetic.make_synthetic_preferences(dict(num_train=256, num_eval=8))
  assert train.chosen_attributes.shape == (256, 5)
  assert train.chosen_attributes.min() >= 0 and train.chosen_attributes.max() <= 4


def test_ranked_lists_are_plackett_luce_draws_of_the_true_rewards():
  world = synthetic.make_world(0, 10)
  lists = synthetic.sample_lists(4000, 2, np.random.default_rng(0), world,
                                 dict(temperature=0.11))
  # K = 2: P(item 0 ranked first) = sigmoid((r0 - r1) / T), the BT labels of "pairs".
  p_first = 1 / (1 + np.exp(-(lists.reward[:, 0] - lists.reward[:, 1]) / 0.11))
  first = lists.ranking[:, 0] == 0
  assert abs(first.mean() - p_first.mean()) < 0.02
  lists = synthetic.sample_lists(8, 4, np.random.default_rng(1), world, {})
  assert all(sorted(row) == [0, 1, 2, 3] for row in lists.ranking.tolist())
  assert all(len(r) == 4 for r in lists.responses)


def test_user_episodes_come_from_opposed_groups():
  worlds = synthetic.user_group_worlds(0, 10, 3)
  np.testing.assert_array_equal(worlds[1], -worlds[0])
  np.testing.assert_array_equal(worlds[2], synthetic.make_world(2, 10))
  episodes = synthetic.sample_user_episodes(64, np.random.default_rng(0), worlds[:2],
                                            dict(context_pairs=3, query_pairs=2))
  assert episodes.preference_prob.shape == (64, 5) and set(episodes.group.tolist()) == {0, 1}
  # Opposite letter values, same love of prompt letters: the groups disagree on many pairs.
  assert 0.5 < episodes.agreement < 0.8
  # Every pair of a group-1 episode is labelled by group 1's world.
  row = int(np.flatnonzero(episodes.group == 1)[0])
  r_c = synthetic.ground_truth_rewards(episodes.prompt[row], episodes.chosen[row], worlds[1])
  r_r = synthetic.ground_truth_rewards(episodes.prompt[row], episodes.rejected[row], worlds[1])
  np.testing.assert_allclose(episodes.preference_prob[row],
                             1 / (1 + np.exp(-(r_c - r_r) / 0.11)), rtol=1e-5)
  # A predictor blind to the group can do no better than the Bayes one, and here much worse.
  bayes = np.maximum(episodes.preference_prob, 1 - episodes.preference_prob)
  assert np.all(episodes.group_blind_prob <= bayes + 1e-6)
  assert episodes.group_blind_prob.mean() < bayes.mean() - 0.1
