"""Power iteration for the largest singular value of one kernel.

Spectral normalization (Miyato et al. 2018, "Spectral Normalization for
Generative Adversarial Networks", https://arxiv.org/abs/1802.05957) divides a
weight by its spectral norm sigma(W), the largest singular value of W read as a
(fan_in x fan_out) matrix M. sigma is estimated by power iteration, carrying a
unit vector u (fan-out side) from step to step:

  v = M u / ||M u||,    w = M^T v,    sigma = ||w||,    u <- w / sigma.

Two matrix-vector products per step and no more: sigma = ||M^T v|| with a unit
v is a *lower bound* on the true norm (||M^T v|| <= ||M^T|| ||v||), so a layer
divided by it is never over-normalized. u and v are constants for
differentiation (``stop_gradient``); sigma is differentiated through the last
product M^T v, so d sigma / d M = v u^T, the paper's gradient.

No transposed copy of the weight is materialized: a kernel whose input axes
and output axes are each contiguous (every dense and conv kernel of Flax,
Haiku, torch and Equinox) is contracted as a matrix through a free reshape
(XLA would otherwise copy a transposed conv kernel for each product), any
other layout with ``lax.dot_general`` on its own axes.
"""

from __future__ import annotations

import functools
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from snjax.layout import ResolvedLayout


class PowerIterationResult(NamedTuple):
  """What one call of :func:`power_iteration` returns.

  Attributes:
    sigma: the spectral-norm estimate, floored by eps, one per batch index
      (shape ``batch_shape``). Differentiable with respect to the kernel.
    u: the next unit vector on the fan-out side, ``batch_shape + (fan_out,)``,
      constant for differentiation.
  """

  sigma: jax.Array
  u: jax.Array


def compute_dtype(dtype) -> jnp.dtype:
  """float32 for half-precision weights, the weight's dtype when wider."""
  return jnp.promote_types(dtype, jnp.float32)


def _shapes(kernel_shape, layout: ResolvedLayout):
  batch_shape = tuple(kernel_shape[a] for a in layout.batch_axes)
  in_shape = tuple(kernel_shape[a] for a in layout.in_axes)
  out_shape = tuple(kernel_shape[a] for a in layout.out_axes)
  return batch_shape, in_shape, out_shape


def u_shape(kernel_shape, layout: ResolvedLayout) -> tuple[int, ...]:
  """The shape of the u vector(s) of a kernel: ``batch_shape + (fan_out,)``."""
  batch_shape, _, out_shape = _shapes(kernel_shape, layout)
  return batch_shape + (int(np.prod(out_shape, dtype=np.int64)),)


class _View(NamedTuple):
  """How the kernel is contracted: ``'io'``/``'oi'`` on a free reshape to a
  (batch..., fan_in, fan_out) / (batch..., fan_out, fan_in) matrix, or ``'nd'``
  on the kernel's own axes (when its input and output axes interleave)."""

  kind: str
  layout: ResolvedLayout
  nb: int


def _view(kernel, layout: ResolvedLayout):
  """Returns ``(operand, view)``: the kernel as a matrix when that is a free reshape.

  XLA lowers a matrix-vector product on a rank-2 operand to a plain gemv in
  either orientation, but canonicalizes a contraction over several axes of a
  higher-rank kernel by materializing a transposed copy of it (a full extra
  pass over every conv kernel). A conv kernel's input axes are contiguous, as
  are its output axes, so the reshape to a matrix is a bitcast.
  """
  nb = len(layout.batch_axes)
  ins, outs = layout.in_axes, layout.out_axes

  def contiguous(axes):
    return axes == tuple(range(axes[0], axes[0] + len(axes)))

  if layout.batch_axes == tuple(range(nb)) and contiguous(ins) and contiguous(outs):
    batch_shape = kernel.shape[:nb]
    fan_in = int(np.prod([kernel.shape[a] for a in ins], dtype=np.int64))
    fan_out = int(np.prod([kernel.shape[a] for a in outs], dtype=np.int64))
    if ins[0] < outs[0]:
      return kernel.reshape(batch_shape + (fan_in, fan_out)), _View('io', layout, nb)
    return kernel.reshape(batch_shape + (fan_out, fan_in)), _View('oi', layout, nb)
  return kernel, _View('nd', layout, nb)


