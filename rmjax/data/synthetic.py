"""Synthetic preference pairs with a known ground-truth reward and Bayes-optimal accuracy.

The task (prompt-dependent, small enough for a 2-layer byte-level transformer):

* World: an alphabet of the first ``num_letters`` letters (default 10: a..j) and a value
  ``w[c] ~ N(0, 1)`` for each, drawn once from ``world_seed`` and shared by every split.
* Prompt: UPPERCASE letters, length uniform in ``[prompt_len_min, prompt_len_max]``
  (default 2..5). Response: lowercase letters, length uniform in
  ``[response_len_min, response_len_max]`` (default 4..12, so padding is exercised).
  The case marks where the prompt ends, so no separator token is needed and the response
  letters never collide with the prompt letters as byte tokens.
* Ground truth reward, the mean over the response letters ``y_t`` of their value plus a
  bonus when the letter (in upper case) occurs in the prompt ``x``::

      r*(x, y) = mean_t ( w[y_t] + match_bonus * 1[upper(y_t) in x] )

* Pairs: per prompt two independent responses ``a`` and ``b``; the label follows
  Bradley-Terry at temperature ``T``: ``P(a preferred) = sigmoid((r*(a) - r*(b)) / T)``, and
  ``chosen`` is the one drawn as preferred. ``preference_prob`` is the true probability
  that the chosen response is preferred (below 0.5 when the label went against the truth).
* Bayes-optimal accuracy of a split: ``mean_i max(p_i, 1 - p_i)``, the expected accuracy of
  the ground truth over label noise, exact given the sampled pairs. The realised accuracy of
  the ground truth on the sampled labels is reported beside it.

At the defaults (``num_letters = 10``, ``match_bonus = 1.0``, ``temperature = 0.11``,
``world_seed = 0``, ``seed = 0``) the Bayes-optimal accuracy is 0.871 on the 4096 eval pairs
and 0.871 on the 32768 train pairs: about one label in eight goes against the ground truth.
A scorer that ignores the prompt (it cannot see the bonus) reaches about 0.79 in expectation,
8 points lower, so a model must read the prompt to come close to the Bayes-optimal accuracy.
Sequences hold at most 1 + 5 + 12 + 1 = 19 tokens.

Why these defaults: the proposed 26 letters with prompts of 6..12 and responses of 6..20
letters took a 2-layer, d_model 128 transformer about 2000 steps of 64 pairs to come within
3 points of the Bayes-optimal accuracy; with 10 letters and shorter strings it came within
2 points after 500 steps and within 1 point after 1000 (AdamW, lr 1e-3, CPU, about 0.1 s a
step at max_len 20). The task keeps the same structure: a per-letter value learned from the
embedding, a prompt lookup by attention, and a mean over the response.

Everything is a deterministic function of the seeds (numpy ``Generator``s): the world comes
from ``world_seed``; the train and eval splits from the sub-seeds ``[seed, 0]`` and
``[seed, 1]``.

>>> world = make_world(0)
>>> round(ground_truth_reward("AB", "ab", world) - float(world[:2].mean()), 6)  # both match
1.0
"""

from __future__ import annotations

import string
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from rmjax import eval as rm_eval

ALPHABET_SIZE = 26
PROMPT_LETTERS = string.ascii_uppercase
RESPONSE_LETTERS = string.ascii_lowercase

_TRAIN_STREAM = 0
_EVAL_STREAM = 1


class SyntheticSplit(NamedTuple):
  """One split of synthetic pairs, as parallel columns (N pairs).

  Attributes:
    prompt: N prompt strings (uppercase letters).
    chosen: N chosen responses (lowercase letters).
    rejected: N rejected responses.
    margin: float32 [N], all zero (synthetic pairs carry no margin).
    preference_prob: float32 [N], true P(chosen is preferred).
    chosen_reward: float64 [N], r*(prompt, chosen).
    rejected_reward: float64 [N], r*(prompt, rejected).
    strength: int64 [N], preference strength 0..3 of the true gap (`strength_from_gap`).
    chosen_attributes: float32 [N, 5], `response_attributes` of the chosen responses.
    rejected_attributes: float32 [N, 5], likewise for the rejected responses.
  """

  prompt: list[str]
  chosen: list[str]
  rejected: list[str]
  margin: np.ndarray
  preference_prob: np.ndarray
  chosen_reward: np.ndarray
  rejected_reward: np.ndarray
  strength: np.ndarray
  chosen_attributes: np.ndarray
  rejected_attributes: np.ndarray


