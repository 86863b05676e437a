"""Run traces of real programs: what decides the VMAs the simulator gets, hence the folio sizes and the fork copies.

Each case is what a real program recorded on the project's machine showed, reduced to a synthetic trace: thread
stacks (MAP_STACK) get small folios; a library's ``r--`` and ``r-x`` segments and its relocated data made
read-only stay apart (VM_EXEC, VM_ACCOUNT), so fork copies no file page tables the kernel did not; a forked VMA
with an anon_vma does not merge with a neighbour without one; MAP_NORESERVE memory merges only with its kind;
prctl(PR_SET_THP_DISABLE) holds for the process, its children and across execve; a snapshot with ``scope:
"anon"`` also compares the anonymous copies in private file mappings.
"""

from __future__ import annotations

from typing import Any

from foliosim.live.snapcheck import C_DECISION, C_RACE
from foliosim.vm.machine import Machine
from foliosim.workloads.runtrace import RunTrace, prepare
from tests.test_runtrace import BASE, MAP_PRIVATE_ANON, PAGE, RW, Trace

PROT_READ, PROT_EXEC, PROT_NONE = 1, 4, 0
MAP_PRIVATE, MAP_FIXED, MAP_NORESERVE, MAP_STACK = 0x02, 0x10, 0x4000, 0x20000
LIB = {"dev": "fe:00", "ino": 4242, "path": "/usr/lib/libx.so"}


def _vmas(m: Machine | None, task: str, lo: int, hi: int) -> list[tuple[int, int]]:
    assert m is not None
    return [(v.start - (lo >> 12), v.end - (lo >> 12)) for v in m.task(task).mm.vmas
            if v.end > lo >> 12 and v.start < hi >> 12]


def test_thread_stacks_get_small_folios() -> None:
    """MAP_STACK is VM_NOHUGEPAGE (since Linux 6.7): pthread stacks are order 0 even with 16K/64K always."""
    t = Trace(anon={"2": "always", "4": "always"}).start(10)
    t.mmap(10, BASE, 64, flags=MAP_PRIVATE_ANON | MAP_STACK).mmap(10, BASE + 0x200000, 64)
    t.fault(10, BASE + 63 * PAGE).fault(10, BASE + 0x200000)
    run = t.run()
    assert run.allocated == {("anon", 0): 1, ("anon", 4): 1}


def _library(t: Trace, pid: int) -> Trace:
    """ld.so's way: the whole file read-only, then the text (r-x) and the data (rw-) over it, relocations written
    into the data, whose first page is then made read-only (RELRO)."""
    t.mmap(pid, BASE, 12, prot=PROT_READ, flags=MAP_PRIVATE, file=LIB)
    t.mmap(pid, BASE + 4 * PAGE, 4, prot=PROT_READ | PROT_EXEC, flags=MAP_PRIVATE | MAP_FIXED, file=LIB,
           offset=4 * PAGE)
    t.mmap(pid, BASE + 8 * PAGE, 4, prot=RW, flags=MAP_PRIVATE | MAP_FIXED, file=LIB, offset=8 * PAGE)
    t.fault(pid, BASE + 8 * PAGE).fault(pid, BASE + 9 * PAGE)  # relocations: anonymous copies
    return t.call(pid, "mprotect", [BASE + 8 * PAGE, PAGE, PROT_READ])


def test_library_segments_stay_apart_and_fork_copies_only_the_written_ones() -> None:
    t = _library(Trace().start(10), 10)
    t.fault(10, BASE + 2 * PAGE, write=False).fault(10, BASE + 5 * PAGE, write=False)
    t.fork(10, 11).fault(11, BASE + 2 * PAGE, write=False).fault(11, BASE + 9 * PAGE, write=False)
    run = t.run()
    # r-- [0,4) | r-x [4,8) | r-- RELRO [8,9) (VM_ACCOUNT: it was writable) | rw- [9,12)
    assert _vmas(run.machine, "p10", BASE, BASE + 12 * PAGE) == [(0, 4), (4, 8), (8, 9), (9, 12)]
    # the child's read of the rodata is a fault (no anon_vma there: fork copied no page table), its read of the
    # written data is not (that VMA's page tables were copied)
    assert run.faults == {"taken": 5, "read of a page already present": 1}


def test_a_forked_vma_with_an_anon_vma_does_not_merge_with_one_without() -> None:
    """A reservation made writable piece by piece (PartitionAlloc, V8): in the child the next piece stays a VMA
    of its own, so a 64K fault there cannot take a folio across the boundary; in the parent it merges."""
    t = Trace(anon={"2": "always", "4": "always"}).start(10)
    t.mmap(10, BASE, 64, prot=PROT_NONE)
    t.call(10, "mprotect", [BASE, 20 * PAGE, RW]).fault(10, BASE)  # a 64K folio at [0, 16)
    t.fork(10, 11)
    t.call(11, "mprotect", [BASE + 20 * PAGE, 20 * PAGE, RW]).fault(11, BASE + 24 * PAGE)
    t.call(10, "mprotect", [BASE + 20 * PAGE, 20 * PAGE, RW]).fault(10, BASE + 24 * PAGE)
    run = t.run()
    assert _vmas(run.machine, "p11", BASE, BASE + 64 * PAGE) == [(0, 20), (20, 40), (40, 64)]
    assert _vmas(run.machine, "p10", BASE, BASE + 64 * PAGE) == [(0, 40), (40, 64)]
    assert run.allocated[("anon", 2)] == 1, "the child's fault at page 24: 16K, [16, 32) crosses its VMA's start"
    assert run.allocated[("anon", 4)] == 2, "the parent's faults at 0 and 24 (merged VMA): 64K each"


