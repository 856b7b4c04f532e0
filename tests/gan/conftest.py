"""Trainers shared by several test modules of snjax.gan, built (and compiled) once per test process."""

import jax
import jax.numpy as jnp
import optax
import pytest

import snjax
from tests.gan._gan_testing import CONV_D, CONV_G, IMG, LATENT, N_CRITIC, d_apply, fixed_z, g_apply


@pytest.fixture(scope='session')
def fixed_trainer():
  """A hinge SN-GAN trainer whose latents do not depend on the key, so a reference can rebuild the step."""
  return snjax.gan.gan_trainer(
    g_apply, d_apply, optax.adam(1e-2), optax.adam(1e-2), latent_shape=LATENT, latent_sampler=lambda k, n: fixed_z()
  )


@pytest.fixture(scope='session')
def wgan_trainer():
  """WGAN-GP with n_critic = 2 and a generator EMA, shared by several tests (one compilation)."""
  return snjax.gan.gan_trainer(
    g_apply,
    d_apply,
    optax.adam(1e-2),
    optax.rmsprop(1e-2),
    latent_shape=LATENT,
    n_critic=N_CRITIC,
    loss='wasserstein',
    gp_weight=10.0,
    ema_decay=0.5,
  )


@pytest.fixture(scope='session')
def conv_trainer():
  """A conv critic with n_critic = 3 and an EMA, and its initial state."""
  trainer = snjax.gan.gan_trainer(
    lambda p, z: CONV_G.apply({'params': p}, z),
    lambda p, x: CONV_D.apply({'params': p}, x),
    optax.adam(1e-3, b1=0.5),
    optax.adam(1e-3, b1=0.5),
    latent_shape=LATENT,
    n_critic=3,
    ema_decay=0.9,
  )
  gp = CONV_G.init(jax.random.key(20), jnp.zeros((1, LATENT)))['params']
  cp = CONV_D.init(jax.random.key(21), jnp.zeros((1, *IMG)))['params']
  return trainer, trainer.init(jax.random.key(22), gp, cp)
