"""`foliosim compare`'s driving runs on both engines: driving-run time and scoring time apart.

Run on demand: ``.venv/bin/python benchmarks/compare_engines.py [--compare]``. For each workload: the reference
driving run (Machine + Probe), the fast one (foliosim.fast.sim.score.drive_fast; a run it cannot drive is marked
"reference only" with the reason), and the scoring of every default design on the stream (score_stream, Python).
Medians of ``--repeat`` runs; writes the ``compare-engines`` section of docs/performance.md. ``--sweep`` instead
times the whole default ``foliosim compare`` on each engine (section ``compare-engines-sweep``).
"""

from __future__ import annotations

import argparse
import gzip
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perfdoc import update_section

from foliosim.evaluate.probe import Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.evaluate.stream import ScoringStream, score_stream
from foliosim.fast.sim.engine import Unsupported
from foliosim.fast.sim.score import drive_fast
from foliosim.fast.sim.tracerun import told_steps
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import DESIGNS, make_design
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads.generators import build_workload, default_params
from foliosim.workloads.runtrace import RunTrace, prepare
from foliosim.workloads.steps import Step

ROOT = Path(__file__).resolve().parents[1]


def reference(steps: list[Step], config: KernelConfig, oracle: str, strict: bool) -> ScoringStream:
    m = Machine(config, MachineOptions(keep_events=False, check=False))
    probe = Probe(m, make_design("kernel", config), oracle, record=True, census=True)
    WorkloadRunner(m, probe, strict=strict).run(steps)
    probe.finish()
    assert probe.stream is not None
    return probe.stream


def median(fn: object, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sweep", action="store_true", help="time the whole default foliosim compare per engine")
    args = ap.parse_args()
    if args.sweep:
        sweep()
        return
    config = KernelConfig()
    designs = [d for d in DESIGNS]
    cases: list[tuple[str, list[Step], str, bool]] = []
    for name, params in (("fork-child", {}), ("fork-child", {"pages": 4096, "rounds": 20, "child_writes": 64,
                                                              "parent_writes": 256}),
                         ("snapshot", {}), ("snapshot", {"pages": 8192, "snapshots": 4, "writes": 1024})):
        p = default_params(name)
        p.update(params)
        label = name + ("" if not params else " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")")
        cases.append((label, build_workload(name, p, 1), "reuse", True))
    for trace in ("make.census.trace.gz", "chromium.census.trace.gz"):
        text = gzip.decompress((ROOT / "examples" / "run-traces" / trace).read_bytes()).decode()
        conv = prepare(RunTrace(trace, text=text))
        cases.append((f"recorded {trace}", told_steps(conv), "end", False))  # as compare hands them over
    drive_fast(cases[0][1], config)  # compile (or load numba's cache) outside the timings
    rows = []
    for label, steps, oracle, strict in cases:
        ref_s, stream = median(lambda steps=steps, oracle=oracle, strict=strict: reference(steps, config, oracle,
                                                                                           strict), args.repeat)
        assert isinstance(stream, ScoringStream)
        try:
            fast_s, drive = median(lambda steps=steps, oracle=oracle: drive_fast(steps, config, oracle=oracle),
                                   args.repeat)
            same = drive.stream.digest() == stream.digest() and drive.stream.ops == stream.ops  # type: ignore[attr-defined]
            fast = f"{fast_s:.3f} s ({ref_s / fast_s:.0f}x){'' if same else ' STREAMS DIFFER'}"
        except Unsupported as exc:
            fast = f"reference only: {str(exc)[:70]}"
        score_s, _ = median(lambda stream=stream: score_stream(stream, designs), 1)
        rows.append(f"| {label} | {len(stream.ops):,} | {len(stream.questions):,} | {ref_s:.3f} s | {fast} | "
                    f"{score_s:.2f} s ({score_s / len(designs):.2f} s per design) |")
        print(rows[-1], flush=True)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}), one process, medians of {args.repeat} (scoring: one run).",
        "",
        "| workload | rmap ops | questions | reference driving run | fast driving run | scoring, "
        f"{len(designs)} designs (Python) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    lines += ["", "Scoring feeds every design the stream in Python (foliosim.evaluate.stream.score_stream) and "
              "dominates wherever the fast engine drives. A workload the fast engine cannot drive says "
              "\"reference only\" with the reason."]
    print(update_section("compare-engines", "\n".join(lines)))


def sweep() -> None:
    lines = [f"Whole default `foliosim compare` (README's command; {platform.node()}, 2 cores, all local processes, "
             f"fresh database each), measured {time.strftime('%Y-%m-%d')}:", ""]
    for engine in ("reference", "fast"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "foliosim", "compare", "--db", f"{tmp}/r.sqlite", "-q",
                                   "--engine", engine], capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t0
        said = [ln.strip() for ln in done.stderr.splitlines() if "driving run(s)" in ln]
        lines.append(f"- `--engine {engine}`: {wall:.1f} s wall" + (f" ({said[0]})" if said else ""))
        print(lines[-1], flush=True)
    lines += ["", "The counts in brackets are `compare`'s own line on stderr: driving runs on each engine (a run the "
              "fast engine cannot drive falls back to the reference, and stderr gives the reason). Both commands "
              "score the same streams in Python; what the fast engine saves is the driving runs. One run each: "
              f"compare the two lines only roughly (load average {Path('/proc/loadavg').read_text().split()[0]} at "
              "the end)."]
    print(update_section("compare-engines-sweep", "\n".join(lines)))


if __name__ == "__main__":
    main()
