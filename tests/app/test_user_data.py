"""Tests of snjax.app.user_data: reading each format, the scaling and its inverse, the split, and every bad input.

Bad input is checked three ways: the loader's one-line message (naming the file and what was expected), the
command line's exit status and message, and a run folder that ``train`` leaves untouched (not even created).
"""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from snjax.app import cli, metrics
from snjax.app.config import TrainConfig
from snjax.app.run import train
from snjax.app.user_data import MAX_HELD_OUT, DataError, load_user_data

PIL = pytest.importorskip('PIL')
from PIL import Image  # noqa: E402


def _save(folder, name, array):
  path = os.path.join(folder, name)
  if name.endswith('.npz'):
    np.savez(path, **array) if isinstance(array, dict) else np.savez(path, array)
  else:
    np.save(path, array)
  return path


def _image_folder(folder, sizes, colour=False, ext='.png', seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  for i, (h, w) in enumerate(sizes):
    pixels = rng.integers(0, 256, (h, w, 3) if colour else (h, w), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f'{i:03d}{ext}'))
  return str(folder)


def _truncated(folder, name):
  """A .npy file cut short in its header."""
  whole = _save(folder, 'whole.npy', np.zeros((40, 2)))
  with open(whole, 'rb') as f:
    return _corrupt(folder, name, f.read(100))


def _folder_without_images(folder):
  os.makedirs(folder)
  with open(os.path.join(folder, 'a.txt'), 'w') as f:
    f.write('no image')
  return folder


def test_points_are_standardized_per_coordinate_and_come_back(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 3)) * [1.0, 50.0, 1e-3] + [0.0, -7.0, 4.0]
  d = load_user_data(_save(tmp_path, 'p.npy', x))
  assert (d.kind, d.shape, d.example_shape, d.dtype) == ('points', (3,), (3,), 'float64')
  model = np.concatenate([d.train, d.held_out])
  # Standardized over all examples: mean 0, std 1 per coordinate (float32 storage: ~1e-7 relative).
  np.testing.assert_allclose(model.mean(0), 0, atol=1e-6)
  np.testing.assert_allclose(model.std(0), 1, rtol=1e-5)
  np.testing.assert_allclose(d.offset, x.mean(0), rtol=1e-12)
  np.testing.assert_allclose(d.scale, x.std(0), rtol=1e-12)
  # Back in the data's units: the original rows, to two float32 roundings (u = 2^-24): of the model value
  # (u |model| scale in the data's units) and of the result (u |x|); 2x margin.
  back = d.to_data_units(d.train)
  nearest = x[np.abs(back[:, None, :] - x[None]).max(-1).argmin(1)]
  tol = 2 * 2.0**-24 * (np.abs((nearest - d.offset) / d.scale) * d.scale + np.abs(nearest))
  assert np.all(np.abs(back - nearest) <= tol)
  assert len({tuple(r) for r in nearest}) == len(back)  # each a different example


def test_split_is_fixed_disjoint_and_sized(tmp_path):
  x = np.arange(1000 * 2, dtype=np.float32).reshape(1000, 2)  # each row identifies its example
  d = load_user_data(_save(tmp_path, 'p.npy', x))
  assert (len(d.train), len(d.held_out), d.n_examples) == (900, 100, 1000)
  ids = lambda m: set(np.round(d.to_data_units(m)[:, 0] / 2).astype(int))  # noqa: E731
  assert ids(d.train).isdisjoint(ids(d.held_out)) and ids(d.train) | ids(d.held_out) == set(range(1000))
  other = load_user_data(_save(tmp_path, 'q.npy', x))  # another file, the same split
  np.testing.assert_array_equal(other.held_out, d.held_out)
  big = load_user_data(_save(tmp_path, 'big.npy', np.zeros((40000, 1), np.float32)))
  assert len(big.held_out) == MAX_HELD_OUT


