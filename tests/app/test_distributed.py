"""``snjax train`` on several real processes (JAX's multi-controller runtime on 127.0.0.1, gloo collectives).

The processes run ``python -m tests.app._driver``, which runs ``snjax train`` command lines one after another in
one process (so that several runs pay for one start of Python and JAX) and, for the preemption and failure
scenarios, holds training at a chosen step boundary until the test has sent its signals: no test waits for a
guessed time. Each test makes its own references (so that pytest-xdist may put the tests on any workers).
"""

import json
import os
import re
import signal

import jax
import numpy as np
import pytest

from snjax.app import cli, data, distributed, trainer
from snjax.app.config import TrainConfig
from snjax.app.run import train
from snjax.gan.checkpoint import Checkpointer
from tests import _processes

TINY = dict(width=16, depth=1, batch_size=16, log_every=5, checkpoint_every=10, steps=20)
FLAGS = [item for k, v in TINY.items() for item in (f'--{k.replace("_", "-")}', str(v))]


def _join(port: int, pid: int, n: int = 2) -> list[str]:
  return ['--coordinator-address', f'127.0.0.1:{port}', '--num-processes', str(n), '--process-id', str(pid)]


def _driver(folder, runs_of_process, devices):
  """The launch of one driver process per entry of ``runs_of_process`` (its runs), each with ``devices``."""
  flags = os.path.join(folder, 'flags')
  os.makedirs(flags, exist_ok=True)
  commands = [
    _processes.python('-m', 'tests.app._driver', json.dumps({'flags': flags, 'runs': runs})) for runs in runs_of_process
  ]
  return _processes.Launch(commands, [_processes.env(devices)] * len(commands), str(folder)), flags


def _train_argv(out, *extra):
  return ['train', '--out', str(out), *FLAGS, *extra]


# What gloo prints on stdout when it connects (``[Gloo] Rank 0 is connected to 1 peer ranks. ...``), from several
# threads at once, so that its pieces may land on separate lines: the rank's number may stand alone on a line.
_GLOO = re.compile(
  r'\[Gloo\] Rank |\d* ?is connected to \d+ peer ranks\. Expected number of connected peer ranks is : \d+'
)


def _ours(stdout):
  """The non-empty lines of a process's stdout, gloo's messages (and rank numbers left alone) taken out."""
  return [line for line in _GLOO.sub('', stdout).splitlines() if line.strip() and not line.strip().isdigit()]


def _read(folder, name):
  with open(os.path.join(folder, name)) as f:
    return json.load(f)


def _state(folder, step):
  """The checkpoint of ``step`` in the run folder, restored in this (one-device) process."""
  config = TrainConfig(**_read(folder, 'config.json'))
  dataset = data.get_dataset(config.dataset)
  generator, critic, gan_trainer = trainer.build(config, dataset, None)
  template = trainer.init_state(config, dataset, generator, critic, gan_trainer)
  with Checkpointer(os.path.join(folder, 'checkpoints'), save_interval_steps=config.checkpoint_every) as ckpt:
    return ckpt.restore(template, step=step)


def _assert_states(a, b, **tolerance):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    if tolerance:
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)
    else:
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# Two runs of the same 20 steps on 4 devices, in 2 processes or in 1, are the same computation but for the order
# of the cross-device sums (the gradient all-reduce, the batch means: XLA's in-process reduction against gloo's
# between processes), each off by a few float32 ulp (~1e-7 relative); Adam passes relative gradient errors on to
# its updates as they are. Measured after 20 steps: 12 of the 39 state arrays bit-equal, the others within 1.2e-7
# absolute, the samples bit-equal; a run moved between 1 device and 4 (a checkpoint restored by another number of
# processes) within 6e-8. That uses at most 12% of this tolerance, which would still catch any difference in the
# data, the keys or the updates (those move the values by 1e-3 or more). Two devices per process are as many as
# the property needs (the batch split across the devices of each process and across processes), and cost a tenth
# less CPU time than four here.
CLOSE = dict(rtol=1e-5, atol=1e-6)


