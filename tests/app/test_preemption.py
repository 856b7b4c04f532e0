"""Tests of snjax.app.preemption in one process: SIGTERM is caught, answered at the next step boundary, twice is
once, the previous handler comes back; ``snjax train`` stopped by SIGTERM saves, says how to continue, and the
continued run is the uninterrupted one bit for bit. (Several processes: tests/app/test_distributed.py.)"""

import os
import signal
import threading

import pytest

from snjax.app import cli, preemption
from snjax.gan import checkpoint

FLAGS = ['--width', '16', '--depth', '1', '--batch-size', '16', '--log-every', '5', '--checkpoint-every', '10']


def test_sigterm_is_answered_at_the_next_boundary_and_the_handler_comes_back():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionWatch() as watch:
    assert not watch.reached() and not watch.reached()
    os.kill(os.getpid(), signal.SIGTERM)  # caught: the test process goes on
    os.kill(os.getpid(), signal.SIGTERM)  # a second one changes nothing
    assert watch.reached() and watch.reached()
  assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_sigterm_is_left_alone():
  before, seen = signal.getsignal(signal.SIGTERM), []

  def watch_in_a_thread():
    with preemption.PreemptionWatch() as watch:
      seen.append((signal.getsignal(signal.SIGTERM), watch.reached()))

  thread = threading.Thread(target=watch_in_a_thread)
  thread.start()
  thread.join()
  assert seen == [(before, False)]


@pytest.fixture
def sigterm_at_boundary(monkeypatch):
  """``sigterm_at_boundary(k)``: the run sends itself SIGTERM right after its k-th step boundary was checked, and
  again when the save that follows begins; the saves are recorded in ``saves``."""
  state = {'at': None, 'boundaries': 0, 'saves': []}
  reached, save = preemption.PreemptionWatch.reached, checkpoint.Checkpointer.save

  def reached_then_signal(self):
    answer = reached(self)
    state['boundaries'] += 1
    if state['boundaries'] == state['at']:
      os.kill(os.getpid(), signal.SIGTERM)
    return answer

  def save_under_a_second_signal(self, tree, **kw):
    if state['at'] is not None and state['boundaries'] > state['at']:
      os.kill(os.getpid(), signal.SIGTERM)
    state['saves'].append(kw.get('step'))
    return save(self, tree, **kw)

  monkeypatch.setattr(preemption.PreemptionWatch, 'reached', reached_then_signal)
  monkeypatch.setattr(checkpoint.Checkpointer, 'save', save_under_a_second_signal)

  def arm(k):
    state.update(at=k, boundaries=0, saves=[])
    return state

  return arm


def test_snjax_train_stopped_by_sigterm_saves_says_how_to_continue_and_continues_exactly(
  tmp_path, capsys, sigterm_at_boundary
):
  args = [*FLAGS, '--steps', '20', '--quiet']
  stopped, handler = str(tmp_path / 'stopped'), signal.getsignal(signal.SIGTERM)
  seen = sigterm_at_boundary(2)  # SIGTERM during steps 10..15: the run saves step 15 and stops
  assert cli.main(['train', '--out', stopped, *args]) == 0
  assert seen['saves'] == [10, 15]
  out = capsys.readouterr().out.splitlines()
  assert out == [
    f'snjax train: stopped by SIGTERM after saving step 15 in {stopped}/checkpoints; to continue, run (on every '
    f'process): snjax train --out {stopped} {" ".join(args)} --resume'
  ]
  assert sorted(os.listdir(os.path.join(stopped, 'checkpoints'))) == ['10', '15']
  assert not os.path.exists(os.path.join(stopped, 'samples.npy'))
  assert signal.getsignal(signal.SIGTERM) is handler  # put back after the run
  sigterm_at_boundary(None)
  assert cli.main(['train', '--out', stopped, *args, '--resume']) == 0
  whole = str(tmp_path / 'whole')
  assert cli.main(['train', '--out', whole, *args]) == 0
  for name in ('samples.npy', 'history.json'):
    with open(os.path.join(stopped, name), 'rb') as a, open(os.path.join(whole, name), 'rb') as b:
      assert a.read() == b.read(), name
