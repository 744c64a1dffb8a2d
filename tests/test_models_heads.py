"""Tests of the reward heads (rmjax.models.heads_*) and of RewardModel's head registry."""

import math

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec
import numpy as np
import pytest

from rmjax import models
from rmjax.losses import bradley_terry, general_preference, pluralistic

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
    "prompt_conditioned_ideal_point": (
        {"feature_dim": 5, "num_prototypes": 3, "num_users": NUM_USERS},
        {"features": (4, 5), "user_prototype_features": (4, 3, 5), "user_logits": (4, 3),
         "log_temperature": ()}),
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


# --------------------------------------------------------------------------- PAL-B

PAL_B = "prompt_conditioned_ideal_point"
TAU0 = 1.0 / 0.07  # the spec's initial temperature


def _np_softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_cos(a, b):
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _np_gelu(x):
  return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _np_pal_b_head(p, features, prompt_features, num_hidden_layers):
  """PromptConditionedIdealPointHead in float64 numpy, written from its docstring."""
  f, g = features, prompt_features
  for l in range(num_hidden_layers + 1):
    rf, rg = p["response_projection"][l], p["prototype_projections"][l]
    f = f @ rf["kernel"] + rf["bias"]
    g = (np.einsum("bi,kio->bko", g, rg["kernel"]) if g.ndim == 2
         else np.einsum("bki,kio->bko", g, rg["kernel"])) + rg["bias"]
    if l < num_hidden_layers:
      f, g = _np_gelu(f), _np_gelu(g)
  return f, g


def _np_pal_b_score(g, theta, f_c, f_r, log_temperature):
  """s = tau (cos(u, f_c) - cos(u, f_r)), u = sum_k softmax(theta)_k g_k, tau clamped."""
  u = np.einsum("bk,bkf->bf", _np_softmax(theta), np.asarray(g, np.float64))
  tau = min(math.exp(log_temperature), 100.0)
  return tau * (_np_cos(u, f_c) - _np_cos(u, f_r))


def _pal_b_module(num_hidden_layers=0, seed=0, d_model=6, feature_dim=4, num_prototypes=3,
                  num_users=5):
  return models.PromptConditionedIdealPointHead(
      d_model, feature_dim, num_prototypes, num_users=num_users,
      num_hidden_layers=num_hidden_layers, rngs=nnx.Rngs(seed))


