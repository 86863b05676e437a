"""The MMs a fork in the compiled step interpreter makes keep their Vma objects unmade (kprog.LazyMM) until Python
reads them: what they hold once read (fields, labels, files, anon_vma ids, anon_vma_forked), after Python steps that
change them (munmap, mprotect), later stretches that fault in them or fork from them, and exits, is what the
template copies made at once give, and what one step at a time gives."""

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


def _run(cls: type[FastWorkloadRunner]) -> tuple[FastMachine, FastWorkloadRunner, list[str]]:
    m = FastMachine(KernelConfig(), MachineOptions(), reference=False, record=True, keep_decisions=True)
    runner = cls(m)
    runner.run(STEPS)
    lazy = [mm.name for mm in m.mms.values() if type(mm) is kprog.LazyMM]
    return m, runner, lazy


def test_forked_mms_made_lazily_are_the_template_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, fast_runner, lazy = _run(FastWorkloadRunner)
    assert len(lazy) >= 2  # not vacuous: forked MMs nothing read stayed lazy through later stretches
    lazy_mms = _mms(fast)
    monkeypatch.setattr(kprog, "_fork_birth", lambda *_: 0)  # every forked MM's Vma objects made at once
    eager, _, none = _run(FastWorkloadRunner)
    assert none == []
    assert lazy_mms == _mms(eager)
    forked = [f for n, mm in lazy_mms.items() if n in lazy for f in mm[7]]
    assert {f[1] for f in forked if f[0] is not None} == {True, False}  # some anon_vmas came with fork, some not
    slow, slow_runner, _ = _run(OneByOne)
    a, b = snapshot(fast, fast_runner), snapshot(slow, slow_runner)
    for key in b:
        assert a[key] == b[key], key


def test_fork_birth_refuses_rows_the_marks_contradict() -> None:
    """The rows fork marked (anon_vma_forked) must be exactly those with an anon_vma below the birth it returns."""
    av = {0: 5, 1: 0, 2: 9, 3: 12, 4: 7}
    marks = {0: 1, 1: 0, 2: 1, 3: 0, 4: 0}

    def vm_item(r: int, _col: int) -> int:
        return av[r]

    def birth(rows: list[int], marked: dict[int, int]) -> int:
        return kprog._fork_birth([9, *rows].__getitem__, 1, len(rows), vm_item, marked.__getitem__)

    assert birth([0, 1, 2, 3], marks) == 10
    assert birth([0, 4, 2], marks) == 0  # unmarked 7 below marked 9
    assert birth([1, 3], marks) == 1  # nothing came with fork
    assert birth([0, 1], {0: 1, 1: 1}) == 0  # marked, no anon_vma
