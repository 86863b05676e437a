"""Process-simulation throughput, both engines side by side: page faults per second on fork-heavy workloads.

    python benchmarks/simulate.py [--quick] [--runs N] [--no-write]

Workloads come from the evaluator's seeded generators (foliosim.workloads): ``fork-child`` (a parent with an mTHP/THP-
backed heap forking short-lived children that write) and ``prefork`` (long-lived workers). The reference engine
(``foliosim.vm.Machine``) runs them through the evaluator's WorkloadRunner; the compiled engine
(``foliosim.fast.sim.FastMachine``) through FastWorkloadRunner, whose compiled step interpreter
(foliosim.fast.sim.kprog) runs whole stretches of accesses, forks, exits and madvise hints in one numba call. Both run
the same steps (khugepaged and NUMA scans change nothing without a design to score them, on both engines); the prefork
server keeps only its anonymous heap (its library file mapping is left out: its workers' MADV_COLD over the file mapping
needs the rmap trace on the fast engine, which this timing runs without). "oracle on": the reference checks every
process's view after every step (check_machine); the fast engine checks incrementally in its kernels (every access reads
what its MM last wrote, every store hits an AnonExclusive page). The timing (CPU time of the process: the machine is
shared) covers running the steps (not generating them), medians of several runs. Then cost against work size: fork-child
with 2..1024 children, and a synthetic first-touch + CoW workload from 1e3 to 1e7 faults fed to the fast engine as
access arrays (docs/perf-simulate*.png). Memory: the fast engine's array bytes per resident page. Recorded real programs
(examples/run-traces): ``foliosim run-trace``'s own simulation (foliosim.live.tracesim.simulate(), design kernel, oracle
off) on both engines, its faults/s (the simulator's time as TraceRun measures it, and the whole call: reading
the trace, the live-snapshot checks), after checking that both engines give the same figures. Writes the "simulate"
section of docs/performance.md (benchmarks/perfdoc.py); ``--traces-only`` measures only the recorded traces and replaces
their table in that section. Beside them, this machine's own first-touch and copy-on-write fault rates measured in
the same run (benchmarks/machine_faults.py), before and after, and each fast figure over the first-touch rate: issue
13's 0.6 M faults/s was that rate when it was filed, and the machine's speed varies between boots.

    python benchmarks/simulate.py --traces-only [--runs N] [--no-write]

``--targets`` times only the fast engine (oracle off) on the four fork-heavy workloads issue 13 sets 0.6 M faults/s
for, at full size (fork-child order-9 THP with 30 children, the prefork server with 8 workers, fork-child with 8 and
16 children), paused and back to back as above, and writes nothing: a quick A/B check.

    python benchmarks/simulate.py --targets [--runs N]"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_faults import Rate, fault_rates, short_runs
from perfdoc import Series, loglog_plot, update_section
from replay import DOCS, log, machine

from foliosim.evaluate.runner import WorkloadRunner
from foliosim.fast.sim.engine import FastMachine
from foliosim.fast.sim.steps import FastWorkloadRunner
from foliosim.kconfig import KernelConfig
from foliosim.live.tracesim import TraceRun, simulate
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.vm.memory import PAGE_SIZE
from foliosim.workloads.generators import build_workload
from foliosim.workloads.runtrace import RunTrace
from foliosim.workloads.steps import Step

CASES = [
    ("fork-child, order-4 mTHP heap", "fork-child",
     {"pages": 1024, "order": 4, "rounds": 60, "child_writes": 12, "parent_writes": 24}),
    ("fork-child, order-9 THP heap", "fork-child",
     {"pages": 2048, "order": 9, "rounds": 30, "child_writes": 12, "parent_writes": 24}),
    ("fork-child, order-4 heap, 256 children", "fork-child",
     {"pages": 1024, "order": 4, "rounds": 256, "child_writes": 12, "parent_writes": 24}),
    ("prefork server, order-4 heap (anon only)", "prefork",
     {"pages": 512, "order": 4, "children": 8, "requests": 600, "parent_write_rate": 0.15}),
]


def clock() -> float:
    """This process's CPU time: the machine is shared, and wall time would count other jobs' time slices (a run
    of a few milliseconds takes twice as long whenever another job shares its core)."""
    return time.process_time()


def anon_only(steps: list[Step]) -> list[Step]:
    """The steps without the library file and its mapping (MADV_COLD of a page-cache folio needs the fast engine's
    rmap trace, which run_fast() leaves off)."""
    out = []
    for s in steps:
        if s.verb == "file" or (s.verb == "mmap" and s.args[2] != "anon"):
            continue
        if s.verb in ("read", "write", "madvise") and s.args[0] == "lib":
            continue
        out.append(s)
    return out


def steps_of(workload: str, params: dict[str, Any]) -> list[Step]:
    steps = build_workload(workload, params, seed=1)
    return anon_only(steps) if workload == "prefork" else steps


def build_seconds(workload: str, params: dict[str, Any], runs: int) -> tuple[float, int]:
    """The median CPU time of building the workload's steps (``build_workload``, as `foliosim compare` builds a
    cell's: the prefork server with its library file), ``runs`` times :data:`FAST_GAP_S` apart, and how many steps
    that builds."""
    times = []
    built = 0
    for _ in range(runs):
        time.sleep(FAST_GAP_S)
        began = clock()
        built = len(build_workload(workload, params, seed=1))
        times.append(clock() - began)
    return statistics.median(times), built


def build_line(rows: list[dict[str, Any]], runs: int) -> str:
    """The sentence under the workload table: what building each workload's steps costs, which the table does not
    time (the steps are built once, before the runs)."""
    seen = [r for r in rows if not r["check"]]
    parts = [f"{r['label']} {r['built']:,} steps in {r['build'] * 1000:.1f} ms "
             f"(the fast engine's run, paused: {r['fast']['s'] * 1000:.1f} ms)" for r in seen]
    return ("Building the steps (`foliosim.workloads.build_workload`, seed 1, as `foliosim compare` builds a cell's; "
            f"not in the times above; CPU time, median of {runs} runs {FAST_GAP_S * 1000:.0f} ms apart): "
            + "; ".join(parts) + ".")


def run_reference(steps: list[Step], check: bool) -> dict[str, float]:
    m = Machine(KernelConfig(), MachineOptions(keep_events=False, check=check))
    runner = WorkloadRunner(m)
    began = clock()
    runner.run(steps)
    elapsed = clock() - began
    rmap = sum(n for k, n in m.counters.items() if k.startswith("rmap "))
    return {"s": elapsed, "faults": m.counters["fault"], "rmap": rmap, "forks": m.counters["fork"]}


def run_fast(steps: list[Step], check: bool) -> dict[str, float]:
    m = FastMachine(KernelConfig(), MachineOptions(), record=False, keep_decisions=False, reference=False,
                    fast_oracle=check)
    runner = FastWorkloadRunner(m)
    began = clock()
    runner.run(steps)
    elapsed = clock() - began
    c = m.counters
    return {"s": elapsed, "faults": c["fault"], "rmap": int(m.glob[19]), "forks": c["fork"]}


#: the fast engine's runs take milliseconds: this many times more of them, spaced apart, so that a burst of other
#: work on the shared machine does not make the median
FAST_SAMPLES = 3
FAST_GAP_S = 0.02


def median_run(engine: str, steps: list[Step], check: bool, runs: int) -> dict[str, float]:
    fn = run_reference if engine == "reference" else run_fast
    results = []
    for _ in range(runs if engine == "reference" else runs * FAST_SAMPLES):
        results.append(fn(steps, check))
        if engine != "reference":
            time.sleep(FAST_GAP_S)
    times = [r["s"] for r in results]
    out = dict(results[0])
    out.update(s=statistics.median(times), lo=min(times), hi=max(times))
    if engine != "reference":  # the same number of runs back to back: caches warm from the run before
        out["hot"] = statistics.median([fn(steps, check)["s"] for _ in range(runs * FAST_SAMPLES)])
    return out


def same_size(fast: dict[str, float], runs: int) -> dict[str, float]:
    """This machine's own first-touch faults/s for runs of as many faults as ``fast`` (a :func:`median_run` of the
    fast engine) took, spaced as its paused runs and back to back (benchmarks/machine_faults.py short_runs()), and
    the fast engine's faults/s over each: a run of a few milliseconds is slower after a pause in the kernel too."""
    n = int(fast["faults"])
    paused = short_runs(n, runs * FAST_SAMPLES, FAST_GAP_S).median
    hot = short_runs(n, runs * FAST_SAMPLES, 0).median
    return {"paused": paused, "hot": hot, "x_paused": n / fast["s"] / paused, "x_hot": n / fast["hot"] / hot}


