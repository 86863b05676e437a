"""``foliosim report``: Markdown and a self-contained HTML page from a results database.

The headline answer comes first, then the tables, then the plots (matplotlib
with the Agg backend, each written as PNG and SVG; the HTML page inlines the
SVGs so it needs no other file).
"""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foliosim import __version__
from foliosim.evaluate.metrics import Summary, Sums, headline, pct, summarize
from foliosim.evaluate.store import ResultsDB

Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _mms_label(n: int, cap: int = 8) -> str:
    return f"{n}+" if n >= cap else str(n)


def tables(s: Summary) -> list[Table]:
    out: list[Table] = []
    three = [m for m in s.mms if m >= 3]
    rows = []
    for d in s.designs:
        x = s.by_design[d]
        rows.append([f"`{d}`", _num(x.cells), _num(x.total["checks"]), pct(x.exact_rate()),
                     pct(x.false_shared_rate()), pct(x.false_shared_rate(three)) if three else "n/a",
                     pct(x.time_false_shared()), _num(x.total["unsafe"]), _num(x.total["oracle_leaks"]),
                     _num(x.total["avoidable"]), _num(x.total["cow_copies"]), _num(x.total["avoidable_copies"]),
                     _num(x.total["bytes_copied"] / 1024) + " KiB", _num(x.metadata_per_folio(), 1),
                     _num(x.per_update("locks")), _num(x.per_update("atomics"))])
    out.append(("Designs (all workloads, parameters and seeds)",
                ["design", "cells", "checks", "exact answers", "false-shared rate", "false-shared, ≥3 MMs",
                 "time-weighted false-shared", "unsafe decisions", "oracle leaks", "avoidable decisions",
                 "CoW copies", "avoidable copies", "copied", "metadata B/folio", "locks/update",
                 "atomics/update"], rows))
    out.append(("False-shared rate by the most MMs that mapped the folio at once",
                ["design", *(_mms_label(m) for m in s.mms)],
                [[f"`{d}`", *(pct(s.by_design[d].false_shared_rate([m])) for m in s.mms)] for d in s.designs]))
    out.append(("Time-weighted false-shared by the most MMs that mapped the folio at once",
                ["design", *(_mms_label(m) for m in s.mms)],
                [[f"`{d}`", *(pct(s.by_design[d].time_false_shared([m])) for m in s.mms)] for d in s.designs]))
    out.append(("False-shared rate by workload", ["design", *s.workloads],
                [[f"`{d}`", *(pct(_dw(s, d, w).false_shared_rate()) for w in s.workloads)] for d in s.designs]))
    out.append(("Avoidable CoW copies by workload (copies made in parentheses)", ["design", *s.workloads],
                [[f"`{d}`", *(_copies(_dw(s, d, w)) for w in s.workloads)] for d in s.designs]))
    rows = []
    for consumer in s.consumers:
        for d in s.designs:
            x = s.by_design[d]
            rows.append([consumer, f"`{d}`", _num(x.consumer("decisions", consumer)),
                         _num(x.consumer("unsafe", consumer)), _num(x.consumer("avoidable", consumer)),
                         _num(x.consumer("checks", consumer)), _num(x.consumer("false_shared", consumer))])
    out.append(("Consumer decisions", ["consumer", "design", "decisions", "unsafe", "avoidable", "checks",
                                       "false shared"], rows))
    orders = [o for o in s.orders if o > 0]
    out.append(("By folio order: false-shared rate / metadata bytes per folio",
                ["design", *(f"order {o}" for o in orders)],
                [[f"`{d}`", *(f"{pct(s.by_design[d].false_shared_rate(order=o))} / "
                              f"{_num(s.by_design[d].metadata_per_folio(o), 0)} B" for o in orders)]
                 for d in s.designs]))
    return out


def _copies(x: Sums) -> str:
    return f"{_num(x.total['avoidable_copies'])} ({_num(x.total['cow_copies'])})"


