"""snjax.linen: the drop-in for flax.linen.SpectralNorm.

References: numpy SVD in float64 of the kernel read as a (fan_in, fan_out)
matrix; flax.linen.SpectralNorm given the same u; the materializing path for
the fast path (values and gradients); the functional core (sn_apply).
"""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snjax
from snjax.linen import SNConv, SNDense, SpectralNorm
from tests import _random
from tests._tolerances import TWO_PROGRAMS


def _top_sv(kernel, out_axes=(-1,)):
  k = np.asarray(kernel, np.float64)
  out_axes = tuple(a % k.ndim for a in out_axes)
  in_axes = tuple(a for a in range(k.ndim) if a not in out_axes)
  m = np.transpose(k, in_axes + out_axes).reshape(int(np.prod([k.shape[a] for a in in_axes])), -1)
  return np.linalg.svd(m, compute_uv=False)[0]


def _normal(seed, shape):
  return jnp.asarray(_random.normal(seed, shape, stream=2))


# Each case: (layer factory, input shape, kernel output axes for the SVD reference, call kwargs).
LINEAR_CASES = {
  'dense': (lambda: nn.Dense(5), (4, 3), (-1,), {}),
  'dense_general': (lambda: nn.DenseGeneral((2, 3), axis=-1), (4, 6), (-2, -1), {}),
  'conv': (lambda: nn.Conv(4, (3, 3)), (2, 5, 5, 3), (-1,), {}),
  'conv_transpose': (lambda: nn.ConvTranspose(4, (3, 3), strides=(2, 2)), (2, 4, 4, 3), (-1,), {}),
  'einsum': (lambda: nn.Einsum((3, 2, 4), 'bi,ihd->bhd'), (5, 3), (-2, -1), {}),
  'conv_local': (lambda: nn.ConvLocal(3, (2, 2), padding='VALID'), (1, 3, 3, 2), (-1,), {}),
}


def _kernel(variables):
  return variables['params']['layer_instance']['kernel']


def _state(variables):
  return variables['batch_stats']


@pytest.mark.parametrize('name', ['dense_general', 'conv_transpose', 'einsum'])
def test_converges_to_unit_norm_vs_svd(name):
  """After enough updates the normalized kernel's top singular value (float64 SVD) is 1 within 1e-3,
  and the stored sigma is the kernel's top singular value."""
  make, shape, out_axes, _ = LINEAR_CASES[name]
  x = _normal(1, shape)
  sn = SpectralNorm(make(), n_steps=3, n_warmup_iterations=0, fast_path=False)
  variables = sn.init(jax.random.key(0), x, update_stats=False)
  kernel = _kernel(variables)

  @jax.jit
  def step(variables):
    _, upd = sn.apply(variables, x, update_stats=True, mutable=['batch_stats'])
    return {'params': variables['params'], **upd}

  for _ in range(40):
    variables = step(variables)
  sigma = np.asarray(jax.tree.leaves(variables['batch_stats'])[0])
  np.testing.assert_allclose(sigma, _top_sv(kernel, out_axes), rtol=1e-3)
  # The normalized kernel the layer sees: W / sigma has top singular value 1.
  np.testing.assert_allclose(_top_sv(np.asarray(kernel) / sigma, out_axes), 1.0, atol=1e-3)


