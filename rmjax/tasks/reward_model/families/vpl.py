"""vpl: variational preference learning on user episodes.

  q(z | context pairs of the user) = N(mean, diag exp(log_var))   (a posterior encoder)
  loss = -log sigma(r(c, z) - r(r, z)) + beta KL(q || N(0, I))   over the query pairs
  eval: the query pairs with z = the posterior mean

An episode is one user's `context_pairs` annotated pairs followed by `query_pairs` pairs to
score; users come from groups with opposed tastes (`rmjax.data.synthetic`). Poddar et al.
(2024), "Personalizing reinforcement learning from human feedback with variational
preference learning".
"""

import jax
import jax.numpy as jnp
import ml_collections

from rmjax import losses
from rmjax import models
from rmjax.tasks.reward_model.family import Family
from rmjax.tasks.reward_model.family import pair_metrics


def _configure(config: ml_collections.ConfigDict, preset: str) -> None:
  config.data.format = "user_episodes"
  config.data.synthetic.update(num_user_groups=2, context_pairs=8, query_pairs=8)
  # num_train / num_eval count user episodes of 16 pairs.
  config.data.synthetic.num_train //= 16
  config.data.synthetic.num_eval //= 16
  # 8 episodes x 16 pairs: twice the sequences of 64 pairs (at least 8: one per device of
  # the tests' simulated mesh).
  config.train.batch_size = max(8, config.train.batch_size // 8)
  config.eval.batch_size = max(8, config.eval.batch_size // 8)
  if preset == "smoke":
    config.data.synthetic.update(context_pairs=4, query_pairs=4, num_train=256, num_eval=32)


def vpl_pair_rewards(apply_fn, embed_fn, encode_fn, params, batch, *, context_pairs: int,
                     key: jax.Array | None = None):
  """VPL on user episodes: (r(c, z) [B, Q], r(r, z) [B, Q], mean [B, Z], log_var [B, Z]).

  The first `context_pairs` pairs of each episode are embedded and encoded into the user's
  posterior q(z); z is sampled with `key` (training) or is the mean (key None, evaluation);
  the remaining Q query pairs are scored with r(y, z).
  """
  b, p, length = batch["chosen_tokens"].shape
  c, q = context_pairs, p - context_pairs

  def sequences(side, part):
    tokens, mask = batch[f"{side}_tokens"][:, part], batch[f"{side}_mask"][:, part]
    n = tokens.shape[1]
    return {"tokens": tokens.reshape(b * n, length), "mask": mask.reshape(b * n, length)}

  context = slice(0, c)
  embedded = embed_fn(params, {
      k: jnp.concatenate([sequences("chosen", context)[k], sequences("rejected", context)[k]])
      for k in ("tokens", "mask")})
  embedded = embedded.reshape(2, b, c, -1)
  mean, log_var = encode_fn(params, embedded[0], embedded[1], jnp.ones((b, c), bool))
  z = mean if key is None else losses.reparameterize(key, mean, log_var)
  query = slice(c, p)
  latent = jnp.repeat(z, q, axis=0)
  rewards = apply_fn(params, {
      "tokens": jnp.concatenate([sequences("chosen", query)["tokens"],
                                 sequences("rejected", query)["tokens"]]),
      "mask": jnp.concatenate([sequences("chosen", query)["mask"],
                               sequences("rejected", query)["mask"]]),
      "latent": jnp.concatenate([latent, latent])})
  rewards = rewards.reshape(2, b, q)
  return rewards[0], rewards[1], mean, log_var


def _make_functions(config, model, graphdef, shard):
  apply_fn = shard(model.make_apply(graphdef))
  embed_fn = shard(models.make_embed_apply(graphdef))
  encode_fn = shard(models.make_encoder_apply(graphdef))
  context_pairs = config.data.synthetic.context_pairs
  if context_pairs < 1:
    raise ValueError(f"data.synthetic.context_pairs: VPL needs >= 1, got {context_pairs}")

  def loss_fn(params, batch, key):
    chosen, rejected, mean, log_var = vpl_pair_rewards(
        apply_fn, embed_fn, encode_fn, params, batch, context_pairs=context_pairs, key=key)
    q = chosen.shape[1]
    valid = jnp.repeat(batch["valid"], q)
    loss = losses.vpl_loss(chosen.reshape(-1), rejected.reshape(-1),
                           jnp.repeat(mean, q, axis=0), jnp.repeat(log_var, q, axis=0),
                           beta=config.loss.kl_beta, mask=valid)
    return loss, pair_metrics(loss, chosen - rejected, valid.reshape(chosen.shape))

  def eval_fn(params, batch):
    chosen, rejected, _, _ = vpl_pair_rewards(apply_fn, embed_fn, encode_fn, params, batch,
                                              context_pairs=context_pairs)
    return chosen - rejected

  return loss_fn, eval_fn


FAMILY = Family(
    name="vpl",
    summary="latent-conditioned reward + posterior encoder over a user's context pairs",
    head="latent_conditioned",
    config=lambda: {"head": dict(latent_dim=8, encoder=dict(num_heads=2)),
                    "loss": dict(kl_beta=0.01)},
    data_format="user_episodes",
    synthetic_only=True,
    configure=_configure,
    make_functions=_make_functions,
)
