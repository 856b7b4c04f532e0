"""Tests of snjax.gan.checkpoint: interval and retention, bit-exact resume (also after a real SIGKILL), damaged
checkpoints, bad input."""

import os
import re
import signal
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import snjax
from snjax.gan.checkpoint import (
  Checkpointer,
  CheckpointMismatchError,
  NonFiniteStateError,
  UnreadableCheckpointError,
  UnreadableCheckpointWarning,
)
from tests import _fresh_imports, _processes
from tests._checkpoints import damage

# One training run, resumable: restores the latest checkpoint in `directory` (if any), trains to `n_steps`,
# prints each step's losses as exact float hex, saves every 2 steps, and SIGKILLs itself right after
# the save call of step `kill_at` (asynchronous, so the save is likely half-written when it dies).
_RUN = textwrap.dedent(
  """
    import os, signal, sys
    import flax.linen as nn, jax, jax.numpy as jnp, optax
    import snjax
    from snjax.gan.checkpoint import Checkpointer

    G = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
    D = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(1)])
    TRAINER = snjax.gan.gan_trainer(
        lambda p, z: G.apply({'params': p}, z), lambda p, x: D.apply({'params': p}, x),
        optax.adam(1e-2), optax.chain(optax.adam(1e-2), snjax.spectral_projection(2.0)), latent_shape=3,
        n_critic=2, gp_weight=1.0, ema_decay=0.9)

    def fresh_state():
      gp = G.init(jax.random.key(0), jnp.zeros((1, 3)))['params']
      cp = D.init(jax.random.key(1), jnp.zeros((1, 2)))['params']
      return TRAINER.init(jax.random.key(2), gp, cp)

    def batch(step):  # the data depends only on the step, as with a seeded, resumable loader
      return jax.random.normal(jax.random.fold_in(jax.random.key(3), step), (2, 8, 2)) + 1.0

    def run(directory, n_steps, kill_at=None, async_save=False, emit=print):
      with Checkpointer(directory, save_interval_steps=2, max_to_keep=2, async_save=async_save) as ckpt:
        state = ckpt.restore(fresh_state())
        while int(state.step) < n_steps:
          state, m = TRAINER.train_step(state, batch(int(state.step)))
          emit(f"LOSS {int(state.step)} {float(m['critic_loss']).hex()} {float(m['generator_loss']).hex()}")
          ckpt.save(state)
          if int(state.step) == kill_at:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
      return state

    if __name__ == '__main__':
      run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None, async_save=True,
          emit=lambda s: print(s, flush=True))
    """
)


@pytest.fixture(scope='module')
def run_ns():
  ns = {'__name__': 'snjax_test_run'}
  exec(compile(_RUN, '<checkpoint-run>', 'exec'), ns)
  return ns


def _losses(lines):
  out = {}
  for line in lines:
    if line.startswith('LOSS '):
      _, step, c, g = line.split()
      out[int(step)] = (c, g)
  return out


@pytest.fixture(scope='module')
def reference(run_ns, tmp_path_factory):
  lines = []
  run_ns['run'](str(tmp_path_factory.mktemp('reference')), 8, emit=lines.append)
  return _losses(lines)


def test_interval_and_retention(run_ns, reference, tmp_path):
  run_ns['run'](str(tmp_path), 7, emit=lambda s: None)
  with Checkpointer(tmp_path, save_interval_steps=2, max_to_keep=2) as ckpt:
    assert ckpt.all_steps() == [4, 6] and ckpt.latest_step() == 6
    assert not ckpt.save(ckpt.restore(run_ns['fresh_state']()), step=7)  # 7 is not a multiple of 2
  assert sorted(os.listdir(tmp_path)) == ['4', '6']


