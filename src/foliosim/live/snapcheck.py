"""A run trace's live snapshots against the simulator's state at the same point, field by field.

``foliosim trace --check-live`` stops a traced process at each fork and exit and records its anonymous pages
(PFN, folio head and order, precise mapcount, pagemap exclusive bit) and, with the BPF folio reader, each
folio's raw fields (docs/run-trace.md). After simulating the events before that point, the simulator's
anonymous pages of the same task are compared page by page as :mod:`foliosim.live.compare` does for
``foliosim live``: folios are bound to live head PFNs on first sight and the binding must hold while the
simulated folio lives; MM ids are compared by role (the MM of the task whose snapshot announced the id);
a field the live side did not record is counted as not observed, never as agreeing. Every disagreement is
classified by its likely cause; file pages are counted apart (other processes map them too).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from foliosim.folio import folio_mm_id, folio_test_large_maybe_mapped_shared
from foliosim.live.compare import SimPage, sim_page
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
        """Compare ``snap`` with the simulator's state now (after every event before it in the trace)."""
        self._cur = (snap.line, snap.task, snap.at)
        self._counts = [0, 0]
        live = {p[0] >> PAGE_SHIFT: _Live(p[1], p[2], p[3], p[4], bool(p[5])) for p in snap.pages}
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
        anon: dict[int, tuple[SimPage, SimFolio]] = {}
        other: dict[int, str] = {}
        full = snap.scope == "anon"  # the snapshot also holds the anonymous copies in private file mappings
        for vma, vpn, f, page, _by_pmd in m.iter_mapped(mm):
            if f.is_zero:
                other[vpn] = "zero"
                self.zero_pages += 1
            elif f.is_anon and (vma.file is None or full):
                anon[vpn] = (sim_page(m, mm, vpn, f, page), f)
            elif f.is_anon:  # a copy in a private file mapping: the snapshots cover anonymous mappings only
                other[vpn] = "file"
                self.file_anon_pages += 1
            else:
                other[vpn] = "file"
                self.file_pages += 1
        pairs: dict[str, tuple[SimFolio, int, int]] = {}
        differ: set[str] = set()  # simulated folios with a page-level disagreement here
        racy = self.racy
        for vpn in sorted(set(anon) | set(live)):
            s, seen = anon.get(vpn), live.get(vpn)
            addr = vpn << PAGE_SHIFT
            raced = (s is not None and s[1].name in racy) or (seen is not None and (
                seen.head in self.racy_heads or self.sim_of.get(seen.head) in racy))
            if s is None:
                assert seen is not None
                cause = C_RACE if raced else self._only_live(mm, vpn, seen, anon, other, full)
                self._disagree("present", False, True, cause, addr)
                continue
            sp, f = s
            if seen is None:
                differ.add(f.name)
                self._disagree("present", True, False, C_RACE if raced else self._only_sim(vpn, sp, live), addr)
                continue
            lv = seen
            self._cmp("present", True, True, C_OTHER, addr)
            same_order = self._cmp("folio order", sp.order, lv.order, C_RACE if raced else (
                C_FALLBACK if lv.order < sp.order else C_LARGER), addr)
            same_folio = False
            if same_order:
                self._cmp("page in folio", sp.page, lv.pfn - lv.head, C_RACE if raced else C_OTHER, addr)
                same_folio = self._identity(f, lv.head, addr, C_RACE if raced else C_DECISION)
            cause = C_RACE if raced else C_ORDER if not same_order else (C_OTHER if same_folio else C_DECISION)
            agree = self._cmp("precise mapcount", sp.mapcount, lv.mapcount, cause, addr)
            agree &= self._cmp("pagemap exclusive", sp.exclusive, lv.exclusive, cause, addr)
            if not (same_folio and agree):
                differ.add(f.name)
            if same_folio:
                pairs.setdefault(f.name, (f, lv.head, addr))
        sim_ids = {x.mm_id: x.name for x in m.mms.values() if x.mm_id}
        alive_mms = set(m.mms)
        for f, head, addr in pairs.values():
            k = folios.get(head)
            names = FOLIO_FIELDS if f.order else FOLIO_FIELDS[:1]
            if k is None:
                self._unobserved(names)
                continue
            self._folio(f, k, sim_ids, alive_mms, addr, C_RACE if f.name in racy else (
                C_PAGE if f.name in differ else C_OTHER))
        self._record(snap, len(anon), len(live))

    def _record(self, snap: Snapshot, sim_pages: int, live_pages: int) -> None:
        self.per_snapshot.append({"line": snap.line, "task": snap.task, "at": snap.at, "sim_anon_pages": sim_pages,
                                  "live_pages": live_pages, "compared": self._counts[0], "agreed": self._counts[1]})

    def _identity(self, f: SimFolio, head: int, addr: int, cause: str = C_DECISION) -> bool:
        bound, owner = self.folio_of.get(f.name), self.sim_of.get(head)
        if bound is None and owner is None:  # first sight: bind
            self.folio_of[f.name], self.sim_of[head] = head, f.name
            bound, owner = head, f.name
        sim = f.name if bound == head else (f"{f.name} (live {bound:#x})" if bound is not None else f"{f.name} (new)")
        live = f.name if owner == f.name else (f"{owner} (live {head:#x})" if owner is not None
                                               else f"a new folio {head:#x}")
        return self._cmp("folio identity", sim, live, cause, addr)

    def _only_live(self, mm: MM, vpn: int, lv: _Live, anon: dict[int, tuple[SimPage, SimFolio]],
                   other: dict[int, str], full: bool) -> str:
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
                if hit is not None and hit[0].order < lv.order:
                    return C_LARGER
        return C_NO_FAULT

    @staticmethod
    def _only_sim(vpn: int, sp: SimPage, live: dict[int, _Live]) -> str:
        if sp.order:
            base = vpn - sp.page
            for v in range(base, base + (1 << sp.order)):
                other = live.get(v)
                if other is not None and other.order < sp.order:
                    return C_FALLBACK
        return C_NOT_LIVE

    def _folio(self, f: SimFolio, k: dict[str, Any], sim_ids: dict[int, str], alive_mms: set[str],
               addr: int, other: str = C_OTHER) -> None:
        """The folio's own fields; ``other``: the cause of a disagreement nothing more specific explains."""
        core = f.core()
        refcount = k["refcount"]
        cause = C_LRU if f.order == 0 and refcount == core.refcount + 1 else (C_PIN if f.pins else other)
        self._cmp("refcount", core.refcount, refcount, cause, addr)
        if not f.order:
            return
        cause = C_PIN if f.pins else other
        for name, key, value in (("_large_mapcount", "large_mapcount", core.large_mapcount),
                                 ("_entire_mapcount", "entire_mapcount", core.entire_mapcount),
                                 ("_pincount", "pincount", core.pincount),
                                 ("_nr_pages_mapped", "nr_pages_mapped", core.nr_pages_mapped)):
            if k.get(key) is None:
                self._unobserved((name,))
            else:
                self._cmp(name, value, k[key], cause, addr)
        ids, shared = _slots(k)
        counts = k.get("mm_id_mapcount")
        if cause == C_OTHER and k.get("large_mapcount") == core.large_mapcount:
            cause = C_MM_ORDER  # every mapping is there on both sides: only the slots' bookkeeping differs
        for i in (0, 1):
            sim_id = folio_mm_id(core, i)
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
                self._cmp(f"slot {i} mapcount", core.mm_id_mapcount[i], counts[i], cause, addr)
        if shared is None:
            self._unobserved(("shared bit",))
        else:
            self._cmp("shared bit", folio_test_large_maybe_mapped_shared(core), shared, cause, addr)

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


__all__ = ["C_PAGE", "C_RACE", "FOLIO_FIELDS", "PAGE_FIELDS", "Disagreement", "FieldCount", "SnapshotChecker"]
