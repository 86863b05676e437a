"""Open-loop scoring: a recorded rmap op stream with the consumers' questions, and the scorer that replays it.

One *driving* design runs the workload on the simulator and its answers steer the run; the run is recorded as a
:class:`ScoringStream`: the rmap ops in order (each with the machine step it happened in and how many MMs map its
folio afterwards, from the exact per-MM truth) and every consumer question (its position in the op stream, folio,
consumer and the truth). :func:`score_stream` then feeds the same ops to any number of designs and asks each one
every question on the same states, so all designs answer one identical question set (their decisions do not steer
anything: *open loop*). Any engine that produces a stream (the Python simulator here, a compiled simulator later)
can reuse the scorer. The format is documented in docs/evaluator.md, "The open-loop scoring stream".
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from itertools import pairwise, repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from foliosim.errors import FoliosimError, Rejected
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE
from foliosim.schemes.base import Design, UpdateCost, make_design, op_diff, update_cost
from foliosim.schemes.legacy import SharedRun, share_rmap_run
from foliosim.system import MAP_OPS, Op

MMS_CAP = 8
Key = tuple[str, str, int, int]
MetricRow = tuple[str, str, int, int, float]
I64 = npt.NDArray[np.int64]

#: consumers whose questions form one decision per group (a khugepaged PMD range)
GROUPED = ("khugepaged",)
#: the census "consumer": every mapped large anon folio after each fork and before each exit (checks, no decision)
CENSUS = "census"


class StreamError(FoliosimError):
    """A scoring stream that does not hold together (names the record and why)."""


@dataclass(frozen=True, slots=True)
class Question:
    """One consumer question, asked after ``pos`` ops of the stream were applied.

    ``truth``: more than one MM maps the folio (exact). ``group`` >= 0 ties the questions of one decision
    together (khugepaged: the folios of one PMD range, each ``weight`` PTEs of it, collapse when at most
    ``limit`` PTEs map maybe-shared folios); -1: the question is its own decision. ``refs_ok`` (CoW reuse):
    every reuse condition but the sharing answer holds (refcount == mapcount), so "exclusive" means reuse.
    """

    pos: int
    folio: str
    consumer: str
    truth: bool
    group: int = -1
    weight: int = 1
    limit: int = 0
    refs_ok: bool = True


@dataclass(slots=True)
class ScoringStream:
    """A driving run, as every design is scored on it (see the module docstring)."""

    config: KernelConfig
    driver: str
    ops: list[Op] = field(default_factory=list)
    op_step: list[int] = field(default_factory=list)  # the machine step each op happened in
    op_mms: list[int] = field(default_factory=list)  # MMs mapping op.folio after the op; -1: no folio
    questions: list[Question] = field(default_factory=list)
    end_step: int = 0

    def check(self) -> None:
        """StreamError unless the arrays line up and the questions are in stream order."""
        if not len(self.ops) == len(self.op_step) == len(self.op_mms):
            raise StreamError(f"stream of {self.driver}: {len(self.ops)} ops, {len(self.op_step)} steps, "
                              f"{len(self.op_mms)} MM counts (they must be equal)")
        last = 0
        for index, q in enumerate(self.questions):
            if q.pos < last or q.pos > len(self.ops):
                raise StreamError(f"stream of {self.driver}: question {index} at op {q.pos} is out of order "
                                  f"(previous at {last}, {len(self.ops)} ops)")
            last = q.pos

    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the question set: where each question was asked, on what, by whom."""
        h = hashlib.sha256()
        for q in self.questions:
            h.update(f"{q.pos}|{q.folio}|{q.consumer}|{int(q.truth)}|{q.group}|{q.weight}\n".encode())
        return h.hexdigest()[:16]

    @classmethod
    def from_columnar(cls, trace: object, op_step: Sequence[int], op_mms: Sequence[int],
                      questions: Iterable[Question], config: KernelConfig, driver: str,
                      end_step: int) -> ScoringStream:
        """A stream whose ops come from a :class:`foliosim.trace.columnar.ColumnarTrace` (a compiled engine's)."""
        from foliosim.trace.columnar import ColumnarTrace

        if not isinstance(trace, ColumnarTrace):
            raise StreamError(f"from_columnar needs a ColumnarTrace, not {type(trace).__name__}")
        ops: list[Op] = []
        for idx in range(len(trace)):
            op = trace.op(idx)
            if op is None:
                raise StreamError(f"columnar op {idx} is a raw line, not an rmap op")
            ops.append(op)
        stream = cls(config, driver, ops, [int(s) for s in op_step], [int(n) for n in op_mms], list(questions),
                     end_step)
        stream.check()
        return stream


_consume: Any = deque(maxlen=0).extend


def made(cls: type, n: int, setters: tuple[Any, ...], *columns: Iterable[Any]) -> list[Any]:
    """``n`` objects of the frozen slotted dataclass ``cls``, field k of each from ``columns[k]``, without its
    ``__init__``: the objects made, then each field set through its slot's descriptor, one C-level map per field (a
    Python call per object costs more; a census asks thousands of questions at once)."""
    objs: list[Any] = list(map(object.__new__, repeat(cls, n)))
    for setter, column in zip(setters, columns, strict=True):
        _consume(map(setter, objs, column))
    return objs


