"""Kernel configuration and every constant derived from it (include/linux/mm_types.h).

Nothing else in foliosim computes a bit position, a mask or a type width: they
all come from :class:`KernelConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foliosim.cint import S16, S32, U32_LONG, U64, CType

#: Highest folio order the model accepts (the trace contract: 0..20).
MAX_ORDER = 20

#: ``ENTIRELY_MAPPED`` flag in ``_nr_pages_mapped`` (mm/internal.h).
ENTIRELY_MAPPED = 0x800000
#: ``FOLIO_PAGES_MAPPED``: the page count bits of ``_nr_pages_mapped``.
FOLIO_PAGES_MAPPED = ENTIRELY_MAPPED - 1

#: ``MM_ID_DUMMY``: the id of an empty slot; never handed out.
MM_ID_DUMMY = 0
#: ``MM_ID_MIN``: the lowest id the allocator hands out.
MM_ID_MIN = 1


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """A kernel build: word size, CONFIG_NO_PAGE_MAPCOUNT and the PMD order.

    ``word_bits`` 64 models CONFIG_64BIT (``mm_id_t`` u32 with 31 id bits,
    ``int`` per-MM mapcounts); 32 models a 32-bit kernel (``mm_id_t`` u16 with
    15 id bits, ``short`` per-MM mapcounts).
    """

    word_bits: int = 64
    no_page_mapcount: bool = False
    pmd_order: int = 9

    # Derived constants (filled in __post_init__).
    mm_id_bits: int = field(init=False)
    mm_id_mask: int = field(init=False)
    mm_id_max: int = field(init=False)
    lock_bitnum: int = field(init=False)
    shared_bitnum: int = field(init=False)
    lock_bit: int = field(init=False)
    shared_bit: int = field(init=False)
    slot_shift: int = field(init=False)
    mm_id_mapcount_type: CType = field(init=False)
    mm_ids_type: CType = field(init=False)
    mm_id_mapcount_max: int = field(init=False)

    def __post_init__(self) -> None:
        if self.word_bits not in (32, 64):
            raise ValueError(f"word_bits must be 64 or 32, not {self.word_bits!r}")
        if not 1 <= self.pmd_order <= MAX_ORDER:
            raise ValueError(f"pmd_order must be in 1..{MAX_ORDER}, not {self.pmd_order!r}")
        half = self.word_bits // 2  # one mm_id_t per half of the unsigned long
        ids = half - 1  # MM_ID_BITS: the top bit of each half is a flag
        put = object.__setattr__
        put(self, "mm_id_bits", ids)
        put(self, "mm_id_mask", (1 << ids) - 1)
        put(self, "mm_id_max", (1 << ids) - 1)
        put(self, "slot_shift", half)
        # FOLIO_MM_IDS_LOCK_BITNUM = MM_ID_BITS, _SHARED_BITNUM = 2 * MM_ID_BITS + 1
        put(self, "lock_bitnum", ids)
        put(self, "shared_bitnum", 2 * ids + 1)
        put(self, "lock_bit", 1 << ids)
        put(self, "shared_bit", 1 << (2 * ids + 1))
        mc = S32 if self.word_bits == 64 else S16
        put(self, "mm_id_mapcount_type", mc)
        put(self, "mm_ids_type", U64 if self.word_bits == 64 else U32_LONG)
        put(self, "mm_id_mapcount_max", mc.max)

    @property
    def page_mapcount(self) -> bool:
        """CONFIG_PAGE_MAPCOUNT: per-page mapcounts of large folios are maintained."""
        return not self.no_page_mapcount

    @property
    def is_64bit(self) -> bool:
        return self.word_bits == 64

    def has_entire_mapcount(self, order: int) -> bool:
        """Whether a folio of this order has ``_entire_mapcount`` (page[2] on 32-bit)."""
        return order >= 1 and (self.is_64bit or order > 1)

    def has_pincount(self, order: int) -> bool:
        """``folio_has_pincount()``: 64-bit large folios, or 32-bit with order > 1."""
        return self.has_entire_mapcount(order)

    def describe(self) -> str:
        return (
            f"{self.word_bits}-bit, "
            f"{'CONFIG_NO_PAGE_MAPCOUNT' if self.no_page_mapcount else 'CONFIG_PAGE_MAPCOUNT'}"
        )


DEFAULT = KernelConfig()
