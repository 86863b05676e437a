"""One cell of a sweep: a design on a workload with parameters, a seed and a kernel config.

A cell is scored *open loop* (default): a driving design (``driver``, ``kernel``
unless told) runs the workload, and the design answers every question of that
run on the same states (:mod:`foliosim.evaluate.stream`), so every design of a
run answers one identical question set; or *closed loop*: the design's own
answers steer its run. :func:`run_cells` runs the cells of one driving run
together (the run once, then each design scored on it). Results are a pure
function of the :class:`CellSpec` (the same spec gives the same metric rows on
any machine or worker); wall time is reported separately and never part of the
metrics. A cell's id is the SHA-256 of its canonical JSON (plus
:data:`RESULTS_SCHEMA`), so a results database knows which cells are done.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from foliosim.evaluate.probe import ORACLE_MODES, RUN_METRICS, Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.evaluate.stream import Tally, score_stream
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import make_design
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads.generators import build_workload, default_params
from foliosim.workloads.runtrace import RunTrace as _RunTrace
from foliosim.workloads.runtrace import is_run_trace, prepare, workload_file_steps
from foliosim.workloads.steps import Step, WorkloadError

#: Bump when what a cell measures changes: old rows then no longer match any cell id.
RESULTS_SCHEMA = 2
MODES = ("open", "closed")
FILE_PREFIX = "file:"

MetricRow = tuple[str, str, int, int, float]


def file_workload(name: str, text: str) -> str:
    """The workload label of a workload file: ``file:NAME@HASH``, HASH the first 12 hex digits of the
    SHA-256 of its text, so two different files of the same name stay apart (and the same file under
    one name is the same workload wherever it is read from)."""
    return f"{FILE_PREFIX}{name}@{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True, slots=True)
class CellSpec:
    """Everything that determines a cell's results.

    ``workload`` is a generator name, or ``file:NAME`` with the workload's
    JSON Lines in ``workload_text`` (imported traces); ``params`` are the
    generator's parameters (defaults filled in).
    """

    design: str
    workload: str
    params: tuple[tuple[str, Any], ...]
    seed: int
    word_bits: int = 64
    no_page_mapcount: bool = False
    oracle: str = "reuse"
    workload_text: str | None = field(default=None, compare=False, repr=False)
    mode: str = "open"
    driver: str = "kernel"  # open loop: the design whose answers steer the run (closed loop: the design itself)

    def run_identity(self) -> dict[str, Any]:
        """What determines the driving run (every design of an open-loop run shares it)."""
        out: dict[str, Any] = {
            "schema": RESULTS_SCHEMA, "workload": self.workload, "params": dict(self.params), "seed": self.seed,
            "word_bits": self.word_bits, "no_page_mapcount": self.no_page_mapcount, "oracle": self.oracle,
            "mode": self.mode, "driver": self.driver if self.mode == "open" else self.design,
        }
        if self.workload_text is not None:
            out["workload_sha256"] = hashlib.sha256(self.workload_text.encode()).hexdigest()
        return out

    def identity(self) -> dict[str, Any]:
        """The canonical description (what is hashed and stored)."""
        return {**self.run_identity(), "design": self.design}

    @property
    def run_key(self) -> str:
        """The driving run's id: cells with the same key are computed from one run."""
        text = json.dumps(self.run_identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def cell_id(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def make_cell(design: str, workload: str, params: dict[str, Any] | None, seed: int, *, word_bits: int = 64,
              no_page_mapcount: bool = False, oracle: str = "reuse", workload_text: str | None = None,
              mode: str = "open", driver: str = "kernel") -> CellSpec:
    """A validated cell (unknown designs, workloads, parameters or modes raise ValueError/WorkloadError)."""
    config = KernelConfig(word_bits=word_bits, no_page_mapcount=no_page_mapcount)
    make_design(design, config)
    if mode not in MODES:
        raise ValueError(f"scoring mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "open":
        try:
            make_design(driver, config)
        except ValueError as exc:
            raise ValueError(f"driving design: {exc}") from None
    else:
        driver = design
    if oracle not in ORACLE_MODES:
        raise ValueError(f"oracle mode must be one of {', '.join(ORACLE_MODES)}, not {oracle!r}")
    if workload.startswith(FILE_PREFIX):
        if workload_text is None:
            raise ValueError(f"workload {workload!r} needs its steps")
        if not _checked_steps(workload_text, workload):
            raise WorkloadError(f"workload {workload!r} has no steps (an empty workload file)")
        merged: dict[str, Any] = dict(params or {})
    else:
        merged = default_params(workload)
        merged.update(params or {})
        build_workload(workload, merged, seed)  # validates the parameters
    return CellSpec(design, workload, tuple(sorted(merged.items())), seed, word_bits, no_page_mapcount, oracle,
                    workload_text, mode, driver)


@dataclass(slots=True)
class CellResult:
    cell_id: str
    spec: CellSpec
    rows: list[MetricRow]
    seconds: float
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    questions: int = 0  # questions the design answered (large and small folios)
    digest: str = ""  # the question set's digest (ScoringStream.digest): equal for every design of a run


#: workload texts already checked (by SHA-256): a run trace is checked once, not once per cell
_CHECKED: dict[str, int] = {}


def _checked_steps(text: str, name: str) -> int:
    """The number of steps of a workload file's text, checking it only the first time it is seen."""
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _CHECKED:
        _CHECKED[key] = len(workload_file_steps(text, name))
    return _CHECKED[key]


def cell_steps(spec: CellSpec) -> list[Step]:
    if spec.workload.startswith(FILE_PREFIX):
        return workload_file_steps(spec.workload_text or "", spec.workload)
    return build_workload(spec.workload, dict(spec.params), spec.seed)


def run_cell(spec: CellSpec) -> CellResult:
    """Run one cell (its driving run too); see :func:`run_cells`."""
    return run_cells([spec])[0]


def run_cells(specs: list[CellSpec]) -> list[CellResult]:
    """Run the cells of one driving run: the run once, then each design scored on it (open loop), or the one
    design steering its own run (closed loop). Metric rows are deterministic; wall time is not."""
    if not specs:
        return []
    first = specs[0]
    if any(spec.run_key != first.run_key for spec in specs):
        raise ValueError("run_cells: the cells do not share one driving run")
    if first.mode == "closed" and len(specs) > 1:
        raise ValueError("run_cells: a closed-loop run scores one design")
    began = time.perf_counter()
    config = KernelConfig(word_bits=first.word_bits, no_page_mapcount=first.no_page_mapcount)
    driver = make_design(first.driver if first.mode == "open" else first.design, config)
    conversion = None
    if first.workload.startswith(FILE_PREFIX) and is_run_trace(first.workload_text or ""):
        conversion = prepare(_RunTrace(first.workload, text=first.workload_text))
        steps = conversion.steps()
    else:
        steps = cell_steps(first)
    machine = Machine(config, MachineOptions(keep_events=False, check=False))
    probe = Probe(machine, driver, first.oracle, record=first.mode == "open", census=True)
    imported = first.workload.startswith(FILE_PREFIX)
    runner = WorkloadRunner(machine, probe, strict=not imported)
    stats = runner.run(steps)
    probe.finish()
    run = Tally()
    for row in probe.run_rows():
        run.add(row[0], row[4], row[1], row[2], row[3])
    run.add("skipped_steps", stats.skipped)
    for what, count in stats.errors.items():
        run.add("failed_calls", count, consumer=what)
    for outcome, count in stats.faults.items():  # a run trace's recorded faults: taken, or why not
        run.add("recorded_faults", count, consumer=outcome)
    if conversion is not None:
        for outcome, count in conversion.stats.fault_skips.items():
            run.add("recorded_faults", count, consumer=outcome)
        for name, count in (conversion.stats.unexpressed + conversion.stats.skipped).items():
            run.add("skipped_steps", count, consumer=name)
    notes = list(probe.problems)
    if stats.first_skip:
        notes.append(f"first skipped: {stats.first_skip}")
    notes += [f"skipped: {where}" for where in stats.skips[1:]]
    drive_seconds = time.perf_counter() - began
    run_rows = run.rows()
    if first.mode == "closed":
        rows = [row for row in probe.tally.rows() if row[0] not in RUN_METRICS] + run_rows
        return [CellResult(first.cell_id, first, sorted(rows), drive_seconds, stats.skipped, notes,
                           probe.scorer.questions, "")]
    assert probe.stream is not None
    out: list[CellResult] = []
    for spec in specs:
        t0 = time.perf_counter()
        scored = score_stream(probe.stream, [spec.design])[0]
        out.append(CellResult(spec.cell_id, spec, sorted(scored.rows + run_rows),
                              drive_seconds / len(specs) + time.perf_counter() - t0, stats.skipped, notes,
                              scored.questions, scored.digest))
    return out