@pytest.mark.parametrize('name', sorted(LINEAR_CASES))
def test_fast_path_equals_materialized_values_and_grads(name):
  """Scaling the output of the raw-kernel layer == running the layer on W / sigma, in value and in the
  gradient with respect to every parameter and the input (sigma differentiated in both)."""
  make, shape, _, _ = LINEAR_CASES[name]
  x = _normal(2, shape)
  layer = make()
  fast = SpectralNorm(layer, fast_path=True, target_norm=1.5)
  slow = SpectralNorm(layer, fast_path=False, target_norm=1.5)
  variables = fast.init(jax.random.key(0), x, update_stats=False)
  params = jax.tree.map(lambda p: p + 0.1 * _normal(3, p.shape), variables['params'])  # non-zero bias

  def loss(module, params, x, train):
    y, upd = module.apply(
      {'params': params, 'batch_stats': variables['batch_stats']}, x, update_stats=train, mutable=['batch_stats']
    )
    return jnp.sum(jnp.sin(y)), (y, upd)

  @jax.jit
  def both(params, x):
    grad = jax.grad(loss, argnums=(1, 2), has_aux=True)
    return [(grad(fast, params, x, train), grad(slow, params, x, train)) for train in (True, False)]

  # Training (sigma from the power step) and evaluation (stored sigma) paths, fast vs materialized.

  for ((gp_f, gx_f), (y_f, upd_f)), ((gp_s, gx_s), (y_s, upd_s)) in both(params, x):
    np.testing.assert_allclose(y_f, y_s, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), gp_f, gp_s)
    np.testing.assert_allclose(gx_f, gx_s, rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=TWO_PROGRAMS), upd_f, upd_s)


def test_fast_path_falls_back_for_other_layers():
  """A wrapped block (several kernels) or a subclass of Dense materializes W / sigma; fast_path=True says why."""

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(nn.relu(nn.Dense(4)(x)))

  class MyDense(nn.Dense):
    pass

  x = _normal(0, (2, 3))
  for layer in (Block(), MyDense(3)):
    sn = SpectralNorm(layer)
    variables = sn.init(jax.random.key(0), x, update_stats=False)
    y, upd = sn.apply(variables, x, update_stats=True, mutable=['batch_stats'])
    # Reference: the functional core on the same u, then the plain layer.
    state = {}
    for name, u in variables['batch_stats'].items():
      if name.endswith('/u'):
        keys = tuple(name[: -len('/u')].split('/')[1:])
        node = state
        for k in keys[:-1]:
          node = node.setdefault(k, {})
        node[keys[-1]] = {'u': u[0], 'sigma': variables['batch_stats'][name[:-2] + '/sigma']}
    p_sn, _ = snjax.sn_apply(variables['params']['layer_instance'], state, include=lambda p, leaf: leaf.ndim >= 2)
    np.testing.assert_allclose(y, layer.apply({'params': p_sn}, x), rtol=TWO_PROGRAMS, atol=1e-6)
    with pytest.raises(ValueError, match='fast path does not apply'):
      SpectralNorm(layer, fast_path=True).init(jax.random.key(0), x, update_stats=False)


@pytest.mark.parametrize(('name', 'n_steps'), [('dense', 3), ('conv', 1)])
def test_parity_with_flax_given_the_same_u(name, n_steps):
  """With flax's own u (same state names and shapes) one training call gives flax.linen.SpectralNorm's
  output, new u, new sigma and parameter gradients. Both iterate v = normalize(M u), u' = normalize(M^T v);
  flax's sigma = v^T M u' equals snjax's ||M^T v||; both read the kernel as reshape(-1, out)."""
  make, shape, _, _ = LINEAR_CASES[name]
  x = _normal(4, shape)
  ours = SpectralNorm(make(), n_steps=n_steps)
  theirs = nn.SpectralNorm(make(), n_steps=n_steps)
  flax_vars = theirs.init(jax.random.key(7), x, update_stats=False)
  ours_vars = ours.init(jax.random.key(0), x, update_stats=False)
  assert jax.tree.map(jnp.shape, flax_vars['batch_stats']) == jax.tree.map(jnp.shape, ours_vars['batch_stats'])
  # Raw params for both (flax stored W/sigma as its parameter at init), flax's u for both.
  variables = {'params': ours_vars['params'], 'batch_stats': flax_vars['batch_stats']}

  def run(module, params):
    y, upd = module.apply(
      {'params': params, 'batch_stats': variables['batch_stats']}, x, update_stats=True, mutable=['batch_stats']
    )
    return jnp.sum(y * jnp.cos(y)), (y, upd['batch_stats'])

  (g1, (y1, s1)) = jax.jit(lambda p: jax.grad(run, argnums=1, has_aux=True)(ours, p))(variables['params'])
  (g2, (y2, s2)) = jax.jit(lambda p: jax.grad(run, argnums=1, has_aux=True)(theirs, p))(variables['params'])
  np.testing.assert_allclose(y1, y2, rtol=2e-5, atol=2e-6)
  for key in s2:
    np.testing.assert_allclose(s1[key], s2[key], rtol=2e-5, atol=2e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), g1, g2)


