"""The data sets of ``snjax train``: two 2-D Gaussian mixtures, scikit-learn's 8x8 digits, stacked digits, the user's.

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
* ``stacked_digits``: Stacked MNIST (Metz et al. 2017, Unrolled GANs,
  https://arxiv.org/abs/1611.02163; Srivastava et al. 2017; Lin et al. 2018)
  on those 8x8 digits: three training digits drawn independently and stacked as
  the channels of one ``(8, 8, 3)`` image, so 1,000 modes (one per triple of
  classes), counted by :func:`snjax.app.metrics.stacked_digits_metrics`. The
  8x8 digits are not 28x28 MNIST: the numbers are not the literature's.
* the user's own data (``snjax train --data PATH``): :mod:`snjax.app.user_data`.

:func:`get_dataset` turns a name into a data set (:func:`load_dataset` a
configuration), :func:`make_sampler` into a jittable sampler of real
examples. Each data set is one object per source (equality is identity): a
second run on it reuses the compiled steps.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from snjax.app.user_data import DataError, UserData, load_user_data

if TYPE_CHECKING:
  from snjax.app.config import TrainConfig

DATASETS = ('grid25', 'ring8', 'digits', 'stacked_digits')
"""The names accepted by :func:`get_dataset` and ``snjax train --dataset``."""

USER = 'user'
"""The ``dataset`` of a run on the user's data (``snjax train --data PATH``)."""

STACKED_CHANNELS = 3
"""Digits per stacked image (so ``10 ** 3`` modes)."""


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
  """An equal-weight mixture of isotropic 2-D Gaussians.

  Attributes:
    name: the data set's name.
    centres: float32 ``(K, 2)``, the mode centres.
    std: the standard deviation of every component.
  """

  name: str
  centres: np.ndarray
  std: float


@dataclasses.dataclass(frozen=True, eq=False)
class Digits:
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


@dataclasses.dataclass(frozen=True, eq=False)
class StackedDigits:
  """Three independent 8x8 training digits stacked as the channels of one image (see the module docstring).

  Attributes:
    name: ``'stacked_digits'``.
    digits: the :class:`Digits` whose training split is stacked (its held-out split is the metrics' reference).
  """

  name: str
  digits: Digits


Dataset = GaussianMixture | Digits | StackedDigits | UserData


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


@functools.cache
def get_dataset(name: str) -> Dataset:
  """The embedded data set called ``name`` (one of :data:`DATASETS`), the same object at every call.

  Args:
    name: the data set's name.

  Returns:
    A :class:`GaussianMixture`, :class:`Digits` or :class:`StackedDigits`.

  Raises:
    ValueError: an unknown name.
  """
  if name == 'grid25':
    return gaussian_grid()
  if name == 'ring8':
    return gaussian_ring()
  if name == 'digits':
    return load_digits()
  if name == 'stacked_digits':
    return StackedDigits('stacked_digits', load_digits())
  raise ValueError(f'unknown dataset {name!r}; expected one of {", ".join(DATASETS)}.')


def load_dataset(config: TrainConfig) -> Dataset:
  """The data set of a run: the user's data at ``config.data`` (read and checked), else ``config.dataset``.

  Args:
    config: the run's configuration (``dataset``, ``data``, ``batch_size``).

  Returns:
    The data set; the user's is a :class:`snjax.app.user_data.UserData`.

  Raises:
    snjax.app.user_data.DataError: the user's data cannot be trained on (a ``ValueError`` naming the file).
    ValueError: an unknown data set.
  """
  if config.data:
    return load_user_data(config.data, config.batch_size)
  return get_dataset(config.dataset)


def sample_shape(dataset: Dataset) -> tuple[int, ...]:
  """The shape of one example of ``dataset`` as the models see it.

  ``(2,)`` for a mixture, ``(8, 8, 1)`` for the digits, ``(8, 8, 3)`` for stacked digits, ``(D,)`` or
  ``(H, W, C)`` for the user's data.
  """
  if isinstance(dataset, GaussianMixture):
    return (dataset.centres.shape[1],)
  if isinstance(dataset, Digits):
    return tuple(dataset.images.shape[1:])
  if isinstance(dataset, StackedDigits):
    return (*dataset.digits.images.shape[1:3], STACKED_CHANNELS)
  return dataset.shape


def to_data_units(dataset: Dataset, samples: np.ndarray) -> np.ndarray:
  """Generated examples as a run saves them (``samples.npy``): in the data's units and shape.

  Args:
    dataset: the data set of the run.
    samples: ``(N, *sample_shape(dataset))``, the generator's output.

  Returns:
    Mixtures: the samples. Digits: ``(N, 8, 8)`` in ``[-1, 1]`` (the channel dropped). Stacked digits:
    ``(N, 8, 8, 3)`` in ``[-1, 1]``. The user's data: :meth:`snjax.app.user_data.UserData.to_data_units`.
  """
  samples = np.asarray(samples)
  if isinstance(dataset, Digits):
    return samples[..., 0]
  if isinstance(dataset, UserData):
    return dataset.to_data_units(samples)
  return samples


def make_sampler(dataset: Dataset):
  """A pure, jittable ``(key, n) -> float32 (n, *sample_shape)`` drawing real examples.

  Mixtures: a uniform component, then its centre plus ``std`` times a standard
  normal. Digits and the user's data: training examples drawn uniformly with
  replacement. Stacked digits: ``3 n`` training digits drawn so, each triple
  stacked as the channels of one image.

  Args:
    dataset: a data set (:func:`get_dataset`, :func:`load_dataset`).

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
  if isinstance(dataset, StackedDigits):
    digits = jnp.asarray(dataset.digits.images[dataset.digits.train_index, ..., 0])

    def sample_stacked(key, n):
      index = jax.random.randint(key, (n, STACKED_CHANNELS), 0, digits.shape[0])
      return jnp.moveaxis(digits[index], 1, -1)

    return sample_stacked
  train = jnp.asarray(dataset.train if isinstance(dataset, UserData) else dataset.images[dataset.train_index])

  def sample_examples(key, n):
    return train[jax.random.randint(key, (n,), 0, train.shape[0])]

  return sample_examples


RUN_DATA_FILE = 'data.json'
"""The file of a run on the user's data that describes it: :meth:`snjax.app.user_data.UserData.description`."""


def record_run_data(dataset: Dataset, out_dir: str, *, resume: bool = False) -> None:
  """Saves the description of the user's data (its scaling, split and fingerprint) in the run folder.

  A run on an embedded data set writes nothing. A resumed run checks that the data is the one it started
  with (same fingerprint and scaling) before anything is written.

  Args:
    dataset: the run's data set.
    out_dir: the run folder (it exists).
    resume: the run continues from a checkpoint.

  Raises:
    snjax.app.user_data.DataError: resuming on data that differs from the run's ``data.json``.
  """
  if not isinstance(dataset, UserData):
    return
  from snjax.app.run_folder import read_json, write_json  # run_folder imports the config, which imports data

  path = os.path.join(out_dir, RUN_DATA_FILE)
  now = json.loads(json.dumps(dataset.description()))
  if resume and os.path.exists(path):
    saved = read_json(path)
    changed = sorted(k for k in now if k != 'source' and saved.get(k) != now[k])
    if changed:
      raise DataError(
        f'{dataset.source}: not the data the run in {out_dir!r} started with ({", ".join(changed)} differ from '
        f'its {RUN_DATA_FILE}); resume with the same data, or use --out for a new run.'
      )
    return
  write_json(path, now)
