"""``foliosim run-trace``: simulate a run trace and check it against the live snapshots it holds.

The trace is read twice: once to check every line and size every file it maps
(:func:`foliosim.workloads.runtrace.prepare`), once to stream its steps into the process simulator
(:class:`foliosim.evaluate.runner.WorkloadRunner`, not strict: a step the simulator refuses is counted, never
fatal). With the default design (``kernel``) the simulator answers every sharing question itself; another
design is plugged in through the evaluator's probe (``Machine.sharing``), as ``foliosim compare`` does. The
isolation oracle is off by default: it walks every mapped page (cost follows mapped size, and real programs
reserve GiBs); ``oracle="reuse"`` or ``"every"`` turns it on. At each snapshot the simulator's state is
compared with the live one (:mod:`foliosim.live.snapcheck`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from foliosim.evaluate.probe import Probe
from foliosim.evaluate.runner import FAULT_TAKEN, WorkloadRunner
from foliosim.kconfig import KernelConfig
from foliosim.live.snapcheck import SnapshotChecker
from foliosim.schemes.base import make_design
from foliosim.vm.events import SimError, errno_name
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.vm.memory import ZERO_PAGE
from foliosim.vm.oracle import ReferenceMemory
from foliosim.workloads.runtrace import Conversion, ConvertStats, Header, Race, RunTrace, Snapshot, prepare
from foliosim.workloads.steps import Step, WorkloadError

#: steps between two clean-ups of what the machine keeps for replays and viewers (the rmap trace, fault list)
HOUSEKEEPING = 4096
ORACLE_MODES = ("off", "reuse", "every")


@dataclass(slots=True)
class Progress:
    """Where a simulation is: trace line, of how many, steps and faults so far, seconds."""

    line: int
    lines: int
    steps: int
    faults: int
    seconds: float


@dataclass(slots=True)
class TraceRun:
    """What simulating a run trace gave: counts by cause, decisions, folios, timing, live agreement."""

    name: str
    header: Header
    design: str
    oracle: str
    convert: ConvertStats
    faults: Counter[str] = field(default_factory=Counter)  # recorded faults: taken, or why not
    cow: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, outcome) -> decisions
    allocated: Counter[tuple[str, int]] = field(default_factory=Counter)  # (kind, order) -> folios allocated
    alive: Counter[tuple[str, int]] = field(default_factory=Counter)  # (kind, order) -> folios alive at the end
    rejected: Counter[str] = field(default_factory=Counter)  # steps the simulator refused or failed
    rejected_examples: list[str] = field(default_factory=list)
    steps: int = 0
    tasks: int = 0
    sim_seconds: float = 0.0
    check_seconds: float = 0.0
    wall_seconds: float = 0.0
    oracle_runs: int = 0
    oracle_problems: list[str] = field(default_factory=list)
    design_totals: dict[str, float] = field(default_factory=dict)
    check: SnapshotChecker | None = None
    machine: Machine | None = field(default=None, repr=False)  # the simulator at the end (not in to_json())

    @property
    def recorded_faults(self) -> int:
        return self.convert.faults

    @property
    def faults_taken(self) -> int:
        return self.faults[FAULT_TAKEN]

    @property
    def faults_per_second(self) -> float:
        return self.faults_taken / self.sim_seconds if self.sim_seconds > 0 else 0.0

    @property
    def reuses(self) -> int:
        return sum(n for (_rule, outcome), n in self.cow.items() if outcome == "reuse")

    @property
    def copies(self) -> int:
        return sum(n for (_rule, outcome), n in self.cow.items() if outcome == "copy")

    def to_json(self) -> dict[str, Any]:
        return {
            "trace": self.name, "command": list(self.header.command), "kernel": self.header.kernel,
            "thp": {"always": sorted(self.header.thp.always), "madvise": sorted(self.header.thp.madvise),
                    "shmem": sorted(self.header.thp.shmem)},
            "recorder": self.header.recorder, "design": self.design, "oracle": self.oracle,
            "tasks": self.tasks, "processes": self.convert.processes, "threads": self.convert.threads,
            "steps": self.steps, "recorded_faults": self.recorded_faults, "faults": dict(self.faults.most_common()),
            "cow": [{"rule": rule, "outcome": outcome, "count": n} for (rule, outcome), n in self.cow.most_common()],
            "reuses": self.reuses, "copies": self.copies,
            "folios_allocated": [{"kind": k, "order": o, "count": n} for (k, o), n in sorted(self.allocated.items())],
            "folios_alive": [{"kind": k, "order": o, "count": n} for (k, o), n in sorted(self.alive.items())],
            "rejected": dict(self.rejected.most_common()), "rejected_examples": self.rejected_examples,
            "conversion": self.convert.to_json(),
            "sim_seconds": self.sim_seconds, "check_seconds": self.check_seconds, "wall_seconds": self.wall_seconds,
            "faults_per_second": self.faults_per_second,
            "oracle_runs": self.oracle_runs, "oracle_problems": self.oracle_problems,
            "design_totals": self.design_totals,
            "live": self.check.to_json() if self.check is not None else None,
        }


class _NoReference:
    """The isolation oracle's reference model, not kept (``Machine.ref`` with the oracle off): nothing reads it
    then, and keeping it costs a copy of every page written and a walk of the private pages at each fork
    (vm/oracle.py ReferenceMemory). Every update is ignored; a lookup answers the zero page."""

    files: dict[str, list[bytes]] = {}  # noqa: RUF012 - never written
    private: dict[str, dict[int, bytes]] = {}  # noqa: RUF012 - never written

    def expected(self, *_args: Any) -> bytes:
        return ZERO_PAGE

    def __getattr__(self, name: str) -> Callable[..., None]:
        return _ignore


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


class _Runner(WorkloadRunner):
    """The evaluator's runner, remembering which call failed with which errno."""

    def __init__(self, machine: Machine, probe: Probe | None, rejected: Counter[str]) -> None:
        super().__init__(machine, probe, strict=False)
        self.rejected = rejected

    def _rc(self, what: str, value: int) -> None:
        super()._rc(what, value)
        if value < 0:
            self.rejected[f"{what} -> -{errno_name(value)}"] += 1


