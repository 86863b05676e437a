"""Compare's driving run of every shipped recorded trace on the fast engine against the reference: the whole
scoring stream (every op with its step and MM count, every question in its place, the run rows)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

pytest.importorskip("numba")

from foliosim.evaluate.probe import Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.evaluate.stream import ScoringStream
from foliosim.fast.sim.engine import Unsupported
from foliosim.fast.sim.score import FastDrive, drive_fast
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import make_design
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads.generators import WORKLOADS, build_workload, default_params
from foliosim.workloads.runtrace import run_trace_steps

TRACES = Path(__file__).resolve().parents[2] / "examples" / "run-traces"
ALL = sorted(p.name for p in TRACES.glob("*.trace.gz"))
#: the quick ones run always, the rest with --runslow (the reference takes seconds to a minute on each)
QUICK = ("fork-child.trace.gz", "sh-pipeline.census.trace.gz", "stuck-bit.census.trace.gz",
         "prefork-server.trace.gz")


def _folio_steps(stream: ScoringStream) -> list[int]:
    return [step for step, op in zip(stream.op_step, stream.ops, strict=True) if op.folio is not None]


def _compare(steps: list, config: KernelConfig, oracle: str, mm_steps: bool = True,
             interpreter: bool | None = None) -> None:
    m = Machine(config, MachineOptions(keep_events=False, check=False))
    probe = Probe(m, make_design("kernel", config), oracle, record=True, census=True)
    stats = WorkloadRunner(m, probe, strict=False).run(steps)
    probe.finish()
    ref = probe.stream
    assert ref is not None and stats.skipped == 0
    fast = drive_fast(steps, config, oracle=oracle, interpreter=interpreter)
    assert fast.stream.questions == ref.questions  # every question at the same op position, same truth
    assert fast.stream.digest() == ref.digest()
    assert fast.stream.ops == ref.ops
    if mm_steps:
        assert fast.stream.op_step == ref.op_step
    else:  # the steps the scorer reads: those of the ops on folios (see the test below)
        assert _folio_steps(fast.stream) == _folio_steps(ref)
    assert fast.stream.op_mms == ref.op_mms
    assert fast.stream.end_step == ref.end_step
    assert fast.run_rows == sorted(probe.run_rows())
    assert fast.faults == stats.faults


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in QUICK else pytest.mark.slow) for n in ALL])
def test_every_recorded_trace_stream_equals_reference(name: str) -> None:
    steps = run_trace_steps(gzip.decompress((TRACES / name).read_bytes()).decode(), name)
    _compare(steps, KernelConfig(), "end")  # compare's oracle for workload files (auto)


@pytest.mark.parametrize("workload", ["fork-child", "prefork", "mix", "snapshot"])
def test_generated_workload_stream_equals_reference(workload: str) -> None:
    """The default sweep's workloads in the compiled step interpreter, oracle on. In ``mix`` an
    mm_new made by a step without rmap ops takes the step of the next op in both fast paths, the reference that of
    its next probe sync, a few steps earlier (as before the step interpreter drove compare): the scorer reads no
    step of an op without a folio."""
    steps = build_workload(workload, default_params(workload), 7)
    _compare(steps, KernelConfig(word_bits=32, no_page_mapcount=True), "reuse", mm_steps=workload != "mix",
             interpreter=True)


def _same(fa: FastDrive, fb: FastDrive) -> None:
    assert fa.stream.questions == fb.stream.questions
    assert fa.stream.ops == fb.stream.ops
    assert fa.stream.op_step == fb.stream.op_step
    assert fa.stream.op_mms == fb.stream.op_mms
    assert fa.stream.end_step == fb.stream.end_step
    assert fa.run_rows == fb.run_rows
    assert fa.faults == fb.faults and fa.steps == fb.steps and fa.errors == fb.errors


@pytest.mark.parametrize("bits,npm", [(64, False), (32, True)])
@pytest.mark.parametrize("name", ALL)
def test_interpreter_stream_equals_stepwise(name: str, bits: int, npm: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every recorded trace: the driving run in the compiled step interpreter's stretches (questions placed from
    its per-row notes afterwards) gives the stream of the step-by-step run (one fault per compiled call). The
    interpreter is handed the steps as compare hands them (tracerun.told_steps(): the recorded faults told by the
    reader's columns, which fill their program rows instead of the Step objects); it must take the columns."""
    from foliosim.fast.sim import kprog
    from foliosim.fast.sim.tracerun import told_steps
    from foliosim.workloads.runtrace import RunTrace, prepare

    conv = prepare(RunTrace(name, text=gzip.decompress((TRACES / name).read_bytes()).decode()))
    steps = conv.steps()
    told = told_steps(conv, steps)
    assert type(told) is kprog.FaultSteps and told.faults is not None and list(told) == steps
    verdicts: list[bool] = []
    check = kprog._told_ok

    def spy(steps: list, cols: kprog.Told) -> bool:
        verdicts.append(check(steps, cols))
        return verdicts[-1]

    monkeypatch.setattr(kprog, "_told_ok", spy)
    config = KernelConfig(word_bits=bits, no_page_mapcount=npm)
    fast = drive_fast(told, config, oracle="reuse", interpreter=True)
    assert verdicts == [True] and told.faults is not None  # the columns were taken, not dropped
    slow = drive_fast(steps, config, oracle="reuse", interpreter=False)
    assert len(fast.stream.questions) > 10
    _same(fast, slow)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_interpreter_generated_workloads(workload: str, seed: int) -> None:
    """Every generated workload (compare's default sweep), both paths, oracle on: the same stream."""
    steps = build_workload(workload, default_params(workload), seed)
    config = KernelConfig()
    try:
        slow = drive_fast(steps, config, interpreter=False)
    except Unsupported:
        pytest.skip(f"the fast engine does not drive {workload}")
    _same(drive_fast(steps, config, interpreter=True), slow)


def test_interpreter_chosen_by_stretch_length() -> None:
    """drive_fast() runs recorded programs (hundreds of steps between stops) in the interpreter, generated workloads
    (a few) step by step."""
    from foliosim.fast.sim.score import long_stretches

    steps = run_trace_steps(gzip.decompress((TRACES / "make.trace.gz").read_bytes()).decode(), "make")
    assert long_stretches(steps)
    assert not long_stretches(build_workload("fork-exec", default_params("fork-exec"), 1))


def test_stretch_length_reads_only_the_untold_steps() -> None:
    """long_stretches() does not read the steps a FaultSteps list's columns tell (recorded faults, never a stop): 40
    fork steps are 40 stops, but with 39 of them told as faults only one is read."""
    import numpy as np

    from foliosim.fast.sim import kprog
    from foliosim.fast.sim.score import long_stretches
    from foliosim.workloads.steps import Step

    forks = [Step("fork", "p", (f"c{k}",)) for k in range(40)]
    told = kprog.FaultSteps(forks)
    rows = np.arange(1, 40, dtype=np.int64)
    told.faults = (rows, rows, np.zeros(39, dtype=np.int64), np.array(["p"] * 39, dtype=object))
    assert not long_stretches(forks) and long_stretches(told)
    told.faults = (rows + 1, rows, np.zeros(39, dtype=np.int64), np.array(["p"] * 39, dtype=object))  # past the end
    assert not long_stretches(told)  # columns that do not fit the list: every step read
