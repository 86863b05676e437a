"""What one rmap update costs: atomic RMWs, lock acquisitions and cache lines written.

The scope is the mapcount bookkeeping of mm/rmap.c v6.15 (``__folio_add_rmap()``,
``__folio_remove_rmap()``, ``folio_add_new_anon_rmap()``) and include/linux/rmap.h
(``__folio_dup_file_rmap()`` / ``__folio_try_dup_anon_rmap()``, the large-mapcount
helpers): per-page ``_mapcount``, ``_entire_mapcount``, ``_nr_pages_mapped``, the total
(large) mapcount and each design's sharing-tracking state. Refcounts, AnonExclusive
page flags, statistics and mlock are left out: they are the same for every design.

Every design runs on the same kernel configuration, so under CONFIG_PAGE_MAPCOUNT
every design pays the per-page ``_mapcount`` atomics and the ``_nr_pages_mapped``
atomic (:class:`PageMapcounts`); each design adds its own tracking cost on top. The
derivation of every number is in docs/cost-model.md.

Cache lines are 64-byte lines of the memmap (``struct page`` is 64 bytes on 64-bit,
32 bytes on a 32-bit kernel, so two pages share a line there), numbered from the
folio's head page; :data:`OUTSIDE_MEMMAP` stands for a line of a separate allocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD
from foliosim.system import Op

#: Bytes per cache line.
LINE_BYTES = 64
#: A cache line outside the folio's memmap (e.g. ``exact``'s per-folio table).
OUTSIDE_MEMMAP = -1


def struct_page_bytes(config: KernelConfig) -> int:
    """``sizeof(struct page)``: 64 on 64-bit (measured from this machine's BTF), 32 on 32-bit."""
    return 64 if config.is_64bit else 32


def page_line(config: KernelConfig, page: int) -> int:
    """The memmap cache line holding ``struct page`` number ``page`` of the folio."""
    return page * struct_page_bytes(config) // LINE_BYTES


def meta_line(config: KernelConfig) -> int:
    """The line of page[1]: ``_large_mapcount``, ``_nr_pages_mapped``, ``_mm_id_mapcount``, ``_mm_ids``.

    include/linux/mm_types.h (v6.15) struct folio keeps them in the first tail page on
    both word sizes; on 64-bit ``_entire_mapcount`` is there too (offsets 80..111 here).
    """
    return page_line(config, 1)


def entire_line(config: KernelConfig) -> int:
    """The line of ``_entire_mapcount``: page[1] on 64-bit, page[2] on 32-bit."""
    return page_line(config, 1 if config.is_64bit else 2)


@dataclass(slots=True)
class Charge:
    """Part of an update's cost: atomic RMWs (a lock acquire counts as one), lock acquisitions, lines.

    The lines written are ``lines`` plus the contiguous run ``span`` (first, last line
    of a PTE batch's ``_mapcount`` words; None when there is none), kept apart so that
    a 512-page batch does not build a set.
    """

    atomics: int = 0
    locks: int = 0
    lines: frozenset[int] | set[int] = field(default_factory=frozenset)
    span: tuple[int, int] | None = None

    def __add__(self, other: Charge) -> Charge:
        if self.span is not None and other.span is not None:
            raise ValueError("two line runs in one charge")
        return Charge(self.atomics + other.atomics, self.locks + other.locks, frozenset(self.lines | other.lines),
                      self.span if self.span is not None else other.span)

    def line_count(self) -> int:
        """Distinct cache lines written."""
        if self.span is None:
            return len(self.lines)
        lo, hi = self.span
        return hi - lo + 1 + sum(1 for line in self.lines if not lo <= line <= hi)


#: The charge of no work (shared: callers must not change it).
NO_CHARGE = Charge()


class PageMapcounts:
    """The rmap code's own counters, which every design's kernel maintains alike.

    Keeps each large folio's per-page mapcounts and entire mapcount (logical values)
    so that it knows, like ``__folio_add_rmap()`` / ``__folio_remove_rmap()``, whether
    a PTE batch newly mapped ("first") or unmapped ("last") any page, or whether a PMD
    mapping was the first or last one: only then is ``_nr_pages_mapped`` updated.
    With ``page_mapcount`` False (CONFIG_NO_PAGE_MAPCOUNT) no per-page state is kept.
    """

    def __init__(self, config: KernelConfig, page_mapcount: bool) -> None:
        self.config = config
        self.page_mapcount = page_mapcount
        self.pages: dict[str, list[int]] = {}
        self.entire: dict[str, int] = {}
        self._meta = meta_line(config)
        self._entire = entire_line(config)
        self._page0 = page_line(config, 0)
        self._per_line = LINE_BYTES // struct_page_bytes(config)  # struct pages per cache line
        self._pmd_order = config.pmd_order
        self._small_lines = frozenset((self._page0,))
        self._meta_lines = frozenset((self._meta,))
        self._pmd_lines = frozenset((self._meta, self._entire))

    def new(self, folio: str, order: int) -> None:
        if order:
            self.entire[folio] = 0
            if self.page_mapcount:
                self.pages[folio] = [0] * (1 << order)

    def free(self, folio: str) -> None:
        self.pages.pop(folio, None)
        self.entire.pop(folio, None)

    def charge(self, op: Op, folio: str, order: int) -> Charge:
        """The bookkeeping cost outside the sharing tracking, and the state change, of ``op``."""
        atomics, lines, lo, hi = self.account(op.op, op.level is PMD, folio, order, op.page, op.nr)
        return Charge(atomics, 0, lines, None if lo < 0 else (lo, hi))

    def account(self, kind: str, pmd_level: bool, folio: str, order: int, page: int,
                nr: int) -> tuple[int, frozenset[int], int, int]:
        """:meth:`charge` as plain values: (atomics, lines, first and last line of the run or -1, -1).

        The lines are shared frozensets (no lock is ever taken here), so a caller may key a cache on them.
        """
        if order == 0:
            # folio_add_new_anon_rmap(): atomic_set (a store); add/dup/remove: atomic_inc*/add_negative.
            return (0 if kind == "map_new_anon" else 1), self._small_lines, -1, -1
        # the total mapcount's line is written by every design
        if pmd_level or (kind == "map_new_anon" and order >= self._pmd_order):
            return self._pmd(kind, folio)
        if not self.page_mapcount:
            return 0, self._meta_lines, -1, -1
        first = 0 if kind == "map_new_anon" else page
        if kind == "map_new_anon":
            nr = 1 << order
        per_line = self._per_line
        lo, hi = first // per_line, (first + nr - 1) // per_line
        counts = self.pages[folio]
        end = first + nr
        if kind == "map_new_anon":  # atomic_set(&page->_mapcount, 0) per page, _nr_pages_mapped set
            counts[:] = [1] * nr
            return 0, self._meta_lines, lo, hi
        seg = counts[first:end]
        if kind == "unmap":  # atomic_add_negative(-1) per page; atomic_sub_return_relaxed if any went away
            counts[first:end] = [c - 1 for c in seg]
            return nr + (1 in seg), self._meta_lines, lo, hi
        # map: atomic_inc_and_test per page (+ _nr_pages_mapped if one was unmapped); dup: atomic_inc per page.
        counts[first:end] = [c + 1 for c in seg]
        return nr + (kind == "map" and 0 in seg), self._meta_lines, lo, hi

    def _pmd(self, kind: str, folio: str) -> tuple[int, frozenset[int], int, int]:
        entire = self.entire[folio]
        lines = self._pmd_lines
        if kind == "map_new_anon":  # atomic_set(&folio->_entire_mapcount, 0): a store
            self.entire[folio] = 1
            return 0, lines, -1, -1
        if kind == "unmap":  # atomic_add_negative(-1, _entire_mapcount); last -> atomic_sub_return_relaxed
            self.entire[folio] = entire - 1
            return 1 + (self.page_mapcount and entire == 1), lines, -1, -1
        self.entire[folio] = entire + 1  # atomic_inc_and_test / atomic_inc
        return 1 + (self.page_mapcount and kind == "map" and entire == 0), lines, -1, -1
