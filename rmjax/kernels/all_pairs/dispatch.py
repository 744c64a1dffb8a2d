"""The public all-pairs loss: checks, the custom derivative and the dispatcher.

`all_pairs_loss` sanitises its inputs once (`rules.sanitize_items`), picks an
implementation and falls back to the next one when an implementation raises
NotImplementedError for the case at hand (checked while tracing, before any
work is staged):

  backend "tpu":  pallas_tpu -> chunked -> reference
  backend "gpu":  pallas_gpu -> chunked -> reference
  otherwise:      chunked -> reference
  N <= 128:       reference (any backend)
  GPU, one group, N <= 16384: reference

Up to `SMALL_N` = 128 items the whole problem is one tile: the [N, N]
reference is as fast (measured on CPU: 0.1 ms for value and gradient at
N = 64, 0.5 ms at N = 256 against 0.3 ms chunked) and compiles about 4x
faster, so "auto" uses it there.

The fast paths (chunked, pallas_tpu, pallas_gpu) share one custom derivative.
Each provides `pair_sums(rule, rows, cols, margin, same_items, with_grad)`,
the sum of the per-pair losses and, on request, its gradient with respect to
the scores, computed in the same pass as the value (softplus and sigmoid from
one exponential). The loss is a `jax.custom_jvp` function whose rule calls
`pair_sums(with_grad=True)` and returns `<grad, ds>` as the tangent:

  * reverse mode (`jax.grad`, `jax.vjp`) transposes that dot product, so the
    backward pass is one O(N) multiply and nothing is recomputed: the same
    cost as a `custom_vjp` with a fused forward;
  * forward mode (`jax.jvp`, `check_grads(modes=("fwd", "rev"))`) works too,
    which a `custom_vjp` would refuse;
  * without differentiation only the value is computed (no slopes).

Labels, LiPO factors and the margin are data: no gradient flows to them, in
every implementation (the reference stops their gradient too).

Only the reference supports an explicit [N, N] `pair_weights` and reduction
"none" (both O(N^2) by nature); "auto" routes them there, and the fast paths
raise NotImplementedError for them.
"""

import functools
from typing import Any, NamedTuple, Optional

import chex
import jax
from jax import lax
import jax.numpy as jnp

from rmjax.kernels.all_pairs import chunked
from rmjax.kernels.all_pairs import reference
from rmjax.kernels.all_pairs import rules

IMPLEMENTATIONS = ("auto", "reference", "chunked", "pallas_tpu", "pallas_gpu")
SMALL_N = 128
# On a GPU the [N, N] reference is faster than the Pallas (Triton) kernel for one group of
# scores (measured on an H200, value and gradient: 1.5 ms vs 2.7 ms at N = 16384, 0.64 vs
# 1.36 ms at 8192; README "Benchmarks"); its [N, N] buffers take ~1 GiB at 16384 (4 GiB at
# 32768), so "auto" takes it up to this N. Grouped scores (prompts x responses) skip the
# cross-prompt tiles in the kernel, which wins there (25x at 4096 prompts x 16).
GPU_REFERENCE_MAX_N = 16384
REDUCTIONS = ("mean", "sum", "none")


class FastConfig(NamedTuple):
  """Static (hashable) configuration of a fast path."""
  implementation: str
  rule: rules.PairRule
  block_size: Optional[int] = None
  interpret: Any = None


def _module(implementation: str):
  """The module of a fast path; Pallas modules are imported only here."""
  if implementation == "chunked":
    return chunked
  if implementation == "pallas_tpu":
    from rmjax.kernels.all_pairs import pallas_tpu  # pylint: disable=g-import-not-at-top
    return pallas_tpu
  if implementation == "pallas_gpu":
    from rmjax.kernels.all_pairs import pallas_gpu  # pylint: disable=g-import-not-at-top
    return pallas_gpu
  raise ValueError(f"not a fast implementation: {implementation!r}")


def check_supported(config: FastConfig, num_items: int, dtype,
                    reduction: str = "mean", pair_weights=None) -> None:
  """Raises NotImplementedError if `config` cannot compute this case."""
  if reduction == "none":
    raise NotImplementedError(
        f"implementation {config.implementation!r} does not support "
        "reduction='none' (an [N, N] output); use 'reference' or 'auto'.")
  if pair_weights is not None:
    raise NotImplementedError(
        f"implementation {config.implementation!r} does not support an "
        "explicit [N, N] `pair_weights` (O(N^2) input); use 'reference' or "
        "'auto'.")
  if config.implementation != "chunked":
    _module(config.implementation).check_supported(
        num_items, dtype, config.block_size, config.interpret)


