"""Preference strength from a trained teacher ensemble: a data step before training.

Secrets of RLHF II (Wang et al. 2024, arXiv:2401.06080, section 3) scores every training pair
with an ensemble of reward models: the member margins d_m = r_m(chosen) - r_m(rejected) give
the pair's strength (mean_m d_m) and spread (std_m d_m). A low or negative strength marks a
pair the ensemble doubts, often a mislabelled one. The BT family uses it through
`config.strength`:

  teacher_workdir  the workdir of a finished ensemble run (`configs/reward_model.py:ensemble`;
                   its config.json and latest checkpoint), with the same data.max_len as
                   this run.
  use              "none"; "flip" (swap chosen and rejected of the `flip_fraction` of pairs
                   with the lowest strength, before training); "smoothing" (per-pair label
                   smoothing a_i = min(sigma(-u_i), max_smoothing), the teacher's doubt);
                   "adaptive_margin" (-log sigma(Delta - u_i)); u_i = strength of pair i.

The strength is computed once, before training, as in the paper (an offline teacher), and
stored with the training pairs as ``strength_mean`` and ``strength_std``.
"""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rmjax import data as rm_data
from rmjax import transforms
from rmjax.tasks.reward_model import pairwise
from rmjax.tasks.reward_model.families import ensemble
from rmjax.train import checkpoint as ckpt_lib
from rmjax.train import optim
from rmjax.train.state import TrainState

_PAIR_SIDES = (("chosen_tokens", "rejected_tokens"), ("chosen_mask", "rejected_mask"),
               ("chosen_attributes", "rejected_attributes"),
               ("chosen_attribute_mask", "rejected_attribute_mask"))


def default_strength_config() -> dict[str, Any]:
  """config.strength of the BT family: no teacher (use "none")."""
  return dict(teacher_workdir="", use="none", flip_fraction=0.2, max_smoothing=0.45)


def check_strength_config(config: ml_collections.ConfigDict) -> None:
  """config.strength.use is known, and names a teacher when it is not "none"."""
  use = config.strength.use
  if use not in pairwise.STRENGTH_USES:
    raise ValueError(f"strength.use: expected one of {pairwise.STRENGTH_USES}, got {use!r}")
  if use != "none" and not config.strength.teacher_workdir:
    raise ValueError(f"strength.use={use!r} needs strength.teacher_workdir: the workdir of a "
                     "trained ensemble (e.g. a run of configs/reward_model.py:ensemble)")


def load_teacher_config(teacher_workdir: str) -> ml_collections.ConfigDict:
  """The config.json of a finished ensemble run, checked to be an ensemble of >= 2 members."""
  path = os.path.join(teacher_workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"strength.teacher_workdir={teacher_workdir!r}: no config.json there; expected the "
        "workdir of a finished ensemble run (configs/reward_model.py:ensemble)")
  with open(path) as f:
    teacher = ml_collections.ConfigDict(json.load(f))
  if teacher.get("family") != "ensemble" or teacher.ensemble.num_members < 2:
    raise ValueError(
        f"strength.teacher_workdir={teacher_workdir!r} holds a run of family "
        f"{teacher.get('family')!r}; preference strength needs an ensemble run of >= 2 "
        "members (configs/reward_model.py:ensemble)")
  return teacher


