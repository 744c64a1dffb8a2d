"""Tests of rmjax.generation: KV-cached decoding against the full forward pass, sampling
rules against exact distributions, EOS handling, keys, and the sharded program."""

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import pytest
from scipy import stats

from rmjax import generation
from rmjax import models
from rmjax import parallel
from rmjax.losses import token_log_probs

# Grouped-query attention, tied head (4 query heads read 2 key/value heads).
GQA = models.TransformerConfig(vocab_size=24, max_len=32, d_model=32, num_layers=2,
                               num_heads=4, num_kv_heads=2)
# Every other option the forward pass honours (Qwen / Gemma-2 style), untied head.
GEMMA_LIKE = models.TransformerConfig(
    vocab_size=24, max_len=32, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
    lm_head="untied", qkv_bias=True, qk_norm=True, norm_plus_one=True, post_norms=True,
    scale_embeddings=True, mlp_activation="gelu_tanh", query_pre_attn_scalar=12.0,
    attn_logit_softcap=5.0, final_logit_softcap=4.0, sliding_window=3,
    sliding_window_layers=(0,), rope_scaling={"rope_type": "linear", "factor": 2.0})

P, T = 6, 8  # prompt and response lengths of the shared runs
PROMPT_LENGTHS = (3, 6, 1, 4)  # real tokens per prompt (left-padded to P)
# Temperature < 1 with both truncations on: the returned log-probs are the untruncated ones.
SAMPLED = generation.GenerationConfig(max_new_tokens=T, temperature=0.7, top_k=6, top_p=0.95,
                                      num_samples=2)
ATOL = 1e-5  # float32, cached vs full forward


