"""Tests of snjax.gan._sharding: the GAN step on 8 CPU devices matches one device; u is replicated; the helpers.

The 8-device part runs in a subprocess (``tests._processes.env(8)``), since
``--xla_force_host_platform_device_count=8`` must be in ``XLA_FLAGS`` before
jax is imported.
"""

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import snjax
from snjax.gan._sharding import constrain_replicated, constrain_to_batch
from tests import _processes

_SCRIPT = textwrap.dedent(
  """
    import json, os
    import flax.linen as nn, jax, jax.numpy as jnp, numpy as np, optax
    import snjax

    assert len(jax.devices()) == 8, jax.devices()
    G = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(2)])
    D = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(16), nn.relu, nn.Dense(1)])
    gp = G.init(jax.random.key(0), jnp.zeros((1, 4)))['params']
    cp = D.init(jax.random.key(1), jnp.zeros((1, 2)))['params']
    n_critic, batch = 2, 16

    def make(mesh):
      return snjax.gan.gan_trainer(
          lambda p, z: G.apply({'params': p}, z), lambda p, x: D.apply({'params': p}, x),
          optax.adam(1e-2), optax.adam(1e-2), latent_shape=4, n_critic=n_critic, gp_weight=1.0, ema_decay=0.9,
          mesh=mesh)

    mesh8 = snjax.gan.data_mesh()
    runs = {'single': (make(None), None), 'mesh8': (make(mesh8), mesh8)}
    out = {}
    for name, (trainer, mesh) in runs.items():
      state = trainer.init(jax.random.key(2), gp, cp)
      losses = []
      for i in range(3):
        real = jax.random.normal(jax.random.key(10 + i), (n_critic, batch, 2)) + 1.0
        if mesh is not None:
          real = snjax.gan.shard_batch(real, mesh, batch_axis=1)
          assert not real.sharding.is_fully_replicated and len(real.sharding.device_set) == 8
        state, m = trainer.train_step(state, real)
        losses.append([float(m['critic_loss']), float(m['generator_loss']), float(m['sigma_product'])])
      out[name] = {'losses': losses, 'leaves': [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(state)]}
      if mesh is not None:
        leaves = jax.tree_util.tree_leaves(state)
        out['replicated'] = all(x.sharding.is_fully_replicated and len(x.sharding.device_set) == 8 for x in leaves)
        # Every device's copy of every u vector (and of every other leaf) is bit-identical.
        out['identical_replicas'] = all(
            all(np.array_equal(np.asarray(s.data), np.asarray(x.addressable_shards[0].data))
                for s in x.addressable_shards)
            for x in leaves)
        us = [e['u'] for e in jax.tree_util.tree_leaves(state.sn_state, is_leaf=lambda e: 'u' in e)]
        out['u_shards'] = [len(u.addressable_shards) for u in us]
        # A checkpoint of the replicated state restores replicated, equal, and training goes on from it.
        import tempfile
        from snjax.gan.checkpoint import Checkpointer
        with Checkpointer(tempfile.mkdtemp(), save_interval_steps=1) as ckpt:
          ckpt.save(state)
          restored = ckpt.restore(trainer.init(jax.random.key(99), gp, cp))
        out['restored_replicated'] = all(
            x.sharding.is_fully_replicated and len(x.sharding.device_set) == 8
            for x in jax.tree_util.tree_leaves(restored))
        out['restored_equal'] = all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(jax.tree_util.tree_leaves(restored), leaves))
        try:
          trainer.critic_step(state, jnp.zeros((12, 2)))
        except ValueError as e:
          out['indivisible'] = str(e)
        try:
          snjax.gan.shard_batch(np.zeros((12, 2), np.float32), mesh)
        except ValueError as e:
          out['shard_error'] = str(e)
    # Inside jit: the constraints lay out what the step computes (the batch split, the state copied).
    from snjax.gan._sharding import constrain_replicated, constrain_to_batch
    x = jnp.arange(16 * 2, dtype=jnp.float32).reshape(16, 2)
    split = jax.jit(lambda v: constrain_to_batch(v * 2, mesh8))(x)
    copied = jax.jit(lambda v: constrain_replicated({'a': v * 2}, mesh8))(x)['a']
    out['constrained_split'] = [len(split.addressable_shards), list(split.addressable_shards[0].data.shape)]
    out['constrained_replicated'] = copied.sharding.is_fully_replicated and len(copied.sharding.device_set) == 8
    out['constrained_values'] = bool(np.array_equal(np.asarray(split), 2 * np.asarray(x))) and bool(
        np.array_equal(np.asarray(copied), 2 * np.asarray(x)))
    print('RESULT' + json.dumps(out))
    """
)


