"""Tests of ``snjax train`` in one process: outputs, determinism, bit-exact resume (also after SIGKILL), bad input.

Several devices and processes: tests/app/test_distributed.py."""

import json
import os
import re
import signal

import numpy as np
import pytest

from snjax.app import cli
from snjax.app.run import format_summary, train
from snjax.app.run_folder import RunFolderError
from tests import _processes
from tests._checkpoints import damage


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, tiny):
  out = str(tmp_path_factory.mktemp('run') / 'grid')
  summary = train(tiny(), out, progress=False)
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


def test_summary_text(finished_run):
  out, summary = finished_run
  text = format_summary(summary, out)
  m = summary['metrics']
  assert text.startswith(f'snjax train: grid25, 20 steps, seed 0, {summary["devices"]} device(s)')
  assert f'modes covered       {m["modes_covered"]} / 25' in text
  assert f'high-quality        {m["high_quality_percent"]:.1f} %' in text
  assert 'Dense_0/kernel' in text and text.endswith(
    f'outputs in {out}: samples.npy, samples.png, curves.png, metrics.json, checkpoints/'
  )


def test_progress_bar_and_summary_are_shown(tmp_path, tiny, capsys):
  out = str(tmp_path / 'shown')
  summary = train(tiny(steps=5, log_every=5, checkpoint_every=5), out)
  captured = capsys.readouterr()
  assert captured.out.strip() == format_summary(summary, out)
  assert 'SN-GAN grid25' in captured.err and '5/5' in captured.err


def test_resume_after_stop_is_bit_exact(tmp_path, finished_run, tiny):
  out, _ = finished_run
  part = str(tmp_path / 'part')
  assert train(tiny(), part, progress=False, stop_after=10) == {'stopped_at': 10}
  assert not os.path.exists(os.path.join(part, 'samples.npy'))
  train(tiny(), part, resume=True, progress=False)
  np.testing.assert_array_equal(np.load(os.path.join(part, 'samples.npy')), np.load(os.path.join(out, 'samples.npy')))
  with open(os.path.join(part, 'history.json')) as f1, open(os.path.join(out, 'history.json')) as f2:
    assert json.load(f1) == json.load(f2)


def test_resume_after_sigkill_is_bit_exact(tmp_path, finished_run, tiny_flags):
  """A CLI run killed with SIGKILL after its first checkpoint, resumed, ends with the uninterrupted run's samples.

  The run is held at its third chunk boundary (step 15, after the checkpoint of step 10) by the test driver until
  it is killed, so the kill lands there however fast or slow the machine is. The uninterrupted run is the
  module's run of the same configuration."""
  args = ['--steps', '20', *tiny_flags, '--quiet']
  killed, flags = str(tmp_path / 'killed'), tmp_path / 'flags'
  flags.mkdir()
  spec = {'flags': str(flags), 'runs': [{'argv': ['train', '--out', killed, *args], 'park_at': 3, 'park': 'wait'}]}
  command = _processes.python('-m', 'tests.app._driver', json.dumps(spec))
  with _processes.Launch([command], [_processes.env(1)], str(tmp_path)) as launch:
    launch.wait_for(lambda: (flags / 'parked0').exists(), 'step 15')
    assert sorted(d for d in os.listdir(os.path.join(killed, 'checkpoints')) if d.isdigit()) == ['10']
    launch.signal(0, signal.SIGKILL)
    (done,) = launch.finish()
  assert done.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(killed, 'samples.npy'))
  assert cli.main(['train', '--out', killed, '--resume', *args]) == 0
  fresh = finished_run[0]
  for name in ('config.json', 'history.json'):
    with open(os.path.join(killed, name)) as f, open(os.path.join(fresh, name)) as g:
      assert json.load(f) == json.load(g), name
  np.testing.assert_array_equal(
    np.load(os.path.join(killed, 'samples.npy')), np.load(os.path.join(fresh, 'samples.npy'))
  )