def test_init_stores_the_raw_kernel_and_a_warm_sigma():
  """model.init stores the kernel initializer's value (flax.linen.SpectralNorm stores W/sigma), and the
  stored sigma is already the top singular value (warm-up iterations at init)."""
  x = _normal(0, (2, 6))
  # A random kernel with singular values 3, 1.5, 1, ...: 15 warm-up steps converge to 1e-4.
  q1, _ = np.linalg.qr(np.asarray(_normal(5, (6, 6))))
  q2, _ = np.linalg.qr(np.asarray(_normal(6, (8, 8))))
  w0 = ((q1 * np.array([3.0, 1.5, 1.0, 0.8, 0.5, 0.2])) @ q2[:6]).astype(np.float32)
  dense = nn.Dense(8, kernel_init=lambda key, shape, dtype: jnp.asarray(w0, dtype))
  for train in (False, True):
    variables = SpectralNorm(dense).init(jax.random.key(3), x, update_stats=train)
    np.testing.assert_array_equal(_kernel(variables), w0)
    np.testing.assert_allclose(variables['batch_stats']['layer_instance/kernel/sigma'], 3.0, rtol=1e-4)
  flax_vars = nn.SpectralNorm(dense).init(jax.random.key(3), x, update_stats=False)
  assert not np.allclose(_kernel(flax_vars), w0)  # the flax behaviour this module does not copy


@pytest.mark.parametrize('jit', [False, True])
def test_eval_is_bitwise_the_last_training_call_and_runs_no_iteration(jit):
  """update_stats=False uses the stored sigma: with the same weights the output equals the last training
  call's bit for bit, the state is not touched, and changing u alone does not change it."""
  x = _normal(0, (4, 3))
  sn = SpectralNorm(nn.Dense(5))
  variables = sn.init(jax.random.key(0), x, update_stats=False)

  def train(v):
    return sn.apply(v, x, update_stats=True, mutable=['batch_stats'])

  def evaluate(v):
    return sn.apply(v, x, update_stats=False)

  if jit:
    train, evaluate = jax.jit(train), jax.jit(evaluate)
  y_train, upd = train(variables)
  variables = {'params': variables['params'], **upd}
  np.testing.assert_array_equal(evaluate(variables), y_train)
  scrambled = dict(variables['batch_stats'])
  scrambled['layer_instance/kernel/u'] = -scrambled['layer_instance/kernel/u'] + 1.0
  np.testing.assert_array_equal(evaluate({'params': variables['params'], 'batch_stats': scrambled}), y_train)
  y, upd = sn.apply(variables, x, update_stats=False, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, upd['batch_stats'], variables['batch_stats'])


