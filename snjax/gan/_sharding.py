"""Data parallelism with JAX's own SPMD: one mesh axis, the batch sharded, the rest replicated.

The same code runs on one device, on 8 CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on a GPU host or on
a TPU pod slice::

  mesh = snjax.data_mesh()                                  # every device, axis 'data'
  trainer = snjax.gan_trainer(..., mesh=mesh)
  state = trainer.init(key, g_params, c_params)            # replicated on the mesh
  state, metrics = trainer.train_step(state, snjax.shard_batch(real, mesh))

The batch is split along the ``'data'`` axis; params, optimizer states, the
spectral-norm u vectors and the RNG are replicated. jit (GSPMD) inserts the
all-reduce of the gradients and of the batch means, so every replica applies
the same update and holds the same u vectors; the result equals the
single-device one up to the order of floating-point sums.

Multi-host (a TPU pod slice, several GPU hosts): call
``jax.distributed.initialize()`` first on every process (on Cloud TPU and
SLURM it needs no arguments), build the mesh over ``jax.devices()`` (all
processes' devices), and give :func:`shard_batch` each process's *local*
part of the batch (its ``B / jax.process_count()`` examples): it assembles
the global array with ``jax.make_array_from_process_local_data``. Run the
same program on every process, and save checkpoints from every process (Orbax
coordinates the writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any


def data_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = 'data') -> Mesh:
  """A one-axis mesh over ``devices`` (default: ``jax.devices()``, all processes' devices).

  Args:
    devices: the devices, in order.
    axis_name: the name of the axis the batch is split along.

  Returns:
    A ``jax.sharding.Mesh`` of shape ``(len(devices),)``.
  """
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError('data_mesh needs at least one device.')
  return Mesh(np.asarray(devices), (axis_name,))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding that puts a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, *, batch_axis: int = 0, axis_name: str = 'data') -> NamedSharding:
  """The sharding that splits array axis ``batch_axis`` over mesh axis ``axis_name``.

  Use ``batch_axis=1`` for stacked real batches ``(n_critic, B, ...)``.
  """
  return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), axis_name))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every leaf of ``tree`` (e.g. a :class:`snjax.GANTrainState`) on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: PyTree, mesh: Mesh, *, batch_axis: int = 0, axis_name: str = 'data') -> PyTree:
  """Splits each array of ``batch`` along ``batch_axis`` over the mesh axis ``axis_name``.

  In a single process ``batch`` is the global batch. With several processes
  (``jax.process_count() > 1``) it is this process's local part, and the
  global array is assembled from every process's part.

  Args:
    batch: an array or a pytree of arrays.
    mesh: the mesh.
    batch_axis: the array axis to split (1 for ``(n_critic, B, ...)``).
    axis_name: the mesh axis.

  Returns:
    The same pytree of global, sharded ``jax.Array``.

  Raises:
    ValueError: the batch size is not divisible by the number of devices
      (processes) sharing it.
  """
  if axis_name not in mesh.axis_names:
    raise ValueError(f'axis_name {axis_name!r} is not an axis of the mesh, whose axes are {mesh.axis_names}.')
  sharding = batch_sharding(mesh, batch_axis=batch_axis, axis_name=axis_name)
  n_processes = jax.process_count()
  n_shards = mesh.shape[axis_name] // n_processes if n_processes > 1 else mesh.shape[axis_name]

  def put(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim <= batch_axis or x.shape[batch_axis] % n_shards:
      raise ValueError(
        f'shard_batch: an array of shape {tuple(x.shape)} cannot be split along axis {batch_axis} over the '
        f'{n_shards} devices of mesh axis {axis_name!r}'
        + (' in this process' if n_processes > 1 else '')
        + '; the batch size must be a multiple of the device count.'
      )
    if n_processes > 1:
      return jax.make_array_from_process_local_data(sharding, np.asarray(x))
    return jax.device_put(x, sharding)

  return jax.tree_util.tree_map(put, batch)
