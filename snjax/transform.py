"""The spectral-normalization transform over a whole params pytree.

``sn_init(key, params)`` makes the power-iteration state; ``sn_apply(params,
state)`` returns the normalized params and the next state. Any pytree of
arrays works (Flax linen ``variables['params']``, the params ``nnx.State`` of
``nnx.split``, Haiku params, an Equinox model), and the model is not changed:
``model.apply({'params': params_sn}, x)``.

The state is a Flax variable collection: a nested dict with one entry per
normalized leaf, at the leaf's own path, holding ``{'u': u, 'sigma': sigma}``.

After Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks" (https://arxiv.org/abs/1802.05957).
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from snjax import _conv as conv_mode
from snjax import _power as power
from snjax._layout import LayoutOption, resolve_layout
from snjax._selection import Selector, path_keys, path_str, select_paths

PyTree = Any
SNState = dict
"""A nested dict ``{...path...: {'u': Array, 'sigma': Array}}``."""


def _check_options(n_power_iterations=1, eps=1e-12, target_norm=1.0, tol=None, max_iterations=100):
  if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) or n_power_iterations < 1:
    raise ValueError(
      f'n_power_iterations must be an int >= 1, got {n_power_iterations!r} '
      '(with 0 iterations nothing would be normalized).'
    )
  if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
    raise ValueError(f'eps must be a finite float > 0, got {eps!r}.')
  if not (isinstance(target_norm, (int, float)) and math.isfinite(target_norm) and target_norm > 0):
    raise ValueError(f'target_norm must be a finite float > 0, got {target_norm!r}.')
  if tol is not None and not (isinstance(tol, (int, float)) and tol > 0):
    raise ValueError(f'tol must be None or a float > 0, got {tol!r}.')
  if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
    raise ValueError(f'max_iterations must be an int >= 1, got {max_iterations!r}.')


def _flatten(params):
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  flat = [(path_keys(p), leaf) for p, leaf in leaves_with_path]
  return flat, treedef


def _flatten_state(state, prefix=()) -> dict[tuple[str, ...], Mapping]:
  """Maps each normalized leaf's key tuple to its ``{'u', 'sigma'}`` entry."""
  out = {}
  if not isinstance(state, Mapping):
    raise TypeError(
      f'spectral-norm state at {path_str(prefix) or "<root>"} must be a nested dict, got {type(state).__name__}.'
    )
  if 'u' in state and not isinstance(state['u'], Mapping):
    out[prefix] = state
    return out
  for k, v in state.items():
    out.update(_flatten_state(v, prefix + (str(k),)))
  return out


def _unflatten_state(entries: dict[tuple[str, ...], dict]) -> SNState:
  root: dict = {}
  for keys, entry in entries.items():
    node = root
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = entry
  return root


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _init_leaf(key, leaf, lay, shape, cdtype, n_warmup_iterations, eps):
  u = jax.random.normal(key, shape, cdtype)
  u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
  res = power.power_iteration(leaf, u, lay, n_iterations=max(n_warmup_iterations, 1), eps=eps)
  return (u if n_warmup_iterations == 0 else res.u), res.sigma


def sn_init(
  key: jax.Array,
  params: PyTree,
  *,
  n_warmup_iterations: int = 15,
  eps: float = 1e-12,
  layout: LayoutOption = None,
  include: str | Selector | None = None,
  exclude: str | Selector | None = None,
  conv: conv_mode.ConvOption = None,
) -> SNState:
  """Makes the power-iteration state for every selected leaf of ``params``.

  Each u starts as a random unit vector (its key derived from ``key`` and the
  leaf's path, so adding a layer does not change the others), then runs
  ``n_warmup_iterations`` power steps so that the first sigma is already
  accurate; the state's sigma is the resulting estimate, so ``update=False``
  before any training normalizes with it.

  Args:
    key: a PRNG key.
    params: any pytree of arrays.
    n_warmup_iterations: power steps at init (>= 0).
    eps: floor of vector norms and of sigma (> 0).
    layout: the kernel layout option (see :mod:`snjax.layout`); default: the
      output axis is last (Flax, Haiku).
    include: ``None`` for the default selection (floating, ndim >= 2, not a
      bias or embedding), or a path regex / predicate ``(path, leaf) -> bool``.
    exclude: a path regex / predicate of leaves never to normalize.
    conv: ``{path regex: snjax.ConvSpec}``: the leaves it matches are
      normalized by the operator norm of their convolution (conv mode, see
      :mod:`snjax.conv`), their u an input-shaped array; ``snjax.conv_specs(model,
      x)`` reads the specs of a Flax model.

  Returns:
    The state: a nested dict with ``{'u': float32[batch..., fan_out],
    'sigma': float32[batch...]}`` at the path of each normalized leaf.

  Raises:
    ValueError: bad options, or a selected leaf that is not a floating array
      with ndim >= 2 (the message names its path).
  """
  if isinstance(n_warmup_iterations, bool) or not isinstance(n_warmup_iterations, int) or n_warmup_iterations < 0:
    raise ValueError(f'n_warmup_iterations must be an int >= 0, got {n_warmup_iterations!r}.')
  _check_options(eps=eps)
  flat, _ = _flatten(params)
  leaves = dict(flat)
  entries = {}
  for keys in select_paths(flat, include=include, exclude=exclude):
    leaf = leaves[keys]
    path = path_str(keys)
    lay = resolve_layout(layout, path, leaf)
    shape = power.u_shape(leaf.shape, lay)
    cdtype = power.compute_dtype(leaf.dtype)
    leaf_key = jax.random.fold_in(key, zlib.crc32(path.encode()) & 0x7FFFFFFF)
    spec = conv_mode.resolve_conv_spec(conv, path)
    if spec is not None:
      entries[keys] = conv_mode.conv_init_entry(leaf_key, leaf, path, lay, spec, n_warmup_iterations, eps)
      continue
    u, sigma = _init_leaf(leaf_key, jax.lax.stop_gradient(leaf), lay, shape, cdtype, n_warmup_iterations, eps)
    entries[keys] = {'u': u, 'sigma': sigma}
  return _unflatten_state(entries)


