"""The recorder's kernel-side dating and selection (no live kernel): the seccomp filter's prctl options, the
process events parsed from the binary ring buffer, and the present-page runs of a task (own process)."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

from foliosim.host.ptrace import (
    AUDIT_ARCH_X86_64,
    FILTER_DATA,
    PR_SET_MEMORY_MERGE,
    PR_SET_THP_DISABLE,
    PR_SET_VMA,
    PRCTL_OPTIONS,
    PROCESS_SYSCALLS,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_TRACE,
    SYSCALL_NUMBERS,
    PresentPages,
    seccomp_filter,
)
from foliosim.host.tracefs import RawFormat, TaskEvent, parse_raw
from foliosim.live.record import TRACED_SYSCALLS

TRACE = SECCOMP_RET_TRACE | FILTER_DATA


def run_cbpf(prog: list[tuple[int, int, int, int]], nr: int, arg0: int = 0) -> int:
    """Interpret the filter's classic-BPF instructions over a struct seccomp_data with ``arg0``."""
    data = struct.pack("<iIQQ", nr, AUDIT_ARCH_X86_64, 0, arg0) + bytes(40)
    acc, pc = 0, 0
    for _ in range(1000):
        code, jt, jf, k = prog[pc]
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x35:
            pc += 1 + (jt if acc >= k else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("no return")


def test_prctl_stops_only_at_the_memory_options() -> None:
    chosen = {SYSCALL_NUMBERS[n] for n in (*TRACED_SYSCALLS, *PROCESS_SYSCALLS)}
    assert SYSCALL_NUMBERS["prctl"] in chosen
    prog = seccomp_filter(chosen, PRCTL_OPTIONS)
    prctl = SYSCALL_NUMBERS["prctl"]
    for option in (PR_SET_THP_DISABLE, PR_SET_MEMORY_MERGE, PR_SET_VMA, (1 << 32) | PR_SET_THP_DISABLE):
        assert run_cbpf(prog, prctl, option) == TRACE, option
    for option in (0, 15, 16, 38, 40, 42, PR_SET_VMA + 1):  # PR_SET_NAME (15), PR_GET_NAME (16), NO_NEW_PRIVS ...
        assert run_cbpf(prog, prctl, option) == SECCOMP_RET_ALLOW, option
    for nr in range(470):  # every other call as without the prctl options
        if nr != prctl:
            assert run_cbpf(prog, nr) == (TRACE if nr in chosen else SECCOMP_RET_ALLOW), nr
    assert run_cbpf(seccomp_filter(chosen), prctl, 0) == TRACE, "without options prctl is a plain traced call"


def _event(delta: int, etype: int, pid: int, body: bytes) -> bytes:
    data = struct.pack("<HBBi", etype, 0, 0, pid) + body
    data += bytes(-len(data) % 4)
    return struct.pack("<I", (delta << 5) | (len(data) // 4)) + data


def test_parse_raw_returns_forks_teardowns_and_call_entries_when_asked() -> None:
    fmt = RawFormat(4096, 16, 8, {190: False}, task_ids={366: ("fork", 20), 696: ("exit_mmap", 8),
                                                         443: ("sys_enter", 8)})
    fault = struct.pack("<QQQ", 0x7F0000001000, 0x401000, 6)
    fork = struct.pack("<iiii", 0, 42, 0, 77)  # parent_comm loc, parent_pid, child_comm loc, child_pid (at 20)
    data = (_event(10, 190, 42, fault) + _event(5, 366, 42, fork)
            + _event(5, 696, 77, struct.pack("<QQ", 0xFFFF888012345678, 0))
            + _event(5, 443, 42, struct.pack("<q", 10) + bytes(48)))
    page = struct.pack("<QQ", 1_000_000, len(data)) + data + bytes(4096 - 16 - len(data))
    tasks: list[TaskEvent] = []
    faults, missed = parse_raw([(0, page)], fmt, tasks=tasks)
    assert missed == 0 and len(faults) == 1
    assert [(e.kind, e.pid, e.child, e.mm, e.nr, e.timestamp_us) for e in tasks] == [
        ("fork", 42, 77, 0, 0, 1000.015), ("exit_mmap", 77, 0, 0xFFFF888012345678, 0, 1000.02),
        ("sys_enter", 42, 0, 0, 10, 1000.025)]
    assert parse_raw([(0, page)], fmt)[0] == faults, "without a list the process events are skipped"


def test_present_pages_finds_the_written_pages_by_scan_and_by_reading() -> None:
    size = 64 * 4096
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for i in (0, 1, 2, 10, 63):
            m[i * 4096] = 1
        first = ctypes.addressof(ctypes.c_char.from_buffer(m)) >> 12
        want = [(first, first + 3), (first + 10, first + 11), (first + 63, first + 64)]
        scanner = PresentPages()
        assert scanner.runs(os.getpid(), [(first, first + 64)], anon_only=True) == want
        reader = PresentPages()
        reader._scan_ok = False  # as on a kernel without PAGEMAP_SCAN
        assert reader.runs(os.getpid(), [(first, first + 64)], anon_only=True) == want
        assert scanner.runs(os.getpid(), [(first + 3, first + 10)]) == []
    finally:
        m.close()
