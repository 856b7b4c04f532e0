"""How snjax.lipschitz is told which convolution to measure: a :class:`snjax.ConvSpec`, and the deprecated form.

Every function of :mod:`snjax.lipschitz` takes the kernel and a
:class:`snjax.ConvSpec` (input shape, strides, padding, dilations, feature
groups), the same description the conv mode of :func:`snjax.sn_init` /
:func:`snjax.sn_apply` takes and :func:`snjax.conv_specs` reads from a model.
Before snjax 0.2 they took an input shape and the geometry as keywords
(``f(kernel, input_shape, strides=2, padding='SAME')``); that form still works
until snjax 0.3, with a ``DeprecationWarning`` that spells out the new call.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from snjax._conv import ConvSpec

GEOMETRY_KEYWORDS = ('strides', 'padding', 'rhs_dilation', 'lhs_dilation', 'feature_group_count')
"""The keywords of the deprecated call form, the fields of :class:`snjax.ConvSpec` after ``input_shape``."""


def as_spec(
  spec: Any,
  deprecated_geometry: Mapping[str, Any],
  where: str,
  *,
  keywords: Sequence[str] = GEOMETRY_KEYWORDS,
  fixed: Mapping[str, Any] | None = None,
) -> ConvSpec:
  """The :class:`snjax.ConvSpec` of a call, given as one, or in the deprecated form (with a warning).

  Args:
    spec: the call's second argument: a ``ConvSpec`` (the call form), an input
      shape (deprecated), or ``None`` when the input shape came as the
      ``input_shape=`` keyword (deprecated).
    deprecated_geometry: the call's other keyword arguments: ``input_shape``
      and the geometry keywords of the deprecated form.
    where: the public function's name, for messages.
    keywords: the geometry keywords that function took before 0.2.
    fixed: ``ConvSpec`` fields the function fixed before 0.2 (e.g. ``padding``
      of :func:`snjax.lipschitz.circular_conv_singular_values`).

  Returns:
    The ``ConvSpec`` (not yet checked against a kernel: ``snjax._conv.geometry`` does that).

  Raises:
    TypeError: no spec, geometry keywords beside a ``ConvSpec``, a keyword
      the function never took, or a second argument that is neither a
      ``ConvSpec`` nor an input shape.
  """
  geometry = dict(deprecated_geometry)
  if isinstance(spec, ConvSpec):
    if geometry:
      raise TypeError(
        f'{where}: the keywords {sorted(geometry)} cannot be combined with a snjax.ConvSpec; set them in the ConvSpec.'
      )
    return spec
  if spec is None:
    if 'input_shape' not in geometry:
      raise TypeError(f'{where}: missing the convolution, a snjax.ConvSpec (the second argument).')
    spec = geometry.pop('input_shape')
  elif 'input_shape' in geometry:
    raise TypeError(f"{where}: got multiple values for 'input_shape'.")
  if isinstance(spec, str) or not isinstance(spec, (Sequence, np.ndarray)):
    raise TypeError(f'{where}: expected a snjax.ConvSpec as the second argument, got {type(spec).__name__}.')
  unknown = sorted(set(geometry) - set(keywords))
  if unknown:
    raise TypeError(f'{where}: got unexpected keyword arguments {unknown}.')
  fields = {**geometry, **(fixed or {})}
  new = ConvSpec(tuple(int(x) for x in spec), **fields)
  given = ''.join(f', {k}={v!r}' for k, v in geometry.items())
  spelled = ''.join(f', {k}={v!r}' for k, v in fields.items())
  warnings.warn(
    f'{where}(..., input_shape{given}) is deprecated and will be removed in snjax 0.3: pass the convolution as a '
    f'snjax.ConvSpec: {where}(..., snjax.ConvSpec({new.input_shape!r}{spelled}), ...).',
    DeprecationWarning,
    stacklevel=3,
  )
  return new