def test_two_processes_train_like_one_stop_on_sigterm_and_resume_bit_identical(tmp_path):
  """Two launches of processes 0 and 1 (2 x 2 devices), and one process with 4 devices beside the first.

  First launch: SIGTERM to both processes at step 15 (twice, the second during the save) -> both save step 15 and
  exit 0 with a line that says how to continue. Beside it, the 4-device process refuses a batch its devices cannot
  split (a one-line error, status 2), then makes the run on 1 process. Between the launches this process makes 10
  steps on one device and checkpoints them. Second launch: the two processes resume the stopped run, continue the
  1-process checkpoint, then make the uninterrupted 2-process run with its progress shown.

  The 2-process run is the 1-process run up to the order of the sums across devices; the resumed run is the
  uninterrupted one bit for bit; the 1-process checkpoint continued by 2 processes ends as they do, up to the order
  of sums."""
  stopped, moved, whole, one = (str(tmp_path / name) for name in ('stopped', 'moved', 'whole', 'one'))
  port = _processes.free_port()
  runs = [
    [{'argv': _train_argv(stopped, '--quiet', *_join(port, pid)), 'park_at': 3, 'park': 'preempt', 'hold_save': True}]
    for pid in (0, 1)
  ]
  single_runs = [
    {'argv': _train_argv(tmp_path / 'indivisible', '--batch-size', '10', '--quiet'), 'status': 2},
    {'argv': _train_argv(one, '--quiet')},
  ]
  single, _ = _driver(tmp_path / 'single', [single_runs], devices=4)
  launch, flags = _driver(tmp_path / 'preempted', runs, devices=2)
  with single, launch:
    launch.wait_for(lambda: all(os.path.exists(os.path.join(flags, f'parked{i}')) for i in (0, 1)), 'step 15')
    launch.signal(0)
    launch.signal(1)
    launch.wait_for(lambda: all(os.path.exists(os.path.join(flags, f'saving{i}')) for i in (0, 1)), 'the save')
    launch.signal(0)
    launch.signal(1)
    open(os.path.join(flags, 'go_save'), 'w').close()
    p0, p1 = launch.finish()
    (alone,) = single.finish()
  assert p0.returncode == p1.returncode == 0, launch.report()
  assert alone.returncode == 0, single.report()
  assert re.search(r'snjax train: error: .*not divisible by the 4 devices', alone.stderr), alone.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'indivisible')  # refused before anything is written
  command = ['snjax', *_train_argv(stopped, '--quiet', *_join(port, 0)), '--resume']
  assert _ours(p0.stdout) == [
    f'snjax train: stopped by SIGTERM after saving step 15 in {stopped}/checkpoints; to continue, run (on every '
    f'process): {" ".join(command)}'
  ]
  assert _ours(p1.stdout) == []
  assert sorted(os.listdir(os.path.join(stopped, 'checkpoints'))) == ['10', '15']
  assert [h['step'] for h in _read(stopped, 'history.json')] == [5, 10, 15]
  assert not os.path.exists(os.path.join(stopped, 'samples.npy'))
  # A run of 10 steps checkpointed by this process (one device), to be continued by two processes.
  assert train(TrainConfig.for_dataset('grid25', **TINY), moved, progress=False, stop_after=10) == {'stopped_at': 10}
  port = _processes.free_port()
  runs = [
    [
      {'argv': _train_argv(stopped, '--quiet', '--resume', *_join(port, pid))},
      {'argv': _train_argv(moved, '--quiet', '--resume', *_join(port, pid))},
      {'argv': _train_argv(whole, *_join(port, pid))},
    ]
    for pid in (0, 1)
  ]
  launch, _ = _driver(tmp_path / 'resumed', runs, devices=2)
  with launch:
    p0, p1 = launch.finish()
  assert p0.returncode == p1.returncode == 0, launch.report()
  for folder in (whole, one):
    for f in ('config.json', 'history.json', 'samples.npy', 'samples.png', 'curves.png', 'metrics.json'):
      assert os.path.getsize(os.path.join(folder, f)) > 0, (folder, f)
    assert sorted(os.listdir(os.path.join(folder, 'checkpoints'))) == ['10', '20']
  m2, m1 = _read(whole, 'metrics.json'), _read(one, 'metrics.json')
  assert (m2['devices'], m2['processes'], m1['devices'], m1['processes']) == (4, 2, 4, 1)
  # Process 0 shows the progress of the run that is not --quiet and prints its summary; process 1 neither (gloo's
  # own lines aside).
  assert 'SN-GAN grid25' in p0.stderr and 'SN-GAN' not in p1.stderr
  assert [line for line in _ours(p0.stdout) if line.startswith('snjax train:')] == [
    f'snjax train: grid25, 20 steps, seed 0, 4 devices in 2 processes (cpu), '
    f'{m2["train_seconds_this_session"]:.1f} s of training in this session'
  ]
  assert _ours(p1.stdout) == []
  # 2 processes against 1: the same run, up to the order of the sums across devices.
  h2, h1 = _read(whole, 'history.json'), _read(one, 'history.json')
  assert [h['step'] for h in h2] == [h['step'] for h in h1] == [5, 10, 15, 20]
  for a, b in zip(h2, h1, strict=True):
    assert a.keys() == b.keys()
    np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], **CLOSE)
  final = _state(whole, 20)
  _assert_states(final, _state(one, 20), **CLOSE)
  np.testing.assert_allclose(
    np.load(os.path.join(whole, 'samples.npy')), np.load(os.path.join(one, 'samples.npy')), **CLOSE
  )
  # Stopped and resumed: bit for bit the uninterrupted 2-process run, its samples, history and final state.
  with open(os.path.join(stopped, 'samples.npy'), 'rb') as f, open(os.path.join(whole, 'samples.npy'), 'rb') as g:
    assert f.read() == g.read()
  assert _read(stopped, 'history.json') == _read(whole, 'history.json')
  _assert_states(_state(stopped, 20), final)
  # The 1-process checkpoint restored in 2 processes: the run ends as the others, up to the order of sums.
  assert [h['step'] for h in _read(moved, 'history.json')] == [5, 10, 15, 20]
  _assert_states(_state(moved, 20), final, **CLOSE)