QSET = tuple(getattr(Question, name).__set__ for name in ("pos", "folio", "consumer", "truth", "group", "weight",
                                                             "limit", "refs_ok"))
OPSET = tuple(getattr(Op, name).__set__ for name in ("op", "mm", "folio", "order", "level", "page", "nr"))


class Names:
    """Values by number (``fmt.format(n)``, or ``n`` itself when ``fmt`` is None), taken from an object array many
    at once; number -1 is None."""

    def __init__(self, fmt: str | None) -> None:
        self.fmt = fmt
        self.arr = np.array([None], dtype=object)  # the values of 0..len-2, None last (index -1)

    def take(self, numbers: I64) -> list[Any]:
        top = int(numbers.max(initial=-1)) + 1
        if top >= len(self.arr):
            size = max(2 * len(self.arr), top + 1)
            values: list[Any] = list(range(size)) if self.fmt is None else list(map(self.fmt.format, range(size)))
            self.arr = np.array([*values, None], dtype=object)
        out: list[Any] = self.arr[numbers].tolist()
        return out


#: a columnar stream's op kinds by code (the compiled engine's numbering, foliosim.fast.kernels K_*)
OP_KINDS = ("mm_new", "mm_free", "folio_new", "folio_free", "map_new_anon", "map", "dup", "unmap")
K_FOLIO_NEW, K_FOLIO_FREE, K_MAP_NEW_ANON, K_UNMAP = (OP_KINDS.index(k) for k in ("folio_new", "folio_free",
                                                                                   "map_new_anon", "unmap"))
_KIND_NAMES = np.array(OP_KINDS, dtype=object)
#: a columnar op's level by code: 0 PTE, 1 PMD, -1 none
LEVELS = np.array([PTE, PMD, None], dtype=object)
FOLIO_NAMES = Names("f{}")  # folio ``f<n>`` by number
MM_NAMES = Names("mm{}")  # MM ``mm<n>`` by number
_NUMBERS = Names(None)


@dataclass(slots=True)
class StreamColumns:
    """A stream's ops and questions as numpy columns, one row per op / question (a compiled engine's driving run).

    Ops: ``kind`` (:data:`OP_KINDS` code), ``mm`` (MM ``mm<n>``), ``folio`` (``f<n>``), ``order``, ``level``
    (:data:`LEVELS` code), ``page``, ``nr``; -1 stands for None in the first five. ``direct``: ops given as objects
    by index (their columns kind, folio, order, level, nr still filled). Questions: ``qpos``, ``qfolio`` (folio
    number), ``qconsumer`` (index into ``consumers``), ``qtruth``, ``qgroup``, ``qweight``, ``qlimit``, ``qrefs``.
    """

    kind: I64
    mm: I64
    folio: I64
    order: I64
    level: I64
    page: I64
    nr: I64
    direct: dict[int, Op]
    qpos: I64
    qfolio: I64
    qconsumer: I64
    qtruth: npt.NDArray[np.bool_]
    qgroup: I64
    qweight: I64
    qlimit: I64
    qrefs: npt.NDArray[np.bool_]
    consumers: tuple[str, ...]

    def ops(self, index: I64 | None = None) -> list[Op]:
        """The Op objects of the ops at ``index`` (ascending; all when None), in that order."""
        if index is None:
            index = np.arange(len(self.kind), dtype=np.int64)
        c = self
        out = made(Op, len(index), OPSET, _KIND_NAMES[c.kind[index]].tolist(), MM_NAMES.take(c.mm[index]),
                   FOLIO_NAMES.take(c.folio[index]), _NUMBERS.take(c.order[index]), LEVELS[c.level[index]].tolist(),
                   c.page[index].tolist(), c.nr[index].tolist())
        if c.direct and len(index):  # ``index`` ascends
            keys = np.fromiter(c.direct, dtype=np.int64, count=len(c.direct))
            at = np.minimum(np.searchsorted(index, keys), len(index) - 1)
            hit = index[at] == keys
            for key, k in zip(keys[hit].tolist(), at[hit].tolist(), strict=True):
                out[k] = c.direct[key]
        return out

    def questions(self, index: I64 | None = None) -> list[Question]:
        """The Question objects of the questions at ``index`` (all when None), in that order."""
        if index is None:
            index = np.arange(len(self.qpos), dtype=np.int64)
        names = np.array(self.consumers, dtype=object)
        return made(Question, len(index), QSET, self.qpos[index].tolist(), FOLIO_NAMES.take(self.qfolio[index]),
                    names[self.qconsumer[index]].tolist() if len(names) else [], self.qtruth[index].tolist(),
                    self.qgroup[index].tolist(), self.qweight[index].tolist(), self.qlimit[index].tolist(),
                    self.qrefs[index].tolist())


def _number(folio: str) -> int:
    """The number of a folio named ``f<n>``."""
    if not (folio.startswith("f") and folio[1:].isdigit()):
        raise StreamError(f"a columnar stream names its folios f<n>, not {folio!r}")
    return int(folio[1:])


_OPS_SLOT: Any = ScoringStream.__dict__["ops"]
_QUESTIONS_SLOT: Any = ScoringStream.__dict__["questions"]


