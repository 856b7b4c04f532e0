"""Preemption: a run told to stop with SIGTERM saves at the next step boundary that every process agrees on.

TPU VMs, Kubernetes, SLURM and Colab announce a shutdown with SIGTERM. Every
process of a run must then save the same step, or the checkpoint would mix
steps; they agree through JAX's preemption sync point
(``jax.experimental.multihost_utils.reached_preemption_sync_point``, the
mechanism Orbax's ``CheckpointManager.reached_preemption`` uses): the
distributed runtime catches SIGTERM in any process, tells all of them, and
names the step after the furthest one's current step; each process learns
it there and saves.

::

  with PreemptionWatch() as watch:
    for chunk in chunks:
      state = run(chunk)
      if watch.reached():        # at every step boundary, on every process
        save(state)
        break

One process (no ``jax.distributed``) has nobody to agree with: the watch
catches SIGTERM itself for the duration of the ``with`` and answers at the
next boundary. In both cases a second SIGTERM changes nothing: the save that
is running finishes, whole.
"""

from __future__ import annotations

import signal
import threading

from snjax.app import distributed


class PreemptionWatch:
  """Tells, at each step boundary, whether every process should save now and stop (a context manager).

  Inside ``with PreemptionWatch() as watch``, call :meth:`reached` once at
  every step boundary, on every process, the same number of times.

  * Several processes (``jax.distributed.initialize`` called): JAX's preemption
    service has caught SIGTERM since ``jax.distributed.initialize``;
    :meth:`reached` asks its sync point, numbering the boundaries 1, 2, ...
    from the ``with``. (With the service turned off,
    ``jax_enable_preemption_service=False``, nothing catches SIGTERM and
    :meth:`reached` is always ``False``.)
  * One process: SIGTERM is caught from ``__enter__`` to ``__exit__`` (which
    puts the previous handler back); :meth:`reached` is ``True`` at every
    boundary after it. Outside the main thread, where Python cannot catch
    signals, SIGTERM keeps its previous effect.
  """

  def __init__(self):
    self._boundaries = 0
    self._signalled = False
    self._distributed = False
    self._previous = None

  def __enter__(self) -> PreemptionWatch:
    self._distributed = distributed.is_initialized()
    if not self._distributed and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_sigterm(self, signum, frame) -> None:
    self._signalled = True

  def reached(self) -> bool:
    """Whether every process has reached the boundary at which to save and stop (call at every boundary).

    Returns:
      ``True`` at the one boundary, the same on every process, after a SIGTERM to any of them.
    """
    self._boundaries += 1
    if not self._distributed:
      return self._signalled
    from jax.experimental import multihost_utils

    try:
      return multihost_utils.reached_preemption_sync_point(self._boundaries)
    except RuntimeError:  # the preemption service is turned off
      return False
