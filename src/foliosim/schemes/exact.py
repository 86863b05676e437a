"""``exact``: a count per (folio, MM); the ground truth a design could keep at a price.

Shared means two or more MMs have a nonzero count. The metadata is a table of
(MM id, mapcount) pairs that grows with the number of MMs mapping the folio,
behind a pointer, updated under a per-folio lock. Costs (docs/cost-model.md): the
lock acquire (one atomic, one lock; assumed to live in page[1] beside the total
mapcount, which is then a plain store under it) and the table's own cache line.
"""

from __future__ import annotations

from foliosim.errors import Rejected
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import Design
from foliosim.schemes.cost import NO_CHARGE, OUTSIDE_MEMMAP, Charge, meta_line
from foliosim.system import Op


class ExactDesign(Design):
    """Per-MM mapping counts for every folio."""

    name = "exact"
    answers_per_folio = True

    def __init__(self, config: KernelConfig) -> None:
        super().__init__(config)
        self._meta = meta_line(config)
        lines = frozenset((self._meta, OUTSIDE_MEMMAP))
        self._new_charge = Charge(lines=lines)  # an unpublished folio: plain stores, no lock
        self._locked_charge = Charge(atomics=1, locks=1, lines=lines)
        self.counts: dict[str, dict[str, int]] = {}

    def _new(self, folio: str, order: int) -> None:
        self.counts[folio] = {}

    def _free(self, folio: str) -> None:
        self.counts.pop(folio, None)

    def _update(self, op: Op, folio: str, mm: str, order: int, diff: int) -> Charge:
        per_mm = self.counts[folio]
        if op.op == "unmap":
            left = per_mm.get(mm, 0) - diff
            if left < 0:
                raise Rejected(f"exact: {mm!r} unmaps {diff} mappings of {folio!r} but has {per_mm.get(mm, 0)}")
            if left:
                per_mm[mm] = left
            else:
                del per_mm[mm]
        else:
            per_mm[mm] = per_mm.get(mm, 0) + diff
        if order == 0:
            return NO_CHARGE
        if op.op == "map_new_anon":
            return self._new_charge
        return self._locked_charge

    def mms(self, folio: str) -> dict[str, int]:
        """The MMs that map ``folio`` and how many page-table entries each has."""
        return self.counts[folio]

    def _maybe_shared_large(self, folio: str) -> bool:
        return len(self.counts[folio]) > 1

    def _owner_large(self, folio: str) -> str | None:
        per_mm = self.counts[folio]
        return next(iter(per_mm)) if len(per_mm) == 1 else None

    def metadata_bytes(self, folio: str) -> int:
        if not self.orders[folio]:
            return 0
        entry = self.config.word_bits // 16 + self.config.mm_id_mapcount_type.bits // 8  # id + count
        return self.config.word_bits // 8 + entry * len(self.counts[folio])  # pointer + entries
