"""benchmarks/simulate.py's table of the recorded programs against the programs' own untraced runs: the time comes
from the trace's header, a recording without it says "not measured" (never a ratio), and the ratios are the
program's time over the simulation's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import simulate as bench

from foliosim.workloads.generators import build_workload
from foliosim.workloads.runtrace import RunTrace


def test_lived_seconds_reads_the_header_of_a_slowdown_recording() -> None:
    make = RunTrace.open(bench.TRACES / "make.trace.gz")
    assert bench.lived_seconds(make) == pytest.approx(make.header.recorder["untraced_wall_s"])
    assert bench.lived_seconds(make) is not None and 0.01 < bench.lived_seconds(make) < 60  # type: ignore[operator]


def test_lived_seconds_is_none_without_the_untraced_run() -> None:
    # fork-child was recorded without --measure-slowdown: no figure, not a zero
    assert bench.lived_seconds(RunTrace.open(bench.TRACES / "fork-child.trace.gz")) is None


def test_lived_table_ratios_and_not_measured() -> None:
    rows = [{"name": "make", "lived": 0.2, "fast": {"sim": 0.025, "wall": 0.4}},
            {"name": "chromium", "lived": None, "fast": {"sim": 0.1, "wall": 1.1}}]
    lines = bench.lived_table(rows)
    make = next(line for line in lines if line.startswith("| make |"))
    assert make == "| make | 200.0 ms | 25.0 ms | 8.0x | 0.40 s | 0.50x |"
    chromium = next(line for line in lines if line.startswith("| chromium |"))
    assert "not measured" in chromium and "x |" not in chromium


def test_build_line_names_each_workload_once_with_its_build_and_run_times() -> None:
    fast = {"s": 0.0021}
    rows = [{"label": "fork-child (2048 pages)", "check": check, "steps": 1200, "built": 1390, "build": 0.0073,
             "fast": fast}
            for check in (False, True)]
    line = bench.build_line(rows, 15)
    assert line.count("fork-child (2048 pages)") == 1
    assert "fork-child (2048 pages) 1,390 steps in 7.3 ms (the fast engine's run, paused: 2.1 ms)" in line
    assert "median of 15 runs 20 ms apart" in line and "not in the times above" in line


def test_build_seconds_times_building_the_steps() -> None:
    seconds, built = bench.build_seconds("prefork", {"pages": 64, "requests": 10}, 3)
    assert seconds > 0  # CPU time spent building
    assert built == len(build_workload("prefork", {"pages": 64, "requests": 10}, seed=1)) > len(
        bench.steps_of("prefork", {"pages": 64, "requests": 10}))  # the whole workload, its library file too
