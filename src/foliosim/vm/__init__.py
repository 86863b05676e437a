"""The process-level simulator: tasks, MMs, VMAs, page tables, faults, fork, CoW, pins.

Every rmap change goes through :class:`foliosim.system.RmapSystem` and is
recorded as a trace :class:`foliosim.system.Op`; see docs/simulator.md.
"""

from foliosim.vm.machine import Machine, MachineOptions

__all__ = ["Machine", "MachineOptions"]
