"""Scoring one design on one simulated run.

The :class:`Probe` feeds the design every rmap event the machine records,
keeps the ground truth (per-MM counts) beside it, and answers the machine's
consumer questions (``Machine.sharing``) with the design's answer, recording
each as a *check* (the design's answer against the truth) and each consumer
decision as safe, unsafe (treated a shared folio as exclusive) or avoidable
(treated an exclusive folio as shared). It also accumulates time-weighted
false "maybe shared" time, update costs and metadata, and can run the
simulator's isolation oracle after steps that reused a page.

Metric rows are ``(metric, consumer, folio order, MMs, value)``; ``MMs`` is the
largest number of MMs that mapped the folio at the same time so far (capped
at :data:`MMS_CAP`), 0 where it does not apply. See docs/evaluator.md.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from foliosim.folio import folio_large_mapcount, folio_mapcount
from foliosim.schemes.base import Design
from foliosim.schemes.exact import ExactDesign
from foliosim.system import MAP_OPS
from foliosim.vm.events import CowDecision, Event, OracleViolation
from foliosim.vm.machine import Machine
from foliosim.vm.memory import PAGE_SIZE
from foliosim.vm.pagetable import SimFolio

MMS_CAP = 8
ORACLE_MODES = ("off", "reuse", "every")
Key = tuple[str, str, int, int]


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


class Tally:
    """Metric sums keyed by (metric, consumer, order, MMs)."""

    def __init__(self) -> None:
        self.values: defaultdict[Key, float] = defaultdict(float)

    def add(self, metric: str, value: float = 1, consumer: str = "", order: int = -1, mms: int = 0) -> None:
        self.values[(metric, consumer, order, mms)] += value

    def total(self, metric: str, consumer: str | None = None) -> float:
        return sum(v for (m, c, _o, _n), v in self.values.items()
                   if m == metric and (consumer is None or c == consumer))

    def rows(self) -> list[tuple[str, str, int, int, float]]:
        return sorted((m, c, o, n, float(v)) for (m, c, o, n), v in self.values.items())


class Probe:
    """Attach a design to a machine as its sharing oracle and score it."""

    def __init__(self, machine: Machine, design: Design, oracle: str = "reuse") -> None:
        if oracle not in ORACLE_MODES:
            raise ValueError(f"oracle mode must be one of {', '.join(ORACLE_MODES)}, not {oracle!r}")
        self.m = machine
        self.design = design
        self.truth = ExactDesign(machine.config) if design.name != "exact" else None
        self.oracle = oracle
        self.tally = Tally()
        self.tracks: dict[str, _Track] = {}
        self.pos = 0
        self.pending_cow: tuple[str, bool, bool, bool] | None = None
        self.reused = False
        self.problems: list[str] = []
        machine.observers.append(self.on_event)
        machine.sharing = self.answer

    # -- the event stream --------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if event.kind == "rmap":
            self.sync()
        elif event.kind == "cow" and event.cow is not None:
            self.on_cow(event.cow)

    def sync(self) -> None:
        """Feed the design (and the truth) every rmap op recorded since the last call."""
        trace = self.m.trace
        while self.pos < len(trace):
            op = trace[self.pos]
            self.pos += 1
            cost = self.design.apply(op)
            if self.truth is not None:
                self.truth.apply(op)
            if op.op in MAP_OPS:
                order = self.design.orders[op.folio]  # type: ignore[index]
                self.tally.add("updates", 1, order=order)
                self.tally.add("atomics", cost.atomics, order=order)
                self.tally.add("locks", cost.locks, order=order)
            if op.folio is not None:
                self._track(op.op, op.folio)

    @property
    def exact(self) -> ExactDesign:
        return self.truth if self.truth is not None else self.design  # type: ignore[return-value]

    def _track(self, kind: str, folio: str) -> None:
        now = self.m.step
        if kind == "folio_new":
            order = self.design.orders[folio]
            if order:
                self.tracks[folio] = _Track(order, now)
            return
        track = self.tracks.get(folio)
        if track is None:
            return
        self._close(track, now)
        if kind == "folio_free":
            self._retire(track)
            del self.tracks[folio]
            return
        nr_mms = len(self.exact.mms(folio))
        track.peak = max(track.peak, nr_mms)
        track.mapped = self.design.mapcount(folio) > 0
        track.design_shared = self.design.maybe_shared(folio)
        track.exact_shared = nr_mms > 1
        track.meta_peak = max(track.meta_peak, self.design.metadata_bytes(folio))

    def _close(self, track: _Track, now: int) -> None:
        span = now - track.since
        track.since = now
        if span <= 0 or not track.mapped:
            return
        mms = min(track.peak, MMS_CAP)
        self.tally.add("folio_time", span, order=track.order, mms=mms)
        if track.design_shared and not track.exact_shared:
            self.tally.add("false_shared_time", span, order=track.order, mms=mms)
        if track.exact_shared:
            self.tally.add("shared_time", span, order=track.order, mms=mms)

    def _retire(self, track: _Track) -> None:
        self.tally.add("folios", 1, order=track.order, mms=min(track.peak, MMS_CAP))
        self.tally.add("metadata_bytes", track.meta_peak, order=track.order, mms=min(track.peak, MMS_CAP))

    # -- consumer questions -------------------------------------------------------
    def ask(self, f: SimFolio, consumer: str) -> tuple[bool, bool]:
        """(design's answer, truth) for ``f``; large folios are recorded as a check of ``consumer``."""
        self.sync()
        name = f.name
        exact = len(self.exact.mms(name)) > 1
        if f.order == 0:
            return folio_mapcount(f.core()) > 1, exact  # every design answers mapcount > 1
        design = self.design.maybe_shared(name)
        track = self.tracks[name]
        mms = min(track.peak, MMS_CAP)
        self.tally.add("checks", 1, consumer, f.order, mms)
        if exact:
            self.tally.add("exact_shared", 1, consumer, f.order, mms)
        if design and not exact:
            self.tally.add("false_shared", 1, consumer, f.order, mms)
        if exact and not design:
            self.tally.add("false_exclusive", 1, consumer, f.order, mms)
        return design, exact

    def decision(self, consumer: str, unsafe: bool, avoidable: bool) -> None:
        self.tally.add("decisions", 1, consumer)
        if unsafe:
            self.tally.add("unsafe", 1, consumer)
        if avoidable:
            self.tally.add("avoidable", 1, consumer)

    def answer(self, f: SimFolio, consumer: str) -> bool:
        """The hook the machine calls at each consumer decision point (``Machine.sharing``)."""
        if consumer == "cow_reuse_locked":  # the recheck under the lock: same answer, not a new check
            self.sync()
            return self.design.maybe_shared(f.name)
        design, exact = self.ask(f, consumer)
        if consumer == "cow_reuse":
            core = f.core()
            self.pending_cow = (f.name, design, exact, folio_large_mapcount(core) == core.refcount)
        else:
            self.decision(consumer, unsafe=exact and not design, avoidable=design and not exact)
        return design

    def on_cow(self, d: CowDecision) -> None:
        if d.outcome == "copy":
            self.tally.add("cow_copies", 1, "cow_reuse", d.order)
            self.tally.add("bytes_copied", PAGE_SIZE, "cow_reuse", d.order)
        elif d.outcome == "reuse":
            self.tally.add("cow_reuses", 1, "cow_reuse", d.order)
            self.reused = True
        pending, self.pending_cow = self.pending_cow, None
        if pending is None or pending[0] != d.folio:
            return
        _name, design, exact, refs_ok = pending
        unsafe = d.outcome == "reuse" and exact
        avoidable = d.outcome == "copy" and design and not exact and refs_ok
        self.decision("cow_reuse", unsafe, avoidable)
        if avoidable:
            self.tally.add("avoidable_copies", 1, "cow_reuse", d.order)

    # -- the isolation oracle -------------------------------------------------------
    def after_step(self) -> None:
        if self.oracle == "every" or (self.oracle == "reuse" and self.reused):
            self.run_oracle()
        self.reused = False

    def run_oracle(self) -> None:
        problems = self.m.check()
        self.tally.add("oracle_checks", 1)
        if problems:
            self.tally.add("oracle_violations", 1)
            if any(p.startswith("isolation") for p in problems):
                self.tally.add("oracle_leaks", 1)
            if len(self.problems) < 5:
                self.problems.append(f"step {self.m.step}: {problems[0]}")

    def finish(self) -> None:
        """Close every interval and count the folios still alive; one last oracle run unless off."""
        self.sync()
        now = self.m.step
        for track in self.tracks.values():
            self._close(track, now)
            self._retire(track)
        self.tracks.clear()
        if self.oracle != "off":
            self.run_oracle()
        self.tally.add("steps", self.m.step)
        self.tally.add("rmap_ops", self.pos)


__all__ = ["MMS_CAP", "ORACLE_MODES", "OracleViolation", "Probe", "Tally"]
