"""Tests of snjax.app.models: the pair of models each data set gets, and their shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snjax.app import models
from snjax.app.config import TrainConfig
from snjax.app.data import get_dataset, sample_shape


@pytest.mark.parametrize(
  'dataset, kinds',
  [('grid25', (models.MLPGenerator, models.MLPCritic)), ('digits', (models.ConvGenerator, models.ConvCritic))],
)
def test_each_data_set_gets_its_models(dataset, kinds):
  config = TrainConfig.for_dataset(dataset, width=8, depth=2, latent_dim=3, activation='tanh', fourier_features=4)
  data = get_dataset(dataset)
  generator, critic = models.make_models(config, data)
  assert (type(generator), type(critic)) == kinds
  assert generator.width == critic.width == 8
  if dataset == 'grid25':
    assert (generator.depth, generator.out_dim, generator.activation) == (2, 2, 'tanh')
    assert (critic.depth, critic.fourier_features, critic.fourier_scale) == (2, 4, 1.0)
  z = jnp.zeros((5, config.latent_dim))
  g_params = generator.init(jax.random.key(0), z)['params']
  x = generator.apply({'params': g_params}, z)
  assert x.shape == (5, *sample_shape(data))
  c_params = critic.init(jax.random.key(1), x)['params']
  assert critic.apply({'params': c_params}, x).shape == (5,)
  if dataset == 'digits':
    assert np.all(np.abs(np.asarray(x)) <= 1)


def test_unknown_activation():
  with pytest.raises(ValueError, match="unknown activation 'swish'; expected one of relu, leaky_relu"):
    models.MLPGenerator(activation='swish').init(jax.random.key(0), jnp.zeros((1, 2)))
