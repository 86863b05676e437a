"""A run trace's live snapshots against the simulator's state at the same point, field by field.

``foliosim trace --check-live`` stops a traced process at each fork and exit and records its anonymous pages
(PFN, folio head and order, precise mapcount, pagemap exclusive bit) and, with the BPF folio reader, each
folio's raw fields (docs/run-trace.md). After simulating the events before that point, the simulator's
anonymous pages of the same task are compared page by page as :mod:`foliosim.live.compare` does for
``foliosim live`` (the simulated side read in bulk, once per snapshot: :class:`SimSnapshot`, from a reference
Machine by :func:`reference_pages`, from the compiled engine by its ``snapshot_pages()``): folios are bound
to live head PFNs on first sight and the binding must hold while the simulated folio lives; MM ids are
compared by role (the MM of the task whose snapshot announced the id); a field the live side did not record
is counted as not observed, never as agreeing. Every disagreement is
classified by its likely cause; file pages are counted apart (other processes map them too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from foliosim.folio import (
    folio_entire_mapcount,
    folio_maybe_mapped_shared,
    folio_mm_id,
    folio_test_large_maybe_mapped_shared,
)
from foliosim.vm.memory import PAGE_SHIFT
from foliosim.workloads.runtrace import FOLIO_NULL, SnapshotFolios

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM
    from foliosim.vm.pagetable import SimFolio
    from foliosim.workloads.runtrace import Snapshot

PAGE_FIELDS = ("present", "folio order", "page in folio", "folio identity", "precise mapcount", "pagemap exclusive")
FOLIO_FIELDS = ("refcount", "_large_mapcount", "_entire_mapcount", "_pincount", "_nr_pages_mapped", "slot 0 MM",
                "slot 0 mapcount", "slot 1 MM", "slot 1 mapcount", "shared bit")
#: MM_ID_BITS on 64-bit (include/linux/mm_types.h): the layout of a raw ``_mm_ids`` word
MM_ID_BITS = 31

C_FALLBACK = "the kernel fell back to a smaller folio"
C_LARGER = "the kernel has a larger folio (a collapse, or a folio size the settings do not explain)"
C_NOT_LIVE = "page reclaimed or not present live"
C_NO_FAULT = "present live without a recorded fault (execve's argument pages, a GUP, another access without a fault)"
C_NO_VMA = "in a mapping the trace does not describe (set up by execve, or not expressible)"
C_ZERO = "the simulator maps the zero page there (the write is not in the trace)"
C_FILE = "file page"
C_FILE_KEPT = "the simulator still maps the file page there (the kernel made an anonymous copy)"
C_ORDER = "follows a folio-order difference"
C_DECISION = "another folio: a different copy/reuse decision, or the kernel moved the folio"
C_LRU = "a per-CPU LRU batch holds a reference live"
C_PIN = "construct not modelled (io_uring coalesces the pins of a large folio)"
C_MM_ORDER = ("the same mappings in other slots: MMs came and went in another order than the trace shows "
              "(concurrent fork, exec, exit)")
C_TASK = "task not in the simulator"
C_RACE = ("a fault raced with another process's fault on the page, or its fork, exec or exit (their order inside "
          "overlapping windows is unknown)")
C_PAGE = "follows a page difference in the same folio"
C_OTHER = "not explained"


@dataclass(slots=True)
class FieldCount:
    compared: int = 0
    agreed: int = 0
    not_observed: int = 0

    @property
    def percent(self) -> float | None:
        return 100.0 * self.agreed / self.compared if self.compared else None


@dataclass(frozen=True, slots=True)
class Disagreement:
    line: int
    task: str
    at: str
    addr: int | None
    field: str
    cause: str
    sim: Any
    live: Any

    def describe(self) -> str:
        where = f" at {self.addr:#x}" if self.addr is not None else ""
        return (f"line {self.line} ({self.at} snapshot of {self.task}){where}: {self.field}: simulator {self.sim!r}, "
                f"live {self.live!r} [{self.cause}]")


@dataclass(frozen=True, slots=True)
class SimFolioFields:
    """The fields of one simulated folio the checker compares with a live folio (read once per snapshot)."""

    order: int
    pins: int  # FOLL_PIN pins the simulator holds
    refcount: int
    large_mapcount: int
    entire_mapcount: int
    pincount: int
    nr_pages_mapped: int
    mm_ids: tuple[int, int]  # folio_mm_id() of slots 0 and 1
    mm_id_mapcount: tuple[int, int]
    shared: bool  # the raw shared bit (folio_test_large_maybe_mapped_shared())


#: one simulated anonymous page as a snapshot compares it: (folio name, page in the folio, folio order, precise
#: mapcount as kpagecount shows it, pagemap's exclusive bit, the engine's key of the folio for ``SimSnapshot.folio``)
SimAnonPage = tuple[str, int, int, int, bool, Any]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass(slots=True)
class SimSnapshot:
    """The simulated side of one snapshot: the present pages of the task's MM, read in one pass (what
    :func:`foliosim.live.compare.sim_page` and :func:`foliosim.vm.stats.pagemap` give per page), as columns with
    one row per anonymous page compared with the snapshot's, sorted by page number (:func:`sim_snapshot`)."""

    vpns: I64
    folio: I64  # position of the page's folio in ``names`` and ``keys``
    page: I64  # page in the folio
    order: I64
    mapcount: I64  # precise mapcount as kpagecount shows it
    exclusive: Bools  # pagemap's exclusive bit
    names: list[str]  # per folio: its name
    keys: list[Any]  # per folio: the engine's key of it for ``folios`` and ``refcounts``
    other: dict[int, str]  # vpn -> "zero" (the zero page) or "file" (a file page, or an anonymous copy not compared)
    folios: Callable[[list[Any]], list[SimFolioFields]]  # the fields of folios, from their keys
    refcounts: Callable[[list[Any]], list[int]]  # just their refcounts
    rows: Callable[[list[Any]], I64]  # the fields of folios as rows: the values of FOLIO_FIELDS, MM ids as ids
    zero_pages: int = 0
    file_pages: int = 0
    file_anon_pages: int = 0  # anonymous copies in private file mappings the snapshot does not cover

    def anon_pages(self) -> dict[int, SimAnonPage]:
        """Every row as vpn -> :data:`SimAnonPage` (to read or compare a whole side; the checker reads columns)."""
        return {int(v): self.row(i) for i, v in enumerate(self.vpns.tolist())}

    def row(self, i: int) -> SimAnonPage:
        """Row ``i`` as one :data:`SimAnonPage`."""
        f = int(self.folio[i])
        return (self.names[f], int(self.page[i]), int(self.order[i]), int(self.mapcount[i]), bool(self.exclusive[i]),
                self.keys[f])


