"""pal: pluralistic ideal-point reward models (PAL-A and PAL-B) on pairs from known users.

Each user u mixes K learnable prototypes with weights softmax(theta_u) (a row of a user table):

  PAL-A  a_u = softmax(theta_u) @ P;  s = ||f(y_r) - a_u|| - ||f(y_c) - a_u||
  PAL-B  u = sum_k softmax(theta_u)_k g_k(x);  s = tau (cos(u, f(y_c)) - cos(u, f(y_r)))
  loss = -log sigma(s)          pair logit = s

(`rmjax.losses.pal_a_user_point`, `pal_a_score`, `pal_b_user_vector`, `pal_b_score`; heads
`ideal_point` and `prompt_conditioned_ideal_point`.) config.pal.variant picks "a" or "b";
config.head holds the head's arguments, num_users the size of its user table. PAL-B's g_k
read the prompt's hidden state (the last prompt token; the backbone is causal), so both
sides of a pair get the same user vector: read from a response instead, u would tell the
model which side is the labelled one.

Data: `head.num_users` users from `pal.num_user_groups` groups with opposed tastes
(`rmjax.data.synthetic.user_group_worlds`); each user labels num_train / U training pairs and
num_eval / U held-out pairs by Bradley-Terry on their group's reward, and every pair carries
its annotator's id. Held-out pairs come from the same users, so the eval reports how well the
model learnt each user: Bayes-optimal accuracy with the group known, and the group-blind
level any model that ignores the user is held to (data_report.json).

References:
  Chen et al. (2024), "PAL: Pluralistic Alignment Framework for Learning from Heterogeneous
  Preferences", arXiv:2406.08469.
"""

import jax.numpy as jnp
import ml_collections
import numpy as np

from rmjax import data as rm_data
from rmjax import losses
from rmjax.data import synthetic
from rmjax.tasks.reward_model.family import Family
from rmjax.tasks.reward_model.family import Model
from rmjax.tasks.reward_model.family import single_model

VARIANTS = {"a": "ideal_point", "b": "prompt_conditioned_ideal_point"}
# Head outputs that are the same for every row (prototypes [K, F], log temperature []).
_UNBATCHED = ("prototypes", "log_temperature")


def _config() -> dict:
  return {"pal": dict(variant="b", num_user_groups=2),
          "head": dict(feature_dim=16, num_prototypes=2, num_users=64)}


def _configure(config: ml_collections.ConfigDict, preset: str) -> None:
  if preset == "smoke":
    config.head.num_users = 16


def _check_config(config: ml_collections.ConfigDict) -> None:
  if config.pal.variant not in VARIANTS:
    raise ValueError(f"pal.variant: expected one of {tuple(VARIANTS)}, got "
                     f"{config.pal.variant!r}")
  s = config.data.synthetic
  for name in ("num_train", "num_eval"):
    if s[name] < config.head.num_users:
      raise ValueError(f"data.synthetic.{name}={s[name]} gives no pair to some of the "
                       f"head.num_users={config.head.num_users} users; raise it")


def _build_model(family: Family, config: ml_collections.ConfigDict) -> Model:
  """The single model, reading the prompt's hidden state (its last token, from the pairs'
  `prompt_lengths`), its unbatched outputs repeated per row so that every output splits
  along the batch (chosen and rejected halves, the mesh's batch axes)."""
  model = single_model(family, config)

  def make_apply(graphdef):
    apply = model.make_apply(graphdef)

    def batched(params, batch):
      positions = jnp.arange(batch["tokens"].shape[1])[None, :]
      out = apply(params, {**batch,
                           "prompt_mask": positions < batch["prompt_lengths"][:, None]})
      rows = batch["tokens"].shape[0]
      return {k: jnp.broadcast_to(v, (rows,) + v.shape) if k in _UNBATCHED else v
              for k, v in out.items()}

    return batched

  return model._replace(make_apply=make_apply)


def _score(config: ml_collections.ConfigDict, chosen, rejected, mask=None):
  if config.pal.variant == "a":
    point = losses.pal_a_user_point(chosen["prototypes"][0], chosen["user_logits"], mask=mask)
    return losses.pal_a_score(chosen["features"], rejected["features"], point, mask=mask)
  # g_k read the prompt's hidden state, the same for both sides: either side's will do.
  vector = losses.pal_b_user_vector(chosen["user_prototype_features"], chosen["user_logits"],
                                    mask=mask)
  return losses.pal_b_score(chosen["features"], rejected["features"], vector,
                            log_temperature=chosen["log_temperature"][0], mask=mask)


