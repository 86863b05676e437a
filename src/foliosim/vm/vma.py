"""Virtual memory areas (``struct vm_area_struct``), in page units.

VMAs are the syscall-level truth both the physical model and the isolation
oracle read: which range is mapped, with which protection, backed by what.
"""

from __future__ import annotations

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
    softdirty_wp: bool = False  # clear_refs soft-dirty: write faults must be taken
    anon_vma: int | None = None

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

    def file_index(self, vpn: int) -> int:
        return self.pgoff + (vpn - self.start)

    def clone(self, **changes: object) -> Vma:
        return replace(self, **changes)  # type: ignore[arg-type]

    def kind_name(self) -> str:
        if self.file is None:
            return "anon"
        return f"{'shmem' if self.file.shmem else 'file'}:{self.file.name}"

    def prot_name(self) -> str:
        return ("r" if self.read else "-") + ("w" if self.write else "-")

    def describe(self) -> str:
        share = "shared" if self.shared else "private"
        return f"{self.label or '?'} {self.kind_name()} {share} {self.prot_name()}"

    def mergeable_with(self, nxt: Vma) -> bool:
        """Whether ``nxt`` (starting at our end) could be merged into us (vma_merge())."""
        if self.end != nxt.start:
            return False
        same = (self.read, self.write, self.shared, self.file, self.thp, self.dontfork,
                self.softdirty_wp) == (nxt.read, nxt.write, nxt.shared, nxt.file, nxt.thp,
                                       nxt.dontfork, nxt.softdirty_wp)
        if not same:
            return False
        if self.file is not None and nxt.pgoff != self.pgoff + self.pages:
            return False
        return self.anon_vma is None or nxt.anon_vma is None or self.anon_vma == nxt.anon_vma