def sim_snapshot(vpns: I64, folio: I64, page: I64, order: I64, mapcount: I64, exclusive: Bools, names: list[str],
                 keys: list[Any], other: dict[int, str], folios: Callable[[list[Any]], list[SimFolioFields]],
                 refcounts: Callable[[list[Any]], list[int]], rows: Callable[[list[Any]], I64], zero_pages: int = 0,
                 file_pages: int = 0, file_anon_pages: int = 0) -> SimSnapshot:
    """:class:`SimSnapshot` of columns in any order: sorted by page number, of a page given twice the last row (a
    PMD in two VMAs, as a dict filled in that order keeps it)."""
    at = _last_by_vpn(vpns)
    return SimSnapshot(vpns[at], folio[at], page[at], order[at], mapcount[at], exclusive[at], names, keys, other,
                       folios, refcounts, rows, zero_pages, file_pages, file_anon_pages)


def reference_pages(m: Machine, mm: MM, full: bool) -> SimSnapshot:
    """:class:`SimSnapshot` of ``mm`` on the reference Machine (``full``: the snapshot covers the anonymous copies
    in private file mappings too); per folio the fields are read once."""
    npm = m.config.no_page_mapcount
    rows: list[tuple[int, int, int, int, int, bool]] = []  # (vpn, folio position, page, order, mapcount, exclusive)
    keys: list[SimFolio] = []
    other: dict[int, str] = {}
    zero = file = file_anon = 0
    per: dict[str, tuple[int, list[int], int, int, bool | None]] = {}
    for vma, vpn, f, page, by_pmd in m.iter_mapped(mm):
        if f.is_zero:
            other[vpn] = "zero"
            zero += 1
        elif f.is_anon and (vma.file is None or full):
            c = per.get(f.name)
            if c is None:
                core = f.core()
                large = core.order > 0
                c = per[f.name] = (len(keys), core.page_mapcount, core.entire_mapcount + 1 if large else 0,
                                   folio_entire_mapcount(core) if large else 0,
                                   (not folio_maybe_mapped_shared(core)) if npm and large else None)
                keys.append(f)
            at, counts, entire, precise_entire, excl = c
            if excl is None:  # pagemap: the precise mapcount of the page (of the first page for a PMD) is 1
                excl = counts[0 if by_pmd else page] + 1 + precise_entire == 1
            rows.append((vpn, at, page, f.order, counts[page] + 1 + entire, excl))
        elif f.is_anon:
            other[vpn] = "file"
            file_anon += 1
        else:
            other[vpn] = "file"
            file += 1
    cols = np.array(rows, dtype=np.int64).reshape(-1, 6)  # (a page mapped twice: sim_snapshot keeps the last)
    return sim_snapshot(cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4], cols[:, 5] != 0,
                        [f.name for f in keys], keys, other, reference_folios, reference_refcounts, reference_rows,
                        zero, file, file_anon)


def reference_refcounts(keys: list[SimFolio]) -> list[int]:
    """The refcounts of reference folios."""
    return [f.core().refcount for f in keys]


def reference_rows(keys: list[SimFolio]) -> I64:
    """:func:`field_rows` of reference folios."""
    return field_rows(reference_folios(keys))


def field_rows(states: list[SimFolioFields]) -> I64:
    """:class:`SimFolioFields` as rows of the values of :data:`FOLIO_FIELDS` (the MM slots as ids)."""
    return np.array([[f.refcount, f.large_mapcount, f.entire_mapcount, f.pincount, f.nr_pages_mapped, f.mm_ids[0],
                      f.mm_id_mapcount[0], f.mm_ids[1], f.mm_id_mapcount[1], int(f.shared)] for f in states],
                    dtype=np.int64).reshape(-1, len(FOLIO_FIELDS))


def reference_folios(keys: list[SimFolio]) -> list[SimFolioFields]:
    """:class:`SimFolioFields` of reference folios."""
    out = []
    for f in keys:
        core = f.core()
        out.append(SimFolioFields(f.order, f.pins, core.refcount, core.large_mapcount, core.entire_mapcount,
                                  core.pincount, core.nr_pages_mapped, (folio_mm_id(core, 0), folio_mm_id(core, 1)),
                                  (core.mm_id_mapcount[0], core.mm_id_mapcount[1]),
                                  folio_test_large_maybe_mapped_shared(core)))
    return out


