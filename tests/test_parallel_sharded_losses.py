"""The shard_map forms of the batch-coupled losses equal the single-device ones (8 devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmjax import kernels
from rmjax import parallel
from rmjax.losses import contrastive
from rmjax.losses import listwise
from rmjax.losses import normalization

_RNG = np.random.default_rng(0)
TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module", params=[(2, 2, 2), (8, 1, 1)], ids=["d2f2t2", "d8"])
def mesh(request):
  assert len(jax.devices()) == 8
  return parallel.make_mesh(dict(zip(parallel.MESH_AXES, request.param)))


def _value_and_grad(fn, *args):
  """(values, grads of sum(values * fixed random weights)) w.r.t. every arg, jitted.

  `fn` may return a tuple of outputs (several variants checked with one compilation).
  """

  def scalar(*a):
    out = fn(*a)
    rng = np.random.default_rng(1)
    total = sum(jnp.sum(o * jnp.asarray(rng.normal(size=o.shape), o.dtype))
                for o in jax.tree.leaves(out))
    return total, out

  (_, out), grads = jax.jit(jax.value_and_grad(scalar, argnums=tuple(range(len(args))),
                                               has_aux=True))(*args)
  return out, grads


def _assert_same(sharded, single):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), sharded, single)


def _padded(x, mask):
  """x with NaN junk at the masked entries: they must change nothing."""
  return np.where(mask, x, np.nan).astype(np.float32)


_WHITEN_OPTIONS = (dict(ddof=0), dict(ddof=1), dict(shift_only=True))


def test_batch_whiten_equals_single_device(mesh):
  mask = _RNG.random((16, 3)) > 0.3
  x = _padded(_RNG.normal(3.0, 2.0, (16, 3)), mask)
  sharded = _value_and_grad(lambda v: tuple(
      parallel.sharded_batch_whiten(v, mesh=mesh, mask=mask, **kw) for kw in _WHITEN_OPTIONS), x)
  single = _value_and_grad(lambda v: tuple(
      normalization.batch_whiten(v, mask=mask, **kw) for kw in _WHITEN_OPTIONS), x)
  _assert_same(sharded, single)
  assert np.all(np.isfinite(sharded[1][0]))
  # Spec value: masked entries are exactly 0; the valid ones have mean 0 and (ddof=0) std 1.
  out = np.asarray(sharded[0][0])
  assert np.all(out[~mask] == 0) and abs(out[mask].mean()) < 1e-5
  np.testing.assert_allclose(out[mask].std(), 1.0, rtol=1e-5)


def test_batch_whiten_output_stays_sharded_and_needs_whole_shards():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  x = jax.device_put(jnp.arange(16.0), parallel.batch_sharding(mesh))
  out = jax.jit(lambda v: parallel.sharded_batch_whiten(v, mesh=mesh))(x)
  shards = parallel.num_batch_shards(mesh)
  assert {s.data.shape for s in out.addressable_shards} == {(16 // shards,)}
  if shards > 1:
    with pytest.raises(ValueError, match=r"must split evenly over the \d shards.*pad it"):
      parallel.sharded_batch_whiten(jnp.arange(shards + 1.0), mesh=mesh)


def test_group_normalize_equals_single_device(mesh):
  mask = _RNG.random((8, 4)) > 0.25
  mask[0] = [True, False, False, False]  # One valid sample: verl's rule.
  mask[1] = False  # An empty group.
  x = _padded(_RNG.normal(size=(8, 4)), mask)
  sharded = _value_and_grad(lambda v: tuple(
      parallel.sharded_group_normalize(v, mesh=mesh, mask=mask, scale=scale)
      for scale in ("std", "none")), x)
  single = _value_and_grad(lambda v: tuple(
      normalization.group_normalize(v, mask=mask, scale=scale) for scale in ("std", "none")), x)
  _assert_same(sharded, single)
  # The flat [N] layout with G adjacent samples per prompt gives the same numbers.
  flat = _value_and_grad(lambda v: (parallel.sharded_group_normalize(
      v, mesh=mesh, group_size=4, mask=mask.reshape(-1)),), x.reshape(-1))
  np.testing.assert_allclose(flat[0][0], np.asarray(single[0][0]).reshape(-1), **TOL)


def test_flat_groups_must_lie_whole_on_a_device():
  mesh = parallel.make_mesh({"data": 8})
  # 16 rows over 8 devices = 2 rows each: a group of 4 would straddle two devices.
  with pytest.raises(ValueError, match="groups must lie whole on one device.*multiple of 32"):
    parallel.sharded_group_normalize(jnp.zeros(16), mesh=mesh, group_size=4)
  parallel.check_whole_groups(32, 4, 8)
  with pytest.raises(ValueError, match="group_size"):
    parallel.check_whole_groups(32, 0, 8)


def test_normalize_then_sum_equals_single_device():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  mask = _RNG.random((8, 3)) > 0.2
  mask[2] = [True, False, False]
  r = _RNG.normal(size=(8, 3, 2)).astype(np.float32) * np.array([1.0, 5.0], np.float32)
  w = np.array([1.0, 0.5], np.float32)
  sharded = _value_and_grad(lambda v: parallel.sharded_normalize_then_sum(
      v, mesh=mesh, weights=w, mask=mask), r)
  single = _value_and_grad(lambda v: normalization.normalize_then_sum(v, weights=w, mask=mask), r)
  _assert_same(sharded, single)


def test_plackett_luce_equals_single_device(mesh):
  scores = _RNG.normal(size=(16, 4)).astype(np.float32)
  ranking = np.stack([_RNG.permutation(4) for _ in range(16)]).astype(np.int32)
  mask = np.ones((16, 4), bool)
  mask[3, 1:] = False  # One valid item: no ranking, not counted in the mean.
  mask[5, 2] = False
  mask[9] = False  # A padding list.
  weights = _RNG.random(16).astype(np.float32)
  kw = dict(mask=mask, weights=weights)
  sharded = _value_and_grad(lambda s: tuple(parallel.sharded_plackett_luce_loss(
      s, ranking, mesh=mesh, reduction=r, **kw) for r in ("mean", "sum", "none")), scores)
  single = _value_and_grad(lambda s: tuple(listwise.plackett_luce_loss(
      s, ranking, reduction=r, **kw) for r in ("mean", "sum", "none")), scores)
  _assert_same(sharded, single)


def test_plackett_luce_mean_is_global_not_a_mean_of_shard_means():
  mesh = parallel.make_mesh({"data": 8})
  # List 0 ranks (1, 0): softplus(-1) = 0.3133; the other 15 lists are padding. The mean
  # over the one valid list is 0.3133 (a mean of 8 per-device means would give 0.0392).
  scores = np.zeros((16, 2), np.float32)
  scores[0] = [1.0, 0.0]
  mask = np.zeros((16, 2), bool)
  mask[0] = True
  loss = parallel.sharded_plackett_luce_loss(scores, mesh=mesh, mask=mask)
  np.testing.assert_allclose(loss, np.log1p(np.exp(-1.0)), rtol=1e-6)
  with pytest.raises(ValueError, match="permutation"):
    parallel.sharded_plackett_luce_loss(scores, np.zeros((16, 2), np.int32), mesh=mesh)


def test_info_nce_equals_single_device(mesh):
  mask = np.ones(16, bool)
  mask[[2, 11]] = False
  anchors = _padded(_RNG.normal(size=(16, 5)), mask[:, None])
  positives = anchors + 0.3 * _RNG.normal(size=(16, 5)).astype(np.float32)
  kw = dict(mask=mask, temperature=0.1)
  sharded = _value_and_grad(lambda a, p: tuple(parallel.sharded_info_nce_loss(
      a, p, mesh=mesh, reduction=r, **kw) for r in ("mean", "none")), anchors, positives)
  single = _value_and_grad(lambda a, p: tuple(contrastive.info_nce_loss(
      a, p, reduction=r, **kw) for r in ("mean", "none")), anchors, positives)
  _assert_same(sharded, single)
  assert all(np.all(np.isfinite(g)) for g in sharded[1])


def test_info_nce_spec_value_across_devices():
  # B = 8 orthonormal rows, one per device, positives = anchors, tau = 1:
  # loss = log(e + 7) - 1 for every row.
  mesh = parallel.make_mesh({"data": 8})
  loss = jax.jit(lambda x: parallel.sharded_info_nce_loss(x, x, mesh=mesh, temperature=1.0))
  np.testing.assert_allclose(loss(jnp.eye(8)), np.log(np.e + 7) - 1, rtol=1e-6)


def test_context_mesh_explicit_axes_and_bad_arguments():
  # A mesh set with jax.set_mesh, on jax.make_mesh's default (Explicit) axes.
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"))
  x = jnp.arange(8.0)
  with jax.set_mesh(mesh):
    out = jax.jit(parallel.sharded_batch_whiten)(x)
  np.testing.assert_allclose(out, normalization.batch_whiten(x), **TOL)
  with pytest.raises(ValueError, match="mesh: pass a jax.sharding.Mesh or set one"):
    parallel.sharded_batch_whiten(x)
  with pytest.raises(ValueError, match=r"axis_names: \['tensor'\] are not axes"):
    parallel.sharded_batch_whiten(x, mesh=mesh, axis_names=("data", "tensor"))
  with pytest.raises(ValueError, match="ddof"):
    parallel.sharded_batch_whiten(x, mesh=mesh, ddof=-1)
  with pytest.raises(ValueError, match="reduction"):
    parallel.sharded_info_nce_loss(x[:, None], x[:, None], mesh=mesh, reduction="max")


def test_all_pairs_form_is_the_kernels_own():
  # One home: the all-pairs loss has its shard_map form in rmjax.kernels.
  assert parallel.all_pairs_loss_sharded is kernels.all_pairs_loss_sharded
