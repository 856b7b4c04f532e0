"""snjax: spectral normalization for JAX and Flax.

After Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks" (https://arxiv.org/abs/1802.05957).
"""

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
from snjax.power import PowerIterationResult, power_iteration
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
    'GANLoss',
    'GANTrainState',
    'GANTrainer',
    'KernelLayout',
    'PowerIterationResult',
    'SNConv',
    'SNDense',
    'SpectralNorm',
    'SpectralNormalization',
    'gan_trainer',
    'gradient_penalty',
    'hinge_critic_loss',
    'hinge_generator_loss',
    'kernel_matrix',
    'non_saturating_critic_loss',
    'non_saturating_generator_loss',
    'power_iteration',
    'r1_penalty',
    'resolve_layout',
    'sigmas',
    'sn_apply',
    'sn_init',
    'spectral_normalization',
    'wasserstein_critic_loss',
    'wasserstein_generator_loss',
]
