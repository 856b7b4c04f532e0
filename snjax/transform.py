"""The spectral-normalization transform over a whole params pytree.

``sn_init(key, params)`` makes the power-iteration state; ``sn_apply(params,
state)`` returns the normalized params and the next state. Any pytree of
arrays works (Flax linen ``variables['params']``, the params ``nnx.State`` of
``nnx.split``, Haiku params, an Equinox model, a single array), and the model
is not changed: ``model.apply({'params': params_sn}, x)``.

The state is a Flax variable collection: a nested dict with one entry per
normalized leaf, at the leaf's own path, holding ``{'u': u, 'sigma': sigma}``.

After Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks" (https://arxiv.org/abs/1802.05957).
"""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

import jax

from snjax import _leaf
from snjax._conv import ConvOption
from snjax._layout import LayoutOption
from snjax._options import SNOptions
from snjax._selection import path_str
from snjax._state import Rules, SelectionOption, SNState, match_state, select, sigmas, unflatten_state

PyTree = Any

__all__ = ['SNState', 'SpectralNormalization', 'sigmas', 'sn_apply', 'sn_init', 'spectral_normalization']


def _init(key: jax.Array, params: PyTree, options: SNOptions, rules: Rules) -> SNState:
  selection = select(params, rules)
  keys = [jax.random.fold_in(key, zlib.crc32(path_str(k).encode()) & 0x7FFFFFFF) for k in selection.leaves]
  kernels = [jax.lax.stop_gradient(w) for w in selection.kernels()]
  states = _leaf.init_states(keys, kernels, list(selection.leaves.values()), options)
  return unflatten_state({k: {'u': u, 'sigma': s} for k, (u, s) in zip(selection.leaves, states, strict=True)})


def _apply(params: PyTree, state: SNState, update: bool, options: SNOptions, rules: Rules):
  selection = select(params, rules)
  entries = match_state(selection, state, rules)
  leaves, kernels = list(selection.leaves.values()), selection.kernels()
  if not update:
    scaled = [
      _leaf.scale(w, options.target_norm / jax.lax.stop_gradient(jax.numpy.asarray(entries[k]['sigma'])), leaf)
      for (k, leaf), w in zip(selection.leaves.items(), kernels, strict=True)
    ]
    return selection.rebuild(dict(zip(selection.leaves, scaled, strict=True))), state
  us = [entries[k]['u'] for k in selection.leaves]
  scaled, results, _ = _leaf.normalize(kernels, us, leaves, options)
  new_state = {
    k: {'u': r.u, 'sigma': jax.lax.stop_gradient(r.sigma)} for k, r in zip(selection.leaves, results, strict=True)
  }
  return selection.rebuild(dict(zip(selection.leaves, scaled, strict=True))), unflatten_state(new_state)


def sn_init(
  key: jax.Array,
  params: PyTree,
  *,
  n_warmup_iterations: int = 15,
  eps: float = 1e-12,
  layout: LayoutOption = None,
  include: SelectionOption = None,
  exclude: SelectionOption = None,
  conv: ConvOption = None,
) -> SNState:
  """Makes the power-iteration state for every selected leaf of ``params``.

  The state of spectral normalization (Miyato et al. 2018,
  https://arxiv.org/abs/1802.05957): a unit vector u and the estimate sigma
  per weight, for :func:`sn_apply`.

  Each u starts as a random unit vector (its key derived from ``key`` and the
  leaf's path, so adding a layer does not change the others), then runs
  ``n_warmup_iterations`` power steps so that the first sigma is already
  accurate; the state's sigma is the resulting estimate, so ``update=False``
  before any training normalizes with it.

  Args:
    key: a PRNG key.
    params: any pytree of arrays (a single array too).
    n_warmup_iterations: power steps at init (>= 0).
    eps: floor of vector norms and of sigma (> 0).
    layout: the kernel layout option (see :class:`snjax.KernelLayout`);
      default: the output axis is last (Flax, Haiku).
    include: ``None`` for the default selection (floating, ndim >= 2, not a
      bias or embedding), or a path regex / predicate ``(path, leaf) -> bool``.
    exclude: a path regex / predicate of leaves never to normalize.
    conv: ``{path regex: snjax.ConvSpec}``: the leaves it matches are
      normalized by the operator norm of their convolution (conv mode), their
      u an input-shaped array; ``snjax.conv_specs(model, x)`` reads the specs
      of a Flax model.

  Returns:
    The state: a nested dict with ``{'u': float32[batch..., fan_out],
    'sigma': float32[batch...]}`` at the path of each normalized leaf (the
    entry itself when ``params`` is a single array).

  Raises:
    ValueError: bad options, or a selected leaf that is not a floating array
      with ndim >= 2 (the message names its path).
  """
  options = SNOptions(n_warmup_iterations=n_warmup_iterations, eps=eps)
  return _init(key, params, options, Rules(layout, include, exclude, conv))


