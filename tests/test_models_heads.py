"""Tests of the reward heads (rmjax.models.heads) and of RewardModel's head registry."""

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec
import numpy as np
import pytest

from rmjax import models
from rmjax.losses import general_preference, pluralistic

TINY = models.TransformerConfig(vocab_size=259, max_len=32, d_model=16, num_layers=1,
                                num_heads=2)
NUM_USERS = 4

# head name -> (head_config, expected output shapes for a batch of B=4 rows).
HEAD_CASES = {
    "scalar": ({}, (4,)),
    "multi_attribute": ({}, (4, 5)),
    "general_preference": ({"embedding_dim": 6, "prompt_dependent_scales": True},
                           {"embedding": (4, 6), "block_scales": (4, 3)}),
    "mixture": ({"num_components": 3}, {"rewards": (4, 3), "router_logits": (4, 3)}),
    "ideal_point": ({"feature_dim": 5, "num_prototypes": 3, "num_users": NUM_USERS},
                    {"features": (4, 5), "prototypes": (3, 5), "user_logits": (4, 3)}),
    "latent_conditioned": ({"latent_dim": 3, "hidden_dim": 8}, (4,)),
}


def _right_padded(seqs, length, pad_ids=None, prompt_lengths=None):
  """[B, length] tokens and mask (and prompt_mask) from token lists; padding from pad_ids."""
  tokens = np.zeros((len(seqs), length), np.int32)
  mask = np.zeros((len(seqs), length), bool)
  for i, seq in enumerate(seqs):
    tokens[i, :len(seq)] = seq
    mask[i, :len(seq)] = True
    if pad_ids is not None:
      tokens[i, len(seq):] = pad_ids[i, :length - len(seq)]
  batch = {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}
  if prompt_lengths is not None:
    batch["prompt_mask"] = jnp.asarray(np.arange(length)[None, :]
                                       < np.asarray(prompt_lengths)[:, None])
  return batch


def _random_seqs(seed, lengths):
  rng = np.random.default_rng(seed)
  return [list(rng.integers(3, 259, n)) for n in lengths]


def _extras(batch_size=4):
  """The optional batch keys every head may read."""
  return {"latent": jnp.asarray(np.random.default_rng(5).normal(size=(batch_size, 3)),
                                jnp.float32),
          "user_ids": jnp.arange(batch_size, dtype=jnp.int32) % NUM_USERS}


@pytest.fixture(scope="module")
def built():
  """head name -> (graphdef, params, jitted apply, jitted embed)."""
  out = {}
  for head, (head_config, _) in HEAD_CASES.items():
    graphdef, params = models.init_reward_model(TINY, jax.random.key(0), head=head,
                                                head_config=head_config)
    out[head] = (graphdef, params, jax.jit(models.make_reward_apply(graphdef)),
                 jax.jit(models.make_embed_apply(graphdef)))
  return out


def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# --------------------------------------------------------------------------- default path


def test_default_head_is_the_old_scalar_path(built):
  graphdef, params, apply, _ = built["scalar"]
  graphdef0, params0 = models.init_reward_model(TINY, jax.random.key(0))
  assert jax.tree.structure(params0) == jax.tree.structure(params)
  assert set(params) == {"backbone", "head"} and set(params["head"]) == {"kernel", "bias"}
  jax.tree.map(np.testing.assert_array_equal, params0, params)
  batch = _right_padded(_random_seqs(0, [3, 8, 5, 1]), 8)
  # The old path, spelled out: backbone, last real token, linear head, squeeze.
  model = nnx.merge(graphdef0, params0)
  hidden = model.backbone(batch["tokens"], batch["mask"])
  features = models.gather_last_token(hidden, batch["mask"])
  reference = (features @ params0["head"]["kernel"] + params0["head"]["bias"])[:, 0]
  rewards = apply(params, {**batch, **_extras()})  # extra keys are ignored
  np.testing.assert_allclose(rewards, reference, atol=1e-6)
  np.testing.assert_array_equal(rewards, jax.jit(models.make_reward_apply(graphdef0))(
      params0, batch))
  # num_outputs as an argument or in head_config: the same model.
  _, params3 = models.init_reward_model(TINY, jax.random.key(0), num_outputs=3)
  _, params3b = models.init_reward_model(TINY, jax.random.key(0),
                                         head_config={"num_outputs": 3})
  jax.tree.map(np.testing.assert_array_equal, params3, params3b)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("head", sorted(HEAD_CASES))
