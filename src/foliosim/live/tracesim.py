"""``foliosim run-trace``: simulate a run trace and check it against the live snapshots it holds.

The trace is read once to check every line and size every file it maps
(:func:`foliosim.workloads.runtrace.prepare`, which keeps the steps it made; a very long trace is read a second
time), then its steps are streamed into the process simulator (:class:`foliosim.evaluate.runner.WorkloadRunner`,
not strict: a step the simulator refuses is counted, never fatal). With the default design (``kernel``) the
simulator answers every sharing question itself; another design is plugged in through the evaluator's probe
(``Machine.sharing``), as ``foliosim compare`` does. The isolation oracle is off by default: it walks every mapped
page (cost follows mapped size, and real programs reserve GiBs); ``oracle="reuse"`` or ``"every"`` turns it on. At
each snapshot the simulator's state is compared with the live one (:mod:`foliosim.live.snapcheck`).

``engine="fast"`` runs the same simulation on the compiled engine (:mod:`foliosim.fast.sim.tracerun`; the
``kernel`` design only, the oracle modes with the fast engine's incremental oracle); what it does not model falls
back to this module's reference run, said through ``on_fallback``.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from foliosim.evaluate.probe import Probe
from foliosim.evaluate.runner import FAULT_TAKEN, WorkloadRunner
from foliosim.kconfig import KernelConfig
from foliosim.live.snapcheck import SnapshotChecker
from foliosim.schemes.base import make_design
from foliosim.vm.events import OracleViolation, SimError, errno_name
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.vm.memory import ZERO_PAGE
from foliosim.vm.oracle import ReferenceMemory
from foliosim.workloads.runtrace import Conversion, ConvertStats, Header, Race, RunTrace, Snapshot, prepare
from foliosim.workloads.steps import Step, WorkloadError

if TYPE_CHECKING:
    from foliosim.fast.sim.tracerun import TraceRunner

#: steps between two clean-ups of what the machine keeps for replays and viewers (the rmap trace, fault list)
HOUSEKEEPING = 4096
#: steps the fast engine queues before it runs them (fewer, longer compiled stretches: each costs a fixed setup)
FAST_STRETCH = 1 << 16
ORACLE_MODES = ("off", "reuse", "every")
ENGINES = ("reference", "fast")
#: the isolation oracle each engine runs (TraceRun.oracle_engine)
ORACLE_REFERENCE = "reference (Machine.check(): every mapped page against ReferenceMemory, folio invariants)"
ORACLE_FAST = ("fast (incremental, on every access: each anonymous page reads what its MM last wrote, each store hits "
               "an AnonExclusive page; pages of file and shmem mappings not checked)")


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
    engine: str = "reference"  # which simulator ran: reference or fast
    load_seconds: float = 0.0  # loading (or compiling) the fast engine's kernels, before the simulation
    stopped: str = ""  # why the run stopped before the end of the trace (the fast oracle found a problem)
    machine: Any = field(default=None, repr=False)  # the simulator at the end, either engine's (not in to_json())

    @property
    def oracle_engine(self) -> str:
        """Which isolation oracle ran (empty when off)."""
        if self.oracle == "off":
            return ""
        return ORACLE_FAST if self.engine == "fast" else ORACLE_REFERENCE

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

    def cow_ranked(self) -> list[tuple[tuple[str, str], int]]:
        """The CoW decisions by (rule, outcome), most frequent first, ties by name (the same order on both
        engines)."""
        return sorted(self.cow.items(), key=lambda kv: (-kv[1], kv[0]))

    def to_json(self) -> dict[str, Any]:
        return {
            "trace": self.name, "command": list(self.header.command), "kernel": self.header.kernel,
            "thp": {"always": sorted(self.header.thp.always), "madvise": sorted(self.header.thp.madvise),
                    "shmem": sorted(self.header.thp.shmem)},
            "recorder": self.header.recorder, "design": self.design, "oracle": self.oracle,
            "engine": self.engine, "oracle_engine": self.oracle_engine, "stopped": self.stopped,
            "tasks": self.tasks, "processes": self.convert.processes, "threads": self.convert.threads,
            "steps": self.steps, "recorded_faults": self.recorded_faults, "faults": dict(self.faults.most_common()),
            "cow": [{"rule": rule, "outcome": outcome, "count": n} for (rule, outcome), n in self.cow_ranked()],
            "reuses": self.reuses, "copies": self.copies,
            "folios_allocated": [{"kind": k, "order": o, "count": n} for (k, o), n in sorted(self.allocated.items())],
            "folios_alive": [{"kind": k, "order": o, "count": n} for (k, o), n in sorted(self.alive.items())],
            "rejected": dict(self.rejected.most_common()), "rejected_examples": self.rejected_examples,
            "conversion": self.convert.to_json(),
            "sim_seconds": self.sim_seconds, "check_seconds": self.check_seconds, "wall_seconds": self.wall_seconds,
            "load_seconds": self.load_seconds,
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
             progress: Callable[[Progress], None] | None = None, conversion: Conversion | None = None,
             engine: str = "reference", on_fallback: Callable[[str], None] | None = None) -> TraceRun:
    """Simulate ``trace``; RunTraceError for a malformed trace (before anything runs), ValueError for a bad
    design, oracle mode or engine.

    ``engine="fast"``: on the compiled simulator; where it cannot (no numba, a design other than ``kernel``, a
    step it does not model), ``on_fallback(reason)`` is told and the reference runs the whole trace."""
    if oracle not in ORACLE_MODES:
        raise ValueError(f"oracle mode must be one of {', '.join(ORACLE_MODES)}, not {oracle!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    began = time.perf_counter()
    config = config or KernelConfig()
    scheme = make_design(design, config)  # ValueError for an unknown design
    conv = conversion if conversion is not None else prepare(trace)
    if engine == "fast":
        reason = _fast_refusal(design)
        if reason is None:
            from foliosim.fast.sim.engine import Unsupported

            prepared = conv.stats  # the first pass's figures (a run refills them as it converts)
            try:
                return _simulate_fast(trace, conv, design, oracle, config, progress, began)
            except Unsupported as exc:
                conv.stats = prepared
                reason = f"the fast engine does not model {exc}" if not str(exc).startswith("the fast") else str(exc)
        if on_fallback is not None:
            on_fallback(reason)
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


def _fast_refusal(design: str) -> str | None:
    """Why the fast engine cannot run this simulation at all (None: it can try)."""
    from foliosim.fast import HAVE_NUMBA, NUMBA_MISSING

    if not HAVE_NUMBA:
        return NUMBA_MISSING
    if design != "kernel":
        return (f"the fast engine has no hook for the design {design!r} as the simulator's sharing answer "
                f"(closed loop; only the kernel's own)")
    return None


def _simulate_fast(trace: RunTrace, conv: Conversion, design: str, oracle: str, config: KernelConfig,
                   progress: Callable[[Progress], None] | None, began: float) -> TraceRun:
    """:func:`simulate` on the compiled engine (foliosim.fast.sim.tracerun): the same figures; Unsupported for a
    step it does not model (nothing is kept: the caller runs the reference)."""
    from foliosim.fast.sim.engine import Unsupported
    from foliosim.fast.sim.kprog import FaultSteps
    from foliosim.fast.sim.tracerun import Races, SnapshotView, TraceMachine, TraceRunner, fault_arrays, load_kernels

    perf = time.perf_counter
    try:
        loaded = load_kernels(config, oracle != "off", lookup=bool(conv.stats.snapshots))
    except OracleViolation as exc:
        raise Unsupported(f"the fast engine stopped ({exc})") from None
    m = TraceMachine(config, oracle != "off")
    m.track_reuse = oracle == "reuse"
    run = TraceRun(trace.name, conv.header, design, oracle, conv.stats, engine="fast", load_seconds=loaded)
    runner = TraceRunner(m, run.rejected)
    checker = SnapshotChecker() if conv.stats.snapshots else None
    run.check = checker
    tasks: set[str] = set()
    last_report = perf()
    index = 0
    line = 0
    racy = False
    pending: list[Step] = FaultSteps()  # steps not run yet: runner.run_steps() takes them in stretches
    on_step = partial(_execute, runner, run)
    races: Races | None = None
    if checker is not None:
        def racy_step(step: Step, at: int) -> None:  # a fault after a race: its folio before and after, noted
            assert checker is not None
            runner.flush()
            before = _folio_at(m, step)
            _execute(runner, run, step, at)
            runner.flush()
            checker.racy.update(name for name in (before, _folio_at(m, step)) if name)

        races = Races(racy_step, checker.racy)

    # With the oracle off, the live snapshots are checked between stretches of one program (TraceRunner.run_steps()'s
    # ``stops``): one encoding and one set of arrays for up to FAST_STRETCH steps, not one per snapshot. (With it on,
    # a finding stops the run: the trace is read no further than the snapshot after it, as conv.stats then tells.)
    stops: list[tuple[int, Callable[[], None]]] = []
    paused = 0.0  # seconds of snapshot checks inside run_steps(): not simulating

    def check_at(snapshot: Snapshot) -> Callable[[], None]:
        def check() -> None:
            nonlocal paused
            assert checker is not None
            runner.flush()
            t1 = perf()
            checker.check(cast(Machine, SnapshotView(m)), snapshot)
            t2 = perf()
            run.check_seconds += t2 - t1
            paused += t2 - t1
        return check

    def run_pending() -> None:
        nonlocal index, paused
        if pending:
            t0 = perf()
            paused = 0.0
            runner.run_steps(pending, index, on_step, races, stops, faults, view_stops=True)  # checks: a SnapshotView
            run.sim_seconds += perf() - t0 - paused
            index += len(pending)
            pending.clear()
            stops.clear()
            if races is not None:
                races.rows.clear()

    faults = fault_arrays(conv)  # the fault steps the reader told as columns: their program rows filled from them
    items = conv.items()
    collect = gc.isenabled()
    # no garbage collection while the steps run (what cyclic garbage they make is collected after): a full collection
    # would walk every step prepare() kept (tens of thousands of objects) inside the timed simulation
    gc.disable()
    try:
        for item in items:
            if isinstance(item, Race):
                racy = checker is not None
                continue
            if isinstance(item, Snapshot):
                if checker is not None and pending and oracle == "off":
                    stops.append((len(pending), check_at(item)))
                elif checker is not None:
                    run_pending()
                    t0 = perf()
                    runner.flush()
                    t1 = perf()
                    run.sim_seconds += t1 - t0
                    checker.check(cast(Machine, SnapshotView(m)), item)
                    run.check_seconds += perf() - t1
                line = item.line
                continue
            if item.task:
                tasks.add(item.task)
            if racy and item.verb == "fault":
                racy = False
                assert races is not None
                races.rows.append(len(pending))
            pending.append(item)
            if len(pending) >= FAST_STRETCH:
                run_pending()
                if progress is not None:
                    now = perf()
                    if now - last_report >= 1.0:
                        last_report = now
                        progress(Progress(conv.stats.lines or line, conv.lines, index, runner.faults[FAULT_TAKEN],
                                          now - began))
        run_pending()
        t0 = perf()
        runner.flush()
        m._drain()
        run.sim_seconds += perf() - t0
    except OracleViolation:  # the compiled loop stopped where the fast oracle (or a consistency check) failed
        items.close()  # conv.stats: the figures at the item it stopped after
        if pending:
            index = runner.index  # the step it stopped in
        problem = runner.oracle_problem()
        if oracle == "off" or not runner.oracle_found():  # not an oracle finding: a fast-engine failure
            raise Unsupported(f"the fast engine stopped ({problem})") from None
        run.oracle_problems.append(problem)
        run.stopped = f"the isolation oracle found a problem ({problem}); the figures cover the steps before"
    finally:
        if collect:
            gc.enable()
    run.convert = conv.stats
    run.steps = index
    run.tasks = len(tasks - {""})
    run.faults.update(runner.faults)
    for cause, n in conv.stats.fault_skips.items():
        run.faults[cause] += n
    if runner.segv():
        run.rejected["populating access -> SIGSEGV"] += runner.segv()
    run.cow.update(m.decisions())
    run.allocated.update(m.allocated())
    run.alive.update(m.alive())
    if oracle != "off":
        run.oracle_runs = len(runner.reuse_steps) + 1 if oracle == "reuse" else index + 1
    run.machine = m
    run.wall_seconds = perf() - began
    return run


def _execute(runner: _Runner | TraceRunner, run: TraceRun, step: Step, index: int) -> None:
    try:
        runner.execute(step, index)
    except (SimError, WorkloadError) as exc:
        run.rejected[f"{step.verb} refused by the simulator"] += 1
        if step.verb == "fault":
            run.faults["refused by the simulator"] += 1
        if len(run.rejected_examples) < 5:
            run.rejected_examples.append(f"{step.verb} {step.task} {list(step.args)}: {exc}")


def _folio_at(m: Any, step: Step) -> str | None:
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


__all__ = ["ENGINES", "ORACLE_MODES", "Progress", "TraceRun", "simulate"]
