"""The synthetic world's policy side: a known response distribution pi_world(y | x).

The reward-model world (`rmjax.data.synthetic`) draws responses uniformly; a policy needs a
distribution to imitate (supervised fine-tuning gives the reference policy pi_0) and then
to improve on under the world's true reward. This module adds one, exact in every respect
the training tasks report:

* Prompts are the reward world's: uppercase letters, length uniform in
  ``[prompt_len_min, prompt_len_max]``, drawn uniformly from the first K letters.
* Response letters are i.i.d. given the prompt::

      pi_world(c | x) = softmax_c( b[c] + affinity * 1[upper(c) in x] )

  with per-letter preferences ``b[c] ~ N(0, letter_scale^2)`` drawn from the stream
  ``[world_seed, 1]`` (independent of the letter values w of the true reward), so pi_world
  neither knows nor opposes the reward: it is a plausible, imperfect pi_0.
* The length L is uniform in ``[response_len_min, response_len_max]``: after k letters
  the response ends (EOS) with hazard ``h_k = 1 / (len_max - k + 1)`` for
  ``k >= len_min`` (0 before, 1 at ``len_max``). A response of L letters is L + 1 tokens:
  the letters, then EOS.
* Exact log-probability of a response (``response_log_prob``)::

      log pi_world(y | x) = sum_t log pi_world(y_t | x) + sum_{k=len_min}^{L-1} log(1 - h_k)
                            + log h_L

* Exact conditional entropy (``conditional_entropy``), since letters and length are
  independent given x and the hazards just encode L's uniform law::

      H(Y | x) = E[L] * H(pi_world(. | x)) + log(len_max - len_min + 1)

  The entropy per token of a split is ``sum_x H(Y | x) / sum_x (E[L] + 1)``: the lowest
  per-token NLL any model can reach in expectation (`sft_reference_metrics`).
* True reward of any generated text (``true_rewards``): the reward world's
  ``r*(x, y) = mean_t (w[y_t] + match_bonus * 1[upper(y_t) in x])`` over the response's
  characters, where a character that is not one of the K lowercase letters (a model may
  generate any byte) is worth ``min(w) - 1`` and earns no bonus, and an empty response
  is worth ``min(w) - 1``: a policy gains nothing by leaving the alphabet.
* Preference pairs (``sample_preference_pairs``): two responses from pi_world per prompt,
  labelled by Bradley-Terry on r* at ``temperature`` as in the reward world.

Defaults (``default_policy_world_config``): the reward world's (K = 10 letters, prompts of
2..5, responses of 4..12 letters, match_bonus 1, temperature 0.11) with letter_scale 1.0
and affinity 1.0. Everything is a deterministic function of the seeds.

>>> world = make_policy_world(default_policy_world_config())
>>> probs = letter_probabilities(world, ["AB"])
>>> probs.shape, round(float(probs.sum()), 6)
((1, 10), 1.0)
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from rmjax.data import synthetic

_LETTER_STREAM = 1


class PolicyWorld(NamedTuple):
  """The synthetic policy world.

  Attributes:
    values: float64 [K], the true reward's letter values w (`synthetic.make_world`).
    letter_logits: float64 [K], pi_world's per-letter preferences b.
    affinity: pi_world's logit bonus for letters whose upper case is in the prompt.
    match_bonus: the true reward's bonus for such letters.
    temperature: Bradley-Terry temperature of the preference labels.
    prompt_len_min, prompt_len_max, response_len_min, response_len_max: lengths.
  """
  values: np.ndarray
  letter_logits: np.ndarray
  affinity: float
  match_bonus: float
  temperature: float
  prompt_len_min: int
  prompt_len_max: int
  response_len_min: int
  response_len_max: int

  @property
  def num_letters(self) -> int:
    return int(self.values.shape[0])

  @property
  def invalid_value(self) -> float:
    """What a character outside the alphabet (or an empty response) is worth: min(w) - 1."""
    return float(self.values.min() - 1.0)


def default_policy_world_config() -> dict[str, Any]:
  """Default settings: the reward world's lengths, letters and labels (`synthetic`), plus
  ``letter_scale`` (1.0) and ``affinity`` (1.0) of pi_world."""
  base = synthetic.default_synthetic_config()
  keys = ("world_seed", "prompt_len_min", "prompt_len_max", "response_len_min",
          "response_len_max", "num_letters", "match_bonus", "temperature")
  return {**{k: base[k] for k in keys}, "letter_scale": 1.0, "affinity": 1.0}


def make_policy_world(config: Mapping[str, Any] | Any) -> PolicyWorld:
  """The world of `config` (a mapping or ConfigDict; missing keys take the defaults).

  Raises:
    ValueError: a setting out of range, named (``synthetic.<name>``).
  """
  get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
  settings = {k: (d if get(k, None) is None else get(k, None))
              for k, d in default_policy_world_config().items()}
  checked = synthetic._settings(settings)  # pylint: disable=protected-access
  for name in ("letter_scale", "affinity"):
    value = settings[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
      raise ValueError(f"synthetic.{name} must be a finite number, got {value!r}")
  if settings["letter_scale"] < 0:
    raise ValueError(f"synthetic.letter_scale must be >= 0, got {settings['letter_scale']}")
  k = checked["num_letters"]
  values = synthetic.make_world(checked["world_seed"], k)
  letter_logits = (np.random.default_rng([checked["world_seed"], _LETTER_STREAM]).normal(size=k)
                   * float(settings["letter_scale"]))
  return PolicyWorld(
      values=values, letter_logits=letter_logits, affinity=float(settings["affinity"]),
      match_bonus=checked["match_bonus"], temperature=checked["temperature"],
      prompt_len_min=checked["prompt_len_min"], prompt_len_max=checked["prompt_len_max"],
      response_len_min=checked["response_len_min"],
      response_len_max=checked["response_len_max"])


def _prompt_presence(world: PolicyWorld, prompts: Sequence[str]) -> np.ndarray:
  """bool [N, K]: which of the K letters occur (upper case) in each prompt."""
  k = world.num_letters
  present = np.zeros((len(prompts), k), dtype=bool)
  for i, prompt in enumerate(prompts):
    for ch in prompt:
      c = ord(ch) - ord("A")
      if not 0 <= c < k:
        raise ValueError(f"prompts[{i}] must be letters A-{chr(ord('A') + k - 1)}, got "
                         f"{prompt!r}")
      present[i, c] = True
  return present


def letter_probabilities(world: PolicyWorld, prompts: Sequence[str]) -> np.ndarray:
  """float64 [N, K]: pi_world(c | x) for each prompt (rows sum to 1)."""
  logits = world.letter_logits[None, :] + world.affinity * _prompt_presence(world, prompts)
  logits = logits - logits.max(axis=1, keepdims=True)
  probs = np.exp(logits)
  return probs / probs.sum(axis=1, keepdims=True)


def _stop_hazards(world: PolicyWorld) -> np.ndarray:
  """float64 [len_max + 1]: h_k, the probability of EOS after k letters."""
  k = np.arange(world.response_len_max + 1)
  return np.where(k < world.response_len_min, 0.0, 1.0 / (world.response_len_max - k + 1))


def sample_prompts(num_prompts: int, rng: np.random.Generator, world: PolicyWorld
                   ) -> list[str]:
  """``num_prompts`` prompts: uniform lengths, uniform letters (as the reward world)."""
  lengths = rng.integers(world.prompt_len_min, world.prompt_len_max + 1, size=num_prompts)
  return ["".join(chr(ord("A") + c) for c in rng.integers(0, world.num_letters, size=n))
          for n in lengths]


def sample_responses(prompts: Sequence[str], rng: np.random.Generator, world: PolicyWorld
                     ) -> list[str]:
  """One response from pi_world(. | x) for each prompt."""
  probs = letter_probabilities(world, prompts)
  lengths = rng.integers(world.response_len_min, world.response_len_max + 1, size=len(prompts))
  out = []
  for p, n in zip(probs, lengths):
    letters = rng.choice(world.num_letters, size=int(n), p=p)
    out.append("".join(chr(ord("a") + c) for c in letters))
  return out


def response_log_prob(world: PolicyWorld, prompts: Sequence[str], responses: Sequence[str]
                      ) -> np.ndarray:
  """float64 [N]: exact log pi_world(y | x), letters and EOS (-inf off the support:
  a character outside the alphabet, or a length outside [len_min, len_max])."""
  if len(prompts) != len(responses):
    raise ValueError(f"prompts and responses must have equal lengths, got {len(prompts)} and "
                     f"{len(responses)}")
  log_probs = np.log(letter_probabilities(world, prompts))
  hazards = _stop_hazards(world)
  with np.errstate(divide="ignore"):
    log_continue = np.log1p(-np.minimum(hazards, 1.0))
    log_stop = np.log(hazards)
  out = np.empty(len(prompts))
  for i, response in enumerate(responses):
    ids = np.array([ord(ch) - ord("a") for ch in response], dtype=np.int64)
    n = len(ids)
    if n > world.response_len_max or np.any((ids < 0) | (ids >= world.num_letters)):
      out[i] = -np.inf
      continue
    out[i] = log_probs[i, ids].sum() + log_continue[:n].sum() + log_stop[n]
  return out


def conditional_entropy(world: PolicyWorld, prompts: Sequence[str]) -> np.ndarray:
  """float64 [N]: H(Y | x) in nats, E[L] H(pi_world(. | x)) + log(number of lengths)."""
  probs = letter_probabilities(world, prompts)
  letter_entropy = -(probs * np.log(probs)).sum(axis=1)
  mean_length = 0.5 * (world.response_len_min + world.response_len_max)
  num_lengths = world.response_len_max - world.response_len_min + 1
  return mean_length * letter_entropy + np.log(num_lengths)


def expected_tokens(world: PolicyWorld) -> float:
  """E[L] + 1: the expected response tokens (letters and EOS) of pi_world."""
  return 0.5 * (world.response_len_min + world.response_len_max) + 1.0


def true_rewards(world: PolicyWorld, prompts: Sequence[str], responses: Sequence[str]
                 ) -> np.ndarray:
  """float64 [N]: r*(x, y) of any text (see the module docstring for characters outside
  the alphabet and empty responses)."""
  if len(prompts) != len(responses):
    raise ValueError(f"prompts and responses must have equal lengths, got {len(prompts)} and "
                     f"{len(responses)}")
  present = _prompt_presence(world, prompts)
  out = np.empty(len(prompts))
  for i, response in enumerate(responses):
    if not response:
      out[i] = world.invalid_value
      continue
    total = 0.0
    for ch in response:
      c = ord(ch) - ord("a")
      if 0 <= c < world.num_letters:
        total += world.values[c] + world.match_bonus * present[i, c]
      else:
        total += world.invalid_value
    out[i] = total / len(response)
  return out


def win_rate(rewards: np.ndarray, baseline_rewards: np.ndarray) -> float:
  """Mean of 1[r > r_baseline] + 0.5 * 1[r == r_baseline] over paired samples."""
  rewards, baseline_rewards = np.asarray(rewards), np.asarray(baseline_rewards)
  if rewards.shape != baseline_rewards.shape or rewards.ndim != 1 or not rewards.size:
    raise ValueError(f"rewards and baseline_rewards must be equal non-empty [N] arrays, got "
                     f"{rewards.shape} and {baseline_rewards.shape}")
  return synthetic.ground_truth_label_accuracy(rewards, baseline_rewards)


class PolicyPairs(NamedTuple):
  """Preference pairs over pi_world's responses (N pairs).

  Attributes:
    prompt, chosen, rejected: N strings.
    preference_prob: float32 [N], the true P(chosen preferred).
    chosen_reward, rejected_reward: float64 [N], r* of each response.
  """
  prompt: list[str]
  chosen: list[str]
  rejected: list[str]
  preference_prob: np.ndarray
  chosen_reward: np.ndarray
  rejected_reward: np.ndarray


def sample_preference_pairs(num_pairs: int, rng: np.random.Generator, world: PolicyWorld
                            ) -> PolicyPairs:
  """Prompts, two pi_world responses each, Bradley-Terry labels on r* at the world's
  temperature: P(a preferred) = sigmoid((r*(a) - r*(b)) / T)."""
  prompts = sample_prompts(num_pairs, rng, world)
  a = sample_responses(prompts, rng, world)
  b = sample_responses(prompts, rng, world)
  r_a, r_b = true_rewards(world, prompts, a), true_rewards(world, prompts, b)
  p_a = synthetic._sigmoid((r_a - r_b) / world.temperature)  # pylint: disable=protected-access
  a_preferred = rng.random(num_pairs) < p_a
  return PolicyPairs(
      prompt=prompts,
      chosen=[x if pref else y for x, y, pref in zip(a, b, a_preferred)],
      rejected=[y if pref else x for x, y, pref in zip(a, b, a_preferred)],
      preference_prob=np.where(a_preferred, p_a, 1.0 - p_a).astype(np.float32),
      chosen_reward=np.where(a_preferred, r_a, r_b),
      rejected_reward=np.where(a_preferred, r_b, r_a))
