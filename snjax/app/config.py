"""The configuration of ``snjax train``: :class:`TrainConfig` and each data set's default recipe.

::

  from snjax.app.config import TrainConfig
  config = TrainConfig.for_dataset('digits', steps=2000, seed=1)
  mine = TrainConfig.for_data('points.npy', seed=1)   # the recipe follows from the data's shape

A :class:`TrainConfig` is checked when it is made, so a run never starts
with an invalid option. The ``snjax train`` flags are generated from its
fields (:mod:`snjax.app.cli`): a new field is a new flag, its help text the
field's entry under Attributes below, its choices (if any) in :data:`CHOICES`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from snjax import gan
from snjax._options import check_float, check_int
from snjax.app import data, models
from snjax.app.user_data import load_user_data

NORMALIZATIONS = ('spectral', 'none')
"""The critic's normalizations: spectral normalization (Miyato et al. 2018) or none."""

CHOICES: dict[str, tuple[str, ...]] = {
  'dataset': tuple(data.DATASETS),
  'loss': tuple(gan.LOSSES),
  'activation': tuple(models.ACTIVATIONS),
  'normalization': NORMALIZATIONS,
}
"""The names each string option accepts: the data sets, the GAN losses, the MLP activations, the normalizations."""

_DEFAULT_DATASET = 'grid25'
_POSITIVE_INTS = ('steps', 'batch_size', 'n_critic', 'latent_dim', 'width', 'depth', 'log_every', 'checkpoint_every')
_NON_NEGATIVE_INTS = ('seed', 'fourier_features')
_POSITIVE_FLOATS = ('lr_critic', 'lr_generator', 'target_norm', 'fourier_scale')
_FRACTIONS = ('beta1', 'beta2', 'ema_decay')  # in [0, 1)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that determines a run of ``snjax train`` (with the devices it runs on).

  Attributes:
    dataset: the embedded data set (:data:`snjax.app.data.DATASETS`); ``user`` when data is given.
    steps: generator updates.
    seed: the seed of the initialization, the data and the latents.
    batch_size: examples per batch (real and fake), split over the devices.
    n_critic: critic updates per generator update.
    loss: the GAN loss (:data:`snjax.gan.LOSSES`).
    lr_critic: Adam learning rate of the critic (its peak; see lr_decay).
    lr_generator: Adam learning rate of the generator (its peak; see lr_decay).
    lr_decay: the fraction of the run, at its end, over which both learning rates fall linearly to 0 (0: constant
      learning rates). The critic's schedule counts its n_critic updates per step, so both decay over the same
      steps. The schedule depends on steps: a run with lr_decay > 0 cannot be extended on resume.
    beta1: Adam beta1 (both optimizers).
    beta2: Adam beta2 (both optimizers).
    latent_dim: dimension of the standard normal latent.
    width: hidden units (MLPs) or base channels (conv nets).
    depth: hidden layers of the MLPs (unused for digits).
    activation: the MLP generator's activation (the MLP critic uses leaky ReLU 0.2).
    target_norm: the spectral norm of each normalized critic weight.
    fourier_features: frequencies of the fixed Fourier embedding of the MLP critic's input (0: none; see
      :class:`snjax.app.models.MLPCritic`).
    fourier_scale: standard deviation of those frequencies.
    ema_decay: decay of the generator EMA whose samples are evaluated (0: none).
    log_every: steps per jitted chunk, per progress update and per history entry.
    checkpoint_every: steps between checkpoints (a multiple of log_every).
    data: the user's data to train on instead of an embedded data set: a .npy/.npz array of points (N, D) or
      images (N, H, W) / (N, H, W, C), or a folder of PNG/JPEG images of one size (see
      :mod:`snjax.app.user_data`); the models (MLPs for points, conv nets for images) and the recipe follow
      from its shape (empty: an embedded data set).
    normalization: the critic's normalization: spectral (every weight's spectral norm set to target_norm) or none
      (the raw critic: the same recipe without spectral normalization, for comparison).

  Raises:
    ValueError: an invalid option (checked when the config is made; see :meth:`validate`).
  """

  dataset: str = _DEFAULT_DATASET
  steps: int = 16000
  seed: int = 0
  batch_size: int = 256
  n_critic: int = 2
  loss: str = 'non_saturating'
  lr_critic: float = 2e-3
  lr_generator: float = 2e-3
  lr_decay: float = 0.5
  beta1: float = 0.5
  beta2: float = 0.9
  latent_dim: int = 2
  width: int = 128
  depth: int = 3
  activation: str = 'relu'
  target_norm: float = 2.0
  fourier_features: int = 0
  fourier_scale: float = 1.0
  ema_decay: float = 0.999
  log_every: int = 100
  checkpoint_every: int = 2000
  data: str = ''
  normalization: str = 'spectral'

  def __post_init__(self):
    for name, value in _checked(self).items():
      object.__setattr__(self, name, value)

  @classmethod
  def for_dataset(cls, dataset: str = 'grid25', **overrides: Any) -> TrainConfig:
    """The default recipe of ``dataset`` (:data:`DEFAULTS`), with ``overrides``.

    With ``data`` among the overrides this is :meth:`for_data` (``dataset`` must then be the default or
    ``'user'``), so that the command line's ``--data PATH`` needs no ``--dataset``.

    Args:
      dataset: a name of :data:`snjax.app.data.DATASETS`.
      **overrides: fields of :class:`TrainConfig` to set; ``None`` values are ignored (they keep the recipe's).

    Returns:
      The checked configuration.

    Raises:
      ValueError: an unknown data set or option, or an invalid value.
      snjax.app.user_data.DataError: with ``data``, see :meth:`for_data`.
    """
    path = overrides.pop('data', None)
    if path:
      if dataset not in (_DEFAULT_DATASET, data.USER):
        raise ValueError(f'dataset {dataset!r} and data {path!r} exclude each other: data trains on your own data.')
      return cls.for_data(path, **overrides)
    if dataset not in DEFAULTS:
      raise ValueError(f'unknown dataset {dataset!r}; expected one of {", ".join(data.DATASETS)}.')
    return cls._from_recipe(DEFAULTS[dataset], dataset=dataset, **overrides)

  @classmethod
  def for_data(cls, path: str, **overrides: Any) -> TrainConfig:
    """The recipe of the user's data at ``path`` (:func:`user_recipe`), with ``overrides``; ``dataset`` is ``'user'``.

    The data is read and checked here (:func:`snjax.app.user_data.load_user_data`), so that no configuration
    is made of data that cannot be trained on.

    Args:
      path: a ``.npy`` / ``.npz`` file or a folder of PNG / JPEG images.
      **overrides: fields of :class:`TrainConfig` to set; ``None`` values are ignored (they keep the recipe's).

    Returns:
      The checked configuration.

    Raises:
      snjax.app.user_data.DataError: the data cannot be trained on (a ``ValueError`` naming the file).
      ValueError: an unknown option, or an invalid value.
    """
    overrides.pop('dataset', None)
    config = cls._from_recipe(user_recipe(load_user_data(path)), dataset=data.USER, data=path, **overrides)
    load_user_data(path, config.batch_size)  # enough training examples for a batch
    return config

  @classmethod
  def _from_recipe(cls, recipe: dict[str, Any], **overrides: Any) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise ValueError(f'unknown training option(s) {unknown}; the options are {sorted(fields)}.')
    values = dict(recipe)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)

  def validate(self) -> None:
    """Checks every option (as making the config already did).

    Raises:
      ValueError: naming the first invalid option and what it must be.
    """
    _checked(self)

  def to_json(self) -> dict[str, Any]:
    """The config as a JSON-able dict (``config.json`` of a run)."""
    return dataclasses.asdict(self)


def _checked(config: TrainConfig) -> dict[str, Any]:
  """The numeric options as their annotated types (an int for a NumPy int, a float for an int), checked in order.

  Raises:
    ValueError: naming the first invalid option.
  """
  if not isinstance(config.data, str):
    raise ValueError(f'data must be a path (str), got {config.data!r}.')
  if config.data and config.dataset != data.USER:
    raise ValueError(f"dataset must be 'user' with data {config.data!r}, got {config.dataset!r}.")
  if config.dataset == data.USER and not config.data:
    raise ValueError("dataset 'user' needs data: the path of the data to train on.")
  for name, names in CHOICES.items():
    value = getattr(config, name)
    if value not in names and not (name == 'dataset' and value == data.USER):
      raise ValueError(f'unknown {name} {value!r}; expected one of {", ".join(names)}.')
  values: dict[str, Any] = {}
  for name in _POSITIVE_INTS:
    values[name] = check_int(name, getattr(config, name), 1)
  for name in _NON_NEGATIVE_INTS:
    values[name] = check_int(name, getattr(config, name), 0)
  for name in _POSITIVE_FLOATS:
    values[name] = check_float(name, getattr(config, name), minimum=0.0)
  values['lr_decay'] = check_float(
    'lr_decay', config.lr_decay, minimum=0.0, minimum_inclusive=True, maximum=1.0, maximum_inclusive=True
  )
  for name in _FRACTIONS:
    values[name] = check_float(name, getattr(config, name), minimum=0.0, minimum_inclusive=True, maximum=1.0)
  if values['checkpoint_every'] % values['log_every']:
    raise ValueError(
      f'checkpoint_every ({config.checkpoint_every}) must be a multiple of log_every ({config.log_every}), '
      'so that checkpoints fall on chunk boundaries and a resumed run repeats the same chunks.'
    )
  return values


_DIGITS_RECIPE = dict(
  steps=6000,
  batch_size=64,
  n_critic=1,
  loss='hinge',
  lr_critic=1e-3,
  lr_generator=1e-3,
  lr_decay=0.5,
  beta1=0.5,
  beta2=0.999,
  latent_dim=32,
  width=16,
  target_norm=1.0,
  log_every=100,
  checkpoint_every=500,
)

DEFAULTS: dict[str, dict[str, Any]] = {
  'grid25': {},
  'ring8': {},
  'digits': _DIGITS_RECIPE,
  # The digits' recipe with conv nets twice as wide and 2.5 times the steps: 1,000/1,000 modes and a reverse KL
  # below 0.06 in the recipe search (docs/guides/your_data.md); a checkpoint every 1,000 steps.
  'stacked_digits': dict(_DIGITS_RECIPE, steps=15000, width=32, checkpoint_every=1000),
}
"""Each data set's default recipe (the fields of :class:`TrainConfig` that differ from its defaults)."""

USER_DEFAULTS: dict[str, dict[str, Any]] = {
  'points': dict(DEFAULTS['grid25']),
  'images': dict(DEFAULTS['digits']),
}
"""The default recipe of the user's points (grid25's) and images (the digits'), before :func:`user_recipe`'s
changes for the data's shape. Each field they set is one a data set's recipe sets too, so that the command line
leaves it to the recipe."""


def user_recipe(user_data) -> dict[str, Any]:
  """The default recipe of the user's data: :data:`USER_DEFAULTS` of its kind, for its shape.

  Points ``(N, D)`` take grid25's recipe with a latent of ``max(2, D)`` dimensions (a ``D``-dimensional
  distribution needs at least ``D``); images take the digits' recipe (the conv nets grow with the image size,
  :class:`snjax.app.models.ConvGenerator`).

  Args:
    user_data: a :class:`snjax.app.user_data.UserData`.

  Returns:
    The fields of :class:`TrainConfig` that differ from its defaults.
  """
  recipe = dict(USER_DEFAULTS[user_data.kind])
  if user_data.kind == 'points':
    recipe['latent_dim'] = max(2, user_data.shape[0])
  return recipe