def test_same_seed_same_run_other_seed_other_run(tmp_path, tiny):
  train(tiny(steps=5, log_every=5, checkpoint_every=5), str(tmp_path / 'a'), progress=False)
  train(tiny(steps=5, log_every=5, checkpoint_every=5, seed=1), str(tmp_path / 'b'), progress=False)
  a, b = np.load(tmp_path / 'a' / 'samples.npy'), np.load(tmp_path / 'b' / 'samples.npy')
  assert not np.array_equal(a, b)
  train(tiny(steps=5, log_every=5, checkpoint_every=5), str(tmp_path / 'c'), progress=False)
  np.testing.assert_array_equal(a, np.load(tmp_path / 'c' / 'samples.npy'))


def test_folder_holding_a_run_is_not_overwritten(finished_run, capsys, tiny_flags, snapshot):
  out, _ = finished_run
  before = snapshot(out)
  assert cli.main(['train', '--out', out, *tiny_flags, '--steps', '20', '--quiet']) == 2
  assert 'already holds a run; nothing was overwritten' in capsys.readouterr().err
  assert snapshot(out) == before


def test_resume_with_a_different_configuration_is_refused(finished_run, capsys, tiny, snapshot):
  out, _ = finished_run
  before = snapshot(out)
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
  assert snapshot(out) == before
  with pytest.raises(RunFolderError, match='--resume and --force exclude each other'):
    train(tiny(), out, resume=True, force=True, progress=False)


def test_damaged_checkpoint_gives_way_to_the_previous_one_in_one_line(tmp_path, finished_run, tiny, tiny_flags, capsys):
  """The newest checkpoint truncated: the run resumes from the one before (one line on stderr says which step was
  skipped and why) and ends as the uninterrupted run, bit for bit."""
  out = str(tmp_path / 'damaged')
  assert train(tiny(), out, progress=False, stop_after=15) == {'stopped_at': 15}
  damage(os.path.join(out, 'checkpoints', '15'), 'truncate')
  capsys.readouterr()
  assert cli.main(['train', '--out', out, *tiny_flags, '--steps', '20', '--resume', '--quiet']) == 0
  err = capsys.readouterr().err
  assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
  assert re.fullmatch(
    # The reason in parentheses is Orbax's and tensorstore's (a status code, then wording that varies by version).
    rf'snjax train: checkpoint step 15 in {re.escape(out)}/checkpoints does not read back whole \([A-Z_]+: .+\); '
    r'restored step 10 instead and deleted step 15\.\n',
    err,
  ), err
  np.testing.assert_array_equal(
    np.load(os.path.join(out, 'samples.npy')), np.load(os.path.join(finished_run[0], 'samples.npy'))
  )


def test_no_readable_checkpoint_is_a_one_line_error_naming_the_folder(tmp_path, tiny, tiny_flags, capsys, snapshot):
  out = str(tmp_path / 'lost')
  assert train(tiny(), out, progress=False, stop_after=15) == {'stopped_at': 15}
  damage(os.path.join(out, 'checkpoints', '15'), 'truncate')
  damage(os.path.join(out, 'checkpoints', '10'), 'delete')
  before = snapshot(out)
  capsys.readouterr()
  assert cli.main(['train', '--out', out, *tiny_flags, '--steps', '20', '--resume', '--quiet']) == 2
  err = capsys.readouterr().err
  assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
  assert err.startswith(
    f"snjax train: error: cannot resume the run in '{out}': no checkpoint in {out}/checkpoints reads back whole: "
    'step 15: OUT_OF_RANGE: '
  )
  assert '; step 10: NOT_FOUND: ' in err and err.endswith('Start a new run (another folder, or delete this one).\n')
  assert snapshot(out) == before


def test_digits_run(tmp_path, tiny):
  out = str(tmp_path / 'digits')
  summary = train(
    tiny(dataset='digits', width=8, steps=5, log_every=5, checkpoint_every=5, latent_dim=4), out, progress=False
  )
  assert np.load(os.path.join(out, 'samples.npy')).shape == (2500, 8, 8)
  g, r = summary['metrics']['generated'], summary['metrics']['real_held_out']
  assert set(g) == set(r) - {'classifier_accuracy'}
  assert r['classes_covered'] == 10
  assert 'class entropy (nats)' in format_summary(summary, out) and 'Frechet distance' in format_summary(summary, out)
