"""Reward heads that score a response on its own, without a user.

Heads, their outputs, and the `rmjax.losses` functions that consume them:

* `ScalarHead`: rewards [B, num_outputs]; `bradley_terry_loss` and co.
* `MultiAttributeHead`: attribute scores [B, A]; `attribute_regression_loss`.
* `GeneralPreferenceHead`: {'embedding': [B, 2k], 'block_scales': [B, k] (if gated)};
  `general_preference.general_preference_loss`.
* `MixtureHead`: {'rewards': [B, K], 'router_logits': [B, K]};
  `pluralistic.mixture_bradley_terry_loss`. MiCRo's mixture serves pluralistic
  preferences, but the head reads no user: K rewards and a router over the prompt.

Heads conditioned on a user (an id or a latent) are in `rmjax.models.heads_pluralistic`;
the pattern every head follows, and pooling, in `rmjax.models.heads_shared`.
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp

from rmjax.models.heads_shared import (
    _check_positive_int,
    _check_prompt_features,
    _head_init,
    _Linear,
    check_features,
)
from rmjax.models.transformer import _param

# Names of the GPM block-scale gates; see `GeneralPreferenceHead`.
GPM_SCALE_GATES = ("softmax", "scaled_softmax")


def _affine_params(rngs: nnx.Rngs, d_model: int, width: int, param_dtype
                   ) -> tuple[nnx.Param, nnx.Param]:
  """`ScalarHead`'s params: kernel [D, width] ('embed', None) ~ N(0, 1 / (D + 1)), bias zeros."""
  param_dtype = jnp.dtype(param_dtype)
  kernel = _param(rngs, _head_init(d_model), (d_model, width), ("embed", None), param_dtype)
  bias = _param(rngs, nnx.initializers.zeros, (width,), (None,), param_dtype)
  return kernel, bias


def _affine(features: jax.Array, d_model: int, kernel: nnx.Param, bias: nnx.Param
            ) -> jax.Array:
  """features: [B, D] -> features @ kernel + bias, float32."""
  check_features(features, d_model)
  return (features.astype(jnp.float32) @ kernel[...].astype(jnp.float32)
          + bias[...].astype(jnp.float32))


class ScalarHead(nnx.Module):
  """Linear reward head: rewards = features @ kernel + bias.

  The kernel [D, num_outputs] (logical axes ('embed', None)) is initialised
  N(0, 1 / (D + 1)) so that initial rewards have unit scale on unit-RMS features
  (Stiennon et al. 2020); the bias [num_outputs] starts at zero. With use_bias=False
  there is no bias parameter (the layout of Hugging Face's `score` layer in
  `*ForSequenceClassification`).

  Args:
    d_model: D, the width of the pooled features.
    num_outputs: rewards per sequence (default 1; more for multi-attribute scores).
    use_bias: whether the head has a bias (default True).
    param_dtype: parameter dtype (default float32).
    rngs: `nnx.Rngs` with a `params` stream.

  >>> head = ScalarHead(4, rngs=nnx.Rngs(0))
  >>> head(jnp.ones((3, 4))).shape
  (3, 1)
  """

  call_inputs = ()

  def __init__(self, d_model: int, num_outputs: int = 1, *, use_bias: bool = True,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    _check_positive_int("ScalarHead", "d_model", d_model)
    _check_positive_int("ScalarHead", "num_outputs", num_outputs)
    if not isinstance(use_bias, bool):
      raise TypeError(f"ScalarHead: use_bias must be a bool, got {use_bias!r}.")
    self.d_model = d_model
    self.num_outputs = num_outputs
    self.use_bias = use_bias
    self.kernel, bias = _affine_params(rngs, d_model, num_outputs, param_dtype)
    if use_bias:
      self.bias = bias

  def __call__(self, features: jax.Array) -> jax.Array:
    """features: [B, D] -> [B, num_outputs] float32."""
    if self.use_bias:
      return _affine(features, self.d_model, self.kernel, self.bias)
    check_features(features, self.d_model)
    return features.astype(jnp.float32) @ self.kernel[...].astype(jnp.float32)


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

  call_inputs = ()

  def __init__(self, d_model: int, num_attributes: int = 5, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    _check_positive_int("MultiAttributeHead", "d_model", d_model)
    _check_positive_int("MultiAttributeHead", "num_attributes", num_attributes)
    self.d_model = d_model
    self.num_attributes = num_attributes
    self.kernel, self.bias = _affine_params(rngs, d_model, num_attributes, param_dtype)

  def __call__(self, features: jax.Array) -> jax.Array:
    """features: [B, D] -> predictions [B, num_attributes] float32."""
    return _affine(features, self.d_model, self.kernel, self.bias)


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

  call_inputs = ("prompt_features",)

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

  call_inputs = ("prompt_features",)

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