def test_uint8_grey_images_map_0_255_to_minus_1_1(tmp_path):
  x = np.random.default_rng(1).integers(0, 256, (50, 8, 6), dtype=np.uint8)
  x[0, 0, 0], x[0, 0, 1] = 0, 255
  d = load_user_data(_save(tmp_path, 'g.npy', x))
  assert (d.kind, d.shape, d.example_shape) == ('images', (8, 6, 1), (8, 6))
  assert float(d.offset) == float(d.scale) == 127.5
  model = np.concatenate([d.train, d.held_out])
  assert model.min() == -1.0 and model.max() == 1.0
  back = d.to_data_units(d.held_out)
  assert back.shape == (len(d.held_out), 8, 6)
  np.testing.assert_allclose(back, np.round(back), atol=1e-4)  # whole grey levels again


def test_float_images_map_their_range_to_minus_1_1(tmp_path):
  x = np.random.default_rng(2).uniform(0.2, 0.7, (40, 4, 4, 3)).astype(np.float32)
  d = load_user_data(_save(tmp_path, 'f.npz', x))
  assert (d.kind, d.shape, d.dtype) == ('images', (4, 4, 3), 'float32')
  np.testing.assert_allclose(float(d.offset), (x.max() + x.min()) / 2, rtol=1e-6)
  model = np.concatenate([d.train, d.held_out])
  assert model.min() == pytest.approx(-1.0, abs=1e-6) and model.max() == pytest.approx(1.0, abs=1e-6)


def test_constant_coordinates_get_scale_1_not_nan(tmp_path):
  x = np.ones((30, 2))
  x[:, 1] = np.arange(30)
  d = load_user_data(_save(tmp_path, 'c.npy', x))
  assert d.scale[0] == 1.0 and np.all(np.isfinite(d.train))
  flat = load_user_data(_save(tmp_path, 'flat.npy', np.full((30, 4, 4), 3.0)))
  assert float(flat.scale) == 1.0 and np.all(flat.train == 0)


@settings(max_examples=25, deadline=None)
@given(
  hnp.arrays(
    np.float64,
    st.tuples(st.integers(20, 60), st.integers(1, 4)),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
  )
)
def test_to_data_units_inverts_the_scaling(tmp_path_factory, x):
  d = load_user_data(_save(tmp_path_factory.mktemp('h'), 'x.npy', x))
  model = (x - d.offset) / d.scale
  # Two float32 roundings (u = 2^-24): of the model value (an error of u |model| scale in the data's units) and
  # of the result (u |x|, and below float32's smallest normal number, that number); the float64 arithmetic
  # between them adds ~1e-16 relative. 2x margin.
  tol = 2 * 2.0**-24 * (np.abs(model) * d.scale + np.abs(x)) + np.finfo(np.float32).tiny
  assert np.all(np.abs(d.to_data_units(model.astype(np.float32)) - x) <= tol)


def test_npz_with_several_arrays_takes_x(tmp_path):
  path = _save(tmp_path, 'two.npz', {'x': np.zeros((30, 2)), 'labels': np.zeros(30)})
  assert load_user_data(path).shape == (2,)


def test_image_folder_grey_and_colour(tmp_path):
  grey = load_user_data(_image_folder(tmp_path / 'grey', [(12, 10)] * 20))
  assert (grey.kind, grey.example_shape, grey.dtype, grey.n_examples) == ('images', (12, 10), 'uint8', 20)
  # One RGB image among grey ones: all are read as RGB; JPEGs too (any case of the extension).
  mixed = _image_folder(tmp_path / 'mixed', [(12, 10)] * 19)
  _image_folder(tmp_path / 'extra', [(12, 10)], colour=True, ext='.JPG')
  os.replace(tmp_path / 'extra' / '000.JPG', tmp_path / 'mixed' / 'zz.JPG')
  with open(tmp_path / 'mixed' / 'notes.txt', 'w') as f:
    f.write('ignored')
  d = load_user_data(mixed)
  assert d.example_shape == (12, 10, 3) and d.n_examples == 20
  # The pixels as Pillow reads them, in the order of the names (first file: held out or trained on).
  first = np.asarray(Image.open(tmp_path / 'grey' / '000.png'))
  stored = np.concatenate([grey.to_data_units(grey.train), grey.to_data_units(grey.held_out)])
  assert np.any(np.all(np.abs(stored - first) < 1e-3, axis=(1, 2)))


