"""The configuration of ``snjax train``: :class:`TrainConfig` and each data set's default recipe.

::

  from snjax.app.config import TrainConfig
  config = TrainConfig.for_dataset('digits', steps=2000, seed=1)

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

CHOICES: dict[str, tuple[str, ...]] = {
  'dataset': tuple(data.DATASETS),
  'loss': tuple(gan.LOSSES),
  'activation': tuple(models.ACTIVATIONS),
}
"""The names each string option accepts: the data sets, the GAN losses and the MLP activations."""

_POSITIVE_INTS = ('steps', 'batch_size', 'n_critic', 'latent_dim', 'width', 'depth', 'log_every', 'checkpoint_every')
_NON_NEGATIVE_INTS = ('seed', 'fourier_features')
_POSITIVE_FLOATS = ('lr_critic', 'lr_generator', 'target_norm', 'fourier_scale')
_FRACTIONS = ('beta1', 'beta2', 'ema_decay')  # in [0, 1)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that determines a run of ``snjax train`` (with the devices it runs on).

  Attributes:
    dataset: the embedded data set (:data:`snjax.app.data.DATASETS`).
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

  Raises:
    ValueError: an invalid option (checked when the config is made; see :meth:`validate`).
  """

  dataset: str = 'grid25'
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

  def __post_init__(self):
    for name, value in _checked(self).items():
      object.__setattr__(self, name, value)

  @classmethod
  def for_dataset(cls, dataset: str = 'grid25', **overrides: Any) -> TrainConfig:
    """The default recipe of ``dataset`` (:data:`DEFAULTS`), with ``overrides``.

    Args:
      dataset: a name of :data:`snjax.app.data.DATASETS`.
      **overrides: fields of :class:`TrainConfig` to set; ``None`` values are ignored (they keep the recipe's).

    Returns:
      The checked configuration.

    Raises:
      ValueError: an unknown data set or option, or an invalid value.
    """
    if dataset not in DEFAULTS:
      raise ValueError(f'unknown dataset {dataset!r}; expected one of {", ".join(data.DATASETS)}.')
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise ValueError(f'unknown training option(s) {unknown}; the options are {sorted(fields)}.')
    values = dict(DEFAULTS[dataset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(dataset=dataset, **values)

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
  for name, names in CHOICES.items():
    value = getattr(config, name)
    if value not in names:
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


DEFAULTS: dict[str, dict[str, Any]] = {
  'grid25': {},
  'ring8': {},
  'digits': dict(
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
  ),
}
"""Each data set's default recipe (the fields of :class:`TrainConfig` that differ from its defaults)."""
