"""Counts in the optimized HLO of a jitted function: what XLA compiles and runs, per layer.

On XLA:CPU every top-level instruction of a non-fused computation (the entry,
loop bodies and conditions) that does work is a kernel: a ``fusion`` or a
single op (a ``dot``, a ``convolution``, a ``copy``...). Compile time grows
with the number of kernels and, more, with the number of *distinct* fusion
bodies (each is code-generated once; identical ones are de-duplicated), so
these counts explain a compile time and show where a per-layer cost comes
from. Read from ``fn.lower(*args).compile().as_text()``.
"""

from __future__ import annotations

import collections
import re
from typing import Any

# Instructions that do no work at run time (bookkeeping, aliases, control).
_FREE = frozenset(
  {'parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast', 'after-all', 'partition-id', 'replica-id'}
)
_COMPUTATION = re.compile(r'^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.+?)\s+([\w\-]+)\((.*)$')
_NAME = re.compile(r'%?[\w\-]+(?:\.\d+)+\b')


def _computations(text: str) -> dict[str, list[str]]:
  """``{name: body lines}`` of every computation in an HLO module's text (the entry under ``'ENTRY'``)."""
  comps: dict[str, list[str]] = {}
  name = None
  for line in text.splitlines():
    head = _COMPUTATION.match(line)
    if head and not line[0].isspace():
      name = 'ENTRY' if head.group(1) else head.group(2)
      comps[name] = []
    elif line.strip() == '}':
      name = None
    elif name is not None and line.strip():
      comps[name].append(line)
  return comps


def _opcode(line: str) -> str | None:
  m = _INSTRUCTION.match(line)
  return m.group(2) if m else None


def counts(hlo_text: str, layers: int | None = None) -> dict[str, Any]:
  """Kernels, fusions and distinct fusion bodies of a compiled HLO module.

  Args:
    hlo_text: ``compiled.as_text()``.
    layers: if given, ``kernels_per_layer`` is ``kernels / layers``.

  Returns:
    ``{'kernels', 'fusions', 'distinct_fusions', 'ops': {opcode: count},
    'kernels_per_layer'}``: kernels are the working instructions of the entry,
    loop and called (non-fused) computations; fusions those of them that are
    fusions; distinct fusions the number of different fused bodies (names
    stripped), which is what XLA code-generates.
  """
  comps = _computations(hlo_text)
  # Fusion bodies are called through ``calls=``, reducers through ``to_apply=``: neither runs on its own.
  fused = set(re.findall(r'calls=%?([\w.\-]+)', hlo_text)) & set(comps)
  reducers = set(re.findall(r'to_apply=%?([\w.\-]+)', hlo_text)) - fused
  top = [n for n in comps if n not in fused | reducers]
  ops: collections.Counter = collections.Counter()
  for n in top:
    for line in comps[n]:
      op = _opcode(line)
      if op and op not in _FREE:
        ops[op] += 1
  bodies = {'\n'.join(_NAME.sub('%x', line.split(', metadata=')[0]).strip() for line in comps[n]) for n in fused}
  kernels = sum(ops.values())
  out = dict(kernels=kernels, fusions=ops.get('fusion', 0), distinct_fusions=len(bodies), ops=dict(ops))
  if layers:
    out['kernels_per_layer'] = kernels / layers
  return out


def compiled_counts(fn, *args, layers: int | None = None) -> dict[str, Any]:
  """:func:`counts` of ``jax.jit(fn)`` (or a jitted ``fn``) compiled for ``args``."""
  import jax

  jitted = fn if hasattr(fn, 'lower') else jax.jit(fn)
  return counts(jitted.lower(*args).compile().as_text(), layers)
