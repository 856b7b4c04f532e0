"""Tests of snjax.gan._step_config: gan_trainer's options are checked once, with clear messages, and resolved."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import snjax
from snjax.gan import _step_config
from tests.gan._gan_testing import LATENT, config_options, d_apply, g_apply


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(n_critic=0), 'n_critic must be an int >= 1'),
    (dict(n_critic=True), 'n_critic must be an int >= 1, got True'),
    (dict(gp_weight=-1.0), 'gp_weight must be a finite float >= 0'),
    (dict(gp_weight=float('nan')), 'gp_weight must be a finite float >= 0, got nan'),
    (dict(r1_weight=-0.5), 'r1_weight must be a finite float >= 0'),
    (dict(gp_target=float('inf')), 'gp_target must be a finite float >= 0'),
    (dict(ema_decay=1.0), r'ema_decay \(None for no EMA\) must be a finite float in \[0, 1\)'),
    (dict(ema_decay=-0.1), r'ema_decay \(None for no EMA\) must be a finite float in \[0, 1\), got -0\.1'),
    (dict(latent_shape=(0,)), 'latent_shape must be a positive int'),
    (dict(latent_shape=()), r'latent_shape must be a positive int or a tuple of them, got \(\)'),
    (dict(latent_shape=2.5), 'latent_shape must be a positive int or a tuple of them, got 2.5'),
    (dict(loss='lsgan'), 'loss must be one of'),
    (dict(spectral_norm={'n_power_iterations': 0}), 'n_power_iterations must be an int >= 1'),
    (dict(spectral_norm='yes'), 'spectral_norm must be True, False or a mapping'),
    (dict(mesh=snjax.gan.data_mesh(jax.devices()[:1]), data_axis='batch'), "data_axis 'batch' is not an axis of"),
  ],
)
def test_bad_options_are_clear_errors(kwargs, match):
  kwargs = {'latent_shape': LATENT, **kwargs}
  with pytest.raises(ValueError, match=match):
    snjax.gan.gan_trainer(g_apply, d_apply, optax.sgd(0.1), optax.sgd(0.1), **kwargs)


def _make(**changes):
  return _step_config.step_config(g_apply, d_apply, optax.sgd(0.1), optax.sgd(0.1), **config_options(**changes))


def test_options_are_resolved_once():
  """A loss name becomes its GANLoss, spectral_norm its SpectralNormalization (or None), numbers ints and floats."""
  config = _make(latent_shape=[4, 2], loss='wasserstein', n_critic=np.int64(3), gp_weight=10, ema_decay=0)
  assert config.latent_shape == (4, 2)
  assert config.loss is snjax.gan.LOSSES['wasserstein']
  assert type(config.n_critic) is int and config.n_critic == 3
  assert type(config.gp_weight) is float and config.gp_weight == 10.0
  assert config.ema_decay == 0.0 and isinstance(config.spectral_norm, snjax.SpectralNormalization)
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.n_critic = 4
  off = _make(spectral_norm=False)
  assert off.spectral_norm is None


def test_default_latents_are_standard_normal_float32_of_the_latent_shape():
  config = _make(latent_shape=(4, 2))
  key = jax.random.key(3)
  z = config.latent_sampler(key, 5)
  assert z.shape == (5, 4, 2) and z.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(z), np.asarray(jax.random.normal(key, (5, 4, 2), jnp.float32)))
  custom = lambda k, n: jnp.zeros((n, LATENT))  # noqa: E731
  config = _make(latent_sampler=custom)
  assert config.latent_sampler is custom
