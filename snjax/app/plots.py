"""The pictures of ``snjax train``: samples over the real modes (or an image grid) and training curves.

matplotlib is an extra (``pip install 'snjax[train]'``); the Agg backend is
used, so no display is needed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _pyplot():
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  return plt


def plot_samples(path: str, dataset, samples: np.ndarray, quality: dict[str, Any] | None = None) -> None:
  """Writes ``samples.png``: a scatter of points over the real data (or the mode centres), or a grid of images.

  * a 2-D mixture: the samples over the mode centres and their 3-std circles;
  * the user's points: the samples over the held-out data, in the data's first two coordinates (its only
    one, as histograms, for 1-D points; its two principal axes in model units for more than two);
  * images: the first 100 samples in a grid (stacked digits and RGB data in colour).

  Args:
    path: the PNG file.
    dataset: the run's data set (:func:`snjax.app.data.load_dataset`).
    samples: the samples as the run saves them (:func:`snjax.app.data.to_data_units`).
    quality: the metrics (:func:`snjax.app.metrics.evaluate`), summed up in the title.
  """
  from snjax.app import data

  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 6))
  if isinstance(dataset, data.GaussianMixture):
    _mixture_scatter(plt, ax, dataset, samples)
  elif len(data.sample_shape(dataset)) == 1:
    _points_scatter(ax, dataset, samples)
  else:
    model_units = samples if not isinstance(dataset, data.UserData) else (samples - dataset.offset) / dataset.scale
    _image_grid(ax, np.asarray(model_units).reshape(len(samples), *data.sample_shape(dataset)))
  if quality:
    ax.set_title(_title(dataset, quality), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _title(dataset, quality: dict[str, Any]) -> str:
  if 'n_modes' in quality:
    kl = 'n/a' if quality['reverse_kl'] is None else format(quality['reverse_kl'], '.3f')
    return (
      f'{dataset.name}: {quality["modes_covered"]}/{quality["n_modes"]} modes, '
      f'{quality["high_quality_percent"]:.1f}% high quality, reverse KL {kl}'
    )
  if 'bandwidth' in quality:
    return (
      f'{dataset.source}: MMD^2 to held-out {quality["generated"]["mmd2"]:.4f} '
      f'(real training data {quality["real_train"]["mmd2"]:.4f})'
    )
  g, r = quality['generated'], quality['real_held_out']
  if 'mode_counts' in g:
    return (
      f'stacked digits: {g["modes_covered"]}/{g["n_modes"]} modes, reverse KL {g["reverse_kl"]:.3f} '
      f'(real {r["modes_covered"]}, {r["reverse_kl"]:.3f})'
    )
  return (
    f'digits: class entropy {g["class_entropy"]:.2f} (real {r["class_entropy"]:.2f}), '
    f'FD {g["frechet_distance"]:.2f} (real {r["frechet_distance"]:.2f})'
  )


def _mixture_scatter(plt, ax, mixture, samples: np.ndarray) -> None:
  ax.scatter(samples[:, 0], samples[:, 1], s=2, c='black', alpha=0.4, label='generated')
  for c in mixture.centres:
    ax.add_patch(plt.Circle(c, 3 * mixture.std, fill=False, color='tab:red', lw=1))
  ax.scatter(mixture.centres[:, 0], mixture.centres[:, 1], s=12, c='tab:red', marker='+', label='mode centre')
  lim = float(np.abs(mixture.centres).max()) * 1.5
  ax.set_xlim(-lim, lim)
  ax.set_ylim(-lim, lim)
  ax.set_aspect('equal')
  ax.legend(loc='upper right', fontsize=8)


def _points_scatter(ax, dataset, samples: np.ndarray) -> None:
  """The samples over the held-out data: histograms for 1-D points, else a scatter (see :func:`plot_samples`)."""
  real = dataset.to_data_units(dataset.held_out)
  if real.shape[1] == 1:
    bins = np.histogram_bin_edges(np.concatenate([real[:, 0], samples[:, 0]]), bins=60)
    ax.hist(real[:, 0], bins=bins, density=True, alpha=0.5, color='tab:red', label='held-out data')
    ax.hist(samples[:, 0], bins=bins, density=True, alpha=0.5, color='black', label='generated')
    ax.set_xlabel('x')
  else:
    labels = ('x[0]', 'x[1]')
    if real.shape[1] > 2:  # the two principal axes of the held-out data, in model units
      centre = dataset.held_out.mean(0)
      axes = np.linalg.svd(dataset.held_out - centre, full_matrices=False)[2][:2].T
      real = (dataset.held_out - centre) @ axes
      samples = ((samples - dataset.offset) / dataset.scale - centre) @ axes
      labels = ('principal axis 1', 'principal axis 2')
    ax.scatter(real[:, 0], real[:, 1], s=2, c='tab:red', alpha=0.4, label='held-out data')
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c='black', alpha=0.4, label='generated')
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
  ax.legend(loc='upper right', fontsize=8)


def _image_grid(ax, images: np.ndarray) -> None:
  """The first 100 images ``(N, H, W, C)`` in ``[-1, 1]`` in a square grid, 1-pixel white borders.

  Grey (one channel, or the first of two) or colour (the first three channels).
  """
  n = min(100, len(images))
  side = int(math.ceil(math.sqrt(n)))
  _, h, w, c = images.shape
  shown = images[:n, ..., :3] if c >= 3 else images[:n, ..., :1]
  canvas = np.ones((side * (h + 1) + 1, side * (w + 1) + 1, shown.shape[-1]))
  for i in range(n):
    r, col = divmod(i, side)
    top, left = 1 + r * (h + 1), 1 + col * (w + 1)
    canvas[top : top + h, left : left + w] = np.clip((shown[i] + 1) / 2, 0, 1)
  if canvas.shape[-1] == 1:
    ax.imshow(canvas[..., 0], cmap='gray_r', vmin=0, vmax=1, interpolation='nearest')
  else:
    ax.imshow(canvas, interpolation='nearest')
  ax.axis('off')


def plot_curves(path: str, history: list[dict[str, Any]]) -> None:
  """Writes ``curves.png``: critic and generator losses, and each critic layer's sigma, against the step.

  Args:
    path: the PNG file.
    history: the run's history entries (``history.json``): ``step``, ``critic_loss``, ``generator_loss`` and
      ``sigma/<path>`` of each normalized critic weight.
  """
  plt = _pyplot()
  fig, (ax_loss, ax_sigma) = plt.subplots(1, 2, figsize=(11, 4))
  if history:
    steps = [h['step'] for h in history]
    for key, label in (('critic_loss', 'critic loss'), ('generator_loss', 'generator loss')):
      ax_loss.plot(steps, [h[key] for h in history], label=label)
    for key in [k for k in history[-1] if k.startswith('sigma/')]:
      ax_sigma.plot(steps, [h[key] for h in history], label=key[len('sigma/') :])
  ax_loss.set_xlabel('step')
  ax_loss.set_title('losses')
  ax_loss.legend(fontsize=8)
  ax_sigma.set_xlabel('step')
  ax_sigma.set_title('sigma of each critic weight (before normalization)')
  if ax_sigma.get_lines():  # none without spectral normalization
    ax_sigma.set_yscale('log')
    ax_sigma.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
