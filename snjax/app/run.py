"""``snjax train``: an SN-GAN on an embedded data set, with progress, pictures, metrics and exact resume.

::

  from snjax.app.run import TrainConfig, train
  summary = train(TrainConfig.for_dataset('grid25', seed=1), 'runs/grid25_seed1')

The critic is spectrally normalized with :func:`snjax.sn_apply` inside the
train step of :func:`snjax.train_step.gan_trainer`; training is data-parallel
over every visible device (:func:`snjax.parallel.data_mesh`); the whole state
(params, Adam moments, u vectors, generator EMA, RNG) is checkpointed with
Orbax (:class:`snjax.checkpoint.Checkpointer`). Every random number is a pure
function of the seed and the step: the real batch of step ``t`` is drawn with
``fold_in(data_key, t)`` and the latents from the state's own RNG, and steps
run in chunks of ``log_every`` aligned to multiples of ``log_every``, so that a
run killed at any point (even with SIGKILL) and restarted with
``resume=True`` executes the same compiled chunks on the same values and ends
with the same samples, bit for bit, as an uninterrupted run on the same
devices.

Outputs in the run folder: ``config.json``, ``checkpoints/``,
``history.json`` (losses and sigmas every ``log_every`` steps),
``samples.npy`` (2,500 samples of the generator EMA), ``samples.png``,
``curves.png`` and ``metrics.json`` (see :mod:`snjax.metrics`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from snjax.app import data as _data
from snjax.app import metrics as _metrics
from snjax.app import models as _models
from snjax.gan._losses import LOSSES
from snjax.gan._sharding import data_mesh
from snjax.gan._train_step import _keep_out_of_loops, gan_trainer

OUTPUT_FILES = ('config.json', 'history.json', 'samples.npy', 'samples.png', 'curves.png', 'metrics.json')
"""The files a run writes into its folder (besides ``checkpoints/``)."""


class RunFolderError(ValueError):
  """The output folder cannot be used as asked (holds another run, a different configuration, ...)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that determines a run (with the devices it runs on).

  Attributes:
    dataset: one of :data:`snjax.data.DATASETS`.
    steps: generator updates.
    seed: the seed of the initialization, the data and the latents.
    batch_size: examples per batch (real and fake), split over the devices.
    n_critic: critic updates per generator update.
    loss: ``'hinge'``, ``'wasserstein'`` or ``'non_saturating'`` (:data:`snjax.losses.LOSSES`).
    lr_critic: Adam learning rate of the critic (its peak; see ``lr_decay``).
    lr_generator: Adam learning rate of the generator (its peak; see ``lr_decay``).
    lr_decay: the fraction of the run at its end over which both learning rates fall linearly to 0 (0: constant
      learning rates). The critic's schedule counts its ``n_critic`` updates per step, so both decay over the
      same steps. The schedule depends on ``steps``: a run with ``lr_decay > 0`` cannot be extended on resume.
    beta1: Adam beta1 (both).
    beta2: Adam beta2 (both).
    latent_dim: dimension of the standard normal latent.
    width: hidden units (MLPs) or base channels (conv nets).
    depth: hidden layers of the MLPs (unused for digits).
    activation: the MLP generator's activation (the MLP critic uses leaky ReLU 0.2).
    target_norm: the spectral norm of each normalized critic weight.
    fourier_features: frequencies of the fixed Fourier embedding of the MLP critic's input (0: none; see
      :class:`snjax.models.MLPCritic`).
    fourier_scale: standard deviation of those frequencies.
    ema_decay: decay of the generator EMA whose samples are evaluated (0: none).
    log_every: steps per jitted chunk, per progress update and per history entry.
    checkpoint_every: steps between checkpoints (a multiple of ``log_every``).
  """

  dataset: str = 'grid25'
  steps: int = 16000
  seed: int = 0
  batch_size: int = 256
  n_critic: int = 2
  loss: str = 'non_saturating'
  lr_critic: float = 2e-3
  lr_generator: float = 2e-3
  lr_decay: float = 0.5
  beta1: float = 0.5
  beta2: float = 0.9
  latent_dim: int = 2
  width: int = 128
  depth: int = 3
  activation: str = 'relu'
  target_norm: float = 2.0
  fourier_features: int = 0
  fourier_scale: float = 1.0
  ema_decay: float = 0.999
  log_every: int = 100
  checkpoint_every: int = 2000

  @classmethod
  def for_dataset(cls, dataset: str = 'grid25', **overrides: Any) -> TrainConfig:
    """The default recipe of ``dataset`` (:data:`DEFAULTS`), with ``overrides`` (``None`` values ignored).

    Raises:
      ValueError: an unknown data set or option, or an invalid value.
    """
    if dataset not in DEFAULTS:
      raise ValueError(f'unknown dataset {dataset!r}; expected one of {", ".join(_data.DATASETS)}.')
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise ValueError(f'unknown training option(s) {unknown}; the options are {sorted(fields)}.')
    values = dict(DEFAULTS[dataset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = cls(dataset=dataset, **values)
    config.validate()
    return config

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first invalid option."""
    if self.dataset not in _data.DATASETS:
      raise ValueError(f'unknown dataset {self.dataset!r}; expected one of {", ".join(_data.DATASETS)}.')
    if self.loss not in LOSSES:
      raise ValueError(f'unknown loss {self.loss!r}; expected one of {", ".join(sorted(LOSSES))}.')
    if self.activation not in _models.ACTIVATIONS:
      raise ValueError(f'unknown activation {self.activation!r}; expected one of {", ".join(_models.ACTIVATIONS)}.')
    for name in ('steps', 'batch_size', 'n_critic', 'latent_dim', 'width', 'depth', 'log_every', 'checkpoint_every'):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f'{name} must be an int >= 1, got {v!r}.')
    if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
      raise ValueError(f'seed must be an int >= 0, got {self.seed!r}.')
    if (
      isinstance(self.fourier_features, bool) or not isinstance(self.fourier_features, int) or self.fourier_features < 0
    ):
      raise ValueError(f'fourier_features must be an int >= 0, got {self.fourier_features!r}.')
    for name in ('lr_critic', 'lr_generator', 'target_norm', 'fourier_scale'):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise ValueError(f'{name} must be a finite float > 0, got {v!r}.')
    if not (isinstance(self.lr_decay, (int, float)) and 0 <= self.lr_decay <= 1):
      raise ValueError(f'lr_decay must be in [0, 1], got {self.lr_decay!r}.')
    for name in ('beta1', 'beta2', 'ema_decay'):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and 0 <= v < 1):
        raise ValueError(f'{name} must be in [0, 1), got {v!r}.')
    if self.checkpoint_every % self.log_every:
      raise ValueError(
        f'checkpoint_every ({self.checkpoint_every}) must be a multiple of log_every ({self.log_every}), '
        'so that checkpoints fall on chunk boundaries and a resumed run repeats the same chunks.'
      )

  def to_json(self) -> dict[str, Any]:
    """The config as a JSON-able dict."""
    return dataclasses.asdict(self)


