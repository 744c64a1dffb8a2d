"""Reward model (backbone + head) and its functional surface.

The trainer never touches modules. It works with

* `init_reward_model(config, rng, head=..., head_config=...) -> (graphdef, params)`:
  params is a plain nested dict of arrays (`nnx.to_pure_dict` of the `nnx.Param` state),
  the most portable pytree for optax, orbax (save/restore, including into target
  shardings) and `jax.tree` utilities. The head is chosen by name from `HEADS` (scalar,
  multi-attribute, GPM, mixture, ideal point (PAL-A), prompt-conditioned ideal point
  (PAL-B), VPL), so the same backbone serves every loss;
* `make_reward_apply(graphdef) -> apply(params, batch) -> rewards [B]` (or the head's
  dict of outputs), pure, usable under `jax.jit`, `jax.grad` and `jax.vmap`;
  `make_embed_apply` (pooled features) and `make_encoder_apply` (VPL's encoder) beside it;
* `abstract_params`, `abstract_param_state` and `logical_partition_specs` to initialise
  straight into shardings over a ('data', 'fsdp', 'tensor') mesh:

    specs = logical_partition_specs(abstract_param_state(config), rules)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    params = jax.jit(lambda k: init_reward_model(config, k)[1],
                     out_shardings=shardings)(rng)

* `count_params` and `flops_per_token` for throughput / MFU reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import inspect
import math
from typing import Any, Callable

from flax import nnx
import flax.linen
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from rmjax.models.heads_pluralistic import (
    IdealPointHead,
    LatentConditionedHead,
    PromptConditionedIdealPointHead,
)
from rmjax.models.heads_response import (
    GeneralPreferenceHead,
    MixtureHead,
    MultiAttributeHead,
    ScalarHead,
)
from rmjax.models.heads_shared import gather_last_token
from rmjax.models.preference_encoder import PreferenceEncoder
from rmjax.models.transformer import (
    LOGICAL_AXES,
    Transformer,
    TransformerConfig,
    check_token_mask,
    check_tokens_and_mask,
)

Params = dict[str, Any]

# Logical parameter axis -> mesh axis ('data', 'fsdp', 'tensor') or None (replicated).
# Weights are sharded over 'fsdp' along the model width and over 'tensor' along heads
# and the MLP hidden width (Megatron-style). The vocabulary stays replicated: the byte
# vocabulary (259) divides no mesh axis size and its table is small; with a large,
# divisible vocabulary, ('vocab', 'tensor') is the usual choice.
DEFAULT_LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("vocab", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
)


# The head registry: name -> head class. Every head is built as
# cls(config.d_model, **head_config, param_dtype=config.parameter_dtype, rngs=rngs).
HEADS: Mapping[str, type[nnx.Module]] = {
    "scalar": ScalarHead,
    "multi_attribute": MultiAttributeHead,
    "general_preference": GeneralPreferenceHead,
    "mixture": MixtureHead,
    "ideal_point": IdealPointHead,
    "prompt_conditioned_ideal_point": PromptConditionedIdealPointHead,
    "latent_conditioned": LatentConditionedHead,
}

# Head constructor arguments that RewardModel sets itself.
_RESERVED_HEAD_ARGS = ("d_model", "param_dtype", "rngs")


def _head_kwargs(head: Any, head_config: Any, num_outputs: Any) -> tuple[dict, dict]:
  """Validates (head, head_config, num_outputs); returns (head kwargs, encoder kwargs)."""
  if not isinstance(head, str) or head not in HEADS:
    raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}.")
  if head_config is None:
    head_config = {}
  if not isinstance(head_config, Mapping):
    if hasattr(head_config, "to_dict"):  # an ml_collections.ConfigDict
      head_config = head_config.to_dict()
    else:
      raise TypeError(
          f"head_config must be a mapping of {head!r} head arguments, got "
          f"{type(head_config).__name__}."
      )
  kwargs = dict(head_config)
  encoder_kwargs = {}
  if head == "latent_conditioned" and "encoder" in kwargs:
    encoder_kwargs = kwargs.pop("encoder")
    if hasattr(encoder_kwargs, "to_dict") and not isinstance(encoder_kwargs, Mapping):
      encoder_kwargs = encoder_kwargs.to_dict()
    if not isinstance(encoder_kwargs, Mapping):
      raise TypeError(
          "head_config['encoder'] must be a mapping of PreferenceEncoder arguments, got "
          f"{type(encoder_kwargs).__name__}."
      )
    encoder_kwargs = dict(encoder_kwargs)
  cls = HEADS[head]
  accepted = [name for name in inspect.signature(cls.__init__).parameters
              if name not in ("self",) + _RESERVED_HEAD_ARGS]
  if head == "latent_conditioned":
    accepted.append("encoder")
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(
        f"head_config has unknown key(s) {unknown} for head {head!r}; expected a subset "
        f"of {sorted(accepted)}."
    )
  if head == "scalar":
    if "num_outputs" in kwargs and num_outputs != 1:
      raise ValueError(
          "num_outputs is given both as an argument and in head_config; give it once.")
    kwargs.setdefault("num_outputs", num_outputs)
  elif num_outputs != 1:
    raise ValueError(
        f"num_outputs={num_outputs!r} applies to head='scalar' only; size the {head!r} "
        "head through head_config."
    )
  if encoder_kwargs:
    encoder_accepted = [name for name in inspect.signature(PreferenceEncoder.__init__)
                        .parameters if name not in ("self", "latent_dim")
                        + _RESERVED_HEAD_ARGS]
    unknown = sorted(set(encoder_kwargs) - set(encoder_accepted))
    if unknown:
      raise ValueError(
          f"head_config['encoder'] has unknown key(s) {unknown}; expected a subset of "
          f"{sorted(encoder_accepted)} (latent_dim is the head's)."
      )
  return kwargs, encoder_kwargs


class RewardModel(nnx.Module):
  """Decoder-only transformer backbone + a head on the last real token.

  outputs = head(gather_last_token(backbone(tokens, mask), mask), ...)

  The head is picked by name from `HEADS` and built with `head_config` as keyword
  arguments (its `d_model` and `param_dtype` come from the config):

  * "scalar" (default): num_outputs=1 -> rewards [B] float32 ([B, n] if n > 1);
  * "multi_attribute": num_attributes=5 -> [B, A];
  * "general_preference": embedding_dim=4, prompt_dependent_scales=False,
    scale_gate="softmax" -> {'embedding': [B, 2k], 'block_scales': [B, k] if gated};
  * "mixture": num_components=2 -> {'rewards': [B, K], 'router_logits': [B, K]};
  * "ideal_point": feature_dim, num_prototypes=2, num_users -> {'features': [B, F],
    'prototypes': [K, F], 'user_logits': [B, K] when user_ids are given} (PAL-A);
  * "prompt_conditioned_ideal_point": feature_dim, num_prototypes=2, num_users,
    num_hidden_layers=0 -> {'features': [B, F], 'user_prototype_features': [B, K, F],
    'log_temperature': [], 'user_logits': [B, K] when user_ids are given} (PAL-B);
  * "latent_conditioned": latent_dim, hidden_dim=None, num_hidden_layers=2,
    encoder={PreferenceEncoder kwargs} -> rewards r(y, z) [B] (needs `latent`).

  "latent_conditioned" (VPL) also builds `self.encoder`, a `PreferenceEncoder` with the
  same latent_dim (its other arguments from head_config['encoder']), so the encoder and
  the reward train in one params pytree; see `encode_preferences`.

  Training code uses the functional surface (`init_reward_model`, `make_reward_apply`)
  rather than this module directly.

  Args:
    config: the backbone's `TransformerConfig`.
    num_outputs: rewards per sequence of the "scalar" head (default 1).
    head: a name in `HEADS` (default "scalar").
    head_config: optional mapping of the head's keyword arguments (default None: {}).
    rngs: `nnx.Rngs` with a `params` stream.

  Raises:
    ValueError: an unknown head, an unknown head_config key, or num_outputs != 1 with a
      head other than "scalar".
  """

  def __init__(self, config: TransformerConfig, *, num_outputs: int = 1,
               head: str = "scalar", head_config: Mapping[str, Any] | None = None,
               rngs: nnx.Rngs):
    kwargs, encoder_kwargs = _head_kwargs(head, head_config, num_outputs)
    self.head_name = head
    self.backbone = Transformer(config, rngs=rngs)
    self.head = HEADS[head](config.d_model, **kwargs,
                            param_dtype=config.parameter_dtype, rngs=rngs)
    self.encoder = (PreferenceEncoder(config.d_model, self.head.latent_dim,
                                      **encoder_kwargs,
                                      param_dtype=config.parameter_dtype, rngs=rngs)
                    if head == "latent_conditioned" else None)

  def embed(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Pooled features: the hidden state of the last real token.

    Args:
      tokens: [B, L] integer token ids.
      mask: [B, L] bool or int, nonzero at real tokens (right or left padding).

    Returns:
      [B, d_model] float32.
    """
    mask = check_tokens_and_mask(tokens, mask)
    return gather_last_token(self.backbone(tokens, mask), mask).astype(jnp.float32)

  def encode_preferences(self, chosen_embeddings: jax.Array,
                         rejected_embeddings: jax.Array, mask: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
    """VPL posterior (mean [U, Z], log_var [U, Z]) of users' annotated pairs.

    Args are those of `PreferenceEncoder.__call__` ([U, N, D], [U, N, D], [U, N]); the
    embeddings are typically `embed` of the pairs' sequences. Only for
    head="latent_conditioned".
    """
    if self.encoder is None:
      raise ValueError(
          f"encode_preferences needs head='latent_conditioned'; this model's head is "
          f"{self.head_name!r}."
      )
    return self.encoder(chosen_embeddings, rejected_embeddings, mask)

  def __call__(self, tokens: jax.Array, mask: jax.Array, *,
               prompt_mask: jax.Array | None = None, latent: jax.Array | None = None,
               user_ids: jax.Array | None = None) -> Any:
    """Scores padded sequences (right or left padding).

    Args:
      tokens: [B, L] integer token ids.
      mask: [B, L] bool or int, nonzero at real tokens (a contiguous run of each row:
        right or left padding; at least one real token).
      prompt_mask: optional [B, L] bool or int, nonzero at the prompt's tokens (a
        prefix of each row, inside `mask`). Read by the heads that condition on the
        prompt ("general_preference", "mixture", "prompt_conditioned_ideal_point") from
        the hidden state of the last prompt token, exactly the prompt's hidden state
        since the backbone is causal; without it they read the last real token.
        Ignored by the other heads.
      latent: [B, Z] user latents z; required by "latent_conditioned", ignored by the
        other heads.
      user_ids: optional [B] int annotators, read by "ideal_point" and
        "prompt_conditioned_ideal_point", ignored by the other heads.

    Returns:
      The head's outputs (see the class docstring): for "scalar", rewards [B] float32,
      or [B, num_outputs] when num_outputs > 1.
    """
    mask = check_tokens_and_mask(tokens, mask)
    hidden = self.backbone(tokens, mask)
    features = gather_last_token(hidden, mask)
    if self.head_name == "scalar":
      rewards = self.head(features)
      if self.head.num_outputs == 1:
        rewards = rewards[:, 0]
      return rewards
    # Each head names the inputs it reads beyond the features (`call_inputs`; none if
    # the class does not say).
    inputs = {}
    for name in getattr(self.head, "call_inputs", ()):
      if name == "prompt_features":
        inputs[name] = (None if prompt_mask is None else gather_last_token(
            hidden, check_token_mask(prompt_mask, tokens, "prompt_mask")))
      elif name == "user_ids":
        inputs[name] = user_ids
      elif name == "latent":
        if latent is None:
          raise KeyError(
              f"head={self.head_name!r} needs the user latent: pass latent (batch key "
              "'latent') of shape [B, Z].")
        inputs[name] = latent
      else:
        raise ValueError(f"head {self.head_name!r} reads an unknown input {name!r}.")
    return self.head(features, **inputs)


def _check_config(config: Any) -> None:
  if not isinstance(config, TransformerConfig):
    raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}.")


