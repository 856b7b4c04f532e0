"""Shared test settings: XLA's cheap compile mode and one compilation cache per test session; hypothesis without
deadlines (jit compile times vary on shared CPUs) and with the same examples on every run; the same random stream
on every supported jax."""

import os
import shutil
import subprocess
import sys
import tempfile

# Compiling, not running, is most of the suite's time: its arrays are small, its programs many. Three settings cut
# XLA:CPU's compile time three- to sixfold (measured on random draws, inits and sn_apply; the suite's time by half)
# without changing what is compiled: jax_disable_most_optimizations (LLVM at -O0, no expensive LLVM passes),
# XLA:CPU's elemental emitters for fusions instead of its newer fusion emitters (--xla_cpu_use_fusion_emitters=false),
# and LLVM code generation in one piece instead of split over a thread pool, whose start costs more than it saves on
# programs this small and on 2 cores (--xla_cpu_parallel_codegen_split_count=1: a fifth off the compile time). Every
# HLO pass that decides fusions, layouts and copies still runs, so the tests that read compiled HLO see what users
# get. They are set in the environment before any backend starts, so that the pytest-xdist workers and every
# process a test launches (CLI runs, 8-device scenarios, notebook kernels) compile the same way. An XLA flag that
# this jaxlib does not know would abort every process, so the flags are tried in a subprocess first (once, by the
# controller; the workers inherit the result). SNJAX_TEST_OPTIMIZE=1 runs the suite with XLA's defaults instead.
_FAST_XLA_FLAGS = ('--xla_cpu_use_fusion_emitters=false', '--xla_cpu_parallel_codegen_split_count=1')
_CHEAP = os.environ.get('SNJAX_TEST_OPTIMIZE') != '1'


def _known(flags: list[str]) -> bool:
  """Whether a process starts a JAX backend with ``flags`` added to ``XLA_FLAGS``."""
  env = {**os.environ, 'XLA_FLAGS': ' '.join(f for f in (os.environ.get('XLA_FLAGS', ''), *flags) if f)}
  probe = subprocess.run([sys.executable, '-c', 'import jax; jax.devices()'], env=env, capture_output=True)
  return probe.returncode == 0


if _CHEAP:
  os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
  if 'SNJAX_TEST_XLA_FLAGS_CHECKED' not in os.environ:
    os.environ['SNJAX_TEST_XLA_FLAGS_CHECKED'] = '1'
    known = list(_FAST_XLA_FLAGS) if _known(list(_FAST_XLA_FLAGS)) else [f for f in _FAST_XLA_FLAGS if _known([f])]
    os.environ['XLA_FLAGS'] = ' '.join(f for f in (os.environ.get('XLA_FLAGS', ''), *known) if f)

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tests._compat import JAX_VERSION  # noqa: E402

jax.config.update('jax_disable_most_optimizations', _CHEAP)  # also where a plugin imported jax before this file

# jax < 0.5 draws other numbers from the same key (jax_threefry_partitionable became the default in 0.5.0). The
# tests' random inputs are those of the current stream on every supported jax, in subprocesses (the CLI, notebook
# kernels) too: the environment variable reaches them, the config update this process.
if JAX_VERSION < (0, 5, 0):
  os.environ['JAX_THREEFRY_PARTITIONABLE'] = 'true'
  jax.config.update('jax_threefry_partitionable', True)

# Hypothesis: no deadlines (a first call compiles, seconds on a loaded CPU), and the same examples on every run
# (derandomize, no example database): the outcome of a run depends on the code, never on the draw, so CI cannot
# fail by chance on a rare example that the previous run did not try. To hunt for counterexamples, draw new ones:
# SNJAX_HYPOTHESIS_RANDOM=1 SNJAX_HYPOTHESIS_EXAMPLES=500 (and pytest --hypothesis-seed=N to repeat a draw).
settings.register_profile(
  'snjax',
  deadline=None,
  max_examples=int(os.environ.get('SNJAX_HYPOTHESIS_EXAMPLES', '25')),
  derandomize=os.environ.get('SNJAX_HYPOTHESIS_RANDOM') != '1',
  database=None,
  suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile('snjax')


# One persistent compilation cache per test session, in a temporary folder: the pytest-xdist workers and every
# process a test launches share it (the environment reaches them), so a program that several tests or processes
# compile (the same train step in a launched process and in its resumed run, the same jitted function in both
# workers) compiles once. A fresh session starts from an empty cache: results never depend on an earlier run.
# A launched process caches every program (its tiny ones too: a process that starts again compiles them again); the
# test processes only those that take 0.1 s or more to compile (the many small programs of the unit tests, each
# compiled once, would cost more to write than they could save).
_CACHE_ENV = 'SNJAX_TEST_JAX_CACHE'
_WORKER_MIN_COMPILE_SECONDS = 0.1


def pytest_configure(config):
  if _CACHE_ENV not in os.environ:  # the controller (or a run without xdist); workers inherit its folder
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix='snjax-test-jax-cache-')
    config._snjax_cache_owner = True
  os.environ.update(
    JAX_COMPILATION_CACHE_DIR=os.environ[_CACHE_ENV],
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
  )
  jax.config.update('jax_compilation_cache_dir', os.environ[_CACHE_ENV])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', _WORKER_MIN_COMPILE_SECONDS)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


# A pytest-xdist worker has sent every report and its "finished" event to the controller before the unconfigure
# hooks run; what it would do after that only frees the memory of a process about to exit: pytest's final garbage
# collection over the heap of every traced program and hypothesis draw and, at exit, jax's clearing of
# thousands of compiled executables. Measured on the whole suite, 2 cores: 3 s and 8 s for the two workers, while the
# controller waits for them. So a worker ends here, its output flushed; the controller (and a run without xdist)
# ends as usual, and removes the compilation cache.
@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
  if hasattr(config, 'workerinput'):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
  if getattr(config, '_snjax_cache_owner', False):
    shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)


# The modules whose tests launch processes or notebook kernels take a minute or more each: they run first, so that
# pytest-xdist spreads them over its workers and the many short tests fill in behind them (a long test that starts
# last leaves the other worker idle). Within a module the order is kept (its module-scoped fixtures are made once).
_LONG_FIRST = (
  'tests/app/test_distributed.py',
  'tests/test_notebooks.py',
  'tests/app/test_run.py',
  'tests/test_packaging.py',
  'tests/gan/test_checkpoint.py',
  'tests/gan/test_multiprocess.py',
  'tests/gan/test_sharding.py',
  'tests/app/test_chunks.py',
  'tests/test_docs.py',
)


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(_LONG_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split('::')[0], len(rank)))
