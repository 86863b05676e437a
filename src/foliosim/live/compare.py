"""The simulator's state against the live kernel's after the same scenario line, field by field.

Tasks are matched by name, MMs through their tasks, MM ids by role (the MM whose task announced that id on the
live side), and folios by identity: the first time a simulated folio and a live folio (head PFN) are seen at the
same page of the same task they are bound, and from then on the binding must hold while the simulated folio
lives. Every comparison is counted; a field the live side cannot observe at this capability level is counted
as not observed, never as agreeing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from foliosim.folio import folio_mm_id, folio_test_large_mapcount_locked, folio_test_large_maybe_mapped_shared
from foliosim.live.observe import WINDOW, LiveState, PageObs
from foliosim.vm.events import CowDecision
from foliosim.vm.memory import PAGE_SHIFT
from foliosim.vm.stats import pagemap

if TYPE_CHECKING:
    from foliosim.host.bpf import KernelFolio
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM
    from foliosim.vm.pagetable import SimFolio


@dataclass(frozen=True, slots=True)
class SimPage:
    """One present page of the simulator: its folio, the page in it, and what procfs would show."""

    folio: str
    page: int
    order: int
    zero: bool
    anon: bool
    mapcount: int
    exclusive: bool
    head_anon_exclusive: bool


@dataclass(frozen=True, slots=True)
class Diff:
    """One field on which the two sides disagree."""

    line: int
    kind: str  # result, fault, page, folio
    field: str
    task: str
    addr: int | None
    folio: str
    sim: Any
    live: Any

    def describe(self) -> str:
        where = f" at {self.addr:#x}" if self.addr is not None else ""
        who = f" {self.task}" if self.task else ""
        of = f" of {self.folio}" if self.folio else ""
        return f"line {self.line}:{who}{where}: {self.field}{of}: simulator {self.sim!r}, live {self.live!r}"


@dataclass(slots=True)
class LineResult:
    """What one scenario line did on both sides and how many fields agreed."""

    line: int
    command: str
    sim_result: str
    live_result: str
    compared: int = 0
    agreed: int = 0
    not_observed: int = 0
    diffs: list[Diff] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.diffs


def sim_page(m: Machine, mm: MM, vpn: int, f: SimFolio, page: int) -> SimPage:
    """What procfs would show for ``vpn`` of ``mm``, mapped to page ``page`` of ``f`` (kpagecount = the page's
    ``_mapcount`` + 1, plus the folio's entire mapcount for a large folio; pagemap bit 56)."""
    pe = pagemap(m, mm, vpn)
    if f.is_zero:
        return SimPage(f.name, 0, f.order, True, False, 0, pe.exclusive, False)
    core = f.core()
    mapcount = core.page_mapcount[page] + 1
    if core.is_large:
        mapcount += core.entire_mapcount + 1
    return SimPage(f.name, page, f.order, False, f.is_anon, mapcount, pe.exclusive,
                   f.exclusive[0] if f.exclusive else False)


def sim_pages(m: Machine) -> dict[str, dict[int, SimPage]]:
    """Every present page inside the scenario window, per simulated MM."""
    out: dict[str, dict[int, SimPage]] = {}
    lo, hi = WINDOW[0] >> PAGE_SHIFT, WINDOW[1] >> PAGE_SHIFT
    for mm in m.mms.values():
        if mm.users <= 0:
            continue
        out[mm.name] = {vpn: sim_page(m, mm, vpn, f, page)
                        for _vma, vpn, f, page, _by_pmd in m.iter_mapped(mm) if lo <= vpn < hi}
    return out


class Comparator:
    """Compares line after line, keeping the folio bindings and the MM-id roles between lines."""

    def __init__(self, full: bool) -> None:
        self.full = full
        self.folio_of: dict[str, int] = {}  # simulated folio -> live head PFN
        self.sim_of: dict[int, str] = {}  # live head PFN -> simulated folio
        self.role_of_id: dict[int, str] = {}  # live MM id -> simulated MM name (by the task that announced it)
        self.prev_sim: dict[str, dict[int, SimPage]] = {}
        self.prev_live: dict[int, dict[int, PageObs]] = {}
        self._mm_name_by_sim_id: dict[int, str] = {}

    # ------------------------------------------------------------------ one line
    def compare(self, res: LineResult, m: Machine, live: LiveState, tasks: dict[int, list[str]],
                sim_faults: list[tuple[int, str, int, bool]], live_faults: list[tuple[str, int, bool]],
                decisions: list[CowDecision], split: frozenset[str] = frozenset()) -> None:
        """Fill ``res`` with this line's comparisons.

        ``split`` names the simulated folios split on this line: the simulator replaces them by new folios,
        while the kernel keeps the head page's ``struct folio`` as the first order-0 piece, so their bindings
        are released before the pages are compared (the pieces' orders and contents still are).
        """
        for name in split:
            head = self.folio_of.pop(name, None)
            if head is not None:
                self.sim_of.pop(head, None)
        spages = sim_pages(m)
        mm_of_tgid: dict[int, str] = {}
        for tgid, names in tasks.items():
            sim_task = m.tasks.get(names[0])
            if sim_task is None:
                self._diff(res, "page", "task alive", names[0], None, "", "exited", "alive")
                continue
            mm_of_tgid[tgid] = sim_task.mm.name
            mm_id = live.mm_ids.get(tgid)
            if mm_id is not None:
                self.role_of_id[mm_id] = sim_task.mm.name
        live_mms = set(mm_of_tgid.values())
        for name, task in m.tasks.items():
            if task.mm.name not in live_mms and spages.get(task.mm.name):
                self._diff(res, "page", "task alive", name, None, "", "alive", "no live process")
        self._faults(res, m, spages, live, mm_of_tgid, tasks, sim_faults, live_faults, decisions)
        pairs = self._pages(res, spages, live, mm_of_tgid, tasks)
        self._folios(res, m, live, pairs)
        alive = {f.name for f in m.folios.values() if not f.freed}
        for name in [n for n in self.folio_of if n not in alive]:
            self.sim_of.pop(self.folio_of.pop(name), None)
        self.prev_sim, self.prev_live = spages, live.pages

    def check(self, res: LineResult, kind: str, fld: str, task: str, addr: int | None, folio: str,
               sim: Any, live: Any) -> bool:
        res.compared += 1
        if sim == live:
            res.agreed += 1
            return True
        self._diff(res, kind, fld, task, addr, folio, sim, live)
        return False

    @staticmethod
    def _diff(res: LineResult, kind: str, fld: str, task: str, addr: int | None, folio: str,
              sim: Any, live: Any) -> None:
        res.diffs.append(Diff(res.line, kind, fld, task, addr, folio, sim, live))

    # ------------------------------------------------------------------ faults
    def _faults(self, res: LineResult, m: Machine, spages: dict[str, dict[int, SimPage]], live: LiveState,
                mm_of_tgid: dict[int, str], tasks: dict[int, list[str]],
                sim_faults: list[tuple[int, str, int, bool]], live_faults: list[tuple[str, int, bool]],
                decisions: list[CowDecision]) -> None:
        sim_seq = [(t, vpn, w) for _step, t, vpn, w in sim_faults]
        live_seq = list(live_faults)
        if not sim_seq and not live_seq:
            return
        tgid_of = {n: tgid for tgid, names in tasks.items() for n in names}
        rules = {(d.task, d.addr >> PAGE_SHIFT): d for d in decisions}
        for i in range(max(len(sim_seq), len(live_seq))):
            s = sim_seq[i] if i < len(sim_seq) else None
            lv = live_seq[i] if i < len(live_seq) else None
            task = (s or lv)[0]  # type: ignore[index]
            vpn = (s or lv)[1]  # type: ignore[index]
            addr = vpn << PAGE_SHIFT
            ok = self.check(res, "fault", "fault (task, page, write)", task, addr, "",
                             _fault_words(s), _fault_words(lv))
            mm = m.tasks[task].mm.name if task in m.tasks else ""
            sim_out = _outcome(self.prev_sim.get(mm, {}).get(vpn), spages.get(mm, {}).get(vpn))
            tgid = tgid_of.get(task)
            live_out = (_outcome_live(self.prev_live.get(tgid, {}).get(vpn), live.pages.get(tgid, {}).get(vpn))
                        if tgid is not None else "no task")
            d = rules.get((task, vpn))
            if ok:
                self.check(res, "fault", "fault outcome", task, addr, "", sim_out, live_out)
            res.faults.append({"task": task, "addr": addr, "write": (s or lv)[2],  # type: ignore[index]
                               "sim": sim_out if s else "no fault", "live": live_out if lv else "no fault",
                               "rule": d.rule.value if d is not None else ""})

    # ------------------------------------------------------------------ pages
    def _pages(self, res: LineResult, spages: dict[str, dict[int, SimPage]], live: LiveState,
               mm_of_tgid: dict[int, str], tasks: dict[int, list[str]]) -> list[tuple[str, int, str, int]]:
        """Compare every page; returns the (simulated folio, live head PFN, task, vpn) pairs seen."""
        pairs: list[tuple[str, int, str, int]] = []
        for tgid, mm in sorted(mm_of_tgid.items()):
            task = ",".join(tasks[tgid])
            sp, lp = spages.get(mm, {}), live.pages.get(tgid, {})
            for vpn in sorted(set(sp) | {v for v, p in lp.items() if p.present}):
                s, lv = sp.get(vpn), lp.get(vpn)
                addr = vpn << PAGE_SHIFT
                present_l = lv is not None and lv.present
                if not self.check(res, "page", "present", task, addr, s.folio if s else "", s is not None,
                                   present_l):
                    continue
                assert s is not None and lv is not None
                if s.zero or lv.zero:
                    self.check(res, "page", "zero page", task, addr, s.folio, s.zero, lv.zero)
                    continue
                self.check(res, "page", "folio order", task, addr, s.folio, s.order, lv.order)
                self.check(res, "page", "page in folio", task, addr, s.folio, s.page, lv.page)
                self.check(res, "page", "anon", task, addr, s.folio, s.anon, lv.anon)
                self.check(res, "page", "precise mapcount (kpagecount)", task, addr, s.folio, s.mapcount,
                            lv.mapcount)
                self.check(res, "page", "pagemap exclusive", task, addr, s.folio, s.exclusive, lv.exclusive)
                self.check(res, "page", "head AnonExclusive (kpageflags)", task, addr, s.folio,
                            s.head_anon_exclusive, lv.head_anon_exclusive)
                bound = self.folio_of.get(s.folio)
                owner = self.sim_of.get(lv.head_pfn)
                if bound is None and owner is None:
                    self.folio_of[s.folio], self.sim_of[lv.head_pfn] = lv.head_pfn, s.folio
                    res.compared += 1
                    res.agreed += 1
                else:
                    self.check(res, "page", "folio identity", task, addr, s.folio,
                                f"{s.folio} (live {bound:#x})" if bound is not None else f"{s.folio} (new)",
                                f"{owner} (live {lv.head_pfn:#x})" if owner is not None
                                else f"a new folio {lv.head_pfn:#x}")
                pairs.append((s.folio, lv.head_pfn, task, vpn))
        return pairs

    # ------------------------------------------------------------------ folios
    def _folios(self, res: LineResult, m: Machine, live: LiveState, pairs: list[tuple[str, int, str, int]]) -> None:
        done: set[str] = set()
        for name, head, task, vpn in pairs:
            if name in done or self.folio_of.get(name) != head:
                continue
            done.add(name)
            f = m.folios[name]
            if not self.full or head not in live.folios:
                res.not_observed += _nr_fields(f)
                continue
            if live.folios[head].order != f.order:
                continue  # already a "folio order" divergence of its pages; its fields do not line up
            self._folio(res, f, live.folios[head], task, vpn << PAGE_SHIFT)

    def _folio(self, res: LineResult, f: SimFolio, k: KernelFolio, task: str, addr: int) -> None:
        core = f.core()
        name = f.name

        def check(fld: str, sim: Any, live: Any) -> None:
            self.check(res, "folio", fld, task, addr, name, sim, live)

        check("refcount", core.refcount, k.refcount)
        if core.is_large:
            check("_large_mapcount", core.large_mapcount, k.large_mapcount)
            check("_entire_mapcount", core.entire_mapcount, k.entire_mapcount)
            check("_pincount", core.pincount, k.pincount)
            check("_nr_pages_mapped", core.nr_pages_mapped, k.nr_pages_mapped)
            for i in (0, 1):
                sim_id = folio_mm_id(core, i)
                live_id = k.mm_id(i)
                check(f"slot {i} MM", self.sim_role(sim_id), self.live_role(live_id))
                check(f"slot {i} mapcount", core.mm_id_mapcount[i], k.mm_id_mapcount[i])  # type: ignore[index]
            check("shared bit", folio_test_large_maybe_mapped_shared(core), k.shared_bit)
            check("lock bit", folio_test_large_mapcount_locked(core), k.lock_bit)
        pages = list(range(f.nr_pages))
        sim_pm, live_pm = [core.page_mapcount[p] for p in pages], list(k.page_mapcount)
        sim_ae, live_ae = [bool(f.exclusive[p]) for p in pages], list(k.anon_exclusive)
        check("per-page _mapcount", _rle(sim_pm), _rle(live_pm))
        check("per-page AnonExclusive", _rle(sim_ae), _rle(live_ae))

    def sim_role(self, mm_id: int) -> str:
        return "-" if mm_id == 0 else self._mm_name_by_sim_id.get(mm_id, f"sim id {mm_id}")

    def live_role(self, mm_id: int | None) -> str:
        if mm_id is None:
            return "not observed"
        return "-" if mm_id == 0 else self.role_of_id.get(mm_id, f"unknown live id {mm_id}")

    def bind_sim_ids(self, m: Machine) -> None:
        """The simulator's MM id -> MM name for the line being compared (ids are reused after an MM is freed)."""
        self._mm_name_by_sim_id = {mm.mm_id: mm.name for mm in m.mms.values() if mm.mm_id}


def _nr_fields(f: SimFolio) -> int:
    return (12 if f.order else 1) + 2


def _rle(values: list[Any]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def _fault_words(f: tuple[str, int, bool] | None) -> str:
    if f is None:
        return "no fault"
    return f"{f[0]} {f[1] << PAGE_SHIFT:#x} {'write' if f[2] else 'read'}"


def _outcome(before: SimPage | None, after: SimPage | None) -> str:
    if after is None:
        return "unmapped"
    if before is None:
        return "new"
    if before.zero and not after.zero:
        return "copy"
    return "reuse" if (before.folio, before.page) == (after.folio, after.page) else "copy"


def _outcome_live(before: PageObs | None, after: PageObs | None) -> str:
    if after is None or not after.present:
        return "unmapped"
    if before is None or not before.present:
        return "new"
    return "reuse" if before.pfn == after.pfn else "copy"


def side_by_side(diff: Diff, m: Machine, live: LiveState, comp: Comparator,
                 tasks: dict[int, list[str]]) -> list[tuple[str, str, str]]:
    """Both sides' state where ``diff`` was found: the page, then every field of its folio (field, sim, live)."""
    rows: list[tuple[str, str, str]] = [("line", str(diff.line), str(diff.line)), ("field", diff.field, diff.field)]
    task = diff.task.split(",")[0]
    tgid = next((t for t, names in tasks.items() if task in names), None)
    sim_task = m.tasks.get(task)
    if diff.addr is not None:
        vpn = diff.addr >> PAGE_SHIFT
        sp = sim_pages(m).get(sim_task.mm.name, {}).get(vpn) if sim_task is not None else None
        lp = live.pages.get(tgid, {}).get(vpn) if tgid is not None else None
        rows.append(("task, address", f"{task} {diff.addr:#x}", f"{task} (pid {tgid}) {diff.addr:#x}"))
        rows.append(("page", _sim_page_words(sp), _live_page_words(lp)))
    name = diff.folio or ""
    f = m.folios.get(name)
    head = comp.folio_of.get(name)
    k = live.folios.get(head) if head is not None else None
    if f is not None and f.folio is not None:
        core = f.core()
        sim_fields: dict[str, Any] = {"order": f.order, "refcount": core.refcount}
        live_fields: dict[str, Any] = {"order": live.orders.get(head, "?") if head is not None else "?",
                                       "refcount": k.refcount if k is not None else "not observed"}
        if core.is_large:
            sim_fields.update({"_large_mapcount": core.large_mapcount, "_entire_mapcount": core.entire_mapcount,
                               "_pincount": core.pincount, "_nr_pages_mapped": core.nr_pages_mapped,
                               "slot 0": f"{comp.sim_role(folio_mm_id(core, 0))} {core.mm_id_mapcount[0]}",
                               "slot 1": f"{comp.sim_role(folio_mm_id(core, 1))} {core.mm_id_mapcount[1]}",
                               "shared bit": folio_test_large_maybe_mapped_shared(core)})
            if k is not None and k.mm_id_mapcount is not None:
                live_fields.update({"_large_mapcount": k.large_mapcount, "_entire_mapcount": k.entire_mapcount,
                                    "_pincount": k.pincount, "_nr_pages_mapped": k.nr_pages_mapped,
                                    "slot 0": f"{comp.live_role(k.mm_id(0))} {k.mm_id_mapcount[0]}",
                                    "slot 1": f"{comp.live_role(k.mm_id(1))} {k.mm_id_mapcount[1]}",
                                    "shared bit": k.shared_bit})
        sim_fields["per-page _mapcount"] = _rle(list(core.page_mapcount))
        sim_fields["per-page AnonExclusive"] = _rle([bool(x) for x in f.exclusive])
        if k is not None:
            live_fields["per-page _mapcount"] = _rle(list(k.page_mapcount))
            live_fields["per-page AnonExclusive"] = _rle(list(k.anon_exclusive))
        rows.append(("folio", name, f"{head:#x}" if head is not None else "unbound"))
        for key, value in sim_fields.items():
            rows.append((key, str(value), str(live_fields.get(key, "not observed"))))
    return rows


def _sim_page_words(p: SimPage | None) -> str:
    if p is None:
        return "not present"
    if p.zero:
        return f"{p.folio} (zero page)"
    return (f"{p.folio}[{p.page}] order {p.order} mapcount {p.mapcount}"
            f"{' excl' if p.exclusive else ''}{' AnonExclusive(head)' if p.head_anon_exclusive else ''}")


def _live_page_words(p: PageObs | None) -> str:
    if p is None or not p.present:
        return "not present"
    if p.zero:
        return f"pfn {p.pfn:#x} (zero page)"
    return (f"pfn {p.pfn:#x} = {p.head_pfn:#x}[{p.page}] order {p.order} mapcount {p.mapcount}"
            f"{' excl' if p.exclusive else ''}{' AnonExclusive(head)' if p.head_anon_exclusive else ''}")
