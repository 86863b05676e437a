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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from foliosim.folio import (
    folio_entire_mapcount,
    folio_maybe_mapped_shared,
    folio_mm_id,
    folio_test_large_maybe_mapped_shared,
)
from foliosim.vm.memory import PAGE_SHIFT

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


@dataclass(slots=True)
class SimSnapshot:
    """The simulated side of one snapshot: the present pages of the task's MM, read in one pass (what
    :func:`foliosim.live.compare.sim_page` and :func:`foliosim.vm.stats.pagemap` give per page)."""

    anon: dict[int, SimAnonPage]  # vpn -> the anonymous page compared with the snapshot's
    other: dict[int, str]  # vpn -> "zero" (the zero page) or "file" (a file page, or an anonymous copy not compared)
    folios: Callable[[list[Any]], list[SimFolioFields]]  # the fields of folios, from their keys
    refcounts: Callable[[list[Any]], list[int]]  # just their refcounts
    zero_pages: int = 0
    file_pages: int = 0
    file_anon_pages: int = 0  # anonymous copies in private file mappings the snapshot does not cover


def reference_pages(m: Machine, mm: MM, full: bool) -> SimSnapshot:
    """:class:`SimSnapshot` of ``mm`` on the reference Machine (``full``: the snapshot covers the anonymous copies
    in private file mappings too); per folio the fields are read once."""
    npm = m.config.no_page_mapcount
    anon: dict[int, SimAnonPage] = {}
    other: dict[int, str] = {}
    zero = file = file_anon = 0
    per: dict[str, tuple[list[int], int, int, bool | None]] = {}
    for vma, vpn, f, page, by_pmd in m.iter_mapped(mm):
        if f.is_zero:
            other[vpn] = "zero"
            zero += 1
        elif f.is_anon and (vma.file is None or full):
            c = per.get(f.name)
            if c is None:
                core = f.core()
                large = core.order > 0
                c = per[f.name] = (core.page_mapcount, core.entire_mapcount + 1 if large else 0,
                                   folio_entire_mapcount(core) if large else 0,
                                   (not folio_maybe_mapped_shared(core)) if npm and large else None)
            counts, entire, precise_entire, excl = c
            if excl is None:  # pagemap: the precise mapcount of the page (of the first page for a PMD) is 1
                excl = counts[0 if by_pmd else page] + 1 + precise_entire == 1
            anon[vpn] = (f.name, page, f.order, counts[page] + 1 + entire, excl, f)
        elif f.is_anon:
            other[vpn] = "file"
            file_anon += 1
        else:
            other[vpn] = "file"
            file += 1
    return SimSnapshot(anon, other, reference_folios, reference_refcounts, zero, file, file_anon)


