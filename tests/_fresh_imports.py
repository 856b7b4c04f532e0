"""What importing snjax loads in a fresh Python process: one process per question, shared by the tests asking it.

Import tests need a process of their own (this one has imported everything already). :func:`with_orbax` and
:func:`without_orbax` each start one, once per pytest worker (cached), and return what it saw, so that the tests of
the import structure (the library never imports the application, Orbax only for checkpoints, an error naming the
extra without Orbax) cost two interpreter starts, not one each.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WITH_ORBAX = """
import json, sys
seen = lambda *prefixes: sorted(m for m in sys.modules if m.split('.')[0] in prefixes or m.startswith(prefixes))
import snjax, snjax.gan, snjax.lipschitz
out = {'core': seen('snjax.app', 'orbax')}
import snjax.linen, snjax.nnx, snjax.gan.checkpoint
out['library'] = seen('snjax.app')
out['checkpoint_loads_orbax'] = 'orbax.checkpoint' in sys.modules
print('RESULT' + json.dumps(out))
"""

_WITHOUT_ORBAX = """
import json, sys
sys.modules['orbax'] = None
sys.modules['orbax.checkpoint'] = None
import snjax
snjax.gan.gan_trainer, snjax.spectral_projection, snjax.lipschitz.conv_norm_bound
out = {'orbax_loaded': [m for m in sys.modules if m.startswith('orbax') and sys.modules[m] is not None]}
try:
  import snjax.gan.checkpoint
  out['error'] = None
except ImportError as e:
  out['error'], out['cause'] = str(e), type(e.__cause__).__name__
print('RESULT' + json.dumps(out))
"""


def _run(code: str) -> dict:
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-c', code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (line,) = [x for x in proc.stdout.splitlines() if x.startswith('RESULT')]
  return json.loads(line[len('RESULT') :])


@functools.cache
def with_orbax() -> dict:
  """With Orbax installed: ``core``, the ``snjax.app`` and ``orbax`` modules loaded by ``import snjax, snjax.gan,
  snjax.lipschitz``; ``library``, the ``snjax.app`` modules loaded once ``snjax.linen``, ``snjax.nnx`` and
  ``snjax.gan.checkpoint`` are imported too; ``checkpoint_loads_orbax``."""
  return _run(_WITH_ORBAX)


@functools.cache
def without_orbax() -> dict:
  """With Orbax unimportable: ``orbax_loaded`` (after ``import snjax`` and using snjax.gan and snjax.lipschitz),
  ``error`` (the message of importing ``snjax.gan.checkpoint``, or None) and ``cause`` (its chained exception)."""
  return _run(_WITHOUT_ORBAX)
