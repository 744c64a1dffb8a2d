"""BERT-style bidirectional encoder backbone (Flax NNX), e.g. for all-MiniLM-L6-v2.

The encoder maps right-padded token ids, their padding mask and (optionally) segment ids
to hidden states:

  x = LayerNorm(word_emb[tokens] + position_emb[arange(L)] + token_type_emb[types])
  num_layers x:  x = LayerNorm(x + Attention(x));  x = LayerNorm(x + MLP(x))   (post-LN)
  -> hidden [B, L, D]

Attention is bidirectional (every real token sees every real token) with biased
query/key/value/output projections; the MLP is dense(D -> F) + GELU + dense(F -> D), both
with biases. This is the layout of Hugging Face's `BertModel` (`rmjax.checkpoints.hf_bert`
imports its checkpoints). Sentence embeddings in the sentence-transformers style are
`sentence_embedding(hidden, mask)`: the masked mean over tokens, L2-normalised.

Every parameter carries logical axis names from `rmjax.models.transformer.LOGICAL_AXES`
('vocab', 'embed', 'heads', 'kv', 'mlp' or None), so `rmjax.models.logical_partition_specs`
maps an encoder's `nnx.State` onto a mesh exactly as it does the decoder's. Biases follow
the output axis of their kernel (q/k/v: ('heads', 'kv'); MLP up: ('mlp',)), so they are
added to activations sharded the same way; the D-sized biases and LayerNorm parameters are
replicated, like the decoder's norm scales. The modules hold only `nnx.Param` state.

References:
  Devlin et al. (2019) BERT: pre-training of deep bidirectional transformers;
  Vaswani et al. (2017) Attention is all you need;
  Ba et al. (2016) Layer normalization;
  Hendrycks & Gimpel (2016) Gaussian error linear units (GELU);
  Reimers & Gurevych (2019) Sentence-BERT (mean pooling of token embeddings);
  Wang et al. (2020) MiniLM.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp

from rmjax.models.transformer import (
    _FLOAT_DTYPES,
    _MASK_VALUE,
    _param,
    check_tokens_and_mask,
    config_from_mapping,
)

Params = dict[str, Any]

# hidden_act name -> activation. "gelu" is the exact (erf) GELU of BERT; the tanh
# approximation goes by several names in Hugging Face configs.
ACTIVATIONS: Mapping[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def _check_positive_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(
        f"EncoderConfig.{name} must be a positive int, got {value!r}"
        f" ({type(value).__name__})."
    )


def _check_positive_float(name: str, value: Any) -> None:
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not math.isfinite(value) or value <= 0):
    raise ValueError(
        f"EncoderConfig.{name} must be a positive finite number, got {value!r}."
    )


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Hyper-parameters of the BERT-style encoder.

  The defaults are all-MiniLM-L6-v2's (22.7M parameters with the pooler off).

  Attributes:
    vocab_size: number of token ids (default 30522, BERT's uncased WordPiece vocabulary).
    max_len: number of learned positions, Hugging Face's `max_position_embeddings`
      (default 512); longer inputs are refused.
    type_vocab_size: number of token-type (segment) ids (default 2).
    d_model: width of the residual stream, `hidden_size` (default 384).
    num_layers: number of encoder blocks (default 6).
    num_heads: attention heads (default 12); `d_model` must be a multiple of it.
    d_ff: hidden width of the MLP, `intermediate_size` (default 1536).
    hidden_act: MLP activation, a key of `ACTIVATIONS` (default "gelu", exact erf GELU).
    norm_eps: LayerNorm epsilon, `layer_norm_eps` (default 1e-12).
    initializer_range: standard deviation of the N(0, s^2) weight init (default 0.02,
      BERT's); biases start at 0, LayerNorm at scale 1 / bias 0.
    pooler: whether the model carries BERT's pooler, tanh(dense(hidden[:, 0])) (default
      False: sentence-transformers models pool by the token mean and never use it).
    dtype: compute dtype name, "float32" (default), "bfloat16" or "float16". LayerNorm
      statistics and the attention softmax always run in float32.
    param_dtype: storage dtype of the parameters (default "float32").
  """

  vocab_size: int = 30522
  max_len: int = 512
  type_vocab_size: int = 2
  d_model: int = 384
  num_layers: int = 6
  num_heads: int = 12
  d_ff: int = 1536
  hidden_act: str = "gelu"
  norm_eps: float = 1e-12
  initializer_range: float = 0.02
  pooler: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab_size", "max_len", "type_vocab_size", "d_model", "num_layers",
                 "num_heads", "d_ff"):
      _check_positive_int(name, getattr(self, name))
    _check_positive_float("norm_eps", self.norm_eps)
    _check_positive_float("initializer_range", self.initializer_range)
    if not isinstance(self.pooler, bool):
      raise ValueError(f"EncoderConfig.pooler must be a bool, got {self.pooler!r}.")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(
          f"EncoderConfig.hidden_act must be one of {sorted(ACTIVATIONS)}, got "
          f"{self.hidden_act!r}."
      )
    for name in ("dtype", "param_dtype"):
      value = getattr(self, name)
      if value not in _FLOAT_DTYPES:
        raise ValueError(
            f"EncoderConfig.{name} must be one of {_FLOAT_DTYPES}, got {value!r}."
        )
    if self.d_model % self.num_heads:
      raise ValueError(
          f"EncoderConfig.d_model must be divisible by num_heads, got "
          f"d_model={self.d_model} and num_heads={self.num_heads}."
      )

  @property
  def head_dim(self) -> int:
    """Width of one attention head, `d_model // num_heads`."""
    return self.d_model // self.num_heads

  @property
  def compute_dtype(self) -> jnp.dtype:
    """`dtype` as a numpy dtype."""
    return jnp.dtype(self.dtype)

  @property
  def parameter_dtype(self) -> jnp.dtype:
    """`param_dtype` as a numpy dtype."""
    return jnp.dtype(self.param_dtype)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any] | Any) -> EncoderConfig:
    """Builds a config from a mapping (or an `ml_collections.ConfigDict`).

    Args:
      values: field names to values; missing fields take their defaults.

    Returns:
      The validated config.

    Raises:
      ValueError: on an unknown field name or an invalid value.

    >>> EncoderConfig.from_dict({"d_model": 64, "num_heads": 4}).head_dim
    16
    """
    return config_from_mapping(cls, values)

  def to_dict(self) -> dict[str, Any]:
    """The fields as a plain dict (`from_dict(c.to_dict()) == c`)."""
    return dataclasses.asdict(self)


