"""Flax linen modules: a drop-in, faster ``flax.linen.SpectralNorm``.

``snjax.SpectralNorm`` takes the constructor arguments and the call signature
of ``flax.linen.SpectralNorm`` and keeps its state where flax keeps it (the
``batch_stats`` collection, names ``'<layer>/<param path>/u'`` and
``'.../sigma'``, u of shape ``(1, fan_out)``), so changing the import is the
whole migration, and a flax checkpoint loads as is. The maths is the
functional core's (:func:`snjax.power.power_iteration`); this module only
places the state in the collection and picks the fast path
(:mod:`snjax.wrapping`).

After Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks" (https://arxiv.org/abs/1802.05957).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta
from flax.typing import Dtype, Initializer, PaddingLike, PrecisionLike

from snjax import _conv as conv_lib
from snjax import _power as power
from snjax import _wrapping as wrapping
from snjax._layout import LayoutOption, ResolvedLayout
from snjax._selection import path_keys, path_str


def _flatten_boxed(tree):
  """``(keys, leaf)`` pairs and the treedef, with Flax metadata boxes as leaves."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, meta.AxisMetadata))
  return [(path_keys(p), leaf) for p, leaf in leaves], treedef


def _unbox(leaf):
  return leaf.unbox() if isinstance(leaf, meta.AxisMetadata) else leaf


def _rebox(leaf, value):
  return leaf.replace_boxed(value) if isinstance(leaf, meta.AxisMetadata) else value


