"""Spectral norm across critic depth and width: step overhead, XLA compile time and HLO counts.

A critic train step (MLP of ``L`` hidden layers of width ``H``, batch 256 real
+ 256 fake, hinge loss, Adam; ``benchmarks._critics``) for L in {4, 16, 32,
64, 128} and H in {128, 256, 512, 1024}, plus the SN-GAN CNN critic and a
ResNet-style critic of 21 convs, in two frameworks, each against its own
plain step:

* Flax linen: plain, ``flax.linen.SpectralNorm``, ``snjax.sn_apply``,
  ``snjax.linen.SpectralNorm``;
* Flax NNX (MLP only): plain, ``flax.nnx.SpectralNorm``,
  ``snjax.nnx.SpectralNorm``, ``snjax.sn_apply`` on the ``nnx.split`` params.

Per variant and point: the step overhead (median over interleaved rounds of
``t_SN / t_plain - 1``, wall and CPU time; ``benchmarks._timing``), the XLA
compile time of the jitted step (``lower(...).compile()``, median of
``--compile-repeats`` fresh lowerings; tracing excluded), and the optimized
HLO's kernels, fusions and distinct fusion bodies (``benchmarks._hlo``).
Writes the table, a JSON file and a plot (overhead and compile time against
depth, one panel per width).

Usage (from the repository root)::

  python -m benchmarks.depth_sweep --quick                      # a few minutes on one core
  python -m benchmarks.depth_sweep                              # the whole grid (hours on a CPU)
  python -m benchmarks.depth_sweep --points 4x128,32x128,cnn,resnet --frameworks linen
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ''):
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
  __package__ = 'benchmarks'  # noqa: A001

import jax

from benchmarks import _critics as C
from benchmarks import _hlo
from benchmarks import _timing as T

DEPTHS = (4, 16, 32, 64, 128)
WIDTHS = (128, 256, 512, 1024)
QUICK_POINTS = '4x128,32x128'
FRAMEWORKS = {
  # name: (plain label, plain builder, {SN label: builder}, critics it has)
  'linen': (
    'flax.linen plain',
    C.flax_plain,
    {
      'flax.linen.SpectralNorm': C.flax_spectral_norm,
      'snjax sn_apply': C.snjax_sn_apply,
      'snjax.linen.SpectralNorm': C.snjax_module,
    },
    ('mlp', 'cnn', 'resnet'),
  ),
  'nnx': (
    'flax.nnx plain',
    C.nnx_plain,
    {
      'flax.nnx.SpectralNorm': C.nnx_flax_spectral_norm,
      'snjax sn_apply (nnx)': C.nnx_sn_apply,
      'snjax.nnx.SpectralNorm': C.nnx_snjax_module,
    },
    ('mlp',),
  ),
}


def parse_point(text: str, mlp_batch: int, cnn_batch: int) -> tuple[str, C.Spec, int]:
  """``'32x128'`` (L x H), ``'cnn'`` or ``'resnet'`` as ``(name, spec, normalized layers)``."""
  if text in ('cnn', 'resnet'):
    layers = len(C.CNN_LAYERS) + 1 if text == 'cnn' else 1 + 2 * sum(b for _, b in C.RESNET_STAGES) + 2 + 1
    return text, C.Spec(text, cnn_batch), layers
  depth, width = (int(x) for x in text.lower().split('x'))
  return text, C.Spec('mlp', mlp_batch, width=width, depth=depth), depth + 1


def compile_times(runner: C.Runner, repeats: int) -> list[float]:
  """XLA compile seconds of the step: the first (from the build) and ``repeats - 1`` fresh lowerings."""
  out = [runner.times['compile']]
  for _ in range(repeats - 1):
    jax.clear_caches()  # jax keeps compiled executables in memory, keyed by the program
    lowered = runner.lower()
    t0 = time.perf_counter()
    lowered.compile()
    out.append(time.perf_counter() - t0)
  return out


def measure(framework: str, name: str, spec: C.Spec, layers: int, args) -> list[dict]:
  """Builds every variant of ``framework`` at one point, times them interleaved, returns one row per variant."""
  plain_label, plain_build, sn_builds, _ = FRAMEWORKS[framework]
  builds = {plain_label: plain_build, **sn_builds}
  runners = {label: build(spec) for label, build in builds.items()}
  compiles = {label: compile_times(r, args.compile_repeats) for label, r in runners.items()}
  counts = {label: _hlo.counts(r.hlo, layers) for label, r in runners.items()}
  for r in runners.values():
    r.hlo = None
  # Rounds: as many as fit in --seconds (at least --min-rounds); each call at least ~20 ms.
  step_s = {}
  for label, r in runners.items():
    r.step()
    t0 = time.perf_counter()
    r.step()
    step_s[label] = time.perf_counter() - t0
  inner = max(1, math.ceil(0.02 / min(step_s.values())))
  rounds = max(args.min_rounds, int(args.seconds / (inner * sum(step_s.values()))))
  cpu: dict = {}
  times = T.interleaved({k: r.step for k, r in runners.items()}, rounds=rounds, inner=inner, warmup=1, cpu=cpu)
  rows = []
  for label in runners:
    plain = label == plain_label
    rows.append(
      dict(
        point=name,
        critic=spec.critic,
        depth=spec.depth if spec.critic == 'mlp' else None,
        width=spec.width if spec.critic == 'mlp' else None,
        layers=layers,
        framework=framework,
        variant=label,
        step_s=T.median(times[label]),
        overhead=None if plain else T.paired_overhead(times[label], times[plain_label]),
        overhead_cpu=None if plain else T.paired_overhead(cpu[label], cpu[plain_label]),
        compile_s=T.median(compiles[label]),
        compile_runs=compiles[label],
        rounds=rounds,
        inner=inner,
        **{k: v for k, v in counts[label].items() if k != 'ops'},
        ops=counts[label]['ops'],
      )
    )
  return rows


def _pct(x) -> str:
  return '' if x is None else f'{x * 100:+.1f}%'


def print_rows(rows: list[dict]) -> None:
  for r in rows:
    print(
      f'| {r["point"]} | {r["framework"]} | {r["variant"]} | {r["step_s"] * 1e3:.1f} ms | {_pct(r["overhead"])} '
      f'| {_pct(r["overhead_cpu"])} | {r["compile_s"]:.2f} s | {r["kernels"]} | {r["fusions"]} '
      f'| {r["distinct_fusions"]} | {r["kernels_per_layer"]:.1f} | {r["rounds"]}x{r["inner"]} |',
      flush=True,
    )


def plot(rows: list[dict], path: Path) -> None:
  """Overhead (CPU time) and compile time against depth, one column per width, a line per variant."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  mlp = [r for r in rows if r['critic'] == 'mlp']
  widths = sorted({r['width'] for r in mlp})
  if not widths:
    return
  fig, axes = plt.subplots(2, len(widths), figsize=(4 * len(widths), 7), squeeze=False)
  for col, width in enumerate(widths):
    for variant in dict.fromkeys(r['variant'] for r in mlp):
      pts = sorted((r['depth'], r) for r in mlp if r['width'] == width and r['variant'] == variant)
      if not pts:
        continue
      depths = [d for d, _ in pts]
      style = '--' if 'flax' in variant else '-'
      if pts[0][1]['overhead_cpu'] is not None:
        axes[0][col].plot(depths, [r['overhead_cpu'] * 100 for _, r in pts], style, marker='o', label=variant)
      axes[1][col].plot(depths, [r['compile_s'] for _, r in pts], style, marker='o', label=variant)
    axes[0][col].set_title(f'MLP critic, width {width}')
    axes[0][col].set_ylabel('step overhead vs plain (CPU time, %)')
    axes[1][col].set_ylabel('XLA compile time (s)')
    for ax in axes[:, col]:
      ax.set_xscale('log', base=2)
      ax.set_xlabel('hidden layers')
      ax.grid(alpha=0.3)
  axes[1][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help=f'points {QUICK_POINTS}, short timing')
  parser.add_argument('--points', default=None, help='comma list of LxH, cnn, resnet (default: the whole grid)')
  parser.add_argument('--frameworks', default='linen,nnx', help='comma list of ' + ', '.join(FRAMEWORKS))
  parser.add_argument('--seconds', type=float, default=None, help='timing seconds per point and framework')
  parser.add_argument('--min-rounds', type=int, default=None, help='interleaved rounds at least (default 5 quick, 30)')
  parser.add_argument('--compile-repeats', type=int, default=None, help='compiles per variant (default 1 quick, 3)')
  parser.add_argument('--mlp-batch', type=int, default=256, help='MLP batch per side (real, fake)')
  parser.add_argument('--cnn-batch', type=int, default=16, help='CNN / ResNet batch per side (real, fake)')
  parser.add_argument('--out', default='depth_sweep', help='output prefix: <out>.json and <out>.png')
  args = parser.parse_args(argv)
  args.seconds = args.seconds if args.seconds is not None else (4.0 if args.quick else 30.0)
  args.min_rounds = args.min_rounds or (5 if args.quick else 30)
  args.compile_repeats = args.compile_repeats or (1 if args.quick else 3)
  if args.points:
    points = args.points.split(',')
  elif args.quick:
    points = QUICK_POINTS.split(',')
  else:
    points = [f'{d}x{w}' for w in WIDTHS for d in DEPTHS] + ['cnn', 'resnet']
  frameworks = [f.strip() for f in args.frameworks.split(',') if f.strip()]
  if set(frameworks) - set(FRAMEWORKS):
    parser.error(f'--frameworks: unknown {sorted(set(frameworks) - set(FRAMEWORKS))}')
  jax.config.update('jax_enable_compilation_cache', False)  # a persistent cache would hide the compile

  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  print(f'# depth sweep ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}); load average {load}')
  print(f'jax {jax.__version__}; command: {" ".join(sys.argv)}')
  print('\n| point | framework | variant | step | overhead (wall) | overhead (CPU) | XLA compile | kernels ', end='')
  print('| fusions | distinct fusions | kernels / layer | rounds x steps |')
  print('|---|---|---|---|---|---|---|---|---|---|---|---|')
  rows: list[dict] = []
  for text in points:
    name, spec, layers = parse_point(text.strip(), args.mlp_batch, args.cnn_batch)
    for fw in frameworks:
      if spec.critic not in FRAMEWORKS[fw][3]:
        continue
      new = measure(fw, name, spec, layers, args)
      print_rows(new)
      rows += new
      gc.collect()
  out = Path(args.out)
  meta = dict(jax=jax.__version__, command=' '.join(sys.argv), load_at_end=os.getloadavg(), cpus=os.cpu_count())
  out.with_suffix('.json').write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
  plot(rows, out.with_suffix('.png'))
  print(f'\nwrote {out.with_suffix(".json")} and {out.with_suffix(".png")}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
