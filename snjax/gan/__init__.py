"""Training GANs with a spectrally normalized critic: losses, penalties, the train step, data parallelism.

``snjax.gan.gan_trainer`` builds jitted critic / generator / combined steps over
a :class:`GANTrainState` pytree for any Flax, Haiku or Equinox models and any
optax optimizers; the critic is normalized with :func:`snjax.sn_apply` inside
the step (Miyato et al. 2018, https://arxiv.org/abs/1802.05957). Losses and
penalties: SN-GAN's hinge loss, the Wasserstein loss with the WGAN-GP gradient
penalty (Gulrajani et al. 2017), the non-saturating loss (Goodfellow et al.
2014), the R1 penalty (Mescheder et al. 2018). Data parallelism:
:func:`data_mesh`, :func:`shard_batch`, :func:`replicate`. Checkpoints (Orbax,
the ``[train]`` extra) are in :mod:`snjax.gan.checkpoint`, which ``import
snjax.gan`` does not import.
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
from snjax.gan._state import GANTrainState
from snjax.gan._trainer import GANTrainer, gan_trainer

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
