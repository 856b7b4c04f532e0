"""The notebooks in notebooks/ run top to bottom, open in Colab, use the public API and are stored clean.

Each notebook is executed with nbclient in a kernel of *this* interpreter (a kernel spec written to a temporary
directory points at ``sys.executable``, so the kernel sees the same venv as the tests) with the repository root on
``PYTHONPATH`` and ``SNJAX_NOTEBOOK_SMALL=1``, the notebooks' small-size setting. The notebooks a pytest worker
runs share one kernel, started once: before each notebook its namespace is emptied (``%reset -f``) and its figures
closed, so a notebook sees none of another's names, as in a fresh kernel, while the modules they import (JAX,
Flax, snjax) are loaded once. No notebook changes a module's settings (no ``jax.config`` update), so sharing the
modules changes nothing a notebook computes. Any cell that raises fails the test; the notebooks assert their own
results (against SVDs and dense matrices) as they go.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
import time
import types

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

import snjax

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / 'notebooks'
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob('*.ipynb'))
REQUIRED = ['01_quickstart', '02_sngan_2d', '03_digits_gan', '04_conv_operator_norm']
COLAB_URL = 'https://colab.research.google.com/github/snjax/snjax/blob/main/notebooks/{}.ipynb'
MAX_BYTES = 100_000
CELL_TIMEOUT_S = 600
KERNEL_NAME = 'snjax-notebook-test'

_ids = [p.stem for p in NOTEBOOKS]


def _read(path: pathlib.Path) -> nbformat.NotebookNode:
  return nbformat.read(path, as_version=4)


def _code_cells(nb) -> list[str]:
  return [c.source for c in nb.cells if c.cell_type == 'code']


@pytest.fixture(scope='module')
def kernel_spec_dir(tmp_path_factory) -> pathlib.Path:
  """A kernel spec that runs ipykernel with the interpreter running the tests, snjax importable, small setting."""
  root = tmp_path_factory.mktemp('kernels')
  spec_dir = root / KERNEL_NAME
  spec_dir.mkdir()
  pythonpath = os.pathsep.join(p for p in [str(ROOT), os.environ.get('PYTHONPATH', '')] if p)
  # One thread per kernel: the suite runs with `-n 2` on 2 cores, where BLAS / Eigen thread pools only contend.
  xla_flags = ' '.join(f for f in [os.environ.get('XLA_FLAGS', ''), '--xla_cpu_multi_thread_eigen=false'] if f)
  spec = {
    'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
    'display_name': 'snjax notebook tests',
    'language': 'python',
    'env': {
      'PYTHONPATH': pythonpath,
      'SNJAX_NOTEBOOK_SMALL': '1',
      'MPLBACKEND': 'Agg',
      'XLA_FLAGS': xla_flags,
      'OMP_NUM_THREADS': '1',
      'OPENBLAS_NUM_THREADS': '1',
      'MKL_NUM_THREADS': '1',
    },
  }
  (spec_dir / 'kernel.json').write_text(json.dumps(spec))
  return root


@pytest.fixture(scope='module')
def kernel(kernel_spec_dir):
  """A started kernel of the spec, shared by the notebooks this worker runs."""
  ksm = KernelSpecManager(kernel_dirs=[str(kernel_spec_dir)])
  km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
  km.start_kernel(cwd=str(NOTEBOOK_DIR))
  try:
    yield km
  finally:
    km.shutdown_kernel(now=True)


# Run in the kernel before each notebook: an empty namespace and no open figures, as in a fresh kernel.
_RESET = """
import matplotlib.pyplot
matplotlib.pyplot.close('all')
get_ipython().run_line_magic('reset', '-f')
"""


def test_required_notebooks_exist():
  missing = [name for name in REQUIRED if not (NOTEBOOK_DIR / f'{name}.ipynb').exists()]
  assert not missing, f'missing notebooks: {missing}'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids)
def test_notebook_runs(path: pathlib.Path, kernel):
  nb = _read(path)
  client = NotebookClient(nb, km=kernel, timeout=CELL_TIMEOUT_S, allow_errors=False)
  # The notebook's own client resets the kernel (clients of one kernel manager share an identity on the kernel's
  # shell socket, so a second client would miss its replies).
  client.start_new_kernel_client()
  try:
    reply = client.kc.execute_interactive(_RESET, timeout=CELL_TIMEOUT_S, store_history=False)
    assert reply['content']['status'] == 'ok', reply['content']
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, on the first failing cell
  finally:
    client.kc.stop_channels()
  elapsed = time.perf_counter() - start
  executed = [c for c in nb.cells if c.cell_type == 'code' and c.get('execution_count') is not None]
  assert len(executed) == len(_code_cells(nb)), 'not every code cell ran'
  errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
  assert not errors
  print(f'{path.name}: {elapsed:.1f} s')


@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids)
def test_notebook_is_stored_clean(path: pathlib.Path):
  size = path.stat().st_size
  assert size < MAX_BYTES, f'{path.name} is {size} bytes; store it cleared of outputs (< {MAX_BYTES} bytes)'
  nb = _read(path)
  nbformat.validate(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == 'code':
      assert not cell.outputs, f'{path.name}: cell {i} has stored outputs; clear them'
      assert cell.execution_count is None, f'{path.name}: cell {i} has an execution count; clear outputs'
  assert nb.metadata.get('kernelspec', {}).get('name') == 'python3'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids)
def test_notebook_opens_in_colab(path: pathlib.Path):
  nb = _read(path)
  first = nb.cells[0]
  assert first.cell_type == 'markdown'
  assert 'colab-badge.svg' in first.source and COLAB_URL.format(path.stem) in first.source, (
    f'{path.name}: the first cell must hold an "Open in Colab" badge linking to {COLAB_URL.format(path.stem)}'
  )


@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids)
def test_setup_cell_installs_only_in_colab(path: pathlib.Path, monkeypatch):
  """The first code cell pip-installs snjax when google.colab is imported, and does nothing otherwise."""
  setup = _code_cells(_read(path))[0]
  calls = []
  monkeypatch.setattr(subprocess, 'run', lambda *args, **kwargs: calls.append((args, kwargs)))
  monkeypatch.delitem(sys.modules, 'google.colab', raising=False)
  exec(compile(setup, f'{path.name}:setup', 'exec'), {})
  assert calls == [], f'{path.name}: the setup cell ran a command outside Colab: {calls}'

  monkeypatch.setitem(sys.modules, 'google.colab', types.ModuleType('google.colab'))
  exec(compile(setup, f'{path.name}:setup', 'exec'), {})
  assert len(calls) == 1, f'{path.name}: the setup cell must run exactly one pip install in Colab, ran {calls}'
  command = calls[0][0][0]
  assert command[:4] == [sys.executable, '-m', 'pip', 'install'], command
  assert any(arg.startswith('snjax') and 'github.com/snjax/snjax' in arg for arg in command), command


@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids)
def test_notebook_uses_public_api_only(path: pathlib.Path):
  """snjax is used through the names it exports: no private names, no submodule imports."""
  public = set(snjax.__all__) | {'__version__'}
  source = '\n'.join(_code_cells(_read(path)))
  # Notebook-only syntax (magics, shell escapes) is not used, so every code cell is plain Python.
  tree = ast.parse(source)
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split('.')[0] == 'snjax':
      assert node.module == 'snjax', f'{path.name}: imports the submodule {node.module}; use the public API'
      private = [a.name for a in node.names if a.name not in public]
      assert not private, f'{path.name}: imports {private}, not in snjax.__all__'
    if isinstance(node, ast.Import):
      for alias in node.names:
        assert alias.name == 'snjax' or not alias.name.startswith('snjax.'), (
          f'{path.name}: imports the submodule {alias.name}; use the public API'
        )
  used = {
    node.attr
    for node in ast.walk(tree)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == 'snjax'
  }
  assert not used - public, f'{path.name}: uses {sorted(used - public)}, not in snjax.__all__'
  assert 'import snjax' in source
