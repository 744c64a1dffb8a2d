"""Pure reward-model losses: arrays in, arrays out.

Imports only jax, jax.numpy and chex, so that other projects can use the losses
without the training stack. Every loss takes an optional validity `mask`, and
reduces with `reduce_loss` (`reduction` in {"mean", "sum", "none"}; "mean" is
over valid examples only).
"""

from rmjax.losses._reduction import reduce_loss
from rmjax.losses.bradley_terry import bradley_terry_loss
from rmjax.losses.bradley_terry import l2_reward_penalty
from rmjax.losses.bradley_terry import reward_centering_penalty
from rmjax.losses.bradley_terry import scaled_bradley_terry_loss

__all__ = (
    "bradley_terry_loss",
    "l2_reward_penalty",
    "reduce_loss",
    "reward_centering_penalty",
    "scaled_bradley_terry_loss",
)
