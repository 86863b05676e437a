"""Compare's driving run of recorded run traces (examples/run-traces/) on the compiled simulator, oracle off:
CPU time and faults/s per trace (medians of N runs), optionally the reference engine's driving run once.

    PYTHONPATH=src python benchmarks/fastsim-traces.py [--runs 3] [--reference] [--write] [TRACE ...]

Prints one line per trace; the load average is printed first (the machine is shared). ``--write`` puts the table
into docs/performance.md (section ``fastsim-traces``). Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import platform
import statistics
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
    args = ap.parse_args()
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
