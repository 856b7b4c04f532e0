"""snjax.layout: resolving layouts to axes, and the reshaped matrix."""

import jax.numpy as jnp
import numpy as np
import pytest

from snjax._layout import KernelLayout, kernel_matrix, resolve_layout


@pytest.mark.parametrize(
  'spec, expected',
  [
    (None, ((3,), (0, 1, 2), ())),
    ('flax', ((3,), (0, 1, 2), ())),
    ('haiku', ((3,), (0, 1, 2), ())),
    ('torch', ((0,), (1, 2, 3), ())),
    ('equinox', ((0,), (1, 2, 3), ())),
    ('torch_conv_transpose', ((1,), (0, 2, 3), ())),
    (-2, ((2,), (0, 1, 3), ())),
    ((2, 3), ((2, 3), (0, 1), ())),
    (KernelLayout((-1,), (0,)), ((3,), (1, 2), (0,))),
    ({'conv': 'torch', '.*': 'flax'}, ((0,), (1, 2, 3), ())),
    (lambda path, leaf: 'torch' if path.startswith('conv') else 'flax', ((0,), (1, 2, 3), ())),
  ],
)
def test_resolve(spec, expected):
  lay = resolve_layout(spec, 'conv/weight', jnp.ones((2, 3, 4, 5)))
  assert (lay.out_axes, lay.in_axes, lay.batch_axes) == expected


def test_mapping_falls_back_to_the_default():
  lay = resolve_layout({'nomatch': 'torch'}, 'Dense_0/kernel', jnp.ones((2, 3)))
  assert lay.out_axes == (1,)


def test_kernel_matrix_of_a_torch_conv():
  w = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(5, 4, 3, 2)  # (out, in, kh, kw)
  m = kernel_matrix(jnp.asarray(w), resolve_layout('torch', 'w', w))
  np.testing.assert_array_equal(np.asarray(m), w.reshape(5, -1).T)


@pytest.mark.parametrize(
  'spec, message',
  [
    (5, r'w: output axis 5 is out of range for a kernel of shape \(2, 3\)'),
    ((0, 1), r'leaves no input axis'),
    (KernelLayout((1,), (1,)), r'names an axis twice'),
    ('tf', r"unknown layout 'tf'"),
    (1.5, r'a layout must be a preset name'),
  ],
)
def test_errors_name_the_path(spec, message):
  with pytest.raises((ValueError, TypeError), match=message):
    resolve_layout(spec, 'w', jnp.ones((2, 3)))
