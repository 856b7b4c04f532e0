"""``snjax train``: an SN-GAN on an embedded data set, with progress, pictures, metrics and exact resume.

::

  from snjax.app.config import TrainConfig
  from snjax.app.run import train
  summary = train(TrainConfig.for_dataset('grid25', seed=1), 'runs/grid25_seed1')

The critic is spectrally normalized with :func:`snjax.sn_apply` inside the
train step of :func:`snjax.gan.gan_trainer` (Miyato et al. 2018,
https://arxiv.org/abs/1802.05957); training is data-parallel over every
visible device (:func:`snjax.gan.data_mesh`); the whole state (params, Adam
moments, u vectors, generator EMA, RNG) is checkpointed with Orbax
(:class:`snjax.gan.checkpoint.Checkpointer`). Every random number is a pure
function of the seed and the step: the real batch of step ``t`` is drawn with
``fold_in(data_key, t)`` and the latents from the state's own RNG, and steps
run in chunks of ``log_every`` aligned to multiples of ``log_every``
(:mod:`snjax.app.chunks`), so that a run killed at any point (even with
SIGKILL) and restarted with ``resume=True`` executes the same compiled chunks
on the same values and ends with the same samples, bit for bit, as an
uninterrupted run on the same devices.

Several processes (a TPU pod slice, GPU hosts; :mod:`snjax.app.distributed`)
run the same :func:`train` on a run folder they all see: the mesh spans every
process's devices, each process draws each batch from the seed and keeps its
devices' rows, the state is replicated and identical everywhere, checkpoints
are written by all together, and process 0 alone writes the other outputs and
shows progress. A SIGTERM to any process (a preemption) makes every process
save at the next step boundary they agree on and return
(:mod:`snjax.app.preemption`); a resumed run continues bit for bit. A
checkpoint damaged on disk is skipped for the newest one that reads back whole
(:meth:`snjax.gan.checkpoint.Checkpointer.restore`).

Outputs in the run folder (:mod:`snjax.app.run_folder`): ``config.json``,
``checkpoints/``, ``history.json`` (losses and sigmas every ``log_every``
steps), ``samples.npy`` (2,500 samples of the generator EMA),
``samples.png``, ``curves.png`` and ``metrics.json`` (see
:mod:`snjax.app.metrics`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
import warnings
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from snjax import gan
from snjax.app import chunks, data, distributed, metrics, preemption, trainer
from snjax.app.config import TrainConfig
from snjax.app.run_folder import CHECKPOINTS, RunFolderError, prepare_run_folder, read_json, write_json


class Machinery(NamedTuple):
  """What a run computes with, made once per configuration and set of devices.

  Attributes:
    dataset: the data set (:func:`snjax.app.data.get_dataset`).
    generator: the generator module.
    critic: the critic module.
    trainer: their :class:`snjax.gan.GANTrainer`.
    chunk: the jitted chunk of train steps (:func:`snjax.app.chunks.make_chunk`).
  """

  dataset: data.Dataset
  generator: nn.Module
  critic: nn.Module
  trainer: gan.GANTrainer
  chunk: chunks.Chunk


@functools.lru_cache(maxsize=8)
def _machinery(config: TrainConfig, mesh, dataset: data.Dataset) -> Machinery:
  """The machinery of a configuration (cached: a second run of the same shapes in one process reuses the compiled
  steps). ``config`` has ``seed`` zeroed, and ``steps`` too when the learning rates do not decay (their schedule
  depends on it)."""
  generator, critic, gan_trainer = trainer.build(config, dataset, mesh)
  return Machinery(dataset, generator, critic, gan_trainer, chunks.make_chunk(config, dataset, gan_trainer, mesh=mesh))


def _prepare(config: TrainConfig, mesh, dataset: data.Dataset) -> Machinery:
  """Checks that the devices divide the batch; the (cached) machinery of ``config``."""
  n_dev = mesh.devices.size
  if config.batch_size % n_dev:
    raise ValueError(f'batch_size {config.batch_size} is not divisible by the {n_dev} devices; choose a multiple.')
  # Cache across seeds (and lengths, when the learning rates do not depend on them).
  return _machinery(dataclasses.replace(config, seed=0, steps=config.steps if config.lr_decay else 1), mesh, dataset)


def _prepare_folder(out_dir: str, config: TrainConfig, *, resume: bool, force: bool) -> bool:
  """Every process checks the run folder, process 0 clears it for ``force``, then all wait: whether to restore.

  Raises:
    RunFolderError: see :func:`snjax.app.run_folder.prepare_run_folder`.
  """
  restore = prepare_run_folder(out_dir, config, resume=resume, force=force, clear=distributed.is_primary())
  distributed.barrier('snjax-train-run-folder')
  return restore


def _restore(ckpt, state: gan.GANTrainState, out_dir: str) -> tuple[gan.GANTrainState, list[dict[str, Any]]]:
  """The newest checkpoint of the run in ``out_dir`` that reads back whole, and its history up to that step.

  Each newer checkpoint that did not read back (a truncated or deleted file) is named in one line on stderr, with
  the reason, by process 0.

  Raises:
    RunFolderError: the checkpoint does not fit the state (another model or configuration), or no checkpoint
      reads back whole.
  """
  from snjax.gan.checkpoint import UnreadableCheckpointWarning

  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always', UnreadableCheckpointWarning)
      state = ckpt.restore(state)
  except ValueError as e:
    raise RunFolderError(f'cannot resume the run in {out_dir!r}: {e}') from None
  for w in caught:
    if issubclass(w.category, UnreadableCheckpointWarning):
      if distributed.is_primary():
        print(f'snjax train: {w.message}', file=sys.stderr)
    else:
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  hist_path = os.path.join(out_dir, 'history.json')
  if not os.path.exists(hist_path):
    return state, []
  return state, [h for h in read_json(hist_path) if h['step'] <= int(state.step)]


def _progress_bar(config: TrainConfig, start: int):
  from tqdm.auto import tqdm

  return tqdm(total=config.steps, initial=start, desc=f'SN-GAN {config.dataset}', unit='step', dynamic_ncols=True)


def _show_progress(bar, entry: dict[str, Any], length: int) -> None:
  sig = [v for k, v in entry.items() if k.startswith('sigma/')]
  bar.set_postfix_str(
    f'D {entry["critic_loss"]:.3f} G {entry["generator_loss"]:.3f} sigma {min(sig):.2f}..{max(sig):.2f}' if sig else ''
  )
  bar.update(length)


def _train_chunks(
  config: TrainConfig,
  chunk: chunks.Chunk,
  state: gan.GANTrainState,
  end: int,
  *,
  ckpt,
  out_dir: str,
  history: list[dict[str, Any]],
  progress: bool,
  watch: preemption.PreemptionWatch,
) -> tuple[gan.GANTrainState, bool]:
  """Trains from ``state.step`` to ``end`` in chunks ending on multiples of ``log_every``, or until preempted.

  Each chunk appends its entry to ``history``; on multiples of ``checkpoint_every`` and at ``end`` the history is
  written (by process 0) and the state checkpointed (by all). After each chunk but the last, ``watch`` says whether
  every process is to save and stop there (a SIGTERM).

  Returns:
    ``(state, preempted)``: the state at ``end``, or at the boundary where a preemption was saved.

  Raises:
    FloatingPointError: a chunk had a non-finite loss or gradient (its steps were not applied).
  """
  data_key = trainer.run_keys(config.seed).data
  step = int(state.step)
  bar = _progress_bar(config, step) if progress and distributed.is_primary() else None
  preempted = False
  while step < end and not preempted:
    length = min(config.log_every - step % config.log_every, end - step)
    state, chunk_metrics = chunk(state, data_key, jnp.int32(step), length)
    step += length
    entry = chunks.summarize_chunk(step, jax.tree_util.tree_map(distributed.to_host, chunk_metrics))
    if not entry.get('finite', True):
      raise FloatingPointError(
        f'training diverged (non-finite loss or gradients) before step {step}; the state was not updated; '
        'try a lower learning rate.'
      )
    history.append(entry)
    preempted = step < end and watch.reached()
    if step % config.checkpoint_every == 0 or step == end or preempted:
      _checkpoint(ckpt, state, step, history, out_dir, force=step == end or preempted)
    if bar is not None:
      _show_progress(bar, entry, length)
  if bar is not None:
    bar.close()
  return state, preempted


def _checkpoint(ckpt, state: gan.GANTrainState, step: int, history: list[dict[str, Any]], out_dir: str, *, force: bool):
  """Writes the history (process 0) and checkpoints the state at ``step`` (every process), unless already saved."""
  if distributed.is_primary():
    write_json(os.path.join(out_dir, 'history.json'), history)
  if ckpt.latest_step() != step:
    ckpt.save(state, step=step, force=force)


def _final_samples(config: TrainConfig, machinery: Machinery, state: gan.GANTrainState) -> np.ndarray:
  """The samples of the generator EMA that are measured, saved and plotted, in the data's units, on every process
  (all compute them)."""
  eval_key = trainer.run_keys(config.seed).evaluation
  count = metrics.eval_sample_count(machinery.dataset)
  samples = distributed.to_host(machinery.trainer.sample(state, eval_key, count))
  return data.to_data_units(machinery.dataset, samples)


def _write_outputs(
  config: TrainConfig,
  machinery: Machinery,
  state: gan.GANTrainState,
  samples: np.ndarray,
  history: list[dict[str, Any]],
  out_dir: str,
  *,
  steps: int,
  mesh: jax.sharding.Mesh,
  train_seconds: float,
  start: tuple[float, float],
) -> dict[str, Any]:
  """Measures the samples and writes the outputs (process 0's job); returns the contents of ``metrics.json``."""
  dataset = machinery.dataset
  np.save(os.path.join(out_dir, 'samples.npy'), samples)
  quality = metrics.evaluate(dataset, samples)
  if isinstance(dataset, data.UserData):  # no classifier for the user's data: the critic's Lipschitz report too
    critic_params, sn_state = jax.tree.map(distributed.to_host, (state.critic_params, state.sn_state))  # replicated
    quality['critic_lipschitz'] = metrics.critic_lipschitz(
      machinery.critic, critic_params, sn_state, dataset.shape, config.target_norm
    )
  last = history[-1] if history else {}
  summary = {
    'dataset': config.dataset,
    'steps': steps,
    'seed': config.seed,
    'devices': mesh.devices.size,
    'processes': jax.process_count(),
    'device_kind': jax.devices()[0].device_kind,
    'train_seconds_this_session': round(train_seconds, 2),
    'wall_seconds_this_session': round(time.perf_counter() - start[0], 2),
    'cpu_seconds_this_session': round(time.process_time() - start[1], 2),
    'metrics': quality,
    'final_sigmas': {k[len('sigma/') :]: v for k, v in last.items() if k.startswith('sigma/')},
    'config': config.to_json(),
  }
  write_json(os.path.join(out_dir, 'metrics.json'), summary)
  from snjax.app import plots

  plots.plot_samples(os.path.join(out_dir, 'samples.png'), dataset, samples, quality)
  plots.plot_curves(os.path.join(out_dir, 'curves.png'), history)
  return summary


def _train_session(
  config: TrainConfig,
  chunk: chunks.Chunk,
  state: gan.GANTrainState,
  out_dir: str,
  *,
  restore: bool,
  end: int,
  progress: bool,
  watch: preemption.PreemptionWatch,
) -> tuple[gan.GANTrainState, list[dict[str, Any]], bool, float]:
  """Restores the run (if ``restore``), trains it to ``end`` or until preempted, checkpointing on the way.

  Returns:
    ``(state, history, preempted, seconds)``: the last state, the history up to it, whether a SIGTERM stopped the
    run, and the seconds this took.
  """
  from snjax.gan.checkpoint import Checkpointer

  history: list[dict[str, Any]] = []
  t_start = time.perf_counter()
  with Checkpointer(
    os.path.join(out_dir, CHECKPOINTS), save_interval_steps=config.checkpoint_every, max_to_keep=2
  ) as ckpt:
    if restore:
      state, history = _restore(ckpt, state, out_dir)
    if distributed.is_primary():
      write_json(os.path.join(out_dir, 'config.json'), config.to_json())
    state, preempted = _train_chunks(
      config, chunk, state, end, ckpt=ckpt, out_dir=out_dir, history=history, progress=progress, watch=watch
    )
    ckpt.wait_until_finished()
  return state, history, preempted, time.perf_counter() - t_start


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

  With several processes (``jax.distributed.initialize`` called first, :mod:`snjax.app.distributed`), every
  process calls it with the same arguments on a folder they all see; process 0 writes the outputs and shows the
  progress.

  Args:
    config: the run's configuration.
    out_dir: the run folder (created if missing).
    resume: continue from the folder's newest checkpoint that reads back whole (same configuration).
    force: delete a run already in the folder and start again.
    progress: show a tqdm progress bar and print the summary.
    stop_after: stop (after checkpointing) once this many steps are done, without the outputs; for tests of
      resumption.

  Returns:
    The summary dict written to ``metrics.json``; ``{'stopped_at': step}`` with ``stop_after``;
    ``{'preempted_at': step}`` when a SIGTERM stopped the run after checkpointing that step (resume it with
    ``resume=True``); on processes other than 0, ``{'steps': step}`` instead of the summary.

  Raises:
    RunFolderError: see :func:`snjax.app.run_folder.prepare_run_folder`; or a checkpoint that does not fit, or
      none that reads back whole.
    ValueError: an invalid configuration, or a batch size the device count does not divide.
    FloatingPointError: training diverged (a non-finite loss or gradient).
  """
  start = time.perf_counter(), time.process_time()
  config.validate()
  dataset = data.load_dataset(config)  # the user's data is read and checked before the run folder is touched
  with preemption.PreemptionWatch() as watch:
    restore = _prepare_folder(out_dir, config, resume=resume, force=force)
    mesh = gan.data_mesh()
    machinery = _prepare(config, mesh, dataset)
    state = trainer.init_state(config, machinery.dataset, machinery.generator, machinery.critic, machinery.trainer)
    os.makedirs(out_dir, exist_ok=True)
    if restore or distributed.is_primary():  # every process checks a resumed run's data; process 0 writes data.json
      data.record_run_data(dataset, out_dir, resume=restore)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    state, history, preempted, seconds = _train_session(
      config, machinery.chunk, state, out_dir, restore=restore, end=end, progress=progress, watch=watch
    )
    if preempted:
      return {'preempted_at': int(state.step)}
    if end < config.steps:
      return {'stopped_at': end}
    samples = _final_samples(config, machinery, state)
    if not distributed.is_primary():
      return {'steps': int(state.step)}
    summary = _write_outputs(
      config,
      machinery,
      state,
      samples,
      history,
      out_dir,
      steps=int(state.step),
      mesh=mesh,
      train_seconds=seconds,
      start=start,
    )
  if progress:
    print(format_summary(summary, out_dir))
  return summary


def format_summary(summary: dict[str, Any], out_dir: str) -> str:
  """The end-of-run summary printed by ``snjax train``.

  Args:
    summary: the contents of ``metrics.json`` (:func:`train`'s result).
    out_dir: the run folder, named in the last line.

  Returns:
    A few lines of text: the run, its metrics (beside the real data's for digits) and its final sigmas.
  """
  lines = [
    f'snjax train: {summary["dataset"]}, {summary["steps"]} steps, seed {summary["seed"]}, '
    f'{_devices_text(summary)} ({summary["device_kind"]}), '
    f'{summary["train_seconds_this_session"]:.1f} s of training in this session',
    *metrics.summary_lines(summary['metrics']),
  ]
  if 'wall_seconds_this_session' in summary:
    wall, cpu = summary['wall_seconds_this_session'], summary['cpu_seconds_this_session']
    lines.append(f'  time                {wall:.1f} s wall, {cpu:.1f} s CPU (this session, to the metrics)')
  sig = summary['final_sigmas']
  if sig:
    lines.append('  sigma (raw critic weights): ' + ', '.join(f'{k} {v:.3f}' for k, v in sig.items()))
  lines.append(f'  outputs in {out_dir}: samples.npy, samples.png, curves.png, metrics.json, checkpoints/')
  return '\n'.join(lines)


def _devices_text(summary: dict[str, Any]) -> str:
  """``'8 device(s)'``, or ``'8 devices in 2 processes'`` for a run of several processes."""
  devices, processes = summary['devices'], summary.get('processes', 1)
  return f'{devices} device(s)' if processes == 1 else f'{devices} devices in {processes} processes'