class SpectralNorm(nn.Module):
  """Spectral normalization of a wrapped layer's weights, a drop-in for ``flax.linen.SpectralNorm``.

  Each floating parameter ``W`` of the wrapped layer with ``ndim >= 2`` is used
  as ``target_norm * W / sigma(W)``, sigma estimated by power iteration on W
  read as a ``(fan_in, fan_out)`` matrix M (Miyato et al. 2018,
  https://arxiv.org/abs/1802.05957)::

    v = M u / ||M u||,    sigma = ||M^T v||,    u <- M^T v / sigma.

  Given the same u this is exactly flax's iteration (flax's
  ``sigma = v M u'`` with ``u' = M^T v / ||M^T v||`` equals ``||M^T v||``).

  Differences from flax.linen.SpectralNorm, all deliberate:

  * ``update_stats=False`` runs no iteration: it divides by the stored sigma,
    so with the weights of the last training call the output is bit for bit
    that call's (flax iterates again from the stored u).
  * ``init`` stores the *raw* parameters (flax stores ``W / sigma`` as the
    parameter), and the state starts warmed up (``n_warmup_steps`` power
    steps), so the first sigma is already accurate (flax's starts at 1).
  * Fast path: a ``Dense``, ``DenseGeneral``, ``Conv``, ``ConvTranspose``,
    ``ConvLocal`` or ``Einsum`` runs on the raw kernel and its output is
    scaled, ``layer(x; W/sigma, b) = layer(x; W, b*sigma) / sigma``: no
    ``W / sigma`` is materialized. Other layers materialize ``W / sigma``.
  * ``DenseGeneral``'s ``features`` axes are all output axes and an
    ``Einsum`` kernel's axes are read from its equation (flax reads only the
    last axis as output); see :func:`snjax.wrapping.auto_layout`.
  * Half-precision weights are iterated in float32 and keep their dtype.
  * A zero weight gives zeros (never NaN) and keeps its u; sigma is floored
    by ``epsilon``.
  * Wrapping a layer with no matrix parameter warns (or, with
    ``error_on_non_matrix``, raises) instead of doing nothing silently.

  Usage is flax's::

    y = snjax.SpectralNorm(nn.Dense(4))(x, update_stats=train)
    y, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])

  Attributes:
    layer_instance: the wrapped module; its params keep their own path.
    n_steps: power steps per training call (>= 1).
    epsilon: floor of the vector norms and of sigma (> 0).
    dtype: if set, the kernel the layer sees is cast to it (default: the
      parameter's dtype).
    param_dtype: dtype of the stored u and sigma (at least float32).
    error_on_non_matrix: raise on a parameter with ``ndim > 2`` (flax's
      meaning) and on a layer with no matrix parameter.
    collection_name: the mutable collection holding u and sigma.
    target_norm: the spectral norm c of each normalized weight (c-Lipschitz).
    layout: ``None`` (the layer's natural layout, :func:`snjax.wrapping.auto_layout`)
      or a layout option of :func:`snjax.sn_apply` (paths relative to the layer,
      e.g. ``'kernel'``).
    fast_path: ``None`` (use it when exact), ``False`` (always materialize
      ``W / sigma``), ``True`` (require it: error if it does not apply).
    n_warmup_steps: power steps when the state is created (>= 0).
    eps: an alias of ``epsilon`` (the functional core's name); wins when set.
    conv_operator_norm: for a wrapped ``nn.Conv``: normalize by the operator
      norm of the convolution on the call's input size (power iteration on
      the conv and its transpose, :mod:`snjax.conv`; u is input-shaped)
      instead of the reshaped kernel's norm.
  """

  layer_instance: nn.Module
  n_steps: int = 1
  epsilon: float = 1e-12
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  error_on_non_matrix: bool = False
  collection_name: str = 'batch_stats'
  target_norm: float = 1.0
  layout: LayoutOption = None
  fast_path: bool | None = None
  n_warmup_steps: int = 15
  eps: float | None = None
  conv_operator_norm: bool = False

  @property
  def _eps(self) -> float:
    return self.epsilon if self.eps is None else self.eps

  @nn.compact
  def __call__(self, *args, update_stats: bool, **kwargs):
    """Runs the wrapped layer with spectrally normalized weights.

    Args:
      *args: positional arguments of the wrapped layer.
      update_stats: iterate and store the new u and sigma (training; needs
        ``mutable=[collection_name]``), or use the stored sigma (evaluation).
      **kwargs: keyword arguments of the wrapped layer.

    Returns:
      The wrapped layer's output.

    Raises:
      ValueError: ``update_stats=True`` while the collection is not mutable,
        no stored state in evaluation, a layer without a matrix parameter
        (``error_on_non_matrix``), ``fast_path=True`` where it does not apply,
        or bad options.
    """
    self._check()
    if update_stats and not self.is_mutable_collection(self.collection_name):
      raise ValueError(
        f'SpectralNorm({self.layer_instance.name}) was called with update_stats=True but the '
        f'{self.collection_name!r} collection, which holds its u and sigma, is not mutable: pass '
        f'mutable=[{self.collection_name!r}] to apply (model.apply(variables, ..., '
        f'mutable=[{self.collection_name!r}])), or update_stats=False to evaluate.'
      )
    einsum_str = kwargs.get('einsum_str', args[1] if len(args) > 1 and isinstance(args[1], str) else None)
    scratch: dict[str, Any] = {}

    conv_spec = self._conv_spec(args, kwargs) if self.conv_operator_norm else None

    def normalize(variables):
      scratch['raw'] = variables
      out, scratch['scale'] = self._normalize_params(variables.get('params', {}), update_stats, einsum_str, conv_spec)
      return {**variables, 'params': out}

    def restore(variables):
      # At init flax writes the view back as the parameter; store the raw one.
      return scratch.get('raw', variables)

    y = nn.map_variables(
      lambda layer: layer(*args, **kwargs),
      'params',
      trans_in_fn=normalize,
      trans_out_fn=restore,
      init=self.is_initializing(),
    )(self.layer_instance)
    scale = scratch.get('scale')
    if scale is None:
      return y
    return jax.tree_util.tree_map(lambda t: t * scale.astype(t.dtype), y)

  def _check(self):
    for name in ('n_steps', 'n_warmup_steps'):
      value, low = getattr(self, name), 1 if name == 'n_steps' else 0
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f'{name} must be an int >= {low}, got {value!r}.')
    for name, value in (('epsilon', self._eps), ('target_norm', self.target_norm)):
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f'{name} must be a finite float > 0, got {value!r}.')

  def _conv_spec(self, args, kwargs) -> conv_lib.ConvSpec:
    """The :class:`snjax.ConvSpec` of the wrapped ``nn.Conv`` on this call's input."""
    layer = self.layer_instance
    x = args[0] if args else kwargs.get('inputs')
    if not isinstance(layer, nn.Conv) or x is None:
      raise ValueError(
        f'SpectralNorm({layer.name}): conv_operator_norm=True needs a wrapped flax.linen.Conv called on an '
        f'input array, got a {type(layer).__name__}.'
      )
    ks = (layer.kernel_size,) if isinstance(layer.kernel_size, int) else tuple(layer.kernel_size)
    return conv_lib.ConvSpec(
      input_shape=tuple(x.shape[-(len(ks) + 1) :]),
      strides=1 if layer.strides is None else layer.strides,
      padding=layer.padding,
      rhs_dilation=1 if layer.kernel_dilation is None else layer.kernel_dilation,
      lhs_dilation=1 if layer.input_dilation is None else layer.input_dilation,
      feature_group_count=layer.feature_group_count,
    )

  def _conv_sigma(self, name: str, kernel: jax.Array, update_stats: bool, spec: conv_lib.ConvSpec) -> jax.Array:
    """sigma of a conv kernel as an operator: ``name + '/u'`` is input-shaped, ``name + '/sigma'`` a scalar."""
    col, sdtype = self.collection_name, power.compute_dtype(self.param_dtype)
    u_name, sigma_name = name + '/u', name + '/sigma'
    stored = self.has_variable(col, u_name) and self.has_variable(col, sigma_name)
    if not stored and not self.is_mutable_collection(col):
      raise ValueError(f'SpectralNorm: no {u_name!r} / {sigma_name!r} in the {col!r} collection.')
    u0 = s0 = None
    if not stored:
      u0 = conv_lib.random_unit_input(self.make_rng('params'), spec.input_shape, sdtype)
      warm = conv_lib.conv_power_iteration(
        jax.lax.stop_gradient(kernel), u0, spec, n_iterations=max(self.n_warmup_steps, 1), eps=self._eps
      )
      u0, s0 = (warm.u if self.n_warmup_steps else u0), warm.sigma
    u_var = self.variable(col, u_name, lambda: u0.astype(sdtype))
    sigma_var = self.variable(col, sigma_name, lambda: s0.astype(sdtype))
    if tuple(u_var.value.shape) != tuple(spec.input_shape):
      raise ValueError(
        f'SpectralNorm: {col!r} holds {u_name!r} of shape {tuple(u_var.value.shape)}; expected the input shape '
        f'{tuple(spec.input_shape)} (conv_operator_norm=True). Was the state made for another input size?'
      )
    if not update_stats:
      return jax.lax.stop_gradient(jnp.asarray(sigma_var.value))
    res = conv_lib.conv_power_iteration(kernel, u_var.value, spec, n_iterations=self.n_steps, eps=self._eps)
    u_var.value = res.u.astype(sdtype)
    sigma_var.value = jax.lax.stop_gradient(res.sigma).astype(sdtype)
    return res.sigma

  def _normalize_params(self, params, update_stats: bool, einsum_str: str | None, conv_spec=None):
    """The params the layer sees, and the output scale of the fast path (or None)."""
    name = self.layer_instance.name
    flat, treedef = _flatten_boxed(params)
    values = [(k, _unbox(leaf)) for k, leaf in flat]
    selected = wrapping.matrix_keys(values, error_on_non_matrix=self.error_on_non_matrix, layer_name=name)
    if not selected:
      warnings.warn(
        f'SpectralNorm({name}): the wrapped layer has no floating parameter with ndim >= 2; its output is '
        'not normalized.',
        stacklevel=2,
      )
      return params, None
    value_of = dict(values)
    layouts = [wrapping.layer_layout(self.layer_instance, self.layout, k, value_of[k], einsum_str) for k in selected]
    fast = self.fast_path is not False and wrapping.fast_path_applies(
      self.layer_instance, list(value_of), selected, layouts
    )
    if self.fast_path and not fast:
      raise ValueError(
        f'SpectralNorm({name}): fast_path=True but the fast path does not apply to a '
        f'{type(self.layer_instance).__name__} with params {[path_str(k) for k in value_of]} '
        '(it needs a plain Dense/DenseGeneral/Conv/ConvTranspose/ConvLocal/Einsum with one kernel and no '
        'batch axes); pass fast_path=None.'
      )
    new = dict(value_of)
    scale = None
    for keys, lay in zip(selected, layouts, strict=True):
      kernel = value_of[keys]
      if conv_spec is not None and keys == ('kernel',):
        sigma = self._conv_sigma(f'{name}/{path_str(keys)}', kernel, update_stats, conv_spec)
      else:
        sigma = self._sigma(f'{name}/{path_str(keys)}', kernel, lay, update_stats)
      factor = self.target_norm / sigma
      if fast:
        scale = factor
        new[keys] = kernel
      else:
        new[keys] = power.scale_kernel(kernel, factor, lay)
      if self.dtype is not None:
        new[keys] = new[keys].astype(self.dtype)
    if fast and ('bias',) in new and new[('bias',)] is not None:
      b = new[('bias',)]
      new[('bias',)] = (b.astype(scale.dtype) / scale).astype(self.dtype or b.dtype)
    leaves = [_rebox(leaf, new[k]) for k, leaf in flat]
    return jax.tree_util.tree_unflatten(treedef, leaves), scale

  def _sigma(self, name: str, kernel: jax.Array, lay: ResolvedLayout, update_stats: bool) -> jax.Array:
    """sigma of one kernel: a power step from the stored u (training) or the stored sigma.

    The state lives in ``collection_name`` as ``name + '/u'`` (shape
    ``batch + (1, fan_out)``) and ``name + '/sigma'`` (shape ``batch``).
    A subclass may override this to estimate sigma differently.
    """
    u_shape = power.u_shape(kernel.shape, lay)
    stored_u_shape = u_shape[:-1] + (1, u_shape[-1])
    sdtype = power.compute_dtype(self.param_dtype)
    u_name, sigma_name = name + '/u', name + '/sigma'
    col = self.collection_name
    if self.has_variable(col, u_name) and self.has_variable(col, sigma_name):
      u_var, sigma_var = self.variable(col, u_name), self.variable(col, sigma_name)
    else:
      if not self.is_mutable_collection(col):
        raise ValueError(
          f'SpectralNorm: no {u_name!r} / {sigma_name!r} in the {col!r} collection. Pass the whole '
          f"variables of model.init (including {col!r}) to apply, not only 'params'."
        )
      u0 = jax.random.normal(self.make_rng('params'), u_shape, sdtype)
      warm = power.power_iteration(
        jax.lax.stop_gradient(kernel), u0, lay, n_iterations=max(self.n_warmup_steps, 1), eps=self._eps
      )
      u_init = warm.u if self.n_warmup_steps else u0
      u_var = self.variable(col, u_name, lambda: u_init.reshape(stored_u_shape).astype(sdtype))
      sigma_var = self.variable(col, sigma_name, lambda: warm.sigma.astype(sdtype))
    if tuple(u_var.value.shape) != stored_u_shape or tuple(jnp.shape(sigma_var.value)) != stored_u_shape[:-2]:
      raise ValueError(
        f'SpectralNorm: {col!r} holds {u_name!r} of shape {tuple(u_var.value.shape)} and {sigma_name!r} '
        f'of shape {tuple(jnp.shape(sigma_var.value))}; expected {stored_u_shape} and '
        f'{stored_u_shape[:-2]} for a kernel of shape {tuple(kernel.shape)}. Was the state made for another model?'
      )
    if not update_stats:
      return jax.lax.stop_gradient(jnp.asarray(sigma_var.value))
    res = power.power_iteration(kernel, u_var.value.reshape(u_shape), lay, n_iterations=self.n_steps, eps=self._eps)
    u_var.value = res.u.reshape(stored_u_shape).astype(sdtype)
    sigma_var.value = jax.lax.stop_gradient(res.sigma).astype(sdtype)
    return res.sigma


