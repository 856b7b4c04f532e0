"""The GAN train step on 2 real processes x 4 CPU devices (JAX's multi-controller runtime) against 1 x 8.

One launch of three processes: two joined by ``jax.distributed.initialize`` on 127.0.0.1 (gloo collectives,
one 8-device mesh), each feeding its own half of every batch through ``snjax.gan.shard_batch``, and one process
with 8 devices fed the whole batch. Each writes what it saw (every local device's copy of every spectral-norm
leaf at every step, the losses, the final state) to a file the test compares.
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax

import snjax
from snjax.gan.checkpoint import Checkpointer
from tests import _processes
from tests.gan._gan_testing import DATA, LATENT, N_CRITIC, d_apply, g_apply, params

STEPS, BATCH = 4, 16

_SCRIPT = textwrap.dedent(
  """
    import os, sys, warnings
    pid, n, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    import jax
    if n > 1:
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # newer JAX's default; none on jax 0.4.33
      jax.distributed.initialize(f'127.0.0.1:{port}', n, pid)
    import numpy as np, optax, snjax
    from jax.experimental import multihost_utils
    from snjax.gan.checkpoint import Checkpointer, UnreadableCheckpointWarning
    from tests._checkpoints import damage
    from tests.gan._gan_testing import DATA, LATENT, N_CRITIC, d_apply, g_apply, params

    STEPS, BATCH = int(sys.argv[5]), int(sys.argv[6])
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (n, 8, 8 // n)
    mesh = snjax.gan.data_mesh()
    trainer = snjax.gan.gan_trainer(g_apply, d_apply, optax.adam(1e-2), optax.adam(1e-2), latent_shape=LATENT,
                                    n_critic=N_CRITIC, ema_decay=0.9, mesh=mesh)
    state = trainer.init(jax.random.key(2), *params(0))
    rows = slice(pid * BATCH // n, (pid + 1) * BATCH // n)  # this process's part of every global batch
    out = {}
    for t in range(STEPS):
      real = np.asarray(jax.random.normal(jax.random.key(100 + t), (N_CRITIC, BATCH, DATA))) + 2.0
      state, m = trainer.train_step(state, snjax.gan.shard_batch(real[:, rows], mesh, batch_axis=1))
      for path, leaf in jax.tree_util.tree_flatten_with_path(state.sn_state)[0]:
        # Every copy this process holds, one per local device.
        out[f'sn{t}{jax.tree_util.keystr(path)}'] = np.stack([np.asarray(s.data) for s in leaf.addressable_shards])
      out[f'losses{t}'] = np.array([m['critic_loss'], m['generator_loss'], m['sigma_product']])
    for i, leaf in enumerate(jax.tree_util.tree_leaves(state)):
      assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
      out[f'final{i}'] = np.asarray(leaf.addressable_shards[0].data)
    if n > 1:
      # Checkpoints written by both processes together, then the newest damaged: both skip it, restore the other.
      ckpt_dir = os.path.join(folder, 'checkpoints')
      with Checkpointer(ckpt_dir, save_interval_steps=1) as ckpt:
        ckpt.save(state, step=STEPS - 1)
        ckpt.save(state, step=STEPS)
      multihost_utils.sync_global_devices('saved')
      if pid == 0:
        damage(os.path.join(ckpt_dir, str(STEPS)), 'truncate')
      multihost_utils.sync_global_devices('damaged')
      with Checkpointer(ckpt_dir, save_interval_steps=1) as ckpt, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        restored = ckpt.restore(state)
        out['restored_steps'] = np.array(ckpt.all_steps())
      out['damage_notes'] = np.array([str(w.message) for w in caught if w.category is UnreadableCheckpointWarning])
      out['restored_equal'] = np.array(all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                                           zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state))))
      # Processes that hold different values cannot be replicated; a local batch the local devices cannot split.
      for name, call in (('different', lambda: snjax.gan.replicate({'w': np.full(3, float(pid))}, mesh)),
                         ('indivisible', lambda: snjax.gan.shard_batch(np.zeros((6, 2), np.float32), mesh))):
        try:
          call()
          out[name] = np.array('no error')
        except ValueError as e:
          out[name] = np.array(str(e))
    np.savez(os.path.join(folder, f'process{pid}_of_{n}.npz'), **out)
    """
)


def _launch(tmp_path):
  port = _processes.free_port()
  commands, environments = [], []
  for pid, n in ((0, 2), (1, 2), (0, 1)):
    commands.append(
      _processes.python('-c', _SCRIPT, str(pid), str(n), str(port), str(tmp_path), str(STEPS), str(BATCH))
    )
    environments.append(_processes.env(8 // n))
  with _processes.Launch(commands, environments, str(tmp_path)) as launch:
    done = launch.finish()
    assert all(d.returncode == 0 for d in done), launch.report()
  return [dict(np.load(tmp_path / name)) for name in ('process0_of_2.npz', 'process1_of_2.npz', 'process0_of_1.npz')]


def test_two_processes_train_like_one_and_keep_every_copy_identical(tmp_path):
  """One launch; every property of the 2-process run against the 1-process one."""
  p0, p1, single = _launch(tmp_path)
  sn_keys = sorted(k for k in p0 if k.startswith('sn'))
  assert len(sn_keys) == STEPS * 4  # two normalized kernels, each with u and sigma
  for key in sn_keys:
    # After every step, every u vector and sigma is bit-identical on the 4 devices of each process and across the
    # two processes: the state is replicated, not merely close.
    copies = np.concatenate([p0[key], p1[key]])
    assert copies.shape[0] == 8
    assert all(np.array_equal(c, copies[0]) for c in copies), key
  for key in (k for k in p0 if k.startswith(('losses', 'final'))):
    np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)
  # Against one process with the same 8 devices: the same computation but for the order of the sums across
  # devices (the gradient all-reduce and the batch means: XLA's in-process reduction against gloo's across two
  # processes). Each sum of 8 float32 partials differs by at most ~8 ulp (8 * 6e-8 relative); through 4 steps of
  # Adam (whose update m / sqrt(v) passes relative gradient errors on as they are) that stays below 1e-5 relative,
  # or 1e-6 absolute near zero.
  for key in sorted(k for k in single if k.startswith(('sn', 'losses', 'final'))):
    mine, theirs = (p0[key][0], single[key][0]) if key.startswith('sn') else (p0[key], single[key])
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6, err_msg=key)
  # Checkpoints: written by both processes, newest damaged -> both skip it together and restore the previous one.
  assert p0['restored_steps'].tolist() == p1['restored_steps'].tolist() == [STEPS - 1]
  for notes in (p0['damage_notes'], p1['damage_notes']):
    assert len(notes) == 1 and f'checkpoint step {STEPS} in ' in str(notes[0])
    assert f'restored step {STEPS - 1} instead' in str(notes[0])
  assert p0['restored_equal'] and p1['restored_equal']
  # Bad input across processes: clear errors on every process.
  for p in (p0, p1):
    assert 'process(es) [1] hold a different tree from process 0' in str(p['different'])
    assert 'cannot be split along axis 0 over the 4 devices' in str(p['indivisible'])
    assert 'in this process' in str(p['indivisible'])
  # The 2-process checkpoint (of step STEPS - 1, the same state) restores in this one-device process.
  trainer = snjax.gan.gan_trainer(
    g_apply, d_apply, optax.adam(1e-2), optax.adam(1e-2), latent_shape=LATENT, n_critic=N_CRITIC, ema_decay=0.9
  )
  template = trainer.init(jax.random.key(7), *params(0))
  with Checkpointer(tmp_path / 'checkpoints', save_interval_steps=1) as ckpt:
    restored = ckpt.restore(template)
  leaves = jax.tree_util.tree_leaves(restored)
  assert len(leaves) == len([k for k in p0 if k.startswith('final')])
  for i, leaf in enumerate(leaves):
    np.testing.assert_array_equal(np.asarray(leaf), p0[f'final{i}'])
  # ... and trains on from there in one process.
  state, _ = trainer.train_step(restored, jnp.ones((N_CRITIC, BATCH, DATA)))
  assert int(state.step) == STEPS + 1
