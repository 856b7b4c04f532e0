"""An optax-compatible GAN trainer for spectrally normalized critics: the step functions bound and jitted.

``trainer = snjax.gan.gan_trainer(generator_apply, critic_apply, generator_tx,
critic_tx, latent_shape=...)`` binds the models (as apply callables, so Flax
linen, NNX, Haiku or Equinox models plug in), any two
``optax.GradientTransformation`` and the options once, and returns jitted pure
functions over a :class:`GANTrainState` pytree:

* ``trainer.init(key, generator_params, critic_params) -> state``
* ``trainer.critic_step(state, real) -> (state, metrics)``: one critic update.
* ``trainer.generator_step(state, real) -> (state, metrics)``: one generator
  update (``real`` gives the batch size; it is not shown to the generator).
* ``trainer.train_step(state, real) -> (state, metrics)``: ``n_critic`` critic
  updates (a ``lax.scan``; unrolled for a conv critic on CPU) then one generator update. ``real`` is either
  ``(n_critic, B, ...)`` (a fresh real batch per critic update, as in WGAN-GP)
  or ``(B, ...)`` (the same real batch for every critic update).
* ``trainer.critic_scores(state, x)``: the evaluation critic (no power
  iteration, state untouched); ``trainer.sample(state, key, n)``: generated
  examples (from the generator EMA when there is one).

Spectral normalization (Miyato et al. 2018, https://arxiv.org/abs/1802.05957):
each critic update runs the power iteration once, inside the differentiated
loss, and advances the spectral-norm state; the generator trains against the
current normalized critic without advancing it; evaluation uses the stored
sigma (details in :mod:`snjax.gan._updates`).

Non-finite values: every step checks that its loss and gradients are finite.
If not, the returned state is the input state, unchanged (bit for bit; the
RNG is not advanced either), and ``metrics['finite']`` is ``False``. A
``train_step`` is all or nothing: one non-finite micro-step returns the input
state. The caller decides what to do (stop, lower the learning rate, restore
the last checkpoint); :class:`snjax.gan.checkpoint.Checkpointer` refuses to
save a non-finite state.

The steps are pure functions of a frozen :class:`~snjax.gan._step_config.StepConfig`
(:mod:`snjax.gan._steps`, :mod:`snjax.gan._evaluation`); this module binds them
to one configuration and jits them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import optax

from snjax.gan import _evaluation, _losses, _steps
from snjax.gan._state import GANTrainState, init_state
from snjax.gan._step_config import ApplyFn, LatentSampler, step_config


class GANTrainer(NamedTuple):
  """The functions returned by :func:`gan_trainer` (all pure; the steps are jitted).

  Attributes:
    init: ``(key, generator_params, critic_params) -> GANTrainState``.
    critic_step: ``(state, real) -> (state, metrics)``; ``real`` is ``(B, ...)``.
    generator_step: ``(state, real) -> (state, metrics)``; ``real`` only gives
      the batch size ``B`` (and is checked).
    train_step: ``(state, real) -> (state, metrics)``: ``n_critic`` critic
      updates then one generator update; ``real`` is ``(n_critic, B, ...)`` or
      ``(B, ...)``.
    critic_scores: ``(state, x) -> scores (B,)``, the evaluation critic
      (``update=False``: no power iteration).
    sample: ``(state, key, n, use_ema=True) -> G(z)`` for ``n`` latents.
    n_critic: critic updates per ``train_step``.
  """

  init: Callable[..., GANTrainState]
  critic_step: Callable[..., tuple[GANTrainState, dict]]
  generator_step: Callable[..., tuple[GANTrainState, dict]]
  train_step: Callable[..., tuple[GANTrainState, dict]]
  critic_scores: Callable[..., jax.Array]
  sample: Callable[..., jax.Array]
  n_critic: int


def gan_trainer(
  generator_apply: ApplyFn,
  critic_apply: ApplyFn,
  generator_tx: optax.GradientTransformation,
  critic_tx: optax.GradientTransformation,
  *,
  latent_shape: int | tuple[int, ...],
  loss: str | _losses.GANLoss = 'hinge',
  n_critic: int = 1,
  gp_weight: float = 0.0,
  gp_target: float = 1.0,
  r1_weight: float = 0.0,
  spectral_norm: bool | Mapping[str, Any] = True,
  ema_decay: float | None = None,
  latent_sampler: LatentSampler | None = None,
  mesh: jax.sharding.Mesh | None = None,
  data_axis: str = 'data',
  donate: bool = False,
) -> GANTrainer:
  """Builds the jitted GAN train step (critic, generator, combined) over a :class:`GANTrainState`.

  The critic minimizes ``loss.critic(D(x), D(G(z))) + gp_weight * GP +
  r1_weight * R1`` with D the spectrally normalized critic
  ``critic_apply(sn_apply(critic_params, sn_state)[0], .)`` (Miyato et al.
  2018, https://arxiv.org/abs/1802.05957); the generator minimizes
  ``loss.generator(D(G(z)))``.

  Spectral normalization: each critic update runs ``sn_apply(...,
  update=True)`` once, inside the differentiated loss (the gradient flows
  through sigma), and its new u vectors and sigmas become the state's
  ``sn_state``; a generator update trains against the current normalized
  critic (a fresh sigma of the current weights) without advancing
  ``sn_state``; ``critic_scores`` uses the stored sigma (``update=False``).

  Non-finite values: a step whose loss, gradients, new params or optimizer
  states are not all finite returns its input state unchanged (bit for bit;
  the RNG is not advanced either) with ``metrics['finite'] = False``; a
  ``train_step`` is all or nothing over its ``n_critic + 1`` updates.

  Metrics (a flat dict of scalars): ``critic_loss`` (the total minimized),
  ``critic_adversarial_loss``, ``gradient_penalty`` / ``r1_penalty`` (when
  their weight is > 0), ``real_score``, ``fake_score`` (means of D),
  ``critic_grad_norm``, ``sigma/<path>`` (each normalized weight's sigma
  estimate, :func:`snjax.sigmas`), ``sigma_product`` (the product of those
  sigmas: with 1-Lipschitz activations, an upper bound on the Lipschitz
  constant of the critic with its raw weights, i.e. what spectral
  normalization divides out; the normalized critic's bound is
  ``target_norm ** n_layers``), ``generator_loss``, ``generator_grad_norm``,
  ``finite`` (bool). ``train_step`` averages the critic scalars over its
  ``n_critic`` updates, except ``sigma/*`` and ``sigma_product``, which are
  the last update's.

  Args:
    generator_apply: ``(generator_params, z) -> x`` for a batch of latents.
    critic_apply: ``(critic_params, x) -> scores``, shape ``(B,)`` or ``(B, 1)``;
      it must score each example independently (no batch norm).
    generator_tx: the generator's optimizer, any ``optax.GradientTransformation``.
    critic_tx: the critic's optimizer (chain :func:`snjax.spectral_projection`
      here for hard projection instead of, or besides, the reparametrization).
    latent_shape: the shape of one latent vector, e.g. ``128``.
    loss: ``'hinge'`` (SN-GAN), ``'wasserstein'`` (WGAN), ``'non_saturating'``
      (Goodfellow et al. 2014, https://arxiv.org/abs/1406.2661) or a
      :class:`snjax.gan.GANLoss`.
    n_critic: critic updates per ``train_step`` (static; 5 in WGAN-GP).
    gp_weight: lambda of the WGAN-GP gradient penalty (0: off; 10 in
      Gulrajani et al. 2017, https://arxiv.org/abs/1704.00028).
    gp_target: the gradient norm the penalty aims at (>= 0).
    r1_weight: weight of the R1 penalty on real data (0: off; Mescheder et
      al. 2018's ``gamma / 2``, https://arxiv.org/abs/1801.04406).
    spectral_norm: ``True`` for the defaults, a mapping of options of
      :func:`snjax.spectral_normalization` (``layout``, ``include``,
      ``exclude``, ``n_power_iterations``, ``n_warmup_iterations``,
      ``target_norm``, ``eps``), or ``False`` to train the raw critic.
    ema_decay: keep ``generator_ema``, updated after each generator step as
      ``ema <- decay * ema + (1 - decay) * params``, with ``decay`` in
      ``[0, 1)``; ``None``: no EMA.
    latent_sampler: ``(key, batch_size) -> z``; default standard normal
      float32 of shape ``(batch_size, *latent_shape)``.
    mesh: a ``jax.sharding.Mesh`` for data parallelism (see
      :func:`snjax.gan.data_mesh`, :func:`snjax.gan.shard_batch`): the real
      batch, the latents and the fake batch are sharded along ``data_axis``,
      the state (params, opt states, u vectors, RNG) is replicated. ``None``:
      wherever jit puts it.
    data_axis: the mesh axis of the batch.
    donate: donate the input state's buffers to the step (saves memory; the
      state passed in must not be used again).

  Returns:
    A :class:`GANTrainer`.

  Raises:
    ValueError: bad options. The steps raise ``ValueError`` (when first traced
      for a shape) for a real batch whose shape or dtype does not match the
      generator's output, or whose batch size the mesh does not divide.
  """
  config = step_config(
    generator_apply,
    critic_apply,
    generator_tx,
    critic_tx,
    latent_shape=latent_shape,
    loss=loss,
    n_critic=n_critic,
    gp_weight=gp_weight,
    gp_target=gp_target,
    r1_weight=r1_weight,
    spectral_norm=spectral_norm,
    ema_decay=ema_decay,
    latent_sampler=latent_sampler,
    mesh=mesh,
    data_axis=data_axis,
  )
  donate_argnums = (0,) if donate else ()
  return GANTrainer(
    init=functools.partial(init_state, config),
    critic_step=jax.jit(functools.partial(_steps.critic_step, config), donate_argnums=donate_argnums),
    generator_step=jax.jit(functools.partial(_steps.generator_step, config), donate_argnums=donate_argnums),
    train_step=jax.jit(functools.partial(_steps.train_step, config), donate_argnums=donate_argnums),
    critic_scores=jax.jit(functools.partial(_evaluation.critic_scores, config)),
    sample=jax.jit(functools.partial(_evaluation.sample, config), static_argnames=('n', 'use_ema')),
    n_critic=config.n_critic,
  )
