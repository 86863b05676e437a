"""foliosim report: Markdown + self-contained HTML, checked in a real headless Chromium."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foliosim.evaluate.store import ResultsDB
from foliosim.evaluate.sweep import Grid, run_local

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                reason="matplotlib (the report extra) is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    db = ResultsDB(tmp / "r.sqlite")
    grid = Grid(designs=("kernel", "exact", "stopped", "legacy"), workloads=("handover", "mix", "fork-exec"),
                seeds=(1,))
    run_local(grid.cells(), db, jobs=2)
    db.close()
    run = subprocess.run([sys.executable, "-m", "foliosim", "report", str(tmp / "r.sqlite"), "-o", str(tmp / "out"),
                          "--csv", str(tmp / "m.csv")], capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Two-slot tracking (kernel) is exact in")
    return tmp / "out"


def test_markdown_has_the_headline_first_and_every_plot(report: Path) -> None:
    md = (report / "report.md").read_text()
    lines = [line for line in md.splitlines() if line.strip()]
    assert lines[1].startswith("**Two-slot tracking (kernel) is exact in")
    assert "false-shared rate is" in lines[1] and "`stopped`" in lines[1]
    assert "`legacy` made" in lines[1]
    for name in ("false_shared_by_mms", "false_shared_by_workload", "avoidable_copies_by_workload", "cost"):
        assert (report / "plots" / f"{name}.png").stat().st_size > 5000
        assert (report / "plots" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
        assert f"plots/{name}.png" in md
    assert "| `kernel` |" in md and "| `exact` | 3 |" in md


def test_html_is_self_contained(report: Path) -> None:
    page = (report / "report.html").read_text()
    assert page.count("<svg") == 4
    assert 'src="http' not in page and "href=\"http" not in page and "<script" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    url = (report / "report.html").resolve().as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="headline"' in dom.stdout and "Two-slot tracking (kernel) is exact in" in dom.stdout
    assert dom.stdout.count("<svg") == 4 and dom.stdout.count("<table>") >= 6
    shot = tmp_path / "shot.png"
    run = subprocess.run([CHROMIUM, *FLAGS, *profile, f"--screenshot={shot}", "--window-size=1280,2400", url],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert image.size == (1280, 2400) and high - low > 100, "the page rendered blank"
    dark = sum(image.histogram()[:128])
    assert dark > 5000, "hardly any text or plot ink on the page"
