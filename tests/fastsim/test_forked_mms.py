"""The MMs a fork in the compiled step interpreter makes, and that are alive when it stops, are made in Python from
their parents' VMA templates and their rows (ProgramRun._materialize_tables()): what they hold (every Vma field,
anon_vma ids, anon_vma_forked, rows, room, windows), after Python steps that change them (munmap, mprotect), later
stretches that fault in them or fork from them, and exits, is what one step at a time gives."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

pytest.importorskip("numba")

from foliosim.fast.sim import kprog
from foliosim.fast.sim.engine import FastMachine
from foliosim.fast.sim.steps import FastWorkloadRunner
from foliosim.kconfig import KernelConfig
from foliosim.vm.machine import MachineOptions
from foliosim.vm.vma import Vma
from foliosim.workloads.steps import Step
from tests.fastsim.test_kprog import OneByOne, snapshot


def _w(task: str, region: str, first: int, span: int) -> Step:
    return Step("write", task, (region, first, span))


STEPS: list[Step] = [
    Step("spawn", "P"), Step("file", "", ("lib", 16, 0, 0)),
    Step("mmap", "P", ("heap", 64, "anon", None, None, "rw", 0)),
    Step("mmap", "P", ("spare", 16, "anon", None, None, "rw", 0)),
    Step("mmap", "P", ("ro", 8, "anon", None, None, "r", 0)),
    Step("mmap", "P", ("lib", 16, "file-private", "lib", None, "r", 0)),
    _w("P", "heap", 0, 32), Step("read", "P", ("lib", 0, 4)),
    # stretch 1: forks; a child's own anon_vma (spare), CoW in children and parent
    Step("fork", "P", ("C1",)), Step("fork", "P", ("C2",)), Step("fork", "P", ("C3",)), Step("fork", "P", ("C4",)),
    _w("C1", "heap", 0, 8), _w("C2", "spare", 0, 4), _w("P", "heap", 8, 8), _w("C4", "spare", 2, 2),
    Step("exit", "C4"),
    # Python steps on forked MMs nothing read yet
    Step("munmap", "C2", ("heap", 0, 16)), Step("mprotect", "C3", ("heap", 4, 8, "r")),
    # stretch 2: faults in them, a fork from a child (its templates), a new anon_vma in a grandchild
    _w("C1", "heap", 16, 8), _w("C3", "spare", 0, 2), _w("C2", "heap", 20, 4), _w("P", "heap", 30, 2),
    Step("fork", "C1", ("G1",)), Step("fork", "C3", ("G3",)), _w("G1", "heap", 0, 4), _w("G3", "spare", 4, 2),
    Step("fork", "P", ("C5",)), _w("C5", "heap", 40, 2),
    Step("mmap", "P", ("late", 8, "anon", None, None, "rw", 0)),
    # stretch 3: faults in MMs still lazy, an exit of one
    _w("G3", "heap", 1, 2), _w("C5", "spare", 8, 2), Step("exit", "G1"), _w("P", "late", 0, 2),
]


def _fields(vma: Vma) -> tuple[Any, ...]:
    """Every field of a Vma, its file by name (each machine has its own SimFile objects)."""
    return tuple(vma.file.name if f.name == "file" and vma.file else getattr(vma, f.name) for f in fields(vma))


def _mms(m: FastMachine) -> dict[str, Any]:
    """Each MM's Python side, every Vma field included (FastMachine._sync() first, as snapshot() does)."""
    for mm in m.mms.values():
        m._sync(mm)
    return {n: (mm.vcap, mm.unpublished_lo, mm.unpublished_hi, mm.unmerged_lo, mm.unmerged_hi, mm.zapped,
                [_fields(v) for v in mm.vmas], [(v.anon_vma, v.anon_vma_forked) for v in mm.vmas],
                list(mm.rows), [mm.rowmap[id(v)] for v in mm.vmas], len(mm.published)) for n, mm in m.mms.items()}


def _run(cls: type[FastWorkloadRunner]) -> tuple[FastMachine, FastWorkloadRunner]:
    m = FastMachine(KernelConfig(), MachineOptions(), reference=False, record=True, keep_decisions=True)
    runner = cls(m)
    runner.run(STEPS)
    return m, runner


def test_forked_mms_made_after_the_loop_are_fork_copies() -> None:
    made: list[list[int]] = []
    real = kprog.ProgramRun._materialize_tables

    def spy(run: kprog.ProgramRun) -> None:
        before = set(run.m.mms)
        real(run)
        made.append(sorted(mm.num for name, mm in run.m.mms.items() if name not in before))

    kprog.ProgramRun._materialize_tables = spy  # type: ignore[method-assign]
    try:
        fast, fast_runner = _run(FastWorkloadRunner)
    finally:
        kprog.ProgramRun._materialize_tables = real  # type: ignore[method-assign]
    assert sum(map(len, made)) >= 5 and len([k for k in made if k]) >= 2  # not vacuous: made in two stretches
    slow, slow_runner = _run(OneByOne)
    fast_mms, slow_mms = _mms(fast), _mms(slow)
    assert fast_mms == slow_mms
    forked = [f for n, mm in fast_mms.items() if n != "mm1" for f in mm[7]]
    assert {f[1] for f in forked if f[0] is not None} == {True, False}  # some anon_vmas came with fork, some not
    a, b = snapshot(fast, fast_runner), snapshot(slow, slow_runner)
    for key in b:
        assert a[key] == b[key], key
