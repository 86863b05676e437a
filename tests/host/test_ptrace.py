"""The tracer's pure parts: the seccomp filter program, the binary ring-buffer parser, the --thp parser.

No kernel needed: the cBPF program is run by a tiny interpreter here, the ring-buffer pages are built by hand.
"""

from __future__ import annotations

import struct

import pytest

from foliosim.host.ptrace import (
    AUDIT_ARCH_X86_64,
    FILTER_DATA,
    PROCESS_SYSCALLS,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_TRACE,
    SYSCALL_NUMBERS,
    seccomp_filter,
)
from foliosim.host.tracefs import RawFormat, parse_raw
from foliosim.live.record import TRACED_SYSCALLS, RecordError, parse_thp

AUDIT_ARCH_I386 = 0x40000003


def run_cbpf(prog: list[tuple[int, int, int, int]], nr: int, arch: int) -> int:
    """Interpret the few classic-BPF instructions the filter uses over a struct seccomp_data."""
    data = struct.pack("<iI", nr, arch) + bytes(56)
    acc, pc = 0, 0
    for _ in range(1000):
        code, jt, jf, k = prog[pc]
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:  # BPF_JMP | BPF_JEQ | BPF_K
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x35:  # BPF_JMP | BPF_JGE | BPF_K
            pc += 1 + (jt if acc >= k else jf)
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("no return")


def test_the_filter_traces_exactly_the_chosen_calls() -> None:
    chosen = {SYSCALL_NUMBERS[n] for n in (*TRACED_SYSCALLS, *PROCESS_SYSCALLS)}
    prog = seccomp_filter(chosen)
    trace = SECCOMP_RET_TRACE | FILTER_DATA  # the data tells our traps from the program's own filter's
    for nr in range(0, 470):
        want = trace if nr in chosen else SECCOMP_RET_ALLOW
        assert run_cbpf(prog, nr, AUDIT_ARCH_X86_64) == want, nr
    assert run_cbpf(prog, 1000, AUDIT_ARCH_X86_64) == SECCOMP_RET_ALLOW, "the BPF reader's marker call runs"
    assert run_cbpf(prog, 0x40000009, AUDIT_ARCH_X86_64) == trace, "x32 calls are seen, not missed"
    assert run_cbpf(prog, 90, AUDIT_ARCH_I386) == trace, "i386 calls (int 0x80) are seen"
    assert {"mmap", "munmap", "mremap", "mprotect", "madvise", "brk", "shmat", "io_uring_register",
            "vmsplice"} <= set(TRACED_SYSCALLS)


def _event(delta: int, etype: int, pid: int, address: int, ip: int, code: int) -> bytes:
    body = struct.pack("<HBBiQQQ", etype, 0, 0, pid, address, ip, code)
    return struct.pack("<I", (delta << 5) | (len(body) // 4)) + body


def test_parse_raw_reads_events_time_extends_and_padding() -> None:
    fmt = RawFormat(4096, 16, 8, {190: False, 189: True})
    base = 1_000_000_000  # ns
    data = (_event(100, 190, 42, 0x7F0000001000, 0x401000, 0x6)
            + struct.pack("<II", (5 << 5) | 30, 1)  # time extend: + (1 << 27) + 5 ns
            + _event(7, 189, 43, 0x7F0000002000, 0xFFFFFFFF81000000, 0x2)
            + _event(3, 77, 44, 1, 2, 3)  # another event type: skipped, its delta still counts
            + struct.pack("<II", (9 << 5) | 29, 12) + bytes(8)  # padding of a discarded event
            + _event(1, 190, 42, 0x7F0000003008, 0x401004, 0x4))
    page = struct.pack("<QQ", base, len(data)) + data + bytes(4096 - 16 - len(data))
    events, missed = parse_raw([(1, page)], fmt, symbolize=lambda ip: f"sym{ip & 0xFF}")
    assert missed == 0 and len(events) == 3
    first, kernel, last = events
    assert (first.pid, first.cpu, first.address, first.ip, first.write, first.kernel) == \
        (42, 1, 0x7F0000001000, 0x401000, True, False)
    assert first.timestamp_us == (base + 100) / 1000
    assert kernel.kernel and kernel.symbol == "sym0" and kernel.ip == 0 and kernel.write
    assert kernel.timestamp_us == (base + 100 + (1 << 27) + 5 + 7) / 1000
    assert not last.write and last.timestamp_us == (base + 100 + (1 << 27) + 5 + 7 + 3 + 1) / 1000
    flagged = struct.pack("<QQ", base, len(data) | (1 << 31) | (1 << 30)) + data + struct.pack("<Q", 17)
    _events, missed = parse_raw([(0, flagged)], fmt)
    assert missed == 17, "RB_MISSED_STORED: the count follows the data"


def test_parse_thp() -> None:
    assert parse_thp("16K=always,64kB=never") == {"hugepages-16kB/enabled": "always",
                                                   "hugepages-64kB/enabled": "never"}
    assert parse_thp("2M=inherit") == {"hugepages-2048kB/enabled": "inherit"}
    assert parse_thp(None) == {}
    for bad, why in (("16K", "SIZE=VALUE"), ("12K=always", "folio size"), ("16K=sometimes", "value must be")):
        with pytest.raises(RecordError, match=why):
            parse_thp(bad)