def _pal_b_pair_score(head, chosen, rejected, prompt, user_ids, mask=None):
  """The PAL-B pair score from the head's outputs, through rmjax.losses only."""
  out_c = head(chosen, prompt, user_ids)
  out_r = head(rejected, prompt, user_ids)
  u = pluralistic.pal_b_user_vector(out_c["user_prototype_features"], out_c["user_logits"],
                                    mask=mask)
  return pluralistic.pal_b_score(out_c["features"], out_r["features"], u,
                                 log_temperature=out_c["log_temperature"], mask=mask)


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_pal_b_reward_model_reads_the_prompt_and_the_user(built):
  _, params, apply, embed = built[PAL_B]
  table = np.arange(NUM_USERS * 3, dtype=np.float32).reshape(NUM_USERS, 3) / 4.0 - 1.0
  params = {**params, "head": {**params["head"], "user_table": jnp.asarray(table)}}
  head = _np(params["head"])
  prompt = _random_seqs(20, [5])[0]
  responses = _random_seqs(21, [3, 6, 2, 4])
  seqs = [prompt + r for r in responses]
  user_ids = jnp.array([2, 2, 0, 0], jnp.int32)
  batch = {**_right_padded(seqs, 12, prompt_lengths=[5] * 4), "user_ids": user_ids}
  out = apply(params, batch)

  # f(y) reads the last real token; the K maps read the prompt's last token, which is
  # the prompt scored alone (causal backbone: the tokens after it change nothing), so one
  # prompt gives one set of g_k(x).
  features = np.asarray(embed(params, batch), np.float64)
  prompt_alone = np.asarray(embed(params, {"tokens": batch["tokens"],
                                           "mask": batch["prompt_mask"]}), np.float64)
  f, g = _np_pal_b_head(head, features, prompt_alone, 0)
  np.testing.assert_allclose(out["features"], f, atol=1e-5)
  np.testing.assert_allclose(out["user_prototype_features"], g, atol=1e-5)
  np.testing.assert_allclose(out["user_prototype_features"],
                             np.broadcast_to(out["user_prototype_features"][:1], (4, 3, 5)),
                             atol=1e-6)
  np.testing.assert_array_equal(out["user_logits"], table[[2, 2, 0, 0]])
  np.testing.assert_allclose(out["log_temperature"], math.log(TAU0), rtol=1e-7)

  # Without the prompt mask the maps fall back to the last real token of each sequence.
  fallback = apply(params, {k: batch[k] for k in ("tokens", "mask", "user_ids")})
  np.testing.assert_allclose(fallback["user_prototype_features"],
                             _np_pal_b_head(head, features, features, 0)[1], atol=1e-5)
  np.testing.assert_array_equal(fallback["features"], out["features"])

  # Pairs (0 > 1) by user 2 and (2 > 3) by user 0 through pal_b_user_vector/pal_b_score.
  u = pluralistic.pal_b_user_vector(out["user_prototype_features"][0::2],
                                    out["user_logits"][0::2])
  score = pluralistic.pal_b_score(out["features"][0::2], out["features"][1::2], u,
                                  log_temperature=out["log_temperature"])
  expected = _np_pal_b_score(g[0::2], table[[2, 0]], f[0::2], f[1::2], math.log(TAU0))
  np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-5)
  assert np.all(np.abs(score) <= 2 * TAU0 + 1e-4)


def test_pal_b_identical_prototype_maps_make_u_independent_of_the_user():
  head = _pal_b_module(seed=1)
  graphdef, state = nnx.split(head, nnx.Param)
  params = nnx.to_pure_dict(state)
  layer = params["prototype_projections"][0]
  params["prototype_projections"][0] = {
      "kernel": jnp.broadcast_to(layer["kernel"][:1], layer["kernel"].shape),
      "bias": jnp.broadcast_to(_normal(2, (1, 4)), layer["bias"].shape)}
  params["user_table"] = _normal(3, (5, 3)) * 3.0
  nnx.replace_by_pure_dict(state, params)
  head = nnx.merge(graphdef, state)
  prompt = _normal(4, (5, 6))
  outs = [head(jnp.zeros((5, 6)), prompt, jnp.full((5,), user, jnp.int32))
          for user in range(5)]
  vectors = [pluralistic.pal_b_user_vector(o["user_prototype_features"], o["user_logits"])
             for o in outs]
  assert float(jnp.max(jnp.abs(outs[0]["user_logits"] - outs[1]["user_logits"]))) > 0.5
  for v in vectors[1:]:
    np.testing.assert_allclose(v, vectors[0], atol=1e-5)
  # ... and it is the one map: u = g_1(x).
  np.testing.assert_allclose(vectors[0], outs[0]["user_prototype_features"][:, 0], atol=1e-5)
  # With distinct maps the user matters (the control for the statement above).
  fresh = _pal_b_module(seed=1)
  fresh.user_table[...] = params["user_table"]
  a, b = (fresh(jnp.zeros((5, 6)), prompt, jnp.full((5,), user, jnp.int32))
          for user in (0, 1))
  assert float(jnp.max(jnp.abs(
      pluralistic.pal_b_user_vector(a["user_prototype_features"], a["user_logits"])
      - pluralistic.pal_b_user_vector(b["user_prototype_features"], b["user_logits"])))) > 1e-2


