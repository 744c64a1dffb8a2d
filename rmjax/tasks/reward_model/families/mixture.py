"""mixture: a mixture of K Bradley-Terry heads with a router (MiCRo).

  P(c > r) = sum_k w_k sigma(r_c,k - r_r,k),  w = softmax(router logits)
  loss = -log P(c > r)        logit = log P - log(1 - P)

The router should see the context only; both sequences share the prompt, and averaging
their router logits keeps P(c > r) + P(r > c) = 1. Shen et al. (2025), MiCRo.
"""

import jax
import ml_collections

from rmjax import losses
from rmjax.tasks.reward_model.family import Family


def _router_logits(chosen, rejected):
  return 0.5 * (chosen["router_logits"] + rejected["router_logits"])


def _pair_loss(config: ml_collections.ConfigDict, chosen, rejected, batch):
  del config
  return losses.mixture_bradley_terry_loss(
      chosen["rewards"], rejected["rewards"], _router_logits(chosen, rejected),
      mask=batch["valid"])


def _pair_logits(config: ml_collections.ConfigDict, chosen, rejected):
  del config
  log_w = jax.nn.log_softmax(_router_logits(chosen, rejected), axis=-1)
  delta = chosen["rewards"] - rejected["rewards"]
  return (jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(delta), axis=-1)
          - jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(-delta), axis=-1))


FAMILY = Family(
    name="mixture",
    summary="mixture of K BT heads with a router: -log sum_k w_k sigma(Delta_k)",
    head="mixture",
    config=lambda: {"head": dict(num_components=2)},
    pair_loss=_pair_loss,
    pair_logits=_pair_logits,
)
