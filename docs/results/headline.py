"""The README's results table, rendered from the JSON files in docs/results/ (the same files the docs render).

  python docs/results/headline.py           # rewrite the block between the results markers of README.md
  python docs/results/headline.py --check   # exit 1 if README.md's block is not what the files give

tests/test_docs.py runs the check, so the README cannot state a number that its result files do not hold.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys

RESULTS = pathlib.Path(__file__).resolve().parent
README = RESULTS.parents[1] / 'README.md'
START, END = '<!-- results:start', '<!-- results:end -->'


def _read(name: str) -> dict | None:
  path = RESULTS / name
  return json.loads(path.read_text()) if path.exists() else None


def _load(record: dict) -> str:
  loads = sorted([record['load_average']['before'][0], record['load_average']['after'][0]])
  cpus = record['machine']['cpus']
  return f' (load average {loads[0]:.0f}-{loads[1]:.0f} on {cpus} CPUs)' if loads[1] >= 2 else ''


def _overhead_rows() -> list[str]:
  record = _read('critic_step.json')
  if record is None:
    return []
  rows = []
  for critic in dict.fromkeys(s['critic'] for s in record['data']['step']):
    by_variant = {s['variant']: s for s in record['data']['step'] if s['critic'] == critic}
    ours, flax = by_variant.get('snjax sn_apply'), by_variant.get('flax.linen.SpectralNorm')
    if ours is None or flax is None:
      continue
    rows.append(
      f'| spectral norm in a critic train step, {critic.split(",")[0]}: overhead in CPU time '
      f'| `sn_apply` {100 * ours["overhead_cpu"]:+.1f}% '
      f'| `flax.linen.SpectralNorm` {100 * flax["overhead_cpu"]:+.1f}% '
      f'| [benchmarks](docs/guides/benchmarks.md){_load(record)} |'
    )
  return rows


def _grid_row() -> list[str]:
  records = [json.loads(p.read_text()) for p in sorted((RESULTS / 'train').glob('grid25_seed*.json'))]
  if not records:
    return []
  metrics = [r['data']['metrics'] for r in records]
  seeds = [r['data']['seed'] for r in records]
  pacgan = next(r for r in _read('literature/pacgan_table1.json')['rows'] if r['model'].startswith('PacGAN4'))
  seeds_text = f'seeds {seeds[0]}-{seeds[-1]}' if seeds == list(range(seeds[0], seeds[-1] + 1)) else f'seeds {seeds}'
  return [
    '| 25-Gaussian grid: modes covered, high-quality samples, reverse KL '
    f'| `snjax train`, mean of {seeds_text}: {statistics.mean(m["modes_covered"] for m in metrics):.1f}, '
    f'{statistics.mean(m["high_quality_percent"] for m in metrics):.1f}%, '
    f'{statistics.mean(m["reverse_kl"] for m in metrics):.3f} '
    f'| PacGAN4: {pacgan["modes"]}, {pacgan["high_quality_percent"]}%, {pacgan["reverse_kl"]} '
    '| [`snjax train`](docs/guides/train.md#results) |'
  ]


def _stacked_row() -> list[str]:
  records = [json.loads(p.read_text()) for p in sorted((RESULTS / 'train').glob('stacked_digits_*seed*.json'))]
  ours = [r for r in records if r['data']['config'].get('normalization', 'spectral') == 'spectral']
  raw = [r for r in records if r['data']['config'].get('normalization', 'spectral') == 'none']
  if not ours:
    return []

  def mean(runs, key):
    return statistics.mean(r['data']['metrics']['generated'][key] for r in runs)

  text = f'mean of {len(ours)} seeds: {mean(ours, "modes_covered"):.1f}, {mean(ours, "reverse_kl"):.3f}'
  if raw:
    text += f'; without spectral norm: {mean(raw, "modes_covered"):.1f}, {mean(raw, "reverse_kl"):.3f}'
  return [
    '| stacked 8x8 digits (1,000 modes; not 28x28 Stacked MNIST): modes covered, reverse KL '
    f'| `snjax train --dataset stacked_digits`, {text} '
    '| PacDCGAN2 on 28x28 Stacked MNIST: 1,000, 0.06 '
    '| [stacked digits](docs/guides/your_data.md#stacked-digits-a-1-000-mode-benchmark) |'
  ]


def _conv_rows() -> list[str]:
  record = _read('conv_accuracy.json')
  if record is None:
    return []
  table = record['data']['accuracy']
  header, product = table['header'], next(r for r in table['rows'] if r[0] == 'product')
  col = {name: i for i, name in enumerate(header)}
  return [
    "| SN-GAN critic's product of layer norms: the operator norms, against the reshaped kernels' "
    f'| {float(product[col["operator"]]):.1f} (`snjax.lipschitz.conv_operator_norm`) '
    f'| {float(product[col["reshaped"]]):.1f} (what peers normalize by) '
    '| [convolutions](docs/guides/convolutions.md#accuracy) |',
    "| the same critic's certified bound, over the product of operator norms "
    f'| {float(product[col["dense/op"]]):.3f}x (exact Gram matrices where D <= 4096), '
    f'{float(product[col["default/op"]]):.3f}x (default) | | [convolutions](docs/guides/convolutions.md#accuracy) |',
  ]


def render() -> str:
  """The Markdown of the results block (without the markers)."""
  rows = _overhead_rows() + _grid_row() + _stacked_row() + _conv_rows()
  lines = ['| | snjax | reference | details |', '|---|---|---|---|', *rows]
  note = (
    'Each number comes from a result file in `docs/results/` that records its machine, versions, load and command; '
    'the pages linked give the full tables.'
  )
  return '\n'.join(lines) + '\n\n' + note + '\n'


def _split(text: str) -> tuple[str, str, str]:
  start = text.index(START)
  start_end = text.index('\n', start) + 1
  end = text.index(END)
  return text[:start_end], text[start_end:end], text[end:]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--check', action='store_true', help='exit 1 if README.md is not up to date')
  args = parser.parse_args(argv)
  head, block, tail = _split(README.read_text())
  if args.check:
    if block != render():
      print('README.md results block is stale: run python docs/results/headline.py', file=sys.stderr)
      return 1
    return 0
  README.write_text(head + render() + tail)
  return 0


if __name__ == '__main__':
  sys.exit(main())
