"""Tests for rmjax.losses.log_probs: plain and chunked token log-probs."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from rmjax.losses.log_probs import chunked_token_log_probs
from rmjax.losses.log_probs import sequence_log_probs
from rmjax.losses.log_probs import token_log_probs

_RNG = np.random.default_rng(0)
B, T, V = 2, 5, 37
LOGITS = (3.0 * _RNG.normal(size=(B, T, V))).astype(np.float32)
TARGETS = _RNG.integers(0, V, size=(B, T)).astype(np.int32)
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
# Cotangent of the [B, T] output: distinct per position, to catch mix-ups.
COTANGENT = np.arange(1.0, 1.0 + B * T, dtype=np.float32).reshape(B, T)


def _np_log_probs(logits, targets):
  """float64 numpy reference: logits[target] - logsumexp(logits)."""
  x = np.asarray(logits, np.float64)
  lse = np.logaddexp.reduce(x, axis=-1)
  return np.take_along_axis(x, targets[..., None], axis=-1)[..., 0] - lse


def _np_grad(logits, targets, cotangent):
  """d/d logits of sum(cotangent * logp) = g (onehot - softmax)."""
  x = np.asarray(logits, np.float64)
  softmax = np.exp(x - np.logaddexp.reduce(x, axis=-1, keepdims=True))
  onehot = np.eye(x.shape[-1])[targets]
  return cotangent[..., None] * (onehot - softmax)


def _chunked(chunk_size):
  return functools.partial(chunked_token_log_probs, chunk_size=chunk_size)


IMPLEMENTATIONS = (
    ("plain", token_log_probs),
    ("chunked_8", _chunked(8)),        # 4 full chunks + a remainder of 5
    ("chunked_4096", _chunked(4096)),  # clipped to V: one chunk
)


class TokenLogProbsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*IMPLEMENTATIONS)
  def test_hand_values(self, fn):
    # Probabilities (0.5, 0.25, 0.25) and (0.1, 0.1, 0.8), shifted by an
    # arbitrary constant per row (log-softmax is shift invariant).
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    logits = logits + jnp.array([[[7.0], [-3.0]]])
    out = self.variant(fn)(logits, jnp.array([[1, 2]]))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, [[np.log(0.25), np.log(0.8)]], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*IMPLEMENTATIONS)
  def test_values_and_gradients_match_numpy(self, fn):
    def objective(logits):
      return jnp.sum(COTANGENT * fn(logits, TARGETS, mask=MASK))

    value, grad = self.variant(jax.value_and_grad(objective))(LOGITS)
    ref = _np_log_probs(LOGITS, TARGETS) * MASK
    np.testing.assert_allclose(value, np.sum(COTANGENT * ref), rtol=1e-5)
    np.testing.assert_allclose(fn(LOGITS, TARGETS, mask=MASK), ref,
                               rtol=1e-5, atol=1e-5)
    ref_grad = _np_grad(LOGITS, TARGETS, COTANGENT * MASK)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)

  @parameterized.parameters(1, 3, 37)
  def test_chunked_equals_plain_values_and_gradients(self, chunk_size):
    def vg(fn):
      return jax.value_and_grad(
          lambda x: jnp.sum(COTANGENT * fn(x, TARGETS, mask=MASK)))(LOGITS)

    value, grad = vg(_chunked(chunk_size))
    plain_value, plain_grad = vg(token_log_probs)
    np.testing.assert_allclose(value, plain_value, rtol=1e-6)
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-5, atol=1e-6)

  def test_check_grads_of_the_custom_vjp(self):
    # custom_vjp: reverse mode only.
    logits = LOGITS[:1, :3, :11]
    targets = TARGETS[:1, :3] % 11
    fn = lambda x: chunked_token_log_probs(x, targets, chunk_size=4)
    jtu.check_grads(fn, (logits,), order=1, modes=("rev",), eps=1e-2,
                    atol=1e-3, rtol=1e-3)

  def test_bfloat16_logits(self):
    logits = jnp.asarray(LOGITS, jnp.bfloat16)

    def vg(fn):  # Jitted by the caller, as the package's convention says.
      return jax.jit(jax.value_and_grad(
          lambda x: jnp.sum(COTANGENT * fn(x, TARGETS, mask=MASK))))(logits)

    value, grad = vg(_chunked(8))
    plain_value, plain_grad = vg(token_log_probs)
    # The output is float32 and exact for the bfloat16 inputs; the gradient
    # is in the logits' dtype.
    self.assertEqual(chunked_token_log_probs(logits, TARGETS).dtype,
                     jnp.float32)
    self.assertEqual(grad.dtype, jnp.bfloat16)
    exact = _np_log_probs(np.asarray(logits, np.float32), TARGETS) * MASK
    np.testing.assert_allclose(
        chunked_token_log_probs(logits, TARGETS, mask=MASK), exact,
        rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, plain_value, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad, np.float32),
                               np.asarray(plain_grad, np.float32),
                               rtol=1e-2, atol=1e-2)

  @parameterized.named_parameters(*IMPLEMENTATIONS[:2])
  def test_padding_with_junk_changes_nothing(self, fn):
    # Pad T with positions holding NaN / inf logits and -100 targets.
    junk = np.full((B, 3, V), np.nan, np.float32)
    junk[:, 1] = np.inf
    junk[:, 2] = -np.inf
    logits = np.concatenate([LOGITS, junk], axis=1)
    targets = np.concatenate([TARGETS, np.full((B, 3), -100, np.int32)], 1)
    mask = np.concatenate([MASK, np.zeros((B, 3), bool)], axis=1)
    cot = np.concatenate([COTANGENT, np.ones((B, 3), np.float32)], axis=1)

    @jax.jit  # Jitted by the caller, as the package's convention says.
    def vg(logits, targets, mask, cot):
      return jax.value_and_grad(
          lambda x: jnp.sum(cot * fn(x, targets, mask=mask)))(logits)

    value, grad = vg(logits, targets, mask, cot)
    ref_value, ref_grad = vg(LOGITS, TARGETS, MASK, COTANGENT)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad[:, :T], ref_grad, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(grad[:, T:], 0.0)
    np.testing.assert_array_equal(fn(logits, targets, mask=mask)[:, T:], 0.0)

  @parameterized.named_parameters(*IMPLEMENTATIONS[:2])
  def test_extreme_and_infinite_logits(self, fn):
    logits = np.zeros((1, 3, 6), np.float32)
    logits[0, 0] = [1e4, -1e4, 0, 0, 0, 0]      # target 0: logp = 0
    logits[0, 1] = [1e4, -1e4, 0, 0, 0, 0]      # target 1: logp = -2e4
    logits[0, 2] = [-np.inf, 2.0, 2.0, -np.inf, -np.inf, -np.inf]
    targets = np.array([[0, 1, 2]], np.int32)
    value, grad = jax.value_and_grad(
        lambda x: jnp.sum(fn(x, targets)))(logits)
    out = fn(logits, targets)
    np.testing.assert_allclose(out, [[0.0, -2e4, -np.log(2.0)]], rtol=1e-6)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))
    # Row 2: the two finite entries share the mass; -inf entries get 0.
    np.testing.assert_allclose(grad[0, 2], [0, -0.5, 0.5, 0, 0, 0], atol=1e-6)

  def test_compiled_temp_memory_is_o_of_chunk(self):
    """XLA's compiled memory analysis of value-and-gradient (bytes, not time).

    float32 logits: the chunked temp memory is a few [B, T, chunk] float32
    blocks, whatever V. bfloat16 logits: on XLA:CPU the loops read the logits
    through a uint16 view, one 2-byte copy of the logits; on top of it, again
    a few blocks; the plain version holds >= 2 float32 copies of the logits.
    """
    batch, length, chunk = 4, 64, 1024
    block = batch * length * chunk * 4
    slack = 64 * 1024

    def temp_bytes(fn, vocab, dtype):
      logits = jax.ShapeDtypeStruct((batch, length, vocab), dtype)
      targets = jax.ShapeDtypeStruct((batch, length), jnp.int32)
      vg = jax.jit(jax.value_and_grad(lambda x, t: jnp.sum(fn(x, t))))
      analysis = vg.lower(logits, targets).compile().memory_analysis()
      return analysis.temp_size_in_bytes

    chunked = _chunked(chunk)
    for vocab in (32768, 65536):
      logits_f32 = batch * length * vocab * 4
      self.assertLessEqual(temp_bytes(chunked, vocab, jnp.float32),
                           3 * block + slack)
      bits_view = batch * length * vocab * 2
      chunked_bf16 = temp_bytes(chunked, vocab, jnp.bfloat16)
      self.assertLessEqual(chunked_bf16, bits_view + 3 * block + slack)
    plain_bf16 = temp_bytes(token_log_probs, vocab, jnp.bfloat16)
    self.assertGreaterEqual(plain_bf16, 2 * logits_f32)

  def test_bad_arguments_name_the_argument(self):
    logits, targets = jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), jnp.int32)
    for fn in (token_log_probs, _chunked(2)):
      with pytest.raises(ValueError,
                         match=r"`logits` must have shape \[B, T, V\]"):
        fn(logits[0], targets)
      with pytest.raises(ValueError, match=r"`targets`.*\(2, 3\).*\(2, 4\)"):
        fn(logits, jnp.zeros((2, 4), jnp.int32))
      with pytest.raises(TypeError, match="`targets`.*integer.*float32"):
        fn(logits, jnp.zeros((2, 3)))
      with pytest.raises(TypeError, match="`logits`.*floating.*int32"):
        fn(jnp.zeros((2, 3, 5), jnp.int32), targets)
      with pytest.raises(ValueError, match=r"`mask`.*\(2, 3\).*\(3,\)"):
        fn(logits, targets, mask=jnp.ones(3, bool))
      with pytest.raises(ValueError, match=r"`targets` must lie in \[0, V\) = "
                         r"\[0, 5\).*2 out-of-range"):
        fn(logits, jnp.array([[0, 5, 1], [-1, 0, 0]]))
      # ... but not at masked positions.
      fn(logits, jnp.array([[0, 5, 1], [-100, 0, 0]]),
         mask=jnp.array([[1, 0, 1], [0, 1, 1]]))
    for bad in (0, -4, 2.0, True, None):
      with pytest.raises(ValueError, match="`chunk_size` must be a Python int"):
        chunked_token_log_probs(logits, targets, chunk_size=bad)

  def test_shape_errors_raise_under_jit(self):
    with pytest.raises(ValueError, match="`targets`"):
      jax.jit(chunked_token_log_probs)(jnp.zeros((2, 3, 5)),
                                       jnp.zeros((3, 2), jnp.int32))


class SequenceLogProbsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values_and_empty_sequences(self):
    logp = jnp.array([[-1.0, -2.0, jnp.nan], [-0.5, -0.5, -0.5],
                      [jnp.inf, 3.0, 1.0]])
    mask = jnp.array([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    total = self.variant(sequence_log_probs)(logp, mask)
    mean = self.variant(functools.partial(
        sequence_log_probs, aggregation="mean"))(logp, mask)
    np.testing.assert_array_equal(total, [-3.0, -1.5, 0.0])
    np.testing.assert_array_equal(mean, [-1.5, -0.5, 0.0])
    self.assertEqual(total.dtype, jnp.float32)

  def test_gradient_ignores_padding(self):
    logp = jnp.array([[-1.0, jnp.nan, -3.0]])
    mask = jnp.array([[1, 0, 1]])
    grad = jax.grad(lambda x: jnp.sum(sequence_log_probs(
        x, mask, aggregation="mean")))(logp)
    np.testing.assert_array_equal(grad, [[0.5, 0.0, 0.5]])

  def test_composes_with_token_log_probs(self):
    ref = _np_log_probs(LOGITS, TARGETS)
    out = sequence_log_probs(chunked_token_log_probs(LOGITS, TARGETS,
                                                     chunk_size=8), MASK)
    np.testing.assert_allclose(out, np.sum(ref * MASK, axis=1), rtol=1e-5)

  def test_bad_arguments(self):
    with pytest.raises(ValueError, match="`aggregation` must be one of"):
      sequence_log_probs(jnp.zeros((2, 3)), aggregation="avg")
    with pytest.raises(ValueError, match=r"`token_logps` must have shape "
                       r"\[B, T\]"):
      sequence_log_probs(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`mask`.*\(2, 3\)"):
      sequence_log_probs(jnp.zeros((2, 3)), jnp.ones((3, 2)))