def _run_on_eight_devices():
  proc = subprocess.run(
    [sys.executable, '-c', _SCRIPT], capture_output=True, text=True, env=_processes.env(8), timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT')][-1]
  return json.loads(line[len('RESULT') :])


def test_eight_devices_match_one_device_and_replicas_stay_identical():
  """One test (one subprocess, however pytest-xdist splits the tests): every property of the 8-device run."""
  result = _run_on_eight_devices()
  # The same losses and final state as on one device, up to the order of floating-point sums.
  single = result['single']
  np.testing.assert_allclose(result['mesh8']['losses'], single['losses'], rtol=1e-5, atol=1e-6)
  for a, b in zip(result['mesh8']['leaves'], single['leaves'], strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # Params, opt states, RNG and every u vector: replicated on the 8 devices, bit-identical copies.
  assert result['replicated']
  assert result['identical_replicas']
  assert result['u_shards'] and all(n == 8 for n in result['u_shards'])
  # A checkpoint of the replicated state restores replicated and equal.
  assert result['restored_replicated'] and result['restored_equal']
  # Batches the mesh cannot split are clear errors.
  assert 'batch size 12 is not divisible by the 8 devices' in result['indivisible']
  assert 'the batch size must be a multiple of the device count' in result['shard_error']
  # In-jit constraints: a (16, 2) batch split into eight (2, 2) shards; a replicated result on all 8 devices.
  assert result['constrained_split'] == [8, [2, 2]]
  assert result['constrained_replicated'] and result['constrained_values']


def test_helpers_on_this_process_devices():
  mesh = snjax.gan.data_mesh()
  assert mesh.axis_names == ('data',) and mesh.devices.size == len(jax.devices())
  x = np.arange(4 * len(jax.devices()) * 3, dtype=np.float32).reshape(-1, 3)
  sharded = snjax.gan.shard_batch(x, mesh)
  np.testing.assert_array_equal(np.asarray(sharded), x)
  tree = snjax.gan.replicate({'a': np.ones(3)}, mesh)
  assert tree['a'].sharding.is_fully_replicated
  with pytest.raises(ValueError, match="axis_name 'batch' is not an axis of the mesh"):
    snjax.gan.shard_batch(x, mesh, axis_name='batch')


def test_constraints_are_the_identity_without_a_mesh_and_keep_values_with_one():
  x = np.arange(4 * len(jax.devices()) * 3, dtype=np.float32).reshape(-1, 3)
  tree = {'a': x, 'b': [x[:1]]}
  assert constrain_to_batch(x, None) is x and constrain_replicated(tree, None) is tree
  mesh = snjax.gan.data_mesh()
  split = jax.jit(lambda v: constrain_to_batch(v + 1, mesh))(x)
  copied = jax.jit(lambda t: constrain_replicated(t, mesh))(tree)
  np.testing.assert_array_equal(np.asarray(split), x + 1)
  assert split.sharding.is_equivalent_to(snjax.gan.batch_sharding(mesh), x.ndim)
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(copied))
  with pytest.raises(ValueError, match='batch'):  # the axis name reaches the constraint (the mesh has none such)
    jax.jit(lambda v: constrain_to_batch(v, mesh, 'batch'))(x)
