"""``foliosim report``: Markdown and a self-contained HTML page from a results database.

The headline comes first (one sentence; every number in it is in the first
pooled table below it), then the recorded real programs, the synthetic
workloads, the demonstrations (labelled: not evidence), the breakdowns, the
cost per update, the driving runs, the importer's and simulator's warnings,
and the plots (matplotlib, Agg; PNG and SVG files, the HTML page inlines the
SVGs as images with alt text so it needs no other file). Every rate is
k/n = x % with its 95 % interval (:mod:`foliosim.evaluate.stats`).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foliosim import __version__
from foliosim.evaluate.cell import engine_summary
from foliosim.evaluate.metrics import (
    BASELINES,
    DEMO,
    DEMONSTRATIONS,
    REAL,
    SYNTHETIC,
    Summary,
    count,
    display_name,
    fmt_rate,
    focus_design,
    headline,
    kind_of,
    live_rows,
    pct,
    summarize,
)
from foliosim.evaluate.stats import BOOTSTRAP_RESAMPLES, Rate, clopper_pearson, rate
from foliosim.evaluate.store import ResultsDB
from foliosim.evaluate.stream import cost_fields


@dataclass(slots=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    section: str = ""  # a heading placed before this table


COLUMNS = ["questions", "on shared folios", "exact answers", "false \"shared\" (of exclusive questions)",
           "false \"exclusive\" (of shared questions)"]


def _rate_cells(s: Summary, design: str, workloads: list[str], census: bool = False) -> list[str]:
    checks, _exclusive, shared = s.questions(design, workloads, census)
    return [count(checks), f"{count(shared)}/{count(checks)}",
            fmt_rate(s.rate(design, "exact", workloads, census=census)),
            fmt_rate(s.rate(design, "false_shared", workloads, census=census)),
            fmt_rate(s.rate(design, "false_exclusive", workloads, census=census))]


def _baseline_cells(s: Summary, design: str, workloads: list[str], baseline: str, census: bool = False) -> list[str]:
    """A baseline answers the questions ``design`` was asked: always "shared" or always "exclusive"."""
    checks, _exclusive, shared = s.questions(design, workloads, census)
    runs = s.runs(design, workloads)
    right = s.rate(design, baseline, workloads, census=census)
    excl = [r.pair("false_shared", census=census)[1] for r in runs]
    shar = [r.pair("false_exclusive", census=census)[1] for r in runs]
    if baseline == "always shared":
        fs, fe = rate([(n, n) for n in excl]), rate([(0, n) for n in shar])
    else:
        fs, fe = rate([(0, n) for n in excl]), rate([(n, n) for n in shar])
    return [count(checks), f"{count(shared)}/{count(checks)}", fmt_rate(right), fmt_rate(fs), fmt_rate(fe)]


def _live_cells(rows: list[dict[str, Any]]) -> list[str]:
    excl = sum(r["questions_exclusive"] for r in rows)
    shared = sum(r["questions_shared"] for r in rows)
    fs = _exact_rate(sum(r["false_shared"] for r in rows), excl)
    fe = _exact_rate(sum(r["false_exclusive"] for r in rows), shared)
    right = _exact_rate(excl + shared - fs.k - fe.k, excl + shared)
    return [count(excl + shared), f"{count(shared)}/{count(excl + shared)}", fmt_rate(right), fmt_rate(fs),
            fmt_rate(fe)]


def _exact_rate(k: float, n: float) -> Rate:
    """A count from one measurement (a census): k of n with the exact binomial interval."""
    ci = clopper_pearson(int(k), int(n))
    return Rate(k, n, ci[0] if ci else None, ci[1] if ci else None, "exact" if ci else "", 1)


def _design_rows(s: Summary, workloads: list[str], lead: list[str], census: bool = False) -> list[list[str]]:
    rows = [[*lead, f"`{d}`", *_rate_cells(s, d, workloads, census)] for d in s.designs]
    focus = focus_design(s)
    if focus is not None:
        rows += [[*lead, f"({b})", *_baseline_cells(s, focus, workloads, b, census)] for b in BASELINES]
    live = live_rows(s, workloads) if census else []
    if len(workloads) == 1 or len(live) == 1:
        rows += [[*lead, f"live kernel ({row['source']})", *_live_cells([row])] for row in live]
    elif live:
        programs = sorted({display_name(row["workload"]) for row in live})
        rows.append([*lead, f"live kernel (census of {len(programs)} programs: {', '.join(programs)})",
                     *_live_cells(live)])
    return rows


CENSUS_NOTE = ("The census's questions: every mapped large anonymous folio after each fork and before each exit, "
               "the points where `foliosim trace --census events` read the live kernel's own answers (rows "
               "\"live kernel\", exact intervals; a folio counts once per census).")


def _kind_tables(s: Summary, kind: str) -> list[Table]:
    workloads = s.kind_workloads(kind)
    if not workloads:
        return []
    title = {REAL: "Recorded real programs", SYNTHETIC: "Synthetic workloads",
             DEMO: "Demonstrations (built to show a known effect: not evidence)"}[kind]
    runs = sum(1 for c in s.cells_info if c["workload"] in workloads and c["design"] == focus_design(s))
    out: list[Table] = []
    pooled_note = (f"{len(workloads)} workloads, {runs} runs. Pooled over them; 95 % interval: "
                   + ("exact (Clopper-Pearson), one run." if runs == 1 else
                      f"bootstrap over the {runs} runs ({BOOTSTRAP_RESAMPLES:,} resamples, fixed seed), never "
                      "narrower than the exact interval of the pooled counts."))
    if kind != DEMO:
        out.append(Table(f"{title}, pooled: the consumers' questions", ["design", *COLUMNS],
                         _design_rows(s, workloads, []), "Questions of CoW reuse, MADV_COLD/PAGEOUT, khugepaged and "
                         "NUMA migration. " + pooled_note, section=title))
    files = [w for w in workloads if w.startswith("file:")]
    if kind == REAL:
        out.append(Table(f"{title}, pooled: the census at forks and exits", ["design", *COLUMNS],
                         _design_rows(s, workloads, [], census=True), CENSUS_NOTE + " " + pooled_note))
    rows: list[list[str]] = []
    for w in workloads:
        seeds = sorted({c["seed"] for c in s.cells_info if c["workload"] == w})
        lead = display_name(w) + ("" if w.startswith("file:") else f" (seeds {','.join(map(str, seeds))})")
        rows += _design_rows(s, [w], [lead])
    note = ("Each program is one run (a recorded program does not depend on the seed): exact 95 % intervals."
            if kind == REAL else "A recorded program is one run (exact 95 % interval); several seeds of a "
            "generated workload: 95 % interval bootstrapped over its runs.")
    if kind == DEMO:
        note = "; ".join(f"`{display_name(w)}`: {DEMONSTRATIONS[display_name(w)]}" for w in workloads) + ". " + note
    out.append(Table(f"{title if kind != DEMO else 'Demonstrations'}, one by one: the consumers' questions",
                     ["workload", "design", *COLUMNS], rows, note, section=title if kind == DEMO else ""))
    if files:
        rows = []
        for w in files:
            rows += _design_rows(s, [w], [display_name(w)], census=True)
        out.append(Table(f"{title if kind != DEMO else 'Demonstrations'}, one by one: the census at forks and exits",
                         ["workload", "design", *COLUMNS],
                         rows, CENSUS_NOTE))
    return out


def evidence_workloads(s: Summary) -> list[str]:
    return [w for w in s.workloads if kind_of(w) != DEMO]


def tables(s: Summary) -> list[Table]:
    out: list[Table] = []
    for kind in (REAL, SYNTHETIC, DEMO):
        out += _kind_tables(s, kind)
    evidence = evidence_workloads(s)
    focus = focus_design(s)
    rows = []
    for m in s.mms:
        label = f"{m}+" if m >= 8 else str(m)
        for d in s.designs:
            t = s.rate(d, "time_false_shared", evidence, mms=m)
            rows.append([label, f"`{d}`", fmt_rate(s.rate(d, "false_shared", evidence, mms=m)),
                         f"{count(t.k)} / {count(t.n)} = {pct(t.value)}" if t.n else "n/a (no exclusive time)"])
    out.append(Table("False \"shared\" by the most MMs that mapped the folio at once",
                     ["MMs", "design", "false \"shared\" (of exclusive questions)",
                      "time-weighted (machine steps one MM mapped the folio)"], rows,
                     "Real programs and synthetic workloads, demonstrations excluded. n per bucket is the "
                     "denominator; time-weighted: steps the design said \"shared\" / steps one MM mapped it "
                     "(no interval: steps are not independent trials).", section="Breakdowns"))
    rows = []
    for consumer in s.consumers:
        for d in s.designs:
            runs = s.runs(d, evidence)
            rows.append([consumer, f"`{d}`", count(sum(r.consumer("decisions", consumer) for r in runs)),
                         count(sum(r.consumer("unsafe", consumer) for r in runs)),
                         count(sum(r.consumer("avoidable", consumer) for r in runs)),
                         count(sum(r.consumer("checks", consumer) for r in runs)),
                         count(sum(r.consumer("false_shared", consumer) for r in runs))])
    note = ("Open loop: the decision each design's answer leads to on the driving run's state (a CoW reuse "
            "when it says \"exclusive\" and refcount == mapcount; khugepaged collapses when at most "
            "max_ptes_shared PTEs map maybe-shared folios)." if "open" in s.modes else
            "Closed loop: the decisions each design took in its own runs.")
    out.append(Table("Consumer decisions (demonstrations excluded)",
                     ["consumer", "design", "decisions", "unsafe", "avoidable", "questions", "false \"shared\""],
                     rows, note))
    out.append(_cost_table(s))
    out.append(_runs_table(s))
    orders = [o for o in s.orders if o > 0]
    rows = []
    for d in s.designs:
        for o in orders:
            md = _ratio(sum(r.by_order[("metadata_bytes", o)] for r in s.runs(d, evidence)),
                        sum(r.by_order[("folios", o)] for r in s.runs(d, evidence)))
            rows.append([f"`{d}`", str(o), fmt_rate(s.rate(d, "false_shared", evidence, order=o)),
                         "n/a" if md is None else f"{md:,.1f} B"])
    out.append(Table("By folio order (demonstrations excluded)",
                     ["design", "order", "false \"shared\" (of exclusive questions)", "metadata per folio"], rows))
    del focus
    return out


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _config_name(bits: int, npm: int) -> str:
    return f"{bits}-bit, {'NO_PAGE_MAPCOUNT' if npm else 'PAGE_MAPCOUNT'}"


def _cost_table(s: Summary) -> Table:
    fields = cost_fields()
    rows = []
    for bits, npm in s.configs:
        cells = [c for c in s.cells_info if c["word_bits"] == bits and c["no_page_mapcount"] == npm]
        for d in s.designs:
            runs = [s.by_cell[c["cell_id"]] for c in cells if c["design"] == d]
            large = sorted({o for r in runs for (m, o) in r.by_order if m == "updates" and o > 0})
            updates = sum(r.by_order[("updates", o)] for r in runs for o in large)
            per = [_ratio(sum(r.by_order[(f, o)] for r in runs for o in large), updates) for f in fields]
            meta = _ratio(sum(r.total["metadata_bytes"] for r in runs), sum(r.total["folios"] for r in runs))
            rows.append([f"`{d}`", _config_name(bits, npm), count(updates),
                         *("n/a" if v is None else f"{v:.2f}" for v in per),
                         "n/a" if meta is None else f"{meta:,.1f}"])
    units = {"atomics": "atomic RMWs / update", "locks": "lock acquisitions / update",
             "cache_lines": "cache lines written / update"}
    return Table("Cost per rmap update of a large folio (all workloads)",
                 ["design", "configuration", "updates", *(units.get(f, f"{f} / update") for f in fields),
                  "metadata B / large folio (peak)"], rows,
                 "Counted operations of the model (docs/evaluator.md, UpdateCost), not measured cycles; "
                 "a lock acquisition is also counted as an atomic where the cost model says so.")


def _runs_table(s: Summary) -> Table:
    focus = focus_design(s)
    rows = []
    for w in s.workloads:
        cells = [c for c in s.cells_info if c["workload"] == w and (c["design"] == focus or "closed" in s.modes)]
        by_design: dict[str, list[Any]] = defaultdict(list)
        for c in cells:
            by_design[c["design"] if c.get("mode") == "closed" else f"{c.get('driver', focus)} (driving)"].append(c)
        for who, group in by_design.items():
            sums = [s.by_cell[c["cell_id"]] for c in group]

            def tot(metric: str, sums: list[Any] = sums) -> str:
                return count(sum(x.total[metric] for x in sums))

            rows.append([display_name(w), kind_of(w), f"`{who}`", str(len(group)), tot("steps"), tot("rmap_ops"),
                         tot("cow_copies"), tot("cow_reuses"), tot("oracle_checks"), tot("oracle_leaks")])
    return Table("Driving runs", ["workload", "kind", "run by", "runs", "steps", "rmap ops", "CoW copies",
                                  "CoW reuses", "oracle checks", "oracle leaks"], rows,
                 "What the runs themselves did (open loop: the driving design's runs, shared by every design).")


# --------------------------------------------------------------------------- warnings
@dataclass(slots=True)
class Refused:
    """Steps the simulator refused in one workload's cells (imported traces: counted, not fatal)."""

    workload: str
    cells: int
    steps: int
    first: list[str]


