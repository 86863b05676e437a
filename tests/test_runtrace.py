"""Run traces (docs/run-trace.md): reading and checking them, their steps, the simulation and the live comparison.

The traces here are synthetic: what a recorder would write for a program whose faults are known exactly.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from foliosim.live.tracesim import TraceRun, simulate
from foliosim.vm.events import CowRule
from foliosim.workloads.runtrace import (
    FAULT_EXEC,
    RunTrace,
    RunTraceError,
    prepare,
    read_workload_text,
    workload_file_steps,
)

FOLIOSIM = [sys.executable, "-m", "foliosim"]
BASE = 0x7F0000000000  # 2 MiB aligned
PAGE = 4096
MAP_PRIVATE_ANON = 0x22
RW = 3


class Trace:
    """Writes a run trace line by line (one clock: t goes up by one per event)."""

    def __init__(self, anon: dict[str, str] | None = None, enabled: str = "madvise", check_live: bool = False) -> None:
        orders = {str(o): "never" for o in range(2, 9)}
        orders["9"] = "inherit"
        orders.update(anon or {})
        self.header: dict[str, Any] = {
            "format": "foliosim-run-trace", "version": 1, "command": ["prog"], "kernel": "6.18.0", "page_size": 4096,
            "clock": "CLOCK_MONOTONIC", "start_us": 0.0,
            "thp": {"enabled": enabled, "shmem_enabled": "never", "anon": orders, "shmem": {}},
            "thp_set": {}, "recorder": {"mechanism": "synthetic", "slowdown": None, "wall_s": 0.0, "lost_events": 0},
            "check_live": check_live}
        self.events: list[dict[str, Any]] = []
        self.t = 0.0

    def ev(self, ev: str, pid: int, tid: int | None = None, **fields: Any) -> Trace:
        self.t += 1.0
        self.events.append({"t": self.t, "ev": ev, "pid": pid, "tid": pid if tid is None else tid, **fields})
        return self

    def start(self, pid: int) -> Trace:
        return self.ev("spawn", pid, path="/bin/prog", argv=["prog"]).ev("exec", pid, path="/bin/prog")

    def mmap(self, pid: int, addr: int, pages: int, prot: int = RW, flags: int = MAP_PRIVATE_ANON,
             file: dict[str, Any] | None = None, offset: int = 0, tid: int | None = None) -> Trace:
        extra = {"file": file} if file is not None else {}
        return self.ev("syscall", pid, tid, name="mmap", args=[0, pages * PAGE, prot, flags, 3 if file else -1,
                                                                offset], ret=addr, **extra)

    def call(self, pid: int, name: str, args: list[int], ret: int = 0, tid: int | None = None, **extra: Any) -> Trace:
        return self.ev("syscall", pid, tid, name=name, args=args, ret=ret, **extra)

    def fault(self, pid: int, addr: int, write: bool = True, tid: int | None = None) -> Trace:
        return self.ev("fault", pid, tid, addr=addr, write=write, ip=0x401000, error_code=6 if write else 4)

    def fork(self, pid: int, child: int, thread: bool = False, tid: int | None = None) -> Trace:
        return self.ev("fork", pid, tid, child_pid=pid if thread else child, child_tid=child,
                       clone_flags=0x50F00 if thread else 0x11, thread=thread, vfork=False)

    def exit(self, pid: int, tid: int | None = None, group: bool = True) -> Trace:
        return self.ev("exit", pid, tid, group=group, code=0)

    def text(self) -> str:
        return "\n".join(json.dumps(x) for x in [self.header, *self.events]) + "\n"

    def run(self, **kw: Any) -> TraceRun:
        return simulate(RunTrace("test.trace", text=self.text()), **kw)


def cow(run: TraceRun) -> dict[tuple[str, str], int]:
    return dict(run.cow)


# ------------------------------------------------------------------------------------- decisions
@pytest.mark.parametrize(("n", "m", "k"), [(8, 3, 5), (20, 20, 1)])
def test_fork_child_writes_exits_then_parent_reuses_small_pages(n: int, m: int, k: int) -> None:
    """Writes N pages, forks, the child writes M and exits, the parent writes K: N + M + K faults; the child's M
    copy (refcount 2), the parent's K reuse (refcount 1 once the child is gone)."""
    t = Trace().start(10).mmap(10, BASE, n)
    for i in range(n):
        t.fault(10, BASE + i * PAGE)
    t.fork(10, 11)
    for i in range(m):
        t.fault(11, BASE + i * PAGE)
    t.exit(11)
    for i in range(k):
        t.fault(10, BASE + i * PAGE)
    t.exit(10)
    run = t.run()
    assert run.recorded_faults == n + m + k and run.faults_taken == n + m + k
    assert cow(run) == {(CowRule.SMALL_EXTRA_REFS.value, "copy"): m, (CowRule.SMALL_REFCOUNT_ONE.value, "reuse"): k}
    assert run.allocated == {("anon", 0): n + m}
    assert run.tasks == 2 and run.convert.processes == 2 and not run.alive


