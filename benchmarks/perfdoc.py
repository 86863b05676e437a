"""Update one marked section of docs/performance.md, leaving the other benchmarks' sections alone."""

from __future__ import annotations

from pathlib import Path

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
