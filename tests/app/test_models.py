"""Tests of snjax.app.models: the pair of models each data set gets, and their shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snjax.app import data as data_module
from snjax.app import models
from snjax.app.config import TrainConfig
from snjax.app.data import get_dataset, sample_shape


@pytest.mark.parametrize(
  'dataset, kinds',
  [
    ('grid25', (models.MLPGenerator, models.MLPCritic)),
    ('digits', (models.ConvGenerator, models.ConvCritic)),
    ('stacked_digits', (models.ConvGenerator, models.ConvCritic)),
  ],
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
  if dataset != 'grid25':
    assert np.all(np.abs(np.asarray(x)) <= 1)


def test_unknown_activation():
  with pytest.raises(ValueError, match="unknown activation 'swish'; expected one of relu, leaky_relu"):
    models.MLPGenerator(activation='swish').init(jax.random.key(0), jnp.zeros((1, 2)))


def test_digits_models_keep_their_layers():
  """The 8x8 digits (one stride-2 stage) keep the layers of the original pair, so their runs are unchanged."""
  g = models.ConvGenerator(16, (8, 8, 1))
  g_params = g.init(jax.random.key(0), jnp.zeros((1, 32)))['params']
  shapes = {k: v['kernel'].shape for k, v in g_params.items()}
  assert shapes == {
    'Dense_0': (32, 4 * 4 * 32),
    'ConvTranspose_0': (4, 4, 32, 16),
    'Conv_0': (3, 3, 16, 16),
    'Conv_1': (3, 3, 16, 1),
  }
  c_params = models.ConvCritic(16).init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)))['params']
  shapes = {k: v['kernel'].shape for k, v in c_params.items()}
  assert shapes == {'Conv_0': (3, 3, 1, 16), 'Conv_1': (4, 4, 16, 32), 'Conv_2': (3, 3, 32, 32), 'Dense_0': (512, 1)}


@given(st.integers(1, 200), st.integers(1, 200))
def test_resolution_stages_is_the_most_whole_halvings(height, width):
  k = models.resolution_stages(height, width)
  ok = lambda j: height % 2**j == 0 and width % 2**j == 0 and min(height, width) // 2**j >= 4  # noqa: E731
  assert 0 <= k <= 4 and (k == 0 or ok(k))
  assert k == 4 or not ok(k + 1)


@pytest.mark.parametrize('shape', [(8, 8, 3), (28, 28, 1), (32, 16, 3), (7, 9, 2), (64, 64, 1)])
def test_conv_pair_for_any_image_shape(shape):
  generator, critic = models.ConvGenerator(4, shape), models.ConvCritic(4)
  z = jnp.zeros((2, 5))
  x = generator.apply(generator.init(jax.random.key(0), z), z)
  assert x.shape == (2, *shape) and np.all(np.abs(np.asarray(x)) <= 1)
  c_params = critic.init(jax.random.key(1), x)
  assert critic.apply(c_params, x).shape == (2,)
  # Channels grow 2x per stage, at most 8 x width.
  k = models.resolution_stages(*shape[:2])
  widest = max(v['kernel'].shape[-1] for v in c_params['params'].values())
  assert widest == 4 * min(2**k, 8) if k else widest == 4


def test_user_data_gets_the_family_of_its_shape(tmp_path):
  points, images = str(tmp_path / 'p.npy'), str(tmp_path / 'i.npy')
  np.save(points, np.zeros((100, 7)))
  np.save(images, np.zeros((100, 12, 12, 3), np.uint8))
  config = TrainConfig.for_data(points, batch_size=8)
  g, c = models.make_models(config, data_module.load_dataset(config))
  assert isinstance(g, models.MLPGenerator) and isinstance(c, models.MLPCritic) and g.out_dim == 7
  config = TrainConfig.for_data(images, batch_size=8)
  g, c = models.make_models(config, data_module.load_dataset(config))
  assert isinstance(g, models.ConvGenerator) and isinstance(c, models.ConvCritic) and g.shape == (12, 12, 3)