def test_output_shapes_and_dtypes(built, head):
  _, params, apply, _ = built[head]
  out = apply(params, {**_right_padded(_random_seqs(1, [3, 8, 5, 2]), 8), **_extras()})
  expected = HEAD_CASES[head][1]
  if isinstance(expected, dict):
    assert isinstance(out, dict)
    assert {k: v.shape for k, v in out.items()} == expected
  else:
    assert out.shape == expected
  for leaf in jax.tree.leaves(out):
    assert leaf.dtype == jnp.float32
    assert np.all(np.isfinite(leaf))


@pytest.mark.parametrize("head", sorted(HEAD_CASES))
def test_right_padding_changes_no_output(built, head):
  _, params, apply, _ = built[head]
  seqs = _random_seqs(2, [3, 12, 7, 1])
  pads = np.random.default_rng(3).integers(-50, 300, (4, 20))
  prompt_lengths = [2, 5, 3, 1]
  short = apply(params, {**_right_padded(seqs, 12, pads, prompt_lengths), **_extras()})
  long = apply(params, {**_right_padded(seqs, 20, pads, prompt_lengths), **_extras()})
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), short, long)


@pytest.mark.parametrize("head", sorted(HEAD_CASES))
def test_every_head_shards_with_the_default_rules_and_has_gradients(built, head):
  specs = models.logical_partition_specs(models.abstract_param_state(
      TINY, head=head, head_config=HEAD_CASES[head][0]))
  # Kernels that read the backbone's features are sharded along 'embed' -> 'fsdp'.
  embed_kernels = [spec for spec in jax.tree.leaves(
      specs["head"], is_leaf=lambda x: isinstance(x, PartitionSpec)) if len(spec) == 2
      and spec[0] == "fsdp"]
  assert embed_kernels, specs["head"]

  _, params, apply, _ = built[head]
  batch = {**_right_padded(_random_seqs(4, [3, 8, 5, 2]), 8, prompt_lengths=[2, 3, 4, 1]),
           **_extras()}
  out = apply(params, batch)
  weights = jax.tree.map(
      lambda a: jnp.asarray(np.random.default_rng(6).normal(size=a.shape), jnp.float32), out)

  def loss(params):
    out = models.make_reward_apply(built[head][0])(params, batch)
    return sum(jnp.sum(o * w) for o, w in zip(jax.tree.leaves(out), jax.tree.leaves(weights)))

  grads = jax.jit(jax.grad(loss))(params)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads["head"]):
    assert np.all(np.isfinite(grad)), jax.tree_util.keystr(path)
    assert float(jnp.max(jnp.abs(grad))) > 0.0, jax.tree_util.keystr(path)


# --------------------------------------------------------------------------- GPM


