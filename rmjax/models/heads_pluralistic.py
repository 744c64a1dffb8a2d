"""Pluralistic reward heads: heads conditioned on a user (an annotator id or a latent).

Heads, their outputs, and the `rmjax.losses.pluralistic` functions that consume them:

* `IdealPointHead` (PAL-A): {'features': [B, F], 'prototypes': [K, F], 'user_logits':
  [B, K] (with user ids)}; `pal_a_user_point`, `pal_a_score`.
* `PromptConditionedIdealPointHead` (PAL-B): {'features': [B, F],
  'user_prototype_features': [B, K, F], 'log_temperature': [], 'user_logits': [B, K]
  (with user ids)}; `pal_b_user_vector`, `pal_b_score`.
* `LatentConditionedHead` (VPL): rewards r(y, z) [B]; `vpl_loss`. Its latent z comes
  from `rmjax.models.preference_encoder.PreferenceEncoder`.

`MixtureHead` (MiCRo) reads no user and lives with the heads that score a response on its
own, in `rmjax.models.heads_response`; the pattern every head follows is in
`rmjax.models.heads_shared`.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from rmjax.losses.pluralistic import PAL_INIT_LOG_TEMPERATURE
from rmjax.models.heads_shared import (
    _check_positive_int,
    _check_prompt_features,
    _head_init,
    _Linear,
    _RELU_INIT,
    check_features,
)
from rmjax.models.transformer import _param


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


def _with_user_logits(out: dict[str, jax.Array], head, user_ids, features: jax.Array
                      ) -> dict[str, jax.Array]:
  """A PAL head's outputs `out`, plus 'user_logits' [B, K] when `user_ids` are given."""
  if user_ids is not None:
    _check_user_ids_batch(user_ids, features)
    out["user_logits"] = head.user_logits(user_ids)
  return out


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

  call_inputs = ("user_ids",)

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
    return _with_user_logits(out, self, user_ids, features)


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

  call_inputs = ("prompt_features", "user_ids")

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
    return _with_user_logits(out, self, user_ids, features)


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

  call_inputs = ("latent",)

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
