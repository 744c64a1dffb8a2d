"""Data generators of the synthetic studies, each with a documented ground truth (numpy).

Four small worlds, one per claim of the spec (`experiments/study_*.py` train on them):

* `make_cyclic_preferences`: items on a circle with intransitive (rock-paper-scissors)
  preferences plus an optional transitive quality (GPM, arXiv:2410.02197).
* `make_user_mixture_preferences`: responses with feature vectors judged by users from G
  groups, each group with its own linear reward (MiCRo arXiv:2505.24846, MaxMin-RLHF
  arXiv:2402.08925).
* `make_noisy_label_preferences`: clean Bradley-Terry pairs with a fraction of the labels
  flipped (Secrets of RLHF II, arXiv:2401.06080).
* `make_two_property_world`: two true rewards in tension over enumerable responses with a known
  reference policy pi_0, and noisy preference pairs per property (issue 16: Wang et al.
  arXiv:2402.00742, Gao et al. arXiv:2210.10760, Coste et al. ICLR 2024).

Every generator returns arrays in "chosen / rejected" form (the response drawn as preferred
first) together with `prob_chosen`, the ground-truth probability that the chosen response is
preferred, so `rmjax.eval.bayes_optimal_pairwise_accuracy(prob_chosen)` is the ceiling of any
predictor that sees what the ground truth sees. Everything is a deterministic function of
`seed` (numpy `Generator`s).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))


def _orient(first: np.ndarray, second: np.ndarray, prob_first: np.ndarray,
            rng: np.random.Generator):
  """Draws labels; returns (chosen, rejected, prob_chosen, first_won)."""
  first_won = rng.random(prob_first.shape) < prob_first
  chosen = np.where(first_won, first, second)
  rejected = np.where(first_won, second, first)
  prob_chosen = np.where(first_won, prob_first, 1.0 - prob_first)
  return chosen, rejected, prob_chosen, first_won


# ----------------------------------------------------------------------------------------------
# Study 1: cyclic preferences.
# ----------------------------------------------------------------------------------------------


def cyclic_tournament(num_items: int) -> np.ndarray:
  """Ground-truth cyclic component c[i, j] in {-1, 0, +1} of `num_items` items on a circle.

    c[i, j] = +1 if (j - i) mod N in [1, (N - 1) / 2]   (i beats the next (N - 1) / 2 items)
              -1 if (i - j) mod N in [1, (N - 1) / 2]
               0 otherwise (i = j)

  For odd N this is a regular tournament: every item beats exactly (N - 1) / 2 others and
  loses to as many, so no scalar score orders it (each item's BT score is the same). It is
  exactly the sign of sin(theta_j - theta_i) for items at angles theta_i = 2 pi i / N, i.e.
  what a GPM with one 2-D block represents.

  Args:
    num_items: odd N >= 3.

  Returns:
    [N, N] int array, skew-symmetric.

  >>> cyclic_tournament(3)  # 0 beats 1, 1 beats 2, 2 beats 0
  array([[ 0,  1, -1],
         [-1,  0,  1],
         [ 1, -1,  0]])
  """
  if num_items < 3 or num_items % 2 == 0:
    raise ValueError(f"`num_items` must be odd and >= 3; got {num_items}.")
  half = (num_items - 1) // 2
  offset = (np.arange(num_items)[None, :] - np.arange(num_items)[:, None]) % num_items
  return np.where((offset >= 1) & (offset <= half), 1,
                  np.where(offset > half, -1, 0)).astype(np.int64)


class CyclicWorld(NamedTuple):
  """Ground truth of the cyclic study.

  Attributes:
    logits: [N, N] skew-symmetric ground-truth preference logits,
      logits[i, j] = cyclic_scale * c[i, j] + quality[i] - quality[j].
    quality: [N] transitive component (zeros for a purely cyclic world).
    tournament: [N, N] the cyclic component c of `cyclic_tournament`.
  """
  logits: np.ndarray
  quality: np.ndarray
  tournament: np.ndarray


class ItemPairs(NamedTuple):
  """Labelled comparisons of items (ids into a world's item table).

  Attributes:
    chosen: [B] int ids of the items drawn as preferred.
    rejected: [B] int ids of the other items.
    prob_chosen: [B] ground-truth P(chosen beats rejected).
  """
  chosen: np.ndarray
  rejected: np.ndarray
  prob_chosen: np.ndarray


class CyclicPreferences(NamedTuple):
  """Train / test comparisons on disjoint sets of unordered item pairs.

  Attributes:
    world: the `CyclicWorld`.
    train: `ItemPairs` drawn from the training item pairs.
    test: `ItemPairs` drawn from the held-out item pairs (never compared in train).
    test_seen: fresh `ItemPairs` (new draws and labels) from the training item pairs.
  """
  world: CyclicWorld
  train: ItemPairs
  test: ItemPairs
  test_seen: ItemPairs


def make_cyclic_world(num_items: int, *, cyclic_scale: float = 2.0,
                      transitive_scale: float = 0.0, seed: int = 0) -> CyclicWorld:
  """Items with intransitive ground-truth preferences and an optional transitive quality.

    P(i beats j) = sigmoid(cyclic_scale * c[i, j] + quality_i - quality_j),
    quality ~ transitive_scale * N(0, 1),   c = cyclic_tournament(N).

  With `transitive_scale = 0` the world is purely cyclic: every BT model is at chance on it in
  expectation, while a GPM with one block (items at angles 2 pi i / N) is Bayes-optimal.

  Args:
    num_items: odd N >= 3.
    cyclic_scale: logit of the cyclic part (2.0: the cycle is followed 88% of the time).
    transitive_scale: standard deviation of the transitive quality.
    seed: seed of the quality draw.

  Returns:
    A `CyclicWorld`.

  >>> w = make_cyclic_world(3, cyclic_scale=2.0)
  >>> bool(w.logits[0, 1] > 0 and w.logits[1, 2] > 0 and w.logits[2, 0] > 0)  # A>B>C>A
  True
  """
  tournament = cyclic_tournament(num_items)
  rng = np.random.default_rng([seed, 0])
  quality = transitive_scale * rng.standard_normal(num_items)
  logits = cyclic_scale * tournament + quality[:, None] - quality[None, :]
  return CyclicWorld(logits=logits, quality=quality, tournament=tournament)


def make_cyclic_preferences(num_items: int = 31, *, num_train: int = 20000,
                            num_test: int = 10000, test_pair_fraction: float = 0.2,
                            cyclic_scale: float = 2.0, transitive_scale: float = 0.0,
                            seed: int = 0) -> CyclicPreferences:
  """Labelled comparisons of a `make_cyclic_world`, split by unordered item pair.

  The N (N - 1) / 2 unordered item pairs are shuffled; `test_pair_fraction` of them are held
  out. Each comparison picks an unordered pair uniformly from its split, a random order, and
  draws the label from the world's P(i beats j). So the test accuracy measures whether a model
  learnt the structure (the cycle), not a per-pair table. `test_seen` holds `num_test` fresh
  comparisons of the training item pairs.

  Note for BT on a purely cyclic world: in the full tournament every item wins exactly half of
  its pairs, so an item that wins more of its training pairs loses more of its held-out
  pairs; a BT model fitted to the training pairs is therefore anti-correlated with the
  held-out pairs (below chance), and only slightly above chance on `test_seen`.

  Args:
    num_items: odd N >= 3.
    num_train: number of training comparisons.
    num_test: number of held-out comparisons.
    test_pair_fraction: fraction of unordered item pairs held out (at least one).
    cyclic_scale: see `make_cyclic_world`.
    transitive_scale: see `make_cyclic_world`.
    seed: seed of the world, the split and the labels.

  Returns:
    A `CyclicPreferences`.
  """
  world = make_cyclic_world(num_items, cyclic_scale=cyclic_scale,
                            transitive_scale=transitive_scale, seed=seed)
  rng = np.random.default_rng([seed, 1])
  first, second = np.triu_indices(num_items, k=1)
  order = rng.permutation(first.size)
  num_test_pairs = max(1, int(round(test_pair_fraction * first.size)))
  splits = (order[num_test_pairs:], order[:num_test_pairs])

  def draw(pair_ids, count):
    picks = pair_ids[rng.integers(0, pair_ids.size, size=count)]
    a, b = first[picks], second[picks]
    swap = rng.random(count) < 0.5
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    chosen, rejected, prob_chosen, _ = _orient(a, b, _sigmoid(world.logits[a, b]), rng)
    return ItemPairs(chosen=chosen, rejected=rejected, prob_chosen=prob_chosen)

  return CyclicPreferences(world=world, train=draw(splits[0], num_train),
                           test=draw(splits[1], num_test),
                           test_seen=draw(splits[0], num_test))


# ----------------------------------------------------------------------------------------------
# Study 2: a mixture of user groups.
# ----------------------------------------------------------------------------------------------


class UserPairs(NamedTuple):
  """Comparisons labelled by users of known group.

  Attributes:
    chosen: [B, D] features of the responses drawn as preferred.
    rejected: [B, D] features of the other responses.
    user: [B] int user id of the labeller.
    group: [B] int ground-truth group of the labeller (hidden from the models).
    context: [B, C] context features of the pair (see `make_user_mixture_preferences`).
    prob_chosen: [B] P(chosen beats rejected) under the labeller's group reward.
    population_prob_chosen: [B] the same probability averaged over the groups, weighted by
      their share of the users: what a user-agnostic predictor can know at best.
  """
  chosen: np.ndarray
  rejected: np.ndarray
  user: np.ndarray
  group: np.ndarray
  context: np.ndarray
  prob_chosen: np.ndarray
  population_prob_chosen: np.ndarray


class UserMixturePreferences(NamedTuple):
  """Ground truth and splits of the user-mixture study.

  Attributes:
    group_weights: [G, D] linear ground-truth reward w_g of each group.
    user_group: [U] ground-truth group of each user.
    train: `UserPairs`.
    test: `UserPairs` (same users, fresh pairs).
  """
  group_weights: np.ndarray
  user_group: np.ndarray
  train: UserPairs
  test: UserPairs


def make_user_mixture_preferences(*, num_groups: int = 3, num_users: int = 60,
                                  feature_dim: int = 8, reward_scale: float = 3.0,
                                  context_strength: float = 2.0, num_train: int = 12000,
                                  num_test: int = 6000, seed: int = 0
                                  ) -> UserMixturePreferences:
  """Pairs of responses labelled by users whose group decides the reward.

  Ground truth:

  * G group rewards r_g(x) = <w_g, x>, w_g = reward_scale * (a random unit vector in R^D).
  * U users, user u in group g_u (users dealt to groups in turn, so the groups have equal
    size up to one user).
  * A comparison: a user u uniformly at random, two responses x_a, x_b ~ N(0, I_D), and the
    label from the user's group: P(a > b) = sigmoid(r_{g_u}(x_a) - r_{g_u}(x_b)).
  * A context vector per comparison, c = context_strength * onehot(g_u) + N(0, I_G): a noisy
    hint of which group asked (as a prompt hints at its asker's priorities; MiCRo's router is
    context-aware for this reason). Models never see `group`; the mixture's router may see
    `context`, MaxMin sees `user`.

  Args:
    num_groups: G >= 1.
    num_users: U >= G.
    feature_dim: D.
    reward_scale: norm of each w_g (3.0: most pairs are clear to their group).
    context_strength: how strongly the context reveals the group (0: not at all).
    num_train: training comparisons.
    num_test: held-out comparisons (same users, fresh responses and labels).
    seed: seed of everything.

  Returns:
    A `UserMixturePreferences`.

  >>> d = make_user_mixture_preferences(num_train=20, num_test=10, seed=0)
  >>> w = d.group_weights[d.train.group]
  >>> gap = np.sum(w * (d.train.chosen - d.train.rejected), axis=1)
  >>> bool(np.allclose(d.train.prob_chosen, 1 / (1 + np.exp(-gap))))
  True
  """
  if num_users < num_groups:
    raise ValueError(f"need num_users >= num_groups; got {num_users} < {num_groups}.")
  rng = np.random.default_rng([seed, 2])
  directions = rng.standard_normal((num_groups, feature_dim))
  group_weights = reward_scale * directions / np.linalg.norm(directions, axis=1,
                                                             keepdims=True)
  user_group = rng.permutation(np.arange(num_users) % num_groups)
  group_share = np.bincount(user_group, minlength=num_groups) / num_users

  def draw(count):
    user = rng.integers(0, num_users, size=count)
    group = user_group[user]
    a = rng.standard_normal((count, feature_dim))
    b = rng.standard_normal((count, feature_dim))
    all_gaps = (a - b) @ group_weights.T  # [B, G]
    prob_a = _sigmoid(all_gaps[np.arange(count), group])
    a_won = rng.random(count) < prob_a
    chosen = np.where(a_won[:, None], a, b)
    rejected = np.where(a_won[:, None], b, a)
    sign = np.where(a_won, 1.0, -1.0)
    prob_chosen = _sigmoid(sign * all_gaps[np.arange(count), group])
    population = _sigmoid(sign[:, None] * all_gaps) @ group_share
    context = (context_strength * np.eye(num_groups)[group]
               + rng.standard_normal((count, num_groups)))
    return UserPairs(chosen=chosen, rejected=rejected, user=user, group=group,
                     context=context, prob_chosen=prob_chosen,
                     population_prob_chosen=population)

  return UserMixturePreferences(group_weights=group_weights, user_group=user_group,
                                train=draw(num_train), test=draw(num_test))


# ----------------------------------------------------------------------------------------------
# Study 3: label noise.
# ----------------------------------------------------------------------------------------------


class NoisyPairs(NamedTuple):
  """Comparisons whose observed labels may be flipped.

  Attributes:
    chosen: [B, D] features of the responses labelled as preferred (after flipping).
    rejected: [B, D] features of the other responses.
    prob_chosen: [B] ground-truth P(chosen beats rejected) (below 0.5 for most flipped pairs).
    flipped: [B] bool, whether the observed label was flipped by the noise process.
  """
  chosen: np.ndarray
  rejected: np.ndarray
  prob_chosen: np.ndarray
  flipped: np.ndarray


class NoisyLabelPreferences(NamedTuple):
  """Ground truth and splits of the label-noise study.

  Attributes:
    hidden_weights: [H, D] first layer of the ground-truth reward.
    output_weights: [H] second layer of the ground-truth reward.
    train: `NoisyPairs` with a `flip_fraction` of flipped labels.
    test: `NoisyPairs` with clean labels (`flipped` all False).
  """
  hidden_weights: np.ndarray
  output_weights: np.ndarray
  train: NoisyPairs
  test: NoisyPairs


def noisy_label_reward(features: np.ndarray, hidden_weights: np.ndarray,
                       output_weights: np.ndarray) -> np.ndarray:
  """Ground-truth reward of the label-noise study, r(x) = <v, tanh(W x)>.

  Args:
    features: [..., D] response features.
    hidden_weights: [H, D] W.
    output_weights: [H] v.

  Returns:
    [...] rewards.

  >>> float(noisy_label_reward(np.zeros(2), np.ones((3, 2)), np.ones(3)))
  0.0
  """
  return np.tanh(features @ hidden_weights.T) @ output_weights


def make_noisy_label_preferences(*, feature_dim: int = 16, hidden_dim: int = 8,
                                 reward_scale: float = 4.0, flip_fraction: float = 0.25,
                                 num_train: int = 2000, num_test: int = 5000,
                                 seed: int = 0) -> NoisyLabelPreferences:
  """Clean Bradley-Terry pairs, then a uniformly random `flip_fraction` of labels flipped.

  Ground truth:

  * r(x) = <v, tanh(W x)> (`noisy_label_reward`), W [H, D] with N(0, 1 / D) entries and
    v = reward_scale * (a random unit vector in R^H): a small nonlinear reward.
  * A comparison: x_a, x_b ~ N(0, I_D), clean label from P(a > b) = sigmoid(r(x_a) - r(x_b)).
  * Training labels: exactly round(flip_fraction * num_train) pairs, chosen uniformly, have
    chosen and rejected swapped (`flipped` marks them; `prob_chosen` stays the true
    probability of the observed orientation). Test labels are clean.

  Args:
    feature_dim: D.
    hidden_dim: H.
    reward_scale: norm of v.
    flip_fraction: fraction of training labels flipped, in [0, 1].
    num_train: training comparisons.
    num_test: held-out (clean) comparisons.
    seed: seed of everything.

  Returns:
    A `NoisyLabelPreferences`.

  >>> d = make_noisy_label_preferences(num_train=100, num_test=10, flip_fraction=0.3)
  >>> int(d.train.flipped.sum()), bool(d.test.flipped.any())
  (30, False)
  """
  if not 0.0 <= flip_fraction <= 1.0:
    raise ValueError(f"`flip_fraction` must lie in [0, 1]; got {flip_fraction}.")
  rng = np.random.default_rng([seed, 3])
  hidden_weights = rng.standard_normal((hidden_dim, feature_dim)) / np.sqrt(feature_dim)
  direction = rng.standard_normal(hidden_dim)
  output_weights = reward_scale * direction / np.linalg.norm(direction)

  def draw(count, num_flips):
    a = rng.standard_normal((count, feature_dim))
    b = rng.standard_normal((count, feature_dim))
    gap = (noisy_label_reward(a, hidden_weights, output_weights)
           - noisy_label_reward(b, hidden_weights, output_weights))
    a_won = rng.random(count) < _sigmoid(gap)
    flipped = np.zeros(count, dtype=bool)
    flipped[rng.permutation(count)[:num_flips]] = True
    a_labelled = a_won ^ flipped
    chosen = np.where(a_labelled[:, None], a, b)
    rejected = np.where(a_labelled[:, None], b, a)
    prob_chosen = _sigmoid(np.where(a_labelled, gap, -gap))
    return NoisyPairs(chosen=chosen, rejected=rejected, prob_chosen=prob_chosen,
                      flipped=flipped)

  return NoisyLabelPreferences(
      hidden_weights=hidden_weights, output_weights=output_weights,
      train=draw(num_train, int(round(flip_fraction * num_train))),
      test=draw(num_test, 0))


# ----------------------------------------------------------------------------------------------
# Study 4: two properties in tension, an enumerable response set and a known pi_0
# (issue 16: transforming and combining rewards, overoptimisation).
# ----------------------------------------------------------------------------------------------


class PropertyPairs(NamedTuple):
  """Comparisons of two responses to the same prompt on one property (indices, not features).

  Attributes:
    prompt: [N] int prompt index p.
    chosen: [N] int response index (into the prompt's R responses) labelled as preferred.
    rejected: [N] int index of the other response.
    prob_chosen: [N] true Bradley-Terry P(chosen beats rejected) on the property.
    flipped: [N] bool, whether the observed label was flipped by the noise process.
  """
  prompt: np.ndarray
  chosen: np.ndarray
  rejected: np.ndarray
  prob_chosen: np.ndarray
  flipped: np.ndarray


class TwoPropertyWorld(NamedTuple):
  """Ground truth and preference data of the two-property world (`make_two_property_world`).

  Attributes:
    features: [P, R, D] phi(x, y) of the R responses of each of the P prompts.
    pi0_logits: [P, R] logits of the reference policy pi_0(y | x) = softmax over the R responses.
    pi0: [P, R] pi_0 itself (rows sum to 1).
    true_rewards: [2, P, R] the true rewards r_help (index 0) and r_harm (index 1).
    train: tuple of two `PropertyPairs` (help, harm): pairs drawn from pi_0, labelled by
      Bradley-Terry on the property's true reward, then a `flip_fraction` of labels flipped.
    test: tuple of two `PropertyPairs` with clean labels (held out, drawn the same way).
    params: dict of the ground truth's parameters (numpy arrays; see the generator).
  """
  features: np.ndarray
  pi0_logits: np.ndarray
  pi0: np.ndarray
  true_rewards: np.ndarray
  train: tuple
  test: tuple
  params: dict


PROPERTY_NAMES = ("help", "harm")


def two_property_rewards(features: np.ndarray, params: dict) -> np.ndarray:
  """True rewards of the two-property world, [2, ...] from features [..., D].

    s(phi)      = <u, phi>                                        (the shared latent, |u| = 1)
    g_k(phi)    = <v_k, tanh(W_k phi)>                             (a property's own part)
    o(phi)      = max(||phi|| / sqrt(D) - t, 0)^2                  (how atypical phi is)
    r_help      = scale * (g_help(phi) + a s(phi)) - c o(phi)
    r_harm      = scale * (g_harm(phi) - a s(phi)) - c o(phi)

  The latent s enters with opposite signs (the tension: what helps hurts harmlessness); the
  penalty o is zero on pi_0's typical set and grows outside it (responses pi_0 almost never
  produces are degenerate on both properties): data drawn from pi_0 hardly shows it, which is
  how a proxy trained on that data can be overoptimised.

  Args:
    features: [..., D].
    params: the world's `params` (keys u, v_help, w_help, v_harm, w_harm, latent_weight,
      scale, atypical_threshold, atypical_penalty).

  Returns:
    [2, ...] float64 (help, harm).

  >>> w = make_two_property_world(num_prompts=2, num_responses=4, num_pairs=4, seed=0)
  >>> bool(np.allclose(two_property_rewards(w.features, w.params), w.true_rewards))
  True
  """
  phi = np.asarray(features, np.float64)
  d = phi.shape[-1]
  s = phi @ params["u"]
  atypical = np.maximum(np.linalg.norm(phi, axis=-1) / np.sqrt(d)
                        - params["atypical_threshold"], 0.0) ** 2
  rewards = []
  for k, sign in (("help", 1.0), ("harm", -1.0)):
    g = np.tanh(phi @ params[f"w_{k}"].T) @ params[f"v_{k}"]
    rewards.append(params["scale"] * (g + sign * params["latent_weight"] * s)
                   - params["atypical_penalty"] * atypical)
  return np.stack(rewards)


def _property_pairs(rng, pi0, rewards, count, num_flips):
  """Pairs from pi_0 (prompt uniform, both responses iid from pi_0(. | x)), BT labels, flips."""
  num_prompts, num_responses = pi0.shape
  prompt = rng.integers(0, num_prompts, count)
  cdf = np.cumsum(pi0, axis=1)
  draw = lambda: np.minimum(  # noqa: E731
      (rng.random(count)[:, None] * cdf[prompt, -1:] > cdf[prompt]).sum(1), num_responses - 1)
  a, b = draw(), draw()
  gap = rewards[prompt, a] - rewards[prompt, b]
  a_won = rng.random(count) < _sigmoid(gap)
  flipped = np.zeros(count, dtype=bool)
  flipped[rng.permutation(count)[:num_flips]] = True
  a_labelled = a_won ^ flipped
  return PropertyPairs(prompt=prompt, chosen=np.where(a_labelled, a, b),
                       rejected=np.where(a_labelled, b, a),
                       prob_chosen=_sigmoid(np.where(a_labelled, gap, -gap)), flipped=flipped)


def make_two_property_world(*, num_prompts: int = 64, num_responses: int = 256,
                            feature_dim: int = 12, hidden_dim: int = 8,
                            latent_weight: float = 1.0, reward_scale: float = 1.5,
                            radial_spread: float = 0.45, pi0_temperature: float = 0.5,
                            pi0_noise: float = 0.5, atypical_threshold: float = 1.1,
                            atypical_penalty: float = 8.0, num_pairs: int = 500,
                            num_test_pairs: int = 2000, flip_fraction: float = 0.25,
                            seed: int = 0) -> TwoPropertyWorld:
  """A world with two true rewards in tension, enumerable responses and a known pi_0.

  Ground truth (every array a deterministic function of `seed`, numpy `Generator`s):

  * Responses: for each of P prompts, R responses with features phi = rho z, z ~ N(0, I_D),
    rho = exp(radial_spread * N(0, 1)) (a few responses are far from the bulk).
  * Reference policy (a stand-in for an SFT model, known exactly): pi_0(y | x) =
    softmax_y(l), l = -||phi||^2 / (2 D pi0_temperature) + pi0_noise * N(0, 1): pi_0 prefers
    typical responses and puts little mass on atypical ones.
  * True rewards `two_property_rewards`: r_help and r_harm share the latent s = <u, phi> with
    opposite signs (tension) plus each its own small tanh MLP (hidden_dim units, W with
    N(0, 1 / D) entries, v a random unit vector), scaled by `reward_scale`, minus the
    atypicality penalty c max(||phi|| / sqrt(D) - t, 0)^2 shared by both.
  * Preference data per property: pairs (x, y_a, y_b) with x uniform and y_a, y_b iid from
    pi_0(. | x); label by Bradley-Terry on the property's true reward, P(a > b) =
    sigmoid(r(y_a) - r(y_b)); then exactly round(flip_fraction * num_pairs) labels, chosen
    uniformly, swapped (Coste et al. 2024 use 25%). Held-out test pairs: clean labels.

  Args:
    num_prompts: P.
    num_responses: R.
    feature_dim: D.
    hidden_dim: hidden units of each property's MLP.
    latent_weight: a, weight of the shared latent (larger: more tension).
    reward_scale: scale of the MLP + latent part.
    radial_spread: std of log rho.
    pi0_temperature: temperature of pi_0's preference for typical responses.
    pi0_noise: std of the noise on pi_0's logits.
    atypical_threshold: t (in units of sqrt(D)).
    atypical_penalty: c.
    num_pairs: training pairs per property.
    num_test_pairs: held-out clean pairs per property.
    flip_fraction: fraction of training labels flipped, in [0, 1].
    seed: seed of everything.

  Returns:
    A `TwoPropertyWorld`.

  References:
    Gao et al. (2022), "Scaling Laws for Reward Model Overoptimization", arXiv:2210.10760;
    Coste et al. (2024), "Reward Model Ensembles Help Mitigate Overoptimization", ICLR;
    Wang et al. (2024), "Transforming and Combining Rewards for Aligning Large Language Models",
    arXiv:2402.00742.

  >>> w = make_two_property_world(num_prompts=3, num_responses=5, num_pairs=20, seed=1)
  >>> w.features.shape, w.true_rewards.shape, int(w.train[0].flipped.sum())
  ((3, 5, 12), (2, 3, 5), 5)
  >>> bool(np.allclose(w.pi0.sum(1), 1.0))
  True
  """
  if not 0.0 <= flip_fraction <= 1.0:
    raise ValueError(f"`flip_fraction` must lie in [0, 1]; got {flip_fraction}.")
  if num_prompts < 1 or num_responses < 2:
    raise ValueError("`num_prompts` must be >= 1 and `num_responses` >= 2; got "
                     f"{num_prompts} and {num_responses}.")
  rng = np.random.default_rng([seed, 4])
  d = feature_dim
  u = rng.standard_normal(d)
  params = {"u": u / np.linalg.norm(u), "latent_weight": float(latent_weight),
            "scale": float(reward_scale), "atypical_threshold": float(atypical_threshold),
            "atypical_penalty": float(atypical_penalty)}
  for k in PROPERTY_NAMES:
    params[f"w_{k}"] = rng.standard_normal((hidden_dim, d)) / np.sqrt(d)
    v = rng.standard_normal(hidden_dim)
    params[f"v_{k}"] = np.sqrt(hidden_dim) * v / np.linalg.norm(v)
  radius = np.exp(radial_spread * rng.standard_normal((num_prompts, num_responses, 1)))
  features = radius * rng.standard_normal((num_prompts, num_responses, d))
  logits = (-np.sum(features ** 2, -1) / (2 * d * pi0_temperature)
            + pi0_noise * rng.standard_normal((num_prompts, num_responses)))
  logits = logits - logits.max(1, keepdims=True)
  pi0 = np.exp(logits)
  pi0 = pi0 / pi0.sum(1, keepdims=True)
  true = two_property_rewards(features, params)
  flips = int(round(flip_fraction * num_pairs))
  train = tuple(_property_pairs(rng, pi0, true[k], num_pairs, flips) for k in range(2))
  test = tuple(_property_pairs(rng, pi0, true[k], num_test_pairs, 0) for k in range(2))
  return TwoPropertyWorld(features=features, pi0_logits=logits, pi0=pi0, true_rewards=true,
                          train=train, test=test, params=params)
