"""procfs readers: pagemap, kpagecount, kpageflags, folio extents, maps (unit tests and live checks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from foliosim.host import procfs
from foliosim.host.errors import HostError
from foliosim.host.procfs import (
    KPF_ANON,
    KPF_ANON_EXCLUSIVE,
    KPF_BUDDY,
    KPF_COMPOUND_HEAD,
    KPF_COMPOUND_TAIL,
    KPF_HUGE,
    KPF_MMAP,
    KPF_THP,
    PAGE_SIZE,
    Maps,
    PagemapEntry,
    PhysReader,
    folio_extent,
    kpf,
    read_kpagecount,
    read_kpageflags,
    read_pagemap,
)
from tests.host.livemem import MADV_HUGEPAGE, MADV_NOHUGEPAGE, AnonMap

# --------------------------------------------------------------------------- unit tests (no kernel)

MAPS_TEXT = """\
55d0c0a00000-55d0c0a21000 r--p 00000000 fd:01 1234                       /usr/bin/my prog
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
7f0000200000-7f0000201000 rw-s 00001000 00:05 77                         /dev/zero (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
"""


def test_maps_parse_fields_paths_with_spaces_and_find() -> None:
    maps = Maps.parse(MAPS_TEXT)
    assert len(maps) == 4
    first = maps[0]
    assert (first.start, first.end, first.perms, first.offset, first.dev, first.inode) == (
        0x55D0C0A00000, 0x55D0C0A21000, "r--p", 0, "fd:01", 1234)
    assert first.path == "/usr/bin/my prog"
    assert maps[1].path == "" and maps[1].nr_pages == 512 and maps[1].private
    assert maps[2].path == "/dev/zero (deleted)" and maps[2].offset == 0x1000 and not maps[2].private
    assert maps.find(0x7F0000000000) is maps[1]
    assert maps.find(0x7F00001FFFFF) is maps[1]
    assert maps.find(0x7F0000200000) is maps[2]
    assert maps.find(0x7F0000201000) is None
    assert maps.find(0x1000) is None
    assert [e.path for e in maps[2:]] == ["/dev/zero (deleted)", "[stack]"]


def test_maps_parse_rejects_garbage_with_line_number() -> None:
    with pytest.raises(HostError, match="line 2"):
        Maps.parse(MAPS_TEXT.splitlines()[0] + "\nnot a maps line\n", pid=42)


def test_pagemap_entry_decode_bits() -> None:
    raw = (1 << 63) | (1 << 56) | (1 << 55) | 0x1234
    e = PagemapEntry.decode(0x7000, raw)
    assert (e.vaddr, e.present, e.swapped, e.pfn, e.exclusive, e.file_or_shared_anon, e.soft_dirty) == (
        0x7000, True, False, 0x1234, True, False, True)
    swapped = PagemapEntry.decode(0, (1 << 62) | (1 << 61) | 0x55)
    assert swapped.swapped and not swapped.present and swapped.pfn == 0 and swapped.file_or_shared_anon
    assert PagemapEntry.decode(0, 0) == PagemapEntry(0, False, False, 0, False, False, False, 0)


def test_runs_coalesce_near_pfns_and_keep_far_ones_apart() -> None:
    assert procfs._runs([5, 3, 4, 4]) == [(3, 3)]
    assert procfs._runs([10, 10 + 64]) == [(10, 65)]
    assert procfs._runs([10, 10 + 64 + 1]) == [(10, 1), (75, 1)]
    assert procfs._runs([]) == []


def test_kpf_bit_numbers_match_the_kernel_headers() -> None:
    assert (KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_HUGE, KPF_THP, KPF_BUDDY) == (15, 16, 17, 22, 10)
    assert procfs.KPF_OWNER_2 == procfs.KPF_MAPPEDTODISK == KPF_ANON_EXCLUSIVE == 34
    assert procfs.KPF_PGTABLE == 26 and procfs.KPF_ARCH_3 == 42


# --------------------------------------------------------------------------- live


def _pfn(addr: int) -> int:
    (entry,) = read_pagemap(os.getpid(), addr, 1)
    assert entry.present
    return entry.pfn


@pytest.mark.live
def test_fresh_anon_page_pagemap_count_flags(live_root: None) -> None:
    with AnonMap(4) as m:
        m.madvise(MADV_NOHUGEPAGE)
        m.write(0)
        m.write(2)
        entries = read_pagemap(os.getpid(), m.addr, 4)
        assert [e.vaddr for e in entries] == [m.addr + i * PAGE_SIZE for i in range(4)]
        assert [e.present for e in entries] == [True, False, True, False]
        for e in (entries[0], entries[2]):
            assert e.pfn > 0 and e.exclusive and not e.file_or_shared_anon and not e.swapped
        assert entries[1].pfn == 0
        pfns = [entries[0].pfn, entries[2].pfn]
        assert read_kpagecount(pfns) == [1, 1]
        for flags in read_kpageflags(pfns):
            assert kpf(flags, KPF_ANON) and kpf(flags, KPF_MMAP) and kpf(flags, KPF_ANON_EXCLUSIVE)
            assert not kpf(flags, KPF_COMPOUND_HEAD) and not kpf(flags, KPF_COMPOUND_TAIL)
        assert folio_extent(pfns[0]) == (pfns[0], 0)


@pytest.mark.live
def test_fork_clears_anon_exclusive_bit_and_raises_kpagecount(live_root: None) -> None:
    with AnonMap(1) as m:
        m.madvise(MADV_NOHUGEPAGE)
        m.write(0)
        pfn = _pfn(m.addr)
        with PhysReader() as phys:
            assert kpf(phys.kpageflags([pfn])[0], KPF_ANON_EXCLUSIVE)
            rfd, wfd = os.pipe()
            child = os.fork()
            if child == 0:  # pragma: no cover - the child only waits
                os.close(wfd)
                os.read(rfd, 1)
                os._exit(0)
            os.close(rfd)
            try:
                assert phys.kpagecount([pfn]) == [2]
                (entry,) = read_pagemap(os.getpid(), m.addr, 1)
                assert entry.pfn == pfn and not entry.exclusive
                assert not kpf(phys.kpageflags([pfn])[0], KPF_ANON_EXCLUSIVE)
            finally:
                os.close(wfd)
                os.waitpid(child, 0)
            # Child gone: mapcount 1 again, pagemap says "exclusively mapped", PG_anon_exclusive stays clear.
            assert phys.kpagecount([pfn]) == [1]
            (entry,) = read_pagemap(os.getpid(), m.addr, 1)
            assert entry.exclusive
            assert not kpf(phys.kpageflags([pfn])[0], KPF_ANON_EXCLUSIVE)


@pytest.mark.live
def test_pmd_thp_extent_and_head_flag_on_every_page(live_root: None) -> None:
    nr = 512
    with AnonMap(nr, align=nr * PAGE_SIZE) as m:
        m.madvise(MADV_HUGEPAGE)
        m.write(0)
        entries = read_pagemap(os.getpid(), m.addr, nr)
        if not all(e.present for e in entries):
            pytest.skip("no PMD THP here (THP settings or memory)")
        pfns = [e.pfn for e in entries]
        assert pfns == list(range(pfns[0], pfns[0] + nr))
        with PhysReader() as phys:
            flags = phys.kpageflags(pfns)
            assert all(kpf(f, KPF_THP) for f in flags)
            assert kpf(flags[0], KPF_COMPOUND_HEAD) and not kpf(flags[0], KPF_COMPOUND_TAIL)
            assert all(kpf(f, KPF_COMPOUND_TAIL) and not kpf(f, KPF_COMPOUND_HEAD) for f in flags[1:])
            assert all(kpf(f, KPF_ANON_EXCLUSIVE) for f in flags)
            assert phys.kpagecount(pfns) == [1] * nr
            for probe in (pfns[0], pfns[1], pfns[300], pfns[-1]):
                assert phys.folio_extent(probe) == (pfns[0], 9)


@pytest.mark.live
def test_non_thp_compound_page_extent(live_root: None) -> None:
    """folio_extent also walks a compound page that is not a THP (slab, page tables, ...)."""
    with PhysReader() as phys:
        size = os.path.getsize(procfs.KPAGEFLAGS_PATH) // 8 or 1 << 22
        for first in range(0, min(size, 1 << 22), 4096):
            words = phys.kpageflags_range(first, 4096)
            for i, w in enumerate(words):
                if kpf(w, KPF_COMPOUND_HEAD) and not kpf(w, KPF_THP) and not kpf(w, KPF_HUGE):
                    head = first + i
                    try:
                        got_head, order = phys.folio_extent(head)
                        assert (got_head, order) == (head, order)
                        if order > 0:
                            assert phys.folio_extent(head + (1 << order) - 1) == (head, order)
                            return
                    except HostError:
                        continue  # freed under us: try the next
    pytest.skip("no non-THP compound page found")


@pytest.mark.live
def test_batched_reads_equal_single_reads_in_caller_order(live_root: None) -> None:
    with AnonMap(8) as m:
        m.madvise(MADV_NOHUGEPAGE)
        for i in range(8):
            m.write(i)
        pfns = [e.pfn for e in read_pagemap(os.getpid(), m.addr, 8)]
        order = [pfns[5], pfns[0], pfns[5], pfns[7], 1]
        with PhysReader() as phys:
            assert phys.kpageflags(order) == [phys.kpageflags([p])[0] for p in order]
            assert phys.kpagecount(order) == [phys.kpagecount([p])[0] for p in order]
            assert phys.kpageflags([]) == []
            with pytest.raises(HostError, match="kpageflags: short read"):
                phys.kpageflags([1 << 50])


@pytest.mark.live
def test_maps_of_self_find_the_mapping(live_root: None) -> None:
    with AnonMap(3) as m:
        maps = Maps.read(os.getpid())
        vma = maps.find(m.addr)
        assert vma is not None and vma.perms == "rw-p" and vma.inode == 0
        assert vma.start <= m.addr and m.addr + 3 * PAGE_SIZE <= vma.end


@pytest.mark.live
def test_exited_and_zombie_pids_give_clear_host_errors(live_root: None) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(HostError, match=rf"/proc/{proc.pid}/pagemap: process {proc.pid} does not exist"):
        read_pagemap(proc.pid, 0x400000, 1)
    with pytest.raises(HostError, match=rf"/proc/{proc.pid}/maps: process {proc.pid} does not exist"):
        Maps.read(proc.pid)
    child = os.fork()
    if child == 0:  # pragma: no cover
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until it is a zombie (not yet reaped)
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.005)
        with pytest.raises(HostError, match="no address space"):
            read_pagemap(child, 0x400000, 1)
    finally:
        os.waitpid(child, 0)


@pytest.mark.live
def test_unaligned_start_is_refused(live_root: None) -> None:
    with pytest.raises(HostError, match="not page aligned"):
        read_pagemap(os.getpid(), 0x1001, 1)
