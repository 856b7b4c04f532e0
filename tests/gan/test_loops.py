"""Tests of snjax.gan._loops: convolutions are found at any depth of a jaxpr; only on CPU they stay out of loops."""

import jax
import jax.numpy as jnp
import pytest

from snjax.gan._loops import has_convolution, keep_out_of_loops

KERNEL = jnp.ones((1, 1, 3, 3))
X = jnp.ones((1, 1, 4, 4))


def _conv(x):
  return jax.lax.conv(x, KERNEL, (1, 1), 'SAME')


@jax.custom_vjp
def _custom(x):
  return _conv(x)


_custom.defvjp(lambda x: (_conv(x), None), lambda _, g: (g,))

NESTINGS = {
  'top level': _conv,
  'jit': jax.jit(_conv),
  'scan in jit': jax.jit(lambda x: jax.lax.scan(lambda c, _: (_conv(c), None), x, None, length=2)[0]),
  'cond': lambda x: jax.lax.cond(True, _conv, lambda v: v, x),
  'while': lambda x: jax.lax.fori_loop(0, 2, lambda i, c: _conv(c), x),
  'custom_vjp': _custom,
  'gradient': jax.grad(lambda x: jnp.sum(_conv(x))),
}


@pytest.mark.parametrize('name', sorted(NESTINGS))
def test_a_convolution_is_found_at_any_depth(name):
  jaxpr = jax.make_jaxpr(NESTINGS[name])(X)
  assert has_convolution(jaxpr) and has_convolution(jaxpr.jaxpr)
  assert keep_out_of_loops(jaxpr, 'cpu')
  assert not keep_out_of_loops(jaxpr, 'gpu') and not keep_out_of_loops(jaxpr, 'tpu')


def test_no_convolution_no_loop_restriction():
  dense = jax.jit(lambda x: jax.lax.scan(lambda c, _: (jnp.tanh(c @ c), None), x, None, length=2)[0])
  jaxpr = jax.make_jaxpr(dense)(jnp.ones((3, 3)))
  assert not has_convolution(jaxpr) and not keep_out_of_loops(jaxpr, 'cpu')
