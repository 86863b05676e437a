"""``foliosim run-trace`` on the compiled engine against the reference: the same figures, the same live agreement,
the oracle modes, the fallbacks and the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

pytest.importorskip("numba")

from foliosim.cli import main
from foliosim.fast.sim import layout as L
from foliosim.fast.sim import tracerun
from foliosim.fast.sim.engine import Unsupported
from foliosim.kconfig import KernelConfig
from foliosim.live.tracesim import ORACLE_FAST, TraceRun, simulate
from foliosim.vm.events import OracleViolation
from foliosim.workloads.runtrace import Conversion, Race, RunTrace, Snapshot, prepare
from foliosim.workloads.steps import Step

TRACES = Path(__file__).resolve().parents[2] / "examples" / "run-traces"
#: what differs between the engines by design: the timings, and which engine and oracle ran
NOT_COMPARED = frozenset({"sim_seconds", "check_seconds", "wall_seconds", "load_seconds", "faults_per_second", "engine",
                          "oracle_engine"})


@cache
def _trace(name: str) -> tuple[RunTrace, Conversion]:
    trace = RunTrace.open(TRACES / f"{name}.trace.gz")
    return trace, prepare(trace)


def _figures(run: TraceRun) -> dict[str, Any]:
    return {k: v for k, v in run.to_json().items() if k not in NOT_COMPARED}


def _both(name: str, config: KernelConfig | None = None, oracle: str = "off") -> tuple[TraceRun, TraceRun]:
    trace, conv = _trace(name)
    fallbacks: list[str] = []
    ref = simulate(trace, config=config, oracle=oracle, conversion=conv)
    fast = simulate(trace, config=config, oracle=oracle, conversion=conv, engine="fast", on_fallback=fallbacks.append)
    assert fallbacks == []
    assert (ref.engine, fast.engine) == ("reference", "fast")
    return ref, fast


@pytest.mark.parametrize("name", ["fork-child", "sh-pipeline", "stuck-bit.census", "prefork-server",
                                  "sh-pipeline.census"])
def test_same_figures_on_both_engines(name: str) -> None:
    ref, fast = _both(name)
    assert _figures(fast) == _figures(ref)
    assert fast.faults_taken > 100 and fast.cow and fast.allocated and fast.alive
    assert fast.faults_taken == ref.faults_taken and fast.sim_seconds > 0 and fast.load_seconds > 0 == ref.load_seconds


@pytest.mark.parametrize(("bits", "npm"), [(64, True), (32, False), (32, True)])
def test_same_figures_in_every_configuration(bits: int, npm: bool) -> None:
    ref, fast = _both("prefork-server", KernelConfig(word_bits=bits, no_page_mapcount=npm))
    assert _figures(fast) == _figures(ref)


def test_same_live_agreement_on_both_engines() -> None:
    """redis-bgsave.trace.gz holds 26 live snapshots (the .census traces hold none) and a few disagreements: the
    checker reads the fast machine through tracerun.SnapshotView and must find the same agreement, field by
    field, cause by cause, example by example."""
    ref, fast = _both("redis-bgsave")
    assert ref.check is not None and fast.check is not None
    assert fast.check.snapshots == 26 and fast.check.compared > 100_000 and fast.check.file_pages > 0
    assert fast.check.to_json() == ref.check.to_json()
    assert 0 < fast.check.agreed < fast.check.compared and fast.check.causes  # disagreements, classified alike
    assert _figures(fast) == _figures(ref)


@pytest.mark.parametrize(("name", "oracle"), [("prefork-server", "reuse"), ("fork-child", "every")])
def test_oracle_modes(name: str, oracle: str) -> None:
    ref, fast = _both(name, oracle=oracle)
    assert _figures(fast) == _figures(ref)  # oracle_runs included: the reference's schedule
    assert fast.oracle_runs > 1 and fast.oracle_problems == [] and fast.stopped == ""
    assert fast.to_json()["oracle_engine"] == ORACLE_FAST and ref.oracle_engine != ORACLE_FAST


def test_fast_oracle_reports_a_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large-folio reuse without the shared-bit test (the mutant) lets a child read its parent's later write: the
    fast oracle stops the run and says where; with the oracle off the run goes to the end."""
    monkeypatch.setattr(tracerun.TraceMachine, "mutant", L.MUTANT_NO_SHARED_TEST)
    trace, conv = _trace("prefork-server")
    run = simulate(trace, oracle="reuse", conversion=conv, engine="fast")
    assert run.engine == "fast" and len(run.oracle_problems) == 1
    assert run.oracle_problems[0].startswith("isolation: a page does not read what its MM last wrote there at 0x")
    assert "the isolation oracle found a problem" in run.stopped
    assert run.steps < conv.stats.steps
    quiet = simulate(trace, oracle="off", conversion=conv, engine="fast")
    assert quiet.oracle_problems == [] and quiet.stopped == "" and quiet.steps == conv.stats.steps


class _Steps(Conversion):
    """A converted trace whose steps are given (steps the shipped traces never make the simulator refuse)."""

    given: tuple[Step, ...] = ()

    def items(self) -> Iterator[Step | Snapshot | Race]:
        return iter(self.given)


