"""Plain-numpy Llama forward over HF-named tensors and a HF config dict (a test reference).

The spec the rmjax decoder is checked against, written for reading, not speed (one sequence, no
KV cache). With x the hidden states [T, D], per layer l:

    h = x + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))   n = rmsnorm(x) * w_in
    x = h + down_proj(silu(gate_proj(m)) * up_proj(m))                    m = rmsnorm(h) * w_post

    rmsnorm(x) = x / sqrt(mean(x^2) + eps)
    rope (rotate-half, HF/NeoX): per head, with d = head_dim, i < d/2,
      inv_freq_i = theta^(-2i/d), angle[t, i] = t * inv_freq_i (repeated over both halves),
      rope(v) = v * cos(angle) + rotate_half(v) * sin(angle), rotate_half([a, b]) = [-b, a]
    attn: causal softmax(q k^T / sqrt(d)) v, query head j reads kv head j // (H / H_kv) (GQA)
    logits = (rmsnorm(x) * w_norm) @ lm_head^T   (lm_head = embed_tokens when tied)

Linear weights are in torch layout [out, in], so `y = x @ W.T`. Computation runs in `dtype`
(float32 or float64; weights are cast per use). References: Touvron et al. (2023) LLaMA;
Su et al. (2021) RoFormer; Ainslie et al. (2023) GQA; Shazeer (2020) GLU variants.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _rmsnorm(x, w, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, positions, theta):
  """x: [T, H, d] -> rotate-half RoPE at integer `positions` [T]."""
  d = x.shape[-1]
  inv_freq = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # [d/2]
  angle = positions[:, None].astype(np.float64) * inv_freq[None]  # [T, d/2]
  angle = np.concatenate([angle, angle], axis=-1)[:, None, :]  # [T, 1, d]
  half = d // 2
  rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return (x * np.cos(angle) + rotated * np.sin(angle)).astype(x.dtype)


def _softmax(z, axis=-1):
  z = z - z.max(axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


def llama_forward(tensors: Mapping[str, np.ndarray], config: Mapping, ids: Sequence[int], *,
                  dtype=np.float32, last_only: bool = False) -> np.ndarray:
  """Logits of a Llama causal LM on one sequence.

  Args:
    tensors: HF name -> array (torch layout), e.g. `rmjax.checkpoints.gguf.open_gguf(p).tensors`
      materialised into a dict.
    config: HF config dict (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
      `num_key_value_heads`, `head_dim`, `rms_norm_eps`, `rope_theta`, `tie_word_embeddings`;
      `rope_scaling` must be None).
    ids: [T] token ids.
    dtype: computation dtype.
    last_only: return only the last position's logits ([V]) instead of [T, V].

  Returns:
    [T, V] (or [V]) logits in `dtype`.
  """
  if config.get("rope_scaling"):
    raise NotImplementedError("reference forward: rope_scaling is not implemented")
  ids = np.asarray(ids, dtype=np.int64)
  T = ids.shape[0]
  H, Hkv = config["num_attention_heads"], config["num_key_value_heads"]
  d = config.get("head_dim") or config["hidden_size"] // H
  eps, theta = config["rms_norm_eps"], config["rope_theta"]
  W = lambda name: np.asarray(tensors[name], dtype=dtype)  # noqa: E731
  positions = np.arange(T)
  causal = np.tril(np.ones((T, T), dtype=bool))

  x = np.asarray(tensors["model.embed_tokens.weight"][ids], dtype=dtype)  # [T, D]
  for layer in range(config["num_hidden_layers"]):
    p = f"model.layers.{layer}."
    n = _rmsnorm(x, W(p + "input_layernorm.weight"), eps)
    q = (n @ W(p + "self_attn.q_proj.weight").T).reshape(T, H, d)
    k = (n @ W(p + "self_attn.k_proj.weight").T).reshape(T, Hkv, d)
    v = (n @ W(p + "self_attn.v_proj.weight").T).reshape(T, Hkv, d)
    if config.get("attention_bias"):
      q = q + W(p + "self_attn.q_proj.bias").reshape(H, d)
      k = k + W(p + "self_attn.k_proj.bias").reshape(Hkv, d)
      v = v + W(p + "self_attn.v_proj.bias").reshape(Hkv, d)
    q, k = _rope(q, positions, theta), _rope(k, positions, theta)
    group = H // Hkv
    k = np.repeat(k, group, axis=1)  # [T, H, d]: query head j uses kv head j // group
    v = np.repeat(v, group, axis=1)
    scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(np.asarray(d, dtype))
    scores = np.where(causal[None], scores, -np.inf)
    attn = np.einsum("hts,shd->thd", _softmax(scores), v).reshape(T, H * d)
    x = x + attn @ W(p + "self_attn.o_proj.weight").T
    m = _rmsnorm(x, W(p + "post_attention_layernorm.weight"), eps)
    gate = m @ W(p + "mlp.gate_proj.weight").T
    up = m @ W(p + "mlp.up_proj.weight").T
    silu = gate / (1.0 + np.exp(-gate))
    x = x + (silu * up) @ W(p + "mlp.down_proj.weight").T
  x = _rmsnorm(x, W("model.norm.weight"), eps)
  head = tensors["model.embed_tokens.weight" if config["tie_word_embeddings"] else "lm_head.weight"]
  if last_only:
    x = x[-1]
  return (x @ np.asarray(head, dtype=dtype).T).astype(dtype)


def token_nll(logits: np.ndarray, ids: Sequence[int]) -> np.ndarray:
  """[T-1] per-token negative log-likelihood: -log softmax(logits[t])[ids[t+1]], in float64."""
  z = np.asarray(logits, np.float64)[:-1]
  z = z - z.max(axis=-1, keepdims=True)
  logz = np.log(np.exp(z).sum(axis=-1))
  return logz - z[np.arange(len(ids) - 1), np.asarray(ids[1:])]


def greedy_generate(tensors, config, ids, max_new_tokens, *, stop_ids=(), dtype=np.float32):
  """Greedy continuation without a KV cache: argmax of the last logits, appended, repeated.

  Stops after `max_new_tokens` or right after emitting a token in `stop_ids` (kept in the output).
  Returns the list of new ids.
  """
  seq = list(ids)
  new = []
  for _ in range(max_new_tokens):
    nxt = int(np.argmax(llama_forward(tensors, config, seq, dtype=dtype, last_only=True)))
    new.append(nxt)
    seq.append(nxt)
    if nxt in stop_ids:
      break
  return new
