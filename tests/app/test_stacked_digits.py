"""Tests of the stacked-digits benchmark: the data set (snjax.app.data), its metrics (snjax.app.metrics), a run.

Stacked MNIST on the 8x8 digits: three training digits stacked as channels, 1,000 modes counted by the digits
classifier on each channel, reverse KL of the mode histogram against uniform, on 26,000 samples.
"""

import json
import math
import os

import jax
import numpy as np
import pytest

from snjax.app import data, metrics
from snjax.app.config import TrainConfig
from snjax.app.run import format_summary, train


@pytest.fixture(scope='module')
def scorer():
  return metrics.digits_scorer()


@pytest.fixture(scope='module')
def digit_of_each_class(scorer):
  """One held-out digit per class that the classifier labels correctly: ``(10, 8, 8)``."""
  digits = data.load_digits()
  images = digits.images[digits.test_index, ..., 0]
  labels = digits.labels[digits.test_index]
  right = scorer.classes(images) == labels
  return np.stack([images[np.flatnonzero(right & (labels == c))[0]] for c in range(10)])


def _stack(digit_of_each_class, triples):
  """Images ``(N, 8, 8, 3)`` whose channels are the digits of each triple of classes."""
  return np.moveaxis(digit_of_each_class[np.asarray(triples)], 1, -1)


def test_sampler_stacks_three_independent_training_digits():
  stacked = data.get_dataset('stacked_digits')
  assert data.sample_shape(stacked) == (8, 8, 3) and stacked.digits is data.load_digits()
  x = np.asarray(jax.jit(data.make_sampler(stacked), static_argnums=1)(jax.random.key(0), 4000))
  assert x.shape == (4000, 8, 8, 3) and x.dtype == np.float32
  digits = stacked.digits
  train = digits.images[digits.train_index, ..., 0].reshape(len(digits.train_index), -1)
  index = {row.tobytes(): i for i, row in enumerate(train)}
  # Every channel is a training digit (never a held-out one) ...
  which = np.array([[index[x[n, ..., c].reshape(-1).tobytes()] for c in range(3)] for n in range(len(x))])
  # ... drawn uniformly and independently per channel: the three channels share a training digit with
  # probability ~3 / 1258, so at most a few dozen of 4,000 (expected 9.5; 40 is about 10 standard deviations above).
  assert np.sum((which[:, 0] == which[:, 1]) | (which[:, 1] == which[:, 2]) | (which[:, 0] == which[:, 2])) < 40
  for c in range(3):  # each channel covers the training digits' classes as the data does (within 5 %)
    share = np.bincount(digits.labels[digits.train_index][which[:, c]], minlength=10) / len(x)
    assert np.all(np.abs(share - 0.1) < 0.05)


def test_every_triple_once_covers_1000_modes_with_zero_kl(scorer, digit_of_each_class):
  triples = [(a, b, c) for a in range(10) for b in range(10) for c in range(10)]
  m = metrics.stacked_digits_metrics(_stack(digit_of_each_class, triples), scorer)
  assert (m['modes_covered'], m['n_modes'], m['n_samples']) == (1000, 1000, 1000)
  assert m['reverse_kl'] == pytest.approx(0.0, abs=1e-12)
  assert m['mode_counts'] == [1] * 1000
  assert m['channel_reverse_kl'] == pytest.approx([0.0] * 3, abs=1e-12)


def test_one_triple_is_one_mode_with_kl_log_1000(scorer, digit_of_each_class):
  m = metrics.stacked_digits_metrics(_stack(digit_of_each_class, [(3, 1, 4)] * 50), scorer)
  assert m['modes_covered'] == 1 and m['mode_counts'][314] == 50
  assert m['reverse_kl'] == pytest.approx(math.log(1000))
  assert m['channel_reverse_kl'] == pytest.approx([math.log(10)] * 3)


def test_kl_against_an_independent_histogram(scorer, digit_of_each_class):
  rng = np.random.default_rng(0)
  triples = rng.integers(0, 10, (3000, 3)) * (rng.random((3000, 1)) < 0.7)  # skewed towards class 0
  m = metrics.stacked_digits_metrics(_stack(digit_of_each_class, triples), scorer)
  counts = {}
  for t in map(tuple, triples):
    counts[t] = counts.get(t, 0) + 1
  p = np.array(list(counts.values())) / len(triples)
  assert m['modes_covered'] == len(counts)
  assert m['reverse_kl'] == pytest.approx(float(np.sum(p * np.log(1000 * p))), rel=1e-12)


def test_real_held_out_reference_is_near_the_sampling_floor(scorer):
  ref = metrics.stacked_digits_reference()
  assert ref['n_samples'] == metrics.N_STACKED_SAMPLES == 26000
  assert ref['modes_covered'] == 1000 and ref['classifier_accuracy'] > 0.93
  # A uniform histogram estimated from n samples has E[KL] ~ (K - 1) / (2 n) = 0.019 (K = 1000, n = 26,000);
  # the classes of the real digits are balanced to a few percent, which adds little.
  assert 0.015 < ref['reverse_kl'] < 0.04


def test_errors(scorer):
  with pytest.raises(ValueError, match=r'stacked digits must be \(N, 8, 8, 3\)'):
    metrics.stacked_digits_metrics(np.zeros((5, 8, 8)), scorer)
  with pytest.raises(ValueError, match='non-finite'):
    metrics.stacked_digits_metrics(np.full((5, 8, 8, 3), np.nan), scorer)


def test_a_run_saves_26000_samples_and_counts_their_modes(tmp_path):
  config = TrainConfig.for_dataset(
    'stacked_digits', steps=4, width=4, latent_dim=4, batch_size=8, log_every=2, checkpoint_every=4
  )
  assert metrics.eval_sample_count(data.get_dataset('stacked_digits')) == 26000
  out = str(tmp_path / 'run')
  summary = train(config, out, progress=False)
  samples = np.load(os.path.join(out, 'samples.npy'))
  assert samples.shape == (26000, 8, 8, 3) and np.all(np.abs(samples) <= 1)
  g = summary['metrics']['generated']
  assert g == metrics.stacked_digits_metrics(samples, metrics.digits_scorer())
  with open(os.path.join(out, 'metrics.json')) as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  assert summary['wall_seconds_this_session'] > 0 and summary['cpu_seconds_this_session'] > 0
  text = format_summary(summary, out)
  assert f'  {"modes covered":<22}{g["modes_covered"]:>12d}' in text and 'reverse KL' in text
  assert not os.path.exists(os.path.join(out, 'data.json'))
