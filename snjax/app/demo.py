"""A demo: normalize a Flax critic and compare each layer's sigma with the SVD."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from snjax._layout import kernel_matrix, resolve_layout
from snjax._selection import path_str
from snjax.transform import _flatten, sn_apply, sn_init


class _Critic(nn.Module):
  """The SN-GAN "standard CNN" critic (Miyato et al. 2018, Table 3), for 32x32 inputs."""

  @nn.compact
  def __call__(self, x):
    for features, k, s in [(64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1)]:
      x = nn.leaky_relu(nn.Conv(features, (k, k), (s, s))(x), 0.1)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))


def _svd_norms(params):
  out = {}
  for keys, leaf in _flatten(params)[0]:
    if keys[-1] == 'kernel':
      m = np.asarray(kernel_matrix(leaf, resolve_layout(None, path_str(keys), leaf)), np.float64)
      out[path_str(keys)] = float(np.linalg.norm(m, 2))
  return out


def main(seed: int = 0, steps: int = 3) -> int:
  """Prints each layer's sigma before and after normalization against the SVD value."""
  model = _Critic()
  params = model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)))['params']
  state = sn_init(jax.random.key(seed + 1), params)
  apply = jax.jit(sn_apply)
  for _ in range(steps):
    params_sn, state = apply(params, state)
  before, after = _svd_norms(params), _svd_norms(params_sn)
  est = {k: float(v['kernel']['sigma']) for k, v in state.items()}
  print(f'SN-GAN standard CNN critic, seed {seed}, {steps} training calls of sn_apply')
  print(f'{"layer":<12}{"sigma (SVD)":>14}{"estimate":>12}{"rel. err":>10}{"after SN (SVD)":>16}')
  for path in before:
    name = path.split('/')[0]
    print(
      f'{name:<12}{before[path]:>14.5f}{est[name]:>12.5f}{(before[path] - est[name]) / before[path]:>10.1e}'
      f'{after[path]:>16.5f}'
    )
  x = jax.random.normal(jax.random.key(seed + 2), (4, 32, 32, 3))
  print('critic output, raw:', np.round(np.asarray(model.apply({'params': params}, x))[:, 0], 4))
  print('critic output, SN: ', np.round(np.asarray(model.apply({'params': params_sn}, x))[:, 0], 4))
  return 0