_SETTING_NAMES = (
    "seed", "world_seed", "num_train", "num_eval", "prompt_len_min", "prompt_len_max",
    "response_len_min", "response_len_max", "num_letters", "match_bonus", "temperature",
    "margin", "strength_thresholds", "attribute_missing_prob", "list_size",
    "num_user_groups", "context_pairs", "query_pairs")
MARGINS = ("none", "strength")
# Reward gaps |r*(a) - r*(b)| at which the strength reaches 1, 2, 3. At the defaults about
# 10% of the pairs are ties (strength 0), and 30%, 30%, 30% have strengths 1, 2, 3.
STRENGTH_THRESHOLDS = (0.05, 0.2, 0.5)
# The five HelpSteer2 attributes, in `rmjax.losses.HELPSTEER2_ATTRIBUTES` order.
ATTRIBUTE_NAMES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def default_synthetic_config() -> dict[str, Any]:
  """Default settings of the synthetic generator (the ``synthetic`` block of the data config).

  Returns:
    dict with ``seed`` (0), ``world_seed`` (0), ``num_train`` (32768 pairs), ``num_eval``
    (4096 pairs), ``prompt_len_min`` (2), ``prompt_len_max`` (5), ``response_len_min`` (4),
    ``response_len_max`` (12), ``num_letters`` (10), ``match_bonus`` (1.0),
    ``temperature`` (0.11); for the other data formats and fields: ``margin`` ("none": all
    zero; "strength": the pair's `strength_from_gap`, HelpSteer2-Preference style),
    ``strength_thresholds`` (`STRENGTH_THRESHOLDS`), ``attribute_missing_prob`` (0.0: every
    attribute rated; else each rating is missing independently with this probability),
    ``list_size`` (4 responses per prompt, format "lists"), ``num_user_groups`` (2),
    ``context_pairs`` (8) and ``query_pairs`` (8) (format "user_episodes"). ``num_train``
    and ``num_eval`` count pairs, lists or user episodes, by format.
  """
  return dict(
      seed=0, world_seed=0, num_train=32768, num_eval=4096, prompt_len_min=2,
      prompt_len_max=5, response_len_min=4, response_len_max=12, num_letters=10,
      match_bonus=1.0, temperature=0.11, margin="none", strength_thresholds=STRENGTH_THRESHOLDS,
      attribute_missing_prob=0.0, list_size=4, num_user_groups=2, context_pairs=8,
      query_pairs=8)


