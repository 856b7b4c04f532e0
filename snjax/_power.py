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

from snjax._layout import ResolvedLayout


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


class _Rows:
  """The vectors of several arrays as rows of a few padded matrices, reduced together.

  On XLA:CPU a reduction over more than 32 elements compiles to up to three
  kernels (the elementwise producer, a reduce-window and a reduce), and each
  scalar op on its result to one more; every distinct kernel costs tens of ms
  of compile time. Stacking the vectors of all layers (zero-padded to a common
  width) makes one reduction, and one chain of scalar ops, for all of them.
  Padding is bounded: one matrix when it holds at most 4x the elements (or
  64k), else one per power-of-two width. A single array is reduced as it is.

  Args:
    shapes: per array, ``(batch_shape, width)``: its vectors are the rows of
      ``x.reshape(prod(batch_shape), width)``.
  """

  def __init__(self, shapes):
    self.shapes = [(tuple(b), int(w)) for b, w in shapes]
    self.rows = [int(np.prod(b, dtype=np.int64)) for b, _ in self.shapes]
    widths = [w for _, w in self.shapes]
    actual = sum(r * w for r, w in zip(self.rows, widths, strict=True))
    if sum(self.rows) * max(widths) <= max(4 * actual, 1 << 16):
      keys = [0] * len(widths)
    else:
      keys = [int(np.ceil(np.log2(max(w, 1)))) for w in widths]
    self.groups = [[i for i, k in enumerate(keys) if k == key] for key in sorted(set(keys))]
    self.order = [i for g in self.groups for i in g]

  def sum_sq(self, xs):
    """The squared norm of every vector, as one vector in row order.

    Differentiable: its derivative is taken per array (``2 <x_i, dx_i>``), so
    that the backward pass never goes through the padded matrices (it would
    put their slicing into every kernel-sized gradient fusion).
    """
    if len(xs) == 1:
      return _sum_sq(xs[0], len(self.shapes[0][0])).reshape(-1)

    @jax.custom_jvp
    def sum_sq(xs):
      return self._stacked_sum_sq(xs)

    @sum_sq.defjvp
    def _(primals, tangents):
      (xs,), (dxs,) = primals, tangents
      dots = [
        2 * jnp.sum(x * dx, axis=tuple(range(len(b), x.ndim))).reshape(-1)
        for x, dx, (b, _) in zip(xs, dxs, self.shapes, strict=True)
      ]
      return sum_sq(xs), jnp.concatenate([dots[i] for i in self.order])

    return sum_sq(list(xs))

  def _stacked_sum_sq(self, xs):
    out = []
    for g in self.groups:
      mats = [xs[i].reshape(self.rows[i], -1) for i in g]
      if len(mats) > 1:
        width = max(m.shape[1] for m in mats)
        mats = [jnp.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in mats]
      out.append(jnp.sum(jnp.square(jnp.concatenate(mats) if len(mats) > 1 else mats[0]), axis=1))
    return jnp.concatenate(out) if len(out) > 1 else out[0]

  def parts(self, vec):
    """Each array's entries of a row-ordered vector, in its batch shape.

    One ``split`` rather than a slice per array: its transpose (in the
    backward pass) is one concatenate, not a pad and an add per array.
    """
    cuts = np.cumsum([self.rows[i] for i in self.order])[:-1].tolist()
    pieces = jnp.split(vec, cuts) if cuts else [vec]
    out = [None] * len(self.order)
    for i, piece in zip(self.order, pieces, strict=True):
      out[i] = piece.reshape(self.shapes[i][0])
    return out


