"""The same model normalized from Flax linen, Flax NNX, Haiku and Equinox params, unchanged models."""

import equinox as eqx
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import snjax
from tests._compat import nnx_list

_SIZES = [(3, 16), (16, 8), (8, 1)]


def _weights(seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.standard_normal(s).astype(np.float32), rng.standard_normal(s[1]).astype(np.float32)) for s in _SIZES]


def _mlp_reference(weights, x):
  """The float64 reference: every (in, out) matrix divided by its exact spectral norm."""
  h = np.asarray(x, np.float64)
  for i, (w, b) in enumerate(weights):
    w = w.astype(np.float64)
    h = h @ (w / np.linalg.norm(w, 2)) + b
    if i < len(weights) - 1:
      h = np.maximum(h, 0)
  return h


_X = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
_OPTS = dict(tol=1e-8, max_iterations=3000)


def _check(out):
  np.testing.assert_allclose(np.asarray(out), _mlp_reference(_weights(), _X), rtol=2e-3, atol=1e-4)


def test_flax_linen():
  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      for i, (_, out) in enumerate(_SIZES):
        x = nn.Dense(out)(x)
        if i < len(_SIZES) - 1:
          x = nn.relu(x)
      return x

  model = MLP()
  params = {f'Dense_{i}': {'kernel': w, 'bias': b} for i, (w, b) in enumerate(_weights())}
  state = snjax.sn_init(jax.random.key(0), params)
  params_sn, state = snjax.sn_apply(params, state, **_OPTS)
  _check(model.apply({'params': params_sn}, _X))
  assert set(snjax.sigmas(state)) == {'Dense_0/kernel', 'Dense_1/kernel', 'Dense_2/kernel'}


def test_flax_nnx_via_split_and_merge():
  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.layers = nnx_list([nnx.Linear(i, o, rngs=rngs) for i, o in _SIZES])

    def __call__(self, x):
      for i, layer in enumerate(self.layers):
        x = layer(x)
        if i < len(self.layers) - 1:
          x = nnx.relu(x)
      return x

  model = MLP(nnx.Rngs(0))
  for layer, (w, b) in zip(model.layers, _weights(), strict=False):
    layer.kernel.value = jnp.asarray(w)
    layer.bias.value = jnp.asarray(b)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  state = snjax.sn_init(jax.random.key(0), params)
  params_sn, state = snjax.sn_apply(params, state, **_OPTS)
  _check(nnx.merge(graphdef, params_sn, rest)(_X))
  assert set(snjax.sigmas(state)) == {f'layers/{i}/kernel' for i in range(3)}
  # The model's own parameters are untouched.
  np.testing.assert_array_equal(np.asarray(model.layers[0].kernel.value), _weights()[0][0])


def test_haiku():
  def forward(x):
    return hk.nets.MLP([o for _, o in _SIZES], activation=jax.nn.relu)(x)

  model = hk.without_apply_rng(hk.transform(forward))
  params = model.init(jax.random.key(0), _X)
  names = sorted(params)
  params = {n: {'w': jnp.asarray(w), 'b': jnp.asarray(b)} for n, (w, b) in zip(names, _weights(), strict=False)}
  state = snjax.sn_init(jax.random.key(0), params, layout='haiku')
  params_sn, state = snjax.sn_apply(params, state, layout='haiku', **_OPTS)
  _check(model.apply(params_sn, _X))
  assert set(snjax.sigmas(state)) == {f'{n}/w' for n in names}  # 'b' is a bias, not normalized


def test_equinox():
  model = eqx.nn.MLP(3, 1, 16, depth=2, activation=jax.nn.relu, key=jax.random.key(0))
  model = eqx.tree_at(lambda m: m.layers[1].weight, model, model.layers[1].weight[:8])  # 16 -> 8 -> 1
  model = eqx.tree_at(lambda m: m.layers[1].bias, model, model.layers[1].bias[:8])
  model = eqx.tree_at(lambda m: m.layers[2].weight, model, model.layers[2].weight[:, :8])
  for i, (w, b) in enumerate(_weights()):
    model = eqx.tree_at(lambda m, i=i: m.layers[i].weight, model, jnp.asarray(w.T))  # equinox: (out, in)
    model = eqx.tree_at(lambda m, i=i: m.layers[i].bias, model, jnp.asarray(b))
  params, static = eqx.partition(model, eqx.is_inexact_array)
  sn = snjax.spectral_normalization(layout='equinox')
  state = sn.init(jax.random.key(0), params)
  params_sn, state = snjax.sn_apply(params, state, layout='equinox', **_OPTS)
  out = jax.vmap(eqx.combine(params_sn, static))(_X)
  _check(out)
  assert set(snjax.sigmas(state)) == {f'layers/{i}/weight' for i in range(3)}


@pytest.mark.parametrize('jit', [False, True])
def test_flax_collection_sits_beside_params(jit):
  class Critic(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(1)(nn.relu(nn.Dense(8)(x)))

  model = Critic()
  variables = model.init(jax.random.key(0), _X)
  variables = {**variables, 'spectral_norm': snjax.sn_init(jax.random.key(1), variables['params'])}

  def step(variables, x):
    params_sn, sn_state = snjax.sn_apply(variables['params'], variables['spectral_norm'])
    return model.apply({'params': params_sn}, x), {**variables, 'spectral_norm': sn_state}

  step = jax.jit(step) if jit else step
  y, new_vars = step(variables, _X)
  assert y.shape == (5, 1)
  assert jax.tree.structure(new_vars) == jax.tree.structure(variables)