def _settings(config: Mapping[str, Any] | Any) -> dict[str, Any]:
  """Reads and validates the generator settings from a mapping or ConfigDict."""
  get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
  defaults = default_synthetic_config()
  out = {}
  for name in _SETTING_NAMES:
    value = get(name, None)
    out[name] = defaults[name] if value is None else value
  for name in _SETTING_NAMES[:9]:
    value = out[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"synthetic.{name} must be an int, got {value!r}")
  for name in ("seed", "world_seed"):
    if out[name] < 0:
      raise ValueError(f"synthetic.{name} must be >= 0, got {out[name]}")
  for name in ("num_train", "num_eval"):
    if out[name] < 1:
      raise ValueError(f"synthetic.{name} must be >= 1, got {out[name]}")
  for part in ("prompt", "response"):
    lo, hi = out[f"{part}_len_min"], out[f"{part}_len_max"]
    if not 1 <= lo <= hi:
      raise ValueError(
          f"synthetic.{part}_len_min and synthetic.{part}_len_max must satisfy "
          f"1 <= min <= max, got min={lo}, max={hi}")
  if not 2 <= out["num_letters"] <= ALPHABET_SIZE:
    raise ValueError(f"synthetic.num_letters must lie in [2, {ALPHABET_SIZE}], got "
                     f"{out['num_letters']}")
  bonus, temperature = float(out["match_bonus"]), float(out["temperature"])
  if not np.isfinite(bonus):
    raise ValueError(f"synthetic.match_bonus must be finite, got {out['match_bonus']!r}")
  if not (np.isfinite(temperature) and temperature > 0):
    raise ValueError(f"synthetic.temperature must be > 0, got {out['temperature']!r}")
  out["match_bonus"], out["temperature"] = bonus, temperature
  if out["margin"] not in MARGINS:
    raise ValueError(f"synthetic.margin must be one of {list(MARGINS)}, got {out['margin']!r}")
  thresholds = tuple(out["strength_thresholds"])
  if (len(thresholds) != 3 or not all(isinstance(t, (int, float)) for t in thresholds)
      or not 0 < thresholds[0] < thresholds[1] < thresholds[2]):
    raise ValueError("synthetic.strength_thresholds must be 3 increasing positive gaps, got "
                     f"{out['strength_thresholds']!r}")
  out["strength_thresholds"] = tuple(float(t) for t in thresholds)
  missing = out["attribute_missing_prob"]
  if isinstance(missing, bool) or not isinstance(missing, (int, float)) or not 0 <= missing < 1:
    raise ValueError(f"synthetic.attribute_missing_prob must lie in [0, 1), got {missing!r}")
  for name, minimum in (("list_size", 2), ("num_user_groups", 1), ("context_pairs", 1),
                        ("query_pairs", 1)):
    value = out[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
      raise ValueError(f"synthetic.{name} must be an int >= {minimum}, got {value!r}")
  return out


def make_world(world_seed: int, num_letters: int = ALPHABET_SIZE) -> np.ndarray:
  """The letter values of the world: float64 [K], ``w[c] ~ N(0, 1)`` for the first K letters.

  Args:
    world_seed: seed of the numpy Generator.
    num_letters: K, alphabet size (the first K letters of 'a'..'z').
  """
  return np.random.default_rng(world_seed).normal(size=num_letters)


def _check_world(world: np.ndarray) -> np.ndarray:
  world = np.asarray(world, dtype=np.float64)
  if world.ndim != 1 or not 1 <= world.shape[0] <= ALPHABET_SIZE:
    raise ValueError(f"world must have shape [K] with 1 <= K <= {ALPHABET_SIZE}, got "
                     f"{world.shape}")
  return world


def ground_truth_reward(prompt: str, response: str, world: np.ndarray,
                        match_bonus: float = 1.0) -> float:
  """The ground-truth reward ``r*(x, y) = mean_t(w[y_t] + match_bonus * 1[upper(y_t) in x])``.

  Args:
    prompt: the prompt ``x``, uppercase letters.
    response: the response ``y``, non-empty, lowercase letters.
    world: [K] letter values from `make_world`; letters are the first K of the alphabet.
    match_bonus: bonus of a response letter whose upper case occurs in the prompt.

  Returns:
    The reward as a Python float.

  >>> world = np.arange(26, dtype=float)  # w['a'] = 0, w['b'] = 1, w['c'] = 2, ...
  >>> ground_truth_reward("BX", "abc", world)  # (0 + (1 + 1) + 2) / 3
  1.333...
  """
  world = _check_world(world)
  k = len(world)
  if not response:
    raise ValueError("response must be non-empty")
  bad = set(response) - set(RESPONSE_LETTERS[:k])
  if bad:
    raise ValueError(f"response must hold lowercase letters a-{RESPONSE_LETTERS[k - 1]} only, "
                     f"got {sorted(bad)}")
  bad = set(prompt) - set(PROMPT_LETTERS[:k])
  if bad:
    raise ValueError(f"prompt must hold uppercase letters A-{PROMPT_LETTERS[k - 1]} only, "
                     f"got {sorted(bad)}")
  in_prompt = set(prompt.lower())
  values = [world[ord(c) - ord("a")] + match_bonus * (c in in_prompt) for c in response]
  return float(np.mean(values))


def _letter_ids(texts: Sequence[str], first: str, length: int) -> tuple[np.ndarray, np.ndarray]:
  """[N, length] letter ids (0..25, padded with 0) and int lengths [N] of letter strings."""
  ids = np.zeros((len(texts), length), dtype=np.int64)
  lengths = np.zeros(len(texts), dtype=np.int64)
  for i, text in enumerate(texts):
    row = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord(first)
    ids[i, :len(row)] = row
    lengths[i] = len(row)
  return ids, lengths


def ground_truth_rewards(prompts: Sequence[str], responses: Sequence[str], world: np.ndarray,
                         match_bonus: float = 1.0) -> np.ndarray:
  """Vectorised `ground_truth_reward` over N (prompt, response) pairs.

  Args:
    prompts: N prompts (uppercase letters).
    responses: N non-empty responses (lowercase letters).
    world: [K] letter values.
    match_bonus: bonus of a response letter whose upper case occurs in the prompt.

  Returns:
    float64 [N] rewards.
  """
  world = _check_world(world)
  if len(prompts) != len(responses):
    raise ValueError(
        f"prompts and responses must have equal lengths, got {len(prompts)} and "
        f"{len(responses)}")
  k = len(world)
  for name, texts, letters in (("prompts", prompts, PROMPT_LETTERS[:k]),
                               ("responses", responses, RESPONSE_LETTERS[:k])):
    allowed = set(letters)
    for i, text in enumerate(texts):
      if not set(text) <= allowed or (name == "responses" and not text):
        raise ValueError(
            f"{name}[{i}] must be a {'non-empty ' if name == 'responses' else ''}string of "
            f"{letters[0]}-{letters[-1]}, got {text!r}")
  max_p = max([len(p) for p in prompts] + [1])
  max_r = max([len(r) for r in responses] + [1])
  x, x_len = _letter_ids(prompts, "A", max_p)
  y, y_len = _letter_ids(responses, "a", max_r)
  present = _presence(x, x_len, k)
  return _rewards(y, y_len, present, world, match_bonus)


def _presence(x: np.ndarray, x_len: np.ndarray, num_letters: int) -> np.ndarray:
  """bool [N, K]: which letters occur in each prompt."""
  present = np.zeros((x.shape[0], num_letters), dtype=bool)
  rows = np.repeat(np.arange(x.shape[0]), x_len)
  cols = x[np.arange(x.shape[1])[None, :] < x_len[:, None]]
  present[rows, cols] = True
  return present


def _rewards(y: np.ndarray, y_len: np.ndarray, present: np.ndarray, world: np.ndarray,
             match_bonus: float) -> np.ndarray:
  """float64 [N] rewards of responses ``y`` [N, T] (ids) with lengths [N]."""
  valid = np.arange(y.shape[1])[None, :] < y_len[:, None]
  matched = np.take_along_axis(present, y, axis=1)
  values = world[y] + match_bonus * matched
  return np.where(valid, values, 0.0).sum(axis=1) / y_len


def ground_truth_label_accuracy(chosen_reward: np.ndarray, rejected_reward: np.ndarray) -> float:
  """Realised accuracy of the ground truth on the sampled labels (ties count one half).

  Args:
    chosen_reward: [N] r* of the chosen responses.
    rejected_reward: [N] r* of the rejected responses.
  """
  chosen_reward = np.asarray(chosen_reward, dtype=np.float64)
  rejected_reward = np.asarray(rejected_reward, dtype=np.float64)
  wins = (chosen_reward > rejected_reward) + 0.5 * (chosen_reward == rejected_reward)
  return float(np.mean(wins))


def _sigmoid(z: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * z))


