"""Reward transforms and combinations by name, so that a config can choose them.

A config says which transform (and combination) to apply and with which parameters; the RL code
asks the registry for the function and calls it on the rewards together with every extra input it
has (reference rewards, lengths, masks, running statistics), without knowing which ones the chosen
transform uses:

    config.reward_transform = "par"
    config.reward_transform_params = {"steepness": 1.0}
    ...
    transform = get_transform(config.reward_transform, **config.reward_transform_params)
    shaped = transform(rewards, references=ref_rewards, lengths=lengths, mask=mask)

Parameters (Python values in the config) are bound once, by `get_transform` /
`get_combination`, which reject unknown names and parameters and report missing required ones.
Inputs (arrays) are passed per call as keywords: the bound function takes the ones its entry
declares, raises if a required one is missing, and ignores the others (so one call site serves
every transform). `TRANSFORMS` and `COMBINATIONS` list the entries: the function, its parameters
with their defaults (`REQUIRED` where there is none), its inputs, the rewards' layout, and
whether it claims to be monotone in the rewards.

Plain dicts and keyword arguments only: no config library is imported here.
"""

import difflib
import types
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rmjax.losses import _reduction
from rmjax.losses import normalization
from rmjax.losses import regression
from rmjax.transforms import _common
from rmjax.transforms import calibration
from rmjax.transforms import combination
from rmjax.transforms import ensemble
from rmjax.transforms import length
from rmjax.transforms import process
from rmjax.transforms import running
from rmjax.transforms import single


class _Required:
  """Marks a parameter without a default."""

  def __repr__(self):
    return "REQUIRED"


REQUIRED = _Required()


class Entry(NamedTuple):
  """A registered transform or combination.

  Attributes:
    fn: `fn(rewards, **params, **inputs)` -> shaped rewards.
    params: parameter names and defaults (`REQUIRED` where there is none).
    inputs: keyword arrays every call must pass.
    optional_inputs: keyword arrays a call may pass.
    rewards: layout of `rewards`, e.g. "[B]", "[B, G]", "[B, K]".
    monotone: "strict" (increasing in each reward), "weak" (non-decreasing) or None; for entries
      with batch statistics, order-preserving within the batch.
    description: one line.
  """
  fn: Callable[..., jax.Array]
  params: Mapping[str, Any]
  inputs: tuple
  optional_inputs: tuple
  rewards: str
  monotone: Optional[str]
  description: str


def _entry(fn, params=None, inputs=(), optional_inputs=("mask",), rewards="[B]",
           monotone=None, description=""):
  return Entry(fn, types.MappingProxyType(dict(params or {})), tuple(inputs),
               tuple(optional_inputs), rewards, monotone, description)


# --- Adapters: registry calling conventions onto the package's functions. -----------------------


def _identity(rewards, mask=None):
  r, valid, _ = _common.real_input(rewards, "rewards", mask)
  return jnp.where(valid, r, 0)


def _lsc(rewards, *, quantile, method, ddof, references=None, reference_mask=None,
         reference_rewards=None, mask=None):
  if reference_rewards is None:
    if references is None:
      raise ValueError("transform 'log_sigmoid_centered' needs the input `references` [B, M] "
                       "(base-policy rewards) or `reference_rewards` (r_ref itself); got neither.")
    reference_rewards = single.reference_reward(references, quantile=quantile, method=method,
                                                mask=reference_mask, ddof=ddof)
  return single.log_sigmoid_centered(rewards, reference_rewards, mask=mask)


def _batch_stats(rewards, mask, ddof):
  r, valid, _ = _common.real_input(rewards, "rewards", mask)
  mean, std, _, _ = normalization.masked_moments(
        r, valid, axis=tuple(range(r.ndim)), ddof=ddof)
  return mean.reshape(()), std.reshape(())


def _mean_std(rewards, *, eps, ddof, stats=None, mask=None):
  if stats is None:
    return normalization.batch_whiten(rewards, mask=mask, ddof=ddof, eps=eps)
  return running.running_normalize(stats, rewards, method="mean_std", eps=eps, ddof=ddof,
                                   mask=mask)


def _clip(rewards, *, num_std, ddof, stats=None, mask=None):
  if stats is None:
    mean, std = _batch_stats(rewards, mask, ddof)
    return single.clip_reward(rewards, mean, std, num_std=num_std, mask=mask)
  return running.running_normalize(stats, rewards, method="clip", num_std=num_std, ddof=ddof,
                                   mask=mask)


