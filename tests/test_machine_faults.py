"""benchmarks/machine_faults.py: the machine's own fault rate that benchmarks/simulate.py sets the simulator beside.
What it times must be one page fault per 4 KiB page (no THP mapping a whole range at one fault), and both of its
measurements must report a rate."""

from __future__ import annotations

import math
import resource
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import machine_faults

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux's anonymous mappings and fork")


def test_first_touch_faults_once_per_page() -> None:
    pages = 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rate = machine_faults.first_touch(pages)
    taken = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert taken >= pages  # every page faulted: MADV_NOHUGEPAGE kept THP from mapping 512 pages per fault
    assert taken < 2 * pages + 256  # and the loop wrote nothing else of note
    assert math.isfinite(rate) and rate > 0


def test_copy_on_write_child_reports_a_rate() -> None:
    rate = machine_faults.copy_on_write(256)
    assert math.isfinite(rate) and rate > 0


def test_fault_rates_gives_both_kinds_with_ranges() -> None:
    rates = machine_faults.fault_rates(pages=128, runs=3)
    assert set(rates) == {"first touch", "copy-on-write"}
    for rate in rates.values():
        assert rate.runs == 3
        assert 0 < rate.lo <= rate.median <= rate.hi
        assert "faults/s" in rate.text()


def test_short_runs_time_each_run_of_the_given_faults() -> None:
    pages, runs = 200, 4
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rate = machine_faults.short_runs(pages, runs, 0.001)
    taken = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert rate.runs == runs
    assert 0 < rate.lo <= rate.median <= rate.hi
    assert taken >= pages * runs  # every run faulted every page of its own fresh mapping (the warm-up run too)


@pytest.mark.parametrize(("pages", "runs", "pause"), [(0, 3, 0.0), (10, 0, 0.0), (10, 3, -1.0)])
def test_short_runs_refuses_bad_sizes(pages: int, runs: int, pause: float) -> None:
    with pytest.raises(ValueError, match="pages and runs"):
        machine_faults.short_runs(pages, runs, pause)
