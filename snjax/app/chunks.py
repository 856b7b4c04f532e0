"""Chunks of train steps: ``log_every`` steps per call, run as one ``lax.scan`` or as a loop of one jitted step.

Step ``t`` of a run trains on the real batch drawn with ``fold_in(data_key,
t)`` and on latents from the state's own RNG, so a chunk is a pure function of
the state, the data key and its first step: a resumed run that repeats the
same chunks repeats the uninterrupted run bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snjax import gan
from snjax.app import data
from snjax.app.config import TrainConfig

# The one name the application takes from a private module of the library.
from snjax.gan._loops import keep_out_of_loops

CHUNK_MODES = ('auto', 'scan', 'loop')
"""The ways :func:`make_chunk` can run the steps of a chunk."""

Chunk = Callable[[gan.GANTrainState, jax.Array, Any, int], tuple[gan.GANTrainState, dict[str, jax.Array]]]


def auto_chunk_mode(step_jaxpr: Any, platform: str) -> str:
  """The mode ``'auto'`` picks for a train step: ``'loop'`` for a step with a convolution on CPU, else ``'scan'``.

  Args:
    step_jaxpr: the (closed) jaxpr of one train step.
    platform: the platform the step runs on (``'cpu'``, ``'gpu'``, ``'tpu'``).

  Returns:
    ``'loop'`` or ``'scan'`` (see :func:`make_chunk`).
  """
  return 'loop' if keep_out_of_loops(step_jaxpr, platform) else 'scan'


def make_chunk(
  config: TrainConfig,
  dataset: data.Dataset,
  trainer: gan.GANTrainer,
  mode: str = 'auto',
  *,
  mesh: jax.sharding.Mesh | None = None,
) -> Chunk:
  """``(state, data_key, first_step, length) -> (state, metrics)``: ``length`` train steps, metrics stacked.

  Step ``t`` trains on the real batch drawn with ``fold_in(data_key, t)``, inside the jitted step, and split over
  the mesh's devices along its batch axis: every process draws the step's whole batch from the seed (nothing is
  sent between processes) and its devices keep their rows, so a run on any number of processes and devices
  trains on the same examples. Two ways to run the steps, each
  deterministic (a resumed run that repeats the same chunks repeats the uninterrupted run bit for bit):

  * ``'scan'``: one jitted ``lax.scan`` over the steps (one dispatch per chunk; one compilation per
    ``length``). The fast way for MLPs.
  * ``'loop'``: a Python loop over one jitted step (data drawn inside it), so any split of a run into chunks
    gives the same numbers. XLA:CPU puts convolutions into the layouts of its fast kernels only in the entry
    computation: a conv critic's backward convolutions inside a ``lax.scan`` run as naive emitted loops,
    10-30x slower than one jitted step called in a loop.
  * ``'auto'`` (default): ``'loop'`` on CPU when the train step has a convolution, else ``'scan'``, decided
    at the first call (the returned function's ``mode`` attribute then says which).

  Args:
    config: the run's configuration (``n_critic``, ``batch_size``).
    dataset: the data set the real batches are drawn from.
    trainer: the trainer of :func:`snjax.app.trainer.build`.
    mode: one of :data:`CHUNK_MODES`.
    mesh: the trainer's mesh (:func:`snjax.gan.data_mesh`), along whose ``'data'`` axis the real batch is split;
      ``None``: wherever jit puts it.

  Returns:
    The chunk function; its metrics are the train step's, each stacked over the steps (leading axis ``length``).

  Raises:
    ValueError: an unknown ``mode``.
  """
  if mode not in CHUNK_MODES:
    raise ValueError(f"chunk mode must be 'auto', 'scan' or 'loop', got {mode!r}.")
  sampler = data.make_sampler(dataset)
  shape = data.sample_shape(dataset)
  n, b = config.n_critic, config.batch_size

  split = None if mesh is None else gan.batch_sharding(mesh, batch_axis=1)

  def one(state, data_key, step):
    real = sampler(jax.random.fold_in(data_key, step), n * b).reshape(n, b, *shape)
    if split is not None:
      real = jax.lax.with_sharding_constraint(real, split)
    return trainer.train_step(state, real)

  def scan_chunk(state, data_key, first_step, length):
    return jax.lax.scan(lambda s, t: one(s, data_key, t), state, first_step + jnp.arange(length))

  scan_jit, one_jit = jax.jit(scan_chunk, static_argnums=3), jax.jit(one)

  def chunk(state, data_key, first_step, length):
    if chunk.mode == 'auto':
      chunk.mode = auto_chunk_mode(jax.make_jaxpr(one)(state, data_key, jnp.int32(0)), jax.devices()[0].platform)
    if chunk.mode == 'scan':
      return scan_jit(state, data_key, jnp.asarray(first_step, jnp.int32), length)
    start, per_step = int(first_step), []
    for t in range(start, start + length):
      state, metrics = one_jit(state, data_key, np.int32(t))
      per_step.append(metrics)
    return state, {k: jnp.stack([m[k] for m in per_step]) for k in per_step[0]}

  chunk.mode = mode  # 'auto' until the first call
  return chunk


def summarize_chunk(step: int, metrics: dict[str, Any]) -> dict[str, Any]:
  """The history entry of a chunk that ended at ``step``.

  Args:
    step: the steps done after the chunk.
    metrics: the chunk's stacked metrics (:func:`make_chunk`).

  Returns:
    ``{'step': step, ...}``: ``finite`` (bool, all steps finite), each ``sigma...`` at the last step, every other
    metric averaged over the chunk (floats).
  """
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
