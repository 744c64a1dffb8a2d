"""Preference strength from a trained teacher ensemble, and its uses in training.

Secrets of RLHF II (Wang et al. 2024, arXiv:2401.06080, section 3) scores every training pair
with an ensemble of reward models: the member margins d_m = r_m(chosen) - r_m(rejected) give
the pair's strength (mean_m d_m) and spread (std_m d_m). A low or negative strength marks a
pair the ensemble doubts, often a mislabelled one. The trainer uses it through
`config.strength`:

  teacher_workdir  the workdir of a finished ensemble run (`configs/reward_model.py:ensemble`;
                   its config.json and latest checkpoint), with the same data.max_len and
                   data.max_prompt_len as this run.
  use              "none"; "flip" (swap chosen and rejected of the `flip_fraction` of pairs
                   with the lowest strength, before training); "smoothing" (per-pair label
                   smoothing a_i = min(sigma(-u_i), max_smoothing), the teacher's doubt);
                   "adaptive_margin" (-log sigma(Delta - u_i)); u_i = strength of pair i.

The strength is computed once, before training, as in the paper (an offline teacher), and
stored with the training pairs as ``strength_mean`` and ``strength_std``.
"""

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rmjax import data as rm_data
from rmjax import models
from rmjax import transforms
from rmjax.train import checkpoint as ckpt_lib
from rmjax.train import optim
from rmjax.train import step as step_lib
from rmjax.train.state import TrainState

_PAIR_SIDES = (("chosen_tokens", "rejected_tokens"), ("chosen_mask", "rejected_mask"),
               ("chosen_attributes", "rejected_attributes"),
               ("chosen_attribute_mask", "rejected_attribute_mask"))


def load_teacher_config(teacher_workdir: str) -> ml_collections.ConfigDict:
  """The config.json of a finished ensemble run, checked to be an ensemble of >= 2 members."""
  path = os.path.join(teacher_workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"strength.teacher_workdir={teacher_workdir!r}: no config.json there; expected the "
        "workdir of a finished ensemble run (configs/reward_model.py:ensemble)")
  with open(path) as f:
    teacher = ml_collections.ConfigDict(json.load(f))
  members = teacher.ensemble.num_members
  if members < 2:
    raise ValueError(
        f"strength.teacher_workdir={teacher_workdir!r} holds a run with ensemble.num_members="
        f"{members}; preference strength needs an ensemble of >= 2 members")
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
  from rmjax.train import loop  # The model set-up of a run; imported here to avoid a cycle.

  teacher = load_teacher_config(teacher_workdir)
  if teacher.data.max_len != dataset.max_len:
    raise ValueError(
        f"strength.teacher_workdir={teacher_workdir!r}: the teacher's data.max_len="
        f"{teacher.data.max_len} differs from this run's {dataset.max_len}; the teacher must "
        "score the same token layout")
  model_config = loop._model_config(teacher)  # noqa: SLF001
  head_kwargs = loop._head_kwargs(teacher)  # noqa: SLF001
  num_members = teacher.ensemble.num_members
  init_params = functools.partial(models.init_ensemble, model_config, num_members=num_members,
                                  **head_kwargs)
  optimizer, _ = optim.make_optimizer(teacher.optim, teacher.train.num_steps)

  def init_state(rng):
    init_rng, state_rng = jax.random.split(rng)
    _, params = init_params(init_rng)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), state_rng)

  key = jax.random.PRNGKey(teacher.seed)
  graphdef, _ = jax.eval_shape(init_params, key)
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

  apply_fn = step_lib.ensemble_apply_members_last(models.make_ensemble_apply(graphdef))
  loss_config = teacher.loss

  @jax.jit
  def member_logits(params, batch):
    chosen, rejected = step_lib.score_pairs(apply_fn, params, batch)
    return jax.vmap(lambda c, r: step_lib.pair_logits(loss_config, c, r),
                    in_axes=-1)(chosen, rejected)

  out = []
  for batch in dataset.eval_batches(batch_size):
    inputs = {k: batch[k] for k in ("chosen_tokens", "chosen_mask", "rejected_tokens",
                                    "rejected_mask")}
    out.append(np.asarray(member_logits(params, inputs))[:, batch["valid"]])
  info = dict(teacher_workdir=os.path.abspath(teacher_workdir),
              teacher_name=teacher.get("name", ""), members=num_members, checkpoint_step=step)
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
  return rm_data.PreferenceDataset(arrays, name=train.name), info


def _expand(flags: np.ndarray, like: np.ndarray) -> np.ndarray:
  return flags.reshape(flags.shape + (1,) * (like.ndim - 1))
