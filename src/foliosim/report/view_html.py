"""The self-contained page of ``foliosim view``: the template with the encoded run inside.

Pure: returns the HTML text. The page loads nothing (its Content-Security-Policy
forbids every fetch); script, style and data are inline.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from typing import Any

from foliosim import __version__
from foliosim.report.view import ViewModel, encode


def template() -> str:
    """The page template shipped with the package (report/view_template.html)."""
    return resources.files("foliosim.report").joinpath("view_template.html").read_text(encoding="utf-8")


def embed_json(doc: dict[str, Any]) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<`` can close it early."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_page(model: ViewModel) -> str:
    """The whole page for ``model``; byte-identical for identical input."""
    generator = f"foliosim {__version__}"
    doc = encode(model, generator)
    values = {"TITLE": html.escape(model.title), "GENERATOR": html.escape(generator), "DATA": embed_json(doc)}
    # One pass, so that a title or a trace comment that happens to contain a marker stays as it is.
    return re.sub(r"@@(TITLE|GENERATOR|DATA)@@", lambda m: values[m.group(1)], template())
