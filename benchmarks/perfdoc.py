"""Update one marked section of docs/performance.md, leaving the other benchmarks' sections alone."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
HEADER = """# Performance

Numbers measured on demand by the scripts in `benchmarks/` (never in CI); each section
says how it was measured and is rewritten only by its own script.
"""


def update_section(name: str, body: str) -> Path:
    """Replace the ``<!-- name:start -->`` ... ``<!-- name:end -->`` block (append it if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    return DOC


class Series(NamedTuple):
    """One line of a cost plot: its label, marker style, points and optional point labels."""

    label: str
    style: str
    xs: list[float]
    ys: list[float]
    notes: list[str] | None = None


def loglog_plot(series: list[Series], xlabel: str, ylabel: str, title: str, path: Path) -> None:
    """Cost against work size on log-log axes, written to ``path`` (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for line in series:
        if not line.xs:
            continue
        ax.loglog(line.xs, line.ys, line.style, label=line.label)
        for x, y, note in zip(line.xs, line.ys, line.notes or [], strict=False):
            ax.annotate(note, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
