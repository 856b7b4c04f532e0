"""Gram iteration: a certified upper bound on the spectral norm of a matrix (or a batch of matrices).

Delattre, Barthélemy, Araujo & Allauzen, ICML 2023, "Efficient Bound of
Lipschitz Constant for Convolutional Layers by Gram Iteration",
https://arxiv.org/abs/2305.16173. With ``G_0 = M`` and ``G_{t+1} = G_t^H G_t``,

  sigma_1(M) <= ||G_t||_F^{1/2^t}    for every t,

and the bound converges to ``sigma_1(M)`` super-linearly: it equals
``(sum_i (sigma_i / sigma_1)^{2^{t+1}})^{1/2^{t+1}} sigma_1``, so its excess is
at most a factor ``rank^{1/2^{t+1}}`` (``r^{1/2^{t+1}}`` for ``r`` singular
values tied at the top) and far less when the top singular value stands out.
Each iterate is rescaled by its Frobenius norm and the scale kept in log
space, so nothing overflows. Differentiable and deterministic.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from snjax._options import check_int


def rounding_margin(dtype, dim: int, grid_size: int) -> float:
  """The factor ``1 + 8 eps (sqrt(dim) + log2 grid_size)`` that covers rounding in a bound.

  ``dim`` is the size of the matrices whose products are formed, ``grid_size``
  the number of points of an FFT (1 for none). A conservative allowance for
  the rounding of ``dim``-long dot products and of the FFT, not a formal
  floating-point proof.
  """
  eps = float(jnp.finfo(dtype).eps)
  return 1.0 + 8.0 * eps * (math.sqrt(dim) + math.log2(max(grid_size, 2)))


def _sq_abs(x):
  if jnp.iscomplexobj(x):
    return jnp.square(x.real) + jnp.square(x.imag)
  return jnp.square(x)


def _safe_frobenius(g, tiny):
  sq = jnp.sum(_sq_abs(g), axis=(-2, -1))
  ok = sq > tiny * tiny
  return jnp.where(ok, jnp.sqrt(jnp.where(ok, sq, 1.0)), tiny)


def gram_iteration_bound(matrices: jax.Array, n_iterations: int = 8) -> jax.Array:
  """An upper bound on the spectral norm of each matrix, by Gram iteration (Delattre et al., ICML 2023).

  ``G_0 = M``, ``G_{t+1} = G_t^H G_t``; returns ``||G_T||_F^{1/2^T} >=
  sigma_1(M)`` for the last two axes of ``matrices`` (leading axes are a
  batch), each iterate rescaled by its Frobenius norm (the scale kept in log
  space) so that nothing overflows. ``T = 0`` is the Frobenius norm. The
  bound never increases with ``T`` and converges to ``sigma_1(M)``
  (Delattre, Barthélemy, Araujo & Allauzen 2023,
  https://arxiv.org/abs/2305.16173). Differentiable; a zero matrix gives 0
  and a zero (finite) gradient.

  Args:
    matrices: ``(..., m, n)``, real or complex.
    n_iterations: the number of Gram iterations ``T >= 0``; the bound's excess
      over ``sigma_1`` is at most a factor ``rank^{1/2^{T+1}}`` and usually far
      less.

  Returns:
    ``(...)`` real upper bounds, with no rounding margin added (see
    :func:`matrix_norm_bound` for a certified one).

  Raises:
    ValueError: ``n_iterations`` is not an int >= 0.
  """
  n_iterations = check_int('n_iterations', n_iterations, 0, where='gram_iteration_bound')
  g = matrices
  if g.shape[-2] < g.shape[-1]:
    g = jnp.conj(jnp.swapaxes(g, -1, -2))  # G^H G then has the smaller side
  real_dtype = jnp.real(g[..., :0, :0]).dtype
  tiny = jnp.finfo(real_dtype).tiny
  log_scale = jnp.zeros(g.shape[:-2], real_dtype)
  for _ in range(n_iterations):
    r = _safe_frobenius(g, tiny)
    g = g / r[..., None, None].astype(g.dtype)
    log_scale = 2.0 * (log_scale + jnp.log(r))
    g = jnp.matmul(jnp.conj(jnp.swapaxes(g, -1, -2)), g, precision=jax.lax.Precision.HIGHEST)
  power = 0.5**n_iterations
  sq = jnp.sum(_sq_abs(g), axis=(-2, -1))
  ok = sq > 0
  # Only differentiate through logs of positive numbers, so that a zero matrix has a zero, not NaN, gradient.
  log_fro = 0.5 * jnp.log(jnp.where(ok, sq, 1.0))
  return jnp.where(ok, jnp.exp(power * (log_fro + log_scale)), 0.0)


def matrix_norm_bound(matrix: jax.Array, n_iterations: int = 10) -> jax.Array:
  """A certified upper bound on a matrix's spectral norm: Gram iteration with a rounding margin.

  ``||G_T||_F^{1/2^T} (1 + 8 eps (sqrt(max(m, n)) + 1))``, ``G`` the Gram
  iterates of :func:`gram_iteration_bound` (Delattre et al. 2023,
  https://arxiv.org/abs/2305.16173), computed in the matrix's precision
  (float32 for half-precision inputs), ``eps`` that precision's machine
  epsilon.

  Args:
    matrix: ``(..., m, n)``; leading axes are a batch.
    n_iterations: Gram iterations ``T >= 0``.

  Returns:
    ``(...)`` upper bounds on ``sigma_1``.

  Raises:
    ValueError: ``n_iterations`` is not an int >= 0.
  """
  n_iterations = check_int('n_iterations', n_iterations, 0, where='matrix_norm_bound')
  dtype = jnp.promote_types(matrix.dtype, jnp.float32)
  m = matrix.astype(dtype)
  return gram_iteration_bound(m, n_iterations) * rounding_margin(dtype, max(m.shape[-2:]), 1)
