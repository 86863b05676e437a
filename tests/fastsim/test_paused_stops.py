"""Live-snapshot stops the compiled loop pauses at (``run_steps(..., view_stops=True)``, as run-trace's checks run):
a stop with only loop steps after it leaves the loop's tables the truth -- the check reads the tasks, MMs and VMAs
from them through SnapshotView, the Python objects are not brought up to date -- and the loop resumes without
making its tables again; a few steps between two such stops that Python would run one by one outside a chain (a fork,
a munmap, a racy fault: TraceProgram._near()) run in the loop, paused before and after them. What each stop's
SnapshotView reads, the steps Python runs after the loop returns (a fork, mmap and munmap on MMs the loop forked and
changed) and the machine at the end are what one step at a time gives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("numba")

from foliosim.fast.sim import kprog, tracerun
from foliosim.kconfig import KernelConfig
from foliosim.workloads.steps import Step
from tests.fastsim.test_runtrace_stops import _STEPS_HEAD, _faults, _heap_base, _vmas, one_by_one, step_hooks

#: the task names a stop asks the view about (some gone or not yet made at some stops)
_NAMES = ("p", "c", "g", "h", "k", "z", "y", "nobody")


#: how the few steps between the fourth and fifth stops run: Python after a spawn the loop returns for, with a
#: spawn after them too ("python"); the loop entered for them after that spawn, as a chain of stretches follows
#: ("chain-start"); the loop paused before and after them, no spawn ("in-chain")
_MODES = ("python", "chain-start", "in-chain")


def _steps(heap: int, mode: str) -> tuple[list[Step], list[int], list[int]]:
    """The steps, the stops (before step k) and the racy faults' places. The stretches between the first stops are
    long (the loop pauses at the stops between them); the one after the third is a few costly steps (a fork, a
    munmap, a racy fault), run as ``mode`` (:data:`_MODES`) says."""
    steps = [*_STEPS_HEAD, *_faults("p", "heap", 40)]
    racy = [len(steps)]
    steps += [Step("fault", "p", (heap + 5, 0, 1)), Step("fork", "p", ("c",)),
              Step("mmap", "c", ("x", 16, "anon", None, None, "rw", 0)), *_faults("c", "x", 8),
              Step("fork", "c", ("g",)), Step("fault", "g", ("x", 3, 1)), Step("munmap", "p", ("heap", 32, 16)),
              Step("exit", "g")]
    stops = [len(steps)]  # paused: a fork, an mmap, a munmap and an exit in the loop before it
    steps += [*_faults("c", "x", 36), *_faults("c", "heap", 4), Step("exec", "c"),
              Step("mmap", "c", ("y", 8, "anon", None, None, "rw", 0)), *_faults("c", "y", 4),
              Step("fork", "p", ("h",)), Step("mprotect", "p", ("heap", 0, 8, "r")), Step("fault", "h", ("heap", 2, 1))]
    stops += [len(steps), len(steps)]  # paused, two stops at one place: an exec, a fork, an mprotect before them
    steps += [*_faults("h", "heap", 36), Step("mmap", "h", ("v", 8, "anon", None, None, "rw", 0)),
              Step("fault", "h", ("v", 1, 1))]
    stops.append(len(steps))  # python: the loop returns here for the spawn, Python runs the next steps too
    steps += [Step("spawn", "z")] if mode != "in-chain" else []
    racy.append(len(steps) + 2)
    steps += [Step("fork", "h", ("k",)), Step("munmap", "h", ("v", 0, 4)), Step("fault", "h", (heap + 9, 0, 1)),
              Step("fault", "h", ("v", 5, 1))]
    stops.append(len(steps))
    steps += [Step("spawn", "y")] if mode == "python" else []
    steps += [*_faults("k", "heap", 34), Step("mmap", "h", ("w", 4, "anon", None, None, "rw", 0)),
              *_faults("h", "w", 3), Step("exit", "k"), Step("munmap", "p", ("heap", 0, 4))]
    stops.append(len(steps))  # paused
    steps += [*_faults("p", "heap", 36), Step("exit", "h"), Step("exit", "c")]
    stops.append(len(steps))  # at the end of the list
    return steps, stops, racy


def _seen(view: tracerun.SnapshotView, racy: set[str]) -> dict[str, Any]:
    """What a stop's check reads through the view: each task's MM, its VMAs and its snapshot side, the MMs' names
    and ids, the live folios, the racy folios so far (anon_vma and anon_vma_forked left out: the check does not read
    them, and the Python objects' anon_vma follows the rows lazily)."""
    tasks = {}
    for name in _NAMES:
        task = view.tasks.get(name)
        if task is None:
            assert name not in view.tasks
            continue
        assert name in view.tasks
        mm = task.mm
        side = view.snapshot_pages(mm, True)
        anon = side.anon_pages()
        slots = sorted({page[5] for page in anon.values()})
        vmas = [v[:5] + v[7:] for v in _vmas(mm)]
        found = [(v.start, v.end) for v in map(mm.find_vma, range(0, 1 << 40, 1 << 33)) if v is not None]
        tasks[name] = (mm.name, vmas, found, anon, side.other, side.zero_pages, side.file_pages,
                       side.file_anon_pages, side.folios(slots), side.refcounts(slots))
    return {"tasks": tasks, "mms": sorted((x.name, x.mm_id) for x in view.mms.values()), "alive": sorted(view.mms),
            "folios": sorted(view.folios), "racy": sorted(racy)}


def _final(runner: tracerun.TraceRunner) -> dict[str, Any]:
    """The machine's objects and counts at the end."""
    m = runner.m
    for mm in m.mms.values():
        m._anon_seen.pop(mm.num, None)
        m._sync(mm)
    return {"tasks": {name: (t.pid, t.mm.name, t.tgid) for name, t in m.tasks.items()},
            "mms": {mm.name: (mm.mm_id, mm.users, mm.count, _vmas(mm)) for mm in m.mms.values()},
            "faults": dict(runner.faults), "cow": dict(m.decisions()), "allocated": dict(m.allocated()),
            "alive": dict(m.alive()), "rejected": dict(runner.rejected), "regions": dict(runner.regions)}


def _run(compiled: bool, heap: int, mode: str) -> tuple[list[dict[str, Any]], dict[str, Any], list[bool],
                                                          list[Step]]:
    steps, at, racy_rows = _steps(heap, mode)
    runner = tracerun.TraceRunner(tracerun.TraceMachine(KernelConfig(), False), Counter())
    m = runner.m
    racy: set[str] = set()
    seen: list[dict[str, Any]] = []
    paused: list[bool] = []
    python: list[Step] = []
    on_step, racy_step = step_hooks(runner, racy, python)

    def check() -> None:  # as tracesim's: flush, then read through a SnapshotView only
        runner.flush()
        paused.append(m.paused is not None)
        seen.append(_seen(tracerun.SnapshotView(m), racy))

    stops: list[tuple[int, Callable[[], None]]] = [(k, check) for k in at]
    if compiled:
        assert runner.compiled()
        runner.run_steps(kprog.FaultSteps(steps), 0, on_step, tracerun.Races(racy_step, racy, list(racy_rows)),
                         stops, view_stops=True)
    else:
        one_by_one(steps, stops, racy_rows, racy_step, on_step)
    runner.flush()
    return seen, _final(runner), paused, python


@pytest.mark.parametrize("mode", _MODES)
def test_paused_stops_and_later_python_steps_see_what_one_step_at_a_time_gives(mode: str) -> None:
    heap = _heap_base()
    fast, fast_end, paused, ran = _run(True, heap, mode)
    slow, slow_end, _, _ = _run(False, heap, mode)
    steps, at, _racy = _steps(heap, mode)
    assert len(fast) == len(slow) == len(at)
    for k, (got, want) in enumerate(zip(fast, slow, strict=True)):
        assert got == want, f"stop {k} (before step {at[k]})"
    assert fast_end == slow_end
    if mode == "python":
        # the loop paused at the first three stops and the sixth (its tables read there), returned at the fourth
        # for the spawn and the steps Python ran after it (a fork and a munmap of an MM the loop forked and mmapped
        # in, a racy fault: the next stretch starts with a spawn too), and at the end
        assert paused == [True, True, True, False, False, True, False]
        assert ran[-6:] == steps[at[3]:at[4] + 1] and not any(step in ran for step in steps[at[0]:at[3]])
    elif mode == "chain-start":
        # the loop returns at the fourth stop for the spawn, then is entered at once for the few steps after it
        # (paused at the fifth stop: the stretches after it chain on)
        assert paused == [True, True, True, False, True, True, False]
        assert ran[-1] == steps[at[3]] and not any(step in ran for step in steps[at[3] + 1:])
        assert slow[4]["racy"] != slow[3]["racy"]
    else:
        # the few steps between the fourth and fifth stops run in the loop: it pauses at every stop but the last
        assert paused == [True, True, True, True, True, True, False]
        assert not any(step in ran for step in steps[at[0]:])
        assert slow[4]["racy"] != slow[3]["racy"]  # the racy fault between them noted a folio
    # what the stops see moves: the loop's forks, exec, mmaps and exits show at the pauses
    assert set(slow[0]["tasks"]) == {"p", "c"} and set(slow[1]["tasks"]) == {"p", "c", "h"}
    assert slow[0]["tasks"]["c"][0] != slow[1]["tasks"]["c"][0]  # exec'd
    spawned = {"python": {"z", "y"}, "chain-start": {"z"}, "in-chain": set()}[mode]
    assert set(slow[4]["tasks"]) == {"p", "c", "h", "k"} | spawned - {"y"} and "k" not in slow[5]["tasks"]
    assert slow[0]["racy"] and not slow_end["rejected"]
    assert slow_end["tasks"].keys() == {"p"} | spawned