def _strings(ids: np.ndarray, lengths: np.ndarray, first: str) -> list[str]:
  chars = (ids + ord(first)).astype(np.uint8)
  return [chars[i, :n].tobytes().decode("ascii") for i, n in enumerate(lengths)]


def sample_split(num_pairs: int, rng: np.random.Generator, world: np.ndarray,
                 config: Mapping[str, Any] | Any) -> SyntheticSplit:
  """Samples ``num_pairs`` labelled pairs (see the module docstring).

  Args:
    num_pairs: N, number of pairs.
    rng: the numpy Generator consumed (prompts, then responses a and b, then labels).
    world: [K] letter values; letters are drawn uniformly from the first K.
    config: generator settings (lengths, ``match_bonus``, ``temperature``).

  Returns:
    A `SyntheticSplit` of N pairs.
  """
  s = _settings(config)
  world = _check_world(world)
  n = int(num_pairs)

  def letters(lo, hi):
    lengths = rng.integers(lo, hi + 1, size=n)
    ids = rng.integers(0, len(world), size=(n, hi))
    ids = np.where(np.arange(hi)[None, :] < lengths[:, None], ids, 0)
    return ids, lengths

  x, x_len = letters(s["prompt_len_min"], s["prompt_len_max"])
  a, a_len = letters(s["response_len_min"], s["response_len_max"])
  b, b_len = letters(s["response_len_min"], s["response_len_max"])
  present = _presence(x, x_len, len(world))
  r_a = _rewards(a, a_len, present, world, s["match_bonus"])
  r_b = _rewards(b, b_len, present, world, s["match_bonus"])
  p_a = _sigmoid((r_a - r_b) / s["temperature"])
  a_preferred = rng.random(n) < p_a

  prompts = _strings(x, x_len, "A")
  a_text, b_text = _strings(a, a_len, "a"), _strings(b, b_len, "a")
  chosen = [ta if pref else tb for ta, tb, pref in zip(a_text, b_text, a_preferred)]
  rejected = [tb if pref else ta for ta, tb, pref in zip(a_text, b_text, a_preferred)]
  strength = strength_from_gap(np.abs(r_a - r_b), s["strength_thresholds"])
  attrs_a = _attributes(a, a_len, present, world, r_a)
  attrs_b = _attributes(b, b_len, present, world, r_b)
  margin = (strength.astype(np.float32) if s["margin"] == "strength"
            else np.zeros(n, dtype=np.float32))
  return SyntheticSplit(
      prompt=prompts,
      chosen=chosen,
      rejected=rejected,
      margin=margin,
      preference_prob=np.where(a_preferred, p_a, 1.0 - p_a).astype(np.float32),
      chosen_reward=np.where(a_preferred, r_a, r_b),
      rejected_reward=np.where(a_preferred, r_b, r_a),
      strength=strength,
      chosen_attributes=np.where(a_preferred[:, None], attrs_a, attrs_b),
      rejected_attributes=np.where(a_preferred[:, None], attrs_b, attrs_a),
  )


