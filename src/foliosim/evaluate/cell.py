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
from functools import lru_cache
from typing import Any

from foliosim.evaluate.probe import ORACLE_MODES, RUN_METRICS, Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.evaluate.stream import ScoringStream, Tally, score_stream
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import make_design
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads.generators import build_workload, workload_params
from foliosim.workloads.runtrace import Conversion, is_run_trace, prepare, workload_file_steps
from foliosim.workloads.runtrace import RunTrace as _RunTrace
from foliosim.workloads.steps import Step, WorkloadError

#: Bump when what a cell measures changes: old rows then no longer match any cell id.
RESULTS_SCHEMA = 2
MODES = ("open", "closed")
FILE_PREFIX = "file:"

MetricRow = tuple[str, str, int, int, float]


@lru_cache(maxsize=64)
def text_sha256(text: str) -> str:
    """The SHA-256 (hex) of a workload file's text: its cells' identity and the key of what was done with it. Kept
    for the last texts asked (a sweep asks for each cell's text at every identity, key and check: thousands of
    times for the same few texts, megabytes each)."""
    return hashlib.sha256(text.encode()).hexdigest()


def file_workload(name: str, text: str) -> str:
    """The workload label of a workload file: ``file:NAME@HASH``, HASH the first 12 hex digits of the
    SHA-256 of its text, so two different files of the same name stay apart (and the same file under
    one name is the same workload wherever it is read from)."""
    return f"{FILE_PREFIX}{name}@{text_sha256(text)[:12]}"


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
            out["workload_sha256"] = text_sha256(self.workload_text)
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
        if not checked_steps(workload_text, workload):
            raise WorkloadError(f"workload {workload!r} has no steps (an empty workload file)")
        merged: dict[str, Any] = dict(params or {})
    else:
        merged = workload_params(workload, params)  # checked, not built: a cell's steps are built when it runs
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
#: the last run trace converted in this process (by the SHA-256 of its text): `foliosim compare`'s check of the file,
#: each cell's and the driving run read it once, not three times (a conversion hands its steps out again); one
#: kept, as a trace's items take up to ~90 MB (runtrace.CACHE_ITEMS)
_PREPARED: dict[str, Conversion] = {}


def prepared(text: str, name: str) -> Conversion:
    """The run trace ``text`` converted (runtrace.prepare; ``name`` in its errors), the last one kept for the next
    call with the same text."""
    key = text_sha256(text)
    conv = _PREPARED.get(key)
    if conv is None:
        conv = prepare(_RunTrace(name, text=text))
        _PREPARED.clear()
        _PREPARED[key] = conv
    return conv


def checked_steps(text: str, name: str) -> int:
    """The number of steps of a workload file's text (``name`` in its errors), checking it only the first time it is
    seen (WorkloadError, RunTraceError)."""
    key = text_sha256(text)
    if key not in _CHECKED:
        _CHECKED[key] = len(prepared(text, name).steps() if is_run_trace(text) else workload_file_steps(text, name))
    return _CHECKED[key]


def cell_steps(spec: CellSpec) -> list[Step]:
    if spec.workload.startswith(FILE_PREFIX):
        return workload_file_steps(spec.workload_text or "", spec.workload)
    return build_workload(spec.workload, dict(spec.params), spec.seed)


def run_cell(spec: CellSpec) -> CellResult:
    """Run one cell (its driving run too); see :func:`run_cells`."""
    return run_cells([spec])[0]


#: driving-run engines: ``auto`` is ``fast`` when numba is installed (foliosim.fast.sim.score), else ``reference``
ENGINES = ("auto", "fast", "reference")
#: the note every cell carries: the engine of its driving run (``engine: fast`` or ``engine: reference ...``)
ENGINE_NOTE = "engine: "


def resolve_engine(engine: str) -> str:
    """``fast`` or ``reference`` for ``engine`` (ValueError: unknown, or ``fast`` without numba)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "reference":
        return engine
    from foliosim.fast._jit import HAVE_NUMBA, NUMBA_MISSING

    if not HAVE_NUMBA:
        if engine == "fast":
            raise ValueError(f"--engine fast: {NUMBA_MISSING}")
        return "reference"
    return "fast"


def engine_of(notes: list[str]) -> str:
    """The engine a cell's driving run ran on, from its notes (``reference`` for cells stored before engines)."""
    for note in notes:
        if note.startswith(ENGINE_NOTE):
            return note[len(ENGINE_NOTE):].split(" ", 1)[0]
    return "reference"


