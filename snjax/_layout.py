"""Kernel layouts: which axes of a weight are its output, input and stacked axes.

A spectral norm is the norm of a *matrix*. A kernel of any rank is read as a
(fan-in x fan-out) matrix, possibly stacked along leading "batch" axes (for
example the layer axis that ``nn.scan`` adds). The layout says which axes are
which, so that no library's convention is silently assumed:

* Flax and Haiku keep the output axis last: ``Dense`` ``(in, out)``, ``Conv``
  ``(*spatial, in/groups, out)``, Flax ``ConvTranspose`` ``(*spatial, in, out)``.
* PyTorch and Equinox keep it first: ``Linear`` ``(out, in)``, ``Conv``
  ``(out, in/groups, *spatial)``; a PyTorch ``ConvTranspose`` weight
  ``(in, out/groups, *spatial)`` has it second.
* ``DenseGeneral`` kernels such as an attention projection ``(in, heads, dim)``
  have several output axes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Union


class KernelLayout(NamedTuple):
  """Which axes of a kernel form the output side of its matrix.

  Attributes:
    out_axes: the axes whose product is the fan-out (negative indices count
      from the end). Every axis that is neither an output nor a batch axis is
      an input axis.
    batch_axes: stacked axes (e.g. the layer axis of ``nn.scan`` params): one
      independent matrix, u vector and sigma per index.
  """

  out_axes: tuple[int, ...] = (-1,)
  batch_axes: tuple[int, ...] = ()


LayoutSpec = Union[str, int, Sequence[int], KernelLayout]  # noqa: UP007 (a runtime alias)
"""A layout given as a preset name, one output axis, several, or in full."""

PRESETS: dict[str, KernelLayout] = {
  'flax': KernelLayout((-1,)),
  'haiku': KernelLayout((-1,)),
  'torch': KernelLayout((0,)),
  'equinox': KernelLayout((0,)),
  'torch_conv_transpose': KernelLayout((1,)),
}

LayoutOption = Union[  # noqa: UP007
  LayoutSpec,
  Mapping[str, LayoutSpec],
  Callable[[str, Any], LayoutSpec],
  None,
]
"""The ``layout`` option of :func:`snjax.sn_init` / :func:`snjax.sn_apply`:

* ``None`` or ``'flax'``/``'haiku'``: output axis last (the default);
* ``'torch'``/``'equinox'``: output axis first; ``'torch_conv_transpose'``: second;
* an ``int``, a tuple of ints, or a :class:`KernelLayout`;
* a mapping ``{path regex: spec}``: the first regex found (``re.search``) in the
  leaf's path wins, unmatched leaves take the default;
* a callable ``(path, leaf) -> spec``.
"""


class ResolvedLayout(NamedTuple):
  """Non-negative axis indices of one kernel, sorted."""

  out_axes: tuple[int, ...]
  in_axes: tuple[int, ...]
  batch_axes: tuple[int, ...]


def _as_kernel_layout(spec: LayoutSpec, path: str) -> KernelLayout:
  if isinstance(spec, KernelLayout):
    return spec
  if isinstance(spec, str):
    if spec not in PRESETS:
      raise ValueError(
        f'{path}: unknown layout {spec!r}; expected one of {sorted(PRESETS)}, '
        'an int, a tuple of ints or a snjax.KernelLayout.'
      )
    return PRESETS[spec]
  if isinstance(spec, int):
    return KernelLayout((spec,))
  if isinstance(spec, Sequence) and all(isinstance(a, int) for a in spec):
    return KernelLayout(tuple(spec))
  raise TypeError(
    f'{path}: a layout must be a preset name, an int, a tuple of ints or a snjax.KernelLayout, got {spec!r}.'
  )


def resolve_layout(layout: LayoutOption, path: str, leaf: Any) -> ResolvedLayout:
  """Resolves the ``layout`` option for one leaf into concrete axes.

  Args:
    layout: the ``layout`` option (see :data:`LayoutOption`).
    path: the leaf's path, ``'/'``-separated.
    leaf: the array (only its ``ndim`` is used).

  Returns:
    A :class:`ResolvedLayout` with non-negative, sorted axes.

  Raises:
    ValueError: if an axis is out of range, repeated, or no input or output
      axis is left; the message names the path.
  """
  if layout is None:
    spec: LayoutSpec = 'flax'
  elif isinstance(layout, Mapping):
    spec = 'flax'
    for pattern, candidate in layout.items():
      if re.search(pattern, path):
        spec = candidate
        break
  elif callable(layout) and not isinstance(layout, KernelLayout):
    spec = layout(path, leaf)
  else:
    spec = layout  # type: ignore[assignment]
  kl = _as_kernel_layout(spec, path)
  ndim = leaf.ndim

  def norm(axes: tuple[int, ...], what: str) -> tuple[int, ...]:
    out = []
    for a in axes:
      if not -ndim <= a < ndim:
        raise ValueError(f'{path}: {what} axis {a} is out of range for a kernel of shape {tuple(leaf.shape)}.')
      out.append(a % ndim)
    return tuple(sorted(out))

  out_axes = norm(tuple(kl.out_axes), 'output')
  batch_axes = norm(tuple(kl.batch_axes), 'batch')
  used = out_axes + batch_axes
  if len(set(used)) != len(used):
    raise ValueError(f'{path}: layout {kl} names an axis twice for a kernel of shape {tuple(leaf.shape)}.')
  in_axes = tuple(a for a in range(ndim) if a not in used)
  if not out_axes or not in_axes:
    raise ValueError(
      f'{path}: layout {kl} leaves no {"output" if not out_axes else "input"} '
      f'axis in a kernel of shape {tuple(leaf.shape)}; spectral normalization '
      'needs a matrix (at least one input and one output axis).'
    )
  return ResolvedLayout(out_axes, in_axes, batch_axes)


def kernel_matrix(kernel: Any, layout: ResolvedLayout) -> Any:
  """Reshapes a kernel to its stacked (batch..., fan_in, fan_out) matrix.

  For reports and tests; the power iteration itself contracts the kernel in
  place and never materializes this transpose.

  Args:
    kernel: the weight array.
    layout: its resolved layout.

  Returns:
    An array of shape ``batch_shape + (fan_in, fan_out)``.
  """
  import jax.numpy as jnp

  perm = layout.batch_axes + layout.in_axes + layout.out_axes
  moved = jnp.transpose(kernel, perm)
  batch_shape = tuple(kernel.shape[a] for a in layout.batch_axes)
  fan_in = 1
  for a in layout.in_axes:
    fan_in *= kernel.shape[a]
  return moved.reshape(batch_shape + (fan_in, -1))