class LayerNorm(nnx.Module):
  """Layer normalisation (Ba et al. 2016): (x - mean) / sqrt(var + eps) * scale + bias.

  Mean and (biased) variance over the last axis, computed in float32 whatever the
  compute dtype; the output is cast to `dtype`.

  Args:
    num_features: D, the size of the normalised last axis.
    eps: added to the variance (default 1e-12, BERT's).
    dtype: output dtype (default float32).
    param_dtype: dtype of `scale` (ones) and `bias` (zeros) (default float32).
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, num_features: int, *, eps: float = 1e-12, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.eps = eps
    self.dtype = jnp.dtype(dtype)
    pdt = jnp.dtype(param_dtype)
    self.scale = _param(rngs, nnx.initializers.ones, (num_features,), (None,), pdt)
    self.bias = _param(rngs, nnx.initializers.zeros, (num_features,), (None,), pdt)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., D] -> [..., D] in `dtype`."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
    y = centred * jax.lax.rsqrt(var + self.eps)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)


def _normal(config: EncoderConfig):
  return nnx.initializers.normal(stddev=config.initializer_range)


class EncoderSelfAttention(nnx.Module):
  """Bidirectional multi-head self-attention with biases and a key-padding mask.

  q = x Wq + bq (likewise k, v), per head h: softmax(q_h k_h^T / sqrt(K) + mask) v_h,
  out = concat_h(...) Wo + bo. Kernels: query/key/value [D, H, K] ('embed', 'heads',
  'kv'), their biases [H, K] ('heads', 'kv'); output [H, K, D] ('heads', 'kv', 'embed'),
  its bias [D] (replicated). Logits and softmax run in float32; masked keys get a large
  finite negative logit, so a query row whose keys are all masked (a padding row of an
  all-padding sequence) is uniform, never NaN.

  Args:
    config: the `EncoderConfig`.
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    d, h, k = config.d_model, config.num_heads, config.head_dim
    pdt = config.parameter_dtype
    self.config = config
    init, zeros = _normal(config), nnx.initializers.zeros
    for name in ("query", "key", "value"):
      setattr(self, name, _param(rngs, init, (d, h, k), ("embed", "heads", "kv"), pdt))
      setattr(self, f"{name}_bias", _param(rngs, zeros, (h, k), ("heads", "kv"), pdt))
    self.out = _param(rngs, init, (h, k, d), ("heads", "kv", "embed"), pdt)
    self.out_bias = _param(rngs, zeros, (d,), (None,), pdt)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x: [B, L, D] in the compute dtype, mask: [B, L] bool (True = real key) -> [B, L, D]."""
    cfg = self.config
    dt = cfg.compute_dtype

    def project(name):
      kernel = getattr(self, name)[...].astype(dt)
      bias = getattr(self, f"{name}_bias")[...].astype(dt)
      return jnp.einsum("bld,dhk->blhk", x, kernel) + bias

    q, k, v = project("query"), project("key"), project("value")
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k, preferred_element_type=jnp.float32)
    logits = logits * (1.0 / math.sqrt(cfg.head_dim))
    logits = jnp.where(mask[:, None, None, :], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    context = jnp.einsum("bhqs,bshk->bqhk", probs, v)
    out = jnp.einsum("blhk,hkd->bld", context, self.out[...].astype(dt))
    return out + self.out_bias[...].astype(dt)


class EncoderMLP(nnx.Module):
  """Feed-forward layer: act(x W_up + b_up) W_down + b_down (act = `config.hidden_act`).

  Kernels: up [D, F] ('embed', 'mlp') with bias [F] ('mlp',); down [F, D] ('mlp',
  'embed') with bias [D] (replicated).

  Args:
    config: the `EncoderConfig`.
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    d, f = config.d_model, config.d_ff
    pdt = config.parameter_dtype
    self.config = config
    init, zeros = _normal(config), nnx.initializers.zeros
    self.up = _param(rngs, init, (d, f), ("embed", "mlp"), pdt)
    self.up_bias = _param(rngs, zeros, (f,), ("mlp",), pdt)
    self.down = _param(rngs, init, (f, d), ("mlp", "embed"), pdt)
    self.down_bias = _param(rngs, zeros, (d,), (None,), pdt)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, L, D] -> [B, L, D], in the compute dtype."""
    dt = self.config.compute_dtype
    act = ACTIVATIONS[self.config.hidden_act]
    hidden = act(x @ self.up[...].astype(dt) + self.up_bias[...].astype(dt))
    return hidden @ self.down[...].astype(dt) + self.down_bias[...].astype(dt)


class EncoderBlock(nnx.Module):
  """Post-LN block (Vaswani et al. 2017; BERT): h = LN(x + attn(x)); out = LN(h + mlp(h)).

  Args:
    config: the `EncoderConfig`.
    rngs: `nnx.Rngs` with a `params` stream.
  """

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    norm_kwargs = dict(eps=config.norm_eps, dtype=config.compute_dtype,
                       param_dtype=config.parameter_dtype, rngs=rngs)
    self.attention = EncoderSelfAttention(config, rngs=rngs)
    self.attention_norm = LayerNorm(config.d_model, **norm_kwargs)
    self.mlp = EncoderMLP(config, rngs=rngs)
    self.mlp_norm = LayerNorm(config.d_model, **norm_kwargs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x: [B, L, D], mask: [B, L] bool -> [B, L, D]."""
    x = self.attention_norm(x + self.attention(x, mask))
    return self.mlp_norm(x + self.mlp(x))


