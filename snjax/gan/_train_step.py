"""An optax-compatible GAN train step for spectrally normalized critics.

``trainer = snjax.gan_trainer(generator_apply, critic_apply, generator_tx,
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

* Each critic step calls ``sn_apply(critic_params, sn_state, update=True)``
  **once**, inside the differentiated loss, and the normalized params serve
  the real batch, the fake batch and the gradient penalty; the gradient flows
  through sigma (the paper's gradient). Its new u vectors and sigmas are the
  step's new ``sn_state``.
* The generator step trains against the *current* normalized critic without
  advancing its state: it runs the same ``sn_apply(critic_params, sn_state,
  update=True)`` and discards the returned state. So the generator sees
  exactly the critic that the next critic step will start from (the weights
  after the last optimizer update, divided by a fresh sigma estimate, not by
  the stale sigma of the weights before that update), and ``sn_state`` is
  advanced only by critic training steps. Evaluation (``critic_scores``) uses
  ``update=False``: no iteration, the stored sigma.

Non-finite values: every step checks that its loss and gradients are finite.
If not, the returned state is the input state, unchanged (bit for bit; the
RNG is not advanced either), and ``metrics['finite']`` is ``False``. A
``train_step`` is all or nothing: one non-finite micro-step returns the input
state. The caller decides what to do (stop, lower the learning rate, restore
the last checkpoint); :class:`snjax.checkpoint.Checkpointer` refuses to save a
non-finite state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from snjax.gan import _losses
from snjax.transform import SNState, sigmas, spectral_normalization

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
LatentSampler = Callable[[jax.Array, int], jax.Array]


class GANTrainState(NamedTuple):
  """Everything a GAN run carries from step to step; a pytree (jit, shard, checkpoint it).

  Attributes:
    step: int32, generator updates done (``train_step`` and ``generator_step`` calls).
    critic_updates: int32, critic updates done.
    generator_params: the generator's params.
    critic_params: the critic's raw (unnormalized) params.
    generator_opt_state: the generator optimizer's state.
    critic_opt_state: the critic optimizer's state.
    sn_state: the spectral-norm state of the critic (``{path: {'u', 'sigma'}}``;
      ``{}`` when spectral normalization is off).
    rng: uint32 raw key data (``jax.random.key_data``) of the run's PRNG key;
      every step splits it, so a resumed run draws the same numbers.
    generator_ema: an exponential moving average of the generator params, or
      ``None`` (``ema_decay=None``).
  """

  step: jax.Array
  critic_updates: jax.Array
  generator_params: PyTree
  critic_params: PyTree
  generator_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  sn_state: SNState
  rng: jax.Array
  generator_ema: PyTree | None = None


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


def _key_data(key: jax.Array) -> jax.Array:
  key = jnp.asarray(key)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  if key.dtype != jnp.uint32:
    raise ValueError(f'key must be a jax.random.key or a uint32 jax.random.PRNGKey, got dtype {key.dtype}.')
  return key


def _split(rng_data: jax.Array, n: int):
  keys = jax.random.split(jax.random.wrap_key_data(rng_data), n)
  return jax.random.key_data(keys[0]), keys[1:]


def _all_finite(*trees) -> jax.Array:
  ok = jnp.asarray(True)
  for tree in trees:
    for leaf in jax.tree_util.tree_leaves(tree):
      if jnp.issubdtype(leaf.dtype, jnp.inexact):
        ok = ok & jnp.all(jnp.isfinite(leaf))
  return ok


def _has_convolution(jaxpr) -> bool:
  """Whether a (closed) jaxpr or any jaxpr nested in it (jit, scan, cond, custom_vjp, ...) has a convolution."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      return True
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(sub, 'eqns') or hasattr(getattr(sub, 'jaxpr', None), 'eqns'):
          if _has_convolution(sub):
            return True
  return False


def _keep_out_of_loops(jaxpr, platform: str) -> bool:
  """Whether ``jaxpr`` must not run inside a ``lax.scan``: a convolution on XLA:CPU.

  XLA:CPU rewrites convolutions into the layouts of its fast (Eigen / YNNPACK) kernels only in the entry
  computation: in a while loop (a lax.scan, even of trip count 1) backward convolutions keep autodiff's dimension
  numbers and run as naive emitted loops, 10-30x slower (README, "Benchmarks").
  """
  return platform == 'cpu' and _has_convolution(jaxpr)


def _select(ok: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)