class ColumnStream(ScoringStream):
    """A :class:`ScoringStream` kept as :class:`StreamColumns`: :func:`score_stream` reads the columns and makes
    objects only for what a design is fed one by one (ops not on order-0 folios, questions outside a census);
    ``ops`` and ``questions`` are made from the columns when first read. Setting either (not changing the lists
    read) makes the objects the stream: the columns are no longer read (:attr:`columnar`)."""

    __slots__ = ("_made_ops", "_made_questions", "columnar", "columns")

    def __init__(self, config: KernelConfig, driver: str, columns: StreamColumns, op_step: list[int],
                 op_mms: list[int], end_step: int) -> None:
        self.columns = columns
        ScoringStream.__init__(self, config, driver, [], op_step, op_mms, [], end_step)
        self._made_ops = self._made_questions = False
        self.columnar = True

    @classmethod
    def of(cls, stream: ScoringStream) -> ColumnStream:
        """``stream`` as columns (folios named ``f<n>``; an op on an MM not named ``mm<n>`` kept as its object):
        the columnar path checked against the object path on any stream."""
        ops = stream.ops
        n = len(ops)
        cols = np.zeros((7, n), dtype=np.int64)
        direct: dict[int, Op] = {}
        for i, op in enumerate(ops):
            number = -1
            if op.mm is not None:
                if op.mm.startswith("mm") and op.mm[2:].isdigit():
                    number = int(op.mm[2:])
                else:
                    direct[i] = op
            cols[:, i] = (OP_KINDS.index(op.op), number, -1 if op.folio is None else _number(op.folio),
                          -1 if op.order is None else op.order, -1 if op.level is None else int(op.level is PMD),
                          op.page, op.nr)
        qs = stream.questions
        consumers = tuple(dict.fromkeys(q.consumer for q in qs))
        q_cols = [np.array(values, dtype=np.int64) for values in (
            [q.pos for q in qs], [_number(q.folio) for q in qs], [consumers.index(q.consumer) for q in qs],
            [q.group for q in qs], [q.weight for q in qs], [q.limit for q in qs])]
        kind, mm, folio, order, level, page, nr = cols
        columns = StreamColumns(kind, mm, folio, order, level, page, nr, direct, q_cols[0], q_cols[1], q_cols[2],
                                np.array([q.truth for q in qs], dtype=bool), q_cols[3], q_cols[4], q_cols[5],
                                np.array([q.refs_ok for q in qs], dtype=bool), consumers)
        return cls(stream.config, stream.driver, columns, list(stream.op_step), list(stream.op_mms), stream.end_step)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its columns while they are the stream, else as a :class:`ScoringStream` of its objects."""
        if self.columnar:
            return ColumnStream, (self.config, self.driver, self.columns, self.op_step, self.op_mms, self.end_step)
        return ScoringStream, (self.config, self.driver, self.ops, self.op_step, self.op_mms, self.questions,
                               self.end_step)

    @property
    def ops(self) -> list[Op]:
        if not self._made_ops:
            _OPS_SLOT.__set__(self, self.columns.ops())
            self._made_ops = True
        got: list[Op] = _OPS_SLOT.__get__(self)
        return got

    @ops.setter
    def ops(self, value: list[Op]) -> None:
        _OPS_SLOT.__set__(self, value)
        self._made_ops = True
        self.columnar = False

    @property
    def questions(self) -> list[Question]:
        if not self._made_questions:
            _QUESTIONS_SLOT.__set__(self, self.columns.questions())
            self._made_questions = True
        got: list[Question] = _QUESTIONS_SLOT.__get__(self)
        return got

    @questions.setter
    def questions(self, value: list[Question]) -> None:
        _QUESTIONS_SLOT.__set__(self, value)
        self._made_questions = True
        self.columnar = False

    def check(self) -> None:
        if not self.columnar:
            ScoringStream.check(self)
            return
        c = self.columns
        n = len(c.kind)
        if not n == len(self.op_step) == len(self.op_mms):
            raise StreamError(f"stream of {self.driver}: {n} ops, {len(self.op_step)} steps, "
                              f"{len(self.op_mms)} MM counts (they must be equal)")
        pos = c.qpos
        if len(pos):
            prev = np.concatenate(([0], np.maximum.accumulate(pos)[:-1]))
            bad = np.flatnonzero((pos < prev) | (pos > n))
            if len(bad):
                index = int(bad[0])
                raise StreamError(f"stream of {self.driver}: question {index} at op {int(pos[index])} is out of "
                                  f"order (previous at {int(prev[index])}, {n} ops)")

    def digest(self) -> str:
        if not self.columnar:
            return ScoringStream.digest(self)
        # each line is "<pos>|" + folio name + "|<consumer>|<truth>|<group>|<weight>\n": the first and last part
        # formatted once per distinct value (a census asks many questions at one position), then interleaved
        c = self.columns
        n = len(c.qpos)
        if not n:
            return hashlib.sha256(b"").hexdigest()[:16]
        new = np.concatenate(([True], c.qpos[1:] != c.qpos[:-1]))  # positions ascend (check())
        run = np.cumsum(new) - 1
        heads = np.array([f"{p}|" for p in c.qpos[new].tolist()], dtype=object)
        groups, g_at = np.unique(c.qgroup, return_inverse=True)
        weights, w_at = np.unique(c.qweight, return_inverse=True)
        code = ((c.qconsumer * 2 + c.qtruth) * len(groups) + g_at.reshape(n)) * len(weights) + w_at.reshape(n)
        codes, kind = np.unique(code, return_inverse=True)
        tails = []
        for value in codes.tolist():
            rest, w = divmod(value, len(weights))
            rest, g = divmod(rest, len(groups))
            k, t = divmod(rest, 2)
            tails.append(f"|{c.consumers[k]}|{t}|{int(groups[g])}|{int(weights[w])}\n")
        parts = np.empty(3 * n, dtype=object)
        parts[0::3] = heads[run]
        parts[1::3] = FOLIO_NAMES.take(c.qfolio)
        parts[2::3] = np.array(tails, dtype=object)[kind.reshape(n)]
        return hashlib.sha256("".join(parts.tolist()).encode()).hexdigest()[:16]


def cost_fields() -> tuple[str, ...]:
    """The cost columns every update is charged (whatever :class:`UpdateCost` holds: atomics, locks, ...)."""
    return tuple(f.name for f in fields(UpdateCost))


class Tally:
    """Metric sums keyed by (metric, consumer, order, MMs)."""

    def __init__(self) -> None:
        self.values: defaultdict[Key, float] = defaultdict(float)

    def add(self, metric: str, value: float = 1, consumer: str = "", order: int = -1, mms: int = 0) -> None:
        self.values[(metric, consumer, order, mms)] += value

    def total(self, metric: str, consumer: str | None = None) -> float:
        return sum(v for (m, c, _o, _n), v in self.values.items()
                   if m == metric and (consumer is None or c == consumer))

    def rows(self) -> list[MetricRow]:
        return sorted((m, c, o, n, float(v)) for (m, c, o, n), v in self.values.items())


@dataclass(slots=True)
class _Track:
    """Per large folio: what the design and the truth say now, since when."""

    order: int
    since: int
    peak: int = 0
    mapped: bool = False
    design_shared: bool = False
    exact_shared: bool = False
    meta_peak: int = 0


@dataclass(slots=True)
class _Group:
    gid: int
    consumer: str
    limit: int
    shared_design: int = 0
    shared_truth: int = 0


class Scorer:
    """One design fed a stream op by op and asked its questions: checks, decisions, time, cost and metadata.

    The closed-loop :class:`~foliosim.evaluate.probe.Probe` feeds it live; :func:`score_stream` from a
    recorded stream. Every metric is a function of the stream and the design only.
    """

    def __init__(self, design: Design, replay: bool = False) -> None:
        self.design = design
        self.tally = Tally()
        self.tracks: dict[str, _Track] = {}
        self.costs = cost_fields()
        self.group: _Group | None = None
        self.questions = 0
        self._update_keys: dict[int, tuple[Key, ...]] = {}  # per order: the keys of "updates" and each cost
        # Replaying a recorded stream (score_stream): a large folio's answer is the one _track took after its last op
        # when it depends on nothing else (Design.answers_per_folio): the same answer, without asking again.
        self._cached = replay and design.answers_per_folio

    # -- ops ------------------------------------------------------------------------
    def op(self, op: Op, step: int, nr_mms: int) -> None:
        if self.group is not None:
            self._close_group()
        design = self.design
        kind = op.op
        folio = op.folio
        cost = design.apply(op)
        if kind in MAP_OPS:
            order = design.orders[folio]  # type: ignore[index]
            keys = self._update_keys.get(order)
            if keys is None:
                keys = self._update_keys[order] = tuple((name, "", order, 0) for name in ("updates", *self.costs))
            values = self.tally.values
            values[keys[0]] += 1
            for key in keys[1:]:
                values[key] += getattr(cost, key[0])
        if folio is not None:
            self._track(kind, folio, step, nr_mms)

    def _run(self, ops: list[Op], steps: list[int], mms: list[int], start: int, stop: int,
             pending: dict[tuple[int, int], list[Any]]) -> None:
        """:meth:`op` of ``ops[start:stop]`` (with their steps and MMs columns) when replaying: the update rows are
        counted in ``pending`` per (order, cost) until :meth:`_flush` adds them to the tally (sums of integers:
        the same values)."""
        if start >= stop:
            return
        if self.group is not None:
            self._close_group()
        apply, track, orders = self.design.apply, self._track, self.design.orders
        for index in range(start, stop):
            op = ops[index]
            cost = apply(op)
            folio = op.folio
            if folio is None:
                continue
            kind = op.op
            if kind in MAP_OPS:
                key = (orders[folio], id(cost))
                entry = pending.get(key)
                if entry is None:
                    pending[key] = [cost, 1]  # the cost object is kept with its id
                else:
                    entry[1] += 1
            track(kind, folio, steps[index], mms[index])

    def _flush(self, pending: dict[tuple[int, int], list[Any]]) -> None:
        """Add the update rows :meth:`_run` counted to the tally."""
        values = self.tally.values
        for (order, _id), (cost, count) in pending.items():
            keys = self._update_keys.get(order)
            if keys is None:
                keys = self._update_keys[order] = tuple((name, "", order, 0) for name in ("updates", *self.costs))
            values[keys[0]] += count
            for key in keys[1:]:
                values[key] += count * getattr(cost, key[0])
        pending.clear()

    def _track(self, kind: str, folio: str, now: int, nr_mms: int) -> None:
        if kind == "folio_new":
            order = self.design.orders[folio]
            if order:
                self.tracks[folio] = _Track(order, now)
            return
        track = self.tracks.get(folio)
        if track is None:
            return
        if now != track.since:
            self._close(track, now)
        if kind == "folio_free":
            self._retire(track)
            del self.tracks[folio]
            return
        if nr_mms > track.peak:
            track.peak = nr_mms
        design = self.design
        track.mapped = design.mapcount(folio) > 0
        track.design_shared = design.maybe_shared(folio)
        track.exact_shared = nr_mms > 1
        meta = design.metadata_bytes(folio)
        if meta > track.meta_peak:
            track.meta_peak = meta

    def _close(self, track: _Track, now: int) -> None:
        span = now - track.since
        track.since = now
        if span <= 0 or not track.mapped:
            return
        mms = min(track.peak, MMS_CAP)
        order = track.order
        values = self.tally.values  # Tally.add() inline: the ("folio_time", "", order, mms) row and its parts
        values[("folio_time", "", order, mms)] += span
        if track.design_shared and not track.exact_shared:
            values[("false_shared_time", "", order, mms)] += span
        if track.exact_shared:
            values[("shared_time", "", order, mms)] += span

    def _retire(self, track: _Track) -> None:
        self.tally.add("folios", 1, order=track.order, mms=min(track.peak, MMS_CAP))
        self.tally.add("metadata_bytes", track.meta_peak, order=track.order, mms=min(track.peak, MMS_CAP))

    # -- questions ----------------------------------------------------------------------
    def question(self, q: Question) -> bool:
        """The design's "maybe shared?" for ``q``; large folios are recorded as a check and scored."""
        design = self.design
        answer = design.maybe_shared(q.folio)
        order = design.orders[q.folio]
        return self._record(q, answer, order, min(self.tracks[q.folio].peak, MMS_CAP) if order else 0)

    def _replayed(self, q: Question, order: int, mms: int, small: bool | None) -> None:
        """:meth:`question` with what the stream alone determines given (:class:`_Plan`): the folio's order, its
        MMs column, and a small folio's answer (None: a large folio, the design answers)."""
        if small is None:
            small = self.tracks[q.folio].design_shared if self._cached else self.design.maybe_shared(q.folio)
        self._record(q, small, order, mms)

    def _record(self, q: Question, answer: bool, order: int, mms: int) -> bool:
        self.questions += 1
        group = self.group
        if group is not None and (q.group < 0 or group.gid != q.group):
            self._close_group()
            group = None
        if q.group >= 0:
            if group is None:
                group = self.group = _Group(q.group, q.consumer, q.limit)
            group.shared_design += q.weight * answer
            group.shared_truth += q.weight * q.truth
        if order == 0:
            return answer  # every design answers mapcount > 1 for a small folio: not a check
        truth = q.truth
        consumer = q.consumer
        values = self.tally.values
        values[("checks", consumer, order, mms)] += 1
        if truth:
            values[("exact_shared", consumer, order, mms)] += 1
            if not answer:
                values[("false_exclusive", consumer, order, mms)] += 1
        elif answer:
            values[("false_shared", consumer, order, mms)] += 1
        if q.group >= 0 or consumer == CENSUS:
            return answer
        if consumer == "cow_reuse":
            reuse = not answer and q.refs_ok
            avoidable = answer and not truth and q.refs_ok
            self._decision(consumer, reuse and truth, avoidable)
            if avoidable:
                self.tally.add("avoidable_copies", 1, consumer, order)
        else:
            self._decision(consumer, truth and not answer, answer and not truth)
        return answer

    def _decision(self, consumer: str, unsafe: bool, avoidable: bool) -> None:
        self.tally.add("decisions", 1, consumer)
        if unsafe:
            self.tally.add("unsafe", 1, consumer)
        if avoidable:
            self.tally.add("avoidable", 1, consumer)

    def _close_group(self) -> None:
        g, self.group = self.group, None
        if g is None:
            return
        collapse_design, collapse_truth = g.shared_design <= g.limit, g.shared_truth <= g.limit
        self._decision(g.consumer, collapse_design and not collapse_truth, collapse_truth and not collapse_design)

    def finish(self, end_step: int) -> None:
        """Close the last decision and every open interval; count the folios still alive."""
        self._close_group()
        for track in self.tracks.values():
            self._close(track, end_step)
            self._retire(track)
        self.tracks.clear()


