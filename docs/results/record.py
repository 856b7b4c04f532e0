"""Runs a command that writes a JSON file and stores that JSON with its provenance in docs/results/.

The docs render their result tables from these files (docs/_ext/results.py), so every number a page shows
comes with the machine, the versions, the command, the date and the load of the run that produced it::

  python docs/results/record.py docs/results/train/grid25_seed0.json --json runs/g0/metrics.json -- \\
      snjax train --seed 0 --out runs/g0

``--json`` names the file the command writes; without it the command's standard output must be JSON.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import resource
import shlex
import subprocess
import sys
import time

PACKAGES = ('snjax', 'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'dm-haiku', 'equinox', 'torch', 'numpy')


def _cpu_model() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine() -> dict:
  """The machine and software a run used."""
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return {
    'cpu': _cpu_model(),
    'cpus': os.cpu_count(),
    'system': f'{platform.system()} {platform.machine()}',
    'python': platform.python_version(),
    'versions': versions,
  }


def _git_commit() -> str | None:
  try:
    out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=True)
  except (OSError, subprocess.CalledProcessError):
    return None
  return out.stdout.strip()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('output', type=pathlib.Path, help='the result file to write (docs/results/...json)')
  parser.add_argument('--json', type=pathlib.Path, help='the JSON file the command writes (default: its stdout)')
  parser.add_argument('--note', default='', help='one line on the conditions of the run')
  argv = list(sys.argv[1:] if argv is None else argv)
  if '--' not in argv:
    parser.error('give the command after --')
  split = argv.index('--')
  args, command = parser.parse_args(argv[:split]), argv[split + 1 :]
  if not command:
    parser.error('give the command after --')
  load_before = os.getloadavg()
  started = datetime.datetime.now(datetime.timezone.utc)
  t0 = time.perf_counter()
  proc = subprocess.run(command, stdout=subprocess.PIPE if args.json is None else None, text=True, check=False)
  wall = time.perf_counter() - t0
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode:
    print(f'command failed with status {proc.returncode}: {shlex.join(command)}', file=sys.stderr)
    return proc.returncode
  data = json.loads(args.json.read_text() if args.json is not None else proc.stdout)
  record = {
    'command': shlex.join(command),
    'date': started.strftime('%Y-%m-%d %H:%M UTC'),
    'commit': _git_commit(),
    'wall_seconds': round(wall, 1),
    'cpu_seconds': round(usage.ru_utime + usage.ru_stime, 1),
    'load_average': {'before': [round(x, 2) for x in load_before], 'after': [round(x, 2) for x in os.getloadavg()]},
    'machine': machine(),
    'note': args.note,
    'data': data,
  }
  args.output.parent.mkdir(parents=True, exist_ok=True)
  args.output.write_text(json.dumps(record, indent=1) + '\n')
  print(f'wrote {args.output} ({wall:.0f} s wall)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
