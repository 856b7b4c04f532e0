"""Tests of snjax.app.chunks: both ways to run a chunk of train steps, the choice between them, the summary."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snjax.app import chunks
from snjax.app import trainer as trainer_lib
from snjax.app.config import TrainConfig
from snjax.app.data import get_dataset


def _setup(dataset, **kw):
  config = TrainConfig.for_dataset(dataset, width=4, depth=1, batch_size=8, n_critic=2, log_every=5, **kw)
  data = get_dataset(dataset)
  generator, critic, trainer = trainer_lib.build(dataclasses.replace(config, seed=0), data, None)
  state = trainer_lib.init_state(config, data, generator, critic, trainer)
  return config, data, trainer, state, trainer_lib.run_keys(0).data


def _leaves_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


@pytest.fixture(scope='module')
def digits():
  return _setup('digits')


def test_loop_chunks_split_anywhere_give_the_same_run_and_match_the_scan(digits):
  config, data, trainer, state, key = digits
  loop = chunks.make_chunk(config, data, trainer, mode='loop')
  whole, metrics = loop(state, key, jnp.int32(0), 5)
  first, _ = loop(state, key, jnp.int32(0), 2)
  split, tail = loop(first, key, jnp.int32(2), 3)
  assert _leaves_equal(whole, split)
  assert int(whole.step) == 5 and int(whole.critic_updates) == 10
  for k, v in tail.items():
    np.testing.assert_array_equal(np.asarray(v), np.asarray(metrics[k])[2:], err_msg=k)
  # The scan runs the same steps on the same data (another XLA program: equal up to rounding).
  scanned, scan_metrics = chunks.make_chunk(config, data, trainer, mode='scan')(state, key, jnp.int32(0), 5)
  assert set(scan_metrics) == set(metrics)
  for k, v in metrics.items():
    assert np.shape(v) == np.shape(scan_metrics[k]) == (5,), k
  np.testing.assert_array_equal(np.asarray(scanned.rng), np.asarray(whole.rng))
  jax.tree_util.tree_map(
    lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5), scanned, whole
  )
  summary = chunks.summarize_chunk(5, metrics)
  assert summary['finite'] is True and summary['step'] == 5
  assert summary['critic_loss'] == pytest.approx(float(np.mean(np.asarray(metrics['critic_loss']))))


def test_auto_mode_loops_for_conv_nets_on_cpu_and_scans_mlps(digits):
  """The conv critic's step has convolutions (a Python loop of steps on CPU); the MLPs' has none (one scan)."""
  config, data, trainer, state, key = digits
  conv_step = jax.make_jaxpr(lambda s: trainer.train_step(s, jnp.zeros((2, 8, 8, 8, 1))))(state)
  _, _, g_trainer, g_state, _ = _setup('grid25')
  mlp_step = jax.make_jaxpr(lambda s: g_trainer.train_step(s, jnp.zeros((2, 8, 2))))(g_state)
  assert chunks.auto_chunk_mode(conv_step, 'cpu') == 'loop' and chunks.auto_chunk_mode(mlp_step, 'cpu') == 'scan'
  assert chunks.auto_chunk_mode(conv_step, 'gpu') == chunks.auto_chunk_mode(mlp_step, 'cpu') == 'scan'
  # Nested: a convolution inside a scan inside a jit is found.
  conv = lambda x: jax.lax.conv(x, jnp.ones((1, 1, 3, 3)), (1, 1), 'SAME')  # noqa: E731
  nested = jax.make_jaxpr(jax.jit(lambda x: jax.lax.scan(lambda c, _: (conv(c), None), x, None, length=2)[0]))
  assert chunks.auto_chunk_mode(nested(jnp.ones((1, 1, 4, 4))), 'cpu') == 'loop'
  # 'auto' decides at the first call and then runs the mode it picked.
  chunk = chunks.make_chunk(config, data, trainer)
  assert chunk.mode == 'auto'
  after, metrics = chunk(state, key, jnp.int32(0), 1)
  assert chunk.mode == chunks.auto_chunk_mode(conv_step, jax.devices()[0].platform)
  assert int(after.step) == 1 and np.shape(metrics['critic_loss']) == (1,)


def test_unknown_mode_is_a_clear_error(digits):
  config, data, trainer, _, _ = digits
  with pytest.raises(ValueError, match="chunk mode must be 'auto', 'scan' or 'loop', got 'unroll'"):
    chunks.make_chunk(config, data, trainer, mode='unroll')


def test_summary_of_a_chunk_keeps_the_last_sigma_and_averages_the_rest():
  metrics = {
    'finite': np.array([True, False, True]),
    'sigma/Dense_0/kernel': np.array([1.0, 2.0, 4.0], np.float32),
    'critic_loss': np.array([1.0, 3.0, 8.0], np.float32),
  }
  summary = chunks.summarize_chunk(15, metrics)
  assert summary == {'step': 15, 'finite': False, 'sigma/Dense_0/kernel': 4.0, 'critic_loss': 4.0}
  assert all(type(v) is float for k, v in summary.items() if k not in ('step', 'finite'))
