"""The shape of every stateful piece in rmjax: optax's `(init, update)` pair.

A factory closes over the hyper-parameters once and returns a `StatefulTransform`:

  init(...)                         -> state
  update(state, values, ...)        -> (output, new_state)

as optax's `GradientTransformation` and rlax's `create_ema` do. The state is a pytree (a
NamedTuple of arrays), passed in and out explicitly, so it can live in a train state and be
checkpointed; nothing is hidden in globals. Running statistics, reward normalisers, Lagrange
multipliers and the adaptive KL controller all have this shape; the pure functions they are
built from stay public beside them.
"""

from typing import Any, Callable, NamedTuple


class StatefulTransform(NamedTuple):
  """A stateful transformation: `init(...) -> state`, `update(state, values, ...) ->
  (output, new_state)`.

  Attributes:
    init: builds the initial state (a pytree of arrays).
    update: one step; returns what the step produces (normalised values, combined rewards,
      the current coefficient, ...) and the new state.
  """
  init: Callable[..., Any]
  update: Callable[..., tuple[Any, Any]]
