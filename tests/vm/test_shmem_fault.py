"""Shmem page cache and faults: cached at creation, fault-around, finish_fault()'s whole-folio mapping."""

from __future__ import annotations

import json
from typing import Any

from foliosim.kconfig import KernelConfig
from foliosim.system import RmapSystem
from foliosim.trace.format import folio_record
from foliosim.trace.replay import replay
from foliosim.vm import Machine, MachineOptions
from foliosim.vm.events import Event
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE, filled_page
from foliosim.vm.pagetable import SimFolio

CFG = KernelConfig(pmd_order=5)  # a page table covers 32 pages
BASE = 0x40000  # a PMD-aligned virtual page number
RMAP_OPS = ("map_new_anon", "map", "dup", "unmap")


def new(**opts: Any) -> Machine:
    return Machine(CFG, MachineOptions(check=True, **opts))


def mapped(m: Machine, task: str) -> dict[int, tuple[str, int, bool]]:
    """vpn -> (folio, page, writable) of every PTE of ``task``."""
    return {vpn: (p.folio.name, p.page, p.write) for vpn, p in m.task(task).mm.ptes.items()}


def folio_at(m: Machine, task: str, addr: int) -> SimFolio:
    hit = m.lookup(m.task(task).mm, addr >> PAGE_SHIFT)
    assert hit is not None
    return hit[0]


def map_ops(m: Machine, start: int) -> list[tuple[str, int, int]]:
    """(folio, first page, nr) of every rmap ``map`` call recorded from trace position ``start``."""
    return [(op.folio, op.page, op.nr) for op in m.trace[start:] if op.op == "map"]


def refcount(f: SimFolio) -> int:
    assert f.folio is not None
    return f.folio.refcount


def test_shmem_object_is_cached_at_creation_and_a_regular_file_is_not() -> None:
    m = new()
    m.create_file("S", 10 * PAGE_SIZE, order=3, fill=0x5A, shmem=True)
    m.create_file("F", 8 * PAGE_SIZE, order=2, fill=0x11)
    shm = m.files["S"]
    assert sorted(shm.cache) == list(range(10))
    folios = {shm.cache[i].name: shm.cache[i] for i in range(10)}
    # one order-3 folio for [0, 8), the tail that does not fill an order-3 range in order-0 folios
    assert sorted((f.index, f.order) for f in folios.values()) == [(0, 3), (8, 0), (9, 0)]
    for f in folios.values():
        assert refcount(f) == f.nr_pages  # the page cache's references, nothing mapped
        assert f.data == [filled_page(0x5A)] * f.nr_pages
        assert f.kind.value == "shmem"
    assert [op.op for op in m.trace] == ["folio_new"] * 3
    assert m.files["F"].cache == {}  # a regular file is read in at first use
    assert m.check() == []


def test_read_fault_maps_the_cached_folios_in_the_fault_around_window() -> None:
    m = new(fault_around_pages=8)
    m.create_file("S", 48 * PAGE_SIZE, order=2, fill=7, shmem=True)
    m.spawn("P")
    # VMA [BASE+3, BASE+43) maps file pages 4..43: it starts inside an 8-page window and ends before a PMD ends
    addr = m.mmap("P", 40 * PAGE_SIZE, file="S", shared=True, offset=4 * PAGE_SIZE, write=False,
                  addr=(BASE + 3) << PAGE_SHIFT)
    assert addr == (BASE + 3) << PAGE_SHIFT
    shm = m.files["S"]
    mark = len(m.trace)
    assert m.read("P", (BASE + 5) << PAGE_SHIFT) == b"\x07"
    # the window [BASE, BASE+8) is raised to the VMA start and keeps its 8 pages: BASE+3 .. BASE+10
    assert sorted(mapped(m, "P")) == list(range(BASE + 3, BASE + 11))
    assert map_ops(m, mark) == [(shm.cache[4].name, 0, 4), (shm.cache[8].name, 0, 4)]  # one batch per folio
    assert refcount(shm.cache[4]) == 4 + 4 and refcount(shm.cache[12]) == 4

    mark = len(m.trace)
    m.read("P", (BASE + 30) << PAGE_SHIFT)
    # window [BASE+24, BASE+32): file pages 25..32; the page table ends at BASE+32
    assert sorted(v for v in mapped(m, "P") if v >= BASE + 11) == list(range(BASE + 24, BASE + 32))
    assert map_ops(m, mark) == [(shm.cache[24].name, 1, 3), (shm.cache[28].name, 0, 4), (shm.cache[32].name, 0, 1)]

    mark = len(m.trace)
    m.read("P", (BASE + 41) << PAGE_SHIFT)
    # window [BASE+40, BASE+48) cut at the VMA end BASE+43; page 44's folio stays unmapped beyond it
    assert sorted(v for v in mapped(m, "P") if v >= BASE + 32) == [BASE + 40, BASE + 41, BASE + 42]
    assert map_ops(m, mark) == [(shm.cache[41].name, 1, 3)]
    assert all(not w for _, _, w in mapped(m, "P").values())
    assert m.user_faults == [(m.step - 2, "P", BASE + 5, False), (m.step - 1, "P", BASE + 30, False),
                             (m.step, "P", BASE + 41, False)]


