"""The operator norm of a convolution, to a tolerance: restarted Lanczos (or power iteration) on ``A^T A``.

A convolution is the linear map ``A: R^{n_1 x .. x n_d x c_in} -> R^{m_1 x ..
x m_d x c_out}``, and its norm ``||A||_2`` is its Lipschitz constant, typically
1.2x to 2.5x the spectral norm of the kernel reshaped to a matrix (Sedghi,
Gupta & Long, ICLR 2019, https://arxiv.org/abs/1805.10408). It is computed
here from products with ``A`` (the convolution) and ``A^T``
(``jax.linear_transpose`` of it), never from a matrix:

* restarted Lanczos on ``A^T A`` finds the top of its spectrum: ``m`` steps
  from a unit ``u`` span the Krylov space ``K_m = span(u, A^T A u, ..,
  (A^T A)^{m-1} u)``; the largest eigenvalue of ``A^T A`` projected on it (a
  Ritz value, never above ``||A||^2``) and its Ritz vector, which restarts the
  next ``m`` steps. On large inputs, where the top of a convolution's
  spectrum is dense, this needs far fewer products than power iteration.
* then one power step from the Ritz vector ``u``: ``v = A u / ||A u||``,
  ``sigma = ||A^T v||``. For a unit ``v``, ``||A^T v|| <= ||A||``, so sigma is
  a lower bound on the norm, converging to it, and it is differentiable in
  the kernel (``u`` and ``v`` constants): at convergence ``d sigma / dK`` is
  the gradient of the top singular value.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from snjax._conv import ConvSpec, geometry, random_unit_input
from snjax._operators import conv_operator
from snjax._options import check_float, check_int
from snjax._power import power_iteration
from snjax.lipschitz._spec import as_spec

_LANCZOS_STEPS = 32


def _power_sigma(kernel: jax.Array, u: jax.Array, spec: ConvSpec, *, tol: float | None = None, max_iterations=1):
  """``sigma = ||A^T v||``, ``v = A u / ||A u||``, after power steps from ``u`` until sigma's relative change is
  at most ``tol`` (none when ``tol`` is None); differentiable in the kernel.

  The only call into the core's power iteration.
  """
  return power_iteration(kernel, u, spec=spec, n_power_iterations=1, tol=tol, max_iterations=max_iterations).sigma


def _normal_map(kernel: jax.Array, spec: ConvSpec):
  """``x -> A^T A x`` for the convolution ``A`` of ``spec`` (the core's operator; ``A^T`` by linear_transpose)."""
  operator = conv_operator(tuple(kernel.shape), spec)
  operand = operator.operand(kernel)
  return lambda x: operator.transpose(operand, operator.forward(operand, x))


def _unit(x, eps):
  return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x))), eps)


def _lanczos_restart(matvec, u, n_steps: int, eps):
  """``n_steps`` of Lanczos on the symmetric PSD map ``matvec`` from unit ``u``.

  The Krylov basis is fully reorthogonalized, and the Ritz pair comes from the
  projected matrix ``Q (matvec Q)^T`` itself (Rayleigh-Ritz, robust to
  breakdown), so the largest Ritz value never exceeds the largest eigenvalue.
  Returns it and its unit Ritz vector.
  """
  shape, n = u.shape, u.size
  basis = jnp.zeros((n_steps, n), u.dtype).at[0].set(u.ravel())
  images = jnp.zeros((n_steps, n), u.dtype)

  def body(j, carry):
    basis, images = carry
    w = matvec(basis[j].reshape(shape)).ravel()
    images = images.at[j].set(w)
    scale = jnp.linalg.norm(w)
    # Orthogonalize against every vector so far (later rows are still zero), twice.
    w = w - basis.T @ (basis @ w)
    w = w - basis.T @ (basis @ w)
    b = jnp.linalg.norm(w)
    ok = (b > 64 * eps * scale) & (j + 1 < n_steps)
    basis = basis.at[jnp.minimum(j + 1, n_steps - 1)].set(
      jnp.where(ok, w / jnp.where(ok, b, 1.0), basis[jnp.minimum(j + 1, n_steps - 1)])
    )
    return basis, images

  basis, images = lax.fori_loop(0, n_steps, body, (basis, images))
  projected = basis @ images.T
  values, vectors = jnp.linalg.eigh(0.5 * (projected + projected.T))
  ritz = basis.T @ vectors[:, -1]
  return values[-1], _unit(ritz, eps).reshape(shape)


