"""Open-loop driving runs on the fast engine against the reference: the same scoring stream, the same cells."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("numba")

from foliosim.cli import main
from foliosim.evaluate.cell import engine_of, file_workload, make_cell, run_cells
from foliosim.evaluate.probe import Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.evaluate.stream import ScoringStream
from foliosim.fast.sim.engine import Unsupported
from foliosim.fast.sim.score import drive_fast
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import DESIGNS, make_design
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads.generators import WORKLOADS, build_workload, default_params

CONFIGS = [(64, False), (32, True)]
#: generated workloads whose whole streams are compared (every generated workload drives on the fast engine: the
#: cells test compares them all); prefork and shared-file map files and shmem and advise MADV_COLD/PAGEOUT over them
FAST_WORKLOADS = ("fork-child", "snapshot", "handover", "prefork", "shared-file")
TRACES = Path(__file__).resolve().parents[2] / "examples" / "run-traces"
SMALL_TRACES = ("fork-child.trace.gz", "sh-pipeline.census.trace.gz", "stuck-bit.census.trace.gz")


def reference_stream(steps: list, config: KernelConfig, oracle: str = "reuse") -> tuple[ScoringStream, list]:
    m = Machine(config, MachineOptions(keep_events=False, check=False))
    probe = Probe(m, make_design("kernel", config), oracle, record=True, census=True)
    WorkloadRunner(m, probe, strict=True).run(steps)
    probe.finish()
    assert probe.stream is not None
    return probe.stream, sorted(probe.run_rows())


@pytest.mark.parametrize("bits,npm", CONFIGS)
@pytest.mark.parametrize("workload", FAST_WORKLOADS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_stream_equals_reference(workload: str, bits: int, npm: bool, seed: int) -> None:
    config = KernelConfig(word_bits=bits, no_page_mapcount=npm)
    steps = build_workload(workload, default_params(workload), seed)
    ref, ref_rows = reference_stream(steps, config)
    fast = drive_fast(steps, config, batch=5)  # small batches: questions placed across batch boundaries too
    assert fast.stream.digest() == ref.digest()
    assert fast.stream.questions == ref.questions
    assert fast.stream.ops == ref.ops
    assert fast.stream.op_step == ref.op_step
    assert fast.stream.op_mms == ref.op_mms
    assert fast.stream.end_step == ref.end_step
    assert fast.run_rows == ref_rows


def test_streams_ask_every_kind_of_question() -> None:
    """The compared streams are not trivial: they hold every consumer the fast run places itself."""
    config = KernelConfig()
    kinds: Counter[str] = Counter()
    for workload in FAST_WORKLOADS:
        for seed in (1, 2, 3):
            stream = drive_fast(build_workload(workload, default_params(workload), seed), config).stream
            kinds.update(q.consumer for q in stream.questions)
    for consumer in ("cow_reuse", "census", "khugepaged", "numa_migrate"):
        assert kinds[consumer] > 10, kinds
    assert kinds["madvise_cold"] + kinds["madvise_pageout"] >= 1, kinds


def test_fast_refuses_other_drivers_and_unmodelled_steps() -> None:
    config = KernelConfig()
    steps = build_workload("fork-child", default_params("fork-child"), 1)
    with pytest.raises(Unsupported, match="driver 'stopped'"):
        drive_fast(steps, config, driver="stopped")
    # a FastMachine without the rmap trace cannot follow a page-cache folio's split: it refuses before any change
    from foliosim.fast.sim.engine import FastMachine

    m = FastMachine(config, MachineOptions(), record=False)
    m.create_file("lib", 64 * 1024, order=2)
    m.spawn("t")
    addr = m.mmap("t", 64 * 1024, file="lib")
    assert m.read("t", addr, 64 * 1024) is not None
    before = (m.fs.copy(), m.ptf.copy(), m.step)
    with pytest.raises(Unsupported, match="MADV_COLD over a file or shmem mapping without the rmap trace"):
        m.madvise("t", addr + 4096, 4096, "cold")
    assert (before[0] == m.fs).all() and (before[1] == m.ptf).all() and before[2] == m.step


def _cells(workload: str, bits: int, npm: bool, text: str | None = None) -> list:
    oracle = "end" if text is not None else "reuse"
    return [make_cell(d, workload, None, 1, word_bits=bits, no_page_mapcount=npm, oracle=oracle,
                      workload_text=text) for d in DESIGNS if not (d.startswith("precise") and bits == 32)]


@pytest.mark.parametrize("bits,npm", CONFIGS)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_cells_equal_on_both_engines(workload: str, bits: int, npm: bool) -> None:
    specs = _cells(workload, bits, npm)
    fast = run_cells(specs, "fast")
    ref = run_cells(specs, "reference")
    for f, r in zip(fast, ref, strict=True):
        assert f.cell_id == r.cell_id  # the engine is not part of a cell's identity
        assert f.rows == r.rows
        assert f.digest == r.digest and f.questions == r.questions
        assert engine_of(r.notes) == "reference"
    assert {engine_of(f.notes) for f in fast} == {"fast"}


@pytest.mark.parametrize("name", SMALL_TRACES)
def test_recorded_traces_on_the_fast_engine(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recorded real-program traces (files, shmem, shared and private file mappings) drive on the fast engine,
    with the same rows, stream digest and questions as the reference; the driving run is handed the reader's fault
    columns with the steps (tracerun.told_steps())."""
    from foliosim.fast.sim import kprog, score

    text = gzip.decompress((TRACES / name).read_bytes()).decode()
    specs = _cells(file_workload(name, text), 64, False, text)[:2]
    given: list[list] = []
    drive = score.drive_fast

    def spy(steps: list, *args: object) -> score.FastDrive:
        given.append(steps)
        return drive(steps, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(score, "drive_fast", spy)
    fast = run_cells(specs, "fast")
    assert len(given) == 1 and type(given[0]) is kprog.FaultSteps and given[0].faults is not None
    assert len(given[0].faults[0]) == sum(1 for step in given[0] if step.verb == "fault")
    ref = run_cells(specs, "reference")
    assert [c.rows for c in fast] == [c.rows for c in ref]
    assert [(c.digest, c.questions) for c in fast] == [(c.digest, c.questions) for c in ref]
    assert {engine_of(c.notes) for c in fast} == {"fast"}


@pytest.mark.parametrize("bits,npm", CONFIGS)
@pytest.mark.parametrize("name", ["sh-pipeline.trace.gz", "prefork-server.trace.gz"])
def test_recorded_trace_streams_equal(name: str, bits: int, npm: bool) -> None:
    """A recorded trace's scoring stream on both engines: every op, its step and MMs, every question."""
    from foliosim.workloads.runtrace import run_trace_steps

    config = KernelConfig(word_bits=bits, no_page_mapcount=npm)
    steps = run_trace_steps(gzip.decompress((TRACES / name).read_bytes()).decode(), name)
    assert any(s.verb == "file" for s in steps) and any(s.verb == "mmap" and s.args[2] != "anon" for s in steps)
    ref, ref_rows = reference_stream(steps, config, "end")
    fast = drive_fast(steps, config, oracle="end", batch=64)
    assert fast.stream.ops == ref.ops and fast.stream.op_step == ref.op_step and fast.stream.op_mms == ref.op_mms
    assert fast.stream.questions == ref.questions
    assert fast.stream.digest() == ref.digest()
    assert fast.run_rows == ref_rows


def test_compare_cli_engine(tmp_path: Path) -> None:
    runner = CliRunner()
    refused = runner.invoke(main, ["compare", "--db", str(tmp_path / "a.sqlite"), "-w", "fork-child",
                                   "--closed-loop", "--engine", "fast", "-q"])
    assert refused.exit_code == 2
    assert "open-loop runs only" in refused.output
    assert not (tmp_path / "a.sqlite").exists()
    dbs = {}
    for engine in ("fast", "reference"):
        db = tmp_path / f"{engine}.sqlite"
        done = runner.invoke(main, ["compare", "--db", str(db), "-w", "fork-child,mix", "--seeds", "1", "-j", "1",
                                    "-d", "kernel,stopped", "--engine", engine, "-q"])
        assert done.exit_code == 0, done.output
        dbs[engine] = db
    if "fast" in dbs:
        assert "2 driving run(s) on the fast engine, 0 on the reference" in runner.invoke(  # mix maps files
            main, ["compare", "--db", str(tmp_path / "c.sqlite"), "-w", "fork-child,mix", "--seeds", "1", "-j", "1",
                   "-d", "kernel", "--engine", "fast", "-q"]).output
    from foliosim.evaluate.store import ResultsDB

    rows = {}
    for engine, db in dbs.items():
        store = ResultsDB(db)
        rows[engine] = sorted(store.metric_rows())
        store.close()
    assert rows["fast"] == rows["reference"]


def _fault_steps(seed: int) -> list:
    """A recorded-program-like workload on anonymous memory: ``fault`` steps (some not taken: already mapped,
    outside any VMA, not permitted), forks, a read-only mapping, khugepaged and exits."""
    import random

    from foliosim.workloads.steps import Step

    rng = random.Random(seed)
    steps = [Step("spawn", "p"), Step("mmap", "p", ("heap", 1024, "anon", None, (4, 9), "rw", 0)),
             Step("mmap", "p", ("ro", 64, "anon", None, (), "r", 0))]
    tasks = ["p"]
    for i in range(1, 5):
        for _ in range(60):
            t = rng.choice(tasks)
            region, page = rng.choice((("heap", rng.randrange(1100)), ("ro", rng.randrange(64))))
            steps.append(Step("fault", t, (region, page, rng.random() < 0.7)))
        if i < 4:
            child = f"c{i}"
            steps.append(Step("fork", rng.choice(tasks), (child,)))
            tasks.append(child)
        steps.append(Step("khugepaged", rng.choice(tasks), ()))
    for t in reversed(tasks):
        steps.append(Step("exit", t, ()))
    return steps


@pytest.mark.parametrize("bits,npm", CONFIGS)
@pytest.mark.parametrize("seed", [1, 2])
def test_recorded_faults_on_the_fast_engine(seed: int, bits: int, npm: bool) -> None:
    config = KernelConfig(word_bits=bits, no_page_mapcount=npm)
    steps = _fault_steps(seed)
    m = Machine(config, MachineOptions(keep_events=False, check=False))
    probe = Probe(m, make_design("kernel", config), "end", record=True, census=True)
    stats = WorkloadRunner(m, probe, strict=False).run(steps)
    probe.finish()
    assert probe.stream is not None and stats.skipped == 0
    fast = drive_fast(steps, config, oracle="end", batch=9)
    assert fast.faults == stats.faults
    assert len(stats.faults) >= 4, stats.faults  # taken, already mapped, present, outside any VMA / not permitted
    assert fast.stream.digest() == probe.stream.digest()
    assert fast.stream.ops == probe.stream.ops
    assert fast.stream.op_step == probe.stream.op_step
    assert fast.stream.op_mms == probe.stream.op_mms
    assert fast.stream.end_step == probe.stream.end_step
    assert fast.run_rows == sorted(probe.run_rows())


def test_workload_file_runs_on_the_fast_engine() -> None:
    """A workload file (JSON Lines steps, e.g. written by `foliosim trace`) with recorded faults: the fast engine
    drives it (an imported workload) and every cell equals the reference's."""
    import json

    text = "".join(json.dumps(step.to_json()) + "\n" for step in _fault_steps(3))
    specs = _cells(file_workload("faults.jsonl", text), 64, False, text)
    fast = run_cells(specs, "fast")
    ref = run_cells(specs, "reference")
    assert {engine_of(c.notes) for c in fast} == {"fast"}
    assert [c.rows for c in fast] == [c.rows for c in ref]
    assert any(row[0] == "recorded_faults" and row[1] == "taken" and row[4] > 0 for row in fast[0].rows)


def test_workload_file_with_a_refused_step_falls_back() -> None:
    """A step the reference skips in an imported workload (here: the exit of a task that does not exist) stops the
    fast run; the reference runs it, skipping that step, and the note says why."""
    import json

    from foliosim.workloads.steps import Step

    steps = [*_fault_steps(4)[:30], Step("exit", "nobody", ()), *_fault_steps(4)[30:]]
    text = "".join(json.dumps(step.to_json()) + "\n" for step in steps)
    specs = _cells(file_workload("refused.jsonl", text), 64, False, text)[:1]
    fast = run_cells(specs, "fast")[0]
    assert fast.skipped == 1
    assert engine_of(fast.notes) == "reference"
    assert any(n.startswith("engine: reference (a step the reference skips: step 31 (exit nobody)")
               for n in fast.notes), fast.notes
    assert fast.rows == run_cells(specs, "reference")[0].rows
