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
  _add_train_parser(sub)
  args = parser.parse_args(argv)
  if args.command == 'demo':
    from snjax.app import demo as demo_mod

    return demo_mod.main(seed=args.seed, steps=args.steps)
  if args.command == 'train':
    return _run_train(args)
  parser.error(f'unknown command {args.command!r}')
  return 2


_DATASETS = ('grid25', 'ring8', 'digits')
_LOSSES = ('hinge', 'wasserstein', 'non_saturating')


def _add_train_parser(sub) -> None:
  train = sub.add_parser(
    'train',
    help='train an SN-GAN on an embedded data set (2-D Gaussian grid or ring, 8x8 digits)',
    description='Train a GAN with a spectrally normalized critic on embedded data, data-parallel on every visible '
    'device; writes samples.npy, samples.png, curves.png, metrics.json and Orbax checkpoints to --out. '
    "Options left out take the data set's default recipe (snjax.train.DEFAULTS).",
  )
  train.add_argument('--dataset', choices=_DATASETS, default='grid25', help='the data set (default: grid25)')
  train.add_argument('--steps', type=int, help='generator updates')
  train.add_argument('--seed', type=int, default=0, help='seed of everything (default: 0)')
  train.add_argument('--out', help='run folder (default: runs/<dataset>_seed<seed>)')
  train.add_argument('--resume', action='store_true', help='continue the run in --out from its latest checkpoint')
  train.add_argument('--force', action='store_true', help='delete a run already in --out and start again')
  train.add_argument('--batch-size', type=int, help='examples per batch, split over the devices')
  train.add_argument('--n-critic', type=int, help='critic updates per generator update')
  train.add_argument('--loss', choices=_LOSSES, help='GAN loss')
  train.add_argument('--lr-critic', type=float, help='Adam learning rate of the critic')
  train.add_argument('--lr-generator', type=float, help='Adam learning rate of the generator')
  train.add_argument(
    '--lr-decay', type=float, help='fraction of the run, at its end, over which the learning rates fall linearly to 0'
  )
  train.add_argument('--beta1', type=float, help='Adam beta1')
  train.add_argument('--beta2', type=float, help='Adam beta2')
  train.add_argument('--latent-dim', type=int, help='latent dimension')
  train.add_argument('--width', type=int, help='hidden units (MLP) or base channels (conv)')
  train.add_argument('--depth', type=int, help='hidden layers of the MLPs')
  train.add_argument('--activation', help="the MLP generator's activation (relu, leaky_relu, elu, silu, tanh)")
  train.add_argument('--target-norm', type=float, help='spectral norm of each normalized critic weight')
  train.add_argument('--fourier-features', type=int, help="fixed Fourier embedding of the MLP critic's input (0: off)")
  train.add_argument('--fourier-scale', type=float, help='standard deviation of the Fourier frequencies')
  train.add_argument('--ema-decay', type=float, help='generator EMA decay (0: off)')
  train.add_argument('--log-every', type=int, help='steps per progress update and history entry')
  train.add_argument('--checkpoint-every', type=int, help='steps between checkpoints (a multiple of --log-every)')
  train.add_argument('--quiet', action='store_true', help='no progress bar and no summary')


def _run_train(args) -> int:
  options = {
    k: getattr(args, k)
    for k in (
      'steps',
      'seed',
      'batch_size',
      'n_critic',
      'loss',
      'lr_critic',
      'lr_generator',
      'lr_decay',
      'beta1',
      'beta2',
      'latent_dim',
      'width',
      'depth',
      'activation',
      'target_norm',
      'fourier_features',
      'fourier_scale',
      'ema_decay',
      'log_every',
      'checkpoint_every',
    )
  }
  try:
    from snjax.app import run as train_mod
  except ImportError as e:
    print(f"snjax train: {e}; install the extra: pip install 'snjax[train]'", file=sys.stderr)
    return 1
  out = args.out or f'runs/{args.dataset}_seed{args.seed}'
  try:
    config = train_mod.TrainConfig.for_dataset(args.dataset, **options)
    train_mod.train(config, out, resume=args.resume, force=args.force, progress=not args.quiet)
  except (ValueError, FloatingPointError) as e:
    print(f'snjax train: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
