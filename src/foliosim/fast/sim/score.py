"""Open-loop driving runs on the compiled engine: a workload's steps on :class:`FastMachine`, recorded as the same
:class:`~foliosim.evaluate.stream.ScoringStream` the reference driving run records (foliosim.evaluate.probe.Probe
with ``record=True, census=True`` and the ``kernel`` driver).

The fast engine's own answers are the kernel's (``folio_maybe_mapped_shared()`` over its folio arrays), so only
the ``kernel`` design can drive here. Where the reference asks a consumer question, so does this run, at the same
position of the rmap op stream:

- ``cow_reuse``: every CoW decision taken by ``__wp_can_reuse_large_anon_folio()``'s sharing test (rules
  large-maybe-shared, large-extra-refs, large-exclusive). Whole stretches of steps (reads, writes, recorded faults,
  MADV_DONTNEED, the control plane) run in the compiled step interpreter (:class:`ScoringProgram`,
  foliosim.fast.sim.kprog ``S_MARK``), one access per row, noting before each row the trace length, decision
  count and machine step; from those notes each stretch's ops get their steps and its decisions their tallies
  and questions afterwards, in batches: a reuse is placed after its fault's ops, a copy before its new folio's
  ``folio_new`` (``drive_fast(interpreter=False)``: every step through Python, one fault per compiled call in
  :func:`access_marked`, which notes the same fault by fault);
- ``madvise_cold`` / ``madvise_pageout``: the walk of mm/madvise.c ``madvise_cold_or_pageout_pte_range()`` is
  replayed over the page tables before the compiled call (answers: the kernel's), and each question is placed
  before the first op of the next folio split the call made (every predicted split is checked against the
  engine's split counter);
- ``khugepaged``, ``numa_migrate`` and the ``census`` (after every fork, before every exit): read-only walks in
  Python between batches, as foliosim.evaluate.consumers and Probe.census() do them.

Truth (more than one MM maps the folio) and the per-op MM counts come from an exact per-(folio, MM) count fed
the same ops' trace rows (:func:`count_ops`, compiled); the ops' Op objects are made from their rows once, at the
end. Anything the fast engine does not model raises :class:`~foliosim.fast.sim.engine.Unsupported`;
the caller (foliosim.evaluate.cell) then runs the reference engine and says so.

The isolation oracle: with any mode but ``off`` the run uses the engine's incremental oracle (every access reads
what its MM last wrote, every store hits an AnonExclusive page), which an isolation failure stops; the
``oracle_checks`` count is the one the reference's schedule (after steps that reused a page, every step, the
end) gives. The folio-invariant part of the reference's ``Machine.check()`` is not run on this engine.
"""

from __future__ import annotations

import gc
import hashlib
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from foliosim.evaluate.runner import FAULT_MAPPED, FAULT_NO_VMA, FAULT_PRESENT, FAULT_PROT, FAULT_TAKEN, refused_fault
from foliosim.evaluate.stream import (
    CENSUS,
    FOLIO_NAMES,
    LEVELS,
    MM_NAMES,
    OP_KINDS,
    OPSET,
    ColumnStream,
    MetricRow,
    Names,
    ScoringStream,
    StreamColumns,
    Tally,
    made,
)
from foliosim.fast import kernels as K
from foliosim.fast._jit import HAVE_NUMBA, jit
from foliosim.fast.sim import files, kern, kprog
from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import OP_NAMES, FastMachine, FastMM, Unsupported
from foliosim.fast.sim.steps import FastRunStats, FastWorkloadRunner
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD
from foliosim.system import Op
from foliosim.vm.events import SimError
from foliosim.vm.machine import MachineOptions
from foliosim.vm.memory import PAGE_SIZE
from foliosim.workloads.steps import Step, WorkloadError

I64 = npt.NDArray[np.int64]

#: CoW rules decided by the sharing test of __wp_can_reuse_large_anon_folio() (a ``cow_reuse`` question)
QUESTION_RULES = frozenset({L.R_LARGE_SHARED, L.R_LARGE_EXTRA, L.R_LARGE_EXCL})
_QUESTION_RULES = np.array(sorted(QUESTION_RULES), dtype=np.int64)
#: drivers the fast engine can drive with (its answers are the kernel's own)
FAST_DRIVERS = ("kernel",)
MARKS = 1 << 14


@jit
def access_marked(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any,
                  ptp: Any, ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any,
                  fc: Any, pcs: Any, ops: Any, first: int, one: Any, marks: Any) -> tuple[int, int, int, int]:
    """:func:`foliosim.fast.sim.kern.access` one fault per call (a one-row fault list), noting after fault k
    ``marks[k] = (op row, vpn, trace rows, CoW decisions)``. Returns (rc, op row reached, faults noted, 1 when
    it stopped because ``marks`` is full)."""
    n = 0
    while True:
        rc, first = kern.access(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow,
                                pexp, fc, pcs, ops, first, one)
        if glob[L.G_NGATHER] == 1:
            marks[n, 0] = one[0, 0]
            marks[n, 1] = one[0, 1]
            marks[n, 2] = glob[L.G_NTR]
            marks[n, 3] = glob[L.G_NCOW]
            n += 1
            if rc == L.RC_ROOM:  # the one-row fault list was full: go on from where it stopped
                if n == marks.shape[0]:
                    return rc, first, n, 1
                continue
        return rc, first, n, 0


def _fresh_cache(*dispatchers: Any) -> None:
    """numba keys its on-disk cache of a compiled function (:func:`access_marked`, :func:`count_ops`) on this file
    alone, yet the compiled code holds the kernels it calls and the layout's constants: when their sources changed
    since the cache was written, empty the cache (private numba API, hence the broad guard; a read-only install just
    keeps numba's behaviour)."""
    if not HAVE_NUMBA:
        return
    try:
        digest = hashlib.sha256(b"".join(Path(mod.__file__ or "").read_bytes() for mod in (kern, K, L))).hexdigest()
        for dispatcher in dispatchers:
            cache = dispatcher._cache
            stamp = Path(cache._cache_path) / f"score.{dispatcher.__name__}.deps"
            if not stamp.exists() or stamp.read_text() != digest:
                cache.flush()
                stamp.write_text(digest)
    except Exception:  # any numba-internal change or an unwritable cache folder
        pass


_fresh_cache(access_marked)


NO_QUESTIONS = np.zeros(0, dtype=np.int64)
#: a directly appended op's row kind (FastMachine's mm_new/mm_free Op objects, made without a trace row)
NO_ROW = -1
assert all(OP_NAMES[k] == OP_KINDS[k] for k in OP_NAMES)  # a trace row's kind is its columnar op's kind


