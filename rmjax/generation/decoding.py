"""Autoregressive generation: prefill, then a `lax.while_loop` of cached decode steps.

`generate` samples responses to LEFT-padded prompts from an `rmjax.models.Transformer`
with an LM head; `make_sharded_generate` is the same program jitted over a device mesh,
with parameters sharded as the training presets shard them. See the package docstring.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from rmjax import parallel
from rmjax.generation import cache as cache_lib
from rmjax.generation import sampling
from rmjax.models.transformer import Transformer, check_token_mask


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """How to sample (hashable: a static argument of the jitted program).

  Attributes:
    max_new_tokens: T, the response length (the loop stops earlier once every sequence
      has emitted an EOS id).
    temperature: logits are divided by it before sampling and for the returned
      log-probs (default 1.0; must be > 0, use greedy=True for argmax decoding).
    top_k: None (default, off) or keep the k most probable tokens (Fan et al. 2018).
    top_p: None (default, off) or nucleus sampling with mass p in (0, 1] (Holtzman et
      al. 2020), taken after top-k.
    greedy: argmax decoding (default False).
    eos_ids: token ids that end a sequence (default (): no early stop); the EOS token
      is part of the response and of its mask.
    pad_id: id written at every masked output position (default 0); must be a valid
      token id, since finished rows keep feeding it to the model.
    num_samples: responses per prompt, n (default 1).
  """

  max_new_tokens: int
  temperature: float = 1.0
  top_k: int | None = None
  top_p: float | None = None
  greedy: bool = False
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0
  num_samples: int = 1

  def __post_init__(self):
    for name in ("max_new_tokens", "num_samples"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"GenerationConfig.{name} must be an int >= 1, got {value!r}.")
    try:
      sampling.check_sampling_args(self.temperature, self.top_k, self.top_p)
    except ValueError as error:
      raise ValueError(f"GenerationConfig.{error}") from None
    if not isinstance(self.greedy, bool):
      raise TypeError(f"GenerationConfig.greedy must be a bool, got {self.greedy!r}.")
    eos_ids = self.eos_ids
    if isinstance(eos_ids, (int, np.integer)) and not isinstance(eos_ids, bool):
      eos_ids = (eos_ids,)
    if isinstance(eos_ids, (str, bytes)) or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 0
        for i in eos_ids):
      raise ValueError(
          f"GenerationConfig.eos_ids must be a sequence of token ids >= 0, got {eos_ids!r}.")
    object.__setattr__(self, "eos_ids", tuple(int(i) for i in eos_ids))
    if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) or self.pad_id < 0:
      raise ValueError(f"GenerationConfig.pad_id must be a token id >= 0, got {self.pad_id!r}.")


class Generation(NamedTuple):
  """Sampled responses; N = B * num_samples rows, row b * n + j = sample j of prompt b.

  Attributes:
    tokens: [N, P + T] int32, the prompt (pad_id at its padding) then the response.
    mask: [N, P + T] bool, prompt_mask then response_mask.
    response_tokens: [N, T] int32, pad_id after the first EOS and after early stop.
    response_mask: [N, T] bool, True up to and including the first EOS.
    lengths: [N] int32, response_mask.sum(-1).
    log_probs: [N, T] float32, log-prob of each sampled token under the distribution at
      `temperature` before top-k / top-p truncation; 0 where response_mask is False.
    prompt_index: [N] int32, the prompt row b of each response.
  """

  tokens: jax.Array
  mask: jax.Array
  response_tokens: jax.Array
  response_mask: jax.Array
  lengths: jax.Array
  log_probs: jax.Array
  prompt_index: jax.Array


def _model_parts(model: Any) -> tuple[Transformer, nnx.GraphDef, Any]:
  """(module, graphdef, params) of a `Transformer` or of its (graphdef, params) split."""
  if isinstance(model, nnx.Module):
    module = model
    graphdef, params = nnx.split(model, nnx.Param)
  elif (isinstance(model, tuple) and len(model) == 2
        and isinstance(model[0], nnx.GraphDef)):
    graphdef, params = model
    module = nnx.merge(graphdef, params)
  else:
    raise TypeError(
        "model must be an rmjax.models.Transformer or its (graphdef, params) = "
        f"nnx.split(model, nnx.Param), got {type(model).__name__}.")
  if not isinstance(module, Transformer):
    raise TypeError(f"model must be an rmjax.models.Transformer, got {type(module).__name__}.")
  if module.config.lm_head == "none":
    raise ValueError(
        "model has no LM head (its config has lm_head='none'); generation needs "
        "lm_head='tied' or 'untied'.")
  return module, graphdef, params


def check_prompts(model_config: Any, prompt_tokens: Any, prompt_mask: Any,
                  config: GenerationConfig) -> None:
  """Checks prompts against the model and the config; ValueError / TypeError name the
  argument. The left padding of a concrete `prompt_mask` is checked too (a traced one,
  inside the caller's jit, cannot be)."""
  if not isinstance(config, GenerationConfig):
    raise TypeError(f"config must be a GenerationConfig, got {type(config).__name__}.")
  if getattr(prompt_tokens, "ndim", None) != 2:
    raise ValueError(
        f"prompt_tokens must have shape [B, P], got {getattr(prompt_tokens, 'shape', None)}.")
  if not jnp.issubdtype(prompt_tokens.dtype, jnp.integer):
    raise TypeError(f"prompt_tokens must have an integer dtype, got {prompt_tokens.dtype}.")
  check_token_mask(prompt_mask, prompt_tokens, name="prompt_mask")
  prompt_len, max_len = prompt_tokens.shape[1], model_config.max_len
  if prompt_len + config.max_new_tokens > max_len:
    raise ValueError(
        f"prompt_tokens has length P={prompt_len}; with max_new_tokens="
        f"{config.max_new_tokens} the sequence exceeds the model's max_len={max_len}: "
        f"P must be <= {max_len - config.max_new_tokens}.")
  vocab = model_config.vocab_size
  for name, ids in (("pad_id", (config.pad_id,)), ("eos_ids", config.eos_ids)):
    if any(i >= vocab for i in ids):
      raise ValueError(f"GenerationConfig.{name}={getattr(config, name)!r}: ids must lie in "
                       f"[0, vocab_size={vocab}).")
  if not isinstance(prompt_mask, jax.core.Tracer):
    real = np.asarray(prompt_mask).astype(bool)
    bad = np.flatnonzero(~real[:, -1] | np.any(real[:, :-1] & ~real[:, 1:], axis=1))
    if bad.size:
      raise ValueError(
          "prompt_mask must be LEFT-padded (padding first, then at least one real token "
          f"ending at the last column); rows {bad.tolist()[:8]} are not (right-padded or "
          "empty prompts). Left-pad the prompts: new tokens are appended after column P-1.")


def _generate(model: Transformer, prompt_tokens: jax.Array, prompt_mask: jax.Array,
              key: jax.Array, config: GenerationConfig,
              constrain_cache: Callable[[Any], Any] = lambda cache: cache) -> Generation:
  """The traced program of `generate` (inputs already checked)."""
  n, steps, pad_id = config.num_samples, config.max_new_tokens, config.pad_id
  prompt_mask = prompt_mask.astype(jnp.bool_)
  tokens = jnp.repeat(prompt_tokens.astype(jnp.int32), n, axis=0)
  mask = jnp.repeat(prompt_mask, n, axis=0)
  prompt_index = jnp.repeat(jnp.arange(prompt_tokens.shape[0], dtype=jnp.int32), n)
  sample_index = jnp.tile(jnp.arange(n, dtype=jnp.int32), prompt_tokens.shape[0])
  rows = tokens.shape[0]
  logits, cache = model.prefill(tokens, mask, max_new_tokens=steps)
  cache = constrain_cache(cache)
  eos_ids = jnp.asarray(config.eos_ids, jnp.int32)

  def not_done(carry):
    step, _, finished = carry[:3]
    return (step < steps) & ~jnp.all(finished)

  def step_fn(carry):
    step, logits, finished, cache, out_tokens, out_mask, out_log_probs = carry
    step_key = jax.random.fold_in(key, step)
    row_keys = jax.vmap(lambda i, j: jax.random.fold_in(jax.random.fold_in(step_key, i), j)
                        )(prompt_index, sample_index)
    token, log_prob = sampling.sample_tokens(
        row_keys, logits, temperature=config.temperature, top_k=config.top_k,
        top_p=config.top_p, greedy=config.greedy)
    live = ~finished
    token = jnp.where(live, token, pad_id)
    log_prob = jnp.where(live, log_prob, 0.0)
    write = lambda out, value: jax.lax.dynamic_update_index_in_dim(out, value, step, 1)
    out_tokens, out_mask = write(out_tokens, token), write(out_mask, live)
    out_log_probs = write(out_log_probs, log_prob)
    if config.eos_ids:
      finished = finished | (live & jnp.isin(token, eos_ids))
    logits, cache = model.decode_step(token, cache)
    return step + 1, logits, finished, cache, out_tokens, out_mask, out_log_probs

  carry = (jnp.zeros((), jnp.int32), logits, jnp.zeros((rows,), jnp.bool_), cache,
           jnp.full((rows, steps), pad_id, jnp.int32), jnp.zeros((rows, steps), jnp.bool_),
           jnp.zeros((rows, steps), jnp.float32))
  *_, response_tokens, response_mask, log_probs = jax.lax.while_loop(not_done, step_fn, carry)
  prompt_out = jnp.where(mask, tokens, pad_id)
  return Generation(
      tokens=jnp.concatenate([prompt_out, response_tokens], axis=1),
      mask=jnp.concatenate([mask, response_mask], axis=1),
      response_tokens=response_tokens, response_mask=response_mask,
      lengths=jnp.sum(response_mask, axis=1, dtype=jnp.int32), log_probs=log_probs,
      prompt_index=prompt_index)


@functools.partial(jax.jit, static_argnames=("graphdef", "config"))
def _generate_jit(graphdef, params, prompt_tokens, prompt_mask, key, config):
  return _generate(nnx.merge(graphdef, params), prompt_tokens, prompt_mask, key, config)


def generate(model: Any, prompt_tokens: jax.Array, prompt_mask: jax.Array, key: jax.Array,
             config: GenerationConfig) -> Generation:
  """Samples `config.num_samples` responses to each LEFT-padded prompt.

  Prefill, then a `jax.lax.while_loop` of `Transformer.decode_step` over a fixed-size
  `KVCache`, for max_new_tokens steps or until every row has emitted an EOS id. The
  cache is made inside the program and lives in the loop carry, whose buffers XLA
  updates in place (`dynamic_update_slice`), so no copy is made per step and there is
  no cache argument to donate. All shapes are fixed: jitted inside, one compilation per
  (B, P, config) and model structure, whatever the prompts, key or stopping step;
  callable inside the caller's `jax.jit` too, with `model=(graphdef, params)` and
  `config` closed over.

  Keys: row r (prompt b, sample j) at step t draws with
  fold_in(fold_in(fold_in(key, t), b), j), so a row's tokens depend neither on the
  other rows nor on the prompt length P (left padding changes nothing).

  Args:
    model: an `rmjax.models.Transformer` with an LM head, or (graphdef, params) from
      `nnx.split(model, nnx.Param)` (params as `nnx.State` or `nnx.to_pure_dict`).
    prompt_tokens: [B, P] int token ids, LEFT-padded.
    prompt_mask: [B, P] bool or int, nonzero at real tokens; each row: padding, then at
      least one real token up to the last column.
    key: a `jax.random` key.
    config: a `GenerationConfig`.

  Returns:
    A `Generation` with N = B * num_samples rows.

  Raises:
    ValueError / TypeError naming the argument: no LM head, wrong shapes, P +
    max_new_tokens > max_len, a prompt_mask that is not left-padded (checked when it is
    concrete), pad_id or eos_ids outside the vocabulary.

  >>> from flax import nnx
  >>> from rmjax import models
  >>> model = models.Transformer(models.TransformerConfig(
  ...     vocab_size=16, max_len=16, d_model=16, num_heads=2), rngs=nnx.Rngs(0))
  >>> out = generate(model, jnp.array([[0, 5, 6], [4, 5, 6]]),
  ...                jnp.array([[0, 1, 1], [1, 1, 1]]), jax.random.key(0),
  ...                GenerationConfig(max_new_tokens=4, eos_ids=(2,), num_samples=2))
  >>> out.tokens.shape, out.response_tokens.shape, out.prompt_index.tolist()
  ((4, 7), (4, 4), [0, 0, 1, 1])
  """
  module, graphdef, params = _model_parts(model)
  check_prompts(module.config, prompt_tokens, prompt_mask, config)
  return _generate_jit(graphdef, params, prompt_tokens, prompt_mask, key, config)


def make_sharded_generate(graphdef: nnx.GraphDef, param_specs: Any, mesh: jax.sharding.Mesh,
                          config: GenerationConfig
                          ) -> Callable[[Any, jax.Array, jax.Array, jax.Array], Generation]:
  """`generate` jitted over a ('data', 'fsdp', 'tensor') mesh.

  Parameters arrive in their training layout (`param_specs`, e.g.
  `rmjax.models.logical_partition_specs(nnx.split(model, nnx.Param)[1], mesh=mesh)`) and
  are gathered over the batch axes where they are used (`parallel.without_axes`: FSDP
  all-gathers, the 'tensor' split stays), as the training program does; prompts, the
  cache and every output are split by rows over ('data', 'fsdp'); the key is replicated.
  The result equals single-device `generate` (up to float summation order).

  Args:
    graphdef: the static graph of a `Transformer` with an LM head.
    param_specs: `PartitionSpec` pytree with the structure of the pure-dict params.
    mesh: the device mesh.
    config: a `GenerationConfig`.

  Returns:
    run(params, prompt_tokens, prompt_mask, key) -> Generation: params a pure dict (an
    `nnx.State` is converted); B must be a multiple of data x fsdp. Inputs are checked
    as in `generate`, then the jitted program runs (`run.jitted`: that program, which a
    dry run lowers from abstract arguments).
  """
  is_spec = lambda x: isinstance(x, PartitionSpec)
  to_shardings = lambda fn: jax.tree.map(lambda s: NamedSharding(mesh, fn(s)), param_specs,
                                         is_leaf=is_spec)
  rest_shardings = to_shardings(lambda spec: spec)
  compute_shardings = to_shardings(parallel.without_axes)
  row_sharding = parallel.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  shards = parallel.num_batch_shards(mesh)

  def program(params, prompt_tokens, prompt_mask, key):
    params = jax.lax.with_sharding_constraint(params, compute_shardings)
    return _generate(nnx.merge(graphdef, params), prompt_tokens, prompt_mask, key, config,
                     constrain_cache=functools.partial(cache_lib.constrain_cache, mesh=mesh))

  jitted = jax.jit(program, in_shardings=(rest_shardings, row_sharding, row_sharding,
                                          replicated), out_shardings=row_sharding)

  def run(params, prompt_tokens, prompt_mask, key):
    if isinstance(params, nnx.State):
      params = nnx.to_pure_dict(params)
    module, _, _ = _model_parts((graphdef, params))
    check_prompts(module.config, prompt_tokens, prompt_mask, config)
    if prompt_tokens.shape[0] % shards:
      raise ValueError(
          f"prompt_tokens has B={prompt_tokens.shape[0]} prompts, not a multiple of the "
          f"{shards} batch shards of the mesh (data x fsdp = {mesh.shape['data']} x "
          f"{mesh.shape['fsdp']}).")
    return jitted(params, prompt_tokens, prompt_mask, key)

  run.jitted = jitted  # The program itself, for dry runs (`rmjax.train.dry_run`).
  return run