class _Iteration:
  """Power iteration on several kernels of one compute dtype, step by step.

  Per kernel the ops are those of the paper (two mat-vecs on the kernel's
  matrix view, no transposed copy); the vector norms of all kernels are one
  reduction per step (:class:`_Rows`) and their scalar maths one op on a
  vector, so that normalizing many layers compiles few XLA kernels. A vector
  divided by a norm is multiplied by its reciprocal (what XLA emits for a
  division by a broadcast scalar anyway).
  """

  def __init__(self, kernels, us, layouts, cdtype, eps):
    self.n, self.eps = len(kernels), eps
    shapes = [_shapes(k.shape, lay) for k, lay in zip(kernels, layouts, strict=True)]
    self.batch = [b for b, _, _ in shapes]
    self.nbs = [len(b) for b in self.batch]
    prod = lambda s: int(np.prod(s, dtype=np.int64))  # noqa: E731
    self.rows_in = _Rows([(b, prod(i)) for b, i, _ in shapes])
    self.rows_out = _Rows([(b, prod(o)) for b, _, o in shapes])
    self.ops, self.views = zip(
      *[_view(k.astype(cdtype), lay) for k, lay in zip(kernels, layouts, strict=True)], strict=True
    )
    self.consts = [lax.stop_gradient(o) for o in self.ops]
    us = [lax.stop_gradient(u).astype(cdtype) for u in us]
    # A u that is zero or non-finite is reseeded with a fixed pseudo-random unit vector.
    sq = self.rows_out.sum_sq(us)
    bad = self._expand(~(jnp.isfinite(sq) & (sq > 0)), self.rows_out, us)
    self.u0 = [
      jnp.where(bad[i], fallback_u(u.shape, u.dtype), u).reshape(_vector_shape(k.shape, self.views[i], 'out'))
      for i, (u, k) in enumerate(zip(us, kernels, strict=True))
    ]

  def _expand(self, vec, rows, like):
    return [_expand(p, nb, x.ndim) for p, nb, x in zip(rows.parts(vec), self.nbs, like, strict=True)]

  def v(self, us):
    """v = M u / max(||M u||, eps), constant for differentiation."""
    ts = [_matvec(self.consts[i], us[i], self.views[i]) for i in range(self.n)]
    inv = self._expand(1.0 / jnp.maximum(jnp.sqrt(self.rows_in.sum_sq(ts)), self.eps), self.rows_in, ts)
    return [lax.stop_gradient(t * inv[i]) for i, t in enumerate(ts)]

  def unit(self, ws, us):
    """``(u', ok, norm, ||w||^2)``: u' = w / ||w||, or the previous u where ||w|| <= eps (a zero weight)."""
    sq = self.rows_out.sum_sq(ws)
    ok = sq > self.eps * self.eps
    # sqrt only where it is safe, so that a zero weight has a zero, not NaN, gradient.
    norm = jnp.sqrt(jnp.where(ok, sq, 1.0))
    oks, invs = self._expand(ok, self.rows_out, ws), self._expand(1.0 / norm, self.rows_out, ws)
    return [jnp.where(oks[i], w * invs[i], us[i]) for i, w in enumerate(ws)], ok, norm, sq

  def step(self, us):
    """One power step under stop_gradient: ``(u', ||M^T v||)``."""
    vs = self.v(us)
    u_next, _, _, sq = self.unit([_rmatvec(self.consts[i], vs[i], self.views[i]) for i in range(self.n)], us)
    return u_next, jnp.sqrt(sq)

  def iterate(self, us, n_steps: int):
    if n_steps <= 2:
      for _ in range(n_steps):
        us = self.step(us)[0]
      return us
    return list(lax.fori_loop(0, n_steps, lambda _, x: tuple(self.step(list(x))[0]), tuple(us)))

  def final(self, us):
    """The differentiable last step: ``(sigma, u')``, sigma = max(||M^T v||, eps) one per row."""
    vs = self.v(us)
    ws = [_rmatvec(self.ops[i], vs[i], self.views[i]) for i in range(self.n)]
    u_next, ok, norm, _ = self.unit(ws, us)
    sigma = jnp.where(ok, norm, self.eps)
    return sigma, [lax.stop_gradient(u).reshape(b + (-1,)) for u, b in zip(u_next, self.batch, strict=True)]


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
  it = _Iteration([kernel], [u], [layout], compute_dtype(kernel.dtype), eps)
  us = it.iterate(it.u0, n_iterations - 1)
  if tol is not None:

    def cond(carry):
      i, _, s, s_prev = carry
      delta = jnp.max(jnp.abs(s - s_prev) / jnp.maximum(s, eps))
      return (i < max_iterations) & (delta > tol)

    def body(carry):
      i, x, s, _ = carry
      x_next, s_next = it.step([x])
      return i + 1, x_next[0], s_next, s

    first_u, first_s = it.step(us)
    zeros = jnp.zeros_like(first_s)
    _, x, _, _ = lax.while_loop(cond, body, (jnp.asarray(n_iterations, jnp.int32), first_u[0], first_s, zeros))
    us = [x]
  sigma, u_next = it.final(us)
  return PowerIterationResult(it.rows_out.parts(sigma)[0], u_next[0])


@functools.partial(jax.jit, static_argnames=('layouts', 'n_iterations', 'eps', 'target_norm'))
def normalize_many(kernels, us, layouts, *, n_iterations: int = 1, eps: float = 1e-12, target_norm: float = 1.0):
  """:func:`power_iteration` and :func:`scale_kernel` on several kernels at once.

  Computes, for each kernel, what ``power_iteration(kernel, u, layout,
  n_iterations=n_iterations, eps=eps)`` followed by ``scale_kernel(kernel,
  target_norm / sigma, layout)`` computes, with the same ops per kernel, but
  with the vector norms and the scalar maths (reseeding checks, sigma, the
  factor and, in the backward pass, their derivatives) of all kernels batched
  into one reduction and one op per step: a jitted train step normalizing
  many layers compiles far fewer XLA kernels (the CNN critic: 162 -> about
  70 extra kernels). Equal to the per-kernel calls up to float rounding (the
  order of the sums).

  Args:
    kernels: a sequence of kernels.
    us: their u vectors, ``batch_shape + (fan_out,)`` each.
    layouts: their resolved layouts (a tuple, static).
    n_iterations: power steps, >= 1.
    eps: floor of the vector norms and of sigma, > 0.
    target_norm: the spectral norm of each normalized kernel.

  Returns:
    ``(scaled, results)``: the normalized kernels (each in its own dtype) and
    a :class:`PowerIterationResult` per kernel.
  """
  kernels, us = list(kernels), list(us)
  groups: dict = {}
  for i, k in enumerate(kernels):
    groups.setdefault(jnp.dtype(compute_dtype(k.dtype)), []).append(i)
  scaled, results = [None] * len(kernels), [None] * len(kernels)
  for cdtype, idx in groups.items():
    it = _Iteration([kernels[i] for i in idx], [us[i] for i in idx], [layouts[i] for i in idx], cdtype, eps)
    sigma, u_next = it.final(it.iterate(it.u0, n_iterations - 1))
    sigmas, factors = it.rows_out.parts(sigma), it.rows_out.parts(target_norm / sigma)
    for j, i in enumerate(idx):
      results[i] = PowerIterationResult(sigmas[j], u_next[j])
      scaled[i] = scale_kernel(kernels[i], factors[j], layouts[i])
  return scaled, results


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