def _shape_str(x) -> str:
  return f'{tuple(x.shape)} {jnp.dtype(x.dtype).name}'


def _check_options(n_critic, gp_weight, r1_weight, ema_decay, latent_shape):
  if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
    raise ValueError(f'n_critic must be an int >= 1, got {n_critic!r}.')
  for name, w in (('gp_weight', gp_weight), ('r1_weight', r1_weight)):
    if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
      raise ValueError(f'{name} must be a finite float >= 0, got {w!r}.')
  if ema_decay is not None and not (isinstance(ema_decay, (int, float)) and 0 <= ema_decay < 1):
    raise ValueError(f'ema_decay must be None or a float in [0, 1), got {ema_decay!r}.')
  shape = (latent_shape,) if isinstance(latent_shape, int) else tuple(latent_shape)
  if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
    raise ValueError(f'latent_shape must be a positive int or a tuple of them, got {latent_shape!r}.')
  return shape


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
  ``critic_apply(sn_apply(critic_params, sn_state)[0], .)``; the generator
  minimizes ``loss.generator(D(G(z)))``. See the module docstring for how the
  spectral-norm state is advanced and what happens on a non-finite loss.

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
      (Goodfellow et al. 2014) or a :class:`snjax.GANLoss`.
    n_critic: critic updates per ``train_step`` (static; 5 in WGAN-GP).
    gp_weight: lambda of the WGAN-GP gradient penalty (0: off; 10 in
      Gulrajani et al. 2017).
    gp_target: the gradient norm the penalty aims at.
    r1_weight: weight of the R1 penalty on real data (0: off; Mescheder et
      al.'s ``gamma / 2``).
    spectral_norm: ``True`` for the defaults, a mapping of options of
      :func:`snjax.spectral_normalization` (``layout``, ``include``,
      ``exclude``, ``n_power_iterations``, ``n_warmup_iterations``,
      ``target_norm``, ``eps``), or ``False`` to train the raw critic.
    ema_decay: keep ``generator_ema``, updated after each generator step as
      ``ema <- decay * ema + (1 - decay) * params``; ``None``: no EMA.
    latent_sampler: ``(key, batch_size) -> z``; default standard normal
      float32 of shape ``(batch_size, *latent_shape)``.
    mesh: a ``jax.sharding.Mesh`` for data parallelism (see
      :mod:`snjax.parallel`): the real batch, the latents and the fake batch
      are sharded along ``data_axis``, the state (params, opt states, u
      vectors, RNG) is replicated. ``None``: wherever jit puts it.
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
  shape = _check_options(n_critic, gp_weight, r1_weight, ema_decay, latent_shape)
  gan_loss = _losses.get_loss(loss)
  if spectral_norm is True:
    sn = spectral_normalization()
  elif spectral_norm is False or spectral_norm is None:
    sn = None
  elif isinstance(spectral_norm, Mapping):
    sn = spectral_normalization(**dict(spectral_norm))
  else:
    raise ValueError(f'spectral_norm must be True, False or a mapping of options, got {spectral_norm!r}.')
  if mesh is not None and data_axis not in mesh.axis_names:
    raise ValueError(f'data_axis {data_axis!r} is not an axis of the mesh, whose axes are {mesh.axis_names}.')

  def sample_latent(key, batch_size):
    if latent_sampler is not None:
      return latent_sampler(key, batch_size)
    return jax.random.normal(key, (batch_size, *shape), jnp.float32)

  def shard_batch(x):
    if mesh is None:
      return x
    spec = jax.sharding.PartitionSpec(data_axis)
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))

  def replicate(tree):
    if mesh is None:
      return tree
    return jax.lax.with_sharding_constraint(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

  def fake_spec(generator_params, batch_size):
    return jax.eval_shape(lambda p: generator_apply(p, sample_latent(jax.random.key(0), batch_size)), generator_params)

  def check_batch(state, real, where):
    if not hasattr(real, 'shape') or not hasattr(real, 'dtype') or real.ndim < 1:
      raise ValueError(f'{where}: real must be an array with a leading batch axis, got {real!r}.')
    spec = fake_spec(state.generator_params, real.shape[0])
    if tuple(real.shape) != tuple(spec.shape) or real.dtype != spec.dtype:
      raise ValueError(
        f'{where}: the real batch is {_shape_str(real)}, but the generator makes {_shape_str(spec)} '
        f'for a batch of {real.shape[0]} latents of shape {shape}; the step was built for real batches of '
        'that shape and dtype (cast the data, e.g. to float32, or fix latent_shape / the models).'
      )
    if mesh is not None and real.shape[0] % mesh.shape[data_axis] != 0:
      raise ValueError(
        f'{where}: batch size {real.shape[0]} is not divisible by the {mesh.shape[data_axis]} devices '
        f'of mesh axis {data_axis!r}.'
      )

  def scores_of(params, x):
    s = critic_apply(params, x)
    if s.shape not in ((x.shape[0],), (x.shape[0], 1)):
      raise ValueError(
        f'critic_apply must return one score per example, shape ({x.shape[0]},) or ({x.shape[0]}, 1); '
        f'got {tuple(s.shape)}.'
      )
    return s.reshape(x.shape[0])

  def normalized(critic_params, sn_state, update):
    if sn is None:
      return critic_params, sn_state
    return sn.apply(critic_params, sn_state, update=update)

  def init(key, generator_params, critic_params) -> GANTrainState:
    k_sn, k_rng = jax.random.split(jax.random.wrap_key_data(_key_data(key)))
    sn_state = sn.init(k_sn, critic_params) if sn is not None else {}
    state = GANTrainState(
      step=jnp.zeros((), jnp.int32),
      critic_updates=jnp.zeros((), jnp.int32),
      generator_params=generator_params,
      critic_params=critic_params,
      generator_opt_state=generator_tx.init(generator_params),
      critic_opt_state=critic_tx.init(critic_params),
      sn_state=sn_state,
      rng=jax.random.key_data(k_rng),
      generator_ema=jax.tree_util.tree_map(jnp.array, generator_params) if ema_decay is not None else None,
    )
    if mesh is not None:
      from snjax.gan._sharding import replicate as _replicate

      state = _replicate(state, mesh)
    return state

  def critic_update(state: GANTrainState, real):
    """One critic update, unguarded: returns the candidate state and metrics (with 'finite')."""
    rng, (k_z, k_gp) = _split(state.rng, 3)
    real = shard_batch(real)
    z = shard_batch(sample_latent(k_z, real.shape[0]))
    fake = shard_batch(jax.lax.stop_gradient(generator_apply(state.generator_params, z)))

    def loss_fn(critic_params):
      params_sn, sn_state = normalized(critic_params, state.sn_state, True)
      critic_fn = lambda x: scores_of(params_sn, x)  # noqa: E731
      real_scores, fake_scores = critic_fn(real), critic_fn(fake)
      adversarial = gan_loss.critic(real_scores, fake_scores)
      total = adversarial
      aux = {
        'critic_adversarial_loss': adversarial,
        'real_score': jnp.mean(real_scores),
        'fake_score': jnp.mean(fake_scores),
      }
      if gp_weight > 0:
        gp = _losses.gradient_penalty(critic_fn, real, fake, k_gp, target=gp_target)
        total = total + gp_weight * gp
        aux['gradient_penalty'] = gp
      if r1_weight > 0:
        r1 = _losses.r1_penalty(critic_fn, real)
        total = total + r1_weight * r1
        aux['r1_penalty'] = r1
      return total, (sn_state, aux)

    (total, (sn_state, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
    updates, opt_state = critic_tx.update(grads, state.critic_opt_state, state.critic_params)
    params = optax.apply_updates(state.critic_params, updates)
    grad_norm = optax.global_norm(grads)
    metrics = {'critic_loss': total, **aux, 'critic_grad_norm': grad_norm}
    sig = sigmas(sn_state) if sn is not None else {}
    for path, s in sig.items():
      metrics[f'sigma/{path}'] = s
    if sig:
      metrics['sigma_product'] = math.prod(jnp.prod(s) for s in sig.values())
    metrics['finite'] = jnp.isfinite(total) & jnp.isfinite(grad_norm) & _all_finite(params, opt_state)
    new = state._replace(
      critic_updates=state.critic_updates + 1,
      critic_params=params,
      critic_opt_state=opt_state,
      sn_state=sn_state,
      rng=rng,
    )
    return replicate(new), metrics

  def generator_update(state: GANTrainState, batch_size: int):
    rng, (k_z,) = _split(state.rng, 2)
    # The current normalized critic; its new spectral-norm state is discarded (see the module docstring).
    critic_sn, _ = normalized(jax.lax.stop_gradient(state.critic_params), state.sn_state, True)
    critic_sn = jax.lax.stop_gradient(critic_sn)
    z = shard_batch(sample_latent(k_z, batch_size))

    def loss_fn(generator_params):
      fake = shard_batch(generator_apply(generator_params, z))
      return gan_loss.generator(scores_of(critic_sn, fake))

    value, grads = jax.value_and_grad(loss_fn)(state.generator_params)
    updates, opt_state = generator_tx.update(grads, state.generator_opt_state, state.generator_params)
    params = optax.apply_updates(state.generator_params, updates)
    ema = state.generator_ema
    if ema_decay is not None:
      ema = optax.incremental_update(params, ema, step_size=1.0 - ema_decay)
    grad_norm = optax.global_norm(grads)
    metrics = {
      'generator_loss': value,
      'generator_grad_norm': grad_norm,
      'finite': jnp.isfinite(value) & jnp.isfinite(grad_norm) & _all_finite(params, opt_state),
    }
    new = state._replace(
      step=state.step + 1, generator_params=params, generator_opt_state=opt_state, rng=rng, generator_ema=ema
    )
    return replicate(new), metrics

  def critic_step(state: GANTrainState, real):
    check_batch(state, real, 'critic_step')
    new, metrics = critic_update(state, real)
    return _select(metrics['finite'], new, state), metrics

  def generator_step(state: GANTrainState, real):
    check_batch(state, real, 'generator_step')
    new, metrics = generator_update(state, real.shape[0])
    return _select(metrics['finite'], new, state), metrics

  def unroll_critic_updates(state, real_one) -> bool:
    # A conv critic on CPU: its updates are unrolled (n_critic is static); elsewhere they stay in one scan
    # (one compiled update, whatever n_critic). See _keep_out_of_loops.
    platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    if platform != 'cpu':
      return False
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    jaxpr = jax.make_jaxpr(critic_update)(jax.tree_util.tree_map(spec, state), spec(real_one))
    return _keep_out_of_loops(jaxpr, platform)

  def train_step(state: GANTrainState, real):
    stacked = (
      real.ndim >= 2
      and real.shape[0] == n_critic
      and (fs := fake_spec(state.generator_params, real.shape[1])).shape == real.shape[1:]
      and fs.dtype == real.dtype
    )
    if stacked:
      check_batch(state, real[0], 'train_step')
      batch_size = real.shape[1]
    else:
      try:
        check_batch(state, real, 'train_step')
      except ValueError as e:
        raise ValueError(
          f'{e} train_step takes a real batch (B, ...) used for all {n_critic} critic updates, or '
          f'{n_critic} of them stacked, (n_critic={n_critic}, B, ...).'
        ) from None
      batch_size = real.shape[0]
    if unroll_critic_updates(state, real[0] if stacked else real):
      after_critic, per_update = state, []
      for i in range(n_critic):
        after_critic, m = critic_update(after_critic, real[i] if stacked else real)
        per_update.append(m)
      critic_metrics = {k: jnp.stack([m[k] for m in per_update]) for k in per_update[0]}
    elif stacked:
      after_critic, critic_metrics = jax.lax.scan(critic_update, state, real)
    else:
      after_critic, critic_metrics = jax.lax.scan(lambda s, _: critic_update(s, real), state, None, length=n_critic)
    new, gen_metrics = generator_update(after_critic, batch_size)
    finite = jnp.all(critic_metrics.pop('finite')) & gen_metrics.pop('finite')
    metrics = {k: (v[-1] if k.startswith('sigma') else jnp.mean(v, axis=0)) for k, v in critic_metrics.items()}
    metrics.update(gen_metrics)
    metrics['finite'] = finite
    return _select(finite, new, state), metrics

  def critic_scores(state: GANTrainState, x):
    params_sn, _ = normalized(state.critic_params, state.sn_state, False)
    return scores_of(params_sn, shard_batch(x))

  def sample(state: GANTrainState, key, n: int, use_ema: bool = True):
    params = state.generator_ema if (use_ema and state.generator_ema is not None) else state.generator_params
    key = jax.random.wrap_key_data(_key_data(key))
    return generator_apply(params, sample_latent(key, n))

  donate_argnums = (0,) if donate else ()
  return GANTrainer(
    init=init,
    critic_step=jax.jit(critic_step, donate_argnums=donate_argnums),
    generator_step=jax.jit(generator_step, donate_argnums=donate_argnums),
    train_step=jax.jit(train_step, donate_argnums=donate_argnums),
    critic_scores=jax.jit(critic_scores),
    sample=jax.jit(sample, static_argnames=('n', 'use_ema')),
    n_critic=n_critic,
  )
