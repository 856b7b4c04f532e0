"""What the Flax wrappers (:mod:`snjax.linen`, :mod:`snjax.nnx`) share.

A wrapper normalizes the weights of *one wrapped layer*. This module decides,
from the layer alone, (1) which of its parameters are matrices to normalize,
(2) how each is read as a matrix (its :class:`snjax.KernelLayout`), and (3)
whether the *fast path* applies: for a layer that is linear in its kernel
``W`` and affine in its bias ``b``,

  layer(x; s W, b) = s * layer(x; W, b / s),    s = target_norm / sigma(W),

so the layer can run on the raw kernel and have its output scaled, instead of
materializing ``W / sigma`` (one pass over W fewer; sigma is a scalar). It
pays when the layer's output is smaller than its kernel (a wide layer on a
small batch); otherwise scaling the output, forward and backward, costs more
than scaling the kernel, and by default the kernel is scaled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snjax import _leaf
from snjax._layout import KernelLayout, LayoutOption, ResolvedLayout, resolve_layout
from snjax._operators import ConvOperator
from snjax._selection import BIAS, is_array, path_str


def _linear_layer_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
  """(linen types, nnx types) that are linear in ``kernel`` and affine in ``bias``."""
  import flax.linen as nn
  from flax import nnx

  linen_types = (nn.Dense, nn.DenseGeneral, nn.Conv, nn.ConvTranspose, nn.ConvLocal, nn.Einsum)
  nnx_types = (nnx.Linear, nnx.LinearGeneral, nnx.Conv, nnx.ConvTranspose, nnx.Einsum)
  return linen_types, nnx_types


def matrix_keys(
  flat: Sequence[tuple[tuple[str, ...], Any]], *, error_on_non_matrix: bool, layer_name: str
) -> list[tuple[str, ...]]:
  """The parameters of a wrapped layer that are normalized.

  Every floating-point parameter with ``ndim >= 2`` except biases (flax.linen's
  SpectralNorm also normalizes a 2-D+ bias, e.g. ConvLocal's; a bias is not a
  linear map of the input). Embedding tables are included: the user chose to
  wrap this layer. Higher-rank kernels are read as matrices through their layout.

  Args:
    flat: ``(keys, leaf)`` pairs of the layer's params.
    error_on_non_matrix: as in flax: raise on a parameter with ``ndim > 2``.
    layer_name: for messages.

  Returns:
    The selected key tuples, in order.

  Raises:
    ValueError: ``error_on_non_matrix`` and a parameter has ``ndim > 2``, or
      ``error_on_non_matrix`` and the layer has no 2-D+ parameter at all.
  """
  keys = []
  for k, leaf in flat:
    if not is_array(leaf) or leaf.ndim < 2 or not jnp.issubdtype(leaf.dtype, jnp.floating):
      continue
    if BIAS.match(k[-1]):  # a bias (ConvLocal's is 3-D) is not a linear map of the input
      continue
    if leaf.ndim > 2 and error_on_non_matrix:
      # flax's own sentence first, so that code matching flax.linen.SpectralNorm's error keeps working.
      raise ValueError(
        f'Input is {leaf.ndim}D but error_on_non_matrix is True. SpectralNorm({layer_name}): parameter '
        f'{path_str(k)!r} has shape {tuple(leaf.shape)}; pass error_on_non_matrix=False to read it as a '
        '(fan_in, fan_out) matrix through its layout.'
      )
    keys.append(k)
  if not keys and error_on_non_matrix:
    shapes = {path_str(k): tuple(getattr(leaf, 'shape', ())) for k, leaf in flat}
    raise ValueError(
      f'SpectralNorm({layer_name}): the wrapped layer has no floating parameter with ndim >= 2 '
      f'(its params: {shapes}); spectral normalization needs a kernel matrix. Wrap a layer with a '
      'kernel (Dense, Conv, ...).'
    )
  return keys


def einsum_layout(einsum_str: str | None, kernel_ndim: int) -> KernelLayout | None:
  """The kernel layout an einsum equation implies, or ``None`` if it cannot tell.

  Kernel axes that appear in the output only are output axes; those in the
  input and the output are batch axes (one matrix per index); the rest are
  contracted with the input (input axes).

  Args:
    einsum_str: e.g. ``'bti,ihd->bthd'`` (input first, kernel second).
    kernel_ndim: the kernel's rank.

  Returns:
    A :class:`snjax.KernelLayout` or ``None`` (no equation, an ellipsis in the
    kernel term, or no input/output axis left).
  """
  if not einsum_str:
    return None
  s = einsum_str.replace(' ', '')
  if s.count('->') != 1 or s.count(',') != 1:
    return None
  lhs, out = s.split('->')
  x, k = lhs.split(',')
  if '.' in k or len(k) != kernel_ndim:
    return None
  x_letters, out_letters = set(x) - {'.'}, set(out) - {'.'}
  out_axes = tuple(i for i, c in enumerate(k) if c in out_letters and c not in x_letters)
  batch_axes = tuple(i for i, c in enumerate(k) if c in out_letters and c in x_letters)
  if not out_axes or len(out_axes) + len(batch_axes) >= kernel_ndim:
    return None
  return KernelLayout(out_axes, batch_axes)


def auto_layout(layer: Any, keys: tuple[str, ...], leaf: Any, einsum_str: str | None = None) -> KernelLayout:
  """The natural layout of a known Flax layer's kernel; output axis last otherwise.

  * ``DenseGeneral`` / ``nnx.LinearGeneral``: the ``features`` axes are the
    output axes and the ``batch_dims`` axes are batch axes (flax.linen's
    SpectralNorm reads only the last axis as the output).
  * ``ConvTranspose(transpose_kernel=True)``: the kernel is ``(*spatial, out, in)``.
  * ``Einsum``: from the equation (:func:`einsum_layout`).
  * Everything else (Dense, Conv, ConvTranspose, a wrapped block): the last
    axis, exactly like flax.linen.SpectralNorm's ``reshape(-1, shape[-1])``.
  """
  import flax.linen as nn
  from flax import nnx

  default = KernelLayout((-1,))
  if len(keys) != 1 or keys[0] != 'kernel':
    return default
  if isinstance(layer, nn.DenseGeneral):
    feats = layer.features if isinstance(layer.features, Sequence) else (layer.features,)
    dims = layer.batch_dims if isinstance(layer.batch_dims, Sequence) else (layer.batch_dims,)
    n_out = len(tuple(feats))
    return KernelLayout(tuple(range(-n_out, 0)), tuple(range(len(tuple(dims)))))
  if isinstance(layer, nnx.LinearGeneral):
    n_out = len(layer.out_features)
    return KernelLayout(tuple(range(-n_out, 0)), tuple(range(len(layer.batch_axis))))
  if isinstance(layer, (nn.ConvTranspose, nnx.ConvTranspose)) and layer.transpose_kernel:
    return KernelLayout((-2,))
  if isinstance(layer, (nn.Einsum, nnx.Einsum)):
    return einsum_layout(einsum_str or layer.einsum_str, leaf.ndim) or default
  return default


def layer_layout(
  layer: Any, option: LayoutOption, keys: tuple[str, ...], leaf: Any, einsum_str: str | None = None
) -> ResolvedLayout:
  """Resolves the wrapper's ``layout`` option (``None``: :func:`auto_layout`) for one parameter."""
  spec = auto_layout(layer, keys, leaf, einsum_str) if option is None else option
  return resolve_layout(spec, path_str(keys), leaf)


