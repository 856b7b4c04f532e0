"""The application sits on top of the library: the library never imports it, and it uses only public names."""

import ast
from pathlib import Path

import snjax.app
from tests import _fresh_imports

APP = Path(snjax.app.__file__).parent
REPO = APP.parent.parent


def test_the_library_does_not_import_the_app():
  assert _fresh_imports.with_orbax()['library'] == []  # a fresh process: tests/_fresh_imports.py


def _private(dotted: str) -> bool:
  return any(part.startswith('_') for part in dotted.split('.'))


def _allowed(module: str, name: str) -> bool:
  """The public names of private modules the application may use: the option checks every part of snjax shares,
  and the test that tells whether a train step may run inside a loop (wherever snjax.gan keeps it)."""
  if module == 'snjax._options':
    return name in ('check_int', 'check_float')
  return module.startswith('snjax.gan._') and name.lstrip('_') == 'keep_out_of_loops'


def _library_names():
  """``(file, module, name)`` for every library name the application's modules import or read."""
  for path in sorted(APP.glob('*.py')):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'snjax':
        if not node.module.startswith('snjax.app'):
          yield from ((path.name, node.module, a.name) for a in node.names)
      elif isinstance(node, ast.Import):
        yield from ((path.name, a.name, '') for a in node.names if a.name.split('.')[0] == 'snjax')
      elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ('snjax', 'gan'):
        yield path.name, {'snjax': 'snjax', 'gan': 'snjax.gan'}[node.value.id], node.attr


def test_the_app_uses_only_the_public_api():
  names = list(_library_names())
  assert ('chunks.py', 'snjax', 'gan') in names  # the walk sees the imports
  private = [(f, m, n) for f, m, n in names if (_private(m) or n.startswith('_')) and not _allowed(m, n)]
  assert private == []
  loops = [(f, m) for f, m, n in names if n.lstrip('_') == 'keep_out_of_loops']
  assert len(loops) == 1 and loops[0][0] == 'chunks.py', loops
