"""The package surface (snjax/__init__.py): what `import snjax` loads, what it exports, names that moved."""

import os
import pathlib
import subprocess
import sys

import pytest

import snjax

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env():
  return {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in [str(ROOT), os.environ.get('PYTHONPATH', '')] if p)}


def test_import_snjax_imports_no_application_module_and_no_orbax():
  code = (
    'import sys, snjax, snjax.gan, snjax.lipschitz; '
    'print(sorted(m for m in sys.modules if m.startswith(("snjax.app", "orbax"))))'
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, env=_env())
  assert out.stdout.strip() == '[]', out.stdout


def test_public_names_are_exported_and_documented():
  for name in snjax.__all__:
    obj = getattr(snjax, name)
    assert obj.__doc__, f'snjax.{name} has no docstring'
  for namespace in (snjax.gan, snjax.lipschitz):
    for name in namespace.__all__:
      assert getattr(namespace, name).__doc__ or name.isupper(), f'{namespace.__name__}.{name} has no docstring'


def test_moved_names_warn_and_resolve_to_their_new_home():
  with pytest.warns(DeprecationWarning, match=r'snjax\.gan_trainer has moved to snjax\.gan\.gan_trainer'):
    assert snjax.gan_trainer is snjax.gan.gan_trainer
  with pytest.warns(DeprecationWarning, match=r'snjax\.lipschitz\.conv_norm_bound'):
    assert snjax.conv_norm_bound is snjax.lipschitz.conv_norm_bound
  with pytest.raises(AttributeError, match='no attribute'):
    snjax.not_a_name  # noqa: B018