def same_text(same: dict[str, float]) -> str:
    """:func:`same_size`'s machine rates and ratios as two table cells."""
    return (f"{fmt(same['paused'])} / {fmt(same['hot'])} | {same['x_paused']:.2f} / {same['x_hot']:.2f}")


# -- a synthetic first-touch + copy-on-write workload of any size ----------------------------------------------
def synthetic_fast(pages: int, children: int, writes: int, check: bool) -> dict[str, float]:
    """A parent writes its whole ``pages``-page order-4 heap, then ``children`` children each write ``writes``
    random pages (copy-on-write) and exit; accesses go to the kernels as arrays."""
    rng = np.random.default_rng(1)
    m = FastMachine(KernelConfig(), MachineOptions(thp=frozenset({4})), record=False, keep_decisions=False,
                    reference=False, fast_oracle=check)
    began = clock()
    m.spawn("P")
    base = m.mmap("P", pages * PAGE_SIZE) >> 12
    mm = m.tasks["P"].mm
    chunk = 1 << 16
    m._run_access(np.array([[mm.num, base + i, min(chunk, pages - i), 1, 7, 0] for i in range(0, pages, chunk)],
                           dtype=np.int64))
    peak = 0
    for c in range(children):
        name = f"C{c}"
        m.fork("P", name)
        child = m.tasks[name].mm
        ops = np.zeros((writes, 6), dtype=np.int64)
        ops[:, 0] = child.num
        ops[:, 1] = base + rng.integers(0, pages, writes)
        ops[:, 2] = 1
        ops[:, 3] = 1
        ops[:, 4] = 9
        m._run_access(ops)
        peak = max(peak, m.nbytes)
        m.exit(name)
    elapsed = clock() - began
    live_pages = int(sum(1 << int(m.fs[f, 1]) for f in m.live_folios()))
    return {"s": elapsed, "faults": m.counters["fault"], "bytes": m.nbytes, "peak": peak, "pages": live_pages}