def test_noreserve_memory_merges_only_with_its_kind() -> None:
    t = Trace().start(10)
    t.mmap(10, BASE, 16).mmap(10, BASE + 16 * PAGE, 16, flags=MAP_PRIVATE_ANON | MAP_NORESERVE)
    t.mmap(10, BASE + 32 * PAGE, 16, flags=MAP_PRIVATE_ANON | MAP_NORESERVE)
    run = t.run()
    assert _vmas(run.machine, "p10", BASE, BASE + 48 * PAGE) == [(0, 16), (16, 48)]


def test_prctl_thp_disable_holds_for_the_process_its_children_and_across_exec() -> None:
    t = Trace(anon={"4": "always"}).start(10)
    t.call(10, "prctl", [41, 1, 0, 0, 0]).mmap(10, BASE, 64).fault(10, BASE)
    t.call(10, "madvise", [BASE, 64 * PAGE, 14])  # MADV_HUGEPAGE does not override it
    t.fault(10, BASE + 16 * PAGE)
    t.fork(10, 11).ev("exec", 11, path="/bin/prog").mmap(11, BASE + 0x200000, 64).fault(11, BASE + 0x200000)
    t.call(10, "prctl", [0x53564D41, 0, BASE, PAGE, 0], vma_name="x").call(10, "prctl", [67, 1, 0, 0, 0])
    run = t.run()
    assert run.allocated == {("anon", 0): 3}
    assert run.convert.unexpressed["prctl(PR_SET_MEMORY_MERGE): KSM"] == 1
    assert sum(n for k, n in run.convert.approximated.items() if "PR_SET_VMA" in k) == 1


def _copy_snapshot(scope: str | None, pages: list[list[Any]]) -> Trace:
    t = Trace(check_live=True).start(10)
    t.mmap(10, BASE, 4, prot=RW, flags=MAP_PRIVATE, file=LIB).fault(10, BASE + PAGE)
    extra = {"scope": scope} if scope else {}
    t.ev("snapshot", 10, at="exit", pages=pages, folios={"4096": {"order": 0, "refcount": 1}}, mm_id=None, **extra)
    return t.exit(10)


def test_a_snapshot_with_scope_anon_compares_the_copies_in_private_file_mappings() -> None:
    copy = [[BASE + PAGE, 4096, 4096, 0, 1, True]]
    check = _copy_snapshot("anon", copy).run().check
    assert check is not None and not check.causes, [d.describe() for d in check.examples]
    assert check.fields["present"].agreed == check.fields["precise mapcount"].agreed == 1
    assert check.fields["refcount"].agreed == 1 and check.file_anon_pages == 0
    missing = _copy_snapshot("anon", []).run().check
    assert missing is not None and dict(missing.causes) == {("present", "page reclaimed or not present live"): 1}
    old = _copy_snapshot(None, []).run().check
    assert old is not None and old.compared == 0 and old.file_anon_pages == 1, "without scope: counted apart"


def _race(gap_us: float) -> Trace:
    """Parent and child write the page they share, ``gap_us`` apart; the kernel let the parent copy first (its
    exit snapshot shows a new PFN there), the trace has the child's fault first."""
    t = Trace(check_live=True).start(10).mmap(10, BASE, 1).fault(10, BASE)
    t.fork(10, 11)
    t.ev("snapshot", 10, at="fork", pages=[[BASE, 0x1000, 0x1000, 0, 2, False]],
         folios={str(0x1000): {"order": 0, "refcount": 2}}, mm_id=None)
    t.fault(11, BASE)
    t.t += gap_us
    t.fault(10, BASE)
    t.ev("snapshot", 10, at="exit", pages=[[BASE, 0x2000, 0x2000, 0, 1, True]],
         folios={str(0x2000): {"order": 0, "refcount": 1}}, mm_id=None)
    return t.exit(10).exit(11)


def test_two_processes_faulting_on_a_shared_page_at_once_is_classified_as_a_race() -> None:
    close = _race(5.0).run().check
    assert close is not None and dict(close.causes) == {("folio identity", C_RACE): 1}
    assert close.racy_heads == {0x1000}, "the live folio bound to the raced one stays suspect after it is freed"
    apart = _race(5000.0).run().check
    assert apart is not None and dict(apart.causes) == {("folio identity", C_DECISION): 1}


def test_a_fault_inside_another_process_exit_teardown_is_a_race() -> None:
    """The exit is dated at the end of its MM's teardown (``t_begin`` its start): a write of the parent inside it
    may have found the page still shared (a copy) or not (a reuse)."""
    t = Trace().start(10).mmap(10, BASE, 1).fault(10, BASE).fork(10, 11)
    t.fault(10, BASE)  # inside the child's teardown [t_begin, t] below
    line = len(t.events) + 1  # the fault's line (the header is line 1)
    t.ev("exit", 11, group=True, code=0, t_begin=t.t - 0.5)
    t.fault(10, BASE + PAGE, write=False)
    conv = prepare(RunTrace("race", text=t.text()))
    assert conv.racy == {line}
