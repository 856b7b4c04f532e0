"""The user's own data for ``snjax train --data PATH``: reading, checking, scaling and the held-out split.

::

  from snjax.app.user_data import load_user_data
  data = load_user_data('faces.npy', batch_size=64)   # UserData: kind 'images', shape (32, 32, 3)

``PATH`` is one of

* a ``.npy`` file, or a ``.npz`` file holding one array (or several, one of them named ``x``), of
  **points** ``(N, D)`` or **images** ``(N, H, W)`` / ``(N, H, W, C)`` (channels last, ``C <= 4``), of
  any integer or floating dtype (``allow_pickle`` is off);
* a **folder of PNG / JPEG images** (``*.png``, ``*.jpg``, ``*.jpeg``, any case; other files and
  sub-folders are ignored), all of one size, read with Pillow (the ``snjax[train]`` extra) as 8-bit
  grey ``(H, W)`` when every image is grey, else as 8-bit RGB ``(H, W, 3)`` (alpha dropped), in the
  order of their names.

Points train MLPs, images conv nets (:func:`snjax.app.models.make_models`). The values are mapped
to the generator's output range by an affine map per coordinate, ``model = (data - offset) / scale``,
which :class:`UserData` keeps (and a run saves in ``data.json``) so that samples come back in the data's
units (:meth:`UserData.to_data_units`):

* uint8 images: ``offset = scale = 127.5`` (``[0, 255] -> [-1, 1]``, the tanh of the conv generator);
* other images: ``offset = (max + min) / 2``, ``scale = (max - min) / 2`` over all values (``[min, max]
  -> [-1, 1]``);
* points: each coordinate standardized, ``offset`` its mean, ``scale`` its standard deviation (the MLP
  generator's output is linear, so unit scale suits its initialization).

A constant coordinate (or constant images) gets ``scale = 1``, never a division by zero. A fixed
share of the examples is held out (seed 0): ``min(2500, max(2, N // 10))``, the real data the metrics
compare the samples with (:func:`snjax.app.metrics.user_data_metrics`); the rest is the training split.

Bad input raises :class:`DataError` (a ``ValueError``) whose one-line message names the file and what
was expected: a missing or unreadable file, a wrong rank, a non-numeric dtype, channels first, images of
mixed sizes, NaN or infinite values, fewer training examples than a batch.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
"""The file names a folder of images is read from (compared in lower case)."""

MAX_HELD_OUT = 2500
"""The most examples held out for the metrics (as many as the samples they are compared with)."""

_MIN_SIDE = 4
_MAX_CHANNELS = 4
_GREY_MODES = ('1', 'L', 'I', 'I;16', 'F')


class DataError(ValueError):
  """The user's data cannot be trained on; the message names the file and what was expected."""


@dataclasses.dataclass(frozen=True, eq=False)
class UserData:
  """The user's data, checked and scaled, split into training and held-out examples.

  Equality is identity: :func:`load_user_data` returns the same object while the files are unchanged, so a
  second run on the same data reuses the compiled steps, and never those of other data.

  Attributes:
    name: ``'user'``.
    source: the path the data was read from.
    kind: ``'points'`` or ``'images'``.
    example_shape: the shape of one example as read: ``(D,)``, ``(H, W)`` or ``(H, W, C)``.
    dtype: the dtype of the data as read (``'uint8'``, ``'float32'``, ...).
    train: float32 ``(N_train, *shape)``, the training split in model units (see :attr:`shape`).
    held_out: float32 ``(N_held_out, *shape)``, the held-out split in model units.
    offset: float64, ``(D,)`` for points, ``()`` for images: ``data = model * scale + offset``.
    scale: float64, the same shape, every entry > 0.
    fingerprint: SHA-256 of the data as read (its dtype, shape and bytes); a resumed run checks it.
  """

  name: str
  source: str
  kind: str
  example_shape: tuple[int, ...]
  dtype: str
  train: np.ndarray
  held_out: np.ndarray
  offset: np.ndarray
  scale: np.ndarray
  fingerprint: str

  @property
  def shape(self) -> tuple[int, ...]:
    """The shape of one example in model units: ``(D,)`` for points, ``(H, W, C)`` for images (grey: ``C = 1``)."""
    return tuple(self.train.shape[1:])

  @property
  def n_examples(self) -> int:
    """Training and held-out examples together."""
    return len(self.train) + len(self.held_out)

  def to_data_units(self, x: np.ndarray) -> np.ndarray:
    """``x * scale + offset``, float32, of examples ``(N, *shape)`` in model units, shaped ``(N, *example_shape)``."""
    y = np.asarray(x, np.float64) * self.scale + self.offset
    return y.reshape(len(y), *self.example_shape).astype(np.float32)

  def description(self) -> dict[str, Any]:
    """What a run saves in ``data.json``: the source, kind, shapes, split sizes, scaling and fingerprint."""
    return {
      'source': self.source,
      'kind': self.kind,
      'example_shape': list(self.example_shape),
      'dtype': self.dtype,
      'n_examples': self.n_examples,
      'n_train': len(self.train),
      'n_held_out': len(self.held_out),
      'scaling': 'data = model * scale + offset' + (' per coordinate' if self.kind == 'points' else ''),
      'offset': self.offset.tolist(),
      'scale': self.scale.tolist(),
      'sha256': self.fingerprint,
    }


