"""snjax.transform: sn_init / sn_apply over whole params pytrees."""

import functools
import re

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import snjax

# (fan_in x fan_out) matrix of a Flax kernel, written out by hand for the reference.
_flax_matrix = lambda w: np.asarray(w, np.float64).reshape(-1, np.shape(w)[-1])  # noqa: E731


def _svd(m):
  return float(np.linalg.norm(m, 2))


class _Net(nn.Module):
  """Dense, Conv 1D/2D/3D, ConvTranspose and DenseGeneral kernels in one model."""

  @nn.compact
  def __call__(self, x1, x2, x3, x):
    a = nn.Conv(5, (3,))(x1).sum()
    b = nn.Conv(6, (3, 3), strides=2)(x2).sum()
    c = nn.Conv(3, (2, 2, 2))(x3).sum()
    d = nn.ConvTranspose(4, (3, 3))(x2).sum()
    e = nn.DenseGeneral((2, 3))(x)
    f = nn.DenseGeneral(4, axis=(-2, -1))(e)
    return a + b + c + d + nn.Dense(7)(f).sum()


@functools.lru_cache
def _net_params(seed=0):
  x1, x2, x3, x = jnp.ones((1, 8, 2)), jnp.ones((1, 6, 6, 3)), jnp.ones((1, 4, 4, 4, 2)), jnp.ones((1, 5))
  return jax.jit(_Net().init)(jax.random.key(seed), x1, x2, x3, x)['params']


# The matrices of _Net's kernels: for DenseGeneral the split is not the last axis.
_LAYOUT = {r'DenseGeneral_0/': (1, 2), r'.*': -1}


def _reference_matrices(params):
  out = {}
  for name, p in params.items():
    w = np.asarray(p['kernel'], np.float64)
    out[name] = w.reshape(w.shape[0], -1) if name == 'DenseGeneral_0' else _flax_matrix(w)
  return out


def test_default_state_mirrors_the_params_paths():
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params)
  assert set(state) == set(params)
  for name, entry in state.items():
    assert set(entry) == {'kernel'}  # biases are not normalized
    assert entry['kernel']['u'].shape == (params[name]['kernel'].shape[-1],)
    assert entry['kernel']['sigma'].shape == ()
    assert entry['kernel']['u'].dtype == jnp.float32


def test_every_kernel_kind_converges_to_norm_one_and_is_never_over_normalized():
  params = _net_params()
  state = snjax.sn_init(jax.random.key(1), params, n_warmup_iterations=0, layout=_LAYOUT)
  step = jax.jit(lambda p, s: snjax.sn_apply(p, s, layout=_LAYOUT))
  for i in range(300):
    params_sn, state = step(params, state)
    norms = {k: _svd(m) for k, m in _reference_matrices(params_sn).items()}
    assert min(norms.values()) >= 1 - 1e-5, (i, norms)
  for name, n in norms.items():
    assert n == pytest.approx(1.0, abs=1e-3), name
  true = {k: _svd(m) for k, m in _reference_matrices(params).items()}
  for name, s in snjax.sigmas(state).items():
    assert float(s) == pytest.approx(true[name.split('/')[0]], rel=1e-3)


@settings(max_examples=10)
@given(
  shape=st.lists(st.integers(1, 6), min_size=2, max_size=4),
  seed=st.integers(0, 2**31 - 1),
  target=st.floats(0.25, 4.0),
)
def test_random_shapes_reach_the_target_norm(shape, seed, target):
  w = jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)
  params = {'layer': {'kernel': w}}
  state = snjax.sn_init(jax.random.key(seed), params, n_warmup_iterations=0)
  out, state = snjax.sn_apply(params, state, target_norm=target, tol=1e-7, max_iterations=3000)
  m = _flax_matrix(out['layer']['kernel'])
  assert _svd(m) >= target * (1 - 1e-5)
  assert _svd(m) == pytest.approx(target, rel=1e-3)


def test_jit_and_eager_agree():
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params, layout=_LAYOUT)
  eager = snjax.sn_apply(params, state, layout=_LAYOUT, n_power_iterations=2)
  jitted = jax.jit(lambda p, s: snjax.sn_apply(p, s, layout=_LAYOUT, n_power_iterations=2))(params, state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), eager, jitted)


def test_eval_reproduces_the_last_training_call_bit_for_bit_and_is_pure():
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params, layout=_LAYOUT)
  train = jax.jit(lambda p, s: snjax.sn_apply(p, s, layout=_LAYOUT))
  evaluate = jax.jit(lambda p, s: snjax.sn_apply(p, s, update=False, layout=_LAYOUT))
  for _ in range(3):
    params_sn, state = train(params, state)
  before = jax.tree.map(np.asarray, state)
  for fn in (evaluate, lambda p, s: snjax.sn_apply(p, s, update=False, layout=_LAYOUT)):
    eval_params, eval_state = fn(params, state)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), eval_params, params_sn)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), eval_state, before)


