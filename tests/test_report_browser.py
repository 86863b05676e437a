"""The comparison report in a real headless Chromium (Debian's package), driven by Playwright.

Checks what a reader sees at 1280 px: the page is drawn (not blank), nothing scrolls sideways, and every
image carries alt text. Skipped, with the reason, when /usr/bin/chromium (or $FOLIOSIM_CHROMIUM), the
Playwright client or matplotlib is missing, as tests/test_view_browser.py does.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from foliosim.evaluate.store import ResultsDB
from foliosim.evaluate.sweep import Grid, run_local
from foliosim.report.evaluation import write_report
from tests import chromium
from tests.png import ink

if TYPE_CHECKING:
    from playwright.sync_api import Browser

_missing = chromium.missing() or ("matplotlib (the report extra) is not installed"
                                   if importlib.util.find_spec("matplotlib") is None else None)
pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing is not None, reason=f"browser tests: {_missing}")]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium.launched() as b:
        yield b


@pytest.fixture(scope="module")
def page_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_evaluate import LEAK

    tmp = tmp_path_factory.mktemp("browser-report")
    db = ResultsDB(tmp / "r.sqlite")
    grid = Grid(designs=("kernel", "exact", "slots:3", "stopped", "legacy"),
                workloads=("handover", "shared-file", "fork-exec"), seeds=(1, 2),
                files={"file:leak.jsonl@0123456789ab": LEAK})
    run_local(grid.cells(), db, jobs=2)
    db.put_live("leak", 40, 1, 12, 0, "census (test)")
    db.close()
    return write_report(tmp / "r.sqlite", tmp / "out").html


def test_report_page_fits_1280_px_is_drawn_and_every_image_has_alt_text(browser: Browser, page_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    context.on("request", lambda req: requests.append(req.url))
    page = context.new_page()
    page.goto(page_path.resolve().as_uri())
    page.wait_for_load_state("load")
    try:
        widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
                               " document.body.scrollWidth]")
        assert widths[0] <= widths[1] and widths[2] <= widths[1], f"horizontal scroll at 1280 px: {widths}"
        wide = page.evaluate("() => [...document.querySelectorAll('table')].filter("
                             "t => t.getBoundingClientRect().right > document.documentElement.clientWidth).length")
        assert wide == 0, f"{wide} tables end beyond the window"
        alts = page.evaluate("() => [...document.images].map(i => [i.alt, i.naturalWidth])")
        assert len(alts) == 3 and all(alt.strip() and width > 0 for alt, width in alts), alts
        assert page.text_content("#headline", timeout=2000).startswith("On the recorded real programs (leak;")
        shot = page.screenshot(full_page=False)
        colours, share = ink(shot)
        assert colours > 20 and share > 0.02, (colours, share)
        figure = page.locator("figure#false_shared_by_workload img")
        figure.scroll_into_view_if_needed()
        colours, share = ink(figure.screenshot())
        assert colours > 20 and share > 0.02, ("the plot is blank", colours, share)
        assert all(url.startswith(("file:", "data:")) for url in requests), requests
    finally:
        context.close()
