"""Executes notebooks/NAME.ipynb at full size; stores the executed copy here and its times in docs/results/notebooks/.

The docs render these executed copies (myst-nb, ``nb_execution_mode = 'off'``): the outputs a reader sees are those
of a full-size run. The notebooks in notebooks/ stay stored clean (tests/test_notebooks.py), and
tests/test_docs.py checks that each executed copy has the same cells as its source, so the pages cannot drift from
the notebooks. Each run also writes docs/results/notebooks/NAME.json: the total time, the longest cell (Colab's
free runtime is a 2-core CPU: no cell may take 5 minutes there), the machine and the load, and states the time in
the notebook's first markdown cell (in notebooks/ and here)::

  PYTHONPATH=$PWD python docs/notebooks/execute.py 03_digits_gan [more names]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

DOCS = pathlib.Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / 'results'))

from record import machine  # noqa: E402

CELL_TIMEOUT_S = 1800


def _seconds(cell) -> float:
  timing = cell.get('metadata', {}).get('execution', {})
  start, end = timing.get('iopub.execute_input'), timing.get('shell.execute_reply')
  if not (start and end):
    return 0.0
  parse = datetime.datetime.fromisoformat
  return (parse(end.replace('Z', '+00:00')) - parse(start.replace('Z', '+00:00'))).total_seconds()


def _merge_streams(outputs: list) -> list:
  """Consecutive stream outputs of one name as one, each line as a terminal shows it last (a progress bar's \\r)."""
  merged = []
  for output in outputs:
    if output.get('output_type') == 'stream' and merged and merged[-1].get('output_type') == 'stream':
      if merged[-1]['name'] == output['name']:
        merged[-1]['text'] += output['text']
        continue
    merged.append(output)
  for output in merged:
    if output.get('output_type') == 'stream':
      output['text'] = '\n'.join(line.rstrip('\r').rsplit('\r', 1)[-1] for line in output['text'].split('\n'))
  return merged


STAMP = '**Full size:**'


def stamp(name: str) -> None:
  """Writes the measured full-size time into the first markdown cell of the notebook and of its executed copy."""
  record = json.loads((DOCS / 'results' / 'notebooks' / f'{name}.json').read_text())
  d = record['data']
  line = (
    f'{STAMP} {d["total_seconds"] / 60:.0f} minutes on a 2-core CPU, no cell over {d["longest_cell_seconds"] / 60:.1f} '
    f'minutes (measured {record["date"][:10]} on a machine shared with other jobs, load average '
    f"{record['load_average']['before'][0]:.0f}; Colab's free runtime has 2 cores). The test suite runs a small "
    'setting of the same code (`SNJAX_NOTEBOOK_SMALL=1`).'
  )
  for path in (ROOT / 'notebooks' / f'{name}.ipynb', DOCS / 'notebooks' / f'{name}.ipynb'):
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == 'markdown')
    lines = [x for x in cell.source.split('\n') if not x.startswith(STAMP)]
    while lines and not lines[-1].strip():
      lines.pop()
    cell.source = '\n'.join([*lines, '', line])
    nbformat.write(nb, path)


def execute(name: str) -> dict:
  source = ROOT / 'notebooks' / f'{name}.ipynb'
  nb = nbformat.read(source, as_version=4)
  env_small = os.environ.pop('SNJAX_NOTEBOOK_SMALL', None)
  if env_small is not None:
    print('SNJAX_NOTEBOOK_SMALL ignored: executing at full size', file=sys.stderr)
  load_before = os.getloadavg()
  started = datetime.datetime.now(datetime.timezone.utc)
  t0 = time.perf_counter()
  client = NotebookClient(
    nb, timeout=CELL_TIMEOUT_S, kernel_name='python3', resources={'metadata': {'path': str(ROOT / 'notebooks')}}
  )
  client.execute()
  total = time.perf_counter() - t0
  cells = [(i, _seconds(c)) for i, c in enumerate(nb.cells) if c.cell_type == 'code']
  longest = max(cells, key=lambda c: c[1])
  for cell in nb.cells:  # keep the outputs, drop the timestamps (noise in the diff)
    cell.get('metadata', {}).pop('execution', None)
    if cell.cell_type == 'code':
      cell.outputs = _merge_streams(cell.outputs)
  nbformat.write(nb, DOCS / 'notebooks' / f'{name}.ipynb')
  record = {
    'command': f'python docs/notebooks/execute.py {name}',
    'date': started.strftime('%Y-%m-%d %H:%M UTC'),
    'wall_seconds': round(total, 1),
    'cpu_seconds': None,
    'load_average': {'before': [round(x, 2) for x in load_before], 'after': [round(x, 2) for x in os.getloadavg()]},
    'machine': machine(),
    'note': '',
    'data': {
      'notebook': f'{name}.ipynb',
      'total_seconds': round(total, 1),
      'longest_cell': longest[0],
      'longest_cell_seconds': round(longest[1], 1),
      'cell_seconds': {str(i): round(s, 1) for i, s in cells},
    },
  }
  out = DOCS / 'results' / 'notebooks' / f'{name}.json'
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(record, indent=1) + '\n')
  print(f'{name}: {total:.0f} s in all, longest cell {longest[0]}: {longest[1]:.0f} s')
  stamp(name)
  return record


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('names', nargs='+', help='notebook names in notebooks/, without .ipynb')
  parser.add_argument('--stamp-only', action='store_true', help='only write the recorded time into the notebooks')
  args = parser.parse_args(argv)
  for name in args.names:
    if args.stamp_only:
      stamp(name)
    else:
      execute(name)
  return 0


if __name__ == '__main__':
  sys.exit(main())
