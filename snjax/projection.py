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

from snjax import _leaf
from snjax._conv import ConvOption
from snjax._layout import LayoutOption
from snjax._options import SNOptions, check_int
from snjax._state import Rules, SelectionOption, SNState, match_state, select, unflatten_state
from snjax.transform import sn_init


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
  include: SelectionOption = None,
  exclude: SelectionOption = None,
  conv: ConvOption = None,
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

  For a convolution kernel, by default the norm capped is that of the kernel
  read as a ``(k^d c_in) x c_out`` matrix (through ``layout``), as in spectral
  normalization; the convolution's own operator norm can be larger (Sedghi et
  al. 2019, https://arxiv.org/abs/1805.10408). Pass ``conv=`` (conv mode, see
  :class:`snjax.ConvSpec`) to cap the operator norm of the convolution itself, as
  Gouk et al. do, so that the layer is c-Lipschitz up to the estimate: the top
  of a convolution's spectrum is dense, and the warm-started one-step estimate
  may trail the true norm by a few 1e-3 (measured: <= 2.7e-3 on a 3x3 conv
  trained with Adam at 5e-2, against the SVD of its dense matrix).

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
    conv: ``{path regex: snjax.ConvSpec}`` (e.g. from ``snjax.conv_specs``):
      these leaves are capped by the operator norm of their convolution.
    seed: seed of the initial u vectors.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`SpectralProjectionState`. Its ``update`` requires ``params``.

  Raises:
    ValueError: bad options; ``update`` without params; state that does not
      match the params (the message names the path).
  """
  options = SNOptions(
    n_power_iterations=n_power_iterations, n_warmup_iterations=n_warmup_iterations, eps=eps, target_norm=target_norm
  )
  seed = check_int('seed', seed, 0, where='spectral_projection')
  rules = Rules(layout, include, exclude, conv)

  def init_fn(params):
    return SpectralProjectionState(
      sn_init(
        jax.random.key(seed),
        params,
        n_warmup_iterations=options.n_warmup_iterations,
        eps=options.eps,
        layout=layout,
        include=include,
        exclude=exclude,
        conv=conv,
      )
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('spectral_projection needs params: call update(updates, state, params).')
    selection = select(params, rules)
    entries = match_state(selection, state.sn_state, rules)
    flat_updates = dict(zip([k for k, _ in selection.flat], selection.treedef.flatten_up_to(updates), strict=True))
    params_now = selection.kernels()
    candidates = [
      jax.lax.stop_gradient(optax.apply_updates(p, flat_updates[k]))
      for k, p in zip(selection.leaves, params_now, strict=True)
    ]
    us = [entries[k]['u'] for k in selection.leaves]
    leaves = list(selection.leaves.values())
    projected, results, factors = _leaf.normalize(candidates, us, leaves, options, mode='project')
    new_updates, new_entries = dict(flat_updates), {}
    for i, (keys, leaf) in enumerate(selection.leaves.items()):
      upd = flat_updates[keys]
      # A weight inside the ball keeps its update exactly ((p + u) - p may differ from u by rounding).
      inside = leaf.operator.per_matrix(factors[i] >= 1.0, params_now[i].ndim)
      new_updates[keys] = jnp.where(inside, upd, (projected[i] - params_now[i]).astype(upd.dtype))
      new_entries[keys] = {'u': results[i].u, 'sigma': results[i].sigma}
    new_tree = jax.tree_util.tree_unflatten(selection.treedef, [new_updates[k] for k, _ in selection.flat])
    return new_tree, SpectralProjectionState(unflatten_state(new_entries))

  return optax.GradientTransformation(init_fn, update_fn)
