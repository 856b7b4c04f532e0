"""Result tables rendered from the JSON files in docs/results/, each with the provenance of its run.

A page asks for a table by kind and file (a path relative to docs/results/, or a glob)::

  ```{results-table} train/grid25_seed*.json
  :kind: grid25
  ```

Every file is a record written by docs/results/record.py: ``command``, ``date``, ``wall_seconds``,
``cpu_seconds``, ``load_average``, ``machine`` (CPU, versions) and ``data`` (what the command wrote). Each kind
below turns the records into a header and rows; the directive adds a line under the table with the run's date,
machine, versions, load and command, so no number in the docs stands without the run behind it. A missing or
malformed file is a build error (with ``-W``, the build fails).
"""

from __future__ import annotations

import json
import pathlib
import statistics

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

RESULTS = pathlib.Path(__file__).resolve().parents[1] / 'results'


def load(pattern: str) -> list[dict]:
  """The records matching ``pattern`` under docs/results/, sorted by file name."""
  paths = sorted(RESULTS.glob(pattern))
  if not paths:
    raise ValueError(f'no result file matches docs/results/{pattern}')
  records = []
  for path in paths:
    record = json.loads(path.read_text())
    for key in ('command', 'date', 'machine', 'data'):
      if key not in record:
        raise ValueError(f'{path}: a result record needs {key!r} (write it with docs/results/record.py)')
    record['_path'] = path
    records.append(record)
  return records


def _pct(x: float) -> str:
  return f'{x:+.1f}%'


def grid25(records: list[dict]) -> tuple[list[str], list[list[str]]]:
  """One row per seed of ``snjax train`` on grid25, their mean, and PacGAN's rows from literature/."""
  header = ['run', 'modes covered', 'high-quality samples', 'reverse KL', 'wall / CPU time']
  rows, per_seed = [], []
  for r in records:
    m = r['data']['metrics']
    per_seed.append(m)
    time = f'{r["wall_seconds"]:.0f} s / {r["cpu_seconds"]:.0f} s'
    rows.append(
      [
        f'`snjax train --seed {r["data"]["seed"]}`',
        f'{m["modes_covered"]} / {m["n_modes"]}',
        f'{m["high_quality_percent"]:.1f}%',
        f'{m["reverse_kl"]:.3f}',
        time,
      ]
    )
  seeds = ', '.join(str(r['data']['seed']) for r in records)
  mean = [
    f'**mean of seeds {seeds}**',
    f'**{statistics.mean(m["modes_covered"] for m in per_seed):.1f}**',
    f'**{statistics.mean(m["high_quality_percent"] for m in per_seed):.1f}%**',
    f'**{statistics.mean(m["reverse_kl"] for m in per_seed):.3f}**',
    '',
  ]
  rows.insert(0, mean)
  literature = json.loads((RESULTS / 'literature' / 'pacgan_table1.json').read_text())
  for row in literature['rows']:
    rows.append([row['model'], f'{row["modes"]}', f'{row["high_quality_percent"]}%', f'{row["reverse_kl"]}', '—'])
  return header, rows


def train_digits(records: list[dict]) -> tuple[list[str], list[list[str]]]:
  """The digits scores of each ``snjax train --dataset digits`` run, and the real held-out digits'."""
  header = ['samples', 'class entropy (nats)', 'classes covered', 'classifier confidence', 'Fréchet distance']

  def row(name, s):
    frechet = f'{s["frechet_distance"]:.2f}'
    return [name, f'{s["class_entropy"]:.3f}', str(s['classes_covered']), f'{s["confidence"]:.3f}', frechet]

  rows = [
    row(f'`snjax train --dataset digits --seed {r["data"]["seed"]}`', r['data']['metrics']['generated'])
    for r in records
  ]
  rows.append(row('real held-out digits', records[-1]['data']['metrics']['real_held_out']))
  return header, rows


def train_mixture(records: list[dict]) -> tuple[list[str], list[list[str]]]:
  """One row per ``snjax train`` run on a mixture (ring8, grid25)."""
  header = ['run', 'modes covered', 'high-quality samples', 'reverse KL', 'wall / CPU time']
  rows = []
  for r in records:
    m, d = r['data']['metrics'], r['data']
    rows.append(
      [
        f'`snjax train --dataset {d["dataset"]} --seed {d["seed"]}`',
        f'{m["modes_covered"]} / {m["n_modes"]}',
        f'{m["high_quality_percent"]:.1f}%',
        f'{m["reverse_kl"]:.3f}',
        f'{r["wall_seconds"]:.0f} s / {r["cpu_seconds"]:.0f} s',
      ]
    )
  return header, rows


