"""The ``snjax`` command line: ``snjax train`` (an SN-GAN run, :mod:`snjax.app.run`) and ``snjax demo``.

The flags of ``snjax train`` are made from the fields of
:class:`snjax.app.config.TrainConfig` (:func:`add_config_flags`): the field
``batch_size`` is the flag ``--batch-size``, typed by the field's annotation,
explained by the field's entry under the class docstring's Attributes, limited
to :data:`snjax.app.config.CHOICES` where it names something. A flag left out
takes the data set's default recipe (:data:`snjax.app.config.DEFAULTS`).

Beside them, the coordinator flags of ``jax.distributed.initialize``
(``--coordinator-address``, ``--num-processes``, ``--process-id``,
``--heartbeat-timeout``; :mod:`snjax.app.distributed`) make one run of
several processes, and a SIGTERM ends a run with a checkpoint, exit status 0
and the command that continues it (:mod:`snjax.app.preemption`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import os
import re
import shlex
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from snjax.app.config import CHOICES, DEFAULTS, TrainConfig

TRAIN_EXTRAS = ('orbax.checkpoint', 'tqdm', 'sklearn', 'matplotlib')
"""The modules ``snjax train`` needs beyond the library's own dependencies (the ``snjax[train]`` extra)."""


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the ``snjax`` command line.

  Args:
    argv: the arguments after the program name (default: ``sys.argv[1:]``).

  Returns:
    The exit status: 0 on success, and after a SIGTERM once the run is checkpointed (a line on stdout says how
    to continue it); 1 when the ``snjax[train]`` extra is missing; 2 for an invalid option, an unusable run
    folder, processes that cannot join, or a diverged run (the message on stderr).

  Raises:
    SystemExit: from argparse, for ``--help`` or a command line it cannot parse (status 2).
  """
  argv = sys.argv[1:] if argv is None else list(argv)
  args = make_parser().parse_args(argv)
  if args.command == 'demo':
    from snjax.app import demo

    return demo.main(seed=args.seed, steps=args.steps)
  return _run_train(args, argv)


def make_parser() -> argparse.ArgumentParser:
  """The ``snjax`` parser: the ``demo`` and ``train`` subcommands, abbreviations of flags refused."""
  parser = argparse.ArgumentParser(
    prog='snjax', description='Spectral normalization for JAX and Flax.', allow_abbrev=False
  )
  sub = parser.add_subparsers(dest='command', required=True)
  demo = sub.add_parser(
    'demo', help="normalize a Flax critic and print each layer's sigma against the SVD", allow_abbrev=False
  )
  demo.add_argument('--seed', type=int, default=0, help='seed of the params and the power iteration (default: 0)')
  demo.add_argument('--steps', type=int, default=3, help='training calls of sn_apply (default: 3)')
  train = sub.add_parser(
    'train',
    help='train an SN-GAN on an embedded data set (2-D Gaussian grid or ring, 8x8 digits, stacked digits) or on '
    'your own data (--data)',
    description='Train a GAN with a spectrally normalized critic on embedded data or your own (--data), '
    'data-parallel on every visible device; writes samples.npy, samples.png, curves.png, metrics.json and Orbax '
    "checkpoints to --out. Options left out take the data set's default recipe (snjax.app.config.DEFAULTS; "
    'for --data, snjax.app.config.user_recipe).',
    allow_abbrev=False,
  )
  add_config_flags(train, TrainConfig, choices=CHOICES, recipes=DEFAULTS)
  train.add_argument('--out', help='run folder (default: runs/<dataset or data file name>_seed<seed>)')
  train.add_argument(
    '--resume', action='store_true', help='continue the run in --out from its newest checkpoint that reads back whole'
  )
  train.add_argument('--force', action='store_true', help='delete a run already in --out and start again')
  train.add_argument('--quiet', action='store_true', help='no progress bar and no summary')
  _add_coordinator_flags(train)
  return parser


def _add_coordinator_flags(parser: argparse.ArgumentParser) -> None:
  """The flags of ``jax.distributed.initialize``: several processes, one per host, train one run together."""
  group = parser.add_argument_group(
    'several processes (JAX multi-controller runtime)',
    'Run the same command on every process (one per host), with the same --out on a file system they all see. '
    'Any of these flags, or the environment variable JAX_COORDINATOR_ADDRESS, calls jax.distributed.initialize; '
    'what is left out JAX finds itself on Cloud TPU, SLURM, Open MPI and Kubernetes.',
  )
  group.add_argument(
    '--coordinator-address', metavar='HOST:PORT', help='where process 0 serves (default: $JAX_COORDINATOR_ADDRESS)'
  )
  group.add_argument('--num-processes', type=int, metavar='N', help='the number of processes of the run')
  group.add_argument('--process-id', type=int, metavar='I', help="this process's index, 0 .. N - 1")
  group.add_argument(
    '--heartbeat-timeout',
    type=int,
    metavar='SECONDS',
    help='seconds after which a process that stopped answering is declared dead and the others stop with an '
    "error (default: JAX's, 100; needs a jax whose jax.distributed.initialize takes heartbeat_timeout_seconds)",
  )


def add_config_flags(
  parser: argparse.ArgumentParser,
  config_class: type,
  *,
  choices: Mapping[str, Sequence[str]] | None = None,
  recipes: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
  """Adds one flag per field of the dataclass ``config_class``: ``--batch-size`` for ``batch_size``.

  A flag's value is parsed by the field's annotation (``int``, ``float``, ``str``; a ``bool`` gets
  ``--x`` / ``--no-x``), its help is the field's entry under Attributes in the class docstring, followed by its
  default. A field that a recipe sets defaults to ``None`` (left out, it takes the recipe's value); any other
  field defaults to its own default.

  Args:
    parser: the parser (or subparser) to add the flags to.
    config_class: a dataclass whose docstring documents every field under ``Attributes:``.
    choices: the accepted values of some fields, by field name.
    recipes: named sets of field values (:data:`snjax.app.config.DEFAULTS`); their values appear in the help.

  Raises:
    TypeError: a field of a type the command line cannot parse, or a field without an entry under Attributes.
  """
  choices, recipes = choices or {}, recipes or {}
  types = typing.get_type_hints(config_class)
  docs = field_docs(config_class)
  for field in dataclasses.fields(config_class):
    name, kind = field.name, types[field.name]
    if name not in docs:
      raise TypeError(f'{config_class.__name__}.{name} has no entry under Attributes in the class docstring.')
    in_recipe = any(name in recipe for recipe in recipes.values())
    help_text = f'{docs[name].rstrip(".")} (default: {_default_text(name, field.default, recipes)})'.replace('%', '%%')
    flag = '--' + name.replace('_', '-')
    default = None if in_recipe else field.default
    if kind is bool:
      parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
    elif kind in (int, float, str):
      parser.add_argument(flag, dest=name, type=kind, choices=choices.get(name), default=default, help=help_text)
    else:
      raise TypeError(f'{config_class.__name__}.{name}: no command-line flag for a field of type {kind!r}.')


def _default_text(name: str, default: Any, recipes: Mapping[str, Mapping[str, Any]]) -> str:
  """``'16000; digits: 6000'``: the field's default, then each recipe's different value."""
  other = [f'{recipe}: {values[name]}' for recipe, values in recipes.items() if values.get(name, default) != default]
  return '; '.join([str(default), *other])


def field_docs(config_class: type) -> dict[str, str]:
  """Each field's entry under ``Attributes:`` in the class docstring, as one line of plain text.

  Args:
    config_class: a class with a Google-style docstring.

  Returns:
    ``{field name: description}``; Sphinx roles and literal quotes are dropped (``:data:`X``` reads ``X``).
  """
  docs: dict[str, str] = {}
  name, in_section = None, False
  for line in inspect.cleandoc(config_class.__doc__ or '').splitlines():
    if not in_section:
      in_section = line.strip() == 'Attributes:'
      continue
    if not line.startswith('  '):
      break
    entry = re.match(r'  (\w+): (.*)', line)
    if entry:
      name = entry[1]
      docs[name] = entry[2]
    elif name:
      docs[name] += ' ' + line.strip()
  return {k: re.sub(r':\w+:`([^`]*)`', r'\1', v).replace('``', '') for k, v in docs.items()}


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # its parent package is missing
    return False


def _resume_command(argv: Sequence[str], out: str) -> str:
  """The command that continues the run of ``snjax <argv>``: the same, with ``--resume`` (and ``--out``)."""
  args = [a for a in argv if a != '--force']
  if '--out' not in args and not any(a.startswith('--out=') for a in args):
    args += ['--out', out]
  if '--resume' not in args:
    args.append('--resume')
  return shlex.join(['snjax', *args])


def _join_processes(args: argparse.Namespace) -> None:
  """``jax.distributed.initialize`` when the coordinator flags (or ``JAX_COORDINATOR_ADDRESS``) ask for it.

  Raises:
    ValueError: a bad flag, or the runtime's own error (one line) when the processes cannot join.
  """
  from snjax.app import distributed

  try:
    distributed.initialize(
      args.coordinator_address, args.num_processes, args.process_id, heartbeat_timeout=args.heartbeat_timeout
    )
  except (RuntimeError, ValueError, TypeError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ValueError(f'the processes cannot join (jax.distributed.initialize): {first}') from None


def _run_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
  missing = [m for m in TRAIN_EXTRAS if not _installed(m)]
  if missing:
    print(
      f"snjax train: missing module(s) {', '.join(missing)}; install the extra: pip install 'snjax[train]'",
      file=sys.stderr,
    )
    return 1
  from snjax.app import distributed, run

  options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != 'dataset'}
  name = os.path.splitext(os.path.basename(os.path.normpath(args.data)))[0] if args.data else args.dataset
  out = args.out or f'runs/{name}_seed{args.seed}'
  try:
    config = TrainConfig.for_dataset(args.dataset, **options)
    _join_processes(args)
    result = run.train(config, out, resume=args.resume, force=args.force, progress=not args.quiet)
  except (ValueError, FloatingPointError) as e:
    print(f'snjax train: error: {e}', file=sys.stderr)
    return 2
  preempted_at = (result or {}).get('preempted_at')
  if preempted_at is not None and distributed.is_primary():
    print(
      f'snjax train: stopped by SIGTERM after saving step {preempted_at} in '
      f'{os.path.join(out, "checkpoints")}; to continue, run (on every process): {_resume_command(argv, out)}',
      flush=True,
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())
