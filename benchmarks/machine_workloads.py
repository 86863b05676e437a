"""The machine living the simulator's fork-heavy workloads: the same generated steps run as real processes on this
kernel (benchmarks/machine_workload.c), their wall time set beside the fast engine's simulation of them.

Issue 13's goal is to simulate a program's memory history at least as fast as the machine lives it. The simulate
benchmark sets the simulator beside the machine's first-touch fault rate; this lives the workloads themselves: each
task a process (fork and exit real, every read and write a byte load or store in its page, MADV_DONTNEED/COLD/PAGEOUT
real), a child's steps run in the child while its parent goes on with the steps that follow the fork, and the parent
waits for the child where the steps say it exits. The order of the two processes' accesses is the scheduler's, not
the steps', so a page's copy-on-write may be decided the other way; the faults each side took are printed beside
each other. khugepaged and NUMA-balancing scan steps, which change nothing in a run without a design to score, have
no machine counterpart and are left out. A heap's folio size is what the THP settings give its faults: a PMD-sized
order gets MADV_HUGEPAGE, order 0 MADV_NOHUGEPAGE, another order no hint; a workload whose orders the settings do not
give (order-4 mTHP needs ``hugepages-64kB/enabled`` set to ``always``) is reported "not measured" unless ``--thp
64K=always`` is given, which sets it for the run only (foliosim.host.thp.ThpGuard: restored on every exit, SIGINT
and SIGTERM included, and by the next run after a SIGKILL).

The machine's time is wall time from its first operation until every process has finished (both cores: processes
run at the same time), its CPU time that of all its processes; the simulator's is one process's CPU time on one core,
as in benchmarks/simulate.py. Medians of runs spaced 20 ms apart. Writes the "machine-workloads" section of
docs/performance.md.

    python benchmarks/machine_workloads.py [--thp 64K=always] [--runs N] [--no-write]
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perfdoc import update_section
from simulate import CASES, FAST_GAP_S, run_fast, steps_of

from foliosim.host import thp
from foliosim.kconfig import KernelConfig
from foliosim.workloads.steps import Step

SOURCE = Path(__file__).resolve().parent / "machine_workload.c"
CACHE = Path(__file__).resolve().parent / ".cache"
#: madvise advice the C program carries out, by its letter
ADVICE = {"dontneed": "D", "cold": "C", "pageout": "P"}
#: steps without a machine counterpart: scans that change nothing without a design to score them
SKIPPED = frozenset({"khugepaged", "numa"})


class NotMeasurable(Exception):
    """The workload cannot be lived on this machine as it is (a step with no counterpart, THP settings)."""


@dataclass(frozen=True, slots=True)
class Program:
    """A workload flattened for machine_workload.c: its text and the folio order each region asks for."""

    text: str
    orders: dict[str, int]


def flatten(steps: list[Step]) -> Program:
    """``steps`` as machine_workload.c's program: the first spawned task is the program's own process, each fork's
    child lines follow its F up to its X, the forking task waits (J) where the child's exit step is."""
    pmd_order = KernelConfig().pmd_order
    lines: list[list[str | int]] = []  # by task number (the root's is 0): its lines, a fork as the child's number
    running: dict[str, int] = {}  # task name -> its number while it runs (a name may come back after an exit)
    parent: dict[int, int] = {}
    regions: dict[Any, int] = {}
    orders: dict[str, int] = {}
    for i, step in enumerate(steps, 1):
        verb, task, args = step.verb, step.task, step.args
        if verb in SKIPPED:
            continue
        if verb == "spawn":
            if lines:
                raise NotMeasurable(f"step {i}: a second spawned task ({task}); the machine program has one root")
            running[task] = 0
            lines.append([])
            continue
        if task not in running:
            raise NotMeasurable(f"step {i}: {verb} by {task!r}, which is not running")
        me = running[task]
        out = lines[me]
        if verb == "mmap":
            region, pages, kind, _file, thp_orders, prot, _offset = args
            if kind != "anon" or prot != "rw":
                raise NotMeasurable(f"step {i}: mmap of a {kind} {prot} mapping (only private anonymous rw)")
            if region in regions:
                raise NotMeasurable(f"step {i}: region {region!r} mapped again")
            order = max(thp_orders) if thp_orders else 0
            regions[region] = len(regions)
            orders[str(region)] = order
            hint = 1 if order == pmd_order else 2 if order == 0 else 0
            out.append(f"M {regions[region]} {pages} {hint}")
        elif verb in ("write", "read"):
            region, first, count = args
            out.append(f"{'W' if verb == 'write' else 'R'} {regions[region]} {first} {count}")
        elif verb == "madvise":
            region, first, count, advice = args
            if advice not in ADVICE:
                raise NotMeasurable(f"step {i}: MADV_{str(advice).upper()} is not lived here")
            out.append(f"{ADVICE[advice]} {regions[region]} {first} {count}")
        elif verb == "fork":
            (child,) = args
            running[child] = len(lines)
            parent[len(lines)] = me
            out.append(len(lines))
            lines.append([])
        elif verb == "exit":
            if me == 0:
                raise NotMeasurable(f"step {i}: the root task exits before the end")
            lines[parent[me]].append(f"J {me}")
            del running[task]
        else:
            raise NotMeasurable(f"step {i}: {verb} has no machine counterpart here")
    if not lines:
        raise NotMeasurable("no spawn step")
    text: list[str] = []

    def render(task: int) -> None:
        for item in lines[task]:
            if isinstance(item, int):
                text.append(f"F {item}")
                render(item)
                text.append("X")
            else:
                text.append(item)

    render(0)
    return Program("\n".join(text) + "\n", orders)