def _normalized(owner: nn.Module, layer: nn.Module, x: jax.Array, update_stats: bool) -> jax.Array:
  """Runs ``layer`` under :class:`SpectralNorm` with the SN options of a convenience layer (``SNDense``, ``SNConv``)."""
  return SpectralNorm(
    layer,
    n_steps=owner.n_steps,
    epsilon=owner.epsilon,
    collection_name=owner.collection_name,
    target_norm=owner.target_norm,
    name='SpectralNorm_0',
  )(x, update_stats=update_stats)


class SNDense(nn.Module):
  """``nn.Dense`` with spectral normalization: ``SpectralNorm(nn.Dense(...))``, fast path.

  Attributes:
    features: output size.
    use_bias, dtype, param_dtype, precision, kernel_init, bias_init: as ``nn.Dense``.
    n_steps, epsilon, target_norm, collection_name: as :class:`SpectralNorm`.
  """

  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  n_steps: int = 1
  epsilon: float = 1e-12
  target_norm: float = 1.0
  collection_name: str = 'batch_stats'

  @nn.compact
  def __call__(self, x: jax.Array, *, update_stats: bool) -> jax.Array:
    """``target_norm * x W / sigma(W) + b``; see :class:`SpectralNorm` for ``update_stats``."""
    dense = nn.Dense(
      self.features,
      use_bias=self.use_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      precision=self.precision,
      kernel_init=self.kernel_init,
      bias_init=self.bias_init,
      name='Dense_0',
    )
    return _normalized(self, dense, x, update_stats)


