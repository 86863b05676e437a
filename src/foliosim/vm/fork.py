"""fork(): ``dup_mmap()`` and ``copy_page_range()`` (kernel/fork.c, mm/memory.c, mm/huge_memory.c).

Only VMAs with an anon_vma get their page tables copied (``vma_needs_copy()``);
the child refaults everything else. Present PTEs are copied in per-folio
batches (``copy_present_ptes()``/``folio_pte_batch()``); a possibly pinned
exclusive anon page makes the batch fail and the range is retried page by
page with a preallocated folio, giving the child a copy at once
(``copy_present_page()``). PMD-mapped THPs are copied as PMDs
(``copy_huge_pmd()``), or split first when maybe pinned.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from foliosim.folio import Folio
from foliosim.rmap import PMD, PTE
from foliosim.vm.memory import PAGE_SHIFT
from foliosim.vm.pagetable import FolioKind, Pmd, Pte, SimFolio

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM
    from foliosim.vm.vma import Vma

#: GUP_PIN_COUNTING_BIAS (include/linux/mm.h).
GUP_PIN_COUNTING_BIAS = 1024


def folio_maybe_dma_pinned(m: Machine, folio: Folio) -> bool:
    """``folio_maybe_dma_pinned()``: exact pincount if the folio has one, else refcount >= 1024."""
    if m.config.has_pincount(folio.order):
        return folio.pincount > 0
    return folio.refcount >= GUP_PIN_COUNTING_BIAS


def folio_needs_cow_for_dma(m: Machine, src: MM, f: SimFolio) -> bool:
    """``folio_needs_cow_for_dma()``: MMF_HAS_PINNED on the source MM and maybe pinned."""
    return src.has_pinned and folio_maybe_dma_pinned(m, f.core())


class _SortedPtes:
    """The parent's present PTEs in address order, sorted once per fork (re-sorted only when a PMD split
    added PTEs): each VMA's copy then costs its present entries, not its size."""

    __slots__ = ("_mm", "_size", "_vpns")

    def __init__(self, mm: MM) -> None:
        self._mm = mm
        self._size = -1
        self._vpns: list[int] = []

    def between(self, start: int, end: int) -> list[int]:
        if self._size != len(self._mm.ptes):  # copy_page_range() only ever adds PTEs to the parent
            self._vpns = sorted(self._mm.ptes)
            self._size = len(self._vpns)
        return self._vpns[bisect.bisect_left(self._vpns, start):bisect.bisect_left(self._vpns, end)]


def dup_mmap(m: Machine, src: MM, dst: MM) -> None:
    """Copy every VMA (but VM_DONTFORK ones) and, where needed, its page tables."""
    copied = []
    ptes = _SortedPtes(src)
    for vma in list(src.vmas):
        if vma.dontfork:
            continue
        child_vma = vma.clone()
        if vma.anon_vma is not None:  # anon_vma_fork(): the child's anon_vma chains to the parent's
            child_vma.anon_vma_forked = True
        dst.insert_vma(child_vma)
        copied.append(vma)
        if vma.anon_vma is None:  # vma_needs_copy(): the child will refault
            continue
        copy_page_range(m, src, dst, vma, ptes)
    m.ref.fork(src, dst, copied)
    m.emit("fork", f"{dst.name}: {len(dst.vmas)} VMAs copied from {src.name}, "
                   f"{len(dst.ptes)} PTEs and {len(dst.pmds)} PMDs present", mm=dst.name)


def copy_page_range(m: Machine, src: MM, dst: MM, vma: Vma, ptes: _SortedPtes | None = None) -> None:
    """``copy_page_range()``: the present PMDs, then the present PTEs of ``vma`` (never its empty slots)."""
    order = m.pmd_order
    for idx in m._pmds_in(src, vma.start, vma.end):
        copy_huge_pmd(m, src, dst, vma, idx, src.pmds[idx])
    vpns = (ptes or _SortedPtes(src)).between(vma.start, vma.end)
    i = 0
    prealloc = False
    while i < len(vpns):
        vpn = vpns[i]
        pte = src.ptes[vpn]
        f = pte.folio
        dst.pte_tables.add(vpn >> order)
        if f.is_zero:
            dst.ptes[vpn] = Pte(f, 0, False)
            i += 1
            continue
        if not prealloc and f.order > 0:
            nr = m._batch(src, vpns, i, vma.end)
            m.get(f, nr)  # references before the rmap dup
            if f.is_anon:
                if folio_needs_cow_for_dma(m, src, f) and any(f.exclusive[pte.page:pte.page + nr]):
                    m.put(f, nr)  # -EBUSY -> -EAGAIN: retry with a preallocated folio
                    m.emit("fork", f"{f.name}: maybe pinned and exclusive: batch refused, retry page by page")
                    prealloc = True
                    continue
                f.exclusive[pte.page:pte.page + nr] = [False] * nr
            m._rmap_dup(f, dst, PTE, pte.page, nr)
            _install(src, dst, vma, vpn, nr)
            i += nr
            continue
        m.get(f)
        if f.is_anon and folio_needs_cow_for_dma(m, src, f) and f.exclusive[pte.page]:
            m.put(f)
            if not prealloc:
                prealloc = True
                continue
            copy_present_page(m, dst, vma, vpn, pte)
            prealloc = False
            i += 1
            continue
        if f.is_anon:
            f.exclusive[pte.page] = False
        m._rmap_dup(f, dst, PTE, pte.page, 1)
        _install(src, dst, vma, vpn, 1)
        i += 1


def _install(src: MM, dst: MM, vma: Vma, vpn: int, nr: int) -> None:
    """``__copy_present_ptes()``: write-protect both sides in a CoW mapping, then set the child's PTEs."""
    for k in range(nr):
        pte = src.ptes[vpn + k]
        if vma.is_cow:
            pte.write = False
        dst.ptes[vpn + k] = Pte(pte.folio, pte.page, pte.write, pte.dirty and vma.is_cow)  # shared: pte_mkclean()


def copy_present_page(m: Machine, dst: MM, vma: Vma, vpn: int, pte: Pte) -> None:
    """``copy_present_page()``: the child gets its own copy; the parent's PTE stays as it is."""
    new = m.alloc_folio(FolioKind.ANON, 0, [pte.folio.data[pte.page]])
    m._map_new_anon(new, dst)
    new.exclusive[0] = True
    dst.ptes[vpn] = Pte(new, 0, vma.write)
    m.counters["fork early copy"] += 1
    m.emit("fork", f"{dst.name}: {pte.folio.name} page {pte.page} at {vpn << PAGE_SHIFT:#x} may be pinned: "
                   f"child gets copy {new.name} now", folio=new.name)


def copy_huge_pmd(m: Machine, src: MM, dst: MM, vma: Vma, idx: int, pmd: Pmd) -> None:
    """``copy_huge_pmd()``: dup the PMD, or split the parent's PMD when the THP may be pinned."""
    f = pmd.folio
    if f.is_zero:
        dst.pmds[idx] = Pmd(f, False)
        return
    m.get(f)
    if f.exclusive[0] and folio_needs_cow_for_dma(m, src, f):
        m.put(f)
        m.split_pmd(src, idx, "fork of a maybe-pinned PMD THP")
        return
    f.exclusive[0] = False
    m._rmap_dup(f, dst, PMD)
    pmd.write = False
    dst.pmds[idx] = Pmd(f, False)