def test_gpm_embedding_and_gate_by_hand_and_into_the_loss(built):
  _, params, apply, embed = built["general_preference"]
  head = _np(params["head"])
  prompt = _random_seqs(7, [4])[0]
  responses = _random_seqs(8, [3, 6, 2, 5])
  seqs = [prompt + r for r in responses]
  batch = _right_padded(seqs, 12)
  features = np.asarray(embed(params, batch), np.float64)

  # Without a prompt mask the gate reads the last token: softmax(h @ W_g).
  out = apply(params, batch)
  np.testing.assert_allclose(out["embedding"], features @ head["embedding"]["kernel"],
                             atol=1e-5)
  logits = features @ head["gate"]["kernel"]
  softmax = np.exp(logits - logits.max(-1, keepdims=True))
  softmax /= softmax.sum(-1, keepdims=True)
  np.testing.assert_allclose(out["block_scales"], softmax, atol=1e-5)

  # With it, the gate reads the prompt's last token: one prompt, one set of scales,
  # equal to the scales of the prompt scored alone.
  gated = apply(params, {**batch, "prompt_mask": _right_padded(seqs, 12, prompt_lengths=[4] * 4)
                         ["prompt_mask"]})
  np.testing.assert_allclose(gated["block_scales"],
                             np.broadcast_to(gated["block_scales"][:1], (4, 3)), atol=1e-6)
  prompt_alone = apply(params, _right_padded([prompt], 12))
  np.testing.assert_allclose(gated["block_scales"][0], prompt_alone["block_scales"][0],
                             atol=1e-6)
  np.testing.assert_array_equal(gated["embedding"], out["embedding"])
  np.testing.assert_allclose(np.sum(gated["block_scales"], -1), 1.0, atol=1e-6)

  # Pairs (0 > 1) and (2 > 3) through the GPM loss, against the formula by hand.
  chosen, rejected = gated["embedding"][0::2], gated["embedding"][1::2]
  scales = gated["block_scales"][0::2]
  loss = general_preference.general_preference_loss(
      chosen, rejected, block_scales=scales, temperature=0.5, reduction="none")
  a, b, lam = (np.asarray(x, np.float64) for x in (chosen, rejected, scales))
  score = np.sum(lam * (a[:, 0::2] * b[:, 1::2] - a[:, 1::2] * b[:, 0::2]), axis=-1)
  np.testing.assert_allclose(loss, np.log1p(np.exp(-score / 0.5)), rtol=1e-5)
  swapped = general_preference.general_preference_score(rejected, chosen, block_scales=scales)
  np.testing.assert_allclose(swapped, -score, atol=1e-6)  # skew-symmetric


def test_gpm_scaled_softmax_gate_averages_one():
  head = models.GeneralPreferenceHead(8, 6, prompt_dependent_scales=True,
                                      scale_gate="scaled_softmax", rngs=nnx.Rngs(0))
  features = jnp.asarray(np.random.default_rng(9).normal(size=(5, 8)), jnp.float32)
  scales = head(features)["block_scales"]
  np.testing.assert_allclose(jnp.mean(scales, -1), 1.0, atol=1e-6)
  logits = features @ head.gate.kernel[...] / np.sqrt(8)
  np.testing.assert_allclose(scales, 3 * jax.nn.softmax(logits, -1), atol=1e-6)
  assert "block_scales" not in models.GeneralPreferenceHead(8, rngs=nnx.Rngs(0))(features)


# --------------------------------------------------------------------------- mixture


def test_mixture_rewards_router_and_loss(built):
  _, params, apply, embed = built["mixture"]
  head = _np(params["head"])
  seqs = _random_seqs(10, [5, 7, 3, 8])
  batch = _right_padded(seqs, 8)
  features = np.asarray(embed(params, batch), np.float64)
  out = apply(params, batch)
  np.testing.assert_allclose(out["rewards"],
                             features @ head["rewards"]["kernel"] + head["rewards"]["bias"],
                             atol=1e-5)
  np.testing.assert_allclose(out["router_logits"],
                             features @ head["router"]["kernel"] + head["router"]["bias"],
                             atol=1e-5)
  assert float(np.max(np.abs(np.diff(out["rewards"], axis=-1)))) > 1e-3  # heads differ

  # Context-aware router: same prompt, same routing.
  prompted = apply(params, _right_padded([seqs[0][:3] + s for s in seqs[1:]], 12,
                                         prompt_lengths=[3, 3, 3]))
  np.testing.assert_allclose(prompted["router_logits"],
                             np.broadcast_to(prompted["router_logits"][:1], (3, 3)), atol=1e-6)

  loss = pluralistic.mixture_bradley_terry_loss(
      out["rewards"][0::2], out["rewards"][1::2], out["router_logits"][0::2],
      reduction="none")
  r, w = np.asarray(out["rewards"], np.float64), np.asarray(out["router_logits"], np.float64)
  weights = np.exp(w[0::2]) / np.exp(w[0::2]).sum(-1, keepdims=True)
  sigmoid = 1 / (1 + np.exp(-(r[0::2] - r[1::2])))
  np.testing.assert_allclose(loss, -np.log(np.sum(weights * sigmoid, -1)), rtol=1e-5)


