"""Tests of snjax.gan._state: a new run's state, from either kind of PRNG key, and the RNG's splitting."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import snjax
from snjax.gan import _state, _step_config
from tests.gan._gan_testing import assert_trees_equal, config_options, d_apply, g_apply, params


def _config_with(**changes):
  txs = optax.adam(1e-2), optax.sgd(0.1, momentum=0.9)
  return _step_config.step_config(g_apply, d_apply, *txs, **config_options(**{'ema_decay': 0.9, **changes}))


def test_init_state_against_its_parts():
  """Counters 0, fresh optimizer states, sn.init with the key's first half, the RNG its second, the EMA a copy."""
  config = _config_with()
  gp, cp = params(2)
  key = jax.random.key(4)
  state = _state.init_state(config, key, gp, cp)
  k_sn, k_rng = jax.random.split(key)
  assert int(state.step) == 0 and int(state.critic_updates) == 0
  assert state.step.dtype == state.critic_updates.dtype == jnp.int32
  assert_trees_equal(state.generator_opt_state, optax.adam(1e-2).init(gp))
  assert_trees_equal(state.critic_opt_state, optax.sgd(0.1, momentum=0.9).init(cp))
  assert_trees_equal(state.sn_state, snjax.spectral_normalization().init(k_sn, cp))
  np.testing.assert_array_equal(np.asarray(state.rng), np.asarray(jax.random.key_data(k_rng)))
  assert state.rng.dtype == jnp.uint32
  assert_trees_equal(state.generator_ema, gp)
  ema_leaves, param_leaves = jax.tree_util.tree_leaves(state.generator_ema), jax.tree_util.tree_leaves(gp)
  assert all(e is not p for e, p in zip(ema_leaves, param_leaves, strict=True))  # copies, not the same buffers
  # A legacy uint32 key gives the same state as the typed key with the same data.
  legacy = _state.init_state(config, jax.random.key_data(key), gp, cp)
  assert_trees_equal(legacy, state)


def test_init_state_without_spectral_norm_or_ema_and_bad_keys():
  config = _config_with(spectral_norm=False, ema_decay=None)
  state = _state.init_state(config, jax.random.key(0), *params())
  assert state.sn_state == {} and state.generator_ema is None
  with pytest.raises(ValueError, match='must be a jax.random.key or a uint32 jax.random.PRNGKey, got dtype float32'):
    _state.init_state(config, jnp.zeros(2, jnp.float32), *params())


def test_split_rng_is_jax_random_split():
  rng = jax.random.key_data(jax.random.key(7))
  next_rng, keys = _state.split_rng(rng, 3)
  expected = jax.random.split(jax.random.key(7), 3)
  np.testing.assert_array_equal(np.asarray(next_rng), np.asarray(jax.random.key_data(expected[0])))
  assert keys.shape == (2,)
  np.testing.assert_array_equal(np.asarray(jax.random.key_data(keys)), np.asarray(jax.random.key_data(expected[1:])))
