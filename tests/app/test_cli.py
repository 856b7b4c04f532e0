"""Tests of snjax.app.cli: the train flags made from TrainConfig, no abbreviations, bad command lines and options."""

import argparse
import dataclasses
import os
import re
import sys
import typing

import jax
import pytest

from snjax.app import cli, distributed, run
from snjax.app.config import CHOICES, DEFAULTS, TrainConfig


def _train_args(argv):
  return cli.make_parser().parse_args(['train', *argv])


def test_every_config_field_is_a_flag_of_its_type():
  """Each field's flag parses a value of the field's type; left out, it is None where a recipe sets the field."""
  types = typing.get_type_hints(TrainConfig)
  left_out = _train_args([])
  for field in dataclasses.fields(TrainConfig):
    name, kind = field.name, types[field.name]
    in_recipe = any(name in recipe for recipe in DEFAULTS.values())
    assert getattr(left_out, name) == (None if in_recipe else field.default), name
    value = CHOICES[name][-1] if name in CHOICES else kind(field.default) + kind(1)
    parsed = getattr(_train_args(['--' + name.replace('_', '-'), str(value)]), name)
    assert type(parsed) is kind and parsed == value, name
  assert (left_out.dataset, left_out.seed, left_out.out, left_out.resume, left_out.force, left_out.quiet) == (
    'grid25',
    0,
    None,
    False,
    False,
    False,
  )


def test_help_is_each_field_s_documentation_and_defaults(capsys, monkeypatch):
  monkeypatch.setenv('COLUMNS', '1000')  # one line per flag
  with pytest.raises(SystemExit) as e:
    cli.main(['train', '--help'])
  assert e.value.code == 0
  text = capsys.readouterr().out
  assert re.search(r'--steps STEPS +generator updates \(default: 16000; digits: 6000; stacked_digits: \d+\)', text)
  assert re.search(r'--depth DEPTH +hidden layers of the MLPs \(unused for digits\) \(default: 3\)', text)
  assert re.search(r'--loss \{hinge,wasserstein,non_saturating\}\s+the GAN loss \(snjax.gan.LOSSES\)', text)
  assert 'see snjax.app.models.MLPCritic' in text  # Sphinx roles read as plain names
  docs = cli.field_docs(TrainConfig)
  assert set(docs) == {f.name for f in dataclasses.fields(TrainConfig)}
  for field in dataclasses.fields(TrainConfig):
    assert f'--{field.name.replace("_", "-")} ' in text and docs[field.name].rstrip('.') in text, field.name


def test_options_left_out_take_the_data_set_s_recipe(monkeypatch, tmp_path):
  calls = []
  monkeypatch.setattr(run, 'train', lambda config, out, **kw: calls.append((config, out, kw)))
  monkeypatch.chdir(tmp_path)
  assert cli.main(['train', '--dataset', 'digits', '--steps', '9', '--seed', '4', '--quiet']) == 0
  assert cli.main(['train', '--out', 'elsewhere', '--lr-decay', '0', '--resume']) == 0
  assert calls == [
    (
      TrainConfig.for_dataset('digits', steps=9, seed=4),
      'runs/digits_seed4',
      dict(resume=False, force=False, progress=False),
    ),
    (TrainConfig.for_dataset('grid25', lr_decay=0.0), 'elsewhere', dict(resume=True, force=False, progress=True)),
  ]
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
  'argv, message',
  [
    (['train', '--dataset', 'mnist'], "invalid choice: 'mnist'"),
    (['train', '--no-such-option'], 'unrecognized arguments: --no-such-option'),
    (['train', '--steps', 'ten'], "invalid int value: 'ten'"),
    (['train', '--loss', 'minimax'], "invalid choice: 'minimax'"),
    # No abbreviations: --dat is neither --data nor --dataset, --bat is not --batch-size.
    (['train', '--dat', 'x.npy'], 'unrecognized arguments: --dat x.npy'),
    (['train', '--bat', '8'], 'unrecognized arguments: --bat 8'),
    (['demo', '--see', '1'], 'unrecognized arguments: --see 1'),
  ],
)
def test_bad_command_line(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert message in err
  if 'unrecognized' in message:
    assert 'invalid choice' not in err


@pytest.mark.parametrize(
  'options, message',
  [
    (['--steps', '0'], 'steps must be an int >= 1, got 0'),
    (['--beta1', '1.5'], r'beta1 must be a finite float in \[0, 1\), got 1.5'),
    (['--lr-critic', '-1'], 'lr_critic must be a finite float > 0'),
    (['--lr-decay', '1.5'], r'lr_decay must be a finite float in \[0, 1\], got 1.5'),
    (['--log-every', '7', '--checkpoint-every', '10'], 'checkpoint_every \\(10\\) must be a multiple of log_every'),
  ],
)
def test_bad_options_exit_non_zero_before_touching_anything(tmp_path, options, message, capsys):
  out = str(tmp_path / 'never')
  assert cli.main(['train', '--out', out, *options, '--quiet']) == 2
  assert re.search(message, capsys.readouterr().err)
  assert not os.path.exists(out)


def test_unknown_activation_is_refused_before_touching_anything(tmp_path, capsys):
  """The activation is a choice of the registry (snjax.app.models.ACTIVATIONS), refused by the parser."""
  out = str(tmp_path / 'never')
  with pytest.raises(SystemExit) as e:
    cli.main(['train', '--out', out, '--activation', 'swish', '--quiet'])
  assert e.value.code == 2
  assert "argument --activation: invalid choice: 'swish'" in capsys.readouterr().err
  assert not os.path.exists(out)


def test_missing_extra_is_named(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, 'tqdm', None)
  out = tmp_path / 'never'
  assert cli.main(['train', '--out', str(out), '--quiet']) == 1
  assert "missing module(s) tqdm; install the extra: pip install 'snjax[train]'" in capsys.readouterr().err
  assert not out.exists()


def test_coordinator_flags_join_the_processes_before_the_run(monkeypatch, tmp_path, capsys):
  """The coordinator flags (or JAX_COORDINATOR_ADDRESS) reach jax.distributed.initialize, before the run; none of
  them: one process, the runtime not started."""
  joined = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *a, **kw: joined.append((a, kw)))
  monkeypatch.setattr(distributed, 'is_initialized', lambda: False)
  monkeypatch.setattr(run, 'train', lambda config, out, **kw: joined.append('train') or {'steps': config.steps})
  monkeypatch.delenv('JAX_COORDINATOR_ADDRESS', raising=False)
  out = str(tmp_path / 'run')
  assert cli.main(['train', '--out', out, '--quiet']) == 0
  assert joined == ['train']
  flags = ['--coordinator-address', 'host0:1234', '--num-processes', '4', '--process-id', '3']
  assert cli.main(['train', '--out', out, *flags, '--heartbeat-timeout', '30', '--quiet']) == 0
  assert joined[1:] == [(('host0:1234', 4, 3), {'heartbeat_timeout_seconds': 30}), 'train']
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'host0:1234')  # JAX reads it; the rest from the cluster
  assert cli.main(['train', '--out', out, '--quiet']) == 0
  assert joined[3:] == [((None, None, None), {}), 'train']
  capsys.readouterr()
  assert cli.main(['train', '--out', out, '--heartbeat-timeout', '0', '--quiet']) == 2
  assert capsys.readouterr().err == (
    'snjax train: error: the processes cannot join (jax.distributed.initialize): '
    'heartbeat_timeout (seconds) must be an int >= 1, got 0.\n'
  )
  assert joined[5:] == []


