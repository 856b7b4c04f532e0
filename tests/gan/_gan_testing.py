"""Small models, batches and assertions shared by the tests of snjax.gan (imported by the test modules)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tests._tolerances import TWO_PROGRAMS

LATENT, DATA, B = 3, 2, 8
G = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(DATA)])
D = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(1)])
N_CRITIC = 2


def g_apply(p, z):
  return G.apply({'params': p}, z)


def d_apply(p, x):
  return D.apply({'params': p}, x)


def params(seed=0):
  gp = G.init(jax.random.key(seed), jnp.zeros((1, LATENT)))['params']
  cp = D.init(jax.random.key(seed + 1), jnp.zeros((1, DATA)))['params']
  return gp, cp


def real(seed, *lead):
  return jax.random.normal(jax.random.key(100 + seed), (*lead, B, DATA)) + 2.0


def fixed_z():
  return jax.random.normal(jax.random.key(42), (B, LATENT))


# A conv critic on 8x8x1 images (as in `snjax train --dataset digits`), with an MLP generator to keep it small.
IMG = (8, 8, 1)
CONV_G = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(64), lambda h: jnp.tanh(h).reshape(h.shape[0], *IMG)])
CONV_D = nn.Sequential(
  [
    nn.Conv(4, (3, 3)),
    lambda h: nn.leaky_relu(h, 0.2),
    nn.Conv(8, (4, 4), strides=(2, 2)),
    lambda h: nn.leaky_relu(h, 0.2).reshape(h.shape[0], -1),
    nn.Dense(1),
  ]
)


def images(seed, *lead):
  return jnp.tanh(jax.random.normal(jax.random.key(200 + seed), (*lead, B, *IMG)))


def assert_trees_close(a, b, rtol=TWO_PROGRAMS, atol=1e-6):
  def close(x, y):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)

  jax.tree_util.tree_map(close, a, b)


def assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def primitive_names(jaxpr) -> set:
  """Every primitive of a jaxpr and of the jaxprs nested in it."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(sub, 'eqns') or hasattr(getattr(sub, 'jaxpr', None), 'eqns'):
          names |= primitive_names(sub)
  return names


def config_options(**changes):
  """Every option of snjax.gan._step_config.step_config, gan_trainer's defaults but for ``changes``."""
  options = dict(
    latent_shape=LATENT,
    loss='hinge',
    n_critic=1,
    gp_weight=0.0,
    gp_target=1.0,
    r1_weight=0.0,
    spectral_norm=True,
    ema_decay=None,
    latent_sampler=None,
    mesh=None,
    data_axis='data',
  )
  return {**options, **changes}