def test_mthp_fork_child_copies_parent_reuses_page_by_page() -> None:
    """16K mTHP "always": four order-2 folios; the child's writes copy (maybe mapped shared), after its exit the
    parent's writes reuse one page per fault (large: exclusive); a second write is not a fault."""
    t = Trace(anon={"2": "always"}).start(10).mmap(10, BASE, 16)
    for i in range(0, 16, 4):
        t.fault(10, BASE + i * PAGE)
    t.fork(10, 11).fault(11, BASE).fault(11, BASE + 5 * PAGE).exit(11)
    for i in range(8):
        t.fault(10, BASE + i * PAGE)
    t.fault(10, BASE)  # already reused: writable, the kernel would not fault here
    t.exit(10)
    run = t.run()
    assert run.allocated[("anon", 2)] == 4 and run.allocated[("anon", 0)] == 2
    assert cow(run) == {(CowRule.LARGE_MAYBE_SHARED.value, "copy"): 2, (CowRule.LARGE_EXCLUSIVE.value, "reuse"): 8}
    assert run.faults == {"taken": 4 + 2 + 8, "already mapped writable": 1}


def test_madvise_hugepage_enables_the_madvise_orders_only_there() -> None:
    """64K "madvise": a plain VMA gets small folios, one after MADV_HUGEPAGE order 4 (the recorded settings)."""
    t = Trace(anon={"4": "madvise"}).start(10).mmap(10, BASE, 32).mmap(10, BASE + (1 << 21), 32)
    t.call(10, "madvise", [BASE + (1 << 21), 32 * PAGE, 14])
    t.fault(10, BASE).fault(10, BASE + (1 << 21))
    run = t.run()
    assert run.allocated == {("anon", 0): 1, ("anon", 4): 1}


def test_mremap_dontneed_and_partial_munmap_of_mthp() -> None:
    """64K mTHP: mremap moves a folio's PTEs (no fault at the new place), MADV_DONTNEED of part of a folio and a
    fault there (order 0: the aligned 64K range is not empty), a partial munmap of another folio."""
    t = Trace(anon={"4": "always"}).start(10).mmap(10, BASE, 64)
    for i in range(0, 64, 16):
        t.fault(10, BASE + i * PAGE)
    new = BASE + (4 << 21)
    t.call(10, "mremap", [BASE, 16 * PAGE, 16 * PAGE, 3, new], ret=new)
    t.fault(10, new + 3 * PAGE)  # the moved PTE is writable: not a fault for the simulator
    t.call(10, "madvise", [BASE + 16 * PAGE, 4 * PAGE, 4])
    t.fault(10, BASE + 17 * PAGE)
    t.call(10, "munmap", [BASE + 32 * PAGE, 8 * PAGE])
    t.fault(10, BASE + 33 * PAGE)  # unmapped: the kernel sends SIGSEGV
    run = t.run()
    assert run.allocated == {("anon", 4): 4, ("anon", 0): 1}
    assert run.faults == {"taken": 5, "already mapped writable": 1,
                          FAULT_EXEC: 1}
    m = run.machine
    assert m is not None
    mm = m.task("p10").mm
    moved = m.lookup(mm, (new >> 12) + 3)
    assert moved is not None and moved[0].order == 4 and moved[1] == 3
    assert m.lookup(mm, (BASE >> 12)) is None
    part = m.lookup(mm, (BASE >> 12) + 40)
    assert part is not None and part[0].order == 4 and part[0].deferred_split, "partially unmapped: split queued"
    assert run.rejected == {}


