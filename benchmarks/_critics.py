"""The two benchmark critics in every framework, plain and with spectral norm.

* CNN: the SN-GAN "standard CNN" critic (Miyato et al. 2018, Table 3,
  https://arxiv.org/abs/1802.05957) for 32x32x3 inputs: conv3x3 64 s1,
  conv4x4 64 s2, conv3x3 128 s1, conv4x4 128 s2, conv3x3 256 s1,
  conv4x4 256 s2, conv3x3 512 s1, dense -> 1; leaky_relu 0.1.
* MLP: the WGAN toy critic 2 - 512 - 512 - 512 - 1 (ReLU), or any depth and width.
* ResNet (Flax linen only): a ResNet-style critic of 21 3x3 convs (three
  stages of three residual blocks, 32 / 64 / 128 channels) and a dense layer,
  for a deep conv critic with many same-shaped kernels.

Every builder returns a :class:`Runner`: one critic train step (forward on
the real and the fake batch concatenated, hinge loss, backward, Adam update),
under ``jax.jit`` with the train state donated for the JAX frameworks, eager
for torch. Peers are imported here only, never by ``snjax``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

CNN_LAYERS = ((64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1))
RESNET_STAGES = ((32, 3), (64, 3), (128, 3))
"""The ResNet-style critic: (channels, residual blocks of two 3x3 convs) per stage; 21 convs and a dense."""
LEARNING_RATE, BETA1, BETA2 = 2e-4, 0.0, 0.9  # SN-GAN's Adam settings


@dataclasses.dataclass
class Spec:
  """What to build: ``critic`` is ``'cnn'``, ``'resnet'`` or ``'mlp'``; ``batch`` is per side (real, fake)."""

  critic: str
  batch: int
  width: int = 512
  depth: int = 3


@dataclasses.dataclass
class Runner:
  """One benchmark variant.

  Attributes:
    step: runs one training step to completion (blocking).
    compile_s: for JAX variants, the seconds ``lower(...).compile()`` of the
      step took (the executable ``step`` then runs); ``None`` for torch.
    memory: for JAX variants, XLA's memory analysis of that executable.
    times: for JAX variants, ``{'lower': s, 'compile': s, 'lower_cpu': s,
      'compile_cpu': s}``: tracing + lowering to StableHLO and XLA's compile,
      in wall time and in CPU time of this process.
    hlo: for JAX variants, the optimized HLO text of the executable
      (``benchmarks._hlo.counts`` reads it).
    lower: for JAX variants, traces and lowers the step anew (a fresh
      ``jax.jit``, so nothing is cached): ``lower().compile()`` times XLA again.
  """

  step: Callable[[], Any]
  compile_s: float | None = None
  memory: Any = None
  times: dict | None = None
  hlo: str | None = None
  lower: Callable[[], Any] | None = None


def hinge_loss(d_real, d_fake):
  """The critic's hinge loss: mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))."""
  return jnp.mean(jax.nn.relu(1.0 - d_real)) + jnp.mean(jax.nn.relu(1.0 + d_fake))


def batches(spec: Spec, channels_first: bool = False):
  """Fixed real and fake batches as numpy arrays (a generator's output stands in as noise)."""
  rng = np.random.default_rng(0)
  if spec.critic in ('cnn', 'resnet'):
    shape = (spec.batch, 3, 32, 32) if channels_first else (spec.batch, 32, 32, 3)
  else:
    shape = (spec.batch, 2)
  return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


def _jax_runner(loss_fn, params, aux, spec: Spec, channels_first: bool = False) -> Runner:
  """A jitted train step ``carry -> carry`` for ``loss_fn(params, aux, x) -> (d, aux)``."""
  opt = optax.adam(LEARNING_RATE, b1=BETA1, b2=BETA2)
  real, fake = (jnp.asarray(a) for a in batches(spec, channels_first))
  n = spec.batch

  def train_step(carry, real, fake):
    params, opt_state, aux = carry

    def objective(p):
      d, new_aux = loss_fn(p, aux, jnp.concatenate([real, fake]))
      return hinge_loss(d[:n], d[n:]), new_aux

    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, aux), loss

  box = {'carry': jax.block_until_ready((params, opt.init(params), aux))}

  def lower():
    return jax.jit(train_step, donate_argnums=0).lower(box['carry'], real, fake)

  t0, c0 = time.perf_counter(), time.process_time()
  lowered = lower()
  t1, c1 = time.perf_counter(), time.process_time()
  compiled = lowered.compile()
  t2, c2 = time.perf_counter(), time.process_time()
  compile_s = t2 - t0
  times = dict(lower=t1 - t0, compile=t2 - t1, lower_cpu=c1 - c0, compile_cpu=c2 - c1)

  def step():
    box['carry'], loss = compiled(box['carry'], real, fake)
    jax.block_until_ready((box['carry'], loss))

  return Runner(step, compile_s, compiled.memory_analysis(), times, compiled.as_text(), lower)


