"""Machine-level behaviour: MM lifetime, errors like Linux's, statistics, trace recording."""

from __future__ import annotations

import json
from typing import Any

import pytest

from foliosim.kconfig import KernelConfig
from foliosim.system import RmapSystem
from foliosim.trace.format import folio_record
from foliosim.trace.replay import replay
from foliosim.vm import Machine, MachineOptions
from foliosim.vm.events import EFAULT, EINVAL, ENOMEM, Event, SimError
from foliosim.vm.memory import PAGE_SIZE
from foliosim.vm.stats import pagemap, smaps_rollup

CFG = KernelConfig(pmd_order=4)


def new(config: KernelConfig = CFG, **opts: Any) -> Machine:
    return Machine(config, MachineOptions(check=True, **opts))


def test_mm_id_freed_only_at_last_mmdrop() -> None:
    m = new()
    m.spawn("P")
    m.fork("P", "C")
    child_id = m.task("C").mm.mm_id
    m.mm_hold("cpu1-lazy-tlb", "C")
    m.exit("C")
    mm = next(mm for mm in m.mms.values() if mm.mm_id == child_id)
    assert mm.users == 0 and mm.count == 1 and mm.zapped  # exit_mmap() ran, the id is still taken
    assert m.rmap.ids.is_allocated(child_id)
    m.mm_release("cpu1-lazy-tlb")
    assert not m.rmap.ids.is_allocated(child_id)
    m.fork("P", "D")
    assert m.task("D").mm.mm_id == child_id  # the IDA hands out the lowest free id again