def engine_summary(cells: list[dict[str, Any]]) -> str:
    """One phrase for the report: how many driving runs ran on which engine (cells' ``notes`` JSON, ``run_key``)."""
    runs: dict[str, str] = {}
    for cell in cells:
        try:
            notes = json.loads(cell.get("notes") or "[]")
        except (TypeError, ValueError):
            notes = []
        runs[str(cell.get("run_key") or cell.get("cell_id"))] = engine_of(notes if isinstance(notes, list) else [])
    counts = {name: list(runs.values()).count(name) for name in ("fast", "reference")}
    return ", ".join(f"{n} on the {name} engine" for name, n in counts.items() if n) + " (driving runs)"


def run_cells(specs: list[CellSpec], engine: str = "reference") -> list[CellResult]:
    """Run the cells of one driving run: the run once, then each design scored on it (open loop), or the one
    design steering its own run (closed loop). Metric rows are deterministic; wall time is not.

    ``engine``: the driving run's engine (:data:`ENGINES`). The fast engine drives open-loop runs of the ``kernel``
    driver; a run it cannot drive (a step it does not model, another driver, closed loop) runs on the reference
    engine, and every cell's notes say which engine ran it and why (``engine: reference (...)``). Both engines
    give the same stream (tests/fastsim/test_score.py), so the engine is not part of the cell's identity."""
    if not specs:
        return []
    first = specs[0]
    if any(spec.run_key != first.run_key for spec in specs):
        raise ValueError("run_cells: the cells do not share one driving run")
    if first.mode == "closed" and len(specs) > 1:
        raise ValueError("run_cells: a closed-loop run scores one design")
    engine = resolve_engine(engine)
    began = time.perf_counter()
    config = KernelConfig(word_bits=first.word_bits, no_page_mapcount=first.no_page_mapcount)
    conversion = None
    if first.workload.startswith(FILE_PREFIX) and is_run_trace(first.workload_text or ""):
        conversion = prepared(first.workload_text or "", first.workload)
        steps = conversion.steps()
    else:
        steps = cell_steps(first)
    imported = first.workload.startswith(FILE_PREFIX)
    engine_note = f"{ENGINE_NOTE}reference"
    if engine == "fast":
        if first.mode == "closed":
            engine_note += " (the fast engine drives open-loop runs only)"
        else:
            from foliosim.fast.sim.engine import Unsupported
            from foliosim.fast.sim.score import drive_fast
            from foliosim.fast.sim.tracerun import told_steps

            try:
                # a recorded trace's faults as the reader's columns: the driving run does not read them back
                drive = drive_fast(steps if conversion is None else told_steps(conversion, steps), config,
                                   first.driver, first.oracle)
            except Unsupported as exc:
                engine_note += f" (the fast engine does not model {exc})"
            except WorkloadError as exc:
                if not imported:
                    raise
                engine_note += f" (a step the reference skips: {exc})"
            else:
                run = Tally()
                for row in drive.run_rows:
                    run.add(row[0], row[4], row[1], row[2], row[3])
                run.add("skipped_steps", 0)
                for what, count in drive.errors.items():
                    run.add("failed_calls", count, consumer=what)
                for outcome, count in drive.faults.items():
                    run.add("recorded_faults", count, consumer=outcome)
                _conversion_rows(run, conversion)
                return _score(specs, drive.stream, run.rows(), time.perf_counter() - began, 0,
                              [f"{ENGINE_NOTE}fast"])
    driver = make_design(first.driver if first.mode == "open" else first.design, config)
    machine = Machine(config, MachineOptions(keep_events=False, check=False))
    probe = Probe(machine, driver, first.oracle, record=first.mode == "open", census=True)
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
    _conversion_rows(run, conversion)
    notes = [engine_note, *probe.problems]
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
    return _score(specs, probe.stream, run_rows, drive_seconds, stats.skipped, notes)


def _conversion_rows(run: Tally, conversion: Any) -> None:
    """A run trace's import outcomes: recorded faults the importer left out, trace events not expressed."""
    if conversion is None:
        return
    for outcome, count in conversion.stats.fault_skips.items():
        run.add("recorded_faults", count, consumer=outcome)
    for name, count in (conversion.stats.unexpressed + conversion.stats.skipped).items():
        run.add("skipped_steps", count, consumer=name)


def _score(specs: list[CellSpec], stream: ScoringStream, run_rows: list[MetricRow], drive_seconds: float,
           skipped: int, notes: list[str]) -> list[CellResult]:
    """Every design of the run scored on its stream (open loop)."""
    out: list[CellResult] = []
    for spec, scored in zip(specs, score_stream(stream, [spec.design for spec in specs]), strict=True):
        out.append(CellResult(spec.cell_id, spec, sorted(scored.rows + run_rows),
                              drive_seconds / len(specs) + scored.seconds, skipped, notes,
                              scored.questions, scored.digest))
    return out
