"""The BPF task iterator: every task's MM id, checked against the ids processes announce to the folio reader."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest

from foliosim.host.errors import HostUnavailable
from tests.conftest import live_unavailable

pytestmark = pytest.mark.live


def _bpf_fds() -> set[str]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("anon_inode:bpf"):
                out.add(name)
    return out


def test_task_iterator_names_every_mm(live_root: None) -> None:
    from foliosim.host.bpf import FolioReader, announce_mm
    from foliosim.host.tasks import TaskIterator

    before = _bpf_fds()
    try:
        reader = FolioReader()
    except HostUnavailable as exc:
        live_unavailable(str(exc))
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)
    worker.start()
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the child announces its MM id, then waits to be killed
        try:
            announce_mm()
            os.write(w, b"x")
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        assert os.read(r, 1) == b"x"
        announce_mm()
        try:
            tasks = TaskIterator(reader.btf)
        except HostUnavailable as exc:
            live_unavailable(str(exc))
        with tasks:
            records = tasks.read()
            ids = tasks.mm_ids()
        mine = [t for t in records if t.tgid == os.getpid()]
        assert {t.pid for t in mine} >= {os.getpid(), worker.native_id}  # threads are visited too
        assert {t.mm_id for t in mine} == {reader.mm_id_of(os.getpid())}  # and share their process's MM
        assert ids[os.getpid()] == reader.mm_id_of(os.getpid())
        assert ids[child] == reader.mm_id_of(child) != ids[os.getpid()]
        kthreadd = [t for t in records if t.tgid == 2]
        assert kthreadd and kthreadd[0].mm_id == 0 and 2 not in ids  # a kernel thread has no mm
        tasks.close()  # idempotent
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(r)
        os.close(w)
        stop.set()
        reader.close()
    assert _bpf_fds() == before