def fast_path_applies(
  layer: Any,
  all_keys: Sequence[tuple[str, ...]],
  selected: Sequence[tuple[str, ...]],
  layouts: Sequence[ResolvedLayout],
) -> bool:
  """Whether the output-scaling fast path is exact for this layer.

  True when the layer is exactly one of the linear Flax layers (not a
  subclass, which could override ``__call__``), has no custom dot-general or
  convolution (a quantized product is not linear in the kernel), its params
  are ``kernel`` (+ ``bias``), only the kernel is normalized, and the kernel has
  a single sigma (no batch axes).
  """
  linen_types, nnx_types = _linear_layer_types()
  if type(layer) not in linen_types + nnx_types:
    return False
  from jax import lax

  plain = (None, lax.dot_general, lax.conv_general_dilated, jnp.einsum)
  for attr in ('dot_general', 'dot_general_cls', 'conv_general_dilated', 'conv_general_dilated_cls', 'einsum_op'):
    if getattr(layer, attr, None) not in plain:
      return False
  if list(selected) != [('kernel',)] or not set(all_keys) <= {('kernel',), ('bias',)}:
    return False
  return not layouts[0].batch_axes


def output_is_smaller(input_shape: tuple[int, ...] | None, kernel: Any, leaf: _leaf.Leaf) -> bool:
  """Whether the layer's output has fewer elements than ``kernel`` (the fast path then moves less data).

  The output's size is estimated from the input's: its rows (all axes but the
  last) times the kernel's fan-out for a matrix, the input's examples times
  the output shape for a convolution. Unknown input: ``True``.
  """
  if input_shape is None:
    return True
  op = leaf.operator
  if isinstance(op, ConvOperator):
    n_out = _prod(input_shape) // max(_prod(op.u_shape), 1) * _prod(op.out_shape)
  else:
    n_out = _prod(input_shape[:-1]) * _prod(op.out_shape)
  return n_out < _prod(kernel.shape)


