"""Certified upper bounds on the operator norm of convolutions and matrices.

Power iteration (:mod:`snjax.conv`) gives a *lower* bound that converges to
the norm. This module gives *upper* bounds, for reporting and for provably
Lipschitz networks.

**Circular convolutions are block-diagonalized by the DFT** (Sedghi, Gupta &
Long, ICLR 2019, "The Singular Values of Convolutional Layers",
https://arxiv.org/abs/1805.10408): on an input of spatial size ``N`` the
stride-1 circular convolution's singular values are those of the ``c_in x
c_out`` matrices ``K^(w)``, the kernel's d-dimensional DFT at each frequency
``w`` of the ``N`` grid. With a stride ``s`` that divides ``N``, subsampling
aliases the ``s^d`` input frequencies ``xi + j N/s`` onto one output frequency
``xi``; the strided operator is block-diagonal with blocks
``B(xi) = s^{-d/2} [K^(xi + j N/s)]_j`` of shape ``(s^d c_in) x c_out``.

**Zero padding** (``'SAME'``, ``'VALID'``, explicit pads, ``'CAUSAL'``) is
bounded by an embedding: an input of size ``n`` placed in a zero-filled circle
of size ``N >= n + (k - 1) r`` (k the kernel size, r its dilation) is
convolved without wrap-around, so every non-zero row of the zero-padded
operator is a row of the circular operator on ``N``: ``||A_zero|| <=
||A_circ(N)||``, and with a stride ``s`` (``N`` a multiple of ``s``) the
strided rows are rows of the strided circular operator on ``N``. Input
dilation inserts zeros, an isometry, so the bound uses the dilated size. This
bound is exact in the limit of large inputs and looser for small ones (the
gap between circular and zero padding studied by Delattre, Barthélemy &
Allauzen 2024, "Spectral Norm of Convolutional Layers with Circular and Zero
Paddings", https://arxiv.org/abs/2402.00240); :func:`conv_norm_bound` uses the
smallest such ``N``.

**Gram iteration** (Delattre, Barthélemy, Araujo & Allauzen, ICML 2023,
"Efficient Bound of Lipschitz Constant for Convolutional Layers by Gram
Iteration", https://arxiv.org/abs/2305.16173) bounds each block's norm: with
``G_0 = B`` and ``G_{t+1} = G_t^H G_t``, ``sigma_1(B) <= ||G_t||_F^{1/2^t}``
for every t, and the bound converges to ``sigma_1(B)`` super-linearly
(``(sum_i (sigma_i / sigma_1)^{2^{t+1}})^{1/2^{t+1}}``). Each iterate is
rescaled by its Frobenius norm, the scale kept in log space, so nothing
overflows. Differentiable and deterministic.

Floating point: bounds are computed in the kernel's precision (float32, or
float64 under ``jax_enable_x64``) and multiplied by ``1 + 8 eps (sqrt(dim) +
log2 |grid|)`` to cover rounding (a conservative allowance, not a formal
floating-point proof).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from snjax.conv import ConvSpec, Padding, _Geometry, _geometry

_ZERO_PADDINGS = ('SAME', 'SAME_LOWER', 'VALID', 'CAUSAL')


def _rounding_margin(dtype, dim: int, grid_size: int) -> float:
  eps = float(jnp.finfo(dtype).eps)
  return 1.0 + 8.0 * eps * (math.sqrt(dim) + math.log2(max(grid_size, 2)))


def _dense_channel_kernel(kernel: jax.Array, geo: _Geometry) -> jax.Array:
  """The kernel with its dilation zeros inserted and its feature groups made block-diagonal:
  ``(*dilated spatial, c_in, c_out)``."""
  d = len(geo.kernel_size)
  g = geo.groups
  cin_g, cout = kernel.shape[-2], kernel.shape[-1]
  if g > 1:
    cout_g = cout // g
    blocks = kernel.reshape(kernel.shape[:-1] + (g, cout_g))  # (*k, cin_g, g, cout_g)
    eye = jnp.eye(g, dtype=kernel.dtype)
    # full[..., a, i, b, o] = blocks[..., i, a, o] * [a == b]
    full = jnp.einsum('...iao,ab->...aibo', blocks, eye)
    kernel = full.reshape(kernel.shape[:d] + (g * cin_g, cout))
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


class _Frame(NamedTuple):
  """Which circular (strided) operator bounds or equals the convolution."""

  grid: tuple[int, ...]
  strides: tuple[int, ...]
  exact: bool
  description: str


def _frame(geo: _Geometry) -> _Frame:
  spatial = geo.input_shape[:-1]
  dilated = tuple((k - 1) * r + 1 for k, r in zip(geo.kernel_size, geo.rhs_dilation, strict=False))
  if geo.padding == 'CIRCULAR':
    if any(x > 1 for x in geo.lhs_dilation):
      raise ValueError('conv_norm_bound: CIRCULAR padding with lhs_dilation > 1 is not supported.')
    strides = tuple(s if n % s == 0 else 1 for n, s in zip(spatial, geo.strides, strict=False))
    exact = strides == geo.strides
    what = 'circular, exact (Sedghi et al. 2019' + (', polyphase for the stride)' if max(strides) > 1 else ')')
    if not exact:
      what = 'circular, stride dropped where it does not divide the input size (upper bound)'
    return _Frame(tuple(spatial), strides, exact, what)
  if geo.padding == 'REFLECT':
    raise ValueError(
      "conv_norm_bound: no certified bound for padding 'REFLECT' (reflection is not an isometric embedding); "
      'use conv_operator_norm for an estimate.'
    )
  # Zero padding of any amount: embed the (input-dilated) signal in a circle with room for the kernel.
  sizes = tuple((n - 1) * ld + 1 for n, ld in zip(spatial, geo.lhs_dilation, strict=False))
  grid = tuple(-(-(n + k - 1) // s) * s for n, k, s in zip(sizes, dilated, geo.strides, strict=False))
  return _Frame(grid, geo.strides, False, 'zero padding, circular embedding on grid ' + 'x'.join(map(str, grid)))


def _blocks(kernel: jax.Array, geo: _Geometry, frame: _Frame) -> jax.Array:
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


def _sq_abs(x):
  if jnp.iscomplexobj(x):
    return jnp.square(x.real) + jnp.square(x.imag)
  return jnp.square(x)


def _safe_frobenius(g, tiny):
  sq = jnp.sum(_sq_abs(g), axis=(-2, -1))
  ok = sq > tiny * tiny
  return jnp.where(ok, jnp.sqrt(jnp.where(ok, sq, 1.0)), tiny)


def gram_iteration_bound(matrices: jax.Array, n_iterations: int = 8) -> jax.Array:
  """Gram iteration (Delattre et al., ICML 2023): an upper bound on the spectral norm of each matrix.

  ``G_0 = M``, ``G_{t+1} = G_t^H G_t``; returns ``||G_T||_F^{1/2^T} >=
  sigma_1(M)``, rescaled at every step (log-space scale) so that nothing
  overflows, for the last two axes of ``matrices`` (leading axes are a batch).
  ``T = 0`` is the Frobenius norm. Differentiable.

  Args:
    matrices: ``(..., m, n)``, real or complex.
    n_iterations: T >= 0; the bound's excess over sigma_1 is at most a factor
      ``rank^{1/2^{T+1}}`` and usually far less.

  Returns:
    ``(...)`` upper bounds (real), no rounding margin added.
  """
  if isinstance(n_iterations, bool) or not isinstance(n_iterations, int) or n_iterations < 0:
    raise ValueError(f'gram_iteration_bound: n_iterations must be an int >= 0, got {n_iterations!r}.')
  g = matrices
  if g.shape[-2] < g.shape[-1]:
    g = jnp.conj(jnp.swapaxes(g, -1, -2))  # G^H G then has the smaller side
  real_dtype = jnp.real(g[..., :0, :0]).dtype
  tiny = jnp.finfo(real_dtype).tiny
  log_scale = jnp.zeros(g.shape[:-2], real_dtype)
  for _ in range(n_iterations):
    r = _safe_frobenius(g, tiny)
    g = g / r[..., None, None].astype(g.dtype)
    log_scale = 2.0 * (log_scale + jnp.log(r))
    g = jnp.matmul(jnp.conj(jnp.swapaxes(g, -1, -2)), g, precision=jax.lax.Precision.HIGHEST)
  power = 0.5**n_iterations
  sq = jnp.sum(_sq_abs(g), axis=(-2, -1))
  ok = sq > 0
  # Only differentiate through logs of positive numbers, so that a zero matrix has a zero, not NaN, gradient.
  log_fro = 0.5 * jnp.log(jnp.where(ok, sq, 1.0))
  return jnp.where(ok, jnp.exp(power * (log_fro + log_scale)), 0.0)


def _spec(input_shape, strides, padding, rhs_dilation, lhs_dilation, feature_group_count) -> ConvSpec:
  return ConvSpec(tuple(input_shape), strides, padding, rhs_dilation, lhs_dilation, feature_group_count)


def circular_conv_singular_values(
  kernel: jax.Array,
  input_shape: Sequence[int],
  *,
  strides: int | Sequence[int] = 1,
  rhs_dilation: int | Sequence[int] = 1,
  feature_group_count: int = 1,
) -> jax.Array:
  """All singular values of a circular convolution, from the kernel's FFT (Sedghi et al., ICLR 2019).

  The convolution is ``flax.linen.Conv(padding='CIRCULAR')`` on one input of
  ``input_shape`` (spatial + channels). Stride 1: the union over the ``prod(n)``
  frequencies of the singular values of the ``c_in x c_out`` DFT matrices; a
  stride that divides the input size: the singular values of the polyphase
  blocks (see the module docstring). ``min(prod(n) c_in, prod(n/s) c_out)`` values
  in all. Cost: one FFT and ``prod(n/s)`` SVDs, so meant for small sizes.

  Args:
    kernel: ``(*spatial, in/groups, out)``, Flax layout.
    input_shape: spatial dims + input channels.
    strides: an int or one per spatial dim; each must divide its input size.
    rhs_dilation: kernel dilation.
    feature_group_count: feature groups.

  Returns:
    A 1-D array of the singular values, descending.

  Raises:
    ValueError: a stride that does not divide the input size, or a
      kernel / input_shape mismatch.
  """
  geo = _geometry(tuple(kernel.shape), _spec(input_shape, strides, 'CIRCULAR', rhs_dilation, 1, feature_group_count))
  frame = _frame(geo)
  if not frame.exact:
    raise ValueError(
      f'circular_conv_singular_values: strides {geo.strides} must divide the input size {geo.input_shape[:-1]}.'
    )
  s = jnp.linalg.svd(_blocks(kernel, geo, frame), compute_uv=False)
  return jnp.sort(s.ravel())[::-1]


def conv_norm_bound(
  kernel: jax.Array,
  input_shape: Sequence[int],
  *,
  strides: int | Sequence[int] = 1,
  padding: Padding = 'SAME',
  rhs_dilation: int | Sequence[int] = 1,
  lhs_dilation: int | Sequence[int] = 1,
  feature_group_count: int = 1,
  method: str = 'gram',
  n_iterations: int = 10,
) -> jax.Array:
  """A certified upper bound on the operator norm of a convolution.

  The convolution is ``flax.linen.Conv`` (no bias) on one input of
  ``input_shape``. What is bounded, precisely (see the module docstring):

  * ``'CIRCULAR'`` padding, strides dividing the input size: the norm itself
    (up to the Gram iteration's excess, nil with ``method='svd'``);
    a stride that does not divide it is dropped in that dimension (the
    strided rows are a subset of the stride-1 rows: still an upper bound).
  * zero padding (``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, ``'CAUSAL'``, any
    explicit pads), any stride, kernel and input dilation, groups: the norm of
    the strided circular convolution on the smallest grid ``N >= n + (k-1) r``
    that is a multiple of the stride, which is >= the zero-padded norm; the
    excess shrinks as the input grows.
  * ``'REFLECT'``: not supported (``ValueError``).

  Args:
    kernel: ``(*spatial, in/groups, out)``, Flax layout.
    input_shape: spatial dims + input channels, no batch axis.
    strides: an int or one per spatial dim.
    padding: as ``flax.linen.Conv`` accepts it.
    rhs_dilation: kernel dilation.
    lhs_dilation: input dilation.
    feature_group_count: feature groups.
    method: ``'gram'`` (Gram iteration on each block, Delattre et al. 2023:
      fast, differentiable) or ``'svd'`` (the exact largest singular value of
      each block, Sedghi et al. 2019).
    n_iterations: Gram iterations (``method='gram'``).

  Returns:
    A scalar array, >= the operator norm (a rounding margin included).

  Raises:
    ValueError: unsupported padding or method, or a kernel / input_shape
      mismatch.
  """
  if method not in ('gram', 'svd'):
    raise ValueError(f"conv_norm_bound: method must be 'gram' or 'svd', got {method!r}.")
  spec = _spec(input_shape, strides, padding, rhs_dilation, lhs_dilation, feature_group_count)
  geo = _geometry(tuple(kernel.shape), spec, 'conv_norm_bound')
  return _bound(kernel, geo, method, n_iterations)


def _bound(kernel, geo, method, n_iterations):
  frame = _frame(geo)
  dtype = jnp.promote_types(kernel.dtype, jnp.float32)
  blocks = _blocks(kernel.astype(dtype), geo, frame)
  if method == 'svd':
    per_block = jnp.linalg.svd(blocks, compute_uv=False)[..., 0]
  else:
    per_block = gram_iteration_bound(blocks, n_iterations)
  margin = _rounding_margin(dtype, max(blocks.shape[-2:]), int(np.prod(frame.grid)))
  return jnp.max(per_block) * margin


def conv_bound_description(
  kernel_shape: Sequence[int],
  input_shape: Sequence[int],
  *,
  strides: int | Sequence[int] = 1,
  padding: Padding = 'SAME',
  rhs_dilation: int | Sequence[int] = 1,
  lhs_dilation: int | Sequence[int] = 1,
  feature_group_count: int = 1,
) -> tuple[bool, str]:
  """Whether :func:`conv_norm_bound` is the exact norm (up to its method) for this geometry, and what it bounds."""
  spec = _spec(input_shape, strides, padding, rhs_dilation, lhs_dilation, feature_group_count)
  frame = _frame(_geometry(tuple(kernel_shape), spec, 'conv_bound_description'))
  return frame.exact, frame.description


def matrix_norm_bound(matrix: jax.Array, n_iterations: int = 10) -> jax.Array:
  """A certified upper bound on a matrix's spectral norm by Gram iteration (a rounding margin included)."""
  dtype = jnp.promote_types(matrix.dtype, jnp.float32)
  m = matrix.astype(dtype)
  return gram_iteration_bound(m, n_iterations) * _rounding_margin(dtype, max(m.shape[-2:]), 1)
