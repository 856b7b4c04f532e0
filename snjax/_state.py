"""The spectral-norm state of a params pytree: a nested dict mirroring the params' paths.

A normalized leaf at path ``'Dense_0/kernel'`` has its entry at
``state['Dense_0']['kernel'] == {'u': u, 'sigma': sigma}``; a params pytree
that is a single array (Haiku's ``SpectralNorm`` is called on one weight) has
its entry at the root, ``state == {'u': u, 'sigma': sigma}``. The transform
(:mod:`snjax.transform`) and the projection (:mod:`snjax.projection`) share
this module's reading and writing of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Union

import jax

from snjax import _leaf
from snjax._conv import ConvOption, resolve_conv_spec
from snjax._layout import LayoutOption
from snjax._selection import Selector, path_keys, path_str, select_paths

Keys = tuple[str, ...]
SNState = dict
"""A nested dict ``{...path...: {'u': Array, 'sigma': Array}}`` (the entry itself for a single-array pytree)."""

SelectionOption = Union[str, Selector, None]  # noqa: UP007 (a runtime alias)


class Rules(NamedTuple):
  """Which leaves are normalized and how each is read: the options ``sn_init`` and ``sn_apply`` must share.

  Attributes:
    layout: the kernel layout option (:data:`snjax._layout.LayoutOption`).
    include: ``None`` (the default rule), a path regex or a predicate ``(path, leaf) -> bool``.
    exclude: a path regex or predicate of leaves never to normalize.
    conv: ``{path regex: snjax.ConvSpec}`` of the leaves normalized by their convolution's operator norm.
  """

  layout: LayoutOption = None
  include: SelectionOption = None
  exclude: SelectionOption = None
  conv: ConvOption = None


class Selection(NamedTuple):
  """A params pytree split into its leaves, with the plans of the selected ones.

  Attributes:
    flat: ``(keys, leaf)`` of every leaf, in flattening order.
    treedef: the params' tree structure.
    leaves: ``{keys: _leaf.Leaf}`` of the selected leaves, in order.
  """

  flat: list[tuple[Keys, Any]]
  treedef: Any
  leaves: dict[Keys, _leaf.Leaf]

  def kernels(self) -> list[Any]:
    values = dict(self.flat)
    return [values[k] for k in self.leaves]

  def rebuild(self, new_values: Mapping[Keys, Any]) -> Any:
    """The params with the leaves at ``new_values``' keys replaced."""
    return jax.tree_util.tree_unflatten(self.treedef, [new_values.get(k, leaf) for k, leaf in self.flat])


def select(params: Any, rules: Rules) -> Selection:
  """Flattens ``params`` and plans every leaf the rules select.

  Raises:
    ValueError: a selected leaf that is not a floating array with ndim >= 2,
      an ``include`` that selects nothing, a layout or conv spec that does not
      fit (the message names the path).
  """
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  flat = [(path_keys(p), leaf) for p, leaf in leaves_with_path]
  values = dict(flat)
  chosen = select_paths(flat, include=rules.include, exclude=rules.exclude)
  plans = {}
  for k in chosen:
    path = path_str(k) or '<root>'
    plans[k] = _leaf.plan(path, values[k], rules.layout, resolve_conv_spec(rules.conv, path))
  return Selection(flat, treedef, plans)


def flatten_state(state: Any, prefix: Keys = ()) -> dict[Keys, Mapping]:
  """Maps each normalized leaf's keys to its ``{'u', 'sigma'}`` entry.

  Raises:
    TypeError: the state is not a nested dict (the message names the path).
  """
  if not isinstance(state, Mapping):
    raise TypeError(
      f'spectral-norm state at {path_str(prefix) or "<root>"} must be a nested dict, got {type(state).__name__}.'
    )
  if 'u' in state and not isinstance(state['u'], Mapping):
    return {prefix: state}
  out = {}
  for k, v in state.items():
    out.update(flatten_state(v, prefix + (str(k),)))
  return out


def unflatten_state(entries: Mapping[Keys, Any]) -> SNState:
  """The nested dict of ``{keys: entry}``; the entry itself for the root leaf (keys ``()``)."""
  if () in entries:
    return entries[()]
  root: dict = {}
  for keys, entry in entries.items():
    node = root
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = entry
  return root


def match_state(selection: Selection, state: Any, rules: Rules) -> dict[Keys, Mapping]:
  """The state entry of every selected leaf, checked against it.

  Raises:
    ValueError: a selected leaf without state, a state entry without a
      selected leaf, an entry without ``u``/``sigma``, or of the wrong shape;
      the message names the paths and says how to fix it.
  """
  entries = flatten_state(state)
  missing = [path_str(k) or '<root>' for k in selection.leaves if k not in entries]
  extra = [path_str(k) or '<root>' for k in entries if k not in selection.leaves]
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'selected leaves with no state: {missing}')
    if extra:
      parts.append(f'state entries with no selected leaf: {extra}')
    raise ValueError(
      'spectral-norm state does not match the params: '
      + '; '.join(parts)
      + '. Pass sn_apply the same include/exclude as sn_init '
      f'(here include={rules.include!r}, exclude={rules.exclude!r}), or re-run sn_init after changing the model.'
    )
  values = dict(selection.flat)
  for keys, leaf in selection.leaves.items():
    entry = entries[keys]
    if 'u' not in entry or 'sigma' not in entry:
      raise ValueError(f"{leaf.path}: state entry must hold 'u' and 'sigma', got keys {sorted(entry)}.")
    _leaf.check_state(leaf, values[keys], entry['u'], entry['sigma'])
  return {k: entries[k] for k in selection.leaves}


def sigmas(state: SNState) -> dict[str, jax.Array]:
  """The last sigma estimate of each normalized leaf, keyed by its path; for logging.

  Args:
    state: a state made by :func:`snjax.sn_init` / :func:`snjax.sn_apply`.

  Returns:
    ``{path: sigma}`` (the path ``''`` for a single-array pytree).
  """
  return {path_str(k): v['sigma'] for k, v in flatten_state(state).items()}
