"""The MMs an exec in the compiled step interpreter makes keep their Vma objects unmade (kprog.LazyMM) until Python
reads them: what a snapshot check reads between stretches (SnapshotView) after the loop changed such an MM's VMAs
(mprotect, munmap, mmap) is what one step at a time gives, and so is the machine at the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("numba")

from foliosim.fast.sim import kprog, tracerun
from foliosim.fast.sim import layout as L
from foliosim.kconfig import KernelConfig
from foliosim.workloads.steps import Step

_FILL = 40  # more than tracerun.STRETCH_MIN steps before each stop: the stretch up to it runs compiled


def _faults(task: str, region: str, n: int) -> list[Step]:
    return [Step("fault", task, (region, k % 16, 1)) for k in range(n)]


STEPS: list[Step] = [
    Step("spawn", "p"), Step("file", "", ("lib", 16, 0, 0)),
    Step("mmap", "p", ("heap", 64, "anon", None, None, "rw", 0)), *_faults("p", "heap", _FILL),
    Step("fork", "p", ("c",)), Step("exec", "c"),
    Step("mmap", "c", ("ch", 32, "anon", None, None, "rw", 0)),
    Step("mmap", "c", ("cl", 16, "file-private", "lib", None, "r", 0)), *_faults("c", "ch", _FILL),
    # stop 1: nothing read; then the loop changes c's VMAs
    Step("mprotect", "c", ("ch", 4, 8, "r")), Step("munmap", "c", ("cl", 0, 4)),
    Step("mmap", "c", ("c2", 8, "anon", None, None, "rw", 0)), Step("fault", "c", ("c2", 1, 1)),
    Step("fault", "c", ("ch", 5, 0)), Step("fault", "c", ("ch", 5, 1)),  # refused: read-only now
    *_faults("p", "heap", _FILL),
    # stop 2: c's VMAs read
    Step("mprotect", "c", ("ch", 4, 8, "rw")), Step("merge", "c"), *_faults("c", "ch", _FILL),
    Step("exit", "c"), Step("exit", "p"),
]
STOP1 = 3 + _FILL + 4 + _FILL
STOP2 = STOP1 + 6 + _FILL


def _vmas(mm: Any) -> list[tuple[Any, ...]]:
    return [(v.start, v.end, v.read, v.write, v.shared, v.anon_vma, v.anon_vma_forked, v.dontfork, v.label,
             None if v.file is None else v.file.name, v.pgoff) for v in mm.vmas]


def _synced(m: tracerun.TraceMachine) -> None:
    """The Vma objects' anon_vma brought up to date with the rows (a cache either engine fills lazily)."""
    for mm in m.mms.values():
        m._anon_seen.pop(mm.num, None)
        m._sync(mm)


def _run(compiled: bool) -> tuple[list[Any], Counter[str], tracerun.TraceRunner]:
    runner = tracerun.TraceRunner(tracerun.TraceMachine(KernelConfig(), False), Counter())
    m = runner.m
    seen: list[Any] = []

    def stop1() -> None:
        runner.flush()
        mm = m.tasks["c"].mm
        seen.append(type(mm) is kprog.LazyMM)

    def stop2() -> None:
        runner.flush()
        view = tracerun.SnapshotView(m)
        mm = view.tasks["c"].mm
        _synced(m)
        ch = runner.regions["ch"]
        found = mm.find_vma(ch + 5)
        seen.append((_vmas(mm), (found.start, found.end, found.write) if found else None,
                     sorted(view.snapshot_pages(mm, True).anon_pages())))

    def on_step(step: Step, index: int) -> None:
        try:
            runner.execute(step, index)
        except Exception as exc:  # counted, as run-trace counts a refused step
            runner.rejected[f"{step.verb}: {type(exc).__name__}"] += 1

    stops: list[tuple[int, Callable[[], None]]] = [(STOP1, stop1), (STOP2, stop2)]
    if compiled:
        assert runner.compiled()
        runner.run_steps(kprog.FaultSteps(STEPS), 0, on_step, None, stops)
    else:
        for k, step in enumerate(STEPS):
            for at, fn in stops:
                if at == k:
                    fn()
            on_step(step, k)
    runner.flush()
    return seen, runner.faults, runner