def test_a_shmem_object_is_unlinked_so_its_faults_map_whole_folios() -> None:
    """A ``file ... shmem`` object has no links (as a memfd): shmem_mmap() gives its VMAs the anonymous-shmem
    operations, so finish_fault() maps the whole folio, on a read fault fault-around did not cover (here:
    none) and on a shared write fault, private and shared mappings alike (a private write copies one page)."""
    m = new(fault_around_pages=1)
    m.create_file("S", 16 * PAGE_SIZE, order=3, fill=1, shmem=True)
    assert m.files["S"].anon
    m.spawn("P")
    addr = m.mmap("P", 16 * PAGE_SIZE, file="S", shared=True)
    base = addr >> PAGE_SHIFT
    first, second = m.files["S"].cache[0], m.files["S"].cache[8]
    mark = len(m.trace)
    m.read("P", addr + 2 * PAGE_SIZE)
    assert mapped(m, "P") == {base + k: (first.name, k, True) for k in range(8)}
    m.write("P", addr + 13 * PAGE_SIZE, b"w")  # do_shared_fault(): the whole folio, writable
    assert {v: mapped(m, "P")[v] for v in range(base + 8, base + 16)} == {
        base + 8 + k: (second.name, k, True) for k in range(8)}
    assert map_ops(m, mark) == [(first.name, 0, 8), (second.name, 0, 8)]
    assert m.counters["fault whole shmem folio"] == 2
    assert len(m.user_faults) == 2

    priv = m.mmap("P", 16 * PAGE_SIZE, file="S")
    m.read("P", priv + 9 * PAGE_SIZE)  # vma_is_anon_shmem() holds for a private mapping too
    assert {v for v in mapped(m, "P") if v >= priv >> PAGE_SHIFT} == set(range((priv >> PAGE_SHIFT) + 8,
                                                                             (priv >> PAGE_SHIFT) + 16))
    m.write("P", priv + 2 * PAGE_SIZE, b"c")  # do_cow_fault(): one anon page
    assert mapped(m, "P")[(priv >> PAGE_SHIFT) + 2][1:] == (0, True)
    assert (priv >> PAGE_SHIFT) + 3 not in mapped(m, "P")
    assert m.check() == []


def test_anon_shared_memory_maps_the_whole_folio_on_the_first_read_fault() -> None:
    m = new(thp=frozenset({4}))
    m.spawn("P")
    addr = m.mmap("P", 16 * PAGE_SIZE, shared=True)
    mark = len(m.trace)
    assert m.read("P", addr + 5 * PAGE_SIZE) == b"\x00"
    f = folio_at(m, "P", addr)
    assert f.order == 4 and f.file is not None and f.file.anon
    base = addr >> PAGE_SHIFT
    assert mapped(m, "P") == {base + k: (f.name, k, True) for k in range(16)}  # writable: no write-notify
    assert [(op.op, op.folio, op.page, op.nr) for op in m.trace[mark:]] == [
        ("folio_new", f.name, 0, 1), ("map", f.name, 0, 16)]  # one batched folio_add_file_rmap_ptes()
    assert refcount(f) == 16 + 16  # the page cache's 16 and one per PTE
    assert len(m.user_faults) == 1
    m.read("P", addr, 16 * PAGE_SIZE)
    m.write("P", addr, b"w" * 16 * PAGE_SIZE)
    assert len(m.user_faults) == 1  # every page was mapped, writable, by the first fault


def test_anon_shared_memory_maps_the_whole_folio_writable_on_the_first_write_fault() -> None:
    m = new()
    m.spawn("P")
    addr = m.mmap("P", 16 * PAGE_SIZE, shared=True, thp=frozenset({4}))
    m.write("P", addr + 3 * PAGE_SIZE, b"x")
    f = folio_at(m, "P", addr)
    base = addr >> PAGE_SHIFT
    assert mapped(m, "P") == {base + k: (f.name, k, True) for k in range(16)}
    assert len(m.user_faults) == 1
    m.write("P", addr, b"y" * 16 * PAGE_SIZE)
    assert len(m.user_faults) == 1
    m.fork("P", "C")  # a MAP_SHARED mapping's PTEs are not copied: the child faults the folio in whole
    m.write("C", addr + 9 * PAGE_SIZE, b"z")
    assert mapped(m, "C") == {base + k: (f.name, k, True) for k in range(16)}
    assert m.shared_verdict(f)
    assert m.read("P", addr + 9 * PAGE_SIZE) == b"z"
    assert m.counters["fault whole shmem folio"] == 2


