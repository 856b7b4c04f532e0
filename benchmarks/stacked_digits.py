"""The stacked-digits benchmark: ``snjax train --dataset stacked_digits``, its default run, over seeds, with and
without spectral normalization; modes (of 1,000), reverse KL, wall and CPU time of each command.

Each run is the command a user types, in its own process (``python -m snjax train --dataset stacked_digits
--seed S [--normalization none] --quiet``); its wall time is measured around the process and its CPU time is
the process's (user + system, ``resource.getrusage(RUSAGE_CHILDREN)``). The machine's load (``os.getloadavg``)
is recorded before and after each run: a loaded machine stretches the wall time, not the CPU time.

::

  python benchmarks/stacked_digits.py --seeds 0 1 2 --json docs/results/stacked_digits.json

Writes the JSON (the machine, versions, command, date and one entry per run with its metrics) and prints a
table. The runs go to ``--runs`` (default ``runs/stacked_digits_bench``), one folder per run, replaced.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def _versions() -> dict[str, str]:
  import importlib.metadata as md

  out = {'python': platform.python_version()}
  for name in ('snjax', 'jax', 'jaxlib', 'flax', 'optax', 'scikit-learn', 'numpy'):
    try:
      out[name] = md.version(name)
    except md.PackageNotFoundError:
      out[name] = 'not installed'
  return out


def run_one(seed: int, normalization: str, runs: str, extra: list[str]) -> dict:
  """One ``snjax train --dataset stacked_digits`` process: its metrics, wall and CPU time, and the load."""
  out = os.path.join(runs, f'{normalization}_seed{seed}')
  command = [
    sys.executable,
    '-m',
    'snjax',
    'train',
    '--dataset',
    'stacked_digits',
    '--seed',
    str(seed),
    '--normalization',
    normalization,
    '--out',
    out,
    '--force',
    '--quiet',
    *extra,
  ]
  load_before = os.getloadavg()
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  subprocess.run(command, check=True)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  with open(os.path.join(out, 'metrics.json')) as f:
    summary = json.load(f)
  g, r = summary['metrics']['generated'], summary['metrics']['real_held_out']
  return {
    'seed': seed,
    'normalization': normalization,
    'modes_covered': g['modes_covered'],
    'reverse_kl': g['reverse_kl'],
    'channel_reverse_kl': g['channel_reverse_kl'],
    'real_held_out_modes': r['modes_covered'],
    'real_held_out_reverse_kl': r['reverse_kl'],
    'wall_seconds': round(wall, 1),
    'cpu_seconds': round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
    'load_average_before': [round(x, 2) for x in load_before],
    'load_average_after': [round(x, 2) for x in os.getloadavg()],
    'command': ' '.join(['snjax', *command[3:]]),
    'steps': summary['steps'],
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--normalizations', nargs='+', default=['spectral', 'none'])
  parser.add_argument('--runs', default='runs/stacked_digits_bench')
  parser.add_argument('--json', help='write the results here')
  parser.add_argument('--merge', nargs='+', help='instead of running, merge the runs of these result files')
  parser.add_argument('extra', nargs='*', help='more snjax train flags (after --), e.g. -- --steps 1000')
  args = parser.parse_args(argv)
  if args.merge:
    records = []
    for path in args.merge:
      with open(path) as f:
        records.append(json.load(f))
    record = dict(records[0], runs=[r for rec in records for r in rec['runs']])
    record['command'] = ' ; '.join(sorted({rec['command'] for rec in records}))
    record['date'] = ' .. '.join(sorted({rec['date'] for rec in records}))
    results = record['runs']
  else:
    results = []
    for normalization in args.normalizations:
      for seed in args.seeds:
        results.append(run_one(seed, normalization, args.runs, args.extra))
        print(json.dumps(results[-1]), flush=True)
    record = {
      'benchmark': 'stacked_digits',
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'machine': {'cpu': _cpu_model(), 'cores': os.cpu_count(), 'platform': platform.platform()},
      'versions': _versions(),
      'command': 'python benchmarks/stacked_digits.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
      'runs': results,
    }
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump(record, f, indent=2)
  print(f'{"normalization":<14}{"seed":>5}{"modes":>7}{"reverse KL":>12}{"wall s":>9}{"CPU s":>9}  load before')
  for r in results:
    print(
      f'{r["normalization"]:<14}{r["seed"]:>5}{r["modes_covered"]:>7}{r["reverse_kl"]:>12.4f}'
      f'{r["wall_seconds"]:>9.1f}{r["cpu_seconds"]:>9.1f}  {r["load_average_before"][0]:.2f}'
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())