@jit
def _slot(key: int, cap: int) -> int:
    """The first slot of ``key`` in a table of ``cap`` (a power of two) slots: its bits mixed (splitmix64's
    finalizer), as the low bits of a folio << 20 | MM key hardly differ."""
    x: Any = key ^ (key >> 31)
    x = x * np.int64(0x7FB5D329728EA185)
    x = x ^ (x >> 27)
    x = x * np.int64(-0x7F7A4E6E3B2C3F1B)
    x = x ^ (x >> 33)
    return int(x & (cap - 1))


@jit
def count_ops(rows: Any, lo: int, hi: int, pmd_order: int, keys: Any, vals: Any, nmm: Any, order: Any,
              mms: Any, qpos: Any, qf: Any, qn: Any) -> int:
    """StreamBuilder's exact per-(folio, MM) counts fed the trace rows ``lo..hi``: ``mms[i - lo]`` the MMs mapping
    the row's folio after it (-1: no folio); ``qn[k]`` the MMs mapping folio ``qf[k]`` after the first ``qpos[k]``
    rows (questions in stream order, at most ``hi``). The counts live in an open-addressing table (``keys``: folio
    << 20 | MM, -1 free; ``vals``: count + 1, 0 when no longer mapped), ``nmm`` per folio number; returns the
    table's used slots (the caller keeps it at most half full)."""
    cap = keys.shape[0]
    used = 0
    q = 0
    nq = qpos.shape[0]
    for i in range(lo, hi + 1):
        while q < nq and qpos[q] <= i:
            qn[q] = nmm[qf[q]]
            q += 1
        if i == hi:
            break
        kind = rows[i, L.T_KIND]
        mms[i - lo] = -1
        if kind < K.K_FOLIO_NEW or kind > K.K_UNMAP:  # mm_new, mm_free, an op made without a row
            continue
        f = rows[i, L.T_FOLIO]
        if kind == K.K_FOLIO_NEW:
            nmm[f] = 0
            order[f] = rows[i, L.T_ORDER]
            mms[i - lo] = 0
            continue
        if kind == K.K_FOLIO_FREE:
            nmm[f] = 0
            continue
        m = rows[i, L.T_MM]
        if kind == K.K_MAP_NEW_ANON:
            o = order[f]
            diff = np.int64(1) << o if o < pmd_order else np.int64(1)
        else:
            diff = np.int64(1) if rows[i, L.T_LEVEL] == K.L_PMD else rows[i, L.T_NR]
        key = (f << 20) | m
        h = _slot(key, cap)
        while keys[h] != -1 and keys[h] != key:
            h = (h + 1) & (cap - 1)
        if keys[h] == -1:
            keys[h] = key
            vals[h] = 0
            used += 1
        had = vals[h]  # count + 1, 0: not mapped
        if kind == K.K_UNMAP:
            left = (had - 1 if had else 0) - diff
            if left > 0:
                vals[h] = left + 1
            elif had:
                vals[h] = 0
                nmm[f] -= 1
        else:
            if not had:
                nmm[f] += 1
                had = 1
            vals[h] = had + diff
        mms[i - lo] = nmm[f]
    return used


@jit
def _rehash(keys: Any, vals: Any, nkeys: Any, nvals: Any) -> None:
    cap = nkeys.shape[0]
    for j in range(keys.shape[0]):
        key = keys[j]
        if key == -1 or vals[j] == 0:  # a slot no longer mapped is dropped
            continue
        h = _slot(key, cap)
        while nkeys[h] != -1:
            h = (h + 1) & (cap - 1)
        nkeys[h] = key
        nvals[h] = vals[j]


_fresh_cache(_slot, count_ops, _rehash)


