"""snjax.lipschitz takes a ConvSpec; the pre-0.2 form (input shape + geometry keywords) warns and gives the same result.

Reference: each function called with the equivalent ``snjax.ConvSpec``; the deprecated form must give the identical
array (the same computation on the same spec), so the comparison is exact.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snjax

KERNEL = jax.random.normal(jax.random.key(0), (3, 3, 2, 4), jnp.float32)
INPUT = (6, 6, 4)
GEOMETRY = dict(strides=2, padding='SAME', rhs_dilation=1, lhs_dilation=1, feature_group_count=2)
SPEC = snjax.ConvSpec(INPUT, **GEOMETRY)
CIRCULAR = snjax.ConvSpec(INPUT, strides=2, padding='CIRCULAR', feature_group_count=2)

# (function, new call's args and options, deprecated call's args and keywords)
CALLS = {
  'conv_operator_norm': (
    snjax.lipschitz.conv_operator_norm,
    ((KERNEL, SPEC), dict(tol=1e-7)),
    ((KERNEL, INPUT), dict(tol=1e-7, **GEOMETRY)),
  ),
  'conv_norm_bound': (
    snjax.lipschitz.conv_norm_bound,
    ((KERNEL, SPEC), dict(method='svd')),
    ((KERNEL, INPUT), dict(method='svd', **GEOMETRY)),
  ),
  'conv_bound_description': (
    snjax.lipschitz.conv_bound_description,
    ((KERNEL.shape, SPEC), dict(operator='fourier')),
    ((KERNEL.shape, INPUT), dict(operator='fourier', **GEOMETRY)),
  ),
  'circular_conv_singular_values': (
    snjax.lipschitz.circular_conv_singular_values,
    ((KERNEL, CIRCULAR), {}),
    ((KERNEL, INPUT), dict(strides=2, feature_group_count=2)),
  ),
}


def _same(a, b):
  if isinstance(a, tuple):
    assert a == b
  else:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('name', sorted(CALLS))
def test_new_call_form_does_not_warn(name):
  fn, (args, options), _ = CALLS[name]
  with warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)
    fn(*args, **options)


@pytest.mark.parametrize('name', sorted(CALLS))
def test_deprecated_call_form_warns_with_the_new_call_and_gives_the_same_result(name):
  fn, (args, options), (old_args, old_keywords) = CALLS[name]
  expected = fn(*args, **options)
  with pytest.warns(DeprecationWarning, match=rf'{name}\(.*input_shape.*snjax 0\.3.*snjax\.ConvSpec\(\(6, 6, 4\)') as w:
    got = fn(*old_args, **old_keywords)
  _same(got, expected)
  # The warning spells out the spec to pass, and points at the caller (this file), not at snjax.
  message = str(w[0].message)
  spec = args[1]
  assert f'strides={spec.strides!r}' in message and f'feature_group_count={spec.feature_group_count!r}' in message
  assert f'padding={spec.padding!r}' in message
  assert w[0].filename == __file__
  # The input shape as the `input_shape=` keyword: the same.
  with pytest.warns(DeprecationWarning, match=name):
    _same(fn(old_args[0], input_shape=INPUT, **old_keywords), expected)


def test_deprecated_call_form_keeps_its_defaults():
  # The old defaults (stride 1, SAME, no dilation, one group) are ConvSpec's defaults.
  kernel = KERNEL
  shape = (6, 6, 2)
  with pytest.warns(DeprecationWarning):
    old = snjax.lipschitz.conv_norm_bound(kernel, shape)
  np.testing.assert_array_equal(old, snjax.lipschitz.conv_norm_bound(kernel, snjax.ConvSpec(shape)))
  with pytest.warns(DeprecationWarning):
    old = snjax.lipschitz.conv_operator_norm(kernel, list(shape))  # any sequence of ints, as before
  np.testing.assert_array_equal(old, snjax.lipschitz.conv_operator_norm(kernel, snjax.ConvSpec(shape)))


def test_call_form_mistakes_raise_type_errors():
  with pytest.raises(TypeError, match=r"conv_norm_bound: the keywords \['strides'\] cannot be combined"):
    snjax.lipschitz.conv_norm_bound(KERNEL, SPEC, strides=2)
  with pytest.raises(TypeError, match='conv_operator_norm: missing the convolution'):
    snjax.lipschitz.conv_operator_norm(KERNEL)
  with pytest.raises(TypeError, match='conv_operator_norm: expected a snjax.ConvSpec.*dict'):
    snjax.lipschitz.conv_operator_norm(KERNEL, {'input_shape': INPUT})
  with pytest.raises(TypeError, match=r"conv_operator_norm: got unexpected keyword arguments \['stride'\]"):
    snjax.lipschitz.conv_operator_norm(KERNEL, INPUT, stride=2)
  with pytest.raises(TypeError, match="multiple values for 'input_shape'"):
    snjax.lipschitz.conv_norm_bound(KERNEL, INPUT, input_shape=INPUT)
  # circular_conv_singular_values never took a padding: its deprecated form is always circular.
  with pytest.raises(TypeError, match=r"unexpected keyword arguments \['padding'\]"):
    snjax.lipschitz.circular_conv_singular_values(KERNEL, INPUT, padding='SAME')


def test_circular_singular_values_need_a_circular_spec():
  with pytest.raises(ValueError, match="circular_conv_singular_values: spec.padding must be 'CIRCULAR'.*'SAME'"):
    snjax.lipschitz.circular_conv_singular_values(KERNEL, SPEC)
  # Any spelling flax accepts.
  lower = snjax.ConvSpec(INPUT, strides=2, padding='circular', feature_group_count=2)
  np.testing.assert_array_equal(
    snjax.lipschitz.circular_conv_singular_values(KERNEL, lower),
    snjax.lipschitz.circular_conv_singular_values(KERNEL, CIRCULAR),
  )


def test_report_passes_its_conv_specs_through_without_warnings():
  params = {'conv': {'kernel': KERNEL}}
  with warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)
    report = snjax.lipschitz.lipschitz_report(params, {'conv': SPEC})
  (row,) = report.layers
  np.testing.assert_allclose(row.operator_norm, float(snjax.lipschitz.conv_operator_norm(KERNEL, SPEC)), rtol=1e-6)
  np.testing.assert_allclose(row.bound, float(snjax.lipschitz.conv_norm_bound(KERNEL, SPEC)), rtol=1e-6)
  assert row.bound_note == snjax.lipschitz.conv_bound_description(KERNEL.shape, SPEC)[1]
