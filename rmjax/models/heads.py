"""Reward heads: small modules from pooled backbone features to reward-model outputs.

Every head follows one pattern, so that one backbone serves every loss:

* constructor `Head(d_model, ..., *, param_dtype=jnp.float32, rngs)`, parameters
  annotated with logical axes ('embed' for an axis that reads the backbone's features,
  None otherwise), so `rmjax.models.logical_partition_specs` shards every head with the
  default rules;
* `__call__(features: [B, D], ...) -> outputs` computed in float32 whatever the
  backbone's compute dtype; heads with one output return an array, heads with several a
  dict of arrays with documented keys;
* inputs are checked at trace time, and errors name the argument.

Heads, their outputs, and the `rmjax.losses` functions that consume them:

* `ScalarHead`: rewards [B, num_outputs]; `bradley_terry_loss` and co.
* `MultiAttributeHead`: attribute scores [B, A]; `attribute_regression_loss`.
* `GeneralPreferenceHead`: {'embedding': [B, 2k], 'block_scales': [B, k] (if gated)};
  `general_preference.general_preference_loss`.
* `MixtureHead`: {'rewards': [B, K], 'router_logits': [B, K]};
  `pluralistic.mixture_bradley_terry_loss`.
* `IdealPointHead`: {'features': [B, F], 'prototypes': [K, F], 'user_logits': [B, K]
  (with user ids)}; `pluralistic.pal_a_user_point`, `pluralistic.pal_a_score`.
* `PromptConditionedIdealPointHead` (PAL-B): {'features': [B, F],
  'user_prototype_features': [B, K, F], 'log_temperature': [], 'user_logits': [B, K]
  (with user ids)}; `pluralistic.pal_b_user_vector`, `pluralistic.pal_b_score`.
* `LatentConditionedHead`: rewards r(y, z) [B]; `pluralistic.vpl_loss`.
* `PreferenceEncoder` (not a head: VPL's posterior over a user's pairs):
  (mean [U, Z], log_var [U, Z]); `pluralistic.reparameterize`, `pluralistic.vpl_loss`.

Pooling (which position's hidden state a sequence is scored by) is separate:
`gather_last_token` reads the last real token of right-padded sequences.
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp

from rmjax.losses.pluralistic import PAL_INIT_LOG_TEMPERATURE
from rmjax.models.transformer import _MASK_VALUE, RMSNorm, _param

# Names of the GPM block-scale gates; see `GeneralPreferenceHead`.
GPM_SCALE_GATES = ("softmax", "scaled_softmax")


def gather_last_token(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Hidden state of the last real token of each right-padded sequence.

  Reads index sum(mask) - 1 of each row. A row without any real token would read index
  0 (it cannot raise under jit); the data layer guarantees at least one real token.

  Args:
    hidden: [B, L, D] hidden states.
    mask: [B, L] bool or int, nonzero at real tokens (a prefix of each row).

  Returns:
    [B, D] in hidden's dtype.

  >>> h = jnp.arange(6.0).reshape(1, 3, 2)
  >>> gather_last_token(h, jnp.array([[1, 1, 0]])).tolist()
  [[2.0, 3.0]]
  """
  if getattr(hidden, "ndim", None) != 3:
    raise ValueError(
        f"hidden must have shape [B, L, D], got {getattr(hidden, 'shape', None)}."
    )
  if getattr(mask, "shape", None) != hidden.shape[:2]:
    raise ValueError(
        f"mask must have shape [B, L] = {tuple(hidden.shape[:2])} (the leading axes of "
        f"hidden), got {getattr(mask, 'shape', None)}."
    )
  last = jnp.maximum(jnp.sum(mask.astype(jnp.int32), axis=1) - 1, 0)  # [B]
  return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0, :]


def check_features(features: jax.Array, d_model: int) -> None:
  """Checks a head's input at trace time.

  Args:
    features: expected [B, D] with D == d_model.
    d_model: the head's input width.

  Raises:
    ValueError naming `features`, the expected and the actual shape.
  """
  if getattr(features, "ndim", None) != 2 or features.shape[-1] != d_model:
    raise ValueError(
        f"features must have shape [B, {d_model}], got "
        f"{getattr(features, 'shape', None)}."
    )


class ScalarHead(nnx.Module):
  """Linear reward head: rewards = features @ kernel + bias.

  The kernel [D, num_outputs] (logical axes ('embed', None)) is initialised
  N(0, 1 / (D + 1)) so that initial rewards have unit scale on unit-RMS features
  (Stiennon et al. 2020); the bias [num_outputs] starts at zero.

  Args:
    d_model: D, the width of the pooled features.
    num_outputs: rewards per sequence (default 1; more for multi-attribute scores).
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  >>> head = ScalarHead(4, rngs=nnx.Rngs(0))
  >>> head(jnp.ones((3, 4))).shape
  (3, 1)
  """

  def __init__(self, d_model: int, num_outputs: int = 1, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    for name, value in (("d_model", d_model), ("num_outputs", num_outputs)):
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"ScalarHead: {name} must be a positive int, got {value!r}.")
    self.d_model = d_model
    self.num_outputs = num_outputs
    param_dtype = jnp.dtype(param_dtype)
    kernel_init = nnx.with_partitioning(
        nnx.initializers.normal(stddev=1.0 / math.sqrt(d_model + 1)), ("embed", None),
        eager_sharding=False,
    )
    bias_init = nnx.with_partitioning(nnx.initializers.zeros, (None,),
                                      eager_sharding=False)
    self.kernel = nnx.Param(kernel_init(rngs.params(), (d_model, num_outputs), param_dtype))
    self.bias = nnx.Param(bias_init(rngs.params(), (num_outputs,), param_dtype))

  def __call__(self, features: jax.Array) -> jax.Array:
    """features: [B, D] -> [B, num_outputs] float32."""
    check_features(features, self.d_model)
    kernel = self.kernel[...].astype(jnp.float32)
    return features.astype(jnp.float32) @ kernel + self.bias[...].astype(jnp.float32)


