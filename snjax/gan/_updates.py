"""One critic update and one generator update of a GAN, unguarded: the losses, the gradients, the optimizer steps.

Each update returns the candidate next state and its metrics, including
``metrics['finite']``; the steps in :mod:`snjax.gan._steps` decide whether the
candidate is kept.

Spectral normalization (Miyato et al. 2018, https://arxiv.org/abs/1802.05957):

* A critic update calls ``sn_apply(critic_params, sn_state, update=True)``
  **once**, inside the differentiated loss, and the normalized params serve
  the real batch, the fake batch and the gradient penalty; the gradient flows
  through sigma (the paper's gradient). Its new u vectors and sigmas are the
  update's new ``sn_state``.
* A generator update trains against the *current* normalized critic without
  advancing its state: it runs the same ``sn_apply(critic_params, sn_state,
  update=True)`` and discards the returned state. So the generator sees
  exactly the critic that the next critic update will start from (the weights
  after the last optimizer update, divided by a fresh sigma estimate, not by
  the stale sigma of the weights before that update), and ``sn_state`` is
  advanced only by critic updates.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from snjax.gan import _losses
from snjax.gan._sharding import constrain_replicated, constrain_to_batch
from snjax.gan._state import GANTrainState, split_rng
from snjax.gan._step_config import StepConfig
from snjax.transform import SNState, sigmas

PyTree = Any
Metrics = dict[str, jax.Array]


def normalized_critic(
  config: StepConfig, critic_params: PyTree, sn_state: SNState, update: bool
) -> tuple[PyTree, SNState]:
  """The critic's spectrally normalized params and the new spectral-norm state (unchanged without normalization).

  Args:
    config: the step configuration.
    critic_params: the critic's raw params.
    sn_state: its spectral-norm state.
    update: run the power iteration (training) or use the stored sigma (evaluation).

  Returns:
    ``(params_sn, sn_state)`` as :func:`snjax.sn_apply` returns them.
  """
  if config.spectral_norm is None:
    return critic_params, sn_state
  return config.spectral_norm.apply(critic_params, sn_state, update=update)


def critic_scores_of(config: StepConfig, critic_params: PyTree, x: jax.Array) -> jax.Array:
  """The critic's scores of a batch, shape ``(B,)``.

  Args:
    config: the step configuration.
    critic_params: the params to apply the critic with (normalized or not).
    x: a batch ``(B, ...)``.

  Returns:
    ``critic_apply(critic_params, x)``, reshaped to ``(B,)``.

  Raises:
    ValueError: the critic returns another shape than ``(B,)`` or ``(B, 1)``.
  """
  s = config.critic_apply(critic_params, x)
  if s.shape not in ((x.shape[0],), (x.shape[0], 1)):
    raise ValueError(
      f'critic_apply must return one score per example, shape ({x.shape[0]},) or ({x.shape[0]}, 1); '
      f'got {tuple(s.shape)}.'
    )
  return s.reshape(x.shape[0])


def all_finite(*trees: PyTree) -> jax.Array:
  """Whether every floating (or complex) leaf of ``trees`` is finite; a scalar bool array."""
  ok = jnp.asarray(True)
  for tree in trees:
    for leaf in jax.tree_util.tree_leaves(tree):
      if jnp.issubdtype(leaf.dtype, jnp.inexact):
        ok = ok & jnp.all(jnp.isfinite(leaf))
  return ok


def _critic_loss(
  config: StepConfig, sn_state: SNState, real: jax.Array, fake: jax.Array, gp_key: jax.Array, critic_params: PyTree
) -> tuple[jax.Array, tuple[SNState, Metrics]]:
  """``loss.critic(D(x), D(G(z))) + gp_weight * GP + r1_weight * R1`` and ``(new sn_state, its parts)``."""
  params_sn, sn_state = normalized_critic(config, critic_params, sn_state, True)
  critic_fn = functools.partial(critic_scores_of, config, params_sn)
  real_scores, fake_scores = critic_fn(real), critic_fn(fake)
  adversarial = config.loss.critic(real_scores, fake_scores)
  total = adversarial
  aux = {
    'critic_adversarial_loss': adversarial,
    'real_score': jnp.mean(real_scores),
    'fake_score': jnp.mean(fake_scores),
  }
  if config.gp_weight > 0:
    gp = _losses.gradient_penalty(critic_fn, real, fake, gp_key, target=config.gp_target)
    total = total + config.gp_weight * gp
    aux['gradient_penalty'] = gp
  if config.r1_weight > 0:
    r1 = _losses.r1_penalty(critic_fn, real)
    total = total + config.r1_weight * r1
    aux['r1_penalty'] = r1
  return total, (sn_state, aux)


def _sigma_metrics(config: StepConfig, sn_state: SNState) -> Metrics:
  """``sigma/<path>`` of each normalized weight and their product ``sigma_product``; ``{}`` without normalization."""
  sig = sigmas(sn_state) if config.spectral_norm is not None else {}
  metrics = {f'sigma/{path}': s for path, s in sig.items()}
  if sig:
    metrics['sigma_product'] = math.prod(jnp.prod(s) for s in sig.values())
  return metrics


def critic_update(config: StepConfig, state: GANTrainState, real: jax.Array) -> tuple[GANTrainState, Metrics]:
  """One critic update on a real batch, against fakes from the current generator (unguarded).

  The critic minimizes ``loss.critic(D(x), D(G(z))) + gp_weight * GP +
  r1_weight * R1`` with ``D`` the spectrally normalized critic (see the module
  docstring); GP is the WGAN-GP gradient penalty (Gulrajani et al. 2017,
  https://arxiv.org/abs/1704.00028), R1 the penalty on real data (Mescheder et
  al. 2018, https://arxiv.org/abs/1801.04406).

  Args:
    config: the step configuration.
    state: the current state.
    real: a real batch ``(B, ...)``.

  Returns:
    ``(candidate state, metrics)``: the state after the update (whether finite
    or not) and the metrics of the update, with ``finite``.
  """
  rng, (k_z, k_gp) = split_rng(state.rng, 3)
  real = constrain_to_batch(real, config.mesh, config.data_axis)
  z = constrain_to_batch(config.latent_sampler(k_z, real.shape[0]), config.mesh, config.data_axis)
  fake = jax.lax.stop_gradient(config.generator_apply(state.generator_params, z))
  fake = constrain_to_batch(fake, config.mesh, config.data_axis)
  loss_fn = functools.partial(_critic_loss, config, state.sn_state, real, fake, k_gp)
  (total, (sn_state, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
  updates, opt_state = config.critic_tx.update(grads, state.critic_opt_state, state.critic_params)
  params = optax.apply_updates(state.critic_params, updates)
  grad_norm = optax.global_norm(grads)
  metrics = {'critic_loss': total, **aux, 'critic_grad_norm': grad_norm, **_sigma_metrics(config, sn_state)}
  metrics['finite'] = jnp.isfinite(total) & jnp.isfinite(grad_norm) & all_finite(params, opt_state)
  new = state._replace(
    critic_updates=state.critic_updates + 1,
    critic_params=params,
    critic_opt_state=opt_state,
    sn_state=sn_state,
    rng=rng,
  )
  return constrain_replicated(new, config.mesh), metrics


def _generator_loss(config: StepConfig, critic_sn: PyTree, z: jax.Array, generator_params: PyTree) -> jax.Array:
  """``loss.generator(D(G(z)))`` with the critic's normalized params fixed."""
  fake = constrain_to_batch(config.generator_apply(generator_params, z), config.mesh, config.data_axis)
  return config.loss.generator(critic_scores_of(config, critic_sn, fake))


def generator_update(config: StepConfig, state: GANTrainState, batch_size: int) -> tuple[GANTrainState, Metrics]:
  """One generator update against the current normalized critic (unguarded).

  The generator minimizes ``loss.generator(D(G(z)))`` (Goodfellow et al. 2014,
  https://arxiv.org/abs/1406.2661; Miyato et al. 2018) over ``batch_size``
  latents; the critic's spectral-norm state is not advanced (see the module
  docstring). With ``ema_decay``, the EMA becomes ``decay * ema + (1 - decay)
  * params``.

  Args:
    config: the step configuration.
    state: the current state.
    batch_size: the number of latents.

  Returns:
    ``(candidate state, metrics)`` with ``generator_loss``,
    ``generator_grad_norm`` and ``finite``.
  """
  rng, (k_z,) = split_rng(state.rng, 2)
  critic_sn, _ = normalized_critic(config, jax.lax.stop_gradient(state.critic_params), state.sn_state, True)
  critic_sn = jax.lax.stop_gradient(critic_sn)
  z = constrain_to_batch(config.latent_sampler(k_z, batch_size), config.mesh, config.data_axis)
  value, grads = jax.value_and_grad(functools.partial(_generator_loss, config, critic_sn, z))(state.generator_params)
  updates, opt_state = config.generator_tx.update(grads, state.generator_opt_state, state.generator_params)
  params = optax.apply_updates(state.generator_params, updates)
  ema = state.generator_ema
  if config.ema_decay is not None:
    ema = optax.incremental_update(params, ema, step_size=1.0 - config.ema_decay)
  grad_norm = optax.global_norm(grads)
  metrics = {
    'generator_loss': value,
    'generator_grad_norm': grad_norm,
    'finite': jnp.isfinite(value) & jnp.isfinite(grad_norm) & all_finite(params, opt_state),
  }
  new = state._replace(
    step=state.step + 1, generator_params=params, generator_opt_state=opt_state, rng=rng, generator_ema=ema
  )
  return constrain_replicated(new, config.mesh), metrics
