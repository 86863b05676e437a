"""Page faults (mm/memory.c handle_mm_fault() and friends) and MADV_COLD/PAGEOUT (mm/madvise.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.folio import folio_mapcount
from foliosim.rmap import PTE
from foliosim.vm.cow import do_huge_pmd_wp_page, do_wp_page, wp_page_copy
from foliosim.vm.events import errno_name
from foliosim.vm.memory import PAGE_SHIFT
from foliosim.vm.pagetable import FolioKind, Pmd, Pte, SimFolio

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM
    from foliosim.vm.split import SplitResult
    from foliosim.vm.vma import Vma


def handle_mm_fault(m: Machine, mm: MM, vma: Vma, vpn: int, *, write: bool, unshare: bool = False) -> None:
    """``handle_mm_fault()`` for an access the caller already checked against the VMA's protection.

    ``unshare`` is FAULT_FLAG_UNSHARE (a R/O pin of a page that is not exclusive).
    """
    m.counters["fault"] += 1
    idx = vpn >> m.pmd_order
    pmd = mm.pmds.get(idx)
    if pmd is not None:
        needs_wp = (write and not pmd.write) or unshare
        if not needs_wp:
            return
        do_huge_pmd_wp_page(m, mm, vma, vpn, pmd, unshare)
        if idx in mm.pmds:
            return
    pte = mm.ptes.get(vpn)
    if pte is None:
        if vma.file is None:
            do_anonymous_page(m, mm, vma, vpn, write)
        else:
            do_file_fault(m, mm, vma, vpn, write)
        pte = mm.ptes.get(vpn)
        if pte is None or not unshare:
            return
    if (write and not pte.write) or unshare:
        do_wp_page(m, mm, vma, vpn, pte, unshare)


def _pmd_suitable(m: Machine, mm: MM, vma: Vma, vpn: int) -> bool:
    """thp_vma_suitable_order(PMD_ORDER) and pmd_none(): the whole PMD fits and has no page table."""
    idx = vpn >> m.pmd_order
    base = idx << m.pmd_order
    return (m.pmd_order in vma.thp and vma.start <= base and base + m.pmd_pages <= vma.end
            and idx not in mm.pmds and idx not in mm.pte_tables)


def do_anonymous_page(m: Machine, mm: MM, vma: Vma, vpn: int, write: bool) -> None:
    """``do_huge_pmd_anonymous_page()`` / ``do_anonymous_page()`` with ``alloc_anon_folio()``."""
    idx = vpn >> m.pmd_order
    if _pmd_suitable(m, mm, vma, vpn):
        if not write and m.options.use_zero_page:
            mm.pmds[idx] = Pmd(m.huge_zero, False)
            m.counters["huge zero page mapped"] += 1
            m.emit("fault", f"{mm.name}: read fault at {vpn << PAGE_SHIFT:#x} maps the huge zero page")
            return
        f = m.alloc_folio(FolioKind.ANON, m.pmd_order)
        m.anon_vma_prepare(vma)
        m._map_new_anon(f, mm)  # one PMD mapping, one reference (the allocation's)
        f.exclusive[0] = True  # AnonExclusive of a PMD lives on the head page
        mm.pmds[idx] = Pmd(f, vma.write)
        m.emit("fault", f"{mm.name}: {'write' if write else 'read'} fault at {vpn << PAGE_SHIFT:#x} "
                        f"maps new PMD THP {f.name}", folio=f.name)
        return
    if not write:
        mm.ptes[vpn] = Pte(m.zero, 0, False)
        mm.pte_tables.add(idx)
        m.counters["zero page mapped"] += 1
        m.emit("fault", f"{mm.name}: read fault at {vpn << PAGE_SHIFT:#x} maps the shared zero page")
        return
    order = _anon_order(m, mm, vma, vpn)
    nr = 1 << order
    first = vpn & ~(nr - 1)
    f = m.alloc_folio(FolioKind.ANON, order)
    m.get(f, nr - 1)  # one reference per PTE mapping
    m.anon_vma_prepare(vma)
    m._map_new_anon(f, mm)
    f.exclusive[:] = [True] * nr
    for k in range(nr):
        mm.ptes[first + k] = Pte(f, k, vma.write)
    mm.pte_tables.add(idx)
    size = "small folio" if order == 0 else f"order-{order} mTHP"
    m.emit("fault", f"{mm.name}: write fault at {vpn << PAGE_SHIFT:#x} maps new {size} {f.name}", folio=f.name)


def _anon_order(m: Machine, mm: MM, vma: Vma, vpn: int) -> int:
    """``alloc_anon_folio()``: the highest allowed order whose aligned range fits the VMA and is empty."""
    for order in sorted((o for o in vma.thp if 2 <= o < m.pmd_order), reverse=True):
        nr = 1 << order
        first = vpn & ~(nr - 1)
        if first < vma.start or first + nr > vma.end:
            continue
        if any(first + k in mm.ptes for k in range(nr)):  # pte_range_none() failed: try smaller
            continue
        return order
    return 0


def do_file_fault(m: Machine, mm: MM, vma: Vma, vpn: int, write: bool) -> None:
    """mm/memory.c ``do_fault()``: ``do_read_fault()`` (fault-around first), ``do_shared_fault()`` and
    ``do_cow_fault()``; the page-cache page comes from ``__do_fault()`` (filemap_fault()/shmem_fault())."""
    file = vma.file
    assert file is not None
    index = vma.file_index(vpn)
    if write and not vma.shared:  # do_cow_fault(): a private copy; the page-cache page is not mapped
        src = m.pagecache_folio(file, index)
        m.ref.privatize(mm, vma, vpn)
        m.get(src)
        new = m.alloc_folio(FolioKind.ANON, 0, [src.data[index - src.index]])
        m.anon_vma_prepare(vma)
        m._map_new_anon(new, mm)
        new.exclusive[0] = True
        mm.ptes[vpn] = Pte(new, 0, vma.write)
        mm.pte_tables.add(vpn >> m.pmd_order)
        m.put(src)
        m.counters["cow copy"] += 1
        m.emit("fault", f"{mm.name}: write fault at {vpn << PAGE_SHIFT:#x} on private {file.name}: "
                        f"copied into {new.name} (do_cow_fault)", folio=new.name)
        return
    if write:  # do_shared_fault(): no fault-around; the page-cache folio is mapped writable and dirty
        f = m.pagecache_folio(file, index, vma, vpn)
        nr = finish_fault(m, mm, vma, vpn, f, True)
        m.emit("fault", f"{mm.name}: write fault at {vpn << PAGE_SHIFT:#x} maps {f.name} of {file.name} writable"
                        f"{_how_many(f, nr)}", folio=f.name)
        return
    around = _fault_around(m, mm, vma, vpn)
    nr = 0
    if vpn not in mm.ptes:  # not cached (or not mappable) around the fault: ->fault(), then finish_fault()
        nr = finish_fault(m, mm, vma, vpn, m.pagecache_folio(file, index, vma, vpn), False)
    f = mm.ptes[vpn].folio
    how = f" ({around} page{'s' if around > 1 else ''} by fault-around)" if around and not nr else _how_many(f, nr)
    m.emit("fault", f"{mm.name}: read fault at {vpn << PAGE_SHIFT:#x} maps {f.name} of {file.name}{how}",
           folio=f.name)


def _how_many(f: SimFolio, nr: int) -> str:
    return f" (all {nr} pages of the folio: finish_fault)" if nr > 1 else ""


def fault_around_window(vpn: int, nr: int, vma: Vma, pmd_order: int) -> tuple[int, int]:
    """mm/memory.c ``do_fault_around()``: the pages ``[lo, hi)`` around ``vpn`` to map, an ``nr``-aligned window
    clipped to the VMA and to the page table (PMD range) holding ``vpn``."""
    return fault_around_bounds(vpn, nr, vma.start, vma.end, pmd_order)


def fault_around_bounds(vpn: int, nr: int, start: int, end: int, pmd_order: int) -> tuple[int, int]:
    """:func:`fault_around_window` for a VMA ``[start, end)`` given as numbers (the compiled simulator compiles
    this function as it is)."""
    pmd_base = (vpn >> pmd_order) << pmd_order
    lo = max(vpn & ~(nr - 1), start, pmd_base)
    return lo, min(lo + nr, end, pmd_base + (1 << pmd_order))


def _fault_around(m: Machine, mm: MM, vma: Vma, vpn: int) -> int:
    """``do_fault_around()``/``filemap_map_pages()``: map cached pages near the fault; returns how many.

    The window starts at the fault rounded down to ``fault_around_pages`` (fault_around_bytes), raised to
    the VMA's start, and spans that many pages from there, cut at the VMA's end and at the end of the
    page table. Each cached folio in it is mapped in runs of empty PTEs, one rmap call per run
    (filemap_map_folio_range()); pages already mapped are skipped. The PTEs take the VMA's
    ``vm_page_prot``: writable in a writable shared mapping without write-notify (shmem), else read-only.
    """
    nr = m.options.fault_around_pages
    if nr <= 1:  # should_fault_around(): a single page means no faulting around at all
        return 0
    file = vma.file
    assert file is not None
    lo, hi = fault_around_window(vpn, nr, vma, m.pmd_order)
    mapped = 0
    cur = lo
    while cur < hi:
        f = file.lookup(vma.file_index(cur))
        if f is None or cur in mm.ptes:
            cur += 1
            continue
        page = vma.file_index(cur) - f.index
        run = 1
        while (cur + run < hi and cur + run not in mm.ptes and page + run < f.nr_pages):
            run += 1
        _map_file_ptes(m, mm, cur, f, page, run, vma.maps_writable, False)
        mapped += run
        cur += run
    return mapped


def finish_fault(m: Machine, mm: MM, vma: Vma, vpn: int, f: SimFolio, write: bool) -> int:
    """mm/memory.c ``finish_fault()`` for a shared or read fault on page-cache folio ``f``; returns the pages mapped.

    The faulting page alone, or the whole large folio at once when the VMA is anonymous shared memory
    (``vma_is_anon_shmem()``: a mapping of an unlinked shmem object, :attr:`SimFile.anon`; v6.15 keeps
    other files to one page per fault, userfaultfd is not modelled)
    and the folio lies inside the VMA and inside the faulting PTE table, and all its PTEs are empty
    (``pte_range_none()``; otherwise the kernel falls back to the one page). One reference per PTE and
    one batched rmap call (``set_pte_range()`` -> ``folio_add_file_rmap_ptes()``). The PTEs start from
    the VMA's ``vm_page_prot``, which is writable in a writable shared mapping without write-notify
    (shmem, :attr:`Vma.maps_writable`), so a read fault there maps them writable too; a write fault
    makes them writable and dirty (``maybe_mkwrite(pte_mkdirty())``).
    """
    page = vma.file_index(vpn) - f.index
    writable = write or vma.maps_writable
    if _maps_whole_folio(m, mm, vma, vpn - page, f):
        _map_file_ptes(m, mm, vpn - page, f, 0, f.nr_pages, writable, write)
        m.counters["fault whole shmem folio"] += 1
        return f.nr_pages
    _map_file_ptes(m, mm, vpn, f, page, 1, writable, write)
    return 1


def _maps_whole_folio(m: Machine, mm: MM, vma: Vma, first: int, f: SimFolio) -> bool:
    """finish_fault()'s condition for mapping all of ``f`` from virtual page ``first``."""
    if f.nr_pages == 1 or vma.file is None or not vma.file.anon:
        return False
    last = first + f.nr_pages - 1
    if first < vma.start or last >= vma.end or first >> m.pmd_order != last >> m.pmd_order:
        return False
    return all(first + k not in mm.ptes for k in range(f.nr_pages))


