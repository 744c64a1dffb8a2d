"""Tests of rmjax.models: the transformer backbone, heads, reward model and sharding."""

import math

from flax import nnx
import jax
import jax.numpy as jnp
from jax import test_util as jtu
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import pytest

from rmjax import models

TINY = models.TransformerConfig(vocab_size=259, max_len=32, d_model=16, num_layers=2,
                                num_heads=2)


@pytest.fixture(scope="module")
def tiny():
  graphdef, params = models.init_reward_model(TINY, jax.random.key(0))
  return graphdef, params, jax.jit(models.make_reward_apply(graphdef))


@pytest.fixture(scope="module")
def hidden_fn(tiny):
  graphdef, params, _ = tiny
  return jax.jit(lambda tokens, mask: nnx.merge(graphdef, params).backbone(tokens, mask))


@pytest.fixture(scope="module")
def loss_and_grad(tiny):
  """Jitted (loss, grads) of a squared error on the rewards of a batch."""
  apply = models.make_reward_apply(tiny[0])

  def loss(params, batch, targets):
    return jnp.mean((apply(params, batch) - targets) ** 2)

  return jax.jit(jax.value_and_grad(loss))


def _right_padded(seqs, length, pad_ids=None):
  """Stacks token lists into [B, length] tokens and mask; padding ids from pad_ids."""
  tokens = np.zeros((len(seqs), length), np.int32)
  mask = np.zeros((len(seqs), length), bool)
  for i, seq in enumerate(seqs):
    tokens[i, :len(seq)] = seq
    mask[i, :len(seq)] = True
    if pad_ids is not None:
      tokens[i, len(seq):] = pad_ids[i, :length - len(seq)]
  return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}


def _random_seqs(seed, lengths):
  rng = np.random.default_rng(seed)
  return [list(rng.integers(3, 259, n)) for n in lengths]


# --------------------------------------------------------------------------- config


def test_config_defaults_and_round_trip():
  config = models.TransformerConfig()
  assert (config.vocab_size, config.max_len, config.d_model) == (259, 256, 128)
  assert config.head_dim == 32
  assert config.mlp_dim == 344  # 8 * ceil(128 / 3), the multiple of 8 above 341.3
  assert models.TransformerConfig(d_ff=100).mlp_dim == 100
  assert models.TransformerConfig.from_dict(config.to_dict()) == config
  assert models.TransformerConfig.from_dict({"d_model": 64, "num_heads": 8}).head_dim == 8


@pytest.mark.parametrize("kwargs, field", [
    ({"vocab_size": 0}, "vocab_size"),
    ({"max_len": -3}, "max_len"),
    ({"num_layers": True}, "num_layers"),
    ({"num_heads": 2.0}, "num_heads"),
    ({"d_ff": 0}, "d_ff"),
    ({"d_model": 30, "num_heads": 4}, "d_model"),
    ({"d_model": 6, "num_heads": 2}, "num_heads"),  # head_dim 3 is odd: no RoPE pairs
    ({"rope_base": -1.0}, "rope_base"),
    ({"norm_eps": 0.0}, "norm_eps"),
    ({"dtype": "int8"}, "dtype"),
    ({"param_dtype": "float64"}, "param_dtype"),
    ({"attention": "flash"}, "attention"),
    ({"attention": "dot_product", "attn_logit_softcap": 50.0}, "attention"),
    ({"remat": "everything"}, "remat"),
])
def test_config_validation_names_the_field(kwargs, field):
  with pytest.raises(ValueError, match=rf"TransformerConfig\.{field}\b"):
    models.TransformerConfig(**kwargs)


def test_config_from_dict_rejects_unknown_fields():
  with pytest.raises(ValueError, match="d_modle"):
    models.TransformerConfig.from_dict({"d_modle": 64})


# --------------------------------------------------------------------------- shapes


def test_output_shape_and_dtype(tiny):
  _, params, apply = tiny
  batch = _right_padded(_random_seqs(0, [3, 7, 5]), 8)
  rewards = apply(params, batch)
  assert rewards.shape == (3,)
  assert rewards.dtype == jnp.float32
  assert np.all(np.isfinite(rewards))
  # Rewards at init are O(1) and differ between sequences.
  assert 1e-3 < float(jnp.std(rewards)) < 10.0

  graphdef3, params3 = models.init_reward_model(TINY, jax.random.key(1), num_outputs=3)
  rewards3 = jax.jit(models.make_reward_apply(graphdef3))(params3, batch)
  assert rewards3.shape == (3, 3)
  assert rewards3.dtype == jnp.float32