def test_failed_calls_change_nothing_and_unexpressed_calls_are_counted() -> None:
    t = Trace().start(10).mmap(10, BASE, 4)
    t.call(10, "munmap", [BASE, 4 * PAGE], ret=-22)  # failed: the mapping stays
    t.call(10, "madvise", [BASE, 4 * PAGE, 8])  # MADV_FREE
    t.call(10, "madvise", [BASE, 4 * PAGE, 12])  # MADV_MERGEABLE (KSM)
    t.call(10, "madvise", [BASE, 4 * PAGE, 3])  # MADV_WILLNEED
    t.call(10, "remap_file_pages", [BASE, 4 * PAGE, 0, 0, 0])
    t.call(10, "mbind", [BASE, 4 * PAGE, 0, 0, 0, 0])
    t.mmap(10, BASE + (1 << 21), 512, flags=MAP_PRIVATE_ANON | 0x40000)  # MAP_HUGETLB
    t.fault(10, BASE).fault(10, BASE + (1 << 21)).fault(10, 0x1000)
    t.fault(10, BASE, write=False)  # present: the simulator takes no fault
    run = t.run()
    c = run.convert
    assert c.failed == {"munmap": 1}
    assert c.unexpressed == {"madvise(MADV_MERGEABLE)": 1, "remap_file_pages": 1, "mmap(MAP_HUGETLB)": 1}
    assert c.ignored == {"madvise(MADV_WILLNEED)": 1, "mbind": 1}
    assert list(c.approximated) == ["madvise(MADV_FREE): no reclaim here, the pages stay mapped"]
    assert run.faults == {"taken": 1, "read of a page already present": 1,
                          "in a mapping the simulator cannot express (hugetlb)": 1,
                          FAULT_EXEC: 1}
    assert sum(run.faults.values()) == run.recorded_faults == 4


def test_threads_exec_by_a_thread_and_a_child_seen_before_its_fork() -> None:
    """A thread shares the MM; execve by a non-leader thread takes over the pid (later events say tid = pid);
    a child's events recorded before its fork event are held until the fork."""
    t = Trace().start(10).mmap(10, BASE, 8)
    t.fork(10, 12, thread=True).fault(10, BASE, tid=12)
    t.fault(20, BASE + PAGE)  # the child ran before the parent's fork event was written
    t.fork(10, 20)
    t.ev("exec", 10, tid=12, path="/bin/other")
    t.mmap(10, BASE, 2).fault(10, BASE + PAGE)
    t.exit(10).exit(20)
    run = t.run()
    assert run.convert.threads == 1 and run.convert.processes == 2
    assert run.faults == {"taken": 3}
    assert run.rejected == {} and run.tasks == 3


def test_file_mappings_share_the_page_cache_by_device_and_inode() -> None:
    """Two processes map the same (device, inode) at other addresses and offsets: one simulator file sized to
    cover every page mapped; a page read by both is one page-cache folio mapped twice."""
    libc = {"dev": "8:1", "ino": 42, "path": "/usr/lib/libc.so.6", "shmem": False}
    other = {"dev": "8:2", "ino": 42, "path": "/usr/lib/libc.so.6", "shmem": False}  # same inode, other device
    t = Trace().start(10).mmap(10, BASE, 8, prot=1, flags=2, file=libc, offset=4 * PAGE)
    t.start(20).mmap(20, BASE + (1 << 30), 16, prot=1, flags=2, file=libc)
    t.mmap(20, BASE, 1, prot=1, flags=2, file=other)
    t.fault(10, BASE, write=False).fault(20, BASE + (1 << 30) + 4 * PAGE, write=False)
    conv = prepare(RunTrace("x", text=t.text()))
    files = {s.args[0]: s.args[1] for s in conv.steps() if s.verb == "file"}
    assert files == {"/usr/lib/libc.so.6 [8:1:42]": 16, "/usr/lib/libc.so.6 [8:2:42]": 1}
    run = simulate(conv.trace, conversion=conv)
    m = run.machine
    assert m is not None
    a = m.lookup(m.task("p10").mm, BASE >> 12)
    b = m.lookup(m.task("p20").mm, ((BASE + (1 << 30)) >> 12) + 4)
    assert a is not None and b is not None and a[0] is b[0] and a[1] == b[1]
    assert a[0].core().page_mapcount[a[1]] + 1 == 2