def refused_steps(cells: list[dict[str, Any]], examples: int = 3) -> list[Refused]:
    """Per workload: cells with refused steps, how many steps, and the first few distinct refusals."""
    out: dict[str, Refused] = {}
    for cell in cells:
        if not cell["skipped"]:
            continue
        entry = out.setdefault(cell["workload"], Refused(cell["workload"], 0, 0, []))
        entry.cells += 1
        entry.steps += int(cell["skipped"])
        try:
            notes = json.loads(cell["notes"])
        except (TypeError, ValueError):
            notes = []
        for note in notes if isinstance(notes, list) else []:
            kind, sep, text = str(note).partition(": ")
            if sep and kind in ("first skipped", "skipped") and text not in entry.first and len(entry.first) < examples:
                entry.first.append(text)
    return [out[w] for w in sorted(out)]


def refused_table(refused: list[Refused]) -> Table:
    return Table("Steps the simulator refused (skipped and counted; imported traces only)",
                 ["workload", "cells", "refused steps", "first refusals"],
                 [[r.workload, count(r.cells), count(r.steps), "; ".join(r.first) or "n/a"] for r in refused])


def warning_tables(s: Summary) -> list[Table]:
    """Importer and simulator warnings of the driving runs: refused steps, failed calls, recorded faults the
    simulator did not take (e.g. writes into memory it had not mapped)."""
    focus = focus_design(s)
    cells = [c for c in s.cells_info if c["design"] == focus]
    out: list[Table] = []
    refused = refused_steps(cells)
    if refused:
        out.append(refused_table(refused))
    rows = []
    for w in s.workloads:
        runs = [s.by_cell[c["cell_id"]] for c in cells if c["workload"] == w]
        per: dict[str, Counter[str]] = {"failed_calls": Counter(), "recorded_faults": Counter(),
                                        "skipped_steps": Counter()}
        for r in runs:
            for (metric, consumer), value in r.by_consumer.items():
                if metric in per and value:
                    per[metric][consumer or "(all)"] += int(value)
        faults = per["recorded_faults"]
        total_faults = sum(faults.values())
        not_taken = {k: v for k, v in faults.items() if k != "taken"}
        fails = ", ".join(f"{k}: {v:,}" for k, v in sorted(per["failed_calls"].items()))
        skipped = ", ".join(f"{k}: {v:,}" for k, v in sorted(per["skipped_steps"].items()) if k != "(all)")
        if not (fails or not_taken or skipped):
            continue
        untaken = "; ".join(f"{v:,} of {total_faults:,} {k}" for k, v in sorted(not_taken.items()))
        rows.append([display_name(w), fails or "none", untaken or "none", skipped or "none"])
    if rows:
        out.append(Table("Importer and simulator warnings per workload",
                         ["workload", "calls that failed (-errno, SIGSEGV)", "recorded faults not taken",
                          "trace events not expressed"], rows,
                         f"From the runs of `{focus}` (open loop: the driving runs every design was scored on)."))
    return out