DEFAULTS: dict[str, dict[str, Any]] = {
  'grid25': {},
  'ring8': {},
  'digits': dict(
    steps=6000,
    batch_size=64,
    n_critic=1,
    loss='hinge',
    lr_critic=1e-3,
    lr_generator=1e-3,
    lr_decay=0.5,
    beta1=0.5,
    beta2=0.999,
    latent_dim=32,
    width=16,
    target_norm=1.0,
    log_every=100,
    checkpoint_every=500,
  ),
}
"""Each data set's default recipe (the fields of :class:`TrainConfig` that differ from its defaults)."""


# ----------------------------------------------------------------------------------------------------------------
# The run folder.


def _holds_run(out_dir: str) -> bool:
  return any(os.path.exists(os.path.join(out_dir, f)) for f in (*OUTPUT_FILES, 'checkpoints'))


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _config_differences(saved: dict, config: TrainConfig) -> list[str]:
  now = config.to_json()
  keys = sorted(set(saved) | set(now))
  # More steps continue a run, unless its learning rates decay over its (saved) length.
  growable = () if now.get('lr_decay') else ('steps',)
  diffs = [
    f'{k}: saved {saved.get(k)!r}, now {now.get(k)!r}' for k in keys if k not in growable and saved.get(k) != now.get(k)
  ]
  if not growable and saved.get('steps') != now.get('steps'):
    diffs.append('the learning rates decay over the last lr_decay of the steps, so steps cannot change')
  return diffs


