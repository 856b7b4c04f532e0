"""The fast paths of the power iteration (snjax._power, snjax._leaf) and snjax.transform, against references.

The power iteration contracts a kernel through a free reshape to a matrix when
its input and output axes are contiguous (every Flax, Haiku, torch and
Equinox dense / conv kernel) and through ``dot_general`` on its own axes
otherwise. Both must compute exactly the maths of the paper, and the compiled
step must not materialize a transposed copy of the kernel (what XLA does for a
multi-axis contraction of a conv kernel).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snjax
from snjax import _leaf
from snjax import _power as power
from snjax._layout import KernelLayout, kernel_matrix, resolve_layout
from snjax._operators import matrix_operator
from snjax._options import SNOptions

LAYOUTS = [
  # (kernel shape, layout spec, which path)
  ((3, 3, 4, 5), None, 'io'),  # Flax / Haiku Conv
  ((7, 6), None, 'io'),  # Dense
  ((5, 4, 3, 3), 'torch', 'oi'),  # torch / Equinox Conv2d
  ((6, 7), 'torch', 'oi'),  # torch Linear
  ((6, 2, 3), (1, 2), 'io'),  # DenseGeneral (in, heads, dim)
  ((3, 5, 4), KernelLayout((-1,), (0,)), 'io'),  # nn.scan: (layers, in, out)
  ((3, 4, 5, 2), KernelLayout((1,), (0,)), 'oi'),  # stacked torch Conv1d: (layers, out, in, k)
  ((4, 5, 3, 3), 'torch_conv_transpose', 'nd'),  # (in, out, kh, kw): axes interleave
  ((3, 4, 5), KernelLayout((-1,), (1,)), 'nd'),  # a batch axis in the middle
]


def _reference_step(kernel, u, lay):
  """One power step in float64 numpy on the explicit (batch, fan_in, fan_out) matrices."""
  m = np.asarray(kernel_matrix(jnp.asarray(kernel), lay), np.float64)
  m = m.reshape((-1,) + m.shape[-2:])
  uu = np.asarray(u, np.float64).reshape(m.shape[0], -1)
  sigmas, us, vs = [], [], []
  for mi, ui in zip(m, uu, strict=True):
    v = mi @ ui
    v /= np.linalg.norm(v)
    w = mi.T @ v
    sigmas.append(np.linalg.norm(w))
    us.append(w / np.linalg.norm(w))
    vs.append(v)
  return np.array(sigmas), np.array(us), np.array(vs), m


@pytest.mark.parametrize('shape, spec, path', LAYOUTS)
@pytest.mark.parametrize('jit', [False, True])
def test_one_step_matches_the_explicit_matrix(shape, spec, path, jit):
  rng = np.random.default_rng(sum(shape))
  kernel = rng.standard_normal(shape).astype(np.float32)
  lay = resolve_layout(spec, 'w', kernel)
  assert matrix_operator(kernel.shape, lay).kind == path
  u = rng.standard_normal(power.u_shape(shape, lay)).astype(np.float32)
  u /= np.linalg.norm(u, axis=-1, keepdims=True)
  fn = lambda k, x: power.power_iteration(k, x, lay)  # noqa: E731
  res = (jax.jit(fn) if jit else fn)(jnp.asarray(kernel), jnp.asarray(u))
  sigma, u_next, _, _ = _reference_step(kernel, u, lay)
  batch_shape = power.u_shape(shape, lay)[:-1]
  np.testing.assert_allclose(np.asarray(res.sigma).reshape(-1), sigma, rtol=2e-5)
  np.testing.assert_allclose(np.asarray(res.u).reshape(u_next.shape), u_next, rtol=2e-4, atol=2e-6)
  assert res.sigma.shape == batch_shape


@pytest.mark.parametrize(
  'shape, spec', [((3, 3, 64, 96), None), ((96, 64, 3, 3), 'torch'), ((4, 300, 200), KernelLayout((-1,), (0,)))]
)
def test_compiled_sn_apply_makes_no_extra_copy_of_the_kernel(shape, spec):
  # Only the normalized kernel itself may be kernel-sized: no transpose, no copy for the mat-vecs.
  params = {'layer': {'kernel': jax.random.normal(jax.random.key(0), shape)}}
  state = snjax.sn_init(jax.random.key(1), params, layout=spec)
  hlo = jax.jit(lambda p, s: snjax.sn_apply(p, s, layout=spec)).lower(params, state).compile().as_text()
  entry = hlo[hlo.index('ENTRY') :]
  size = int(np.prod(shape))
  big = []
  for line in entry.splitlines():
    m = re.match(r'\s*(?:ROOT )?%\S+ = f32\[([\d,]*)\]\S* (\w[\w-]*)\(', line)
    if m and m.group(2) not in ('parameter', 'bitcast'):
      if int(np.prod([int(d) for d in m.group(1).split(',') if d])) == size:
        big.append(line.strip()[:120])
  assert len(big) == 1, big


def _loss_reference(kernels, vs, lays, r):
  """sum(sin(W / sigma) * R) with sigma = ||M^T v|| per matrix, v held constant: the paper's gradient."""
  total = 0.0
  for name, k in kernels.items():
    m = kernel_matrix(k, lays[name])
    m = m.reshape((-1,) + m.shape[-2:])
    sig = jnp.linalg.norm(jnp.einsum('bio,bi->bo', m, vs[name]), axis=-1)
    shape = [1] * k.ndim
    for a in lays[name].batch_axes:
      shape[a] = k.shape[a]
    total = total + jnp.sum(jnp.sin(k / sig.reshape(shape)) * r[name])
  return total


