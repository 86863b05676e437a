"""Aggregate stored metric rows into the figures a report shows.

Definitions (docs/evaluator.md):

- *exact-answer rate*: checks where the design's "maybe shared" equals the truth, over all checks;
- *false-shared rate*: checks answered "maybe shared" while exactly one MM mapped the folio, over
  the checks where one MM mapped it (the checks that could be wrong that way);
- *time-weighted false-shared*: mapped large-folio time (in machine steps) during which the design
  said "maybe shared" and one MM mapped it, over the time one MM mapped it;
- *unsafe*: consumer decisions that treated a shared folio as exclusive (must be 0 for sound designs);
- *avoidable*: decisions that treated an exclusive folio as shared; *avoidable copies*: CoW copies
  the truth (and every other reuse check) would have avoided;
- per update: atomics and lock acquisitions per rmap update of a large folio; metadata: bytes per large folio (peak).

"MMs" is the largest number of MMs that mapped the folio at the same time so far.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Row = tuple[Any, ...]  # store.CSV_COLUMNS order


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass(slots=True)
class Sums:
    """Metric sums over a set of cells, with their breakdowns."""

    total: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_consumer: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    by_mms: dict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    by_order: dict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    cells: int = 0

    def add(self, metric: str, consumer: str, order: int, mms: int, value: float) -> None:
        self.total[metric] += value
        self.by_consumer[(metric, consumer)] += value
        self.by_mms[(metric, mms)] += value
        self.by_order[(metric, order)] += value

    # -- derived figures -------------------------------------------------------------
    def exact_rate(self) -> float | None:
        t = self.total
        return _ratio(t["checks"] - t["false_shared"] - t["false_exclusive"], t["checks"])

    def false_shared_rate(self, mms: Iterable[int] | None = None, order: int | None = None) -> float | None:
        if order is not None:
            src = self.by_order
            keys: list[int] = [order]
        else:
            src = self.by_mms
            keys = list(mms) if mms is not None else sorted({k for (_m, k) in self.by_mms})
        fs = sum(src[("false_shared", k)] for k in keys)
        exclusive = sum(src[("checks", k)] - src[("exact_shared", k)] for k in keys)
        return _ratio(fs, exclusive)

    def time_false_shared(self, mms: Iterable[int] | None = None, order: int | None = None) -> float | None:
        if order is not None:
            src, keys = self.by_order, [order]
        else:
            src = self.by_mms
            keys = list(mms) if mms is not None else sorted({k for (_m, k) in self.by_mms})
        fs = sum(src[("false_shared_time", k)] for k in keys)
        exclusive = sum(src[("folio_time", k)] - src[("shared_time", k)] for k in keys)
        return _ratio(fs, exclusive)

    def per_update(self, metric: str) -> float | None:
        """Mean ``metric`` (atomics, locks) per rmap update of a large folio."""
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
    """Sums per design, per (design, workload), and the sweep's shape."""

    designs: list[str]
    workloads: list[str]
    by_design: dict[str, Sums]
    by_design_workload: dict[tuple[str, str], Sums]
    orders: list[int]
    mms: list[int]
    consumers: list[str]
    cells: int
    seeds: list[int]
    seconds: float


DESIGN_ORDER = ("kernel", "exact", "stopped", "legacy")


def _design_key(name: str) -> tuple[int, str]:
    if name in DESIGN_ORDER:
        return (DESIGN_ORDER.index(name), name)
    return (len(DESIGN_ORDER), name)


def summarize(cells: list[dict[str, Any]], rows: Iterable[Row]) -> Summary:
    by_design: dict[str, Sums] = defaultdict(Sums)
    by_dw: dict[tuple[str, str], Sums] = defaultdict(Sums)
    orders: set[int] = set()
    mms: set[int] = set()
    consumers: set[str] = set()
    for row in rows:
        _cell, design, workload, _params, _seed, _bits, _npm, metric, consumer, order, nr_mms, value = row
        by_design[design].add(metric, consumer, order, nr_mms, value)
        by_dw[(design, workload)].add(metric, consumer, order, nr_mms, value)
        if metric == "checks":
            orders.add(order)
            mms.add(nr_mms)
            consumers.add(consumer)
        if metric in ("folio_time", "decisions"):
            if order >= 0:
                orders.add(order)
            if metric == "decisions":
                consumers.add(consumer)
    for cell in cells:
        by_design[cell["design"]].cells += 1
        by_dw[(cell["design"], cell["workload"])].cells += 1
    designs = sorted({c["design"] for c in cells}, key=_design_key)
    workloads = sorted({c["workload"] for c in cells})
    return Summary(designs, workloads, dict(by_design), dict(by_dw), sorted(orders), sorted(mms),
                   sorted(consumers), len(cells), sorted({c["seed"] for c in cells}),
                   sum(c["seconds"] for c in cells))


@dataclass(slots=True)
class Headline:
    text: str
    kernel_exact: float | None
    kernel_fs3: float | None
    stopped_fs3: float | None
    unsafe_sound: float
    unsafe_unsound: dict[str, float]


SOUND = ("kernel", "exact", "stopped")


def headline(s: Summary) -> Headline:
    """The answer first: how exact two-slot tracking is, and against what."""
    parts: list[str] = []
    kernel = s.by_design.get("kernel")
    stopped = s.by_design.get("stopped")
    three = [m for m in s.mms if m >= 3]
    k_exact = kernel.exact_rate() if kernel else None
    k_fs3 = kernel.false_shared_rate(three) if kernel and three else None
    s_fs3 = stopped.false_shared_rate(three) if stopped and three else None
    if kernel is not None and k_exact is not None:
        parts.append(f"Two-slot tracking (kernel) is exact in {_pct(k_exact)} of "
                     f"{int(kernel.total['checks'])} consumer checks")
        if three:
            text = f"on folios that ≥3 MMs mapped at the same time its false-shared rate is {_pct(k_fs3)}"
            if stopped is not None:
                text += f" against {_pct(s_fs3)} for `stopped`"
            parts.append(text)
        else:
            parts.append("no folio was mapped by three or more MMs at once in this sweep")
    sound_designs = [d for d in s.designs if d in SOUND or d.startswith("slots:")]
    unsafe_sound = sum(s.by_design[d].total["unsafe"] for d in sound_designs)
    unsound = {d: s.by_design[d].total["unsafe"] for d in s.designs if d not in sound_designs}
    leaks_sound = sum(s.by_design[d].total["oracle_leaks"] for d in sound_designs)
    if parts:
        sentence = "; ".join(parts) + "."
    elif kernel is not None:
        sentence = "Two-slot tracking (kernel) answered no consumer check on a large folio in these cells."
    else:
        sentence = "No kernel cells in these results."
    sentence += (f" Sound designs ({', '.join(sound_designs)}) made {int(unsafe_sound)} unsafe decisions"
                 f" and the isolation oracle saw {int(leaks_sound)} leaks")
    for design, unsafe in unsound.items():
        leaks = s.by_design[design].total["oracle_leaks"]
        sentence += f"; `{design}` made {int(unsafe)} unsafe decisions ({int(leaks)} oracle checks saw a leak)"
    sentence += "."
    return Headline(sentence, k_exact, k_fs3, s_fs3, unsafe_sound, unsound)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


pct = _pct
