"""Tests of the BERT-style encoder backbone (rmjax.models.encoder) on random weights.

Checkpoint import and the golden / real-weight comparisons are in test_checkpoints_bert.py.
"""

import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from rmjax.models import encoder as enc
from rmjax.models.reward_model import logical_partition_specs

TINY = enc.EncoderConfig(vocab_size=60, max_len=24, type_vocab_size=2, d_model=16,
                         num_layers=2, num_heads=4, d_ff=32, initializer_range=0.5)


@functools.lru_cache(maxsize=None)
def _init(config, seed):
  # Random N(0, s^2) values for every parameter (LayerNorm and biases too), drawn in
  # numpy: compiling an NNX init on this CPU takes seconds; init_encoder is tested once.
  graphdef, abstract = jax.eval_shape(lambda: enc.init_encoder(config, jax.random.key(0)))
  rng = np.random.default_rng(seed)
  scale = config.initializer_range
  params = jax.tree.map(
      lambda a: jnp.asarray(rng.normal(0.0, scale, a.shape), a.dtype), abstract)
  return graphdef, params


def _model(config=TINY, seed=0):
  """A randomly initialised encoder (cached per config and seed)."""
  return nnx.merge(*_init(config, seed))


@functools.lru_cache(maxsize=None)
def _jitted(graphdef):
  return jax.jit(enc.make_hidden_apply(graphdef))


def _run(model, tokens, mask, token_type_ids=None):
  """model(tokens, mask, token_type_ids) under one jit (eager op-by-op dispatch is slow)."""
  graphdef, params = nnx.split(model, nnx.Param)
  return _jitted(graphdef)(params, jnp.asarray(tokens), jnp.asarray(mask),
                           None if token_type_ids is None else jnp.asarray(token_type_ids))


def test_config_defaults_are_minilm_and_count_22_7m_params():
  config = enc.EncoderConfig()
  assert (config.d_model, config.num_layers, config.num_heads, config.head_dim) == (
      384, 6, 12, 32)
  _, params = jax.eval_shape(lambda: enc.init_encoder(config, jax.random.key(0)))
  total = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  # 22,713,728 in the checkpoint = this + pooler (384*384 + 384) + position_ids (512).
  assert total == 22_713_728 - (384 * 384 + 384) - 512


@pytest.mark.parametrize("field, value, match", [
    ("d_model", 30, "divisible by num_heads"),
    ("num_layers", 0, "num_layers must be a positive int"),
    ("norm_eps", -1.0, "norm_eps"),
    ("hidden_act", "swish", "hidden_act must be one of"),
    ("dtype", "float64", "dtype must be one of"),
    ("pooler", 1, "pooler must be a bool"),
])
def test_config_rejects_bad_values(field, value, match):
  with pytest.raises(ValueError, match=match):
    enc.EncoderConfig(**{**TINY.to_dict(), field: value})


def test_config_dict_round_trip_and_unknown_field():
  assert enc.EncoderConfig.from_dict(TINY.to_dict()) == TINY
  with pytest.raises(ValueError, match="unknown field"):
    enc.EncoderConfig.from_dict({"hidden_size": 8})


def test_layer_norm_matches_numpy():
  norm = enc.LayerNorm(8, eps=1e-5, rngs=nnx.Rngs(0))
  norm.scale[...] = jnp.arange(1.0, 9.0)
  norm.bias[...] = jnp.full((8,), 0.5)
  x = np.random.default_rng(0).normal(3.0, 2.0, size=(3, 8))
  want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
  want = want * np.arange(1.0, 9.0) + 0.5
  np.testing.assert_allclose(norm(jnp.asarray(x, jnp.float32)), want, atol=1e-5)