def _prod(shape) -> int:
  return int(np.prod(shape, dtype=np.int64))


def stored_u_shape(leaf: _leaf.Leaf) -> tuple[int, ...]:
  """The shape a wrapper stores u in: flax's ``batch + (1, fan_out)`` for a matrix, the input shape for a conv."""
  if isinstance(leaf.operator, ConvOperator):
    return leaf.u_shape
  return leaf.u_shape[:-1] + (1, leaf.u_shape[-1])


def normalize_layer(
  layer: Any,
  values: dict[tuple, Any],
  leaves: dict[tuple, _leaf.Leaf],
  layouts: Sequence[ResolvedLayout],
  sigma_of: Callable[[tuple, Any, _leaf.Leaf], Any],
  *,
  target_norm: float,
  dtype: Any,
  fast_path: bool | None,
  layer_name: str,
  input_shape: tuple[int, ...] | None = None,
) -> tuple[dict[tuple, Any], Any]:
  """The params a wrapped layer runs on, and the output scale of the fast path (or ``None``).

  Each selected kernel ``W`` becomes ``target_norm * W / sigma`` (``sigma_of``
  reads or updates the wrapper's own state), unless the fast path applies:
  then the layer runs on the raw kernel, its bias divided by the factor, and
  the caller multiplies the output by the returned scale.

  Args:
    layer: the wrapped layer.
    values: ``{keys: value}`` of all its params.
    leaves: ``{keys: Leaf}`` of the selected kernels, in order.
    layouts: their resolved layouts (the fast path needs one matrix per kernel).
    sigma_of: ``(keys, kernel, leaf) -> sigma`` (differentiable in training).
    target_norm: the spectral norm of each normalized kernel.
    dtype: if set, the kernels the layer sees are cast to it.
    fast_path: ``None`` (when exact and the layer's output is smaller than its
      kernel, :func:`output_is_smaller`), ``False`` (never), ``True`` (required).
    layer_name: for messages.
    input_shape: the shape of the layer's input, for ``fast_path=None``.

  Returns:
    ``(new_values, scale)``: the params the layer runs on, and the factor to
    multiply its output by (``None`` off the fast path).

  Raises:
    ValueError: ``fast_path=True`` where the fast path does not apply.
  """
  fast = fast_path is not False and fast_path_applies(layer, list(values), list(leaves), layouts)
  if fast_path and not fast:
    raise ValueError(
      f'SpectralNorm({layer_name}): fast_path=True but the fast path does not apply to a '
      f'{type(layer).__name__} with params {[path_str(k) for k in values]} '
      '(it needs a plain Dense/DenseGeneral/Conv/ConvTranspose/ConvLocal/Einsum with one kernel and no '
      'batch axes); pass fast_path=None.'
    )
  if fast and fast_path is None:
    ((keys, leaf),) = leaves.items()
    fast = output_is_smaller(input_shape, values[keys], leaf)
  new, scale = dict(values), None
  for keys, leaf in leaves.items():
    kernel = values[keys]
    factor = target_norm / sigma_of(keys, kernel, leaf)
    if fast:
      scale, new[keys] = factor, kernel
    else:
      new[keys] = _leaf.scale(kernel, factor, leaf)
    if dtype is not None:
      new[keys] = new[keys].astype(dtype)
  bias = new.get(('bias',))
  if fast and bias is not None:
    new[('bias',)] = (bias.astype(scale.dtype) / scale).astype(dtype or bias.dtype)
  return new, scale


def scale_output(y: Any, scale: Any) -> Any:
  """The layer's output times the fast path's scale (every array of it), or ``y`` when there is none."""
  if scale is None:
    return y
  return jax.tree_util.tree_map(lambda t: t * scale.astype(t.dtype), y)