def load_user_data(path: str, batch_size: int = 1) -> UserData:
  """Reads, checks, scales and splits the data at ``path`` (see the module docstring).

  Cached: while the files are unchanged (same size and modification time) the same :class:`UserData` is
  returned.

  Args:
    path: a ``.npy`` / ``.npz`` file or a folder of PNG / JPEG images.
    batch_size: the training split must hold at least this many examples.

  Returns:
    The :class:`UserData`.

  Raises:
    DataError: the data cannot be trained on (the message names the file and what was expected).
  """
  data = _load_cached(path, os.path.abspath(path), _stamp(path))
  if len(data.train) < batch_size:
    raise DataError(
      f'{path}: {data.n_examples} examples, {len(data.train)} for training after holding out {len(data.held_out)} '
      f'for the metrics: fewer than a batch (batch_size {batch_size}); give more data or a smaller --batch-size.'
    )
  return data


def _stamp(path: str) -> tuple:
  """What identifies the files' current contents for the cache: (name, size, mtime) of each file read."""
  if os.path.isdir(path):
    return tuple((os.path.basename(f), *_file_stamp(f)) for f in _image_files(path))
  if not os.path.exists(path):
    raise DataError(f'{path}: no such file or folder; expected a .npy or .npz file or a folder of PNG/JPEG images.')
  if os.path.splitext(path)[1].lower() not in ('.npy', '.npz'):
    raise DataError(f'{path}: expected a .npy or .npz file or a folder of PNG/JPEG images.')
  return (_file_stamp(path),)


def _file_stamp(path: str) -> tuple[int, int]:
  st = os.stat(path)
  return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=1)
def _load_cached(path: str, absolute_path: str, stamp: tuple) -> UserData:
  del absolute_path, stamp  # the cache key, with path: a changed file, or another one of the same name, is read again
  raw = _read_images(path) if os.path.isdir(path) else _read_array(path)
  return _prepare(path, raw)


def _read_array(path: str) -> np.ndarray:
  """The array of a ``.npy`` file, or the one array (or the array ``x``) of a ``.npz`` file."""
  npz = path.lower().endswith('.npz')
  with open(path, 'rb') as f:
    magic = f.read(6)
  if not magic.startswith(b'PK\x03\x04' if npz else b'\x93NUMPY'):
    why = 'an .npz file is a zip archive, and this is not one' if npz else 'it lacks the .npy header'
    raise DataError(f'{path}: cannot read it as a NumPy array ({why}).')
  try:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.lib.npyio.NpzFile):
      with loaded:
        names = list(loaded.files)
        if len(names) != 1 and 'x' not in names:
          raise DataError(
            f'{path}: an .npz file must hold one array, or one named x; it holds {len(names)}: {", ".join(names)}.'
          )
        return loaded[names[0] if len(names) == 1 else 'x']
    return loaded
  except DataError:
    raise
  except Exception as e:  # numpy raises ValueError, OSError, EOFError, zipfile.BadZipFile ... for a bad file
    raise DataError(f'{path}: cannot read it as a NumPy array ({type(e).__name__}: {_one_line(e)}).') from None


def _image_files(folder: str) -> list[str]:
  names = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
  files = [os.path.join(folder, f) for f in names if os.path.isfile(os.path.join(folder, f))]
  if not files:
    raise DataError(f'{folder}: a folder without PNG/JPEG images (*.png, *.jpg, *.jpeg); expected at least one.')
  return files


