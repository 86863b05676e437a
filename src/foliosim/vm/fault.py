"""Page faults (mm/memory.c handle_mm_fault() and friends) and MADV_COLD/PAGEOUT decisions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.folio import folio_mapcount
from foliosim.rmap import PTE
from foliosim.vm.cow import do_huge_pmd_wp_page, do_wp_page, wp_page_copy
from foliosim.vm.memory import PAGE_SHIFT
from foliosim.vm.pagetable import FolioKind, Pmd, Pte

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM
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
    """``do_read_fault()`` (with fault-around), ``do_shared_fault()`` and ``do_cow_fault()``."""
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
    if write:  # do_shared_fault(): map the page-cache page writable
        f = m.pagecache_folio(file, index)
        _map_file_ptes(m, mm, vpn, f, index - f.index, 1, True)
        m.emit("fault", f"{mm.name}: write fault at {vpn << PAGE_SHIFT:#x} maps {f.name} of {file.name} writable",
               folio=f.name)
        return
    _fault_around(m, mm, vma, vpn)
    if vpn not in mm.ptes:
        f = m.pagecache_folio(file, index)
        _map_file_ptes(m, mm, vpn, f, index - f.index, 1, False)
    f = mm.ptes[vpn].folio
    m.emit("fault", f"{mm.name}: read fault at {vpn << PAGE_SHIFT:#x} maps {f.name} of {file.name}", folio=f.name)


def _fault_around(m: Machine, mm: MM, vma: Vma, vpn: int) -> None:
    """``do_fault_around()``/``filemap_map_pages()``: map cached pages near the fault, per folio batch."""
    nr = m.options.fault_around_pages
    if nr <= 1:
        return
    file = vma.file
    assert file is not None
    pmd_base = (vpn >> m.pmd_order) << m.pmd_order
    lo = max(vpn & ~(nr - 1), vma.start, pmd_base)
    hi = min((vpn & ~(nr - 1)) + nr, vma.end, pmd_base + m.pmd_pages)
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
        _map_file_ptes(m, mm, cur, f, page, run, False)
        cur += run


def _map_file_ptes(m: Machine, mm: MM, vpn: int, f: object, page: int, nr: int, writable: bool) -> None:
    from foliosim.vm.pagetable import SimFolio

    assert isinstance(f, SimFolio)
    m.get(f, nr)  # references before the mapcount
    m._rmap_add(f, mm, PTE, page, nr)
    for k in range(nr):
        mm.ptes[vpn + k] = Pte(f, page + k, writable)
    mm.pte_tables.add(vpn >> m.pmd_order)


def madvise_cold_pageout(m: Machine, mm: MM, start: int, end: int, advice: str) -> None:
    """``madvise_cold_or_pageout_pte_range()``: which folios would be deactivated / reclaimed.

    Swap is not modelled, so nothing is unmapped; every decision is emitted as a
    ``decision`` event with the rule that took it (folio_maybe_mapped_shared()
    for PMD-mapped and partially covered large folios; mapcount == nr_pages for
    fully covered ones).
    """
    done: set[str] = set()
    for vma in mm.vmas_in(start, end):
        lo, hi = max(start, vma.start), min(end, vma.end)
        for idx in m._pmd_indexes(lo, hi):
            pmd = mm.pmds.get(idx)
            if pmd is None or pmd.folio.is_zero:
                continue
            f = pmd.folio
            base = idx << m.pmd_order
            if m.shared_verdict(f, f"madvise_{advice}"):
                _decide(m, advice, f.name, "skip", "PMD-mapped folio is maybe mapped shared")
            elif not (lo <= base and base + m.pmd_pages <= hi):
                _decide(m, advice, f.name, "skip", "partially covered PMD: would split the folio (not modelled)")
            else:
                _decide(m, advice, f.name, "take", "PMD-mapped folio mapped exclusively")
            done.add(f.name)
        vpn = lo
        while vpn < hi:
            pte = mm.ptes.get(vpn)
            if pte is None or pte.folio.is_zero or pte.folio.name in done:
                vpn += 1
                continue
            f = pte.folio
            done.add(f.name)
            covered = pte.page == 0 and vpn + f.nr_pages <= hi and all(
                (p := mm.ptes.get(vpn + k)) is not None and p.folio is f for k in range(f.nr_pages))
            core = f.core()
            if f.order and not covered:
                if m.shared_verdict(f, f"madvise_{advice}"):
                    _decide(m, advice, f.name, "skip", "partially covered large folio is maybe mapped shared")
                else:
                    _decide(m, advice, f.name, "skip",
                            "partially covered exclusive large folio: would split it (not modelled)")
            elif folio_mapcount(core) != f.nr_pages:
                _decide(m, advice, f.name, "skip", f"mapcount {folio_mapcount(core)} != {f.nr_pages} page(s): "
                                                   "mapped elsewhere too")
            else:
                _decide(m, advice, f.name, "take", "mapped once per page")
            vpn += 1


def _decide(m: Machine, advice: str, folio: str, verdict: str, why: str) -> None:
    action = {"cold": "deactivate", "pageout": "reclaim"}[advice]
    m.counters[f"madvise {advice} {verdict}"] += 1
    text = f"MADV_{advice.upper()} {folio}: {'would ' + action if verdict == 'take' else 'skipped'} ({why})"
    m.emit("decision", text, consumer=f"madvise_{advice}", folio=folio, verdict=verdict, reason=why)


__all__ = ["do_anonymous_page", "do_file_fault", "handle_mm_fault", "madvise_cold_pageout", "wp_page_copy"]