def _vector_shape(kernel_shape, view: _View, side: str):
  """The shape vectors take in this view: flat for a matrix view, the kernel's
  own input / output axes for ``'nd'``."""
  batch_shape, in_shape, out_shape = _shapes(kernel_shape, view.layout)
  if view.kind != 'nd':
    return batch_shape + (int(np.prod(in_shape if side == 'in' else out_shape, dtype=np.int64)),)
  return batch_shape + (in_shape if side == 'in' else out_shape)


def _contract(operand, x, view: _View, side: str):
  """M u (``side='out'``: x lives on the fan-out side) or M^T v (``side='in'``)."""
  nb = view.nb
  batch = (tuple(range(nb)), tuple(range(nb)))
  if view.kind == 'nd':
    axes = view.layout.out_axes if side == 'out' else view.layout.in_axes
    x_axes = tuple(range(nb, nb + len(axes)))
    return lax.dot_general(operand, x, ((axes, x_axes), (view.layout.batch_axes, tuple(range(nb)))))
  # The contracted matrix axis: the last one when x lives on that side, else the first.
  last = (view.kind == 'io') == (side == 'out')
  if last:
    return lax.dot_general(operand, x, (((nb + 1,), (nb,)), batch))
  return lax.dot_general(x, operand, (((nb,), (nb,)), batch))


def _matvec(operand, u, view: _View):
  """M u: returns the fan-in side vector(s)."""
  return _contract(operand, u, view, 'out')


def _rmatvec(operand, v, view: _View):
  """M^T v: returns the fan-out side vector(s)."""
  return _contract(operand, v, view, 'in')


def _sum_sq(x, nb: int):
  return jnp.sum(jnp.square(x), axis=tuple(range(nb, x.ndim)))


def _expand(s, nb: int, ndim: int):
  return s.reshape(s.shape + (1,) * (ndim - nb))


