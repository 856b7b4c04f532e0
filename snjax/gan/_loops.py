"""Which computations must stay out of loops: convolutions on XLA:CPU.

XLA:CPU rewrites convolutions into the layouts of its fast (Eigen / YNNPACK)
kernels only in the entry computation. Inside a while loop (a ``lax.scan``,
even of trip count 1) the backward convolutions keep autodiff's dimension
numbers and run as naive emitted loops, 10-30x slower (README, "Benchmarks").
The GAN train step unrolls its critic updates when :func:`keep_out_of_loops`
says so, and ``snjax train`` runs its steps in a Python loop instead of a scan.
"""

from __future__ import annotations

from typing import Any

Jaxpr = Any  # a jax.core.Jaxpr or ClosedJaxpr

_CONVOLUTION = 'conv_general_dilated'


def has_convolution(jaxpr: Jaxpr) -> bool:
  """Whether a jaxpr, or any jaxpr nested in it (jit, scan, cond, custom_vjp, ...), has a convolution.

  Args:
    jaxpr: a ``jax.core.Jaxpr`` or ``ClosedJaxpr`` (e.g. from ``jax.make_jaxpr``).

  Returns:
    ``True`` if a ``conv_general_dilated`` equation occurs at any depth.
  """
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == _CONVOLUTION:
      return True
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(sub, 'eqns') or hasattr(getattr(sub, 'jaxpr', None), 'eqns'):
          if has_convolution(sub):
            return True
  return False


def keep_out_of_loops(jaxpr: Jaxpr, platform: str) -> bool:
  """Whether ``jaxpr`` must not run inside a ``lax.scan`` on ``platform``: a convolution on XLA:CPU.

  Args:
    jaxpr: the computation (a ``jax.core.Jaxpr`` or ``ClosedJaxpr``).
    platform: the platform it runs on (``'cpu'``, ``'gpu'``, ``'tpu'``, ...).

  Returns:
    ``True`` for a computation with a convolution on ``'cpu'`` (see the module docstring).
  """
  return platform == 'cpu' and has_convolution(jaxpr)
