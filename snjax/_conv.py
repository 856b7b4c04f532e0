"""The operator norm of a convolution, by power iteration on the convolution itself.

Every peer library normalizes a convolution by the spectral norm of its kernel
reshaped to a ``(k^d c_in) x c_out`` matrix. That is not the Lipschitz constant
of the layer: the convolution is the linear map ``A: R^{n_1 x .. x n_d x c_in}
-> R^{m_1 x .. x m_d x c_out}`` and its norm ``||A||_2`` is typically 1.2x to
2.5x the reshaped value (Sedghi, Gupta & Long, ICLR 2019, "The Singular Values
of Convolutional Layers", https://arxiv.org/abs/1805.10408).

Here power iteration runs on A and its transpose A^T (``jax.linear_transpose``
of ``lax.conv_general_dilated``), with the layer's real strides, padding,
dilations, feature groups and input size. The u "vector" is an input-shaped
array. One step is

  v = A u / ||A u||,    w = A^T v,    sigma = ||w||,    u <- w / sigma,

and sigma = ||A^T v|| with a unit v is a lower bound on ||A||, exactly as in
the matrix mode (:mod:`snjax.power`): a layer divided by it is never
over-normalized. u and v are constants for differentiation; sigma is
differentiated through A^T v.

Conventions are Flax's (``flax.linen.Conv``): kernel ``(*spatial, in/groups,
out)``, inputs channels-last, ``input_shape`` = spatial dims + channels, no
batch axis; padding ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, ``'CIRCULAR'``,
``'REFLECT'``, ``'CAUSAL'`` (1D), an int, or a sequence of ints / ``(low,
high)`` pairs, applied exactly as ``flax.linen.Conv`` applies them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Padding = str | int | Sequence[int | tuple[int, int]]

_STRING_PADDINGS = ('SAME', 'SAME_LOWER', 'VALID', 'CIRCULAR', 'REFLECT', 'CAUSAL')


class ConvSpec(NamedTuple):
  """What the kernel alone does not say about a convolution: its input and geometry.

  Attributes:
    input_shape: spatial dims + input channels, no batch axis, e.g. ``(32, 32, 3)``.
    strides: an int or one int per spatial dim (Flax ``strides``).
    padding: as ``flax.linen.Conv`` accepts it: ``'SAME'``, ``'SAME_LOWER'``,
      ``'VALID'``, ``'CIRCULAR'``, ``'REFLECT'``, ``'CAUSAL'`` (1D only), an int,
      or a sequence of ints / ``(low, high)`` pairs, one per spatial dim.
    rhs_dilation: kernel dilation, an int or one per spatial dim (Flax
      ``kernel_dilation``).
    lhs_dilation: input dilation, an int or one per spatial dim (Flax
      ``input_dilation``).
    feature_group_count: feature groups (Flax ``feature_group_count``; the
      kernel is ``(*spatial, in/groups, out)``).
  """

  input_shape: tuple[int, ...]
  strides: int | tuple[int, ...] = 1
  padding: Padding = 'SAME'
  rhs_dilation: int | tuple[int, ...] = 1
  lhs_dilation: int | tuple[int, ...] = 1
  feature_group_count: int = 1


class Geometry(NamedTuple):
  """A :class:`ConvSpec` checked against a kernel, every field explicit."""

  input_shape: tuple[int, ...]
  kernel_size: tuple[int, ...]
  strides: tuple[int, ...]
  padding: str | tuple[tuple[int, int], ...]
  rhs_dilation: tuple[int, ...]
  lhs_dilation: tuple[int, ...]
  groups: int


def _per_dim(value, d: int, name: str, where: str) -> tuple[int, ...]:
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    out = (int(value),) * d
  elif isinstance(value, Sequence) and len(value) == d and all(isinstance(x, (int, np.integer)) for x in value):
    out = tuple(int(x) for x in value)
  else:
    raise ValueError(f'{where}: {name} must be an int or a sequence of {d} ints (one per spatial dim), got {value!r}.')
  if any(x < 1 for x in out):
    raise ValueError(f'{where}: {name} must be >= 1, got {value!r}.')
  return out


def _canonical_padding(padding, d: int, where: str):
  if isinstance(padding, str):
    p = padding.upper()
    if p not in _STRING_PADDINGS:
      raise ValueError(f'{where}: unknown padding {padding!r}; expected one of {_STRING_PADDINGS}, an int or pairs.')
    if p == 'CAUSAL' and d != 1:
      raise ValueError(f"{where}: padding 'CAUSAL' is only defined for 1D convolutions (as in flax.linen.Conv).")
    return p
  if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
    return ((int(padding), int(padding)),) * d
  if isinstance(padding, Sequence) and len(padding) == d:
    pads = []
    for p in padding:
      if isinstance(p, (int, np.integer)):
        pads.append((int(p), int(p)))
      elif isinstance(p, Sequence) and len(p) == 2 and all(isinstance(x, (int, np.integer)) for x in p):
        pads.append((int(p[0]), int(p[1])))
      else:
        break
    if len(pads) == d:
      return tuple(pads)
  raise ValueError(
    f'{where}: invalid padding {padding!r}; expected a string, an int, or a sequence of {d} ints or (low, high) pairs.'
  )


def geometry(kernel_shape: tuple[int, ...], spec: ConvSpec, where: str = 'conv') -> Geometry:
  """Checks ``spec`` against a Flax-layout kernel shape and makes every field explicit."""
  if not isinstance(spec, ConvSpec):
    raise TypeError(f'{where}: expected a snjax.ConvSpec, got {type(spec).__name__}.')
  input_shape = tuple(int(x) for x in spec.input_shape)
  d = len(kernel_shape) - 2
  if d < 1:
    raise ValueError(
      f'{where}: a conv kernel needs ndim >= 3 (*spatial, in/groups, out), got shape {tuple(kernel_shape)}.'
    )
  if len(input_shape) != d + 1 or any(x < 1 for x in input_shape):
    raise ValueError(
      f'{where}: input_shape {spec.input_shape!r} must be {d} spatial dims + channels (no batch axis) '
      f'for a kernel of shape {tuple(kernel_shape)}.'
    )
  groups = spec.feature_group_count
  if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
    raise ValueError(f'{where}: feature_group_count must be an int >= 1, got {groups!r}.')
  groups = int(groups)
  c_in, c_out = kernel_shape[-2], kernel_shape[-1]
  if c_in * groups != input_shape[-1] or c_out % groups:
    raise ValueError(
      f'{where}: kernel of shape {tuple(kernel_shape)} with feature_group_count={groups} expects '
      f'{c_in * groups} input channels and an output count divisible by {groups}; input_shape {input_shape} '
      f'has {input_shape[-1]} channels.'
    )
  geo = Geometry(
    input_shape=input_shape,
    kernel_size=tuple(int(k) for k in kernel_shape[:d]),
    strides=_per_dim(spec.strides, d, 'strides', where),
    padding=_canonical_padding(spec.padding, d, where),
    rhs_dilation=_per_dim(spec.rhs_dilation, d, 'rhs_dilation', where),
    lhs_dilation=_per_dim(spec.lhs_dilation, d, 'lhs_dilation', where),
    groups=groups,
  )
  out = output_struct(kernel_shape, geo)
  if any(s < 1 for s in out.shape):
    raise ValueError(f'{where}: the convolution of an input of shape {input_shape} is empty (output {out.shape}).')
  return geo


def apply_conv(kernel: jax.Array, x: jax.Array, geo: Geometry) -> jax.Array:
  """The convolution of one input (no batch axis), exactly as ``flax.linen.Conv`` computes it."""
  d = len(geo.kernel_size)
  # A reshape (not x[None] / y[0]) adds and drops the batch axis: its transpose is a reshape too, so A^T has no
  # reduction over the size-1 axis.
  x = x.reshape((1,) + x.shape)
  padding = geo.padding
  if padding in ('CIRCULAR', 'REFLECT'):
    dilated = [(k - 1) * r + 1 for k, r in zip(geo.kernel_size, geo.rhs_dilation, strict=False)]
    pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in dilated] + [(0, 0)]
    x = jnp.pad(x, pads, mode='wrap' if padding == 'CIRCULAR' else 'reflect')
    padding = 'VALID'
  elif padding == 'CAUSAL':
    x = jnp.pad(x, [(0, 0), (geo.rhs_dilation[0] * (geo.kernel_size[0] - 1), 0), (0, 0)])
    padding = 'VALID'
  elif not isinstance(padding, str):
    padding = list(padding)
  spatial = tuple(range(1, d + 1))
  dn = lax.ConvDimensionNumbers(
    lhs_spec=(0, d + 1) + spatial, rhs_spec=(d + 1, d) + tuple(range(d)), out_spec=(0, d + 1) + spatial
  )
  y = lax.conv_general_dilated(
    x,
    kernel,
    geo.strides,
    padding,
    lhs_dilation=geo.lhs_dilation,
    rhs_dilation=geo.rhs_dilation,
    dimension_numbers=dn,
    feature_group_count=geo.groups,
    precision=lax.Precision.HIGHEST,
  )
  return y.reshape(y.shape[1:])


def conv_output_shape(kernel_shape: tuple[int, ...], spec: ConvSpec) -> tuple[int, ...]:
  """The output shape (spatial dims + output channels) of the convolution ``spec`` describes."""
  geo = geometry(tuple(kernel_shape), spec)
  return tuple(output_struct(tuple(kernel_shape), geo).shape)


def output_struct(kernel_shape, geo: Geometry):
  k = jax.ShapeDtypeStruct(tuple(kernel_shape), jnp.float32)
  x = jax.ShapeDtypeStruct(geo.input_shape, jnp.float32)
  return jax.eval_shape(lambda kk, xx: apply_conv(kk, xx, geo), k, x)


def conv_apply(kernel: jax.Array, x: jax.Array, spec: ConvSpec) -> jax.Array:
  """Applies the convolution ``spec`` describes to one input ``x`` of shape ``spec.input_shape``.

  The same map as ``flax.linen.Conv`` (no bias) on one example; for tests and for
  building dense references.
  """
  return apply_conv(kernel, x, geometry(tuple(kernel.shape), spec))


def to_flax_layout(kernel: jax.Array, torch_layout: bool) -> jax.Array:
  if not torch_layout:
    return kernel
  # PyTorch / Equinox (out, in/groups, *spatial) -> Flax (*spatial, in/groups, out).
  return jnp.transpose(kernel, tuple(range(2, kernel.ndim)) + (1, 0))


def random_unit_input(key: jax.Array, input_shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """A random unit-norm array of ``input_shape``: a starting u for :func:`snjax.power_iteration` with a ``spec``."""
  u = jax.random.normal(key, tuple(input_shape), dtype)
  return u / jnp.linalg.norm(u.ravel())


ConvOption = Mapping[str, ConvSpec] | None
"""The ``conv`` option of :func:`snjax.sn_init` / :func:`snjax.sn_apply`: ``{path regex: ConvSpec}``.

