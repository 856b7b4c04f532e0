"""Tests of snjax.losses against float64 numpy formulas and analytic input gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snjax.gan import _losses as losses

_scores = st.integers(1, 16).flatmap(
  lambda n: st.tuples(
    st.lists(st.floats(-20, 20, width=32), min_size=n, max_size=n),
    st.lists(st.floats(-20, 20, width=32), min_size=n, max_size=n),
  )
)


def _softplus(x):
  return np.logaddexp(0.0, x)


@settings(max_examples=10)
@given(_scores)
def test_critic_and_generator_losses_match_numpy(pair):
  real, fake = (np.asarray(s, np.float32) for s in pair)
  r64, f64 = real.astype(np.float64), fake.astype(np.float64)
  expected = {
    'hinge': (np.mean(np.maximum(0, 1 - r64)) + np.mean(np.maximum(0, 1 + f64)), -np.mean(f64)),
    'wasserstein': (np.mean(f64) - np.mean(r64), -np.mean(f64)),
    # -log sigmoid(r) - log(1 - sigmoid(f)); generator: -log sigmoid(f).
    'non_saturating': (np.mean(_softplus(-r64)) + np.mean(_softplus(f64)), np.mean(_softplus(-f64))),
  }
  for name, (critic, generator) in expected.items():
    loss = losses.get_loss(name)
    np.testing.assert_allclose(float(loss.critic(jnp.asarray(real), jnp.asarray(fake))), critic, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(loss.generator(jnp.asarray(fake))), generator, rtol=1e-5, atol=1e-5)


def test_non_saturating_is_stable_for_large_logits():
  big = jnp.asarray([200.0, -200.0], jnp.float32)
  assert np.isfinite(float(losses.non_saturating_critic_loss(big, big)))
  np.testing.assert_allclose(float(losses.non_saturating_generator_loss(jnp.asarray([-200.0]))), 200.0, rtol=1e-6)


def test_get_loss_names_and_errors():
  assert losses.get_loss('hinge') is losses.LOSSES['hinge']
  custom = losses.GANLoss(losses.wasserstein_critic_loss, losses.wasserstein_generator_loss)
  assert losses.get_loss(custom) is custom
  with pytest.raises(ValueError, match="loss must be one of .*'hinge'"):
    losses.get_loss('hinge2')


def _quadratic_critic(a):
  """D(x) = 0.5 x^T A x per example (x flattened): grad_x D = sym(A) x, known in closed form."""
  return lambda x: 0.5 * jnp.einsum('bi,ij,bj->b', x.reshape(x.shape[0], -1), a, x.reshape(x.shape[0], -1))


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('one_sided', [False, True])
def test_gradient_penalty_matches_closed_form(jit, one_sided):
  rng = np.random.default_rng(0)
  b, shape = 6, (2, 3)
  a = rng.standard_normal((6, 6)).astype(np.float32)
  real = rng.standard_normal((b, *shape)).astype(np.float32)
  fake = rng.standard_normal((b, *shape)).astype(np.float32)
  key = jax.random.key(7)
  fn = lambda r, f: losses.gradient_penalty(_quadratic_critic(jnp.asarray(a)), r, f, key, one_sided=one_sided)  # noqa: E731
  if jit:
    fn = jax.jit(fn)
  gp = float(fn(jnp.asarray(real), jnp.asarray(fake)))
  alpha = np.asarray(jax.random.uniform(key, (b, 1, 1)), np.float64)
  x_hat = (alpha * real + (1 - alpha) * fake).reshape(b, -1)
  sym = 0.5 * (a + a.T).astype(np.float64)
  norms = np.linalg.norm(x_hat @ sym.T, axis=1)
  excess = np.maximum(norms - 1, 0) if one_sided else norms - 1
  np.testing.assert_allclose(gp, np.mean(excess**2), rtol=1e-4)


def test_gradient_penalty_of_linear_critic_and_its_param_gradient():
  """D(x) = w.x has ||grad|| = ||w|| everywhere: GP = (||w|| - 1)^2, d GP / dw = 2 (||w|| - 1) w / ||w||."""
  rng = np.random.default_rng(1)
  w = rng.standard_normal(5).astype(np.float32)
  real, fake = (jnp.asarray(rng.standard_normal((4, 5)), jnp.float32) for _ in range(2))

  def gp(w):
    return losses.gradient_penalty(lambda x: x @ w, real, fake, jax.random.key(0))

  n = np.linalg.norm(w.astype(np.float64))
  np.testing.assert_allclose(float(gp(jnp.asarray(w))), (n - 1) ** 2, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.grad(gp)(jnp.asarray(w))), 2 * (n - 1) * w / n, rtol=1e-4, atol=1e-6)


def test_penalties_of_a_constant_critic_have_finite_zero_gradients():
  x = jnp.ones((3, 4))
  const = lambda w: lambda y: jnp.sum(y * 0.0, axis=1) + w  # noqa: E731
  g = jax.grad(lambda w: losses.gradient_penalty(const(w), x, x, jax.random.key(0)))(1.0)
  assert np.isfinite(float(g)) and float(g) == 0.0
  assert float(losses.gradient_penalty(const(1.0), x, x, jax.random.key(0))) == pytest.approx(1.0)
  assert float(jax.grad(lambda w: losses.r1_penalty(const(w), x))(1.0)) == 0.0


def test_r1_penalty_is_mean_squared_input_gradient():
  rng = np.random.default_rng(2)
  a = rng.standard_normal((4, 4)).astype(np.float32)
  real = rng.standard_normal((5, 4)).astype(np.float32)
  r1 = float(jax.jit(lambda x: losses.r1_penalty(_quadratic_critic(jnp.asarray(a)), x))(jnp.asarray(real)))
  grads = real.astype(np.float64) @ (0.5 * (a + a.T)).T
  np.testing.assert_allclose(r1, np.mean(np.sum(grads**2, axis=1)), rtol=1e-5)
