"""The ``snjax`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='snjax', description='Spectral normalization for JAX and Flax.')
  sub = parser.add_subparsers(dest='command', required=True)
  demo = sub.add_parser('demo', help="normalize a Flax critic and print each layer's sigma against the SVD")
  demo.add_argument('--seed', type=int, default=0)
  demo.add_argument('--steps', type=int, default=3)
  args = parser.parse_args(argv)
  if args.command == 'demo':
    from snjax import demo as demo_mod

    return demo_mod.main(seed=args.seed, steps=args.steps)
  parser.error(f'unknown command {args.command!r}')
  return 2


if __name__ == '__main__':
  sys.exit(main())