def test_one_state_used_twice_repeats_the_same_step():
  # The critic on the real and on the fake batch: calling sn_apply twice with the same incoming state
  # gives the same params and the same new state; it does not advance twice.
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params, layout=_LAYOUT, n_warmup_iterations=0)
  a_params, a_state = snjax.sn_apply(params, state, layout=_LAYOUT)
  b_params, b_state = snjax.sn_apply(params, state, layout=_LAYOUT)
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), (a_params, a_state), (b_params, b_state)
  )
  c_params, _ = snjax.sn_apply(params, a_state, layout=_LAYOUT)
  assert not np.array_equal(np.asarray(c_params['Conv_0']['kernel']), np.asarray(a_params['Conv_0']['kernel']))


def test_state_round_trips_through_flax_serialization():
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params, layout=_LAYOUT)
  _, state = snjax.sn_apply(params, state, layout=_LAYOUT)
  variables = {'params': params, 'spectral_norm': state}
  restored = flax.serialization.from_bytes(variables, flax.serialization.to_bytes(variables))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), restored, variables)
  restored_state = flax.serialization.msgpack_restore(flax.serialization.msgpack_serialize(state))
  out1, _ = snjax.sn_apply(params, restored_state, layout=_LAYOUT)
  out2, _ = snjax.sn_apply(params, state, layout=_LAYOUT)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), out1, out2)


def test_bfloat16_params_keep_their_dtype_and_are_normalized():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _net_params())
  state = snjax.sn_init(jax.random.key(0), params, layout=_LAYOUT, n_warmup_iterations=50)
  out, state = snjax.sn_apply(params, state, layout=_LAYOUT, tol=1e-6, max_iterations=2000)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))
  for name, m in _reference_matrices(jax.tree.map(lambda x: x.astype(jnp.float32), out)).items():
    assert _svd(m) == pytest.approx(1.0, abs=1e-2), name  # bf16 rounding of the weights: ~2^-8


def test_zero_weight_gives_zeros_then_recovers():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((6, 5)), jnp.float32)
  params = {'d': {'kernel': w}}
  state = snjax.sn_init(jax.random.key(0), params)
  step = jax.jit(snjax.sn_apply)
  zero = {'d': {'kernel': jnp.zeros_like(w)}}
  for _ in range(5):
    out, state = step(zero, state)
    assert bool(jnp.all(out['d']['kernel'] == 0))
    assert bool(jnp.all(jnp.isfinite(state['d']['kernel']['u'])))
    assert float(jnp.linalg.norm(state['d']['kernel']['u'])) == pytest.approx(1.0, rel=1e-5)
  grads = jax.grad(lambda p: jnp.sum(step(p, state)[0]['d']['kernel']))(zero)
  assert bool(jnp.all(jnp.isfinite(grads['d']['kernel'])))
  for _ in range(100):
    out, state = step(params, state)
  assert _svd(_flax_matrix(out['d']['kernel'])) == pytest.approx(1.0, abs=1e-3)


def test_diagonal_weight_is_divided_by_its_largest_entry():
  x = jnp.asarray([0.5, -3.0, 2.0, 1.0])
  params = {'w': jnp.diag(x)}
  state = snjax.sn_init(jax.random.key(0), params, include='w', n_warmup_iterations=30)
  out, _ = snjax.sn_apply(params, state, include='w', n_power_iterations=5)
  np.testing.assert_allclose(np.asarray(out['w']), np.diag(np.asarray(x) / 3.0), atol=1e-5)


def test_after_a_perturbation_the_norm_converges_back_within_100_updates():
  rng = np.random.default_rng(0)
  params = {'d': {'kernel': jnp.asarray(rng.standard_normal((10, 8)) * 0.3, jnp.float32)}}
  state = snjax.sn_init(jax.random.key(0), params)
  step = jax.jit(snjax.sn_apply)
  for _ in range(20):
    _, state = step(params, state)
  params = jax.tree.map(lambda w: w + 1.0, params)  # the peers' "W += 1" check
  out, state = step(params, state)
  assert _svd(_flax_matrix(out['d']['kernel'])) > 1.001  # one step behind: off
  for _ in range(100):
    out, state = step(params, state)
  assert _svd(_flax_matrix(out['d']['kernel'])) == pytest.approx(1.0, abs=1e-3)


