"""Tests of ``snjax train``: outputs, determinism, bit-exact resume (also after SIGKILL), bad input, devices."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from snjax.app import cli
from snjax.app.run import RunFolderError, TrainConfig, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--width', '16', '--depth', '1', '--batch-size', '16', '--log-every', '5', '--checkpoint-every', '10']


def _tiny(**kw):
  base = dict(width=16, depth=1, batch_size=16, log_every=5, checkpoint_every=10, steps=20)
  base.update(kw)
  return TrainConfig.for_dataset(kw.pop('dataset', 'grid25'), **{k: v for k, v in base.items() if k != 'dataset'})


def _snapshot(folder):
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      p = os.path.join(root, f)
      with open(p, 'rb') as fh:
        out[os.path.relpath(p, folder)] = fh.read()
  return out


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('run') / 'grid')
  summary = train(_tiny(), out, progress=False)
  return out, summary


def test_outputs(finished_run):
  out, summary = finished_run
  for f in ('config.json', 'history.json', 'samples.npy', 'samples.png', 'curves.png', 'metrics.json'):
    assert os.path.getsize(os.path.join(out, f)) > 0, f
  assert sorted(os.listdir(os.path.join(out, 'checkpoints'))) == ['10', '20']
  samples = np.load(os.path.join(out, 'samples.npy'))
  assert samples.shape == (2500, 2) and np.all(np.isfinite(samples))
  with open(os.path.join(out, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(summary))
  m = saved['metrics']
  assert set(m) >= {'modes_covered', 'high_quality_percent', 'reverse_kl', 'mode_counts'}
  assert saved['steps'] == 20 and saved['devices'] >= 1
  assert set(saved['final_sigmas']) == {'Dense_0/kernel', 'Dense_1/kernel'}
  with open(os.path.join(out, 'history.json')) as f:
    history = json.load(f)
  assert [h['step'] for h in history] == [5, 10, 15, 20]
  assert all(np.isfinite(h['critic_loss']) and np.isfinite(h['generator_loss']) for h in history)


def test_resume_after_stop_is_bit_exact(tmp_path, finished_run):
  out, _ = finished_run
  part = str(tmp_path / 'part')
  assert train(_tiny(), part, progress=False, stop_after=10) == {'stopped_at': 10}
  assert not os.path.exists(os.path.join(part, 'samples.npy'))
  train(_tiny(), part, resume=True, progress=False)
  np.testing.assert_array_equal(np.load(os.path.join(part, 'samples.npy')), np.load(os.path.join(out, 'samples.npy')))
  with open(os.path.join(part, 'history.json')) as f1, open(os.path.join(out, 'history.json')) as f2:
    assert json.load(f1) == json.load(f2)


def test_resume_after_sigkill_is_bit_exact(tmp_path):
  """A CLI run killed with SIGKILL after its first checkpoint, resumed, ends with the uninterrupted run's samples."""
  args = ['--steps', '300', *TINY, '--quiet']
  killed = str(tmp_path / 'killed')
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.Popen([sys.executable, '-m', 'snjax', 'train', '--out', killed, *args], env=env, cwd=REPO)
  ckpt = os.path.join(killed, 'checkpoints')
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)):
      break
    time.sleep(0.05)
  assert proc.poll() is None, 'the run finished before it could be killed'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(killed, 'samples.npy'))
  assert cli.main(['train', '--out', killed, '--resume', *args]) == 0
  fresh = str(tmp_path / 'fresh')
  assert cli.main(['train', '--out', fresh, *args]) == 0
  np.testing.assert_array_equal(
    np.load(os.path.join(killed, 'samples.npy')), np.load(os.path.join(fresh, 'samples.npy'))
  )


def test_same_seed_same_run_other_seed_other_run(tmp_path, finished_run):
  out, _ = finished_run
  train(_tiny(steps=5, log_every=5, checkpoint_every=5), str(tmp_path / 'a'), progress=False)
  train(_tiny(steps=5, log_every=5, checkpoint_every=5, seed=1), str(tmp_path / 'b'), progress=False)
  a, b = np.load(tmp_path / 'a' / 'samples.npy'), np.load(tmp_path / 'b' / 'samples.npy')
  assert not np.array_equal(a, b)
  train(_tiny(steps=5, log_every=5, checkpoint_every=5), str(tmp_path / 'c'), progress=False)
  np.testing.assert_array_equal(a, np.load(tmp_path / 'c' / 'samples.npy'))


def test_folder_holding_a_run_is_not_overwritten(tmp_path, finished_run, capsys):
  out, _ = finished_run
  before = _snapshot(out)
  assert cli.main(['train', '--out', out, *TINY, '--steps', '20', '--quiet']) == 2
  assert 'already holds a run; nothing was overwritten' in capsys.readouterr().err
  assert _snapshot(out) == before


def test_resume_with_a_different_configuration_is_refused(finished_run, capsys):
  out, _ = finished_run
  before = _snapshot(out)
  args = [
    'train',
    '--out',
    out,
    '--width',
    '32',
    '--depth',
    '1',
    '--batch-size',
    '16',
    '--log-every',
    '5',
    '--checkpoint-every',
    '10',
    '--steps',
    '20',
    '--resume',
    '--quiet',
  ]
  assert cli.main(args) == 2
  err = capsys.readouterr().err
  assert 'different configuration' in err and 'width: saved 16, now 32' in err
  assert _snapshot(out) == before
  with pytest.raises(RunFolderError, match='--resume and --force exclude each other'):
    train(_tiny(), out, resume=True, force=True, progress=False)