def test_exec_mm_read_after_loop_changes_like_one_step_at_a_time() -> None:
    (lazy, fast2), fast_faults, fast = _run(True)
    (_, slow2), slow_faults, slow = _run(False)
    assert lazy is True  # the exec ran in the loop and nothing read its VMAs by stop 1
    vmas, found, pages = fast2
    assert (vmas, found, pages) == slow2
    assert found is not None and found[2] is False  # the loop's mprotect is seen
    assert len(vmas) >= 4 and pages
    assert fast_faults == slow_faults
    assert fast.rejected == slow.rejected
    _synced(fast.m)
    _synced(slow.m)
    assert {mm.name: _vmas(mm) for mm in fast.m.mms.values()} == {mm.name: _vmas(mm) for mm in slow.m.mms.values()}


def test_lazy_mm_loads_from_rows_on_first_read() -> None:
    """Reading (or writing) any of the four lazy attributes makes the objects and leaves a plain FastMM."""
    runner = tracerun.TraceRunner(tracerun.TraceMachine(KernelConfig(), False), Counter())
    stops: list[tuple[int, Callable[[], None]]] = []
    kinds: list[type] = []
    stops.append((STOP1, lambda: kinds.append(type(runner.m.tasks["c"].mm))))
    runner.run_steps(kprog.FaultSteps(STEPS[:STOP1]), 0, runner.execute, None, stops)
    mm = runner.m.tasks["c"].mm
    assert kinds == [kprog.LazyMM] and type(mm) is kprog.LazyMM
    n = kprog._nvmas(mm)
    rows = mm.rows
    assert type(mm) is not kprog.LazyMM and len(rows) == len(mm.vmas) == len(mm.published) == n >= 2
    assert mm.rowmap == {id(v): r for v, r in zip(mm.vmas, rows, strict=True)}


def test_presize_extent_bounds_from_the_rows_of_exec_mms() -> None:
    """LazyMM.extent() (ProgramRun._prepare()'s presize of an MM an exec in the loop made, from a few cells of its
    rows, its Vma objects not made) bounds the pages its VMAs span and the largest THP order any allows, as its Vma
    objects tell once made; nothing for what it is not asked."""
    runner = tracerun.TraceRunner(tracerun.TraceMachine(KernelConfig(), False), Counter())
    thp = Step("thp", "", ([2, 4], []))  # mTHP orders 2 and 4 always: each anonymous VMA allows them
    runner.run_steps(kprog.FaultSteps([thp, *STEPS[:STOP1]]), 0, runner.execute, None, [])
    mm = runner.m.tasks["c"].mm
    assert type(mm) is kprog.LazyMM
    pages, order = mm.extent(False, False)
    assert mm.extent(True, True) == (0, 0) and type(mm) is kprog.LazyMM
    span = sum(v.end - v.start for v in mm.vmas)  # makes its Vma objects
    assert pages >= span > 0 and pages == mm.vmas[-1].end - mm.vmas[0].start
    assert order == max(o for v in mm.vmas for o in v.thp) == 4


def test_exit_zaps_an_exec_mm_from_its_rows() -> None:
    """exit_mmap() of an MM an exec in the loop made takes the ranges to zap from its rows (LazyMM.vma_ranges(), the
    ranges its Vma objects give once made) and leaves its Vma objects unmade: read afterwards, there are none."""
    runs = []
    for load_first in (False, True):
        runner = tracerun.TraceRunner(tracerun.TraceMachine(KernelConfig(), False), Counter())
        runner.run_steps(kprog.FaultSteps(STEPS[:STOP1]), 0, runner.execute, None, [])
        runner.flush()
        mm = runner.m.tasks["c"].mm
        assert type(mm) is kprog.LazyMM
        ranges = mm.vma_ranges().tolist()
        assert type(mm) is kprog.LazyMM and len(ranges) >= 2
        if load_first:
            assert [[v.start, v.end] for v in mm.vmas] == ranges == mm.vma_ranges().tolist()
        runner.execute(Step("exit", "c"), STOP1)
        runner.flush()
        assert (type(mm) is kprog.LazyMM) is not load_first  # the exit made no Vma objects
        assert mm.vmas == [] and mm.rows == [] and mm.rowmap == {} and mm.zapped
        m = runner.m
        runs.append((ranges, m.fs[:int(m.glob[L.G_NFOLIO])].tolist(), int(m.ms[mm.num, L.MS_NMAP])))
    assert runs[0] == runs[1]  # the same zap either way: every folio's fields, the MM's mappings (none left)
    assert runs[0][2] == 0