def test_gradient_matches_the_papers_closed_form():
  # dL/dW = (G - <G, W_sn> v u^T) / sigma, with G = dL/dW_sn (Miyato et al. 2018, eq. 12),
  # here with the vectors of this step's estimate (v = M u0 / ||M u0||, u = M^T v / sigma).
  rng = np.random.default_rng(0)
  w = rng.standard_normal((6, 4))
  target = rng.standard_normal((6, 4))
  params = {'d': {'kernel': jnp.asarray(w, jnp.float32)}}
  state = snjax.sn_init(jax.random.key(0), params, n_warmup_iterations=3)

  def loss(p):
    out, _ = snjax.sn_apply(p, state)
    return jnp.sum(out['d']['kernel'] * jnp.asarray(target, jnp.float32))

  grad = np.asarray(jax.grad(loss)(params)['d']['kernel'], np.float64)
  u0 = np.asarray(state['d']['kernel']['u'], np.float64)
  v = w @ u0
  v /= np.linalg.norm(v)
  sigma = np.linalg.norm(w.T @ v)
  u = w.T @ v / sigma
  g = target
  expected = (g - np.sum(g * w / sigma) * np.outer(v, u)) / sigma
  np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_gradient_at_convergence_matches_finite_differences_of_the_true_normalization():
  # Once u has converged, sn_apply's gradient is that of W -> W / ||W||_2 (a float64 SVD reference).
  rng = np.random.default_rng(1)
  w = rng.standard_normal((5, 3))
  c = rng.standard_normal((5, 3))
  params = {'d': {'kernel': jnp.asarray(w, jnp.float32)}}
  state = snjax.sn_init(jax.random.key(0), params, n_warmup_iterations=200)
  grad = jax.grad(lambda p: jnp.sum(snjax.sn_apply(p, state)[0]['d']['kernel'] * c))(params)['d']['kernel']

  def f(ww):
    return np.sum(ww / np.linalg.norm(ww, 2) * c)

  h = 1e-6
  fd = np.zeros_like(w)
  for i in np.ndindex(w.shape):
    e = np.zeros_like(w)
    e[i] = h
    fd[i] = (f(w + e) - f(w - e)) / (2 * h)
  np.testing.assert_allclose(np.asarray(grad), fd, atol=2e-4)


def test_torch_layout_equals_flax_layout_on_the_transposed_kernel():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((3, 3, 4, 6)).astype(np.float32)  # flax (kh, kw, in, out)
  w_torch = np.transpose(w, (3, 2, 0, 1))  # torch (out, in, kh, kw)
  out_f, _ = snjax.sn_apply({'k': w}, snjax.sn_init(jax.random.key(0), {'k': w}), tol=1e-8, max_iterations=2000)
  sn = snjax.spectral_normalization(layout='torch')
  out_t, _ = snjax.sn_apply(
    {'k': w_torch}, sn.init(jax.random.key(0), {'k': w_torch}), layout='torch', tol=1e-8, max_iterations=2000
  )
  np.testing.assert_allclose(
    np.transpose(np.asarray(out_t['k']), (2, 3, 1, 0)), np.asarray(out_f['k']), rtol=1e-3, atol=1e-5
  )


def test_batch_axes_normalize_each_stacked_layer():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((4, 6, 5)), jnp.float32)  # nn.scan params: (layers, in, out)
  layout = {'scan': snjax.KernelLayout(out_axes=(-1,), batch_axes=(0,))}
  params = {'scan': {'kernel': w}}
  state = snjax.sn_init(jax.random.key(0), params, layout=layout)
  assert state['scan']['kernel']['u'].shape == (4, 5)
  out, _ = snjax.sn_apply(params, state, layout=layout, tol=1e-8, max_iterations=3000)
  for i in range(4):
    assert _svd(np.asarray(out['scan']['kernel'][i], np.float64)) == pytest.approx(1.0, abs=1e-3)


def test_default_selection_skips_biases_embeddings_and_scales():
  params = {
    'Embed_0': {'embedding': jnp.ones((10, 4))},
    'attention': {'relative_bias': jnp.ones((4, 4)), 'query': {'kernel': jnp.ones((4, 2, 2))}},
    'LayerNorm_0': {'scale': jnp.ones(4), 'bias': jnp.ones(4)},
    'Dense_0': {'kernel': jnp.ones((4, 3)), 'bias': jnp.ones(3)},
    'count': jnp.ones((3, 3), jnp.int32),
  }
  state = snjax.sn_init(jax.random.key(0), params)
  assert set(snjax.sigmas(state)) == {'attention/query/kernel', 'Dense_0/kernel'}