def test_refused_steps_are_counted_alike() -> None:
    """Steps the simulator refuses (an unknown task or region, a vfork parent's access, calls outside the
    mappings) are counted by cause with the same examples; recorded faults outside a VMA or against its
    protection, on a present page, of a sleeping vfork parent on a present page, alike."""
    trace, conv = _trace("fork-child")
    _Steps.given = (
        Step("spawn", "p"), Step("mmap", "p", ("h", 16, "anon", None, None, "rw", 0)),
        Step("fault", "p", ("h", 0, 1)), Step("fault", "q", ("h", 0, 1)), Step("fault", "p", ("nowhere", 0, 1)),
        Step("write", "p", ("nowhere", 0, 1)), Step("mprotect", "p", ("h", 8, 16, "r")),
        Step("madvise", "p", ("h", 12, 16, "dontneed")), Step("mprotect", "p", ("h", 0, 2, "r")),
        Step("fault", "p", ("h", 1, 1)), Step("fault", "p", ("h", 40, 1)), Step("fault", "p", ("h", 3, 0)),
        Step("fault", "p", ("h", 3, 1)), Step("vfork", "p", ("c",)), Step("fault", "p", ("h", 3, 1)),
        Step("fault", "p", ("h", 5, 1)), Step("write", "p", ("h", 0, 1)), Step("fault", "c", ("h", 6, 1)),
        Step("exit", "c"), Step("fault", "p", ("h", 5, 1)), Step("write", "p", ("h", 8, 2)),
        Step("munmap", "p", ("h", 20, 4)), Step("exit", "p"), Step("exit", "p"))
    given = _Steps(*[getattr(conv, f.name) for f in fields(conv)])
    ref = simulate(trace, conversion=given)
    fast = simulate(trace, conversion=given, engine="fast")
    assert fast.engine == "fast" and _figures(fast) == _figures(ref)
    assert fast.rejected == {"fault refused by the simulator": 3, "write refused by the simulator": 2,
                             "mprotect -> -ENOMEM": 1, "madvise -> -ENOMEM": 1, "exit refused by the simulator": 1}
    assert fast.faults == {"refused by the simulator": 3, "taken": 5, "not permitted by the VMA's protection": 1,
                           "outside any VMA of the simulator": 1, "already mapped writable": 1}  # the last: vfork's
    assert "task 'p' sleeps in vfork()" in " ".join(fast.rejected_examples)


def test_other_designs_and_unmodelled_steps_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    trace, conv = _trace("fork-child")
    said: list[str] = []
    run = simulate(trace, design="exact", conversion=conv, engine="fast", on_fallback=said.append)
    assert run.engine == "reference" and run.design_totals and "design 'exact'" in said[0]

    def refuse(self: tracerun.TraceRunner, step: Any, index: int) -> None:
        if index == 50:
            raise Unsupported("a step for this test")
        original(self, step, index)

    original = tracerun.TraceRunner.execute
    monkeypatch.setattr(tracerun.TraceRunner, "execute", refuse)
    said.clear()
    run = simulate(trace, conversion=conv, engine="fast", on_fallback=said.append)
    assert said == ["the fast engine does not model a step for this test"]
    assert run.engine == "reference"
    assert _figures(run) == _figures(simulate(trace, conversion=conv))
    monkeypatch.setattr(tracerun.TraceRunner, "execute", original)

    def broken(self: tracerun.TraceRunner) -> None:  # a consistency check of the compiled loop fails
        if self._ops and self.index > 40:
            self.m.glob[L.G_ERR], self.m.glob[L.G_ERRF] = L.E_RMAP, 7
            raise OracleViolation("fast engine: the rmap core rejected a call (folio f7)")

    monkeypatch.setattr(tracerun.TraceRunner, "flush", broken)
    said.clear()
    run = simulate(trace, conversion=conv, engine="fast", oracle="reuse", on_fallback=said.append)
    assert len(said) == 1 and said[0].startswith("the fast engine stopped (the rmap core rejected a call (folio f7)")
    assert run.engine == "reference" and run.oracle_problems == [] and not run.stopped
    with pytest.raises(ValueError, match="engine must be one of reference, fast"):
        simulate(trace, conversion=conv, engine="compiled")


def test_cli_engine(tmp_path: Path) -> None:
    runner = CliRunner()
    path = str(TRACES / "fork-child.trace.gz")
    out = tmp_path / "fast.json"
    fast = runner.invoke(main, ["run-trace", "-q", "--engine", "fast", path, "--json", str(out)])
    assert fast.exit_code == 0, fast.output
    assert "running the reference" not in fast.stderr and "engine: fast" in fast.stdout
    ref = runner.invoke(main, ["run-trace", "-q", "--engine", "reference", path])
    assert ref.exit_code == 0 and "engine: reference" in ref.stdout
    data = json.loads(out.read_text())
    assert data["engine"] == "fast" and data["faults"]["taken"] == 129 and data["live"]["snapshots"] == 4
    other = runner.invoke(main, ["run-trace", "-q", "--engine", "fast", "--design", "exact", path])
    assert other.exit_code == 0 and "design 'exact'" in other.stderr and "running the reference engine" in other.stderr
    for option, value in (("--engine", "compiled"), ("--oracle", "sometimes")):
        bad = runner.invoke(main, ["run-trace", option, value, path])
        assert bad.exit_code == 2 and f"Invalid value for '{option}': '{value}' is not one of" in bad.output