def prepare_run_folder(out_dir: str, config: TrainConfig, *, resume: bool = False, force: bool = False) -> bool:
  """Checks (and with ``force`` clears) the output folder; returns whether a checkpoint should be restored.

  * A folder holding no run (missing, or without ``config.json``,
    ``checkpoints/`` or any output file) is used as is.
  * A folder holding a run: with ``resume`` its ``config.json`` must equal
    ``config`` in every field but ``steps`` (more steps continue the run);
    (unless ``lr_decay > 0``: the schedule depends on ``steps``);
    with ``force`` its outputs and checkpoints are deleted (other files are
    left alone); with neither it is an error and nothing is touched.

  Raises:
    RunFolderError: the folder is a file, holds another run and neither flag
      is given, ``resume`` and ``force`` together, or a resume from a
      different configuration.
  """
  if resume and force:
    raise RunFolderError('--resume and --force exclude each other: resume continues the run, force deletes it.')
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise RunFolderError(f'output folder {out_dir!r} is a file, not a folder.')
  if not os.path.isdir(out_dir) or not _holds_run(out_dir):
    return False
  if force:
    for f in OUTPUT_FILES:
      p = os.path.join(out_dir, f)
      if os.path.exists(p):
        os.remove(p)
    shutil.rmtree(os.path.join(out_dir, 'checkpoints'), ignore_errors=True)
    return False
  if not resume:
    raise RunFolderError(
      f'output folder {out_dir!r} already holds a run; nothing was overwritten. Pass --resume to continue it, '
      '--force to delete it and start again, or --out to choose another folder.'
    )
  cfg_path = os.path.join(out_dir, 'config.json')
  if not os.path.exists(cfg_path):
    raise RunFolderError(f'cannot resume: {out_dir!r} holds run outputs but no config.json.')
  diffs = _config_differences(_read_json(cfg_path), config)
  if diffs:
    raise RunFolderError(
      f'cannot resume the run in {out_dir!r}: it was made with a different configuration ('
      + '; '.join(diffs)
      + '). Use the same options, or --out for a new run, or --force to replace it.'
    )
  return True


# ----------------------------------------------------------------------------------------------------------------
# Models, trainer, training.


def _build(config: TrainConfig, dataset, mesh):
  if isinstance(dataset, _data.GaussianMixture):
    generator = _models.MLPGenerator(config.width, config.depth, 2, config.activation)
    critic = _models.MLPCritic(
      config.width, config.depth, fourier_features=config.fourier_features, fourier_scale=config.fourier_scale
    )
  else:
    generator = _models.ConvGenerator(config.width)
    critic = _models.ConvCritic(config.width)
  trainer = gan_trainer(
    lambda p, z: generator.apply({'params': p}, z),
    lambda p, x: critic.apply({'params': p}, x),
    optax.adam(_lr_schedule(config, config.lr_generator, 1), config.beta1, config.beta2),
    optax.adam(_lr_schedule(config, config.lr_critic, config.n_critic), config.beta1, config.beta2),
    latent_shape=config.latent_dim,
    loss=config.loss,
    n_critic=config.n_critic,
    spectral_norm={'target_norm': float(config.target_norm)},
    ema_decay=config.ema_decay if config.ema_decay > 0 else None,
    mesh=mesh,
  )
  return generator, critic, trainer


