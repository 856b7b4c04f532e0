"""Shared helpers of the snjax.app tests: a tiny training configuration (and its flags) and folder snapshots."""

import os

import pytest

from snjax.app.config import TrainConfig

TINY_FLAGS = ('--width', '16', '--depth', '1', '--batch-size', '16', '--log-every', '5', '--checkpoint-every', '10')


def _tiny(**kw) -> TrainConfig:
  base = dict(width=16, depth=1, batch_size=16, log_every=5, checkpoint_every=10, steps=20)
  base.update(kw)
  return TrainConfig.for_dataset(kw.pop('dataset', 'grid25'), **{k: v for k, v in base.items() if k != 'dataset'})


def _snapshot(folder) -> dict[str, bytes]:
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      p = os.path.join(root, f)
      with open(p, 'rb') as fh:
        out[os.path.relpath(p, folder)] = fh.read()
  return out


@pytest.fixture(scope='session')
def tiny():
  """``tiny(**overrides)``: a seconds-long grid25 run (MLPs of width 16, depth 1; 20 steps in chunks of 5)."""
  return _tiny


@pytest.fixture(scope='session')
def tiny_flags():
  """The ``snjax train`` flags of :func:`tiny`'s configuration (without ``--steps``)."""
  return list(TINY_FLAGS)


@pytest.fixture(scope='session')
def snapshot():
  """``snapshot(folder)``: every file under ``folder`` and its bytes, to check that nothing was touched."""
  return _snapshot
