"""The GAN training steps over a real batch: checked, all or nothing, ``n_critic`` critic updates per train step.

Every step first checks its real batch against what the generator makes
(when traced, so a bad batch is a clear ``ValueError``, not a shape error deep
in XLA), then runs the updates of :mod:`snjax.gan._updates`. If the loss,
the gradients or the new params or optimizer states are not all finite, the
step returns its input state unchanged (bit for bit; the RNG is not advanced
either) and ``metrics['finite']`` is ``False``. A ``train_step`` is all or
nothing: one non-finite update returns the input state.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from snjax.gan._loops import keep_out_of_loops
from snjax.gan._state import GANTrainState
from snjax.gan._step_config import StepConfig
from snjax.gan._updates import Metrics, critic_update, generator_update

PyTree = Any


def _select(ok: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)


def _shape_str(x) -> str:
  return f'{tuple(x.shape)} {jnp.dtype(x.dtype).name}'


def fake_struct(config: StepConfig, generator_params: PyTree, batch_size: int) -> jax.ShapeDtypeStruct:
  """The shape and dtype of a generated batch of ``batch_size`` examples (traced, never computed).

  Args:
    config: the step configuration.
    generator_params: the generator's params.
    batch_size: the number of latents.

  Returns:
    A ``jax.ShapeDtypeStruct``.
  """
  make = lambda p: config.generator_apply(p, config.latent_sampler(jax.random.key(0), batch_size))  # noqa: E731
  return jax.eval_shape(make, generator_params)


def check_real_batch(config: StepConfig, state: GANTrainState, real: Any, where: str) -> None:
  """Checks that ``real`` is a batch like the generator's: same shape and dtype, divisible by the mesh.

  Args:
    config: the step configuration.
    state: the current state (its generator params give the generated shape).
    real: the real batch ``(B, ...)``.
    where: the step's name, for the message.

  Raises:
    ValueError: ``real`` is not an array with a batch axis, differs in shape
      or dtype from a generated batch of the same size, or its batch size is
      not a multiple of the mesh axis's device count.
  """
  if not hasattr(real, 'shape') or not hasattr(real, 'dtype') or real.ndim < 1:
    raise ValueError(f'{where}: real must be an array with a leading batch axis, got {real!r}.')
  spec = fake_struct(config, state.generator_params, real.shape[0])
  if tuple(real.shape) != tuple(spec.shape) or real.dtype != spec.dtype:
    raise ValueError(
      f'{where}: the real batch is {_shape_str(real)}, but the generator makes {_shape_str(spec)} '
      f'for a batch of {real.shape[0]} latents of shape {config.latent_shape}; the step was built for real batches '
      'of that shape and dtype (cast the data, e.g. to float32, or fix latent_shape / the models).'
    )
  mesh, axis = config.mesh, config.data_axis
  if mesh is not None and real.shape[0] % mesh.shape[axis] != 0:
    raise ValueError(
      f'{where}: batch size {real.shape[0]} is not divisible by the {mesh.shape[axis]} devices of mesh axis {axis!r}.'
    )


def critic_step(config: StepConfig, state: GANTrainState, real: jax.Array) -> tuple[GANTrainState, Metrics]:
  """One critic update on ``real`` (see :func:`snjax.gan._updates.critic_update`); refused if not finite.

  Args:
    config: the step configuration.
    state: the current state.
    real: a real batch ``(B, ...)``.

  Returns:
    ``(state, metrics)``: the new state, or ``state`` itself when ``metrics['finite']`` is ``False``.

  Raises:
    ValueError: a bad real batch (:func:`check_real_batch`).
  """
  check_real_batch(config, state, real, 'critic_step')
  new, metrics = critic_update(config, state, real)
  return _select(metrics['finite'], new, state), metrics


def generator_step(config: StepConfig, state: GANTrainState, real: jax.Array) -> tuple[GANTrainState, Metrics]:
  """One generator update (see :func:`snjax.gan._updates.generator_update`); refused if not finite.

  Args:
    config: the step configuration.
    state: the current state.
    real: a real batch ``(B, ...)``; it gives the batch size ``B`` and is
      checked, but not shown to the generator.

  Returns:
    ``(state, metrics)``: the new state, or ``state`` itself when ``metrics['finite']`` is ``False``.

  Raises:
    ValueError: a bad real batch (:func:`check_real_batch`).
  """
  check_real_batch(config, state, real, 'generator_step')
  new, metrics = generator_update(config, state, real.shape[0])
  return _select(metrics['finite'], new, state), metrics


def _is_stacked(config: StepConfig, state: GANTrainState, real: jax.Array) -> bool:
  """Whether ``real`` is ``n_critic`` real batches stacked, ``(n_critic, B, ...)``."""
  if real.ndim < 2 or real.shape[0] != config.n_critic:
    return False
  spec = fake_struct(config, state.generator_params, real.shape[1])
  return spec.shape == real.shape[1:] and spec.dtype == real.dtype


def _check_train_batch(config: StepConfig, state: GANTrainState, real: jax.Array) -> bool:
  """Checks ``train_step``'s real batch; returns whether it is stacked."""
  if _is_stacked(config, state, real):
    check_real_batch(config, state, real[0], 'train_step')
    return True
  try:
    check_real_batch(config, state, real, 'train_step')
  except ValueError as e:
    n = config.n_critic
    raise ValueError(
      f'{e} train_step takes a real batch (B, ...) used for all {n} critic updates, or '
      f'{n} of them stacked, (n_critic={n}, B, ...).'
    ) from None
  return False


