"""The GAN of a ``snjax train`` configuration: models, optimizers, the train step, the keys and the first state.

The critic is spectrally normalized with :func:`snjax.sn_apply` inside the
train step of :func:`snjax.gan.gan_trainer` (Miyato et al. 2018,
https://arxiv.org/abs/1802.05957); both players use Adam (Kingma & Ba 2015,
https://arxiv.org/abs/1412.6980) with the learning-rate schedule of
:func:`lr_schedule`. Every random number of a run comes from the keys of
:func:`run_keys`, a pure function of the seed.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from snjax import gan
from snjax.app import data, models
from snjax.app.config import TrainConfig


def lr_schedule(config: TrainConfig, peak: float, updates_per_step: int) -> float | optax.Schedule:
  """``peak`` for the first ``1 - lr_decay`` of the steps, then linearly to 0 at the last.

  Args:
    config: the run's configuration (``steps``, ``lr_decay``).
    peak: the learning rate before the decay.
    updates_per_step: optimizer updates per step (``n_critic`` for the critic, 1 for the generator); the schedule
      counts updates, so both players' rates fall over the same steps.

  Returns:
    ``peak`` itself when ``lr_decay`` is 0, else an optax schedule of the update count.
  """
  if not config.lr_decay:
    return peak
  total = config.steps * updates_per_step
  start = round(config.steps * (1 - config.lr_decay)) * updates_per_step
  return optax.join_schedules([optax.constant_schedule(peak), optax.linear_schedule(peak, 0.0, total - start)], [start])


def build(
  config: TrainConfig, dataset: data.Dataset, mesh: jax.sharding.Mesh | None
) -> tuple[nn.Module, nn.Module, gan.GANTrainer]:
  """The models of ``config`` for ``dataset`` and their trainer.

  Args:
    config: the run's configuration.
    dataset: the data set (:func:`snjax.app.data.get_dataset`).
    mesh: the devices to train on (:func:`snjax.gan.data_mesh`), or ``None`` for the default device.

  Returns:
    ``(generator, critic, trainer)``: the Flax modules (:func:`snjax.app.models.make_models`) and the
    :class:`snjax.gan.GANTrainer` of their train step.
  """
  generator, critic = models.make_models(config, dataset)
  trainer = gan.gan_trainer(
    lambda p, z: generator.apply({'params': p}, z),
    lambda p, x: critic.apply({'params': p}, x),
    optax.adam(lr_schedule(config, config.lr_generator, 1), config.beta1, config.beta2),
    optax.adam(lr_schedule(config, config.lr_critic, config.n_critic), config.beta1, config.beta2),
    latent_shape=config.latent_dim,
    loss=config.loss,
    n_critic=config.n_critic,
    spectral_norm={'target_norm': float(config.target_norm)} if config.normalization == 'spectral' else False,
    ema_decay=config.ema_decay if config.ema_decay > 0 else None,
    mesh=mesh,
  )
  return generator, critic, trainer


class RunKeys(NamedTuple):
  """The independent keys of a run, split from ``jax.random.key(seed)``.

  Attributes:
    generator: initializes the generator's params.
    critic: initializes the critic's params.
    state: makes the train state's spectral-norm vectors and its own RNG (the latents of every step).
    data: the real batch of step ``t`` is drawn with ``fold_in(data, t)``.
    evaluation: draws the samples that are measured and plotted at the end.
  """

  generator: jax.Array
  critic: jax.Array
  state: jax.Array
  data: jax.Array
  evaluation: jax.Array


def run_keys(seed: int) -> RunKeys:
  """The keys of a run with ``seed`` (see :class:`RunKeys`)."""
  return RunKeys(*jax.random.split(jax.random.key(seed), 5))


def init_state(
  config: TrainConfig, dataset: data.Dataset, generator: nn.Module, critic: nn.Module, trainer: gan.GANTrainer
) -> gan.GANTrainState:
  """The train state at step 0: both models initialized from the seed's keys.

  Args:
    config: the run's configuration (``seed``, ``latent_dim``).
    dataset: the data set (for the shape of an example).
    generator: the generator of :func:`build`.
    critic: the critic of :func:`build`.
    trainer: the trainer of :func:`build`.

  Returns:
    The :class:`snjax.gan.GANTrainState`.
  """
  keys = run_keys(config.seed)
  shapes = ((1, config.latent_dim), (1, *data.sample_shape(dataset)))
  return trainer.init(keys.state, *_init_params(generator, critic, shapes, keys.generator, keys.critic))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_params(generator: nn.Module, critic: nn.Module, shapes: tuple, generator_key, critic_key):
  """Both models' initial params, in one compiled program (run eagerly, each op of each layer compiles alone);
  compiled once per pair of models (modules compare by their fields) and input shapes."""
  z0, x0 = (jnp.zeros(shape, jnp.float32) for shape in shapes)
  return generator.init(generator_key, z0)['params'], critic.init(critic_key, x0)['params']
