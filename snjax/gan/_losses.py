"""GAN losses and gradient penalties, as small pure functions of critic scores.

Critic losses take the scores of a real and of a fake batch (shape ``(B,)``)
and return the scalar the critic *minimizes*; generator losses take the scores
of a fake batch. The penalties take the critic as a function of its input
``x -> scores`` (with its params, spectrally normalized or not, closed over),
so that their gradient reaches the critic's params when they are
differentiated (double back-propagation).

The critic is assumed to score each example independently (no batch
normalization), which is what SN-GAN and WGAN-GP critics do: the gradient of
``sum(scores)`` with respect to the batch is then each example's own input
gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

CriticFn = Callable[[jax.Array], jax.Array]


class GANLoss(NamedTuple):
  """A critic loss and its generator loss.

  Attributes:
    critic: ``(real_scores, fake_scores) -> scalar`` minimized by the critic.
    generator: ``fake_scores -> scalar`` minimized by the generator.
  """

  critic: Callable[[jax.Array, jax.Array], jax.Array]
  generator: Callable[[jax.Array], jax.Array]


def hinge_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """The hinge loss of SN-GAN's critic: ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``.

  Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
  Networks" (https://arxiv.org/abs/1802.05957), eq. (17); after Lim & Ye 2017,
  "Geometric GAN" (https://arxiv.org/abs/1705.02894).

  Args:
    real_scores: critic scores of real examples, shape ``(B,)``.
    fake_scores: critic scores of generated examples, shape ``(B,)``.

  Returns:
    The scalar loss.
  """
  return jnp.mean(jax.nn.relu(1.0 - real_scores)) + jnp.mean(jax.nn.relu(1.0 + fake_scores))


def hinge_generator_loss(fake_scores: jax.Array) -> jax.Array:
  """The hinge generator loss: ``-E[D(G(z))]`` (Miyato et al. 2018, eq. (18)).

  Args:
    fake_scores: critic scores of generated examples, shape ``(B,)``.

  Returns:
    The scalar loss.
  """
  return -jnp.mean(fake_scores)


def wasserstein_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """The WGAN critic loss: ``E[D(G(z))] - E[D(x)]``.

  Minimizing it maximizes the Kantorovich-Rubinstein estimate of the
  Wasserstein-1 distance, ``E[D(x)] - E[D(G(z))]``, over 1-Lipschitz critics
  (the Lipschitz constraint comes from elsewhere: spectral normalization, a
  gradient penalty, :func:`snjax.spectral_projection` or clipping).
  Arjovsky, Chintala & Bottou 2017, "Wasserstein GAN"
  (https://arxiv.org/abs/1701.07875), eq. (3).

  Args:
    real_scores: critic scores of real examples, shape ``(B,)``.
    fake_scores: critic scores of generated examples, shape ``(B,)``.

  Returns:
    The scalar loss.
  """
  return jnp.mean(fake_scores) - jnp.mean(real_scores)


def wasserstein_generator_loss(fake_scores: jax.Array) -> jax.Array:
  """The WGAN generator loss: ``-E[D(G(z))]`` (Arjovsky et al. 2017).

  Args:
    fake_scores: critic scores of generated examples, shape ``(B,)``.

  Returns:
    The scalar loss.
  """
  return -jnp.mean(fake_scores)


def non_saturating_critic_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """The original GAN discriminator loss on logits: ``E[softplus(-D(x))] + E[softplus(D(G(z)))]``.

  This is the binary cross-entropy of ``sigmoid(D)`` with labels 1 for real
  and 0 for fake, ``-E[log sigmoid(D(x))] - E[log(1 - sigmoid(D(G(z))))]``,
  computed stably from logits. Goodfellow et al. 2014, "Generative
  Adversarial Nets" (https://arxiv.org/abs/1406.2661), eq. (1).

  Args:
    real_logits: critic logits of real examples, shape ``(B,)``.
    fake_logits: critic logits of generated examples, shape ``(B,)``.

  Returns:
    The scalar loss.
  """
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def non_saturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """The non-saturating generator loss: ``E[softplus(-D(G(z)))] = -E[log sigmoid(D(G(z)))]``.

  Goodfellow et al. 2014 (https://arxiv.org/abs/1406.2661), section 3: the
  generator maximizes ``log D(G(z))`` instead of minimizing
  ``log(1 - D(G(z)))``, whose gradient vanishes early in training.

  Args:
    fake_logits: critic logits of generated examples, shape ``(B,)``.

  Returns:
    The scalar loss.
  """
  return jnp.mean(jax.nn.softplus(-fake_logits))


LOSSES: dict[str, GANLoss] = {
  'hinge': GANLoss(hinge_critic_loss, hinge_generator_loss),
  'wasserstein': GANLoss(wasserstein_critic_loss, wasserstein_generator_loss),
  'non_saturating': GANLoss(non_saturating_critic_loss, non_saturating_generator_loss),
}
"""The losses by name, as accepted by ``snjax.gan_trainer(loss=...)``."""


def get_loss(loss: str | GANLoss) -> GANLoss:
  """Resolves a loss name (``'hinge'``, ``'wasserstein'``, ``'non_saturating'``) or returns a :class:`GANLoss`.

  Args:
    loss: a name in :data:`LOSSES`, a :class:`GANLoss`, or a ``(critic_loss, generator_loss)`` pair of callables.

  Returns:
    The :class:`GANLoss`: the critic's and the generator's loss functions.

  Raises:
    ValueError: an unknown name or anything else.
  """
  if isinstance(loss, GANLoss):
    return loss
  if isinstance(loss, str) and loss in LOSSES:
    return LOSSES[loss]
  if isinstance(loss, tuple) and len(loss) == 2 and all(callable(f) for f in loss):
    return GANLoss(*loss)
  raise ValueError(
    f'loss must be one of {sorted(LOSSES)} or a snjax.GANLoss(critic, generator) pair of callables, got {loss!r}.'
  )


def _safe_norm(x: jax.Array) -> jax.Array:
  """Per-example Euclidean norm over all but the first axis, with a zero (not NaN) gradient at 0."""
  sq = jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim)))
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _input_gradients(critic_fn: CriticFn, x: jax.Array) -> jax.Array:
  return jax.grad(lambda y: jnp.sum(critic_fn(y)))(x)


def gradient_penalty(
  critic_fn: CriticFn,
  real: jax.Array,
  fake: jax.Array,
  key: jax.Array,
  *,
  target: float = 1.0,
  one_sided: bool = False,
) -> jax.Array:
  """The WGAN-GP gradient penalty: ``E[(||grad_x D(x_hat)||_2 - target)^2]``.

  ``x_hat = a x + (1 - a) G(z)`` with ``a ~ U[0, 1]`` drawn per example, on
  the segments between real and fake examples. Gulrajani et al. 2017,
  "Improved Training of Wasserstein GANs" (https://arxiv.org/abs/1704.00028),
  eq. (3) (multiply by lambda, 10 in the paper). With ``one_sided=True`` only
  norms above the target are penalized, ``E[max(0, ||grad|| - target)^2]``
  (Petzka et al. 2018, "On the regularization of Wasserstein GANs",
  https://arxiv.org/abs/1709.08894).

  Args:
    critic_fn: ``x -> scores`` of shape ``(B,)``, its params closed over.
    real: a real batch, ``(B, ...)``.
    fake: a fake batch of the same shape (constant for the penalty's purpose).
    key: PRNG key for the interpolation weights.
    target: the gradient norm aimed at (the Lipschitz constant).
    one_sided: penalize only norms above ``target``.

  Returns:
    The scalar penalty, unweighted.
  """
  a = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), dtype=real.dtype)
  x_hat = a * real + (1 - a) * jax.lax.stop_gradient(fake)
  excess = _safe_norm(_input_gradients(critic_fn, x_hat)) - target
  if one_sided:
    excess = jax.nn.relu(excess)
  return jnp.mean(jnp.square(excess))


def r1_penalty(critic_fn: CriticFn, real: jax.Array) -> jax.Array:
  """The R1 penalty: ``E_x[||grad_x D(x)||_2^2]`` on real data.

  Mescheder, Geiger & Nowozin 2018, "Which Training Methods for GANs do
  actually Converge?" (https://arxiv.org/abs/1801.04406), eq. (9), where it is
  weighted by ``gamma / 2``: pass ``r1_weight = gamma / 2`` to the trainer.

  Args:
    critic_fn: ``x -> scores`` of shape ``(B,)``, its params closed over.
    real: a real batch, ``(B, ...)``.

  Returns:
    The scalar penalty, unweighted.
  """
  g = _input_gradients(critic_fn, real)
  return jnp.mean(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))
