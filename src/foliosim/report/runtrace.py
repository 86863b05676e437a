"""The text summary of ``foliosim run-trace``: what was simulated, what was not and why, and the live agreement."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foliosim.live.snapcheck import SnapshotChecker
    from foliosim.live.tracesim import TraceRun


def _counts(counter: Counter[str], limit: int = 12) -> str:
    items = counter.most_common()
    text = ", ".join(f"{name} {n}" for name, n in items[:limit])
    if len(items) > limit:
        text += f", ... ({len(items) - limit} more)"
    return text


def _orders(counter: Counter[tuple[str, int]]) -> str:
    return ", ".join(f"{kind} order {order}: {n}" for (kind, order), n in sorted(counter.items())) or "none"


def summary_lines(run: TraceRun) -> list[str]:
    """Every line of the summary, in order."""
    h = run.header
    c = run.convert
    rec = h.recorder
    how = f"recorded with {rec['mechanism']}" if rec.get("mechanism") else "recorder unknown"
    if rec.get("slowdown"):
        how += f", traced {rec['slowdown']}x slower"
    if rec.get("lost_events"):
        how += f", {rec['lost_events']} events LOST"
    collapsed = rec.get("khugepaged_collapsed")
    if collapsed:
        how += f", khugepaged collapsed {collapsed} huge page(s) on the machine meanwhile"
    out = [f"foliosim run-trace: {run.name}: {' '.join(h.command) or '?'} (kernel {h.kernel or '?'}; {how})"]
    if h.incomplete:
        out.append(f"the recording is INCOMPLETE ({h.incomplete}): it ends where the recorder stopped")
    thp = (f"THP: anon always {sorted(h.thp.always) or 'none'}, with MADV_HUGEPAGE also "
           f"{sorted(h.thp.madvise) or 'none'}; anonymous shared memory {sorted(h.thp.shmem) or 'order 0'}")
    out.append(thp)
    if run.oracle == "off":
        walk = ": it walks every mapped page" if run.engine == "reference" else ""
        oracle = f"off (--oracle reuse|every turns it on{walk})"
    else:
        oracle = f"{run.oracle}, {run.oracle_engine}"
    out.append(f"design: {run.design}; isolation oracle: {oracle}; engine: {run.engine}")
    if run.stopped:
        out.append(f"the simulation STOPPED early: {run.stopped}")
    out.append("")
    out.append(f"tasks: {run.tasks} ({c.processes} processes, {c.threads} threads); {c.lines} trace lines -> "
               f"{run.steps} simulator steps")
    not_taken = Counter({k: n for k, n in run.faults.items() if k != "taken"})
    out.append(f"faults: {run.recorded_faults} recorded ({c.write_faults} writes), {run.faults_taken} replayed "
               f"as faults by the simulator, {sum(not_taken.values())} not")
    for cause, n in not_taken.most_common():
        out.append(f"  not taken: {cause}: {n}")
    if c.populated:
        out.append(f"  plus {c.populated} page accesses of calls that populate (MAP_POPULATE, MADV_POPULATE_*)")
    out.append(f"copy-on-write: {run.copies} copies, {run.reuses} reuses")
    width = max((len(rule) for rule, _o in run.cow), default=0)
    for (rule, outcome), n in run.cow_ranked():
        out.append(f"  {rule:<{width}}  {outcome:<9} {n}")
    out.append(f"folios allocated: {_orders(run.allocated)}")
    out.append(f"folios alive at the end: {_orders(run.alive)}")
    out.append(f"memory calls: {_counts(c.syscalls) or 'none'}")
    for label, counter in (("failed in the trace (change nothing)", c.failed),
                           ("refused or failed in the simulator", run.rejected),
                           ("cannot be expressed", c.unexpressed),
                           ("approximated", c.approximated),
                           ("no effect on what the simulator models", c.ignored),
                           ("skipped", c.skipped)):
        if counter:
            out.append(f"  {label}: {_counts(counter)}")
    for example in run.rejected_examples[:3]:
        out.append(f"    e.g. {example}")
    if c.files:
        out.append(f"files: {c.files} (one page cache per device and inode)")
    rate = f"{run.faults_per_second:,.0f} faults/s" if run.sim_seconds else "-"
    loaded = f", loading the compiled kernels ({run.load_seconds:.2f} s)" if run.engine == "fast" else ""
    out.append(f"simulator: {run.sim_seconds:.2f} s for {run.steps} steps ({rate}); wall {run.wall_seconds:.2f} s "
               f"(reading the trace{loaded} and comparing snapshots ({run.check_seconds:.2f} s) included)")
    if run.oracle != "off":
        verdict = "no problem" if not run.oracle_problems else "; ".join(run.oracle_problems[:3])
        out.append(f"isolation oracle: {run.oracle_runs} runs, {verdict}")
    if run.design_totals:
        t = run.design_totals
        out.append(f"design {run.design}: {int(t['checks'])} consumer checks on large folios, "
                   f"{int(t['false_shared'])} falsely shared, {int(t['false_exclusive'])} falsely exclusive, "
                   f"{int(t['unsafe'])} unsafe and {int(t['avoidable'])} avoidable decisions")
    if run.check is not None:
        out.append("")
        out += agreement_lines(run.check)
        out += khugepaged_lines(run.check, collapsed)
    elif h.check_live:
        out.append("live agreement: the trace was recorded with --check-live but holds no snapshot")
    return out


def khugepaged_lines(check: SnapshotChecker, collapsed: int | None) -> list[str]:
    """Where khugepaged's collapses fall among the snapshots that disagree. A collapse is in no trace line and the
    simulator does not make one, so the fields that disagree in snapshots taken after the machine's first collapse
    (each snapshot records the count since the recording began) may be its work and those before it are not;
    ``collapsed`` (the header's count for the whole run) speaks for traces whose snapshots lack the count."""
    differ = check.compared - check.agreed
    if not differ:
        return []
    snaps = check.per_snapshot
    known = [s for s in snaps if s.get("khugepaged_collapsed") is not None]
    if not known:
        if not collapsed:
            return []
        return [f"  khugepaged collapsed {collapsed} huge page(s) on the machine while the program ran, in no trace "
                "line: a disagreement may be its work (the count is the machine's, not the program's)"]
    after = [s for s in known if s["khugepaged_collapsed"] > 0]
    d_after = sum(s["compared"] - s["agreed"] for s in after)
    d_before = sum(s["compared"] - s["agreed"] for s in known if s["khugepaged_collapsed"] == 0)
    unknown = differ - d_after - d_before
    tail = f"; in snapshots that could not read the count: {unknown}" if unknown else ""
    if not after:
        if not unknown:
            return [f"  khugepaged had collapsed no huge page on the machine when the snapshots that disagree were "
                    f"taken: none of the disagreeing fields ({differ}) is its work"]
        return [f"  khugepaged had collapsed no huge page on the machine when the snapshots that read its count were "
                f"taken. Disagreeing fields in those, which are not its work: {d_before}{tail}"]
    most = max(s["khugepaged_collapsed"] for s in after)
    return [f"  khugepaged collapsed huge pages on the machine from the snapshot at line {after[0]['line']} on "
            f"({most} by the last snapshot), in no trace line (the count is the machine's, not the program's). "
            f"Disagreeing fields in snapshots from there on, which may be its work: {d_after}; in earlier snapshots, "
            f"which are not: {d_before}{tail}"]


def agreement_lines(check: SnapshotChecker) -> list[str]:
    total = check.compared
    pct = f"{100.0 * check.agreed / total:.2f}%" if total else "-"
    out = [f"live agreement ({check.snapshots} snapshots, anonymous pages): {pct} of {total} compared fields agree"]
    for name, count in check.fields.items():
        if count.compared == 0 and count.not_observed == 0:
            continue
        share = f"{count.percent:6.2f}% ({count.agreed}/{count.compared})" if count.compared else "      -"
        unobserved = f", not observed {count.not_observed}" if count.not_observed else ""
        out.append(f"  {name:<20} {share}{unobserved}")
    if check.causes:
        out.append("  disagreements by cause:")
        for (fld, cause), n in check.causes.most_common():
            out.append(f"    {fld}: {cause}: {n}")
    out.append(f"  not compared: {check.file_pages} file pages (also mapped outside the traced tree), "
               f"{check.zero_pages} zero-page mappings, {check.file_anon_pages} anonymous copies in private file "
               f"mappings of snapshots that cover anonymous mappings only (recorded without scope \"anon\"); "
               f"{check.file_diffs} live pages where the simulator has a file page")
    if check.examples:
        out.append("  first disagreements:")
        out += [f"    {d.describe()}" for d in check.examples[:10]]
    return out


__all__ = ["agreement_lines", "summary_lines"]
