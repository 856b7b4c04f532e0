"""Damaging a saved Orbax checkpoint step as a full disk or a lost file would, for the tests that it must survive."""

import glob
import os


def damage(step_dir, how: str) -> None:
  """Truncates to half (``how='truncate'``), or deletes (``'delete'``), every data file of the step in ``step_dir``.

  Raises:
    AssertionError: the step has no data file (the layout of Orbax's steps changed).
  """
  data = glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'), recursive=True)
  assert data, f'no data file under {step_dir}: {os.listdir(step_dir)}'
  for f in data:
    if how == 'truncate':
      os.truncate(f, os.path.getsize(f) // 2)
    elif how == 'delete':
      os.remove(f)
    else:
      raise ValueError(f"how must be 'truncate' or 'delete', got {how!r}")
