"""Open-loop scoring: every design answers the driving run's questions on the same states (issue 14 item 1)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from foliosim.evaluate.cell import make_cell, run_cells
from foliosim.evaluate.metrics import PairingError, summarize
from foliosim.evaluate.probe import RUN_METRICS, Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.evaluate.store import ResultsDB
from foliosim.evaluate.stream import Question, ScoringStream, StreamError, score_stream
from foliosim.evaluate.sweep import Grid, run_local
from foliosim.schemes import KNOWN, make_design
from foliosim.trace.columnar import from_ops
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads import WORKLOADS, build_workload

DESIGNS = tuple(d for d in KNOWN if ":fixed" not in d)
SMALL = {"fork-child": {"rounds": 2}, "fork-exec": {"commands": 3}, "handover": {"generations": 3},
         "prefork": {"requests": 40}, "snapshot": {"snapshots": 1}, "shared-file": {"rounds": 10},
         "mix": {"ops": 120}}

QUESTION_METRICS = ("checks", "exact_shared")


def question_rows(rows: list[tuple[str, str, int, int, float]]) -> list[tuple[str, str, int, int, float]]:
    return sorted(r for r in rows if r[0] in QUESTION_METRICS)


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_all_designs_get_identical_question_sets(workload: str) -> None:
    """One driving run, every design scored on it: the same questions (count, digest, and per consumer, order
    and MMs the same checks and truths), and the driver's own live score equals its rescoring."""
    cells = [make_cell(d, workload, SMALL[workload], 3) for d in DESIGNS]
    assert len({c.run_key for c in cells}) == 1
    results = run_cells(cells)
    assert [r.spec.design for r in results] == list(DESIGNS)
    assert len({r.digest for r in results}) == 1 and results[0].digest
    assert len({r.questions for r in results}) == 1 and results[0].questions > 0
    reference = question_rows(results[0].rows)
    assert reference, f"{workload}: no check on a large folio"
    for r in results[1:]:
        assert question_rows(r.rows) == reference, r.spec.design
    run_rows = [sorted(x for x in r.rows if x[0] in RUN_METRICS) for r in results]
    assert all(rows == run_rows[0] for rows in run_rows), "the driving run's outcomes are the same for all"
    # exact is never wrong, and false answers differ between designs only where they should
    exact = next(r for r in results if r.spec.design == "exact")
    assert not any(x[0] in ("false_shared", "false_exclusive") and x[4] for x in exact.rows)


def test_the_driver_scored_live_equals_its_rescoring() -> None:
    machine = Machine(options=MachineOptions(keep_events=False, check=False))
    probe = Probe(machine, make_design("kernel", machine.config), oracle="off", record=True)
    WorkloadRunner(machine, probe).run(build_workload("handover", None, 1))
    probe.finish()
    assert probe.stream is not None
    live = [r for r in probe.tally.rows() if r[0] not in RUN_METRICS]
    rescored = score_stream(probe.stream, ["kernel"])[0]
    assert rescored.rows == live
    assert rescored.questions == len(probe.stream.questions) > 0
    # the same stream through the columnar form (what a compiled simulator would hand over)
    columnar = ScoringStream.from_columnar(from_ops(probe.stream.ops), probe.stream.op_step, probe.stream.op_mms,
                                           probe.stream.questions, machine.config, "kernel", probe.stream.end_step)
    assert score_stream(columnar, ["kernel", "stopped"])[0].rows == live
    assert score_stream(columnar, ["stopped"])[0].digest == rescored.digest


def test_a_stream_that_does_not_hold_together_is_refused() -> None:
    machine = Machine(options=MachineOptions(keep_events=False, check=False))
    probe = Probe(machine, make_design("kernel", machine.config), oracle="off", record=True)
    WorkloadRunner(machine, probe).run(build_workload("fork-child", {"rounds": 1}, 1))
    probe.finish()
    stream = probe.stream
    assert stream is not None and len(stream.questions) > 2
    bad = ScoringStream(stream.config, "kernel", stream.ops, stream.op_step, stream.op_mms,
                        [stream.questions[1], stream.questions[0], *stream.questions[2:]], stream.end_step)
    if stream.questions[0].pos != stream.questions[1].pos:
        with pytest.raises(StreamError, match="out of order"):
            score_stream(bad, ["kernel"])
    short = ScoringStream(stream.config, "kernel", stream.ops, stream.op_step[:-1], stream.op_mms,
                          stream.questions, stream.end_step)
    with pytest.raises(StreamError, match="must be equal"):
        score_stream(short, ["kernel"])
    late = ScoringStream(stream.config, "kernel", stream.ops, stream.op_step, stream.op_mms,
                         [Question(len(stream.ops) + 1, "F1", "cow_reuse", False)], stream.end_step)
    with pytest.raises(StreamError, match="out of order"):
        late.check()