def _map_file_ptes(m: Machine, mm: MM, vpn: int, f: SimFolio, page: int, nr: int, writable: bool,
                   dirty: bool) -> None:
    m.get(f, nr)  # references before the mapcount
    m._rmap_add(f, mm, PTE, page, nr)
    for k in range(nr):
        mm.ptes[vpn + k] = Pte(f, page + k, writable, dirty)
    mm.pte_tables.add(vpn >> m.pmd_order)


def madvise_cold_pageout(m: Machine, mm: MM, start: int, end: int, advice: str) -> None:
    """``madvise_cold_or_pageout_pte_range()``, one PMD range at a time, as the page walk calls it.

    A PMD-mapped THP that is not maybe shared is deactivated / reclaimed whole,
    or split (``split_folio()``) when the range covers only part of it, and the
    walk goes on over the new PTEs. A PTE-mapped large folio whose batch of
    PTEs (``folio_pte_batch()``) is shorter than the folio is split unless it is
    maybe shared; after a split the same address is looked at again. A small or
    fully covered folio is taken only when its mapcount equals its page count.
    Swap is not modelled: nothing is reclaimed or deactivated, every decision is
    a ``decision`` event; splits really happen (``split`` events). As the page walk,
    only PMD slots with a mapping or a page table and only present PTEs are visited.
    """
    for vma in mm.vmas_in(start, end):
        lo, hi = max(start, vma.start), min(end, vma.end)
        anon_only = advice == "pageout" and not vma.is_anon and not _can_do_file_pageout(vma)
        for idx in m.pmd_slots_in(mm, lo, hi):
            a = max(lo, idx << m.pmd_order)
            b = min(hi, (idx + 1) << m.pmd_order)
            if _cold_pmd(m, mm, idx, a, b, advice, anon_only):
                _cold_ptes(m, mm, a, b, advice, anon_only)


