"""Shims over the Flax NNX API that moved between the oldest supported flax (0.10.0) and the newest.

Each shim uses the current API where it exists (feature detection where a name
appeared, the flax version where a behaviour changed) and the older spelling
otherwise, so the rest of snjax is written against one API:

* ``nnx.to_flat_state`` / ``nnx.from_flat_state`` (flax >= 0.10.4) were
  ``State.flat_state()`` (a dict) / ``State.from_flat_path`` before;
* the leaves of an ``nnx.State`` are ``Variable`` objects read as ``var[...]``
  (flax >= 0.11) and were ``VariableState`` objects read as ``var.value`` before
  (newer flax deprecates ``.value``);
* ``variable[...] = value`` replaces a Variable's value from flax 0.10.7 on; before,
  it assigned into the array (which a jax array refuses), and ``.value = value``
  (deprecated by newer flax) replaced it;
* ``nnx.data`` (flax >= 0.11) marks a container attribute of a Module as data;
  older flax treats every container attribute as data already.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import flax
from flax import nnx

PathParts = tuple[Any, ...]

_FLAX_VERSION = tuple(int(part) for part in re.findall(r'\d+', flax.__version__)[:3])


def to_flat_state(state: nnx.State) -> list[tuple[PathParts, Any]]:
  """The ``(path, variable)`` pairs of ``state``, in flax's order (``nnx.to_flat_state``)."""
  if hasattr(nnx, 'to_flat_state'):
    return list(nnx.to_flat_state(state))
  return list(state.flat_state().items())


def from_flat_state(flat: Iterable[tuple[PathParts, Any]]) -> nnx.State:
  """The ``nnx.State`` of ``(path, variable)`` pairs (``nnx.from_flat_state``)."""
  if hasattr(nnx, 'from_flat_state'):
    return nnx.from_flat_state(list(flat))
  return nnx.State.from_flat_path(dict(flat))


def variable_value(variable: Any) -> Any:
  """The array a leaf of an ``nnx.State`` holds (``variable[...]``; ``.value`` of a ``VariableState``)."""
  if hasattr(type(variable), '__getitem__'):
    return variable[...]
  return variable.value


def set_variable_value(variable: nnx.Variable, value: Any) -> None:
  """``variable[...] = value``: replaces the array a Variable holds (``variable.value = value`` before flax 0.10.7)."""
  if _FLAX_VERSION >= (0, 10, 7):
    variable[...] = value
  else:
    variable.value = value


def nnx_data(value: Any) -> Any:
  """``nnx.data(value)`` where flax has it (a container attribute of a Module that holds Variables)."""
  data = getattr(nnx, 'data', None)
  return value if data is None else data(value)