def _pair_loss(config: ml_collections.ConfigDict, chosen, rejected, batch):
  score = _score(config, chosen, rejected, mask=batch["valid"])
  return losses.bradley_terry_loss(score, jnp.zeros_like(score), mask=batch["valid"])


def _pair_logits(config: ml_collections.ConfigDict, chosen, rejected):
  return _score(config, chosen, rejected)


def _split(episodes: synthetic.SyntheticEpisodes, part: slice, name: str,
           config: ml_collections.ConfigDict) -> tuple[rm_data.PreferenceDataset, dict]:
  """The pairs `part` of every user's episode, flattened, with their user ids."""
  flat = lambda rows: [x for row in rows for x in row[part]]
  arrays, truncation = rm_data.tokenize_pairs(
      flat(episodes.prompt), flat(episodes.chosen), flat(episodes.rejected),
      max_len=config.data.max_len, max_prompt_len=config.data.max_prompt_len)
  prob = episodes.preference_prob[:, part]
  arrays["margin"] = np.zeros(prob.size, np.float32)
  arrays["preference_prob"] = prob.reshape(-1)
  arrays["user_ids"] = np.repeat(np.arange(prob.shape[0], dtype=np.int32), prob.shape[1])
  # [BOS] + the kept prompt tokens (the prompt keeps its last max_prompt_len tokens).
  tokenizer = rm_data.ByteTokenizer()
  arrays["prompt_lengths"] = np.array(
      [1 + min(len(tokenizer.encode(p)), config.data.max_prompt_len)
       for p in flat(episodes.prompt)], np.int32)
  info = dict(num_pairs=int(prob.size),
              bayes_optimal_accuracy=float(np.mean(np.maximum(prob, 1 - prob))),
              group_blind_bayes_accuracy=float(np.mean(episodes.group_blind_prob[:, part])),
              truncated_pairs=truncation["pairs_with_truncation"])
  return rm_data.PreferenceDataset(arrays, name=name), info


def _load_data(config: ml_collections.ConfigDict, workdir: str) -> rm_data.PreferenceData:
  del workdir
  users = config.head.num_users
  s = synthetic.default_synthetic_config() | config.data.synthetic.to_dict()
  per_user_train, per_user_eval = s["num_train"] // users, s["num_eval"] // users
  s.update(context_pairs=per_user_train, query_pairs=per_user_eval)
  worlds = synthetic.user_group_worlds(s["world_seed"], s["num_letters"],
                                       config.pal.num_user_groups)
  episodes = synthetic.sample_user_episodes(users, np.random.default_rng([s["seed"], 6]),
                                            worlds, s)
  train, train_info = _split(episodes, slice(0, per_user_train), "train", config)
  eval_, eval_info = _split(episodes, slice(per_user_train, None), "eval", config)
  info = dict(source="synthetic", format="pairs with user ids", max_len=config.data.max_len,
              max_prompt_len=config.data.max_prompt_len, num_users=users,
              users_per_group=np.bincount(episodes.group,
                                          minlength=config.pal.num_user_groups).tolist(),
              group_agreement_with_group_0=episodes.agreement,
              pairs_per_user=dict(train=per_user_train, eval=per_user_eval),
              train=train_info, eval=eval_info,
              bayes_optimal_accuracy=dict(train=train_info["bayes_optimal_accuracy"],
                                          eval=eval_info["bayes_optimal_accuracy"]))
  return rm_data.PreferenceData(train, eval_, info)


FAMILY = Family(
    name="pal",
    summary="PAL-A / PAL-B: users as mixes of K prototype ideal points, pairs with user ids",
    head=lambda config: VARIANTS[config.pal.variant],
    config=_config,
    synthetic_only=True,
    configure=_configure,
    check_config=_check_config,
    pair_loss=_pair_loss,
    pair_logits=_pair_logits,
    build_model=_build_model,
    load_data=_load_data,
    side_fields=("user_ids", "prompt_lengths"),
)
