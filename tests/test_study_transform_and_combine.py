"""Tests of `rmjax.eval.overoptimization`, the two-property world and the issue-16 synthetic study
(`experiments/study_transform_and_combine.py`)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import eval as rm_eval
from rmjax.data import studies
from rmjax.eval import overoptimization as oo

from experiments import study_transform_and_combine as study


def _random_pi0(rng, shape):
  logits = rng.standard_normal(shape)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Best-of-n.
# ----------------------------------------------------------------------------------------------


def test_best_of_n_one_is_pi0_and_every_law_sums_to_one():
  rng = np.random.default_rng(0)
  pi0 = _random_pi0(rng, (3, 10))
  proxy = rng.standard_normal((3, 10))
  q, kl = oo.best_of_n_distribution(pi0, proxy, 1)
  np.testing.assert_array_equal(q, pi0)
  np.testing.assert_array_equal(kl, 0.0)
  for n in (2, 7, 64, 256):
    q, kl = oo.best_of_n_distribution(pi0, proxy, n)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-12)
    assert np.all(q >= 0) and np.all(kl >= 0)


def test_best_of_n_hand_computed():
  # pi0 = (1/2, 1/4, 1/4), scores increasing: F = (1/2, 3/4, 1), P(pick y) = F(y)^2 - F(y-)^2.
  pi0 = np.array([0.5, 0.25, 0.25])
  q, kl = oo.best_of_n_distribution(pi0, np.array([0.0, 1.0, 2.0]), 2)
  np.testing.assert_allclose(q, [0.25, 0.3125, 0.4375], atol=1e-15)
  expected_kl = (0.25 * np.log(0.5) + 0.3125 * np.log(1.25) + 0.4375 * np.log(1.75))
  np.testing.assert_allclose(kl, expected_kl, atol=1e-15)
  # R = 2, n = 3: the better one is missed only if all three draws are the worse one.
  q, _ = oo.best_of_n_distribution(np.array([0.7, 0.3]), np.array([5.0, -1.0]), 3)
  np.testing.assert_allclose(q, [1 - 0.3 ** 3, 0.3 ** 3], atol=1e-15)
  # A tie between the top two: their group gets 1 - 0.5^2 = 0.75, split as pi0 (1 : 1).
  q, _ = oo.best_of_n_distribution(pi0, np.array([0.0, 2.0, 2.0]), 2)
  np.testing.assert_allclose(q, [0.25, 0.375, 0.375], atol=1e-15)


def test_best_of_n_matches_monte_carlo_with_ties():
  rng = np.random.default_rng(1)
  pi0 = np.array([0.3, 0.1, 0.2, 0.15, 0.05, 0.2])
  proxy = np.array([0.5, 2.0, 1.0, 2.0, -1.0, 0.0])   # responses 1 and 3 tie at the top
  n, draws = 3, 200_000
  ys = rng.choice(6, size=(draws, n), p=pi0)
  scores = proxy[ys]
  best = scores.max(1, keepdims=True)
  # Uniform tie-breaking among the tied draws: a random key among those at the maximum.
  keys = np.where(scores == best, rng.random((draws, n)), -1.0)
  picked = ys[np.arange(draws), keys.argmax(1)]
  freq = np.bincount(picked, minlength=6) / draws
  q, _ = oo.best_of_n_distribution(pi0, proxy, n)
  sd = np.sqrt(q * (1 - q) / draws)
  assert np.all(np.abs(freq - q) <= 5 * sd + 1e-12), (freq, q)


def test_best_of_n_kl_below_the_analytic_formula_and_equal_in_the_continuous_limit():
  rng = np.random.default_rng(2)
  pi0 = _random_pi0(rng, (4, 50))
  proxy = rng.standard_normal((4, 50))
  for n in (2, 4, 16, 256):
    _, kl = oo.best_of_n_distribution(pi0, proxy, n)
    assert np.all(kl <= oo.best_of_n_kl(n) + 1e-12)
  # Many equally likely responses, no ties: the exact KL tends to log n - (n - 1) / n.
  big = np.full((1, 20000), 1 / 20000)
  for n in (2, 16, 64):
    _, kl = oo.best_of_n_distribution(big, rng.permutation(20000)[None].astype(float), n)
    np.testing.assert_allclose(kl[0], oo.best_of_n_kl(n), atol=2e-3)
    assert kl[0] <= oo.best_of_n_kl(n)
  np.testing.assert_allclose(oo.best_of_n_kl([1, 2, 256]),
                             [0.0, np.log(2) - 0.5, np.log(256) - 255 / 256])


# ----------------------------------------------------------------------------------------------
# The KL-regularised optimum.
# ----------------------------------------------------------------------------------------------


def test_tilted_policy_limits_monte_carlo_kl_and_optimality():
  rng = np.random.default_rng(3)
  pi0 = _random_pi0(rng, (2, 12))
  u = 2 * rng.standard_normal((2, 12))
  q, kl = oo.tilted_policy(pi0, u, 1e12)          # beta -> inf: pi_0
  np.testing.assert_allclose(q, pi0, atol=1e-10)
  np.testing.assert_allclose(kl, 0.0, atol=1e-10)
  beta = 0.7
  q, kl = oo.tilted_policy(pi0, u, beta)
  np.testing.assert_allclose(q, pi0 * np.exp(u / beta) / (pi0 * np.exp(u / beta)).sum(
      -1, keepdims=True), rtol=1e-12)
  np.testing.assert_allclose(kl, oo.kl_divergence(q, pi0), rtol=1e-10)
  # Monte Carlo KL of its samples: mean log(pi* / pi_0) at y ~ pi*.
  draws = 100_000
  for p in range(2):
    ys = rng.choice(12, size=draws, p=q[p])
    log_ratio = np.log(q[p, ys]) - np.log(pi0[p, ys])
    assert abs(log_ratio.mean() - kl[p]) < 4 * log_ratio.std() / np.sqrt(draws)
  # pi* maximises E[u] - beta KL: random perturbations of it all score lower.
  def objective(pol):
    return (pol * u).sum(-1) - beta * oo.kl_divergence(pol, pi0)

  best = objective(q)
  for _ in range(200):
    z = np.log(q) + 0.3 * rng.standard_normal(q.shape)
    other = np.exp(z - z.max(-1, keepdims=True))
    other /= other.sum(-1, keepdims=True)
    assert np.all(objective(other) < best)


def test_tilted_betas_for_kl_hit_their_targets():
  rng = np.random.default_rng(4)
  pi0 = _random_pi0(rng, (5, 30))
  u = rng.standard_normal((5, 30))
  top = oo.max_tilted_kl(pi0, u)
  targets = np.array([0.01, 0.5, 0.9 * top])
  betas = oo.tilted_betas_for_kl(pi0, u, targets)
  kls = oo.tilted_policy(pi0, u, betas[:, None, None])[1].mean(-1)
  np.testing.assert_allclose(kls, targets, rtol=1e-8)
  assert np.all(np.diff(betas) < 0)
  with pytest.raises(ValueError, match="target_kl"):
    oo.tilted_betas_for_kl(pi0, u, np.array([top * 1.01]))


def test_quantile_and_win_values():
  pi0 = np.array([[0.1, 0.4, 0.2, 0.3]])
  r = np.array([[3.0, 1.0, 0.0, 2.0]])
  # Sorted: 0 (0.2), 1 (0.4) -> cdf 0.6, 2 (0.3) -> 0.9, 3 (0.1) -> 1.
  assert oo.weighted_quantile(r, pi0, 0.5).tolist() == [1.0]
  assert oo.weighted_quantile(r, pi0, 0.85).tolist() == [2.0]
  w = oo.win_values(r, pi0)
  np.testing.assert_allclose(w, [[0.95, 0.4, 0.1, 0.75]])
  np.testing.assert_allclose((pi0 * w).sum(), 0.5)  # pi_0 against itself


# ----------------------------------------------------------------------------------------------
# Gao et al.'s fits.
# ----------------------------------------------------------------------------------------------


def test_gao_fits_recover_known_parameters():
  d = np.linspace(0, 4, 25)
  fit = rm_eval.fit_gao_best_of_n(d, d * (1.3 - 0.4 * d))
  np.testing.assert_allclose([fit.alpha, fit.beta, fit.r_squared], [1.3, 0.4, 1.0], atol=1e-10)
  np.testing.assert_allclose([fit.peak_sqrt_kl, fit.peak_value],
                             [1.3 / 0.8, 1.3 ** 2 / 1.6], atol=1e-10)
  fit = rm_eval.fit_gao_rl(d, d * (0.9 - 0.3 * np.log(np.where(d > 0, d, 1.0))))
  np.testing.assert_allclose([fit.alpha, fit.beta, fit.r_squared], [0.9, 0.3, 1.0], atol=1e-10)
  np.testing.assert_allclose(fit.peak_sqrt_kl, np.exp(0.9 / 0.3 - 1), rtol=1e-10)
  np.testing.assert_allclose(fit.peak_value, 0.3 * np.exp(2.0), rtol=1e-10)
  # No overoptimisation (beta <= 0): no peak.
  fit = rm_eval.fit_gao_best_of_n(d, 2 * d + 0.1 * d * d)
  assert fit.peak_sqrt_kl is None and fit.beta < 0


# ----------------------------------------------------------------------------------------------
# The world and the tabular RL update.
# ----------------------------------------------------------------------------------------------


def test_two_property_world_is_deterministic_and_in_tension():
  a = studies.make_two_property_world(num_pairs=400, seed=0)   # the study's size
  b = studies.make_two_property_world(num_pairs=400, seed=0)
  np.testing.assert_array_equal(a.features, b.features)
  np.testing.assert_array_equal(a.train[1].chosen, b.train[1].chosen)
  np.testing.assert_allclose(a.pi0.sum(1), 1.0)
  np.testing.assert_allclose(studies.two_property_rewards(a.features, a.params), a.true_rewards)
  for k, pairs in enumerate(a.train):
    assert pairs.flipped.sum() == 100
    gap = (a.true_rewards[k][pairs.prompt, pairs.chosen]
           - a.true_rewards[k][pairs.prompt, pairs.rejected])
    np.testing.assert_allclose(pairs.prob_chosen, 1 / (1 + np.exp(-gap)), rtol=1e-9)
  r, pi0 = a.true_rewards, a.pi0
  c = r - (pi0 * r).sum(-1, keepdims=True)
  corr = (pi0 * c[0] * c[1]).sum() / np.sqrt((pi0 * c[0] ** 2).sum() * (pi0 * c[1] ** 2).sum())
  assert corr < -0.3   # what helps tends to harm (-0.40 here)
  top = 13   # the top 5% of R = 256 responses on each property hardly overlap
  overlap = np.mean([len(set(np.argsort(-r[0, p])[:top]) & set(np.argsort(-r[1, p])[:top]))
                     for p in range(r.shape[1])]) / top
  assert overlap < 0.05


def test_rl_update_follows_the_exact_policy_gradient():
  rng = np.random.default_rng(6)
  P, R, G, draws = 3, 6, 8, 1000
  logits = jnp.asarray(rng.standard_normal((P, R)), jnp.float32)
  ref = jax.nn.log_softmax(logits, -1)
  u = jnp.asarray(rng.standard_normal((P, R)), jnp.float32)
  keys = jax.random.split(jax.random.key(0), draws)
  sample = lambda k: jax.random.categorical(k, logits, shape=(G, P)).T  # noqa: E731
  mean_grad = jax.jit(lambda u, coef: jax.vmap(
      lambda k: jax.grad(study.rl_loss)(logits, ref, sample(k), u, coef))(keys).mean(0))
  mean = np.asarray(mean_grad(u, 0.0))
  pi = np.asarray(jax.nn.softmax(logits, -1))
  exact = -pi * (np.asarray(u) - (pi * np.asarray(u)).sum(-1, keepdims=True))  # -grad E_pi[u]
  for p in range(P):
    cos = mean[p] @ exact[p] / np.linalg.norm(mean[p]) / np.linalg.norm(exact[p])
    assert cos > 0.95, (p, cos)
  # At pi = pi_0 the k3 penalty's gradient vanishes in expectation (it is minimal there).
  assert float(jnp.abs(mean_grad(jnp.zeros_like(u), 1.0)).max()) < 1e-6


# ----------------------------------------------------------------------------------------------
# The smoke study.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_result():
  return study.run_synthetic(seed=0, smoke=True)


@pytest.mark.slow
def test_smoke_study_invariants(smoke_result):
  result = smoke_result
  base = result["pi0_measurements"]
  for name in study.DESIGNS:
    bon = result["best_of_n"][name]
    assert bon["n"][0] == 1 and bon["kl_exact"][0] == 0.0
    for m in study.MEASUREMENTS:   # best-of-1 is pi_0
      np.testing.assert_allclose(bon[m][0], base[m], rtol=1e-12, atol=1e-12)
    assert np.all(np.asarray(bon["kl_exact"]) <= np.asarray(bon["kl_analytic"]) + 1e-12)
  np.testing.assert_allclose(base["win_rate_help"], 0.5, atol=1e-12)
  check = result["exact_optimum_kl_check"]
  assert abs(check["kl_exact"] - check["kl_monte_carlo"]) < 4 * check["monte_carlo_standard_error"]
  np.testing.assert_allclose(check["kl_exact"], check["sqrt_kl_target"] ** 2, rtol=1e-6)
  for mc in result["best_of_n_monte_carlo_check"]:
    assert mc["max_freq_error_in_binomial_sd_floored"] < 6


@pytest.mark.slow
def test_smoke_study_tabular_rl_raises_the_proxy_with_finite_kl(smoke_result):
  result = smoke_result
  less_kl = 0
  for name in study.DESIGNS:
    low, high = result["rl"][name]            # kl_coef 0.03 and 0.3
    assert (low["kl_coef"], high["kl_coef"]) == (0.03, 0.3)
    for run in (low, high):
      d = np.asarray(run["sqrt_kl"])
      assert np.all(np.isfinite(d)) and np.all(d > 0) and d[-1] < 3
      # The design's reward (in sd units of pi_0) rises over pi_0's and along training.
      assert run["proxy"][-1] > 0.3 and run["proxy"][-1] > run["proxy"][0]
    less_kl += high["sqrt_kl"][-1] <= low["sqrt_kl"][-1]
  assert less_kl >= 7   # the larger KL coefficient spends less KL (all 9 designs at seed 0)


@pytest.mark.slow
def test_smoke_study_has_every_key(smoke_result, tmp_path, monkeypatch):
  result = smoke_result
  for section in ("best_of_n", "exact_optimum", "rl", "gao_fits", "peak_and_fall"):
    assert set(result[section]) == set(study.DESIGNS), section
  for opt in ("exact", "best_of_n"):
    for name in study.DESIGNS:
      assert set(result["equal_kl"][opt][name]) == set(study.MEASUREMENTS)
  for name in study.DESIGNS:
    assert set(result["gao_fits"][name]) == {"best_of_n", "exact", "rl"}
    for run in result["rl"][name]:
      assert set(study.MEASUREMENTS) <= set(run) and "sqrt_kl" in run
  verdicts = {"reproduced", "partly reproduced", "not reproduced"}
  for claim in result["claims"].values():
    assert claim["verdict"] in verdicts and claim["rule"] and claim["statement"]
  # run_study (what main calls): results.json with the seed's tables, a verdict per claim, plots.
  monkeypatch.setattr(study, "run_synthetic", lambda seed, smoke: result)
  study.run_study(str(tmp_path), seed=0, num_seeds=1, smoke=True)
  out = json.loads((tmp_path / "results.json").read_text())
  assert set(out["per_seed"]) == {"0"} and set(out["claims"]) == set(result["claims"])
  assert set(out["units"]) >= set(study.MEASUREMENTS)
  for seed_plots in out["plots"].values():
    assert len(seed_plots) == 3
    for name in seed_plots:
      assert (tmp_path / name).stat().st_size > 1000


def test_combine_seeds_holds_only_when_every_seed_reproduces():
  claim = {"statement": "s", "rule": "r"}
  per_seed = {"0": {"claims": {"a": {**claim, "verdict": "reproduced"},
                               "b": {**claim, "verdict": "reproduced"}}},
              "1": {"claims": {"a": {**claim, "verdict": "reproduced"},
                               "b": {**claim, "verdict": "not reproduced"}}}}
  out = study.combine_seeds(per_seed)
  assert out["a"]["holds_for_all_seeds"] and out["a"]["verdict"] == "reproduced"
  assert not out["b"]["holds_for_all_seeds"] and out["b"]["verdict"] == "partly reproduced"
  assert out["b"]["verdict_per_seed"] == {"0": "reproduced", "1": "not reproduced"}