def strength_from_gap(gap: np.ndarray,
                      thresholds: Sequence[float] = STRENGTH_THRESHOLDS) -> np.ndarray:
  """Preference strength 0..3 of pairs: how many of the 3 thresholds their true gap reaches.

  The synthetic stand-in for HelpSteer2-Preference's annotated strength (|strength| in
  0..3; 0 = tie, 3 = "much better"). It is a function of the true reward gap, so it does
  not say which side won; the label may still go against the truth.

  Args:
    gap: [N] non-negative true reward gaps |r*(a) - r*(b)|.
    thresholds: 3 increasing gaps (default `STRENGTH_THRESHOLDS` = (0.05, 0.2, 0.5)).

  Returns:
    int64 [N] strengths.

  >>> strength_from_gap(np.array([0.0, 0.1, 0.3, 2.0])).tolist()
  [0, 1, 2, 3]
  """
  return np.searchsorted(np.asarray(thresholds, np.float64), np.asarray(gap, np.float64),
                         side="right").astype(np.int64)


def _attributes(y: np.ndarray, y_len: np.ndarray, present: np.ndarray, world: np.ndarray,
                reward: np.ndarray) -> np.ndarray:
  """float32 [N, 5] HelpSteer2-style ratings 0..4 of responses (see `response_attributes`)."""
  valid = np.arange(y.shape[1])[None, :] < y_len[:, None]
  matched = np.where(valid, np.take_along_axis(present, y, axis=1), False).sum(1) / y_len
  value = np.where(valid, world[y], 0.0).sum(1) / y_len
  distinct = np.array([len(set(row[:n].tolist())) for row, n in zip(y, y_len)])
  ratings = np.stack([
      np.round(2 + (reward - 0.4) / 0.34),  # helpfulness: the standardised reward r*
      np.round(4 * matched),                # correctness: share of letters from the prompt
      np.round(2 + value / 0.3),            # coherence: the prompt-free value mean w[y]
      distinct - 3,                         # complexity: distinct letters
      (y_len - 4) // 2,                     # verbosity: length
  ], axis=1)
  return np.clip(ratings, 0, 4).astype(np.float32)


