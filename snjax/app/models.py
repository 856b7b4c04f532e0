"""The generators and critics of ``snjax train`` (Flax linen).

* :class:`MLPGenerator` / :class:`MLPCritic`: fully connected nets for points
  (the 2-D mixtures, as in VEEGAN, PacGAN and WGAN-GP's toy experiments, and
  the user's ``(N, D)`` data).
* :class:`ConvGenerator` / :class:`ConvCritic`: a small DCGAN-style pair for
  images (Radford et al. 2016, https://arxiv.org/abs/1511.06434), the
  critic in the SN-GAN style (Miyato et al. 2018, https://arxiv.org/abs/1802.05957):
  3x3 / 4x4 convolutions with leaky ReLU 0.1, no normalization layers, so that
  spectral normalization of every kernel bounds its Lipschitz constant. Both
  have :func:`resolution_stages` stride-2 stages, one for the 8x8 digits.

The critics score each example independently and return shape ``(B,)``;
:func:`make_models` picks the pair from the shape of an example.
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


def resolution_stages(height: int, width: int, *, min_side: int = 4, max_stages: int = 4) -> int:
  """The stride-2 stages of the conv nets for ``height x width`` images.

  The most halvings (at most ``max_stages``) that leave both sides whole and at least ``min_side``:
  1 for 8x8 (from 4x4), 2 for 28x28 (from 7x7), 3 for 32x32, 0 for 7x7.

  Args:
    height: the image height.
    width: the image width.
    min_side: the smallest side of the coarsest resolution.
    max_stages: the most stages.

  Returns:
    The number of stages ``k``; the coarsest resolution is ``(height / 2^k, width / 2^k)``.
  """
  k = 0
  while k < max_stages:
    f = 2 ** (k + 1)
    if height % f or width % f or min(height, width) // f < min_side:
      break
    k += 1
  return k


_MAX_CHANNEL_FACTOR = 8  # the widest layer has at most 8 x width channels (DCGAN's 64 -> 512)


def _channels(width: int, stage: int) -> int:
  return width * min(2**stage, _MAX_CHANNEL_FACTOR)


class ConvGenerator(nn.Module):
  """``z -> (B, H, W, C)`` in ``[-1, 1]``: dense to the coarsest resolution, stride-2 transposed convs, 3x3 convs, tanh.

  With ``k = resolution_stages(H, W)``: a dense layer to ``(H / 2^k, W / 2^k)`` with ``2^k width`` channels,
  ``k`` stride-2 4x4 transposed convolutions halving the channels, a 3x3 convolution of ``width`` channels and
  a 3x3 convolution to ``C``, ReLU between them, tanh at the end (channels capped at ``8 width``). For the
  8x8 digits (``k = 1``): 4x4x(2 width), 8x8xwidth, 8x8xwidth, 8x8x1.

  Attributes:
    width: the channels at full resolution (twice as many at each coarser one).
    shape: ``(H, W, C)`` of an example.
  """

  width: int = 64
  shape: tuple[int, int, int] = (8, 8, 1)

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    height, width, channels = self.shape
    k = resolution_stages(height, width)
    h0, w0, c0 = height // 2**k, width // 2**k, _channels(self.width, k)
    x = nn.relu(nn.Dense(h0 * w0 * c0)(z).reshape(z.shape[0], h0, w0, c0))
    for stage in reversed(range(k)):
      x = nn.relu(nn.ConvTranspose(_channels(self.width, stage), (4, 4), strides=(2, 2), padding='SAME')(x))
    x = nn.relu(nn.Conv(self.width, (3, 3), padding='SAME')(x))
    return jnp.tanh(nn.Conv(channels, (3, 3), padding='SAME')(x))


class ConvCritic(nn.Module):
  """``(B, H, W, C) -> score (B,)``: 3x3 conv, stride-2 4x4 convs, 3x3 conv, leaky ReLU 0.1, dense.

  With ``k = resolution_stages(H, W)``: a 3x3 convolution of ``width`` channels, ``k`` stride-2 4x4
  convolutions doubling them, a 3x3 convolution, a dense score (channels capped at ``8 width``). For the 8x8
  digits (``k = 1``): 8x8xwidth, 4x4x(2 width), 4x4x(2 width), 1.

  Attributes:
    width: the channels of the first convolution (twice as many at each coarser resolution).
  """

  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = lambda h: nn.leaky_relu(h, 0.1)  # noqa: E731
    k = resolution_stages(x.shape[1], x.shape[2])
    h = act(nn.Conv(self.width, (3, 3), padding='SAME')(x))
    for stage in range(1, k + 1):
      h = act(nn.Conv(_channels(self.width, stage), (4, 4), strides=(2, 2), padding='SAME')(h))
    h = act(nn.Conv(_channels(self.width, k), (3, 3), padding='SAME')(h))
    return nn.Dense(1)(h.reshape(h.shape[0], -1))[:, 0]


def make_models(config: TrainConfig, dataset: data.Dataset) -> tuple[nn.Module, nn.Module]:
  """The generator and the critic of a run, from the shape of an example: MLPs for points, conv nets for images.

  Args:
    config: the run's configuration (``width``, ``depth``, ``activation``, ``fourier_features``,
      ``fourier_scale``).
    dataset: the data set (:func:`snjax.app.data.load_dataset`): a ``(D,)`` example gets the MLPs, an
      ``(H, W, C)`` one the conv nets.

  Returns:
    ``(generator, critic)``, Flax linen modules, not yet initialized.
  """
  shape = data.sample_shape(dataset)
  if len(shape) == 1:
    generator = MLPGenerator(config.width, config.depth, shape[0], config.activation)
    critic = MLPCritic(
      config.width, config.depth, fourier_features=config.fourier_features, fourier_scale=config.fourier_scale
    )
    return generator, critic
  return ConvGenerator(config.width, shape), ConvCritic(config.width)
