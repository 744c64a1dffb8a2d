"""The RL reward pipeline, configured by name: sources -> per-source transform -> combination.

    raw   [N, K]  = (source_1(x, y), ..., source_K(x, y))        NaN = no score
    u_k   [N]     = transform_k(raw[:, k], references=..., lengths=..., stats=...)
    r     [N]     = combination(u [N, K], ...)                    NaN = row not usable

config.rewards (`default_rewards_config`; each source from `source_config(kind, ...)`):

    sources            {name: {kind, transform="identity", transform_params={}, ...}}
    source_order       "name1,name2": the K columns, in order (ConfigDict key order is not used)
    combination        "sum": a name or alias of `rmjax.transforms.COMBINATIONS`
    combination_params {}: its parameters, plus the pipeline's own for some combinations
    reference_samples  8: k samples of pi_0 per prompt for the reference rewards

Sources (`reward_sources.KINDS`): a trained reward-model run ("reward_model", ensembles
aggregated by name), a Hugging Face reward checkpoint ("pretrained"), the synthetic world's
true reward ("true_reward") and rule rewards ("rule", `RULES`). Reward models re-tokenise the
decoded text with their own tokenizer and chat template, so they need not share the policy's.

Transforms: every entry of `rmjax.transforms.TRANSFORMS` that takes one reward per response,
called through the registry with every input it may use. Three groups get inputs from the
pipeline:
  * reference transforms (lsc, par, centered, relative_tanh, relative_arctan): `references` =
    the source's raw rewards of k responses of pi_0 to the row's prompt. They are sampled
    (`ReferenceSampler`) and scored once per prompt, the first time the prompt is seen, and
    kept in the state ("reference", float32 [num_prompts, K, k], NaN = not scored;
    "reference_done", bool [num_prompts]); LSC's quantile and method ("gaussian" or
    "empirical") are its transform_params.
  * running normalisers (mean_std, clip, min_max): exact running statistics of the source's
    raw rewards (`WelfordState` per source in the state, "running"), merged with the batch
    first and then applied to it: `running_normalizer(method, ...)` (PAR's Meanstd / Clip /
    Minmax baselines). `batch_whiten` uses the batch's own statistics, `group_normalize` the
    group's (rows reshaped to [B, G]).
  * length transforms (linear_length_penalty, dapo_overlong, dler_truncation): `lengths`.

Combinations (on the transformed [N, K]):
  * sum / weighted_sum (weights [K] or None), min, soft_min (temperature), ensemble, directional,
    helpsteer2 (K = 5): as registered.
  * and / logical_and: sum_k log sigmoid(r_k - r_ref_k) with r_ref_k = the reference reward of
    source k for the row's prompt (`reference_reward` of its k cached samples, with
    combination_params quantile (0.85), method ("gaussian"), ddof (0)). Every source's
    transform must be identity (AND centres the raw rewards itself; for LSC-then-sum write
    transform "lsc" and combination "sum").
  * gdpo / normalize_then_sum: the rows reshaped to [B, G, K]; out [B, G] -> [N]. Its output
    is already a group-normalised, batch-whitened advantage.
  * lagrangian: column 0 is the task reward, columns 1.. the N = K - 1 constraints;
    r = (N - sum_i g(l_i)) u_0 + sum_i g(l_i) u_i with the multipliers l in the state
    ("lagrange": float32 [N]), then one step l <- l - eta g'(l) (J - theta) from this batch's
    constraint values J_i = the mean of u_i over the usable rows (`lagrange_update`;
    primal-dual order of `lagrangian_mixer`). combination_params: thresholds (theta, [N] or a
    scalar; required), learning_rate (eta, 0.05), initial_value (l_0, 0.0), constraint_type
    ("inequality": J_i >= theta_i). The rewards are mixed before the advantage: the same as
    mixing advantages for every advantage estimator linear in the rewards (RLOO, Dr. GRPO,
    REINFORCE with a baseline), not exactly for GRPO's std division.

**Missing scores (NaN).** A NaN raw score is never summed. Rule: each source's transform and
statistics (running, batch, reference) use only its own valid entries; a row with any missing
source gets the combined reward NaN (and its transformed values of the missing sources are
NaN), and combinations see only the usable rows (masked out: batch statistics such as GDPO's
ignore them). The RL task treats a NaN combined reward as an invalid row (out of the update);
the count is `reward/invalid_rows`. Reference samples without a score are masked out of the
reference rewards (a prompt with none gets the transform's no-reference value).

The pipeline runs on the host between the jitted rollout and the jitted update; its arrays are
[N, K], so eager jnp calls are fine.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rmjax import transforms
from rmjax.tasks.policy import reward_sources
from rmjax.tasks.policy.reward_sources import RULES  # noqa: F401  (re-exported)
from rmjax.transforms import registry

KINDS = reward_sources.KINDS
RUNNING_TRANSFORMS = ("mean_std", "clip", "min_max")
# Per-step rewards or extra inputs a response-level source does not have.
UNSUPPORTED_TRANSFORMS = {
    "prm_clip": "takes per-step process rewards [B, T]",
    "prm_delta": "takes per-step process rewards [B, T]",
    "brier_calibration": "needs the policy's stated confidence as an input",
}
# Parameters of combinations that the pipeline uses itself (not the registry function's).
PIPELINE_COMBINATION_PARAMS = {
    "logical_and": dict(quantile=0.85, method="gaussian", ddof=0),
    "lagrangian": dict(thresholds=None, learning_rate=0.05, initial_value=0.0),
}
TOP_LEVEL_FIELDS = ("sources", "source_order", "combination", "combination_params",
                    "reference_samples")


def default_rewards_config() -> dict:
  """config.rewards: the synthetic world's true reward alone, summed (identity).

    sources            {"true": {kind: "true_reward", transform: "identity"}}
    source_order       "true"
    combination        "sum"
    combination_params {}
    reference_samples  8

  Build other sources with `source_config(kind, **fields)`, e.g.
  `config.rewards.sources.helpful = source_config("reward_model", workdir="runs/rm",
  transform="lsc")` and `config.rewards.source_order = "helpful,true"`.
  """
  return dict(
      sources=ml_collections.ConfigDict({"true": source_config("true_reward")}),
      source_order="true", combination="sum",
      combination_params=ml_collections.ConfigDict(), reference_samples=8)


def source_config(kind: str, **fields) -> ml_collections.ConfigDict:
  """A source's ConfigDict with every field of its kind at its default, then `fields`.

  Fields (`reward_sources.KIND_FIELDS`): all kinds: transform ("identity"),
  transform_params ({}); reward_model: workdir, step (-1 = latest), aggregation ("mean"),
  uncertainty_penalty (1.0), batch_size (32), length_bucket (64); pretrained: checkpoint,
  tokenizer ("" = the directory's), chat_template ("plain"), max_len (512), max_prompt_len
  (384), batch_size, length_bucket; rule: rule, params ({}).

  >>> source_config("rule", rule="non_empty").rule
  'non_empty'
  """
  if kind not in KINDS:
    raise ValueError(_unknown("kind", kind, KINDS, "source kind"))
  defaults = {**reward_sources.COMMON_FIELDS, **reward_sources.KIND_FIELDS[kind], "kind": kind}
  unknown = sorted(set(fields) - set(defaults))
  if unknown:
    raise ValueError(f"source_config({kind!r}): unknown field(s) {unknown}; a {kind!r} source "
                     f"has {sorted(defaults)}")
  values = {**defaults, **fields}
  for key in ("transform_params", "params"):
    if key in values:
      values[key] = ml_collections.ConfigDict(_plain(values[key]))
  return ml_collections.ConfigDict(values)


# --- Config parsing and checks -----------------------------------------------------------------


def _plain(value):
  if hasattr(value, "to_dict"):
    return value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  return value


def _unknown(field: str, value: Any, known: Sequence[str], what: str, *,
             show_value: bool = True) -> str:
  """`field='lsx': unknown transform; did you mean 'lsc'? Known: [...]` (difflib's closest)."""
  close = difflib.get_close_matches(str(value), list(known), n=1, cutoff=0.0)
  hint = f"; did you mean {close[0]!r}?" if close else ""
  head = f"{field}={value!r}" if show_value else field
  return f"{head}: unknown {what}{hint} Known: {sorted(known)}"


class _SourceSpec(NamedTuple):
  name: str
  field: str          # "rewards.sources.<name>"
  kind: str
  fields: dict        # the kind's fields (defaults filled)
  transform: registry.BoundTransform
  needs_reference: bool


class _Plan(NamedTuple):
  sources: tuple       # _SourceSpec, in source_order
  combination: registry.BoundTransform
  extra: dict          # the pipeline's own combination params
  reference_samples: int


def _rewards_section(config) -> dict:
  section = config.get("rewards", None) if "sources" not in config else config
  if section is None:
    raise ValueError("config.rewards: missing (the reward pipeline's config; "
                     "rmjax.tasks.policy.rewards.default_rewards_config())")
  return _plain(section)


def _number(field, value, *, low=None, integer=False, low_open=False):
  kinds = (int,) if integer else (int, float)
  if isinstance(value, bool) or not isinstance(value, kinds) or not np.isfinite(value):
    raise ValueError(f"{field} must be a finite {'integer' if integer else 'number'}, "
                     f"got {value!r}")
  if low is not None and (value <= low if low_open else value < low):
    raise ValueError(f"{field} must be {'>' if low_open else '>='} {low}, got {value!r}")
  return value


def _check_workdir(field: str, spec: dict) -> None:
  workdir = spec["workdir"]
  if not workdir:
    raise ValueError(f"{field}.workdir: empty; a 'reward_model' source names a trained "
                     "reward-model run (rmjax.tasks.reward_model)")
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise ValueError(f"{field}.workdir={workdir!r}: no config.json (not a training run)")
  latest = reward_sources.latest_checkpoint_step(workdir)
  if latest is None:
    raise ValueError(f"{field}.workdir={workdir!r}: no checkpoint under checkpoints/")
  step = _number(f"{field}.step", spec["step"], integer=True, low=-1)
  if step >= 0 and not os.path.isdir(os.path.join(workdir, "checkpoints", str(step))):
    raise ValueError(f"{field}.step={step}: no checkpoint at that step under "
                     f"{workdir}/checkpoints/ (latest: {latest}; -1 = the latest)")
  with open(config_path) as f:
    run_config = ml_collections.ConfigDict(json.load(f))
  from rmjax.tasks.reward_model.family import get_family  # pylint: disable=import-outside-toplevel
  try:
    family = get_family(run_config.family)
    head = family.head_name(run_config)
  except (AttributeError, KeyError, ValueError) as e:
    raise ValueError(f"{field}.workdir={workdir!r}: config.json names no known reward-model "
                     f"family ({e})") from None
  if head != "scalar":
    raise ValueError(f"{field}.workdir={workdir!r}: family {family.name!r} has head {head!r}; "
                     "a reward source needs one reward per response (a 'scalar' head: bt, "
                     "scaled_bt, listwise, ensemble)")
  if spec["aggregation"] not in transforms.ENSEMBLE_AGGREGATIONS:
    raise ValueError(_unknown(f"{field}.aggregation", spec["aggregation"],
                              transforms.ENSEMBLE_AGGREGATIONS, "ensemble aggregation"))
  _number(f"{field}.uncertainty_penalty", spec["uncertainty_penalty"], low=0)


def _check_pretrained(field: str, spec: dict) -> None:
  path = spec["checkpoint"]
  if not path or not os.path.isdir(path):
    raise ValueError(f"{field}.checkpoint={path!r}: not a directory (a Hugging Face "
                     "*ForSequenceClassification checkpoint: config.json, model.safetensors)")
  missing = [f for f in ("config.json", "model.safetensors")
             if not os.path.exists(os.path.join(path, f))]
  if missing:
    raise ValueError(f"{field}.checkpoint={path!r}: no {missing[0]}")
  if not spec["tokenizer"] and not os.path.exists(os.path.join(path, "tokenizer.json")):
    raise ValueError(f"{field}.tokenizer: empty and {path!r} has no tokenizer.json; name one "
                     "(e.g. 'hf:<tokenizer.json>' or 'smollm2')")
  for name in ("max_len", "max_prompt_len"):
    _number(f"{field}.{name}", spec[name], integer=True, low=1)


def _check_rule(field: str, spec: dict) -> None:
  rule = spec["rule"]
  if rule not in RULES:
    raise ValueError(_unknown(f"{field}.rule", rule, RULES, "rule"))
  params = dict(spec["params"] or {})
  known = reward_sources.rule_parameters(RULES[rule])
  for key in params:
    if key not in known:
      raise ValueError(_unknown(f"{field}.params.{key}", key, known,
                                f"parameter of rule {rule!r}", show_value=False))
  missing = [k for k, v in known.items() if v is inspect.Parameter.empty
             and k not in params]
  if missing:
    raise ValueError(f"{field}.params: rule {rule!r} needs {missing}; its parameters are "
                     f"{sorted(known)}")
  try:  # A dry run on one row checks the values: traced only, nothing compiles.
    jax.eval_shape(lambda: RULES[rule]([""], ["x"], np.ones(1, np.int32), **params))
  except (ValueError, TypeError) as e:
    raise ValueError(f"{field}.params={params}: {e}") from None


def _bind_transform(field: str, spec: dict) -> registry.BoundTransform:
  name = spec["transform"]
  known = [n for n in registry.TRANSFORMS if n not in UNSUPPORTED_TRANSFORMS]
  known += [a for a, n in registry.ALIASES.items() if n in known]
  key = registry.ALIASES.get(name, name)
  if key in UNSUPPORTED_TRANSFORMS:
    raise ValueError(f"{field}.transform={name!r} {UNSUPPORTED_TRANSFORMS[key]}; a source gives "
                     "one reward per response")
  if key not in registry.TRANSFORMS:
    raise ValueError(_unknown(f"{field}.transform", name, known, "transform"))
  params = dict(spec["transform_params"] or {})
  entry = registry.TRANSFORMS[key]
  for p in params:
    if p not in entry.params:
      raise ValueError(_unknown(f"{field}.transform_params.{p}", p, list(entry.params),
                                f"parameter of transform {key!r}", show_value=False))
  try:
    bound = registry.get_transform(key, **params)
    # A dry run on two rows of one group checks the parameter values: traced only
    # (jax.eval_shape), nothing compiles.
    jax.eval_shape(_transform_fn(bound, 2), *_transform_inputs(
        np.array([0.0, 1.0]), np.ones(2, bool), np.zeros((2, 2)), np.ones(2)),
        transforms.welford_init() if key in RUNNING_TRANSFORMS else None)
  except (ValueError, TypeError) as e:
    raise ValueError(f"{field}.transform={name!r} with transform_params={params}: {e}") from None
  return bound


def _parse(config, *, has_world: bool | None) -> _Plan:
  rewards = _rewards_section(config)
  for key in rewards:
    if key not in TOP_LEVEL_FIELDS:
      raise ValueError(_unknown(f"rewards.{key}", key, TOP_LEVEL_FIELDS, "field",
                                show_value=False))
  sources = rewards.get("sources") or {}
  if not isinstance(sources, Mapping) or not sources:
    raise ValueError("rewards.sources: expected at least one source {name: {kind, ...}}, "
                     f"got {sources!r}")
  order_text = rewards.get("source_order", "")
  if not isinstance(order_text, str):
    raise ValueError(f"rewards.source_order must be a string 'name1,name2', got {order_text!r}")
  order = [s.strip() for s in order_text.split(",") if s.strip()]
  duplicated = sorted({n for n in order if order.count(n) > 1})
  unknown = [n for n in order if n not in sources]
  missing = [n for n in sources if n not in order]
  if duplicated or unknown or missing or not order:
    parts = []
    if duplicated:
      parts.append(f"repeated {duplicated}")
    for n in unknown:
      close = difflib.get_close_matches(n, list(sources), n=1, cutoff=0.0)
      parts.append(f"has {n!r}, not a source (did you mean {close[0]!r}?)")
    if missing:
      parts.append(f"lacks {missing}")
    raise ValueError(f"rewards.source_order={order_text!r} must list every source of "
                     f"rewards.sources {sorted(sources)} once: " + "; ".join(parts or ["empty"]))
  k = _number("rewards.reference_samples", rewards.get("reference_samples", 8), integer=True,
              low=1)

  specs = []
  for name in order:
    field = f"rewards.sources.{name}"
    raw = dict(sources[name] or {})
    kind = raw.get("kind", "")
    if kind not in KINDS:
      raise ValueError(_unknown(f"{field}.kind", kind, KINDS, "source kind"))
    defaults = {**reward_sources.COMMON_FIELDS, **reward_sources.KIND_FIELDS[kind]}
    for key in raw:
      if key not in defaults:
        raise ValueError(_unknown(f"{field}.{key}", key, list(defaults),
                                  f"field of a {kind!r} source", show_value=False))
    spec = {**defaults, **raw}
    if kind == "reward_model":
      _check_workdir(field, spec)
    elif kind == "pretrained":
      _check_pretrained(field, spec)
    elif kind == "true_reward" and has_world is False:
      raise ValueError(f"{field}: kind 'true_reward' is the synthetic world's r*(x, y); this "
                       "run has no synthetic world (config.data.source != 'synthetic')")
    elif kind == "rule":
      _check_rule(field, spec)
    if kind in ("reward_model", "pretrained"):
      _number(f"{field}.batch_size", spec["batch_size"], integer=True, low=1)
      _number(f"{field}.length_bucket", spec["length_bucket"], integer=True, low=0)
    bound = _bind_transform(field, spec)
    specs.append(_SourceSpec(name, field, kind, spec, bound, "references" in (
        bound.entry.inputs + bound.entry.optional_inputs)))

  combination, extra = _bind_combination(rewards, specs)
  if combination.name == "logical_and":
    specs = [s._replace(needs_reference=True) for s in specs]
  return _Plan(tuple(specs), combination, extra, k)


def _bind_combination(rewards: dict, specs: list) -> tuple[registry.BoundTransform, dict]:
  name = rewards.get("combination", "sum")
  key = registry.ALIASES.get(name, name)
  if key not in registry.COMBINATIONS:
    known = list(registry.COMBINATIONS) + [a for a, n in registry.ALIASES.items()
                                           if n in registry.COMBINATIONS]
    raise ValueError(_unknown("rewards.combination", name, known, "combination"))
  params = dict(rewards.get("combination_params") or {})
  own = PIPELINE_COMBINATION_PARAMS.get(key, {})
  entry = registry.COMBINATIONS[key]
  for p in params:
    if p not in entry.params and p not in own:
      raise ValueError(_unknown(f"rewards.combination_params.{p}", p,
                                list(entry.params) + list(own),
                                f"parameter of combination {key!r}", show_value=False))
  extra = {p: params.pop(p, d) for p, d in own.items()}
  for p in ("weights", "direction"):
    try:
      if isinstance(params.get(p), str):  # "1,0.5" from a command line.
        params[p] = [float(w) for w in params[p].split(",") if w.strip()]
      if params.get(p) is not None:
        params[p] = np.asarray(params[p], np.float32)
    except (TypeError, ValueError) as e:
      raise ValueError(f"rewards.combination_params.{p}: expected numbers (a list or "
                       f"'1,0.5'), got {params[p]!r} ({e})") from None
  num = len(specs)
  order = ",".join(s.name for s in specs)
  where = f"rewards.combination={name!r} on the K={num} sources of rewards.source_order={order!r}"
  if key == "logical_and":
    for s in specs:
      if s.transform.name != "identity":
        raise ValueError(
            f"{s.field}.transform={s.fields['transform']!r}: rewards.combination={name!r} "
            "computes sum_k log sigmoid(r_k - r_ref_k) from the raw rewards and their reference "
            "rewards itself, so each source's transform must be 'identity' (for another "
            "transform then LSC, use transform 'lsc' and combination 'sum')")
    try:
      jax.eval_shape(functools.partial(
          transforms.reference_reward, quantile=extra["quantile"], method=extra["method"],
          ddof=extra["ddof"]), jnp.zeros((1, 2)))
    except (ValueError, TypeError) as e:
      raise ValueError(f"rewards.combination_params (the reference rewards of {name!r}): {e}"
                       ) from None
  if key == "lagrangian":
    if num < 2:
      raise ValueError(f"{where}: 'lagrangian' needs K >= 2 sources (column 0 the task "
                       "reward, 1.. the constraints)")
    if extra["thresholds"] is None:
      raise ValueError(f"rewards.combination_params.thresholds: required by {name!r} (the "
                       f"constraint thresholds theta_i of the K - 1 = {num - 1} constraint "
                       f"sources {[s.name for s in specs[1:]]}; [K - 1] or a scalar)")
    thresholds = extra["thresholds"]
    if isinstance(thresholds, str):
      thresholds = [float(t) for t in thresholds.split(",") if t.strip()]
    thresholds = np.broadcast_to(np.asarray(thresholds, np.float32), (num - 1,)) if np.ndim(
        thresholds) == 0 else np.asarray(thresholds, np.float32)
    if thresholds.shape != (num - 1,):
      raise ValueError(f"rewards.combination_params.thresholds: expected {num - 1} values (one "
                       f"per constraint source {[s.name for s in specs[1:]]}) or a scalar, got "
                       f"{list(np.ravel(thresholds))}")
    extra["thresholds"] = thresholds
    _number("rewards.combination_params.learning_rate", extra["learning_rate"], low=0)
    _number("rewards.combination_params.initial_value", extra["initial_value"])
  try:
    bound = registry.get_combination(key, **params)
    group = 2 if key == "normalize_then_sum" else 1
    jax.eval_shape(_combination_fn(bound, group, extra),
                   np.tile(np.arange(num, dtype=np.float32), (2, 1)), np.ones(2, bool),
                   np.zeros((2, num, 2), np.float32), np.zeros(max(num - 1, 1), np.float32))
  except (ValueError, TypeError) as e:
    raise ValueError(f"{where} with combination_params={params}: {e}") from None
  return bound, extra


def check_rewards_config(config, world=None) -> None:
  """Every check of config.rewards that needs no model: raises a ValueError naming the field.

  Unknown kind, transform, combination, rule or field (with the closest known name); a
  source_order that does not list every source once; a reward-model workdir without
  config.json or a checkpoint under checkpoints/ (or at `step`), or whose family has no scalar
  head; a pretrained directory without config.json / model.safetensors / a tokenizer;
  "true_reward" on a run without a synthetic world; parameters a transform, rule or
  combination rejects (each is traced once on a two-row dummy batch with `jax.eval_shape`:
  nothing compiles or runs); a combination the
  K sources do not fit (lagrangian with K < 2 or thresholds not [K - 1], weights not [K],
  and with a transform other than identity).

  Args:
    config: the run config (with `.rewards`) or config.rewards itself.
    world: the synthetic world, if the caller has it. Without it, a run config with
      data.source tells whether there is one; config.rewards alone skips that check.
  """
  _parse(config, has_world=_has_world(config, world))


def _has_world(config, world) -> bool | None:
  if world is not None:
    return True
  data = config.get("data", None) if "sources" not in config else None
  if data is not None and data.get("source", None) is not None:
    return data.get("source") == "synthetic"
  return None


# --- Applying transforms and combinations ------------------------------------------------------


def _transform_fn(bound, group_size: int):
  """`fn(values [N], mask [N], references [N, k], reference_mask, lengths [N], stats) -> [N]`:
  the registry's single call site, every input passed (each entry takes what it declares)."""

  def fn(values, mask, references, reference_mask, lengths, stats):
    inputs = dict(references=references, reference_mask=reference_mask, mask=mask,
                  lengths=lengths, stats=stats)
    if bound.entry.rewards == "[B, G]":  # Group transforms (group_normalize): rows -> [B, G].
      shape = (-1, group_size)
      return bound(values.reshape(shape), **{**inputs, "mask": mask.reshape(shape)}).reshape(-1)
    return bound(values, **inputs)

  return fn


def _combination_fn(bound, group_size: int, extra: Mapping[str, Any]):
  """`fn(values [N, K], mask [N], references [N, K, k] | None, multipliers [K - 1] | None)`."""

  def fn(values, mask, references, multipliers):
    if bound.name == "normalize_then_sum":  # GDPO: rows -> [B, G, K].
      shape = (-1, group_size)
      return bound(values.reshape(shape + values.shape[-1:]),
                   mask=mask.reshape(shape)).reshape(-1)
    inputs = dict(mask=mask)
    if bound.name == "logical_and":  # r_ref per row and source from the cached samples.
      num = values.shape[-1]
      ref_valid = jnp.isfinite(references)
      refs = jnp.where(ref_valid, references, 0)
      inputs["reference_rewards"] = jnp.stack([transforms.reference_reward(
          refs[:, j], quantile=extra["quantile"], method=extra["method"], ddof=extra["ddof"],
          mask=ref_valid[:, j]) for j in range(num)], axis=-1)
    if bound.name == "lagrangian":
      inputs["lagrange_state"] = transforms.LagrangeState(multipliers)
    return bound(values, **inputs)

  return fn


_JITTED: dict = {}


def _cache_key(bound, *rest) -> tuple:
  """Equal entries with equal parameters share one jitted function (and its compilations)."""
  params = tuple((k, np.asarray(v).tolist() if isinstance(v, np.ndarray) else repr(v))
                 for k, v in sorted(bound.params.items()))
  return (bound.kind, bound.name, repr(params)) + rest


def _jitted_transform(bound, group_size: int):
  key = _cache_key(bound, group_size)
  if key not in _JITTED:
    _JITTED[key] = jax.jit(_transform_fn(bound, group_size))
  return _JITTED[key]


def _jitted_combination(bound, group_size: int, extra_items: tuple):
  key = _cache_key(bound, group_size, extra_items)
  if key not in _JITTED:
    _JITTED[key] = jax.jit(_combination_fn(bound, group_size, dict(extra_items)))
  return _JITTED[key]


@jax.jit
def _welford_update(state, values, mask):
  return transforms.welford_update(state, values, mask=mask)


@functools.partial(jax.jit, static_argnames=("constraint_type",))
def _lagrange_step(multipliers, values, thresholds, learning_rate, *, constraint_type):
  new = transforms.lagrange_update(transforms.LagrangeState(multipliers), values, thresholds,
                                   learning_rate=learning_rate, constraint_type=constraint_type)
  return new.multipliers, transforms.lagrange_weights(new, constraint_type=constraint_type)


def _transform_inputs(values, valid, references, lengths):
  """NaN-free arrays: invalid entries hold 0 and are masked."""
  refs = ref_mask = None
  if references is not None:
    ref_mask = np.isfinite(references)
    refs = np.where(ref_mask, references, 0).astype(np.float32)
  return (np.where(valid, values, 0).astype(np.float32), np.asarray(valid, bool), refs,
          ref_mask, None if lengths is None else np.asarray(lengths, np.float32))


# --- The pipeline ------------------------------------------------------------------------------


class RewardBatch(NamedTuple):
  """One rollout's responses to score.

  Attributes:
    prompt_ids: int64 [N], index of each row's prompt in the task's prompt set.
    prompts: N prompt texts.
    responses: N decoded responses (special tokens stripped).
    lengths: int32 [N] response tokens (EOS included).
    group_size: G; rows are grouped contiguously: row = b * G + g, N = B * G.
  """
  prompt_ids: np.ndarray
  prompts: list
  responses: list
  lengths: np.ndarray
  group_size: int


# (prompt_ids [M], k) -> M lists of k responses of pi_0 to those prompts.
ReferenceSampler = Callable[[np.ndarray, int], list]


def _model_key(spec: _SourceSpec) -> tuple:
  return spec.kind, repr(sorted((k, v) for k, v in spec.fields.items()
                                if k not in ("transform", "transform_params")))


def _stats(x: np.ndarray) -> tuple[float, float]:
  x = x[np.isfinite(x)]
  if not x.size:
    return float("nan"), float("nan")
  return float(x.mean()), float(x.std())


class RewardPipeline:
  """Sources, transforms and a combination, from `make_reward_pipeline`.

  Attributes:
    source_names: the K source names, in `source_order` (the columns of the reward matrix).
    needs_reference: whether any transform or the combination uses reference rewards.
    reference_samples: k, pi_0 samples per prompt.
  """

  def __init__(self, plan: _Plan, *, world=None, policy_tokenizer=None,
               scorers: Mapping[str, Any] | None = None):
    self._plan = plan
    self._world = world
    self._tokenizer = policy_tokenizer
    self._scorers = dict(scorers or {})
    self.source_names = tuple(s.name for s in plan.sources)
    self.needs_reference = any(s.needs_reference for s in plan.sources)
    self.reference_samples = plan.reference_samples
    self.combination = plan.combination

  def describe(self) -> dict[str, Any]:
    """JSON-able facts: each source's kind, fields and transform; the combination."""
    sources = {}
    for s in self._plan.sources:
      entry = dict(kind=s.kind, transform=repr(s.transform), reference=s.needs_reference,
                   **{k: v for k, v in s.fields.items() if k not in ("kind", "transform",
                                                                      "transform_params")})
      scorer = self._scorers.get(s.name)
      if scorer is not None and hasattr(scorer, "describe"):
        entry["scorer"] = scorer.describe()
      sources[s.name] = entry
    extra = {k: np.asarray(v).tolist() for k, v in self._plan.extra.items()}
    return dict(sources=sources, combination=repr(self.combination), combination_extra=extra,
                reference_samples=self.reference_samples)

  # -- state --

  def init_state(self, num_prompts: int) -> dict:
    """The pipeline's state for a task of `num_prompts` prompts (fixed shapes).

      reference:       float32 [num_prompts, K, k], raw rewards of pi_0's samples (NaN: none)
      reference_done:  bool [num_prompts], whether the prompt's references were scored
      running:         {source: {count, mean, m2, minimum, maximum}} (`WelfordState` fields)
                       for sources with a running normaliser (key absent when none)
      lagrange:        {"multipliers": float32 [K - 1]} for the lagrangian combination
    """
    num_prompts = _number("num_prompts", num_prompts, integer=True, low=1)
    k, num = self.reference_samples, len(self.source_names)
    state = {"reference": np.full((num_prompts, num, k), np.nan, np.float32),
             "reference_done": np.zeros((num_prompts,), bool)}
    running = {s.name: {f: np.asarray(v) for f, v in transforms.welford_init()._asdict().items()}
               for s in self._plan.sources if s.transform.name in RUNNING_TRANSFORMS}
    if running:
      state["running"] = running
    if self.combination.name == "lagrangian":
      state["lagrange"] = {"multipliers": np.full(
          (num - 1,), self._plan.extra["initial_value"], np.float32)}
    return state

  # -- scoring --

  def _scorer(self, spec: _SourceSpec):
    """The source's scorer, loaded on first use; sources naming the same model with the same
    settings (e.g. one run under two transforms) share one."""
    if spec.name not in self._scorers:
      same = [o.name for o in self._plan.sources
              if o.name in self._scorers and _model_key(o) == _model_key(spec)]
      self._scorers[spec.name] = (self._scorers[same[0]] if same else
                                  reward_sources.LOADERS[spec.kind](spec.field, spec.fields))
    return self._scorers[spec.name]

  def _score_source(self, spec, prompts, responses, lengths) -> np.ndarray:
    if spec.kind == "true_reward":
      from rmjax.data import synthetic_policy  # pylint: disable=import-outside-toplevel
      out = synthetic_policy.true_rewards(self._world, prompts, responses)
    elif spec.kind == "rule":
      out = RULES[spec.fields["rule"]](prompts, responses, lengths,
                                       **dict(spec.fields["params"] or {}))
    else:
      out = self._scorer(spec).score(list(prompts), list(responses))
    out = np.asarray(out, np.float32)
    if out.shape != (len(responses),):
      raise ValueError(f"{spec.field}: the source returned shape {out.shape}, expected "
                       f"[N] = [{len(responses)}]")
    return out

  def _score(self, prompts, responses, lengths, which) -> np.ndarray:
    out = np.full((len(responses), len(self.source_names)), np.nan, np.float32)
    for j, spec in enumerate(self._plan.sources):
      if which[j]:
        out[:, j] = self._score_source(spec, prompts, responses, lengths)
    return out

  def score(self, batch: RewardBatch) -> np.ndarray:
    """float32 [N, K] raw rewards of the batch; NaN = the source has no score for that row."""
    self._check_batch(batch)
    return self._score(batch.prompts, batch.responses, np.asarray(batch.lengths),
                       [True] * len(self.source_names))

  def _check_batch(self, batch: RewardBatch) -> None:
    n = len(batch.responses)
    sizes = dict(prompt_ids=len(batch.prompt_ids), prompts=len(batch.prompts),
                 lengths=len(batch.lengths))
    bad = {k: v for k, v in sizes.items() if v != n}
    if bad:
      raise ValueError(f"RewardBatch: {n} responses but {bad}")
    if batch.group_size < 1 or n % batch.group_size:
      raise ValueError(f"RewardBatch: N = {n} rows are not B groups of group_size = "
                       f"{batch.group_size}")

  def _reference_lengths(self, responses: Sequence[str]) -> np.ndarray:
    """Response tokens (EOS included) of reference samples: the policy tokenizer's count + 1,
    or without one the UTF-8 byte count + 1 (the byte tokenizer's)."""
    if self._tokenizer is not None:
      return np.array([len(self._tokenizer.encode(r)) + 1 for r in responses], np.int32)
    return np.array([len(r.encode("utf-8")) + 1 for r in responses], np.int32)

  def _fill_references(self, state, batch, sample_reference) -> int:
    """Samples and scores pi_0's references of the batch's prompts not yet done (in place on
    the state's copies); returns how many prompts were sampled."""
    ids = np.asarray(batch.prompt_ids, np.int64)
    num_prompts = state["reference"].shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= num_prompts):
      raise ValueError(f"RewardBatch.prompt_ids must lie in [0, {num_prompts}) (init_state's "
                       f"num_prompts); got [{ids.min()}, {ids.max()}]")
    new, first = np.unique(ids, return_index=True)
    keep = ~state["reference_done"][new]
    new, first = new[keep], first[keep]
    if not new.size:
      return 0
    k = self.reference_samples
    samples = sample_reference(new, k)
    if len(samples) != len(new) or any(len(s) != k for s in samples):
      raise ValueError(f"sample_reference(prompt_ids [{len(new)}], k={k}) must return "
                       f"{len(new)} lists of {k} responses; got "
                       f"{[len(s) for s in samples]}")
    prompts = [batch.prompts[i] for i in first for _ in range(k)]
    responses = [str(r) for s in samples for r in s]
    which = [s.needs_reference for s in self._plan.sources]
    scores = self._score(prompts, responses, self._reference_lengths(responses), which)
    state["reference"][new] = scores.reshape(len(new), k, -1).transpose(0, 2, 1)
    state["reference_done"][new] = True
    return int(new.size)

  def __call__(self, state: dict, batch: RewardBatch, sample_reference: ReferenceSampler
               ) -> tuple[np.ndarray, dict, dict[str, float], np.ndarray]:
    """Scores, transforms and combines one batch.

    Args:
      state: from `init_state` (or a previous call); not modified.
      batch: the `RewardBatch`.
      sample_reference: `(prompt_ids [M], k) -> M lists of k pi_0 responses`, called once per
        call at most, for the batch's prompts whose references are not yet scored.

    Returns:
      (combined float32 [N] (NaN: a row with a missing source, see the module docstring),
       new state, metrics {name: float}, raw float32 [N, K]).

    Metrics: reward/<source>/{raw_mean, raw_std, missing, transformed_mean, transformed_std}
    (and reference_mean, the mean raw reward of pi_0's samples of the batch's prompts, for a
    source with references),
    reward/combined_mean, reward/combined_std, reward/invalid_rows, with references
    reward/reference_fill (fraction of prompts done) and reward/reference_sampled (prompts
    sampled by this call), with the lagrangian
    reward/lagrange/<source>/{multiplier, weight, constraint_value}.
    """
    raw = self.score(batch)
    n = raw.shape[0]
    # A copy: the caller's state is not modified (the references are filled in the copy).
    state = {k: (dict(v) if isinstance(v, Mapping) else np.array(v)) for k, v in state.items()}
    metrics: dict[str, float] = {}
    references = None
    if self.needs_reference:
      metrics["reward/reference_sampled"] = float(
          self._fill_references(state, batch, sample_reference))
      metrics["reward/reference_fill"] = float(state["reference_done"].mean())
      references = state["reference"][np.asarray(batch.prompt_ids, np.int64)]  # [N, K, k]
    valid = np.isfinite(raw)
    transformed = np.full_like(raw, np.nan)
    for j, spec in enumerate(self._plan.sources):
      values, mask, refs, ref_mask, lengths = _transform_inputs(
          raw[:, j], valid[:, j], references[:, j] if spec.needs_reference else None,
          batch.lengths)
      stats = None
      if spec.transform.name in RUNNING_TRANSFORMS:  # Merge the batch, then normalise it.
        stats = _welford_update(transforms.WelfordState(**state["running"][spec.name]),
                                values, mask)
        state["running"][spec.name] = {f: np.asarray(v) for f, v in stats._asdict().items()}
      out = _jitted_transform(spec.transform, batch.group_size)(
          values, mask, refs, ref_mask, lengths, stats)
      transformed[:, j] = np.where(valid[:, j], np.asarray(out, np.float32), np.nan)
      name = f"reward/{spec.name}"
      metrics[f"{name}/raw_mean"], metrics[f"{name}/raw_std"] = _stats(raw[:, j])
      metrics[f"{name}/missing"] = float(1.0 - valid[:, j].mean()) if n else 0.0
      metrics[f"{name}/transformed_mean"], metrics[f"{name}/transformed_std"] = _stats(
          transformed[:, j])
      if spec.needs_reference:  # pi_0's raw rewards on the batch's prompts.
        metrics[f"{name}/reference_mean"] = _stats(references[:, j].ravel())[0]

    usable = valid.all(axis=1)
    multipliers = None
    if self.combination.name == "lagrangian":
      multipliers = np.asarray(state["lagrange"]["multipliers"], np.float32)
    and_params = (tuple((k, self._plan.extra[k]) for k in ("quantile", "method", "ddof"))
                  if self.combination.name == "logical_and" else ())
    combined = _jitted_combination(self.combination, batch.group_size, and_params)(
        np.where(usable[:, None], transformed, 0).astype(np.float32), usable,
        references if self.combination.name == "logical_and" else None, multipliers)
    combined = np.where(usable, np.asarray(combined, np.float32), np.nan).astype(np.float32)
    if self.combination.name == "lagrangian":
      self._update_multipliers(state, transformed, usable, metrics)
    metrics["reward/combined_mean"], metrics["reward/combined_std"] = _stats(combined)
    metrics["reward/invalid_rows"] = float(n - usable.sum())
    return combined, state, metrics, raw

  def _update_multipliers(self, state, transformed, usable, metrics) -> None:
    """l <- l - eta g'(l) (J - theta), J_i = the mean of constraint i's transformed reward over
    the usable rows (`lagrange_update`); no step without a usable row."""
    extra = self._plan.extra
    thresholds = extra["thresholds"]
    values = transformed[usable, 1:].mean(axis=0) if usable.any() else thresholds
    multipliers, weights = _lagrange_step(
        np.asarray(state["lagrange"]["multipliers"], np.float32), values.astype(np.float32),
        thresholds, np.float32(extra["learning_rate"] if usable.any() else 0.0),
        constraint_type=self.combination.params["constraint_type"])
    state["lagrange"] = {"multipliers": np.asarray(multipliers, np.float32)}
    for i, spec in enumerate(self._plan.sources[1:]):
      prefix = f"reward/lagrange/{spec.name}"
      metrics[f"{prefix}/multiplier"] = float(multipliers[i])
      metrics[f"{prefix}/weight"] = float(weights[i])
      metrics[f"{prefix}/constraint_value"] = (float(values[i]) if usable.any()
                                                else float("nan"))


def make_reward_pipeline(config, *, world=None, policy_tokenizer=None,
                         scorers: Mapping[str, Any] | None = None) -> RewardPipeline:
  """The reward pipeline of config.rewards, checked (`check_rewards_config`) before anything
  loads or compiles; reward models load on their first score.

  Args:
    config: the run config (reads config.rewards) or config.rewards itself.
    world: the synthetic `PolicyWorld` ("true_reward" sources need it), or None.
    policy_tokenizer: the policy's tokenizer (`encode(text)`), to count the tokens of
      reference samples for rule sources; None counts UTF-8 bytes.
    scorers: optional {source name: object with `score(prompts, responses) -> [N]`} used
      instead of loading that "reward_model" / "pretrained" source's model (a caller that
      already holds the scorer, and tests); the config is still checked.

  Raises:
    ValueError: a bad config (`check_rewards_config`); "true_reward" without `world`.
  """
  plan = _parse(config, has_world=world is not None)
  for name in scorers or {}:
    if name not in [s.name for s in plan.sources]:
      raise ValueError(_unknown("scorers", name, [s.name for s in plan.sources], "source"))
  return RewardPipeline(plan, world=world, policy_tokenizer=policy_tokenizer, scorers=scorers)
