"""What `foliosim trace --census` costs, and what the live kernel answers on the real programs.

For each program (benchmarks/realprograms.py's six, and examples/run-traces/stuck-bit.py): alternating runs
untraced, traced with `--census none`, `--census events` and `--census periodic` (each with the default budget and
interval), all with the mTHP sizes 16K and 64K enabled (stuck-bit: 64K) for the whole measurement (ThpGuard,
restored at the end). Reports the median wall time of each and the slowdown against the untraced run, the
censuses taken and skipped, and the live verdicts of the last recording of each mode (checks on folios mapped by
one MM, false "shared", stuck bit; false "exclusive"). With --record, also records each program once more with
`--census events --census-budget 1` (every fork and exit, nothing skipped) into
examples/run-traces/NAME.census.trace.gz when it is small enough to keep (2 MB), else into --big-dir.
Writes docs/performance.md section "census".

    sudo .venv/bin/python benchmarks/census.py [--only pool,stuck-bit] [--runs 5] [--record] [--no-doc]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perfdoc import update_section
from realprograms import COMMIT_LIMIT, EXAMPLES, PROGRAMS, THP, THP_FILES, Program, log

MODES = ("none", "events", "periodic")


def _stuck_bit(work: Path, run: int) -> list[str]:
    return [sys.executable, str(EXAMPLES / "stuck-bit.py"), "8"]


STUCK_BIT = Program("stuck-bit", "the stuck-bit program (P forks C1, C2, C3 over 8 64K folios; chained exits)", (),
                    _stuck_bit, "python examples/run-traces/stuck-bit.py 8")
ALL = [*PROGRAMS, STUCK_BIT]


def thp_of(program: Program) -> tuple[str, dict[str, str]]:
    if program is STUCK_BIT:
        return "64K=always", {"hugepages-64kB/enabled": "always"}
    return THP, THP_FILES


def trace(out: Path, argv: list[str], *options: str) -> dict[str, Any]:
    """`foliosim trace OPTIONS -o OUT -- ARGV`; its header (RuntimeError when no complete trace was written)."""
    out.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "foliosim", "trace", *options, "-o", str(out), "--", *argv],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if not out.exists():
        raise RuntimeError(f"foliosim trace {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(out, "rt", encoding="utf-8") as f:
        h: dict[str, Any] = json.loads(f.readline())
    if h.get("incomplete"):
        raise RuntimeError(f"foliosim trace {' '.join(argv)}: the recording is incomplete: {proc.stderr[-2000:]}")
    return h


def measure(program: Program, work: Path, runs: int) -> dict[str, Any]:
    """Alternating untraced and traced runs in every census mode; medians, and the last header of each mode."""
    from foliosim.host.thp import ThpGuard

    _spec, files = thp_of(program)
    walls: dict[str, list[float]] = {"untraced": [], **{m: [] for m in MODES}}
    last: dict[str, dict[str, Any]] = {}
    out = work / "census.trace.gz"
    with ThpGuard(files, lock_timeout=300):
        for run in range(runs):
            argv = program.command(work, 200 + 4 * run)
            t0 = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            walls["untraced"].append(time.perf_counter() - t0)
            for i, mode in enumerate(MODES):
                h = trace(out, program.command(work, 201 + 4 * run + i), "--census", mode)
                walls[mode].append(float(h["recorder"]["wall_s"]))
                last[mode] = h
    out.unlink(missing_ok=True)
    medians = {k: statistics.median(v) for k, v in walls.items()}
    result: dict[str, Any] = {"name": program.name, "title": program.title, "runs": runs, "medians": medians,
                              "all": walls}
    for mode in ("events", "periodic"):
        census = last[mode].get("census", {})
        result[mode] = {"totals": census.get("totals"), "skipped": census.get("skipped"),
                        "seconds": census.get("seconds"), "unavailable": census.get("unavailable")}
    return result


def record_example(program: Program, work: Path, big_dir: Path) -> dict[str, Any]:
    """One recording with every fork and exit censused, kept in examples/run-traces/ if small enough."""
    spec, _files = thp_of(program)
    path = work / f"{program.name}.census.trace.gz"
    h = trace(path, program.command(work, 900), "--thp", spec, "--census", "events", "--census-budget", "1")
    size = path.stat().st_size
    dest = (EXAMPLES if size <= COMMIT_LIMIT else big_dir) / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), dest)
    return {"path": str(dest), "bytes": size, "census": h.get("census", {}), "wall_s": h["recorder"]["wall_s"]}


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} = {100 * k / n:.1f} %" if n else "0/0"


def document(results: list[dict[str, Any]], examples: dict[str, dict[str, Any]], skipped: list[str],
             wall: float) -> str:
    lines = [
        "## The live kernel's verdicts while recording (`foliosim trace --census`)",
        "",
        f"Measured by `benchmarks/census.py` on {platform.node()} (Linux {platform.release()}, 2 vCPUs shared with "
        "other work), the mTHP sizes 16K and 64K set to always for every run (stuck-bit: 64K). Median wall time of "
        f"{results[0]['runs'] if results else 0} alternating runs of each: untraced, and `foliosim trace` with "
        "`--census none`, `events` (before every exit, after every fork; the default) and `periodic` (also every "
        "100 ms while the processes run), each with the default budget (censuses are skipped while they have "
        "taken more than half the traced time so far and more than 0.25 s in all). *Censuses*: taken / skipped "
        "over the budget, and their "
        "time, in the last run of the mode. *Verdicts*: over large anonymous folios, checks of folios mapped by "
        "exactly one MM and how many the kernel called \"maybe shared\" (false shared; by a stuck bit), and checks "
        "of folios mapped by two MMs or more called \"exclusive\" (must be 0), summed over that run's censuses.",
        "",
        "| program | untraced | none | events | periodic | censuses events / periodic | false \"shared\" "
        "(events) | stuck bit | false \"exclusive\" |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        m = r["medians"]
        u = m["untraced"]

        def cell(mode: str, m: dict[str, float] = m, u: float = u) -> str:
            return f"{1000 * m[mode]:.0f} ms ({m[mode] / u:.2f}×)" if u else f"{1000 * m[mode]:.0f} ms"

        def census(mode: str, r: dict[str, Any] = r) -> str:
            c = r[mode]
            if c.get("unavailable") or not c.get("totals"):
                return "n/a"
            return f"{c['totals']['snapshots']} / {sum((c['skipped'] or {}).values())} in {c['seconds']:.2f} s"

        ev = r["events"].get("totals") or {}
        lines.append(
            f"| {r['title']} | {1000 * u:.0f} ms | {cell('none')} | {cell('events')} | {cell('periodic')} | "
            f"{census('events')}; {census('periodic')} | {_rate(ev.get('false_shared', 0), ev.get('one_mm', 0))} | "
            f"{ev.get('stuck_bit', 0)} | {_rate(ev.get('false_exclusive', 0), ev.get('many_mms', 0))} |")
    if examples:
        lines += ["", "Recorded with `--census events --census-budget 1` (every fork and exit censused), kept in "
                  "examples/run-traces/ (`live_verdicts_from_trace()` reads them; `foliosim compare --file` puts them "
                  "beside the simulated designs):", "",
                  "| trace | censuses | checks on 1-MM folios | false \"shared\" | stuck bit | checks on >=2-MM folios "
                  "| false \"exclusive\" | census time / traced wall |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, e in examples.items():
            t = e["census"].get("totals") or {}
            where = Path(e["path"]).name if Path(e["path"]).parent == EXAMPLES else f"(not kept: {e['bytes']} B)"
            lines.append(f"| {name}: {where} | {t.get('snapshots', 0)} | {t.get('one_mm', 0)} | "
                         f"{_rate(t.get('false_shared', 0), t.get('one_mm', 0))} | {t.get('stuck_bit', 0)} | "
                         f"{t.get('many_mms', 0)} | {t.get('false_exclusive', 0)} | "
                         f"{e['census'].get('seconds', 0):.2f} s / {e['wall_s']:.2f} s |")
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped) + "."]
    lines += ["", f"The whole measurement took {wall:.0f} s."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated programs: " + ", ".join(p.name for p in ALL))
    parser.add_argument("--runs", type=int, default=5, help="runs of each kind per program")
    parser.add_argument("--record", action="store_true", help="also record NAME.census.trace.gz examples")
    parser.add_argument("--big-dir", default=str(Path(tempfile.gettempdir()) / "foliosim-census-traces"))
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    args = parser.parse_args()
    wanted = {w for w in args.only.split(",") if w} or {p.name for p in ALL if p.name != "chromium"}
    unknown = wanted - {p.name for p in ALL}
    if unknown:
        log(f"unknown program(s) {sorted(unknown)}")
        return 2
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    examples: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="foliosim-census-") as tmp:
        work = Path(tmp)
        for program in ALL:
            if program.name not in wanted:
                continue
            missing = [n for n in program.needs if shutil.which(n) is None]
            if missing:
                skipped.append(f"{program.name} (no {', '.join(missing)})")
                continue
            log(f"{program.name}: {args.runs} x untraced / none / events / periodic")
            r = measure(program, work, args.runs)
            results.append(r)
            log(f"  medians {json.dumps({k: round(v, 3) for k, v in r['medians'].items()})}; "
                f"events {json.dumps(r['events']['totals'])}")
            if args.record:
                examples[program.name] = e = record_example(program, work, Path(args.big_dir))
                log(f"  recorded {e['path']} ({e['bytes']} B): {json.dumps(e['census'].get('totals'))}")
    wall = time.perf_counter() - start
    text = document(results, examples, skipped, wall)
    print(text)
    if not args.no_doc:
        log(f"wrote {update_section('census', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
