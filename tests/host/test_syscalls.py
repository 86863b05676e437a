"""Tests of foliosim.host.syscalls on this machine's kernel (the root-only ones are marked live)."""

from __future__ import annotations

import errno
import faulthandler
import os
import resource
import signal
import struct
from collections.abc import Callable, Iterator

import pytest

from foliosim.host import syscalls as sc
from foliosim.host.errors import HostError, HostUnavailable
from tests.conftest import live_unavailable

P = sc.PAGE_SIZE
RW = sc.PROT_READ | sc.PROT_WRITE
PRIV = sc.MAP_PRIVATE | sc.MAP_ANONYMOUS


@pytest.fixture
def region() -> Iterator[Callable[[int], int]]:
    """Map private anonymous RW regions of n pages; unmapped after the test."""
    maps: list[tuple[int, int]] = []

    def make(pages: int) -> int:
        addr = sc.mmap(0, pages * P, RW, PRIV)
        maps.append((addr, pages * P))
        return addr

    yield make
    for addr, size in maps:
        sc.munmap(addr, size)


def _free(addr: int, length: int) -> bool:
    return all(m.end <= addr or m.start >= addr + length for m in sc.self_mappings())


def _in_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child; return its exit status (or -signal)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _pfn(addr: int) -> int:
    """The PFN mapped at addr from /proc/self/pagemap (bits 0-54; root only), 0 when not present."""
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        (entry,) = struct.unpack("<Q", os.pread(fd, 8, addr // P * 8))
    finally:
        os.close(fd)
    return entry & ((1 << 55) - 1) if entry >> 63 else 0


def _kpageflags(pfn: int) -> int:
    fd = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        return int(struct.unpack("<Q", os.pread(fd, 8, pfn * 8))[0])
    finally:
        os.close(fd)


def _pin(addr: int, length: int, per_page: bool = False) -> sc.IoUringPin:
    try:
        return sc.IoUringPin(addr, length, per_page=per_page)
    except HostUnavailable as exc:
        live_unavailable(str(exc))
        raise


# --- mappings and the process's own accesses ------------------------------------------------------------------


def test_fixed_noreplace_map_fill_load_round_trip() -> None:
    size = 4 * P
    addr = next((a for a in range(0x10000000, 0x20000000, 0x1000000) if _free(a, size)), None)
    if addr is None:
        pytest.skip("no free 16 MiB-aligned slot in 0x10000000..0x20000000")
    assert sc.mmap(addr, size, RW, PRIV | sc.MAP_FIXED_NOREPLACE) == addr
    try:
        assert any(m.start == addr and m.end == addr + size and m.perms == "rw-p" for m in sc.self_mappings())
        sc.fill(addr, 0x5A, size)
        sc.store(addr + P - 3, b"straddles a page boundary")
        data = sc.load(addr, size)
        assert data[:P - 3] == b"\x5a" * (P - 3)
        assert data[P - 3:P + 22] == b"straddles a page boundary"
        assert data[P + 22:] == b"\x5a" * (size - P - 22)
        with pytest.raises(sc.SyscallError) as info:
            sc.mmap(addr, P, RW, PRIV | sc.MAP_FIXED_NOREPLACE)
        assert info.value.errno == errno.EEXIST and "EEXIST" in str(info.value)
        assert f"{addr:#x}" in str(info.value) and "MAP_FIXED_NOREPLACE" in str(info.value)
    finally:
        sc.munmap(addr, size)
    assert _free(addr, size)


def test_mremap_moves_contents_and_old_range_is_gone(region: Callable[[int], int]) -> None:
    old = sc.mmap(0, 2 * P, RW, PRIV)
    sc.store(old, b"A" * P + b"B" * P)
    target = region(2)  # MREMAP_FIXED replaces what is there
    new = sc.mremap(old, 2 * P, 2 * P, sc.MREMAP_MAYMOVE | sc.MREMAP_FIXED, target)
    assert new == target
    assert sc.load(new, 2 * P) == b"A" * P + b"B" * P
    assert not sc.access_ok(old, P, write=False)
    grown = sc.mremap(new, 2 * P, 64 * P, sc.MREMAP_MAYMOVE)
    assert sc.load(grown, P) == b"A" * P
    sc.munmap(grown, 64 * P)


def test_mprotect_read_only_then_access_ok(region: Callable[[int], int]) -> None:
    addr = region(3)
    assert sc.access_ok(addr, 3 * P, write=True)
    sc.mprotect(addr + P, P, sc.PROT_READ)
    assert sc.access_ok(addr, 3 * P, write=False)
    assert not sc.access_ok(addr, 3 * P, write=True)
    assert sc.access_ok(addr, P, write=True) and sc.access_ok(addr + 2 * P, P, write=True)
    sc.mprotect(addr + P, P, sc.PROT_NONE)
    assert not sc.access_ok(addr + P, 1, write=False)
    assert not sc.access_ok(addr, 3 * P, write=False)
    assert sc.access_ok(addr + 2 * P, P, write=False)


def test_access_ok_gap_and_unmapped(region: Callable[[int], int]) -> None:
    addr = region(3)
    sc.munmap(addr + P, P)
    assert sc.access_ok(addr, P, write=True)
    assert not sc.access_ok(addr, 2 * P, write=False)
    assert not sc.access_ok(addr + P, 1, write=False)
    sc.munmap(addr, P)
    sc.munmap(addr + 2 * P, P)
    assert not sc.access_ok(addr, 3 * P, write=False)
    sc.mmap(addr, 3 * P, RW, PRIV | sc.MAP_FIXED)  # so the fixture's munmap succeeds


def test_madvise_dontneed_zeroes_private_page(region: Callable[[int], int]) -> None:
    addr = region(2)
    sc.fill(addr, 0xAB, 2 * P)
    sc.madvise(addr, P, sc.MADV_DONTNEED)
    assert sc.load(addr, P) == bytes(P)
    assert sc.load(addr + P, P) == b"\xab" * P


def test_memfd_shared_mapping_visible_in_forked_child() -> None:
    fd = sc.memfd_create("test-shared", sc.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 2 * P)
        addr = sc.mmap(0, 2 * P, RW, sc.MAP_SHARED, fd, 0)
        try:
            sc.store(addr, b"parent")

            def child() -> int:
                ok = sc.load(addr, 6) == b"parent"
                sc.store(addr + P, b"child wrote this")
                return 0 if ok else 3

            assert _in_child(child) == 0
            assert sc.load(addr + P, 16) == b"child wrote this"
            assert os.pread(fd, 16, P) == b"child wrote this"
        finally:
            sc.munmap(addr, 2 * P)
    finally:
        os.close(fd)


def test_fill_touches_pages_in_increasing_order() -> None:
    """A child fills 4 shared pages whose page 2 is PROT_NONE: it dies there, pages 0-1 written, page 3 not."""
    fd = sc.memfd_create("test-order", sc.MFD_CLOEXEC)
    os.ftruncate(fd, 4 * P)
    addr = sc.mmap(0, 4 * P, RW, sc.MAP_SHARED, fd, 0)
    try:
        sc.mprotect(addr + 2 * P, P, sc.PROT_NONE)
        assert not sc.access_ok(addr, 4 * P, write=True)

        def child() -> int:
            faulthandler.disable()
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            sc.fill(addr + 100, 0x77, 4 * P - 200)
            return 0

        assert _in_child(child) == -signal.SIGSEGV
        data = os.pread(fd, 4 * P, 0)
        assert data[:100] == bytes(100) and data[100:2 * P] == b"\x77" * (2 * P - 100)
        assert data[2 * P:] == bytes(2 * P)
    finally:
        sc.munmap(addr, 4 * P)
        os.close(fd)


# --- errors -----------------------------------------------------------------------------------------------------


def test_errors_name_call_arguments_and_errno(region: Callable[[int], int]) -> None:
    addr = region(1)
    with pytest.raises(sc.SyscallError) as info:
        sc.munmap(addr + 1, P)
    assert info.value.errno == errno.EINVAL and str(info.value).startswith(f"munmap(addr={addr + 1:#x}")
    sc.munmap(addr, P)
    with pytest.raises(HostError, match=r"mprotect\(addr=.*PROT_READ.*ENOMEM"):
        sc.mprotect(addr, P, sc.PROT_READ)
    with pytest.raises(HostError, match=r"madvise\(.*MADV_COLD.*ENOMEM"):
        sc.madvise(addr, P, sc.MADV_COLD)
    sc.mmap(addr, P, RW, PRIV | sc.MAP_FIXED)


def test_bad_address_is_efault(region: Callable[[int], int]) -> None:
    addr = region(1)
    sc.munmap(addr, P)
    with sc.SplicePipe() as pipe, pytest.raises(sc.SyscallError) as info:
        pipe.vmsplice(addr, P)
    assert info.value.errno == errno.EFAULT and "vmsplice" in str(info.value) and "EFAULT" in str(info.value)
    with pytest.raises(sc.SyscallError) as info2:
        _pin(addr, P).close()
    assert info2.value.errno == errno.EFAULT
    assert "IORING_REGISTER_BUFFERS" in str(info2.value) and f"{addr:#x}" in str(info2.value)
    sc.mmap(addr, P, RW, PRIV | sc.MAP_FIXED)


# --- io_uring pin -----------------------------------------------------------------------------------------------


def test_io_uring_read_back_goes_through_the_pin(region: Callable[[int], int]) -> None:
    addr = region(4)
    sc.fill(addr, 0x11, 4 * P)
    pin = _pin(addr + P, 2 * P)
    try:
        assert pin.read_back() == b"\x11" * 2 * P
        sc.store(addr + 2 * P - 2, b"xyzw")
        assert pin.read_back() == b"\x11" * (P - 2) + b"xyzw" + b"\x11" * (P - 2)
        pin.unregister()
        assert not pin.registered
        with pytest.raises(HostError, match="no buffer is registered"):
            pin.read_back()
    finally:
        pin.close()
        pin.close()
    assert pin.fd == -1


def test_io_uring_per_page_buffers_read_back_in_order(region: Callable[[int], int]) -> None:
    addr = region(4)
    for i in range(4):
        sc.fill(addr + i * P, 0x30 + i, P)
    pin = _pin(addr + P // 2, 3 * P)  # straddles four pages: four buffers, the first and last partial
    try:
        per = _pin(addr + P // 2, 3 * P, per_page=True)
        try:
            assert per.read_back() == pin.read_back()
            assert per.read_back() == b"\x30" * (P // 2) + b"\x31" * P + b"\x32" * P + b"\x33" * (P // 2)
        finally:
            per.close()
    finally:
        pin.close()


def _fork_write_pfns(addr: int) -> tuple[int, int, int]:
    """Fork a child that stays alive; parent writes the page; returns (pfn before, parent after, child's)."""
    before = _pfn(addr)
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(w, struct.pack("<Q", _pfn(addr)))
            os.read(go_r, 1)
            code = 0
        finally:
            os._exit(code)
    try:
        (child_pfn,) = struct.unpack("<Q", os.read(r, 8))
        sc.store(addr, b"parent wrote after fork")
        after = _pfn(addr)
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        for fd in (r, w, go_r, go_w):
            os.close(fd)
    return before, after, child_pfn


@pytest.mark.live
def test_io_uring_pin_makes_fork_copy_for_child(live_root: None, region: Callable[[int], int]) -> None:
    addr = region(1)
    sc.fill(addr, 0x22, P)
    with _pin(addr, P) as pin:
        before, after, child_pfn = _fork_write_pfns(addr)
        assert before != 0
        assert after == before  # the parent keeps its pinned page: no CoW on its write
        assert child_pfn not in (0, before)  # the child got a copy at fork (mm/memory.c copy_present_page())
        assert pin.read_back()[:23] == b"parent wrote after fork"


@pytest.mark.live
def test_io_uring_unregister_drops_the_pin_at_once(live_root: None, region: Callable[[int], int]) -> None:
    addr = region(1)
    sc.fill(addr, 0x22, P)
    pin = _pin(addr, P)
    pin.unregister()
    try:
        before, after, child_pfn = _fork_write_pfns(addr)
        assert child_pfn == before and after not in (0, before)  # fork shared the page again: no pin left
    finally:
        pin.close()


@pytest.mark.live
def test_without_pin_parent_write_after_fork_copies(live_root: None, region: Callable[[int], int]) -> None:
    addr = region(1)
    sc.fill(addr, 0x22, P)
    before, after, child_pfn = _fork_write_pfns(addr)
    assert child_pfn == before  # shared at fork
    assert after not in (0, before)  # the parent's write copied


# --- vmsplice ---------------------------------------------------------------------------------------------------


def test_splice_peek_is_not_destructive_and_keeps_old_page(region: Callable[[int], int]) -> None:
    addr = region(2)
    sc.fill(addr, 0x61, 2 * P)
    assert _in_child(lambda: 0) == 0  # fork write-protects the PTEs: the next write faults
    with sc.SplicePipe() as pipe:
        assert pipe.capacity >= 2 * P
        assert pipe.vmsplice(addr, 2 * P) == 2 * P
        assert pipe.peek() == b"a" * 2 * P
        assert pipe.peek() == b"a" * 2 * P
        assert pipe.pending() == 2 * P
        sc.fill(addr, 0x62, 2 * P)  # CoW: the page has an extra reference (the pipe's), so it is copied
        assert sc.load(addr, 1) == b"b"
        assert pipe.peek() == b"a" * 2 * P
    pipe.close()


def test_splice_without_write_protect_sees_write_in_place(region: Callable[[int], int]) -> None:
    """vmsplice holds a reference, not a snapshot: a writable PTE takes the write in the same page."""
    addr = region(1)
    sc.fill(addr, 0x61, P)
    with sc.SplicePipe() as pipe:
        assert pipe.vmsplice(addr, P) == P
        sc.store(addr, b"new")
        assert pipe.peek()[:4] == b"newa"


def test_splice_stops_when_the_pipe_is_full(region: Callable[[int], int]) -> None:
    with sc.SplicePipe(want=16 * P) as pipe:
        assert pipe.capacity == 16 * P
        addr = region(20)
        sc.fill(addr, 0x63, 20 * P)
        assert pipe.vmsplice(addr, 20 * P) == 16 * P
        assert pipe.queued == 16 * P and pipe.pending() == 16 * P
        with pytest.raises(sc.SyscallError) as info:
            pipe.vmsplice(addr, P)
        assert info.value.errno == errno.EAGAIN


# --- LRU batches ------------------------------------------------------------------------------------------------


@pytest.mark.live
def test_drain_lru_flushes_other_cpus_batches(live_root: None, region: Callable[[int], int]) -> None:
    """A page faulted on CPU 0 is off the LRU (in CPU 0's batch); drain_lru() from CPU 1 puts it on (KPF_LRU)."""
    cpus = sorted(os.sched_getaffinity(0))
    fault_cpu, drain_cpu = cpus[0], cpus[-1]
    old = os.sched_getaffinity(0)
    addr = region(20)
    try:
        for i in range(20):
            os.sched_setaffinity(0, {fault_cpu})
            sc.fill(addr + i * P, 0x42, P)
            os.sched_setaffinity(0, {drain_cpu})
            sc.drain_lru()
            assert _kpageflags(_pfn(addr + i * P)) & (1 << 5), f"page {i} not on the LRU after drain_lru()"
    finally:
        os.sched_setaffinity(0, old)