def thp_problem(program: Program, settings: thp.ThpSettings, pmd_order: int) -> str | None:
    """Why this machine's THP settings would not give the program's regions the folio orders it asks for (the
    kernel tries the highest order the settings allow first), or None."""
    for region, order in program.orders.items():
        if order == 0:
            continue  # MADV_NOHUGEPAGE: small pages whatever the settings
        allowed = thp.effective_anon_orders(settings, vma_hugepage=order == pmd_order)
        if not allowed or max(allowed) != order:
            size = f"{thp.size_kb(order)}K"
            return (f"region {region} asks for order-{order} folios; these THP settings give "
                    f"{'order ' + str(max(allowed)) if allowed else 'small pages'} (--thp {size}=always)")
    return None


def binary() -> Path:
    """machine_workload.c compiled (cc -O2), cached under benchmarks/.cache by the source's digest."""
    source = SOURCE.read_bytes()
    out = CACHE / f"machine_workload-{hashlib.sha256(source).hexdigest()[:12]}"
    if not out.exists():
        CACHE.mkdir(exist_ok=True)
        tmp = out.with_suffix(".tmp")
        try:
            done = subprocess.run(["cc", "-O2", "-o", str(tmp), str(SOURCE)], capture_output=True, text=True,
                                  check=False)
        except OSError as exc:
            raise NotMeasurable(f"no C compiler to build {SOURCE.name} (cc: {exc.strerror})") from None
        if done.returncode != 0:
            raise NotMeasurable(f"cc could not build {SOURCE.name}: {done.stderr.strip()[:300]}")
        tmp.replace(out)
    return out


@dataclass(frozen=True, slots=True)
class Lived:
    """One run of a program on the machine."""

    wall_s: float
    faults: int  # minor faults, the root process and its children
    cpu_s: float  # user + system, all the processes


def live(program: Program, exe: Path) -> Lived:
    """Run ``program`` once on this machine."""
    done = subprocess.run([str(exe)], input=program.text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"machine_workload failed ({done.returncode}): {done.stderr.strip()}")
    wall, own, kids, cpu_own, cpu_kids = (int(x) for x in done.stdout.split())
    return Lived(wall / 1e9, own + kids, (cpu_own + cpu_kids) / 1e9)


def measure(steps: list[Step], exe: Path, runs: int) -> dict[str, Any]:
    """The machine's runs and the fast engine's (oracle off), alternating, each after a pause."""
    program = flatten(steps)
    lived: list[Lived] = []
    sim: list[dict[str, float]] = []
    for _ in range(2):  # the compiled kernels and the binary's pages loaded first
        run_fast(steps, False)
        live(program, exe)
    for _ in range(runs):
        time.sleep(FAST_GAP_S)
        lived.append(live(program, exe))
        time.sleep(FAST_GAP_S)
        sim.append(run_fast(steps, False))
    return {"wall": statistics.median(x.wall_s for x in lived), "wall_lo": min(x.wall_s for x in lived),
            "wall_hi": max(x.wall_s for x in lived), "cpu": statistics.median(x.cpu_s for x in lived),
            "faults": statistics.median(x.faults for x in lived), "sim": statistics.median(r["s"] for r in sim),
            "sim_lo": min(r["s"] for r in sim), "sim_hi": max(r["s"] for r in sim), "sim_faults": sim[0]["faults"]}