def test_include_and_exclude():
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params, include=r'Conv_\d/kernel', exclude='Conv_1')
  assert set(snjax.sigmas(state)) == {'Conv_0/kernel', 'Conv_2/kernel'}
  out, _ = snjax.sn_apply(params, state, include=r'Conv_\d/kernel', exclude='Conv_1')
  np.testing.assert_array_equal(np.asarray(out['Conv_1']['kernel']), np.asarray(params['Conv_1']['kernel']))
  pred = lambda path, leaf: path.endswith('kernel') and leaf.ndim == 2  # noqa: E731
  state = snjax.sn_init(jax.random.key(0), params, include=pred)
  assert set(snjax.sigmas(state)) == {'Dense_0/kernel'}


def test_spectral_normalization_binds_options():
  params = _net_params()
  sn = snjax.spectral_normalization(layout=_LAYOUT, target_norm=2.0, n_power_iterations=3)
  state = sn.init(jax.random.key(0), params)
  a, state_a = sn.apply(params, state)
  b, state_b = snjax.sn_apply(params, state, layout=_LAYOUT, target_norm=2.0, n_power_iterations=3)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), (a, state_a), (b, state_b))


# ---- bad input: each error names the path or option and what was expected ----


def test_error_missing_state_path():
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params)
  del state['Conv_1']
  with pytest.raises(ValueError, match=re.escape("selected leaves with no state: ['Conv_1/kernel']")):
    snjax.sn_apply(params, state)


def test_error_extra_state_path():
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params)
  state['Ghost_0'] = {'kernel': {'u': jnp.ones(3), 'sigma': jnp.ones(())}}
  with pytest.raises(ValueError, match=re.escape("state entries with no selected leaf: ['Ghost_0/kernel']")):
    snjax.sn_apply(params, state)


def test_error_wrong_u_shape():
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params)
  state['Dense_0']['kernel']['u'] = jnp.ones(5)
  with pytest.raises(ValueError, match=r'Dense_0/kernel: state u has shape \(5,\), expected \(7,\)'):
    snjax.sn_apply(params, state)


def test_error_selected_leaf_with_ndim_below_two():
  with pytest.raises(ValueError, match=r'Dense_0/bias: selected .* shape \(3,\); expected a weight with ndim >= 2'):
    snjax.sn_init(jax.random.key(0), {'Dense_0': {'bias': jnp.ones(3)}}, include='bias')


def test_error_selected_integer_leaf():
  with pytest.raises(ValueError, match=r'table: selected .* dtype int32; expected a floating-point weight'):
    snjax.sn_init(jax.random.key(0), {'table': jnp.ones((3, 3), jnp.int32)}, include='table')


def test_error_include_matching_nothing():
  with pytest.raises(ValueError, match='selects no leaf'):
    snjax.sn_init(jax.random.key(0), _net_params(), include='nothing_like_this')


@pytest.mark.parametrize('n', [0, -1, 1.5, True])
def test_error_n_power_iterations(n):
  params = _net_params()
  state = snjax.sn_init(jax.random.key(0), params)
  with pytest.raises(ValueError, match='n_power_iterations must be an int >= 1'):
    snjax.sn_apply(params, state, n_power_iterations=n)


@pytest.mark.parametrize('eps', [-1e-12, 0.0, float('nan')])
def test_error_eps(eps):
  params = _net_params()
  with pytest.raises(ValueError, match='eps must be a finite float > 0'):
    snjax.sn_init(jax.random.key(0), params, eps=eps)


def test_error_bad_layout():
  with pytest.raises(ValueError, match=r'w: output axis 3 is out of range for a kernel of shape \(2, 3\)'):
    snjax.sn_init(jax.random.key(0), {'w': jnp.ones((2, 3))}, include='w', layout=3)
  with pytest.raises(ValueError, match="w: unknown layout 'pytorch'"):
    snjax.sn_init(jax.random.key(0), {'w': jnp.ones((2, 3))}, include='w', layout='pytorch')


def test_a_bare_array_is_a_pytree_too():
  # Haiku's SpectralNorm is called on one weight: the pytree is its root leaf. The state is the entry itself.
  w = 4.0 * jnp.eye(8)
  state = snjax.sn_init(jax.random.key(0), w)
  assert set(state) == {'u', 'sigma'} and state['u'].shape == (8,)
  np.testing.assert_allclose(state['sigma'], 4.0, rtol=1e-5)
  w_sn, new_state = snjax.sn_apply(w, state)
  np.testing.assert_allclose(w_sn, jnp.eye(8), rtol=1e-5)
  assert set(new_state) == {'u', 'sigma'}
  w_eval, same = snjax.sn_apply(w, new_state, update=False)
  assert same is new_state
  np.testing.assert_array_equal(w_eval, w_sn)
  assert set(snjax.sigmas(new_state)) == {''}
  with pytest.raises(ValueError, match=r'<root>: state u has shape \(3,\), expected \(8,\)'):
    snjax.sn_apply(w, {'u': jnp.ones(3), 'sigma': jnp.ones(())})
