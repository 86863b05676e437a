"""FaultRecorder: exact user page-fault events of chosen processes, no loss or duplicate, clean teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator

import pytest

from foliosim.host import tracefs
from foliosim.host.errors import HostError
from foliosim.host.tracefs import FaultEvent, FaultRecorder, Marker, tracefs_mounted_at

PAGE = 4096

# A child driven over stdin: "w A B" writes pages [A, B) of its private anonymous mapping,
# "r A B" reads them, "f A B" forks a grandchild that writes them and exits, "m N" maps a
# fresh N-page mapping and memsets it (timed), "q" quits. It answers each command with one line.
TOUCHER = textwrap.dedent(
    """
    import ctypes, ctypes.util, os, sys, time
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    def fresh(n):
        a = libc.mmap(None, n * 4096, 3, 0x22, -1, 0)
        libc.madvise(a, n * 4096, 15)  # MADV_NOHUGEPAGE: 4 KiB folios whatever the THP settings
        return a
    N = int(sys.argv[1])
    base = fresh(N)
    print(hex(base), flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "q":
            break
        if cmd == "m":
            n = int(args[0]); a = fresh(n)
            t0 = time.perf_counter(); ctypes.memset(a, 1, n * 4096); dt = time.perf_counter() - t0
            libc.munmap(a, n * 4096)
            print(dt, flush=True)
            continue
        lo, hi = int(args[0]), int(args[1])
        if cmd == "w":
            for i in range(lo, hi):
                ctypes.c_ubyte.from_address(base + i * 4096).value = 7
        elif cmd == "r":
            for i in range(lo, hi):
                ctypes.c_ubyte.from_address(base + i * 4096).value
        elif cmd == "f":
            pid = os.fork()
            if pid == 0:
                for i in range(lo, hi):
                    ctypes.c_ubyte.from_address(base + i * 4096).value = 9
                os._exit(0)
            os.waitpid(pid, 0)
            print(pid, flush=True)
            continue
        print("ok", flush=True)
    """
)


class Toucher:
    def __init__(self, nr_pages: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", TOUCHER, str(nr_pages)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.base = int(self._line(), 16)
        self.end = self.base + nr_pages * PAGE

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "toucher child died"
        return line.strip()

    def cmd(self, text: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._line()

    def in_range(self, events: list[FaultEvent]) -> list[FaultEvent]:
        return [e for e in events if self.base <= e.address < self.end]

    def page(self, i: int) -> int:
        return self.base + i * PAGE

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write("q\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def toucher(live_root: None) -> Iterator[Toucher]:
    t = Toucher(256)
    try:
        yield t
    finally:
        t.close()


def _instances_now() -> list[str]:
    """Instance names, seen through a temporary tracefs mount of the test's own."""
    mp = tempfile.mkdtemp(prefix="foliosim-test-tracefs-")
    try:
        tracefs._mount(mp)
        try:
            return sorted(os.listdir(f"{mp}/instances"))
        finally:
            tracefs._umount(mp)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(mp)


# --------------------------------------------------------------------------- unit (no kernel)


def test_parse_fault_marker_and_lost_lines() -> None:
    line = ("           <...>-4784    [001] d....   413.504503: page_fault_user: "
            "address=0x7f2995763000 ip=0x7f29958e3b03 error_code=0x7")
    ev = FaultRecorder._parse(line)
    assert ev == FaultEvent(4784, 1, 413504503.0, 0x7F2995763000, 0x7F29958E3B03, 7, True)
    assert isinstance(ev, FaultEvent) and ev.protection and ev.page == 0x7F2995763000
    read = FaultRecorder._parse("  my-prog-1-22 [000] .....  1.000001: page_fault_user: address=0x1008 ip=0x4 "
                                "error_code=0x4")
    assert isinstance(read, FaultEvent) and read.pid == 22 and not read.write and not read.protection
    mark = FaultRecorder._parse("  python3-9 [000] ...1.  2.5: tracing_mark_write: step 1 begins")
    assert mark == Marker(9, 0, 2500000.0, "step 1 begins")
    assert FaultRecorder._parse("CPU:1 [LOST 17 EVENTS]") == 17
    for text in (line, "  a b-c [x]-77 [003] d..2.  10.000009: page_fault_user: address=0x0 ip=0x10 error_code=0x15"):
        assert tracefs._parse_fault_fast(text) == FaultRecorder._parse(text) is not None
    assert tracefs._parse_fault_fast("  p-1 [000] ..... 2.5: tracing_mark_write: x") is None
    assert FaultRecorder._parse("garbage") is None


# --------------------------------------------------------------------------- live


@pytest.mark.live
def test_fresh_writes_reads_and_repeat_writes(toucher: Toucher) -> None:
    sys_tracing_before = tracefs_mounted_at("/sys/kernel/tracing")
    with FaultRecorder([toucher.pid]) as rec:
        assert tracefs_mounted_at(rec.mountpoint)
        assert os.path.basename(rec.instance) == f"foliosim-{os.getpid()}"
        rec.mark("write 0..16")
        toucher.cmd("w 0 16")
        rec.mark("read 16..24")
        toucher.cmd("r 16 24")
        rec.mark("write again 0..16")
        toucher.cmd("w 0 16")
        stream = rec.drain_all()
        marks = [i for i, e in enumerate(stream) if isinstance(e, Marker)]
        assert [stream[i].text for i in marks] == ["write 0..16", "read 16..24", "write again 0..16"]  # type: ignore[union-attr]
        writes = toucher.in_range([e for e in stream[marks[0]:marks[1]] if isinstance(e, FaultEvent)])
        reads = toucher.in_range([e for e in stream[marks[1]:marks[2]] if isinstance(e, FaultEvent)])
        again = toucher.in_range([e for e in stream[marks[2]:] if isinstance(e, FaultEvent)])
        assert [e.address for e in writes] == [toucher.page(i) for i in range(16)]
        assert all(e.write and not e.protection and e.pid == toucher.pid for e in writes)
        assert [e.address for e in reads] == [toucher.page(i) for i in range(16, 24)]
        assert all(not e.write and not e.protection for e in reads)
        assert again == []
        ts = [e.timestamp_us for e in stream]
        assert ts == sorted(ts)
        assert rec.drain() == []  # consumed: nothing twice
    assert not tracefs_mounted_at(rec.mountpoint) and not os.path.exists(rec.mountpoint)
    assert tracefs_mounted_at("/sys/kernel/tracing") == sys_tracing_before
    assert not [n for n in _instances_now() if n.startswith(f"foliosim-{os.getpid()}")]


@pytest.mark.live
def test_write_after_read_is_a_protection_write_fault(toucher: Toucher) -> None:
    with FaultRecorder([toucher.pid]) as rec:
        toucher.cmd("r 0 4")
        toucher.cmd("w 0 4")
        events = toucher.in_range(rec.drain())
    assert [(e.address, e.write, e.protection) for e in events] == (
        [(toucher.page(i), False, False) for i in range(4)] + [(toucher.page(i), True, True) for i in range(4)])


@pytest.mark.live
def test_nothing_lost_or_duplicated_across_many_drains(toucher: Toucher) -> None:
    seen: list[FaultEvent] = []
    with FaultRecorder([toucher.pid]) as rec:
        for lo in range(0, 256, 32):
            toucher.cmd(f"w {lo} {lo + 32}")
            seen += rec.drain()
            seen += rec.drain()
    got = [e.address for e in toucher.in_range(seen)]
    assert got == [toucher.page(i) for i in range(256)]


@pytest.mark.live
def test_only_chosen_pids_and_set_pids(toucher: Toucher) -> None:
    other = Toucher(8)
    try:
        with FaultRecorder() as rec:
            toucher.cmd("w 0 4")  # no pids yet: event off
            rec.set_pids([other.pid])
            toucher.cmd("w 4 8")
            other.cmd("w 0 2")
            rec.set_pids([toucher.pid])
            toucher.cmd("w 8 10")
            rec.set_pids([])
            toucher.cmd("w 10 12")
            events = rec.drain()
        assert [e.address for e in toucher.in_range(events)] == [toucher.page(8), toucher.page(9)]
        assert [e.address for e in other.in_range(events)] == [other.page(0), other.page(1)]
        assert {e.pid for e in events} <= {toucher.pid, other.pid}
    finally:
        other.close()


@pytest.mark.live
@pytest.mark.parametrize("follow", [False, True])
def test_follow_forks(toucher: Toucher, follow: bool) -> None:
    with FaultRecorder([toucher.pid], follow_forks=follow) as rec:
        grandchild = int(toucher.cmd("f 0 3"))
        events = toucher.in_range(rec.drain())
    from_grandchild = [e for e in events if e.pid == grandchild]
    if follow:
        # Fresh pages written in the forked child: 3 write faults there, none in the parent.
        assert [e.address for e in from_grandchild] == [toucher.page(i) for i in range(3)]
        assert all(e.write for e in from_grandchild)
    else:
        assert from_grandchild == []
    assert [e for e in events if e.pid == toucher.pid] == []


@pytest.mark.live
def test_buffer_overrun_is_reported_never_silent(toucher: Toucher) -> None:
    with FaultRecorder([toucher.pid], buffer_kb=8) as rec:
        toucher.cmd("m 2000")  # 2000 faults do not fit in 2 x 11 kB
        with pytest.raises(HostError, match="dropped"):
            rec.drain()
        assert rec.lost_events > 0
    with FaultRecorder([toucher.pid], buffer_kb=8, raise_on_loss=False) as rec:
        toucher.cmd("w 0 100")
        assert len(toucher.in_range(rec.drain())) == 100
        assert rec.lost_events == 0
        toucher.cmd("m 2000")
        kept = rec.drain()
        assert rec.lost_events > 0 and len(kept) + rec.lost_events >= 2000


@pytest.mark.live
def test_leftovers_of_a_killed_recorder_are_removed(live_root: None) -> None:
    code = "from foliosim.host.tracefs import FaultRecorder\nimport time\n" \
           "with FaultRecorder([1]) as r:\n    print(r.mountpoint, r.instance, flush=True)\n    time.sleep(60)\n"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    mountpoint, instance = child.stdout.readline().split()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert tracefs_mounted_at(mountpoint)
    with FaultRecorder() as rec:
        assert mountpoint in rec.removed_leftovers
        assert os.path.basename(instance) in rec.removed_leftovers
    assert not tracefs_mounted_at(mountpoint) and not os.path.exists(mountpoint)
    assert os.path.basename(instance) not in _instances_now()


@pytest.mark.live
def test_marker_timestamps_are_clock_monotonic(live_root: None) -> None:
    with FaultRecorder() as rec:
        t0 = time.monotonic() * 1e6
        rec.mark("now")
        t1 = time.monotonic() * 1e6
        (mark,) = rec.drain_all()
    assert isinstance(mark, Marker) and mark.pid == os.getpid() and mark.text == "now"
    assert t0 - 1 <= mark.timestamp_us <= t1 + 1


@pytest.mark.live
def test_use_outside_the_with_block_is_an_error(live_root: None) -> None:
    rec = FaultRecorder()
    with pytest.raises(HostError, match="not active"):
        rec.drain()