def response_attributes(prompts: Sequence[str], responses: Sequence[str], world: np.ndarray,
                        match_bonus: float = 1.0) -> np.ndarray:
  """Synthetic HelpSteer2-style ratings (each 0..4, rounded and clipped) of responses.

  The ground truth of the attribute-regression data, in `ATTRIBUTE_NAMES` order:

    helpfulness = round(2 + (r*(x, y) - 0.4) / 0.34)   the reward, standardised (its mean
                                                        and std are about 0.39 and 0.34)
    correctness = round(4 * mean_t 1[upper(y_t) in x]) share of letters taken from the prompt
    coherence   = round(2 + mean_t w[y_t] / 0.3)       the prompt-free part of the reward
    complexity  = (distinct letters of y) - 3
    verbosity   = (len(y) - 4) // 2

  The HelpSteer2 score of these ratings (`rmjax.losses.helpsteer2_attribute_score`) rises
  with r* through helpfulness, correctness and coherence, but complexity and verbosity
  add length effects that r* does not have, so ranking by it loses some accuracy.

  Args:
    prompts: N prompts; responses: N non-empty responses; world: [K] letter values;
    match_bonus: the reward's bonus (as in `ground_truth_rewards`).

  Returns:
    float32 [N, 5].

  >>> response_attributes(["AB"], ["ab"], np.zeros(10)).tolist()  # r* = 1, all matched
  [[4.0, 4.0, 2.0, 0.0, 0.0]]
  """
  world = _check_world(world)
  reward = ground_truth_rewards(prompts, responses, world, match_bonus)
  x, x_len = _letter_ids(prompts, "A", max([len(p) for p in prompts] + [1]))
  y, y_len = _letter_ids(responses, "a", max([len(r) for r in responses] + [1]))
  return _attributes(y, y_len, _presence(x, x_len, len(world)), world, reward)


class SyntheticLists(NamedTuple):
  """N prompts with K ranked responses each (format "lists").

  Attributes:
    prompt: N prompt strings.
    responses: N lists of K response strings.
    reward: float64 [N, K] true rewards r*.
    ranking: int32 [N, K], ranking[n, k] = index of the response at place k, best first.
  """

  prompt: list[str]
  responses: list[list[str]]
  reward: np.ndarray
  ranking: np.ndarray


