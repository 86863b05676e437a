"""Compare's driving run of recorded run traces (examples/run-traces/) on the compiled simulator, oracle off:
CPU time and faults/s per trace (medians of N runs), optionally the reference engine's driving run once.

    PYTHONPATH=src python benchmarks/fastsim-traces.py [--runs 3] [--reference] [--write] [TRACE ...]
    PYTHONPATH=src python benchmarks/fastsim-traces.py --against ../base [--runs 3] [TRACE ...]

Prints one line per trace; the load average is printed first (the machine is shared). ``--write`` puts the table
into docs/performance.md (section ``fastsim-traces``). ``--against TREE``: an interleaved A/B with another
checkout (its ``src`` first on the path): each of the N rounds runs a fresh process of each tree in turn, which
times one driving run after a warm-up run; medians and ranges per tree, and whether both streams' digests agree. Not a
test: no assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perfdoc import update_section

from foliosim.kconfig import KernelConfig
from foliosim.workloads.runtrace import Race, RunTrace, Snapshot, prepare
from foliosim.workloads.steps import Step

ROOT = Path(__file__).resolve().parent.parent
TRACES = ("make", "redis-bgsave", "pool", "prefork-server", "chromium.census")


def load(name: str) -> list[Step]:
    """The trace's steps as compare's driving run gets them (foliosim.evaluate.cell.run_cells): with the reader's
    fault columns (tracerun.told_steps()); a plain list on a tree that has no such columns (``--against``)."""
    path = ROOT / "examples" / "run-traces" / f"{name}.trace.gz"
    conv = prepare(RunTrace.open(path))
    steps = [i for i in conv.items() if not isinstance(i, (Race, Snapshot))]
    try:
        from foliosim.fast.sim.tracerun import told_steps
    except ImportError:
        return steps
    return told_steps(conv, steps)


def faults(steps: list[Step]) -> int:
    return sum(1 for s in steps if s.verb == "fault")


def fast_once(steps: list[Step]) -> float:
    from foliosim.fast.sim.score import drive_fast

    t0 = time.process_time()
    drive_fast(steps, KernelConfig(), oracle="off")
    return time.process_time() - t0


def child(name: str) -> None:
    """``--child``: one warm-up and one timed driving run of ``name``, as JSON (seconds, stream digest, ops). The
    warm-up is a whole run: numba loads a compiled function's cached code at its first call, a few tens of ms in
    all, which a process pays once."""
    from foliosim.fast.sim.score import drive_fast

    steps = load(name)
    drive_fast(steps, KernelConfig(), oracle="off")
    t0 = time.process_time()
    drive = drive_fast(steps, KernelConfig(), oracle="off")
    seconds = time.process_time() - t0
    print(json.dumps([seconds, drive.stream.digest(), len(drive.stream.ops)]))


def against(tree: Path, names: list[str], runs: int) -> None:
    """Interleaved A/B of this checkout and ``tree``, a fresh process per run (see the module docstring)."""
    trees = {"this": ROOT, tree.name or str(tree): tree.resolve()}
    for name in names:
        n = faults(load(name))
        got: dict[str, list[float]] = {label: [] for label in trees}
        digests: set[tuple[str, int]] = set()
        for _ in range(runs):
            for label, root in trees.items():
                env = {**os.environ, "PYTHONPATH": str(root / "src")}
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", name], env=env,
                                     check=True, capture_output=True, text=True).stdout
                seconds, digest, ops = json.loads(out.strip().splitlines()[-1])
                got[label].append(seconds)
                digests.add((digest, ops))
        cells = []
        for label, times in got.items():
            med = statistics.median(times)
            cells.append(f"{label} {med:.3f} s ({min(times):.3f}-{max(times):.3f}) {n / med / 1e3:6.1f} k faults/s")
        ratio = statistics.median(got[list(trees)[1]]) / statistics.median(got["this"])
        print(f"{name:18s} faults {n:6d}  " + "  ".join(cells) + f"  x{ratio:.2f}  "
              f"{'same stream' if len(digests) == 1 else 'STREAMS DIFFER'}", flush=True)


def reference_once(steps: list[Step]) -> float:
    from foliosim.evaluate.probe import Probe
    from foliosim.evaluate.runner import WorkloadRunner
    from foliosim.schemes.base import make_design
    from foliosim.vm.machine import Machine, MachineOptions

    config = KernelConfig()
    t0 = time.process_time()
    machine = Machine(config, MachineOptions(keep_events=False, check=False))
    probe = Probe(machine, make_design("kernel", config), "off", record=True, census=True)
    WorkloadRunner(machine, probe, strict=False).run(steps)
    probe.finish()
    return time.process_time() - t0


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("traces", nargs="*", default=list(TRACES))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    ap.add_argument("--against", type=Path, help="interleaved A/B with another checkout (fresh process per run)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    if args.against:
        print("loadavg", Path("/proc/loadavg").read_text().strip())
        against(args.against, args.traces, args.runs)
        print("loadavg", Path("/proc/loadavg").read_text().strip())
        return
    load_before = Path("/proc/loadavg").read_text().split()[0]
    print("loadavg", Path("/proc/loadavg").read_text().strip())
    table = ["| trace | steps | faults | fast (s, median, range) | fast faults/s | reference (s) | reference faults/s "
             "| fast / reference |", "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name in args.traces:
        steps = load(name)
        n = faults(steps)
        fast_once(steps[:200])  # warm the compiled kernels
        times = [fast_once(steps) for _ in range(args.runs)]
        med = statistics.median(times)
        line = (f"{name:18s} steps {len(steps):7d} faults {n:7d}  fast {med:7.3f} s "
                f"({min(times):.3f}-{max(times):.3f})  {n / med / 1e3:7.1f} k faults/s")
        ref_cells = "| | |"
        if args.reference:
            ref = reference_once(steps)
            line += f"  reference {ref:7.3f} s {n / ref / 1e3:6.1f} k faults/s  x{ref / med:.1f}"
            ref_cells = f"| {ref:.3f} | {n / ref:,.0f} | {ref / med:.1f}x |"
        print(line, flush=True)
        table.append(f"| {name} | {len(steps):,} | {n:,} | {med:.3f} ({min(times):.3f}-{max(times):.3f}) | "
                     f"{n / med:,.0f} {ref_cells}")
    load_after = Path("/proc/loadavg").read_text().split()[0]
    print("loadavg", Path("/proc/loadavg").read_text().strip(), file=sys.stderr)
    if args.write:
        body = [
            "## Recorded real-program traces on the compiled simulator (benchmarks/fastsim-traces.py)",
            "",
            f"`foliosim compare`'s driving run (`drive_fast`, the `kernel` driver, oracle off, the scoring stream "
            f"recorded) of each recorded trace in `examples/run-traces/`, CPU time, median of {args.runs} runs "
            f"(range), against the reference engine's driving run (`WorkloadRunner` with a recording `Probe`), "
            f"one run. {cpu_name()}, {time.strftime('%Y-%m-%d %H:%M')}, one core of a 2-core machine shared with "
            f"other jobs: load average {load_before} before, {load_after} after.",
            "",
            *table,
        ]
        print(f"wrote {update_section('fastsim-traces', chr(10).join(body))}")


if __name__ == "__main__":
    main()