@dataclass(frozen=True, slots=True)
class _Live:
    pfn: int
    head: int
    order: int
    mapcount: int
    exclusive: bool


@dataclass(frozen=True, slots=True)
class _Held:
    """The folios seen at their bound live head in one snapshot, in order of their first such page: position in
    the :class:`SimSnapshot`'s folios, order, live head PFN, address of that page."""

    folio: I64
    order: I64
    head: I64
    addr: I64

    @classmethod
    def of(cls, side: SimSnapshot, pairs: dict[str, tuple[Any, int, int, int]]) -> _Held:
        """From the per-item path's ``pairs`` (folio -> (key, order, live head, first address))."""
        index = {name: i for i, name in enumerate(side.names)}
        cols = [np.array(c, dtype=np.int64) for c in zip(*[(index[name], order, head, addr) for name, (
            _key, order, head, addr) in pairs.items()], strict=True)] or [np.zeros(0, dtype=np.int64)] * 4
        return cls(*cols)


#: one live page as the checker compares it: (pfn, head pfn, folio order, mapcount, exclusive)
LivePage = tuple[int, int, int, int, bool]


@dataclass(slots=True)
class _LivePages:
    """A snapshot's pages as columns sorted by page number (of a page recorded twice the last record)."""

    vpns: I64
    rows: I64  # (N, 6): vaddr, pfn, head_pfn, order, mapcount, exclusive 0/1

    @classmethod
    def of(cls, pages: Any) -> _LivePages:
        """From ``Snapshot.pages``: a list of [vaddr, pfn, head_pfn, order, mapcount, exclusive] or an (N, 6) array."""
        if isinstance(pages, np.ndarray):
            rows = np.asarray(pages, dtype=np.int64).reshape(-1, 6)
        else:  # (a list of lists: read as one flat run of numbers, faster than numpy's nested-list conversion)
            rows = np.fromiter(chain.from_iterable(pages), dtype=np.int64, count=6 * len(pages)).reshape(-1, 6)
        vpns = rows[:, 0] >> PAGE_SHIFT
        at = _last_by_vpn(vpns)
        return cls(vpns[at], rows[at])

    def row(self, i: int) -> LivePage:
        _vaddr, pfn, head, order, mapcount, excl = self.rows[i].tolist()
        return pfn, head, order, mapcount, excl != 0


@dataclass(slots=True)
class _LiveFolios:
    """A snapshot's folios as the checker reads them: found by head PFN, as rows of the values of
    :data:`FOLIO_FIELDS`, or one by one as the recorded object :meth:`SnapshotChecker._folio` reads. From the columns
    the trace reader gives (:class:`~foliosim.workloads.runtrace.SnapshotFolios`) or from json's object (each folio
    made a row when it is asked for, as :func:`_recorded` makes it)."""

    heads: I64  # sorted; with ``at``: the position of each in ``items`` (or in ``bulk``)
    at: I64
    items: list[dict[str, Any]]  # json's object: the recorded folios (read in bulk: empty)
    bulk: SnapshotFolios | None = None

    @classmethod
    def of(cls, folios: Mapping[str, dict[str, Any]]) -> _LiveFolios:
        if isinstance(folios, SnapshotFolios):
            at = np.argsort(folios.heads, kind="stable")
            return cls(folios.heads[at], at, [], folios)
        by_head = {int(k, 0): i for i, k in enumerate(folios)}  # (a head written twice: the last)
        items = list(folios.values())
        keep = [h for h in by_head if _I64_MIN < h <= _I64_MAX]  # (no page has a head beyond int64)
        heads = np.array(keep, dtype=np.int64)
        at = np.argsort(heads, kind="stable")
        return cls(heads[at], np.array([by_head[h] for h in keep], dtype=np.int64)[at], items)

    def find(self, heads: I64) -> I64:
        """The position of the folio at each of ``heads`` (-1: not recorded)."""
        if not len(self.heads):
            return np.full(len(heads), -1, dtype=np.int64)
        i = np.minimum(np.searchsorted(self.heads, heads), len(self.heads) - 1)
        return np.where(self.heads[i] == heads, self.at[i], -1)

    def rows(self, at: I64) -> tuple[I64, Bools]:
        """The folios at ``at`` as rows of the values of :data:`FOLIO_FIELDS` (:data:`_NONE`: not recorded), and
        whether each row holds them all (else that folio is compared per item)."""
        c = self.bulk
        if c is None:
            recorded = [_recorded(self.items[i]) for i in at.tolist()]
            whole = np.array([r is not None for r in recorded], dtype=np.bool_)
            return np.array([r if r is not None else [_NONE] * len(FOLIO_FIELDS) for r in recorded],
                            dtype=np.int64).reshape(-1, len(FOLIO_FIELDS)), whole
        v = c.columns[at]
        raw = v[:, 6]  # the _mm_ids word's bits: slot 0's id, (a lock bit,) slot 1's id, the shared bit
        no_ids = raw == FOLIO_NULL
        mask = (1 << MM_ID_BITS) - 1
        ids0 = np.where(no_ids, _NONE, raw & mask)
        ids1 = np.where(no_ids, _NONE, (raw >> (MM_ID_BITS + 1)) & mask)
        shared = np.where(v[:, 9] != FOLIO_NULL, v[:, 9], np.where(no_ids, _NONE, raw < 0))
        rows = np.column_stack([v[:, 1:6], ids0, v[:, 7], ids1, v[:, 8], shared])
        return rows, np.ones(len(at), dtype=np.bool_)

    def item(self, at: int) -> dict[str, Any]:
        """The recorded folio at ``at`` as :meth:`SnapshotChecker._folio` reads it (from columns: its values, the
        slots' ids as a list and the shared bit as :func:`_slots` reads it)."""
        if self.bulk is None:
            return self.items[at]
        row = self.rows(np.array([at], dtype=np.int64))[0][0].tolist()
        value = [None if x == _NONE else x for x in row]
        return {"refcount": value[0], "large_mapcount": value[1], "entire_mapcount": value[2], "pincount": value[3],
                "nr_pages_mapped": value[4], "mm_ids": None if value[5] is None else [value[5], value[7]],
                "mm_id_mapcount": None if value[6] is None else [value[6], value[8]],
                "shared_bit": None if value[9] is None else bool(value[9])}


