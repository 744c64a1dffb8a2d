"""Tests of rmjax.models.ensemble: stacked params with a member axis, applied with vmap."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import pytest

from rmjax import models
from rmjax.losses import bradley_terry_loss

TINY = models.TransformerConfig(vocab_size=259, max_len=32, d_model=16, num_layers=1,
                                num_heads=2)
M = 3


def _batch(seed, lengths, length=8):
  rng = np.random.default_rng(seed)
  tokens = np.zeros((len(lengths), length), np.int32)
  mask = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
  tokens[mask] = rng.integers(3, 259, int(mask.sum()))
  return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}


@pytest.fixture(scope="module")
def ensemble():
  graphdef, stacked = models.init_ensemble(TINY, jax.random.key(42), M)
  return graphdef, stacked, jax.jit(models.make_reward_apply(graphdef))


def _members(rng, num_members, **model_kwargs):
  keys = jax.random.split(rng, num_members)
  return [models.init_reward_model(TINY, key, **model_kwargs)[1] for key in keys]


def test_members_are_the_single_models_of_the_split_keys(ensemble):
  graphdef, stacked, apply = ensemble
  assert all(leaf.shape[0] == M for leaf in jax.tree.leaves(stacked))
  singles = _members(jax.random.key(42), M)
  batch = _batch(0, [3, 8, 5, 1])
  rewards = jax.jit(models.make_ensemble_apply(graphdef))(stacked, batch)
  assert rewards.shape == (M, 4) and rewards.dtype == jnp.float32
  for m, single in enumerate(singles):
    jax.tree.map(np.testing.assert_array_equal, models.ensemble_member(stacked, m), single)
    np.testing.assert_array_equal(rewards[m], apply(single, batch))
  # Members differ, in parameters and in rewards.
  for m in range(1, M):
    assert float(jnp.max(jnp.abs(rewards[m] - rewards[0]))) > 1e-3
  assert float(jnp.max(jnp.abs(stacked["head"]["kernel"][1]
                               - stacked["head"]["kernel"][0]))) > 1e-3
  # The abstract params match, for orbax restore targets.
  abstract = models.abstract_ensemble_params(TINY, M)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), abstract) == jax.tree.map(
      lambda a: (a.shape, a.dtype), stacked)


def test_per_member_batches(ensemble):
  graphdef, stacked, apply = ensemble
  batches = [_batch(10 + m, [2 + m, 8, 4]) for m in range(M)]
  stacked_batch = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
  rewards = jax.jit(models.make_ensemble_apply(graphdef, per_member_batch=True))(
      stacked, stacked_batch)
  assert rewards.shape == (M, 3)
  for m in range(M):
    np.testing.assert_array_equal(
        rewards[m], apply(models.ensemble_member(stacked, m), batches[m]))
  with pytest.raises(ValueError, match="per_member_batch"):
    models.make_ensemble_apply(graphdef, per_member_batch=True)(stacked, _batch(0, [3, 4]))


def test_gradient_of_summed_losses_is_each_members_own_gradient(ensemble):
  graphdef, stacked, _ = ensemble
  chosen, rejected = _batch(20, [4, 8, 2, 6]), _batch(21, [5, 3, 8, 7])
  ensemble_apply = models.make_ensemble_apply(graphdef)
  single_apply = models.make_reward_apply(graphdef)

  def ensemble_loss(stacked):
    per_member = jax.vmap(bradley_terry_loss)(ensemble_apply(stacked, chosen),
                                              ensemble_apply(stacked, rejected))
    return jnp.sum(per_member)

  def single_loss(params):
    return bradley_terry_loss(single_apply(params, chosen), single_apply(params, rejected))

  loss, grads = jax.jit(jax.value_and_grad(ensemble_loss))(stacked)
  assert jax.tree.structure(grads) == jax.tree.structure(stacked)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  single_value_and_grad = jax.jit(jax.value_and_grad(single_loss))
  total = 0.0
  for m in range(M):
    value, grad = single_value_and_grad(models.ensemble_member(stacked, m))
    total += float(value)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 models.ensemble_member(grads, m), grad)
  np.testing.assert_allclose(float(loss), total, rtol=1e-6)


def test_dict_heads_get_a_member_axis_on_every_output():
  graphdef, stacked = models.init_ensemble(TINY, jax.random.key(1), 2, head="mixture",
                                           head_config={"num_components": 3})
  out = jax.jit(models.make_ensemble_apply(graphdef))(stacked, _batch(30, [3, 6]))
  assert {k: v.shape for k, v in out.items()} == {"rewards": (2, 2, 3),
                                                  "router_logits": (2, 2, 3)}
  single = _members(jax.random.key(1), 2, head="mixture", head_config={"num_components": 3})
  np.testing.assert_array_equal(
      out["rewards"][1],
      jax.jit(models.make_reward_apply(graphdef))(single[1], _batch(30, [3, 6]))["rewards"])


def test_ensemble_partition_specs_and_sharded_init():
  specs = models.logical_partition_specs(models.abstract_param_state(TINY))
  stacked_specs = models.ensemble_partition_specs(specs)
  assert stacked_specs["head"]["kernel"] == PartitionSpec(None, "fsdp", None)
  assert stacked_specs["backbone"]["layers"][0]["mlp"]["gate"] == PartitionSpec(
      None, "fsdp", "tensor")
  with pytest.raises(ValueError, match="fsdp"):
    models.ensemble_partition_specs(specs, (("ensemble", "fsdp"),))
  with pytest.raises(TypeError, match="PartitionSpec"):
    models.ensemble_partition_specs({"w": ("fsdp",)})

  # Members spread over the 'data' axis of a simulated (2, 2, 2) mesh.
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  rules = models.DEFAULT_LOGICAL_AXIS_RULES + (("ensemble", "data"),)
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s),
                           models.ensemble_partition_specs(specs, rules))
  init = jax.jit(lambda key: models.init_ensemble(TINY, key, 2)[1], out_shardings=shardings)
  sharded = init(jax.random.key(3))
  gate = sharded["backbone"]["layers"][0]["mlp"]["gate"]  # [2, 16, 48]
  assert gate.sharding.spec == PartitionSpec("data", "fsdp", "tensor")
  assert {shard.data.shape for shard in gate.addressable_shards} == {(1, 8, 24)}
  graphdef, _ = models.init_ensemble(TINY, jax.random.key(3), 2)
  stacked = jax.jit(lambda key: models.init_ensemble(TINY, key, 2)[1])(jax.random.key(3))
  jax.tree.map(np.testing.assert_array_equal, sharded, stacked)
  apply = jax.jit(models.make_ensemble_apply(graphdef))
  batch = _batch(40, [3, 8, 5, 6])
  np.testing.assert_allclose(apply(sharded, batch), apply(stacked, batch), atol=1e-5)


def test_bad_arguments_name_the_argument(ensemble):
  graphdef, stacked, _ = ensemble
  with pytest.raises(ValueError, match="num_members"):
    models.init_ensemble(TINY, jax.random.key(0), 0)
  with pytest.raises(TypeError, match="graphdef"):
    models.make_ensemble_apply(stacked)
  ragged = {**stacked, "head": {**stacked["head"], "bias": stacked["head"]["bias"][:2]}}
  with pytest.raises(ValueError, match="stacked_params"):
    models.make_ensemble_apply(graphdef)(ragged, _batch(0, [3]))
  with pytest.raises(ValueError, match="index"):
    models.ensemble_member(stacked, M)
