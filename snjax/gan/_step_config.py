"""The static configuration of a GAN train step: the models, the optimizers and the options, checked once.

:func:`step_config` validates the options of :func:`snjax.gan.gan_trainer` and
resolves them (a loss name to its :class:`~snjax.gan.GANLoss`, the
``spectral_norm`` option to a :class:`snjax.SpectralNormalization`, the
default latent sampler); the resulting :class:`StepConfig` is frozen and is
the first argument of every step function, bound with ``functools.partial``
before ``jax.jit`` (so it is static: never traced).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from snjax._options import check_float, check_int
from snjax.gan import _losses
from snjax.transform import SpectralNormalization, spectral_normalization

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
LatentSampler = Callable[[jax.Array, int], jax.Array]


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Everything a GAN step needs besides its state and its data; static under ``jit``.

  Attributes:
    generator_apply: ``(generator_params, z) -> x``.
    critic_apply: ``(critic_params, x) -> scores``, shape ``(B,)`` or ``(B, 1)``.
    generator_tx: the generator's optimizer.
    critic_tx: the critic's optimizer.
    latent_shape: the shape of one latent vector.
    loss: the critic and generator losses.
    n_critic: critic updates per ``train_step`` (>= 1).
    gp_weight: weight of the gradient penalty (>= 0; 0 is off).
    gp_target: the gradient norm the penalty aims at.
    r1_weight: weight of the R1 penalty (>= 0; 0 is off).
    spectral_norm: the critic's spectral normalization, or ``None`` (the raw critic).
    ema_decay: the generator EMA's decay in ``[0, 1)``, or ``None`` (no EMA).
    latent_sampler: ``(key, batch_size) -> z``.
    mesh: the mesh of data parallelism, or ``None``.
    data_axis: the mesh axis of the batch.
  """

  generator_apply: ApplyFn
  critic_apply: ApplyFn
  generator_tx: optax.GradientTransformation
  critic_tx: optax.GradientTransformation
  latent_shape: tuple[int, ...]
  loss: _losses.GANLoss
  n_critic: int
  gp_weight: float
  gp_target: float
  r1_weight: float
  spectral_norm: SpectralNormalization | None
  ema_decay: float | None
  latent_sampler: LatentSampler
  mesh: jax.sharding.Mesh | None
  data_axis: str


def standard_normal_latents(latent_shape: tuple[int, ...], key: jax.Array, batch_size: int) -> jax.Array:
  """The default latent sampler: standard normal float32 latents of shape ``(batch_size, *latent_shape)``.

  Args:
    latent_shape: the shape of one latent vector.
    key: a PRNG key.
    batch_size: how many latents.

  Returns:
    ``jax.random.normal(key, (batch_size, *latent_shape), jnp.float32)``.
  """
  return jax.random.normal(key, (batch_size, *latent_shape), jnp.float32)


def step_config(
  generator_apply: ApplyFn,
  critic_apply: ApplyFn,
  generator_tx: optax.GradientTransformation,
  critic_tx: optax.GradientTransformation,
  *,
  latent_shape: int | tuple[int, ...],
  loss: str | _losses.GANLoss,
  n_critic: int,
  gp_weight: float,
  gp_target: float,
  r1_weight: float,
  spectral_norm: bool | Mapping[str, Any] | None,
  ema_decay: float | None,
  latent_sampler: LatentSampler | None,
  mesh: jax.sharding.Mesh | None,
  data_axis: str,
) -> StepConfig:
  """Checks the options of :func:`snjax.gan.gan_trainer` and builds its :class:`StepConfig`.

  The arguments are :func:`snjax.gan.gan_trainer`'s (without ``donate``, a
  ``jax.jit`` option).

  Returns:
    The :class:`StepConfig`.

  Raises:
    ValueError: an option out of its range or of the wrong type; the message
      names the option and what was expected.
  """
  n_critic = check_int('n_critic', n_critic, 1)
  gp_weight = check_float('gp_weight', gp_weight, minimum=0.0, minimum_inclusive=True)
  gp_target = check_float('gp_target', gp_target, minimum=0.0, minimum_inclusive=True)
  r1_weight = check_float('r1_weight', r1_weight, minimum=0.0, minimum_inclusive=True)
  if ema_decay is not None:
    ema_decay = check_float('ema_decay (None for no EMA)', ema_decay, minimum=0.0, minimum_inclusive=True, maximum=1.0)
  shape = _latent_shape(latent_shape)
  if mesh is not None and data_axis not in mesh.axis_names:
    raise ValueError(f'data_axis {data_axis!r} is not an axis of the mesh, whose axes are {mesh.axis_names}.')
  return StepConfig(
    generator_apply=generator_apply,
    critic_apply=critic_apply,
    generator_tx=generator_tx,
    critic_tx=critic_tx,
    latent_shape=shape,
    loss=_losses.get_loss(loss),
    n_critic=n_critic,
    gp_weight=gp_weight,
    gp_target=gp_target,
    r1_weight=r1_weight,
    spectral_norm=_spectral_normalization(spectral_norm),
    ema_decay=ema_decay,
    latent_sampler=functools.partial(standard_normal_latents, shape) if latent_sampler is None else latent_sampler,
    mesh=mesh,
    data_axis=data_axis,
  )


def _latent_shape(latent_shape: Any) -> tuple[int, ...]:
  try:
    shape = (latent_shape,) if isinstance(latent_shape, int) else tuple(latent_shape)
  except TypeError:  # not iterable
    shape = ()
  if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
    raise ValueError(f'latent_shape must be a positive int or a tuple of them, got {latent_shape!r}.')
  return shape


def _spectral_normalization(option: Any) -> SpectralNormalization | None:
  if option is True:
    return spectral_normalization()
  if option is False or option is None:
    return None
  if isinstance(option, Mapping):
    return spectral_normalization(**dict(option))
  raise ValueError(f'spectral_norm must be True, False or a mapping of options, got {option!r}.')
