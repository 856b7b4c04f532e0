"""snjax.bounds: certified upper bounds, against the dense matrix of the convolution.

Reference: ``flax.linen.Conv`` applied to the identity basis (exact in float32: each
entry is one kernel entry), singular values by numpy in float64.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import snjax


def dense(kernel, input_shape, **conv_kwargs):
  n = math.prod(input_shape)
  layer = nn.Conv(kernel.shape[-1], kernel.shape[:-2], use_bias=False, **conv_kwargs)
  basis = jnp.eye(n, dtype=kernel.dtype).reshape((n,) + tuple(input_shape))
  return np.asarray(layer.apply({'params': {'kernel': kernel}}, basis), np.float64).reshape(n, -1)


def _kernel(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


# (kernel shape, input shape, flax kwargs, snjax kwargs)
CIRCULAR = [
  ((3, 3, 2, 3), (6, 6, 2), dict(strides=1), {}),
  ((3, 3, 2, 3), (6, 6, 2), dict(strides=2), dict(strides=2)),
  ((4, 4, 2, 4), (8, 6, 4), dict(strides=(2, 3), feature_group_count=2), dict(strides=(2, 3), feature_group_count=2)),
  ((3, 2, 2), (8, 2), dict(kernel_dilation=2, strides=2), dict(rhs_dilation=2, strides=2)),
  ((5, 5, 1, 2), (3, 3, 1), {}, {}),  # kernel larger than the input: taps wrap around
  ((2, 2, 2, 1, 2), (4, 4, 2, 1), dict(strides=(1, 2, 2)), dict(strides=(1, 2, 2))),
]


@pytest.mark.parametrize('case', CIRCULAR, ids=lambda c: f'{c[0]}-{c[1]}-{c[3]}')
def test_circular_singular_values_are_the_dense_spectrum(case):
  kshape, input_shape, flax_kwargs, kwargs = case
  kernel = _kernel(0, kshape)
  expected = np.linalg.svd(dense(kernel, input_shape, padding='CIRCULAR', **flax_kwargs), compute_uv=False)
  got = np.asarray(snjax.circular_conv_singular_values(kernel, input_shape, **kwargs))
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * expected[0])
  # Exact method: the norm; Gram iteration: an upper bound within 1e-3 (10 iterations).
  b_svd = float(snjax.conv_norm_bound(kernel, input_shape, padding='CIRCULAR', method='svd', **kwargs))
  b_gram = float(snjax.conv_norm_bound(kernel, input_shape, padding='CIRCULAR', **kwargs))
  assert expected[0] <= b_svd <= expected[0] * (1 + 1e-4)
  assert expected[0] <= b_gram <= expected[0] * (1 + 1e-2)


ZERO = [
  ((3, 2, 3), (9, 2), dict(padding='SAME')),
  ((3, 2, 3), (9, 2), dict(padding='VALID', strides=2)),
  ((3, 2, 2), (9, 2), dict(padding='CAUSAL', kernel_dilation=2)),
  ((3, 3, 2, 2), (6, 6, 2), dict(padding='SAME', strides=2)),
  ((4, 4, 2, 2), (8, 8, 2), dict(padding='SAME', strides=2)),
  ((3, 3, 2, 4), (6, 5, 4), dict(padding=((3, 0), (1, 2)), feature_group_count=2)),
  ((3, 3, 2, 2), (5, 5, 2), dict(padding=((1, 1), (2, 0)), input_dilation=2)),
  ((2, 2, 2, 1, 2), (3, 4, 3, 1), dict(padding='SAME', strides=(2, 1, 2))),
]


def _snjax_kwargs(flax_kwargs):
  names = {'kernel_dilation': 'rhs_dilation', 'input_dilation': 'lhs_dilation'}
  return {names.get(k, k): v for k, v in flax_kwargs.items()}


@pytest.mark.parametrize('case', ZERO, ids=lambda c: f'{c[0]}-{c[1]}-{c[2]}')
def test_zero_padding_bound_is_above_the_dense_norm(case):
  kshape, input_shape, flax_kwargs = case
  kernel = _kernel(1, kshape)
  truth = float(np.linalg.norm(dense(kernel, input_shape, **flax_kwargs), 2))
  kwargs = _snjax_kwargs(flax_kwargs)
  for method in ('svd', 'gram'):
    bound = float(snjax.conv_norm_bound(kernel, input_shape, method=method, **kwargs))
    assert bound >= truth
    assert bound <= 2.0 * truth  # sanity: the embedding bound is the circular norm on a slightly larger grid


def test_zero_padding_bound_tightens_with_the_input_size():
  # The embedding's excess over the true norm shrinks as the input grows: within 1% at 64 samples (1D).
  kernel = _kernel(2, (3, 2, 2))
  gaps = []
  for n in (8, 64):
    truth = float(np.linalg.norm(dense(kernel, (n, 2), padding='SAME'), 2))
    gaps.append(float(snjax.conv_norm_bound(kernel, (n, 2), method='svd')) / truth - 1)
  assert 0 <= gaps[1] < gaps[0]
  assert gaps[1] < 1e-2


@settings(max_examples=5)
@given(
  d=st.integers(1, 2),
  n=st.integers(2, 6),
  k=st.integers(1, 3),
  cin=st.integers(1, 3),
  cout=st.integers(1, 3),
  stride=st.integers(1, 2),
  padding=st.sampled_from(['SAME', 'VALID', 'CIRCULAR']),
  seed=st.integers(0, 2**16),
)
def test_bound_is_always_above_the_true_norm(d, n, k, cin, cout, stride, padding, seed):
  if padding == 'VALID' and k > n:
    return
  kernel = _kernel(seed, (k,) * d + (cin, cout))
  input_shape = (n,) * d + (cin,)
  truth = float(np.linalg.norm(dense(kernel, input_shape, strides=stride, padding=padding), 2))
  bound = float(snjax.conv_norm_bound(kernel, input_shape, strides=stride, padding=padding, n_iterations=6))
  assert bound >= truth


def test_gram_iteration_on_matrices():
  rng = np.random.default_rng(0)
  m = rng.standard_normal((5, 7, 4)) + 1j * rng.standard_normal((5, 7, 4))
  sv = np.linalg.norm(m, 2, axis=(-2, -1))
  previous = np.full(5, np.inf)
  for t in range(0, 8):
    b = np.asarray(snjax.gram_iteration_bound(jnp.asarray(m, jnp.complex64), t))
    assert np.all(b >= sv * (1 - 1e-5))
    assert np.all(b <= previous * (1 + 1e-5))  # monotone: each iteration tightens
    previous = b
  np.testing.assert_allclose(previous, sv, rtol=1e-3)
  # t = 0 is the Frobenius norm; a zero matrix gives 0 and a finite gradient.
  np.testing.assert_allclose(
    snjax.gram_iteration_bound(jnp.asarray(m.real), 0), np.linalg.norm(m.real, axis=(-2, -1)), rtol=1e-5
  )
  assert float(snjax.gram_iteration_bound(jnp.zeros((3, 3)), 5)) == 0.0
  g = jax.grad(lambda w: snjax.gram_iteration_bound(w, 5))(jnp.zeros((3, 3)))
  assert np.all(np.isfinite(g))
  w = jnp.asarray(rng.standard_normal((6, 4)), jnp.float32)
  assert float(snjax.matrix_norm_bound(w)) >= float(np.linalg.norm(np.asarray(w, np.float64), 2))


def test_bound_is_differentiable_and_jittable():
  kernel = _kernel(3, (3, 3, 2, 2))
  f = jax.jit(lambda k: snjax.conv_norm_bound(k, (6, 6, 2), padding='CIRCULAR'))
  grad = jax.grad(f)(kernel)
  assert np.all(np.isfinite(grad))
  # d bound / dK along K itself: the bound is 1-homogeneous in K.
  np.testing.assert_allclose(float(jnp.vdot(grad, kernel)), float(f(kernel)), rtol=1e-3)


def test_unsupported_geometries_raise():
  kernel = _kernel(0, (3, 3, 2, 2))
  with pytest.raises(ValueError, match='REFLECT'):
    snjax.conv_norm_bound(kernel, (6, 6, 2), padding='REFLECT')
  with pytest.raises(ValueError, match='must divide'):
    snjax.circular_conv_singular_values(kernel, (7, 6, 2), strides=2)
  with pytest.raises(ValueError, match='method'):
    snjax.conv_norm_bound(kernel, (6, 6, 2), method='power')
  with pytest.raises(ValueError, match='n_iterations'):
    snjax.gram_iteration_bound(jnp.eye(3), -1)
  # A stride that does not divide a circular input: still an upper bound (the stride is dropped there).
  truth = float(np.linalg.norm(dense(kernel, (7, 6, 2), padding='CIRCULAR', strides=2), 2))
  assert float(snjax.conv_norm_bound(kernel, (7, 6, 2), padding='CIRCULAR', strides=2)) >= truth
