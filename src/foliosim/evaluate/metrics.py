"""Aggregate stored metric rows into the figures a report shows, with their counts and intervals.

Definitions (docs/evaluator.md):

- a *question* is a consumer asking "maybe mapped shared?" of a large folio; it is *exclusive* when exactly
  one MM mapped the folio then, *shared* when several did (the truth, from exact per-MM counts);
- *false shared*: "maybe shared" on an exclusive question, over the exclusive questions;
- *false exclusive*: "exclusive" on a shared question, over the shared questions (0 for sound designs);
- *exact answers*: answers equal to the truth, over all questions; the baselines "always shared" and "never
  shared" answer the same questions (right on the shared, resp. the exclusive ones);
- *time-weighted false shared*: mapped large-folio time (machine steps) during which the design said "maybe
  shared" and one MM mapped it, over the time one MM mapped it;
- *unsafe* / *avoidable* decisions: a shared folio treated as exclusive / an exclusive one as shared;
- per update: each :class:`~foliosim.schemes.base.UpdateCost` field per rmap update of a large folio;
  metadata: bytes per large folio (peak).

Every rate is k of n with a 95 % interval (:mod:`foliosim.evaluate.stats`): exact when the questions come
from one run, a bootstrap over runs (seeds × workloads × parameters) when they come from several. "MMs" is the
largest number of MMs that mapped the folio at the same time so far.

Workloads are *recorded real programs* (workload files), *synthetic* (generated) or *demonstrations*
(generated to show a known effect, :data:`DEMONSTRATIONS`): the headline's evidence never includes them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from foliosim.errors import FoliosimError
from foliosim.evaluate.stats import Rate, clopper_pearson, rate
from foliosim.evaluate.stream import CENSUS

Row = tuple[Any, ...]  # store.CSV_COLUMNS order

#: generated workloads built to reproduce a known effect: shown, labelled, never counted as evidence
DEMONSTRATIONS: dict[str, str] = {
    "handover": "built to reproduce the v6.15 commit's Example 2 (the shared bit of a folio handed from "
                "instance to instance stays set while one MM maps it)",
    "stuck-bit": "a recorded program written to leave the shared bit set (examples/run-traces/stuck-bit.py: "
                 "P forks C1, C2, C3 and they exit in that order, so C3 alone maps folios still marked shared)",
}
REAL, SYNTHETIC, DEMO = "real", "synthetic", "demonstration"
BASELINES = ("always shared", "never shared")


class PairingError(FoliosimError):
    """Open-loop cells of one driving run that did not answer the same questions (a corrupt database)."""


def kind_of(workload: str) -> str:
    """``real`` (a recorded program), ``synthetic`` (generated) or ``demonstration`` (either, built to show an
    effect: :data:`DEMONSTRATIONS`, by workload or program name)."""
    if display_name(workload) in DEMONSTRATIONS:
        return DEMO
    return REAL if workload.startswith("file:") else SYNTHETIC


def display_name(workload: str) -> str:
    """``file:pool.census.trace.gz@1a2b3c4d5e6f`` -> ``pool``; generated workloads keep their name."""
    if not workload.startswith("file:"):
        return workload
    name = workload[len("file:"):].rpartition("@")[0] or workload[len("file:"):]
    for suffix in (".gz", ".trace", ".jsonl", ".json", ".census"):
        name = name.removesuffix(suffix)
    return name


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass(slots=True)
class Sums:
    """Metric sums over a set of cells, with their breakdowns."""

    total: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_consumer: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    by_mms: dict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    by_order: dict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    by_key: dict[tuple[str, str, int, int], float] = field(default_factory=lambda: defaultdict(float))
    cells: int = 0

    def add(self, metric: str, consumer: str, order: int, mms: int, value: float) -> None:
        self.total[metric] += value
        self.by_consumer[(metric, consumer)] += value
        self.by_mms[(metric, mms)] += value
        self.by_order[(metric, order)] += value
        self.by_key[(metric, consumer, order, mms)] += value

    def merge(self, other: Sums) -> None:
        for (metric, consumer, order, mms), value in other.by_key.items():
            self.add(metric, consumer, order, mms, value)
        self.cells += other.cells

    def get(self, metric: str, mms: int | None = None, order: int | None = None, census: bool | None = None) -> float:
        """A metric's sum; ``census``: True only the census questions, False all but them, None everything."""
        if mms is None and order is None and census is None:
            return self.total[metric]
        return sum(v for (m, c, o, n), v in self.by_key.items()
                   if m == metric and (mms is None or n == mms) and (order is None or o == order)
                   and (census is None or (c == CENSUS) == census))

    # -- (k, n) pairs for one run ---------------------------------------------------------
    def pair(self, what: str, mms: int | None = None, order: int | None = None,
             census: bool = False) -> tuple[float, float]:
        """(k, n) of a rate: ``false_shared``, ``false_exclusive``, ``exact`` or a baseline's ``exact``; of the
        consumers' questions, or (``census``) of the census questions at forks and exits."""
        checks, shared = self.get("checks", mms, order, census), self.get("exact_shared", mms, order, census)
        if what == "false_shared":
            return self.get("false_shared", mms, order, census), checks - shared
        if what == "false_exclusive":
            return self.get("false_exclusive", mms, order, census), shared
        if what == "exact":
            wrong = self.get("false_shared", mms, order, census) + self.get("false_exclusive", mms, order, census)
            return checks - wrong, checks
        if what == "always shared":
            return shared, checks
        if what == "never shared":
            return checks - shared, checks
        if what == "time_false_shared":
            return (self.get("false_shared_time", mms, order),
                    self.get("folio_time", mms, order) - self.get("shared_time", mms, order))
        raise ValueError(f"unknown rate {what!r}")

    # -- plain ratios (kept for callers that want a number) --------------------------------
    def exact_rate(self) -> float | None:
        k, n = self.pair("exact")
        return _ratio(k, n)

    def consumer_checks(self) -> float:
        """Consumer questions (the census's are not)."""
        return self.get("checks", census=False)

    def false_shared_rate(self, mms: Iterable[int] | None = None, order: int | None = None) -> float | None:
        if mms is None:
            k, n = self.pair("false_shared", order=order)
            return _ratio(k, n)
        pairs = [self.pair("false_shared", m, order) for m in mms]
        return _ratio(sum(k for k, _ in pairs), sum(n for _, n in pairs))

    def time_false_shared(self, mms: Iterable[int] | None = None, order: int | None = None) -> float | None:
        if mms is None:
            k, n = self.pair("time_false_shared", order=order)
            return _ratio(k, n)
        pairs = [self.pair("time_false_shared", m, order) for m in mms]
        return _ratio(sum(k for k, _ in pairs), sum(n for _, n in pairs))

    def per_update(self, metric: str) -> float | None:
        """Mean ``metric`` (an UpdateCost field) per rmap update of a large folio."""
        large = [o for (m, o) in self.by_order if m == "updates" and o > 0]
        return _ratio(sum(self.by_order[(metric, o)] for o in large), sum(self.by_order[("updates", o)] for o in large))

    def metadata_per_folio(self, order: int | None = None) -> float | None:
        if order is None:
            return _ratio(self.total["metadata_bytes"], self.total["folios"])
        return _ratio(self.by_order[("metadata_bytes", order)], self.by_order[("folios", order)])

    def consumer(self, metric: str, consumer: str) -> float:
        return self.by_consumer[(metric, consumer)]


