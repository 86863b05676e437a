"""Physical pages and page-table entries: the simulator's folios, PTEs and PMDs.

A :class:`SimFolio` wraps the core :class:`~foliosim.folio.Folio` (mapcounts,
owner slots, refcount, pincount) and adds what the rmap layer does not keep:
page contents, the per-page PageAnonExclusive flag, page-cache membership and
the GUP references the simulator took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from foliosim.folio import Folio

if TYPE_CHECKING:
    from foliosim.vm.pagecache import SimFile


class FolioKind(StrEnum):
    ANON = "anon"
    FILE = "file"
    SHMEM = "shmem"
    ZERO = "zero"  # the shared zero page / huge zero page: no rmap, no refcount


@dataclass(slots=True, eq=False)
class SimFolio:
    """A folio as the simulator sees it.

    ``folio`` is None only for the zero pages, which the kernel never
    rmap-accounts (vm_normal_page() returns NULL for them).
    """

    name: str
    kind: FolioKind
    order: int
    folio: Folio | None
    data: list[bytes]
    exclusive: list[bool] = field(default_factory=list)  # PageAnonExclusive per page
    file: SimFile | None = None
    index: int = 0  # page-cache index of page 0
    pins: int = 0  # FOLL_PIN pins held (one per page pinned)
    refs: int = 0  # plain FOLL_GET references held (vmsplice)
    deferred_split: bool = False  # queued by deferred_split_folio()
    freed: bool = False

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    @property
    def is_anon(self) -> bool:
        return self.kind is FolioKind.ANON

    @property
    def is_zero(self) -> bool:
        return self.kind is FolioKind.ZERO

    @property
    def refcount(self) -> int:
        return self.folio.refcount if self.folio is not None else 1

    def core(self) -> Folio:
        """The rmap-layer folio (never called on a zero page)."""
        assert self.folio is not None, f"{self.name} has no rmap state"
        return self.folio


@dataclass(slots=True)
class Pte:
    """A present PTE: which page of which folio, whether it is writable, and whether it is dirty.

    ``dirty`` is pte_dirty(): set by a write fault (pte_mkdirty()) or a store through a writable PTE
    (the hardware's dirty bit). It matters only in shared mappings with write-notify, where
    mprotect() makes a dirty PTE writable again (mm/mprotect.c can_change_pte_writable()).
    """

    folio: SimFolio
    page: int
    write: bool
    dirty: bool = False


@dataclass(slots=True)
class Pmd:
    """A PMD mapping a whole PMD-order folio (or the huge zero page)."""

    folio: SimFolio
    write: bool
