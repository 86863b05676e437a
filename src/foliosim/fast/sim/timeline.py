"""Canonical timelines of a scenario run on either engine, for the differential tests.

After every scenario line: its result and failed expectation, the CoW decisions it took (every field, rule
included), the rmap operations it recorded, every live folio (every stored field, refcount, pincount, the
AnonExclusive bits, the deferred-split flag), every MM (id, users, count, VMAs, PTEs, PMDs) and the contents
of every present page. Two engines agree when their timelines are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import KIND_NAMES, FastMachine
from foliosim.kconfig import KernelConfig
from foliosim.system import Op
from foliosim.vm.events import CowDecision
from foliosim.vm.machine import Machine
from foliosim.vm.scenario import StepRecord


@dataclass(frozen=True, slots=True)
class LineState:
    """Everything one scenario line left behind."""

    line: int
    result: str
    failed: str | None
    cows: tuple[CowDecision, ...]
    ops: tuple[Op, ...]
    folios: tuple[tuple[Any, ...], ...]
    mms: tuple[tuple[Any, ...], ...]
    contents: tuple[tuple[str, int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Timeline:
    lines: tuple[LineState, ...]
    error: str | None
    violation: str | None
    failures: tuple[str, ...]


def _vmas(vmas: Any) -> tuple[tuple[Any, ...], ...]:
    return tuple((v.start, v.end, v.read, v.write, v.shared, tuple(sorted(v.thp)), v.anon_vma is not None,
                  v.anon_vma_forked, v.dontfork, None if v.file is None else v.file.name, v.pgoff) for v in vmas)


def reference_state(m: Machine) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
    """(folios, mms, contents) of a reference machine."""
    folios = tuple((name, f.kind.value, f.core().key(), tuple(f.exclusive), f.deferred_split, f.pins)
                   for name, f in m.folios.items())
    mms = []
    contents = []
    for mm in m.mms.values():
        ptes = tuple(sorted((vpn, p.folio.name, p.page, p.write, p.dirty) for vpn, p in mm.ptes.items()))
        pmds = tuple(sorted((idx, p.folio.name, p.write) for idx, p in mm.pmds.items()))
        mms.append((mm.name, mm.mm_id, mm.users, mm.count, _vmas(mm.vmas), ptes, pmds,
                    tuple(sorted(mm.pte_tables))))
        for vpn, p in sorted(mm.ptes.items()):
            contents.append((mm.name, vpn, p.folio.data[p.page]))
        for idx, pmd in sorted(mm.pmds.items()):
            for k in range(pmd.folio.nr_pages):
                contents.append((mm.name, (idx << m.pmd_order) + k, pmd.folio.data[k]))
    return folios, tuple(mms), tuple(contents)


def fast_state(m: FastMachine) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
    """(folios, mms, contents) of a fast machine, in the reference's terms."""
    folios = []
    for f in m.live_folios():
        order = int(m.fs[f, 1])
        off = int(m.fs[f, 2])
        folios.append((f"f{int(m.fs[f, L.X_NAME])}", KIND_NAMES[int(m.fs[f, L.X_KIND])], m.export_folio(f).key(),
                       tuple(bool(x) for x in m.pex[off:off + (1 << order)].tolist()), bool(m.fs[f, L.X_DEFER]),
                       int(m.fs[f, L.X_PINS])))
    mms = []
    contents = []
    for mm in m.mms.values():
        m._sync(mm)
        ptes_d, pmds_d = m.mappings(mm)
        ptes = tuple(sorted((vpn, m.view(f).name, page, w, d) for vpn, (f, page, w, d) in ptes_d.items()))
        pmds = tuple(sorted((idx, m.view(f).name, w) for idx, (f, w) in pmds_d.items()))
        tables = tuple(sorted(int(m.tb[t, L.TB_IDX]) for t in m._mm_tables(mm).tolist() if m.tb[t, L.TB_HASPT]))
        mms.append((mm.name, mm.mm_id, mm.users, mm.count, _vmas(mm.vmas), ptes, pmds, tables))
        for vpn, (f, page, _w, _d) in sorted(ptes_d.items()):
            contents.append((mm.name, vpn, m.content(f, page)))
        for idx, (f, _w) in sorted(pmds_d.items()):
            for k in range(m.P):
                contents.append((mm.name, (idx << m.po) + k, m.content(f, k)))
    return tuple(folios), tuple(mms), tuple(contents)


def reference_timeline(text: str, config: KernelConfig, check: bool = True) -> Timeline:
    """Run ``text`` on the reference engine and record its timeline."""
    from foliosim.vm.scenario import run

    lines: list[LineState] = []
    marks = [0, 0]

    def step(rec: StepRecord, m: Machine) -> None:
        cows = tuple(m.cow_decisions[marks[0]:])
        ops = tuple(m.trace[marks[1]:])
        marks[0], marks[1] = len(m.cow_decisions), len(m.trace)
        lines.append(LineState(rec.command.line, rec.result, rec.failed, cows, ops, *reference_state(m)))

    result = run(text, config, check, on_step=step)
    return Timeline(tuple(lines), str(result.error) if result.error else None,
                    None if result.violation is None else "violation", tuple(result.failures))


def fast_timeline(text: str, config: KernelConfig, check: bool = True, mutant: int = L.MUTANT_NONE) -> Timeline:
    """Run ``text`` on the fast engine and record its timeline (Unsupported propagates)."""
    from foliosim.fast.sim.scenario import run

    lines: list[LineState] = []
    marks = [0, 0]

    def step(rec: StepRecord, m: FastMachine) -> None:
        cows = tuple(m.cow_decisions[marks[0]:])
        ops = tuple(m.trace[marks[1]:])
        marks[0], marks[1] = len(m.cow_decisions), len(m.trace)
        lines.append(LineState(rec.command.line, rec.result, rec.failed, cows, ops, *fast_state(m)))

    result = run(text, config, check, on_step=step, mutant=mutant)
    return Timeline(tuple(lines), str(result.error) if result.error else None,
                    None if result.violation is None else "violation", tuple(result.failures))


def first_difference(a: Timeline, b: Timeline) -> str | None:
    """Where two timelines first differ, in words (None: equal)."""
    for la, lb in zip(a.lines, b.lines, strict=False):
        if la == lb:
            continue
        for name in LineState.__slots__:
            va, vb = getattr(la, name), getattr(lb, name)
            if va != vb:
                if isinstance(va, tuple) and isinstance(vb, tuple):
                    for i, (x, y) in enumerate(zip(va, vb, strict=False)):
                        if x != y:
                            return f"line {la.line}: {name}[{i}]: reference {x!r} != fast {y!r}"
                    return f"line {la.line}: {name}: lengths {len(va)} != {len(vb)}"
                return f"line {la.line}: {name}: reference {va!r} != fast {vb!r}"
    if len(a.lines) != len(b.lines):
        return f"{len(a.lines)} lines != {len(b.lines)} lines"
    for name in ("error", "violation", "failures"):
        if getattr(a, name) != getattr(b, name):
            return f"{name}: reference {getattr(a, name)!r} != fast {getattr(b, name)!r}"
    return None
