"""Compare's driving run of recorded run traces (examples/run-traces/) on the compiled simulator, oracle off:
CPU time and faults/s per trace (medians of N runs), optionally the reference engine's driving run once.

    PYTHONPATH=src python benchmarks/fastsim-traces.py [--runs 3] [--reference] [TRACE ...]

Prints one line per trace; the load average is printed first (the machine is shared). Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from foliosim.kconfig import KernelConfig
from foliosim.workloads.runtrace import Race, RunTrace, Snapshot, prepare
from foliosim.workloads.steps import Step

ROOT = Path(__file__).resolve().parent.parent
TRACES = ("make", "redis-bgsave", "pool", "prefork-server", "chromium.census")


def load(name: str) -> list[Step]:
    path = ROOT / "examples" / "run-traces" / f"{name}.trace.gz"
    return [i for i in prepare(RunTrace.open(path)).items() if not isinstance(i, (Race, Snapshot))]


def faults(steps: list[Step]) -> int:
    return sum(1 for s in steps if s.verb == "fault")


def fast_once(steps: list[Step]) -> float:
    from foliosim.fast.sim.score import drive_fast

    t0 = time.process_time()
    drive_fast(steps, KernelConfig(), oracle="off")
    return time.process_time() - t0


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("traces", nargs="*", default=list(TRACES))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reference", action="store_true")
    args = ap.parse_args()
    print("loadavg", Path("/proc/loadavg").read_text().strip())
    for name in args.traces:
        steps = load(name)
        n = faults(steps)
        fast_once(steps[:200])  # warm the compiled kernels
        times = [fast_once(steps) for _ in range(args.runs)]
        med = statistics.median(times)
        line = (f"{name:18s} steps {len(steps):7d} faults {n:7d}  fast {med:7.3f} s "
                f"({min(times):.3f}-{max(times):.3f})  {n / med / 1e3:7.1f} k faults/s")
        if args.reference:
            ref = reference_once(steps)
            line += f"  reference {ref:7.3f} s {n / ref / 1e3:6.1f} k faults/s  x{ref / med:.1f}"
        print(line, flush=True)
    print("loadavg", Path("/proc/loadavg").read_text().strip(), file=sys.stderr)


if __name__ == "__main__":
    main()