def _can_do_file_pageout(vma: Vma) -> bool:
    """``can_do_file_pageout()``: the caller owns the file or may write it. Simulated tasks own every file
    (there are no permissions), so pageout is never limited to anon folios (pageout_anon_only_filter)."""
    return vma.file is not None


def _cold_pmd(m: Machine, mm: MM, idx: int, a: int, b: int, advice: str, anon_only: bool) -> bool:
    """The PMD part: True when the walk continues over PTEs (no PMD mapping, or it was split)."""
    pmd = mm.pmds.get(idx)
    if pmd is None:
        return True
    f = pmd.folio
    if f.is_zero:
        return False
    if m.shared_verdict(f, f"madvise_{advice}"):
        _decide(m, advice, f.name, "skip", "PMD-mapped folio is maybe mapped shared")
        return False
    if anon_only and not f.is_anon:
        _decide(m, advice, f.name, "skip", "pageout of a file folio the caller may not write")
        return False
    if b - a != m.pmd_pages:
        result = _split(m, f, f"MADV_{advice.upper()} on part of a PMD-mapped THP")
        if not result.ok:
            _decide(m, advice, f.name, "skip", f"partially covered PMD: split_folio() -> "
                                               f"-{errno_name(result.err)}: {result.reason}")
            return False
        _decide(m, advice, f.name, "split", "partially covered PMD-mapped folio, not maybe mapped shared: "
                                            "split_folio(), then the PTEs are walked")
        return True
    _decide(m, advice, f.name, "take", "PMD-mapped folio mapped exclusively")
    return False


