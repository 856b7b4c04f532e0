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


def _mmd2_loops(x, y, h):
  """Gretton et al. 2012, eq. 3, term by term."""
  k = lambda a, b: math.exp(-float(np.sum((a - b) ** 2)) / (2 * h * h))  # noqa: E731
  m, n = len(x), len(y)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  xy = sum(k(a, b) for a in x for b in y) / (m * n)
  return xx + yy - 2 * xy


@pytest.mark.parametrize('seed', range(3))
def test_mmd_squared_against_the_definition(seed):
  rng = np.random.default_rng(seed)
  d = int(rng.integers(1, 6))
  x, y = rng.normal(size=(30, d)), rng.normal(0.5, 2.0, size=(25, d))
  h = float(rng.uniform(0.3, 3.0))
  # The kernel sums of ~2,000 terms in [0, 1], float64: rounding ~1e-13 at most.
  assert metrics.mmd_squared(x, y, h) == pytest.approx(_mmd2_loops(x, y, h), abs=1e-12)


def test_mmd_squared_properties():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 2))
  same, shifted = rng.normal(size=(400, 2)), rng.normal(size=(400, 2)) + 3.0
  h = metrics.median_bandwidth(x)
  # Unbiased: for equal laws it is centred on 0, with a standard deviation of order 1/n.
  assert abs(metrics.mmd_squared(x, same, h)) < 0.01
  assert metrics.mmd_squared(x, shifted, h) > 0.5
  assert metrics.mmd_squared(x, shifted, h) == pytest.approx(metrics.mmd_squared(shifted, x, h), rel=1e-12)


def test_median_bandwidth_against_scipy():
  from scipy.spatial.distance import pdist

  x = np.random.default_rng(1).normal(size=(50, 4))
  assert metrics.median_bandwidth(x) == pytest.approx(float(np.median(pdist(x))), rel=1e-9)
  assert metrics.median_bandwidth(np.ones((5, 3))) == 1.0  # all examples equal: 1, not 0


def test_mmd_errors():
  with pytest.raises(ValueError, match=r'x and y must be \(m, d\) and \(n, d\)'):
    metrics.mmd_squared(np.zeros((5, 2)), np.zeros((5, 3)), 1.0)
  with pytest.raises(ValueError, match='bandwidth must be > 0'):
    metrics.mmd_squared(np.zeros((5, 2)), np.zeros((5, 2)), 0.0)


@pytest.fixture(scope='module')
def user_points(tmp_path_factory):
  from snjax.app.user_data import load_user_data

  path = str(tmp_path_factory.mktemp('m') / 'p.npy')
  rng = np.random.default_rng(0)
  np.save(path, rng.normal(size=(3000, 2)) * [10.0, 0.1] + [100.0, 0.0])
  return load_user_data(path)


def test_user_data_metrics_in_model_units(user_points):
  d = user_points
  real = d.to_data_units(d.train[:2500])
  m = metrics.evaluate(d, real)
  assert m['n_held_out'] == 300 and m['generated']['n_samples'] == 2500
  assert m['bandwidth'] == pytest.approx(metrics.median_bandwidth(d.held_out), rel=1e-12)
  # The samples are measured in model units, where the held-out data is: training data scores as real data does.
  assert m['generated']['mmd2'] == pytest.approx(m['real_train']['mmd2'], abs=2e-3)
  assert abs(m['real_train']['mmd2']) < 5e-3
  # Collapsed on one example c: MMD^2 = E k(x, x') + 1 - 2 E k(x, c), for x, x' ~ N(0, I_2) (the data in model
  # units) in closed form: (h^2 / (h^2 + 2)) + 1 - 2 (h^2 / (h^2 + 1)) exp(-|c|^2 / (2 (h^2 + 1))). The estimate's
  # error: means of kernel values (spread ~0.3) over 300 held-out examples, ~0.02 each; 0.06 allows 3 of them.
  collapsed = np.repeat(real[:1], 2500, axis=0)
  h2, c2 = m['bandwidth'] ** 2, float(np.sum(d.train[0].astype(np.float64) ** 2))
  expected = h2 / (h2 + 2) + 1 - 2 * h2 / (h2 + 1) * np.exp(-c2 / (2 * (h2 + 1)))
  assert metrics.evaluate(d, collapsed)['generated']['mmd2'] == pytest.approx(expected, abs=0.06)
  assert expected > 0.1
  with pytest.raises(ValueError, match=r'samples must be \(N, 2\)'):
    metrics.evaluate(d, np.zeros((10, 3)))


def test_critic_lipschitz_of_the_raw_and_the_normalized_critic():
  import jax.numpy as jnp

  import snjax
  from snjax.app.models import ConvCritic, MLPCritic

  def exact_norms(params):
    return {
      layer: float(np.linalg.norm(np.asarray(p['kernel'], np.float64).reshape(-1, p['kernel'].shape[-1]), 2))
      for layer, p in params.items()
    }

  # Without spectral normalization: the raw weights, each dense layer's norm its SVD's.
  mlp = MLPCritic(8, 2)
  params = mlp.init(jax.random.key(0), jnp.zeros((1, 3)))['params']
  raw = metrics.critic_lipschitz(mlp, params, {}, (3,), 1.0)
  norms = exact_norms(params)
  assert [r['path'] for r in raw['layers']] == ['Dense_0/kernel', 'Dense_1/kernel', 'Dense_2/kernel']
  for r in raw['layers']:  # float32 kernels, float64 SVD
    assert r['reshaped_norm'] == pytest.approx(norms[r['path'].split('/')[0]], rel=1e-6)
    assert r['operator_norm'] == r['reshaped_norm'] and r['bound'] >= r['reshaped_norm'] * (1 - 1e-6)
  # A conv critic normalized with a state holding each weight's exact sigma: reshaped norms are target_norm.
  critic = ConvCritic(4)
  params = critic.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))['params']
  state = snjax.sn_init(jax.random.key(1), params)
  for layer, sigma in exact_norms(params).items():
    state[layer]['kernel']['sigma'] = jnp.asarray(sigma, state[layer]['kernel']['sigma'].dtype)
  normalized = metrics.critic_lipschitz(critic, params, state, (8, 8, 3), 2.0)
  assert [r['kind'] for r in normalized['layers']] == ['conv'] * 3 + ['dense']
  # float32 kernels divided by a float32 sigma: a few ulps.
  assert [r['reshaped_norm'] for r in normalized['layers']] == pytest.approx([2.0] * 4, rel=1e-5)
  assert normalized['reshaped_product'] == pytest.approx(16.0, rel=1e-4)
  for r in normalized['layers']:  # the certified bound is above the operator norm's estimate (a lower bound)
    assert r['bound'] >= r['operator_norm'] * (1 - 1e-5)


def test_summary_lines_of_each_kind(user_points):
  mix = metrics.mixture_metrics(np.repeat(GRID.centres, 4, axis=0), GRID.centres, GRID.std)
  assert metrics.summary_lines(mix)[0] == '  modes covered       25 / 25'
  user = metrics.evaluate(user_points, user_points.to_data_units(user_points.train[:50]))
  lines = metrics.summary_lines(user)
  assert lines[1].startswith(f'  {"MMD^2 to held-out":<22}{user["generated"]["mmd2"]:>12.5f}')
  user['critic_lipschitz'] = {'reshaped_product': 1.0, 'operator_product': 2.0, 'bound_product': None}
  assert metrics.summary_lines(user)[-1].endswith('reshaped 1.000, operator 2.000, bound -')
