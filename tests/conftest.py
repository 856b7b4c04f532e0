"""Shared test settings: hypothesis without deadlines (jit compile times vary on shared CPUs) and with the same
examples on every run; the same random stream on every supported jax."""

import os

import jax
from hypothesis import HealthCheck, settings

from tests._compat import JAX_VERSION

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