@dataclass(slots=True)
class SnapshotChecker:
    """Accumulates the comparison of every snapshot of one run trace."""

    fields: dict[str, FieldCount] = field(default_factory=lambda: {f: FieldCount() for f in (*PAGE_FIELDS,
                                                                                              *FOLIO_FIELDS)})
    causes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (field, cause) -> disagreements
    examples: list[Disagreement] = field(default_factory=list)
    per_snapshot: list[dict[str, Any]] = field(default_factory=list)
    file_pages: int = 0  # simulated file pages of the snapshotted tasks (not in the snapshots: not compared)
    file_diffs: int = 0  # live anonymous pages where the simulator has a file page
    zero_pages: int = 0  # simulated zero-page mappings (no anonymous folio: not compared)
    file_anon_pages: int = 0  # simulated anonymous copies in private file mappings (outside the snapshots)
    folio_of: dict[str, int] = field(default_factory=dict)  # simulated folio -> live head PFN
    sim_of: dict[int, str] = field(default_factory=dict)  # live head PFN -> simulated folio
    role_of_id: dict[int, str] = field(default_factory=dict)  # live MM id -> simulated MM (by role)
    racy: set[str] = field(default_factory=set)  # simulated folios a racy fault (workloads/runtrace.py Race) touched
    racy_heads: set[int] = field(default_factory=set)  # live head PFNs bound to a racy folio (also after it died)
    max_examples: int = 40
    bulk: bool = True  # False: every page and folio through _page() and _folio() (the same report, slower)
    _cur: tuple[int, str, str] = (0, "", "")
    _counts: list[int] = field(default_factory=lambda: [0, 0])

    @property
    def compared(self) -> int:
        return sum(c.compared for c in self.fields.values())

    @property
    def agreed(self) -> int:
        return sum(c.agreed for c in self.fields.values())

    @property
    def snapshots(self) -> int:
        return len(self.per_snapshot)

    # ------------------------------------------------------------------------------------------ counting
    def _cmp(self, name: str, sim: Any, live: Any, cause: str, addr: int | None) -> bool:
        count = self.fields[name]
        count.compared += 1
        self._counts[0] += 1
        if sim == live:
            count.agreed += 1
            self._counts[1] += 1
            return True
        self._disagree(name, sim, live, cause, addr, counted=True)
        return False

    def _disagree(self, name: str, sim: Any, live: Any, cause: str, addr: int | None, counted: bool = False) -> None:
        if cause == C_FILE:  # reported apart: file pages are also mapped outside the traced tree
            if counted:
                self.fields[name].compared -= 1
                self._counts[0] -= 1
            self.file_diffs += 1
            return
        if not counted:
            self.fields[name].compared += 1
            self._counts[0] += 1
        self.causes[(name, cause)] += 1
        if len(self.examples) < self.max_examples:
            line, task, at = self._cur
            self.examples.append(Disagreement(line, task, at, addr, name, cause, sim, live))

    def _unobserved(self, names: tuple[str, ...]) -> None:
        for name in names:
            self.fields[name].not_observed += 1

    # ------------------------------------------------------------------------------------------ one snapshot
    def check(self, m: Machine, snap: Snapshot) -> None:
        """Compare ``snap`` with the simulator's state now (after every event before it in the trace).

        ``m`` is a reference Machine or, for the compiled engine, a view with ``snapshot_pages(mm, full)`` giving
        the :class:`SimSnapshot`. A page whose six fields agree is counted in bulk; every other page goes through
        :meth:`_page`, which classifies its disagreements."""
        self._cur = (snap.line, snap.task, snap.at)
        self._counts = [0, 0]
        live = _LivePages.of(snap.pages)
        folios = _LiveFolios.of(snap.folios)
        task = m.tasks.get(snap.task)
        if task is None:
            for vpn in live.vpns.tolist():
                self._disagree("present", False, True, C_TASK, vpn << PAGE_SHIFT)
            self._record(snap, 0, len(live.vpns))
            return
        mm = task.mm
        for name in self.racy:  # a folio that raced stays suspect after the simulator freed it (its copies differ)
            head = self.folio_of.get(name)
            if head is not None:
                self.racy_heads.add(head)
        names = list(self.folio_of)
        gone = getattr(m, "dead_folios", None)  # the compiled engine's view answers for a list of names at once
        for name in gone(names) if gone is not None else [n for n in names if n not in m.folios]:
            self.sim_of.pop(self.folio_of.pop(name), None)
        if snap.mm_id is not None:
            self.role_of_id[snap.mm_id] = mm.name
        full = snap.scope == "anon"  # the snapshot also holds the anonymous copies in private file mappings
        read = getattr(m, "snapshot_pages", None)
        side: SimSnapshot = read(mm, full) if read is not None else reference_pages(m, mm, full)
        self.zero_pages += side.zero_pages
        self.file_pages += side.file_pages
        self.file_anon_pages += side.file_anon_pages
        pairs: dict[str, tuple[Any, int, int, int]] = {}  # per item: folio -> (key, order, live head, first address)
        differ: set[str] = set()  # simulated folios with a page-level disagreement here
        agreeing, held = self._pages(mm, live, side, full, pairs, differ)
        if agreeing:
            for name in PAGE_FIELDS:
                count = self.fields[name]
                count.compared += agreeing
                count.agreed += agreeing
            self._counts[0] += agreeing * len(PAGE_FIELDS)
            self._counts[1] += agreeing * len(PAGE_FIELDS)
        self._folios(m, side, held if held is not None else _Held.of(side, pairs), folios, differ)
        self._record(snap, len(side.vpns), len(live.vpns))

    def _pages(self, mm: MM, live: _LivePages, side: SimSnapshot, full: bool,
               pairs: dict[str, tuple[Any, int, int, int]], differ: set[str]) -> tuple[int, _Held | None]:
        """Every page present on either side; returns how many agree in all six fields (counted by the caller) and,
        with :attr:`bulk`, the folios seen at their bound head (without, :meth:`_page` puts them in ``pairs``).

        With :attr:`bulk`, the pages on both sides are compared as columns: a page agrees when its order, page in the
        folio, mapcount and exclusive bit agree and its (folio, live head) pair holds the binding. A pair's binding is
        decided at its first sight in address order and holds for the rest of the snapshot, so the pairs are bound
        once each, in that order. Every other page goes through :meth:`_page` in address order, with the first
        sightings of agreeing pages bound between them, so it sees the bindings it would have seen page by page."""
        common, li, si = np.intersect1d(live.vpns, side.vpns, assume_unique=True, return_indices=True)
        only_sim = np.ones(len(side.vpns), dtype=bool)
        only_sim[si] = False
        only_live = np.ones(len(live.vpns), dtype=bool)
        only_live[li] = False
        agree = np.zeros(len(common), dtype=bool)
        binds = np.zeros(0, dtype=np.int64)  # positions in common of agreeing pages binding their pair
        held: _Held | None = None
        if self.bulk and len(common):
            rows = live.rows[li]
            head, order = rows[:, 2], rows[:, 3]
            same = side.order[si] == order
            agree = same & (side.page[si] == rows[:, 1] - head) & (side.mapcount[si] == rows[:, 4]) & (
                side.exclusive[si] == (rows[:, 5] != 0))
            at = np.flatnonzero(same)  # the pages _page() would bind (as _identity() does)
            fidx = side.folio[si[at]]
            holds, first, new = self._bindings(side.names, fidx, head[at])
            agree[at] &= holds
            firsts = at[first]
            binds = firsts[new & agree[firsts]]  # (the others are bound by _page(), in address order)
            at_head = firsts[holds[first]]  # the first page of each folio at its bound head (_page() adds none)
            held = _Held(side.folio[si[at_head]], order[at_head], head[at_head], common[at_head] << PAGE_SHIFT)
        differs = ~agree
        n_sim, n_live, n_diff = int(only_sim.sum()), int(only_live.sum()), int(differs.sum())
        none = np.full(max(n_sim, n_live), -1, dtype=np.int64)
        vpns = np.concatenate([side.vpns[only_sim], live.vpns[only_live], common[differs]])
        sims = np.concatenate([np.flatnonzero(only_sim), none[:n_live], si[differs]])
        lives = np.concatenate([none[:n_sim], np.flatnonzero(only_live), li[differs]])
        if len(binds):
            # a binding no page of the loop below reads (neither its folio nor its live head) is made now; the others
            # in address order between those pages
            folio, bhead = side.folio[si[binds]], live.rows[li[binds], 2]
            later = np.isin(folio, side.folio[sims[sims >= 0]]) | np.isin(bhead, live.rows[lives[lives >= 0], 2])
            names = [side.names[f] for f in folio[~later].tolist()]
            heads = bhead[~later].tolist()
            self.folio_of.update(zip(names, heads, strict=True))
            self.sim_of.update(zip(heads, names, strict=True))
            binds = binds[later]
            vpns = np.concatenate([vpns, common[binds]])
            sims = np.concatenate([sims, si[binds]])
            lives = np.concatenate([lives, li[binds]])
        ordered = np.argsort(vpns, kind="stable")
        for e, vpn, i, j in zip(ordered.tolist(), vpns[ordered].tolist(), sims[ordered].tolist(),
                                lives[ordered].tolist(), strict=True):
            if e >= n_sim + n_live + n_diff:  # an agreeing page binding its pair
                name, head_pfn = side.names[int(side.folio[i])], int(live.rows[j, 2])
                self.folio_of[name], self.sim_of[head_pfn] = head_pfn, name
                continue
            self._page(mm, vpn, side.row(i) if i >= 0 else None, live.row(j) if j >= 0 else None, side, live, full,
                       pairs, differ)
        return int(agree.sum()), held

    def _bindings(self, names: list[str], fidx: I64, heads: I64) -> tuple[Bools, I64, Bools]:
        """The (simulated folio, live head) pairs of pages in address order against the bindings, each pair decided
        at its first sight as :meth:`_identity` decides it (bound there when neither side is bound yet, else holding
        only when both are bound to each other). Returns per page whether its pair holds; per pair, in order of
        first sight, its first page and whether it is bound here. Nothing is bound yet: the caller does that."""
        first, inv = _first_sight(fidx, heads)
        pf, ph = fidx[first], heads[first]
        folio_of, sim_of = self.folio_of, self.sim_of
        index = {name: i for i, name in enumerate(names)}
        bound = np.array([folio_of.get(n, -1) for n in names], dtype=np.int64)[pf]  # -1: not bound
        owners = [sim_of.get(h) for h in ph.tolist()]
        owner = np.array([-1 if o is None else index.get(o, -2) for o in owners], dtype=np.int64)  # -2: elsewhere
        holds = (bound == ph) & (owner == pf)
        fresh = np.flatnonzero((bound == -1) & (owner == -1))
        # a fresh pair binds unless a fresh pair seen before took its folio or its head
        clash = _repeated(pf[fresh]) | _repeated(ph[fresh])
        holds[fresh[~clash]] = True
        taken_f: set[int] = set()
        taken_h: set[int] = set()
        for u, f, h in zip(fresh[clash].tolist(), pf[fresh[clash]].tolist(), ph[fresh[clash]].tolist(), strict=True):
            if f not in taken_f and h not in taken_h:
                taken_f.add(f)
                taken_h.add(h)
                holds[u] = True
        new = np.zeros(len(first), dtype=bool)
        new[fresh] = holds[fresh]
        return holds[inv], first, new

    def _folios(self, m: Machine, side: SimSnapshot, held: _Held, folios: _LiveFolios, differ: set[str]) -> None:
        """The fields of each folio seen at its bound live head (``held``) against the live folio's. With
        :attr:`bulk`, an order-0 folio whose refcount agrees and a large folio whose every observed field agrees
        (:meth:`_large_agree`) are counted in bulk, as columns; every other folio goes through :meth:`_folio`, in
        address order."""
        sim_ids = {x.mm_id: x.name for x in m.mms.values() if x.mm_id}
        alive_mms = set(m.mms)
        racy, bulk = self.racy, self.bulk
        at = folios.find(held.head)
        seen = at >= 0
        large = held.order > 0
        for names, n in ((FOLIO_FIELDS, int((~seen & large).sum())), (FOLIO_FIELDS[:1], int((~seen & ~large).sum()))):
            for name in names:
                self.fields[name].not_observed += n
        keys = side.keys
        counted = np.zeros(len(FOLIO_FIELDS), dtype=np.int64)  # per field: folios counted in bulk that observed it
        unseen = np.zeros(len(FOLIO_FIELDS), dtype=np.int64)  # ... that did not
        each = np.flatnonzero(seen)  # through _folio()
        if bulk:
            live = np.full((len(at), len(FOLIO_FIELDS)), _NONE, dtype=np.int64)
            whole = np.zeros(len(at), dtype=np.bool_)
            live[seen], whole[seen] = folios.rows(at[seen])
            small = np.flatnonzero(seen & ~large)
            sim_refs = np.array(side.refcounts([keys[i] for i in held.folio[small].tolist()]), dtype=np.int64)
            agrees = whole[small] & (live[small, 0] == sim_refs)
            counted[0] += int(agrees.sum())
            big = np.flatnonzero(seen & large)
            same = self._large_agree(side.rows([keys[i] for i in held.folio[big].tolist()]), live[big], whole[big],
                                     sim_ids, alive_mms)
            counted += (same[1] & same[0][:, None]).sum(axis=0)
            unseen += (~same[1] & same[0][:, None]).sum(axis=0)
            each = np.sort(np.concatenate([big[~same[0]], small[~agrees]]))
        f = held.folio[each].tolist()
        for i, state, addr in zip(each.tolist(), side.folios([keys[i] for i in f]), held.addr[each].tolist(),
                                  strict=True):
            name = side.names[int(held.folio[i])]
            self._folio(state, folios.item(int(at[i])), sim_ids, alive_mms, addr, C_RACE if name in racy else (
                C_PAGE if name in differ else C_OTHER))
        for name, n, missing in zip(FOLIO_FIELDS, counted.tolist(), unseen.tolist(), strict=True):
            count = self.fields[name]
            count.compared += n
            count.agreed += n
            count.not_observed += missing
            self._counts[0] += n
            self._counts[1] += n

    def _large_agree(self, sim: I64, live: I64, whole: Bools, sim_ids: dict[int, str],
                     alive_mms: set[str]) -> tuple[Bools, Bools]:
        """Large folios' fields as :meth:`_folio` compares them, as columns (``sim``: :attr:`SimSnapshot.rows`;
        ``live``: :meth:`_LiveFolios.rows`, ``whole`` where a row holds every value): whether every observed field
        of a folio agrees, and which fields were observed. MM ids are compared by role: the live id stands for the
        simulated id of the MM in the same role."""
        live = live.copy()
        id_of_role = {name: i for i, name in sim_ids.items()}
        for c in (5, 7):  # the slots' MM ids
            ids = live[:, c].tolist()
            expect: dict[int, int] = {}
            for live_id in set(ids):
                role = None if live_id == _NONE else self._live_role(live_id, alive_mms)
                expect[live_id] = _NONE if role is None else 0 if role == "-" else id_of_role.get(role, -1)
            live[:, c] = [expect[x] for x in ids]
        observed: Bools = live != _NONE
        agree: Bools = ((sim == live) | ~observed).all(axis=1) & whole
        return agree, observed

    def _page(self, mm: MM, vpn: int, s: SimAnonPage | None, seen: LivePage | None, anon: SimSnapshot,
              live: _LivePages, full: bool, pairs: dict[str, tuple[Any, int, int, int]], differ: set[str]) -> None:
        """One page (present on at least one side) field by field, each disagreement with its cause."""
        addr = vpn << PAGE_SHIFT
        racy = self.racy
        raced = (s is not None and s[0] in racy) or (seen is not None and (
            seen[1] in self.racy_heads or self.sim_of.get(seen[1]) in racy))
        if s is None:
            assert seen is not None
            cause = C_RACE if raced else self._only_live(mm, vpn, _Live(*seen), anon, full)
            self._disagree("present", False, True, cause, addr)
            return
        name, page, order, mapcount, excl, key = s
        if seen is None:
            differ.add(name)
            self._disagree("present", True, False, C_RACE if raced else self._only_sim(vpn, page, order, live), addr)
            return
        lv = _Live(*seen)
        self._cmp("present", True, True, C_OTHER, addr)
        same_order = self._cmp("folio order", order, lv.order, C_RACE if raced else (
            C_FALLBACK if lv.order < order else C_LARGER), addr)
        same_folio = False
        if same_order:
            self._cmp("page in folio", page, lv.pfn - lv.head, C_RACE if raced else C_OTHER, addr)
            same_folio = self._identity(name, lv.head, addr, C_RACE if raced else C_DECISION)
        cause = C_RACE if raced else C_ORDER if not same_order else (C_OTHER if same_folio else C_DECISION)
        agree = self._cmp("precise mapcount", mapcount, lv.mapcount, cause, addr)
        agree &= self._cmp("pagemap exclusive", excl, lv.exclusive, cause, addr)
        if not (same_folio and agree):
            differ.add(name)
        if same_folio:
            pairs.setdefault(name, (key, order, lv.head, addr))

    def _record(self, snap: Snapshot, sim_pages: int, live_pages: int) -> None:
        line = {"line": snap.line, "task": snap.task, "at": snap.at, "sim_anon_pages": sim_pages,
                "live_pages": live_pages, "compared": self._counts[0], "agreed": self._counts[1]}
        if snap.khugepaged is not None:  # recorded with the snapshot (traces made before it was added lack it)
            line["khugepaged_collapsed"] = snap.khugepaged
        self.per_snapshot.append(line)

    def _identity(self, name: str, head: int, addr: int, cause: str = C_DECISION) -> bool:
        bound, owner = self.folio_of.get(name), self.sim_of.get(head)
        if bound is None and owner is None:  # first sight: bind
            self.folio_of[name], self.sim_of[head] = head, name
            bound, owner = head, name
        sim = name if bound == head else (f"{name} (live {bound:#x})" if bound is not None else f"{name} (new)")
        live = name if owner == name else (f"{owner} (live {head:#x})" if owner is not None
                                               else f"a new folio {head:#x}")
        return self._cmp("folio identity", sim, live, cause, addr)

    def _only_live(self, mm: MM, vpn: int, lv: _Live, anon: SimSnapshot, full: bool) -> str:
        vma = mm.find_vma(vpn)
        if vma is None:
            return C_NO_VMA
        kind = anon.other.get(vpn)
        if vma.file is not None and not vma.file.anon:
            if not full:
                return C_FILE
            return C_FILE_KEPT if kind == "file" else C_NO_FAULT
        if kind == "zero":
            return C_ZERO
        if kind == "file":
            return C_FILE
        if lv.order:
            base = vpn - (lv.pfn - lv.head)
            if (_in_range(anon.vpns, anon.order, base, base + (1 << lv.order)) < lv.order).any():
                return C_LARGER
        return C_NO_FAULT

    @staticmethod
    def _only_sim(vpn: int, page: int, order: int, live: _LivePages) -> str:
        if order:
            base = vpn - page
            if (_in_range(live.vpns, live.rows[:, 3], base, base + (1 << order)) < order).any():
                return C_FALLBACK
        return C_NOT_LIVE

    def _folio(self, f: SimFolioFields, k: dict[str, Any], sim_ids: dict[int, str], alive_mms: set[str],
               addr: int, other: str = C_OTHER) -> None:
        """The folio's own fields; ``other``: the cause of a disagreement nothing more specific explains."""
        refcount = k["refcount"]
        cause = C_LRU if f.order == 0 and refcount == f.refcount + 1 else (C_PIN if f.pins else other)
        self._cmp("refcount", f.refcount, refcount, cause, addr)
        if not f.order:
            return
        cause = C_PIN if f.pins else other
        for name, key, value in _counts(f):
            if k.get(key) is None:
                self._unobserved((name,))
            else:
                self._cmp(name, value, k[key], cause, addr)
        ids, shared = _slots(k)
        counts = k.get("mm_id_mapcount")
        if cause == C_OTHER and k.get("large_mapcount") == f.large_mapcount:
            cause = C_MM_ORDER  # every mapping is there on both sides: only the slots' bookkeeping differs
        for i, (slot, slot_count) in enumerate(_SLOT_FIELDS):
            live_role = self._live_role(None if ids is None else ids[i], alive_mms)
            if live_role is None:
                self._unobserved((slot,))
            else:
                self._cmp(slot, _sim_role(f.mm_ids[i], sim_ids), live_role, cause, addr)
            if counts is None:
                self._unobserved((slot_count,))
            else:
                self._cmp(slot_count, f.mm_id_mapcount[i], counts[i], cause, addr)
        if shared is None:
            self._unobserved(("shared bit",))
        else:
            self._cmp("shared bit", f.shared, shared, cause, addr)

    def _live_role(self, live_id: int | None, alive_mms: set[str]) -> str | None:
        """The role of the MM with a live id (a live folio's slot): "-" for none, None when not observed."""
        live_role = None if live_id is None else ("-" if live_id == 0 else self.role_of_id.get(live_id))
        if live_role not in (None, "-") and live_role not in alive_mms:
            live_role = None  # that MM is gone: the kernel has given its id to another MM since
        return live_role

    # ------------------------------------------------------------------------------------------ output
    def to_json(self) -> dict[str, Any]:
        return {
            "snapshots": self.snapshots, "compared": self.compared, "agreed": self.agreed,
            "fields": {name: {"compared": c.compared, "agreed": c.agreed, "not_observed": c.not_observed,
                              "percent": c.percent} for name, c in self.fields.items()},
            "disagreements": [{"field": f, "cause": cause, "count": n} for (f, cause), n in self.causes.most_common()],
            "file_pages": self.file_pages, "file_page_disagreements": self.file_diffs, "zero_pages": self.zero_pages,
            "anon_pages_in_file_mappings": self.file_anon_pages,
            "examples": [d.describe() for d in self.examples], "per_snapshot": self.per_snapshot,
        }


