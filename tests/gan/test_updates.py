"""Tests of snjax.gan._updates: a critic and a generator update against hand-written references (sn_apply, optax)."""

import jax
import numpy as np
import optax

import snjax
from snjax import _leaf
from snjax.gan import _state, _step_config, _updates
from tests._tolerances import TWO_PROGRAMS
from tests.gan._gan_testing import (
  LATENT,
  assert_trees_close,
  assert_trees_equal,
  config_options,
  d_apply,
  fixed_z,
  g_apply,
  params,
  real,
)


def test_critic_step_matches_reference(fixed_trainer):
  gp, cp = params()
  state = fixed_trainer.init(jax.random.key(0), gp, cp)
  x = real(0)
  new, metrics = fixed_trainer.critic_step(state, x)

  fake = g_apply(gp, fixed_z())

  def loss(p):
    p_sn, sn_state = snjax.sn_apply(p, state.sn_state)
    return snjax.gan.hinge_critic_loss(d_apply(p_sn, x)[:, 0], d_apply(p_sn, fake)[:, 0]), sn_state

  (value, sn_state), grads = jax.value_and_grad(loss, has_aux=True)(cp)
  tx = optax.adam(1e-2)
  updates, _ = tx.update(grads, tx.init(cp), cp)
  assert_trees_close(new.critic_params, optax.apply_updates(cp, updates))
  assert_trees_close(new.sn_state, sn_state)
  assert_trees_equal(new.generator_params, gp)
  assert int(new.critic_updates) == 1 and int(new.step) == 0
  assert not np.array_equal(np.asarray(new.rng), np.asarray(state.rng))
  np.testing.assert_allclose(float(metrics['critic_loss']), float(value), rtol=TWO_PROGRAMS)
  np.testing.assert_allclose(float(metrics['critic_grad_norm']), float(optax.global_norm(grads)), rtol=1e-5)
  sig = snjax.sigmas(sn_state)
  for path, s in sig.items():
    np.testing.assert_allclose(float(metrics[f'sigma/{path}']), float(s), rtol=TWO_PROGRAMS)
  np.testing.assert_allclose(float(metrics['sigma_product']), np.prod([float(s) for s in sig.values()]), rtol=1e-5)
  assert bool(metrics['finite'])


def test_sn_apply_runs_once_per_critic_step(monkeypatch):
  # The power iteration (snjax._leaf.normalize, what sn_apply(update=True) runs) is traced once per critic step.
  calls = []
  original = _leaf.normalize

  def counting(*args, **kwargs):
    calls.append(True)
    return original(*args, **kwargs)

  monkeypatch.setattr(_leaf, 'normalize', counting)
  trainer = snjax.gan.gan_trainer(g_apply, d_apply, optax.sgd(0.1), optax.sgd(0.1), latent_shape=LATENT, gp_weight=10.0)
  state = trainer.init(jax.random.key(0), *params())
  calls.clear()
  jax.eval_shape(trainer.critic_step, state, real(0))  # traces the step (no need to compile it)
  assert calls == [True]  # one call serves the real batch, the fake batch and the gradient penalty


def test_generator_step_matches_reference_and_leaves_the_critic_state(fixed_trainer):
  gp, cp = params(3)
  state = fixed_trainer.init(jax.random.key(1), gp, cp)
  state, _ = fixed_trainer.critic_step(state, real(1))  # the critic's weights moved since its sigma was computed
  new, metrics = fixed_trainer.generator_step(state, real(2))

  critic_sn, _ = snjax.sn_apply(state.critic_params, state.sn_state)  # the current critic, state not advanced
  loss = lambda p: snjax.gan.hinge_generator_loss(d_apply(critic_sn, g_apply(p, fixed_z()))[:, 0])  # noqa: E731
  value, grads = jax.value_and_grad(loss)(gp)
  tx = optax.adam(1e-2)
  updates, _ = tx.update(grads, tx.init(gp), gp)
  assert_trees_close(new.generator_params, optax.apply_updates(gp, updates))
  assert_trees_equal(new.sn_state, state.sn_state)
  assert_trees_equal(new.critic_params, state.critic_params)
  assert_trees_equal(new.critic_opt_state, state.critic_opt_state)
  assert int(new.step) == 1 and int(new.critic_updates) == 1
  np.testing.assert_allclose(float(metrics['generator_loss']), float(value), rtol=TWO_PROGRAMS)
  np.testing.assert_allclose(float(metrics['generator_grad_norm']), float(optax.global_norm(grads)), rtol=1e-5)


def _config(**changes):
  options = config_options(
    **{'loss': 'wasserstein', 'spectral_norm': False, 'latent_sampler': lambda k, n: fixed_z(), **changes}
  )
  return _step_config.step_config(g_apply, d_apply, optax.sgd(0.1), optax.sgd(0.1), **options)


def test_critic_update_with_both_penalties_matches_reference():
  """Without jit: loss.critic + gp_weight * GP (aimed at gp_target, with the update's own key) + r1_weight * R1."""
  config = _config(gp_weight=3.0, gp_target=0.5, r1_weight=2.0)
  gp, cp = params(4)
  state = _state.init_state(config, jax.random.key(5), gp, cp)
  x = real(5)
  new, metrics = _updates.critic_update(config, state, x)

  keys = jax.random.split(jax.random.wrap_key_data(state.rng), 3)  # the next RNG, the latents' key, the GP's key
  fake = g_apply(gp, fixed_z())

  def loss(p):
    critic = lambda v: d_apply(p, v)[:, 0]  # noqa: E731
    adversarial = snjax.gan.wasserstein_critic_loss(critic(x), critic(fake))
    gp_value = snjax.gan.gradient_penalty(critic, x, fake, keys[2], target=0.5)
    r1_value = snjax.gan.r1_penalty(critic, x)
    return adversarial + 3.0 * gp_value + 2.0 * r1_value, (adversarial, gp_value, r1_value)

  (value, (adversarial, gp_value, r1_value)), grads = jax.value_and_grad(loss, has_aux=True)(cp)
  assert_trees_close(new.critic_params, jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, cp, grads))
  np.testing.assert_array_equal(np.asarray(new.rng), np.asarray(jax.random.key_data(keys[0])))
  for name, expected in [
    ('critic_loss', value),
    ('critic_adversarial_loss', adversarial),
    ('gradient_penalty', gp_value),
    ('r1_penalty', r1_value),
    ('real_score', np.mean(d_apply(cp, x))),
    ('fake_score', np.mean(d_apply(cp, fake))),
  ]:
    np.testing.assert_allclose(float(metrics[name]), float(expected), rtol=TWO_PROGRAMS, atol=1e-7, err_msg=name)
  assert new.sn_state == {} and not any(k.startswith('sigma') for k in metrics)
  assert bool(metrics['finite'])


def test_updates_are_unguarded_and_all_finite_flags_any_non_finite_leaf():
  """The updates return the non-finite candidate (the steps refuse it); all_finite ignores integer leaves."""
  config = _config(spectral_norm=True, loss='hinge')
  state = _state.init_state(config, jax.random.key(6), *params(6))
  bad = real(6).at[0, 0].set(np.nan)
  new, metrics = _updates.critic_update(config, state, bad)
  assert not bool(metrics['finite'])
  assert not bool(_updates.all_finite(new.critic_params)) and int(new.critic_updates) == 1
  assert bool(_updates.all_finite({'a': np.ones(2, np.float32), 'n': np.int32(3)}, [np.zeros(1)]))
  assert not bool(_updates.all_finite({'a': np.ones(2, np.float32)}, [np.array([np.inf])]))
