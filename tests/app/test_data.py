"""Tests of snjax.data: the mixtures' geometry and sampling law, the digits and their split."""

import itertools
import json
import math
import os

import jax
import numpy as np
import pytest

from snjax.app import data


def test_grid_centres_are_the_25_point_grid():
  g = data.get_dataset('grid25')
  expected = {(float(i), float(j)) for i, j in itertools.product(range(-4, 5, 2), repeat=2)}
  assert {tuple(map(float, c)) for c in g.centres} == expected
  assert g.std == 0.05 and g.centres.dtype == np.float32


def test_ring_centres_lie_on_a_circle_of_radius_2_at_equal_angles():
  r = data.get_dataset('ring8')
  assert r.std == 0.02 and len(r.centres) == 8
  np.testing.assert_allclose(np.linalg.norm(r.centres, axis=1), 2.0, rtol=1e-6)
  angles = np.sort(np.mod(np.arctan2(r.centres[:, 1], r.centres[:, 0]), 2 * np.pi))
  np.testing.assert_allclose(np.diff(angles), 2 * np.pi / 8, rtol=1e-5)


@pytest.mark.parametrize('name', ['grid25', 'ring8'])
def test_mixture_sampler_law(name):
  mix = data.get_dataset(name)
  sample = data.make_sampler(mix)
  x = np.asarray(jax.jit(sample, static_argnums=1)(jax.random.key(0), 20000), np.float64)
  assert x.shape == (20000, 2) and x.dtype == np.float64
  d = np.linalg.norm(x[:, None] - mix.centres[None], axis=-1)
  nearest = d.argmin(1)
  offset = x - mix.centres[nearest]
  # Each coordinate of the offset is N(0, std^2): its standard deviation within 3 % (n = 20000).
  assert np.std(offset, axis=0) == pytest.approx([mix.std, mix.std], rel=0.03)
  # Equal weights: each mode's share within 5 standard errors of 1/K.
  k = len(mix.centres)
  share = np.bincount(nearest, minlength=k) / len(x)
  assert np.all(np.abs(share - 1 / k) < 5 * math.sqrt((1 / k) * (1 - 1 / k) / len(x)))


def test_sampler_is_a_pure_function_of_the_key():
  sample = data.make_sampler(data.get_dataset('grid25'))
  a, b = sample(jax.random.key(5), 64), sample(jax.random.key(5), 64)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(sample(jax.random.key(6), 64)))


def test_digits_scaled_and_split():
  d = data.get_dataset('digits')
  assert d.images.shape == (1797, 8, 8, 1) and d.images.dtype == np.float32
  assert d.images.min() == -1.0 and d.images.max() == 1.0
  assert len(np.intersect1d(d.train_index, d.test_index)) == 0
  assert len(d.train_index) + len(d.test_index) == 1797
  # Stratified: every class is ~30 % held out.
  for c in range(10):
    n_c = np.sum(d.labels == c)
    assert abs(np.sum(d.labels[d.test_index] == c) - 0.3 * n_c) <= 1
  # Fixed: a second load (cache cleared) gives the same split.
  data.load_digits.cache_clear()
  np.testing.assert_array_equal(data.load_digits().test_index, d.test_index)


def test_digits_sampler_draws_training_images():
  d = data.get_dataset('digits')
  x = np.asarray(data.make_sampler(d)(jax.random.key(0), 32))
  assert x.shape == (32, 8, 8, 1)
  train = d.images[d.train_index].reshape(len(d.train_index), -1)
  for img in x.reshape(32, -1):
    assert np.any(np.all(train == img, axis=1))


def test_sample_shape():
  assert data.sample_shape(data.get_dataset('ring8')) == (2,)
  assert data.sample_shape(data.get_dataset('digits')) == (8, 8, 1)
  assert data.sample_shape(data.get_dataset('stacked_digits')) == (8, 8, 3)


def test_unknown_dataset():
  with pytest.raises(ValueError, match="unknown dataset 'mnist'; expected one of grid25, ring8, digits, stacked_dig"):
    data.get_dataset('mnist')


def test_each_data_set_is_one_object():
  """get_dataset returns the same object at every call (a run's compiled steps are cached by it)."""
  for name in data.DATASETS:
    assert data.get_dataset(name) is data.get_dataset(name)
  assert data.get_dataset('grid25') != data.gaussian_grid()  # equality is identity, not content


def test_load_dataset_reads_the_user_s_data_or_the_named_set(tmp_path):
  from snjax.app.config import TrainConfig

  assert data.load_dataset(TrainConfig.for_dataset('ring8')) is data.get_dataset('ring8')
  path = str(tmp_path / 'p.npy')
  np.save(path, np.random.default_rng(0).normal(size=(100, 5)))
  config = TrainConfig.for_data(path, batch_size=16)
  user = data.load_dataset(config)
  assert isinstance(user, data.UserData) and data.sample_shape(user) == (5,) and user.source == path
  x = np.asarray(data.make_sampler(user)(jax.random.key(0), 64))
  assert x.shape == (64, 5)
  assert all(np.any(np.all(user.train == row, axis=1)) for row in x)  # training examples only


def test_to_data_units():
  x = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
  np.testing.assert_array_equal(data.to_data_units(data.get_dataset('digits'), x), x[..., 0])
  x3 = np.repeat(x, 3, axis=-1)
  np.testing.assert_array_equal(data.to_data_units(data.get_dataset('stacked_digits'), x3), x3)
  pts = np.ones((3, 2), np.float32)
  np.testing.assert_array_equal(data.to_data_units(data.get_dataset('grid25'), pts), pts)


def test_run_data_is_saved_and_checked_on_resume(tmp_path):
  from snjax.app.user_data import DataError, load_user_data

  path = str(tmp_path / 'p.npy')
  np.save(path, np.arange(60.0).reshape(30, 2))
  user = load_user_data(path)
  out = tmp_path / 'run'
  out.mkdir()
  data.record_run_data(user, str(out))
  with open(out / 'data.json') as f:
    saved = json.load(f)
  assert saved['sha256'] == user.fingerprint and saved['offset'] == user.offset.tolist()
  assert (saved['kind'], saved['n_train'], saved['n_held_out']) == ('points', 27, 3)
  data.record_run_data(user, str(out), resume=True)  # the same data: fine, nothing rewritten
  np.save(path, np.arange(60.0).reshape(30, 2) + 1)
  with pytest.raises(DataError, match=r'p.npy: not the data the run in .* started with \(offset, sha256 differ'):
    data.record_run_data(load_user_data(path), str(out), resume=True)
  data.record_run_data(data.get_dataset('digits'), str(tmp_path / 'none'))  # embedded: nothing written
  assert not os.path.exists(tmp_path / 'none')
