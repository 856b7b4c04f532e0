"""Sample-quality metrics of ``snjax train``, as the literature computes them.

2-D Gaussian mixtures (:func:`mixture_metrics`), following VEEGAN
(Srivastava et al. 2017, https://arxiv.org/abs/1705.07761, section 5.1) and
PacGAN (Lin et al. 2018, https://arxiv.org/abs/1712.04086, section 4.1 and its
code ``pacgan/extensions.py``), on 2,500 generated samples:

* each sample is assigned to its nearest mode centre ``c_j``; it is
  **high quality** if ``||x - c_j|| < 3 std`` (within three standard
  deviations of the nearest mode);
* ``modes_covered``: the number of modes whose centre is the nearest one of at
  least ``min_count`` high-quality samples (``min_count=1``: VEEGAN's
  definition and PacGAN's code);
* ``high_quality_percent``: 100 x the fraction of high-quality samples;
* ``reverse_kl``: ``KL(p || u) = sum_j p_j log(K p_j)``, where ``p`` is the
  histogram of the high-quality samples over the K modes (normalized) and
  ``u`` the uniform target; 0 for a perfectly balanced sample, ``log K`` for a
  single mode; ``None`` when no sample is high quality. (Terms with
  ``p_j = 0`` are 0, so missed modes raise it only through the others' excess.)

8x8 digits (:class:`DigitsScorer`): a classifier trained once, with a fixed
seed, on the real training split, stands in for the Inception network of the
Inception score and FID (Salimans et al. 2016, https://arxiv.org/abs/1606.03498;
Heusel et al. 2017, https://arxiv.org/abs/1706.08500):

* ``class_entropy``: the entropy (nats) of the histogram of predicted classes
  (``log 10 = 2.303`` when all ten digits are equally frequent);
* ``classes_covered``: classes predicted for at least 1% of the samples;
* ``confidence``: the mean top-class probability (a sharpness proxy);
* ``frechet_distance``: ``||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2))``
  between Gaussians fitted to the classifier's hidden features of the samples
  and of the real training split;

and the same numbers for the real held-out split, the reference beside them.

Stacked digits (:func:`stacked_digits_metrics`), following Stacked MNIST
(Metz et al. 2017, https://arxiv.org/abs/1611.02163, section 3.3.2;
Srivastava et al. 2017; Lin et al. 2018, PacGAN, section 4.2), on 26,000
generated samples: the same classifier labels each of the three channels,
the triple of labels is the sample's mode (of 1,000);

* ``modes_covered``: modes with at least one sample;
* ``reverse_kl``: ``KL(p || u) = sum_j p_j log(1000 p_j)``, ``p`` the histogram
  of the samples over the 1,000 modes, ``u`` uniform. A perfect sampler does
  not score 0: with ``n`` samples the histogram's own noise gives about
  ``999 / (2 n) = 0.019`` for ``n = 26,000``; the real held-out digits,
  stacked the same way and labelled by the same classifier, are the
  reference beside the samples.

The user's data (:func:`user_data_metrics`), where no classifier exists: the
squared maximum mean discrepancy (Gretton et al. 2012,
https://jmlr.org/papers/v13/gretton12a.html, the unbiased estimate of its
eq. 3) between the held-out data and the samples, with a Gaussian kernel in a
fixed feature space: the examples as the model sees them (points standardized
per coordinate, images mapped to ``[-1, 1]``; :mod:`snjax.app.user_data`),
flattened, with the bandwidth the median distance between held-out examples
(the median heuristic, Gretton et al. 2012, section 8); beside it, the same
number for as many training examples as samples, the score of real data;
and the critic's Lipschitz report (:func:`critic_lipschitz`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from snjax.app import data

N_EVAL_SAMPLES = 2500
"""Samples drawn for the metrics, as in VEEGAN and PacGAN."""

N_STACKED_SAMPLES = 26000
"""Samples drawn for the stacked-digits metrics, as for Stacked MNIST in PacGAN (Lin et al. 2018, section 4.2)."""


def mixture_metrics(
  samples: np.ndarray,
  centres: np.ndarray,
  std: float,
  *,
  n_std: float = 3.0,
  min_count: int = 1,
) -> dict[str, Any]:
  """Modes covered, % high-quality samples and reverse KL of a 2-D mixture's samples (see the module docstring).

  Args:
    samples: ``(N, D)`` generated samples.
    centres: ``(K, D)`` the mode centres.
    std: the standard deviation of every mode.
    n_std: a sample is high quality within ``n_std * std`` of its nearest centre.
    min_count: high-quality samples a mode needs to count as covered.

  Returns:
    A dict: ``modes_covered`` (int), ``n_modes`` (K), ``high_quality_percent``
    (float), ``reverse_kl`` (float, or ``None`` without high-quality samples), ``mode_counts`` (list of K ints: the
    high-quality samples per mode), ``n_samples``.

  Raises:
    ValueError: mismatched or empty shapes, non-finite samples, ``std <= 0``.
  """
  x = np.asarray(samples, np.float64)
  c = np.asarray(centres, np.float64)
  if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1] or len(x) == 0 or len(c) == 0:
    raise ValueError(f'samples must be (N, D) and centres (K, D) with N, K > 0; got {x.shape} and {c.shape}.')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'samples hold {int(np.sum(~np.isfinite(x)))} non-finite values.')
  if not std > 0:
    raise ValueError(f'std must be > 0, got {std!r}.')
  dist = np.sqrt(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1))
  nearest = dist.argmin(axis=1)
  high_quality = dist[np.arange(len(x)), nearest] < n_std * std
  counts = np.bincount(nearest[high_quality], minlength=len(c))
  total = counts.sum()
  if total > 0:
    p = counts / total
    nz = p > 0
    reverse_kl = float(np.sum(p[nz] * np.log(p[nz] * len(c))))
  else:
    reverse_kl = None
  return {
    'modes_covered': int(np.sum(counts >= min_count)),
    'n_modes': len(c),
    'high_quality_percent': float(100.0 * high_quality.mean()),
    'reverse_kl': reverse_kl,
    'mode_counts': counts.astype(int).tolist(),
    'n_samples': len(x),
  }


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
  """The symmetric square root of a symmetric PSD matrix (negative rounding eigenvalues clipped to 0)."""
  w, v = np.linalg.eigh((c + c.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
  """``||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))``, the Fréchet distance of two Gaussians.

  Heusel et al. 2017 (https://arxiv.org/abs/1706.08500), eq. (6); Dowson &
  Landau 1982. The trace term is the squared Bures distance of the
  covariances, computed as a sum of squares (so the result is never negative):
  with ``S_i = cov_i^(1/2)`` (symmetric) and ``U`` the orthogonal polar factor
  of ``S_2 S_1`` (``U = P Q^T`` from its SVD ``P Sigma Q^T``),

    ``Tr(cov1 + cov2) - 2 ||S_1 S_2||_* = ||S_1 - S_2 U||_F^2``,

  since ``Tr (cov1 cov2)^(1/2)`` is the sum of the singular values of
  ``S_1 S_2`` (Bhatia, Jain & Lim 2019, "On the Bures-Wasserstein distance
  between positive definite matrices"). The usual route, ``Tr(cov1) +
  Tr(cov2) - 2 sum sqrt(eig(S_1 cov2 S_1))``, subtracts nearly equal numbers
  and loses ``sqrt(eps * scale)`` per near-zero eigenvalue of a rank-deficient
  covariance (it can return a negative distance); this form loses only
  rounding of the order of ``n eps Tr(cov1 + cov2)``. Measured in float64 on
  40 random pairs (n = 2..11, ranks 1..n, scales 1e-3..1e3, nearly equal and
  distinct pairs) against the same formula in 60-digit arithmetic (mpmath):
  the error was at most ``0.22 n eps Tr(cov1 + cov2)``, against up to
  ``1.7e7 n eps Tr(cov1 + cov2)`` for the eigenvalue route.

  Args:
    mu1: the first mean, ``(n,)``.
    cov1: the first covariance, ``(n, n)``, symmetric positive semi-definite.
    mu2: the second mean.
    cov2: the second covariance.

  Returns:
    The distance (float64 arithmetic), ``>= 0``.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1 = _psd_sqrt(np.atleast_2d(np.asarray(cov1, np.float64)))
  s2 = _psd_sqrt(np.atleast_2d(np.asarray(cov2, np.float64)))
  p, _, qt = np.linalg.svd(s2 @ s1)
  residual = s1 - s2 @ (p @ qt)
  return float(np.sum((mu1 - mu2) ** 2) + np.sum(residual * residual))


def _gaussian(features: np.ndarray):
  f = np.asarray(features, np.float64)
  return f.mean(0), np.cov(f, rowvar=False)


class DigitsScorer:
  """A classifier of real 8x8 digits and the scores it gives a set of images (see the module docstring).

  ``scorer = DigitsScorer(digits)`` fits a one-hidden-layer MLP
  (``sklearn.neural_network.MLPClassifier``, 64 ReLU units, L-BFGS, ``random_state=0``)
  on the training split; ``scorer(images)`` scores images in ``[-1, 1]`` of
  shape ``(N, 8, 8)`` or ``(N, 8, 8, 1)``; ``scorer.reference`` holds the
  held-out real digits' scores.

  Args:
    digits: a :class:`snjax.app.data.Digits`.

  Attributes:
    n_classes: the classes the classifier knows (10).
    test_accuracy: its accuracy on the held-out real digits.
    reference: the scores of the held-out real digits (as returned by a call), with ``classifier_accuracy``.
  """

  def __init__(self, digits):
    from sklearn.neural_network import MLPClassifier

    x = digits.images.reshape(len(digits.images), -1).astype(np.float64)
    self._classifier = MLPClassifier(hidden_layer_sizes=(64,), solver='lbfgs', alpha=1e-3, max_iter=300, random_state=0)
    self._classifier.fit(x[digits.train_index], digits.labels[digits.train_index])
    self.n_classes = len(self._classifier.classes_)
    self._train_gaussian = _gaussian(self.features(x[digits.train_index]))
    self.test_accuracy = float(self._classifier.score(x[digits.test_index], digits.labels[digits.test_index]))
    self.reference = self(digits.images[digits.test_index])
    self.reference['classifier_accuracy'] = self.test_accuracy

  def classes(self, images: np.ndarray) -> np.ndarray:
    """The predicted class of each of ``(N, ...)`` images of 64 pixels in ``[-1, 1]``, int64 ``(N,)``."""
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    return self._classifier.classes_[self._classifier.predict_proba(x).argmax(1)].astype(np.int64)

  def features(self, images: np.ndarray) -> np.ndarray:
    """The classifier's hidden ReLU activations, ``(N, 64)``, of ``(N, ...)`` images of 64 pixels in ``[-1, 1]``."""
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    return np.maximum(x @ self._classifier.coefs_[0] + self._classifier.intercepts_[0], 0.0)

  def __call__(self, images: np.ndarray) -> dict[str, Any]:
    """Scores ``(N, 8, 8[, 1])`` images in ``[-1, 1]``.

    Args:
      images: the images to score, ``N >= 2``.

    Returns:
      A dict: ``class_entropy``, ``classes_covered``, ``confidence``,
      ``frechet_distance``, ``class_counts`` (list), ``n_samples``.

    Raises:
      ValueError: a wrong shape or non-finite values.
    """
    x = np.asarray(images, np.float64)
    if x.ndim not in (3, 4) or x.shape[1:3] != (8, 8) or (x.ndim == 4 and x.shape[3] != 1) or len(x) < 2:
      raise ValueError(f'images must be (N, 8, 8) or (N, 8, 8, 1) with N >= 2, got {x.shape}.')
    if not np.all(np.isfinite(x)):
      raise ValueError('images hold non-finite values.')
    x = x.reshape(len(x), -1)
    prob = self._classifier.predict_proba(x)
    counts = np.bincount(prob.argmax(1), minlength=self.n_classes)
    p = counts / counts.sum()
    nz = p > 0
    mu, cov = _gaussian(self.features(x))
    return {
      'class_entropy': float(-np.sum(p[nz] * np.log(p[nz]))),
      'classes_covered': int(np.sum(p >= 0.01)),
      'confidence': float(prob.max(1).mean()),
      'frechet_distance': frechet_distance(mu, cov, *self._train_gaussian),
      'class_counts': counts.astype(int).tolist(),
      'n_samples': len(x),
    }


@functools.lru_cache(maxsize=1)
def digits_scorer() -> DigitsScorer:
  """The :class:`DigitsScorer` of :func:`snjax.app.data.load_digits` (fitted once per process)."""
  return DigitsScorer(data.load_digits())


def _reverse_kl(counts: np.ndarray) -> float:
  """``sum_j p_j log(K p_j)`` of the histogram ``counts`` over ``K`` bins (empty bins add 0)."""
  p = counts / counts.sum()
  nz = p > 0
  return float(np.sum(p[nz] * np.log(p[nz] * len(counts))))


def stacked_digits_metrics(images: np.ndarray, scorer: DigitsScorer) -> dict[str, Any]:
  """Modes covered (of 1,000) and reverse KL of stacked-digit images (see the module docstring).

  Args:
    images: ``(N, 8, 8, 3)`` in ``[-1, 1]``, each channel a digit.
    scorer: the :class:`DigitsScorer` that labels each channel.

  Returns:
    A dict: ``modes_covered`` (int), ``n_modes`` (1000), ``reverse_kl`` (float), ``channel_reverse_kl`` (the
    reverse KL of each channel's 10-class histogram against uniform), ``n_samples``, ``mode_counts`` (1,000
    ints; mode ``100 a + 10 b + c`` for labels ``a, b, c`` of the channels).

  Raises:
    ValueError: a wrong shape or non-finite values.
  """
  x = np.asarray(images, np.float64)
  if x.ndim != 4 or x.shape[1:] != (8, 8, 3) or len(x) == 0:
    raise ValueError(f'stacked digits must be (N, 8, 8, 3) with N > 0, got {x.shape}.')
  if not np.all(np.isfinite(x)):
    raise ValueError('stacked digits hold non-finite values.')
  labels = np.stack([scorer.classes(x[..., c]) for c in range(3)], axis=1)
  counts = np.bincount(labels @ np.array([100, 10, 1]), minlength=1000)
  return {
    'modes_covered': int(np.sum(counts > 0)),
    'n_modes': 1000,
    'reverse_kl': _reverse_kl(counts),
    'channel_reverse_kl': [_reverse_kl(np.bincount(labels[:, c], minlength=10)) for c in range(3)],
    'n_samples': len(x),
    'mode_counts': counts.astype(int).tolist(),
  }


@functools.lru_cache(maxsize=1)
def stacked_digits_reference(n: int = N_STACKED_SAMPLES, seed: int = 0) -> dict[str, Any]:
  """:func:`stacked_digits_metrics` of ``n`` stacks of real held-out digits (drawn with replacement, ``seed``).

  The score of real data: its modes and reverse KL are what a perfect generator would get from the same
  classifier and as many samples.
  """
  digits = data.load_digits()
  held_out = digits.images[digits.test_index, ..., 0]
  index = np.random.default_rng(seed).integers(0, len(held_out), (n, 3))
  result = stacked_digits_metrics(np.moveaxis(held_out[index], 1, -1), digits_scorer())
  result['classifier_accuracy'] = digits_scorer().test_accuracy
  return result


def mmd_squared(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
  """The unbiased estimate of ``MMD^2`` between samples ``x`` and ``y`` with a Gaussian kernel.

  ``k(a, b) = exp(-||a - b||^2 / (2 bandwidth^2))``; Gretton et al. 2012
  (https://jmlr.org/papers/v13/gretton12a.html), eq. 3: the means of ``k`` over distinct pairs within ``x``
  and within ``y``, less twice its mean over the pairs across. It can be slightly negative when the two
  distributions are equal.

  Args:
    x: ``(m, d)``, ``m >= 2``.
    y: ``(n, d)``, ``n >= 2``.
    bandwidth: the kernel's length scale, > 0.

  Returns:
    The estimate (float64 arithmetic).

  Raises:
    ValueError: shapes that do not match or too few samples, or a bandwidth that is not > 0.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
    raise ValueError(f'x and y must be (m, d) and (n, d) with m, n >= 2; got {x.shape} and {y.shape}.')
  if not bandwidth > 0:
    raise ValueError(f'bandwidth must be > 0, got {bandwidth!r}.')

  def mean_kernel(a, b, same):
    k = np.exp(-_squared_distances(a, b) / (2 * bandwidth**2))
    if same:
      return (k.sum() - np.trace(k)) / (len(a) * (len(a) - 1))
    return k.mean()

  return float(mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2 * mean_kernel(x, y, False))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """``||a_i - b_j||^2``, ``(m, n)``, never negative (``|a|^2 + |b|^2 - 2 a.b`` rounds below 0 for near pairs)."""
  d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
  return np.maximum(d, 0.0)


def median_bandwidth(x: np.ndarray) -> float:
  """The median distance between distinct examples of ``x`` ``(m, d)`` (1 if it is 0): the median heuristic."""
  x = np.asarray(x, np.float64)
  d = np.sqrt(_squared_distances(x, x)[np.triu_indices(len(x), 1)])
  median = float(np.median(d)) if d.size else 0.0
  return median if median > 0 else 1.0


def user_data_metrics(dataset, samples: np.ndarray) -> dict[str, Any]:
  """MMD between the held-out data and the samples, and between training data and held-out data (reference).

  Args:
    dataset: a :class:`snjax.app.user_data.UserData`.
    samples: ``(N, *example_shape)``, generated examples in the data's units (as ``samples.npy`` holds them).

  Returns:
    ``{'feature_space', 'bandwidth', 'generated': {'mmd2', 'n_samples'}, 'real_train': {'mmd2', 'n_samples'},
    'n_held_out'}``: ``mmd2`` is :func:`mmd_squared` against the held-out examples.

  Raises:
    ValueError: samples of the wrong shape or with non-finite values.
  """
  x = np.asarray(samples, np.float64)
  if x.shape[1:] != tuple(dataset.example_shape) or len(x) < 2:
    raise ValueError(f'samples must be (N, {", ".join(map(str, dataset.example_shape))}) with N >= 2, got {x.shape}.')
  if not np.all(np.isfinite(x)):
    raise ValueError('samples hold non-finite values.')
  held = dataset.held_out.reshape(len(dataset.held_out), -1)
  generated = ((x.reshape(len(x), *dataset.shape) - dataset.offset) / dataset.scale).reshape(len(x), -1)
  pick = np.random.default_rng(0).permutation(len(dataset.train))[: len(x)]
  train = dataset.train[np.sort(pick)].reshape(len(pick), -1)
  h = median_bandwidth(held)
  return {
    'feature_space': 'model units (points standardized, images in [-1, 1]), flattened; Gaussian kernel',
    'bandwidth': h,
    'n_held_out': len(held),
    'generated': {'mmd2': mmd_squared(held, generated, h), 'n_samples': len(generated)},
    'real_train': {'mmd2': mmd_squared(held, train, h), 'n_samples': len(train)},
  }


def critic_lipschitz(critic, critic_params: Any, sn_state: Any, example_shape: tuple[int, ...], target_norm: float):
  """The critic's Lipschitz report (:func:`snjax.lipschitz.lipschitz_report`) as a JSON-able dict.

  The report is of the critic the run evaluates: its weights divided by their stored sigma times
  ``target_norm`` (``update=False``, as :func:`snjax.gan.gan_trainer`'s evaluation does), or the raw weights
  when ``sn_state`` is empty (spectral normalization off). Each convolution is measured on its real input
  (:func:`snjax.conv_specs` of one example).

  Args:
    critic: the critic, a Flax linen module.
    critic_params: its raw params.
    sn_state: the spectral-norm state (``{}`` without spectral normalization).
    example_shape: the shape of one example.
    target_norm: the spectral norm each normalized weight is scaled to.

  Returns:
    ``{'layers': [{path, kind, reshaped_norm, operator_norm, bound}, ...], 'reshaped_product',
    'operator_product', 'bound_product'}``; for a feed-forward critic with 1-Lipschitz activations the products
    bound its Lipschitz constant (``bound_product`` provably).
  """
  import jax.numpy as jnp

  import snjax

  params = critic_params
  if sn_state:
    params, _ = snjax.sn_apply(critic_params, sn_state, update=False, target_norm=target_norm)
  specs = snjax.conv_specs(critic, jnp.zeros((1, *example_shape), jnp.float32))
  report = snjax.lipschitz.lipschitz_report(params, specs)
  return {
    'layers': [
      {k: getattr(r, k) for k in ('path', 'kind', 'reshaped_norm', 'operator_norm', 'bound')} for r in report.layers
    ],
    'reshaped_product': report.reshaped_product,
    'operator_product': report.operator_product,
    'bound_product': report.bound_product,
  }


def eval_sample_count(dataset: data.Dataset) -> int:
  """The samples a run draws for its metrics (and saves): 26,000 for stacked digits, else 2,500."""
  return N_STACKED_SAMPLES if isinstance(dataset, data.StackedDigits) else N_EVAL_SAMPLES


def evaluate(dataset: data.Dataset, samples: np.ndarray) -> dict[str, Any]:
  """The metrics of a run's samples, for its data set.

  Args:
    dataset: the data set the run was trained on.
    samples: the generator's samples as the run saves them (:func:`snjax.app.data.to_data_units`): ``(N, 2)``
      points, ``(N, 8, 8)`` digits, ``(N, 8, 8, 3)`` stacked digits, or the user's examples.

  Returns:
    A 2-D mixture: the dict of :func:`mixture_metrics`. Digits and stacked digits: ``{'generated': scores,
    'real_held_out': reference}`` (the samples' scores, :meth:`DigitsScorer.__call__` or
    :func:`stacked_digits_metrics`, and the held-out real digits', with the classifier's accuracy). The user's
    data: :func:`user_data_metrics`.

  Raises:
    ValueError: samples of the wrong shape or with non-finite values.
  """
  if isinstance(dataset, data.GaussianMixture):
    return mixture_metrics(samples, dataset.centres, dataset.std)
  if isinstance(dataset, data.StackedDigits):
    return {'generated': stacked_digits_metrics(samples, digits_scorer()), 'real_held_out': stacked_digits_reference()}
  if isinstance(dataset, data.UserData):
    return user_data_metrics(dataset, samples)
  scorer = digits_scorer()
  return {'generated': scorer(samples), 'real_held_out': scorer.reference}


def summary_lines(m: dict[str, Any]) -> list[str]:
  """The metrics of :func:`evaluate` as the lines of the end-of-run summary (beside the real data's).

  Args:
    m: the dict :func:`evaluate` returned (with ``critic_lipschitz`` for the user's data).

  Returns:
    Lines of text, indented by two spaces.
  """
  if 'n_modes' in m:
    kl = 'n/a (no high-quality sample)' if m['reverse_kl'] is None else f'{m["reverse_kl"]:.4f}'
    return [
      f'  modes covered       {m["modes_covered"]} / {m["n_modes"]}',
      f'  high-quality        {m["high_quality_percent"]:.1f} %  (within 3 std of a mode, of {m["n_samples"]})',
      f'  reverse KL          {kl}  (histogram of the high-quality samples over the modes vs uniform)',
    ]
  if 'bandwidth' in m:
    g, r, lip = m['generated'], m['real_train'], m.get('critic_lipschitz')
    lines = [
      f'  {"":<22}{"generated":>12}{"real (train)":>16}',
      f'  {"MMD^2 to held-out":<22}{g["mmd2"]:>12.5f}{r["mmd2"]:>16.5f}'
      f'  (Gaussian kernel, bandwidth {m["bandwidth"]:.3g}, {m["n_held_out"]} held-out examples)',
    ]
    if lip:
      products = ', '.join(
        f'{name} {"-" if lip[f"{name}_product"] is None else format(lip[f"{name}_product"], ".3f")}'
        for name in ('reshaped', 'operator', 'bound')
      )
      lines.append(f'  critic Lipschitz    products of the layer norms: {products}')
    return lines
  g, r = m['generated'], m['real_held_out']
  lines = [f'  {"":<22}{"generated":>12}{"real held-out":>16}']
  if 'mode_counts' in g:
    rows = (('modes_covered', 'modes covered', 'd'), ('reverse_kl', 'reverse KL', '.4f'))
    lines += [f'  {label:<22}{g[key]:>12{fmt}}{r[key]:>16{fmt}}' for key, label, fmt in rows]
    lines.append(f'  (of {g["n_modes"]} modes, {g["n_samples"]} samples; digits classifier on each channel)')
    return lines
  for key, label in (
    ('class_entropy', 'class entropy (nats)'),
    ('classes_covered', 'classes covered'),
    ('confidence', 'classifier confidence'),
    ('frechet_distance', 'Frechet distance'),
  ):
    lines.append(f'  {label:<22}{g[key]:>12.3f}{r[key]:>16.3f}')
  return lines
