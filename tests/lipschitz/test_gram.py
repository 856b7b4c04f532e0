"""snjax.lipschitz Gram iteration (gram_iteration_bound, matrix_norm_bound), against numpy's float64 SVD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snjax


def test_gram_iteration_on_matrices():
  rng = np.random.default_rng(0)
  m = rng.standard_normal((5, 7, 4)) + 1j * rng.standard_normal((5, 7, 4))
  sv = np.linalg.norm(m, 2, axis=(-2, -1))
  previous = np.full(5, np.inf)
  for t in range(0, 8):
    b = np.asarray(snjax.lipschitz.gram_iteration_bound(jnp.asarray(m, jnp.complex64), t))
    assert np.all(b >= sv * (1 - 1e-5))
    assert np.all(b <= previous * (1 + 1e-5))  # monotone: each iteration tightens
    previous = b
  np.testing.assert_allclose(previous, sv, rtol=1e-3)
  # t = 0 is the Frobenius norm; a zero matrix gives 0 and a finite gradient.
  np.testing.assert_allclose(
    snjax.lipschitz.gram_iteration_bound(jnp.asarray(m.real), 0), np.linalg.norm(m.real, axis=(-2, -1)), rtol=1e-5
  )
  assert float(snjax.lipschitz.gram_iteration_bound(jnp.zeros((3, 3)), 5)) == 0.0
  g = jax.grad(lambda w: snjax.lipschitz.gram_iteration_bound(w, 5))(jnp.zeros((3, 3)))
  assert np.all(np.isfinite(g))
  w = jnp.asarray(rng.standard_normal((6, 4)), jnp.float32)
  assert float(snjax.lipschitz.matrix_norm_bound(w)) >= float(np.linalg.norm(np.asarray(w, np.float64), 2))


def test_matrix_norm_bound_on_a_batch_and_its_options():
  # Leading axes are a batch; each bound is above its float64 norm and, after 10 Gram iterations on 8 x 5 Gaussian
  # matrices (excess at most 5^(1/2^11) - 1 < 8e-4), within 1e-3 of it.
  rng = np.random.default_rng(1)
  m = rng.standard_normal((3, 8, 5))
  truth = np.linalg.norm(m, 2, axis=(-2, -1))
  b = np.asarray(snjax.lipschitz.matrix_norm_bound(jnp.asarray(m, jnp.float32)))
  assert b.shape == (3,)
  assert np.all(truth <= b) and np.all(b <= truth * (1 + 1e-3))
  with pytest.raises(ValueError, match='matrix_norm_bound: n_iterations must be an int >= 0'):
    snjax.lipschitz.matrix_norm_bound(jnp.eye(3), -1)
  with pytest.raises(ValueError, match='gram_iteration_bound: n_iterations must be an int >= 0'):
    snjax.lipschitz.gram_iteration_bound(jnp.eye(3), 1.5)