def test_anon_shared_memory_falls_back_to_one_page() -> None:
    """finish_fault() maps one page when the folio is not inside the VMA or some of its PTEs are present;
    shmem_suitable_orders() allocates order 0 for an unsuitable VMA or an occupied range."""
    m = new(thp=frozenset({4}))
    m.spawn("P")
    addr = m.mmap("P", 16 * PAGE_SIZE, shared=True)
    base = addr >> PAGE_SHIFT
    m.write("P", addr, b"a")
    m.fork("P", "C")
    m.write("C", addr + 12 * PAGE_SIZE, b"b")
    m.madvise("C", addr, 8 * PAGE_SIZE, "dontneed")
    mark = len(m.trace)
    m.write("C", addr + 2 * PAGE_SIZE, b"c")  # PTEs 8..15 are present: pte_range_none() fails
    assert sorted(mapped(m, "C")) == [base + 2, *range(base + 8, base + 16)]
    assert map_ops(m, mark) == [(folio_at(m, "P", addr).name, 2, 1)]
    m.munmap("C", addr + 15 * PAGE_SIZE, PAGE_SIZE)
    m.madvise("C", addr, 15 * PAGE_SIZE, "dontneed")
    m.write("C", addr + 4 * PAGE_SIZE, b"d")  # the folio's last page is outside the VMA now
    assert list(mapped(m, "C")) == [base + 4]

    unaligned = m.mmap("P", 32 * PAGE_SIZE, shared=True, addr=(BASE + 1) << PAGE_SHIFT)
    m.read("P", unaligned + 19 * PAGE_SIZE)  # the VMA's linear offset is not order-aligned: order 0
    assert folio_at(m, "P", unaligned + 19 * PAGE_SIZE).order == 0
    assert BASE + 20 in mapped(m, "P") and BASE + 21 not in mapped(m, "P")

    tail = m.mmap("P", 32 * PAGE_SIZE, shared=True)
    m.munmap("P", tail, PAGE_SIZE)
    m.read("P", tail + 5 * PAGE_SIZE)  # the aligned range [0, 16) is not inside the VMA: order 0
    assert folio_at(m, "P", tail + 5 * PAGE_SIZE).order == 0
    m.write("P", tail + 6 * PAGE_SIZE, b"e")  # index 5 of that range is cached: order 0 again
    assert folio_at(m, "P", tail + 6 * PAGE_SIZE).order == 0
    m.read("P", tail + 20 * PAGE_SIZE)  # [16, 32) fits: the whole order-4 folio
    assert folio_at(m, "P", tail + 20 * PAGE_SIZE).order == 4
    second_half = range((tail >> PAGE_SHIFT) + 16, (tail >> PAGE_SHIFT) + 32)
    assert {v for v in mapped(m, "P") if v in second_half} == set(second_half)
    assert m.check() == []


def test_shmem_faults_replay_bit_for_bit() -> None:
    for config in (CFG, KernelConfig(pmd_order=5, word_bits=32), KernelConfig(pmd_order=5, no_page_mapcount=True)):
        m = Machine(config, MachineOptions(check=True, thp=frozenset({4}), fault_around_pages=8))
        live: list[dict[str, Any]] = []

        def observe(event: Event, m: Machine = m, live: list[dict[str, Any]] = live) -> None:
            op = event.data.get("op") if event.kind == "rmap" else None
            if op is not None and op.op in RMAP_OPS:
                live.append(folio_record(m.rmap.folios[op.folio]))

        m.observers.append(observe)
        m.create_file("S", 24 * PAGE_SIZE, order=3, fill=9, shmem=True)
        m.spawn("A")
        shm = m.mmap("A", 24 * PAGE_SIZE, file="S", shared=True)
        anon = m.mmap("A", 32 * PAGE_SIZE, shared=True)
        m.read("A", shm + 9 * PAGE_SIZE)
        m.write("A", anon + 17 * PAGE_SIZE, b"a")
        m.fork("A", "B")
        m.fork("B", "C")
        m.read("B", shm)
        m.read("C", anon + 2 * PAGE_SIZE)
        m.write("C", shm + 20 * PAGE_SIZE, b"c")
        m.madvise("B", anon, 8 * PAGE_SIZE, "dontneed")
        m.exit("A")
        m.munmap("B", shm, 8 * PAGE_SIZE)
        m.write("C", anon + 30 * PAGE_SIZE, b"d")
        lines = [json.dumps(op.to_json()) for op in m.trace]
        system = RmapSystem(config)
        replayed = [r for r in replay(lines, config, system=system) if r["op"] in RMAP_OPS]
        assert all("error" not in r for r in replayed)
        for rec in replayed:
            for key in ("step", "op", "mm", "owner"):
                rec.pop(key, None)
        assert replayed == live and len(live) >= 9
        assert set(system.folios) == set(m.rmap.folios)
        for name, handle in system.folios.items():  # refcount/pincount are the simulator's, not the trace's
            assert handle.folio.key()[:7] == m.rmap.folios[name].folio.key()[:7]
            assert handle.folio.page_mapcount == m.rmap.folios[name].folio.page_mapcount
