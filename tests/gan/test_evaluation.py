"""Tests of snjax.gan._evaluation: the evaluation critic uses the stored sigma; samples come from the EMA if any."""

import jax
import numpy as np
import optax

import snjax
from snjax.gan import _evaluation, _state, _step_config
from tests._tolerances import TWO_PROGRAMS
from tests.gan._gan_testing import (
  LATENT,
  B,
  assert_trees_equal,
  config_options,
  d_apply,
  fixed_z,
  g_apply,
  params,
  real,
)


def test_evaluation_uses_stored_sigma_and_does_not_touch_the_state(fixed_trainer):
  state = fixed_trainer.init(jax.random.key(3), *params(7))
  state, _ = fixed_trainer.critic_step(state, real(4))
  before = jax.tree_util.tree_map(np.asarray, state)
  x = real(5)
  scores = fixed_trainer.critic_scores(state, x)
  p_sn, _ = snjax.sn_apply(state.critic_params, state.sn_state, update=False)
  np.testing.assert_allclose(np.asarray(scores), np.asarray(d_apply(p_sn, x)[:, 0]), rtol=TWO_PROGRAMS, atol=1e-6)
  assert_trees_equal(jax.tree_util.tree_map(np.asarray, state), before)
  # No EMA: sample falls back to the generator params (the fixed sampler ignores the key and n).
  samples = fixed_trainer.sample(state, jax.random.key(0), B)
  np.testing.assert_allclose(
    np.asarray(samples), np.asarray(g_apply(state.generator_params, fixed_z())), rtol=TWO_PROGRAMS
  )


def test_sample_uses_the_ema_unless_asked_not_to_and_takes_either_kind_of_key():
  """Without jit: the default sampler's latents are N(0, 1) of the given key; the EMA serves unless use_ema=False."""
  options = config_options(ema_decay=0.9)
  config = _step_config.step_config(g_apply, d_apply, optax.sgd(0.1), optax.sgd(0.1), **options)
  gp, cp = params(8)
  state = _state.init_state(config, jax.random.key(9), gp, cp)
  ema = jax.tree_util.tree_map(lambda p: p + 1.0, gp)  # an EMA that differs from the params
  state = state._replace(generator_ema=ema)
  z = jax.random.normal(jax.random.key(10), (5, LATENT))
  np.testing.assert_array_equal(np.asarray(_evaluation.sample(config, state, jax.random.key(10), 5)), g_apply(ema, z))
  legacy = _evaluation.sample(config, state, jax.random.PRNGKey(10), 5, use_ema=False)
  np.testing.assert_array_equal(np.asarray(legacy), g_apply(gp, jax.random.normal(jax.random.PRNGKey(10), (5, LATENT))))
  scores = _evaluation.critic_scores(config, state, real(8))
  p_sn, _ = snjax.sn_apply(cp, state.sn_state, update=False)
  np.testing.assert_array_equal(np.asarray(scores), np.asarray(d_apply(p_sn, real(8))[:, 0]))