# --------------------------------------------------------------------------- PAL


def test_ideal_point_user_table_lookup_and_pal_score(built):
  graphdef, params, apply, embed = built["ideal_point"]
  table = np.arange(NUM_USERS * 3, dtype=np.float32).reshape(NUM_USERS, 3) / 4.0
  params = {**params, "head": {**params["head"], "user_table": jnp.asarray(table)}}
  batch = {**_right_padded(_random_seqs(11, [4, 6, 2, 7]), 8),
           "user_ids": jnp.array([2, 0, 3, 2], jnp.int32)}
  out = apply(params, batch)
  np.testing.assert_array_equal(out["user_logits"], table[[2, 0, 3, 2]])
  np.testing.assert_array_equal(out["prototypes"], params["head"]["prototypes"])
  features = np.asarray(embed(params, batch), np.float64)
  np.testing.assert_allclose(
      out["features"], features @ np.asarray(params["head"]["projection"]["kernel"]),
      atol=1e-5)
  # Without user ids: no user logits; unknown ids: NaN rows, never another user's row.
  assert "user_logits" not in apply(params, {k: batch[k] for k in ("tokens", "mask")})
  unknown = apply(params, {**batch, "user_ids": jnp.array([NUM_USERS, -1, 1, 0])})
  assert np.all(np.isnan(unknown["user_logits"][:2]))
  np.testing.assert_array_equal(unknown["user_logits"][2:], table[[1, 0]])

  # The outputs feed PAL-A: a_u = softmax(theta_u) @ P, score by distances.
  point = pluralistic.pal_a_user_point(out["prototypes"], out["user_logits"][0::2])
  score = pluralistic.pal_a_score(out["features"][0::2], out["features"][1::2], point)
  theta = table[[2, 3]].astype(np.float64)
  mix = np.exp(theta) / np.exp(theta).sum(-1, keepdims=True)
  a_u = mix @ np.asarray(out["prototypes"], np.float64)
  f = np.asarray(out["features"], np.float64)
  expected = (np.linalg.norm(f[1::2] - a_u, axis=-1) - np.linalg.norm(f[0::2] - a_u, axis=-1))
  np.testing.assert_allclose(score, expected, atol=1e-5)


# --------------------------------------------------------------------------- VPL


def test_latent_conditioned_reward_is_an_mlp_of_features_and_latent(built):
  _, params, apply, embed = built["latent_conditioned"]
  head = _np(params["head"])
  batch = {**_right_padded(_random_seqs(12, [4, 6, 2, 7]), 8), **_extras()}
  rewards = apply(params, batch)
  e = np.asarray(embed(params, batch), np.float64)
  z = np.asarray(batch["latent"], np.float64)
  # One linear layer on the concatenation [e; z] (its kernel is stored in two blocks).
  kernel = np.concatenate([head["input_features"]["kernel"], head["input_latent"]["kernel"]])
  h = np.maximum(np.concatenate([e, z], -1) @ kernel + head["input_features"]["bias"], 0)
  h = np.maximum(h @ head["hidden"][0]["kernel"] + head["hidden"][0]["bias"], 0)
  expected = (h @ head["output"]["kernel"] + head["output"]["bias"])[:, 0]
  np.testing.assert_allclose(rewards, expected, atol=1e-5)
  other = apply(params, {**batch, "latent": batch["latent"] + 1.0})
  assert float(jnp.max(jnp.abs(other - rewards))) > 1e-4  # the latent matters
  with pytest.raises(KeyError, match="latent"):
    apply(params, {k: batch[k] for k in ("tokens", "mask")})
  with pytest.raises(ValueError, match="latent"):
    apply(params, {**batch, "latent": batch["latent"][:, :2]})


