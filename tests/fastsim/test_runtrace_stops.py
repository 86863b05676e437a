"""Live-snapshot stops a few steps apart (fewer than tracerun.STRETCH_MIN): TraceProgram.run() runs the steps between
them in the compiled loop of the one program (it no longer sends them one by one through Python), and what each
stop's check reads -- tasks, MMs and their VMAs, the simulated side of each task's snapshot with its folios'
fields, the recorded faults' outcomes, CoW decisions and racy folios so far -- is what one step at a time gives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

pytest.importorskip("numba")

from foliosim.fast.sim import kprog, tracerun
from foliosim.kconfig import KernelConfig
from foliosim.live.tracesim import _folio_at
from foliosim.workloads.steps import Step

_FILL = 40  # more than STRETCH_MIN faults: a long stretch first, the stops after it close together


def _faults(task: str, region: Any, n: int, written: int = 1) -> list[Step]:
    return [Step("fault", task, (region, k % 16, written)) for k in range(n)]


def _heap_base() -> int:
    """The page the first mmap of a fresh machine maps "heap" at (the racy faults name their region by address, as
    a recorded trace does)."""
    runner = tracerun.TraceRunner(tracerun.TraceMachine(KernelConfig(), False), Counter())
    for k, step in enumerate(_STEPS_HEAD):
        runner.execute(step, k)
    return runner.regions["heap"]


_STEPS_HEAD = [Step("spawn", "p"), Step("file", "", ("lib", 16, 0, 0)),
               Step("mmap", "p", ("heap", 64, "anon", None, None, "rw", 0))]


def _steps(heap: int) -> tuple[list[Step], list[int], list[int]]:
    """The steps, the stops (before step k) and the racy faults' places. The stretches between the stops are short:
    some cost less one by one (faults with a step or two: through Python), some more (several mmaps: in the loop)."""
    steps = [*_STEPS_HEAD, *_faults("p", "heap", _FILL), Step("fork", "p", ("c",))]
    stops = [len(steps)]  # right after the fork
    racy = [len(steps)]
    steps += [Step("fault", "c", (heap + 3, 0, 1)),  # CoW copy in the child, a race before it
              Step("mmap", "c", ("x", 16, "anon", None, None, "rw", 0)), Step("fault", "c", ("x", 2, 1))]
    stops.append(len(steps))
    racy.append(len(steps))
    steps += [Step("fault", "p", (heap + 3, 0, 1)),  # the parent's page now exclusive: reused
              Step("mprotect", "c", ("heap", 0, 8, "r")), Step("fault", "c", ("heap", 1, 1)),  # refused
              Step("munmap", "c", ("x", 0, 4)), Step("fault", "c", ("x", 1, 1)),  # no VMA
              Step("mmap", "c", ("lb", 16, "file-private", "lib", None, "r", 0)), Step("fault", "c", ("lb", 2, 0)),
              Step("mmap", "c", ("z1", 4, "anon", None, None, "rw", 0)),
              Step("mmap", "c", ("z2", 4, "anon", None, None, "r", 0))]
    stops.append(len(steps))
    steps += [Step("exec", "c"), *(Step("mmap", "c", (f"y{k}", 8, "anon", None, None, "rw", 0)) for k in range(3)),
              *_faults("c", "y0", 5)]
    stops.append(len(steps))
    steps += [Step("fork", "c", ("g",)), Step("fault", "g", ("y0", 1, 1))]
    stops.append(len(steps))
    stops.append(len(steps))  # two stops at one place
    steps += [Step("exit", "g")]
    stops.append(len(steps))
    steps += [*_faults("p", "heap", 3, 0), Step("exit", "c")]
    stops.append(len(steps))
    steps += [Step("merge", "p"), *_faults("p", "heap", 2)]
    stops.append(len(steps))  # at the end of the list
    return steps, stops, racy


def _vmas(mm: Any) -> list[tuple[Any, ...]]:
    return [(v.start, v.end, v.read, v.write, v.shared, v.anon_vma, v.anon_vma_forked, v.dontfork, v.label,
             None if v.file is None else v.file.name, v.pgoff) for v in mm.vmas]


def _seen(runner: tracerun.TraceRunner, racy: set[str]) -> dict[str, Any]:
    """What a stop's check reads (SnapshotView over the machine), and the counts so far."""
    m = runner.m
    runner.flush()
    view = tracerun.SnapshotView(m)
    tasks = {}
    for name in sorted(m.tasks):
        mm = view.tasks[name].mm
        side = view.snapshot_pages(mm, True)
        anon = side.anon_pages()
        slots = sorted({page[5] for page in anon.values()})
        tasks[name] = (mm.name, anon, side.other, side.zero_pages, side.file_pages, side.file_anon_pages,
                       side.folios(slots), side.refcounts(slots))
    for mm in m.mms.values():  # the Vma objects' anon_vma brought up to date (a cache either way fills lazily)
        m._anon_seen.pop(mm.num, None)
        m._sync(mm)
    return {"tasks": tasks, "mms": {mm.name: (mm.mm_id, mm.users, mm.count, _vmas(mm)) for mm in m.mms.values()},
            "folios": sorted(view.folios), "faults": dict(runner.faults), "cow": dict(m.decisions()),
            "allocated": dict(m.allocated()), "rejected": dict(runner.rejected), "racy": sorted(racy)}