def test_model_holds_only_params_and_params_are_pure_dicts(tiny):
  model = models.RewardModel(TINY, rngs=nnx.Rngs(0))
  _, _, rest = nnx.split(model, nnx.Param, ...)
  assert jax.tree.leaves(rest) == []
  _, params, _ = tiny
  assert type(params) is dict and type(params["backbone"]) is dict
  assert set(params) == {"backbone", "head"}
  assert params["backbone"]["embedding"].shape == (259, 16)
  assert params["backbone"]["layers"][1]["mlp"]["down"].shape == (48, 16)


def test_bfloat16_compute_close_to_float32(tiny):
  _, params, apply = tiny
  config16 = models.TransformerConfig(**{**TINY.to_dict(), "dtype": "bfloat16"})
  graphdef16, _ = jax.eval_shape(lambda key: models.init_reward_model(config16, key),
                                 jax.random.key(0))
  batch = _right_padded(_random_seqs(1, [3, 7, 8]), 8)
  rewards32 = apply(params, batch)
  rewards16 = jax.jit(models.make_reward_apply(graphdef16))(params, batch)
  assert rewards16.dtype == jnp.float32
  np.testing.assert_allclose(rewards16, rewards32, atol=0.1, rtol=0.05)
  assert float(jnp.max(jnp.abs(rewards16 - rewards32))) > 0.0  # bf16 really was used


def test_bfloat16_params_give_float32_rewards(tiny):
  _, params, _ = tiny
  config = models.TransformerConfig(**{**TINY.to_dict(), "param_dtype": "bfloat16"})
  abstract = models.abstract_params(config)
  assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.bfloat16)}
  graphdef, _ = jax.eval_shape(lambda key: models.init_reward_model(config, key),
                               jax.random.key(0))
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  rewards = jax.jit(models.make_reward_apply(graphdef))(
      params16, _right_padded(_random_seqs(0, [3, 7, 5]), 8))
  assert rewards.dtype == jnp.float32
  assert np.all(np.isfinite(rewards))


# --------------------------------------------------------------------------- padding


def test_padding_length_and_padding_ids_do_not_matter(tiny):
  _, params, apply = tiny
  seqs = _random_seqs(2, [3, 12, 7, 1])
  pads = np.random.default_rng(3).integers(0, 259, (4, 20))
  short = apply(params, _right_padded(seqs, 12, pad_ids=pads))
  long = apply(params, _right_padded(seqs, 20, pad_ids=pads))
  np.testing.assert_allclose(short, long, atol=1e-5)
  # Different (even out-of-vocabulary) ids in the padding change nothing.
  other_pads = np.random.default_rng(4).integers(-1000, 1000, (4, 20))
  np.testing.assert_array_equal(
      apply(params, _right_padded(seqs, 20, pad_ids=other_pads)), long)


def test_fully_masked_rows_stay_finite(tiny, hidden_fn):
  _, params, apply = tiny
  batch = _right_padded([[5, 6], [], [7]], 8)  # second row: no real token at all
  assert np.all(np.isfinite(apply(params, batch)))
  assert np.all(np.isfinite(hidden_fn(batch["tokens"], batch["mask"])))


# --------------------------------------------------------------------------- causality


def test_changing_the_last_real_token_changes_the_reward(tiny):
  _, params, apply = tiny
  seqs = _random_seqs(5, [6, 3, 8])
  batch = _right_padded(seqs, 8)
  edited_seq = seqs[0][:-1] + [3 + (seqs[0][-1] - 2) % 256]
  edited = apply(params, _right_padded([edited_seq] + seqs[1:], 8))
  rewards = apply(params, batch)
  assert abs(float(rewards[0] - edited[0])) > 1e-4
  np.testing.assert_array_equal(rewards[1:], edited[1:])  # other rows untouched
  # A token after the last real one (in the padding) changes nothing.
  tokens = np.array(batch["tokens"])
  tokens[0, 6], tokens[1, 3:] = 77, 250
  np.testing.assert_array_equal(apply(params, {**batch, "tokens": jnp.asarray(tokens)}),
                                rewards)