def init_reward_model(
    config: TransformerConfig, rng: jax.Array, *, num_outputs: int = 1,
    head: str = "scalar", head_config: Mapping[str, Any] | None = None,
) -> tuple[nnx.GraphDef, Params]:
  """Builds a `RewardModel` and splits it into a static graphdef and pure params.

  Args:
    config: the backbone's `TransformerConfig`.
    rng: a `jax.random` key for the parameter initialisers.
    num_outputs: rewards per sequence of the "scalar" head (default 1).
    head: a name in `HEADS` (default "scalar"); see `RewardModel`.
    head_config: optional mapping of the head's keyword arguments (default None).

  Returns:
    (graphdef, params): graphdef is static (hashable; keep it out of the train state);
    params is a nested dict of arrays (`nnx.to_pure_dict` of
    `nnx.split(model, nnx.Param)`; the model has no other state). Works under
    `jax.jit` (with `out_shardings`) and `jax.eval_shape`.

  >>> graphdef, params = init_reward_model(TransformerConfig(d_model=16, num_heads=2),
  ...                                      jax.random.key(0))
  >>> sorted(params)
  ['backbone', 'head']
  """
  _check_config(config)
  model = RewardModel(config, num_outputs=num_outputs, head=head, head_config=head_config,
                      rngs=nnx.Rngs(params=rng))
  graphdef, state = nnx.split(model, nnx.Param)
  return graphdef, nnx.to_pure_dict(state)


