"""Names that moved, kept working for one release with a ``DeprecationWarning`` (optax's pattern).

A package lists its moved names as ``{old_name: (new_location, object_getter)}``
and its ``__getattr__`` calls :func:`getattr_with_deprecations`.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping


def getattr_with_deprecations(module: str, moved: Mapping[str, str], name: str):
  """Resolves ``module.name`` for a name that moved to ``moved[name]`` (``'pkg.mod:attr'``), with a warning.

  Args:
    module: the package whose attribute is read (for messages).
    moved: ``{old name: 'new.module:attribute'}``.
    name: the attribute asked for.

  Returns:
    The object at its new location.

  Raises:
    AttributeError: ``name`` is not a moved name.
  """
  if name not in moved:
    raise AttributeError(f'module {module!r} has no attribute {name!r}')
  target_module, _, attribute = moved[name].partition(':')
  new_name = f'{target_module}.{attribute}'
  warnings.warn(
    f'{module}.{name} has moved to {new_name}; the old name will be removed in snjax 0.3.',
    DeprecationWarning,
    stacklevel=3,
  )
  return getattr(importlib.import_module(target_module), attribute)
