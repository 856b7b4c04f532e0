"""Sphinx configuration: MyST pages, myst-nb notebooks from their stored outputs, autodoc with Google docstrings.

Built offline with warnings as errors (see README)::

  sphinx-build -W --keep-going -b html docs docs/_build/html

Nothing is fetched at build time (no intersphinx); the notebooks are not executed (their stored full-size outputs
are rendered); the result tables are rendered from docs/results/*.json by docs/_ext/results.py.
"""

from __future__ import annotations

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS / '_ext'))

import snjax  # noqa: E402

project = 'snjax'
author = 'The snjax authors'
copyright = '2026, The snjax authors'  # noqa: A001
release = snjax.__version__
version = release

extensions = [
  'sphinx.ext.autodoc',
  'sphinx.ext.autosummary',
  'sphinx.ext.napoleon',
  'sphinx.ext.mathjax',
  'myst_nb',
  'results',
]

exclude_patterns = ['_build', 'README.md', 'results/README.md', '**.ipynb_checkpoints', 'Thumbs.db', '.DS_Store']
source_suffix = {'.md': 'myst-nb', '.ipynb': 'myst-nb'}
root_doc = 'index'

# MyST and notebooks: render the stored outputs, never execute.
myst_enable_extensions = ['colon_fence', 'dollarmath', 'deflist']
myst_heading_anchors = 3
nb_execution_mode = 'off'
nb_merge_streams = True

# autodoc / napoleon: Google docstrings, hints in the signature, members in source order.
autodoc_default_options = {'member-order': 'bysource'}
autodoc_typehints = 'signature'
autodoc_typehints_format = 'short'
autodoc_preserve_defaults = True
autodoc_mock_imports: list[str] = []
# Signatures show the option aliases by name (their meaning is in each Args entry), not their expanded unions.
_ALIASES = ('PyTree', 'SNState', 'LayoutOption', 'LayoutSpec', 'SelectionOption', 'Selector', 'ConvOption', 'Padding')
autodoc_type_aliases = {name: name for name in _ALIASES}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = True

# A reference to a snjax name that does not exist is an error; references into other libraries (not fetched: no
# intersphinx) are left as plain text.
nitpicky = True
nitpick_ignore_regex = [
  (r'py:.*', r'(jax|jaxlib|flax|optax|numpy|np|jnp|chex|orbax|nn|nnx|typing|typing_extensions|collections)(\..*)?'),
  (r'py:.*', r'(Array|ArrayLike|PyTree|Dtype|DTypeLike|PRNGKey|Shape|Initializer|PaddingLike|PrecisionLike)'),
  (r'py:.*', r'(Any|Callable|Mapping|Sequence|Iterable|Iterator|NamedTuple|Literal|Union|Optional|Self)'),
  (r'py:.*', r'(int|float|str|bool|dict|list|tuple|object|type|None|bytes|Exception|ValueError)'),
  (r'py:.*', r'(pathlib|os|re|enum|dataclasses)(\..*)?'),
  # Private modules and the type aliases of signatures: documented in words where they matter, not as API.
  (r'py:.*', r'snjax\.(.*\.)?_.*'),
  (r'py:.*', r'(SNState|SNOptions|Rules|LayoutOption|LayoutSpec|ResolvedLayout|SelectionOption|Selector|ConvOption)'),
  (r'py:.*', r'(Padding|ApplyFn|LatentSampler|Operator|PyTree|TypeAliasForwardRef)'),
]

html_theme = 'sphinx_book_theme'
html_title = f'snjax {release}'
html_static_path = ['_static']
html_css_files = ['custom.css']
html_theme_options = {
  'repository_url': 'https://github.com/snjax/snjax',
  'repository_branch': 'main',
  'path_to_docs': 'docs',
  'use_repository_button': True,
  'use_source_button': False,
  'use_download_button': True,
  'show_toc_level': 2,
  'navigation_with_keys': False,
}
html_last_updated_fmt = None
