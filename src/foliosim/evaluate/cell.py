"""One cell of a sweep: a design on a workload with parameters, a seed and a kernel config.

:func:`run_cell` is a pure function of the :class:`CellSpec` (the same spec
gives the same metric rows on any machine or worker); its wall time is
reported separately and never part of the metrics. A cell's id is the SHA-256
of its canonical JSON (plus :data:`RESULTS_SCHEMA`), so a results database
knows which cells are already done.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from foliosim.evaluate.probe import ORACLE_MODES, Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import make_design
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads.generators import build_workload, default_params
from foliosim.workloads.runtrace import RunTrace as _RunTrace
from foliosim.workloads.runtrace import is_run_trace, prepare, workload_file_steps
from foliosim.workloads.steps import Step, WorkloadError

#: Bump when what a cell measures changes: old rows then no longer match any cell id.
RESULTS_SCHEMA = 1
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

    def identity(self) -> dict[str, Any]:
        """The canonical description (what is hashed and stored)."""
        out: dict[str, Any] = {
            "schema": RESULTS_SCHEMA, "design": self.design, "workload": self.workload,
            "params": dict(self.params), "seed": self.seed, "word_bits": self.word_bits,
            "no_page_mapcount": self.no_page_mapcount, "oracle": self.oracle,
        }
        if self.workload_text is not None:
            out["workload_sha256"] = hashlib.sha256(self.workload_text.encode()).hexdigest()
        return out

    @property
    def cell_id(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def make_cell(design: str, workload: str, params: dict[str, Any] | None, seed: int, *, word_bits: int = 64,
              no_page_mapcount: bool = False, oracle: str = "reuse", workload_text: str | None = None) -> CellSpec:
    """A validated cell (unknown designs, workloads, parameters or modes raise ValueError/WorkloadError)."""
    make_design(design, KernelConfig(word_bits=word_bits, no_page_mapcount=no_page_mapcount))
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
                    workload_text)


@dataclass(slots=True)
class CellResult:
    cell_id: str
    spec: CellSpec
    rows: list[MetricRow]
    seconds: float
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


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
    """Run one cell and return its metric rows (deterministic) and its wall time (not)."""
    began = time.perf_counter()
    config = KernelConfig(word_bits=spec.word_bits, no_page_mapcount=spec.no_page_mapcount)
    design = make_design(spec.design, config)
    conversion = None
    if spec.workload.startswith(FILE_PREFIX) and is_run_trace(spec.workload_text or ""):
        conversion = prepare(_RunTrace(spec.workload, text=spec.workload_text))
        steps = conversion.steps()
    else:
        steps = cell_steps(spec)
    machine = Machine(config, MachineOptions(keep_events=False, check=False))
    probe = Probe(machine, design, spec.oracle)
    imported = spec.workload.startswith(FILE_PREFIX)
    runner = WorkloadRunner(machine, probe, strict=not imported)
    stats = runner.run(steps)
    probe.finish()
    probe.tally.add("skipped_steps", stats.skipped)
    for what, count in stats.errors.items():
        probe.tally.add("failed_calls", count, consumer=what)
    for outcome, count in stats.faults.items():  # a run trace's recorded faults: taken, or why not
        probe.tally.add("recorded_faults", count, consumer=outcome)
    if conversion is not None:
        for outcome, count in conversion.stats.fault_skips.items():
            probe.tally.add("recorded_faults", count, consumer=outcome)
        for name, count in (conversion.stats.unexpressed + conversion.stats.skipped).items():
            probe.tally.add("skipped_steps", count, consumer=name)
    notes = list(probe.problems)
    if stats.first_skip:
        notes.append(f"first skipped: {stats.first_skip}")
    notes += [f"skipped: {where}" for where in stats.skips[1:]]
    return CellResult(spec.cell_id, spec, probe.tally.rows(), time.perf_counter() - began, stats.skipped, notes)