def test_closed_loop_is_kept_and_labelled(tmp_path: Path) -> None:
    """Closed loop: each design steers its own run (stopped copies where kernel reuses, so its questions
    differ); the database and the report say which mode a cell was scored in."""
    grid = Grid(designs=("kernel", "stopped"), workloads=("fork-exec",), seeds=(1,), mode="closed")
    cells = grid.cells()
    assert {c.mode for c in cells} == {"closed"} and len({c.run_key for c in cells}) == 2
    db = ResultsDB(tmp_path / "r.sqlite")
    run_local(cells, db, jobs=1)
    open_cells = Grid(designs=("kernel", "stopped"), workloads=("fork-exec",), seeds=(1,)).cells()
    assert {c.cell_id for c in open_cells}.isdisjoint({c.cell_id for c in cells})
    run_local(open_cells, db, jobs=1)
    stored = db.cells()
    assert sorted((c["design"], c["mode"], c["driver"]) for c in stored) == [
        ("kernel", "closed", "kernel"), ("kernel", "open", "kernel"), ("stopped", "closed", "stopped"),
        ("stopped", "open", "kernel")]
    closed = [c for c in stored if c["mode"] == "closed"]
    assert closed[0]["question_digest"] == "" and closed[0]["run_key"] != closed[1]["run_key"]
    from foliosim.report.evaluation import report_text

    assert "closed loop" in report_text(tmp_path / "r.sqlite", mode="closed")
    assert "open loop" in report_text(tmp_path / "r.sqlite")
    from foliosim.report.evaluation import load_summary

    opened, closed_s = load_summary(tmp_path / "r.sqlite"), load_summary(tmp_path / "r.sqlite", mode="closed")
    assert (opened.modes, opened.cells, opened.other_mode) == (["open"], 2, 2)
    assert (closed_s.modes, closed_s.cells, closed_s.other_mode) == (["closed"], 2, 2)
    db.close()


def test_a_database_whose_paired_cells_disagree_is_refused(tmp_path: Path) -> None:
    db = ResultsDB(tmp_path / "r.sqlite")
    run_local(Grid(designs=("kernel", "exact"), workloads=("fork-child",), seeds=(1,),
                   params={"rounds": [1]}).cells(), db, jobs=1)
    cells = db.cells()
    assert len({c["question_digest"] for c in cells}) == 1
    summarize(cells, db.metric_rows())  # fine as stored
    cells[1]["question_digest"] = "0" * 16
    with pytest.raises(PairingError, match="different question sets"):
        summarize(cells, db.metric_rows())
    db.close()


def test_workload_file_cells_stored_once_per_seed_count_once(tmp_path: Path) -> None:
    """An older foliosim stored a workload file once per seed: the report counts one run, and says so."""
    from tests.test_evaluate import LEAK

    db = ResultsDB(tmp_path / "r.sqlite")
    cells = [make_cell(d, "file:leak@000000000000", None, seed, workload_text=LEAK)
             for seed in (1, 2) for d in ("kernel", "exact")]
    run_local(cells, db, jobs=1)
    stored = db.cells()
    assert len(stored) == 4
    s = summarize(stored, db.metric_rows())
    assert s.cells == 2 and s.duplicates == 2
    per_design: dict[str, int] = defaultdict(int)
    for c in s.cells_info:
        per_design[c["design"]] += 1
    assert per_design == {"kernel": 1, "exact": 1}
    one = summarize([c for c in stored if c["seed"] == 1], db.metric_rows())
    assert s.by_design["kernel"].total["checks"] == one.by_design["kernel"].total["checks"] > 0
    db.close()


