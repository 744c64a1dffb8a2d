"""Autoregressive sampling from an `rmjax.models.Transformer` with an LM head.

  prompts [B, P] (LEFT-padded) --prefill--> logits [B*n, V], KVCache
  repeat: token ~ sample(logits); logits, cache = decode_step(token, cache)
          (a `jax.lax.while_loop`: max_new_tokens steps, or until every row hit EOS)

Pieces:
  * `KVCache` (defined in `rmjax.models.transformer`): per layer keys and values
    [B, S, KV, K], S = P + max_new_tokens fixed, the key mask [B, S], each row's next RoPE
    position [B] (its number of real tokens: positions continue from the prompt's real
    tokens, so left padding changes nothing) and the next slot. `Transformer.prefill` and
    `Transformer.decode_step` fill it; `cache_shardings` lays it out on a mesh.
  * `sample_tokens` and the truncation rules (`top_k_mask`, `top_p_mask`,
    `truncate_logits`): pure functions on logits.
  * `generate(model, prompt_tokens, prompt_mask, key, config) -> Generation` and
    `make_sharded_generate(graphdef, param_specs, mesh, config)`, its mesh-jitted form.

Sampling, with z = logits / temperature (temperature > 0; 0 is rejected, use greedy):
  greedy:  y = argmax_v logits_v
  top-k:   keep the k largest z_v (Fan et al. 2018; ties with the k-th all kept)
  top-p:   with pi = softmax(z) sorted so that pi_(1) >= pi_(2) >= ..., keep token (i)
           iff sum_{j<i} pi_(j) < p: the smallest set of most probable tokens whose
           probability is >= p, never empty (Holtzman et al. 2020); taken on the
           distribution renormalised over the top-k set when both are on.
  y ~ softmax(z restricted to the kept set).
The returned log-prob of y is log softmax(z)_y: the distribution at `temperature`
BEFORE top-k / top-p truncation, i.e. the policy's own probability, which is what a
policy-gradient ratio or a KL penalty recomputes from a full forward pass
(`rmjax.losses.token_log_probs(logits / temperature, ...)`); a truncated token set would
make those ratios disagree with the sampler.

Shapes (N = B * num_samples; row b * n + j is sample j of prompt b):
  tokens [N, P + T] (prompt, then response), mask [N, P + T], response_tokens [N, T],
  response_mask [N, T], lengths [N], log_probs [N, T] (0 where masked), prompt_index [N].

EOS: each row stops at its own first EOS id (several allowed); the EOS is part of the
response and of its mask; after it come pad_id and mask 0. Defaults of
`GenerationConfig`: temperature 1.0, top_k None, top_p None, greedy False, eos_ids ()
(no early stop), pad_id 0, num_samples 1.

Keys: row (b, j) at step t samples with fold_in(fold_in(fold_in(key, t), b), j); the same
key gives the same result, on one device or a mesh.

References:
  Holtzman et al. (2020) The curious case of neural text degeneration (nucleus / top-p);
  Fan et al. (2018) Hierarchical neural story generation (top-k sampling).

>>> from rmjax import generation
>>> generation.top_p_mask(jnp.log(jnp.array([0.5, 0.3, 0.2])), 0.7).tolist()
[True, True, False]
"""

import jax.numpy as jnp  # noqa: F401  (used by the doctest above)

from rmjax.generation.cache import KVCache, cache_shardings, constrain_cache
from rmjax.generation.decoding import (
    Generation,
    GenerationConfig,
    check_prompts,
    generate,
    make_sharded_generate,
)
from rmjax.generation.sampling import (
    check_sampling_args,
    sample_tokens,
    top_k_mask,
    top_p_mask,
    truncate_logits,
)

__all__ = [
    "Generation",
    "GenerationConfig",
    "KVCache",
    "cache_shardings",
    "check_prompts",
    "check_sampling_args",
    "constrain_cache",
    "generate",
    "make_sharded_generate",
    "sample_tokens",
    "top_k_mask",
    "top_p_mask",
    "truncate_logits",
]
