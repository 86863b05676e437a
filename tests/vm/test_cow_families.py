"""The anonymous test families of tools/testing/selftests/mm/cow.c on every folio size.

PMD order 4 (16 pages) and mTHP orders 2 and 3 keep the runs small; one class
repeats the core families with the real PMD order 9. Every machine runs the
isolation oracle after every step, and each test also asserts the data each
task sees and the copy-on-write decisions taken.
"""

from __future__ import annotations

import pytest

from foliosim.kconfig import KernelConfig
from foliosim.vm import Machine
from foliosim.vm.events import CowRule
from foliosim.vm.memory import PAGE_SIZE
from tests.vm.backings import Backing, backings, machine, setup

CONFIGS = [
    KernelConfig(pmd_order=4),
    KernelConfig(pmd_order=4, no_page_mapcount=True),
    KernelConfig(pmd_order=4, word_bits=32),
]
BACKINGS = backings(4, (2, 3))
OLD, NEW = b"\x01", b"\xff"


def decisions(m: Machine, since: int, mm: str | None = None) -> list[tuple[str, CowRule]]:
    return [(d.outcome, d.rule) for d in m.cow_decisions[since:] if mm is None or d.mm == mm]


def mm_of(m: Machine, task: str) -> str:
    return m.task(task).mm.name


@pytest.fixture(params=CONFIGS, ids=["64", "64-nopagemapcount", "32"])
def config(request: pytest.FixtureRequest) -> KernelConfig:
    return request.param  # type: ignore[no-any-return]


