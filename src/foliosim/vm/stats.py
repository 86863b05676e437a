"""/proc statistics: smaps_rollup and pagemap's exclusive bit (fs/proc/task_mmu.c, v6.15).

With CONFIG_PAGE_MAPCOUNT, sharing is decided per page from the precise page
mapcount; with CONFIG_NO_PAGE_MAPCOUNT per folio from
folio_maybe_mapped_shared() and the average page mapcount (smaps_account(),
__folio_page_mapped_exclusively()).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from foliosim.folio import folio_average_page_mapcount, folio_maybe_mapped_shared, folio_precise_page_mapcount
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM
    from foliosim.vm.pagetable import SimFolio

PSS_SHIFT = 12


@dataclass(slots=True)
class SmapsRollup:
    """The smaps_rollup fields foliosim models, in bytes (Pss values are floored)."""

    rss: int = 0
    pss: int = 0
    pss_anon: int = 0
    pss_file: int = 0
    pss_shmem: int = 0
    shared: int = 0  # Shared_Clean + Shared_Dirty
    private: int = 0  # Private_Clean + Private_Dirty
    anonymous: int = 0
    anon_huge_pages: int = 0  # PMD-mapped anonymous THPs only

    def as_kb(self) -> dict[str, int]:
        return {"Rss": self.rss >> 10, "Pss": self.pss >> 10, "Pss_Anon": self.pss_anon >> 10,
                "Pss_File": self.pss_file >> 10, "Pss_Shmem": self.pss_shmem >> 10,
                "Shared": self.shared >> 10, "Private": self.private >> 10,
                "Anonymous": self.anonymous >> 10, "AnonHugePages": self.anon_huge_pages >> 10}


def smaps_rollup(m: Machine, mm: MM) -> SmapsRollup:
    """``show_smaps_rollup()``: walk every present mapping (zero pages are not normal pages)."""
    acc = _Acc()
    for idx, pmd in mm.pmds.items():
        if pmd.folio.is_zero or mm.find_vma(idx << m.pmd_order) is None:
            continue
        if pmd.folio.is_anon:
            acc.r.anon_huge_pages += pmd.folio.nr_pages * PAGE_SIZE
        _account(m, acc, pmd.folio, 0, pmd.folio.nr_pages)
    for pte in mm.ptes.values():
        if not pte.folio.is_zero:
            _account(m, acc, pte.folio, pte.page, 1)
    r = acc.r
    r.pss = acc.pss >> PSS_SHIFT
    r.pss_anon = acc.pss_anon >> PSS_SHIFT
    r.pss_file = acc.pss_file >> PSS_SHIFT
    r.pss_shmem = acc.pss_shmem >> PSS_SHIFT
    return r


class _Acc:
    __slots__ = ("pss", "pss_anon", "pss_file", "pss_shmem", "r")

    def __init__(self) -> None:
        self.r = SmapsRollup()
        self.pss = self.pss_anon = self.pss_file = self.pss_shmem = 0


def _account(m: Machine, acc: _Acc, f: SimFolio, page: int, nr: int) -> None:
    """``smaps_account()`` for ``nr`` pages starting at ``page`` (nr_pages for a PMD)."""
    size = nr * PAGE_SIZE
    core = f.core()
    r = acc.r
    if f.is_anon:
        r.anonymous += size
    r.rss += size
    if core.refcount == 1:  # mapped exactly once: all private, full Pss
        _accumulate(acc, f, size, size << PSS_SHIFT, True)
        return
    no_page_mapcount = m.config.no_page_mapcount
    if no_page_mapcount:
        mapcount = folio_average_page_mapcount(core)
        exclusive = not folio_maybe_mapped_shared(core)
    for k in range(page, page + nr):
        if not no_page_mapcount:
            mapcount = folio_precise_page_mapcount(core, k)
            exclusive = mapcount < 2
        pss = PAGE_SIZE << PSS_SHIFT
        if mapcount >= 2:
            pss //= mapcount
        _accumulate(acc, f, PAGE_SIZE, pss, exclusive)


def _accumulate(acc: _Acc, f: SimFolio, size: int, pss: int, private: bool) -> None:
    """``smaps_page_accumulate()``."""
    acc.pss += pss
    if f.is_anon:
        acc.pss_anon += pss
    elif f.file is not None and f.file.shmem:
        acc.pss_shmem += pss
    else:
        acc.pss_file += pss
    if private:
        acc.r.private += size
    else:
        acc.r.shared += size


@dataclass(frozen=True, slots=True)
class PagemapEntry:
    """One /proc/PID/pagemap entry (the bits foliosim models)."""

    addr: int
    present: bool
    file: bool  # PM_FILE: a page-cache (or shmem) page, or not anon
    exclusive: bool  # PM_MMAP_EXCLUSIVE (bit 56)
    folio: str | None
    page: int | None


def pagemap(m: Machine, mm: MM, vpn: int) -> PagemapEntry:
    """``pte_to_pagemap_entry()`` / ``pagemap_pmd_range()``; PMDs report the first page for every
    subpage (the v6.15 quirk of passing the PMD's first page)."""
    hit = m.lookup(mm, vpn)
    if hit is None:
        return PagemapEntry(vpn << PAGE_SHIFT, False, False, False, None, None)
    f, page, _writable = hit
    if f.is_zero:
        return PagemapEntry(vpn << PAGE_SHIFT, True, True, False, f.name, page)
    by_pmd = (vpn >> m.pmd_order) in mm.pmds
    core = f.core()
    if m.config.no_page_mapcount and f.order:
        exclusive = not folio_maybe_mapped_shared(core)
    else:
        exclusive = folio_precise_page_mapcount(core, 0 if by_pmd else page) == 1
    return PagemapEntry(vpn << PAGE_SHIFT, True, not f.is_anon, exclusive, f.name, page)


def pagemap_present(m: Machine, mm: MM, start: int, end: int) -> list[PagemapEntry]:
    """The pagemap entries of the present pages in ``[start, end)`` (page numbers), in address order.

    Every other page of the range reads "not present"; like ``pagemap_read()``'s page walk, which
    skips empty page tables, the cost follows the present entries, not the size of the range.
    """
    order = m.pmd_order
    vpns = set(m._ptes_in(mm, start, end))
    for idx in m._pmds_in(mm, start, end):
        vpns.update(range(max(start, idx << order), min(end, (idx + 1) << order)))
    return [pagemap(m, mm, vpn) for vpn in sorted(vpns)]
