"""Tests for the benchmark scoring rules of rmjax.eval.

Hand-computed values on tiny fixtures (each computation in a comment), plain
numpy references on random inputs for the style matrix and the Ties score,
constant scorers pinned, jit against eager, and argument errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import eval as rm_eval
from rmjax.eval import accuracy_by_bucket
from rmjax.eval import apply_temperature
from rmjax.eval import best_of_n_accuracy
from rmjax.eval import best_of_n_credit
from rmjax.eval import fit_temperature
from rmjax.eval import group_mean
from rmjax.eval import human_agreement
from rmjax.eval import majority_label
from rmjax.eval import one_vs_many_accuracy
from rmjax.eval import pairwise_correct
from rmjax.eval import position_swap_flip_rate
from rmjax.eval import reciprocal_rank
from rmjax.eval import REWARDBENCH_EXAMPLE_COUNTS
from rmjax.eval import REWARDBENCH_SECTIONS
from rmjax.eval import rewardbench2_overall
from rmjax.eval import rewardbench2_ties_score
from rmjax.eval import rewardbench_overall
from rmjax.eval import rewardbench_section_scores
from rmjax.eval import rmbench_domain
from rmjax.eval import style_accuracy_matrix
from rmjax.eval import style_difficulty


def _close(x, expected, tol=1e-6):
  np.testing.assert_allclose(np.asarray(x), expected, rtol=tol, atol=tol)


# --------------------------------------------------------------------------
# group_mean and pairwise_correct


def test_group_mean_hand_values_empty_group_and_mask():
  values = jnp.array([1.0, 0.0, 0.5, jnp.nan, 2.0])
  ids = jnp.array([0, 0, 2, 1, 7])  # row 4's id is out of range but masked
  mask = jnp.array([True, True, True, False, False])
  fn = jax.jit(group_mean, static_argnums=2)
  means, counts = fn(values, ids, 4, mask=mask)
  # group 0: (1 + 0) / 2; group 1: only a masked row -> empty; group 2: 0.5;
  # group 3: no row -> empty. Empty groups: mean 0, count 0.
  _close(means, [0.5, 0.0, 0.5, 0.0])
  _close(counts, [2.0, 0.0, 1.0, 0.0])
  assert means.dtype == jnp.float32 and counts.dtype == jnp.float32
  eager = group_mean(values, ids, 4, mask=mask)
  _close(eager[0], means)


def test_group_mean_bad_values():
  # A NaN value spoils its own group only; a valid out-of-range id, all.
  means, _ = group_mean(jnp.array([jnp.nan, 1.0]), jnp.array([0, 1]), 2)
  assert np.isnan(means[0]) and float(means[1]) == 1.0
  means, counts = group_mean(jnp.ones(2), jnp.array([0, 2]), 2)
  assert np.all(np.isnan(means)) and np.all(np.isnan(counts))


def test_group_mean_argument_errors():
  with pytest.raises(ValueError, match="`num_groups`.*static Python int"):
    group_mean(jnp.ones(2), jnp.zeros(2, jnp.int32), 2.0)
  with pytest.raises(ValueError, match="`num_groups`.*static Python int"):
    group_mean(jnp.ones(2), jnp.zeros(2, jnp.int32), jnp.array(2))
  with pytest.raises(ValueError, match="`num_groups` must be >= 1"):
    group_mean(jnp.ones(2), jnp.zeros(2, jnp.int32), 0)
  with pytest.raises(TypeError, match="`group_ids`.*integer"):
    group_mean(jnp.ones(2), jnp.zeros(2), 2)
  with pytest.raises(ValueError, match="`group_ids`.*same shape"):
    group_mean(jnp.ones(2), jnp.zeros(3, jnp.int32), 2)
  with pytest.raises(ValueError, match=r"`values`.*\[N\]"):
    group_mean(jnp.ones((2, 2)), jnp.zeros(2, jnp.int32), 2)


def test_pairwise_correct_ties_wrong_and_nan():
  out = jax.jit(pairwise_correct)(jnp.array([2.0, 1.0, 0.0, jnp.nan]),
                                  jnp.array([1.0, 1.0, 1.0, 0.0]),
                                  mask=jnp.array([1, 1, 1, 1]))
  # 2 > 1 right; 1 = 1 tie wrong; 0 < 1 wrong; NaN row NaN.
  _close(out[:3], [1.0, 0.0, 0.0])
  assert np.isnan(out[3])
  masked = pairwise_correct(jnp.array([jnp.nan]), jnp.zeros(1),
                            mask=jnp.array([False]))
  _close(masked, [0.0])


# --------------------------------------------------------------------------
# Best of N (RewardBench 2) and one vs many (RewardMATH)


def test_best_of_n_credit_ties_and_mask():
  scores = jnp.array([
      [3.0, 1.0, 2.0, 0.0],   # correct strictly on top: 1
      [3.0, 3.0, 1.0, 0.0],   # 2-way tie at the max: 1/2
      [2.0, 2.0, 2.0, 2.0],   # 4-way tie: 1/4
      [1.0, 3.0, 0.0, 0.0],   # another candidate on top: 0
      [1.0, 9.0, jnp.nan, 0.0],  # masked 9 and NaN: correct on top of {1, 0}
  ])
  mask = jnp.array([[1, 1, 1, 1]] * 4 + [[1, 0, 0, 1]])
  credit = jax.jit(best_of_n_credit)(scores, mask=mask)
  _close(credit, [1.0, 0.5, 0.25, 0.0, 1.0])
  assert credit.dtype == jnp.float32
  # Accuracy: mean over rows = 2.75 / 5.
  _close(jax.jit(best_of_n_accuracy)(scores, mask=mask), 2.75 / 5)
  # Row 4 dropped by masking its candidate 0: 1.75 / 4.
  _close(best_of_n_accuracy(scores, mask=mask.at[4, 0].set(0)), 1.75 / 4)
  # A valid NaN makes its row NaN.
  assert np.isnan(best_of_n_credit(scores)[4])


def test_best_of_n_constant_scorer_is_one_over_k():
  _close(best_of_n_accuracy(jnp.zeros((7, 4))), 0.25)  # 1/K for K = 4
  assert float(best_of_n_accuracy(jnp.zeros((7, 4)))) == 0.25  # exactly


def test_best_of_n_errors():
  with pytest.raises(ValueError, match=r"`scores`.*\[N, K\]"):
    best_of_n_credit(jnp.zeros(4))
  with pytest.raises(ValueError, match="`mask`"):
    best_of_n_credit(jnp.zeros((2, 4)), mask=jnp.ones((2, 3)))


def test_one_vs_many_and_reciprocal_rank():
  chosen = jnp.array([2.0, 2.0, 2.0, 0.0])
  rejected = jnp.array([[1.0, 0.0, 5.0],   # 5 masked: beats {1, 0}
                        [2.0, 1.0, 0.0],   # tied with the best rejected
                        [3.0, 2.0, 1.0],   # 3 above, 2 tied
                        [1.0, 1.0, 1.0]])  # all rejected above
  mask = jnp.array([[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1]])
  _close(jax.jit(one_vs_many_accuracy)(chosen, rejected, mask=mask),
         [1.0, 0.0, 0.0, 0.0])
  _close(one_vs_many_accuracy(chosen, rejected, mask=mask, ties_correct=True),
         [1.0, 1.0, 0.0, 0.0])
  # rank = 1 + #{valid rejected >= chosen}: 1, 2 (tie pessimistic), 3, 4.
  _close(jax.jit(reciprocal_rank)(chosen, rejected, mask=mask),
         [1.0, 1 / 2, 1 / 3, 1 / 4])


def test_rewardmath_constant_scorer():
  # One correct vs nine incorrect, all scored alike: accuracy 0, MRR 1/10.
  @jax.jit
  def rules(chosen, rejected):
    return (one_vs_many_accuracy(chosen, rejected),
            one_vs_many_accuracy(chosen, rejected, ties_correct=True),
            reciprocal_rank(chosen, rejected))

  strict, with_ties, rank = rules(jnp.ones(3), jnp.ones((3, 9)))
  _close(strict, 0.0)
  _close(with_ties, 1.0)
  _close(rank, 0.1)


def test_one_vs_many_errors_and_nan():
  with pytest.raises(ValueError, match=r"`rejected`.*N = 3"):
    reciprocal_rank(jnp.zeros(3), jnp.zeros((4, 9)))
  with pytest.raises(ValueError, match=r"`chosen`.*\[N\]"):
    one_vs_many_accuracy(jnp.zeros((3, 1)), jnp.zeros((3, 9)))
  with pytest.raises(ValueError, match="`ties_correct`"):
    one_vs_many_accuracy(jnp.zeros(3), jnp.zeros((3, 9)), ties_correct=1)
  out = reciprocal_rank(jnp.array([1.0, jnp.nan]), jnp.zeros((2, 2)))
  assert float(out[0]) == 1.0 and np.isnan(out[1])


# --------------------------------------------------------------------------
# RewardBench v1


def test_rewardbench_constants_are_the_benchmarks():
  counts = REWARDBENCH_EXAMPLE_COUNTS
  in_sections = [s for subsets in REWARDBENCH_SECTIONS.values() for s in subsets]
  assert sorted(in_sections) == sorted(counts)  # each subset in one section
  assert list(REWARDBENCH_SECTIONS) == ["Chat", "Chat Hard", "Safety", "Reasoning"]
  assert counts["math-prm"] == 6 * 164  # upweighted to the six code subsets
  # Section sizes: Chat 100+95+95+28+40; Chat Hard 37+100+134+92+47+46;
  # Safety 100+100+250+154+136; Reasoning 984 + 6 * 164.
  sizes = {k: sum(counts[s] for s in v) for k, v in REWARDBENCH_SECTIONS.items()}
  assert sizes == {"Chat": 358, "Chat Hard": 456, "Safety": 740,
                   "Reasoning": 1968}


def test_rewardbench_section_scores_hand_values():
  scores = rewardbench_section_scores({
      "alpacaeval-easy": 1.0, "mt-bench-easy": 0.5,  # Chat, two subsets
      "mt-bench-hard": 0.25,                          # Chat Hard, one subset
      "math-prm": 0.5, "hep-go": 1.0,                 # Reasoning
  })
  # Chat = (1.0 * 100 + 0.5 * 28) / 128 = 114 / 128.
  # Chat Hard: a single subset present -> its accuracy, 0.25.
  # Safety: no subset present -> 0.0 (calculate_scores_per_section).
  # Reasoning = (0.5 * 984 + 1.0 * 164) / 1148 = 656 / 1148.
  assert scores == pytest.approx({"Chat": 114 / 128, "Chat Hard": 0.25,
                                  "Safety": 0.0, "Reasoning": 656 / 1148})
  assert list(scores) == list(REWARDBENCH_SECTIONS)
  # Overall: (114/128 + 0.25 + 0 + 656/1148) / 4; with prior 1.0: (... + 0.5) / 4.5.
  total = 114 / 128 + 0.25 + 656 / 1148
  assert rewardbench_overall(scores) == pytest.approx(total / 4)
  assert rewardbench_overall(scores, prior_sets=1.0) == pytest.approx(
      (total + 0.5) / 4.5)


def test_rewardbench_custom_sections_and_errors():
  scores = rewardbench_section_scores(
      {"a": 1.0, "b": 0.0}, example_counts={"a": 1, "b": 3},
      sections={"S": ("a", "b"), "Empty": ("c",)})
  assert scores == {"S": 0.25, "Empty": 0.0}  # (1 * 1 + 0 * 3) / 4
  with pytest.raises(ValueError, match="'not-a-subset'.*no section"):
    rewardbench_section_scores({"not-a-subset": 1.0})
  with pytest.raises(ValueError, match="'c'.*no count"):
    rewardbench_section_scores({"c": 1.0}, example_counts={"a": 1},
                               sections={"S": ("a", "c")})
  with pytest.raises(ValueError, match=r"lacks the section\(s\) \['Safety'\]"):
    rewardbench_overall({"Chat": 1.0, "Chat Hard": 1.0, "Reasoning": 1.0})
  with pytest.raises(ValueError, match="unknown section"):
    rewardbench_overall({s: 1.0 for s in [*REWARDBENCH_SECTIONS, "Prior"]})


def test_rewardbench_constant_scorer_scores_zero():
  # A constant reward ties every pair: every subset, section and the overall 0.
  names = list(REWARDBENCH_EXAMPLE_COUNTS)
  ids = jnp.arange(2 * len(names)) % len(names)  # two rows per subset
  const = jnp.full(ids.shape, 0.3)
  means, counts = jax.jit(
      lambda c, r, g: group_mean(pairwise_correct(c, r), g, len(names)))(
          const, const, ids)
  _close(counts, 2.0)
  subset_accuracy = dict(zip(names, means.tolist()))
  assert set(subset_accuracy.values()) == {0.0}
  sections = rewardbench_section_scores(subset_accuracy)
  assert set(sections.values()) == {0.0}
  assert rewardbench_overall(sections) == 0.0


# --------------------------------------------------------------------------
# RewardBench 2: Ties and overall


def _np_ties_score(scores, num_correct, is_reference, prompt_ids, mask):
  """Plain-numpy Ties score, prompt by prompt, from the formulas."""
  stats = {}
  for row in range(len(scores)):
    s = scores[row][mask[row]]
    k = np.arange(len(scores[row]))[mask[row]]
    correct, wrong = s[k < num_correct[row]], s[k >= num_correct[row]]
    cim = correct.min() - wrong.max()
    dcm = correct.max() - correct.min() if len(correct) > 1 else np.nan
    stats[(bool(is_reference[row]), int(prompt_ids[row]))] = (cim > 0, cim, dcm)
  ref = {p: v for (r, p), v in stats.items() if r}
  tied = {p: v for (r, p), v in stats.items() if not r}
  both = sorted(set(ref) & set(tied))
  mean = lambda xs: float(np.mean(xs)) if len(xs) else 0.0
  ref_acc = mean([v[0] for v in ref.values()])
  tied_acc = mean([v[0] for v in tied.values()])
  cim_t = np.array([tied[p][1] for p in both])
  dcm_t = np.array([tied[p][2] for p in both])
  hard = np.minimum(np.array([ref[p][1] for p in both]), cim_t)
  with np.errstate(divide="ignore", invalid="ignore"):
    margin = np.nan_to_num(np.tanh(hard / dcm_t - 1), nan=0.0)
  pref, pref_hard = mean(cim_t > dcm_t), mean(hard > dcm_t)
  return dict(ref_accuracy=ref_acc, tied_accuracy=tied_acc,
              correctness_preferred=pref, correctness_preferred_hard=pref_hard,
              margin=mean(margin), num_matched=len(both),
              score=0.3 * tied_acc + 0.3 * ref_acc + 0.2 * pref + 0.2 * pref_hard
              + 0.01 * mean(margin))


def test_ties_score_hand_values():
  scores = jnp.array([
      [3.0, 1.0, 0.0, 0.0],   # prompt 1 ref:  cim = 3 - 1 = 2
      [3.0, 2.5, 1.0, 0.0],   # prompt 1 tied: cim = 2.5 - 1 = 1.5, dcm = 0.5
      [1.0, 2.0, 0.0, 0.0],   # prompt 2 ref:  cim = 1 - 2 = -1 (inaccurate)
      [4.0, 2.0, 1.0, 9.0],   # prompt 2 tied (9 masked): cim = 1, dcm = 2
      [0.0, 1.0, 0.0, 0.0],   # prompt 3 ref, unmatched: cim = -1
  ])
  mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0],
                    [1, 1, 0, 0]], bool)
  args = (scores, jnp.array([1, 2, 1, 2, 1]),
          jnp.array([True, False, True, False, True]), jnp.array([1, 1, 2, 2, 3]))
  out = jax.jit(rewardbench2_ties_score)(*args, mask=mask)
  # ref accuracy 1/3 (prompts 1, 2, 3); tied accuracy 2/2.
  # Matched prompts 1, 2: preferred = [1.5 > 0.5, 1 > 2] -> 1/2;
  # hard = [min(2, 1.5), min(-1, 1)] = [1.5, -1] > [0.5, 2] -> 1/2;
  # margin = mean(tanh(1.5 / 0.5 - 1), tanh(-1 / 2 - 1)) = (tanh 2 + tanh -1.5) / 2.
  margin = (np.tanh(2.0) + np.tanh(-1.5)) / 2
  expected = dict(ref_accuracy=1 / 3, tied_accuracy=1.0, correctness_preferred=0.5,
                  correctness_preferred_hard=0.5, margin=margin, num_matched=2.0,
                  score=0.3 * 1.0 + 0.3 / 3 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * margin)
  assert set(out) == set(expected)
  for name, value in expected.items():
    _close(out[name], value, tol=1e-5)
    assert out[name].dtype == jnp.float32
  np_ref = _np_ties_score(np.asarray(scores), *map(np.asarray, args[1:]),
                          np.asarray(mask))
  for name, value in np_ref.items():
    _close(out[name], value, tol=1e-5)


def test_ties_score_matches_numpy_on_random_inputs():
  rng = np.random.default_rng(0)
  num_prompts, k = 40, 6
  rows = []
  for p in range(num_prompts):
    kinds = [True, False] if p % 5 else [bool(p % 2)]  # some prompts unmatched
    for is_ref in kinds:
      num_valid = int(rng.integers(3, k + 1))
      nc = 1 if is_ref else int(rng.integers(2, num_valid))
      rows.append((is_ref, p, nc, num_valid))
  rng.shuffle(rows)
  n = len(rows)
  # Small integers: ties, dcm = 0 and 0 / 0 margins all occur.
  scores = rng.integers(0, 4, size=(n, k)).astype(np.float32)
  mask = np.arange(k)[None, :] < np.array([r[3] for r in rows])[:, None]
  is_ref = np.array([r[0] for r in rows])
  pid = np.array([r[1] for r in rows])
  nc = np.array([r[2] for r in rows])
  out = jax.jit(rewardbench2_ties_score)(scores, nc, is_ref, pid, mask=mask)
  for name, value in _np_ties_score(scores, nc, is_ref, pid, mask).items():
    _close(out[name], value, tol=1e-5)


def test_ties_score_bad_rows_and_duplicates():
  scores = jnp.array([[2.0, 1.0], [2.0, 1.0]])
  ones, ids = jnp.array([1, 1]), jnp.array([5, 5])
  refs = jnp.array([True, True])
  # Concrete duplicate reference rows of prompt 5: an error naming it.
  with pytest.raises(ValueError, match="`prompt_ids`.*prompt id 5"):
    rewardbench2_ties_score(scores, ones, refs, ids)
  # Traced: NaN instead (one compilation for the calls below).
  ties_fn = jax.jit(rewardbench2_ties_score)
  full = jnp.ones((2, 2), bool)
  assert np.isnan(ties_fn(scores, ones, refs, ids, mask=full)["score"])
  # A row with no incorrect candidate: NaN. A row with nothing valid: ignored.
  one_ref = jnp.array([True, False])
  out = ties_fn(scores, jnp.array([2, 1]), one_ref, ids, mask=full)
  assert np.isnan(out["score"])
  out = ties_fn(scores, jnp.array([2, 1]), one_ref, ids,
                mask=jnp.array([[0, 0], [1, 1]], bool))
  _close(out["tied_accuracy"], 1.0)  # the tied row alone: 2 > 1
  _close(out["num_matched"], 0.0)


def test_ties_score_argument_errors():
  scores = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"`num_correct`.*\(2,\)"):
    rewardbench2_ties_score(scores, jnp.ones(3, int), jnp.ones(2, bool),
                            jnp.ones(2, int))
  with pytest.raises(TypeError, match="`prompt_ids`.*integer"):
    rewardbench2_ties_score(scores, jnp.ones(2, int), jnp.ones(2, bool),
                            jnp.ones(2))
  with pytest.raises(ValueError, match="`is_reference`"):
    rewardbench2_ties_score(scores, jnp.ones(2, int), jnp.ones(3, bool),
                            jnp.ones(2, int))
  with pytest.raises(ValueError, match="`mask`"):
    rewardbench2_ties_score(scores, jnp.ones(2, int), jnp.ones(2, bool),
                            jnp.ones(2, int), mask=jnp.ones((2, 4)))


def test_rewardbench2_overall():
  subsets = {"Factuality": 0.5, "Precise IF": 0.25, "Math": 0.75, "Safety": 1.0,
             "Focus": 0.5, "Ties": 0.0}
  assert rewardbench2_overall(subsets) == pytest.approx(3.0 / 6)
  with pytest.raises(ValueError, match=r"lacks the subset\(s\) \['Ties'\]"):
    rewardbench2_overall({k: v for k, v in subsets.items() if k != "Ties"})
  assert rewardbench2_overall({"Math": 0.75, "Focus": 0.25},
                              require_all=False) == 0.5
  with pytest.raises(ValueError, match="unknown subset.*'Chat'"):
    rewardbench2_overall({**subsets, "Chat": 1.0})


# --------------------------------------------------------------------------
# RM-Bench


def _np_style_matrix(chosen, rejected):
  s = chosen.shape[1]
  return np.array([[np.mean(chosen[:, i] > rejected[:, j]) for j in range(s)]
                   for i in range(s)])


def test_style_matrix_hand_values_and_difficulty():
  chosen = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
  rejected = jnp.array([[0.5, 1.5, 2.5], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
  mask = jnp.array([True, True, False])
  matrix = jax.jit(style_accuracy_matrix)(chosen, rejected, mask=mask)
  # Row 0: chosen_i > rejected_j for (i, j) with c_i > r_j:
  # c = (1, 2, 3), r = (.5, 1.5, 2.5): [[1,0,0],[1,1,0],[1,1,1]]; row 1 never.
  expected = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]]) / 2
  _close(matrix, expected)
  out = jax.jit(style_difficulty)(matrix)
  # hard = 0 / 3; normal = 1.5 / 3; easy = 1.5 / 3; average = 1 / 3.
  _close(out["hard"], 0.0)
  _close(out["normal"], 0.5)
  _close(out["easy"], 0.5)
  _close(out["average"], 1 / 3)


def test_style_matrix_matches_numpy_and_constant_scorer():
  rng = np.random.default_rng(1)
  chosen = rng.integers(0, 3, size=(50, 3)).astype(np.float32)  # many ties
  rejected = rng.integers(0, 3, size=(50, 3)).astype(np.float32)
  fn = jax.jit(lambda c, r: (style_accuracy_matrix(c, r),
                             style_difficulty(style_accuracy_matrix(c, r))))
  _close(fn(chosen, rejected)[0], _np_style_matrix(chosen, rejected))
  const = jnp.ones((50, 3))
  out = fn(const, const)[1]
  assert {k: float(v) for k, v in out.items()} == {
      "hard": 0.0, "normal": 0.0, "easy": 0.0, "average": 0.0}


def test_style_matrix_errors_and_domains():
  with pytest.raises(ValueError, match="`rejected`.*same shape"):
    style_accuracy_matrix(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="`mask`"):
    style_accuracy_matrix(jnp.zeros((2, 3)), jnp.zeros((2, 3)),
                          mask=jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="`matrix`.*square"):
    style_difficulty(jnp.zeros((3, 2)))
  nan = style_accuracy_matrix(jnp.array([[jnp.nan, 0.0]]), jnp.zeros((1, 2)))
  assert np.all(np.isnan(nan))
  assert [rmbench_domain(d) for d in
          ("chat", "math", "code", "safety-refuse", "safety-response")] == [
              "chat", "math", "code", "safety", "safety"]
  with pytest.raises(ValueError, match="`name`.*'reasoning'"):
    rmbench_domain("reasoning")


# --------------------------------------------------------------------------
# Agreement with human judges (PandaLM)


def test_majority_label():
  labels = jnp.array([[1, 1, 0], [0, 1, 2], [0, 0, 0], [2, 1, 2], [1, 3, 1],
                      [1, 1, 2]])
  # 2 of 3 say 1; no majority; unanimous tie; 2 of 3 say 2; label 3 invalid;
  # 2 of 3 say 1.
  out = jax.jit(majority_label)(labels)
  assert out.tolist() == [1, -1, 0, 2, -2, 1]
  # Four annotators split 2 / 2: no majority (needs > A / 2 = 2 votes).
  assert majority_label(jnp.array([[1, 1, 2, 2], [1, 1, 1, 2]])).tolist() == [-1, 1]
  with pytest.raises(TypeError, match="`labels`.*integer"):
    majority_label(jnp.zeros((2, 3)))


def test_human_agreement_hand_values():
  first = jnp.array([2.0, 0.0, 1.0, 1.0, 3.0, 1.05, 9.0])
  second = jnp.array([1.0, 1.0, 1.0, 1.0, 3.0, 1.0, 0.0])
  labels = jnp.array([
      [1, 1, 1],  # majority 1, model 1: agree
      [1, 1, 2],  # majority 1, model 2: disagree
      [2, 2, 0],  # majority 2, model tie: wrong
      [0, 0, 1],  # majority tie, model tie
      [0, 1, 2],  # no majority
      [0, 0, 0],  # majority tie, model 1 (d = 0.05)
      [5, 5, 5],  # invalid labels, masked row
  ])
  mask = jnp.array([1, 1, 1, 1, 1, 1, 0])
  fn = jax.jit(human_agreement)  # tie_margin traced: one compilation
  out = fn(first, second, labels, mask=mask, tie_margin=0.0)
  # agreement = 1 / 3 decided; with ties: (1 + 1) / 5 rows with a majority;
  # model tie rate on the 2 majority-tie rows: 1 / 2.
  _close(out["agreement"], 1 / 3)
  _close(out["agreement_with_ties"], 2 / 5)
  _close(out["model_tie_rate_on_majority_ties"], 0.5)
  _close([out["num_decided"], out["num_majority_tie"], out["num_no_majority"]],
         [3.0, 2.0, 1.0])
  # tie_margin 0.1: row 5 (d = 0.05) becomes a model tie, agreeing with the
  # majority tie: with ties 3 / 5, tie rate 2 / 2.
  out = fn(first, second, labels, mask=mask, tie_margin=0.1)
  _close(out["agreement_with_ties"], 3 / 5, tol=1e-5)
  _close(out["model_tie_rate_on_majority_ties"], 1.0)
  # The invalid labels of a valid row make everything NaN.
  out = fn(first, second, labels, mask=jnp.ones(7, int), tie_margin=0.0)
  assert all(np.isnan(v) for v in out.values())


def test_human_agreement_errors():
  with pytest.raises(ValueError, match=r"`labels`.*N = 2"):
    human_agreement(jnp.zeros(2), jnp.zeros(2), jnp.zeros((3, 3), int))
  with pytest.raises(ValueError, match="`score_second`"):
    human_agreement(jnp.zeros(2), jnp.zeros(3), jnp.zeros((2, 3), int))
  with pytest.raises(ValueError, match="`tie_margin`"):
    human_agreement(jnp.zeros(2), jnp.zeros(2), jnp.zeros((2, 3), int),
                    tie_margin=-1.0)


# --------------------------------------------------------------------------
# Temperature scaling


def test_fit_temperature_recovers_a_known_scale():
  # Labels drawn from sigmoid(2 m): the margin oriented by the label, y m with
  # y = +-1, has its NLL minimised near s = 2.
  key_m, key_y = jax.random.split(jax.random.PRNGKey(0))
  m = 1.5 * jax.random.normal(key_m, (20000,))
  y = jnp.where(jax.random.uniform(key_y, m.shape) < jax.nn.sigmoid(2 * m), 1.0, -1.0)

  @jax.jit
  def fit_and_check(margins):
    fit = fit_temperature(margins)
    # At the optimum the derivative mean(-m sigmoid(-s m)) is ~0.
    slope = jnp.mean(-margins * jax.nn.sigmoid(-fit.scale * margins))
    scaled = apply_temperature(margins, fit.scale)
    # The existing ECE, before and after.
    zeros = jnp.zeros_like(margins)
    return (fit, slope, scaled, rm_eval.pairwise_calibration_error(margins, zeros),
            rm_eval.pairwise_calibration_error(scaled, zeros))

  fit, slope, scaled, ece_before, ece_after = fit_and_check(y * m)
  assert not bool(fit.at_bound)
  assert abs(float(fit.scale) - 2.0) < 0.1
  assert float(fit.nll_after) <= float(fit.nll_before)
  assert abs(float(slope)) < 1e-4
  _close(scaled, fit.scale * y * m)
  assert float(ece_after) < float(ece_before)


def test_fit_temperature_bounds_flat_and_mask():
  fit_fn = jax.jit(fit_temperature)  # one shape, one compilation
  mask = jnp.array([True, True, True, False, False])
  junk = jnp.array([0.0, 0.0, 0.0, jnp.nan, 1e9])  # in the masked rows
  fit = fit_fn(jnp.array([1.0, 2.0, 0.5, 0.0, 0.0]) + junk, mask=mask)
  assert bool(fit.at_bound) and float(fit.scale) == 1e3  # all > 0: s -> inf
  fit = fit_fn(jnp.array([-1.0, -2.0, 0.5, 0.0, 0.0]), mask=mask)
  assert bool(fit.at_bound) and float(fit.scale) == pytest.approx(1e-3)
  fit = fit_fn(junk, mask=mask)  # every valid margin 0: flat, scale 1
  assert not bool(fit.at_bound) and float(fit.scale) == 1.0
  _close(fit.nll_before, np.log(2.0))
  # Masked junk is ignored: the same fit as with zeros in the masked rows.
  m = jnp.array([2.0, -1.0, 0.5, 0.0, 0.0])
  clean, dirty = fit_fn(m, mask=mask), fit_fn(m + junk, mask=mask)
  assert float(clean.scale) == float(dirty.scale)
  assert 0.0 < float(clean.nll_after) <= float(clean.nll_before)
  assert np.isnan(fit_fn(m + junk, mask=jnp.ones(5, bool)).scale)  # valid NaN
  # Custom bounds.
  fit = fit_temperature(jnp.array([1.0, 2.0]), lower=0.5, upper=50.0)
  assert bool(fit.at_bound) and float(fit.scale) == 50.0


def test_fit_temperature_errors():
  with pytest.raises(ValueError, match="`lower` must be < `upper`"):
    fit_temperature(jnp.ones(2), lower=2.0, upper=1.0)
  with pytest.raises(ValueError, match="`upper`"):
    fit_temperature(jnp.ones(2), upper=float("inf"))
  with pytest.raises(ValueError, match="`num_iterations`"):
    fit_temperature(jnp.ones(2), num_iterations=0)
  with pytest.raises(ValueError, match=r"`margins`.*\[N\]"):
    fit_temperature(jnp.ones((2, 2)))
  with pytest.raises(ValueError, match="`scale`"):
    apply_temperature(jnp.ones(2), jnp.ones(2))


# --------------------------------------------------------------------------
# Diagnostics


def test_accuracy_by_bucket():
  correct = jnp.array([1.0, 0.0, 1.0, 0.5, 1.0, 0.0])
  values = jnp.array([-300.0, -10.0, 0.0, 99.0, 100.0, 1e6])
  edges = jnp.array([-100.0, 0.0, 100.0])
  mask = jnp.array([1, 1, 1, 1, 1, 0])
  fn = jax.jit(accuracy_by_bucket)
  acc, count = fn(correct, values, edges, mask=mask)
  # Buckets (-inf, -100): -300 -> 1; [-100, 0): -10 -> 0; [0, 100): 0, 99 ->
  # (1 + 0.5) / 2; [100, inf): 100 -> 1 (1e6 masked).
  _close(acc, [1.0, 0.0, 0.75, 1.0])
  _close(count, [1.0, 1.0, 2.0, 1.0])
  acc, _ = fn(correct, values, jnp.array([0.0, 0.0, 1.0]), mask=mask)
  assert np.all(np.isnan(acc))  # edges not strictly increasing
  with pytest.raises(ValueError, match="`values`.*same shape"):
    accuracy_by_bucket(correct, values[:3], edges)
  with pytest.raises(ValueError, match=r"`bucket_edges`.*\[E\]"):
    accuracy_by_bucket(correct, values, edges[None])


def test_position_swap_flip_rate():
  ab = jnp.array([2.0, 1.0, -1.0, 0.0, 3.0])
  ba = jnp.array([-2.0, 0.5, -3.0, 1.0, 3.0])
  mask = jnp.array([1, 1, 1, 1, 0])
  # Consistent; same sign (flip); same sign (flip); zero (no preference);
  # masked. 2 / 4.
  _close(jax.jit(position_swap_flip_rate)(ab, ba, mask=mask), 0.5)
  _close(position_swap_flip_rate(ab, -ab), 0.0)  # a consistent judge
  with pytest.raises(ValueError, match="`logits_ba`"):
    position_swap_flip_rate(ab, ba[:2])


# --------------------------------------------------------------------------
# Public API


def test_public_api():
  new = {"group_mean", "pairwise_correct", "REWARDBENCH_EXAMPLE_COUNTS",
         "REWARDBENCH_SECTIONS", "REWARDBENCH2_SUBSETS", "rewardbench_section_scores",
         "rewardbench_overall", "rewardbench2_ties_score", "rewardbench2_overall",
         "best_of_n_credit", "best_of_n_accuracy", "one_vs_many_accuracy",
         "reciprocal_rank", "RMBENCH_DOMAINS", "rmbench_domain",
         "style_accuracy_matrix", "style_difficulty", "majority_label",
         "human_agreement", "TemperatureFit", "fit_temperature", "apply_temperature",
         "accuracy_by_bucket", "position_swap_flip_rate"}
  assert new <= set(rm_eval.__all__)
  assert all(hasattr(rm_eval, name) for name in rm_eval.__all__)