def test_brk_and_populate() -> None:
    t = Trace().start(10)
    heap = 0x555555559000
    t.call(10, "brk", [0], ret=heap).call(10, "brk", [heap + 5 * PAGE], ret=heap + 5 * PAGE)
    t.fault(10, heap + 4 * PAGE).call(10, "brk", [heap + 2 * PAGE], ret=heap + 2 * PAGE)
    t.fault(10, heap + 4 * PAGE)  # beyond the shrunk break
    t.mmap(10, BASE, 3, flags=MAP_PRIVATE_ANON | 0x8000)  # MAP_POPULATE: write-faulted by the kernel
    t.fault(10, BASE + PAGE)  # cannot happen after populate; the simulator does not take it either
    t.mmap(10, BASE + (1 << 21), 8).call(10, "mlock", [BASE + (1 << 21) + 100, 2 * PAGE])  # pages 0..2
    t.call(10, "mlock2", [BASE + (1 << 21) + 4 * PAGE, PAGE, 1])  # MLOCK_ONFAULT: nothing now
    t.call(10, "mlockall", [2]).mmap(10, BASE + (2 << 21), 2)  # MCL_FUTURE: later mappings are populated
    run = t.run()
    assert run.convert.populated == 3 + 3 + 2
    assert run.faults == {"taken": 1, FAULT_EXEC: 1, "already mapped writable": 1}
    assert run.allocated == {("anon", 0): 4 + 3 + 2}


def test_io_uring_pin_makes_fork_copy_early_and_unregister_unpins() -> None:
    """An io_uring registered buffer is a R/W long-term pin: the child gets its copy at fork (no fault)."""
    t = Trace().start(10).mmap(10, BASE, 2).fault(10, BASE).fault(10, BASE + PAGE)
    t.call(10, "io_uring_register", [5, 0, 0x1000, 1], buffers=[[BASE, PAGE]])
    t.fork(10, 11).fault(11, BASE).fault(11, BASE + PAGE)
    t.call(10, "io_uring_register", [5, 1, 0, 0])
    run = t.run()
    m = run.machine
    assert m is not None
    assert m.counters["fork early copy"] == 1
    assert cow(run) == {(CowRule.SMALL_EXTRA_REFS.value, "copy"): 1}, "page 0 already the child's own"
    assert run.faults == {"taken": 3, "already mapped writable": 1}
    assert not m.gup, "unregistered"


def test_exec_maps_and_stack_growth() -> None:
    """With the mappings execve set up (``maps``), stack faults are replayed and a fault below the stack grows it."""
    stack_top = 0x7FFE00000000
    maps = [[stack_top - 33 * PAGE, stack_top, "rw-p", 0, "00:00", 0, "[stack]"],
            [0x400000, 0x402000, "r-xp", 0, "8:1", 7, "/bin/prog"],
            [0x7FFF00000000, 0x7FFF00002000, "r-xp", 0, "00:00", 0, "[vdso]"]]
    t = Trace().ev("spawn", 10, path="/bin/prog", argv=["prog"]).ev("exec", 10, path="/bin/prog", maps=maps)
    t.fault(10, stack_top - PAGE).fault(10, stack_top - 40 * PAGE).fault(10, 0x400000, write=False)
    t.fault(10, 0x7FFF00000000, write=False)
    run = t.run()
    assert run.faults == {"taken": 3, "in a mapping the simulator cannot express (special mapping [vdso])": 1}
    m = run.machine
    assert m is not None
    vma = m.task("p10").mm.find_vma((stack_top >> 12) - 40)
    assert vma is not None and vma.end == stack_top >> 12, "the grown stack merged into one VMA"


def test_without_exec_maps_faults_outside_are_counted_as_such() -> None:
    run = Trace().start(10).fault(10, 0x7FFE00000000 - PAGE).run()
    assert run.faults == {FAULT_EXEC: 1}