def test_mean_pool_and_l2_normalize_hand_values():
  hidden = jnp.array([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]],
                      [[4.0, 0.0], [8.0, 8.0], [9.0, 9.0]]])
  mask = jnp.array([[1, 1, 0], [0, 0, 0]])
  np.testing.assert_allclose(enc.mean_pool(hidden, mask), [[2.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(enc.l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])),
                             [[0.6, 0.8], [0.0, 0.0]])
  emb = enc.sentence_embedding(hidden, mask)
  np.testing.assert_allclose(emb[0], np.array([2.0, 4.0]) / math.sqrt(20.0), rtol=1e-6)
  with pytest.raises(ValueError, match="mask must have shape"):
    enc.mean_pool(hidden, mask[:, :2])
  with pytest.raises(ValueError, match=r"hidden must have shape \[B, L, D\]"):
    enc.mean_pool(hidden[0], mask)


def test_padding_does_not_change_real_tokens():
  model = _model()
  rng = np.random.default_rng(1)
  real = rng.integers(1, 60, size=(1, 7))
  types = np.array([[0, 0, 0, 1, 1, 1, 1]])
  alone = _run(model, real, np.ones((1, 7), np.int32), types)
  # Right-padded to 12 with arbitrary (even out-of-range) ids and token types.
  padded = np.concatenate([real, [[59, 3, 1000, -5, 7]]], axis=1)
  padded_types = np.concatenate([types, [[1, 1, 7, 0, 1]]], axis=1)
  mask = np.array([[1] * 7 + [0] * 5])
  hidden = _run(model, padded, mask, padded_types)
  np.testing.assert_allclose(hidden[:, :7], alone, atol=1e-5)
  assert np.isfinite(np.asarray(hidden)).all()
  # The pooled sentence embedding is unchanged too.
  np.testing.assert_allclose(enc.sentence_embedding(hidden, mask),
                             enc.sentence_embedding(alone, np.ones((1, 7))), atol=1e-6)


def test_attention_is_bidirectional():
  model = _model()
  tokens = jnp.array([[5, 6, 7, 8]])
  changed = tokens.at[0, 3].set(9)
  ones = jnp.ones((1, 4), jnp.int32)
  a, b = _run(model, tokens, ones), _run(model, changed, ones)
  # Changing the last token changes the first token's features (no causal mask).
  assert float(jnp.max(jnp.abs(a[0, 0] - b[0, 0]))) > 1e-3


def test_token_types_default_to_zero_and_matter():
  model = _model()
  tokens = jnp.array([[5, 6, 7, 8]])
  ones = jnp.ones((1, 4), jnp.int32)
  np.testing.assert_array_equal(_run(model, tokens, ones),
                                _run(model, tokens, ones, jnp.zeros((1, 4), jnp.int32)))
  other = _run(model, tokens, ones, jnp.array([[0, 0, 1, 1]]))
  assert float(jnp.max(jnp.abs(other - _run(model, tokens, ones)))) > 1e-3


def test_init_encoder_follows_bert_init():
  config = enc.EncoderConfig(**{**TINY.to_dict(), "initializer_range": 0.02})
  graphdef, params = enc.init_encoder(config, jax.random.key(0))
  assert isinstance(graphdef, nnx.GraphDef)
  layer = params["layers"][0]
  np.testing.assert_array_equal(layer["attention"]["query_bias"], 0.0)
  np.testing.assert_array_equal(layer["mlp"]["up_bias"], 0.0)
  np.testing.assert_array_equal(layer["mlp_norm"]["scale"], 1.0)
  np.testing.assert_array_equal(params["embedding_norm"]["bias"], 0.0)
  assert abs(float(jnp.std(params["word_embeddings"])) - 0.02) < 0.002
  assert abs(float(jnp.std(layer["mlp"]["down"])) - 0.02) < 0.003