@dataclass(slots=True)
class Summary:
    """Per-cell sums (the runs an interval resamples) and the sweep's shape."""

    designs: list[str]
    workloads: list[str]  # recorded real programs first, then synthetic workloads, then demonstrations
    by_design: dict[str, Sums]
    by_design_workload: dict[tuple[str, str], Sums]
    by_cell: dict[str, Sums]
    cells_info: list[dict[str, Any]]
    orders: list[int]
    mms: list[int]
    consumers: list[str]
    cells: int
    seeds: list[int]
    seconds: float
    modes: list[str]
    drivers: list[str]
    configs: list[tuple[int, int]]  # (word_bits, no_page_mapcount)
    live: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0  # workload-file cells stored once per seed by an older foliosim, counted once here
    other_mode: int = 0  # cells of the other scoring mode in the database (never pooled with these)

    def kind_workloads(self, kind: str) -> list[str]:
        return [w for w in self.workloads if kind_of(w) == kind]

    def runs(self, design: str, workloads: Iterable[str] | None = None) -> list[Sums]:
        """The design's cells (one per run) on ``workloads`` (default: all)."""
        wanted = set(workloads) if workloads is not None else None
        return [self.by_cell[c["cell_id"]] for c in self.cells_info
                if c["design"] == design and (wanted is None or c["workload"] in wanted)]

    def rate(self, design: str, what: str, workloads: Iterable[str] | None = None, mms: int | None = None,
             order: int | None = None, census: bool = False) -> Rate:
        """The pooled rate with its 95 % interval; baselines (``always shared``/``never shared``) answer the
        questions ``design`` was asked; ``census``: the census questions instead of the consumers'."""
        return rate([s.pair(what, mms, order, census) for s in self.runs(design, workloads)])

    def questions(self, design: str, workloads: Iterable[str] | None = None,
                  census: bool = False) -> tuple[float, float, float]:
        """(questions, exclusive, shared) asked of ``design`` on ``workloads`` (consumers', or the census's)."""
        runs = self.runs(design, workloads)
        checks = sum(s.get("checks", census=census) for s in runs)
        shared = sum(s.get("exact_shared", census=census) for s in runs)
        return checks, checks - shared, shared

    def sum_of(self, design: str, metric: str, workloads: Iterable[str] | None = None) -> float:
        return sum(s.total[metric] for s in self.runs(design, workloads))


