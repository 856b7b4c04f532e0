"""snjax: spectral normalization for JAX and Flax.

After Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks" (https://arxiv.org/abs/1802.05957).
"""

from snjax.layout import KernelLayout, kernel_matrix, resolve_layout
from snjax.power import PowerIterationResult, power_iteration
from snjax.transform import (
    SpectralNormalization,
    sigmas,
    sn_apply,
    sn_init,
    spectral_normalization,
)

__version__ = '0.1.0'

__all__ = [
    'KernelLayout',
    'PowerIterationResult',
    'SpectralNormalization',
    'kernel_matrix',
    'power_iteration',
    'resolve_layout',
    'sigmas',
    'sn_apply',
    'sn_init',
    'spectral_normalization',
]