def stacked_digits(records: list[dict]) -> tuple[list[str], list[list[str]]]:
  """One row per ``snjax train --dataset stacked_digits`` run, the mean per normalization, and the real held-out
  digits stacked the same way."""
  header = ['run', 'modes covered (of 1,000)', 'reverse KL', 'wall / CPU time']
  rows = []
  for normalization in ('spectral', 'none'):
    runs = [r for r in records if r['data']['config'].get('normalization', 'spectral') == normalization]
    if not runs:
      continue
    for r in runs:
      g = r['data']['metrics']['generated']
      flag = '' if normalization == 'spectral' else ' --normalization none'
      rows.append(
        [
          f'`snjax train --dataset stacked_digits --seed {r["data"]["seed"]}{flag}`',
          str(g['modes_covered']),
          f'{g["reverse_kl"]:.3f}',
          f'{r["wall_seconds"]:.0f} s / {r["cpu_seconds"]:.0f} s',
        ]
      )
    gs = [r['data']['metrics']['generated'] for r in runs]
    rows.append(
      [
        f'**mean, {"spectral norm" if normalization == "spectral" else "no spectral norm"} ({len(runs)} seeds)**',
        f'**{statistics.mean(g["modes_covered"] for g in gs):.1f}**',
        f'**{statistics.mean(g["reverse_kl"] for g in gs):.3f}**',
        f'**{statistics.mean(r["wall_seconds"] for r in runs):.0f} s / '
        f'{statistics.mean(r["cpu_seconds"] for r in runs):.0f} s**',
      ]
    )
  real = records[0]['data']['metrics']['real_held_out']
  rows.append(['real held-out digits, stacked', str(real['modes_covered']), f'{real["reverse_kl"]:.3f}', '—'])
  return header, rows


def critic_step(records: list[dict]) -> tuple[list[str], list[list[str]]]:
  """Overheads of spectral norm in a critic train step, one column per critic (benchmarks/critic_step.py)."""
  (record,) = records[-1:]
  steps = record['data']['step']
  critics = list(dict.fromkeys(s['critic'] for s in steps))
  variants = list(dict.fromkeys(s['variant'] for s in steps))
  header = ['overhead, wall / CPU time'] + critics
  plain_s = [next(s for s in steps if s['critic'] == c)['plain_s'] for c in critics]
  plain = ['plain flax.linen step'] + [f'{t * 1e3:.2f} ms' for t in plain_s]
  rows = [plain]
  for v in variants:
    cells = [v]
    for c in critics:
      s = next((s for s in steps if s['critic'] == c and s['variant'] == v), None)
      cells.append('—' if s is None else f'{_pct(100 * s["overhead"])} / {_pct(100 * s["overhead_cpu"])}')
    rows.append(cells)
  return header, rows


def _conv_columns(records: list[dict], names: list[str]) -> tuple[list[str], list[list[str]]]:
  table = records[-1]['data']['accuracy']
  header = [h.strip() for h in table['header']]
  index = []
  for name in names:  # 's' occurs twice: the time of the default bound, then of the dense one
    index.append(next(i for i, h in enumerate(header) if h == name and i not in index))
  return [names[k] for k in range(len(names))], [[row[i] for i in index] for row in table['rows']]


def conv_norms(records: list[dict]) -> tuple[list[str], list[list[str]]]:
  """Per layer of the SN-GAN critic: the reshaped norm, the operator norm, the conv-mode sigma (conv_accuracy.py)."""
  names = ['layer', 'input', 'D', 'reshaped', 'operator', 'dense f64', 'sn_apply', 'op/resh', 'sn/op']
  return _conv_columns(records, names)


def conv_bounds(records: list[dict]) -> tuple[list[str], list[list[str]]]:
  """Per layer of the SN-GAN critic: the certified bounds, their times, and each bound over the operator norm."""
  names = ['layer', 'D', 'default', 's', 'fft(svd)', 'dense', 's', 'default/op', 'dense/op']
  return _conv_columns(records, names)


def conv_timing(records: list[dict]) -> tuple[list[str], list[list[str]]]:
  """The time of one jitted sn_apply step, matrix mode against conv mode (benchmarks/conv_accuracy.py)."""
  timing = records[-1]['data']['sn_apply_ms']
  return ['sn_apply step (jit, float32, 1 power iteration)', 'ms'], [[k, f'{v:.2f}'] for k, v in timing.items()]


