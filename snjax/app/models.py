"""The generators and critics of ``snjax train`` (Flax linen).

* :class:`MLPGenerator` / :class:`MLPCritic`: fully connected nets for the 2-D
  mixtures (as in VEEGAN, PacGAN and WGAN-GP's toy experiments).
* :class:`ConvGenerator` / :class:`ConvCritic`: a small DCGAN-style pair for
  8x8 images (Radford et al. 2016, https://arxiv.org/abs/1511.06434), the
  critic in the SN-GAN style (Miyato et al. 2018, https://arxiv.org/abs/1802.05957):
  3x3 / 4x4 convolutions with leaky ReLU 0.1, no normalization layers, so that
  spectral normalization of every kernel bounds its Lipschitz constant.

The critics score each example independently and return shape ``(B,)``;
:func:`make_models` picks the pair for a data set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from snjax.app import data

if TYPE_CHECKING:
  from snjax.app.config import TrainConfig

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  'relu': nn.relu,
  'leaky_relu': lambda x: nn.leaky_relu(x, 0.2),
  'elu': nn.elu,
  'silu': nn.silu,
  'tanh': jnp.tanh,
}
"""Activation names accepted by the MLPs."""


def _activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f'unknown activation {name!r}; expected one of {", ".join(ACTIVATIONS)}.')
  return ACTIVATIONS[name]


class MLPGenerator(nn.Module):
  """``z -> x``: ``depth`` dense layers of ``width`` units and an activation, then a linear output.

  Attributes:
    width: hidden units per layer.
    depth: hidden layers.
    out_dim: the dimension of an example.
    activation: a name from :data:`ACTIVATIONS`.
  """

  width: int = 256
  depth: int = 3
  out_dim: int = 2
  activation: str = 'relu'

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = _activation(self.activation)
    x = z
    for _ in range(self.depth):
      x = act(nn.Dense(self.width)(x))
    return nn.Dense(self.out_dim)(x)


class MLPCritic(nn.Module):
  """``x -> score (B,)``: an optional fixed Fourier embedding, ``depth`` dense layers and an activation, a dense score.

  With ``fourier_features = m > 0`` the input first goes through the fixed
  random Fourier embedding ``x -> [sin(2 pi x B), cos(2 pi x B)]``, ``B`` of
  shape ``(D, m)`` drawn once from ``N(0, fourier_scale^2)`` with a fixed key
  (a constant, not a parameter: it is neither trained nor normalized). An MLP
  on raw low-dimensional coordinates learns fine detail slowly (its spectral
  bias; Tancik et al. 2020, https://arxiv.org/abs/2006.10739), and a
  spectrally normalized one, whose layers are 1-Lipschitz, cannot tell a
  sample at a mode centre from one three standard deviations (0.15) away in
  thousands of steps; with the embedding it can. The critic stays Lipschitz:
  its constant is at most ``2 pi ||B||_2`` times the product of the layers' norms.

  Attributes:
    width: hidden units per layer.
    depth: hidden layers.
    activation: a name from :data:`ACTIVATIONS`.
    fourier_features: ``m``, the embedding's frequencies (0: no embedding).
    fourier_scale: the standard deviation of the frequencies (cycles per unit of x).
  """

  width: int = 256
  depth: int = 3
  activation: str = 'leaky_relu'
  fourier_features: int = 0
  fourier_scale: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = _activation(self.activation)
    h = x.reshape(x.shape[0], -1)
    if self.fourier_features:
      b = self.fourier_scale * jax.random.normal(jax.random.key(0), (h.shape[1], self.fourier_features), h.dtype)
      h = 2 * jnp.pi * h @ b
      h = jnp.concatenate([jnp.sin(h), jnp.cos(h)], axis=-1)
    for _ in range(self.depth):
      h = act(nn.Dense(self.width)(h))
    return nn.Dense(1)(h)[:, 0]


class ConvGenerator(nn.Module):
  """``z -> (B, 8, 8, 1)`` in ``[-1, 1]``: dense to 4x4x(2 width), stride-2 transposed conv to 8x8, 3x3 conv, tanh.

  Attributes:
    width: the channels of the 8x8 layers (twice as many at 4x4).
  """

  width: int = 64

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    x = nn.Dense(4 * 4 * 2 * self.width)(z).reshape(z.shape[0], 4, 4, 2 * self.width)
    x = nn.relu(x)
    x = nn.relu(nn.ConvTranspose(self.width, (4, 4), strides=(2, 2), padding='SAME')(x))
    x = nn.relu(nn.Conv(self.width, (3, 3), padding='SAME')(x))
    return jnp.tanh(nn.Conv(1, (3, 3), padding='SAME')(x))


class ConvCritic(nn.Module):
  """``(B, 8, 8, 1) -> score (B,)``: 3x3 conv, 4x4 stride-2 conv to 4x4, 3x3 conv, leaky ReLU 0.1, dense.

  Attributes:
    width: the channels of the first convolution (twice as many in the others).
  """

  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = lambda h: nn.leaky_relu(h, 0.1)  # noqa: E731
    h = act(nn.Conv(self.width, (3, 3), padding='SAME')(x))
    h = act(nn.Conv(2 * self.width, (4, 4), strides=(2, 2), padding='SAME')(h))
    h = act(nn.Conv(2 * self.width, (3, 3), padding='SAME')(h))
    return nn.Dense(1)(h.reshape(h.shape[0], -1))[:, 0]


def make_models(config: TrainConfig, dataset: data.Dataset) -> tuple[nn.Module, nn.Module]:
  """The generator and the critic of a run: MLPs for a 2-D mixture, the conv pair for the digits.

  Args:
    config: the run's configuration (``width``, ``depth``, ``activation``, ``fourier_features``,
      ``fourier_scale``).
    dataset: the data set (:func:`snjax.app.data.get_dataset`).

  Returns:
    ``(generator, critic)``, Flax linen modules, not yet initialized.
  """
  if isinstance(dataset, data.GaussianMixture):
    (out_dim,) = data.sample_shape(dataset)
    generator = MLPGenerator(config.width, config.depth, out_dim, config.activation)
    critic = MLPCritic(
      config.width, config.depth, fourier_features=config.fourier_features, fourier_scale=config.fourier_scale
    )
    return generator, critic
  return ConvGenerator(config.width), ConvCritic(config.width)
