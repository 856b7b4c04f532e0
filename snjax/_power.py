"""Power iteration for the spectral norm of many linear operators at once: the one driver of snjax.

Spectral normalization (Miyato et al. 2018, "Spectral Normalization for
Generative Adversarial Networks", https://arxiv.org/abs/1802.05957) divides a
weight by its spectral norm sigma, the largest singular value of a linear
operator ``B`` (:mod:`snjax._operators`: the kernel read as a matrix, or the
convolution itself). sigma is estimated by power iteration, carrying a unit
vector u from step to step::

  v = B u / ||B u||,    w = B^T v,    sigma = ||w||,    u <- w / sigma.

Two products per step and no more: sigma = ||B^T v|| with a unit v is a *lower
bound* on the true norm (||B^T v|| <= ||B^T|| ||v||), so a layer divided by it
is never over-normalized. u and v are constants for differentiation
(``stop_gradient``); sigma is differentiated through the last product
``B^T v``, so d sigma / d B = v u^T, the paper's gradient.

Every caller (the transform, the projection, the Flax modules, the bounds)
iterates through :func:`run`, on all its operators together: the products are
per operator, but the vector norms of all of them are one reduction per step
and their scalar maths one op on a vector, so that normalizing many layers
compiles few XLA kernels. The steps before the last are a Python loop (up to
two) or a ``lax.fori_loop``; with ``tol`` they continue in one
``lax.while_loop`` until every sigma's relative change is at most ``tol``.

Robustness: a u that is zero or non-finite is reseeded with a fixed
pseudo-random unit vector; when ``B^T v`` collapses (a zero weight) u is kept
rather than zeroed and sigma is floored by eps, so the result stays finite and
normalization resumes as soon as the weight is non-zero again. Half-precision
weights are iterated in float32.
"""

from __future__ import annotations

import functools
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from snjax._conv import ConvSpec, conv_layout_is_torch
from snjax._layout import LayoutSpec, ResolvedLayout, resolve_layout
from snjax._operators import (
  MatrixOperator,
  Operator,
  compute_dtype,
  conv_operator,
  matrix_operator,
)
from snjax._options import SNOptions


class PowerIterationResult(NamedTuple):
  """What :func:`power_iteration` returns.

  Attributes:
    sigma: the spectral-norm estimate, floored by eps, one per stacked matrix
      (shape ``batch_shape``; a scalar for one matrix or a convolution).
      Differentiable with respect to the kernel.
    u: the next unit vector, in the shape of the u given (``batch_shape +
      (fan_out,)``, or the input shape of a convolution), constant for
      differentiation.
  """

  sigma: jax.Array
  u: jax.Array


def _prod(shape) -> int:
  return int(np.prod(shape, dtype=np.int64))