def _dw(s: Summary, design: str, workload: str) -> Sums:
    return s.by_design_workload.get((design, workload)) or Sums()


@dataclass(slots=True)
class Plot:
    name: str
    title: str
    png: Path
    svg: Path


def plots(s: Summary, outdir: Path) -> list[Plot]:
    import importlib

    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        raise ValueError("plots need matplotlib: pip install 'foliosim[report]'") from None
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    outdir.mkdir(parents=True, exist_ok=True)
    made: list[Plot] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        png, svg = outdir / f"{name}.png", outdir / f"{name}.svg"
        fig.savefig(png, dpi=110)
        fig.savefig(svg, metadata={"Date": None})
        plt.close(fig)
        made.append(Plot(name, title, png, svg))

    def rate(v: float | None) -> float:
        return 100 * v if v is not None else float("nan")

    fig, ax = plt.subplots(figsize=(7, 4))
    for d in s.designs:
        ax.plot([_mms_label(m) for m in s.mms], [rate(s.by_design[d].false_shared_rate([m])) for m in s.mms],
                marker="o", label=d)
    ax.set_xlabel("most MMs mapping the folio at the same time (so far)")
    ax.set_ylabel("false 'maybe shared' rate (%)")
    ax.set_title("False-shared answers by concurrent MMs")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, "false_shared_by_mms", "False-shared rate by concurrent MMs")

    def bars(metric: Any, ylabel: str, name: str, title: str) -> None:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / max(1, len(s.designs))
        xs = range(len(s.workloads))
        for i, d in enumerate(s.designs):
            ax.bar([x + i * width for x in xs], [metric(_dw(s, d, w)) for w in s.workloads], width, label=d)
        ax.set_xticks([x + width * (len(s.designs) - 1) / 2 for x in xs], s.workloads, rotation=20)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        save(fig, name, title)

    bars(lambda x: rate(x.false_shared_rate()), "false-shared rate (%)", "false_shared_by_workload",
         "False-shared rate by workload")
    bars(lambda x: x.total["avoidable_copies"], "avoidable CoW copies", "avoidable_copies_by_workload",
         "Avoidable copy-on-write copies by workload")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    names = s.designs
    axes[0].bar(names, [s.by_design[d].metadata_per_folio() or 0 for d in names], color="tab:blue")
    axes[0].set_ylabel("bytes per large folio (peak)")
    axes[0].set_title("Metadata")
    width = 0.4
    xs = list(range(len(names)))
    axes[1].bar([x - width / 2 for x in xs], [s.by_design[d].per_update("locks") or 0 for d in names], width,
                label="lock acquisitions")
    axes[1].bar([x + width / 2 for x in xs], [s.by_design[d].per_update("atomics") or 0 for d in names], width,
                label="atomic RMWs")
    axes[1].set_xticks(xs, names)
    axes[1].set_title("Cost per rmap update")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    save(fig, "cost", "Metadata and update cost")
    return made