def pair_sums(config: FastConfig, rows: rules.PairItems, cols: rules.PairItems,
              margin, *, same_items: bool, with_grad: bool, dtype):
  """`pair_sums` of the implementation named in `config` (see chunked)."""
  module = _module(config.implementation)
  kwargs = {} if config.implementation == "chunked" else {
      "interpret": config.interpret}
  return module.pair_sums(config.rule, rows, cols, margin,
                          same_items=same_items, with_grad=with_grad,
                          block_size=config.block_size, dtype=dtype, **kwargs)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _loss_sum(config: FastConfig, items: rules.PairItems, margin):
  total, _, _ = pair_sums(config, items, items, margin, same_items=True,
                          with_grad=False, dtype=items.scores.dtype)
  return total


@_loss_sum.defjvp
def _loss_sum_jvp(config, primals, tangents):
  items, margin = primals
  items_dot, _ = tangents
  total, grad, _ = pair_sums(config, items, items, margin, same_items=True,
                             with_grad=True, dtype=items.scores.dtype)
  return total, jnp.vdot(grad, items_dot.scores)


def fast_loss(config: FastConfig, items: rules.PairItems, margin,
              reduction: str) -> jax.Array:
  """Sum or mean over P of a fast path, with the shared custom derivative."""
  total = _loss_sum(config, items, margin)
  if reduction == "sum":
    return total
  count = rules.num_preferred_pairs(items.labels, items.group_ids, items.valid)
  return total / jnp.maximum(count, 1).astype(total.dtype)


def candidates(implementation: str, backend: Optional[str] = None,
               num_items: Optional[int] = None, grouped: bool = True):
  """The implementations tried, in order, for `implementation` on `backend`.

  Args:
    implementation: one of `IMPLEMENTATIONS`.
    backend: "cpu", "gpu", "tpu", ...; default `jax.default_backend()`.
    num_items: N, if known; "auto" uses the reference up to `SMALL_N`, and on a GPU up to
      `GPU_REFERENCE_MAX_N` when the scores are one group.
    grouped: whether the scores carry group ids (default True: the kernels' order).

  Returns:
    tuple of implementation names.

  >>> from rmjax.kernels.all_pairs.dispatch import candidates
  >>> candidates("auto", "cpu"), candidates("auto", "tpu")
  (('chunked', 'reference'), ('pallas_tpu', 'chunked', 'reference'))
  >>> candidates("auto", "tpu", num_items=100), candidates("chunked", "tpu")
  (('reference',), ('chunked',))
  >>> candidates("auto", "gpu", num_items=8192, grouped=False)
  ('reference',)
  """
  if implementation != "auto":
    return (implementation,)
  if num_items is not None and num_items <= SMALL_N:
    return ("reference",)
  backend = jax.default_backend() if backend is None else backend
  if backend == "tpu":
    return ("pallas_tpu", "chunked", "reference")
  if backend in ("gpu", "cuda", "rocm"):
    if not grouped and num_items is not None and num_items <= GPU_REFERENCE_MAX_N:
      return ("reference",)
    return ("pallas_gpu", "chunked", "reference")
  return ("chunked", "reference")


_KINDS = {
    "real": ("a real-valued (floating or integer)",
             lambda d: (jnp.issubdtype(d, jnp.floating)
                        or jnp.issubdtype(d, jnp.integer))),
    "integer": ("an integer", lambda d: jnp.issubdtype(d, jnp.integer)),
    "mask": ("a bool or {0, 1} numeric",
             lambda d: (d == jnp.bool_ or jnp.issubdtype(d, jnp.integer)
                        or jnp.issubdtype(d, jnp.floating))),
}


def check_vector(x, name: str, num_items: Optional[int], kind: str):
  """Checks an [N] input (N = `num_items` if given); errors name `name`.

  Args:
    x: array-like.
    name: the argument's name.
    num_items: the expected length, or None for any.
    kind: "real", "integer" or "mask" (the accepted dtypes).

  Returns:
    `jnp.asarray(x)`.

  Raises:
    TypeError: a dtype of the wrong kind.
    ValueError: not of shape [N].
  """
  x = jnp.asarray(x)
  description, accepts = _KINDS[kind]
  if not accepts(x.dtype):
    raise TypeError(f"`{name}` must be {description} array; got dtype "
                    f"{x.dtype}.")
  if x.ndim != 1 or (num_items is not None and x.shape[0] != num_items):
    expected = "[N]" if num_items is None else f"[N] = ({num_items},)"
    raise ValueError(
        f"`{name}` must have shape {expected}; got shape {tuple(x.shape)}.")
  return x


