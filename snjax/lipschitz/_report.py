"""Per-layer Lipschitz report of a model's params: reshaped norm, operator norm, certified bound.

For each weight that spectral normalization would touch, three numbers:

* the **reshaped norm**: the spectral norm of the kernel read as a (fan-in x
  fan-out) matrix, what every peer library normalizes by (exact SVD);
* the **operator norm**: for a dense layer the same number; for a convolution
  the norm of the convolution operator on its real input size, estimated by
  restarted Lanczos to a tolerance (:func:`snjax.lipschitz.conv_operator_norm`,
  a lower bound that converges to it);
* a **certified bound**: Gram iteration on the matrix (Delattre et al. 2023,
  https://arxiv.org/abs/2305.16173); for a convolution
  (:func:`snjax.lipschitz.conv_norm_bound`), Gram iteration on its exact Gram matrix when
  that is small (``dense_limit``), else on the blocks of its Fourier
  decomposition (exact for circular padding, an embedding for zero padding).

and their products over the layers. For a feed-forward network with
1-Lipschitz activations (ReLU, leaky ReLU, tanh) and no normalization layers,
the product of operator norms bounds the network's Lipschitz constant (in l2),
and the product of certified bounds does so provably.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import numpy as np

from snjax import _conv as conv
from snjax._layout import LayoutOption, kernel_matrix, resolve_layout
from snjax._selection import Selector, path_keys, path_str, select_paths
from snjax.lipschitz._bounds import DENSE_LIMIT, conv_bound_description, conv_norm_bound
from snjax.lipschitz._gram import matrix_norm_bound
from snjax.lipschitz._operator_norm import conv_operator_norm


class LayerNorms(NamedTuple):
  """One row of a :class:`LipschitzReport`.

  Attributes:
    path: the weight's path (``[i]`` appended for each index of stacked axes).
    kind: ``'dense'``, ``'conv'`` (a :class:`snjax.ConvSpec` was given) or
      ``'conv?'`` (a kernel with ndim >= 3 and no spec: operator norm unknown).
    shape: the weight's shape.
    input_shape: the conv's input shape (spatial + channels), or ``None``.
    reshaped_norm: spectral norm of the reshaped kernel matrix.
    operator_norm: the layer's operator norm (estimate for a conv), or ``None``.
    bound: a certified upper bound on the operator norm, or ``None``.
    bound_note: what the bound is (``'gram'``, ``'exact Gram matrix ...'``,
      ``'circular, exact ...'``, ``'zero padding, circular embedding ...'``).
  """

  path: str
  kind: str
  shape: tuple[int, ...]
  input_shape: tuple[int, ...] | None
  reshaped_norm: float
  operator_norm: float | None
  bound: float | None
  bound_note: str


def _product(values) -> float | None:
  if any(v is None for v in values):
    return None
  return float(math.prod(values))


class LipschitzReport(NamedTuple):
  """The rows of :func:`lipschitz_report` and their products; ``print(report)`` shows a table.

  For a feed-forward network with 1-Lipschitz activations, ``Lip(f) <= prod_l ||A_l||``: the
  :attr:`operator_product` estimates that bound (from below, each factor a converging lower bound) and the
  :attr:`bound_product` certifies it.

  Attributes:
    layers: one :class:`LayerNorms` per normalized weight (per index of its stacked axes), in the order of the
      params' leaves.
  """

  layers: tuple[LayerNorms, ...]

  @property
  def reshaped_product(self) -> float:
    """The product of the reshaped norms, which is what peer libraries' normalization controls."""
    return _product([r.reshaped_norm for r in self.layers])

  @property
  def operator_product(self) -> float | None:
    """Product of the operator norms (``None`` if a conv had no spec)."""
    return _product([r.operator_norm for r in self.layers])

  @property
  def bound_product(self) -> float | None:
    """Product of the certified bounds (``None`` if a conv had no spec)."""
    return _product([r.bound for r in self.layers])

  def table(self) -> str:
    """A plain-text table, one row per layer and a product row."""

    def fmt(x):
      return '-' if x is None else f'{x:.4f}'

    def ratio(a, b):
      return '-' if a is None or b is None or b == 0 else f'{a / b:.3f}'

    header = ('layer', 'kind', 'shape', 'input', 'reshaped', 'operator', 'bound', 'op/resh', 'bound/op')
    rows = [header]
    for r in self.layers:
      rows.append(
        (
          r.path,
          r.kind,
          'x'.join(map(str, r.shape)),
          '-' if r.input_shape is None else 'x'.join(map(str, r.input_shape)),
          fmt(r.reshaped_norm),
          fmt(r.operator_norm),
          fmt(r.bound),
          ratio(r.operator_norm, r.reshaped_norm),
          ratio(r.bound, r.operator_norm),
        )
      )
    rp, op, bp = self.reshaped_product, self.operator_product, self.bound_product
    rows.append(('product', '', '', '', fmt(rp), fmt(op), fmt(bp), ratio(op, rp), ratio(bp, op)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
      '  '.join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False)))
      for row in rows
    ]
    lines.insert(1, '  '.join('-' * w for w in widths))
    lines.insert(len(lines) - 1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)

  def __str__(self) -> str:
    return self.table()


