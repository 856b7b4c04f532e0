"""Timing helpers for the benchmarks: interleaved rounds, medians, bandwidth.

Benchmarks are scripts, not tests. On a shared machine a single timing is
noise; every comparison here runs its variants round-robin (each round runs
every variant back to back, in a rotated order) and reports medians, and
overheads are the median of the per-round ratios (paired, so a slow minute
affects both sides of a ratio alike).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np


def block(tree):
  """Waits for every JAX array in ``tree`` (a no-op for other leaves)."""
  for leaf in jax.tree_util.tree_leaves(tree):
    if hasattr(leaf, 'block_until_ready'):
      leaf.block_until_ready()
  return tree


def interleaved(
  fns: Mapping[str, Callable[[], object]], *, rounds: int, inner: int, warmup: int = 2, cpu: dict | None = None
) -> dict[str, list[float]]:
  """Times ``fns`` round-robin and returns seconds per call, one entry per round.

  Args:
    fns: name -> a callable that runs one step to completion (blocking).
    rounds: how many rounds; each round calls every function ``inner`` times.
    inner: calls per function per round (its time is the mean over them).
    warmup: untimed calls per function before the first round.
    cpu: if a dict, it receives name -> per-round CPU time of this process
      (all its threads) per call: on a machine shared with other jobs, the
      work done, far less noisy than wall time (meaningless on a GPU).

  Returns:
    name -> list of ``rounds`` per-call wall times in seconds.
  """
  names = list(fns)
  for name in names:
    for _ in range(warmup):
      fns[name]()
  times: dict[str, list[float]] = {n: [] for n in names}
  if cpu is not None:
    cpu.update({n: [] for n in names})
  for r in range(rounds):
    order = names[r % len(names) :] + names[: r % len(names)]
    for name in order:
      fn = fns[name]
      c0 = time.process_time()
      t0 = time.perf_counter()
      for _ in range(inner):
        fn()
      times[name].append((time.perf_counter() - t0) / inner)
      if cpu is not None:
        cpu[name].append((time.process_time() - c0) / inner)
  return times


def median(xs) -> float:
  return float(statistics.median(xs))


def paired_overhead(with_sn: list[float], plain: list[float]) -> float:
  """Median over rounds of ``t_sn / t_plain - 1`` (a fraction)."""
  return median([a / b - 1.0 for a, b in zip(with_sn, plain, strict=True)])


def timed_min(fn: Callable[[], object], repeats: int) -> float:
  """The smallest wall time of ``repeats`` calls (for compile times)."""
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def read_bandwidth(n_bytes: int, *, rounds: int = 30) -> tuple[float, float]:
  """Measures memory bandwidth on a float32 buffer of about ``n_bytes``.

  Returns:
    ``(read_bytes_per_s, copy_bytes_per_s)``: a full reduction (one read pass)
    and ``x + 1`` (one read and one write pass, counted as 2 x bytes), medians.
  """
  n = max(n_bytes // 4, 1024)
  x = jax.device_put(jnp.asarray(np.random.default_rng(0).standard_normal(n), jnp.float32))
  reduce_fn = jax.jit(jnp.sum)
  copy_fn = jax.jit(lambda a: a + 1.0)
  block(reduce_fn(x))
  block(copy_fn(x))
  times = interleaved(
    {'read': lambda: block(reduce_fn(x)), 'copy': lambda: block(copy_fn(x))}, rounds=rounds, inner=5, warmup=2
  )
  return 4 * n / median(times['read']), 2 * 4 * n / median(times['copy'])
