"""snjax: spectral normalization for JAX and Flax.

The spectral-norm surface lives here: the functional core (:func:`sn_init`,
:func:`sn_apply`, :func:`spectral_normalization`, :func:`spectral_projection`,
:func:`power_iteration`), the Flax linen modules (:class:`~snjax.linen.SpectralNorm`,
:class:`~snjax.linen.SNDense`, :class:`~snjax.linen.SNConv`) and Flax NNX (:mod:`snjax.nnx`). Two
namespaces group the rest: :mod:`snjax.lipschitz` (convolution operator
norms, certified bounds, Lipschitz reports) and :mod:`snjax.gan` (losses, the
GAN train step, sharding, checkpoints).

After Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks" (https://arxiv.org/abs/1802.05957).
"""

from snjax import gan, lipschitz, nnx
from snjax._conv import ConvSpec, conv_specs
from snjax._deprecations import getattr_with_deprecations as _getattr_with_deprecations
from snjax._layout import KernelLayout, kernel_matrix, resolve_layout
from snjax._power import PowerIterationResult, power_iteration
from snjax._power import conv_power_iteration as conv_power_iteration  # deprecated; warns when called
from snjax.linen import SNConv, SNDense, SpectralNorm
from snjax.nnx import SpectralNormState
from snjax.projection import SpectralProjectionState, spectral_projection
from snjax.transform import (
  SpectralNormalization,
  sigmas,
  sn_apply,
  sn_init,
  spectral_normalization,
)

__version__ = '0.1.0'

__all__ = [
  'ConvSpec',
  'KernelLayout',
  'PowerIterationResult',
  'SNConv',
  'SNDense',
  'SpectralNorm',
  'SpectralNormState',
  'SpectralNormalization',
  'SpectralProjectionState',
  'conv_specs',
  'gan',
  'kernel_matrix',
  'lipschitz',
  'nnx',
  'power_iteration',
  'resolve_layout',
  'sigmas',
  'sn_apply',
  'sn_init',
  'spectral_normalization',
  'spectral_projection',
]

# Names that moved into the snjax.gan and snjax.lipschitz namespaces in 0.2.
_MOVED = {
  **{
    name: f'snjax.gan:{name}'
    for name in (
      'GANLoss',
      'GANTrainState',
      'GANTrainer',
      'batch_sharding',
      'data_mesh',
      'gan_trainer',
      'gradient_penalty',
      'hinge_critic_loss',
      'hinge_generator_loss',
      'non_saturating_critic_loss',
      'non_saturating_generator_loss',
      'r1_penalty',
      'replicate',
      'replicated',
      'shard_batch',
      'wasserstein_critic_loss',
      'wasserstein_generator_loss',
    )
  },
  **{
    name: f'snjax.lipschitz:{name}'
    for name in (
      'LayerNorms',
      'LipschitzReport',
      'circular_conv_singular_values',
      'conv_norm_bound',
      'conv_operator_norm',
      'gram_iteration_bound',
      'lipschitz_report',
      'matrix_norm_bound',
    )
  },
}


def __getattr__(name: str):
  return _getattr_with_deprecations('snjax', _MOVED, name)