def simulate(trace: RunTrace, *, design: str = "kernel", oracle: str = "off", config: KernelConfig | None = None,
             progress: Callable[[Progress], None] | None = None, conversion: Conversion | None = None) -> TraceRun:
    """Simulate ``trace``; RunTraceError for a malformed trace (before anything runs), ValueError for a bad
    design or oracle mode."""
    if oracle not in ORACLE_MODES:
        raise ValueError(f"oracle mode must be one of {', '.join(ORACLE_MODES)}, not {oracle!r}")
    began = time.perf_counter()
    config = config or KernelConfig()
    scheme = make_design(design, config)  # ValueError for an unknown design
    conv = conversion if conversion is not None else prepare(trace)
    m = Machine(config, MachineOptions(keep_events=False, check=False))
    if oracle == "off":
        m.ref = cast(ReferenceMemory, _NoReference())
    probe = Probe(m, scheme, oracle) if design != "kernel" or oracle != "off" else None
    run = TraceRun(trace.name, conv.header, design, oracle, conv.stats)
    runner = _Runner(m, probe, run.rejected)
    checker = SnapshotChecker() if conv.stats.snapshots else None
    run.check = checker
    tasks: set[str] = set()
    last_report = time.perf_counter()
    index = 0
    line = 0
    racy = False
    for item in conv.items():
        if isinstance(item, Race):  # the next fault's order against another process's is not known
            racy = checker is not None
            continue
        if isinstance(item, Snapshot):
            if checker is not None:
                t0 = time.perf_counter()
                checker.check(m, item)
                run.check_seconds += time.perf_counter() - t0
            line = item.line
            continue
        if item.task:
            tasks.add(item.task)
        t0 = time.perf_counter()
        if racy and item.verb == "fault":
            racy = False
            assert checker is not None
            before = _folio_at(m, item)
            _execute(runner, run, item, index)
            checker.racy.update(name for name in (before, _folio_at(m, item)) if name)
        else:
            _execute(runner, run, item, index)
        if probe is not None:
            probe.after_step()
        run.sim_seconds += time.perf_counter() - t0
        index += 1
        if index % HOUSEKEEPING == 0:
            _housekeeping(m, run, probe is None)
            now = time.perf_counter()
            if progress is not None and now - last_report >= 1.0:
                last_report = now
                progress(Progress(conv.stats.lines or line, conv.lines, index, runner.stats.faults[FAULT_TAKEN],
                                  now - began))
    _housekeeping(m, run, probe is None)
    run.convert = conv.stats
    run.steps = index
    run.tasks = len(tasks - {""})
    run.faults.update(runner.stats.faults)
    for cause, n in conv.stats.fault_skips.items():
        run.faults[cause] += n
    if runner.stats.errors.get("SIGSEGV"):
        run.rejected["populating access -> SIGSEGV"] += runner.stats.errors["SIGSEGV"]
    for key, value in m.counters.items():
        if key.startswith("alloc "):
            _alloc, kind, _order, order = key.split(" ")
            run.allocated[(kind, int(order))] += value
    for f in m.folios.values():
        run.alive[(f.kind.value, f.order)] += 1
    if probe is not None:
        t0 = time.perf_counter()
        probe.finish()
        run.sim_seconds += time.perf_counter() - t0
        run.oracle_runs = int(probe.tally.total("oracle_checks"))
        run.oracle_problems = list(probe.problems)
        if design != "kernel":
            keys = ("checks", "exact_shared", "false_shared", "false_exclusive", "decisions", "unsafe", "avoidable",
                    "cow_copies", "cow_reuses", "avoidable_copies", "oracle_leaks")
            run.design_totals = {k: probe.tally.total(k) for k in keys}
    run.machine = m
    run.wall_seconds = time.perf_counter() - began
    return run


def _execute(runner: _Runner, run: TraceRun, step: Step, index: int) -> None:
    try:
        runner.execute(step, index)
    except (SimError, WorkloadError) as exc:
        run.rejected[f"{step.verb} refused by the simulator"] += 1
        if step.verb == "fault":
            run.faults["refused by the simulator"] += 1
        if len(run.rejected_examples) < 5:
            run.rejected_examples.append(f"{step.verb} {step.task} {list(step.args)}: {exc}")


def _folio_at(m: Machine, step: Step) -> str | None:
    """The simulated folio a fault step's page maps now (None: nothing)."""
    task = m.tasks.get(step.task)
    hit = m.lookup(task.mm, step.args[0]) if task is not None and isinstance(step.args[0], int) else None
    return hit[0].name if hit is not None else None


def _housekeeping(m: Machine, run: TraceRun, drop_trace: bool) -> None:
    """Tally and forget what the machine accumulates for viewers and replays (memory follows the run, not faults)."""
    for d in m.cow_decisions:
        run.cow[(d.rule.value, d.outcome)] += 1
    m.cow_decisions.clear()
    m.user_faults.clear()
    if drop_trace:  # no probe reads it
        m.trace.clear()


__all__ = ["ORACLE_MODES", "Progress", "TraceRun", "simulate"]
