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
  """Writes ``samples.png``: a scatter of 2-D samples over the mode centres (3-std circles), or a grid of digits.

  Args:
    path: the PNG file.
    dataset: a :class:`snjax.app.data.GaussianMixture` or :class:`snjax.app.data.Digits`.
    samples: ``(N, 2)`` points or ``(N, 8, 8)`` images in ``[-1, 1]``.
    quality: the metrics (:func:`snjax.app.metrics.evaluate`), shown in the title.
  """
  plt = _pyplot()
  if samples.ndim == 2:
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c='black', alpha=0.4, label='generated')
    for c in dataset.centres:
      ax.add_patch(plt.Circle(c, 3 * dataset.std, fill=False, color='tab:red', lw=1))
    ax.scatter(dataset.centres[:, 0], dataset.centres[:, 1], s=12, c='tab:red', marker='+', label='mode centre')
    lim = float(np.abs(dataset.centres).max()) * 1.5
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect('equal')
    ax.legend(loc='upper right', fontsize=8)
    if quality:
      ax.set_title(
        f'{dataset.name}: {quality["modes_covered"]}/{quality["n_modes"]} modes, '
        f'{quality["high_quality_percent"]:.1f}% high quality, reverse KL '
        f'{"n/a" if quality["reverse_kl"] is None else format(quality["reverse_kl"], ".3f")}',
        fontsize=9,
      )
  else:
    n = min(100, len(samples))
    side = int(math.ceil(math.sqrt(n)))
    canvas = np.ones((side * 9 + 1, side * 9 + 1))
    for i in range(n):
      r, c = divmod(i, side)
      canvas[1 + r * 9 : 1 + r * 9 + 8, 1 + c * 9 : 1 + c * 9 + 8] = (samples[i] + 1) / 2
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(canvas, cmap='gray_r', vmin=0, vmax=1, interpolation='nearest')
    ax.axis('off')
    if quality:
      g = quality['generated']
      ax.set_title(
        f'digits: class entropy {g["class_entropy"]:.2f} (real {quality["real_held_out"]["class_entropy"]:.2f}), '
        f'FD {g["frechet_distance"]:.2f} (real {quality["real_held_out"]["frechet_distance"]:.2f})',
        fontsize=9,
      )
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


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
  ax_sigma.set_yscale('log')
  ax_sigma.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