def reference_refcounts(keys: list[SimFolio]) -> list[int]:
    """The refcounts of reference folios."""
    return [f.core().refcount for f in keys]


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
        live: dict[int, tuple[int, int, int, int, bool]] = {}  # vpn -> (pfn, head, order, mapcount, exclusive)
        if len(snap.pages):
            cols = snap.pages.T.tolist()  # vaddr, pfn, head_pfn, order, mapcount, exclusive
            live = dict(zip(map(_vpn, cols[0]), zip(*cols[1:5], map(bool, cols[5]), strict=True), strict=True))
        folios = {int(k, 0): v for k, v in snap.folios.items()}
        task = m.tasks.get(snap.task)
        if task is None:
            for vpn in sorted(live):
                self._disagree("present", False, True, C_TASK, vpn << PAGE_SHIFT)
            self._record(snap, 0, len(live))
            return
        mm = task.mm
        alive = m.folios
        for name in self.racy:  # a folio that raced stays suspect after the simulator freed it (its copies differ)
            head = self.folio_of.get(name)
            if head is not None:
                self.racy_heads.add(head)
        for name in [n for n in self.folio_of if n not in alive]:
            self.sim_of.pop(self.folio_of.pop(name), None)
        if snap.mm_id is not None:
            self.role_of_id[snap.mm_id] = mm.name
        full = snap.scope == "anon"  # the snapshot also holds the anonymous copies in private file mappings
        bulk = getattr(m, "snapshot_pages", None)
        side: SimSnapshot = bulk(mm, full) if bulk is not None else reference_pages(m, mm, full)
        self.zero_pages += side.zero_pages
        self.file_pages += side.file_pages
        self.file_anon_pages += side.file_anon_pages
        anon = side.anon
        pairs: dict[str, tuple[Any, int, int, int]] = {}  # folio -> (key, order, live head, first address)
        differ: set[str] = set()  # simulated folios with a page-level disagreement here
        folio_of, sim_of = self.folio_of, self.sim_of
        agreeing = 0
        for vpn in sorted(anon.keys() | live.keys()):
            s, seen = anon.get(vpn), live.get(vpn)
            if s is not None and seen is not None:  # the common case, all six fields agreeing, counted in bulk
                name, page, order, mapcount, excl, key = s  # (whether a fault raced only names a disagreement's cause)
                head = seen[1]
                if order == seen[2] and page == seen[0] - head and mapcount == seen[3] and excl == seen[4]:
                    bound, owner = folio_of.get(name), sim_of.get(head)
                    if bound is None and owner is None:  # first sight: bind (as _identity() does)
                        folio_of[name], sim_of[head] = head, name
                        bound, owner = head, name
                    if bound == head and owner == name:
                        agreeing += 1
                        if name not in pairs:
                            pairs[name] = (key, order, head, vpn << PAGE_SHIFT)
                        continue
            self._page(mm, vpn, s, seen, anon, live, side.other, full, pairs, differ)
        if agreeing:
            for name in PAGE_FIELDS:
                count = self.fields[name]
                count.compared += agreeing
                count.agreed += agreeing
            self._counts[0] += agreeing * len(PAGE_FIELDS)
            self._counts[1] += agreeing * len(PAGE_FIELDS)
        self._folios(m, side, pairs, folios, differ)
        self._record(snap, len(anon), len(live))

    def _folios(self, m: Machine, side: SimSnapshot, pairs: dict[str, tuple[Any, int, int, int]],
                folios: dict[int, dict[str, Any]], differ: set[str]) -> None:
        """The fields of each folio seen at its bound live head (``pairs``) against the live folio's."""
        sim_ids = {x.mm_id: x.name for x in m.mms.values() if x.mm_id}
        alive_mms = set(m.mms)
        racy = self.racy
        seen = [(name, key, order, addr, folios.get(head)) for name, (key, order, head, addr) in pairs.items()]
        small = [x for x in seen if not x[2] and x[4] is not None]
        refcounts = dict(zip([x[0] for x in small], side.refcounts([x[1] for x in small]), strict=True))
        rest = [x for x in seen if x[4] is not None and (x[2] or x[4]["refcount"] != refcounts[x[0]])]
        states = iter(side.folios([x[1] for x in rest]))
        agreeing = 0  # order-0 folios whose refcount agrees (their only field), counted in bulk
        for name, _key, order, addr, k in seen:
            if k is None:
                self._unobserved(FOLIO_FIELDS if order else FOLIO_FIELDS[:1])
                continue
            if not order and k["refcount"] == refcounts[name]:
                agreeing += 1
                continue
            self._folio(next(states), k, sim_ids, alive_mms, addr, C_RACE if name in racy else (
                C_PAGE if name in differ else C_OTHER))
        if agreeing:
            count = self.fields["refcount"]
            count.compared += agreeing
            count.agreed += agreeing
            self._counts[0] += agreeing
            self._counts[1] += agreeing

    def _page(self, mm: MM, vpn: int, s: SimAnonPage | None, seen: tuple[int, int, int, int, bool] | None,
              anon: dict[int, SimAnonPage], live: dict[int, tuple[int, int, int, int, bool]], other: dict[int, str],
              full: bool, pairs: dict[str, tuple[Any, int, int, int]], differ: set[str]) -> None:
        """One page (present on at least one side) field by field, each disagreement with its cause."""
        addr = vpn << PAGE_SHIFT
        racy = self.racy
        raced = (s is not None and s[0] in racy) or (seen is not None and (
            seen[1] in self.racy_heads or self.sim_of.get(seen[1]) in racy))
        if s is None:
            assert seen is not None
            cause = C_RACE if raced else self._only_live(mm, vpn, _Live(*seen), anon, other, full)
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
        self.per_snapshot.append({"line": snap.line, "task": snap.task, "at": snap.at, "sim_anon_pages": sim_pages,
                                  "live_pages": live_pages, "compared": self._counts[0], "agreed": self._counts[1]})

    def _identity(self, name: str, head: int, addr: int, cause: str = C_DECISION) -> bool:
        bound, owner = self.folio_of.get(name), self.sim_of.get(head)
        if bound is None and owner is None:  # first sight: bind
            self.folio_of[name], self.sim_of[head] = head, name
            bound, owner = head, name
        sim = name if bound == head else (f"{name} (live {bound:#x})" if bound is not None else f"{name} (new)")
        live = name if owner == name else (f"{owner} (live {head:#x})" if owner is not None
                                               else f"a new folio {head:#x}")
        return self._cmp("folio identity", sim, live, cause, addr)

    def _only_live(self, mm: MM, vpn: int, lv: _Live, anon: dict[int, SimAnonPage], other: dict[int, str],
                   full: bool) -> str:
        vma = mm.find_vma(vpn)
        if vma is None:
            return C_NO_VMA
        kind = other.get(vpn)
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
            for v in range(base, base + (1 << lv.order)):
                hit = anon.get(v)
                if hit is not None and hit[2] < lv.order:
                    return C_LARGER
        return C_NO_FAULT

    @staticmethod
    def _only_sim(vpn: int, page: int, order: int, live: dict[int, tuple[int, int, int, int, bool]]) -> str:
        if order:
            base = vpn - page
            for v in range(base, base + (1 << order)):
                other = live.get(v)
                if other is not None and other[2] < order:
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
        for name, key, value in (("_large_mapcount", "large_mapcount", f.large_mapcount),
                                 ("_entire_mapcount", "entire_mapcount", f.entire_mapcount),
                                 ("_pincount", "pincount", f.pincount),
                                 ("_nr_pages_mapped", "nr_pages_mapped", f.nr_pages_mapped)):
            if k.get(key) is None:
                self._unobserved((name,))
            else:
                self._cmp(name, value, k[key], cause, addr)
        ids, shared = _slots(k)
        counts = k.get("mm_id_mapcount")
        if cause == C_OTHER and k.get("large_mapcount") == f.large_mapcount:
            cause = C_MM_ORDER  # every mapping is there on both sides: only the slots' bookkeeping differs
        for i in (0, 1):
            sim_id = f.mm_ids[i]
            sim_role = "-" if sim_id == 0 else sim_ids.get(sim_id, f"sim id {sim_id}")
            live_id = ids[i] if ids is not None else None
            live_role = None if live_id is None else ("-" if live_id == 0 else self.role_of_id.get(live_id))
            if live_role not in (None, "-") and live_role not in alive_mms:
                live_role = None  # that MM is gone: the kernel has given its id to another MM since
            if live_role is None:
                self._unobserved((f"slot {i} MM",))
            else:
                self._cmp(f"slot {i} MM", sim_role, live_role, cause, addr)
            if counts is None:
                self._unobserved((f"slot {i} mapcount",))
            else:
                self._cmp(f"slot {i} mapcount", f.mm_id_mapcount[i], counts[i], cause, addr)
        if shared is None:
            self._unobserved(("shared bit",))
        else:
            self._cmp("shared bit", f.shared, shared, cause, addr)

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


def _vpn(addr: int) -> int:
    return addr >> PAGE_SHIFT


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
           "SimFolioFields", "SimSnapshot", "SnapshotChecker", "reference_folios", "reference_pages"]
