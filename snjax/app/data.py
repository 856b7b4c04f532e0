"""The embedded data sets of ``snjax train``: two 2-D Gaussian mixtures and scikit-learn's 8x8 digits.

Nothing is downloaded: the mixtures are generated, the digits ship with
scikit-learn (``sklearn.datasets.load_digits``, 1,797 images).

* ``grid25``: 25 isotropic Gaussians with centres ``{-4, -2, 0, 2, 4}^2`` and
  standard deviation 0.05, equal weights (Srivastava et al. 2017, VEEGAN,
  https://arxiv.org/abs/1705.07761; Lin et al. 2018, PacGAN,
  https://arxiv.org/abs/1712.04086; the WGAN-GP toy sets use the same grid).
* ``ring8``: 8 Gaussians with centres ``2 (cos 2 pi k/8, sin 2 pi k/8)`` and
  standard deviation 0.02 (VEEGAN's ring; PacGAN's code uses radius 1 and
  std 0.01, the same set scaled by one half, so the metrics agree).
* ``digits``: the 8x8 grey digits scaled from ``[0, 16]`` to ``[-1, 1]``,
  shape ``(N, 8, 8, 1)``, with a fixed stratified train / held-out split used by
  the classifier of :mod:`snjax.app.metrics` (scikit-learn's copy of the test
  set of the UCI "Optical Recognition of Handwritten Digits", Alpaydin &
  Kaynak 1998,
  https://archive.ics.uci.edu/ml/datasets/Optical+Recognition+of+Handwritten+Digits).

:func:`get_dataset` turns a name into a data set, :func:`make_sampler` into
a jittable sampler of real examples.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DATASETS = ('grid25', 'ring8', 'digits')
"""The names accepted by :func:`get_dataset` and ``snjax train --dataset``."""


class GaussianMixture(NamedTuple):
  """An equal-weight mixture of isotropic 2-D Gaussians.

  Attributes:
    name: the data set's name.
    centres: float32 ``(K, 2)``, the mode centres.
    std: the standard deviation of every component.
  """

  name: str
  centres: np.ndarray
  std: float


class Digits(NamedTuple):
  """scikit-learn's 8x8 digits in ``[-1, 1]``.

  Attributes:
    name: ``'digits'``.
    images: float32 ``(1797, 8, 8, 1)``.
    labels: int64 ``(1797,)``.
    train_index: indices of the fixed training split (the classifier's and the GAN's data).
    test_index: indices of the held-out split (the reference score of the metrics).
  """

  name: str
  images: np.ndarray
  labels: np.ndarray
  train_index: np.ndarray
  test_index: np.ndarray


Dataset = GaussianMixture | Digits


def gaussian_grid(n_per_side: int = 5, spacing: float = 2.0, std: float = 0.05) -> GaussianMixture:
  """The ``n_per_side**2`` Gaussians on a square grid centred at 0 (default: the 25-mode grid on ``{-4..4}^2``).

  Args:
    n_per_side: modes per row and per column.
    spacing: the distance between neighbouring centres.
    std: the standard deviation of every mode.

  Returns:
    A :class:`GaussianMixture` named ``'grid<K>'``.
  """
  half = (n_per_side - 1) / 2
  axis = [spacing * (i - half) for i in range(n_per_side)]
  centres = np.array(list(itertools.product(axis, axis)), np.float32)
  return GaussianMixture(f'grid{n_per_side * n_per_side}', centres, float(std))


def gaussian_ring(n_modes: int = 8, radius: float = 2.0, std: float = 0.02) -> GaussianMixture:
  """``n_modes`` Gaussians evenly spaced on a circle of ``radius`` (default: VEEGAN's ring of 8).

  Args:
    n_modes: the number of modes; mode ``k`` is at angle ``2 pi k / n_modes``.
    radius: the circle's radius.
    std: the standard deviation of every mode.

  Returns:
    A :class:`GaussianMixture` named ``'ring<K>'``.
  """
  angle = 2 * np.pi * np.arange(n_modes) / n_modes
  centres = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
  return GaussianMixture(f'ring{n_modes}', centres, float(std))


@functools.lru_cache(maxsize=1)
def load_digits(test_fraction: float = 0.3, split_seed: int = 0) -> Digits:
  """scikit-learn's bundled digits, scaled to ``[-1, 1]``, with a fixed stratified split.

  Args:
    test_fraction: the share of each class held out.
    split_seed: the seed of the split (fixed, so every run and the metrics agree).

  Returns:
    A :class:`Digits`.
  """
  from sklearn.datasets import load_digits as _sk_load_digits

  bunch = _sk_load_digits()
  images = (bunch.images.astype(np.float32) / 8.0 - 1.0)[..., None]
  labels = bunch.target.astype(np.int64)
  rng = np.random.default_rng(split_seed)
  test = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    test.extend(rng.permutation(idx)[: int(round(test_fraction * len(idx)))].tolist())
  test_index = np.sort(np.array(test, np.int64))
  train_index = np.setdiff1d(np.arange(len(labels)), test_index)
  return Digits('digits', images, labels, train_index, test_index)


def get_dataset(name: str) -> Dataset:
  """The data set called ``name`` (one of :data:`DATASETS`).

  Args:
    name: the data set's name.

  Returns:
    A :class:`GaussianMixture` or :class:`Digits`.

  Raises:
    ValueError: an unknown name.
  """
  if name == 'grid25':
    return gaussian_grid()
  if name == 'ring8':
    return gaussian_ring()
  if name == 'digits':
    return load_digits()
  raise ValueError(f'unknown dataset {name!r}; expected one of {", ".join(DATASETS)}.')


def sample_shape(dataset: Dataset) -> tuple[int, ...]:
  """The shape of one example of ``dataset``: ``(2,)`` for a mixture, ``(8, 8, 1)`` for the digits."""
  return (2,) if isinstance(dataset, GaussianMixture) else tuple(dataset.images.shape[1:])


def make_sampler(dataset: Dataset):
  """A pure, jittable ``(key, n) -> float32 (n, *sample_shape)`` drawing real examples.

  Mixtures: a uniform component, then its centre plus ``std`` times a standard
  normal. Digits: training images drawn uniformly with replacement.

  Args:
    dataset: a :class:`GaussianMixture` or :class:`Digits`.

  Returns:
    The sampler, a pure function of its key (a run draws the batch of step ``t`` with ``fold_in(key, t)``).
  """
  if isinstance(dataset, GaussianMixture):
    centres = jnp.asarray(dataset.centres)
    std = dataset.std

    def sample(key, n):
      k_mode, k_noise = jax.random.split(key)
      modes = jax.random.randint(k_mode, (n,), 0, centres.shape[0])
      return centres[modes] + std * jax.random.normal(k_noise, (n, 2), jnp.float32)

    return sample
  train = jnp.asarray(dataset.images[dataset.train_index])

  def sample_images(key, n):
    return train[jax.random.randint(key, (n,), 0, train.shape[0])]

  return sample_images
