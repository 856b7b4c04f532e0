"""snjax.power: power iteration on one kernel, against float64 SVD references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snjax import _leaf
from snjax import _power as power
from snjax._layout import KernelLayout, resolve_layout


def _svd_norm(m):
  return float(np.linalg.norm(np.asarray(m, np.float64), 2))


def _layout(kernel, spec=None):
  return resolve_layout(spec, 'w', kernel)


def _random_u(key, shape):
  u = jax.random.normal(key, shape)
  return u / jnp.linalg.norm(u, axis=-1, keepdims=True)


def _matrix_with_spectrum(rng, n_in, n_out, singular_values):
  """M = U diag(s) V^T with random orthogonal U, V: a matrix of known norm."""
  k = len(singular_values)
  u, _ = np.linalg.qr(rng.standard_normal((n_in, k)))
  v, _ = np.linalg.qr(rng.standard_normal((n_out, k)))
  return (u * np.asarray(singular_values)) @ v.T


@pytest.mark.parametrize('n_power_iterations', [1, 3, 10])
def test_scaled_identity_gives_its_scale(n_power_iterations):
  # The classic peer check: a kernel 4 * I_8 has sigma 4 after 1, 3 and 10 steps.
  kernel = 4.0 * jnp.eye(8)
  u = _random_u(jax.random.key(0), (8,))
  res = power.power_iteration(kernel, u, _layout(kernel), n_power_iterations=n_power_iterations)
  np.testing.assert_allclose(res.sigma, 4.0, rtol=1e-3)


@given(
  n_in=st.integers(1, 24),
  n_out=st.integers(1, 24),
  seed=st.integers(0, 2**31 - 1),
  n_power_iterations=st.integers(1, 4),
)
def test_sigma_is_a_lower_bound_of_the_svd_norm(n_in, n_out, seed, n_power_iterations):
  rng = np.random.default_rng(seed)
  m = rng.standard_normal((n_in, n_out)).astype(np.float32)
  u = _random_u(jax.random.key(seed), (n_out,))
  res = power.power_iteration(jnp.asarray(m), u, _layout(m), n_power_iterations=n_power_iterations)
  true = _svd_norm(m)
  assert float(res.sigma) <= true * (1 + 1e-5)
  np.testing.assert_allclose(np.linalg.norm(res.u), 1.0, rtol=1e-5)


@given(n_in=st.integers(2, 30), n_out=st.integers(2, 30), seed=st.integers(0, 2**31 - 1))
def test_converges_to_the_top_singular_value(n_in, n_out, seed):
  rng = np.random.default_rng(seed)
  k = min(n_in, n_out)
  s = np.sort(rng.uniform(0.1, 1.0, k))[::-1].copy()
  s[0] = s[1] * 1.5 + 0.1 if k > 1 else s[0]  # a spectral gap, so that 60 steps converge
  m = _matrix_with_spectrum(rng, n_in, n_out, s).astype(np.float32)
  u = _random_u(jax.random.key(seed), (n_out,))
  res = power.power_iteration(jnp.asarray(m), u, _layout(m), n_power_iterations=60)
  np.testing.assert_allclose(float(res.sigma), s[0], rtol=1e-4)
  # u is the top right singular vector (fan-out side), up to sign.
  _, _, vt = np.linalg.svd(m.astype(np.float64))
  assert abs(abs(float(np.dot(res.u, vt[0]))) - 1.0) < 1e-3


def test_tolerance_mode_reaches_the_svd_norm():
  rng = np.random.default_rng(1)
  m = rng.standard_normal((40, 30)).astype(np.float32)
  u = _random_u(jax.random.key(1), (30,))
  res = jax.jit(lambda k, u: power.power_iteration(k, u, _layout(m), tol=1e-7, max_iterations=5000))(m, u)
  np.testing.assert_allclose(float(res.sigma), _svd_norm(m), rtol=1e-3)


@pytest.mark.parametrize(
  'shape, spec, to_matrix',
  [
    # Flax / Haiku Conv: (*spatial, in, out) -> (k*k*in, out).
    ((3, 3, 4, 5), None, lambda w: w.reshape(-1, w.shape[-1])),
    # Conv1D and Conv3D.
    ((5, 3, 6), None, lambda w: w.reshape(-1, w.shape[-1])),
    ((2, 2, 2, 3, 4), None, lambda w: w.reshape(-1, w.shape[-1])),
    # Torch / Equinox Conv2d: (out, in, kh, kw) -> (in*kh*kw, out).
    ((5, 4, 3, 3), 'torch', lambda w: w.reshape(w.shape[0], -1).T),
    # Torch ConvTranspose2d: (in, out, kh, kw): output axis 1.
    ((4, 5, 3, 3), 'torch_conv_transpose', lambda w: np.moveaxis(w, 1, -1).reshape(-1, w.shape[1])),
    # DenseGeneral projection (in, heads, dim): two output axes.
    ((6, 2, 3), (1, 2), lambda w: w.reshape(w.shape[0], -1)),
    # DenseGeneral output projection (heads, dim, out).
    ((2, 3, 7), -1, lambda w: w.reshape(-1, w.shape[-1])),
  ],
)
def test_layouts_read_the_right_matrix(shape, spec, to_matrix):
  rng = np.random.default_rng(0)
  w = rng.standard_normal(shape).astype(np.float32)
  lay = _layout(w, spec)
  u = _random_u(jax.random.key(0), power.u_shape(w.shape, lay))
  res = power.power_iteration(jnp.asarray(w), u, lay, n_power_iterations=1, tol=1e-8, max_iterations=3000)
  np.testing.assert_allclose(float(res.sigma), _svd_norm(to_matrix(w)), rtol=1e-3)


def test_batch_axes_give_one_sigma_per_matrix():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((3, 5, 4)).astype(np.float32)  # nn.scan: (layers, in, out)
  lay = _layout(w, KernelLayout(out_axes=(-1,), batch_axes=(0,)))
  u = _random_u(jax.random.key(0), power.u_shape(w.shape, lay))
  assert u.shape == (3, 4)
  res = power.power_iteration(jnp.asarray(w), u, lay, tol=1e-8, max_iterations=3000)
  np.testing.assert_allclose(np.asarray(res.sigma), [_svd_norm(w[i]) for i in range(3)], rtol=1e-3)


def test_half_precision_kernel_is_iterated_in_float32():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((16, 8)), jnp.bfloat16)
  u = _random_u(jax.random.key(0), (8,))
  res = power.power_iteration(w, u, _layout(w), tol=1e-7, max_iterations=2000)
  assert res.sigma.dtype == jnp.float32 and res.u.dtype == jnp.float32
  np.testing.assert_allclose(float(res.sigma), _svd_norm(np.asarray(w.astype(jnp.float32))), rtol=1e-4)
  scaled = _leaf.scale(w, 1.0 / res.sigma, _leaf.plan('w', w, _layout(w)))
  assert scaled.dtype == jnp.bfloat16


def test_zero_kernel_is_finite_and_keeps_u():
  w = jnp.zeros((6, 4))
  u = _random_u(jax.random.key(0), (4,))
  res = power.power_iteration(w, u, _layout(w), eps=1e-12)
  assert float(res.sigma) == pytest.approx(1e-12)
  np.testing.assert_array_equal(np.asarray(res.u), np.asarray(u))
  g = jax.grad(lambda k: power.power_iteration(k, u, _layout(w)).sigma)(w)
  assert bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize('bad', [0.0, np.nan])
def test_degenerate_u_is_reseeded(bad):
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((6, 4)), jnp.float32)
  u = jnp.full((4,), bad)
  res = power.power_iteration(w, u, _layout(w), n_power_iterations=50)
  assert bool(jnp.all(jnp.isfinite(res.u)))
  np.testing.assert_allclose(float(res.sigma), _svd_norm(w), rtol=1e-3)


def test_gradient_matches_the_closed_form_and_finite_differences():
  # sigma = ||M^T v|| with v = M u / ||M u|| held constant: d sigma / dM = v u'^T (u' = M^T v / sigma).
  rng = np.random.default_rng(3)
  m = rng.standard_normal((7, 5))
  u0 = rng.standard_normal(5)
  u0 /= np.linalg.norm(u0)
  lay = _layout(m)
  g = jax.grad(lambda k: power.power_iteration(k, jnp.asarray(u0, jnp.float32), lay).sigma)(jnp.asarray(m, jnp.float32))
  v = m @ u0
  v /= np.linalg.norm(v)
  w = m.T @ v
  u1 = w / np.linalg.norm(w)
  np.testing.assert_allclose(np.asarray(g), np.outer(v, u1), atol=1e-5)

  def sigma_fixed_v(mm):
    return np.linalg.norm(mm.T @ v)

  h = 1e-6
  fd = np.zeros_like(m)
  for i in range(m.shape[0]):
    for j in range(m.shape[1]):
      e = np.zeros_like(m)
      e[i, j] = h
      fd[i, j] = (sigma_fixed_v(m + e) - sigma_fixed_v(m - e)) / (2 * h)
  np.testing.assert_allclose(np.asarray(g), fd, atol=1e-5)


def test_u_and_v_are_not_differentiated():
  rng = np.random.default_rng(0)
  m = jnp.asarray(rng.standard_normal((5, 4)), jnp.float32)
  u = _random_u(jax.random.key(0), (4,))
  gu = jax.grad(lambda uu: power.power_iteration(m, uu, _layout(m), n_power_iterations=3).sigma)(u)
  np.testing.assert_array_equal(np.asarray(gu), 0.0)


def test_fori_loop_and_unrolled_iterations_agree():
  rng = np.random.default_rng(0)
  m = jnp.asarray(rng.standard_normal((9, 6)), jnp.float32)
  u = _random_u(jax.random.key(0), (6,))
  lay = _layout(m)
  res_loop = power.power_iteration(m, u, lay, n_power_iterations=6)  # fori_loop for 5 constant steps
  x = u
  for _ in range(6):
    x = power.power_iteration(m, x, lay, n_power_iterations=1).u  # one step at a time
  np.testing.assert_allclose(np.asarray(res_loop.u), np.asarray(x), rtol=1e-5, atol=1e-6)