def _unroll_critic_updates(config: StepConfig, state: GANTrainState, real_one: jax.Array) -> bool:
  """Whether the critic updates are unrolled rather than scanned: a conv critic on CPU (see :mod:`._loops`).

  Elsewhere they stay in one ``lax.scan`` (one compiled update, whatever ``n_critic``).
  """
  platform = config.mesh.devices.flat[0].platform if config.mesh is not None else jax.default_backend()
  if platform != 'cpu':
    return False
  spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
  jaxpr = jax.make_jaxpr(functools.partial(critic_update, config))(jax.tree_util.tree_map(spec, state), spec(real_one))
  return keep_out_of_loops(jaxpr, platform)


def _critic_updates(
  config: StepConfig, state: GANTrainState, real: jax.Array, stacked: bool
) -> tuple[GANTrainState, Metrics]:
  """``n_critic`` critic updates, unguarded; their metrics stacked along a new leading axis."""
  update = functools.partial(critic_update, config)
  if _unroll_critic_updates(config, state, real[0] if stacked else real):
    per_update = []
    for i in range(config.n_critic):
      state, m = update(state, real[i] if stacked else real)
      per_update.append(m)
    return state, {k: jnp.stack([m[k] for m in per_update]) for k in per_update[0]}
  if stacked:
    return jax.lax.scan(update, state, real)
  return jax.lax.scan(lambda s, _: update(s, real), state, None, length=config.n_critic)


def train_step(config: StepConfig, state: GANTrainState, real: jax.Array) -> tuple[GANTrainState, Metrics]:
  """``n_critic`` critic updates then one generator update, all or nothing.

  Args:
    config: the step configuration.
    state: the current state.
    real: ``(n_critic, B, ...)``, a fresh real batch per critic update (as in
      WGAN-GP), or ``(B, ...)``, the same batch for every critic update.

  Returns:
    ``(state, metrics)``: the new state, or ``state`` itself if any update was
    not finite. The critic metrics are the means over the ``n_critic``
    updates, except ``sigma/*`` and ``sigma_product``: the last update's.

  Raises:
    ValueError: a bad real batch; the message says which shapes are accepted.
  """
  stacked = _check_train_batch(config, state, real)
  after_critic, critic_metrics = _critic_updates(config, state, real, stacked)
  new, gen_metrics = generator_update(config, after_critic, real.shape[1] if stacked else real.shape[0])
  finite = jnp.all(critic_metrics.pop('finite')) & gen_metrics.pop('finite')
  metrics = {k: (v[-1] if k.startswith('sigma') else jnp.mean(v, axis=0)) for k, v in critic_metrics.items()}
  metrics.update(gen_metrics)
  metrics['finite'] = finite
  return _select(finite, new, state), metrics