def _model(config, seed=0):
  """A Transformer with random parameters drawn on the host (initialising the model's
  own way compiles a large program). Every parameter is random, biases and norm scales
  included, so each option is exercised; the embedding's scale (std 1 / sqrt(V)) keeps the
  next-token distributions spread out."""
  abstract = nnx.eval_shape(lambda: models.Transformer(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract, nnx.Param)
  rng = np.random.default_rng(seed)

  def draw(shape):
    if len(shape) == 1:  # norm scales
      return 1.0 + 0.1 * rng.standard_normal(shape)
    return rng.standard_normal(shape) / np.sqrt(shape[0])  # fan-in along the first axis

  params = jax.tree.map(lambda x: jnp.asarray(draw(x.shape), x.dtype),
                        nnx.to_pure_dict(state))
  return nnx.merge(graphdef, params)


@nnx.jit
def _full_logits(model, tokens, mask):
  return model.logits(tokens, mask)


def _left_padded(lengths, width, seed=0, pad_ids=0):
  """[B, width] prompts with `lengths` real tokens at the right; padding ids `pad_ids`."""
  rng = np.random.default_rng(seed)
  tokens = np.full((len(lengths), width), pad_ids, np.int32)
  mask = np.zeros((len(lengths), width), bool)
  for row, n in enumerate(lengths):
    tokens[row, width - n:] = rng.integers(3, 24, n)
    mask[row, width - n:] = True
  return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.fixture(scope="module")
def gqa_model():
  return _model(GQA)


@pytest.fixture(scope="module")
def gemma_model():
  return _model(GEMMA_LIKE, 1)


@pytest.fixture(scope="module")
def prompts():
  return _left_padded(PROMPT_LENGTHS, P)


@pytest.fixture(scope="module")
def sampled(gqa_model, prompts):
  """The shared sampled run: 4 prompts x 2 samples, no EOS."""
  return generation.generate(gqa_model, *prompts, jax.random.key(7), SAMPLED)


def _full_forward_logits(model, out):
  """[N, T, V] logits of a full forward pass over prompt + response, at the positions that
  predict the response tokens."""
  return _full_logits(model, out.tokens, out.mask)[:, P - 1:-1]


# ------------------------------------------------------------------- the cached path


@pytest.mark.parametrize("name", ["gqa_model", "gemma_model"])
def test_cached_decoding_equals_full_forward(name, request):
  model = request.getfixturevalue(name)
  config = model.config
  graphdef, params = nnx.split(model, nnx.Param)
  tokens, mask = _left_padded((2, 6, 4), P, seed=1, pad_ids=17)  # padding ids never matter
  steps = 7  # > sliding window, so the window slides during decoding
  new = jax.random.randint(jax.random.key(1), (3, steps), 0, config.vocab_size)

  @jax.jit
  def cached_and_full(params, tokens, mask, new):
    model = nnx.merge(graphdef, params)
    logits, cache = model.prefill(tokens, mask, max_new_tokens=steps)
    step = lambda cache, token: model.decode_step(token, cache)[::-1]
    cache, later = jax.lax.scan(step, cache, new[:, :-1].T)
    cached = jnp.concatenate([logits[:, None], later.swapaxes(0, 1)], axis=1)
    full = model.logits(jnp.concatenate([tokens, new], 1),
                        jnp.concatenate([mask, jnp.ones_like(new, bool)], 1))
    return cached, full[:, P - 1:-1], cache

  cached, full, cache = cached_and_full(params, tokens, mask, new)
  assert cache.keys[0].shape == (3, P + steps, config.kv_heads, config.head_dim)
  np.testing.assert_array_equal(cache.positions, mask.sum(-1) + steps - 1)
  np.testing.assert_array_equal(cache.key_mask[:, P:], [[True] * (steps - 1) + [False]] * 3)
  np.testing.assert_allclose(cached, full, atol=ATOL, rtol=0)


def test_log_probs_equal_a_full_forward_at_the_temperature(gqa_model, sampled):
  logits = _full_forward_logits(gqa_model, sampled)
  expected = token_log_probs(logits / SAMPLED.temperature, sampled.response_tokens,
                             mask=sampled.response_mask)
  np.testing.assert_allclose(sampled.log_probs, expected, atol=ATOL, rtol=0)
  # Every sampled token lies in the top-k set of its (full-forward) logits.
  kept = generation.top_k_mask(logits, SAMPLED.top_k)
  assert bool(jnp.all(jnp.take_along_axis(kept, sampled.response_tokens[..., None], -1)))


def test_greedy_is_deterministic_and_the_argmax_of_the_full_forward(gemma_model):
  model = gemma_model
  tokens, mask = _left_padded((5, 2), P, seed=2)
  config = generation.GenerationConfig(max_new_tokens=T, greedy=True)
  first = generation.generate(model, tokens, mask, jax.random.key(0), config)
  second = generation.generate(model, tokens, mask, jax.random.key(1), config)
  np.testing.assert_array_equal(first.tokens, second.tokens)
  assert bool(jnp.all(first.response_mask)) and first.lengths.tolist() == [T, T]
  argmax = jnp.argmax(_full_forward_logits(model, first), axis=-1)
  np.testing.assert_array_equal(first.response_tokens, argmax)
  assert len(np.unique(np.asarray(first.response_tokens))) > 1  # not a constant output


def test_left_padding_changes_nothing_also_under_the_callers_jit(gqa_model, prompts,
                                                                 sampled):
  tokens, mask = prompts
  extra = 3  # three more padding columns, with junk ids
  graphdef, params = nnx.split(gqa_model, nnx.Param)
  jitted = jax.jit(lambda params, tokens, mask, key: generation.generate(
      (graphdef, params), tokens, mask, key, SAMPLED))
  padded = jitted(params, jnp.concatenate([jnp.full((4, extra), 11, jnp.int32), tokens], 1),
                  jnp.concatenate([jnp.zeros((4, extra), bool), mask], 1), jax.random.key(7))
  np.testing.assert_array_equal(padded.response_tokens, sampled.response_tokens)
  np.testing.assert_allclose(padded.log_probs, sampled.log_probs, atol=ATOL, rtol=0)
  np.testing.assert_array_equal(padded.tokens[:, extra:], sampled.tokens)
  assert not bool(jnp.any(padded.mask[:, :extra]))


# ------------------------------------------------------------------- sampling rules


def _truncated_distribution(logits, temperature, top_k, top_p):
  """The exact distribution of top-k then top-p sampling, from the definition: keep the k
  largest, then the most probable tokens until their mass reaches p."""
  z = np.asarray(logits, np.float64) / temperature
  keep = np.ones(z.shape, bool)
  if top_k is not None:
    keep &= z >= np.sort(z)[::-1][top_k - 1]
  probs = np.where(keep, np.exp(z - z.max()), 0.0)
  probs /= probs.sum()
  if top_p is not None:
    nucleus, mass = np.zeros(z.shape, bool), 0.0
    for token in np.argsort(-probs, kind="stable"):
      nucleus[token] = True
      mass += probs[token]
      if mass >= top_p:
        break
    probs = np.where(nucleus, probs, 0.0)
  return probs / probs.sum()


CHI_SQUARE_MIN_P = 1e-3  # a correct sampler fails this with probability 1e-3 per case


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 3, None), (0.8, None, 0.7), (1.3, 5, 0.8), (1.0, None, None)])
def test_top_k_top_p_frequencies_match_the_truncated_distribution(temperature, top_k, top_p):
  logits = jnp.array([2.0, 1.5, 1.2, 1.0, 0.3, 0.0, -0.5, -1.0])
  num = 4000
  keys = jax.random.split(jax.random.key(3), num)
  tokens, log_probs = generation.sample_tokens(
      keys, jnp.broadcast_to(logits, (num, 8)), temperature=temperature, top_k=top_k,
      top_p=top_p)
  expected = _truncated_distribution(logits, temperature, top_k, top_p)
  counts = np.bincount(np.asarray(tokens), minlength=8)
  assert counts[expected == 0].sum() == 0
  support = expected > 0
  result = stats.chisquare(counts[support], expected[support] * num)
  assert result.pvalue > CHI_SQUARE_MIN_P, (counts, expected * num)
  np.testing.assert_allclose(
      log_probs, jax.nn.log_softmax(logits / temperature)[tokens], atol=1e-6)