def test_mmget_holder_delays_exit_mmap() -> None:
    m = new(thp=frozenset({2}))
    m.spawn("P")
    mem = m.mmap("P", 4 * PAGE_SIZE)
    m.write("P", mem, b"x" * 4 * PAGE_SIZE)
    m.fork("P", "C")
    m.mm_hold("procfs-reader", "C", users=True)
    m.exit("C")
    folio = m.lookup(m.task("P").mm, mem // PAGE_SIZE)[0]  # type: ignore[index]
    assert m.rmap.folios[folio.name].truth.nr_mapping_mms() == 2  # C's mappings outlive the task
    m.mm_release("procfs-reader")
    assert m.rmap.folios[folio.name].truth.nr_mapping_mms() == 1


def test_threads_share_one_mm_and_vfork_blocks_parent() -> None:
    m = new()
    m.spawn("P")
    mem = m.mmap("P", PAGE_SIZE)
    m.clone_vm("P", "T")
    assert m.task("T").mm is m.task("P").mm
    m.write("T", mem, b"t")
    assert m.read("P", mem) == b"t"
    m.clone_vm("P", "V", vfork=True)
    with pytest.raises(SimError, match="vfork"):
        m.read("P", mem)
    m.write("V", mem, b"v")  # no CoW: the same MM
    m.execve("V")
    assert m.read("P", mem) == b"v"
    assert m.task("V").mm is not m.task("P").mm


def test_exec_kills_other_threads() -> None:
    m = new()
    m.spawn("P")
    m.clone_vm("P", "T")
    old = m.task("P").mm
    m.execve("P")
    assert "T" not in m.tasks and old.name not in m.mms


def test_errno_results_and_sigsegv() -> None:
    m = new()
    m.spawn("P")
    mem = m.mmap("P", 2 * PAGE_SIZE, write=False)
    assert m.munmap("P", mem + 1, PAGE_SIZE) == -EINVAL
    assert m.mmap("P", 0) == -EINVAL
    assert m.mprotect("P", mem, 8 * PAGE_SIZE, True, True) == -ENOMEM
    assert m.pin("P", "p", mem, PAGE_SIZE, write=True) == -EFAULT
    assert m.mremap("P", mem, 4 * PAGE_SIZE, mem + 64 * PAGE_SIZE) == -EFAULT
    assert m.write("P", mem, b"x") is False
    assert m.read("P", mem + 64 * PAGE_SIZE) is None
    assert m.counters["SIGSEGV"] == 2
    assert [e.kind for e in m.events].count("segv") == 2
    assert "p" not in m.gup and not m.task("P").mm.has_pinned  # nothing half-applied


def test_mm_id_exhaustion_is_enomem() -> None:
    m = new(KernelConfig(pmd_order=4, word_bits=32))
    m.spawn("P")
    m.rmap.ids._next = m.rmap.ids.max_id + 1  # every other id is taken
    before = len(m.trace)
    assert m.fork("P", "C") == -ENOMEM
    assert "C" not in m.tasks and len(m.trace) == before


def test_smaps_and_pagemap_with_and_without_page_mapcount() -> None:
    for npm in (False, True):
        m = new(KernelConfig(pmd_order=4, no_page_mapcount=npm), thp=frozenset({2}))
        m.spawn("P")
        mem = m.mmap("P", 4 * PAGE_SIZE)
        m.write("P", mem, b"a" * 4 * PAGE_SIZE)
        m.fork("P", "C")
        m.munmap("C", mem + 2 * PAGE_SIZE, 2 * PAGE_SIZE)  # C keeps pages 0-1 only
        roll = smaps_rollup(m, m.task("P").mm)
        assert roll.rss == 4 * PAGE_SIZE
        excl = [pagemap(m, m.task("P").mm, mem // PAGE_SIZE + k).exclusive for k in range(4)]
        if npm:  # per folio: maybe shared -> all shared; Pss from the average mapcount (6/4 -> 2)
            assert roll.private == 0 and roll.shared == 4 * PAGE_SIZE
            assert excl == [False] * 4
            assert roll.pss == 4 * PAGE_SIZE // 2
        else:  # per page: pages 2-3 are mapped once
            assert roll.private == 2 * PAGE_SIZE and roll.shared == 2 * PAGE_SIZE
            assert excl == [False, False, True, True]
            assert roll.pss == 2 * PAGE_SIZE // 2 + 2 * PAGE_SIZE


def test_anon_huge_pages_counts_pmd_mappings_only() -> None:
    m = new(thp=frozenset({4}))
    m.spawn("P")
    mem = m.mmap("P", 16 * PAGE_SIZE)
    m.write("P", mem, b"a")
    assert smaps_rollup(m, m.task("P").mm).anon_huge_pages == 16 * PAGE_SIZE
    m.mprotect("P", mem, PAGE_SIZE, True, False)
    assert smaps_rollup(m, m.task("P").mm).anon_huge_pages == 0


def test_madvise_cold_skips_maybe_shared_folios() -> None:
    m = new(thp=frozenset({4}))
    m.spawn("P")
    mem = m.mmap("P", 16 * PAGE_SIZE)
    m.write("P", mem, b"a")
    seen: list[Event] = []
    m.observers.append(lambda e: seen.append(e) if e.kind == "decision" else None)
    m.madvise("P", mem, 16 * PAGE_SIZE, "cold")
    assert seen[-1].data["verdict"] == "take"
    m.fork("P", "C")
    m.madvise("P", mem, 16 * PAGE_SIZE, "pageout")
    assert seen[-1].data["verdict"] == "skip" and "maybe mapped shared" in seen[-1].data["reason"]


def test_huge_zero_page_then_write_allocates_thp() -> None:
    m = new(thp=frozenset({4}))
    m.spawn("P")
    mem = m.mmap("P", 16 * PAGE_SIZE)
    assert m.read("P", mem, 2) == b"\0\0"
    assert m.lookup(m.task("P").mm, mem // PAGE_SIZE)[0] is m.huge_zero  # type: ignore[index]
    m.write("P", mem + PAGE_SIZE, b"z")
    f = m.lookup(m.task("P").mm, mem // PAGE_SIZE)[0]  # type: ignore[index]
    assert f.order == 4 and f.is_anon
    assert m.read("P", mem + PAGE_SIZE, 1) == b"z"


def test_mthp_falls_back_when_range_not_empty() -> None:
    m = new(thp=frozenset({2, 3}))
    m.spawn("P")
    mem = m.mmap("P", 8 * PAGE_SIZE)
    m.read("P", mem + 5 * PAGE_SIZE)  # zero page in the upper half of the order-3 range
    m.write("P", mem, b"a")
    assert m.lookup(m.task("P").mm, mem // PAGE_SIZE)[0].order == 2  # type: ignore[index]


@pytest.mark.parametrize("config", [CFG, KernelConfig(pmd_order=4, no_page_mapcount=True),
                                    KernelConfig(pmd_order=4, word_bits=32)], ids=["64", "npm", "32"])
def test_trace_replays_bit_for_bit(config: KernelConfig) -> None:
    """Every rmap call is recorded; replaying the trace reproduces every folio state after every call."""
    m = new(config, thp=frozenset({2, 4}))
    live: list[dict[str, Any]] = []

    def observe(event: Event) -> None:
        op = event.data.get("op") if event.kind == "rmap" else None
        if op is not None and op.op in ("map_new_anon", "map", "dup", "unmap"):
            live.append(folio_record(m.rmap.folios[op.folio]))

    m.observers.append(observe)
    m.create_file("F", 8 * PAGE_SIZE, order=2, fill=7)
    m.spawn("A")
    anon = m.mmap("A", 32 * PAGE_SIZE)
    shared = m.mmap("A", 8 * PAGE_SIZE, file="F", shared=True)
    m.write("A", anon, b"a" * 32 * PAGE_SIZE)
    m.read("A", shared, 8 * PAGE_SIZE)
    m.fork("A", "B")
    m.fork("B", "C")
    m.read("B", shared, 8 * PAGE_SIZE)
    m.read("C", shared + 4 * PAGE_SIZE)
    m.write("C", anon + 3 * PAGE_SIZE, b"c")
    m.mprotect("A", anon, PAGE_SIZE, True, False)
    m.write("B", anon, b"b")
    m.exit("A")
    m.munmap("B", shared, 4 * PAGE_SIZE)
    m.exit("B")
    m.write("C", anon + 20 * PAGE_SIZE, b"c")
    lines = [json.dumps(op.to_json()) for op in m.trace]
    system = RmapSystem(config)
    replayed = [r for r in replay(lines, config, system=system) if r["op"] in ("map_new_anon", "map", "dup", "unmap")]
    assert all("error" not in r for r in replayed)
    for rec in replayed:
        rec.pop("step")
        rec.pop("op")
        rec.pop("mm", None)
        rec.pop("owner", None)
    assert replayed == live
    assert set(system.folios) == set(m.rmap.folios) and set(system.mms) == set(m.rmap.mms)
    for name, handle in system.folios.items():  # refcount/pincount are the simulator's, not the trace's
        assert handle.folio.key()[:7] == m.rmap.folios[name].folio.key()[:7]
        assert handle.folio.page_mapcount == m.rmap.folios[name].folio.page_mapcount
