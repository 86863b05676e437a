"""A Firefox smoke test of a viewer page (headless --screenshot; skipped without firefox-esr)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PAGES = Path(__file__).resolve().parent.parent / "examples" / "pages"

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")


@pytest.mark.browser
@pytest.mark.skipif(FIREFOX is None, reason="Firefox smoke test: no firefox-esr (apt-get install -y firefox-esr)")
def test_firefox_renders_the_step_in_the_address(tmp_path: Path) -> None:
    """Firefox (headless --screenshot: no automation client) runs the page's script and honours #step=N."""
    import subprocess

    from tests.png import pixels

    stripes = bytes((0xFF, 0xE3, 0xC4))  # the false-positive pattern's light stripe (--false-bg)

    def shot(step: int) -> int:
        out = tmp_path / f"ff{step}.png"
        url = (PAGES / "commit-example-2.html").resolve().as_uri() + f"#step={step}"
        subprocess.run([str(FIREFOX), "--headless", "--no-remote", "--profile", str(tmp_path / "profile"),
                        "--window-size=900,700", "--screenshot", str(out), url],
                       check=True, timeout=120, capture_output=True)
        return sum(1 for px in pixels(out.read_bytes())[2] if px[:3] == stripes)

    (tmp_path / "profile").mkdir()
    at_false_positive, before = shot(8), shot(4)
    assert before > 0  # the timeline's "FALSE shared" tag: the script ran
    assert at_false_positive > 10 * before  # the card's verdict box at step 8 is striped