def teacher_member_logits(teacher_workdir: str, dataset: rm_data.PreferenceDataset, *,
                          batch_size: int = 256) -> tuple[np.ndarray, dict[str, Any]]:
  """Per-member pair logits [M, N] of a teacher ensemble on every pair of `dataset`.

  Args:
    teacher_workdir: workdir of the teacher run (config.json, checkpoints/).
    dataset: the pairs to score (same max_len as the teacher's data).
    batch_size: pairs per forward pass.

  Returns:
    (logits [M, N] float32, info: teacher name, members, checkpoint step).
  """
  teacher = load_teacher_config(teacher_workdir)
  if teacher.data.max_len != dataset.max_len:
    raise ValueError(
        f"strength.teacher_workdir={teacher_workdir!r}: the teacher's data.max_len="
        f"{teacher.data.max_len} differs from this run's {dataset.max_len}; the teacher must "
        "score the same token layout")
  family = ensemble.FAMILY
  model = family.build_model(family, teacher)
  optimizer, _ = optim.make_optimizer(teacher.optim, teacher.train.num_steps)

  def init_state(rng):
    _, params = model.init_params(rng)
    return TrainState.create(params, optimizer, rng)

  key = jax.random.PRNGKey(teacher.seed)
  graphdef, _ = jax.eval_shape(model.init_params, key)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                        jax.eval_shape(init_state, key))
  checkpointer = ckpt_lib.Checkpointer(os.path.join(teacher_workdir, "checkpoints"),
                                       async_save=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(
          f"strength.teacher_workdir={teacher_workdir!r}: no checkpoint under checkpoints/; "
          "train the teacher first")
    params = checkpointer.restore(step, target).params
  finally:
    checkpointer.close()

  apply_fn = model.make_apply(graphdef)

  @jax.jit
  def member_logits(params, batch):
    chosen, rejected = pairwise.score_pairs(apply_fn, params, batch)
    return pairwise.member_pair_logits(family, teacher, model.num_members, chosen, rejected)

  out = []
  for batch in dataset.eval_batches(batch_size):
    inputs = {k: batch[k] for k in ("chosen_tokens", "chosen_mask", "rejected_tokens",
                                    "rejected_mask")}
    out.append(np.asarray(member_logits(params, inputs))[:, batch["valid"]])
  info = dict(teacher_workdir=os.path.abspath(teacher_workdir),
              teacher_name=teacher.get("name", ""), members=model.num_members,
              checkpoint_step=step)
  return np.concatenate(out, axis=1), info


def apply_teacher_strength(strength_config: ml_collections.ConfigDict,
                           train: rm_data.PreferenceDataset
                           ) -> tuple[rm_data.PreferenceDataset, dict[str, Any]]:
  """The training pairs with the teacher's strength attached (and, for "flip", flipped).

  Args:
    strength_config: `config.strength` (teacher_workdir, use, flip_fraction, max_smoothing).
    train: the training pairs.

  Returns:
    (dataset with ``strength_mean`` / ``strength_std`` [N] float32, report): the report
    counts the pairs the teacher disagrees with, the flipped pairs, and on synthetic data
    how many of those went against the ground truth (the flips' precision).
  """
  if not isinstance(train, rm_data.PreferenceDataset):
    raise ValueError("strength.use applies to pair data (data.format='pairs')")
  logits, info = teacher_member_logits(strength_config.teacher_workdir, train)
  strength, spread = transforms.preference_strength(jnp.asarray(logits),
                                                    jnp.zeros_like(jnp.asarray(logits)))
  strength, spread = np.asarray(strength, np.float32), np.asarray(spread, np.float32)
  arrays = train.arrays
  use = strength_config.use
  info.update(use=use, num_pairs=int(strength.shape[0]),
              mean_strength=float(strength.mean()), mean_spread=float(spread.mean()),
              teacher_disagrees=float(np.mean(strength < 0)))
  if "preference_prob" in arrays:
    against_truth = arrays["preference_prob"] < 0.5
    info["labels_against_truth"] = int(against_truth.sum())
  if use == "flip":
    fraction = float(strength_config.flip_fraction)
    flip = np.asarray(transforms.lowest_fraction_mask(jnp.asarray(strength), fraction))
    for a, b in _PAIR_SIDES:
      if a in arrays:
        arrays[a], arrays[b] = (np.where(_expand(flip, arrays[a]), arrays[b], arrays[a]),
                                np.where(_expand(flip, arrays[a]), arrays[a], arrays[b]))
    if "preference_prob" in arrays:
      arrays["preference_prob"] = np.where(flip, 1.0 - arrays["preference_prob"],
                                           arrays["preference_prob"]).astype(np.float32)
      info["flipped_against_truth"] = int((flip & against_truth).sum())
      info["labels_against_truth_after"] = int((arrays["preference_prob"] < 0.5).sum())
    strength = np.where(flip, -strength, strength)
    info.update(flip_fraction=fraction, flipped=int(flip.sum()))
  arrays["strength_mean"], arrays["strength_std"] = strength, spread
  return rm_data.PreferenceDataset(arrays, name=train.name, pad_id=train.pad_id), info


def strength_data_step(config: ml_collections.ConfigDict,
                       data: rm_data.PreferenceData) -> rm_data.PreferenceData:
  """The BT family's data step: with config.strength.use != "none", the training pairs get
  the teacher's strength (`apply_teacher_strength`), reported as data.info['teacher_strength']."""
  if config.strength.use == "none":
    return data
  train, info = apply_teacher_strength(config.strength, data.train)
  return data._replace(train=train, info={**data.info, "teacher_strength": info})


def _expand(flags: np.ndarray, like: np.ndarray) -> np.ndarray:
  return flags.reshape(flags.shape + (1,) * (like.ndim - 1))