# ----------------------------------------------------------------------------- Flax (linen)


def _flax_modules(wrap: str):
  import flax.linen as nn

  def call(module, h, train):
    if wrap == 'flax':
      return nn.SpectralNorm(module)(h, update_stats=train)
    if wrap == 'snjax':
      from snjax.linen import SpectralNorm

      return SpectralNorm(module)(h, update_stats=train)
    return module(h)

  class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
      for f, k, s in CNN_LAYERS:
        x = nn.leaky_relu(call(nn.Conv(f, (k, k), (s, s)), x, train), 0.1)
      return call(nn.Dense(1), x.reshape(x.shape[0], -1), train)

  class MLP(nn.Module):
    width: int = 512
    depth: int = 3

    @nn.compact
    def __call__(self, x, train: bool = True):
      for _ in range(self.depth):
        x = nn.relu(call(nn.Dense(self.width), x, train))
      return call(nn.Dense(1), x, train)

  class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
      x = call(nn.Conv(RESNET_STAGES[0][0], (3, 3)), x, train)
      for i, (features, blocks) in enumerate(RESNET_STAGES):
        if i:  # a strided 3x3 conv between stages
          x = call(nn.Conv(features, (3, 3), (2, 2)), nn.relu(x), train)
        for _ in range(blocks):
          h = call(nn.Conv(features, (3, 3)), nn.relu(x), train)
          x = x + call(nn.Conv(features, (3, 3)), nn.relu(h), train)
      return call(nn.Dense(1), jnp.mean(nn.relu(x), axis=(1, 2)), train)

  return CNN, MLP, ResNet


def _flax_model(spec: Spec, wrap: str):
  cnn, mlp, resnet = _flax_modules(wrap)
  if spec.critic == 'resnet':
    return resnet()
  return cnn() if spec.critic == 'cnn' else mlp(spec.width, spec.depth)


def _flax_init(model, spec):
  x = jnp.asarray(batches(spec)[0])
  return model.init(jax.random.key(0), x)


def flax_plain(spec: Spec) -> Runner:
  """flax.linen critic without spectral norm (the baseline of every Flax variant)."""
  model = _flax_model(spec, 'none')
  params = _flax_init(model, spec)['params']
  return _jax_runner(lambda p, aux, x: (model.apply({'params': p}, x), aux), params, (), spec)


def snjax_sn_apply(spec: Spec, **options) -> Runner:
  """snjax.sn_apply on the whole params tree, once per step, then the plain Flax critic."""
  import snjax

  model = _flax_model(spec, 'none')
  params = _flax_init(model, spec)['params']
  state = snjax.sn_init(jax.random.key(1), params)

  def loss_fn(p, sn_state, x):
    p_sn, sn_state = snjax.sn_apply(p, sn_state, **options)
    return model.apply({'params': p_sn}, x), sn_state

  return _jax_runner(loss_fn, params, state, spec)


def _flax_wrapped(spec: Spec, wrap: str) -> Runner:
  model = _flax_model(spec, wrap)
  variables = _flax_init(model, spec)
  collections = [k for k in variables if k != 'params']

  def loss_fn(p, stats, x):
    d, updates = model.apply({'params': p, **stats}, x, train=True, mutable=collections)
    return d, dict(updates)

  return _jax_runner(loss_fn, variables['params'], {k: variables[k] for k in collections}, spec)


def flax_spectral_norm(spec: Spec) -> Runner:
  """flax.linen.SpectralNorm around every Conv and Dense."""
  return _flax_wrapped(spec, 'flax')


def snjax_module(spec: Spec) -> Runner:
  """snjax.linen.SpectralNorm (the Flax module wrapper) around every Conv and Dense."""
  return _flax_wrapped(spec, 'snjax')


# ----------------------------------------------------------------------------- Flax NNX