def _encoder_reference(p, chosen, rejected, mask, num_heads, eps=1e-6):
  """PreferenceEncoder in float64 numpy, written from its docstring."""
  valid = mask.astype(bool)
  chosen = np.where(valid[..., None], chosen, 0.0)
  rejected = np.where(valid[..., None], rejected, 0.0)
  h = np.maximum(chosen @ p["pair_chosen"]["kernel"] + p["pair_chosen"]["bias"]
                 + rejected @ p["pair_rejected"]["kernel"], 0)
  pairs = h @ p["pair_output"]["kernel"] + p["pair_output"]["bias"]
  x = pairs / np.sqrt(np.mean(pairs ** 2, -1, keepdims=True) + eps) * p["attention_norm"]["scale"]
  q, k, v = (np.einsum("und,dhk->unhk", x, p[name]) for name in ("query", "key", "value"))
  logits = np.einsum("uqhk,ushk->uhqs", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(valid[:, None, None, :], logits, -np.inf)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  attended = pairs + np.einsum("unhk,hkd->und", np.einsum("uhqs,ushk->uqhk", probs, v), p["out"])
  pooled = (attended * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)
  return (pooled @ p["mean"]["kernel"] + p["mean"]["bias"],
          pooled @ p["log_var"]["kernel"] + p["log_var"]["bias"])


@pytest.fixture(scope="module")
def encoder():
  module = models.PreferenceEncoder(16, 3, hidden_dim=8, num_heads=2, rngs=nnx.Rngs(1))
  graphdef, state = nnx.split(module, nnx.Param)
  encode = jax.jit(lambda state, c, r, m: nnx.merge(graphdef, state)(c, r, m))
  return nnx.to_pure_dict(state), lambda c, r, m: encode(state, c, r, m)


def _pairs(seed, users=3, pairs=5, dim=16):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(users, pairs, dim)), jnp.float32),
          jnp.asarray(rng.normal(size=(users, pairs, dim)), jnp.float32))


def test_preference_encoder_matches_a_numpy_reference(encoder):
  params, encode = encoder
  chosen, rejected = _pairs(13)
  mask = jnp.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 0, 0, 1, 0]], bool)
  mean, log_var = encode(chosen, rejected, mask)
  ref_mean, ref_log_var = _encoder_reference(_np(params), np.asarray(chosen, np.float64),
                                             np.asarray(rejected, np.float64),
                                             np.asarray(mask), num_heads=2)
  np.testing.assert_allclose(mean, ref_mean, atol=1e-5)
  np.testing.assert_allclose(log_var, ref_log_var, atol=1e-5)
  assert mean.shape == log_var.shape == (3, 3) and mean.dtype == jnp.float32


def test_preference_encoder_ignores_masked_pairs_and_their_order(encoder):
  _, encode = encoder
  chosen, rejected = _pairs(14)
  mask = jnp.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], bool)
  mean, log_var = encode(chosen, rejected, mask)
  # Junk (even NaN) in the masked pairs changes nothing, bit for bit.
  junk = np.asarray(chosen).copy()
  junk[~np.asarray(mask)] = np.nan
  np.testing.assert_array_equal(encode(jnp.asarray(junk), rejected, mask)[0], mean)
  # Dropping the masked pairs altogether: the same posterior (up to rounding).
  kept = [0, 1, 3]
  alone = encode(chosen[:1, kept], rejected[:1, kept], mask[:1, kept])
  np.testing.assert_allclose(alone[0][0], mean[0], atol=1e-6)
  np.testing.assert_allclose(alone[1][0], log_var[0], atol=1e-6)
  # Permuting the pairs (with their mask) leaves it unchanged: no positions, mean pool.
  perm = np.array([3, 0, 4, 2, 1])
  permuted = encode(chosen[:, perm], rejected[:, perm], mask[:, perm])
  np.testing.assert_allclose(permuted[0], mean, atol=1e-6)
  np.testing.assert_allclose(permuted[1], log_var, atol=1e-6)
  # ... while the pairs' content matters: swapping chosen and rejected changes it.
  assert float(jnp.max(jnp.abs(encode(rejected, chosen, mask)[0] - mean))) > 1e-4


