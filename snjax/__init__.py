"""snjax: spectral normalization for JAX and Flax.

After Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks" (https://arxiv.org/abs/1802.05957).
"""

from snjax import nnx
from snjax.bounds import (
  circular_conv_singular_values,
  conv_norm_bound,
  gram_iteration_bound,
  matrix_norm_bound,
)
from snjax.conv import ConvSpec, conv_operator_norm, conv_power_iteration, conv_specs
from snjax.layout import KernelLayout, kernel_matrix, resolve_layout
from snjax.linen import SNConv, SNDense, SpectralNorm
from snjax.losses import (
  GANLoss,
  gradient_penalty,
  hinge_critic_loss,
  hinge_generator_loss,
  non_saturating_critic_loss,
  non_saturating_generator_loss,
  r1_penalty,
  wasserstein_critic_loss,
  wasserstein_generator_loss,
)
from snjax.nnx import SpectralNormState
from snjax.parallel import batch_sharding, data_mesh, replicate, replicated, shard_batch
from snjax.power import PowerIterationResult, power_iteration
from snjax.projection import SpectralProjectionState, spectral_projection
from snjax.report import LayerNorms, LipschitzReport, lipschitz_report
from snjax.train_step import GANTrainer, GANTrainState, gan_trainer
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
  'GANLoss',
  'GANTrainState',
  'GANTrainer',
  'KernelLayout',
  'LayerNorms',
  'LipschitzReport',
  'PowerIterationResult',
  'SNConv',
  'SNDense',
  'SpectralNorm',
  'SpectralNormState',
  'SpectralNormalization',
  'SpectralProjectionState',
  'batch_sharding',
  'circular_conv_singular_values',
  'conv_norm_bound',
  'conv_operator_norm',
  'conv_power_iteration',
  'conv_specs',
  'data_mesh',
  'gan_trainer',
  'gradient_penalty',
  'gram_iteration_bound',
  'hinge_critic_loss',
  'hinge_generator_loss',
  'kernel_matrix',
  'nnx',
  'lipschitz_report',
  'matrix_norm_bound',
  'non_saturating_critic_loss',
  'non_saturating_generator_loss',
  'power_iteration',
  'r1_penalty',
  'replicate',
  'replicated',
  'resolve_layout',
  'shard_batch',
  'sigmas',
  'sn_apply',
  'sn_init',
  'spectral_normalization',
  'spectral_projection',
  'wasserstein_critic_loss',
  'wasserstein_generator_loss',
]