@pytest.mark.parametrize('spec, jit', [(None, False), (None, True), ('torch', True), (KernelLayout((-1,), (0,)), True)])
def test_sn_apply_gradient_matches_autodiff_of_w_over_sigma_and_finite_differences(spec, jit):
  rng = np.random.default_rng(7)
  shapes = {
    None: {'conv': (2, 3, 4, 5), 'dense': (6, 3)},
    'torch': {'conv': (5, 4, 2, 3), 'dense': (3, 6)},
  }.get(spec, {'conv': (2, 3, 4, 5), 'dense': (2, 6, 3)})
  kernels = {n: jnp.asarray(rng.standard_normal(s), jnp.float32) for n, s in shapes.items()}
  params = {n: {'kernel': k} for n, k in kernels.items()}
  r = {n: jnp.asarray(rng.standard_normal(s), jnp.float32) for n, s in shapes.items()}
  state = snjax.sn_init(jax.random.key(3), params, layout=spec)
  lays = {n: resolve_layout(spec, f'{n}/kernel', k) for n, k in kernels.items()}

  def loss(p):
    p_sn, _ = snjax.sn_apply(p, state, layout=spec)
    return sum(jnp.sum(jnp.sin(p_sn[n]['kernel']) * r[n]) for n in shapes)

  grad_fn = jax.jit(jax.grad(loss)) if jit else jax.grad(loss)
  g = grad_fn(params)

  vs = {}
  for n, k in kernels.items():
    _, _, v, _ = _reference_step(np.asarray(k), np.asarray(state[n]['kernel']['u']), lays[n])
    vs[n] = jnp.asarray(v, jnp.float32)
  g_ref = jax.grad(_loss_reference)(kernels, vs, lays, r)
  for n in shapes:
    np.testing.assert_allclose(np.asarray(g[n]['kernel']), np.asarray(g_ref[n]), rtol=1e-4, atol=1e-5)

  # Central finite differences in float64 on a few entries of each kernel, v held constant.
  def loss64(name, k64):
    m = np.asarray(kernel_matrix(jnp.asarray(k64, jnp.float32), lays[name]), np.float64)  # shape only
    perm = lays[name].batch_axes + lays[name].in_axes + lays[name].out_axes
    m = np.transpose(k64, perm).reshape(m.shape).reshape((-1,) + m.shape[-2:])
    sig = np.linalg.norm(np.einsum('bio,bi->bo', m, np.asarray(vs[name], np.float64)), axis=-1)
    shape = [1] * k64.ndim
    for a in lays[name].batch_axes:
      shape[a] = k64.shape[a]
    return float(np.sum(np.sin(k64 / sig.reshape(shape)) * np.asarray(r[name], np.float64)))

  h = 1e-6
  for n, k in kernels.items():
    k64 = np.asarray(k, np.float64)
    for idx in [tuple(rng.integers(0, d) for d in k.shape) for _ in range(4)]:
      e = np.zeros_like(k64)
      e[idx] = h
      fd = (loss64(n, k64 + e) - loss64(n, k64 - e)) / (2 * h)
      np.testing.assert_allclose(float(g[n]['kernel'][idx]), fd, rtol=1e-3, atol=1e-4)


def test_eval_reproduces_the_training_call_bit_for_bit_on_every_path():
  rng = np.random.default_rng(0)
  params = {
    'io': {'kernel': jnp.asarray(rng.standard_normal((3, 3, 4, 5)), jnp.float32)},
    'nd': {'kernel': jnp.asarray(rng.standard_normal((4, 5, 3, 3)), jnp.float32)},
  }
  layout = {'nd': 'torch_conv_transpose'}
  state = snjax.sn_init(jax.random.key(0), params, layout=layout)
  apply = jax.jit(lambda p, s, update: snjax.sn_apply(p, s, update=update, layout=layout), static_argnums=2)
  train, state = apply(params, state, True)
  evaluation, _ = apply(params, state, False)
  for n in params:
    np.testing.assert_array_equal(np.asarray(train[n]['kernel']), np.asarray(evaluation[n]['kernel']))


