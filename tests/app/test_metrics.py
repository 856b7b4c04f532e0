"""Tests of snjax.metrics against hand-made sample sets whose answer is known, and independent references."""

import math

import jax
import numpy as np
import pytest
import scipy.linalg

from snjax.app import data, metrics

GRID = data.gaussian_grid()
RING = data.gaussian_ring()


def _reference_mixture_metrics(x, centres, std):
  """PacGAN's MetricLogger loop (pacgan/extensions.py), re-written plainly: nearest mode, 3-std test."""
  counts = np.zeros(len(centres))
  for point in x:
    d = [math.sqrt(sum((p - c) ** 2 / std**2 for p, c in zip(point, centre, strict=True))) for centre in centres]
    j = int(np.argmin(d))
    if d[j] < 3:
      counts[j] += 1
  p = counts / counts.sum()
  kl = sum(pi * math.log(pi * len(centres)) for pi in p if pi > 0)
  return int(np.count_nonzero(counts)), 100 * counts.sum() / len(x), kl, counts


def test_perfect_balanced_samples():
  x = np.repeat(GRID.centres, 100, axis=0)
  m = metrics.mixture_metrics(x, GRID.centres, GRID.std)
  assert m['modes_covered'] == 25 and m['n_modes'] == 25
  assert m['high_quality_percent'] == 100.0
  assert m['reverse_kl'] == pytest.approx(0.0, abs=1e-12)
  assert m['mode_counts'] == [100] * 25


def test_single_mode_collapse():
  x = np.tile(GRID.centres[7], (2500, 1)) + 0.01
  m = metrics.mixture_metrics(x, GRID.centres, GRID.std)
  assert m['modes_covered'] == 1
  assert m['high_quality_percent'] == 100.0
  assert m['reverse_kl'] == pytest.approx(math.log(25))


def test_high_quality_boundary_is_three_std():
  c = GRID.centres[12]  # (0, 0)
  inside = c + np.array([[2.99 * GRID.std, 0.0], [0.0, -2.99 * GRID.std]])
  outside = c + np.array([[3.01 * GRID.std, 0.0], [2.2 * GRID.std, 2.2 * GRID.std]])  # 3.11 std away
  m = metrics.mixture_metrics(np.concatenate([inside, outside]), GRID.centres, GRID.std)
  assert m['high_quality_percent'] == 50.0
  assert m['modes_covered'] == 1


def test_samples_between_modes_are_not_high_quality():
  x = np.array([[1.0, 1.0], [-3.0, 0.0], [0.0, 3.0]])  # midpoints of the grid
  m = metrics.mixture_metrics(x, GRID.centres, GRID.std)
  assert m['modes_covered'] == 0 and m['high_quality_percent'] == 0.0
  assert m['reverse_kl'] is None


def test_min_count_threshold():
  x = np.concatenate([np.tile(GRID.centres[0], (19, 1)), np.tile(GRID.centres[1], (20, 1))])
  assert metrics.mixture_metrics(x, GRID.centres, GRID.std)['modes_covered'] == 2
  assert metrics.mixture_metrics(x, GRID.centres, GRID.std, min_count=20)['modes_covered'] == 1


@pytest.mark.parametrize('mixture', [GRID, RING], ids=['grid25', 'ring8'])
def test_matches_pacgan_loop_on_random_samples(mixture):
  rng = np.random.default_rng(0)
  # Samples spread so that a fraction is high quality: noisy points around random modes plus uniform clutter.
  near = mixture.centres[rng.integers(0, len(mixture.centres), 400)] + rng.normal(0, 2 * mixture.std, (400, 2))
  clutter = rng.uniform(-5, 5, (100, 2))
  x = np.concatenate([near, clutter])
  m = metrics.mixture_metrics(x, mixture.centres, mixture.std)
  modes, hq, kl, counts = _reference_mixture_metrics(x, mixture.centres, mixture.std)
  assert m['modes_covered'] == modes
  assert m['high_quality_percent'] == pytest.approx(hq, abs=1e-9)
  assert m['reverse_kl'] == pytest.approx(kl, abs=1e-9)
  assert m['mode_counts'] == counts.astype(int).tolist()