class StreamBuilder:
    """The ops of a driving run with their steps, the exact per-(folio, MM) counts, and the questions asked.

    Every op comes with its trace row (foliosim.fast.sim.layout T_* columns; kind ``NO_ROW`` for an op made
    without one: mm_new/mm_free, which have no folio): the exact counts are kept over the rows by
    :func:`count_ops`, per folio number (the number in its name ``f<n>``)."""

    def __init__(self, config: KernelConfig, driver: str) -> None:
        self.stream = ScoringStream(config, driver)
        self.pmd_order = config.pmd_order
        self.rows = np.zeros((1024, L.T_COLS), dtype=np.int64)
        self.keys = np.full(1 << 12, -1, dtype=np.int64)
        self.vals = np.zeros(1 << 12, dtype=np.int64)
        self.used = 0
        self.nmm = np.zeros(1024, dtype=np.int64)
        self.order = np.zeros(1024, dtype=np.int64)
        self.applied = 0
        self.groups = 0
        self.pending: list[int] = []  # mm_new ops whose step is that of the next sync (see add())
        # the questions, column by column (StreamColumns q*); consumers by code
        self.qcols: tuple[list[int], list[int], list[int], list[bool], list[int], list[int], list[int],
                          list[bool]] = ([], [], [], [], [], [], [], [])  # single questions not yet in a chunk
        self.qchunks: list[tuple[npt.NDArray[Any], ...]] = []  # batches of questions, one array per column
        self.consumers: dict[str, int] = {}

    @property
    def nops(self) -> int:
        return len(self.stream.ops)

    def add(self, ops: list[Op], steps: list[int] | int, rows: I64) -> None:
        """Append ops with their steps and trace rows. The reference records ``mm_new`` without an rmap event, so
        the probe gives it the step of its next sync (the next op's, the next question's or the end's): so do
        we."""
        s = self.stream
        at = len(s.ops)
        k = len(ops)
        if not k:
            return
        s.ops.extend(ops)
        s.op_step.extend([steps] * k if isinstance(steps, int) else steps)
        s.op_mms.extend([-1] * k)
        if at + k > self.rows.shape[0]:
            grown = np.zeros((max(2 * self.rows.shape[0], at + k), L.T_COLS), dtype=np.int64)
            grown[:at] = self.rows[:at]
            self.rows = grown
        self.rows[at:at + k] = rows
        kinds = rows[:, L.T_KIND]
        new = [i for i in np.flatnonzero((kinds == K.K_MM_NEW) | (kinds == NO_ROW)).tolist()
               if kinds[i] == K.K_MM_NEW or ops[i].op == "mm_new"]
        if not new and not self.pending:
            return
        is_new = set(new)
        j = 0 if self.pending else new[0]
        while j < k:
            if j in is_new:
                self.pending.append(at + j)
                j += 1
                continue
            self.resolve(s.op_step[at + j])  # something is pending here
            later = [i for i in new if i > j]  # nothing is pending until the block's next mm_new
            if not later:
                return
            j = later[0]

    def resolve(self, step: int) -> None:
        for i in self.pending:
            self.stream.op_step[i] = step
        self.pending.clear()

    def advance(self, pos: int, qpos: I64 = NO_QUESTIONS, qf: I64 = NO_QUESTIONS) -> I64:
        """Apply the ops before ``pos`` to the exact counts (filling their ``op_mms``); the MMs mapping folio
        number ``qf[k]`` after ``qpos[k]`` ops (questions in stream order, from the first not applied)."""
        lo = self.applied
        qn = np.zeros(len(qpos), dtype=np.int64)
        if len(qf) and int(qf.max()) >= self.nmm.shape[0]:
            self._grow_folios(int(qf.max()) + 1)
        if pos <= lo:
            if len(qpos):
                qn[:] = self.nmm[qf]
            return qn
        rows = self.rows
        need = self.used + (pos - lo)
        if 2 * need > self.keys.shape[0]:  # at most half full: a new key per op at most
            cap = self.keys.shape[0]
            while 2 * need > cap:
                cap *= 2
            keys, vals = np.full(cap, -1, dtype=np.int64), np.zeros(cap, dtype=np.int64)
            _rehash(self.keys, self.vals, keys, vals)
            self.keys, self.vals = keys, vals
            self.used = int((vals != 0).sum())
        top = int(rows[lo:pos, L.T_FOLIO].max()) + 1
        if top > self.nmm.shape[0]:
            self._grow_folios(top)
        mms = np.empty(pos - lo, dtype=np.int64)
        self.used += count_ops(rows, lo, pos, self.pmd_order, self.keys, self.vals, self.nmm, self.order, mms, qpos,
                               qf, qn)
        self.stream.op_mms[lo:pos] = mms.tolist()
        self.applied = pos
        return qn

    def _grow_folios(self, top: int) -> None:
        size = max(2 * self.nmm.shape[0], top)
        for name in ("nmm", "order"):
            grown = np.zeros(size, dtype=np.int64)
            old = getattr(self, name)
            grown[:old.shape[0]] = old
            setattr(self, name, grown)

    def ask_batch(self, pos: I64, folios: I64, consumer: str, steps: I64, refs_ok: list[bool]) -> None:
        """:meth:`ask` for each (``pos``, folio number, step, refs_ok) in stream order, from the first op not yet
        applied on: one pass over the ops."""
        if not len(pos):
            return
        if self.pending:  # the mm_new ops pending take the step of the first question after them
            after = np.flatnonzero(pos > self.pending[0])
            if len(after):
                self.resolve(int(steps[after[0]]))
        counts = self.advance(int(pos[-1]), pos, folios)
        self._chunk(pos, folios, consumer, counts > 1, np.asarray(refs_ok, dtype=bool))

    def _chunk(self, pos: I64, folios: I64, consumer: str, truths: npt.NDArray[np.bool_],
               refs_ok: npt.NDArray[np.bool_] | None = None) -> None:
        """A batch of questions (folio numbers; group -1, weight 1, limit 0) after those asked before."""
        k = len(pos)
        if not k:
            return
        if self.qcols[0]:
            self._flush_questions()
        code = self.consumers.setdefault(consumer, len(self.consumers))
        i64 = np.int64
        self.qchunks.append((pos.astype(i64), folios.astype(i64), np.full(k, code, dtype=i64), truths,
                             np.full(k, -1, dtype=i64), np.ones(k, dtype=i64), np.zeros(k, dtype=i64),
                             np.ones(k, dtype=bool) if refs_ok is None else refs_ok))

    def _flush_questions(self) -> None:
        """The single questions asked so far as a chunk."""
        i64 = np.int64
        self.qchunks.append(tuple(np.array(col, dtype=bool if j in (3, 7) else i64)
                                  for j, col in enumerate(self.qcols)))
        for col in self.qcols:
            col.clear()

    def _question(self, pos: int, folio: int, consumer: str, truth: bool, group: int, weight: int, limit: int,
                  refs_ok: bool) -> None:
        """One question appended to the columns."""
        code = self.consumers.setdefault(consumer, len(self.consumers))
        cols: tuple[list[Any], ...] = self.qcols
        for col, value in zip(cols, (pos, folio, code, truth, group, weight, limit, refs_ok), strict=True):
            col.append(value)

    def _mms(self, folio: str) -> int:
        f = int(folio[1:])
        return int(self.nmm[f]) if f < self.nmm.shape[0] else 0

    def ask(self, pos: int, folio: str, consumer: str, step: int, *, group: int = -1, weight: int = 1,
            limit: int = 0, refs_ok: bool = True) -> None:
        """A question after ``pos`` ops, asked in machine step ``step``."""
        if self.pending and self.pending[0] < pos:
            self.resolve(step)
        self.advance(pos)
        self._question(pos, int(folio[1:]), consumer, self._mms(folio) > 1, group, weight, limit, refs_ok)

    def ask_mapped(self, folios: I64, consumer: str, step: int) -> None:
        """:meth:`ask` about each of ``folios`` (numbers) that some MM maps, all after the whole stream so far."""
        pos = self.nops
        self.advance(pos)
        folios = folios[folios < self.nmm.shape[0]]
        counts = self.nmm[folios]
        mapped = counts > 0
        if not mapped.any():
            return
        if self.pending and self.pending[0] < pos:
            self.resolve(step)
        asked = folios[mapped]
        self._chunk(np.full(len(asked), pos, dtype=np.int64), asked, consumer, counts[mapped] > 1)

    def mapped(self, folio: str) -> bool:
        self.advance(self.nops)
        return self._mms(folio) > 0

    def finish(self, end_step: int) -> ColumnStream:
        """The stream, as columns: the ops' from their trace rows (:func:`op_columns`; an op made without a row
        kept as its object), the questions'."""
        self.resolve(end_step)
        self.advance(self.nops)
        s = self.stream
        ops = s.ops
        n = len(ops)
        rows = self.rows[:n]
        kind, mm, folio, order, level, page, nr = cols = op_columns(rows)
        direct: dict[int, Op] = {}
        for i in np.flatnonzero(rows[:, L.T_KIND] == NO_ROW).tolist():
            op = ops[i]
            direct[i] = op
            for col, value in zip(cols, (OP_KINDS.index(op.op), -1,
                                         -1 if op.folio is None else int(op.folio[1:]),
                                         -1 if op.order is None else op.order,
                                         -1 if op.level is None else int(op.level is PMD), op.page, op.nr),
                                  strict=True):
                col[i] = value
        self._flush_questions()
        qp, qf, qc, qt, qg, qw, ql, qr = (np.concatenate(col) for col in zip(*self.qchunks, strict=True))
        columns = StreamColumns(kind, mm, folio, order, level, page, nr, direct, qp, qf, qc, qt, qg, qw, ql, qr,
                                tuple(self.consumers))
        stream = ColumnStream(s.config, s.driver, columns, s.op_step, s.op_mms, end_step)
        stream.check()
        return stream


