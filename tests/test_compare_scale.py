"""`foliosim compare` at scale (issue 15 item 5): a workload mapping the whole address space runs in
seconds, and the local pool workers die with compare even when it is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


HUGE_WORKLOAD = "".join(json.dumps(step) + "\n" for step in [
    {"verb": "spawn", "task": "P"},
    {"verb": "mmap", "task": "P", "args": ["heap", 1 << 35, "anon", None, None, "rw", 0]},  # 128 TiB
    {"verb": "mmap", "task": "P", "args": ["shm", 1 << 28, "shared-anon", None, None, "rw", 0]},  # 1 TiB
    {"verb": "write", "task": "P", "args": ["heap", 0, 4]},
    {"verb": "write", "task": "P", "args": ["shm", 1000, 1]},
    {"verb": "fork", "task": "P", "args": ["C"]},
    {"verb": "write", "task": "C", "args": ["heap", 1, 1]},
    {"verb": "write", "task": "P", "args": ["heap", (1 << 35) - 1, 1]},
    {"verb": "madvise", "task": "C", "args": ["heap", 0, 1 << 35, "cold"]},
    {"verb": "mprotect", "task": "C", "args": ["heap", 0, 1 << 35, "r"]},
    {"verb": "munmap", "task": "P", "args": ["heap", 0, 1 << 34]},
    {"verb": "exit", "task": "C"},
])


@pytest.mark.parametrize("oracle", ["off", "every"])
def test_compare_runs_a_workload_that_maps_the_whole_address_space(tmp_path: Path, oracle: str) -> None:
    workload = tmp_path / "huge.jsonl"
    workload.write_text(HUGE_WORKLOAD)
    done = subprocess.run([sys.executable, "-m", "foliosim", "compare", "--workload-file", str(workload),
                           "--oracle", oracle, "-d", "kernel,exact", "-j", "1", "-q",
                           "--db", str(tmp_path / "results.sqlite")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ran 2 cells" in done.stderr
    assert "Traceback" not in done.stderr


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of every live process whose parent is ``pid``."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(entry)] = cmdline
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def test_sigkill_of_compare_leaves_no_worker_alive(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "foliosim", "compare", "-w", "fork-child", "--param", "pages=20000",
           "--oracle", "every", "-d", "kernel,exact", "--seeds", "2", "-j", "2", "-q",  # two driving runs
           "--db", str(tmp_path / "results.sqlite")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            workers = {p: c for p, c in _children(proc.pid).items() if "multiprocessing" in c}
            if sum("spawn" in c for c in workers.values()) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "compare finished before its workers could be seen: make the cells longer"
        assert sum("spawn" in c for c in workers.values()) >= 2, f"no pool workers appeared: {workers}"
        time.sleep(0.5)  # past the worker initializer
        workers = {p: c for p, c in _children(proc.pid).items() if "multiprocessing" in c}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        left = {p: c for p, c in workers.items() if _alive(p)}
        assert left == {}, f"still alive after compare was killed: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:  # only the processes this test's compare started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