def markdown(s: Summary, tbls: list[Table], figs: list[Plot], outdir: Path, source: str) -> str:
    head = headline(s)
    lines = ["# foliosim: sharing-detection designs compared", "", f"**{head.text}**", ""]
    lines.append(f"{s.cells} cells ({len(s.designs)} designs × {len(s.workloads)} workloads × parameters × "
                 f"seeds {', '.join(map(str, s.seeds))}), {s.seconds:.1f} s of cell time, results from "
                 f"`{source}`, foliosim {__version__}. Definitions: docs/evaluator.md.")
    lines.append("")
    for title, header, rows in tbls:
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines += ["## Plots", ""]
    for fig in figs:
        rel_png, rel_svg = fig.png.relative_to(outdir), fig.svg.relative_to(outdir)
        lines += [f"### {fig.title}", "", f"![{fig.title}]({rel_png}) ([SVG]({rel_svg}))", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
.headline{font-size:1.25em;background:#eef5ff;border-left:4px solid #2a6ed8;padding:.8em 1em}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
figure{margin:1.5em 0}
figure svg{max-width:100%;height:auto}
"""


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def html_page(s: Summary, tbls: list[Table], figs: list[Plot], source: str) -> str:
    head = headline(s)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>foliosim: sharing-detection designs compared</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>foliosim: sharing-detection designs compared</h1>",
             f'<p class="headline" id="headline">{_inline(head.text)}</p>',
             f"<p>{s.cells} cells, {len(s.designs)} designs, {len(s.workloads)} workloads, seeds "
             f"{html.escape(', '.join(map(str, s.seeds)))}; {s.seconds:.1f} s of cell time; results from "
             f"<code>{html.escape(source)}</code>; foliosim {html.escape(__version__)}.</p>"]
    for title, header, rows in tbls:
        parts.append(f"<h2>{html.escape(title)}</h2><table><thead><tr>"
                     + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</tbody></table>")
    parts.append("<h2>Plots</h2>")
    for fig in figs:
        svg = fig.svg.read_text(encoding="utf-8")
        svg = svg[svg.index("<svg"):]
        parts.append(f'<figure id="{fig.name}"><figcaption>{html.escape(fig.title)}</figcaption>{svg}</figure>')
    parts.append("</body></html>")
    return "\n".join(parts)


@dataclass(slots=True)
class ReportFiles:
    markdown: Path
    html: Path
    plots: list[Plot]
    headline: str


@dataclass(slots=True)
class Refused:
    """Steps the simulator refused in one workload's cells (imported traces: counted, not fatal)."""

    workload: str
    cells: int
    steps: int
    first: list[str]


def refused_steps(cells: list[dict[str, Any]], examples: int = 3) -> list[Refused]:
    """Per workload: cells with refused steps, how many steps, and the first few distinct refusals."""
    import json

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
    return ("Steps the simulator refused (skipped and counted; imported traces only)",
            ["workload", "cells", "refused steps", "first refusals"],
            [[r.workload, _num(r.cells), _num(r.steps), "; ".join(r.first) or "n/a"] for r in refused])


def _cells(db: ResultsDB, cell_ids: list[str] | None) -> list[dict[str, Any]]:
    cells = db.cells()
    if cell_ids is None:
        return cells
    wanted = set(cell_ids)
    return [c for c in cells if c["cell_id"] in wanted]


def _write_text(path: Path, text: str) -> None:
    """All or nothing (foliosim.outfile)."""
    from foliosim.outfile import write_text

    write_text(str(path), text)


def write_report(db_path: str | Path, outdir: str | Path, cell_ids: list[str] | None = None) -> ReportFiles:
    """Write report.md, report.html and plots/ into ``outdir``; returns the paths and the headline.

    ``cell_ids`` limits the report to those cells (``compare --report``: the cells of its grid).
    ValueError (naming the path) when the report cannot be written.
    """
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file, not a directory (the report is report.md, report.html and plots/ "
                         "inside a directory)")
    db = ResultsDB(db_path)
    try:
        cells = _cells(db, cell_ids)
        if not cells:
            raise ValueError(f"{db_path}: the results database has no finished cells (run foliosim compare)")
        summary = summarize(cells, db.metric_rows(None if cell_ids is None else [c["cell_id"] for c in cells]))
    finally:
        db.close()
    tbls = tables(summary)
    refused = refused_steps(cells)
    if refused:
        tbls.append(refused_table(refused))
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
    return ReportFiles(md, page, figs, headline(summary).text)


def report_text(db_path: str | Path, cell_ids: list[str] | None = None) -> str:
    """The headline as plain text (for the terminal); ``cell_ids`` limits it to those cells."""
    buf = io.StringIO()
    db = ResultsDB(db_path)
    try:
        cells = _cells(db, cell_ids)
        summary = summarize(cells, db.metric_rows(None if cell_ids is None else [c["cell_id"] for c in cells]))
    finally:
        db.close()
    buf.write(headline(summary).text + "\n")
    return buf.getvalue()