def test_whole_model_functional_pattern_matches_module_way():
  """An unchanged model + sn_init/sn_apply gives what wrapping each layer in SpectralNorm gives, from the
  same u (the recipe of the README's 'Flax modules' section)."""

  class Plain(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.leaky_relu(nn.Dense(16)(x), 0.2)
      return nn.Dense(1)(h)

  class Wrapped(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      h = SpectralNorm(nn.Dense(16, name='Dense_0'))(x, update_stats=train)
      return SpectralNorm(nn.Dense(1, name='Dense_1'))(nn.leaky_relu(h, 0.2), update_stats=train)

  x = _normal(0, (8, 2))
  model = Plain()
  variables = model.init(jax.random.key(0), x)
  state = snjax.sn_init(jax.random.key(1), variables['params'])
  params_sn, new_state = snjax.sn_apply(variables['params'], state)
  y_functional = model.apply({'params': params_sn}, x)

  wrapped = Wrapped()
  wvars = wrapped.init(jax.random.key(0), x, train=False)
  assert jax.tree.map(jnp.shape, wvars['params']) == jax.tree.map(jnp.shape, variables['params'])
  stats = {}
  for i, layer in enumerate(('Dense_0', 'Dense_1')):
    stats[f'SpectralNorm_{i}'] = {
      f'{layer}/kernel/u': state[layer]['kernel']['u'][None],
      f'{layer}/kernel/sigma': state[layer]['kernel']['sigma'],
    }
  y_module, upd = wrapped.apply(
    {'params': variables['params'], 'batch_stats': stats}, x, train=True, mutable=['batch_stats']
  )
  np.testing.assert_allclose(y_module, y_functional, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    upd['batch_stats']['SpectralNorm_1']['Dense_1/kernel/sigma'],
    new_state['Dense_1']['kernel']['sigma'],
    rtol=TWO_PROGRAMS,
  )


def test_flax_checkpoint_loads_and_keeps_training():
  """Variables trained with flax.linen.SpectralNorm drive snjax.SpectralNorm unchanged (same collection,
  names, shapes): the import is the whole migration."""

  def critic(sn_cls):
    class Critic(nn.Module):
      @nn.compact
      def __call__(self, x, train):
        x = nn.relu(sn_cls(nn.Conv(4, (3, 3)))(x, update_stats=train))
        return sn_cls(nn.Dense(1))(x.reshape(x.shape[0], -1), update_stats=train)

    return Critic()

  x = _normal(0, (2, 5, 5, 3))
  flax_model, ours = critic(nn.SpectralNorm), critic(SpectralNorm)
  variables = flax_model.init(jax.random.key(0), x, train=False)
  for _ in range(3):
    _, upd = flax_model.apply(variables, x, train=True, mutable=['batch_stats'])
    variables = {'params': variables['params'], **upd}
  y_flax, upd_flax = flax_model.apply(variables, x, train=True, mutable=['batch_stats'])
  y_ours, upd_ours = ours.apply(variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(y_ours, y_flax, rtol=1e-4, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), upd_ours, upd_flax)


class _Block(nn.Module):
  """A scan body: tanh(SpectralNorm(Dense)(carry))."""

  @nn.compact
  def __call__(self, carry, _, train):
    return jnp.tanh(SpectralNorm(nn.Dense(4))(carry, update_stats=train)), None


def test_nn_scan_one_state_per_layer():
  """Under nn.scan each layer has its own u and sigma (static shapes (3, 1, 4), (3,)) and the result equals
  the unlifted module applied layer by layer."""
  scanned = nn.scan(
    _Block,
    variable_axes={'params': 0, 'batch_stats': 0},
    split_rngs={'params': True},
    length=3,
    in_axes=(nn.broadcast, nn.broadcast),
  )()
  x = _normal(0, (2, 4))
  svars = scanned.init(jax.random.key(0), x, None, False)
  assert svars['batch_stats']['SpectralNorm_0']['Dense_0/kernel/u'].shape == (3, 1, 4)
  (y, _), upd = jax.jit(lambda v: scanned.apply(v, x, None, True, mutable=['batch_stats']))(svars)
  h = x
  for i in range(3):
    layer_vars = jax.tree.map(lambda a, i=i: a[i], svars)
    (h, _), layer_upd = _Block().apply(layer_vars, h, None, True, mutable=['batch_stats'])
    np.testing.assert_allclose(
      upd['batch_stats']['SpectralNorm_0']['Dense_0/kernel/sigma'][i],
      layer_upd['batch_stats']['SpectralNorm_0']['Dense_0/kernel/sigma'],
      rtol=TWO_PROGRAMS,
    )
  np.testing.assert_allclose(y, h, rtol=1e-5, atol=1e-6)


def test_nn_remat_same_values_and_grads():
  """nn.remat of a block holding SpectralNorm: same gradients as without remat."""
  remat = nn.remat(_Block, static_argnums=(3,))()
  x = _normal(0, (2, 4))
  rvars = remat.init(jax.random.key(0), x, None, False)

  def loss(module, params):
    (y, _), _ = module.apply(
      {'params': params, 'batch_stats': rvars['batch_stats']}, x, None, True, mutable=['batch_stats']
    )
    return jnp.sum(y**2)

  g_remat = jax.jit(jax.grad(lambda p: loss(remat, p)))(rvars['params'])
  g_plain = jax.grad(lambda p: loss(_Block(), p))(rvars['params'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g_remat, g_plain)


def test_nn_vmap_independent_layers():
  """nn.vmap over a stack of independent layers (one state each) equals each layer alone."""
  vmapped = nn.vmap(
    _Block, variable_axes={'params': 0, 'batch_stats': 0}, split_rngs={'params': True}, in_axes=(0, None, None)
  )()
  xs = _normal(1, (2, 5, 4))
  vvars = vmapped.init(jax.random.key(0), xs, None, False)
  assert vvars['batch_stats']['SpectralNorm_0']['Dense_0/kernel/sigma'].shape == (2,)
  (yv, _), _ = vmapped.apply(vvars, xs, None, True, mutable=['batch_stats'])
  for i in range(2):
    layer_vars = jax.tree.map(lambda a, i=i: a[i], vvars)
    (yi, _), _ = _Block().apply(layer_vars, xs[i], None, True, mutable=['batch_stats'])
    np.testing.assert_allclose(yv[i], yi, rtol=1e-5, atol=1e-6)


def test_lax_scan_training_loop_tracks_the_svd():
  """Inside a jax.lax.scan training loop (static state shapes) sigma tracks the top singular value of the
  changing kernel."""
  x = _normal(0, (16, 6))
  target = _normal(1, (16, 8))
  model = SpectralNorm(nn.Dense(8))
  variables = model.init(jax.random.key(0), x, update_stats=False)

  def step(variables, _):
    def loss(params):
      y, upd = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']}, x, update_stats=True, mutable=['batch_stats']
      )
      return jnp.mean((y - target) ** 2), upd

    g, upd = jax.grad(loss, has_aux=True)(variables['params'])
    params = jax.tree.map(lambda p, d: p - 0.05 * d, variables['params'], g)
    return {'params': params, **upd}, None

  before = _kernel(variables)
  variables, _ = jax.jit(lambda v: jax.lax.scan(step, v, None, length=60))(variables)
  assert not np.allclose(_kernel(variables), before)
  sigma = variables['batch_stats']['layer_instance/kernel/sigma']
  np.testing.assert_allclose(sigma, _top_sv(_kernel(variables)), rtol=1e-3)


def test_sn_dense_and_sn_conv_are_the_wrapper():
  """SNDense / SNConv compute exactly SpectralNorm(nn.Dense / nn.Conv) with the same variables."""
  x = _normal(0, (2, 6, 6, 3))
  conv = SNConv(4, (3, 3), strides=2)
  variables = conv.init(jax.random.key(0), x, update_stats=False)
  y, upd = conv.apply(variables, x, update_stats=True, mutable=['batch_stats'])
  ref = SpectralNorm(nn.Conv(4, (3, 3), strides=2))
  ref_vars = {
    'params': {'layer_instance': variables['params']['Conv_0']},
    'batch_stats': {
      'layer_instance/kernel/' + k.split('/')[-1]: v for k, v in variables['batch_stats']['SpectralNorm_0'].items()
    },
  }
  y_ref, _ = ref.apply(ref_vars, x, update_stats=True, mutable=['batch_stats'])
  np.testing.assert_array_equal(y, y_ref)
  dense = SNDense(3, target_norm=2.0)
  dvars = dense.init(jax.random.key(0), x[:, 0, 0], update_stats=False)
  kernel = dvars['params']['Dense_0']['kernel']
  sigma = dvars['batch_stats']['SpectralNorm_0']['Dense_0/kernel/sigma']
  np.testing.assert_allclose(
    dense.apply(dvars, x[:, 0, 0], update_stats=False), x[:, 0, 0] @ (2.0 * kernel / sigma), rtol=1e-5, atol=1e-6
  )


def test_half_precision_zero_weights_and_partitioned_params():
  """bf16 kernels keep their dtype (iterated in float32); an all-zero kernel gives the bias, not NaN;
  params boxed with nn.with_partitioning are normalized and stay boxed."""
  x = _normal(0, (3, 4))
  sn = SpectralNorm(nn.Dense(5, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16))
  variables = sn.init(jax.random.key(0), x, update_stats=False)
  y, upd = sn.apply(variables, x, update_stats=True, mutable=['batch_stats'])
  assert y.dtype == jnp.bfloat16
  assert upd['batch_stats']['layer_instance/kernel/u'].dtype == jnp.float32

  zero = SpectralNorm(nn.Dense(5, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.ones))
  zvars = zero.init(jax.random.key(0), x, update_stats=False)
  for train in (True, False):
    y, _ = zero.apply(zvars, x, update_stats=train, mutable=['batch_stats'])
    np.testing.assert_array_equal(y, np.ones((3, 5), np.float32))
    g = jax.grad(
      lambda p, train=train: jnp.sum(
        zero.apply({**zvars, 'params': p}, x, update_stats=train, mutable=['batch_stats'])[0]
      )
    )(zvars['params'])
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))

  boxed = SpectralNorm(nn.Dense(5, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, 'model'))))
  bvars = boxed.init(jax.random.key(0), x, update_stats=False)
  assert isinstance(bvars['params']['layer_instance']['kernel'], nn.Partitioned)
  y, _ = boxed.apply(bvars, x, update_stats=True, mutable=['batch_stats'])
  kernel = bvars['params']['layer_instance']['kernel'].unbox()
  assert np.isfinite(np.asarray(y)).all() and y.shape == (3, 5)
  np.testing.assert_allclose(bvars['batch_stats']['layer_instance/kernel/sigma'], _top_sv(kernel), rtol=1e-3)