def sample_lists(num_lists: int, list_size: int, rng: np.random.Generator,
                 world: np.ndarray, config: Mapping[str, Any] | Any) -> SyntheticLists:
  """Samples prompts with K responses ranked by a Plackett-Luce draw from the true rewards.

  The ranking is a Plackett-Luce sample with utilities r*/T (the Gumbel-max trick: sort
  r*/T + Gumbel noise), so any two of its responses are ordered exactly as the Bradley-Terry
  labels of format "pairs" at the same temperature T.

  Args:
    num_lists: N; list_size: K; rng: consumed (prompts, responses, Gumbel noise);
    world: [K_letters] values; config: generator settings.

  Returns:
    `SyntheticLists`.
  """
  s = _settings(config)
  world = _check_world(world)
  n, k = int(num_lists), int(list_size)
  x_len = rng.integers(s["prompt_len_min"], s["prompt_len_max"] + 1, size=n)
  x = rng.integers(0, len(world), size=(n, s["prompt_len_max"]))
  x = np.where(np.arange(x.shape[1])[None, :] < x_len[:, None], x, 0)
  hi = s["response_len_max"]
  y_len = rng.integers(s["response_len_min"], hi + 1, size=(n, k))
  y = rng.integers(0, len(world), size=(n, k, hi))
  y = np.where(np.arange(hi)[None, None, :] < y_len[..., None], y, 0)
  present = np.repeat(_presence(x, x_len, len(world)), k, axis=0)
  reward = _rewards(y.reshape(n * k, hi), y_len.reshape(-1), present, world,
                    s["match_bonus"]).reshape(n, k)
  noisy = reward / s["temperature"] + rng.gumbel(size=(n, k))
  ranking = np.argsort(-noisy, axis=1, kind="stable").astype(np.int32)
  texts = _strings(y.reshape(n * k, hi), y_len.reshape(-1), "a")
  return SyntheticLists(prompt=_strings(x, x_len, "A"),
                        responses=[texts[i * k:(i + 1) * k] for i in range(n)],
                        reward=reward, ranking=ranking)


class SyntheticEpisodes(NamedTuple):
  """N user episodes of P = context + query pairs, all labelled by one user (format
  "user_episodes").

  Attributes:
    prompt, chosen, rejected: N lists of P strings.
    preference_prob: float32 [N, P], true P(chosen preferred) for the episode's user.
    group: int64 [N], the user's group (which world labelled the pairs).
    agreement: float64, share of the pairs whose true order is the same in group 0's world.
    group_blind_prob: float32 [N, P], the expected accuracy on each pair of the best
      predictor that cannot tell the groups apart: it prefers chosen iff the mean over the
      (uniformly drawn) groups of P_g(chosen preferred) exceeds 1/2.
  """

  prompt: list[list[str]]
  chosen: list[list[str]]
  rejected: list[list[str]]
  preference_prob: np.ndarray
  group: np.ndarray
  agreement: float
  group_blind_prob: np.ndarray


def user_group_worlds(world_seed: int, num_letters: int, num_groups: int) -> list[np.ndarray]:
  """The letter values of G user groups: group 0 has the world of format "pairs", group 1
  the opposite taste (-w; both groups still like letters taken from the prompt), groups
  g >= 2 an independent world from ``world_seed + g``.

  >>> w0, w1 = user_group_worlds(0, 10, 2)
  >>> bool(np.all(w1 == -w0))
  True
  """
  base = make_world(world_seed, num_letters)
  return [base if g == 0 else -base if g == 1 else make_world(world_seed + g, num_letters)
          for g in range(num_groups)]


