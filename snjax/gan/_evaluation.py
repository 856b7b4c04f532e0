"""Evaluating a GAN state: the critic's scores with the stored sigma, and samples from the generator (or its EMA)."""

from __future__ import annotations

import jax

from snjax.gan._sharding import constrain_to_batch
from snjax.gan._state import GANTrainState, key_data
from snjax.gan._step_config import StepConfig
from snjax.gan._updates import critic_scores_of, normalized_critic


def critic_scores(config: StepConfig, state: GANTrainState, x: jax.Array) -> jax.Array:
  """The evaluation critic's scores of ``x``: normalized with the stored sigma (``update=False``).

  No power iteration runs and the state is not changed (Miyato et al. 2018,
  https://arxiv.org/abs/1802.05957: at inference the weights are divided by
  the last sigma estimate).

  Args:
    config: the step configuration.
    state: the current state.
    x: a batch ``(B, ...)``.

  Returns:
    The scores, shape ``(B,)``.

  Raises:
    ValueError: the critic does not return one score per example.
  """
  params_sn, _ = normalized_critic(config, state.critic_params, state.sn_state, False)
  return critic_scores_of(config, params_sn, constrain_to_batch(x, config.mesh, config.data_axis))


def sample(config: StepConfig, state: GANTrainState, key: jax.Array, n: int, use_ema: bool = True) -> jax.Array:
  """``n`` generated examples ``G(z)``, from the generator EMA when there is one and ``use_ema``.

  Args:
    config: the step configuration.
    state: the current state.
    key: a PRNG key (typed or legacy uint32) for the latents.
    n: the number of examples.
    use_ema: use ``state.generator_ema`` if it is not ``None``.

  Returns:
    ``generator_apply(params, latent_sampler(key, n))``.

  Raises:
    ValueError: ``key`` is not a PRNG key.
  """
  params = state.generator_ema if (use_ema and state.generator_ema is not None) else state.generator_params
  key = jax.random.wrap_key_data(key_data(key))
  return config.generator_apply(params, config.latent_sampler(key, n))
