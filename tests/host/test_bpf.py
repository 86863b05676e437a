"""The BPF folio reader on the live kernel: struct page fields of our own anonymous memory, checked against
/proc/kpagecount and against what fork and exit must do to a PMD-mapped THP's MM slots."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import struct
import time
from collections.abc import Iterator

import pytest

from foliosim.host import bpf as B
from foliosim.host.bpf import FolioReader, KernelFolio, announce_mm
from foliosim.host.errors import HostError, HostUnavailable
from tests.conftest import live_unavailable

PAGE = mmap.PAGESIZE
PMD = 2 << 20
ENTIRELY_MAPPED = 0x800000  # mm/internal.h: the bit _nr_pages_mapped carries while a PMD maps the folio
KPF_HEAD, KPF_THP = 15, 22  # include/uapi/linux/kernel-page-flags.h
MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15


# --- helpers -----------------------------------------------------------------------------------------------------


def _address(m: mmap.mmap) -> int:
    c = ctypes.c_char.from_buffer(m)
    try:
        return ctypes.addressof(c)
    finally:
        del c


def _pfn(address: int) -> int:
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(address // PAGE * 8)
        (entry,) = struct.unpack("<Q", f.read(8))
    assert entry >> 63, f"{address:#x} not present"
    return entry & ((1 << 55) - 1)


def _kpage(path: str, pfn: int, n: int) -> list[int]:
    with open(path, "rb") as f:
        f.seek(pfn * 8)
        return list(struct.unpack(f"<{n}Q", f.read(8 * n)))


def _bpf_fds() -> list[str]:
    out = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("anon_inode:bpf"):
                out.append(name)
    return out


def _prog_exists(prog_id: int) -> bool:
    """BPF_PROG_GET_FD_BY_ID (13): is a program with this id still loaded anywhere on the machine?"""
    try:
        fd = B._bpf(13, B._attr("<I", prog_id), "BPF_PROG_GET_FD_BY_ID")
    except OSError as exc:
        assert exc.errno == errno.ENOENT
        return False
    os.close(fd)
    return True


@pytest.fixture(scope="module")
def reader() -> Iterator[FolioReader]:
    if os.geteuid() != 0:
        live_unavailable("not root")
    try:
        r = FolioReader()
    except HostUnavailable as exc:
        live_unavailable(str(exc))
    with r:
        yield r


@pytest.fixture
def thp() -> Iterator[tuple[mmap.mmap, int, int]]:
    """A written, PMD-mapped anonymous THP: (mapping, aligned offset in it, head PFN)."""
    m = mmap.mmap(-1, 2 * PMD, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        base = _address(m)
        offset = -base % PMD
        m.madvise(MADV_HUGEPAGE, offset, PMD)
        m[offset : offset + PMD] = b"\x01" * PMD
        pfn = _pfn(base + offset)
        flags = _kpage("/proc/kpageflags", pfn, 1)[0]
        if pfn % 512 or not flags >> KPF_THP & 1 or not flags >> KPF_HEAD & 1:
            live_unavailable("no PMD THP was allocated (THP disabled or memory fragmented)")
        yield m, offset, pfn
    finally:
        m.close()


# --- without the kernel -------------------------------------------------------------------------------------------


def test_assembler_encoding() -> None:
    a = B._Asm()
    a.mov(1, 10)  # r1 = r10
    a.jne_imm(7, 1000, "out")
    a.load_map_fd(1, 5)  # two slots
    a.store_imm(10, -8, -7)
    a.label("out")
    a.exit()
    code = a.assemble()
    assert len(code) == 6 * 8
    insns = [struct.unpack_from("<BBhi", code, 8 * i) for i in range(6)]
    assert insns[0] == (0xBF, 0xA1, 0, 0)  # BPF_ALU64 | BPF_MOV | BPF_X, src r10 in the high nibble
    assert insns[1] == (0x55, 0x07, 3, 1000)  # BPF_JMP | BPF_JNE | BPF_K, skips the 3 slots before "out"
    assert insns[2] == (0x18, 0x11, 0, 5) and insns[3] == (0, 0, 0, 0)  # BPF_LD | BPF_DW | BPF_IMM, PSEUDO_MAP_FD
    assert insns[4] == (0x7A, 0x0A, -8, -7)  # BPF_ST | BPF_MEM | BPF_DW
    assert insns[5] == (0x95, 0, 0, 0)


def test_kernel_folio_slots() -> None:
    words = (1 << 63) | (13 << 32) | (1 << 31) | 12
    f = KernelFolio(head_pfn=512, order=9, flags=0, is_anon=True, refcount=1, large_mapcount=1, entire_mapcount=1,
                    pincount=0, nr_pages_mapped=ENTIRELY_MAPPED, mm_ids=words, mm_id_mapcount=(0, 0),
                    page_mapcount=(-1,) * 512, anon_exclusive=(False,) * 512)
    assert (f.mm_id(0), f.mm_id(1), f.shared_bit, f.lock_bit, f.nr_pages) == (12, 13, True, True, 512)
    g = KernelFolio(head_pfn=512, order=9, flags=0, is_anon=True, refcount=1, large_mapcount=0, entire_mapcount=0,
                    pincount=0, nr_pages_mapped=ENTIRELY_MAPPED, mm_ids=(0x7FFFFFFF << 32) | 0x7FFFFFFF,
                    mm_id_mapcount=(0, -1), page_mapcount=(-1,) * 512, anon_exclusive=(False,) * 512)
    assert (g.mm_id(0), g.mm_id(1), g.shared_bit, g.lock_bit) == (0x7FFFFFFF, 0x7FFFFFFF, False, False)
    with pytest.raises(ValueError):
        f.mm_id(2)


# --- on the live kernel --------------------------------------------------------------------------------------------


@pytest.mark.live
def test_verifier_rejection_names_the_reason(live_root: None) -> None:
    a = B._Asm()
    a.exit()  # r0 never set
    with pytest.raises(HostUnavailable, match=r"BPF_PROG_LOAD.*R0 !read_ok"):
        B._prog_load(a.assemble(), b"foliosim_bad")



@pytest.mark.live
def test_calibrated_vmemmap_base(live_root: None, reader: FolioReader) -> None:
    assert reader.vmemmap_base % (1 << 30) == 0  # x86-64 KASLR places vmemmap on a PUD boundary
    assert reader.vmemmap_base >= 0xFFFF800000000000  # kernel half
    assert reader.offsets.page_size == reader.btf.struct_size("page")
    assert reader.max_read == 512 * reader.offsets.page_size


@pytest.mark.live
def test_small_pages(live_root: None, reader: FolioReader) -> None:
    n = 8
    m = mmap.mmap(-1, n * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m.madvise(MADV_NOHUGEPAGE)
        base = _address(m)
        for i in range(n):
            m[i * PAGE] = 7
        for i in range(n):
            pfn = _pfn(base + i * PAGE)
            f = reader.read_folio(pfn, 0)
            (count,) = _kpage("/proc/kpagecount", pfn, 1)
            assert f.head_pfn == pfn and f.order == 0
            assert f.is_anon
            assert f.page_mapcount == (0,)  # mapped once: raw _mapcount 0
            assert count == f.page_mapcount[0] + 1
            assert f.refcount >= count  # one reference per mapping (+ a transient LRU-batch one)
            assert f.anon_exclusive == (True,)
            assert (f.large_mapcount, f.entire_mapcount, f.mm_ids, f.mm_id_mapcount) == (None, None, None, None)
            assert f.mm_id(0) is None and f.shared_bit is None
            assert reader.read_pages(pfn, 1) == reader.read_pages(pfn, 2)[: reader.offsets.page_size]
    finally:
        m.close()


@pytest.mark.live
def test_thp_fork_and_exit(live_root: None, reader: FolioReader, thp: tuple[mmap.mmap, int, int]) -> None:
    _m, _offset, pfn = thp
    announce_mm()
    me = reader.mm_id_of(os.getpid())
    assert me is not None and me > 0

    def check_counts(f: KernelFolio) -> None:
        assert f.entire_mapcount is not None
        assert _kpage("/proc/kpagecount", pfn, 512) == [c + 1 + f.entire_mapcount + 1 for c in f.page_mapcount]

    f = reader.read_folio(pfn, 9)
    assert f.is_anon and f.order == 9
    assert f.page_mapcount == (-1,) * 512  # no PTE maps any page
    assert (f.entire_mapcount, f.large_mapcount, f.pincount) == (0, 0, 0)  # mapped once, by our PMD
    assert f.nr_pages_mapped == ENTIRELY_MAPPED
    assert f.mm_id(0) == me and f.mm_id_mapcount == (0, -1) and f.mm_id(1) == 0
    assert f.shared_bit is False and f.lock_bit is False
    assert f.anon_exclusive == (True,) + (False,) * 511  # a PMD mapping keeps PG_anon_exclusive on the head only
    assert f.refcount >= 1
    check_counts(f)

    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: announce, report, wait; never write to the THP
        code = 1
        try:
            announce_mm()
            os.write(ready_w, b"x")
            os.read(done_r, 1)
            code = 0
        finally:
            os._exit(code)
    try:
        os.close(ready_w)
        os.close(done_r)
        assert os.read(ready_r, 1) == b"x"
        child = reader.mm_id_of(pid)
        assert child is not None and child not in (0, me)
        g = reader.read_folio(pfn, 9)
        assert (g.entire_mapcount, g.large_mapcount) == (1, 1)  # two PMD mappings
        assert g.mm_id(0) == me and g.mm_id(1) == child and g.mm_id_mapcount == (0, 0)
        assert g.shared_bit is True and g.lock_bit is False
        assert g.refcount == f.refcount + 1
        assert not any(g.anon_exclusive)  # fork cleared it: the folio may be shared now
        check_counts(g)
    finally:
        os.write(done_w, b"x")
        _, status = os.waitpid(pid, 0)
        os.close(done_w)
        os.close(ready_r)
    assert os.waitstatus_to_exitcode(status) == 0
    h = reader.read_folio(pfn, 9)
    assert h.mm_id(0) == me and h.mm_id(1) == 0 and h.mm_id_mapcount == (0, -1)  # the child's slot is free
    assert h.shared_bit is False
    assert (h.entire_mapcount, h.large_mapcount) == (0, 0)
    check_counts(h)


@pytest.mark.live
def test_bad_reads_raise_host_error(live_root: None, reader: FolioReader, thp: tuple[mmap.mmap, int, int]) -> None:
    _m, _offset, pfn = thp
    with pytest.raises(HostError, match="outside RAM"):
        reader.read_folio(reader.max_pfn + 1, 0)
    with pytest.raises(HostError, match="outside RAM"):
        reader.read_pages(-1, 1)
    with pytest.raises(HostError, match="bpf_probe_read_kernel"):
        reader._read_kernel(0x10, 64)  # a user address: the helper refuses it, nothing crashes
    with pytest.raises(HostError, match="tail page"):
        reader.read_folio(pfn + 1, 0)
    with pytest.raises(HostError, match="order-9 folio, not an order-0"):
        reader.read_folio(pfn, 0)
    with pytest.raises(HostError, match="found order 9"):
        reader.read_folio(pfn, 4)
    assert reader.read_folio(pfn, 9).order == 9  # the reader still works afterwards


@pytest.mark.live
def test_mm_id_of_unknown_and_forked_reader(live_root: None, reader: FolioReader) -> None:
    pid = os.fork()
    if pid == 0:  # a child that never announces, and may not use its parent's reader
        code = 1
        try:
            try:
                reader.read_pages(0, 1)
            except HostError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reader.mm_id_of(pid) is None


@pytest.mark.live
def test_two_readers_do_not_mix(live_root: None, reader: FolioReader) -> None:
    """A second reader in another process copies into its own map only: ours keeps its last nonce."""
    m = mmap.mmap(-1, PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m[0] = 1
    pfn = _pfn(_address(m))
    before = reader.read_pages(pfn, 1)
    mapping = slice(reader.offsets.mapping, reader.offsets.mapping + 8)  # the anon_vma: fork does not change it
    nonce = reader._nonce
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with FolioReader() as other:
                ok = other.read_pages(pfn, 1)[mapping] == before[mapping] and other.tgid != reader.tgid
                for _ in range(20):
                    other.read_pages(pfn, 1)
            code = 0 if ok else 2
        except BaseException as exc:
            os.write(err_w, repr(exc).encode()[:4000])
        finally:
            os._exit(code)
    os.close(err_w)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(err_r, "rb") as f:
        error = f.read().decode()
    assert os.waitstatus_to_exitcode(status) == 0, error
    B._map_elem(B._MAP_LOOKUP_ELEM, reader._data_map, reader._key, reader._value)
    assert struct.unpack_from("<Q", reader._value)[0] == nonce  # the child's 20+ reads never reached our slot
    assert reader.read_pages(pfn, 1)[mapping] == before[mapping]
    m.close()


@pytest.mark.live
def test_close_leaves_nothing_loaded(live_root: None) -> None:
    before = set(_bpf_fds())
    r = FolioReader()
    opened = set(_bpf_fds()) - before
    assert len(opened) == 4  # two maps, the program, its raw tracepoint link (the calibration ones are gone)
    assert r.prog_ids and all(_prog_exists(p) for p in r.prog_ids)
    assert 0 < r.startup_seconds < 5
    r.close()
    r.close()  # idempotent
    assert set(_bpf_fds()) == before
    deadline = time.monotonic() + 2
    while any(_prog_exists(p) for p in r.prog_ids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(_prog_exists(p) for p in r.prog_ids)
    with pytest.raises(HostError, match="closed"):
        r.read_pages(0, 1)


@pytest.mark.live
def test_not_root_is_unavailable(live_root: None) -> None:
    pid = os.fork()
    if pid == 0:  # drop to nobody in a child, then try to start a reader
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                FolioReader()
            except HostUnavailable as exc:
                code = 0 if "not root" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