def conv_operator_norm(
  kernel: jax.Array,
  spec: ConvSpec | Sequence[int] | None = None,
  *,
  tol: float = 1e-6,
  max_iterations: int = 2000,
  key: jax.Array | None = None,
  method: str = 'lanczos',
  **deprecated_geometry: Any,
) -> jax.Array:
  """The operator (spectral) norm ``||A||_2`` of a 1D/2D/3D convolution, to a tolerance.

  ``A x = conv(x, kernel)`` as ``flax.linen.Conv`` (no bias) computes it on
  one input of ``spec.input_shape``, with the strides, padding, dilations and
  feature groups of ``spec``; ``A^T`` by ``jax.linear_transpose``. From a
  random start, iterations on ``A^T A`` run in a ``lax.while_loop`` until
  sigma's relative change is at most ``tol``:

  * ``method='lanczos'`` (default): explicitly restarted Lanczos (32 steps per
    restart, full reorthogonalization), a Krylov-accelerated power iteration;
  * ``method='power'``: plain power iteration, one product per step.

  Either way the result is ``sigma = ||A^T v||`` for a unit ``v = A u / ||A
  u||``: a lower bound on the norm (never above it, up to rounding), which
  converges to it (Sedghi, Gupta & Long 2019,
  https://arxiv.org/abs/1805.10408, for why this norm, not the reshaped
  kernel's, is the layer's Lipschitz constant). Computation is in float32,
  or float64 when the kernel is float64 (``jax_enable_x64``). Jittable, and
  differentiable with respect to the kernel (the converged ``u`` and ``v``
  are constants). For a certified *upper* bound see :func:`conv_norm_bound`.

  ``tol`` and ``max_iterations`` are the power / Lanczos iteration's, as
  everywhere in snjax.

  Args:
    kernel: ``(*spatial, in/groups, out)``, Flax layout.
    spec: the convolution, a :class:`snjax.ConvSpec`. (Deprecated until snjax
      0.3: the input shape, with the geometry as the keywords ``strides``,
      ``padding``, ``rhs_dilation``, ``lhs_dilation``,
      ``feature_group_count``.)
    tol: relative change of sigma (between restarts, or steps) at which to
      stop, > 0.
    max_iterations: cap on the products with ``A^T A``, >= 1.
    key: PRNG key of the random start (default: ``jax.random.key(0)``).
    method: ``'lanczos'`` or ``'power'``.
    **deprecated_geometry: the keywords of the deprecated form (a
      ``DeprecationWarning``).

  Returns:
    A scalar array: the estimate of ``||A||_2``, from below.

  Raises:
    ValueError: a kernel / spec mismatch or a bad option (the message says
      which and what was expected).
    TypeError: no spec, or geometry keywords beside a ``ConvSpec``.
  """
  where = 'conv_operator_norm'
  spec = as_spec(spec, deprecated_geometry, where)
  geo = geometry(tuple(kernel.shape), spec, where)
  tol = check_float('tol', tol, minimum=0.0, where=where)
  max_iterations = check_int('max_iterations', max_iterations, 1, where=where)
  if method not in ('lanczos', 'power'):
    raise ValueError(f"{where}: method must be 'lanczos' or 'power', got {method!r}.")
  key = jax.random.key(0) if key is None else key
  # The checked geometry as a spec (hashable, every field explicit): a static argument of the compiled iteration.
  explicit = ConvSpec(geo.input_shape, geo.strides, geo.padding, geo.rhs_dilation, geo.lhs_dilation, geo.groups)
  return _operator_norm(kernel, key, explicit, tol, max_iterations, method)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _operator_norm(kernel: jax.Array, key: jax.Array, spec: ConvSpec, tol: float, max_iterations: int, method: str):
  """:func:`conv_operator_norm` after its checks, compiled once per kernel shape, spec and options."""
  geo = geometry(tuple(kernel.shape), spec, 'conv_operator_norm')
  cdtype = jnp.promote_types(kernel.dtype, jnp.float32)
  u0 = random_unit_input(key, geo.input_shape, cdtype)
  if method == 'power':
    return _power_sigma(kernel, u0, spec, tol=tol, max_iterations=max_iterations)
  eps = float(jnp.finfo(cdtype).eps)
  normal = _normal_map(lax.stop_gradient(kernel.astype(cdtype)), spec)
  n_steps = int(min(_LANCZOS_STEPS, u0.size, max_iterations))

  def cond(carry):
    i, _, theta, theta_prev = carry
    return (i * n_steps < max_iterations) & (jnp.abs(theta - theta_prev) > 2 * tol * theta)

  def body(carry):
    i, u, theta, _ = carry
    theta_next, u_next = _lanczos_restart(normal, u, n_steps, eps)
    return i + 1, u_next, jnp.maximum(theta_next, theta), theta

  zero = jnp.zeros((), cdtype)
  _, u, _, _ = lax.while_loop(cond, body, (jnp.asarray(0), u0, zero, -jnp.ones((), cdtype)))
  return _power_sigma(kernel, u, spec)
