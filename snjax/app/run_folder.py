"""The run folder of ``snjax train``: what it holds, when it may be used, reused or cleared.

A folder holds a run when it has ``config.json``, ``checkpoints/`` or any
of :data:`OUTPUT_FILES`. Such a folder is never overwritten by accident: it
is continued (``resume``, same configuration), cleared (``force``), or
refused (:class:`RunFolderError`) before anything in it is touched.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from snjax.app.config import TrainConfig

OUTPUT_FILES = ('config.json', 'data.json', 'history.json', 'samples.npy', 'samples.png', 'curves.png', 'metrics.json')
"""The files a run writes into its folder (besides ``checkpoints/``)."""

CHECKPOINTS = 'checkpoints'
"""The sub-folder of the Orbax checkpoints."""


class RunFolderError(ValueError):
  """The output folder cannot be used as asked (holds another run, a different configuration, ...)."""


def read_json(path: str) -> Any:
  """The contents of the JSON file ``path``."""
  with open(path) as f:
    return json.load(f)


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` to ``path`` as indented JSON, atomically (a temporary file, then a rename).

  A run killed while writing leaves the previous file whole, never half of the new one.
  """
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _holds_run(out_dir: str) -> bool:
  return any(os.path.exists(os.path.join(out_dir, f)) for f in (*OUTPUT_FILES, CHECKPOINTS))


def _clear(out_dir: str) -> None:
  """Deletes the run's outputs and checkpoints (and nothing else)."""
  for f in OUTPUT_FILES:
    p = os.path.join(out_dir, f)
    if os.path.exists(p):
      os.remove(p)
  shutil.rmtree(os.path.join(out_dir, CHECKPOINTS), ignore_errors=True)


def _config_differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
  """What a resumed run would change: each differing field, saved against now; empty if it may continue."""
  now = config.to_json()
  keys = sorted(set(saved) | set(now))
  # More steps continue a run, unless its learning rates decay over its (saved) length.
  growable = () if now.get('lr_decay') else ('steps',)
  diffs = [
    f'{k}: saved {saved.get(k)!r}, now {now.get(k)!r}' for k in keys if k not in growable and saved.get(k) != now.get(k)
  ]
  if not growable and saved.get('steps') != now.get('steps'):
    diffs.append('the learning rates decay over the last lr_decay of the steps, so steps cannot change')
  return diffs


def prepare_run_folder(
  out_dir: str, config: TrainConfig, *, resume: bool = False, force: bool = False, clear: bool = True
) -> bool:
  """Checks (and with ``force`` clears) the output folder; returns whether a checkpoint should be restored.

  * A folder holding no run (missing, or without ``config.json``,
    ``checkpoints/`` or any output file) is used as is.
  * A folder holding a run: with ``resume`` its ``config.json`` must equal
    ``config`` in every field but ``steps`` (more steps continue the run),
    and in ``steps`` too when ``lr_decay > 0`` (the schedule depends on it);
    with ``force`` its outputs and checkpoints are deleted (other files are
    left alone); with neither it is an error and nothing is touched.

  Args:
    out_dir: the run folder.
    config: the configuration of the run to make or continue.
    resume: continue a run already in the folder.
    force: delete a run already in the folder.
    clear: do the deleting that ``force`` asks for; ``False`` on all processes of a run but one, which only
      check (every process checks, one clears, then all wait for one another).

  Returns:
    Whether the folder holds a run to continue (restore its latest checkpoint).

  Raises:
    RunFolderError: the folder is a file, holds another run and neither flag
      is given, ``resume`` and ``force`` together, or a resume from a
      different configuration or without ``config.json``.
  """
  if resume and force:
    raise RunFolderError('--resume and --force exclude each other: resume continues the run, force deletes it.')
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise RunFolderError(f'output folder {out_dir!r} is a file, not a folder.')
  if not os.path.isdir(out_dir) or not _holds_run(out_dir):
    return False
  if force:
    if clear:
      _clear(out_dir)
    return False
  if not resume:
    raise RunFolderError(
      f'output folder {out_dir!r} already holds a run; nothing was overwritten. Pass --resume to continue it, '
      '--force to delete it and start again, or --out to choose another folder.'
    )
  cfg_path = os.path.join(out_dir, 'config.json')
  if not os.path.exists(cfg_path):
    raise RunFolderError(f'cannot resume: {out_dir!r} holds run outputs but no config.json.')
  diffs = _config_differences(read_json(cfg_path), config)
  if diffs:
    raise RunFolderError(
      f'cannot resume the run in {out_dir!r}: it was made with a different configuration ('
      + '; '.join(diffs)
      + '). Use the same options, or --out for a new run, or --force to replace it.'
    )
  return True
