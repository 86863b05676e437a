"""Small helpers shared by the tests."""

from __future__ import annotations

import signal
from typing import Any

from foliosim.folio import folio_mm_id
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE
from foliosim.system import RmapSystem

__all__ = ["PMD", "PTE", "make", "sigint_default", "slots", "snapshot"]


def make(config: KernelConfig | None = None, mms: str = "ABC", folios: dict[str, int] | None = None) -> RmapSystem:
    system = RmapSystem(config or KernelConfig())
    for name in mms:
        system.mm_new(name)
    for name, order in (folios or {"F": 4}).items():
        system.folio_new(name, order)
    return system


def slots(system: RmapSystem, folio: str = "F") -> list[tuple[str | None, int]]:
    """Slots as (MM name or None, logical count)."""
    f = system.folio(folio)
    out = []
    for idx in (0, 1):
        mm_id = folio_mm_id(f, idx)
        out.append((system.mm_name_of_id(mm_id) if mm_id else None, f.mm_id_mapcount[idx] + 1))
    return out


def snapshot(system: RmapSystem) -> Any:
    """Everything observable about the system, for 'unchanged' assertions."""
    return (
        sorted((h.name, h.mm_id, h.nr_mappings) for h in system.mms.values()),
        sorted(
            (h.name, h.folio.key(), sorted((str(k), tuple(v)) for k, v in h.truth.pte.items()),
             sorted((str(k), v) for k, v in h.truth.pmd.items()))
            for h in system.folios.values()
        ),
        system.ids.peek(),
    )


def sigint_default() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT: SIGINT at its default disposition, as in a shell's
    foreground job. A suite started in the background (``nohup ... &``) has SIGINT ignored, children inherit that
    through exec, and Python then leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
