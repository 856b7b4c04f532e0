"""Certified upper bounds on the operator norm of a convolution: which operator is bounded, and how tightly.

:func:`snjax.lipschitz.conv_operator_norm` gives a *lower* bound that
converges to the norm; :func:`conv_norm_bound` gives an *upper* bound, for
reports and for provably Lipschitz networks. Which operator it bounds depends
on the geometry (``operator='auto'`` takes the tightest one that is cheap):

* **circular padding**, strides dividing the input size: the convolution
  itself, block-diagonalized by the DFT (Sedghi, Gupta & Long 2019,
  https://arxiv.org/abs/1805.10408; see :func:`circular_conv_singular_values`).
  Exact with ``method='svd'``.
* **any geometry whose exact Gram matrix is small** (``D = min(in_dim,
  out_dim) <= dense_limit``): zero, reflect and causal padding, explicit pads,
  circular strides that do not divide the input. The ``D x D`` Gram matrix
  ``A^T A`` (or ``A A^T``) is formed exactly from the kernel's taps and
  per-dimension 0/1 tables (never from ``D`` convolutions) and bounded by
  Gram iteration (Delattre, Barthélemy, Araujo & Allauzen 2023,
  https://arxiv.org/abs/2305.16173). After 18 iterations the excess is at
  most a factor ``r^{1/2^20}`` for ``r`` singular values tied at the top
  (7e-7 for a tie of two), typically far less; measured within 1e-6 of the
  float64 SVD in float64.
* **larger zero-padded convolutions**: the circular convolution on a grid
  ``N = n + (k-1) r`` (rounded up to a multiple of the stride) that contains
  the zero-padded one, whose norm is >= the zero-padded norm. The excess
  shrinks as the input grows: about 2-4% at 8x8, 1% at 16x16 and 0.1% at
  32x32 on the SN-GAN critic's layers, 10% on 4x4 inputs with 256 channels.
  Larger ``'REFLECT'`` convolutions have no bound (``ValueError``).

**Floating point**: bounds are computed in the kernel's precision (float32,
or float64 under ``jax_enable_x64``) and multiplied by a rounding allowance,
``1 + 8 eps (sqrt(dim) + log2 |grid|)`` on the FFT blocks and ``1 + 8 eps
(sqrt(terms) + sqrt(D))`` on the dense Gram matrix (``terms = k^{2d}
max(c_in, c_out)`` products per entry; ``+ 8 eps D`` with ``eigvalsh``): a
conservative allowance, measured to cover the float32 error against float64
with a wide margin, not a formal floating-point proof.

Notes:
  The embedding's excess on mid-size zero-padded inputs is the gap between a
  Toeplitz section and the circulant that contains it. No bound that
  converges to the largest norm of the kernel's symbol ``sup_w ||K^(w)||``
  can close it, since the circular norm on any grid containing the
  convolution samples that symbol; Delattre, Barthélemy & Allauzen 2024
  (https://arxiv.org/abs/2402.00240) treat zero padding through its Toeplitz
  structure instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax

from snjax._conv import ConvSpec, Geometry, geometry
from snjax._options import check_int
from snjax.lipschitz._circular import circular_frame, fourier_bound
from snjax.lipschitz._dense import dense_bound, dense_sides
from snjax.lipschitz._spec import as_spec

DENSE_LIMIT = 2048
"""Default ``dense_limit`` of :func:`conv_norm_bound`: the largest ``min(in_dim, out_dim)`` whose exact Gram
matrix is formed (a ``D x D`` matrix; its Gram iteration costs about ``D^3`` flops per step: 18 steps at D = 2048
take about 20 s in float64 on two loaded CPU cores, at D = 4096 about 4 min)."""

_DENSE_ITERATIONS = 18
_FOURIER_ITERATIONS = 10


class _Plan(NamedTuple):
  """Which bound :func:`conv_norm_bound` computes for a geometry.

  Attributes:
    operator: ``'dense'`` (Gram iteration on the exact Gram matrix) or ``'fourier'`` (the FFT blocks of a
      circular convolution, itself or the embedding of a zero-padded one).
    exact: whether the bounded operator is the convolution itself (so the bound is its norm up to the method).
    description: in words.
  """

  operator: str
  exact: bool
  description: str


def _plan(geo: Geometry, c_out: int, operator: str, dense_limit: int, where: str) -> _Plan:
  if operator not in ('auto', 'dense', 'fourier'):
    raise ValueError(f"{where}: operator must be 'auto', 'dense' or 'fourier', got {operator!r}.")
  dense_limit = check_int('dense_limit', dense_limit, 0, where=where)
  dim = min(dense_sides(geo, c_out))
  dense = _Plan('dense', True, f'exact Gram matrix ({dim}x{dim}), Gram iteration')
  if operator == 'dense':
    return dense
  fits = operator == 'auto' and dim <= dense_limit
  try:
    frame = circular_frame(geo, where)
  except ValueError as err:  # REFLECT, or CIRCULAR with input dilation: no FFT frame
    if fits:
      return dense
    raise ValueError(
      f"{err} Its exact Gram matrix would be {dim}x{dim}, above dense_limit={dense_limit}: pass operator='dense' "
      'or a larger dense_limit for a certified bound.'
    ) from None
  if fits and not frame.exact:
    return dense
  return _Plan('fourier', frame.exact, frame.description)


def conv_norm_bound(
  kernel: jax.Array,
  spec: ConvSpec | Sequence[int] | None = None,
  *,
  method: str = 'gram',
  n_iterations: int | None = None,
  operator: str = 'auto',
  dense_limit: int = DENSE_LIMIT,
  **deprecated_geometry: Any,
) -> jax.Array:
  """A certified upper bound on the operator norm ``||A||_2`` of a convolution.

  ``A`` is ``flax.linen.Conv`` (no bias) on one input of ``spec.input_shape``,
  with the strides, padding, dilations and feature groups of ``spec``. The
  operator bounded (``operator='auto'``, the default, takes the tightest one
  that is cheap; see the module docstring for the accuracy of each):

  * ``'CIRCULAR'`` padding, strides dividing the input size: the FFT blocks
    of the convolution itself (Sedghi, Gupta & Long 2019,
    https://arxiv.org/abs/1805.10408), so the bound is the norm (up to the
    Gram iteration's excess, nil with ``method='svd'``).
  * any other geometry with ``D = min(in_dim, out_dim) <= dense_limit``
    (``in_dim = prod(n) c_in``, ``out_dim = prod(m) c_out``): the exact
    ``D x D`` Gram matrix ``G`` of the convolution, bounded by Gram iteration
    (Delattre, Barthélemy, Araujo & Allauzen, ICML 2023,
    https://arxiv.org/abs/2305.16173): ``||A||^2 = ||G||_2 <=
    ||G_t||_F^{1/2^t}``, ``G_{t+1} = G_t^T G_t``; ``method='svd'``
    (``eigvalsh``) leaves only rounding.
  * larger zero-padded ones: the circular convolution on a grid of size
    ``N = n + (k-1) r`` (rounded up to a multiple of the stride) that contains
    it (Delattre, Barthélemy & Allauzen 2024 study the gap,
    https://arxiv.org/abs/2402.00240). Larger ``'REFLECT'`` ones have no bound.

  Everything runs in the kernel's precision (float32, or float64 under
  ``jax_enable_x64``), with a rounding allowance included. Jittable and
  differentiable in the kernel.

  ``n_iterations`` counts *Gram* iterations here, as in
  :func:`gram_iteration_bound` and :func:`matrix_norm_bound`
  (:func:`lipschitz_report` calls it ``n_gram_iterations``).

  Args:
    kernel: ``(*spatial, in/groups, out)``, Flax layout.
    spec: the convolution, a :class:`snjax.ConvSpec`. (Deprecated until snjax
      0.3: the input shape, with the geometry as the keywords ``strides``,
      ``padding``, ``rhs_dilation``, ``lhs_dilation``,
      ``feature_group_count``.)
    method: ``'gram'`` (Gram iteration: fast, differentiable) or ``'svd'``
      (the exact largest singular value of each FFT block, or ``eigvalsh``
      of the dense Gram matrix).
    n_iterations: Gram iterations (``method='gram'``), an int >= 0; default
      10 on the FFT blocks, 18 on the dense Gram matrix.
    operator: ``'auto'`` (above), ``'dense'`` (the exact Gram matrix whatever
      its size) or ``'fourier'`` (the FFT blocks: the circular convolution
      itself or the zero-padding embedding).
    dense_limit: the largest ``D`` for which ``'auto'`` forms the Gram matrix
      (memory ``8 D^2`` bytes in float64, time about ``n_iterations D^3``).
    **deprecated_geometry: the keywords of the deprecated form (a
      ``DeprecationWarning``).

  Returns:
    A scalar array, >= the operator norm (a rounding margin included).

  Raises:
    ValueError: unsupported padding, method or operator, a bad option, or a
      kernel / spec mismatch (the message says which and what was expected).
    TypeError: no spec, or geometry keywords beside a ``ConvSpec``.
  """
  where = 'conv_norm_bound'
  spec = as_spec(spec, deprecated_geometry, where)
  if method not in ('gram', 'svd'):
    raise ValueError(f"{where}: method must be 'gram' or 'svd', got {method!r}.")
  if n_iterations is not None:
    n_iterations = check_int('n_iterations', n_iterations, 0, where=where)
  geo = geometry(tuple(kernel.shape), spec, where)
  plan = _plan(geo, kernel.shape[-1], operator, dense_limit, where)
  if plan.operator == 'dense':
    return dense_bound(kernel, geo, method, _DENSE_ITERATIONS if n_iterations is None else n_iterations)
  return fourier_bound(kernel, geo, method, _FOURIER_ITERATIONS if n_iterations is None else n_iterations)


def conv_bound_description(
  kernel_shape: Sequence[int],
  spec: ConvSpec | Sequence[int] | None = None,
  *,
  operator: str = 'auto',
  dense_limit: int = DENSE_LIMIT,
  **deprecated_geometry: Any,
) -> tuple[bool, str]:
  """What :func:`conv_norm_bound` bounds for a convolution, without computing it.

  Args:
    kernel_shape: the kernel's shape, ``(*spatial, in/groups, out)``.
    spec: the convolution, a :class:`snjax.ConvSpec` (deprecated until snjax
      0.3: the input shape with the geometry keywords, as for
      :func:`conv_norm_bound`).
    operator: as for :func:`conv_norm_bound`.
    dense_limit: as for :func:`conv_norm_bound`.
    **deprecated_geometry: the keywords of the deprecated form (a
      ``DeprecationWarning``).

  Returns:
    ``(exact, description)``: whether the bounded operator is the
    convolution itself (so the bound is its norm up to the method: the
    circular FFT blocks or the exact Gram matrix), and what is bounded, in
    words (e.g. ``'exact Gram matrix (72x72), Gram iteration'``,
    ``'zero padding, circular embedding on grid 10x10'``).

  Raises:
    ValueError: as :func:`conv_norm_bound`.
    TypeError: no spec, or geometry keywords beside a ``ConvSpec``.
  """
  where = 'conv_bound_description'
  spec = as_spec(spec, deprecated_geometry, where)
  kernel_shape = tuple(int(x) for x in kernel_shape)
  geo = geometry(kernel_shape, spec, where)
  plan = _plan(geo, kernel_shape[-1], operator, dense_limit, where)
  return plan.exact, plan.description