@dataclass(slots=True)
class Scored:
    """One design's score on a stream."""

    design: str
    rows: list[MetricRow]
    questions: int
    digest: str
    seconds: float = 0.0  # wall time of this design's scoring


@dataclass(slots=True)
class _Plan:
    """What a stream determines for every design alike, found once (:func:`score_stream` with ``replay``).

    Every design treats an order-0 folio by the common rule (:attr:`Design.small_folios_plain`): no state of its
    own, the cost of ``PageMapcounts.charge()`` for order 0, "maybe shared" iff mapped more than once. So the ops
    on small folios are applied here once (their update rows in ``small_values``) and each design sees the others
    (``large``). Per question: the folio's order, its MMs column (the most MMs that mapped it so far, capped) and,
    for a small folio, the answer; ``gap``: some op came after the previous question (a pending grouped decision
    closes then, as :meth:`Scorer.op` closes it). Census questions asked together (one position, large folios) are
    answered in bulk: ``census[qi]`` holds them from the first one on (folio, truth, the key a wrong answer counts
    in), and their checks, the same for every design, are summed in ``census_values``.
    """

    large: list[int] = field(default_factory=list)
    small_values: dict[Key, float] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    mms: list[int] = field(default_factory=list)
    small: list[bool | None] = field(default_factory=list)
    gap: list[bool] = field(default_factory=list)
    census: dict[int, list[tuple[str, bool, Key]]] = field(default_factory=dict)
    census_values: defaultdict[Key, float] = field(default_factory=lambda: defaultdict(float))
    large_ops: list[Op] = field(default_factory=list)  # the ops at ``large``, their steps and MMs columns
    large_step: list[int] = field(default_factory=list)
    large_mms: list[int] = field(default_factory=list)
    questions: list[Question | None] = field(default_factory=list)  # None: a census question answered in bulk


