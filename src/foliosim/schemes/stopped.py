"""``stopped``: "0, 1, 2, stopped" -- track up to two MMs exactly, then give up.

Proposed in the review of the v6.15 series: while at most two MMs map a
large folio, two (MM, count) slots are exact; when a third MM maps it at the
same time, tracking stops and the folio reads "maybe shared" until it is
freed. After it stopped, updates only touch the total mapcount (one atomic,
no lock). Before, an update costs what ``kernel``'s does: the bit spinlock in page[1].
"""

from __future__ import annotations

from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import Design
from foliosim.schemes.cost import NO_CHARGE, Charge, meta_line
from foliosim.schemes.kernel import slot_metadata_bytes
from foliosim.system import Op


class StoppedDesign(Design):
    """Two exact slots, then a sticky "stopped" state."""

    name = "stopped"
    answers_per_folio = True

    def __init__(self, config: KernelConfig) -> None:
        super().__init__(config)
        self._meta = meta_line(config)
        lines = frozenset((self._meta,))
        self._stopped_charge = Charge(atomics=1, lines=lines)  # a lockless test of the stopped bit, then atomic_add
        self._new_charge = Charge(lines=lines)
        self._locked_charge = Charge(atomics=1, locks=1, lines=lines)
        self.slots: dict[str, dict[str, int]] = {}
        self._slot_bytes = slot_metadata_bytes(config, 2)
        self.stopped: set[str] = set()

    def _new(self, folio: str, order: int) -> None:
        if order:
            self.slots[folio] = {}

    def _free(self, folio: str) -> None:
        self.slots.pop(folio, None)
        self.stopped.discard(folio)

    def _update(self, op: Op, folio: str, mm: str, order: int, diff: int) -> Charge:
        if order == 0:
            return NO_CHARGE
        if folio in self.stopped:
            return self._stopped_charge
        slots = self.slots[folio]
        if op.op == "unmap":
            left = slots[mm] - diff
            if left:
                slots[mm] = left
            else:
                del slots[mm]
        elif mm in slots:
            slots[mm] += diff
        elif len(slots) < 2:
            slots[mm] = diff
        else:
            self.stopped.add(folio)
            slots.clear()
        return self._new_charge if op.op == "map_new_anon" else self._locked_charge

    def _maybe_shared_large(self, folio: str) -> bool:
        return folio in self.stopped or len(self.slots[folio]) > 1

    def _owner_large(self, folio: str) -> str | None:
        slots = self.slots[folio]
        if folio in self.stopped or len(slots) != 1:
            return None
        return next(iter(slots))

    def metadata_bytes(self, folio: str) -> int:
        return self._slot_bytes if self.orders[folio] else 0
