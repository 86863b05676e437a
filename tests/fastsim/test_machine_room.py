"""FastMachine's array room and its first control-plane steps: folio and page rows grown mid-run keep exactly the
rows in use (only those are copied), MM rows past the first ones made for many spawned MMs, and mmap/mprotect
results read from the compiled control plane's state the same as the Python control plane's."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("numba")

from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import FastMachine
from foliosim.kconfig import KernelConfig
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.vm.memory import PAGE_SIZE

OPTIONS = MachineOptions(thp=frozenset({2, 4}))


def _fill(m: FastMachine | Machine, task: str, addr: int, pages: range, byte: int) -> None:
    for p in pages:
        assert m.write(task, addr + p * PAGE_SIZE, bytes([byte]) * 8)


def _state(m: FastMachine) -> dict[str, Any]:
    """The folio, page and table rows in use, every MM's mappings, the trace and counters."""
    g = m.glob
    nf, npg, ntb = int(g[L.G_NFOLIO]), int(g[L.G_NPAGE]), int(g[L.G_NTB])
    return {
        "glob": g.tolist(),
        "folios": (m.fs[:nf].tolist(), m.pmc[:npg].tolist(), m.pex[:npg].tolist(), m.pct[:npg].tolist()),
        "tables": m.tb[:ntb].tolist(),
        "mappings": {name: m.mappings(mm) for name, mm in m.mms.items() if not mm.zapped},
        "trace": list(m.trace),
        "counters": dict(m.counters),
    }


def _workload(m: FastMachine, grow: bool) -> dict[str, Any]:
    """Faults, a fork and copy-on-write; ``grow``: the folio and page rows grown (far) past what they need halfway,
    with folios, their pages and freed ones (on the free lists) in use."""
    m.spawn("p")
    heap = m.mmap("p", 64 * PAGE_SIZE, label="heap")
    _fill(m, "p", heap, range(0, 40), 1)
    assert m.fork("p", "c") > 0
    _fill(m, "c", heap, range(0, 20), 2)
    assert m.munmap("p", heap + 32 * PAGE_SIZE, 8 * PAGE_SIZE) == 0  # folios freed: free-list rows below the count
    if grow:
        before = (m.fs.shape[0], m.pmc.shape[0])
        m.ensure(folios=8 * m.fs.shape[0], pages=8 * m.pmc.shape[0])
        assert m.fs.shape[0] > before[0] and m.pmc.shape[0] > before[1] and m.pex.shape == m.pct.shape == m.pmc.shape
    mid = _state(m)
    _fill(m, "p", heap, range(0, 32), 3)
    _fill(m, "c", heap, range(40, 64), 4)
    assert m.exit("c") == 0
    return {"mid": mid, "end": _state(m)}


def test_rows_grown_mid_run_keep_those_in_use() -> None:
    """Growing the folio and page rows copies only the rows below G_NFOLIO / G_NPAGE: the same rows, and the run
    goes on exactly as on a machine that did not grow (a copy that missed a row in use would differ)."""
    grown = _workload(FastMachine(KernelConfig(), OPTIONS), grow=True)
    kept = _workload(FastMachine(KernelConfig(), OPTIONS), grow=False)
    assert grown == kept


def test_many_spawned_mms_have_their_rows() -> None:
    """More MMs than the first MM rows: each has its row (id, live, users), and the ids are the reference's."""
    fast, ref = FastMachine(KernelConfig(), OPTIONS), Machine(KernelConfig(), OPTIONS)
    names = [f"t{k}" for k in range(150)]
    for name in names:
        assert fast.spawn(name) == ref.spawn(name)
        addr = fast.mmap(name, 4 * PAGE_SIZE)
        assert addr == ref.mmap(name, 4 * PAGE_SIZE)
        _fill(fast, name, addr, range(2), 5)
        _fill(ref, name, addr, range(2), 5)
    for name in names[::3]:
        assert fast.exit(name) == ref.exit(name) == 0
    assert fast.ms.shape[0] > 64
    for name, task in fast.tasks.items():
        mm = task.mm
        assert mm.mm_id == ref.tasks[name].mm.mm_id
        assert fast.ms[mm.num, [L.MS_ID, L.MS_LIVE, L.MS_USERS]].tolist() == [mm.mm_id, 1, 1]
    assert fast.counters["fault"] == ref.counters["fault"]


def test_mmap_and_mprotect_results_as_python_control_plane() -> None:
    """mmap's address (placed and MAP_FIXED) and mprotect's result (0; -ENOMEM over a hole) read from the compiled
    verb's state, as the Python control plane returns them."""
    out = []
    for compiled in (True, False):
        m = FastMachine(KernelConfig(), OPTIONS, compiled_vmas=compiled)
        m.spawn("p")
        a = m.mmap("p", 16 * PAGE_SIZE, thp=frozenset({4}), label="a")
        b = m.mmap("p", 8 * PAGE_SIZE, label="b")
        fixed = m.mmap("p", 4 * PAGE_SIZE, addr=a + 4 * PAGE_SIZE, write=False, label="fixed")
        ok = m.mprotect("p", a, 8 * PAGE_SIZE, True, False)
        hole = m.mprotect("p", a, (b - a) + PAGE_SIZE, True, True)
        vmas = [(v.start, v.end, v.write, v.thp, v.label) for v in m.task("p").mm.vmas]
        out.append((a, b, fixed, ok, hole, vmas))
    assert out[0] == out[1]
    assert out[0][2] == out[0][0] + 4 * PAGE_SIZE and out[0][3] == 0 and out[0][4] < 0


def test_trace_room_made_ahead_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run-trace program with TABLES_AHEAD_SOME recorded faults or more makes room ahead for its page tables (at
    most TABLES_AHEAD_FEW), zap's gather list and the table lists: make's simulation returns from the loop for room
    at most once instead of ten times, with the same figures, live-check results and machine at the end as when
    the loop asks for each growth."""
    from pathlib import Path

    from foliosim.fast.sim import kprog, tracerun
    from foliosim.live.tracesim import simulate
    from foliosim.workloads.runtrace import RunTrace

    trace = Path(__file__).resolve().parents[2] / "examples" / "run-traces" / "make.trace.gz"
    grown = 0
    grow = kprog.ProgramRun._grow

    def counted(self: kprog.ProgramRun) -> None:
        nonlocal grown
        grown += 1
        grow(self)

    monkeypatch.setattr(kprog.ProgramRun, "_grow", counted)
    runs = []
    for ahead in (True, False):
        if not ahead:
            monkeypatch.setattr(tracerun, "GATHER_PER_FAULT", 0)
            monkeypatch.setattr(tracerun, "TABLES_AHEAD_SOME", tracerun.TABLES_AHEAD_FAULTS)
        grown = 0
        run = simulate(RunTrace.open(trace), engine="fast")
        assert run.machine is not None
        figures = {k: v for k, v in run.to_json().items() if "seconds" not in k and k != "faults_per_second"}
        state = _state(run.machine)
        state["glob"][L.G_HUSED] = 0  # the page-table hash's used slots: a rehash (at each growth) drops deleted ones
        runs.append((grown, figures, state))
    (ahead_grown, *ahead), (asked_grown, *asked) = runs
    assert ahead_grown <= 1 and asked_grown >= 8
    assert ahead == asked
