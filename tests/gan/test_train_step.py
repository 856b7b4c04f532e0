"""Tests of snjax.train_step: each step against a hand-written reference built from sn_apply and optax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import snjax
from snjax import transform

LATENT, DATA, B = 3, 2, 8
G = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(DATA)])
D = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(1)])


def g_apply(p, z):
  return G.apply({'params': p}, z)


def d_apply(p, x):
  return D.apply({'params': p}, x)


def _params(seed=0):
  gp = G.init(jax.random.key(seed), jnp.zeros((1, LATENT)))['params']
  cp = D.init(jax.random.key(seed + 1), jnp.zeros((1, DATA)))['params']
  return gp, cp


def _real(seed, *lead):
  return jax.random.normal(jax.random.key(100 + seed), (*lead, B, DATA)) + 2.0


def _fixed_z():
  return jax.random.normal(jax.random.key(42), (B, LATENT))


def _assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
  def close(x, y):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)

  jax.tree_util.tree_map(close, a, b)


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.fixture(scope='module')
def fixed_trainer():
  """A hinge SN-GAN trainer whose latents do not depend on the key, so a reference can rebuild the step."""
  return snjax.gan.gan_trainer(
    g_apply, d_apply, optax.adam(1e-2), optax.adam(1e-2), latent_shape=LATENT, latent_sampler=lambda k, n: _fixed_z()
  )


N_CRITIC = 2


@pytest.fixture(scope='module')
def wgan_trainer():
  """WGAN-GP with n_critic = 2 and a generator EMA, shared by several tests (one compilation)."""
  return snjax.gan.gan_trainer(
    g_apply,
    d_apply,
    optax.adam(1e-2),
    optax.rmsprop(1e-2),
    latent_shape=LATENT,
    n_critic=N_CRITIC,
    loss='wasserstein',
    gp_weight=10.0,
    ema_decay=0.5,
  )


def test_critic_step_matches_reference(fixed_trainer):
  gp, cp = _params()
  state = fixed_trainer.init(jax.random.key(0), gp, cp)
  real = _real(0)
  new, metrics = fixed_trainer.critic_step(state, real)

  fake = g_apply(gp, _fixed_z())

  def loss(p):
    p_sn, sn_state = snjax.sn_apply(p, state.sn_state)
    return snjax.gan.hinge_critic_loss(d_apply(p_sn, real)[:, 0], d_apply(p_sn, fake)[:, 0]), sn_state

  (value, sn_state), grads = jax.value_and_grad(loss, has_aux=True)(cp)
  tx = optax.adam(1e-2)
  updates, _ = tx.update(grads, tx.init(cp), cp)
  _assert_trees_close(new.critic_params, optax.apply_updates(cp, updates))
  _assert_trees_close(new.sn_state, sn_state)
  _assert_trees_equal(new.generator_params, gp)
  assert int(new.critic_updates) == 1 and int(new.step) == 0
  assert not np.array_equal(np.asarray(new.rng), np.asarray(state.rng))
  np.testing.assert_allclose(float(metrics['critic_loss']), float(value), rtol=1e-6)
  np.testing.assert_allclose(float(metrics['critic_grad_norm']), float(optax.global_norm(grads)), rtol=1e-5)
  sig = snjax.sigmas(sn_state)
  for path, s in sig.items():
    np.testing.assert_allclose(float(metrics[f'sigma/{path}']), float(s), rtol=1e-6)
  np.testing.assert_allclose(float(metrics['sigma_product']), np.prod([float(s) for s in sig.values()]), rtol=1e-5)
  assert bool(metrics['finite'])


def test_sn_apply_runs_once_per_critic_step(monkeypatch):
  calls = []
  original = transform.sn_apply

  def counting(*args, **kwargs):
    calls.append(kwargs.get('update', True))
    return original(*args, **kwargs)

  monkeypatch.setattr(transform, 'sn_apply', counting)
  trainer = snjax.gan.gan_trainer(g_apply, d_apply, optax.sgd(0.1), optax.sgd(0.1), latent_shape=LATENT, gp_weight=10.0)
  state = trainer.init(jax.random.key(0), *_params())
  calls.clear()
  jax.eval_shape(trainer.critic_step, state, _real(0))  # traces the step (no need to compile it)
  assert calls == [True]  # one call serves the real batch, the fake batch and the gradient penalty


def test_generator_step_matches_reference_and_leaves_the_critic_state(fixed_trainer):
  gp, cp = _params(3)
  state = fixed_trainer.init(jax.random.key(1), gp, cp)
  state, _ = fixed_trainer.critic_step(state, _real(1))  # the critic's weights moved since its sigma was computed
  new, metrics = fixed_trainer.generator_step(state, _real(2))

  critic_sn, _ = snjax.sn_apply(state.critic_params, state.sn_state)  # the current critic, state not advanced
  loss = lambda p: snjax.gan.hinge_generator_loss(d_apply(critic_sn, g_apply(p, _fixed_z()))[:, 0])  # noqa: E731
  value, grads = jax.value_and_grad(loss)(gp)
  tx = optax.adam(1e-2)
  updates, _ = tx.update(grads, tx.init(gp), gp)
  _assert_trees_close(new.generator_params, optax.apply_updates(gp, updates))
  _assert_trees_equal(new.sn_state, state.sn_state)
  _assert_trees_equal(new.critic_params, state.critic_params)
  _assert_trees_equal(new.critic_opt_state, state.critic_opt_state)
  assert int(new.step) == 1 and int(new.critic_updates) == 1
  np.testing.assert_allclose(float(metrics['generator_loss']), float(value), rtol=1e-6)
  np.testing.assert_allclose(float(metrics['generator_grad_norm']), float(optax.global_norm(grads)), rtol=1e-5)


@pytest.mark.parametrize('stacked', [True, False])
def test_train_step_is_n_critic_critic_steps_then_a_generator_step(wgan_trainer, stacked):
  n_critic, trainer = N_CRITIC, wgan_trainer
  state0 = trainer.init(jax.random.key(2), *_params(5))
  real = _real(3, n_critic) if stacked else _real(3)
  new, metrics = trainer.train_step(state0, real)
  state, losses = state0, []
  for i in range(n_critic):
    state, m = trainer.critic_step(state, real[i] if stacked else real)
    losses.append(float(m['critic_loss']))
  ema_before = state.generator_ema
  state, gm = trainer.generator_step(state, real[0] if stacked else real)
  _assert_trees_close(new, state, rtol=1e-5, atol=1e-6)
  assert int(new.step) == 1 and int(new.critic_updates) == n_critic
  np.testing.assert_allclose(float(metrics['critic_loss']), np.mean(losses), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['generator_loss']), float(gm['generator_loss']), rtol=1e-5)
  assert {'gradient_penalty', 'real_score', 'fake_score', 'sigma_product'} <= set(metrics)
  # EMA with decay 0.5: the mean of the previous EMA and the new params.
  expected_ema = jax.tree_util.tree_map(lambda e, p: 0.5 * e + 0.5 * p, ema_before, state.generator_params)
  _assert_trees_close(state.generator_ema, expected_ema)


def test_evaluation_uses_stored_sigma_and_does_not_touch_the_state(fixed_trainer):
  state = fixed_trainer.init(jax.random.key(3), *_params(7))
  state, _ = fixed_trainer.critic_step(state, _real(4))
  before = jax.tree_util.tree_map(np.asarray, state)
  x = _real(5)
  scores = fixed_trainer.critic_scores(state, x)
  p_sn, _ = snjax.sn_apply(state.critic_params, state.sn_state, update=False)
  np.testing.assert_allclose(np.asarray(scores), np.asarray(d_apply(p_sn, x)[:, 0]), rtol=1e-6, atol=1e-6)
  _assert_trees_equal(jax.tree_util.tree_map(np.asarray, state), before)
  # No EMA: sample falls back to the generator params (the fixed sampler ignores the key and n).
  samples = fixed_trainer.sample(state, jax.random.key(0), B)
  np.testing.assert_allclose(np.asarray(samples), np.asarray(g_apply(state.generator_params, _fixed_z())), rtol=1e-6)


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
      real = target + 0.1 * jax.random.normal(jax.random.fold_in(jax.random.key(5), i), (B, DATA))
      s, m = trainer.train_step(s, real)
      return s, m['finite']

    return jax.lax.scan(body, state, jnp.arange(200))

  state, finite = run(state)
  assert bool(jnp.all(finite))
  assert fake_mean_distance(state) < 0.25 * start


def test_non_finite_step_returns_the_input_state_unchanged(wgan_trainer):
  trainer = wgan_trainer
  state = trainer.init(jax.random.key(6), *_params(13))
  bad = _real(6).at[0, 0].set(jnp.nan)
  for step, real in [
    (trainer.critic_step, bad),
    (trainer.train_step, bad),
    (trainer.train_step, jnp.stack([_real(7), bad])),  # the second micro-step fails: all or nothing
  ]:
    new, metrics = step(state, real)
    assert not bool(metrics['finite'])
    _assert_trees_equal(new, state)
  # A generator whose output overflows to inf: the generator step is refused as well.
  gp, cp = _params(13)
  gp['layers_2']['kernel'] = gp['layers_2']['kernel'] * 3e38
  state = trainer.init(jax.random.key(6), gp, cp)
  new, metrics = trainer.generator_step(state, _real(6))
  assert not bool(metrics['finite'])
  _assert_trees_equal(new, state)
  good, metrics = trainer.critic_step(trainer.init(jax.random.key(6), *_params(13)), _real(6))
  assert bool(metrics['finite'])


def test_bad_batches_are_clear_errors(wgan_trainer):
  trainer = wgan_trainer
  state = trainer.init(jax.random.key(7), *_params())
  with pytest.raises(ValueError, match=r'critic_step: the real batch is \(8, 3\) float32, but the generator makes'):
    trainer.critic_step(state, jnp.zeros((B, 3)))
  with pytest.raises(ValueError, match=r'the real batch is \(8, 2\) uint8.*cast the data'):
    trainer.critic_step(state, jnp.zeros((B, DATA), jnp.uint8))
  with pytest.raises(ValueError, match=r'or 2 of them stacked, \(n_critic=2, B, \.\.\.\)'):
    trainer.train_step(state, jnp.zeros((3, B, DATA)))
  with pytest.raises(ValueError, match='generator_step: the real batch'):
    trainer.generator_step(state, jnp.zeros((B,)))
  bad_critic = snjax.gan.gan_trainer(
    g_apply, lambda p, x: d_apply(p, x)[:, 0].reshape(2, -1), optax.sgd(0.1), optax.sgd(0.1), latent_shape=LATENT
  )
  with pytest.raises(ValueError, match=r'critic_apply must return one score per example, shape \(8,\) or \(8, 1\)'):
    bad_critic.critic_step(state, _real(0))


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(n_critic=0), 'n_critic must be an int >= 1'),
    (dict(gp_weight=-1.0), 'gp_weight must be a finite float >= 0'),
    (dict(ema_decay=1.0), r'ema_decay must be None or a float in \[0, 1\)'),
    (dict(latent_shape=(0,)), 'latent_shape must be a positive int'),
    (dict(loss='lsgan'), 'loss must be one of'),
    (dict(spectral_norm={'n_power_iterations': 0}), 'n_power_iterations must be an int >= 1'),
    (dict(spectral_norm='yes'), 'spectral_norm must be True, False or a mapping'),
  ],
)
def test_bad_options_are_clear_errors(kwargs, match):
  kwargs = {'latent_shape': LATENT, **kwargs}
  with pytest.raises(ValueError, match=match):
    snjax.gan.gan_trainer(g_apply, d_apply, optax.sgd(0.1), optax.sgd(0.1), **kwargs)


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
  gp, _ = _params()
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
    state, m = trainer.critic_step(state, _real(i))
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
  state = proj.init(jax.random.key(10), *_params(17))
  assert state.sn_state == {}
  state, m = proj.train_step(state, _real(8))
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
  state = trainer.init(jax.random.key(11), _params()[0], cp)
  # NNX params: the kernels (not the biases) are normalized; nnx.State paths end in the Variable's 'value'.
  assert sorted(p.removesuffix('/value') for p in snjax.sigmas(state.sn_state)) == ['l1/kernel', 'l2/kernel']
  state, m = trainer.train_step(state, _real(9))
  assert bool(m['finite']) and int(state.step) == 1


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


@pytest.fixture(scope='module')
def conv_trainer():
  trainer = snjax.gan.gan_trainer(
    lambda p, z: CONV_G.apply({'params': p}, z),
    lambda p, x: CONV_D.apply({'params': p}, x),
    optax.adam(1e-3, b1=0.5),
    optax.adam(1e-3, b1=0.5),
    latent_shape=LATENT,
    n_critic=3,
    ema_decay=0.9,
  )
  gp = CONV_G.init(jax.random.key(20), jnp.zeros((1, LATENT)))['params']
  cp = CONV_D.init(jax.random.key(21), jnp.zeros((1, *IMG)))['params']
  return trainer, trainer.init(jax.random.key(22), gp, cp)


def _images(seed, *lead):
  return jnp.tanh(jax.random.normal(jax.random.key(200 + seed), (*lead, B, *IMG)))


@pytest.mark.parametrize('stacked', [True, False])
def test_conv_train_step_is_n_critic_critic_steps_then_a_generator_step(conv_trainer, stacked):
  """The unrolled critic updates of train_step are critic_step's; the RNG and the counters agree bit for bit.

  The floats agree to rounding only: train_step and the single steps are different XLA programs, whose fusions
  may order a sum differently (measured: at most ~1e-7 apart).
  """
  trainer, state0 = conv_trainer
  real = _images(0, 3) if stacked else _images(0)
  new, metrics = trainer.train_step(state0, real)
  state, critic_metrics = state0, []
  for i in range(3):
    state, m = trainer.critic_step(state, real[i] if stacked else real)
    critic_metrics.append(m)
  state, gm = trainer.generator_step(state, real[0] if stacked else real)
  for field in ('step', 'critic_updates', 'rng'):
    np.testing.assert_array_equal(np.asarray(getattr(new, field)), np.asarray(getattr(state, field)))
  _assert_trees_close(new, state, rtol=1e-5, atol=1e-6)
  assert set(metrics) == set(critic_metrics[0]) | set(gm)
  for k, v in metrics.items():
    if k == 'finite':
      assert bool(v)
    elif k.startswith('sigma'):
      np.testing.assert_allclose(float(v), float(critic_metrics[-1][k]), rtol=1e-5)
    elif k.startswith('generator'):
      np.testing.assert_allclose(float(v), float(gm[k]), rtol=1e-5, atol=1e-7)
    else:
      np.testing.assert_allclose(float(v), np.mean([float(m[k]) for m in critic_metrics]), rtol=1e-5, atol=1e-7)
  # All or nothing: a non-finite image in the last critic update's batch returns the input state.
  bad = _images(0, 3).at[2, 0, 0, 0, 0].set(jnp.inf)
  refused, m = trainer.train_step(state0, bad)
  assert not bool(m['finite'])
  _assert_trees_equal(refused, state0)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU convolution layouts')
def test_conv_train_step_compiles_to_fast_convolutions(conv_trainer):
  """Every convolution of the compiled train step is in XLA:CPU's canonical form (NHWC input, HWIO kernel).

  XLA:CPU canonicalizes convolutions for its fast kernels only in the entry computation: with the critic
  updates in a lax.scan, the backward convolutions keep autodiff's dimension numbers (e.g. the kernel gradient's
  f01b_i01o->01bf) and run as naive loops, 10-30x slower. train_step unrolls them.
  """
  import re

  trainer, state0 = conv_trainer
  text = trainer.train_step.lower(state0, _images(1, 3)).compile().as_text()
  labels = re.findall(r'convolution\([^)]*\), window=\{[^}]*\}, dim_labels=([^ ,\s]+)', text)
  assert set(labels) == {'b01f_01io->b01f'}
  assert len(labels) >= 3 * 6  # 3 critic updates x 2 layers x (forward, input and kernel gradient), at least


def _primitive_names(jaxpr) -> set:
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(sub, 'eqns') or hasattr(getattr(sub, 'jaxpr', None), 'eqns'):
          names |= _primitive_names(sub)
  return names


def test_critic_updates_are_one_scan_except_for_a_conv_critic_on_cpu(conv_trainer, wgan_trainer):
  """An MLP critic's n_critic updates stay one lax.scan (one compiled update); a conv critic's are unrolled on CPU."""
  from snjax.gan._train_step import _has_convolution

  mlp_state = wgan_trainer.init(jax.random.key(2), *_params(5))
  mlp = jax.make_jaxpr(wgan_trainer.train_step)(mlp_state, _real(3, N_CRITIC))
  assert not _has_convolution(mlp) and 'scan' in _primitive_names(mlp)
  trainer, state = conv_trainer
  conv = jax.make_jaxpr(trainer.train_step)(state, _images(2, 3))
  assert _has_convolution(conv)
  assert ('scan' in _primitive_names(conv)) == (jax.default_backend() != 'cpu')
