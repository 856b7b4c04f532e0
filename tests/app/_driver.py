"""Runs ``snjax train`` command lines one after another in one process: ``python -m tests.app._driver SPEC``.

The multi-process tests launch it on every process. ``SPEC`` is JSON: ``flags``, a folder where the driver and
the test leave each other files, and ``runs``, each ``{"argv": [...]}`` (the arguments after ``snjax``) with
hooks that make a test independent of timing, without sleeping for a guessed while:

* ``"park_at": k, "park": "preempt"``: at the k-th step boundary of the run, training holds there, the driver
  writes ``parked<process>`` and asks the preemption sync point again and again until it says save (the test
  sends SIGTERM meanwhile): the save happens at exactly that boundary, however long the signal takes.
* ``"park_at": k, "park": "wait"``: at the k-th boundary, writes ``parked<process>`` and waits for ``go``.
* ``"hold_save": true``: the save after a preemption first writes ``saving<process>`` and waits for
  ``go_save`` (the test sends a second SIGTERM meanwhile), then saves.
* ``"status": s``: the exit status the run must end with (default 0), e.g. 2 for a command line that must be
  refused; the runs after it go on.

Exits with the status of the first run that ends otherwise than its ``status`` says, else 0.
"""

import json
import os
import sys
import time

LIMIT = 300  # seconds a hook waits for the test before giving up (a safety net, not a timing)


def _touch(flags: str, name: str) -> None:
  import jax

  with open(os.path.join(flags, f'{name}{jax.process_index()}'), 'w'):
    pass


def _wait_for(flags: str, name: str) -> None:
  deadline = time.monotonic() + LIMIT
  while not os.path.exists(os.path.join(flags, name)):
    if time.monotonic() > deadline:
      raise SystemExit(f'driver: {name} never came')
    time.sleep(0.02)


def _hook(run: dict, flags: str) -> None:
  """Patches the preemption watch and the checkpointer for ``run``'s hooks (over the originals)."""
  from snjax.app import preemption
  from snjax.gan import checkpoint

  reached = preemption.PreemptionWatch.__dict__.get('_original_reached', preemption.PreemptionWatch.reached)
  save = checkpoint.Checkpointer.__dict__.get('_original_save', checkpoint.Checkpointer.save)
  preemption.PreemptionWatch._original_reached, checkpoint.Checkpointer._original_save = reached, save
  seen = {'boundaries': 0, 'preempted': False}

  def parked_reached(self):
    seen['boundaries'] += 1
    if seen['boundaries'] != run.get('park_at'):
      seen['preempted'] = reached(self)
      return seen['preempted']
    _touch(flags, 'parked')
    if run['park'] == 'wait':
      _wait_for(flags, 'go')
      return reached(self)
    deadline = time.monotonic() + LIMIT
    while not reached(self):
      if time.monotonic() > deadline:
        raise SystemExit('driver: no preemption came')
      time.sleep(0.02)
    seen['preempted'] = True
    return True

  def held_save(self, state, **kw):
    if seen['preempted'] and run.get('hold_save'):
      _touch(flags, 'saving')
      _wait_for(flags, 'go_save')
    return save(self, state, **kw)

  preemption.PreemptionWatch.reached = parked_reached
  checkpoint.Checkpointer.save = held_save


def main(spec_json: str) -> int:
  spec = json.loads(spec_json)
  from snjax.app import cli

  for run in spec['runs']:
    _hook(run, spec['flags'])
    status = cli.main(run['argv'])
    if status != run.get('status', 0):
      return status or 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1]))