The first regex found (``re.search``) in a selected leaf's path puts that leaf
in conv mode; other leaves keep the matrix mode."""


def resolve_conv_spec(conv: ConvOption, path: str) -> ConvSpec | None:
  """The :class:`ConvSpec` of a leaf under the ``conv`` option, or ``None`` (matrix mode)."""
  if conv is None:
    return None
  if not isinstance(conv, Mapping):
    raise TypeError(f'conv must be a mapping {{path regex: snjax.ConvSpec}}, got {type(conv).__name__}.')
  for pattern, spec in conv.items():
    if re.search(pattern, path):
      if not isinstance(spec, ConvSpec):
        raise TypeError(f'conv[{pattern!r}] (matching {path}) must be a snjax.ConvSpec, got {type(spec).__name__}.')
      return spec
  return None


def conv_layout_is_torch(path: str, kernel_ndim: int, out_axes: tuple[int, ...], batch_axes: tuple[int, ...]) -> bool:
  """Whether a conv-mode leaf is in PyTorch layout (output axis 0) or Flax layout (output axis last).

  Raises:
    ValueError: any other layout (a conv kernel has one output axis, no batch axes).
  """
  if not batch_axes and out_axes == (kernel_ndim - 1,):
    return False
  if not batch_axes and out_axes == (0,):
    return True
  raise ValueError(
    f'{path}: conv mode needs a conv kernel with its output axis last (Flax, Haiku) or first (PyTorch, '
    f'Equinox) and no batch axes; the layout gives output axes {out_axes} and batch axes {batch_axes}.'
  )


def conv_specs(model: Any, *args: Any, **kwargs: Any) -> dict[str, ConvSpec]:
  """Reads the :class:`ConvSpec` of every ``flax.linen.Conv`` in a model from one sample call.

  Runs ``model.init`` abstractly (``jax.eval_shape``: no FLOPs, no memory) on
  the sample inputs and records, for each ``nn.Conv``, its input shape (spatial
  + channels) and its strides, padding, dilations and feature groups.

  Args:
    model: a ``flax.linen.Module``.
    *args: sample inputs, as for ``model.init(key, *args)`` (the batch size
      does not matter).
    **kwargs: keyword arguments of the call.

  Returns:
    ``{path regex: ConvSpec}``, ready for the ``conv`` option of
    :func:`snjax.sn_init` / :func:`snjax.sn_apply` and for
    :func:`snjax.lipschitz.lipschitz_report`; the regex matches the kernel's path in
    ``variables['params']`` (or in ``variables``).

  Raises:
    ValueError: one ``nn.Conv`` called on inputs of different shapes.
  """
  import flax.linen as nn

  found: dict[str, ConvSpec] = {}

  def interceptor(next_fun, call_args, call_kwargs, context):
    module = context.module
    if type(module) is nn.Conv and context.method_name == '__call__' and call_args:
      ks = module.kernel_size
      ks = (ks,) if isinstance(ks, int) else tuple(ks)
      x = call_args[0]
      spec = ConvSpec(
        input_shape=tuple(int(s) for s in x.shape[-(len(ks) + 1) :]),
        strides=1 if module.strides is None else module.strides,
        padding=module.padding,
        rhs_dilation=1 if module.kernel_dilation is None else module.kernel_dilation,
        lhs_dilation=1 if module.input_dilation is None else module.input_dilation,
        feature_group_count=module.feature_group_count,
      )
      path = '/'.join(str(p) for p in module.path) + '/kernel'
      pattern = '(^|/)' + re.escape(path) + '$'
      if pattern in found and found[pattern] != spec:
        raise ValueError(f'{path}: the convolution is called on inputs of different shapes; pass conv specs by hand.')
      found[pattern] = spec
    return next_fun(*call_args, **call_kwargs)

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
  return found
