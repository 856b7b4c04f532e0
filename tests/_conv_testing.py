"""The reference of the convolution tests: the exact dense matrix of a convolution, and random kernels.

The matrix of ``x -> flax.linen.Conv(x)`` (no bias; flax's convolution, not snjax's own) on one input is
read off the convolution applied to the identity basis. Each of its entries is one kernel entry times 1 (or,
where a circular convolution's taps wrap onto the same input sample, a sum of a few kernel entries), so the
float32 matrix is exact up to that rounding; its singular values come from numpy's SVD in float64.

The map is compiled once per (kernel shape, input shape, convolution options): one XLA program instead of an
eager call per operation, shared by every test of a test process that builds the same convolution.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import snjax
from tests import _random
from tests._compat import flax_conv


def _frozen(value):
  """Lists (flax accepts explicit padding as a list of pairs) as tuples, so the options can key a cache."""
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  return value


@functools.cache
def _conv_matrix_fn(kernel_shape, input_shape, options):
  layer = flax_conv(kernel_shape[-1], kernel_shape[:-2], use_bias=False, **dict(options))
  n = math.prod(input_shape)

  @jax.jit
  def matrix(kernel):
    basis = jnp.eye(n, dtype=kernel.dtype).reshape((n, *input_shape))
    return layer.apply({'params': {'kernel': kernel}}, basis).reshape(n, -1)

  return matrix


def conv_matrix(kernel, input_shape, **flax_conv_options):
  """The ``(in_dim, out_dim)`` matrix of ``nn.Conv(**flax_conv_options)`` on one input, as float64.

  Args:
    kernel: ``(*spatial, in/groups, out)``, Flax layout (float32, or float64 under ``jax.enable_x64``).
    input_shape: one input's shape, ``(*spatial, in)``.
    **flax_conv_options: ``flax.linen.Conv``'s ``strides``, ``padding``, ``kernel_dilation``, ``input_dilation``,
      ``feature_group_count``.

  Returns:
    ``M`` with ``conv(x).ravel() = x.ravel() @ M``, float64.
  """
  options = tuple(sorted((k, _frozen(v)) for k, v in flax_conv_options.items()))
  fn = _conv_matrix_fn(tuple(kernel.shape), tuple(input_shape), options)
  return np.asarray(fn(jnp.asarray(kernel)), np.float64)


def conv_norm(kernel, input_shape, **flax_conv_options):
  """The operator norm of the convolution: the float64 SVD of :func:`conv_matrix`."""
  return float(np.linalg.norm(conv_matrix(kernel, input_shape, **flax_conv_options), 2))


def random_kernel(seed, shape):
  """A float32 kernel of standard normal entries."""
  return jnp.asarray(_random.normal(seed, shape, stream=3))


# (kernel spatial, input shape, groups, cout, flax Conv options): every padding, stride, dilation and grouping that
# snjax's convolutions take, in 1D, 2D and 3D. ConvSpec calls flax's kernel_dilation rhs_dilation.
CASES = [
  ((3,), (12, 2), 1, 3, dict(strides=1, padding='SAME')),
  ((3,), (12, 2), 1, 3, dict(strides=2, padding='VALID')),
  ((3,), (11, 2), 1, 2, dict(strides=1, padding='CAUSAL', kernel_dilation=2)),
  ((3, 3), (6, 6, 2), 1, 3, dict(strides=1, padding='SAME')),
  ((4, 4), (8, 8, 2), 1, 3, dict(strides=2, padding='SAME')),
  ((3, 3), (7, 6, 2), 1, 2, dict(strides=(1, 2), padding='SAME', kernel_dilation=(2, 1))),
  ((3, 3), (6, 6, 4), 2, 4, dict(strides=1, padding='SAME', feature_group_count=2)),
  ((3, 3), (6, 6, 2), 1, 2, dict(strides=2, padding='CIRCULAR')),
  ((2, 3), (5, 6, 2), 1, 2, dict(strides=1, padding=((2, 0), (1, 3)))),
  ((3, 3), (5, 5, 2), 1, 2, dict(strides=1, padding='REFLECT')),
  ((2, 2, 2), (4, 4, 3, 2), 1, 2, dict(strides=(1, 2, 1), padding='SAME')),
]


def case_id(case):
  return f'{case[0]}-{case[1]}-{case[4]}'


def make_case(case, seed=0):
  """``(kernel, snjax.ConvSpec, flax Conv options)`` of an entry of :data:`CASES`."""
  ks, input_shape, groups, cout, options = case
  kernel = random_kernel(seed, ks + (input_shape[-1] // groups, cout))
  spec = snjax.ConvSpec(
    input_shape,
    strides=options.get('strides', 1),
    padding=options.get('padding', 'SAME'),
    rhs_dilation=options.get('kernel_dilation', 1),
    feature_group_count=groups,
  )
  return kernel, spec, options