def _check_graphdef(graphdef: Any) -> None:
  if not isinstance(graphdef, nnx.GraphDef):
    raise TypeError(
        "graphdef must be the nnx.GraphDef returned by init_reward_model, got "
        f"{type(graphdef).__name__}."
    )


def _check_batch(batch: Any) -> None:
  if not isinstance(batch, Mapping):
    raise TypeError(
        f"batch must be a mapping with 'tokens' and 'mask', got {type(batch).__name__}.")
  missing = [key for key in ("tokens", "mask") if key not in batch]
  if missing:
    raise KeyError(
        f"batch is missing {missing}; expected keys 'tokens' [B, L] and 'mask' [B, L], "
        f"got {sorted(batch)}."
    )


def make_reward_apply(
    graphdef: nnx.GraphDef,
) -> Callable[[Params, Mapping[str, jax.Array]], jax.Array]:
  """Pure apply function of a reward model.

  Args:
    graphdef: the first output of `init_reward_model`.

  Returns:
    apply(params, batch) -> rewards: params as returned by `init_reward_model` (a pure
    dict; an `nnx.State` of the same parameters works too); batch a mapping with
    'tokens' [B, L] int and 'mask' [B, L] bool/int, and optionally 'prompt_mask'
    [B, L], 'latent' [B, Z] and 'user_ids' [B], passed to the model when present (see
    `RewardModel.__call__`; the heads that do not read them ignore them, as any other
    key); rewards [B] float32 ([B, num_outputs] for multi-output scalar heads), or the
    head's outputs (an array or a dict of arrays, see `RewardModel`). The model is
    rebuilt with `nnx.merge` inside, so apply is pure and differentiable w.r.t. params.

  >>> graphdef, params = init_reward_model(TransformerConfig(d_model=16, num_heads=2),
  ...                                      jax.random.key(0))
  >>> apply = jax.jit(make_reward_apply(graphdef))
  >>> batch = {"tokens": jnp.ones((2, 4), jnp.int32), "mask": jnp.ones((2, 4), bool)}
  >>> apply(params, batch).dtype
  dtype('float32')
  """
  _check_graphdef(graphdef)

  def apply(params: Params, batch: Mapping[str, jax.Array]) -> Any:
    """params: pure dict; batch: {'tokens': [B, L], 'mask': [B, L]} -> rewards [B]."""
    _check_batch(batch)
    model = nnx.merge(graphdef, params)
    return model(batch["tokens"], batch["mask"], prompt_mask=batch.get("prompt_mask"),
                 latent=batch.get("latent"), user_ids=batch.get("user_ids"))

  return apply