# --------------------------------------------------------------------------- plots
@dataclass(slots=True)
class Plot:
    name: str
    title: str
    alt: str
    png: Path
    svg: Path


COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


def _alt_rates(what: str, cats: list[str], series: list[tuple[str, list[Rate]]]) -> str:
    parts = []
    for label, rates in series:
        vals = ", ".join(f"{c}: {pct(r.value)} ({count(r.k)}/{count(r.n)})" if r.n else f"{c}: n/a"
                         for c, r in zip(cats, rates, strict=True))
        parts.append(f"{label}: {vals}")
    return f"Dot plot with 95 % interval bars of {what}. " + "; ".join(parts) + "."


#: why a report cannot be drawn on an install without the ``report`` extra
PLOTS_NEED = "plots need matplotlib: pip install 'foliosim[report]'"


def plots(s: Summary, outdir: Path) -> list[Plot]:
    import importlib

    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        raise ValueError(PLOTS_NEED) from None
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    outdir.mkdir(parents=True, exist_ok=True)
    made: list[Plot] = []

    def save(fig: Any, name: str, title: str, alt: str) -> None:
        fig.tight_layout()
        png, svg = outdir / f"{name}.png", outdir / f"{name}.svg"
        fig.savefig(png, dpi=110)
        fig.savefig(svg, metadata={"Date": None})
        plt.close(fig)
        made.append(Plot(name, title, alt, png, svg))

    def dots(ax: Any, cats: list[str], series: list[tuple[str, list[Rate]]], ylabel: str) -> None:
        """Categorical dot plot: one dodged dot per design with its 95 % interval; n/a is a grey 'n/a'."""
        k = len(series)
        width = 0.7
        top = max([100 * (r.high or 0) for _, rs in series for r in rs] + [1.0])
        for i, (label, rates) in enumerate(series):
            off = (i - (k - 1) / 2) * (width / max(k, 1))
            xs, ys, lo, hi = [], [], [], []
            for j, r in enumerate(rates):
                x = j + off
                if r.value is None:
                    ax.text(x, top * 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="0.45")
                    continue
                v = 100 * r.value
                xs.append(x)
                ys.append(v)
                lo.append(v - 100 * (r.low if r.low is not None else r.value))
                hi.append(100 * (r.high if r.high is not None else r.value) - v)
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=MARKERS[i % len(MARKERS)], color=COLORS[i % len(COLORS)],
                        capsize=3, markersize=5, linestyle="none", label=label)
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlim(-0.6, len(cats) - 0.4)
        ax.set_ylim(-0.04 * top, top * 1.08)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="design", title_fontsize=8,
                  borderaxespad=0.0)

    evidence = evidence_workloads(s)
    focus = focus_design(s)
    ylabel = "false \"shared\" (% of exclusive questions)"
    cats = [f"{m}+" if m >= 8 else str(m) for m in s.mms]
    if s.mms and focus is not None:
        ns = [count(s.rate(focus, "false_shared", evidence, mms=m).n) for m in s.mms]
        labels = [f"{c}\nn={n}" for c, n in zip(cats, ns, strict=True)]
        series = [(d, [s.rate(d, "false_shared", evidence, mms=m) for m in s.mms]) for d in s.designs]
        fig, ax = plt.subplots(figsize=(8, 4))
        dots(ax, labels, series, ylabel)
        ax.set_xlabel("most MMs mapping the folio at the same time so far (count; n = exclusive questions)")
        ax.set_title("False \"maybe shared\" by concurrent MMs (demonstrations excluded)")
        save(fig, "false_shared_by_mms", "False \"shared\" by concurrent MMs",
             _alt_rates("the false-shared rate (%) by the most MMs mapping the folio at once", cats, series))
    if s.workloads and focus is not None:
        names = [display_name(w) for w in s.workloads]
        ns = [count(s.rate(focus, "false_shared", [w]).n) for w in s.workloads]
        series = [(d, [s.rate(d, "false_shared", [w]) for w in s.workloads]) for d in s.designs]
        fig, ax = plt.subplots(figsize=(max(8, 0.95 * len(names) + 2.5), 4.6))
        dots(ax, [f"{n}\nn={c}" for n, c in zip(names, ns, strict=True)], series, ylabel)
        ax.tick_params(axis="x", labelsize=7)
        kinds = [kind_of(w) for w in s.workloads]
        groups = {REAL: "recorded real programs", SYNTHETIC: "synthetic", DEMO: "demonstrations (not evidence)"}
        start = 0
        for i in range(1, len(kinds) + 1):
            if i == len(kinds) or kinds[i] != kinds[start]:
                if i < len(kinds):
                    ax.axvline(i - 0.5, color="0.55", linestyle="--", linewidth=0.8)
                ax.text((start + i - 1) / 2, 1.01, groups[kinds[start]], transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=8, color="0.3")
                start = i
        ax.set_xlabel("workload (n = exclusive questions asked of the driving design)")
        ax.set_title("False \"maybe shared\" by workload", pad=16)
        save(fig, "false_shared_by_workload", "False \"shared\" by workload",
             _alt_rates("the false-shared rate (%) per workload", names, series))
    fields = cost_fields()
    units = {"atomics": "atomic RMWs per update", "locks": "lock acquisitions per update",
             "cache_lines": "cache lines written per update"}
    def per_update(name: str) -> Callable[[str], float | None]:
        return lambda d: s.by_design[d].per_update(name)

    panels: list[tuple[str, Callable[[str], float | None]]] = [
        (units.get(f, f"{f} per update"), per_update(f)) for f in fields]
    panels.append(("metadata bytes per large folio (peak)", lambda d: s.by_design[d].metadata_per_folio()))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1, 3.4), squeeze=False)
    alt_parts = []
    for ax, (unit, value) in zip(axes[0], panels, strict=True):
        vals = [value(d) for d in s.designs]
        ys = range(len(s.designs))
        ax.barh(list(ys), [v or 0 for v in vals], color=[COLORS[i % len(COLORS)] for i in ys])
        for y, v in zip(ys, vals, strict=True):
            ax.text(v or 0, y, " n/a" if v is None else f" {v:.2f}", va="center", fontsize=7)
        ax.set_yticks(list(ys), s.designs, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(unit, fontsize=8)
        ax.margins(x=0.35)
        alt_parts.append(f"{unit}: " + ", ".join(f"{d} {'n/a' if v is None else f'{v:.2f}'}"
                                                 for d, v in zip(s.designs, vals, strict=True)))
    fig.suptitle("Cost per rmap update of a large folio, and metadata (all workloads)", fontsize=10)
    save(fig, "cost", "Cost per update and metadata",
         "Horizontal bar charts, one per unit. " + "; ".join(alt_parts) + ".")
    return made


# --------------------------------------------------------------------------- pages
def _setup(s: Summary, source: str) -> str:
    mode = ("open loop: every design answered the questions of the driving design "
            + ", ".join(f"`{d}`" for d in s.drivers) + " on the same states"
            if "open" in s.modes else "")
    if "closed" in s.modes:
        mode += ("; " if mode else "") + ("closed loop: each design's answers steered its own runs "
                                          "(question sets differ)")
    configs = "; ".join(_config_name(b, n) for b, n in s.configs)
    dup = (f" {s.duplicates} duplicate cells of workload files (an older foliosim ran them once per seed) "
           "counted once." if s.duplicates else "")
    if s.other_mode:
        dup += (f" {s.other_mode} {'open' if 'closed' in s.modes else 'closed'}-loop cells of this database are "
                "not in this report (they do not pool: foliosim report "
                + ("without --closed-loop" if "closed" in s.modes else "--closed-loop") + ").")
    return (f"{s.cells} cells: {len(s.designs)} designs × {len(s.workloads)} workloads "
            f"({len(s.kind_workloads(REAL))} recorded real programs, {len(s.kind_workloads(SYNTHETIC))} synthetic, "
            f"{len(s.kind_workloads(DEMO))} demonstrations), seeds {', '.join(map(str, s.seeds))} (recorded programs: "
            f"one run each); {mode}; {configs}; {engine_summary(s.cells_info)}; {s.seconds:.1f} s of cell time; "
            f"results from `{source}`, "
            f"foliosim {__version__}. Rates are k/n = x % [95 % interval]. Definitions: docs/evaluator.md.{dup}")


def markdown(s: Summary, tbls: list[Table], figs: list[Plot], outdir: Path, source: str) -> str:
    head = headline(s)
    lines = ["# foliosim: sharing-detection designs compared", "", f"**{head.text}**", "", _setup(s, source), ""]
    if not s.kind_workloads(REAL):
        lines += ["No recorded real program in these results (`foliosim compare --workload-file RUN.trace`).", ""]
    for t in tbls:
        if t.section:
            lines += [f"## {t.section}", ""]
        lines += [f"### {t.title}", ""]
        if t.note:
            lines += [t.note, ""]
        lines += ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
        lines.append("")
    lines += ["## Plots", ""]
    for fig in figs:
        rel_png, rel_svg = fig.png.relative_to(outdir), fig.svg.relative_to(outdir)
        alt = fig.alt.replace("[", "(").replace("]", ")")
        lines += [f"### {fig.title}", "", f"![{alt}]({rel_png}) ([SVG]({rel_svg}))", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222;
overflow-wrap:anywhere}
.headline{font-size:1.15em;background:#eef5ff;border-left:4px solid #2a6ed8;padding:.8em 1em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.8em;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .45em;text-align:right;vertical-align:top}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
th{background:#f3f3f3}
.note{font-size:.85em;color:#444;max-width:60em}
figure{margin:1.5em 0}
figure img{max-width:100%;height:auto}
"""


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def html_page(s: Summary, tbls: list[Table], figs: list[Plot], source: str) -> str:
    head = headline(s)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width">',
             "<title>foliosim: sharing-detection designs compared</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>foliosim: sharing-detection designs compared</h1>",
             f'<p class="headline" id="headline">{_inline(head.text)}</p>', f"<p>{_inline(_setup(s, source))}</p>"]
    if not s.kind_workloads(REAL):
        parts.append("<p>No recorded real program in these results "
                     "(<code>foliosim compare --workload-file RUN.trace</code>).</p>")
    for t in tbls:
        if t.section:
            parts.append(f"<h2>{html.escape(t.section)}</h2>")
        parts.append(f"<h3>{html.escape(t.title)}</h3>")
        if t.note:
            parts.append(f'<p class="note">{_inline(t.note)}</p>')
        parts.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in t.header)
                     + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in t.rows]
        parts.append("</tbody></table>")
    parts.append("<h2>Plots</h2>")
    for fig in figs:
        data = base64.b64encode(fig.svg.read_bytes()).decode("ascii")
        parts.append(f'<figure id="{fig.name}"><img src="data:image/svg+xml;base64,{data}" '
                     f'alt="{html.escape(fig.alt, quote=True)}"><figcaption>{html.escape(fig.title)}</figcaption>'
                     "</figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


@dataclass(slots=True)
class ReportFiles:
    markdown: Path
    html: Path
    plots: list[Plot]
    headline: str
    tables: list[Table] = field(default_factory=list)


def _cells(db: ResultsDB, cell_ids: list[str] | None, mode: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """The cells to report and how many of the other scoring mode were left out."""
    cells = db.cells()
    if cell_ids is not None:
        wanted = set(cell_ids)
        cells = [c for c in cells if c["cell_id"] in wanted]
    if mode is None:  # a database with both kinds: open loop unless asked (they do not pool)
        modes = {c["mode"] for c in cells}
        mode = "open" if "open" in modes else "closed"
    kept = [c for c in cells if c["mode"] == mode]
    return kept, len(cells) - len(kept)


def load_summary(db_path: str | Path, cell_ids: list[str] | None = None, mode: str | None = None) -> Summary:
    """The summary of a results database (``cell_ids``: only those cells; ``mode``: open or closed loop)."""
    db = ResultsDB(db_path)
    try:
        cells, other = _cells(db, cell_ids, mode)
        if not cells:
            raise ValueError(f"{db_path}: the results database has no finished cells"
                             + (f" scored {mode} loop" if mode else "") + " (run foliosim compare)")
        summary = summarize(cells, db.metric_rows([c["cell_id"] for c in cells]), db.live_verdicts())
        summary.other_mode = other
        return summary
    finally:
        db.close()


def _write_text(path: Path, text: str) -> None:
    """All or nothing (foliosim.outfile)."""
    from foliosim.outfile import write_text

    write_text(str(path), text)


def write_report(db_path: str | Path, outdir: str | Path, cell_ids: list[str] | None = None,
                 mode: str | None = None) -> ReportFiles:
    """Write report.md, report.html and plots/ into ``outdir``; returns the paths and the headline.

    ``cell_ids`` limits the report to those cells (``compare --report``: the cells of its grid); ``mode``
    picks open- or closed-loop cells (default: open loop when there are any). ValueError (naming the path)
    when the report cannot be written.
    """
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file, not a directory (the report is report.md, report.html and plots/ "
                         "inside a directory)")
    summary = load_summary(db_path, cell_ids, mode)
    tbls = tables(summary)
    warnings = warning_tables(summary)
    if warnings:
        warnings[0].section = "Importer and simulator warnings"
    tbls += warnings
    try:
        out.mkdir(parents=True, exist_ok=True)
        figs = plots(summary, out / "plots")
        md = out / "report.md"
        _write_text(md, markdown(summary, tbls, figs, out, str(db_path)))
        page = out / "report.html"
        _write_text(page, html_page(summary, tbls, figs, str(db_path)))
    except OSError as exc:
        where = exc.filename if exc.filename else out
        raise ValueError(f"cannot write the report into {out}: {where}: {exc.strerror or exc}") from None
    return ReportFiles(md, page, figs, headline(summary).text, tbls)


def report_text(db_path: str | Path, cell_ids: list[str] | None = None, mode: str | None = None) -> str:
    """The headline as plain text (for the terminal); ``cell_ids`` limits it to those cells."""
    return headline(load_summary(db_path, cell_ids, mode)).text + "\n"


__all__ = ["Plot", "Refused", "ReportFiles", "Table", "html_page", "load_summary", "markdown", "plots",
           "refused_steps", "refused_table", "report_text", "tables", "warning_tables", "write_report"]
