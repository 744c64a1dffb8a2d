"""Tests for rmjax.kernels.all_pairs: every implementation against the reference.

The reference (plain jnp, [N, N]) is itself checked against an explicit float64
loop; the chunked XLA path, the Pallas TPU kernel (TPU interpret mode) and the
Pallas GPU kernel (interpret=True) must equal it in value and gradient on random
cases with ties, masked items, fully masked groups, single-item groups and N
not a multiple of the block size.
"""

import functools
import pathlib
import subprocess
import sys

from absl.testing import parameterized
import chex
import jax
from jax.experimental.pallas import tpu as pltpu
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax import kernels
from rmjax.kernels import all_pairs_loss
from rmjax.kernels import all_pairs_loss_sharded
from rmjax.kernels.all_pairs import chunked
from rmjax.kernels.all_pairs import dispatch
from rmjax.kernels.all_pairs import pallas_tpu
from rmjax.kernels.all_pairs import rules
from rmjax.losses import all_pairs_bradley_terry_loss

TPU_INTERPRET = pltpu.InterpretParams()
# Every weighting, with and without a margin, and both margin rules.
RULES = [("uniform", None), ("uniform", "constant"), ("label_gap", None),
         ("label_gap", "label_gap"), ("lipo_lambda", None),
         ("lipo_lambda", "constant")]


def _softplus(x):
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def _np_loss_and_grad(s, y, g, mask, weighting="uniform", margin=0.0,
                      margin_rule="constant", reduction="mean"):
  """Explicit float64 loops over the pairs: value and d value / d s."""
  s = np.asarray(s, np.float64)
  y = np.asarray(y, np.float64)
  n = len(s)
  g = np.zeros(n, int) if g is None else np.asarray(g)
  mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
  tau = np.ones(n)
  for i in range(n):
    for j in range(n):
      if j != i and mask[i] and mask[j] and g[i] == g[j]:
        if s[j] > s[i] or (s[j] == s[i] and j < i):
          tau[i] += 1
  gain, inv_d = 2.0 ** y - 1, 1 / np.log2(1 + tau)
  total, grad, count = 0.0, np.zeros(n), 0
  for i in range(n):
    for j in range(n):
      if not (mask[i] and mask[j] and g[i] == g[j] and y[i] > y[j]):
        continue
      count += 1
      w = {"uniform": 1.0, "label_gap": y[i] - y[j],
           "lipo_lambda": abs(gain[i] - gain[j]) * abs(inv_d[i] - inv_d[j])
          }[weighting]
      m = margin * (1.0 if margin_rule == "constant" else y[i] - y[j])
      z = s[i] - s[j] - m
      total += w * _softplus(-z)
      slope = w / (1 + np.exp(z))
      grad[i] -= slope
      grad[j] += slope
  norm = 1.0 if reduction == "sum" else max(count, 1)
  return total / norm, grad / norm, count