def check_options(weighting: str, margin_rule: str, reduction: str,
                  implementation: str, block_size) -> None:
  """Checks the string and integer options in Python (ValueError)."""
  rules.check_rule(rules.PairRule(weighting, margin_rule))
  for value, name, allowed in (
      (reduction, "reduction", REDUCTIONS),
      (implementation, "implementation", IMPLEMENTATIONS)):
    if not isinstance(value, str) or value not in allowed:
      raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")
  if block_size is not None and (
      isinstance(block_size, bool) or not isinstance(block_size, int)
      or block_size < 1):
    raise ValueError(
        f"`block_size` must be None or a positive int; got {block_size!r}.")


def margin_rule_and_value(margin, margin_rule: str, dtype):
  """(rule or None, scalar margin without gradient); a Python 0 is no margin."""
  if isinstance(margin, bool) or isinstance(margin, str):
    raise TypeError(
        f"`margin` must be a real scalar; got {type(margin).__name__} "
        f"{margin!r}.")
  if isinstance(margin, (int, float)) and margin == 0:
    return None, None
  margin = jnp.asarray(margin)
  if not (jnp.issubdtype(margin.dtype, jnp.floating)
          or jnp.issubdtype(margin.dtype, jnp.integer)) or margin.ndim != 0:
    raise ValueError(
        f"`margin` must be a real scalar; got dtype {margin.dtype}, shape "
        f"{tuple(margin.shape)}.")
  return margin_rule, lax.stop_gradient(margin.astype(dtype))


def loss_from_items(items: rules.PairItems, margin, *, rule: rules.PairRule,
                    reduction: str, implementation: str, block_size,
                    interpret, pair_weights, dtype) -> jax.Array:
  """Runs the first implementation of `candidates` that supports the case."""
  num_items = items.scores.shape[0]
  names = candidates(implementation, num_items=num_items,
                     grouped=items.group_ids is not None)
  for position, name in enumerate(names):
    if name == "reference":
      return reference.all_pairs_loss(rule, items, margin,
                                      pair_weights=pair_weights,
                                      reduction=reduction, dtype=dtype)
    config = FastConfig(name, rule, block_size, interpret)
    try:
      check_supported(config, num_items, dtype, reduction, pair_weights)
    except NotImplementedError:
      if position == len(names) - 1:
        raise
      continue
    return fast_loss(config, items, margin, reduction)
  raise AssertionError("unreachable")


@functools.partial(jax.jit, static_argnames=(
    "weighting", "margin_rule", "reduction", "implementation", "block_size",
    "interpret", "has_margin"))
def _all_pairs_loss(scores, labels, group_ids, mask, margin, lipo_factors,
                    pair_weights, *, weighting, margin_rule, reduction,
                    implementation, block_size, interpret, has_margin):
  num_items = scores.shape[0]
  valid = (jnp.ones(num_items, bool) if mask is None
           else mask if mask.dtype == jnp.bool_ else mask != 0)
  items, dtype = rules.sanitize_items(scores, labels, group_ids, valid,
                                      weighting, lipo_factors)
  rule = rules.PairRule(weighting, margin_rule if has_margin else None)
  if has_margin:
    margin = lax.stop_gradient(margin.astype(dtype))
  return loss_from_items(items, margin, rule=rule, reduction=reduction,
                         implementation=implementation, block_size=block_size,
                         interpret=interpret, pair_weights=pair_weights,
                         dtype=dtype)