@pytest.mark.parametrize("b", BACKINGS, ids=str)
class TestAnon:
    def test_cow_in_parent(self, config: KernelConfig, b: Backing) -> None:
        """A1 "Basic COW after fork()": the parent writes; no leak into the child."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.fork("P", "C") > 0
        assert m.read("C", mem, size) == OLD * size
        mark = len(m.cow_decisions)
        assert m.write("P", mem, NEW * size)
        assert m.read("C", mem, size) == OLD * size, "leak from parent into child"
        assert m.read("P", mem, size) == NEW * size
        outcomes = decisions(m, mark, mm_of(m, "P"))
        assert outcomes and all(o in ("copy", "split") for o, _ in outcomes)
        assert outcomes.count(("split", CowRule.PMD_SPLIT)) <= 1

    def test_cow_in_child(self, config: KernelConfig, b: Backing) -> None:
        """A1 the other way round: the child writes; no leak into the parent."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.fork("P", "C") > 0
        mark = len(m.cow_decisions)
        assert m.write("C", mem, NEW * size)
        assert m.read("P", mem, size) == OLD * size, "leak from child into parent"
        assert all(o in ("copy", "split") for o, _ in decisions(m, mark))

    def test_cow_with_mprotect(self, config: KernelConfig, b: Backing) -> None:
        """A2: mprotect(RO) + mprotect(RW) before the parent's write must not make shared pages writable."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.fork("P", "C") > 0
        assert m.mprotect("P", mem, size, True, False) == 0
        assert m.mprotect("P", mem, size, True, True) == 0
        assert m.write("P", mem, NEW * size)
        assert m.read("C", mem, size) == OLD * size

    def test_child_exits_early_parent_reuses(self, config: KernelConfig, b: Backing) -> None:
        """reuse-byte: fork, the child exits, the parent writes: v6.15 reuses (except a lone PTE)."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.fork("P", "C") > 0
        assert m.exit("C") == 0
        mark = len(m.cow_decisions)
        assert m.write("P", mem, NEW)
        first = decisions(m, mark)[0]
        expected = {
            "full": {0: CowRule.SMALL_REFCOUNT_ONE}.get(b.order, CowRule.LARGE_EXCLUSIVE),
            "pte-mapped": CowRule.LARGE_EXCLUSIVE,
            "single-pte": CowRule.LARGE_MAPCOUNT_ONE,
            "mremap-half": CowRule.LARGE_EXCLUSIVE,
            "partially-shared": CowRule.LARGE_EXCLUSIVE,
        }[b.variant]
        if b.variant == "full" and b.order == 4:
            expected = CowRule.PMD_REFCOUNT_ONE
        assert first[1] is expected
        assert first[0] == ("copy" if expected is CowRule.LARGE_MAPCOUNT_ONE else "reuse")
        assert m.read("P", mem, size) == NEW + OLD * (size - 1)

    def test_child_reuses_after_parent_unmaps(self, config: KernelConfig, b: Backing) -> None:
        """child-reuse-byte: the parent unmaps, the child's writes reuse."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.fork("P", "C") > 0
        assert m.munmap("P", mem, size) == 0
        mark = len(m.cow_decisions)
        assert m.write("C", mem, NEW)
        outcome, rule = decisions(m, mark)[0]
        if b.variant == "single-pte":
            assert (outcome, rule) == ("copy", CowRule.LARGE_MAPCOUNT_ONE)
        elif b.variant == "mremap-half":
            assert outcome == "copy"  # the parent still maps the moved upper half
        else:
            assert outcome == "reuse"
        assert m.read("C", mem, 2) == NEW + OLD

    def test_vmsplice_unmap_in_child(self, config: KernelConfig, b: Backing) -> None:
        """A3 (CVE-2020-29374): the child's pipe must keep the old data after the parent writes."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.fork("P", "C") > 0
        n = m.vmsplice("C", "pipe", mem, size)
        assert n == min(size // PAGE_SIZE, 16)
        assert m.munmap("C", mem, size) == 0
        mark = len(m.cow_decisions)
        assert m.write("P", mem, NEW * size)
        assert m.read_pinned("pipe") == OLD * (n * PAGE_SIZE), "leak from parent into child's pipe"
        assert all(o in ("copy", "split") for o, _ in decisions(m, mark))

    @pytest.mark.parametrize("before_fork", [True, False], ids=["before-fork", "after-fork"])
    def test_vmsplice_unmap_in_parent(self, config: KernelConfig, b: Backing, before_fork: bool) -> None:
        """A5/A6: the parent's pipe must not see the child's writes."""
        m = machine(config)
        mem, size = setup(m, b)
        if before_fork:
            n = m.vmsplice("P", "pipe", mem, size)
        assert m.fork("P", "C") > 0
        if not before_fork:
            n = m.vmsplice("P", "pipe", mem, size)
        assert m.munmap("P", mem, size) == 0
        mark = len(m.cow_decisions)
        assert m.write("C", mem, NEW * size)
        assert m.exit("C") == 0
        assert m.read_pinned("pipe") == OLD * (n * PAGE_SIZE), "leak from child into parent's pipe"
        assert all(o in ("copy", "split") for o, _ in decisions(m, mark))

    def test_rw_pin_reliable(self, config: KernelConfig, b: Backing) -> None:
        """A7: a long-term R/W pin; R/O PTE in a RW VMA (clear_refs); the write reuses the pinned page."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.pin("P", "buf", mem, size, write=True) == size // PAGE_SIZE
        assert m.mprotect("P", mem, size, True, False) == 0
        assert m.clear_refs("P") == 0
        assert m.mprotect("P", mem, size, True, True) == 0
        mark = len(m.cow_decisions)
        assert m.write("P", mem, NEW * size)
        assert m.read_pinned("buf") == NEW * size, "the pin went stale"
        assert decisions(m, mark) and all(d == ("reuse", CowRule.ANON_EXCLUSIVE) for d in decisions(m, mark))

    def test_fork_with_rw_pin(self, config: KernelConfig, b: Backing) -> None:
        """A8: fork with a R/W pin: the child gets copies at fork, the parent keeps writing its pinned page."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.pin("P", "buf", mem, size, write=True) > 0
        early = m.counters["fork early copy"]
        assert m.fork("P", "C") > 0
        # every exclusive page of a maybe-pinned folio is copied, also those outside the pinned range
        assert m.counters["fork early copy"] - early >= size // PAGE_SIZE
        mark = len(m.cow_decisions)
        assert m.write("P", mem, NEW * size)
        assert decisions(m, mark) == []  # the parent's PTEs stayed writable: no fault at all
        assert m.read_pinned("buf") == NEW * size
        assert m.read("C", mem, size) == OLD * size

    @pytest.mark.parametrize("fast", [False, True], ids=["gup", "gup-fast"])
    def test_ro_pin_on_shared_page(self, config: KernelConfig, b: Backing, fast: bool) -> None:
        """A9/A10: R/O pin on a page shared with a live child: unshare first, then the write reuses."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.fork("P", "C") > 0
        mark = len(m.cow_decisions)
        assert m.pin("P", "ro", mem, size, fast=fast) > 0
        assert any(d.unshare for d in m.cow_decisions[mark:])
        mark = len(m.cow_decisions)
        assert m.write("P", mem, NEW * size)
        assert all(d == ("reuse", CowRule.ANON_EXCLUSIVE) for d in decisions(m, mark))
        assert m.read_pinned("ro") == NEW * size, "the R/O pin is not reliable"
        assert m.read("C", mem, size) == OLD * size

    def test_ro_pin_on_previously_shared_page(self, config: KernelConfig, b: Backing) -> None:
        """A11/A12: the child exited before the pin: v6.15 may unshare by reusing a PTE-mapped THP."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.fork("P", "C") > 0
        assert m.exit("C") == 0
        mark = len(m.cow_decisions)
        assert m.pin("P", "ro", mem, size) > 0
        unshares = [d for d in m.cow_decisions[mark:] if d.unshare]
        # v6.15 unshares by reusing (a lone PTE of a large folio is copied so the folio can go)
        assert unshares and unshares[0].outcome == ("copy" if b.variant == "single-pte" else "reuse")
        assert m.write("P", mem, NEW * size)
        assert m.read_pinned("ro") == NEW * size

    def test_ro_pin_on_exclusive_page(self, config: KernelConfig, b: Backing) -> None:
        """A13/A14: R/O PTE of an exclusive page (clear_refs), R/O pin, write reuses, pin sees it."""
        m = machine(config)
        mem, size = setup(m, b)
        assert m.mprotect("P", mem, size, True, False) == 0
        assert m.clear_refs("P") == 0
        assert m.mprotect("P", mem, size, True, True) == 0
        assert m.pin("P", "ro", mem, size) > 0
        mark = len(m.cow_decisions)
        assert m.write("P", mem, NEW * size)
        assert decisions(m, mark) and all(o == "reuse" for o, _ in decisions(m, mark))
        assert m.read_pinned("ro") == NEW * size


class TestRealPmdOrder:
    """A1 and reuse on the real 2 MiB THP (PMD order 9), PMD- and PTE-mapped."""

    @pytest.mark.parametrize("variant", ["full", "pte-mapped"])
    def test_cow_and_reuse(self, variant: str) -> None:
        m = machine(KernelConfig())
        mem, size = setup(m, Backing("T1", 9, variant))
        assert m.fork("P", "C") > 0
        assert m.write("P", mem, NEW)
        assert m.read("C", mem, 1) == OLD
        assert m.cow_decisions[-1].outcome == "copy"
        assert m.exit("C") == 0
        assert m.write("P", mem + size - PAGE_SIZE, NEW)
        last = m.cow_decisions[-1]
        assert (last.outcome, last.rule) == ("reuse", CowRule.LARGE_EXCLUSIVE)
        assert last.mapcount == last.refcount == 511


class TestNonAnon:
    """cow.c's non-anonymous cases: the shared zero page and page-cache pages."""

    def test_zeropage_basic_cow(self) -> None:
        m = machine(KernelConfig(pmd_order=4))
        m.spawn("P")
        mem = m.mmap("P", PAGE_SIZE)
        smem = m.mmap("P", PAGE_SIZE, write=False)
        assert m.read("P", mem) == b"\0" and m.read("P", smem) == b"\0"
        assert m.lookup(m.task("P").mm, mem // PAGE_SIZE)[0] is m.zero  # type: ignore[index]
        assert m.write("P", mem, NEW)
        assert m.cow_decisions[-1].rule is CowRule.ZERO_PAGE
        assert m.read("P", smem) == b"\0"

    @pytest.mark.parametrize("shmem", [False, True], ids=["tmpfile", "memfd"])
    def test_pagecache_basic_cow(self, shmem: bool) -> None:
        m = machine(KernelConfig(pmd_order=4))
        m.create_file("F", 4 * PAGE_SIZE, order=2, fill=1, shmem=shmem)
        m.spawn("P")
        mem = m.mmap("P", PAGE_SIZE, file="F")
        smem = m.mmap("P", PAGE_SIZE, file="F", shared=True, write=False)
        assert m.read("P", mem) == OLD and m.read("P", smem) == OLD
        assert m.write("P", mem, NEW)
        assert m.cow_decisions[-1].rule is CowRule.NOT_ANON
        assert m.read("P", smem) == OLD, "other mapping modified"

    @pytest.mark.parametrize("backing", ["zeropage", "file"])
    def test_ro_longterm_pin_unshares(self, backing: str) -> None:
        m = machine(KernelConfig(pmd_order=4))
        m.spawn("P")
        if backing == "file":
            m.create_file("F", PAGE_SIZE, fill=1)
            mem = m.mmap("P", PAGE_SIZE, file="F")
        else:
            mem = m.mmap("P", PAGE_SIZE)
        m.read("P", mem)
        assert m.pin("P", "ro", mem, PAGE_SIZE) == 1
        assert m.cow_decisions[-1].unshare and m.cow_decisions[-1].outcome == "copy"
        assert m.write("P", mem, NEW)
        assert m.cow_decisions[-1].rule is CowRule.ANON_EXCLUSIVE
        assert m.read_pinned("ro")[:1] == NEW