def op_columns(rows: I64) -> tuple[I64, I64, I64, I64, I64, I64, I64]:
    """The :class:`StreamColumns` op columns (kind, mm, folio, order, level, page, nr) of trace rows, as
    FastMachine._op() makes their Op objects."""
    kind = rows[:, L.T_KIND]
    has_mm = (kind != K.K_FOLIO_NEW) & (kind != K.K_FOLIO_FREE)
    is_mm = (kind == K.K_MM_NEW) | (kind == K.K_MM_FREE)
    mapping = has_mm & ~is_mm
    paged = mapping & (kind != K.K_MAP_NEW_ANON)
    return (kind.copy(), np.where(has_mm, rows[:, L.T_MM], -1), np.where(is_mm, -1, rows[:, L.T_FOLIO]),
            np.where(kind == K.K_FOLIO_NEW, rows[:, L.T_ORDER], -1), np.where(mapping, rows[:, L.T_LEVEL], -1),
            np.where(paged, rows[:, L.T_PAGE], 0), np.where(paged, rows[:, L.T_NR], 1))


class ScoringMachine(FastMachine):
    """A :class:`FastMachine` whose accesses are placed fault by fault in the stream (see the module docstring)."""

    def __init__(self, config: KernelConfig, builder: StreamBuilder, oracle: bool) -> None:
        super().__init__(config, MachineOptions(keep_events=False, check=False), record=True, keep_decisions=False,
                         fast_oracle=oracle, reference=False)
        self.builder = builder
        self.marks = np.zeros((MARKS, 4), dtype=np.int64)
        self.one = np.zeros((1, 2), dtype=np.int64)
        self.batch_base: int | None = None  # the machine step before a batch of access rows (None: one call)
        self.row_steps: list[int] = []  # the runner's step index of each row of the batch
        self.reuse_steps: set[int] = set()  # runner steps in which a page was reused (for the oracle schedule)
        self.runner_step = 0
        self.tally = Tally()
        self.fault_rows: list[bool] = []  # per row of the batch: a recorded fault (a machine call only if taken)
        self.faulted: set[int] = set()  # rows of the batch that took a fault so far
        self.eager = False  # _drain() makes the Op objects now (FastMachine code reads them: _cold_pageout())
        self.raw: list[tuple[int, I64]] = []  # (position in ``trace``, the trace rows of the ops from there)
        self.orders = Names(None)  # an op's order by value

    def _drain(self, cow_tasks: list[str] | None = None) -> None:
        """FastMachine._drain() keeping each op's trace row (:meth:`take_trace`); the Op objects of the rows are made
        all at once at the end (:meth:`ops_of`, StreamBuilder.finish()), None stands for each until then."""
        g = self.glob
        n = int(g[L.G_NTR])
        if n:
            rows = self.tr[:n].copy()
            self.raw.append((len(self.trace), rows))
            if self.eager:
                self.trace.extend(self.ops_of(rows))
            else:  # made at the end (StreamBuilder.finish())
                self.trace.extend(repeat(None, n))  # type: ignore[arg-type]
            g[L.G_NTR] = 0
        super()._drain(cow_tasks)

    def ops_of(self, rows: I64) -> list[Op]:
        """The Op objects of trace rows (as FastMachine._op() makes them, column by column: a Python call per op
        costs more than the op; each column's values are taken from an object array of them by number)."""
        kind, mm, folio, order, level, page, nr = op_columns(rows)
        return made(Op, len(rows), OPSET, [OP_KINDS[k] for k in kind.tolist()], MM_NAMES.take(mm),
                    FOLIO_NAMES.take(folio), self.orders.take(order), LEVELS[level].tolist(), page.tolist(),
                    nr.tolist())

    def _cold_pageout(self, *args: Any, **kwargs: Any) -> Any:
        """FastMachine._cold_pageout(), which reads the ops it recorded (page-cache folio splits): made now."""
        self.eager = True
        try:
            return super()._cold_pageout(*args, **kwargs)
        finally:
            self.eager = False

    def take_trace(self) -> tuple[list[Op], I64]:
        """The ops recorded since the last take and their trace rows (kind NO_ROW for an op made without one)."""
        ops = self.trace
        rows = np.full((len(ops), L.T_COLS), NO_ROW, dtype=np.int64)
        for at, block in self.raw:
            rows[at:at + len(block)] = block
        self.trace = []
        self.raw = []
        return ops, rows

    def pull(self) -> None:
        """Ops recorded by the control plane since the last pull, at the current machine step."""
        if self.trace:
            ops, rows = self.take_trace()
            self.builder.add(ops, self.step, rows)

    def _run_access(self, ops: I64, task_names: list[str] | None = None) -> None:
        self.pull()
        first = 0
        while True:
            kernel: Any = access_marked  # the state tuple's length is not visible to the type checker
            rc, first, n, full = kernel(*self.args(), self.pexp, self.pcache.fc, self.pcache.pcs, ops, first, self.one,
                                        self.marks)
            if rc == L.RC_UNSUPPORTED and n and int(self.glob[L.G_ERR]) == L.U_FILE_FAULT:
                # a copy-on-write fault in a private file mapping handed back to privatize the reference view
                # (foliosim.fast.sim.files), part of the fault just noted, whose ops and decisions then end where the
                # service left them
                files.service(self, ops, first, None, drain=False)
                self.marks[n - 1, 2] = self.glob[L.G_NTR]
                self.marks[n - 1, 3] = self.glob[L.G_NCOW]
                self._take(n)
                continue
            self._take(n)
            if rc == L.RC_ROOM:
                if not full:
                    self._grow_after_room()
                continue
            self._check_rc(rc)
            return

    def _take(self, n: int) -> None:
        """Move the trace rows and CoW decisions of ``n`` noted faults into the stream, questions placed."""
        g = self.glob
        ntr, ncow = int(g[L.G_NTR]), int(g[L.G_NCOW])
        marks = self.marks[:n].copy()
        rows = self.tr[:ntr].copy()
        cows = self.cow[:ncow].tolist()
        base = self.builder.nops
        self._drain()
        ops, trace_rows = self.take_trace()
        row_step = None
        if self.batch_base is not None:
            self.faulted.update(marks[:, 0].tolist())
            row_step = self.row_machine_steps()
        if row_step is not None and ntr:
            fault_of = np.searchsorted(marks[:, 2], np.arange(ntr), side="right")
            if not n or int(fault_of[-1]) >= n:
                raise Unsupported("scoring: rmap ops recorded outside a noted fault")
            self.builder.add(ops, row_step[marks[fault_of, 0]].tolist(), trace_rows)
        else:
            self.builder.add(ops, self.step, trace_rows)
        if not ncow:
            return
        decision_fault = np.searchsorted(marks[:, 3], np.arange(ncow), side="right")
        for j, row in enumerate(cows):
            outcome = row[L.C_OUTCOME]
            k = int(decision_fault[j])
            where = self.row_steps[int(marks[k, 0])] if self.batch_base is not None else self.runner_step
            if outcome == L.OC_COPY:
                self.tally.add("cow_copies", 1, "cow_reuse", row[L.C_ORDER])
                self.tally.add("bytes_copied", PAGE_SIZE, "cow_reuse", row[L.C_ORDER])
            elif outcome == L.OC_REUSE:
                self.tally.add("cow_reuses", 1, "cow_reuse", row[L.C_ORDER])
                self.reuse_steps.add(where)
            if row[L.C_RULE] not in QUESTION_RULES:
                continue
            if outcome == L.OC_COPY:  # asked before the copy: at its new folio's folio_new
                hit = np.flatnonzero((rows[:, L.T_KIND] == K.K_FOLIO_NEW) & (rows[:, L.T_FOLIO] == row[L.C_NEW]))
                if not len(hit):
                    raise Unsupported(f"scoring: no folio_new of f{row[L.C_NEW]} after a copy-on-write decision")
                pos = int(hit[0])
            else:  # a reuse records nothing: asked after its fault's ops
                pos = int(marks[k, 2])
            step = int(row_step[int(marks[k, 0])]) if row_step is not None else self.step
            self.builder.ask(base + pos, f"f{row[L.C_FOLIO]}", "cow_reuse", step,
                             refs_ok=row[L.C_MAPCOUNT] == row[L.C_REFCOUNT])


    def row_machine_steps(self) -> I64:
        """The machine step of each row of the batch: one per read/write step (Machine.read()/write()), one per
        recorded fault that was taken (WorkloadRunner._fault() calls them only then). Rows before a row are final
        when its ops are recorded."""
        assert self.batch_base is not None
        n = len(self.fault_rows)
        idle = np.fromiter(self.fault_rows, dtype=bool, count=n)
        if self.faulted:
            idle[np.fromiter(self.faulted, dtype=np.int64, count=len(self.faulted))] = False
        return self.batch_base + np.cumsum(~idle)