DESIGN_ORDER = ("kernel", "exact", "precise-rmapid", "slots:3", "stopped", "legacy")


def _design_key(name: str) -> tuple[int, str]:
    if name in DESIGN_ORDER:
        return (DESIGN_ORDER.index(name), name)
    return (len(DESIGN_ORDER), name)


def _workload_key(name: str) -> tuple[int, str]:
    return ({REAL: 0, SYNTHETIC: 1, DEMO: 2}[kind_of(name)], display_name(name))


def check_paired(cells: list[dict[str, Any]]) -> None:
    """PairingError unless the open-loop cells of each driving run answered one identical question set."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        if cell.get("mode", "closed") == "open":
            runs[cell["run_key"]].append(cell)
    for group in runs.values():
        sets = {(c["questions"], c["question_digest"]) for c in group}
        if len(sets) > 1:
            detail = ", ".join(f"{c['design']}: {c['questions']} ({c['question_digest']})" for c in group)
            raise PairingError(f"open-loop cells of one run of {group[0]['workload']} (seed {group[0]['seed']}) "
                               f"answered different question sets: {detail}")


def dedupe_files(cells: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """A workload file's steps do not depend on the seed: keep one cell per file, design and configuration."""
    kept: dict[tuple[Any, ...], dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    dropped = 0
    for cell in sorted(cells, key=lambda c: (c["seed"], c["cell_id"])):
        if not cell["workload"].startswith("file:"):
            out.append(cell)
            continue
        key = (cell["design"], cell["workload"], cell["params"], cell["word_bits"], cell["no_page_mapcount"],
               cell["oracle"], cell.get("mode"), cell.get("driver"))
        if key in kept:
            dropped += 1
            continue
        kept[key] = cell
        out.append(cell)
    return out, dropped


def summarize(cells: list[dict[str, Any]], rows: Iterable[Row], live: list[dict[str, Any]] | None = None) -> Summary:
    check_paired(cells)
    cells, dropped = dedupe_files(cells)
    wanted = {c["cell_id"] for c in cells}
    by_cell: dict[str, Sums] = defaultdict(Sums)
    orders: set[int] = set()
    mms: set[int] = set()
    consumers: set[str] = set()
    for row in rows:
        cell_id, _design, _workload, _params, _seed, _bits, _npm, metric, consumer, order, nr_mms, value = row
        if cell_id not in wanted:
            continue
        by_cell[cell_id].add(metric, consumer, order, nr_mms, value)
        if metric == "checks":
            orders.add(order)
            mms.add(nr_mms)
            consumers.add(consumer)
        if metric in ("folio_time", "decisions"):
            if order >= 0:
                orders.add(order)
            if metric == "decisions":
                consumers.add(consumer)
    by_design: dict[str, Sums] = defaultdict(Sums)
    by_dw: dict[tuple[str, str], Sums] = defaultdict(Sums)
    for cell in cells:
        sums = by_cell[cell["cell_id"]]
        sums.cells = 1
        by_design[cell["design"]].merge(sums)
        by_dw[(cell["design"], cell["workload"])].merge(sums)
    designs = sorted({c["design"] for c in cells}, key=_design_key)
    workloads = sorted({c["workload"] for c in cells}, key=_workload_key)
    consumers.discard(CENSUS)
    return Summary(designs, workloads, dict(by_design), dict(by_dw), dict(by_cell), cells, sorted(orders),
                   sorted(mms), sorted(consumers), len(cells), sorted({c["seed"] for c in cells}),
                   sum(c["seconds"] for c in cells), sorted({c.get("mode", "closed") for c in cells}),
                   sorted({c.get("driver", c["design"]) for c in cells if c.get("mode") == "open"}),
                   sorted({(c["word_bits"], c["no_page_mapcount"]) for c in cells}), list(live or []), dropped)


# --------------------------------------------------------------------------- formatting
def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def count(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"


def _bound(value: float, digits: int) -> str:
    """An interval bound in percent: ``digits`` decimals, or two significant digits below 0.01 %."""
    percent = 100 * value
    if 0 < percent < 0.01:
        return f"{percent:.2g}"
    return f"{percent:.{digits}f}"


def interval(r: Rate) -> str:
    """``[lo–hi %]`` of a rate, or empty when it has none (bounds below 0.01 % keep two significant digits)."""
    if r.low is None or r.high is None:
        return ""
    digits = 2 if r.high < 0.1 else 1
    return f"[{_bound(r.low, digits)}–{_bound(r.high, digits)} %]"


def fmt_rate(r: Rate) -> str:
    """``k/n = x % [lo–hi %]``; ``0/0 (n/a)`` when nothing was asked."""
    if not r.n:
        return f"{count(r.k)}/0 (n/a)"
    return f"{count(r.k)}/{count(r.n)} = {pct(r.value)} {interval(r)}"


def join_names(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


# --------------------------------------------------------------------------- the headline
@dataclass(slots=True)
class Headline:
    text: str
    design: str | None  # the design the figure is about (the driving design, open loop)
    evidence: list[str]  # the workloads the figure comes from
    rate: Rate | None


def focus_design(s: Summary) -> str | None:
    """The design the headline is about: the driving design (open loop), else ``kernel``, else the first."""
    for name in (*s.drivers, "kernel"):
        if name in s.designs:
            return name
    return s.designs[0] if s.designs else None


def headline(s: Summary) -> Headline:
    """One sentence: the false-"shared" rate on the evidence (real programs if any, else synthetic workloads
    without the demonstrations), its n and interval, the other designs on the same questions and the base rate.
    Every number in it is in the report's "pooled" table of the same workloads."""
    design = focus_design(s)
    if design is None:
        return Headline("No cells in these results.", None, [], None)
    real, synthetic = s.kind_workloads(REAL), s.kind_workloads(SYNTHETIC)
    evidence, label = (real, "the recorded real programs") if real else (synthetic, "the synthetic workloads")
    demos = [display_name(w) for w in s.kind_workloads(DEMO)]
    names = join_names([display_name(w) for w in evidence])
    drivers = join_names([f"`{d}`" for d in s.drivers]) or f"`{design}`"
    loop = (f"open loop, every design answering the questions of {drivers}'s runs" if "open" in s.modes
            else "closed loop, each design steering its own runs")
    if not evidence:
        text = (f"Only demonstrations ({join_names(demos)}) are in these results, and they are not evidence: "
                f"see their table ({loop}).")
        return Headline(text, design, [], None)
    r = s.rate(design, "false_shared", evidence)
    checks, exclusive, _shared = s.questions(design, evidence)
    where = f"On {label} ({names}; {loop})"
    if not checks:
        text = (f"{where}, `{design}` was asked no question on a large folio (0 checks), so there is no "
                f"false-\"shared\" rate to give.")
        return Headline(text, design, evidence, r)
    base = s.rate(design, "always shared", evidence)
    text = f"{where}, "
    if not exclusive:
        text += (f"all {count(checks)} questions to `{design}` were on folios several MMs mapped (0 on folios one MM "
                 f"mapped), so no false \"shared\" answer was possible")
    else:
        text += (f"`{design}` answered \"maybe shared\" on {count(r.k)} of the {count(exclusive)} questions about "
                 f"folios only one MM mapped ({pct(r.value)}, 95 % CI {interval(r).strip('[]')})")
        others = [d for d in s.designs if d != design]
        if others:
            parts = [f"`{d}` {count(s.rate(d, 'false_shared', evidence).k)}" for d in others]
            text += f" against {join_names(parts)} on the same questions"
    text += (f"; {pct(base.value)} of all {count(checks)} questions were on truly shared folios, which an "
             f"\"always shared\" answer gets right")
    live = live_rows(s, evidence) if real else []
    if live:
        live_k = sum(row["false_shared"] for row in live)
        live_n = sum(row["questions_exclusive"] for row in live)
        sim = s.rate(design, "false_shared", evidence, census=True)
        ci = clopper_pearson(int(live_k), int(live_n))
        live_r = Rate(live_k, live_n, ci[0] if ci else None, ci[1] if ci else None, "exact" if ci else "", 1)
        text += (f"; at forks and exits, where the live kernel's own census looked ({len(live)} of the programs), "
                 f"it said \"shared\" on {count(live_k)} of {count(live_n)} checks of folios one MM mapped"
                 f"{_with_interval(live_r)}, the simulated `{design}` on {count(sim.k)} of {count(sim.n)}"
                 f"{_with_interval(sim)}")
    precise = [d for d in s.designs if d.startswith("precise-rmapid") and d != design]
    mine = s.by_design[design].per_update("atomics")
    if precise and mine is not None and len(s.configs) == 1:
        costs = [(d, s.by_design[d].per_update("atomics")) for d in precise]
        text += (f"; an rmap update of a large folio costs `{design}` {mine:.2f} atomic RMWs, "
                 + join_names([f"`{d}` {c:.2f}" for d, c in costs if c is not None]))
    if demos:
        text += f" (demonstrations {join_names([f'`{d}`' for d in demos])} excluded)"
    return Headline(text + ".", design, evidence, r)


def _with_interval(r: Rate) -> str:
    """`` (x %, 95 % CI lo–hi %)`` for a headline, or nothing when the rate has no questions."""
    if r.value is None:
        return ""
    bounds = interval(r).strip("[]")
    return f" ({pct(r.value)}, 95 % CI {bounds})" if bounds else f" ({pct(r.value)})"


def live_rows(s: Summary, workloads: Iterable[str]) -> list[dict[str, Any]]:
    """The live verdicts stored for ``workloads`` (by label, or by the program's name)."""
    wanted = list(workloads)
    names = {display_name(w) for w in wanted} | set(wanted)
    return [row for row in s.live if row["workload"] in names or display_name(row["workload"]) in names]


Formatter = Callable[[Rate], str]
__all__ = [
    "BASELINES",
    "DEMO",
    "DEMONSTRATIONS",
    "REAL",
    "SYNTHETIC",
    "Headline",
    "PairingError",
    "Summary",
    "Sums",
    "check_paired",
    "count",
    "dedupe_files",
    "display_name",
    "fmt_rate",
    "focus_design",
    "headline",
    "interval",
    "join_names",
    "kind_of",
    "pct",
    "summarize",
]
