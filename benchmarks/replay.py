"""Replay throughput of the reference model (run on demand: python benchmarks/replay.py).

Measures, on a prefix of the standard benchmark trace (foliosim.trace.generate),
the apply loop (RmapSystem.apply on parsed operations) apart from parsing, and the
full `replay` pipeline (JSON parse + apply + state record + JSON dump). Prints
medians of several runs and writes docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from foliosim.kconfig import KernelConfig
from foliosim.system import RmapSystem
from foliosim.trace.generate import STANDARD_SPEC, TraceSpec, generate_ops, measure_mix, setup_ops, to_op
from foliosim.trace.replay import replay

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=200_000, help="operations (prefix of the standard trace)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="write docs/performance.md")
    args = parser.parse_args()

    spec = TraceSpec(n_ops=args.ops, n_folios=STANDARD_SPEC.n_folios, order=STANDARD_SPEC.order,
                     n_mms=STANDARD_SPEC.n_mms, seed=STANDARD_SPEC.seed)
    t0 = time.perf_counter()
    gen = list(generate_ops(spec))
    gen_s = time.perf_counter() - t0
    setup = setup_ops(spec)
    ops = [to_op(g) for g in gen]
    lines = [json.dumps(op.to_json()) for op in setup + ops]
    mix = measure_mix(gen)

    rows = []
    for config in (KernelConfig(64, False), KernelConfig(64, True), KernelConfig(32, False)):
        apply_rates, e2e_rates = [], []
        for _ in range(args.runs):
            system = RmapSystem(config)
            for op in setup:
                system.apply(op)
            t0 = time.perf_counter()
            for op in ops:
                system.apply(op)
            apply_rates.append(len(ops) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            n = 0
            for rec in replay(lines, config):
                json.dumps(rec, separators=(",", ":"))
                n += 1
            e2e_rates.append(n / (time.perf_counter() - t0))
        rows.append((config.describe(), statistics.median(apply_rates), statistics.median(e2e_rates)))

    print(f"machine: {cpu_model()}, Python {platform.python_version()}")
    print(f"trace: first {len(ops):,} ops of the standard trace (seed {spec.seed}); generated in {gen_s:.1f} s")
    print("mix: " + ", ".join(f"{k} {v:.3f}" for k, v in mix.items()))
    print(f"{'configuration':40} {'apply ops/s':>14} {'replay ops/s':>14}   (medians of {args.runs})")
    for name, apply_rate, e2e in rows:
        print(f"{name:40} {apply_rate:14,.0f} {e2e:14,.0f}")

    if args.write:
        out = ROOT / "docs" / "performance.md"
        text = out.read_text() if out.exists() else "# Performance\n"
        marker_start, marker_end = "<!-- reference-replay:start -->", "<!-- reference-replay:end -->"
        table = [
            marker_start,
            "## Reference model replay (benchmarks/replay.py)",
            "",
            f"Machine: {cpu_model()}, 2 cores, Python {platform.python_version()}; one core used.",
            f"Trace: the first {len(ops):,} operations of the standard benchmark trace "
            f"(64 order-4 folios, 3 MMs, seed {spec.seed}); realised mix "
            + ", ".join(f"{k} {v:.3f}" for k, v in mix.items()) + ".",
            f"Medians of {args.runs} runs. *apply*: `RmapSystem.apply` on parsed operations (no parsing, "
            "no output). *replay*: the whole `replay` pipeline, JSON in and state record out.",
            "",
            "| configuration | apply (ops/s) | replay (ops/s) |",
            "| --- | ---: | ---: |",
            *[f"| {name} | {a:,.0f} | {e:,.0f} |" for name, a, e in rows],
            marker_end,
        ]
        block = "\n".join(table)
        if marker_start in text:
            before, rest = text.split(marker_start, 1)
            after = rest.split(marker_end, 1)[1]
            text = before + block + after
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
