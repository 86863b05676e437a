"""``kernel``: Linux v6.15's two-slot MM owner tracking, i.e. the core model itself.

Every event is applied through :class:`foliosim.system.RmapSystem` (so
foliosim.rmap and foliosim.owner on real :class:`~foliosim.folio.Folio`
objects), and the answers are ``folio_maybe_mapped_shared()`` (include/linux/mm.h)
and the slots of ``_mm_ids`` (include/linux/rmap.h). Nothing here restates a rule.
"""

from __future__ import annotations

from foliosim.folio import folio_likely_mapped_shared, folio_mapcount, folio_maybe_mapped_shared, folio_mm_id
from foliosim.kconfig import KernelConfig
from foliosim.owner import OwnerEvent
from foliosim.rmap import RmapResult
from foliosim.schemes.base import Design, UpdateCost
from foliosim.schemes.cost import NO_CHARGE, Charge, meta_line
from foliosim.system import MAP_OPS, Op, RmapSystem


def slot_metadata_bytes(config: KernelConfig, slots: int) -> int:
    """Bytes of K slots laid out as v6.15 lays two: ids packed in words, one count per slot.

    Each id takes half an ``unsigned long`` (MM_ID_BITS plus one flag bit); the
    per-MM mapcounts are ``int`` (64-bit) or ``short`` (32-bit). K=2 gives
    ``_mm_ids`` + ``_mm_id_mapcount[2]``: 16 bytes on 64-bit, 8 on 32-bit.
    """
    half = config.word_bits // 2
    words = -(-slots * half // config.word_bits)
    return words * (config.word_bits // 8) + slots * (config.mm_id_mapcount_type.bits // 8)


class KernelDesign(Design):
    """The v6.15 design: the core model's folios, unchanged."""

    name = "kernel"
    answers_per_folio = True

    def __init__(self, config: KernelConfig) -> None:
        super().__init__(config)
        self._meta = meta_line(config)
        lines = frozenset((self._meta,))  # _large_mapcount, _mm_id_mapcount, _mm_ids: page[1]
        # folio_set_large_mapcount(): unpublished folio, plain stores, no lock
        self._set_charge = Charge(lines=lines)
        # folio_add/sub_return_large_mapcount(): bit_spin_lock() (test_and_set_bit_lock, one atomic RMW),
        # atomic_read + atomic_set of _large_mapcount and plain stores under it, __bit_spin_unlock() (a store).
        self._locked_charge = Charge(atomics=1, locks=1, lines=lines)
        self.system = RmapSystem(config)
        self._slot_bytes = slot_metadata_bytes(config, 2)
        self._owner_event: OwnerEvent | None = None
        #: When recording (:meth:`record`): per op applied, the op and, after a map/dup/unmap of a large folio,
        #: ``folio_likely_mapped_shared()`` of it (else None), for a LegacyDesign on the same ops and config.
        self.tape: list[tuple[Op, bool | None]] | None = None

    def record(self) -> list[tuple[Op, bool | None]]:
        """Start recording :attr:`tape` (empty); returns it."""
        self.tape = []
        return self.tape

    def apply(self, op: Op) -> UpdateCost:
        result = self.system.apply(op)  # validates; Rejected leaves both sides unchanged
        self._owner_event = result.owner if isinstance(result, RmapResult) else None
        if self.tape is not None:
            likely = None
            if op.op in MAP_OPS:
                folio = self.system.folio(op.folio)  # type: ignore[arg-type]
                if folio.order:
                    likely = folio_likely_mapped_shared(folio)
            self.tape.append((op, likely))
        return super().apply(op)

    def _update(self, op: Op, folio: str, mm: str, order: int, diff: int) -> Charge:
        if order == 0:
            return NO_CHARGE
        if self._owner_event is OwnerEvent.SET:
            return self._set_charge
        return self._locked_charge

    def maybe_shared(self, folio: str) -> bool:
        return folio_maybe_mapped_shared(self.system.folio(folio))

    def _maybe_shared_large(self, folio: str) -> bool:
        return folio_maybe_mapped_shared(self.system.folio(folio))

    def _owner_large(self, folio: str) -> str | None:
        f = self.system.folio(folio)
        if folio_maybe_mapped_shared(f):
            return None
        total = folio_mapcount(f)
        for idx in (0, 1):
            mm_id = folio_mm_id(f, idx)
            if mm_id and f.mm_id_mapcount[idx] + 1 == total:
                return self.system.mm_name_of_id(mm_id)
        return None

    def metadata_bytes(self, folio: str) -> int:
        return self._slot_bytes if self.orders[folio] else 0
