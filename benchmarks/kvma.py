"""The compiled VMA control plane (foliosim.fast.sim.kvma) against FastMachine's Python one: CPU time per
mmap/mprotect/munmap call (medians), and run-trace's simulator faults/s on recorded programs with each.

    PYTHONPATH=src python benchmarks/kvma.py [--calls 2000] [--vmas 200] [--runs 3] [--write] [TRACE ...]

Per-call costs are taken on a machine set up like run-trace's (no rmap trace, no reference view) holding
``--vmas`` mappings, one call at a time with time.process_time(); each round maps 8 pages, write-protects 2 of them
(a split into three), makes them writable again (the three merge back) and unmaps the 8. ``--write`` puts the
tables into docs/performance.md (section ``kvma``). Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perfdoc import update_section

from foliosim.fast.sim.engine import FastMachine
from foliosim.kconfig import KernelConfig
from foliosim.vm.machine import MachineOptions
from foliosim.vm.memory import PAGE_SIZE

ROOT = Path(__file__).resolve().parent.parent
TRACES = ("make", "chromium.census")
VERBS = ("mmap", "mprotect split", "mprotect merge", "munmap")


def per_call(compiled: bool, calls: int, vmas: int) -> dict[str, float]:
    """Median CPU microseconds per call of each verb."""
    m = FastMachine(KernelConfig(), MachineOptions(keep_events=False, check=False), record=False,
                    keep_decisions=False, reference=False, compiled_vmas=compiled)
    m.spawn("t")
    for k in range(vmas):  # a populated address space: mappings with a page written in each
        addr = m.mmap("t", 4 * PAGE_SIZE, write=True, label=f"v{k % 7}")
        m.write("t", addr, b"\x01" * PAGE_SIZE)
    times: dict[str, list[float]] = {v: [] for v in VERBS}
    clock = time.process_time
    for _ in range(calls):
        t0 = clock()
        addr = m.mmap("t", 8 * PAGE_SIZE, write=True, label="x")
        t1 = clock()
        m.mprotect("t", addr + 2 * PAGE_SIZE, 2 * PAGE_SIZE, True, False)
        t2 = clock()
        m.mprotect("t", addr + 2 * PAGE_SIZE, 2 * PAGE_SIZE, True, True)
        t3 = clock()
        m.munmap("t", addr, 8 * PAGE_SIZE)
        t4 = clock()
        for verb, dt in zip(VERBS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[verb].append(dt)
    return {verb: 1e6 * statistics.median(ts) for verb, ts in times.items()}


def trace_run(name: str, compiled: bool) -> tuple[float, int]:
    """run-trace's simulation of a recorded program on the fast engine: (TraceRun.sim_seconds, a wall time; faults
    taken)."""
    from foliosim.live.tracesim import simulate
    from foliosim.workloads.runtrace import RunTrace

    defaults = FastMachine.__init__.__kwdefaults__
    assert defaults is not None
    old = defaults["compiled_vmas"]
    defaults["compiled_vmas"] = compiled  # TraceMachine takes the engine's default
    try:
        run = simulate(RunTrace.open(ROOT / "examples" / "run-traces" / f"{name}.trace.gz"), engine="fast")
    finally:
        defaults["compiled_vmas"] = old
    return run.sim_seconds, run.faults_taken


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("traces", nargs="*", default=list(TRACES))
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--vmas", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    load = Path("/proc/loadavg").read_text().strip()
    print("loadavg", load)
    per_call(True, 50, 10)  # compile/load the kernels first
    rows = ["| call | Python control plane (us) | compiled (us) | ratio |", "| --- | ---: | ---: | ---: |"]
    py, kc = per_call(False, args.calls, args.vmas), per_call(True, args.calls, args.vmas)
    for verb in VERBS:
        rows.append(f"| {verb} | {py[verb]:.1f} | {kc[verb]:.1f} | {py[verb] / kc[verb]:.1f}x |")
        print(rows[-1])
    trows = ["| trace | faults | Python control plane: sim s (faults/s) | compiled: sim s (faults/s) | ratio |",
             "| --- | ---: | --- | --- | ---: |"]
    for name in args.traces:
        trace_run(name, True)
        res = {}
        for compiled in (False, True):
            secs = []
            for _ in range(args.runs):
                s, faults = trace_run(name, compiled)
                secs.append(s)
            res[compiled] = statistics.median(secs)
        trows.append(f"| {name} | {faults:,} | {res[False]:.3f} ({faults / res[False] / 1e3:.0f} k) | "
                     f"{res[True]:.3f} ({faults / res[True] / 1e3:.0f} k) | {res[False] / res[True]:.2f}x |")
        print(trows[-1])
    load_after = Path("/proc/loadavg").read_text().strip()
    print("loadavg", load_after)
    if args.write:
        body = (f"### The compiled VMA control plane (benchmarks/kvma.py)\n\nCPU time per call, medians of "
                f"{args.calls} calls on an MM of {args.vmas} mappings (loadavg before: {load}; after: {load_after}):"
                "\n\n" + "\n".join(rows) + f"\n\nrun-trace's simulator on the fast engine, oracle off (TraceRun."
                f"sim_seconds: wall time of the simulation steps, the trace conversion aside), medians of {args.runs} "
                "runs, faults/s = faults taken / sim_seconds:\n\n" + "\n".join(trows))
        update_section("kvma", body)


if __name__ == "__main__":
    main()
