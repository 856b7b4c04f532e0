"""The documentation is true to the code: its examples run, its API reference is complete, its pages are in sync.

* Every ```python block of README.md and of the docs' Markdown pages runs. The setup: the blocks of one page run in
  order in one fresh namespace (a page reads as one session, as in a doctest), in a temporary working directory,
  on the default (CPU) device. A block preceded by the line ``<!-- skip-test -->`` is illustrative only and is not
  run; the marker is rare, and the test lists where it is used.
* Every public name of snjax, snjax.linen, snjax.nnx, snjax.lipschitz, snjax.gan and snjax.gan.checkpoint is in the
  API reference (an ``auto*`` directive in docs/api/), and has a Google docstring: Args for a function that takes
  arguments, Returns for one that returns a value.
* The executed notebooks the docs render (docs/notebooks/) have the cells of notebooks/, so no page drifts from its
  notebook; every result file the docs render records its command, date, machine and data.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import pathlib
import re

import nbformat
import pytest

import snjax
import snjax.gan
import snjax.gan.checkpoint
import snjax.linen
import snjax.lipschitz
import snjax.nnx

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
SKIP_MARKER = '<!-- skip-test -->'
BLOCK = re.compile(r'^```python[^\n]*\n(.*?)^```\s*$', re.S | re.M)
PAGES = [ROOT / 'README.md', *sorted(p for p in DOCS.rglob('*.md') if '_build' not in p.parts)]
README_MAX_BYTES = 8_500
PUBLIC_MODULES = [snjax, snjax.linen, snjax.nnx, snjax.lipschitz, snjax.gan, snjax.gan.checkpoint]


def code_blocks(path: pathlib.Path) -> list[tuple[int, str, bool]]:
  """``(line, code, skipped)`` for each ```python block of a Markdown file."""
  text = path.read_text()
  blocks = []
  for match in BLOCK.finditer(text):
    before = text[: match.start()].rstrip('\n').rsplit('\n', 1)[-1].strip()
    blocks.append((text.count('\n', 0, match.start()) + 1, match.group(1), before == SKIP_MARKER))
  return blocks


def _page_id(path: pathlib.Path) -> str:
  return path.relative_to(ROOT).as_posix()


PAGES_WITH_CODE = [p for p in PAGES if code_blocks(p)]


@pytest.mark.parametrize('page', PAGES_WITH_CODE, ids=[_page_id(p) for p in PAGES_WITH_CODE])
def test_page_code_runs(page: pathlib.Path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  namespace: dict = {'__name__': f'docs:{_page_id(page)}'}
  ran = 0
  for line, code, skipped in code_blocks(page):
    if skipped:
      continue
    try:
      exec(compile(code, f'{_page_id(page)}:{line}', 'exec'), namespace)
    except Exception as e:
      raise AssertionError(f'{_page_id(page)}: the python block at line {line} raised {e!r}') from e
    ran += 1
  assert ran, f'{_page_id(page)}: every python block is marked {SKIP_MARKER}'


def test_skip_markers_are_rare():
  skipped = [(_page_id(p), line) for p in PAGES for line, _, skip in code_blocks(p) if skip]
  total = sum(len(code_blocks(p)) for p in PAGES)
  assert len(skipped) <= max(2, total // 10), f'too many python blocks are not run: {skipped}'


def test_readme_is_short():
  size = (ROOT / 'README.md').stat().st_size
  assert size <= README_MAX_BYTES, f'README.md is {size} bytes; keep it under {README_MAX_BYTES} (details go in docs/)'


def _public_objects(module) -> dict[str, object]:
  names = getattr(module, '__all__', None)
  if names is None:
    names = [
      n for n, v in vars(module).items() if not n.startswith('_') and getattr(v, '__module__', '') == module.__name__
    ]
  return {f'{module.__name__}.{n}': getattr(module, n) for n in names if not inspect.ismodule(getattr(module, n))}


def _documented() -> set[str]:
  """The fully qualified names the API pages document with an ``auto*`` directive."""
  names = set()
  for page in sorted((DOCS / 'api').glob('*.md')):
    current = None
    for line in page.read_text().splitlines():
      if m := re.match(r'\s*\.\. currentmodule:: (\S+)', line):
        current = m.group(1)
      elif m := re.match(r'\s*\.\. (?:auto(?:function|class|data|exception|attribute)|py:data):: (\S+)', line):
        name = m.group(1)
        names.add(name if name.startswith('snjax') else f'{current}.{name}')
  return names


def test_api_reference_documents_every_public_name():
  documented = {}
  for name in _documented():
    module, _, attr = name.rpartition('.')
    obj = getattr(__import__(module, fromlist=[attr]), attr, None)
    assert obj is not None, f'docs/api documents {name}, which does not exist'
    documented[id(obj)] = name
  missing = [
    name for module in PUBLIC_MODULES for name, obj in _public_objects(module).items() if id(obj) not in documented
  ]
  assert not missing, f'public names missing from docs/api/*.md: {missing}'


def _callables() -> list[tuple[str, object]]:
  seen, out = set(), []
  for module in PUBLIC_MODULES:
    for name, obj in _public_objects(module).items():
      if id(obj) in seen or not callable(obj):
        continue
      seen.add(id(obj))
      out.append((name, obj))
  return out


@pytest.mark.parametrize('name,obj', _callables(), ids=[n for n, _ in _callables()])
def test_public_docstring_is_complete(name, obj):
  doc = inspect.getdoc(obj)
  assert doc and len(doc.split()) >= 5, f'{name} has no docstring'
  if inspect.isclass(obj):
    return  # a class documents its fields under Attributes, or its constructor's arguments under Args
  params = [
    p for p in inspect.signature(obj).parameters.values() if not (p.kind is p.VAR_KEYWORD and 'deprecated' in p.name)
  ]
  if params:
    assert '\nArgs:\n' in f'\n{doc}', f'{name}: the docstring has no Args section'
  returns = inspect.signature(obj).return_annotation
  if returns not in (None, 'None', inspect.Signature.empty):
    assert '\nReturns:\n' in f'\n{doc}', f'{name}: the docstring has no Returns section'


NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.ipynb'))


@pytest.mark.parametrize('source', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_rendered_notebook_has_the_sources_cells(source: pathlib.Path):
  executed = DOCS / 'notebooks' / source.name
  assert executed.exists(), f'{executed} is missing: run python docs/notebooks/execute.py {source.stem}'
  a, b = nbformat.read(source, as_version=4), nbformat.read(executed, as_version=4)
  cells_a = [(c.cell_type, c.source) for c in a.cells]
  cells_b = [(c.cell_type, c.source) for c in b.cells]
  assert cells_a == cells_b, f'{executed} is stale: rerun python docs/notebooks/execute.py {source.stem}'
  code = [c for c in b.cells if c.cell_type == 'code']
  assert all(c.execution_count is not None for c in code), f'{executed}: not every cell was executed'
  errors = [o for c in code for o in c.outputs if o.output_type == 'error']
  assert not errors, f'{executed}: a cell raised'


RESULT_FILES = sorted(p for p in (DOCS / 'results').rglob('*.json') if 'literature' not in p.parts)


@pytest.mark.parametrize('path', RESULT_FILES, ids=[p.relative_to(DOCS).as_posix() for p in RESULT_FILES])
def test_result_file_records_its_run(path: pathlib.Path):
  record = json.loads(path.read_text())
  for key in ('command', 'date', 'wall_seconds', 'load_average', 'machine', 'data'):
    assert key in record, f'{path}: no {key!r}; write result files with docs/results/record.py'
  assert record['machine'].get('cpu') and record['machine'].get('versions', {}).get('jax'), path


def test_results_directives_name_existing_files():
  for page in PAGES:
    for pattern in re.findall(r'^```\{results-table\} (\S+)', page.read_text(), re.M):
      assert list((DOCS / 'results').glob(pattern)), f'{_page_id(page)}: no docs/results/{pattern}'


def test_readme_results_come_from_the_result_files():
  spec = importlib.util.spec_from_file_location('headline', DOCS / 'results' / 'headline.py')
  headline = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(headline)
  _, block, _ = headline._split((ROOT / 'README.md').read_text())
  assert block == headline.render(), 'README.md results are stale: run python docs/results/headline.py'
  assert block.count('\n|') >= 3, 'the README results table has no rows'