class SNConv(nn.Module):
  """``nn.Conv`` with spectral normalization of its kernel read as ``(prod(kernel_size) * in, out)``.

  The usual SN-GAN reading of a conv kernel (Miyato et al. 2018); it bounds
  the conv's operator norm only up to a factor of about ``sqrt(prod(kernel_size))``.

  Attributes:
    features, kernel_size, strides, padding, input_dilation, kernel_dilation,
      feature_group_count, use_bias, dtype, param_dtype, precision,
      kernel_init, bias_init: as ``nn.Conv``.
    n_steps, epsilon, target_norm, collection_name: as :class:`SpectralNorm`.
  """

  features: int
  kernel_size: int | Sequence[int]
  strides: None | int | Sequence[int] = 1
  padding: PaddingLike = 'SAME'
  input_dilation: None | int | Sequence[int] = 1
  kernel_dilation: None | int | Sequence[int] = 1
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  n_steps: int = 1
  epsilon: float = 1e-12
  target_norm: float = 1.0
  collection_name: str = 'batch_stats'

  @nn.compact
  def __call__(self, x: jax.Array, *, update_stats: bool) -> jax.Array:
    """The normalized convolution of ``x``; see :class:`SpectralNorm` for ``update_stats``."""
    conv = nn.Conv(
      self.features,
      self.kernel_size,
      strides=self.strides,
      padding=self.padding,
      input_dilation=self.input_dilation,
      kernel_dilation=self.kernel_dilation,
      feature_group_count=self.feature_group_count,
      use_bias=self.use_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      precision=self.precision,
      kernel_init=self.kernel_init,
      bias_init=self.bias_init,
      name='Conv_0',
    )
    return _normalized(self, conv, x, update_stats)


__all__ = ['SNConv', 'SNDense', 'SpectralNorm']