# ------------------------------------------------------------------------------------- live snapshots
def _pages(first_pfn: int, n: int, order: int, mapcount: int, exclusive: bool, base: int = BASE,
           start: int = 0) -> list[list[Any]]:
    nr = 1 << order
    return [[base + (start + i) * PAGE, first_pfn + i, first_pfn + (i // nr) * nr, order, mapcount, exclusive]
            for i in range(n)]


def _folio(refcount: int, large: int, nr_mapped: int, ids: list[int], counts: list[int], shared: bool,
           order: int = 2) -> dict[str, Any]:
    return {"order": order, "refcount": refcount, "large_mapcount": large, "entire_mapcount": -1, "pincount": 0,
            "nr_pages_mapped": nr_mapped, "mm_ids": ids, "mm_id_mapcount": counts, "shared_bit": shared}


def _snapshot_trace(parent_exit_pages: list[list[Any]] | None = None,
                    collapsed: tuple[int | None, int | None, int | None] | None = None) -> Trace:
    """16K mTHP: 4 order-2 folios (PFN 0x1000..0x100f), fork, the child copies pages 0 and 5 and exits, the
    parent writes pages 0..7; snapshots at the fork (parent), the child's exit and the parent's exit, with the
    fields the kernel shows in that case (raw values as struct folio keeps them). ``collapsed``: each snapshot's
    khugepaged_collapsed (absent when None)."""
    t = Trace(anon={"2": "always"}, check_live=True).start(10).mmap(10, BASE, 16)
    for i in range(0, 16, 4):
        t.fault(10, BASE + i * PAGE)
    t.fork(10, 11)
    folios = {str(0x1000 + 4 * i): _folio(8, 7, 4, [5, 7], [3, 3], True) for i in range(4)}
    t.ev("snapshot", 10, at="fork", pages=_pages(0x1000, 16, 2, 2, False), folios=folios, mm_id=5)
    t.fault(11, BASE).fault(11, BASE + 5 * PAGE)
    child = _pages(0x1000, 16, 2, 2, False)
    child[0] = [BASE, 0x2000, 0x2000, 0, 1, True]
    child[5] = [BASE + 5 * PAGE, 0x2001, 0x2001, 0, 1, True]
    folios = {str(0x1000): _folio(7, 6, 4, [5, 7], [3, 2], True), str(0x1004): _folio(7, 6, 4, [5, 7], [3, 2], True),
              str(0x1008): _folio(8, 7, 4, [5, 7], [3, 3], True), str(0x100C): _folio(8, 7, 4, [5, 7], [3, 3], True),
              str(0x2000): {"order": 0, "refcount": 1}, str(0x2001): {"order": 0, "refcount": 1}}
    t.ev("snapshot", 11, at="exit", pages=child, folios=folios, mm_id=7)
    t.exit(11)
    for i in range(8):
        t.fault(10, BASE + i * PAGE)
    folios = {str(0x1000 + 4 * i): _folio(4, 3, 4, [5, 0], [3, -1], False) for i in range(4)}
    pages = parent_exit_pages if parent_exit_pages is not None else _pages(0x1000, 16, 2, 1, True)
    t.ev("snapshot", 10, at="exit", pages=pages, folios=folios, mm_id=5)
    if collapsed is not None:
        for snap, count in zip([e for e in t.events if e["ev"] == "snapshot"], collapsed, strict=True):
            snap["khugepaged_collapsed"] = count
    return t.exit(10)


def test_snapshots_agree_fully_when_the_kernel_did_what_the_model_says() -> None:
    run = _snapshot_trace().run()
    check = run.check
    assert check is not None and check.snapshots == 3
    assert not check.causes and not check.examples, [d.describe() for d in check.examples]
    assert check.compared == check.agreed > 0
    assert check.fields["slot 1 MM"].not_observed == 4, "the child's MM id was unknown at the fork snapshot"
    assert check.fields["slot 1 MM"].compared == 8  # child exit (4) + parent exit (4: slot free, "-")
    assert check.fields["folio identity"].agreed == 16 + 16 + 16
    assert check.fields["shared bit"].compared == 12


def test_snapshot_disagreements_are_classified() -> None:
    pages = _pages(0x1000, 8, 2, 1, True)  # pages 0..7 as before
    pages += [[BASE + (8 + i) * PAGE, 0x3000 + i, 0x3000 + i, 0, 1, True] for i in range(4)]  # order 0 live
    pages += [[BASE + 13 * PAGE, 0x100D, 0x100C, 2, 1, True]]  # 12, 14, 15 reclaimed
    pages += [[0x7FFE00000000 - PAGE, 0x4000, 0x4000, 0, 1, True]]  # the stack: not described by the trace
    run = _snapshot_trace(pages).run()
    check = run.check
    assert check is not None
    causes = dict(check.causes)
    assert causes[("folio order", "the kernel fell back to a smaller folio")] == 4
    assert causes[("present", "page reclaimed or not present live")] == 3
    assert causes[("present", "in a mapping the trace does not describe (set up by execve, or not expressible)")] == 1
    assert causes.get(("precise mapcount", "follows a folio-order difference"), 0) == 0, "mapcount 1 either way"
    assert 0 < check.agreed < check.compared


def test_khugepaged_collapses_during_the_recording_are_said_beside_disagreements() -> None:
    from foliosim.report.runtrace import summary_lines

    pages = _pages(0x1000, 8, 2, 1, True) + [[BASE + (8 + i) * PAGE, 0x3000 + i, 0x3000 + i, 0, 1, True]
                                             for i in range(8)]
    for collapsed, disagreeing, said_in_header, said_by_agreement in [
            (3, pages, True, True), (3, None, True, False), (0, pages, False, False), (None, pages, False, False)]:
        t = _snapshot_trace(disagreeing)
        t.header["recorder"]["khugepaged_collapsed"] = collapsed
        lines = summary_lines(t.run())
        assert ("khugepaged collapsed 3 huge page(s) on the machine meanwhile" in lines[0]) == said_in_header
        note = [line for line in lines if line.startswith("  khugepaged collapsed 3 huge page(s)")]
        assert len(note) == said_by_agreement, (collapsed, lines)
        if said_by_agreement:
            assert lines.index(note[0]) > next(i for i, line in enumerate(lines) if line.startswith("live agreement"))


def _compact(t: Trace) -> str:
    """The trace as the recorder writes it (no spaces): its snapshot lines are read in bulk."""
    return "\n".join(json.dumps(x, separators=(",", ":")) for x in [t.header, *t.events]) + "\n"


@pytest.mark.parametrize("compact", [False, True])
def test_each_snapshot_places_khugepaged_collapses_among_the_disagreements(compact: bool) -> None:
    """The snapshots' khugepaged counts (since the recording began) split the disagreeing fields into those in
    snapshots after the machine's first collapse (may be its work) and those before it (are not), in the summary,
    per snapshot in the JSON, and the same whether the snapshot lines are read in bulk or by json."""
    from foliosim.report.runtrace import summary_lines

    wrong = _pages(0x1000, 8, 2, 1, True) + [[BASE + (8 + i) * PAGE, 0x3000 + i, 0x3000 + i, 0, 1, True]
                                             for i in range(8)]  # only the parent's exit snapshot disagrees
    cases = [((0, 2, 5), "from the snapshot at line"), ((0, 0, 1), "from the snapshot at line"),
             ((0, 0, 0), "had collapsed no huge page"), ((None, None, 0), "had collapsed no huge page"),
             ((0, 0, None), "had collapsed no huge page")]
    for counts, said in cases:
        t = _snapshot_trace(wrong, counts)
        t.header["recorder"]["khugepaged_collapsed"] = 9  # the whole run's count: the snapshots' say more
        run = simulate(RunTrace("t.trace", text=_compact(t) if compact else t.text()))
        check = run.check
        assert check is not None
        assert [s.get("khugepaged_collapsed") for s in check.per_snapshot] == list(counts)
        differ = check.compared - check.agreed
        last = check.per_snapshot[-1]
        assert differ == last["compared"] - last["agreed"] > 0
        notes = [line for line in summary_lines(run) if line.startswith("  khugepaged ")]
        assert len(notes) == 1 and said in notes[0], (counts, notes)
        if counts[1] == 2:  # the first collapse before the child's exit snapshot
            line = check.per_snapshot[1]["line"]
            assert f"at line {line} on (5 by the last snapshot)" in notes[0]
            assert (f"Disagreeing fields in snapshots from there on, which may be its work: {differ}; in earlier "
                    "snapshots, which are not: 0") in notes[0]
        if counts == (0, 0, 1):
            assert f"at line {check.per_snapshot[2]['line']} on (1 by the last snapshot)" in notes[0]
        if counts[2] == 0:
            assert f"none of the disagreeing fields ({differ}) is its work" in notes[0]
        assert ("could not read the count" in notes[0]) == (counts[2] is None)
        if counts[2] is None:
            assert f"which are not its work: 0; in snapshots that could not read the count: {differ}" in notes[0]
    agreeing = simulate(RunTrace("t.trace", text=_snapshot_trace(None, (0, 1, 2)).text()))
    assert not [line for line in summary_lines(agreeing) if "khugepaged collapsed huge" in line]


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("value", [-1, "3", True, 1.5, [1]])
def test_a_bad_snapshot_khugepaged_count_names_the_line_and_field(value: Any, compact: bool) -> None:
    t = _snapshot_trace(None, (0, value, 0))
    line = 1 + next(i for i, e in enumerate(t.events) if e["ev"] == "snapshot" and e["at"] == "exit") + 1
    with pytest.raises(RunTraceError) as err:
        prepare(RunTrace("t.trace", text=_compact(t) if compact else t.text()))
    assert f"line {line} (snapshot): field 'khugepaged_collapsed' must be a count" in str(err.value)


# ------------------------------------------------------------------------------------- malformed traces
GOOD = _snapshot_trace().text()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda lines: lines[1:], "line 1: not a run trace"),
    (lambda lines: [lines[0].replace('"version": 1', '"version": 2'), *lines[1:]], "version 2 is not supported"),
    (lambda lines: [*lines[:5], lines[5][:30]], "line 6: not JSON"),
    (lambda lines: [*lines[:3], lines[3].replace('"ev": "syscall"', '"ev": "sycall"'), *lines[4:]],
     "line 4: unknown event 'ev': 'sycall'"),
    (lambda lines: [*lines[:4], lines[4].replace('"addr": ', '"adr": '), *lines[5:]],
     "line 5 (fault): missing field 'addr'"),
    (lambda lines: [*lines[:4], lines[4].replace('"write": true', '"write": 1'), *lines[5:]],
     "line 5 (fault): field 'write' must be a true/false"),
    (lambda lines: [*lines[:3], lines[3].replace('"args": [0, 65536', '"args": [0'), *lines[4:]],
     "line 4 (syscall) mmap: field 'args' must have 6 items"),
    (lambda lines: [*lines[:4], lines[4].replace('"t": 4.0', '"t": 1.5'), *lines[5:]],
     "line 5: field 't' goes back in time"),
    (lambda lines: [lines[0], "[1, 2]", *lines[1:]], "line 2: a line must be a JSON object"),
    (lambda lines: [], "empty file"),
])
def test_malformed_traces_name_the_line_and_field(edit: Any, message: str, tmp_path: Path) -> None:
    lines = GOOD.splitlines()
    text = "\n".join(edit(lines)) + "\n"
    with pytest.raises(RunTraceError) as err:
        prepare(RunTrace("t.trace", text=text))
    assert message in str(err.value)
    path = tmp_path / "t.trace"
    path.write_text(text)
    proc = subprocess.run([*FOLIOSIM, "run-trace", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]


def test_gzip_traces_are_read_and_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    data = gzip.compress(GOOD.encode())
    good = tmp_path / "run.trace.gz"
    good.write_bytes(data)
    run = simulate(RunTrace.open(good))
    assert run.check is not None and run.check.compared == run.check.agreed
    assert read_workload_text(good) == GOOD
    cut = tmp_path / "cut.trace.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunTraceError, match="gzip stream is truncated or corrupt"):
        prepare(RunTrace.open(cut))
    proc = subprocess.run([*FOLIOSIM, "run-trace", str(cut)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "truncated" in proc.stderr


# ------------------------------------------------------------------------------------- the commands
def test_run_trace_command_prints_the_summary_and_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "run.trace"
    path.write_text(GOOD)
    out = tmp_path / "out.json"
    proc = subprocess.run([*FOLIOSIM, "run-trace", str(path), "--json", str(out), "-q"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "faults: 14 recorded" in proc.stdout and "live agreement (3 snapshots" in proc.stdout
    assert "100.00% of" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["reuses"] == 8 and doc["copies"] == 2 and doc["live"]["compared"] == doc["live"]["agreed"]
    proc = subprocess.run([*FOLIOSIM, "run-trace", str(path), "--design", "nonsense"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_an_interrupted_recording_is_said_to_be_incomplete(tmp_path: Path) -> None:
    t = Trace().start(10).mmap(10, BASE, 2).fault(10, BASE)
    t.header.update(incomplete=True, interrupted_by="SIGINT")
    path = tmp_path / "cut.trace"
    path.write_text(t.text())
    proc = subprocess.run([*FOLIOSIM, "run-trace", "-q", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "INCOMPLETE (interrupted by SIGINT)" in proc.stdout


def test_other_designs_and_the_oracle_run_through_the_probe() -> None:
    t = _snapshot_trace()
    run = t.run(design="exact", oracle="every")
    assert run.oracle_runs > 10 and not run.oracle_problems
    assert run.design_totals["unsafe"] == 0 and run.design_totals["checks"] > 0
    assert run.reuses == 8 and run.copies == 2


def test_compare_workload_file_runs_a_run_trace_once(tmp_path: Path) -> None:
    path = tmp_path / "run.trace.gz"
    path.write_bytes(gzip.compress(GOOD.encode()))
    steps = workload_file_steps(read_workload_text(path), "run.trace.gz")
    assert [s.verb for s in steps].count("fault") == 14
    db = tmp_path / "r.sqlite"
    proc = subprocess.run([*FOLIOSIM, "compare", "--workload-file", str(path), "-d", "kernel,exact", "--seeds", "3",
                           "--db", str(db), "-q", "-j", "1"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    import sqlite3

    with sqlite3.connect(db) as con:
        cells = con.execute("SELECT design, seed FROM cells").fetchall()
        faults = dict(con.execute("SELECT consumer, SUM(value) FROM metrics WHERE metric = 'recorded_faults' "
                                  "GROUP BY consumer").fetchall())
    assert sorted(cells) == [("exact", 1), ("kernel", 1)]
    assert faults == {"taken": 28.0}


def test_compare_reads_a_run_trace_once_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`foliosim compare --workload-file` on one local process converts the trace once: the CLI's check, every
    cell's check and the driving run share it (evaluate.cell.prepared); a second trace replaces the first."""
    from click.testing import CliRunner

    from foliosim.cli import main
    from foliosim.evaluate import cell
    from foliosim.workloads import runtrace

    monkeypatch.setattr(cell, "_PREPARED", {})
    monkeypatch.setattr(cell, "_CHECKED", {})
    reads: list[str] = []
    read = runtrace._Converter.run_fast

    def counted(self: Any, trace: RunTrace, *args: Any) -> Any:
        reads.append(trace.name)
        return read(self, trace, *args)

    monkeypatch.setattr(runtrace._Converter, "run_fast", counted)
    path = tmp_path / "run.trace.gz"
    path.write_bytes(gzip.compress(GOOD.encode()))
    res = CliRunner().invoke(main, ["compare", "--workload-file", str(path), "-d", "kernel,exact", "--db",
                                    str(tmp_path / "r.sqlite"), "-q", "-j", "1", "--engine", "reference"])
    assert res.exit_code == 0, res.output
    assert len(reads) == 1 and reads[0].endswith("run.trace.gz")
    other = GOOD.replace('"ev": "fault"', '"ev":"fault"', 1)  # the same events, another text
    assert other != GOOD
    first = cell.prepared(GOOD, "a")
    assert cell.prepared(GOOD, "b") is first and len(reads) == 1
    assert cell.prepared(other, "c") is not first and len(reads) == 2 and list(cell._PREPARED.values()) != [first]


def test_the_shipped_real_recording_gives_its_decisions_and_agrees_with_the_live_folios() -> None:
    """examples/run-traces/fork-child.trace.gz: fork-child.c recorded with 64K mTHP and --check-live on the
    project's machine. The heap's decisions are exactly the program's (16 child copies, 32 parent reuses) and
    every compared field agrees, execve's argument pages included (the exec's ``populated``)."""
    root = Path(__file__).resolve().parent.parent
    run = simulate(RunTrace.open(root / "examples/run-traces/fork-child.trace.gz"))
    assert run.cow[(CowRule.LARGE_MAYBE_SHARED.value, "copy")] == 16
    assert run.cow[(CowRule.LARGE_EXCLUSIVE.value, "reuse")] == 32
    assert run.allocated[("anon", 4)] == 4
    check = run.check
    assert check is not None and check.snapshots == 4
    assert not check.causes, [d.describe() for d in check.examples]
    assert check.agreed == check.compared > 2000
    assert run.faults_taken >= run.recorded_faults - 2
    for name in ("folio order", "folio identity", "precise mapcount", "pagemap exclusive", "refcount",
                 "_large_mapcount", "slot 0 MM", "slot 1 MM", "shared bit"):
        assert check.fields[name].compared > 0 and check.fields[name].agreed == check.fields[name].compared, name


def test_exec_populated_argument_pages_are_small_folios_and_null_maps_are_no_maps() -> None:
    """``populated``: the stack pages execve wrote without a fault (its arguments) are order 0 even with 16K
    mTHP (the stack grew page by page then), so a fault beside them cannot take a 16K folio either."""
    top = 0x7FFE00000000
    maps = [[top - 64 * PAGE, top, "rw-p", 0, "00:00", 0, "[stack]"]]
    t = Trace(anon={"2": "always"}).ev("spawn", 10, path="/bin/prog", argv=["prog"])
    t.ev("exec", 10, path="/bin/prog", maps=maps, populated=[top - PAGE, top - 2 * PAGE])
    t.fault(10, top - 3 * PAGE).fault(10, top - 40 * PAGE)
    t.ev("spawn", 20, path="/bin/prog", argv=["prog"]).ev("exec", 20, path="/bin/prog", maps=None)
    t.fault(20, top - PAGE)
    run = t.run()
    assert run.convert.populated == 2
    assert run.allocated == {("anon", 0): 3, ("anon", 2): 1}
    assert run.faults == {"taken": 2, FAULT_EXEC: 1}
