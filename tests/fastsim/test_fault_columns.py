"""The run-trace reader's fault columns (foliosim.workloads.runtrace.FaultColumns) and the compiled engine's use of
them (kprog.FaultSteps, kprog._encode, tracerun.fault_arrays): each told fault step is the step the columns say;
a program encoded from the columns equals the one encoded from the Step objects, for whole traces, stretches, a
mix of told and untold faults, and columns that do not fit their steps (refused, the steps read); the run-trace
figures are the same with and without them."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")

from foliosim.fast.sim import kprog, tracerun
from foliosim.live.tracesim import simulate
from foliosim.workloads import runtrace
from foliosim.workloads.runtrace import Conversion, RunTrace, prepare
from foliosim.workloads.steps import Step

TRACES = Path(__file__).resolve().parents[2] / "examples" / "run-traces"
ALL = sorted(p.name.removesuffix(".trace.gz") for p in TRACES.glob("*.trace.gz"))
NOT_COMPARED = frozenset({"sim_seconds", "check_seconds", "wall_seconds", "load_seconds", "faults_per_second"})


@cache
def _conv(name: str) -> tuple[RunTrace, Conversion, list[Step]]:
    trace = RunTrace.open(TRACES / f"{name}.trace.gz")
    conv = prepare(trace)
    return trace, conv, [item for item in conv.items() if type(item) is Step]


def _encoded(steps: list[Step], told: kprog.Told | None) -> tuple[Any, ...]:
    listed = kprog.FaultSteps(steps)
    listed.faults = told
    return kprog._encode(listed)


def _same_program(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    """The same program, names, regions and counts, and the same row index (its used part: fork, fork/exit and
    other rows)."""
    assert np.array_equal(a[0], b[0])
    assert a[1:7] == b[1:7] and a[8] == b[8]
    for k, n in enumerate(a[8][:3]):
        assert a[7][k, :n].tolist() == b[7][k, :n].tolist()


@pytest.mark.parametrize("name", ALL)
def test_columns_tell_the_steps(name: str) -> None:
    """Every told place is a fault step with the told page, page 0 and written flag; the faults the reader
    converted itself (every fault step of these traces but a few made by the long way) are told."""
    _trace, conv, steps = _conv(name)
    arrays = tracerun.fault_arrays(conv)
    assert arrays is not None
    at, vpn, write, task = arrays.at.tolist(), arrays.vpn.tolist(), arrays.write.tolist(), arrays.task.tolist()
    assert at == sorted(set(at))
    for row, page, written, name in zip(at, vpn, write, task, strict=True):
        step = steps[row]
        assert step.verb == "fault" and step.task == name
        assert step.args == (page, 0, bool(written))
        assert type(step.args[2]) is bool
    faults = sum(1 for step in steps if step.verb == "fault")
    assert faults - 10 <= len(at) <= faults


@pytest.mark.parametrize("name", ["chromium.census", "redis-bgsave", "make", "prefork-server"])
def test_program_from_columns_equals_program_from_steps(name: str) -> None:
    """The whole trace and random stretches of it (redis-bgsave and chromium have untold faults among told ones)
    encode to the same program, names and regions with the columns as from the steps."""
    _trace, conv, steps = _conv(name)
    arrays = tracerun.fault_arrays(conv)
    assert arrays is not None
    rnd = random.Random(name)
    cuts = [(0, len(steps))] + [(b, rnd.randrange(1, len(steps) - b + 1)) for b in
                                (rnd.randrange(len(steps)) for _ in range(6))]
    for base, n in cuts:
        part = steps[base:base + n]
        told = arrays.stretch(base, n)
        if told is not None:
            assert kprog._told_ok(part, told)
        _same_program(kprog._encode(part), _encoded(part, told))


def test_mixed_and_refused_columns() -> None:
    """Half the faults told; a fault whose region is a name among untold ones (every fault read then); columns
    shifted by one step, or with a wrong page: refused (_told_ok) and the program read from the steps."""
    _trace, conv, steps = _conv("prefork-server")
    arrays = tracerun.fault_arrays(conv)
    assert arrays is not None
    told = arrays.stretch(0, len(steps))
    assert told is not None
    rows, vpns, writes, tasks = told
    plain = kprog._encode(steps)
    half = slice(None, None, 2)
    _same_program(plain, _encoded(steps, (rows[half], vpns[half], writes[half], tasks[half])))
    named = list(steps)
    untold = int(rows[1])
    named[untold] = Step("fault", named[untold].task, ("heap", 3, True))
    _same_program(kprog._encode(named), _encoded(named, (rows[half], vpns[half], writes[half], tasks[half])))
    assert not np.array_equal(kprog._encode(named)[0], plain[0])  # the named region did change the program
    other = np.array(["p0"] * len(tasks), dtype=object)
    for bad in ((rows + 1, vpns, writes, tasks), (rows, vpns + 1, writes, tasks), (rows, vpns, 1 - writes, tasks),
                (rows, vpns, writes, other), (rows[::-1].copy(), vpns[::-1].copy(), writes[::-1].copy(), tasks)):
        assert not kprog._told_ok(steps, bad)
        _same_program(plain, _encoded(steps, bad))


def test_columns_dropped_when_items_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trace longer than prepare() keeps is read again by items(): no columns, nothing told; the same figures as
    from the kept items with their columns."""
    trace, kept, _steps = _conv("prefork-server")
    monkeypatch.setattr(runtrace, "CACHE_ITEMS", 100)
    conv = prepare(RunTrace.open(TRACES / "prefork-server.trace.gz"))
    assert conv.kept is None
    assert conv.faults is None or not conv.faults.at
    assert tracerun.fault_arrays(conv) is None
    streamed, cached = simulate(trace, conversion=conv, engine="fast"), simulate(trace, conversion=kept, engine="fast")
    assert {k: v for k, v in streamed.to_json().items() if k not in NOT_COMPARED} == {
        k: v for k, v in cached.to_json().items() if k not in NOT_COMPARED}


