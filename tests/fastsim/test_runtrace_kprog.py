"""``foliosim run-trace`` on the fast engine with its steps in compiled stretches (kprog.run_program with the
recorded-fault opcode, tracerun.TraceProgram) against the same engine one step at a time (TraceRunner.execute and
its batched flush): the whole run-trace JSON and the machine left at the end are the same, on every shipped trace,
in all four configurations; perturbed programs are caught."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")

from foliosim.evaluate.runner import FAULT_MAPPED, FAULT_NO_VMA, FAULT_PRESENT, FAULT_PROT, FAULT_TAKEN
from foliosim.fast import kernels as K
from foliosim.fast.sim import kprog, tracerun
from foliosim.fast.sim import layout as L
from foliosim.kconfig import KernelConfig
from foliosim.live.tracesim import TraceRun, simulate
from foliosim.workloads.runtrace import Conversion, RunTrace, prepare
from foliosim.workloads.steps import Step

TRACES = Path(__file__).resolve().parents[2] / "examples" / "run-traces"
ALL = sorted(p.name.removesuffix(".trace.gz") for p in TRACES.glob("*.trace.gz"))
NOT_COMPARED = frozenset({"sim_seconds", "check_seconds", "wall_seconds", "load_seconds", "faults_per_second"})
CONFIGS = {"64": KernelConfig(), "64-nopmc": KernelConfig(no_page_mapcount=True),
           "32": KernelConfig(word_bits=32), "32-nopmc": KernelConfig(word_bits=32, no_page_mapcount=True)}
#: glob entries that are not machine state: the table hash's fill (it follows when the hash was rebuilt) and the
#: fault count of the last compiled call
_LAYOUT = frozenset({L.G_HUSED, L.G_NGATHER})


@cache
def _trace(name: str) -> tuple[RunTrace, Conversion]:
    trace = RunTrace.open(TRACES / f"{name}.trace.gz")
    return trace, prepare(trace)


def _state(run: TraceRun) -> dict[str, Any]:
    """The fast machine after the run: counters, tasks, MMs with their VMAs and mappings, live folios' fields."""
    m = run.machine
    assert isinstance(m, tracerun.TraceMachine)
    n = int(m.glob[L.G_NFOLIO])
    live = np.flatnonzero(m.fs[:n, K.F_LIVE] != 0)
    return {
        "glob": [v for k, v in enumerate(m.glob.tolist()) if k not in _LAYOUT],
        "tasks": sorted((t.name, t.pid, t.mm.name, t.vfork_blocked) for t in m.tasks.values()),
        "mms": {mm.name: (mm.mm_id, mm.users, mm.count, mm.zapped,
                          [(v.start, v.end, v.read, v.write, v.shared, v.anon_vma, v.anon_vma_forked, v.dontfork,
                            None if v.file is None else v.file.name, v.pgoff) for v in mm.vmas],
                          m.mappings(mm)) for mm in m.mms.values()},
        "folios": {int(f): m.fs[f].tolist() for f in live.tolist()},
        "cow": m.cow_counts.tolist(),
        "pycount": dict(m.pycount),
        "racy": sorted(run.check.racy) if run.check is not None else None,  # folios racy faults touched
    }


def _run(name: str, config: KernelConfig, oracle: str = "off", compiled: bool = True,
         conversion: Conversion | None = None) -> tuple[TraceRun, int]:
    """simulate() on the fast engine, with or without the compiled stretches; how many stretches ran compiled."""
    trace, conv = _trace(name)
    stretches = 0
    warm = list(tracerun._WARM_STEPS)
    original_run, original_compiled = tracerun.TraceProgram.run, tracerun.TraceRunner.compiled

    def counted(self: tracerun.TraceProgram) -> None:
        nonlocal stretches
        stretches += self.steps != warm  # not load_kernels()' program
        original_run(self)

    def never(self: tracerun.TraceRunner) -> bool:
        return False

    tracerun.TraceProgram.run = counted  # type: ignore[method-assign]
    if not compiled:
        tracerun.TraceRunner.compiled = never  # type: ignore[method-assign]
    try:
        fell: list[str] = []
        run = simulate(trace, config=config, oracle=oracle, conversion=conversion or conv, engine="fast",
                       on_fallback=fell.append)
    finally:
        tracerun.TraceProgram.run = original_run  # type: ignore[method-assign]
        tracerun.TraceRunner.compiled = original_compiled  # type: ignore[method-assign]
    assert fell == [] and run.engine == "fast"
    return run, stretches


