"""Training GANs with a spectrally normalized critic: losses, penalties, the train step, data parallelism.

``snjax.gan.gan_trainer`` builds jitted critic / generator / combined steps over
a :class:`GANTrainState` pytree for any Flax, Haiku or Equinox models and any
optax optimizers; the critic is normalized with :func:`snjax.sn_apply` inside
the step (Miyato et al. 2018, https://arxiv.org/abs/1802.05957). Checkpoints
(Orbax) are in :mod:`snjax.gan.checkpoint`.
"""

from snjax.gan._losses import (
  LOSSES,
  GANLoss,
  get_loss,
  gradient_penalty,
  hinge_critic_loss,
  hinge_generator_loss,
  non_saturating_critic_loss,
  non_saturating_generator_loss,
  r1_penalty,
  wasserstein_critic_loss,
  wasserstein_generator_loss,
)
from snjax.gan._sharding import batch_sharding, data_mesh, replicate, replicated, shard_batch
from snjax.gan._train_step import GANTrainer, GANTrainState, gan_trainer

__all__ = [
  'LOSSES',
  'GANLoss',
  'GANTrainState',
  'GANTrainer',
  'batch_sharding',
  'data_mesh',
  'gan_trainer',
  'get_loss',
  'gradient_penalty',
  'hinge_critic_loss',
  'hinge_generator_loss',
  'non_saturating_critic_loss',
  'non_saturating_generator_loss',
  'r1_penalty',
  'replicate',
  'replicated',
  'shard_batch',
  'wasserstein_critic_loss',
  'wasserstein_generator_loss',
]
