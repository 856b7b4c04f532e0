"""GAN train steps in loops on XLA:CPU: ``lax.scan`` against unrolled / Python-driven steps, conv and MLP.

XLA:CPU rewrites a convolution into the layout of its fast kernels (Eigen /
YNNPACK: input NHWC, kernel HWIO) in the pass ``convolution-canonicalization``,
which visits only the entry computation. A convolution inside a ``while`` loop
(a ``lax.scan``; even one of trip count 1, which is inlined only later) keeps
the dimension numbers that autodiff gave it: the backward convolutions of a
conv critic (``dim_labels`` like ``f01b_i01o->01bf`` for the kernel gradient,
a reversed ``01oi`` kernel for the input gradient) then run as XLA's naive
emitted loops. This script shows it and times the ways around it:

* ``micro``: one gradient step of one conv layer, jitted alone, inside a
  ``lax.scan`` of length 1 and 10, unrolled: time and the convolutions'
  ``dim_labels`` in the optimized HLO.
* ``steps``: ``snjax train``'s models (``digits``: ConvCritic/ConvGenerator on
  8x8; ``grid25``: the MLPs), steps/s of its chunk function
  (:func:`snjax.app.chunks.make_chunk`) in both modes, ``scan`` (one ``lax.scan``
  over the steps) and ``loop`` (a Python loop over one jitted train step),
  interleaved rounds, medians of wall and CPU time, and the count of
  non-canonical convolutions in each compiled program.

Usage (from the repository root)::

  python -m benchmarks.train_step_scan                  # both sections, a few minutes on 2 CPU cores
  python -m benchmarks.train_step_scan --sections steps --datasets digits --rounds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ''):
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
  __package__ = 'benchmarks'  # noqa: A001

import jax
import jax.numpy as jnp

from benchmarks._timing import block, interleaved, median

CANONICAL = 'b01f_01io->b01f'


def conv_labels(compiled_text: str) -> list[str]:
  """The ``dim_labels`` of every convolution in an optimized HLO module's text."""
  return re.findall(r'convolution\([^)]*\), window=\{[^}]*\}, dim_labels=([^ ,\s]+)', compiled_text)


def non_canonical(compiled_text: str) -> int:
  return sum(label != CANONICAL for label in conv_labels(compiled_text))


def micro(rounds: int) -> None:
  x = jax.random.normal(jax.random.key(0), (64, 8, 8, 16))
  w = 0.1 * jax.random.normal(jax.random.key(1), (3, 3, 16, 32))

  def step(w):
    def loss(w):
      y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      return jnp.sum(jnp.tanh(y))

    return w - 1e-3 * jax.grad(loss)(w)

  def scanned(n):
    return lambda w: jax.lax.scan(lambda w, _: (step(w), None), w, None, length=n)[0]

  def unrolled(n):
    def f(w):
      for _ in range(n):
        w = step(w)
      return w

    return f

  variants = {
    'one step': (step, 1),
    'scan, length 1': (scanned(1), 1),
    'scan, length 10': (scanned(10), 10),
    'unrolled x10': (unrolled(10), 10),
  }
  fns, steps, labels = {}, {}, {}
  for name, (f, n) in variants.items():
    jf = jax.jit(f)
    labels[name] = sorted(set(conv_labels(jf.lower(w).compile().as_text())))
    fns[name] = lambda jf=jf: block(jf(w))
    steps[name] = n
  cpu: dict = {}
  wall = interleaved(fns, rounds=rounds, inner=3, cpu=cpu)
  print('\n## micro: conv 3x3 16->32 on 64x8x8x16, one gradient step (forward, both backward convs, update)')
  print('| variant | wall ms/step | CPU ms/step | conv dim_labels in the optimized HLO |\n|---|---|---|---|')
  for name in variants:
    n = steps[name]
    print(
      f'| {name} | {1e3 * median(wall[name]) / n:.2f} | {1e3 * median(cpu[name]) / n:.2f} | {", ".join(labels[name])} |'
    )


def _machinery(dataset_name: str):
  from snjax.app import run
  from snjax.app import trainer as gan_setup
  from snjax.app.config import TrainConfig
  from snjax.gan import data_mesh

  config = TrainConfig.for_dataset(dataset_name)
  mesh = data_mesh()
  dataset, generator, critic, trainer, _ = run._machinery(dataclasses.replace(config, seed=0, steps=1), mesh)
  state = gan_setup.init_state(config, dataset, generator, critic, trainer)
  return config, dataset, trainer, state


def _one_step_fn(config, dataset, trainer):
  """The jitted program of one ``snjax train`` step (data drawn inside), as in :func:`snjax.app.chunks.make_chunk`."""
  from snjax.app import data

  sampler, shape = data.make_sampler(dataset), data.sample_shape(dataset)
  n, b = config.n_critic, config.batch_size

  def one(state, data_key, step):
    real = sampler(jax.random.fold_in(data_key, step), n * b).reshape(n, b, *shape)
    return trainer.train_step(state, real)

  return one


def _time_dataset(name: str, rounds: int, length: int) -> None:
  from snjax.app import chunks
  from snjax.app import trainer as gan_setup

  config, dataset, trainer, state0 = _machinery(name)
  k_data = gan_setup.run_keys(0).data
  one = _one_step_fn(config, dataset, trainer)
  scan_text = (
    jax.jit(lambda s, k: jax.lax.scan(lambda s, t: one(s, k, t), s, jnp.arange(length)))
    .lower(state0, k_data)
    .compile()
    .as_text()
  )
  loop_text = jax.jit(one).lower(state0, k_data, jnp.int32(0)).compile().as_text()
  noncanon = {'scan': non_canonical(scan_text), 'loop': non_canonical(loop_text)}
  fns, compile_s = {}, {}
  for mode in ('scan', 'loop'):
    chunk = chunks.make_chunk(config, dataset, trainer, mode=mode)
    t0 = time.perf_counter()
    block(chunk(state0, k_data, jnp.int32(0), length))
    compile_s[mode] = time.perf_counter() - t0
    box = {'state': state0, 'step': length}

    def run(chunk=chunk, box=box):
      box['state'], _ = block(chunk(box['state'], k_data, jnp.int32(box['step']), length))
      box['step'] += length

    fns[mode] = run
  cpu: dict = {}
  wall = interleaved(fns, rounds=rounds, inner=1, warmup=1, cpu=cpu)
  for mode in fns:
    print(
      f'| {name} | {mode} | {compile_s[mode]:.1f} | {length / median(wall[mode]):.1f} | '
      f'{1e3 * median(cpu[mode]) / length:.2f} | {noncanon[mode]} |'
    )


def steps_section(datasets: list[str], rounds: int, length: int) -> None:
  print(f'\n## steps: snjax train chunks of {length} steps (median of {rounds} interleaved rounds)')
  print('| dataset | mode | compile + first chunk s | wall steps/s | CPU ms/step | non-canonical convs |')
  print('|---|---|---|---|---|---|')
  for name in datasets:
    _time_dataset(name, rounds, length)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sections', default='micro,steps', help='comma-separated: micro, steps')
  parser.add_argument('--datasets', default='digits,grid25', help='comma-separated: digits, grid25, ring8')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--length', type=int, default=20, help='steps per timed chunk')
  args = parser.parse_args(argv)
  load = os.getloadavg() if hasattr(os, 'getloadavg') else None
  print(f'jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, load average {load}')
  sections = args.sections.split(',')
  if 'micro' in sections:
    micro(args.rounds)
  if 'steps' in sections:
    steps_section(args.datasets.split(','), args.rounds, args.length)


if __name__ == '__main__':
  main()