@pytest.mark.parametrize('mixture', [GRID, RING], ids=['grid25', 'ring8'])
def test_real_data_scores_like_the_chi_square_law(mixture):
  # For an isotropic 2-D Gaussian, P(||x - c|| < 3 std) = P(chi2_2 < 9) = 1 - exp(-4.5) = 98.89 %.
  x = np.asarray(data.make_sampler(mixture)(jax.random.key(3), 20000))
  m = metrics.mixture_metrics(x, mixture.centres, mixture.std)
  assert m['modes_covered'] == len(mixture.centres)
  assert m['high_quality_percent'] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.3)
  # Multinomial noise: E[KL] ~ (K - 1) / (2 n).
  assert m['reverse_kl'] < 5 * (len(mixture.centres) - 1) / (2 * 20000)


def test_mixture_metrics_errors():
  with pytest.raises(ValueError, match='samples must be'):
    metrics.mixture_metrics(np.zeros((5, 3)), GRID.centres, GRID.std)
  with pytest.raises(ValueError, match='non-finite'):
    metrics.mixture_metrics(np.array([[np.nan, 0.0]]), GRID.centres, GRID.std)
  with pytest.raises(ValueError, match='std must be'):
    metrics.mixture_metrics(np.zeros((5, 2)), GRID.centres, 0.0)


# The Fréchet distance is computed as a sum of squares from symmetric square roots (eigh) and one SVD, each
# backward stable: its rounding error is O(n eps (tr C1 + tr C2)) (see snjax.metrics.frechet_distance; measured at
# most 0.22 n eps tr against 60-digit arithmetic). The tests allow 16 n eps tr, 70x the worst case measured.
EPS64 = float(np.finfo(np.float64).eps)


def _fd_tolerance(c1, c2) -> float:
  return 16 * len(c1) * EPS64 * (np.trace(c1) + np.trace(c2))


def _fd_mpmath(mu1, c1, mu2, c2, dps=50) -> float:
  """The Fréchet distance in 50-digit arithmetic (mpmath), by the textbook route: Tr sqrt(S1 C2 S1)."""
  mpmath = pytest.importorskip('mpmath')
  with mpmath.workdps(dps):
    a, b = mpmath.matrix(c1.tolist()), mpmath.matrix(c2.tolist())
    e, q = mpmath.eigsy(a)
    s1 = q * mpmath.diag([mpmath.sqrt(max(x, 0)) for x in e]) * q.T
    m = s1 * b * s1
    tr_sqrt = sum(mpmath.sqrt(max(x, 0)) for x in mpmath.eigsy((m + m.T) / 2)[0])
    mean = sum((mpmath.mpf(x) - mpmath.mpf(y)) ** 2 for x, y in zip(mu1, mu2, strict=True))
    return float(mean + sum(a[i, i] + b[i, i] for i in range(a.rows)) - 2 * tr_sqrt)


@pytest.mark.parametrize('seed', range(6))
def test_frechet_distance_against_high_precision(seed):
  # Rank-deficient covariances (the case that cancels in the textbook float64 route), equal and distinct pairs.
  rng = np.random.default_rng(seed)
  n = int(rng.integers(3, 10))
  r = int(rng.integers(1, n))
  scale = 10.0 ** rng.uniform(-2, 2)
  a = scale * rng.normal(size=(n, r))
  b = a + (0 if seed % 2 else scale * 1e-3 * rng.normal(size=(n, r)))
  c1, c2 = a @ a.T, b @ b.T
  mu1, mu2 = rng.normal(size=n), rng.normal(size=n)
  got = metrics.frechet_distance(mu1, c1, mu2, c2)
  ref = _fd_mpmath(mu1, c1, mu2, c2)
  # The means add their own rounding: ~n eps ||mu1 - mu2||^2.
  tol = _fd_tolerance(c1, c2) + 4 * n * EPS64 * np.sum((mu1 - mu2) ** 2)
  assert abs(got - ref) <= tol, (got, ref, tol)


