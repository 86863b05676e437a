"""Virtual memory areas (``struct vm_area_struct``), in page units.

VMAs are the syscall-level truth both the physical model and the isolation
oracle read: which range is mapped, with which protection, backed by what.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foliosim.vm.pagecache import SimFile


@dataclass(slots=True)
class Vma:
    """One mapping ``[start, end)`` in virtual page numbers.

    ``file`` is None for private anonymous memory; MAP_SHARED|MAP_ANONYMOUS
    memory is backed by an anonymous shmem file, as in the kernel
    (shmem_zero_setup()). ``anon_vma`` is set once an anonymous folio was
    mapped (anon_vma_prepare()); fork only copies page tables of VMAs that
    have one (vma_needs_copy()).
    """

    start: int
    end: int
    read: bool
    write: bool
    shared: bool
    file: SimFile | None = None
    pgoff: int = 0  # file page index of ``start``
    thp: frozenset[int] = frozenset()  # anon folio orders a fault may allocate (besides 0)
    label: str = ""
    dontfork: bool = False  # VM_DONTFORK
    softdirty_wp: bool = False  # clear_refs soft-dirty armed (VM_SOFTDIRTY cleared): write faults must be taken
    anon_vma: int | None = None
    anon_vma_forked: bool = False  # the anon_vma was cloned at fork: its anon_vma_chain is not singular
    exec: bool = False  # VM_EXEC: changes no fault here, but VMAs that differ in it never merge
    noreserve: bool = False  # VM_NORESERVE (MAP_NORESERVE): not accounted; only decides merging here
    account: bool = False  # VM_ACCOUNT: set for private writable memory (mmap, or mprotect making it writable)

    @property
    def pages(self) -> int:
        return self.end - self.start

    @property
    def is_anon(self) -> bool:
        return self.file is None

    @property
    def is_cow(self) -> bool:
        """``is_cow_mapping()``: private and may become writable (VM_MAYWRITE always set here)."""
        return not self.shared

    @property
    def wants_writenotify(self) -> bool:
        """mm/mmap.c ``vma_wants_writenotify()``: a writable shared mapping whose PTEs start read-only so that
        the first write to each page faults.

        A regular file wants it (its vm_ops have ``page_mkwrite``, as ext4's, and the mapping does dirty
        accounting, ``mapping_can_writeback()``); shmem has neither (``shmem_vm_ops`` and
        ``shmem_anon_vm_ops`` have no ``page_mkwrite``, tmpfs does no writeback), so a shmem mapping wants it
        only while soft-dirty tracking is armed (``vma_soft_dirty_enabled()``: clear_refs cleared
        VM_SOFTDIRTY). userfaultfd-wp, the remaining reason, is not modelled.
        """
        if not (self.shared and self.write) or self.file is None:
            return False
        return not self.file.shmem or self.softdirty_wp

    @property
    def maps_writable(self) -> bool:
        """Whether ``vm_page_prot`` (``vma_set_page_prot()``) carries the write bit: a writable shared
        mapping without write-notify. Every PTE made from it is writable, on a read fault too
        (``set_pte_range()`` in ``finish_fault()``/``filemap_map_pages()``), and mprotect()'s
        ``change_protection()`` applies it to present PTEs. Private mappings never have it (copy-on-write)."""
        return self.shared and self.write and not self.wants_writenotify

    def file_index(self, vpn: int) -> int:
        return self.pgoff + (vpn - self.start)

    def clone(self, **changes: object) -> Vma:
        return replace(self, **changes)  # type: ignore[arg-type]

    def kind_name(self) -> str:
        if self.file is None:
            return "anon"
        return f"{'shmem' if self.file.shmem else 'file'}:{self.file.name}"

    def prot_name(self) -> str:
        return ("r" if self.read else "-") + ("w" if self.write else "-") + ("x" if self.exec else "")

    def describe(self) -> str:
        share = "shared" if self.shared else "private"
        return f"{self.label or '?'} {self.kind_name()} {share} {self.prot_name()}"

    def mergeable_with(self, nxt: Vma) -> bool:
        """Whether ``nxt`` (starting at our end) could be merged into us (vma_merge())."""
        if self.end != nxt.start:
            return False
        same = (self.read, self.write, self.exec, self.noreserve, self.account, self.shared, self.file, self.thp,
                self.dontfork, self.softdirty_wp) == (nxt.read, nxt.write, nxt.exec, nxt.noreserve, nxt.account,
                                                      nxt.shared, nxt.file, nxt.thp, nxt.dontfork, nxt.softdirty_wp)
        if not same:
            return False
        if self.file is not None and nxt.pgoff != self.pgoff + self.pages:
            return False
        # mm/vma.c is_mergeable_anon_vma() (Linux 6.16+, as the live kernel does): two anon_vmas must be the
        # same; one alone is taken over by the merged VMA unless it was cloned at fork (vma_had_uncowed_parents():
        # a forked VMA that has an anon_vma never merges with one that has none)
        if self.anon_vma is not None and nxt.anon_vma is not None:
            return self.anon_vma == nxt.anon_vma
        holder = self if self.anon_vma is not None else nxt
        return holder.anon_vma is None or not holder.anon_vma_forked


def _vma_start(vma: Vma) -> int:
    return vma.start


# The VMA lookups of an address space, over its VMA list sorted by start and non-overlapping: one home for the
# reference MM (foliosim.vm.mm) and the compiled simulator's FastMM (foliosim.fast.sim.engine).


def find_vma(vmas: list[Vma], vpn: int) -> Vma | None:
    """mm/mmap.c ``vma_lookup()``: the VMA containing ``vpn`` (a binary search: O(log VMAs))."""
    idx = bisect.bisect_right(vmas, vpn, key=_vma_start) - 1
    if idx >= 0 and vmas[idx].end > vpn:
        return vmas[idx]
    return None


def vmas_in(vmas: list[Vma], start: int, end: int) -> list[Vma]:
    """The VMAs overlapping ``[start, end)``, in address order (``for_each_vma_range()``)."""
    first = max(0, bisect.bisect_right(vmas, start, key=_vma_start) - 1)
    out = []
    for vma in vmas[first:]:
        if vma.start >= end:
            break
        if vma.end > start:
            out.append(vma)
    return out


def covered(vmas: list[Vma], start: int, end: int) -> bool:
    """Whether VMAs cover every page of ``[start, end)`` without holes."""
    pos = start
    for vma in vmas_in(vmas, start, end):
        if vma.start > pos:
            return False
        pos = vma.end
    return pos >= end


def insert_vma(vmas: list[Vma], vma: Vma) -> None:
    """Insert ``vma`` keeping the list sorted by start (``vma_link()``)."""
    bisect.insort(vmas, vma, key=_vma_start)


class VmaList:
    """The VMA lookups of an address space that keeps ``vmas`` sorted by start: shared by the reference
    :class:`foliosim.vm.mm.MM` and the compiled simulator's ``FastMM``, so that both behave identically."""

    __slots__ = ()
    vmas: list[Vma]

    def find_vma(self, vpn: int) -> Vma | None:
        """``vma_lookup()``: the VMA containing ``vpn``."""
        return find_vma(self.vmas, vpn)

    def vmas_in(self, start: int, end: int) -> list[Vma]:
        """The VMAs overlapping ``[start, end)``, in address order."""
        return vmas_in(self.vmas, start, end)

    def covered(self, start: int, end: int) -> bool:
        """Whether VMAs cover every page of ``[start, end)`` without holes."""
        return covered(self.vmas, start, end)

    def insert_vma(self, vma: Vma) -> None:
        insert_vma(self.vmas, vma)
