"""Tests of snjax.app.plots: the image grid's layout, and a picture for every kind of data set."""

import os

import matplotlib.image
import numpy as np
import pytest

from snjax.app import data, plots


class _Axes:
  """Records what plots._image_grid shows."""

  def imshow(self, canvas, **kwargs):
    self.canvas, self.kwargs = canvas, kwargs

  def axis(self, _):
    pass


@pytest.mark.parametrize('shape', [(5, 8, 8, 1), (12, 6, 4, 3), (3, 5, 5, 4), (2, 4, 4, 2)])
def test_image_grid_places_each_image_in_its_cell(shape):
  images = np.random.default_rng(0).uniform(-1, 1, shape)
  ax = _Axes()
  plots._image_grid(ax, images)
  n, h, w, c = shape
  side = int(np.ceil(np.sqrt(n)))
  canvas = ax.canvas if ax.canvas.ndim == 3 else ax.canvas[..., None]
  assert canvas.shape == (side * (h + 1) + 1, side * (w + 1) + 1, 3 if c >= 3 else 1)
  shown = images[..., :3] if c >= 3 else images[..., :1]
  for i in range(n):
    r, col = divmod(i, side)
    cell = canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w]
    np.testing.assert_allclose(cell, (shown[i] + 1) / 2)
  assert ('cmap' in ax.kwargs) == (c < 3)  # grey images are drawn with a colour map, colour images as RGB


def _user(tmp_path, array):
  from snjax.app.user_data import load_user_data

  path = str(tmp_path / 'x.npy')
  np.save(path, array)
  return load_user_data(path)


def _cases(tmp_path):
  rng = np.random.default_rng(0)
  yield data.get_dataset('grid25'), rng.normal(size=(50, 2)), None
  yield data.get_dataset('digits'), rng.uniform(-1, 1, (20, 8, 8)), None
  yield data.get_dataset('stacked_digits'), rng.uniform(-1, 1, (20, 8, 8, 3)), None
  for d in (1, 2, 5):
    user = _user(tmp_path, rng.normal(size=(60, d)) * 3 + 7)
    yield user, user.to_data_units(rng.normal(size=(40, d))), None
  user = _user(tmp_path, rng.integers(0, 256, (30, 6, 10), dtype=np.uint8))
  yield user, rng.uniform(0, 255, (9, 6, 10)), {'bandwidth': 1.0, 'generated': {'mmd2': 0.5}, 'real_train': {'mmd2': 0}}


def test_a_picture_for_every_kind_of_data_set(tmp_path):
  for i, (dataset, samples, quality) in enumerate(_cases(tmp_path)):
    path = str(tmp_path / f'{i}.png')
    plots.plot_samples(path, dataset, samples, quality)
    assert matplotlib.image.imread(path).shape[:2] == (720, 720), dataset.name  # 6 x 6 inches at 120 dpi


def test_curves_without_sigmas(tmp_path):
  """A run without spectral normalization has no sigma in its history: the curves are still drawn."""
  path = str(tmp_path / 'curves.png')
  plots.plot_curves(path, [{'step': 5, 'critic_loss': 1.0, 'generator_loss': 0.5}])
  assert os.path.getsize(path) > 0
