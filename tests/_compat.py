"""What the tests need from APIs that moved between the oldest supported jax / flax (pyproject's lower bounds)
and the newest: the versions, for ``pytest.mark.skipif``, and shims with one spelling for both."""

import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from snjax import _compat as _snjax_compat


def _version(text: str) -> tuple[int, ...]:
  return tuple(int(part) for part in re.findall(r'\d+', text)[:3])


JAX_VERSION = _version(jax.__version__)
FLAX_VERSION = _version(flax.__version__)


def enable_x64():
  """The context manager that turns on float64 (``jax.enable_x64`` from jax 0.4.36; ``jax.experimental`` before)."""
  if hasattr(jax, 'enable_x64'):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64 as experimental_enable_x64

  return experimental_enable_x64(True)


class _ReflectConv:
  """``nn.Conv(padding='REFLECT')`` as flax >= 0.10.6 defines it (flax/linen/linear.py, ``Conv.__call__``):
  ``jnp.pad(x, ((k_dilated - 1) // 2, k_dilated // 2), mode='reflect')`` on every spatial axis, then ``'VALID'``.
  For flax < 0.10.6, which has no ``'REFLECT'``; the references of the tests stay Flax's convolution."""

  def __init__(self, features, kernel_size, kernel_dilation=1, **conv_kwargs):
    sizes = tuple(kernel_size)
    dilations = (kernel_dilation,) * len(sizes) if isinstance(kernel_dilation, int) else tuple(kernel_dilation)
    spans = [(k - 1) * r + 1 for k, r in zip(sizes, dilations, strict=True)]
    self.pads = [((span - 1) // 2, span // 2) for span in spans]
    self.conv = nn.Conv(features, sizes, padding='VALID', kernel_dilation=kernel_dilation, **conv_kwargs)

  def apply(self, variables, x):
    pads = [(0, 0)] * (x.ndim - len(self.pads) - 1) + self.pads + [(0, 0)]
    return self.conv.apply(variables, jnp.pad(x, pads, mode='reflect'))


def flax_conv(features, kernel_size, *, padding='SAME', **conv_kwargs):
  """``nn.Conv(features, kernel_size, padding=padding, ...)``; its ``'REFLECT'`` padding on flax < 0.10.6 too."""
  if padding == 'REFLECT' and FLAX_VERSION < (0, 10, 6):
    return _ReflectConv(features, kernel_size, **conv_kwargs)
  return nn.Conv(features, kernel_size, padding=padding, **conv_kwargs)


# Flax NNX.
variable_value = _snjax_compat.variable_value  # variable[...], on a Variable or (flax < 0.11) a VariableState
set_variable_value = _snjax_compat.set_variable_value  # variable[...] = value
OptState = nnx.OptState if hasattr(nnx, 'OptState') else nnx.training.optimizer.OptState  # exported from 0.10.7
nnx_list = nnx.List if hasattr(nnx, 'List') else list  # a Module's list of submodules: nnx.List from flax 0.12


def variable_types(state):
  """The Variable types of the leaves of an ``nnx.State``, in order (before flax 0.11 the leaves were
  ``VariableState`` objects, their type in ``.type``)."""
  if FLAX_VERSION < (0, 11, 0):
    return [v.type for v in jax.tree.leaves(state, is_leaf=lambda v: isinstance(v, nnx.VariableState))]
  return [type(v) for v in jax.tree.leaves(state, is_leaf=lambda v: isinstance(v, nnx.Variable))]


def state_of(node, *filters):
  """``nnx.state(node, *filters)``; ``State.filter`` on flax < 0.11, whose ``nnx.state`` does not take the
  ``nnx.State`` that ``nnx.grad`` of a Module returns."""
  if FLAX_VERSION < (0, 11, 0) and isinstance(node, nnx.State):
    return node.filter(*filters)
  return nnx.state(node, *filters)


def to_pure_dict(state):
  """``nnx.to_pure_dict(state)`` (flax >= 0.10.4; ``State.to_pure_dict()`` before)."""
  return nnx.to_pure_dict(state) if hasattr(nnx, 'to_pure_dict') else state.to_pure_dict()


def optimizer_update(optimizer, model, grads):
  """``optimizer.update(model, grads)`` (flax >= 0.11; the optimizer held the model and took ``grads`` before)."""
  if FLAX_VERSION >= (0, 11, 0):
    optimizer.update(model, grads)
  else:
    optimizer.update(grads)