def sn_apply(
  params: PyTree,
  state: SNState,
  *,
  update: bool = True,
  n_power_iterations: int = 1,
  eps: float = 1e-12,
  target_norm: float = 1.0,
  layout: LayoutOption = None,
  include: SelectionOption = None,
  exclude: SelectionOption = None,
  tol: float | None = None,
  max_iterations: int = 100,
  conv: ConvOption = None,
) -> tuple[PyTree, SNState]:
  """Returns the spectrally normalized params and the next state.

  Each selected weight W becomes ``target_norm * W / sigma(W)``.

  Training (``update=True``): ``n_power_iterations`` power steps from the
  state's u, all weights together (one reduction per step for all their
  vector norms); sigma = ||M^T v|| is a lower bound on the true spectral
  norm, so the result's norm is never below ``target_norm``; gradients flow
  through W and sigma, not through u or v (Miyato et al. 2018). The new state
  holds the next u and this sigma.

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
    tol: if set, keep iterating (a ``lax.while_loop``) until every sigma's
      relative change is at most ``tol``, at most ``max_iterations`` steps;
      for exact evaluation and reporting.
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
  options = SNOptions(
    n_power_iterations=n_power_iterations, eps=eps, target_norm=target_norm, tol=tol, max_iterations=max_iterations
  )
  return _apply(params, state, update, options, Rules(layout, include, exclude, conv))


class SpectralNormalization(NamedTuple):
  """``init`` and ``apply`` with the same options bound, optax style.

  ``sn = snjax.spectral_normalization(layout='torch')``;
  ``state = sn.init(key, params)``; ``params_sn, state = sn.apply(params, state)``.

  Attributes:
    init: ``(key, params) -> state``, as :func:`sn_init`.
    apply: ``(params, state, update=True) -> (params_sn, state)``, as :func:`sn_apply`.
    options: the bound numeric options.
    rules: the bound selection and layout options.
  """

  init: Any
  apply: Any
  options: SNOptions = SNOptions()
  rules: Rules = Rules()


def spectral_normalization(
  *,
  n_power_iterations: int = 1,
  n_warmup_iterations: int = 15,
  eps: float = 1e-12,
  target_norm: float = 1.0,
  layout: LayoutOption = None,
  include: SelectionOption = None,
  exclude: SelectionOption = None,
  tol: float | None = None,
  max_iterations: int = 100,
  conv: ConvOption = None,
) -> SpectralNormalization:
  """Binds the options of :func:`sn_init` and :func:`sn_apply` once (checked once).

  Spectral normalization (Miyato et al. 2018, https://arxiv.org/abs/1802.05957)
  as an ``(init, apply)`` pair, in the style of an optax transformation.

  Args:
    n_power_iterations: power steps per training call.
    n_warmup_iterations: power steps in ``init``.
    eps: floor of vector norms and of sigma.
    target_norm: the spectral norm of each normalized weight.
    layout: the kernel layout option.
    include: the selection (regex or predicate), ``None`` for the default.
    exclude: leaves never to normalize.
    tol: iterate each training call to this relative tolerance on sigma (``None``: a fixed number of steps).
    max_iterations: the cap on the steps when ``tol`` is set.
    conv: ``{path regex: snjax.ConvSpec}`` of the leaves in conv mode.

  Returns:
    A :class:`SpectralNormalization` ``(init, apply)``: ``init(key, params) ->
    state`` and ``apply(params, state, update=True) -> (params_sn, state)``.

  Raises:
    ValueError: an option out of its range.
  """
  options = SNOptions(
    n_power_iterations=n_power_iterations,
    n_warmup_iterations=n_warmup_iterations,
    eps=eps,
    target_norm=target_norm,
    tol=tol,
    max_iterations=max_iterations,
  )
  rules = Rules(layout, include, exclude, conv)

  def init(key, params):
    return _init(key, params, options, rules)

  def apply(params, state, update=True):
    return _apply(params, state, update, options, rules)

  return SpectralNormalization(init, apply, options, rules)