def test_subclass_items_get_no_columns() -> None:
    """A Conversion whose items() hands out steps of its own gets no columns (they tell the kept items)."""
    _trace, conv, _steps = _conv("prefork-server")

    class Given(Conversion):
        def items(self) -> Any:
            return iter(())

    given = Given(*[getattr(conv, f) for f in conv.__dataclass_fields__])
    assert tracerun.fault_arrays(conv) is not None
    assert tracerun.fault_arrays(given) is None


@pytest.mark.parametrize("name", ["redis-bgsave", "prefork-server"])
def test_figures_same_without_columns(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """simulate() on the fast engine: the same run-trace figures with the columns as without (every step read)."""
    trace, conv, _steps = _conv(name)
    used: list[bool] = []
    original = kprog._told_ok

    def noted(steps: list[Step], cols: kprog.Told) -> bool:
        ok = original(steps, cols)
        used.append(ok)
        return ok

    monkeypatch.setattr(kprog, "_told_ok", noted)
    with_columns = simulate(trace, conversion=conv, engine="fast")
    assert used and all(used)
    monkeypatch.setattr(tracerun, "fault_arrays", lambda conv: None)
    used.clear()
    without = simulate(trace, conversion=conv, engine="fast")
    assert not used
    a, b = with_columns.to_json(), without.to_json()
    assert {k: v for k, v in a.items() if k not in NOT_COMPARED} == {k: v for k, v in b.items()
                                                                     if k not in NOT_COMPARED}


def test_tables_made_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long program makes room for a table per (task, PMD) its recorded faults touch before it runs (one growth of
    the tables instead of doublings), with the same figures and the same tables in use as growing them on demand."""
    trace, conv, _steps = _conv("pool")
    grown: list[int] = []
    original = tracerun.TraceMachine._grow_rows

    def noted(self: tracerun.TraceMachine, name: str, need: int, fill: int | None = 0, used: int | None = None) -> None:
        if name == "tb" and need > self.tb.shape[0]:
            grown.append(need)
        original(self, name, need, fill, used)

    monkeypatch.setattr(tracerun.TraceMachine, "_grow_rows", noted)
    monkeypatch.setattr(tracerun, "TABLES_AHEAD_FAULTS", 1 << 62)
    monkeypatch.setattr(tracerun, "TABLES_AHEAD_SOME", 1 << 62)
    on_demand = simulate(trace, conversion=conv, engine="fast")
    doublings = len(grown)
    grown.clear()
    monkeypatch.setattr(tracerun, "TABLES_AHEAD_FAULTS", 64)
    monkeypatch.setattr(tracerun, "TABLES_AHEAD_SOME", 64)
    monkeypatch.setattr(tracerun, "TABLES_AHEAD_MIN", 16)
    ahead = simulate(trace, conversion=conv, engine="fast")
    assert doublings >= 4 and 1 <= len(grown) < doublings
    assert max(grown) >= 150  # pool's program uses 187 tables
    a, b = on_demand.to_json(), ahead.to_json()
    assert {k: v for k, v in a.items() if k not in NOT_COMPARED} == {k: v for k, v in b.items()
                                                                     if k not in NOT_COMPARED}
    assert on_demand.machine is not None and ahead.machine is not None
    ntb = int(on_demand.machine.glob[tracerun.L.G_NTB])
    assert ntb == int(ahead.machine.glob[tracerun.L.G_NTB])
    assert np.array_equal(on_demand.machine.tb[:ntb], ahead.machine.tb[:ntb])
    assert np.array_equal(on_demand.machine.ptf[:ntb], ahead.machine.ptf[:ntb])


def test_racy_regions_from_columns() -> None:
    """The region arguments of racy rows (TraceProgram's FA_RACY flagging): told ones from the columns, the others
    (here half the faults untold, and non-fault rows) from the steps; the same as reading every step."""
    _trace, conv, steps = _conv("prefork-server")
    arrays = tracerun.fault_arrays(conv)
    assert arrays is not None
    told = arrays.stretch(0, len(steps))
    assert told is not None
    rows = sorted(random.Random(3).sample(range(len(steps)), 400))
    expected = [steps[k].args[0] if steps[k].args else None for k in rows]
    rows = [k for k, e in zip(rows, expected, strict=True) if e is not None]
    expected = [e for e in expected if e is not None]
    half = tuple(col[::2] for col in told)
    for cols in (told, half, None):
        listed = kprog.FaultSteps(steps)
        listed.faults = cols  # type: ignore[assignment]
        assert tracerun._racy_regions(listed, rows) == expected
    wrong = kprog.FaultSteps(steps)
    wrong.faults = (told[0], told[1] + 1, told[2], told[3])
    assert tracerun._racy_regions(wrong, rows) != expected  # the columns are what it reads


def test_tables_ahead_counts_distinct_task_pmds(monkeypatch: pytest.MonkeyPatch) -> None:
    """_tables_ahead() counts the distinct (task, PMD) pairs of the recorded faults -- a pair met again after
    others counted once, runs of one pair once, other rows ignored -- as a sort of every fault's pair does."""
    monkeypatch.setattr(tracerun, "TABLES_AHEAD_FAULTS", 1)
    monkeypatch.setattr(tracerun, "TABLES_AHEAD_MIN", 1)
    rnd = random.Random(5)
    n = 5000
    prog = np.zeros((n, kprog.P_COLS), dtype=np.int64)
    prog[:, kprog.P_OP] = [kprog.OP_FAULT if rnd.random() < 0.9 else kprog.OP_READ for _ in range(n)]
    prog[:, kprog.P_TASK] = np.repeat(rnd.choices(range(6), k=n // 50), 50)
    prog[:, kprog.P_FIRST] = np.cumsum(rnd.choices([0, 1, 7, 600, -900], k=n)) + (1 << 30)

    class Fake:
        nfault = int(np.count_nonzero(prog[:, kprog.P_OP] == kprog.OP_FAULT))

    fake: Any = Fake()
    fake.prog = prog
    fake.m = type("M", (), {"po": 9})()
    faults = prog[prog[:, kprog.P_OP] == kprog.OP_FAULT]
    expected = len({(t, v >> 9) for t, v in zip(faults[:, kprog.P_TASK].tolist(), faults[:, kprog.P_FIRST].tolist(),
                                                   strict=True)})
    assert 100 < expected < len(faults) // 2
    assert tracerun.TraceProgram._tables_ahead(fake) == expected
