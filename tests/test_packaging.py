"""The release artifacts are complete: the sdist and the wheel build, pass ``twine check``, and the wheel works alone.

One test, in stages that each say what failed: a copy of the source tree (without virtual environments, build
outputs or runs) is built with ``python -m build --no-isolation`` (the sdist, then the wheel *from the sdist*, so a
file missing from the sdist breaks the wheel); ``twine check --strict`` reads both; the wheel is installed with
``pip install --no-deps --target`` into a fresh folder outside the checkout, and a process whose ``sys.path`` has
that folder first (the dependencies come from this interpreter's site-packages) runs ``import snjax`` and the
wheel's own ``snjax`` console script, a short ``snjax train`` (a small model for 10 steps: what is checked is that
the installed program runs and writes its outputs, which does not depend on the size), checking that snjax was
imported from the installed wheel and not from the checkout.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(
  '.git', '.venv', 'venv', 'runs', '_build', 'build', 'dist', '__pycache__', '*.egg-info', '.pytest_cache',
  '.hypothesis', '.ruff_cache', '.ipynb_checkpoints',
)  # fmt: skip


SMALL_RUN = ['--steps', '10', '--log-every', '5', '--checkpoint-every', '5', '--width', '16', '--depth', '1',
             '--batch-size', '16']  # fmt: skip


def _run(args: list[str], *, what: str, **kwargs) -> subprocess.CompletedProcess:
  proc = subprocess.run(args, capture_output=True, text=True, **kwargs)
  assert proc.returncode == 0, f'{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
  return proc


def _require(module: str) -> None:
  try:
    __import__(module)
  except ImportError as e:  # a missing test dependency is an error, not a skip
    pytest.fail(f'{module} is not installed: pip install -e ".[test]" ({e})')


def test_wheel_and_sdist_build_check_and_run_outside_the_checkout(tmp_path: pathlib.Path):
  for module in ('build', 'twine', 'setuptools'):
    _require(module)
  source = tmp_path / 'source'
  shutil.copytree(ROOT, source, ignore=IGNORE)
  dist = tmp_path / 'dist'
  _run([sys.executable, '-m', 'build', '--no-isolation', '--outdir', str(dist), str(source)], what='python -m build')
  (sdist,) = dist.glob('snjax-*.tar.gz')
  (wheel,) = dist.glob('snjax-*.whl')
  _run([sys.executable, '-m', 'twine', 'check', '--strict', str(sdist), str(wheel)], what='twine check')

  with zipfile.ZipFile(wheel) as zf:
    names = set(zf.namelist())
    metadata = next(zf.read(n).decode() for n in names if n.endswith('.dist-info/METADATA'))
  for required in ('snjax/__init__.py', 'snjax/py.typed', 'snjax/app/cli.py', 'snjax/gan/checkpoint.py'):
    assert required in names, f'the wheel lacks {required}'
  assert any(n.endswith('.dist-info/licenses/LICENSE') for n in names), 'the wheel lacks the license text'
  assert not any(n.startswith(('tests/', 'docs/', 'benchmarks/', 'notebooks/')) for n in names), sorted(names)[:20]
  assert 'License-Expression: Apache-2.0' in metadata, 'the license is not an SPDX expression in the metadata'
  assert 'Project-URL: Documentation' in metadata and 'Provides-Extra: docs' in metadata
  with tarfile.open(sdist) as tf:
    members = {m.split('/', 1)[1] for m in tf.getnames() if '/' in m}
  for required in ('pyproject.toml', 'README.md', 'LICENSE', 'snjax/py.typed'):
    assert required in members, f'the sdist lacks {required}'

  target = tmp_path / 'installed'
  _run(
    [sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '--quiet', '--target', str(target), str(wheel)],
    what='pip install --target',
  )
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['PYTHONPATH'] = str(target)  # the wheel first; its dependencies from this interpreter's site-packages
  work = tmp_path / 'work'  # a working directory outside the checkout: nothing is imported from it
  work.mkdir()
  probe = _run(
    [sys.executable, '-c', 'import snjax, snjax.gan.checkpoint, snjax.app.cli; print(snjax.__file__)'],
    what='import snjax from the wheel',
    cwd=work,
    env=env,
  )
  assert pathlib.Path(probe.stdout.strip()).is_relative_to(target), f'snjax imported from {probe.stdout.strip()}'

  script = target / 'bin' / 'snjax'
  assert script.exists(), 'the wheel installs no snjax console script'
  out = work / 'run'
  _run(
    [str(script), 'train', *SMALL_RUN, '--out', str(out)],
    what='snjax train from the installed wheel',
    cwd=work,
    env=env,
    timeout=900,
  )
  summary = json.loads((out / 'metrics.json').read_text())
  assert summary['steps'] == 10 and summary['dataset'] == 'grid25', summary
  for name in ('samples.npy', 'samples.png', 'curves.png', 'config.json', 'history.json'):
    assert (out / name).exists(), f'snjax train wrote no {name}'