_NONE = FOLIO_NULL  # a field the live side did not record, in rows of FOLIO_FIELDS
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _recorded(k: dict[str, Any]) -> list[int] | None:
    """A recorded folio as a row of the values of :data:`FOLIO_FIELDS` (_NONE: not recorded); None when a value is
    not an integer within int64 (or the refcount is missing): that folio is compared per item."""
    ids, shared = _slots(k)
    counts = k.get("mm_id_mapcount")
    values = [k["refcount"], k.get("large_mapcount"), k.get("entire_mapcount"), k.get("pincount"),
              k.get("nr_pages_mapped"), None if ids is None else ids[0], None if counts is None else counts[0],
              None if ids is None else ids[1], None if counts is None else counts[1], shared]
    if values[0] is None or not _NUMBERS.issuperset(map(type, values)):
        return None
    if any(not _NONE < v <= _I64_MAX for v in values if v is not None):
        return None
    return [_NONE if v is None else v for v in values]


_NUMBERS = frozenset((int, bool, type(None)))


_SLOT_FIELDS = (("slot 0 MM", "slot 0 mapcount"), ("slot 1 MM", "slot 1 mapcount"))


def _counts(f: SimFolioFields) -> tuple[tuple[str, str, int], ...]:
    """(field, key of the recorded folio, simulated value) of a large folio's counters."""
    return (("_large_mapcount", "large_mapcount", f.large_mapcount),
            ("_entire_mapcount", "entire_mapcount", f.entire_mapcount), ("_pincount", "pincount", f.pincount),
            ("_nr_pages_mapped", "nr_pages_mapped", f.nr_pages_mapped))