def _case(seed, n, num_groups=5, sorted_groups=True):
  """Random scores, tied labels, groups with a singleton and a masked group."""
  rng = np.random.default_rng(seed)
  s = (2 * rng.normal(size=n)).astype(np.float32)
  s[: n // 4] = np.round(s[: n // 4])  # Some exact ties in score (LiPO ranks).
  y = rng.integers(0, 4, n).astype(np.float32)
  g = rng.integers(0, num_groups, n).astype(np.int32)
  if sorted_groups:
    g = np.sort(g)
  mask = rng.random(n) > 0.2
  if n >= 4:
    g[-1] = num_groups + 7  # A single-item group.
    g[-3:-1] = num_groups + 3  # A fully masked group.
    mask[-3:-1] = False
    mask[-1] = True
  return s, y, g, mask


@functools.partial(jax.jit, static_argnames=(
    "implementation", "weighting", "margin", "margin_rule", "reduction",
    "block_size", "interpret"))
def _value_and_grad(s, y, g, mask, *, implementation, weighting="uniform",
                    margin=0.0, margin_rule="constant", reduction="mean",
                    block_size=None, interpret=None):
  return jax.value_and_grad(lambda s: all_pairs_loss(
      s, y, group_ids=g, mask=mask, weighting=weighting, margin=margin,
      margin_rule=margin_rule, reduction=reduction,
      implementation=implementation, block_size=block_size,
      interpret=interpret))(s)


@functools.partial(jax.jit, static_argnames=(
    "implementation", "weighting", "margin", "margin_rule", "reduction",
    "block_size", "interpret"))
def _with_reference(s, y, g, mask, *, implementation, block_size=None,
                    interpret=None, **kwargs):
  """(reference, implementation) value and gradient, in one compilation."""
  ref = _value_and_grad(s, y, g, mask, implementation="reference", **kwargs)
  out = _value_and_grad(s, y, g, mask, implementation=implementation,
                        block_size=block_size, interpret=interpret, **kwargs)
  return ref, out


def _assert_same(out, ref, rtol=2e-5, atol=2e-6):
  np.testing.assert_allclose(out[0], ref[0], rtol=rtol, atol=atol)
  np.testing.assert_allclose(out[1], ref[1], rtol=rtol, atol=atol)


class RulesTest(parameterized.TestCase):

  def test_num_preferred_pairs_counts_ties_groups_and_mask(self):
    for seed, n in ((1, 2), (3, 97)):
      s, y, g, mask = _case(seed, n)
      for groups in (None, g):
        expected = _np_loss_and_grad(s, y, groups, mask)[2]
        count = jax.jit(rules.num_preferred_pairs)(
            jnp.asarray(np.where(mask, y, 0)),
            None if groups is None else jnp.asarray(groups),
            jnp.asarray(mask))
        self.assertEqual(float(count), expected)

  def test_num_preferred_pairs_treats_signed_zeros_as_equal(self):
    count = rules.num_preferred_pairs(jnp.array([0.0, -0.0, 0.0, 1.0]), None,
                                      jnp.ones(4, bool))
    self.assertEqual(float(count), 3.0)  # Only (3, j) for j = 0, 1, 2.

  def test_lipo_factors_are_ranks_within_groups(self):
    # Group 0: scores (1, 3, 3) -> tau (3, 1, 2) (tie broken by position);
    # group 1: (5,) and a masked item that ranks nobody down.
    s = jnp.array([1.0, 3.0, 3.0, 5.0, 9.0])
    valid = jnp.array([True, True, True, True, False])
    gain, inv_d = rules.lipo_lambda_factors(
        s, jnp.array([2.0, 1.0, 0.0, 1.0, 0.0]), jnp.array([0, 0, 0, 1, 1]),
        valid)
    np.testing.assert_allclose(gain, [3, 1, 0, 1, 0])
    np.testing.assert_allclose(inv_d[:4], 1 / np.log2(1 + np.array(
        [3.0, 1.0, 2.0, 1.0])), rtol=1e-6)

  def test_pair_loss_and_slope_spec_values(self):
    a = rules.PairItems(jnp.array(0.0), jnp.array(3.0), jnp.array(True))
    b = rules.PairItems(jnp.array(0.0), jnp.array(0.0), jnp.array(True))
    expect = {  # HelpSteer2-Preference sanity values, gap 3 and Delta = 0.
        rules.PairRule(): np.log(2.0),
        rules.PairRule("label_gap"): 3 * np.log(2.0),  # Scaled: 2.0794.
        rules.PairRule(margin_rule="constant"): _softplus(3.0),  # 3.0486.
        rules.PairRule(margin_rule="label_gap"): _softplus(3.0),  # m * gap.
    }
    for rule, value in expect.items():
      margin = 3.0 if rule.margin_rule == "constant" else 1.0

      @jax.jit
      def run(s, rule=rule, margin=margin):
        loss, slope = rules.pair_loss_and_slope(
            rule, a._replace(scores=s), b, margin, with_slope=True)
        # slope = -d loss / d s_winner, by autodiff.
        auto = jax.grad(lambda s: rules.pair_loss_and_slope(
            rule, a._replace(scores=s), b, margin)[0])(s)
        return loss, slope, auto

      loss, slope, auto = run(jnp.array(0.0))
      np.testing.assert_allclose(loss, value, rtol=1e-6)
      np.testing.assert_allclose(slope, -auto, rtol=1e-6)
    self.assertEqual(float(rules.pair_loss_and_slope(
        rules.PairRule(), b, a)[0]), 0.0)  # Loser first: not a pair.

  def test_pair_loss_is_exact_at_1e4(self):
    a = rules.PairItems(jnp.array([1e4, -1e4]), jnp.array([1.0, 1.0]),
                        jnp.array([True, True]))
    b = rules.PairItems(jnp.array([-1e4, 1e4]), jnp.array([0.0, 0.0]),
                        jnp.array([True, True]))
    loss, slope = rules.pair_loss_and_slope(rules.PairRule(), a, b,
                                            with_slope=True)
    np.testing.assert_array_equal(loss, [0.0, 2e4])
    np.testing.assert_array_equal(slope, [0.0, 1.0])

  def test_orient_pairs_puts_the_higher_label_first(self):
    rows = rules.PairItems(jnp.array([[1.0], [2.0]]), jnp.array([[0.0], [5.0]]),
                           jnp.ones((2, 1), bool))
    cols = rules.PairItems(jnp.array([[3.0, 4.0]]), jnp.array([[1.0, 5.0]]),
                           jnp.ones((1, 2), bool))
    winner, loser, col_wins = rules.orient_pairs(rows, cols)
    np.testing.assert_array_equal(col_wins, [[True, True], [False, False]])
    np.testing.assert_array_equal(winner.scores, [[3.0, 4.0], [2.0, 2.0]])
    np.testing.assert_array_equal(loser.scores, [[1.0, 1.0], [3.0, 4.0]])

  def test_bad_rule_names_raise(self):
    with pytest.raises(ValueError, match="`weighting` must be one of"):
      rules.check_rule(rules.PairRule("lambda"))
    with pytest.raises(ValueError, match="`margin_rule` must be one of"):
      rules.check_rule(rules.PairRule("uniform", "gap"))


class ChunkedTest(chex.TestCase):

  @parameterized.parameters(*RULES)
  def test_reference_matches_loops_and_chunked_matches_reference(
      self, weighting, margin_rule):
    # N = 75 in blocks of 16: 5 blocks, triangular tiles, a padded last block.
    s, y, g, mask = _case(11, 75)
    margin = 0.0 if margin_rule is None else 0.5
    rule = margin_rule or "constant"
    reduction = "sum" if weighting == "label_gap" else "mean"
    ref, out = _with_reference(
        s, y, g, mask, implementation="chunked", block_size=16,
        weighting=weighting, margin=margin, margin_rule=rule,
        reduction=reduction)
    value, grad, count = _np_loss_and_grad(s, y, g, mask, weighting, margin,
                                           rule, reduction)
    self.assertGreater(count, 100)
    _assert_same(ref, (value, grad), rtol=1e-5, atol=1e-6)
    _assert_same(out, ref)

  def test_mask_without_groups_and_no_pairs(self):
    s, y, _, mask = _case(33, 33)
    ref, out = _with_reference(s, y, None, mask, implementation="chunked",
                               block_size=8, reduction="sum")
    _assert_same(out, ref)
    # No pair at all (one label, every item masked, a single item): 0 and a
    # zero gradient.
    for y, mask in ((np.ones(2), np.ones(2, bool)),
                    (np.arange(2.0), np.zeros(2, bool)),
                    (np.arange(2.0), np.array([True, False]))):
      value, grad = _value_and_grad(np.arange(2.0), y, None, mask,
                                    implementation="chunked", block_size=8)
      self.assertEqual(float(value), 0.0)
      np.testing.assert_array_equal(grad, 0.0)

  def test_gradient_at_equal_scores(self):
    # All scores equal (LiPO at initialisation, s = 0): each pair's slope is
    # sigmoid(0) = 1/2, in the reference's autodiff as in the fused pass.
    # Pairs (0 > 1), (0 > 2), (1 > 2): d/ds = (-1, 0, 1).
    for implementation in ("reference", "chunked"):
      value, grad = _value_and_grad(jnp.zeros(3), jnp.array([2.0, 1.0, 0.0]),
                                    None, None, implementation=implementation,
                                    reduction="sum")
      np.testing.assert_allclose(value, 3 * np.log(2.0), rtol=1e-6)
      np.testing.assert_allclose(grad, [-1.0, 0.0, 1.0], atol=1e-7)

  def test_unsorted_groups(self):
    s, y, g, mask = _case(5, 64, num_groups=3, sorted_groups=False)
    ref, out = _with_reference(s, y, g, mask, implementation="chunked",
                               weighting="lipo_lambda", block_size=24)
    _assert_same(out, ref)

  def test_rows_and_columns_apart(self):
    # The sharded path: 20 row items against all 50 column items, directed.
    s, y, g, mask = _case(3, 50)

    @jax.jit
    def run(s, y, g, mask):
      items, _ = rules.sanitize_items(s, y, g, mask, "uniform")
      rows = rules.PairItems(*(None if f is None else f[:20] for f in items))
      fused = chunked.pair_sums(rules.PairRule(), rows, items,
                                same_items=False, with_grad=True,
                                block_size=8)

      def dense(row_scores, col_scores):
        loss, _ = rules.pair_loss_and_slope(
            rules.PairRule(), rules.as_rows(rows._replace(scores=row_scores)),
            rules.as_cols(items._replace(scores=col_scores)))
        return jnp.sum(loss)

      return fused, jax.value_and_grad(dense, argnums=(0, 1))(
          rows.scores, items.scores)

    (total, grad_rows, grad_cols), (value, (ref_rows, ref_cols)) = run(
        s, y, g, mask)
    self.assertGreater(float(value), 0.0)
    np.testing.assert_allclose(total, value, rtol=1e-5)
    np.testing.assert_allclose(grad_rows, ref_rows, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_cols, ref_cols, rtol=1e-5, atol=1e-7)

  def test_check_grads_forward_and_reverse(self):
    s, y, g, mask = _case(2, 21)
    s = np.linspace(-2, 2, 21).astype(np.float32)[np.argsort(s)]
    fn = jax.jit(lambda s: all_pairs_loss(
        s, y, group_ids=g, mask=mask, weighting="label_gap", margin=0.3,
        implementation="chunked", block_size=8))
    jtu.check_grads(fn, (s,), order=1, modes=("fwd", "rev"), eps=1e-2,
                    atol=1e-3, rtol=1e-3)

  def test_padding_with_junk_changes_nothing(self):
    s, y, g, mask = _case(4, 30)
    pad_s = np.concatenate([s, [np.inf, np.nan, -1e30]]).astype(np.float32)
    pad_y = np.concatenate([y, [np.nan, 1e6, -1.0]]).astype(np.float32)
    pad_g = np.concatenate([g, g[:3]])
    pad_m = np.concatenate([mask, [False] * 3])
    fn = jax.jit(jax.value_and_grad(lambda s, y, g, m: all_pairs_loss(
        s, y, group_ids=g, mask=m, weighting="lipo_lambda", margin=0.2,
        implementation="chunked", block_size=8)))
    value, grad = fn(s, y, g, mask)
    value_pad, grad_pad = fn(pad_s, pad_y, pad_g, pad_m)
    np.testing.assert_allclose(value_pad, value, rtol=1e-6)
    np.testing.assert_allclose(grad_pad[:30], grad, rtol=1e-6)
    np.testing.assert_array_equal(grad_pad[30:], 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_large_scores(self):
    s = jnp.array([1e4, -1e4, 0.0])
    y = jnp.array([0, 2, 1])  # All three pairs wrong by 2e4, 1e4, 1e4.
    value, grad = self.variant(jax.value_and_grad(lambda s: all_pairs_loss(
        s, y, reduction="sum", implementation="chunked")))(s)
    np.testing.assert_allclose(value, 4e4, rtol=1e-6)
    np.testing.assert_allclose(grad, [2.0, -2.0, 0.0], atol=1e-6)

  def test_bfloat16_scores(self):
    s, y, g, mask = _case(8, 40)
    ref, (value16, grad16) = _with_reference(
        jnp.asarray(s, jnp.bfloat16), y, g, mask, implementation="chunked",
        block_size=16)
    self.assertEqual(value16.dtype, jnp.float32)
    self.assertEqual(grad16.dtype, jnp.bfloat16)
    # Same bfloat16 inputs: the same float32 value; the gradient is rounded to
    # bfloat16 (8 bits of mantissa).
    np.testing.assert_allclose(value16, ref[0], rtol=1e-5)
    np.testing.assert_allclose(grad16.astype(jnp.float32),
                               ref[1].astype(jnp.float32), rtol=1e-2,
                               atol=1e-4)

  def test_vmap_over_lists(self):
    s = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    y = np.tile(np.arange(10.0), (3, 1))
    fn = jax.vmap(lambda s, y: all_pairs_loss(s, y, implementation="chunked",
                                              block_size=8))
    ref = jax.vmap(lambda s, y: all_pairs_loss(s, y,
                                               implementation="reference"))
    np.testing.assert_allclose(jax.jit(fn)(s, y), jax.jit(ref)(s, y),
                               rtol=1e-5)


class PallasTest(parameterized.TestCase):
  """Interpret-mode runs of the Pallas kernels (slow: small N, few cases)."""

  @parameterized.named_parameters(
      ("uniform_constant_margin", "uniform", "constant"),
      ("lipo_lambda_label_gap_margin", "lipo_lambda", "label_gap"))
  def test_tpu_kernel_equals_reference(self, weighting, margin_rule):
    # N = 200: 2 x 2 tiles of 128 (rows padded to 256), groups sorted so that
    # the off-diagonal tiles of the last groups are skipped.
    s, y, g, mask = _case(21, 200, num_groups=12)
    ref, out = _with_reference(
        s, y, g, mask, implementation="pallas_tpu", block_size=128,
        interpret=TPU_INTERPRET, weighting=weighting,
        margin=0.0 if margin_rule is None else 0.4,
        margin_rule=margin_rule or "constant")
    _assert_same(out, ref)

  def test_tpu_kernel_under_force_interpret_mode(self):
    s, y, g, mask = _case(22, 37)
    with pltpu.force_tpu_interpret_mode():
      ref, out = _with_reference(s, y, g, mask, implementation="pallas_tpu",
                                 margin=0.25)
    _assert_same(out, ref)

  @parameterized.named_parameters(
      ("label_gap_constant_margin", "label_gap", "constant"),
      ("lipo_lambda_label_gap_margin", "lipo_lambda", "label_gap"))
  def test_gpu_kernel_equals_reference(self, weighting, margin_rule):
    # Loop blocks of 32, program blocks of 16: N = 90 pads to 96.
    s, y, g, mask = _case(23, 90, num_groups=6)
    ref, out = _with_reference(
        s, y, g, mask, implementation="pallas_gpu", block_size=32,
        interpret=True, weighting=weighting, margin=0.4,
        margin_rule=margin_rule)
    _assert_same(out, ref)

  def test_check_grads_reverse(self):
    s = np.linspace(-2, 2, 6).astype(np.float32)[::-1].copy()
    y = np.array([0, 1, 2, 0, 3, 3], np.float32)
    for implementation, interpret in (("pallas_tpu", TPU_INTERPRET),
                                      ("pallas_gpu", True)):
      fn = jax.jit(lambda s, i=implementation, p=interpret: all_pairs_loss(
          s, y, implementation=i, interpret=p))
      jtu.check_grads(fn, (s,), order=1, modes=("rev",), eps=1e-2,
                      atol=1e-3, rtol=1e-3)

  def test_tpu_block_shapes_are_legal(self):
    for num_rows, num_cols, block_size in ((1, 1, None), (200, 200, 128),
                                           (1000, 3000, None),
                                           (4096, 65536, 256)):
      for name, (block, array) in pallas_tpu.block_shapes(
          num_rows, num_cols, block_size).items():
        for axis, tile in ((-2, 8), (-1, 128)):
          self.assertTrue(block[axis] % tile == 0
                          or block[axis] == array[axis], (name, block, array))
        for b, a in zip(block, array):
          self.assertEqual(a % b, 0, (name, block, array))

  def test_kernels_lower_for_their_platforms(self):
    # Pallas' own TPU (Mosaic) and GPU (Triton) lowerings run on this CPU
    # machine: they reject illegal block shapes and unsupported operations.
    s, y, g, mask = _case(24, 300)
    for implementation, platform, marker in (
        ("pallas_tpu", "tpu", "tpu_custom_call"),
        ("pallas_gpu", "cuda", "triton")):
      fn = jax.jit(jax.value_and_grad(lambda s, i=implementation: (
          all_pairs_loss(s, y, group_ids=g, mask=mask, weighting="lipo_lambda",
                         margin=0.5, implementation=i))))
      text = fn.trace(s).lower(lowering_platforms=(platform,)).as_text()
      self.assertIn(marker, text)


class DispatchTest(parameterized.TestCase):

  def test_candidates_per_backend(self):
    self.assertEqual(dispatch.candidates("auto", "cpu"),
                     ("chunked", "reference"))
    self.assertEqual(dispatch.candidates("auto", "gpu"),
                     ("pallas_gpu", "chunked", "reference"))
    self.assertEqual(dispatch.candidates("pallas_tpu", "cpu"), ("pallas_tpu",))
    # Up to 128 items (one tile) "auto" takes the reference on any backend.
    self.assertEqual(dispatch.candidates("auto", "tpu", num_items=128),
                     ("reference",))
    self.assertEqual(dispatch.candidates("auto", "cpu", num_items=129),
                     ("chunked", "reference"))
    # GPU: one group of up to 16384 scores -> the [N, N] reference (faster than Triton
    # there, measured); grouped, or more, -> the kernel.
    self.assertEqual(dispatch.candidates("auto", "gpu", num_items=16384, grouped=False),
                     ("reference",))
    for num_items, grouped in ((16385, False), (16384, True), (129, True)):
      self.assertEqual(dispatch.candidates("auto", "gpu", num_items=num_items,
                                           grouped=grouped),
                       ("pallas_gpu", "chunked", "reference"))

  def test_auto_uses_chunked_on_cpu_and_reference_for_o_n2_cases(self):
    big_s, big_y = jnp.arange(130.0), jnp.arange(130) % 3
    jaxpr = str(jax.make_jaxpr(lambda s: all_pairs_loss(s, big_y))(big_s))
    self.assertIn("cond[", jaxpr)  # The tile loop's skip / compute switch.
    self.assertIn("custom_jvp_call", jaxpr)
    s, y = big_s[:6], big_y[:6]
    jaxpr = str(jax.make_jaxpr(lambda s: all_pairs_loss(s, y))(s))
    self.assertNotIn("custom_jvp_call", jaxpr)  # Small N: the reference.
    none = all_pairs_loss(s, y, reduction="none")
    self.assertEqual(none.shape, (6, 6))
    ref = all_pairs_loss(s, y, implementation="reference", reduction="none")
    np.testing.assert_allclose(none, ref)
    pw = jnp.full((6, 6), 2.0)
    np.testing.assert_allclose(
        all_pairs_loss(s, y, pair_weights=pw),
        2 * all_pairs_loss(s, y, implementation="reference"), rtol=1e-6)

  def test_named_implementation_raises_not_implemented(self):
    s, y = jnp.arange(4.0), jnp.array([0, 1, 2, 3])
    with pytest.raises(NotImplementedError, match="reduction='none'"):
      all_pairs_loss(s, y, reduction="none", implementation="chunked")
    with pytest.raises(NotImplementedError, match="pair_weights"):
      all_pairs_loss(s, y, pair_weights=jnp.ones((4, 4)),
                     implementation="pallas_gpu")
    with pytest.raises(NotImplementedError, match="divisible by 128"):
      all_pairs_loss(s, y, implementation="pallas_tpu", block_size=100)

  def test_auto_falls_back_on_not_implemented(self):
    # On a "tpu" backend, a block size the TPU kernel refuses falls back to
    # the chunked loop (traced only: nothing is compiled for TPU here).
    s, y = jnp.arange(130.0), jnp.arange(130) % 3
    original = dispatch.candidates
    try:
      dispatch.candidates = lambda impl, backend=None, num_items=None, grouped=True: (
          original(impl, "tpu", num_items))
      jaxpr = str(jax.make_jaxpr(lambda s: all_pairs_loss(
          s, y, block_size=96))(s))
      self.assertNotIn("pallas_call", jaxpr)
      self.assertIn("cond[", jaxpr)
      jaxpr = str(jax.make_jaxpr(lambda s: all_pairs_loss(
          s, y, block_size=128))(s))
      self.assertIn("pallas_call", jaxpr)
    finally:
      dispatch.candidates = original

  def test_bad_arguments_name_the_argument(self):
    s, y = jnp.zeros(3), jnp.array([1, 0, 0])
    for kwargs, match in (
        (dict(weighting="lambda"), "`weighting` must be one of"),
        (dict(margin_rule="gap"), "`margin_rule` must be one of"),
        (dict(reduction="avg"), "`reduction` must be one of"),
        (dict(implementation="triton"), "`implementation` must be one of"),
        (dict(block_size=0), "`block_size`"),
        (dict(margin=jnp.ones(2)), r"`margin` must be a real scalar"),
        (dict(group_ids=jnp.zeros(4, jnp.int32)), r"`group_ids`.*\(3,\).*"
         r"\(4,\)"),
        (dict(mask=jnp.ones(2, bool)), r"`mask`.*\(3,\).*\(2,\)"),
        (dict(pair_weights=jnp.ones(3)), r"`pair_weights`.*\(3, 3\)")):
      with pytest.raises(ValueError, match=match):
        all_pairs_loss(s, y, **kwargs)
    with pytest.raises(TypeError, match="`group_ids` must be an integer"):
      all_pairs_loss(s, y, group_ids=jnp.zeros(3))
    with pytest.raises(TypeError, match="`labels`.*bool"):
      all_pairs_loss(s, jnp.ones(3, bool))
    with pytest.raises(ValueError, match=r"`scores` must have shape \[N\]"):
      all_pairs_loss(jnp.zeros((3, 1)), y)


class ListwiseIntegrationTest(parameterized.TestCase):

  def test_reward_modeling_loss_runs_the_kernels(self):
    s, y, g, mask = _case(31, 150)
    fn = jax.jit(jax.value_and_grad(
        lambda s, impl: all_pairs_bradley_terry_loss(
            s, y, group_ids=g, mask=mask, weighting="label_gap", margin=0.25,
            margin_rule="label_gap", implementation=impl, block_size=16),
        ), static_argnums=1)
    _assert_same(fn(s, "auto"), fn(s, "reference"))
    jaxpr = str(jax.make_jaxpr(lambda s: all_pairs_bradley_terry_loss(
        s, y, group_ids=g, mask=mask))(s))
    self.assertIn("custom_jvp_call", jaxpr)


def _sharded_mesh():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Explicit,))


class ShardedTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    if jax.device_count() < 8:  # conftest gives CPU runs 8; a one-GPU machine has 1
      self.skipTest(f"needs 8 devices for its mesh, this backend has {jax.device_count()} "
                    f"({jax.default_backend()})")

  @parameterized.named_parameters(
      ("uniform", "uniform", 0.0, "mean"),
      ("lipo_lambda_margin_sum", "lipo_lambda", 0.3, "sum"))
  def test_equals_single_device(self, weighting, margin, reduction):
    mesh = _sharded_mesh()
    self.assertEqual(mesh.size, 8)
    s, y, g, mask = _case(41, 101)  # Not a multiple of 8: padded.
    kwargs = dict(group_ids=g, mask=mask, weighting=weighting, margin=margin,
                  reduction=reduction)
    sharded = jax.jit(jax.value_and_grad(lambda s: all_pairs_loss_sharded(
        s, y, mesh=mesh, axis_names="data", block_size=8, **kwargs)))
    single = jax.jit(jax.value_and_grad(lambda s: all_pairs_loss(
        s, y, implementation="reference", **kwargs)))
    _assert_same(sharded(s), single(s))

  def test_sharded_inputs_and_bad_axis(self):
    mesh = _sharded_mesh()
    s, y, g, mask = _case(42, 64)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
        "data"))
    s_sharded = jax.device_put(s, sharding)
    value = all_pairs_loss_sharded(s_sharded, y, mesh=mesh, axis_names="data",
                                   group_ids=g, mask=mask)
    expected = all_pairs_loss(s, y, group_ids=g, mask=mask)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # Two batch axes (the default names), the mesh from the context, Auto.
    mesh2 = jax.make_mesh((4, 2), ("data", "fsdp"),
                          axis_types=(jax.sharding.AxisType.Auto,) * 2)
    with jax.set_mesh(mesh2):
      value = all_pairs_loss_sharded(s, y, group_ids=g, mask=mask)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="`axis_names` must be axes of"):
      all_pairs_loss_sharded(s, y, mesh=mesh, axis_names="model")
    with pytest.raises(ValueError, match="`mesh` must be a jax.sharding"):
      all_pairs_loss_sharded(s, y)
    with pytest.raises(ValueError, match="`reduction` must be 'mean' or"):
      all_pairs_loss_sharded(s, y, mesh=mesh, axis_names="data",
                             reduction="none")


def test_public_names_are_documented():
  for name in kernels.__all__:
    value = getattr(kernels, name)
    if callable(value) and not isinstance(value, type):
      assert value.__doc__ and ">>>" in value.__doc__, name


@pytest.mark.slow
def test_importing_losses_does_not_import_pallas():
  code = (
      "import sys, jax\n"
      "before = set(sys.modules)\n"
      "import rmjax.losses, rmjax.kernels\n"
      "print(sorted(m for m in set(sys.modules) - before if 'pallas' in m or"
      " 'triton' in m or 'mosaic' in m))\n")
  repo_root = pathlib.Path(__file__).resolve().parents[1]
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True, timeout=120, cwd=repo_root)
  assert result.stdout.strip() == "[]", result.stdout