def synthetic_reference(pages: int, children: int, writes: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    m = Machine(KernelConfig(), MachineOptions(thp=frozenset({4}), keep_events=False))
    began = clock()
    m.spawn("P")
    addr = m.mmap("P", pages * PAGE_SIZE)
    page = bytes([7]) * PAGE_SIZE
    for i in range(pages):
        m.write("P", addr + i * PAGE_SIZE, page)
    other = bytes([9]) * PAGE_SIZE
    for c in range(children):
        name = f"C{c}"
        m.fork("P", name)
        for vpn in rng.integers(0, pages, writes).tolist():
            m.write(name, addr + int(vpn) * PAGE_SIZE, other)
        m.exit(name)
    return {"s": clock() - began, "faults": m.counters["fault"]}


SYNTH = [(1 << 9, 2, 1 << 8), (1 << 12, 4, 1 << 11), (1 << 14, 4, 1 << 13), (1 << 16, 4, 1 << 15),
         (1 << 18, 4, 1 << 17), (1 << 20, 4, 1 << 19), (1 << 22, 3, 1 << 22)]
SYNTH_REF_MAX = 1 << 14
CHILDREN = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CHILDREN_REF_MAX = 256


def fmt(x: float) -> str:
    return f"{x:,.0f}"


# -- recorded real programs through run-trace's simulation -----------------------------------------------------
TRACES = Path(__file__).resolve().parents[1] / "examples" / "run-traces"
TRACE_NAMES = ("make", "redis-bgsave", "pool", "prefork-server", "chromium.census", "sh-pipeline", "fork-child")
#: TraceRun.to_json() keys that differ between the engines by design
TRACE_TIMINGS = frozenset({"sim_seconds", "check_seconds", "wall_seconds", "load_seconds", "faults_per_second",
                           "engine", "oracle_engine"})
TRACES_HEADING = "### Recorded real programs: `foliosim run-trace` on both engines"


def trace_runs(name: str, runs: int) -> dict[str, Any]:
    """``simulate()`` of one recorded trace, ``runs`` times per engine (alternating), the figures compared."""
    trace = RunTrace.open(TRACES / f"{name}.trace.gz")
    done: dict[str, list[TraceRun]] = {"reference": [], "fast": []}
    for _ in range(runs):
        for engine in done:
            fell: list[str] = []
            run = simulate(trace, engine=engine, on_fallback=fell.append)
            if fell:
                raise SystemExit(f"{name}: the fast engine fell back to the reference: {fell[0]}")
            done[engine].append(run)
    figures = [{k: v for k, v in r.to_json().items() if k not in TRACE_TIMINGS} for r in (done["reference"][0],
                                                                                         done["fast"][0])]
    if figures[0] != figures[1]:
        diff = sorted(k for k in figures[0] if figures[0][k] != figures[1].get(k))
        raise SystemExit(f"{name}: the engines' figures differ in {', '.join(diff)}")
    out: dict[str, Any] = {"name": name, "steps": done["fast"][0].steps, "faults": done["fast"][0].faults_taken,
                           "snapshots": done["fast"][0].check.snapshots if done["fast"][0].check else 0,
                           "lived": lived_seconds(trace)}
    for engine, results in done.items():
        sims = [r.sim_seconds for r in results]
        walls = [r.wall_seconds for r in results]
        out[engine] = {"sim": statistics.median(sims), "sim_lo": min(sims), "sim_hi": max(sims),
                       "wall": statistics.median(walls), "check": statistics.median(r.check_seconds for r in results)}
    return out


def trace_table(runs: int, quick: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """The recorded traces' lines of the section (heading, what was measured, the table)."""
    simulate(RunTrace.open(TRACES / "fork-child.trace.gz"), engine="fast")  # load the compiled kernels first
    before = fault_rates()
    rows = []
    for name in TRACE_NAMES[:3] if quick else TRACE_NAMES:
        row = trace_runs(name, runs)
        ref, fast = row["reference"], row["fast"]
        log(f"{name}: {row['faults']:,} faults, sim reference {ref['sim']:.2f} s fast {fast['sim']:.2f} s, "
            f"wall reference {ref['wall']:.2f} s fast {fast['wall']:.2f} s")
        rows.append(row)
    after = fault_rates()
    own = before["first touch"].median
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        TRACES_HEADING,
        "",
        "`foliosim.live.tracesim.simulate()` (what `foliosim run-trace` runs: design kernel, oracle off) on each "
        "recorded trace of examples/run-traces, `engine=\"reference\"` and `engine=\"fast\"` alternating, "
        f"medians of {runs} runs each (range of the simulator's time in brackets); both engines' figures (faults "
        "by cause, CoW decisions by rule and outcome, folios by kind and order, rejected steps, live agreement) "
        "are checked equal first. Faults: the recorded faults the simulator took. Simulator: the time TraceRun "
        "counts as simulating (running the steps; not converting the trace lines, not the snapshot checks). "
        "Whole call: `simulate()` from the file, reading and converting the trace (once; its steps kept) and "
        f"the live-snapshot checks included. Load average at the end: {load}. {machine_line(before, after)} "
        "Fast / machine: the fast engine's faults/s (simulator) over this machine's first-touch faults/s before.",
        "",
        "| trace | steps | faults | snapshots | reference faults/s (simulator) | fast faults/s (simulator) | "
        "fast / reference | fast / machine | reference whole call | fast whole call | fast / reference |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ref, fast, n = r["reference"], r["fast"], r["faults"]
        lines.append(f"| {r['name']} | {fmt(r['steps'])} | {fmt(n)} | {r['snapshots']} | {fmt(n / ref['sim'])} "
                     f"[{fmt(n / ref['sim_hi'])}..{fmt(n / ref['sim_lo'])}] | {fmt(n / fast['sim'])} "
                     f"[{fmt(n / fast['sim_hi'])}..{fmt(n / fast['sim_lo'])}] | {ref['sim'] / fast['sim']:.1f}x | "
                     f"{n / fast['sim'] / own:.2f} | "
                     f"{ref['wall']:.2f} s | {fast['wall']:.2f} s | {ref['wall'] / fast['wall']:.1f}x |")
    return [*lines, "", *lived_table(rows)], rows


def lived_seconds(trace: RunTrace) -> float | None:
    """The program's own untraced wall time that ``foliosim trace --measure-slowdown`` wrote into the trace's header
    (``recorder.untraced_wall_s``), or None when the recording did not measure it."""
    lived = trace.header.recorder.get("untraced_wall_s")
    if isinstance(lived, bool) or not isinstance(lived, (int, float)) or not lived > 0:
        return None
    return float(lived)


def lived_table(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 13's goal put literally: the simulated time against the time the program itself took on this machine
    (its untraced wall time, which ``foliosim trace --measure-slowdown`` measured in one run beside the recording
    and wrote into the trace's header; none in the recordings made without that flag, as benchmarks/census.py's)."""
    lines = [
        "Against the program itself: the program's own wall time on this machine, untraced (one run that "
        "`foliosim trace --measure-slowdown` measured beside the recording, from the trace's header: the whole "
        "program, its computing included, not only its faults; \"not measured\" for recordings made without it), "
        "and how many times shorter the fast engine's simulation of its memory history was (simulator time; whole "
        "call: reading and converting the trace and the live-snapshot checks included).",
        "",
        "| trace | program's own run, untraced | fast simulator | program / fast simulator | fast whole call | "
        "program / fast whole call |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        fast, lived = r["fast"], r["lived"]
        if lived is None:
            lines.append(f"| {r['name']} | not measured | {fast['sim'] * 1e3:.1f} ms | - | {fast['wall']:.2f} s | - |")
            continue
        lines.append(f"| {r['name']} | {lived * 1e3:,.1f} ms | {fast['sim'] * 1e3:.1f} ms | "
                     f"{lived / fast['sim']:.1f}x | {fast['wall']:.2f} s | {lived / fast['wall']:.2f}x |")
    return lines


def splice_traces(section: str, traces: list[str]) -> str:
    """``section`` (the simulate section's body) with its recorded-traces block replaced by ``traces``: from its
    heading (or the paragraph that stood there before) to the next ``###`` heading."""
    lines = section.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(TRACES_HEADING)
                  or line.startswith("Recorded real-program traces are not measured here")), None)
    if start is None:
        raise SystemExit("docs/performance.md: the simulate section has no recorded-traces block to replace")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("### ")), len(lines))
    return "\n".join(lines[:start] + traces + [""] + lines[end:])