def _sim_role(sim_id: int, sim_ids: dict[int, str]) -> str:
    """The role of the simulated MM id in a slot: "-" for none."""
    if sim_id == 0:
        return "-"
    role = sim_ids.get(sim_id)
    return role if role is not None else f"sim id {sim_id}"


def _last_by_vpn(vpns: I64) -> I64:
    """Positions of ``vpns`` in sorted order, of a page number given more than once the last (as a dict filled in
    that order keeps)."""
    at = np.argsort(vpns, kind="stable")
    ordered = vpns[at]
    keep = np.ones(len(at), dtype=bool)
    keep[:-1] = ordered[1:] != ordered[:-1]
    return at[keep]


def _first_sight(a: I64, b: I64) -> tuple[I64, I64]:
    """The distinct pairs of ``a`` and ``b`` (same length) in order of first sight: per pair its first position,
    and per position its pair."""
    at = np.lexsort((b, a))  # by a, then b, then position
    sa, sb = a[at], b[at]
    starts = np.ones(len(at), dtype=bool)
    starts[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
    first = at[starts]
    rank = np.argsort(first)
    renumber = np.empty(len(rank), dtype=np.int64)
    renumber[rank] = np.arange(len(rank))
    inv = np.empty(len(at), dtype=np.int64)
    inv[at] = renumber[np.cumsum(starts) - 1]
    return first[rank], inv


def _repeated(x: I64) -> Bools:
    """Whether each value of ``x`` occurs more than once in it."""
    at = np.argsort(x)
    same = x[at[1:]] == x[at[:-1]]
    repeated = np.zeros(len(x), dtype=np.bool_)
    repeated[at[1:][same]] = True
    repeated[at[:-1][same]] = True
    return repeated


def _in_range(vpns: I64, values: I64, lo: int, hi: int) -> I64:
    """``values`` of the rows whose page number (``vpns``, sorted) is in [lo, hi)."""
    a, b = np.searchsorted(vpns, (lo, hi)).tolist()
    return values[a:b]


def _slots(k: dict[str, Any]) -> tuple[tuple[int, int] | None, bool | None]:
    """(slot ids, shared bit) from a recorded folio: ``mm_ids`` as the raw word or as [id0, id1]."""
    raw = k.get("mm_ids")
    shared = k.get("shared_bit")
    if raw is None:
        return None, shared
    if isinstance(raw, list):
        return (raw[0], raw[1]), shared
    mask = (1 << MM_ID_BITS) - 1
    ids = (raw & mask, (raw >> (MM_ID_BITS + 1)) & mask)
    return ids, bool(raw >> (2 * MM_ID_BITS + 1) & 1) if shared is None else shared


__all__ = ["C_PAGE", "C_RACE", "FOLIO_FIELDS", "PAGE_FIELDS", "Disagreement", "FieldCount", "SimAnonPage",
           "SimFolioFields", "SimSnapshot", "SnapshotChecker", "field_rows", "reference_folios", "reference_pages",
           "reference_rows", "sim_snapshot"]
