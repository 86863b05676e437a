"""Folio state as the kernel stores it, and the read-only queries on it.

Every counter holds the raw value the kernel keeps in ``struct folio`` (most
start at -1); the query functions turn them into the logical values that
include/linux/mm.h and include/linux/rmap.h return.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foliosim.kconfig import ENTIRELY_MAPPED, FOLIO_PAGES_MAPPED, MAX_ORDER, KernelConfig


@dataclass(slots=True, eq=False)
class Folio:
    """The rmap-relevant fields of one folio, initialised as by prep_compound_head().

    ``page_mapcount`` holds each page's raw ``_mapcount`` (for a small folio the
    single entry *is* the folio mapcount). The large-folio fields exist for
    every order so that the layout stays uniform; they are only meaningful for
    order >= 1.
    """

    config: KernelConfig
    order: int
    page_mapcount: list[int] = field(init=False)
    large_mapcount: int = -1  # _large_mapcount
    entire_mapcount: int = -1  # _entire_mapcount
    nr_pages_mapped: int = 0  # _nr_pages_mapped, with ENTIRELY_MAPPED
    mm_id_mapcount: list[int] = field(default_factory=lambda: [-1, -1])  # _mm_id_mapcount[2]
    mm_ids: int = 0  # _mm_ids: both ids, the lock bit and the shared bit
    refcount: int = 1  # _refcount (head page)
    pincount: int = 0  # _pincount

    def __post_init__(self) -> None:
        if not 0 <= self.order <= MAX_ORDER:
            raise ValueError(f"folio order must be in 0..{MAX_ORDER}, not {self.order}")
        self.page_mapcount = [-1] * (1 << self.order)

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    @property
    def is_large(self) -> bool:
        """``folio_test_large()``."""
        return self.order > 0

    def copy(self) -> Folio:
        """A deep copy (used by tests, the checker and the viewer)."""
        new = Folio(self.config, 0)
        new.order = self.order
        new.page_mapcount = list(self.page_mapcount)
        new.large_mapcount = self.large_mapcount
        new.entire_mapcount = self.entire_mapcount
        new.nr_pages_mapped = self.nr_pages_mapped
        new.mm_id_mapcount = list(self.mm_id_mapcount)
        new.mm_ids = self.mm_ids
        new.refcount = self.refcount
        new.pincount = self.pincount
        return new

    def key(self) -> tuple[int, ...]:
        """Every stored field as one tuple: equal keys mean bit-identical folios."""
        return (
            self.order,
            self.large_mapcount,
            self.entire_mapcount,
            self.nr_pages_mapped,
            self.mm_id_mapcount[0],
            self.mm_id_mapcount[1],
            self.mm_ids,
            self.refcount,
            self.pincount,
            *self.page_mapcount,
        )


def folio_mm_id(folio: Folio, idx: int) -> int:
    """``folio_mm_id()`` (include/linux/rmap.h): slot ``idx``'s MM id, flags masked off."""
    cfg = folio.config
    return (folio.mm_ids >> (idx * cfg.slot_shift)) & cfg.mm_id_mask


def folio_test_large_maybe_mapped_shared(folio: Folio) -> bool:
    """The raw shared bit (include/linux/page-flags.h in v6.15)."""
    return bool(folio.mm_ids & folio.config.shared_bit)


def folio_test_large_mapcount_locked(folio: Folio) -> bool:
    """Whether the bit spinlock (``FOLIO_MM_IDS_LOCK_BITNUM``) is held."""
    return bool(folio.mm_ids & folio.config.lock_bit)


def folio_large_mapcount(folio: Folio) -> int:
    """``folio_large_mapcount()``: page-table entries mapping any part of the folio."""
    return folio.large_mapcount + 1


def folio_entire_mapcount(folio: Folio) -> int:
    """``folio_entire_mapcount()``: PMD mappings; 0 for 32-bit order-1 folios (no field)."""
    if not folio.config.has_entire_mapcount(folio.order):
        return 0
    return folio.entire_mapcount + 1


def folio_mapcount(folio: Folio) -> int:
    """``folio_mapcount()`` (include/linux/mm.h)."""
    if folio.order == 0:
        return folio.page_mapcount[0] + 1
    return folio.large_mapcount + 1


def folio_mapped(folio: Folio) -> bool:
    """``folio_mapped()``."""
    return folio_mapcount(folio) >= 1


def folio_nr_pages_mapped(folio: Folio) -> int:
    """``folio_nr_pages_mapped()``: -1 under CONFIG_NO_PAGE_MAPCOUNT."""
    if folio.config.no_page_mapcount:
        return -1
    return folio.nr_pages_mapped & FOLIO_PAGES_MAPPED


def folio_entirely_mapped_flag(folio: Folio) -> bool:
    return bool(folio.nr_pages_mapped & ENTIRELY_MAPPED)


def folio_maybe_mapped_shared(folio: Folio) -> bool:
    """``folio_maybe_mapped_shared()`` (include/linux/mm.h, v6.15).

    Small folios: mapcount > 1. Large folios: false while at most one page-table
    entry maps it (whatever the bit says), otherwise the shared bit.
    """
    mapcount = folio_mapcount(folio)
    if folio.order == 0:
        return mapcount > 1
    if mapcount <= 1:
        return False
    return bool(folio.mm_ids & folio.config.shared_bit)


def folio_likely_mapped_shared(folio: Folio) -> bool:
    """The pre-v6.15 heuristic ``folio_likely_mapped_shared()`` (v6.14 include/linux/mm.h).

    Needs per-page mapcounts; under CONFIG_NO_PAGE_MAPCOUNT it sees the initial
    -1 of page 0, exactly as the kernel's would have (which is why v6.15
    replaced it).
    """
    mapcount = folio_mapcount(folio)
    if folio.order == 0:
        return mapcount > 1
    if mapcount <= 1:
        return False
    if folio_entire_mapcount(folio) or mapcount > folio.nr_pages:
        return True
    return folio.page_mapcount[0] > 0


def folio_precise_page_mapcount(folio: Folio, page: int) -> int:
    """``folio_precise_page_mapcount()`` (fs/proc/internal.h): PTE mapcount + PMD mappings."""
    mapcount = folio.page_mapcount[page] + 1
    if folio.order > 0:
        mapcount += folio_entire_mapcount(folio)
    return mapcount


def folio_average_page_mapcount(folio: Folio) -> int:
    """``folio_average_page_mapcount()`` (fs/proc/internal.h), rounded half up, >= 1 if mapped."""
    if folio.order == 0:
        return folio.page_mapcount[0] + 1
    mapcount = folio_large_mapcount(folio)
    if mapcount <= 0:
        return 0
    entire = folio_entire_mapcount(folio)
    if mapcount <= entire:
        return entire
    mapcount -= entire
    avg = (mapcount + folio.nr_pages // 2) >> folio.order
    return max(avg + entire, 1)


def pte_mapcounts_rle(folio: Folio) -> list[list[int]]:
    """Per-page PTE mapcounts (``_mapcount + 1``) as ``[value, run]`` pairs in page order."""
    out: list[list[int]] = []
    counts = folio.page_mapcount
    prev = counts[0]
    run = 0
    for raw in counts:
        if raw == prev:
            run += 1
        else:
            out.append([prev + 1, run])
            prev = raw
            run = 1
    out.append([prev + 1, run])
    return out
