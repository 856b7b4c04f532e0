"""Flax NNX: a spectral-norm wrapper whose state optimizers never see.

``snjax.nnx.SpectralNorm(layer, rngs=rngs)`` takes the arguments of
``flax.nnx.SpectralNorm`` and keeps u and sigma in variables of their own type,
:class:`SpectralNormState` (a ``nnx.BatchStat``, never a ``nnx.Param``), so
``nnx.split(model, nnx.Param, ...)`` separates them from the weights and
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` never updates them. Unlike
flax.nnx.SpectralNorm, the raw parameter is never overwritten with
``W / sigma`` (flax does it on every call, evaluation included, so the weight
shrinks call after call): the layer runs on a normalized *copy* of its params
(``nnx.split`` / ``nnx.merge``), or, for linear layers, on the raw kernel with
its output scaled (``snjax._wrapping``).

For a whole NNX model without wrappers, the functional core works on the
params of ``nnx.split``::

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  sn_state = snjax.sn_init(key, params)
  params_sn, sn_state = snjax.sn_apply(params, sn_state)
  y = nnx.merge(graphdef, params_sn, rest)(x)

After Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks" (https://arxiv.org/abs/1802.05957).
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype

from snjax import _compat, _leaf
from snjax import _wrapping as wrapping
from snjax._layout import LayoutOption
from snjax._operators import compute_dtype
from snjax._options import SNOptions, check_float, check_int
from snjax._selection import path_str


class SpectralNormState(nnx.BatchStat):
  """u or sigma of a spectrally normalized weight.

  Its own Variable type: select it with ``nnx.split(model, nnx.Param,
  snjax.nnx.SpectralNormState, ...)``; it is a ``nnx.BatchStat``, so filters
  on batch statistics include it, and it is not a ``nnx.Param``, so
  ``nnx.Optimizer(..., wrt=nnx.Param)`` and ``nnx.grad`` never touch it.
  """


class SpectralNorm(nnx.Module):
  """Spectral normalization of a wrapped NNX layer, a drop-in for ``flax.nnx.SpectralNorm``.

  Each floating parameter ``W`` of the layer with ``ndim >= 2`` (biases
  excepted) is used as ``target_norm * W / sigma(W)``, sigma by power
  iteration on W read as a ``(fan_in, fan_out)`` matrix M (Miyato et al.
  2018, https://arxiv.org/abs/1802.05957)::

    v = M u / ||M u||,    sigma = ||M^T v||,    u <- M^T v / sigma.

  Training (``update_stats=True``) runs ``n_steps`` steps from the stored u
  and stores the new u and sigma; evaluation divides by the stored sigma (no
  iteration; with the weights of the last training call the output is that
  call's). ``.train()`` / ``.eval()`` switch the default, as for flax's.

  The layer's own parameter is never modified. The state sits in
  ``self.batch_stats`` under flax's keys ``(*param_path, 'u')`` (shape
  ``(1, fan_out)``) and ``(*param_path, 'sigma')``, as
  :class:`SpectralNormState` variables, warmed up by ``n_warmup_steps`` power
  steps at construction so the first sigma is accurate.

  Args:
    layer_instance: the wrapped module.
    n_steps: power steps per training call (>= 1).
    epsilon: floor of the vector norms and of sigma (> 0).
    dtype: if set, the kernel the layer sees is cast to it.
    param_dtype: dtype of u and sigma (at least float32).
    error_on_non_matrix: raise on a parameter with ``ndim > 2`` (flax's
      meaning) and on a layer with no matrix parameter.
    update_stats: the default of ``__call__``'s ``update_stats``.
    rngs: supplies the initial u (``rngs.params()``).
    target_norm: the spectral norm c of each normalized weight.
    layout: ``None`` (the layer's natural layout, ``snjax._wrapping.auto_layout``)
      or a layout option of :func:`snjax.sn_apply`.
    fast_path: ``None`` (output scaling when exact and the layer's output is
      smaller than its kernel), ``False`` (always materialize ``W / sigma``),
      ``True`` (require it).
    n_warmup_iterations: power steps at construction (>= 0).
    eps: deprecated alias of ``epsilon``.
    n_warmup_steps: deprecated name of ``n_warmup_iterations``.

  Raises:
    ValueError: bad options; a layer without a matrix parameter with
      ``error_on_non_matrix``; ``fast_path=True`` where it does not apply.
  """

  def __init__(
    self,
    layer_instance: nnx.Module,
    *,
    n_steps: int = 1,
    epsilon: float = 1e-12,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    error_on_non_matrix: bool = False,
    update_stats: bool = True,
    rngs: nnx.Rngs,
    target_norm: float = 1.0,
    layout: LayoutOption = None,
    fast_path: bool | None = None,
    n_warmup_iterations: int = 15,
    eps: float | None = None,
    n_warmup_steps: int | None = None,
  ):
    if eps is not None:
      warnings.warn("SpectralNorm(eps=...) is deprecated; use epsilon=... (flax's name).", DeprecationWarning, 2)
      epsilon = eps
    if n_warmup_steps is not None:
      warnings.warn(
        'SpectralNorm(n_warmup_steps=...) is deprecated; use n_warmup_iterations=...', DeprecationWarning, 2
      )
      n_warmup_iterations = n_warmup_steps
    check_int('n_steps', n_steps, 1)
    check_float('epsilon', epsilon, minimum=0.0)
    self.options = SNOptions(
      n_power_iterations=n_steps, n_warmup_iterations=n_warmup_iterations, eps=epsilon, target_norm=target_norm
    )
    self.layer_instance = layer_instance
    self.n_steps = n_steps
    self.epsilon = epsilon
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.error_on_non_matrix = error_on_non_matrix
    self.use_running_average = not update_stats  # flipped by .train() / .eval()
    self.target_norm = target_norm
    self.layout = layout
    self.fast_path = fast_path

    flat = self._flat_params()
    leaves = self._leaves(flat, None)
    keys = [rngs.params() for _ in leaves]
    kernels = [jax.lax.stop_gradient(dict(flat)[k]) for k in leaves]
    sdtype = compute_dtype(param_dtype)
    stats = {}
    for (k, leaf), (u, sigma) in zip(
      leaves.items(), _leaf.init_states(keys, kernels, list(leaves.values()), self.options), strict=True
    ):
      stats[k + ('u',)] = SpectralNormState(u.reshape(wrapping.stored_u_shape(leaf)).astype(sdtype))
      stats[k + ('sigma',)] = SpectralNormState(sigma.astype(sdtype))
    self.batch_stats = _compat.nnx_data(stats)

  def _flat_params(self) -> list[tuple[tuple[Any, ...], jax.Array]]:
    return [
      (tuple(path), _compat.variable_value(var))
      for path, var in _compat.to_flat_state(nnx.state(self.layer_instance, nnx.Param))
    ]

  def _leaves(self, flat, einsum_str) -> dict[tuple, _leaf.Leaf]:
    """The selected kernels' plans (keys as in the layer's flat state), in order."""
    str_flat = [(tuple(str(k) for k in keys), leaf) for keys, leaf in flat]
    chosen = set(
      wrapping.matrix_keys(
        str_flat, error_on_non_matrix=self.error_on_non_matrix, layer_name=type(self.layer_instance).__name__
      )
    )
    values = dict(flat)
    out = {}
    for keys, _ in flat:
      str_keys = tuple(str(k) for k in keys)
      if str_keys in chosen:
        lay = wrapping.layer_layout(self.layer_instance, self.layout, str_keys, values[keys], einsum_str)
        out[keys] = _leaf.plan(path_str(str_keys), values[keys], lay)
    return out

  def __call__(self, *args, update_stats: bool | None = None, **kwargs):
    """Runs the wrapped layer with spectrally normalized weights.

    Args:
      *args: positional arguments of the wrapped layer.
      update_stats: iterate and store u and sigma (training) or use the stored
        sigma (evaluation); ``None``: ``not self.use_running_average``
        (``.train()`` / ``.eval()``).
      **kwargs: keyword arguments of the wrapped layer.

    Returns:
      The wrapped layer's output.
    """
    if update_stats is None:
      update_stats = not self.use_running_average
    flat = self._flat_params()
    einsum_str = kwargs.get('einsum_str', args[1] if len(args) > 1 and isinstance(args[1], str) else None)
    leaves = self._leaves(flat, einsum_str)
    if not leaves:
      warnings.warn(
        f'SpectralNorm({type(self.layer_instance).__name__}): the wrapped layer has no floating parameter with '
        'ndim >= 2; its output is not normalized.',
        stacklevel=2,
      )
      return self.layer_instance(*args, **kwargs)
    str_values = {tuple(str(k) for k in keys): v for keys, v in flat}
    str_leaves = {tuple(str(k) for k in keys): leaf for keys, leaf in leaves.items()}
    by_str = {tuple(str(k) for k in keys): keys for keys in leaves}

    def sigma_of(str_keys, kernel, leaf):
      return self._sigma(by_str[str_keys], kernel, leaf, update_stats)

    new, scale = wrapping.normalize_layer(
      self.layer_instance,
      str_values,
      str_leaves,
      [leaf.operator.layout for leaf in leaves.values()],
      sigma_of,
      target_norm=self.target_norm,
      dtype=self.dtype,
      fast_path=self.fast_path,
      layer_name=type(self.layer_instance).__name__,
      input_shape=getattr(args[0] if args else kwargs.get('inputs'), 'shape', None),
    )
    changed = {keys: new[tuple(str(k) for k in keys)] for keys, _ in flat}
    return wrapping.scale_output(self._run_with(changed, *args, **kwargs), scale)

  def _run_with(self, new_values: dict, *args, **kwargs):
    """Calls the layer on a copy whose params at ``new_values``' paths are replaced; the layer's own
    params stay untouched, and its other state (rng counts, batch stats) is carried back."""
    graphdef, params, rest = nnx.split(self.layer_instance, nnx.Param, ...)
    flat = [
      (path, var.replace(new_values[tuple(path)]) if tuple(path) in new_values else var)
      for path, var in _compat.to_flat_state(params)
    ]
    view = nnx.merge(graphdef, _compat.from_flat_state(flat), rest)
    y = view(*args, **kwargs)
    nnx.update(self.layer_instance, nnx.state(view, nnx.Not(nnx.Param)))
    return y

  def _sigma(self, keys: tuple, kernel: jax.Array, leaf: _leaf.Leaf, update_stats: bool) -> jax.Array:
    """One kernel's sigma: power steps from the stored u (training) or the stored sigma (evaluation)."""
    u_var, sigma_var = self.batch_stats[keys + ('u',)], self.batch_stats[keys + ('sigma',)]
    stored = wrapping.stored_u_shape(leaf)
    if tuple(u_var.shape) != stored:
      raise ValueError(
        f'SpectralNorm: the u of {leaf.path!r} has shape {tuple(u_var.shape)}, '
        f'expected {stored} for a kernel of shape {tuple(kernel.shape)}; the layer changed after wrapping.'
      )
    if not update_stats:
      return jax.lax.stop_gradient(sigma_var[...])
    (res,) = _leaf.estimate([kernel], [u_var[...].reshape(leaf.u_shape)], [leaf], self.options)
    _compat.set_variable_value(u_var, res.u.reshape(stored).astype(u_var.dtype))
    _compat.set_variable_value(sigma_var, jax.lax.stop_gradient(res.sigma).astype(sigma_var.dtype))
    return res.sigma


__all__ = ['SpectralNorm', 'SpectralNormState']