def test_interrupted_and_resumed_run_is_bit_identical(run_ns, reference, tmp_path):
  lines = []
  run_ns['run'](str(tmp_path), 5, emit=lines.append)  # stops after step 5; the last checkpoint is step 4
  first = _losses(lines)
  lines = []
  state = run_ns['run'](str(tmp_path), 8, emit=lines.append)  # a new run: restores step 4, redoes 5
  resumed = _losses(lines)
  assert sorted(resumed) == [5, 6, 7, 8]
  for step, losses in {**first, **resumed}.items():
    assert losses == reference[step], step
  # The full state round-trips: u vectors, both opt states, the projection's own u vectors, RNG, EMA.
  with Checkpointer(tmp_path, save_interval_steps=2) as ckpt:
    restored = ckpt.restore(run_ns['fresh_state'](), step=8)
  assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(state)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), restored, state)
  assert restored.generator_ema is not None and restored.sn_state


def test_sigkill_during_async_save_then_resume_is_bit_identical(run_ns, reference, tmp_path):
  """A process killed right after an asynchronous save call; the run resumed (here, in this process) from what
  the kill left on disk."""
  cmd = [sys.executable, '-c', _RUN, str(tmp_path)]
  killed = subprocess.run(cmd + ['8', '6'], capture_output=True, text=True, env=_processes.env(1), timeout=600)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  before = _losses(killed.stdout.splitlines())
  assert sorted(before) == list(range(1, 7))
  lines = []
  run_ns['run'](str(tmp_path), 8, emit=lines.append)
  resumed = _losses(lines)
  # Whether step 6's save was complete (resume at 6) or cut off (resume at 4), the run goes on exactly.
  assert sorted(resumed) in ([5, 6, 7, 8], [7, 8])
  for step, losses in {**before, **resumed}.items():
    assert losses == reference[step], step


def test_non_finite_state_is_never_saved(run_ns, tmp_path):
  state = run_ns['fresh_state']()
  with Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
    assert ckpt.save(state, step=1)
    bad = state._replace(critic_params=jax.tree_util.tree_map(lambda x: x.at[0].set(jnp.nan), state.critic_params))
    with pytest.raises(NonFiniteStateError, match='refusing to save a non-finite training state at step 2.*step 1'):
      ckpt.save(bad, step=2)
    assert ckpt.all_steps() == [1]


def test_restoring_another_model_is_a_clear_error(run_ns, tmp_path):
  with Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
    ckpt.save(run_ns['fresh_state'](), step=1)
  wider = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(1)])
  g_model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
  trainer = snjax.gan.gan_trainer(
    lambda p, z: g_model.apply({'params': p}, z),
    lambda p, x: wider.apply({'params': p}, x),
    optax.adam(1e-2),
    optax.adam(1e-2),
    latent_shape=3,
  )
  template = trainer.init(
    jax.random.key(0),
    g_model.init(jax.random.key(0), jnp.zeros((1, 3)))['params'],
    wider.init(jax.random.key(1), jnp.zeros((1, 2)))['params'],
  )
  with Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
    with pytest.raises(ValueError, match=r'different model.*critic_params.*layers_0.*kernel.*saved \(2, 8\)') as e:
      ckpt.restore(template)
    assert isinstance(e.value, CheckpointMismatchError)  # not damage: nothing is skipped or deleted
    assert ckpt.all_steps() == [1]
    with pytest.raises(FileNotFoundError, match='no checkpoint at step 5'):
      ckpt.restore(template, step=5)


@pytest.mark.parametrize('how', ['truncate', 'delete'])
def test_damaged_newest_checkpoint_gives_way_to_the_previous_one(run_ns, reference, tmp_path, how):
  """The newest step does not read back: the previous one is restored with a one-line note, and the run goes on
  exactly (the damaged step is deleted, so that it is saved again)."""
  run_ns['run'](str(tmp_path), 6, emit=lambda s: None)  # checkpoints of steps 4 and 6
  damage(tmp_path / '6', how)
  lines = []
  with pytest.warns(UnreadableCheckpointWarning) as caught:
    run_ns['run'](str(tmp_path), 8, emit=lines.append)
  notes = [str(w.message) for w in caught if w.category is UnreadableCheckpointWarning]
  assert len(notes) == 1 and '\n' not in notes[0]
  assert re.fullmatch(
    rf'checkpoint step 6 in {re.escape(str(tmp_path))} does not read back whole \(\w+: .+\); '
    r'restored step 4 instead and deleted step 6\.',
    notes[0],
  ), notes[0]
  resumed = _losses(lines)
  assert sorted(resumed) == [5, 6, 7, 8]
  assert all(resumed[step] == reference[step] for step in resumed)
  with Checkpointer(tmp_path, save_interval_steps=2) as ckpt:
    assert ckpt.all_steps() == [6, 8]


