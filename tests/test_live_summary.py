"""The live run's summary lines (report/live.py): what a user reads under the per-line rows."""

from __future__ import annotations

from foliosim.live.compare import Diff, LineResult
from foliosim.live.run import Capability, LiveRun
from foliosim.report.live import summary


def _run(diverged: bool, khugepaged: list[int]) -> LiveRun:
    lines = [LineResult(n, f"write P buf 4K {n}", "ok", "ok", compared=3, agreed=3) for n in (17, 18, 19)]
    if diverged:
        lines[2].diffs.append(Diff(19, "folio", "order", "P", 0x10000000, "f2", 0, 9))
        lines[2].agreed = 2
    return LiveRun(Capability("full", faults=True), lines, [], [], seconds=1.0, khugepaged=khugepaged)


def test_a_divergence_after_a_khugepaged_collapse_says_so() -> None:
    out = summary(_run(True, [18]))
    assert out[-1] == "DIVERGED on 1 line(s): 19"
    assert out[-2].startswith("khugepaged collapsed pages on this machine during line(s) 18:")
    assert "run again" in out[-2]


def test_no_note_without_a_collapse_or_without_a_divergence() -> None:
    for run in (_run(True, []), _run(False, [18])):
        assert not any("khugepaged" in row for row in summary(run))
    assert summary(_run(False, [18]))[-1] == "all agree"
    assert summary(_run(False, []))[0].startswith("3 lines, 9 of 9 fields agree, 0 not observed")
