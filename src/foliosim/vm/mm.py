"""Tasks and ``struct mm_struct`` with the kernel's two reference counts.

``users`` is ``mm_users`` (threads, vfork children, mmget() holders): when it
drops to 0, exit_mmap() zaps every mapping. ``count`` is ``mm_count``: all
users together hold one, mmgrab() holders (such as a CPU's lazy-TLB
reference) one each; when it drops to 0, __mmdrop() frees the MM id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foliosim.vm.pagetable import Pmd, Pte
from foliosim.vm.vma import Vma, VmaList


@dataclass(slots=True, eq=False)
class MM(VmaList):
    """An address space: VMAs, page tables, counts, flags."""

    name: str
    mm_id: int
    users: int = 1  # mm_users
    count: int = 1  # mm_count (the users' shared reference included)
    vmas: list[Vma] = field(default_factory=list)  # sorted by start, non-overlapping
    ptes: dict[int, Pte] = field(default_factory=dict)  # vpn -> PTE
    pmds: dict[int, Pmd] = field(default_factory=dict)  # vpn >> pmd_order -> PMD
    pte_tables: set[int] = field(default_factory=set)  # PMD slots that have a page table (not pmd_none)
    has_pinned: bool = False  # MMF_HAS_PINNED
    zapped: bool = False  # exit_mmap() ran
    label: str = ""  # the task that created it, for display

    @property
    def alive(self) -> bool:
        return self.count > 0


@dataclass(slots=True, eq=False)
class Task:
    """A task (thread or process leader) and the MM it runs on."""

    pid: int
    name: str
    mm: MM
    tgid: int
    vfork_parent: Task | None = None  # set while this vfork child has not exec'd or exited
    vfork_blocked: bool = False  # the parent sleeps in vfork
    alive: bool = True