def _nnx_mlp(spec: Spec, wrap: str):
  """The MLP critic in NNX, its layers wrapped by ``wrap`` (``'none'``, ``'flax'``, ``'snjax'``)."""
  from flax import nnx

  rngs = nnx.Rngs(0)

  def layer(n_in, n_out):
    dense = nnx.Linear(n_in, n_out, rngs=rngs)
    if wrap == 'flax':
      return nnx.SpectralNorm(dense, rngs=rngs)
    if wrap == 'snjax':
      from snjax.nnx import SpectralNorm

      return SpectralNorm(dense, rngs=rngs)
    return dense

  class MLP(nnx.Module):
    def __init__(self):
      dims = [2] + [spec.width] * spec.depth + [1]
      self.layers = nnx.List([layer(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)])

    def __call__(self, x):
      for i, lay in enumerate(self.layers):
        x = lay(x)
        if i < len(self.layers) - 1:
          x = jax.nn.relu(x)
      return x

  return MLP()


def _nnx_runner(model, spec: Spec, sn_apply: bool = False) -> Runner:
  """A jitted train step on the ``nnx.split`` params of ``model`` (merged inside the step, NNX's functional API).

  The other state (the wrappers' u and sigma) is carried as the step's aux;
  with ``sn_apply`` the params go through :func:`snjax.sn_apply` first.
  """
  from flax import nnx

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if not sn_apply:

    def loss_fn(p, aux, x):
      m = nnx.merge(graphdef, p, aux, copy=True)
      return m(x), nnx.state(m, nnx.Not(nnx.Param))

    return _jax_runner(loss_fn, params, rest, spec)
  import snjax

  def sn_loss_fn(p, sn_state, x):
    p_sn, sn_state = snjax.sn_apply(p, sn_state)
    return nnx.merge(graphdef, p_sn, rest)(x), sn_state

  return _jax_runner(sn_loss_fn, params, snjax.sn_init(jax.random.key(1), params), spec)


def nnx_plain(spec: Spec) -> Runner:
  """flax.nnx critic without spectral norm (the baseline of every NNX variant)."""
  return _nnx_runner(_nnx_mlp(spec, 'none'), spec)


def nnx_flax_spectral_norm(spec: Spec) -> Runner:
  """flax.nnx.SpectralNorm around every Linear."""
  return _nnx_runner(_nnx_mlp(spec, 'flax'), spec)


def nnx_snjax_module(spec: Spec) -> Runner:
  """snjax.nnx.SpectralNorm around every Linear."""
  return _nnx_runner(_nnx_mlp(spec, 'snjax'), spec)


def nnx_sn_apply(spec: Spec) -> Runner:
  """snjax.sn_apply on the ``nnx.split`` params of the plain NNX critic."""
  return _nnx_runner(_nnx_mlp(spec, 'none'), spec, sn_apply=True)


# ----------------------------------------------------------------------------- Haiku


def _haiku_net(spec: Spec):
  import haiku as hk

  def forward(x):
    if spec.critic == 'cnn':
      for f, k, s in CNN_LAYERS:
        x = jax.nn.leaky_relu(hk.Conv2D(f, k, s)(x), 0.1)
      return hk.Linear(1)(x.reshape(x.shape[0], -1))
    for _ in range(spec.depth):
      x = jax.nn.relu(hk.Linear(spec.width)(x))
    return hk.Linear(1)(x)

  net = hk.without_apply_rng(hk.transform(forward))
  return net, net.init(jax.random.key(0), jnp.asarray(batches(spec)[0]))


def haiku_plain(spec: Spec) -> Runner:
  """Haiku critic without spectral norm."""
  net, params = _haiku_net(spec)
  return _jax_runner(lambda p, aux, x: (net.apply(p, x), aux), params, (), spec)


def haiku_sn_params_tree(spec: Spec) -> Runner:
  """haiku.SNParamsTree over the params (biases ignored), once per step."""
  import haiku as hk

  net, params = _haiku_net(spec)
  sn = hk.without_apply_rng(hk.transform_with_state(lambda p: hk.SNParamsTree(ignore_regex='.*/b$')(p)))
  sn_params, sn_state = sn.init(jax.random.key(1), params)

  def loss_fn(p, state, x):
    p_sn, state = sn.apply(sn_params, state, p)
    return net.apply(p_sn, x), state

  return _jax_runner(loss_fn, params, sn_state, spec)


# ----------------------------------------------------------------------------- Equinox


