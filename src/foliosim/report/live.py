"""Text for ``foliosim live``: the per-line agreement table, the first divergence side by side, the summary."""

from __future__ import annotations

from typing import Any

from foliosim.live.compare import LineResult


def line_row(res: LineResult, verbose: bool = False) -> list[str]:
    """One row of the agreement table (and, with ``verbose``, each fault and each disagreement)."""
    mark = "ok " if res.ok else "DIFF"
    observed = f"{res.agreed}/{res.compared}"
    extra = f", {res.not_observed} not observed" if res.not_observed else ""
    rows = [f"{mark} line {res.line:>3}  {observed:>9} agree{extra}  {res.command}"]
    if res.live_result not in ("-", res.sim_result) or verbose:
        rows.append(f"       simulator: {res.sim_result}    live: {res.live_result}")
    if verbose:
        for f in res.faults:
            rule = f"  [{f['rule']}]" if f["rule"] else ""
            rows.append(f"       fault {f['task']} {f['addr']:#x} {'write' if f['write'] else 'read'}: "
                        f"simulator {f['sim']}, live {f['live']}{rule}")
    shown = res.diffs if verbose else res.diffs[:3]
    rows.extend(f"       {d.describe()}" for d in shown)
    if len(res.diffs) > len(shown):
        rows.append(f"       ... and {len(res.diffs) - len(shown)} more (-v shows all)")
    return rows


def side_by_side(rows: list[tuple[str, str, str]]) -> list[str]:
    """The first divergence: each field with the simulator's and the live kernel's value."""
    if not rows:
        return []
    w0 = max(len(r[0]) for r in rows)
    w1 = max(max(len(r[1]) for r in rows), len("simulator"))
    out = ["", "first divergence, both sides:", f"  {'':<{w0}}  {'simulator':<{w1}}  live kernel"]
    for name, sim, live in rows:
        mark = "  " if sim == live else "!="
        out.append(f"{mark}{name:<{w0}}  {sim:<{w1}}  {live}")
    return out


def summary(run: Any) -> list[str]:
    """Totals: lines, fields compared and agreeing, not observed, faults, time."""
    lines = run.lines
    compared = sum(r.compared for r in lines)
    agreed = sum(r.agreed for r in lines)
    not_obs = sum(r.not_observed for r in lines)
    faults = sum(len(r.faults) for r in lines)
    bad = [r.line for r in lines if r.diffs]
    out = [f"{len(lines)} lines, {agreed} of {compared} fields agree, {not_obs} not observed, "
           f"{faults} faults compared; {run.capability.describe()}; {run.seconds:.1f} s"]
    if run.leftover:
        out.append("THP settings left by an earlier run that was killed, restored before this run: "
                   + "; ".join(run.leftover))
    if run.thp_changed:
        out.append("THP settings for the run (restored): " + "; ".join(run.thp_changed))
    if run.sim_error:
        out.append(run.sim_error)
    if bad and run.khugepaged:
        out.append(f"khugepaged collapsed pages on this machine during line(s) {', '.join(map(str, run.khugepaged))}:"
                   " its background collapses are in no scenario line, so a divergence from there on may be its"
                   " work; run again to tell")
    out.append("all agree" if not bad and not run.sim_error else
               f"DIVERGED on {len(bad)} line(s): {', '.join(map(str, bad[:20]))}")
    return out
