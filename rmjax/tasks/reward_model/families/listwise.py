"""listwise: a scalar reward model trained on rankings of K responses per prompt.

  plackett_luce:            -log prod_k softmax(s_pi(k..K))_1     (Plackett-Luce NLL)
  all_pairs_bradley_terry:  BT over every ordered pair of each list, weighted by
                            list_weighting: uniform | label_gap | lipo_lambda
  train metrics: over every ordered pair of each ranking; eval: the held-out pairs

Plackett (1975), Luce (1959); LiPO, Liu et al. (2024) for the lambda weights. A list holds K
sequences (and K(K-1)/2 ordered pairs) where a pair holds 2: the presets halve the lists and
the batch so that the data's and each step's tokens are those of the pair presets.
"""

import jax.numpy as jnp
import ml_collections

from rmjax import losses
from rmjax.tasks.reward_model import pairwise
from rmjax.tasks.reward_model.family import Family
from rmjax.tasks.reward_model.family import FORMAT_FIELDS
from rmjax.tasks.reward_model.family import pair_metrics

LIST_LOSSES = ("plackett_luce", "all_pairs_bradley_terry")


def _configure(config: ml_collections.ConfigDict, preset: str) -> None:
  del preset
  config.data.format = "lists"
  config.data.synthetic.list_size = 4
  config.data.synthetic.num_train //= 2
  config.train.batch_size //= 2


def _check_config(config: ml_collections.ConfigDict) -> None:
  if config.loss.name not in LIST_LOSSES:
    raise ValueError(f"loss.name: expected one of {LIST_LOSSES}, got {config.loss.name!r}")


def score_lists(apply_fn, params, batch):
  """[B, K] scores of the K responses of each list (`tokens`, `mask` [B, K, L]), one pass."""
  b, k, length = batch["tokens"].shape
  scores = apply_fn(params, {"tokens": batch["tokens"].reshape(b * k, length),
                             "mask": batch["mask"].reshape(b * k, length)})
  return scores.reshape(b, k)


def list_loss(loss_config: ml_collections.ConfigDict, scores, batch):
  """Plackett-Luce NLL of the ranking, or BT over all ordered pairs of each list."""
  b, k = scores.shape
  valid_items = jnp.broadcast_to(batch["valid"][:, None], (b, k))
  if loss_config.name == "plackett_luce":
    return losses.plackett_luce_loss(scores, batch["ranking"], mask=valid_items)
  # Grades from places: the best response gets K - 1, the worst 0.
  grades = jnp.zeros((b, k), jnp.float32).at[jnp.arange(b)[:, None], batch["ranking"]].set(
      jnp.arange(k - 1, -1, -1, dtype=jnp.float32)[None, :])
  return losses.all_pairs_bradley_terry_loss(
      scores.reshape(-1), grades.reshape(-1), group_ids=jnp.repeat(jnp.arange(b), k),
      mask=valid_items.reshape(-1), weighting=loss_config.list_weighting)


def ranked_pair_logits(scores, ranking):
  """[B, K(K-1)/2] logits s_better - s_worse of every ordered pair of each ranked list."""
  ordered = jnp.take_along_axis(scores, ranking, axis=1)
  i, j = jnp.triu_indices(scores.shape[1], k=1)
  return ordered[:, i] - ordered[:, j]


def _make_functions(config, model, graphdef, shard):
  """Trains on lists; evaluates on the held-out pairs like every other family."""
  apply_fn = shard(model.make_apply(graphdef))

  def loss_fn(params, batch, key):
    del key
    scores = score_lists(apply_fn, params, batch)
    logits = ranked_pair_logits(scores, batch["ranking"])
    loss = list_loss(config.loss, scores, batch)
    return loss, pair_metrics(loss, logits,
                              jnp.broadcast_to(batch["valid"][:, None], logits.shape))

  def eval_fn(params, batch):
    return pairwise.reward_difference(config, *pairwise.score_pairs(apply_fn, params, batch))

  return loss_fn, eval_fn


FAMILY = Family(
    name="listwise",
    summary="Plackett-Luce NLL of rankings of 4 responses (or BT over all their pairs)",
    head="scalar",
    config=lambda: {"loss": dict(name="plackett_luce", list_weighting="uniform")},
    data_format="lists",
    synthetic_only=True,
    configure=_configure,
    check_config=_check_config,
    make_functions=_make_functions,
    batch_fields=FORMAT_FIELDS["pairs"],  # The held-out pairs it is evaluated on.
)