def test_no_readable_checkpoint_is_one_error_naming_the_directory(run_ns, tmp_path):
  run_ns['run'](str(tmp_path), 6, emit=lambda s: None)
  damage(tmp_path / '6', 'truncate')
  damage(tmp_path / '4', 'delete')
  with Checkpointer(tmp_path, save_interval_steps=2) as ckpt:
    with pytest.raises(UnreadableCheckpointError) as e:
      ckpt.restore(run_ns['fresh_state']())
    message = str(e.value)
    assert '\n' not in message and isinstance(e.value, ValueError)
    assert message.startswith(f'no checkpoint in {tmp_path} reads back whole: step 6: ')
    assert '; step 4: ' in message and message.endswith('Start a new run (another folder, or delete this one).')
    with pytest.raises(UnreadableCheckpointError, match=rf'^checkpoint step 4 in {re.escape(str(tmp_path))} does'):
      ckpt.restore(run_ns['fresh_state'](), step=4)
    assert ckpt.all_steps() == [4, 6]  # nothing is deleted when nothing could be restored


def test_empty_directory_restores_the_template_and_bad_options(tmp_path):
  template = {'w': jnp.ones(3)}
  with Checkpointer(tmp_path / 'new') as ckpt:
    assert ckpt.restore(template) is template and ckpt.latest_step() is None
  with pytest.raises(ValueError, match='save_interval_steps must be an int >= 1'):
    Checkpointer(tmp_path, save_interval_steps=0)
  with pytest.raises(ValueError, match=r'max_to_keep \(None to keep all\) must be an int >= 1'):
    Checkpointer(tmp_path, max_to_keep=0)
  with pytest.raises(ValueError, match='save_interval_steps must be an int >= 1, got True'):
    Checkpointer(tmp_path, save_interval_steps=True)


def test_core_imports_without_orbax():
  """Without Orbax, snjax, snjax.gan and snjax.lipschitz import and work (a fresh process: tests/_fresh_imports.py)."""
  assert _fresh_imports.without_orbax()['orbax_loaded'] == []


def test_snjax_and_snjax_gan_do_not_import_orbax():
  """In a fresh process, with Orbax installed: neither import loads it (only snjax.gan.checkpoint does)."""
  seen = _fresh_imports.with_orbax()
  assert [m for m in seen['core'] if m.split('.')[0] == 'orbax'] == [], 'orbax imported'
  assert seen['checkpoint_loads_orbax']


def test_checkpoint_without_orbax_names_the_extra():
  """Without Orbax, importing snjax.gan.checkpoint says which extra to install, chained from the ImportError."""
  seen = _fresh_imports.without_orbax()
  assert seen['error'] == "snjax.gan.checkpoint needs orbax-checkpoint: pip install 'snjax[train]'"
  assert seen['cause'] == 'ModuleNotFoundError'


def test_nonfinite_step_then_save_keeps_the_last_good_checkpoint(run_ns, tmp_path):
  """The documented loop: a non-finite step returns the old state, which is still finite and saves fine."""
  state = run_ns['fresh_state']()
  bad_batch = run_ns['batch'](0).at[0, 0, 0].set(jnp.inf)
  new, metrics = run_ns['TRAINER'].train_step(state, bad_batch)
  assert not bool(metrics['finite']) and int(new.step) == 0
  with Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
    assert ckpt.save(new, step=1)