def _lr_schedule(config: TrainConfig, peak: float, updates_per_step: int):
  """``peak`` for the first ``1 - lr_decay`` of the steps, then linearly to 0 at the last (counted in updates)."""
  if not config.lr_decay:
    return peak
  total = config.steps * updates_per_step
  start = round(config.steps * (1 - config.lr_decay)) * updates_per_step
  return optax.join_schedules([optax.constant_schedule(peak), optax.linear_schedule(peak, 0.0, total - start)], [start])


def _keys(seed: int):
  root = jax.random.key(seed)
  k_gen, k_critic, k_state, k_data, k_eval = jax.random.split(root, 5)
  return k_gen, k_critic, k_state, k_data, k_eval


def _init_state(config: TrainConfig, dataset, generator, critic, trainer):
  k_gen, k_critic, k_state, _, _ = _keys(config.seed)
  x0 = jnp.zeros((1, *_data.sample_shape(dataset)), jnp.float32)
  g_params = generator.init(k_gen, jnp.zeros((1, config.latent_dim), jnp.float32))['params']
  c_params = critic.init(k_critic, x0)['params']
  return trainer.init(k_state, g_params, c_params)


def _auto_chunk_mode(step_jaxpr, platform: str) -> str:
  """``'loop'`` for a train step with a convolution on CPU, else ``'scan'`` (see :func:`_make_chunk`)."""
  return 'loop' if _keep_out_of_loops(step_jaxpr, platform) else 'scan'


def _make_chunk(config: TrainConfig, dataset, trainer, mode: str = 'auto'):
  """``(state, data_key, first_step, length) -> (state, metrics)``: ``length`` train steps, metrics stacked.

  Step ``t`` trains on the real batch drawn with ``fold_in(data_key, t)``. Two ways to run the steps, each
  deterministic (a resumed run that repeats the same chunks repeats the uninterrupted run bit for bit):

  * ``'scan'``: one jitted ``lax.scan`` over the steps (one dispatch per chunk; one compilation per
    ``length``). The fast way for MLPs.
  * ``'loop'``: a Python loop over one jitted step (data drawn inside it), so any split of a run into chunks
    gives the same numbers. XLA:CPU puts convolutions into the layouts of its fast kernels only in the entry
    computation: a conv critic's backward convolutions inside a ``lax.scan`` run as naive emitted loops,
    10-30x slower (see README, "Benchmarks"). Costs one dispatch per step.
  * ``'auto'`` (default): ``'loop'`` on CPU when the train step has a convolution, else ``'scan'``, decided
    at the first call (the returned function's ``mode`` attribute then says which).

  Raises:
    ValueError: an unknown ``mode``.
  """
  if mode not in ('auto', 'scan', 'loop'):
    raise ValueError(f"chunk mode must be 'auto', 'scan' or 'loop', got {mode!r}.")
  sampler = _data.make_sampler(dataset)
  shape = _data.sample_shape(dataset)
  n, b = config.n_critic, config.batch_size

  def one(state, data_key, step):
    real = sampler(jax.random.fold_in(data_key, step), n * b).reshape(n, b, *shape)
    return trainer.train_step(state, real)

  def scan_chunk(state, data_key, first_step, length):
    return jax.lax.scan(lambda s, t: one(s, data_key, t), state, first_step + jnp.arange(length))

  scan_jit, one_jit = jax.jit(scan_chunk, static_argnums=3), jax.jit(one)

  def chunk(state, data_key, first_step, length):
    if chunk.mode == 'auto':
      chunk.mode = _auto_chunk_mode(jax.make_jaxpr(one)(state, data_key, jnp.int32(0)), jax.devices()[0].platform)
    if chunk.mode == 'scan':
      return scan_jit(state, data_key, jnp.asarray(first_step, jnp.int32), length)
    start, per_step = int(first_step), []
    for t in range(start, start + length):
      state, metrics = one_jit(state, data_key, np.int32(t))
      per_step.append(metrics)
    return state, {k: jnp.stack([m[k] for m in per_step]) for k in per_step[0]}

  chunk.mode = mode  # 'auto' until the first call
  return chunk


