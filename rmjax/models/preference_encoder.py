"""VPL's preference encoder: the posterior over a user's latent from their annotated pairs.

`PreferenceEncoder` is not a head: it maps a user's pairs to (mean [U, Z], log_var [U, Z])
for `rmjax.losses.pluralistic.reparameterize` and `vpl_loss`; the sampled latent
conditions `rmjax.models.heads_pluralistic.LatentConditionedHead`.
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp

from rmjax.models.heads_shared import _check_positive_int, _Linear, _RELU_INIT
from rmjax.models.transformer import _MASK_VALUE, RMSNorm, _param


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
