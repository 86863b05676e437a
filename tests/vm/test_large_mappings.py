"""Cost follows the pages touched, not the size mapped (issue 15 item 5).

A 128 TiB mapping has 2**35 pages and 2**26 PMD slots: any walk over its address range, even one
PMD slot at a time, takes minutes. Every operation here is run under a budget of executed Python
lines (``sys.settrace``), a deterministic measure that stops the test at once when exceeded.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from foliosim.kconfig import KernelConfig
from foliosim.vm import Machine, MachineOptions
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE, ZERO_PAGE, describe_page, filled_page
from foliosim.vm.oracle import _check_isolation, _who
from foliosim.vm.scenario import run
from foliosim.vm.stats import pagemap_present, smaps_rollup

ROOT = Path(__file__).resolve().parents[2]
TIB = 1 << 40
HUGE = 128 * TIB  # the whole x86-64 user address space: 2**35 pages


class BudgetExceeded(Exception):
    pass


@contextmanager
def line_budget(limit: int) -> Iterator[list[int]]:
    """Run the body with at most ``limit`` Python line events (loop iterations included)."""
    used = [0]

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            used[0] += 1
            if used[0] > limit:
                raise BudgetExceeded(f"more than {limit} lines executed")
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield used
    finally:
        sys.settrace(old)


def test_one_tib_scenario_with_the_oracle_finishes(tmp_path: Path) -> None:
    """The issue's scenario, as a user runs it (oracle on), in a subprocess that may take at most 60 s."""
    scenario = tmp_path / "tib.scenario"
    scenario.write_text("spawn A\nmmap A heap 0x10000000000 private anon\nwrite A heap 1\nfork A B\n"
                        "write B heap+0x1000 2\nread A heap expect=1\nread B heap expect=1\nexit B\ncheck\n")
    done = subprocess.run([sys.executable, "-m", "foliosim", "run", str(scenario)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "checked after every step, all held" in done.stdout


def test_every_operation_on_a_128_tib_mapping_costs_what_it_touches() -> None:
    m = Machine(KernelConfig(), MachineOptions(check=True, thp=frozenset({4, 9})))
    m.create_file("F", TIB, fill=3)  # a 1 TiB regular file: only what is read or written is stored
    # about 3.3 million lines (the pinned PMD THP is copied page by page at fork); one walk over the
    # PMD slots of the range alone would be 2**26 iterations
    with line_budget(10_000_000) as used:
        m.spawn("P")
        heap = m.mmap("P", HUGE - 8 * TIB)  # private anon, mTHP order 4 and PMD THPs allowed
        shared = m.mmap("P", TIB, shared=True)  # MAP_SHARED|MAP_ANONYMOUS: a 2**28-page shmem object
        fmap = m.mmap("P", TIB, file="F", shared=True)
        fpriv = m.mmap("P", TIB, file="F")
        assert min(heap, shared, fmap, fpriv) > 0
        m.write("P", heap, b"a")  # a PMD THP
        m.write("P", heap + (1 << 30) + 5 * PAGE_SIZE, b"b")  # an order-4 mTHP
        m.write("P", heap + HUGE - 9 * TIB - PAGE_SIZE, b"c")  # the last page
        m.write("P", shared + 12345 * PAGE_SIZE, b"s")
        m.write("P", fmap + 777 * PAGE_SIZE, b"f")
        m.write("P", fpriv + 9 * PAGE_SIZE, b"p")
        assert m.read("P", fpriv + 777 * PAGE_SIZE) == b"f"
        assert m.pin("P", "pin", heap + (1 << 30), 2 * PAGE_SIZE, write=True) == 2
        assert m.fork("P", "C") > 0
        m.write("C", heap + PAGE_SIZE, b"d")  # splits the child's PMD, copies a page
        assert m.read("P", heap + PAGE_SIZE) == b"\0"
        assert m.read("C", heap + HUGE - 9 * TIB - PAGE_SIZE) == b"c"
        assert m.read("C", shared + 12345 * PAGE_SIZE) == b"s"
        for advice in ("cold", "pageout", "dontfork", "dofork"):
            assert m.madvise("C", heap, HUGE - 8 * TIB, advice) == 0
        assert m.mprotect("C", heap, HUGE - 8 * TIB, True, False) == 0
        assert m.mprotect("C", heap, HUGE - 8 * TIB, True, True) == 0
        assert m.mremap("C", heap + TIB, TIB, heap + 2 * TIB) == heap + 2 * TIB
        assert m.munmap("C", heap + 4 * TIB, TIB) == 0
        assert m.madvise("C", heap, 2 * TIB, "dontneed") == -12  # the hole mremap left: -ENOMEM
        entries = pagemap_present(m, m.task("P").mm, heap >> PAGE_SHIFT, (heap + HUGE - 8 * TIB) >> PAGE_SHIFT)
        assert len(entries) == 3 * 512  # two PMD THPs, and the pinned one the fork split into PTEs
        assert smaps_rollup(m, m.task("P").mm).rss > 0
        assert m.check() == []
        m.unpin("pin")
        assert m.exit("C") == 0
        assert m.exit("P") == 0
    assert used[0] < 10_000_000


def test_pagemap_over_a_huge_range_prints_runs_of_absent_pages() -> None:
    text = ("spawn P\nmmap P A 0x10000000000 private anon\nwrite P A+0x3000 7\n"
            "pagemap P A 0x10000000000\npagemap P A 16K\n")
    with line_budget(400_000):
        result = run(text)
    assert result.error is None and result.violation is None
    whole, small = result.steps[-2].result, result.steps[-1].result
    assert whole == "0x10000000..0x10002000:- 0x10003000:f1[0] excl 0x10004000..0x1000ffff000:-"
    assert small == "0x10000000..0x10002000:- 0x10003000:f1[0] excl"


def _dense_isolation(m: Machine) -> list[str]:
    """The isolation check as it was: every page of every VMA."""
    problems = []
    for mm in m.mms.values():
        if mm.zapped:
            continue
        for vma in mm.vmas:
            for vpn in range(vma.start, vma.end):
                want = m.ref.expected(mm, vma, vpn)
                got = m.physical_content(mm, vma, vpn)
                if got != want:
                    what = "leak (sees data it must not)" if got != ZERO_PAGE else "lost write"
                    problems.append(f"isolation: {_who(m, mm)} at {vpn << PAGE_SHIFT:#x} reads "
                                    f"{describe_page(got)}, the reference model says {describe_page(want)}: {what}")
    return problems


def _small_machine(seed: int) -> Machine:
    rng = random.Random(seed)
    m = Machine(KernelConfig(pmd_order=4), MachineOptions(check=True, thp=frozenset({2, 4}),
                                                          fault_around_pages=4))
    m.create_file("F", 40 * PAGE_SIZE, order=2, fill=5)
    m.create_file("S", 24 * PAGE_SIZE, order=2, fill=6, shmem=True)
    m.spawn("P")
    regions = [m.mmap("P", 64 * PAGE_SIZE), m.mmap("P", 32 * PAGE_SIZE, shared=True),
               m.mmap("P", 40 * PAGE_SIZE, file="F", shared=True), m.mmap("P", 40 * PAGE_SIZE, file="F"),
               m.mmap("P", 24 * PAGE_SIZE, file="S", shared=True), m.mmap("P", 24 * PAGE_SIZE, file="S")]
    sizes = [64, 32, 40, 40, 24, 24]
    tasks = ["P"]
    for step in range(40):
        task = rng.choice(tasks)
        k = rng.randrange(len(regions))
        addr = regions[k] + rng.randrange(sizes[k]) * PAGE_SIZE
        what = rng.random()
        if what < 0.45:
            m.write(task, addr, bytes([rng.randrange(1, 255)]))
        elif what < 0.75:
            m.read(task, addr)
        elif what < 0.85 and len(tasks) < 4:
            tasks.append(f"T{step}")
            m.fork(task, tasks[-1])
        else:
            m.madvise(task, addr, PAGE_SIZE * rng.randrange(1, 4), rng.choice(["dontneed", "cold"]))
    return m


CORRUPTIONS = ("folio", "private", "disk", "shmem")


@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize("seed", range(4))
def test_sparse_isolation_check_reports_what_the_dense_one_reports(seed: int, kind: str) -> None:
    """Corrupt one page in a way the oracle must notice; both checks give the same reports, in order."""
    m = _small_machine(seed)
    assert _dense_isolation(m) == []
    problems: list[str] = []
    _check_isolation(m, problems)
    assert problems == []
    rng = random.Random(seed)
    bad = filled_page(0xEE)
    mm = m.task("P").mm
    if kind == "folio":  # a wrong page mapped: a leak
        vpn = rng.choice(sorted(v for v, pte in mm.ptes.items() if not pte.folio.is_zero))
        pte = mm.ptes[vpn]
        pte.folio.data[pte.page] = bad
    elif kind == "private":  # the reference moved on without the page: a lost write
        private = sorted(v for v in mm.ptes if (vma := mm.find_vma(v)) is not None and vma.is_cow)
        m.ref.private[mm.name][rng.choice(private)] = bad
    elif kind == "disk":  # a file page changed behind the (empty) cache
        m.files["F"].disk[rng.choice([i for i in range(40) if i not in m.files["F"].cache])] = bad
    else:  # a shmem page the reference wrote and the page cache did not
        m.ref.files["S"][rng.randrange(24)] = bad
    dense = _dense_isolation(m)
    sparse: list[str] = []
    _check_isolation(m, sparse)
    assert dense, "the corruption was not visible"
    assert sparse == dense


def test_sparse_pages_store_only_what_differs() -> None:
    from foliosim.vm.memory import SparsePages

    pages = SparsePages(1 << 35, filled_page(3))
    assert len(pages) == 1 << 35 and pages[(1 << 35) - 1] == filled_page(3)
    pages[7] = filled_page(9)
    pages[8] = filled_page(3)  # the default again: nothing stored
    assert pages.stored() == [7]
    copy = pages.copy()
    pages[7] = filled_page(3)
    assert pages.stored() == [] and copy.stored() == [7]
    with pytest.raises(IndexError):
        pages[1 << 35]
