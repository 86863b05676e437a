"""Scoring one design on one simulated run, and recording the run for open-loop scoring.

The :class:`Probe` feeds the driving design every rmap event the machine
records, keeps the exact per-MM truth beside it, and answers the machine's
consumer questions (``Machine.sharing``) with the design's answer, so the
design's decisions steer the run (*closed loop* for that design). Scoring is
the :class:`~foliosim.evaluate.stream.Scorer`'s: each question on a large folio
is a *check* (answer against truth), each consumer decision safe, unsafe
(treated a shared folio as exclusive) or avoidable (treated an exclusive folio
as shared). With ``record=True`` the probe also keeps the run as a
:class:`~foliosim.evaluate.stream.ScoringStream` (ops + questions) that
:func:`~foliosim.evaluate.stream.score_stream` scores for any other design on
the same states (*open loop*). Run-level outcomes (CoW copies and reuses, the
isolation oracle) belong to the driving run.

Metric rows are ``(metric, consumer, folio order, MMs, value)``; ``MMs`` is the
largest number of MMs that mapped the folio at the same time so far (capped
at :data:`MMS_CAP`), 0 where it does not apply. See docs/evaluator.md.
"""

from __future__ import annotations

from foliosim.evaluate.stream import CENSUS, MMS_CAP, Question, Scorer, ScoringStream, Tally
from foliosim.folio import folio_large_mapcount
from foliosim.schemes.base import Design
from foliosim.schemes.exact import ExactDesign
from foliosim.vm.events import CowDecision, Event, OracleViolation
from foliosim.vm.machine import Machine
from foliosim.vm.memory import PAGE_SIZE
from foliosim.vm.pagetable import SimFolio

#: when the isolation oracle runs: never, once at the end, also after every step that reused a page, after every step
ORACLE_MODES = ("off", "end", "reuse", "every")


class Probe:
    """Attach a design to a machine as its sharing oracle and score it (optionally recording the run)."""

    def __init__(self, machine: Machine, design: Design, oracle: str = "reuse", record: bool = False,
                 census: bool = False) -> None:
        if oracle not in ORACLE_MODES:
            raise ValueError(f"oracle mode must be one of {', '.join(ORACLE_MODES)}, not {oracle!r}")
        self.m = machine
        self.design = design
        self.truth = ExactDesign(machine.config)
        self.oracle = oracle
        self.scorer = Scorer(design)
        self.tally: Tally = self.scorer.tally
        self.stream = ScoringStream(machine.config, design.name) if record else None
        self.census_on = census
        self.pos = 0
        self.groups = 0
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
        step = self.m.step
        truth = self.truth
        while self.pos < len(trace):
            op = trace[self.pos]
            self.pos += 1
            truth.apply(op)
            nr_mms = len(truth.mms(op.folio)) if op.folio is not None and op.op != "folio_free" else -1
            self.scorer.op(op, step, nr_mms)
            if self.stream is not None:
                self.stream.ops.append(op)
                self.stream.op_step.append(step)
                self.stream.op_mms.append(nr_mms)

    @property
    def exact(self) -> ExactDesign:
        return self.truth

    # -- consumer questions -------------------------------------------------------
    def ask(self, f: SimFolio, consumer: str, *, group: int = -1, weight: int = 1, limit: int = 0,
            refs_ok: bool = True) -> tuple[bool, bool]:
        """(design's answer, truth) for ``f``; recorded (and, for a large folio, scored) as a question."""
        self.sync()
        q = Question(self.pos, f.name, consumer, len(self.truth.mms(f.name)) > 1, group, weight, limit, refs_ok)
        if self.stream is not None:
            self.stream.questions.append(q)
        return self.scorer.question(q), q.truth

    def census(self) -> int:
        """With ``census=True``: ask about every mapped large anonymous folio (consumer ``census``: checks, no
        decision), the protocol of the live census (``foliosim trace --census events``: after every fork and
        before every exit), so simulated designs and the live kernel are scored on the same kind of question.
        Returns the folios asked about."""
        if not self.census_on:
            return 0
        self.sync()
        asked = 0
        for f in list(self.m.folios.values()):
            if f.order and f.is_anon and self.truth.mms(f.name):
                self.ask(f, CENSUS)
                asked += 1
        return asked

    def new_group(self) -> int:
        """An id for the questions of one grouped decision (a khugepaged range)."""
        self.groups += 1
        return self.groups

    def answer(self, f: SimFolio, consumer: str) -> bool:
        """The hook the machine calls at each consumer decision point (``Machine.sharing``)."""
        if consumer == "cow_reuse_locked":  # the recheck under the lock: same answer, not a new question
            self.sync()
            return self.design.maybe_shared(f.name)
        refs_ok = True
        if consumer == "cow_reuse":
            core = f.core()
            refs_ok = folio_large_mapcount(core) == core.refcount if f.order else True
        return self.ask(f, consumer, refs_ok=refs_ok)[0]

    def on_cow(self, d: CowDecision) -> None:
        """What the driving run did at a write fault: copy or reuse (run-level outcomes)."""
        if d.outcome == "copy":
            self.tally.add("cow_copies", 1, "cow_reuse", d.order)
            self.tally.add("bytes_copied", PAGE_SIZE, "cow_reuse", d.order)
        elif d.outcome == "reuse":
            self.tally.add("cow_reuses", 1, "cow_reuse", d.order)
            self.reused = True

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

    def run_rows(self) -> list[tuple[str, str, int, int, float]]:
        """The driving run's own outcomes (not a design's answers): CoW, oracle, size."""
        return [row for row in self.tally.rows() if row[0] in RUN_METRICS]

    def finish(self) -> None:
        """Close every interval and count the folios still alive; one last oracle run unless off."""
        self.sync()
        self.scorer.finish(self.m.step)
        if self.stream is not None:
            self.stream.end_step = self.m.step
        if self.oracle != "off":
            self.run_oracle()
        self.tally.add("steps", self.m.step)
        self.tally.add("rmap_ops", self.pos)


#: metrics of the driving run rather than of a design's answers (open loop: every design's cell carries them)
RUN_METRICS = frozenset({"cow_copies", "bytes_copied", "cow_reuses", "oracle_checks", "oracle_violations",
                         "oracle_leaks", "steps", "rmap_ops", "skipped_steps", "failed_calls", "recorded_faults"})

__all__ = ["MMS_CAP", "ORACLE_MODES", "RUN_METRICS", "OracleViolation", "Probe", "Tally"]
