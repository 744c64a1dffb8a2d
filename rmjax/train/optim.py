"""Optimisers and learning-rate schedules chosen by name from config."""

from collections.abc import Callable

import ml_collections
import optax

SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")
OPTIMIZERS = ("adamw", "adam", "sgd", "lion")


def make_schedule(optim_config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Learning rate as a function of the step.

  constant:       lr
  warmup_cosine:  linear 0 -> lr over `warmup_steps`, cosine lr -> lr * end_lr_ratio at the end
  warmup_linear:  linear 0 -> lr over `warmup_steps`, linear lr -> lr * end_lr_ratio at the end
  """
  lr = float(optim_config.learning_rate)
  name = optim_config.schedule
  warmup = int(optim_config.warmup_steps)
  if name not in SCHEDULES:
    raise ValueError(f"optim.schedule: expected one of {SCHEDULES}, got {name!r}")
  if name == "constant":
    return optax.constant_schedule(lr)
  if not 0 <= warmup < total_steps:
    raise ValueError(
        f"optim.warmup_steps: expected 0 <= warmup_steps < num_steps={total_steps}, got {warmup}")
  end_lr = lr * float(optim_config.end_lr_ratio)
  if name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps, end_lr)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup),
       optax.linear_schedule(lr, end_lr, total_steps - warmup)], [warmup])


def make_optimizer(optim_config: ml_collections.ConfigDict,
                   total_steps: int) -> tuple[optax.GradientTransformation, Callable[[int], float]]:
  """(optimiser, schedule) from `optim_config`.

  Fields: name (adamw | adam | sgd | lion), learning_rate, schedule, warmup_steps,
  end_lr_ratio, weight_decay (adamw, lion), b1, b2, eps, momentum (sgd), grad_clip_norm (0 = off).
  """
  name = optim_config.name
  if name not in OPTIMIZERS:
    raise ValueError(f"optim.name: expected one of {OPTIMIZERS}, got {name!r}")
  schedule = make_schedule(optim_config, total_steps)
  if name == "adamw":
    opt = optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps,
                      weight_decay=optim_config.weight_decay)
  elif name == "adam":
    opt = optax.adam(schedule, b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps)
  elif name == "lion":
    opt = optax.lion(schedule, b1=optim_config.b1, b2=optim_config.b2,
                     weight_decay=optim_config.weight_decay)
  else:
    opt = optax.sgd(schedule, momentum=optim_config.momentum or None)
  if optim_config.grad_clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), opt)
  return opt, schedule
