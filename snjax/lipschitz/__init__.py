"""Lipschitz constants of layers: convolution operator norms, certified upper bounds, per-layer reports.

Spectral normalization bounds each weight read as a matrix. A convolution's
Lipschitz constant is the norm of the convolution *operator*, typically 1.2x
to 2.5x larger (Sedghi, Gupta & Long 2019, https://arxiv.org/abs/1805.10408).
This namespace measures it (:func:`conv_operator_norm`, a lower bound that
converges), bounds it from above with a certificate (:func:`conv_norm_bound`,
Gram iteration after Delattre et al. 2023, https://arxiv.org/abs/2305.16173,
on the exact Gram matrix or the Fourier blocks), lists the singular values of
circular convolutions (:func:`circular_conv_singular_values`), and reports
all of it for every layer of a model (:func:`lipschitz_report`).

A convolution is described by the kernel and a :class:`snjax.ConvSpec` (input
shape, strides, padding, dilations, feature groups), as for the conv mode of
:func:`snjax.sn_init`; :func:`snjax.conv_specs` reads them from a Flax model::

  spec = snjax.ConvSpec((32, 32, 3), strides=2, padding='SAME')
  snjax.lipschitz.conv_operator_norm(kernel, spec)   # ||A||_2 from below, to a tolerance
  snjax.lipschitz.conv_norm_bound(kernel, spec)      # a certified upper bound

(The pre-0.2 form, an input shape with the geometry as keywords, works until
snjax 0.3 with a ``DeprecationWarning``.)

Iteration counts have one meaning each: ``tol`` and ``max_iterations`` are
those of the power / Lanczos iteration (:func:`conv_operator_norm`,
:func:`lipschitz_report`); ``n_iterations`` counts Gram iterations
(:func:`gram_iteration_bound`, :func:`matrix_norm_bound`,
:func:`conv_norm_bound`), and :func:`lipschitz_report`, which takes both
kinds, calls it ``n_gram_iterations``.
"""

from snjax.lipschitz._bounds import conv_bound_description, conv_norm_bound
from snjax.lipschitz._circular import circular_conv_singular_values
from snjax.lipschitz._gram import gram_iteration_bound, matrix_norm_bound
from snjax.lipschitz._operator_norm import conv_operator_norm
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