def test_oracle_auto_is_reuse_for_generated_workloads_and_end_for_workload_files() -> None:
    from tests.test_evaluate import LEAK

    cells = Grid(designs=("kernel",), workloads=("fork-child",), seeds=(1,),
                 files={"file:leak@000000000000": LEAK}).cells()
    assert {(c.workload, c.oracle) for c in cells} == {("fork-child", "reuse"), ("file:leak@000000000000", "end")}
    forced = Grid(designs=("kernel",), workloads=(), seeds=(1,), oracle="every",
                  files={"file:leak@000000000000": LEAK}).cells()
    assert [c.oracle for c in forced] == ["every"]


def test_put_live_checks_its_counts(tmp_path: Path) -> None:
    db = ResultsDB(tmp_path / "r.sqlite")
    db.put_live("pool", 570, 0, 2395, 0, "census")
    db.put_live("pool", 571, 1, 2395, 0, "census")  # the same (workload, source) is replaced
    db.put_live("file:pool.census.trace.gz@0123456789ab", 10, 2, 3, 0, "census 2")
    rows = db.live_verdicts()
    assert [(r["workload"], r["questions_exclusive"], r["false_shared"]) for r in rows] == [
        ("file:pool.census.trace.gz@0123456789ab", 10, 2), ("pool", 571, 1)]
    for bad in ((5, 6, 0, 0), (5, 0, 1, 2), (-1, 0, 0, 0)):
        with pytest.raises(ValueError, match="put_live"):
            db.put_live("pool", *bad, "census 3")
    assert len(db.live_verdicts()) == 2, "nothing stored from a refused call"
    db.close()


STUCK = Path(__file__).resolve().parent.parent / "examples" / "run-traces" / "stuck-bit.census.trace.gz"


@pytest.mark.skipif(not STUCK.exists(), reason="examples/run-traces/stuck-bit.census.trace.gz is not in this tree")
def test_compare_stores_a_run_traces_census_and_asks_the_same_census_in_simulation(tmp_path: Path) -> None:
    """stuck-bit (a demonstration): the live census said "shared" on 37 of 37 folios one MM mapped; the
    simulated census at the same forks and exits is scored for every design beside it."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "foliosim", "compare", "-d", "kernel,exact", "--workload-file",
                          str(STUCK), "--db", str(tmp_path / "r.sqlite"), "-q", "-j", "1"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Only demonstrations (stuck-bit) are in these results")
    db = ResultsDB(tmp_path / "r.sqlite")
    live = db.live_verdicts()
    assert [(r["questions_exclusive"], r["false_shared"], r["questions_shared"], r["false_exclusive"])
            for r in live] == [(37, 37, 222, 0)]
    assert live[0]["workload"].startswith("file:stuck-bit.census.trace.gz@")
    db.close()
    from foliosim.report.evaluation import load_summary, tables

    s = load_summary(tmp_path / "r.sqlite")
    census = s.rate("kernel", "false_shared", census=True)
    assert census.n > 0 and s.rate("exact", "false_shared", census=True).k == 0
    assert s.questions("kernel", census=True) == s.questions("exact", census=True)
    titles = [t.title for t in tables(s)]
    assert "Demonstrations, one by one: the census at forks and exits" in titles


def test_another_driver_is_named_and_closed_loop_refuses_a_driver(tmp_path: Path) -> None:
    import subprocess
    import sys

    base = [sys.executable, "-m", "foliosim", "compare", "-w", "mix", "--param", "ops=80", "--seeds", "1", "-q",
            "-j", "1"]
    run = subprocess.run([*base, "--driver", "stopped", "-d", "kernel,exact", "--db", str(tmp_path / "a.sqlite")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert "open loop, every design answering the questions of `stopped`'s runs" in run.stdout
    assert "open loop: `stopped` drives each run" in run.stderr
    db = ResultsDB(tmp_path / "a.sqlite")
    assert {(c["design"], c["driver"]) for c in db.cells()} == {("kernel", "stopped"), ("exact", "stopped")}
    db.close()
    bad = subprocess.run([*base, "--driver", "stopped", "--closed-loop", "--db", str(tmp_path / "b.sqlite")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "--driver stopped" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "b.sqlite").exists()
