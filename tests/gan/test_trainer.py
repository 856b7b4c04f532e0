"""Tests of snjax.gan.gan_trainer as a whole: a small GAN learns, any optax transformation and model style plug in."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import snjax
from tests.gan._gan_testing import DATA, LATENT, B, G, d_apply, g_apply, params, real


@pytest.mark.parametrize('loss', ['hinge', 'wasserstein', 'non_saturating'])
def test_a_small_gan_moves_the_fakes_towards_the_data(loss):
  """Real data N((3, -2), 0.1^2): after 200 steps the fake mean is much closer to it than at the start."""
  critic = nn.Sequential([nn.Dense(16), lambda x: nn.leaky_relu(x, 0.2), nn.Dense(1)])
  trainer = snjax.gan.gan_trainer(
    g_apply,
    lambda p, x: critic.apply({'params': p}, x),
    optax.adam(2e-2, b1=0.5),
    optax.adam(2e-2, b1=0.5),
    latent_shape=LATENT,
    loss=loss,
  )
  gp = G.init(jax.random.key(11), jnp.zeros((1, LATENT)))['params']
  state = trainer.init(jax.random.key(4), gp, critic.init(jax.random.key(12), jnp.zeros((1, DATA)))['params'])
  target = jnp.asarray([3.0, -2.0])

  def fake_mean_distance(s):
    return float(jnp.linalg.norm(jnp.mean(trainer.sample(s, jax.random.key(9), 256), axis=0) - target))

  start = fake_mean_distance(state)

  @jax.jit
  def run(state):
    def body(s, i):
      x = target + 0.1 * jax.random.normal(jax.random.fold_in(jax.random.key(5), i), (B, DATA))
      s, m = trainer.train_step(s, x)
      return s, m['finite']

    return jax.lax.scan(body, state, jnp.arange(200))

  state, finite = run(state)
  assert bool(jnp.all(finite))
  assert fake_mean_distance(state) < 0.25 * start


def test_sn_options_pass_through_and_any_optax_transformation():
  """torch layout for an Equinox-style critic, target_norm, and composed optimizers including spectral_projection."""

  def torch_critic(p, x):  # weights stored (out, in), as in PyTorch / Equinox
    h = jax.nn.relu(x @ p['l1']['weight'].T + p['l1']['bias'])
    return h @ p['l2']['weight'].T

  k1, k2 = jax.random.split(jax.random.key(8))
  cp = {
    'l1': {'weight': jax.random.normal(k1, (16, DATA)), 'bias': jnp.zeros(16)},
    'l2': {'weight': jax.random.normal(k2, (1, 16))},
  }
  gp, _ = params()
  tx = optax.MultiSteps(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2)), every_k_schedule=2)
  trainer = snjax.gan.gan_trainer(
    g_apply,
    torch_critic,
    optax.sgd(0.1),
    tx,
    latent_shape=LATENT,
    spectral_norm={'layout': 'torch', 'target_norm': 2.0, 'n_power_iterations': 2},
  )
  state = trainer.init(jax.random.key(9), gp, cp)
  assert state.sn_state['l1']['weight']['u'].shape == (16,)
  for i in range(2):
    state, m = trainer.critic_step(state, real(i))
  p_sn, _ = snjax.sn_apply(state.critic_params, state.sn_state, update=False, layout='torch', target_norm=2.0)
  for name in ('l1', 'l2'):
    np.testing.assert_allclose(np.linalg.norm(np.asarray(p_sn[name]['weight'], np.float64), 2), 2.0, rtol=2e-2)

  # Hard projection instead of the reparametrization: the raw critic weights stay below c.
  proj = snjax.gan.gan_trainer(
    g_apply,
    d_apply,
    optax.adam(1e-2),
    optax.chain(optax.adam(5e-2), snjax.spectral_projection(0.5)),
    latent_shape=LATENT,
    spectral_norm=False,
    loss='wasserstein',
  )
  state = proj.init(jax.random.key(10), *params(17))
  assert state.sn_state == {}
  state, m = proj.train_step(state, real(8))
  assert 'sigma_product' not in m and bool(m['finite'])
  for layer in state.critic_params.values():
    assert np.linalg.norm(np.asarray(layer['kernel'], np.float64), 2) <= 0.5 * (1 + 1e-3)


def test_nnx_critic_plugs_in():
  from flax import nnx

  class Critic(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(DATA, 8, rngs=rngs)
      self.l2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
      return self.l2(jax.nn.relu(self.l1(x)))

  graphdef, cp = nnx.split(Critic(nnx.Rngs(0)), nnx.Param)
  trainer = snjax.gan.gan_trainer(
    g_apply, lambda p, x: nnx.merge(graphdef, p)(x), optax.adam(1e-3), optax.adam(1e-3), latent_shape=LATENT
  )
  state = trainer.init(jax.random.key(11), params()[0], cp)
  # NNX params: the kernels (not the biases) are normalized; nnx.State paths end in the Variable's 'value'.
  assert sorted(p.removesuffix('/value') for p in snjax.sigmas(state.sn_state)) == ['l1/kernel', 'l2/kernel']
  state, m = trainer.train_step(state, real(9))
  assert bool(m['finite']) and int(state.step) == 1