def test_frechet_distance_commuting_closed_form_and_never_negative():
  # Covariances with a common eigenbasis Q: the distance is sum_i (sqrt(l1_i) - sqrt(l2_i))^2, half the
  # eigenvalues zero (rank deficient). Equal covariances: exactly 0 in exact arithmetic, >= 0 here.
  rng = np.random.default_rng(7)
  n = 12
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  l1 = np.where(np.arange(n) % 2 == 0, rng.uniform(0.1, 100.0, n), 0.0)
  l2 = np.where(np.arange(n) % 2 == 0, rng.uniform(0.1, 100.0, n), 0.0)
  c1, c2 = (q * l1) @ q.T, (q * l2) @ q.T
  zero = np.zeros(n)
  ref = float(np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2))
  assert abs(metrics.frechet_distance(zero, c1, zero, c2) - ref) <= _fd_tolerance(c1, c2)
  same = metrics.frechet_distance(zero, c1, zero, c1)
  assert 0.0 <= same <= _fd_tolerance(c1, c1)


def test_frechet_distance_against_scipy_sqrtm():
  # Full-rank, well-conditioned covariances: scipy's Schur-method sqrtm of C1 C2 (an independent route) is accurate
  # to ~kappa eps there (kappa < 1e4 for these); 1e-9 relative covers it.
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
  c1, c2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
  m1, m2 = rng.normal(size=6), rng.normal(size=6)
  ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
  assert metrics.frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-9)
  assert 0.0 <= metrics.frechet_distance(m1, c1, m1, c1) <= _fd_tolerance(c1, c1)


def test_frechet_distance_one_dimensional_closed_form():
  # Between N(m1, s1^2) and N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2.
  assert metrics.frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9 + 1.5**2, rel=16 * EPS64)


@pytest.fixture(scope='module')
def scorer():
  return metrics.digits_scorer()


def test_digits_scorer_reference_is_the_held_out_real_digits(scorer):
  ref = scorer.reference
  assert ref['classifier_accuracy'] > 0.93
  assert ref['classes_covered'] == 10
  assert ref['class_entropy'] == pytest.approx(math.log(10), abs=0.02)
  assert ref['confidence'] > 0.9
  assert 0 <= ref['frechet_distance'] < 5


def test_digits_scorer_on_collapsed_and_noise_images(scorer):
  digits = data.load_digits()
  ones = digits.images[digits.test_index][digits.labels[digits.test_index] == 1]
  m = scorer(np.repeat(ones[:1], 50, axis=0))
  assert m['classes_covered'] == 1 and m['class_entropy'] == pytest.approx(0.0, abs=1e-12)
  noise = scorer(np.random.default_rng(0).uniform(-1, 1, (500, 8, 8)))
  assert noise['frechet_distance'] > 10 * scorer.reference['frechet_distance']
  # The training split itself: the Fréchet distance to its own Gaussian is 0.
  # (exactly 0 in exact arithmetic; the rounding bound of frechet_distance, see _fd_tolerance, on its covariance).
  train = scorer(digits.images[digits.train_index])
  _, cov = metrics._gaussian(scorer.features(digits.images[digits.train_index].reshape(-1, 64)))
  assert 0.0 <= train['frechet_distance'] <= _fd_tolerance(cov, cov)


def test_digits_scorer_errors(scorer):
  with pytest.raises(ValueError, match='images must be'):
    scorer(np.zeros((4, 7, 7)))
  with pytest.raises(ValueError, match='non-finite'):
    scorer(np.full((4, 8, 8), np.inf))
