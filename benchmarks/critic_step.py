"""Critic train step with and without spectral norm, snjax against every peer.

Times one full critic train step (forward on the real and the fake batch,
hinge loss, backward, Adam update; jitted for JAX, eager for torch) plain and
with spectral norm on every layer, for snjax (``sn_apply`` and the Flax module
wrapper ``snjax.linen.SpectralNorm``), ``flax.linen.SpectralNorm``,
``haiku.SNParamsTree``, ``equinox.nn.SpectralNorm`` and torch's
``parametrizations.spectral_norm``, on the SN-GAN standard CNN critic and the
WGAN toy MLP critic. Variants run interleaved (round-robin, rotated order);
times are medians over rounds and each overhead is the median of the per-round
ratios t_SN / t_plain - 1 against the plain step of the same framework.

Also: jit compile time with and without SN (each variant compiled in fresh
processes, tracing/lowering and XLA's compile timed apart), peak memory
(XLA's memory analysis of the compiled step), the time of ``sn_apply`` alone
against the memory-bandwidth floor of two passes over the weights, and how
the overhead changes with batch size and width.

Usage (from the repository root)::

  python -m benchmarks.critic_step --quick        # a minute or two on a laptop CPU
  python -m benchmarks.critic_step                # the README's table
  python -m benchmarks.critic_step --sections step --critics mlp --frameworks snjax,flax

Works unchanged on a GPU (JAX's default device; torch uses CUDA when present).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ''):
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
  __package__ = 'benchmarks'  # noqa: A001

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _critics as C
from benchmarks import _timing as T

SECTIONS = ('step', 'compile', 'memory', 'sn_alone', 'scaling')


def _machine() -> str:
  model = platform.processor() or platform.machine()
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
      if line.startswith('Model name:'):
        model = line.split(':', 1)[1].strip()
  except OSError:
    pass
  import os

  dev = jax.devices()[0]
  return f'{os.cpu_count()} CPU cores ({model}); JAX device: {dev.platform} {dev.device_kind}'


def _versions() -> str:
  out = [f'python {platform.python_version()}', f'jax {jax.__version__}']
  for name in ('flax', 'optax', 'haiku', 'equinox', 'torch'):
    try:
      mod = __import__(name)
      out.append(f'{name} {mod.__version__}')
    except ImportError:
      out.append(f'{name} (not installed)')
  return ', '.join(out)


def _available(framework: str) -> bool:
  mod = {'snjax': 'flax', 'flax': 'flax', 'haiku': 'haiku', 'equinox': 'equinox', 'torch': 'torch'}[framework]
  try:
    __import__(mod)
  except ImportError:
    print(f'note: {framework} skipped ({mod} is not installed; pip install -e ".[bench]")')
    return False
  return True


_CACHE: dict = {}


def _variants(frameworks, spec):
  """Builds {label: Runner} and the pairs (sn_label, plain_label) to compare (cached per spec)."""
  key = (tuple(frameworks), repr(spec))
  if key not in _CACHE:
    _CACHE[key] = _build_variants(frameworks, spec)
  return _CACHE[key]


def _build_variants(frameworks, spec):
  runners, pairs = {}, []
  for fw in frameworks:
    if not _available(fw):
      continue
    plain_label, plain_build, sn_builds = C.FRAMEWORKS[fw]
    if plain_label not in runners:
      runners[plain_label] = plain_build(spec)
    for label, build in sn_builds.items():
      if label == 'snjax.linen.SpectralNorm' and not C.snjax_module_available():
        print('note: snjax.linen.SpectralNorm skipped (snjax/linen.py does not exist yet)')
        continue
      runners[label] = build(spec)
      pairs.append((label, plain_label))
  return runners, pairs


def _describe(spec: C.Spec) -> str:
  if spec.critic == 'cnn':
    return f'SN-GAN standard CNN critic, 32x32x3, batch {spec.batch} real + {spec.batch} fake'
  dims = '-'.join(['2'] + [str(spec.width)] * spec.depth + ['1'])
  return f'MLP critic {dims}, batch {spec.batch} real + {spec.batch} fake'


def section_step(specs, frameworks, rounds, inner, results):
  print('\n## Critic train step (hinge loss, Adam), plain vs spectral norm on every layer')
  print('\nWall: median step time and the median per-round overhead. CPU: the same from the CPU time of this')
  print('process (all threads), the work done, robust to other jobs on a shared machine.')
  print('\n| critic | variant (baseline) | plain step | with SN | overhead (wall) | overhead (CPU time) |')
  print('|---|---|---|---|---|---|')
  for spec in specs:
    runners, pairs = _variants(frameworks, spec)
    cpu: dict = {}
    times = T.interleaved({k: r.step for k, r in runners.items()}, rounds=rounds, inner=inner, cpu=cpu)
    for sn_label, plain_label in pairs:
      over = T.paired_overhead(times[sn_label], times[plain_label])
      over_cpu = T.paired_overhead(cpu[sn_label], cpu[plain_label])
      t_plain, t_sn = T.median(times[plain_label]), T.median(times[sn_label])
      print(
        f'| {_describe(spec)} | {sn_label} ({plain_label}) | {t_plain * 1e3:.2f} ms | {t_sn * 1e3:.2f} ms '
        f'| {over * 100:+.1f}% | {over_cpu * 100:+.1f}% |',
        flush=True,
      )
      results.setdefault('step', []).append(
        dict(
          critic=_describe(spec),
          variant=sn_label,
          plain=plain_label,
          plain_s=t_plain,
          sn_s=t_sn,
          overhead=over,
          overhead_cpu=over_cpu,
        )
      )


def _compile_one(spec: C.Spec, label: str) -> dict:
  """Builds (and so compiles) one variant in this process; returns its lower / compile times."""
  jax.config.update('jax_enable_compilation_cache', False)  # a persistent cache would hide the compile
  for plain_label, plain_build, sn_builds in C.FRAMEWORKS.values():
    builds = {plain_label: plain_build, **sn_builds}
    if label in builds:
      runner = builds[label](spec)
      return runner.times or {}
  raise ValueError(f'unknown variant {label!r}')


def section_compile(specs, frameworks, repeats, results):
  """Compile times, each from a fresh process (no in-process caches, no order effects), interleaved."""
  print('\n## jit compile time of the train step, plain vs spectral norm')
  print(f'\nEach variant compiled in a fresh process, {repeats} processes per variant, round-robin; medians.')
  print('lower = tracing + lowering to StableHLO (Python); compile = XLA. CPU: CPU time of that process.')
  print('\n| critic | variant | lower | compile | compile (CPU time) | lower + compile |')
  print('|---|---|---|---|---|---|')
  for spec in specs:
    labels = []
    for fw in frameworks:
      if fw == 'torch' or not _available(fw):
        continue
      plain_label, _, sn_builds = C.FRAMEWORKS[fw]
      for label in (plain_label, *sn_builds):
        if label == 'snjax.linen.SpectralNorm' and not C.snjax_module_available():
          continue
        if label not in labels:
          labels.append(label)
    runs: dict = {label: [] for label in labels}
    for r in range(repeats):
      for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
        arg = f'{spec.critic}:{spec.batch}:{spec.width}:{spec.depth}:{label}'
        cmd = [sys.executable, '-m', 'benchmarks.critic_step', '--compile-one', arg]
        cwd = str(Path(__file__).resolve().parent.parent)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=cwd).stdout
        runs[label].append(json.loads(out.strip().splitlines()[-1]))
    for label in labels:
      med = {k: T.median([t[k] for t in runs[label]]) for k in runs[label][0]}
      print(
        f'| {_describe(spec)} | {label} | {med["lower"]:.2f} s | {med["compile"]:.2f} s | {med["compile_cpu"]:.2f} s '
        f'| {T.median([t["lower"] + t["compile"] for t in runs[label]]):.2f} s |',
        flush=True,
      )
      results.setdefault('compile', []).append(dict(critic=_describe(spec), variant=label, runs=runs[label], **med))


def section_memory(spec, frameworks, results):
  print('\n## Memory of the compiled train step (XLA memory analysis; the train state is donated)')
  print('\n| critic | variant | arguments | temporaries | peak (args + out - aliased + temps) |')
  print('|---|---|---|---|---|')
  runners, _ = _variants(frameworks, spec)
  for label, runner in runners.items():
    m = runner.memory
    if m is None:
      continue
    peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    mib = 1 / 2**20
    print(
      f'| {_describe(spec)} | {label} | {m.argument_size_in_bytes * mib:.1f} MiB '
      f'| {m.temp_size_in_bytes * mib:.1f} MiB | {peak * mib:.1f} MiB |',
      flush=True,
    )
    results.setdefault('memory', []).append(
      dict(variant=label, arguments=m.argument_size_in_bytes, temps=m.temp_size_in_bytes, peak=peak)
    )


def section_sn_alone(specs, rounds, results):
  import snjax
  from snjax import _power as power
  from snjax._layout import resolve_layout

  print('\n## Spectral norm alone (all layers, jitted) vs the memory-bandwidth floor')
  print('\nFloors from a jitted sum (one read) and x * 2 (one read + one write) over a buffer of the same size')
  print('as the weights: the power iteration needs two reads of every weight (M u, then M^T v), sn_apply')
  print('also writes W / sigma (a read and a write), evaluation only that.')
  print(
    '\n| critic | weights | power iteration | floor: 2 reads | sn_apply | floor: 3 reads + 1 write '
    '| sn_apply eval | floor: 1 read + 1 write |'
  )
  print('|---|---|---|---|---|---|---|---|')
  for spec in specs:
    model = C._flax_model(spec, 'none')
    params = C._flax_init(model, spec)['params']
    state = snjax.sn_init(jax.random.key(1), params)
    kernels = {k: v['kernel'] for k, v in params.items()}
    us = {k: state[k]['kernel']['u'] for k in kernels}
    lays = {k: resolve_layout(None, k, v) for k, v in kernels.items()}
    n_bytes = sum(k.size * k.dtype.itemsize for k in kernels.values())
    iterate = jax.jit(lambda ks, us: {k: power.power_iteration(ks[k], us[k], lays[k]) for k in ks})  # noqa: B023
    train = jax.jit(lambda p, s: snjax.sn_apply(p, s))
    evaluate = jax.jit(lambda p, s: snjax.sn_apply(p, s, update=False)[0])
    x = jax.device_put(jnp.ones(n_bytes // 4, jnp.float32))
    reduce_fn, copy_fn = jax.jit(jnp.sum), jax.jit(lambda a: a * 2.0)
    fns = {
      'iterate': lambda f=iterate, k=kernels, u=us: T.block(f(k, u)),
      'train': lambda f=train, p=params, s=state: T.block(f(p, s)),
      'eval': lambda f=evaluate, p=params, s=state: T.block(f(p, s)),
      'read': lambda f=reduce_fn, a=x: T.block(f(a)),
      'copy': lambda f=copy_fn, a=x: T.block(f(a)),
    }
    t = {k: T.median(v) for k, v in T.interleaved(fns, rounds=rounds, inner=10).items()}
    us_ = {k: f'{v * 1e6:.0f} us' for k, v in t.items()}
    print(
      f'| {_describe(spec)} | {n_bytes / 2**20:.2f} MiB | {us_["iterate"]} | {2 * t["read"] * 1e6:.0f} us '
      f'| {us_["train"]} | {(2 * t["read"] + t["copy"]) * 1e6:.0f} us | {us_["eval"]} | {us_["copy"]} |',
      flush=True,
    )
    results.setdefault('sn_alone', []).append(
      dict(critic=_describe(spec), weight_bytes=n_bytes, read_bandwidth=n_bytes / t['read'], **t)
    )


def section_scaling(batch_sizes, widths, frameworks, rounds, inner, results):
  print('\n## Overhead against batch size (CNN critic) and width (MLP critic, batch 256 + 256)')
  print('\nEach cell: overhead in wall time / in CPU time (plain step time).')
  fws = [f for f in ('snjax', 'flax') if f in frameworks]
  specs = [C.Spec('cnn', b) for b in batch_sizes] + [C.Spec('mlp', 256, width=w) for w in widths]
  header_done = False
  for spec in specs:
    runners, pairs = _variants(fws, spec)
    if not header_done:
      print('\n| critic | ' + ' | '.join(sn for sn, _ in pairs) + ' |')
      print('|---|' + '---|' * len(pairs))
      header_done = True
    cpu: dict = {}
    times = T.interleaved({k: r.step for k, r in runners.items()}, rounds=rounds, inner=inner, cpu=cpu)
    cells = []
    for sn_label, plain_label in pairs:
      over = T.paired_overhead(times[sn_label], times[plain_label])
      over_cpu = T.paired_overhead(cpu[sn_label], cpu[plain_label])
      cells.append(f'{over * 100:+.1f}% / {over_cpu * 100:+.1f}% ({T.median(times[plain_label]) * 1e3:.1f} ms)')
      results.setdefault('scaling', []).append(
        dict(critic=_describe(spec), variant=sn_label, overhead=over, overhead_cpu=over_cpu)
      )
    print(f'| {_describe(spec)} | ' + ' | '.join(cells) + ' |', flush=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='few rounds, small scaling sweep (a minute or two)')
  parser.add_argument('--rounds', type=int, default=None, help='interleaved rounds (default 5 quick, 21 full)')
  parser.add_argument('--inner', type=int, default=None, help='steps per variant per round (default 2 quick, 3 full)')
  parser.add_argument('--critics', default='cnn,mlp', help='comma list of cnn, mlp')
  parser.add_argument('--frameworks', default='snjax,flax,haiku,equinox,torch', help='comma list')
  parser.add_argument('--sections', default=','.join(SECTIONS), help='comma list of ' + ', '.join(SECTIONS))
  parser.add_argument('--cnn-batch', type=int, default=16, help='CNN batch per side (real, fake)')
  parser.add_argument('--mlp-batch', type=int, default=256, help='MLP batch per side (real, fake)')
  parser.add_argument('--scaling-batches', default=None, help='CNN batches per side for the scaling sweep (4,16,64)')
  parser.add_argument('--scaling-widths', default=None, help='MLP widths for the scaling sweep (128,512,1024)')
  parser.add_argument('--compile-repeats', type=int, default=None, help='fresh processes per variant (3 quick, 5)')
  parser.add_argument('--json', default=None, help='also write the results to this JSON file')
  parser.add_argument('--compile-one', default=None, help=argparse.SUPPRESS)  # internal: one compile, JSON out
  args = parser.parse_args(argv)
  if args.compile_one:
    critic, batch, width, depth, label = args.compile_one.split(':', 4)
    print(json.dumps(_compile_one(C.Spec(critic, int(batch), int(width), int(depth)), label)))
    return 0

  rounds = args.rounds or (5 if args.quick else 21)
  inner = args.inner or (2 if args.quick else 3)
  frameworks = [f.strip() for f in args.frameworks.split(',') if f.strip()]
  unknown = sorted(set(frameworks) - set(C.FRAMEWORKS))
  if unknown:
    parser.error(f'--frameworks: unknown {unknown}; expected names from {sorted(C.FRAMEWORKS)}')
  sections = [s.strip() for s in args.sections.split(',') if s.strip()]
  if set(sections) - set(SECTIONS):
    parser.error(f'--sections: unknown {sorted(set(sections) - set(SECTIONS))}; expected names from {SECTIONS}')
  critics = [c.strip() for c in args.critics.split(',') if c.strip()]
  specs = [C.Spec(c, args.cnn_batch if c == 'cnn' else args.mlp_batch) for c in critics]

  print(f'# snjax critic-step benchmark ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})')
  import os

  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  print(f'machine: {_machine()}; load average at start: {load}\nversions: {_versions()}')
  print(f'rounds {rounds} x {inner} steps per variant, interleaved; medians; command: {" ".join(sys.argv)}')
  np.random.seed(0)
  results: dict = {}
  if 'step' in sections:
    section_step(specs, frameworks, rounds, inner, results)
  if 'compile' in sections:
    section_compile(specs, frameworks, args.compile_repeats or (3 if args.quick else 5), results)
  if 'memory' in sections and 'cnn' in critics:
    section_memory(next(s for s in specs if s.critic == 'cnn'), frameworks, results)
  if 'sn_alone' in sections:
    section_sn_alone(specs, max(rounds, 5), results)
  if 'scaling' in sections:
    batch_sizes = (4, 16) if args.quick else (4, 16, 64)
    widths = (128, 512) if args.quick else (128, 512, 1024)
    if args.scaling_batches:
      batch_sizes = tuple(int(b) for b in args.scaling_batches.split(','))
    if args.scaling_widths:
      widths = tuple(int(w) for w in args.scaling_widths.split(','))
    section_scaling(batch_sizes, widths, frameworks, max(rounds // 2, 3), inner, results)
  if args.json:
    Path(args.json).write_text(json.dumps(results, indent=1))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
