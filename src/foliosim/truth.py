"""Ground truth for one folio: which MM maps which page, and how.

The kernel does not keep this (that is the point of the owner tracking); the
model keeps it to validate operations (an MM can only unmap what it maps) and
to judge the kernel's answers (soundness, precision).
"""

from __future__ import annotations

from collections.abc import Hashable


class FolioTruth:
    """Per-MM PTE mapping counts of each page and per-MM PMD mapping counts."""

    __slots__ = ("nr_pages", "pmd", "pte", "total")

    def __init__(self, nr_pages: int) -> None:
        self.nr_pages = nr_pages
        self.pte: dict[Hashable, list[int]] = {}
        self.pmd: dict[Hashable, int] = {}
        self.total: dict[Hashable, int] = {}  # page-table entries per MM (PTEs + PMDs)

    def mm_maps_ptes(self, mm: Hashable, page: int, nr: int) -> bool:
        counts = self.pte.get(mm)
        return counts is not None and min(counts[page:page + nr]) >= 1

    def any_maps_ptes(self, page: int, nr: int) -> bool:
        return all(any(counts[idx] for counts in self.pte.values()) for idx in range(page, page + nr))

    def mm_maps_pmd(self, mm: Hashable) -> bool:
        return self.pmd.get(mm, 0) > 0

    def any_maps_pmd(self) -> bool:
        return any(self.pmd.values())

    def add_ptes(self, mm: Hashable, page: int, nr: int) -> None:
        counts = self.pte.get(mm)
        if counts is None:
            counts = self.pte[mm] = [0] * self.nr_pages
        for idx in range(page, page + nr):
            counts[idx] += 1
        self.total[mm] = self.total.get(mm, 0) + nr

    def remove_ptes(self, mm: Hashable, page: int, nr: int) -> None:
        counts = self.pte[mm]
        for idx in range(page, page + nr):
            counts[idx] -= 1
        self._drop(mm, nr)
        if not any(counts):
            del self.pte[mm]

    def add_pmd(self, mm: Hashable) -> None:
        self.pmd[mm] = self.pmd.get(mm, 0) + 1
        self.total[mm] = self.total.get(mm, 0) + 1

    def remove_pmd(self, mm: Hashable) -> None:
        self.pmd[mm] -= 1
        if not self.pmd[mm]:
            del self.pmd[mm]
        self._drop(mm, 1)

    def _drop(self, mm: Hashable, nr: int) -> None:
        left = self.total[mm] - nr
        if left:
            self.total[mm] = left
        else:
            del self.total[mm]

    def mapped_mms(self) -> list[Hashable]:
        """The MMs that map at least one page (sorted by their string form)."""
        return sorted(self.total, key=str)

    def nr_mapping_mms(self) -> int:
        return len(self.total)

    def entries(self, mm: Hashable) -> int:
        """Page-table entries of ``mm`` that map this folio (a PMD counts 1)."""
        return self.total.get(mm, 0)

    def pte_mapcount(self, page: int) -> int:
        """PTE mappings of ``page`` over all MMs."""
        return sum(counts[page] for counts in self.pte.values())

    def total_entries(self) -> int:
        return sum(self.total.values())

    def pmd_entries(self) -> int:
        return sum(self.pmd.values())
