"""foliosim report: hand-computed figures, the order of the sections, 0 checks, and a self-contained page."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from foliosim.evaluate.cell import CellResult, CellSpec
from foliosim.evaluate.metrics import headline
from foliosim.evaluate.stats import clopper_pearson
from foliosim.evaluate.store import ResultsDB
from foliosim.evaluate.sweep import Grid, run_local
from foliosim.report.evaluation import load_summary, tables

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="matplotlib (the report extra) is not installed")

ALPHA, BETA = "file:alpha.trace.gz@aaaaaaaaaaaa", "file:beta.trace.gz@bbbbbbbbbbbb"


def _hand_db(path: Path) -> None:
    """Two recorded programs, one run each, kernel and exact on the same questions.

    alpha: 10 questions, 6 on shared folios (2 MMs), 4 exclusive (1 MM): kernel says "shared" on 1 of them.
    beta: 20 questions: 12 exclusive with 1 MM, 8 with 3 MMs of which 5 shared: kernel false "shared" on 3.
    """
    db = ResultsDB(path)
    for workload, rows in ((ALPHA, [("checks", "cow_reuse", 4, 1, 4.0), ("checks", "cow_reuse", 4, 2, 6.0),
                                    ("exact_shared", "cow_reuse", 4, 2, 6.0)]),
                           (BETA, [("checks", "cow_reuse", 4, 1, 12.0), ("checks", "khugepaged", 4, 3, 8.0),
                                   ("exact_shared", "khugepaged", 4, 3, 5.0)])):
        results = []
        for design in ("kernel", "exact"):
            extra = []
            if design == "kernel":
                extra = [("false_shared", "cow_reuse", 4, 1, 1.0)] if workload == ALPHA else \
                    [("false_shared", "khugepaged", 4, 3, 3.0)]
            if workload == ALPHA:  # the census at forks and exits: 7 folios one MM mapped, 2 several
                extra += [("checks", "census", 4, 1, 7.0), ("checks", "census", 4, 2, 2.0),
                          ("exact_shared", "census", 4, 2, 2.0)]
                extra += [("false_shared", "census", 4, 1, 1.0)] if design == "kernel" else []
            spec = CellSpec(design, workload, (), 1, workload_text=workload)
            checks = int(sum(r[4] for r in rows + extra if r[0] == "checks"))
            results.append(CellResult(spec.cell_id, spec, sorted(rows + extra), 0.5, 0, [], checks,
                                      "d" + workload[-4:]))
        db.put_run(results)
    db.put_live("alpha", 50, 2, 10, 0, "census alpha.trace.gz")
    db.close()


def test_a_hand_computed_database_gives_the_exact_rates_intervals_and_baselines(tmp_path: Path) -> None:
    _hand_db(tmp_path / "r.sqlite")
    s = load_summary(tmp_path / "r.sqlite")
    assert s.workloads == [ALPHA, BETA] and s.designs == ["kernel", "exact"]
    alpha = s.rate("kernel", "false_shared", [ALPHA])
    assert (alpha.k, alpha.n, alpha.method) == (1, 4, "exact")
    assert (alpha.low, alpha.high) == pytest.approx((0.006309463, 0.8058796), rel=1e-5)  # R binom.test(1, 4)
    pooled = s.rate("kernel", "false_shared", [ALPHA, BETA])
    assert (pooled.k, pooled.n, pooled.method, pooled.runs) == (4, 19, "bootstrap", 2)
    cp = clopper_pearson(4, 19)
    assert cp is not None and cp == pytest.approx((0.06052, 0.45565), abs=1e-4)  # R binom.test(4, 19)
    # two runs: the bootstrap spans beta alone (3/15) to alpha alone (1/4), widened to the pooled exact interval
    assert (pooled.low, pooled.high) == (min(cp[0], 3 / 15), max(cp[1], 1 / 4))
    by_mms = s.rate("kernel", "false_shared", mms=3)
    assert (by_mms.k, by_mms.n) == (3, 3)
    tbls = {t.title: t for t in tables(s)}
    first = next(iter(tbls.values()))
    assert first.title == "Recorded real programs, pooled: the consumers' questions"
    rows = {row[0]: row for row in first.rows}
    assert rows["`kernel`"][1:] == ["30", "11/30", rows["`kernel`"][3], "4/19 = 21.1 % [6.1–45.6 %]",
                                    "0/11 = 0.0 % [0.0–28.5 %]"]
    assert rows["`exact`"][4] == "0/19 = 0.0 % [0.0–17.6 %]"
    # right on the shared questions: 6/10 and 5/20 in the two runs, 11/30 pooled
    assert rows["(always shared)"][3:] == [f"11/30 = 36.7 % {_pooled(11, 30, [6 / 10, 5 / 20])}",
                                           "19/19 = 100.0 % [82.4–100.0 %]", "0/11 = 0.0 % [0.0–28.5 %]"]
    assert rows["(never shared)"][3:] == [f"19/30 = 63.3 % {_pooled(19, 30, [4 / 10, 15 / 20])}",
                                          "0/19 = 0.0 % [0.0–17.6 %]", "11/11 = 100.0 % [71.5–100.0 %]"]
    assert rows["`kernel`"][3] == f"26/30 = 86.7 % {_pooled(26, 30, [9 / 10, 17 / 20])}"
    assert "live kernel (census alpha.trace.gz)" not in rows  # the census is not a consumer question
    census = {row[0]: row for row in tbls["Recorded real programs, pooled: the census at forks and exits"].rows}
    assert census["live kernel (census alpha.trace.gz)"][1:] == ["60", "10/60", "58/60 = 96.7 % [88.5–99.6 %]",
                                                                "2/50 = 4.0 % [0.5–13.7 %]",
                                                                "0/10 = 0.0 % [0.0–30.8 %]"]
    # beta had no census: the pooled census is alpha's alone, one run, exact interval
    assert census["`kernel`"][1:] == ["9", "2/9", "8/9 = 88.9 % [51.8–99.7 %]", "1/7 = 14.3 % [0.4–57.9 %]",
                                      "0/2 = 0.0 % [0.0–84.2 %]"]
    assert census["`exact`"][4] == "0/7 = 0.0 % [0.0–41.0 %]"
    one = {(row[0], row[1]): row for row in tbls["Recorded real programs, one by one: the consumers' questions"].rows}
    assert one[("alpha", "`kernel`")][2:] == ["10", "6/10", "9/10 = 90.0 % [55.5–99.7 %]",
                                             "1/4 = 25.0 % [0.6–80.6 %]", "0/6 = 0.0 % [0.0–45.9 %]"]
    assert one[("alpha", "(always shared)")][4] == "6/10 = 60.0 % [26.2–87.8 %]"
    assert one[("beta", "`kernel`")][5] == "3/15 = 20.0 % [4.3–48.1 %]"
    by_census = {(row[0], row[1]) for row in tbls["Recorded real programs, one by one: the census at forks and "
                                                  "exits"].rows}
    assert ("alpha", "live kernel (census alpha.trace.gz)") in by_census
    assert ("beta", "live kernel (census alpha.trace.gz)") not in by_census
    head = headline(s).text
    assert head.startswith("On the recorded real programs (alpha and beta; open loop")
    assert "`kernel` answered \"maybe shared\" on 4 of the 19 questions" in head
    assert "(21.1 %, 95 % CI 6.1–45.6 %)" in head and "`exact` 0 on the same questions" in head
    assert "36.7 % of all 30 questions" in head
    assert head.endswith("the live kernel's own census looked (1 of the programs), it said \"shared\" on 2 of 50 "
                         "checks of folios one MM mapped (4.0 %, 95 % CI 0.5–13.7 %), the simulated `kernel` on 1 of 7 "
                         "(14.3 %, 95 % CI 0.4–57.9 %).")  # R binom.test(2, 50) and (1, 7)
    # every number of the headline is in the pooled tables below it (or their notes)
    pooled = [t for t in tbls.values() if ", pooled" in t.title]
    table_text = " ".join(" ".join(" ".join(r) for r in t.rows) + " " + t.note for t in pooled) + " 95 %"
    for number in re.findall(r"\d[\d,]*(?:\.\d+)?", head):
        assert number in table_text, number


def _pooled(k: int, n: int, runs: list[float]) -> str:
    """The interval of a rate pooled over two runs: the bootstrap spans the two runs' own rates (each run drawn
    twice in a quarter of the resamples), widened to the exact interval of the pooled counts."""
    ci = clopper_pearson(k, n)
    assert ci is not None
    low, high = min(ci[0], *runs), max(ci[1], *runs)
    digits = 2 if high < 0.1 else 1
    return f"[{100 * low:.{digits}f}–{100 * high:.{digits}f} %]"


ORDER0 = [{"verb": "spawn", "task": "P"},
          {"verb": "mmap", "task": "P", "args": ["heap", 16, "anon", None, [], "rw", 0]},
          {"verb": "write", "task": "P", "args": ["heap", 0, 16]},
          {"verb": "fork", "task": "P", "args": ["C"]},
          {"verb": "write", "task": "C", "args": ["heap", 0, 4]}]


def test_a_trace_database_with_0_kernel_checks_says_so(tmp_path: Path) -> None:
    (tmp_path / "small.jsonl").write_text("\n".join(json.dumps(s) for s in ORDER0) + "\n")
    args = [sys.executable, "-m", "foliosim", "compare", "-d", "kernel,stopped", "--workload-file",
            str(tmp_path / "small.jsonl"), "--db", str(tmp_path / "r.sqlite"), "-q", "-j", "1", "--seeds", "3"]
    if HAVE_MPL:
        args += ["--report", str(tmp_path / "rep")]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ("On the recorded real programs (small; open loop, every design answering the "
                                  "questions of `kernel`'s runs), `kernel` was asked no question on a large folio "
                                  "(0 checks), so there is no false-\"shared\" rate to give.")
    db = ResultsDB(tmp_path / "r.sqlite")
    assert [(c["design"], c["seed"]) for c in db.cells()] == [("kernel", 1), ("stopped", 1)], "run once, not per seed"
    db.close()
    if HAVE_MPL:
        md = (tmp_path / "rep" / "report.md").read_text()
        assert "No kernel cells" not in md
        assert "| small | `kernel` | 0 | 0/0 | 0/0 (n/a) | 0/0 (n/a) | 0/0 (n/a) |" in md


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAVE_MPL:
        pytest.skip("matplotlib (the report extra) is not installed")
    tmp = tmp_path_factory.mktemp("report")
    from tests.test_evaluate import LEAK

    (tmp / "leak.jsonl").write_text(LEAK)
    db = ResultsDB(tmp / "r.sqlite")
    grid = Grid(designs=("kernel", "exact", "stopped", "legacy"), workloads=("handover", "mix", "fork-exec"),
                seeds=(1, 2), files={"file:leak.jsonl@0123456789ab": LEAK})
    run_local(grid.cells(), db, jobs=2)
    db.close()
    run = subprocess.run([sys.executable, "-m", "foliosim", "report", str(tmp / "r.sqlite"), "-o", str(tmp / "out"),
                          "--csv", str(tmp / "m.csv")], capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("On the recorded real programs (leak; open loop")
    return tmp / "out"


@needs_mpl
def test_real_programs_come_first_and_demonstrations_are_labelled(report: Path) -> None:
    md = (report / "report.md").read_text()
    lines = [line for line in md.splitlines() if line.strip()]
    assert lines[1].startswith("**On the recorded real programs (leak;")
    assert "(demonstrations `handover` excluded)" in lines[1]
    heads = [line for line in lines if line.startswith("## ")]
    assert heads[:3] == ["## Recorded real programs", "## Synthetic workloads",
                         "## Demonstrations (built to show a known effect: not evidence)"]
    assert md.index("| leak | `kernel` |") < md.index("| mix (seeds 1,2) | `kernel` |") < md.index(
        "| handover (seeds 1,2) | `kernel` |")
    assert "reproduce the v6.15 commit's Example 2" in md
    assert "(always shared)" in md and "(never shared)" in md
    for name in ("false_shared_by_mms", "false_shared_by_workload", "cost"):
        assert (report / "plots" / f"{name}.png").stat().st_size > 5000
        assert (report / "plots" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
        assert f"plots/{name}.png" in md


@needs_mpl
def test_html_is_self_contained_and_every_figure_has_alt_text(report: Path) -> None:
    page = (report / "report.html").read_text()
    imgs = re.findall(r"<img [^>]*>", page)
    assert len(imgs) == 3
    for img in imgs:
        assert 'src="data:image/svg+xml;base64,' in img
        alt = re.search(r'alt="([^"]*)"', img)
        assert alt is not None and len(alt.group(1)) > 40
    assert 'src="http' not in page and 'href="http' not in page and "<script" not in page