def test_cache_returns_the_same_object_until_the_file_changes(tmp_path):
  path = _save(tmp_path, 'p.npy', np.zeros((30, 2)))
  a = load_user_data(path)
  assert load_user_data(path) is a
  mtime = os.stat(path).st_mtime_ns
  np.save(path, np.ones((30, 2)))  # the same size: the modification time tells them apart
  os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
  b = load_user_data(path)
  assert b is not a and b.fingerprint != a.fingerprint


def _corrupt(tmp_path, name, content=b'not an array'):
  path = os.path.join(tmp_path, name)
  with open(path, 'wb') as f:
    f.write(content)
  return path


# Each bad input: how to make it, and the message (a regex) that names the file and what was expected.
BAD_INPUTS = {
  'missing': (lambda d: os.path.join(d, 'nope.npy'), r'nope.npy: no such file or folder; expected a .npy or .npz'),
  'extension': (lambda d: _corrupt(d, 'x.csv', b'1,2'), r'x.csv: expected a .npy or .npz file or a folder'),
  'not npy': (lambda d: _corrupt(d, 'bad.npy'), r'bad.npy: cannot read it as a NumPy array \(it lacks the .npy header'),
  'not npz': (lambda d: _corrupt(d, 'bad.npz'), r'bad.npz: cannot read it as a NumPy array \(an .npz file is a zip'),
  'truncated': (lambda d: _truncated(d, 'cut.npy'), r'cut.npy: cannot read it as a NumPy array \(ValueError: '),
  'pickled': (lambda d: _save(d, 'obj.npy', np.array([{}], object)), r'obj.npy: cannot read it as a NumPy array'),
  'rank 1': (
    lambda d: _save(d, 'r1.npy', np.zeros(40)),
    r'r1.npy: an array of shape \(40,\); expected points',
  ),
  'rank 5': (lambda d: _save(d, 'r5.npy', np.zeros((4, 8, 8, 1, 1))), r'r5.npy: an array of shape \(4, 8, 8, 1, 1\)'),
  'strings': (lambda d: _save(d, 's.npy', np.array([['a', 'b']] * 40)), r's.npy: an array of dtype <U1; expected'),
  'bools': (lambda d: _save(d, 'b.npy', np.zeros((40, 2), bool)), r'b.npy: an array of dtype bool; expected'),
  'channels first': (
    lambda d: _save(d, 'cf.npy', np.zeros((40, 3, 16, 16), np.uint8)),
    r'cf.npy: images of shape \(3, 16, 16\) \(channels first\? transpose to channels last\); expected \(H, W, C\)',
  ),
  'tiny images': (lambda d: _save(d, 't.npy', np.zeros((40, 3, 3))), r't.npy: images of 3x3 pixels; expected at least'),
  'empty': (lambda d: _save(d, 'e.npy', np.zeros((0, 2))), r'e.npy: an empty array of shape \(0, 2\)'),
  'nan': (
    lambda d: _save(d, 'n.npy', np.where(np.arange(80).reshape(40, 2) == 33, np.nan, 1.0)),
    r'n.npy: 1 NaN or infinite values \(the first in example 16, at index \(16, 1\)\); expected finite values',
  ),
  'inf': (lambda d: _save(d, 'i.npy', np.full((40, 8, 8), np.inf, np.float32)), r'i.npy: 2560 NaN or infinite'),
  'npz without x': (
    lambda d: _save(d, 'm.npz', {'a': np.zeros((40, 2)), 'b': np.zeros(40)}),
    r'm.npz: an .npz file must hold one array, or one named x; it holds 2: a, b',
  ),
  'fewer than a batch': (
    lambda d: _save(d, 'few.npy', np.zeros((60, 2))),
    r'few.npy: 60 examples, 54 for training after holding out 6 for the metrics: fewer than a batch \(batch_size 64\)',
  ),
  'mixed sizes': (
    lambda d: _image_folder(os.path.join(d, 'sizes'), [(8, 8), (8, 8), (9, 8)]),
    r'sizes/002.png: 9x8 pixels, but .*sizes/000.png is 8x8; every image in .*sizes must have the same size',
  ),
  'bad image': (
    lambda d: os.path.dirname(_corrupt(_image_folder(os.path.join(d, 'broken'), [(8, 8)] * 3), '001.png')),
    r'broken/001.png: cannot read it as an image \(',
  ),
  'no images': (lambda d: _folder_without_images(os.path.join(d, 'empty')), r'empty: a folder without PNG/JPEG'),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input_is_named_in_one_line(tmp_path, case):
  make, message = BAD_INPUTS[case]
  path = make(str(tmp_path))
  with pytest.raises(DataError, match=message) as e:
    load_user_data(path, batch_size=64)
  assert '\n' not in str(e.value) and isinstance(e.value, ValueError)
  assert os.path.basename(os.path.normpath(path)) in str(e.value)


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input_leaves_the_run_folder_untouched(tmp_path, case, snapshot, capsys):
  make, message = BAD_INPUTS[case]
  path = make(str(tmp_path))
  # The command line: exit status 2, the message on one line of stderr, no folder made.
  out = str(tmp_path / 'never')
  assert cli.main(['train', '--data', path, '--batch-size', '64', '--out', out, '--quiet']) == 2
  err = capsys.readouterr().err
  assert err.startswith('snjax train: error: ') and err.count('\n') == 1
  assert not os.path.exists(out)
  # train() itself, even with --force on a folder holding a run: the data is checked before the folder is touched.
  held = tmp_path / 'held'
  held.mkdir()
  for name in ('config.json', 'metrics.json', 'data.json'):
    (held / name).write_text('{"kept": true}')
  before = snapshot(held)
  config = TrainConfig(dataset='user', data=path, batch_size=64)
  with pytest.raises(DataError, match=message):
    train(config, str(held), force=True, progress=False)
  assert snapshot(held) == before
  with pytest.raises(DataError, match=message):
    train(config, out, progress=False)
  assert not os.path.exists(out)


def _tiny_user_config(path, **kw):
  options = dict(width=4, depth=1, batch_size=8, steps=4, log_every=2, checkpoint_every=4, latent_dim=4)
  options.update(kw)
  return TrainConfig.for_data(path, **options)


def test_a_run_on_points_saves_the_scaling_and_samples_in_the_data_s_units(tmp_path, snapshot):
  rng = np.random.default_rng(0)
  path = _save(tmp_path, 'p.npy', rng.normal(size=(200, 3)) * [10.0, 1.0, 0.1] + [1e4, -50.0, 0.0])
  out = str(tmp_path / 'run')
  summary = train(_tiny_user_config(path), out, progress=False)
  d = load_user_data(path)
  with open(os.path.join(out, 'data.json')) as f:
    assert json.load(f) == json.loads(json.dumps(d.description()))
  samples = np.load(os.path.join(out, 'samples.npy'))
  assert samples.shape == (2500, 3) and samples.dtype == np.float32
  # In the data's units: around the data's offset, at the data's scale (a few steps from the initialization,
  # the samples are within tens of standard deviations; in model units they would be ~1e4 away).
  assert np.all(np.abs(samples - d.offset) < 100 * d.scale)
  m = summary['metrics']
  assert set(m) == {'feature_space', 'bandwidth', 'n_held_out', 'generated', 'real_train', 'critic_lipschitz'}
  assert m['generated']['mmd2'] == metrics.user_data_metrics(d, samples)['generated']['mmd2']
  lip = m['critic_lipschitz']
  assert [r['path'] for r in lip['layers']] == ['Dense_0/kernel', 'Dense_1/kernel']
  assert lip['reshaped_product'] == pytest.approx(summary['config']['target_norm'] ** 2, rel=0.05)
  assert summary['config']['data'] == path and summary['dataset'] == 'user'
  # Resuming on other data is refused before anything is written.
  np.save(path, rng.normal(size=(200, 3)))
  before = snapshot(out)
  config = _tiny_user_config(path)
  with pytest.raises(DataError, match=r'p.npy: not the data the run in .* started with \(offset, scale, sha256'):
    train(config, out, resume=True, progress=False)
  assert snapshot(out) == before
