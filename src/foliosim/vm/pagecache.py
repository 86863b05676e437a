"""Files and shmem objects with their page cache.

A page-cache folio is shared by every task that maps the file: each mapping
adds rmap and a reference; the page cache itself holds ``nr_pages``
references (filemap_add_folio()). Nothing is ever evicted or written back.
A regular file is read in at first use; a shmem object has no backing store
(no swap here), so a shmem object made by ``file`` is cached whole at creation,
and anonymous shared memory gets its folios at the first fault of each range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foliosim.vm.memory import SparsePages
from foliosim.vm.pagetable import SimFolio


@dataclass(slots=True, eq=False)
class SimFile:
    """A regular file or a shmem object: its on-disk pages and its cached folios.

    ``order`` is the folio order the page cache allocates (large folios of
    file systems / shmem huge=, simplified to one order per file). ``anon``
    marks an unlinked shmem object: the one behind MAP_SHARED|MAP_ANONYMOUS
    memory (shmem_zero_setup()), and a scenario's ``file ... shmem`` object,
    which is unlinked like a memfd. mm/shmem.c ``shmem_mmap()`` gives every
    VMA of an inode without links ``shmem_anon_vm_ops``, so
    ``vma_is_anon_shmem()`` is true for its VMAs (and ``finish_fault()`` maps
    whole folios there).
    """

    name: str
    nr_pages: int
    order: int = 0
    shmem: bool = False
    disk: SparsePages = field(default_factory=lambda: SparsePages(0))  # zero pages unless given
    cache: dict[int, SimFolio] = field(default_factory=dict)  # every cached page index -> folio
    anon: bool = False

    def __post_init__(self) -> None:
        if len(self.disk) != self.nr_pages:
            self.disk = SparsePages(self.nr_pages)

    def lookup(self, index: int) -> SimFolio | None:
        return self.cache.get(index)

    def content(self, index: int) -> bytes:
        """What a read of page ``index`` returns (cached folio, else the disk)."""
        folio = self.cache.get(index)
        if folio is None:
            return self.disk[index]
        return folio.data[index - folio.index]

    def folio_range(self, index: int) -> tuple[int, int]:
        """The aligned page-index range a new folio for ``index`` covers."""
        nr = 1 << self.order
        first = index & ~(nr - 1)
        return first, min(nr, self.nr_pages - first)
