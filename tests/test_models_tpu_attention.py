"""`rmjax.models.tpu_attention.splash_attention`: the Pallas TPU splash kernel (interpret mode
on CPU) against a plain attention, alone and inside shard_map on the simulated 8-device mesh,
and its errors. The model-level comparison with the reference path (right / left padding,
GQA, window, soft-cap, causal order) is `test_fast_attention_matches_the_reference` in
test_models_transformer.py; the Mosaic compile for a v5e topology is in test_dry_run.py."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax.models import tpu_attention

pytestmark = pytest.mark.filterwarnings("ignore:attention='tpu_splash'.*interpret mode")


def _plain_attention(q, k, v, mask, scale, window=None):
  """softmax over the real keys s <= t (and t - s < window), float32; GQA by repeating."""
  groups = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  logits = jnp.einsum("bqhk,bshk->bhqs", q, k) * scale
  index = jnp.arange(q.shape[1])
  allowed = index[:, None] >= index[None, :]
  if window is not None:
    allowed &= index[:, None] - index[None, :] < window
  logits = jnp.where(allowed[None, None] & mask[:, None, None, :], logits, -1e30)
  return jnp.einsum("bhqs,bshk->bqhk", jax.nn.softmax(logits, axis=-1), v)


def _inputs(batch=4, length=20, heads=4, kv_heads=2, head_dim=8):
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (batch, length, heads, head_dim))
  k = jax.random.normal(keys[1], (batch, length, kv_heads, head_dim))
  v = jax.random.normal(keys[2], (batch, length, kv_heads, head_dim))
  index = np.arange(length)
  mask = np.stack([index < 13,                       # right padding
                   index >= 6,                       # left padding
                   (index < 17) & (index != 4),      # a hole
                   np.ones(length, bool)])[:batch]
  return q, k, v, jnp.asarray(mask)


def test_splash_attention_in_shard_map_matches_plain_attention():
  """Values and gradients (of a loss reading real queries only) equal plain attention inside
  shard_map on a data x fsdp x tensor = 2 x 2 x 2 mesh: the batch over 4 shards, the 2
  key/value heads (GQA, 4 query heads) over 'tensor', a sliding window of 5, right / left
  padding and a hole; L = 20 is padded to 128 inside. float32: value rtol 1e-5 (atol 1e-4
  on a sum of ~1000 terms), gradients rtol / atol 1e-5. The model-level test covers the
  no-mesh call."""
  q, k, v, mask = _inputs()
  scale, window = 0.3, 5
  weights = mask[:, :, None, None] * jnp.cos(jnp.arange(8.0))  # real queries only

  def loss(attention):
    return jax.jit(jax.value_and_grad(
        lambda q, k, v: jnp.sum(attention(q, k, v) * weights), argnums=(0, 1, 2)))

  want_value, want_grads = loss(lambda q, k, v: _plain_attention(q, k, v, mask, scale, window))(
      q, k, v)
  splash = lambda q, k, v: tpu_attention.splash_attention(q, k, v, mask, scale=scale,
                                                          sliding_window=window)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  with jax.set_mesh(mesh):
    value, grads = loss(splash)(q, k, v)
    out = jax.jit(splash)(q, k, v)
  np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-4)
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
  assert out.shape == q.shape and bool(jnp.all(jnp.isfinite(out)))  # padding queries too
  # The window and the padding change the result: the comparison is not vacuous.
  assert not np.allclose(value, loss(lambda q, k, v: _plain_attention(
      q, k, v, jnp.ones_like(mask), scale))(q, k, v)[0], rtol=1e-3)


def test_splash_attention_errors_name_the_problem():
  q, k, v, mask = _inputs()
  with pytest.raises(ValueError, match=r"k and v must be \[B, L, KV, K\]"):
    tpu_attention.splash_attention(q, k[:, :, :, :4], v[:, :, :, :4], mask, scale=1.0)
  with pytest.raises(ValueError, match="KV dividing H"):
    tpu_attention.splash_attention(q[:, :, :3], k, v, mask, scale=1.0)
  with pytest.raises(ValueError, match=r"mask must be \[B, L\]"):
    tpu_attention.splash_attention(q, k, v, mask[:, :5], scale=1.0)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  with pytest.raises(ValueError, match=r"batch \(3 sequences\) must split evenly over the "
                                       r"mesh axes \('data', 'fsdp'\) \(4 shards\)"):
    tpu_attention.splash_attention(q[:3], k[:3], v[:3], mask[:3], scale=1.0, mesh=mesh)


def test_interpret_mode_off_tpu_warns_once():
  q, k, v, mask = _inputs(batch=1, length=4)
  tpu_attention._warn_interpreted.cache_clear()  # pylint: disable=protected-access
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):  # traced only
      jax.eval_shape(lambda: tpu_attention.splash_attention(q, k, v, mask, scale=1.0))
  messages = [str(w.message) for w in caught if "interpret mode" in str(w.message)]
  assert len(messages) == 1 and "'cpu'" in messages[0]