def _plan(stream: ScoringStream) -> _Plan:
    """The :class:`_Plan` of ``stream``; Rejected for an op on a small folio that :meth:`Design.apply` rejects."""
    plan = _Plan()
    large, order_of, mms_of, small_of, gap = plan.large, plan.order, plan.mms, plan.small, plan.gap
    ops, op_mms = stream.ops, stream.op_mms
    small: dict[str, int] = {}  # order-0 folio -> total mapcount
    orders: dict[str, int] = {}  # every live folio's order
    peak: dict[str, int] = {}  # live large folio -> the most MMs that mapped it after any of its ops
    counts = [0, 0]  # small-folio updates: map_new_anon (a store), others (an atomic)

    def apply(index: int) -> None:
        op = ops[index]
        folio, kind = op.folio, op.op
        if folio is None:
            large.append(index)
        elif kind == "folio_new":
            if folio in orders:
                raise Rejected(f"stream: folio {folio!r} already exists")
            if op.order == 0:
                small[folio] = orders[folio] = 0
                return
            large.append(index)
            if op.order is not None:
                orders[folio], peak[folio] = op.order, 0
        elif folio in small:
            total = small[folio]
            if kind == "folio_free":
                if total:
                    raise Rejected(f"stream: folio {folio!r} freed while mapped")
                del small[folio], orders[folio]
                return
            if kind not in MAP_OPS:
                raise Rejected(f"stream: unknown op {kind!r}")
            if kind == "map_new_anon":
                small[folio] = total + 1
                counts[0] += 1
                return
            diff = op_diff(op)
            if kind == "unmap":
                if diff > total:
                    raise Rejected(f"stream: unmap of {diff} mappings of {folio!r}, which has {total}")
                small[folio] = total - diff
            else:
                small[folio] = total + diff
            counts[1] += 1
        else:
            large.append(index)
            if folio in peak:
                if kind == "folio_free":
                    del peak[folio], orders[folio]
                elif op_mms[index] > peak[folio]:
                    peak[folio] = op_mms[index]

    pos = 0
    bulk: list[tuple[str, bool, Key]] | None = None  # the census questions being gathered
    census_values = plan.census_values
    for qi, q in enumerate(stream.questions):
        for index in range(pos, q.pos):
            apply(index)
        gap.append(q.pos > pos)
        if q.pos > pos:
            bulk = None
        pos = max(pos, q.pos)
        folio = q.folio
        if folio in small:
            order_of.append(0)
            mms_of.append(0)
            small_of.append(small[folio] > 1)
        elif folio in peak:
            order, mms = orders[folio], min(peak[folio], MMS_CAP)
            order_of.append(order)
            mms_of.append(mms)
            small_of.append(None)
            if q.consumer == CENSUS and q.group < 0:
                if bulk is None:
                    bulk = plan.census[qi] = []
                truth = bool(q.truth)
                bulk.append((folio, truth, ("false_exclusive" if truth else "false_shared", CENSUS, order, mms)))
                census_values[("checks", CENSUS, order, mms)] += 1
                if truth:
                    census_values[("exact_shared", CENSUS, order, mms)] += 1
                continue
        else:
            raise StreamError(f"stream of {stream.driver}: question at op {q.pos} on {folio!r}, not a live folio")
        bulk = None
    for index in range(pos, len(ops)):
        apply(index)
    if counts[0] + counts[1]:
        costs = (update_cost(0, 0, 1), update_cost(1, 0, 1))  # PageMapcounts.charge() of order 0: {page 0}
        plan.small_values[("updates", "", 0, 0)] = float(counts[0] + counts[1])
        for name in cost_fields():
            value = sum(n * getattr(c, name) for n, c in zip(counts, costs, strict=True))
            plan.small_values[(name, "", 0, 0)] = float(value)
    plan.large_ops = [ops[index] for index in large]
    plan.large_step = [stream.op_step[index] for index in large]
    plan.large_mms = [op_mms[index] for index in large]
    plan.questions = list(stream.questions)
    return plan


