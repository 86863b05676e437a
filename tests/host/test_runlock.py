"""LiveLock: exclusive between processes, reentrant within one, names the holder, honours a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from foliosim.host.errors import HostError
from foliosim.host.runlock import LiveLock, held_here, holder_pid

TRY_LOCK = textwrap.dedent(
    """
    import sys
    from foliosim.host.errors import HostError
    from foliosim.host.runlock import LiveLock
    try:
        with LiveLock(sys.argv[1], timeout=float(sys.argv[2])):
            print("got", flush=True)
    except HostError as exc:
        print("busy", exc, flush=True)
    """
)


def _try_in_child(path: Path, timeout: float = 0.0) -> str:
    out = subprocess.run([sys.executable, "-c", TRY_LOCK, str(path), str(timeout)],
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def test_exclusive_between_processes_and_names_holder(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "live.lock"
    with LiveLock(str(path)) as lock:
        assert lock.held and held_here(str(path))
        assert holder_pid(str(path)) == os.getpid()
        answer = _try_in_child(path)
        assert answer.startswith("busy")
        assert f"another foliosim live run (pid {os.getpid()}) holds {path}" in answer
    assert not held_here(str(path))
    assert holder_pid(str(path)) is None  # emptied on release
    assert _try_in_child(path) == "got"


def test_reentrant_within_one_process(tmp_path: Path) -> None:
    path = str(tmp_path / "live.lock")
    outer = LiveLock(path)
    with outer:
        with LiveLock(path) as inner:
            assert inner.held
            assert _try_in_child(tmp_path / "live.lock").startswith("busy")
        # The inner exit must not drop the process's flock while the outer still holds it.
        assert held_here(path)
        assert _try_in_child(tmp_path / "live.lock").startswith("busy")
    assert not held_here(path)
    assert _try_in_child(tmp_path / "live.lock") == "got"


def test_release_without_acquire_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="does not hold"):
        LiveLock(str(tmp_path / "x.lock")).release()


def test_timeout_waits_for_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "live.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom foliosim.host.runlock import LiveLock\n"
         "with LiveLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(0.6)\n",
         str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(HostError, match=rf"\(pid {holder.pid}\)"):
            LiveLock(str(path)).acquire()
        t0 = time.monotonic()
        with LiveLock(str(path), timeout=10.0):
            waited = time.monotonic() - t0
            assert holder_pid(str(path)) == os.getpid()
        assert 0.1 < waited < 5.0
    finally:
        holder.wait(timeout=10)


def test_lock_is_released_when_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "live.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom foliosim.host.runlock import LiveLock\n"
         "LiveLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n", str(path)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    assert _try_in_child(path).startswith("busy")
    holder.kill()
    holder.wait(timeout=10)
    assert _try_in_child(path) == "got"


def test_forked_child_does_not_inherit_the_hold(tmp_path: Path) -> None:
    path = str(tmp_path / "live.lock")
    with LiveLock(path):
        rfd, wfd = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - reports through the pipe
            os.close(rfd)
            os.write(wfd, b"1" if held_here(path) else b"0")
            os._exit(0)
        os.close(wfd)
        assert os.read(rfd, 1) == b"0"
        os.close(rfd)
        os.waitpid(child, 0)
        # The child's exit must not have released the parent's lock.
        assert _try_in_child(tmp_path / "live.lock").startswith("busy")
