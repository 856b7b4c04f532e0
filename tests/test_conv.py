"""snjax.conv: the operator norm of convolutions and the conv mode of the transform.

Reference: the explicit dense matrix of the convolution (tests/_conv_testing.py: ``flax.linen.Conv``, not
snjax's own conv, applied to the identity basis; exact in float32), its singular values by numpy in float64.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snjax
from snjax import _conv as conv_lib
from tests._conv_testing import CASES, conv_matrix, conv_norm, make_case, random_kernel
from tests._tolerances import TWO_PROGRAMS


def test_power_iteration_sigma_is_a_lower_bound_at_every_step_and_converges():
  kernel, spec, flax_kwargs = make_case(CASES[3], seed=5)
  truth = conv_norm(kernel, spec.input_shape, **flax_kwargs)
  u = conv_lib.random_unit_input(jax.random.key(0), spec.input_shape)
  step = jax.jit(lambda k, u: snjax.power_iteration(k, u, spec=spec))
  previous = 0.0
  # 1e-5 relative: float32 rounding of sigma = ||A^T v|| (18-term tap sums, then a 72-term norm: about
  # (18 + 72) eps = 1.1e-5 in the worst case, ~1e-6 in practice), and of ||u|| (a 72-term sum: <= 72 eps = 9e-6).
  for _ in range(60):
    sigma, u = step(kernel, u)
    assert float(sigma) <= truth * (1 + 1e-5)
    assert float(sigma) >= previous * (1 - 1e-5)  # monotone (power iteration on A^T A)
    previous = float(sigma)
    assert abs(float(jnp.linalg.norm(u.ravel())) - 1) < 1e-5
  assert previous >= 0.99 * truth  # MEASURE


def test_sigma_gradient_is_the_top_singular_value_gradient():
  # At convergence d sigma / dK = d sigma_1(A(K)) / dK; check one direction against central finite differences
  # of the dense float64 SVD.
  kernel, spec, flax_kwargs = make_case(CASES[0], seed=7)
  u = conv_lib.random_unit_input(jax.random.key(0), spec.input_shape)
  u = snjax.power_iteration(kernel, u, spec=spec, n_power_iterations=3000).u
  grad = jax.grad(lambda k: snjax.power_iteration(k, u, spec=spec).sigma)(kernel)
  direction = random_kernel(11, kernel.shape)
  h = 1e-3
  k64 = np.asarray(kernel, np.float64).ravel()
  d64 = np.asarray(direction, np.float64).ravel()
  # The conv matrix is linear in the kernel: A(K) = sum_i K_i A(e_i), exact in float64 from the float32 matrices
  # of the 0/1 kernels e_i (each entry 0 or 1).
  basis = np.stack([conv_matrix(e.reshape(kernel.shape), spec.input_shape, **flax_kwargs) for e in np.eye(k64.size)])

  def norm64(k):
    return np.linalg.norm(np.tensordot(k, basis, axes=1), 2)

  # rtol 1e-3: the central difference's truncation error is O(h^2) = 1e-6 relative for a simple top singular value,
  # its float64 rounding ~1e-16 / h; the float32 gradient is good to ~1e-6.
  fd = (norm64(k64 + h * d64) - norm64(k64 - h * d64)) / (2 * h)
  np.testing.assert_allclose(float(jnp.vdot(grad, direction)), fd, rtol=1e-3)


def test_zero_kernel_gives_eps_and_keeps_u_and_nan_u_is_reseeded():
  spec = snjax.ConvSpec((5, 5, 2))
  kernel = jnp.zeros((3, 3, 2, 2))
  u = conv_lib.random_unit_input(jax.random.key(0), spec.input_shape)
  res = snjax.power_iteration(kernel, u, spec=spec, n_power_iterations=3)
  assert float(res.sigma) == pytest.approx(1e-12)
  np.testing.assert_allclose(res.u, u, atol=1e-6)
  grad = jax.grad(lambda k: snjax.power_iteration(k, u, spec=spec).sigma)(kernel)
  assert np.all(np.isfinite(grad))
  bad = jnp.full(spec.input_shape, jnp.nan)
  res = snjax.power_iteration(random_kernel(0, (3, 3, 2, 2)), bad, spec=spec, n_power_iterations=2)
  assert np.isfinite(float(res.sigma)) and float(res.sigma) > 0


# --- conv mode of the transform ---


class SmallCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), padding='SAME')(x))
    x = nn.relu(nn.Conv(4, (4, 4), strides=2, padding='SAME', feature_group_count=2)(x))
    return nn.Dense(1)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope='module')
def cnn():
  model = SmallCNN()
  x = jnp.ones((1, 8, 8, 3))
  params = jax.jit(model.init)(jax.random.key(0), x)['params']  # one compilation, not one per operation
  return model, x, params, snjax.conv_specs(model, x)


def test_conv_specs_reads_flax_convs(cnn):
  _, _, params, specs = cnn
  assert len(specs) == 2
  assert conv_lib.resolve_conv_spec(specs, 'Conv_0/kernel') == snjax.ConvSpec((8, 8, 3), 1, 'SAME', 1, 1, 1)
  assert conv_lib.resolve_conv_spec(specs, 'params/Conv_1/kernel') == snjax.ConvSpec((8, 8, 4), 2, 'SAME', 1, 1, 2)
  assert conv_lib.resolve_conv_spec(specs, 'Dense_0/kernel') is None


def test_conv_mode_state_converges_to_the_operator_norm_and_normalizes(cnn):
  model, x, params, specs = cnn
  state = snjax.sn_init(jax.random.key(1), params, conv=specs)
  assert state['Conv_0']['kernel']['u'].shape == (8, 8, 3)
  assert state['Conv_1']['kernel']['u'].shape == (8, 8, 4)
  assert state['Dense_0']['kernel']['u'].shape == (1,)
  step = jax.jit(lambda p, s: snjax.sn_apply(p, s, conv=specs))
  for _ in range(60):
    params_sn, state = step(params, state)
  for name, spec in (('Conv_0', specs[r'(^|/)Conv_0/kernel$']), ('Conv_1', specs[r'(^|/)Conv_1/kernel$'])):
    kw = dict(strides=spec.strides, padding=spec.padding, feature_group_count=spec.feature_group_count)
    truth = conv_norm(params[name]['kernel'], spec.input_shape, **kw)
    sigma = float(state[name]['kernel']['sigma'])
    assert sigma <= truth * (1 + 1e-5)
    assert sigma >= truth * (1 - 1e-3)
    # Normalized: operator norm 1, never below it (sigma is a lower bound).
    normalized = conv_norm(params_sn[name]['kernel'], spec.input_shape, **kw)
    assert 1 - 1e-5 <= normalized <= 1 + 1e-3
  # Matrix leaves are untouched by the conv option: same as the matrix mode.
  dense_sigma = float(np.linalg.norm(np.asarray(params['Dense_0']['kernel'], np.float64), 2))
  np.testing.assert_allclose(float(state['Dense_0']['kernel']['sigma']), dense_sigma, rtol=1e-4)


def test_conv_mode_eval_jit_and_gradient(cnn):
  model, x, params, specs = cnn
  state = snjax.sn_init(jax.random.key(1), params, conv=specs)
  eager_params, eager_state = snjax.sn_apply(params, state, conv=specs)
  jit_params, jit_state = jax.jit(lambda p, s: snjax.sn_apply(p, s, conv=specs))(params, state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), eager_params, jit_params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), eager_state, jit_state)
  # Evaluation: no iteration, the stored sigma, the same state object.
  eval_params, same = snjax.sn_apply(params, eager_state, update=False, conv=specs)
  assert same is eager_state
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=TWO_PROGRAMS), eval_params, eager_params)

  def loss(p):
    p_sn, _ = snjax.sn_apply(p, state, conv=specs)
    return jnp.sum(model.apply({'params': p_sn}, x))

  grads = jax.grad(loss)(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads['Conv_0']['kernel']).sum()) > 0


def test_conv_mode_torch_layout_matches_flax_layout():
  kernel = random_kernel(4, (3, 3, 2, 3))
  spec = snjax.ConvSpec((6, 6, 2))
  flax_params = {'w': kernel}
  torch_params = {'w': jnp.transpose(kernel, (3, 2, 0, 1))}
  s_flax = snjax.sn_init(jax.random.key(0), flax_params, conv={'w': spec}, n_warmup_iterations=40)
  s_torch = snjax.sn_init(jax.random.key(0), torch_params, conv={'w': spec}, layout='torch', n_warmup_iterations=40)
  np.testing.assert_allclose(s_flax['w']['sigma'], s_torch['w']['sigma'], rtol=1e-5)


def test_conv_mode_state_mismatch_names_the_path(cnn):
  _, _, params, specs = cnn
  matrix_state = snjax.sn_init(jax.random.key(1), params)
  with pytest.raises(ValueError, match='Conv_0/kernel: conv-mode state'):
    snjax.sn_apply(params, matrix_state, conv=specs)
  with pytest.raises(ValueError, match='Dense_0/kernel: conv mode needs a conv kernel|a conv kernel needs ndim'):
    snjax.sn_init(jax.random.key(1), params, conv={'Dense_0': snjax.ConvSpec((8,))})


def test_linen_spectral_norm_conv_operator_norm_mode():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      conv = nn.Conv(3, (3, 3), strides=2, padding='SAME')
      return snjax.SpectralNorm(conv, conv_operator_norm=True, n_warmup_iterations=60)(x, update_stats=train)

  net, x = Net(), jax.random.normal(jax.random.key(0), (2, 6, 6, 2))
  variables = net.init(jax.random.key(1), x, False)
  stats = variables['batch_stats']['SpectralNorm_0']
  assert stats['Conv_0/kernel/u'].shape == (6, 6, 2) and stats['Conv_0/kernel/sigma'].shape == ()
  _, updates = net.apply(variables, x, True, mutable=['batch_stats'])
  variables = {**variables, **updates}
  params = variables['params']['Conv_0']
  truth = conv_norm(params['kernel'], (6, 6, 2), strides=2, padding='SAME')
  sigma = float(variables['batch_stats']['SpectralNorm_0']['Conv_0/kernel/sigma'])
  assert truth * (1 - 1e-3) <= sigma <= truth * (1 + 1e-5)
  # Evaluation: the stored sigma, output = conv(x; W / sigma) + b.
  y = net.apply(variables, x, False)
  expected = nn.Conv(3, (3, 3), strides=2).apply({'params': {**params, 'kernel': params['kernel'] / sigma}}, x)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='conv_operator_norm=True needs a wrapped flax.linen.Conv'):
    snjax.SpectralNorm(nn.Dense(2), conv_operator_norm=True).init(
      jax.random.key(0), jnp.ones((1, 3)), update_stats=False
    )


def test_deprecated_conv_power_iteration_warns_and_equals_power_iteration_with_a_spec():
  spec = snjax.ConvSpec((6, 6, 2), strides=2)
  kernel = random_kernel(3, (3, 3, 2, 4))
  u = conv_lib.random_unit_input(jax.random.key(0), spec.input_shape)
  with pytest.warns(DeprecationWarning, match='power_iteration'):
    old = snjax.conv_power_iteration(kernel, u, spec, n_iterations=4)
  new = snjax.power_iteration(kernel, u, spec=spec, n_power_iterations=4)
  np.testing.assert_array_equal(old.sigma, new.sigma)
  np.testing.assert_array_equal(old.u, new.u)
  # A PyTorch-layout kernel (out, in, kh, kw): the same operator, the same numbers.
  torch_kernel = jnp.transpose(kernel, (3, 2, 0, 1))
  with pytest.warns(DeprecationWarning):
    old_t = snjax.conv_power_iteration(torch_kernel, u, spec, n_iterations=4, torch_layout=True)
  new_t = snjax.power_iteration(torch_kernel, u, 'torch', spec=spec, n_power_iterations=4)
  np.testing.assert_allclose(old_t.sigma, new.sigma, rtol=1e-6)
  np.testing.assert_array_equal(old_t.sigma, new_t.sigma)


def test_conv_leaves_are_normalized_together_equal_to_one_at_a_time():
  # sn_apply iterates conv-mode leaves with all other leaves in one batched iteration; each leaf's sigma and u
  # equal power_iteration on that leaf alone (up to the order of the batched sums: float32 rounding).
  rng = np.random.default_rng(0)
  params = {
    'c1': {'kernel': jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32)},
    'c2': {'kernel': jnp.asarray(rng.standard_normal((3, 3, 4, 4)), jnp.float32)},
    'd': {'kernel': jnp.asarray(rng.standard_normal((16, 3)), jnp.float32)},
  }
  conv = {'c1': snjax.ConvSpec((6, 6, 2)), 'c2': snjax.ConvSpec((6, 6, 4), strides=2)}
  state = snjax.sn_init(jax.random.key(0), params, conv=conv, n_warmup_iterations=2)
  out, new = jax.jit(lambda p, s: snjax.sn_apply(p, s, conv=conv, n_power_iterations=3))(params, state)
  for name, spec in [('c1', conv['c1']), ('c2', conv['c2']), ('d', None)]:
    ref = snjax.power_iteration(params[name]['kernel'], state[name]['kernel']['u'], spec=spec, n_power_iterations=3)
    np.testing.assert_allclose(new[name]['kernel']['sigma'], ref.sigma, rtol=1e-5)
    np.testing.assert_allclose(new[name]['kernel']['u'], ref.u, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[name]['kernel'], params[name]['kernel'] / ref.sigma, rtol=1e-5, atol=1e-7)


def test_conv_leaves_share_the_norm_reductions():
  # The compile-time property of the one driver: the lowered sn_apply has as many reductions for 2 conv-mode
  # layers as for 5 (one batched reduction per step for all of them).
  def counts(n_layers):
    rng = np.random.default_rng(0)
    params = {f'c{i}': {'kernel': jnp.asarray(rng.standard_normal((3, 3, 2, 2)), jnp.float32)} for i in range(n_layers)}
    conv = {f'c{i}/': snjax.ConvSpec((5 + i, 5, 2)) for i in range(n_layers)}
    state = snjax.sn_init(jax.random.key(0), params, conv=conv, n_warmup_iterations=0)
    text = jax.jit(lambda p, s: snjax.sn_apply(p, s, conv=conv)).lower(params, state).as_text()
    return text.count('stablehlo.reduce'), text.count('stablehlo.sqrt')

  assert counts(2) == counts(5)
