"""A real program recorded on this kernel with `foliosim trace --check-live` and simulated: a shell pipeline.

Four processes (sh forks ls, sort and head, which exec while their siblings fork and exit) with 16K and 64K
mTHP: the simulation must agree with the live folios on at least 99 % of the compared fields of anonymous
memory, and every disagreement must have a cause (none "not explained"). The recording itself dates every
fork, exec and exit by the kernel's own events and lists execve's argument pages.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from foliosim.live.snapcheck import C_OTHER
from foliosim.live.tracesim import simulate
from foliosim.workloads.runtrace import RunTrace
from tests.conftest import live_unavailable

PIPELINE = "ls -l /usr/bin | sort | head"


@pytest.mark.live
def test_a_shell_pipeline_agrees_with_the_live_folios_on_anonymous_memory(live_root: None, tmp_path: Path) -> None:
    trace = tmp_path / "sh.trace.gz"
    proc = subprocess.run([sys.executable, "-m", "foliosim", "trace", "--thp", "16K=always,64K=always",
                           "--check-live", "-o", str(trace), "--", "sh", "-c", PIPELINE],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode == 6:
        live_unavailable(f"foliosim trace cannot record here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(trace.stat().st_mode) == 0o666 & ~umask, "the mode open() gives, not mkstemp's 0600"
    with gzip.open(trace, "rt") as f:
        header = json.loads(f.readline())
        events = [json.loads(line) for line in f]
    rec = header["recorder"]
    dated = [e for e in events if e["ev"] in ("fork", "exec") or (e["ev"] == "exit" and e["group"])]
    assert rec["kernel_dated"] == len(dated) >= 10, "3 forks, 4 execs, 4 exits, each at the kernel's own time"
    assert rec["calls_kernel_dated"] == rec["syscalls"] > 0
    assert all(e.get("populated") for e in events if e["ev"] == "exec"), "every exec lists its argument pages"
    run = simulate(RunTrace.open(trace))
    assert not run.rejected, run.rejected
    assert run.convert.processes == 4
    check = run.check
    assert check is not None and check.snapshots >= 9
    assert check.compared > 2000
    assert check.agreed / check.compared >= 0.99, [d.describe() for d in check.examples]
    unexplained = {key: n for key, n in check.causes.items() if key[1] == C_OTHER}
    assert not unexplained, [d.describe() for d in check.examples if d.cause == C_OTHER]
    assert check.fields["shared bit"].compared > 0 and check.fields["slot 1 MM"].compared > 0