def _mixed_kernels(rng, widths=None):
  """Kernels of every view kind, batch axes and a half-precision one: (kernels, layouts, us)."""
  specs = [
    ((3, 3, 4, 5), None),
    ((7, 6), None),
    ((5, 4, 3, 3), 'torch'),
    ((3, 5, 4), KernelLayout((-1,), (0,))),
    ((4, 5, 3, 3), 'torch_conv_transpose'),
    ((9, 2), None),
  ]
  if widths is not None:
    specs = [((w, 3), None) for w in widths]
  kernels = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s, _ in specs]
  kernels[1] = kernels[1].astype(jnp.bfloat16) if widths is None else kernels[1]
  lays = tuple(resolve_layout(spec, f'w{i}', k) for i, (k, (_, spec)) in enumerate(zip(kernels, specs, strict=True)))
  us = []
  for k, lay in zip(kernels, lays, strict=True):
    u = rng.standard_normal(power.u_shape(k.shape, lay)).astype(np.float32)
    us.append(jnp.asarray(u / np.linalg.norm(u, axis=-1, keepdims=True)))
  return kernels, lays, us


# (2, 3000, 5, 40): the padding bound splits the rows in groups; 5 steps: the fori_loop.
@pytest.mark.parametrize('widths, n_iterations', [(None, 1), ((2, 3000, 5, 40), 5)])
def test_normalize_equals_one_kernel_at_a_time(widths, n_iterations):
  rng = np.random.default_rng(n_iterations)
  kernels, lays, us = _mixed_kernels(rng, widths)
  us[0] = jnp.zeros_like(us[0])  # reseeded, in the batch with healthy ones
  kernels[-1] = jnp.zeros_like(kernels[-1])  # a collapsed product keeps its u

  leaves = [_leaf.plan(f'w{i}', k, lay) for i, (k, lay) in enumerate(zip(kernels, lays, strict=True))]
  options = SNOptions(n_power_iterations=n_iterations, target_norm=2.0)

  def many(ks):
    return _leaf.normalize(ks, us, leaves, options)[:2]

  def one(ks):
    res = [
      power.power_iteration(k, u, lay, n_power_iterations=n_iterations) for k, u, lay in zip(ks, us, lays, strict=True)
    ]
    return [_leaf.scale(k, 2.0 / r.sigma, leaf) for k, r, leaf in zip(ks, res, leaves, strict=True)], res

  def loss(fn, ks):
    return sum(jnp.sum(jnp.sin(x.astype(jnp.float32)) * (i + 1)) for i, x in enumerate(fn(ks)[0]))

  # One compilation per side (eager calls would compile every small op).
  both = jax.jit(
    lambda ks: (many(ks), one(ks), jax.grad(lambda k: loss(many, k))(ks), jax.grad(lambda k: loss(one, k))(ks))
  )
  (scaled, results), (ref_scaled, refs), g_many, g_one = both(kernels)
  for k, out, res, ref_out, ref in zip(kernels, scaled, results, ref_scaled, refs, strict=True):
    np.testing.assert_allclose(np.asarray(res.sigma), np.asarray(ref.sigma), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res.u), np.asarray(ref.u), rtol=1e-5, atol=1e-6)
    assert res.sigma.dtype == ref.sigma.dtype and res.u.shape == ref.u.shape and out.dtype == k.dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref_out, np.float32), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(results[-1].u), np.asarray(us[-1]))
  assert np.all(np.isfinite(np.asarray(results[0].u))) and float(np.linalg.norm(results[0].u)) == pytest.approx(1.0)
  for a, b in zip(g_many, g_one, strict=True):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-4, atol=1e-5)
    assert bool(jnp.all(jnp.isfinite(a)))


def test_sn_apply_reduces_all_layers_norms_together():
  # The compile-time property: the number of reductions in the lowered sn_apply does not grow with the layers
  # (one per power step for all of them), and neither does the number of square roots.
  def counts(n_layers):
    rng = np.random.default_rng(0)
    params = {
      f'l{i}': {'kernel': jnp.asarray(rng.standard_normal((8 + i, 5 + 2 * i)), jnp.float32)} for i in range(n_layers)
    }
    state = {n: {'kernel': {'u': jnp.ones(p['kernel'].shape[1]), 'sigma': jnp.ones(())}} for n, p in params.items()}
    text = jax.jit(lambda p, s: snjax.sn_apply(p, s)).lower(params, state).as_text()
    return text.count('stablehlo.reduce'), text.count('stablehlo.sqrt')

  assert counts(2) == counts(7)
