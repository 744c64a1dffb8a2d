"""rmjax: reward modeling and reward-driven policy optimisation of language models in JAX.

Import what you need: `from rmjax import losses` pulls in only jax and chex; the training
stack (`rmjax.models`, `rmjax.data`, `rmjax.train`) pulls in flax, optax, orbax, grain and
tensorflow-datasets.
"""

__version__ = "0.1.0"