def test_errors_name_the_fix():
  x = _normal(0, (2, 6, 6, 3))
  sn = SpectralNorm(nn.Dense(3))
  variables = sn.init(jax.random.key(0), x[:, 0, 0], update_stats=False)
  with pytest.raises(ValueError, match=r"not mutable: pass mutable=\['batch_stats'\]"):
    sn.apply(variables, x[:, 0, 0], update_stats=True)
  custom = SpectralNorm(nn.Dense(3), collection_name='sn_state')
  cvars = custom.init(jax.random.key(0), x[:, 0, 0], update_stats=False)
  assert set(cvars) == {'params', 'sn_state'}
  with pytest.raises(ValueError, match=r"mutable=\['sn_state'\]"):
    custom.apply(cvars, x[:, 0, 0], update_stats=True, mutable=['batch_stats'])
  with pytest.raises(ValueError, match="no 'layer_instance/kernel/u'.*including 'batch_stats'"):
    sn.apply({'params': variables['params']}, x[:, 0, 0], update_stats=False)
  with pytest.raises(ValueError, match='no floating parameter with ndim >= 2'):
    SpectralNorm(nn.LayerNorm(), error_on_non_matrix=True).init(jax.random.key(0), x, update_stats=False)
  # flax's own sentence first (code matching flax.linen.SpectralNorm's error keeps working), then the path and fix.
  with pytest.raises(
    ValueError, match=r"^Input is 4D but error_on_non_matrix is True\. .*'kernel' has shape \(3, 3, 3, 4\)"
  ):
    SpectralNorm(nn.Conv(4, (3, 3)), error_on_non_matrix=True).init(jax.random.key(0), x, update_stats=False)
  with pytest.warns(UserWarning, match='not normalized'):
    SpectralNorm(nn.LayerNorm()).init(jax.random.key(0), x, update_stats=False)
  with pytest.raises(ValueError, match='n_steps must be an int >= 1'):
    SpectralNorm(nn.Dense(3), n_steps=0).init(jax.random.key(0), x, update_stats=False)
  for bad_eps in ({'epsilon': 0.0}, {'eps': -1.0}):  # eps: a deprecated alias
    with pytest.raises(ValueError, match='epsilon must be'):
      SpectralNorm(nn.Dense(3), **bad_eps).init(jax.random.key(0), x, update_stats=False)
  bad = dict(variables['batch_stats'])
  bad['layer_instance/kernel/u'] = jnp.ones((1, 7))
  with pytest.raises(ValueError, match=r'expected \(1, 3\)'):
    sn.apply({'params': variables['params'], 'batch_stats': bad}, x[:, 0, 0], update_stats=False)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    sn.apply(variables, x[:, 0, 0], update_stats=False)