def _read_images(folder: str) -> np.ndarray:
  """The images of ``folder``, uint8 ``(N, H, W)`` if all are grey, else ``(N, H, W, 3)``."""
  try:
    from PIL import Image
  except ImportError as e:
    raise ImportError(
      f"reading the images in {folder} needs Pillow; install the extra: pip install 'snjax[train]'"
    ) from e
  files = _image_files(folder)
  images = []
  for f in files:
    try:
      with Image.open(f) as im:
        im.load()
        images.append(im.copy())
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError ... for a bad file
      raise DataError(f'{f}: cannot read it as an image ({type(e).__name__}: {_one_line(e)}).') from None
    if images[-1].size != images[0].size:
      w0, h0 = images[0].size
      w, h = images[-1].size
      raise DataError(
        f'{f}: {h}x{w} pixels, but {files[0]} is {h0}x{w0}; every image in {folder} must have the same size.'
      )
  mode = 'L' if all(im.mode in _GREY_MODES for im in images) else 'RGB'
  return np.stack([np.asarray(im.convert(mode), np.uint8) for im in images])


def _one_line(e: Exception) -> str:
  return ' '.join(str(e).split()) or 'no message'


def _check(path: str, x: np.ndarray) -> str:
  """The kind of ``x`` (``'points'`` or ``'images'``) after checking its dtype, rank, shape and values."""
  if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)) or x.dtype == np.bool_:
    raise DataError(f'{path}: an array of dtype {x.dtype}; expected integers or floats (uint8 images, float points).')
  if x.ndim not in (2, 3, 4):
    raise DataError(f'{path}: an array of shape {x.shape}; expected points (N, D) or images (N, H, W) or (N, H, W, C).')
  if 0 in x.shape:
    raise DataError(f'{path}: an empty array of shape {x.shape}; expected at least one example.')
  if x.ndim == 4 and x.shape[3] > _MAX_CHANNELS:
    hint = ' (channels first? transpose to channels last)' if x.shape[1] <= _MAX_CHANNELS else ''
    raise DataError(
      f'{path}: images of shape {x.shape[1:]}{hint}; expected (H, W, C) with at most {_MAX_CHANNELS} channels.'
    )
  if x.ndim >= 3 and min(x.shape[1:3]) < _MIN_SIDE:
    raise DataError(f'{path}: images of {x.shape[1]}x{x.shape[2]} pixels; expected at least {_MIN_SIDE}x{_MIN_SIDE}.')
  if np.issubdtype(x.dtype, np.floating):
    bad = ~np.isfinite(x)
    if bad.any():
      first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), x.shape))
      raise DataError(
        f'{path}: {int(bad.sum())} NaN or infinite values (the first in example {first[0]}, at index {first}); '
        'expected finite values.'
      )
  return 'points' if x.ndim == 2 else 'images'


def _scaling(kind: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(offset, scale)`` of the module docstring: ``model = (x - offset) / scale``."""
  if kind == 'points':
    values = x.astype(np.float64)
    offset, scale = values.mean(0), values.std(0)
  elif x.dtype == np.uint8:
    offset, scale = np.float64(127.5), np.float64(127.5)
  else:
    lo, hi = float(x.min()), float(x.max())
    offset, scale = np.float64((hi + lo) / 2), np.float64((hi - lo) / 2)
  return np.asarray(offset, np.float64), np.where(scale > 0, scale, 1.0).astype(np.float64)


def _held_out_index(n: int) -> np.ndarray:
  """The held-out examples' indices: ``min(2500, max(2, n // 10))`` of ``range(n)``, drawn with seed 0, sorted."""
  return np.sort(np.random.default_rng(0).permutation(n)[: min(MAX_HELD_OUT, max(2, n // 10), n)])


def _prepare(path: str, raw: np.ndarray) -> UserData:
  kind = _check(path, raw)
  offset, scale = _scaling(kind, raw)
  model = ((raw.astype(np.float64) - offset) / scale).astype(np.float32)
  if model.ndim == 3:
    model = model[..., None]
  held = _held_out_index(len(raw))
  digest = hashlib.sha256(f'{raw.dtype.str}{raw.shape}'.encode())
  digest.update(np.ascontiguousarray(raw).data)
  return UserData(
    name='user',
    source=path,
    kind=kind,
    example_shape=tuple(raw.shape[1:]),
    dtype=str(raw.dtype),
    train=np.delete(model, held, axis=0),
    held_out=model[held],
    offset=offset,
    scale=scale,
    fingerprint=digest.hexdigest(),
  )