def sn_apply(
  params: PyTree,
  state: SNState,
  *,
  update: bool = True,
  n_power_iterations: int = 1,
  eps: float = 1e-12,
  target_norm: float = 1.0,
  layout: LayoutOption = None,
  include: str | Selector | None = None,
  exclude: str | Selector | None = None,
  tol: float | None = None,
  max_iterations: int = 100,
  conv: conv_mode.ConvOption = None,
) -> tuple[PyTree, SNState]:
  """Returns the spectrally normalized params and the next state.

  Each selected weight W becomes ``target_norm * W / sigma(W)``.

  Training (``update=True``): ``n_power_iterations`` power steps from the
  state's u; sigma = ||M^T v|| is a lower bound on the true spectral norm, so
  the result's norm is never below ``target_norm``; gradients flow through W
  and sigma, not through u or v (Miyato et al. 2018). The new state holds the
  next u and this sigma.

  Evaluation (``update=False``): no iteration; W is divided by the state's
  sigma and the state is returned unchanged. With the weights of the last
  training call it reproduces that call's normalized params bit for bit.

  The function is pure: called twice with the same params and state it returns
  the same result twice. To use one step's normalized params for several
  forward passes (the critic on the real and on the fake batch), call it once
  and reuse its output; calling it again with the same incoming state repeats
  the same iteration, it does not advance it.

  Args:
    params: the same pytree structure that ``sn_init`` saw.
    state: the state from ``sn_init`` or the previous ``sn_apply``.
    update: iterate and return a new state (training), or not (evaluation).
    n_power_iterations: power steps per call (>= 1).
    eps: floor of vector norms and of sigma (> 0): an all-zero weight yields
      zeros, never NaN.
    target_norm: the spectral norm c of each normalized weight (a c-Lipschitz
      layer).
    layout: the kernel layout option, as given to ``sn_init``.
    include: the selection, as given to ``sn_init``.
    exclude: the exclusion, as given to ``sn_init``.
    tol: if set, keep iterating (a ``lax.while_loop``) until sigma's relative
      change is at most ``tol``, at most ``max_iterations`` steps; for exact
      evaluation and reporting.
    max_iterations: the cap when ``tol`` is set.
    conv: the conv-mode specs, as given to ``sn_init``.

  Returns:
    ``(normalized_params, new_state)``: params with the same structure and
    dtypes, and the state (the same object when ``update=False``).

  Raises:
    ValueError: the state does not match the params (a selected leaf without
      state, a state entry without a leaf, a u of the wrong shape), or bad
      options; the message names the parameter path.
  """
  _check_options(n_power_iterations, eps, target_norm, tol, max_iterations)
  flat, treedef = _flatten(params)
  selected = select_paths(flat, include=include, exclude=exclude)
  entries = _flatten_state(state)
  _check_state_paths(selected, entries, include, exclude)
  sel = set(selected)
  new_leaves, new_entries, batched = [], {}, []
  for keys, leaf in flat:
    if keys not in sel:
      new_leaves.append(leaf)
      continue
    path = path_str(keys)
    lay = resolve_layout(layout, path, leaf)
    entry = entries[keys]
    spec = conv_mode.resolve_conv_spec(conv, path)
    if spec is not None:
      new_leaf, new_entry = conv_mode.conv_apply_entry(
        leaf,
        entry,
        path,
        lay,
        spec,
        update=update,
        n_power_iterations=n_power_iterations,
        eps=eps,
        target_norm=target_norm,
        tol=tol,
        max_iterations=max_iterations,
      )
      new_leaves.append(new_leaf)
      if update:
        new_entries[keys] = new_entry
      continue
    _check_entry(path, entry, leaf, lay)
    if update and tol is None:
      # Normalized below, all such leaves together (one compiled reduction for all their norms).
      batched.append((len(new_leaves), keys, leaf, entry['u'], lay))
      new_leaves.append(None)
      new_entries[keys] = None
      continue
    if update:
      res = power.power_iteration(
        leaf, entry['u'], lay, n_iterations=n_power_iterations, eps=eps, tol=tol, max_iterations=max_iterations
      )
      sigma, u = res.sigma, res.u
      new_entries[keys] = {'u': u, 'sigma': jax.lax.stop_gradient(sigma)}
    else:
      sigma = jax.lax.stop_gradient(jnp.asarray(entry['sigma']))
    new_leaves.append(power.scale_kernel(leaf, target_norm / sigma, lay))
  if batched:
    _, _, leaves, us, lays = zip(*batched, strict=True)
    scaled, results = power.normalize_many(
      leaves, us, lays, n_iterations=n_power_iterations, eps=eps, target_norm=float(target_norm)
    )
    for (at, keys, *_), new_leaf, res in zip(batched, scaled, results, strict=True):
      new_leaves[at] = new_leaf
      new_entries[keys] = {'u': res.u, 'sigma': jax.lax.stop_gradient(res.sigma)}
  new_params = jax.tree_util.tree_unflatten(treedef, new_leaves)
  if not update:
    return new_params, state
  return new_params, _unflatten_state(new_entries)


