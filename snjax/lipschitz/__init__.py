"""Lipschitz constants of layers: convolution operator norms, certified upper bounds, per-layer reports.

Spectral normalization bounds each weight read as a matrix. A convolution's
Lipschitz constant is the norm of the convolution *operator*, typically 1.2x
to 2.5x larger (Sedghi, Gupta & Long 2019, https://arxiv.org/abs/1805.10408).
This namespace measures it (:func:`conv_operator_norm`, a lower bound that
converges), bounds it from above with a certificate (:func:`conv_norm_bound`,
Gram iteration after Delattre et al. 2023, https://arxiv.org/abs/2305.16173),
and reports both for every layer of a model (:func:`lipschitz_report`).
"""

from snjax._conv import conv_operator_norm
from snjax.lipschitz._bounds import (
  circular_conv_singular_values,
  conv_bound_description,
  conv_norm_bound,
  gram_iteration_bound,
  matrix_norm_bound,
)
from snjax.lipschitz._report import LayerNorms, LipschitzReport, lipschitz_report

__all__ = [
  'LayerNorms',
  'LipschitzReport',
  'circular_conv_singular_values',
  'conv_bound_description',
  'conv_norm_bound',
  'conv_operator_norm',
  'gram_iteration_bound',
  'lipschitz_report',
  'matrix_norm_bound',
]
