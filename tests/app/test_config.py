"""Tests of snjax.app.config: the data sets' recipes, overrides, and every option's check (messages matched)."""

import dataclasses

import numpy as np
import pytest

from snjax import gan
from snjax.app import data, models
from snjax.app.config import CHOICES, DEFAULTS, NORMALIZATIONS, USER_DEFAULTS, TrainConfig, user_recipe
from snjax.app.user_data import DataError, load_user_data


def test_recipes_are_the_defaults_with_the_data_set_s_changes():
  fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
  assert set(DEFAULTS) == set(data.DATASETS)
  for name, recipe in DEFAULTS.items():
    assert set(recipe) <= set(fields), name
    config = TrainConfig.for_dataset(name)
    assert config.to_json() == {**fields, **recipe, 'dataset': name}


def test_overrides_replace_the_recipe_and_none_keeps_it():
  config = TrainConfig.for_dataset('digits', steps=7, width=None, seed=3)
  assert (config.steps, config.seed, config.width, config.loss) == (7, 3, DEFAULTS['digits']['width'], 'hinge')


def test_choices_are_the_registries():
  assert CHOICES == {
    'dataset': tuple(data.DATASETS),
    'loss': tuple(gan.LOSSES),
    'activation': tuple(models.ACTIVATIONS),
    'normalization': NORMALIZATIONS,
  }


def test_unknown_dataset_and_option():
  with pytest.raises(ValueError, match="unknown dataset 'mnist'; expected one of grid25, ring8, digits, stacked"):
    TrainConfig.for_dataset('mnist')
  with pytest.raises(ValueError, match=r"unknown training option\(s\) \['widht'\]"):
    TrainConfig.for_dataset('grid25', widht=3)


@pytest.mark.parametrize(
  'options, message',
  [
    (dict(steps=0), 'steps must be an int >= 1, got 0'),
    (dict(batch_size=2.0), 'batch_size must be an int >= 1, got 2.0'),
    (dict(width=True), 'width must be an int >= 1, got True'),
    (dict(seed=-1), 'seed must be an int >= 0, got -1'),
    (dict(fourier_features=-2), 'fourier_features must be an int >= 0, got -2'),
    (dict(beta1=1.5), r'beta1 must be a finite float in \[0, 1\), got 1.5'),
    (dict(ema_decay=1.0), r'ema_decay must be a finite float in \[0, 1\), got 1.0'),
    (dict(lr_critic=-1.0), 'lr_critic must be a finite float > 0'),
    (dict(target_norm=float('inf')), 'target_norm must be a finite float > 0, got inf'),
    (dict(lr_decay=1.5), r'lr_decay must be a finite float in \[0, 1\], got 1.5'),
    (dict(loss='minimax'), "unknown loss 'minimax'; expected one of hinge, wasserstein, non_saturating"),
    (dict(activation='swish'), "unknown activation 'swish'"),
    (dict(log_every=7, checkpoint_every=10), r'checkpoint_every \(10\) must be a multiple of log_every \(7\)'),
    (dict(normalization='batch'), "unknown normalization 'batch'; expected one of spectral, none"),
  ],
)
def test_invalid_options_are_named(options, message):
  with pytest.raises(ValueError, match=message):
    TrainConfig.for_dataset('grid25', **options)
  with pytest.raises(ValueError, match=message):  # checked when made, however it is made
    TrainConfig(**options)


def test_bounds_are_inclusive_where_documented():
  config = TrainConfig.for_dataset('grid25', lr_decay=1.0, beta1=0.0, ema_decay=0.0, seed=0, fourier_features=0)
  assert (config.lr_decay, config.beta1, config.ema_decay) == (1.0, 0.0, 0.0)
  config.validate()


def test_numbers_are_stored_as_their_annotated_types():
  """A NumPy int becomes an int and an int learning rate a float, so config.json and the resume check agree."""
  config = TrainConfig.for_dataset('grid25', steps=np.int64(40), lr_critic=1, log_every=np.int32(20))
  assert type(config.steps) is int and type(config.log_every) is int and type(config.lr_critic) is float
  assert config.to_json()['steps'] == 40 and config.to_json()['lr_critic'] == 1.0
  assert dataclasses.replace(config, seed=0) == config


def _points(tmp_path, n=200, d=3):
  path = str(tmp_path / 'points.npy')
  np.save(path, np.random.default_rng(0).normal(size=(n, d)))
  return path


def test_user_recipes_follow_the_shape(tmp_path):
  points = _points(tmp_path, d=5)
  images = str(tmp_path / 'images.npy')
  np.save(images, np.zeros((200, 16, 16, 3), np.uint8))
  config = TrainConfig.for_data(points, batch_size=32, seed=2)
  expected = {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **USER_DEFAULTS['points']}
  assert config.to_json() == {
    **expected,
    'latent_dim': 5,
    'batch_size': 32,
    'seed': 2,
    'dataset': 'user',
    'data': points,
  }
  assert user_recipe(load_user_data(images)) == USER_DEFAULTS['images'] == DEFAULTS['digits']
  assert TrainConfig.for_data(images).width == DEFAULTS['digits']['width']
  # The command line passes --dataset's default with --data: the same configuration.
  assert TrainConfig.for_dataset('grid25', data=points, batch_size=32, seed=2) == config
  assert TrainConfig.for_dataset('user', data=points, batch_size=32, seed=2) == config


def test_user_recipes_set_only_fields_a_data_set_s_recipe_sets():
  """The command line leaves a field to the recipe only when some recipe of DEFAULTS sets it."""
  in_recipes = set().union(*DEFAULTS.values())
  assert set().union(*USER_DEFAULTS.values(), {'latent_dim'}) <= in_recipes


def test_data_and_an_embedded_data_set_exclude_each_other(tmp_path):
  points = _points(tmp_path)
  with pytest.raises(ValueError, match="dataset 'digits' and data '.*points.npy' exclude each other"):
    TrainConfig.for_dataset('digits', data=points)
  with pytest.raises(ValueError, match="dataset must be 'user' with data '.*points.npy', got 'ring8'"):
    TrainConfig(dataset='ring8', data=points)
  with pytest.raises(ValueError, match="dataset 'user' needs data: the path of the data to train on"):
    TrainConfig(dataset='user')


def test_bad_data_or_too_few_examples_make_no_config(tmp_path):
  with pytest.raises(DataError, match='missing.npy: no such file or folder'):
    TrainConfig.for_data(str(tmp_path / 'missing.npy'))
  points = _points(tmp_path, n=100)
  with pytest.raises(DataError, match=r'points.npy: 100 examples, 90 for training .* \(batch_size 256\)'):
    TrainConfig.for_data(points)  # grid25's recipe: batch 256
  assert TrainConfig.for_data(points, batch_size=90).batch_size == 90