class Encoder(nnx.Module):
  """BERT-style encoder: embeddings + embedding LayerNorm + post-LN blocks (+ pooler).

  Positions are arange(L) (absolute, learned), as in Hugging Face's `BertModel`: inputs
  must be right-padded (real tokens first) for a sequence's hidden states not to depend on
  how much padding follows it. Ids at padding positions are replaced by 0 before the
  lookup, so they never matter; ids of real tokens must lie in [0, vocab_size) (and
  token types in [0, type_vocab_size)): an out-of-range id cannot raise under jit and
  yields NaN hidden states, never a silently clamped embedding.

  Parameters: `word_embeddings` [V, D] ('vocab', 'embed'), `position_embeddings`
  [max_len, D] and `token_type_embeddings` [T, D] (None, 'embed'), `embedding_norm`,
  `layers`, and with `config.pooler` a `pooler` [D, D] ('embed', None) kernel and
  [D] bias.

  Args:
    config: the `EncoderConfig`.
    rngs: `nnx.Rngs` with a `params` stream.

  Shapes only (`jax.eval_shape`, no compilation):

  >>> config = EncoderConfig(vocab_size=50, max_len=16, d_model=8, num_layers=1,
  ...                        num_heads=2, d_ff=16)
  >>> graphdef, params = jax.eval_shape(lambda: init_encoder(config, jax.random.key(0)))
  >>> apply = make_hidden_apply(graphdef)
  >>> jax.eval_shape(apply, params, jnp.array([[1, 5, 7, 0]]),
  ...                jnp.array([[1, 1, 1, 0]])).shape
  (1, 4, 8)
  """

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, EncoderConfig):
      raise TypeError(f"config must be an EncoderConfig, got {type(config).__name__}.")
    self.config = config
    d, pdt = config.d_model, config.parameter_dtype
    init = _normal(config)
    self.word_embeddings = _param(rngs, init, (config.vocab_size, d), ("vocab", "embed"),
                                  pdt)
    self.position_embeddings = _param(rngs, init, (config.max_len, d), (None, "embed"),
                                      pdt)
    self.token_type_embeddings = _param(rngs, init, (config.type_vocab_size, d),
                                        (None, "embed"), pdt)
    self.embedding_norm = LayerNorm(d, eps=config.norm_eps, dtype=config.compute_dtype,
                                    param_dtype=pdt, rngs=rngs)
    self.layers = nnx.List([EncoderBlock(config, rngs=rngs)
                            for _ in range(config.num_layers)])
    if config.pooler:
      self.pooler = _param(rngs, init, (d, d), ("embed", None), pdt)
      self.pooler_bias = _param(rngs, nnx.initializers.zeros, (d,), (None,), pdt)

  def __call__(self, tokens: jax.Array, mask: jax.Array,
               token_type_ids: jax.Array | None = None) -> jax.Array:
    """Hidden states of every position.

    Args:
      tokens: [B, L] integer token ids, L <= config.max_len, right-padded.
      mask: [B, L] bool or int, nonzero at real tokens.
      token_type_ids: optional [B, L] integer segment ids (default all 0).

    Returns:
      hidden: [B, L, d_model] in the compute dtype (Hugging Face's `last_hidden_state`);
      rows at padding positions are finite but meaningless.
    """
    return self.hidden_before_layer(tokens, mask, self.config.num_layers, token_type_ids)

  def hidden_before_layer(self, tokens: jax.Array, mask: jax.Array, layer: int,
                          token_type_ids: jax.Array | None = None) -> jax.Array:
    """The hidden states entering block `layer`: the normed embeddings, then blocks
    [0, layer). `layer = num_layers` is `__call__`'s output (BERT blocks end in their own
    LayerNorm). Cached once, it lets a reward model train only the last blocks.

    Args:
      tokens, mask, token_type_ids: as in `__call__`.
      layer: an int in [0, num_layers].

    Returns:
      [B, L, d_model].
    """
    cfg = self.config
    if isinstance(layer, bool) or not isinstance(layer, int) or not (
        0 <= layer <= cfg.num_layers):
      raise ValueError(f"layer must be an int in [0, {cfg.num_layers}], got {layer!r}.")
    mask = check_tokens_and_mask(tokens, mask, cfg.max_len)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(tokens)
    else:
      if not jnp.issubdtype(getattr(token_type_ids, "dtype", None), jnp.integer):
        raise TypeError(
            "token_type_ids must have an integer dtype, got "
            f"{getattr(token_type_ids, 'dtype', None)}."
        )
      if token_type_ids.shape != tokens.shape:
        raise ValueError(
            f"token_type_ids must have the shape of tokens {tuple(tokens.shape)}, got "
            f"{token_type_ids.shape}."
        )
    dt = cfg.compute_dtype
    tokens = jnp.where(mask, tokens, 0)
    token_type_ids = jnp.where(mask, token_type_ids, 0)
    positions = jnp.arange(tokens.shape[1])
    x = (jnp.take(self.word_embeddings[...], tokens, axis=0, mode="fill")
         .astype(jnp.float32)
         + self.position_embeddings[...][positions].astype(jnp.float32)
         + jnp.take(self.token_type_embeddings[...], token_type_ids, axis=0, mode="fill")
         .astype(jnp.float32))
    x = self.embedding_norm(x)
    for block in self.layers[:layer]:
      x = block(x, mask)
    return x

  def pool(self, hidden: jax.Array) -> jax.Array:
    """BERT's pooler: tanh(hidden[:, 0] W + b), the first ([CLS]) token's features.

    Args:
      hidden: [B, L, D] hidden states from `__call__`.

    Returns:
      [B, D] in the compute dtype.

    Raises:
      ValueError: the config has `pooler=False`.
    """
    if not self.config.pooler:
      raise ValueError(
          "Encoder.pool needs EncoderConfig.pooler=True (the pooler weights were not "
          "built); use mean_pool / sentence_embedding for sentence-transformers models."
      )
    dt = self.config.compute_dtype
    first = hidden[:, 0].astype(dt)
    return jnp.tanh(first @ self.pooler[...].astype(dt) + self.pooler_bias[...].astype(dt))


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked mean over tokens (Reimers & Gurevych 2019, sentence-transformers' mean pooling).

  pooled_b = sum_l mask_bl hidden_bl / max(sum_l mask_bl, 1e-9), in float32.

  Args:
    hidden: [B, L, D] token features.
    mask: [B, L] bool or int, nonzero at real tokens.

  Returns:
    [B, D] float32; a row with no real token is all zeros (sentence-transformers clamps
    the count at 1e-9 the same way).

  >>> mean_pool(jnp.array([[[1.0], [3.0], [100.0]]]), jnp.array([[1, 1, 0]]))
  Array([[2.]], dtype=float32)
  """
  if getattr(hidden, "ndim", None) != 3:
    raise ValueError(
        f"hidden must have shape [B, L, D], got {getattr(hidden, 'shape', None)}."
    )
  if getattr(mask, "shape", None) != hidden.shape[:2]:
    raise ValueError(
        f"mask must have shape [B, L] = {tuple(hidden.shape[:2])} (hidden's first two "
        f"axes), got {getattr(mask, 'shape', None)}."
    )
  weights = (mask != 0).astype(jnp.float32)[..., None]
  total = jnp.sum(jnp.where(weights > 0, hidden.astype(jnp.float32), 0.0), axis=1)
  count = jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
  return total / count


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||_2, eps) along the last axis, in float32 (`torch.nn.functional.normalize`).

  Args:
    x: [..., D].
    eps: floor of the norm (default 1e-12), so a zero vector stays zero.

  Returns:
    [..., D] float32 with unit norm (or zero).

  >>> l2_normalize(jnp.array([3.0, 4.0]))
  Array([0.6, 0.8], dtype=float32)
  """
  x = jnp.asarray(x, jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def sentence_embedding(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Sentence-transformers embedding: `l2_normalize(mean_pool(hidden, mask))`.

  The rule of all-MiniLM-L6-v2 (its modules.json: Transformer -> Pooling with
  `pooling_mode_mean_tokens` -> Normalize), so the dot product of two embeddings is
  their cosine similarity.

  Args:
    hidden: [B, L, D] encoder hidden states.
    mask: [B, L] bool or int, nonzero at real tokens.

  Returns:
    [B, D] float32 unit vectors.
  """
  return l2_normalize(mean_pool(hidden, mask))


def init_encoder(config: EncoderConfig, rng: jax.Array) -> tuple[nnx.GraphDef, Params]:
  """Builds a randomly initialised encoder and splits it into (graphdef, params).

  Args:
    config: the `EncoderConfig`.
    rng: a `jax.random` key.

  Returns:
    graphdef (static) and params, a plain nested dict of arrays (`nnx.to_pure_dict` of
    the `nnx.Param` state). Works under `jax.jit` (with `out_shardings`) and
    `jax.eval_shape`.
  """
  graphdef, state = nnx.split(Encoder(config, rngs=nnx.Rngs(params=rng)), nnx.Param)
  return graphdef, nnx.to_pure_dict(state)


def abstract_encoder_state(config: EncoderConfig) -> nnx.State:
  """Abstract `nnx.State` of the encoder's parameters, with their logical axis names.

  Built with `nnx.eval_shape` (no FLOPs, no memory); feed it to
  `rmjax.models.logical_partition_specs` for the parameters' `PartitionSpec`s.
  """
  model = nnx.eval_shape(lambda: Encoder(config, rngs=nnx.Rngs(0)))
  return nnx.split(model, nnx.Param)[1]


def make_hidden_apply(
    graphdef: nnx.GraphDef,
) -> Callable[..., jax.Array]:
  """Pure forward of an encoder: apply(params, tokens, mask, token_type_ids=None) -> hidden.

  Args:
    graphdef: from `init_encoder` or `rmjax.checkpoints.hf_bert.load_encoder_params`.

  Returns:
    apply(params, tokens [B, L], mask [B, L], token_type_ids=None) -> [B, L, D]; the
    module is rebuilt with `nnx.merge` inside, so apply works under jit and grad.
  """

  def apply(params: Params, tokens: jax.Array, mask: jax.Array,
            token_type_ids: jax.Array | None = None) -> jax.Array:
    return nnx.merge(graphdef, params)(tokens, mask, token_type_ids)

  return apply
