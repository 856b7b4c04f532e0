"""snjax.lipschitz certified bounds (conv_norm_bound, circular_conv_singular_values), against dense matrices.

Covers snjax/lipschitz/_bounds.py (which operator is bounded), _circular.py (the FFT blocks) and _dense.py (the
exact Gram matrix); Gram iteration on matrices is in test_gram.py.

Reference: the explicit dense matrix of the convolution (tests/_conv_testing.py: ``flax.linen.Conv`` applied to the
identity basis; exact in float32), singular values by numpy in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import snjax
from tests._compat import enable_x64
from tests._conv_testing import conv_matrix as dense
from tests._conv_testing import random_kernel


def spec_of(input_shape, **flax_kwargs):
  """The ConvSpec of ``nn.Conv(**flax_kwargs)`` on ``input_shape`` (Flax's dilation names are ConvSpec's)."""
  names = {'kernel_dilation': 'rhs_dilation', 'input_dilation': 'lhs_dilation'}
  return snjax.ConvSpec(tuple(input_shape), **{names.get(k, k): v for k, v in flax_kwargs.items()})


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
  kernel = random_kernel(0, kshape)
  expected = np.linalg.svd(dense(kernel, input_shape, padding='CIRCULAR', **flax_kwargs), compute_uv=False)
  spec = snjax.ConvSpec(input_shape, padding='CIRCULAR', **kwargs)
  got = np.asarray(snjax.lipschitz.circular_conv_singular_values(kernel, spec))
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * expected[0])
  # Exact method: the norm; Gram iteration: an upper bound within 1e-3 (10 iterations).
  b_svd = float(snjax.lipschitz.conv_norm_bound(kernel, spec, method='svd'))
  b_gram = float(snjax.lipschitz.conv_norm_bound(kernel, spec))
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


@pytest.mark.parametrize('case', ZERO, ids=lambda c: f'{c[0]}-{c[1]}-{c[2]}')
def test_zero_padding_bound_is_within_1e3_of_the_dense_norm(case):
  # Small operators: Gram iteration / eigvalsh on the exact Gram matrix, float32 with its margin.
  kshape, input_shape, flax_kwargs = case
  kernel = random_kernel(1, kshape)
  truth = float(np.linalg.norm(dense(kernel, input_shape, **flax_kwargs), 2))
  spec = spec_of(input_shape, **flax_kwargs)
  for method in ('svd', 'gram'):
    bound = float(snjax.lipschitz.conv_norm_bound(kernel, spec, method=method))
    assert truth <= bound <= truth * (1 + 1e-3), method
  assert snjax.lipschitz.conv_bound_description(kshape, spec)[0]
  # The FFT embedding (operator='fourier') is an upper bound too, looser on these small inputs.
  embedded = float(snjax.lipschitz.conv_norm_bound(kernel, spec, operator='fourier'))
  assert truth <= embedded <= 2.0 * truth
  assert not snjax.lipschitz.conv_bound_description(kshape, spec, operator='fourier')[0]


def test_zero_padding_embedding_tightens_with_the_input_size():
  # The embedding's excess over the true norm shrinks as the input grows: within 1% at 64 samples (1D).
  kernel = random_kernel(2, (3, 2, 2))
  gaps = []
  for n in (8, 64):
    truth = float(np.linalg.norm(dense(kernel, (n, 2), padding='SAME'), 2))
    bound = snjax.lipschitz.conv_norm_bound(kernel, snjax.ConvSpec((n, 2)), method='svd', operator='fourier')
    gaps.append(float(bound) / truth - 1)
  assert 0 <= gaps[1] < gaps[0]
  assert gaps[1] < 1e-2


@settings(max_examples=8, deadline=None)
@given(
  d=st.integers(1, 3),
  n=st.integers(2, 6),
  k=st.integers(1, 3),
  cin=st.integers(1, 3),
  cout=st.integers(1, 3),
  stride=st.integers(1, 2),
  dilation=st.integers(1, 2),
  padding=st.sampled_from(['SAME', 'VALID', 'CIRCULAR', 'REFLECT', 'explicit']),
  seed=st.integers(0, 2**16),
)
def test_bound_is_above_the_true_norm_and_within_one_percent(d, n, k, cin, cout, stride, dilation, padding, seed):
  if d == 3:
    n = min(n, 4)
  span = (k - 1) * dilation + 1
  if padding == 'VALID' and span > n:
    return
  if padding == 'REFLECT' and span // 2 >= n:
    return
  if padding == 'explicit':
    padding = [(i % 3, (i + seed) % 2) for i in range(d)]
    if n + min(p[0] + p[1] for p in padding) < span:
      return
  kernel = random_kernel(seed, (k,) * d + (cin, cout))
  input_shape = (n,) * d + (cin,)
  flax_kwargs = dict(strides=stride, padding=padding, kernel_dilation=dilation)
  truth = float(np.linalg.norm(dense(kernel, input_shape, **flax_kwargs), 2))
  bound = float(snjax.lipschitz.conv_norm_bound(kernel, spec_of(input_shape, **flax_kwargs)))
  assert truth <= bound <= truth * (1 + 1e-2)


def test_dense_bound_in_float64_is_within_1e6():
  cases = [
    ((3, 3, 3, 4), (5, 5, 3), dict(padding='SAME')),
    ((4, 4, 2, 3), (8, 8, 2), dict(padding='SAME', strides=2)),
    ((3, 2, 2), (10, 2), dict(padding='CAUSAL', kernel_dilation=2)),  # even/odd samples decouple: a tie at the top
  ]
  with enable_x64():
    for i, (kshape, input_shape, flax_kwargs) in enumerate(cases):
      kernel = jax.random.normal(jax.random.key(10 + i), kshape, jnp.float64)
      truth = float(np.linalg.norm(dense(kernel, input_shape, **flax_kwargs), 2))
      spec = spec_of(input_shape, **flax_kwargs)
      gram = snjax.lipschitz.conv_norm_bound(kernel, spec)
      svd = snjax.lipschitz.conv_norm_bound(kernel, spec, method='svd')
      assert gram.dtype == jnp.float64
      assert truth <= float(gram) <= truth * (1 + 1e-6), kshape
      assert truth <= float(svd) <= truth * (1 + 1e-9), kshape


def test_dense_bound_jit_gradient_and_zero_kernel():
  kernel = random_kernel(4, (3, 3, 2, 3))
  spec = snjax.ConvSpec((5, 5, 2), padding='SAME')
  f = jax.jit(lambda k: snjax.lipschitz.conv_norm_bound(k, spec))
  np.testing.assert_allclose(float(f(kernel)), float(snjax.lipschitz.conv_norm_bound(kernel, spec)), rtol=1e-6)
  # The gradient: 1-homogeneity (vdot(grad, K) = bound) and a central difference along a random direction.
  grad = jax.grad(f)(kernel)
  np.testing.assert_allclose(float(jnp.vdot(grad, kernel)), float(f(kernel)), rtol=1e-3)
  direction = random_kernel(6, kernel.shape)
  h = 1e-2
  slope = (float(f(kernel + h * direction)) - float(f(kernel - h * direction))) / (2 * h)
  np.testing.assert_allclose(float(jnp.vdot(grad, direction)), slope, rtol=2e-2)
  zero = jnp.zeros_like(kernel)
  assert float(f(zero)) == 0.0
  assert np.all(np.isfinite(jax.grad(f)(zero)))


def test_operator_choice_and_dense_limit():
  kernel = random_kernel(5, (3, 3, 2, 2))
  shape = (6, 6, 2)  # min(in_dim, out_dim) = 72
  same, circular, reflect = (snjax.ConvSpec(shape, padding=p) for p in ('SAME', 'CIRCULAR', 'REFLECT'))
  bound, describe = snjax.lipschitz.conv_norm_bound, snjax.lipschitz.conv_bound_description
  truth_circ = float(np.linalg.norm(dense(kernel, shape, padding='CIRCULAR'), 2))
  # Circular: the FFT blocks are exact already, and the dense path agrees.
  assert describe(kernel.shape, circular)[1].startswith('circular')
  b_dense = float(bound(kernel, circular, operator='dense', method='svd'))
  assert truth_circ <= b_dense <= truth_circ * (1 + 1e-4)
  # Zero padding above dense_limit falls back to the embedding (looser, still above).
  truth = float(np.linalg.norm(dense(kernel, shape, padding='SAME'), 2))
  small = float(bound(kernel, same))
  large = float(bound(kernel, same, dense_limit=71))
  assert truth <= small < large
  assert 'embedding' in describe(kernel.shape, same, dense_limit=71)[1]
  assert 'exact Gram matrix (72x72)' in describe(kernel.shape, same)[1]
  # REFLECT: certified through the dense Gram matrix when small, a clear error when it is not.
  truth_reflect = float(np.linalg.norm(dense(kernel, shape, padding='REFLECT'), 2))
  assert truth_reflect <= float(bound(kernel, reflect)) <= truth_reflect * 1.001
  with pytest.raises(ValueError, match='REFLECT.*dense_limit=10'):
    bound(kernel, reflect, dense_limit=10)
  with pytest.raises(ValueError, match='operator'):
    bound(kernel, same, operator='toeplitz')
  with pytest.raises(ValueError, match='dense_limit'):
    bound(kernel, same, dense_limit=-1)
  with pytest.raises(ValueError, match='n_iterations'):
    bound(kernel, same, n_iterations=2.5)


def test_bound_is_differentiable_and_jittable():
  kernel = random_kernel(3, (3, 3, 2, 2))
  f = jax.jit(lambda k: snjax.lipschitz.conv_norm_bound(k, snjax.ConvSpec((6, 6, 2), padding='CIRCULAR')))
  grad = jax.grad(f)(kernel)
  assert np.all(np.isfinite(grad))
  # d bound / dK along K itself: the bound is 1-homogeneous in K.
  np.testing.assert_allclose(float(jnp.vdot(grad, kernel)), float(f(kernel)), rtol=1e-3)


def test_unsupported_geometries_raise():
  kernel = random_kernel(0, (3, 3, 2, 2))
  with pytest.raises(ValueError, match='REFLECT'):
    snjax.lipschitz.conv_norm_bound(kernel, snjax.ConvSpec((6, 6, 2), padding='REFLECT'), operator='fourier')
  odd = snjax.ConvSpec((7, 6, 2), strides=2, padding='CIRCULAR')
  with pytest.raises(ValueError, match='must divide'):
    snjax.lipschitz.circular_conv_singular_values(kernel, odd)
  with pytest.raises(ValueError, match='method'):
    snjax.lipschitz.conv_norm_bound(kernel, snjax.ConvSpec((6, 6, 2)), method='power')
  with pytest.raises(ValueError, match='n_iterations'):
    snjax.lipschitz.gram_iteration_bound(jnp.eye(3), -1)
  # A stride that does not divide a circular input: the FFT bound drops it (still an upper bound); the default,
  # the dense Gram matrix, is tight.
  truth = float(np.linalg.norm(dense(kernel, (7, 6, 2), padding='CIRCULAR', strides=2), 2))
  fft = float(snjax.lipschitz.conv_norm_bound(kernel, odd, operator='fourier'))
  default = float(snjax.lipschitz.conv_norm_bound(kernel, odd))
  assert truth <= default <= truth * (1 + 1e-3) and default <= fft
