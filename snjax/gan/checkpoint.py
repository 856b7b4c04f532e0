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

Damage: a step whose files were truncated or deleted afterwards (a full disk,
a disk error) does not end a run. :meth:`Checkpointer.restore` restores the
newest checkpoint that reads back whole, warns in one line
(:class:`UnreadableCheckpointWarning`) about each newer one it skipped and
why, and removes those, so that training saves them again; when none reads
back it raises :class:`UnreadableCheckpointError`, naming the directory.

Several processes (``jax.distributed.initialize``): every process calls
:meth:`Checkpointer.save` and :meth:`Checkpointer.restore` with its global
arrays, into a directory they all see; Orbax writes each array once,
collectively, and commits the step when every process is done.

A non-finite state (a NaN or inf in any floating leaf) is never saved:
:meth:`Checkpointer.save` raises :class:`NonFiniteStateError` and the last good
checkpoint stays the latest.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import warnings
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

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


class CheckpointMismatchError(ValueError):
  """Raised by :meth:`Checkpointer.restore` for a checkpoint saved from another model or training state."""


class UnreadableCheckpointError(ValueError):
  """Raised by :meth:`Checkpointer.restore` when no checkpoint (or not the one asked for) reads back whole."""


class UnreadableCheckpointWarning(UserWarning):
  """Warned by :meth:`Checkpointer.restore` for each newer checkpoint it skipped because it did not read back."""


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
    raise CheckpointMismatchError(
      f'{where} was saved from a different model or training state than the one given to restore: '
      + ' | '.join(parts)
      + '. Restore into a state built with the same models, optimizers and options, or use a new directory.'
    )


