"""The compiled fast path: rmap and owner-tracking updates over folio state in numpy arrays.

The pure-Python model (:mod:`foliosim.owner`, :mod:`foliosim.rmap`,
:mod:`foliosim.system`) defines correctness; this package re-implements the
same updates as numba kernels over arrays and is differentially tested against
it, operation by operation, for every kernel configuration. Rejection messages
are not re-implemented: when the fast path detects an operation the model
rejects, it rebuilds the relevant part of the state as model objects and lets
the model produce the error.

numba is optional (``pip install 'foliosim[fast]'``): without it the modules
still import and run the same kernels as plain Python (correct, but slower
than the reference), and :data:`HAVE_NUMBA` is False.
"""

from foliosim.fast._jit import HAVE_NUMBA, NUMBA_MISSING

__all__ = ["HAVE_NUMBA", "NUMBA_MISSING"]