def fallback_u(shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """A fixed pseudo-random unit vector per row of ``shape`` (normalized along the last axis).

  Reseeds a u that is zero or non-finite. A compile-time constant: the same on
  every call, host and device, so that reseeding is deterministic.
  """
  seed = zlib.crc32(repr(shape).encode())
  x = np.random.default_rng(seed).standard_normal(shape)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  return jnp.asarray(x, dtype)


class _Rows:
  """The vectors of several arrays as rows of a few padded matrices, reduced together.

  On XLA:CPU a reduction over more than 32 elements compiles to up to three
  kernels (the elementwise producer, a reduce-window and a reduce), and each
  scalar op on its result to one more; every distinct kernel costs tens of ms
  of compile time. Stacking the vectors of all operators (zero-padded to a
  common width) makes one reduction, and one chain of scalar ops, for all of
  them. Padding is bounded: one matrix when it holds at most 4x the elements
  (or 64k), else one per power-of-two width. A single array is reduced as it is.

  Args:
    shapes: per array, ``(batch_shape, width)``: its vectors are the rows of
      ``x.reshape(prod(batch_shape), width)``.
  """

  def __init__(self, shapes):
    self.shapes = [(tuple(b), int(w)) for b, w in shapes]
    self.rows = [_prod(b) for b, _ in self.shapes]
    widths = [w for _, w in self.shapes]
    actual = sum(r * w for r, w in zip(self.rows, widths, strict=True))
    if sum(self.rows) * max(widths) <= max(4 * actual, 1 << 16):
      keys = [0] * len(widths)
    else:
      keys = [int(np.ceil(np.log2(max(w, 1)))) for w in widths]
    self.groups = [[i for i, k in enumerate(keys) if k == key] for key in sorted(set(keys))]
    self.order = [i for g in self.groups for i in g]

  def sum_sq(self, xs):
    """The squared norm of every vector, as one vector in row order (used on constants only)."""
    if len(xs) == 1:
      return _sum_sq(xs[0], len(self.shapes[0][0])).reshape(-1)
    out = []
    for g in self.groups:
      mats = [xs[i].reshape(self.rows[i], -1) for i in g]
      if len(mats) > 1:
        width = max(m.shape[1] for m in mats)
        mats = [jnp.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in mats]
      out.append(jnp.sum(jnp.square(jnp.concatenate(mats) if len(mats) > 1 else mats[0]), axis=1))
    return jnp.concatenate(out) if len(out) > 1 else out[0]

  def parts(self, vec):
    """Each array's entries of a row-ordered vector, as a vector.

    One ``split`` rather than a slice per array: its transpose (in the
    backward pass) is one concatenate, not a pad and an add per array.
    """
    cuts = np.cumsum([self.rows[i] for i in self.order])[:-1].tolist()
    pieces = jnp.split(vec, cuts) if cuts else [vec]
    out = [None] * len(self.order)
    for i, piece in zip(self.order, pieces, strict=True):
      out[i] = piece
    return out

  def expand(self, vec, like):
    """``vec``'s entries broadcastable against each array of ``like``."""
    parts = zip(self.parts(vec), like, self.shapes, strict=True)
    return [p.reshape(b + (1,) * (x.ndim - len(b))) for p, x, (b, _) in parts]


def _masks(sizes: tuple[int, ...]) -> list[np.ndarray]:
  """Per piece of consecutive rows of ``sizes``, the ``(n, total)`` mask of its rows."""
  rows, starts = np.arange(sum(sizes)), np.cumsum((0,) + sizes[:-1])
  return [rows[None, :] == (start + np.arange(n))[:, None] for start, n in zip(starts, sizes, strict=True)]


def _pieces(x: jax.Array, sizes: tuple[int, ...]) -> list[jax.Array]:
  """``x`` (floating) cut along axis 0 into consecutive pieces of ``sizes``, each by the same XLA code.

  Each piece is a masked sum, ``sum_r [r in piece] x[r]``, its mask a
  constant array: XLA passes an array constant to a fusion as an operand, but
  puts a slice's offsets into the fusion's code, so that with slices the
  per-layer fusions that read the pieces (a deep network's, otherwise
  identical and compiled once) would each be compiled anew. A masked sum,
  unlike a one-hot product, keeps a non-finite row to its own piece. Its
  transpose is :func:`_place`'s kind of masked sum, with the same property.
  """
  if len(sizes) == 1:
    return [x]
  tail = (1,) * (x.ndim - 1)
  return [jnp.sum(jnp.where(jnp.asarray(m.reshape(m.shape + tail)), x[None], 0), axis=1) for m in _masks(sizes)]


def _place(pieces: Sequence[jax.Array]) -> jax.Array:
  """The 1-D ``pieces`` placed one after the other in one vector (a concatenate made of masked sums, see
  :func:`_pieces`: its transpose cuts the vector by masks, not by slices)."""
  if len(pieces) == 1:
    return pieces[0]
  masks = _masks(tuple(p.shape[0] for p in pieces))
  return sum(jnp.sum(jnp.where(jnp.asarray(m.T), p[None, :], 0), axis=1) for m, p in zip(masks, pieces, strict=True))


def _sum_sq(x, nb: int):
  return jnp.sum(jnp.square(x), axis=tuple(range(nb, x.ndim)))


_CUT_LIMIT = 1 << 14
"""The largest kernel (elements) whose v and w the backward pass reads through :func:`_pieces`. XLA fuses the
masked sum into the kernel-sized gradient fusion and recomputes it for every element (a strided sum over the
stack): on a 2-core CPU that cost more step time than it saved compile time above 128 x 128 (MLP critics of 32
layers: 32x128 +6.0% step, compile 10.5 -> 4.0 s; 32x256 +8% -> +15% step; 8x1024 +6% -> +15%). Larger kernels
take slices: one fusion per layer to compile, no recomputation."""


_STACK_LIMIT = 16
"""The most matrices stacked into one unit. A stack's members are cut out by masked sums over the stack's axis
(:func:`_pieces`): work and kernels that grow with the stack, and past 32 members XLA:CPU rewrites each such
reduction into a reduce-window and a reduce. MLP critic step, 64 x 128, against the plain step in the same process
(2-core CPU): one stack of 64 cost 18 extra kernels per layer (2024 kernels; flax.linen.SpectralNorm 1956, plain
854) and +12.6% step time (flax +5.6%); stacks of at most 16, 7.6 per layer (1349 kernels) and +6.5% (flax +5.2%).
128 x 128: +14.5% (flax +4.1%) -> +3.9% (flax +3.3%). Same-shaped layers beyond 16 form further stacks of the same
shape, whose fusions XLA compiles once."""


class _Unit(NamedTuple):
  """Operators iterated as one: a single operator, or same-shaped matrices stacked on a new leading axis.

  Attributes:
    operator: the operator iterated (for a stack, the members' matrix operator
      with the stack's axis prepended to its ``batch_shape``).
    members: the kernels it holds, as indices into :func:`run`'s lists.
    member: the operator of each member.
  """

  operator: Operator
  members: tuple[int, ...]
  member: Operator

  @property
  def stacked(self) -> bool:
    return self.operator is not self.member


def _units(operators: Sequence[Operator], idx: Sequence[int]) -> list[_Unit]:
  """The kernels ``idx`` as units: matrices of one operator (same shape, same layout) stacked, at most
  :data:`_STACK_LIMIT` to a stack, the rest alone.

  Only matrices contracted on a free reshape (``'io'`` / ``'oi'``) are stacked:
  their operands then stack on a new leading axis, and the stack is one
  batched mat-vec, so that compile time follows the number of distinct
  shapes, not of layers.
  """
  same: dict[Any, list[int]] = {}
  for i in idx:
    op = operators[i]
    key = op if isinstance(op, MatrixOperator) and op.kind in ('io', 'oi') else ('alone', i)
    same.setdefault(key, []).append(i)
  units = []
  for same_shape in same.values():
    op = operators[same_shape[0]]
    for start in range(0, len(same_shape), _STACK_LIMIT):
      members = tuple(same_shape[start : start + _STACK_LIMIT])
      if len(members) == 1:
        units.append(_Unit(op, members, op))
      else:
        units.append(_Unit(op._replace(batch_shape=(len(members),) + op.batch_shape), members, op))
  return units


class _Iteration:
  """Power iteration on several units of one compute dtype, step by step (see the module docstring)."""

  def __init__(self, units: Sequence[_Unit], kernels, us, cdtype, eps: float):
    self.units, self.eps = list(units), eps
    self.operators = [unit.operator for unit in self.units]
    widths = lambda shape, op: _prod(shape[len(op.batch_shape) :])  # noqa: E731
    self.rows_u = _Rows([(op.batch_shape, widths(op.domain, op)) for op in self.operators])
    self.rows_v = _Rows([(op.batch_shape, widths(op.codomain, op)) for op in self.operators])
    # The iteration's operands are constants; a stack is one copy of its members, read by both products.
    self.consts = [
      self._stack(unit, [unit.member.operand(lax.stop_gradient(kernels[i]).astype(cdtype)) for i in unit.members])
      for unit in self.units
    ]
    us = [
      self._stack(unit, [lax.stop_gradient(us[i]).astype(cdtype).reshape(unit.member.domain) for i in unit.members])
      for unit in self.units
    ]
    # A u that is zero or non-finite is reseeded with a fixed pseudo-random unit vector (a member's own).
    sq = self.rows_u.sum_sq(us)
    bad = self.rows_u.expand(~(jnp.isfinite(sq) & (sq > 0)), us)
    self.u0 = []
    for i, (u, unit) in enumerate(zip(us, self.units, strict=True)):
      member_rows = unit.member.batch_shape + (self.rows_u.shapes[i][1],)
      fallback = fallback_u(member_rows, u.dtype).reshape(unit.member.domain)
      self.u0.append(jnp.where(bad[i], jnp.broadcast_to(fallback, u.shape), u))

  @staticmethod
  def _stack(unit: _Unit, xs):
    return jnp.stack(xs) if unit.stacked else xs[0]

  @staticmethod
  def _unstack(unit: _Unit, x, limit: int | None = None):
    """A stack's members: cut by :func:`_pieces`, or by slices where a member's kernel has more than ``limit``
    elements."""
    if not unit.stacked:
      return [x]
    if limit is not None and _prod(unit.member.in_shape + unit.member.out_shape + unit.member.batch_shape) > limit:
      return list(x)
    return [p.reshape(x.shape[1:]) for p in _pieces(x, (1,) * x.shape[0])]

  def v(self, us):
    """v = B u / max(||B u||, eps), constant for differentiation."""
    ts = [op.forward(c, u) for op, c, u in zip(self.operators, self.consts, us, strict=True)]
    inv = self.rows_v.expand(1.0 / jnp.maximum(jnp.sqrt(self.rows_v.sum_sq(ts)), self.eps), ts)
    return [lax.stop_gradient(t * inv[i]) for i, t in enumerate(ts)]

  def unit(self, ws, us, sq):
    """``(u', ok, norm)`` from ``sq = ||w||^2`` per row: u' = w / ||w||, or the previous u where ||w|| <= eps
    (a zero weight); ``norm = ||w||`` where ok."""
    ok = sq > self.eps * self.eps
    # sqrt only where it is safe, so that a zero weight has a zero, not NaN, gradient.
    norm = jnp.sqrt(jnp.where(ok, sq, 1.0))
    oks, invs = self.rows_u.expand(ok, ws), self.rows_u.expand(1.0 / norm, ws)
    return [jnp.where(oks[i], w * invs[i], us[i]) for i, w in enumerate(ws)], ok, norm

  def step(self, us):
    """One power step under stop_gradient: ``(u', ||B^T v|| per row)``."""
    vs = self.v(us)
    ws = [op.transpose(c, v) for op, c, v in zip(self.operators, self.consts, vs, strict=True)]
    sq = self.rows_u.sum_sq(ws)
    return self.unit(ws, us, sq)[0], jnp.sqrt(sq)

  def iterate(self, us, n_steps: int):
    """``n_steps`` constant steps: unrolled up to two, a ``lax.fori_loop`` beyond."""
    if n_steps <= 2:
      for _ in range(n_steps):
        us = self.step(us)[0]
      return us
    return list(lax.fori_loop(0, n_steps, lambda _, x: tuple(self.step(list(x))[0]), tuple(us)))

  def converge(self, us, steps_done: int, tol: float, max_iterations: int):
    """Constant steps in a ``lax.while_loop`` until every sigma's relative change is <= ``tol``
    (or ``max_iterations`` steps in all)."""

    def cond(carry):
      i, _, s, s_prev = carry
      delta = jnp.max(jnp.abs(s - s_prev) / jnp.maximum(s, self.eps))
      return (i < max_iterations) & (delta > tol)

    def body(carry):
      i, x, s, _ = carry
      x_next, s_next = self.step(list(x))
      return i + 1, tuple(x_next), s_next, s

    first_u, first_s = self.step(us)
    start = (jnp.asarray(steps_done, jnp.int32), tuple(first_u), first_s, jnp.zeros_like(first_s))
    return list(lax.while_loop(cond, body, start)[1])

  def final(self, us, kernels):
    """The last step: ``(sigma, u')``, sigma = max(||B^T v||, eps) one per row, differentiable in ``kernels``.

    The products run on the constants; sigma's derivative comes from
    :meth:`_squared_norms` (d sigma = v^T dB u', the paper's gradient), so that
    the backward pass goes through no stack and no padded matrix.
    """
    vs = self.v(us)
    ws = [op.transpose(c, v) for op, c, v in zip(self.operators, self.consts, vs, strict=True)]
    sq = self._squared_norms(self.rows_u.sum_sq(ws), [[kernels[i] for i in u.members] for u in self.units], vs, ws)
    u_next, ok, norm = self.unit(ws, us, sq)
    return jnp.where(ok, norm, self.eps), [lax.stop_gradient(u) for u in u_next]

  def _squared_norms(self, sq, kernels, vs, ws):
    """``sq`` (the ||B^T v||^2 of every row, computed on constants) with the derivative in the kernels.

    d ||B^T v||^2 = 2 v^T dB w with v and w = B^T v held constant, taken per
    kernel on its own operand, so that each layer's gradient is its own fusion
    (the same for every layer of a stack, which XLA compiles once).

    Args:
      sq: the squared norms, in row order.
      kernels: per unit, its members' kernels in the compute dtype.
      vs: per unit, v (constant).
      ws: per unit, B^T v (constant).

    Returns:
      ``sq``, differentiable with respect to ``kernels``.
    """

    @jax.custom_jvp
    def squared_norms(sq, kernels, vs, ws):
      del kernels, vs, ws
      return sq

    @squared_norms.defjvp
    def _(primals, tangents):
      sq, _, vs, ws = primals
      dks = tangents[1]
      dots = []
      for unit, dk, v, w in zip(self.units, dks, vs, ws, strict=True):
        op, nb = unit.member, len(unit.member.batch_shape)
        members = zip(dk, self._unstack(unit, v, _CUT_LIMIT), self._unstack(unit, w, _CUT_LIMIT), strict=True)
        axes = tuple(range(nb, v.ndim - (1 if unit.stacked else 0)))
        sums = [jnp.sum(vi * op.forward(op.operand(dki), wi), axis=axes) for dki, vi, wi in members]
        dots.append(_place([2 * s.reshape(-1) for s in sums]))
      return squared_norms(sq, *primals[1:]), jnp.concatenate([dots[i] for i in self.rows_u.order])

    return squared_norms(sq, kernels, vs, ws)

  def per_kernel(self, vec, us=None):
    """A row-ordered vector (and the units' u) cut per kernel: ``{kernel index: (piece, u)}``."""
    out = {}
    for j, (unit, part) in enumerate(zip(self.units, self.rows_u.parts(vec), strict=True)):
      u_parts = self._unstack(unit, us[j]) if us is not None else [None] * len(unit.members)
      pieces = _pieces(part, (_prod(unit.member.batch_shape),) * len(unit.members))
      for i, p, u in zip(unit.members, pieces, u_parts, strict=True):
        out[i] = (p.reshape(unit.member.batch_shape), u)
    return out


def run(
  operators: Sequence[Operator],
  kernels: Sequence[jax.Array],
  us: Sequence[jax.Array],
  options: SNOptions,
  factor: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[list[PowerIterationResult], list[jax.Array] | None]:
  """Power iteration on every operator together; the driver every snjax caller goes through.

  Kernels of one compute dtype are iterated together (their vector norms one
  reduction per step), and among them the matrices of one shape and layout
  as one stacked, batched operator (:func:`_units`), so that a deep network
  of few distinct layer shapes compiles to few kernels (Miyato et al. 2018,
  https://arxiv.org/abs/1802.05957, for the iteration itself).

  Args:
    operators: one :class:`MatrixOperator` / :class:`ConvOperator` per kernel.
    kernels: the kernels (any floating dtype; iterated in
      ``compute_dtype(kernel.dtype)``, kernels of each compute dtype together).
    us: the current u of each kernel, in its operator's ``u_shape``.
    options: ``n_power_iterations``, ``eps``, ``tol`` and ``max_iterations``
      are used.
    factor: optional elementwise function of sigma (e.g. ``target / sigma``),
      applied once to the sigmas of all kernels of a compute dtype.

  Returns:
    ``(results, factors)``: a :class:`PowerIterationResult` per kernel (u in
    its ``u_shape``), and ``factor(sigma)`` per kernel (``None`` without
    ``factor``).
  """
  groups: dict[Any, list[int]] = {}
  for i, k in enumerate(kernels):
    groups.setdefault(jnp.dtype(compute_dtype(k.dtype)), []).append(i)
  results: list[Any] = [None] * len(kernels)
  factors: list[Any] = [None] * len(kernels)
  for cdtype, idx in groups.items():
    it = _Iteration(_units(operators, idx), kernels, us, cdtype, options.eps)
    x = it.iterate(it.u0, options.n_power_iterations - 1)
    if options.tol is not None:
      x = it.converge(x, options.n_power_iterations, options.tol, options.max_iterations)
    sigma, u_next = it.final(x, [k.astype(cdtype) for k in kernels])
    for i, (s, u) in it.per_kernel(sigma, u_next).items():
      results[i] = PowerIterationResult(s, u.reshape(operators[i].u_shape))
    if factor is not None:
      for i, (f, _) in it.per_kernel(factor(sigma)).items():
        factors[i] = f
  return results, (factors if factor is not None else None)


@functools.partial(jax.jit, static_argnames=('operator', 'options'))
def _power_iteration(kernel, u, operator: Operator, options: SNOptions) -> PowerIterationResult:
  return run([operator], [kernel], [u], options)[0][0]


def power_iteration(
  kernel: jax.Array,
  u: jax.Array,
  layout: LayoutSpec | ResolvedLayout | None = None,
  *,
  spec: ConvSpec | None = None,
  n_power_iterations: int = 1,
  eps: float = 1e-12,
  tol: float | None = None,
  max_iterations: int = 100,
  n_iterations: int | None = None,
) -> PowerIterationResult:
  """Runs power iteration on one kernel and returns sigma and the next u.

  Steps 1 .. n-1 are pure iterations under ``stop_gradient`` (a
  ``lax.fori_loop`` when there are more than two); the last step computes
  ``w = B^T v`` differentiably and sigma = max(||w||, eps). If ``tol`` is
  given, the constant iterations continue in a ``lax.while_loop`` until the
  relative change of sigma is at most ``tol`` or ``max_iterations`` steps ran.
  Jitted (the operator and options static), so an eager call compiles once
  per shape.

  Two operators (Miyato et al. 2018, https://arxiv.org/abs/1802.05957; Sedghi
  et al. 2019, https://arxiv.org/abs/1805.10408):

  * ``spec=None``: the kernel read through ``layout`` as a stacked
    ``(batch..., fan_in, fan_out)`` matrix; ``u`` is ``batch_shape + (fan_out,)``
    and sigma has ``batch_shape``.
  * ``spec=ConvSpec(...)``: the convolution on one input of
    ``spec.input_shape``; ``u`` is input-shaped, sigma a scalar, ``layout``
    ``None``/``'flax'`` (kernel ``(*spatial, in/groups, out)``) or
    ``'torch'``/``'equinox'`` (``(out, in/groups, *spatial)``).

  Args:
    kernel: the weight.
    u: the current vector(s).
    layout: the kernel's layout: a preset name, output axes, a
      :class:`snjax.KernelLayout` or a resolved layout; default: output axis last.
    spec: the convolution's geometry, for the operator norm of the convolution.
    n_power_iterations: power steps in this call, >= 1.
    eps: floor of the vector norms and of sigma, > 0.
    tol: optional relative tolerance on sigma for iterating to convergence.
    max_iterations: cap on the steps when ``tol`` is given.
    n_iterations: deprecated name of ``n_power_iterations``.

  Returns:
    A :class:`PowerIterationResult` ``(sigma, u)``.

  Raises:
    ValueError: bad options, a layout that does not fit the kernel, a spec
      that does not fit the kernel, or a u of the wrong shape.
  """
  if n_iterations is not None:
    warnings.warn(
      'power_iteration(n_iterations=...) is deprecated; use n_power_iterations=...', DeprecationWarning, stacklevel=2
    )
    n_power_iterations = n_iterations
  options = SNOptions(n_power_iterations=n_power_iterations, eps=eps, tol=tol, max_iterations=max_iterations)
  operator = make_operator('power_iteration', kernel, layout, spec)
  if tuple(u.shape) != tuple(operator.u_shape):
    raise ValueError(f'power_iteration: u has shape {tuple(u.shape)}, expected {tuple(operator.u_shape)}.')
  return _power_iteration(kernel, u, operator, options)


def make_operator(path: str, kernel: Any, layout: Any, spec: ConvSpec | None) -> Operator:
  """The operator of one kernel: its matrix through ``layout``, or its convolution when ``spec`` is given.

  Raises:
    ValueError: a layout or spec that does not fit the kernel (the message names ``path``).
  """
  lay = layout if isinstance(layout, ResolvedLayout) else resolve_layout(layout, path, kernel)
  if spec is None:
    return matrix_operator(tuple(kernel.shape), lay)
  torch_layout = conv_layout_is_torch(path, kernel.ndim, lay.out_axes, lay.batch_axes)
  return conv_operator(tuple(kernel.shape), spec, torch_layout=torch_layout, where=path)


def u_shape(kernel_shape, layout: ResolvedLayout) -> tuple[int, ...]:
  """The shape of the u vector(s) of a kernel read as a matrix: ``batch_shape + (fan_out,)``."""
  return matrix_operator(tuple(kernel_shape), layout).u_shape


def conv_power_iteration(
  kernel: jax.Array,
  u: jax.Array,
  spec: ConvSpec,
  *,
  n_iterations: int = 1,
  eps: float = 1e-12,
  tol: float | None = None,
  max_iterations: int = 100,
  torch_layout: bool = False,
) -> PowerIterationResult:
  """Deprecated: ``snjax.power_iteration(kernel, u, layout, spec=spec, n_power_iterations=...)``.

  Power iteration on the convolution ``spec`` describes (``layout='torch'``
  for a kernel in PyTorch layout); kept for one release.
  """
  warnings.warn(
    'snjax.conv_power_iteration is deprecated; use snjax.power_iteration(kernel, u, spec=spec, '
    "n_power_iterations=...) (layout='torch' for a PyTorch-layout kernel).",
    DeprecationWarning,
    stacklevel=2,
  )
  return power_iteration(
    kernel,
    u,
    'torch' if torch_layout else None,
    spec=spec,
    n_power_iterations=n_iterations,
    eps=eps,
    tol=tol,
    max_iterations=max_iterations,
  )