def test_first_token_frequencies_of_generate_match_the_nucleus(gqa_model):
  tokens, mask = _left_padded((4,), 4, seed=4)
  num, top_p = 3000, 0.8
  config = generation.GenerationConfig(max_new_tokens=1, top_p=top_p, num_samples=num)
  out = generation.generate(gqa_model, tokens, mask, jax.random.key(4), config)
  expected = _truncated_distribution(_full_logits(gqa_model, tokens, mask)[0, -1], 1.0, None,
                                     top_p)
  counts = np.bincount(np.asarray(out.response_tokens[:, 0]), minlength=GQA.vocab_size)
  support = expected > 0
  assert counts[~support].sum() == 0 and support.sum() >= 3
  result = stats.chisquare(counts[support], expected[support] * num)
  assert result.pvalue > CHI_SQUARE_MIN_P, (counts, expected * num)


def test_top_p_mask_by_hand():
  probs = jnp.array([[0.1, 0.5, 0.3, 0.1], [0.97, 0.01, 0.01, 0.01]])
  np.testing.assert_array_equal(generation.top_p_mask(jnp.log(probs), 0.7),
                                [[False, True, True, False], [True, False, False, False]])
  # p = 1 keeps every token; the most probable token is always kept.
  assert bool(jnp.all(generation.top_p_mask(jnp.log(probs), 1.0)))
  assert generation.top_p_mask(jnp.log(probs), 1e-9).sum(-1).tolist() == [1, 1]


# ------------------------------------------------------------------- EOS, samples, keys


def test_each_sequence_stops_at_its_own_eos(gqa_model, prompts, sampled):
  free = np.asarray(sampled.response_tokens)
  eos_ids = (int(free[0, 1]), int(free[5, 4]))  # two EOS ids, seen in the run without EOS
  config = generation.GenerationConfig(max_new_tokens=T, temperature=0.7, top_k=6,
                                       top_p=0.95, num_samples=2, eos_ids=eos_ids, pad_id=1)
  out = generation.generate(gqa_model, *prompts, jax.random.key(7), config)
  is_eos = np.isin(free, eos_ids)
  lengths = np.where(is_eos.any(1), is_eos.argmax(1) + 1, T)
  assert len(set(lengths.tolist())) >= 3, lengths  # rows stop at different steps
  assert (lengths < T).any() and (lengths == T).any()
  np.testing.assert_array_equal(out.lengths, lengths)
  steps = np.arange(T)
  live = steps[None, :] < lengths[:, None]
  np.testing.assert_array_equal(out.response_mask, live)
  # Up to and including its EOS a row is the run without EOS; after it, pad_id and 0.
  np.testing.assert_array_equal(out.response_tokens, np.where(live, free, 1))
  np.testing.assert_allclose(out.log_probs, np.where(live, sampled.log_probs, 0.0),
                             atol=ATOL, rtol=0)
  np.testing.assert_array_equal(out.mask[:, P:], live)
  # Only the row's last real response token is an EOS.
  eos_in_response = np.isin(np.asarray(out.response_tokens), eos_ids) & live
  np.testing.assert_array_equal(eos_in_response.sum(1), is_eos.any(1))


def test_samples_per_prompt_differ_and_keys_reproduce(gqa_model, prompts, sampled):
  assert sampled.tokens.shape == (8, P + T) and sampled.log_probs.shape == (8, T)
  assert sampled.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
  np.testing.assert_array_equal(sampled.tokens[:, :P],
                                jnp.repeat(jnp.where(prompts[1], prompts[0], 0), 2, axis=0))
  pairs = np.asarray(sampled.response_tokens).reshape(4, 2, T)
  assert (pairs[:, 0] != pairs[:, 1]).any(axis=1).all()  # the two samples of each prompt
  assert sampled.lengths.tolist() == [T] * 8  # no EOS ids: no early stop
  # The same key gives the same result; another key does not.
  again = generation.generate(gqa_model, *prompts, jax.random.key(7), SAMPLED)
  for got, want in zip(again, sampled):
    np.testing.assert_array_equal(got, want)
  other = generation.generate(gqa_model, *prompts, jax.random.key(8), SAMPLED)
  assert not np.array_equal(other.response_tokens, sampled.response_tokens)


