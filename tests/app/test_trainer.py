"""Tests of snjax.app.trainer: the learning-rate schedule, the run's keys, the first state."""

import jax
import numpy as np
import pytest

from snjax.app import trainer
from snjax.app.data import get_dataset


@pytest.mark.parametrize('steps, decay, n_critic', [(10, 0.4, 2), (7, 1.0, 3), (9, 0.0, 1), (100, 0.25, 5)])
def test_lr_schedule(steps, decay, n_critic, tiny):
  """Constant for the first (1 - lr_decay) of the steps, then linear to 0 at the last step; the critic's schedule
  (n_critic updates per step) gives the same rate at the same step."""
  config = tiny(steps=steps, lr_decay=decay, n_critic=n_critic)
  gen = trainer.lr_schedule(config, 0.5, 1)
  critic = trainer.lr_schedule(config, 0.5, n_critic)
  start = round(steps * (1 - decay))
  for t in range(steps + 1):
    want = 0.5 if decay == 0 or t <= start else 0.5 * (steps - t) / (steps - start)
    got_g = gen if decay == 0 else float(gen(t))
    got_c = critic if decay == 0 else float(critic(t * n_critic))
    assert got_g == pytest.approx(want, abs=1e-7) and got_c == pytest.approx(want, abs=1e-7), t


def _key_bytes(key) -> bytes:
  return np.asarray(jax.random.key_data(key)).tobytes()


def test_run_keys_are_five_distinct_keys_of_the_seed():
  keys = trainer.run_keys(3)
  assert len({_key_bytes(k) for k in keys}) == 5
  assert [_key_bytes(k) for k in keys] == [_key_bytes(k) for k in trainer.run_keys(3)]
  assert keys._fields == ('generator', 'critic', 'state', 'data', 'evaluation')
  assert _key_bytes(keys.data) != _key_bytes(trainer.run_keys(4).data)


def test_initial_state_is_a_function_of_the_seed(tiny):
  dataset = get_dataset('grid25')
  config = tiny()
  generator, critic, gan_trainer = trainer.build(config, dataset, None)
  a = trainer.init_state(config, dataset, generator, critic, gan_trainer)
  b = trainer.init_state(config, dataset, generator, critic, gan_trainer)
  c = trainer.init_state(tiny(seed=1), dataset, generator, critic, gan_trainer)
  same = jax.tree_util.tree_map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)
  assert all(jax.tree_util.tree_leaves(same))
  assert int(a.step) == 0 and gan_trainer.n_critic == config.n_critic
  kernel = lambda s: np.asarray(s.generator_params['Dense_0']['kernel'])  # noqa: E731
  assert kernel(a).shape == (config.latent_dim, config.width) and not np.array_equal(kernel(a), kernel(c))
  assert set(a.sn_state) == {'Dense_0', 'Dense_1'}
