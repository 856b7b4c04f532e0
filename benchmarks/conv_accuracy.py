"""Accuracy and cost of the conv mode and of the certified bounds on the SN-GAN "standard CNN" critic at init.

Per layer (32x32x3 input, SAME padding): the reshaped-kernel norm that every peer
library normalizes by, the operator norm of the convolution (Lanczos in float64
to 1e-8, a lower bound; for Conv_0 also the exact float64 eigenvalue of the
dense A^T A built from vjps), and three certified upper bounds:

* ``default``: ``snjax.lipschitz.conv_norm_bound`` as called with no options, float32
  (the exact Gram matrix where ``D = min(in_dim, out_dim) <= 2048``, else the
  FFT embedding, 10 Gram iterations), and its time;
* ``fft(svd)``: the FFT embedding with exact per-block SVDs, float64 (the
  bound before the dense path existed);
* ``dense``: Gram iteration (18 steps) on the exact D x D Gram matrix, float64,
  where ``D <= --dense-limit`` (4096 by default: Conv_0, Conv_5, Conv_6), and
  its time.

Since ``operator <= true norm <= any bound``, ``bound/op`` certifies how close
both are. Then the conv-mode sigma of ``sn_init`` + 10 ``sn_apply`` steps
(float32), and the time per jitted ``sn_apply`` step, conv mode against matrix
mode (float32).

    PYTHONPATH=. python benchmarks/conv_accuracy.py [--repeats 20] [--dense-limit 4096] [--json out.json]

``--json`` also writes both tables (the formatted cells, as printed) to a file;
the docs render them from ``docs/results/conv_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax

jax.config.update('jax_enable_x64', True)

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import snjax  # noqa: E402
from snjax import _conv as conv_lib  # noqa: E402

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


def main(repeats: int = 20, dense_limit: int = 4096, json_path: str | None = None) -> None:
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
    'D',
    'reshaped',
    'operator',
    'dense f64',
    'default',
    's',
    'fft(svd)',
    'dense',
    's ',
    'sn_apply',
    'op/resh',
    'default/op',
    'fft/op',
    'dense/op',
    'sn/op',
  )

  def f(v, digits=4):
    return '-' if v is None else f'{v:.{digits}f}'

  def ratio(a, b):
    return '-' if a is None or b is None else f'{a / b:.6f}'

  table = [header]
  products = {'resh': 1.0, 'op': 1.0, 'default': 1.0, 'fft': 1.0, 'dense': 1.0, 'sn': 1.0}
  for name, leaf in sorted(params.items()):
    kernel = leaf['kernel']
    path = f'{name}/kernel'
    reshaped = float(np.linalg.norm(np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1]), 2))
    sigma_sn = float(sn_sigmas[path])
    spec = conv_lib.resolve_conv_spec(specs, path)
    if spec is None:  # the Dense layer: the exact norm, and Gram iteration with its margin as the bound
      b = float(snjax.lipschitz.matrix_norm_bound(kernel))
      values = dict(resh=reshaped, op=reshaped, default=b, fft=b, dense=b, sn=sigma_sn)
      for key in products:
        products[key] *= values[key]
      row = (name, '-', '-', f(reshaped), f(reshaped, 6), f(reshaped, 6), f(b, 6), '-', f(b, 6), f(b, 6), '-')
      table.append(row + (f(sigma_sn), '1.000', ratio(b, reshaped), ratio(b, reshaped), ratio(b, reshaped)))
      table[-1] += (ratio(sigma_sn, reshaped),)
      continue
    k64 = kernel.astype(jnp.float64)
    # D = min(in_dim, out_dim), the side of the exact Gram matrix.
    dim = min(int(np.prod(spec.input_shape)), int(np.prod(conv_lib.conv_output_shape(kernel.shape, spec))))
    op = float(snjax.lipschitz.conv_operator_norm(k64, spec, tol=1e-8, max_iterations=1024))
    dense = dense_gram_norm(k64, spec) if np.prod(spec.input_shape) <= 3072 else None
    start = time.perf_counter()
    b_default = float(snjax.lipschitz.conv_norm_bound(kernel, spec))
    t_default = time.perf_counter() - start
    b_fft = float(snjax.lipschitz.conv_norm_bound(k64, spec, method='svd', operator='fourier'))
    b_dense = t_dense = None
    if dim <= dense_limit:
      start = time.perf_counter()
      b_dense = float(snjax.lipschitz.conv_norm_bound(k64, spec, operator='dense'))
      t_dense = time.perf_counter() - start
    values = dict(resh=reshaped, op=op, default=b_default, fft=b_fft, dense=b_dense or b_fft, sn=sigma_sn)
    for key in products:
      products[key] *= values[key]
    table.append(
      (
        name,
        'x'.join(map(str, spec.input_shape)),
        str(dim),
        f(reshaped),
        f(op, 6),
        f(dense, 6),
        f(b_default, 6),
        f(t_default, 1),
        f(b_fft, 6),
        f(b_dense, 6),
        f(t_dense, 1),
        f(sigma_sn),
        f'{op / reshaped:.3f}',
        ratio(b_default, op),
        ratio(b_fft, op),
        ratio(b_dense, op),
        ratio(sigma_sn, op),
      )
    )
    print(' '.join(table[-1]), flush=True)
  p = products
  table.append(
    (
      'product',
      '',
      '',
      f(p['resh']),
      f(p['op']),
      '',
      f(p['default']),
      '',
      f(p['fft']),
      f(p['dense']),
      '',
      f(p['sn']),
      f'{p["op"] / p["resh"]:.3f}',
      ratio(p['default'], p['op']),
      ratio(p['fft'], p['op']),
      ratio(p['dense'], p['op']),
      ratio(p['sn'], p['op']),
    )
  )
  widths = [max(len(r[j]) for r in table) for j in range(len(header))]
  print()
  print('| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + ' |')
  print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
  for r in table[1:]:
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + ' |')
  print('(product of dense: the dense bound where computed, else fft(svd))')

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
  if json_path:
    timings = {'matrix mode (reshaped kernels)': t_matrix, 'conv mode (operator norm)': t_conv}
    timings['for scale: critic forward, batch 64'] = t_fwd
    results = {
      'dense_limit': dense_limit,
      'repeats': repeats,
      'accuracy': {'header': list(header), 'rows': [list(r) for r in table[1:]]},
      'sn_apply_ms': {k: round(v * 1e3, 2) for k, v in timings.items()},
    }
    with open(json_path, 'w') as fp:
      json.dump(results, fp, indent=1)


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--dense-limit', type=int, default=4096)
  parser.add_argument('--json', default=None, help='also write the tables to this JSON file')
  args = parser.parse_args()
  main(args.repeats, args.dense_limit, args.json)
