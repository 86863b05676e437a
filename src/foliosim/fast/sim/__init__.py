"""The compiled process simulator (issue 13): :class:`~foliosim.fast.sim.engine.FastMachine`.

- :mod:`.engine`: the machine (tasks, MMs, VMAs in Python; page tables, folios and contents in arrays);
- :mod:`.kern`: the numba kernels (faults, copy-on-write, fork's page-table copy, zap, PMD split), calling the
  shared rmap/owner core :mod:`foliosim.fast.kernels`;
- :mod:`.scenario`: scenario files on the fast engine; :mod:`.timeline`: canonical timelines of both engines;
- :mod:`.oracle`: the isolation oracle and folio invariants over arrays.
"""

from foliosim.fast.sim.engine import FastMachine, Unsupported

__all__ = ["FastMachine", "Unsupported"]