def test_resume_may_extend_steps_only_without_lr_decay(tmp_path):
  """More steps continue a run with constant learning rates; with a decay the schedule depends on steps: refused."""
  const = str(tmp_path / 'const')
  train(_tiny(steps=5, log_every=5, checkpoint_every=5, lr_decay=0.0), const, progress=False)
  assert (
    train(_tiny(steps=10, log_every=5, checkpoint_every=5, lr_decay=0.0), const, resume=True, progress=False)['steps']
    == 10
  )
  decayed = str(tmp_path / 'decayed')
  train(_tiny(steps=5, log_every=5, checkpoint_every=5, lr_decay=0.5), decayed, progress=False)
  before = _snapshot(decayed)
  with pytest.raises(RunFolderError, match='steps cannot change'):
    train(_tiny(steps=10, log_every=5, checkpoint_every=5, lr_decay=0.5), decayed, resume=True, progress=False)
  assert _snapshot(decayed) == before


@pytest.mark.parametrize('steps, decay, n_critic', [(10, 0.4, 2), (7, 1.0, 3), (9, 0.0, 1), (100, 0.25, 5)])
def test_lr_schedule(steps, decay, n_critic):
  """Constant for the first (1 - lr_decay) of the steps, then linear to 0 at the last step; the critic's schedule
  (n_critic updates per step) gives the same rate at the same step."""
  from snjax.app.run import _lr_schedule

  config = _tiny(steps=steps, lr_decay=decay, n_critic=n_critic)
  gen = _lr_schedule(config, 0.5, 1)
  critic = _lr_schedule(config, 0.5, n_critic)
  start = round(steps * (1 - decay))
  for t in range(steps + 1):
    want = 0.5 if decay == 0 or t <= start else 0.5 * (steps - t) / (steps - start)
    got_g = gen if decay == 0 else float(gen(t))
    got_c = critic if decay == 0 else float(critic(t * n_critic))
    assert got_g == pytest.approx(want, abs=1e-7) and got_c == pytest.approx(want, abs=1e-7), t


def test_force_replaces_the_run(tmp_path):
  out = str(tmp_path / 'run')
  train(_tiny(steps=5, log_every=5, checkpoint_every=5), out, progress=False)
  with open(os.path.join(out, 'notes.txt'), 'w') as f:
    f.write('mine')
  assert cli.main(['train', '--out', out, *TINY, '--steps', '10', '--force', '--quiet']) == 0
  with open(os.path.join(out, 'metrics.json')) as f:
    assert json.load(f)['steps'] == 10
  assert open(os.path.join(out, 'notes.txt')).read() == 'mine'


@pytest.mark.parametrize(
  'argv, message',
  [
    (['train', '--dataset', 'mnist'], "invalid choice: 'mnist'"),
    (['train', '--no-such-option'], 'unrecognized arguments: --no-such-option'),
    (['train', '--steps', 'ten'], "invalid int value: 'ten'"),
  ],
)
def test_bad_command_line(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err


@pytest.mark.parametrize(
  'options, message',
  [
    (['--steps', '0'], 'steps must be an int >= 1, got 0'),
    (['--beta1', '1.5'], r'beta1 must be in \[0, 1\), got 1.5'),
    (['--lr-critic', '-1'], 'lr_critic must be a finite float > 0'),
    (['--lr-decay', '1.5'], r'lr_decay must be in \[0, 1\], got 1.5'),
    (['--activation', 'swish'], "unknown activation 'swish'"),
    (['--log-every', '7', '--checkpoint-every', '10'], 'checkpoint_every \\(10\\) must be a multiple of log_every'),
  ],
)
def test_bad_options_exit_non_zero_before_touching_anything(tmp_path, options, message, capsys):
  out = str(tmp_path / 'never')
  assert cli.main(['train', '--out', out, *options, '--quiet']) == 2
  import re

  assert re.search(message, capsys.readouterr().err)
  assert not os.path.exists(out)


def test_output_path_is_a_file(tmp_path, capsys):
  f = tmp_path / 'file'
  f.write_text('x')
  assert cli.main(['train', '--out', str(f), *TINY, '--steps', '5', '--quiet']) == 2
  assert 'is a file' in capsys.readouterr().err
  assert f.read_text() == 'x'


def test_digits_run(tmp_path):
  out = str(tmp_path / 'digits')
  summary = train(
    _tiny(dataset='digits', width=8, steps=5, log_every=5, checkpoint_every=5, latent_dim=4), out, progress=False
  )
  assert np.load(os.path.join(out, 'samples.npy')).shape == (2500, 8, 8)
  g, r = summary['metrics']['generated'], summary['metrics']['real_held_out']
  assert set(g) == set(r) - {'classifier_accuracy'}
  assert r['classes_covered'] == 10


def test_eight_simulated_devices(tmp_path):
  """Data-parallel over 8 CPU devices (the flag must be set before jax is imported: a subprocess)."""
  out = str(tmp_path / 'eight')
  env = dict(
    os.environ,
    XLA_FLAGS='--xla_force_host_platform_device_count=8',
    PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
  )
  subprocess.run(
    [sys.executable, '-m', 'snjax', 'train', '--out', out, *TINY, '--steps', '5', '--quiet'],
    env=env,
    cwd=REPO,
    check=True,
    timeout=300,
  )
  with open(os.path.join(out, 'metrics.json')) as f:
    assert json.load(f)['devices'] == 8
  bad = subprocess.run(
    [sys.executable, '-m', 'snjax', 'train', '--out', str(tmp_path / 'x'), *TINY, '--batch-size', '12', '--quiet'],
    env=env,
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 2 and 'not divisible by the 8 devices' in bad.stderr