def _equinox_model(spec: Spec, with_sn: bool):
  import equinox as eqx

  keys = iter(jax.random.split(jax.random.key(0), 32))

  def wrap(layer):
    return eqx.nn.SpectralNorm(layer, 'weight', key=next(keys)) if with_sn else layer

  if spec.critic == 'cnn':
    layers, c = [], 3
    for f, k, s in CNN_LAYERS:
      layers.append(wrap(eqx.nn.Conv2d(c, f, k, s, padding=1, key=next(keys))))
      c = f
    layers.append(wrap(eqx.nn.Linear(512 * 4 * 4, 1, key=next(keys))))
    slope = 0.1
  else:
    dims = [2] + [spec.width] * spec.depth + [1]
    layers = [wrap(eqx.nn.Linear(a, b, key=next(keys))) for a, b in zip(dims[:-1], dims[1:], strict=True)]
    slope = 0.0

  class Critic(eqx.Module):
    layers: list

    def __call__(self, x, state):
      for i, layer in enumerate(self.layers):
        if i == len(self.layers) - 1:
          x = x.reshape(-1)
        if isinstance(layer, eqx.nn.SpectralNorm):
          x, state = layer(x, state)
        else:
          x = layer(x)
        if i < len(self.layers) - 1:
          x = jax.nn.leaky_relu(x, slope)
      return x, state

  return eqx.nn.make_with_state(Critic)(layers)


def _equinox(spec: Spec, with_sn: bool) -> Runner:
  import equinox as eqx

  model, state = _equinox_model(spec, with_sn)
  params, static = eqx.partition(model, eqx.is_inexact_array)

  def loss_fn(p, st, x):
    m = eqx.combine(p, static)
    return jax.vmap(m, in_axes=(0, None), out_axes=(0, None), axis_name='batch')(x, st)

  return _jax_runner(loss_fn, params, state, spec, channels_first=True)


def equinox_plain(spec: Spec) -> Runner:
  """Equinox critic without spectral norm (vmapped over the batch)."""
  return _equinox(spec, False)


def equinox_spectral_norm(spec: Spec) -> Runner:
  """equinox.nn.SpectralNorm around every Conv2d and Linear."""
  return _equinox(spec, True)


# ----------------------------------------------------------------------------- PyTorch


def _torch(spec: Spec, with_sn: bool) -> Runner:
  import torch
  from torch import nn

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  sn = nn.utils.parametrizations.spectral_norm if with_sn else (lambda m: m)
  if spec.critic == 'cnn':
    layers, c = [], 3
    for f, k, s in CNN_LAYERS:
      layers += [sn(nn.Conv2d(c, f, k, s, padding=1)), nn.LeakyReLU(0.1)]
      c = f
    layers += [nn.Flatten(), sn(nn.Linear(512 * 4 * 4, 1))]
  else:
    dims = [2] + [spec.width] * spec.depth + [1]
    layers = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
      layers += [sn(nn.Linear(a, b)), nn.ReLU()]
    layers = layers[:-1]
  model = nn.Sequential(*layers).to(device).train()
  opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=(BETA1, BETA2))
  real, fake = (torch.from_numpy(a).to(device) for a in batches(spec, channels_first=True))
  x = torch.cat([real, fake])
  n = spec.batch

  def step():
    opt.zero_grad(set_to_none=True)
    d = model(x)
    loss = torch.relu(1.0 - d[:n]).mean() + torch.relu(1.0 + d[n:]).mean()
    loss.backward()
    opt.step()
    if device == 'cuda':
      torch.cuda.synchronize()

  return Runner(step)


def torch_plain(spec: Spec) -> Runner:
  """PyTorch critic without spectral norm (eager)."""
  return _torch(spec, False)


def torch_spectral_norm(spec: Spec) -> Runner:
  """torch.nn.utils.parametrizations.spectral_norm on every Conv2d and Linear (eager)."""
  return _torch(spec, True)


def snjax_module_available() -> bool:
  try:
    from snjax.linen import SpectralNorm  # noqa: F401
  except ImportError:
    return False
  return True


FRAMEWORKS: dict[str, tuple[str, Callable[[Spec], Runner], dict[str, Callable[[Spec], Runner]]]] = {
  # name: (label of the plain baseline, plain builder, {label of an SN variant: builder})
  'snjax': (
    'flax.linen plain',
    flax_plain,
    {'snjax sn_apply': snjax_sn_apply, 'snjax.linen.SpectralNorm': snjax_module},
  ),
  'flax': ('flax.linen plain', flax_plain, {'flax.linen.SpectralNorm': flax_spectral_norm}),
  'haiku': ('haiku plain', haiku_plain, {'haiku SNParamsTree': haiku_sn_params_tree}),
  'equinox': ('equinox plain', equinox_plain, {'equinox SpectralNorm': equinox_spectral_norm}),
  'torch': ('torch plain', torch_plain, {'torch spectral_norm': torch_spectral_norm}),
}