@functools.lru_cache(maxsize=8)
def _machinery(config: TrainConfig, mesh):
  """The data set, models, trainer and chunk function of a configuration (cached: a second run of the same
  shapes in one process reuses the compiled steps). ``config`` has ``seed`` zeroed, and ``steps`` too when the
  learning rates do not decay (their schedule depends on it)."""
  dataset = _data.get_dataset(config.dataset)
  generator, critic, trainer = _build(config, dataset, mesh)
  return dataset, generator, critic, trainer, _make_chunk(config, dataset, trainer)


def _summarize_chunk(step: int, metrics: dict) -> dict[str, float]:
  out: dict[str, Any] = {'step': step}
  for k, v in metrics.items():
    v = np.asarray(v)
    if k == 'finite':
      out[k] = bool(v.all())
    elif k.startswith('sigma'):
      out[k] = float(v[-1])
    else:
      out[k] = float(v.mean())
  return out


def evaluate(config: TrainConfig, dataset, samples: np.ndarray) -> dict[str, Any]:
  """The metrics of ``samples`` for ``dataset`` (:func:`snjax.metrics.mixture_metrics` or the digits scorer)."""
  if isinstance(dataset, _data.GaussianMixture):
    return _metrics.mixture_metrics(samples, dataset.centres, dataset.std)
  scorer = _metrics.digits_scorer()
  return {'generated': scorer(samples), 'real_held_out': scorer.reference}


def train(
  config: TrainConfig,
  out_dir: str,
  *,
  resume: bool = False,
  force: bool = False,
  progress: bool = True,
  stop_after: int | None = None,
) -> dict[str, Any]:
  """Trains, checkpoints, samples, plots and measures one run; returns the contents of ``metrics.json``.

  Args:
    config: the run's configuration.
    out_dir: the run folder (created if missing).
    resume: continue from the folder's latest checkpoint (same configuration).
    force: delete a run already in the folder and start again.
    progress: show a tqdm progress bar and print the summary.
    stop_after: stop (after checkpointing) once this many steps are done, without the outputs; for tests of
      resumption.

  Returns:
    The summary dict written to ``metrics.json`` (or ``{'stopped_at': step}`` with ``stop_after``).

  Raises:
    RunFolderError: see :func:`prepare_run_folder`.
    ValueError: an invalid configuration, or a batch size the device count does not divide.
  """
  from snjax.gan.checkpoint import Checkpointer

  config.validate()
  restore = prepare_run_folder(out_dir, config, resume=resume, force=force)
  mesh = data_mesh()
  n_dev = mesh.devices.size
  if config.batch_size % n_dev:
    raise ValueError(f'batch_size {config.batch_size} is not divisible by the {n_dev} devices; choose a multiple.')
  # Cache across seeds (and lengths, when the learning rates do not depend on them).
  key_config = dataclasses.replace(config, seed=0, steps=config.steps if config.lr_decay else 1)
  dataset, generator, critic, trainer, chunk = _machinery(key_config, mesh)
  state = _init_state(config, dataset, generator, critic, trainer)
  os.makedirs(out_dir, exist_ok=True)
  history: list[dict] = []
  t_start = time.perf_counter()
  with Checkpointer(
    os.path.join(out_dir, 'checkpoints'), save_interval_steps=config.checkpoint_every, max_to_keep=2
  ) as ckpt:
    if restore:
      try:
        state = ckpt.restore(state)
      except ValueError as e:
        raise RunFolderError(f'cannot resume the run in {out_dir!r}: {e}') from None
      hist_path = os.path.join(out_dir, 'history.json')
      if os.path.exists(hist_path):
        history = [h for h in _read_json(hist_path) if h['step'] <= int(state.step)]
    _write_json(os.path.join(out_dir, 'config.json'), config.to_json())
    start = int(state.step)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    _, _, _, k_data, _ = _keys(config.seed)
    bar = None
    if progress:
      from tqdm.auto import tqdm

      bar = tqdm(total=config.steps, initial=start, desc=f'SN-GAN {config.dataset}', unit='step', dynamic_ncols=True)
    step = start
    while step < end:
      length = min(config.log_every - step % config.log_every, end - step)
      state, metrics = chunk(state, k_data, jnp.int32(step), length)
      step += length
      entry = _summarize_chunk(step, metrics)
      if not entry.get('finite', True):
        raise FloatingPointError(
          f'training diverged (non-finite loss or gradients) before step {step}; the state was not updated; '
          'try a lower learning rate.'
        )
      history.append(entry)
      if step % config.checkpoint_every == 0 or step == end:
        _write_json(os.path.join(out_dir, 'history.json'), history)
        ckpt.save(state, step=step, force=step == end)
      if bar is not None:
        sig = [v for k, v in entry.items() if k.startswith('sigma/')]
        bar.set_postfix_str(
          f'D {entry["critic_loss"]:.3f} G {entry["generator_loss"]:.3f} sigma {min(sig):.2f}..{max(sig):.2f}'
          if sig
          else ''
        )
        bar.update(length)
    if bar is not None:
      bar.close()
    ckpt.wait_until_finished()
  train_seconds = time.perf_counter() - t_start
  if stop_after is not None and end < config.steps:
    return {'stopped_at': end}
  _, _, _, _, k_eval = _keys(config.seed)
  samples = np.asarray(trainer.sample(state, k_eval, _metrics.N_EVAL_SAMPLES))
  if isinstance(dataset, _data.Digits):
    samples = samples[..., 0]
  np.save(os.path.join(out_dir, 'samples.npy'), samples)
  quality = evaluate(config, dataset, samples)
  summary = {
    'dataset': config.dataset,
    'steps': int(state.step),
    'seed': config.seed,
    'devices': n_dev,
    'device_kind': jax.devices()[0].device_kind,
    'train_seconds_this_session': round(train_seconds, 2),
    'metrics': quality,
    'final_sigmas': {
      k[len('sigma/') :]: v for k, v in (history[-1] if history else {}).items() if k.startswith('sigma/')
    },
    'config': config.to_json(),
  }
  _write_json(os.path.join(out_dir, 'metrics.json'), summary)
  from snjax.app import plots

  plots.plot_samples(os.path.join(out_dir, 'samples.png'), dataset, samples, quality)
  plots.plot_curves(os.path.join(out_dir, 'curves.png'), history)
  if progress:
    print(format_summary(summary, out_dir))
  return summary