def _one_line(error: BaseException, limit: int = 300) -> str:
  """The reason ``error`` gives, on one line of at most ``limit`` characters (its middle cut when longer).

  TensorStore's errors (``OUT_OF_RANGE: Error opening "cast" driver: ... [tensorstore_spec='{...}']``) keep their
  status, what could not be read and why; the driver chain and the spec they append are left out.
  """
  text = re.split(r' \[tensorstore_spec', str(error).strip(), maxsplit=1)[0]
  text = re.sub(r'Error opening "\w+" driver: ', '', ' '.join(text.split()))
  if not re.match(r'[A-Z_]+: ', text):  # not a status-prefixed TensorStore message: say what kind of error
    text = f'{type(error).__name__}: {text}' if text else type(error).__name__
  if len(text) > limit:
    text = text[: limit // 3] + ' ... ' + text[-(limit - limit // 3 - 5) :]
  return text


def _is_closed_loop_report(unraisable) -> bool:
  return unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == 'Event loop is closed'


class _OrbaxReadLeftovers(logging.Filter):
  """Drops asyncio's report of an Orbax read task whose error was already reported (see :func:`_quiet_leftovers`)."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith('Task exception was never retrieved') and 'orbax' in message)


def _quiet_leftovers() -> None:
  """Silences the reports that a failed Orbax read leaves behind, from the first restore on (installed once).

  When one array of a step cannot be read, Orbax closes its event loop while the step's other TensorStore
  reads are still running; as they end, each reports ``RuntimeError: Event loop is closed`` (a traceback
  through ``sys.unraisablehook``) and asyncio logs ``Task exception was never retrieved``, dozens of lines
  about the error :meth:`Checkpointer.restore` has already reported in one. Only those two reports are
  dropped; every other one goes to the previous hook or handler.
  """
  previous = sys.unraisablehook
  if getattr(previous, '_snjax_quiet_leftovers', False):
    return

  def hook(unraisable):
    if not _is_closed_loop_report(unraisable):
      previous(unraisable)

  hook._snjax_quiet_leftovers = True
  sys.unraisablehook = hook
  logging.getLogger('asyncio').addFilter(_OrbaxReadLeftovers())


def _agree(reason: str | None) -> str | None:
  """With several processes: ``None`` if every process read the step, else this process's reason (or which process
  failed, when this one did not).

  Every process must pick the same step; a step that one process could not read is skipped by all.
  """
  if jax.process_count() == 1:
    return reason
  from jax.experimental import multihost_utils

  failed = np.asarray(multihost_utils.process_allgather(np.int32(reason is not None)))
  if not failed.any():
    return None
  return reason if reason is not None else f'process {int(np.argmax(failed))} could not read it'


_MANAGERS = itertools.count()
"""How many checkpointers this process has made: the same sequence on every process of a run."""


def _multiprocessing_options():
  """Orbax's multi-process options with barriers named after this checkpointer (several processes only).

  Orbax names a save's barriers after the step; in orbax 0.6 the name is the same for two checkpointers of one
  program that save the same step, and the coordination service refuses a barrier name a second time. Every
  process makes its checkpointers in the same order, so the count names the same checkpointer on all of them.
  """
  if jax.process_count() == 1:
    return ocp.options.MultiprocessingOptions()
  return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=f'snjax_checkpointer_{next(_MANAGERS)}')


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
      multiprocessing_options=_multiprocessing_options(),
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
    """Restores the checkpoint at ``step`` (default: the newest that reads back whole) into ``template``'s structure.

    With ``step=None``, the saved steps are tried from the newest: a step
    whose files cannot be read (truncated, deleted) or that holds NaN or inf
    (never saved, so a sign of damage) is skipped; once an older one is
    restored, a one-line :class:`UnreadableCheckpointWarning` names each
    skipped step and why, and the skipped steps are deleted (training saves
    them again; left in place, Orbax would see them as the latest and skip
    the new saves). With several processes, a step counts as readable only
    if it reads back on every process.

    Args:
      template: a state of the same structure, shapes and dtypes (e.g. a
        freshly initialized one); its arrays' shardings are kept, so a
        checkpoint saved on other devices or by another number of processes
        is read into this one's placement.
      step: which checkpoint; ``None`` for the newest readable one.

    Returns:
      The restored state, or ``template`` itself when ``step`` is ``None``
      and the directory holds no checkpoint (a fresh run).

    Raises:
      FileNotFoundError: an explicit ``step`` that is not saved.
      CheckpointMismatchError: (a ``ValueError``) the checkpoint was saved
        from a different model or state (the message lists the differing
        paths); never skipped as damage.
      UnreadableCheckpointError: (a ``ValueError``) the explicit ``step``, or
        with ``step=None`` every saved step, does not read back whole; one
        line naming the directory and each step's reason.
    """
    if step is not None:
      if step not in self.manager.all_steps():
        raise FileNotFoundError(f'no checkpoint at step {step} in {self.directory}; saved steps: {self.all_steps()}.')
      restored, reason = self._try_restore(template, step)
      if reason is not None:
        raise UnreadableCheckpointError(
          f'checkpoint step {step} in {self.directory} does not read back whole: {reason}'
        )
      return restored
    skipped = []
    for candidate in sorted(self.manager.all_steps(), reverse=True):
      restored, reason = self._try_restore(template, candidate)
      if reason is None:
        self._drop_unreadable(skipped, candidate)
        return restored
      skipped.append((candidate, reason))
    if not skipped:
      return template
    raise UnreadableCheckpointError(
      f'no checkpoint in {self.directory} reads back whole: '
      + '; '.join(f'step {s}: {reason}' for s, reason in skipped)
      + '. Start a new run (another folder, or delete this one).'
    )

  def _try_restore(self, template: PyTree, step: int) -> tuple[PyTree, str | None]:
    """``(state, None)``, or ``(None, why)`` when step ``step`` does not read back whole on every process."""
    _quiet_leftovers()
    tree = flax.serialization.to_state_dict(template)
    saved, reason = None, None
    try:
      saved = self.manager.restore(step, args=ocp.args.Composite(**{_SIGNATURE: ocp.args.JsonRestore()}))[_SIGNATURE]
      if not isinstance(saved, dict):
        raise ValueError(f'its signature is not a JSON object but {type(saved).__name__}')
    except Exception as e:  # Orbax / TensorStore / JSON errors of a damaged step: all mean "unreadable"
      reason = _one_line(e)
    reason = _agree(reason)
    if reason is not None:
      return None, reason
    _compare(saved, _signature(tree), f'checkpoint step {step} in {self.directory}')
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
    state = None
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract)}))
      state = flax.serialization.from_state_dict(template, restored[_STATE])
      if not bool(_all_finite(state)):
        reason = 'it holds NaN or inf, which is never saved'
    except Exception as e:  # as above
      reason = _one_line(e)
    reason = _agree(reason)
    return (None, reason) if reason is not None else (state, None)

  def _drop_unreadable(self, skipped: list[tuple[int, str]], restored: int) -> None:
    """Warns about and deletes the steps skipped before ``restored`` was restored."""
    for step, reason in skipped:
      warnings.warn(
        f'checkpoint step {step} in {self.directory} does not read back whole ({reason}); '
        f'restored step {restored} instead and deleted step {step}.',
        UnreadableCheckpointWarning,
        stacklevel=3,
      )
      self.manager.delete(step)

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