def test_exported_from_package():
  assert snjax.SpectralNorm is SpectralNorm and snjax.SNDense is SNDense and snjax.SNConv is SNConv


def test_dense_general_batch_dims_one_sigma_per_block_and_setup_style():
  """DenseGeneral(batch_dims=(0,)) is one matrix per batch index: one u and sigma each, every sigma the SVD's
  top singular value of its block (materialized, as the fast path needs a single sigma); the module also
  works bound in setup()."""
  layer = SpectralNorm(nn.DenseGeneral(5, axis=-1, batch_dims=(0,)))
  variables = layer.init(jax.random.key(0), _normal(1, (3, 2, 4)), update_stats=False)
  kernel = np.asarray(_kernel(variables))
  assert variables['batch_stats']['layer_instance/kernel/u'].shape == (3, 1, 5)
  np.testing.assert_allclose(
    variables['batch_stats']['layer_instance/kernel/sigma'], [_top_sv(k) for k in kernel], rtol=1e-3
  )

  class WithSetup(nn.Module):
    def setup(self):
      self.sn = SpectralNorm(nn.Dense(3))

    def __call__(self, x, train):
      return self.sn(x, update_stats=train)

  x = _normal(2, (2, 4))
  svars = WithSetup().init(jax.random.key(0), x, False)
  y, _ = WithSetup().apply(svars, x, True, mutable=['batch_stats'])
  kernel = svars['params']['sn']['layer_instance']['kernel']
  assert y.shape == (2, 3) and svars['batch_stats']['sn']['layer_instance/kernel/u'].shape == (1, 3)
  np.testing.assert_allclose(svars['batch_stats']['sn']['layer_instance/kernel/sigma'], _top_sv(kernel), rtol=1e-3)


