"""Tests of snjax.app.run_folder: a run is never overwritten by accident; resume only with the same configuration."""

import json
import os

import pytest

from snjax.app import cli
from snjax.app.config import TrainConfig
from snjax.app.run import train
from snjax.app.run_folder import OUTPUT_FILES, RunFolderError, prepare_run_folder, read_json, write_json

CONFIG = TrainConfig.for_dataset('grid25', steps=20, width=16, log_every=5, checkpoint_every=10)


def _fake_run(folder, config=CONFIG):
  """A folder as a finished run leaves it (outputs, a checkpoint folder) plus a file of the user's."""
  os.makedirs(os.path.join(folder, 'checkpoints', '20'))
  for f in OUTPUT_FILES:
    with open(os.path.join(folder, f), 'w') as fh:
      fh.write('{}')
  write_json(os.path.join(folder, 'config.json'), config.to_json())
  with open(os.path.join(folder, 'notes.txt'), 'w') as fh:
    fh.write('mine')
  return str(folder)


def test_a_folder_without_a_run_is_used_as_is(tmp_path):
  assert prepare_run_folder(str(tmp_path / 'missing'), CONFIG) is False
  assert not (tmp_path / 'missing').exists()
  (tmp_path / 'mine').mkdir()
  (tmp_path / 'mine' / 'notes.txt').write_text('mine')
  assert prepare_run_folder(str(tmp_path / 'mine'), CONFIG, resume=True) is False
  assert os.listdir(tmp_path / 'mine') == ['notes.txt']


@pytest.mark.parametrize('entry', [*OUTPUT_FILES, 'checkpoints'])
def test_any_output_marks_a_run_that_is_not_overwritten(tmp_path, entry, snapshot):
  folder = tmp_path / 'run'
  folder.mkdir()
  if entry == 'checkpoints':
    (folder / entry).mkdir()
  else:
    (folder / entry).write_text('{}')
  before = snapshot(folder)
  with pytest.raises(RunFolderError, match='already holds a run; nothing was overwritten. Pass --resume'):
    prepare_run_folder(str(folder), CONFIG)
  assert snapshot(folder) == before


def test_resume_needs_the_same_configuration(tmp_path, snapshot):
  folder = _fake_run(tmp_path / 'run')
  before = snapshot(folder)
  assert prepare_run_folder(folder, CONFIG, resume=True) is True
  wider = TrainConfig.for_dataset('grid25', steps=20, width=32, log_every=5, checkpoint_every=10)
  with pytest.raises(RunFolderError, match=r'different configuration \(width: saved 16, now 32\)'):
    prepare_run_folder(folder, wider, resume=True)
  longer = TrainConfig.for_dataset('grid25', steps=40, width=16, log_every=5, checkpoint_every=10)
  with pytest.raises(RunFolderError, match='so steps cannot change'):
    prepare_run_folder(folder, longer, resume=True)
  assert snapshot(folder) == before


def test_resume_may_add_steps_to_constant_learning_rates(tmp_path):
  constant = TrainConfig.for_dataset('grid25', steps=20, lr_decay=0.0)
  folder = _fake_run(tmp_path / 'run', constant)
  assert prepare_run_folder(folder, TrainConfig.for_dataset('grid25', steps=60, lr_decay=0.0), resume=True)


def test_resume_without_config_json(tmp_path):
  folder = _fake_run(tmp_path / 'run')
  os.remove(os.path.join(folder, 'config.json'))
  with pytest.raises(RunFolderError, match='cannot resume: .* holds run outputs but no config.json'):
    prepare_run_folder(folder, CONFIG, resume=True)


def test_force_deletes_the_outputs_and_checkpoints_only(tmp_path):
  folder = _fake_run(tmp_path / 'run')
  assert prepare_run_folder(folder, CONFIG, force=True) is False
  assert os.listdir(folder) == ['notes.txt']


def test_resume_and_force_exclude_each_other_and_a_file_is_not_a_folder(tmp_path):
  with pytest.raises(RunFolderError, match='--resume and --force exclude each other'):
    prepare_run_folder(str(tmp_path), CONFIG, resume=True, force=True)
  f = tmp_path / 'file'
  f.write_text('x')
  with pytest.raises(RunFolderError, match='is a file, not a folder'):
    prepare_run_folder(str(f), CONFIG)


def test_write_json_replaces_the_file_whole(tmp_path):
  path = str(tmp_path / 'history.json')
  write_json(path, [{'step': 5}])
  write_json(path, [{'step': 5}, {'step': 10}])
  assert read_json(path) == [{'step': 5}, {'step': 10}]
  assert os.listdir(tmp_path) == ['history.json']
  with open(path) as f:
    assert json.load(f) == [{'step': 5}, {'step': 10}]


def test_output_path_is_a_file(tmp_path, capsys, tiny_flags):
  f = tmp_path / 'file'
  f.write_text('x')
  assert cli.main(['train', '--out', str(f), *tiny_flags, '--steps', '5', '--quiet']) == 2
  assert 'is a file' in capsys.readouterr().err
  assert f.read_text() == 'x'


def test_resume_may_extend_steps_only_without_lr_decay(tmp_path, tiny, snapshot):
  """More steps continue a run with constant learning rates; with a decay the schedule depends on steps: refused."""
  const = str(tmp_path / 'const')
  train(tiny(steps=5, log_every=5, checkpoint_every=5, lr_decay=0.0), const, progress=False)
  assert (
    train(tiny(steps=10, log_every=5, checkpoint_every=5, lr_decay=0.0), const, resume=True, progress=False)['steps']
    == 10
  )
  decayed = str(tmp_path / 'decayed')
  train(tiny(steps=5, log_every=5, checkpoint_every=5, lr_decay=0.5), decayed, progress=False)
  before = snapshot(decayed)
  with pytest.raises(RunFolderError, match='steps cannot change'):
    train(tiny(steps=10, log_every=5, checkpoint_every=5, lr_decay=0.5), decayed, resume=True, progress=False)
  assert snapshot(decayed) == before


def test_force_replaces_the_run(tmp_path, tiny, tiny_flags):
  out = str(tmp_path / 'run')
  train(tiny(steps=5, log_every=5, checkpoint_every=5), out, progress=False)
  with open(os.path.join(out, 'notes.txt'), 'w') as f:
    f.write('mine')
  assert cli.main(['train', '--out', out, *tiny_flags, '--steps', '10', '--force', '--quiet']) == 0
  with open(os.path.join(out, 'metrics.json')) as f:
    assert json.load(f)['steps'] == 10
  assert open(os.path.join(out, 'notes.txt')).read() == 'mine'
