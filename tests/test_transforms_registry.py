"""The registry: lookup and errors, and properties checked over every registered entry."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import transforms
from rmjax.transforms import registry

_RNG = np.random.default_rng(3)
REFS = np.array([-1.0, 0.0, 0.5, 2.0], np.float32)

# Parameters for entries with required ones (and non-default choices worth exercising).
TRANSFORM_PARAMS = {
    "ceil": {"ceiling": 0.5},
    "dapo_overlong": {"max_length": 400, "cache_length": 100},
    "dler_truncation": {"max_length": 400},
    "prm_clip": {"eta": 0.5},
}
COMBINATION_PARAMS = {
    "soft_min": {"temperature": 0.5},
    "directional": {"angle_degrees": -15.0},
}
TWO_D = ("[B, G]", "[B, T]")


def _transform_case(name, rewards):
  """Rewards laid out as the entry expects, and every input it may take, for rewards [N]."""
  entry = transforms.TRANSFORMS[name]
  r = np.asarray(rewards, np.float32)
  if entry.rewards in TWO_D:
    r = r.reshape(1, -1)
  n = r.shape[0]
  inputs = {
      "references": np.tile(REFS, (n, 1)),
      "lengths": np.full(r.shape, 350.0, np.float32),
      "confidence": np.full(r.shape, 0.7, np.float32),
  }
  return r, inputs


def _pad_rows(x, rows, value):
  pad = np.full((rows,) + np.shape(x)[1:], value, np.asarray(x).dtype)
  return np.concatenate([np.asarray(x), pad])


class LookupTest(chex.TestCase):

  def test_names_aliases_and_config_style_use(self):
    config = {"reward_transform": "lsc", "reward_transform_params": {"quantile": 0.5,
                                                                      "method": "empirical"}}
    fn = transforms.get_transform(config["reward_transform"], **config["reward_transform_params"])
    assert fn.name == "log_sigmoid_centered" and fn.params["quantile"] == 0.5
    refs = jnp.array([[0.0, 1.0, 2.0]])
    np.testing.assert_allclose(fn(jnp.array([1.0]), references=refs),
                               transforms.log_sigmoid_centered(jnp.array([1.0]), 1.0))
    np.testing.assert_allclose(fn(jnp.array([1.0]), reference_rewards=jnp.array([0.0])),
                               [-0.3133], atol=5e-5)
    assert transforms.get_combination("and").name == "logical_and"
    assert "par" in repr(transforms.get_transform("par"))

  def test_ml_collections_config(self):
    ml_collections = pytest.importorskip("ml_collections")
    config = ml_collections.ConfigDict()
    config.reward_transform = "par"
    config.reward_transform_params = {"steepness": 2.0}
    fn = transforms.get_transform(config.reward_transform, **config.reward_transform_params)
    assert fn.params["steepness"] == 2.0
    np.testing.assert_allclose(fn(jnp.array([1.0]), references=jnp.array([[0.0]])), [0.880797],
                               rtol=1e-5)

  def test_unknown_name_lists_known_and_closest(self):
    with pytest.raises(ValueError, match=r"unknown transform 'pra'\. Did you mean 'par'\?.*"
                       r"Known: \[.*'centered'"):
      transforms.get_transform("pra")
    with pytest.raises(ValueError, match=r"unknown combination 'logical_or'.*'logical_and'"):
      transforms.get_combination("logical_or")

  def test_parameter_errors(self):
    with pytest.raises(ValueError, match=r"transform 'par' has no parameter\(s\) \['temperature'\]"
                       r".*'steepness': 1.0"):
      transforms.get_transform("par", temperature=1.0)
    with pytest.raises(ValueError, match=r"'dapo_overlong' needs the parameter\(s\) "
                       r"\['cache_length', 'max_length'\]"):
      transforms.get_transform("dapo_overlong")
    with pytest.raises(ValueError, match=r"'soft_min' needs the parameter\(s\) \['temperature'\]"):
      transforms.get_combination("soft_min")
    with pytest.raises(ValueError, match="`temperature`.*> 0"):
      transforms.get_combination("soft_min", temperature=-1.0)(jnp.zeros((2, 2)))

  def test_input_errors_and_extra_inputs(self):
    par = transforms.get_transform("par")
    with pytest.raises(ValueError, match=r"transform 'par' needs the input\(s\) \['references'\]"
                       r".*\['lengths'\]"):
      par(jnp.zeros(2), lengths=jnp.zeros(2))
    with pytest.raises(ValueError, match="`references` \\[B, M\\].*`reference_rewards`"):
      transforms.get_transform("lsc")(jnp.zeros(2))
    # Inputs a transform does not use are ignored, so one call site serves all.
    out = par(jnp.array([1.0]), references=jnp.array([[0.0]]), lengths=jnp.zeros(1), stats=None)
    np.testing.assert_allclose(out, [0.731059], rtol=1e-5)

  def test_running_stats_through_the_registry(self):
    r = jnp.array([0.0, 2.0, 4.0])
    state = transforms.welford_update(transforms.welford_init(), r)
    for name in ("mean_std", "clip", "min_max"):
      np.testing.assert_allclose(
          transforms.get_transform(name)(r, stats=state),
          transforms.running_normalize(state, r, method=name), rtol=1e-6, err_msg=name)
    # Without `stats`, the batch's own statistics: the same here.
    np.testing.assert_allclose(transforms.get_transform("mean_std")(r),
                               transforms.running_normalize(state, r), rtol=1e-5)
    np.testing.assert_allclose(transforms.get_transform("min_max")(r), [0.0, 0.5, 1.0])

  def test_directional_needs_one_direction(self):
    with pytest.raises(ValueError, match="exactly one of.*`direction`.*`angle_degrees`"):
      transforms.get_combination("directional")(jnp.zeros((1, 2)))
    out = transforms.get_combination("directional", direction=(1.0, 0.0))(jnp.array([[3.0, 4.0]]))
    np.testing.assert_allclose(out, [3.0])


class EveryEntryTest(chex.TestCase):
  """Claims checked over every registered transform and combination."""

  def test_monotone_claims(self):
    rewards = np.linspace(-3.0, 3.0, 7).astype(np.float32)
    claimed = [n for n, e in transforms.TRANSFORMS.items() if e.monotone]
    assert len(claimed) >= 12
    for name in claimed:
      r, inputs = _transform_case(name, rewards)
      fn = transforms.get_transform(name, **TRANSFORM_PARAMS.get(name, {}))
      out = np.asarray(fn(jnp.asarray(r), **inputs)).reshape(-1)
      steps = np.diff(out)
      if transforms.TRANSFORMS[name].monotone == "strict":
        assert np.all(steps > 0), (name, out)
      else:
        assert np.all(steps >= 0), (name, out)
        assert np.any(steps > 0), (name, out)

  def test_padding_is_invariant_and_no_nan_at_1e4_or_bfloat16(self):
    base = np.array([-1e4, -1.0, 0.5, 1e4], np.float32)
    for name in transforms.TRANSFORMS:
      r, inputs = _transform_case(name, base)
      if transforms.TRANSFORMS[name].rewards in TWO_D:
        r = np.concatenate([r, r[:, ::-1]])  # two rows
        inputs = {k: np.concatenate([v, v]) if k == "references" else v for k, v in
                  inputs.items()}
        inputs["lengths"] = np.full(r.shape, 350.0, np.float32)
        inputs["confidence"] = np.full(r.shape, 0.7, np.float32)
      fn = transforms.get_transform(name, **TRANSFORM_PARAMS.get(name, {}))
      expected = fn(jnp.asarray(r), **inputs)
      assert expected.dtype == jnp.float32 and np.all(np.isfinite(expected)), name
      low = fn(jnp.asarray(r, jnp.bfloat16), **inputs)
      assert low.dtype == jnp.float32 and np.all(np.isfinite(low)), name
      padded = _pad_rows(r, 2, np.nan)
      padded_inputs = {k: _pad_rows(v, 2, np.inf) for k, v in inputs.items()}
      mask = np.arange(padded.shape[0]) < r.shape[0]
      mask = np.broadcast_to(mask.reshape((-1,) + (1,) * (padded.ndim - 1)), padded.shape)
      out = fn(jnp.asarray(padded), mask=mask, **padded_inputs)
      np.testing.assert_allclose(out[:r.shape[0]], expected, rtol=1e-5, atol=1e-6, err_msg=name)
      np.testing.assert_array_equal(out[r.shape[0]:], 0.0, err_msg=name)

  def test_every_combination_runs_masked_and_finite(self):
    for name, entry in transforms.COMBINATIONS.items():
      params = COMBINATION_PARAMS.get(name, {})
      inputs = {}
      if name == "normalize_then_sum":
        r = _RNG.normal(size=(3, 4, 2)).astype(np.float32)
        mask = np.ones((5, 4), bool)
      else:
        k = {"helpsteer2": 5, "lagrangian": 3, "directional": 2}.get(name, 3)
        r = _RNG.normal(size=(4, k)).astype(np.float32) * 1e3
        mask = np.ones(6, bool)
        if name == "lagrangian":
          inputs["lagrange_state"] = transforms.lagrange_init(2)
      mask[r.shape[0]:] = False
      fn = transforms.get_combination(name, **params)
      expected = fn(jnp.asarray(r), **inputs)
      assert np.all(np.isfinite(expected)), name
      assert np.all(np.isfinite(fn(jnp.asarray(r, jnp.bfloat16), **inputs))), name
      padded = _pad_rows(r, 2, np.nan)
      out = fn(jnp.asarray(padded), mask=mask, **inputs)
      np.testing.assert_allclose(out[:r.shape[0]], expected, rtol=1e-5, atol=1e-5, err_msg=name)
      np.testing.assert_array_equal(out[r.shape[0]:], 0.0, err_msg=name)
      del entry

  def test_entries_are_documented(self):
    for table in (transforms.TRANSFORMS, transforms.COMBINATIONS):
      for name, entry in table.items():
        assert entry.description and entry.rewards, name
        assert set(entry.inputs).isdisjoint(entry.optional_inputs), name
        assert entry.monotone in (None, "weak", "strict"), name
    assert set(registry.ALIASES.values()) <= set(transforms.TRANSFORMS) | set(
        transforms.COMBINATIONS)

  def test_bound_transform_works_under_jit(self):
    par = transforms.get_transform("par", steepness=2.0)
    fn = jax.jit(lambda r, refs: par(r, references=refs))
    r, refs = jnp.array([1.0, -1.0]), jnp.zeros((2, 3))
    np.testing.assert_allclose(fn(r, refs), transforms.preference_as_reward(r, refs,
                                                                            steepness=2.0))