def _check_state_paths(selected, entries, include, exclude):
  missing = [path_str(k) for k in selected if k not in entries]
  extra = [path_str(k) for k in entries if k not in set(selected)]
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
      f'(here include={include!r}, exclude={exclude!r}), or re-run sn_init after changing the model.'
    )


def _check_entry(path, entry, leaf, lay):
  if 'u' not in entry or 'sigma' not in entry:
    raise ValueError(f"{path}: state entry must hold 'u' and 'sigma', got keys {sorted(entry)}.")
  expected = power.u_shape(leaf.shape, lay)
  if tuple(entry['u'].shape) != expected:
    raise ValueError(
      f'{path}: state u has shape {tuple(entry["u"].shape)}, expected {expected} for a kernel of '
      f'shape {tuple(leaf.shape)} with output axes {lay.out_axes} and batch axes {lay.batch_axes}. '
      'Was the state made for another model or layout?'
    )
  if tuple(jnp.shape(entry['sigma'])) != expected[:-1]:
    raise ValueError(f'{path}: state sigma has shape {tuple(jnp.shape(entry["sigma"]))}, expected {expected[:-1]}.')


def sigmas(state: SNState) -> dict[str, jax.Array]:
  """The last sigma estimate of each normalized leaf, keyed by its path; for logging."""
  return {path_str(k): v['sigma'] for k, v in _flatten_state(state).items()}


class SpectralNormalization(NamedTuple):
  """``init`` and ``apply`` with the same options bound, optax style.

  ``sn = snjax.spectral_normalization(layout='torch')``;
  ``state = sn.init(key, params)``; ``params_sn, state = sn.apply(params, state)``.
  """

  init: Any
  apply: Any


def spectral_normalization(
  *,
  n_power_iterations: int = 1,
  n_warmup_iterations: int = 15,
  eps: float = 1e-12,
  target_norm: float = 1.0,
  layout: LayoutOption = None,
  include: str | Selector | None = None,
  exclude: str | Selector | None = None,
  conv: conv_mode.ConvOption = None,
) -> SpectralNormalization:
  """Binds the options of :func:`sn_init` and :func:`sn_apply` once.

  Args:
    n_power_iterations: power steps per training call.
    n_warmup_iterations: power steps in ``init``.
    eps: floor of vector norms and of sigma.
    target_norm: the spectral norm of each normalized weight.
    layout: the kernel layout option.
    include: the selection (regex or predicate), ``None`` for the default.
    exclude: leaves never to normalize.
    conv: ``{path regex: snjax.ConvSpec}`` of the leaves in conv mode.

  Returns:
    A :class:`SpectralNormalization` ``(init, apply)``: ``init(key, params) ->
    state`` and ``apply(params, state, update=True) -> (params_sn, state)``.
  """
  _check_options(n_power_iterations, eps, target_norm)
  common = dict(eps=eps, layout=layout, include=include, exclude=exclude, conv=conv)

  def init(key, params):
    return sn_init(key, params, n_warmup_iterations=n_warmup_iterations, **common)

  def apply(params, state, update=True):
    return sn_apply(
      params, state, update=update, n_power_iterations=n_power_iterations, target_norm=target_norm, **common
    )

  return SpectralNormalization(init, apply)
