"""The linear operators whose spectral norm snjax estimates: a kernel read as a matrix, or a convolution.

Power iteration (:mod:`snjax._power`) only needs, for an operator ``B`` and its
transpose, the products ``B u`` and ``B^T v``, the shapes of ``u`` and ``v``,
and how to scale the kernel by a factor per stacked matrix. Two operators
provide them:

* :class:`MatrixOperator`: the kernel read through its layout as a stacked
  ``(batch..., fan_in, fan_out)`` matrix ``M``; ``B = M``, ``u`` on the fan-out
  side (Miyato et al. 2018, https://arxiv.org/abs/1802.05957). No transposed
  copy of the kernel is made: a kernel whose input axes and output axes are
  each contiguous (every dense and conv kernel of Flax, Haiku, torch and
  Equinox) is contracted as a matrix through a free reshape (XLA would
  otherwise copy a transposed conv kernel for each product), any other layout
  with ``lax.dot_general`` on its own axes.
* :class:`ConvOperator`: the convolution itself on one input of a given shape,
  ``B = A``, ``u`` input-shaped, ``A^T`` by ``jax.linear_transpose`` (Sedghi,
  Gupta & Long 2019, https://arxiv.org/abs/1805.10408).

Both are hashable NamedTuples, static arguments of the jitted iteration.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from snjax._conv import ConvSpec, Geometry, apply_conv, geometry, output_struct, to_flax_layout
from snjax._layout import ResolvedLayout


def _prod(shape) -> int:
  return int(np.prod(shape, dtype=np.int64))


def compute_dtype(dtype) -> jnp.dtype:
  """float32 for half-precision weights, the weight's dtype when wider."""
  return jnp.promote_types(dtype, jnp.float32)


class MatrixOperator(NamedTuple):
  """A kernel read as the stacked matrix ``M`` (``batch + (fan_in, fan_out)``) through its layout.

  Attributes:
    layout: the kernel's resolved layout.
    kind: ``'io'`` / ``'oi'``: contracted on a free reshape to ``(batch...,
      fan_in, fan_out)`` / ``(batch..., fan_out, fan_in)``; ``'nd'``: on the
      kernel's own axes (its input and output axes interleave).
    batch_shape: the stacked axes' sizes (one matrix, u and sigma per index).
    in_shape: the sizes of the input axes.
    out_shape: the sizes of the output axes.
  """

  layout: ResolvedLayout
  kind: str
  batch_shape: tuple[int, ...]
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]

  @property
  def u_shape(self) -> tuple[int, ...]:
    """The shape of the state's u: ``batch_shape + (fan_out,)``."""
    return self.batch_shape + (_prod(self.out_shape),)

  @property
  def domain(self) -> tuple[int, ...]:
    """The shape u takes in the products (the kernel's own output axes for ``'nd'``)."""
    return self.batch_shape + (self.out_shape if self.kind == 'nd' else (_prod(self.out_shape),))

  @property
  def codomain(self) -> tuple[int, ...]:
    """The shape of ``M u``."""
    return self.batch_shape + (self.in_shape if self.kind == 'nd' else (_prod(self.in_shape),))

  def operand(self, kernel: jax.Array) -> jax.Array:
    """The kernel as the products read it: a free reshape to a matrix, or the kernel itself."""
    if self.kind == 'io':
      return kernel.reshape(self.batch_shape + (_prod(self.in_shape), _prod(self.out_shape)))
    if self.kind == 'oi':
      return kernel.reshape(self.batch_shape + (_prod(self.out_shape), _prod(self.in_shape)))
    return kernel

  def _contract(self, operand, x, side: str):
    nb = len(self.batch_shape)
    batch = (tuple(range(nb)), tuple(range(nb)))
    if self.kind == 'nd':
      axes = self.layout.out_axes if side == 'out' else self.layout.in_axes
      x_axes = tuple(range(nb, nb + len(axes)))
      return lax.dot_general(operand, x, ((axes, x_axes), (self.layout.batch_axes, tuple(range(nb)))))
    # The contracted matrix axis: the last one when x lives on that side, else the first.
    if (self.kind == 'io') == (side == 'out'):
      return lax.dot_general(operand, x, (((nb + 1,), (nb,)), batch))
    return lax.dot_general(x, operand, (((nb,), (nb,)), batch))

  def forward(self, operand: jax.Array, u: jax.Array) -> jax.Array:
    """``M u``: a fan-out side vector to the fan-in side."""
    return self._contract(operand, u, 'out')

  def transpose(self, operand: jax.Array, v: jax.Array) -> jax.Array:
    """``M^T v``: a fan-in side vector to the fan-out side."""
    return self._contract(operand, v, 'in')

  def per_matrix(self, x: jax.Array, kernel_ndim: int) -> jax.Array:
    """A value per stacked matrix (shape ``batch_shape``) reshaped to broadcast against the kernel."""
    shape = [1] * kernel_ndim
    for a, n in zip(self.layout.batch_axes, self.batch_shape, strict=True):
      shape[a] = n
    return jnp.reshape(x, shape)

  def scale(self, kernel: jax.Array, factor: jax.Array) -> jax.Array:
    """``kernel * factor`` with one factor per stacked matrix (shape ``batch_shape``)."""
    return kernel * self.per_matrix(factor, kernel.ndim)