def test_apply_gradients_never_reach_padding():
  graphdef, params = _init(TINY, 3)
  apply = enc.make_hidden_apply(graphdef)
  # Id 7 occurs only at padding positions, id 0 (what padding ids are replaced by) nowhere.
  tokens = jnp.array([[1, 2, 3, 4, 7], [5, 6, 7, 7, 7]])
  mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])

  def loss(p):
    hidden = apply(p, tokens, mask)
    return jnp.sum(jnp.where(mask[..., None] > 0, hidden, 0.0) ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  words = np.asarray(grads["word_embeddings"])
  np.testing.assert_array_equal(words[[0, 7]], 0.0)
  assert (np.abs(words[[1, 2, 3, 4, 5, 6]]).sum(-1) > 0).all()
  positions = np.abs(np.asarray(grads["position_embeddings"])).sum(-1)
  assert positions[4] == 0.0 and (positions[:4] > 0).all()  # no real token at 4


def test_out_of_range_real_token_gives_nan_not_a_clamped_embedding():
  model = _model()
  hidden = _run(model, jnp.array([[1, 60]]), jnp.ones((1, 2), jnp.int32))
  assert np.isnan(np.asarray(hidden)).all()


def test_input_errors_name_the_argument():
  model = _model()
  ones = jnp.ones((1, 25), jnp.int32)
  with pytest.raises(ValueError, match="max_len=24"):
    model(ones, ones)
  tokens = jnp.ones((1, 4), jnp.int32)
  with pytest.raises(ValueError, match="token_type_ids must have the shape"):
    model(tokens, tokens, jnp.zeros((1, 3), jnp.int32))
  with pytest.raises(TypeError, match="token_type_ids must have an integer dtype"):
    model(tokens, tokens, jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match="mask must have the shape"):
    model(tokens, tokens[:, :3])
  with pytest.raises(ValueError, match="pooler=True"):
    model.pool(jnp.zeros((1, 4, 16)))


def test_pooler_is_tanh_of_first_token():
  config = enc.EncoderConfig(**{**TINY.to_dict(), "pooler": True})
  model = _model(config)
  hidden = _run(model, jnp.array([[3, 4, 5]]), jnp.ones((1, 3), jnp.int32))
  want = np.tanh(np.asarray(hidden[:, 0]) @ np.asarray(model.pooler[...])
                 + np.asarray(model.pooler_bias[...]))
  np.testing.assert_allclose(model.pool(hidden), want, atol=1e-6)


def test_logical_axes_and_fsdp_partition_specs():
  mesh = jax.make_mesh((1, 8, 1), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  specs = logical_partition_specs(enc.abstract_encoder_state(TINY), mesh=mesh)
  attention = specs["layers"][0]["attention"]
  assert specs["word_embeddings"] == PartitionSpec(None, "fsdp")
  assert specs["position_embeddings"] == PartitionSpec(None, "fsdp")
  assert attention["query"] == PartitionSpec("fsdp", "tensor", None)
  assert attention["query_bias"] == PartitionSpec("tensor", None)
  assert attention["out"] == PartitionSpec("tensor", None, "fsdp")
  assert attention["out_bias"] == PartitionSpec(None)
  assert specs["layers"][1]["mlp"]["up"] == PartitionSpec("fsdp", "tensor")
  assert specs["layers"][1]["mlp"]["up_bias"] == PartitionSpec("tensor")
  assert specs["layers"][1]["mlp"]["down"] == PartitionSpec("tensor", "fsdp")
  assert specs["embedding_norm"]["scale"] == PartitionSpec(None)


def test_bfloat16_compute_is_close_to_float32():
  model32 = _model()
  config16 = enc.EncoderConfig(**{**TINY.to_dict(), "dtype": "bfloat16"})
  model16 = nnx.merge(nnx.graphdef(_model(config16)), nnx.state(model32, nnx.Param))
  tokens = jnp.array([[5, 6, 7, 8, 9]])
  ones = jnp.ones((1, 5), jnp.int32)
  hidden16 = _run(model16, tokens, ones)
  assert hidden16.dtype == jnp.bfloat16
  # Post-LN outputs have unit scale; bf16 keeps about 3 significant digits.
  np.testing.assert_allclose(np.asarray(hidden16, np.float32), _run(model32, tokens, ones),
                             atol=0.1)
