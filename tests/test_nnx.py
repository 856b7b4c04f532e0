"""snjax.nnx: the NNX wrapper and the split/merge recipe for the functional core.

References: numpy SVD in float64; flax.nnx.SpectralNorm given the same u; the
materializing path for the fast path; sn_apply on the split params.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import snjax
from snjax.nnx import SpectralNorm, SpectralNormState
from tests._compat import (
  FLAX_VERSION,
  OptState,
  optimizer_update,
  set_variable_value,
  state_of,
  to_pure_dict,
  variable_types,
  variable_value,
)
from tests._tolerances import TWO_PROGRAMS


def _normal(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape)


def _top_sv(kernel):
  k = np.asarray(kernel, np.float64)
  return np.linalg.svd(k.reshape(-1, k.shape[-1]), compute_uv=False)[0]


CASES = {
  'linear': (lambda r: nnx.Linear(3, 5, rngs=r), (4, 3), {}),
  'conv': (lambda r: nnx.Conv(3, 4, (3, 3), rngs=r), (2, 5, 5, 3), {}),
  'linear_general': (lambda r: nnx.LinearGeneral(6, (2, 3), rngs=r), (4, 6), {}),
  'einsum': (lambda r: nnx.Einsum('bi,ihd->bhd', (3, 2, 4), (2, 4), rngs=r), (5, 3), {}),
}


def test_state_is_its_own_variable_type_and_params_are_untouched():
  """u and sigma are SpectralNormState (split apart from nnx.Param), and the raw kernel is bitwise unchanged
  after training and evaluation calls, eagerly and under nnx.jit (flax.nnx.SpectralNorm overwrites it)."""
  rngs = nnx.Rngs(0)
  model = SpectralNorm(nnx.Linear(4, 6, rngs=rngs), rngs=rngs)
  _, params, sn_state, rest = nnx.split(model, nnx.Param, SpectralNormState, ...)
  assert variable_types(params) == [nnx.Param] * 2
  shapes = jax.tree.map(jnp.shape, to_pure_dict(sn_state))
  assert shapes == {'batch_stats': {('kernel', 'u'): (1, 6), ('kernel', 'sigma'): ()}}
  assert not jax.tree.leaves(to_pure_dict(rest))
  kernel = np.asarray(model.layer_instance.kernel[...])
  x = _normal(0, (3, 4))
  model(x)
  model(x, update_stats=False)
  nnx.jit(lambda m, x: m(x))(model, x)
  model.eval()
  model(x)
  np.testing.assert_array_equal(model.layer_instance.kernel[...], kernel)


def test_optimizer_never_touches_the_state_and_sigma_tracks_the_svd():
  """nnx.Optimizer(wrt=nnx.Param) holds moments for the params only; in an nnx.jit training loop the state
  changes only by power iteration and sigma follows the changing kernel's top singular value."""
  rngs = nnx.Rngs(0)
  model = SpectralNorm(nnx.Linear(6, 8, rngs=rngs), rngs=rngs)
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  opt_shapes = {leaf.shape for leaf in jax.tree.leaves(nnx.state(opt, OptState))}
  assert opt_shapes == {(), (8,), (6, 8)}  # moments of kernel and bias, counters; no (1, 8) u
  x, target = _normal(0, (16, 6)), _normal(1, (16, 8))

  @nnx.jit
  def step(model, opt):
    grads = nnx.grad(lambda m: jnp.mean((m(x) - target) ** 2))(model)
    assert not jax.tree.leaves(state_of(grads, SpectralNormState))
    optimizer_update(opt, model, grads)

  kernel0 = np.asarray(model.layer_instance.kernel[...])
  for _ in range(30):
    step(model, opt)
  kernel = np.asarray(model.layer_instance.kernel[...])
  assert not np.allclose(kernel, kernel0)
  model(x)  # sigma of the training steps is that of the kernel before the last update
  np.testing.assert_allclose(model.batch_stats[('kernel', 'sigma')][...], _top_sv(kernel), rtol=1e-3)


