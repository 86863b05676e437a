"""The open-loop scorer's output, pinned as the per-design scorer gave it before it was made faster (2026-11-30).

The digests below were computed with the original code (one ``score_stream`` call per design, ``Tally.add`` for
every metric, a fresh ``UpdateCost`` per update); the faster scorer must reproduce them bit for bit: every metric
row of every design, the question count and the question digest, and ``compare``'s headline and database rows.
A deliberate change of what is measured (a model fix, a new metric) changes them too: re-pin them then, from the
code before the change and after, and say why in the commit.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from foliosim.cli import main
from foliosim.evaluate import stream as stream_module
from foliosim.evaluate.cell import CellResult, make_cell, run_cells
from foliosim.evaluate.probe import Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.evaluate.stream import score_stream
from foliosim.schemes import KNOWN, make_design
from foliosim.schemes.base import UpdateCost, update_cost
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads import build_workload

DESIGNS = (*(d for d in KNOWN if ":fixed" not in d), "precise-rmapid:fixed", "slots:1")
SMALL = {"fork-child": {"rounds": 2}, "snapshot": {"snapshots": 1}, "mix": {"ops": 120},
         "handover": {"generations": 3}, "prefork": {"requests": 40}, "shared-file": {"rounds": 10},
         "fork-exec": {"commands": 3}}
#: (workload, seed) -> digest of every design's (name, metric rows, questions, question digest), original scorer
PINNED = {
    ("fork-child", 1): "801b81fde4b01e7d", ("fork-child", 2): "70e4a13e63d2839c",
    ("snapshot", 1): "f9b9c464f4bdc3b9", ("snapshot", 2): "145c9c6e1d66400a",
    ("mix", 1): "4fbfb439db95286b", ("mix", 2): "28998e0247ea887b",
    ("handover", 1): "95f0a2d085173754", ("handover", 2): "50810d4d28c65f42",
    ("prefork", 1): "0a77d3af4d9eb8d9", ("prefork", 2): "5a31a83091f4baf3",
    ("shared-file", 1): "c4f23ebd7d045c36", ("shared-file", 2): "0c0d0f7fdef70636",
    ("fork-exec", 1): "95ec58988c20c87f", ("fork-exec", 2): "1c22fe162edaadbb",
}
#: mix (200 ops, seed 3) on other kernel configurations: (word bits, CONFIG_NO_PAGE_MAPCOUNT) -> digest
PINNED_CONFIGS = {(32, False): "43ea21a5918c9d09", (64, True): "0004be18232141d3"}
#: `foliosim compare -j 2 --engine reference --seeds 1 -w mix,fork-child --workload-file sh-pipeline`:
#: (metric rows, digest of the rows joined with their cells, digest of stdout)
PINNED_COMPARE = (989, "d6b7c48ebe6ee378", "13781f36d34b0c1b")

ROOT = Path(__file__).resolve().parents[1]


def _digest(results: list[CellResult]) -> str:
    h = hashlib.sha256()
    for r in results:
        h.update(repr((r.spec.design, r.rows, r.questions, r.digest)).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(("workload", "seed"), list(PINNED))
def test_every_design_scores_as_the_original_scorer(workload: str, seed: int) -> None:
    results = run_cells([make_cell(d, workload, SMALL[workload], seed) for d in DESIGNS], engine="reference")
    assert [r.spec.design for r in results] == list(DESIGNS)
    assert _digest(results) == PINNED[(workload, seed)]


@pytest.mark.parametrize(("word_bits", "no_page_mapcount"), list(PINNED_CONFIGS))
def test_other_configurations_score_as_the_original_scorer(word_bits: int, no_page_mapcount: bool) -> None:
    designs = ("kernel", "exact", "slots:3", "stopped", "legacy")  # precise-rmapid is 64-bit only
    cells = [make_cell(d, "mix", {"ops": 200}, 3, word_bits=word_bits, no_page_mapcount=no_page_mapcount)
             for d in designs]
    assert _digest(run_cells(cells, engine="reference")) == PINNED_CONFIGS[(word_bits, no_page_mapcount)]


def test_the_pins_notice_a_changed_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutant scorer (MMs capped at 2 instead of 8) misses the pin: the pins can fail."""
    monkeypatch.setattr(stream_module, "MMS_CAP", 2)
    results = run_cells([make_cell(d, "prefork", SMALL["prefork"], 1) for d in DESIGNS], engine="reference")
    assert _digest(results) != PINNED[("prefork", 1)]


def test_scoring_designs_together_equals_scoring_each_alone() -> None:
    machine = Machine(options=MachineOptions(keep_events=False, check=False))
    probe = Probe(machine, make_design("kernel", machine.config), oracle="off", record=True)
    WorkloadRunner(machine, probe).run(build_workload("mix", {"ops": 150}, 4))
    probe.finish()
    assert probe.stream is not None
    together = score_stream(probe.stream, DESIGNS)
    alone = [score_stream(probe.stream, [d])[0] for d in DESIGNS]
    assert [(s.design, s.rows, s.questions, s.digest) for s in together] == \
        [(s.design, s.rows, s.questions, s.digest) for s in alone]
    assert all(s.seconds > 0 for s in together)


def test_update_costs_are_shared_immutable_values() -> None:
    cost = update_cost(3, 1, 2)
    assert cost == UpdateCost(atomics=3, locks=1, cache_lines=2)
    assert update_cost(3, 1, 2) is cost
    assert update_cost(3, 1, 3) == UpdateCost(atomics=3, locks=1, cache_lines=3) != cost


def test_compare_gives_the_original_rows_and_headline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    db = tmp_path / "r.sqlite"
    result = CliRunner().invoke(main, ["compare", "-q", "-j", "2", "--engine", "reference", "--seeds", "1",
                                       "-w", "mix,fork-child", "--workload-file",
                                       "examples/run-traces/sh-pipeline.census.trace.gz", "--db", str(db)])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select c.design, c.workload, c.seed, c.questions, c.question_digest, m.metric, "
                            "m.consumer, m.folio_order, m.mms, m.value from metrics m join cells c using (cell_id) "
                            "order by 1, 2, 3, 6, 7, 8, 9").fetchall()
    assert (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()[:16],
            hashlib.sha256(result.stdout.encode()).hexdigest()[:16]) == PINNED_COMPARE