def current_section() -> str:
    text = (DOCS / "performance.md").read_text()
    start, end = "<!-- simulate:start -->", "<!-- simulate:end -->"
    if start not in text or end not in text:
        raise SystemExit("docs/performance.md has no simulate section: run without --traces-only first")
    return text.split(start, 1)[1].split(end, 1)[0].strip()


#: the fork-heavy workloads at their full size whose 0.6 M faults/s issue 13 asks for (--targets): label, workload,
#: parameters; fork-child with 8 and 16 children as in the cost-against-children table
TARGETS = [
    (CASES[1][0] + ", 30 children", CASES[1][1], CASES[1][2]),
    (CASES[3][0] + ", 8 workers", CASES[3][1], CASES[3][2]),
    ("fork-child, order-4 heap, 8 children", "fork-child", dict(CASES[0][2], rounds=8)),
    ("fork-child, order-4 heap, 16 children", "fork-child", dict(CASES[0][2], rounds=16)),
]


def machine_line(before: dict[str, Rate], after: dict[str, Rate]) -> str:
    """The machine's own fault rates (benchmarks/machine_faults.py) measured before and after, as one sentence."""
    kinds = [f"{kind} {fmt(before[kind].median)} / {fmt(after[kind].median)}" for kind in before]
    runs = min(rate.runs for rate in (*before.values(), *after.values()))
    return ("This machine's own page faults in the same run (benchmarks/machine_faults.py: a C-level loop writing "
            f"a byte per 4 KiB page, one core, medians of {runs} runs), before / after the measurements, faults/s: "
            + "; ".join(kinds) + ".")


