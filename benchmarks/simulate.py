"""Process-simulation throughput: page faults and rmap operations per second on fork-heavy workloads.

    python benchmarks/simulate.py [--quick] [--runs N] [--no-write]

Workloads come from the evaluator's seeded generators (foliosim.workloads):
``fork-child`` (a parent with an mTHP/THP-backed heap forking many short-lived
children that write) and ``prefork`` (long-lived workers). Each is run on a
fresh ``foliosim.vm.Machine`` through the evaluator's WorkloadRunner, with and
without the isolation oracle after every step; the timing covers running the
steps (not generating them). Medians of several runs. Then the order-4
fork-child workload runs with more and more children, for a plot of time
against faults (docs/perf-simulate.png). Writes the "simulate" section of
docs/performance.md (benchmarks/perfdoc.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perfdoc import Series, loglog_plot, update_section
from replay import DOCS, log, machine

from foliosim.evaluate.runner import WorkloadRunner
from foliosim.kconfig import KernelConfig
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads.generators import build_workload

CASES = [
    ("fork-child, order-4 mTHP heap", "fork-child",
     {"pages": 1024, "order": 4, "rounds": 60, "child_writes": 12, "parent_writes": 24}),
    ("fork-child, order-9 THP heap", "fork-child",
     {"pages": 2048, "order": 9, "rounds": 30, "child_writes": 12, "parent_writes": 24}),
    ("prefork, order-4 heap", "prefork",
     {"pages": 512, "order": 4, "children": 8, "requests": 600, "parent_write_rate": 0.15}),
]


def once(workload: str, params: dict[str, Any], check: bool) -> dict[str, float]:
    steps = build_workload(workload, params, seed=1)
    m = Machine(KernelConfig(), MachineOptions(keep_events=False, check=check))
    runner = WorkloadRunner(m)
    began = time.perf_counter()
    runner.run(steps)
    elapsed = time.perf_counter() - began
    rmap = sum(n for k, n in m.counters.items() if k.startswith("rmap "))
    return {"s": elapsed, "steps": len(steps), "faults": m.counters["fault"], "rmap": rmap,
            "forks": m.counters["fork"]}


#: Cost against work size: the first case with this many children (the oracle only up to SCALE_ORACLE).
SCALE_ROUNDS = (8, 16, 32, 64, 128, 256)
SCALE_ORACLE = 64


def bench_scaling(runs: int, rounds_list: tuple[int, ...], oracle_max: int) -> list[dict[str, Any]]:
    """Median run time of the first case against its number of children, oracle off and on."""
    _, workload, params = CASES[0]
    rows = []
    for rounds in rounds_list:
        p = dict(params, rounds=rounds)
        for check in (False, True):
            if check and rounds > oracle_max:
                continue
            results = [once(workload, p, check) for _ in range(runs)]
            row = {"rounds": rounds, "check": check, "s": statistics.median(r["s"] for r in results),
                   "faults": results[0]["faults"], "rmap": results[0]["rmap"]}
            log(str(row))
            rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    series = []
    for check, style, label in ((False, "o-", "oracle off"), (True, "s-", "oracle after every step")):
        sel = [r for r in rows if r["check"] is check]
        series.append(Series(label, style, [r["faults"] for r in sel], [r["s"] for r in sel]))
    loglog_plot(series, "page faults simulated (fork-child, order-4 heap, 8.. children)",
                "run time, seconds (median)", "Process simulation cost against work size", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, 3 runs")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    info = machine()
    log(f"machine: {info}")
    rows = []
    for label, workload, params in CASES:
        p = dict(params)
        if args.quick:
            for key in ("rounds", "requests"):
                if key in p:
                    p[key] = max(p[key] // 6, 3)
        for check in (False, True):
            results = [once(workload, p, check) for _ in range(runs)]
            t = statistics.median(r["s"] for r in results)
            r0 = results[0]
            size = (f"{p['pages']} pages, " + (f"{p['rounds']} children" if "rounds" in p
                                                else f"{p['children']} workers, {p['requests']} requests"))
            row = {"label": f"{label} ({size})", "check": check, "s": t, "faults": r0["faults"], "rmap": r0["rmap"],
                   "steps": r0["steps"], "forks": r0["forks"], "fps": r0["faults"] / t, "rps": r0["rmap"] / t}
            log(str(row))
            rows.append(row)
    scaling = bench_scaling(runs, SCALE_ROUNDS[:4] if args.quick else SCALE_ROUNDS,
                            SCALE_ORACLE // 2 if args.quick else SCALE_ORACLE)
    lines = [
        "## Process simulation: faults per second (benchmarks/simulate.py)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (shared with other work; load average "
        f"{info['load']} at start), Python {info['python']}, {info['date']}.{' Quick run.' if args.quick else ''}",
        "",
        f"Pure-Python simulator (`foliosim.vm`, driving the reference rmap model), median of {runs} runs; "
        "workloads from the evaluator's seeded generators (seed 1), run through its WorkloadRunner. "
        "\"oracle\": the isolation oracle checks every process's view after every step.",
        "",
        "| workload | oracle | steps | forks | faults | rmap ops | time | faults/s | rmap ops/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {'on' if r['check'] else 'off'} | {r['steps']:,} | {r['forks']} | "
                     f"{r['faults']:,} | {r['rmap']:,} | {r['s']:.2f} s | {r['fps']:,.0f} | {r['rps']:,.0f} |")
    lines += [
        "",
        "### Cost against work size",
        "",
        f"{CASES[0][0]} ({CASES[0][2]['pages']} pages) with more and more children (seed 1), median of {runs} runs.",
        "",
        "| children | oracle | faults | rmap ops | time | faults/s |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in scaling:
        lines.append(f"| {r['rounds']} | {'on' if r['check'] else 'off'} | {r['faults']:,} | {r['rmap']:,} | "
                     f"{r['s']:.2f} s | {r['faults'] / r['s']:,.0f} |")
    lines += ["", "![simulation time against faults](perf-simulate.png)"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        plot(scaling, DOCS / "perf-simulate.png")
        body = text.splitlines()
        body = body[:1] + [("#" + line if line.startswith("## ") else line) for line in body[1:]]
        log(f"wrote {update_section('simulate', chr(10).join(body))}")


if __name__ == "__main__":
    main()