def test_processes_that_cannot_join_are_a_one_line_error(tmp_path, capsys):
  out = tmp_path / 'never'
  flags = ['--coordinator-address', '127.0.0.1:1', '--num-processes', '2', '--process-id', '5']
  assert cli.main(['train', '--out', str(out), *flags, '--quiet']) == 2
  err = capsys.readouterr().err
  assert err.startswith('snjax train: error: the processes cannot join (jax.distributed.initialize): ')
  assert len(err.splitlines()) == 1 and not out.exists()


@dataclasses.dataclass(frozen=True)
class _Toy:
  """A configuration with a field of each kind.

  Attributes:
    rate: a rate in %,
      on two lines.
    name: a :data:`NAME`, ``quoted``.
    flag: on or off.
  """

  rate: float = 0.5
  name: str = 'a'
  flag: bool = False


def test_add_config_flags_follows_the_dataclass(capsys, monkeypatch):
  """A new field is a new flag: typed by its annotation, documented by its docstring entry, defaulted by recipes."""
  parser = argparse.ArgumentParser(prog='toy', allow_abbrev=False)
  cli.add_config_flags(parser, _Toy, choices={'name': ('a', 'b')}, recipes={'fast': {'rate': 0.25}})
  assert vars(parser.parse_args([])) == {'rate': None, 'name': 'a', 'flag': False}
  assert vars(parser.parse_args(['--rate', '2', '--name', 'b', '--flag'])) == {'rate': 2.0, 'name': 'b', 'flag': True}
  assert parser.parse_args(['--no-flag']).flag is False
  monkeypatch.setenv('COLUMNS', '1000')
  help_text = parser.format_help()
  assert 'a rate in %, on two lines (default: 0.5; fast: 0.25)' in help_text
  assert 'a NAME, quoted (default: a)' in help_text
  with pytest.raises(SystemExit):
    parser.parse_args(['--name', 'c'])
  assert "invalid choice: 'c'" in capsys.readouterr().err


def test_add_config_flags_refuses_undocumented_and_unparsable_fields():
  @dataclasses.dataclass
  class Undocumented:
    """No attributes."""

    steps: int = 1

  @dataclasses.dataclass
  class Listed:
    """A list.

    Attributes:
      sizes: the sizes.
    """

    sizes: list = dataclasses.field(default_factory=list)

  with pytest.raises(TypeError, match='Undocumented.steps has no entry under Attributes'):
    cli.add_config_flags(argparse.ArgumentParser(), Undocumented)
  with pytest.raises(TypeError, match="Listed.sizes: no command-line flag for a field of type <class 'list'>"):
    cli.add_config_flags(argparse.ArgumentParser(), Listed)