def _min_max(rewards, *, eps, stats=None, mask=None):
  if stats is None:
    r, valid, _ = _common.real_input(rewards, "rewards", mask)
    lo = jnp.min(jnp.where(valid, r, jnp.inf))
    hi = jnp.max(jnp.where(valid, r, -jnp.inf))
    any_valid = jnp.any(valid)
    return single.min_max_normalize(rewards, jnp.where(any_valid, lo, 0),
                                    jnp.where(any_valid, hi, 0), eps=eps, mask=mask)
  return running.running_normalize(stats, rewards, method="min_max", eps=eps, mask=mask)


def _brier(rewards, *, confidence, mask=None):
  return calibration.brier_calibration_reward(rewards, confidence, mask=mask)


def _directional(rewards, *, direction, angle_degrees, mask=None):
  if (direction is None) == (angle_degrees is None):
    raise ValueError("combination 'directional' needs exactly one of the parameters `direction` "
                     f"and `angle_degrees`; got direction={direction!r}, "
                     f"angle_degrees={angle_degrees!r}.")
  if direction is None:
    direction = combination.dpa_direction(angle_degrees)
  return combination.directional_reward(rewards, jnp.asarray(direction), mask=mask)


def _helpsteer2(rewards, *, weights, mask=None):
  r, valid, _ = _common.last_axis_rewards(rewards, "rewards", mask)
  return jnp.where(valid, regression.helpsteer2_attribute_score(r, jnp.asarray(weights)), 0)


def _lagrangian(rewards, *, constraint_type, lagrange_state, mask=None):
  rewards = _reduction.as_real_array(rewards, "rewards")
  if rewards.ndim < 1 or rewards.shape[-1] < 2:
    raise ValueError("combination 'lagrangian' needs `rewards` [B, 1 + N]: the task advantage in "
                     "column 0 and N >= 1 constraint advantages after it; got shape "
                     f"{tuple(rewards.shape)}.")
  return combination.lagrangian_mixing(rewards[..., 0], rewards[..., 1:], lagrange_state,
                                       constraint_type=constraint_type, mask=mask)


def _ensemble(rewards, *, method, uncertainty_penalty, mask=None):
  r, valid, _ = _common.last_axis_rewards(rewards, "rewards", mask)
  out = ensemble.aggregate_ensemble_rewards(jnp.moveaxis(r, -1, 0), method=method,
                                            uncertainty_penalty=uncertainty_penalty)
  return jnp.where(valid, out, 0)


_REFS = ("mask", "reference_mask")

