"""Checkpoints of a training state with Orbax: every K steps, atomic, the last N kept, exact resume.

An extra (``pip install 'snjax[train]'``): this is the only snjax module that
imports ``orbax.checkpoint``, and neither ``import snjax`` nor ``import
snjax.gan`` imports it. Without Orbax, importing this module raises an
``ImportError`` that names the extra.

::

  from snjax.gan.checkpoint import Checkpointer

  with Checkpointer('/tmp/run', save_interval_steps=100, max_to_keep=3) as ckpt:
    state = ckpt.restore(state)            # the latest checkpoint, or `state` itself if there is none
    while int(state.step) < n_steps:
      state, metrics = trainer.train_step(state, next_batch(int(state.step)))
      ckpt.save(state)                     # saves when state.step is a multiple of 100

The whole state is saved: params, optimizer states, the spectral-norm u
vectors and sigmas, the step counters and the RNG, so a resumed run makes the
same steps, bit for bit on CPU, as one that was never interrupted (given the
same data at each step).

Atomicity: Orbax writes a step into a temporary directory and renames it when
complete; a process killed during a save leaves no step directory that
:meth:`Checkpointer.restore` would read (the leftover is removed when the next
:class:`Checkpointer` opens the directory).

A non-finite state (a NaN or inf in any floating leaf) is never saved:
:meth:`Checkpointer.save` raises :class:`NonFiniteStateError` and the last good
checkpoint stays the latest.
"""

from __future__ import annotations

import os
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp

from snjax._options import check_int
from snjax.gan._updates import all_finite

try:
  import orbax.checkpoint as ocp
except ImportError as e:
  raise ImportError("snjax.gan.checkpoint needs orbax-checkpoint: pip install 'snjax[train]'") from e

PyTree = Any

_STATE = 'state'
_SIGNATURE = 'signature'


class NonFiniteStateError(ValueError):
  """Raised by :meth:`Checkpointer.save` for a state holding NaN or inf (nothing is written)."""


def _signature(tree: PyTree) -> dict[str, list]:
  """``{path: [shape, dtype]}`` of every leaf of a state dict."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out[jax.tree_util.keystr(path)] = [list(jnp.shape(leaf)), jnp.dtype(leaf.dtype).name]
  return out


# The same test as the train steps' guard: every floating leaf finite.
_all_finite = jax.jit(all_finite)


def _compare(saved: dict, expected: dict, where: str) -> None:
  missing = [p for p in expected if p not in saved]
  extra = [p for p in saved if p not in expected]
  differ = [
    f'{p}: saved {tuple(saved[p][0])} {saved[p][1]}, expected {tuple(expected[p][0])} {expected[p][1]}'
    for p in expected
    if p in saved and (list(saved[p][0]) != list(expected[p][0]) or saved[p][1] != expected[p][1])
  ]
  if missing or extra or differ:
    parts = []
    if missing:
      parts.append(f'missing from the checkpoint: {missing[:10]}' + (' ...' if len(missing) > 10 else ''))
    if extra:
      parts.append(f'not in the template: {extra[:10]}' + (' ...' if len(extra) > 10 else ''))
    if differ:
      parts.append('different shape or dtype: ' + '; '.join(differ[:10]) + (' ...' if len(differ) > 10 else ''))
    raise ValueError(
      f'{where} was saved from a different model or training state than the one given to restore: '
      + ' | '.join(parts)
      + '. Restore into a state built with the same models, optimizers and options, or use a new directory.'
    )


class Checkpointer:
  """Saves and restores a training state (any pytree, e.g. :class:`snjax.gan.GANTrainState`) with Orbax.

  Use it as a context manager (or call :meth:`close`), so that pending saves
  finish.

  Args:
    directory: where the step directories go (created if missing).
    save_interval_steps: :meth:`save` writes only at steps that are a multiple
      of this (K), >= 1.
    max_to_keep: keep the last N checkpoints (>= 1), delete older ones;
      ``None`` keeps all.
    async_save: write in a background thread (call :meth:`wait_until_finished`
      or :meth:`close` before reading the files); default synchronous.

  Raises:
    ValueError: ``save_interval_steps`` or ``max_to_keep`` out of range.
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    save_interval_steps: int = 1000,
    max_to_keep: int | None = 3,
    async_save: bool = False,
  ):
    save_interval_steps = check_int('save_interval_steps', save_interval_steps, 1)
    if max_to_keep is not None:
      max_to_keep = check_int('max_to_keep (None to keep all)', max_to_keep, 1)
    self.directory = os.fspath(os.path.abspath(directory))
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_interval_steps,
      max_to_keep=max_to_keep,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
      create=True,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(_STATE, _SIGNATURE))

  def save(self, state: PyTree, *, step: int | None = None, force: bool = False) -> bool:
    """Saves ``state`` at ``step`` if the interval says so (or ``force``).

    Args:
      state: the training state.
      step: the step number; default ``int(state.step)``.
      force: save even if ``step`` is not a multiple of ``save_interval_steps``.

    Returns:
      Whether a checkpoint was written.

    Raises:
      NonFiniteStateError: a floating leaf of ``state`` holds NaN or inf
        (nothing is written; the previous checkpoint stays the latest).
    """
    if step is None:
      step = int(state.step)
    if not force and not self.manager.should_save(step):
      return False
    if not bool(_all_finite(state)):
      raise NonFiniteStateError(
        f'refusing to save a non-finite training state at step {step} to {self.directory}; '
        f'the latest good checkpoint is step {self.manager.latest_step()}.'
      )
    tree = flax.serialization.to_state_dict(state)
    return self.manager.save(
      step,
      args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(tree), _SIGNATURE: ocp.args.JsonSave(_signature(tree))}),
      force=force,
    )

  def restore(self, template: PyTree, *, step: int | None = None) -> PyTree:
    """Restores the checkpoint at ``step`` (default: the latest) into the structure of ``template``.

    Args:
      template: a state of the same structure, shapes and dtypes (e.g. a
        freshly initialized one); its arrays' shardings are kept.
      step: which checkpoint; ``None`` for the latest.

    Returns:
      The restored state, or ``template`` itself when ``step`` is ``None``
      and the directory holds no checkpoint (a fresh run).

    Raises:
      FileNotFoundError: an explicit ``step`` that is not saved.
      ValueError: the checkpoint was saved from a different model or state
        (the message lists the differing paths).
    """
    if step is None:
      step = self.manager.latest_step()
      if step is None:
        return template
    elif step not in self.manager.all_steps():
      raise FileNotFoundError(f'no checkpoint at step {step} in {self.directory}; saved steps: {self.all_steps()}.')
    tree = flax.serialization.to_state_dict(template)
    saved = self.manager.restore(step, args=ocp.args.Composite(**{_SIGNATURE: ocp.args.JsonRestore()}))[_SIGNATURE]
    _compare(saved, _signature(tree), f'checkpoint step {step} in {self.directory}')
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
    restored = self.manager.restore(step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract)}))
    return flax.serialization.from_state_dict(template, restored[_STATE])

  def latest_step(self) -> int | None:
    """The latest saved step, or ``None``."""
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    """The saved steps, ascending."""
    return sorted(self.manager.all_steps())

  def wait_until_finished(self) -> None:
    """Blocks until an asynchronous save is complete."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the manager."""
    self.manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