def format_summary(summary: dict[str, Any], out_dir: str) -> str:
  """The end-of-run summary printed by ``snjax train``."""
  m = summary['metrics']
  lines = [
    f'snjax train: {summary["dataset"]}, {summary["steps"]} steps, seed {summary["seed"]}, '
    f'{summary["devices"]} device(s) ({summary["device_kind"]}), '
    f'{summary["train_seconds_this_session"]:.1f} s of training in this session',
  ]
  if 'modes_covered' in m:
    lines.append(
      f'  modes covered       {m["modes_covered"]} / {m["n_modes"]}\n'
      f'  high-quality        {m["high_quality_percent"]:.1f} %  (within 3 std of a mode, of {m["n_samples"]})\n'
      f'  reverse KL          '
      + ('n/a (no high-quality sample)' if m['reverse_kl'] is None else f'{m["reverse_kl"]:.4f}')
      + '  (histogram of the high-quality samples over the modes vs uniform)'
    )
  else:
    g, r = m['generated'], m['real_held_out']
    lines.append(f'  {"":<22}{"generated":>12}{"real held-out":>16}')
    for key, label in (
      ('class_entropy', 'class entropy (nats)'),
      ('classes_covered', 'classes covered'),
      ('confidence', 'classifier confidence'),
      ('frechet_distance', 'Frechet distance'),
    ):
      lines.append(f'  {label:<22}{g[key]:>12.3f}{r[key]:>16.3f}')
  sig = summary['final_sigmas']
  if sig:
    lines.append('  sigma (raw critic weights): ' + ', '.join(f'{k} {v:.3f}' for k, v in sig.items()))
  lines.append(f'  outputs in {out_dir}: samples.npy, samples.png, curves.png, metrics.json, checkpoints/')
  return '\n'.join(lines)