def table(results: list[tuple[str, dict[str, Any] | str]], settings_text: str, runs: int) -> str:
    from replay import machine

    info = machine()
    lines = [
        "## The machine living the fork-heavy workloads (benchmarks/machine_workloads.py)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {platform.release()}, Python {info['python']}, numba "
        f"{info['numba']}; load average at the end {info['load']}, {info['date']}. "
        f"THP during the runs: {settings_text}. The workloads of benchmarks/simulate.py (seed 1), lived as real "
        "processes by benchmarks/machine_workload.c (each task a process, every access a load or store in its "
        "page; the scheduler orders a parent's and a child's accesses, so a copy-on-write may go the other way "
        "than in the steps) and simulated by the fast engine (oracle off), alternating, each run after 20 ms "
        f"asleep; medians of {runs} runs, range in brackets. Machine wall: from its first operation until every "
        "process has finished (its processes run at the same time, on both cores); machine CPU: all its "
        "processes' user + system time. Fast: one process's CPU time on one core, the conversion of the steps "
        "included (as benchmarks/simulate.py). Faults: minor faults of the machine's processes (their exits "
        "and the C library's own included) / the simulator's.",
        "",
        "| workload | faults, machine / simulated | machine wall | machine CPU | fast | machine wall / fast |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in results:
        if isinstance(r, str):
            lines.append(f"| {label} | not measured: {r} | | | | |")
            continue
        lines.append(f"| {label} | {r['faults']:,.0f} / {r['sim_faults']:,.0f} | {r['wall'] * 1e3:.2f} ms "
                     f"[{r['wall_lo'] * 1e3:.2f}..{r['wall_hi'] * 1e3:.2f}] | {r['cpu'] * 1e3:.2f} ms | "
                     f"{r['sim'] * 1e3:.2f} ms [{r['sim_lo'] * 1e3:.2f}..{r['sim_hi'] * 1e3:.2f}] | "
                     f"{r['wall'] / r['sim']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--thp", metavar="SIZE=VALUE[,...]",
                        help="set anonymous mTHP sizes for the run only (e.g. 64K=always); restored after")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    from foliosim.host.errors import HostError
    from foliosim.live.record import RecordError, parse_thp

    try:
        changes = parse_thp(args.thp)
    except RecordError as exc:
        parser.error(str(exc))
    try:
        exe = binary()
    except NotMeasurable as exc:
        raise SystemExit(f"machine_workloads: {exc}") from None
    pmd_order = KernelConfig().pmd_order
    results: list[tuple[str, dict[str, Any] | str]] = []
    for done in thp.restore_leftover():  # a run killed with SIGKILL while it had changed them: restored first
        print(f"machine_workloads: restored a killed run's THP setting: {done}", file=sys.stderr)
    with ExitStack() as stack:
        if changes:
            try:
                stack.enter_context(thp.ThpGuard(changes, lock_timeout=60))
            except HostError as exc:
                raise SystemExit(f"machine_workloads: --thp: {exc}") from None
        settings = thp.read_settings()
        settings_text = f"enabled={settings.enabled}, " + ", ".join(
            f"{thp.size_kb(o)}K={v}" for o, v in settings.anon.items() if v != "never") + (
            f" (set for this run: {args.thp})" if changes else " (as found)")
        for label, workload, params in CASES:
            steps = steps_of(workload, params)
            try:
                program = flatten(steps)
                problem = thp_problem(program, settings, pmd_order)
                if problem:
                    raise NotMeasurable(problem)
            except NotMeasurable as exc:
                print(f"{label}: not measured: {exc}", file=sys.stderr)
                results.append((label, str(exc)))
                continue
            r = measure(steps, exe, args.runs)
            print(f"{label}: machine {r['wall'] * 1e3:.2f} ms wall ({r['faults']:,.0f} faults), fast "
                  f"{r['sim'] * 1e3:.2f} ms ({r['sim_faults']:,.0f} faults)", file=sys.stderr)
            results.append((label, r))
    body = table(results, settings_text, args.runs)
    if args.no_write:
        print(body)
    else:
        print(f"wrote {update_section('machine-workloads', body)}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the THP settings are back by now (ThpGuard)
        raise SystemExit("machine_workloads: interrupted") from None
