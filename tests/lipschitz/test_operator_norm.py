"""snjax.lipschitz.conv_operator_norm: the operator norm of convolutions, against their dense matrices.

Reference: the explicit dense matrix of the convolution (tests/_conv_testing.py: ``flax.linen.Conv``, not
snjax's own conv, applied to the identity basis; exact in float32), its singular values by numpy in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import snjax
from snjax import _conv as conv_lib
from snjax.lipschitz import _operator_norm
from tests._conv_testing import CASES, case_id, conv_matrix, conv_norm, make_case, random_kernel


@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_operator_norm_matches_dense_svd(case):
  kernel, spec, flax_kwargs = make_case(case)
  input_shape = spec.input_shape
  dense = conv_matrix(kernel, input_shape, **flax_kwargs)
  # snjax's conv is flax's conv: the same matrix on the identity basis.
  basis = jnp.eye(dense.shape[0]).reshape((-1,) + input_shape)
  ours = jax.vmap(lambda x: conv_lib.conv_apply(kernel, x, spec))(basis).reshape(dense.shape[0], -1)
  np.testing.assert_allclose(ours, dense, rtol=1e-6, atol=1e-6)
  truth = float(np.linalg.norm(dense, 2))
  est = float(snjax.lipschitz.conv_operator_norm(kernel, spec))
  assert abs(est - truth) <= 1e-3 * truth
  assert est <= truth * (1 + 1e-5)  # a lower bound, up to float32 rounding


def test_power_method_converges_and_jit_agrees():
  kernel, spec, flax_kwargs = make_case(CASES[4], seed=3)
  truth = conv_norm(kernel, spec.input_shape, **flax_kwargs)
  est = float(snjax.lipschitz.conv_operator_norm(kernel, spec, method='power', tol=1e-8))
  assert abs(est - truth) <= 1e-3 * truth
  jitted = jax.jit(lambda k: snjax.lipschitz.conv_operator_norm(k, spec))
  np.testing.assert_allclose(float(jitted(kernel)), truth, rtol=1e-3)


@settings(max_examples=6)
@given(
  d=st.integers(1, 2),
  n=st.integers(3, 7),
  k=st.integers(1, 3),
  cin=st.integers(1, 3),
  cout=st.integers(1, 3),
  stride=st.integers(1, 2),
  padding=st.sampled_from(['SAME', 'VALID', 'CIRCULAR']),
  seed=st.integers(0, 2**16),
)
def test_operator_norm_property_over_small_shapes(d, n, k, cin, cout, stride, padding, seed):
  if padding == 'VALID' and k > n:
    return
  kernel = random_kernel(seed, (k,) * d + (cin, cout))
  input_shape = (n,) * d + (cin,)
  truth = conv_norm(kernel, input_shape, strides=stride, padding=padding)
  spec = snjax.ConvSpec(input_shape, strides=stride, padding=padding)
  est = float(snjax.lipschitz.conv_operator_norm(kernel, spec, key=jax.random.key(seed), method='power', tol=1e-7))
  assert abs(est - truth) <= 1e-3 * truth + 1e-6
  assert est <= truth * (1 + 1e-5) + 1e-6


def test_lanczos_restart_ritz_value_is_below_the_top_eigenvalue_and_exact_on_a_full_krylov_space():
  # A^T A of a random 12 x 12 matrix, float64 reference eigenvalues.
  rng = np.random.default_rng(0)
  a = rng.standard_normal((12, 12))
  gram = a.T @ a
  top = np.linalg.eigvalsh(gram)[-1]
  matvec = lambda x: jnp.asarray(gram, jnp.float32) @ x  # noqa: E731
  u = jnp.asarray(rng.standard_normal(12), jnp.float32)
  u = u / jnp.linalg.norm(u)
  eps = float(jnp.finfo(jnp.float32).eps)
  # Rounding of a float32 product with a 12 x 12 matrix: about 12 eps ||G||; 1e-5 relative covers it with room.
  for n_steps in (2, 4):
    theta, ritz = _operator_norm._lanczos_restart(matvec, u, n_steps, eps)
    assert float(theta) <= top * (1 + 1e-5)
    np.testing.assert_allclose(float(jnp.linalg.norm(ritz)), 1.0, rtol=1e-5)
  # 12 steps span R^12: the Ritz value is the top eigenvalue.
  theta, ritz = _operator_norm._lanczos_restart(matvec, u, 12, eps)
  np.testing.assert_allclose(float(theta), top, rtol=1e-5)


@pytest.mark.parametrize(
  'spec_kwargs, options, match',
  [
    (dict(input_shape=(8, 8, 3)), {}, 'input channels'),
    (dict(input_shape=(8, 2)), {}, '2 spatial dims'),
    (dict(input_shape=(8, 8, 2), padding='FULL'), {}, 'unknown padding'),
    (dict(input_shape=(8, 8, 2), padding='CAUSAL'), {}, 'CAUSAL'),
    (dict(input_shape=(8, 8, 2), strides=(1, 2, 1)), {}, 'strides'),
    (dict(input_shape=(8, 8, 2), rhs_dilation=0), {}, 'rhs_dilation'),
    (dict(input_shape=(8, 8, 2), feature_group_count=3), {}, 'feature_group_count'),
    (dict(input_shape=(2, 2, 2), padding='VALID'), {}, 'empty'),
    (dict(input_shape=(8, 8, 2)), dict(tol=0.0), 'tol'),
    (dict(input_shape=(8, 8, 2)), dict(max_iterations=0), 'max_iterations'),
    (dict(input_shape=(8, 8, 2)), dict(method='svd'), 'method'),
  ],
)
def test_bad_arguments_raise_clear_errors(spec_kwargs, options, match):
  kernel = random_kernel(0, (3, 3, 2, 4))
  with pytest.raises(ValueError, match='conv_operator_norm: .*' + match):
    snjax.lipschitz.conv_operator_norm(kernel, snjax.ConvSpec(**spec_kwargs), **options)
