"""Flax linen modules: a drop-in, faster ``flax.linen.SpectralNorm``.

``snjax.SpectralNorm`` takes the constructor arguments and the call signature
of ``flax.linen.SpectralNorm`` and keeps its state where flax keeps it (the
``batch_stats`` collection, names ``'<layer>/<param path>/u'`` and
``'.../sigma'``, u of shape ``(1, fan_out)``), so changing the import is the
whole migration, and a flax checkpoint loads as is. The maths is the
functional core's (:func:`snjax.power_iteration`); this module only
places the state in the collection and picks the fast path
(``snjax._wrapping``).

After Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks" (https://arxiv.org/abs/1802.05957).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta
from flax.typing import Dtype, Initializer, PaddingLike, PrecisionLike

from snjax import _leaf
from snjax import _wrapping as wrapping
from snjax._conv import ConvSpec
from snjax._layout import LayoutOption
from snjax._operators import compute_dtype
from snjax._options import SNOptions, check_float, check_int
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
    parameter), and the state starts warmed up (``n_warmup_iterations`` power
    steps), so the first sigma is already accurate (flax's starts at 1).
  * Fast path: a ``Dense``, ``DenseGeneral``, ``Conv``, ``ConvTranspose``,
    ``ConvLocal`` or ``Einsum`` whose output is smaller than its kernel (a
    wide layer on a small batch) runs on the raw kernel and its output is
    scaled, ``layer(x; W/sigma, b) = layer(x; W, b*sigma) / sigma``: no
    ``W / sigma`` is materialized. Other layers materialize ``W / sigma``.
  * ``DenseGeneral``'s ``features`` axes are all output axes and an
    ``Einsum`` kernel's axes are read from its equation (flax reads only the
    last axis as output); see ``snjax._wrapping.auto_layout``.
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
    layout: ``None`` (the layer's natural layout, ``snjax._wrapping.auto_layout``)
      or a layout option of :func:`snjax.sn_apply` (paths relative to the layer,
      e.g. ``'kernel'``).
    fast_path: ``None`` (use it when exact and the layer's output is smaller
      than its kernel), ``False`` (always materialize ``W / sigma``), ``True``
      (require it: error if it does not apply).
    n_warmup_iterations: power steps when the state is created (>= 0).
    eps: deprecated alias of ``epsilon``.
    n_warmup_steps: deprecated name of ``n_warmup_iterations``.
    conv_operator_norm: for a wrapped ``nn.Conv``: normalize by the operator
      norm of the convolution on the call's input size (power iteration on
      the conv and its transpose, ``snjax._conv``; u is input-shaped)
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
  n_warmup_iterations: int = 15
  conv_operator_norm: bool = False
  eps: float | None = None
  n_warmup_steps: int | None = None

  def _options(self) -> SNOptions:
    """The numeric options, checked (deprecated aliases applied with a warning)."""
    epsilon, warmup = self.epsilon, self.n_warmup_iterations
    if self.eps is not None:
      warnings.warn("SpectralNorm(eps=...) is deprecated; use epsilon=... (flax's name).", DeprecationWarning, 3)
      epsilon = self.eps
    if self.n_warmup_steps is not None:
      warnings.warn(
        'SpectralNorm(n_warmup_steps=...) is deprecated; use n_warmup_iterations=...', DeprecationWarning, 3
      )
      warmup = self.n_warmup_steps
    check_int('n_steps', self.n_steps, 1)
    check_float('epsilon', epsilon, minimum=0.0)
    return SNOptions(
      n_power_iterations=self.n_steps, n_warmup_iterations=warmup, eps=epsilon, target_norm=self.target_norm
    )

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
    options = self._options()
    if update_stats and not self.is_mutable_collection(self.collection_name):
      raise ValueError(
        f'SpectralNorm({self.layer_instance.name}) was called with update_stats=True but the '
        f'{self.collection_name!r} collection, which holds its u and sigma, is not mutable: pass '
        f'mutable=[{self.collection_name!r}] to apply (model.apply(variables, ..., '
        f'mutable=[{self.collection_name!r}])), or update_stats=False to evaluate.'
      )
    einsum_str = kwargs.get('einsum_str', args[1] if len(args) > 1 and isinstance(args[1], str) else None)
    conv_spec = self._conv_spec(args, kwargs) if self.conv_operator_norm else None
    scratch: dict[str, Any] = {}

    def normalize(variables):
      scratch['raw'] = variables
      params = variables.get('params', {})
      x = args[0] if args else kwargs.get('inputs')
      out, scratch['scale'] = self._normalize_params(
        params, update_stats, einsum_str, conv_spec, options, getattr(x, 'shape', None)
      )
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
    return wrapping.scale_output(y, scratch.get('scale'))

  def _conv_spec(self, args, kwargs) -> ConvSpec:
    """The :class:`snjax.ConvSpec` of the wrapped ``nn.Conv`` on this call's input."""
    layer = self.layer_instance
    x = args[0] if args else kwargs.get('inputs')
    if not isinstance(layer, nn.Conv) or x is None:
      raise ValueError(
        f'SpectralNorm({layer.name}): conv_operator_norm=True needs a wrapped flax.linen.Conv called on an '
        f'input array, got a {type(layer).__name__}.'
      )
    ks = (layer.kernel_size,) if isinstance(layer.kernel_size, int) else tuple(layer.kernel_size)
    return ConvSpec(
      input_shape=tuple(x.shape[-(len(ks) + 1) :]),
      strides=1 if layer.strides is None else layer.strides,
      padding=layer.padding,
      rhs_dilation=1 if layer.kernel_dilation is None else layer.kernel_dilation,
      lhs_dilation=1 if layer.input_dilation is None else layer.input_dilation,
      feature_group_count=layer.feature_group_count,
    )

  def _normalize_params(self, params, update_stats: bool, einsum_str, conv_spec, options: SNOptions, input_shape):
    """The params the layer sees, and the output scale of the fast path (or None)."""
    name = self.layer_instance.name
    flat, treedef = _flatten_boxed(params)
    values = {k: _unbox(leaf) for k, leaf in flat}
    selected = wrapping.matrix_keys(list(values.items()), error_on_non_matrix=self.error_on_non_matrix, layer_name=name)
    if not selected:
      warnings.warn(
        f'SpectralNorm({name}): the wrapped layer has no floating parameter with ndim >= 2; its output is '
        'not normalized.',
        stacklevel=2,
      )
      return params, None
    layouts = [wrapping.layer_layout(self.layer_instance, self.layout, k, values[k], einsum_str) for k in selected]
    leaves = {
      k: _leaf.plan(f'{name}/{path_str(k)}', values[k], lay, conv_spec if k == ('kernel',) else None)
      for k, lay in zip(selected, layouts, strict=True)
    }

    def sigma_of(keys, kernel, leaf):
      return self._sigma(leaf, kernel, update_stats, options)

    new, scale = wrapping.normalize_layer(
      self.layer_instance,
      values,
      leaves,
      layouts,
      sigma_of,
      target_norm=options.target_norm,
      dtype=self.dtype,
      fast_path=self.fast_path,
      layer_name=name,
      input_shape=input_shape,
    )
    leaves_out = [_rebox(leaf, new[k]) for k, leaf in flat]
    return jax.tree_util.tree_unflatten(treedef, leaves_out), scale

  def _sigma(self, leaf: _leaf.Leaf, kernel: jax.Array, update_stats: bool, options: SNOptions) -> jax.Array:
    """sigma of one kernel: power steps from the stored u (training) or the stored sigma (evaluation).

    The state lives in ``collection_name`` as ``leaf.path + '/u'`` (flax's
    shape ``batch + (1, fan_out)``, or the input shape in conv mode) and
    ``leaf.path + '/sigma'`` (shape ``batch``). A subclass may override this
    to estimate sigma differently.
    """
    col, sdtype = self.collection_name, compute_dtype(self.param_dtype)
    stored = wrapping.stored_u_shape(leaf)
    u_name, sigma_name = leaf.path + '/u', leaf.path + '/sigma'
    if self.has_variable(col, u_name) and self.has_variable(col, sigma_name):
      u_var, sigma_var = self.variable(col, u_name), self.variable(col, sigma_name)
    else:
      if not self.is_mutable_collection(col):
        raise ValueError(
          f'SpectralNorm: no {u_name!r} / {sigma_name!r} in the {col!r} collection. Pass the whole '
          f"variables of model.init (including {col!r}) to apply, not only 'params'."
        )
      ((u0, s0),) = _leaf.init_states([self.make_rng('params')], [jax.lax.stop_gradient(kernel)], [leaf], options)
      u_var = self.variable(col, u_name, lambda: u0.reshape(stored).astype(sdtype))
      sigma_var = self.variable(col, sigma_name, lambda: s0.astype(sdtype))
    if tuple(u_var.value.shape) != stored or tuple(jnp.shape(sigma_var.value)) != leaf.sigma_shape:
      raise ValueError(
        f'SpectralNorm: {col!r} holds {u_name!r} of shape {tuple(u_var.value.shape)} and {sigma_name!r} '
        f'of shape {tuple(jnp.shape(sigma_var.value))}; expected {stored} and {leaf.sigma_shape} for a kernel '
        f'of shape {tuple(kernel.shape)}. Was the state made for another model or input size?'
      )
    if not update_stats:
      return jax.lax.stop_gradient(jnp.asarray(sigma_var.value))
    (res,) = _leaf.estimate([kernel], [u_var.value.reshape(leaf.u_shape)], [leaf], options)
    u_var.value = res.u.reshape(stored).astype(sdtype)
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

  The kernel is used as ``target_norm * W / sigma(W)`` (Miyato et al. 2018,
  https://arxiv.org/abs/1802.05957).

  ``use_bias``, ``dtype``, ``param_dtype``, ``precision``, ``kernel_init`` and
  ``bias_init`` are as in ``nn.Dense``; ``n_steps``, ``epsilon``,
  ``target_norm`` and ``collection_name`` as in :class:`SpectralNorm`.

  Attributes:
    features: output size.
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

  ``features``, ``kernel_size``, ``strides``, ``padding``,
  ``input_dilation``, ``kernel_dilation``, ``feature_group_count``,
  ``use_bias``, ``dtype``, ``param_dtype``, ``precision``, ``kernel_init``
  and ``bias_init`` are as in ``nn.Conv``; ``n_steps``, ``epsilon``,
  ``target_norm`` and ``collection_name`` as in :class:`SpectralNorm`.
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
