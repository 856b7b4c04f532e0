"""Which leaves of a params pytree are spectrally normalized.

Paths are the leaves' key paths joined with ``'/'``: ``'Dense_0/kernel'`` for
Flax, ``'mlp/~/linear_0/w'`` for Haiku, ``'layers/0/weight'`` for Equinox.

The default rule selects every floating-point array with ``ndim >= 2`` that is
neither a bias nor an embedding table. Flax's own ``SpectralNorm`` normalizes
any 2-D leaf, 2-D attention biases included; a bias or a lookup table is not
a linear map of the layer's input, so normalizing it is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Selector = Callable[[str, Any], bool]

BIAS = re.compile(r'(?i)^(b|bias(es)?|.*_bias(es)?|bias_.*)$')
EMBEDDING = re.compile(r'(?i)^(.*embed(ding)?s?)(_\d+)?$|^(wte|wpe)$')


def key_str(key: Any) -> str:
  """The string form of one key-path entry (dict key, attribute, index)."""
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_keys(path) -> tuple[str, ...]:
  """The string keys of a key path. The trailing ``.value`` attribute of a Flax NNX ``Variable`` is
  dropped, so that an NNX param is addressed as ``'layers/0/kernel'``, like its ``nnx.State`` path."""
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name in ('value', 'raw_value'):
    path = path[:-1]
  return tuple(key_str(k) for k in path)


def path_str(keys: tuple[str, ...]) -> str:
  return '/'.join(keys)


def is_array(leaf: Any) -> bool:
  return isinstance(leaf, (jax.Array, jnp.ndarray)) or hasattr(leaf, 'shape') and hasattr(leaf, 'dtype')


def default_rule(keys: tuple[str, ...], leaf: Any) -> bool:
  """The default selection: floating, ndim >= 2, not a bias, not an embedding."""
  if not is_array(leaf) or leaf.ndim < 2:
    return False
  if not jnp.issubdtype(leaf.dtype, jnp.floating):
    return False
  if keys and BIAS.match(keys[-1]):
    return False
  return not any(EMBEDDING.match(k) for k in keys)


def _matcher(option, name: str) -> Selector | None:
  if option is None:
    return None
  if isinstance(option, str):
    pattern = re.compile(option)
    return lambda path, leaf: pattern.search(path) is not None
  if isinstance(option, re.Pattern):
    return lambda path, leaf: option.search(path) is not None
  if callable(option):
    return option
  raise TypeError(f'{name} must be a regex string or a callable (path, leaf) -> bool, got {option!r}.')


def select_paths(
  flat: list[tuple[tuple[str, ...], Any]],
  *,
  include: str | Selector | None = None,
  exclude: str | Selector | None = None,
) -> list[tuple[str, ...]]:
  """Returns the key tuples of the leaves to normalize.

  Args:
    flat: ``(keys, leaf)`` pairs of the params.
    include: ``None`` for the default rule, else a regex (``re.search`` on the
      path) or a predicate ``(path, leaf) -> bool`` that replaces it: exactly the
      leaves it accepts are normalized, and each must be a floating array with
      ``ndim >= 2``.
    exclude: a regex or predicate; leaves it accepts are never normalized.

  Returns:
    The selected leaves' key tuples, in flattening order.

  Raises:
    ValueError: an included leaf is not a floating array with ``ndim >= 2``,
      or ``include`` selects nothing at all (a silent no-op otherwise); the
      message names the path.
  """
  inc = _matcher(include, 'include')
  exc = _matcher(exclude, 'exclude')
  selected = []
  for keys, leaf in flat:
    path = path_str(keys)
    if inc is None:
      chosen = default_rule(keys, leaf)
    else:
      chosen = bool(inc(path, leaf))
    if chosen and exc is not None and exc(path, leaf):
      chosen = False
    if not chosen:
      continue
    if not is_array(leaf):
      raise ValueError(f'{path}: selected for spectral normalization but is not an array ({type(leaf).__name__}).')
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      raise ValueError(
        f'{path}: selected for spectral normalization but has dtype {leaf.dtype}; expected a floating-point weight.'
      )
    if leaf.ndim < 2:
      raise ValueError(
        f'{path}: selected for spectral normalization but has shape {tuple(leaf.shape)}; '
        'expected a weight with ndim >= 2 (a matrix or a conv kernel). '
        'Narrow `include` or add it to `exclude`.'
      )
    selected.append(keys)
  if inc is not None and not selected:
    raise ValueError(f'include={include!r} selects no leaf of the params; nothing would be normalized.')
  return selected