class ScoringProgram(kprog.ProgramRun):
    """Stretches of a driving run through :func:`kprog.run_program` (reads, writes, recorded faults, MADV_DONTNEED
    and the control plane's steps, as run-trace's TraceProgram runs them), with the loop noting before each row the
    trace rows, CoW decisions and machine step so far (``S_MARK``): each stretch's ops get their steps and its
    decisions their questions and tallies from those notes afterwards, in batches (what :func:`access_marked` notes
    fault by fault). Python runs, and asks the questions of, the census (forks, exits), the scans and
    MADV_COLD/PAGEOUT (:meth:`ScoringRunner.execute`)."""

    r: ScoringRunner
    m: ScoringMachine

    def __init__(self, runner: ScoringRunner, steps: list[Step]) -> None:
        super().__init__(runner, steps)
        n = len(steps)
        self.marks = np.zeros((n + 1, 3), dtype=np.int64)
        self.st[kprog.S_MARK] = 1
        self.p0 = 0
        self.cows = np.zeros((0, L.C_COLS), dtype=np.int64)
        self.final = (0, 0, 0)
        if not n:
            return
        self.enable_control()
        prog = self.prog
        codes = prog[:, kprog.P_OP]
        py = np.isin(codes, (kprog.OP_FORK, kprog.OP_EXIT, kprog.OP_SCAN, kprog.OP_COLD, kprog.OP_PAGEOUT))
        codes[py] = kprog.OP_OTHER
        prog[codes == kprog.OP_FAULT, kprog.P_FILL] = -1  # ScoringRunner.recorded_fault(): no store
        self.accessed = np.isin(codes, (kprog.OP_READ, kprog.OP_WRITE, kprog.OP_FAULT))
        self.fork_rows = np.flatnonzero(codes == kprog.OP_FORK)
        self.fe_rows = np.flatnonzero(np.isin(codes, (kprog.OP_FORK, kprog.OP_EXIT, kprog.OP_THREAD, kprog.OP_VFORK,
                                                      kprog.OP_EXEC))).tolist()
        self.other_rows = np.flatnonzero(codes == kprog.OP_OTHER).tolist()

    def _prepare(self, pos: int = 0) -> None:
        self.m.pull()
        if self.control:  # first: the tables fork reads are sized after the VMA rows
            self.grow_vma_arrays(pos)
        super()._prepare(pos)
        if self.control:
            self._prepare_control(pos)
        self.st[kprog.S_KEEPDEC] = 1  # the decisions stay in ``cow`` until the stretch returns
        self.p0 = pos

    def _materialize(self) -> None:
        m, g, st = self.m, self.m.glob, self.st
        ncow = int(g[L.G_NCOW])
        self.cows = m.cow[:ncow].copy()
        self.final = (int(g[L.G_NTR]), ncow, int(st[kprog.S_STEP]))
        st[kprog.S_NUF] = 0  # no user-fault records
        if self.control:
            self._materialize_control()
        super()._materialize()
        if self.control:
            self._after_control()

    def _call(self, pos: int, end: int) -> tuple[int, int]:
        p1, why = super()._call(pos, end)
        self._stream(self.p0, p1)
        return p1, why

    def _stream(self, p0: int, p1: int) -> None:
        """The stream of rows ``p0..p1`` (just run): ops with their steps, the decisions' tallies and questions."""
        m, b, r = self.m, self.m.builder, self.r
        tal = self.tal
        counts = tal[:kprog.TL_COW].tolist()
        if any(counts):
            for key, slot in ((FAULT_TAKEN, kprog.TL_TAKEN), (FAULT_MAPPED, kprog.TL_MAPPED),
                              (FAULT_PRESENT, kprog.TL_PRESENT), (FAULT_NO_VMA, kprog.TL_NO_VMA),
                              (FAULT_PROT, kprog.TL_PROT)):
                if counts[slot]:
                    r.faults[key] += counts[slot]
            tal[:kprog.TL_COW] = 0
        if p1 <= p0:
            return
        ntr, ncow, step = self.final
        before = self.marks[p0:p1]
        after = np.empty_like(before)
        after[:-1] = before[1:]
        after[-1] = (ntr, ncow, step)
        ops, rows = m.take_trace()
        base = b.nops
        rowed = rows[:, L.T_KIND] != NO_ROW
        at = np.flatnonzero(rowed)  # the stream position (from ``base``) of each trace row
        if len(at) != ntr:  # pragma: no cover - the stretch's trace rows are its ops
            raise AssertionError(f"scoring: {ntr} trace rows in the stretch, {len(at)} ops with rows")
        if ops:
            steps = np.full(len(ops), m.step, dtype=np.int64)  # ops made without a row: the stretch's end
            steps[at] = after[np.searchsorted(after[:, 0], np.arange(ntr), side="right"), 2]
            b.add(ops, steps.tolist(), rows)
        if not ncow:
            return
        cows = self.cows
        k = np.searchsorted(after[:, 1], np.arange(ncow), side="right")  # each decision's row in the stretch
        keep = self.accessed[p0 + k]  # a fork's early copies are no fault's decisions (dropped, as ever)
        cows, k = cows[keep], k[keep]
        outcome = cows[:, L.C_OUTCOME]
        tally = m.tally
        for (oc, order), count in Counter(zip(outcome.tolist(), cows[:, L.C_ORDER].tolist(), strict=True)).items():
            if oc == L.OC_COPY:
                tally.add("cow_copies", count, "cow_reuse", order)
                tally.add("bytes_copied", PAGE_SIZE * count, "cow_reuse", order)
            elif oc == L.OC_REUSE:
                tally.add("cow_reuses", count, "cow_reuse", order)
        m.reuse_steps.update((p0 + k[outcome == L.OC_REUSE]).tolist())
        asked = np.isin(cows[:, L.C_RULE], _QUESTION_RULES)
        if not asked.any():
            return
        cows, k = cows[asked], k[asked]
        # a reuse records nothing: asked after its fault's ops; a copy before it: at its new folio's folio_new
        ends = after[k, 0]
        pos = np.where(ends > 0, at[np.maximum(ends - 1, 0)] + 1, 0) if ntr else np.zeros(len(k), dtype=np.int64)
        copy = np.flatnonzero(cows[:, L.C_OUTCOME] == L.OC_COPY)
        if len(copy):
            news = np.flatnonzero(rows[at, L.T_KIND] == K.K_FOLIO_NEW)  # trace rows
            born = rows[at[news], L.T_FOLIO]
            order = np.argsort(born, kind="stable")
            want = cows[copy, L.C_NEW]
            j = np.searchsorted(born[order], want)
            found = j < len(born)
            found[found] = born[order][j[found]] == want[found]
            first = np.where(found, news[order][np.minimum(j, len(born) - 1)], -1)
            if not found.all() or (first < before[k[copy], 0]).any() or (first >= ends[copy]).any():
                bad = int(want[np.flatnonzero(~found)[0]]) if not found.all() else int(want[0])
                raise Unsupported(f"scoring: no folio_new of f{bad} after a copy-on-write decision")
            pos[copy] = at[first]
        b.ask_batch(base + pos, cows[:, L.C_FOLIO], "cow_reuse", after[k, 2],
                    (cows[:, L.C_MAPCOUNT] == cows[:, L.C_REFCOUNT]).tolist())