def make_embed_apply(
    graphdef: nnx.GraphDef,
) -> Callable[[Params, Mapping[str, jax.Array]], jax.Array]:
  """Pure function of the pooled features (the input of every head).

  Args:
    graphdef: the first output of `init_reward_model` (any head).

  Returns:
    embed(params, batch) -> [B, d_model] float32: the backbone's hidden state at the last
    real token of batch['tokens'] / batch['mask'] (`RewardModel.embed`). Use it for
    representation losses (e.g. contrastive regularisers) and VPL's pair embeddings.

  >>> graphdef, params = init_reward_model(TransformerConfig(d_model=16, num_heads=2),
  ...                                      jax.random.key(0))
  >>> batch = {"tokens": jnp.ones((2, 4), jnp.int32), "mask": jnp.ones((2, 4), bool)}
  >>> make_embed_apply(graphdef)(params, batch).shape
  (2, 16)
  """
  _check_graphdef(graphdef)

  def embed(params: Params, batch: Mapping[str, jax.Array]) -> jax.Array:
    _check_batch(batch)
    return nnx.merge(graphdef, params).embed(batch["tokens"], batch["mask"])

  return embed


def make_encoder_apply(
    graphdef: nnx.GraphDef,
) -> Callable[[Params, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
  """Pure function of VPL's posterior encoder (head="latent_conditioned" only).

  Args:
    graphdef: the first output of `init_reward_model(..., head="latent_conditioned")`.

  Returns:
    encode(params, chosen_embeddings [U, N, D], rejected_embeddings [U, N, D],
    mask [U, N]) -> (mean [U, Z], log_var [U, Z]) float32 (`PreferenceEncoder`).
  """
  _check_graphdef(graphdef)

  def encode(params: Params, chosen_embeddings: jax.Array, rejected_embeddings: jax.Array,
             mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    return nnx.merge(graphdef, params).encode_preferences(
        chosen_embeddings, rejected_embeddings, mask)

  return encode


def abstract_params(config: TransformerConfig, *, num_outputs: int = 1,
                    head: str = "scalar", head_config: Mapping[str, Any] | None = None
                    ) -> Params:
  """Shapes and dtypes of `init_reward_model`'s params, computed without any FLOPs.

  Use it as a restore target for orbax or to plan shardings. For the graphdef as well,
  call `jax.eval_shape(functools.partial(init_reward_model, config), rng)`.

  Args:
    config: the backbone's `TransformerConfig`.
    num_outputs: rewards per sequence of the "scalar" head (default 1).
    head: a name in `HEADS` (default "scalar").
    head_config: optional mapping of the head's keyword arguments (default None).

  Returns:
    The params pytree with `jax.ShapeDtypeStruct` leaves.
  """
  _check_config(config)

  def init_params(rng):
    return init_reward_model(config, rng, num_outputs=num_outputs, head=head,
                             head_config=head_config)[1]

  return jax.eval_shape(init_params, jax.random.key(0))


def abstract_param_state(config: TransformerConfig, *, num_outputs: int = 1,
                         head: str = "scalar", head_config: Mapping[str, Any] | None = None
                         ) -> nnx.State:
  """Abstract `nnx.State` of the model's parameters, with their sharding metadata.

  Unlike `abstract_params` (a pure dict), the leaves here are `nnx.Param` variables
  holding `jax.ShapeDtypeStruct` values and their logical axis names, the input that
  `logical_partition_specs` needs.

  Args:
    config: the backbone's `TransformerConfig`.
    num_outputs: rewards per sequence of the "scalar" head (default 1).
    head: a name in `HEADS` (default "scalar").
    head_config: optional mapping of the head's keyword arguments (default None).

  Returns:
    `nnx.State` with the structure of `init_reward_model`'s params.
  """
  _check_config(config)
  model = nnx.eval_shape(lambda: RewardModel(config, num_outputs=num_outputs, head=head,
                                             head_config=head_config, rngs=nnx.Rngs(0)))
  return nnx.split(model, nnx.Param)[1]


def _check_rules(rules: Any) -> tuple[tuple[str, Any], ...]:
  if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
    raise TypeError(
        "rules must be a sequence of (logical_axis, mesh_axis) pairs, got "
        f"{type(rules).__name__}."
    )
  checked = []
  for rule in rules:
    if (not isinstance(rule, Sequence) or isinstance(rule, str) or len(rule) != 2
        or not isinstance(rule[0], str)):
      raise ValueError(
          "rules must be (logical_axis: str, mesh_axis: str | tuple[str, ...] | None) "
          f"pairs, got {rule!r}."
      )
    checked.append((rule[0], rule[1]))
  return tuple(checked)


def logical_partition_specs(
    params_state: nnx.State,
    rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_AXIS_RULES,
    *,
    mesh: jax.sharding.Mesh | None = None,
) -> Params:
  """Maps the parameters' logical axis names to mesh `PartitionSpec`s.

  The logical names come from `nnx.get_partition_spec` (the `nnx.with_partitioning`
  annotations); `flax.linen.logical_to_mesh_axes` applies the rules, in order, using
  each mesh axis at most once per parameter.

  Args:
    params_state: `nnx.State` of `nnx.Param` variables carrying the annotations, e.g.
      `abstract_param_state(config)` or `nnx.split(model, nnx.Param)[1]`. (Pure-dict
      params carry no annotations.)
    rules: (logical_axis, mesh_axis or None) pairs (default
      `DEFAULT_LOGICAL_AXIS_RULES`); every logical axis used by a parameter must appear.
    mesh: if given, each sharded dimension is checked to be divisible by the size of
      its mesh axes, so a bad rule fails here with the parameter's name rather than
      inside jit.

  Returns:
    A pytree of `jax.sharding.PartitionSpec` with the structure of
    `init_reward_model`'s params (a pure dict).

  Raises:
    TypeError: params_state is not an `nnx.State`.
    ValueError: a logical axis has no rule, or (with mesh) a dimension is not divisible.

  >>> specs = logical_partition_specs(abstract_param_state(
  ...     TransformerConfig(d_model=16, num_heads=2, num_layers=1)))
  >>> specs["backbone"]["layers"][0]["mlp"]["gate"] == PartitionSpec("fsdp", "tensor")
  True
  """
  if not isinstance(params_state, nnx.State):
    raise TypeError(
        "params_state must be an nnx.State with sharding annotations (e.g. "
        f"abstract_param_state(config)), got {type(params_state).__name__}."
    )
  rules = _check_rules(rules)
  ruled = {logical for logical, _ in rules}
  # Read the raw logical names: no context rules may rewrite them first.
  with nnx.logical_axis_rules(()):
    logical_specs = nnx.to_pure_dict(nnx.get_partition_spec(params_state))
  shapes = nnx.to_pure_dict(params_state)

  def to_mesh(path, spec, value):
    name = jax.tree_util.keystr(path)
    names = tuple(spec)
    for axis in names:
      if axis is not None and (not isinstance(axis, str) or axis not in ruled):
        raise ValueError(
            f"parameter {name} has logical axis {axis!r} with no entry in rules "
            f"{rules}; add ({axis!r}, mesh_axis_or_None). Known logical axes: "
            f"{LOGICAL_AXES}."
        )
    mesh_spec = flax.linen.logical_to_mesh_axes(names, rules)
    if mesh is not None:
      for dim, (size, axes) in enumerate(zip(value.shape, mesh_spec)):
        if axes is None:
          continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        unknown = [a for a in axes if a not in mesh.shape]
        if unknown:
          raise ValueError(
              f"parameter {name}: rules map it to mesh axes {unknown} that the mesh "
              f"{dict(mesh.shape)} does not have."
          )
        ways = math.prod(mesh.shape[a] for a in axes)
        if size % ways:
          raise ValueError(
              f"parameter {name} (shape {tuple(value.shape)}): dimension {dim} of size "
              f"{size} is sharded {ways} ways over mesh axes {axes}, which does not "
              f"divide it; change the rule for logical axis {names[dim]!r}."
          )
    return mesh_spec

  return jax.tree_util.tree_map_with_path(
      to_mesh, logical_specs, shapes,
      is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


def count_params(params: Any) -> int:
  """Total number of parameter entries in a pytree of arrays or ShapeDtypeStructs.

  >>> count_params({"w": jnp.zeros((3, 4)), "b": jax.ShapeDtypeStruct((4,), jnp.float32)})
  16
  """
  return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def non_embedding_params(config: TransformerConfig, *, num_outputs: int = 1) -> int:
  """Parameters outside the token embedding (and an untied LM head), from the config alone.

  Per layer: attention D * K * (2 H + 2 KV) (q, out; k, v), plus (H + 2 KV) * K with
  q/k/v biases and 2 K with q/k norms; gated MLP 3 * D * F; two norms 2 * D (four with
  Gemma-2's post_norms); plus the
  final norm D and the head D * num_outputs + num_outputs. With the defaults (KV = H,
  H * K = D) the attention term is 4 * D^2.
  """
  _check_config(config)
  d, f = config.d_model, config.mlp_dim
  h, kv, k = config.num_heads, config.kv_heads, config.head_dim
  attention = d * k * (2 * h + 2 * kv)
  if config.qkv_bias:
    attention += (h + 2 * kv) * k
  if config.qk_norm:
    attention += 2 * k
  per_layer = attention + 3 * d * f + (4 if config.post_norms else 2) * d
  return config.num_layers * per_layer + d + d * num_outputs + num_outputs


def flops_per_token(config: TransformerConfig, seq_len: int, *, num_outputs: int = 1
                    ) -> float:
  """Approximate training FLOPs (forward + backward) per token.

  flops = 6 * N + 12 * num_layers * H * K * seq_len

  N is the non-embedding parameter count (`non_embedding_params`): each weight costs a
  multiply-add (2 FLOPs) forward and twice that backward. The second term counts the
  attention score (Q K^T) and value (P V) matmuls, 2 * 2 * seq_len * H * K FLOPs per
  token and layer forward (H * K = d_model by default), times 3 for training; the full L x L matrix is computed, so
  no factor 1/2 for causality. Kaplan et al. (2020), Sec. 2.1; Chowdhery et al. (2022)
  PaLM, Appendix B.

  Args:
    config: the backbone's `TransformerConfig`.
    seq_len: the padded sequence length L of the batches.
    num_outputs: rewards per sequence (default 1).

  Returns:
    FLOPs per token (a float).

  >>> flops_per_token(TransformerConfig(), 256)
  3162630.0
  """
  if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
    raise ValueError(f"seq_len must be a positive int, got {seq_len!r}.")
  n = non_embedding_params(config, num_outputs=num_outputs)
  width = config.num_heads * config.head_dim
  return float(6 * n + 12 * config.num_layers * width * seq_len)
