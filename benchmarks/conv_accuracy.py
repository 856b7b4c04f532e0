"""Accuracy and cost of the conv mode on the SN-GAN "standard CNN" critic at initialization.

Per layer (32x32x3 input, SAME padding): the reshaped-kernel norm that every peer
library normalizes by, the operator norm of the convolution (Lanczos in float64
to 1e-8, a lower bound; for Conv_0 also the exact float64 eigenvalue of the
dense A^T A), the certified upper bound (exact per-block SVD on the circular
embedding, float64) and the Gram-iteration bound (float32, 10 iterations), the
conv-mode sigma of ``sn_init`` + 10 ``sn_apply`` steps (float32), and the
ratios. Then the time per jitted ``sn_apply`` step, conv mode against matrix
mode (float32).

    PYTHONPATH=. python benchmarks/conv_accuracy.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax

jax.config.update('jax_enable_x64', True)

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import snjax  # noqa: E402
from snjax import conv as conv_lib  # noqa: E402

LAYERS = [(64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1)]


class Critic(nn.Module):
  """The SN-GAN standard CNN discriminator (Miyato et al. 2018, Table 3)."""

  @nn.compact
  def __call__(self, x):
    for features, k, s in LAYERS:
      x = nn.leaky_relu(nn.Conv(features, (k, k), strides=s, padding='SAME')(x), 0.1)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))


def dense_gram_norm(kernel, spec: snjax.ConvSpec, chunk: int = 256) -> float:
  """sqrt(lambda_max(A^T A)) from the explicit float64 A^T A (input dim must be small)."""
  n = int(np.prod(spec.input_shape))

  def gram_column(e):
    y, pullback = jax.vjp(lambda x: conv_lib.conv_apply(kernel, x, spec), e.reshape(spec.input_shape))
    return pullback(y)[0].ravel()

  cols = jax.jit(jax.vmap(gram_column))
  gram = np.concatenate([np.asarray(cols(jnp.eye(n, dtype=jnp.float64)[i : i + chunk])) for i in range(0, n, chunk)])
  return float(np.sqrt(np.linalg.eigvalsh(0.5 * (gram + gram.T))[-1]))


def timed(fn, *args, repeats: int):
  out = fn(*args)
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def main(repeats: int = 20) -> None:
  model = Critic()
  x = jnp.ones((1, 32, 32, 3), jnp.float32)
  params = jax.tree.map(lambda a: a.astype(jnp.float32), model.init(jax.random.key(0), x)['params'])
  specs = snjax.conv_specs(model, x)
  state = snjax.sn_init(jax.random.key(1), params, conv=specs)
  step = jax.jit(lambda p, s: snjax.sn_apply(p, s, conv=specs))
  for _ in range(10):
    _, state = step(params, state)
  sn_sigmas = snjax.sigmas(state)

  print(
    f'machine: {platform.machine()} {platform.processor() or ""}, {os.cpu_count()} CPUs, jax {jax.__version__}, '
    f'{jax.devices()[0].platform}'
  )
  header = (
    'layer',
    'input',
    'reshaped',
    'operator',
    'dense f64',
    'bound(svd)',
    'bound(gram)',
    'sn_apply',
    'op/resh',
    'svd/op',
    'gram/op',
    'sn/op',
  )
  rows = []
  for i, (name, leaf) in enumerate(sorted(params.items())):
    kernel = leaf['kernel']
    path = f'{name}/kernel'
    reshaped = float(np.linalg.norm(np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1]), 2))
    sigma_sn = float(sn_sigmas[path])
    spec = conv_lib.resolve_conv_spec(specs, path)
    if spec is None:
      rows.append((name, '-', reshaped, reshaped, reshaped, reshaped, reshaped, sigma_sn))
      continue
    k64 = kernel.astype(jnp.float64)
    kw = dict(strides=spec.strides, padding=spec.padding)
    op = float(snjax.conv_operator_norm(k64, spec.input_shape, tol=1e-8, max_iterations=1024, **kw))
    dense = dense_gram_norm(k64, spec) if np.prod(spec.input_shape) <= 3072 else None
    b_svd = float(snjax.conv_norm_bound(k64, spec.input_shape, method='svd', **kw))
    b_gram = float(snjax.conv_norm_bound(kernel, spec.input_shape, method='gram', n_iterations=10, **kw))
    rows.append((name, 'x'.join(map(str, spec.input_shape)), reshaped, op, dense, b_svd, b_gram, sigma_sn))
    del i

  def f(v):
    return '-' if v is None else f'{v:.4f}'

  table = [header]
  prod = np.ones(7)
  for name, inp, resh, op, dense, b_svd, b_gram, sn in rows:
    prod *= [resh, op, 1.0, b_svd, b_gram, sn, 1.0]
    table.append(
      (
        name,
        inp,
        f(resh),
        f(op),
        f(dense),
        f(b_svd),
        f(b_gram),
        f(sn),
        f'{op / resh:.3f}',
        f'{b_svd / op:.4f}',
        f'{b_gram / op:.4f}',
        f'{sn / op:.4f}',
      )
    )
  table.append(
    (
      'product',
      '',
      f(prod[0]),
      f(prod[1]),
      '',
      f(prod[3]),
      f(prod[4]),
      f(prod[5]),
      f'{prod[1] / prod[0]:.3f}',
      f'{prod[3] / prod[1]:.4f}',
      f'{prod[4] / prod[1]:.4f}',
      f'{prod[5] / prod[1]:.4f}',
    )
  )
  widths = [max(len(r[j]) for r in table) for j in range(len(header))]
  print()
  print('| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + ' |')
  print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
  for r in table[1:]:
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + ' |')

  matrix_state = snjax.sn_init(jax.random.key(1), params)
  matrix_step = jax.jit(lambda p, s: snjax.sn_apply(p, s))
  t_matrix = timed(matrix_step, params, matrix_state, repeats=repeats)
  t_conv = timed(step, params, state, repeats=repeats)
  forward = jax.jit(lambda p, xb: model.apply({'params': p}, xb))
  xb = jnp.ones((64, 32, 32, 3), jnp.float32)
  t_fwd = timed(forward, params, xb, repeats=max(repeats // 4, 2))
  print()
  print('| sn_apply step (jit, float32, 1 power iteration) | ms |')
  print('|---|---|')
  print(f'| matrix mode (reshaped kernels) | {t_matrix * 1e3:.2f} |')
  print(f'| conv mode (operator norm) | {t_conv * 1e3:.2f} |')
  print(f'| for scale: critic forward, batch 64 | {t_fwd * 1e3:.2f} |')


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=20)
  main(parser.parse_args().repeats)
