"""The whole live suite: every shipped scenario through `foliosim live`, agreement counts and wall time.

Runs each of examples/live/*.scenario and the live-capable examples/*.scenario on this machine's kernel (as
root, with --set-thp: the mTHP sizes are set for each run and restored), and writes a table of lines, fields
compared and agreeing, faults compared and seconds per scenario into docs/performance.md (section "live").

    python benchmarks/live.py
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from perfdoc import update_section

from foliosim.live.run import CannotRun, check_scenario, run_live

ROOT = Path(__file__).resolve().parent.parent


def scenarios() -> list[Path]:
    """The live families, then every top-level example that has a live equivalent."""
    out = sorted((ROOT / "examples" / "live").glob("*.scenario"))
    for path in sorted((ROOT / "examples").glob("*.scenario")):
        try:
            check_scenario(path.read_text())
        except CannotRun as exc:
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        out.append(path)
    return out


def main() -> int:
    if os.geteuid() != 0:
        print("benchmarks/live.py needs root (the live kernel)", file=sys.stderr)
        return 6
    rows = []
    t0 = time.monotonic()
    totals = {"lines": 0, "compared": 0, "agreed": 0, "not_observed": 0, "faults": 0, "diverged": 0}
    for path in scenarios():
        run = run_live(path.read_text(), set_thp=True)
        lines = len(run.lines)
        compared = sum(r.compared for r in run.lines)
        agreed = sum(r.agreed for r in run.lines)
        not_obs = sum(r.not_observed for r in run.lines)
        faults = sum(len(r.faults) for r in run.lines)
        bad = [r.line for r in run.lines if r.diffs]
        rel = path.relative_to(ROOT)
        rows.append(f"| `{rel}` | {lines} | {agreed:,} / {compared:,} | {not_obs} | {faults} | "
                    f"{'all agree' if not bad and not run.sim_error else 'DIVERGED at ' + str(bad[:3])} | "
                    f"{run.seconds:.1f} |")
        print(rows[-1], file=sys.stderr)
        for key, value in (("lines", lines), ("compared", compared), ("agreed", agreed),
                           ("not_observed", not_obs), ("faults", faults), ("diverged", 1 if bad else 0)):
            totals[key] += value
    wall = time.monotonic() - t0
    body = f"""## Live kernel: the whole suite (benchmarks/live.py)

Every shipped scenario run by `foliosim live --set-thp` on this machine's kernel
({platform.release()}, {os.cpu_count()} CPUs; capability full: pagemap, kpagecount, kpageflags,
BPF folio reader, page_fault_user tracepoint). A field is one compared value (a page's
PFN-derived field, a folio's counter, a slot, a fault outcome, a line's result).

**{len(rows)} scenarios, {totals['lines']} lines, {totals['agreed']:,} of {totals['compared']:,} fields agree,
{totals['not_observed']} not observed, {totals['faults']} faults compared, {totals['diverged']} scenario(s)
diverged; wall time {wall:.0f} s** (each run includes starting its agents, the BPF reader and the
tracefs instance, and setting and restoring the mTHP sizes).

| scenario | lines | fields agree / compared | not observed | faults | verdict | s |
| --- | ---: | ---: | ---: | ---: | --- | ---: |
""" + "\n".join(rows)
    update_section("live", body)
    print(f"{len(rows)} scenarios, {totals['agreed']}/{totals['compared']} fields, {wall:.0f} s", file=sys.stderr)
    return 0 if not totals["diverged"] else 5


if __name__ == "__main__":
    sys.exit(main())
