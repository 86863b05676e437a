"""Debian's Chromium driven by Playwright, for the browser tests (viewer pages, the comparison report).

One home for where the browser is, how it is started and why a test module skips: `.ci/run` installs both
Chromium and the Playwright client; Playwright's own browser download (`playwright install`) is never used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = os.environ.get("FOLIOSIM_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None  # type: ignore[assignment]


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if sync_playwright is None:
        return "the Playwright client is not installed (pip install -c constraints.txt -e '.[view]')"
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver)"
    return None


@contextmanager
def launched() -> Iterator[Browser]:
    """A headless Chromium for the duration of the block."""
    assert sync_playwright is not None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
