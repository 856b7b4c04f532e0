"""Tolerances of float32 comparisons between two programs that compute the same value.

Jitted and eager code, a module and the functional core, one device and eight: XLA compiles each program on its
own, and fuses, vectorizes and orders its reductions as it sees fit for the CPU at hand, so the same float32
expression may round differently in each. A sum or dot product of ``n`` terms is within ``gamma_n sum |x_i|`` of
the exact value in any order (``gamma_n = n u / (1 - n u)``, ``u = 2^-24``; Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., section 3.1), so two orders differ by at most about ``n eps sum |x_i|`` with
``eps = 2^-23``. The values compared with :data:`TWO_PROGRAMS` (sigmas, losses, layer outputs, Adam updates of the
tests' small models) are reductions of at most 128 terms of one sign, or of a few such reductions, whence
``128 eps``: far below any real disagreement (a wrong u, a missing sigma, a stale state), and independent of the
BLAS, the thread count and the CPU's vector width.
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
"""The float32 machine epsilon, 2^-23."""

TWO_PROGRAMS = 128 * EPS32
"""Relative tolerance for a float32 value computed by two programs: two summation orders of <= 128 terms."""
