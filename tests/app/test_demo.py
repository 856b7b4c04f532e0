"""Tests of snjax.app.demo: each kernel's sigma by float64 SVD, and the demo's table against it."""

import jax
import numpy as np
import pytest

from snjax.app import demo


def test_svd_norms_are_the_kernels_largest_singular_values():
  """Against the SVD of each kernel's matrix (Flax layout: the output features are the last axis)."""
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = {
    'Conv_0': {'kernel': jax.random.normal(k1, (3, 3, 2, 5)), 'bias': jax.random.normal(k2, (5,))},
    'Dense_0': {'kernel': jax.random.normal(k3, (7, 4)), 'bias': np.zeros(4, np.float32)},
  }
  norms = demo.svd_norms(params)
  assert list(norms) == ['Conv_0/kernel', 'Dense_0/kernel']
  for path, kernel in (('Conv_0/kernel', params['Conv_0']['kernel']), ('Dense_0/kernel', params['Dense_0']['kernel'])):
    matrix = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    assert norms[path] == pytest.approx(np.linalg.svd(matrix, compute_uv=False)[0], rel=1e-12), path


def test_demo_table(capsys):
  assert demo.main(seed=0, steps=3) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == 'SN-GAN standard CNN critic, seed 0, 3 training calls of sn_apply'
  assert lines[1].split()[0] == 'layer'
  rows = [line.split() for line in lines[2:-2]]
  assert [r[0] for r in rows] == [f'Conv_{i}' for i in range(7)] + ['Dense_0']
  assert lines[-2].startswith('critic output, raw:') and lines[-1].startswith('critic output, SN:')
  for name, svd, est, rel, after in ((r[0], *map(float, r[1:])) for r in rows):
    # The power-iteration estimate is a Rayleigh quotient, at most sigma up to float32 rounding of products of
    # length fan_in <= 4 * 4 * 512 = 8192 (relative n * 2^-24 = 4.9e-4), plus 5e-6 from printing 5 decimals.
    assert est <= svd * (1 + 8192 * 2.0**-24) + 5e-6, name
    assert rel == pytest.approx((svd - est) / svd, abs=1e-5 / svd + 0.05 * abs(rel)), name
    # After normalization the kernel is W / est: its sigma is svd / est, up to the printed digits (each +-5e-6).
    assert after == pytest.approx(svd / est, abs=5e-6 + (svd / est) * (5e-6 / svd + 5e-6 / est)), name
