"""Launching real JAX processes from tests: one run of several processes on 127.0.0.1, bounded in time.

Each process gets ``--xla_force_host_platform_device_count=<n>`` added to the session's ``XLA_FLAGS`` (set
before jax is imported, so its own n CPU devices), the repository on ``PYTHONPATH``, and the environment of the
test session: its XLA compile mode and its persistent compilation cache (tests/conftest.py), so the same programs
compile once across launches (a cached executable is the same binary, so runs compare bit for bit all the same,
and an entry JAX cannot read back, e.g. one being written by another process, is compiled again with a warning).
Cross-process collectives on CPU go through gloo, JAX's default.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LIMIT = 420
"""Seconds any launched process may take before the test kills it and fails (a safety net on a loaded machine,
not a measure of speed; a healthy launch takes seconds)."""


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now (the coordinator binds it a moment later)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def device_flags(devices: int) -> str:
  """The session's ``XLA_FLAGS`` (tests/conftest.py) with ``devices`` simulated CPU devices."""
  return ' '.join(
    f for f in (os.environ.get('XLA_FLAGS', ''), f'--xla_force_host_platform_device_count={devices}') if f
  )


def env(devices: int, **extra: str) -> dict[str, str]:
  """The environment of a launched JAX process with ``devices`` CPU devices."""
  out = dict(os.environ)
  out.update(
    PYTHONPATH=REPO + os.pathsep + out.get('PYTHONPATH', ''),
    XLA_FLAGS=device_flags(devices),
    JAX_PLATFORMS='cpu',
    PYTHONUNBUFFERED='1',
  )
  out.update(extra)
  return out


class Finished(NamedTuple):
  """A launched process that ended: its exit status and its output."""

  returncode: int
  stdout: str
  stderr: str


class Launch:
  """Processes started together (``commands[i]`` with ``environments[i]``), stdout/stderr to files in ``folder``.

  Use as a context manager: on leaving, any process still running is killed (a failed test leaves nothing).
  """

  def __init__(self, commands: Sequence[Sequence[str]], environments: Sequence[dict[str, str]], folder: str):
    self.folder = folder
    self.procs = []
    self._files = []
    for i, (command, environment) in enumerate(zip(commands, environments, strict=True)):
      out = open(os.path.join(folder, f'process{i}.out'), 'w+')  # noqa: SIM115 (closed in __exit__)
      err = open(os.path.join(folder, f'process{i}.err'), 'w+')  # noqa: SIM115
      self._files.append((out, err))
      self.procs.append(subprocess.Popen(list(command), env=environment, cwd=REPO, stdout=out, stderr=err))

  def __enter__(self) -> Launch:
    return self

  def __exit__(self, *exc) -> None:
    for proc in self.procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    for out, err in self._files:
      out.close()
      err.close()

  def wait_for(self, condition: Callable[[], bool], what: str, limit: float = LIMIT) -> None:
    """Polls ``condition`` until it holds; fails naming ``what`` if a process ends first or ``limit`` passes."""
    deadline = time.monotonic() + limit
    while not condition():
      ended = [i for i, p in enumerate(self.procs) if p.poll() is not None]
      if ended:
        raise AssertionError(f'process(es) {ended} ended before {what}:\n{self.report()}')
      if time.monotonic() > deadline:
        raise AssertionError(f'{what} did not happen within {limit} s:\n{self.report()}')
      time.sleep(0.05)

  def signal(self, i: int, sig: int = signal.SIGTERM) -> None:
    """Sends ``sig`` to process ``i``."""
    self.procs[i].send_signal(sig)

  def finish(self, limit: float = LIMIT) -> list[Finished]:
    """Waits for every process to end (at most ``limit`` seconds each, then kills it and fails)."""
    for i, proc in enumerate(self.procs):
      try:
        proc.wait(timeout=limit)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f'process {i} did not end within {limit} s:\n{self.report()}') from None
    return [self.output(i) for i in range(len(self.procs))]

  def output(self, i: int) -> Finished:
    """What process ``i`` wrote so far, and its exit status (``None`` while it runs)."""
    out, err = self._files[i]
    for f in (out, err):
      if not f.closed:  # open while the launch lasts; a failure message may read them after it
        f.flush()
    with open(out.name) as f, open(err.name) as g:
      return Finished(self.procs[i].poll(), f.read(), g.read())

  def report(self, tail: int = 3000) -> str:
    """The end of every process's stderr, for a failure message."""
    parts = []
    for i in range(len(self.procs)):
      done = self.output(i)
      parts.append(f'--- process {i} (status {done.returncode}) stderr:\n{done.stderr[-tail:]}')
    return '\n'.join(parts)


def python(*args: str) -> list[str]:
  """The command running this Python with ``args``."""
  return [sys.executable, *args]
