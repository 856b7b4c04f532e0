"""``snjax demo``: normalize a Flax critic and compare each layer's sigma with the SVD.

The critic is the SN-GAN "standard CNN" (Miyato et al. 2018,
https://arxiv.org/abs/1802.05957, Table 3). For each kernel the demo prints
its largest singular value (float64 SVD of its matrix, :func:`snjax.kernel_matrix`),
the power-iteration estimate of :func:`snjax.sn_apply`, their relative
difference, and the largest singular value after normalization (about 1).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import snjax


class _Critic(nn.Module):
  """The SN-GAN "standard CNN" critic (Miyato et al. 2018, Table 3), for 32x32 inputs."""

  @nn.compact
  def __call__(self, x):
    for features, k, s in [(64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1)]:
      x = nn.leaky_relu(nn.Conv(features, (k, k), (s, s))(x), 0.1)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))


def _keys(key_path) -> tuple[str, ...]:
  """``('Conv_0', 'kernel')``: the dict keys of a params key path."""
  return tuple(str(getattr(k, 'key', k)) for k in key_path)


def svd_norms(params) -> dict[str, float]:
  """The largest singular value (float64 SVD) of each ``kernel`` in a Flax params tree, by path.

  Args:
    params: Flax linen params (``variables['params']``).

  Returns:
    ``{'Conv_0/kernel': sigma, ...}`` in the params' order.
  """
  out = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = _keys(key_path)
    path = '/'.join(keys)
    if keys[-1] == 'kernel':
      m = np.asarray(snjax.kernel_matrix(leaf, snjax.resolve_layout(None, path, leaf)), np.float64)
      out[path] = float(np.linalg.norm(m, 2))
  return out


def main(seed: int = 0, steps: int = 3) -> int:
  """Prints each layer's sigma before and after normalization against the SVD value.

  Args:
    seed: the seed of the params, the power-iteration vectors and the inputs.
    steps: calls of :func:`snjax.sn_apply` (each one power step per kernel) before the comparison.

  Returns:
    0 (the exit status).
  """
  model = _Critic()
  # Compiled whole (run op by op, each layer's operations would compile one by one).
  params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)))['params']
  state = snjax.sn_init(jax.random.key(seed + 1), params)
  apply = jax.jit(snjax.sn_apply)
  params_sn = params
  for _ in range(steps):
    params_sn, state = apply(params, state)
  before, after = svd_norms(params), svd_norms(params_sn)
  est = {path: float(sigma) for path, sigma in snjax.sigmas(state).items()}
  print(f'SN-GAN standard CNN critic, seed {seed}, {steps} training calls of sn_apply')
  print(f'{"layer":<12}{"sigma (SVD)":>14}{"estimate":>12}{"rel. err":>10}{"after SN (SVD)":>16}')
  for path in before:
    name = path.split('/')[0]
    print(
      f'{name:<12}{before[path]:>14.5f}{est[path]:>12.5f}{(before[path] - est[path]) / before[path]:>10.1e}'
      f'{after[path]:>16.5f}'
    )
  x = jax.random.normal(jax.random.key(seed + 2), (4, 32, 32, 3))
  critic = jax.jit(model.apply)
  print('critic output, raw:', np.round(np.asarray(critic({'params': params}, x))[:, 0], 4))
  print('critic output, SN: ', np.round(np.asarray(critic({'params': params_sn}, x))[:, 0], 4))
  return 0
