"""Reverse-map operations on one folio (mm/rmap.c and include/linux/rmap.h, v6.15).

Each function models one kernel entry point and updates the per-page
mapcounts, ``_nr_pages_mapped`` (with ENTIRELY_MAPPED), the entire mapcount and,
through :mod:`foliosim.owner`, the large mapcount and the MM slots, in the order
the kernel does. The callers (the trace replayer, the simulator) validate
arguments; :func:`rmap_precheck` tells them what the kernel would warn about.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from foliosim.cint import S32
from foliosim.errors import Rejected
from foliosim.folio import Folio
from foliosim.kconfig import ENTIRELY_MAPPED, FOLIO_PAGES_MAPPED
from foliosim.owner import (
    KERNEL_OWNER,
    OwnerEvent,
    OwnerTracking,
    folio_set_large_mapcount,
    large_mapcount_sanity_failure,
)


class RmapLevel(Enum):
    """``enum rmap_level`` (v6.15): a PTE maps one page, a PMD the whole folio."""

    PTE = "pte"
    PMD = "pmd"


PTE = RmapLevel.PTE
PMD = RmapLevel.PMD


class RmapResult(NamedTuple):
    """What an rmap call changed besides the folio fields.

    ``nr`` and ``nr_pmdmapped`` are the deltas ``__folio_mod_stat()`` applies to
    NR_{ANON,FILE}_MAPPED and the PMD-mapped counters; ``partially_mapped`` is
    the condition under which an anon folio is queued for deferred split;
    ``owner`` is the owner-tracking branch taken (None for small folios).
    """

    nr: int
    nr_pmdmapped: int
    partially_mapped: bool
    owner: OwnerEvent | None


def _inc(value: int) -> int:
    return S32.wrap(value + 1)


def rmap_precheck(folio: Folio, page: int, nr_pages: int, mm_id: int, level: RmapLevel) -> None:
    """Reject what ``__folio_rmap_sanity_checks()`` / the owner checks would warn about.

    Runs before any field changes, so a rejected call leaves the folio untouched.
    """
    if nr_pages <= 0:
        raise Rejected(f"nr_pages {nr_pages} is not positive", check="__folio_rmap_sanity_checks")
    if page < 0 or page + nr_pages > folio.nr_pages:
        raise Rejected(
            f"pages {page}..{page + nr_pages - 1} are outside the folio's "
            f"{folio.nr_pages} pages (0..{folio.nr_pages - 1})",
            check="__folio_rmap_sanity_checks",
        )
    if level is PMD:
        if folio.order == 0:
            raise Rejected("a PMD cannot map an order-0 folio", check="__folio_rmap_sanity_checks")
        if not folio.config.has_entire_mapcount(folio.order):
            raise Rejected(
                "a PMD cannot map an order-1 folio on a 32-bit kernel "
                "(the entire mapcount lives in page[2], which it does not have)",
                check="__folio_rmap_sanity_checks",
            )
    if folio.order > 0:
        diff = 1 if level is PMD else nr_pages
        reason = large_mapcount_sanity_failure(folio, diff, mm_id)
        if reason is not None:
            raise Rejected(reason, check="__folio_large_mapcount_sanity_checks")


def folio_add_new_anon_rmap(folio: Folio, mm_id: int) -> RmapResult:
    """``folio_add_new_anon_rmap()``: map a fresh folio whole by one MM.

    Small: ``_mapcount = 0``. Below PMD order: every page mapped by a PTE.
    PMD order or more: one PMD mapping.
    """
    cfg = folio.config
    nr_pages = folio.nr_pages
    if folio.order > 0 and folio.mm_ids & ~cfg.shared_bit & ~cfg.lock_bit:
        raise Rejected("folio_set_large_mapcount() on a folio whose slots are not free",
                       check="folio_set_large_mapcount")
    if folio.order == 0:
        folio.page_mapcount[0] = 0
        return RmapResult(1, 0, False, None)
    if folio.order < cfg.pmd_order:
        rmap_precheck(folio, 0, nr_pages, mm_id, PTE)
        if cfg.page_mapcount:
            folio.page_mapcount[:] = [0] * nr_pages
        event = folio_set_large_mapcount(folio, nr_pages, mm_id)
        if cfg.page_mapcount:
            folio.nr_pages_mapped = nr_pages
        return RmapResult(nr_pages, 0, False, event)
    rmap_precheck(folio, 0, nr_pages, mm_id, PMD)
    folio.entire_mapcount = 0
    event = folio_set_large_mapcount(folio, 1, mm_id)
    if cfg.page_mapcount:
        folio.nr_pages_mapped = ENTIRELY_MAPPED
    return RmapResult(nr_pages, nr_pages, False, event)


def folio_add_rmap(
    folio: Folio, page: int, nr_pages: int, mm_id: int, level: RmapLevel,
    owner: OwnerTracking = KERNEL_OWNER,
) -> RmapResult:
    """``__folio_add_rmap()``: behind folio_add_{anon,file}_rmap_{ptes,pmd}()."""
    cfg = folio.config
    if folio.order == 0:
        folio.page_mapcount[0] = _inc(folio.page_mapcount[0])
        return RmapResult(1 if folio.page_mapcount[0] == 0 else 0, 0, False, None)
    nr = 0
    nr_pmdmapped = 0
    if level is PTE:
        if cfg.no_page_mapcount:
            total, event = owner.add(folio, nr_pages, mm_id)
            nr = folio.nr_pages if total == nr_pages else 0  # was completely unmapped
            return RmapResult(nr, 0, False, event)
        counts = folio.page_mapcount
        first = 0
        for idx in range(page, page + nr_pages):
            counts[idx] = _inc(counts[idx])
            if counts[idx] == 0:
                first += 1
        if first:
            folio.nr_pages_mapped = S32.wrap(folio.nr_pages_mapped + first)
            if folio.nr_pages_mapped < ENTIRELY_MAPPED:
                nr = first
        # The large mapcount is raised last, after the per-page counters.
        _total, event = owner.add(folio, nr_pages, mm_id)
        return RmapResult(nr, 0, False, event)
    folio.entire_mapcount = _inc(folio.entire_mapcount)
    first_pmd = folio.entire_mapcount == 0
    if cfg.no_page_mapcount:
        if first_pmd:
            nr_pmdmapped = folio.nr_pages
        total, event = owner.add(folio, 1, mm_id)
        nr = folio.nr_pages if total == 1 else 0
        return RmapResult(nr, nr_pmdmapped, False, event)
    if first_pmd:
        folio.nr_pages_mapped = S32.wrap(folio.nr_pages_mapped + ENTIRELY_MAPPED)
        mapped = folio.nr_pages_mapped
        if mapped < 2 * ENTIRELY_MAPPED:
            nr_pmdmapped = folio.nr_pages
            nr = max(0, folio.nr_pages - (mapped & FOLIO_PAGES_MAPPED))
    _total, event = owner.add(folio, 1, mm_id)
    return RmapResult(nr, nr_pmdmapped, False, event)


def folio_dup_rmap(
    folio: Folio, page: int, nr_pages: int, mm_id: int, level: RmapLevel,
    owner: OwnerTracking = KERNEL_OWNER,
) -> RmapResult:
    """``__folio_dup_file_rmap()`` / ``__folio_try_dup_anon_rmap()`` counting, at fork.

    The pages are already mapped by the parent, so ``_nr_pages_mapped`` and the
    statistics are left alone; the new mappings are accounted to the child's MM.
    AnonExclusive handling and -EBUSY for maybe-pinned pages belong to the caller.
    """
    cfg = folio.config
    if folio.order == 0:
        folio.page_mapcount[0] = _inc(folio.page_mapcount[0])
        return RmapResult(0, 0, False, None)
    if level is PTE:
        if cfg.page_mapcount:
            counts = folio.page_mapcount
            for idx in range(page, page + nr_pages):
                counts[idx] = _inc(counts[idx])
        _total, event = owner.add(folio, nr_pages, mm_id)
        return RmapResult(0, 0, False, event)
    folio.entire_mapcount = _inc(folio.entire_mapcount)
    _total, event = owner.add(folio, 1, mm_id)
    return RmapResult(0, 0, False, event)


def folio_remove_rmap(
    folio: Folio, page: int, nr_pages: int, mm_id: int, level: RmapLevel,
    owner: OwnerTracking = KERNEL_OWNER,
) -> RmapResult:
    """``__folio_remove_rmap()``: behind folio_remove_rmap_{ptes,pmd}()."""
    cfg = folio.config
    if folio.order == 0:
        folio.page_mapcount[0] = S32.wrap(folio.page_mapcount[0] - 1)
        return RmapResult(1 if folio.page_mapcount[0] < 0 else 0, 0, False, None)
    nr = 0
    nr_pmdmapped = 0
    partially = False
    if level is PTE:
        if cfg.no_page_mapcount:
            total, event = owner.sub(folio, nr_pages, mm_id)
            if total == 0:
                nr = folio.nr_pages  # now completely unmapped
            else:
                partially = total < folio.nr_pages and folio.entire_mapcount + 1 == 0
            return RmapResult(nr, 0, partially, event)
        # The large mapcount is lowered first, before the per-page counters.
        _total, event = owner.sub(folio, nr_pages, mm_id)
        counts = folio.page_mapcount
        last = 0
        for idx in range(page, page + nr_pages):
            counts[idx] = S32.wrap(counts[idx] - 1)
            if counts[idx] < 0:
                last += 1
        if last:
            folio.nr_pages_mapped = S32.wrap(folio.nr_pages_mapped - last)
            if folio.nr_pages_mapped < ENTIRELY_MAPPED:
                nr = last
        partially = bool(nr) and folio.nr_pages_mapped != 0
        return RmapResult(nr, 0, partially, event)
    if cfg.no_page_mapcount:
        # Without per-page mapcounts the entire mapcount goes down first.
        folio.entire_mapcount = S32.wrap(folio.entire_mapcount - 1)
        last_pmd = folio.entire_mapcount < 0
        if last_pmd:
            nr_pmdmapped = folio.nr_pages
        total, event = owner.sub(folio, 1, mm_id)
        if total == 0:
            nr = folio.nr_pages
        else:
            partially = last_pmd and total < folio.nr_pages
        return RmapResult(nr, nr_pmdmapped, partially, event)
    _total, event = owner.sub(folio, 1, mm_id)
    folio.entire_mapcount = S32.wrap(folio.entire_mapcount - 1)
    if folio.entire_mapcount < 0:
        folio.nr_pages_mapped = S32.wrap(folio.nr_pages_mapped - ENTIRELY_MAPPED)
        mapped = folio.nr_pages_mapped
        if mapped < ENTIRELY_MAPPED:
            nr_pmdmapped = folio.nr_pages
            nr = max(0, folio.nr_pages - (mapped & FOLIO_PAGES_MAPPED))
    partially = bool(nr) and nr < nr_pmdmapped
    return RmapResult(nr, nr_pmdmapped, partially, event)