def test_hidden_state_at_t_ignores_later_tokens(hidden_fn):
  tokens = np.random.default_rng(6).integers(3, 259, (3, 8)).astype(np.int32)
  mask = jnp.ones(tokens.shape, dtype=bool)
  t = 4
  changed = tokens.copy()
  changed[:, t + 1:] = (tokens[:, t + 1:] + 17) % 256 + 3
  hidden = hidden_fn(jnp.asarray(tokens), mask)
  hidden_changed = hidden_fn(jnp.asarray(changed), mask)
  np.testing.assert_allclose(hidden[:, :t + 1], hidden_changed[:, :t + 1], atol=1e-6)
  assert float(jnp.max(jnp.abs(hidden[:, t + 1:] - hidden_changed[:, t + 1:]))) > 1e-3


# --------------------------------------------------------------------------- pooling


def test_reads_the_last_real_token(tiny):
  _, params, apply = tiny
  seq = _random_seqs(7, [8])[0]
  # Same ids, but the second copy ends 3 tokens earlier: its reward must differ.
  batch = _right_padded([seq, seq, seq], 8)
  batch["mask"] = batch["mask"].at[1, 5:].set(False)
  rewards = apply(params, batch)
  assert float(rewards[0]) == float(rewards[2])
  assert abs(float(rewards[0] - rewards[1])) > 1e-4

  seqs = _random_seqs(8, [5, 8, 2, 7])
  together = apply(params, _right_padded(seqs, 8))
  for i, seq_i in enumerate(seqs):
    alone = apply(params, _right_padded([seq_i], 8))
    np.testing.assert_allclose(alone[0], together[i], atol=1e-5)


