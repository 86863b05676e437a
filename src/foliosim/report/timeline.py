"""Text rendering of a scenario run: the timeline and the final summary (no printing here)."""

from __future__ import annotations

from collections import Counter

from foliosim.explain import explain_verdict
from foliosim.system import Op
from foliosim.vm.events import Event
from foliosim.vm.machine import Machine
from foliosim.vm.scenario import RunResult, StepRecord, summary_head
from foliosim.vm.stats import smaps_rollup

QUIET = frozenset({"rmap", "access"})


def render_step(rec: StepRecord, machine: Machine, verbose: bool = False) -> list[str]:
    """The lines for one scenario line: the command, its result, its events, touched folios' verdicts."""
    out = [rec.headline()]
    touched: list[str] = []
    for event in rec.events:
        if event.kind == "rmap":
            op = event.data.get("op")
            if isinstance(op, Op) and op.folio and op.op in ("map_new_anon", "map", "dup", "unmap") \
                    and op.folio not in touched:
                touched.append(op.folio)
        if event.kind in QUIET and not verbose:
            continue
        out.append(f"          {_label(event)} {event.text}")
    for name in touched:
        handle = machine.rmap.folios.get(name)
        if handle is None:
            continue
        folio = handle.folio
        out.append(f"          verdict {name} (order {folio.order}): {explain_verdict(folio, handle.truth)}")
    if rec.failed:
        out.append(f"          EXPECTATION FAILED: {rec.failed}")
    return out


def _label(event: Event) -> str:
    owner = event.data.get("owner")
    if event.kind == "rmap" and owner:
        return f"rmap [{owner}]"
    return f"{event.kind:<8}"


def render_summary(result: RunResult) -> list[str]:
    m = result.machine
    out = summary_head("summary", m.step, len(m.trace), m.config.describe(), m.pmd_order, m.counters)
    for task in sorted(m.tasks.values(), key=lambda t: t.pid):
        roll = smaps_rollup(m, task.mm).as_kb()
        stats = " ".join(f"{k} {v}kB" for k, v in roll.items())
        out.append(f"  {task.name} (pid {task.pid}) on {task.mm.name} (MM id {task.mm.mm_id}, users {task.mm.users},"
                   f" count {task.mm.count}): {stats}")
    orphans = [mm for mm in m.mms.values() if not any(t.mm is mm for t in m.tasks.values())]
    for mm in orphans:
        out.append(f"  {mm.name} (MM id {mm.mm_id}) has no task but is still referenced: users {mm.users}, "
                   f"count {mm.count}")
    kinds = Counter(f"{f.kind.value} order {f.order}" for f in m.folios.values())
    out.append("  live folios: " + (", ".join(f"{n} x {k}" for k, n in sorted(kinds.items())) or "none"))
    if result.violation:
        out.append(f"  ORACLE VIOLATION at {result.violation}")
    elif m.options.check:
        out.append("  isolation oracle and invariants: checked after every step, all held")
    if result.failures:
        out.append(f"  {len(result.failures)} expectation(s) FAILED:")
        out.extend(f"    {f}" for f in result.failures)
    return out
