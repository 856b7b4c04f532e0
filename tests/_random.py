"""Random test inputs from numpy's generator: no XLA program to compile per shape, as ``jax.random`` would.

Each helper draws from its own stream, ``default_rng((seed, stream))``, apart from ``default_rng(seed)``, which the
tests use for their matrices: a start vector drawn with the matrix's seed would otherwise repeat the matrix's own
first entries.
"""

import numpy as np


def normal(seed: int, shape, stream: int) -> np.ndarray:
  """Standard normal float32 entries of ``shape``, from stream ``stream`` of ``seed`` (a numpy array)."""
  return np.random.default_rng((seed, stream)).standard_normal(shape).astype(np.float32)
