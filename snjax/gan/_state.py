"""The state of a GAN run: a pytree of the params, optimizer states, spectral-norm state, counters and RNG."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from snjax.gan._sharding import replicate
from snjax.gan._step_config import StepConfig
from snjax.transform import SNState

PyTree = Any


class GANTrainState(NamedTuple):
  """Everything a GAN run carries from step to step; a pytree (jit, shard, checkpoint it).

  Attributes:
    step: int32, generator updates done (``train_step`` and ``generator_step`` calls).
    critic_updates: int32, critic updates done.
    generator_params: the generator's params.
    critic_params: the critic's raw (unnormalized) params.
    generator_opt_state: the generator optimizer's state.
    critic_opt_state: the critic optimizer's state.
    sn_state: the spectral-norm state of the critic (``{path: {'u', 'sigma'}}``;
      ``{}`` when spectral normalization is off).
    rng: uint32 raw key data (``jax.random.key_data``) of the run's PRNG key;
      every step splits it, so a resumed run draws the same numbers.
    generator_ema: an exponential moving average of the generator params, or
      ``None`` (``ema_decay=None``).
  """

  step: jax.Array
  critic_updates: jax.Array
  generator_params: PyTree
  critic_params: PyTree
  generator_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  sn_state: SNState
  rng: jax.Array
  generator_ema: PyTree | None = None


def key_data(key: jax.Array) -> jax.Array:
  """The raw uint32 data of a PRNG key, new style (``jax.random.key``) or legacy (``jax.random.PRNGKey``).

  Args:
    key: a typed key or a uint32 key array.

  Returns:
    The uint32 key data.

  Raises:
    ValueError: ``key`` is neither.
  """
  key = jnp.asarray(key)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  if key.dtype != jnp.uint32:
    raise ValueError(f'key must be a jax.random.key or a uint32 jax.random.PRNGKey, got dtype {key.dtype}.')
  return key


def split_rng(rng_data: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
  """Splits the state's RNG into ``n`` keys: the next state's RNG (as key data) and ``n - 1`` keys to use.

  Args:
    rng_data: :attr:`GANTrainState.rng`.
    n: the number of keys to split into (>= 2).

  Returns:
    ``(next_rng_data, keys)`` with ``keys`` a typed key array of shape ``(n - 1,)``.
  """
  keys = jax.random.split(jax.random.wrap_key_data(rng_data), n)
  return jax.random.key_data(keys[0]), keys[1:]


def init_state(config: StepConfig, key: jax.Array, generator_params: PyTree, critic_params: PyTree) -> GANTrainState:
  """The state of a new run: counters at 0, fresh optimizer and spectral-norm states, the EMA a copy of the params.

  Args:
    config: the step configuration.
    key: a PRNG key (typed or legacy uint32); split into the spectral-norm
      state's initial vectors and the run's RNG.
    generator_params: the generator's initial params.
    critic_params: the critic's initial (raw) params.

  Returns:
    A :class:`GANTrainState`, replicated on ``config.mesh`` if there is one.

  Raises:
    ValueError: ``key`` is not a PRNG key.
  """
  k_sn, k_rng = jax.random.split(jax.random.wrap_key_data(key_data(key)))
  sn = config.spectral_norm
  state = GANTrainState(
    step=jnp.zeros((), jnp.int32),
    critic_updates=jnp.zeros((), jnp.int32),
    generator_params=generator_params,
    critic_params=critic_params,
    generator_opt_state=config.generator_tx.init(generator_params),
    critic_opt_state=config.critic_tx.init(critic_params),
    sn_state=sn.init(k_sn, critic_params) if sn is not None else {},
    rng=jax.random.key_data(k_rng),
    generator_ema=jax.tree_util.tree_map(jnp.array, generator_params) if config.ema_decay is not None else None,
  )
  return state if config.mesh is None else replicate(state, config.mesh)