def test_preference_encoder_user_without_pairs_gets_the_biases(encoder):
  params, encode = encoder
  chosen, rejected = _pairs(15, users=2)
  mask = jnp.array([[0, 0, 0, 0, 0], [1, 1, 0, 0, 0]], bool)
  mean, log_var = encode(chosen, rejected, mask)
  assert np.all(np.isfinite(mean)) and np.all(np.isfinite(log_var))
  np.testing.assert_array_equal(mean[0], params["mean"]["bias"])
  np.testing.assert_array_equal(log_var[0], params["log_var"]["bias"])


def test_vpl_model_encodes_embedded_pairs(built):
  graphdef, params, _, embed = built["latent_conditioned"]
  assert set(params) == {"backbone", "head", "encoder"}
  encode = jax.jit(models.make_encoder_apply(graphdef))
  seqs = _random_seqs(16, [4, 6, 2, 7, 3, 5, 8, 1, 4, 4, 6, 2])
  e = embed(params, _right_padded(seqs, 8))  # [12, D]: 2 users x 3 (chosen, rejected)
  chosen, rejected = e[0::2].reshape(2, 3, 16), e[1::2].reshape(2, 3, 16)
  mean, log_var = encode(params, chosen, rejected, jnp.ones((2, 3), bool))
  assert mean.shape == log_var.shape == (2, 3)
  np.testing.assert_allclose(
      mean, _encoder_reference(_np(params["encoder"]), np.asarray(chosen, np.float64),
                               np.asarray(rejected, np.float64), np.ones((2, 3)), 1)[0],
      atol=1e-5)
  with pytest.raises(ValueError, match="latent_conditioned"):
    models.make_encoder_apply(built["scalar"][0])(built["scalar"][1], chosen, rejected,
                                                  jnp.ones((2, 3), bool))


# --------------------------------------------------------------------------- errors


def test_bad_head_arguments_name_the_argument(built):
  with pytest.raises(ValueError, match="head must be one of"):
    models.init_reward_model(TINY, jax.random.key(0), head="gpm")
  with pytest.raises(ValueError, match="head_config.*num_component"):
    models.init_reward_model(TINY, jax.random.key(0), head="mixture",
                             head_config={"num_component": 3})
  with pytest.raises(ValueError, match="num_outputs"):
    models.init_reward_model(TINY, jax.random.key(0), num_outputs=2, head="mixture")
  with pytest.raises(ValueError, match="head_config\\['encoder'\\]"):
    models.init_reward_model(TINY, jax.random.key(0), head="latent_conditioned",
                             head_config={"latent_dim": 2, "encoder": {"latent_dim": 3}})
  with pytest.raises(ValueError, match="embedding_dim"):
    models.GeneralPreferenceHead(8, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="scale_gate"):
    models.GeneralPreferenceHead(8, 4, scale_gate="sigmoid", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_users"):
    models.IdealPointHead(8, 3, num_users=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="hidden_dim"):
    models.PreferenceEncoder(8, 2, hidden_dim=6, num_heads=4, rngs=nnx.Rngs(0))
  _, params, apply, _ = built["general_preference"]
  batch = _right_padded([[4, 5, 6]], 4)
  with pytest.raises(ValueError, match="prompt_mask"):
    apply(params, {**batch, "prompt_mask": batch["mask"][:, :2]})
  _, params, apply, _ = built["ideal_point"]
  with pytest.raises(TypeError, match="user_ids"):
    apply(params, {**batch, "user_ids": jnp.zeros((1,), jnp.float32)})
  encoder = models.PreferenceEncoder(8, 2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="rejected_embeddings"):
    encoder(jnp.ones((2, 3, 8)), jnp.ones((2, 4, 8)), jnp.ones((2, 3), bool))
  with pytest.raises(TypeError, match="mask"):
    encoder(jnp.ones((2, 3, 8)), jnp.ones((2, 3, 8)), jnp.ones((2, 3)))
