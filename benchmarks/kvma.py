"""The compiled VMA control plane (foliosim.fast.sim.kvma) against FastMachine's Python one: CPU time per
mmap/mprotect/munmap call (medians), and run-trace's simulator faults/s on recorded programs with each.

    PYTHONPATH=src python benchmarks/kvma.py [--calls 2000] [--vmas 200] [--runs 3] [--write] [TRACE ...]

Per-call costs are taken on a machine set up like run-trace's (no rmap trace, no reference view) holding
``--vmas`` mappings, one call at a time with time.process_time(); each round maps 8 pages, write-protects 2 of them
(a split into three), makes them writable again (the three merge back) and unmaps the 8. ``--direct`` takes the
compiled verbs' own cost on MMs of that many VMAs (e.g. ``--direct 700,3000``: chromium's MMs hold ~650-860), called
straight from Python (no Vma objects made), less the cost of calling a verb that does nothing: the median
microseconds of a mprotect that splits a VMA near the front of the MM (as chromium's mprotects are: ~600 of its ~650
VMAs lie after them) or in its middle into three, the mprotect that merges them back,
a munmap of a page that splits a VMA, the MAP_FIXED mmap that fills it again and an mmap at a new address.
``--write`` puts the tables into docs/performance.md (section ``kvma``). Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

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


DIRECT = ("mprotect split", "mprotect merge", "munmap", "mmap fixed", "mmap")


def per_call_direct(calls: int, vmas: int, front: bool) -> dict[str, float]:
    """Median CPU microseconds of each compiled verb (DIRECT) on an MM of ``vmas`` VMAs (alternately read-only and
    written), at its 22nd VMA (``front``) or its middle one, less a verb call that does nothing (an empty
    merge)."""
    from foliosim.fast.sim import kvma
    from foliosim.fast.sim import layout as L

    m = FastMachine(KernelConfig(), MachineOptions(keep_events=False, check=False), record=False,
                    keep_decisions=False, reference=False, compiled_vmas=True)
    m.spawn("t")
    for k in range(vmas):
        addr = m.mmap("t", 4 * PAGE_SIZE, write=bool(k % 2), label=f"v{k % 7}")
        if k % 2:
            m.write("t", addr, b"\x01" * PAGE_SIZE)
    mm = m.task("t").mm
    mid = mm.vmas[21 if front else len(mm.vmas) // 2 | 1]  # a written one
    vst = m._vst
    vst[kvma.VS_MUTANT:kvma.VS_BIRTH + 1] = (0, mm.anon_birth if mm.anon_birth >= 0 else m._anon_birth(mm))
    clock = time.process_time

    def call(verb: Any, *args: int) -> float:
        while True:
            vst[:kvma.VS_UHI + 1] = (m.nvm, m.nmv, m._mmap_base, mm.vcap, mm.unmerged_lo, mm.unmerged_hi)
            full = (*m.args(), m.pexp, m._scratch(), m.pcache.fc, vst, m._rg, m._gather, mm.num, *args)
            t0 = clock()
            rc = verb(*full)
            t1 = clock()
            m.nvm, m.nmv, m._mmap_base, mm.vcap, mm.unmerged_lo, mm.unmerged_hi = vst[:kvma.VS_UHI + 1].tolist()
            if rc != L.RC_ROOM:
                assert rc == L.RC_OK
                return t1 - t0
            m._kvma_room(mm, int(vst[kvma.VS_NEED]), int(vst[kvma.VS_TABLES]))

    s = mid.start + 1
    times: dict[str, list[float]] = {v: [] for v in ("nop", *DIRECT)}
    for _ in range(calls):
        call(kvma.merge_mm)  # an empty window from here on
        times["nop"].append(call(kvma.merge_mm))
        times["mprotect split"].append(call(kvma.mprotect, s, s + 2, 1, 0, -1))
        times["mprotect merge"].append(call(kvma.mprotect, s, s + 2, 1, 1, -1))
        times["munmap"].append(call(kvma.munmap, s + 2, s + 3))
        times["mmap fixed"].append(call(kvma.mmap, 1, -1, 0, 0, 1, 1, s + 2, 0, 0, 0, 0))
        times["mmap"].append(call(kvma.mmap, 1, -1, 0, 0, 1, 1, -1, 0, 0, 0, 0))
        call(kvma.munmap, vst[kvma.VS_START], vst[kvma.VS_START] + 1)
    nop = statistics.median(times["nop"])
    return {verb: 1e6 * (statistics.median(times[verb]) - nop) for verb in DIRECT}


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
    ap.add_argument("--direct", default="", help="comma-separated VMA counts: the compiled verbs' own cost only")
    args = ap.parse_args()
    load = Path("/proc/loadavg").read_text().strip()
    print("loadavg", load)
    if args.direct:
        per_call_direct(50, 30, True)
        print("| VMAs | at | " + " | ".join(f"{v} (us)" for v in DIRECT) + " |")
        for vmas in (int(x) for x in args.direct.split(",")):
            for front in (True, False):
                res = per_call_direct(args.calls, vmas, front)
                print(f"| {vmas} | {'front' if front else 'middle'} | " + " | ".join(f"{res[v]:.2f}" for v in DIRECT)
                      + " |")
        print("loadavg", Path("/proc/loadavg").read_text().strip())
        return
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
