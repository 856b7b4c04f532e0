"""The options of spectral normalization, validated once, and the checks every snjax option goes through.

:class:`SNOptions` holds the numeric options of the functional API
(:func:`snjax.sn_init`, :func:`snjax.sn_apply`, :func:`snjax.spectral_normalization`,
:func:`snjax.spectral_projection`). Its fields are hashable, so the object is a
static argument of the jitted power iteration; it is checked once, when built.
:func:`check_int` and :func:`check_float` are the checks themselves, shared by
every part of snjax that takes an option (the Flax modules, the GAN train
step, the checkpointer, ``snjax train``), so that one kind of mistake gets one
kind of message.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


def check_int(name: str, value: Any, minimum: int | None = None, where: str | None = None) -> int:
  """Returns ``value`` if it is an int (not a bool) ``>= minimum``.

  Args:
    name: the option's name, for the message.
    value: the value given.
    minimum: the smallest value allowed, or ``None``.
    where: a prefix for the message (a function or path), or ``None``.

  Returns:
    ``value``, as an ``int``.

  Raises:
    ValueError: ``value`` is not such an int; the message names the option and what was expected.
  """
  ok = isinstance(value, int) and not isinstance(value, bool) or _is_numpy_int(value)
  if not ok or (minimum is not None and value < minimum):
    expected = 'an int' if minimum is None else f'an int >= {minimum}'
    raise ValueError(f'{_prefix(where)}{name} must be {expected}, got {value!r}.')
  return int(value)


def check_float(
  name: str,
  value: Any,
  *,
  minimum: float | None = None,
  minimum_inclusive: bool = False,
  maximum: float | None = None,
  maximum_inclusive: bool = False,
  where: str | None = None,
) -> float:
  """Returns ``value`` as a float if it is a finite real number within the given bounds.

  Args:
    name: the option's name, for the message.
    value: the value given (an int or float; not a bool).
    minimum: the lower bound, or ``None``.
    minimum_inclusive: whether ``value == minimum`` is allowed.
    maximum: the upper bound, or ``None``.
    maximum_inclusive: whether ``value == maximum`` is allowed.
    where: a prefix for the message, or ``None``.

  Returns:
    ``float(value)``.

  Raises:
    ValueError: not a finite number, or out of bounds; the message names the option and the range.
  """
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  if ok and minimum is not None:
    ok = value >= minimum if minimum_inclusive else value > minimum
  if ok and maximum is not None:
    ok = value <= maximum if maximum_inclusive else value < maximum
  if not ok:
    raise ValueError(
      f'{_prefix(where)}{name} must be a finite float'
      + _range(minimum, minimum_inclusive, maximum, maximum_inclusive)
      + f', got {value!r}.'
    )
  return float(value)


def _is_numpy_int(value: Any) -> bool:
  try:
    import numpy as np
  except ImportError:  # pragma: no cover - numpy comes with jax
    return False
  return isinstance(value, np.integer)


def _prefix(where: str | None) -> str:
  return f'{where}: ' if where else ''


def _range(lo, lo_inc, hi, hi_inc) -> str:
  if lo is not None and hi is not None:
    return f' in {"[" if lo_inc else "("}{lo:g}, {hi:g}{"]" if hi_inc else ")"}'
  if lo is not None:
    return f' {">=" if lo_inc else ">"} {lo:g}'
  if hi is not None:
    return f' {"<=" if hi_inc else "<"} {hi:g}'
  return ''


@dataclasses.dataclass(frozen=True)
class SNOptions:
  """The numeric options of spectral normalization (one vocabulary for the whole functional API).

  Attributes:
    n_power_iterations: power steps per training call (>= 1); each is two
      matrix-vector products per weight.
    n_warmup_iterations: power steps when the state is made (>= 0), so that
      the first sigma is already accurate.
    eps: floor of the vector norms and of sigma (> 0): a zero weight gives
      zeros, never NaN.
    target_norm: the spectral norm c of each normalized weight (c-Lipschitz
      layers), > 0.
    tol: if set (> 0), keep iterating in a ``lax.while_loop`` until sigma's
      relative change is at most ``tol``; for exact evaluation and reports.
    max_iterations: the cap on the steps when ``tol`` is set (>= 1).

  Raises:
    ValueError: an option out of its range (checked once, when built).
  """

  n_power_iterations: int = 1
  n_warmup_iterations: int = 15
  eps: float = 1e-12
  target_norm: float = 1.0
  tol: float | None = None
  max_iterations: int = 100

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
    n = self.n_power_iterations
    if isinstance(n, bool) or not isinstance(n, int) and not _is_numpy_int(n) or n < 1:
      raise ValueError(
        f'n_power_iterations must be an int >= 1, got {n!r} (with 0 iterations nothing would be normalized).'
      )
    set_('n_power_iterations', int(n))
    set_('n_warmup_iterations', check_int('n_warmup_iterations', self.n_warmup_iterations, 0))
    set_('eps', check_float('eps', self.eps, minimum=0.0))
    set_('target_norm', check_float('target_norm', self.target_norm, minimum=0.0))
    if self.tol is not None:
      set_('tol', check_float('tol', self.tol, minimum=0.0))
    set_('max_iterations', check_int('max_iterations', self.max_iterations, 1))

  def replace(self, **changes: Any) -> SNOptions:
    """A copy with ``changes`` applied (and checked)."""
    return dataclasses.replace(self, **changes)