@pytest.mark.skipif(FLAX_VERSION < (0, 12, 1), reason='flax.nnx.SpectralNorm, the reference, is in flax >= 0.12.1')
@pytest.mark.parametrize('n_steps', [1, 3])
def test_parity_with_flax_nnx_given_the_same_u(n_steps):
  """With the same u, one training call gives flax.nnx.SpectralNorm's output, u and sigma (both iterate
  v = normalize(M u), u' = normalize(M^T v); flax's sigma v M u' is ||M^T v||)."""
  ours = SpectralNorm(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)), n_steps=n_steps, rngs=nnx.Rngs(1))
  theirs = nnx.SpectralNorm(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)), n_steps=n_steps, rngs=nnx.Rngs(1))
  for key in (('kernel', 'u'), ('kernel', 'sigma')):
    assert theirs.batch_stats[key][...].shape == ours.batch_stats[key][...].shape
  theirs.batch_stats[('kernel', 'u')][...] = ours.batch_stats[('kernel', 'u')][...]
  x = _normal(2, (2, 5, 5, 3))
  y_ours, y_theirs = ours(x, update_stats=True), theirs(x, update_stats=True)
  np.testing.assert_allclose(y_ours, y_theirs, rtol=2e-5, atol=2e-6)
  for key in (('kernel', 'u'), ('kernel', 'sigma')):
    np.testing.assert_allclose(ours.batch_stats[key][...], theirs.batch_stats[key][...], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize('name', sorted(CASES))
def test_fast_path_equals_materialized_values_and_grads(name):
  """Output scaling on the raw kernel == the layer on W / sigma: values, parameter and input gradients."""
  make, shape, _ = CASES[name]
  x = _normal(3, shape)
  fast = SpectralNorm(make(nnx.Rngs(0)), fast_path=True, target_norm=0.7, rngs=nnx.Rngs(1))
  slow = SpectralNorm(make(nnx.Rngs(0)), fast_path=False, target_norm=0.7, rngs=nnx.Rngs(1))
  for m in (fast, slow):
    if getattr(m.layer_instance, 'bias', None) is not None:
      set_variable_value(m.layer_instance.bias, _normal(4, m.layer_instance.bias[...].shape))

  @nnx.jit
  def run(model, x):
    def loss(model, x):
      return jnp.sum(jnp.sin(model(x)))

    return nnx.grad(loss, argnums=(0, 1))(model, x), model(x, update_stats=False)

  (g_f, gx_f), y_f = run(fast, x)
  (g_s, gx_s), y_s = run(slow, x)
  np.testing.assert_allclose(y_f, y_s, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gx_f, gx_s, rtol=1e-4, atol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    to_pure_dict(state_of(g_f, nnx.Param)),
    to_pure_dict(state_of(g_s, nnx.Param)),
  )


def test_eval_is_bitwise_the_last_training_call():
  """update_stats=False (or .eval()) divides by the stored sigma: the last training call's output, bit for
  bit, and the state is left as it is."""
  rngs = nnx.Rngs(0)
  model = SpectralNorm(nnx.Linear(3, 5, rngs=rngs), rngs=rngs)
  x = _normal(0, (4, 3))
  y_train = model(x)
  state = jax.tree.map(np.asarray, to_pure_dict(nnx.state(model, SpectralNormState)))
  model.eval()
  np.testing.assert_array_equal(model(x), y_train)
  jax.tree.map(np.testing.assert_array_equal, to_pure_dict(nnx.state(model, SpectralNormState)), state)
  model.train()
  model(x)
  assert not np.array_equal(model.batch_stats[('kernel', 'u')][...], state['batch_stats'][('kernel', 'u')])


def test_split_merge_recipe_matches_the_wrapper():
  """The documented recipe (sn_init/sn_apply on the params of nnx.split, nnx.merge, call) gives what wrapping
  each layer in SpectralNorm gives, from the same u; inside jax.lax.scan the state shapes are static."""
  model = nnx.Sequential(nnx.Linear(2, 16, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(16, 1, rngs=nnx.Rngs(1)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  sn_state = snjax.sn_init(jax.random.key(0), params)
  assert set(snjax.sigmas(sn_state)) == {'layers/0/kernel', 'layers/2/kernel'}

  def forward(params, sn_state, x):
    params_sn, sn_state = snjax.sn_apply(params, sn_state)
    return nnx.merge(graphdef, params_sn, rest)(x), sn_state

  x = _normal(0, (8, 2))
  y_recipe, new_state = jax.jit(forward)(params, sn_state, x)

  wrapped = nnx.Sequential(
    SpectralNorm(nnx.Linear(2, 16, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(2)),
    nnx.relu,
    SpectralNorm(nnx.Linear(16, 1, rngs=nnx.Rngs(1)), rngs=nnx.Rngs(3)),
  )
  for i in (0, 2):
    set_variable_value(wrapped.layers[i].batch_stats[('kernel', 'u')], sn_state['layers'][str(i)]['kernel']['u'][None])
  np.testing.assert_allclose(wrapped(x), y_recipe, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    wrapped.layers[2].batch_stats[('kernel', 'sigma')][...],
    new_state['layers']['2']['kernel']['sigma'],
    rtol=TWO_PROGRAMS,
  )

  def body(sn_state, _):
    _, sn_state = forward(params, sn_state, x)
    return sn_state, None

  final, _ = jax.jit(lambda s: jax.lax.scan(body, s, None, length=20))(sn_state)
  kernel = variable_value(params['layers'][0]['kernel'])
  np.testing.assert_allclose(final['layers']['0']['kernel']['sigma'], _top_sv(kernel), rtol=1e-4)


def test_errors_and_warnings():
  rngs = nnx.Rngs(0)
  with pytest.raises(ValueError, match='no floating parameter with ndim >= 2'):
    SpectralNorm(nnx.LayerNorm(4, rngs=rngs), error_on_non_matrix=True, rngs=rngs)
  with pytest.raises(ValueError, match=r'^Input is 4D but error_on_non_matrix is True\. .*has shape \(3, 3, 2, 4\)'):
    SpectralNorm(nnx.Conv(2, 4, (3, 3), rngs=rngs), error_on_non_matrix=True, rngs=rngs)
  with pytest.raises(ValueError, match='n_steps must be an int >= 1'):
    SpectralNorm(nnx.Linear(2, 3, rngs=rngs), n_steps=0, rngs=rngs)
  for bad_eps in ({'epsilon': 0.0}, {'eps': -1.0}):  # eps: a deprecated alias
    with pytest.raises(ValueError, match='epsilon must be'):
      SpectralNorm(nnx.Linear(2, 3, rngs=rngs), rngs=rngs, **bad_eps)
  block = nnx.Sequential(nnx.Linear(2, 3, rngs=rngs), nnx.Linear(3, 3, rngs=rngs))
  with pytest.raises(ValueError, match='fast path does not apply'):
    SpectralNorm(block, fast_path=True, rngs=rngs)(jnp.ones((1, 2)))
  norm = SpectralNorm(nnx.LayerNorm(4, rngs=rngs), rngs=rngs)
  with pytest.warns(UserWarning, match='not normalized'):
    norm(jnp.ones((1, 4)))


def test_wrapped_block_materializes_every_kernel():
  """A wrapped block (two kernels) is normalized kernel by kernel, as sn_apply would from the same u."""
  rngs = nnx.Rngs(0)
  block = nnx.Sequential(nnx.Linear(2, 3, rngs=rngs), nnx.tanh, nnx.Linear(3, 4, rngs=rngs))
  sn = SpectralNorm(block, rngs=rngs)
  assert set(sn.batch_stats) == {('layers', i, 'kernel', k) for i in (0, 2) for k in ('u', 'sigma')}
  _, params, _ = nnx.split(block, nnx.Param, ...)
  state = {
    'layers': {
      str(i): {'kernel': {'u': sn.batch_stats[('layers', i, 'kernel', 'u')][...][0], 'sigma': 1.0}} for i in (0, 2)
    }
  }
  x = _normal(1, (5, 2))
  params_sn, _ = snjax.sn_apply(params, state)
  graphdef, _, rest = nnx.split(block, nnx.Param, ...)
  expected = nnx.merge(graphdef, params_sn, rest)(x)
  np.testing.assert_allclose(sn(x), expected, rtol=1e-5, atol=1e-6)


def test_exported_from_package():
  assert snjax.nnx.SpectralNorm is SpectralNorm and snjax.SpectralNormState is SpectralNormState
