"""`foliosim trace --census`: the live kernel's verdicts taken while a real program is recorded, stored in the header.

The program is examples/run-traces/stuck-bit.py (Python, os.fork, pipes that chain the exits): P writes eight
64 KiB folios and forks C1, C2, C3; P exits, then C1, then C2, then C3. P's and C1's MMs hold the two slots, so
once both are gone nothing clears the shared bit: before C3's exit C3 alone maps every folio and the kernel still
says "maybe shared" (include/linux/mm.h folio_maybe_mapped_shared(), v6.15 rules) — a false "shared", the
stuck-bit case. hugepages-64kB/enabled is set to always only for the recording, by ThpGuard under the live lock
(record()'s thp_changes), and checked restored afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from foliosim.live.verdicts import live_verdicts_from_trace
from tests.conftest import live_unavailable

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "examples" / "run-traces" / "stuck-bit.py"
THP = "/sys/kernel/mm/transparent_hugepage"
SIZE = "hugepages-64kB/enabled"
FOLIOS = 8


def thp_files() -> dict[str, str]:
    out = {}
    for name in ["enabled", *sorted(f"{d}/enabled" for d in os.listdir(THP) if d.startswith("hugepages-"))]:
        if os.path.exists(f"{THP}/{name}"):
            with open(f"{THP}/{name}") as fh:
                out[name] = fh.read()
    return out


def recorded(tmp_path: Path, census: str, **options: Any) -> tuple[dict[str, Any], Path]:
    """Record the stuck-bit program with 64 KiB folios; returns (header, path)."""
    import json

    from foliosim.live.record import record

    if not os.path.exists(f"{THP}/{SIZE}"):
        live_unavailable(f"no {THP}/{SIZE}")
    before = thp_files()
    out = tmp_path / f"{census}.trace"
    result = record([sys.executable, str(PROGRAM), str(FOLIOS)], str(out), thp_changes={SIZE: "always"},
                    census=census, census_budget=1.0, **options)
    assert thp_files() == before, "the THP settings are restored after the recording"
    assert result.command_status == 0 and not result.incomplete
    with out.open() as fh:
        header = json.loads(fh.readline())
    record_ = header.get("census")
    if isinstance(record_, dict) and "unavailable" in record_:
        live_unavailable(f"no census here: {record_['unavailable']}")
    return header, out


@pytest.mark.live
def test_events_census_reports_the_stuck_bit(live_root: None, tmp_path: Path) -> None:
    from foliosim.workloads.runtrace import RunTrace

    header, path = recorded(tmp_path, "events")
    v = live_verdicts_from_trace(path)  # checks every count and that the totals are the snapshots' sums
    assert v is not None and v.mode == "events"
    assert v.by_at == {"fork": 3, "exit": 4}, "after each of P's three forks, before each of the four exits"
    assert v.false_exclusive == 0, "the kernel never says exclusive for a folio two MMs map"
    snaps = header["census"]["snapshots"]
    assert all(s["frozen"] for s in snaps), "the traced processes are held still for a census at an event"
    forks = [s for s in snaps if s["at"] == "fork"]
    assert [s["processes"] for s in forks] == [2, 3, 4]
    assert all(s["many_mms"] >= FOLIOS for s in forks), "after each fork the region's folios are shared"
    exits = [s for s in snaps if s["at"] == "exit"]
    assert [s["processes"] for s in exits] == [4, 3, 2, 1], "P, C1, C2, C3 exit in this order"
    assert exits[2]["many_mms"] >= FOLIOS, "before C2's exit C2 and C3 map the region: rightly shared"
    last = exits[-1]
    assert last["false_shared"] >= FOLIOS and last["stuck_bit"] >= FOLIOS, last
    assert last["causes"].get("stuck-bit-both-slots-free", 0) >= FOLIOS
    assert last["by_order"]["4"]["false_shared"] >= FOLIOS
    assert v.false_shared >= FOLIOS and v.stuck_bit >= FOLIOS
    assert v.false_shared <= v.questions_exclusive
    # the record is a header field: the trace's reader takes the file as before, every event as it was
    run = RunTrace.open(path)
    kinds = {event["ev"] for _n, event in run.events()}
    assert kinds <= {"spawn", "fork", "exec", "exit", "syscall", "fault"}
    assert header["census"]["seconds"] > 0 and header["census"]["skipped"] == {}


@pytest.mark.live
def test_periodic_census_runs_while_the_program_runs(live_root: None, tmp_path: Path) -> None:
    header, path = recorded(tmp_path, "periodic", census_interval_ms=10.0)
    v = live_verdicts_from_trace(path)
    assert v is not None and v.mode == "periodic"
    assert v.by_at.get("periodic", 0) >= 1 and v.by_at["exit"] == 4 and v.by_at["fork"] == 3
    periodic = [s for s in header["census"]["snapshots"] if s["at"] == "periodic"]
    assert all(not s["frozen"] and s["pid"] is None for s in periodic)
    assert header["census"]["interval_ms"] == 10.0
    assert v.false_exclusive == 0
    times = [s["t"] for s in header["census"]["snapshots"]]
    assert times == sorted(times)


@pytest.mark.live
def test_census_none_adds_nothing(live_root: None, tmp_path: Path) -> None:
    header, _path = recorded(tmp_path, "none")
    assert "census" not in header
    assert live_verdicts_from_trace(_path) is None


@pytest.mark.live
def test_cli_prints_the_census(live_root: None, tmp_path: Path) -> None:
    if not os.path.exists(f"{THP}/{SIZE}"):
        live_unavailable(f"no {THP}/{SIZE}")
    out = tmp_path / "run.trace.gz"
    res = subprocess.run([sys.executable, "-m", "foliosim", "trace", "--thp", "64K=always", "--census", "events",
                          "--census-budget", "1", "-o", str(out), "--", sys.executable, str(PROGRAM), "4"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    if "no census of the kernel's verdicts" in res.stderr:
        live_unavailable(res.stderr.strip().splitlines()[-1])
    assert res.returncode == 0, res.stderr
    assert "census (events): 7 censuses" in res.stderr and 'false "exclusive" 0/' in res.stderr, res.stderr
    v = live_verdicts_from_trace(out)
    assert v is not None and v.false_shared >= 4


def test_cli_refuses_a_bad_census_mode(tmp_path: Path) -> None:
    for args in (["--census", "always"], ["--census-budget", "0"], ["--census-interval", "1"]):
        res = subprocess.run([sys.executable, "-m", "foliosim", "trace", *args, "-o", str(tmp_path / "x.trace"),
                              "--", "true"], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert res.returncode == 2, (args, res.stderr)
        assert args[0] in res.stderr
        assert not (tmp_path / "x.trace").exists()
