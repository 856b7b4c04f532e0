"""One normalized weight, from its state to its normalized value: the per-leaf logic every wrapper shares.

The transform (:func:`snjax.sn_apply`), the projection
(:func:`snjax.spectral_projection`) and the Flax modules (:mod:`snjax.linen`,
:mod:`snjax.nnx`) keep their state in different places, but do the same
things to each weight, through these functions:

* :func:`plan` reads a weight as an operator (its matrix through its layout,
  or its convolution when a :class:`snjax.ConvSpec` is given);
* :func:`init_states` draws the first u of every weight and warms it up;
* :func:`check_state` checks a stored ``(u, sigma)`` against its weight;
* :func:`normalize` runs the power iteration on all weights together
  (:func:`snjax._power.run`) and scales them: ``c W / sigma``
  (spectral normalization, Miyato et al. 2018,
  https://arxiv.org/abs/1802.05957) or ``W / max(1, sigma / c)`` (spectral
  projection, Gouk et al. 2021, https://arxiv.org/abs/1804.04368);
* :func:`scale` applies a factor per stacked matrix in the compute dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from snjax import _power
from snjax._conv import ConvSpec
from snjax._operators import ConvOperator, Operator, compute_dtype
from snjax._options import SNOptions


class Leaf(NamedTuple):
  """A weight to normalize: its path (for messages) and the operator whose norm is estimated."""

  path: str
  operator: Operator

  @property
  def u_shape(self) -> tuple[int, ...]:
    return tuple(self.operator.u_shape)

  @property
  def sigma_shape(self) -> tuple[int, ...]:
    return tuple(self.operator.batch_shape)


def plan(path: str, leaf: Any, layout: Any, spec: ConvSpec | None = None) -> Leaf:
  """The :class:`Leaf` of weight ``leaf`` at ``path``: its matrix through ``layout``, or its convolution ``spec``.

  Raises:
    ValueError / TypeError: a layout or conv spec that does not fit the weight; the message names the path.
  """
  return Leaf(path, _power.make_operator(path, leaf, layout, spec))


def random_u(key: jax.Array, operator: Operator, dtype=jnp.float32) -> jax.Array:
  """A random unit u for ``operator`` (one unit vector per stacked matrix)."""
  rows = operator.batch_shape + (-1,)
  u = jax.random.normal(key, operator.u_shape, dtype).reshape(rows)
  return (u / jnp.linalg.norm(u, axis=-1, keepdims=True)).reshape(operator.u_shape)


@functools.partial(jax.jit, static_argnames=('operators', 'options'))
def _warm_up(keys, kernels, operators, options: SNOptions):
  us = [random_u(k, op, compute_dtype(w.dtype)) for k, op, w in zip(keys, operators, kernels, strict=True)]
  steps = options.replace(n_power_iterations=max(options.n_warmup_iterations, 1), tol=None)
  results, _ = _power.run(operators, [jax.lax.stop_gradient(w) for w in kernels], us, steps)
  if options.n_warmup_iterations == 0:
    return [(u, r.sigma) for u, r in zip(us, results, strict=True)]
  return [(r.u, r.sigma) for r in results]


def init_states(keys: Sequence[jax.Array], kernels: Sequence[jax.Array], leaves: Sequence[Leaf], options: SNOptions):
  """The first ``(u, sigma)`` of every weight: a random unit u, then ``n_warmup_iterations`` power steps.

  All weights are warmed up together in one compiled call. With 0 warm-up
  steps u stays the random one, and sigma is still one step's estimate (so
  that evaluation before training normalizes with a meaningful sigma).

  Args:
    keys: one PRNG key per weight.
    kernels: the weights.
    leaves: their :class:`Leaf` plans.
    options: ``n_warmup_iterations`` and ``eps`` are used.

  Returns:
    A list of ``(u, sigma)``, u of each ``leaf.u_shape`` (in the weight's
    compute dtype), sigma of ``leaf.sigma_shape``.
  """
  if not leaves:
    return []
  return _warm_up(list(keys), list(kernels), tuple(leaf.operator for leaf in leaves), options)


def check_state(leaf: Leaf, kernel: Any, u: Any, sigma: Any) -> None:
  """Checks a stored ``(u, sigma)`` against its weight.

  Raises:
    ValueError: u or sigma of the wrong shape; the message names the path and what was expected.
  """
  u_shape, sigma_shape = tuple(jnp.shape(u)), tuple(jnp.shape(sigma))
  if isinstance(leaf.operator, ConvOperator):
    if u_shape != leaf.u_shape or sigma_shape != ():
      raise ValueError(
        f'{leaf.path}: conv-mode state must hold an input-shaped u {leaf.u_shape} and a scalar sigma, got u '
        f'{u_shape} and sigma {sigma_shape}. Was the state made without the same conv= option (or for another '
        'input size)?'
      )
    return
  if u_shape != leaf.u_shape:
    lay = leaf.operator.layout
    raise ValueError(
      f'{leaf.path}: state u has shape {u_shape}, expected {leaf.u_shape} for a kernel of shape '
      f'{tuple(kernel.shape)} with output axes {lay.out_axes} and batch axes {lay.batch_axes}. '
      'Was the state made for another model or layout?'
    )
  if sigma_shape != leaf.sigma_shape:
    raise ValueError(f'{leaf.path}: state sigma has shape {sigma_shape}, expected {leaf.sigma_shape}.')


def scale(kernel: jax.Array, factor: jax.Array, leaf: Leaf) -> jax.Array:
  """``kernel * factor`` (one factor per stacked matrix), formed in the compute dtype, cast back once."""
  cdtype = compute_dtype(kernel.dtype)
  return leaf.operator.scale(kernel.astype(cdtype), factor.astype(cdtype)).astype(kernel.dtype)


def _factor(mode: str, target_norm: float):
  if mode == 'normalize':
    return lambda sigma: target_norm / sigma
  # The projection onto {sigma <= c}: a weight inside the ball keeps factor 1.
  return lambda sigma: 1.0 / jnp.maximum(1.0, sigma / target_norm)


@functools.partial(jax.jit, static_argnames=('operators', 'options', 'mode'))
def _normalize(kernels, us, operators, options: SNOptions, mode: str):
  results, factors = _power.run(operators, kernels, us, options, factor=_factor(mode, options.target_norm))
  scaled = [
    op.scale(k.astype(compute_dtype(k.dtype)), f.astype(compute_dtype(k.dtype))).astype(k.dtype)
    for k, f, op in zip(kernels, factors, operators, strict=True)
  ]
  return scaled, results, factors


def normalize(
  kernels: Sequence[jax.Array],
  us: Sequence[jax.Array],
  leaves: Sequence[Leaf],
  options: SNOptions,
  mode: str = 'normalize',
) -> tuple[list[jax.Array], list[_power.PowerIterationResult], list[jax.Array]]:
  """Power iteration on every weight together, then each weight scaled.

  Args:
    kernels: the weights.
    us: their current u (each of its leaf's ``u_shape``).
    leaves: their :class:`Leaf` plans.
    options: the iteration options and ``target_norm`` (c).
    mode: ``'normalize'``: ``c W / sigma`` (differentiable through W and
      sigma); ``'project'``: ``W / max(1, sigma / c)``.

  Returns:
    ``(scaled, results, factors)``: the scaled weights (each in its dtype),
    a :class:`snjax.PowerIterationResult` per weight, and the factor applied.
  """
  if not leaves:
    return [], [], []
  return _normalize(list(kernels), list(us), tuple(leaf.operator for leaf in leaves), options, mode)


@functools.partial(jax.jit, static_argnames=('operators', 'options'))
def _estimate(kernels, us, operators, options: SNOptions):
  return _power.run(operators, kernels, us, options)[0]


def estimate(kernels: Sequence[jax.Array], us: Sequence[jax.Array], leaves: Sequence[Leaf], options: SNOptions):
  """Power iteration on every weight together: a :class:`snjax.PowerIterationResult` per weight."""
  if not leaves:
    return []
  return _estimate(list(kernels), list(us), tuple(leaf.operator for leaf in leaves), options)
