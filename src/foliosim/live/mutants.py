"""Deliberately wrong simulators, to show that ``foliosim live`` catches a simulator that is wrong.

Each mutant changes one decision of the simulated kernel when the machine is built; the live kernel is, of
course, unchanged, so a correct comparison must report a divergence at the first line where the decision
matters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from foliosim.check.mutants import sub_never_clears
from foliosim.owner import OwnerTracking, folio_add_return_large_mapcount

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine


def _never_clear_shared(m: Machine) -> None:
    """The owner tracking never clears the shared bit once set (the checker's never-clear-shared mutant)."""
    m.rmap.owner = OwnerTracking("never-clear-shared", folio_add_return_large_mapcount, sub_never_clears)


def _never_reuse_large(m: Machine) -> None:
    """Every large folio is "maybe mapped shared": a PTE-mapped large folio is never reused on a write fault."""
    m.sharing = lambda _folio, _consumer: True


LIVE_MUTANTS: dict[str, Callable[[Machine], None]] = {
    "never-clear-shared": _never_clear_shared,
    "never-reuse-large": _never_reuse_large,
}