@pytest.mark.skipif(
  not distributed.takes_heartbeat_timeout(),
  reason=f'needs --heartbeat-timeout: jax {jax.__version__} has no initialize(heartbeat_timeout_seconds=)',
)
def test_sigkill_of_one_process_ends_the_other_and_the_last_checkpoint_restores(tmp_path):
  """Process 1 is killed at step 15 (after the checkpoint of step 10): process 0, inside the next collective,
  is stopped by the runtime once the heartbeat timeout passes, with JAX's error naming the dead task; the run
  resumes in one process from step 10."""
  killed = tmp_path / 'killed'
  # Process 0 waits for the dead one inside gloo's collective, spinning a core, until the timeout: a short one. Live
  # processes send their heartbeats from a thread of their own, whatever their training is doing.
  port = _processes.free_port()
  runs = [
    [
      {
        'argv': _train_argv(killed, '--quiet', '--heartbeat-timeout', '5', *_join(port, pid)),
        'park_at': 3,
        'park': 'wait',
      }
    ]
    for pid in (0, 1)
  ]
  launch, flags = _driver(tmp_path / 'kill', runs, devices=2)
  with launch:
    launch.wait_for(lambda: all(os.path.exists(os.path.join(flags, f'parked{i}')) for i in (0, 1)), 'step 15')
    launch.signal(1, signal.SIGKILL)
    launch.procs[1].wait()
    open(os.path.join(flags, 'go'), 'w').close()
    p0, p1 = launch.finish()
  assert p1.returncode == -9
  assert p0.returncode != 0, launch.report()
  # Stopped by the runtime once the heartbeat timeout passed (seen so far), or by gloo finding the connection to the
  # dead process closed, whichever comes first: either way an error that says what happened, not a hang.
  stopped_by = r'JAX distributed service detected fatal errors|[Gg]loo.*(fail|clos|reset)'
  assert re.search(stopped_by, p0.stderr), p0.stderr[-3000:]
  assert sorted(os.listdir(killed / 'checkpoints')) == ['10']
  assert not os.path.exists(killed / 'samples.npy')
  # The last complete checkpoint restores, here in one process with one device, and the run goes on as the
  # uninterrupted run on this device does, up to the order of sums.
  assert cli.main(_train_argv(killed, '--quiet', '--resume')) == 0
  assert [h['step'] for h in _read(killed, 'history.json')] == [5, 10, 15, 20]
  assert cli.main(_train_argv(tmp_path / 'whole', '--quiet')) == 0
  for step in (10, 20):
    _assert_states(_state(killed, step), _state(tmp_path / 'whole', step), **CLOSE)


def test_helpers_in_one_process(monkeypatch):
  monkeypatch.delenv(distributed.COORDINATOR_ENV, raising=False)
  assert distributed.initialize() is False  # nothing asked: no runtime, one process
  assert distributed.is_primary() and jax.process_count() == 1
  distributed.barrier('nothing to wait for')
  x = jax.numpy.arange(6.0).reshape(2, 3)
  np.testing.assert_array_equal(distributed.to_host(x), np.arange(6.0).reshape(2, 3))
  with pytest.raises(ValueError, match=r'heartbeat_timeout \(seconds\) must be an int >= 1, got 0'):
    distributed.initialize('127.0.0.1:1', 2, 0, heartbeat_timeout=0)
  # A jax whose initialize has no heartbeat_timeout_seconds (jax 0.6 and older): a clear error, nothing started.
  started = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda coordinator_address, num_processes, process_id: started)
  assert not distributed.takes_heartbeat_timeout()
  with pytest.raises(ValueError, match=r'heartbeat timeout needs a jax whose jax.distributed.initialize takes'):
    distributed.initialize('127.0.0.1:1', 2, 0, heartbeat_timeout=10)
  assert not started
