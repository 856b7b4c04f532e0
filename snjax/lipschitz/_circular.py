"""Circular convolutions by the DFT: their singular values, and the circular operator that bounds a zero-padded one.

**Circular convolutions are block-diagonalized by the DFT** (Sedghi, Gupta &
Long, ICLR 2019, "The Singular Values of Convolutional Layers",
https://arxiv.org/abs/1805.10408): on an input of spatial size ``N`` the
stride-1 circular convolution's singular values are those of the ``c_in x
c_out`` matrices ``K^(w)``, the kernel's d-dimensional DFT at each frequency
``w`` of the ``N`` grid. With a stride ``s`` that divides ``N``, subsampling
aliases the ``s^d`` input frequencies ``xi + j N/s`` onto one output frequency
``xi``; the strided operator is block-diagonal with blocks

  B(xi) = s^{-d/2} [K^(xi + j N/s)]_j,    shape (s^d c_in) x c_out.

**Zero padding** (``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, explicit pads,
``'CAUSAL'``) is bounded by an embedding: an input of size ``n`` placed in a
zero-filled circle of size ``N >= n + (k - 1) r`` (``k`` the kernel size,
``r`` its dilation) is convolved without wrap-around, so every non-zero row of
the zero-padded operator is a row of the circular operator on ``N``:
``||A_zero|| <= ||A_circ(N)||``; with a stride ``s`` (``N`` a multiple of
``s``) the strided rows are rows of the strided circular operator on ``N``.
Input dilation inserts zeros, an isometry, so the embedding uses the dilated
size. The bound is exact in the limit of large inputs and looser on small
ones (the gap between circular and zero padding studied by Delattre,
Barthélemy & Allauzen 2024, "Spectral Norm of Convolutional Layers with
Circular and Zero Paddings", https://arxiv.org/abs/2402.00240).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from snjax._conv import ConvSpec, Geometry, geometry
from snjax.lipschitz._gram import gram_iteration_bound, rounding_margin
from snjax.lipschitz._spec import as_spec


def ungrouped_kernel(kernel: jax.Array, groups: int) -> jax.Array:
  """The kernel with its feature groups made block-diagonal: ``(*spatial, c_in, c_out)``."""
  if groups == 1:
    return kernel
  cin_g, cout = kernel.shape[-2], kernel.shape[-1]
  blocks = kernel.reshape(kernel.shape[:-1] + (groups, cout // groups))  # (*k, cin_g, g, cout_g)
  eye = jnp.eye(groups, dtype=kernel.dtype)
  # full[..., a, i, b, o] = blocks[..., i, a, o] * [a == b]
  full = jnp.einsum('...iao,ab->...aibo', blocks, eye)
  return full.reshape(kernel.shape[:-2] + (groups * cin_g, cout))


def _dense_channel_kernel(kernel: jax.Array, geo: Geometry) -> jax.Array:
  """The kernel with its dilation zeros inserted and its feature groups made block-diagonal:
  ``(*dilated spatial, c_in, c_out)``."""
  d = len(geo.kernel_size)
  kernel = ungrouped_kernel(kernel, geo.groups)
  if any(r > 1 for r in geo.rhs_dilation):
    dilated = tuple((k - 1) * r + 1 for k, r in zip(geo.kernel_size, geo.rhs_dilation, strict=False))
    out = jnp.zeros(dilated + kernel.shape[d:], kernel.dtype)
    idx = tuple(slice(None, None, r) for r in geo.rhs_dilation)
    kernel = out.at[idx].set(kernel)
  return kernel


def _embed(kernel: jax.Array, grid: tuple[int, ...]) -> jax.Array:
  """Places a ``(*k, c_in, c_out)`` kernel on the circle ``grid`` (taps beyond it wrap and add up)."""
  d = len(grid)
  out = jnp.zeros(tuple(grid) + kernel.shape[d:], kernel.dtype)
  index = np.ix_(*[np.arange(k) % n for k, n in zip(kernel.shape[:d], grid, strict=False)])
  return out.at[index].add(kernel)


class Frame(NamedTuple):
  """Which circular (strided) operator bounds or equals a convolution.

  Attributes:
    grid: the circle's spatial size ``N``.
    strides: the strides of the circular operator.
    exact: whether that operator is the convolution itself.
    description: in words.
  """

  grid: tuple[int, ...]
  strides: tuple[int, ...]
  exact: bool
  description: str


def circular_frame(geo: Geometry, where: str) -> Frame:
  """The circular operator of ``geo``: the convolution itself (circular padding) or its zero-padding embedding.

  Raises:
    ValueError: ``'REFLECT'`` padding, or circular padding with input dilation (no circular frame).
  """
  spatial = geo.input_shape[:-1]
  dilated = tuple((k - 1) * r + 1 for k, r in zip(geo.kernel_size, geo.rhs_dilation, strict=False))
  if geo.padding == 'CIRCULAR':
    if any(x > 1 for x in geo.lhs_dilation):
      raise ValueError(f'{where}: CIRCULAR padding with lhs_dilation > 1 is not supported.')
    strides = tuple(s if n % s == 0 else 1 for n, s in zip(spatial, geo.strides, strict=False))
    exact = strides == geo.strides
    what = 'circular, exact (Sedghi et al. 2019' + (', polyphase for the stride)' if max(strides) > 1 else ')')
    if not exact:
      what = 'circular, stride dropped where it does not divide the input size (upper bound)'
    return Frame(tuple(spatial), strides, exact, what)
  if geo.padding == 'REFLECT':
    raise ValueError(
      f"{where}: no certified bound for padding 'REFLECT' (reflection is not an isometric embedding); "
      'use conv_operator_norm for an estimate.'
    )
  # Zero padding of any amount: embed the (input-dilated) signal in a circle with room for the kernel.
  sizes = tuple((n - 1) * ld + 1 for n, ld in zip(spatial, geo.lhs_dilation, strict=False))
  grid = tuple(-(-(n + k - 1) // s) * s for n, k, s in zip(sizes, dilated, geo.strides, strict=False))
  return Frame(grid, geo.strides, False, 'zero padding, circular embedding on grid ' + 'x'.join(map(str, grid)))


def _blocks(kernel: jax.Array, geo: Geometry, frame: Frame) -> jax.Array:
  """The blocks ``B(xi)`` of the circular operator of ``frame``: ``(n_blocks, s^d c_in, c_out)``, complex."""
  d = len(frame.grid)
  dense = _dense_channel_kernel(kernel, geo)
  cin, cout = dense.shape[-2], dense.shape[-1]
  spectrum = jnp.fft.fftn(_embed(dense, frame.grid), axes=tuple(range(d)))
  # frequency w = j * (N/s) + xi: split each axis into (s, N/s), then gather the aliased j's.
  split = []
  for n, s in zip(frame.grid, frame.strides, strict=False):
    split += [s, n // s]
  spectrum = spectrum.reshape(tuple(split) + (cin, cout))
  perm = tuple(range(1, 2 * d, 2)) + tuple(range(0, 2 * d, 2)) + (2 * d, 2 * d + 1)
  spectrum = jnp.transpose(spectrum, perm)
  n_blocks = int(np.prod([n // s for n, s in zip(frame.grid, frame.strides, strict=False)]))
  phases = int(np.prod(frame.strides))
  return spectrum.reshape(n_blocks, phases * cin, cout) / math.sqrt(phases)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def fourier_bound(kernel: jax.Array, geo: Geometry, method: str, n_iterations: int) -> jax.Array:
  """``max_xi ||B(xi)||`` over the blocks of the circular frame of ``geo``, times a rounding margin.

  ``method='svd'``: each block's largest singular value; ``'gram'``:
  :func:`gram_iteration_bound` with ``n_iterations``. The margin is
  ``1 + 8 eps (sqrt(block dim) + log2 |grid|)`` (the dot products and the FFT).
  """
  frame = circular_frame(geo, 'conv_norm_bound')
  dtype = jnp.promote_types(kernel.dtype, jnp.float32)
  blocks = _blocks(kernel.astype(dtype), geo, frame)
  if method == 'svd':
    per_block = jnp.linalg.svd(blocks, compute_uv=False)[..., 0]
  else:
    per_block = gram_iteration_bound(blocks, n_iterations)
  margin = rounding_margin(dtype, max(blocks.shape[-2:]), int(np.prod(frame.grid)))
  return jnp.max(per_block) * margin


def circular_conv_singular_values(
  kernel: jax.Array, spec: ConvSpec | Sequence[int] | None = None, **deprecated_geometry: Any
) -> jax.Array:
  """All singular values of a circular convolution, from the kernel's DFT (Sedghi et al., ICLR 2019).

  The convolution is ``flax.linen.Conv(padding='CIRCULAR')`` (no bias) on one
  input of ``spec.input_shape``. For stride 1 its singular values are the
  union, over the ``prod(n)`` frequencies ``w`` of the input grid, of the
  singular values of the ``c_in x c_out`` matrices
  ``K^(w) = sum_p exp(-2 pi i sum_j w_j p_j / n_j) K_p`` (Sedghi, Gupta & Long 2019,
  https://arxiv.org/abs/1805.10408). A stride ``s`` that divides the input
  size aliases ``s^d`` frequencies onto each output frequency: the singular
  values are those of the polyphase blocks ``B(xi) = s^{-d/2} [K^(xi + j
  n/s)]_j`` (see the module docstring). ``min(prod(n) c_in, prod(n/s) c_out)``
  values in all. Cost: one FFT and ``prod(n/s)`` SVDs, so meant for small
  sizes; for the norm alone, :func:`conv_norm_bound` with ``method='svd'``
  gives the largest.

  Args:
    kernel: ``(*spatial, in/groups, out)``, Flax layout.
    spec: the convolution, a :class:`snjax.ConvSpec` whose ``padding`` is
      ``'CIRCULAR'``, ``lhs_dilation`` 1 and strides dividing the input size.
      (Deprecated until snjax 0.3: the input shape, with ``strides``,
      ``rhs_dilation`` and ``feature_group_count`` as keywords; the padding is
      then circular.)
    **deprecated_geometry: the keywords of the deprecated form (a
      ``DeprecationWarning``).

  Returns:
    A 1-D array of the singular values, descending.

  Raises:
    ValueError: a padding other than ``'CIRCULAR'``, input dilation, a stride
      that does not divide the input size, or a kernel / spec mismatch.
    TypeError: no spec, or geometry keywords beside a ``ConvSpec``.
  """
  where = 'circular_conv_singular_values'
  spec = as_spec(
    spec,
    deprecated_geometry,
    where,
    keywords=('strides', 'rhs_dilation', 'feature_group_count'),
    fixed={'padding': 'CIRCULAR'},
  )
  geo = geometry(tuple(kernel.shape), spec, where)
  if geo.padding != 'CIRCULAR':
    raise ValueError(
      f"{where}: spec.padding must be 'CIRCULAR' (the DFT diagonalizes circular convolutions only), got "
      f'{spec.padding!r}; for other paddings use conv_operator_norm or conv_norm_bound.'
    )
  frame = circular_frame(geo, where)
  if not frame.exact:
    raise ValueError(f'{where}: strides {geo.strides} must divide the input size {geo.input_shape[:-1]}.')
  s = jnp.linalg.svd(_blocks(kernel, geo, frame), compute_uv=False)
  return jnp.sort(s.ravel())[::-1]
