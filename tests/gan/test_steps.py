"""Tests of snjax.gan._steps: train_step against single steps, all-or-nothing on non-finite values, batch checks.

A conv critic's critic updates are unrolled on CPU (one XLA program with fast convolutions), an MLP critic's stay
in one lax.scan; both give what the single steps give.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import snjax
from snjax.gan._loops import has_convolution
from tests.gan._gan_testing import (
  DATA,
  LATENT,
  N_CRITIC,
  B,
  assert_trees_close,
  assert_trees_equal,
  d_apply,
  g_apply,
  images,
  params,
  primitive_names,
  real,
)


@pytest.mark.parametrize('stacked', [True, False])
def test_train_step_is_n_critic_critic_steps_then_a_generator_step(wgan_trainer, stacked):
  n_critic, trainer = N_CRITIC, wgan_trainer
  state0 = trainer.init(jax.random.key(2), *params(5))
  x = real(3, n_critic) if stacked else real(3)
  new, metrics = trainer.train_step(state0, x)
  state, losses = state0, []
  for i in range(n_critic):
    state, m = trainer.critic_step(state, x[i] if stacked else x)
    losses.append(float(m['critic_loss']))
  ema_before = state.generator_ema
  state, gm = trainer.generator_step(state, x[0] if stacked else x)
  assert_trees_close(new, state, rtol=1e-5, atol=1e-6)
  assert int(new.step) == 1 and int(new.critic_updates) == n_critic
  np.testing.assert_allclose(float(metrics['critic_loss']), np.mean(losses), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['generator_loss']), float(gm['generator_loss']), rtol=1e-5)
  assert {'gradient_penalty', 'real_score', 'fake_score', 'sigma_product'} <= set(metrics)
  # EMA with decay 0.5: the mean of the previous EMA and the new params.
  expected_ema = jax.tree_util.tree_map(lambda e, p: 0.5 * e + 0.5 * p, ema_before, state.generator_params)
  assert_trees_close(state.generator_ema, expected_ema)


def test_non_finite_step_returns_the_input_state_unchanged(wgan_trainer):
  trainer = wgan_trainer
  state = trainer.init(jax.random.key(6), *params(13))
  bad = real(6).at[0, 0].set(jnp.nan)
  for step, x in [
    (trainer.critic_step, bad),
    (trainer.train_step, bad),
    (trainer.train_step, jnp.stack([real(7), bad])),  # the second micro-step fails: all or nothing
  ]:
    new, metrics = step(state, x)
    assert not bool(metrics['finite'])
    assert_trees_equal(new, state)
  # A generator whose output overflows to inf: the generator step is refused as well.
  gp, cp = params(13)
  gp['layers_2']['kernel'] = gp['layers_2']['kernel'] * 3e38
  state = trainer.init(jax.random.key(6), gp, cp)
  new, metrics = trainer.generator_step(state, real(6))
  assert not bool(metrics['finite'])
  assert_trees_equal(new, state)
  good, metrics = trainer.critic_step(trainer.init(jax.random.key(6), *params(13)), real(6))
  assert bool(metrics['finite'])


def test_bad_batches_are_clear_errors(wgan_trainer):
  trainer = wgan_trainer
  state = trainer.init(jax.random.key(7), *params())
  with pytest.raises(ValueError, match=r'critic_step: the real batch is \(8, 3\) float32, but the generator makes'):
    trainer.critic_step(state, jnp.zeros((B, 3)))
  with pytest.raises(ValueError, match=r'the real batch is \(8, 2\) uint8.*cast the data'):
    trainer.critic_step(state, jnp.zeros((B, DATA), jnp.uint8))
  with pytest.raises(ValueError, match=r'or 2 of them stacked, \(n_critic=2, B, \.\.\.\)'):
    trainer.train_step(state, jnp.zeros((3, B, DATA)))
  with pytest.raises(ValueError, match='generator_step: the real batch'):
    trainer.generator_step(state, jnp.zeros((B,)))
  with pytest.raises(ValueError, match='critic_step: real must be an array with a leading batch axis'):
    trainer.critic_step(state, jnp.float32(1.0))
  bad_critic = snjax.gan.gan_trainer(
    g_apply, lambda p, x: d_apply(p, x)[:, 0].reshape(2, -1), optax.sgd(0.1), optax.sgd(0.1), latent_shape=LATENT
  )
  with pytest.raises(ValueError, match=r'critic_apply must return one score per example, shape \(8,\) or \(8, 1\)'):
    bad_critic.critic_step(state, real(0))


@pytest.mark.parametrize('stacked', [True, False])
def test_conv_train_step_is_n_critic_critic_steps_then_a_generator_step(conv_trainer, stacked):
  """The unrolled critic updates of train_step are critic_step's; the RNG and the counters agree bit for bit.

  The floats agree to rounding only: train_step and the single steps are different XLA programs, whose fusions
  may order a sum differently (measured: at most ~1e-7 apart).
  """
  trainer, state0 = conv_trainer
  x = images(0, 3) if stacked else images(0)
  new, metrics = trainer.train_step(state0, x)
  state, critic_metrics = state0, []
  for i in range(3):
    state, m = trainer.critic_step(state, x[i] if stacked else x)
    critic_metrics.append(m)
  state, gm = trainer.generator_step(state, x[0] if stacked else x)
  for field in ('step', 'critic_updates', 'rng'):
    np.testing.assert_array_equal(np.asarray(getattr(new, field)), np.asarray(getattr(state, field)))
  assert_trees_close(new, state, rtol=1e-5, atol=1e-6)
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
  bad = images(0, 3).at[2, 0, 0, 0, 0].set(jnp.inf)
  refused, m = trainer.train_step(state0, bad)
  assert not bool(m['finite'])
  assert_trees_equal(refused, state0)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU convolution layouts')
def test_conv_train_step_compiles_to_fast_convolutions(conv_trainer):
  """Every convolution of the compiled train step is in XLA:CPU's canonical form (NHWC input, HWIO kernel).

  XLA:CPU canonicalizes convolutions for its fast kernels only in the entry computation: with the critic
  updates in a lax.scan, the backward convolutions keep autodiff's dimension numbers (e.g. the kernel gradient's
  f01b_i01o->01bf) and run as naive loops, 10-30x slower. train_step unrolls them.
  """
  trainer, state0 = conv_trainer
  text = trainer.train_step.lower(state0, images(1, 3)).compile().as_text()
  labels = re.findall(r'convolution\([^)]*\), window=\{[^}]*\}, dim_labels=([^ ,\s]+)', text)
  assert set(labels) == {'b01f_01io->b01f'}
  assert len(labels) >= 3 * 6  # 3 critic updates x 2 layers x (forward, input and kernel gradient), at least


def test_critic_updates_are_one_scan_except_for_a_conv_critic_on_cpu(conv_trainer, wgan_trainer):
  """An MLP critic's n_critic updates stay one lax.scan (one compiled update); a conv critic's are unrolled on CPU."""
  mlp_state = wgan_trainer.init(jax.random.key(2), *params(5))
  mlp = jax.make_jaxpr(wgan_trainer.train_step)(mlp_state, real(3, N_CRITIC))
  assert not has_convolution(mlp) and 'scan' in primitive_names(mlp)
  trainer, state = conv_trainer
  conv = jax.make_jaxpr(trainer.train_step)(state, images(2, 3))
  assert has_convolution(conv)
  assert ('scan' in primitive_names(conv)) == (jax.default_backend() != 'cpu')