def notebooks(records: list[dict]) -> tuple[list[str], list[list[str]]]:
  """Full-size run time of each notebook and of its longest cell (docs/notebooks/execute.py)."""
  header = ['notebook', 'full-size run', 'longest cell', 'date', 'load average (1 min) at start']
  rows = []
  for r in records:
    d = r['data']
    rows.append(
      [
        d['notebook'],
        f'{d["total_seconds"] / 60:.1f} min',
        f'{d["longest_cell_seconds"] / 60:.1f} min',
        r['date'],
        f'{r["load_average"]["before"][0]:.1f}',
      ]
    )
  return header, rows


KINDS = {
  'grid25': grid25,
  'train_mixture': train_mixture,
  'train_digits': train_digits,
  'critic_step': critic_step,
  'conv_norms': conv_norms,
  'conv_bounds': conv_bounds,
  'conv_timing': conv_timing,
  'notebooks': notebooks,
  'stacked_digits': stacked_digits,
}


def provenance(records: list[dict]) -> nodes.paragraph:
  """A line under the table: dates, CPU, versions, load, the command and the data file."""
  first = records[0]
  m = first['machine']
  versions = ', '.join(f'{k} {v}' for k, v in m['versions'].items() if k in ('snjax', 'jax', 'flax', 'optax'))
  dates = sorted({r['date'][:10] for r in records})
  loads = [r['load_average']['before'][0] for r in records] + [r['load_average']['after'][0] for r in records]
  commands = [r['command'] for r in records]
  command = commands[0] if len(set(commands)) == 1 else f'{commands[0]} (and {len(commands) - 1} more)'
  para = nodes.paragraph(classes=['results-provenance'])
  para += nodes.Text(
    f'Run {" to ".join([dates[0], dates[-1]] if len(dates) > 1 else dates)} on {m["cpu"]}, {m["cpus"]} CPUs, '
    f'Python {m["python"]}, {versions}; load average (1 minute) {min(loads):.1f} to {max(loads):.1f} at the starts '
    'and ends of the runs, on a machine shared with other jobs. Command: '
  )
  para += nodes.literal(text=command)
  para += nodes.Text('. Data: ')
  para += nodes.literal(text=f'docs/results/{first["_path"].relative_to(RESULTS).as_posix()}')
  more = f' and {len(records) - 1} more files' if len(records) > 1 else ''
  notes = ' '.join(sorted({r['note'] for r in records if r.get('note')}))
  para += nodes.Text(f'{more}.' + (f' {notes}' if notes else ''))
  return para


def _cell(text: str) -> nodes.entry:
  entry = nodes.entry()
  para = nodes.paragraph()
  if text.startswith('**') and text.endswith('**') and len(text) > 4:
    para += nodes.strong(text=text[2:-2])
  elif text.startswith('`') and text.endswith('`') and len(text) > 2:
    para += nodes.literal(text=text[1:-1])
  else:
    para += nodes.Text(text)
  entry += para
  return entry


def _table(header: list[str], rows: list[list[str]]) -> nodes.table:
  table = nodes.table(classes=['results-table'])
  group = nodes.tgroup(cols=len(header))
  table += group
  for _ in header:
    group += nodes.colspec(colwidth=1)
  head = nodes.thead()
  group += head
  row = nodes.row()
  for h in header:
    row += _cell(h)
  head += row
  body = nodes.tbody()
  group += body
  for cells in rows:
    if len(cells) != len(header):
      raise ValueError(f'a row has {len(cells)} cells, the header {len(header)}: {cells}')
    row = nodes.row()
    for c in cells:
      row += _cell(c)
    body += row
  return table


class ResultsTable(SphinxDirective):
  """``results-table PATTERN`` with ``:kind:`` one of :data:`KINDS`: the table and its provenance."""

  required_arguments = 1
  option_spec = {'kind': lambda arg: directives.choice(arg, tuple(KINDS))}
  has_content = False

  def run(self):
    pattern = self.arguments[0]
    kind = self.options.get('kind')
    if kind is None:
      raise self.error(f'results-table {pattern}: give :kind: (one of {sorted(KINDS)})')
    try:
      records = load(pattern)
      header, rows = KINDS[kind](records)
    except (ValueError, KeyError, OSError) as e:
      raise self.error(f'results-table {pattern} ({kind}): {e!r}') from e
    for r in records:
      self.env.note_dependency(str(r['_path']))
    return [_table(header, rows), provenance(records)]


def setup(app):
  app.add_directive('results-table', ResultsTable)
  return {'version': '1', 'parallel_read_safe': True, 'parallel_write_safe': True}
