"""Optimisers and learning-rate schedules chosen by name from config."""

from collections.abc import Callable

import jax
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


def fit_full_batch(loss_fn: Callable, params, *, num_steps: int,
                   learning_rate: float) -> tuple:
  """Full-batch Adam on `loss_fn(params)` for `num_steps`, as one `lax.scan`.

  For the small models of the synthetic studies (lookup tables, linear heads, small MLPs);
  jit- and vmap-safe (vmap over params to train an ensemble at once).

  Args:
    loss_fn: params -> scalar loss.
    params: initial parameters (a pytree).
    num_steps: Adam steps.
    learning_rate: Adam's constant learning rate.

  Returns:
    (params, losses): the final parameters and the [num_steps] loss before each step.
  """
  optimizer = optax.adam(learning_rate)

  def step(carry, _):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None,
                                     length=num_steps)
  return params, losses
