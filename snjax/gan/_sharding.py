"""Data parallelism with JAX's own SPMD: one mesh axis, the batch sharded, the rest replicated.

The same code runs on one device, on 8 CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on a GPU host or on
a TPU pod slice::

  mesh = snjax.gan.data_mesh()                              # every device, axis 'data'
  trainer = snjax.gan.gan_trainer(..., mesh=mesh)
  state = trainer.init(key, g_params, c_params)            # replicated on the mesh
  state, metrics = trainer.train_step(state, snjax.gan.shard_batch(real, mesh))

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

Two kinds of placement: :func:`shard_batch` and :func:`replicate` put arrays
on the devices (``jax.device_put``, outside ``jit``); ``constrain_to_batch``
and ``constrain_replicated`` tell the compiler, inside a jitted step, how
the values it computes are laid out (``jax.lax.with_sharding_constraint``).
"""

from __future__ import annotations

import hashlib
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

  Raises:
    ValueError: ``devices`` is empty.
  """
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError('data_mesh needs at least one device.')
  return Mesh(np.asarray(devices), (axis_name,))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding that puts a full copy on every device of ``mesh``.

  Args:
    mesh: the mesh.

  Returns:
    ``NamedSharding(mesh, PartitionSpec())``.
  """
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, *, batch_axis: int = 0, axis_name: str = 'data') -> NamedSharding:
  """The sharding that splits array axis ``batch_axis`` over mesh axis ``axis_name``.

  Args:
    mesh: the mesh.
    batch_axis: the array axis to split; ``1`` for stacked real batches ``(n_critic, B, ...)``.
    axis_name: the mesh axis.

  Returns:
    ``NamedSharding(mesh, PartitionSpec(None, ..., axis_name))`` with ``batch_axis`` leading ``None``.
  """
  return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), axis_name))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every leaf of ``tree`` (e.g. a :class:`snjax.gan.GANTrainState`) on every device of ``mesh``.

  Outside ``jit``: ``jax.device_put`` (inside a jitted function, use ``snjax.gan._sharding.constrain_replicated``).

  With several processes (``jax.process_count() > 1``) every process passes
  its own copy of ``tree``, which must be the same everywhere (e.g. made from
  the same seed): each leaf becomes a global array with
  ``jax.make_array_from_process_local_data``, and one collective check (a
  fingerprint of the whole tree, gathered from every process) makes sure the
  copies agree, where ``jax.device_put`` would check each leaf by itself.

  Args:
    tree: a pytree of arrays.
    mesh: the mesh.

  Returns:
    The same pytree, each leaf a ``jax.Array`` with a full copy on every device.

  Raises:
    ValueError: with several processes, ``tree`` differs between them.
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  host = jax.tree_util.tree_map(np.asarray, tree)
  _check_same_on_every_process(host)
  return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, x), host)


def _check_same_on_every_process(tree: PyTree) -> None:
  """Raises unless every process holds the same (host) ``tree``: its SHA-256, gathered from every process."""
  from jax.experimental import multihost_utils

  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    digest.update(f'{jax.tree_util.keystr(path)} {leaf.dtype} {leaf.shape}'.encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  mine = np.frombuffer(digest.digest(), np.uint32)
  every = np.asarray(multihost_utils.process_allgather(mine))
  differ = [p for p in range(every.shape[0]) if not np.array_equal(every[p], every[0])]
  if differ:
    raise ValueError(
      f'replicate: process(es) {differ} hold a different tree from process 0 (another seed, model or state); '
      'every process must pass the same values.'
    )


def shard_batch(batch: PyTree, mesh: Mesh, *, batch_axis: int = 0, axis_name: str = 'data') -> PyTree:
  """Splits each array of ``batch`` along ``batch_axis`` over the mesh axis ``axis_name``.

  Outside ``jit``: the arrays are placed on the devices (inside a jitted
  function, use ``snjax.gan._sharding.constrain_to_batch``).

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


def constrain_to_batch(x: jax.Array, mesh: Mesh | None, axis_name: str = 'data') -> jax.Array:
  """Inside ``jit``: constrains ``x`` to be split along its first axis over the mesh axis ``axis_name``.

  A ``jax.lax.with_sharding_constraint`` with :func:`batch_sharding`; the
  compiler (GSPMD) lays out ``x`` accordingly and inserts the communication
  around it. (Outside ``jit``, :func:`shard_batch` places the data.)

  Args:
    x: an array with a leading batch axis, traced or concrete.
    mesh: the mesh, or ``None`` (then ``x`` is returned as it is).
    axis_name: the mesh axis the batch is split along.

  Returns:
    ``x``, with the sharding constraint.
  """
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, batch_sharding(mesh, axis_name=axis_name))


def constrain_replicated(tree: PyTree, mesh: Mesh | None) -> PyTree:
  """Inside ``jit``: constrains every leaf of ``tree`` to a full copy on every device of ``mesh``.

  A ``jax.lax.with_sharding_constraint`` with :func:`replicated`. (Outside
  ``jit``, :func:`replicate` places the data.)

  Args:
    tree: a pytree of arrays (e.g. a training state), traced or concrete.
    mesh: the mesh, or ``None`` (then ``tree`` is returned as it is).

  Returns:
    ``tree``, with the sharding constraint on each leaf.
  """
  if mesh is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, replicated(mesh))