def _figures(run: TraceRun) -> dict[str, Any]:
    return {k: v for k, v in run.to_json().items() if k not in NOT_COMPARED}


def _same(name: str, config: KernelConfig, oracle: str = "off") -> tuple[TraceRun, TraceRun]:
    fast, stretches = _run(name, config, oracle)
    slow, none = _run(name, config, oracle, compiled=False)
    assert none == 0 and stretches > 0
    assert _figures(fast) == _figures(slow)
    assert _state(fast) == _state(slow)
    return fast, slow


# The shipped traces in the default configuration; the other three configurations on the smaller ones here and on
# all of them with --runslow.
QUICK = [(name, "64") for name in ALL] + [(name, cfg) for name in ("fork-child", "prefork-server.census",
                                                                   "sh-pipeline", "stuck-bit.census")
                                          for cfg in ("64-nopmc", "32", "32-nopmc")]


@pytest.mark.parametrize(("name", "cfg"), QUICK)
def test_compiled_stretches_like_one_step_at_a_time(name: str, cfg: str) -> None:
    fast, _ = _same(name, CONFIGS[cfg])
    assert fast.faults_taken > 0 and fast.cow


@pytest.mark.slow
@pytest.mark.parametrize("cfg", ["64-nopmc", "32", "32-nopmc"])
@pytest.mark.parametrize("name", ALL)
def test_compiled_stretches_every_configuration(name: str, cfg: str) -> None:
    _same(name, CONFIGS[cfg])


@pytest.mark.parametrize(("name", "oracle"), [("prefork-server.census", "reuse"), ("redis-bgsave.census", "reuse"),
                                              ("sh-pipeline.census", "every")])
def test_oracle_schedule_like_one_step_at_a_time(name: str, oracle: str) -> None:
    """The reuse oracle's schedule (the steps in which a page was reused) comes from the compiled loop's notes."""
    fast, slow = _same(name, KernelConfig(), oracle)
    assert fast.oracle_runs == slow.oracle_runs > 1 and fast.oracle_problems == []


def test_recorded_faults_counted_in_the_loop() -> None:
    """The compiled loop counts every outcome of a recorded fault (outside any VMA, against its protection, taken,
    already mapped writable, present) and the CoW decisions, also across a fork and an exit in the stretch."""
    _, conv = _trace("fork-child")
    heap = [Step("fault", "p", ("h", k, 1)) for k in range(8)]
    given = (Step("spawn", "p"), Step("mmap", "p", ("h", 16, "anon", None, None, "rw", 0)),
             Step("mmap", "p", ("ro", 4, "anon", None, None, "r", 0)), *heap,
             Step("fault", "p", ("h", 40, 1)), Step("fault", "p", ("ro", 0, 1)), Step("fault", "p", ("ro", 1, 0)),
             Step("fault", "p", ("h", 2, 1)), Step("fault", "p", ("h", 3, 0)), Step("fork", "p", ("c",)),
             *[Step("fault", "c", ("h", k, 1)) for k in range(4)], *[Step("fault", "p", ("h", k, 0)) for k in range(8)],
             Step("fault", "p", ("h", 6, 1)), Step("exit", "c"), *[Step("fault", "p", ("h", k, 1)) for k in range(8)],
             *[Step("fault", "p", ("nowhere", 0, 1)) for _ in range(2)], Step("fault", "q", ("h", 0, 1)))
    assert len(given) >= tracerun.STRETCH_MIN

    class Given(Conversion):
        def items(self) -> Iterator[Step]:
            return iter(given)

    conversion = Given(*[getattr(conv, f) for f in conv.__dataclass_fields__])
    fast, stretches = _run("fork-child", KernelConfig(), conversion=conversion)
    slow, _ = _run("fork-child", KernelConfig(), compiled=False, conversion=conversion)
    assert stretches == 1
    assert _figures(fast) == _figures(slow)
    assert _state(fast) == _state(slow)
    # taken: 8 first writes, a read in the read-only mapping (zero page), the child's 4 copies, the parent's
    # write to page 6 after the fork, its 8 writes after the child exited but to page 6 (reused, now writable)
    assert fast.faults == {FAULT_TAKEN: 8 + 1 + 4 + 1 + 7, FAULT_NO_VMA: 1, FAULT_PROT: 1, FAULT_MAPPED: 1 + 1,
                           FAULT_PRESENT: 1 + 8, "refused by the simulator": 3}
    assert fast.cow == Counter(slow.cow) and sum(fast.cow.values()) >= 5


