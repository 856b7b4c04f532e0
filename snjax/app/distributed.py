"""Several processes for one run: how ``snjax train`` uses JAX's multi-controller runtime (``jax.distributed``).

A run on a TPU pod slice or on several GPU hosts is one JAX process per host,
each running the same program on the same arguments, joined by
``jax.distributed.initialize`` (the coordinator address, the number of
processes, this process's id; on Cloud TPU, SLURM and Open MPI JAX finds them
itself). After it, ``jax.devices()`` lists every process's devices, a jitted
step runs on all of them, and every collective (the gradient all-reduce) goes
through the runtime (NCCL on GPUs, the ICI on TPUs, gloo between CPU
processes). The run is the same computation as on one process with as many
devices, up to the order of floating-point sums.

:func:`initialize` joins the processes when asked to; :func:`is_primary`,
:func:`barrier` and :func:`to_host` are what the run needs beside: one process
writes the outputs, all wait for one another where one writes what all read,
and arrays come back to the host whole on every process.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import jax
import numpy as np

from snjax._options import check_int

COORDINATOR_ENV = 'JAX_COORDINATOR_ADDRESS'
"""The environment variable ``jax.distributed.initialize`` reads the coordinator address from."""


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  heartbeat_timeout: int | None = None,
) -> bool:
  """Joins this process to the others of a run with ``jax.distributed.initialize``, when asked to.

  Asked to when any argument is given or ``JAX_COORDINATOR_ADDRESS`` is set;
  the arguments left out are JAX's to find (from ``JAX_COORDINATOR_ADDRESS``,
  or from the cluster: Cloud TPU, SLURM, Open MPI, Kubernetes). Must run
  before any JAX computation; once joined, a process stays joined (a second
  call changes nothing).

  Args:
    coordinator_address: ``host:port`` of process 0, where it serves the coordination service.
    num_processes: the number of processes of the run.
    process_id: this process's index, ``0 .. num_processes - 1``.
    heartbeat_timeout: seconds without a heartbeat after which a process is declared dead and every other process
      stops with an error (JAX's default, 100, when ``None``).

  Returns:
    Whether the process is joined to the others (``jax.distributed.initialize`` was called, now or before).

  Raises:
    ValueError: ``heartbeat_timeout`` below 1, or given to a jax that cannot set it, or JAX's own errors (an
      address it cannot parse, an id out of range, a coordinator that does not answer within its initialization
      timeout).
  """
  asked = any(v is not None for v in (coordinator_address, num_processes, process_id)) or bool(
    os.environ.get(COORDINATOR_ENV)
  )
  if not asked:
    return False
  if is_initialized():
    return True
  options: dict[str, Any] = {}
  if heartbeat_timeout is not None:
    options['heartbeat_timeout_seconds'] = check_int('heartbeat_timeout (seconds)', heartbeat_timeout, 1)
    if not takes_heartbeat_timeout():
      raise ValueError(
        f'a heartbeat timeout needs a jax whose jax.distributed.initialize takes heartbeat_timeout_seconds; '
        f'jax {jax.__version__} does not (leave it out for the default, 100 s, or upgrade jax).'
      )
  _use_gloo_on_cpu()
  jax.distributed.initialize(coordinator_address, num_processes, process_id, **options)
  return True


def takes_heartbeat_timeout() -> bool:
  """Whether this jax's ``jax.distributed.initialize`` takes ``heartbeat_timeout_seconds`` (jax 0.6 does not)."""
  parameters = inspect.signature(jax.distributed.initialize).parameters.values()
  return any(p.name == 'heartbeat_timeout_seconds' or p.kind is p.VAR_KEYWORD for p in parameters)


def is_initialized() -> bool:
  """Whether ``jax.distributed.initialize`` has run in this process (``jax.distributed.is_initialized``, which
  which newer JAX has; the distributed client before)."""
  check = getattr(jax.distributed, 'is_initialized', None)
  if check is not None:
    return check()
  from jax._src import distributed as jax_distributed

  return jax_distributed.global_state.client is not None


def _use_gloo_on_cpu() -> None:
  """Cross-process collectives between CPU devices through gloo, JAX's later default (jax 0.4.33 has none unless
  asked for, and a multi-process computation on CPU fails there)."""
  if jax.config.values.get('jax_cpu_collectives_implementation') == 'none':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')


def is_primary() -> bool:
  """Whether this is process 0, the one that writes the run's outputs (the only process of a one-process run)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier ``name`` (nothing to wait for with one process).

  Args:
    name: the barrier's name, the same on every process and new for each barrier of a run.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def to_host(x: jax.Array) -> np.ndarray:
  """The whole of the global array ``x`` as a NumPy array, on every process.

  A replicated array (or one of a single process) is read from this process's devices; an array split over
  several processes is gathered from all of them (``multihost_utils.process_allgather``), so every process must
  call this together.

  Args:
    x: a ``jax.Array``.

  Returns:
    Its value.
  """
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