def matrix_operator(kernel_shape: tuple[int, ...], layout: ResolvedLayout) -> MatrixOperator:
  """The :class:`MatrixOperator` of a kernel of ``kernel_shape`` read through ``layout``."""
  nb = len(layout.batch_axes)
  batch_shape = tuple(int(kernel_shape[a]) for a in layout.batch_axes)
  in_shape = tuple(int(kernel_shape[a]) for a in layout.in_axes)
  out_shape = tuple(int(kernel_shape[a]) for a in layout.out_axes)
  ins, outs = layout.in_axes, layout.out_axes

  def contiguous(axes):
    return axes == tuple(range(axes[0], axes[0] + len(axes)))

  if layout.batch_axes == tuple(range(nb)) and contiguous(ins) and contiguous(outs):
    kind = 'io' if ins[0] < outs[0] else 'oi'
  else:
    kind = 'nd'
  return MatrixOperator(layout, kind, batch_shape, in_shape, out_shape)


class ConvOperator(NamedTuple):
  """The convolution ``A`` of a kernel on one input of ``geo.input_shape`` (no batch axis).

  Attributes:
    geo: the checked geometry (input shape, strides, padding, dilations, groups).
    torch_layout: the kernel is in PyTorch / Equinox layout ``(out, in/groups,
      *spatial)`` (transposed to Flax's ``(*spatial, in/groups, out)`` for the
      products).
    out_shape: the convolution's output shape (spatial + channels).
  """

  geo: Geometry
  torch_layout: bool
  out_shape: tuple[int, ...]

  batch_shape = ()

  @property
  def u_shape(self) -> tuple[int, ...]:
    """The shape of the state's u: the input shape."""
    return self.geo.input_shape

  @property
  def domain(self) -> tuple[int, ...]:
    return self.geo.input_shape

  @property
  def codomain(self) -> tuple[int, ...]:
    return self.out_shape

  def operand(self, kernel: jax.Array) -> jax.Array:
    """The kernel in Flax layout."""
    return to_flax_layout(kernel, self.torch_layout)

  def forward(self, operand: jax.Array, u: jax.Array) -> jax.Array:
    """``A u``: the convolution of the input-shaped ``u``."""
    return apply_conv(operand, u, self.geo)

  def transpose(self, operand: jax.Array, v: jax.Array) -> jax.Array:
    """``A^T v``, by ``jax.linear_transpose`` of the convolution."""
    fn = jax.linear_transpose(lambda x: apply_conv(operand, x, self.geo), jax.ShapeDtypeStruct(self.domain, v.dtype))
    return fn(v)[0]

  def per_matrix(self, x: jax.Array, kernel_ndim: int) -> jax.Array:
    """The one value of the convolution (a scalar), as it is."""
    del kernel_ndim
    return x

  def scale(self, kernel: jax.Array, factor: jax.Array) -> jax.Array:
    """``kernel * factor`` (one factor: sigma is a scalar)."""
    return kernel * factor


def conv_operator(kernel_shape: tuple[int, ...], spec: ConvSpec, *, torch_layout: bool = False, where: str = 'conv'):
  """The :class:`ConvOperator` of a kernel of ``kernel_shape`` on the convolution ``spec`` describes.

  Raises:
    ValueError: a spec that does not fit the kernel (the message starts with ``where``).
  """
  shape = tuple(int(s) for s in kernel_shape)
  if torch_layout:
    shape = shape[2:] + (shape[1], shape[0])
  geo = geometry(shape, spec, where)
  return ConvOperator(geo, bool(torch_layout), tuple(output_struct(shape, geo).shape))


Operator = MatrixOperator | ConvOperator
