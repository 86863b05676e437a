"""``foliosim run-trace``'s simulation on the compiled engine (:func:`foliosim.live.tracesim.simulate` with
``engine="fast"``).

:class:`TraceRunner` runs a run trace's steps as :class:`foliosim.evaluate.runner.WorkloadRunner` does for
run-trace (not strict: the caller counts a refused step and goes on), recorded faults included: a ``fault`` step
outside any VMA or against its protection is counted by cause at once; otherwise it becomes a one-page access row
batched with its neighbours, and the compiled fault loop takes a fault exactly where the reference's
``WorkloadRunner._fault()`` would (page absent, or a write to a page not mapped writable). Which rows faulted
comes from the loop's own fault list, the CoW decisions by (rule, outcome) from its decision array, folios
allocated from per-(kind, order) counters in the arrays: :class:`TraceMachine` keeps no rmap trace and makes no
decision objects (``record=False, keep_decisions=False``). :meth:`TraceRunner.run_steps` runs stretches of steps in
the compiled step interpreter (:class:`TraceProgram`, foliosim.fast.sim.kprog), which counts the recorded faults'
outcomes and the decisions itself; the steps it does not model (mmap, munmap, mprotect, merge, exec, vfork, threads,
files, ...) go one by one through :meth:`TraceRunner.execute`, with the same figures.

:class:`SnapshotView` gives :class:`foliosim.live.snapcheck.SnapshotChecker` the reference Machine's accessors it
reads (tasks, MMs, live folio names, ``iter_mapped``, ``lookup``) over a :class:`TraceMachine`, and the simulated
side of a snapshot read in bulk from the arrays (``snapshot_pages``), so the one checker compares live snapshots
with either engine.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from foliosim.evaluate.runner import FAULT_MAPPED, FAULT_NO_VMA, FAULT_PRESENT, FAULT_PROT, FAULT_TAKEN, refused_fault
from foliosim.fast import kernels as K
from foliosim.fast.sim import kern, kprog
from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import _START, I64, KIND_NAMES, FastMachine, FastMM, FastTask, PmdSet
from foliosim.fast.sim.kfork import MISSING
from foliosim.fast.sim.steps import FastWorkloadRunner
from foliosim.folio import Folio
from foliosim.kconfig import KernelConfig
from foliosim.live.snapcheck import SimFolioFields, SimSnapshot, sim_snapshot
from foliosim.vm.events import OracleViolation, errno_name
from foliosim.vm.machine import MachineOptions
from foliosim.vm.memory import PAGE_SHIFT
from foliosim.vm.vma import Vma
from foliosim.workloads.runtrace import Conversion
from foliosim.workloads.steps import Step

#: the fewest steps :meth:`TraceRunner.run_steps` runs through the step interpreter
STRETCH_MIN = 32
#: a program with this many recorded faults makes room for its page tables first (TraceProgram._tables_ahead()),
#: when it will need TABLES_AHEAD_MIN of them or more (fewer double cheaply), for at most TABLES_AHEAD_MAX
TABLES_AHEAD_FAULTS = 16384
TABLES_AHEAD_MIN = 512
TABLES_AHEAD_MAX = 1 << 14
#: a program with fewer recorded faults, but TABLES_AHEAD_SOME or more, makes room for at most TABLES_AHEAD_FEW tables
#: first (one per (task, PMD), an over-count where processes come and go: make's 386 for at most 68 live): the
#: doublings from 16 to a hundred-odd tables cost three returns from the loop and copies of ~100 tables (~0.3 ms)
TABLES_AHEAD_SOME = 2048
TABLES_AHEAD_FEW = 128
#: zap's gather list made ahead for a program's recorded faults, rows per fault (at most kprog._AHEAD_MAX): an exit's
#: zap gathers a row per present PTE, a file fault maps up to 16 (fault-around); each growth is a return from the loop
GATHER_PER_FAULT = 4
#: what a step a few steps before a live snapshot's stop costs more through Python than in the loop, by opcode, in
#: recorded faults (a couple of microseconds each: queued, then run in one compiled call at the stop's flush); an
#: entry into the loop (its tables made, the objects brought back) costs about NEAR_ENTRY of them, the flush of
#: queued faults NEAR_FLUSH. Measured near the stops of make, pool, redis-bgsave and prefork-server: through Python
#: an mmap, munmap or mprotect 50-150 us, an exit ~100 us, a fork ~200 us (its MM's objects are made either way, ~100
#: us), an entry into the loop for a few steps ~200 us. (OP_OTHER runs through Python either way.)
NEAR_COST = np.full(kprog.OP_EXEC + 1, 25, dtype=np.int64)
NEAR_COST[[kprog.OP_OTHER, kprog.OP_READ, kprog.OP_WRITE, kprog.OP_FAULT]] = (0, 1, 1, 1)
NEAR_COST[[kprog.OP_FILE, kprog.OP_MERGE, kprog.OP_EXEC, kprog.OP_VFORK, kprog.OP_THREAD]] = 10
NEAR_COST[[kprog.OP_FORK, kprog.OP_EXIT]] = 50
NEAR_FLUSH = 15
NEAR_ENTRY = 100


@dataclass(slots=True)
class Races:
    """The recorded faults that follow a race (foliosim.workloads.runtrace.Race) among the steps given to
    :meth:`TraceRunner.run_steps`: their positions, how one runs by itself (``step``: the live checker's racy path,
    the folio at the fault's address noted before and after it) and where the folios' names go (``seen``:
    SnapshotChecker.racy)."""

    step: Callable[[Step, int], None]
    seen: set[str]
    rows: list[int] = field(default_factory=list)


#: the names of ZERO and HUGE_ZERO (FastMachine.view())
_SPECIAL = {L.ZERO: "zero", L.HUGE_ZERO: "huge_zero"}


class TraceMachine(FastMachine):
    """A :class:`FastMachine` that tallies what run-trace reports straight from the kernels' arrays: CoW decisions
    by (rule, outcome), the access rows of the current batch that took a fault and (``track_reuse``) those that
    reused a page."""

    #: the reuse test's mutant (``FastMachine(mutant=...)``), for the tests that the oracle reports a leak
    mutant = L.MUTANT_NONE

    def __init__(self, config: KernelConfig, fast_oracle: bool) -> None:
        super().__init__(config, MachineOptions(keep_events=False, check=False), record=False, keep_decisions=False,
                         fast_oracle=fast_oracle, reference=False, mutant=self.mutant)
        self.cow_counts = np.zeros((len(L.RULES), len(L.OUTCOMES)), dtype=np.int64)
        self.track_reuse = False
        self.batch: I64 | None = None  # the access rows being run (None: a control-plane call)
        self.faulted: set[int] = set()  # rows of the batch that took a fault
        self.reuse_rows: set[int] = set()  # rows of the batch whose fault reused a page (track_reuse)
        self.reused_outside = False  # a reuse decided outside a batch (a pin's unshare) since the last look
        # the program paused at a live snapshot's stop (TraceProgram._pause()): its tables, not the Python objects,
        # hold the tasks, MMs and VMAs then (SnapshotView reads them)
        self.paused: TraceProgram | None = None

    def _run_access(self, ops: I64, task_names: list[str] | None = None) -> None:
        self.batch = ops
        try:
            super()._run_access(ops, task_names)
        finally:
            self.batch = None

    def _drain(self, cow_tasks: list[str] | None = None) -> None:
        """Tally the pending decisions and the faults of the last compiled call, then let the engine drop them."""
        g = self.glob
        nf = int(g[L.G_NGATHER]) if self.batch is not None else 0
        if nf:
            self.faulted.update(self.faultbuf[:nf, 0].tolist())
        ncow = int(g[L.G_NCOW])
        if ncow:
            rows = self.cow[:ncow]
            np.add.at(self.cow_counts, (rows[:, L.C_RULE], rows[:, L.C_OUTCOME]), 1)
            if self.track_reuse and bool((rows[:, L.C_OUTCOME] == L.OC_REUSE).any()):
                self._note_reuses(rows, nf)
        super()._drain(cow_tasks)

    def _note_reuses(self, rows: I64, nf: int) -> None:
        """The batch row of each reuse decision: that of the fault (in order) at the decision's MM and page."""
        if self.batch is None:
            self.reused_outside = True
            return
        faults = self.faultbuf[:nf].tolist()
        ops = self.batch
        k = 0
        for row in rows.tolist():
            while k < nf and not (faults[k][1] == row[L.C_VPN] and ops[faults[k][0], 0] == row[L.C_MM]):
                k += 1
            if k == nf:
                self.reused_outside = True  # not from a fault of this call (cannot happen: counted as outside)
                k = 0
            elif row[L.C_OUTCOME] == L.OC_REUSE:
                self.reuse_rows.add(faults[k][0])

    def allocated(self) -> Counter[tuple[str, int]]:
        """Folios allocated by (kind, order), as the reference's ``alloc <kind> order <n>`` counters."""
        counts = self.glob[L.G_ALLOC:L.G_ALLOC + len(KIND_NAMES) * L.ALLOC_ORDERS].reshape(len(KIND_NAMES), -1)
        return Counter({(KIND_NAMES[k], o): int(counts[k, o]) for k, o in zip(*np.nonzero(counts), strict=True)})

    def alive(self) -> Counter[tuple[str, int]]:
        """Live folios by (kind, order)."""
        n = int(self.glob[L.G_NFOLIO])
        live = self.fs[:n][self.fs[:n, K.F_LIVE] != 0]
        pairs = Counter(zip(live[:, L.X_KIND].tolist(), live[:, K.F_ORDER].tolist(), strict=True))
        return Counter({(KIND_NAMES[k], o): n for (k, o), n in pairs.items()})

    def decisions(self) -> Counter[tuple[str, str]]:
        """CoW decisions by (rule, outcome) so far."""
        rules, outcomes = np.nonzero(self.cow_counts)
        return Counter({(L.RULES[r].value, L.OUTCOMES[o]): int(self.cow_counts[r, o])
                        for r, o in zip(rules.tolist(), outcomes.tolist(), strict=True)})


class TraceRunner(FastWorkloadRunner):
    """:class:`FastWorkloadRunner` with recorded ``fault`` steps, counting them by outcome as the reference's
    ``WorkloadRunner._fault()`` does, and each failing call by errno (run-trace's ``rejected``)."""

    m: TraceMachine

    def __init__(self, machine: TraceMachine, rejected: Counter[str], batch: int = 4096) -> None:
        super().__init__(machine, batch)
        self.rejected = rejected
        self.faults: Counter[str] = Counter()
        self.row_steps: list[int] = []  # the step index of each row of the pending batch
        self.fault_rows: dict[int, bool] = {}  # row of a recorded fault -> a write
        self.reuse_steps: set[int] = set()  # steps in which a page was reused (with ``m.track_reuse``)
        self.index = 0
        self.failed: tuple[int, int] | None = None  # the first and last step of a batch that raised

    def _rc(self, what: str, value: int) -> None:
        super()._rc(what, value)
        if value < 0:
            self.rejected[f"{what} -> -{errno_name(value)}"] += 1

    def execute(self, step: Step, index: int) -> None:
        m = self.m
        self.index = index
        verb = step.verb
        if verb == "fault":
            self._fault(step, index)
            return
        if verb in ("read", "write"):  # the checks the batched row would make, before it is queued
            self._vpn(step.args[0])
            task = m.tasks.get(step.task)
            if task is None or task.vfork_blocked:
                m._runnable(step.task)
            self.row_steps.append(index)
            super().execute(step, index)
            return
        super().execute(step, index)  # flushes the batch first
        if m.reused_outside:
            m.reused_outside = False
            self.reuse_steps.add(index)

    def _fault(self, step: Step, index: int) -> None:
        m = self.m
        task: FastTask | None = m.tasks.get(step.task)
        if task is None:
            task = m.task(step.task)  # raises: no such task
        mm = task.mm
        region, page, written = step.args
        base = region if isinstance(region, int) else self.regions.get(region)
        vpn = (self._vpn(region) if base is None else base) + page  # _vpn() raises: unknown region
        write = bool(written)
        if type(mm) is kprog.LazyMM:  # its VMA from the rows: its Vma objects are not made for this
            rw = mm.prot_at(vpn)
            if rw is None:
                self.faults[FAULT_NO_VMA] += 1
                return
            if not rw[write]:
                self.faults[FAULT_PROT] += 1
                return
        else:
            vmas = mm.vmas  # mm.find_vma(vpn), inline: a fault step is the common case
            at = bisect_right(vmas, vpn, key=_START) - 1
            refused = refused_fault(vmas[at] if at >= 0 and vmas[at].end > vpn else None, write)
            if refused is not None:
                self.faults[refused] += 1
                return
        if task.vfork_blocked:  # the reference looks the page up before the access refuses the sleeping task
            self.flush()
            f, _page, writable, _pmd = m.lookup_slot(mm, vpn)
            if f != L.NONE and (writable or not write):
                self.faults[FAULT_MAPPED if write else FAULT_PRESENT] += 1
                return
            task = m._runnable(step.task)
        self.fault_rows[len(self._ops)] = write
        self.row_steps.append(index)
        self._ops.append((task.mm.num, vpn, 1, int(write), 1 + (index * 37) % 255 if write else -1, 0))
        self._tasks.append(step.task)
        if len(self._ops) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self._ops:
            return
        m = self.m
        m.faulted = set()
        m.reuse_rows = set()
        try:
            super().flush()
        except BaseException:
            self.failed = (self.row_steps[0], self.row_steps[-1]) if self.row_steps else (self.index, self.index)
            raise
        finally:
            faulted = m.faulted
            for r, write in self.fault_rows.items():
                self.faults[FAULT_TAKEN if r in faulted else FAULT_MAPPED if write else FAULT_PRESENT] += 1
            for r in m.reuse_rows:
                self.reuse_steps.add(self.row_steps[r])
            self.fault_rows.clear()
            self.row_steps.clear()

    def compiled(self) -> bool:
        """Whether :meth:`run_steps` runs stretches in the compiled step interpreter: the machine allows it
        (:func:`kprog.compiled_unsupported`, no decision objects) and neither :meth:`execute` nor :meth:`flush` is
        overridden (a subclass or a test that hooks them needs every step through them)."""
        cls = type(self)
        return (cls.execute is _HOOKS[0] and cls.flush is _HOOKS[1] and not self.m.keep_decisions
                and kprog.compiled_unsupported(self.m) is None)

    def run_steps(self, steps: list[Step], base: int, on_step: Callable[[Step, int], None],
                  races: Races | None = None, stops: list[tuple[int, Callable[[], None]]] | None = None,
                  faults: FaultArrays | None = None, view_stops: bool = False) -> None:
        """Run ``steps`` (step ``base`` onwards of the trace): what the step interpreter models in compiled stretches
        (:class:`TraceProgram`), every other step through ``on_step(step, index)`` (which calls :meth:`execute` and
        counts what it refuses) as one step at a time would, the racy faults of ``races`` through ``races.step``
        unless the loop notes their folios itself. An :class:`OracleViolation` leaves :attr:`index` at the step it
        stopped in. A few steps (fewer than :data:`STRETCH_MIN`) go one by one: encoding them and entering the loop
        would cost more than it saves. ``stops``: (k, fn), k ascending: ``fn()`` is called once the steps before
        ``steps[k]`` have run and the machine's objects follow them (a live snapshot's check between two stretches
        of one program: one encoding and one set of arrays for the whole list). ``faults``: the trace's fault
        columns (:func:`fault_arrays`), ``base`` counted as they count: the program's rows of the faults they tell
        are filled from them. ``view_stops``: the stops read the machine only through a :class:`SnapshotView` made in
        them (the live checks): a stop the loop reaches with only loop steps after it does not leave the loop's
        tables (the objects follow them at the next step through Python or the end of the stretch)."""
        if len(steps) < STRETCH_MIN or not self.compiled():
            racy = set(races.rows) if races is not None else set()
            at = 0
            for k, step in enumerate(steps):
                while stops and at < len(stops) and stops[at][0] <= k:
                    stops[at][1]()
                    at += 1
                if k in racy:
                    assert races is not None
                    races.step(step, base + k)
                else:
                    on_step(step, base + k)
            for _k, fn in (stops or [])[at:]:
                fn()
            return
        self.flush()
        if faults is not None or type(steps) is kprog.FaultSteps:
            told = faults.stretch(base, len(steps)) if faults is not None else None
            if type(steps) is not kprog.FaultSteps:
                steps = kprog.FaultSteps(steps)
            assert isinstance(steps, kprog.FaultSteps)
            steps.faults = told
        program = TraceProgram(self, steps, base, on_step, races)
        if stops:
            program.stops = stops
            program.view_stops = view_stops
        program.run()

    def oracle_found(self) -> bool:
        """Whether the last batch stopped on an isolation finding (not on a failed consistency check)."""
        return int(self.m.glob[L.G_ERR]) in (L.E_ISOLATION, L.E_WRITE_RO)

    def oracle_problem(self) -> str:
        """The fast oracle's finding that stopped the last batch: what, where, in which steps."""
        g = self.m.glob
        err, where = int(g[L.G_ERR]), int(g[L.G_ERRF])
        what = L.REASONS.get(err, f"code {err}")
        at = f" at {where << PAGE_SHIFT:#x}" if err in (L.E_ISOLATION, L.E_WRITE_RO) else f" (folio f{where})"
        lo, hi = self.failed if self.failed is not None else (self.index, self.index)
        steps = f"step {lo + 1}" if lo == hi else f"steps {lo + 1}-{hi + 1} (one batch of accesses)"
        return f"{what}{at}, in {steps}"

    def segv(self) -> int:
        """Reads and writes refused with SIGSEGV so far (the recorded faults are checked before they are queued)."""
        return int(self.m.glob[L.G_SEGV]) - self._segv


def _racy_regions(steps: list[Step], rows: list[int]) -> list[Any]:
    """The region argument (``args[0]``) of the steps at ``rows`` (ascending); a told fault's (its page) from the
    list's columns, without reading its Step object."""
    told = steps.faults if type(steps) is kprog.FaultSteps else None
    if told is None:
        return [steps[k].args[0] for k in rows]
    trows, tvpn = told[0], told[1]
    want = np.array(rows, dtype=np.int64)
    at = np.minimum(np.searchsorted(trows, want), len(trows) - 1)
    hit = trows[at] == want
    out: list[Any] = tvpn[at].tolist()
    for j in np.flatnonzero(~hit).tolist():
        out[j] = steps[rows[j]].args[0]
    return out


@dataclass(slots=True)
class FaultArrays:
    """A trace's fault columns (foliosim.workloads.runtrace.FaultColumns) as arrays: the places of the fault steps
    the reader converted itself among :meth:`Conversion.items`' steps (ascending), their pages, their written
    flags (0/1), their tasks' names (an object array)."""

    at: I64
    vpn: I64
    write: I64
    task: npt.NDArray[np.object_]

    def stretch(self, base: int, n: int) -> kprog.Told | None:
        """The columns of the steps ``base`` to ``base + n``: (rows among them, pages, written, tasks); None:
        none."""
        lo, hi = np.searchsorted(self.at, (base, base + n)).tolist()
        if hi <= lo:
            return None
        return self.at[lo:hi] - base, self.vpn[lo:hi], self.write[lo:hi], self.task[lo:hi]


def fault_arrays(conv: Conversion) -> FaultArrays | None:
    """``conv``'s fault columns as arrays, their places counted among the steps :meth:`Conversion.items` hands out
    (None: it has none, it reads the trace again, or a subclass hands out items of its own)."""
    cols = conv.faults
    if (cols is None or conv.kept is None or conv.first is None or not cols.at
            or type(conv).items is not Conversion.items):
        return None
    n = len(cols.at)
    if not len(cols.vpn) == len(cols.write) == len(cols.task) == n:
        return None
    at = np.fromiter(cols.at, dtype=np.int64, count=n)
    if cols.offset:
        at += cols.offset
    return FaultArrays(at, np.fromiter(cols.vpn, dtype=np.int64, count=n),
                       np.fromiter(cols.write, dtype=np.bool_, count=n).astype(np.int64),
                       np.array(cols.task, dtype=object))


def told_steps(conv: Conversion, steps: list[Step] | None = None) -> list[Step]:
    """``conv``'s steps (``steps``: :meth:`Conversion.steps`, when the caller has them) as one
    :class:`kprog.FaultSteps` list whose recorded faults are told by the reader's columns (:func:`fault_arrays`), so
    that a program over the whole list (compare's driving run, foliosim.fast.sim.score.drive_fast) fills their rows
    from the columns instead of reading each Step object back, as run-trace's stretches do; the plain list when the
    conversion has no columns. Any other reader sees the same steps."""
    if steps is None:
        steps = conv.steps()
    faults = fault_arrays(conv)
    if faults is None:
        return steps
    out = kprog.FaultSteps(steps)
    out.faults = faults.stretch(0, len(out))
    return out


#: TraceRunner's own execute() and flush(): when either is replaced, every step goes through them
_HOOKS = (TraceRunner.execute, TraceRunner.flush)


class TraceProgram(kprog.ProgramRun):
    """A stretch of a run trace through :func:`kprog.run_program`: recorded faults counted by outcome and CoW
    decisions by (rule, outcome) in the compiled loop (``S_TALLY``), added to the runner's and machine's counters
    each time it returns; what it stops at goes through ``on_step`` then :meth:`TraceRunner.flush`."""

    r: TraceRunner
    m: TraceMachine

    def __init__(self, runner: TraceRunner, steps: list[Step], base: int, on_step: Callable[[Step, int], None],
                 races: Races | None = None) -> None:
        super().__init__(runner, steps)
        self.base = base
        self.on_step = on_step
        self.stops: list[tuple[int, Callable[[], None]]] = []  # (row, fn): fn() once the run reaches the row
        self.stop = 0  # the next stop to call
        self.view_stops = False  # the stops read only a SnapshotView (TraceRunner.run_steps())
        self._span = 0  # the last end of the stretches _call() runs as one (_chain()): _light() and fork read to it
        self._held = False  # the loop may pause at the end of _call()'s stretch: the objects are not brought back
        self._owed = False  # the tables are the truth, the objects wait for _materialize() (a pause)
        self.st[kprog.S_TALLY] = 1
        self.rs = np.zeros(max(len(steps), 1), dtype=np.int64)
        self.races = races
        self.racy_rows: set[int] = set()
        if races is not None and races.rows:
            self.racy_rows = set(races.rows)
            self.racy = np.zeros((len(races.rows), 3), dtype=np.int64)
            # the live checker looks a racy fault's region up when it is an address: those rows flagged (array
            # operations: a numpy scalar read or write per row costs more than the row in the loop)
            rid, prog = self.rid, self.prog
            firsts = _racy_regions(steps, races.rows)
            ints = [isinstance(r, int) for r in firsts]
            rows = np.array(list(compress(races.rows, ints)), dtype=np.int64)
            faulting = prog[rows, kprog.P_OP] == kprog.OP_FAULT
            rows = rows[faulting]
            if len(rows):
                prog[rows, kprog.P_ARG] |= kprog.FA_RACY
                zero = rid.get(0)
                if zero is not None:  # faults encoded as region 0 (kprog._addresses()): each its own region back
                    regs = list(compress(compress(firsts, ints), faulting.tolist()))
                    own = (prog[rows, kprog.P_REG] == zero) & np.array([r != 0 for r in regs], dtype=bool)
                    if own.any():
                        n = len(rid)
                        picked = list(compress(regs, own.tolist()))
                        nums = [rid.setdefault(r, len(rid)) for r in picked]
                        at = rows[own]
                        prog[at, kprog.P_REG] = nums
                        prog[at, kprog.P_FIRST] -= np.array(picked, dtype=np.int64)
                        if len(rid) > n:
                            rtab = np.full(len(rid), MISSING, dtype=np.int64)
                            rtab[:len(self.rtab)] = self.rtab
                            for region, i in rid.items():
                                if i >= n:
                                    rtab[i] = region
                            self.rtab = rtab
        if base and len(steps):  # a write's fill follows its index in the whole trace (execute()'s ``index``)
            fill = self.prog[:, kprog.P_FILL]
            rows = np.flatnonzero(fill > 0)
            fill[rows] = 1 + ((rows + base) * 37) % 255
        self.enable_control()  # after the fills: the control rows' P_FILL is not a fill

    def _prepare(self, pos: int = 0) -> None:
        if self._owed:  # resumed after a pause: the tables are the truth, nothing changed them since
            return
        self._end = max(self._end, self._span)  # the forks of every stretch run as one (_chained())
        if self.control:  # first: the tables fork reads are sized after the VMA rows
            self.grow_vma_arrays(pos)
        super()._prepare(pos)
        if self.control:
            self._prepare_control(pos)

    def run(self) -> None:
        m, r, steps, prog = self.m, self.r, self.steps, self.prog
        n = len(steps)
        forks = len(self.fork_rows)
        if forks:
            m._grow_rows("ms", m._next["mm"] + forks + 1)
        faults = self.nfault
        if faults > 64:  # folio and page rows for a folio per recorded fault, at most: no return to grow each time
            m._room(min(faults, kprog._AHEAD_MAX), min(2 * faults, kprog._AHEAD_MAX), self._tables_ahead(), 64)
            # scratch (their sizes change no result): zap's gather list, the table lists for every table made room for
            m._gather_rows(min(GATHER_PER_FAULT * faults, kprog._AHEAD_MAX))
            m._scratch(m.tb.shape[0])
        pos = 0
        stops = self.stops
        near_end = -1  # the stop the steps from pos to it go one by one to (_near(), once per stretch)
        while pos < n:
            while self.stop < len(stops) and stops[self.stop][0] <= pos:  # the objects follow the rows before pos:
                self.stop += 1  # _call() and the steps Python ran materialized them
                stops[self.stop - 1][1]()
            end = stops[self.stop][0] if self.stop < len(stops) else n
            # pins or pipes held, a step it does not model, or a few steps to the next stop that cost less one by one
            # than an entry into the loop (_near(): their reads, writes and recorded faults queued in the runner's
            # batch, run at the stop's check -- it flushes first -- or before the loop is entered again)
            # (with view_stops, not when the loop is entered at the stop anyway: _chain() finds stretches after it)
            near = end == near_end or (bool(stops) and end - pos < STRETCH_MIN and self._near(pos, end))
            ends: list[int] | None = None
            other = prog[pos, kprog.P_OP] == kprog.OP_OTHER
            if near and not other and end != near_end:  # decided at the stretch's first step the loop models
                if self.view_stops:
                    ends = self._chain(end)
                    near = not ends
                if near:
                    near_end = end
            if m.gup or other or near:
                why = kprog.WHY_STEP
            else:
                r.flush()
                pos, why = self._chained(pos, end, ends) if self.view_stops else self._call(pos, end)
            if why == kprog.WHY_DONE:
                if pos < n:
                    continue
                break
            if why == kprog.WHY_STEP:
                if pos in self.racy_rows:
                    assert self.races is not None
                    self.races.step(steps[pos], self.base + pos)
                else:
                    self.on_step(steps[pos], self.base + pos)
                if not near:
                    r.flush()
                pos += 1
                continue
            r.index = self.base + pos
            r.failed = (r.index, r.index)
            if why == kprog.WHY_MAPPED:
                raise OracleViolation(f"fast engine: mm{int(self.st[kprog.S_MAPPED])} freed with mappings left")
            m._check_rc(int(self.st[kprog.S_RC]))  # raised as a batch of accesses raises it
            raise AssertionError(f"step {r.index + 1}: the interpreter stopped with rc {int(self.st[kprog.S_RC])}")
        r.flush()
        for _row, fn in stops[self.stop:]:  # at the end of the list
            fn()

    def _near(self, pos: int, end: int) -> bool:
        """Whether rows ``pos`` to ``end`` (a few, before a stop) cost less through Python one by one than an entry
        into the loop (:data:`NEAR_COST`): recorded faults with an exit, a fork or a few control steps, not several
        mmaps (a Python mmap on an MM an exec made also makes all its Vma objects)."""
        ops = self.prog[pos:end, kprog.P_OP]
        cost = NEAR_COST[ops]
        return int(cost.sum()) + (NEAR_FLUSH if (cost == 1).any() else 0) < NEAR_ENTRY

    def _chain(self, end: int) -> list[int]:
        """The ends of the stretches after the stops at ``end`` that the loop runs on to, paused at each stop
        (:meth:`_chained`), each up to the next stop or the end of the list: until one that starts with a step the
        loop does not model. A few steps that :meth:`run` would leave to Python one by one (:meth:`_near`) run in the
        loop here too: resuming a paused loop costs no entry (no ``_prepare``, no ``_materialize``)."""
        stops, n, prog = self.stops, len(self.steps), self.prog
        out: list[int] = []
        k = self.stop
        while end < n and k < len(stops):
            while k < len(stops) and stops[k][0] <= end:
                k += 1
            nxt = stops[k][0] if k < len(stops) else n
            if prog[end, kprog.P_OP] == kprog.OP_OTHER:
                break
            out.append(nxt)
            end = nxt
        return out

    def _chained(self, pos: int, end: int, ends: list[int] | None = None) -> tuple[int, int]:
        """:meth:`_call` from ``pos`` to ``end`` and on through the stretches :meth:`_chain` finds after it
        (``ends``, when :meth:`run` found them already), as one run of the loop: its tables made once for all of
        them; at each stop in between the loop pauses -- the stops there read its tables (:meth:`_pause`), the
        Python objects do not follow them -- and resumes; the objects are brought up to date once, where it
        returns for Python (or at the last end)."""
        if ends is None:
            ends = self._chain(end)
        if not ends:
            return self._call(pos, end)
        self._span = ends[-1]
        try:
            for nxt in [*ends, -1]:
                self._held = nxt >= 0
                pos, why = self._call(pos, end)
                if nxt < 0 or why != kprog.WHY_DONE or pos != end:
                    break
                self._pause(end)
                end = nxt
        finally:
            self._held = False
            self._span = 0
            if self._owed:
                self._materialize()
        return pos, why

    def _pause(self, row: int) -> None:
        """The stops at ``row``, the loop paused there: the racy folios noted so far go to the checker first."""
        self._note_racy()
        stops, m = self.stops, self.m
        m.paused = self
        try:
            while self.stop < len(stops) and stops[self.stop][0] <= row:
                self.stop += 1
                stops[self.stop - 1][1]()
        finally:
            m.paused = None

    def _light(self, pos: int, end: int) -> bool:
        if self._owed:  # resumed after a pause: as the first stretch found it for all of them
            return self.light
        return super()._light(pos, max(end, self._span))

    def _tables_ahead(self) -> int:
        """Page tables to make room for before a long run (:data:`TABLES_AHEAD_FAULTS` recorded faults or more):
        one per (task, PMD) its recorded faults touch, when that is :data:`TABLES_AHEAD_MIN` or more, at most
        :data:`TABLES_AHEAD_MAX` -- made at once instead of doubled from a few tables, each doubling copying every
        table (chromium: 16 -> 2228 tables in 7 doublings, a few milliseconds); fewer, or a shorter run of
        :data:`TABLES_AHEAD_SOME` faults or more, at most :data:`TABLES_AHEAD_FEW`. Forks' copies and tables that
        faults by region name fill are left to growth. Only room: no result depends on it."""
        if self.nfault < TABLES_AHEAD_SOME:
            return 2
        prog = self.prog
        rows = np.flatnonzero(prog[:, kprog.P_OP] == kprog.OP_FAULT)
        keys = (prog[rows, kprog.P_TASK] << 40) + (prog[rows, kprog.P_FIRST] >> self.m.po)
        # a run of faults in one (task, PMD) counted once before the sort (chromium: half the keys to sort)
        keys = np.sort(keys[np.concatenate(([True], keys[1:] != keys[:-1]))])
        tables = int(np.count_nonzero(keys[1:] != keys[:-1])) + 1  # more than it needs: threads share an MM
        if self.nfault < TABLES_AHEAD_FAULTS or tables < TABLES_AHEAD_MIN:
            return min(tables, TABLES_AHEAD_FEW)
        return min(tables, TABLES_AHEAD_MAX)

    def _note_racy(self) -> None:
        """The folios the loop noted before and after racy faults, to the checker's (``races.seen``)."""
        st = self.st
        k = int(st[kprog.S_NRACY])
        if k:
            assert self.races is not None
            seen = self.races.seen  # a set: each folio's name once (a race is often taken many times)
            for code in set(self.racy[:k, 1:].ravel().tolist()):
                if code != L.NONE:
                    seen.add(_SPECIAL.get(code) or f"f{code}")
            st[kprog.S_NRACY] = 0

    def _materialize(self) -> None:
        if self._held:  # the loop may pause here (_chained()): the objects wait
            self._owed = True
            return
        self._owed = False
        if self.control:  # first: the table and row bookkeeping after it reads the MMs' VMA lists
            self._materialize_control()
        super()._materialize()
        if self.control:
            self._after_control()
        tal, st = self.tal, self.st
        counts = tal.tolist()
        if any(counts):
            faults = self.r.faults
            for key, k in ((FAULT_TAKEN, kprog.TL_TAKEN), (FAULT_MAPPED, kprog.TL_MAPPED),
                           (FAULT_PRESENT, kprog.TL_PRESENT), (FAULT_NO_VMA, kprog.TL_NO_VMA),
                           (FAULT_PROT, kprog.TL_PROT)):
                if counts[k]:
                    faults[key] += counts[k]
            if any(counts[kprog.TL_COW:]):
                self.m.cow_counts += tal[kprog.TL_COW:].reshape(self.m.cow_counts.shape)
            tal.fill(0)
        self._note_racy()
        k = int(st[kprog.S_NREUSE])
        if k:
            if self.m.track_reuse:
                self.r.reuse_steps.update((self.rs[:k] + self.base).tolist())
            st[kprog.S_NREUSE] = 0


#: a small program through the paths a run trace takes (anonymous and file faults, fork with copy-on-write, the
#: control plane, merge, exit), run once by :func:`load_kernels` (a kernel first called inside the simulation is
#: loaded there: a merge step's, milliseconds)
_WARM_STEPS = (
    Step("spawn", "w0"), Step("file", "", ("warm-file", 4, 0, 0)),
    Step("mmap", "w0", ("heap", 16, "anon", None, None, "rw", 0)),
    Step("mmap", "w0", ("lib", 4, "file-private", "warm-file", None, "r", 0)),
    Step("fault", "w0", ("heap", 0, 1)), Step("fault", "w0", ("lib", 1, 0)), Step("fork", "w0", ("w1",)),
    Step("fault", "w1", ("heap", 0, 1)), Step("fault", "w0", ("heap", 0, 1)), Step("read", "w1", ("heap", 2, 2)),
    Step("mprotect", "w0", ("heap", 0, 8, "r")), Step("madvise", "w0", ("heap", 8, 8, "dontneed")),
    Step("munmap", "w0", ("heap", 8, 8)), Step("merge", "w0"), Step("exit", "w1"), Step("exit", "w0"),
)


def load_kernels(config: KernelConfig, fast_oracle: bool, lookup: bool = False) -> float:
    """Load (or compile) the compiled kernels a run trace needs, on a throwaway machine; the seconds it took.
    ``lookup``: also a page's lookup (kern.lookup: the live checker notes a racy fault's folio before and after it),
    for a trace with live snapshots (else it would first be loaded inside the simulation, milliseconds)."""
    began = time.perf_counter()
    for interpreter in (False, True):  # one step at a time (the kernels Python calls), then the step interpreter
        runner = TraceRunner(TraceMachine(config, fast_oracle), Counter())
        if interpreter and runner.compiled():  # shorter than STRETCH_MIN: the program is made here
            TraceProgram(runner, list(_WARM_STEPS), 0, runner.execute).run()
        elif not interpreter:
            for index, step in enumerate(_WARM_STEPS):
                runner.execute(step, index)
        runner.flush()
    m = runner.m  # the table hash's rebuild (FastMachine.ensure() when it grows), on copies
    kern.rehash(m.glob.copy(), m.tb.copy(), np.full_like(m.hk, -1), np.zeros_like(m.hv), int(m.glob[L.G_NTB]))
    if lookup:  # FastMachine.lookup_slot() (a fault of a task asleep in vfork() also looks its page up: rare)
        kern.lookup(m.cfg, m.glob, m.tb, m.ptf, m.ptp, m.ptw, m.hk, m.hv, 0, 0)
    return time.perf_counter() - began


class _SnapFolio:
    """A live folio as the snapshot checker reads a SimFolio (name, order, kind, pins, AnonExclusive bits, and
    ``core()``, exported once per snapshot)."""

    __slots__ = ("_core", "_excl", "_m", "kind", "name", "order", "slot")

    is_zero = False

    def __init__(self, m: FastMachine, f: int) -> None:
        self._m = m
        self.slot = f
        self.name = f"f{int(m.fs[f, L.X_NAME])}"
        self.order = int(m.fs[f, K.F_ORDER])
        self.kind = int(m.fs[f, L.X_KIND])
        self._core: Folio | None = None
        self._excl: list[bool] | None = None

    @property
    def is_anon(self) -> bool:
        return self.kind == L.KIND_ANON

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    @property
    def pins(self) -> int:
        return int(self._m.fs[self.slot, L.X_PINS])

    @property
    def exclusive(self) -> list[bool]:
        if self._excl is None:
            off = int(self._m.fs[self.slot, K.F_OFF])
            self._excl = [bool(x) for x in self._m.pex[off:off + self.nr_pages].tolist()]
        return self._excl

    def core(self) -> Folio:
        if self._core is None:
            self._core = self._m.export_folio(self.slot)
        return self._core


class _SnapMM:
    """A FastMM whose mappings are read once, when first asked for (``pmds``: the set of its PMD indices, which
    foliosim.vm.stats.pagemap() asks per page); everything else is the MM's."""

    __slots__ = ("_maps", "_pmds", "mm", "num", "view")

    def __init__(self, view: SnapshotView, mm: FastMM) -> None:
        self.view = view
        self.mm = mm
        self.num = mm.num
        self._maps: tuple[dict[int, tuple[int, int, bool, bool]], dict[int, tuple[int, bool]]] | None = None
        self._pmds: set[int] | None = None

    @property
    def maps(self) -> tuple[dict[int, tuple[int, int, bool, bool]], dict[int, tuple[int, bool]]]:
        if self._maps is None:
            self._maps = self.view._mappings(self.mm)
        return self._maps

    @property
    def pmds(self) -> set[int]:
        if self._pmds is None:
            self._pmds = set(self.maps[1])
        return self._pmds

    def __getattr__(self, name: str) -> Any:  # name, num, vmas, find_vma, ...
        return getattr(self.mm, name)


class _SnapTask:
    __slots__ = ("mm",)

    def __init__(self, mm: _SnapMM) -> None:
        self.mm = mm


class _SnapTasks:
    """``Machine.tasks`` as the checker reads it (``get``), each task's MM a :class:`_SnapMM`."""

    def __init__(self, view: SnapshotView) -> None:
        self.view = view

    def get(self, name: str) -> _SnapTask | None:
        mm = self.view.task_mm(name)
        return None if mm is None else _SnapTask(self.view.snap_mm(mm))

    def __getitem__(self, name: str) -> _SnapTask:
        task = self.get(name)
        if task is None:
            raise KeyError(name)
        return task

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.view.task_mm(name) is not None


class _MMName(NamedTuple):
    """An MM as the checker reads ``Machine.mms``' values (name and id), from its row."""

    name: str
    mm_id: int


class SnapshotView:
    """The accessors :class:`foliosim.live.snapcheck.SnapshotChecker` (and :func:`foliosim.live.compare.sim_page`,
    :func:`foliosim.vm.stats.pagemap`) read on a reference Machine, over a :class:`FastMachine` at one moment
    (make one per snapshot: it keeps each folio's exported state)."""

    def __init__(self, machine: FastMachine) -> None:
        self.m = machine
        # the program paused at a stop (TraceMachine.paused): tasks, MMs and VMAs from its tables and rows
        self.paused = machine.paused if isinstance(machine, TraceMachine) else None
        self._mms: dict[int, FastMM] = {}
        self._views: dict[int, Any] = {}
        self._maps: dict[int, tuple[dict[int, tuple[int, int, bool, bool]], dict[int, tuple[int, bool]]]] = {}

    def __getattr__(self, name: str) -> Any:  # mms, config, pmd_order, ...
        return getattr(self.m, name)

    @property
    def tasks(self) -> _SnapTasks:
        return _SnapTasks(self)

    def snap_mm(self, mm: FastMM) -> _SnapMM:
        return _SnapMM(self, mm)

    @property
    def mms(self) -> dict[str, FastMM] | dict[str, _MMName]:
        """``Machine.mms``: the live MMs by name (their names and ids from their rows when paused)."""
        p = self.paused
        if p is None:
            return self.m.mms
        ms = self.m.ms
        hi = int(p.st[kprog.S_NEXT_MM])
        nums = np.flatnonzero(ms[:hi, L.MS_LIVE]).tolist()
        return {f"mm{num}": _MMName(f"mm{num}", mm_id) for num, mm_id in
                zip(nums, ms[nums, L.MS_ID].tolist(), strict=True)}

    def task_mm(self, name: str) -> FastMM | None:
        """The MM of task ``name`` (None: no such task); when paused, from the program's task tables, an MM made
        from its rows (a LazyMM: its Vma objects made when first read)."""
        m, p = self.m, self.paused
        task = m.tasks.get(name)
        if p is None:
            return None if task is None else task.mm
        i = p.tid.get(name)
        if i is not None:  # the loop may have made, ended or exec'd it
            num = int(p.tmm[i]) if p.tst[i] != kprog.T_NONE else -1
        else:  # not the program's: its MM is its own (its VMAs may have changed: a thread of the program's)
            num = -1 if task is None else task.mm.num
        if num < 0:
            return None
        mm = self._mms.get(num)
        if mm is None:
            mk = p.mk
            birth = int(mk[num, kprog.K_BIRTH]) if num < mk.shape[0] and mk[num, kprog.K_OK] else 1
            mm = self._mms[num] = FastMM(num, int(m.ms[num, L.MS_ID]), anon_birth=birth)
            mm.pmds = PmdSet(m, mm)
            mm.__class__ = kprog.LazyMM
        return mm

    @property
    def folios(self) -> set[str]:
        """The names of the live folios (the checker only asks whether a name is alive)."""
        m = self.m
        n = int(m.glob[L.G_NFOLIO])
        names = m.fs[:n, L.X_NAME][m.fs[:n, K.F_LIVE] != 0]
        return {f"f{x}" for x in names.tolist()}

    def _view(self, f: int) -> Any:
        view = self._views.get(f)
        if view is None:
            view = self._views[f] = self.m.view(f) if f < 0 else _SnapFolio(self.m, f)
        return view

    def _mappings(self, mm: FastMM | _SnapMM) -> tuple[dict[int, tuple[int, int, bool, bool]],
                                                        dict[int, tuple[int, bool]]]:
        if isinstance(mm, _SnapMM):
            return mm.maps
        maps = self._maps.get(mm.num)
        if maps is None:
            maps = self._maps[mm.num] = self.m.mappings(mm)
        return maps

    def lookup(self, mm: FastMM | _SnapMM, vpn: int) -> tuple[Any, int, bool] | None:
        """``Machine.lookup()``: (folio, page, writable) mapped at ``vpn``, or None."""
        ptes, pmds = self._mappings(mm)
        pmd = pmds.get(vpn >> self.m.po)
        if pmd is not None:
            return self._view(pmd[0]), vpn & (self.m.P - 1), pmd[1]
        pte = ptes.get(vpn)
        return None if pte is None else (self._view(pte[0]), pte[1], pte[2])

    def snapshot_pages(self, mm: FastMM | _SnapMM, full: bool) -> SimSnapshot:
        """The checker's :class:`SimSnapshot` of ``mm`` from the arrays in one pass: what ``iter_mapped`` with
        :func:`foliosim.live.compare.sim_page` (kpagecount) and :func:`foliosim.vm.stats.pagemap` (the exclusive
        bit) give per page, as :func:`foliosim.live.snapcheck.reference_pages` reads them on the reference."""
        m = self.m
        fm = mm.mm if isinstance(mm, _SnapMM) else mm
        P, po = m.P, m.po
        vmas = fm.vmas
        tabs = m._mm_tables(fm)
        idx = m.tb[tabs, L.TB_IDX]
        parts: list[tuple[I64, I64, I64, I64, bool]] = []  # (vpns, folio slots, pages, VMA positions, by PMD)
        for t in np.flatnonzero(m.tb[tabs, L.TB_PMDF] != L.NONE).tolist():  # as iter_mapped: every VMA it overlaps
            i, slot = int(idx[t]), int(m.tb[tabs[t], L.TB_PMDF])
            for j, vma in enumerate(vmas):
                if vma.start >> po <= i < ((vma.end - 1) >> po) + 1:
                    parts.append((np.arange(i << po, (i + 1) << po, dtype=np.int64), np.full(P, slot, dtype=np.int64),
                                  np.arange(P, dtype=np.int64), np.full(P, j, dtype=np.int64), True))
        rows, cols = np.nonzero(m.ptf[tabs] != L.NONE)
        if len(rows) and vmas:
            vpn = (idx[rows] << po) + cols
            starts = np.array([v.start for v in vmas], dtype=np.int64)
            ends = np.array([v.end for v in vmas], dtype=np.int64)
            pos = np.searchsorted(starts, vpn, side="right") - 1
            inside = (pos >= 0) & (vpn < ends[np.maximum(pos, 0)])
            trows, cols = tabs[rows[inside]], cols[inside]
            parts.append((vpn[inside], m.ptf[trows, cols], m.ptp[trows, cols], pos[inside], False))
        other: dict[int, str] = {}
        if not parts:
            none = np.zeros(0, dtype=np.int64)
            return SimSnapshot(none, none, none, none, none, np.zeros(0, dtype=bool), [], [], other,
                               self.folios_fields, self.refcounts, self.folio_rows)
        vpns = np.concatenate([p[0] for p in parts])
        slots = np.concatenate([p[1] for p in parts])
        pages = np.concatenate([p[2] for p in parts])
        in_file = np.array([v.file is not None for v in vmas], dtype=bool)[np.concatenate([p[3] for p in parts])]
        by_pmd = np.concatenate([np.full(len(p[0]), p[4], dtype=bool) for p in parts])
        zero = slots < 0  # ZERO, HUGE_ZERO
        fs = m.fs
        kinds = fs[np.where(zero, 0, slots), L.X_KIND]
        is_anon = ~zero & (kinds == L.KIND_ANON)
        compared = is_anon if full else is_anon & ~in_file
        copies = is_anon & ~compared  # anonymous copies in private file mappings the snapshot does not cover
        files = ~zero & ~is_anon
        for what, sel in (("file", files | copies), ("zero", zero)):
            other.update(dict.fromkeys(vpns[sel].tolist(), what))
        f, page = slots[compared], pages[compared]
        order, off, entire = fs[f, K.F_ORDER], fs[f, K.F_OFF], fs[f, K.F_ENTIRE]
        large = order > 0
        mapcount = m.pmc[off + page] + 1 + np.where(large, entire + 1, 0)  # sim_page(): the raw entire mapcount
        cfg = m.config
        has_entire = np.array([cfg.has_entire_mapcount(o) for o in range(int(order.max(initial=0)) + 1)], dtype=bool)
        precise = m.pmc[off + np.where(by_pmd[compared], 0, page)] + 1 + np.where(large & has_entire[order],
                                                                                   entire + 1, 0)
        excl = precise == 1  # pagemap(): folio_precise_page_mapcount() of the page (the first page for a PMD)
        if cfg.no_page_mapcount:  # ... and for a large folio not folio_maybe_mapped_shared()
            excl = np.where(large, ~((fs[f, K.F_LARGE] + 1 > 1) & (fs[f, K.F_SHARED] != 0)), excl)
        uniq, inv = np.unique(f, return_inverse=True)
        names = [f"f{x}" for x in fs[uniq, L.X_NAME].tolist()]
        return sim_snapshot(vpns[compared], inv.astype(np.int64), page, order, mapcount, excl, names, uniq.tolist(),
                            other, self.folios_fields, self.refcounts, self.folio_rows, int(zero.sum()),
                            int(files.sum()), int(copies.sum()))

    def dead_folios(self, names: list[str]) -> list[str]:
        """Which of the folio names (``f<number>``) are no longer alive, asked at once (the checker's
        ``name not in m.folios`` for each, without making the names of every live folio)."""
        if not names:
            return []
        m = self.m
        n = int(m.glob[L.G_NFOLIO])
        asked = np.fromiter((int(x[1:]) for x in names), dtype=np.int64, count=len(names))
        alive = np.zeros(int(max(asked.max(), m.glob[L.G_NAME])) + 1, dtype=bool)  # by name number
        alive[m.fs[:n, L.X_NAME][m.fs[:n, K.F_LIVE] != 0]] = True
        return [names[i] for i in np.flatnonzero(~alive[asked]).tolist()]

    def refcounts(self, slots: list[int]) -> list[int]:
        """The refcounts of folio slots."""
        refs: list[int] = self.m.fs[np.asarray(slots, dtype=np.int64), L.X_REF].tolist()
        return refs

    def folio_rows(self, slots: list[int]) -> I64:
        """The checker's rows of folio slots (foliosim.live.snapcheck.field_rows: what ``folios_fields`` gives, as
        columns), read from the arrays at once."""
        m = self.m
        cfg = m.config
        rows = m.fs[np.asarray(slots, dtype=np.int64)]
        shift, mask, bit = np.uint64(cfg.slot_shift), np.uint64(cfg.mm_id_mask), np.uint64(cfg.shared_bit)
        word = (rows[:, K.F_ID0].astype(np.uint64) | (rows[:, K.F_ID1].astype(np.uint64) << shift)
                | np.where(rows[:, K.F_SHARED] != 0, bit, np.uint64(0)))
        cols = [rows[:, L.X_REF], rows[:, K.F_LARGE], rows[:, K.F_ENTIRE], rows[:, L.X_PINCOUNT], rows[:, K.F_NPM],
                (word & mask).astype(np.int64), rows[:, K.F_MMC0], ((word >> shift) & mask).astype(np.int64),
                rows[:, K.F_MMC1], ((word & bit) != 0).astype(np.int64)]
        out: I64 = np.stack(cols, axis=1).astype(np.int64, copy=False).reshape(-1, len(cols))
        return out

    def folios_fields(self, slots: list[int]) -> list[SimFolioFields]:
        """The checker's :class:`SimFolioFields` of folio slots (as ``export_folio`` and the folio helpers of
        foliosim.folio read them), one read of the arrays for all."""
        m = self.m
        cfg = m.config
        shift, mask, bit = cfg.slot_shift, cfg.mm_id_mask, cfg.shared_bit
        out = []
        for row in m.fs[np.asarray(slots, dtype=np.int64)].tolist():
            word = int(row[K.F_ID0]) | (int(row[K.F_ID1]) << shift) | (bit if row[K.F_SHARED] else 0)
            out.append(SimFolioFields(row[K.F_ORDER], row[L.X_PINS], row[L.X_REF], row[K.F_LARGE], row[K.F_ENTIRE],
                                      row[L.X_PINCOUNT], row[K.F_NPM], (word & mask, (word >> shift) & mask),
                                      (row[K.F_MMC0], row[K.F_MMC1]), bool(word & bit)))
        return out

    def iter_mapped(self, mm: FastMM | _SnapMM) -> Iterator[tuple[Vma, int, Any, int, bool]]:
        """``Machine.iter_mapped()``: every present mapping (vma, vpn, folio, page, by_pmd), VMA by VMA, the PMDs
        first."""
        m = self.m
        ptes, pmds = self._mappings(mm)
        pte_vpns = sorted(ptes)
        for vma in mm.vmas:
            lo, hi = vma.start >> m.po, ((vma.end - 1) >> m.po) + 1
            for idx in sorted(i for i in pmds if lo <= i < hi):
                view = self._view(pmds[idx][0])
                base = idx << m.po
                for k in range(m.P):
                    yield vma, base + k, view, k, True
            a = bisect_left(pte_vpns, vma.start)
            b = bisect_left(pte_vpns, vma.end)
            for vpn in pte_vpns[a:b]:
                f, page, _w, _d = ptes[vpn]
                yield vma, vpn, self._view(f), page, False


__all__ = ["FaultArrays", "Races", "SnapshotView", "TraceMachine", "TraceProgram", "TraceRunner", "fault_arrays",
           "load_kernels", "told_steps"]