def fallback_u(shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """A fixed pseudo-random unit vector (per batch index) used to reseed a u
  that is zero or non-finite. A compile-time constant: the same on every call,
  host and device, so that reseeding is deterministic."""
  seed = zlib.crc32(repr(shape).encode())
  x = np.random.default_rng(seed).standard_normal(shape)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  return jnp.asarray(x, dtype)


def _reseed_if_degenerate(u):
  """Replaces a u whose norm is zero or non-finite by :func:`fallback_u`."""
  nb = u.ndim - 1
  sq = _sum_sq(u, nb)
  bad = ~(jnp.isfinite(sq) & (sq > 0))
  return jnp.where(_expand(bad, nb, u.ndim), fallback_u(u.shape, u.dtype), u)


def _normalize(x, nb: int, eps):
  norm = jnp.sqrt(_sum_sq(x, nb))
  return x / _expand(jnp.maximum(norm, eps), nb, x.ndim)


def _iterate_once(operand, u_shaped, view: _View, eps):
  """One stop-gradient power step, u -> u' (both in the view's vector shape)."""
  nb = view.nb
  v = _normalize(_matvec(operand, u_shaped, view), nb, eps)
  w = _rmatvec(operand, v, view)
  sq = _sum_sq(w, nb)
  ok = sq > eps * eps
  w_unit = w / _expand(jnp.sqrt(jnp.where(ok, sq, 1.0)), nb, w.ndim)
  # A collapsed product (zero weight) keeps the previous u instead of zeroing it.
  return jnp.where(_expand(ok, nb, w.ndim), w_unit, u_shaped), jnp.sqrt(sq)


# Jitted with its options static, so that an eager call (sn_init, an eager model.init or
# sn_apply outside jit) compiles the loop once per shape instead of retracing it each call.
@functools.partial(jax.jit, static_argnames=('layout', 'n_iterations', 'eps', 'tol', 'max_iterations'))
def power_iteration(
  kernel: jax.Array,
  u: jax.Array,
  layout: ResolvedLayout,
  *,
  n_iterations: int = 1,
  eps: float = 1e-12,
  tol: float | None = None,
  max_iterations: int = 100,
) -> PowerIterationResult:
  """Runs power iteration on one kernel and returns sigma and the next u.

  Steps 1 .. n-1 are pure iterations under ``stop_gradient`` (a
  ``lax.fori_loop`` when there are more than two); the last step computes
  ``w = M^T v`` differentiably and sigma = max(||w||, eps). If ``tol`` is
  given, the constant iterations continue in a ``lax.while_loop`` until the
  relative change of sigma is at most ``tol`` or ``max_iterations`` steps ran.

  Robustness: a u that is zero or non-finite is reseeded with a fixed
  pseudo-random unit vector; when ``M^T v`` collapses (a zero weight), u is
  kept rather than zeroed, and sigma is floored by eps, so the result stays
  finite and normalization resumes as soon as the weight is non-zero again.

  Computation is in float32 for half-precision kernels.

  Args:
    kernel: the weight, any rank, read through ``layout``.
    u: the current vector(s), shape ``batch_shape + (fan_out,)``.
    layout: the kernel's resolved layout.
    n_iterations: power steps in this call, >= 1.
    eps: floor of the vector norms and of sigma, > 0.
    tol: optional relative tolerance on sigma for iterating to convergence.
    max_iterations: cap on the steps when ``tol`` is given.

  Returns:
    A :class:`PowerIterationResult` ``(sigma, u)``.
  """
  cdtype = compute_dtype(kernel.dtype)
  batch_shape = _shapes(kernel.shape, layout)[0]
  nb = len(batch_shape)
  k, view = _view(kernel.astype(cdtype), layout)
  k_const = lax.stop_gradient(k)
  u = lax.stop_gradient(u).astype(cdtype)
  u = _reseed_if_degenerate(u).reshape(_vector_shape(kernel.shape, view, 'out'))

  n_const = n_iterations - 1
  if n_const == 1 or n_const == 2:
    for _ in range(n_const):
      u, _ = _iterate_once(k_const, u, view, eps)
  elif n_const > 2:
    u = lax.fori_loop(0, n_const, lambda _, x: _iterate_once(k_const, x, view, eps)[0], u)
  if tol is not None:

    def cond(carry):
      i, _, s, s_prev = carry
      delta = jnp.max(jnp.abs(s - s_prev) / jnp.maximum(s, eps))
      return (i < max_iterations) & (delta > tol)

    def body(carry):
      i, x, s, _ = carry
      x_next, s_next = _iterate_once(k_const, x, view, eps)
      return i + 1, x_next, s_next, s

    zeros = jnp.zeros(batch_shape, cdtype)
    first_u, first_s = _iterate_once(k_const, u, view, eps)
    _, u, _, _ = lax.while_loop(cond, body, (jnp.asarray(n_iterations, jnp.int32), first_u, first_s, zeros))

  v = lax.stop_gradient(_normalize(_matvec(k_const, u, view), nb, eps))
  w = _rmatvec(k, v, view)
  sq = _sum_sq(w, nb)
  ok = sq > eps * eps
  # sqrt only where it is safe, so that a zero weight has a zero, not NaN, gradient.
  norm = jnp.sqrt(jnp.where(ok, sq, 1.0))
  sigma = jnp.where(ok, norm, eps)
  u_next = jnp.where(_expand(ok, nb, w.ndim), w / _expand(norm, nb, w.ndim), u)
  u_next = lax.stop_gradient(u_next).reshape(batch_shape + (-1,))
  return PowerIterationResult(sigma, u_next)


def scale_kernel(kernel: jax.Array, factor: jax.Array, layout: ResolvedLayout):
  """Returns ``kernel * factor`` (factor per batch index), in the kernel's dtype.

  The product is formed in the compute dtype (float32 for half precision)
  and cast back once.
  """
  cdtype = compute_dtype(kernel.dtype)
  f = factor.astype(cdtype)
  shape = [1] * kernel.ndim
  for a in layout.batch_axes:
    shape[a] = kernel.shape[a]
  return (kernel.astype(cdtype) * f.reshape(shape)).astype(kernel.dtype)