def _run(compiled: bool, heap: int) -> tuple[list[dict[str, Any]], list[Step]]:
    steps, at, racy_rows = _steps(heap)
    runner = tracerun.TraceRunner(tracerun.TraceMachine(KernelConfig(), False), Counter())
    racy: set[str] = set()
    seen: list[dict[str, Any]] = []
    python: list[Step] = []  # the steps that went through Python
    on_step, racy_step = step_hooks(runner, racy, python)

    stops: list[tuple[int, Callable[[], None]]] = [(k, lambda: seen.append(_seen(runner, racy))) for k in at]
    if compiled:
        assert runner.compiled()
        runner.run_steps(kprog.FaultSteps(steps), 0, on_step, tracerun.Races(racy_step, racy, list(racy_rows)),
                         stops)
    else:
        one_by_one(steps, stops, racy_rows, racy_step, on_step)
    return seen, python


def step_hooks(runner: tracerun.TraceRunner, racy: set[str], python: list[Step]) -> tuple[
        Callable[[Step, int], None], Callable[[Step, int], None]]:
    """(on_step, racy_step) as tracesim's: a refused step counted, a racy fault's folio noted before and after it;
    the steps that go through Python appended to ``python``."""
    m = runner.m

    def on_step(step: Step, index: int) -> None:
        python.append(step)
        try:
            runner.execute(step, index)
        except Exception as exc:  # counted, as run-trace counts a refused step
            runner.rejected[f"{step.verb}: {type(exc).__name__}"] += 1

    def racy_step(step: Step, index: int) -> None:  # the folio at the address before and after
        runner.flush()
        before = _folio_at(m, step)
        on_step(step, index)
        runner.flush()
        racy.update(name for name in (before, _folio_at(m, step)) if name)

    return on_step, racy_step


def one_by_one(steps: list[Step], stops: list[tuple[int, Callable[[], None]]], racy_rows: list[int],
               racy_step: Callable[[Step, int], None], on_step: Callable[[Step, int], None]) -> None:
    """The steps one at a time, the stops before their steps (and after the last), the racy ones through
    ``racy_step``."""
    for k, step in enumerate(steps):
        for j, fn in stops:
            if j == k:
                fn()
        (racy_step if k in racy_rows else on_step)(step, k)
    for j, fn in stops:
        if j == len(steps):
            fn()


def test_close_stops_see_what_one_step_at_a_time_gives() -> None:
    heap = _heap_base()
    fast, python = _run(True, heap)
    slow, _ = _run(False, heap)
    steps, at, _racy = _steps(heap)
    assert len(fast) == len(slow) == len(at)
    assert at[-1] == len(steps) and all(b - a < tracerun.STRETCH_MIN for a, b in pairwise(at))
    for k, (got, want) in enumerate(zip(fast, slow, strict=True)):
        assert got == want, f"stop {k} (before step {at[k]})"
    # what the stops compare moves: each stop sees the machine the steps before it left, not the one before
    for k in range(len(at) - 1):
        assert (slow[k] == slow[k + 1]) == (at[k] == at[k + 1]), f"stops {k} and {k + 1}"
    first, last = slow[0], slow[-1]
    assert set(first["tasks"]) == {"c", "p"} and "g" not in last["tasks"] and last["tasks"]["p"][1]
    assert {outcome for _rule, outcome in last["cow"]} == {"copy", "reuse"} and len(last["racy"]) == 2
    assert last["faults"]["taken"] > 16 and len(last["faults"]) == 5  # taken, present, mapped, no VMA, refused
    # both ways ran: the stretch after the first stop through Python (a race, an mmap, a fault), the next two (with
    # several mmaps, an exec) in the loop
    assert python[0].verb == "spawn" and python[1:4] == steps[at[0]:at[1]]
    assert not any(step in python for step in steps[at[1]:at[3]])