def test_gather_last_token_by_hand():
  hidden = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
  mask = jnp.array([[1, 1, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(models.gather_last_token(hidden, mask),
                                [[6.0, 7.0, 8.0], [12.0, 13.0, 14.0]])
  with pytest.raises(ValueError, match="mask"):
    models.gather_last_token(hidden, mask[:, :3])


# --------------------------------------------------------------------------- RoPE


def test_rope_by_hand():
  # K = 2: one pair (x1, x2) rotated by angle = position * base**0 = position.
  x = jnp.array([1.0, 0.0]).reshape(1, 1, 1, 2)
  out = models.apply_rope(x, jnp.array([2]))
  np.testing.assert_allclose(out.reshape(2), [math.cos(2.0), math.sin(2.0)], atol=1e-6)


def test_rope_dot_product_depends_only_on_offset():
  length, dim = 12, 8
  rng = np.random.default_rng(9)
  q = jnp.broadcast_to(jnp.asarray(rng.normal(size=dim), jnp.float32), (1, length, 1, dim))
  k = jnp.broadcast_to(jnp.asarray(rng.normal(size=dim), jnp.float32), (1, length, 1, dim))
  positions = jnp.arange(length)
  rq = models.apply_rope(q, positions, base=100.0)[0, :, 0]
  rk = models.apply_rope(k, positions, base=100.0)[0, :, 0]
  scores = np.asarray(rq @ rk.T)  # [m, n] = <rope(q, m), rope(k, n)>
  for offset in range(-5, 6):
    diagonal = np.diagonal(scores, offset=offset)
    np.testing.assert_allclose(diagonal, diagonal[0], atol=1e-4)
  # ... and does depend on the offset, and rotation preserves norms.
  assert abs(scores[0, 0] - scores[3, 0]) > 1e-2
  np.testing.assert_allclose(jnp.linalg.norm(rq, axis=-1), jnp.linalg.norm(q[0, :, 0], axis=-1),
                             rtol=1e-5)


# --------------------------------------------------------------------------- reference


def _reference_block(x, params, mask, config):
  """A transformer block in float64 numpy, written independently of the module."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  batch, length, _ = x.shape
  head_dim = config.head_dim

  def rms_norm(h, scale):
    return h / np.sqrt(np.mean(h ** 2, axis=-1, keepdims=True) + config.norm_eps) * scale

  def rope(a):  # pairs (i, i + K/2) as complex numbers, rotated by pos * base^(-2i/K)
    half = head_dim // 2
    theta = config.rope_base ** (-2.0 * np.arange(half) / head_dim)
    z = (a[..., :half] + 1j * a[..., half:]) * np.exp(
        1j * np.arange(length)[:, None, None] * theta)
    return np.concatenate([z.real, z.imag], axis=-1)

  attn = p["attention"]
  h = rms_norm(x, p["attention_norm"]["scale"])
  q = rope(np.einsum("bld,dhk->blhk", h, attn["query"]))
  k = rope(np.einsum("bld,dhk->blhk", h, attn["key"]))
  v = np.einsum("bld,dhk->blhk", h, attn["value"])
  scores = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(head_dim)
  allowed = np.tril(np.ones((length, length), bool))[None, None] & mask[:, None, None, :]
  scores = np.where(allowed, scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  x = x + np.einsum("bqhk,hkd->bqd", np.einsum("bhqs,bshk->bqhk", probs, v), attn["out"])
  mlp = p["mlp"]
  h = rms_norm(x, p["mlp_norm"]["scale"])
  silu = lambda a: a / (1.0 + np.exp(-a))
  return x + (silu(h @ mlp["gate"]) * (h @ mlp["up"])) @ mlp["down"]


def test_block_matches_a_numpy_reference():
  block = models.TransformerBlock(TINY, rngs=nnx.Rngs(3))
  params = nnx.to_pure_dict(nnx.state(block, nnx.Param))
  x = np.random.default_rng(13).normal(size=(2, 6, 16))
  # The module contract: keys where mask is False are ignored, even inside a row.
  mask = np.array([[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
  out = jax.jit(lambda x, mask: block(x, mask))(jnp.asarray(x, jnp.float32), mask)
  np.testing.assert_allclose(out, _reference_block(x, params, mask, TINY), atol=1e-4)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("activation, act", [
    ("silu", jax.nn.silu), ("gelu_tanh", lambda a: jax.nn.gelu(a, approximate=True))])
def test_gated_mlp_backward_equals_autodiff_of_the_plain_expression(activation, act):
  rng = np.random.default_rng(5)
  x, gate, up, down = (jnp.asarray(rng.normal(size=shape), jnp.float32)
                       for shape in ((2, 5, 8), (8, 12), (8, 12), (12, 8)))
  weights = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)

  def plain(x, gate, up, down):
    return jnp.sum(weights * ((act(x @ gate) * (x @ up)) @ down))

  def ours(x, gate, up, down):
    return jnp.sum(weights * models.gated_mlp(x, gate, up, down, activation))

  want_value, want_grads = jax.value_and_grad(plain, argnums=(0, 1, 2, 3))(x, gate, up, down)
  got_value, got_grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2, 3)))(
      x, gate, up, down)
  np.testing.assert_allclose(got_value, want_value, rtol=1e-6)
  for got, want in zip(got_grads, want_grads):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  jtu.check_grads(lambda *a: models.gated_mlp(*a, activation), (x, gate, up, down),
                            order=1, modes=("rev",), atol=2e-2, rtol=2e-2)
  with pytest.raises(ValueError, match="activation"):
    models.gated_mlp(x, gate, up, down, "relu")


def test_gradient_is_finite_and_nonzero_for_every_param(tiny, loss_and_grad):
  _, params, _ = tiny
  batch = _right_padded(_random_seqs(10, [4, 8, 2]), 8)
  _, grads = loss_and_grad(params, batch, jnp.array([1.0, -1.0, 0.5]))
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    name = jax.tree_util.keystr(path)
    assert np.all(np.isfinite(grad)), name
    assert float(jnp.max(jnp.abs(grad))) > 0.0, name


def test_params_work_with_optax_and_orbax(tiny, loss_and_grad, tmp_path):
  import optax
  import orbax.checkpoint as ocp

  _, params, apply = tiny
  batch = _right_padded(_random_seqs(11, [4, 6, 8]), 8)
  targets = jnp.array([3.0, -3.0, 2.0])
  tx = optax.sgd(1e-2)
  opt_state = jax.jit(tx.init)(params)
  loss, grads = loss_and_grad(params, batch, targets)
  updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
  new_params = jax.jit(optax.apply_updates)(params, updates)
  assert jax.tree.structure(new_params) == jax.tree.structure(params)
  assert float(loss_and_grad(new_params, batch, targets)[0]) < float(loss)

  with ocp.CheckpointManager(tmp_path) as manager:
    manager.save(0, args=ocp.args.StandardSave({"params": new_params, "opt": opt_state}))
    manager.wait_until_finished()
    target = {"params": models.abstract_params(TINY), "opt": jax.eval_shape(tx.init, params)}
    restored = manager.restore(0, args=ocp.args.StandardRestore(target))
  np.testing.assert_array_equal(apply(restored["params"], batch), apply(new_params, batch))


# --------------------------------------------------------------------------- sizes


def test_abstract_params_count_and_flops(tiny):
  _, params, _ = tiny
  abstract = models.abstract_params(TINY)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), abstract) == jax.tree.map(
      lambda a: (a.shape, a.dtype), params)
  # Per layer 4*16*16 + 3*16*48 + 2*16 = 3360; x2 layers, + final norm 16, + head 17.
  assert models.non_embedding_params(TINY) == 2 * 3360 + 16 + 17
  assert models.count_params(params) == 259 * 16 + 2 * 3360 + 33
  assert models.count_params(abstract) == models.count_params(params)
  assert models.count_params(models.abstract_params(models.TransformerConfig())) == 429185
  assert models.flops_per_token(TINY, 10) == 6 * 6753 + 12 * 2 * 16 * 10
  with pytest.raises(ValueError, match="seq_len"):
    models.flops_per_token(TINY, 0)


# --------------------------------------------------------------------------- inputs


def test_bad_inputs_name_the_argument(tiny):
  graphdef, params, _ = tiny
  apply = models.make_reward_apply(graphdef)
  good = _right_padded([[4, 5, 6]], 4)
  with pytest.raises(TypeError, match="tokens"):
    apply(params, {**good, "tokens": good["tokens"].astype(jnp.float32)})
  with pytest.raises(ValueError, match="tokens"):
    apply(params, {**good, "tokens": good["tokens"][0]})
  with pytest.raises(ValueError, match="mask"):
    apply(params, {**good, "mask": good["mask"][:, :3]})
  with pytest.raises(TypeError, match="mask"):
    apply(params, {**good, "mask": good["mask"].astype(jnp.float32)})
  with pytest.raises(KeyError, match="mask"):
    apply(params, {"tokens": good["tokens"]})
  with pytest.raises(ValueError, match="max_len"):
    apply(params, _right_padded([[4]], 33))
  with pytest.raises(TypeError, match="graphdef"):
    models.make_reward_apply(params)


# --------------------------------------------------------------------------- sharding


def test_logical_partition_specs_follow_the_rules():
  specs = models.logical_partition_specs(models.abstract_param_state(TINY))
  backbone = specs["backbone"]
  assert backbone["embedding"] == PartitionSpec(None, "fsdp")
  assert backbone["layers"][0]["attention"]["query"] == PartitionSpec("fsdp", "tensor", None)
  assert backbone["layers"][0]["attention"]["out"] == PartitionSpec("tensor", None, "fsdp")
  assert backbone["layers"][1]["mlp"]["down"] == PartitionSpec("tensor", "fsdp")
  assert backbone["final_norm"]["scale"] == PartitionSpec(None)
  assert specs["head"]["kernel"] == PartitionSpec("fsdp", None)

  rules = tuple(r for r in models.DEFAULT_LOGICAL_AXIS_RULES if r[0] != "mlp")
  with pytest.raises(ValueError, match="'mlp'"):
    models.logical_partition_specs(models.abstract_param_state(TINY), rules)
  with pytest.raises(TypeError, match="params_state"):
    models.logical_partition_specs(models.abstract_params(TINY))


def test_sharded_init_on_a_simulated_mesh():
  assert jax.device_count() == 8, "conftest should simulate 8 CPU devices"
  config = models.TransformerConfig(**{**TINY.to_dict(), "num_layers": 1})
  graphdef, params = models.init_reward_model(config, jax.random.key(0))
  apply = jax.jit(models.make_reward_apply(graphdef))
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  specs = models.logical_partition_specs(models.abstract_param_state(config), mesh=mesh)
  shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)
  init = jax.jit(lambda key: models.init_reward_model(config, key)[1],
                 out_shardings=shardings)
  sharded = init(jax.random.key(0))

  gate = sharded["backbone"]["layers"][0]["mlp"]["gate"]  # [16, 48], ('embed', 'mlp')
  assert gate.sharding.spec == PartitionSpec("fsdp", "tensor")
  assert {shard.data.shape for shard in gate.addressable_shards} == {(8, 24)}
  query = sharded["backbone"]["layers"][0]["attention"]["query"]
  assert query.sharding.spec == PartitionSpec("fsdp", "tensor", None)
  # Same values as the unsharded init, and the same rewards.
  np.testing.assert_array_equal(gate, params["backbone"]["layers"][0]["mlp"]["gate"])
  batch = _right_padded(_random_seqs(12, [3, 8, 5, 6, 1, 2, 7, 4]), 8)
  np.testing.assert_allclose(apply(sharded, batch), apply(params, batch), atol=1e-5)

  # A rule that does not divide a dimension fails with the parameter's name.
  bad_rules = (("vocab", "tensor"),) + models.DEFAULT_LOGICAL_AXIS_RULES[1:]
  with pytest.raises(ValueError, match="embedding"):
    models.logical_partition_specs(models.abstract_param_state(config), bad_rules, mesh=mesh)


# --------------------------------------------------------------------------- attention


_ATTENTION_CASES = {
    "mha": {},
    "gqa": {"num_kv_heads": 1},                                         # grouped-query
    "sliding_window": {"sliding_window": 3, "sliding_window_layers": (0,)},  # Gemma-2 local
    "scalar_qk_norm": {"query_pre_attn_scalar": 12.0, "qk_norm": True},
    # Gemma-2's attention, all at once (for the slow interpreted splash kernel); a cap of
    # 0.5 is the size of the logits here, so it bites.
    "gemma2": {"num_kv_heads": 1, "sliding_window": 3, "sliding_window_layers": (0,),
               "query_pre_attn_scalar": 12.0, "qk_norm": True, "attn_logit_softcap": 0.5},
}


@pytest.mark.parametrize("implementation, case", [
    ("dot_product", "mha"), ("dot_product", "gqa"), ("dot_product", "sliding_window"),
    ("dot_product", "scalar_qk_norm"), ("tpu_splash", "mha"), ("tpu_splash", "gemma2")])
@pytest.mark.filterwarnings("ignore:attention='tpu_splash'.*interpret mode")
def test_fast_attention_matches_the_reference(implementation, case):
  """attention='dot_product' (jax.nn.dot_product_attention) and 'tpu_splash' (the Pallas TPU
  splash kernel, interpret mode on CPU; L = 12 padded to 128 inside) give the reference
  path's rewards and gradients (float32: values rtol 1e-5, gradients rtol 1e-4, atol 1e-6):
  right and left padding, causal order. A fully padded row: the same values for
  'dot_product'; finite for 'tpu_splash' (its padding queries read padding keys, the
  reference's read nothing real either: both meaningless)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(TINY, **_ATTENTION_CASES[case])
  graphdef, params = models.init_reward_model(config, jax.random.key(3))
  fast_graphdef, _ = models.init_reward_model(
      dataclasses.replace(config, attention=implementation), jax.random.key(3))
  seqs = _random_seqs(5, [9, 4, 1])
  right = _right_padded(seqs, 12)
  left = {k: jnp.flip(v, axis=1) for k, v in _right_padded([s[::-1] for s in seqs], 12).items()}
  empty = {"tokens": jnp.zeros((1, 12), jnp.int32), "mask": jnp.zeros((1, 12), bool)}

  def loss(graph):
    apply = models.make_reward_apply(graph)
    def f(params, batch):
      return jnp.sum(jnp.sin(apply(params, batch)))
    return jax.jit(jax.value_and_grad(f))

  for batch in (right, left, empty):
    want_value, want_grad = loss(graphdef)(params, batch)
    got_value, got_grad = loss(fast_graphdef)(params, batch)
    assert np.isfinite(float(got_value))
    if batch is empty and implementation == "tpu_splash":
      assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(got_grad))
      continue
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 got_grad, want_grad)
  # Causal: the hidden state at t ignores later tokens (and the mask is honoured: the
  # window and the padding change the result, so the comparison above is not vacuous).
  fast = jax.jit(lambda tokens, mask: nnx.merge(fast_graphdef, params).backbone(tokens, mask))
  tokens, mask = right["tokens"], right["mask"]
  changed = tokens.at[0, 6].set(tokens[0, 6] % 200 + 3)
  np.testing.assert_array_equal(fast(tokens, mask)[0, :6], fast(changed, mask)[0, :6])
  assert not np.allclose(fast(tokens, mask)[0, 6:9], fast(changed, mask)[0, 6:9])


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("scan, remat, window_layers, scan_length", [
    (True, "none", (0, 1, 2, 3), 4), (True, "full", (0, 1, 2, 3), 4),
    (True, "save_dots", (0, 1, 2, 3), 4), (True, "offload_dots", (0, 1, 2, 3), 4),
    (False, "full", (0, 1, 2, 3), None), (False, "save_dots", (0, 1, 2, 3), None),
    # Gemma-2's pattern, a window on every other layer: 2 steps of 2 blocks.
    (True, "none", (0, 2), 2), (True, "full", (0, 2), 2),
    # No shorter pattern repeats: 1 step of all 4 blocks.
    (True, "full", (0,), 1),
], ids=["scan", "scan_full", "scan_save_dots", "scan_offload", "full", "save_dots",
        "alternating", "alternating_full", "one_window"])
def test_layer_scan_and_remat_give_the_unrolled_values_and_gradients(scan, remat,
                                                                     window_layers,
                                                                     scan_length):
  """scan_layers / remat change how the blocks run, not what they compute: rewards and
  gradients of every parameter equal the unrolled blocks' (right and left padding, GQA,
  q/k norms, a window on every layer, on alternate layers or on one), and the program
  really scans (over as many steps as the window pattern allows) / rematerialises."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(TINY, num_layers=4, num_kv_heads=1, qk_norm=True,
                               sliding_window=3, sliding_window_layers=window_layers)
  graphdef, params = models.init_reward_model(config, jax.random.key(4))
  other, _ = models.init_reward_model(
      dataclasses.replace(config, scan_layers=scan, remat=remat), jax.random.key(4))
  seqs = _random_seqs(6, [11, 4, 1, 7])
  right = _right_padded(seqs, 12)
  left = {k: jnp.flip(v, axis=1) for k, v in _right_padded([s[::-1] for s in seqs], 12).items()}

  def value_and_grad(graph):
    apply = models.make_reward_apply(graph)
    return jax.value_and_grad(lambda p, b: jnp.sum(jnp.sin(3.0 * apply(p, b))))

  for batch in (right, left):
    want_value, want_grad = jax.jit(value_and_grad(graphdef))(params, batch)
    got_value, got_grad = jax.jit(value_and_grad(other))(params, batch)
    np.testing.assert_allclose(got_value, want_value, rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 got_grad, want_grad)
  # Every block's weights get a nonzero gradient (the scan's unstacking is not lost).
  assert all(float(jnp.abs(g["mlp"]["up"]).max()) > 0
             for g in want_grad["backbone"]["layers"].values())
  jaxpr = str(jax.make_jaxpr(value_and_grad(other))(params, right))
  assert ("scan[" in jaxpr) == scan
  if scan:
    assert f"length={scan_length}" in jaxpr
  assert ("remat" in jaxpr or "checkpoint" in jaxpr) == (remat != "none")


def test_layer_scan_runs_the_first_blocks_of_hidden_before_layer():
  """hidden_before_layer(k) under scan_layers scans blocks [0, k) only (the input of the
  trainable tail of a frozen pretrained backbone), equal to the unrolled blocks."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(TINY, num_layers=3)
  graphdef, params = models.init_reward_model(config, jax.random.key(5))
  scan_graphdef, _ = models.init_reward_model(dataclasses.replace(config, scan_layers=True),
                                              jax.random.key(5))
  batch = _right_padded(_random_seqs(7, [9, 3]), 10)
  for layer in (0, 1, 2, 3):
    want = nnx.merge(graphdef, params).backbone.hidden_before_layer(
        batch["tokens"], batch["mask"], layer)
    got = nnx.merge(scan_graphdef, params).backbone.hidden_before_layer(
        batch["tokens"], batch["mask"], layer)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _assert_same_at_real_tokens(got, want, mask):
  """(reward sum, its gradients, hidden states) equal, the hidden states at real tokens."""
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               got[1], want[1])
  real = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(got[2])[real], np.asarray(want[2])[real],
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [
    {}, {"num_kv_heads": 1, "sliding_window": 5, "sliding_window_layers": (0,)},
], ids=["mha", "gqa_window"])
def test_reference_attention_in_query_blocks_equals_one_block(monkeypatch, kwargs):
  """Sequences longer than CAUSAL_QUERY_BLOCK go in query blocks, each against the keys it
  can see: rewards, gradients and the hidden states at real tokens equal the one-block
  computation (right and left padding, a window shorter and longer than a block)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from rmjax.models import transformer  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(TINY, **kwargs)
  graphdef, params = models.init_reward_model(config, jax.random.key(8))
  seqs = _random_seqs(9, [13, 6, 1, 9])
  right = _right_padded(seqs, 14)
  left = {k: jnp.flip(v, axis=1) for k, v in _right_padded([s[::-1] for s in seqs], 14).items()}
  apply = models.make_reward_apply(graphdef)
  loss = lambda p, b: jnp.sum(jnp.sin(3.0 * apply(p, b)))
  hidden = lambda p, b: nnx.merge(graphdef, p).backbone(b["tokens"], b["mask"])

  def run(block, batch):
    monkeypatch.setattr(transformer, "CAUSAL_QUERY_BLOCK", block)
    # Fresh functions, traced anew under this block size (the blocks' einsums counted).
    einsums = str(jax.make_jaxpr(lambda p, b: hidden(p, b))(params, batch)).count("dot_general")
    value, grad = jax.jit(jax.value_and_grad(lambda p, b: loss(p, b)))(params, batch)
    return value, grad, jax.jit(lambda p, b: hidden(p, b))(params, batch), einsums

  for batch in (right, left):
    want_value, want_grad, want_hidden, one_block = run(1000, batch)
    got_value, got_grad, got_hidden, blocks = run(4, batch)  # [0, 4) [4, 8) [8, 12) [12, 14)
    # Per layer: 4 projections + 2 attention einsums in one block, 4 + 2 x 4 in four.
    assert (blocks - one_block) == 6 * config.num_layers
    _assert_same_at_real_tokens((got_value, got_grad, got_hidden),
                                (want_value, want_grad, want_hidden), batch["mask"])
    assert np.all(np.isfinite(got_hidden))


@pytest.mark.parametrize("kwargs, block", [
    ({}, 1000), ({}, 4), ({"num_kv_heads": 1, "sliding_window": 5,
                          "sliding_window_layers": (0,)}, 4),
], ids=["mha", "mha_query_blocks", "gqa_window_query_blocks"])
def test_reference_attention_in_batch_chunks_equals_the_whole_batch(monkeypatch, kwargs, block):
  """On CPU the reference attention goes over the batch in chunks of `cpu_attention_rows`
  rows (a lax.map, each chunk rematerialised): rewards, gradients and hidden states at real
  tokens equal the whole batch at once (right and left padding, with and without query
  blocks, GQA and a window)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from rmjax.models import transformer  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(transformer, "CAUSAL_QUERY_BLOCK", block)
  config = dataclasses.replace(TINY, **kwargs)
  graphdef, params = models.init_reward_model(config, jax.random.key(9))
  seqs = _random_seqs(10, [13, 6, 1, 9, 14, 2])
  right = _right_padded(seqs, 14)
  left = {k: jnp.flip(v, axis=1) for k, v in _right_padded([s[::-1] for s in seqs], 14).items()}
  apply = models.make_reward_apply(graphdef)
  loss = lambda p, b: jnp.sum(jnp.sin(3.0 * apply(p, b)))
  hidden = lambda p, b: nnx.merge(graphdef, p).backbone(b["tokens"], b["mask"])
  row_bytes = config.num_heads * min(14, block) * 14 * 4

  def run(chunk_bytes, batch):
    monkeypatch.setattr(transformer, "CPU_ATTENTION_CHUNK_BYTES", chunk_bytes)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p, b: loss(p, b)))(params, batch))
    value, grad = jax.jit(jax.value_and_grad(lambda p, b: loss(p, b)))(params, batch)
    return value, grad, jax.jit(lambda p, b: hidden(p, b))(params, batch), jaxpr

  assert transformer.cpu_attention_rows(6, config.num_heads, 14) == 6
  for batch in (right, left):
    want_value, want_grad, want_hidden, whole = run(10**9, batch)
    got_value, got_grad, got_hidden, chunked = run(3 * row_bytes, batch)  # 2 chunks of 3
    assert transformer.cpu_attention_rows(6, config.num_heads, 14) == 3
    # One lax.map per layer, forward and backward, each chunk rematerialised.
    assert "scan" not in whole and "remat" not in whole and "checkpoint" not in whole
    assert chunked.count("length=2") >= 2 * config.num_layers
    assert "remat" in chunked or "checkpoint" in chunked
    _assert_same_at_real_tokens((got_value, got_grad, got_hidden),
                                (want_value, want_grad, want_hidden), batch["mask"])
