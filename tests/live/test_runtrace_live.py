"""A real program recorded on this kernel (`foliosim trace --check-live`) and simulated (`foliosim run-trace`).

fork-child.c writes N pages of a 64K-mTHP area, forks, the child writes M of them and exits, the parent writes
K: the simulation must make exactly those decisions on that area, and every field of every page and folio the
snapshots show must agree with the live kernel but those where parent and child raced on a page they share.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foliosim.live.snapcheck import C_RACE
from foliosim.live.tracesim import simulate
from foliosim.vm.events import CowRule
from foliosim.workloads.runtrace import RunTrace
from tests.conftest import live_unavailable

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "examples/run-traces/fork-child.c"


@pytest.mark.live
def test_recorded_fork_child_simulates_to_its_decisions_and_agrees_with_the_live_folios(
        live_root: None, tmp_path: Path) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        live_unavailable("no C compiler (gcc) to build fork-child.c")
    binary = tmp_path / "fork-child"
    subprocess.run([gcc, "-O1", "-o", str(binary), str(SOURCE)], check=True)
    trace = tmp_path / "run.trace.gz"
    proc = subprocess.run([sys.executable, "-m", "foliosim", "trace", "--thp", "64K=always", "--check-live",
                           "-o", str(trace), "--", str(binary), "64", "16", "32"],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode == 6:
        live_unavailable(f"foliosim trace cannot record here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    run = simulate(RunTrace.open(trace))
    assert run.cow[(CowRule.LARGE_MAYBE_SHARED.value, "copy")] >= 16, run.cow
    assert run.cow[(CowRule.LARGE_EXCLUSIVE.value, "reuse")] >= 32, run.cow
    assert run.allocated[("anon", 4)] >= 4
    assert not run.rejected, run.rejected
    check = run.check
    assert check is not None and check.snapshots == 4
    # execve's argument pages are in the trace now (the exec's "populated"): what may still differ is where
    # parent and child wrote a page they share at the same moment (a race the trace cannot order)
    assert {cause for _field, cause in check.causes} <= {C_RACE}, check.causes
    for name, count in check.fields.items():
        raced = sum(n for (field, _cause), n in check.causes.items() if field == name)
        assert count.agreed == count.compared - raced, (name, [d.describe() for d in check.examples])
    assert check.fields["shared bit"].compared > 0 and check.fields["slot 1 MM"].compared > 0
    assert check.agreed / check.compared > 0.99
