"""The control-plane rules of mmap()/munmap()/mprotect()/mremap()/madvise() that do not depend on how page tables
are stored: argument checks, the unmapped-area choice, VMA split and merge, the access check of read()/write().

One home for the reference :class:`foliosim.vm.machine.Machine` and the compiled simulator's
:class:`foliosim.fast.sim.engine.FastMachine`, which both call these (mm/mmap.c, mm/vma.c).
"""

from __future__ import annotations

from foliosim.vm.events import SimError
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE
from foliosim.vm.vma import Vma, find_vma


def page_range(addr: int, length: int) -> tuple[int, int] | None:
    """The pages ``[start, end)`` of a byte range, or None when ``addr`` is unaligned or negative or ``length`` is
    not positive (the EINVAL checks of munmap()/mprotect()/madvise(), mm/mmap.c ``do_vmi_munmap()``)."""
    if addr < 0 or addr % PAGE_SIZE or length <= 0:
        return None
    start = addr >> PAGE_SHIFT
    return start, start + (length + PAGE_SIZE - 1) // PAGE_SIZE


def mmap_args_error(length: int, offset: int, addr: int | None, file_pages: int | None) -> str | None:
    """mm/mmap.c ``do_mmap()``'s EINVAL checks: None when the arguments are valid, else why they are not ("" when
    the reason needs no words). ``file_pages`` is the backing file's size in pages (None for anonymous memory)."""
    if length <= 0 or offset % PAGE_SIZE or offset < 0 or (addr is not None and addr % PAGE_SIZE):
        return ""
    nr = (length + PAGE_SIZE - 1) // PAGE_SIZE
    if file_pages is not None and (offset >> PAGE_SHIFT) + nr > file_pages:
        return "the range extends past the end of the file"
    return None


def unmapped_area(base: int, nr: int, align: int) -> tuple[int, int]:
    """``get_unmapped_area()``, simplified: the first ``align``-aligned page at or above ``base`` for ``nr`` pages,
    and the next base (a gap of ``align`` pages after it, so that mappings never merge by accident)."""
    start = (base + align - 1) & ~(align - 1)
    return start, start + nr + align


def check_anon_order(order: int, pmd_order: int) -> None:
    """Refuse an anonymous folio order the kernel cannot allocate (mm/huge_memory.c: anon mTHP orders are 2..PMD;
    order 1 is not allowed for anonymous memory)."""
    if order == 1 or not 2 <= order <= pmd_order:
        raise SimError(f"anonymous THP order {order} is not supported: anon mTHP orders are "
                       f"2..{pmd_order} (order 1 is not allowed for anon memory)")


def split_vma(vma: Vma, vpn: int) -> Vma:
    """mm/vma.c ``__split_vma()``: cut ``vma`` at ``vpn``; returns the new tail (the caller inserts it)."""
    tail = vma.clone(start=vpn, pgoff=vma.pgoff + (vpn - vma.start) if vma.file else vma.pgoff)
    vma.end = vpn
    return tail


def merge_vmas(vmas: list[Vma]) -> None:
    """mm/vma.c ``vma_merge()``: adjacent compatible VMAs of the sorted list become one, in place."""
    merged: list[Vma] = []
    for vma in vmas:
        if merged and merged[-1].mergeable_with(vma):
            prev = merged[-1]
            prev.end = vma.end
            if prev.anon_vma is None:
                prev.anon_vma, prev.anon_vma_forked = vma.anon_vma, vma.anon_vma_forked
            if not prev.label:
                prev.label = vma.label
        else:
            merged.append(vma)
    vmas[:] = merged


def first_bad_access(vmas: list[Vma], start: int, end: int, write: bool) -> tuple[int, Vma | None] | None:
    """The first page of ``[start, end)`` that no VMA maps or whose VMA forbids the access (a SIGSEGV in
    mm/memory.c ``handle_mm_fault()``'s callers), with that VMA (None: no mapping); None when all is allowed."""
    vpn = start
    while vpn < end:
        vma = find_vma(vmas, vpn)
        if vma is None or not (vma.write if write else vma.read):
            return vpn, vma
        vpn = vma.end
    return None