@pytest.mark.parametrize("num_hidden_layers", [0, 2])
def test_pal_b_score_is_skew_symmetric_and_matches_numpy(num_hidden_layers):
  head = _pal_b_module(num_hidden_layers, seed=5)
  head.user_table[...] = _normal(6, (5, 3))
  chosen, rejected, prompt = _normal(7, (8, 6)), _normal(8, (8, 6)), _normal(9, (8, 6))
  user_ids = jnp.array([0, 1, 2, 3, 4, 0, 1, 2], jnp.int32)
  score = _pal_b_pair_score(head, chosen, rejected, prompt, user_ids)
  swapped = _pal_b_pair_score(head, rejected, chosen, prompt, user_ids)
  np.testing.assert_allclose(swapped, -score, atol=1e-5)
  np.testing.assert_array_equal(_pal_b_pair_score(head, chosen, chosen, prompt, user_ids), 0.0)
  assert float(jnp.min(jnp.abs(score))) > 1e-3  # not trivially zero

  p = _np(nnx.to_pure_dict(nnx.state(head, nnx.Param)))
  f_c, g = _np_pal_b_head(p, np.asarray(chosen, np.float64), np.asarray(prompt, np.float64),
                          num_hidden_layers)
  f_r, _ = _np_pal_b_head(p, np.asarray(rejected, np.float64),
                          np.asarray(prompt, np.float64), num_hidden_layers)
  expected = _np_pal_b_score(g, p["user_table"][np.asarray(user_ids)], f_c, f_r,
                             math.log(TAU0))
  np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-5)
  graphdef, state = nnx.split(head)
  jitted = jax.jit(lambda state, *a: _pal_b_pair_score(nnx.merge(graphdef, state), *a))
  np.testing.assert_allclose(jitted(state, chosen, rejected, prompt, user_ids), score,
                             atol=1e-5)


@pytest.mark.parametrize("num_hidden_layers", [0, 2])
def test_pal_b_starts_at_tau_one_over_0_07_and_every_parameter_learns(num_hidden_layers):
  head = _pal_b_module(num_hidden_layers, seed=10)
  graphdef, state = nnx.split(head, nnx.Param)
  params = nnx.to_pure_dict(state)
  assert params["log_temperature"].shape == ()
  np.testing.assert_allclose(np.exp(params["log_temperature"]), TAU0, rtol=1e-6)  # 14.2857
  np.testing.assert_array_equal(params["user_table"], 0.0)  # every user at the uniform mix
  chosen, rejected, prompt = _normal(11, (6, 6)), _normal(12, (6, 6)), _normal(13, (6, 6))
  user_ids = jnp.array([0, 1, 2, 0, 1, 2], jnp.int32)

  def loss(params):
    merged = nnx.merge(graphdef, params)
    score = _pal_b_pair_score(merged, chosen, rejected, prompt, user_ids)
    return bradley_terry.bradley_terry_loss(score, jnp.zeros_like(score))

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.isfinite(value)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    name = jax.tree_util.keystr(path)
    assert np.all(np.isfinite(grad)), name
    assert float(jnp.max(jnp.abs(grad))) > 1e-7, name
  # The table learns only the rows of the users in the batch (3 and 4 are absent).
  np.testing.assert_array_equal(grads["user_table"][3:], 0.0)
  assert np.all(np.any(np.asarray(grads["user_table"][:3]) != 0.0, axis=-1))


def test_pal_b_unknown_user_ids_give_nan_logits_that_a_mask_removes():
  head = _pal_b_module(seed=14)
  head.user_table[...] = _normal(15, (5, 3))
  chosen, rejected, prompt = _normal(16, (4, 6)), _normal(17, (4, 6)), _normal(18, (4, 6))
  user_ids = jnp.array([5, -1, 3, 0], jnp.int32)
  out = head(chosen, prompt, user_ids)
  assert np.all(np.isnan(out["user_logits"][:2]))
  np.testing.assert_array_equal(out["user_logits"][2:],
                                np.asarray(head.user_table[...])[[3, 0]])
  known = (user_ids >= 0) & (user_ids < 5)
  score = _pal_b_pair_score(head, chosen, rejected, prompt, user_ids, mask=known)
  np.testing.assert_array_equal(score[:2], 0.0)
  alone = _pal_b_pair_score(head, chosen[2:], rejected[2:], prompt[2:], user_ids[2:])
  np.testing.assert_allclose(score[2:], alone, atol=1e-6)

  graphdef, state = nnx.split(head, nnx.Param)

  def loss(params):
    s = _pal_b_pair_score(nnx.merge(graphdef, params), chosen, rejected, prompt, user_ids,
                          mask=known)
    return bradley_terry.bradley_terry_loss(s, jnp.zeros_like(s), mask=known)

  grads = jax.jit(jax.grad(loss))(nnx.to_pure_dict(state))
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf))


