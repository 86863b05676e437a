"""Wall time of the README's default ``foliosim compare``, this tree against a baseline source tree.

Run on demand: ``.venv/bin/python benchmarks/compare_scoring.py --baseline-src DIR [--repeat 3]``, DIR the ``src/``
of an older full checkout (e.g. ``git worktree add --detach /tmp/old <ref>``, DIR ``/tmp/old/src``: a bare copy of
``src/`` has no examples/run-traces beside it, so its compare would leave out the recorded programs; its numba
cache compiles on the first run, so run once untimed with ``--warm``). The two trees run alternately, each into a
fresh database, from the checkout's root (so the recorded programs of examples/run-traces are part of the grid);
the digests of their metric rows and headlines must agree.
Writes the ``compare-scoring`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perfdoc import update_section

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far (compare and its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


CPU: dict[Path, list[float]] = {}  # per source tree: the CPU seconds of each run


def run(src: Path) -> tuple[float, str, str, str]:
    """One default compare on the sources in ``src``: (seconds, load before, load after, digest of the results);
    its CPU seconds go to ``CPU``."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "r.sqlite"
        env = {**os.environ, "PYTHONPATH": str(src)}
        before = load()
        c0 = cpu()
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "foliosim.cli", "compare", "-q", "--db", str(db), "--report",
                              str(Path(tmp) / "report")], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True)
        seconds = time.perf_counter() - t0
        CPU.setdefault(src, []).append(cpu() - c0)
        with sqlite3.connect(db) as conn:
            rows = conn.execute("select c.design, c.workload, c.seed, c.questions, c.question_digest, m.metric, "
                                "m.consumer, m.folio_order, m.mms, m.value from metrics m join cells c "
                                "using (cell_id) order by 1, 2, 3, 6, 7, 8, 9").fetchall()
        digest = hashlib.sha256(repr((rows, out.stdout)).encode()).hexdigest()[:16]
        return seconds, before, load(), digest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline-src", type=Path, required=True, help="the older src/ directory to compare against")
    ap.add_argument("--label", default="before", help="what the baseline is (e.g. a commit)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warm", action="store_true", help="one untimed run of each tree first (numba caches)")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing docs/performance.md")
    ap.add_argument("--cpu", action="store_true", help="also the CPU time (compare and its workers, user + system)")
    args = ap.parse_args()
    trees = {args.label: args.baseline_src.resolve(), "this tree": ROOT / "src"}
    if args.warm:
        for src in trees.values():
            run(src)
    times: dict[str, list[float]] = {name: [] for name in trees}
    loads: list[str] = []
    digests: set[str] = set()
    for _ in range(args.repeat):
        for name, src in trees.items():
            seconds, l0, l1, digest = run(src)
            times[name].append(seconds)
            loads += [l0, l1]
            digests.add(digest)
            extra = f", CPU {CPU[src][-1]:.1f} s" if args.cpu else ""
            print(f"{name}: {seconds:.1f} s (load {l0} -> {l1}){extra}", flush=True)
    if len(digests) != 1:
        raise SystemExit(f"the trees' results differ (digests {sorted(digests)}): not a like-for-like timing")
    lines = [f"Whole default `foliosim compare` (README's command, all local processes, fresh database each, "
             f"fast engine), wall time, median of {args.repeat} alternating runs (range); "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
             f"{time.strftime('%Y-%m-%d %H:%M')}, load average {min(loads)}-{max(loads)} during the runs:", ""]
    for name, values in times.items():
        lines.append(f"- {name}: {statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})")
    if args.cpu:
        lines += ["", "CPU time (compare and its worker processes, user + system), median (range):", ""]
        for name, src in trees.items():
            values = CPU[src][1:] if args.warm else CPU[src]
            lines.append(f"- {name}: {statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})")
    lines += ["", f"Both trees gave the same metric rows and headline (digest {digests.pop()})."]
    if args.no_write:
        print("\n".join(lines))
        return
    path = update_section("compare-scoring", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