def test_error_on_non_matrix_message_starts_with_flax_own_message():
  # The same wrapped conv under flax.linen.SpectralNorm and snjax.SpectralNorm: snjax's message starts with flax's.
  x = jnp.ones((1, 5, 5, 3))
  with pytest.raises(ValueError) as flax_error:
    nn.SpectralNorm(nn.Conv(4, (3, 3)), error_on_non_matrix=True).init(jax.random.key(0), x, update_stats=True)
  with pytest.raises(ValueError) as ours:
    SpectralNorm(nn.Conv(4, (3, 3)), error_on_non_matrix=True).init(jax.random.key(0), x, update_stats=True)
  flax_message = str(flax_error.value).split('\n')[0]
  assert flax_message and str(ours.value).startswith(flax_message)


def test_deprecated_option_names_warn_and_still_work():
  x = jnp.ones((2, 4))
  with pytest.warns(DeprecationWarning, match='n_warmup_iterations'):
    old = SpectralNorm(nn.Dense(3), n_warmup_steps=4).init(jax.random.key(0), x, update_stats=False)
  new = SpectralNorm(nn.Dense(3), n_warmup_iterations=4).init(jax.random.key(0), x, update_stats=False)
  chex_equal = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), old, new)
  assert all(jax.tree_util.tree_leaves(chex_equal))
  with pytest.warns(DeprecationWarning, match='epsilon'):
    SpectralNorm(nn.Dense(3), eps=1e-6).init(jax.random.key(0), x, update_stats=False)