def test_pal_b_param_logical_axes_and_dtypes():
  config = {"feature_dim": 5, "num_prototypes": 3, "num_users": NUM_USERS,
            "num_hidden_layers": 1}
  specs = models.logical_partition_specs(models.abstract_param_state(
      TINY, head=PAL_B, head_config=config))["head"]
  assert specs["response_projection"][0]["kernel"] == PartitionSpec("fsdp", None)
  assert specs["response_projection"][1]["kernel"] == PartitionSpec(None, None)
  assert specs["prototype_projections"][0]["kernel"] == PartitionSpec(None, "fsdp", None)
  assert specs["prototype_projections"][1]["kernel"] == PartitionSpec(None, None, None)
  assert specs["prototype_projections"][0]["bias"] == PartitionSpec(None, None)
  assert specs["user_table"] == PartitionSpec(None, None)
  assert specs["log_temperature"] == PartitionSpec()
  shapes = jax.tree.map(lambda a: a.shape, models.abstract_params(
      TINY, head=PAL_B, head_config=config)["head"])
  assert shapes["prototype_projections"][0]["kernel"] == (3, 16, 5)
  assert shapes["prototype_projections"][1]["kernel"] == (3, 5, 5)
  assert shapes["response_projection"][0]["kernel"] == (16, 5)
  # LeCun normal per map: each g_k's output kernel has std 1 / sqrt(fan_in).
  wide = models.PromptConditionedIdealPointHead(512, 64, 3, num_users=2, rngs=nnx.Rngs(0))
  kernel = np.asarray(wide.prototype_projections[0].kernel[...])
  np.testing.assert_allclose(kernel.std(axis=(1, 2)), 1 / math.sqrt(512), rtol=0.05)
  # bf16 parameters still give float32 outputs.
  half = models.PromptConditionedIdealPointHead(6, 4, num_users=3, param_dtype=jnp.bfloat16,
                                                rngs=nnx.Rngs(0))
  out = half(_normal(19, (2, 6)), None, jnp.array([0, 2], jnp.int32))
  assert all(v.dtype == jnp.float32 for v in out.values())
  assert "user_logits" not in half(_normal(19, (2, 6)))  # no user ids, no user logits
  np.testing.assert_allclose(np.exp(out["log_temperature"]), TAU0, rtol=1e-2)


def test_pal_b_bad_arguments_name_the_argument():
  with pytest.raises(ValueError, match="num_users"):
    models.PromptConditionedIdealPointHead(8, 3, num_users=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_hidden_layers"):
    models.PromptConditionedIdealPointHead(8, 3, num_users=2, num_hidden_layers=-1,
                                           rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="head_config.*num_hidden_layer"):
    models.init_reward_model(TINY, jax.random.key(0), head=PAL_B,
                             head_config={"feature_dim": 4, "num_users": 2,
                                          "num_hidden_layer": 1})
  head = _pal_b_module()
  x = jnp.ones((2, 6))
  with pytest.raises(ValueError, match="prompt_features"):
    head(x, jnp.ones((2, 5)))
  with pytest.raises(ValueError, match="features"):
    head(jnp.ones((2, 5)))
  with pytest.raises(TypeError, match="user_ids"):
    head(x, None, jnp.zeros((2,), jnp.float32))
  with pytest.raises(ValueError, match="user_ids"):
    head(x, None, jnp.zeros((3,), jnp.int32))


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
