"""snjax.lipschitz.lipschitz_report: per-layer reshaped norm, operator norm and certified bound, against dense SVDs."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snjax
from tests._conv_testing import conv_norm


class TinyCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(3, (3, 3), padding='SAME')(x))
    x = nn.relu(nn.Conv(4, (2, 2), strides=2, padding='VALID')(x))
    return nn.Dense(2)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope='module')
def report_and_params():
  model = TinyCNN()
  x = jnp.ones((1, 6, 6, 2))
  params = jax.jit(model.init)(jax.random.key(0), x)['params']  # one compilation, not one per operation
  return snjax.lipschitz.lipschitz_report(params, snjax.conv_specs(model, x)), params


def test_rows_match_dense_references(report_and_params):
  report, params = report_and_params
  rows = {r.path: r for r in report.layers}
  assert list(rows) == ['Conv_0/kernel', 'Conv_1/kernel', 'Dense_0/kernel']
  truths = {
    'Conv_0/kernel': conv_norm(params['Conv_0']['kernel'], (6, 6, 2), padding='SAME'),
    'Conv_1/kernel': conv_norm(params['Conv_1']['kernel'], (6, 6, 3), strides=2, padding='VALID'),
    'Dense_0/kernel': float(np.linalg.norm(np.asarray(params['Dense_0']['kernel'], np.float64), 2)),
  }
  for path, row in rows.items():
    kernel = np.asarray(params[path.split('/')[0]]['kernel'], np.float64)
    np.testing.assert_allclose(row.reshaped_norm, np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), 2), rtol=1e-6)
    np.testing.assert_allclose(row.operator_norm, truths[path], rtol=1e-3)
    # Small layers: the bound is Gram iteration on the exact Gram matrix (convs) or on the kernel (dense).
    assert truths[path] <= row.bound <= truths[path] * (1 + 1e-3)
  assert rows['Conv_0/kernel'].kind == 'conv' and rows['Dense_0/kernel'].kind == 'dense'
  assert rows['Conv_0/kernel'].input_shape == (6, 6, 2)
  assert rows['Conv_0/kernel'].bound_note.startswith('exact Gram matrix')
  np.testing.assert_allclose(report.reshaped_product, math.prod(r.reshaped_norm for r in report.layers))
  np.testing.assert_allclose(report.operator_product, math.prod(truths.values()), rtol=3e-3)
  assert report.bound_product >= report.operator_product
  # dense_limit=0: the FFT bounds only; the embedding is looser on the 3x3 SAME conv on 6x6.
  model, x = TinyCNN(), jnp.ones((1, 6, 6, 2))
  fft = snjax.lipschitz.lipschitz_report(params, snjax.conv_specs(model, x), dense_limit=0)
  for row in fft.layers:
    assert row.bound >= truths[row.path]
  assert fft.layers[0].bound > report.layers[0].bound * 1.005
  assert 'embedding' in fft.layers[0].bound_note


def test_table_prints_every_layer_and_the_product(report_and_params):
  report, _ = report_and_params
  text = str(report)
  for name in ('Conv_0/kernel', 'Conv_1/kernel', 'Dense_0/kernel', 'product', 'bound/op'):
    assert name in text
  assert f'{report.operator_product:.4f}' in text


def test_conv_without_spec_and_stacked_layers():
  params = {'conv': {'kernel': jnp.ones((3, 3, 2, 2))}, 'stack': {'kernel': jnp.stack([jnp.eye(3), 2 * jnp.eye(3)])}}
  report = snjax.lipschitz.lipschitz_report(params, layout={'stack': snjax.KernelLayout((-1,), (0,))})
  rows = {r.path: r for r in report.layers}
  assert rows['conv/kernel'].kind == 'conv?' and rows['conv/kernel'].operator_norm is None
  assert report.operator_product is None and report.bound_product is None
  np.testing.assert_allclose(rows['stack/kernel[0]'].operator_norm, 1.0)
  np.testing.assert_allclose(rows['stack/kernel[1]'].operator_norm, 2.0)
  assert rows['stack/kernel[1]'].bound >= 2.0
  with pytest.raises(ValueError, match='conv/kernel: .*input channels'):
    snjax.lipschitz.lipschitz_report(params, {'conv': snjax.ConvSpec((5, 5, 3))})