@dataclass(slots=True)
class FastDrive:
    """A driving run on the fast engine: its stream and the run-level outcomes (as the probe's run rows)."""

    stream: ScoringStream
    run_rows: list[MetricRow]
    steps: int
    errors: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)  # recorded faults (``fault`` steps) by outcome


class ScoringRunner(FastWorkloadRunner):
    """:class:`FastWorkloadRunner` with the evaluator's questions (foliosim.evaluate.runner.WorkloadRunner with a
    recording Probe)."""

    m: ScoringMachine

    def __init__(self, machine: ScoringMachine, batch: int = 4096) -> None:
        super().__init__(machine, batch)
        self.sizes: dict[str, int] = {}
        self.faults: Counter[str] = Counter()
        self._fault_write: dict[int, bool] = {}
        self.steps: list[Step] = []
        self.program = True  # run stretches in the compiled step interpreter (False: every step through Python)
        self._mmaps: dict[str, tuple[list[int], list[int]]] | None = None  # region -> (step indices, pages)

    def run(self, steps: list[Step]) -> FastRunStats:
        """Stretches of steps in the compiled step interpreter (:class:`ScoringProgram`) where it applies, else
        every step through :meth:`execute` (which notes each access row's runner step); then the last batch."""
        self.steps = steps
        if kprog.compiled_unsupported(self.m) is None and self.program:
            ScoringProgram(self, steps).run()
        else:
            for index, step in enumerate(steps):
                self._step(step, index)
        self.flush()
        self.stats.errors["SIGSEGV"] += int(self.m.glob[L.G_SEGV]) - self._segv
        return self.stats

    def flush(self) -> None:
        if not self._ops:
            return
        m = self.m
        m.pull()
        m.batch_base = m.step
        m.faulted = set()
        try:
            super().flush()
            steps = m.row_machine_steps()
        finally:
            m.batch_base = None
        m.step = int(steps[-1])  # every read/write row is one machine call, a recorded fault one if taken
        for r, flag in enumerate(m.fault_rows):
            if flag:
                write = bool(self._fault_write[r])
                self.faults[FAULT_TAKEN if r in m.faulted else FAULT_MAPPED if write else FAULT_PRESENT] += 1
        m.row_steps = []
        m.fault_rows = []
        self._fault_write.clear()

    def execute(self, step: Step, index: int) -> None:
        m = self.m
        m.runner_step = index
        verb, a = step.verb, step.args
        if verb in ("write", "read"):
            self._vpn(a[0])  # an unknown region: WorkloadError naming it, as the reference runner says
            m.row_steps.append(index)
            m.fault_rows.append(False)
            super().execute(step, index)
            return
        if verb == "fault":
            self.recorded_fault(step, index)
            return
        self.flush()
        m.pull()
        if verb == "exit":
            self.census()
            super().execute(step, index)
        elif verb == "fork":
            super().execute(step, index)
            m.pull()
            self.census()
        elif verb == "khugepaged":
            task = m.task(step.task)
            self.khugepaged(task.mm)
        elif verb == "numa":
            task = m.task(step.task)
            region = a[0]
            if region is None:
                start, end = 0, 1 << 62
            else:
                start = self._vpn(region)
                end = start + self._size(region, index) if isinstance(region, str) else start + 1
            self.numa(task.mm, start, end)
        elif verb == "madvise" and a[3] in ("cold", "pageout"):
            self.cold_pageout(step)
        elif verb == "mmap":
            super().execute(step, index)
            if isinstance(a[0], str) and a[0] in self.regions:
                self.sizes[a[0]] = a[1]
        else:
            super().execute(step, index)
        m.pull()

    def _size(self, region: str, index: int) -> int:
        """The pages of the last mmap of ``region`` before step ``index`` (1: none), as WorkloadRunner keeps them;
        mmap steps run in the compiled loop too, so they are looked up in the step list."""
        if self._mmaps is None:
            self._mmaps = {}
            for k, s in enumerate(self.steps):
                if s.verb == "mmap" and isinstance(s.args[0], str):
                    at, pages = self._mmaps.setdefault(s.args[0], ([], []))
                    at.append(k)
                    pages.append(s.args[1])
        found = self._mmaps.get(region)
        if found is None or region not in self.regions:
            return self.sizes.get(region, 1)
        k = bisect_left(found[0], index)
        return found[1][k - 1] if k else 1

    def recorded_fault(self, step: Step, index: int) -> None:
        """WorkloadRunner._fault(): outside any VMA or not permitted: counted; else a one-page access row (no
        store: contents are not scored), which the kernel faults only where the reference would take it."""
        m = self.m
        mm = m.task(step.task).mm
        vpn = self._vpn(step.args[0]) + step.args[1]
        write = bool(step.args[2])
        refused = refused_fault(mm.find_vma(vpn), write)
        if refused is not None:
            self.faults[refused] += 1
            return
        task = m.tasks.get(step.task)
        if task is None or task.vfork_blocked:
            task = m._runnable(step.task)
        self._fault_write[len(self._ops)] = write
        m.row_steps.append(index)
        m.fault_rows.append(True)
        self._ops.append((task.mm.num, vpn, 1, int(write), -1, 0))
        self._tasks.append(step.task)
        if len(self._ops) >= self.batch:
            self.flush()

    # -- the questions asked between batches ---------------------------------------------
    def _name(self, f: int) -> str:
        return f"f{int(self.m.fs[f, L.X_NAME])}"

    def census(self) -> None:
        """Probe.census(): every mapped large anonymous folio, in allocation order."""
        m, b = self.m, self.m.builder
        b.advance(b.nops)
        fs = m.fs[:int(m.glob[L.G_NFOLIO])]
        large = np.flatnonzero((fs[:, K.F_LIVE] != 0) & (fs[:, K.F_ORDER] > 0) & (fs[:, L.X_KIND] == L.KIND_ANON))
        b.ask_mapped(np.sort(fs[large, L.X_NAME]), CENSUS, m.step)  # allocation order

    def _tables(self, mm: FastMM) -> set[int]:
        m = self.m
        return {int(m.tb[t, L.TB_IDX]) for t in m._mm_tables(mm).tolist() if m.tb[t, L.TB_HASPT]}

    def khugepaged(self, mm: FastMM) -> None:
        """foliosim.evaluate.consumers.khugepaged_scan() over the fast machine's page tables."""
        m, b = self.m, self.m.builder
        limit = m.P // 2
        ptes, pmds = m.mappings(mm)
        tables = self._tables(mm)
        for vma in mm.vmas:
            if not vma.is_anon or vma.shared:
                continue
            for idx in range(vma.start >> m.po, ((vma.end - 1) >> m.po) + 1):
                base = idx << m.po
                if base < vma.start or base + m.P > vma.end or idx in pmds or idx not in tables:
                    continue
                seen: dict[int, int] = {}
                for vpn in range(base, base + m.P):
                    pte = ptes.get(vpn)
                    if pte is None or pte[0] < 0 or int(m.fs[pte[0], L.X_KIND]) != L.KIND_ANON:
                        continue
                    seen[pte[0]] = seen.get(pte[0], 0) + 1
                if not seen:
                    continue
                b.groups += 1
                for f, count in seen.items():
                    b.ask(b.nops, self._name(f), "khugepaged", m.step, group=b.groups, weight=count, limit=limit)

    def numa(self, mm: FastMM, start: int, end: int) -> None:
        """foliosim.evaluate.consumers.numa_migrate() over the fast machine's page tables."""
        m, b = self.m, self.m.builder
        ptes, pmds = m.mappings(mm)
        seen: dict[int, None] = {}
        for vma in mm.vmas_in(start, end):
            lo, hi = max(start, vma.start), min(end, vma.end)
            for idx in range(lo >> m.po, ((hi - 1) >> m.po) + 1):
                pmd = pmds.get(idx)
                if pmd is not None and pmd[0] >= 0:
                    seen.setdefault(pmd[0])
            for vpn in sorted(v for v in ptes if lo <= v < hi):
                if ptes[vpn][0] >= 0:
                    seen.setdefault(ptes[vpn][0])
        for f in seen:
            b.ask(b.nops, self._name(f), "numa_migrate", m.step)

    def cold_pageout(self, step: Step) -> None:
        """MADV_COLD/PAGEOUT: the questions of mm/madvise.c's walk, placed around the folio splits it made."""
        m, b = self.m, self.m.builder
        task = m._runnable(step.task)
        a = step.args
        start = self._vpn(a[0]) + a[1]
        asked = self._cold_questions(task.mm, start, start + a[2]) if a[2] > 0 else []
        splits_before = int(m.glob[L.G_FSPLIT])
        pos0 = b.nops
        super().execute(step, m.runner_step)
        m.pull()
        rows = b.rows[pos0:b.nops]
        folios = np.where((rows[:, L.T_KIND] >= K.K_FOLIO_NEW) & (rows[:, L.T_KIND] <= K.K_UNMAP), rows[:, L.T_FOLIO],
                          -1)
        split_at: list[int | None] = []
        made = 0
        for name, splits in asked:
            if not splits:
                split_at.append(None)
                continue
            hit = np.flatnonzero(folios == int(name[1:]))
            at = pos0 + int(hit[0]) if len(hit) else None
            if at is None:
                raise Unsupported(f"scoring: MADV_{a[3].upper()} did not split {name} as its walk predicted")
            split_at.append(at)
            made += 1
        if made != int(m.glob[L.G_FSPLIT]) - splits_before:
            raise Unsupported(f"scoring: MADV_{a[3].upper()} split {int(m.glob[L.G_FSPLIT]) - splits_before} "
                              f"folios, its walk predicted {made}")
        nxt = b.nops
        positions = [0] * len(asked)
        for j in range(len(asked) - 1, -1, -1):
            at = split_at[j]
            if at is not None:
                nxt = at
            positions[j] = nxt
        for (name, _splits), pos in zip(asked, positions, strict=True):
            b.ask(pos, name, f"madvise_{a[3]}", m.step)

    def _cold_questions(self, mm: FastMM, start: int, end: int) -> list[tuple[str, bool]]:
        """(folio, split follows) of each question madvise_cold_pageout() asks, in order, on today's state."""
        m = self.m
        ptes, pmds = m.mappings(mm)
        tables = self._tables(mm)
        out: list[tuple[str, bool]] = []
        split: set[int] = set()
        for vma in mm.vmas_in(start, end):
            lo, hi = max(start, vma.start), min(end, vma.end)
            first, last = lo >> m.po, (hi - 1) >> m.po
            slots = sorted({i for i in pmds if first <= i <= last} | {i for i in tables if first <= i <= last})
            for idx in slots:
                a, b = max(lo, idx << m.po), min(hi, (idx + 1) << m.po)
                pmd = pmds.get(idx)
                if pmd is not None:
                    f = pmd[0]
                    if f < 0:
                        continue
                    shared = bool(kern.maybe_shared(m.fs, m.pmc, f))
                    partial = b - a != m.P
                    out.append((self._name(f), not shared and partial))
                    if shared or not partial:
                        continue
                    split.add(f)  # split to order 0: its pieces ask nothing
                vpn = a
                present = sorted(v for v in ptes if a <= v < b)
                i = 0
                while i < len(present):
                    if present[i] < vpn:
                        i += 1
                        continue
                    vpn = present[i]
                    f, page, _w, _d = ptes[vpn]
                    if f < 0 or f in split:
                        vpn += 1
                        continue
                    order = int(m.fs[f, K.F_ORDER])
                    nr = 1
                    if order:
                        limit = min(b - vpn, (1 << order) - page)
                        while nr < limit and ptes.get(vpn + nr, (None, -1))[:2] == (f, page + nr):
                            nr += 1
                        if nr < 1 << order:
                            shared = bool(kern.maybe_shared(m.fs, m.pmc, f))
                            out.append((self._name(f), not shared))
                            if not shared:
                                split.add(f)
                                continue
                    vpn += nr
        return out