def all_pairs_loss(
    scores: chex.Array,
    labels: chex.Array,
    *,
    group_ids: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
    weighting: str = "uniform",
    margin: chex.Numeric = 0.0,
    margin_rule: str = "constant",
    lipo_factors: Optional[tuple[chex.Array, chex.Array]] = None,
    pair_weights: Optional[chex.Array] = None,
    reduction: str = "mean",
    implementation: str = "auto",
    block_size: Optional[int] = None,
    interpret: Any = None,
) -> jax.Array:
  """All-pairs preference loss, O(N) memory, on the best implementation.

  With P the ordered pairs (i, j) of valid items of the same group with
  labels_i > labels_j, and w, m the rules of `rules.pair_loss_and_slope`:

    loss = sum_{(i, j) in P} w_ij * -log sigmoid(s_i - s_j - m_ij) / normaliser

  "mean" divides by |P| (0 pairs give 0), "sum" returns the numerator, "none"
  the [N, N] matrix (reference only). Weightings: "uniform" (1), "label_gap"
  (y_i - y_j: the scaled BT of HelpSteer2-Preference with the label gap as
  strength), "lipo_lambda" (|G_i - G_j| |1/D_i - 1/D_j|, from `lipo_factors`
  or computed from the current scores without gradient). Margin: m_ij = margin
  (margin_rule "constant") or margin * (y_i - y_j) ("label_gap"); a Python 0
  is no margin. The gradient flows to `scores` only.

  This is the function behind `rmjax.losses.all_pairs_bradley_terry_loss`,
  which adds the package's argument checks; use that one in models.

  Args:
    scores: [N] real scores (bfloat16 and float32 are computed in float32).
    labels: [N] real labels, higher = better; ties give no pair.
    group_ids: optional [N] integer prompt ids. Default None: one group.
    mask: optional [N] bool (or {0, 1}) validity mask.
    weighting: "uniform" (default), "label_gap" or "lipo_lambda".
    margin: real scalar m (default 0: no margin).
    margin_rule: "constant" (default) or "label_gap".
    lipo_factors: optional (gain [N], inverse_discount [N]) for
      "lipo_lambda"; default: `rules.lipo_lambda_factors` of the scores.
    pair_weights: optional [N, N] explicit weights (reference only).
    reduction: "mean" (default), "sum" or "none".
    implementation: "auto" (default), "reference", "chunked", "pallas_tpu"
      or "pallas_gpu". A named one is used as is (its NotImplementedError
      propagates); "auto" falls back along `candidates` (the reference for
      N <= 128).
    block_size: tile side of the chunked path (default 512; the Pallas
      kernels use their own defaults when None).
    interpret: Pallas interpret mode: None (compiled), True (GPU kernel on
      CPU), or `pltpu.InterpretParams()` (TPU kernel on CPU).

  Returns:
    float32 scalar, or float32 [N, N] for reduction="none".

  Raises:
    ValueError: bad options or wrongly shaped inputs.
    TypeError: non-real scores/labels, non-integer group ids.
    NotImplementedError: a named implementation that cannot do the case.

  References:
    Bradley & Terry (1952), "Rank analysis of incomplete block designs".
    Burges et al. (2005), "Learning to rank using gradient descent".
    Wang et al. (2024), "HelpSteer2-Preference", arXiv:2410.01257.
    Liu et al. (2024), "LiPO: Listwise Preference Optimization through
    Learning-to-Rank", arXiv:2402.01878.

  >>> import jax.numpy as jnp
  >>> from rmjax.kernels import all_pairs_loss
  >>> s, y = jnp.array([1.0, 0.0, 0.0]), jnp.array([1, 0, 0])
  >>> float(all_pairs_loss(s, y))  # softplus(-1)
  0.3132...
  >>> float(all_pairs_loss(s, y, implementation="reference"))
  0.3132...
  >>> float(all_pairs_loss(jnp.zeros(2), jnp.array([1, 0]), margin=3.0))
  3.0485...
  """
  check_options(weighting, margin_rule, reduction, implementation, block_size)
  scores = check_vector(scores, "scores", None, "real")
  num_items = scores.shape[0]
  labels = check_vector(labels, "labels", num_items, "real")
  if group_ids is not None:
    group_ids = check_vector(group_ids, "group_ids", num_items, "integer")
  if mask is not None:
    mask = check_vector(mask, "mask", num_items, "mask")
  if lipo_factors is not None:
    lipo_factors = tuple(
        check_vector(f, f"lipo_factors[{k}]", num_items, "real")
        for k, f in enumerate(lipo_factors))
  if pair_weights is not None:
    pair_weights = jnp.asarray(pair_weights)
    if tuple(pair_weights.shape) != (num_items, num_items):
      raise ValueError(
          f"`pair_weights` must have shape [N, N] = {(num_items, num_items)}; "
          f"got shape {tuple(pair_weights.shape)}.")
  dtype = jnp.promote_types(jnp.float32, scores.dtype)
  active_rule, margin = margin_rule_and_value(margin, margin_rule, dtype)
  return _all_pairs_loss(
      scores, labels, group_ids, mask, margin, lipo_factors, pair_weights,
      weighting=weighting, margin_rule=margin_rule, reduction=reduction,
      implementation=implementation, block_size=block_size,
      interpret=interpret, has_margin=active_rule is not None)