def lipschitz_report(
  params: Any,
  conv_specs: conv.ConvOption = None,
  *,
  layout: LayoutOption = None,
  include: str | Selector | None = None,
  exclude: str | Selector | None = None,
  tol: float = 1e-6,
  max_iterations: int = 2000,
  bound_method: str = 'gram',
  n_gram_iterations: int | None = None,
  dense_limit: int = DENSE_LIMIT,
) -> LipschitzReport:
  """Reshaped norm, operator norm and certified bound of every normalized weight of ``params``.

  For each weight that :func:`snjax.sn_init` would select, a
  :class:`LayerNorms` row: the reshaped norm ``sigma_1(M)`` (exact SVD of the
  kernel read as a matrix, what SN-GAN normalizes by, Miyato et al. 2018),
  the operator norm (``sigma_1(M)`` for a dense layer;
  :func:`conv_operator_norm` on the convolution's ``ConvSpec``, Sedghi et al.
  2019, for a conv), and a certified upper bound (:func:`matrix_norm_bound`
  or :func:`conv_norm_bound`, Gram iteration after Delattre et al. 2023).
  For a feed-forward network with 1-Lipschitz activations the products over
  the layers bound its Lipschitz constant: ``prod_l ||A_l||`` (estimated)
  and ``prod_l bound_l`` (certified).

  The report takes both kinds of iteration, so their counts are named apart:
  ``tol`` and ``max_iterations`` are the power / Lanczos iteration's (of
  :func:`conv_operator_norm`), ``n_gram_iterations`` the Gram iterations of
  the bounds (``n_iterations`` of :func:`conv_norm_bound` and
  :func:`matrix_norm_bound`).

  Args:
    params: any params pytree (e.g. Flax ``variables['params']``).
    conv_specs: ``{path regex: snjax.ConvSpec}`` of the convolutions, e.g. from
      ``snjax.conv_specs(model, x)``, passed as they are to
      :func:`conv_operator_norm` and :func:`conv_norm_bound`; a kernel with
      ndim >= 3 and no spec is reported with its reshaped norm only.
    layout: the kernel layout option (as for :func:`snjax.sn_init`).
    include: the selection (as for :func:`snjax.sn_init`).
    exclude: leaves to leave out.
    tol: relative tolerance of the conv operator norm's iteration.
    max_iterations: its cap on products with ``A^T A``.
    bound_method: ``'gram'`` or ``'svd'`` for the conv bounds (see
      :func:`conv_norm_bound`).
    n_gram_iterations: Gram iterations of the bounds (default: 10 for
      matrices and FFT blocks, 18 for a conv's dense Gram matrix).
    dense_limit: the largest ``min(in_dim, out_dim)`` of a convolution whose
      exact Gram matrix is formed for its bound (see
      :func:`conv_norm_bound`); 0 gives the FFT bounds only.

  Returns:
    A :class:`LipschitzReport`; a conv with no certified bound (e.g. a large
    ``'REFLECT'`` one) has ``bound=None`` and the reason in ``bound_note``.

  Raises:
    ValueError: a spec that does not fit its kernel, or a bad option (the
      message names the path).
  """
  flat = [(path_keys(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]
  leaves = dict(flat)
  rows = []
  for keys in select_paths(flat, include=include, exclude=exclude):
    leaf = leaves[keys]
    path = path_str(keys)
    lay = resolve_layout(layout, path, leaf)
    spec = conv.resolve_conv_spec(conv_specs, path)
    if spec is not None:
      torch_layout = conv.conv_layout_is_torch(path, leaf.ndim, lay.out_axes, lay.batch_axes)
      kernel = conv.to_flax_layout(leaf, torch_layout)
      conv.geometry(tuple(kernel.shape), spec, path)  # a mismatch names the path
      reshaped = float(np.linalg.norm(np.asarray(kernel_matrix(leaf, lay), np.float64), 2))
      op = float(conv_operator_norm(kernel, spec, tol=tol, max_iterations=max_iterations))
      try:
        bound = float(
          conv_norm_bound(kernel, spec, method=bound_method, n_iterations=n_gram_iterations, dense_limit=dense_limit)
        )
        note = conv_bound_description(kernel.shape, spec, dense_limit=dense_limit)[1]
      except ValueError as err:  # e.g. REFLECT padding: no certified bound
        bound, note = None, str(err)
      rows.append(LayerNorms(path, 'conv', tuple(leaf.shape), tuple(spec.input_shape), reshaped, op, bound, note))
      continue
    matrices = np.asarray(kernel_matrix(leaf, lay), np.float64)
    batch_shape = matrices.shape[:-2]
    for index in np.ndindex(*batch_shape):
      m = matrices[index]
      name = path + ''.join(f'[{i}]' for i in index)
      reshaped = float(np.linalg.norm(m, 2))
      if leaf.ndim - len(lay.batch_axes) >= 3:
        rows.append(LayerNorms(name, 'conv?', tuple(leaf.shape), None, reshaped, None, None, 'no ConvSpec'))
        continue
      n_matrix = 10 if n_gram_iterations is None else n_gram_iterations
      bound = float(matrix_norm_bound(jax.numpy.asarray(m, leaf.dtype), n_matrix))
      rows.append(LayerNorms(name, 'dense', tuple(leaf.shape), None, reshaped, reshaped, bound, 'gram'))
  return LipschitzReport(tuple(rows))