TRANSFORMS: Mapping[str, Entry] = types.MappingProxyType({
    "identity": _entry(
        _identity, monotone="strict", description="r (float32; 0 where masked)"),
    "log_sigmoid_centered": _entry(
        _lsc, {"quantile": 0.85, "method": "gaussian", "ddof": 0},
        optional_inputs=("references", "reference_rewards") + _REFS, rewards="[B] or [B, K]",
        monotone="strict",
        description="log sigmoid(r - r_ref), r_ref = reference_reward(references) unless given"),
    "par": _entry(
        single.preference_as_reward, {"steepness": 1.0}, ("references",), _REFS,
        rewards="[B] or [B, G]", monotone="strict",
        description="mean_m sigmoid(k (r - ref_m)), in (0, 1)"),
    "centered": _entry(
        single.centered_reward, {}, ("references",), _REFS, rewards="[B] or [B, G]",
        monotone="strict", description="mean_m (r - ref_m)"),
    "relative_tanh": _entry(
        single.relative_tanh, {"steepness": 1.0}, ("references",), _REFS,
        rewards="[B] or [B, G]", monotone="strict", description="mean_m tanh(k (r - ref_m))"),
    "relative_arctan": _entry(
        single.relative_arctan, {"steepness": 1.0}, ("references",), _REFS,
        rewards="[B] or [B, G]", monotone="strict", description="mean_m arctan(k (r - ref_m))"),
    "mean_std": _entry(
        _mean_std, {"eps": 1e-8, "ddof": 0}, (), ("stats", "mask"), rewards="[B]",
        monotone="strict",
        description="(r - mu) / (sigma + eps), running stats from `stats` or the batch's"),
    "clip": _entry(
        _clip, {"num_std": 1.0, "ddof": 0}, (), ("stats", "mask"), rewards="[B]",
        monotone="weak", description="clip(r, mu - n sigma, mu + n sigma)"),
    "min_max": _entry(
        _min_max, {"eps": 1e-8}, (), ("stats", "mask"), rewards="[B]", monotone="strict",
        description="(r - min) / max(max - min, eps)"),
    "ceil": _entry(
        single.ceil_reward, {"ceiling": REQUIRED}, monotone="weak", rewards="[B] or [B, K]",
        description="min(r, c)"),
    "linear_length_penalty": _entry(
        length.linear_length_penalty, {"threshold": 300.0, "coefficient": 0.01}, ("lengths",),
        monotone="strict", description="r - c max(len - L, 0) (PAR's setting)"),
    "dapo_overlong": _entry(
        length.dapo_overlong_penalty,
        {"max_length": REQUIRED, "cache_length": REQUIRED, "penalty_factor": 1.0}, ("lengths",),
        monotone="strict", description="r + f * clip(((L_max - L_c) - len) / L_c, -1, 0)"),
    "dler_truncation": _entry(
        length.dler_truncation_penalty, {"max_length": REQUIRED, "scale": 0.0, "penalty": 0.0},
        ("lengths",), monotone="weak", description="r, or scale * r - penalty if len > L_max"),
    "prm_clip": _entry(
        process.prm_clip, {"eta": REQUIRED}, rewards="[B, T]", monotone="weak",
        description="min(r_t - eta, 0) per step"),
    "prm_delta": _entry(
        process.prm_delta, rewards="[B, T]", description="r_t - r_{t+1}; last step keeps r_T"),
    "brier_calibration": _entry(
        _brier, {}, ("confidence",), rewards="[B] correctness",
        description="c - (q - c)^2 with rewards = correctness c, input confidence q (RLCR)"),
    "batch_whiten": _entry(
        normalization.batch_whiten, {"shift_only": False, "ddof": 0, "eps": 1e-6},
        rewards="any", monotone="strict", description="(r - mean) / (std + eps) over the batch"),
    "group_normalize": _entry(
        normalization.group_normalize, {"scale": "std", "ddof": 1, "eps": 1e-6},
        rewards="[B, G]", monotone="strict",
        description="GRPO: (r - mean_g) / (std_g + eps); scale='none': Dr. GRPO"),
})

COMBINATIONS: Mapping[str, Entry] = types.MappingProxyType({
    "weighted_sum": _entry(
        combination.weighted_sum, {"weights": None}, rewards="[B, K]",
        description="sum_k w_k r_k (weights None: the raw sum)"),
    "logical_and": _entry(
        combination.logical_and, {}, (), ("reference_rewards", "mask"), rewards="[B, K]",
        description="sum_k log sigmoid(r_k - r_ref_k)"),
    "min": _entry(combination.min_reward, rewards="[B, K]", description="min_k r_k"),
    "soft_min": _entry(
        combination.soft_min, {"temperature": REQUIRED}, rewards="[B, K]",
        description="-tau logsumexp(-r / tau)"),
    "directional": _entry(
        _directional, {"direction": None, "angle_degrees": None}, rewards="[B, K]",
        description="<v / ||v||, r>; v = direction, or (cos t, sin t) from angle_degrees"),
    "helpsteer2": _entry(
        _helpsteer2, {"weights": regression.HELPSTEER2_SCORE_WEIGHTS}, rewards="[B, 5]",
        description="<(0.3, 0.74, 0.46, 0.47, -0.33), attributes>"),
    "normalize_then_sum": _entry(
        normalization.normalize_then_sum, {"weights": None, "ddof": 1, "eps": 1e-4},
        rewards="[B, G, K]", description="GDPO: per-reward group normalisation, sum, whiten"),
    "lagrangian": _entry(
        _lagrangian, {"constraint_type": "inequality"}, ("lagrange_state",), ("mask",),
        rewards="[B, 1 + N]",
        description="(N - sum g(l)) A_task + sum g(l_i) A_i; column 0 = task"),
    "ensemble": _entry(
        _ensemble, {"method": "mean", "uncertainty_penalty": 1.0}, rewards="[B, M]",
        description="aggregate_ensemble_rewards over the M members on the last axis"),
})