# --------------------------------------------------------------------------- helpers


def _check_positive_int(owner: str, name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}.")


def _head_init(fan_in: int):
  """N(0, 1 / (fan_in + 1)): unit-scale outputs on unit-RMS inputs (as `ScalarHead`)."""
  return nnx.initializers.normal(stddev=1.0 / math.sqrt(fan_in + 1))


# He et al. (2015) init for layers followed by a ReLU.
_RELU_INIT = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class _Linear(nnx.Module):
  """y = x @ kernel (+ bias) in float32; kernel [I, O] with logical axes (input_axis, None)."""

  def __init__(self, in_features: int, out_features: int, *, input_axis: str | None,
               kernel_init, use_bias: bool = True, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    param_dtype = jnp.dtype(param_dtype)
    self.kernel = _param(rngs, kernel_init, (in_features, out_features), (input_axis, None),
                         param_dtype)
    self.bias = (_param(rngs, nnx.initializers.zeros, (out_features,), (None,), param_dtype)
                 if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x.astype(jnp.float32) @ self.kernel[...].astype(jnp.float32)
    if self.bias is not None:
      y = y + self.bias[...].astype(jnp.float32)
    return y


class _StackedLinear(nnx.Module):
  """K parallel linear maps in float32: y[:, k] = x[:, k] @ kernel[k] + bias[k].

  kernel [K, I, O] (logical axes (None, input_axis, None)), bias [K, O] (None, None). The
  input is [B, I] (shared by the K maps) or [B, K, I] (one slice per map); y is [B, K, O].
  """

  def __init__(self, copies: int, in_features: int, out_features: int, *,
               input_axis: str | None, kernel_init, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    param_dtype = jnp.dtype(param_dtype)
    self.kernel = _param(rngs, kernel_init, (copies, in_features, out_features),
                         (None, input_axis, None), param_dtype)
    self.bias = _param(rngs, nnx.initializers.zeros, (copies, out_features), (None, None),
                       param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...].astype(jnp.float32)
    spec = "bi,kio->bko" if x.ndim == 2 else "bki,kio->bko"
    return jnp.einsum(spec, x.astype(jnp.float32), kernel) + self.bias[...].astype(jnp.float32)


def _stacked_init(scale: float):
  """Truncated-normal init with variance scale / fan_in per map of a `_StackedLinear`."""
  return nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal", in_axis=-2,
                                           out_axis=-1, batch_axis=(0,))


def _check_prompt_features(prompt_features, features: jax.Array) -> jax.Array:
  """`prompt_features` [B, D] if given (checked against `features`), else `features`."""
  if prompt_features is None:
    return features
  if getattr(prompt_features, "shape", None) != features.shape:
    raise ValueError(
        f"prompt_features must have the shape of features {tuple(features.shape)}, got "
        f"{getattr(prompt_features, 'shape', None)}."
    )
  return prompt_features


def _user_table_rows(table: nnx.Param, user_ids: jax.Array) -> jax.Array:
  """Rows of a per-user table [U, K] for user_ids [B] int -> [B, K] float32.

  Ids outside [0, U), negative ones included, cannot raise under jit; they give NaN rows
  (never another user's row), so a loss that forgets to mask them fails loudly.
  """
  if getattr(user_ids, "ndim", None) != 1:
    raise ValueError(
        f"user_ids must have shape [B], got {getattr(user_ids, 'shape', None)}.")
  if not jnp.issubdtype(user_ids.dtype, jnp.integer):
    raise TypeError(f"user_ids must have an integer dtype, got {user_ids.dtype}.")
  table = table[...].astype(jnp.float32)
  # Explicit bounds: jnp.take would wrap negative ids around to other users' rows.
  known = (user_ids >= 0) & (user_ids < table.shape[0])
  rows = jnp.take(table, jnp.where(known, user_ids, 0), axis=0)
  return jnp.where(known[:, None], rows, jnp.nan)


def _check_user_ids_batch(user_ids, features: jax.Array) -> None:
  if getattr(user_ids, "shape", None) != features.shape[:1]:
    raise ValueError(
        f"user_ids must have shape [B] = {tuple(features.shape[:1])}, got "
        f"{getattr(user_ids, 'shape', None)}."
    )


# --------------------------------------------------------------------------- heads


class MultiAttributeHead(nnx.Module):
  """Attribute scores: predictions = features @ kernel + bias.

  HelpSteer2 rates five attributes (`rmjax.losses.HELPSTEER2_ATTRIBUTES`: helpfulness,
  correctness, coherence, complexity, verbosity; each 0..4). Train with
  `rmjax.losses.attribute_regression_loss`; read a scalar reward out with
  `rmjax.losses.helpsteer2_attribute_score`. The parameters have the layout and the init
  of `ScalarHead(d_model, num_attributes)`: kernel [D, A] (logical axes ('embed', None))
  ~ N(0, 1 / (D + 1)), bias [A] zeros, so either head's params load into the other.

  Args:
    d_model: D, the width of the pooled features.
    num_attributes: A, scores per sequence (default 5, HelpSteer2).
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  References:
    Wang et al. (2024) HelpSteer2: open-source dataset for training top-performing reward
    models, arXiv:2406.08673.

  >>> head = MultiAttributeHead(4, rngs=nnx.Rngs(0))
  >>> head(jnp.ones((3, 4))).shape
  (3, 5)
  """

  def __init__(self, d_model: int, num_attributes: int = 5, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    _check_positive_int("MultiAttributeHead", "d_model", d_model)
    _check_positive_int("MultiAttributeHead", "num_attributes", num_attributes)
    self.d_model = d_model
    self.num_attributes = num_attributes
    param_dtype = jnp.dtype(param_dtype)
    self.kernel = _param(rngs, _head_init(d_model), (d_model, num_attributes),
                         ("embed", None), param_dtype)
    self.bias = _param(rngs, nnx.initializers.zeros, (num_attributes,), (None,), param_dtype)

  def __call__(self, features: jax.Array) -> jax.Array:
    """features: [B, D] -> predictions [B, num_attributes] float32."""
    check_features(features, self.d_model)
    kernel = self.kernel[...].astype(jnp.float32)
    return features.astype(jnp.float32) @ kernel + self.bias[...].astype(jnp.float32)


class GeneralPreferenceHead(nnx.Module):
  """General preference model (GPM) head: a 2k-dim embedding and optional block scales.

    embedding    = features @ W_v                                    [B, 2k]
    block_scales = softmax(prompt_features @ W_g)                    [B, k]  ("softmax")
                 = k * softmax(prompt_features @ W_g / sqrt(D))      [B, k]  ("scaled_softmax")

  The preference of a over b is then s = <R v_a, v_b> with R block-diagonal
  (`rmjax.losses.general_preference.general_preference_loss(out_c['embedding'],
  out_r['embedding'], block_scales=out['block_scales'])`). The embedding is returned
  raw: the optional L2 normalisation is the loss's `normalize=True`, not done here.

  Gates: "softmax" (default) is the spec's lambda(x) = softmax(W h_x) (scales sum to 1);
  "scaled_softmax" is the authors' code (`k * softmax(W h / sqrt(D))`, scales average 1,
  so a uniform gate leaves the scores of the scale-free model unchanged).

  The prompt gate: the paper computes lambda(x) from the hidden state of the prompt x.
  Pass that as `prompt_features` (`RewardModel` reads it from the same forward pass when
  the batch carries a 'prompt_mask': the backbone is causal, so the hidden state of the
  last prompt token is exactly the prompt's). Without it the gate reads `features`, the
  last token of the full (prompt, response) sequence; the chosen and rejected responses
  of one prompt then get different scales (use either side's, consistently).

  Neither projection has a bias (as the authors' value and prompt heads). Kernels
  W_v [D, 2k] and W_g [D, k] have logical axes ('embed', None) and init N(0, 1 / (D + 1)).

  Args:
    d_model: D, the width of the pooled features.
    embedding_dim: 2k, even and positive (default 4: two 2-D blocks).
    prompt_dependent_scales: whether to build the gate and return 'block_scales'
      (default False: all scales 1, the loss's default).
    scale_gate: "softmax" (default) or "scaled_softmax", see above.
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  References:
    Zhang et al. (2024) Beyond Bradley-Terry models: a general preference model for
    language model alignment, arXiv:2410.02197.

  >>> head = GeneralPreferenceHead(8, 4, prompt_dependent_scales=True, rngs=nnx.Rngs(0))
  >>> out = head(jnp.ones((3, 8)))
  >>> out["embedding"].shape, out["block_scales"].shape
  ((3, 4), (3, 2))
  """

  def __init__(self, d_model: int, embedding_dim: int = 4, *,
               prompt_dependent_scales: bool = False, scale_gate: str = "softmax",
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    _check_positive_int("GeneralPreferenceHead", "d_model", d_model)
    _check_positive_int("GeneralPreferenceHead", "embedding_dim", embedding_dim)
    if embedding_dim % 2:
      raise ValueError(
          "GeneralPreferenceHead: embedding_dim must be even (2k: k 2-D blocks), got "
          f"{embedding_dim}."
      )
    if not isinstance(prompt_dependent_scales, bool):
      raise TypeError(
          "GeneralPreferenceHead: prompt_dependent_scales must be a bool, got "
          f"{prompt_dependent_scales!r}."
      )
    if scale_gate not in GPM_SCALE_GATES:
      raise ValueError(
          f"GeneralPreferenceHead: scale_gate must be one of {GPM_SCALE_GATES}, got "
          f"{scale_gate!r}."
      )
    self.d_model = d_model
    self.embedding_dim = embedding_dim
    self.prompt_dependent_scales = prompt_dependent_scales
    self.scale_gate = scale_gate
    self.embedding = _Linear(d_model, embedding_dim, input_axis="embed",
                             kernel_init=_head_init(d_model), use_bias=False,
                             param_dtype=param_dtype, rngs=rngs)
    self.gate = (_Linear(d_model, embedding_dim // 2, input_axis="embed",
                         kernel_init=_head_init(d_model), use_bias=False,
                         param_dtype=param_dtype, rngs=rngs)
                 if prompt_dependent_scales else None)

  def __call__(self, features: jax.Array, prompt_features: jax.Array | None = None
               ) -> dict[str, jax.Array]:
    """Embeds sequences (and gates their blocks).

    Args:
      features: [B, D] pooled features of the (prompt, response) sequences.
      prompt_features: optional [B, D] hidden state of each prompt, read by the gate
        (default: `features`); unused without `prompt_dependent_scales`.

    Returns:
      {'embedding': [B, 2k] float32} plus, with `prompt_dependent_scales`,
      'block_scales': [B, k] float32, nonnegative.
    """
    check_features(features, self.d_model)
    out = {"embedding": self.embedding(features)}
    if self.gate is not None:
      gate_logits = self.gate(_check_prompt_features(prompt_features, features))
      if self.scale_gate == "softmax":
        out["block_scales"] = jax.nn.softmax(gate_logits, axis=-1)
      else:
        num_blocks = self.embedding_dim // 2
        out["block_scales"] = num_blocks * jax.nn.softmax(
            gate_logits / math.sqrt(self.d_model), axis=-1)
    return out


class MixtureHead(nnx.Module):
  """Mixture of K reward heads with a linear router (MiCRo stage 1).

    rewards       = features @ W_r + b_r          [B, K]   r_k(x, y)
    router_logits = router_input @ W_w + b_w      [B, K]   w(x) = softmax(router_logits)

  Train with `rmjax.losses.pluralistic.mixture_bradley_terry_loss(out_c['rewards'],
  out_r['rewards'], router_logits)`. MiCRo's router is context-aware: it reads the prompt
  x. Pass the prompt's hidden state as `prompt_features` (`RewardModel` does so when the
  batch carries a 'prompt_mask'); the router then gives the chosen and rejected
  sequences of one prompt the same logits. Without it the router reads `features`, the
  last token of the full sequence (use the chosen side's logits, consistently).

  Kernels [D, K] have logical axes ('embed', None) and init N(0, 1 / (D + 1)); the
  biases start at zero.

  Args:
    d_model: D, the width of the pooled features.
    num_components: K, reward heads (default 2).
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  References:
    Shen et al. (2025) MiCRo: mixture modeling and context-aware routing for personalized
    preference learning, arXiv:2505.24846.

  >>> out = MixtureHead(8, 3, rngs=nnx.Rngs(0))(jnp.ones((2, 8)))
  >>> out["rewards"].shape, out["router_logits"].shape
  ((2, 3), (2, 3))
  """

  def __init__(self, d_model: int, num_components: int = 2, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    _check_positive_int("MixtureHead", "d_model", d_model)
    _check_positive_int("MixtureHead", "num_components", num_components)
    self.d_model = d_model
    self.num_components = num_components
    self.rewards = _Linear(d_model, num_components, input_axis="embed",
                           kernel_init=_head_init(d_model), param_dtype=param_dtype,
                           rngs=rngs)
    self.router = _Linear(d_model, num_components, input_axis="embed",
                          kernel_init=_head_init(d_model), param_dtype=param_dtype,
                          rngs=rngs)

  def __call__(self, features: jax.Array, prompt_features: jax.Array | None = None
               ) -> dict[str, jax.Array]:
    """features: [B, D] (and optional prompt_features [B, D] for the router) ->
    {'rewards': [B, K], 'router_logits': [B, K]}, float32."""
    check_features(features, self.d_model)
    router_input = _check_prompt_features(prompt_features, features)
    return {"rewards": self.rewards(features), "router_logits": self.router(router_input)}


class IdealPointHead(nnx.Module):
  """PAL-A ideal-point head: item features, K prototypes and a per-user mixing table.

    features    = f(y) = pooled @ W_f        [B, F]
    prototypes  = P                          [K, F]
    user_logits = table[user_ids]            [B, K]   theta_u; weights softmax(theta_u)

  Then a_u = softmax(theta_u) @ P (`rmjax.losses.pluralistic.pal_a_user_point`) and the
  score ||f(y_r) - a_u|| - ||f(y_c) - a_u|| (`pal_a_score`), trained with the logistic
  loss. The spec writes a_u = f(P softmax(theta_u)) with prototypes in the backbone's
  feature space: for a linear f, f(P w) = f(P) w, so learning the projected prototypes
  f(P) directly (as here, the "f(P)w" form of the authors' code) is the same model when
  the projection has full rank F <= D. f has no bias: a shift of every f(y) would be
  absorbed by the prototypes.

  Init: W_f [D, F] (logical axes ('embed', None)) LeCun normal, so features have unit
  scale on unit-RMS hidden states; P ~ N(0, 1) (None, None); the table [num_users, K]
  (None, None) zeros, so every user starts at the centroid of the prototypes.

  Ids outside [0, num_users), negative ones included, cannot raise under jit; they give
  NaN `user_logits` (never another user's row): mask such rows in the loss.

  Args:
    d_model: D, the width of the pooled features.
    feature_dim: F, the width of the ideal-point space.
    num_prototypes: K (default 2, as the spec).
    num_users: rows of the user table (keyword-only, required).
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  References:
    Chen et al. (2024) PAL: pluralistic alignment framework for learning from
    heterogeneous preferences, arXiv:2406.08469.

  >>> head = IdealPointHead(8, 3, num_users=10, rngs=nnx.Rngs(0))
  >>> out = head(jnp.ones((2, 8)), user_ids=jnp.array([0, 7]))
  >>> sorted((k, v.shape) for k, v in out.items())
  [('features', (2, 3)), ('prototypes', (2, 3)), ('user_logits', (2, 2))]
  """

  def __init__(self, d_model: int, feature_dim: int, num_prototypes: int = 2, *,
               num_users: int, param_dtype=jnp.float32, rngs: nnx.Rngs):
    for name, value in (("d_model", d_model), ("feature_dim", feature_dim),
                        ("num_prototypes", num_prototypes), ("num_users", num_users)):
      _check_positive_int("IdealPointHead", name, value)
    self.d_model = d_model
    self.feature_dim = feature_dim
    self.num_prototypes = num_prototypes
    self.num_users = num_users
    param_dtype = jnp.dtype(param_dtype)
    self.projection = _Linear(d_model, feature_dim, input_axis="embed",
                              kernel_init=nnx.initializers.lecun_normal(), use_bias=False,
                              param_dtype=param_dtype, rngs=rngs)
    self.prototypes = _param(rngs, nnx.initializers.normal(stddev=1.0),
                             (num_prototypes, feature_dim), (None, None), param_dtype)
    self.user_table = _param(rngs, nnx.initializers.zeros, (num_users, num_prototypes),
                             (None, None), param_dtype)

  def user_logits(self, user_ids: jax.Array) -> jax.Array:
    """user_ids: [B] int -> [B, K] float32 rows of the table (NaN for unknown ids)."""
    return _user_table_rows(self.user_table, user_ids)

  def __call__(self, features: jax.Array, user_ids: jax.Array | None = None
               ) -> dict[str, jax.Array]:
    """Projects the features and looks the users up.

    Args:
      features: [B, D] pooled features.
      user_ids: optional [B] int, the annotator of each row.

    Returns:
      {'features': [B, F], 'prototypes': [K, F] (not batched)} plus, with user_ids,
      'user_logits': [B, K]; float32.
    """
    check_features(features, self.d_model)
    out = {"features": self.projection(features),
           "prototypes": self.prototypes[...].astype(jnp.float32)}
    if user_ids is not None:
      _check_user_ids_batch(user_ids, features)
      out["user_logits"] = self.user_logits(user_ids)
    return out


class PromptConditionedIdealPointHead(nnx.Module):
  """PAL-B head: prompt-conditioned user vectors, compared with responses by cosine.

    features                = f(y)   = MLP_f(pooled features)              [B, F]
    user_prototype_features = g_k(x) = MLP_k(prompt features), k = 1..K    [B, K, F]
    user_logits             = theta_u = table[user_ids]                    [B, K]
    log_temperature         = log tau, a learnable scalar                   []

  Then u = sum_k softmax(theta_u)_k g_k(x)
  (`rmjax.losses.pluralistic.pal_b_user_vector(out['user_prototype_features'],
  out['user_logits'])`) and s = tau (cos(u, f(y_c)) - cos(u, f(y_r))) with
  tau = min(exp(log_temperature), 100) (`pal_b_score(out_c['features'],
  out_r['features'], u, log_temperature=out['log_temperature'])`), trained with
  -log sigma(s) (`bradley_terry_loss(s, jnp.zeros_like(s))`). The head returns exactly
  those functions' inputs and computes no score itself.

  The prompt x: the K maps read `prompt_features`, the hidden state of the last prompt
  token (`RewardModel` reads it from the same forward pass when the batch carries a
  'prompt_mask'; the backbone is causal, so it is exactly the prompt's hidden state, what
  the authors get from a separate pass over the prompt alone). The chosen and rejected
  sequences of one prompt then get the same g_k(x). Without it the maps read `features`,
  the last token of the full (prompt, response) sequence, and the two sides of a pair get
  different user vectors: use the chosen side's, consistently (as `GeneralPreferenceHead`
  and `MixtureHead`).

  Parameterisation, from the authors' code (RamyaLab/pluralistic-alignment,
  src/pal_rm_b/learner.py, userLearner.py, connector.py, projector.py): f and every g_k
  are separate MLPs of one architecture from the LLM width to the preference width,
  with biases, hidden layers of the output width and (in their PAL-B configs,
  'mlp2-gelu-dropout0') two GELU hidden layers; g_k is applied to the prompt's hidden
  states, f to the response's; the user weights are a free [K] vector per user
  (initialised N(0, 1) there) passed through a softmax of temperature 1; the logit
  scale is a learnable log(1 / 0.07) clamped at exp <= 100 (the CLIP recipe), and the
  loss is the 2-way cross-entropy of (s_c, s_r), i.e. -log sigma(s_c - s_r). Here
  `num_hidden_layers` (default 0: one affine map, as `IdealPointHead`'s projection; 2
  for the authors' configs) sets the depth; hidden layers use exact GELU, as theirs.

  Init: layers followed by the GELU He normal, the output layers LeCun normal (unit-scale
  outputs on unit-RMS inputs), biases zero; the user table [num_users, K] zeros (every
  user starts at the uniform mix, as `IdealPointHead`); log_temperature
  `PAL_INIT_LOG_TEMPERATURE` = log(1 / 0.07) (tau = 14.29). Logical axes: the kernels
  that read the backbone's features ('embed', None) for f and (None, 'embed', None) for
  the K stacked maps [K, D, H]; everything else unsharded (None per axis; () for the
  scalar).

  Ids outside [0, num_users), negative ones included, cannot raise under jit; they give
  NaN `user_logits` (never another user's row): mask such rows in the loss
  (`pal_b_user_vector(..., mask=valid)` replaces them before computing).

  Args:
    d_model: D, the width of the pooled features.
    feature_dim: F, the width of the preference space.
    num_prototypes: K (default 2, as the spec and the authors' configs).
    num_users: rows of the user table (keyword-only, required).
    num_hidden_layers: hidden layers of width F in f and in each g_k (default 0).
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  References:
    Chen et al. (2024) PAL: pluralistic alignment framework for learning from
    heterogeneous preferences, arXiv:2406.08469 (PAL-B); Radford et al. (2021) Learning
    transferable visual models from natural language supervision (CLIP),
    arXiv:2103.00020 (the temperature).

  >>> head = PromptConditionedIdealPointHead(8, 3, num_users=10, rngs=nnx.Rngs(0))
  >>> out = head(jnp.ones((2, 8)), jnp.arange(16.0).reshape(2, 8),
  ...            user_ids=jnp.array([0, 7]))
  >>> out["features"].shape, out["user_prototype_features"].shape
  ((2, 3), (2, 2, 3))
  >>> out["user_logits"].shape, float(jnp.exp(out["log_temperature"]))  # tau = 1 / 0.07
  ((2, 2), 14.28...)
  >>> from rmjax.losses.pluralistic import pal_b_score, pal_b_user_vector
  >>> u = pal_b_user_vector(out["user_prototype_features"], out["user_logits"])
  >>> pal_b_score(out["features"], out["features"], u,
  ...             log_temperature=out["log_temperature"])  # a response against itself
  Array([0., 0.], dtype=float32)
  """

  def __init__(self, d_model: int, feature_dim: int, num_prototypes: int = 2, *,
               num_users: int, num_hidden_layers: int = 0, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    for name, value in (("d_model", d_model), ("feature_dim", feature_dim),
                        ("num_prototypes", num_prototypes), ("num_users", num_users)):
      _check_positive_int("PromptConditionedIdealPointHead", name, value)
    if (isinstance(num_hidden_layers, bool) or not isinstance(num_hidden_layers, int)
        or num_hidden_layers < 0):
      raise ValueError(
          "PromptConditionedIdealPointHead: num_hidden_layers must be a non-negative int, "
          f"got {num_hidden_layers!r}."
      )
    self.d_model = d_model
    self.feature_dim = feature_dim
    self.num_prototypes = num_prototypes
    self.num_users = num_users
    self.num_hidden_layers = num_hidden_layers
    param_dtype = jnp.dtype(param_dtype)
    kwargs = dict(param_dtype=param_dtype, rngs=rngs)
    widths = [d_model] + [feature_dim] * (num_hidden_layers + 1)
    # Layer l reads widths[l]; the first reads the backbone's features ('embed').
    self.response_projection = nnx.List([
        _Linear(widths[l], widths[l + 1], input_axis="embed" if l == 0 else None,
                kernel_init=(_RELU_INIT if l < num_hidden_layers
                             else nnx.initializers.lecun_normal()), **kwargs)
        for l in range(num_hidden_layers + 1)
    ])
    self.prototype_projections = nnx.List([
        _StackedLinear(num_prototypes, widths[l], widths[l + 1],
                       input_axis="embed" if l == 0 else None,
                       kernel_init=_stacked_init(2.0 if l < num_hidden_layers else 1.0),
                       **kwargs)
        for l in range(num_hidden_layers + 1)
    ])
    self.user_table = _param(rngs, nnx.initializers.zeros, (num_users, num_prototypes),
                             (None, None), param_dtype)
    self.log_temperature = _param(rngs, nnx.initializers.constant(PAL_INIT_LOG_TEMPERATURE),
                                  (), (), param_dtype)

  def user_logits(self, user_ids: jax.Array) -> jax.Array:
    """user_ids: [B] int -> [B, K] float32 rows of the table (NaN for unknown ids)."""
    return _user_table_rows(self.user_table, user_ids)

  def __call__(self, features: jax.Array, prompt_features: jax.Array | None = None,
               user_ids: jax.Array | None = None) -> dict[str, jax.Array]:
    """Projects the responses and the prompts, and looks the users up.

    Args:
      features: [B, D] pooled features of the (prompt, response) sequences.
      prompt_features: optional [B, D] hidden state of each prompt, read by the K maps
        g_k (default: `features`).
      user_ids: optional [B] int, the annotator of each row.

    Returns:
      {'features': [B, F], 'user_prototype_features': [B, K, F], 'log_temperature': []}
      plus, with user_ids, 'user_logits': [B, K]; float32.
    """
    check_features(features, self.d_model)
    prompt = _check_prompt_features(prompt_features, features)
    f, g = features, prompt
    for l, (layer_f, layer_g) in enumerate(zip(self.response_projection,
                                               self.prototype_projections)):
      f, g = layer_f(f), layer_g(g)
      if l < self.num_hidden_layers:
        f, g = jax.nn.gelu(f, approximate=False), jax.nn.gelu(g, approximate=False)
    out = {"features": f, "user_prototype_features": g,
           "log_temperature": self.log_temperature[...].astype(jnp.float32)}
    if user_ids is not None:
      _check_user_ids_batch(user_ids, features)
      out["user_logits"] = self.user_logits(user_ids)
    return out


class LatentConditionedHead(nnx.Module):
  """VPL reward conditioned on a user latent: r(y, z) = MLP([e_y; z]).

    h_1     = relu(e_y @ W_e + z @ W_z + b_1)      (a linear layer on [e_y; z], its kernel
                                                     split so that W_e keeps the 'embed' axis)
    h_{l+1} = relu(h_l @ W_l + b_l),  l = 1 .. num_hidden_layers - 1
    r       = h_L @ w_out + b_out                   [B]

  z comes from `PreferenceEncoder` (sampled with `rmjax.losses.pluralistic.reparameterize`
  in training, z = mean at evaluation); train with `rmjax.losses.pluralistic.vpl_loss`.

  Init: hidden layers He normal (ReLU), the output layer N(0, 1 / (H + 1)), biases zero.
  Logical axes: W_e ('embed', None); all others (None, None) / (None,).

  Args:
    d_model: D, the width of the pooled features e_y.
    latent_dim: Z, the width of the user latent z.
    hidden_dim: H, width of the hidden layers (default None: D).
    num_hidden_layers: L >= 1 (default 2).
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  References:
    Poddar et al. (2024) Personalizing reinforcement learning from human feedback with
    variational preference learning, arXiv:2408.10075.

  >>> head = LatentConditionedHead(8, 2, rngs=nnx.Rngs(0))
  >>> head(jnp.ones((3, 8)), jnp.zeros((3, 2))).shape
  (3,)
  """

  def __init__(self, d_model: int, latent_dim: int, *, hidden_dim: int | None = None,
               num_hidden_layers: int = 2, param_dtype=jnp.float32, rngs: nnx.Rngs):
    hidden_dim = d_model if hidden_dim is None else hidden_dim
    for name, value in (("d_model", d_model), ("latent_dim", latent_dim),
                        ("hidden_dim", hidden_dim), ("num_hidden_layers", num_hidden_layers)):
      _check_positive_int("LatentConditionedHead", name, value)
    self.d_model = d_model
    self.latent_dim = latent_dim
    kwargs = dict(param_dtype=param_dtype, rngs=rngs)
    self.input_features = _Linear(d_model, hidden_dim, input_axis="embed",
                                  kernel_init=_RELU_INIT, **kwargs)
    self.input_latent = _Linear(latent_dim, hidden_dim, input_axis=None,
                                kernel_init=_RELU_INIT, use_bias=False, **kwargs)
    self.hidden = nnx.List([
        _Linear(hidden_dim, hidden_dim, input_axis=None, kernel_init=_RELU_INIT, **kwargs)
        for _ in range(num_hidden_layers - 1)
    ])
    self.output = _Linear(hidden_dim, 1, input_axis=None,
                          kernel_init=_head_init(hidden_dim), **kwargs)

  def __call__(self, features: jax.Array, latent: jax.Array) -> jax.Array:
    """features: [B, D], latent: [B, Z] -> rewards [B] float32."""
    check_features(features, self.d_model)
    expected = (features.shape[0], self.latent_dim)
    if getattr(latent, "shape", None) != expected:
      raise ValueError(
          f"latent must have shape [B, Z] = {expected}, got "
          f"{getattr(latent, 'shape', None)}."
      )
    h = jax.nn.relu(self.input_features(features) + self.input_latent(latent))
    for layer in self.hidden:
      h = jax.nn.relu(layer(h))
    return self.output(h)[:, 0]


class PreferenceEncoder(nnx.Module):
  """VPL posterior encoder: a user's N annotated pairs -> q(z) = N(mean, exp(log_var)).

    p_n     = W_2 relu(e_c,n @ W_c + e_r,n @ W_r + b_1) + b_2    [U, N, H]  pair MLP on [e_c; e_r]
    a       = p + SelfAttention(RMSNorm(p), mask)                [U, N, H]  one pre-norm layer
    s       = sum_n mask_n a_n / max(sum_n mask_n, 1)            [U, H]     mean over valid pairs
    mean    = s @ W_mu + b_mu,  log_var = s @ W_lv + b_lv        [U, Z]

  The attention is multi-head, float32, without positional encoding, and attends only to
  valid pairs; with the mean pool this makes the posterior invariant to the order of the
  pairs. Masked pairs have their embeddings replaced by zeros first, so they change
  nothing (even inf or NaN junk). A user without any valid pair gets s = 0, hence
  mean = b_mu and log_var = b_lv.

  Init: layers followed by a ReLU He normal, others LeCun normal, biases zero; the
  attention output projection is scaled by 1/2 (one residual branch). Logical axes: the
  pair MLP's input kernels ('embed', None), everything else unsharded (None).

  Args:
    d_model: D, the width of the pair embeddings e_c, e_r.
    latent_dim: Z, the width of the latent.
    hidden_dim: H (default None: D); must be a multiple of num_heads.
    num_heads: attention heads (default 1).
    norm_eps: RMSNorm epsilon (default 1e-6).
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  References:
    Poddar et al. (2024) Personalizing reinforcement learning from human feedback with
    variational preference learning, arXiv:2408.10075.

  >>> encoder = PreferenceEncoder(8, 2, rngs=nnx.Rngs(0))
  >>> mask = jnp.ones((3, 4), bool)
  >>> mean, log_var = encoder(jnp.ones((3, 4, 8)), jnp.zeros((3, 4, 8)), mask)
  >>> mean.shape, log_var.shape
  ((3, 2), (3, 2))
  """

  def __init__(self, d_model: int, latent_dim: int, *, hidden_dim: int | None = None,
               num_heads: int = 1, norm_eps: float = 1e-6, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    hidden_dim = d_model if hidden_dim is None else hidden_dim
    for name, value in (("d_model", d_model), ("latent_dim", latent_dim),
                        ("hidden_dim", hidden_dim), ("num_heads", num_heads)):
      _check_positive_int("PreferenceEncoder", name, value)
    if hidden_dim % num_heads:
      raise ValueError(
          f"PreferenceEncoder: hidden_dim={hidden_dim} must be a multiple of "
          f"num_heads={num_heads}."
      )
    self.d_model = d_model
    self.latent_dim = latent_dim
    self.num_heads = num_heads
    param_dtype = jnp.dtype(param_dtype)
    kwargs = dict(param_dtype=param_dtype, rngs=rngs)
    lecun = nnx.initializers.lecun_normal()
    self.pair_chosen = _Linear(d_model, hidden_dim, input_axis="embed",
                               kernel_init=_RELU_INIT, **kwargs)
    self.pair_rejected = _Linear(d_model, hidden_dim, input_axis="embed",
                                 kernel_init=_RELU_INIT, use_bias=False, **kwargs)
    self.pair_output = _Linear(hidden_dim, hidden_dim, input_axis=None, kernel_init=lecun,
                               **kwargs)
    self.attention_norm = RMSNorm(hidden_dim, eps=norm_eps, param_dtype=param_dtype,
                                  rngs=rngs)
    head_dim = hidden_dim // num_heads
    qkv_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                 in_axis=0, out_axis=(1, 2))
    out_init = nnx.initializers.variance_scaling(0.5, "fan_in", "truncated_normal",
                                                 in_axis=(0, 1), out_axis=2)
    qkv_shape = (hidden_dim, num_heads, head_dim)
    self.query = _param(rngs, qkv_init, qkv_shape, (None, None, None), param_dtype)
    self.key = _param(rngs, qkv_init, qkv_shape, (None, None, None), param_dtype)
    self.value = _param(rngs, qkv_init, qkv_shape, (None, None, None), param_dtype)
    self.out = _param(rngs, out_init, (num_heads, head_dim, hidden_dim), (None, None, None),
                      param_dtype)
    self.mean = _Linear(hidden_dim, latent_dim, input_axis=None, kernel_init=lecun, **kwargs)
    self.log_var = _Linear(hidden_dim, latent_dim, input_axis=None, kernel_init=lecun,
                           **kwargs)

  def _attend(self, x: jax.Array, valid: jax.Array) -> jax.Array:
    """x: [U, N, H] float32, valid: [U, N] bool -> [U, N, H]; keys only at valid pairs."""
    q = jnp.einsum("und,dhk->unhk", x, self.query[...].astype(jnp.float32))
    k = jnp.einsum("und,dhk->unhk", x, self.key[...].astype(jnp.float32))
    v = jnp.einsum("und,dhk->unhk", x, self.value[...].astype(jnp.float32))
    logits = jnp.einsum("uqhk,ushk->uhqs", q, k) / math.sqrt(q.shape[-1])
    # Finite mask value: a user with no valid pair gets a uniform (finite) softmax.
    logits = jnp.where(valid[:, None, None, :], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1)
    context = jnp.einsum("uhqs,ushk->uqhk", probs, v)
    return jnp.einsum("unhk,hkd->und", context, self.out[...].astype(jnp.float32))

  def __call__(self, chosen_embeddings: jax.Array, rejected_embeddings: jax.Array,
               mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes each user's annotated pairs.

    Args:
      chosen_embeddings: [U, N, D] pooled embeddings e_c of the preferred responses.
      rejected_embeddings: [U, N, D] pooled embeddings e_r of the others.
      mask: [U, N] bool or int, nonzero at the user's real pairs (any pattern).

    Returns:
      (mean [U, Z], log_var [U, Z]), float32.
    """
    if (getattr(chosen_embeddings, "ndim", None) != 3
        or chosen_embeddings.shape[-1] != self.d_model):
      raise ValueError(
          f"chosen_embeddings must have shape [U, N, {self.d_model}], got "
          f"{getattr(chosen_embeddings, 'shape', None)}."
      )
    if getattr(rejected_embeddings, "shape", None) != chosen_embeddings.shape:
      raise ValueError(
          "rejected_embeddings must have the shape of chosen_embeddings "
          f"{tuple(chosen_embeddings.shape)}, got "
          f"{getattr(rejected_embeddings, 'shape', None)}."
      )
    if getattr(mask, "shape", None) != chosen_embeddings.shape[:2]:
      raise ValueError(
          f"mask must have shape [U, N] = {tuple(chosen_embeddings.shape[:2])}, got "
          f"{getattr(mask, 'shape', None)}."
      )
    if not (jnp.issubdtype(mask.dtype, jnp.integer) or mask.dtype == jnp.bool_):
      raise TypeError(f"mask must be bool or integer, got {mask.dtype}.")
    valid = mask.astype(jnp.bool_)
    chosen = jnp.where(valid[..., None], chosen_embeddings.astype(jnp.float32), 0.0)
    rejected = jnp.where(valid[..., None], rejected_embeddings.astype(jnp.float32), 0.0)
    pairs = self.pair_output(
        jax.nn.relu(self.pair_chosen(chosen) + self.pair_rejected(rejected)))
    pairs = pairs + self._attend(self.attention_norm(pairs), valid)
    weights = valid.astype(jnp.float32)[..., None]  # [U, N, 1]
    count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)  # [U, 1]
    pooled = jnp.sum(pairs * weights, axis=1) / count
    return self.mean(pooled), self.log_var(pooled)