def _perturbed(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """kprog._encode() (what ProgramRun encodes with) with a deliberate mistake in the recorded-fault rows."""
    original = kprog._encode

    def encode(steps: list[Step]) -> tuple[Any, ...]:
        out = original(steps)
        prog = out[0]
        rows = np.flatnonzero(prog[:, kprog.P_OP] == kprog.OP_FAULT)
        if how == "read":  # every recorded fault a read
            prog[rows, kprog.P_ARG] = 0
            prog[rows, kprog.P_FILL] = -1
        elif how == "page":  # the page after the recorded one
            prog[rows[::7], kprog.P_FIRST] += 1
        return out

    monkeypatch.setattr(kprog, "_encode", encode)


@pytest.mark.parametrize("how", ["read", "page"])
def test_perturbed_program_is_caught(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    slow, _ = _run("prefork-server.census", KernelConfig(), compiled=False)
    _perturbed(monkeypatch, how)
    fast, stretches = _run("prefork-server.census", KernelConfig())
    assert stretches > 0
    assert _figures(fast) != _figures(slow) or _state(fast) != _state(slow)


def test_encode_recorded_faults() -> None:
    """A fault step's row: region and page, one page, the written flag, the fill a write of that step would
    have; regions first seen in a fault numbered after those of the accesses."""
    steps = [Step("write", "a", ("x", 1, 2)), Step("fault", "a", ("y", 3, 1)), Step("fault", "b", (4096, 0, 0)),
             Step("fault", "a", ("x", 5, True))]
    prog, names, regions = kprog.encode(steps)
    assert names == ["a", "b"] and regions == {"x": 0, "y": 1, 4096: 2}
    assert prog[1:].tolist() == [[kprog.OP_FAULT, 0, 1, 3, 1, 1, 1 + 37 % 255],
                                 [kprog.OP_FAULT, 1, 2, 0, 1, 0, -1],
                                 [kprog.OP_FAULT, 0, 0, 5, 1, 1, 1 + (3 * 37) % 255]]


def test_unnoted_races_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Racy faults run in the compiled stretch note the folio at their address before and after (the live
    checker's racy set); a stretch that ran them without the note is caught."""
    slow, _ = _run("prefork-server", KernelConfig(), compiled=False)
    fast, _ = _run("prefork-server", KernelConfig())
    assert fast.check is not None and slow.check is not None and len(fast.check.racy) > 100
    assert _state(fast)["racy"] == _state(slow)["racy"]
    original = tracerun.TraceProgram.__init__

    def unnoted(self: tracerun.TraceProgram, *args: Any) -> None:
        original(self, *args)
        self.prog[:, kprog.P_ARG] &= ~kprog.FA_RACY

    monkeypatch.setattr(tracerun.TraceProgram, "__init__", unnoted)
    bad, _ = _run("prefork-server", KernelConfig())
    assert _state(bad)["racy"] != _state(slow)["racy"]


def test_load_kernels_loads_the_merge_kernel() -> None:
    """load_kernels() runs a merge step, so its kernel (kvma.merge_mm) is not first loaded inside a simulation (sim
    time); a fresh process, as another test may have loaded it already."""
    code = ("from foliosim.fast.sim import kvma, tracerun\nfrom foliosim.kconfig import KernelConfig\n"
            "before = len(kvma.merge_mm.signatures)\ntracerun.load_kernels(KernelConfig(), False)\n"
            "print(before, len(kvma.merge_mm.signatures))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})
    assert out.stdout.split() == ["0", "1"]


def test_load_kernels_loads_the_lookup_kernel() -> None:
    """load_kernels(lookup=True) (a trace with live snapshots) also loads a page's lookup (kern.lookup: a racy
    fault's folio before and after), else first loaded inside a simulation (a first run's sim time, milliseconds);
    without snapshots it is not loaded; a fresh process, as another test may have loaded it already."""
    code = ("from foliosim.fast.sim import kern, tracerun\nfrom foliosim.kconfig import KernelConfig\n"
            "before = len(kern.lookup.signatures)\ntracerun.load_kernels(KernelConfig(), False)\n"
            "between = len(kern.lookup.signatures)\ntracerun.load_kernels(KernelConfig(), False, lookup=True)\n"
            "print(before, between, len(kern.lookup.signatures))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})
    assert out.stdout.split() == ["0", "0", "1"]