def drive_fast(steps: list[Step], config: KernelConfig, driver: str = "kernel", oracle: str = "reuse",
               batch: int = 4096, interpreter: bool | None = None) -> FastDrive:
    """Run ``steps`` (a generated workload's, or a workload file's / run trace's) on the fast engine and record
    the scoring stream. A step the reference would refuse stops the run (WorkloadError), where the reference
    runner skips it for imported workloads: the caller then runs the reference.

    Raises :class:`Unsupported` (nothing to keep: run the reference) for a driver other than ``kernel``, without
    numba, or for any step the fast engine does not model; :class:`WorkloadError` names a step the workload got
    wrong (as the reference runner does in strict mode). ``interpreter``: True runs stretches of steps in the
    compiled step interpreter (:class:`ScoringProgram`), False every step through Python (one compiled call per batch
    of accesses; the interpreter is tested against it), None (default) the interpreter when its stretches are long
    enough to pay for entering and leaving it (:func:`long_stretches`)."""
    if not HAVE_NUMBA:
        raise Unsupported("a run without numba (pip install 'foliosim[fast]')")
    if driver not in FAST_DRIVERS:
        raise Unsupported(f"the driver {driver!r} (its answers are not the kernel's; the fast engine drives with "
                          f"{', '.join(FAST_DRIVERS)})")
    collecting = gc.isenabled()
    gc.disable()  # hundreds of thousands of acyclic objects (ops, questions): no collector pass over them
    try:
        return _drive(steps, config, driver, oracle, batch, interpreter)
    finally:
        if collecting:
            gc.enable()