def sample_user_episodes(num_episodes: int, rng: np.random.Generator,
                         worlds: Sequence[np.ndarray], config: Mapping[str, Any] | Any
                         ) -> SyntheticEpisodes:
  """Samples user episodes: a user from one of G groups and P pairs that user labelled.

  Group g has its own letter values ``worlds[g]`` (same prompts, same reward form); the user
  labels every pair of the episode by Bradley-Terry on r*_g. The first ``context_pairs``
  are the user's annotated examples (VPL's context), the remaining ``query_pairs`` are
  predicted. A model that sees only one pair cannot know the group; one that reads the
  context can.

  Args:
    num_episodes: N; rng: consumed (groups, then the pairs of each group);
    worlds: G letter-value arrays; config: generator settings.

  Returns:
    `SyntheticEpisodes`.
  """
  s = _settings(config)
  n, p = int(num_episodes), s["context_pairs"] + s["query_pairs"]
  group = rng.integers(0, len(worlds), size=n)
  prompt, chosen, rejected = [None] * n, [None] * n, [None] * n
  prob = np.zeros((n, p), np.float32)
  blind = np.zeros((n, p), np.float32)
  agree = []
  for g, world in enumerate(worlds):
    rows = np.flatnonzero(group == g)
    split = sample_split(len(rows) * p, rng, world, s)
    if rows.size:
      # The true gap of every pair under every group's world.
      gaps = np.stack([
          ground_truth_rewards(split.prompt, split.chosen, w, s["match_bonus"])
          - ground_truth_rewards(split.prompt, split.rejected, w, s["match_bonus"])
          for w in worlds])
      agree.append(np.sign(gaps[0]) == np.sign(gaps[g]))
      blind_prefers_chosen = _sigmoid(gaps / s["temperature"]).mean(axis=0) > 0.5
      own = split.preference_prob.astype(np.float64)
      blind_split = np.where(blind_prefers_chosen, own, 1.0 - own)
    for j, row in enumerate(rows):
      sl = slice(j * p, (j + 1) * p)
      prompt[row], chosen[row], rejected[row] = (split.prompt[sl], split.chosen[sl],
                                                 split.rejected[sl])
      prob[row] = split.preference_prob[sl]
      blind[row] = blind_split[sl]
  agreement = float(np.mean(np.concatenate(agree))) if agree else 1.0
  return SyntheticEpisodes(prompt, chosen, rejected, prob, group, agreement, blind)


def split_summary(split: SyntheticSplit) -> dict[str, Any]:
  """Report of one split: pairs, Bayes-optimal and realised ground-truth accuracy, label noise.

  Args:
    split: a `SyntheticSplit`.
  """
  return dict(
      num_pairs=len(split.prompt),
      bayes_optimal_accuracy=float(rm_eval.bayes_optimal_pairwise_accuracy(split.preference_prob)),
      ground_truth_accuracy_on_labels=ground_truth_label_accuracy(
          split.chosen_reward, split.rejected_reward),
      mean_preference_prob=float(np.mean(split.preference_prob, dtype=np.float64)),
  )


def make_synthetic_preferences(
    config: Mapping[str, Any] | Any
) -> tuple[SyntheticSplit, SyntheticSplit, dict[str, Any]]:
  """Generates the train and eval splits of the synthetic task.

  Args:
    config: the ``synthetic`` settings (a ConfigDict or mapping; missing fields take the
      defaults of `default_synthetic_config`).

  Returns:
    train: `SyntheticSplit` of ``num_train`` pairs (numpy stream ``[seed, 0]``).
    eval: `SyntheticSplit` of ``num_eval`` pairs (numpy stream ``[seed, 1]``), same world.
    info: settings, the world's letter values, and per split the Bayes-optimal accuracy,
      the realised accuracy of the ground truth on the sampled labels and the pair count.

  >>> train, eval_, info = make_synthetic_preferences(dict(num_train=8, num_eval=4))
  >>> len(train.prompt), len(eval_.prompt), train.prompt[0].isupper(), train.chosen[0].islower()
  (8, 4, True, True)
  """
  s = _settings(config)
  world = make_world(s["world_seed"], s["num_letters"])
  train = sample_split(
      s["num_train"], np.random.default_rng([s["seed"], _TRAIN_STREAM]), world, s)
  eval_ = sample_split(
      s["num_eval"], np.random.default_rng([s["seed"], _EVAL_STREAM]), world, s)
  info = dict(
      settings=dict(s),
      reward="mean_t(w[y_t] + match_bonus * 1[upper(y_t) in prompt])",
      labels="Bradley-Terry: P(a preferred) = sigmoid((r*(a) - r*(b)) / temperature)",
      world={c: float(v) for c, v in zip(RESPONSE_LETTERS, world)},
      train=split_summary(train),
      eval=split_summary(eval_),
  )
  return train, eval_, info
