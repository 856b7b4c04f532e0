"""Spectral projection: an optax transformation that caps every weight's spectral norm.

The alternative to the reparametrization ``W / sigma(W)`` of spectral
normalization: the weights are trained as they are, and after each optimizer
update every selected weight is projected back onto the ball of spectral norm
``c``,

  ``W <- W / max(1, sigma(W) / c)``,

as in Gouk, Frank, Pfahringer & Cree 2021, "Regularisation of neural networks
by enforcing Lipschitz continuity", Machine Learning 110
(https://arxiv.org/abs/1804.04368), Algorithm 2. A weight already inside the
ball is left untouched. sigma is estimated by power iteration whose u vectors
live in the transformation's own optax state, warm-started from the previous
step, so one step per update (two matrix-vector products) is enough once the
iteration has converged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from snjax import power
from snjax.layout import LayoutOption, resolve_layout
from snjax.selection import Selector, path_str, select_paths
from snjax.transform import (
  SNState,
  _check_entry,
  _check_options,
  _check_state_paths,
  _flatten,
  _flatten_state,
  _unflatten_state,
  sn_init,
)


def _per_matrix(x: jax.Array, kernel: jax.Array, lay) -> jax.Array:
  """Reshapes a per-matrix value (shape ``batch_shape``) to broadcast against the kernel."""
  shape = [1] * kernel.ndim
  for a in lay.batch_axes:
    shape[a] = kernel.shape[a]
  return x.reshape(shape)


class SpectralProjectionState(NamedTuple):
  """The optax state of :func:`spectral_projection`.

  Attributes:
    sn_state: ``{path: {'u': u, 'sigma': sigma}}`` for each selected weight, as
      made by :func:`snjax.sn_init`; sigma is the norm estimate of the weight
      before its last projection (log it with :func:`snjax.sigmas`).
  """

  sn_state: SNState


def spectral_projection(
  target_norm: float = 1.0,
  *,
  n_power_iterations: int = 1,
  n_warmup_iterations: int = 15,
  eps: float = 1e-12,
  layout: LayoutOption = None,
  include: str | Selector | None = None,
  exclude: str | Selector | None = None,
  seed: int = 0,
) -> optax.GradientTransformation:
  """Projects each selected weight onto spectral norm <= ``target_norm`` after the update.

  Chain it after any optimizer: ``optax.chain(optax.adam(1e-3),
  snjax.spectral_projection(1.0))``. Given the incoming ``updates`` and the
  current ``params``, it forms ``W' = params + updates``, estimates
  ``sigma(W')`` by ``n_power_iterations`` power steps from its stored u, and
  returns the updates ``W' / max(1, sigma / c) - params`` that land on the
  projected weights (optax transformations return updates, not params). Leaves
  that are not selected pass their updates through unchanged.

  sigma is a power-iteration estimate, a lower bound on the true norm that is
  exact once the warm-started iteration has converged (the first steps of a
  run, or right after a large jump of the weights, may leave a norm slightly
  above ``c``; raise ``n_power_iterations`` to tighten).

  For a convolution kernel, the norm capped is that of the kernel read as a
  ``(k^d c_in) x c_out`` matrix (through ``layout``), as in spectral
  normalization; the convolution's own operator norm can be larger (Sedghi et
  al. 2019, https://arxiv.org/abs/1805.10408), so the layer is not guaranteed
  c-Lipschitz. Dense layers are exact.

  Gouk et al. 2021, "Regularisation of neural networks by enforcing Lipschitz
  continuity" (https://arxiv.org/abs/1804.04368).

  Args:
    target_norm: c, the largest spectral norm allowed (> 0).
    n_power_iterations: power steps per update (>= 1).
    n_warmup_iterations: power steps in ``init``, so the first estimate is
      accurate.
    eps: floor of vector norms and of sigma.
    layout: the kernel layout option, as for :func:`snjax.sn_init`.
    include: the selection (regex or predicate); default: every floating
      leaf with ndim >= 2 that is not a bias or an embedding.
    exclude: leaves never to project.
    seed: seed of the initial u vectors.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`SpectralProjectionState`. Its ``update`` requires ``params``.

  Raises:
    ValueError: bad options; ``update`` without params; state that does not
      match the params (the message names the path).
  """
  _check_options(n_power_iterations, eps, target_norm)
  common = dict(layout=layout, include=include, exclude=exclude)

  def init_fn(params):
    return SpectralProjectionState(
      sn_init(jax.random.key(seed), params, n_warmup_iterations=n_warmup_iterations, eps=eps, **common)
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('spectral_projection needs params: call update(updates, state, params).')
    flat, treedef = _flatten(params)
    flat_updates = treedef.flatten_up_to(updates)
    selected = select_paths(flat, include=include, exclude=exclude)
    entries = _flatten_state(state.sn_state)
    _check_state_paths(selected, entries, include, exclude)
    sel = set(selected)
    new_updates, new_entries = [], {}
    for (keys, param), upd in zip(flat, flat_updates, strict=True):
      if keys not in sel:
        new_updates.append(upd)
        continue
      path = path_str(keys)
      lay = resolve_layout(layout, path, param)
      entry = entries[keys]
      _check_entry(path, entry, param, lay)
      candidate = jax.lax.stop_gradient(optax.apply_updates(param, upd))
      res = power.power_iteration(candidate, entry['u'], lay, n_iterations=n_power_iterations, eps=eps)
      factor = 1.0 / jnp.maximum(1.0, res.sigma / target_norm)
      projected = power.scale_kernel(candidate, factor, lay)
      # A weight inside the ball keeps its update exactly ((p + u) - p may differ from u by rounding).
      inside = _per_matrix(factor >= 1.0, param, lay)
      new_updates.append(jnp.where(inside, upd, (projected - param).astype(upd.dtype)))
      new_entries[keys] = {'u': res.u, 'sigma': res.sigma}
    return jax.tree_util.tree_unflatten(treedef, new_updates), SpectralProjectionState(_unflatten_state(new_entries))

  return optax.GradientTransformation(init_fn, update_fn)