def _cold_ptes(m: Machine, mm: MM, a: int, b: int, advice: str, anon_only: bool) -> None:
    """The PTE loop over ``[a, b)`` (one page table), visiting the PTEs present when it starts.

    A split only replaces or removes PTEs where the folio was mapped, so no PTE appears at an
    address that was empty when the loop started.
    """
    present = m._ptes_in(mm, a, b)
    i = 0
    vpn = a
    while i < len(present):
        if present[i] < vpn:
            i += 1
            continue
        vpn = present[i]
        pte = mm.ptes.get(vpn)
        if pte is None or pte.folio.is_zero:  # vm_normal_folio() is NULL for the zero page
            vpn += 1
            continue
        f = pte.folio
        nr = 1
        if f.order:
            nr = _pte_batch(mm, vpn, b, f, pte.page)
            if nr < f.nr_pages:
                if m.shared_verdict(f, f"madvise_{advice}"):
                    _decide(m, advice, f.name, "skip", "partially covered large folio is maybe mapped shared")
                elif anon_only and not f.is_anon:
                    _decide(m, advice, f.name, "skip", "pageout of a file folio the caller may not write")
                else:
                    result = _split(m, f, f"MADV_{advice.upper()} on part of a large folio")
                    if result.ok:
                        _decide(m, advice, f.name, "split", "partially covered large folio, not maybe mapped "
                                                            "shared: split_folio(), then looked at again")
                        continue  # nr = 0: the same address again, now an order-0 folio (or none)
                    _decide(m, advice, f.name, "skip", f"partially covered large folio: split_folio() -> "
                                                       f"-{errno_name(result.err)}: {result.reason}")
                vpn += nr
                continue
        mapcount = folio_mapcount(f.core())
        if mapcount != f.nr_pages:
            _decide(m, advice, f.name, "skip", f"mapcount {mapcount} != {f.nr_pages} page(s): mapped elsewhere too")
        elif anon_only and not f.is_anon:
            _decide(m, advice, f.name, "skip", "pageout of a file folio the caller may not write")
        else:
            _decide(m, advice, f.name, "take", "mapped once per page")
        vpn += nr


def _pte_batch(mm: MM, vpn: int, end: int, f: SimFolio, page: int) -> int:
    """``folio_pte_batch()`` from ``vpn``: present PTEs mapping consecutive pages of ``f``, before ``end``."""
    limit = min(end - vpn, f.nr_pages - page)
    nr = 1
    while nr < limit:
        nxt = mm.ptes.get(vpn + nr)
        if nxt is None or nxt.folio is not f or nxt.page != page + nr:
            break
        nr += 1
    return nr


def _split(m: Machine, f: SimFolio, why: str) -> SplitResult:
    """folio_get(), ``split_folio()``, folio_put() of the folio that now holds the reference (page 0's)."""
    m.get(f)
    result = m.split_folio(f, why)
    m.put(result.folios[0] if result.ok else f)
    return result


def _decide(m: Machine, advice: str, folio: str, verdict: str, why: str) -> None:
    """A consumer decision event; ``verdict`` is take (would deactivate/reclaim), skip or split."""
    action = {"cold": "deactivate", "pageout": "reclaim"}[advice]
    m.counters[f"madvise {advice} {verdict}"] += 1
    done = {"take": f"would {action}", "skip": "skipped", "split": "split into order-0 folios"}[verdict]
    text = f"MADV_{advice.upper()} {folio}: {done} ({why})"
    m.emit("decision", text, consumer=f"madvise_{advice}", folio=folio, verdict=verdict, reason=why)


__all__ = ["do_anonymous_page", "do_file_fault", "finish_fault", "handle_mm_fault", "madvise_cold_pageout",
           "wp_page_copy"]