def _segments(keys: I64) -> tuple[I64, I64]:
    """For ``keys`` sorted ascending: each element's segment start (first index of its run of equal keys) and
    the starts of the runs."""
    n = len(keys)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if n else np.zeros(0, dtype=np.int64)
    lengths = np.diff(np.concatenate((starts, [n])))
    return np.repeat(starts, lengths), starts


def _plan_columns(stream: ColumnStream) -> _Plan | None:
    """:func:`_plan` from a stream's columns, in bulk; None when the stream is anything but what a simulator
    records (a folio number reused or freed twice, an op outside its folio's life, a small folio's mapcount going
    below 0 or freed while mapped, a question on a folio not alive): the object path then says what is wrong."""
    c = stream.columns
    n = len(c.kind)
    kind, folio = c.kind, c.folio
    mms = np.asarray(stream.op_mms, dtype=np.int64).reshape(n)
    index = np.arange(n, dtype=np.int64)
    has = folio >= 0
    top = int(folio.max(initial=-1)) + 1
    if len(c.qfolio):
        top = max(top, int(c.qfolio.max()) + 1)
    new_at = np.flatnonzero(kind == K_FOLIO_NEW)
    free_at = np.flatnonzero(kind == K_FOLIO_FREE)
    born = np.full(top, n + 1, dtype=np.int64)  # a folio's folio_new (n + 1: none)
    died = np.full(top, n + 1, dtype=np.int64)  # its folio_free
    if (folio[new_at] < 0).any() or (folio[free_at] < 0).any():
        return None
    born[folio[new_at]] = new_at
    died[folio[free_at]] = free_at
    if len(np.unique(folio[new_at])) != len(new_at) or len(np.unique(folio[free_at])) != len(free_at):
        return None
    f_ops = folio[has]
    at = index[has]
    if (born[f_ops] > at).any() or (died[f_ops] < at).any():
        return None
    order = np.full(top, -1, dtype=np.int64)
    order[folio[new_at]] = c.order[new_at]
    if (order[folio[new_at]] < 0).any():
        return None
    small_op = np.zeros(n, dtype=bool)
    small_op[at] = order[f_ops] == 0
    # per folio, its ops in stream order: a small folio's mapcount after each, a large one's most MMs so far
    by = np.argsort(f_ops, kind="stable")
    sf, si = f_ops[by], at[by]
    k = kind[si]
    diff = np.where(c.level[si] == 1, 1, c.nr[si])
    delta = np.where(k == K_MAP_NEW_ANON, 1, np.where(k == K_UNMAP, -diff, np.where(k > K_MAP_NEW_ANON, diff, 0)))
    start, _starts = _segments(sf)
    total = np.cumsum(delta)
    total -= (total - delta)[start] if len(total) else total[:0]
    small_s = order[sf] == 0
    if (small_s & (total < 0)).any() or (small_s & (k == K_FOLIO_FREE) & (total != 0)).any():
        return None
    m = np.where((k == K_FOLIO_NEW) | (k == K_FOLIO_FREE), 0, mms[si])
    if len(m) and m.min() < 0:
        return None
    span = int(m.max(initial=0)) + 1
    peak = np.maximum.accumulate(m + sf * span) - sf * span if len(m) else m
    plan = _Plan()
    large_at = np.flatnonzero(~small_op)
    plan.large = large_at.tolist()
    plan.large_ops = c.ops(large_at)
    step = stream.op_step
    plan.large_step = [step[i] for i in plan.large]
    plan.large_mms = mms[large_at].tolist()
    small_k = kind[small_op]
    counts = (int((small_k == K_MAP_NEW_ANON).sum()), int((small_k > K_MAP_NEW_ANON).sum()))
    if counts[0] + counts[1]:
        costs = (update_cost(0, 0, 1), update_cost(1, 0, 1))  # PageMapcounts.charge() of order 0: {page 0}
        plan.small_values[("updates", "", 0, 0)] = float(counts[0] + counts[1])
        for name in cost_fields():
            value = sum(count * getattr(cost, name) for count, cost in zip(counts, costs, strict=True))
            plan.small_values[(name, "", 0, 0)] = float(value)
    # questions: the last op on its folio before it
    qpos, qf = c.qpos, c.qfolio
    nq = len(qpos)
    if nq and ((qf < 0).any() or (born[qf] >= qpos).any() or (died[qf] < qpos).any()):
        return None
    last = np.searchsorted(sf * (n + 1) + si, qf * (n + 1) + qpos) - 1  # that op, in the sorted order
    qorder = order[qf]
    small_q = qorder == 0
    qmms = np.where(small_q, 0, np.minimum(peak[last], MMS_CAP)) if nq else qpos
    plan.order = qorder.tolist()
    plan.mms = qmms.tolist()
    answers = np.full(nq, None, dtype=object)
    sq = np.flatnonzero(small_q)
    answers[sq] = (total[last[sq]] > 1).tolist()  # a small folio's answer: mapped more than once
    plan.small = answers.tolist()
    gap = qpos > np.concatenate(([0], qpos[:-1]))
    plan.gap = gap.tolist()
    census = np.zeros(nq, dtype=bool)
    if CENSUS in c.consumers:
        census = (c.qconsumer == c.consumers.index(CENSUS)) & (c.qgroup < 0) & ~small_q
    first = census & (gap | ~np.concatenate(([False], census[:-1])))  # where a bulk of census questions begins
    asked = np.flatnonzero(~census)
    objects: list[Question | None] = [None] * nq
    for qi, q in zip(asked.tolist(), c.questions(asked), strict=True):
        objects[qi] = q
    plan.questions = objects
    if census.any():
        cq = np.flatnonzero(census)
        truth = c.qtruth[cq]
        code = (qorder[cq] * (MMS_CAP + 1) + qmms[cq]) * 2 + truth  # (order, mms, truth)
        kinds, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
        keys = np.empty(len(kinds), dtype=object)
        for j, value in enumerate(kinds.tolist()):
            o, rest = divmod(value // 2, MMS_CAP + 1)
            keys[j] = ("false_exclusive" if value & 1 else "false_shared", CENSUS, o, rest)
        entries = list(zip(FOLIO_NAMES.take(qf[cq]), truth.tolist(), keys[inverse].tolist(), strict=True))
        bounds = [*np.searchsorted(cq, np.flatnonzero(first)).tolist(), len(cq)]
        for a, b in pairwise(bounds):
            plan.census[int(cq[a])] = entries[a:b]
        values = plan.census_values
        for value, count in zip(kinds.tolist(), counts.tolist(), strict=True):
            o, rest = divmod(value // 2, MMS_CAP + 1)
            values[("checks", CENSUS, o, rest)] += count
            if value & 1:
                values[("exact_shared", CENSUS, o, rest)] += count
    return plan


def _replay(scorer: Scorer, stream: ScoringStream, plan: _Plan) -> None:
    """Feed ``scorer`` the stream's ops on large folios (and MMs) and ask it every question, by ``plan``."""
    ops, op_step, op_mms, large = plan.large_ops, plan.large_step, plan.large_mms, plan.large
    run, ask = scorer._run, scorer._replayed
    pending: dict[tuple[int, int], list[Any]] = {}
    order, mms, small, gap, census = plan.order, plan.mms, plan.small, plan.gap, plan.census
    values = scorer.tally.values
    tracks = scorer.tracks
    maybe_shared = None if scorer._cached else scorer.design.maybe_shared
    li, nlarge = 0, len(large)
    questions = plan.questions
    positions = stream.columns.qpos.tolist() if isinstance(stream, ColumnStream) and stream.columnar else \
        [q.pos for q in stream.questions]
    qi, nq = 0, len(questions)
    while qi < nq:
        pos = positions[qi]
        if li < nlarge and large[li] < pos:
            stop = bisect_left(large, pos, li)
            run(ops, op_step, op_mms, li, stop, pending)
            li = stop
        if gap[qi] and scorer.group is not None:
            scorer._close_group()
        bulk = census.get(qi)
        if bulk is None:
            q = questions[qi]
            assert q is not None
            ask(q, order[qi], mms[qi], small[qi])
            qi += 1
            continue
        # census questions: their own decisions (none), checks summed in the plan; only wrong answers count here
        if scorer.group is not None:
            scorer._close_group()
        if maybe_shared is None:
            for folio, truth, key in bulk:
                if (not tracks[folio].design_shared) == truth:
                    values[key] += 1
        else:
            for folio, truth, key in bulk:
                if (not maybe_shared(folio)) == truth:
                    values[key] += 1
        scorer.questions += len(bulk)
        qi += len(bulk)
    run(ops, op_step, op_mms, li, nlarge, pending)
    scorer._flush(pending)
    for key, value in plan.small_values.items():
        values[key] += value
    for key, value in plan.census_values.items():
        values[key] += value


def score_stream(stream: ScoringStream, designs: Iterable[str], *, replay: bool = True) -> list[Scored]:
    """Every design answers every question of ``stream`` on the same states (asserted: same question count).

    ``replay``: what every design does alike is done once (:class:`_Plan`) and answers are not asked twice
    (:class:`Scorer`); False feeds each design every op and asks it every question, as the closed loop does (the
    same metrics, slower: tests compare the two)."""
    stream.check()
    digest = stream.digest()
    nq = len(stream.columns.qpos) if isinstance(stream, ColumnStream) and stream.columnar else len(stream.questions)
    plan: _Plan | None = None
    out: list[Scored] = []
    designs = list(designs)
    share = replay and any(name.partition(":")[0] == "legacy" for name in designs)
    shared: SharedRun | None = None  # kernel's core-model run, reused by legacy (share_rmap_run)
    for name in designs:
        began = time.perf_counter()
        design = make_design(name, stream.config)
        scorer = Scorer(design, replay=replay)
        if replay and design.small_folios_plain:
            if share:
                shared = share_rmap_run(design, shared)
            if plan is None:
                plan = _plan_columns(stream) if isinstance(stream, ColumnStream) and stream.columnar else None
                plan = plan or _plan(stream)
            _replay(scorer, stream, plan)
        else:
            apply, ask = scorer.op, scorer.question
            queue = stream.questions
            ops, op_step, op_mms = stream.ops, stream.op_step, stream.op_mms
            pos = 0
            for q in queue:  # the ops before each question (check(): positions ascend), then the question
                for index in range(pos, q.pos):
                    apply(ops[index], op_step[index], op_mms[index])
                pos = max(pos, q.pos)
                ask(q)
            for index in range(pos, len(ops)):
                apply(ops[index], op_step[index], op_mms[index])
        scorer.finish(stream.end_step)
        if scorer.questions != nq:  # every design answers exactly the stream's questions
            raise StreamError(f"{name} answered {scorer.questions} of {nq} questions")
        out.append(Scored(name, scorer.tally.rows(), scorer.questions, digest, time.perf_counter() - began))
    return out


__all__ = ["CENSUS", "GROUPED", "MMS_CAP", "OP_KINDS", "ColumnStream", "Names", "Question", "Scored", "Scorer",
           "ScoringStream", "StreamColumns", "StreamError", "Tally", "cost_fields", "made", "score_stream"]
