"""Optimiser and schedule construction from config."""

import ml_collections
import numpy as np
import pytest

from rmjax.train import optim


def _optim_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=10,
      end_lr_ratio=0.1, weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-8, momentum=0.9,
      grad_clip_norm=1.0))
  config.update(overrides)
  return config


def test_warmup_cosine_schedule_values():
  _, schedule = optim.make_optimizer(_optim_config(), total_steps=110)
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(5), 5e-4, rtol=1e-6)  # Halfway through the warm-up.
  np.testing.assert_allclose(schedule(10), 1e-3, rtol=1e-6)
  # Halfway through the cosine: end + (peak - end) / 2.
  np.testing.assert_allclose(schedule(60), 1e-4 + 0.5 * 9e-4, rtol=1e-5)
  np.testing.assert_allclose(schedule(110), 1e-4, rtol=1e-5)


def test_warmup_linear_schedule_values():
  _, schedule = optim.make_optimizer(_optim_config(schedule="warmup_linear"), total_steps=110)
  np.testing.assert_allclose(schedule(10), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(schedule(60), 0.5 * (1e-3 + 1e-4), rtol=1e-5)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_takes_a_step_downhill(name):
  import jax
  import jax.numpy as jnp
  import optax
  opt, _ = optim.make_optimizer(
      _optim_config(name=name, schedule="constant", learning_rate=0.1), total_steps=10)
  params = {"w": jnp.array([1.0, -2.0])}
  loss = lambda p: jnp.sum(p["w"] ** 2)
  updates, _ = opt.update(jax.grad(loss)(params), opt.init(params), params)
  assert loss(optax.apply_updates(params, updates)) < loss(params)


def test_bad_names_are_rejected_with_the_field():
  with pytest.raises(ValueError, match="optim.name.*'adamx'"):
    optim.make_optimizer(_optim_config(name="adamx"), total_steps=10)
  with pytest.raises(ValueError, match="optim.schedule"):
    optim.make_optimizer(_optim_config(schedule="cosine"), total_steps=10)
  with pytest.raises(ValueError, match="optim.warmup_steps"):
    optim.make_optimizer(_optim_config(warmup_steps=20), total_steps=10)


def test_fit_full_batch_minimises_a_quadratic_and_returns_its_loss_history():
  import jax.numpy as jnp
  target = jnp.array([1.0, -2.0, 0.5])
  params, history = optim.fit_full_batch(lambda p: jnp.sum((p - target) ** 2), jnp.zeros(3),
                                         num_steps=300, learning_rate=0.1)
  np.testing.assert_allclose(params, target, atol=1e-2)
  assert history.shape == (300,)
  np.testing.assert_allclose(history[0], 5.25)  # The loss at the initial parameters.
  assert history[-1] < 1e-3