def test_compiles_once_per_shape_and_config(gqa_model, sampled):
  compiled = generation.decoding._generate_jit._cache_size()
  tokens, mask = _left_padded((1, 2, 5, 6), P, seed=9)
  generation.generate(gqa_model, tokens, mask, jax.random.key(0), SAMPLED)
  assert generation.decoding._generate_jit._cache_size() == compiled


# ------------------------------------------------------------------- mesh


def test_sharded_generate_equals_single_device(gqa_model, prompts, sampled):
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  graphdef, state = nnx.split(gqa_model, nnx.Param)
  specs = models.logical_partition_specs(state, mesh=mesh)
  params = jax.device_put(nnx.to_pure_dict(state), jax.tree.map(
      lambda spec: NamedSharding(mesh, spec), specs,
      is_leaf=lambda x: isinstance(x, PartitionSpec)))
  assert params["layers"][0]["attention"]["query"].sharding.spec == PartitionSpec(
      "fsdp", "tensor", None)
  run = generation.make_sharded_generate(graphdef, specs, mesh, SAMPLED)
  out = run(params, *prompts, jax.random.key(7))
  assert out.tokens.sharding.spec == PartitionSpec(("data", "fsdp"))
  np.testing.assert_array_equal(out.tokens, sampled.tokens)
  np.testing.assert_array_equal(out.mask, sampled.mask)
  np.testing.assert_allclose(out.log_probs, sampled.log_probs, atol=ATOL, rtol=0)
  with pytest.raises(ValueError, match="prompt_tokens.*batch shards"):
    run(params, prompts[0][:2], prompts[1][:2], jax.random.key(7))


def test_cache_shardings_split_rows_and_kv_heads():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  model = nnx.eval_shape(lambda: models.Transformer(GQA, rngs=nnx.Rngs(0)))
  cache = jax.eval_shape(lambda: model.init_cache(8, 10))
  shardings = generation.cache_shardings(mesh, cache)
  assert shardings.keys[0].spec == PartitionSpec(("data", "fsdp"), None, "tensor", None)
  assert shardings.key_mask.spec == PartitionSpec(("data", "fsdp"), None)
  assert shardings.index.spec == PartitionSpec()


# ------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "greedy=True"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(num_samples=0), "num_samples"),
    (dict(eos_ids=(-1,)), "eos_ids"),
])
def test_bad_config_names_the_field(kwargs, match):
  with pytest.raises(ValueError, match=match):
    generation.GenerationConfig(**{"max_new_tokens": 4, **kwargs})


def test_bad_inputs_name_the_argument(gqa_model, prompts):
  tokens, mask = prompts
  key, config = jax.random.key(0), generation.GenerationConfig(max_new_tokens=4)
  assert generation.GenerationConfig(max_new_tokens=4, eos_ids=[]).eos_ids == ()
  with pytest.raises(ValueError, match="prompt_tokens.*max_len"):
    generation.generate(gqa_model, tokens, mask, key,
                        generation.GenerationConfig(max_new_tokens=GQA.max_len - P + 1))
  right_padded = jnp.flip(mask, axis=1)
  with pytest.raises(ValueError, match="prompt_mask must be LEFT-padded"):
    generation.generate(gqa_model, tokens, right_padded, key, config)
  with pytest.raises(ValueError, match="prompt_mask must be LEFT-padded"):
    generation.generate(gqa_model, tokens, mask.at[0].set(False), key, config)  # empty
  with pytest.raises(ValueError, match="prompt_mask"):
    generation.generate(gqa_model, tokens, mask[:, 1:], key, config)
  with pytest.raises(ValueError, match="prompt_tokens"):
    generation.generate(gqa_model, tokens[0], mask[0], key, config)
  with pytest.raises(ValueError, match="eos_ids"):
    generation.generate(gqa_model, tokens, mask, key,
                        generation.GenerationConfig(max_new_tokens=4, eos_ids=(GQA.vocab_size,)))
  headless = nnx.eval_shape(lambda: models.Transformer(
      models.TransformerConfig(vocab_size=24, max_len=32, d_model=32, num_heads=4,
                               lm_head="none"), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="no LM head"):
    generation.generate(headless, tokens, mask, key, config)
  with pytest.raises(ValueError, match="LM head"):
    headless.prefill(tokens, mask, max_new_tokens=2)
  with pytest.raises(TypeError, match="model"):
    generation.generate("not a model", tokens, mask, key, config)