ALIASES: Mapping[str, str] = types.MappingProxyType({
    "lsc": "log_sigmoid_centered",
    "preference_as_reward": "par",
    "grpo": "group_normalize",
    "sum": "weighted_sum",
    "and": "logical_and",
    "gdpo": "normalize_then_sum",
})


class BoundTransform:
  """A registry entry with its parameters bound: call it as `f(rewards, **inputs)`."""

  def __init__(self, kind: str, name: str, entry: Entry, params: Mapping[str, Any]):
    self.kind = kind
    self.name = name
    self.entry = entry
    self.params = types.MappingProxyType(dict(params))

  def __call__(self, rewards, **inputs) -> jax.Array:
    missing = [k for k in self.entry.inputs if inputs.get(k) is None]
    if missing:
      raise ValueError(
          f"{self.kind} {self.name!r} needs the input(s) {missing} (keyword arrays); got "
          f"{sorted(k for k, v in inputs.items() if v is not None)}.")
    accepted = self.entry.inputs + self.entry.optional_inputs
    passed = {k: v for k, v in inputs.items() if k in accepted and v is not None}
    return self.entry.fn(rewards, **self.params, **passed)

  def __repr__(self):
    params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
    return f"{self.kind}({self.name!r}, {params})"


def _lookup(kind, table, name):
  if not isinstance(name, str):
    raise ValueError(f"the {kind} name must be a string; got {type(name).__name__} {name!r}.")
  key = ALIASES.get(name, name)
  if key in table:
    return key, table[key]
  known = sorted(table) + sorted(k for k, v in ALIASES.items() if v in table)
  close = difflib.get_close_matches(name, known, n=1, cutoff=0.0)
  hint = f" Did you mean {close[0]!r}?" if close else ""
  raise ValueError(f"unknown {kind} {name!r}.{hint} Known: {sorted(table)} (aliases: "
                   f"{sorted(k for k, v in ALIASES.items() if v in table)}).")


def _bind(kind, table, name, params):
  key, entry = _lookup(kind, table, name)
  unknown = sorted(set(params) - set(entry.params))
  if unknown:
    raise ValueError(f"{kind} {key!r} has no parameter(s) {unknown}; its parameters are "
                     f"{dict(entry.params)} (inputs are passed when calling, not here).")
  bound = {**entry.params, **params}
  missing = sorted(k for k, v in bound.items() if v is REQUIRED)
  if missing:
    raise ValueError(f"{kind} {key!r} needs the parameter(s) {missing}; its parameters are "
                     f"{dict(entry.params)}.")
  return BoundTransform(kind, key, entry, bound)


def get_transform(name: str, **params) -> BoundTransform:
  """The transform `name` with its parameters bound: `f(rewards, **inputs) -> shaped rewards`.

  Args:
    name: a key of `TRANSFORMS` (or an alias in `ALIASES`, e.g. "lsc", "grpo").
    **params: the entry's parameters (Python values); defaults fill the rest.

  Returns:
    A `BoundTransform`, callable as `f(rewards, **inputs)`; it takes the inputs its entry
    declares (e.g. `references`, `lengths`, `mask`, `stats`) and ignores the others.

  Raises:
    ValueError: unknown name (with the closest known one), unknown parameter, missing required
      parameter; when called, a missing required input.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import get_transform
  >>> par = get_transform("par", steepness=1.0)
  >>> par(jnp.array([1.0]), references=jnp.array([[0.0, 2.0]]), lengths=None).tolist()
  [0.5]
  """
  return _bind("transform", TRANSFORMS, name, params)


def get_combination(name: str, **params) -> BoundTransform:
  """The combination `name` with its parameters bound: `f(rewards [B, K], **inputs) -> [B]`.

  Args:
    name: a key of `COMBINATIONS` (or an alias in `ALIASES`, e.g. "and", "sum", "gdpo").
    **params: the entry's parameters (Python values); defaults fill the rest.

  Returns:
    A `BoundTransform`, callable as `f(rewards, **inputs)`.

  Raises:
    ValueError: unknown name (with the closest known one), unknown parameter, missing required
      parameter; when called, a missing required input.

  >>> import jax.numpy as jnp
  >>> from rmjax.transforms import get_combination
  >>> get_combination("and")(jnp.array([[1.0, -1.0]])).round(4).tolist()
  [-1.6265]
  """
  return _bind("combination", COMBINATIONS, name, params)