#: steps where the interpreter stops for Python (ScoringRunner.execute() asks questions there), by verb; madvise
#: counted whatever its advice (only cold and pageout stop)
_STOPS = frozenset({"fork", "exit", "khugepaged", "numa", "spawn", "thp", "madvise"})
_VERB = attrgetter("verb")
#: the fewest steps per stretch at which the interpreter pays: entering and leaving it costs about as much as
#: ~15 steps one by one (generated workloads of 3-19 steps per stretch, benchmarks/fastsim-traces.py)
STRETCH_STEPS = 16


def long_stretches(steps: list[Step]) -> bool:
    """Whether ``steps`` run in stretches of :data:`STRETCH_STEPS` steps or more on average between the steps where
    the interpreter stops (recorded programs: hundreds; generated workloads: a few). The recorded faults a
    :class:`kprog.FaultSteps` list's columns tell (tracerun.told_steps()) are not read: a fault is no stop."""
    n = len(steps)
    told = steps.faults if type(steps) is kprog.FaultSteps else None
    if told is not None and len(told[0]) and told[0][0] >= 0 and told[0][-1] < n:
        rest = np.ones(n, dtype=np.bool_)
        rest[told[0]] = False
        steps = list(map(steps.__getitem__, np.flatnonzero(rest).tolist()))
    stops = sum(map(_STOPS.__contains__, map(_VERB, steps)))
    return n >= STRETCH_STEPS * (stops + 1)


def _drive(steps: list[Step], config: KernelConfig, driver: str, oracle: str, batch: int,
           interpreter: bool | None) -> FastDrive:
    builder = StreamBuilder(config, driver)
    m = ScoringMachine(config, builder, oracle != "off")
    runner = ScoringRunner(m, batch)
    runner.program = long_stretches(steps) if interpreter is None else interpreter
    try:
        stats = runner.run(steps)
    except SimError as exc:  # pragma: no cover - the runner wraps these in WorkloadError
        raise WorkloadError(str(exc)) from None
    m.pull()
    stream = builder.finish(m.step)
    run = m.tally
    checks = {"off": 0, "end": 1, "reuse": len(m.reuse_steps) + 1, "every": stats.steps + 1}[oracle]
    if checks:
        run.add("oracle_checks", checks)
    run.add("steps", m.step)
    run.add("rmap_ops", len(stream.op_step))  # not stream.ops: its objects are made when first read
    return FastDrive(stream, run.rows(), stats.steps, Counter({k: v for k, v in stats.errors.items() if v}),
                     runner.faults)


__all__ = ["FAST_DRIVERS", "FastDrive", "ScoringMachine", "ScoringRunner", "StreamBuilder", "access_marked",
           "drive_fast"]
