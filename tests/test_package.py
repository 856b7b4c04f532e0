"""The package surface (snjax/__init__.py): what `import snjax` loads, what it exports, names that moved."""

import pathlib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import snjax
from tests import _fresh_imports

try:
  import tomllib
except ModuleNotFoundError:  # Python 3.10
  import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_snjax_imports_no_application_module_and_no_orbax():
  assert _fresh_imports.with_orbax()['core'] == []  # a fresh process: tests/_fresh_imports.py


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


def _lower_bound(requirement):
  bounds = [spec.version for spec in requirement.specifier if spec.operator == '>=']
  return Version(bounds[0]) if len(bounds) == 1 else None


def test_lowest_constraints_pin_exactly_the_lower_bounds_of_pyproject():
  """ci/lowest-constraints.txt, from which CI installs and tests the oldest supported versions, pins every
  dependency of the library and of the train extra at exactly its lower bound in pyproject.toml (and any other
  package pyproject names, at its bound): a bound that the CI does not test cannot exist."""
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
  pins = {}
  for line in (ROOT / 'ci' / 'lowest-constraints.txt').read_text().splitlines():
    line = line.split('#')[0].strip()
    if line:
      name, _, version = line.partition('==')
      assert version, f'ci/lowest-constraints.txt: {line!r} is not an exact pin name==version'
      pins[canonicalize_name(name)] = Version(version)
  extras = project['optional-dependencies']
  named = {}
  for text in project['dependencies'] + [r for group in extras.values() for r in group]:
    requirement = Requirement(text)
    if requirement.name != 'snjax':
      named[canonicalize_name(requirement.name)] = requirement
  for text in project['dependencies'] + extras['train']:
    requirement = Requirement(text)
    assert _lower_bound(requirement) is not None, f'pyproject.toml: {text!r} has no single lower bound (>=)'
    assert canonicalize_name(requirement.name) in pins, f'ci/lowest-constraints.txt does not pin {text!r}'
  for name, version in pins.items():
    if name in named:
      bound = _lower_bound(named[name])
      assert bound == version, f'ci/lowest-constraints.txt pins {name}=={version}; pyproject.toml: {named[name]}'
