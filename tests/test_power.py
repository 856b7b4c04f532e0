"""snjax.power: power iteration on one kernel, against float64 SVD references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snjax import _leaf
from snjax import _power as power
from snjax._layout import KernelLayout, kernel_matrix, resolve_layout
from snjax._options import SNOptions
from tests import _random
from tests._tolerances import EPS32, TWO_PROGRAMS


def _svd_norm(m):
  return float(np.linalg.norm(np.asarray(m, np.float64), 2))


def _layout(kernel, spec=None):
  return resolve_layout(spec, 'w', kernel)


def _random_u(seed, shape):
  """A random unit vector (or one per row), float32."""
  u = _random.normal(seed, shape, stream=1)
  return jnp.asarray(u / np.linalg.norm(u, axis=-1, keepdims=True))


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
  u = _random_u(0, (8,))
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
  u = _random_u(seed, (n_out,))
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
  u = _random_u(seed, (n_out,))
  res = power.power_iteration(jnp.asarray(m), u, _layout(m), n_power_iterations=60)
  np.testing.assert_allclose(float(res.sigma), s[0], rtol=1e-4)
  # u is the top right singular vector (fan-out side), up to sign.
  _, _, vt = np.linalg.svd(m.astype(np.float64))
  assert abs(abs(float(np.dot(res.u, vt[0]))) - 1.0) < 1e-3


def test_tolerance_mode_reaches_the_svd_norm():
  rng = np.random.default_rng(1)
  m = rng.standard_normal((40, 30)).astype(np.float32)
  u = _random_u(1, (30,))
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
  u = _random_u(0, power.u_shape(w.shape, lay))
  res = power.power_iteration(jnp.asarray(w), u, lay, n_power_iterations=1, tol=1e-8, max_iterations=3000)
  np.testing.assert_allclose(float(res.sigma), _svd_norm(to_matrix(w)), rtol=1e-3)


def test_batch_axes_give_one_sigma_per_matrix():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((3, 5, 4)).astype(np.float32)  # nn.scan: (layers, in, out)
  lay = _layout(w, KernelLayout(out_axes=(-1,), batch_axes=(0,)))
  u = _random_u(0, power.u_shape(w.shape, lay))
  assert u.shape == (3, 4)
  res = power.power_iteration(jnp.asarray(w), u, lay, tol=1e-8, max_iterations=3000)
  np.testing.assert_allclose(np.asarray(res.sigma), [_svd_norm(w[i]) for i in range(3)], rtol=1e-3)


def test_half_precision_kernel_is_iterated_in_float32():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((16, 8)), jnp.bfloat16)
  u = _random_u(0, (8,))
  res = power.power_iteration(w, u, _layout(w), tol=1e-7, max_iterations=2000)
  assert res.sigma.dtype == jnp.float32 and res.u.dtype == jnp.float32
  np.testing.assert_allclose(float(res.sigma), _svd_norm(np.asarray(w.astype(jnp.float32))), rtol=1e-4)
  scaled = _leaf.scale(w, 1.0 / res.sigma, _leaf.plan('w', w, _layout(w)))
  assert scaled.dtype == jnp.bfloat16


def test_zero_kernel_is_finite_and_keeps_u():
  w = jnp.zeros((6, 4))
  u = _random_u(0, (4,))
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
  u = _random_u(0, (4,))
  gu = jax.grad(lambda uu: power.power_iteration(m, uu, _layout(m), n_power_iterations=3).sigma)(u)
  np.testing.assert_array_equal(np.asarray(gu), 0.0)


def test_fori_loop_and_unrolled_iterations_agree():
  rng = np.random.default_rng(0)
  m = jnp.asarray(rng.standard_normal((9, 6)), jnp.float32)
  u = _random_u(0, (6,))
  lay = _layout(m)
  res_loop = power.power_iteration(m, u, lay, n_power_iterations=6)  # fori_loop for 5 constant steps
  x = u
  for _ in range(6):
    x = power.power_iteration(m, x, lay, n_power_iterations=1).u  # one step at a time
  np.testing.assert_allclose(np.asarray(res_loop.u), np.asarray(x), rtol=1e-5, atol=1e-6)


# Grouped kernels: run() stacks the matrices of one shape and layout into one batched operator. Mixed here: three
# f32 and two bf16 kernels of one shape (one of them zero, one with a non-finite u), another shape, a conv kernel and
# a kernel with a batch axis (both alone or in their own stacks).
_GROUP_SHAPES = [
  ((6, 5), jnp.float32),
  ((6, 5), jnp.bfloat16),
  ((6, 5), jnp.float32),
  ((6, 5), jnp.float32),  # zero
  ((6, 5), jnp.bfloat16),  # NaN u
  ((7, 4), jnp.float32),
  ((3, 3, 2, 5), jnp.float32),
  ((3, 3, 2, 5), jnp.float32),
  ((2, 4, 3), jnp.float32),  # one matrix per index of axis 0
]
_ZERO, _NAN_U = 3, 4


def _group_case():
  rng = np.random.default_rng(7)
  kernels, us, ops = [], [], []
  for i, (shape, dtype) in enumerate(_GROUP_SHAPES):
    w = np.zeros(shape) if i == _ZERO else rng.standard_normal(shape)
    k = jnp.asarray(w, dtype)
    lay = _layout(k, KernelLayout((-1,), (0,)) if len(shape) == 3 else None)
    op = power.make_operator('w', k, lay, None)
    u = _random_u(i, op.u_shape)
    if i == _NAN_U:
      u = u.at[0].set(jnp.nan)
    kernels.append(k)
    us.append(u)
    ops.append(op)
  return kernels, us, tuple(ops)


@functools.partial(jax.jit, static_argnames=('ops', 'n'))
def _run_sigmas(kernels, us, ops, n):
  results, _ = power.run(ops, kernels, us, SNOptions(n_power_iterations=n))
  return [r.sigma for r in results], [r.u for r in results]


def _one_step_float64(kernel, u, op):
  """One power step in float64 on the explicit matrices: (sigma, u', d sigma / d M = v u'^T) per stacked matrix."""
  m = np.asarray(kernel_matrix(jnp.asarray(kernel, jnp.float32), op.layout), np.float64)
  m = m.reshape((-1,) + m.shape[-2:])
  uu = np.asarray(u, np.float64).reshape(m.shape[0], -1)
  out = []
  for mi, ui in zip(m, uu, strict=True):
    if not np.all(np.isfinite(ui)):
      ui = np.asarray(power.fallback_u(ui.shape), np.float64)
    v = mi @ ui
    v /= np.linalg.norm(v)
    w = mi.T @ v
    out.append((np.linalg.norm(w), w / np.linalg.norm(w), np.outer(v, w / np.linalg.norm(w))))
  return out


def test_grouped_kernels_match_one_at_a_time_and_float64():
  kernels, us, ops = _group_case()
  # Four units: a stack of the five (6, 5), the (7, 4) alone, a stack of the two conv kernels, the batched kernel.
  assert [len(u.members) for u in power._units(ops, range(len(ops)))] == [5, 1, 2, 1]
  sigmas, u_next = _run_sigmas(kernels, us, ops, 1)
  grads = jax.jit(jax.grad(lambda ks: sum(jnp.sum(s) for s in _run_sigmas(ks, us, ops, 1)[0])))(kernels)
  for i, (k, u, op) in enumerate(zip(kernels, us, ops, strict=True)):
    s1, u1 = _run_sigmas([k], [u], (op,), 1)
    g1 = jax.grad(lambda kk, u=u, op=op: jnp.sum(_run_sigmas([kk], [u], (op,), 1)[0][0]))(k)
    # The same float32 maths in two programs (one batched mat-vec or one alone): two summation orders.
    np.testing.assert_allclose(np.asarray(sigmas[i]), np.asarray(s1[0]), rtol=TWO_PROGRAMS)
    np.testing.assert_allclose(np.asarray(u_next[i]), np.asarray(u1[0]), rtol=TWO_PROGRAMS, atol=TWO_PROGRAMS)
    scale = max(float(jnp.max(jnp.abs(g1.astype(jnp.float32)))), 1.0)
    # bf16 gradients round once to bf16 (relative 2^-8) after the float32 maths.
    g_tol = TWO_PROGRAMS if k.dtype == jnp.float32 else 2.0**-8
    np.testing.assert_allclose(np.asarray(grads[i], np.float32), np.asarray(g1, np.float32), atol=g_tol * scale)
    if i == _ZERO:
      assert float(sigmas[i]) == pytest.approx(1e-12)
      np.testing.assert_array_equal(np.asarray(u_next[i]), np.asarray(u))
      np.testing.assert_array_equal(np.asarray(grads[i], np.float32), 0.0)
      continue
    # Against float64: two mat-vecs of at most n terms and two norms, each within gamma_n ~ n eps (Higham 3.1).
    n = max(int(np.prod(k.shape)) // op.u_shape[-1] if not op.batch_shape else k.shape[1], op.u_shape[-1])
    tol = 4 * n * EPS32
    ref = _one_step_float64(k, u, op)
    np.testing.assert_allclose(np.asarray(sigmas[i]).reshape(-1), [r[0] for r in ref], rtol=tol)
    np.testing.assert_allclose(np.asarray(u_next[i]).reshape(len(ref), -1), [r[1] for r in ref], atol=tol)
    # d sigma / dW = v u'^T per matrix, read back through the layout.
    g = np.asarray(kernel_matrix(jnp.asarray(grads[i], jnp.float32), op.layout)).reshape(len(ref), *ref[0][2].shape)
    np.testing.assert_allclose(g, [r[2] for r in ref], atol=tol if k.dtype == jnp.float32 else 2.0**-8)


def test_grouped_kernels_converge_to_the_svd_norms():
  kernels, us, ops = _group_case()
  sigmas, _ = _run_sigmas(kernels, us, ops, 300)
  for i, k in enumerate(kernels):
    if i == _ZERO:
      continue
    m = np.asarray(kernel_matrix(jnp.asarray(k, jnp.float32), ops[i].layout), np.float64)
    m = m.reshape((-1,) + m.shape[-2:])
    # 300 steps on random matrices converge far below 1e-4; float32 rounding is below it too.
    np.testing.assert_allclose(np.asarray(sigmas[i]).reshape(-1), [_svd_norm(mi) for mi in m], rtol=1e-4)


def test_stacks_of_large_kernels_match_one_at_a_time():
  # Kernels above power._CUT_LIMIT elements: the backward pass cuts the stack by slices instead of masked sums.
  rng = np.random.default_rng(3)
  kernels = [jnp.asarray(rng.standard_normal((130, 130)), jnp.float32) for _ in range(3)]
  assert kernels[0].size > power._CUT_LIMIT
  ops = tuple(power.make_operator('w', k, _layout(k), None) for k in kernels)
  us = [_random_u(i, op.u_shape) for i, op in enumerate(ops)]
  grads = jax.jit(jax.grad(lambda ks: sum(_run_sigmas(ks, us, ops, 1)[0])))(kernels)
  for k, u, op, g in zip(kernels, us, ops, grads, strict=True):
    g1 = jax.grad(lambda kk, u=u, op=op: _run_sigmas([kk], [u], (op,), 1)[0][0])(k)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g1), atol=TWO_PROGRAMS * float(jnp.max(jnp.abs(g1))))


def _first(result):
  """``(sigma, u')`` of the first kernel of a :func:`_run_sigmas` result."""
  (sigma, *_), (u, *_) = result
  return sigma, u


def test_more_same_shaped_kernels_than_a_stack_holds_match_one_at_a_time():
  # Deep networks: same-shaped kernels beyond power._STACK_LIMIT form further stacks (16 + 16 + 5 of 37), each
  # member iterated exactly as alone.
  n, limit = 37, power._STACK_LIMIT
  assert 2 <= limit < n
  rng = np.random.default_rng(11)
  kernels = [jnp.asarray(rng.standard_normal((4, 3)), jnp.float32) for _ in range(n)]
  ops = tuple(power.make_operator('w', k, _layout(k), None) for k in kernels)
  assert [len(u.members) for u in power._units(ops, range(n))] == [min(limit, n - s) for s in range(0, n, limit)]
  us = [_random_u(i, op.u_shape) for i, op in enumerate(ops)]
  sigmas, u_next = _run_sigmas(kernels, us, ops, 2)
  grads = jax.jit(jax.grad(lambda ks: sum(_run_sigmas(ks, us, ops, 2)[0])))(kernels)
  alone = jax.jit(jax.value_and_grad(lambda k, u: _first(_run_sigmas([k], [u], ops[:1], 2)), has_aux=True))
  for i, (k, u) in enumerate(zip(kernels, us, strict=True)):
    (s1, u1), g1 = alone(k, u)
    np.testing.assert_allclose(float(sigmas[i]), float(s1), rtol=TWO_PROGRAMS)
    np.testing.assert_allclose(np.asarray(u_next[i]), np.asarray(u1), rtol=TWO_PROGRAMS, atol=TWO_PROGRAMS)
    np.testing.assert_allclose(np.asarray(grads[i]), np.asarray(g1), atol=TWO_PROGRAMS * float(jnp.max(jnp.abs(g1))))