def targets(runs: int) -> None:
    """Only the fast engine (oracle off) on :data:`TARGETS`, at full size whatever ``--quick`` says: faults/s of
    the paused runs (median, range) and back to back, as the main table measures them, beside this machine's own
    first-touch fault rate measured in the same run; nothing is written."""
    run_fast(steps_of("fork-child", dict(CASES[0][2], rounds=2)), False)  # compile (or load) the kernels first
    run_fast(steps_of("prefork", dict(CASES[3][2], requests=20)), False)
    before = fault_rates()
    own = before["first touch"].median
    for label, workload, params in TARGETS:
        fast = median_run("fast", steps_of(workload, params), False, runs)
        same = same_size(fast, runs)
        n = fast["faults"]
        print(f"{label}: {fmt(n)} faults, fast paused {fmt(n / fast['s'])} faults/s "
              f"[{fmt(n / fast['hi'])}..{fmt(n / fast['lo'])}], back to back {fmt(n / fast['hot'])}; "
              f"{n / fast['s'] / own:.2f} / {n / fast['hot'] / own:.2f} x this machine's first-touch faults (long "
              f"runs); the machine's first touch in runs of {fmt(n)} faults, paused / back to back: "
              f"{fmt(same['paused'])} / {fmt(same['hot'])} faults/s, fast over it {same['x_paused']:.2f} / "
              f"{same['x_hot']:.2f}")
    print(machine_line(before, fault_rates()))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, 3 runs")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--traces-only", action="store_true",
                        help="measure only the recorded real programs and replace their table in the section")
    parser.add_argument("--targets", action="store_true",
                        help="only the fast engine on issue 13's fork-heavy workloads at full size; writes nothing")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    if args.targets:
        targets(runs)
        return
    info = machine()
    log(f"machine: {info}")
    if args.traces_only:
        traces, _rows = trace_table(runs, args.quick)
        print("\n".join(traces))
        if not args.no_write:
            log(f"wrote {update_section('simulate', splice_traces(current_section(), traces))}")
        return
    run_fast(steps_of("fork-child", dict(CASES[0][2], rounds=2)), True)  # compile (or load) the kernels first
    run_fast(steps_of("prefork", dict(CASES[3][2], requests=20)), False)
    before = fault_rates()
    own = before["first touch"].median
    log(f"machine's own faults: {', '.join(f'{k} {r.text()}' for k, r in before.items())}")
    rows = []
    for label, workload, params in CASES:
        p = dict(params)
        if args.quick:
            for key in ("rounds", "requests"):
                if key in p:
                    p[key] = max(p[key] // 6, 3)
        steps = steps_of(workload, p)
        build, built = build_seconds(workload, p, runs * FAST_SAMPLES)
        for check in (False, True):
            ref = median_run("reference", steps, check, 1 if check else runs)
            fast = median_run("fast", steps, check, runs)
            assert ref["faults"] == fast["faults"], (label, ref["faults"], fast["faults"])
            size = (f"{p['pages']} pages, " + (f"{p['rounds']} children" if "rounds" in p
                                                else f"{p['children']} workers, {p['requests']} requests"))
            row = {"label": f"{label} ({size})", "check": check, "steps": len(steps), "ref": ref, "fast": fast,
                   "same": same_size(fast, runs), "build": build, "built": built}
            log(f"{row['label']} oracle {'on' if check else 'off'}: reference {ref['faults'] / ref['s']:,.0f} "
                f"faults/s, fast {fast['faults'] / fast['s']:,.0f} faults/s")
            rows.append(row)
    scaling = []
    base = dict(CASES[0][2])
    for children in CHILDREN[:6] if args.quick else CHILDREN:
        steps = steps_of("fork-child", dict(base, rounds=children))
        fast = median_run("fast", steps, False, runs)
        ref = median_run("reference", steps, False, 1) if children <= CHILDREN_REF_MAX else None
        scaling.append({"children": children, "fast": fast, "ref": ref, "same": same_size(fast, runs)})
        log(f"children {children}: fast {fast['s']:.3f} s, reference {ref['s'] if ref else float('nan'):.3f} s")
    synth = []
    for pages, children, writes in SYNTH[:4] if args.quick else SYNTH:
        reps = 1 if pages > (1 << 20) else 3
        fast_off = min((synthetic_fast(pages, children, writes, False) for _ in range(reps)), key=lambda r: r["s"])
        fast_on = min((synthetic_fast(pages, children, writes, True) for _ in range(reps)), key=lambda r: r["s"])
        ref = synthetic_reference(pages, children, writes) if pages <= SYNTH_REF_MAX else None
        synth.append({"pages": pages, "children": children, "writes": writes, "off": fast_off, "on": fast_on,
                      "ref": ref})
        log(f"synthetic {pages} pages: {fast_off['faults']:,} faults, fast {fast_off['s']:.2f} s "
            f"({fast_off['faults'] / fast_off['s']:,.0f}/s), oracle {fast_on['s']:.2f} s, "
            f"{fast_off['peak'] / max(fast_off['pages'], 1):.0f} B/page")
    after = fault_rates()
    lines = [
        "## Process simulation: faults per second, both engines (benchmarks/simulate.py)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (shared with other work; load average {info['load']} at "
        f"start), one core used (times are this process's CPU time), Python {info['python']}, numba "
        f"{info['numba']}, {info['date']}."
        f"{' Quick run.' if args.quick else ''}",
        "",
        "Reference: the pure-Python simulator (`foliosim.vm.Machine`) through the evaluator's WorkloadRunner. "
        "Fast: the compiled simulator (`foliosim.fast.sim.FastMachine`, numba kernels calling the shared rmap "
        "core) through FastWorkloadRunner, whose compiled step interpreter (`foliosim.fast.sim.kprog`) runs "
        "accesses, fork, exit, MADV_DONTNEED/COLD/PAGEOUT and the scans in one numba call, the rest step by "
        "step; the timing includes converting the steps to its program. Same steps for both (seed 1, "
        "MADV_COLD/PAGEOUT hints "
        "with their folio splits included; the prefork server without its library file mapping, whose MADV_COLD "
        "needs the fast engine's rmap trace, off here); both count the same faults. Oracle on: the "
        "reference runs check_machine() after every step; the fast engine its incremental in-kernel oracle. Medians of "
        f"{runs} runs (reference with the oracle: 1 run; the fast engine, whose runs take milliseconds: "
        f"{runs * FAST_SAMPLES} runs {FAST_GAP_S * 1000:.0f} ms apart), range in brackets.",
        "",
        "The fast engine's runs take a few milliseconds, so a pause before each costs it a fixed ~0.2-0.3 ms of "
        "cold caches (measured: a no-op compiled call takes 50 us instead of 3 us after a 20 ms sleep); the "
        "\"back to back\" column gives the median of as many runs without pauses.",
        "",
        machine_line(before, after) + " Fast / machine: the fast engine's faults/s (paused) over this machine's "
        "first-touch faults/s before: issue 13's 0.6 M faults/s was this machine's first-touch rate when it was "
        "filed (2026-11-30), and the machine's speed varies between boots. Machine, same faults: this machine's "
        "first-touch faults/s in runs of as many faults as the workload takes, spaced as the fast engine's paused "
        "runs / back to back (benchmarks/machine_faults.py short_runs(), measured right after the workload), and "
        "the fast engine's paused / back-to-back faults/s over them: a run of a few milliseconds after a pause is "
        "slower in the kernel too. First touch is the machine's faster kind of fault (its copy-on-write is slower), "
        "so these ratios understate the simulator against the machine living the workload.",
        "",
        "| workload | oracle | faults | reference faults/s | fast faults/s | fast faults/s, back to back "
        "| fast / reference | fast / machine | machine, same faults: paused / back to back "
        "| fast / machine, same faults |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ref, fast = r["ref"], r["fast"]
        lines.append(f"| {r['label']} | {'on' if r['check'] else 'off'} | {fmt(fast['faults'])} | "
                     f"{fmt(ref['faults'] / ref['s'])} | {fmt(fast['faults'] / fast['s'])} "
                     f"[{fmt(fast['faults'] / fast['hi'])}..{fmt(fast['faults'] / fast['lo'])}] | "
                     f"{fmt(fast['faults'] / fast['hot'])} | {ref['s'] / fast['s']:,.0f}x | "
                     f"{fast['faults'] / fast['s'] / own:.2f} | {same_text(r['same'])} |")
    lines += ["", build_line(rows, runs * FAST_SAMPLES)]
    traces, _rows = trace_table(runs, args.quick)
    lines += [
        "",
        *traces,
        "",
        "### Cost against work size",
        "",
        f"{CASES[0][0]} ({base['pages']} pages) with more and more children; reference up to "
        f"{CHILDREN_REF_MAX} children.",
        "",
        "| children | faults | reference time | fast time | fast faults/s | back to back "
        "| machine, same faults: paused / back to back | fast / machine, same faults |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in scaling:
        fast, ref = r["fast"], r["ref"]
        ref_s = f"{ref['s']:.2f} s" if ref else "-"
        lines.append(f"| {r['children']} | {fmt(fast['faults'])} | {ref_s} | "
                     f"{fast['s']:.3f} s | {fmt(fast['faults'] / fast['s'])} | {fmt(fast['faults'] / fast['hot'])} | "
                     f"{same_text(r['same'])} |")
    lines += [
        "",
        "Synthetic first-touch + copy-on-write (an order-4 heap written whole by the parent, then children each "
        "writing random pages and exiting), fed to the fast engine as access arrays (best of 3 runs below 2**20 "
        "pages); reference up to "
        f"{SYNTH_REF_MAX} pages. Bytes per page: the fast engine's array bytes at their peak over the resident "
        "pages (pages of live folios) at the end.",
        "",
        "| heap pages | children x writes | faults | reference time | fast time | fast faults/s | with oracle | "
        "bytes/page |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in synth:
        off, on, ref = r["off"], r["on"], r["ref"]
        ref_s = f"{ref['s']:.2f} s" if ref else "-"
        lines.append(f"| {r['pages']:,} | {r['children']} x {r['writes']:,} | {fmt(off['faults'])} | "
                     f"{ref_s} | {off['s']:.2f} s | {fmt(off['faults'] / off['s'])} | "
                     f"{fmt(on['faults'] / on['s'])} | {off['peak'] / max(off['pages'], 1):.0f} |")
    lines += ["", "![simulation time against faults](perf-simulate.png)",
              "![simulation time against children](perf-simulate-children.png)"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        loglog_plot([Series("fast", "o-", [r["off"]["faults"] for r in synth], [r["off"]["s"] for r in synth]),
                     Series("fast, oracle on", "s-", [r["on"]["faults"] for r in synth],
                            [r["on"]["s"] for r in synth]),
                     Series("reference", "^-", [r["ref"]["faults"] for r in synth if r["ref"]],
                            [r["ref"]["s"] for r in synth if r["ref"]])],
                    "page faults simulated (synthetic first touch + CoW)", "run time, seconds",
                    "Process simulation cost against work size", DOCS / "perf-simulate.png")
        loglog_plot([Series("fast", "o-", [r["children"] for r in scaling], [r["fast"]["s"] for r in scaling]),
                     Series("reference", "^-", [r["children"] for r in scaling if r["ref"]],
                            [r["ref"]["s"] for r in scaling if r["ref"]])],
                    "children forked (fork-child, order-4 heap of 1024 pages)", "run time, seconds",
                    "Process simulation cost against children", DOCS / "perf-simulate-children.png")
        body = text.splitlines()
        body = body[:1] + [("#" + line if line.startswith("## ") else line) for line in body[1:]]
        log(f"wrote {update_section('simulate', chr(10).join(body))}")


if __name__ == "__main__":
    main()
